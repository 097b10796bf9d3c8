//! Sessions that sqlgate ends — idle timeout, maximum lifetime,
//! TerminateSession, a statement past its timeout, shutdown — are rolled
//! back, their connection returned; each test checks what the database
//! shows afterwards.

use std::time::{Duration, Instant};

use sqlgate::grpc::pb::{
    self, BeginSession, SessionRequest, session_response::Response as Answer, value::Kind,
};
use tonic::Code;

use crate::{
    helpers::{
        Backend, TestApp, error_details, list_sessions, slow_pattern, slow_sql, spawn_app_with, v,
    },
    observe::DatabaseView,
    on_every_backend,
    session_client::{
        CLEANUP_BOUND, Session, app_with_a_session_holding_a_write, ended_with,
        session_holding_a_write, wait_for_end,
    },
};

async fn idle_timeout_max_lifetime_and_terminate_roll_back(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |s| {
        s.sessions.default_idle_timeout = Duration::from_millis(300);
        s.sessions.max_lifetime = Duration::from_millis(1500);
    })
    .await
    else {
        return;
    };
    app.run("CREATE TABLE t (id INTEGER)").await;
    let mut view = DatabaseView::of(&app).await;

    // Idle timeout, counted from the last request (the insert: the server
    // saw it after the client sent it).
    let mut session = session_holding_a_write(&app, &mut view, 1).await;
    let idle_since = session.last_sent.expect("the insert was sent");
    ended_with(&mut session, Code::Aborted, "idle_timeout").await;
    let idle_for = idle_since.elapsed();
    assert!(
        idle_for >= Duration::from_millis(300) && idle_for < Duration::from_millis(800),
        "ended {idle_for:?} after the last request; the idle timeout is 300 ms"
    );
    wait_for_end(&app, "idle_timeout", 1, CLEANUP_BOUND).await;
    view.assert_settles_clean(&app, CLEANUP_BOUND).await;
    assert_eq!(app.count("t").await, 0);

    // Maximum lifetime, while the client keeps the session busy (never idle
    // for 300 ms).
    let began = Instant::now();
    let mut session = session_holding_a_write(&app, &mut view, 2).await;
    let mut request_id = 2;
    let status = loop {
        assert!(
            began.elapsed() < Duration::from_secs(3),
            "the session outlived its 1.5 s lifetime"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        request_id += 1;
        // The server stops reading once the session has ended: then only
        // its final status is left to read.
        let sent = session
            .requests
            .as_ref()
            .expect("open")
            .send(SessionRequest::execute(request_id, "SELECT 1", vec![]))
            .await;
        if sent.is_err() {
            let status = tokio::time::timeout(Duration::from_secs(2), session.final_status())
                .await
                .expect("the stream ends within 2 s")
                .expect("an ending status");
            break status;
        }
        // This request's frames and `done`, or the session's end.
        let ended = loop {
            match tokio::time::timeout(Duration::from_secs(2), session.answers.message())
                .await
                .expect("an answer within 2 s")
            {
                Ok(Some(answer)) => match answer.response {
                    Some(Answer::Done(_)) => break None,
                    Some(Answer::Frame(_)) => {}
                    Some(Answer::RolledBack(_)) => {}
                    other => panic!("unexpected {other:?}"),
                },
                Ok(None) => panic!("the stream ended without a status"),
                Err(status) => break Some(status),
            }
        };
        if let Some(status) = ended {
            break status;
        }
    };
    let lived = began.elapsed();
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert_eq!(
        error_details(&status)
            .1
            .get("end_reason")
            .map(String::as_str),
        Some("max_lifetime")
    );
    assert!(
        lived >= Duration::from_millis(1500),
        "ended after {lived:?}, before its 1.5 s lifetime"
    );
    wait_for_end(&app, "max_lifetime", 1, CLEANUP_BOUND).await;
    view.assert_settles_clean(&app, CLEANUP_BOUND).await;
    assert_eq!(app.count("t").await, 0);

    // TerminateSession: NOT_FOUND for an unknown id, rollback for a real one.
    let status = app
        .admin
        .clone()
        .terminate_session(pb::TerminateSessionRequest {
            session_id: "no-such-session".into(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(status.code(), Code::NotFound);
    // Its own idle timeout, so that the 300 ms default cannot end it first.
    let mut session = Session::begin_on(
        app.channel.clone(),
        BeginSession {
            idle_timeout: Some(prost_types::Duration {
                seconds: 5,
                nanos: 0,
            }),
            ..BeginSession::labelled([("who", "operator-test")])
        },
    )
    .await
    .expect("begin");
    session
        .execute(&app, 1, "INSERT INTO t VALUES ($1)", vec![v::int(3)])
        .await
        .expect("insert");
    assert_eq!(view.seen().await.open_transactions, 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let listed = list_sessions(&app).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let info = &listed[0];
    assert_eq!(info.session_id, session.id);
    assert_eq!(
        info.labels.get("who").map(String::as_str),
        Some("operator-test")
    );
    assert_eq!(info.state, "idle");
    assert_eq!(info.statements_executed, 1);
    assert!(info.peer.starts_with("127.0.0.1:"));
    // Idle for the 100 ms slept above (and well under its 5 s idle
    // timeout); alive at least that long.
    let millis = |d: &Option<prost_types::Duration>| {
        let d = d.as_ref().expect("a duration");
        d.seconds * 1000 + i64::from(d.nanos) / 1_000_000
    };
    let (idle, age) = (millis(&info.idle), millis(&info.age));
    assert!((100..3000).contains(&idle), "idle {idle} ms");
    assert!(age >= idle, "age {age} ms, idle {idle} ms");
    let started_at = info.started_at.as_ref().expect("started_at");
    let now = chrono::Utc::now().timestamp();
    assert!(
        (now - 5..=now).contains(&started_at.seconds),
        "started_at {started_at:?}, now {now}"
    );
    app.admin
        .clone()
        .terminate_session(pb::TerminateSessionRequest {
            session_id: session.id.clone(),
        })
        .await
        .expect("terminate");
    // TerminateSession returns once the rollback is done.
    assert_eq!(
        app.pool_stats().await.sessions_ended.get("terminated"),
        Some(&1)
    );
    assert_eq!(view.seen().await.open_transactions, 0);
    assert_eq!(app.count("t").await, 0);
    ended_with(&mut session, Code::Aborted, "terminated").await;
    view.assert_settles_clean(&app, CLEANUP_BOUND).await;
    app.stop().await;
}
on_every_backend!(idle_timeout_max_lifetime_and_terminate_roll_back);

/// Waits (up to 2 s) until the session's slow statement is seen running:
/// listed as `executing`, and on PostgreSQL and MariaDB in the database's
/// own view. On SQLite the session's write lock is what the view sees, and
/// it is only released once the statement has stopped.
async fn wait_until_running(app: &TestApp, view: &mut DatabaseView, sql: &str) {
    let started = Instant::now();
    loop {
        let listed = list_sessions(app).await;
        let executing = listed.iter().any(|s| s.state == "executing");
        let on_server =
            app.backend == Backend::Sqlite || view.running(slow_pattern(app.backend)).await == 1;
        if executing && on_server {
            assert_eq!(
                listed[0].current_statement_fingerprint,
                sqlgate::query::fingerprint::fingerprint(sql)
            );
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{sql} never seen running: {listed:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn terminate_cancels_the_running_statement(backend: Backend) {
    let Some((app, mut view, mut session)) = app_with_a_session_holding_a_write(backend).await
    else {
        return;
    };
    let sql = slow_sql(backend);
    session
        .send(SessionRequest::execute(2, sql.to_owned(), vec![]))
        .await;
    wait_until_running(&app, &mut view, sql).await;
    let started = Instant::now();
    app.admin
        .clone()
        .terminate_session(pb::TerminateSessionRequest {
            session_id: session.id.clone(),
        })
        .await
        .expect("terminate");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "terminate took {:?}",
        started.elapsed()
    );
    view.assert_settles_clean(&app, CLEANUP_BOUND).await;
    assert_eq!(app.count("t").await, 0);
    ended_with(&mut session, Code::Aborted, "terminated").await;
    app.stop().await;
}
on_every_backend!(terminate_cancels_the_running_statement);

async fn a_session_statement_past_its_timeout_is_cancelled(backend: Backend) {
    let Some((app, mut view, mut session)) = app_with_a_session_holding_a_write(backend).await
    else {
        return;
    };
    let sql = slow_sql(backend);
    session
        .send(SessionRequest::execute_within(
            2,
            sql,
            vec![],
            Duration::from_millis(300),
        ))
        .await;
    let started = Instant::now();
    wait_until_running(&app, &mut view, sql).await;
    let answer = loop {
        let answer = tokio::time::timeout(Duration::from_secs(2), session.answers.message())
            .await
            .expect("answered within 2 s")
            .expect("ok")
            .expect("answer");
        match answer.response {
            Some(Answer::Frame(_)) => {}
            _ => break answer,
        }
    };
    assert_eq!(answer.request_id, 2, "{answer:?}");
    let Some(Answer::Error(error)) = answer.response else {
        panic!("expected the request's error, got {answer:?}")
    };
    assert_eq!(
        error.code,
        Code::DeadlineExceeded as i32,
        "{}",
        error.message
    );
    assert!(
        started.elapsed() < Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );
    if backend != Backend::Sqlite {
        let stopped = Instant::now();
        while view.running(slow_pattern(backend)).await > 0 {
            assert!(
                stopped.elapsed() < Duration::from_millis(200),
                "{sql} still running on the server"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    match backend {
        Backend::Postgres => {
            // PostgreSQL aborted the transaction; the session says so until rollback.
            let error = session
                .execute(&app, 3, "SELECT 1", vec![])
                .await
                .expect_err("aborted");
            assert_eq!(error.code, Code::FailedPrecondition as i32);
            session.rollback().await;
        }
        Backend::MySql => {
            // KILL QUERY stops the statement, not the transaction.
            let rows = session
                .execute(&app, 3, "SELECT count(*) FROM t", vec![])
                .await
                .expect("the session goes on");
            assert_eq!(rows.len(), 1);
            assert_eq!(rows[0].values[0].kind, Some(Kind::IntValue(1)));
            session.rollback().await;
        }
        Backend::Sqlite => {
            // An interrupted SQLite statement may have rolled the
            // transaction back: the session ends rather than go on unsure.
            ended_with(&mut session, Code::Aborted, "failed").await;
        }
    }
    view.assert_settles_clean(&app, CLEANUP_BOUND).await;
    assert_eq!(app.count("t").await, 0);
    app.stop().await;
}
on_every_backend!(a_session_statement_past_its_timeout_is_cancelled);

async fn shutdown_rolls_back_open_sessions(backend: Backend) {
    let Some((app, mut view, mut session)) = app_with_a_session_holding_a_write(backend).await
    else {
        return;
    };
    let started = Instant::now();
    let _database = app.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "shutdown took {:?}",
        started.elapsed()
    );
    ended_with(&mut session, Code::Unavailable, "shutdown").await;
    // Rolled back, and the pool closed: the database sees no connection of
    // sqlgate's, no transaction, no lock, and not the session's row.
    assert_nothing_left_after_shutdown(&mut view).await;
    assert_eq!(view.count_rows("t").await, 0);
}
on_every_backend!(shutdown_rolls_back_open_sessions);

/// After sqlgate stopped: nothing of its runs or holds a transaction or a
/// lock, and its connections leave the server's lists within 2 s (a closed
/// connection's backend is listed a moment longer).
async fn assert_nothing_left_after_shutdown(view: &mut DatabaseView) {
    let seen = view.seen().await;
    assert!(seen.is_clean(), "after shutdown: {seen:?}");
    let closed = Instant::now();
    while view.connections().await > 0 {
        assert!(
            closed.elapsed() < Duration::from_secs(2),
            "a sqlgate connection is still open 2 s after shutdown"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A result far larger than a session stream's buffers and HTTP/2 windows.
fn huge_result(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => "SELECT g, repeat('x', 1000) FROM generate_series(1, 200000) AS g",
        Backend::MySql => "SELECT seq, REPEAT('x', 1000) FROM seq_1_to_200000",
        Backend::Sqlite => {
            "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 200000) \
             SELECT n, hex(zeroblob(500)) FROM c"
        }
    }
}

/// A client that stopped reading its session's results holds shutdown no
/// longer than any stream does (the drain timeout, then its connection is
/// dropped): once shutdown begins, the session gives up telling it anything
/// after a short grace and rolls back, instead of waiting out a drain
/// timeout of its own first.
async fn a_client_that_stopped_reading_does_not_hold_shutdown(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |s| {
        s.shutdown.drain_timeout = Duration::from_secs(4);
    })
    .await
    else {
        return;
    };
    let mut view = DatabaseView::of(&app).await;
    let mut session = Session::begin(&app, &[]).await.expect("begin");
    session
        .send(SessionRequest::execute(1, huge_result(backend), vec![]))
        .await;
    // The session runs the statement; its client reads nothing from now on,
    // so the frames back up until sqlgate waits to send.
    let asked = Instant::now();
    while list_sessions(&app)
        .await
        .iter()
        .all(|s| s.state != "executing")
    {
        assert!(asked.elapsed() < Duration::from_secs(10), "never executing");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let _database = app.stop().await;
    // One drain (4 s) for the stream, the second cut calls get to be
    // answered, the session's own cleanup: about 6.5 s. A session waiting
    // out a drain of its own before the stream's: over 9 s.
    assert!(
        started.elapsed() < Duration::from_millis(7_700),
        "shutdown took {:?} with a 4 s drain",
        started.elapsed()
    );
    drop(session);
    assert_nothing_left_after_shutdown(&mut view).await;
}
on_every_backend!(a_client_that_stopped_reading_does_not_hold_shutdown);
