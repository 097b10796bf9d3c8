//! The `Attach` call's own `grpc-timeout` bounds its session: sqlgate
//! enforces it itself (a client library may not), so a session whose
//! client forgot it ends at the call's deadline — rolled back, its
//! connection given back, counted as `call_deadline` — and the stream ends
//! with DEADLINE_EXCEEDED.

use std::time::{Duration, Instant};

use sqlgate::grpc::pb::BeginSession;
use tonic::Code;

use crate::{
    helpers::{Backend, error_details, spawn_app, v},
    observe::DatabaseView,
    session_client::{CLEANUP_BOUND, Session, wait_for_end, write_and_see_it_open},
};

/// The Attach call's deadline in these tests.
const CALL_TIMEOUT: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_ends_at_its_call_deadline() {
    crate::helpers::within(
        crate::helpers::TEST_BOUND,
        "the test",
        idle_session_ends_at_call_deadline(Backend::Postgres),
    )
    .await;
}

async fn idle_session_ends_at_call_deadline(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    app.run("CREATE TABLE t (id INTEGER)").await;
    let mut view = DatabaseView::of(&app).await;

    let attached = Instant::now();
    let mut session = Session::begin_call(
        app.channel.clone(),
        BeginSession::default(),
        &[],
        Some(CALL_TIMEOUT),
    )
    .await
    .expect("begin");
    write_and_see_it_open(&app, &mut view, &mut session, 1).await;

    // The session now sits idle (its idle timeout is the default 60 s);
    // only the call's deadline can end it.
    let status = session
        .final_status()
        .await
        .expect("the stream ends with an error status");
    let ended_after = attached.elapsed();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(
        error_details(&status)
            .1
            .get("end_reason")
            .map(String::as_str),
        Some("call_deadline"),
        "{status:?}"
    );
    assert!(
        ended_after >= CALL_TIMEOUT && ended_after < CALL_TIMEOUT + Duration::from_millis(800),
        "ended {ended_after:?} after attaching; the call's deadline is {CALL_TIMEOUT:?}"
    );
    wait_for_end(&app, "call_deadline", 1, CLEANUP_BOUND).await;
    // Nothing idle in transaction, the connection back in the pool, the
    // write rolled back.
    view.assert_settles_clean(&app, CLEANUP_BOUND).await;
    assert_eq!(app.count("t").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_without_a_call_deadline_is_not_ended_by_one() {
    crate::helpers::within(
        crate::helpers::TEST_BOUND,
        "the test",
        no_call_deadline(Backend::Postgres),
    )
    .await;
}

/// Without a `grpc-timeout` the session lives on (bounded by its idle
/// timeout and lifetime as before) and commits.
async fn no_call_deadline(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    app.run("CREATE TABLE t (id INTEGER)").await;
    let mut session = Session::begin(&app, &[]).await.expect("begin");
    session
        .execute(&app, 1, "INSERT INTO t VALUES ($1)", vec![v::int(1)])
        .await
        .expect("insert");
    tokio::time::sleep(CALL_TIMEOUT + Duration::from_millis(300)).await;
    session.commit().await;
    assert_eq!(app.count("t").await, 1);
}
