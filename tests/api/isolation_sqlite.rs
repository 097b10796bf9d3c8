//! One caller cannot hurt the next through SQLite's shared pool, tried as
//! an attacker would. sqlgate cannot reset a SQLite connection (it has
//! nothing to reset with), so everything that would outlive the call is
//! refused: ATTACH/DETACH, VACUUM INTO, PRAGMAs that set, TEMP objects and
//! transaction control. Every test runs with a pool of ONE connection, so
//! the next caller gets the connection the attacker used, and checks what
//! that caller sees, the files on disk, and SQLite's write lock.
//!
//! Tests marked `#[ignore = "hole: …"]` describe an attack that gets past
//! sqlgate today; run them with `-- --ignored` to see them fail.

use std::path::{Path, PathBuf};

use sqlgate::grpc::pb::{self, value::Kind};
use tonic::Code;

use crate::{
    helpers::{Backend, TestApp, WAIT, within},
    isolation::{
        EVERY_CALL, Via, assert_refused, assert_still_serving, call, one_connection_app, one_row,
    },
    observe::{DatabaseView, sqlite_write_lock_is_free},
    session_client::Session,
};

/// What sqlgate says of statements that reach outside the database file
/// or outlive the call.
const CONFINED: &str = "is not allowed: it reaches outside the database or outlives the call";
/// What sqlgate says of transaction control in a call.
const USE_A_SESSION: &str = "each call runs in a transaction of its own; use a session";
/// What sqlgate says of transaction control in a session.
const USE_THE_SESSION_END: &str = "a session's transaction is the one sqlgate began; end it \
                                   with the session's commit or rollback message";

/// A file beside the test's database that no statement may create.
fn beside_the_database(app: &TestApp, name: &str) -> PathBuf {
    app.db
        .sqlite_path()
        .expect("a SQLite test database has a file")
        .with_file_name(name)
}

/// The connection's settings an attacker would like to change, as the
/// next caller reads them.
async fn pragmas(app: &TestApp) -> [Kind; 5] {
    let mut found = Vec::new();
    for pragma in [
        "user_version",
        "writable_schema",
        "query_only",
        "foreign_keys",
        "schema_version",
    ] {
        found.push(one_row(app, &format!("PRAGMA {pragma}")).await.remove(0));
    }
    found.try_into().expect("five pragmas")
}

/// The names of the databases the connection has attached.
async fn attached(app: &TestApp) -> Vec<Kind> {
    call(app, Via::Execute, "SELECT name FROM pragma_database_list")
        .await
        .expect("pragma_database_list")
        .into_iter()
        .map(|mut row| row.remove(0))
        .collect()
}

