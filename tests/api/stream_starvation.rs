//! Readers that never read cannot starve the pool, nor make a healthy
//! database look down. A stream whose client grants no HTTP/2 window holds
//! its pooled connection while the database waits to write (PostgreSQL
//! shows it `active / ClientWrite`); streams may hold only their share of
//! the pool, a stalled one is ended after `limits.stream_stall_timeout`
//! (RESOURCE_EXHAUSTED, `READER_STALLED`; statement cancelled, connection
//! back), and the health probe runs on a connection of its own, so that a
//! full pool reads as *saturated* and callers get RESOURCE_EXHAUSTED,
//! never UNAVAILABLE.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use sqlgate::grpc::pb::{
    self, admin_client::AdminClient, query_client::QueryClient, result_frame::Frame,
};
use tokio_stream::StreamExt;
use tonic::{
    Code, Streaming,
    transport::{Channel, Endpoint},
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_types::StatusExt;

use crate::{
    binary::{Sqlgate, channel},
    health::{next_status, watch_readiness},
    helpers::{Backend, TestApp, WAIT, error_details, spawn_app_with, within},
    observe::DatabaseView,
    on_every_backend,
    pg_activity::{Backends, sqlgate_backends, wait_for_backends},
    test_database::TestDatabase,
};

/// The HTTP/2 window a stalled client grants, per stream and for its
/// connection: the server can send this much, then must wait.
const WINDOW: u32 = 64 * 1024;

/// Frames small enough that the stream's buffer fills quickly.
const FRAME_BYTES: usize = 32 * 1024;

/// The column every starving statement names, to find it on the server.
const TAG: &str = "starve_tag";

/// Hundreds of megabytes in rows of 8 kB: far more than any window or
/// buffer on the way holds, so the database itself ends up waiting to
/// write.
fn big_sql(backend: Backend) -> String {
    match backend {
        Backend::Postgres => format!(
            "SELECT g AS {TAG}, repeat('x', 8000) AS pad FROM generate_series(1, 100000) AS g"
        ),
        Backend::MySql => {
            format!("SELECT seq AS {TAG}, REPEAT('x', 8000) AS pad FROM seq_1_to_100000")
        }
        Backend::Sqlite => format!(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100000) \
             SELECT x AS {TAG}, hex(zeroblob(4000)) AS pad FROM c"
        ),
    }
}

/// An ExecuteStream call whose client reads nothing: its own HTTP/2
/// connection with a [`WINDOW`]-sized window, its response never polled,
/// so no window update ever goes back.
struct StalledStream {
    _channel: Channel,
    frames: Streaming<pb::ResultFrame>,
}

impl StalledStream {
    async fn open(address: SocketAddr, sql: &str) -> Self {
        let channel = Endpoint::from_shared(format!("http://{address}"))
            .expect("uri")
            .initial_stream_window_size(Some(WINDOW))
            .initial_connection_window_size(Some(WINDOW))
            .connect()
            .await
            .expect("connect");
        let frames = within(
            WAIT,
            "the stream opens",
            QueryClient::new(channel.clone()).execute_stream(pb::ExecuteRequest {
                sql: sql.to_owned(),
                params: vec![],
                max_rows: 0,
            }),
        )
        .await
        .expect("the stream opens")
        .into_inner();
        Self {
            _channel: channel,
            frames,
        }
    }

    /// The reader wakes up and reads what is left: the rows it is given,
    /// then the status the stream ended with (an error is expected).
    async fn read_to_the_end(mut self) -> (usize, tonic::Status) {
        let mut rows = 0;
        loop {
            match within(WAIT, "the rest of a stalled stream", self.frames.next()).await {
                Some(Ok(frame)) => {
                    if let Some(Frame::Rows(batch)) = frame.frame {
                        rows += batch.rows.len();
                    }
                }
                Some(Err(status)) => return (rows, status),
                None => panic!("the stalled stream ended without an error after {rows} rows"),
            }
        }
    }
}

/// The first answer of a stream that is expected to be refused.
async fn refusal(address: SocketAddr, sql: &str) -> tonic::Status {
    let mut client = QueryClient::new(channel(address).await);
    let request = pb::ExecuteRequest {
        sql: sql.to_owned(),
        params: vec![],
        max_rows: 0,
    };
    match within(WAIT, "the refusal", client.execute_stream(request)).await {
        Err(status) => status,
        Ok(response) => {
            let first = within(WAIT, "the refusal", response.into_inner().next()).await;
            match first {
                Some(Err(status)) => status,
                other => panic!("a stream over the share was not refused: {other:?}"),
            }
        }
    }
}

