//! The limits the README promises on results and requests, each pushed one
//! past its value: what the caller is answered, and that the database is
//! left as it was. Limits on streams and the transport: `stream_limits`.

use prost::Message;
use sqlgate::grpc::pb::{self, result_frame::Frame, value::Kind};
use tokio_stream::StreamExt;
use tonic::Code;

use crate::{
    helpers::{Backend, TestApp, error_details, spawn_app_with, v},
    on_every_backend,
};

fn batch_statement(app: &TestApp, sql: &str, params: Vec<pb::Value>) -> pb::BatchStatement {
    pb::BatchStatement {
        sql: app.sql(sql),
        params,
    }
}

/// `CREATE TABLE t (id, pad)` with rows `1..=rows`, row `i`'s pad being
/// `pad_len(i)` characters, all in one batch.
pub async fn table_with_pads(app: &TestApp, rows: i64, pad_len: impl Fn(i64) -> usize) {
    app.run("CREATE TABLE t (id INTEGER PRIMARY KEY, pad TEXT)")
        .await;
    let statements = (1..=rows)
        .map(|i| {
            batch_statement(
                app,
                "INSERT INTO t (id, pad) VALUES ($1, $2)",
                vec![v::int(i), v::text(&pad_of(i, pad_len(i)))],
            )
        })
        .collect();
    app.query
        .clone()
        .execute_batch(pb::ExecuteBatchRequest {
            statements,
            max_rows: 0,
        })
        .await
        .expect("fill t");
    assert_eq!(app.count("t").await, rows);
}

/// Row `i`'s pad: recognisably its own, `len` characters long.
pub fn pad_of(i: i64, len: usize) -> String {
    let letter = char::from(b'a' + (i % 26) as u8);
    std::iter::repeat_n(letter, len).collect()
}

async fn execute(
    app: &TestApp,
    sql: &str,
    params: Vec<pb::Value>,
    max_rows: u32,
) -> Result<pb::ExecuteResponse, tonic::Status> {
    app.query
        .clone()
        .execute(pb::ExecuteRequest {
            sql: app.sql(sql),
            params,
            max_rows,
        })
        .await
        .map(tonic::Response::into_inner)
}

/// The bytes the rows of a response take on the wire.
fn rows_wire_len(response: &pb::ExecuteResponse) -> usize {
    pb::ExecuteResponse {
        rows: response.rows.clone(),
        ..pb::ExecuteResponse::default()
    }
    .encoded_len()
}

fn assert_result_too_large(status: &tonic::Status, mentions: &str) {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let (reason, _, fields) = error_details(status);
    assert_eq!(reason, "RESULT_TOO_LARGE", "{status:?}");
    assert!(fields.is_empty(), "{fields:?}");
    assert!(
        status.message().contains("ExecuteStream"),
        "the message points to ExecuteStream: {}",
        status.message()
    );
    assert!(
        status.message().contains(mentions),
        "the message names the limit {mentions}: {}",
        status.message()
    );
}

/// Rows of one 1,000-byte column take 1,009 bytes each inside an
/// `ExecuteResponse` (value key, length and body; row key and length).
const PAD: usize = 1000;
const ROW_ON_WIRE: usize = 1009;
/// Eight such rows fit under the cap; nine are one byte over it.
const INLINE_CAP: usize = 9 * ROW_ON_WIRE - 1;

