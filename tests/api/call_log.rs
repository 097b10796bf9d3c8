//! The call log: one line per call of every service, written by the one
//! layer every call passes through, when the call ends — a stream's line
//! when the stream ends, with the rows actually sent, or CANCELLED when
//! the client went away first. The real binary, its output captured.

use std::time::{Duration, Instant};

use sqlgate::grpc::pb::{
    self, admin_client::AdminClient, query_client::QueryClient, result_frame::Frame,
    session_request::Request as R,
};
use tempfile::TempDir;
use tonic::{Code, Streaming};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::{
    binary::{Sqlgate, channel},
    session_client::Session,
};

/// Rows of [`big_result`]: about 12 MB, far more than the HTTP/2 windows
/// and the stream's buffers hold, so the server cannot finish the stream
/// before the client has read it.
const BIG_ROWS: usize = 3_000;

/// A statement of `rows` rows of 4 kB each (`tag` makes its fingerprint
/// the test's own).
fn big_result(rows: usize, tag: &str) -> String {
    format!(
        "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < {rows}) \
         SELECT n AS {tag}, hex(zeroblob(2000)) AS pad FROM c"
    )
}

/// A sqlgate on a SQLite file of its own, logging at `filter`.
async fn start(filter: &str) -> (Sqlgate, std::net::SocketAddr, TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("log.db").display());
    let (sqlgate, address) = Sqlgate::serving(&url, &[("SQLGATE_LOG_FILTER", filter)]).await;
    (sqlgate, address, dir)
}

/// The call lines (done or failed) written so far that contain `part`.
fn call_lines(sqlgate: &Sqlgate, part: &str) -> Vec<String> {
    sqlgate
        .output()
        .into_iter()
        .filter(|line| line.contains("call done") || line.contains("call failed"))
        .filter(|line| line.contains(part))
        .collect()
}

/// Waits (up to 10 s) for a call line containing `part`, then a moment
/// more for any second one; all of them.
async fn wait_for_lines(sqlgate: &Sqlgate, part: &str) -> Vec<String> {
    let started = Instant::now();
    while call_lines(sqlgate, part).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no call line with {part:?} within 10 s:\n{}",
            sqlgate.output().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    call_lines(sqlgate, part)
}

/// Waits for exactly one call line containing `part` and checks it has
/// every one of `parts`.
async fn one_line_with(sqlgate: &Sqlgate, part: &str, parts: &[&str]) -> String {
    let lines = wait_for_lines(sqlgate, part).await;
    assert_eq!(lines.len(), 1, "one line with {part:?}: {lines:?}");
    let line = lines[0].clone();
    for expected in parts {
        assert!(line.contains(expected), "{expected:?} missing from {line}");
    }
    line
}

fn fingerprint_of(sql: &str) -> String {
    format!(
        "fingerprint=\"{}\"",
        sqlgate::query::fingerprint::fingerprint(sql)
    )
}

async fn open_stream(address: std::net::SocketAddr, sql: &str) -> Streaming<pb::ResultFrame> {
    QueryClient::new(channel(address).await)
        .execute_stream(pb::ExecuteRequest {
            sql: sql.to_owned(),
            ..Default::default()
        })
        .await
        .expect("stream")
        .into_inner()
}

