//! Backend differences outside of values: how the pool is configured, how
//! a transaction is opened with a database-side time limit, what a
//! connection needs before a call with a deadline, and how a running
//! statement is cancelled from another connection (dropping a sqlx future
//! does not stop the query). One impl per backend, in the files below.

mod mysql;
mod postgres;
mod sqlite;

use std::{sync::Arc, time::Duration};

use futures::FutureExt;
use sea_orm::{ConnectOptions, DatabaseConnection};
use sqlx::{AssertSqlSafe, Executor, Pool, pool::PoolOptions};

use super::{Backend, CLEANUP_TIMEOUT, Deadline, Interrupt};
use crate::error::Error;

/// How long a cancelled connection may take to come back idle before it is
/// closed instead; a backend answers a cancel within milliseconds.
const RECOVERY_TIMEOUT: Duration = Duration::from_millis(500);

/// What the pool builder adds to every backend's sqlx pool options
/// (per-connection setup, counting opened connections).
pub(crate) type PoolHook<DB> = Box<dyn Fn(PoolOptions<DB>) -> PoolOptions<DB> + Send + Sync>;

/// What sqlgate needs to know about a backend.
pub(crate) trait Dialect: sqlx::Database {
    /// Which backend this is, for logs and `PoolStats.backend`.
    const BACKEND: Backend;

    /// Whether a plain read may run outside a transaction. SQLite runs
    /// every unit of work inside one (BEGIN costs nothing in-process).
    const PLAIN_READS_OUTSIDE_TRANSACTION: bool = true;

    /// Whether one write sent on its own is a transaction by itself:
    /// committed when it succeeds, rolled back when it fails, with nothing
    /// left open either way. Where it is, a session that is only that
    /// write (a begin carrying it with `commit_after`, default options)
    /// runs it without BEGIN and COMMIT: one round trip to the database
    /// instead of three. PostgreSQL runs a statement and its Sync in an
    /// implicit transaction.
    const ONE_WRITE_IS_ITS_OWN_TRANSACTION: bool = false;

    /// Whether closing `conn` stops a statement running on it at once on
    /// the server (rather than at its end or its `statement_timeout`): a
    /// write that is its own transaction is run so only where it does.
    fn closing_stops_statements(_conn: &Self::Connection) -> bool {
        false
    }

    /// Whether `url` names a database that exists once per connection
    /// (SQLite `:memory:`): the pool then keeps exactly one, forever.
    fn single_connection(url: &str) -> bool {
        let _ = url;
        false
    }

    /// Sets this backend's options on sea-orm's: the pool `hook`, the
    /// connection options sqlgate relies on, and how many prepared
    /// statements each connection caches (`statement_cache_capacity`).
    fn configure(
        options: &mut ConnectOptions,
        hook: PoolHook<Self>,
        single_connection: bool,
        statement_cache_capacity: usize,
    );

    /// The typed sqlx pool sea-orm built.
    fn typed_pool(connection: &DatabaseConnection) -> Pool<Self>;

    /// A small pool beside the main one for cancel statements, so that a
    /// cancel never waits behind a saturated main pool (`None` where
    /// cancelling is in-process). Connects lazily.
    fn control_pool(url: &str) -> Result<Option<Pool<Self>>, Error>;

    /// Statements run once on every new connection: a database-side upper
    /// bound on any statement (`longest`), and what lets the server notice
    /// a connection sqlgate closed mid-statement.
    fn connection_setup(longest: Duration) -> Vec<String>;

    /// Statements that undo whatever connection state a caller may have
    /// left (settings, roles, temp tables, cursors, `LISTEN`, session
    /// locks) and restore sqlgate's own settings (`longest`), run before a
    /// changed connection goes back to the pool. `None` where the backend
    /// cannot undo everything: such a connection is closed instead.
    fn reset_sql(longest: Duration) -> Option<String>;

    /// A statement that fails unless exactly the `cached` prepared
    /// statements sqlx knows of exist on the connection (a caller's
    /// `DEALLOCATE ALL` inside a function would break every later call).
    fn verify_prepared_sql(cached: usize) -> Option<String> {
        let _ = cached;
        None
    }

    /// A query that returns a row only while the connection is inside a
    /// transaction; `None` where there is no such question to ask.
    const IN_TRANSACTION_PROBE: Option<&'static str> = None;

    /// Opens a call's transaction, whose statements stop on the server when
    /// `deadline` passes (PostgreSQL `SET LOCAL statement_timeout`).
    /// `read_only` (a reader's call) makes the database itself refuse every
    /// write, however the statement is spelled: a data-modifying CTE, a
    /// function that writes, DDL. One round trip either way.
    fn begin_sql(deadline: &Deadline, read_only: bool) -> String;

    /// Opens a session's transaction (one round trip); `read_only` as in
    /// [`Dialect::begin_sql`].
    fn session_begin(isolation: Isolation, read_only: bool) -> String;