async fn inline_results_over_the_byte_cap_are_refused_whole(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |s| {
        s.limits.max_response_bytes = INLINE_CAP;
    })
    .await
    else {
        return;
    };
    table_with_pads(&app, 20, |_| PAD).await;

    // Eight rows fit, and what came back is within the cap, byte for byte.
    let eight = execute(
        &app,
        "SELECT pad FROM t WHERE id <= 8 ORDER BY id",
        vec![],
        0,
    )
    .await
    .expect("eight rows fit under the cap");
    assert_eq!(eight.rows.len(), 8);
    assert_eq!(
        eight.rows[7].values[0].kind,
        Some(Kind::TextValue(pad_of(8, PAD)))
    );
    assert_eq!(rows_wire_len(&eight), 8 * ROW_ON_WIRE);
    assert!(rows_wire_len(&eight) <= INLINE_CAP);

    // Nine rows are one byte over: refused, not truncated.
    let status = execute(
        &app,
        "SELECT pad FROM t WHERE id <= 9 ORDER BY id",
        vec![],
        0,
    )
    .await
    .expect_err("nine rows are over the byte cap");
    assert_result_too_large(&status, &INLINE_CAP.to_string());

    // The refusal points the right way: ExecuteStream serves the same result.
    let mut frames = app
        .query
        .clone()
        .execute_stream(pb::ExecuteRequest {
            sql: "SELECT pad FROM t ORDER BY id".into(),
            params: vec![],
            max_rows: 0,
        })
        .await
        .expect("stream")
        .into_inner();
    let mut streamed = 0;
    while let Some(frame) = frames.next().await {
        if let Some(Frame::Rows(batch)) = frame.expect("frame").frame {
            streamed += batch.rows.len();
        }
    }
    assert_eq!(streamed, 20);

    // A write whose returned rows are over the cap leaves nothing half-done.
    let status = execute(
        &app,
        "DELETE FROM t WHERE id <= 15 RETURNING pad",
        vec![],
        0,
    )
    .await
    .expect_err("fifteen returned rows are over the byte cap");
    assert_result_too_large(&status, &INLINE_CAP.to_string());
    assert_eq!(app.count("t").await, 20, "the DELETE was rolled back");
    // The same write within the cap goes through.
    let deleted = execute(&app, "DELETE FROM t WHERE id <= 2 RETURNING pad", vec![], 0)
        .await
        .expect("two returned rows fit");
    assert_eq!(deleted.rows.len(), 2);
    assert_eq!(app.count("t").await, 18);
    app.stop().await;
}
on_every_backend!(inline_results_over_the_byte_cap_are_refused_whole);

async fn max_rows_defaults_and_its_limit_is_refused_not_capped(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |s| {
        s.limits.default_max_rows = 5;
        s.limits.max_rows_limit = 8;
    })
    .await
    else {
        return;
    };
    table_with_pads(&app, 10, |_| 3).await;
    let up_to = "SELECT id FROM t WHERE id <= $1 ORDER BY id";

    // max_rows 0 means default_max_rows: five rows come back, six are refused.
    let five = execute(&app, up_to, vec![v::int(5)], 0)
        .await
        .expect("five rows");
    assert_eq!(five.rows.len(), 5);
    let status = execute(&app, up_to, vec![v::int(6)], 0)
        .await
        .expect_err("six rows are over default_max_rows");
    assert_result_too_large(&status, "5 rows");

    // A caller may ask for more than the default, up to max_rows_limit.
    let eight = execute(&app, up_to, vec![v::int(8)], 8)
        .await
        .expect("eight rows with max_rows 8");
    let ids: Vec<_> = eight
        .rows
        .iter()
        .map(|r| r.values[0].kind.clone())
        .collect();
    assert_eq!(
        ids,
        (1..=8).map(|i| Some(Kind::IntValue(i))).collect::<Vec<_>>()
    );
    let status = execute(&app, up_to, vec![v::int(9)], 8)
        .await
        .expect_err("nine rows are over max_rows 8");
    assert_result_too_large(&status, "8 rows");

    // Above max_rows_limit the request is refused, whatever the result
    // would have been (one row here): never silently capped.
    for max_rows in [9, u32::MAX] {
        let status = execute(&app, up_to, vec![v::int(1)], max_rows)
            .await
            .expect_err("max_rows above max_rows_limit");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        let (reason, _, fields) = error_details(&status);
        assert_eq!(reason, "INVALID_REQUEST");
        assert_eq!(fields, ["max_rows"]);
        assert!(
            status.message().contains("limit of 8"),
            "{}",
            status.message()
        );
    }
    // ExecuteBatch too.
    let status = app
        .query
        .clone()
        .execute_batch(pb::ExecuteBatchRequest {
            statements: vec![batch_statement(&app, "DELETE FROM t WHERE id = 1", vec![])],
            max_rows: 9,
        })
        .await
        .expect_err("batch max_rows above the limit");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(error_details(&status).2, ["max_rows"]);
    assert_eq!(
        app.count("t").await,
        10,
        "the refused batch changed nothing"
    );
    app.stop().await;
}
on_every_backend!(max_rows_defaults_and_its_limit_is_refused_not_capped);

