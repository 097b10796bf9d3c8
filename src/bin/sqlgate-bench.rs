//! sqlgate beside a direct database client, in one run.
//!
//! Sets up its own data in PostgreSQL, starts the `sqlgate` binary (built
//! next to this one) as a child process, and runs each workload through a
//! direct sqlx pool of the same size and through sqlgate over loopback
//! gRPC, alternating A/B over several rounds. Prints a markdown table and
//! writes it, with a JSON file, to `bench-results/`.
//!
//! `cargo run --release --bin sqlgate-bench` for the full run;
//! `--quick` for a smoke run of a few seconds (CI).

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::PathBuf,
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use sqlgate::grpc::pb::{
    self, admin_client::AdminClient, query_client::QueryClient, session_request::Request as R,
    sessions_client::SessionsClient, value::Kind,
};
use sqlx::{Connection, Executor, PgPool, Row, postgres::PgPoolOptions};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

#[derive(Debug, Parser)]
#[command(about = "Benchmarks sqlgate against a direct PostgreSQL client in the same run")]
struct Args {
    /// A PostgreSQL URL with rights to create the `sqlgate_bench` database.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    database_url: String,
    /// A few seconds in all: small data, short rounds (for CI).
    #[arg(long)]
    quick: bool,
    /// A/B rounds per workload.
    #[arg(long)]
    rounds: Option<usize>,
    /// Seconds per side per round for the throughput workloads.
    #[arg(long)]
    seconds: Option<f64>,
    /// Where the table and JSON go.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
    /// Run only the workloads whose name contains this (e.g. `point`).
    #[arg(long)]
    only: Option<String>,
    /// A PgBouncer URL that reaches the benchmark's `sqlgate_bench`
    /// database; the direct client's workloads also run through it. Use
    /// session pooling: sqlx prepares statements.
    #[arg(long)]
    pgbouncer_url: Option<String>,
    /// Seeds the random order of the sides in each round (printed at the
    /// start; the same seed repeats a run's order). Default: the clock.
    #[arg(long)]
    seed: Option<u64>,
    /// Internal: run as a session client to be killed (cleanup latency).
    #[arg(long, hide = true)]
    session_client: Option<SocketAddr>,
}

/// One workload's result.
#[derive(Debug, Default, Serialize)]
struct Measurement {
    workload: String,
    unit: String,
    direct: Option<f64>,
    sqlgate: f64,
    /// The median of `ratios`: sqlgate / direct (higher is better for rates).
    ratio: Option<f64>,
    /// sqlgate / direct in each round, each from that round's own pair of
    /// runs.
    ratios: Vec<f64>,
    /// The order the sides ran in, per round (random, from `--seed`).
    orders: Vec<String>,
    sqlgate_p50_ms: Option<f64>,
    sqlgate_p99_ms: Option<f64>,
    direct_p50_ms: Option<f64>,
    direct_p99_ms: Option<f64>,
    target: String,
    met: Option<bool>,
    /// The direct client through PgBouncer, when `--pgbouncer-url` is given.
    pgbouncer: Option<f64>,
    /// The median of `pgbouncer_ratios`.
    pgbouncer_ratio: Option<f64>,
    /// sqlgate / PgBouncer in each round.
    pgbouncer_ratios: Vec<f64>,
    /// Calls answered DEADLINE_EXCEEDED (the storm's timed-out callers).
    #[serde(skip_serializing_if = "Option::is_none")]
    deadline_exceeded: Option<usize>,
    /// CPU per operation of each process, direct side (median round).
    direct_cpu: Option<CpuPerOp>,
    /// CPU per operation of each process, sqlgate side (median round).
    sqlgate_cpu: Option<CpuPerOp>,
}

struct Setup {
    direct: PgPool,
    /// The same client through PgBouncer, with `--pgbouncer-url`.
    bouncer: Option<PgPool>,
    channel: Channel,
    /// Several HTTP/2 connections, as many calling services would open.
    channels: Vec<Channel>,
    admin: AdminClient<Channel>,
    child: tokio::process::Child,
    address: SocketAddr,
    rows: i64,
    stream_rows: i64,
    rounds: usize,
    seconds: f64,
    pool_size: u32,
    /// Seeds `order`.
    seed: u64,
    /// Draws the order of the sides in each round.
    order: std::sync::Mutex<Rng>,
}

