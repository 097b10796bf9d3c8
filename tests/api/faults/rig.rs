//! The rig every fault scenario runs on: a database server of the test's
//! own with a `faults` database (a `ledger` table for the writes, an
//! `items` table for the reads), the real `sqlgate` binary serving it with
//! short probe intervals, and a monitor that reads the database's own view
//! of sqlgate's connections over the server's Unix socket — a path no
//! network fault touches.

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use sqlx::{Connection, Row};
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{
    binary::Sqlgate,
    helpers::{Backend, sql_for},
    owned_database::{OwnedMariaDb, OwnedPostgres},
    test_database::running_in_ci,
};

/// sqlgate's pool in every scenario: small, so that faults fill it.
pub const POOL_SIZE: i64 = 6;
/// The control pool beside it (cancels and the health probe; two at most).
pub const CONTROL_CONNECTIONS: i64 = 2;
/// `health.probe_interval` in every scenario.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(300);
/// `health.probe_timeout`.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(250);
/// `health.failure_threshold` and `health.success_threshold` (the defaults).
pub const THRESHOLD: u32 = 2;
/// `shutdown.drain_timeout`.
pub const DRAIN: Duration = Duration::from_secs(3);
/// How far past its deadline an answer may arrive: the time to cancel on
/// the database and send the status, on a loaded two-core machine.
pub const MARGIN: Duration = Duration::from_millis(1500);

/// How long readiness may take to follow the database, either way: the
/// threshold's probes in a row, each up to an interval plus its timeout,
/// and one interval more for the probe in flight when the change came.
pub fn readiness_bound() -> Duration {
    (PROBE_INTERVAL + PROBE_TIMEOUT) * (THRESHOLD + 1)
}

/// The server the scenario owns.
pub enum Server {
    Postgres(OwnedPostgres),
    MariaDb(OwnedMariaDb),
}

/// A scenario's database server, sqlgate over it, and the monitor.
pub struct Rig {
    pub server: Server,
    pub sqlgate: Option<Sqlgate>,
    pub address: SocketAddr,
    pub backend: Backend,
    pub monitor: Monitor,
    /// Times when the database's view of sqlgate's connections may run
    /// ahead of sqlgate's own: while a path is black-holed and until the
    /// FIN of each connection closed on it has arrived.
    pub dead_path: Vec<(Instant, Instant)>,
    health: HealthClient<Channel>,
}

