//! What a pod needs of the binary: it starts (not ready) while its
//! database cannot be reached yet and turns ready on its own once it can;
//! on SIGTERM it keeps serving for `shutdown.delay` with readiness already
//! NOT_SERVING, then stops accepting; and a client connection older than
//! `transport.max_connection_age` is sent away (GOAWAY) without cutting
//! its calls or sessions, the client's next call going over a new one.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use hyper_util::rt::TokioIo;
use sqlgate::grpc::pb::{self, BeginSession, SessionRequest, query_client::QueryClient};
use tonic::{
    Code,
    transport::{Channel, Endpoint},
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{
    binary::{Sqlgate, channel, free_address},
    helpers::{Backend, TestApp, WAIT, spawn_app, spawn_app_with, within},
    proxy::Proxy,
    session_client::Session,
    test_database::{TestDatabase, host_and_database, postgres_admin_url},
};

/// Health's answer for `service` over `channel`.
async fn health(channel: &Channel, service: &str) -> ServingStatus {
    within(
        WAIT,
        "a health answer",
        HealthClient::new(channel.clone()).check(HealthCheckRequest {
            service: service.to_owned(),
        }),
    )
    .await
    .expect("health answers")
    .into_inner()
    .status()
}

/// `SELECT 1` through Execute over `channel`.
async fn select_one(channel: &Channel) -> Result<pb::ExecuteResponse, tonic::Status> {
    QueryClient::new(channel.clone())
        .execute(pb::ExecuteRequest {
            sql: "SELECT 1".into(),
            params: vec![],
            max_rows: 0,
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Waits (up to `bound`) until readiness answers `wanted`.
async fn readiness_becomes(channel: &Channel, wanted: ServingStatus, bound: Duration) {
    let started = Instant::now();
    loop {
        let now = health(channel, "readiness").await;
        if now == wanted {
            return;
        }
        assert!(
            started.elapsed() < bound,
            "readiness still {now:?} after {bound:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_the_binary_starts_not_ready_while_the_database_is_unreachable_and_turns_ready() {
    let Some(db) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    let target: SocketAddr = host_and_database(&postgres_admin_url())
        .0
        .parse()
        .expect("a host:port");
    // A relay that refuses every connection until the database "comes up".
    let proxy = Proxy::start(target).await;
    proxy.cut();
    let url = db
        .url
        .replace(&target.to_string(), &proxy.address.to_string());
    let (sqlgate, address) = Sqlgate::serving(
        &url,
        &[
            ("SQLGATE_HEALTH__PROBE_INTERVAL", "200ms"),
            ("SQLGATE_POOL__ACQUIRE_TIMEOUT", "1s"),
        ],
    )
    .await;
    let channel = channel(address).await;
    assert_eq!(health(&channel, "liveness").await, ServingStatus::Serving);
    for service in ["readiness", "", "sqlgate.v1.Query", "sqlgate.v1.Sessions"] {
        assert_eq!(
            health(&channel, service).await,
            ServingStatus::NotServing,
            "{service:?}"
        );
    }
    // Calls that need the database are refused at once, saying why.
    let refused = select_one(&channel).await.expect_err("no database yet");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("unreachable"), "{refused:?}");
    let refused = Session::begin_on(channel.clone(), BeginSession::default())
        .await
        .map(|_| ())
        .expect_err("no session without a database");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    // Still not ready a while later: nothing flaps.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        health(&channel, "readiness").await,
        ServingStatus::NotServing
    );

    // The database comes up: ready without a restart, and calls go through.
    proxy.restore();
    readiness_becomes(&channel, ServingStatus::Serving, Duration::from_secs(10)).await;
    let answered = select_one(&channel).await.expect("served once ready");
    assert_eq!(answered.rows.len(), 1);

    let (status, output) = sqlgate.stop().await;
    assert_eq!(status.code(), Some(0), "{output:#?}");
    let said = output
        .iter()
        .find(|line| line.contains("database unreachable at start-up"))
        .unwrap_or_else(|| panic!("start-up says the database is unreachable: {output:#?}"));
    assert!(said.contains("WARN"), "{said}");
    assert!(
        output
            .iter()
            .any(|line| line.contains("database reachable; ready")),
        "{output:#?}"
    );
    assert!(
        !output.iter().any(|line| line.contains("postgres://")),
        "the URL reached the output: {output:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_not_there_yet_starts_not_ready_but_a_bad_configuration_stops() {
    // Nothing listening on the port; a host name that does not resolve (yet).
    let nothing = free_address();
    for url in [
        format!("postgres://postgres@{nothing}/postgres"),
        "postgres://postgres@db.not-there-yet.invalid:5432/postgres".to_owned(),
    ] {
        let (sqlgate, address) =
            Sqlgate::serving(&url, &[("SQLGATE_POOL__ACQUIRE_TIMEOUT", "1s")]).await;
        let channel = channel(address).await;
        assert_eq!(health(&channel, "liveness").await, ServingStatus::Serving);
        assert_eq!(
            health(&channel, "readiness").await,
            ServingStatus::NotServing,
            "{url}"
        );
        let (status, output) = sqlgate.stop().await;
        assert_eq!(status.code(), Some(0), "{output:#?}");
    }

    // Configurations no waiting can fix stop start-up, with one line.
    let postgres = host_and_database(&postgres_admin_url()).0;
    let missing_ca = format!(
        "postgres://postgres@{postgres}/postgres?sslmode=verify-full&sslrootcert=/nonexistent/ca.crt"
    );
    for (url, code, says) in [
        (
            "postgres://postgres@127.0.0.1:notaport/postgres",
            1,
            "the database URL is invalid",
        ),
        ("oracle://db/orcl", 2, "`database_url`"),
        // A CA file the URL names that is not there.
        (missing_ca.as_str(), 1, "cannot start"),
    ] {
        let (status, output) = Sqlgate::start(
            &[
                "--listen",
                &free_address().to_string(),
                "--database-url",
                url,
            ],
            &[],
        )
        .exited(Duration::from_secs(20))
        .await;
        assert_eq!(status.code(), Some(code), "{url}: {output:#?}");
        let lines: Vec<_> = output.iter().filter(|line| line.contains(says)).collect();
        assert_eq!(lines.len(), 1, "{url}: one line says {says:?}: {output:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_after_sigterm_calls_are_served_for_the_delay_then_connections_are_refused() {
    let Some(app) = spawn_app(Backend::Postgres).await else {
        return;
    };
    let url = app.db.url.clone();
    let _database = app.stop().await;
    let delay = Duration::from_secs(2);
    let (sqlgate, address) = Sqlgate::serving(&url, &[("SQLGATE_SHUTDOWN__DELAY", "2s")]).await;
    let connected = channel(address).await;
    assert_eq!(
        health(&connected, "readiness").await,
        ServingStatus::Serving
    );

    sqlgate.signal("TERM");
    let signalled = Instant::now();
    readiness_becomes(
        &connected,
        ServingStatus::NotServing,
        Duration::from_secs(1),
    )
    .await;
    // During the delay: a client routed here late still connects and is served.
    let late = channel(address).await;
    let answered = select_one(&late).await.expect("served during the delay");
    assert_eq!(answered.rows.len(), 1);
    assert!(
        signalled.elapsed() < delay,
        "the check ran within the delay"
    );
    select_one(&connected)
        .await
        .expect("an open connection is served during the delay");

    // After the delay: new connections are refused.
    tokio::time::sleep_until((signalled + delay + Duration::from_millis(500)).into()).await;
    let refused = tokio::net::TcpStream::connect(address).await;
    assert!(
        refused.is_err(),
        "a connection was accepted after the delay"
    );
    let (status, output) = sqlgate.exited(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0), "{output:#?}");
}

/// A channel whose connections are counted as it opens them.
async fn counted_channel(address: SocketAddr) -> (Channel, Arc<AtomicUsize>) {
    let opened = Arc::new(AtomicUsize::new(0));
    let counter = opened.clone();
    let connector = tower::service_fn(move |_: http::Uri| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::net::TcpStream::connect(address)
                .await
                .map(TokioIo::new)
        }
    });
    let channel = Endpoint::from_shared(format!("http://{address}"))
        .expect("uri")
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector(connector)
        .await
        .expect("connect");
    (channel, opened)
}

/// An app whose client connections age after `age` (no jitter) with
/// `grace`, a table `t`, and a session over a counted channel that has
/// inserted row 1 and not committed.
async fn aging_app_with_a_session(
    age: Duration,
    grace: Option<Duration>,
) -> Option<(TestApp, Channel, Arc<AtomicUsize>, Session)> {
    let app = spawn_app_with(Backend::Postgres, |s| {
        s.transport.max_connection_age = Some(age);
        s.transport.max_connection_age_jitter = Some(Duration::ZERO);
        s.transport.max_connection_age_grace = grace;
    })
    .await?;
    app.run("CREATE TABLE t (id INTEGER PRIMARY KEY)").await;
    let (channel, opened) = counted_channel(app.address).await;
    let mut session = Session::begin_on(channel.clone(), BeginSession::default())
        .await
        .expect("begin");
    session
        .execute(&app, 1, "INSERT INTO t VALUES (1)", vec![])
        .await
        .expect("insert");
    Some((app, channel, opened, session))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_an_old_connection_gets_goaway_without_cutting_its_calls_or_session() {
    let age = Duration::from_secs(1);
    let Some((app, channel, opened, mut session)) = aging_app_with_a_session(age, None).await
    else {
        return;
    };
    // A call in flight across the connection's age.
    let slow = {
        let channel = channel.clone();
        tokio::spawn(async move {
            QueryClient::new(channel)
                .execute(pb::ExecuteRequest {
                    sql: "SELECT pg_sleep(2)".into(),
                    params: vec![],
                    max_rows: 0,
                })
                .await
        })
    };
    tokio::time::sleep(age + Duration::from_millis(500)).await;

    // The session goes on over the old connection, and commits.
    session
        .execute(&app, 2, "INSERT INTO t VALUES (2)", vec![])
        .await
        .expect("the session still runs after GOAWAY");
    session.send(SessionRequest::commit()).await;
    let committed = session.next().await;
    assert!(
        matches!(
            committed.response,
            Some(pb::session_response::Response::Committed(_))
        ),
        "{committed:?}"
    );
    let slow = within(WAIT, "the call in flight", slow)
        .await
        .expect("joined");
    slow.expect("the call in flight finished after GOAWAY");
    assert_eq!(app.count("t").await, 2);
    assert_eq!(opened.load(Ordering::SeqCst), 1, "one connection so far");

    // The next call succeeds, over a new connection.
    let answered = select_one(&channel).await.expect("the next call");
    assert_eq!(answered.rows.len(), 1);
    assert_eq!(
        opened.load(Ordering::SeqCst),
        2,
        "the next call opened a new connection"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_an_old_connection_is_closed_at_the_end_of_its_grace() {
    let Some((app, _channel, _opened, mut session)) =
        aging_app_with_a_session(Duration::from_millis(500), Some(Duration::from_millis(500)))
            .await
    else {
        return;
    };
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    // Past age + grace the connection is closed: the session is cut and
    // rolled back, nothing of it kept (its request stream may be gone).
    if let Some(requests) = &session.requests {
        let _ = requests.send(SessionRequest::commit()).await;
    }
    let answer = within(WAIT, "the session's end", session.answers.message()).await;
    assert!(
        !matches!(
            answer,
            Ok(Some(pb::SessionResponse {
                response: Some(pb::session_response::Response::Committed(_)),
                ..
            }))
        ),
        "a session past its connection's grace committed: {answer:?}"
    );
    assert_eq!(app.count("t").await, 0);
    app.stop().await;
}
