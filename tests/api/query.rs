//! Execute: rows, columns and counts as a caller would check them.

use sqlgate::grpc::pb::{ValueType, value::Kind};
use tonic::Code;

use crate::{
    helpers::{Backend, error_details, spawn_app, v},
    on_every_backend,
    pg_activity::{Backends, sqlgate_backends},
};

async fn select_returns_rows_columns_and_counts(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    app.run("CREATE TABLE patients (id INTEGER PRIMARY KEY, name VARCHAR(100) NOT NULL)")
        .await;

    let inserted = app
        .execute(
            "INSERT INTO patients (id, name) VALUES ($1, $2), ($3, $4)",
            vec![v::int(1), v::text("Ada"), v::int(2), v::text("Grace")],
        )
        .await
        .expect("insert");
    assert_eq!(inserted.rows_affected, 2);
    assert!(inserted.rows.is_empty());

    let selected = app
        .execute(
            "SELECT id, name FROM patients WHERE id >= $1 ORDER BY id",
            vec![v::int(1)],
        )
        .await
        .expect("select");
    let names: Vec<_> = selected.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["id", "name"]);
    assert_eq!(selected.columns[0].r#type(), ValueType::Int);
    assert_eq!(selected.columns[1].r#type(), ValueType::Text);
    assert!(!selected.columns[1].db_type.is_empty());
    let rows: Vec<_> = selected
        .rows
        .iter()
        .map(|r| (r.values[0].kind.clone(), r.values[1].kind.clone()))
        .collect();
    assert_eq!(
        rows,
        [
            (Some(Kind::IntValue(1)), Some(Kind::TextValue("Ada".into()))),
            (
                Some(Kind::IntValue(2)),
                Some(Kind::TextValue("Grace".into()))
            ),
        ]
    );

    let updated = app
        .execute(
            "UPDATE patients SET name = $1 WHERE id = $2",
            vec![v::text("Ada L."), v::int(1)],
        )
        .await
        .expect("update");
    assert_eq!(updated.rows_affected, 1);
    app.stop().await;
}
on_every_backend!(select_returns_rows_columns_and_counts);

async fn empty_results_still_describe_their_columns(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    app.run("CREATE TABLE t (id INTEGER, label VARCHAR(10))")
        .await;
    let empty = app.run("SELECT id, label FROM t").await;
    assert!(empty.rows.is_empty());
    let names: Vec<_> = empty.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["id", "label"]);
    app.stop().await;
}
on_every_backend!(empty_results_still_describe_their_columns);

async fn too_many_rows_is_refused_and_nothing_is_left_half_done(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    app.run("CREATE TABLE t (id INTEGER)").await;
    for chunk in 0..3 {
        let values: Vec<String> = (0..10).map(|i| format!("({})", chunk * 10 + i)).collect();
        app.run(&format!("INSERT INTO t (id) VALUES {}", values.join(",")))
            .await;
    }

    let mut client = app.query.clone();
    let status = client
        .execute(sqlgate::grpc::pb::ExecuteRequest {
            sql: "SELECT id FROM t".into(),
            params: vec![],
            max_rows: 10,
        })
        .await
        .expect_err("30 rows exceed max_rows 10");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status.message().contains("ExecuteStream"),
        "{}",
        status.message()
    );
    assert_eq!(error_details(&status).0, "RESULT_TOO_LARGE");

    // A statement that changes rows and returns too many of them rolls back.
    if backend != Backend::MySql {
        let status = client
            .execute(sqlgate::grpc::pb::ExecuteRequest {
                sql: "UPDATE t SET id = id + 1000 RETURNING id".into(),
                params: vec![],
                max_rows: 10,
            })
            .await
            .expect_err("30 rows exceed max_rows 10");
        assert_eq!(status.code(), Code::ResourceExhausted);
        let untouched = app.run("SELECT count(*) FROM t WHERE id >= 1000").await;
        assert_eq!(untouched.rows[0].values[0].kind, Some(Kind::IntValue(0)));
    }

    // The pool is healthy afterwards: the abandoned connection was closed, not reused dirty.
    assert_eq!(app.count("t").await, 30);
    app.stop().await;
}
on_every_backend!(too_many_rows_is_refused_and_nothing_is_left_half_done);

async fn unique_violation_is_already_exists_with_sqlstate(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    app.run("CREATE TABLE t (id INTEGER PRIMARY KEY)").await;
    app.run("INSERT INTO t (id) VALUES (1)").await;
    let status = app
        .execute("INSERT INTO t (id) VALUES ($1)", vec![v::int(1)])
        .await
        .expect_err("duplicate key");
    assert_eq!(status.code(), Code::AlreadyExists);
    let (reason, metadata, _) = error_details(&status);
    assert_eq!(reason, "DATABASE_ERROR");
    let expected = match backend {
        Backend::Postgres => "23505",
        Backend::MySql => "23000",
        Backend::Sqlite => "1555",
    };
    assert_eq!(metadata.get("sqlstate").map(String::as_str), Some(expected));
    assert_eq!(app.count("t").await, 1);
    app.stop().await;
}
on_every_backend!(unique_violation_is_already_exists_with_sqlstate);

