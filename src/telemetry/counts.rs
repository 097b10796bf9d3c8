//! Process-wide counts of rare events that metrics report by kind: calls
//! cut by their deadline (by phase) and pooled connections closed instead
//! of reused (by cause). Counted where they happen with one relaxed atomic
//! add, whether or not any metrics are exported, and read by the metrics'
//! callbacks at collection time.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::DeadlinePhase;

/// Deadline phases as metric attribute values, in [`phase_index`] order.
pub(crate) const DEADLINE_PHASES: [&str; 3] = ["before_start", "queue", "database"];

/// Why a connection was closed rather than given back to the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseCause {
    /// A protocol or I/O failure broke it.
    Broken,
    /// Its statement was cut (deadline, cancel) and it could not be
    /// recovered, or a statement may have changed its state.
    Abandoned,
    /// Undoing what a caller set on it, or rolling it back, failed.
    ResetFailed,
    /// A session's cancelled statement did not come back in time.
    Discarded,
}

/// Close causes as metric attribute values, in [`CloseCause`] order.
pub(crate) const CLOSE_CAUSES: [&str; 4] = ["broken", "abandoned", "reset_failed", "discarded"];

static DEADLINES: [AtomicU64; 3] = [const { AtomicU64::new(0) }; 3];
static CLOSED: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

fn phase_index(phase: DeadlinePhase) -> usize {
    match phase {
        DeadlinePhase::BeforeStart => 0,
        DeadlinePhase::Queue => 1,
        DeadlinePhase::Database => 2,
    }
}

/// A call was answered DEADLINE_EXCEEDED in `phase`.
pub(crate) fn deadline_exceeded(phase: DeadlinePhase) {
    DEADLINES[phase_index(phase)].fetch_add(1, Ordering::Relaxed);
}

/// A pooled connection was closed for `cause`.
pub(crate) fn connection_closed(cause: CloseCause) {
    CLOSED[cause as usize].fetch_add(1, Ordering::Relaxed);
}

/// Deadlines exceeded so far, per entry of [`DEADLINE_PHASES`].
pub(crate) fn deadlines() -> [u64; 3] {
    DEADLINES
        .each_ref()
        .map(|count| count.load(Ordering::Relaxed))
}

/// Connections closed so far, per entry of [`CLOSE_CAUSES`].
pub(crate) fn closed() -> [u64; 4] {
    CLOSED.each_ref().map(|count| count.load(Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_go_under_their_own_kind() {
        let before = (deadlines(), closed());
        deadline_exceeded(DeadlinePhase::Queue);
        connection_closed(CloseCause::ResetFailed);
        let after = (deadlines(), closed());
        assert!(after.0[1] > before.0[1]);
        assert!(after.1[2] > before.1[2]);
    }
}
