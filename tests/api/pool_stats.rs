//! Admin/GetPoolStats tells the truth: callers waiting while the pool is
//! full, how long they waited, how many gave up, how many calls were served.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use sqlgate::grpc::pb;
use tonic::Code;
use tonic_types::StatusExt;

use crate::{
    helpers::{Backend, TestApp, error_details, spawn_app_with},
    pg_activity::{Backends, sqlgate_backends},
};

fn std_duration(duration: Option<prost_types::Duration>) -> Duration {
    Duration::try_from(duration.expect("a duration")).expect("not negative")
}

/// Waits (up to 5 s) until the stats satisfy `done`; returns them.
async fn stats_when(
    app: &TestApp,
    what: &str,
    done: impl Fn(&pb::PoolStats) -> bool,
) -> pb::PoolStats {
    let started = Instant::now();
    loop {
        let stats = app.pool_stats().await;
        if done(&stats) {
            return stats;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{what} not seen within 5 s: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Starts `sql` as an Execute call of its own.
fn call(app: &Arc<TestApp>, sql: &str) -> tokio::task::JoinHandle<Result<(), tonic::Status>> {
    let app = app.clone();
    let sql = sql.to_owned();
    tokio::spawn(async move { app.execute(&sql, vec![]).await.map(|_| ()) })
}

/// Holds the pool's one connection with `pg_sleep(seconds)`; returns once
/// PostgreSQL shows it running.
async fn hold_the_pool(
    app: &Arc<TestApp>,
    seconds: f64,
) -> tokio::task::JoinHandle<Result<(), tonic::Status>> {
    let holder = call(app, &format!("SELECT pg_sleep({seconds})"));
    let mut direct = app.postgres_direct().await;
    let started = Instant::now();
    while sqlgate_backends(&mut direct, &app.db.name, Backends::Running("pg_sleep")).await == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "pg_sleep never ran"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    holder
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_pool_stats_count_waiters_waits_timeouts_and_calls() {
    let acquire_timeout = Duration::from_millis(1500);
    let Some(app) = spawn_app_with(Backend::Postgres, |s| {
        s.pool.max_connections = 1;
        s.pool.min_connections = 1;
        s.pool.acquire_timeout = acquire_timeout;
        // The probe runs on a connection of its own; keep it quiet anyway.
        s.health.probe_interval = Duration::from_secs(3600);
    })
    .await
    else {
        return;
    };
    let app = Arc::new(app);

    // Fresh: nothing served, nobody waited.
    let fresh = app.pool_stats().await;
    assert_eq!(fresh.max_connections, 1);
    assert_eq!(fresh.waiting, 0);
    assert_eq!(fresh.acquire_timeouts, 0);
    assert_eq!(fresh.calls_total, 0);
    assert_eq!(std_duration(fresh.acquire_wait_max), Duration::ZERO);

    // The one connection is held for a second; three callers queue behind it.
    let holder = hold_the_pool(&app, 1.0).await;
    let queued: Vec<_> = (0..3).map(|_| call(&app, "SELECT 1")).collect();
    let full = stats_when(&app, "three waiters", |s| s.waiting == 3).await;
    assert_eq!(full.in_use_connections, 1, "{full:?}");
    assert_eq!(full.idle_connections, 0, "{full:?}");
    assert_eq!(full.open_connections, 1, "{full:?}");
    holder.await.expect("task").expect("the holder");
    for caller in queued {
        caller
            .await
            .expect("task")
            .expect("a queued caller is served");
    }
    let after = app.pool_stats().await;
    assert_eq!(after.waiting, 0, "{after:?}");
    assert_eq!(after.calls_total, 4, "{after:?}");
    assert_eq!(after.acquire_timeouts, 0, "{after:?}");
    // Waits: the holder's (none), then three of most of a second: the
    // median and up are queue waits.
    let (p50, p99, max) = (
        std_duration(after.acquire_wait_p50),
        std_duration(after.acquire_wait_p99),
        std_duration(after.acquire_wait_max),
    );
    assert!(p50 >= Duration::from_millis(500), "p50 {p50:?}");
    assert!(p50 <= p99 && p99 <= max, "{p50:?} {p99:?} {max:?}");
    assert!(max < Duration::from_secs(2), "max {max:?}");

    // The connection is held past the acquire timeout: two callers give up.
    let holder = hold_the_pool(&app, 2.5).await;
    let queued: Vec<_> = (0..2).map(|_| call(&app, "SELECT 1")).collect();
    stats_when(&app, "two waiters", |s| s.waiting == 2).await;
    for caller in queued {
        let status = caller
            .await
            .expect("task")
            .expect_err("the pool stays full past acquire_timeout");
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert_eq!(error_details(&status).0, "POOL_EXHAUSTED");
        assert!(status.get_error_details().retry_info().is_some());
    }
    let gave_up = app.pool_stats().await;
    assert_eq!(gave_up.acquire_timeouts, 2, "{gave_up:?}");
    assert_eq!(gave_up.waiting, 0, "{gave_up:?}");
    assert_eq!(gave_up.calls_total, 7, "{gave_up:?}");
    let max = std_duration(gave_up.acquire_wait_max);
    assert!(
        max >= acquire_timeout - Duration::from_millis(100) && max < acquire_timeout * 2,
        "the longest wait is a timed-out one: {max:?}"
    );
    holder.await.expect("task").expect("the holder");
    let done = app.pool_stats().await;
    assert_eq!(done.calls_total, 7);
    assert_eq!(done.acquire_timeouts, 2);
    assert_eq!(done.waiting, 0);
    app.wait_until_pool_idle().await;
}