/// sqlgate's PostgreSQL backends running `pattern` while waiting to write
/// to sqlgate (the server is blocked on its socket).
async fn postgres_blocked_writing(
    direct: &mut sqlx::PgConnection,
    database: &str,
    pattern: &str,
) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 \
         AND application_name = 'sqlgate' AND state = 'active' \
         AND wait_event = 'ClientWrite' AND query LIKE $2",
    )
    .bind(database)
    .bind(format!("%{pattern}%"))
    .fetch_one(direct)
    .await
    .expect("pg_stat_activity")
}

/// Waits (up to 5 s) until the database shows `count` starving statements
/// held up by their readers: on PostgreSQL waiting in ClientWrite, on
/// MariaDB running, on SQLite (in-process) as connections checked out.
async fn wait_until_blocked(app: &TestApp, view: &mut DatabaseView, count: i64) {
    let started = Instant::now();
    loop {
        let seen = if let DatabaseView::Postgres { conn, database } = &mut *view {
            postgres_blocked_writing(conn, database, TAG).await
        } else if app.backend == Backend::MySql {
            view.running(TAG).await
        } else {
            i64::from(app.pool_in_use().await)
        };
        if seen == count {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{seen} starving statement(s) held up by their readers, expected {count}: {}",
            view.describe().await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The starving statements still on the server (none on SQLite, whose
/// statements run in-process: connections checked out stand for them).
async fn starving_on_the_server(app: &TestApp, view: &mut DatabaseView) -> i64 {
    match app.backend {
        Backend::Postgres | Backend::MySql => view.running(TAG).await,
        Backend::Sqlite => i64::from(app.pool_in_use().await),
    }
}

async fn stalled_readers_hold_only_their_share_and_are_ended(backend: Backend) {
    const POOL: u32 = 4;
    // Half of four connections: two streams.
    const SHARE: u32 = 2;
    let stall = Duration::from_secs(4);
    let Some(app) = spawn_app_with(backend, |s| {
        s.pool.max_connections = POOL;
        s.limits.stream_max_pool_share = 0.5;
        s.limits.stream_stall_timeout = stall;
        s.limits.stream_batch_bytes = FRAME_BYTES;
        s.health.probe_interval = Duration::from_millis(100);
        s.health.probe_timeout = Duration::from_secs(1);
    })
    .await
    else {
        return;
    };
    let app = Arc::new(app);
    let sql = big_sql(backend);
    let mut view = DatabaseView::of(&app).await;
    let mut readiness = watch_readiness(app.channel.clone()).await;

    // As many streams as the pool has connections, from readers that
    // never read: the first two are let in and stall…
    let opened = Instant::now();
    let mut stalled = Vec::new();
    for _ in 0..SHARE {
        stalled.push(StalledStream::open(app.address, &sql).await);
    }
    wait_until_blocked(&app, &mut view, i64::from(SHARE)).await;
    let stats = app.pool_stats().await;
    assert_eq!(stats.open_streams, SHARE, "{stats:?}");
    assert!(stats.in_use_connections >= SHARE, "{stats:?}");

    // …(c) the others are refused at once, with a reason and a retry hint.
    for _ in SHARE..POOL {
        let asked = Instant::now();
        let status = refusal(app.address, &sql).await;
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert_eq!(error_details(&status).0, "STREAM_LIMIT", "{status:?}");
        assert!(status.message().contains("streams"), "{}", status.message());
        assert!(status.get_error_details().retry_info().is_some());
        assert!(
            asked.elapsed() < Duration::from_secs(1),
            "{:?}",
            asked.elapsed()
        );
    }
    assert_eq!(
        app.pool_stats().await.streams_refused,
        u64::from(POOL - SHARE)
    );

    // (a) Other callers are served meanwhile, several at once.
    app.run("CREATE TABLE served (id INTEGER)").await;
    let calls: Vec<_> = (0..8)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                app.execute(
                    "INSERT INTO served (id) VALUES ($1)",
                    vec![pb::Value::int(i)],
                )
                .await
            })
        })
        .collect();
    for call in calls {
        within(WAIT, "a unary call", call)
            .await
            .expect("task")
            .expect("a unary call is served while streams stall");
    }
    assert_eq!(app.count("served").await, 8);

    // (b) Readiness stays SERVING, and the database is reachable.
    let changed = tokio::time::timeout(Duration::from_millis(500), readiness.next()).await;
    assert!(changed.is_err(), "readiness changed: {changed:?}");
    let stats = app.pool_stats().await;
    assert!(stats.database_reachable, "{stats:?}");
    assert!(!stats.saturated, "{stats:?}");
    assert!(
        opened.elapsed() < stall,
        "the checks above took longer than the stall time; the test proves nothing"
    );

    // (d) The stalled streams end after the stall time: their statements
    // are gone from the server and their connections back in the pool.
    while starving_on_the_server(&app, &mut view).await > 0 {
        assert!(
            opened.elapsed() < stall + Duration::from_secs(3),
            "starving statements still on the server {:?} after the streams opened: {}",
            opened.elapsed(),
            view.describe().await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ended = opened.elapsed();
    assert!(
        ended >= stall - Duration::from_millis(200),
        "the streams were ended after {ended:?}, before the stall time ({stall:?})"
    );
    view.assert_settles_clean(&app, Duration::from_secs(3))
        .await;
    let stats = app.pool_stats().await;
    assert_eq!(stats.open_streams, 0, "{stats:?}");
    assert_eq!(stats.streams_stalled, u64::from(SHARE), "{stats:?}");
    assert!(stats.open_connections <= POOL, "{stats:?}");
    if let DatabaseView::Postgres { conn, database } = &mut view {
        // The pool's connections and the control connection; nothing busy.
        let all = sqlgate_backends(conn, database, Backends::All).await;
        assert!(all <= i64::from(POOL) + 2, "{all} sqlgate connections");
        wait_for_backends(conn, database, Backends::Busy, 0, "no busy connection").await;
    }

    // The readers wake up: what was queued before the stall, then the
    // answer — RESOURCE_EXHAUSTED, READER_STALLED.
    for stream in stalled {
        let (rows, status) = stream.read_to_the_end().await;
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert_eq!(error_details(&status).0, "READER_STALLED", "{status:?}");
        assert!(
            status.message().contains("took no data for 4s"),
            "{}",
            status.message()
        );
        assert!(status.get_error_details().retry_info().is_none());
        assert!(rows > 0 && rows < 100_000, "{rows} rows before the stall");
    }

    // The share is free again: a stream that is read goes through.
    let mut frames = app
        .query
        .clone()
        .execute_stream(pb::ExecuteRequest {
            sql: app.sql("SELECT 1 AS one"),
            params: vec![],
            max_rows: 0,
        })
        .await
        .expect("a stream after the stalled ones")
        .into_inner();
    let mut last = None;
    while let Some(frame) = within(WAIT, "a frame", frames.next()).await {
        last = Some(frame.expect("frame"));
    }
    assert!(
        matches!(last.and_then(|f| f.frame), Some(Frame::Stats(_))),
        "a stats frame last"
    );
    let changed = tokio::time::timeout(Duration::from_millis(10), readiness.next()).await;
    assert!(changed.is_err(), "readiness changed: {changed:?}");
    drop(readiness);
    let app = Arc::try_unwrap(app).unwrap_or_else(|_| panic!("the app is still shared"));
    app.stop().await;
}
on_every_backend!(stalled_readers_hold_only_their_share_and_are_ended);

/// A gRPC status's `ErrorInfo.reason`, or the code when it has none.
fn reason_of(status: &tonic::Status) -> String {
    let reason = error_details(status).0;
    if reason.is_empty() {
        format!("{:?}", status.code())
    } else {
        reason
    }
}

/// The incident, replayed against the real binary: streams may take the
/// whole pool (share 1) and their readers stall. Callers get
/// RESOURCE_EXHAUSTED (never UNAVAILABLE), readiness reports saturation
/// (logged as such, with its reason) while GetPoolStats keeps
/// `database_reachable`, and all is well again once the stall time ends
/// the streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_pool_full_of_stalled_streams_is_saturated_never_unreachable() {
    let Some(db) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    let stall = Duration::from_secs(6);
    let (sqlgate, address) = Sqlgate::serving(
        &db.url,
        &[
            ("SQLGATE_LOG_FILTER", "info"),
            ("SQLGATE_POOL__MAX_CONNECTIONS", "2"),
            ("SQLGATE_POOL__ACQUIRE_TIMEOUT", "700ms"),
            ("SQLGATE_LIMITS__STREAM_MAX_POOL_SHARE", "1"),
            ("SQLGATE_LIMITS__STREAM_STALL_TIMEOUT", "6s"),
            ("SQLGATE_LIMITS__STREAM_BATCH_BYTES", "32768"),
            // A probe that needed a pooled connection would fail within
            // two probes here, and the database would be called down.
            ("SQLGATE_HEALTH__PROBE_INTERVAL", "100ms"),
            ("SQLGATE_HEALTH__PROBE_TIMEOUT", "300ms"),
            ("SQLGATE_HEALTH__FAILURE_THRESHOLD", "2"),
            ("SQLGATE_HEALTH__SATURATION_WAITERS", "0"),
            ("SQLGATE_HEALTH__SATURATION_DURATION", "300ms"),
        ],
    )
    .await;
    let main = channel(address).await;
    let admin = AdminClient::new(main.clone());
    let stats = || {
        let mut admin = admin.clone();
        async move {
            admin
                .get_pool_stats(pb::GetPoolStatsRequest {})
                .await
                .expect("GetPoolStats")
                .into_inner()
        }
    };
    let mut readiness = watch_readiness(main.clone()).await;
    let mut direct = {
        use sqlx::Connection;
        sqlx::PgConnection::connect(&format!("{}?application_name=sqlgate-test", db.url))
            .await
            .expect("direct connection")
    };

    // Both connections held by streams whose readers read nothing.
    let opened = Instant::now();
    let sql = big_sql(Backend::Postgres);
    let stalled = [
        StalledStream::open(address, &sql).await,
        StalledStream::open(address, &sql).await,
    ];
    let started = Instant::now();
    while postgres_blocked_writing(&mut direct, &db.name, TAG).await < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the streams never filled the pool"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(stats().await.in_use_connections, 2);

    // Three callers keep asking for a connection for two seconds.
    let callers: Vec<_> = (0..3u64)
        .map(|i| {
            let mut client = QueryClient::new(main.clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(200 * i)).await;
                let mut answers = Vec::new();
                let until = Instant::now() + Duration::from_secs(2);
                while Instant::now() < until {
                    let answer = client
                        .execute(pb::ExecuteRequest {
                            sql: "SELECT 1".into(),
                            params: vec![],
                            max_rows: 0,
                        })
                        .await;
                    answers.push(answer.err().map(|status| reason_of(&status)));
                }
                answers
            })
        })
        .collect();

    // The pool is saturated: readiness says so, GetPoolStats gives the
    // reason, and the database is still reachable.
    assert_eq!(
        next_status(&mut readiness).await,
        ServingStatus::NotServing,
        "readiness reports the saturation"
    );
    let saturated = stats().await;
    assert!(saturated.saturated, "{saturated:?}");
    assert!(saturated.database_reachable, "{saturated:?}");
    assert!(
        saturated
            .saturation_reason
            .contains("waiting for a database connection"),
        "{saturated:?}"
    );
    assert_eq!(saturated.open_streams, 2, "{saturated:?}");
    let mut health = HealthClient::new(main.clone());
    let liveness = health
        .check(HealthCheckRequest {
            service: "liveness".into(),
        })
        .await
        .expect("liveness")
        .into_inner();
    assert_eq!(liveness.status(), ServingStatus::Serving);

    // Every caller was told the pool is busy: RESOURCE_EXHAUSTED, never
    // UNAVAILABLE.
    let mut refused = 0;
    for caller in callers {
        for answer in within(WAIT, "a caller", caller).await.expect("task") {
            match answer.as_deref() {
                Some("POOL_EXHAUSTED") => refused += 1,
                other => panic!("a caller was answered {other:?} while the pool was full"),
            }
        }
    }
    assert!(refused >= 6, "{refused} callers refused");
    assert!(
        opened.elapsed() < stall,
        "the callers outlived the stall time; the test proves nothing"
    );

    // No one waits any more: ready again, while the streams still stall.
    assert_eq!(next_status(&mut readiness).await, ServingStatus::Serving);
    let calm = stats().await;
    assert!(
        !calm.saturated && calm.saturation_reason.is_empty(),
        "{calm:?}"
    );
    assert!(calm.database_reachable, "{calm:?}");

    // The stall time ends the streams; the pool serves again.
    let started = Instant::now();
    while stats().await.streams_stalled < 2 {
        assert!(
            started.elapsed() < stall + Duration::from_secs(3),
            "the stalled streams were not ended"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_for_backends(
        &mut direct,
        &db.name,
        Backends::Running(TAG),
        0,
        "stalled statements gone from the server",
    )
    .await;
    QueryClient::new(main.clone())
        .execute(pb::ExecuteRequest {
            sql: "SELECT 1".into(),
            params: vec![],
            max_rows: 0,
        })
        .await
        .expect("served once the streams are gone");
    for stream in stalled {
        let (_, status) = stream.read_to_the_end().await;
        assert_eq!(error_details(&status).0, "READER_STALLED", "{status:?}");
    }

    let (exit, output) = sqlgate.stop().await;
    assert!(exit.success(), "{exit}");
    let log = output.join("\n");
    let saturated_lines: Vec<_> = output
        .iter()
        .filter(|line| line.contains("pool saturated"))
        .collect();
    assert_eq!(saturated_lines.len(), 1, "{log}");
    assert!(
        saturated_lines[0].contains("waiting for a database connection")
            && saturated_lines[0].contains("database_reachable=true"),
        "{log}"
    );
    assert!(log.contains("pool no longer saturated"), "{log}");
    assert_eq!(
        output
            .iter()
            .filter(|line| line.contains("stream reader stalled"))
            .count(),
        2,
        "{log}"
    );
    assert!(!log.contains("unreachable"), "{log}");
    wait_for_backends(
        &mut direct,
        &db.name,
        Backends::All,
        0,
        "connections left after shutdown",
    )
    .await;
}
