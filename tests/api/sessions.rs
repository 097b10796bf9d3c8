//! Sessions: a transaction bound to its stream. Commit keeps, rollback
//! discards, requests out of order get clear errors, and the limits on
//! sessions hold; a storm of them leaves exactly the committed rows. How
//! sessions end otherwise: `session_end` (sqlgate ends them) and
//! `session_client_gone` (the client goes away).

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::{StreamExt, stream};
use sqlgate::grpc::pb::{
    self, BeginSession, SessionRequest, session_response::Response as Answer, value::Kind,
};
use tonic::Code;

use crate::{
    helpers::{Backend, WAIT, error_details, spawn_app, spawn_app_with, v, within},
    observe::DatabaseView,
    on_every_backend,
    pg_activity::{Backends, sqlgate_backends},
    session_client::{CLEANUP_BOUND, Session, error_status, two_sessions_and_a_refused_third},
};

async fn commit_keeps_and_rollback_discards(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    app.run("CREATE TABLE t (id INTEGER PRIMARY KEY, label VARCHAR(20))")
        .await;
    let mut view = DatabaseView::of(&app).await;

    let mut session = Session::begin(&app, &[("team", "billing")])
        .await
        .expect("begin");
    session
        .execute(
            &app,
            1,
            "INSERT INTO t VALUES ($1, $2)",
            vec![v::int(1), v::text("kept")],
        )
        .await
        .expect("insert");
    let rows = session
        .execute(
            &app,
            2,
            "SELECT label FROM t WHERE id = $1",
            vec![v::int(1)],
        )
        .await
        .expect("select");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].values[0].kind, Some(Kind::TextValue("kept".into())));
    // Not visible outside the session before commit; open in the database.
    assert_eq!(app.count("t").await, 0);
    assert_eq!(view.seen().await.open_transactions, 1);
    session.commit().await;
    assert_eq!(app.count("t").await, 1);
    view.assert_settles_clean(&app, CLEANUP_BOUND).await;

    let mut session = Session::begin(&app, &[]).await.expect("begin");
    session
        .execute(
            &app,
            1,
            "INSERT INTO t VALUES ($1, $2)",
            vec![v::int(2), v::text("discarded")],
        )
        .await
        .expect("insert");
    assert_eq!(view.seen().await.open_transactions, 1);
    session.rollback().await;
    assert_eq!(app.count("t").await, 1);
    view.assert_settles_clean(&app, CLEANUP_BOUND).await;

    // An error answers its request only; the session goes on (except where
    // the database aborted the transaction).
    let mut session = Session::begin(&app, &[]).await.expect("begin");
    let error = session
        .execute(&app, 5, "SELECT * FROM missing_table", vec![])
        .await
        .expect_err("missing table");
    assert_eq!(error.code, Code::InvalidArgument as i32);
    let next = session
        .execute(&app, 6, "SELECT count(*) FROM t", vec![])
        .await;
    match backend {
        Backend::Postgres => {
            let error = next.expect_err("PostgreSQL aborted the transaction");
            assert_eq!(error.code, Code::FailedPrecondition as i32);
            assert!(error.message.contains("aborted"), "{}", error.message);
            assert_eq!(
                error_details(&error_status(&error))
                    .1
                    .get("sqlstate")
                    .map(String::as_str),
                Some("25P02"),
                "{error:?}"
            );
        }
        _ => {
            let rows = next.expect("goes on");
            assert_eq!(rows.len(), 1);
            assert_eq!(rows[0].values[0].kind, Some(Kind::IntValue(1)));
        }
    }
    session.rollback().await;

    let ended = app.pool_stats().await.sessions_ended;
    assert_eq!(ended.get("commit"), Some(&1));
    assert_eq!(ended.get("rollback"), Some(&2));
    assert_eq!(app.pool_stats().await.open_sessions, 0);
    view.assert_settles_clean(&app, CLEANUP_BOUND).await;
    app.stop().await;
}
on_every_backend!(commit_keeps_and_rollback_discards);

