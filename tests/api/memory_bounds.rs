//! Memory bounded by configuration, not by callers. sqlx caches prepared
//! statements per connection, in sqlgate and in the database's server
//! process: a caller sending thousands of distinct long statements must not
//! grow either. Long statements run unnamed (never cached) and answer like
//! any other; the cache holds at most `pool.statement_cache_capacity`
//! statements. The memory test runs the real binary against PostgreSQL and
//! reads resident memory from `/proc`.
//!
//! The binary runs without transparent huge pages: with them, each 2 MiB
//! region that a stream's frame first touched became resident whole.

use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use sqlgate::grpc::pb::{self, query_client::QueryClient, result_frame::Frame, value::Kind};
use sqlx::Connection;

use crate::{
    binary::{Sqlgate, channel},
    helpers::{Backend, TEST_BOUND, TestApp, WAIT, spawn_app_with, v, within},
    on_every_backend,
    session_client::Session,
    test_database::TestDatabase,
};

/// Connections in sqlgate's pool, and calls in flight (one per connection).
const POOL: usize = 4;
/// Distinct long statements sent after the warm-up.
const STATEMENTS: usize = 2_000;
/// Length of each, in bytes.
const STATEMENT_BYTES: usize = 256 << 10;
/// Long statements sent before the first reading, so that buffers that
/// grow once to the longest message (sqlx's, hyper's, the allocator's)
/// have grown.
const WARM_UP: usize = 16;
/// sqlgate may grow by this much over the run. sqlx's default cache (100
/// statements per connection, of any size) kept 400 of these statements:
/// sqlgate grew by over 130 MiB.
const SQLGATE_GROWTH_BOUND: u64 = 32 << 20;
/// Each PostgreSQL server process may grow by this much (its private
/// memory). With the old cache each kept 100 of these statements, 25 MiB.
const BACKEND_GROWTH_BOUND: u64 = 8 << 20;

