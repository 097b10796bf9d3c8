//! Which statement shapes have run out their deadline on the database.
//!
//! Cancelling a statement on PostgreSQL needs its connection's backend pid,
//! and sqlx keeps the pid it learns at connect time private: asking for it
//! costs a round trip. Paying that on every call would slow every call, and
//! not paying it means a timed-out statement can only be stopped by closing
//! its connection, which the pool then reopens (fork, TLS, setup) while
//! healthy calls wait. So the round trip is paid only for shapes that have
//! timed out before: a shape that times out once will likely do so again,
//! and then its connection is cancelled and reused instead of reopened.

use std::sync::atomic::{AtomicU64, Ordering};

/// How many shapes are remembered. A new shape whose slot is taken replaces
/// the one there: the memory stays bounded whatever callers send.
const SLOTS: usize = 1024;

/// A small direct-mapped set of statement fingerprints; lock-free, so the
/// lookup on every call costs one atomic load.
pub(crate) struct TimeoutMemory {
    slots: Box<[AtomicU64]>,
}

impl std::fmt::Debug for TimeoutMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let remembered = self
            .slots
            .iter()
            .filter(|slot| slot.load(Ordering::Relaxed) != 0)
            .count();
        f.debug_struct("TimeoutMemory")
            .field("remembered", &remembered)
            .finish()
    }
}

impl Default for TimeoutMemory {
    fn default() -> Self {
        Self {
            slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl TimeoutMemory {
    /// Notes that a statement with this fingerprint ran out its deadline.
    pub(crate) fn remember(&self, fingerprint: &str) {
        if let Some(key) = key(fingerprint) {
            self.slots[slot(key)].store(key, Ordering::Relaxed);
        }
    }

    /// Whether a statement with this fingerprint ran out its deadline before
    /// (and has not been pushed out by another shape since).
    pub(crate) fn has_timed_out(&self, fingerprint: &str) -> bool {
        key(fingerprint).is_some_and(|key| self.slots[slot(key)].load(Ordering::Relaxed) == key)
    }
}

/// The fingerprint is already a hash (16 hex digits); zero marks an empty
/// slot, so it is never a key.
fn key(fingerprint: &str) -> Option<u64> {
    u64::from_str_radix(fingerprint, 16)
        .ok()
        .filter(|&key| key != 0)
}

fn slot(key: u64) -> usize {
    // The low bits of a hash are as good as any.
    (key % SLOTS as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_a_shape_until_another_takes_its_slot() {
        let memory = TimeoutMemory::default();
        let shape = format!("{:016x}", 5u64);
        let same_slot = format!("{:016x}", 5u64 + SLOTS as u64);
        assert!(!memory.has_timed_out(&shape));
        memory.remember(&shape);
        assert!(memory.has_timed_out(&shape));
        assert!(!memory.has_timed_out(&same_slot));
        memory.remember(&same_slot);
        assert!(memory.has_timed_out(&same_slot));
        assert!(!memory.has_timed_out(&shape));
    }

    #[test]
    fn ignores_what_is_not_a_fingerprint() {
        let memory = TimeoutMemory::default();
        memory.remember("not hex");
        memory.remember("0000000000000000");
        assert!(!memory.has_timed_out("not hex"));
        assert!(!memory.has_timed_out("0000000000000000"));
    }
}
