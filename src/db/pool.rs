//! [`Database`]: the pool of one backend, built through sea-orm (which owns
//! its configuration), with the typed sqlx pool underneath for statements
//! and a small control pool beside it for cancels and the health probe —
//! so that a full pool is never mistaken for an unreachable database.
//! Streams are admitted here too ([`Database::admit_stream`]): they may hold
//! only a share of the pool.

use std::{
    cell::Cell,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures::{FutureExt, TryStreamExt, future::BoxFuture};
use sea_orm::{ConnectOptions, DatabaseConnection};
use sqlx::{
    Pool,
    pool::{PoolConnection, PoolOptions},
};
use tokio_util::sync::CancellationToken;

use super::{
    Backend, Deadline, Driver, PoolHandle, StreamFigures,
    driver::limit_statement_cache,
    first_contact::{FirstContact, first_contact},
    metrics::{PoolMetrics, PoolObserver, PoolSnapshot},
    timeouts::TimeoutMemory,
};
use crate::{
    config::PoolSettings,
    error::{DeadlinePhase, Error},
};

/// The one pool every call goes through.
#[derive(Debug)]
pub(crate) struct Database<DB: Driver> {
    /// sea-orm's handle; it owns the pool's configuration and closes it.
    connection: DatabaseConnection,
    /// The same pool, typed, for dynamic statements.
    pool: Pool<DB>,
    /// Where cancels and the health probe go (`None` where cancelling is
    /// in-process): never the main pool, which callers may have filled.
    control: Option<Pool<DB>>,
    /// Where the probe connects when there is no control pool (SQLite):
    /// a connection of its own each time, outside the main pool.
    probe_url: Option<ProbeUrl>,
    /// ExecuteStream calls holding a share of the pool, and what befell them.
    streams: Arc<StreamGate>,
    /// Waiters, wait times and timeouts, counted in [`Database::acquire`].
    metrics: Arc<PoolMetrics>,
    /// The settings the pool was built with, reported by `GetPoolStats`.
    settings: PoolSettings,
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
    drained: CancellationToken,
    /// Set once the privileges of sqlgate's database user were checked
    /// (at the first probe that reaches the database; see [`warn_if_superuser`]).
    privileges_checked: AtomicBool,
    /// How a connection a caller may have changed is reset before reuse
    /// (`None`: it is closed instead). See `Dialect::reset_sql`.
    reset: Option<Arc<str>>,
    /// The database the URL names (`db.namespace` on statement spans).
    namespace: Option<Arc<str>>,
}

impl<DB: Driver> Database<DB> {
    /// Connects the pool. A URL that does not parse, or a database that
    /// answers and refuses the first connection, fails here with a message
    /// that never contains the URL (it may hold a password); a database not
    /// reachable yet leaves the pool unreachable until the probe reaches it.
    /// `statement_limit` is set on every connection as a database-side upper
    /// bound on any one statement.
    pub(crate) async fn connect(
        url: &str,
        settings: &PoolSettings,
        statement_limit: Duration,
    ) -> Result<Self, Error> {
        let mut settings = settings.clone();
        let single_connection = DB::single_connection(url);
        if single_connection {
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
        if single_connection {
            options
                .idle_timeout(None::<Duration>)
                .max_lifetime(None::<Duration>);
        } else {
            options
                .idle_timeout(settings.idle_timeout)
                .max_lifetime(settings.max_lifetime);
        }
        let metrics = Arc::new(PoolMetrics::default());
        let setup = Arc::new(DB::connection_setup(statement_limit));
        let counter = metrics.clone();
        DB::configure(
            &mut options,
            Box::new(move |opts| with_setup(opts, setup.clone(), counter.clone())),
            single_connection,
            settings.statement_cache_capacity,
        );
        limit_statement_cache(
            settings.statement_cache_capacity,
            settings.max_cached_statement_bytes,
        );

        // Lazily: the pool opens its connections on demand, so that a
        // database still starting when sqlgate does is not a failed start.
        // Only a URL that does not parse fails here.
        options.connect_lazy(true);
        let connection = sea_orm::Database::connect(options)
            .await
            .map_err(|_| Error::Unavailable("the database URL is invalid".to_owned()))?;
        let pool = DB::typed_pool(&connection);
        let control = DB::control_pool(url)?;
        let reachable = match first_contact::<DB>(url, settings.acquire_timeout).await? {
            FirstContact::Reached => {
                // Open the pool's first connection and the control one now,
                // so that neither the first call nor the first cancel pays.
                drop(pool.acquire().await);
                if let Some(control) = &control {
                    drop(control.acquire().await);
                }
                true
            }
            FirstContact::Unreachable(why) => {
                tracing::warn!(
                    reason = %why,
                    "database unreachable at start-up; serving, not ready until the health probe reaches it"
                );
                false
            }
        };
        let probe_url = control.is_none().then(|| ProbeUrl(url.to_owned()));
        Ok(Self {
            connection,
            pool,
            control,
            probe_url,
            streams: Arc::default(),
            metrics,
            settings,
            timed_out: TimeoutMemory::default(),
            reachable: AtomicBool::new(reachable),
            privileges_checked: AtomicBool::new(false),
            drained: CancellationToken::new(),
            reset: DB::reset_sql(statement_limit).map(Arc::from),
            namespace: super::namespace::database_name(url).map(Arc::from),
        })
    }

    /// How to reset a connection a caller may have changed (`None`: close it).
    pub(crate) fn reset_sql(&self) -> Option<Arc<str>> {
        self.reset.clone()
    }

    /// The database the URL names, for `db.namespace`.
    pub(crate) fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// The pool cancels go through.
    pub(crate) fn control(&self) -> Option<&Pool<DB>> {
        self.control.as_ref()
    }

    /// Statement shapes that timed out before; see [`TimeoutMemory`].
    pub(crate) fn timed_out(&self) -> &TimeoutMemory {
        &self.timed_out
    }

    /// Cancelled once the drain is over (see [`PoolHandle::cut_in_flight`]).
    pub(crate) fn drained(&self) -> &CancellationToken {
        &self.drained
    }

    /// Counts one call served.
    pub(crate) fn count_call(&self) {
        self.metrics.count_call();
    }

    /// A place for one more ExecuteStream call, if streams hold less than
    /// `share` of the pool (at least one stream may always run); otherwise
    /// RESOURCE_EXHAUSTED at once. A stream holds its connection for as
    /// long as its reader takes, so waiting for a place would mostly wait
    /// out the caller's deadline: the caller is told to retry instead.
    pub(crate) fn admit_stream(&self, share: f64) -> Result<StreamSlot, Error> {
        let max = self.settings.max_connections;
        // The product of a pool size and a share in (0, 1] fits in u32.
        let cap = ((f64::from(max) * share).floor() as u32).max(1);
        let gate = &self.streams;
        match gate
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < cap).then_some(open + 1)
            }) {
            Ok(_) => Ok(StreamSlot { gate: gate.clone() }),
            Err(open) => {
                gate.refused.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    open,
                    cap,
                    "stream refused: streams hold their share of the pool"
                );
                Err(Error::StreamLimit(format!(
                    "{open} streams are running, the most this server allows ({cap} of its \
                     {max} database connections); try again shortly"
                )))
            }
        }
    }

    /// Counts a stream ended because its reader stalled.
    pub(crate) fn count_stalled_stream(&self) {
        self.streams.stalled.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes a connection, counting the wait; a pool that stays full past
    /// its acquire timeout is [`Error::PoolExhausted`], not "unavailable".
    async fn acquire(&self) -> Result<PoolConnection<DB>, Error> {
        let waiting = self.metrics.start_wait();
        let started = Instant::now();
        // Boxed where it is made: sqlx's acquire future is about 14 KiB and
        // would otherwise be copied each time the callers' futures move.
        // Written straight into its box: `Box::pin(future)` builds it on
        // the stack first and copies all of it (callgrind: 14,500
        // instructions of memcpy per acquire). Run where `with_setup` can
        // note a connection it opened for it.
        let (acquired, connected) = OPENED_AT
            .scope(Cell::new(None), async {
                let acquire = Box::write(Box::new_uninit(), self.pool.acquire());
                let acquired = Box::into_pin(acquire).await;
                (acquired, OPENED_AT.with(Cell::get))
            })
            .await;
        if let Some(connected) = connected {
            self.metrics
                .record_created(connected.saturating_duration_since(started));
        }
        match acquired {
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
    pub(crate) async fn acquire_within(
        &self,
        deadline: &Deadline,
    ) -> Result<PoolConnection<DB>, Error> {
        deadline.check(DeadlinePhase::BeforeStart)?;
        if !self.is_reachable() {
            return Err(Error::Unavailable(
                "the database is unreachable (health probe failing); try again shortly".to_owned(),
            ));
        }
        match tokio::time::timeout_at(deadline.instant(), self.acquire()).await {
            Ok(result) => result,
            Err(_) => Err(Error::DeadlineExceeded(DeadlinePhase::Queue)),
        }
    }
}

impl<DB: Driver> PoolHandle for Database<DB> {
    fn backend(&self) -> Backend {
        DB::BACKEND
    }

    fn probe(&self, timeout: Duration) -> BoxFuture<'_, bool> {
        // Never through the main pool: callers that fill it (streams whose
        // readers stall, a burst of slow statements) would make a healthy
        // database look unreachable, and every call UNAVAILABLE.
        let probe = async {
            if let Some(control) = &self.control {
                let Ok(mut conn) = control.acquire().await else {
                    return false;
                };
                let answered = select_one::<DB>(&mut conn).await;
                if answered && !self.privileges_checked.swap(true, Ordering::Relaxed) {
                    warn_if_superuser::<DB>(&mut conn).await;
                }
                return answered;
            }
            let Some(ProbeUrl(url)) = &self.probe_url else {
                return false;
            };
            let Ok(mut conn) = <DB::Connection as sqlx::Connection>::connect(url).await else {
                return false;
            };
            let answered = select_one::<DB>(&mut conn).await;
            let _ = sqlx::Connection::close(conn).await;
            answered
        };
        tokio::time::timeout(timeout, probe)
            .map(|answered| answered.unwrap_or(false))
            .boxed()
    }

    fn streams(&self) -> StreamFigures {
        StreamFigures {
            open: self.streams.open.load(Ordering::Relaxed),
            refused: self.streams.refused.load(Ordering::Relaxed),
            stalled: self.streams.stalled.load(Ordering::Relaxed),
        }
    }

    fn cut_in_flight(&self) {
        self.drained.cancel();
    }

    fn set_reachable(&self, reachable: bool) {
        self.reachable.store(reachable, Ordering::Relaxed);
    }

    fn is_reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    fn snapshot(&self) -> PoolSnapshot {
        let size = self.pool.size();
        let idle = u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX);
        self.metrics
            .snapshot(DB::BACKEND, &self.settings, size, idle.min(size))
    }

    fn observe(&self, observer: PoolObserver) {
        self.metrics.observe(observer);
    }

    fn close(&self, wait: Duration) -> BoxFuture<'_, ()> {
        async move {
            // The main pool first: connections still being recovered need
            // the control pool to cancel their statements.
            match tokio::time::timeout(wait, self.connection.close_by_ref()).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => tracing::warn!(error = %err, "closing the pool failed"),
                Err(_) => tracing::warn!(
                    ?wait,
                    "connections still checked out; closing the pool without them"
                ),
            }
            if let Some(control) = &self.control {
                control.close().await;
            }
        }
        .boxed()
    }
}

