//! Sockets bounded by configuration, not by callers: a connection that
//! never completes its HTTP/2 handshake is closed after
//! `transport.handshake_timeout`, and connections above
//! `transport.max_connections` are closed as soon as they are accepted —
//! while clients within the limits are served throughout. Real sockets,
//! some of them raw TCP that speak (half of) HTTP/2 by hand.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use sqlgate::grpc::pb::{query_client::QueryClient, value::Kind};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tonic::{Code, transport::Channel};

use crate::{
    binary::Sqlgate,
    helpers::{Backend, TEST_BOUND, closed_within, select_one, spawn_app_with, within},
    session_client::Session,
    test_database::TestDatabase,
};

/// The handshake timeout the tests set: short, so that they run quickly.
const HANDSHAKE: Duration = Duration::from_secs(1);

/// The client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// An empty SETTINGS frame: what a client sends right after its preface.
const EMPTY_SETTINGS: [u8; 9] = [0, 0, 0, 0x4, 0, 0, 0, 0, 0];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_that_never_complete_the_handshake_are_closed() {
    within(TEST_BOUND, "the test", incomplete_handshakes()).await;
}

async fn incomplete_handshakes() {
    let Some(app) = spawn_app_with(Backend::Sqlite, |settings| {
        settings.transport.handshake_timeout = HANDSHAKE;
    })
    .await
    else {
        return;
    };
    // A client whose connection completed its handshake and then stays
    // open across the timeout, with a transaction on it.
    let mut session = Session::begin(&app, &[]).await.expect("begin");

    let silent = TcpStream::connect(app.address).await.expect("connect");
    let mut half_preface = TcpStream::connect(app.address).await.expect("connect");
    half_preface
        .write_all(&PREFACE[..PREFACE.len() / 2])
        .await
        .expect("half a preface");
    // The preface and SETTINGS, but never the acknowledgement of sqlgate's.
    let mut unacknowledged = TcpStream::connect(app.address).await.expect("connect");
    unacknowledged
        .write_all(&[PREFACE, &EMPTY_SETTINGS].concat())
        .await
        .expect("preface and settings");
    let opened = Instant::now();

    // A normal client is served meanwhile.
    assert_eq!(select_one(&mut app.query.clone()).await, Ok(1));

    for (what, socket) in [
        ("a socket that sends nothing", silent),
        ("a socket that sends half the preface", half_preface),
        (
            "a socket that never acknowledges the settings",
            unacknowledged,
        ),
    ] {
        let closed = closed_within(socket, HANDSHAKE + Duration::from_secs(3))
            .await
            .unwrap_or_else(|| panic!("{what}: still open"));
        let after = closed.duration_since(opened);
        assert!(
            after >= HANDSHAKE - Duration::from_millis(200),
            "{what}: closed after {after:?}, before the handshake timeout"
        );
    }

    // The handshaken connection outlived the timeout: its session goes on.
    assert!(opened.elapsed() > HANDSHAKE);
    assert_eq!(session.row("SELECT 2").await, vec![Kind::IntValue(2)]);
    session.commit().await;
    assert_eq!(select_one(&mut app.query.clone()).await, Ok(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_above_the_limit_are_closed_until_a_slot_frees() {
    within(TEST_BOUND, "the test", connection_limit()).await;
}

async fn connection_limit() {
    let Some(db) = TestDatabase::create(Backend::Sqlite).await else {
        return;
    };
    let (sqlgate, address) = Sqlgate::serving(
        &db.url,
        &[
            ("SQLGATE_TRANSPORT__MAX_CONNECTIONS", "2"),
            ("SQLGATE_LOG_FILTER", "info"),
        ],
    )
    .await;
    // Two clients, each its own connection, both served.
    let mut first = admitted_client(address).await;
    let mut second = admitted_client(address).await;
    assert_eq!(select_one(&mut first).await, Ok(1));
    assert_eq!(select_one(&mut second).await, Ok(1));

    // A third connection is closed at once: no HTTP/2 settings from the
    // server, and no wait for the handshake timeout (5 s).
    let refused = TcpStream::connect(address).await.expect("connect");
    let connected = Instant::now();
    let mut first_bytes = [0; 64];
    let read = within(
        Duration::from_secs(2),
        "the refused connection's close",
        refused_read(refused, &mut first_bytes),
    )
    .await;
    assert_eq!(read, 0, "the server spoke HTTP/2 on a refused connection");
    assert!(connected.elapsed() < Duration::from_secs(1));
    // A gRPC client's call fails at once. (grpc-go, -java and -core answer
    // UNAVAILABLE for a connection closed before the server's settings;
    // tonic says CANCELLED or UNKNOWN, as the close arrives as FIN or reset.)
    let calling = Instant::now();
    let refused_call = match connect(address).await {
        Some(mut query) => select_one(&mut query).await,
        None => Err(Code::Unavailable),
    };
    assert!(refused_call.is_err(), "{refused_call:?}");
    assert!(calling.elapsed() < Duration::from_secs(2));
    // The two within the limit are still served.
    assert_eq!(select_one(&mut first).await, Ok(1));
    assert_eq!(select_one(&mut second).await, Ok(1));

    // One closes; its slot goes to the next client.
    drop(second);
    let mut third = admitted_client(address).await;
    assert_eq!(select_one(&mut third).await, Ok(1));
    assert_eq!(select_one(&mut first).await, Ok(1));

    drop((first, third));
    let (status, output) = sqlgate.stop().await;
    assert!(status.success(), "{status}");
    let refusals: Vec<_> = output
        .iter()
        .filter(|line| line.contains("client connection limit reached"))
        .collect();
    assert!(
        !refusals.is_empty(),
        "no line about the refusal:\n{output:#?}"
    );
    for line in refusals {
        assert!(
            line.contains("max_connections=2")
                && line.contains("refused=")
                && line.contains("peer=127.0.0.1:"),
            "{line}"
        );
    }
}

/// A client on a connection of its own that sqlgate admitted. A slot
/// frees once sqlgate has seen its connection close, a moment after the
/// client closed it, so this retries for up to 5 s.
async fn admitted_client(address: SocketAddr) -> QueryClient<Channel> {
    let started = Instant::now();
    loop {
        if let Some(mut query) = connect(address).await
            && select_one(&mut query).await.is_ok()
        {
            return query;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no connection admitted within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A client on a new connection to `address`; `None` if connecting failed.
async fn connect(address: SocketAddr) -> Option<QueryClient<Channel>> {
    Channel::from_shared(format!("http://{address}"))
        .expect("uri")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .ok()
        .map(QueryClient::new)
}

/// What a read on a refused connection gives: 0 for a close, also when
/// the close was a reset.
async fn refused_read(mut socket: TcpStream, buffer: &mut [u8]) -> usize {
    socket.read(buffer).await.unwrap_or(0)
}