/// A distinct statement of [`STATEMENT_BYTES`]: one parameter echoed back,
/// padded with a comment that makes its text unique.
fn long_statement(index: usize) -> String {
    let head = format!("SELECT $1::text AS x /* {index} ");
    let padding = STATEMENT_BYTES - head.len() - " */".len();
    format!("{head}{} */", "p".repeat(padding))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distinct_long_statements_leave_memory_flat() {
    within(TEST_BOUND, "the test", long_statements_on_postgres()).await;
}

async fn long_statements_on_postgres() {
    let Some(db) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    let pool = POOL.to_string();
    let (sqlgate, address) = Sqlgate::serving(
        &db.url,
        &[
            ("SQLGATE_POOL__MAX_CONNECTIONS", pool.as_str()),
            ("SQLGATE_POOL__MIN_CONNECTIONS", pool.as_str()),
            ("SQLGATE_LOG_FILTER", "warn"),
        ],
    )
    .await;
    let query = QueryClient::new(channel(address).await);

    run_long_statements(&query, 0..WARM_UP).await;
    let sqlgate_before = resident_bytes(sqlgate.pid());
    let backends = backend_pids(&db).await;
    let backends_before: Vec<_> = backends.iter().map(|&pid| private_bytes(pid)).collect();

    let started = Instant::now();
    run_long_statements(&query, WARM_UP..WARM_UP + STATEMENTS).await;
    let elapsed = started.elapsed();

    let sqlgate_after = resident_bytes(sqlgate.pid());
    let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
    // Printed for whoever tunes the bounds (shown with --nocapture).
    eprintln!(
        "sqlgate resident memory: {:.1} MiB after the warm-up, {:.1} MiB after {STATEMENTS} \
         distinct statements of {} KiB ({elapsed:?})",
        mib(sqlgate_before),
        mib(sqlgate_after),
        STATEMENT_BYTES >> 10,
    );
    // Readable only where PostgreSQL runs on this machine.
    let backends_grown: Vec<_> = backends
        .iter()
        .zip(&backends_before)
        .filter_map(|(&pid, &before)| Some((pid, before?, private_bytes(pid)?)))
        .collect();
    for (pid, before, after) in &backends_grown {
        eprintln!(
            "PostgreSQL server process {pid}: {:.1} MiB -> {:.1} MiB private",
            mib(*before),
            mib(*after)
        );
    }
    assert!(
        sqlgate_after.saturating_sub(sqlgate_before) < SQLGATE_GROWTH_BOUND,
        "sqlgate grew from {:.1} MiB to {:.1} MiB over {STATEMENTS} distinct long statements",
        mib(sqlgate_before),
        mib(sqlgate_after)
    );
    for (pid, before, after) in backends_grown {
        assert!(
            after.saturating_sub(before) < BACKEND_GROWTH_BOUND,
            "PostgreSQL server process {pid} grew from {:.1} MiB to {:.1} MiB",
            mib(before),
            mib(after)
        );
    }
    drop(query);
    let (status, _) = sqlgate.stop().await;
    assert!(status.success(), "{status}");
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn the_binary_runs_without_transparent_huge_pages() {
    within(TEST_BOUND, "the test", async {
        let Some(db) = TestDatabase::create(Backend::Sqlite).await else {
            return;
        };
        let (sqlgate, _) = Sqlgate::serving(&db.url, &[]).await;
        let status = std::fs::read_to_string(format!("/proc/{}/status", sqlgate.pid()))
            .expect("sqlgate's /proc status");
        // Linux 5.0 and later say whether the process may use them.
        if let Some(line) = status.lines().find(|line| line.starts_with("THP_enabled:")) {
            assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
        }
        let (status, _) = sqlgate.stop().await;
        assert!(status.success(), "{status}");
    })
    .await;
}

/// Runs the long statements numbered `indexes`, [`POOL`] at a time, and
/// checks that each answers its row.
async fn run_long_statements(
    query: &QueryClient<tonic::transport::Channel>,
    indexes: std::ops::Range<usize>,
) {
    stream::iter(indexes)
        .map(|index| {
            let mut query = query.clone();
            async move {
                let response = query
                    .execute(pb::ExecuteRequest {
                        sql: long_statement(index),
                        params: vec![v::text("echo")],
                        max_rows: 0,
                    })
                    .await
                    .unwrap_or_else(|status| panic!("statement {index}: {status:?}"))
                    .into_inner();
                assert_eq!(response.rows.len(), 1, "statement {index}");
                assert_eq!(
                    response.rows[0].values[0].kind,
                    Some(Kind::TextValue("echo".to_owned())),
                    "statement {index}"
                );
            }
        })
        .buffer_unordered(POOL)
        .collect::<()>()
        .await;
}

/// A field of `/proc/<pid>/status`, in bytes (`None` when the process or
/// the field cannot be read: another machine's PostgreSQL, a process gone).
fn status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with(field))?;
    let kib: u64 = line
        .trim_start_matches(field)
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// sqlgate's resident memory.
fn resident_bytes(pid: u32) -> u64 {
    status_bytes(pid, "VmRSS:").expect("sqlgate's VmRSS")
}

/// A PostgreSQL server process's private (anonymous) resident memory: the
/// shared buffers it has touched are left out.
fn private_bytes(pid: u32) -> Option<u64> {
    status_bytes(pid, "RssAnon:")
}

/// The server processes of sqlgate's connections to `db`.
async fn backend_pids(db: &TestDatabase) -> Vec<u32> {
    let mut conn = sqlx::PgConnection::connect(&db.url)
        .await
        .expect("direct connection");
    let started = Instant::now();
    loop {
        let pids: Vec<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND application_name = 'sqlgate'",
        )
        .bind(&db.name)
        .fetch_all(&mut conn)
        .await
        .expect("pg_stat_activity");
        if pids.len() >= POOL || started.elapsed() > Duration::from_secs(5) {
            return pids
                .into_iter()
                .filter_map(|pid| u32::try_from(pid).ok())
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `SELECT id, label FROM t WHERE id IN (…)`, longer than the 4 KiB the
/// cache takes by default.
fn long_select(app: &TestApp) -> String {
    let ids: Vec<String> = (1..=2_000).map(|id| id.to_string()).collect();
    let sql = format!(
        "SELECT id, label FROM t WHERE id IN ({}) AND label <> $1 ORDER BY id",
        ids.join(", ")
    );
    assert!(sql.len() > 4096);
    app.sql(&sql)
}

/// A long statement runs unnamed on each backend and answers exactly as a
/// short one: its columns even without rows (sqlx can describe it only by
/// caching it, so the connection's cache is emptied after), its rows, its
/// writes, inside a session too; and cached short statements keep working
/// around it.
async fn long_statements_answer_like_short_ones(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |settings| {
        // One connection: every statement below meets the same cache.
        settings.pool.max_connections = 1;
    })
    .await
    else {
        return;
    };
    app.run("CREATE TABLE t (id INTEGER PRIMARY KEY, label VARCHAR(20))")
        .await;
    let short = "SELECT label FROM t WHERE id = $1";
    let short_rows = |response: pb::ExecuteResponse| response.rows.len();
    assert_eq!(
        short_rows(app.execute(short, vec![v::int(1)]).await.expect("short")),
        0
    );

    // No rows: the columns still come back.
    let empty = app
        .execute(&long_select(&app), vec![v::text("none")])
        .await
        .expect("long select without rows");
    assert!(empty.rows.is_empty());
    let names: Vec<_> = empty.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["id", "label"]);
    // The short statement, cached before, still runs.
    assert_eq!(
        short_rows(app.execute(short, vec![v::int(1)]).await.expect("short")),
        0
    );

    // A long write, with parameters.
    let long_insert = app.sql(&format!(
        "INSERT INTO t (id, label) VALUES ($1, $2) /* {} */",
        "w".repeat(8 << 10)
    ));
    let inserted = app
        .execute(&long_insert, vec![v::int(7), v::text("seven")])
        .await
        .expect("long insert");
    assert_eq!(inserted.rows_affected, 1);

    // Rows, inline and streamed.
    let found = app
        .execute(&long_select(&app), vec![v::text("none")])
        .await
        .expect("long select");
    assert_eq!(found.rows.len(), 1);
    assert_eq!(
        found.rows[0].values[1].kind,
        Some(Kind::TextValue("seven".to_owned()))
    );
    let frames = streamed(&app, &long_select(&app), vec![v::text("seven")]).await;
    let Some(Frame::Metadata(metadata)) = &frames[0].frame else {
        panic!("metadata first: {frames:?}");
    };
    assert_eq!(metadata.columns.len(), 2);
    assert!(
        !frames
            .iter()
            .any(|frame| matches!(frame.frame, Some(Frame::Rows(_))))
    );

    // In a session's transaction: a long write, then long reads.
    let mut session = Session::begin(&app, &[]).await.expect("begin");
    session
        .execute(&app, 1, &long_insert, vec![v::int(8), v::text("eight")])
        .await
        .expect("long insert in a session");
    let rows = session
        .execute(&app, 2, &long_select(&app), vec![v::text("none")])
        .await
        .expect("long select in a session");
    assert_eq!(rows.len(), 2);
    session.commit().await;
    assert_eq!(app.count("t").await, 2);
    assert_eq!(
        short_rows(app.execute(short, vec![v::int(8)]).await.expect("short")),
        1
    );
}

on_every_backend!(long_statements_answer_like_short_ones);

/// Every frame of an `ExecuteStream` call.
async fn streamed(app: &TestApp, sql: &str, params: Vec<pb::Value>) -> Vec<pb::ResultFrame> {
    let mut frames = app
        .query
        .clone()
        .execute_stream(pb::ExecuteRequest {
            sql: sql.to_owned(),
            params,
            max_rows: 0,
        })
        .await
        .expect("stream")
        .into_inner();
    let mut all = Vec::new();
    while let Some(frame) = within(WAIT, "the next frame", frames.next()).await {
        all.push(frame.expect("a frame"));
    }
    all
}

/// On PostgreSQL, the prepared statements a connection holds are visible
/// to itself (`pg_prepared_statements`): at most
/// `pool.statement_cache_capacity` of them, none of them long.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_holds_its_capacity_and_no_long_statement() {
    within(TEST_BOUND, "the test", cache_on_the_server()).await;
}

