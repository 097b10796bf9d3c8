//! Builds the pool through sea-orm (which owns its configuration) and keeps
//! the typed sqlx pool underneath for statement execution.

use std::{
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use sea_orm::{ConnectOptions, DatabaseConnection};
use sqlx::{
    AssertSqlSafe, Executor, MySql, MySqlPool, PgPool, Pool, Postgres, SqlitePool,
    mysql::MySqlConnectOptions,
    pool::{PoolConnection, PoolOptions},
    postgres::PgConnectOptions,
    sqlite::SqliteJournalMode,
};

use super::{
    Deadline, Dialect,
    metrics::{PoolMetrics, PoolSnapshot},
    timeouts::TimeoutMemory,
};
use crate::{
    config::PoolSettings,
    error::{DeadlinePhase, Error},
};

/// Which database the pool talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL.
    Postgres,
    /// MySQL or MariaDB.
    MySql,
    /// SQLite (embedded).
    Sqlite,
}

impl Backend {
    /// Reads the backend from a database URL's scheme.
    pub fn from_url(url: &str) -> Option<Self> {
        match url.split(':').next()? {
            "postgres" | "postgresql" => Some(Self::Postgres),
            "mysql" | "mariadb" => Some(Self::MySql),
            "sqlite" => Some(Self::Sqlite),
            _ => None,
        }
    }

    /// The name used in logs and `PoolStats.backend`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::MySql => "mysql",
            Self::Sqlite => "sqlite",
        }
    }
}

/// The typed sqlx pool of the configured backend.
#[derive(Debug, Clone)]
pub enum DbPool {
    /// A PostgreSQL pool.
    Postgres(PgPool),
    /// A MySQL/MariaDB pool.
    MySql(MySqlPool),
    /// A SQLite pool.
    Sqlite(SqlitePool),
}

/// A small pool beside the main one, for cancelling statements: a cancel
/// must not wait behind the very calls that saturate the main pool.
#[derive(Debug, Clone)]
pub(crate) enum ControlPool {
    /// PostgreSQL: `pg_cancel_backend`.
    Postgres(PgPool),
    /// MySQL/MariaDB: `KILL QUERY`.
    MySql(MySqlPool),
    /// SQLite cancels in-process.
    None,
}

/// The one pool every call goes through.
#[derive(Debug)]
pub struct Database {
    /// sea-orm's handle; it owns the pool's configuration and closes it.
    connection: DatabaseConnection,
    /// The same pool, typed, for dynamic statements.
    pool: DbPool,
    /// Waiters, wait times and timeouts, counted in [`Database::acquire`].
    metrics: Arc<PoolMetrics>,
    /// The settings the pool was built with, reported by `GetPoolStats`.
    settings: PoolSettings,
    /// Where cancels go.
    control: ControlPool,
    /// Statement shapes that ran out their deadline: their calls fetch the
    /// connection's server id up front, so a repeat timeout is cancelled and
    /// the connection kept.
    timed_out: TimeoutMemory,
    /// Cleared while the health probe finds the database unreachable, so
    /// that calls fail fast with UNAVAILABLE instead of waiting out their
    /// deadlines on connection attempts.
    reachable: AtomicBool,
    /// Cancelled once shutdown's drain is over: in-flight calls are then
    /// cut (cancelled on the server) so that the pool can close.
    drained: tokio_util::sync::CancellationToken,
}

