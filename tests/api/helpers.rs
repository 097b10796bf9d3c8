//! Test support in the style of zero-to-production's `spawn_app()`: every
//! test gets its own database (PostgreSQL and MariaDB: a fresh database;
//! SQLite: a fresh file) and its own sqlgate server on an ephemeral port,
//! and talks to it through the generated tonic clients over a real socket.
//!
//! Backends come from `SQLGATE_TEST_POSTGRES_URL` and `SQLGATE_TEST_MYSQL_URL`
//! (defaults: the local servers on their standard ports). An unreachable
//! backend skips the test with a loud message, except under `CI=true`,
//! where it fails.

use std::{net::SocketAddr, time::Duration};

use sqlgate::{
    config::Settings,
    grpc::pb::{self, admin_client::AdminClient, query_client::QueryClient, value::Kind},
    server::Application,
};
use sqlx::{Connection, Executor};
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;

/// The backends the suite runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    MySql,
    Sqlite,
}

/// The PostgreSQL URL the suite administers from (its `postgres` database).
pub fn postgres_admin_url() -> String {
    std::env::var("SQLGATE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

fn mysql_admin_url() -> String {
    std::env::var("SQLGATE_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/mysql".to_owned())
}

/// Replaces the database name at the end of a URL.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let base = base.rsplit_once('/').map_or(base, |(head, _)| head);
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

/// A database of the test's own, dropped when the test ends.
pub struct TestDatabase {
    pub backend: Backend,
    /// The URL sqlgate connects with.
    pub url: String,
    /// The database's name (PostgreSQL/MariaDB).
    pub name: String,
    /// The database file (SQLite).
    sqlite_path: Option<std::path::PathBuf>,
    admin_url: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDatabase {
    async fn create(backend: Backend) -> Option<Self> {
        let name = format!("sqlgate_test_{}", uuid::Uuid::new_v4().simple());
        match backend {
            Backend::Postgres => {
                let admin_url = postgres_admin_url();
                let mut conn =
                    unreachable_skips(backend, sqlx::PgConnection::connect(&admin_url).await)?;
                conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .await
                    .expect("create test database");
                Some(Self {
                    backend,
                    url: with_database(&admin_url, &name),
                    name,
                    admin_url,
                    sqlite_path: None,
                    _dir: None,
                })
            }
            Backend::MySql => {
                let admin_url = mysql_admin_url();
                let mut conn =
                    unreachable_skips(backend, sqlx::MySqlConnection::connect(&admin_url).await)?;
                conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .await
                    .expect("create test database");
                Some(Self {
                    backend,
                    url: with_database(&admin_url, &name),
                    name,
                    admin_url,
                    sqlite_path: None,
                    _dir: None,
                })
            }
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let path = dir.path().join("test.db");
                Some(Self {
                    backend,
                    url: format!("sqlite://{}?mode=rwc", path.display()),
                    name,
                    admin_url: String::new(),
                    sqlite_path: Some(path),
                    _dir: Some(dir),
                })
            }
        }
    }
}

impl TestDatabase {
    /// The SQLite database file, for a direct connection beside sqlgate's.
    pub fn sqlite_path(&self) -> Option<std::path::PathBuf> {
        self.sqlite_path.clone()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (backend, admin_url, name) = (self.backend, self.admin_url.clone(), self.name.clone());
        if backend == Backend::Sqlite {
            return;
        }
        match backend {
            Backend::Postgres => drop_in_background::<sqlx::PgConnection>(
                admin_url,
                vec![format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")],
            ),
            Backend::MySql => drop_in_background::<sqlx::MySqlConnection>(
                admin_url,
                vec![format!("DROP DATABASE IF EXISTS {name}")],
            ),
            Backend::Sqlite => {}
        }
    }
}

/// Runs `statements` (best effort: cleanup) through a fresh connection to
/// `admin_url`, from `Drop`, where async work cannot run: on a thread with
/// a runtime of its own, waited for.
pub fn drop_in_background<C>(admin_url: String, statements: Vec<String>)
where
    C: sqlx::Connection + 'static,
    for<'c> &'c mut C: sqlx::Executor<'c>,
{
    let _ = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            if let Ok(mut conn) = C::connect(&admin_url).await {
                for sql in statements {
                    let _ = conn.execute(sqlx::AssertSqlSafe(sql)).await;
                }
            }
        });
    })
    .join();
}

