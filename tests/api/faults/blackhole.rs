//! A black-holed network path: an `iptables` rule drops every packet to
//! the database's port (no RST, no ICMP: the connections look alive and
//! answer nothing), under load, for longer than the readiness bound; then
//! the rule goes. Calls end at their deadlines, readiness flips and comes
//! back, connections stuck on the dead path are not handed to later
//! callers (a point select that got another call's answer is a wrong
//! answer), and the ledger is exact.

use std::time::{Duration, Instant};

use super::{
    end::sigterm_under_load,
    ledger::Ledger,
    load::{CallKind, Load, Mix},
    rig::{BlackHole, Rig, assert_within_pool, note, readiness_bound},
};
use crate::helpers::{TEST_BOUND, within};

/// How long the path stays dead.
const HOLE: Duration = Duration::from_secs(4);

/// The kinds of call that must succeed again once the path is back.
const RECOVERED: [CallKind; 4] = [
    CallKind::PointSelect,
    CallKind::Write,
    CallKind::Batch,
    CallKind::Stream,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_behind_a_black_hole() {
    within(
        TEST_BOUND,
        "the test",
        black_hole(Backend::Postgres, NO_SESSIONS),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_behind_a_black_hole() {
    within(
        TEST_BOUND,
        "the test",
        black_hole(Backend::MySql, NO_SESSIONS),
    )
    .await;
}

/// Found by this suite and not fixed yet: a session's statement or commit
/// stuck on a dead path is answered only once its cancel has given up
/// (seconds after the statement's deadline), and a session's commit has no
/// bound but the connection's; sqlgate does not enforce the `Attach`
/// call's own `grpc-timeout` (a client library that does not enforce it
/// either waits). The same scenario with sessions in the load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "sessions on a dead path answer seconds past their deadline (not fixed yet)"]
async fn sessions_behind_a_black_hole_answer_within_their_deadline() {
    within(
        TEST_BOUND,
        "the test",
        black_hole(Backend::Postgres, Mix::default()),
    )
    .await;
}

/// The load without sessions (see the ignored test above).
const NO_SESSIONS: Mix = Mix {
    point_selects: 3,
    writes: 2,
    batches: 1,
    streams: 1,
    sessions: 0,
    timeouts: 1,
};

use crate::helpers::Backend;

async fn black_hole(backend: Backend, mix: Mix) {
    let Some(mut rig) = Rig::on(backend).await else {
        return;
    };
    let sampler = rig.sample();
    let load = Load::start(&rig, mix, Ledger::default(), "hole");
    tokio::time::sleep(Duration::from_secs(2)).await;

    let Some(hole) = BlackHole::drop_packets_to(rig.database_port()) else {
        return;
    };
    let down = Instant::now();
    let not_ready = rig
        .wait_readiness(false, readiness_bound() + Duration::from_millis(500))
        .await;
    tokio::time::sleep(HOLE.saturating_sub(down.elapsed())).await;
    hole.lift();
    let up = Instant::now();
    // Connections sqlgate closed on the dead path stay in the database's
    // view until their FIN, retransmitted once the path heals, arrives.
    rig.dead_path.push((down, up + Duration::from_secs(5)));

    // The probe's own connection may be one that was stuck: readiness may
    // wait for it to be given up, one probe timeout, before the next probe
    // opens a fresh one.
    let back = rig
        .wait_readiness(true, readiness_bound() + Duration::from_secs(1))
        .await;
    let recovered = load
        .wait_recovered(
            &RECOVERED,
            up,
            readiness_bound() + CallKind::Session.deadline() + Duration::from_secs(3),
        )
        .await;
    note(&format!(
        "{backend:?} black-holed for {HOLE:?}: readiness NOT_SERVING after {not_ready:?}, \
         SERVING {back:?} after the path came back; every kind of call served again \
         {recovered:?} after"
    ));
    // Stale answers queued on the dead path (TCP retransmits them once it
    // heals) must reach nobody: let the load run on a while.
    tokio::time::sleep(Duration::from_secs(2)).await;
    rig.assert_no_idle_in_transaction().await;
    let ending = sigterm_under_load(&mut rig, load, sampler).await;
    assert!(ending.verdict.committed > 0, "nothing committed at all");
    assert!(
        ending
            .report
            .count(CallKind::PointSelect, tonic::Code::DeadlineExceeded)
            + ending
                .report
                .count(CallKind::PointSelect, tonic::Code::Unavailable)
            > 0,
        "no call noticed the dead path"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_the_database_is_black_holed() {
    within(TEST_BOUND, "the test", sigterm_in_black_hole()).await;
}

/// SIGTERM while every connection of sqlgate's hangs on a dead path: it
/// exits 0 within its bound; once the path heals, the database sees the
/// connections closed (the kernel still delivers their FIN).
async fn sigterm_in_black_hole() {
    let Some(mut rig) = Rig::postgres("", &[]).await else {
        return;
    };
    let sampler = rig.sample();
    let load = Load::start(&rig, NO_SESSIONS, Ledger::default(), "holeterm");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let Some(hole) = BlackHole::drop_packets_to(rig.database_port()) else {
        return;
    };
    let hole_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ledger = load.ledger.clone();
    load.expect_shutdown();
    let exit = rig.sigterm_with_database_down().await;
    let report = load.stop().await;
    hole.lift();
    rig.dead_path
        .push((hole_at, Instant::now() + Duration::from_secs(30)));
    let samples = sampler.finish().await;
    assert_within_pool(&samples, &rig.dead_path);
    let started = Instant::now();
    loop {
        let left = rig.sqlgate_connections().await;
        if left == Some(0) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{left:?} connections of the exited sqlgate still on the database 30 s after the \
             path healed: {:?}",
            rig.monitor.sessions().await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    rig.assert_no_idle_in_transaction().await;
    let verdict = ledger.verify(&rig.ledger_keys().await);
    note(&format!(
        "{report}ledger: {verdict}\nexit after SIGTERM on a dead path: {exit:?}; \
         connections gone {:?} after the path healed",
        started.elapsed()
    ));
}
