//! Roles, as a caller meets them and as the database records them. A
//! reader writes nothing, however the write is spelled and through
//! whichever call (Execute, ExecuteBatch, ExecuteStream, a session), and
//! is told PERMISSION_DENIED; its reads work. A writer cannot read the
//! pool's figures and sees and ends only its own sessions. Authentication
//! is not there yet, so the role every caller holds comes from
//! `roles.default`, and two callers are two client connections.
//!
//! Rows are counted directly in the database, never through the reader:
//! what counts is what the database kept.

use futures::StreamExt;
use sqlgate::{
    config::Settings,
    grpc::{
        identity::Role,
        pb::{self, BeginSession, admin_client::AdminClient},
    },
};
use sqlx::{AssertSqlSafe, Connection, Executor};
use tonic::{Code, transport::Channel};

use crate::{
    helpers::{Backend, TestApp, WAIT, error_details, spawn_app_with, within},
    on_every_backend,
    session_client::{Session, ended_with, error_status},
    test_database::{mysql_admin_url, with_database},
};

/// Every caller without an identity (all of them, for now) holds `role`.
fn everyone_is(role: Role) -> impl FnOnce(&mut Settings) {
    move |settings| settings.roles.default = role
}

/// The test's database, reached directly rather than through sqlgate: to
/// create what a reader may not, and to count what the database kept.
enum Direct {
    Postgres(sqlx::PgConnection),
    MySql(sqlx::MySqlConnection),
    Sqlite(sqlx::SqliteConnection),
}

impl Direct {
    async fn of(app: &TestApp) -> Self {
        match app.backend {
            Backend::Postgres => Direct::Postgres(app.postgres_direct().await),
            Backend::MySql => Direct::MySql(
                sqlx::MySqlConnection::connect(&with_database(&mysql_admin_url(), &app.db.name))
                    .await
                    .expect("direct connection"),
            ),
            Backend::Sqlite => Direct::Sqlite(
                sqlx::SqliteConnection::connect(&app.db.url)
                    .await
                    .expect("direct connection"),
            ),
        }
    }

    async fn try_run(&mut self, sql: &str) -> Result<(), sqlx::Error> {
        let sql = sqlx::raw_sql(AssertSqlSafe(sql.to_owned()));
        match self {
            Direct::Postgres(conn) => conn.execute(sql).await.map(drop),
            Direct::MySql(conn) => conn.execute(sql).await.map(drop),
            Direct::Sqlite(conn) => conn.execute(sql).await.map(drop),
        }
    }

    async fn run(&mut self, sql: &str) {
        self.try_run(sql)
            .await
            .unwrap_or_else(|err| panic!("{sql}: {err}"));
    }

    /// Rows in `table`; `None` if there is no such table.
    async fn count(&mut self, table: &str) -> Option<i64> {
        let sql = AssertSqlSafe(format!("SELECT count(*) FROM {table}"));
        let count = match self {
            Direct::Postgres(conn) => sqlx::query_scalar(sql).fetch_one(conn).await,
            Direct::MySql(conn) => sqlx::query_scalar(sql).fetch_one(conn).await,
            Direct::Sqlite(conn) => sqlx::query_scalar(sql).fetch_one(conn).await,
        };
        count.ok()
    }
}

/// A table `t` with one row and, where the backend has them, a function
/// that writes (`w()`), a view that reads through it (`vw`) and, on MySQL,
/// a procedure that commits before it writes (`p()`).
async fn writable_schema(direct: &mut Direct, backend: Backend) {
    direct.run("CREATE TABLE t (id INTEGER)").await;
    direct.run("INSERT INTO t VALUES (1)").await;
    match backend {
        Backend::Postgres => {
            direct
                .run(
                    "CREATE FUNCTION w() RETURNS int LANGUAGE sql \
                     AS $$ INSERT INTO t VALUES (99) RETURNING 1 $$",
                )
                .await;
            direct.run("CREATE VIEW vw AS SELECT w() AS x").await;
        }
        Backend::MySql => {
            direct
                .run(
                    "CREATE FUNCTION w() RETURNS INT MODIFIES SQL DATA \
                     BEGIN INSERT INTO t VALUES (99); RETURN 1; END",
                )
                .await;
            direct.run("CREATE VIEW vw AS SELECT w() AS x").await;
            direct
                .run("CREATE PROCEDURE p() BEGIN COMMIT; INSERT INTO t VALUES (98); END")
                .await;
        }
        Backend::Sqlite => {}
    }
}

