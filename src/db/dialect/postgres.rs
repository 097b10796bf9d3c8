//! PostgreSQL: `SET LOCAL statement_timeout` bounds a call on the server,
//! `pg_cancel_backend` over the control pool cancels, and a closed
//! connection stops its statement (`client_connection_check_interval`).

use std::{str::FromStr, sync::Arc, time::Duration};

use sea_orm::{ConnectOptions, DatabaseConnection};
use sqlx::{AssertSqlSafe, Executor, Pool, Postgres, Row, postgres::PgConnectOptions};

use super::{
    Dialect, Isolation, PoolHook, RECOVERY_TIMEOUT, control_options, invalid_url, run_cancel,
};
use crate::{
    db::{Backend, Deadline, Interrupt},
    error::Error,
};

/// How often PostgreSQL checks, while a statement runs, whether sqlgate
/// closed the connection (PostgreSQL 14+); a closed connection stops the
/// statement within this interval.
const CLIENT_CHECK_INTERVAL_MS: u64 = 25;

impl Dialect for Postgres {
    const BACKEND: Backend = Backend::Postgres;

    const ONE_WRITE_IS_ITS_OWN_TRANSACTION: bool = true;

    fn closing_stops_statements(conn: &sqlx::PgConnection) -> bool {
        // `client_connection_check_interval` (set with each connection)
        // exists from PostgreSQL 14.
        conn.server_version_num()
            .is_some_and(|version| version >= 140_000)
    }

    fn configure(
        options: &mut ConnectOptions,
        hook: PoolHook<Self>,
        _single_connection: bool,
        statement_cache_capacity: usize,
    ) {
        options.map_sqlx_postgres_pool_opts(hook);
        options.map_sqlx_postgres_opts(move |opts| {
            opts.statement_cache_capacity(statement_cache_capacity)
        });
    }

    fn typed_pool(connection: &DatabaseConnection) -> Pool<Postgres> {
        connection.get_postgres_connection_pool().clone()
    }

    fn connection_setup(longest: Duration) -> Vec<String> {
        vec![
            format!("SET statement_timeout = {}", longest.as_millis().max(1)),
            // Unknown before PostgreSQL 14; a failure here is only logged.
            format!("SET client_connection_check_interval = {CLIENT_CHECK_INTERVAL_MS}"),
        ]
    }

    fn reset_sql(longest: Duration) -> Option<String> {
        // What DISCARD ALL does, minus DEALLOCATE ALL (sqlx's cached
        // statements stay) and minus DISCARD PLANS (nothing to undo);
        // RESET ALL also undoes sqlgate's own SETs, so they follow.
        let mut reset = "RESET ALL; RESET SESSION AUTHORIZATION; RESET ROLE; CLOSE ALL; \
                         UNLISTEN *; SELECT pg_advisory_unlock_all(); DISCARD TEMP; \
                         DISCARD SEQUENCES; "
            .to_owned();
        for statement in Self::connection_setup(longest) {
            reset.push_str(&statement);
            reset.push_str("; ");
        }
        Some(reset)
    }

    fn verify_prepared_sql(cached: usize) -> Option<String> {
        // Divides by zero unless the connection holds exactly sqlx's
        // statements and none a caller prepared.
        Some(format!(
            "SELECT 1 / (count(*) FILTER (WHERE NOT from_sql) = {cached} \
             AND count(*) FILTER (WHERE from_sql) = 0)::int FROM pg_prepared_statements"
        ))
    }

