//! A black-holed network path: an `iptables` rule drops every packet to
//! the database's port (no RST, no ICMP: the connections look alive and
//! answer nothing), under load, for longer than the readiness bound; then
//! the rule goes. Calls end at their deadlines, readiness flips and comes
//! back, connections stuck on the dead path are not handed to later
//! callers (a point select that got another call's answer is a wrong
//! answer), and the ledger is exact.

use std::time::{Duration, Instant};

use sqlgate::grpc::pb::{
    BeginSession, SessionRequest, SessionResponse, Value, session_response::Response as Answer,
};
use tokio_stream::wrappers::ReceiverStream;

use super::{
    end::sigterm_under_load,
    ledger::Ledger,
    load::{CallKind, Connection, Load, Mix},
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

/// The same scenario with sessions in the load: a session's statement is
/// answered at its deadline even while its cancel hangs on the dead path
/// (the connection is closed instead of reused), a session's commit and
/// rollback are bounded, and sqlgate enforces the `Attach` call's own
/// `grpc-timeout` (a client library that does not enforce it is not left
/// waiting).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_behind_a_black_hole_answer_within_their_deadline() {
    within(
        TEST_BOUND,
        "the test",
        black_hole(Backend::Postgres, Mix::default()),
    )
    .await;
}

/// The load without sessions (the session variant is its own test above).
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_on_a_black_holed_path_reports_its_outcome_unknown() {
    within(TEST_BOUND, "the test", commit_in_black_hole()).await;
}

/// The bound of a commit when the Attach call sets no deadline: the
/// session statement default (`deadlines.session_execute.default`).
const COMMIT_BOUND: Duration = Duration::from_secs(3);

/// The Attach call's deadline of the session that sets one.
const CALL_DEADLINE: Duration = Duration::from_secs(2);

/// Two sessions write, then the path goes dead and both commit: the one
/// whose Attach call has a deadline is answered at that deadline, the one
/// without at the server's commit bound; both say that the outcome is
/// unknown (DEADLINE_EXCEEDED), never `committed` or `rolled_back`, and
/// nothing is left open once the path heals.
async fn commit_in_black_hole() {
    let default = format!("{}s", COMMIT_BOUND.as_secs());
    let Some(mut rig) = Rig::postgres(
        "",
        &[(
            "SQLGATE_DEADLINES__SESSION_EXECUTE__DEFAULT",
            default.as_str(),
        )],
    )
    .await
    else {
        return;
    };
    let connection = Connection::to(rig.address);
    let attached = Instant::now();
    let mut with_deadline = OpenSession::begin(&connection, &rig, Some(CALL_DEADLINE), "dl").await;
    let mut without = OpenSession::begin(&connection, &rig, None, "nodl").await;

    let Some(hole) = BlackHole::drop_packets_to(rig.database_port()) else {
        return;
    };
    let down = Instant::now();
    let (first, second) = tokio::join!(with_deadline.commit(), without.commit());
    hole.lift();
    rig.dead_path
        .push((down, Instant::now() + Duration::from_secs(5)));

    let since_attach = outcome_unknown_at(first, attached, CALL_DEADLINE, "into the call");
    let since_commit = outcome_unknown_at(second, down, COMMIT_BOUND, "after it was sent");
    note(&format!(
        "commits on a dead path: answered {since_attach:?} into a {CALL_DEADLINE:?} call, \
         and {since_commit:?} after sending with no call deadline"
    ));
    // Once the path heals, the closed connections' FIN arrives: nothing
    // stays open in a transaction.
    let started = Instant::now();
    while rig.idle_in_transaction().await != Some(0) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "a transaction still open 30 s after the path healed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    rig.sigterm().await;
}

/// Checks that a commit was answered "outcome unknown" (DEADLINE_EXCEEDED)
/// `bound` after `since`, give or take the answer's way out; returns when.
fn outcome_unknown_at(
    (status, answered): (tonic::Status, Instant),
    since: Instant,
    bound: Duration,
    what: &str,
) -> Duration {
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    assert!(
        status.message().contains("outcome is unknown"),
        "{status:?}"
    );
    let after = answered - since;
    assert!(
        after >= bound - Duration::from_millis(50) && after < bound + Duration::from_millis(1500),
        "the commit was answered {after:?} {what}; its bound is {bound:?}"
    );
    after
}

/// A session of the commit scenario: begun, one row written.
struct OpenSession {
    requests: tokio::sync::mpsc::Sender<SessionRequest>,
    answers: tonic::Streaming<SessionResponse>,
}

impl OpenSession {
    async fn begin(
        connection: &Connection,
        rig: &Rig,
        call_deadline: Option<Duration>,
        key: &str,
    ) -> Self {
        let (requests, inbox) = tokio::sync::mpsc::channel(8);
        let mut call = tonic::Request::new(ReceiverStream::new(inbox));
        if let Some(deadline) = call_deadline {
            // By hand: tonic's own `set_timeout` would cut the call in the
            // client and hide what sqlgate answers.
            let header = format!("{}m", deadline.as_millis());
            call.metadata_mut()
                .insert("grpc-timeout", header.parse().expect("ascii"));
        }
        requests
            .send(SessionRequest::begin(BeginSession::default()))
            .await
            .expect("begin sent");
        requests
            .send(SessionRequest::execute(
                1,
                rig.sql("INSERT INTO ledger VALUES ($1, $2)"),
                vec![Value::text(key), Value::text("session")],
            ))
            .await
            .expect("insert sent");
        let mut answers = connection
            .sessions()
            .attach(call)
            .await
            .expect("attach")
            .into_inner();
        loop {
            let answer = answers.message().await.expect("an answer").expect("open");
            if matches!(answer.response, Some(Answer::Done(_))) {
                break;
            }
            assert!(
                matches!(answer.response, Some(Answer::Began(_) | Answer::Frame(_))),
                "{answer:?}"
            );
        }
        Self { requests, answers }
    }

    /// Sends `commit`; the status the stream ended with, and when.
    async fn commit(&mut self) -> (tonic::Status, Instant) {
        self.requests
            .send(SessionRequest::commit())
            .await
            .expect("commit sent");
        match self.answers.message().await {
            Ok(Some(answer)) => panic!("a commit on a dead path answered {answer:?}"),
            Ok(None) => panic!("the stream ended without a status"),
            Err(status) => (status, Instant::now()),
        }
    }
}
