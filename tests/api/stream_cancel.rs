//! A client that drops an ExecuteStream mid-way gets its statement stopped
//! on the database, its connection back in the pool, and the pool serving
//! (MySQL/MariaDB and SQLite; PostgreSQL is in streaming.rs).

use std::{
    str::FromStr,
    time::{Duration, Instant},
};

use sqlgate::grpc::pb;
use sqlx::{ConnectOptions, Connection, Executor};
use tokio_stream::StreamExt;

use crate::helpers::{Backend, TestApp, spawn_app_with};

/// How long a dropped stream's statement and connection may take to go.
const WITHIN: Duration = Duration::from_secs(3);

/// Waits until sqlgate's pool has no connection checked out.
async fn wait_for_pool_idle(app: &TestApp, since: Instant) {
    while app.pool_in_use().await > 0 {
        assert!(
            since.elapsed() < WITHIN,
            "connection not back in the pool {WITHIN:?} after the stream dropped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// sqlgate's statements on `database` whose text contains `pattern`, as
/// MySQL's process list shows them.
async fn mysql_running(direct: &mut sqlx::MySqlConnection, database: &str, pattern: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
         WHERE DB = ? AND INFO LIKE ? AND ID <> CONNECTION_ID()",
    )
    .bind(database)
    .bind(format!("%{pattern}%"))
    .fetch_one(direct)
    .await
    .expect("processlist")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_dropping_a_stream_stops_the_query_on_the_server() {
    let Some(app) = spawn_app_with(Backend::MySql, |s| {
        s.limits.stream_batch_rows = 10;
        s.limits.stream_buffer_frames = 1;
    })
    .await
    else {
        return;
    };
    // The first rows come at once, then each takes a minute: the server
    // sends nothing while it sleeps, so only a cancel stops it (not the
    // closed socket). The reader takes a few rows and leaves.
    let mut frames = app
        .query
        .clone()
        .execute_stream(pb::ExecuteRequest {
            sql: "SELECT seq, REPEAT('x', 2000) AS pad, SLEEP(IF(seq > 40, 60, 0)) AS s \
                  FROM seq_1_to_100000"
                .into(),
            params: vec![],
            max_rows: 0,
        })
        .await
        .expect("stream")
        .into_inner();
    for _ in 0..3 {
        tokio::time::timeout(Duration::from_secs(10), frames.next())
            .await
            .expect("a frame within 10 s")
            .expect("a frame")
            .expect("ok");
    }
    let mut direct = app.mysql_direct().await;
    assert_eq!(
        mysql_running(&mut direct, &app.db.name, "seq_1_to_100000").await,
        1,
        "the query runs while the stream is read"
    );
    assert_eq!(app.pool_in_use().await, 1);

    drop(frames);
    let dropped = Instant::now();
    while mysql_running(&mut direct, &app.db.name, "seq_1_to_100000").await > 0 {
        assert!(
            dropped.elapsed() < WITHIN,
            "query still running {WITHIN:?} after the stream dropped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_for_pool_idle(&app, dropped).await;
    // The pool still serves.
    app.run("CREATE TABLE after_drop (id INT)").await;
    app.run("INSERT INTO after_drop VALUES (1)").await;
    assert_eq!(app.count("after_drop").await, 1);
    app.stop().await;
}

/// Tries to take SQLite's write lock from outside sqlgate, without waiting.
async fn try_write_lock(other: &mut sqlx::SqliteConnection) -> bool {
    match other.execute("BEGIN IMMEDIATE").await {
        Ok(_) => {
            other.execute("ROLLBACK").await.expect("rollback");
            true
        }
        Err(sqlx::Error::Database(err)) if err.message().contains("locked") => false,
        Err(err) => panic!("unexpected error taking the lock: {err}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_dropping_a_stream_stops_the_statement() {
    let Some(app) = spawn_app_with(Backend::Sqlite, |s| {
        // Bounds a statement that is not stopped, so a failing run ends.
        s.deadlines.execute_stream.default = Duration::from_secs(30);
    })
    .await
    else {
        return;
    };
    app.run("CREATE TABLE t (n INTEGER)").await;
    // A write of a billion rows: it holds the write lock while it runs,
    // and returns no row before all are inserted.
    let mut frames = app
        .query
        .clone()
        .execute_stream(pb::ExecuteRequest {
            sql: "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c \
                  WHERE n < 1000000000) INSERT INTO t SELECT n FROM c RETURNING n"
                .into(),
            params: vec![],
            max_rows: 0,
        })
        .await
        .expect("stream")
        .into_inner();
    let mut other = sqlx::sqlite::SqliteConnectOptions::from_str(&app.db.url)
        .expect("url")
        .busy_timeout(Duration::ZERO)
        .connect()
        .await
        .expect("direct connection");
    // The statement runs: nobody else can write.
    let started = Instant::now();
    while try_write_lock(&mut other).await {
        assert!(
            started.elapsed() < WITHIN,
            "the streamed write never took the lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!try_write_lock(&mut other).await, "the write still runs");
    assert_eq!(app.pool_in_use().await, 1);
    // Nothing has come back yet but the call is open; the client leaves.
    assert!(
        tokio::time::timeout(Duration::from_millis(10), frames.next())
            .await
            .is_err(),
        "no frame before the write is done"
    );

    drop(frames);
    let dropped = Instant::now();
    while !try_write_lock(&mut other).await {
        assert!(
            dropped.elapsed() < WITHIN,
            "the write lock is still held {WITHIN:?} after the stream dropped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_for_pool_idle(&app, dropped).await;
    // The write was rolled back, and the pool still serves.
    assert_eq!(app.count("t").await, 0);
    app.run("INSERT INTO t VALUES (1)").await;
    assert_eq!(app.count("t").await, 1);
    other.close().await.expect("close");
    app.stop().await;
}
