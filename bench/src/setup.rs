//! Before any workload: the benchmark's own database and data, the sqlgate
//! child process, and the connections of both sides.

use std::{
    net::SocketAddr,
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use sqlgate::grpc::pb::{admin_client::AdminClient, query_client::QueryClient};
use sqlx::{Connection, Executor, PgPool, postgres::PgPoolOptions};
use tonic::transport::Channel;

use crate::{Args, BoxError, unix_sides::UnixSides, workloads::POINT};

/// What every workload runs against, and how the rounds are run.
pub(crate) struct Setup {
    pub(crate) direct: PgPool,
    /// The same client through PgBouncer, with `--pgbouncer-url`.
    pub(crate) bouncer: Option<PgPool>,
    pub(crate) channel: Channel,
    /// Several HTTP/2 connections, as many calling services would open.
    pub(crate) channels: Vec<Channel>,
    pub(crate) admin: AdminClient<Channel>,
    pub(crate) child: tokio::process::Child,
    pub(crate) address: SocketAddr,
    /// The floor server (see `floor`), a child process like sqlgate.
    pub(crate) floor_child: tokio::process::Child,
    /// Connections to the floor, as many as `channels` has to sqlgate.
    pub(crate) floor_channels: Vec<Channel>,
    /// sqlgate on a Unix socket, and both sides over PostgreSQL's socket
    /// (see `unix_sides`), for the point selects.
    pub(crate) unix: UnixSides,
    pub(crate) rows: i64,
    pub(crate) stream_rows: i64,
    pub(crate) rounds: usize,
    pub(crate) seconds: f64,
    pub(crate) pool_size: u32,
    /// Seeds `order`.
    pub(crate) seed: u64,
    /// Draws the order of the sides in each round.
    order: std::sync::Mutex<Rng>,
}

impl Setup {
    /// `sides` in a fresh random order, for one round: no side always runs
    /// first (on a warmer or cooler machine) or always right after another.
    pub(crate) fn shuffled<T: Copy>(&self, sides: &[T]) -> Vec<T> {
        let mut sides = sides.to_vec();
        self.order
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .shuffle(&mut sides);
        sides
    }
}

/// A small seeded generator (xorshift64*) for the order of the sides; no
/// dependency needed for a shuffle.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        // splitmix64 of the seed: every seed, 0 too, gives a non-zero state.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Self((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Fisher–Yates.
    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

/// gRPC connections the benchmark's callers spread over.
const CLIENT_CONNECTIONS: usize = 4;

/// Connections in each side's pool: sqlgate's, the direct client's, the
/// floor's.
pub(crate) const POOL_SIZE: u32 = 16;

/// Query clients, one per connection; callers pick by their counter.
pub(crate) fn query_clients(channels: &[Channel]) -> Arc<Vec<QueryClient<Channel>>> {
    Arc::new(channels.iter().cloned().map(QueryClient::new).collect())
}

/// Creates the data, starts sqlgate, connects both sides.
pub(crate) async fn prepare(args: &Args) -> Result<Setup, BoxError> {
    let (rows, stream_rows) = if args.quick {
        (10_000, 20_000)
    } else {
        (100_000, 1_000_000)
    };
    let rounds = args.rounds.unwrap_or(if args.quick { 1 } else { 3 });
    let seconds = args.seconds.unwrap_or(if args.quick { 0.3 } else { 3.0 });
    let pool_size = POOL_SIZE;
    let seed = args.seed.unwrap_or_else(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        now.as_secs() ^ u64::from(now.subsec_nanos()) ^ u64::from(std::process::id())
    });
    eprintln!("order of the sides in each round: random, seed {seed} (--seed {seed} repeats it)");

    let mut admin_conn = sqlx::PgConnection::connect(&args.database_url).await?;
    admin_conn
        .execute("DROP DATABASE IF EXISTS sqlgate_bench WITH (FORCE)")
        .await?;
    admin_conn.execute("CREATE DATABASE sqlgate_bench").await?;
    let base = args
        .database_url
        .rsplit_once('/')
        .map_or(args.database_url.as_str(), |(b, _)| b);
    let url = format!("{base}/sqlgate_bench");
    // Configured as sqlgate's pool is: no ping before every acquire.
    let direct = PgPoolOptions::new()
        .max_connections(pool_size)
        .min_connections(pool_size)
        .test_before_acquire(false)
        .connect(&format!("{url}?application_name=sqlgate-bench"))
        .await?;
    eprintln!("creating {rows} rows and a wide table of {stream_rows} rows…");
    direct
        .execute(
            "CREATE TABLE bench_items (id BIGINT PRIMARY KEY, name TEXT NOT NULL, \
             amount NUMERIC(12,2) NOT NULL, created TIMESTAMPTZ NOT NULL)",
        )
        .await?;
    sqlx::query(
        "INSERT INTO bench_items SELECT g, 'item ' || g, (g % 10000) / 100.0, \
         timestamptz '2026-01-01' + g * interval '1 second' FROM generate_series(1, $1) AS g",
    )
    .bind(rows)
    .execute(&direct)
    .await?;
    direct
        .execute(
            "CREATE TABLE bench_wide (id BIGINT, a TEXT, b TEXT, c BIGINT, d FLOAT8, \
             e TIMESTAMPTZ, f UUID, g JSONB)",
        )
        .await?;
    sqlx::query(
        "INSERT INTO bench_wide SELECT g, md5(g::text), repeat('x', 40), g * 7, g / 3.0, \
         timestamptz '2026-01-01' + g * interval '1 ms', md5(g::text)::uuid, \
         jsonb_build_object('n', g) FROM generate_series(1, $1) AS g",
    )
    .bind(stream_rows)
    .execute(&direct)
    .await?;
    direct.execute("VACUUM ANALYZE").await?;

    let exe = std::env::current_exe()?;
    let (child, address, channel) = start_sqlgate(&url, pool_size, &[]).await?;
    let channels = connections(&address.to_string()).await?;
    let floor_address = free_address()?;
    let floor_child = tokio::process::Command::new(exe.with_file_name("sqlgate-floor"))
        .args([
            &floor_address.to_string(),
            &format!("{url}?application_name=sqlgate-floor"),
            &pool_size.to_string(),
            POINT,
        ])
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    connect_when_up(&floor_address.to_string(), "the floor server").await?;
    let floor_channels = connections(&floor_address.to_string()).await?;
    let unix = if args.wants("point") {
        UnixSides::start(args, &url, pool_size).await?
    } else {
        UnixSides::default()
    };
    let bouncer = match &args.pgbouncer_url {
        Some(url) => Some(
            PgPoolOptions::new()
                .max_connections(pool_size)
                .min_connections(pool_size)
                .test_before_acquire(false)
                .connect(url)
                .await
                .map_err(|err| format!("cannot reach PgBouncer: {err}"))?,
        ),
        None => None,
    };
    Ok(Setup {
        direct,
        bouncer,
        admin: AdminClient::new(channel.clone()),
        channel,
        channels,
        child,
        address,
        floor_child,
        floor_channels,
        unix,
        rows,
        stream_rows,
        rounds,
        seconds,
        pool_size,
        seed,
        order: std::sync::Mutex::new(Rng::new(seed)),
    })
}

