//! Backend differences outside of values: how a transaction is opened with a
//! database-side time limit, what a connection needs before a call with a
//! deadline, and how a running statement is cancelled from another
//! connection (dropping a sqlx future does not stop the query).

use std::time::Duration;

use sqlx::{AssertSqlSafe, Executor, MySql, Pool, Postgres, Sqlite, pool::PoolConnection};

use std::sync::Arc;

use super::{Database, Deadline, Interrupt};

/// How long sqlgate tries to reach the database to cancel a statement.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a cancelled connection may take to come back idle before it is
/// closed instead; a backend answers a cancel within milliseconds.
const RECOVERY_TIMEOUT: Duration = Duration::from_millis(500);

/// How often PostgreSQL checks, while a statement runs, whether sqlgate
/// closed the connection (PostgreSQL 14+); a closed connection stops the
/// statement within this interval.
const CLIENT_CHECK_INTERVAL_MS: u64 = 25;

/// What the executors need to know about a backend.
pub(crate) trait Dialect: sqlx::Database {
    /// Statements run once on every new connection: a database-side upper
    /// bound on any statement (`longest`), and what lets the server notice
    /// a connection sqlgate closed mid-statement.
    fn connection_setup(longest: Duration) -> Vec<String>;

    /// Opens a transaction whose statements stop on the server when
    /// `deadline` passes (PostgreSQL `SET LOCAL statement_timeout`).
    fn begin_sql(deadline: &Deadline) -> String;

    /// Statements that open a session's transaction.
    fn session_begin(isolation: Isolation, read_only: bool) -> Vec<String>;

    /// Statements that undo session-only settings before the connection
    /// goes back to the pool.
    fn session_end(read_only: bool) -> Vec<String> {
        let _ = read_only;
        Vec::new()
    }

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

    /// The pool that cancel statements go through: a small one of its own,
    /// so that a cancel never waits behind a saturated main pool.
    fn control_pool(db: &Database) -> Option<Pool<Self>>;

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
}

/// Stops what `conn` is running. Its `interrupt` is cancelled first (an
/// in-process SQLite statement stops at its next progress check, whatever
/// cut it short: its reader leaving, its deadline or shutdown). With the
/// server id, the statement is cancelled and the connection, once
/// [`Dialect::recover`]ed, goes back to the pool; otherwise (or if
/// recovery fails) it is closed, since its state is unknown.
/// `in_transaction` says whether sqlgate opened a transaction on it. Runs
/// detached when a deadline has passed, so the caller is answered first.
pub(crate) async fn abandon<DB: Dialect>(
    control: Option<Pool<DB>>,
    mut conn: PoolConnection<DB>,
    interrupt: Arc<Interrupt>,
    server_id: Option<i64>,
    in_transaction: bool,
) {
    interrupt.cancel();
    if let (Some(control), Some(id)) = (control, server_id)
        && DB::cancel_statement(&control, id).await
        && DB::recover(&mut conn, in_transaction).await
    {
        return;
    }
    // Dropping the socket closes it at once; a graceful close would first
    // wait for the statement's pending output. The server notices the
    // closed connection and stops (PostgreSQL: client_connection_check_interval).
    drop(conn.detach());
}

