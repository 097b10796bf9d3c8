//! Bad requests get a clear error with the right code, and the database is
//! left exactly as it was.

use sqlgate::grpc::pb::{self, value::Kind};
use tonic::Code;

use crate::{
    helpers::{Backend, TestApp, error_details, spawn_app, v},
    on_every_backend,
};

async fn assert_refused(
    app: &TestApp,
    sql: &str,
    params: Vec<pb::Value>,
    max_rows: u32,
    code: Code,
) -> tonic::Status {
    let status = app
        .query
        .clone()
        .execute(pb::ExecuteRequest {
            sql: app.sql(sql),
            params,
            max_rows,
        })
        .await
        .expect_err(sql);
    assert_eq!(status.code(), code, "{sql}: {status:?}");
    assert!(!status.message().is_empty());
    status
}

async fn bad_requests_get_the_right_code_and_change_nothing(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    app.run("CREATE TABLE t (id INTEGER NOT NULL, label VARCHAR(20))")
        .await;
    app.run("INSERT INTO t (id, label) VALUES (1, 'one')").await;

    // Syntax error: the database's SQLSTATE comes back.
    let status = assert_refused(
        &app,
        "INSERT INTO t VALUES (2, 'two'",
        vec![],
        0,
        Code::InvalidArgument,
    )
    .await;
    let (reason, metadata, _) = error_details(&status);
    assert_eq!(reason, "DATABASE_ERROR");
    assert!(metadata.contains_key("sqlstate"));

    // An unknown table.
    assert_refused(
        &app,
        "INSERT INTO missing VALUES (1)",
        vec![],
        0,
        Code::InvalidArgument,
    )
    .await;

    // Too few and too many parameters.
    assert_refused(
        &app,
        "INSERT INTO t (id, label) VALUES ($1, $2)",
        vec![v::int(2)],
        0,
        Code::InvalidArgument,
    )
    .await;
    assert_refused(
        &app,
        "INSERT INTO t (id) VALUES ($1)",
        vec![v::int(2), v::int(3)],
        0,
        Code::InvalidArgument,
    )
    .await;

    // A parameter that does not parse names its index.
    let status = assert_refused(
        &app,
        "INSERT INTO t (id, label) VALUES ($1, $2)",
        vec![v::int(2), v::of(Kind::DateValue("2023-02-30".into()))],
        0,
        Code::InvalidArgument,
    )
    .await;
    assert_eq!(error_details(&status).2, ["params[1]"]);

    // A value with no kind at all.
    let status = assert_refused(
        &app,
        "INSERT INTO t (id) VALUES ($1)",
        vec![pb::Value { kind: None }],
        0,
        Code::InvalidArgument,
    )
    .await;
    assert_eq!(error_details(&status).2, ["params[0]"]);

    // Empty and comment-only statements never reach the database.
    for sql in ["", "   ", "-- nothing here"] {
        let status = assert_refused(&app, sql, vec![], 0, Code::InvalidArgument).await;
        assert_eq!(error_details(&status).2, ["sql"]);
    }

    // A statement over the size cap (1 MiB by default).
    let huge = format!(
        "INSERT INTO t (id, label) VALUES (5, '{}')",
        "x".repeat(1024 * 1024)
    );
    let status = assert_refused(&app, &huge, vec![], 0, Code::InvalidArgument).await;
    assert!(status.message().contains("limit"), "{}", status.message());

    // A max_rows above the server's limit.
    let status = assert_refused(
        &app,
        "SELECT id FROM t",
        vec![],
        u32::MAX,
        Code::InvalidArgument,
    )
    .await;
    assert_eq!(error_details(&status).2, ["max_rows"]);

    // Two statements in one request: refused on every backend (SQLite's
    // driver would run both), and nothing of either is written.
    let status = assert_refused(
        &app,
        "INSERT INTO t (id) VALUES (7); INSERT INTO t (id) VALUES (8)",
        vec![],
        0,
        Code::InvalidArgument,
    )
    .await;
    assert_eq!(error_details(&status).2, ["sql"]);

    // NOT NULL violated.
    assert_refused(
        &app,
        "INSERT INTO t (id) VALUES ($1)",
        vec![v::null()],
        0,
        Code::FailedPrecondition,
    )
    .await;

    // Nothing changed.
    let rows = app.run("SELECT id, label FROM t").await;
    assert_eq!(rows.rows.len(), 1);
    assert_eq!(rows.rows[0].values[0].kind, Some(Kind::IntValue(1)));

    // And the pool is not poisoned: a plain statement still works.
    assert_eq!(app.count("t").await, 1);
    app.stop().await;
}
on_every_backend!(bad_requests_get_the_right_code_and_change_nothing);