/// Starts a sqlgate child over `url` with a pool of `pool_size` (kept
/// full), logging warnings only, with the `extra` environment variables
/// on top (e.g. traces exported); returns it, the address it listens on,
/// and a first connection to it (once it listens).
pub(crate) async fn start_sqlgate(
    url: &str,
    pool_size: u32,
    extra: &[(&str, String)],
) -> Result<(tokio::process::Child, SocketAddr, Channel), BoxError> {
    let address = free_address()?;
    let env: Vec<(&str, &str)> = extra
        .iter()
        .map(|(key, value)| (*key, value.as_str()))
        .collect();
    let child = spawn_sqlgate(&address.to_string(), url, pool_size, &env)?;
    let channel = connect_when_up(&address.to_string(), "sqlgate").await?;
    Ok((child, address, channel))
}

/// A loopback address with a free port, for a child process to listen on.
fn free_address() -> Result<SocketAddr, BoxError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// Starts the `sqlgate` binary beside this one, listening on `listen`
/// (`host:port` or `unix:PATH`) over `url` with a pool of `pool_size`
/// (all opened at start-up), with `env` besides.
pub(crate) fn spawn_sqlgate(
    listen: &str,
    url: &str,
    pool_size: u32,
    env: &[(&str, &str)],
) -> Result<tokio::process::Child, BoxError> {
    // The workspace builds both binaries into one target directory.
    let binary = std::env::current_exe()?.with_file_name("sqlgate");
    tokio::process::Command::new(&binary)
        .args(["serve", "--listen", listen, "--database-url", url])
        .env("SQLGATE_POOL__MAX_CONNECTIONS", pool_size.to_string())
        .env("SQLGATE_POOL__MIN_CONNECTIONS", pool_size.to_string())
        .env("SQLGATE_SESSIONS__MAX_POOL_SHARE", "1.0")
        .env("SQLGATE_LOG_FILTER", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|err| {
            format!(
                "cannot start {}: {err} (build it first: `cargo build --workspace --bins`, \
                 with `--release` for a release run)",
                binary.display()
            )
            .into()
        })
}

/// A connection to the server at `target` (`host:port`, or `unix:PATH`);
/// with `wide_windows`, its stream window fits a 1,000-row frame.
async fn connect(target: &str, wide_windows: bool) -> Result<Channel, BoxError> {
    let address: sqlgate::config::ListenAddress = target.parse()?;
    let channel = sqlgate::grpc::connect::channel(&address, |endpoint| {
        if wide_windows {
            endpoint
                .initial_stream_window_size(4 << 20)
                .initial_connection_window_size(8 << 20)
        } else {
            endpoint
        }
    })
    .await?;
    Ok(channel)
}

/// The first connection to a child server at `target`, retried until it
/// listens (at most 10 s).
pub(crate) async fn connect_when_up(target: &str, what: &str) -> Result<Channel, BoxError> {
    let started = Instant::now();
    loop {
        if let Ok(channel) = connect(target, true).await {
            return Ok(channel);
        }
        if started.elapsed() > Duration::from_secs(10) {
            return Err(format!("{what} did not start").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// [`CLIENT_CONNECTIONS`] more connections to a server that is up.
pub(crate) async fn connections(target: &str) -> Result<Vec<Channel>, BoxError> {
    let mut channels = Vec::new();
    for _ in 0..CLIENT_CONNECTIONS {
        channels.push(connect(target, false).await?);
    }
    Ok(channels)
}