/// The writes a reader tries, each spelled its own way.
fn writes(backend: Backend) -> Vec<&'static str> {
    let mut writes = vec![
        "INSERT INTO t VALUES (2)",
        "UPDATE t SET id = 3",
        "DELETE FROM t",
        "CREATE TABLE t2 (id INTEGER)",
        "DROP TABLE t",
    ];
    match backend {
        Backend::Postgres => writes.extend([
            // A data-modifying CTE: a SELECT to the eye.
            "WITH d AS (DELETE FROM t RETURNING id) SELECT count(*) FROM d",
            "SELECT w()",
            // A plain read of a view, which sqlgate cannot see into.
            "SELECT x FROM vw",
            "SELECT id FROM t FOR UPDATE",
            "CREATE DATABASE sqlgate_reader_must_not",
        ]),
        Backend::MySql => writes.extend([
            "SELECT w()",
            "SELECT x FROM vw",
            // Ends a read-only transaction, then writes.
            "CALL p()",
            "TRUNCATE TABLE t",
        ]),
        Backend::Sqlite => writes.extend([
            "WITH d AS (SELECT 1) DELETE FROM t",
            "INSERT INTO t VALUES (4) RETURNING id",
        ]),
    }
    writes
}

/// A reader's refused write: PERMISSION_DENIED, reason READ_ONLY_ROLE,
/// the database's SQLSTATE kept.
fn assert_read_only_refusal(status: &tonic::Status, what: &str) {
    assert_eq!(status.code(), Code::PermissionDenied, "{what}: {status:?}");
    let (reason, metadata, _) = error_details(status);
    assert_eq!(reason, "READ_ONLY_ROLE", "{what}: {status:?}");
    assert!(metadata.contains_key("sqlstate"), "{what}: {status:?}");
}