fn assert_not_created(path: &Path, case: &str) {
    assert!(!path.exists(), "{case}: {} was created", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_sqlite_statements_that_outlive_the_call_are_refused() {
    let Some(app) = one_connection_app(Backend::Sqlite).await else {
        return;
    };
    app.run("CREATE TABLE t (id INTEGER)").await;
    let attached_file = beside_the_database(&app, "attached.db");
    let vacuumed_file = beside_the_database(&app, "vacuumed.db");
    let attach = format!("ATTACH DATABASE '{}' AS other", attached_file.display());
    let vacuum = format!("VACUUM INTO '{}'", vacuumed_file.display());
    let before = pragmas(&app).await;
    assert_eq!(before[2], Kind::IntValue(0), "query_only is off");

    let cases: Vec<(String, &str)> = vec![
        (attach.clone(), CONFINED),
        (
            format!("attach '{}' as other", attached_file.display()),
            CONFINED,
        ),
        (
            format!("/* c */ ATTACH '{}' AS other", attached_file.display()),
            CONFINED,
        ),
        (
            format!("-- c\nATTACH '{}' AS other", attached_file.display()),
            CONFINED,
        ),
        (format!("SELECT 1; {attach}"), CONFINED),
        (format!("SELECT 1;{attach};"), CONFINED),
        (format!("SELECT ';'; {attach}"), CONFINED),
        (
            format!("SELECT \"a;b\" FROM (SELECT 1 AS \"a;b\"); {attach}"),
            CONFINED,
        ),
        (
            format!("SELECT [a;b] FROM (SELECT 1 AS [a;b]); {attach}"),
            CONFINED,
        ),
        (format!("SELECT 1 /* ; */; {attach}"), CONFINED),
        ("DETACH DATABASE other".to_owned(), CONFINED),
        (vacuum.clone(), CONFINED),
        (
            format!("VACUUM main INTO '{}'", vacuumed_file.display()),
            CONFINED,
        ),
        ("PRAGMA writable_schema = ON".to_owned(), CONFINED),
        ("pragma  WRITABLE_SCHEMA=1".to_owned(), CONFINED),
        ("PRAGMA main.writable_schema = ON".to_owned(), CONFINED),
        ("PRAGMA writable_schema(1)".to_owned(), CONFINED),
        ("PRAGMA query_only = ON".to_owned(), CONFINED),
        ("PRAGMA query_only(1)".to_owned(), CONFINED),
        ("PRAGMA user_version = 5".to_owned(), CONFINED),
        ("PRAGMA foreign_keys = OFF".to_owned(), CONFINED),
        ("PRAGMA journal_mode = DELETE".to_owned(), CONFINED),
        ("PRAGMA cache_size = 1".to_owned(), CONFINED),
        ("SELECT 1; PRAGMA query_only = ON".to_owned(), CONFINED),
        ("CREATE TEMP TABLE x (a)".to_owned(), CONFINED),
        ("CREATE TEMPORARY TABLE t (id INTEGER)".to_owned(), CONFINED),
        ("create   temp\tview v AS SELECT 1".to_owned(), CONFINED),
        (
            "CREATE TEMP TRIGGER tr AFTER INSERT ON t BEGIN DELETE FROM t; END".to_owned(),
            CONFINED,
        ),
        ("BEGIN".to_owned(), USE_A_SESSION),
        ("BEGIN IMMEDIATE".to_owned(), USE_A_SESSION),
        ("begin exclusive transaction".to_owned(), USE_A_SESSION),
        ("COMMIT".to_owned(), USE_A_SESSION),
        ("END TRANSACTION".to_owned(), USE_A_SESSION),
        ("ROLLBACK".to_owned(), USE_A_SESSION),
        ("SELECT 1; BEGIN".to_owned(), USE_A_SESSION),
        (
            "INSERT INTO t VALUES (1); COMMIT; BEGIN".to_owned(),
            USE_A_SESSION,
        ),
    ];
    for (sql, instead) in &cases {
        for via in EVERY_CALL {
            let case = format!("{sql:?} via {via:?}");
            let status = call(&app, via, sql)
                .await
                .expect_err(&format!("{case} must be refused"));
            assert_refused(&status, instead, &case);
            assert_not_created(&attached_file, &case);
            assert_not_created(&vacuumed_file, &case);
        }
    }

    // The next caller finds the connection as it was, and writes.
    assert_eq!(pragmas(&app).await, before);
    assert_eq!(attached(&app).await, [Kind::TextValue("main".into())]);
    app.run("INSERT INTO t VALUES (2)").await;
    assert_eq!(app.count("t").await, 1, "only the next caller's row");
    let path = app.db.sqlite_path().expect("path");
    assert!(sqlite_write_lock_is_free(&path).await);
    assert_still_serving(&app).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_sqlite_a_plain_begin_cannot_leave_the_connection_in_a_transaction() {
    let Some(app) = one_connection_app(Backend::Sqlite).await else {
        return;
    };
    app.run("CREATE TABLE t (id INTEGER)").await;
    let path = app.db.sqlite_path().expect("path");
    let mut view = DatabaseView::of(&app).await;
    for sql in ["BEGIN", "BEGIN IMMEDIATE", "COMMIT", "END", "ROLLBACK"] {
        let status = app
            .execute(sql, vec![])
            .await
            .expect_err(&format!("a plain Execute of {sql} must be refused"));
        assert_refused(&status, USE_A_SESSION, sql);
        // The connection is not left inside a transaction: the next call
        // on the pool of one writes and commits, and nobody holds the lock.
        app.run("INSERT INTO t VALUES (1)").await;
        assert!(
            sqlite_write_lock_is_free(&path).await,
            "after {sql}: the write lock is held"
        );
        assert_still_serving(&app).await;
    }
    assert_eq!(view.count_rows("t").await, 5, "every insert was committed");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_sqlite_a_read_only_session_stays_read_only() {
    let Some(app) = one_connection_app(Backend::Sqlite).await else {
        return;
    };
    app.run("CREATE TABLE t (id INTEGER)").await;
    let attached_file = beside_the_database(&app, "attached.db");
    let mut session = Session::begin_as(&app, pb::IsolationLevel::Unspecified, true).await;
    let refusals = [
        ("PRAGMA query_only = OFF".to_owned(), CONFINED),
        ("PRAGMA query_only = 0".to_owned(), CONFINED),
        ("PRAGMA query_only(0)".to_owned(), CONFINED),
        ("PRAGMA main.query_only = false".to_owned(), CONFINED),
        ("/* x */ pragma QUERY_ONLY=off".to_owned(), CONFINED),
        ("SELECT 1; PRAGMA query_only = OFF".to_owned(), CONFINED),
        (
            format!("ATTACH '{}' AS other", attached_file.display()),
            CONFINED,
        ),
        ("CREATE TEMP TABLE x (a)".to_owned(), CONFINED),
        ("COMMIT".to_owned(), USE_THE_SESSION_END),
        ("BEGIN".to_owned(), USE_THE_SESSION_END),
        ("END".to_owned(), USE_THE_SESSION_END),
    ];
    for (sql, instead) in &refusals {
        let status = session
            .query(sql)
            .await
            .expect_err(&format!("{sql:?} must be refused in a read-only session"));
        assert_refused(&status, instead, sql);
    }
    // Still read-only, as SQLite itself says, and a write still fails.
    assert_eq!(session.row("PRAGMA query_only").await, [Kind::IntValue(1)]);
    let status = session
        .query("INSERT INTO t VALUES (1)")
        .await
        .expect_err("a read-only session cannot write");
    assert_ne!(
        status.code(),
        Code::InvalidArgument,
        "SQLite refused it: {status:?}"
    );
    assert!(status.message().contains("readonly"), "{status:?}");
    session.rollback().await;
    assert_not_created(&attached_file, "ATTACH in a session");

    // Nothing was written; the next caller's connection is writable again.
    assert_eq!(app.count("t").await, 0);
    assert_eq!(
        one_row(&app, "PRAGMA query_only").await,
        [Kind::IntValue(0)]
    );
    app.run("INSERT INTO t VALUES (2)").await;
    assert_eq!(app.count("t").await, 1);
    assert_still_serving(&app).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_sqlite_pragmas_that_only_read_still_work() {
    let Some(app) = one_connection_app(Backend::Sqlite).await else {
        return;
    };
    app.run("CREATE TABLE t (id INTEGER PRIMARY KEY, label TEXT)")
        .await;
    app.run("CREATE INDEX t_label ON t (label)").await;
    let reads = [
        ("PRAGMA table_info(t)", 2),
        ("PRAGMA main.table_info(t)", 2),
        ("PRAGMA table_xinfo('t')", 2),
        ("pragma TABLE_INFO ( t )", 2),
        ("PRAGMA index_list(t)", 1),
        ("PRAGMA index_info(t_label)", 1),
        ("PRAGMA foreign_key_list(t)", 0),
        ("PRAGMA journal_mode", 1),
        ("PRAGMA user_version", 1),
        ("PRAGMA query_only", 1),
        ("PRAGMA integrity_check", 1),
        ("SELECT name FROM pragma_table_info('t')", 2),
    ];
    for (sql, rows) in reads {
        for via in EVERY_CALL {
            let found = call(&app, via, sql)
                .await
                .unwrap_or_else(|status| panic!("{sql:?} via {via:?} reads: {status:?}"));
            assert_eq!(found.len(), rows, "{sql:?} via {via:?}: {found:?}");
        }
    }
    assert_eq!(
        one_row(&app, "PRAGMA journal_mode").await,
        [Kind::TextValue("wal".into())]
    );
    // In a session too.
    let mut session = Session::begin_as(&app, pb::IsolationLevel::Unspecified, true).await;
    let columns = session
        .query("PRAGMA table_info(t)")
        .await
        .expect("a session reads table_info");
    assert_eq!(columns.len(), 2);
    session.rollback().await;
    assert_still_serving(&app).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_sqlite_a_caller_cannot_load_an_extension() {
    let Some(app) = one_connection_app(Backend::Sqlite).await else {
        return;
    };
    // Code loaded into the pooled connection would stay for every later
    // caller; SQLite's SQL function is off unless the application turns
    // it on, and sqlgate does not.
    for via in EVERY_CALL {
        let status = call(&app, via, "SELECT load_extension('/nonexistent/evil')")
            .await
            .expect_err("load_extension must fail");
        assert!(
            status.message().contains("not authorized"),
            "{via:?}: {status:?}"
        );
    }
    assert_still_serving(&app).await;
    app.stop().await;
}

// ---------------------------------------------------------------------
// Holes: attacks that get past sqlgate today. Each test plays the attack
// through, asserts first what a victim would see, then the refusal.
// ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_sqlite_a_table_in_the_temp_schema_cannot_shadow_the_real_one() {
    let Some(app) = one_connection_app(Backend::Sqlite).await else {
        return;
    };
    app.run("CREATE TABLE t_shadow (id INTEGER)").await;
    app.run("INSERT INTO t_shadow VALUES (1), (2)").await;
    let mut view = DatabaseView::of(&app).await;
    let mut rows = 2;
    for attack in [
        "CREATE TABLE temp.t_shadow (id INTEGER)",
        "CREATE TABLE \"temp\".t_shadow (id INTEGER)",
        "CREATE TABLE [TEMP].t_shadow (id INTEGER)",
        "CREATE VIEW temp.t_shadow AS SELECT 1 AS id WHERE 0",
    ] {
        let outcome = call(&app, Via::Execute, attack).await;
        // The victim reads and writes t_shadow.
        let seen = one_row(&app, "SELECT count(*) FROM t_shadow").await;
        let write = app.execute("INSERT INTO t_shadow VALUES (9)", vec![]).await;
        rows += 1;
        assert_eq!(
            (seen, write.is_ok(), view.count_rows("t_shadow").await),
            (vec![Kind::IntValue(rows - 1)], true, rows),
            "{attack:?}: the next caller read or wrote the attacker's temp object instead of \
             the real table"
        );
        let status = outcome.expect_err("a temp object must be refused");
        assert_refused(&status, CONFINED, attack);
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_sqlite_statements_cannot_hide_behind_a_trigger_like_create() {
    let Some(app) = one_connection_app(Backend::Sqlite).await else {
        return;
    };
    app.run("CREATE TABLE t (id INTEGER)").await;
    let attacks = [
        // A table named trigger with a column named begin.
        "CREATE TABLE trigger (begin INTEGER); PRAGMA query_only = ON",
        // A real trigger whose body names a column begin.
        "CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1 AS begin; END; \
         PRAGMA query_only = ON",
    ];
    for attack in attacks {
        let outcome = call(&app, Via::Execute, attack).await;
        // The next caller writes.
        let write = app.execute("INSERT INTO t VALUES (1)", vec![]).await;
        assert!(
            write.is_ok(),
            "{attack:?}: the next caller cannot write, the connection was left query_only: \
             {write:?}"
        );
        let status = outcome.expect_err("the hidden PRAGMA must be refused");
        assert_refused(&status, CONFINED, attack);
    }
    within(WAIT, "the pool still serves", assert_still_serving(&app)).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_sqlite_a_read_only_session_cannot_hide_a_pragma_behind_a_trigger() {
    let Some(app) = one_connection_app(Backend::Sqlite).await else {
        return;
    };
    app.run("CREATE TABLE t (id INTEGER)").await;
    // Any trigger will do; its name is in sqlite_master for all to read.
    app.run("CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; END")
        .await;
    let mut session = Session::begin_as(&app, pb::IsolationLevel::Unspecified, true).await;
    let attack = "CREATE TRIGGER IF NOT EXISTS tr AFTER INSERT ON t BEGIN SELECT 1 AS begin; END; \
                  PRAGMA query_only = OFF; INSERT INTO t VALUES (1)";
    let outcome = session.query(attack).await;
    let _ = session.query("PRAGMA query_only = ON").await;
    session.commit().await;
    assert_eq!(
        app.count("t").await,
        0,
        "a read-only session wrote a row ({outcome:?})"
    );
    let status = outcome.expect_err("the hidden PRAGMA must be refused");
    assert_refused(&status, CONFINED, attack);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "leak (minor): last_insert_rowid() and total_changes() of the previous caller's \
            statements stay on the pooled connection and the next caller reads them"]
async fn isolation_sqlite_the_next_caller_cannot_read_the_last_rowid() {
    let Some(app) = one_connection_app(Backend::Sqlite).await else {
        return;
    };
    app.run("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)")
        .await;
    // Another caller inserts.
    app.run("INSERT INTO t (id, v) VALUES (42, 1)").await;
    let next = one_row(&app, "SELECT last_insert_rowid()").await;
    assert_ne!(
        next,
        [Kind::IntValue(42)],
        "the next caller reads the previous caller's rowid"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_sqlite_statements_cannot_hide_behind_a_tcl_style_parameter() {
    use crate::helpers::v;
    let Some(app) = one_connection_app(Backend::Sqlite).await else {
        return;
    };
    app.run("CREATE TABLE t (id INTEGER)").await;

    // A call: the hidden PRAGMA leaves the pooled connection query_only.
    let attack = "SELECT $1(') ; PRAGMA query_only = ON ; SELECT '1'";
    let outcome = app.execute(attack, vec![v::int(1)]).await;
    let write = app.execute("INSERT INTO t VALUES (1)", vec![]).await;
    assert!(
        write.is_ok(),
        "the next caller cannot write: the connection was left query_only ({outcome:?}): \
         {write:?}"
    );
    let status = outcome.expect_err("the hidden PRAGMA must be refused");
    assert_refused(&status, CONFINED, attack);

    // A read-only session: the hidden PRAGMA lifts read-only, and it writes.
    let mut session = Session::begin_as(&app, pb::IsolationLevel::Unspecified, true).await;
    let attack = "SELECT $1(') ; PRAGMA query_only = OFF ; INSERT INTO t VALUES (2) ; SELECT '1'";
    let outcome = session.execute(&app, 1, attack, vec![v::int(1)]).await;
    session.commit().await;
    let written = call(&app, Via::Execute, "SELECT count(*) FROM t WHERE id = 2")
        .await
        .expect("count");
    assert_eq!(
        written,
        [[Kind::IntValue(0)]],
        "a read-only session wrote a row ({outcome:?})"
    );
    app.stop().await;
}