impl Setup {
    /// `sides` in a fresh random order, for one round: no side always runs
    /// first (on a warmer or cooler machine) or always right after another.
    fn shuffled<T: Copy>(&self, sides: &[T]) -> Vec<T> {
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

/// One side of an A/B(/C) round.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Side {
    Direct,
    PgBouncer,
    Sqlgate,
}

/// How a round's order is written in the JSON: `sqlgate, direct`.
fn order_text<T: std::fmt::Debug>(order: &[T]) -> String {
    order
        .iter()
        .map(|side| format!("{side:?}").to_lowercase())
        .collect::<Vec<_>>()
        .join(", ")
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// gRPC connections the benchmark's callers spread over.
const CLIENT_CONNECTIONS: usize = 4;

/// Query clients, one per connection; callers pick by their counter.
fn query_clients(setup: &Setup) -> Arc<Vec<QueryClient<Channel>>> {
    Arc::new(
        setup
            .channels
            .iter()
            .cloned()
            .map(QueryClient::new)
            .collect(),
    )
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    if let Some(address) = args.session_client {
        return session_client(address).await;
    }
    let setup = prepare(&args).await?;
    let wanted = |name: &str| args.only.as_deref().is_none_or(|only| name.contains(only));
    let mut results = Vec::new();
    if wanted("point") {
        for concurrency in [1usize, 16, 64] {
            results.push(point_select(&setup, concurrency).await?);
        }
    }
    if wanted("range") {
        results.push(range_select(&setup).await?);
    }
    if wanted("stream") {
        results.push(stream_rows(&setup, false).await?);
        results.push(stream_rows(&setup, true).await?);
    }
    if wanted("session") {
        results.push(session_update(&setup).await?);
    }
    if wanted("cleanup") {
        results.push(cleanup_latency(&setup, &args).await?);
    }
    if wanted("deadline storm") {
        results.extend(deadline_storm(&setup).await?);
    }
    report(&args, &setup, &results)?;
    let mut child = setup.child;
    let _ = child.start_kill();
    let _ = child.wait().await;
    Ok(())
}

/// Creates the data, starts sqlgate, connects both sides.
async fn prepare(args: &Args) -> Result<Setup, BoxError> {
    let (rows, stream_rows) = if args.quick {
        (10_000, 20_000)
    } else {
        (100_000, 1_000_000)
    };
    let rounds = args.rounds.unwrap_or(if args.quick { 1 } else { 3 });
    let seconds = args.seconds.unwrap_or(if args.quick { 0.3 } else { 3.0 });
    let pool_size = 16;
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
    let binary = exe.with_file_name("sqlgate");
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?;
    drop(listener);
    let child = tokio::process::Command::new(&binary)
        .args([
            "serve",
            "--listen",
            &address.to_string(),
            "--database-url",
            &url,
        ])
        .env("SQLGATE_POOL__MAX_CONNECTIONS", pool_size.to_string())
        .env("SQLGATE_POOL__MIN_CONNECTIONS", pool_size.to_string())
        .env("SQLGATE_SESSIONS__MAX_POOL_SHARE", "1.0")
        .env("SQLGATE_LOG_FILTER", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|err| format!("cannot start {}: {err}", binary.display()))?;
    let started = Instant::now();
    let channel = loop {
        if let Ok(channel) = Channel::from_shared(format!("http://{address}"))?
            .initial_stream_window_size(4 << 20)
            .initial_connection_window_size(8 << 20)
            .connect()
            .await
        {
            break channel;
        }
        if started.elapsed() > Duration::from_secs(10) {
            return Err("sqlgate did not start".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut channels = Vec::new();
    for _ in 0..CLIENT_CONNECTIONS {
        channels.push(
            Channel::from_shared(format!("http://{address}"))?
                .connect()
                .await?,
        );
    }
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
        rows,
        stream_rows,
        rounds,
        seconds,
        pool_size,
        seed,
        order: std::sync::Mutex::new(Rng::new(seed)),
    })
}

/// Latencies of one side of one round.
#[derive(Default)]
struct Sample {
    ops: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Sample {
    fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
}

fn percentile(latencies: &mut [Duration], p: f64) -> Option<f64> {
    if latencies.is_empty() {
        return None;
    }
    latencies.sort_unstable();
    let rank = ((latencies.len() - 1) as f64 * p).round() as usize;
    Some(latencies[rank].as_secs_f64() * 1000.0)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Per-round ratios as the log shows them: `0.29 0.31 0.30`.
fn ratios_text(ratios: &[f64]) -> String {
    ratios
        .iter()
        .map(|r| format!("{r:.2}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `op` from `concurrency` workers for `seconds`.
async fn closed_loop<F, Fut>(concurrency: usize, seconds: f64, op: F) -> Result<Sample, BoxError>
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send,
{
    let op = Arc::new(op);
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let workers = (0..concurrency).map(|worker| {
        let op = op.clone();
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = worker as u64 * 7919;
            while Instant::now() < until {
                let begun = Instant::now();
                op(i).await?;
                latencies.push(begun.elapsed());
                i += 1;
            }
            Ok::<_, BoxError>(latencies)
        })
    });
    let mut sample = Sample::default();
    for worker in futures::future::join_all(workers).await {
        let latencies = worker??;
        sample.ops += latencies.len();
        sample.latencies.extend(latencies);
    }
    sample.elapsed = started.elapsed();
    Ok(sample)
}

/// The round with the median total CPU per operation.
fn median_cpu(mut rounds: Vec<CpuPerOp>) -> Option<CpuPerOp> {
    rounds.sort_by(|a, b| {
        let total = |c: &CpuPerOp| c.client + c.sqlgate + c.postgres;
        total(a).total_cmp(&total(b))
    });
    rounds.get(rounds.len() / 2).copied()
}

/// Rounds of a throughput workload, its sides (direct, sqlgate, and
/// PgBouncer when given) in a random order in each round; the median of
/// each side's rates, and the median of the per-round ratios.
async fn ab<D, DF, S, SF>(
    setup: &Setup,
    name: String,
    concurrency: usize,
    direct: D,
    via: S,
    target: (f64, &str),
) -> Result<Measurement, BoxError>
where
    D: Fn(PgPool, u64) -> DF + Send + Sync + Clone + 'static,
    DF: Future<Output = Result<(), BoxError>> + Send,
    S: Fn(u64) -> SF + Send + Sync + Clone + 'static,
    SF: Future<Output = Result<(), BoxError>> + Send,
{
    let through = |pool: &PgPool| {
        let (direct, pool) = (direct.clone(), pool.clone());
        move |i: u64| direct(pool.clone(), i)
    };
    let (mut direct_rates, mut via_rates, mut bouncer_rates) = (Vec::new(), Vec::new(), Vec::new());
    let (mut ratios, mut bouncer_ratios, mut orders) = (Vec::new(), Vec::new(), Vec::new());
    let (mut direct_lat, mut via_lat) = (Vec::new(), Vec::new());
    let (mut direct_cpu, mut via_cpu) = (Vec::new(), Vec::new());
    let sqlgate_pid = setup.child.id();
    let mut sides = vec![Side::Direct, Side::Sqlgate];
    if setup.bouncer.is_some() {
        sides.push(Side::PgBouncer);
    }
    for _ in 0..setup.rounds {
        let order = setup.shuffled(&sides);
        let (mut d, mut s, mut b) = (0.0, 0.0, None);
        for side in &order {
            match side {
                Side::Direct => {
                    let before = CpuTimes::now(sqlgate_pid);
                    let sample =
                        closed_loop(concurrency, setup.seconds, through(&setup.direct)).await?;
                    direct_cpu.push(CpuTimes::now(sqlgate_pid).per_op_since(before, sample.ops));
                    d = sample.rate();
                    direct_lat.extend(sample.latencies);
                }
                Side::PgBouncer => {
                    if let Some(bouncer) = &setup.bouncer {
                        let sample =
                            closed_loop(concurrency, setup.seconds, through(bouncer)).await?;
                        b = Some(sample.rate());
                    }
                }
                Side::Sqlgate => {
                    let before = CpuTimes::now(sqlgate_pid);
                    let sample = closed_loop(concurrency, setup.seconds, via.clone()).await?;
                    via_cpu.push(CpuTimes::now(sqlgate_pid).per_op_since(before, sample.ops));
                    s = sample.rate();
                    via_lat.extend(sample.latencies);
                }
            }
        }
        direct_rates.push(d);
        via_rates.push(s);
        ratios.push(s / d);
        if let Some(b) = b {
            bouncer_rates.push(b);
            bouncer_ratios.push(s / b);
        }
        orders.push(order_text(&order));
    }
    let (direct_rate, via_rate) = (median(direct_rates), median(via_rates));
    let bouncer_rate = (!bouncer_rates.is_empty()).then(|| median(bouncer_rates));
    let ratio = median(ratios.clone());
    let bouncer_ratio = (!bouncer_ratios.is_empty()).then(|| median(bouncer_ratios.clone()));
    eprintln!(
        "{name}: direct {direct_rate:.0}/s, sqlgate {via_rate:.0}/s, ratio {ratio:.2} \
         (rounds: {}){}",
        ratios_text(&ratios),
        bouncer_rate.map_or_else(String::new, |rate| format!(
            ", PgBouncer {rate:.0}/s (sqlgate / PgBouncer by round: {})",
            ratios_text(&bouncer_ratios)
        ))
    );
    Ok(Measurement {
        workload: name,
        unit: "ops/s".into(),
        direct: Some(direct_rate),
        sqlgate: via_rate,
        ratio: Some(ratio),
        ratios,
        orders,
        sqlgate_p50_ms: percentile(&mut via_lat, 0.5),
        sqlgate_p99_ms: percentile(&mut via_lat, 0.99),
        direct_p50_ms: percentile(&mut direct_lat, 0.5),
        direct_p99_ms: percentile(&mut direct_lat, 0.99),
        target: target.1.to_owned(),
        met: (target.0 > 0.0).then_some(ratio >= target.0),
        pgbouncer: bouncer_rate,
        pgbouncer_ratio: bouncer_ratio,
        pgbouncer_ratios: bouncer_ratios,
        deadline_exceeded: None,
        direct_cpu: median_cpu(direct_cpu),
        sqlgate_cpu: median_cpu(via_cpu),
    })
}

fn int(n: i64) -> pb::Value {
    pb::Value {
        kind: Some(Kind::IntValue(n)),
    }
}

fn request(
    sql: &str,
    params: Vec<pb::Value>,
    timeout: Option<&str>,
) -> tonic::Request<pb::ExecuteRequest> {
    let mut request = tonic::Request::new(pb::ExecuteRequest {
        sql: sql.into(),
        params,
        max_rows: 1000,
    });
    if let Some(Ok(value)) = timeout.map(str::parse) {
        request.metadata_mut().insert("grpc-timeout", value);
    }
    request
}

const POINT: &str = "SELECT id, name, amount, created FROM bench_items WHERE id = $1";

/// The direct client reads every column into the Rust type an application
/// would use, as sqlgate's client receives every value: the same work on
/// both sides.
fn decode_item(row: &sqlx::postgres::PgRow) -> Result<(), sqlx::Error> {
    std::hint::black_box((
        row.try_get::<i64, _>(0)?,
        row.try_get::<String, _>(1)?,
        row.try_get::<bigdecimal::BigDecimal, _>(2)?,
        row.try_get::<chrono::DateTime<chrono::Utc>, _>(3)?,
    ));
    Ok(())
}

/// See [`decode_item`]; the JSON column is read as raw JSON text.
fn decode_wide(row: &sqlx::postgres::PgRow) -> Result<(), sqlx::Error> {
    std::hint::black_box((
        row.try_get::<i64, _>(0)?,
        row.try_get::<String, _>(1)?,
        row.try_get::<String, _>(2)?,
        row.try_get::<i64, _>(3)?,
        row.try_get::<f64, _>(4)?,
        row.try_get::<chrono::DateTime<chrono::Utc>, _>(5)?,
        row.try_get::<uuid::Uuid, _>(6)?,
        row.try_get::<sqlx::types::Json<Box<serde_json::value::RawValue>>, _>(7)?,
    ));
    Ok(())
}

async fn point_select(setup: &Setup, concurrency: usize) -> Result<Measurement, BoxError> {
    let rows = setup.rows;
    let direct = move |pool: PgPool, i: u64| async move {
        let id = (i as i64 % rows) + 1;
        let row = sqlx::query(POINT).bind(id).fetch_one(&pool).await?;
        decode_item(&row)?;
        Ok(())
    };
    let via = point_select_via_sqlgate(setup);
    let (target, text) = if concurrency == 16 {
        (0.6, "≥ 0.6 × direct")
    } else {
        (0.0, "")
    };
    ab(
        setup,
        format!("point select, concurrency {concurrency}"),
        concurrency,
        direct,
        via,
        (target, text),
    )
    .await
}

/// One point select through sqlgate per call, spread over the client
/// connections.
fn point_select_via_sqlgate(
    setup: &Setup,
) -> impl Fn(u64) -> futures::future::BoxFuture<'static, Result<(), BoxError>>
+ Send
+ Sync
+ Clone
+ 'static {
    let rows = setup.rows;
    let clients = query_clients(setup);
    move |i: u64| {
        let mut client = clients[i as usize % clients.len()].clone();
        Box::pin(async move {
            let id = (i as i64 % rows) + 1;
            let response = client
                .execute(request(POINT, vec![int(id)], None))
                .await?
                .into_inner();
            if response.rows.len() != 1 {
                return Err("point select returned no row".into());
            }
            Ok(())
        })
    }
}

async fn range_select(setup: &Setup) -> Result<Measurement, BoxError> {
    const SQL: &str =
        "SELECT id, name, amount, created FROM bench_items WHERE id BETWEEN $1 AND $1 + 999";
    let rows = (setup.rows - 1000).max(1);
    let direct = move |pool: PgPool, i: u64| async move {
        let all = sqlx::query(SQL)
            .bind(i as i64 % rows)
            .fetch_all(&pool)
            .await?;
        for row in &all {
            decode_item(row)?;
        }
        Ok(())
    };
    let client = QueryClient::new(setup.channel.clone());
    let via = move |i: u64| {
        let mut client = client.clone();
        async move {
            client
                .execute(request(SQL, vec![int(i as i64 % rows)], None))
                .await?;
            Ok(())
        }
    };
    ab(
        setup,
        "1,000-row select, concurrency 4".into(),
        4,
        direct,
        via,
        (0.0, ""),
    )
    .await
}

/// CPU time used by the benchmark's own process, sqlgate, and every
/// PostgreSQL process on this host: what each side of a workload costs
/// when they all share the same cores.
#[derive(Debug, Clone, Copy, Default)]
struct CpuTimes {
    client: Duration,
    sqlgate: Duration,
    postgres: Duration,
}

impl CpuTimes {
    /// Reads `/proc` now (Linux; elsewhere every figure stays zero).
    fn now(sqlgate_pid: Option<u32>) -> Self {
        let mut times = Self {
            client: process_cpu("self").unwrap_or_default(),
            sqlgate: sqlgate_pid
                .and_then(|pid| process_cpu(&pid.to_string()))
                .unwrap_or_default(),
            postgres: Duration::ZERO,
        };
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(pid) = name
                    .to_str()
                    .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
                else {
                    continue;
                };
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                if comm.trim_end() == "postgres" {
                    times.postgres += process_cpu(pid).unwrap_or_default();
                }
            }
        }
        times
    }

    /// Microseconds per operation spent since `before`, for `ops` operations.
    fn per_op_since(self, before: Self, ops: usize) -> CpuPerOp {
        let per = |now: Duration, then: Duration| {
            now.saturating_sub(then).as_secs_f64() * 1e6 / ops.max(1) as f64
        };
        CpuPerOp {
            client: per(self.client, before.client),
            sqlgate: per(self.sqlgate, before.sqlgate),
            postgres: per(self.postgres, before.postgres),
        }
    }
}

/// User plus system time of `/proc/<pid>`. The kernel reports it in
/// USER_HZ, which is 100 on every Linux architecture sqlgate runs on.
fn process_cpu(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may itself hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// CPU microseconds per operation, by process.
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct CpuPerOp {
    client: f64,
    sqlgate: f64,
    postgres: f64,
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kib| kib.parse().ok())
}

const WIDE: &str = "SELECT id, a, b, c, d, e, f, g FROM bench_wide";

/// The whole wide table through the direct pool: rows per second, and CPU
/// per 1,000 rows.
async fn stream_direct(setup: &Setup, pid: u32) -> Result<(f64, CpuPerOp), BoxError> {
    let before = CpuTimes::now(Some(pid));
    let started = Instant::now();
    let count = sqlx::query(WIDE)
        .fetch(&setup.direct)
        .map_err(BoxError::from)
        .try_fold(0u64, |n, row| async move {
            decode_wide(&row)?;
            Ok(n + 1)
        })
        .await?;
    let rate = count as f64 / started.elapsed().as_secs_f64();
    Ok((
        rate,
        CpuTimes::now(Some(pid)).per_op_since(before, count as usize / 1000),
    ))
}

/// The whole wide table through sqlgate: rows per second, CPU per 1,000
/// rows, and sqlgate's peak RSS growth over its idle RSS (KiB) meanwhile.
async fn stream_via(setup: &Setup, pid: u32, slow: bool) -> Result<(f64, CpuPerOp, u64), BoxError> {
    let idle = rss_kib(pid).unwrap_or_default();
    // Sample RSS while the stream runs (VmHWM would include earlier workloads).
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(idle));
    let sampling = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                let now = rss_kib(pid).unwrap_or_default();
                peak.fetch_max(now, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let before = CpuTimes::now(Some(pid));
    let started = Instant::now();
    let mut frames = QueryClient::new(setup.channel.clone())
        .execute_stream(request(WIDE, vec![], Some("1H")))
        .await?
        .into_inner();
    let mut count = 0u64;
    while let Some(frame) = frames.next().await {
        if let Some(pb::result_frame::Frame::Rows(batch)) = frame?.frame {
            count += batch.rows.len() as u64;
            if slow {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    }
    if count != setup.stream_rows as u64 {
        return Err(format!("streamed {count} rows of {}", setup.stream_rows).into());
    }
    let rate = count as f64 / started.elapsed().as_secs_f64();
    let cpu = CpuTimes::now(Some(pid)).per_op_since(before, count as usize / 1000);
    sampling.abort();
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    Ok((rate, cpu, peak.saturating_sub(idle)))
}

async fn stream_rows(setup: &Setup, slow: bool) -> Result<Measurement, BoxError> {
    let pid = setup.child.id().ok_or("sqlgate exited")?;
    if slow {
        // sqlgate alone: what it holds in memory for a reader that lags.
        let mut peak_growth_kib = 0u64;
        for _ in 0..setup.rounds {
            let (_, _, growth) = stream_via(setup, pid, true).await?;
            peak_growth_kib = peak_growth_kib.max(growth);
        }
        let growth_mib = peak_growth_kib as f64 / 1024.0;
        eprintln!("stream, slow reader: sqlgate RSS growth {growth_mib:.1} MiB");
        return Ok(Measurement {
            workload: format!(
                "stream {} rows, slow reader: sqlgate RSS growth",
                setup.stream_rows
            ),
            unit: "MiB".into(),
            sqlgate: growth_mib,
            target: "≤ 64 MiB over idle".into(),
            met: Some(growth_mib <= 64.0),
            ..Measurement::default()
        });
    }
    let (mut direct_rates, mut via_rates) = (Vec::new(), Vec::new());
    let (mut ratios, mut orders) = (Vec::new(), Vec::new());
    let (mut direct_cpu, mut via_cpu) = (Vec::new(), Vec::new());
    for _ in 0..setup.rounds {
        let order = setup.shuffled(&[Side::Direct, Side::Sqlgate]);
        let (mut d, mut s) = (0.0, 0.0);
        for side in &order {
            if *side == Side::Direct {
                let (rate, cpu) = stream_direct(setup, pid).await?;
                d = rate;
                direct_cpu.push(cpu);
            } else {
                let (rate, cpu, _) = stream_via(setup, pid, false).await?;
                s = rate;
                via_cpu.push(cpu);
            }
        }
        direct_rates.push(d);
        via_rates.push(s);
        ratios.push(s / d);
        orders.push(order_text(&order));
    }
    let (direct_rate, via_rate) = (median(direct_rates), median(via_rates));
    let ratio = median(ratios.clone());
    eprintln!(
        "stream: direct {direct_rate:.0} rows/s, sqlgate {via_rate:.0} rows/s, ratio {ratio:.2} \
         (rounds: {})",
        ratios_text(&ratios)
    );
    Ok(Measurement {
        workload: format!("stream {} rows, fast reader", setup.stream_rows),
        unit: "rows/s".into(),
        direct: Some(direct_rate),
        sqlgate: via_rate,
        ratio: Some(ratio),
        ratios,
        orders,
        target: "≥ 0.7 × direct".into(),
        met: Some(ratio >= 0.7),
        direct_cpu: median_cpu(direct_cpu),
        sqlgate_cpu: median_cpu(via_cpu),
        ..Measurement::default()
    })
}

fn begin() -> pb::SessionRequest {
    pb::SessionRequest {
        request: Some(R::Begin(pb::BeginSession::default())),
    }
}

fn execute(request_id: u64, sql: &str, params: Vec<pb::Value>) -> pb::SessionRequest {
    pb::SessionRequest {
        request: Some(R::Execute(pb::SessionExecute {
            request_id,
            sql: sql.into(),
            params,
            timeout: None,
        })),
    }
}

/// What one session answer is, for [`wait_for`].
type Answer = pb::session_response::Response;

/// Reads answers until one that `wanted` accepts; an error answer, or the
/// stream ending first, is an error.
async fn wait_for(
    answers: &mut tonic::Streaming<pb::SessionResponse>,
    what: &str,
    wanted: impl Fn(&pb::SessionResponse) -> bool,
) -> Result<(), BoxError> {
    while let Some(answer) = answers.message().await? {
        if let Some(Answer::Error(error)) = &answer.response {
            return Err(format!("waiting for {what}: {}", error.message).into());
        }
        if wanted(&answer) {
            return Ok(());
        }
    }
    Err(format!("session ended before {what}").into())
}

const SESSION_UPDATE: &str = "UPDATE bench_items SET amount = amount + 1 WHERE id = $1";

/// Opens a session, waits for `began`, sends an update of row `id` and
/// waits for its `done`: one round trip each, as the direct client awaits
/// BEGIN and then the UPDATE. The caller keeps the sender (dropping it
/// half-closes the stream, which rolls back).
async fn begin_and_update(
    channel: Channel,
    id: i64,
) -> Result<
    (
        mpsc::Sender<pb::SessionRequest>,
        tonic::Streaming<pb::SessionResponse>,
    ),
    BoxError,
> {
    let (requests, inbox) = mpsc::channel(4);
    let mut answers = SessionsClient::new(channel)
        .attach(ReceiverStream::new(inbox))
        .await?
        .into_inner();
    requests.send(begin()).await?;
    wait_for(&mut answers, "began", |a| {
        matches!(a.response, Some(Answer::Began(_)))
    })
    .await?;
    requests
        .send(execute(1, SESSION_UPDATE, vec![int(id)]))
        .await?;
    wait_for(&mut answers, "the update's done", |a| {
        a.request_id == 1 && matches!(a.response, Some(Answer::Done(_)))
    })
    .await?;
    Ok((requests, answers))
}

/// One session: begin, update one row, commit, each awaited in turn.
async fn one_session(channel: Channel, id: i64) -> Result<(), BoxError> {
    let (requests, mut answers) = begin_and_update(channel, id).await?;
    requests
        .send(pb::SessionRequest {
            request: Some(R::Commit(pb::CommitSession {})),
        })
        .await?;
    wait_for(&mut answers, "committed", |a| {
        matches!(a.response, Some(Answer::Committed(_)))
    })
    .await
}

async fn session_update(setup: &Setup) -> Result<Measurement, BoxError> {
    let rows = setup.rows;
    let direct = move |pool: PgPool, i: u64| async move {
        let mut tx = pool.begin().await?;
        sqlx::query(SESSION_UPDATE)
            .bind((i as i64 % rows) + 1)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    };
    let channels = setup.channels.clone();
    let via = move |i: u64| {
        one_session(
            channels[i as usize % channels.len()].clone(),
            (i as i64 % rows) + 1,
        )
    };
    ab(
        setup,
        "session: begin, update one row, commit (concurrency 8)".into(),
        8,
        direct,
        via,
        (0.0, ""),
    )
    .await
}

/// The hidden client mode: a session holding a row lock, waiting to be killed.
async fn session_client(address: SocketAddr) -> Result<(), BoxError> {
    let channel = Channel::from_shared(format!("http://{address}"))?
        .connect()
        .await?;
    // Keep the sender: dropping it would half-close the stream and roll back.
    let (_requests, _answers) = begin_and_update(channel, 1).await?;
    println!("READY");
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}

async fn ended_client_gone(admin: &mut AdminClient<Channel>) -> Result<(u64, u32), BoxError> {
    let stats = admin
        .get_pool_stats(pb::GetPoolStatsRequest {})
        .await?
        .into_inner();
    let ended: HashMap<String, u64> = stats.sessions_ended;
    Ok((
        ended.get("client_gone").copied().unwrap_or_default(),
        stats.in_use_connections,
    ))
}

/// From SIGKILL of a client process to its rollback done and connection back.
async fn cleanup_latency(setup: &Setup, args: &Args) -> Result<Measurement, BoxError> {
    use tokio::io::AsyncBufReadExt;
    let kills = if args.quick { 5 } else { 50 };
    let exe = std::env::current_exe()?;
    let mut admin = setup.admin.clone();
    let mut latencies = Vec::new();
    for _ in 0..kills {
        let mut child = tokio::process::Command::new(&exe)
            .args(["--session-client", &setup.address.to_string()])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        lines.next_line().await?.ok_or("client did not start")?;
        let (before, _) = ended_client_gone(&mut admin).await?;
        child.start_kill()?;
        let killed = Instant::now();
        loop {
            let (ended, in_use) = ended_client_gone(&mut admin).await?;
            if ended > before && in_use == 0 {
                break;
            }
            if killed.elapsed() > Duration::from_secs(5) {
                return Err("session not cleaned up within 5 s".into());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        latencies.push(killed.elapsed());
        child.wait().await?;
    }
    let p50 = percentile(&mut latencies, 0.5);
    let p99 = percentile(&mut latencies, 0.99).unwrap_or_default();
    eprintln!(
        "cleanup after SIGKILL: p50 {:.1} ms, p99 {p99:.1} ms",
        p50.unwrap_or_default()
    );
    Ok(Measurement {
        workload: format!("session cleanup after SIGKILL ({kills} kills)"),
        unit: "ms (p99)".into(),
        direct: None,
        sqlgate: p99,
        ratio: None,
        sqlgate_p50_ms: p50,
        sqlgate_p99_ms: Some(p99),
        direct_p50_ms: None,
        direct_p99_ms: None,
        target: "p99 < 100 ms".into(),
        met: Some(p99 < 100.0),
        pgbouncer: None,
        pgbouncer_ratio: None,
        direct_cpu: None,
        sqlgate_cpu: None,
        ..Measurement::default()
    })
}

/// The storm: callers whose statement (a 200 ms sleep) always outlives
/// their deadline.
const STORM_CALLERS: usize = 4;
const STORM_DEADLINE: Duration = Duration::from_millis(20);
const STORM_SQL: &str = "SELECT pg_sleep(0.2)";
/// The healthy point-select callers measured with and without the storm.
const HEALTHY_CALLERS: usize = 12;

/// The two sides of a storm round.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Weather {
    Calm,
    Storm,
}

/// HTTP/2 to sqlgate without tonic's `Channel`, for the storm's callers.
/// A `Channel` ends a call itself when the call's `grpc-timeout` runs out
/// (the caller sees CANCELLED "Timeout expired", made up on the client),
/// usually before sqlgate's own answer arrives; these callers wait for
/// sqlgate's answer, so that it is what gets measured. (hyper's HTTP/2
/// client is compiled in already: tonic's `Channel` is built on it.)
type PlainHttp2 = tower::util::BoxCloneService<
    http::Request<tonic::body::Body>,
    http::Response<hyper::body::Incoming>,
    // A concrete error: with `BoxError` here, the generated client's
    // futures fail the `Send` check that `tokio::spawn` makes.
    std::io::Error,
>;

async fn query_client_without_local_deadline(
    address: SocketAddr,
) -> Result<QueryClient<PlainHttp2>, BoxError> {
    let tcp = tokio::net::TcpStream::connect(address).await?;
    tcp.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await?;
    tokio::spawn(connection);
    let authority: http::uri::Authority = address.to_string().parse()?;
    let service = tower::service_fn(move |mut request: http::Request<tonic::body::Body>| {
        let mut sender = sender.clone();
        let authority = authority.clone();
        // tonic's client writes only the path; `Channel` adds the rest.
        let uri = request.uri().path_and_query().cloned().map(|path| {
            http::Uri::builder()
                .scheme("http")
                .authority(authority)
                .path_and_query(path)
                .build()
        });
        async move {
            match uri {
                Some(Ok(uri)) => *request.uri_mut() = uri,
                _ => return Err(std::io::Error::other("cannot make the request's URI")),
            }
            sender.ready().await.map_err(std::io::Error::other)?;
            sender
                .send_request(request)
                .await
                .map_err(std::io::Error::other)
        }
    });
    Ok(QueryClient::new(PlainHttp2::new(service)))
}

/// How one of the storm's calls ended.
enum Ending {
    /// sqlgate answered DEADLINE_EXCEEDED, this long after the deadline
    /// (counted from when the client sent the call).
    DeadlineExceeded(Duration),
    /// Anything else: a status code (or what happened) and its message.
    Other(String, String),
}

/// One storm caller: calls back to back until `stop`, each waiting for
/// sqlgate's answer; the call in flight at `stop` is finished and counted.
async fn storm_caller(
    mut client: QueryClient<PlainHttp2>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<Ending> {
    let mut endings = Vec::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let begun = Instant::now();
        let call = client.execute(request(STORM_SQL, vec![], Some("20m")));
        let ending = match tokio::time::timeout(Duration::from_secs(10), call).await {
            Err(_) => Ending::Other("no answer".into(), "none within 10 s".into()),
            Ok(Ok(_)) => Ending::Other(
                "OK".into(),
                "a 200 ms sleep finished within its 20 ms deadline".into(),
            ),
            Ok(Err(status)) if status.code() == tonic::Code::DeadlineExceeded => {
                Ending::DeadlineExceeded(begun.elapsed().saturating_sub(STORM_DEADLINE))
            }
            Ok(Err(status)) => {
                Ending::Other(format!("{:?}", status.code()), status.message().to_owned())
            }
        };
        endings.push(ending);
    }
    endings
}

/// Healthy point selects with and without callers that time out, calm and
/// storm in a random order in each round; and how the timed-out calls
/// were answered. Any answer to them but DEADLINE_EXCEEDED fails the run.
async fn deadline_storm(setup: &Setup) -> Result<Vec<Measurement>, BoxError> {
    let healthy = point_select_via_sqlgate(setup);
    let mut storm_clients = Vec::new();
    for _ in 0..STORM_CALLERS {
        storm_clients.push(query_client_without_local_deadline(setup.address).await?);
    }
    let (mut calm_rates, mut storm_rates) = (Vec::new(), Vec::new());
    let (mut ratios, mut orders) = (Vec::new(), Vec::new());
    let (mut calm_lat, mut storm_lat) = (Vec::new(), Vec::new());
    let mut endings = Vec::new();
    for _ in 0..setup.rounds {
        let order = setup.shuffled(&[Weather::Calm, Weather::Storm]);
        let (mut calm, mut stormy) = (0.0, 0.0);
        for weather in &order {
            if *weather == Weather::Calm {
                let sample = closed_loop(HEALTHY_CALLERS, setup.seconds, healthy.clone()).await?;
                calm = sample.rate();
                calm_lat.extend(sample.latencies);
                continue;
            }
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let callers: Vec<_> = storm_clients
                .iter()
                .map(|client| tokio::spawn(storm_caller(client.clone(), stop.clone())))
                .collect();
            let sample = closed_loop(HEALTHY_CALLERS, setup.seconds, healthy.clone()).await;
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            // Wait for the last calls too: every call is counted, and none
            // spills into the next side.
            for caller in callers {
                endings.extend(caller.await?);
            }
            let sample = sample?;
            stormy = sample.rate();
            storm_lat.extend(sample.latencies);
        }
        calm_rates.push(calm);
        storm_rates.push(stormy);
        ratios.push(stormy / calm);
        orders.push(order_text(&order));
    }

    let mut after_deadline = Vec::new();
    let mut other: std::collections::BTreeMap<String, (usize, String)> = Default::default();
    for ending in endings {
        match ending {
            Ending::DeadlineExceeded(late) => after_deadline.push(late),
            Ending::Other(code, message) => other.entry(code).or_insert((0, message)).0 += 1,
        }
    }
    let calls = after_deadline.len() + other.values().map(|(n, _)| n).sum::<usize>();
    if !other.is_empty() {
        let others: Vec<String> = other
            .iter()
            .map(|(code, (n, message))| format!("{n} × {code} (first: {message:?})"))
            .collect();
        return Err(format!(
            "the deadline storm's {calls} calls should all end DEADLINE_EXCEEDED; {} did, and: {}",
            after_deadline.len(),
            others.join("; ")
        )
        .into());
    }
    if calls == 0 {
        return Err("the deadline storm made no calls".into());
    }

    let (calm_rate, storm_rate) = (median(calm_rates), median(storm_rates));
    let ratio = median(ratios.clone());
    let late_p50 = percentile(&mut after_deadline, 0.5);
    let late_p99 = percentile(&mut after_deadline, 0.99);
    eprintln!(
        "deadline storm: healthy calls at {ratio:.2} of calm throughput (rounds: {}); \
         {calls} timed-out calls, all DEADLINE_EXCEEDED, answered {:.1} / {:.1} ms \
         (p50 / p99) after their deadline",
        ratios_text(&ratios),
        late_p50.unwrap_or_default(),
        late_p99.unwrap_or_default(),
    );
    let healthy = Measurement {
        workload: format!(
            "healthy point selects ({HEALTHY_CALLERS} callers) while {STORM_CALLERS} more \
             time out every 20 ms"
        ),
        unit: "ops/s".into(),
        direct: Some(calm_rate),
        sqlgate: storm_rate,
        ratio: Some(ratio),
        ratios,
        orders,
        sqlgate_p50_ms: percentile(&mut storm_lat, 0.5),
        sqlgate_p99_ms: percentile(&mut storm_lat, 0.99),
        direct_p50_ms: percentile(&mut calm_lat, 0.5),
        direct_p99_ms: percentile(&mut calm_lat, 0.99),
        target: "(\"direct\" = the same callers without the storm)".into(),
        ..Measurement::default()
    };
    let timed_out = Measurement {
        workload: format!(
            "the storm's calls ({calls}, 20 ms deadline, 200 ms statement): \
             sqlgate's answer after the deadline"
        ),
        unit: "ms (p99)".into(),
        sqlgate: late_p99.unwrap_or_default(),
        sqlgate_p50_ms: late_p50,
        sqlgate_p99_ms: late_p99,
        target: format!("every call DEADLINE_EXCEEDED ({calls} of {calls})"),
        met: Some(true),
        deadline_exceeded: Some(calls),
        ..Measurement::default()
    };
    Ok(vec![healthy, timed_out])
}

fn report(args: &Args, setup: &Setup, results: &[Measurement]) -> Result<(), BoxError> {
    let fmt = |v: Option<f64>| v.map_or_else(|| "–".to_owned(), |v| format!("{v:.2}"));
    let mut table = String::new();
    table.push_str(&format!(
        "Machine: {} cores; PostgreSQL, client and sqlgate on one host; pool {} each side; \
         {} round(s) of {:.1} s per side, the sides in a random order in each round \
         (seed {}); ratio = the median of the per-round ratios{}.\n\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        setup.pool_size,
        setup.rounds,
        setup.seconds,
        setup.seed,
        if args.quick {
            " (--quick: smoke run, not a measurement)"
        } else {
            ""
        }
    ));
    let with_bouncer = setup.bouncer.is_some();
    table.push_str("| workload | unit | direct | sqlgate | ratio | ratio by round | sqlgate p50 / p99 ms | direct p50 / p99 ms | target | met |");
    table.push_str(if with_bouncer {
        " direct via PgBouncer | sqlgate / PgBouncer |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    } else {
        "\n|---|---|---|---|---|---|---|---|---|---|\n"
    });
    for m in results {
        table.push_str(&format!(
            "| {} | {} | {} | {:.2} | {} | {} | {} / {} | {} / {} | {} | {} |",
            m.workload,
            m.unit,
            fmt(m.direct),
            m.sqlgate,
            fmt(m.ratio),
            if m.ratios.is_empty() {
                "–".to_owned()
            } else {
                ratios_text(&m.ratios)
            },
            fmt(m.sqlgate_p50_ms),
            fmt(m.sqlgate_p99_ms),
            fmt(m.direct_p50_ms),
            fmt(m.direct_p99_ms),
            m.target,
            m.met.map_or("–", |met| if met { "yes" } else { "no" }),
        ));
        if with_bouncer {
            table.push_str(&format!(
                " {} | {} |",
                fmt(m.pgbouncer),
                fmt(m.pgbouncer_ratio)
            ));
        }
        table.push('\n');
    }
    let with_cpu: Vec<_> = results
        .iter()
        .filter_map(|m| Some((m, m.direct_cpu?, m.sqlgate_cpu?)))
        .collect();
    if !with_cpu.is_empty() {
        table.push_str(
            "\nCPU time per operation, µs, by process (all share the same cores):\n\n\
             | workload | per | direct: client | direct: PostgreSQL | sqlgate: client | sqlgate: sqlgate | sqlgate: PostgreSQL |\n\
             |---|---|---|---|---|---|---|\n",
        );
        for (m, direct, via) in with_cpu {
            table.push_str(&format!(
                "| {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |\n",
                m.workload,
                if m.unit == "rows/s" {
                    "1,000 rows"
                } else {
                    "call"
                },
                direct.client,
                direct.postgres,
                via.client,
                via.sqlgate,
                via.postgres
            ));
        }
    }
    println!("{table}");
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(args.out.join("latest.md"), &table)?;
    std::fs::write(
        args.out.join("latest.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "seed": setup.seed,
            "rounds": setup.rounds,
            "seconds_per_side": setup.seconds,
            "quick": args.quick,
            "results": results,
        }))?,
    )?;
    Ok(())
}
