//! What every connection sqlgate opens carries, read back through sqlgate
//! and from outside: PostgreSQL's backstops and application name, MySQL's
//! statement limit and UTC time zone, SQLite's WAL mode, busy timeout and
//! single `:memory:` connection.

use std::{
    collections::HashSet,
    str::FromStr,
    time::{Duration, Instant},
};

use futures::future::join_all;
use prost_types::Timestamp;
use sqlgate::grpc::pb::{self, value::Kind};
use sqlx::{ConnectOptions, Connection, Executor};

use crate::{
    helpers::{Backend, TestApp, spawn_app_with, v},
    session_client::{Session, int, text},
};

/// The longest method maximum these tests configure: ExecuteBatch's, so
/// that neither a default nor another method's maximum would match it.
const LONGEST_SECS: u64 = 4321;

/// Gives ExecuteBatch the longest maximum and keeps `connections` open.
fn backstop_settings(settings: &mut sqlgate::config::Settings, connections: u32) {
    settings.deadlines.execute_batch.max = Duration::from_secs(LONGEST_SECS);
    settings.pool.max_connections = connections;
    settings.pool.min_connections = connections;
    // Sessions may hold the whole pool here (the default leaves a quarter).
    settings.sessions.max_pool_share = 1.0;
}

/// Opens `n` sessions at once, so that each holds a connection of its own.
async fn sessions_on_distinct_connections(app: &TestApp, n: usize) -> Vec<Session> {
    let mut sessions = Vec::with_capacity(n);
    for _ in 0..n {
        sessions.push(Session::begin_as(app, pb::IsolationLevel::Unspecified, false).await);
    }
    sessions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_every_connection_carries_the_backstops_and_its_name() {
    const CONNECTIONS: usize = 3;
    let Some(app) = spawn_app_with(Backend::Postgres, |s| {
        backstop_settings(s, CONNECTIONS as u32);
        // A name in the URL must not replace sqlgate's own.
        s.database_url = format!("{}?application_name=someone_else", s.database_url);
    })
    .await
    else {
        return;
    };

    // Through Query/Execute (a plain read: no SET LOCAL of its own).
    let response = app.run("SHOW statement_timeout").await;
    assert_eq!(
        response.rows[0].values[0].kind,
        Some(Kind::TextValue(format!("{LONGEST_SECS}s")))
    );
    let response = app.run("SHOW client_connection_check_interval").await;
    assert_eq!(
        response.rows[0].values[0].kind,
        Some(Kind::TextValue("25ms".into()))
    );

    // On every connection of the pool: three sessions hold three of them.
    let mut sessions = sessions_on_distinct_connections(&app, CONNECTIONS).await;
    let mut pids = HashSet::new();
    for session in &mut sessions {
        let row = session
            .row(
                "SELECT current_setting('statement_timeout'), \
                 current_setting('client_connection_check_interval'), \
                 current_setting('application_name'), pg_backend_pid()",
            )
            .await;
        assert_eq!(text(&row[0]), format!("{LONGEST_SECS}s"), "{row:?}");
        assert_eq!(text(&row[1]), "25ms", "{row:?}");
        assert_eq!(text(&row[2]), "sqlgate", "{row:?}");
        pids.insert(int(&row[3]));
    }
    assert_eq!(pids.len(), CONNECTIONS, "one connection per session");

    // From another connection: each of those backends is named sqlgate,
    // and every connection to the database but ours is sqlgate's.
    let mut direct = app.postgres_direct().await;
    let others: Vec<(i32, String)> = sqlx::query_as(
        "SELECT pid, application_name FROM pg_stat_activity \
         WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(&app.db.name)
    .fetch_all(&mut direct)
    .await
    .expect("pg_stat_activity");
    for pid in &pids {
        let seen = others
            .iter()
            .find(|(other, _)| i64::from(*other) == *pid)
            .unwrap_or_else(|| panic!("pid {pid} not in pg_stat_activity: {others:?}"));
        assert_eq!(seen.1, "sqlgate");
    }
    assert!(
        others.iter().all(|(_, name)| name == "sqlgate"),
        "{others:?}"
    );
    for session in sessions {
        session.rollback().await;
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_every_connection_carries_max_statement_time_and_utc() {
    const CONNECTIONS: usize = 3;
    let Some(app) = spawn_app_with(Backend::MySql, |s| {
        backstop_settings(s, CONNECTIONS as u32);
        // A zone in the URL must not replace UTC: TIMESTAMP values are
        // carried as instants on the assumption that the session is UTC.
        s.database_url = format!("{}?timezone=%2B05:00", s.database_url);
    })
    .await
    else {
        return;
    };

    let response = app.run("SELECT @@session.time_zone").await;
    assert_eq!(
        response.rows[0].values[0].kind,
        Some(Kind::TextValue("+00:00".into()))
    );

    let mut sessions = sessions_on_distinct_connections(&app, CONNECTIONS).await;
    let mut ids = HashSet::new();
    for session in &mut sessions {
        let row = session
            .row("SELECT @@session.max_statement_time, @@session.time_zone, CONNECTION_ID()")
            .await;
        assert_eq!(row[0], Kind::FloatValue(LONGEST_SECS as f64), "{row:?}");
        assert_eq!(text(&row[1]), "+00:00", "{row:?}");
        ids.insert(format!("{:?}", row[2]));
    }
    assert_eq!(ids.len(), CONNECTIONS, "one connection per session");
    for session in sessions {
        session.rollback().await;
    }

    // A TIMESTAMP written through sqlgate is the instant sent …
    app.run("CREATE TABLE stamps (id INT PRIMARY KEY, ts TIMESTAMP(6) NULL)")
        .await;
    let instant = Timestamp {
        seconds: 1_704_067_200, // 2024-01-01T00:00:00Z
        nanos: 123_456_000,
    };
    app.execute(
        "INSERT INTO stamps VALUES (1, $1)",
        vec![v::of(Kind::TimestampValue(instant))],
    )
    .await
    .expect("insert");
    let mut direct = app.mysql_direct().await;
    let seconds: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT CAST(UNIX_TIMESTAMP(ts) AS CHAR) FROM {}.stamps WHERE id = 1",
        app.db.name
    )))
    .fetch_one(&mut direct)
    .await
    .expect("unix_timestamp");
    assert_eq!(seconds, "1704067200.123456");

    // … and one written elsewhere in another zone reads back as its instant.
    direct
        .execute("SET time_zone = '+05:00'")
        .await
        .expect("zone");
    direct
        .execute(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {}.stamps VALUES (2, '2024-01-01 05:00:00.123456')",
            app.db.name
        )))
        .await
        .expect("insert");
    let response = app
        .run("SELECT ts, CAST(ts AS CHAR) FROM stamps ORDER BY id")
        .await;
    assert_eq!(response.rows.len(), 2);
    for row in &response.rows {
        assert_eq!(
            row.values[0].kind,
            Some(Kind::TimestampValue(instant)),
            "{row:?}"
        );
        assert_eq!(
            row.values[1].kind,
            Some(Kind::TextValue("2024-01-01 00:00:00.123456".into()))
        );
    }
    assert_eq!(
        response.columns[0].r#type,
        pb::ValueType::Timestamp as i32,
        "{:?}",
        response.columns[0]
    );
    app.stop().await;
}

