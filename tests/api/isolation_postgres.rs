//! One caller cannot hurt another through PostgreSQL's shared pool: what
//! a caller tries to leave on a connection is refused, or undone before
//! the next caller gets that connection; a connection sqlgate cannot
//! vouch for is closed; a session's transaction is the one sqlgate began.
//!
//! Every test runs with a pool of ONE connection, so that the next caller
//! deterministically gets the connection the attacker used, and checks
//! what that caller sees and what the database itself shows.

use sqlgate::grpc::pb::{self, IsolationLevel, value::Kind};
use sqlx::{Connection, Executor, Row};
use tonic::Code;

use crate::{
    health::{next_status, watch_readiness},
    helpers::{Backend, TestApp, spawn_app_with, v},
    isolation::{self, one_connection_app},
    session_client::{Session, text},
};
use tonic_health::pb::health_check_response::ServingStatus;

/// The one text value of a one-row, one-column result.
async fn shown(app: &TestApp, sql: &str) -> String {
    let response = app.run(sql).await;
    match &response.rows[0].values[0].kind {
        Some(Kind::TextValue(value)) => value.clone(),
        other => panic!("{sql}: {other:?}"),
    }
}

/// Asserts `sql` is refused with INVALID_ARGUMENT on field `sql`, with a
/// message containing `hint`.
async fn assert_refused(app: &TestApp, sql: &str, hint: &str) {
    let status = app.execute(sql, vec![]).await.expect_err(sql);
    isolation::assert_refused(&status, hint, sql);
}

