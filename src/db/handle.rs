//! [`PoolHandle`]: the pool as the rest of sqlgate sees it when the backend
//! does not matter (health, Admin, shutdown). The backend is a type
//! parameter of [`super::Database`]; this object-safe view lets those parts
//! hold one `Arc<dyn PoolHandle>` chosen at start-up.

use std::time::Duration;

use futures::future::BoxFuture;

use super::{Backend, PoolSnapshot, metrics::PoolObserver};

/// ExecuteStream figures, for `Admin/GetPoolStats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamFigures {
    /// Streams holding (or about to take) a connection now.
    pub open: u32,
    /// Streams refused since start because streams held their share.
    pub refused: u64,
    /// Streams ended since start because their reader took no data for
    /// `limits.stream_stall_timeout`.
    pub stalled: u64,
}

/// What health, Admin and shutdown ask of the pool.
pub trait PoolHandle: Send + Sync + std::fmt::Debug {
    /// The backend behind the pool.
    fn backend(&self) -> Backend;

    /// Runs `SELECT 1` on a connection of the probe's own — never one of
    /// the main pool, so that a pool full of busy callers is not taken for
    /// an unreachable database — within `timeout`; true when the database
    /// answered.
    fn probe(&self, timeout: Duration) -> BoxFuture<'_, bool>;

    /// ExecuteStream calls holding their share of the pool now, and how
    /// many were refused or ended for a stalled reader.
    fn streams(&self) -> StreamFigures;

    /// Records what the health probe concluded: while unreachable, calls
    /// fail fast with UNAVAILABLE instead of waiting out their deadlines.
    fn set_reachable(&self, reachable: bool);

    /// What the health probe last concluded (after its thresholds).
    fn is_reachable(&self) -> bool;

    /// The pool's figures now.
    fn snapshot(&self) -> PoolSnapshot;

    /// Tells `observer` every acquire wait from now on (for the exported
    /// wait-time histogram; without one, waits cost nothing more).
    fn observe(&self, observer: PoolObserver);

    /// Ends the drain: every call still running is cut, as at its deadline.
    fn cut_in_flight(&self);

    /// Closes every connection; the database sees none from sqlgate after
    /// this. Connections still checked out after `wait` (their work is
    /// being cancelled) are left to close as they come back; the control
    /// pool is closed in any case.
    fn close(&self, wait: Duration) -> BoxFuture<'_, ()>;
}
