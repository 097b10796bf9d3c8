//! A call's deadline: the instant by which its answer is due. It is spent
//! by the wait for a pooled connection and then by the database work; the
//! executors turn what is left into a database-side limit (PostgreSQL
//! `statement_timeout`, a SQLite progress handler) and, when it passes,
//! cancel the statement on the server and close its connection.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{
    config::MethodBudget,
    error::{DeadlinePhase, Error},
};

/// When a call must be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    at: Instant,
}

impl Deadline {
    /// A deadline `budget` from now.
    pub fn after(budget: Duration) -> Self {
        Self {
            at: Instant::now() + budget,
        }
    }

    /// The instant itself, for `tokio::time::timeout_at`.
    pub fn instant(&self) -> Instant {
        self.at
    }

    /// What is left of the budget (zero once passed).
    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    /// True once the deadline has passed.
    pub fn expired(&self) -> bool {
        Instant::now() >= self.at
    }

    /// Fails with DEADLINE_EXCEEDED (phase `phase`) if the deadline has passed.
    pub fn check(&self, phase: DeadlinePhase) -> Result<(), Error> {
        if self.expired() {
            Err(Error::DeadlineExceeded(phase))
        } else {
            Ok(())
        }
    }

    /// The remaining budget in whole milliseconds, at least 1, for
    /// database-side limits (a limit of 0 means "none" to PostgreSQL).
    pub fn remaining_millis(&self) -> u64 {
        u64::try_from(self.remaining().as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }
}

impl MethodBudget {
    /// The one rule for a call's or a statement's deadline: what the client
    /// asked for, capped at the maximum, or the default when it asked for
    /// nothing. Kept here rather than in `config`, which must not depend on
    /// the database side.
    pub fn deadline(&self, asked: Option<Duration>) -> Deadline {
        Deadline::after(asked.map_or(self.default, |asked| asked.min(self.max)))
    }
}

/// Why database work was cut short before it finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cut {
    /// The call's deadline passed.
    Deadline,
    /// Shutdown's drain is over: in-flight work is stopped so that the
    /// pool can close.
    Shutdown,
}

impl Cut {
    /// What the caller is told.
    pub(crate) fn error(self) -> Error {
        match self {
            Cut::Deadline => Error::DeadlineExceeded(DeadlinePhase::Database),
            Cut::Shutdown => Error::ShuttingDown,
        }
    }
}

/// Runs `work` until it finishes, `deadline` passes, or `shutdown` is
/// cancelled, whichever comes first. A cut `work` is dropped mid-flight: the
/// caller must cancel it on the server and recover or close its connection.
pub(crate) async fn within<T>(
    deadline: &Deadline,
    shutdown: &CancellationToken,
    work: impl Future<Output = T>,
) -> Result<T, Cut> {
    tokio::select! {
        biased;
        finished = tokio::time::timeout_at(deadline.instant(), work) => {
            finished.map_err(|_| Cut::Deadline)
        }
        () = shutdown.cancelled() => Err(Cut::Shutdown),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_cannot_exceed_the_maximum() {
        let budget = MethodBudget {
            default: Duration::from_secs(30),
            max: Duration::from_secs(60),
        };
        let none = budget.deadline(None).remaining();
        assert!(none > Duration::from_secs(29) && none <= Duration::from_secs(30));
        let long = budget.deadline(Some(Duration::from_secs(3600))).remaining();
        assert!(long > Duration::from_secs(59) && long <= Duration::from_secs(60));
        let short = budget
            .deadline(Some(Duration::from_millis(100)))
            .remaining();
        assert!(short <= Duration::from_millis(100));
    }
}
