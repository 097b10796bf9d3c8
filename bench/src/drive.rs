//! A fixed number of point selects (or, for sqlgate, one-message
//! sessions) against one server (sqlgate or the floor), for instruction
//! counts: run the server under
//! `valgrind --tool=callgrind`, drive a warm-up, dump its counters
//! (`callgrind_control -d`), drive `--calls`, dump again; the second dump
//! divided by the calls is the server's instructions per call. Unlike CPU
//! time on a shared machine, the count repeats from run to run.

use std::net::SocketAddr;

use futures::StreamExt;
use sqlgate::grpc::pb::{self, query_client::QueryClient};
use tonic::transport::Channel;

use crate::{
    BoxError,
    cpu::RssPeak,
    workloads::{POINT, WIDE, one_message_session, read_stream},
};

/// Sends `calls` point selects (`sessions`: one-message sessions, each
/// updating one row and committing) to `address` from `concurrency`
/// callers over one connection, each waiting for its answer; fails on the
/// first error or a missing row.
pub(crate) async fn drive(
    address: SocketAddr,
    calls: u64,
    concurrency: usize,
    sessions: bool,
) -> Result<(), BoxError> {
    let channel = Channel::from_shared(format!("http://{address}"))?
        .connect()
        .await?;
    let client = QueryClient::new(channel.clone());
    let mut answers = futures::stream::iter(0..calls)
        .map(|i| {
            let mut client = client.clone();
            let channel = channel.clone();
            let id = (i as i64 % 10_000) + 1;
            async move {
                if sessions {
                    return one_message_session(channel, id).await;
                }
                let request = pb::ExecuteRequest {
                    sql: POINT.into(),
                    params: vec![pb::Value::int(id)],
                    max_rows: 1000,
                };
                let response = client.execute(request).await?.into_inner();
                if response.rows.len() != 1 {
                    return Err::<(), BoxError>("point select returned no row".into());
                }
                Ok(())
            }
        })
        .buffer_unordered(concurrency.max(1));
    while let Some(answer) = answers.next().await {
        answer?;
    }
    Ok(())
}

/// Streams the first `rows` rows of the wide table `streams` times, one
/// stream after another, over a connection whose stream window fits a
/// frame (as the benchmark's own client). Fails on the first error or a
/// short stream.
pub(crate) async fn drive_streams(
    address: SocketAddr,
    streams: u64,
    rows: u64,
) -> Result<(), BoxError> {
    let mut client = QueryClient::new(wide_channel(address).await?);
    for _ in 0..streams {
        let request = pb::ExecuteRequest {
            sql: format!("{WIDE} LIMIT {rows}"),
            params: vec![],
            max_rows: 0,
        };
        let mut frames = client.execute_stream(request).await?.into_inner();
        let mut streamed = 0u64;
        while let Some(frame) = frames.next().await {
            if let Some(pb::result_frame::Frame::Rows(batch)) = frame?.frame {
                streamed += batch.rows.len() as u64;
            }
        }
        if streamed != rows {
            return Err(format!("streamed {streamed} rows of {rows}").into());
        }
    }
    Ok(())
}

/// A connection whose stream window fits a 1,000-row frame, as the
/// benchmark's own client opens.
async fn wide_channel(address: SocketAddr) -> Result<Channel, BoxError> {
    Ok(Channel::from_shared(format!("http://{address}"))?
        .initial_stream_window_size(4 << 20)
        .initial_connection_window_size(8 << 20)
        .connect()
        .await?)
}

/// The benchmark's slow-reader memory workload on its own, against the
/// sqlgate at `address` (process `pid`, on the host): the whole wide
/// table streamed `rounds` times to a fast reader (as the benchmark's
/// fast workload runs first), then `rounds` times to a reader that waits
/// 2 ms after each frame, printing sqlgate's peak RSS growth over its idle
/// RSS in each slow round and the largest (the benchmark's figure).
pub(crate) async fn drive_slow_stream(
    address: SocketAddr,
    pid: u32,
    rounds: u64,
) -> Result<(), BoxError> {
    let channel = wide_channel(address).await?;
    for _ in 0..rounds {
        read_stream(channel.clone(), WIDE, false).await?;
    }
    let mut largest = 0;
    for round in 1..=rounds {
        let rss = RssPeak::start(pid);
        let rows = read_stream(channel.clone(), WIDE, true).await?;
        let (idle, growth) = rss.stop();
        largest = largest.max(growth);
        println!("slow round {round}: {rows} rows, idle RSS {idle} KiB, peak growth {growth} KiB");
    }
    println!(
        "slow reader: sqlgate RSS growth {:.1} MiB",
        largest as f64 / 1024.0
    );
    Ok(())
}