/// The settings a fresh sqlgate connection has, as a later caller reads them.
async fn connection_settings(app: &TestApp) -> Vec<String> {
    let mut seen = Vec::new();
    for name in [
        "search_path",
        "role",
        "session_authorization",
        "application_name",
        "statement_timeout",
        "client_connection_check_interval",
        "default_transaction_read_only",
        "TimeZone",
    ] {
        seen.push(format!(
            "{name}={}",
            shown(app, &format!("SELECT current_setting('{name}')")).await
        ));
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_session_settings_are_refused_in_calls_and_name_what_to_use() {
    let Some(app) = one_connection_app(Backend::Postgres).await else {
        return;
    };
    app.run("DROP ROLE IF EXISTS sqlgate_isolation_nobody")
        .await;
    app.run("CREATE ROLE sqlgate_isolation_nobody NOLOGIN")
        .await;
    let before = connection_settings(&app).await;
    for sql in [
        "SET search_path = evil",
        "set role sqlgate_isolation_nobody",
        "SET SESSION AUTHORIZATION sqlgate_isolation_nobody",
        "SET default_transaction_read_only = on",
        "SET application_name = 'someone else'",
        "RESET ALL",
        "/* comment first */ SET TimeZone = 'Asia/Tokyo'",
    ] {
        assert_refused(&app, sql, "SET LOCAL").await;
    }
    for (sql, hint) in [
        ("SET statement_timeout = 0", "deadline"),
        ("SET LOCAL client_connection_check_interval = 0", "deadline"),
        (
            "SELECT set_config('statement_timeout', '0', false)",
            "deadline",
        ),
        ("BEGIN", "session"),
        ("COMMIT", "session"),
        ("START TRANSACTION", "session"),
        ("PREPARE p AS SELECT 1", "parameters"),
        ("DEALLOCATE ALL", "parameters"),
        ("DISCARD ALL", "resets"),
        ("LISTEN anything", "notifications"),
        ("COPY (SELECT 1) TO STDOUT", "copy protocol"),
    ] {
        assert_refused(&app, sql, hint).await;
    }
    // SET LOCAL is what a call uses instead, and it ends with the call.
    let rows = app
        .execute(
            "SELECT set_config('search_path', 'pg_catalog', true), current_setting('search_path')",
            vec![],
        )
        .await
        .expect("a local setting");
    assert_eq!(rows.rows.len(), 1);
    assert_eq!(connection_settings(&app).await, before);
    app.run("DROP ROLE sqlgate_isolation_nobody").await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_settings_changed_by_functions_are_undone_before_the_next_caller() {
    let Some(app) = one_connection_app(Backend::Postgres).await else {
        return;
    };
    app.run("DROP ROLE IF EXISTS sqlgate_isolation_fn").await;
    app.run("CREATE ROLE sqlgate_isolation_fn NOLOGIN").await;
    let before = connection_settings(&app).await;
    // The function form, with the setting's name as a parameter so that no
    // parser could read it; and a DO block, which no parser sees into.
    for (sql, params) in [
        (
            "SELECT set_config($1, '0', false)",
            vec![v::text("statement_timeout")],
        ),
        (
            "SELECT set_config($1, '0', false)",
            vec![v::text("client_connection_check_interval")],
        ),
        ("SELECT set_config('search_path', 'evil', false)", vec![]),
        (
            "SELECT set_config('default_transaction_read_only', 'on', false)",
            vec![],
        ),
        (
            "DO $$ BEGIN EXECUTE 'SET ROLE sqlgate_isolation_fn'; END $$",
            vec![],
        ),
        (
            "DO $$ BEGIN PERFORM set_config('TimeZone', 'Asia/Tokyo', false); END $$",
            vec![],
        ),
    ] {
        app.execute(sql, params)
            .await
            .unwrap_or_else(|status| panic!("{sql}: {status:?}"));
        assert_eq!(
            connection_settings(&app).await,
            before,
            "after {sql:?} the next caller sees the connection's own settings"
        );
    }
    app.run("DROP ROLE sqlgate_isolation_fn").await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_temp_table_named_like_a_real_one_never_shadows_it_for_later_callers() {
    let Some(app) = one_connection_app(Backend::Postgres).await else {
        return;
    };
    app.run("CREATE TABLE patients (id bigint PRIMARY KEY)")
        .await;
    app.run("INSERT INTO patients VALUES (1), (2)").await;
    // One call creates the shadow; a batch creates it and fills it.
    app.run("CREATE TEMP TABLE patients (id bigint)").await;
    app.query
        .clone()
        .execute_batch(pb::ExecuteBatchRequest {
            statements: vec![
                pb::BatchStatement {
                    sql: "CREATE TEMP TABLE patients (id bigint)".into(),
                    params: vec![],
                },
                pb::BatchStatement {
                    sql: "INSERT INTO patients VALUES (666)".into(),
                    params: vec![],
                },
            ],
            max_rows: 0,
        })
        .await
        .expect("the batch sees its own temp table");
    // The next caller reads and writes the real table.
    assert_eq!(app.count("patients").await, 2);
    app.run("INSERT INTO patients VALUES (3)").await;
    let mut direct = app.postgres_direct().await;
    let real: i64 = sqlx::query_scalar("SELECT count(*) FROM patients")
        .fetch_one(&mut direct)
        .await
        .expect("count");
    assert_eq!(real, 3, "the innocent insert went into the real table");
    let temp_tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_class WHERE relpersistence = 't' AND relname = 'patients'",
    )
    .fetch_one(&mut direct)
    .await
    .expect("temp tables");
    assert_eq!(
        temp_tables, 0,
        "no temp table is left on sqlgate's connection"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_session_advisory_locks_are_released_after_the_call_that_took_them() {
    let Some(app) = one_connection_app(Backend::Postgres).await else {
        return;
    };
    app.run("SELECT pg_advisory_lock(4242)").await;
    app.run("SELECT pg_catalog.pg_advisory_lock_shared(4243)")
        .await;
    let mut direct = app.postgres_direct().await;
    let held: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'advisory' AND a.application_name = 'sqlgate'",
    )
    .fetch_one(&mut direct)
    .await
    .expect("locks");
    assert_eq!(held, 0, "sqlgate's connection holds no advisory lock");
    let free: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(4242)")
        .fetch_one(&mut direct)
        .await
        .expect("try lock");
    assert!(free, "another client can take the lock");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_dropped_prepared_statements_and_notifications_never_reach_the_next_caller() {
    let Some(app) = one_connection_app(Backend::Postgres).await else {
        return;
    };
    let mut readiness = watch_readiness(app.channel.clone()).await;
    app.run("CREATE TABLE t (id bigint)").await;
    // Cache a few statements on the one connection.
    for _ in 0..3 {
        app.execute("SELECT count(*) FROM t WHERE id > $1", vec![v::int(0)])
            .await
            .expect("cached");
    }
    // What DEALLOCATE ALL and LISTEN would do, from inside a function,
    // where no parser sees them.
    app.run("DO $$ BEGIN EXECUTE 'DEALLOCATE ALL'; END $$")
        .await;
    for round in 0..5 {
        app.execute("SELECT count(*) FROM t WHERE id > $1", vec![v::int(round)])
            .await
            .unwrap_or_else(|status| panic!("round {round} after DEALLOCATE ALL: {status:?}"));
    }
    app.run("DO $$ BEGIN EXECUTE 'LISTEN sqlgate_isolation'; END $$")
        .await;
    let mut direct = app.postgres_direct().await;
    for n in 0..50 {
        sqlx::query("SELECT pg_notify('sqlgate_isolation', $1)")
            .bind(format!("burst {n}"))
            .execute(&mut direct)
            .await
            .expect("notify");
    }
    for round in 0..5 {
        app.execute("SELECT count(*) FROM t WHERE id > $1", vec![v::int(round)])
            .await
            .unwrap_or_else(|status| panic!("round {round} after LISTEN: {status:?}"));
    }
    // Readiness never flickered.
    let flicker = tokio::time::timeout(
        std::time::Duration::from_millis(300),
        next_status(&mut readiness),
    )
    .await;
    assert!(
        flicker.is_err() || flicker == Ok(ServingStatus::Serving),
        "{flicker:?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_session_cannot_end_or_widen_its_transaction_with_sql() {
    let Some(app) = one_connection_app(Backend::Postgres).await else {
        return;
    };
    app.run("CREATE TABLE t (id bigint)").await;
    let mut session = Session::begin(&app, &[]).await.expect("begin");
    session
        .execute(&app, 1, "INSERT INTO t VALUES (1)", vec![])
        .await
        .expect("insert");
    for (request_id, sql) in [
        (2, "COMMIT"),
        (3, "END"),
        (4, "commit and chain"),
        (5, "PREPARE TRANSACTION 'escape'"),
        (6, "ROLLBACK"),
        (7, "BEGIN"),
    ] {
        let error = session
            .execute(&app, request_id, sql, vec![])
            .await
            .expect_err(sql);
        assert_eq!(error.code, Code::InvalidArgument as i32, "{sql}: {error:?}");
        assert!(
            error.message.contains("commit or rollback message"),
            "{error:?}"
        );
    }
    session
        .execute(&app, 8, "INSERT INTO t VALUES (2)", vec![])
        .await
        .expect("the session goes on");
    session.rollback().await;
    assert_eq!(
        app.count("t").await,
        0,
        "both rows rolled back, as the client was told"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_read_only_session_can_never_write() {
    let Some(app) = one_connection_app(Backend::Postgres).await else {
        return;
    };
    app.run("CREATE TABLE t (id bigint)").await;
    for first in [
        "SET TRANSACTION READ WRITE",
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
        "COMMIT",
        "DO $$ BEGIN SET TRANSACTION READ WRITE; END $$",
        "SELECT set_config('transaction_read_only', 'off', false)",
        "DO $$ BEGIN PERFORM set_config('transaction_read_only', 'off', true); END $$",
    ] {
        let mut session = Session::begin_as(&app, IsolationLevel::Unspecified, true).await;
        // Refused, or run and failed: either way the write below fails.
        let _ = session.query(first).await;
        let write = session.query("INSERT INTO t VALUES (1)").await;
        match write {
            Err(status) => assert_ne!(status.code(), Code::Ok, "{first}"),
            Ok(rows) => panic!("{first:?} let a read-only session write: {rows:?}"),
        }
        session.rollback().await;
    }
    assert_eq!(app.count("t").await, 0, "nothing was written");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_what_a_session_changes_on_its_connection_is_undone_when_it_ends() {
    let Some(app) = one_connection_app(Backend::Postgres).await else {
        return;
    };
    let before = connection_settings(&app).await;
    let mut session = Session::begin_as(&app, IsolationLevel::Unspecified, false).await;
    for sql in [
        "SET search_path = evil",
        "SET application_name = 'a session'",
        "SELECT pg_advisory_lock(77)",
        "CREATE TEMP TABLE scratch (id int)",
    ] {
        session
            .query(sql)
            .await
            .unwrap_or_else(|status| panic!("{sql} in a session: {status:?}"));
    }
    assert_eq!(
        text(&session.row("SELECT current_setting('search_path')").await[0]),
        "evil",
        "the session sees its own setting"
    );
    assert!(
        session.query("SET statement_timeout = 0").await.is_err(),
        "sqlgate's own settings stay sqlgate's, in a session too"
    );
    session.commit().await;
    assert_eq!(connection_settings(&app).await, before);
    let mut direct = app.postgres_direct().await;
    let free: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(77)")
        .fetch_one(&mut direct)
        .await
        .expect("try lock");
    assert!(free, "the session's advisory lock was released");
    let tables = app
        .execute(
            "SELECT count(*) FROM pg_tables WHERE tablename = 'scratch'",
            vec![],
        )
        .await
        .expect("count");
    assert_eq!(
        tables.rows[0].values[0].kind,
        Some(Kind::IntValue(0)),
        "the session's temp table is gone"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_only_calls_that_may_change_the_connection_pay_for_a_reset() {
    // A slow probe, so that the connection's last statement is the test's.
    let Some(app) = spawn_app_with(Backend::Postgres, |s| {
        s.pool.max_connections = 1;
        s.pool.min_connections = 1;
        s.health.probe_interval = std::time::Duration::from_secs(60);
    })
    .await
    else {
        return;
    };
    app.run("CREATE TABLE t (id bigint)").await;
    let mut direct = app.postgres_direct().await;
    let mut last_statement = async || -> (String, String) {
        let row = direct
            .fetch_one(
                "SELECT state, query FROM pg_stat_activity \
                 WHERE application_name = 'sqlgate' AND datname = current_database() \
                 AND backend_type = 'client backend' ORDER BY state_change DESC LIMIT 1",
            )
            .await
            .expect("activity");
        (row.get(0), row.get(1))
    };
    // A plain read runs bare, in one round trip, and nothing follows it.
    app.execute("SELECT id FROM t WHERE id = $1", vec![v::int(1)])
        .await
        .expect("read");
    let (state, query) = last_statement().await;
    assert_eq!(state, "idle");
    assert!(
        query.starts_with("SELECT id FROM t WHERE id = $1"),
        "{query}"
    );
    // A call that may change the connection is followed by the reset.
    app.run("SELECT set_config('search_path', 'x', false)")
        .await;
    let (state, query) = last_statement().await;
    assert_eq!(state, "idle");
    assert!(query.contains("pg_prepared_statements"), "{query}");
    direct.close().await.expect("close");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_call_that_switches_off_the_servers_own_stops_is_still_cancelled() {
    let Some(app) = spawn_app_with(Backend::Postgres, |_| {}).await else {
        return;
    };
    let mut view = crate::observe::DatabaseView::of(&app).await;
    // The names are computed, so no parser can read them: the batch turns
    // off statement_timeout and the closed-connection check for itself,
    // then sleeps far past its 1 s deadline.
    let statement = |sql: &str| pb::BatchStatement {
        sql: sql.to_owned(),
        params: vec![],
    };
    let batch = pb::ExecuteBatchRequest {
        statements: vec![
            statement("SELECT set_config(lower('STATEMENT_TIMEOUT'), '0', false)"),
            statement("SELECT set_config(lower('CLIENT_CONNECTION_CHECK_INTERVAL'), '0', false)"),
            statement("SELECT pg_sleep(30)"),
        ],
        max_rows: 0,
    };
    let mut client = crate::helpers::raw_query_client(app.address);
    let status = client
        .execute_batch(crate::deadlines::request(
            batch,
            std::time::Duration::from_secs(1),
        ))
        .await
        .expect_err("past its deadline");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    // The sleep is cancelled on the server by id, not left running on a
    // connection sqlgate dropped.
    let started = std::time::Instant::now();
    while view.running("pg_sleep").await > 0 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "pg_sleep still runs on the server {:?} after the deadline",
            started.elapsed()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // And the next caller has the connection's own settings again.
    let timeout = shown(&app, "SELECT current_setting('statement_timeout')").await;
    assert_ne!(timeout, "0", "statement_timeout");
    app.stop().await;
}
