//! The limits and error reasons the README promises for sessions: how many
//! may be open, how long they may idle, how long one statement may run, and
//! the `ErrorInfo` reason of each refusal.

use std::time::{Duration, Instant};

use sqlgate::grpc::pb::{BeginSession, SessionRequest, session_response::Response as Answer};
use tonic::Code;
use tonic_types::StatusExt;

use crate::{
    helpers::{Backend, WAIT, error_details, list_sessions, slow_sql, spawn_app_with, within},
    observe::DatabaseView,
    on_every_backend,
    session_client::{
        CLEANUP_BOUND, Session, ended_with, error_status, session_holding_a_write,
        two_sessions_and_a_refused_third,
    },
};

async fn the_session_limit_is_resource_exhausted_with_its_reason(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |s| {
        s.pool.max_connections = 8;
        s.sessions.max_open = 2;
        s.sessions.max_pool_share = 1.0;
    })
    .await
    else {
        return;
    };
    let (first, second, status) =
        two_sessions_and_a_refused_third(&app, "sessions.max_open is 2").await;
    assert_eq!(error_details(&status).0, "SESSION_LIMIT", "{status:?}");
    assert!(
        status.get_error_details().retry_info().is_some(),
        "RetryInfo: {status:?}"
    );
    assert_eq!(app.pool_stats().await.open_sessions, 2);
    first.rollback().await;
    // Room again once one has ended.
    Session::begin(&app, &[])
        .await
        .expect("room for one more")
        .rollback()
        .await;
    second.rollback().await;
    app.stop().await;
}
on_every_backend!(the_session_limit_is_resource_exhausted_with_its_reason);

async fn an_idle_timeout_asked_for_is_capped_by_the_maximum(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |s| {
        s.sessions.default_idle_timeout = Duration::from_secs(60);
        s.sessions.max_idle_timeout = Duration::from_millis(300);
    })
    .await
    else {
        return;
    };
    app.run("CREATE TABLE t (id INTEGER)").await;
    let mut view = DatabaseView::of(&app).await;
    // The client asks for an hour; the server allows 300 ms.
    let since = Instant::now();
    let mut session = Session::begin_on(
        app.channel.clone(),
        BeginSession {
            idle_timeout: Some(prost_types::Duration {
                seconds: 3600,
                nanos: 0,
            }),
            ..BeginSession::default()
        },
    )
    .await
    .expect("begin");
    session
        .execute(
            &app,
            1,
            "INSERT INTO t VALUES ($1)",
            vec![crate::helpers::v::int(1)],
        )
        .await
        .expect("insert");
    ended_with(&mut session, Code::Aborted, "idle_timeout").await;
    let idle = since.elapsed();
    assert!(
        idle >= Duration::from_millis(300) && idle < Duration::from_secs(2),
        "ended after {idle:?}; the cap is 300 ms"
    );
    view.assert_settles_clean(&app, CLEANUP_BOUND).await;
    assert_eq!(app.count("t").await, 0);
    app.stop().await;
}
on_every_backend!(an_idle_timeout_asked_for_is_capped_by_the_maximum);

/// Sends a slow statement with `timeout` (or none) and returns how long its
/// DEADLINE_EXCEEDED took.
async fn time_out(session: &mut Session, backend: Backend, timeout: Option<Duration>) -> Duration {
    let started = Instant::now();
    session
        .send(match timeout {
            Some(timeout) => SessionRequest::execute_within(7, slow_sql(backend), vec![], timeout),
            None => SessionRequest::execute(7, slow_sql(backend), vec![]),
        })
        .await;
    loop {
        let answer = tokio::time::timeout(Duration::from_secs(5), session.answers.message())
            .await
            .expect("an answer within 5 s")
            .expect("stream ok")
            .expect("an answer");
        match answer.response {
            Some(Answer::Frame(_)) => {}
            Some(Answer::Error(error)) => {
                assert_eq!(answer.request_id, 7);
                assert_eq!(
                    error.code,
                    Code::DeadlineExceeded as i32,
                    "{}",
                    error.message
                );
                return started.elapsed();
            }
            other => panic!("expected DEADLINE_EXCEEDED, got {other:?}"),
        }
    }
}

async fn a_session_statement_gets_the_default_budget_capped_by_the_maximum(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |s| {
        s.deadlines.session_execute.default = Duration::from_millis(300);
        s.deadlines.session_execute.max = Duration::from_millis(600);
    })
    .await
    else {
        return;
    };
    // No timeout in the request: the default, 300 ms.
    let mut session = Session::begin(&app, &[]).await.expect("begin");
    let took = time_out(&mut session, backend, None).await;
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(550),
        "default budget: answered after {took:?}"
    );
    drop(session);
    // An hour asked for: capped at the maximum, 600 ms.
    let mut session = Session::begin(&app, &[]).await.expect("begin");
    let took = time_out(&mut session, backend, Some(Duration::from_secs(3600))).await;
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_millis(850),
        "capped budget: answered after {took:?}"
    );
    drop(session);
    app.stop().await;
}
on_every_backend!(a_session_statement_gets_the_default_budget_capped_by_the_maximum);

async fn protocol_errors_carry_their_reason(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |_| {}).await else {
        return;
    };
    // Execute before begin ends the stream: FAILED_PRECONDITION, SESSION_PROTOCOL.
    let (requests, mut answers) = Session::attach(app.channel.clone()).await.expect("attach");
    requests
        .send(SessionRequest::execute(1, "SELECT 1", vec![]))
        .await
        .expect("send");
    let status = within(WAIT, "the refusal", answers.message())
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(error_details(&status).0, "SESSION_PROTOCOL", "{status:?}");

    // A second begin: the same reason, in the stream, and the session goes on.
    let mut session = Session::begin(&app, &[]).await.expect("begin");
    session
        .send(SessionRequest::begin(BeginSession::default()))
        .await;
    let answer = session
        .answers
        .message()
        .await
        .expect("ok")
        .expect("answer");
    let Some(Answer::Error(error)) = answer.response else {
        panic!("expected an error, got {answer:?}")
    };
    assert_eq!(error.code, Code::FailedPrecondition as i32);
    assert_eq!(
        error_details(&error_status(&error)).0,
        "SESSION_PROTOCOL",
        "{error:?}"
    );
    let rows = session
        .execute(&app, 2, "SELECT 1", vec![])
        .await
        .expect("goes on");
    assert_eq!(rows.len(), 1);
    session.rollback().await;
    app.stop().await;
}
on_every_backend!(protocol_errors_carry_their_reason);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_an_aborted_transaction_answers_25p02_until_rollback() {
    let Some(app) = spawn_app_with(Backend::Postgres, |_| {}).await else {
        return;
    };
    app.run("CREATE TABLE t (id INTEGER)").await;
    let mut view = DatabaseView::of(&app).await;
    let mut session = session_holding_a_write(&app, &mut view, 1).await;
    session
        .execute(&app, 2, "SELECT 1 / 0", vec![])
        .await
        .expect_err("division by zero");
    for request_id in 3..5 {
        let error = session
            .execute(&app, request_id, "SELECT 1", vec![])
            .await
            .expect_err("aborted");
        assert_eq!(error.code, Code::FailedPrecondition as i32);
        let (_, metadata, _) = error_details(&error_status(&error));
        assert_eq!(
            metadata.get("sqlstate").map(String::as_str),
            Some("25P02"),
            "{error:?}"
        );
    }
    let listed = list_sessions(&app).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, "aborted");
    session.rollback().await;
    view.assert_settles_clean(&app, CLEANUP_BOUND).await;
    assert_eq!(app.count("t").await, 0);
    app.stop().await;
}
