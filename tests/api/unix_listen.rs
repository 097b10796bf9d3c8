//! sqlgate listening on a Unix domain socket (`listen = "unix:PATH"`), as
//! a sidecar does: every call kind, sessions and their cleanup, the caller
//! known by its uid (names and per-caller limits), health, hostile and
//! surplus connections, and the socket file's life with the real binary
//! (its mode, a stale file replaced, anything else refused and left
//! intact, removed at shutdown).

use std::{
    os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use sqlgate::{
    config::{ListenAddress, Settings},
    grpc::pb::{self, BeginSession, query_client::QueryClient, result_frame::Frame},
};
use tokio::{io::AsyncWriteExt, net::UnixStream};
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::{
    binary::Sqlgate,
    health::health_command,
    helpers::{
        Backend, TEST_BOUND, WAIT, closed_within, connect, error_details, list_sessions,
        select_one, spawn_app_with, v, within,
    },
    observe::DatabaseView,
    session_client::{CLEANUP_BOUND, Session},
    test_database::TestDatabase,
};

/// The uid of this process: what sqlgate sees as its Unix peer.
fn my_uid() -> u32 {
    std::fs::metadata("/proc/self").expect("/proc/self").uid()
}

/// A fresh directory and a socket path in it.
fn socket_in_tempdir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("sqlgate.sock");
    (dir, path)
}

/// Settings that listen on `path`.
fn on_socket(settings: &mut Settings, path: &Path) {
    settings.listen = ListenAddress::Unix(path.to_owned());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_streams_sessions_and_health_over_a_unix_socket() {
    within(TEST_BOUND, "the test", every_call_kind()).await;
}

async fn every_call_kind() {
    let (_dir, path) = socket_in_tempdir();
    let Some(app) = spawn_app_with(Backend::Postgres, |s| on_socket(s, &path)).await else {
        return;
    };
    let metadata = std::fs::metadata(&path).expect("the socket exists");
    assert!(metadata.file_type().is_socket());
    assert_eq!(metadata.permissions().mode() & 0o777, 0o660, "default mode");

    app.run("CREATE TABLE t (id INTEGER PRIMARY KEY)").await;
    app.execute(
        "INSERT INTO t SELECT generate_series(1, $1)",
        vec![v::int(2500)],
    )
    .await
    .expect("insert");
    assert_eq!(app.count("t").await, 2500);

    let mut frames = QueryClient::new(app.channel.clone())
        .execute_stream(pb::ExecuteRequest {
            sql: "SELECT id FROM t ORDER BY id".to_owned(),
            params: vec![],
            max_rows: 0,
        })
        .await
        .expect("a stream")
        .into_inner();
    let mut rows = 0;
    while let Some(frame) = within(WAIT, "a frame", frames.message())
        .await
        .expect("frame")
    {
        if let Some(Frame::Rows(batch)) = frame.frame {
            rows += batch.rows.len();
        }
    }
    assert_eq!(rows, 2500);

    let mut session = Session::begin(&app, &[]).await.expect("begin");
    session
        .execute(&app, 1, "INSERT INTO t VALUES ($1)", vec![v::int(9999)])
        .await
        .expect("insert in the session");
    let sessions = list_sessions(&app).await;
    let expected = format!("unix:uid={}", my_uid());
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0].peer, expected, "{sessions:?}");
    assert_eq!(sessions[0].caller, expected, "{sessions:?}");
    session.commit().await;
    assert_eq!(app.count("t").await, 2501);

    let health = HealthClient::new(app.channel.clone())
        .check(HealthCheckRequest {
            service: "liveness".to_owned(),
        })
        .await
        .expect("health over the socket")
        .into_inner();
    assert_eq!(health.status, 1, "SERVING");
    app.stop().await;
    assert!(!path.exists(), "the socket file is removed at shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unix_client_that_vanishes_leaves_no_transaction_open() {
    within(TEST_BOUND, "the test", vanishing_client()).await;
}

