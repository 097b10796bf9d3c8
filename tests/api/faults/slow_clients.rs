//! Clients that misbehave on the wire, beside a steady load: one that
//! starts a 50 MB stream and never reads it, and many that vanish in the
//! middle of an HTTP/2 frame — in a unary call, and in a session whose
//! `commit` message is cut in half (its writes must not be committed).

use std::time::{Duration, Instant};

use prost::Message;
use sqlgate::grpc::pb::{self, BeginSession, ExecuteRequest, SessionRequest};
use tokio::{io::AsyncWriteExt, net::TcpStream};
use tokio_stream::StreamExt;
use tonic::Code;

use super::{
    end::sigterm_under_load,
    ledger::{Ledger, Outcome},
    load::{CallKind, Connection, Load, Mix},
    rig::{Rig, note},
};
use crate::helpers::{Backend, TEST_BOUND, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_reader_that_never_reads_fifty_megabytes() {
    within(TEST_BOUND, "the test", never_reads(Backend::Postgres)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_a_reader_that_never_reads_fifty_megabytes() {
    within(TEST_BOUND, "the test", never_reads(Backend::MySql)).await;
}

/// A 50 MB result: 50,000 rows of 1,000 bytes.
fn fifty_megabytes(backend: Backend) -> &'static str {
    match backend {
        Backend::MySql => "SELECT seq, REPEAT('x', 1000) FROM seq_1_to_50000",
        _ => "SELECT g, repeat('x', 1000) FROM generate_series(1, 50000) g",
    }
}

/// The stream is ended at the stall timeout (3 s here), its statement
/// cancelled on the database; sqlgate's memory does not take the 50 MB;
/// the reader, once it reads, gets the frames sent before and then
/// RESOURCE_EXHAUSTED `READER_STALLED`; the load beside it is served.
async fn never_reads(backend: Backend) {
    let Some(mut rig) = Rig::on(backend).await else {
        return;
    };
    let sampler = rig.sample();
    let load = Load::start(&rig, Mix::default(), Ledger::default(), "stall");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline = rig.rss_kib().expect("memory");

    let reader = Connection::to(rig.address);
    let mut request = tonic::Request::new(ExecuteRequest {
        sql: fifty_megabytes(backend).to_owned(),
        params: vec![],
        max_rows: 0,
    });
    request.set_timeout(Duration::from_secs(60));
    let started = Instant::now();
    let mut frames = reader
        .query()
        .execute_stream(request)
        .await
        .expect("the stream starts")
        .into_inner();
    // Not a frame read for longer than the stall timeout, and then some.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let peak = sampler.now().peak_rss(baseline);
    let running = rig
        .monitor
        .sessions()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|session| session.contains("repeat") || session.contains("REPEAT"))
        .collect::<Vec<_>>();
    assert!(
        running
            .iter()
            .all(|s| !s.contains(" active ") && !s.contains("Query")),
        "the stalled stream's statement still runs: {running:?}"
    );
    let (mut rows, mut ended) = (0usize, None);
    while let Some(frame) = frames.next().await {
        match frame {
            Ok(frame) => {
                if let Some(pb::result_frame::Frame::Rows(batch)) = frame.frame {
                    rows += batch.rows.len();
                }
            }
            Err(status) => {
                ended = Some(status);
                break;
            }
        }
    }
    let status = ended.expect("the stalled stream ended with an error");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("stall") || format!("{status:?}").contains("READER_STALLED"));
    assert!(rows < 50_000, "all rows arrived: {rows}");
    note(&format!(
        "{backend:?}: a 50 MB stream never read: ended {:?} after it began with {:?}; {rows} rows \
         had been sent; sqlgate RSS {baseline} KiB before, {peak} KiB at most",
        started.elapsed(),
        status.code()
    ));
    assert!(
        peak.saturating_sub(baseline) < 30 * 1024,
        "sqlgate grew from {baseline} KiB to {peak} KiB holding a stalled stream"
    );
    load.wait_recovered(
        &[CallKind::PointSelect, CallKind::Stream, CallKind::Session],
        Instant::now(),
        Duration::from_secs(5),
    )
    .await;
    rig.assert_no_idle_in_transaction().await;
    sigterm_under_load(&mut rig, load, sampler).await;
}

// ------------------------------------------------------------ mid-frame

/// The HTTP/2 client preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// An HTTP/2 frame: its 9-byte header and `payload`.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).expect("small");
    let mut frame = length.to_be_bytes()[1..].to_vec();
    frame.extend_from_slice(&[kind, flags]);
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// HEADERS (END_HEADERS) for a gRPC call of `path` on stream 1, literal
/// header fields without indexing and without Huffman coding.
fn grpc_headers(path: &str) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "sqlgate"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ] {
        block.push(0);
        block.push(u8::try_from(name.len()).expect("short"));
        block.extend_from_slice(name.as_bytes());
        block.push(u8::try_from(value.len()).expect("short"));
        block.extend_from_slice(value.as_bytes());
    }
    h2_frame(0x1, 0x4, 1, &block)
}

