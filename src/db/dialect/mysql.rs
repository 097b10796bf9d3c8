//! MySQL and MariaDB: a server-side statement limit per connection, and
//! `KILL QUERY` over the control pool (MySQL never notices a closed client
//! mid-statement).

use std::{str::FromStr, sync::Arc, time::Duration};

use sea_orm::{ConnectOptions, DatabaseConnection};
use sqlx::{MySql, Pool, mysql::MySqlConnectOptions};

use super::{Dialect, Isolation, PoolHook, control_options, invalid_url, plain_begin, run_cancel};
use crate::{
    db::{Backend, Deadline, Interrupt},
    error::Error,
};

impl Dialect for MySql {
    const BACKEND: Backend = Backend::MySql;

    fn configure(
        options: &mut ConnectOptions,
        hook: PoolHook<Self>,
        _single_connection: bool,
        statement_cache_capacity: usize,
    ) {
        options.map_sqlx_mysql_pool_opts(hook);
        // TIMESTAMP values are carried as UTC instants: a `timezone` in the
        // URL must not shift them.
        options.map_sqlx_mysql_opts(move |opts| {
            opts.timezone(Some("+00:00".to_owned()))
                .statement_cache_capacity(statement_cache_capacity)
        });
    }

    fn typed_pool(connection: &DatabaseConnection) -> Pool<MySql> {
        connection.get_mysql_connection_pool().clone()
    }

    fn connection_setup(longest: Duration) -> Vec<String> {
        vec![
            // Strict mode, whatever the server's default: a value a column
            // cannot hold (out of range, too long, not one of an ENUM's
            // members, a date outside TIMESTAMP's range, a zero date) is an
            // error, never stored truncated, as NULL, as '' or as zero.
            // STRICT_ALL_TABLES covers non-transactional tables too.
            // Appended to the server's (and sqlx's) modes, which stay —
            // except ANSI_QUOTES and NO_BACKSLASH_ESCAPES: sqlgate reads
            // statements as MySQL does by default (`"…"` a string, `\`
            // an escape), and a server default that changed that would let
            // a caller hide a statement from that reading.
            "SET SESSION sql_mode = TRIM(BOTH ',' FROM REGEXP_REPLACE(CONCAT_WS(',', \
             NULLIF(@@SESSION.sql_mode, ''), \
             'STRICT_ALL_TABLES,NO_ZERO_DATE,NO_ZERO_IN_DATE,ERROR_FOR_DIVISION_BY_ZERO'), \
             '(^|,)(ANSI_QUOTES|NO_BACKSLASH_ESCAPES|ANSI)(?=,|$)', ''))"
                .to_owned(),
            // MariaDB (seconds) and MySQL (milliseconds, SELECT only); each
            // server knows one of them.
            format!("SET SESSION max_statement_time = {}", longest.as_secs_f64()),
            format!("SET SESSION max_execution_time = {}", longest.as_millis()),
        ]
    }

    fn reset_sql(_longest: Duration) -> Option<String> {
        // User variables, session variables, temporary tables and GET_LOCK
        // locks cannot all be listed and undone in SQL (COM_RESET_CONNECTION
        // would also drop sqlx's prepared statements): close instead.
        None
    }

    // GRANTEE reads 'user'@'host'; CURRENT_USER() reads user@host.
    const SUPERUSER_PROBE: Option<&'static str> = Some(
        "SELECT 1 FROM information_schema.USER_PRIVILEGES \
         WHERE GRANTEE = CONCAT(CHAR(39), \
         REPLACE(CURRENT_USER(), '@', CONCAT(CHAR(39), '@', CHAR(39))), CHAR(39)) \
         AND PRIVILEGE_TYPE IN ('SUPER', 'FILE') LIMIT 1",
    );

    const IN_TRANSACTION_PROBE: Option<&'static str> =
        Some("SELECT 1 FROM DUAL WHERE @@in_transaction = 1");

    fn begin_sql(_deadline: &Deadline, read_only: bool) -> String {
        if read_only {
            // A read-only transaction alone is not enough on MySQL: a
            // statement that commits implicitly (DDL) or a procedure's
            // COMMIT ends it, and what follows runs read-write. The
            // session's characteristic holds past that, until
            // READ_ONLY_UNDO.
            "SET SESSION TRANSACTION READ ONLY; START TRANSACTION READ ONLY".to_owned()
        } else {
            "START TRANSACTION".to_owned()
        }
    }

    const READ_ONLY_UNDO: Option<&'static str> = Some("SET SESSION TRANSACTION READ WRITE");

    async fn arm(
        conn: &mut sqlx::MySqlConnection,
        _interrupt: &Arc<Interrupt>,
        _want_server_id: bool,
    ) -> Result<Option<i64>, sqlx::Error> {
        // MySQL never notices a closed client mid-statement: KILL QUERY needs the id.
        let id: u64 = sqlx::query_scalar("SELECT CONNECTION_ID()")
            .fetch_one(conn)
            .await?;
        Ok(i64::try_from(id).ok())
    }

    fn session_begin(isolation: Isolation, read_only: bool) -> String {
        let mut statements = Vec::new();
        if read_only {
            // See `begin_sql`: read-only past an implicit commit too.
            statements.push("SET SESSION TRANSACTION READ ONLY".to_owned());
        }
        if let Some(level) = isolation.sql() {
            // Applies to the next transaction only.
            statements.push(format!("SET TRANSACTION ISOLATION LEVEL {level}"));
        }
        statements.push(if read_only {
            "START TRANSACTION READ ONLY".to_owned()
        } else {
            "START TRANSACTION".to_owned()
        });
        statements.join("; ")
    }

    async fn open_session(
        conn: &mut sqlx::MySqlConnection,
        begin: String,
        _want_server_id: bool,
    ) -> Result<Option<i64>, sqlx::Error> {
        plain_begin(conn, begin).await
    }

    async fn disarm(_conn: &mut sqlx::MySqlConnection) {}

    fn control_pool(url: &str) -> Result<Option<Pool<MySql>>, Error> {
        let options = MySqlConnectOptions::from_str(url).map_err(|_| invalid_url())?;
        Ok(Some(control_options().connect_lazy_with(options)))
    }

    async fn cancel_statement(pool: &Pool<MySql>, id: i64) -> bool {
        // KILL takes no placeholder; `id` is an integer sqlgate read itself.
        run_cancel(pool, format!("KILL QUERY {id}"), "KILL QUERY").await
    }
    // No `recover`: a KILL QUERY that arrives after the statement finished
    // may stop the next statement on that connection, so it is closed.
}
