//! The fault suite: what production does to sqlgate on its worst day, on
//! database servers the tests own (see `owned_database`), against the real
//! `sqlgate` binary.
//!
//! Every scenario runs a mixed load (point selects, writes, batches,
//! streams, sessions that commit, roll back or are cancelled, statements
//! that time out) while a fault hits: a database restart (PostgreSQL
//! `pg_ctl restart -m fast` and `-m immediate`, MariaDB killed with
//! SIGKILL), a black-holed network path (`iptables -j DROP`), the database
//! refusing new connections, a storm of 2,000 client connections, a reader
//! that never reads and clients that vanish mid-frame. Each asserts:
//!
//! - bounded answers: no call outlives its deadline by more than
//!   [`rig::MARGIN`], and every answer carries a code the situation calls for;
//! - readiness goes NOT_SERVING and comes back within the documented number
//!   of probe intervals, and calls succeed again without restarting sqlgate;
//! - the ledger (`ledger`): every write a client was told was committed
//!   exists, every write it was told failed (or never asked to commit)
//!   does not, unknown outcomes are counted; no `idle in transaction`, never
//!   more connections from sqlgate than its pool (plus its two control
//!   connections), and none at all after SIGTERM, which ends each scenario
//!   with exit 0 within its bound.
//!
//! The soak (`soak`) runs the mixed load for `SQLGATE_SOAK_SECONDS` (60 in
//! the default run) with a database restart in the middle and killed
//! client processes; the 10-minute run is `#[ignore]`d (see RELIABILITY.md).

mod blackhole;
mod client;
mod end;
mod ledger;
mod load;
mod refused;
mod restart;
mod rig;
mod slow_clients;
mod soak;
mod storm;