/// Runs `sql` within [`CLEANUP_TIMEOUT`]; failures are logged, and the
/// result says whether it succeeded.
async fn run_best_effort<'c, E: Executor<'c>>(executor: E, sql: String, what: &str) -> bool {
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

impl Dialect for Postgres {
    fn connection_setup(longest: Duration) -> Vec<String> {
        vec![
            format!("SET statement_timeout = {}", longest.as_millis().max(1)),
            // Unknown before PostgreSQL 14; a failure here is only logged.
            format!("SET client_connection_check_interval = {CLIENT_CHECK_INTERVAL_MS}"),
        ]
    }

    fn begin_sql(deadline: &Deadline) -> String {
        format!(
            "BEGIN; SET LOCAL statement_timeout = {}",
            deadline.remaining_millis()
        )
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

    fn session_begin(isolation: Isolation, read_only: bool) -> Vec<String> {
        let mut begin = "BEGIN".to_owned();
        if let Some(level) = isolation.sql() {
            begin.push_str(" ISOLATION LEVEL ");
            begin.push_str(level);
        }
        if read_only {
            begin.push_str(" READ ONLY");
        }
        vec![begin]
    }

    async fn disarm(_conn: &mut sqlx::PgConnection) {}

    fn control_pool(db: &Database) -> Option<Pool<Postgres>> {
        match db.control() {
            super::pool::ControlPool::Postgres(pool) => Some(pool.clone()),
            _ => None,
        }
    }

    async fn cancel_statement(pool: &Pool<Postgres>, id: i64) -> bool {
        run_best_effort(
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

impl Dialect for MySql {
    fn connection_setup(longest: Duration) -> Vec<String> {
        vec![
            // MariaDB (seconds) and MySQL (milliseconds, SELECT only); each
            // server knows one of them.
            format!("SET SESSION max_statement_time = {}", longest.as_secs_f64()),
            format!("SET SESSION max_execution_time = {}", longest.as_millis()),
        ]
    }

    fn begin_sql(_deadline: &Deadline) -> String {
        "START TRANSACTION".to_owned()
    }

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

    fn session_begin(isolation: Isolation, read_only: bool) -> Vec<String> {
        let mut statements = Vec::new();
        if let Some(level) = isolation.sql() {
            // Applies to the next transaction only.
            statements.push(format!("SET TRANSACTION ISOLATION LEVEL {level}"));
        }
        statements.push(if read_only {
            "START TRANSACTION READ ONLY".to_owned()
        } else {
            "START TRANSACTION".to_owned()
        });
        statements
    }

    async fn disarm(_conn: &mut sqlx::MySqlConnection) {}

    fn control_pool(db: &Database) -> Option<Pool<MySql>> {
        match db.control() {
            super::pool::ControlPool::MySql(pool) => Some(pool.clone()),
            _ => None,
        }
    }

    async fn cancel_statement(pool: &Pool<MySql>, id: i64) -> bool {
        // KILL takes no placeholder; `id` is an integer sqlgate read itself.
        run_best_effort(pool, format!("KILL QUERY {id}"), "KILL QUERY").await
    }
    // No `recover`: a KILL QUERY that arrives after the statement finished
    // may stop the next statement on that connection, so it is closed.
}

impl Dialect for Sqlite {
    fn connection_setup(_longest: Duration) -> Vec<String> {
        Vec::new()
    }

    fn begin_sql(_deadline: &Deadline) -> String {
        "BEGIN".to_owned()
    }

    async fn arm(
        conn: &mut sqlx::SqliteConnection,
        interrupt: &Arc<Interrupt>,
        _want_server_id: bool,
    ) -> Result<Option<i64>, sqlx::Error> {
        // SQLite runs in-process: a progress handler interrupts the
        // statement once its deadline passes or it is cancelled.
        let interrupt = interrupt.clone();
        conn.lock_handle()
            .await?
            .set_progress_handler(1_000, move || interrupt.may_continue());
        Ok(None)
    }

    fn session_begin(_isolation: Isolation, read_only: bool) -> Vec<String> {
        // SQLite transactions are always serializable, which satisfies any
        // level asked for. Read-only is the connection's query_only flag.
        let mut statements = Vec::new();
        if read_only {
            statements.push("PRAGMA query_only = ON".to_owned());
        }
        statements.push("BEGIN".to_owned());
        statements
    }

    fn session_end(read_only: bool) -> Vec<String> {
        if read_only {
            vec!["PRAGMA query_only = OFF".to_owned()]
        } else {
            Vec::new()
        }
    }

    fn transaction_survives_interrupt() -> bool {
        false
    }

    async fn disarm(conn: &mut sqlx::SqliteConnection) {
        if let Ok(mut handle) = conn.lock_handle().await {
            handle.remove_progress_handler();
        }
    }

    fn control_pool(_db: &Database) -> Option<Pool<Sqlite>> {
        None
    }

    async fn cancel_statement(_pool: &Pool<Sqlite>, _id: i64) -> bool {
        // The progress handler interrupts it.
        true
    }
}