async fn cache_on_the_server() {
    const CAPACITY: usize = 5;
    let Some(app) = spawn_app_with(Backend::Postgres, |settings| {
        settings.pool.max_connections = 1;
        settings.pool.statement_cache_capacity = CAPACITY;
    })
    .await
    else {
        return;
    };
    app.run("CREATE TABLE t (id INTEGER PRIMARY KEY, label VARCHAR(20))")
        .await;
    for n in 0..20 {
        app.execute(
            &format!("SELECT {n} AS n, $1::text AS x"),
            vec![v::text("x")],
        )
        .await
        .expect("short select");
        app.execute(&long_select(&app), vec![v::text(&n.to_string())])
            .await
            .expect("long select");
    }
    // Seen from a session, on the pool's one connection.
    let mut session = Session::begin(&app, &[]).await.expect("begin");
    let row = session
        .row("SELECT count(*), coalesce(max(length(statement)), 0) FROM pg_prepared_statements")
        .await;
    session.commit().await;
    let [Kind::IntValue(count), Kind::IntValue(longest)] = row[..] else {
        panic!("{row:?}");
    };
    assert!(count as usize <= CAPACITY, "{count} statements prepared");
    assert!(count > 0, "nothing prepared: the cache is off");
    assert!(longest <= 4096, "a statement of {longest} bytes was cached");
}
