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
    report::{Measurement, PairMeasurement},
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
    /// The sqlgate side of the [`Pair`] at this index.
    PairSqlgate(usize),
    /// The direct side of the [`Pair`] at this index, when it has its own.
    PairDirect(usize),
}

/// A column of its own, run in the same rounds as the main sides: `via`,
/// the same client as the main sqlgate side's, calling another sqlgate
/// process (`pid`) deployed differently, set against `direct` (the direct
/// client over another pool) or, when `None`, the main direct side.
pub(crate) struct Pair<S> {
    pub(crate) name: &'static str,
    pub(crate) via: S,
    pub(crate) pid: Option<u32>,
    pub(crate) direct: Option<PgPool>,
}

/// What a throughput workload runs besides the direct and sqlgate sides.
pub(crate) struct Others<S> {
    /// The same client as `via`, calling the floor server instead of sqlgate.
    pub(crate) floor: Option<S>,
    /// Columns of their own (see [`Pair`]).
    pub(crate) pairs: Vec<Pair<S>>,
}

impl<S> Others<S> {
    /// Nothing else.
    pub(crate) fn none() -> Self {
        Self {
            floor: None,
            pairs: Vec::new(),
        }
    }
}

/// A pair's pools keep no idle connection (see `unix_sides`): a short run
/// before the measured one opens them, as the main sides' are open.
const PAIR_WARM_UP_SECONDS: f64 = 0.2;

/// One round's rates of a pair: sqlgate's, and its own direct side's.
#[derive(Default, Clone, Copy)]
struct PairRound {
    sqlgate: f64,
    direct: Option<f64>,
    cpu: Option<crate::cpu::CpuPerOp>,
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
/// and the pairs of `others` when given, and PgBouncer when given) in a
/// random order in each round; the median of each side's rates, and the
/// median of the per-round ratios.
pub(crate) async fn ab<D, DF, S, SF>(
    setup: &Setup,
    name: String,
    concurrency: usize,
    direct: D,
    via: S,
    others: Others<S>,
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
    let Others { floor, pairs } = others;
    let sqlgate_pid = setup.child.id();
    let floor_pid = setup.floor_child.id();
    let mut sides = vec![Side::Direct, Side::Sqlgate];
    if setup.bouncer.is_some() {
        sides.push(Side::PgBouncer);
    }
    if floor.is_some() {
        sides.push(Side::Floor);
    }
    for (index, pair) in pairs.iter().enumerate() {
        sides.push(Side::PairSqlgate(index));
        if pair.direct.is_some() {
            sides.push(Side::PairDirect(index));
        }
    }
    let mut pair_rounds: Vec<Vec<PairRound>> = vec![Vec::new(); pairs.len()];
    for _ in 0..setup.rounds {
        let order = setup.shuffled(&sides);
        let (mut d, mut s, mut b, mut f) = (0.0, 0.0, None, None);
        let mut this_round = vec![PairRound::default(); pairs.len()];
        for side in &order {
            match *side {
                Side::PairSqlgate(index) => {
                    let pair = &pairs[index];
                    closed_loop(concurrency, PAIR_WARM_UP_SECONDS, pair.via.clone()).await?;
                    let before = CpuTimes::now(pair.pid);
                    let sample = closed_loop(concurrency, setup.seconds, pair.via.clone()).await?;
                    this_round[index].cpu =
                        Some(CpuTimes::now(pair.pid).per_op_since(before, sample.ops));
                    this_round[index].sqlgate = sample.rate();
                }
                Side::PairDirect(index) => {
                    if let Some(pool) = &pairs[index].direct {
                        closed_loop(concurrency, PAIR_WARM_UP_SECONDS, through(pool)).await?;
                        let sample = closed_loop(concurrency, setup.seconds, through(pool)).await?;
                        this_round[index].direct = Some(sample.rate());
                    }
                }
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
        for (index, round) in this_round.into_iter().enumerate() {
            // Against its own direct side, else the main one; and the main
            // (TCP) sqlgate side.
            let direct = round.direct.unwrap_or(d);
            pair_rounds[index].push(PairRound {
                direct: Some(direct),
                ..round
            });
        }
        orders.push(
            order
                .iter()
                .map(|side| match *side {
                    Side::PairSqlgate(index) => format!("sqlgate, {}", pairs[index].name),
                    Side::PairDirect(index) => format!("direct, {}", pairs[index].name),
                    other => order_text(&[other]),
                })
                .collect::<Vec<_>>()
                .join("; "),
        );
    }
    let pair_results = pairs
        .iter()
        .zip(pair_rounds)
        .map(|(pair, rounds)| pair_measurement(pair, &rounds, &via_rates))
        .collect::<Vec<_>>();
    for pair in &pair_results {
        eprintln!(
            "{name}: {}: sqlgate {:.0}/s, its direct {:.0}/s, ratio {:.2} (rounds: {}); \
             / sqlgate on TCP {:.2} (rounds: {})",
            pair.name,
            pair.sqlgate,
            pair.direct,
            pair.ratio,
            ratios_text(&pair.ratios),
            pair.vs_sqlgate,
            ratios_text(&pair.vs_sqlgate_ratios),
        );
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
        pairs: pair_results,
    })
}

/// A pair's figures from its `rounds` and the main sqlgate side's rates in
/// the same rounds (`tcp_rates`).
fn pair_measurement<S>(pair: &Pair<S>, rounds: &[PairRound], tcp_rates: &[f64]) -> PairMeasurement {
    let ratios: Vec<f64> = rounds
        .iter()
        .map(|round| round.sqlgate / round.direct.unwrap_or(f64::NAN))
        .collect();
    let vs_sqlgate_ratios: Vec<f64> = rounds
        .iter()
        .zip(tcp_rates)
        .map(|(round, tcp)| round.sqlgate / tcp)
        .collect();
    PairMeasurement {
        name: pair.name.to_owned(),
        own_direct: pair.direct.is_some(),
        sqlgate: median(rounds.iter().map(|round| round.sqlgate).collect()),
        direct: median(rounds.iter().filter_map(|round| round.direct).collect()),
        ratio: median(ratios.clone()),
        ratios,
        vs_sqlgate: median(vs_sqlgate_ratios.clone()),
        vs_sqlgate_ratios,
        sqlgate_cpu: median_cpu(rounds.iter().filter_map(|round| round.cpu).collect()),
    }
}
