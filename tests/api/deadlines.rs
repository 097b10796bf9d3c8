//! Deadlines that reach the database: a unary call whose budget runs out is
//! answered DEADLINE_EXCEEDED on time, its statement is gone from the server
//! soon after, and no connection is ever handed back dirty. Streams and a
//! storm of deadlines: `stream_deadlines`.

use std::time::{Duration, Instant};

use sqlgate::grpc::pb;
use tonic::Code;

use crate::{
    helpers::{
        Backend, TestApp, WAIT, error_details, raw_query_client, slow_pattern, slow_sql, spawn_app,
        spawn_app_with, within,
    },
    observe::DatabaseView,
    on_every_backend,
    pg_activity::{Backends, wait_for_backends},
};

/// A request whose `grpc-timeout` header asks for `timeout`. Set by hand:
/// tonic's client-side `set_timeout` would also cut the call locally and
/// hide what the server answers.
pub fn request<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let header = format!("{}u", timeout.as_micros());
    request
        .metadata_mut()
        .insert("grpc-timeout", header.parse().expect("ascii"));
    request
}

/// An `ExecuteRequest` for `sql` (placeholders written for the backend).
pub fn execute_request(app: &TestApp, sql: &str) -> pb::ExecuteRequest {
    pb::ExecuteRequest {
        sql: app.sql(sql),
        params: vec![],
        max_rows: 0,
    }
}

/// A raw client whose HTTP/2 connection is already open, so that timed
/// calls measure sqlgate rather than a TCP and HTTP/2 handshake.
pub async fn warm_client(app: &TestApp) -> crate::helpers::RawClient {
    let mut client = raw_query_client(app.address);
    within(
        WAIT,
        "the warm-up call",
        client.execute(request(
            execute_request(app, "SELECT 1"),
            Duration::from_secs(5),
        )),
    )
    .await
    .expect("warm-up call");
    client
}

/// How late after its deadline a call may be answered. SQLite's slow
/// statement keeps a whole core busy in-process, and the suite runs tests in
/// parallel on two cores, so its answer may wait for a thread a little longer.
pub fn answer_slack(backend: Backend) -> Duration {
    match backend {
        Backend::Sqlite => Duration::from_millis(150),
        Backend::Postgres | Backend::MySql => Duration::from_millis(50),
    }
}

