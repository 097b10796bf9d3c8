//! ExecuteBatch: all statements commit, or none do, and the caller learns
//! which statement failed.

use sqlgate::grpc::pb::{self, value::Kind};
use tonic::Code;

use crate::{
    helpers::{Backend, TestApp, error_details, spawn_app, v},
    on_every_backend,
};

fn statement(app: &TestApp, sql: &str, params: Vec<pb::Value>) -> pb::BatchStatement {
    pb::BatchStatement {
        sql: app.sql(sql),
        params,
    }
}

async fn batches_are_all_or_nothing(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    app.run("CREATE TABLE t (id INTEGER PRIMARY KEY, label VARCHAR(20))")
        .await;

    // One statement, many parameter sets.
    let insert = "INSERT INTO t (id, label) VALUES ($1, $2)";
    let statements: Vec<_> = (1..=100)
        .map(|i| statement(&app, insert, vec![v::int(i), v::text(&format!("row {i}"))]))
        .chain([statement(&app, "SELECT count(*) FROM t", vec![])])
        .collect();
    let response = app
        .query
        .clone()
        .execute_batch(pb::ExecuteBatchRequest {
            statements,
            max_rows: 0,
        })
        .await
        .expect("batch")
        .into_inner();
    assert_eq!(response.results.len(), 101);
    assert!(response.results[..100].iter().all(|r| r.rows_affected == 1));
    assert_eq!(
        response.results[100].rows[0].values[0].kind,
        Some(Kind::IntValue(100))
    );

    // The third statement fails: the first two are rolled back with it.
    let statements = vec![
        statement(&app, insert, vec![v::int(200), v::text("a")]),
        statement(
            &app,
            "UPDATE t SET label = $1 WHERE id = $2",
            vec![v::text("changed"), v::int(1)],
        ),
        statement(&app, insert, vec![v::int(1), v::text("duplicate")]),
        statement(&app, insert, vec![v::int(201), v::text("never")]),
    ];
    let status = app
        .query
        .clone()
        .execute_batch(pb::ExecuteBatchRequest {
            statements,
            max_rows: 0,
        })
        .await
        .expect_err("duplicate key");
    assert_eq!(status.code(), Code::AlreadyExists);
    assert!(
        status.message().starts_with("statement 2:"),
        "{}",
        status.message()
    );
    let (_, metadata, _) = error_details(&status);
    assert_eq!(
        metadata.get("statement_index").map(String::as_str),
        Some("2")
    );

    assert_eq!(app.count("t").await, 100);
    let label = app
        .execute("SELECT label FROM t WHERE id = $1", vec![v::int(1)])
        .await
        .expect("label");
    assert_eq!(
        label.rows[0].values[0].kind,
        Some(Kind::TextValue("row 1".into()))
    );

    // A malformed parameter in a later statement is caught before anything runs.
    let statements = vec![
        statement(&app, insert, vec![v::int(300), v::text("a")]),
        statement(
            &app,
            insert,
            vec![v::int(301), v::of(Kind::UuidValue("nope".into()))],
        ),
    ];
    let status = app
        .query
        .clone()
        .execute_batch(pb::ExecuteBatchRequest {
            statements,
            max_rows: 0,
        })
        .await
        .expect_err("bad uuid");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(error_details(&status).2, ["statements[1].params[1]"]);

    // An empty batch is a bad request.
    let status = app
        .query
        .clone()
        .execute_batch(pb::ExecuteBatchRequest {
            statements: vec![],
            max_rows: 0,
        })
        .await
        .expect_err("empty");
    assert_eq!(status.code(), Code::InvalidArgument);

    assert_eq!(app.count("t").await, 100);
    app.stop().await;
}
on_every_backend!(batches_are_all_or_nothing);