impl Database {
    /// Connects the pool. A URL that does not parse, or a database that
    /// refuses the first connection, fails here with a message that never
    /// contains the URL (it may hold a password).
    /// `statement_limit` is set on every connection as a database-side upper
    /// bound on any one statement.
    pub async fn connect(
        url: &str,
        settings: &PoolSettings,
        statement_limit: Duration,
    ) -> Result<Self, Error> {
        let backend = Backend::from_url(url)
            .ok_or_else(|| Error::Unavailable("unsupported database URL scheme".to_owned()))?;
        let mut settings = settings.clone();
        let in_memory_sqlite = backend == Backend::Sqlite && url.contains(":memory:");
        if in_memory_sqlite {
            // Every connection to `:memory:` is a database of its own: keep exactly one, forever.
            settings.max_connections = 1;
            settings.min_connections = 1;
        }

        let mut options = ConnectOptions::new(url.to_owned());
        options
            .max_connections(settings.max_connections)
            .min_connections(settings.min_connections)
            // sea-orm maps connect_timeout onto sqlx's acquire timeout too;
            // set only acquire_timeout so that one value rules.
            .acquire_timeout(settings.acquire_timeout)
            .sqlx_logging(false)
            // sqlx pings every connection before handing it out by default:
            // a round trip on every call. Ping only connections idle for a
            // while; the health probe and statement errors catch the rest.
            .test_before_acquire_if_idle_for(Duration::from_secs(30))
            .set_application_name("sqlgate");
        if in_memory_sqlite {
            options
                .idle_timeout(None::<Duration>)
                .max_lifetime(None::<Duration>);
        } else {
            options
                .idle_timeout(settings.idle_timeout)
                .max_lifetime(settings.max_lifetime);
        }
        let metrics = Arc::new(PoolMetrics::default());
        let counter = metrics.clone();
        match backend {
            Backend::Postgres => {
                let setup = <Postgres as Dialect>::connection_setup(statement_limit);
                options.map_sqlx_postgres_pool_opts(move |opts| {
                    with_setup(opts, setup.clone(), counter.clone())
                });
            }
            Backend::MySql => {
                let setup = <MySql as Dialect>::connection_setup(statement_limit);
                options.map_sqlx_mysql_pool_opts(move |opts| {
                    with_setup(opts, setup.clone(), counter.clone())
                });
                // TIMESTAMP values are carried as UTC instants: a `timezone`
                // in the URL must not shift them.
                options.map_sqlx_mysql_opts(|opts| opts.timezone(Some("+00:00".to_owned())));
            }
            Backend::Sqlite => {
                options.map_sqlx_sqlite_pool_opts(move |opts| {
                    with_setup(opts, Vec::new(), counter.clone())
                });
            }
        }
        if backend == Backend::Sqlite {
            options.map_sqlx_sqlite_opts(move |opts| {
                let opts = if in_memory_sqlite {
                    opts
                } else {
                    opts.journal_mode(SqliteJournalMode::Wal)
                };
                // Writers wait for each other instead of failing at once.
                // (`mode=rwc` in the URL already asks sqlx to create the file.)
                opts.busy_timeout(Duration::from_secs(5)).foreign_keys(true)
            });
        }

        let connection = match sea_orm::Database::connect(options).await {
            Ok(connection) => connection,
            Err(err) => {
                return Err(Error::Unavailable(
                    first_connection_error(backend, url, &err).await,
                ));
            }
        };
        let pool = match backend {
            Backend::Postgres => {
                DbPool::Postgres(connection.get_postgres_connection_pool().clone())
            }
            Backend::MySql => DbPool::MySql(connection.get_mysql_connection_pool().clone()),
            Backend::Sqlite => DbPool::Sqlite(connection.get_sqlite_connection_pool().clone()),
        };
        let control = match backend {
            Backend::Postgres => {
                let options = PgConnectOptions::from_str(url)
                    .map_err(|_| Error::Unavailable("the database URL is invalid".to_owned()))?
                    .application_name("sqlgate");
                ControlPool::Postgres(control_options().connect_lazy_with(options))
            }
            Backend::MySql => {
                let options = MySqlConnectOptions::from_str(url)
                    .map_err(|_| Error::Unavailable("the database URL is invalid".to_owned()))?;
                ControlPool::MySql(control_options().connect_lazy_with(options))
            }
            Backend::Sqlite => ControlPool::None,
        };
        // Open the control connection now, so the first cancel does not pay for it.
        match &control {
            ControlPool::Postgres(pool) => drop(pool.acquire().await),
            ControlPool::MySql(pool) => drop(pool.acquire().await),
            ControlPool::None => {}
        }
        Ok(Self {
            connection,
            pool,
            metrics,
            reachable: AtomicBool::new(true),
            drained: tokio_util::sync::CancellationToken::new(),
            settings,
            control,
            timed_out: TimeoutMemory::default(),
        })
    }