    const SUPERUSER_PROBE: Option<&'static str> = Some(
        "SELECT 1 FROM pg_roles WHERE rolname = current_user \
         AND (rolsuper OR pg_has_role(current_user, 'pg_execute_server_program', 'MEMBER'))",
    );

    // Inside an explicit transaction now() is when it began; outside, it
    // is this very statement's start.
    const IN_TRANSACTION_PROBE: Option<&'static str> =
        Some("SELECT 1 WHERE now() <> statement_timestamp()");

    fn begin_sql(deadline: &Deadline, read_only: bool) -> String {
        let timeout = deadline.remaining_millis();
        if read_only {
            // As for a read-only session: the first query fixes the
            // transaction as read-only, so that not even a `SET
            // TRANSACTION READ WRITE` (which sqlgate refuses anyway) could
            // lift it. Same round trip.
            format!("BEGIN READ ONLY; SET LOCAL statement_timeout = {timeout}; SELECT 1")
        } else {
            format!("BEGIN; SET LOCAL statement_timeout = {timeout}")
        }
    }

    async fn arm(
        conn: &mut sqlx::PgConnection,
        _interrupt: &Arc<Interrupt>,
        want_server_id: bool,
    ) -> Result<Option<i64>, sqlx::Error> {
        if !want_server_id {
            // Closing the connection stops the statement (client check
            // interval); no round trip needed on the hot path.
            return Ok(None);
        }
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(conn)
            .await?;
        Ok(Some(pid.into()))
    }

    fn errors_abort_transaction() -> bool {
        true
    }

    fn session_begin(isolation: Isolation, read_only: bool) -> String {
        let mut begin = "BEGIN".to_owned();
        if let Some(level) = isolation.sql() {
            begin.push_str(" ISOLATION LEVEL ");
            begin.push_str(level);
        }
        if read_only {
            // A first query fixes the transaction as read-only: after it,
            // no SET TRANSACTION READ WRITE (in whatever form) can lift it.
            begin.push_str(" READ ONLY; SELECT 1");
        }
        begin
    }

    async fn open_session(
        conn: &mut sqlx::PgConnection,
        mut begin: String,
        want_server_id: bool,
    ) -> Result<Option<i64>, sqlx::Error> {
        if !want_server_id {
            conn.execute(sqlx::raw_sql(AssertSqlSafe(begin))).await?;
            return Ok(None);
        }
        // A REPEATABLE READ or SERIALIZABLE transaction takes its snapshot
        // at its first query: asked after BEGIN, the pid query would take
        // it when the session opens instead of at the caller's first
        // statement (and hold back vacuum while the session idles). Such
        // sessions ask in a round trip of their own, before BEGIN (asked
        // before it in the same message, the query would open an implicit
        // transaction that BEGIN's isolation level could no longer set).
        if begin.contains("REPEATABLE READ") || begin.contains("SERIALIZABLE") {
            let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
                .fetch_one(&mut *conn)
                .await?;
            conn.execute(sqlx::raw_sql(AssertSqlSafe(begin))).await?;
            return Ok(Some(i64::from(pid)));
        }
        // Otherwise in the BEGIN's own round trip (simple protocol, one
        // message), rather than a prepared `SELECT pg_backend_pid()` of its
        // own before it; a READ COMMITTED transaction takes a snapshot per
        // statement, so nothing is held. (A read-only session's BEGIN is
        // followed by a query anyway, which fixes it as read-only.)
        begin.push_str("; SELECT pg_backend_pid()");
        let rows = conn.fetch_all(sqlx::raw_sql(AssertSqlSafe(begin))).await?;
        let pid: Option<i32> = rows.last().map(|row| row.try_get(0)).transpose()?;
        Ok(pid.map(i64::from))
    }

    async fn disarm(_conn: &mut sqlx::PgConnection) {}

    fn control_pool(url: &str) -> Result<Option<Pool<Postgres>>, Error> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|_| invalid_url())?
            .application_name("sqlgate");
        Ok(Some(control_options().connect_lazy_with(options)))
    }

    async fn cancel_statement(pool: &Pool<Postgres>, id: i64) -> bool {
        run_cancel(
            pool,
            format!("SELECT pg_cancel_backend({id})"),
            "pg_cancel_backend",
        )
        .await
    }

    async fn recover(conn: &mut sqlx::PgConnection, in_transaction: bool) -> bool {
        // A cancel that lands after the statement finished is ignored by an
        // idle backend, so it cannot hit the next call on this connection.
        // sqlx reads the cancelled statement's leftovers off the wire
        // before it sends anything new.
        let clean = async {
            // The first read gives the cancelled statement's error (57014);
            // the next ones reach the point where the backend waits for a
            // new command.
            let mut idle = false;
            for _ in 0..3 {
                match sqlx::Connection::ping(&mut *conn).await {
                    Ok(()) => {
                        idle = true;
                        break;
                    }
                    Err(sqlx::Error::Database(_)) => continue,
                    Err(_) => return false,
                }
            }
            if idle && in_transaction {
                idle = conn.execute("ROLLBACK").await.is_ok();
            }
            idle
        };
        tokio::time::timeout(RECOVERY_TIMEOUT, clean)
            .await
            .unwrap_or(false)
    }
}
