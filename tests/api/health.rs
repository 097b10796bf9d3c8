//! Health that tells the truth about the pool: readiness follows a probe of
//! the database (with hysteresis) and the pool's saturation; liveness
//! follows only the process.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio_stream::StreamExt;
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{
    helpers::{Backend, WAIT, spawn_app, spawn_app_with, within},
    pg_activity::{Backends, sqlgate_backends},
    proxy::Proxy,
    test_database::{host_and_database, postgres_admin_url},
};

/// The next status a health watch sends (within [`WAIT`]).
pub async fn next_status(
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
    let interval = Duration::from_millis(100);
    let Some((app, proxy)) = app_behind_a_proxy(|s| {
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

/// Readiness of a fresh app over a proxy to PostgreSQL that the test can cut.
async fn app_behind_a_proxy(
    adjust: impl FnOnce(&mut sqlgate::config::Settings),
) -> Option<(crate::helpers::TestApp, Proxy)> {
    let target: SocketAddr = host_and_database(&postgres_admin_url())
        .0
        .parse()
        .expect("a host:port");
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

/// Opens a `Watch` on readiness over `channel` and checks its first answer
/// is SERVING.
pub async fn watch_readiness(
    channel: tonic::transport::Channel,
) -> tonic::Streaming<tonic_health::pb::HealthCheckResponse> {
    let mut readiness = HealthClient::new(channel)
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
    // Five probes in a row, 250 ms apart, decide each way (long enough
    // that a healthy probe does not time out while the rest of the suite
    // loads the machine).
    let interval = Duration::from_millis(250);
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
    let mut readiness = watch_readiness(app.channel.clone()).await;

    // A stall that fails one to three probes (each waits 250 ms): still
    // SERVING throughout.
    proxy.hold();
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.release();
    let flipped = tokio::time::timeout(Duration::from_millis(2500), readiness.next()).await;
    assert!(
        flipped.is_err(),
        "readiness changed after a blip shorter than the failure threshold: {flipped:?}"
    );

    // A real outage: NOT_SERVING only after five failed probes (≥ 1 s).
    proxy.cut();
    let cut = Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(6), next_status(&mut readiness))
        .await
        .expect("NOT_SERVING within 6 s");
    assert_eq!(status, ServingStatus::NotServing);
    let noticed = cut.elapsed();
    assert!(
        noticed >= 4 * interval && noticed < 10 * interval,
        "NOT_SERVING {noticed:?} after the cut; five failed probes take 1–1.5 s"
    );
    assert!(!app.pool_stats().await.database_reachable);

    // Back: SERVING only after five good probes.
    proxy.restore();
    let restored = Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(6), next_status(&mut readiness))
        .await
        .expect("SERVING within 6 s");
    assert_eq!(status, ServingStatus::Serving);
    let back = restored.elapsed();
    assert!(
        back >= 4 * interval && back < Duration::from_secs(6),
        "SERVING {back:?} after the restore; five good probes take at least 1 s \
         (plus reconnecting)"
    );
    let stats = app.pool_stats().await;
    assert!(stats.database_reachable);
    // The last probe's latency is reported: a real round trip, under the
    // probe's 250 ms budget.
    let latency = stats.last_probe_latency.expect("last_probe_latency");
    assert!(
        latency.seconds == 0 && latency.nanos > 0 && latency.nanos < 250_000_000,
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
        // Only saturation may flip it here, never a failed probe (the probe
        // has a connection of its own, so a full pool does not fail it).
        s.health.failure_threshold = 1000;
        s.health.saturation_waiters = 2;
        s.health.saturation_duration = Duration::from_millis(500);
    })
    .await
    else {
        return;
    };
    let app = Arc::new(app);
    let mut readiness = watch_readiness(app.channel.clone()).await;
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
    // Busy, not down: the reason is the waiters, and the database is reachable.
    assert!(stats.database_reachable, "{stats:?}");
    assert!(
        stats
            .saturation_reason
            .contains("callers waiting for a database connection"),
        "{stats:?}"
    );
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
    let stats = app.pool_stats().await;
    assert!(
        !stats.saturated && stats.saturation_reason.is_empty(),
        "{stats:?}"
    );
}

/// Runs `sqlgate health ARGS` and returns its exit code and stderr.
pub async fn health_command(args: &[&str]) -> (Option<i32>, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_sqlgate"))
        .arg("health")
        .args(args)
        .output()
        .await
        .expect("sqlgate health runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_command_exits_zero_only_when_serving() {
    let Some(app) = spawn_app(Backend::Sqlite).await else {
        return;
    };
    let addr = app.address.to_string();
    for service in ["readiness", "liveness", "", "sqlgate.v1.Query"] {
        let (code, stderr) = health_command(&["--addr", &addr, "--service", service]).await;
        assert_eq!(code, Some(0), "{service:?}: {stderr}");
    }
    let (code, stderr) = health_command(&["--addr", &addr, "--service", "nope"]).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("NotFound") || stderr.contains("not found"),
        "{stderr}"
    );
    // Nothing listening: fails within its timeout.
    let closed = crate::binary::free_address().to_string();
    let started = Instant::now();
    let (code, stderr) = health_command(&["--addr", &closed, "--timeout", "1s"]).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // After shutdown: nothing answers, the command fails.
    app.stop().await;
    let (code, _) = health_command(&["--addr", &addr, "--timeout", "1s"]).await;
    assert_eq!(code, Some(1));
}
