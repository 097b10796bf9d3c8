//! The limits on what travels, each pushed past its value: streamed frames
//! stay within both batch limits, a request over `max_request_bytes` is
//! refused while serving goes on, and one connection has at most
//! `max_concurrent_streams` calls open.

use std::{
    sync::Arc,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use prost::Message;
use sqlgate::grpc::pb::{self, result_frame::Frame, value::Kind};
use tokio_stream::StreamExt;
use tonic::{Code, transport::Channel};

use crate::{
    helpers::{Backend, TestApp, WAIT, spawn_app_with, v, within},
    limits::{pad_of, table_with_pads},
    on_every_backend,
    pg_activity::{Backends, sqlgate_backends},
    session_client::Session,
};

/// Reads a whole stream; returns the row frames and the stats frame.
async fn read_stream(app: &TestApp, sql: &str) -> (Vec<(usize, pb::RowBatch)>, pb::ResultStats) {
    let mut frames = app
        .query
        .clone()
        .execute_stream(pb::ExecuteRequest {
            sql: sql.to_owned(),
            params: vec![],
            max_rows: 0,
        })
        .await
        .expect("stream")
        .into_inner();
    let first = frames.next().await.expect("a frame").expect("ok");
    assert!(
        matches!(first.frame, Some(Frame::Metadata(_))),
        "metadata first: {first:?}"
    );
    let mut batches = Vec::new();
    let mut stats = None;
    while let Some(frame) = frames.next().await {
        let frame = frame.expect("frame");
        let size = frame.encoded_len();
        match frame.frame {
            Some(Frame::Rows(batch)) => {
                assert!(stats.is_none(), "rows after stats");
                batches.push((size, batch));
            }
            Some(Frame::Stats(s)) => stats = Some(s),
            other => panic!("unexpected frame {other:?}"),
        }
    }
    (batches, stats.expect("a stats frame last"))
}

async fn streamed_frames_respect_both_batch_limits(backend: Backend) {
    const ROWS: usize = 40;
    const BYTES: usize = 4096;
    let Some(app) = spawn_app_with(backend, |s| {
        s.limits.stream_batch_rows = ROWS;
        s.limits.stream_batch_bytes = BYTES;
    })
    .await
    else {
        return;
    };
    // Pads of every length from 0 to 599 bytes; row 700 alone is larger
    // than a frame may be.
    let pad_len = |i: i64| {
        if i == 700 {
            6000
        } else {
            (i as usize * 37) % 600
        }
    };
    let total = 1000i64;
    table_with_pads(&app, total, pad_len).await;

    let (batches, stats) = read_stream(&app, "SELECT id, pad FROM t ORDER BY id").await;
    let mut next = 1i64;
    for (size, batch) in &batches {
        assert!(!batch.rows.is_empty(), "an empty rows frame");
        assert!(
            batch.rows.len() <= ROWS,
            "{} rows in one frame",
            batch.rows.len()
        );
        let holds_the_big_row = batch
            .rows
            .iter()
            .any(|row| row.values[0].kind == Some(Kind::IntValue(700)));
        if holds_the_big_row {
            assert_eq!(batch.rows.len(), 1, "an oversized row travels alone");
        } else {
            assert!(*size <= BYTES, "a frame of {size} bytes (limit {BYTES})");
        }
        for row in &batch.rows {
            assert_eq!(row.values.len(), 2);
            assert_eq!(row.values[0].kind, Some(Kind::IntValue(next)));
            assert_eq!(
                row.values[1].kind,
                Some(Kind::TextValue(pad_of(next, pad_len(next))))
            );
            next += 1;
        }
    }
    assert_eq!(next, total + 1, "every row arrived, in order");
    assert_eq!(stats.rows_returned, total as u64);
    // Frames are filled, not sent a row at a time: within twice the fewest
    // frames the byte limit allows.
    let bytes: usize = batches.iter().map(|(size, _)| size).sum();
    assert!(
        batches.len() <= 2 * bytes.div_ceil(BYTES) + 2,
        "{} frames for {bytes} bytes",
        batches.len()
    );

    // Small rows: the row count cuts the frames, 40 to a frame.
    let (batches, stats) = read_stream(&app, "SELECT id FROM t ORDER BY id").await;
    let sizes: Vec<usize> = batches.iter().map(|(_, b)| b.rows.len()).collect();
    assert_eq!(sizes, vec![ROWS; total as usize / ROWS]);
    assert_eq!(stats.rows_returned, total as u64);
    app.stop().await;
}
on_every_backend!(streamed_frames_respect_both_batch_limits);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_requests_over_max_request_bytes_are_refused_and_serving_goes_on() {
    const MAX_REQUEST: usize = 64 * 1024;
    let Some(app) = spawn_app_with(Backend::Sqlite, |s| {
        s.transport.max_request_bytes = MAX_REQUEST;
        s.limits.max_statement_bytes = 1024;
    })
    .await
    else {
        return;
    };
    app.run("CREATE TABLE t (body TEXT)").await;
    let insert = "INSERT INTO t (body) VALUES ($1)";
    // Under the limit (the default 4 MiB of gRPC would allow far more; 60 KiB
    // shows the setting is the one in force only together with the refusal below).
    app.execute(insert, vec![v::text(&"u".repeat(60 * 1024))])
        .await
        .expect("a 60 KiB request");
    let status = app
        .execute(insert, vec![v::text(&"o".repeat(MAX_REQUEST))])
        .await
        .expect_err("a request over max_request_bytes");
    // tonic's decoder refuses it before sqlgate sees it: OUT_OF_RANGE.
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(
        status.message().contains(&MAX_REQUEST.to_string()),
        "{}",
        status.message()
    );
    assert_eq!(app.count("t").await, 1, "the refused insert never ran");
    // The same connection goes on serving.
    app.execute(insert, vec![v::text("small")])
        .await
        .expect("a small request afterwards");
    assert_eq!(app.count("t").await, 2);
    app.stop().await;
}

/// Most of sqlgate's statements running `pg_sleep` seen at once while
/// `running` stays true, sampled every 10 ms.
async fn watch_concurrency(
    app: &TestApp,
    running: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<i64> {
    let name = app.db.name.clone();
    let mut direct = app.postgres_direct().await;
    tokio::spawn(async move {
        let mut most = 0;
        let started = Instant::now();
        while running.load(Ordering::SeqCst) {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "watch ran away"
            );
            let now = sqlgate_backends(&mut direct, &name, Backends::Running("pg_sleep")).await;
            most = most.max(now);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        most
    })
}

/// Runs `sql` once per channel given, all at once; every call must succeed.
async fn call_all(channels: impl Iterator<Item = Channel>, sql: &str) {
    let calls: Vec<_> = channels
        .map(|channel| {
            let mut client = pb::query_client::QueryClient::new(channel);
            let sql = sql.to_owned();
            tokio::spawn(async move {
                client
                    .execute(pb::ExecuteRequest {
                        sql,
                        ..Default::default()
                    })
                    .await
            })
        })
        .collect();
    for call in calls {
        within(WAIT, "a call", call)
            .await
            .expect("task")
            .expect("every call is served");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_one_connection_has_at_most_max_concurrent_streams_calls_open() {
    const STREAMS: u32 = 4;
    const CALLS: usize = 10;
    let Some(app) = spawn_app_with(Backend::Postgres, |s| {
        s.transport.max_concurrent_streams = STREAMS;
        s.pool.max_connections = 16;
    })
    .await
    else {
        return;
    };
    let sleep = Duration::from_millis(600);
    let sql = format!("SELECT pg_sleep({})", sleep.as_secs_f64());
    // Two HTTP/2 connections (a tonic Channel is one), each warmed up so
    // that the server's SETTINGS have arrived.
    let channels = [app.another_channel().await, app.another_channel().await];
    for channel in &channels {
        pb::query_client::QueryClient::new(channel.clone())
            .execute(pb::ExecuteRequest {
                sql: "SELECT 1".into(),
                ..Default::default()
            })
            .await
            .expect("warm-up");
    }

    // Ten calls at once on the first connection.
    let running = Arc::new(AtomicBool::new(true));
    let watch = watch_concurrency(&app, running.clone()).await;
    let started = Instant::now();
    // The calls above the limit wait on the client's side: none fails.
    call_all((0..CALLS).map(|_| channels[0].clone()), &sql).await;
    let took = started.elapsed();
    running.store(false, Ordering::SeqCst);
    let most = watch.await.expect("watch");
    assert_eq!(
        most,
        i64::from(STREAMS),
        "statements running at once on one connection"
    );
    // Ten calls, four at a time: three rounds.
    assert!(took >= 3 * sleep, "ten calls took only {took:?}");

    // The limit is per connection: two connections run twice as many.
    let running = Arc::new(AtomicBool::new(true));
    let watch = watch_concurrency(&app, running.clone()).await;
    call_all(
        (0..2 * STREAMS as usize).map(|i| channels[i % 2].clone()),
        &sql,
    )
    .await;
    running.store(false, Ordering::SeqCst);
    assert_eq!(watch.await.expect("watch"), 2 * i64::from(STREAMS));

    // Every open session is one stream: a fifth session on the same
    // connection waits until one of four ends.
    let begin = || Session::begin_on(channels[0].clone(), pb::BeginSession::default());
    let mut sessions = Vec::new();
    for _ in 0..STREAMS {
        sessions.push(
            within(WAIT, "a session begins", begin())
                .await
                .expect("began"),
        );
    }
    let mut fifth = tokio::spawn(begin());
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut fifth)
            .await
            .is_err(),
        "a fifth session began while four were open on the connection"
    );
    assert_eq!(app.pool_stats().await.open_sessions, STREAMS);
    // One session commits and its stream ends: the fifth begins.
    sessions.pop().expect("a session").commit().await;
    within(
        Duration::from_secs(5),
        "the fifth session begins once a stream is free",
        fifth,
    )
    .await
    .expect("task")
    .expect("began");
    drop(sessions);
    app.stop().await;
}
