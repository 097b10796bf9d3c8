//! A session's isolation level and read-only flag are the ones its
//! transaction actually runs with, read back from inside the session; a
//! read-only session cannot write; nothing of it stays on the connection.

use std::time::Duration;

use sqlgate::grpc::pb::{IsolationLevel, value::Kind};
use tonic::Code;

use crate::{
    helpers::{Backend, error_details, spawn_app, spawn_app_with},
    session_client::{Session, int, text},
};

/// Every level a client may ask for, with each backend's own name for the
/// level it gets (`Unspecified` is the server's default).
const LEVELS: [(IsolationLevel, &str, &str); 5] = [
    (
        IsolationLevel::Unspecified,
        "read committed",
        "REPEATABLE READ",
    ),
    (
        IsolationLevel::ReadUncommitted,
        "read uncommitted",
        "READ UNCOMMITTED",
    ),
    (
        IsolationLevel::ReadCommitted,
        "read committed",
        "READ COMMITTED",
    ),
    (
        IsolationLevel::RepeatableRead,
        "repeatable read",
        "REPEATABLE READ",
    ),
    (IsolationLevel::Serializable, "serializable", "SERIALIZABLE"),
];

/// A write in a read-only session is refused with the database's sqlstate.
async fn assert_write_refused(session: &mut Session, sqlstate: &str) {
    let status = session
        .query("INSERT INTO t VALUES (1)")
        .await
        .expect_err("a read-only session cannot write");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let (reason, metadata, _) = error_details(&status);
    assert_eq!(reason, "DATABASE_ERROR", "{status:?}");
    assert_eq!(
        metadata.get("sqlstate").map(String::as_str),
        Some(sqlstate),
        "{status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sessions_run_at_the_isolation_and_access_mode_asked_for() {
    // One connection: each session finds what the one before left.
    let Some(app) = spawn_app_with(Backend::Postgres, |s| {
        s.pool.max_connections = 1;
        s.pool.min_connections = 1;
    })
    .await
    else {
        return;
    };
    app.run("CREATE TABLE t (id INTEGER)").await;
    for read_only in [false, true] {
        for (level, expected, _) in LEVELS {
            let mut session = Session::begin_as(&app, level, read_only).await;
            let isolation = session.row("SHOW transaction_isolation").await;
            assert_eq!(text(&isolation[0]), expected, "{level:?}");
            let mode = session.row("SHOW transaction_read_only").await;
            assert_eq!(
                text(&mode[0]),
                if read_only { "on" } else { "off" },
                "{level:?}"
            );
            if read_only {
                assert_write_refused(&mut session, "25006").await;
            }
            session.rollback().await;
        }
    }
    // Outside a session the connection is back to its defaults.
    let response = app.run("SHOW transaction_read_only").await;
    assert_eq!(
        response.rows[0].values[0].kind,
        Some(Kind::TextValue("off".into()))
    );
    app.run("INSERT INTO t VALUES (2)").await;
    assert_eq!(app.count("t").await, 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_sessions_run_at_the_isolation_and_access_mode_asked_for() {
    let Some(app) = spawn_app_with(Backend::MySql, |s| {
        s.pool.max_connections = 1;
        s.pool.min_connections = 1;
    })
    .await
    else {
        return;
    };
    app.run("CREATE TABLE t (id INTEGER) ENGINE=InnoDB").await;
    for read_only in [false, true] {
        for (level, _, expected) in LEVELS {
            let mut session = Session::begin_as(&app, level, read_only).await;
            // InnoDB starts the transaction at its first table access.
            session.row("SELECT count(*) FROM t").await;
            let row = own_innodb_transaction(&mut session).await;
            assert_eq!(text(&row[0]), expected, "{level:?} read_only={read_only}");
            assert_eq!(int(&row[1]), i64::from(read_only), "{level:?}");
            if read_only {
                assert_write_refused(&mut session, "25006").await;
            }
            session.rollback().await;
        }
    }
    // The next plain write on the same connection runs and is read-write.
    app.run("INSERT INTO t VALUES (2)").await;
    assert_eq!(app.count("t").await, 1);
    app.stop().await;
}

/// This session's row of `information_schema.innodb_trx`: isolation level
/// and read-only flag. InnoDB serves that table from a cache it refreshes
/// only when nobody has read it for 100 ms, so a row can describe an
/// earlier transaction of the same connection (seen when suites ran side
/// by side). A row filled while this very query ran names the query in
/// `trx_query`; any other row is stale, and the read is tried again.
async fn own_innodb_transaction(session: &mut Session) -> Vec<Kind> {
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let row = session
            .row(
                "SELECT trx_isolation_level, trx_is_read_only, trx_query \
                 FROM information_schema.innodb_trx \
                 WHERE trx_mysql_thread_id = CONNECTION_ID()",
            )
            .await;
        if matches!(&row[2], Kind::TextValue(query) if query.contains("innodb_trx")) {
            return row;
        }
    }
    panic!("information_schema.innodb_trx never showed this session's own transaction");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_read_only_sessions_set_query_only_and_undo_it() {
    // One connection, so the plain calls run where the session ran.
    let Some(app) = spawn_app_with(Backend::Sqlite, |s| {
        s.pool.max_connections = 1;
        s.pool.min_connections = 1;
    })
    .await
    else {
        return;
    };
    app.run("CREATE TABLE t (id INTEGER)").await;
    for (level, _, _) in LEVELS {
        for read_only in [false, true] {
            let mut session = Session::begin_as(&app, level, read_only).await;
            let row = session.row("PRAGMA query_only").await;
            assert_eq!(int(&row[0]), i64::from(read_only), "{level:?}");
            if read_only {
                // SQLITE_READONLY.
                assert_write_refused(&mut session, "8").await;
            } else {
                session
                    .query("INSERT INTO t VALUES (1)")
                    .await
                    .expect("a read-write session writes");
            }
            session.rollback().await;
            let response = app.run("PRAGMA query_only").await;
            assert_eq!(
                response.rows[0].values[0].kind,
                Some(Kind::IntValue(0)),
                "query_only is off again after a {level:?} read_only={read_only} session"
            );
        }
    }
    app.run("INSERT INTO t VALUES (2)").await;
    assert_eq!(app.count("t").await, 1);
    app.stop().await;
}

/// A REPEATABLE READ or SERIALIZABLE session sees the database as it is at
/// its first statement, not when it opened: what commits between `begin`
/// and that statement is visible (sqlgate's own query for the backend's
/// pid must not take the snapshot early).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_repeatable_read_snapshot_starts_at_the_first_statement() {
    let Some(app) = spawn_app(Backend::Postgres).await else {
        return;
    };
    app.run("CREATE TABLE t (id INTEGER)").await;
    for level in [IsolationLevel::RepeatableRead, IsolationLevel::Serializable] {
        let mut session = Session::begin_as(&app, level, false).await;
        app.run("INSERT INTO t VALUES (1)").await;
        let seen = session.row("SELECT count(*) FROM t").await;
        assert_eq!(int(&seen[0]), app.count("t").await, "{level:?}");
        session.commit().await;
    }
}