/// The file behind a test's SQLite URL.
fn sqlite_path(app: &TestApp) -> String {
    app.db
        .url
        .strip_prefix("sqlite://")
        .and_then(|rest| rest.split('?').next())
        .expect("a sqlite:// URL")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_files_are_opened_in_wal_mode_with_a_five_second_busy_timeout() {
    const CONNECTIONS: usize = 3;
    let Some(app) = spawn_app_with(Backend::Sqlite, |s| backstop_settings(s, 3)).await else {
        return;
    };
    let response = app.run("PRAGMA journal_mode").await;
    assert_eq!(
        response.rows[0].values[0].kind,
        Some(Kind::TextValue("wal".into()))
    );
    // Per connection: three sessions hold three of them.
    let mut sessions = sessions_on_distinct_connections(&app, CONNECTIONS).await;
    for session in &mut sessions {
        let row = session.row("PRAGMA busy_timeout").await;
        assert_eq!(row, vec![Kind::IntValue(5000)]);
        let row = session.row("PRAGMA journal_mode").await;
        assert_eq!(row, vec![Kind::TextValue("wal".into())]);
    }
    for session in sessions {
        session.rollback().await;
    }
    // The file itself says WAL: header bytes 18 and 19 (format versions) are 2.
    let header = std::fs::read(sqlite_path(&app)).expect("read the database file");
    assert!(header.len() >= 100, "a database header");
    assert_eq!((header[18], header[19]), (2, 2), "WAL file format versions");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_write_waits_for_another_writer_instead_of_failing() {
    let Some(app) = spawn_app_with(Backend::Sqlite, |_| {}).await else {
        return;
    };
    app.run("CREATE TABLE t (id INTEGER PRIMARY KEY)").await;
    // Another writer, outside sqlgate, holds the write lock.
    let mut other = sqlx::sqlite::SqliteConnectOptions::from_str(&app.db.url)
        .expect("url")
        .busy_timeout(Duration::ZERO)
        .connect()
        .await
        .expect("direct connection");
    other.execute("BEGIN IMMEDIATE").await.expect("lock");
    other
        .execute("INSERT INTO t VALUES (1)")
        .await
        .expect("insert");

    let query = app.query.clone();
    let write = tokio::spawn(async move {
        query
            .clone()
            .execute(pb::ExecuteRequest {
                sql: "INSERT INTO t VALUES (2)".into(),
                params: vec![],
                max_rows: 0,
            })
            .await
    });
    // The write has its connection and waits on SQLite's lock, not on
    // anything of sqlgate's.
    let waiting = Instant::now();
    while app.pool_in_use().await == 0 {
        assert!(
            waiting.elapsed() < Duration::from_secs(2),
            "the write never took a connection"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!write.is_finished(), "the write waits for the lock");
    assert_eq!(app.pool_in_use().await, 1, "still waiting on the lock");
    other.execute("COMMIT").await.expect("commit");
    let answer = tokio::time::timeout(Duration::from_secs(5), write)
        .await
        .expect("the write finishes once the lock is free")
        .expect("task");
    let response = answer.expect("the write succeeds, not SQLITE_BUSY");
    assert_eq!(response.into_inner().rows_affected, 1);
    assert_eq!(app.count("t").await, 2);
    other.close().await.expect("close");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_memory_database_is_held_on_one_connection() {
    let Some(app) = spawn_app_with(Backend::Sqlite, |s| {
        s.database_url = "sqlite::memory:".to_owned();
        s.pool.max_connections = 4;
        s.pool.min_connections = 2;
    })
    .await
    else {
        return;
    };
    app.run("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER)")
        .await;
    // Many calls at once: each sees the table and the others' rows.
    let calls = (0..24).map(|i| {
        let app = &app;
        async move {
            if i % 2 == 0 {
                app.execute("INSERT INTO t (n) VALUES ($1)", vec![v::int(i)])
                    .await
                    .map(|_| ())
            } else {
                app.execute("SELECT count(*) FROM t", vec![])
                    .await
                    .map(|_| ())
            }
        }
    });
    for (i, result) in join_all(calls).await.into_iter().enumerate() {
        result.unwrap_or_else(|status| panic!("call {i}: {status:?}"));
    }
    assert_eq!(app.count("t").await, 12);
    let stats = app.pool_stats().await;
    assert_eq!(stats.open_connections, 1, "{stats:?}");
    assert_eq!(stats.connections_opened, 1, "{stats:?}");
    app.stop().await;
}
