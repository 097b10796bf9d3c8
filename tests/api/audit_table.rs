//! The audit table (`audit.table`): every write's audit row is inserted in
//! the write's own transaction — a committed write leaves exactly one row,
//! a rolled-back or failed one none — never with a value in it; callers
//! cannot name the table through sqlgate; and start-up stops when sqlgate
//! cannot insert into it. Rows are read straight from the database.

use sqlgate::grpc::pb::{self, SessionRequest};
use sqlx::Connection;
use tonic::Code;

use crate::{
    helpers::{Backend, TestApp, spawn_app_with, v},
    session_client::{Session, error_status},
};

/// The value no audit row may carry.
const CANARY: &str = "CANARY-PHI-7f31";

/// A sqlgate on `backend` with the audit table `sqlgate_audit`, created at
/// start-up (`None`: the backend is unreachable outside CI).
async fn audited_app(backend: Backend) -> Option<TestApp> {
    spawn_app_with(backend, |settings| {
        settings.audit.table = "sqlgate_audit".to_owned();
        settings.audit.create_table = true;
    })
    .await
}

/// One audit row, as read back: operation, method, session (empty when
/// none), tables, rows affected, and every text column joined (for the
/// canary check).
#[derive(Debug)]
struct Row {
    operation: String,
    method: String,
    session: String,
    tables: String,
    rows_affected: i64,
    text: String,
}

type Raw = (
    String,
    String,
    String,
    String,
    Option<String>,
    String,
    Option<String>,
    String,
    String,
    String,
    String,
    Option<String>,
    String,
    i64,
    i64,
);

const COLUMNS: &str = "time, event, caller, role, peer, method, session, fingerprint, \
     operation, tables, code, sqlstate, tags, rows_returned, rows_affected";

fn row(raw: Raw) -> Row {
    let text = [
        &raw.0,
        &raw.1,
        &raw.2,
        &raw.3,
        &raw.4.clone().unwrap_or_default(),
        &raw.5,
        &raw.6.clone().unwrap_or_default(),
        &raw.7,
        &raw.8,
        &raw.9,
        &raw.10,
        &raw.11.clone().unwrap_or_default(),
        &raw.12,
    ]
    .map(String::as_str)
    .join(" | ");
    Row {
        operation: raw.8,
        method: raw.5,
        session: raw.6.unwrap_or_default(),
        tables: raw.9,
        rows_affected: raw.14,
        text,
    }
}

/// Every row of the audit table, oldest first, read bypassing sqlgate.
async fn audit_rows(app: &TestApp) -> Vec<Row> {
    let rows: Vec<Raw> = match app.backend {
        Backend::Postgres => {
            let mut conn = app.postgres_direct().await;
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM sqlgate_audit ORDER BY time"
            )))
            .fetch_all(&mut conn)
            .await
        }
        Backend::MySql => {
            let mut conn = app.mysql_direct().await;
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {} FROM `{}`.sqlgate_audit ORDER BY time",
                // SQLSTATE is a reserved word on MySQL and MariaDB.
                COLUMNS.replace("sqlstate", "`sqlstate`"),
                app.db.name
            )))
            .fetch_all(&mut conn)
            .await
        }
        Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&app.db.url)
                .await
                .expect("direct connection");
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM sqlgate_audit ORDER BY time"
            )))
            .fetch_all(&mut conn)
            .await
        }
    }
    .expect("the audit table reads");
    let rows: Vec<Row> = rows.into_iter().map(row).collect();
    for row in &rows {
        assert!(
            !row.text.contains("CANARY"),
            "a value reached the audit table: {row:?}"
        );
    }
    rows
}

fn statement(sql: &str, params: Vec<pb::Value>) -> pb::BatchStatement {
    pb::BatchStatement {
        sql: sql.to_owned(),
        params,
    }
}