/// Whether this run is CI's: `CI` set to anything but empty, `0`, `false`,
/// `no` or `off` (CI systems spell it `true`, `1`, `yes`…).
pub fn running_in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| {
        !matches!(
            value.trim().to_ascii_lowercase().as_str(),
            "" | "0" | "false" | "no" | "off"
        )
    })
}

/// Skips a test whose backend is unreachable — loudly, and never in CI.
/// The message is written straight to the process's stderr: the test
/// harness captures `eprintln!` of passing tests, which would make a
/// skipped backend look like `ok`.
fn unreachable_skips<T, E: std::fmt::Display>(backend: Backend, result: Result<T, E>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(err) => {
            if running_in_ci() {
                panic!("{backend:?} is unreachable in CI (CI is set): {err}");
            }
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr().lock(),
                "\n!!!!! SKIPPING: {backend:?} is unreachable ({err}). Start it or set SQLGATE_TEST_*_URL. !!!!!\n"
            );
            None
        }
    }
}

/// A running sqlgate with clients connected to it.
pub struct TestApp {
    pub backend: Backend,
    pub address: SocketAddr,
    pub query: QueryClient<Channel>,
    pub admin: AdminClient<Channel>,
    pub channel: Channel,
    pub db: TestDatabase,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
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
    adjust(&mut settings);
    let app = Application::build(settings).await.expect("sqlgate starts");
    let address = app.address();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        app.run_until_stopped(async {
            let _ = stopped.await;
        })
        .await
        .expect("sqlgate runs");
    });
    let channel = Channel::from_shared(format!("http://{address}"))
        .expect("uri")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect to sqlgate");
    Some(TestApp {
        backend,
        address,
        query: QueryClient::new(channel.clone()),
        admin: AdminClient::new(channel.clone()),
        channel,
        db,
        stop: Some(stop),
        server: Some(server),
    })
}

impl TestApp {
    /// Writes `$1, $2, …` as `?` on MySQL, so one statement serves all backends.
    pub fn sql(&self, sql: &str) -> String {
        if self.backend != Backend::MySql {
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
        let placeholder = TestDatabase {
            backend: Backend::Sqlite,
            url: String::new(),
            name: String::new(),
            admin_url: String::new(),
            sqlite_path: None,
            _dir: None,
        };
        std::mem::replace(&mut self.db, placeholder)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
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

/// Which of sqlgate's PostgreSQL backends [`sqlgate_backends`] counts.
#[derive(Debug, Clone, Copy)]
pub enum Backends<'a> {
    /// Every connection sqlgate holds open.
    All,
    /// Running a statement or holding a transaction open.
    Busy,
    /// Running a statement whose text contains this.
    Running(&'a str),
}

/// How many of sqlgate's backends (`application_name = 'sqlgate'`) on
/// `database` are in the state asked for, as PostgreSQL sees them.
pub async fn sqlgate_backends(
    direct: &mut sqlx::PgConnection,
    database: &str,
    which: Backends<'_>,
) -> i64 {
    let (state, pattern) = match which {
        Backends::All => ("TRUE", String::new()),
        Backends::Busy => (
            "(state LIKE 'idle in transaction%' OR state = 'active')",
            String::new(),
        ),
        Backends::Running(text) => ("state = 'active'", text.to_owned()),
    };
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 \
         AND application_name = 'sqlgate' AND {state} AND query LIKE $2"
    )))
    .bind(database)
    .bind(format!("%{pattern}%"))
    .fetch_one(direct)
    .await
    .expect("pg_stat_activity")
}

/// Waits (up to 2 s) until [`sqlgate_backends`] counts exactly `count`;
/// fails naming `what` otherwise.
pub async fn wait_for_backends(
    direct: &mut sqlx::PgConnection,
    database: &str,
    which: Backends<'_>,
    count: i64,
    what: &str,
) {
    let started = std::time::Instant::now();
    loop {
        let now = sqlgate_backends(direct, database, which).await;
        if now == count {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{what}: {now} sqlgate backend(s) ({which:?}), expected {count}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

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
