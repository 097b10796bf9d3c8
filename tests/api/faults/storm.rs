//! A connection storm: 2,000 gRPC client connections (500 in the default
//! run, beside the rest of the suite) open at once, then
//! all call at once. sqlgate runs up to `limits.max_concurrent_calls` (200
//! here) and sheds the others with RESOURCE_EXHAUSTED (`OVERLOADED`) at
//! once. Every call is answered within its deadline, its memory stays
//! bounded, it never holds more than its pool on the database, probes are
//! answered throughout, and a steady caller beside the storm is served
//! again as soon as it passes. (Connections over
//! `transport.max_connections`, closed at accept, are the subject of
//! `connection_limits`.)

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use sqlgate::grpc::pb::{self, ExecuteRequest};
use tonic::Code;

use super::{
    end::sigterm_under_load,
    ledger::Ledger,
    load::{CallKind, Connection, Load, Mix},
    rig::{Rig, assert_within_pool, note},
};
use crate::helpers::{TEST_BOUND, within};

/// Client connections in the full storm.
const STORM: usize = 2000;
/// Client connections in the storm that runs with the whole suite, where
/// two cores are shared with every other test.
const SMALL_STORM: usize = 500;
/// The deadline of each storm call.
const DEADLINE: Duration = Duration::from_secs(5);
/// How far past its deadline a call in the storm (and the steady caller's
/// beside it) may be answered, counted from when the client sent it: 2,000
/// requests land at once, and a request waits in the socket's buffer until
/// sqlgate reads it — only then does its `grpc-timeout` start to run. (On
/// a loaded two-core machine with debug builds that wait reaches seconds;
/// a session is several such requests, and sqlgate does not enforce the
/// `Attach` call's own deadline: see `blackhole`.)
const STORM_MARGIN: Duration = Duration::from_secs(5);
/// Calls of the storm that may fail in the transport (an HTTP/2 error
/// while thousands of connections share two cores), at most, per mille.
const TRANSPORT_FAILURES_PER_MILLE: u64 = 50;
/// How long a readiness probe may take in the storm (health is never
/// limited; on a loaded two-core machine the storm still takes the CPU).
const PROBE_BOUND: Duration = Duration::from_secs(5);
/// How much sqlgate's memory may grow in the storm: 2,000 connections at
/// about 33 KiB each (README), their calls and buffers, with room to spare.
const GROWTH_BOUND_KIB: u64 = 200 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_five_hundred_connections() {
    within(TEST_BOUND, "the test", storm(SMALL_STORM)).await;
}

/// Alone, it passes on a loaded two-core machine; beside the rest of the
/// suite on the same two cores, requests wait seconds in socket buffers
/// before sqlgate reads them: run it on purpose,
/// `cargo test --test api -- --ignored faults::storm`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "2,000 connections: run alone (see its doc)"]
async fn a_storm_of_two_thousand_connections() {
    within(TEST_BOUND, "the test", storm(STORM)).await;
}