async fn writes_and_their_audit_rows_commit_together(backend: Backend) {
    let Some(app) = audited_app(backend).await else {
        return;
    };
    let canary = || vec![v::text(CANARY)];
    app.run("CREATE TABLE patients (name VARCHAR(64) PRIMARY KEY)")
        .await;
    assert_eq!(audit_rows(&app).await.len(), 1, "the CREATE is a write");

    // A committed write: one row. A read: none. A failed write: none.
    app.execute("INSERT INTO patients (name) VALUES ($1)", canary())
        .await
        .expect("insert");
    app.execute("SELECT name FROM patients WHERE name = $1", canary())
        .await
        .expect("select");
    let duplicate = app
        .execute("INSERT INTO patients (name) VALUES ($1)", canary())
        .await
        .expect_err("duplicate");
    assert_eq!(duplicate.code(), Code::AlreadyExists);
    let rows = audit_rows(&app).await;
    assert_eq!(rows.len(), 2, "{rows:#?}");
    assert_eq!(rows[1].operation, "INSERT");
    assert_eq!(rows[1].method, "sqlgate.v1.Query/Execute");
    assert_eq!(rows[1].tables, r#"["patients"]"#);
    assert_eq!(rows[1].rows_affected, 1);

    // A batch that fails half-way leaves neither its writes nor their rows.
    let mut query = app.query.clone();
    let failed = query
        .execute_batch(pb::ExecuteBatchRequest {
            statements: vec![
                statement(
                    &app.sql("INSERT INTO patients (name) VALUES ($1)"),
                    vec![v::text("CANARY-PHI-other")],
                ),
                statement(
                    &app.sql("INSERT INTO patients (name) VALUES ($1)"),
                    canary(),
                ),
            ],
            max_rows: 0,
        })
        .await
        .expect_err("the batch's second insert is a duplicate");
    assert_eq!(failed.code(), Code::AlreadyExists);
    assert_eq!(audit_rows(&app).await.len(), 2);
    assert_eq!(app.count("patients").await, 1);
    // One that commits: a row per write.
    query
        .execute_batch(pb::ExecuteBatchRequest {
            statements: vec![
                statement(
                    &app.sql("INSERT INTO patients (name) VALUES ($1)"),
                    vec![v::text("CANARY-PHI-other")],
                ),
                statement(
                    &app.sql("UPDATE patients SET name = $1 WHERE name = $2"),
                    vec![v::text("CANARY-PHI-third"), v::text("CANARY-PHI-other")],
                ),
            ],
            max_rows: 0,
        })
        .await
        .expect("batch");
    let rows = audit_rows(&app).await;
    assert_eq!(rows.len(), 4, "{rows:#?}");
    assert_eq!(rows[3].operation, "UPDATE");
    assert_eq!(rows[3].method, "sqlgate.v1.Query/ExecuteBatch");

    // A write through ExecuteStream is recorded too.
    let mut stream = query
        .execute_stream(pb::ExecuteRequest {
            sql: app.sql("DELETE FROM patients WHERE name = $1"),
            params: vec![v::text("CANARY-PHI-third")],
            max_rows: 0,
        })
        .await
        .expect("stream")
        .into_inner();
    while stream.message().await.expect("frame").is_some() {}
    assert_eq!(audit_rows(&app).await.len(), 5);

    // A session that rolls back leaves no row; one that commits, one per write.
    let mut session = Session::begin(&app, &[]).await.expect("begin");
    session
        .send(SessionRequest::execute(
            1,
            app.sql("INSERT INTO patients (name) VALUES ($1)"),
            vec![v::text("CANARY-PHI-session")],
        ))
        .await;
    session.outcome(1).await.expect("a session's insert");
    session.rollback().await;
    assert_eq!(audit_rows(&app).await.len(), 5);
    let mut session = Session::begin(&app, &[]).await.expect("begin");
    let session_id = session.id.clone();
    session
        .send(SessionRequest::execute(
            1,
            app.sql("INSERT INTO patients (name) VALUES ($1)"),
            vec![v::text("CANARY-PHI-session")],
        ))
        .await;
    session.outcome(1).await.expect("a session's insert");
    session
        .send(SessionRequest::execute(
            2,
            app.sql("SELECT name FROM patients"),
            vec![],
        ))
        .await;
    session.outcome(2).await.expect("a session's read");
    session.commit().await;
    let rows = audit_rows(&app).await;
    assert_eq!(rows.len(), 6, "{rows:#?}");
    assert_eq!(rows[5].session, session_id);
    assert_eq!(rows[5].method, "sqlgate.v1.Sessions/Attach");
    assert_eq!(app.count("patients").await, 2);
}

crate::on_every_backend!(writes_and_their_audit_rows_commit_together);

/// A hostile caller cannot read, forge or erase audit rows through
/// sqlgate: every statement naming the table is refused, on every path.
async fn the_audit_table_cannot_be_named(backend: Backend) {
    let Some(app) = audited_app(backend).await else {
        return;
    };
    app.run("CREATE TABLE notes (id INT)").await;
    let quoted = match backend {
        Backend::MySql => "DELETE FROM `SQLGATE_AUDIT`",
        _ => r#"DELETE FROM "sqlgate_audit""#,
    };
    for sql in [
        "SELECT * FROM sqlgate_audit",
        "DELETE FROM sqlgate_audit",
        quoted,
        "INSERT INTO Sqlgate_Audit (id) VALUES ('forged')",
        "UPDATE sqlgate_audit SET caller = 'someone else'",
    ] {
        let refused = app.execute(sql, vec![]).await.expect_err(sql);
        assert_eq!(refused.code(), Code::PermissionDenied, "{sql}: {refused:?}");
    }
    let mut query = app.query.clone();
    let stream = query
        .execute_stream(pb::ExecuteRequest {
            sql: "SELECT * FROM sqlgate_audit".to_owned(),
            params: vec![],
            max_rows: 0,
        })
        .await;
    let refused = match stream {
        Err(status) => status,
        Ok(stream) => stream
            .into_inner()
            .message()
            .await
            .expect_err("the stream is refused"),
    };
    assert_eq!(refused.code(), Code::PermissionDenied);
    let mut session = Session::begin(&app, &[]).await.expect("begin");
    session
        .send(SessionRequest::execute(
            1,
            "DELETE FROM sqlgate_audit".to_owned(),
            vec![],
        ))
        .await;
    let refused = session.outcome(1).await.expect_err("refused");
    assert_eq!(error_status(&refused).code(), Code::PermissionDenied);
    session.rollback().await;
    // A table whose name merely contains the audit table's is not refused.
    app.run("CREATE TABLE sqlgate_audit_notes (id INT)").await;
    assert_eq!(audit_rows(&app).await.len(), 2);
}

crate::on_every_backend!(the_audit_table_cannot_be_named);

/// Forms a backend reads as the table's name although they look like a
/// literal or a comment, and savepoints (a write rolled back to one would
/// keep its audit row): all refused, nothing erased.
async fn hidden_names_and_savepoints_are_refused(backend: Backend) {
    let Some(app) = audited_app(backend).await else {
        return;
    };
    app.run("CREATE TABLE notes (id INT)").await;
    app.run("INSERT INTO notes (id) VALUES (1)").await;
    let hidden: &[&str] = match backend {
        Backend::Sqlite => &["DELETE FROM 'sqlgate_audit'"],
        // A version number runs into the word after it: no word boundary
        // for a plain search, a word of its own for the server.
        Backend::MySql => &[
            "DELETE FROM /*! sqlgate_audit */",
            "DELETE FROM /*!50000sqlgate_audit*/",
            "DELETE FROM /*M!100000sqlgate_audit*/",
            "/*!50000ROLLBACK*/ TO SAVEPOINT s",
        ],
        Backend::Postgres => &[r#"DELETE FROM U&"sqlgate\005faudit""#],
    };
    let savepoints = [
        "SAVEPOINT s",
        "ROLLBACK TO SAVEPOINT s",
        "RELEASE SAVEPOINT s",
    ];
    for &sql in hidden.iter().chain(&savepoints) {
        let refused = app.execute(sql, vec![]).await.expect_err(sql);
        assert_eq!(refused.code(), Code::PermissionDenied, "{sql}: {refused:?}");
    }
    assert_eq!(
        audit_rows(&app).await.len(),
        2,
        "the rows of the CREATE and the INSERT are still there"
    );
}

crate::on_every_backend!(hidden_names_and_savepoints_are_refused);

/// A `SELECT` of a function that writes is audited like the write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_select_of_a_writing_function_is_audited_postgres() {
    let Some(app) = audited_app(Backend::Postgres).await else {
        return;
    };
    app.run("CREATE TABLE notes (id INT)").await;
    app.run(
        "CREATE FUNCTION add_note(n BIGINT) RETURNS BIGINT LANGUAGE sql AS \
         'INSERT INTO notes (id) VALUES (n) RETURNING id'",
    )
    .await;
    let before = audit_rows(&app).await.len();
    app.execute("SELECT add_note($1)", vec![v::int(7)])
        .await
        .expect("the function runs");
    assert_eq!(app.count("notes").await, 1);
    let rows = audit_rows(&app).await;
    assert_eq!(rows.len(), before + 1, "{rows:#?}");
    assert_eq!(rows[before].operation, "SELECT");
}

/// With `audit.create_table` off, a missing table stops start-up, saying
/// what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_audit_table_stops_start_up() {
    let Some(db) = crate::test_database::TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    let mut settings = sqlgate::config::Settings {
        listen: "127.0.0.1:0".parse().expect("addr"),
        database_url: db.url.clone(),
        ..Default::default()
    };
    settings.audit.table = "sqlgate_audit".to_owned();
    let Err(refused) = sqlgate::server::Application::build(settings).await else {
        panic!("start-up went on without its audit table");
    };
    let text = refused.to_string();
    assert!(text.contains("audit.table sqlgate_audit"), "{text}");
    assert!(text.contains("INSERT"), "{text}");
}

