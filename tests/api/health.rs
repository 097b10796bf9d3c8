//! Health that tells the truth about the pool, and a shutdown that leaves
//! nothing behind: readiness follows a probe of the database (with
//! hysteresis), liveness follows only the process, and SIGTERM drains,
//! rolls back and closes every connection before exiting 0.

use std::{
    net::SocketAddr,
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use sqlgate::grpc::pb::{self, query_client::QueryClient, result_frame::Frame};
use tokio_stream::StreamExt;
use tonic::{Code, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{
    helpers::{Backend, Backends, spawn_app, spawn_app_with, sqlgate_backends},
    proxy::Proxy,
};

/// `host:port` of a database URL.
fn host_port(url: &str) -> String {
    let after_at = url.rsplit_once('@').map_or(url, |(_, rest)| rest);
    let after_scheme = after_at
        .split_once("://")
        .map_or(after_at, |(_, rest)| rest);
    after_scheme
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned()
}

async fn next_status(
    watch: &mut tonic::Streaming<tonic_health::pb::HealthCheckResponse>,
) -> ServingStatus {
    watch.next().await.expect("a status").expect("ok").status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_services_are_not_found_on_check_and_streamed_unknown_on_watch() {
    let Some(app) = spawn_app(Backend::Sqlite).await else {
        return;
    };
    let mut health = HealthClient::new(app.channel.clone());
    let status = health
        .check(HealthCheckRequest {
            service: "nope".into(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(status.code(), Code::NotFound);
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "nope".into(),
        })
        .await
        .expect("watch opens")
        .into_inner();
    assert_eq!(next_status(&mut watch).await, ServingStatus::ServiceUnknown);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_readiness_fails_fast_and_recovers() {
    let target: SocketAddr = {
        let url = std::env::var("SQLGATE_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        host_port(&url).parse().expect("a host:port")
    };
    let proxy = Proxy::start(target).await;
    let interval = Duration::from_millis(100);
    let Some(app) = spawn_app_with(Backend::Postgres, |s| {
        s.database_url = s
            .database_url
            .replace(&target.to_string(), &proxy.address.to_string());
        s.health.probe_interval = interval;
        s.health.probe_timeout = interval;
        s.pool.acquire_timeout = Duration::from_secs(2);
    })
    .await
    else {
        return;
    };
    let app = Arc::new(app);
    let mut health = HealthClient::new(app.channel.clone());
    let mut readiness = health
        .watch(HealthCheckRequest {
            service: "readiness".into(),
        })
        .await
        .expect("watch")
        .into_inner();
    assert_eq!(next_status(&mut readiness).await, ServingStatus::Serving);

    // Load while the database goes away.
    let load = {
        let app = app.clone();
        tokio::spawn(async move {
            let mut results = Vec::new();
            let until = Instant::now() + Duration::from_millis(1500);
            while Instant::now() < until {
                let started = Instant::now();
                let code = app
                    .execute("SELECT 1", vec![])
                    .await
                    .err()
                    .map(|s| s.code());
                results.push((started, started.elapsed(), code));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            results
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    proxy.cut();
    let cut = Instant::now();
    assert_eq!(next_status(&mut readiness).await, ServingStatus::NotServing);
    let noticed = cut.elapsed();
    assert!(
        noticed < 2 * interval + 2 * interval,
        "readiness went NOT_SERVING {noticed:?} after the cut"
    );
    // Liveness is about the process, not the database.
    let liveness = health
        .check(HealthCheckRequest {
            service: "liveness".into(),
        })
        .await
        .expect("liveness")
        .into_inner();
    assert_eq!(liveness.status(), ServingStatus::Serving);

    // Calls fail fast with UNAVAILABLE, not at their (30 s) deadlines.
    let started = Instant::now();
    let status = app
        .execute("SELECT 1", vec![])
        .await
        .expect_err("database down");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(started.elapsed() < Duration::from_millis(100));
    let results = load.await.expect("load");
    let after_not_ready = cut + noticed;
    for (sent, took, code) in results
        .iter()
        .filter(|(sent, _, _)| *sent > after_not_ready)
    {
        assert!(
            *took < Duration::from_millis(200),
            "a call sent at {sent:?} took {took:?} ({code:?})"
        );
        assert_eq!(*code, Some(Code::Unavailable));
    }

    // The database comes back: ready again, calls succeed, no restart.
    proxy.restore();
    let restored = Instant::now();
    assert_eq!(next_status(&mut readiness).await, ServingStatus::Serving);
    assert!(
        restored.elapsed() < Duration::from_secs(2),
        "{:?}",
        restored.elapsed()
    );
    assert_eq!(app.run("SELECT 1").await.rows.len(), 1);
    let stats = app.pool_stats().await;
    assert!(stats.database_reachable);
    assert!(stats.connections_opened >= 2, "reconnected: {stats:?}");
}

/// A free port on the loopback interface.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port()
}

async fn sqlgate_process(database_url: &str, drain: &str) -> (tokio::process::Child, SocketAddr) {
    let address: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sqlgate"))
        .arg("serve")
        .arg("--listen")
        .arg(address.to_string())
        .arg("--database-url")
        .arg(database_url)
        .env("SQLGATE_SHUTDOWN__DRAIN_TIMEOUT", drain)
        .env("SQLGATE_LOG_FILTER", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("sqlgate binary");
    let started = Instant::now();
    loop {
        if tokio::net::TcpStream::connect(address).await.is_ok() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "sqlgate did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (child, address)
}

fn signal(child: &tokio::process::Child, name: &str) {
    let pid = child.id().expect("running").to_string();
    let status = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid)
        .status()
        .expect("kill");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sigterm_drains_rolls_back_and_leaves_no_connection() {
    // The test's database, served by the real binary instead of in-process.
    let Some(app) = spawn_app(Backend::Postgres).await else {
        return;
    };
    app.run("CREATE TABLE t (id INTEGER)").await;
    let url = app.db.url.clone();
    let name = app.db.name.clone();
    let mut direct = app.postgres_direct().await;
    let _database = app.stop().await;

    let (mut child, address) = sqlgate_process(&url, "3s").await;
    let channel = Channel::from_shared(format!("http://{address}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    // An idle client: connected, nothing in flight.
    let _idle = Channel::from_shared(format!("http://{address}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");

    // An open session with a write in it.
    let (requests, inbox) = tokio::sync::mpsc::channel(4);
    let mut answers = pb::sessions_client::SessionsClient::new(channel.clone())
        .attach(tokio_stream::wrappers::ReceiverStream::new(inbox))
        .await
        .expect("attach")
        .into_inner();
    use pb::session_request::Request as R;
    requests
        .send(pb::SessionRequest {
            request: Some(R::Begin(pb::BeginSession::default())),
        })
        .await
        .expect("begin");
    requests
        .send(pb::SessionRequest {
            request: Some(R::Execute(pb::SessionExecute {
                request_id: 1,
                sql: "INSERT INTO t VALUES (1)".into(),
                ..pb::SessionExecute::default()
            })),
        })
        .await
        .expect("insert");
    loop {
        let answer = answers.message().await.expect("ok").expect("answer");
        if matches!(
            answer.response,
            Some(pb::session_response::Response::Done(_))
        ) {
            break;
        }
    }

    // An in-flight stream that takes about a second.
    let mut stream = QueryClient::new(channel.clone())
        .execute_stream(pb::ExecuteRequest {
            sql: "SELECT g, pg_sleep(0.01) FROM generate_series(1, 100) AS g".into(),
            params: vec![],
            max_rows: 0,
        })
        .await
        .expect("stream")
        .into_inner();
    stream.next().await.expect("metadata").expect("ok");

    let mut health = HealthClient::new(channel.clone());
    signal(&child, "TERM");
    let signalled = Instant::now();

    // The session is rolled back, with reason shutdown.
    let status = loop {
        match answers.message().await {
            Ok(Some(_)) => {}
            Ok(None) => panic!("the session stream ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    // Readiness went NOT_SERVING (if the server still answers at all).
    if let Ok(response) = health
        .check(HealthCheckRequest {
            service: "readiness".into(),
        })
        .await
    {
        assert_eq!(response.into_inner().status(), ServingStatus::NotServing);
    }
    // The in-flight stream finishes within the drain.
    let mut rows = 0;
    let mut finished = false;
    while let Some(frame) = stream.next().await {
        match frame.expect("the stream completes").frame {
            Some(Frame::Rows(batch)) => rows += batch.rows.len(),
            Some(Frame::Stats(_)) => finished = true,
            _ => {}
        }
    }
    assert!(finished && rows == 100, "stream cut short: {rows} rows");

    let exit = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits within the drain")
        .expect("status");
    assert_eq!(exit.code(), Some(0), "{exit:?}");
    assert!(
        signalled.elapsed() < Duration::from_secs(4),
        "took {:?}",
        signalled.elapsed()
    );

    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
        .fetch_one(&mut direct)
        .await
        .expect("count");
    assert_eq!(count, 0, "the session's insert was rolled back");
    assert_eq!(sqlgate_backends(&mut direct, &name, Backends::All).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_second_signal_exits_at_once() {
    let Some(app) = spawn_app(Backend::Postgres).await else {
        return;
    };
    let url = app.db.url.clone();
    let _database = app.stop().await;
    let (mut child, address) = sqlgate_process(&url, "30s").await;
    let channel = Channel::from_shared(format!("http://{address}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    // A call that would hold the drain for 20 s.
    let mut client = QueryClient::new(channel);
    let slow = tokio::spawn(async move {
        client
            .execute(pb::ExecuteRequest {
                sql: "SELECT pg_sleep(20)".into(),
                params: vec![],
                max_rows: 0,
            })
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(&child, "TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        child.try_wait().expect("wait").is_none(),
        "still draining after the first signal"
    );
    signal(&child, "TERM");
    let exit = tokio::time::timeout(Duration::from_secs(2), child.wait())
        .await
        .expect("exits at once")
        .expect("status");
    assert_eq!(exit.code(), Some(1));
    slow.abort();
}
