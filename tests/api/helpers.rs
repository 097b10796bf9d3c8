//! Test support in the style of zero-to-production's `spawn_app()`: every
//! test gets its own database (PostgreSQL and MariaDB: a fresh database;
//! SQLite: a fresh file; see `test_database`) and its own sqlgate server on
//! an ephemeral port, and talks to it through the generated tonic clients
//! over a real socket.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use sqlgate::{
    config::{ListenAddress, Settings},
    grpc::pb::{self, admin_client::AdminClient, query_client::QueryClient, value::Kind},
    server::Application,
};
use sqlx::Connection;
use tokio::{io::AsyncReadExt, sync::oneshot, task::JoinHandle};
use tonic::{Code, transport::Channel};

use crate::test_database::{TestDatabase, mysql_admin_url, postgres_admin_url, with_database};

/// The backends the suite runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    MySql,
    Sqlite,
}

/// A running sqlgate with clients connected to it.
pub struct TestApp {
    pub backend: Backend,
    /// The TCP address; unspecified (`0.0.0.0:0`) on a Unix socket: see `listen`.
    pub address: SocketAddr,
    /// Where it listens (TCP, or a Unix socket).
    pub listen: ListenAddress,
    /// Where `GET /metrics` is served, when `metrics.listen` is set.
    pub metrics_address: Option<SocketAddr>,
    pub query: QueryClient<Channel>,
    pub admin: AdminClient<Channel>,
    pub channel: Channel,
    pub db: TestDatabase,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

/// A channel to sqlgate at `listen`: over TCP, or over its Unix socket.
pub async fn connect(listen: &ListenAddress) -> Result<Channel, tonic::transport::Error> {
    sqlgate::grpc::connect::channel(listen, |endpoint| {
        endpoint.connect_timeout(Duration::from_secs(5))
    })
    .await
}

/// Starts sqlgate on its own database; `None` when the backend is
/// unreachable outside CI (the test then returns early, loudly).
pub async fn spawn_app(backend: Backend) -> Option<TestApp> {
    spawn_app_with(backend, |_| {}).await
}

/// Like [`spawn_app`], with settings adjusted by `adjust`.
pub async fn spawn_app_with(
    backend: Backend,
    adjust: impl FnOnce(&mut Settings),
) -> Option<TestApp> {
    let db = TestDatabase::create(backend).await?;
    let mut settings = Settings {
        listen: "127.0.0.1:0".parse().expect("addr"),
        database_url: db.url.clone(),
        ..Settings::default()
    };
    settings.pool.max_connections = 4;
    // Tests stop their server at once; the tests of the delay set it.
    settings.shutdown.delay = Duration::ZERO;
    adjust(&mut settings);
    let app = Application::build(settings).await.expect("sqlgate starts");
    let listen = app.address().clone();
    let address = listen
        .tcp()
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    let metrics_address = app.metrics_address();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        app.run_until_stopped(async {
            let _ = stopped.await;
        })
        .await
        .expect("sqlgate runs");
    });
    let channel = connect(&listen).await.expect("connect to sqlgate");
    Some(TestApp {
        backend,
        address,
        listen,
        metrics_address,
        query: QueryClient::new(channel.clone()),
        admin: AdminClient::new(channel.clone()),
        channel,
        db,
        stop: Some(stop),
        server: Some(server),
    })
}

impl TestApp {
    /// A channel of its own: one more client connection, so one more
    /// caller (with authentication off a caller's name is its address and
    /// port).
    pub async fn another_channel(&self) -> Channel {
        connect(&self.listen).await.expect("connect")
    }

    /// Writes `$1, $2, …` as `?` on MySQL, so one statement serves all backends.
    pub fn sql(&self, sql: &str) -> String {
        sql_for(self.backend, sql)
    }