/// The probe's statement; true when the database answered.
async fn select_one<DB: Driver>(conn: &mut DB::Connection) -> bool {
    DB::fetch_many(conn, "SELECT 1".to_owned(), DB::Arguments::default())
        .try_collect::<Vec<_>>()
        .await
        .is_ok()
}

/// The database URL the probe connects with; it may hold a password, so
/// it never shows in `Debug` output.
struct ProbeUrl(String);

impl std::fmt::Debug for ProbeUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProbeUrl(..)")
    }
}

/// ExecuteStream calls holding a place now, and counts of those refused
/// and of those ended because their reader stalled.
#[derive(Debug, Default)]
struct StreamGate {
    open: AtomicU32,
    refused: AtomicU64,
    stalled: AtomicU64,
}

/// One stream's place among the share of the pool streams may hold;
/// given back when dropped, however the stream ends.
#[derive(Debug)]
pub(crate) struct StreamSlot {
    gate: Arc<StreamGate>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.gate.open.fetch_sub(1, Ordering::AcqRel);
    }
}

tokio::task_local! {
    /// In [`Database::acquire`]: when the pool opened a connection for it
    /// (set by the `after_connect` of [`with_setup`]), for
    /// `db.client.connection.create_time`; sqlx has no connect hook of
    /// its own.
    static OPENED_AT: Cell<Option<Instant>>;
}

