//! How every scenario ends: SIGTERM while the load still runs, then the
//! ledger judged against the database.

use super::{
    ledger::Verdict,
    load::{Load, Report},
    rig::{Rig, Sampler, Samples, assert_within_pool, note},
};

/// What a scenario saw, for its own assertions and its log.
pub struct Ending {
    pub report: Report,
    pub verdict: Verdict,
    pub samples: Samples,
}

/// SIGTERM under load: sqlgate exits 0 within its bound and leaves no
/// connection behind (see [`Rig::sigterm`]); every answer was in time and
/// right; the pool was never exceeded; the ledger is exact.
pub async fn sigterm_under_load(rig: &mut Rig, load: Load, sampler: Sampler) -> Ending {
    let ledger = load.ledger.clone();
    load.expect_shutdown();
    let exit = rig.sigterm().await;
    let report = load.stop().await;
    let samples = sampler.finish().await;
    assert_within_pool(&samples, &rig.dead_path);
    let verdict = ledger.verify(&rig.ledger_keys().await);
    note(&format!(
        "{report}ledger: {verdict}\nexit after SIGTERM: {exit:?}; most connections at once: {}",
        samples.max_connections
    ));
    Ending {
        report,
        verdict,
        samples,
    }
}
