//! sqlgate beside a direct database client, in one run.
//!
//! Sets up its own data in PostgreSQL, starts the `sqlgate` binary (built
//! into the same target directory as this one) as a child process, and
//! runs each workload through a direct sqlx pool of the same size and
//! through sqlgate over loopback gRPC, alternating A/B over several rounds.
//! Prints a markdown table and writes it, with a JSON file, to
//! `bench-results/`.
//!
//! `cargo build --release --workspace --bins && ./target/release/sqlgate-bench`
//! for the full run; `--quick` for a smoke run of a few seconds (CI).
//!
//! - [`setup`]: the data, the sqlgate child process, the connections.
//! - [`measure`]: closed-loop runs, A/B rounds, medians and percentiles.
//! - [`cpu`]: CPU time and memory of each process, from `/proc`.
//! - [`workloads`]: what is measured.
//! - [`unix_sides`]: the Unix socket columns of the point selects.
//! - [`report`]: the table and the JSON file.

mod cpu;
mod drive;
mod measure;
mod report;
mod setup;
mod sink;
mod unix_sides;
mod workloads;

use std::{net::SocketAddr, path::PathBuf};

use clap::Parser;

use crate::{
    report::report,
    setup::prepare,
    workloads::{
        cleanup_latency, deadline_storm, point_select, range_select, session_client,
        session_update, stream_rows, tracing_cost,
    },
};

#[derive(Debug, Parser)]
#[command(about = "Benchmarks sqlgate against a direct PostgreSQL client in the same run")]
pub(crate) struct Args {
    /// A PostgreSQL URL with rights to create the `sqlgate_bench` database.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pub(crate) database_url: String,
    /// A few seconds in all: small data, short rounds (for CI).
    #[arg(long)]
    pub(crate) quick: bool,
    /// A/B rounds per workload.
    #[arg(long)]
    pub(crate) rounds: Option<usize>,
    /// Seconds per side per round for the throughput workloads.
    #[arg(long)]
    pub(crate) seconds: Option<f64>,
    /// Where the table and JSON go.
    #[arg(long, default_value = "bench-results")]
    pub(crate) out: PathBuf,
    /// Run only the workloads whose name contains this (e.g. `point`).
    #[arg(long)]
    pub(crate) only: Option<String>,
    /// A PgBouncer URL that reaches the benchmark's `sqlgate_bench`
    /// database; the direct client's workloads also run through it. Use
    /// session pooling: sqlx prepares statements.
    #[arg(long)]
    pub(crate) pgbouncer_url: Option<String>,
    /// Seeds the random order of the sides in each round (printed at the
    /// start; the same seed repeats a run's order). Default: the clock.
    #[arg(long)]
    pub(crate) seed: Option<u64>,
    /// Where PostgreSQL's Unix socket is, for the point selects' columns
    /// over it (left out when no socket is there).
    #[arg(long, default_value = "/var/run/postgresql")]
    pub(crate) postgres_socket_dir: PathBuf,
    /// Internal: run as a session client to be killed (cleanup latency).
    #[arg(long, hide = true)]
    pub(crate) session_client: Option<SocketAddr>,
    /// Send `--calls` point selects to the sqlgate or floor server at this
    /// address (whose database the benchmark has set up), then stop: a
    /// fixed amount of work for instruction counts under callgrind.
    #[arg(long)]
    pub(crate) drive: Option<SocketAddr>,
    /// With `--drive`: send sessions in one message (a begin carrying
    /// the update with `commit_after`) instead of point selects.
    #[arg(long)]
    pub(crate) sessions: bool,
    /// With `--drive`: how many calls.
    #[arg(long, default_value_t = 2000)]
    pub(crate) calls: u64,
    /// With `--drive`: how many callers at once.
    #[arg(long, default_value_t = 1)]
    pub(crate) concurrency: usize,
    /// With `--drive`: stream the first `--calls` rows of the wide table
    /// this many times, one after another, instead of sending point
    /// selects: instructions per streamed row.
    #[arg(long)]
    pub(crate) streams: Option<u64>,
    /// With `--drive`: the slow-reader memory workload alone, sampling the
    /// RSS of the sqlgate whose process id this is (`--streams` rounds,
    /// 3 by default).
    #[arg(long)]
    pub(crate) slow_stream: Option<u32>,
    /// Serve an OTLP trace collector that discards every export on this
    /// address until stopped: where a sqlgate under callgrind sends its
    /// spans when the instructions of tracing are counted.
    #[arg(long)]
    pub(crate) otlp_sink: Option<SocketAddr>,
    /// The OTLP sink (of `--otlp-sink` and of the tracing-cost workload)
    /// decodes every export, as a collector's generated server would,
    /// instead of skipping the spans' bytes: shows what decoding costs when
    /// the collector shares the machine's cores.
    #[arg(long)]
    pub(crate) otlp_sink_decodes: bool,
}

impl Args {
    /// Whether the workload family `name` (`point`, `stream`…) is run.
    pub(crate) fn wants(&self, name: &str) -> bool {
        self.only.as_deref().is_none_or(|only| name.contains(only))
    }
}

/// The error every step of the benchmark returns: it only reports and stops.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    if let Some(address) = args.session_client {
        return session_client(address).await;
    }
    if let Some(address) = args.otlp_sink {
        return sink::run(address, args.otlp_sink_decodes).await;
    }
    if let Some(address) = args.drive {
        if let Some(pid) = args.slow_stream {
            return drive::drive_slow_stream(address, pid, args.streams.unwrap_or(3)).await;
        }
        if let Some(streams) = args.streams {
            return drive::drive_streams(address, streams, args.calls).await;
        }
        return drive::drive(address, args.calls, args.concurrency, args.sessions).await;
    }
    let setup = prepare(&args).await?;
    let wanted = |name: &str| args.wants(name);
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
        results.push(session_update(&setup, false).await?);
        results.push(session_update(&setup, true).await?);
    }
    if wanted("cleanup") {
        results.push(cleanup_latency(&setup, &args).await?);
    }
    if wanted("tracing") {
        results.push(tracing_cost(&args, &setup).await?);
    }
    if wanted("deadline storm") {
        results.extend(deadline_storm(&setup).await?);
    }
    report(&args, &setup, &results)?;
    setup.unix.stop().await;
    for mut child in [setup.child, setup.floor_child] {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    Ok(())
}
