//! The results: one [`Measurement`] per workload, printed as a markdown
//! table and written, with a JSON file, to `--out`.

use serde::Serialize;

use crate::{Args, BoxError, cpu::CpuPerOp, measure::ratios_text, setup::Setup};

/// One workload's result.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Measurement {
    pub(crate) workload: String,
    pub(crate) unit: String,
    /// What the two sides are, when they are not the direct client and
    /// sqlgate (e.g. `tracing off` and `tracing on`): each side's cell
    /// names it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) sides: Option<[&'static str; 2]>,
    pub(crate) direct: Option<f64>,
    pub(crate) sqlgate: f64,
    /// The median of `ratios`: sqlgate / direct (higher is better for rates).
    pub(crate) ratio: Option<f64>,
    /// sqlgate / direct in each round, each from that round's own pair of
    /// runs.
    pub(crate) ratios: Vec<f64>,
    /// The order the sides ran in, per round (random, from `--seed`).
    pub(crate) orders: Vec<String>,
    pub(crate) sqlgate_p50_ms: Option<f64>,
    pub(crate) sqlgate_p99_ms: Option<f64>,
    pub(crate) direct_p50_ms: Option<f64>,
    pub(crate) direct_p99_ms: Option<f64>,
    pub(crate) target: String,
    pub(crate) met: Option<bool>,
    /// The direct client through PgBouncer, when `--pgbouncer-url` is given.
    pub(crate) pgbouncer: Option<f64>,
    /// The median of `pgbouncer_ratios`.
    pub(crate) pgbouncer_ratio: Option<f64>,
    /// sqlgate / PgBouncer in each round.
    pub(crate) pgbouncer_ratios: Vec<f64>,
    /// Calls answered DEADLINE_EXCEEDED (the storm's timed-out callers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) deadline_exceeded: Option<usize>,
    /// CPU per operation of each process, direct side (median round).
    pub(crate) direct_cpu: Option<CpuPerOp>,
    /// CPU per operation of each process, sqlgate side (median round).
    pub(crate) sqlgate_cpu: Option<CpuPerOp>,
    /// The floor server's rate (see `floor`), for the workloads it serves.
    pub(crate) floor: Option<f64>,
    /// The median of `floor_ratios`.
    pub(crate) floor_ratio: Option<f64>,
    /// sqlgate / floor in each round.
    pub(crate) floor_ratios: Vec<f64>,
    /// CPU per operation of each process, floor side (median round; its
    /// `sqlgate` figure is the floor server's).
    pub(crate) floor_cpu: Option<CpuPerOp>,
    /// Columns of their own in the same rounds (the Unix socket ones).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) pairs: Vec<PairMeasurement>,
}

/// A column run in the same rounds as a workload's main sides: another
/// sqlgate deployment, against its own direct side or the main one.
#[derive(Debug, Default, Serialize)]
pub(crate) struct PairMeasurement {
    pub(crate) name: String,
    /// Whether `direct` is a direct side of its own (else the main one).
    pub(crate) own_direct: bool,
    /// Median rate of this sqlgate.
    pub(crate) sqlgate: f64,
    /// Median rate of the direct side it is set against.
    pub(crate) direct: f64,
    /// The median of `ratios`.
    pub(crate) ratio: f64,
    /// This sqlgate / its direct side, per round.
    pub(crate) ratios: Vec<f64>,
    /// The median of `vs_sqlgate_ratios`.
    pub(crate) vs_sqlgate: f64,
    /// This sqlgate / the main (TCP, PostgreSQL over TCP) sqlgate, per round.
    pub(crate) vs_sqlgate_ratios: Vec<f64>,
    /// CPU per call (median round); its `sqlgate` figure is this process's.
    pub(crate) sqlgate_cpu: Option<CpuPerOp>,
}

/// A side's cell: its figure, named when the row's sides are not the
/// direct client and sqlgate.
fn side(m: &Measurement, index: usize, figure: String) -> String {
    match m.sides {
        Some(sides) => format!("{}: {figure}", sides[index]),
        None => figure,
    }
}

/// Prints the table and writes `latest.md` and `latest.json` to `--out`.
pub(crate) fn report(args: &Args, setup: &Setup, results: &[Measurement]) -> Result<(), BoxError> {
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
            "| {} | {} | {} | {} | {} | {} | {} / {} | {} / {} | {} | {} |",
            m.workload,
            m.unit,
            side(m, 0, fmt(m.direct)),
            side(m, 1, format!("{:.2}", m.sqlgate)),
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
    table.push_str(&floor_table(results));
    table.push_str(&pair_table(results));
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

/// The workloads the floor server also ran (see `floor`): sqlgate against
/// the cheapest gRPC service that answers the same call, in throughput and
/// in CPU per call of the server process. Empty when none did.
fn floor_table(results: &[Measurement]) -> String {
    let with_floor: Vec<_> = results
        .iter()
        .filter_map(|m| Some((m, m.floor?, m.floor_ratio?)))
        .collect();
    if with_floor.is_empty() {
        return String::new();
    }
    let mut table = String::from(
        "\nAgainst the floor (a minimal tonic server: decode, the same sqlx query on a pool \
         of the same size, encode; nothing else), in the same rounds:\n\n\
         | workload | floor ops/s | sqlgate / floor | by round | server CPU µs per call: floor | \
         sqlgate | sqlgate / floor CPU | client CPU µs: floor side | sqlgate side |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for (m, floor, ratio) in with_floor {
        let (floor_cpu, via_cpu) = (
            m.floor_cpu.unwrap_or_default(),
            m.sqlgate_cpu.unwrap_or_default(),
        );
        table.push_str(&format!(
            "| {} | {floor:.2} | {ratio:.2} | {} | {:.0} | {:.0} | {:.2} | {:.0} | {:.0} |\n",
            m.workload,
            ratios_text(&m.floor_ratios),
            floor_cpu.sqlgate,
            via_cpu.sqlgate,
            via_cpu.sqlgate / floor_cpu.sqlgate.max(f64::MIN_POSITIVE),
            floor_cpu.client,
            via_cpu.client,
        ));
    }
    table
}

/// The columns run beside a workload's main sides (the Unix socket ones:
/// see `unix_sides`). Empty when none was.
fn pair_table(results: &[Measurement]) -> String {
    let rows: Vec<_> = results
        .iter()
        .flat_map(|m| m.pairs.iter().map(move |pair| (m, pair)))
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    let mut table = String::from(
        "\nUnix sockets, in the same rounds (against its own direct side over the same \
         socket, or the main direct side when it has none; and against the main sqlgate \
         side, TCP both ways):\n\n\
         | workload | deployment | sqlgate ops/s | direct ops/s | sqlgate / direct | by round | \
         / sqlgate on TCP | by round | server CPU µs per call |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for (m, pair) in rows {
        table.push_str(&format!(
            "| {} | {} | {:.2} | {:.2}{} | {:.2} | {} | {:.2} | {} | {} |\n",
            m.workload,
            pair.name,
            pair.sqlgate,
            pair.direct,
            if pair.own_direct { "" } else { " (main)" },
            pair.ratio,
            ratios_text(&pair.ratios),
            pair.vs_sqlgate,
            ratios_text(&pair.vs_sqlgate_ratios),
            pair.sqlgate_cpu
                .map_or_else(|| "–".to_owned(), |cpu| format!("{:.0}", cpu.sqlgate)),
        ));
    }
    table
}
