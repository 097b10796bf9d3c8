//! The whole wide table streamed, to a fast reader (rows per second) and
//! to a slow one (what sqlgate holds in memory meanwhile).

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use sqlgate::grpc::pb::{self, query_client::QueryClient};
use sqlx::Row;
use tonic::transport::Channel;

use super::request;
use crate::{
    BoxError,
    cpu::{CpuPerOp, CpuTimes, RssPeak, median_cpu},
    measure::{Side, median, order_text, ratios_text},
    report::Measurement,
    setup::Setup,
};

/// As the point select's `decode_item`: every column into the Rust type an
/// application would use; the JSON column is read as raw JSON text.
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

/// The wide table, every column.
pub(crate) const WIDE: &str = "SELECT id, a, b, c, d, e, f, g FROM bench_wide";

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

/// `sql` streamed through sqlgate over `channel`; with `slow`, the reader
/// waits 2 ms after each frame of rows. Returns how many rows came.
pub(crate) async fn read_stream(channel: Channel, sql: &str, slow: bool) -> Result<u64, BoxError> {
    let mut frames = QueryClient::new(channel)
        .execute_stream(request(sql, vec![], Some("1H")))
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
    Ok(count)
}

/// The whole wide table through sqlgate: rows per second, CPU per 1,000
/// rows, and sqlgate's peak RSS growth over its idle RSS (KiB) meanwhile.
async fn stream_via(setup: &Setup, pid: u32, slow: bool) -> Result<(f64, CpuPerOp, u64), BoxError> {
    let rss = RssPeak::start(pid);
    let before = CpuTimes::now(Some(pid));
    let started = Instant::now();
    let count = read_stream(setup.channel.clone(), WIDE, slow).await?;
    if count != setup.stream_rows as u64 {
        return Err(format!("streamed {count} rows of {}", setup.stream_rows).into());
    }
    let rate = count as f64 / started.elapsed().as_secs_f64();
    let cpu = CpuTimes::now(Some(pid)).per_op_since(before, count as usize / 1000);
    let (_, growth) = rss.stop();
    Ok((rate, cpu, growth))
}

/// The wide table streamed: with a fast reader, rows per second on both
/// sides; with a slow one (`slow`), sqlgate's memory growth alone.
pub(crate) async fn stream_rows(setup: &Setup, slow: bool) -> Result<Measurement, BoxError> {
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
        target: "≥ 0.8 × direct".into(),
        met: Some(ratio >= 0.8),
        direct_cpu: median_cpu(direct_cpu),
        sqlgate_cpu: median_cpu(via_cpu),
        ..Measurement::default()
    })
}