    /// Runs `sql` through sqlgate's Execute.
    pub async fn execute(
        &self,
        sql: &str,
        params: Vec<pb::Value>,
    ) -> Result<pb::ExecuteResponse, tonic::Status> {
        self.query
            .clone()
            .execute(pb::ExecuteRequest {
                sql: self.sql(sql),
                params,
                max_rows: 0,
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// Runs `sql` through sqlgate's ExecuteStream: every row of every
    /// frame, or the status the stream (or its start) ended with.
    pub async fn stream(
        &self,
        sql: &str,
        params: Vec<pb::Value>,
    ) -> Result<Vec<pb::Row>, tonic::Status> {
        use futures::StreamExt;
        let mut frames = self
            .query
            .clone()
            .execute_stream(pb::ExecuteRequest {
                sql: self.sql(sql),
                params,
                max_rows: 0,
            })
            .await?
            .into_inner();
        let mut rows = Vec::new();
        while let Some(frame) = frames.next().await {
            if let Some(pb::result_frame::Frame::Rows(batch)) = frame?.frame {
                rows.extend(batch.rows);
            }
        }
        Ok(rows)
    }

    /// Runs `sql` and panics on failure.
    pub async fn run(&self, sql: &str) -> pb::ExecuteResponse {
        self.execute(sql, vec![])
            .await
            .unwrap_or_else(|status| panic!("{sql}: {status:?}"))
    }

    /// `SELECT count(*)` of a table, read through sqlgate.
    pub async fn count(&self, table: &str) -> i64 {
        let response = self.run(&format!("SELECT count(*) FROM {table}")).await;
        match response.rows[0].values[0].kind {
            Some(Kind::IntValue(n)) => n,
            ref other => panic!("count came back as {other:?}"),
        }
    }

    /// A direct PostgreSQL connection to the test's database, bypassing sqlgate.
    pub async fn postgres_direct(&self) -> sqlx::PgConnection {
        assert_eq!(self.backend, Backend::Postgres);
        let url = with_database(&postgres_admin_url(), &self.db.name);
        sqlx::PgConnection::connect(&format!("{url}?application_name=sqlgate-test"))
            .await
            .expect("direct connection")
    }

    /// sqlgate's pool and session figures now, from the Admin service.
    pub async fn pool_stats(&self) -> pb::PoolStats {
        self.admin
            .clone()
            .get_pool_stats(pb::GetPoolStatsRequest {})
            .await
            .expect("stats")
            .into_inner()
    }

    /// Connections checked out of sqlgate's pool now.
    pub async fn pool_in_use(&self) -> u32 {
        self.pool_stats().await.in_use_connections
    }

    /// Waits (up to 2 s) until every pooled connection is back: a dropped
    /// connection returns to the pool in a task of sqlx's, a moment later.
    pub async fn wait_until_pool_idle(&self) {
        let started = std::time::Instant::now();
        while self.pool_in_use().await > 0 {
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "connections still checked out"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A direct MySQL connection (to the server, bypassing sqlgate).
    pub async fn mysql_direct(&self) -> sqlx::MySqlConnection {
        assert_eq!(self.backend, Backend::MySql);
        sqlx::MySqlConnection::connect(&mysql_admin_url())
            .await
            .expect("direct connection")
    }

    /// Stops the server and waits for it (the pool is closed when this
    /// returns); the database lives on until the returned guard drops.
    /// A shutdown that hangs, fails or panics fails the test.
    pub async fn stop(mut self) -> TestDatabase {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(10), server)
                .await
                .expect("sqlgate shut down within 10 s")
                .expect("sqlgate's server task ended without a panic or an error");
        }
        std::mem::replace(&mut self.db, TestDatabase::placeholder())
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// `sql` for `backend`: `$1, $2, …` written as `?` on MySQL, so one
/// statement serves all backends.
pub fn sql_for(backend: Backend, sql: &str) -> String {
    if backend != Backend::MySql {
        return sql.to_owned();
    }
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            while chars.peek().is_some_and(char::is_ascii_digit) {
                chars.next();
            }
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}

/// A Query client that sends `grpc-timeout` without enforcing it itself
/// (tonic's `Channel` cuts the call locally at the deadline, which would
/// hide what the server answers). Plain hyper HTTP/2 underneath.
pub type RawClient = QueryClient<
    hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        tonic::body::Body,
    >,
>;

pub fn raw_query_client(address: SocketAddr) -> RawClient {
    // TCP_NODELAY, as tonic's own channel sets: without it Nagle's
    // algorithm can hold a request back ~40 ms and skew every timing.
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build(connector);
    let origin: tonic::codegen::http::Uri = format!("http://{address}").parse().expect("uri");
    QueryClient::with_origin(client, origin)
}

/// A statement that runs for about ten seconds on each backend (on SQLite,
/// a recursive count that the progress handler can interrupt).
pub fn slow_sql(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => "SELECT pg_sleep(10)",
        Backend::MySql => "SELECT SLEEP(10)",
        Backend::Sqlite => {
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 10000000000) \
             SELECT max(x) FROM c"
        }
    }
}

/// How [`slow_sql`] (or another sleep) shows in the database's list of
/// running statements (PostgreSQL and MariaDB; SQLite runs in-process).
pub fn slow_pattern(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => "pg_sleep(",
        Backend::MySql => "SLEEP(",
        Backend::Sqlite => "",
    }
}

/// Open sessions as `Admin/ListSessions` reports them.
pub async fn list_sessions(app: &TestApp) -> Vec<pb::SessionInfo> {
    app.admin
        .clone()
        .list_sessions(pb::ListSessionsRequest {})
        .await
        .expect("ListSessions")
        .into_inner()
        .sessions
}

/// The kinds of a row's values.
pub fn kinds(row: &pb::Row) -> Vec<Kind> {
    row.values
        .iter()
        .map(|value| value.kind.clone().expect("a kind"))
        .collect()
}

/// Short names for the library's value constructors (`pb::Value::int` …),
/// for the rows of parameters the tests spell out.
pub mod v {
    use super::*;

    pub fn null() -> pb::Value {
        pb::Value::null()
    }
    pub fn int(n: i64) -> pb::Value {
        pb::Value::int(n)
    }
    pub fn text(s: &str) -> pb::Value {
        pb::Value::text(s)
    }
    pub fn of(kind: Kind) -> pb::Value {
        kind.into()
    }
}

/// The `ErrorInfo` metadata and `BadRequest` fields of a status.
pub fn error_details(
    status: &tonic::Status,
) -> (
    String,
    std::collections::HashMap<String, String>,
    Vec<String>,
) {
    use tonic_types::StatusExt;
    let details = status.get_error_details();
    let (reason, metadata) = details
        .error_info()
        .map(|info| (info.reason.clone(), info.metadata.clone()))
        .unwrap_or_default();
    let fields = details
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default();
    (reason, metadata, fields)
}

/// How long any single wait in a test may take before it fails with a
/// message (instead of hanging until the server's own deadline).
pub const WAIT: Duration = Duration::from_secs(10);

/// Awaits `future` for at most `limit`; fails the test naming `what`.
pub async fn within<T>(limit: Duration, what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {limit:?}"))
}

/// Runs `SELECT 1` with `query`: its value, or the call's status code.
pub async fn select_one(query: &mut QueryClient<Channel>) -> Result<i64, Code> {
    let response = query
        .execute(pb::ExecuteRequest {
            sql: "SELECT 1".to_owned(),
            params: vec![],
            max_rows: 0,
        })
        .await
        .map_err(|status| status.code())?
        .into_inner();
    match response.rows[0].values[0].kind {
        Some(Kind::IntValue(n)) => Ok(n),
        ref other => panic!("SELECT 1 came back as {other:?}"),
    }
}

/// When the server closed `socket` (end of stream or a reset), reading and
/// discarding whatever it sends before that; `None` if it is still open
/// after `limit`.
pub async fn closed_within<S: tokio::io::AsyncRead + Unpin>(
    mut socket: S,
    limit: Duration,
) -> Option<Instant> {
    let mut buffer = [0; 1024];
    tokio::time::timeout(limit, async {
        loop {
            match socket.read(&mut buffer).await {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(_) => continue,
            }
        }
    })
    .await
    .ok()
}

/// The longest one backend's run of a test may take: a backstop for any
/// wait a test forgot to bound.
pub const TEST_BOUND: Duration = Duration::from_secs(120);

/// Declares one `#[tokio::test]` per backend for a test body `async fn(Backend)`.
#[macro_export]
macro_rules! on_every_backend {
    ($name:ident) => {
        mod $name {

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                $crate::helpers::within(
                    $crate::helpers::TEST_BOUND,
                    "the test",
                    super::$name($crate::helpers::Backend::Postgres),
                )
                .await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn mysql() {
                $crate::helpers::within(
                    $crate::helpers::TEST_BOUND,
                    "the test",
                    super::$name($crate::helpers::Backend::MySql),
                )
                .await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                $crate::helpers::within(
                    $crate::helpers::TEST_BOUND,
                    "the test",
                    super::$name($crate::helpers::Backend::Sqlite),
                )
                .await
            }
        }
    };
}
