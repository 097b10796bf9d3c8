//! What each process costs: CPU time and resident memory read from
//! `/proc` (Linux; elsewhere every figure stays zero or absent).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use serde::Serialize;

/// CPU time used by the benchmark's own process, sqlgate, and every
/// PostgreSQL process on this host: what each side of a workload costs
/// when they all share the same cores.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CpuTimes {
    client: Duration,
    sqlgate: Duration,
    postgres: Duration,
}

impl CpuTimes {
    /// Reads `/proc` now (Linux; elsewhere every figure stays zero).
    pub(crate) fn now(sqlgate_pid: Option<u32>) -> Self {
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
    pub(crate) fn per_op_since(self, before: Self, ops: usize) -> CpuPerOp {
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
pub(crate) struct CpuPerOp {
    pub(crate) client: f64,
    pub(crate) sqlgate: f64,
    pub(crate) postgres: f64,
}

/// The resident memory of process `pid`, KiB: what sqlgate holds for a
/// stream.
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kib| kib.parse().ok())
}

/// The round with the median total CPU per operation.
pub(crate) fn median_cpu(mut rounds: Vec<CpuPerOp>) -> Option<CpuPerOp> {
    rounds.sort_by(|a, b| {
        let total = |c: &CpuPerOp| c.client + c.sqlgate + c.postgres;
        total(a).total_cmp(&total(b))
    });
    rounds.get(rounds.len() / 2).copied()
}

/// The peak of a process's resident memory while something runs, sampled
/// every 20 ms, over its idle figure at the start (`VmHWM` would
/// include whatever ran earlier).
pub(crate) struct RssPeak {
    idle: u64,
    peak: Arc<AtomicU64>,
    sampling: tokio::task::JoinHandle<()>,
}

impl RssPeak {
    /// Starts sampling process `pid`.
    pub(crate) fn start(pid: u32) -> Self {
        let idle = rss_kib(pid).unwrap_or_default();
        let peak = Arc::new(AtomicU64::new(idle));
        let sampling = {
            let peak = peak.clone();
            tokio::spawn(async move {
                loop {
                    peak.fetch_max(rss_kib(pid).unwrap_or_default(), Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        Self {
            idle,
            peak,
            sampling,
        }
    }

    /// Stops sampling: the idle figure and the peak's growth over it, KiB.
    pub(crate) fn stop(self) -> (u64, u64) {
        self.sampling.abort();
        let peak = self.peak.load(Ordering::Relaxed);
        (self.idle, peak.saturating_sub(self.idle))
    }
}
