//! Sessions that never leak: a transaction bound to its stream, ended —
//! cancelled, rolled back, its connection returned — however the client
//! goes away. Each test checks what the database shows afterwards.

use std::{
    collections::HashMap,
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::{StreamExt, stream};
use sqlgate::grpc::pb::{
    self, BeginSession, SessionRequest, session_response::Response as Answer, value::Kind,
};
use tokio::io::AsyncBufReadExt;
use tonic::{Code, transport::Channel};

use crate::{
    fixtures,
    helpers::{
        Backend, Backends, TestApp, WAIT, error_details, list_sessions, slow_pattern, slow_sql,
        spawn_app, spawn_app_with, sqlgate_backends, v, within,
    },
    observe::DatabaseView,
    on_every_backend,
    proxy::Proxy,
    session_client::{
        CLEANUP_BOUND, Session, ended_with, error_status, session_holding_a_write, wait_for_end,
    },
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

async fn a_stream_that_ends_without_commit_rolls_back(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    app.run("CREATE TABLE t (id INTEGER)").await;
    let mut view = DatabaseView::of(&app).await;
    let mut session = session_holding_a_write(&app, &mut view, 1).await;
    // Half-close: a cancelled call looks the same on the server; never commit on it.
    session.requests = None;
    ended_with(&mut session, Code::Aborted, "stream_ended").await;
    view.assert_settles_clean(&app, CLEANUP_BOUND).await;
    assert_eq!(app.count("t").await, 0);
    wait_for_end(&app, "stream_ended", 1, CLEANUP_BOUND).await;

    // The client dropping the whole call (cancel): rolled back as client_gone.
    let session = session_holding_a_write(&app, &mut view, 2).await;
    session.vanish();
    wait_for_end(&app, "client_gone", 1, CLEANUP_BOUND).await;
    view.assert_settles_clean(&app, CLEANUP_BOUND).await;
    assert_eq!(app.count("t").await, 0);
    app.stop().await;
}
on_every_backend!(a_stream_that_ends_without_commit_rolls_back);

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
    // Anything after commit gets an error saying the session has ended.
    session.send(SessionRequest::commit()).await;
    let answer = session.next().await;
    assert!(matches!(answer.response, Some(Answer::Committed(_))));
    session
        .send(SessionRequest::execute(11, "SELECT 1", vec![]))
        .await;
    let answer = session.next().await;
    assert_eq!(answer.request_id, 11);
    assert!(
        matches!(answer.response, Some(Answer::Error(ref e)) if e.message.contains("ended")),
        "{answer:?}"
    );
    app.stop().await;
}
on_every_backend!(requests_out_of_order_get_clear_errors);

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
    let first = Session::begin(&app, &[]).await.expect("first");
    let second = Session::begin(&app, &[]).await.expect("second");
    let status = match Session::begin(&app, &[]).await {
        Err(status) => status,
        Ok(_) => panic!("a third session must be refused: half of 4 connections"),
    };
    assert_eq!(status.code(), Code::ResourceExhausted);
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
                sqlgate::query::statement::fingerprint(sql)
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
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    app.run("CREATE TABLE t (id INTEGER)").await;
    let mut view = DatabaseView::of(&app).await;
    let mut session = session_holding_a_write(&app, &mut view, 1).await;
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

/// Starts the session client ([`fixtures::killable_session_client`]) as a
/// process of its own and waits for its READY line.
async fn spawn_client(app: &TestApp, mode: &str) -> (tokio::process::Child, String) {
    let mut child = fixtures::command("killable_session_client")
        .env(fixtures::SESSION_CLIENT, format!("{},{mode}", app.address))
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the session client (this test binary again)");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let id = tokio::time::timeout(Duration::from_secs(10), async {
        // The test harness prints lines of its own first.
        let mut before = Vec::new();
        while let Some(line) = lines.next_line().await.expect("read") {
            if let Some(id) = line.strip_prefix("READY ") {
                return id.to_owned();
            }
            before.push(line);
        }
        panic!("the session client ended without a READY line; it printed {before:?}")
    })
    .await
    .expect("client ready in time");
    (child, id)
}

