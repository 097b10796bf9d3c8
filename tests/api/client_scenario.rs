//! The scenario every client runs, here through the generated Rust client
//! (Python: clients/python/tests/test_scenario.py, TypeScript:
//! clients/typescript/test/scenario.test.ts): values round-trip exactly
//! (int64 extremes, a decimal's scale, microsecond timestamps, NULL array
//! elements), a 50,000-row stream, a session committed and one cancelled
//! (checked in the database), and an error's details read.

use std::time::Duration;

use prost_types::Timestamp;
use sqlgate::grpc::pb::{self, ValueList, result_frame::Frame, value::Kind};
use tokio_stream::StreamExt;
use tonic::Code;

use crate::{
    helpers::{Backend, error_details, kinds, spawn_app, v},
    observe::DatabaseView,
    session_client::{CLEANUP_BOUND, Session, error_status},
};

fn array(values: Vec<pb::Value>) -> pb::Value {
    v::of(Kind::ArrayValue(ValueList { values }))
}

#[tokio::test]
async fn values_round_trip_exactly() {
    let Some(app) = spawn_app(Backend::Postgres).await else {
        return;
    };
    app.run(
        "CREATE TABLE t (id int8 PRIMARY KEY, price numeric(12,4), at timestamptz, local timestamp, \
         tags int8[], names text[])",
    )
    .await;
    let rows = [
        vec![
            v::int(i64::MAX),
            v::of(Kind::DecimalValue("12.3400".into())),
            v::of(Kind::TimestampValue(Timestamp {
                seconds: 1_795_000_455,
                nanos: 123_456_000,
            })),
            v::of(Kind::DatetimeValue("1999-12-31T23:59:59.999999".into())),
            array(vec![v::int(1), v::null(), v::int(i64::MIN)]),
            array(vec![v::text("x"), v::null(), v::text("")]),
        ],
        vec![
            v::int(i64::MIN),
            v::of(Kind::DecimalValue("-0.0001".into())),
            v::of(Kind::TimestampValue(Timestamp {
                seconds: 0,
                nanos: 1_000,
            })),
            v::of(Kind::DatetimeValue("2000-01-01T00:00:00".into())),
            array(vec![v::null(), v::int(5)]),
            array(vec![v::null()]),
        ],
    ];
    for row in &rows {
        app.execute("INSERT INTO t VALUES ($1, $2, $3, $4, $5, $6)", row.clone())
            .await
            .expect("insert");
    }

    let back = app.run("SELECT * FROM t ORDER BY id DESC").await;

    let sent: Vec<Vec<Kind>> = rows
        .iter()
        .map(|row| row.iter().map(|v| v.kind.clone().expect("kind")).collect())
        .collect();
    let got: Vec<Vec<Kind>> = back.rows.iter().map(kinds).collect();
    assert_eq!(got, sent);
}

#[tokio::test]
async fn a_50000_row_stream() {
    let Some(app) = spawn_app(Backend::Postgres).await else {
        return;
    };
    let mut frames = app
        .query
        .clone()
        .execute_stream(pb::ExecuteRequest {
            sql: "SELECT g, 'row ' || g FROM generate_series(1, 50000) AS g".into(),
            params: vec![],
            max_rows: 0,
        })
        .await
        .expect("stream")
        .into_inner();
    let (mut count, mut total, mut last) = (0_u64, 0_i64, Vec::new());
    while let Some(frame) = frames.next().await {
        if let Some(Frame::Rows(batch)) = frame.expect("frame").frame {
            for row in batch.rows {
                count += 1;
                let values = kinds(&row);
                if let Kind::IntValue(n) = values[0] {
                    total += n;
                }
                last = values;
            }
        }
    }
    assert_eq!(count, 50_000);
    assert_eq!(total, 50_000 * 50_001 / 2);
    assert_eq!(
        last,
        vec![Kind::IntValue(50_000), Kind::TextValue("row 50000".into())]
    );
}

#[tokio::test]
async fn a_session_committed_and_one_cancelled() {
    let Some(app) = spawn_app(Backend::Postgres).await else {
        return;
    };
    app.run("CREATE TABLE t (id int8 PRIMARY KEY, body text)")
        .await;
    let mut view = DatabaseView::of(&app).await;

    let mut kept = Session::begin(&app, &[("test", "commit")])
        .await
        .expect("begin");
    kept.execute(
        &app,
        1,
        "INSERT INTO t VALUES ($1, $2)",
        vec![v::int(1), v::text("kept")],
    )
    .await
    .expect("insert");
    assert_eq!(view.count_rows("t").await, 0, "not visible before commit");
    kept.commit().await;

    let mut cancelled = Session::begin(&app, &[("test", "cancel")])
        .await
        .expect("begin");
    cancelled
        .execute(
            &app,
            1,
            "INSERT INTO t VALUES ($1, $2)",
            vec![v::int(2), v::text("gone")],
        )
        .await
        .expect("insert");
    cancelled.vanish();

    view.assert_settles_clean(&app, CLEANUP_BOUND + Duration::from_secs(1))
        .await;
    assert_eq!(view.count_rows("t").await, 1);
    let rows = app.run("SELECT id, body FROM t").await;
    assert_eq!(
        kinds(&rows.rows[0]),
        vec![Kind::IntValue(1), Kind::TextValue("kept".into())]
    );
}

#[tokio::test]
async fn an_errors_details_are_read() {
    let Some(app) = spawn_app(Backend::Postgres).await else {
        return;
    };
    app.run("CREATE TABLE t (id int8 PRIMARY KEY)").await;
    app.run("INSERT INTO t VALUES (1)").await;

    let status = app
        .execute("INSERT INTO t VALUES ($1)", vec![v::int(1)])
        .await
        .expect_err("duplicate");
    assert_eq!(status.code(), Code::AlreadyExists);
    let (reason, metadata, _) = error_details(&status);
    assert_eq!(reason, "DATABASE_ERROR");
    assert_eq!(metadata.get("sqlstate").map(String::as_str), Some("23505"));

    let status = app
        .execute(
            "SELECT $1::date",
            vec![v::of(Kind::DateValue("not a date".into()))],
        )
        .await
        .expect_err("bad date");
    let (reason, _, fields) = error_details(&status);
    assert_eq!(
        (status.code(), reason.as_str(), fields),
        (
            Code::InvalidArgument,
            "INVALID_PARAMETER",
            vec!["params[0]".to_owned()]
        )
    );

    let mut session = Session::begin(&app, &[]).await.expect("begin");
    let error = session
        .execute(&app, 1, "INSERT INTO t VALUES ($1)", vec![v::int(1)])
        .await
        .expect_err("duplicate in a session");
    let status = error_status(&error);
    assert_eq!(status.code(), Code::AlreadyExists);
    assert_eq!(
        error_details(&status).1.get("sqlstate").map(String::as_str),
        Some("23505")
    );
    session.rollback().await;
}