#[tokio::test]
async fn postgres_connections_identify_as_sqlgate() {
    let Some(app) = spawn_app(Backend::Postgres).await else {
        return;
    };
    app.run("SELECT 1").await;
    let mut direct = app.postgres_direct().await;
    let count = sqlgate_backends(&mut direct, &app.db.name, Backends::All).await;
    assert!(
        count >= 1,
        "sqlgate's connections must carry application_name=sqlgate"
    );

    // The call's connection goes back in a task of sqlx's, a moment later.
    app.wait_until_pool_idle().await;
    let stats = app.pool_stats().await;
    assert_eq!(stats.backend, "postgres");
    assert_eq!(stats.max_connections, 4);
    assert_eq!(stats.in_use_connections, 0);
    assert!(stats.open_connections >= 1);
    assert!(stats.calls_total >= 1);

    let name = app.db.name.clone();
    let _database = app.stop().await;
    // Shutdown closes the pool: the database sees no sqlgate connection.
    let mut left: i64 = -1;
    for _ in 0..50 {
        left = sqlgate_backends(&mut direct, &name, Backends::All).await;
        if left == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(left, 0, "connections left open after shutdown");
}

#[tokio::test]
async fn postgres_statements_that_refuse_transactions_still_run() {
    let Some(app) = spawn_app(Backend::Postgres).await else {
        return;
    };
    app.run("CREATE TABLE t (id INTEGER)").await;
    // VACUUM cannot run inside a transaction block; sqlgate runs it on its own.
    app.run("VACUUM t").await;
    app.stop().await;
}

#[tokio::test]
async fn same_statement_with_other_parameter_types_is_read_correctly() {
    // PostgreSQL fixes parameter types at prepare time; a cached statement
    // must never read a text parameter as the int8 of an earlier call.
    let Some(app) = spawn_app_single_connection().await else {
        return;
    };
    let first = app
        .execute("SELECT $1", vec![v::int(42)])
        .await
        .expect("int");
    assert_eq!(first.rows[0].values[0].kind, Some(Kind::IntValue(42)));
    let second = app
        .execute("SELECT $1", vec![v::text("abcdefgh")])
        .await
        .expect("text");
    assert_eq!(
        second.rows[0].values[0].kind,
        Some(Kind::TextValue("abcdefgh".into()))
    );
    let third = app
        .execute("SELECT $1", vec![v::null()])
        .await
        .expect("null");
    assert_eq!(third.rows[0].values[0].kind, Some(Kind::NullValue(0)));
    app.stop().await;
}

async fn spawn_app_single_connection() -> Option<crate::helpers::TestApp> {
    crate::helpers::spawn_app_with(Backend::Postgres, |s| {
        s.pool.max_connections = 1;
        s.pool.min_connections = 1;
    })
    .await
}

/// How many databases named `name` the server has (0 or 1).
async fn database_count(direct: &mut sqlx::PgConnection, name: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_one(direct)
        .await
        .expect("pg_database")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_create_and_drop_database_run_outside_a_transaction() {
    let Some(app) = spawn_app(Backend::Postgres).await else {
        return;
    };
    let name = format!("sqlgate_test_{}_extra", uuid::Uuid::new_v4().simple());
    app.run(&format!("CREATE DATABASE {name}")).await;
    let mut direct = app.postgres_direct().await;
    assert_eq!(
        database_count(&mut direct, &name).await,
        1,
        "CREATE DATABASE ran"
    );
    app.run(&format!("DROP DATABASE {name}")).await;
    assert_eq!(
        database_count(&mut direct, &name).await,
        0,
        "DROP DATABASE ran"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_permission_denied_is_permission_denied_with_its_sqlstate() {
    let Some(app) = spawn_app(Backend::Postgres).await else {
        return;
    };
    app.run("CREATE TABLE secret (id INTEGER)").await;
    let role = format!("sqlgate_test_{}_reader", uuid::Uuid::new_v4().simple());
    // Dropped when the test ends, however it ends (roles are cluster-wide).
    let _role = crate::secrets::Roles::create(
        &crate::test_database::postgres_admin_url(),
        &[(&role, "unused", false)],
    )
    .await;
    let mut session = crate::session_client::Session::begin(&app, &[])
        .await
        .expect("begin");
    session
        .query(&format!("SET LOCAL ROLE {role}"))
        .await
        .expect("set role");
    let status = session
        .query("SELECT * FROM secret")
        .await
        .expect_err("no privilege on the table");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(
        error_details(&status).1.get("sqlstate").map(String::as_str),
        Some("42501")
    );
    session.rollback().await;
    app.stop().await;
}