#[tokio::test]
async fn postgres_wrong_parameter_type_is_invalid_argument() {
    let Some(app) = spawn_app(Backend::Postgres).await else {
        return;
    };
    app.run("CREATE TABLE t (id INTEGER, at DATE)").await;
    // Text into an integer column: PostgreSQL refuses (42804), nothing is written.
    assert_refused(
        &app,
        "INSERT INTO t (id) VALUES ($1)",
        vec![v::text("12")],
        0,
        Code::InvalidArgument,
    )
    .await;
    // A UUID into a date column.
    assert_refused(
        &app,
        "INSERT INTO t (at) VALUES ($1)",
        vec![v::of(Kind::UuidValue(uuid::Uuid::nil().to_string()))],
        0,
        Code::InvalidArgument,
    )
    .await;
    assert_eq!(app.count("t").await, 0);
    app.stop().await;
}

#[tokio::test]
async fn postgres_unsupported_column_types_say_how_to_fix_it() {
    let Some(app) = spawn_app(Backend::Postgres).await else {
        return;
    };
    let status = assert_refused(
        &app,
        "SELECT interval '1 day' AS span",
        vec![],
        0,
        Code::InvalidArgument,
    )
    .await;
    assert!(
        status.message().contains("interval"),
        "{}",
        status.message()
    );
    assert!(status.message().contains("cast"), "{}", status.message());
    assert_eq!(error_details(&status).0, "UNSUPPORTED_COLUMN_TYPE");
    // The same value cast to text works.
    let ok = app.run("SELECT (interval '1 day')::text AS span").await;
    assert_eq!(
        ok.rows[0].values[0].kind,
        Some(Kind::TextValue("1 day".into()))
    );
    app.stop().await;
}

/// Bytes that are not a `SessionRequest`: field 1 (`begin`, a message)
/// sent as a number.
#[derive(Clone, PartialEq, prost::Message)]
struct NotASessionRequest {
    #[prost(uint64, tag = "1")]
    begin: u64,
}

/// Sends `first` as an Attach call's first message and returns how the
/// call ends, within 5 s.
async fn attach_with(app: &TestApp, first: NotASessionRequest) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(app.channel.clone());
    grpc.ready().await.expect("ready");
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/sqlgate.v1.Sessions/Attach");
    let codec = tonic_prost::ProstCodec::<NotASessionRequest, pb::SessionResponse>::default();
    // The request side stays open: only the server can end the call.
    let requests =
        futures::StreamExt::chain(futures::stream::iter([first]), futures::stream::pending());
    let call = async {
        let mut answers = grpc
            .streaming(tonic::Request::new(requests), path, codec)
            .await?
            .into_inner();
        if let Some(answer) = answers.message().await? {
            panic!("no answer is expected before the call ends: {answer:?}");
        }
        Ok::<_, tonic::Status>(())
    };
    match tokio::time::timeout(std::time::Duration::from_secs(5), call).await {
        Ok(Err(status)) => status,
        Ok(Ok(())) => panic!("the call ended OK for an undecodable message"),
        Err(_) => panic!("the call did not end within 5 s"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attach_whose_first_message_does_not_decode_is_told_so() {
    let Some(app) = spawn_app(Backend::Sqlite).await else {
        return;
    };
    let status = attach_with(&app, NotASessionRequest { begin: 7 }).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("SessionRequest"), "{status:?}");
    let (_, _, fields) = error_details(&status);
    assert_eq!(fields, ["request"]);
    assert_eq!(app.pool_stats().await.open_sessions, 0);
    app.stop().await;
}
