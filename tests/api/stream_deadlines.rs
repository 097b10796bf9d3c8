//! Deadlines on streams and under load: a stream is bounded as a whole, and
//! a storm of calls whose deadlines expire at every point leaves no
//! connection dirty.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use futures::{StreamExt, stream};
use sqlgate::grpc::pb::{self, result_frame::Frame, value::Kind};
use tonic::Code;

use crate::{
    deadlines::{
        answer_slack, assert_stopped_on_the_server, execute_request, request, warm_client,
    },
    helpers::{Backend, WAIT, raw_query_client, spawn_app_with, within},
    observe::DatabaseView,
    on_every_backend,
    pg_activity::{Backends, sqlgate_backends},
};

async fn a_stream_is_bounded_as_a_whole(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |s| {
        s.limits.stream_batch_rows = 5;
    })
    .await
    else {
        return;
    };
    // Rows of 4 kB, so that the database's send buffer flushes every few rows.
    let sql = match backend {
        Backend::Postgres => {
            "SELECT g, pg_sleep(0.01), repeat('x', 4000) FROM generate_series(1, 100000) AS g"
        }
        Backend::MySql => {
            "WITH RECURSIVE d(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM d WHERE n < 9) \
             SELECT a.n, SLEEP(0.01), REPEAT('x', 4000) FROM d a, d b, d c, d e"
        }
        Backend::Sqlite => {
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 10000000000) \
             SELECT x FROM c WHERE x % 10000 = 0"
        }
    };
    let mut view = DatabaseView::of(&app).await;
    let budget = Duration::from_millis(600);
    let mut client = warm_client(&app).await;
    let started = Instant::now();
    let mut frames = client
        .execute_stream(request(execute_request(&app, sql), budget))
        .await
        .expect("stream opens")
        .into_inner();
    let mut rows = 0;
    let status = loop {
        match within(WAIT, "a frame", frames.next()).await {
            Some(Ok(frame)) => {
                if let Some(Frame::Rows(batch)) = frame.frame {
                    rows += batch.rows.len();
                }
            }
            Some(Err(status)) => break status,
            None => panic!("stream ended without the deadline error"),
        }
    };
    let answered = started.elapsed();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    // The status queues behind the frames sent before the deadline, which
    // the reader drains first: allow twice the unary slack.
    assert!(
        answered < budget + 2 * answer_slack(backend),
        "{answered:?}"
    );
    assert!(rows > 0, "rows flowed before the deadline");
    // Gone from the server within 100 ms of the deadline. SQLite's read
    // runs in-process and holds nothing another connection could see;
    // `a_slow_statement_is_stopped_on_the_server_at_its_deadline` proves
    // the same interrupt stops a SQLite statement.
    let left = (budget + Duration::from_millis(100)).saturating_sub(started.elapsed());
    if backend == Backend::Sqlite {
        view.assert_settles_clean(&app, Duration::from_secs(3))
            .await;
    } else {
        assert_stopped_on_the_server(&app, &mut view, left).await;
    }
    app.stop().await;
}
on_every_backend!(a_stream_is_bounded_as_a_whole);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_no_dirty_connection_after_a_deadline_storm() {
    let Some(app) = spawn_app_with(Backend::Postgres, |s| {
        s.pool.max_connections = 8;
        s.limits.stream_batch_rows = 10;
    })
    .await
    else {
        return;
    };
    let app = Arc::new(app);
    app.run("CREATE TABLE storm (id BIGINT, at TIMESTAMPTZ DEFAULT now())")
        .await;

    // 1,000 calls whose deadlines (1–60 ms) expire at every point: in the
    // queue, during BEGIN, mid-statement, mid-stream, during COMMIT.
    let outcomes = stream::iter(0..1000u64)
        .map(|i| {
            let app = app.clone();
            within(WAIT, "a storm call", async move {
                let budget = Duration::from_millis(1 + (i * 7919) % 60);
                let mut client = raw_query_client(app.address);
                let insert = format!(
                    "INSERT INTO storm (id) SELECT g FROM generate_series(1, 50) AS g, \
                     LATERAL (SELECT pg_sleep({})) AS s",
                    (i % 5) as f64 * 0.0002
                );
                let result = match i % 4 {
                    0 => client
                        .execute(request(
                            execute_request(&app, "SELECT pg_sleep(0.02)"),
                            budget,
                        ))
                        .await
                        .map(|_| ()),
                    1 => client
                        .execute(request(execute_request(&app, &insert), budget))
                        .await
                        .map(|_| ()),
                    2 => {
                        let batch = pb::ExecuteBatchRequest {
                            statements: (0..3)
                                .map(|_| pb::BatchStatement {
                                    sql: insert.clone(),
                                    params: vec![],
                                })
                                .collect(),
                            max_rows: 0,
                        };
                        client
                            .execute_batch(request(batch, budget))
                            .await
                            .map(|_| ())
                    }
                    _ => match client
                        .execute_stream(request(
                            execute_request(
                                &app,
                                "SELECT g, pg_sleep(0.001) FROM generate_series(1, 200) AS g",
                            ),
                            budget,
                        ))
                        .await
                    {
                        Ok(response) => {
                            let mut frames = response.into_inner();
                            let mut last = Ok(());
                            while let Some(frame) = within(WAIT, "a frame", frames.next()).await {
                                if let Err(status) = frame {
                                    last = Err(status);
                                }
                            }
                            last
                        }
                        Err(status) => Err(status),
                    },
                };
                result.err().map(|status| status.code())
            })
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    let expired = outcomes
        .iter()
        .filter(|c| **c == Some(Code::DeadlineExceeded))
        .count();
    let unexpected: Vec<_> = outcomes
        .iter()
        .flatten()
        .filter(|c| !matches!(c, Code::DeadlineExceeded | Code::ResourceExhausted))
        .collect();
    assert!(unexpected.is_empty(), "unexpected codes: {unexpected:?}");
    assert!(
        expired > 100,
        "the storm must hit deadlines ({expired} did)"
    );

    // Every connection is back or closed.
    let settle = Instant::now();
    while app.pool_in_use().await > 0 {
        assert!(
            settle.elapsed() < Duration::from_secs(5),
            "connections still checked out"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut direct = app.postgres_direct().await;
    let busy = sqlgate_backends(&mut direct, &app.db.name, Backends::Busy).await;
    assert_eq!(
        busy, 0,
        "a sqlgate backend is active or idle in transaction after the storm"
    );

    // The next 10,000 autocommit statements all run outside any transaction.
    // A statement inside a leftover transaction would see now() (the
    // transaction's start) before the moment the call was sent.
    let clean = stream::iter(0..10_000)
        .map(|_| {
            let app = app.clone();
            async move {
                let sent = chrono::Utc::now();
                let at = pb::Value {
                    kind: Some(Kind::TimestampValue(prost_types::Timestamp {
                        seconds: sent.timestamp(),
                        nanos: sent.timestamp_subsec_micros() as i32 * 1000,
                    })),
                };
                let response = within(
                    WAIT,
                    "a statement after the storm",
                    app.execute(
                        "SELECT txid_current_if_assigned() IS NULL AND now() >= $1",
                        vec![at],
                    ),
                )
                .await
                .expect("clean statement");
                response.rows[0].values[0].kind == Some(Kind::BoolValue(true))
            }
        })
        .buffer_unordered(16)
        .filter(|clean| futures::future::ready(!clean))
        .count()
        .await;
    assert_eq!(clean, 0, "statements ran inside a leftover transaction");
    app.wait_until_pool_idle().await;
}
