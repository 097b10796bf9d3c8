//! `log.format`: JSON lines an aggregator can read, with the same fields
//! as the text line; JSON by default when stderr is not a terminal; text
//! when asked; a format sqlgate does not know stops start-up. The real
//! binary, its output captured.

use std::time::{Duration, Instant};

use serde_json::Value;
use sqlgate::grpc::pb::{self, query_client::QueryClient};
use tempfile::TempDir;

use crate::binary::{Sqlgate, channel};

/// A sqlgate on a SQLite file of its own, with `format` (empty: unset).
async fn start(format: &str) -> (Sqlgate, std::net::SocketAddr, TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("log.db").display());
    let (sqlgate, address) = Sqlgate::serving(&url, &[("SQLGATE_LOG__FORMAT", format)]).await;
    (sqlgate, address, dir)
}

/// Runs `SELECT 7 AS seven` through Execute.
async fn select_seven(address: std::net::SocketAddr) {
    QueryClient::new(channel(address).await)
        .execute(pb::ExecuteRequest {
            sql: "SELECT 7 AS seven".to_owned(),
            ..Default::default()
        })
        .await
        .expect("select");
}

/// Waits (up to 10 s) for a stderr line containing `part`.
async fn line_with(sqlgate: &Sqlgate, part: &str) -> String {
    let started = Instant::now();
    loop {
        if let Some(line) = sqlgate
            .output()
            .into_iter()
            .find(|line| line.starts_with("stderr: ") && line.contains(part))
        {
            return line["stderr: ".len()..].to_owned();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no line with {part:?}:\n{}",
            sqlgate.output().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_carry_the_call_fields_and_every_line_is_json() {
    let (sqlgate, address, _dir) = start("json").await;
    select_seven(address).await;
    let line = line_with(&sqlgate, "call done").await;
    let call: Value = serde_json::from_str(&line).expect("the call line is JSON");
    assert_eq!(call["message"], "call done", "{line}");
    assert_eq!(call["level"], "INFO", "{line}");
    assert_eq!(call["service"], "sqlgate.v1.Query", "{line}");
    assert_eq!(call["method"], "Execute", "{line}");
    assert_eq!(call["code"], "Ok", "{line}");
    assert_eq!(call["rows"], 1, "{line}");
    assert_eq!(
        call["fingerprint"],
        sqlgate::query::fingerprint::fingerprint("SELECT 7 AS seven"),
        "{line}"
    );
    assert!(
        call["peer"]
            .as_str()
            .is_some_and(|peer| peer.starts_with("127.0.0.1:")),
        "{line}"
    );
    assert!(call["elapsed_ms"].as_f64().is_some(), "{line}");
    // An unauthenticated caller has no role of its own: the field is left
    // out, in JSON as in text.
    assert!(call.get("role").is_none(), "{line}");
    assert!(
        call["timestamp"]
            .as_str()
            .is_some_and(|time| chrono::DateTime::parse_from_rfc3339(time).is_ok()),
        "{line}"
    );
    let (_, output) = sqlgate.stop().await;
    for line in output
        .iter()
        .filter_map(|line| line.strip_prefix("stderr: "))
    {
        let parsed: Result<Value, _> = serde_json::from_str(line);
        assert!(
            parsed.is_ok_and(|value| value.is_object()),
            "not a JSON object: {line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_is_the_default_when_stderr_is_not_a_terminal() {
    let (sqlgate, address, _dir) = start("").await;
    select_seven(address).await;
    let line = line_with(&sqlgate, "call done").await;
    let call: Value = serde_json::from_str(&line).expect("JSON by default");
    assert_eq!(call["method"], "Execute", "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_is_written_when_asked() {
    let (sqlgate, address, _dir) = start("text").await;
    select_seven(address).await;
    let line = line_with(&sqlgate, "call done").await;
    assert!(serde_json::from_str::<Value>(&line).is_err(), "{line}");
    for field in ["method=\"Execute\"", "code=Ok", "rows=1", "fingerprint="] {
        assert!(line.contains(field), "{field} missing from {line}");
    }
    assert!(
        !line.contains("role"),
        "no role without an identity: {line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_format_stops_start_up_naming_the_setting() {
    let sqlgate = Sqlgate::start(
        &["--database-url", "sqlite::memory:"],
        &[("SQLGATE_LOG__FORMAT", "xml")],
    );
    let (status, output) = sqlgate.exited(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(2), "{output:?}");
    assert!(
        output.iter().any(|line| line.contains("log.format")),
        "{output:?}"
    );
}
