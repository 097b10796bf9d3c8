//! The soak: the mixed load (point selects, writes, batches, streams,
//! sessions that commit, roll back or are cancelled, statements that time
//! out) for `SQLGATE_SOAK_SECONDS`, with session clients killed with their
//! process every few seconds and a PostgreSQL restart (`pg_ctl restart -m
//! fast`) in the middle. Pass: sqlgate's memory after warm-up flat within
//! ±10% of its median, never more connections than its pool, nothing idle
//! in a transaction at the end, SIGTERM clean, the ledger exact.
//!
//! The default run lasts 60 s. The full run, 10 minutes, is ignored by
//! default:
//!
//! ```sh
//! SQLGATE_SOAK_SECONDS=600 cargo test --test api -- --ignored --nocapture faults::soak::ten_minutes
//! ```

use std::time::{Duration, Instant};

use super::{
    client::{write_then_die, writer_keys},
    end::sigterm_under_load,
    ledger::{Ledger, Outcome},
    load::{CallKind, Load, Mix},
    rig::{Rig, note, readiness_bound},
};
use crate::helpers::within;

/// How often a session client is started and killed.
const KILL_EVERY: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_minute() {
    let seconds = 60;
    within(
        Duration::from_secs(seconds + 90),
        "the soak",
        soak(Duration::from_secs(seconds)),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "ten minutes; run it on purpose (see the module's doc)"]
async fn ten_minutes() {
    let seconds = std::env::var("SQLGATE_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    within(
        Duration::from_secs(seconds + 120),
        "the soak",
        soak(Duration::from_secs(seconds)),
    )
    .await;
}

async fn soak(length: Duration) {
    let Some(mut rig) = Rig::postgres("", &[]).await else {
        return;
    };
    let sampler = rig.sample();
    let ledger = Ledger::default();
    let load = Load::start(&rig, Mix::default(), ledger.clone(), "soak");
    let started = Instant::now();
    let warm_up = (length / 5).min(Duration::from_secs(60));
    let insert = rig.sql("INSERT INTO ledger (k, via) VALUES ($1, $2)");

    let (mut killed, mut killed_ready, mut restarted) = (0u64, 0u64, None);
    while started.elapsed() < length {
        if restarted.is_none() && started.elapsed() >= length / 2 {
            let down = Instant::now();
            rig.postgres_server().restart("fast").await;
            let up = Instant::now();
            rig.wait_readiness(true, readiness_bound()).await;
            load.wait_recovered(
                &[
                    CallKind::PointSelect,
                    CallKind::Write,
                    CallKind::Batch,
                    CallKind::Stream,
                    CallKind::Session,
                ],
                up,
                readiness_bound() + Duration::from_secs(6),
            )
            .await;
            restarted = Some(up - down);
        }
        let prefix = format!("soak-killed-{killed}");
        ledger.record_all(&writer_keys(&prefix), Outcome::Failed);
        killed += 1;
        killed_ready += u64::from(write_then_die(rig.address, &insert, &prefix).await);
        tokio::time::sleep(KILL_EVERY).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    rig.assert_no_idle_in_transaction().await;
    let samples = sampler.now();
    let ending = sigterm_under_load(&mut rig, load, sampler).await;

    let (min, median, max) = samples
        .rss_after(started + warm_up)
        .expect("memory samples after warm-up");
    note(&format!(
        "soak of {length:?}: {} calls, {killed} session clients killed ({killed_ready} of them \
         mid-session), database restarted once (down {restarted:?}); sqlgate RSS after \
         {warm_up:?} of warm-up: min {min} KiB, median {median} KiB, max {max} KiB; most \
         connections at once {}; ledger: {}",
        ending.report.calls, ending.samples.max_connections, ending.verdict
    ));
    assert!(restarted.is_some(), "the soak ended before the restart");
    assert!(
        max as f64 <= median as f64 * 1.1 && min as f64 >= median as f64 * 0.9,
        "sqlgate's memory after warm-up is not flat within ±10%: min {min}, median {median}, \
         max {max} KiB"
    );
    assert!(ending.verdict.committed > 0, "nothing committed at all");
}