/// Waits (up to 2 s) until the database shows the slow statement running:
/// on PostgreSQL and MariaDB in its list of statements, on SQLite as the
/// write lock the statement holds (so SQLite's slow statements here write).
async fn wait_until_running(view: &mut DatabaseView, backend: Backend) {
    match backend {
        Backend::Sqlite => {
            view.wait_until(Duration::from_secs(2), "the write holds the lock", |seen| {
                seen.open_transactions == 1
            })
            .await;
        }
        Backend::Postgres | Backend::MySql => {
            let started = Instant::now();
            while view.running(slow_pattern(backend)).await == 0 {
                assert!(
                    started.elapsed() < Duration::from_secs(2),
                    "the statement never showed up running"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

/// Asserts that, within `bound`, nothing of sqlgate's runs or holds a
/// transaction or a lock on the database any more (the statement stopped
/// on the server, its transaction rolled back), then that the pool has its
/// connection back within 3 s and still serves.
pub async fn assert_stopped_on_the_server(app: &TestApp, view: &mut DatabaseView, bound: Duration) {
    view.wait_until(bound, "the statement stopped on the server", |seen| {
        seen.running == 0 && seen.open_transactions == 0 && seen.locks == 0
    })
    .await;
    view.assert_settles_clean(app, Duration::from_secs(3)).await;
    assert_eq!(app.run("SELECT 1").await.rows.len(), 1);
}

async fn a_zero_deadline_is_refused_without_touching_the_pool(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let before = app.pool_stats().await;
    let mut client = raw_query_client(app.address);
    let mut zero = tonic::Request::new(execute_request(&app, "SELECT 1"));
    zero.metadata_mut()
        .insert("grpc-timeout", "0n".parse().expect("ascii"));
    let status = client.execute(zero).await.expect_err("zero deadline");
    assert_eq!(status.code(), Code::DeadlineExceeded);
    let (reason, metadata, _) = error_details(&status);
    assert_eq!(reason, "DEADLINE_EXCEEDED");
    assert_eq!(
        metadata.get("phase").map(String::as_str),
        Some("before_start")
    );

    let mut zero = tonic::Request::new(execute_request(&app, "SELECT 1"));
    zero.metadata_mut()
        .insert("grpc-timeout", "0m".parse().expect("ascii"));
    let status = client
        .execute_stream(zero)
        .await
        .expect_err("zero deadline");
    assert_eq!(status.code(), Code::DeadlineExceeded);

    let after = app.pool_stats().await;
    assert_eq!(
        after.calls_total, before.calls_total,
        "no call reached the pool"
    );
    app.stop().await;
}
on_every_backend!(a_zero_deadline_is_refused_without_touching_the_pool);

async fn a_slow_statement_is_stopped_on_the_server_at_its_deadline(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    // On SQLite a slow statement is only visible from outside when it
    // writes (it holds the write lock while it runs).
    app.run("CREATE TABLE sink (x BIGINT)").await;
    let sql = match backend {
        Backend::Sqlite => {
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 10000000000) \
             INSERT INTO sink SELECT x FROM c"
        }
        _ => slow_sql(backend),
    };
    let mut view = DatabaseView::of(&app).await;
    let budget = Duration::from_millis(400);
    let client = warm_client(&app).await;
    let started = Instant::now();
    let call = {
        let mut client = client.clone();
        let message = execute_request(&app, sql);
        tokio::spawn(async move { client.execute(request(message, budget)).await })
    };
    wait_until_running(&mut view, backend).await;
    let status = within(WAIT, "the call", call)
        .await
        .expect("join")
        .expect_err("deadline");
    let answered = started.elapsed();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    let (_, metadata, _) = error_details(&status);
    assert_eq!(metadata.get("phase").map(String::as_str), Some("database"));
    assert!(answered >= budget, "answered early: {answered:?}");
    assert!(
        answered < budget + answer_slack(backend),
        "answered {:?} after the deadline",
        answered - budget
    );
    // Gone from the server soon after the deadline; the pool still serves.
    assert_stopped_on_the_server(&app, &mut view, Duration::from_millis(100)).await;
    assert_eq!(view.count_rows("sink").await, 0);
    app.stop().await;
}
on_every_backend!(a_slow_statement_is_stopped_on_the_server_at_its_deadline);

/// The backend pid running `pattern` for sqlgate, once it shows up.
async fn backend_running(direct: &mut sqlx::PgConnection, app: &TestApp, pattern: &str) -> i32 {
    let started = Instant::now();
    loop {
        let pid: Option<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 \
             AND application_name = 'sqlgate' AND state = 'active' AND query LIKE $2",
        )
        .bind(&app.db.name)
        .bind(format!("%{pattern}%"))
        .fetch_optional(&mut *direct)
        .await
        .expect("pg_stat_activity");
        if let Some(pid) = pid {
            return pid;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{pattern} never ran"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The state of PostgreSQL backend `pid`, or None once it has exited.
async fn backend_state(direct: &mut sqlx::PgConnection, pid: i32) -> Option<String> {
    sqlx::query_scalar("SELECT state FROM pg_stat_activity WHERE pid = $1")
        .bind(pid)
        .fetch_optional(direct)
        .await
        .expect("pg_stat_activity")
        .flatten()
}

/// Runs `sql` (a `pg_sleep(10)`) with a 300 ms deadline and expects
/// DEADLINE_EXCEEDED; waits until the statement has stopped on the server
/// and the pool has its connection back (or has closed it). Returns the
/// backend that ran it and that backend's state afterwards (None: closed).
async fn time_out_once(
    app: &TestApp,
    client: &crate::helpers::RawClient,
    direct: &mut sqlx::PgConnection,
    sql: &str,
) -> (i32, Option<String>) {
    let budget = Duration::from_millis(300);
    let call = {
        let mut client = client.clone();
        let message = execute_request(app, sql);
        tokio::spawn(async move { client.execute(request(message, budget)).await })
    };
    let pid = backend_running(direct, app, "pg_sleep(10)").await;
    let status = within(WAIT, "the call", call)
        .await
        .expect("join")
        .expect_err("deadline");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{sql}");
    // Stopped on the server at once, whether the connection is kept or closed.
    let stopped = Instant::now();
    while backend_state(direct, pid).await.as_deref() == Some("active") {
        assert!(
            stopped.elapsed() < Duration::from_millis(500),
            "{sql} still running on backend {pid}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    app.wait_until_pool_idle().await;
    (pid, backend_state(direct, pid).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_statement_that_times_out_again_is_cancelled_and_its_connection_kept() {
    let Some(app) = spawn_app(Backend::Postgres).await else {
        return;
    };
    let mut direct = app.postgres_direct().await;
    let mut client = warm_client(&app).await;
    let mut ran_on = Vec::new();
    for _ in 0..3 {
        ran_on.push(time_out_once(&app, &client, &mut direct, "SELECT pg_sleep(10)").await);
    }
    // The first timeout of a statement shape closes its connection (its pid
    // was not known); later ones are cancelled and the connection goes
    // back to the pool, idle and outside any transaction.
    assert_eq!(ran_on[0].1, None, "first timeout: {ran_on:?}");
    assert_eq!(ran_on[1].1.as_deref(), Some("idle"), "{ran_on:?}");
    assert_eq!(ran_on[2].1.as_deref(), Some("idle"), "{ran_on:?}");
    // A write of the same kind inside a transaction is rolled back and its
    // connection kept as well.
    app.run("CREATE TABLE kept (id BIGINT)").await;
    // Row 1 is written before row 2 waits ten seconds.
    let insert = "INSERT INTO kept SELECT CASE WHEN g = 2 THEN (SELECT 2 FROM pg_sleep(10)) \
                  ELSE g END FROM generate_series(1, 2) AS g";
    for _ in 0..2 {
        ran_on.push(time_out_once(&app, &client, &mut direct, insert).await);
    }
    assert_eq!(ran_on[4].1.as_deref(), Some("idle"), "{ran_on:?}");
    assert_eq!(app.count("kept").await, 0);
    let answer = client
        .execute(request(
            execute_request(&app, "SELECT 1"),
            Duration::from_secs(5),
        ))
        .await
        .expect("the pool still serves");
    assert_eq!(answer.into_inner().rows.len(), 1);
    app.stop().await;
}

async fn a_write_past_its_deadline_is_rolled_back(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    app.run("CREATE TABLE t (id INTEGER)").await;
    let sql = match backend {
        // Each writes a row first, then stalls on the next one.
        Backend::Postgres => {
            "INSERT INTO t SELECT CASE WHEN g = 2 THEN (SELECT 2 FROM pg_sleep(5)) ELSE g END \
             FROM generate_series(1, 2) AS g"
        }
        Backend::MySql => {
            "INSERT INTO t SELECT seq FROM seq_1_to_2 WHERE SLEEP(IF(seq = 2, 5, 0)) = 0"
        }
        Backend::Sqlite => {
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c \
             WHERE x < 10000000000) INSERT INTO t SELECT x FROM c"
        }
    };
    let mut view = DatabaseView::of(&app).await;
    let call = {
        let mut client = raw_query_client(app.address);
        let message = execute_request(&app, sql);
        tokio::spawn(async move {
            client
                .execute(request(message, Duration::from_millis(300)))
                .await
        })
    };
    wait_until_running(&mut view, backend).await;
    // It has written (uncommitted) before its deadline.
    view.wait_until(
        Duration::from_secs(2),
        "the statement has written",
        |seen| seen.writes == 1,
    )
    .await;
    let status = within(WAIT, "the call", call)
        .await
        .expect("join")
        .expect_err("deadline");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    // Stopped on the server and rolled back: it can never commit later.
    assert_stopped_on_the_server(&app, &mut view, Duration::from_millis(200)).await;
    assert_eq!(view.count_rows("t").await, 0);
    app.stop().await;
}
on_every_backend!(a_write_past_its_deadline_is_rolled_back);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_time_counts_and_a_full_pool_is_not_a_deadline() {
    let Some(app) = spawn_app_with(Backend::Postgres, |s| {
        s.pool.max_connections = 1;
        s.pool.min_connections = 1;
        s.pool.acquire_timeout = Duration::from_millis(500);
    })
    .await
    else {
        return;
    };
    let mut waiter = warm_client(&app).await;
    // Hold the only connection for two seconds.
    let mut holder = raw_query_client(app.address);
    let hold = execute_request(&app, "SELECT pg_sleep(2)");
    let held =
        tokio::spawn(async move { holder.execute(request(hold, Duration::from_secs(10))).await });
    let mut direct = app.postgres_direct().await;
    wait_for_backends(
        &mut direct,
        &app.db.name,
        Backends::Running("pg_sleep(2)"),
        1,
        "the holder has the only connection",
    )
    .await;

    // The caller's budget runs out in the queue: DEADLINE_EXCEEDED, phase queue.
    let started = Instant::now();
    let status = within(
        WAIT,
        "the queued call",
        waiter.execute(request(
            execute_request(&app, "SELECT 1"),
            Duration::from_millis(200),
        )),
    )
    .await
    .expect_err("queued past the deadline");
    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert_eq!(
        error_details(&status).1.get("phase").map(String::as_str),
        Some("queue")
    );
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_millis(250),
        "answered after {waited:?}"
    );

    // The pool's own acquire timeout runs out first: RESOURCE_EXHAUSTED with RetryInfo.
    let status = within(
        WAIT,
        "the call that finds the pool full",
        raw_query_client(app.address).execute(request(
            execute_request(&app, "SELECT 1"),
            Duration::from_secs(5),
        )),
    )
    .await
    .expect_err("pool full");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(error_details(&status).0, "POOL_EXHAUSTED");
    {
        use tonic_types::StatusExt;
        assert!(status.get_error_details().retry_info().is_some());
    }
    let held = within(WAIT, "the holder", held)
        .await
        .expect("join")
        .expect("the holder finishes");
    assert_eq!(held.into_inner().rows.len(), 1);
    app.stop().await;
}
