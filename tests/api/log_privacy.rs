//! What reaches the logs: one line per call, with its method, caller,
//! fingerprint, rows and time, and never a parameter value or a literal of
//! the statement. The real binary, its whole output captured.

use sqlgate::grpc::pb::{self, query_client::QueryClient};
use tonic::Code;

use crate::{
    binary::{Sqlgate, channel},
    helpers::{Backend, spawn_app, v},
    secrets::assert_absent,
};

/// A text no log line may carry, sent as a parameter, and one written as a
/// literal in the statement text.
const PARAMETER_SECRET: &str = "PATIENT-SECRET-1234";
const LITERAL_SECRET: &str = "LITERAL-SECRET-5678";

async fn parameter_values_never_reach_the_logs(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let url = app.db.url.clone();
    let sql = |text: &str| app.sql(text);
    let statements = (
        sql("CREATE TABLE patients (name VARCHAR(64) PRIMARY KEY)"),
        sql("INSERT INTO patients (name) VALUES ($1)"),
        sql("SELECT name FROM patients WHERE name = $1"),
        sql(&format!(
            "INSERT INTO patients (name) VALUES ('{LITERAL_SECRET}'), ('{LITERAL_SECRET}')"
        )),
    );
    let _database = app.stop().await;
    let (sqlgate, address) = Sqlgate::serving(&url, &[("SQLGATE_LOG_FILTER", "debug")]).await;
    let channel = channel(address).await;
    let mut query = QueryClient::new(channel.clone());
    let call = |sql: &str, params: Vec<pb::Value>| pb::ExecuteRequest {
        sql: sql.to_owned(),
        params,
        max_rows: 0,
    };
    let secret = || vec![v::text(PARAMETER_SECRET)];

    query
        .execute(call(&statements.0, vec![]))
        .await
        .expect("create");
    // Succeeds, and the value comes back to the caller who sent it.
    query
        .execute(call(&statements.1, secret()))
        .await
        .expect("insert");
    let selected = query
        .execute(call(&statements.2, secret()))
        .await
        .expect("select")
        .into_inner();
    assert_eq!(selected.rows.len(), 1);
    let mut stream = query
        .execute_stream(call(&statements.2, secret()))
        .await
        .expect("stream")
        .into_inner();
    while let Some(frame) = stream.message().await.expect("frame") {
        drop(frame);
    }
    // Fails: a duplicate of the secret value.
    let duplicate = query
        .execute(call(&statements.1, secret()))
        .await
        .expect_err("duplicate");
    assert_eq!(duplicate.code(), Code::AlreadyExists, "{duplicate:?}");
    // What the caller may see is the database's own message: MySQL quotes
    // the duplicate value back to the caller who sent it; PostgreSQL does not.
    assert_eq!(
        duplicate.message().contains(PARAMETER_SECRET),
        backend == Backend::MySql,
        "{duplicate:?}"
    );
    // Fails in a batch, with the literal in the statement text too.
    let status = query
        .execute_batch(pb::ExecuteBatchRequest {
            statements: vec![
                pb::BatchStatement {
                    sql: statements.1.clone(),
                    params: secret(),
                },
                pb::BatchStatement {
                    sql: statements.3.clone(),
                    params: vec![],
                },
            ],
            max_rows: 0,
        })
        .await
        .expect_err("duplicates in a batch");
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    let (status, output) = sqlgate.stop().await;
    assert_eq!(status.code(), Some(0), "{output:?}");
    // One line per call, at least, was written: the logs were on.
    let calls = output
        .iter()
        .filter(|line| line.contains("call done") || line.contains("call failed"))
        .count();
    assert!(calls >= 6, "{calls} call lines in {output:?}");
    assert_absent(PARAMETER_SECRET, &output, "a parameter value");
    assert_absent(LITERAL_SECRET, &output, "a literal of the statement");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_parameter_values_never_reach_the_logs() {
    parameter_values_never_reach_the_logs(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_parameter_values_never_reach_the_logs() {
    parameter_values_never_reach_the_logs(Backend::MySql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_each_query_call_logs_one_line_with_method_caller_fingerprint_rows_and_time() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("logs.db").display());
    let (sqlgate, address) = Sqlgate::serving(&url, &[("SQLGATE_LOG_FILTER", "info")]).await;
    let mut query = QueryClient::new(channel(address).await);
    let run = |sql: &str, params: Vec<pb::Value>| pb::ExecuteRequest {
        sql: sql.to_owned(),
        params,
        max_rows: 0,
    };
    query
        .execute(run("CREATE TABLE t (id INTEGER, note TEXT)", vec![]))
        .await
        .expect("create");
    query
        .execute(run(
            "INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c')",
            vec![],
        ))
        .await
        .expect("insert");
    let select = "SELECT id FROM t WHERE id >= $1";
    query
        .execute(run(select, vec![v::int(1)]))
        .await
        .expect("select");
    let failing = "SELECT * FROM missing WHERE id = $1";
    query
        .execute(run(failing, vec![v::int(1)]))
        .await
        .expect_err("no such table");
    let (status, output) = sqlgate.stop().await;
    assert!(status.success(), "{output:?}");

    let lines_for = |fingerprint: &str| -> Vec<String> {
        output
            .iter()
            .filter(|line| line.contains(&format!("fingerprint=\"{fingerprint}\"")))
            .cloned()
            .collect()
    };
    let done = lines_for(&sqlgate::query::fingerprint::fingerprint(select));
    assert_eq!(done.len(), 1, "one line for the select: {output:?}");
    let line = &done[0];
    for part in [
        "call done",
        "method=\"Execute\"",
        "peer=127.0.0.1:",
        "rows=3",
        "elapsed_ms=",
    ] {
        assert!(line.contains(part), "{part:?} missing from {line}");
    }
    let failed = lines_for(&sqlgate::query::fingerprint::fingerprint(failing));
    assert_eq!(failed.len(), 1, "one line for the failed call: {output:?}");
    for part in ["call failed", "code=InvalidArgument", "peer=127.0.0.1:"] {
        assert!(
            failed[0].contains(part),
            "{part:?} missing from {}",
            failed[0]
        );
    }
}