    /// The backend behind the pool.
    pub fn backend(&self) -> Backend {
        match self.pool {
            DbPool::Postgres(_) => Backend::Postgres,
            DbPool::MySql(_) => Backend::MySql,
            DbPool::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// The pool cancels go through.
    pub(crate) fn control(&self) -> &ControlPool {
        &self.control
    }

    /// Statement shapes that timed out before; see [`TimeoutMemory`].
    pub(crate) fn timed_out(&self) -> &TimeoutMemory {
        &self.timed_out
    }

    /// The typed pool, for the executors.
    pub fn pool(&self) -> &DbPool {
        &self.pool
    }

    /// Takes a connection, counting the wait; a pool that stays full past
    /// its acquire timeout is [`Error::PoolExhausted`], not "unavailable".
    pub(crate) async fn acquire<DB: sqlx::Database>(
        &self,
        pool: &Pool<DB>,
    ) -> Result<PoolConnection<DB>, Error> {
        let waiting = self.metrics.start_wait();
        // Boxed where it is made: sqlx's acquire future is several kilobytes
        // and would otherwise be copied each time the callers' futures move.
        match Box::pin(pool.acquire()).await {
            Ok(conn) => {
                waiting.finish();
                Ok(conn)
            }
            Err(sqlx::Error::PoolTimedOut) if !self.is_reachable() => {
                waiting.timed_out();
                Err(Error::Unavailable(
                    "the database is unreachable (health probe failing)".to_owned(),
                ))
            }
            Err(sqlx::Error::PoolTimedOut) => {
                waiting.timed_out();
                Err(Error::PoolExhausted {
                    max_connections: self.settings.max_connections,
                })
            }
            Err(other) => {
                waiting.finish();
                Err(other.into())
            }
        }
    }

    /// Like [`Database::acquire`], but gives up when `deadline` passes
    /// first: the wait in the queue spends the call's budget.
    pub(crate) async fn acquire_within<DB: sqlx::Database>(
        &self,
        pool: &Pool<DB>,
        deadline: &Deadline,
    ) -> Result<PoolConnection<DB>, Error> {
        deadline.check(DeadlinePhase::BeforeStart)?;
        if !self.is_reachable() {
            return Err(Error::Unavailable(
                "the database is unreachable (health probe failing); try again shortly".to_owned(),
            ));
        }
        match tokio::time::timeout_at(deadline.instant(), self.acquire(pool)).await {
            Ok(result) => result,
            Err(_) => Err(Error::DeadlineExceeded(DeadlinePhase::Queue)),
        }
    }

    /// Takes a connection through the pool and runs `SELECT 1`, within
    /// `timeout`; true when the database answered.
    pub async fn probe(&self, timeout: Duration) -> bool {
        let probe = async {
            match &self.pool {
                DbPool::Postgres(pool) => sqlx::query("SELECT 1").execute(pool).await.is_ok(),
                DbPool::MySql(pool) => sqlx::query("SELECT 1").execute(pool).await.is_ok(),
                DbPool::Sqlite(pool) => sqlx::query("SELECT 1").execute(pool).await.is_ok(),
            }
        };
        tokio::time::timeout(timeout, probe).await.unwrap_or(false)
    }

    /// Ends the drain: every call still running is cut, as at its deadline.
    pub fn cut_in_flight(&self) {
        self.drained.cancel();
    }

    /// Cancelled once the drain is over (see [`Database::cut_in_flight`]).
    pub(crate) fn drained(&self) -> &tokio_util::sync::CancellationToken {
        &self.drained
    }

    /// Records what the health probe concluded (see `reachable`).
    pub fn set_reachable(&self, reachable: bool) {
        self.reachable.store(reachable, Ordering::Relaxed);
    }

    /// What the health probe last concluded (after its thresholds).
    pub fn is_reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    /// Counts one call served.
    pub(crate) fn count_call(&self) {
        self.metrics.count_call();
    }

    /// The pool's figures now.
    pub fn snapshot(&self) -> PoolSnapshot {
        let (size, idle) = match &self.pool {
            DbPool::Postgres(pool) => (pool.size(), pool.num_idle()),
            DbPool::MySql(pool) => (pool.size(), pool.num_idle()),
            DbPool::Sqlite(pool) => (pool.size(), pool.num_idle()),
        };
        let idle = u32::try_from(idle).unwrap_or(u32::MAX);
        self.metrics
            .snapshot(self.backend(), &self.settings, size, idle.min(size))
    }

    /// Closes every connection; the database sees none from sqlgate after
    /// this. Connections still checked out after `wait` (their work is being
    /// cancelled) are left to close as they come back; the control pool is
    /// closed in any case.
    pub async fn close(&self, wait: Duration) {
        // The main pool first: connections still being recovered need the
        // control pool to cancel their statements.
        match tokio::time::timeout(wait, self.connection.close_by_ref()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "closing the pool failed"),
            Err(_) => tracing::warn!(
                ?wait,
                "connections still checked out; closing the pool without them"
            ),
        }
        match &self.control {
            ControlPool::Postgres(pool) => pool.close().await,
            ControlPool::MySql(pool) => pool.close().await,
            ControlPool::None => {}
        }
    }
}

/// The control pool: one connection kept open, a second if two cancels overlap.
fn control_options<DB: sqlx::Database>() -> PoolOptions<DB> {
    PoolOptions::new()
        .max_connections(2)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(2))
}