async fn vanishing_client() {
    let (_dir, path) = socket_in_tempdir();
    let Some(app) = spawn_app_with(Backend::Postgres, |s| on_socket(s, &path)).await else {
        return;
    };
    app.run("CREATE TABLE t (id INTEGER)").await;
    let mut view = DatabaseView::of(&app).await;
    let channel = app.another_channel().await;
    let mut session = Session::begin_on(channel.clone(), BeginSession::default())
        .await
        .expect("begin");
    session
        .execute(&app, 1, "INSERT INTO t VALUES ($1)", vec![v::int(1)])
        .await
        .expect("insert");
    let seen = view.seen().await;
    assert_eq!(seen.open_transactions, 1, "the write is open: {seen:?}");
    // The client goes: its call and then its connection.
    session.vanish();
    drop(channel);
    view.assert_settles_clean(&app, CLEANUP_BOUND + Duration::from_secs(2))
        .await;
    assert_eq!(app.count("t").await, 0, "rolled back");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_uid_is_one_caller_whatever_its_connections() {
    within(TEST_BOUND, "the test", one_caller_per_uid()).await;
}

async fn one_caller_per_uid() {
    let (_dir, path) = socket_in_tempdir();
    let Some(app) = spawn_app_with(Backend::Postgres, |s| {
        on_socket(s, &path);
        s.limits.per_caller.max_sessions = 1;
    })
    .await
    else {
        return;
    };
    let first = app.another_channel().await;
    let second = app.another_channel().await;
    let _held = Session::begin_on(first, BeginSession::default())
        .await
        .expect("its one session");
    let status = Session::begin_on(second, BeginSession::default())
        .await
        .err()
        .expect("a second session from the same uid, on another connection");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let (reason, metadata, _) = error_details(&status);
    assert_eq!(reason, "CALLER_LIMIT", "{status:?}");
    assert_eq!(
        metadata.get("limit").map(String::as_str),
        Some("limits.per_caller.max_sessions")
    );
    let stats = app.pool_stats().await;
    let key = format!("unix:uid={}", my_uid());
    assert_eq!(
        stats.callers.get(&key).map(|load| load.sessions),
        Some(1),
        "{:?}",
        stats.callers
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_garbled_and_surplus_unix_connections_are_closed() {
    within(TEST_BOUND, "the test", hostile_connections()).await;
}

async fn hostile_connections() {
    const HANDSHAKE: Duration = Duration::from_secs(2);
    let (_dir, path) = socket_in_tempdir();
    let Some(app) = spawn_app_with(Backend::Sqlite, |s| {
        on_socket(s, &path);
        s.transport.handshake_timeout = HANDSHAKE;
        // The app's own client connection, and two more.
        s.transport.max_connections = 3;
    })
    .await
    else {
        return;
    };
    // Garbage instead of the HTTP/2 preface: closed at once.
    let mut garbage = UnixStream::connect(&path).await.expect("connect");
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\xff\x13garbage")
        .await
        .expect("write");
    let sent = Instant::now();
    closed_within(garbage, HANDSHAKE)
        .await
        .expect("a garbled connection is closed before the handshake timeout");
    assert!(sent.elapsed() < HANDSHAKE, "{:?}", sent.elapsed());

    // Nothing at all: closed by the handshake timeout, not before.
    let silent = UnixStream::connect(&path).await.expect("connect");
    let opened = Instant::now();
    let closed = closed_within(silent, HANDSHAKE + Duration::from_secs(3))
        .await
        .expect("a silent connection is closed");
    let lived = closed - opened;
    assert!(
        lived >= HANDSHAKE - Duration::from_millis(100),
        "closed after {lived:?}, before the handshake timeout"
    );

    // Two silent connections fill the limit; a third is closed at once.
    let holders = [
        UnixStream::connect(&path).await.expect("connect"),
        UnixStream::connect(&path).await.expect("connect"),
    ];
    tokio::time::sleep(Duration::from_millis(100)).await;
    let surplus = UnixStream::connect(&path).await.expect("connect");
    let opened = Instant::now();
    closed_within(surplus, HANDSHAKE / 2)
        .await
        .expect("a connection above max_connections is closed at once");
    assert!(opened.elapsed() < HANDSHAKE / 2);
    // The client already connected is served throughout.
    assert_eq!(select_one(&mut app.query.clone()).await, Ok(1));
    drop(holders);
    app.stop().await;
}

/// Waits until sqlgate accepts connections on `path`.
pub async fn wait_for_socket(sqlgate: &mut Sqlgate, path: &Path) {
    let started = Instant::now();
    while UnixStream::connect(path).await.is_err() {
        if let Some(status) = sqlgate.try_wait() {
            panic!(
                "sqlgate exited ({status}) instead of listening on {}:\n{}",
                path.display(),
                sqlgate.output().join("\n")
            );
        }
        assert!(
            started.elapsed() < WAIT,
            "sqlgate did not listen on {} within {WAIT:?}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `sqlgate serve` on `listen` (given as `SQLGATE_LISTEN`, as a chart
/// gives it) that must refuse to start: its exit status must be 2 and its
/// one stderr line must contain `why`.
async fn refused(database_url: &str, listen: &str, why: &str) {
    let sqlgate = Sqlgate::start(
        &["--database-url", database_url],
        &[("SQLGATE_LISTEN", listen)],
    );
    let (status, output) = sqlgate.exited(WAIT).await;
    assert_eq!(status.code(), Some(2), "{output:?}");
    let errors: Vec<_> = output
        .iter()
        .filter(|line| line.starts_with("stderr"))
        .collect();
    assert_eq!(errors.len(), 1, "one line: {output:?}");
    assert!(errors[0].contains(why), "{why:?} in {output:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_file_from_start_to_shutdown() {
    within(TEST_BOUND, "the test", socket_file_life()).await;
}

async fn socket_file_life() {
    let db = TestDatabase::create(Backend::Sqlite)
        .await
        .expect("SQLite is always there");
    let (dir, path) = socket_in_tempdir();
    let listen = format!("unix:{}", path.display());

    // Not a socket: refused, and left as it was.
    std::fs::write(&path, "someone's data").expect("a regular file");
    refused(&db.url, &listen, "is not a socket").await;
    assert_eq!(
        std::fs::read_to_string(&path).expect("still there"),
        "someone's data"
    );
    std::fs::remove_file(&path).expect("remove");

    // No directory: refused, naming it.
    let nowhere = dir.path().join("missing");
    let missing = format!("unix:{}", nowhere.join("s.sock").display());
    refused(
        &db.url,
        &missing,
        &format!("{} does not exist", nowhere.display()),
    )
    .await;
    // Longer than the kernel takes.
    let long = format!("unix:{}/{}.sock", dir.path().display(), "x".repeat(120));
    refused(&db.url, &long, "at most 107").await;

    // A stale socket, as a crashed sqlgate leaves it: replaced.
    drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
    assert!(path.exists());
    let mut sqlgate = Sqlgate::start(
        &["--listen", &listen, "--database-url", &db.url],
        &[("SQLGATE_LISTEN_MODE", "0600")],
    );
    wait_for_socket(&mut sqlgate, &path).await;
    let metadata = std::fs::metadata(&path).expect("socket");
    assert!(metadata.file_type().is_socket());
    assert_eq!(metadata.permissions().mode() & 0o777, 0o600);

    // The probe a sidecar's chart runs.
    let (code, stderr) = health_command(&["--addr", &listen, "--service", "liveness"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let gone = format!("unix:{}", dir.path().join("nobody.sock").display());
    let (code, stderr) = health_command(&["--addr", &gone, "--service", "liveness"]).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("nobody.sock"), "{stderr}");

    // A second sqlgate on the same path: refused, the first unharmed.
    refused(&db.url, &listen, "in use").await;
    let channel = connect(&ListenAddress::Unix(path.clone()))
        .await
        .expect("the first still serves");
    assert_eq!(select_one(&mut QueryClient::new(channel)).await, Ok(1));

    // A clean shutdown removes the file.
    let (status, output) = sqlgate.stop().await;
    assert!(status.success(), "{output:?}");
    assert!(!path.exists(), "the socket file is removed at shutdown");
}
