//! A statement's stop signal for backends that run in-process (SQLite):
//! a progress handler polls it, so a statement stops when its deadline
//! passes or when sqlgate cancels it (client gone, session terminated).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Instant,
};

use super::Deadline;

/// Shared between the connection's progress handler and its owner.
#[derive(Debug)]
pub(crate) struct Interrupt {
    base: Instant,
    /// Microseconds after `base` at which the statement must stop.
    deadline_micros: AtomicU64,
    cancelled: AtomicBool,
}

impl Interrupt {
    /// A signal that fires at `deadline`.
    pub(crate) fn new(deadline: &Deadline) -> Arc<Self> {
        let interrupt = Arc::new(Self {
            base: Instant::now(),
            deadline_micros: AtomicU64::new(u64::MAX),
            cancelled: AtomicBool::new(false),
        });
        interrupt.set_deadline(deadline);
        interrupt
    }

    /// Moves the deadline (each statement of a session has its own).
    pub(crate) fn set_deadline(&self, deadline: &Deadline) {
        let at = deadline.instant().into_std();
        let micros = at.saturating_duration_since(self.base).as_micros();
        self.deadline_micros
            .store(u64::try_from(micros).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Stops whatever runs now and anything after.
    pub(crate) fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    /// True while the statement may go on.
    pub(crate) fn may_continue(&self) -> bool {
        let elapsed = u64::try_from(self.base.elapsed().as_micros()).unwrap_or(u64::MAX);
        !self.cancelled.load(Ordering::Relaxed)
            && elapsed < self.deadline_micros.load(Ordering::Relaxed)
    }
}