async fn requests_out_of_order_get_clear_errors(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    // Execute before begin: the stream ends with FAILED_PRECONDITION.
    let (requests, mut answers) = Session::attach(app.channel.clone()).await.expect("attach");
    requests
        .send(SessionRequest::execute(1, "SELECT 1", vec![]))
        .await
        .expect("send");
    let status = within(WAIT, "the refusal", answers.message())
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("begin"), "{}", status.message());

    // A second begin is refused; the session goes on.
    let mut session = Session::begin(&app, &[]).await.expect("begin");
    session
        .send(SessionRequest::begin(BeginSession::default()))
        .await;
    let answer = session.next().await;
    assert!(
        matches!(answer.response, Some(Answer::Error(ref e)) if e.code == Code::FailedPrecondition as i32),
        "{answer:?}"
    );
    // A bad parameter answers its request.
    let error = session
        .execute(
            &app,
            9,
            "SELECT $1",
            vec![v::of(Kind::DateValue("not a date".into()))],
        )
        .await
        .expect_err("bad date");
    assert_eq!(error.code, Code::InvalidArgument as i32);
    let rows = session
        .execute(&app, 10, "SELECT 1", vec![])
        .await
        .expect("goes on");
    assert_eq!(rows.len(), 1);
    // After `committed` the server ends the stream, status OK, while the
    // client still holds its side open: a client reading to the end is
    // not left waiting for its deadline.
    session.send(SessionRequest::commit()).await;
    let answer = session.next().await;
    assert!(matches!(answer.response, Some(Answer::Committed(_))));
    let end = tokio::time::timeout(std::time::Duration::from_secs(2), session.final_status())
        .await
        .expect("the stream ends right after committed");
    assert!(end.is_none(), "the stream ends OK: {end:?}");
    app.stop().await;
}
on_every_backend!(requests_out_of_order_get_clear_errors);

