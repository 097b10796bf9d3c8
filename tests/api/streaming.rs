//! ExecuteStream: metadata first, rows in batches, stats last; a reader that
//! drops the stream gets its statement cancelled and its connection back.

use std::time::{Duration, Instant};

use sqlgate::grpc::pb::{self, result_frame::Frame, value::Kind};
use tokio_stream::StreamExt;

use crate::{
    helpers::{Backend, WAIT, spawn_app, spawn_app_with, within},
    on_every_backend,
    pg_activity::{Backends, sqlgate_backends},
};

fn series_sql(backend: Backend, rows: u32) -> String {
    match backend {
        Backend::Postgres => {
            format!("SELECT g AS n, repeat('x', 100) AS pad FROM generate_series(1, {rows}) AS g")
        }
        // MariaDB stops recursive CTEs silently at 1,000 iterations: cross join digits instead.
        Backend::MySql | Backend::Sqlite => format!(
            "WITH RECURSIVE d(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM d WHERE n < 9), \
             s(n) AS (SELECT a.n + 10 * b.n + 100 * c.n + 1000 * e.n + 10000 * f.n + 1 \
                      FROM d a, d b, d c, d e, d f) \
             SELECT n, '{}' AS pad FROM s WHERE n <= {rows} ORDER BY n",
            "x".repeat(100)
        ),
    }
}

async fn streams_metadata_rows_then_stats(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |s| {
        s.limits.stream_batch_rows = 1000;
    })
    .await
    else {
        return;
    };
    let total = 25_000u32;
    let mut frames = app
        .query
        .clone()
        .execute_stream(pb::ExecuteRequest {
            sql: series_sql(backend, total),
            params: vec![],
            max_rows: 0,
        })
        .await
        .expect("stream")
        .into_inner();

    let first = within(WAIT, "the first frame", frames.next())
        .await
        .expect("a frame")
        .expect("ok");
    let Some(Frame::Metadata(metadata)) = first.frame else {
        panic!("first frame must be metadata: {first:?}")
    };
    assert_eq!(metadata.columns[0].name, "n");

    let mut next_expected = 1i64;
    let mut batches = 0;
    let mut stats = None;
    while let Some(frame) = within(WAIT, "a frame", frames.next()).await {
        match frame.expect("ok").frame {
            Some(Frame::Rows(batch)) => {
                assert!(stats.is_none(), "rows after stats");
                assert!(batch.rows.len() <= 1000);
                batches += 1;
                for row in batch.rows {
                    assert_eq!(row.values[0].kind, Some(Kind::IntValue(next_expected)));
                    next_expected += 1;
                }
            }
            Some(Frame::Stats(s)) => stats = Some(s),
            other => panic!("unexpected frame {other:?}"),
        }
    }
    let stats = stats.expect("stats frame last");
    assert_eq!(stats.rows_returned, u64::from(total));
    assert_eq!(next_expected, i64::from(total) + 1);
    assert!(batches >= 25, "rows come in batches ({batches})");
    assert!(stats.elapsed.is_some());
    app.stop().await;
}
on_every_backend!(streams_metadata_rows_then_stats);

async fn stream_errors_arrive_as_status(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let mut frames = app
        .query
        .clone()
        .execute_stream(pb::ExecuteRequest {
            sql: "SELECT * FROM no_such_table".into(),
            params: vec![],
            max_rows: 0,
        })
        .await
        .expect("stream opens")
        .into_inner();
    let status = within(WAIT, "the error", frames.next())
        .await
        .expect("an item")
        .expect_err("error");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    app.stop().await;
}
on_every_backend!(stream_errors_arrive_as_status);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_dropping_a_stream_cancels_the_query_on_the_server() {
    let Some(app) = spawn_app_with(Backend::Postgres, |s| {
        s.limits.stream_batch_rows = 10;
        s.limits.stream_buffer_frames = 1;
    })
    .await
    else {
        return;
    };
    // Rows come slowly; the reader takes a few and leaves.
    let sql = "SELECT g, pg_sleep(0.01) FROM generate_series(1, 100000) AS g".to_owned();
    let mut frames = app
        .query
        .clone()
        .execute_stream(pb::ExecuteRequest {
            sql,
            params: vec![],
            max_rows: 0,
        })
        .await
        .expect("stream")
        .into_inner();
    for _ in 0..3 {
        within(WAIT, "a frame", frames.next())
            .await
            .expect("frame")
            .expect("ok");
    }
    let mut direct = app.postgres_direct().await;
    assert_eq!(
        sqlgate_backends(
            &mut direct,
            &app.db.name,
            Backends::Running("generate_series")
        )
        .await,
        1,
        "the query runs while the stream is read"
    );

    drop(frames);
    let dropped = Instant::now();
    while sqlgate_backends(
        &mut direct,
        &app.db.name,
        Backends::Running("generate_series"),
    )
    .await
        > 0
    {
        assert!(
            dropped.elapsed() < Duration::from_secs(2),
            "query still running after the stream dropped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Nothing of it left: no transaction, no lock, the connection back.
    crate::observe::DatabaseView::of(&app)
        .await
        .assert_settles_clean(&app, Duration::from_secs(2))
        .await;
    // The pool still serves.
    assert!(app.count("pg_class").await > 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_slow_reader_holds_the_query_back() {
    let Some(app) = spawn_app_with(Backend::Postgres, |s| {
        s.limits.stream_batch_rows = 100;
        s.limits.stream_buffer_frames = 2;
    })
    .await
    else {
        return;
    };
    // nextval() leaves a trace of every row produced that is visible from outside.
    app.run("CREATE SEQUENCE produced").await;
    let mut frames = app
        .query
        .clone()
        .execute_stream(pb::ExecuteRequest {
            sql: "SELECT nextval('produced') AS n, repeat('x', 2000) AS pad FROM generate_series(1, 100000)".into(),
            params: vec![],
            max_rows: 0,
        })
        .await
        .expect("stream")
        .into_inner();
    within(WAIT, "the metadata frame", frames.next())
        .await
        .expect("metadata")
        .expect("ok");
    within(WAIT, "a rows frame", frames.next())
        .await
        .expect("rows")
        .expect("ok");
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut direct = app.postgres_direct().await;
    let produced: i64 = sqlx::query_scalar("SELECT last_value FROM produced")
        .fetch_one(&mut direct)
        .await
        .expect("sequence");
    // 100,000 rows of 2 kB would be 200 MB; only what fits in the frame
    // buffer and the transport's windows may be produced ahead of the reader.
    assert!(
        produced < 20_000,
        "{produced} rows produced ahead of a reader that took 100"
    );

    // Reading on lets it finish.
    let mut rows = 100u64;
    while let Some(frame) = within(WAIT, "a frame", frames.next()).await {
        if let Some(Frame::Rows(batch)) = frame.expect("ok").frame {
            rows += batch.rows.len() as u64;
        }
    }
    assert_eq!(rows, 100_000);
    app.stop().await;
}