/// A gRPC message frame (not compressed) around `message`.
fn grpc_message(message: &[u8]) -> Vec<u8> {
    let mut framed = vec![0];
    framed.extend_from_slice(&u32::try_from(message.len()).expect("small").to_be_bytes());
    framed.extend_from_slice(message);
    framed
}

/// Opens an HTTP/2 connection and the call `path`; the socket, ready for
/// DATA on stream 1.
async fn open_call(rig: &Rig, path: &str) -> TcpStream {
    let mut socket = TcpStream::connect(rig.address).await.expect("connect");
    socket.set_nodelay(true).expect("nodelay");
    let mut opening = PREFACE.to_vec();
    opening.extend(h2_frame(0x4, 0, 0, &[]));
    opening.extend(grpc_headers(path));
    socket.write_all(&opening).await.expect("write");
    socket
}

/// Closes `socket` with a reset (SO_LINGER 0): the peer vanishes.
fn vanish(socket: TcpStream) {
    let _ = socket.set_zero_linger();
    drop(socket);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_clients_that_vanish_mid_frame() {
    within(TEST_BOUND, "the test", vanish_mid_frame(Backend::Postgres)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_clients_that_vanish_mid_frame() {
    within(TEST_BOUND, "the test", vanish_mid_frame(Backend::MySql)).await;
}

/// 50 unary calls cut inside their DATA frame (and as many inside the
/// gRPC message of a whole DATA frame), and 20 sessions that began and
/// inserted a row and then vanish inside their `commit`: nothing of the
/// sessions is committed, nothing is left open, the load is served.
async fn vanish_mid_frame(backend: Backend) {
    let Some(mut rig) = Rig::on(backend).await else {
        return;
    };
    let sampler = rig.sample();
    let load = Load::start(&rig, Mix::default(), Ledger::default(), "midframe");
    let ledger = load.ledger.clone();
    tokio::time::sleep(Duration::from_secs(1)).await;

    let insert = rig.sql("INSERT INTO ledger (k, via) VALUES ($1, $2)");
    let execute = grpc_message(
        &ExecuteRequest {
            sql: insert.clone(),
            params: vec![pb::Value::text("never"), pb::Value::text("cut")],
            max_rows: 0,
        }
        .encode_to_vec(),
    );
    for n in 0..100 {
        let mut socket = open_call(&rig, "/sqlgate.v1.Query/Execute").await;
        // Odd: a DATA frame whose header promises the whole message and
        // half of it comes; even: a whole DATA frame holding half a
        // gRPC message.
        let half = &execute[..execute.len() / 2];
        let bytes = if n % 2 == 1 {
            let mut frame = h2_frame(0x0, 0, 1, &execute);
            frame.truncate(9 + half.len());
            frame
        } else {
            h2_frame(0x0, 0, 1, half)
        };
        socket.write_all(&bytes).await.expect("write");
        vanish(socket);
    }

    let mut cut_sessions = Vec::new();
    for n in 0..20 {
        let key = format!("midframe-cut-{n}");
        let mut socket = open_call(&rig, "/sqlgate.v1.Sessions/Attach").await;
        let mut data = grpc_message(
            &SessionRequest::begin(BeginSession::labelled([("test", "mid-frame")])).encode_to_vec(),
        );
        data.extend(grpc_message(
            &SessionRequest::execute_within(
                1,
                insert.clone(),
                vec![pb::Value::text(&key), pb::Value::text("cut")],
                Duration::from_secs(5),
            )
            .encode_to_vec(),
        ));
        socket
            .write_all(&h2_frame(0x0, 0, 1, &data))
            .await
            .expect("write");
        cut_sessions.push((key, socket));
    }
    // Let the sessions begin and insert, then cut each inside its commit.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let commit = grpc_message(&SessionRequest::commit().encode_to_vec());
    for (key, mut socket) in cut_sessions {
        let mut frame = h2_frame(0x0, 0, 1, &commit);
        frame.truncate(frame.len() - 1);
        let _ = socket.write_all(&frame).await;
        vanish(socket);
        ledger.record(&key, Outcome::Failed);
    }

    let after = Instant::now();
    load.wait_recovered(
        &[
            CallKind::PointSelect,
            CallKind::Write,
            CallKind::Stream,
            CallKind::Session,
        ],
        after,
        Duration::from_secs(5),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    rig.assert_no_idle_in_transaction().await;
    let ending = sigterm_under_load(&mut rig, load, sampler).await;
    assert!(ending.verdict.failed >= 20);
    note(&format!(
        "{backend:?}: 100 calls and 20 sessions vanished mid-frame; {}",
        ending.verdict
    ));
}