async fn read_only_sessions_refuse_writes_and_limits_hold(backend: Backend) {
    // One connection: the write after the session must run on the very
    // connection the read-only session used.
    let Some(app) = spawn_app_with(backend, |s| {
        s.sessions.max_statements = 2;
        s.pool.max_connections = 1;
        s.pool.min_connections = 1;
        s.sessions.max_pool_share = 1.0;
    })
    .await
    else {
        return;
    };
    app.run("CREATE TABLE t (id INTEGER)").await;
    let mut session = Session::begin_on(
        app.channel.clone(),
        BeginSession {
            read_only: true,
            isolation: pb::IsolationLevel::Serializable.into(),
            ..BeginSession::default()
        },
    )
    .await
    .expect("begin");
    let rows = session
        .execute(&app, 1, "SELECT count(*) FROM t", vec![])
        .await
        .expect("reads work");
    assert_eq!(rows[0].values[0].kind, Some(Kind::IntValue(0)));
    let error = session
        .execute(&app, 2, "INSERT INTO t VALUES (1)", vec![])
        .await
        .expect_err("a read-only session cannot write");
    assert_eq!(
        error.code,
        Code::FailedPrecondition as i32,
        "{}",
        error.message
    );
    // The third statement is over the session's maximum of two.
    let error = session
        .execute(&app, 3, "SELECT 1", vec![])
        .await
        .expect_err("over the limit");
    assert_eq!(error.code, Code::FailedPrecondition as i32);
    assert!(error.message.contains("maximum"), "{}", error.message);
    session.rollback().await;
    assert_eq!(app.count("t").await, 0);
    // The connection went back clean: writes work outside the session.
    app.run("INSERT INTO t VALUES (2)").await;
    assert_eq!(app.count("t").await, 1);
    app.stop().await;
}
on_every_backend!(read_only_sessions_refuse_writes_and_limits_hold);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_cannot_take_the_whole_pool() {
    let Some(app) = spawn_app_with(Backend::Postgres, |s| {
        s.pool.max_connections = 4;
        s.sessions.max_pool_share = 0.5;
    })
    .await
    else {
        return;
    };
    let (first, second, status) =
        two_sessions_and_a_refused_third(&app, "half of 4 connections").await;
    {
        use tonic_types::StatusExt;
        assert!(status.get_error_details().retry_info().is_some());
    }
    // Query calls still get connections.
    assert_eq!(app.run("SELECT 1").await.rows.len(), 1);
    first.rollback().await;
    second.rollback().await;
    Session::begin(&app, &[])
        .await
        .expect("room again")
        .rollback()
        .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_session_storm_leaves_exactly_the_committed_rows() {
    let Some(app) = spawn_app_with(Backend::Postgres, |s| {
        s.pool.max_connections = 24;
        s.sessions.max_open = 300;
        s.sessions.max_pool_share = 1.0;
    })
    .await
    else {
        return;
    };
    let app = Arc::new(app);
    app.run("CREATE TABLE storm (id INTEGER PRIMARY KEY)").await;
    let outcomes: Vec<(u64, &str)> = stream::iter(0..300u64)
        .map(|i| {
            let app = app.clone();
            async move {
                // A full server answers RESOURCE_EXHAUSTED: back off and retry
                // (for 30 s at most: sessions that leak would never make room).
                let trying = Instant::now();
                let mut session = loop {
                    assert!(
                        trying.elapsed() < Duration::from_secs(30),
                        "no room for a session in 30 s"
                    );
                    match Session::begin(&app, &[]).await {
                        Ok(session) => break session,
                        Err(status) if status.code() == Code::ResourceExhausted => {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(status) => panic!("begin: {status:?}"),
                    }
                };
                let id = i64::try_from(i).expect("id");
                session
                    .execute(&app, 1, "INSERT INTO storm VALUES ($1)", vec![v::int(id)])
                    .await
                    .expect("insert");
                match i % 3 {
                    0 => {
                        session.commit().await;
                        (i, "commit")
                    }
                    1 => {
                        session.rollback().await;
                        (i, "rollback")
                    }
                    _ => {
                        // Killed mid-transaction: the call vanishes.
                        drop(session);
                        (i, "killed")
                    }
                }
            }
        })
        .buffer_unordered(300)
        .collect()
        .await;
    let committed: Vec<i64> = outcomes
        .iter()
        .filter(|(_, how)| *how == "commit")
        .map(|(i, _)| i64::try_from(*i).expect("id"))
        .collect();
    // Killed calls are counted as client_gone (or stream_ended when the
    // cancel reached the server as a half-close first); all roll back.
    let started = Instant::now();
    loop {
        let ended = app.pool_stats().await.sessions_ended;
        let gone = ended.get("client_gone").copied().unwrap_or_default()
            + ended.get("stream_ended").copied().unwrap_or_default();
        if gone >= 100 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{ended:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let mut direct = app.postgres_direct().await;
    let mut stored: Vec<i64> = sqlx::query_scalar("SELECT id::int8 FROM storm ORDER BY id")
        .fetch_all(&mut direct)
        .await
        .expect("rows");
    stored.sort_unstable();
    let mut expected = committed.clone();
    expected.sort_unstable();
    assert_eq!(stored, expected, "exactly the committed rows exist");
    assert_eq!(
        sqlgate_backends(&mut direct, &app.db.name, Backends::Busy).await,
        0
    );
    let settle = Instant::now();
    while app.pool_in_use().await > 0 {
        assert!(
            settle.elapsed() < Duration::from_secs(3),
            "connections still in use"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ended: HashMap<String, u64> = app.pool_stats().await.sessions_ended;
    assert_eq!(ended.get("commit"), Some(&100));
    assert_eq!(ended.get("rollback"), Some(&100));
    assert_eq!(
        ended.get("client_gone").copied().unwrap_or_default()
            + ended.get("stream_ended").copied().unwrap_or_default(),
        100
    );
}

async fn the_stream_ends_right_after_rolled_back(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let mut session = Session::begin(&app, &[]).await.expect("begin");
    session
        .execute(&app, 1, "SELECT 1", vec![])
        .await
        .expect("a statement");
    // The client keeps its side open; the server ends the stream, OK.
    session.send(SessionRequest::rollback()).await;
    let answer = session.next().await;
    assert!(
        matches!(answer.response, Some(Answer::RolledBack(_))),
        "{answer:?}"
    );
    let end = tokio::time::timeout(std::time::Duration::from_secs(2), session.final_status())
        .await
        .expect("the stream ends right after rolled_back");
    assert!(end.is_none(), "the stream ends OK: {end:?}");
    assert_eq!(app.pool_stats().await.open_sessions, 0);
    app.stop().await;
}
on_every_backend!(the_stream_ends_right_after_rolled_back);
