//! Limits per caller and overall, as callers meet them: a greedy caller at
//! its limit is refused at once (RESOURCE_EXHAUSTED, `CALLER_LIMIT`, with
//! `RetryInfo`) while a polite caller's calls, streams and sessions all go
//! through; past `limits.max_concurrent_calls` calls are shed
//! (`OVERLOADED`) while health and Admin still answer; and a call keeps its
//! place until its work on the database is over, even if its caller left.
//!
//! With authentication off a caller is its IP address, so the callers here
//! are client connections bound to different loopback addresses
//! (127.0.0.1, 127.0.0.2, …: all of 127/8 reaches the server).

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use futures::StreamExt;
use sqlgate::grpc::pb::{self, BeginSession, admin_client::AdminClient, query_client::QueryClient};
use tokio::task::JoinHandle;
use tonic::{Code, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_types::StatusExt;

use crate::{
    helpers::{Backend, TestApp, WAIT, error_details, slow_sql, spawn_app_with, within},
    on_every_backend,
    session_client::Session,
};

/// How long the slow calls here hold their place: their deadline, at which
/// the server stops their statement.
const HOLD: Duration = Duration::from_secs(3);

/// A client connection from `ip`: with authentication off, one caller.
async fn client_from(app: &TestApp, ip: [u8; 4]) -> Channel {
    Channel::from_shared(format!("http://{}", app.address))
        .expect("uri")
        .local_address(Some(IpAddr::from(ip)))
        .connect()
        .await
        .expect("connect")
}

/// A request for `sql` with a deadline of `deadline`.
fn request(sql: &str, deadline: Duration) -> tonic::Request<pb::ExecuteRequest> {
    let mut request = tonic::Request::new(pb::ExecuteRequest {
        sql: sql.to_owned(),
        ..Default::default()
    });
    request.set_timeout(deadline);
    request
}

/// A slow Execute on `channel`, stopped by its deadline ([`HOLD`]).
fn slow_call(channel: &Channel, backend: Backend) -> JoinHandle<Result<(), tonic::Status>> {
    let mut client = QueryClient::new(channel.clone());
    tokio::spawn(async move {
        client
            .execute(request(slow_sql(backend), HOLD))
            .await
            .map(drop)
    })
}

/// A slow ExecuteStream on `channel`, read to its end (its deadline).
fn slow_stream(channel: &Channel, backend: Backend) -> JoinHandle<Result<(), tonic::Status>> {
    let mut client = QueryClient::new(channel.clone());
    tokio::spawn(async move {
        let mut frames = client
            .execute_stream(request(slow_sql(backend), HOLD))
            .await?
            .into_inner();
        while let Some(frame) = frames.next().await {
            frame?;
        }
        Ok(())
    })
}

async fn select_1(channel: &Channel) -> Result<(), tonic::Status> {
    QueryClient::new(channel.clone())
        .execute(request("SELECT 1", WAIT))
        .await
        .map(drop)
}

/// The pool and limit figures (the default role is admin).
async fn stats(app: &TestApp) -> pb::PoolStats {
    app.pool_stats().await
}

/// Waits until `caller` has `load` in flight.
async fn wait_for_load(app: &TestApp, caller: &str, load: pb::CallerLoad) {
    let started = Instant::now();
    loop {
        let stats = stats(app).await;
        if stats.callers.get(caller) == Some(&load) {
            return;
        }
        assert!(
            started.elapsed() < WAIT,
            "{caller} never had {load:?} in flight: {:?}",
            stats.callers
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A refusal for a caller's own limit, at once, with `RetryInfo`.
fn assert_caller_limit(status: &tonic::Status, setting: &str) {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let (reason, metadata, _) = error_details(status);
    assert_eq!(reason, "CALLER_LIMIT", "{status:?}");
    assert_eq!(metadata.get("limit").map(String::as_str), Some(setting));
    assert!(
        status.get_error_details().retry_info().is_some(),
        "RetryInfo: {status:?}"
    );
}

fn load(calls: u32, streams: u32, sessions: u32) -> pb::CallerLoad {
    pb::CallerLoad {
        calls,
        streams,
        sessions,
    }
}

async fn a_greedy_caller_is_refused_while_a_polite_one_is_served(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |s| {
        s.pool.max_connections = 8;
        s.limits.per_caller.max_calls = 2;
        s.limits.per_caller.max_streams = 1;
        s.limits.per_caller.max_sessions = 1;
    })
    .await
    else {
        return;
    };
    let greedy = client_from(&app, [127, 0, 0, 1]).await;
    let polite = client_from(&app, [127, 0, 0, 2]).await;

    // The greedy caller takes all it may: two calls, a stream, a session.
    let calls = [slow_call(&greedy, backend), slow_call(&greedy, backend)];
    let stream = slow_stream(&greedy, backend);
    let session = Session::begin_on(greedy.clone(), BeginSession::default())
        .await
        .expect("its one session");
    wait_for_load(&app, "127.0.0.1", load(2, 1, 1)).await;

    // More of each is refused at once.
    let asked = Instant::now();
    let status = select_1(&greedy).await.expect_err("a third call");
    assert_caller_limit(&status, "limits.per_caller.max_calls");
    let status = slow_stream(&greedy, backend)
        .await
        .expect("task")
        .expect_err("a second stream");
    assert_caller_limit(&status, "limits.per_caller.max_streams");
    let status = Session::begin_on(greedy.clone(), BeginSession::default())
        .await
        .err()
        .expect("a second session");
    assert_caller_limit(&status, "limits.per_caller.max_sessions");
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "refusals took {:?}: they must not wait",
        asked.elapsed()
    );

    // Meanwhile the polite caller, which keeps within its own limits (two
    // calls at a time), gets everything it asks for.
    for _ in 0..3 {
        let (one, two) = tokio::join!(select_1(&polite), select_1(&polite));
        one.expect("a polite call");
        two.expect("a polite call");
    }
    let mut frames = QueryClient::new(polite.clone())
        .execute_stream(request("SELECT 1", WAIT))
        .await
        .expect("a polite stream")
        .into_inner();
    while let Some(frame) = within(WAIT, "a frame", frames.next()).await {
        frame.expect("a polite frame");
    }
    let mut theirs = Session::begin_on(polite.clone(), BeginSession::default())
        .await
        .expect("a polite session");
    theirs.row("SELECT 1").await;
    theirs.commit().await;

    // The polite caller's session gives its place back as it ends (a
    // moment after the client hears `committed`).
    let started = Instant::now();
    let figures = loop {
        let figures = stats(&app).await;
        if figures.callers.len() == 1 {
            break figures;
        }
        assert!(started.elapsed() < WAIT, "{figures:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(figures.callers.get("127.0.0.1"), Some(&load(2, 1, 1)));
    assert_eq!(figures.calls_in_flight, 4, "{figures:?}");
    assert_eq!(figures.caller_limit_refusals, 3, "{figures:?}");
    assert_eq!(figures.calls_shed, 0);

    // Once its work is over, the greedy caller is served again.
    for call in calls {
        // (tonic's client gives up at the deadline as the server does.)
        within(WAIT, "a slow call", call)
            .await
            .expect("task")
            .expect_err("stopped by its deadline");
    }
    within(WAIT, "the slow stream", stream)
        .await
        .expect("task")
        .expect_err("stopped by its deadline");
    session.rollback().await;
    wait_for_load_gone(&app).await;
    select_1(&greedy).await.expect("served again");
    app.stop().await;
}
on_every_backend!(a_greedy_caller_is_refused_while_a_polite_one_is_served);

/// Waits until nothing is in flight and no caller is listed.
async fn wait_for_load_gone(app: &TestApp) {
    let started = Instant::now();
    loop {
        let stats = stats(app).await;
        if stats.calls_in_flight == 0 && stats.callers.is_empty() {
            return;
        }
        assert!(started.elapsed() < WAIT, "still in flight: {stats:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn past_the_overall_limit_calls_are_shed(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |s| {
        s.pool.max_connections = 8;
        s.limits.max_concurrent_calls = 3;
    })
    .await
    else {
        return;
    };
    let first = client_from(&app, [127, 0, 0, 1]).await;
    let second = client_from(&app, [127, 0, 0, 2]).await;
    let third = client_from(&app, [127, 0, 0, 3]).await;
    let calls = [slow_call(&first, backend), slow_call(&first, backend)];
    let mut session = Session::begin_on(second.clone(), BeginSession::default())
        .await
        .expect("a session");
    wait_for_load(&app, "127.0.0.1", load(2, 0, 0)).await;

    // Three in flight: a call, a stream, a session from anyone are shed.
    let status = select_1(&third).await.expect_err("shed");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(error_details(&status).0, "OVERLOADED", "{status:?}");
    assert!(status.get_error_details().retry_info().is_some());
    let status = slow_stream(&third, backend)
        .await
        .expect("task")
        .expect_err("a stream is shed");
    assert_eq!(error_details(&status).0, "OVERLOADED", "{status:?}");
    let status = Session::begin_on(third.clone(), BeginSession::default())
        .await
        .err()
        .expect("a session is shed");
    assert_eq!(error_details(&status).0, "OVERLOADED", "{status:?}");

    // What is admitted goes on; health and Admin still answer.
    session.row("SELECT 1").await;
    let health = HealthClient::new(third.clone())
        .check(HealthCheckRequest {
            service: "readiness".into(),
        })
        .await
        .expect("health is never shed")
        .into_inner();
    assert_eq!(health.status(), ServingStatus::Serving);
    let figures = AdminClient::new(third.clone())
        .get_pool_stats(pb::GetPoolStatsRequest {})
        .await
        .expect("Admin is never shed")
        .into_inner();
    assert_eq!(figures.calls_in_flight, 3, "{figures:?}");
    assert_eq!(figures.calls_shed, 3, "{figures:?}");
    assert_eq!(figures.caller_limit_refusals, 0, "{figures:?}");

    // As places free, calls are served again.
    session.commit().await;
    within(WAIT, "a place frees", async {
        while select_1(&third).await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    for call in calls {
        let _ = within(WAIT, "a slow call", call).await;
    }
    app.stop().await;
}
on_every_backend!(past_the_overall_limit_calls_are_shed);

async fn a_call_keeps_its_place_until_its_work_is_over(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |s| {
        s.limits.per_caller.max_calls = 1;
    })
    .await
    else {
        return;
    };
    let caller = client_from(&app, [127, 0, 0, 1]).await;
    let started = Instant::now();
    let call = slow_call(&caller, backend);
    wait_for_load(&app, "127.0.0.1", load(1, 0, 0)).await;
    // The caller gives up on it; the statement still runs on the database
    // until its deadline, and the place stays taken until then.
    call.abort();
    let _ = call.await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let status = select_1(&caller)
        .await
        .expect_err("its one place is still taken");
    assert_caller_limit(&status, "limits.per_caller.max_calls");
    assert_eq!(
        stats(&app).await.callers.get("127.0.0.1"),
        Some(&load(1, 0, 0))
    );
    within(WAIT, "the place frees at the deadline", async {
        while select_1(&caller).await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        started.elapsed() >= HOLD - Duration::from_millis(500),
        "the place freed after {:?}, before the statement's deadline",
        started.elapsed()
    );
    app.stop().await;
}
on_every_backend!(a_call_keeps_its_place_until_its_work_is_over);

async fn a_caller_at_its_limit_goes_on_as_soon_as_it_hears_the_end(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |s| {
        s.limits.per_caller.max_calls = 1;
        s.limits.per_caller.max_streams = 1;
        s.limits.per_caller.max_sessions = 1;
    })
    .await
    else {
        return;
    };
    let caller = client_from(&app, [127, 0, 0, 1]).await;
    // A place is given back before the answer leaves: one call, stream or
    // session after another, each begun the moment the last one ended, is
    // never refused.
    for _ in 0..20 {
        select_1(&caller).await.expect("the next call");
        let mut frames = QueryClient::new(caller.clone())
            .execute_stream(request("SELECT 1", WAIT))
            .await
            .expect("the next stream")
            .into_inner();
        while let Some(frame) = within(WAIT, "a frame", frames.next()).await {
            frame.expect("a frame");
        }
        let mut session = Session::begin_on(caller.clone(), BeginSession::default())
            .await
            .expect("the next session");
        session.row("SELECT 1").await;
        session.commit().await;
    }
    assert_eq!(stats(&app).await.caller_limit_refusals, 0);
    app.stop().await;
}
on_every_backend!(a_caller_at_its_limit_goes_on_as_soon_as_it_hears_the_end);