/// What an ExecuteStream call ends with: its rows, or its error.
async fn stream(app: &TestApp, sql: &str) -> Result<usize, tonic::Status> {
    let mut frames = app
        .query
        .clone()
        .execute_stream(pb::ExecuteRequest {
            sql: app.sql(sql),
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut rows = 0;
    while let Some(frame) = within(WAIT, "a stream frame", frames.next()).await {
        if let Some(pb::result_frame::Frame::Rows(batch)) = frame?.frame {
            rows += batch.rows.len();
        }
    }
    Ok(rows)
}

async fn batch(
    app: &TestApp,
    statements: &[&str],
) -> Result<pb::ExecuteBatchResponse, tonic::Status> {
    app.query
        .clone()
        .execute_batch(pb::ExecuteBatchRequest {
            statements: statements
                .iter()
                .map(|sql| pb::BatchStatement {
                    sql: app.sql(sql),
                    params: vec![],
                })
                .collect(),
            max_rows: 0,
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn a_reader_writes_nothing_however_it_asks(backend: Backend) {
    let Some(app) = spawn_app_with(backend, everyone_is(Role::Reader)).await else {
        return;
    };
    let mut direct = Direct::of(&app).await;
    writable_schema(&mut direct, backend).await;

    for sql in writes(backend) {
        let status = app.execute(sql, vec![]).await.expect_err(sql);
        assert_read_only_refusal(&status, sql);
        let status = stream(&app, sql).await.expect_err(sql);
        assert_read_only_refusal(&status, &format!("streamed {sql}"));
    }
    // In a batch, the refusal names its statement.
    let status = batch(&app, &["SELECT 1", "INSERT INTO t VALUES (5)"])
        .await
        .expect_err("a batch that writes");
    assert_read_only_refusal(&status, "batch");
    assert_eq!(
        error_details(&status)
            .1
            .get("statement_index")
            .map(String::as_str),
        Some("1")
    );
    if backend == Backend::Postgres {
        // Statements that cannot run in a transaction are not run bare
        // for a reader: nothing would keep them read-only there.
        let status = app.execute("VACUUM", vec![]).await.expect_err("VACUUM");
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    }
    if backend == Backend::MySql {
        // The one setting that could lift a read-only call is sqlgate's own.
        let status = app
            .execute(
                "SET STATEMENT tx_read_only = 0 FOR CREATE TABLE t3 (id INTEGER)",
                vec![],
            )
            .await
            .expect_err("SET STATEMENT tx_read_only");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    }

    // Its reads work, through every call.
    assert_eq!(app.count("t").await, 1);
    assert_eq!(
        stream(&app, "SELECT id FROM t")
            .await
            .expect("a streamed read"),
        1
    );
    let reads = batch(&app, &["SELECT id FROM t", "SELECT 2"])
        .await
        .expect("a batch of reads");
    assert_eq!(reads.results.len(), 2);

    // The database kept what it had: nothing was written or created.
    assert_eq!(direct.count("t").await, Some(1));
    assert_eq!(direct.count("t2").await, None);
    assert_eq!(direct.count("t3").await, None);
    app.stop().await;
}
on_every_backend!(a_reader_writes_nothing_however_it_asks);

async fn a_readers_session_is_read_only_whatever_it_asked(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |s| {
        everyone_is(Role::Reader)(s);
        // One connection: the next session gets the one this one used.
        s.pool.max_connections = 1;
        s.sessions.max_pool_share = 1.0;
    })
    .await
    else {
        return;
    };
    let mut direct = Direct::of(&app).await;
    writable_schema(&mut direct, backend).await;

    // It asks for a read-write session and gets a session that reads.
    let mut session = Session::begin_on(
        app.channel.clone(),
        BeginSession {
            read_only: false,
            ..BeginSession::default()
        },
    )
    .await
    .expect("a reader's session begins");
    let listed = app
        .admin
        .clone()
        .list_sessions(pb::ListSessionsRequest {})
        .await
        .expect("its own sessions")
        .into_inner()
        .sessions;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].role, "reader");
    let write = session
        .execute(&app, 1, "INSERT INTO t VALUES (2)", vec![])
        .await
        .expect_err("a reader's session cannot write");
    assert_read_only_refusal(&error_status(&write), "session insert");
    if backend == Backend::Postgres {
        // PostgreSQL aborts the transaction after any error.
        session.rollback().await;
    } else {
        let rows = session
            .execute(&app, 2, "SELECT id FROM t", vec![])
            .await
            .expect("a reader's session reads");
        assert_eq!(rows.len(), 1);
        session.commit().await;
    }

    // A second one, on the same connection, ended by rollback.
    let mut session = Session::begin(&app, &[]).await.expect("begins again");
    let write = session
        .execute(&app, 1, "DELETE FROM t", vec![])
        .await
        .expect_err("still read-only");
    assert_read_only_refusal(&error_status(&write), "second session delete");
    session.rollback().await;

    assert_eq!(direct.count("t").await, Some(1));
    app.stop().await;
}
on_every_backend!(a_readers_session_is_read_only_whatever_it_asked);

/// A read-only session sets the connection read-only on MySQL and SQLite;
/// the connection must be read-write again for whoever gets it next.
async fn a_read_only_connection_is_read_write_again_for_the_next_caller(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |s| {
        s.pool.max_connections = 1;
        s.sessions.max_pool_share = 1.0;
    })
    .await
    else {
        return;
    };
    app.run("CREATE TABLE t (id INTEGER)").await;
    // Ended by commit (undone with the COMMIT), by rollback (undone on
    // release), and after a refused write.
    for (i, end) in [
        pb::SessionRequest::commit(),
        pb::SessionRequest::rollback(),
        pb::SessionRequest::rollback(),
    ]
    .into_iter()
    .enumerate()
    {
        let mut session = Session::begin_on(
            app.channel.clone(),
            BeginSession {
                read_only: true,
                ..BeginSession::default()
            },
        )
        .await
        .expect("a read-only session");
        if i == 2 {
            let refused = session
                .execute(&app, 1, "INSERT INTO t VALUES (0)", vec![])
                .await
                .expect_err("read-only");
            // A writer's own read-only session: the database's state, not
            // the caller's role.
            assert_eq!(refused.code, Code::FailedPrecondition as i32, "{refused:?}");
        } else {
            session
                .execute(&app, 1, "SELECT count(*) FROM t", vec![])
                .await
                .expect("reads");
        }
        session.end(end).await;
        let id = i64::try_from(i).expect("small");
        app.execute(
            "INSERT INTO t VALUES ($1)",
            vec![crate::helpers::v::int(id)],
        )
        .await
        .unwrap_or_else(|status| panic!("a write after read-only session {i}: {status:?}"));
    }
    assert_eq!(app.count("t").await, 3);
    app.stop().await;
}
on_every_backend!(a_read_only_connection_is_read_write_again_for_the_next_caller);

async fn sessions_of(channel: &Channel) -> Vec<pb::SessionInfo> {
    AdminClient::new(channel.clone())
        .list_sessions(pb::ListSessionsRequest {})
        .await
        .expect("ListSessions")
        .into_inner()
        .sessions
}

async fn terminate(channel: &Channel, id: &str) -> Result<(), tonic::Status> {
    AdminClient::new(channel.clone())
        .terminate_session(pb::TerminateSessionRequest {
            session_id: id.to_owned(),
        })
        .await
        .map(drop)
}

async fn a_writer_sees_and_ends_only_its_own_sessions(backend: Backend) {
    let Some(app) = spawn_app_with(backend, everyone_is(Role::Writer)).await else {
        return;
    };
    // A writer writes.
    app.run("CREATE TABLE t (id INTEGER)").await;
    app.run("INSERT INTO t VALUES (1)").await;

    // The pool's figures are the admin's.
    let status = app
        .admin
        .clone()
        .get_pool_stats(pb::GetPoolStatsRequest {})
        .await
        .expect_err("GetPoolStats is for admins");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(error_details(&status).0, "ROLE_FORBIDS");

    let (alice, bob) = (app.another_channel().await, app.another_channel().await);
    let mut hers = Session::begin_on(alice.clone(), BeginSession::labelled([("who", "alice")]))
        .await
        .expect("alice's session");
    let his = Session::begin_on(bob.clone(), BeginSession::labelled([("who", "bob")]))
        .await
        .expect("bob's session");

    let seen = sessions_of(&alice).await;
    assert_eq!(
        seen.iter()
            .map(|s| s.session_id.as_str())
            .collect::<Vec<_>>(),
        [hers.id.as_str()],
        "alice sees only hers: {seen:?}"
    );
    assert_eq!(seen[0].role, "writer");
    assert!(seen[0].caller.starts_with("127.0.0.1:"), "{seen:?}");
    assert_eq!(seen[0].caller, seen[0].peer);
    assert_ne!(sessions_of(&bob).await[0].caller, seen[0].caller);

    // Bob cannot end hers, nor learn that it exists: as an unknown id.
    let status = terminate(&bob, &hers.id).await.expect_err("not his");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let unknown = terminate(&bob, "no-such-session")
        .await
        .expect_err("unknown");
    assert_eq!(
        status.message().replace(&hers.id, "?"),
        unknown.message().replace("no-such-session", "?")
    );
    hers.execute(&app, 1, "SELECT 1", vec![])
        .await
        .expect("hers still runs");

    // She ends her own.
    terminate(&alice, &hers.id).await.expect("her own");
    ended_with(&mut hers, Code::Aborted, "terminated").await;
    his.rollback().await;
    app.stop().await;
}
on_every_backend!(a_writer_sees_and_ends_only_its_own_sessions);

async fn an_admin_sees_every_callers_sessions(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |_| {}).await else {
        return;
    };
    let (alice, bob) = (app.another_channel().await, app.another_channel().await);
    let hers = Session::begin_on(alice.clone(), BeginSession::default())
        .await
        .expect("alice's");
    let his = Session::begin_on(bob.clone(), BeginSession::default())
        .await
        .expect("bob's");
    let seen = sessions_of(&app.channel).await;
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen.iter().all(|s| s.role == "admin"), "{seen:?}");
    assert_ne!(seen[0].caller, seen[1].caller);
    // An admin (everyone, with the default `roles.default`) ends anyone's.
    terminate(&app.channel, &his.id)
        .await
        .expect("an admin ends bob's");
    hers.rollback().await;
    assert_eq!(sessions_of(&app.channel).await.len(), 0);
    app.stop().await;
}
on_every_backend!(an_admin_sees_every_callers_sessions);
