//! The database restarts under load: PostgreSQL with `pg_ctl restart -m
//! fast` (backends told to quit, a clean shutdown) and `-m immediate` (the
//! server quits at once and recovers from its WAL), MariaDB killed with
//! SIGKILL and started again. Unary calls, batches, streams and sessions
//! are in flight throughout; sqlgate itself is never restarted.

use std::time::{Duration, Instant};

use super::{
    end::sigterm_under_load,
    ledger::Ledger,
    load::{CallKind, Load, Mix},
    rig::{Rig, note, readiness_bound},
};
use crate::helpers::{TEST_BOUND, within};

/// The kinds of call that must succeed again once the database is back.
const RECOVERED: [CallKind; 5] = [
    CallKind::PointSelect,
    CallKind::Write,
    CallKind::Batch,
    CallKind::Stream,
    CallKind::Session,
];

/// How long after the database is back every kind of call must have
/// succeeded again: readiness coming back, then one call's deadline.
fn recovery_bound() -> Duration {
    readiness_bound() + CallKind::Session.deadline() + Duration::from_secs(2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_fast_under_load() {
    within(TEST_BOUND, "the test", postgres_restart("fast")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_immediate_under_load() {
    within(TEST_BOUND, "the test", postgres_restart("immediate")).await;
}

async fn postgres_restart(mode: &str) {
    let Some(mut rig) = Rig::postgres("", &[]).await else {
        return;
    };
    let sampler = rig.sample();
    let load = Load::start(&rig, Mix::default(), Ledger::default(), mode);
    tokio::time::sleep(Duration::from_secs(2)).await;

    let down = Instant::now();
    rig.postgres_server().restart(mode).await;
    let up = Instant::now();
    let outage = up - down;

    // Readiness: back within its bound of the database being back; and if
    // the outage outlasted the failure threshold, it went NOT_SERVING.
    let back = rig.wait_readiness(true, readiness_bound()).await;
    let seen = sampler.now();
    if outage > readiness_bound() {
        assert!(
            seen.became(false, down).is_some(),
            "readiness stayed SERVING through a {outage:?} outage"
        );
    }
    let recovered = load.wait_recovered(&RECOVERED, up, recovery_bound()).await;
    note(&format!(
        "pg_ctl restart -m {mode}: database down {outage:?}; readiness SERVING {back:?} \
         after; every kind of call served again {recovered:?} after"
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    rig.assert_no_idle_in_transaction().await;

    let ending = sigterm_under_load(&mut rig, load, sampler).await;
    assert!(ending.verdict.committed > 0, "nothing committed at all");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_killed_and_restarted_under_load() {
    within(TEST_BOUND, "the test", mariadb_kill(false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_mariadb_is_down() {
    within(TEST_BOUND, "the test", mariadb_kill(true)).await;
}

/// MariaDB SIGKILLed under load and kept down for 3 s (longer than the
/// readiness bound, so readiness must flip); then either started again
/// (service must come back without a restart of sqlgate) or, with
/// `sigterm_while_down`, sqlgate is stopped while the database is still
/// down (it must exit 0 within its bound all the same).
async fn mariadb_kill(sigterm_while_down: bool) {
    let Some(mut rig) = Rig::mariadb(&[]).await else {
        return;
    };
    let sampler = rig.sample();
    let load = Load::start(&rig, Mix::default(), Ledger::default(), "kill");
    tokio::time::sleep(Duration::from_secs(2)).await;

    let down = Instant::now();
    rig.mariadb_server().kill().await;
    let not_ready = rig
        .wait_readiness(false, readiness_bound() + Duration::from_secs(1))
        .await;
    note(&format!(
        "MariaDB killed: readiness NOT_SERVING after {not_ready:?}"
    ));
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(down.elapsed())).await;

    if sigterm_while_down {
        let ledger = load.ledger.clone();
        load.expect_shutdown();
        let exit = rig.sigterm_with_database_down().await;
        let report = load.stop().await;
        let samples = sampler.finish().await;
        super::rig::assert_within_pool(&samples, &rig.dead_path);
        rig.mariadb_server().start_again().await;
        let verdict = ledger.verify(&rig.ledger_keys().await);
        note(&format!(
            "{report}ledger: {verdict}\nexit after SIGTERM with the database down: {exit:?}"
        ));
        return;
    }

    rig.mariadb_server().start_again().await;
    let up = Instant::now();
    let back = rig.wait_readiness(true, readiness_bound()).await;
    let recovered = load.wait_recovered(&RECOVERED, up, recovery_bound()).await;
    note(&format!(
        "MariaDB restarted after {:?}: readiness SERVING {back:?} after; every kind of call \
         served again {recovered:?} after",
        up - down
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    rig.assert_no_idle_in_transaction().await;
    let ending = sigterm_under_load(&mut rig, load, sampler).await;
    assert!(ending.verdict.committed > 0, "nothing committed at all");
}