async fn next_frame(stream: &mut Streaming<pb::ResultFrame>) -> Option<pb::ResultFrame> {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a frame within 10 s")
        .expect("frame")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_logged_once_when_it_ends_with_the_rows_it_sent() {
    let (sqlgate, address, _dir) = start("info").await;
    let sql = big_result(BIG_ROWS, "streamed");
    let fingerprint = fingerprint_of(&sql);
    let mut stream = open_stream(address, &sql).await;
    let first = next_frame(&mut stream).await.expect("metadata first");
    assert!(matches!(first.frame, Some(Frame::Metadata(_))), "{first:?}");
    // The handler has answered and the first frame arrived; the stream is
    // held open by the unread rows. A line written at the stream's start
    // would be out by now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        call_lines(&sqlgate, &fingerprint),
        Vec::<String>::new(),
        "a line before the stream ended"
    );
    let mut rows = 0;
    while let Some(frame) = next_frame(&mut stream).await {
        if let Some(Frame::Rows(batch)) = frame.frame {
            rows += batch.rows.len();
        }
    }
    assert_eq!(rows, BIG_ROWS);
    one_line_with(
        &sqlgate,
        &fingerprint,
        &[
            "INFO",
            "call done",
            "service=\"sqlgate.v1.Query\"",
            "method=\"ExecuteStream\"",
            "peer=127.0.0.1:",
            &format!("rows={BIG_ROWS} "),
            "code=Ok",
            "elapsed_ms=",
        ],
    )
    .await;
    let (status, output) = sqlgate.stop().await;
    assert!(status.success(), "{output:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_the_client_drops_midway_is_logged_cancelled() {
    let (sqlgate, address, _dir) = start("info").await;
    let sql = big_result(BIG_ROWS, "dropped");
    let fingerprint = fingerprint_of(&sql);
    let mut stream = open_stream(address, &sql).await;
    next_frame(&mut stream).await.expect("metadata");
    next_frame(&mut stream).await.expect("first rows");
    drop(stream);
    one_line_with(
        &sqlgate,
        &fingerprint,
        &[
            "call failed",
            "method=\"ExecuteStream\"",
            "code=Cancelled",
            "elapsed_ms=",
        ],
    )
    .await;
    let (status, output) = sqlgate.stop().await;
    assert!(status.success(), "{output:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_and_admin_calls_are_logged_with_their_method_and_code() {
    let (sqlgate, address, _dir) = start("info").await;
    let channel = channel(address).await;
    let mut session = Session::begin_on(channel.clone(), pb::BeginSession::default())
        .await
        .expect("began");
    let rows = session
        .query("SELECT 1 AS n UNION ALL SELECT 2")
        .await
        .expect("rows");
    assert_eq!(rows.len(), 2);
    let mut admin = AdminClient::new(channel.clone());
    let listed = admin
        .list_sessions(pb::ListSessionsRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.sessions.len(), 1);
    session
        .send(pb::SessionRequest {
            request: Some(R::Commit(pb::CommitSession {})),
        })
        .await;
    // The client half-closes; the server then ends the stream.
    drop(session.requests.take());
    assert!(session.final_status().await.is_none(), "a clean end");
    admin
        .get_pool_stats(pb::GetPoolStatsRequest::default())
        .await
        .expect("stats");
    let refused = admin
        .terminate_session(pb::TerminateSessionRequest::default())
        .await
        .expect_err("no session id");
    assert_eq!(refused.code(), Code::InvalidArgument);

    one_line_with(
        &sqlgate,
        "method=\"Attach\"",
        &[
            "call done",
            "service=\"sqlgate.v1.Sessions\"",
            "peer=127.0.0.1:",
            &format!("session=\"{}\"", session.id),
            "rows=2 ",
            "code=Ok",
        ],
    )
    .await;
    for method in ["GetPoolStats", "ListSessions"] {
        one_line_with(
            &sqlgate,
            &format!("method=\"{method}\""),
            &["call done", "service=\"sqlgate.v1.Admin\"", "code=Ok"],
        )
        .await;
    }
    one_line_with(
        &sqlgate,
        "method=\"TerminateSession\"",
        &["call failed", "code=InvalidArgument"],
    )
    .await;
    let (status, output) = sqlgate.stop().await;
    assert!(status.success(), "{output:?}");
}

/// Health checks a probe sends every few seconds, then a Query call that
/// marks how far the log has got.
async fn check_health_then_mark(address: std::net::SocketAddr, marker: &str) {
    let channel = channel(address).await;
    let mut health = HealthClient::new(channel.clone());
    for _ in 0..3 {
        health
            .check(HealthCheckRequest::default())
            .await
            .expect("check");
    }
    QueryClient::new(channel)
        .execute(pb::ExecuteRequest {
            sql: marker.to_owned(),
            ..Default::default()
        })
        .await
        .expect("marker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_are_logged_at_debug_not_info() {
    let marker = "SELECT 1 AS marker";
    let (sqlgate, address, _dir) = start("info").await;
    check_health_then_mark(address, marker).await;
    wait_for_lines(&sqlgate, &fingerprint_of(marker)).await;
    assert_eq!(
        call_lines(&sqlgate, "grpc.health"),
        Vec::<String>::new(),
        "health checks at info"
    );
    let (status, output) = sqlgate.stop().await;
    assert!(status.success(), "{output:?}");

    let (sqlgate, address, _dir) = start("debug").await;
    check_health_then_mark(address, marker).await;
    wait_for_lines(&sqlgate, &fingerprint_of(marker)).await;
    let checks = call_lines(&sqlgate, "service=\"grpc.health.v1.Health\"");
    assert_eq!(checks.len(), 3, "{checks:?}");
    for check in checks {
        assert!(
            check.contains("DEBUG") && check.contains("method=\"Check\""),
            "{check}"
        );
    }
    let (status, output) = sqlgate.stop().await;
    assert!(status.success(), "{output:?}");
}