/// Least privilege, on PostgreSQL: sqlgate's database user needs INSERT
/// on the audit table and nothing more, and without UPDATE or DELETE on
/// it, dynamic SQL that gets the table's name past sqlgate's check (built
/// from strings) is refused by the database itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_alone_is_enough_and_the_database_refuses_erasing() {
    // A first sqlgate, as the superuser, creates the table.
    let Some(owner) = audited_app(Backend::Postgres).await else {
        return;
    };
    owner.run("CREATE TABLE notes (body TEXT)").await;
    let role = format!("{}_writer", owner.db.name);
    let mut admin = owner.postgres_direct().await;
    for grant in [
        format!("CREATE ROLE {role} LOGIN"),
        format!("GRANT USAGE ON SCHEMA public TO {role}"),
        format!("GRANT INSERT ON sqlgate_audit TO {role}"),
        format!("GRANT INSERT, SELECT ON notes TO {role}"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(grant))
            .execute(&mut admin)
            .await
            .expect("grant");
    }
    let url = crate::test_database::with_database(
        &format!("postgres://{role}@127.0.0.1:5432/postgres"),
        &owner.db.name,
    );
    let started = sqlgate::server::Application::build(sqlgate::config::Settings {
        listen: "127.0.0.1:0".parse().expect("addr"),
        database_url: url.clone(),
        audit: sqlgate::config::AuditSettings {
            table: "sqlgate_audit".to_owned(),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    assert!(started.is_ok(), "INSERT on the table is enough to start");
    drop(started);
    let Some(app) = spawn_app_with(Backend::Postgres, |settings| {
        settings.database_url = url;
        settings.audit.table = "sqlgate_audit".to_owned();
    })
    .await
    else {
        return;
    };
    app.execute(
        "INSERT INTO notes (body) VALUES ($1)",
        vec![v::text(CANARY)],
    )
    .await
    .expect("a write as the least-privileged user");
    let erase = "DO $$ BEGIN EXECUTE 'DELETE FROM sqlgate_' || 'audit'; END $$";
    let refused = app
        .execute(erase, vec![])
        .await
        .expect_err("no DELETE grant");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let rows = audit_rows(&owner).await;
    assert_eq!(rows.len(), 2, "the CREATE and the INSERT: {rows:#?}");
    drop(app.stop().await);
    drop(owner.stop().await);
    let mut server = sqlx::PgConnection::connect(&crate::test_database::postgres_admin_url())
        .await
        .expect("admin");
    // The database is gone with its guards; the role is the cluster's.
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP ROLE IF EXISTS {role}")))
        .execute(&mut server)
        .await;
}
