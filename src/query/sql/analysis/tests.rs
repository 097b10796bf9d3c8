use super::*;
use crate::db::Backend::{MySql, Postgres, Sqlite};

fn of(sql: &str, backend: Backend) -> Analysis {
    Analysis::of(sql, backend)
}

fn refused(sql: &str, backend: Backend) -> Refusal {
    of(sql, backend)
        .refusal
        .unwrap_or_else(|| panic!("{sql:?} must be refused on {backend:?}"))
}

#[test]
fn point_selects_and_plain_writes_leave_nothing() {
    for backend in [Postgres, MySql, Sqlite] {
        for sql in [
            "SELECT id, name FROM items WHERE id = $1",
            "select count(*), max(id) from items",
            "SELECT now(), lower(name) FROM items",
            "INSERT INTO items (id, name) VALUES ($1, $2)",
            "INSERT INTO public.items (id) VALUES (1)",
            "UPDATE items SET name = upper($1) WHERE id IN (1, 2)",
            "DELETE FROM items WHERE EXISTS (SELECT 1 FROM t WHERE t.id = items.id)",
            "CREATE TABLE IF NOT EXISTS t (id bigint PRIMARY KEY, name varchar(20))",
            "SELECT CAST($1 AS numeric(10, 2)), coalesce(a, b) FROM t",
            "WITH x AS (SELECT 1) SELECT * FROM x",
        ] {
            let analysis = of(sql, backend);
            assert!(!analysis.leaves_state, "{sql:?} on {backend:?}");
            assert_eq!(analysis.refusal, None, "{sql:?} on {backend:?}");
        }
    }
    assert!(
        !of(
            "INSERT INTO items (id) VALUES (1) ON CONFLICT (id) DO NOTHING",
            Postgres
        )
        .leaves_state
    );
    assert!(of("SELECT id FROM items WHERE id = $1", Postgres).plain_read);
    assert!(!of("INSERT INTO t VALUES (1)", Postgres).plain_read);
    assert!(
        !of(
            "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
            Postgres
        )
        .plain_read
    );
}

#[test]
fn functions_not_known_to_be_pure_leave_state() {
    for sql in [
        "SELECT set_config('search_path', 'evil', false)",
        "SELECT pg_advisory_lock(1)",
        "SELECT pg_catalog.pg_advisory_lock(1)",
        "SELECT public.lower(name) FROM t",
        "SELECT my_function()",
        "SELECT \"set_config\"('a', 'b', false)",
        "SELECT 1 FROM t WHERE f (x)",
        "DO $$ BEGIN PERFORM 1; END $$",
        "CALL p()",
        "CREATE TEMP TABLE items (id int)",
        "SELECT * INTO TEMP t FROM items",
        "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
        "SET LOCAL search_path = x; SELECT f()",
        "VACUUM_SOMETHING_UNKNOWN",
    ] {
        assert!(of(sql, Postgres).leaves_state, "{sql:?}");
    }
    for sql in [
        "SELECT GET_LOCK('x', 0)",
        "SELECT @x := 1",
        "SELECT 1 /*!50000 , GET_LOCK('x', 0) */",
        "SELECT 1 --GET_LOCK('x',0)\n",
        "CREATE TEMPORARY TABLE t (id int)",
        "SELECT LAST_INSERT_ID(5)",
        "CALL p()",
    ] {
        assert!(of(sql, MySql).leaves_state, "{sql:?}");
    }
    // Strings and comments hide nothing the database would run.
    assert!(!of("SELECT 'pg_advisory_lock(1)' -- set_config(\n", Postgres).leaves_state);
    assert!(!of("SELECT $q$ set_config() $q$", Postgres).leaves_state);
    assert!(of(r"SELECT E'\'', pg_advisory_lock(1), 'x'", Postgres).leaves_state);
    assert!(of(r"SELECT '\', pg_advisory_lock(1), '\'", Postgres).leaves_state);
}

#[test]
fn session_state_is_refused_with_set_local_allowed() {
    for sql in [
        "SET search_path = evil",
        "set role nobody",
        "SET SESSION AUTHORIZATION nobody",
        "RESET ALL",
        "  /* hi */ SET application_name = 'x'",
    ] {
        assert!(
            matches!(refused(sql, Postgres), Refusal::SessionState { .. }),
            "{sql:?}"
        );
    }
    assert_eq!(of("SET LOCAL search_path = x", Postgres).refusal, None);
    for sql in [
        "SET @x = 1",
        "SET SESSION foreign_key_checks = 0",
        "USE other",
    ] {
        assert!(
            matches!(refused(sql, MySql), Refusal::SessionState { .. }),
            "{sql:?}"
        );
    }
    assert_eq!(
        of("SET STATEMENT max_join_size = 10 FOR SELECT 1", MySql).refusal,
        None
    );
}