    /// Runs `begin` (from [`Dialect::session_begin`]) and, when
    /// `want_server_id` and the backend can, learns the connection's
    /// server id for cancelling in the same round trip, so that a session
    /// does not spend one on it in [`Dialect::arm`]. `Ok(None)` where it
    /// did not learn it.
    fn open_session(
        conn: &mut Self::Connection,
        begin: String,
        want_server_id: bool,
    ) -> impl Future<Output = Result<Option<i64>, sqlx::Error>> + Send;

    /// What undoes the connection-level part of a read-only transaction
    /// (MySQL's session characteristic, SQLite's `query_only`) before the
    /// connection goes back to the pool; `None` where read-only lasts only
    /// as long as the transaction (PostgreSQL). Sent with the COMMIT when
    /// there is one, so that it costs no round trip of its own.
    const READ_ONLY_UNDO: Option<&'static str> = None;

    /// Whether a transaction survives one of its statements being
    /// interrupted. SQLite may roll the whole transaction back by itself
    /// and carry on in autocommit, so an interrupted SQLite session ends.
    fn transaction_survives_interrupt() -> bool {
        true
    }

    /// Whether any failed statement aborts the whole transaction
    /// (PostgreSQL: later statements get 25P02 until rollback).
    fn errors_abort_transaction() -> bool {
        false
    }

    /// Readies `conn` for a call bounded by `deadline` and returns the
    /// server-side connection id needed to cancel it (`None` where closing
    /// the connection is enough, or the backend is in-process).
    fn arm(
        conn: &mut Self::Connection,
        interrupt: &Arc<Interrupt>,
        want_server_id: bool,
    ) -> impl Future<Output = Result<Option<i64>, sqlx::Error>> + Send;

    /// Undoes [`Dialect::arm`] before the connection goes back to the pool.
    fn disarm(conn: &mut Self::Connection) -> impl Future<Output = ()> + Send;

    /// Asks the server, over a control connection, to cancel whatever
    /// connection `id` is running. True if the server took the request.
    fn cancel_statement(pool: &Pool<Self>, id: i64) -> impl Future<Output = bool> + Send;

    /// After a cancel, brings `conn` back to a clean idle state (reads what
    /// the cancelled statement left on the wire, rolls back its
    /// transaction) so that it can go back to the pool instead of being
    /// reopened. False where that is not safe: the connection is closed.
    fn recover(
        conn: &mut Self::Connection,
        in_transaction: bool,
    ) -> impl Future<Output = bool> + Send {
        let _ = (conn, in_transaction);
        async { false }
    }

    /// A query that returns a row when sqlgate's database user can do
    /// anything (PostgreSQL superuser, MySQL `SUPER` or `FILE`): then a
    /// caller can too (`COPY … TO PROGRAM`, reading any file), and sqlgate
    /// warns at start-up. `None` where there are no users.
    const SUPERUSER_PROBE: Option<&'static str> = None;
}

/// The control pool's options: one connection kept open, a second if two
/// cancels overlap.
fn control_options<DB: sqlx::Database>() -> PoolOptions<DB> {
    PoolOptions::new()
        .max_connections(2)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(2))
}

/// The message for a URL the driver cannot parse (never the URL: it may
/// hold a password).
fn invalid_url() -> Error {
    Error::Unavailable("the database URL is invalid".to_owned())
}

/// Runs a cancel statement within [`CLEANUP_TIMEOUT`]; failures are
/// logged, and the result says whether it succeeded.
async fn run_cancel<'c, E: Executor<'c>>(executor: E, sql: String, what: &str) -> bool {
    let run = executor.execute(sqlx::raw_sql(AssertSqlSafe(sql)));
    match tokio::time::timeout(CLEANUP_TIMEOUT, run).await {
        Ok(Ok(_)) => true,
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "{what} failed");
            false
        }
        Err(_) => {
            tracing::warn!("{what} timed out");
            false
        }
    }
}

/// [`Dialect::open_session`] where the BEGIN learns no server id (it
/// comes from [`Dialect::arm`], or there is none).
fn plain_begin<'c, E: Executor<'c>>(
    executor: E,
    begin: String,
) -> impl Future<Output = Result<Option<i64>, sqlx::Error>> + Send + 'c {
    executor
        .execute(sqlx::raw_sql(AssertSqlSafe(begin)))
        .map(|done| done.map(|_| None))
}

/// Transaction isolation levels a session may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// The database's default.
    Default,
    /// READ UNCOMMITTED.
    ReadUncommitted,
    /// READ COMMITTED.
    ReadCommitted,
    /// REPEATABLE READ.
    RepeatableRead,
    /// SERIALIZABLE.
    Serializable,
}

impl Isolation {
    fn sql(self) -> Option<&'static str> {
        match self {
            Isolation::Default => None,
            Isolation::ReadUncommitted => Some("READ UNCOMMITTED"),
            Isolation::ReadCommitted => Some("READ COMMITTED"),
            Isolation::RepeatableRead => Some("REPEATABLE READ"),
            Isolation::Serializable => Some("SERIALIZABLE"),
        }
    }
}