/// sqlgate's settings in every scenario (`extra` may add or override).
fn sqlgate_env(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let pool = POOL_SIZE.to_string();
    let probe_interval = format!("{}ms", PROBE_INTERVAL.as_millis());
    let probe_timeout = format!("{}ms", PROBE_TIMEOUT.as_millis());
    let drain = format!("{}s", DRAIN.as_secs());
    let mut env: Vec<(String, String)> = [
        ("SQLGATE_LOG_FILTER", "warn"),
        ("SQLGATE_POOL__MAX_CONNECTIONS", pool.as_str()),
        ("SQLGATE_POOL__ACQUIRE_TIMEOUT", "2s"),
        ("SQLGATE_HEALTH__PROBE_INTERVAL", probe_interval.as_str()),
        ("SQLGATE_HEALTH__PROBE_TIMEOUT", probe_timeout.as_str()),
        ("SQLGATE_SHUTDOWN__DRAIN_TIMEOUT", drain.as_str()),
        ("SQLGATE_TRANSPORT__KEEPALIVE_INTERVAL", "1s"),
        ("SQLGATE_TRANSPORT__KEEPALIVE_TIMEOUT", "1s"),
        ("SQLGATE_LIMITS__STREAM_STALL_TIMEOUT", "3s"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    for (key, value) in extra {
        env.retain(|(k, _)| k != key);
        env.push(((*key).to_owned(), (*value).to_owned()));
    }
    env
}

impl Rig {
    /// A PostgreSQL cluster (with `conf` appended to its `postgresql.conf`)
    /// and sqlgate over it with `env` added; `None` where PostgreSQL's
    /// server binaries are missing (never in CI).
    pub async fn postgres(conf: &str, env: &[(&str, &str)]) -> Option<Self> {
        let conf = conf.to_owned();
        let postgres = OwnedPostgres::start_with(move |data| {
            let path = data.join("postgresql.conf");
            let mut all = std::fs::read_to_string(&path).expect("conf");
            all.push_str(&format!("\nmax_connections = 60\n{conf}\n"));
            std::fs::write(path, all).expect("conf");
        })
        .await?;
        let mut admin = sqlx::PgConnection::connect(&postgres.url("127.0.0.1", ""))
            .await
            .expect("admin connection");
        sqlx::raw_sql("CREATE DATABASE faults")
            .execute(&mut admin)
            .await
            .expect("create database");
        let url = postgres.database_url("faults");
        let mut conn = sqlx::PgConnection::connect(&url).await.expect("faults");
        sqlx::raw_sql(
            "CREATE TABLE ledger (k varchar(64) PRIMARY KEY, via varchar(16) NOT NULL);
             CREATE TABLE items (id int PRIMARY KEY, body varchar(100) NOT NULL);
             INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 1000) g;",
        )
        .execute(&mut conn)
        .await
        .expect("schema");
        Some(Self::serve(Server::Postgres(postgres), Backend::Postgres, &url, env).await)
    }

    /// A MariaDB server and sqlgate over it with `env` added; `None` where
    /// MariaDB's server binaries are missing (never in CI).
    pub async fn mariadb(env: &[(&str, &str)]) -> Option<Self> {
        let mariadb = OwnedMariaDb::start().await?;
        let mut admin = sqlx::MySqlConnection::connect(&mariadb.socket_url())
            .await
            .expect("admin connection");
        sqlx::raw_sql(
            "CREATE DATABASE faults;
             CREATE TABLE faults.ledger (k varchar(64) PRIMARY KEY, via varchar(16) NOT NULL);
             CREATE TABLE faults.items (id int PRIMARY KEY, body varchar(100) NOT NULL);
             INSERT INTO faults.items SELECT seq, CONCAT('item ', seq) FROM seq_1_to_1000;",
        )
        .execute(&mut admin)
        .await
        .expect("schema");
        let url = mariadb.database_url("faults");
        Some(Self::serve(Server::MariaDb(mariadb), Backend::MySql, &url, env).await)
    }

    /// The plain rig of `backend` (PostgreSQL or MariaDB).
    pub async fn on(backend: Backend) -> Option<Self> {
        match backend {
            Backend::MySql => Self::mariadb(&[]).await,
            _ => Self::postgres("", &[]).await,
        }
    }

    async fn serve(server: Server, backend: Backend, url: &str, env: &[(&str, &str)]) -> Self {
        let env = sqlgate_env(env);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let (sqlgate, address) = Sqlgate::serving(url, &env).await;
        let channel = Channel::from_shared(format!("http://{address}"))
            .expect("uri")
            .connect_timeout(Duration::from_secs(1))
            .connect_lazy();
        let rig = Self {
            monitor: Monitor::of(&server),
            dead_path: Vec::new(),
            server,
            sqlgate: Some(sqlgate),
            address,
            backend,
            health: HealthClient::new(channel),
        };
        rig.wait_readiness(true, Duration::from_secs(10)).await;
        rig
    }

    /// The database's port (what a network fault targets).
    pub fn database_port(&self) -> u16 {
        match &self.server {
            Server::Postgres(postgres) => postgres.port(),
            Server::MariaDb(mariadb) => mariadb.port(),
        }
    }

    /// The PostgreSQL cluster (panics on MariaDB).
    pub fn postgres_server(&self) -> &OwnedPostgres {
        match &self.server {
            Server::Postgres(postgres) => postgres,
            Server::MariaDb(_) => panic!("not PostgreSQL"),
        }
    }

    /// The MariaDB server (panics on PostgreSQL).
    pub fn mariadb_server(&mut self) -> &mut OwnedMariaDb {
        match &mut self.server {
            Server::MariaDb(mariadb) => mariadb,
            Server::Postgres(_) => panic!("not MariaDB"),
        }
    }

    /// Statement text on this backend (`$n` placeholders become `?` on
    /// MariaDB).
    pub fn sql(&self, sql: &str) -> String {
        sql_for(self.backend, sql)
    }

    /// A statement that runs for `seconds` on the database.
    pub fn sleep_sql(&self, seconds: u32) -> String {
        match self.backend {
            Backend::MySql => format!("SELECT SLEEP({seconds})"),
            _ => format!("SELECT pg_sleep({seconds})"),
        }
    }

    /// The sqlgate process (panics once it was stopped).
    pub fn sqlgate(&self) -> &Sqlgate {
        self.sqlgate.as_ref().expect("sqlgate runs")
    }

    /// sqlgate's resident memory now, in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        rss_kib(self.sqlgate().pid())
    }

    /// Connections sqlgate holds on the database now.
    pub async fn sqlgate_connections(&self) -> Option<i64> {
        self.monitor.sqlgate_connections().await
    }

    /// sqlgate connections idle inside an open transaction now.
    pub async fn idle_in_transaction(&self) -> Option<i64> {
        self.monitor.idle_in_transaction().await
    }

    /// Waits (up to 5 s) until no sqlgate connection is idle in a
    /// transaction; panics otherwise. (Under load a transaction may be
    /// between two of its statements at any moment; a stuck one stays.)
    pub async fn assert_no_idle_in_transaction(&self) {
        let started = Instant::now();
        loop {
            match self.idle_in_transaction().await {
                Some(0) => return,
                seen => assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "sqlgate connections idle in transaction for 5 s: {seen:?}: {:?}",
                    self.monitor.sessions().await
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every key in the ledger table.
    pub async fn ledger_keys(&self) -> HashSet<String> {
        self.monitor.ledger_keys().await
    }

    // ------------------------------------------------------------ readiness

    /// Readiness as a probe sees it (`None`: no answer within 1 s).
    pub async fn readiness(&self) -> Option<bool> {
        readiness(self.health.clone()).await
    }

    /// Waits (up to `within`) until readiness is `serving`; how long it took.
    pub async fn wait_readiness(&self, serving: bool, within: Duration) -> Duration {
        let started = Instant::now();
        loop {
            if self.readiness().await == Some(serving) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < within,
                "readiness not {} within {within:?}",
                if serving { "SERVING" } else { "NOT_SERVING" },
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// A background sampler of readiness, sqlgate's connections on the
    /// database and its memory.
    pub fn sample(&self) -> Sampler {
        let samples = Arc::new(Mutex::new(Samples::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (health, monitor, pid) = (
            self.health.clone(),
            self.monitor.clone(),
            self.sqlgate().pid(),
        );
        let (into, stopped) = (samples.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut tick = 0u64;
            while !stopped.load(Ordering::SeqCst) {
                let ready = readiness(health.clone()).await;
                let now = Instant::now();
                let connections = if tick.is_multiple_of(4) {
                    monitor.sqlgate_connections().await
                } else {
                    None
                };
                let rss = rss_kib(pid);
                {
                    let mut samples = into.lock().expect("samples");
                    if let Some(ready) = ready
                        && samples.readiness.last().map(|(_, r)| *r) != Some(ready)
                    {
                        samples.readiness.push((now, ready));
                    }
                    if let Some(n) = connections {
                        samples.max_connections = samples.max_connections.max(n);
                        samples.connections.push((now, n));
                    }
                    if let Some(rss) = rss {
                        samples.rss_kib.push((now, rss));
                    }
                }
                tick += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Sampler {
            samples,
            stop,
            task,
        }
    }

    // ------------------------------------------------------------ the end

    /// Sends SIGTERM to sqlgate; asserts that it exits 0 within the drain
    /// timeout and a few seconds more, and that the database then sees no
    /// connection of sqlgate's. Returns how long the exit took.
    pub async fn sigterm(&mut self) -> Duration {
        let took = self.sigterm_with_database_down().await;
        // The database notices a closed connection when it next reads
        // from it: give it a moment.
        let started = Instant::now();
        loop {
            let left = self.sqlgate_connections().await;
            if left == Some(0) {
                return took;
            }
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "{left:?} connections left on the database 2 s after sqlgate exited: {:?}",
                self.monitor.sessions().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM while the database cannot be reached: sqlgate exits 0
    /// within the drain timeout and a few seconds more all the same.
    pub async fn sigterm_with_database_down(&mut self) -> Duration {
        let sqlgate = self.sqlgate.take().expect("sqlgate runs");
        let started = Instant::now();
        sqlgate.signal("TERM");
        let bound = DRAIN + Duration::from_secs(5);
        let (status, output) = sqlgate.exited(bound + Duration::from_secs(10)).await;
        let took = started.elapsed();
        assert!(
            status.success(),
            "sqlgate exited with {status} after SIGTERM:\n{}",
            output.join("\n")
        );
        assert!(
            took <= bound,
            "sqlgate took {took:?} to exit after SIGTERM (bound {bound:?}):\n{}",
            output.join("\n")
        );
        took
    }
}

/// Reads the database's own view of sqlgate over the server's Unix socket
/// (a path no network fault touches), on a fresh connection each time so
/// that it works again as soon as a restarted server does.
#[derive(Clone)]
pub struct Monitor {
    backend: Backend,
    url: String,
}

impl Monitor {
    fn of(server: &Server) -> Self {
        match server {
            Server::Postgres(postgres) => Self {
                backend: Backend::Postgres,
                url: format!(
                    "postgres://postgres@localhost:{}/faults?host={}&application_name=fault-monitor",
                    postgres.port(),
                    postgres.dir().display()
                ),
            },
            Server::MariaDb(mariadb) => Self {
                backend: Backend::MySql,
                url: mariadb.socket_url().replace("/mysql?", "/faults?"),
            },
        }
    }

    /// Rows of one query (`None` while the server is down).
    async fn rows<T>(&self, postgres_sql: &str, mariadb_sql: &str) -> Option<Vec<T>>
    where
        T: Send + Unpin + for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
        T: for<'r> sqlx::Decode<'r, sqlx::MySql> + sqlx::Type<sqlx::MySql>,
    {
        let work = async {
            if self.backend == Backend::Postgres {
                let mut conn = sqlx::PgConnection::connect(&self.url).await.ok()?;
                let rows = sqlx::query(sqlx::AssertSqlSafe(postgres_sql.to_owned()))
                    .fetch_all(&mut conn)
                    .await
                    .ok()?;
                let _ = conn.close().await;
                rows.iter().map(|row| row.try_get(0).ok()).collect()
            } else {
                let mut conn = sqlx::MySqlConnection::connect(&self.url).await.ok()?;
                let rows = sqlx::query(sqlx::AssertSqlSafe(mariadb_sql.to_owned()))
                    .fetch_all(&mut conn)
                    .await
                    .ok()?;
                let _ = conn.close().await;
                rows.iter().map(|row| row.try_get(0).ok()).collect()
            }
        };
        tokio::time::timeout(Duration::from_secs(5), work)
            .await
            .ok()
            .flatten()
    }

    /// Connections sqlgate holds on the database now.
    pub async fn sqlgate_connections(&self) -> Option<i64> {
        self.rows(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'sqlgate'",
            "SELECT count(*) FROM information_schema.PROCESSLIST \
             WHERE DB = 'faults' AND ID <> CONNECTION_ID()",
        )
        .await?
        .pop()
    }

    /// sqlgate connections idle inside an open transaction for 2 s or more
    /// (under load, a transaction is between two of its statements at any
    /// moment; one left open stays).
    pub async fn idle_in_transaction(&self) -> Option<i64> {
        self.rows(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'sqlgate' \
             AND state LIKE 'idle in transaction%' AND now() - state_change > interval '2 seconds'",
            "SELECT count(*) FROM information_schema.INNODB_TRX t \
             JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id \
             WHERE p.DB = 'faults' AND p.COMMAND = 'Sleep' AND p.TIME >= 2 \
             AND p.ID <> CONNECTION_ID()",
        )
        .await?
        .pop()
    }

    /// What sqlgate's connections are doing, for failure messages.
    pub async fn sessions(&self) -> Option<Vec<String>> {
        self.rows(
            "SELECT concat_ws(' ', pid, state, wait_event, now() - state_change, left(query, 60)) \
             FROM pg_stat_activity \
             WHERE application_name = 'sqlgate'",
            "SELECT concat_ws(' ', ID, COMMAND, STATE, TIME, left(INFO, 60)) \
             FROM information_schema.PROCESSLIST WHERE DB = 'faults' AND ID <> CONNECTION_ID()",
        )
        .await
    }

    /// Every key in the ledger table (panics if the server cannot say).
    pub async fn ledger_keys(&self) -> HashSet<String> {
        self.rows::<String>("SELECT k FROM ledger", "SELECT k FROM ledger")
            .await
            .expect("the ledger table read")
            .into_iter()
            .collect()
    }
}

/// Readiness as a probe sees it (`None`: no answer within 1 s).
async fn readiness(mut health: HealthClient<Channel>) -> Option<bool> {
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: "readiness".to_owned(),
    });
    request.set_timeout(Duration::from_secs(1));
    let answer = tokio::time::timeout(Duration::from_secs(2), health.check(request))
        .await
        .ok()?
        .ok()?;
    Some(answer.into_inner().status() == ServingStatus::Serving)
}

/// A line for the test's log (stderr, shown with `--nocapture`).
pub fn note(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The resident memory of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// What the sampler saw.
#[derive(Debug, Default, Clone)]
pub struct Samples {
    /// Readiness changes (the first sample, then each change).
    pub readiness: Vec<(Instant, bool)>,
    /// The most connections sqlgate held on the database at once.
    pub max_connections: i64,
    /// sqlgate's connections on the database over time.
    pub connections: Vec<(Instant, i64)>,
    /// sqlgate's resident memory over time.
    pub rss_kib: Vec<(Instant, u64)>,
}

impl Samples {
    /// When readiness first became `serving` at or after `since`.
    pub fn became(&self, serving: bool, since: Instant) -> Option<Instant> {
        self.readiness
            .iter()
            .find(|(at, ready)| *at >= since && *ready == serving)
            .map(|(at, _)| *at)
    }

    /// The most RSS (KiB) sampled, or `otherwise` if none was.
    pub fn peak_rss(&self, otherwise: u64) -> u64 {
        self.rss_kib
            .iter()
            .map(|(_, rss)| *rss)
            .max()
            .unwrap_or(otherwise)
    }

    /// Min, median and max RSS (KiB) sampled after `since`.
    pub fn rss_after(&self, since: Instant) -> Option<(u64, u64, u64)> {
        let mut values: Vec<u64> = self
            .rss_kib
            .iter()
            .filter(|(at, _)| *at >= since)
            .map(|(_, rss)| *rss)
            .collect();
        values.sort_unstable();
        Some((*values.first()?, values[values.len() / 2], *values.last()?))
    }
}

/// The running sampler; [`Sampler::finish`] stops it.
pub struct Sampler {
    samples: Arc<Mutex<Samples>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    /// What it has seen so far.
    pub fn now(&self) -> Samples {
        self.samples.lock().expect("samples").clone()
    }

    /// Stops sampling; everything it saw.
    pub async fn finish(self) -> Samples {
        self.stop.store(true, Ordering::SeqCst);
        let samples = self.samples.clone();
        let _ = self.task.await;
        samples.lock().expect("samples").clone()
    }
}

/// Asserts that the sampled connections never exceeded the pool and its
/// control connections in two samples running (a connection sqlgate has
/// just closed may still be in the server's list for a moment while its
/// replacement opens), outside the `exempt` windows.
pub fn assert_within_pool(samples: &Samples, exempt: &[(Instant, Instant)]) {
    let bound = POOL_SIZE + CONTROL_CONNECTIONS;
    let over: Vec<_> = samples
        .connections
        .windows(2)
        .filter(|pair| {
            let (at, n) = pair[0];
            n > bound
                && pair[1].1 > bound
                && !exempt.iter().any(|(from, to)| *from <= at && at <= *to)
        })
        .map(|pair| pair[0].1)
        .collect();
    assert!(
        over.is_empty(),
        "sqlgate held {over:?} connections on the database (pool {POOL_SIZE} + control \
         {CONTROL_CONNECTIONS})"
    );
}

/// A loopback `iptables` rule that drops every packet to `port`: a network
/// path that black-holes (no RST, no ICMP). Removed on drop, whatever
/// happens to the test.
pub struct BlackHole {
    port: u16,
}

impl BlackHole {
    /// Inserts the rule; `None` (loudly, never in CI) without `iptables`.
    pub fn drop_packets_to(port: u16) -> Option<Self> {
        let inserted = std::process::Command::new("iptables")
            .args(Self::rule("-I", port))
            .status();
        match inserted {
            Ok(status) if status.success() => Some(Self { port }),
            other => {
                assert!(
                    !running_in_ci(),
                    "iptables is unusable in CI (CI is set): {other:?}"
                );
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "\n!!!!! SKIPPING: iptables is unusable ({other:?}); install it (apt-get install iptables) and run as root. !!!!!\n"
                );
                None
            }
        }
    }

    fn rule(action: &str, port: u16) -> Vec<String> {
        [
            "-w",
            action,
            "INPUT",
            "-i",
            "lo",
            "-p",
            "tcp",
            "--dport",
            &port.to_string(),
            "-j",
            "DROP",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    }

    /// Removes the rule now.
    pub fn lift(self) {}
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        let removed = std::process::Command::new("iptables")
            .args(Self::rule("-D", self.port))
            .status();
        assert!(
            removed.is_ok_and(|status| status.success()) || std::thread::panicking(),
            "the iptables rule on port {} could not be removed",
            self.port
        );
    }
}