async fn storm(connections: usize) {
    let Some(mut rig) = Rig::postgres(
        "",
        &[
            ("SQLGATE_TRANSPORT__MAX_CONNECTIONS", "2500"),
            // 2,000 handshakes at once on a loaded machine take longer
            // than the default 5 s (those cut show as h2 errors): this
            // scenario is about the calls.
            ("SQLGATE_TRANSPORT__HANDSHAKE_TIMEOUT", "60s"),
            // The defaults (the rig's 1 s keepalive drops clients too
            // busy to answer a ping, and there are 2,000 of them here).
            ("SQLGATE_TRANSPORT__KEEPALIVE_INTERVAL", "10s"),
            ("SQLGATE_TRANSPORT__KEEPALIVE_TIMEOUT", "5s"),
            ("SQLGATE_LIMITS__MAX_CONCURRENT_CALLS", "200"),
            ("SQLGATE_LIMITS__PER_CALLER__MAX_CALLS", "100000"),
        ],
    )
    .await
    else {
        return;
    };
    let sampler = rig.sample();
    // A steady caller beside the storm, on a connection of its own.
    let load = Load::start_with_margin(
        &rig,
        Mix {
            point_selects: 1,
            writes: 1,
            batches: 0,
            streams: 0,
            sessions: 1,
            timeouts: 0,
        },
        Ledger::default(),
        "storm",
        STORM_MARGIN,
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline = rig.rss_kib().expect("sqlgate's memory");

    let start = Arc::new(tokio::sync::Barrier::new(connections + 1));
    let sql = rig.sql("SELECT id, body FROM items WHERE id = $1");
    let callers: Vec<_> = (0..connections)
        .map(|n| {
            let (start, sql, address) = (start.clone(), sql.clone(), rig.address);
            tokio::spawn(async move {
                let connection = Connection::patient(address, Duration::from_secs(30));
                // Open the connection (TCP and the HTTP/2 handshake) first.
                let opened = connection.health_check().await;
                let mut request = tonic::Request::new(ExecuteRequest {
                    sql,
                    params: vec![pb::Value::int(n as i64 % 1000 + 1)],
                    max_rows: 0,
                });
                request.set_timeout(DEADLINE);
                start.wait().await;
                let began = Instant::now();
                let answer = tokio::time::timeout(
                    DEADLINE + Duration::from_secs(10),
                    connection.query().execute(request),
                )
                .await;
                let code = match answer {
                    Ok(Ok(_)) => Code::Ok,
                    Ok(Err(status)) => status.code(),
                    Err(_) => Code::Unknown,
                };
                // Hold the connection until every caller has answered.
                (opened, code, began.elapsed(), connection)
            })
        })
        .collect();
    // A probe on a connection of its own, answered through the storm.
    let probe = Connection::to(rig.address);
    probe.health_check().await.expect("the probe's connection");
    let probing = tokio::spawn(async move {
        let (mut slowest, mut unanswered) = (Duration::ZERO, 0);
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            let asked = Instant::now();
            let answer = tokio::time::timeout(PROBE_BOUND, probe.health_check()).await;
            slowest = slowest.max(asked.elapsed());
            unanswered += u32::from(!matches!(answer, Ok(Ok(()))));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (slowest, unanswered)
    });
    start.wait().await;
    let stormed = Instant::now();
    let mut codes: BTreeMap<i32, u64> = BTreeMap::new();
    let mut late = Vec::new();
    let mut held = Vec::new();
    let mut unopened = Vec::new();
    for caller in callers {
        let (opened, code, took, connection) = caller.await.expect("a storm caller");
        if let Err(status) = opened {
            unopened.push(format!("{:?} {}", status.code(), status.message()));
        }
        *codes.entry(code as i32).or_default() += 1;
        if took > DEADLINE + STORM_MARGIN {
            late.push(format!("{code:?} after {took:?}"));
        }
        held.push(connection);
    }
    let storm_took = stormed.elapsed();
    let (slowest_probe, unanswered) = probing.await.expect("the probe");
    let peak = sampler.now().peak_rss(baseline);
    drop(held);
    let named: Vec<String> = codes
        .iter()
        .map(|(code, n)| format!("{:?} {n}", Code::from_i32(*code)))
        .collect();
    note(&format!(
        "storm of {connections} connections answered in {storm_took:?}: {}; sqlgate RSS {baseline} KiB \
         before, {peak} KiB at most; slowest readiness probe {slowest_probe:?}",
        named.join(", ")
    ));
    assert!(
        unopened.is_empty(),
        "{} of {connections} connections could not be opened, e.g. {:?}",
        unopened.len(),
        unopened.first()
    );
    assert!(late.is_empty(), "storm calls past their deadline: {late:?}");
    assert_eq!(
        unanswered, 0,
        "readiness probes unanswered within {PROBE_BOUND:?} in the storm"
    );
    let count = |code: Code| codes.get(&(code as i32)).copied().unwrap_or(0);
    assert!(count(Code::Ok) > 0, "no storm call was served");
    assert!(
        count(Code::ResourceExhausted) > 0,
        "no storm call was shed with RESOURCE_EXHAUSTED"
    );
    // Served, or shed at once; a few transport failures at most.
    let transport = count(Code::Internal) + count(Code::Unknown) + count(Code::Unavailable);
    assert!(
        transport * 1000 <= connections as u64 * TRANSPORT_FAILURES_PER_MILLE,
        "{transport} storm calls failed in the transport: {named:?}"
    );
    assert_eq!(
        count(Code::Ok) + count(Code::ResourceExhausted) + transport,
        connections as u64,
        "storm answers: {named:?}"
    );
    assert!(
        peak.saturating_sub(baseline) < GROWTH_BOUND_KIB,
        "sqlgate grew from {baseline} KiB to {peak} KiB in the storm"
    );
    assert_within_pool(&sampler.now(), &[]);

    // The storm has passed: the steady caller is served again.
    let after = Instant::now();
    load.wait_recovered(
        &[CallKind::PointSelect, CallKind::Write, CallKind::Session],
        after,
        Duration::from_secs(5),
    )
    .await;
    rig.assert_no_idle_in_transaction().await;
    sigterm_under_load(&mut rig, load, sampler).await;
}
