//! Metrics as Prometheus scrapes them: sqlgate's `/metrics` endpoint on a
//! listener of its own, read directly, and scraped by a real Prometheus
//! (Debian's `prometheus` package) whose HTTP API must then return the
//! pool figures and the call durations. Without the package the scrape
//! test skips loudly, except in CI.

use std::{
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{
    binary::free_address,
    helpers::{Backend, TestApp, spawn_app_with},
    test_database::running_in_ci,
};

/// `GET path` over plain HTTP/1.1 (one request, then the server closes);
/// the status code and the body.
pub async fn http_get(address: SocketAddr, path: &str) -> (u16, String) {
    http_raw(
        address,
        &format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// Sends `request` as it is; the status code and the body.
async fn http_raw(address: SocketAddr, request: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("answered within 10 s")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A sqlgate on SQLite (always reachable) serving metrics on a free port.
async fn app_with_metrics() -> TestApp {
    spawn_app_with(Backend::Sqlite, |settings| {
        settings.metrics.listen = Some("127.0.0.1:0".parse().expect("address"));
    })
    .await
    .expect("SQLite is always reachable")
}

/// The value of the first sample of `name` whose line contains all of
/// `labels`, in Prometheus text.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|line| line.starts_with(name) && !line.starts_with('#'))
        .filter(|line| line[name.len()..].starts_with(['{', ' ']))
        .find(|line| labels.iter().all(|label| line.contains(label)))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_serves_pool_session_and_call_figures_as_prometheus_text() {
    let app = app_with_metrics().await;
    let address = app.metrics_address.expect("metrics served");
    app.run("SELECT 1").await;
    let error = app
        .execute("SELEC nonsense", vec![])
        .await
        .expect_err("syntax");
    assert_eq!(error.code(), tonic::Code::InvalidArgument);
    let (status, text) = http_get(address, "/metrics").await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        sample(&text, "db_client_connection_max", &[]),
        Some(4.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "db_client_connection_idle_min", &[]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "db_client_connection_pending_requests", &[]),
        Some(0.0),
        "{text}"
    );
    assert!(
        sample(
            &text,
            "db_client_connection_count",
            &["db_client_connection_state=\"idle\""]
        )
        .is_some(),
        "{text}"
    );
    assert!(
        sample(&text, "sqlgate_session_count", &[]).is_some(),
        "{text}"
    );
    let executes = |code: &str| {
        sample(
            &text,
            "rpc_server_call_duration_seconds_count",
            &[
                "rpc_method=\"sqlgate.v1.Query/Execute\"",
                &format!("rpc_response_status_code=\"{code}\""),
            ],
        )
    };
    assert_eq!(executes("OK"), Some(1.0), "{text}");
    assert_eq!(executes("INVALID_ARGUMENT"), Some(1.0), "{text}");
    assert!(text.contains("rpc_system_name=\"grpc\""), "{text}");
    let operations =
        |labels: &[&str]| sample(&text, "db_client_operation_duration_seconds_count", labels);
    assert_eq!(
        operations(&["db_operation_name=\"SELECT\""]),
        Some(1.0),
        "{text}"
    );
    // A statement the database refused: counted under its error, its
    // unknown first word under OTHER.
    assert_eq!(
        operations(&[
            "db_operation_name=\"OTHER\"",
            "error_type=\"INVALID_ARGUMENT\""
        ]),
        Some(1.0),
        "{text}"
    );
    assert!(text.contains("db_system_name=\"sqlite\""), "{text}");
    let _ = app.stop().await;
}

/// The metrics page, once no pooled connection is in use (a call's
/// connection is back in the pool); fails after five seconds.
async fn metrics_once_none_is_used(address: std::net::SocketAddr) -> String {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let (_, text) = http_get(address, "/metrics").await;
        let used = sample(
            &text,
            "db_client_connection_count",
            &["db_client_connection_state=\"used\""],
        );
        if used == Some(0.0) {
            return text;
        }
        assert!(
            std::time::Instant::now() < until,
            "a connection stayed in use: {text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// A connection the pool opens for a caller is timed
/// (`db.client.connection.create_time`); the one opened at start-up, for
/// no caller, is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_opened_for_a_caller_has_its_create_time() {
    let app = app_with_metrics().await;
    let address = app.metrics_address.expect("metrics served");
    let created = |text: &str| {
        sample(
            text,
            "db_client_connection_create_time_seconds_count",
            &["db_client_connection_pool_name"],
        )
    };
    // Before any call, only the start-up connection is open: not timed.
    let (_, text) = http_get(address, "/metrics").await;
    assert_eq!(created(&text).unwrap_or(0.0), 0.0, "{text}");
    app.run("SELECT 1").await;
    // Sessions hold every open connection (the pool may have opened more
    // than one while the call ran): the next call needs a connection of
    // its own, opened for it and timed. sqlx gives a connection back to
    // the pool in a task of its own, a moment after the call's answer:
    // count the idle ones once none is in use.
    let text = metrics_once_none_is_used(address).await;
    let before = created(&text).unwrap_or(0.0);
    let idle = sample(
        &text,
        "db_client_connection_count",
        &["db_client_connection_state=\"idle\""],
    )
    .expect("idle connections");
    let mut sessions = Vec::new();
    for _ in 0..idle as usize {
        sessions.push(
            crate::session_client::Session::begin(&app, &[])
                .await
                .expect("begin"),
        );
    }
    let (_, text) = http_get(address, "/metrics").await;
    let held = created(&text).unwrap_or(0.0);
    app.run("SELECT 2").await;
    let (_, text) = http_get(address, "/metrics").await;
    assert_eq!(created(&text), Some(held + 1.0), "{text}");
    assert!(held >= before, "{text}");
    let sum = sample(
        &text,
        "db_client_connection_create_time_seconds_sum",
        &["db_client_connection_pool_name"],
    )
    .expect("a sum");
    assert!(sum > 0.0 && sum < 5.0, "{sum}");
    for session in sessions {
        session.rollback().await;
    }
    let _ = app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_methods_share_one_series_and_the_endpoint_refuses_what_it_does_not_serve() {
    let app = app_with_metrics().await;
    let address = app.metrics_address.expect("metrics served");
    // Calls to methods that do not exist: a hostile caller inventing
    // method names must not create a series per name.
    for n in 0..5 {
        let mut grpc = tonic::client::Grpc::new(app.channel.clone());
        grpc.ready().await.expect("ready");
        let path: tonic::codegen::http::uri::PathAndQuery =
            format!("/sqlgate.v1.Query/Invented{n}")
                .parse()
                .expect("path");
        let codec = tonic_prost::ProstCodec::<
            sqlgate::grpc::pb::ExecuteRequest,
            sqlgate::grpc::pb::ExecuteResponse,
        >::default();
        let answer = grpc
            .unary(tonic::Request::new(Default::default()), path, codec)
            .await
            .expect_err("no such method");
        assert_eq!(answer.code(), tonic::Code::Unimplemented);
    }
    let (_, text) = http_get(address, "/metrics").await;
    assert!(!text.contains("Invented"), "{text}");
    assert_eq!(
        sample(
            &text,
            "rpc_server_call_duration_seconds_count",
            &["rpc_method=\"_OTHER\""]
        ),
        Some(5.0),
        "{text}"
    );
    assert_eq!(http_get(address, "/other").await.0, 404);
    let post = "POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(http_raw(address, post).await.0, 405);
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    assert_eq!(http_raw(address, &huge).await.0, 431);
    // Still serving after all that.
    assert_eq!(http_get(address, "/metrics").await.0, 200);
    let _ = app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_metrics_listener_unless_configured() {
    let app = spawn_app_with(Backend::Sqlite, |_| {})
        .await
        .expect("SQLite");
    assert_eq!(app.metrics_address, None);
    let _ = app.stop().await;
}

/// The `prometheus` binary, if installed; skips loudly (or fails in CI)
/// when it is not.
fn prometheus_binary() -> Option<&'static Path> {
    let binary = Path::new("/usr/bin/prometheus");
    if binary.exists() {
        return Some(binary);
    }
    assert!(
        !running_in_ci(),
        "prometheus is not installed in CI (.ci/run installs it)"
    );
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr().lock(),
        "\n!!!!! SKIPPING: /usr/bin/prometheus is absent (apt-get install prometheus) !!!!!\n"
    );
    None
}

/// Percent-encodes a PromQL query for a URL.
fn encode(query: &str) -> String {
    query
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'_' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Asks Prometheus at `address` for `query` until it returns a sample
/// (up to 60 s); the sample's value.
async fn wait_for_sample(address: SocketAddr, query: &str) -> f64 {
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < Duration::from_secs(60) {
        if tokio::net::TcpStream::connect(address).await.is_ok() {
            let (status, body) =
                http_get(address, &format!("/api/v1/query?query={}", encode(query))).await;
            if status == 200 {
                let answer: Value = serde_json::from_str(&body).expect("JSON");
                if let Some(value) = answer["data"]["result"][0]["value"][1].as_str() {
                    return value.parse().expect("a number");
                }
            }
            last = body;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("Prometheus returned no sample for {query} within 60 s; last answer: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_pool_figures() {
    let Some(binary) = prometheus_binary() else {
        return;
    };
    let app = app_with_metrics().await;
    let target = app.metrics_address.expect("metrics served");
    for _ in 0..3 {
        app.run("SELECT 1").await;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: sqlgate\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .expect("write the scrape config");
    let web = free_address();
    let mut prometheus = tokio::process::Command::new(binary)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start prometheus");
    let max = wait_for_sample(web, "db_client_connection_max{job=\"sqlgate\"}").await;
    assert_eq!(max, 4.0);
    let idle = wait_for_sample(
        web,
        "db_client_connection_count{job=\"sqlgate\",db_client_connection_state=\"idle\"}",
    )
    .await;
    assert!(idle >= 1.0, "idle connections: {idle}");
    let waiting = wait_for_sample(
        web,
        "db_client_connection_pending_requests{job=\"sqlgate\"}",
    )
    .await;
    assert_eq!(waiting, 0.0);
    let calls = wait_for_sample(
        web,
        "sum(rpc_server_call_duration_seconds_count{job=\"sqlgate\",rpc_method=\"sqlgate.v1.Query/Execute\"})",
    )
    .await;
    assert_eq!(calls, 3.0);
    let up = wait_for_sample(web, "up{job=\"sqlgate\"}").await;
    assert_eq!(up, 1.0, "Prometheus reads the endpoint as a healthy target");
    let _ = prometheus.kill().await;
    let _ = app.stop().await;
}