fn assert_invalid_request(status: &tonic::Status, field: &str, message: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let (reason, _, fields) = error_details(status);
    assert_eq!(reason, "INVALID_REQUEST", "{status:?}");
    assert_eq!(fields, [field], "{status:?}");
    assert!(
        status.message().contains(message),
        "{:?} does not say {message:?}",
        status.message()
    );
}

/// `sql` padded with trailing spaces to exactly `len` bytes.
fn padded_to(sql: &str, len: usize) -> String {
    assert!(sql.len() <= len);
    format!("{sql}{}", " ".repeat(len - sql.len()))
}

async fn requests_over_the_statement_limits_change_nothing(backend: Backend) {
    const MAX_STATEMENT: usize = 120;
    let Some(app) = spawn_app_with(backend, |s| {
        s.limits.max_params = 3;
        s.limits.max_statement_bytes = MAX_STATEMENT;
        s.limits.max_batch_statements = 3;
    })
    .await
    else {
        return;
    };
    app.run("CREATE TABLE t (a INTEGER, b INTEGER, c INTEGER, d INTEGER)")
        .await;

    // limits.max_params: three parameters run, four are refused.
    app.execute(
        "INSERT INTO t (a, b, c) VALUES ($1, $2, $3)",
        vec![v::int(1), v::int(1), v::int(1)],
    )
    .await
    .expect("three parameters");
    let status = app
        .execute(
            "INSERT INTO t (a, b, c, d) VALUES ($1, $2, $3, $4)",
            vec![v::int(2), v::int(2), v::int(2), v::int(2)],
        )
        .await
        .expect_err("four parameters");
    assert_invalid_request(&status, "params", "4 parameters; the limit is 3");
    assert_eq!(app.count("t").await, 1);

    // limits.max_statement_bytes: exactly the limit runs, one byte more is refused.
    let at_limit = padded_to("INSERT INTO t (a) VALUES (3)", MAX_STATEMENT);
    app.run(&at_limit).await;
    let over = padded_to("INSERT INTO t (a) VALUES (4)", MAX_STATEMENT + 1);
    let status = app.execute(&over, vec![]).await.expect_err("121 bytes");
    assert_invalid_request(&status, "sql", "121 bytes; the limit is 120 bytes");
    // ExecuteStream applies the same limit.
    let status = app
        .query
        .clone()
        .execute_stream(pb::ExecuteRequest {
            sql: over.clone(),
            params: vec![],
            max_rows: 0,
        })
        .await
        .expect_err("121 bytes, streamed");
    assert_invalid_request(&status, "sql", "the limit is 120 bytes");

    // The empty statement.
    for sql in ["", " \n\t ", "/* nothing */"] {
        let status = app.execute(sql, vec![]).await.expect_err("empty");
        assert_invalid_request(&status, "sql", "statement is empty");
    }

    // limits.max_batch_statements: three run in one batch, four are refused whole.
    let insert = "INSERT INTO t (a) VALUES ($1)";
    let batch = |ids: std::ops::RangeInclusive<i64>| pb::ExecuteBatchRequest {
        statements: ids
            .map(|i| batch_statement(&app, insert, vec![v::int(i)]))
            .collect(),
        max_rows: 0,
    };
    let status = app
        .query
        .clone()
        .execute_batch(batch(10..=13))
        .await
        .expect_err("four statements");
    assert_invalid_request(&status, "statements", "4 statements; the limit is 3");
    assert_eq!(app.count("t").await, 2, "none of the four ran");
    let three = app
        .query
        .clone()
        .execute_batch(batch(10..=12))
        .await
        .expect("three statements")
        .into_inner();
    assert_eq!(three.results.len(), 3);
    assert_eq!(app.count("t").await, 5);

    // An oversized statement inside a batch is named, and nothing runs.
    let status = app
        .query
        .clone()
        .execute_batch(pb::ExecuteBatchRequest {
            statements: vec![
                batch_statement(&app, insert, vec![v::int(20)]),
                batch_statement(&app, &over, vec![]),
            ],
            max_rows: 0,
        })
        .await
        .expect_err("oversized second statement");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let (reason, metadata, fields) = error_details(&status);
    assert_eq!(reason, "INVALID_REQUEST");
    assert_eq!(fields, ["statements[1].sql"]);
    assert_eq!(
        metadata.get("statement_index").map(String::as_str),
        Some("1")
    );
    assert_eq!(app.count("t").await, 5);
    app.stop().await;
}
on_every_backend!(requests_over_the_statement_limits_change_nothing);
