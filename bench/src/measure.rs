//! How a workload is measured: workers calling in a closed loop, sides
//! alternated in a random order over rounds, and the medians and
//! percentiles of what they saw.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use sqlx::PgPool;

use crate::{
    BoxError,
    cpu::{CpuTimes, median_cpu},
    report::Measurement,
    setup::Setup,
};

/// One side of an A/B(/C) round.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Side {
    Direct,
    PgBouncer,
    Sqlgate,
    /// The floor server (see `floor`), for the workloads it serves.
    Floor,
}

/// How a round's order is written in the JSON: `sqlgate, direct`.
pub(crate) fn order_text<T: std::fmt::Debug>(order: &[T]) -> String {
    order
        .iter()
        .map(|side| format!("{side:?}").to_lowercase())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Latencies of one side of one round.
#[derive(Default)]
pub(crate) struct Sample {
    pub(crate) ops: usize,
    elapsed: Duration,
    pub(crate) latencies: Vec<Duration>,
}

impl Sample {
    /// Operations per second.
    pub(crate) fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
}

/// The `p` quantile (0.0–1.0) of `latencies`, in milliseconds; none of an
/// empty list.
pub(crate) fn percentile(latencies: &mut [Duration], p: f64) -> Option<f64> {
    if latencies.is_empty() {
        return None;
    }
    latencies.sort_unstable();
    let rank = ((latencies.len() - 1) as f64 * p).round() as usize;
    Some(latencies[rank].as_secs_f64() * 1000.0)
}

/// The median (0 of an empty list): one slow or fast round does not move it.
pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Per-round ratios as the log shows them: `0.29 0.31 0.30`.
pub(crate) fn ratios_text(ratios: &[f64]) -> String {
    ratios
        .iter()
        .map(|r| format!("{r:.2}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `op` from `concurrency` workers for `seconds`.
pub(crate) async fn closed_loop<F, Fut>(
    concurrency: usize,
    seconds: f64,
    op: F,
) -> Result<Sample, BoxError>
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

/// Rounds of a throughput workload, its sides (direct, sqlgate, the floor
/// when `floor` is given, and PgBouncer when given) in a random order in
/// each round; the median of each side's rates, and the median of the
/// per-round ratios. `floor` is the same client as `via`, calling the floor
/// server instead of sqlgate.
pub(crate) async fn ab<D, DF, S, SF>(
    setup: &Setup,
    name: String,
    concurrency: usize,
    direct: D,
    via: S,
    floor: Option<S>,
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
    let (mut direct_cpu, mut via_cpu, mut floor_cpu) = (Vec::new(), Vec::new(), Vec::new());
    let (mut floor_rates, mut floor_ratios) = (Vec::new(), Vec::new());
    let sqlgate_pid = setup.child.id();
    let floor_pid = setup.floor_child.id();
    let mut sides = vec![Side::Direct, Side::Sqlgate];
    if setup.bouncer.is_some() {
        sides.push(Side::PgBouncer);
    }
    if floor.is_some() {
        sides.push(Side::Floor);
    }
    for _ in 0..setup.rounds {
        let order = setup.shuffled(&sides);
        let (mut d, mut s, mut b, mut f) = (0.0, 0.0, None, None);
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
                Side::Floor => {
                    if let Some(floor) = &floor {
                        let before = CpuTimes::now(floor_pid);
                        let sample = closed_loop(concurrency, setup.seconds, floor.clone()).await?;
                        floor_cpu.push(CpuTimes::now(floor_pid).per_op_since(before, sample.ops));
                        f = Some(sample.rate());
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
        if let Some(f) = f {
            floor_rates.push(f);
            floor_ratios.push(s / f);
        }
        orders.push(order_text(&order));
    }
    let (direct_rate, via_rate) = (median(direct_rates), median(via_rates));
    let bouncer_rate = (!bouncer_rates.is_empty()).then(|| median(bouncer_rates));
    let ratio = median(ratios.clone());
    let bouncer_ratio = (!bouncer_ratios.is_empty()).then(|| median(bouncer_ratios.clone()));
    let floor_rate = (!floor_rates.is_empty()).then(|| median(floor_rates));
    let floor_ratio = (!floor_ratios.is_empty()).then(|| median(floor_ratios.clone()));
    eprintln!(
        "{name}: direct {direct_rate:.0}/s, sqlgate {via_rate:.0}/s, ratio {ratio:.2} \
         (rounds: {}){}",
        ratios_text(&ratios),
        bouncer_rate.map_or_else(String::new, |rate| format!(
            ", PgBouncer {rate:.0}/s (sqlgate / PgBouncer by round: {})",
            ratios_text(&bouncer_ratios)
        ))
    );
    if let Some(rate) = floor_rate {
        eprintln!(
            "{name}: floor {rate:.0}/s (sqlgate / floor by round: {})",
            ratios_text(&floor_ratios)
        );
    }
    Ok(Measurement {
        workload: name,
        unit: "ops/s".into(),
        sides: None,
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
        floor: floor_rate,
        floor_ratio,
        floor_ratios,
        floor_cpu: median_cpu(floor_cpu),
    })
}