async fn killed_client_is_cleaned_up(mode: &str) {
    let Some(app) = spawn_app(Backend::Postgres).await else {
        return;
    };
    app.run("CREATE TABLE pending (id INTEGER)").await;
    app.run("CREATE TABLE locked (id INTEGER PRIMARY KEY, n INTEGER)")
        .await;
    app.run("INSERT INTO locked VALUES (1, 0)").await;
    let (mut child, _session) = spawn_client(&app, mode).await;
    let mut direct = app.postgres_direct().await;
    assert!(
        sqlgate_backends(&mut direct, &app.db.name, Backends::Busy).await >= 1,
        "the client's transaction is open"
    );
    if mode == "sleep" {
        // The kill must land while the statement runs on the server.
        let started = Instant::now();
        while sqlgate_backends(&mut direct, &app.db.name, Backends::Running("pg_sleep(30)")).await
            == 0
        {
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "the client's pg_sleep(30) never ran"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    child.start_kill().expect("SIGKILL");
    let killed = Instant::now();
    within(WAIT, "the killed client reaped", child.wait())
        .await
        .expect("reaped");
    loop {
        if sqlgate_backends(&mut direct, &app.db.name, Backends::Busy).await == 0 {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(1),
            "sqlgate backend still in a transaction 1 s after SIGKILL"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The insert was rolled back and the row lock released.
    assert_eq!(app.count("pending").await, 0);
    sqlx::query("SET lock_timeout = '500ms'")
        .execute(&mut direct)
        .await
        .expect("set");
    let updated = sqlx::query("UPDATE locked SET n = n + 1 WHERE id = 1")
        .execute(&mut direct)
        .await
        .expect("the lock is gone");
    assert_eq!(updated.rows_affected(), 1);
    wait_for_end(&app, "client_gone", 1, Duration::from_secs(1)).await;
    DatabaseView::of(&app)
        .await
        .assert_settles_clean(&app, CLEANUP_BOUND)
        .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_killed_client_process_leaves_nothing_behind() {
    killed_client_is_cleaned_up("lock").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_killed_client_process_has_its_running_query_cancelled() {
    killed_client_is_cleaned_up("sleep").await;
}

async fn a_dead_peer_is_noticed_within_the_keepalive_timeout(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |s| {
        s.transport.keepalive_interval = Duration::from_millis(300);
        s.transport.keepalive_timeout = Duration::from_millis(300);
    })
    .await
    else {
        return;
    };
    app.run("CREATE TABLE t (id INTEGER)").await;
    let mut view = DatabaseView::of(&app).await;
    let proxy = Proxy::start(app.address).await;
    let channel = Channel::from_shared(format!("http://{}", proxy.address))
        .expect("uri")
        .connect()
        .await
        .expect("connect through the proxy");
    let mut session = Session::begin_on(channel, BeginSession::default())
        .await
        .expect("begin");
    session
        .execute(&app, 1, "INSERT INTO t VALUES (1)", vec![])
        .await
        .expect("insert");
    assert_eq!(view.seen().await.open_transactions, 1);
    proxy.freeze();
    let frozen = Instant::now();
    wait_for_end(&app, "client_gone", 1, Duration::from_secs(3)).await;
    // Noticed after at most an interval plus a timeout (with some slack).
    assert!(
        frozen.elapsed() < Duration::from_millis(1500),
        "took {:?}",
        frozen.elapsed()
    );
    view.assert_settles_clean(&app, CLEANUP_BOUND).await;
    assert_eq!(app.count("t").await, 0);
    drop(session);
    app.stop().await;
}
on_every_backend!(a_dead_peer_is_noticed_within_the_keepalive_timeout);

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

async fn shutdown_rolls_back_open_sessions(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    app.run("CREATE TABLE t (id INTEGER)").await;
    let mut view = DatabaseView::of(&app).await;
    let mut session = session_holding_a_write(&app, &mut view, 1).await;
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
    let seen = view.seen().await;
    assert!(seen.is_clean(), "after shutdown: {seen:?}");
    // A closed connection's backend leaves the server's lists a moment later.
    let closed = Instant::now();
    while view.connections().await > 0 {
        assert!(
            closed.elapsed() < Duration::from_secs(2),
            "a sqlgate connection is still open 2 s after shutdown"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(view.count_rows("t").await, 0);
}
on_every_backend!(shutdown_rolls_back_open_sessions);

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

async fn a_session_statement_past_its_timeout_is_cancelled(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    app.run("CREATE TABLE t (id INTEGER)").await;
    let mut view = DatabaseView::of(&app).await;
    let mut session = session_holding_a_write(&app, &mut view, 1).await;
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
