//! Backend differences outside of values: how a transaction is opened with a
//! database-side time limit, what a connection needs before a call with a
//! deadline, and how a running statement is cancelled from another
//! connection (dropping a sqlx future does not stop the query).

use std::time::Duration;

use sqlx::{AssertSqlSafe, Executor, MySql, Pool, Postgres, Sqlite, pool::PoolConnection};

use super::{Database, Deadline};

/// How long sqlgate tries to reach the database to cancel a statement.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(2);

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

    /// Readies `conn` for a call bounded by `deadline` and returns the
    /// server-side connection id needed to cancel it (`None` where closing
    /// the connection is enough, or the backend is in-process).
    fn arm(
        conn: &mut Self::Connection,
        deadline: &Deadline,
        want_server_id: bool,
    ) -> impl Future<Output = Result<Option<i64>, sqlx::Error>> + Send;

    /// Undoes [`Dialect::arm`] before the connection goes back to the pool.
    fn disarm(conn: &mut Self::Connection) -> impl Future<Output = ()> + Send;

    /// The pool that cancel statements go through: a small one of its own,
    /// so that a cancel never waits behind a saturated main pool.
    fn control_pool(db: &Database) -> Option<Pool<Self>>;

    /// Asks the server, over a control connection, to cancel whatever
    /// connection `id` is running.
    fn cancel_statement(pool: &Pool<Self>, id: i64) -> impl Future<Output = ()> + Send;
}

/// Stops what `conn` is running and closes it; its state is unknown, so it
/// never goes back to the pool. Runs detached when a deadline has passed,
/// so the caller is answered first.
pub(crate) async fn abandon<DB: Dialect>(
    control: Option<Pool<DB>>,
    conn: PoolConnection<DB>,
    server_id: Option<i64>,
) {
    if let (Some(control), Some(id)) = (control, server_id) {
        DB::cancel_statement(&control, id).await;
    }
    // Dropping the socket closes it at once; a graceful close would first
    // wait for the statement's pending output. The server notices the
    // closed connection and stops (PostgreSQL: client_connection_check_interval).
    drop(conn.detach());
}

async fn run_best_effort<'c, E: Executor<'c>>(executor: E, sql: String, what: &str) {
    let run = executor.execute(sqlx::raw_sql(AssertSqlSafe(sql)));
    match tokio::time::timeout(CLEANUP_TIMEOUT, run).await {
        Ok(Ok(_)) => {}
        Ok(Err(err)) => tracing::warn!(error = %err, "{what} failed"),
        Err(_) => tracing::warn!("{what} timed out"),
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
        _deadline: &Deadline,
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

    async fn disarm(_conn: &mut sqlx::PgConnection) {}

    fn control_pool(db: &Database) -> Option<Pool<Postgres>> {
        match db.control() {
            super::pool::ControlPool::Postgres(pool) => Some(pool.clone()),
            _ => None,
        }
    }

    async fn cancel_statement(pool: &Pool<Postgres>, id: i64) {
        run_best_effort(
            pool,
            format!("SELECT pg_cancel_backend({id})"),
            "pg_cancel_backend",
        )
        .await;
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
        _deadline: &Deadline,
        _want_server_id: bool,
    ) -> Result<Option<i64>, sqlx::Error> {
        // MySQL never notices a closed client mid-statement: KILL QUERY needs the id.
        let id: u64 = sqlx::query_scalar("SELECT CONNECTION_ID()")
            .fetch_one(conn)
            .await?;
        Ok(i64::try_from(id).ok())
    }

    async fn disarm(_conn: &mut sqlx::MySqlConnection) {}

    fn control_pool(db: &Database) -> Option<Pool<MySql>> {
        match db.control() {
            super::pool::ControlPool::MySql(pool) => Some(pool.clone()),
            _ => None,
        }
    }

    async fn cancel_statement(pool: &Pool<MySql>, id: i64) {
        // KILL takes no placeholder; `id` is an integer sqlgate read itself.
        run_best_effort(pool, format!("KILL QUERY {id}"), "KILL QUERY").await;
    }
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
        deadline: &Deadline,
        _want_server_id: bool,
    ) -> Result<Option<i64>, sqlx::Error> {
        // SQLite runs in-process: a progress handler interrupts the
        // statement once the deadline has passed.
        let at = deadline.instant().into_std();
        conn.lock_handle()
            .await?
            .set_progress_handler(1_000, move || std::time::Instant::now() < at);
        Ok(None)
    }

    async fn disarm(conn: &mut sqlx::SqliteConnection) {
        if let Ok(mut handle) = conn.lock_handle().await {
            handle.remove_progress_handler();
        }
    }

    fn control_pool(_db: &Database) -> Option<Pool<Sqlite>> {
        None
    }

    async fn cancel_statement(_pool: &Pool<Sqlite>, _id: i64) {
        // The progress handler interrupts it.
    }
}
