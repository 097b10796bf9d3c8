//! Health that tells the truth about the pool, and a shutdown that leaves
//! nothing behind: readiness follows a probe of the database (with
//! hysteresis), liveness follows only the process, and SIGTERM drains,
//! rolls back and closes every connection before exiting 0.

use std::{
    net::SocketAddr,
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
    binary::{Sqlgate, channel, free_address},
    helpers::{
        Backend, Backends, WAIT, spawn_app, spawn_app_with, sqlgate_backends, wait_for_backends,
        within,
    },
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
    within(WAIT, "a health status", watch.next())
        .await
        .expect("a status")
        .expect("ok")
        .status()
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
    let late: Vec<_> = results
        .iter()
        .filter(|(sent, _, _)| *sent > after_not_ready)
        .collect();
    assert!(
        late.len() >= 10,
        "only {} calls were sent while not ready",
        late.len()
    );
    for (sent, took, code) in late {
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

/// A test database served by the real `sqlgate` binary (not in-process,
/// so that it can be signalled), a channel to it, and a direct connection
/// that watches the database.
struct Served {
    sqlgate: Sqlgate,
    address: SocketAddr,
    channel: Channel,
    direct: sqlx::PgConnection,
    name: String,
    _database: crate::helpers::TestDatabase,
}

/// Creates the test's database (running `setup` in it first) and serves it
/// with the binary, whose drain timeout is `drain`.
async fn served_by_the_binary(drain: &str, setup: &[&str]) -> Option<Served> {
    let app = spawn_app(Backend::Postgres).await?;
    for sql in setup {
        app.run(sql).await;
    }
    let url = app.db.url.clone();
    let name = app.db.name.clone();
    let direct = app.postgres_direct().await;
    let _database = app.stop().await;
    let address = free_address();
    let mut sqlgate = Sqlgate::start(
        &["--listen", &address.to_string(), "--database-url", &url],
        &[
            ("SQLGATE_SHUTDOWN__DRAIN_TIMEOUT", drain),
            ("SQLGATE_LOG_FILTER", "warn"),
        ],
    );
    sqlgate.wait_listening(address).await;
    let channel = channel(address).await;
    Some(Served {
        sqlgate,
        address,
        channel,
        direct,
        name,
        _database,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sigterm_drains_rolls_back_and_leaves_no_connection() {
    let Some(Served {
        sqlgate,
        address,
        channel,
        mut direct,
        name,
        _database,
    }) = served_by_the_binary("3s", &["CREATE TABLE t (id INTEGER)"]).await
    else {
        return;
    };
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
    requests
        .send(pb::SessionRequest::begin(pb::BeginSession::default()))
        .await
        .expect("begin");
    requests
        .send(pb::SessionRequest::execute(
            1,
            "INSERT INTO t VALUES (1)",
            vec![],
        ))
        .await
        .expect("insert");
    loop {
        let answer = within(WAIT, "a session answer", answers.message())
            .await
            .expect("ok")
            .expect("answer");
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
    within(WAIT, "the metadata frame", stream.next())
        .await
        .expect("metadata")
        .expect("ok");

    // A readiness watch open before the signal: the first thing shutdown
    // does is tell it NOT_SERVING; then the watch ends, so that it does not
    // hold the drain.
    let mut readiness = HealthClient::new(channel.clone())
        .watch(HealthCheckRequest {
            service: "readiness".into(),
        })
        .await
        .expect("watch")
        .into_inner();
    assert_eq!(next_status(&mut readiness).await, ServingStatus::Serving);
    sqlgate.signal("TERM");
    let signalled = Instant::now();
    let not_serving = tokio::time::timeout(Duration::from_secs(1), next_status(&mut readiness))
        .await
        .expect("readiness changes within 1 s of SIGTERM");
    assert_eq!(not_serving, ServingStatus::NotServing);

    // The session is rolled back, with reason shutdown.
    let status = loop {
        match within(WAIT, "a session answer", answers.message()).await {
            Ok(Some(_)) => {}
            Ok(None) => panic!("the session stream ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let watch_end = tokio::time::timeout(Duration::from_secs(1), readiness.next())
        .await
        .expect("the readiness watch ends at shutdown");
    assert!(watch_end.is_none(), "{watch_end:?}");
    // The in-flight stream finishes within the drain.
    let mut rows = 0;
    let mut finished = false;
    while let Some(frame) = within(WAIT, "a frame", stream.next()).await {
        match frame.expect("the stream completes").frame {
            Some(Frame::Rows(batch)) => rows += batch.rows.len(),
            Some(Frame::Stats(_)) => finished = true,
            _ => {}
        }
    }
    assert!(finished && rows == 100, "stream cut short: {rows} rows");

    let (exit, _) = sqlgate.exited(Duration::from_secs(10)).await;
    assert_eq!(exit.code(), Some(0), "{exit:?}");
    // The stream took about a second: well under the 3 s drain timeout.
    assert!(
        signalled.elapsed() < Duration::from_millis(2500),
        "took {:?}",
        signalled.elapsed()
    );

    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
        .fetch_one(&mut direct)
        .await
        .expect("count");
    assert_eq!(count, 0, "the session's insert was rolled back");
    wait_for_backends(&mut direct, &name, Backends::All, 0, "after exit").await;
}

/// Starts `SELECT <sleep>` through `channel` and waits until the database
/// shows it running; the call's task.
async fn slow_call_running(
    channel: &Channel,
    direct: &mut sqlx::PgConnection,
    database: &str,
    sleep: &'static str,
) -> tokio::task::JoinHandle<Result<tonic::Response<pb::ExecuteResponse>, tonic::Status>> {
    let mut client = QueryClient::new(channel.clone());
    let call = tokio::spawn(async move {
        client
            .execute(pb::ExecuteRequest {
                sql: format!("SELECT {sleep}"),
                params: vec![],
                max_rows: 0,
            })
            .await
    });
    wait_for_backends(
        direct,
        database,
        Backends::Running(sleep),
        1,
        "the slow call runs",
    )
    .await;
    call
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_second_signal_exits_at_once() {
    let Some(Served {
        mut sqlgate,
        channel,
        mut direct,
        name,
        _database,
        ..
    }) = served_by_the_binary("30s", &[]).await
    else {
        return;
    };
    // A call that would hold the drain for 20 s.
    let slow = slow_call_running(&channel, &mut direct, &name, "pg_sleep(20)").await;
    sqlgate.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        sqlgate.try_wait().is_none(),
        "still draining after the first signal"
    );
    sqlgate.signal("TERM");
    let (exit, _) = sqlgate.exited(Duration::from_secs(2)).await;
    assert_eq!(exit.code(), Some(1));
    slow.abort();
}

/// Readiness of a fresh app over a proxy to PostgreSQL that the test can cut.
async fn app_behind_a_proxy(
    adjust: impl FnOnce(&mut sqlgate::config::Settings),
) -> Option<(crate::helpers::TestApp, Proxy)> {
    let target: SocketAddr = {
        let url = std::env::var("SQLGATE_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        host_port(&url).parse().expect("a host:port")
    };
    let proxy = Proxy::start(target).await;
    let app = spawn_app_with(Backend::Postgres, |s| {
        s.database_url = s
            .database_url
            .replace(&target.to_string(), &proxy.address.to_string());
        adjust(s);
    })
    .await?;
    Some((app, proxy))
}

async fn watch_readiness(
    app: &crate::helpers::TestApp,
) -> tonic::Streaming<tonic_health::pb::HealthCheckResponse> {
    let mut readiness = HealthClient::new(app.channel.clone())
        .watch(HealthCheckRequest {
            service: "readiness".into(),
        })
        .await
        .expect("watch")
        .into_inner();
    assert_eq!(next_status(&mut readiness).await, ServingStatus::Serving);
    readiness
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_readiness_changes_only_after_its_thresholds() {
    // Five probes in a row, 100 ms apart, decide each way.
    let interval = Duration::from_millis(100);
    let Some((app, proxy)) = app_behind_a_proxy(|s| {
        s.health.probe_interval = interval;
        s.health.probe_timeout = interval;
        s.health.failure_threshold = 5;
        s.health.success_threshold = 5;
        s.pool.acquire_timeout = Duration::from_secs(2);
    })
    .await
    else {
        return;
    };
    let mut readiness = watch_readiness(&app).await;

    // A stall that fails one to three probes (each waits 100 ms): still
    // SERVING throughout.
    proxy.hold();
    tokio::time::sleep(Duration::from_millis(250)).await;
    proxy.release();
    let flipped = tokio::time::timeout(Duration::from_secs(1), readiness.next()).await;
    assert!(
        flipped.is_err(),
        "readiness changed after a blip shorter than the failure threshold: {flipped:?}"
    );

    // A real outage: NOT_SERVING only after five failed probes (≥ 400 ms).
    proxy.cut();
    let cut = Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(3), next_status(&mut readiness))
        .await
        .expect("NOT_SERVING within 3 s");
    assert_eq!(status, ServingStatus::NotServing);
    let noticed = cut.elapsed();
    assert!(
        noticed >= 4 * interval && noticed < 8 * interval,
        "NOT_SERVING {noticed:?} after the cut; five failed probes take 400–600 ms"
    );
    assert!(!app.pool_stats().await.database_reachable);

    // Back: SERVING only after five good probes.
    proxy.restore();
    let restored = Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(3), next_status(&mut readiness))
        .await
        .expect("SERVING within 3 s");
    assert_eq!(status, ServingStatus::Serving);
    let back = restored.elapsed();
    assert!(
        back >= 4 * interval && back < Duration::from_secs(3),
        "SERVING {back:?} after the restore; five good probes take at least 400 ms \
         (plus reconnecting)"
    );
    let stats = app.pool_stats().await;
    assert!(stats.database_reachable);
    // The last probe's latency is reported: a real round trip, well under
    // the probe's 100 ms budget.
    let latency = stats.last_probe_latency.expect("last_probe_latency");
    assert!(
        latency.seconds == 0 && latency.nanos > 0 && latency.nanos < 100_000_000,
        "{latency:?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_saturated_pool_makes_sqlgate_not_ready_after_its_duration() {
    let Some(app) = spawn_app_with(Backend::Postgres, |s| {
        s.pool.max_connections = 1;
        s.pool.min_connections = 1;
        s.pool.acquire_timeout = Duration::from_secs(10);
        s.health.probe_interval = Duration::from_millis(50);
        s.health.probe_timeout = Duration::from_millis(50);
        // Probes that find no free connection must not be what flips it here.
        s.health.failure_threshold = 1000;
        s.health.saturation_waiters = 2;
        s.health.saturation_duration = Duration::from_millis(500);
    })
    .await
    else {
        return;
    };
    let app = Arc::new(app);
    let mut readiness = watch_readiness(&app).await;
    let call = |sql: &'static str| {
        let app = app.clone();
        tokio::spawn(async move { app.execute(sql, vec![]).await.map(|r| r.rows.len()) })
    };
    let holder = call("SELECT pg_sleep(2.5)");
    let mut direct = app.postgres_direct().await;
    let started = Instant::now();
    while sqlgate_backends(
        &mut direct,
        &app.db.name,
        Backends::Running("pg_sleep(2.5)"),
    )
    .await
        == 0
    {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the holder never ran"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Two callers waiting (not above the threshold of 2) for 600 ms: ready.
    let mut waiters = vec![call("SELECT 1"), call("SELECT 1")];
    let quiet = tokio::time::timeout(Duration::from_millis(600), readiness.next()).await;
    assert!(
        quiet.is_err(),
        "readiness changed with 2 callers waiting: {quiet:?}"
    );
    // Two more: above the threshold. NOT_SERVING once that has lasted 500 ms.
    waiters.push(call("SELECT 1"));
    waiters.push(call("SELECT 1"));
    let crowded = Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(2), next_status(&mut readiness))
        .await
        .expect("NOT_SERVING within 2 s");
    assert_eq!(status, ServingStatus::NotServing);
    let after = crowded.elapsed();
    assert!(
        after >= Duration::from_millis(450),
        "NOT_SERVING {after:?} after the pool became saturated; the duration is 500 ms"
    );
    let stats = app.pool_stats().await;
    assert!(stats.saturated, "{stats:?}");
    assert!(stats.waiting > 2, "{stats:?}");
    // The holder finishes, every waiter gets its answer, ready again.
    assert_eq!(
        within(WAIT, "the holder", holder)
            .await
            .expect("join")
            .expect("holder"),
        1
    );
    for waiter in waiters {
        assert_eq!(
            within(WAIT, "a waiter", waiter)
                .await
                .expect("join")
                .expect("waiter"),
            1
        );
    }
    let status = tokio::time::timeout(Duration::from_secs(2), next_status(&mut readiness))
        .await
        .expect("SERVING again within 2 s");
    assert_eq!(status, ServingStatus::Serving);
    assert!(!app.pool_stats().await.saturated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sigterm_refuses_new_sessions_and_cuts_calls_after_the_drain() {
    let Some(Served {
        sqlgate,
        channel,
        mut direct,
        name,
        _database,
        ..
    }) = served_by_the_binary("1s", &[]).await
    else {
        return;
    };
    // A call that would run for 30 s.
    let slow = slow_call_running(&channel, &mut direct, &name, "pg_sleep(30)").await;
    sqlgate.signal("TERM");
    let signalled = Instant::now();
    tokio::time::sleep(Duration::from_millis(100)).await;

    // A new session is refused.
    let (requests, inbox) = tokio::sync::mpsc::channel(4);
    requests
        .send(pb::SessionRequest::begin(pb::BeginSession::default()))
        .await
        .expect("begin");
    let refused = tokio::time::timeout(Duration::from_secs(2), async {
        let mut answers = pb::sessions_client::SessionsClient::new(channel.clone())
            .attach(tokio_stream::wrappers::ReceiverStream::new(inbox))
            .await?
            .into_inner();
        answers.message().await
    })
    .await
    .expect("answered within 2 s")
    .expect_err("no session during shutdown");
    // Refused by sqlgate (UNAVAILABLE) while it rolls sessions back, or by
    // the HTTP/2 GOAWAY that follows (the client library reports the
    // stream it may no longer open as CANCELLED): never a `began`.
    assert!(
        matches!(refused.code(), Code::Unavailable | Code::Cancelled),
        "{refused:?}"
    );

    // The slow call is cut once the 1 s drain is over, and its statement
    // stops on the database; the process exits 0.
    let cut = tokio::time::timeout(Duration::from_secs(5), slow)
        .await
        .expect("the call ends after the drain")
        .expect("join")
        .expect_err("cut");
    // sqlgate answers the cut call itself: UNAVAILABLE, shutting down.
    assert_eq!(cut.code(), Code::Unavailable, "{cut:?}");
    let (exit, _) = sqlgate.exited(Duration::from_secs(5)).await;
    assert_eq!(exit.code(), Some(0), "{exit:?}");
    let took = signalled.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "exited {took:?} after SIGTERM with a 1 s drain"
    );
    let stopped = Instant::now();
    loop {
        let left = sqlgate_backends(&mut direct, &name, Backends::All).await;
        if left == 0 {
            break;
        }
        assert!(
            stopped.elapsed() < Duration::from_millis(500),
            "{left} sqlgate backend(s) still open after exit"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_statement_still_running_after_the_drain_is_stopped_in_process() {
    let Some(app) = spawn_app_with(Backend::Sqlite, |s| {
        s.shutdown.drain_timeout = Duration::from_millis(300);
    })
    .await
    else {
        return;
    };
    app.run("CREATE TABLE t (x BIGINT)").await;
    let mut view = crate::observe::DatabaseView::of(&app).await;
    // A write that would run until its 30 s deadline, holding the lock.
    let mut query = app.query.clone();
    let call = tokio::spawn(async move {
        query
            .execute(pb::ExecuteRequest {
                sql: "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c \
                      WHERE x < 10000000000) INSERT INTO t SELECT x FROM c"
                    .into(),
                params: vec![],
                max_rows: 0,
            })
            .await
    });
    view.wait_until(Duration::from_secs(2), "the write holds the lock", |seen| {
        seen.writes == 1
    })
    .await;
    // The drain ends at 300 ms: the statement is interrupted, its
    // transaction rolled back, the pool closed without waiting it out.
    let stopping = Instant::now();
    let _database = app.stop().await;
    let took = stopping.elapsed();
    assert!(took < Duration::from_millis(1500), "shutdown took {took:?}");
    let status = within(WAIT, "the cut call", call)
        .await
        .expect("join")
        .expect_err("cut");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    // The interrupted connection is closed behind the answer: the lock goes
    // a moment later (the statement alone would hold it for 30 s).
    view.wait_until(Duration::from_secs(1), "the lock is free", |seen| {
        seen.is_clean()
    })
    .await;
    assert_eq!(view.count_rows("t").await, 0);
}
