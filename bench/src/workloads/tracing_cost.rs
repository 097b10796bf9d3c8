//! What tracing costs: point selects through the usual sqlgate (traces
//! off) and through a second sqlgate exporting every span (OTLP to a sink
//! in this process that accepts and discards without decoding,
//! [`crate::sink`], `always_on` sampling), in the same rounds, in a random
//! order in each. The ratio is traced / off.

use std::net::SocketAddr;

use futures::future::BoxFuture;
use sqlgate::grpc::pb::{self, query_client::QueryClient};
use tonic::transport::Channel;

use crate::{
    Args, BoxError,
    measure::{closed_loop, median, percentile, ratios_text},
    report::Measurement,
    setup::{Setup, connections, start_sqlgate},
};

/// The point select of the `point select` workload.
const POINT: &str = "SELECT id, name, amount, created FROM bench_items WHERE id = $1";

/// Callers, as in the point select at concurrency 16.
const CONCURRENCY: usize = 16;

/// A second sqlgate over the benchmark's database, configured as the
/// first, exporting every span to `sink`.
async fn start_traced(
    args: &Args,
    setup: &Setup,
    sink: SocketAddr,
) -> Result<(tokio::process::Child, Vec<Channel>), BoxError> {
    let base = args
        .database_url
        .rsplit_once('/')
        .map_or(args.database_url.as_str(), |(base, _)| base);
    let url = format!("{base}/sqlgate_bench");
    let traced = [
        (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            format!("http://{sink}"),
        ),
        ("OTEL_TRACES_SAMPLER", "always_on".to_owned()),
        ("OTEL_SERVICE_NAME", "sqlgate-bench-traced".to_owned()),
    ];
    let (child, address, _) = start_sqlgate(&url, setup.pool_size, &traced).await?;
    Ok((child, connections(&address.to_string()).await?))
}

/// One point select per call through the sqlgate behind `channels`,
/// spread over them.
fn point_select_through(
    rows: i64,
    channels: &[Channel],
) -> impl Fn(u64) -> BoxFuture<'static, Result<(), BoxError>> + Send + Sync + Clone + 'static {
    let clients: std::sync::Arc<Vec<_>> =
        std::sync::Arc::new(channels.iter().cloned().map(QueryClient::new).collect());
    move |i: u64| {
        let mut client = clients[i as usize % clients.len()].clone();
        Box::pin(async move {
            let id = (i as i64 % rows) + 1;
            let response = client
                .execute(super::request(POINT, vec![pb::Value::int(id)], None))
                .await?
                .into_inner();
            if response.rows.len() != 1 {
                return Err("point select returned no row".into());
            }
            Ok(())
        })
    }
}

/// Point selects, traces off vs. on at 100 % sampling, same rounds.
pub(crate) async fn tracing_cost(args: &Args, setup: &Setup) -> Result<Measurement, BoxError> {
    let sink = crate::sink::start(args.otlp_sink_decodes).await?;
    let (mut traced_child, traced_channels) = start_traced(args, setup, sink).await?;
    let off = point_select_through(setup.rows, &setup.channels);
    let on = point_select_through(setup.rows, &traced_channels);
    let (mut off_rates, mut on_rates, mut ratios, mut orders) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut off_lat, mut on_lat) = (Vec::new(), Vec::new());
    for _ in 0..setup.rounds {
        let order = setup.shuffled(&[false, true]);
        let (mut off_rate, mut on_rate) = (0.0, 0.0);
        for traced in &order {
            if *traced {
                let sample = closed_loop(CONCURRENCY, setup.seconds, on.clone()).await?;
                on_rate = sample.rate();
                on_lat.extend(sample.latencies);
            } else {
                let sample = closed_loop(CONCURRENCY, setup.seconds, off.clone()).await?;
                off_rate = sample.rate();
                off_lat.extend(sample.latencies);
            }
        }
        off_rates.push(off_rate);
        on_rates.push(on_rate);
        ratios.push(on_rate / off_rate);
        orders.push(
            order
                .iter()
                .map(|traced| if *traced { "traced" } else { "off" })
                .collect::<Vec<_>>()
                .join(" → "),
        );
    }
    let _ = traced_child.start_kill();
    let _ = traced_child.wait().await;
    let (off_rate, on_rate, ratio) = (median(off_rates), median(on_rates), median(ratios.clone()));
    eprintln!(
        "point select, tracing on (100 %): off {off_rate:.0}/s, on {on_rate:.0}/s, \
         ratio {ratio:.2} (rounds: {})",
        ratios_text(&ratios)
    );
    Ok(Measurement {
        workload: format!("point select, concurrency {CONCURRENCY}, tracing at 100 % sampling"),
        sides: Some(["tracing off", "tracing on"]),
        unit: "ops/s".into(),
        direct: Some(off_rate),
        sqlgate: on_rate,
        ratio: Some(ratio),
        ratios,
        orders,
        sqlgate_p50_ms: percentile(&mut on_lat, 0.5),
        sqlgate_p99_ms: percentile(&mut on_lat, 0.99),
        direct_p50_ms: percentile(&mut off_lat, 0.5),
        direct_p99_ms: percentile(&mut off_lat, 0.99),
        target: "≥ 0.9 × tracing off".to_owned(),
        met: Some(ratio >= 0.9),
        ..Measurement::default()
    })
}