#[test]
fn transaction_control_is_refused_in_every_form() {
    for (sql, backend) in [
        ("BEGIN", Postgres),
        ("begin transaction isolation level serializable", Postgres),
        ("START TRANSACTION", Postgres),
        ("COMMIT", Postgres),
        ("commit and chain", Postgres),
        ("END", Postgres),
        ("ABORT", Postgres),
        ("ROLLBACK", Postgres),
        ("PREPARE TRANSACTION 'x'", Postgres),
        ("SET TRANSACTION READ WRITE", Postgres),
        (
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
            Postgres,
        ),
        ("START TRANSACTION", MySql),
        ("COMMIT", MySql),
        ("XA START 'x'", MySql),
        ("SET autocommit = 0", MySql),
        ("SET SESSION TRANSACTION READ WRITE", MySql),
        ("BEGIN", Sqlite),
        ("COMMIT", Sqlite),
        ("END TRANSACTION", Sqlite),
        ("SELECT 1; COMMIT", Sqlite),
    ] {
        assert!(
            matches!(refused(sql, backend), Refusal::TransactionControl { .. }),
            "{sql:?} on {backend:?}"
        );
    }
    // Savepoints stay inside the transaction sqlgate began.
    for sql in [
        "SAVEPOINT a",
        "ROLLBACK TO SAVEPOINT a",
        "RELEASE SAVEPOINT a",
    ] {
        assert_eq!(of(sql, Postgres).refusal, None, "{sql:?}");
    }
}

#[test]
fn objects_sqlgate_cannot_undo_are_refused() {
    for sql in [
        "PREPARE p AS SELECT 1",
        "EXECUTE p",
        "DEALLOCATE ALL",
        "DISCARD ALL",
        "LISTEN channel",
        "UNLISTEN *",
        "LOAD 'x'",
    ] {
        assert!(
            matches!(refused(sql, Postgres), Refusal::ConnectionObject { .. }),
            "{sql:?}"
        );
    }
    for sql in [
        "PREPARE s FROM 'SELECT 1'",
        "LOCK TABLES t WRITE",
        "HANDLER t OPEN",
    ] {
        assert!(
            matches!(refused(sql, MySql), Refusal::ConnectionObject { .. }),
            "{sql:?}"
        );
    }
    assert_eq!(refused("COPY t FROM STDIN", Postgres), Refusal::Copy);
    assert_eq!(
        refused("copy (select 1) to stdout", Postgres),
        Refusal::Copy
    );
}

#[test]
fn own_settings_are_refused_even_locally_and_through_set_config() {
    for sql in [
        "SET LOCAL statement_timeout = 0",
        "SET client_connection_check_interval = 0",
        "SELECT set_config('statement_timeout', '0', true)",
        "select SET_CONFIG('Statement_Timeout', '0', false)",
    ] {
        assert!(
            matches!(refused(sql, Postgres), Refusal::OwnSetting { .. }),
            "{sql:?}"
        );
    }
    for sql in [
        "SET SESSION max_statement_time = 0",
        "SET SESSION sql_mode = ''",
        "SET time_zone = '+05:00'",
        "SET NAMES latin1",
        "SET CHARACTER SET latin1",
        "SET STATEMENT tx_read_only = 0 FOR CREATE TABLE t (x INT)",
        "SET STATEMENT transaction_read_only=0 FOR CALL p()",
        "SET SESSION tx_read_only = 0",
    ] {
        assert!(
            matches!(refused(sql, MySql), Refusal::OwnSetting { .. }),
            "{sql:?}"
        );
    }
    assert!(matches!(
        refused("SET client_encoding = 'LATIN1'", Postgres),
        Refusal::OwnSetting { .. }
    ));
}