/// Runs `setup` on every new connection (sea-orm's own `after_connect`
/// runs once per pool, not per connection). A failing statement is logged,
/// not fatal: `client_connection_check_interval` is unknown before
/// PostgreSQL 14, `max_statement_time` is MariaDB's and not MySQL's.
fn with_setup<DB: Driver>(
    options: PoolOptions<DB>,
    setup: Arc<Vec<String>>,
    metrics: Arc<PoolMetrics>,
) -> PoolOptions<DB> {
    options.after_connect(move |conn, _meta| {
        let setup = setup.clone();
        metrics.count_opened();
        // sqlx calls this in the task that acquires: an acquire of
        // sqlgate's learns when the connection it waited for was open.
        let _ = OPENED_AT.try_with(|opened| opened.set(Some(Instant::now())));
        Box::pin(async move {
            for sql in setup.iter() {
                if let Err(err) = DB::raw(conn, sql.clone()).await {
                    tracing::debug!(error = %err, "connection setup statement refused");
                }
            }
            Ok(())
        })
    })
}

/// Warns (once: at the first probe that reaches the database) when sqlgate's database user can do anything:
/// every caller then can too (PostgreSQL `COPY … TO PROGRAM` runs a shell
/// command on the database host). The README shows a least-privilege role.
async fn warn_if_superuser<DB: Driver>(conn: &mut DB::Connection) {
    let Some(probe) = DB::SUPERUSER_PROBE else {
        return;
    };
    if let Ok(true) = DB::returns_a_row(conn, probe).await {
        tracing::warn!(
            backend = DB::BACKEND.name(),
            "sqlgate's database user is a superuser (or may run server programs or read \
             server files): every caller can do the same; connect as a least-privilege role \
             (see the README's security section)"
        );
    }
}
