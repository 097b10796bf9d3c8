//! What the isolation tests of every backend (`isolation_mysql`,
//! `isolation_postgres`, `isolation_sqlite`) share: sqlgate with a pool of
//! one connection, so that the next caller deterministically gets the
//! connection the previous one used, and the calls and checks they make.

use sqlgate::grpc::pb::{self, result_frame::Frame, value::Kind};
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::helpers::{Backend, TestApp, WAIT, error_details, spawn_app_with, within};

/// The three ways a call can carry a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Execute,
    /// An ExecuteBatch of this one statement.
    Batch,
    Stream,
}

/// Each way a call can carry a statement: a refusal must hold on all.
pub const EVERY_CALL: [Via; 3] = [Via::Execute, Via::Batch, Via::Stream];

/// sqlgate over `backend` with a pool of exactly one connection: whoever
/// calls next gets the connection the previous caller used (or the one
/// that replaced it).
pub async fn one_connection_app(backend: Backend) -> Option<TestApp> {
    spawn_app_with(backend, |s| {
        s.pool.max_connections = 1;
        s.pool.min_connections = 1;
    })
    .await
}

/// Runs `sql` exactly as written (no placeholder rewriting) through `via`,
/// and returns every row's values, or the call's status.
pub async fn call(app: &TestApp, via: Via, sql: &str) -> Result<Vec<Vec<Kind>>, tonic::Status> {
    let mut client = app.query.clone();
    let request = pb::ExecuteRequest {
        sql: sql.to_owned(),
        params: vec![],
        max_rows: 0,
    };
    let rows = match via {
        Via::Execute => {
            within(WAIT, "Execute", client.execute(request))
                .await?
                .into_inner()
                .rows
        }
        Via::Batch => {
            let batch = pb::ExecuteBatchRequest {
                statements: vec![pb::BatchStatement {
                    sql: sql.to_owned(),
                    params: vec![],
                }],
                max_rows: 0,
            };
            within(WAIT, "ExecuteBatch", client.execute_batch(batch))
                .await?
                .into_inner()
                .results
                .into_iter()
                .flat_map(|result| result.rows)
                .collect()
        }
        Via::Stream => {
            let mut frames = within(WAIT, "ExecuteStream", client.execute_stream(request))
                .await?
                .into_inner();
            let mut rows = Vec::new();
            while let Some(frame) = within(WAIT, "a frame", frames.next()).await {
                if let Some(Frame::Rows(batch)) = frame?.frame {
                    rows.extend(batch.rows);
                }
            }
            rows
        }
    };
    Ok(rows
        .into_iter()
        .map(|row| {
            row.values
                .into_iter()
                .map(|v| v.kind.expect("a kind"))
                .collect()
        })
        .collect())
}

/// Runs `sql` through Execute and returns its one row; panics on failure.
pub async fn one_row(app: &TestApp, sql: &str) -> Vec<Kind> {
    let mut rows = call(app, Via::Execute, sql)
        .await
        .unwrap_or_else(|status| panic!("{sql}: {status:?}"));
    assert_eq!(rows.len(), 1, "{sql}: {rows:?}");
    rows.remove(0)
}

/// `status` is sqlgate's refusal of a statement: INVALID_ARGUMENT on the
/// field `sql`, with a message that contains `instead` (what to use
/// instead, or why).
pub fn assert_refused(status: &tonic::Status, instead: &str, case: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{case}: {status:?}");
    let (_, _, fields) = error_details(status);
    assert_eq!(fields, ["sql"], "{case}: the refusal names the field sql");
    assert!(
        status.message().contains(instead),
        "{case}: the refusal should say {instead:?}; it says {:?}",
        status.message()
    );
}

/// The pool of one still serves: readiness is SERVING and a call runs.
pub async fn assert_still_serving(app: &TestApp) {
    let readiness = within(
        WAIT,
        "a readiness check",
        HealthClient::new(app.channel.clone()).check(HealthCheckRequest {
            service: "readiness".into(),
        }),
    )
    .await
    .expect("readiness check")
    .into_inner()
    .status();
    assert_eq!(readiness, ServingStatus::Serving);
    let rows = call(app, Via::Execute, "SELECT 1")
        .await
        .expect("the pool of one still serves a call");
    assert_eq!(rows, [[Kind::IntValue(1)]]);
}