#[test]
fn sqlite_stays_inside_its_file() {
    for sql in [
        "ATTACH '/tmp/x.db' AS x",
        "DETACH x",
        "VACUUM INTO '/tmp/copy.db'",
        "PRAGMA writable_schema = ON",
        "PRAGMA query_only = OFF",
        "PRAGMA user_version = 5",
        "PRAGMA user_version(5)",
        "pragma main.journal_mode = off",
        "CREATE TEMP TABLE t (a)",
        "SELECT 1; ATTACH 'x' AS y",
    ] {
        assert!(
            matches!(refused(sql, Sqlite), Refusal::Confinement { .. }),
            "{sql:?}"
        );
    }
    for sql in [
        "PRAGMA table_info(items)",
        "PRAGMA main.table_info(items)",
        "PRAGMA user_version",
        "VACUUM",
        "CREATE TRIGGER t AFTER INSERT ON a BEGIN UPDATE b SET n = n + 1; END",
    ] {
        assert_eq!(of(sql, Sqlite).refusal, None, "{sql:?}");
    }
}

#[test]
fn holes_found_by_attack_are_closed() {
    // MariaDB's SET STATEMENT … FOR is read past FOR.
    for sql in [
        "SET STATEMENT max_join_size = 1 FOR COMMIT",
        "SET STATEMENT max_join_size = 1 FOR START TRANSACTION",
    ] {
        assert!(
            matches!(refused(sql, MySql), Refusal::TransactionControl { .. }),
            "{sql:?}"
        );
    }
    assert!(
        of(
            "SET STATEMENT max_join_size = 1 FOR CREATE TABLE t (a int)",
            MySql
        )
        .implicit_commit
    );
    assert!(of("SET STATEMENT max_join_size = 1 FOR CALL p()", MySql).calls_procedure);
    assert!(matches!(
        refused("SET STATEMENT time_zone = '+01:00' FOR SELECT 1", MySql),
        Refusal::OwnSetting { .. }
    ));
    assert!(
        of(
            "SET STATEMENT max_join_size = 1 FOR SELECT GET_LOCK('x', 0)",
            MySql
        )
        .leaves_state
    );
    // System variables without a scope word.
    assert!(matches!(
        refused("SET @@autocommit = 0", MySql),
        Refusal::TransactionControl { .. }
    ));
    for sql in [
        "SET GLOBAL max_connections = 1",
        "SET @@global.max_connections = 1",
    ] {
        assert!(
            matches!(refused(sql, MySql), Refusal::ConnectionObject { .. }),
            "{sql:?}"
        );
    }
    assert!(matches!(
        refused("KILL 42", MySql),
        Refusal::ConnectionObject { .. }
    ));
    assert!(matches!(
        refused("SELECT pg_terminate_backend(42)", Postgres),
        Refusal::ConnectionObject { .. }
    ));
    assert!(matches!(
        refused("ALTER SYSTEM SET work_mem = '1GB'", Postgres),
        Refusal::ConnectionObject { .. }
    ));
    // Names another backend's built-in has, keywords that are not reserved
    // on MySQL, and identifiers that start with a digit are calls.
    for sql in [
        "SELECT initcap('x')",
        "SELECT include(1)",
        "SELECT filter(1)",
        "SELECT 9lock(1)",
    ] {
        assert!(of(sql, MySql).leaves_state, "{sql:?}");
    }
    // SQLite: temp objects through the temp schema, trigger bodies that
    // hide statements, TCL-style parameters, and several statements.
    for sql in [
        "CREATE TABLE temp.x (a)",
        "CREATE TABLE \"temp\".x (a)",
        "CREATE VIEW [TEMP].v AS SELECT 1",
    ] {
        assert!(
            matches!(refused(sql, Sqlite), Refusal::Confinement { .. }),
            "{sql:?}"
        );
    }
    for sql in [
        "CREATE TABLE trigger (begin INTEGER); PRAGMA query_only = ON",
        "CREATE TRIGGER t AFTER INSERT ON a BEGIN SELECT 1 AS begin; END; PRAGMA query_only = OFF",
        "SELECT $1(') ; PRAGMA query_only = ON ; SELECT '1'",
        "SELECT :a(') ; ATTACH 'x' AS y ; SELECT '1'",
        "SELECT 1; SELECT 2",
    ] {
        assert!(of(sql, Sqlite).refusal.is_some(), "{sql:?}");
    }
    for sql in ["SELECT :a", "SELECT $1, :b", "SELECT @a", "SELECT $a"] {
        assert_eq!(
            of(sql, Sqlite).refusal,
            Some(Refusal::NamedParameters),
            "{sql:?}"
        );
    }
    assert_eq!(
        of(
            "CREATE TRIGGER t AFTER INSERT ON a BEGIN SELECT CASE WHEN 1 THEN 2 END; END",
            Sqlite
        )
        .refusal,
        None
    );
}

