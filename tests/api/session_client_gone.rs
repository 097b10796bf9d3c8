//! Sessions never leak when the client goes away: a half-closed stream, a
//! cancelled call, a killed client process and a dead peer each end the
//! session — its statement cancelled, its transaction rolled back, its
//! connection returned.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use sqlgate::grpc::pb::BeginSession;
use tokio::io::AsyncBufReadExt;
use tonic::{Code, transport::Channel};

use crate::{
    fixtures,
    helpers::{Backend, TestApp, WAIT, spawn_app, spawn_app_with, within},
    observe::DatabaseView,
    on_every_backend,
    pg_activity::{Backends, sqlgate_backends},
    proxy::Proxy,
    session_client::{
        CLEANUP_BOUND, Session, app_with_a_session_holding_a_write, ended_with,
        session_holding_a_write, wait_for_end,
    },
};

async fn a_stream_that_ends_without_commit_rolls_back(backend: Backend) {
    let Some((app, mut view, mut session)) = app_with_a_session_holding_a_write(backend).await
    else {
        return;
    };
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
