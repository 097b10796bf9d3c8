//! The database refusing new connections: someone else has taken every
//! connection slot (`max_connections`), while sqlgate's pool, already open,
//! goes on serving every kind of call from the connections it holds, and
//! readiness stays SERVING (the database is reachable, the pool is not
//! saturated).

use std::time::{Duration, Instant};

use sqlx::Connection;

use super::{
    end::sigterm_under_load,
    ledger::Ledger,
    load::{CallKind, Load, Mix},
    rig::{Rig, note},
};
use crate::helpers::{TEST_BOUND, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_refusing_new_connections() {
    within(TEST_BOUND, "the test", refusing()).await;
}

async fn refusing() {
    // 20 slots; sqlgate's pool takes 6 and its control pool up to 2.
    let Some(mut rig) = Rig::postgres(
        "max_connections = 20\nsuperuser_reserved_connections = 0",
        &[("SQLGATE_POOL__MIN_CONNECTIONS", "6")],
    )
    .await
    else {
        return;
    };
    // No statement that times out: a connection whose statement was cut
    // may be closed and would need a new one, which this database refuses.
    let mix = Mix {
        timeouts: 0,
        ..Mix::default()
    };
    let sampler = rig.sample();
    let load = Load::start(&rig, mix, Ledger::default(), "refused");
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Someone else takes every slot left.
    let url = rig.postgres_server().database_url("faults");
    let mut hogs = Vec::new();
    let refusal = loop {
        match sqlx::PgConnection::connect(&format!("{url}?application_name=hog")).await {
            Ok(conn) => hogs.push(conn),
            Err(err) => break err.to_string(),
        }
        assert!(hogs.len() < 40, "the database never refused a connection");
    };
    assert!(
        refusal.contains("too many clients") || refusal.contains("remaining connection slots"),
        "{refusal}"
    );
    let full = Instant::now();
    let served = load
        .wait_recovered(
            &[
                CallKind::PointSelect,
                CallKind::Write,
                CallKind::Batch,
                CallKind::Stream,
                CallKind::Session,
            ],
            full,
            Duration::from_secs(5),
        )
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let seen = sampler.now();
    assert!(
        seen.became(false, full).is_none(),
        "readiness went NOT_SERVING while the pool still served: {:?}",
        seen.readiness
    );
    note(&format!(
        "database full ({} connections taken by others: {refusal}): every kind of call \
         served {served:?} after from the pool",
        hogs.len()
    ));
    for hog in hogs {
        let _ = hog.close().await;
    }
    rig.assert_no_idle_in_transaction().await;
    let ending = sigterm_under_load(&mut rig, load, sampler).await;
    assert!(ending.verdict.committed > 0, "nothing committed at all");
}