#[test]
fn mysql_ddl_commits_implicitly() {
    assert!(of("CREATE TABLE t (a int)", MySql).implicit_commit);
    assert!(of("TRUNCATE t", MySql).implicit_commit);
    assert!(!of("CREATE TEMPORARY TABLE t (a int)", MySql).implicit_commit);
    assert!(!of("INSERT INTO t VALUES (1)", MySql).implicit_commit);
    assert!(!of("CREATE TABLE t (a int)", Postgres).implicit_commit);
}

#[test]
fn parameters_follow_each_backends_lexer() {
    assert_eq!(of(r"select '\' as a, $1::text", Postgres).parameters, 1);
    assert_eq!(of("select /* /* */ $1 */ $2", Postgres).parameters, 2);
    assert_eq!(of("SELECT $1, $2, $1", Postgres).parameters, 2);
    assert_eq!(
        of("SELECT '$4', \"$5\" -- $6\n, $1", Postgres).parameters,
        1
    );
    assert_eq!(of("SELECT '{}'::jsonb ? 'a'", Postgres).parameters, 0);
    assert_eq!(of("SELECT ?, ?", Sqlite).parameters, 2);
    assert_eq!(of("SELECT ?2, ?1", Sqlite).parameters, 2);
    assert_eq!(of("SELECT $1, '?'", Sqlite).parameters, 1);
    assert_eq!(of(r"SELECT 'it\'s ?', ?", MySql).parameters, 1);
}

#[test]
fn empty_texts_hold_no_statement() {
    for sql in ["", " ;; ", "-- x", "/* x */"] {
        assert!(Analysis::of(sql, Postgres).is_empty(), "{sql:?}");
    }
    assert!(!Analysis::of("select 1", Postgres).is_empty());
}

proptest::proptest! {
    #[test]
    fn never_panics(sql in "\\PC{0,80}") {
        for backend in [Postgres, MySql, Sqlite] {
            let _ = Analysis::of(&sql, backend);
        }
    }

    /// Whatever precedes it, a refused statement in a comment or string
    /// is not refused, and one after `;` (SQLite runs them all) is.
    #[test]
    fn hidden_text_is_inert_and_trailing_statements_count(prefix in "[a-z ]{0,12}") {
        let commented = format!("SELECT 1 /* {prefix}; ATTACH 'x' AS y */");
        proptest::prop_assert_eq!(Analysis::of(&commented, Sqlite).refusal, None);
        let trailing = format!("SELECT '{prefix}'; ATTACH 'x' AS y");
        proptest::prop_assert!(Analysis::of(&trailing, Sqlite).refusal.is_some());
    }
}

#[test]
fn a_single_write_is_one_plain_write_that_returns_no_rows() {
    for sql in [
        "INSERT INTO items (id, name) VALUES ($1, $2)",
        "update items SET amount = amount + 1 WHERE id = $1",
        "DELETE FROM items WHERE id = $1;",
        "/* why */ INSERT INTO items (id) VALUES (1) ON CONFLICT (id) DO NOTHING",
        "MERGE INTO items USING src ON items.id = src.id WHEN MATCHED THEN DELETE",
        "UPDATE items SET note = 'returning' WHERE id = 1",
        "UPDATE items SET \"returning\" = 1 WHERE id = 1",
    ] {
        assert!(of(sql, Postgres).single_write, "{sql:?}");
    }
    for sql in [
        // Rows come back: something after the write could still fail it.
        "INSERT INTO items (id) VALUES (1) RETURNING id",
        "delete from items returning *",
        // Reads, and writes that do not start as one.
        "SELECT id FROM items",
        "WITH gone AS (DELETE FROM items RETURNING id) SELECT count(*) FROM gone",
        "WITH x AS (SELECT 1) UPDATE items SET id = id",
        "SELECT archive(42)",
        // Not atomic on its own, or not only data.
        "INSERT INTO items (id) VALUES (1); INSERT INTO items (id) VALUES (2)",
        "CALL archive(42)",
        "DO $$ BEGIN UPDATE items SET id = id; COMMIT; END $$",
        "VACUUM items",
        "CREATE TABLE t (id int)",
        "COMMIT",
        "UPDATE items SET id = set_config('search_path', 'x', false)::int",
        "",
    ] {
        assert!(!of(sql, Postgres).single_write, "{sql:?}");
    }
}
