//! Pool figures sqlx does not keep: callers waiting now, how long they
//! waited (over a recent window), and how many gave up.

use std::{
    collections::VecDeque,
    fmt,
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use super::Backend;
use crate::config::PoolSettings;

/// How many recent acquire waits the percentiles are computed over.
const WAIT_WINDOW: usize = 1024;

/// Counters updated on every acquire.
#[derive(Debug, Default)]
pub(crate) struct PoolMetrics {
    waiting: AtomicU32,
    acquire_timeouts: AtomicU64,
    calls_total: AtomicU64,
    connections_opened: AtomicU64,
    recent_waits: Mutex<VecDeque<Duration>>,
    /// Told every wait and every connection opened for a caller, when
    /// metrics are exported (unset: nothing to do).
    observer: OnceLock<PoolObserver>,
}

/// Receives what the exported pool histograms record.
pub struct PoolObserver {
    /// Every acquire wait: the time, and whether it timed out.
    pub waited: Box<dyn Fn(Duration, bool) + Send + Sync>,
    /// Every connection the pool opened for a caller's acquire: how long
    /// it took to open (see [`PoolMetrics::record_created`]).
    pub created: Box<dyn Fn(Duration) + Send + Sync>,
}

impl fmt::Debug for PoolObserver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PoolObserver")
    }
}

/// A caller waiting for a connection; counted until finished.
pub(crate) struct Waiting<'a> {
    metrics: &'a PoolMetrics,
    started: Instant,
    done: bool,
}

impl PoolMetrics {
    pub(crate) fn start_wait(&self) -> Waiting<'_> {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        Waiting {
            metrics: self,
            started: Instant::now(),
            done: false,
        }
    }

    pub(crate) fn count_opened(&self) {
        self.connections_opened.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_call(&self) {
        self.calls_total.fetch_add(1, Ordering::Relaxed);
    }

    /// Tells `observer` every wait and every connection opened from now
    /// on (the first observer stays).
    pub(crate) fn observe(&self, observer: PoolObserver) {
        let _ = self.observer.set(observer);
    }

    /// A connection the pool opened while a caller acquired: `took` runs
    /// from the caller's acquire to the connection being open
    /// (connected and authenticated, before sqlgate's per-connection
    /// settings). sqlx has no hook before it connects, so a connect that
    /// first waited for a free slot in a full pool counts that wait too.
    pub(crate) fn record_created(&self, took: Duration) {
        if let Some(observer) = self.observer.get() {
            (observer.created)(took);
        }
    }

    fn record_wait(&self, waited: Duration, timed_out: bool) {
        // An event on the statement's span, when traces are exported.
        crate::telemetry::traces::pool_waited(waited, timed_out);
        if let Some(observer) = self.observer.get() {
            (observer.waited)(waited, timed_out);
        }
        if let Ok(mut waits) = self.recent_waits.lock() {
            if waits.len() == WAIT_WINDOW {
                waits.pop_front();
            }
            waits.push_back(waited);
        }
    }

    pub(crate) fn snapshot(
        &self,
        backend: Backend,
        settings: &PoolSettings,
        open: u32,
        idle: u32,
    ) -> PoolSnapshot {
        let mut waits: Vec<Duration> = self
            .recent_waits
            .lock()
            .map(|w| w.iter().copied().collect())
            .unwrap_or_default();
        waits.sort_unstable();
        let percentile = |p: f64| -> Duration {
            if waits.is_empty() {
                return Duration::ZERO;
            }
            let rank = ((waits.len() as f64 - 1.0) * p).round() as usize;
            waits[rank.min(waits.len() - 1)]
        };
        PoolSnapshot {
            backend,
            max_connections: settings.max_connections,
            min_connections: settings.min_connections,
            open_connections: open,
            idle_connections: idle,
            in_use_connections: open.saturating_sub(idle),
            waiting: self.waiting.load(Ordering::Relaxed),
            acquire_timeouts: self.acquire_timeouts.load(Ordering::Relaxed),
            acquire_wait_p50: percentile(0.5),
            acquire_wait_p99: percentile(0.99),
            acquire_wait_max: waits.last().copied().unwrap_or_default(),
            calls_total: self.calls_total.load(Ordering::Relaxed),
            connections_opened: self.connections_opened.load(Ordering::Relaxed),
            connections_closed: self
                .connections_opened
                .load(Ordering::Relaxed)
                .saturating_sub(u64::from(open)),
        }
    }
}

impl Waiting<'_> {
    /// The connection came.
    pub(crate) fn finish(mut self) {
        self.metrics.record_wait(self.started.elapsed(), false);
        self.done = true;
    }

    /// The pool's acquire timeout ran out.
    pub(crate) fn timed_out(mut self) {
        self.metrics
            .acquire_timeouts
            .fetch_add(1, Ordering::Relaxed);
        self.metrics.record_wait(self.started.elapsed(), true);
        self.done = true;
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        // Runs also when the waiting future is dropped (caller gone).
        self.metrics.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The pool's figures at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolSnapshot {
    /// The backend.
    pub backend: Backend,
    /// Configured maximum.
    pub max_connections: u32,
    /// Configured minimum.
    pub min_connections: u32,
    /// Open now.
    pub open_connections: u32,
    /// Open and idle now.
    pub idle_connections: u32,
    /// Checked out now.
    pub in_use_connections: u32,
    /// Callers waiting for a connection now.
    pub waiting: u32,
    /// Acquisitions that gave up so far.
    pub acquire_timeouts: u64,
    /// Median acquire wait over the recent window.
    pub acquire_wait_p50: Duration,
    /// 99th percentile acquire wait over the recent window.
    pub acquire_wait_p99: Duration,
    /// Longest acquire wait over the recent window.
    pub acquire_wait_max: Duration,
    /// Calls served since start.
    pub calls_total: u64,
    /// Connections opened since start.
    pub connections_opened: u64,
    /// Connections closed since start (opened minus open now).
    pub connections_closed: u64,
}
