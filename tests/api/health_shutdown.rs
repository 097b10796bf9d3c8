//! A shutdown that leaves nothing behind: SIGTERM turns readiness to
//! NOT_SERVING first, then drains, rolls back and closes every connection
//! before exiting 0; a second signal exits at once.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use sqlgate::grpc::pb::{self, query_client::QueryClient, result_frame::Frame};
use tokio_stream::StreamExt;
use tonic::{Code, transport::Channel};
use tonic_health::pb::health_check_response::ServingStatus;

use crate::{
    binary::{Sqlgate, channel},
    health::{next_status, watch_readiness},
    helpers::{Backend, WAIT, spawn_app, spawn_app_with, within},
    pg_activity::{Backends, sqlgate_backends, wait_for_backends},
};

/// A test database served by the real `sqlgate` binary (not in-process,
/// so that it can be signalled), a channel to it, and a direct connection
/// that watches the database.
struct Served {
    sqlgate: Sqlgate,
    address: SocketAddr,
    channel: Channel,
    direct: sqlx::PgConnection,
    name: String,
    _database: crate::test_database::TestDatabase,
}

/// Creates the test's database (running `setup` in it first) and serves it
/// with the binary, whose drain timeout is `drain`.
async fn served_by_the_binary(drain: &str, setup: &[&str]) -> Option<Served> {
    let app = spawn_app(Backend::Postgres).await?;
    for sql in setup {
        app.run(sql).await;
    }
    let url = app.db.url.clone();
    let name = app.db.name.clone();
    let direct = app.postgres_direct().await;
    let _database = app.stop().await;
    let (sqlgate, address) = Sqlgate::serving(
        &url,
        &[
            ("SQLGATE_SHUTDOWN__DRAIN_TIMEOUT", drain),
            ("SQLGATE_LOG_FILTER", "warn"),
        ],
    )
    .await;
    let channel = channel(address).await;
    Some(Served {
        sqlgate,
        address,
        channel,
        direct,
        name,
        _database,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sigterm_drains_rolls_back_and_leaves_no_connection() {
    let Some(Served {
        sqlgate,
        address,
        channel,
        mut direct,
        name,
        _database,
    }) = served_by_the_binary("3s", &["CREATE TABLE t (id INTEGER)"]).await
    else {
        return;
    };
    // An idle client: connected, nothing in flight.
    let _idle = Channel::from_shared(format!("http://{address}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");

    // An open session with a write in it.
    let (requests, inbox) = tokio::sync::mpsc::channel(4);
    let mut answers = pb::sessions_client::SessionsClient::new(channel.clone())
        .attach(tokio_stream::wrappers::ReceiverStream::new(inbox))
        .await
        .expect("attach")
        .into_inner();
    requests
        .send(pb::SessionRequest::begin(pb::BeginSession::default()))
        .await
        .expect("begin");
    requests
        .send(pb::SessionRequest::execute(
            1,
            "INSERT INTO t VALUES (1)",
            vec![],
        ))
        .await
        .expect("insert");
    loop {
        let answer = within(WAIT, "a session answer", answers.message())
            .await
            .expect("ok")
            .expect("answer");
        if matches!(
            answer.response,
            Some(pb::session_response::Response::Done(_))
        ) {
            break;
        }
    }

    // An in-flight stream that takes about a second.
    let mut stream = QueryClient::new(channel.clone())
        .execute_stream(pb::ExecuteRequest {
            sql: "SELECT g, pg_sleep(0.01) FROM generate_series(1, 100) AS g".into(),
            params: vec![],
            max_rows: 0,
        })
        .await
        .expect("stream")
        .into_inner();
    within(WAIT, "the metadata frame", stream.next())
        .await
        .expect("metadata")
        .expect("ok");

    // A readiness watch open before the signal: the first thing shutdown
    // does is tell it NOT_SERVING; then the watch ends, so that it does not
    // hold the drain.
    let mut readiness = watch_readiness(channel.clone()).await;
    sqlgate.signal("TERM");
    let signalled = Instant::now();
    let not_serving = tokio::time::timeout(Duration::from_secs(1), next_status(&mut readiness))
        .await
        .expect("readiness changes within 1 s of SIGTERM");
    assert_eq!(not_serving, ServingStatus::NotServing);

    // The session is rolled back, with reason shutdown.
    let status = loop {
        match within(WAIT, "a session answer", answers.message()).await {
            Ok(Some(_)) => {}
            Ok(None) => panic!("the session stream ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let watch_end = tokio::time::timeout(Duration::from_secs(1), readiness.next())
        .await
        .expect("the readiness watch ends at shutdown");
    assert!(watch_end.is_none(), "{watch_end:?}");
    // The in-flight stream finishes within the drain.
    let mut rows = 0;
    let mut finished = false;
    while let Some(frame) = within(WAIT, "a frame", stream.next()).await {
        match frame.expect("the stream completes").frame {
            Some(Frame::Rows(batch)) => rows += batch.rows.len(),
            Some(Frame::Stats(_)) => finished = true,
            _ => {}
        }
    }
    assert!(finished && rows == 100, "stream cut short: {rows} rows");

    let (exit, _) = sqlgate.exited(Duration::from_secs(10)).await;
    assert_eq!(exit.code(), Some(0), "{exit:?}");
    // The stream took about a second: well under the 3 s drain timeout.
    assert!(
        signalled.elapsed() < Duration::from_millis(2500),
        "took {:?}",
        signalled.elapsed()
    );

    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
        .fetch_one(&mut direct)
        .await
        .expect("count");
    assert_eq!(count, 0, "the session's insert was rolled back");
    wait_for_backends(&mut direct, &name, Backends::All, 0, "after exit").await;
}

/// Starts `SELECT <sleep>` through `channel` and waits until the database
/// shows it running; the call's task.
async fn slow_call_running(
    channel: &Channel,
    direct: &mut sqlx::PgConnection,
    database: &str,
    sleep: &'static str,
) -> tokio::task::JoinHandle<Result<tonic::Response<pb::ExecuteResponse>, tonic::Status>> {
    let mut client = QueryClient::new(channel.clone());
    let call = tokio::spawn(async move {
        client
            .execute(pb::ExecuteRequest {
                sql: format!("SELECT {sleep}"),
                params: vec![],
                max_rows: 0,
            })
            .await
    });
    wait_for_backends(
        direct,
        database,
        Backends::Running(sleep),
        1,
        "the slow call runs",
    )
    .await;
    call
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_second_signal_exits_at_once() {
    let Some(Served {
        mut sqlgate,
        channel,
        mut direct,
        name,
        _database,
        ..
    }) = served_by_the_binary("30s", &[]).await
    else {
        return;
    };
    // A call that would hold the drain for 20 s.
    let slow = slow_call_running(&channel, &mut direct, &name, "pg_sleep(20)").await;
    sqlgate.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        sqlgate.try_wait().is_none(),
        "still draining after the first signal"
    );
    sqlgate.signal("TERM");
    let (exit, _) = sqlgate.exited(Duration::from_secs(2)).await;
    assert_eq!(exit.code(), Some(1));
    slow.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sigterm_refuses_new_sessions_and_cuts_calls_after_the_drain() {
    let Some(Served {
        sqlgate,
        channel,
        mut direct,
        name,
        _database,
        ..
    }) = served_by_the_binary("1s", &[]).await
    else {
        return;
    };
    // A call that would run for 30 s.
    let slow = slow_call_running(&channel, &mut direct, &name, "pg_sleep(30)").await;
    sqlgate.signal("TERM");
    let signalled = Instant::now();
    tokio::time::sleep(Duration::from_millis(100)).await;

    // A new session is refused.
    let (requests, inbox) = tokio::sync::mpsc::channel(4);
    requests
        .send(pb::SessionRequest::begin(pb::BeginSession::default()))
        .await
        .expect("begin");
    let refused = tokio::time::timeout(Duration::from_secs(2), async {
        let mut answers = pb::sessions_client::SessionsClient::new(channel.clone())
            .attach(tokio_stream::wrappers::ReceiverStream::new(inbox))
            .await?
            .into_inner();
        answers.message().await
    })
    .await
    .expect("answered within 2 s")
    .expect_err("no session during shutdown");
    // Refused by sqlgate (UNAVAILABLE) while it rolls sessions back, or by
    // the HTTP/2 GOAWAY that follows (the client library reports the
    // stream it may no longer open as CANCELLED): never a `began`.
    assert!(
        matches!(refused.code(), Code::Unavailable | Code::Cancelled),
        "{refused:?}"
    );

    // The slow call is cut once the 1 s drain is over, and its statement
    // stops on the database; the process exits 0.
    let cut = tokio::time::timeout(Duration::from_secs(5), slow)
        .await
        .expect("the call ends after the drain")
        .expect("join")
        .expect_err("cut");
    // sqlgate answers the cut call itself: UNAVAILABLE, shutting down.
    assert_eq!(cut.code(), Code::Unavailable, "{cut:?}");
    let (exit, _) = sqlgate.exited(Duration::from_secs(5)).await;
    assert_eq!(exit.code(), Some(0), "{exit:?}");
    let took = signalled.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "exited {took:?} after SIGTERM with a 1 s drain"
    );
    let stopped = Instant::now();
    loop {
        let left = sqlgate_backends(&mut direct, &name, Backends::All).await;
        if left == 0 {
            break;
        }
        assert!(
            stopped.elapsed() < Duration::from_millis(500),
            "{left} sqlgate backend(s) still open after exit"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_statement_still_running_after_the_drain_is_stopped_in_process() {
    let Some(app) = spawn_app_with(Backend::Sqlite, |s| {
        s.shutdown.drain_timeout = Duration::from_millis(300);
    })
    .await
    else {
        return;
    };
    app.run("CREATE TABLE t (x BIGINT)").await;
    let mut view = crate::observe::DatabaseView::of(&app).await;
    // A write that would run until its 30 s deadline, holding the lock.
    let mut query = app.query.clone();
    let call = tokio::spawn(async move {
        query
            .execute(pb::ExecuteRequest {
                sql: "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c \
                      WHERE x < 10000000000) INSERT INTO t SELECT x FROM c"
                    .into(),
                params: vec![],
                max_rows: 0,
            })
            .await
    });
    view.wait_until(Duration::from_secs(2), "the write holds the lock", |seen| {
        seen.writes == 1
    })
    .await;
    // The drain ends at 300 ms: the statement is interrupted, its
    // transaction rolled back, the pool closed without waiting it out.
    let stopping = Instant::now();
    let _database = app.stop().await;
    let took = stopping.elapsed();
    assert!(took < Duration::from_millis(1500), "shutdown took {took:?}");
    let status = within(WAIT, "the cut call", call)
        .await
        .expect("join")
        .expect_err("cut");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    // The interrupted connection is closed behind the answer: the lock goes
    // a moment later (the statement alone would hold it for 30 s).
    view.wait_until(Duration::from_secs(1), "the lock is free", |seen| {
        seen.is_clean()
    })
    .await;
    assert_eq!(view.count_rows("t").await, 0);
}