/// Runs `setup` on every new connection (sea-orm's own `after_connect`
/// runs once per pool, not per connection). A failing statement is logged,
/// not fatal: `client_connection_check_interval` is unknown before
/// PostgreSQL 14, `max_statement_time` is MariaDB's and not MySQL's.
fn with_setup<DB>(
    options: PoolOptions<DB>,
    setup: Vec<String>,
    metrics: Arc<PoolMetrics>,
) -> PoolOptions<DB>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let setup = Arc::new(setup);
    options.after_connect(move |conn, _meta| {
        let setup = setup.clone();
        metrics.count_opened();
        Box::pin(async move {
            for sql in setup.iter() {
                if let Err(err) = conn
                    .execute(sqlx::raw_sql(AssertSqlSafe(sql.clone())))
                    .await
                {
                    tracing::debug!(error = %err, "connection setup statement refused");
                }
            }
            Ok(())
        })
    })
}

/// Why the pool could not connect. A pool only says that it timed out, so
/// one direct connection is tried to learn the cause (refused, bad
/// password, unknown database…), described without the URL.
async fn first_connection_error(
    backend: Backend,
    url: &str,
    pool_error: &sea_orm::DbErr,
) -> String {
    use sqlx::Connection;
    let direct = match backend {
        Backend::Postgres => sqlx::PgConnection::connect(url).await.err(),
        Backend::MySql => sqlx::MySqlConnection::connect(url).await.err(),
        Backend::Sqlite => sqlx::SqliteConnection::connect(url).await.err(),
    };
    match direct {
        Some(sqlx::Error::Configuration(_)) => "the database URL is invalid".to_owned(),
        Some(err) => redact(&err.to_string()),
        None => redact(&pool_error.to_string()),
    }
}

/// Drops anything that looks like a URL from a message (it may hold a password).
fn redact(text: &str) -> String {
    if text.contains("://") {
        "the database URL is invalid".to_owned()
    } else {
        text.to_owned()
    }
}
