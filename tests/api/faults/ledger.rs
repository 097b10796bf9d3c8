//! The ledger of writes: every write carries a unique key, and the client
//! records what it was told about it. At the end the database is the
//! judge: a key told committed must be there, a key told failed (or whose
//! transaction was never asked to commit) must not, and keys whose outcome
//! the client could not know (a deadline or a broken connection after the
//! commit may have been sent) are counted, either way.

use std::{
    collections::{BTreeMap, HashSet},
    sync::{Arc, Mutex},
};

use tonic::{Code, Status};

/// What a client was told about one write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged as committed: it must exist.
    Committed,
    /// Refused before anything ran, rolled back, or never committed: it
    /// must not exist.
    Failed,
    /// The answer came too late or not at all after the commit may have
    /// reached the database: either way is correct.
    Unknown,
}

/// What a failed unary call or batch says about its writes. Only answers
/// that sqlgate gives before the statement reaches the database mean
/// "not written"; a deadline in the database phase, a broken connection or
/// a cut call may have come after the commit.
pub fn outcome_of(status: &Status) -> Outcome {
    use tonic_types::StatusExt;
    let details = status.get_error_details();
    let info = details.error_info();
    let reason = info.map(|info| info.reason.as_str()).unwrap_or_default();
    let phase = info
        .and_then(|info| info.metadata.get("phase"))
        .map(String::as_str);
    match status.code() {
        // Shed, over a limit, or no connection within the acquire timeout.
        Code::ResourceExhausted => Outcome::Failed,
        Code::DeadlineExceeded if matches!(phase, Some("before_start" | "queue")) => {
            Outcome::Failed
        }
        // Refused at once while the probe finds the database unreachable.
        Code::Unavailable if status.message().contains("health probe failing") => Outcome::Failed,
        Code::Unavailable if reason == "SHUTTING_DOWN" => Outcome::Failed,
        // The database refused the statement itself.
        Code::InvalidArgument | Code::AlreadyExists | Code::FailedPrecondition => Outcome::Failed,
        _ => Outcome::Unknown,
    }
}

/// Keys and what their writers were told; cheap to clone and share.
#[derive(Clone, Default)]
pub struct Ledger {
    entries: Arc<Mutex<BTreeMap<String, Outcome>>>,
}

/// The ledger's verdict.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub committed: usize,
    pub failed: usize,
    pub unknown: usize,
    /// Unknown keys that turned out to be written.
    pub unknown_written: usize,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} acknowledged committed (all present), {} acknowledged failed (all absent), \
             {} unknown ({} of them written)",
            self.committed, self.failed, self.unknown, self.unknown_written
        )
    }
}

impl Ledger {
    /// Records what the writer of `key` was told (a key is written once).
    pub fn record(&self, key: &str, outcome: Outcome) {
        let previous = self
            .entries
            .lock()
            .expect("ledger")
            .insert(key.to_owned(), outcome);
        assert!(previous.is_none(), "key {key} written twice");
    }

    /// Records `outcome` for every key of `keys`.
    pub fn record_all(&self, keys: &[String], outcome: Outcome) {
        for key in keys {
            self.record(key, outcome);
        }
    }

    /// Judges the ledger against the keys the database holds (`present`);
    /// panics naming every key that contradicts what its writer was told,
    /// and every key present that no writer recorded.
    pub fn verify(&self, present: &HashSet<String>) -> Verdict {
        let entries = self.entries.lock().expect("ledger").clone();
        let mut verdict = Verdict::default();
        let mut lost = Vec::new();
        let mut phantom = Vec::new();
        for (key, outcome) in &entries {
            let there = present.contains(key);
            match outcome {
                Outcome::Committed => {
                    verdict.committed += 1;
                    if !there {
                        lost.push(key.clone());
                    }
                }
                Outcome::Failed => {
                    verdict.failed += 1;
                    if there {
                        phantom.push(key.clone());
                    }
                }
                Outcome::Unknown => {
                    verdict.unknown += 1;
                    verdict.unknown_written += usize::from(there);
                }
            }
        }
        let stray: Vec<_> = present
            .iter()
            .filter(|key| !entries.contains_key(*key))
            .cloned()
            .collect();
        assert!(
            lost.is_empty() && phantom.is_empty() && stray.is_empty(),
            "the ledger does not match the database ({verdict}):\n\
             acknowledged committed but missing: {lost:?}\n\
             acknowledged failed but present: {phantom:?}\n\
             present but never written by a client: {stray:?}"
        );
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_commit_and_a_phantom_write_are_both_caught() {
        let ledger = Ledger::default();
        ledger.record("a", Outcome::Committed);
        ledger.record("b", Outcome::Failed);
        ledger.record("c", Outcome::Unknown);
        let fine: HashSet<String> = ["a", "c"].map(String::from).into();
        assert_eq!(
            ledger.verify(&fine),
            Verdict {
                committed: 1,
                failed: 1,
                unknown: 1,
                unknown_written: 1
            }
        );
        for wrong in [vec![], vec!["a", "b"], vec!["a", "z"]] {
            let present: HashSet<String> = wrong.into_iter().map(String::from).collect();
            let caught = std::panic::catch_unwind(|| ledger.verify(&present));
            assert!(caught.is_err(), "{present:?} passed");
        }
    }
}
