//! The audit trail: one JSON line per statement (Execute, ExecuteStream,
//! each statement of a batch, each statement of a session) and per
//! session end, in a file of its own — who, which session, fingerprint,
//! operation, tables, rows, outcome, request tags — and never a value
//! (nor does the value reach the metrics, served at the same time).

use std::time::{Duration, Instant};

use serde_json::Value;
use sqlgate::grpc::pb::{self, BeginSession, SessionRequest};
use tonic::Code;

use crate::{
    helpers::{Backend, TestApp, spawn_app_with, v},
    session_client::Session,
};

/// The value no audit line may carry.
const CANARY: &str = "CANARY-PHI-a9c2";

/// Waits (up to 10 s) until the trail has at least `count` lines; all of them, parsed.
async fn lines(path: &std::path::Path, count: usize) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        if lines.len() >= count {
            assert!(
                !text.contains("CANARY-PHI"),
                "a value reached the audit trail:\n{text}"
            );
            return lines
                .iter()
                .map(|line| serde_json::from_str(line).expect("each line is JSON"))
                .collect();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{} audit lines, expected {count}:\n{text}",
            lines.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn execute(app: &TestApp, sql: &str, params: Vec<pb::Value>) -> tonic::Request<pb::ExecuteRequest> {
    tonic::Request::new(pb::ExecuteRequest {
        sql: app.sql(sql),
        params,
        max_rows: 0,
    })
}

async fn statements_and_sessions_are_audited_without_values(backend: Backend) {
    let dir = tempfile::tempdir().expect("temp dir");
    let trail = dir.path().join("audit.jsonl");
    let sink = trail.display().to_string();
    let Some(app) = spawn_app_with(backend, |settings| {
        settings.audit.sink = sink;
        settings.metrics.listen = Some("127.0.0.1:0".parse().expect("address"));
    })
    .await
    else {
        return;
    };
    let mut query = app.query.clone();
    let canary = || vec![v::text(CANARY)];
    query
        .execute(execute(
            &app,
            "CREATE TABLE patients (name VARCHAR(64) PRIMARY KEY)",
            vec![],
        ))
        .await
        .expect("create");
    query
        .execute(execute(
            &app,
            "INSERT INTO patients (name) VALUES ($1)",
            canary(),
        ))
        .await
        .expect("insert");
    let mut tagged = execute(&app, "SELECT name FROM patients WHERE name = $1", canary());
    tagged
        .metadata_mut()
        .insert("sqlgate-tag", "checkout-42".parse().expect("tag"));
    tagged
        .metadata_mut()
        .append("sqlgate-tag", "has space".parse().expect("tag"));
    query.execute(tagged).await.expect("select");
    let duplicate = query
        .execute(execute(
            &app,
            "INSERT INTO patients (name) VALUES ($1)",
            canary(),
        ))
        .await
        .expect_err("duplicate");
    assert_eq!(duplicate.code(), Code::AlreadyExists);
    let mut stream = query
        .execute_stream(execute(&app, "SELECT name FROM patients", vec![]))
        .await
        .expect("stream")
        .into_inner();
    while stream.message().await.expect("frame").is_some() {}
    query
        .execute_batch(pb::ExecuteBatchRequest {
            statements: vec![
                pb::BatchStatement {
                    sql: app.sql("UPDATE patients SET name = $1 WHERE name = $2"),
                    params: [canary(), canary()].concat(),
                },
                pb::BatchStatement {
                    sql: app.sql("DELETE FROM patients WHERE name = $1"),
                    params: canary(),
                },
            ],
            max_rows: 0,
        })
        .await
        .expect("batch");
    let mut session = Session::begin_tagged(
        app.channel.clone(),
        BeginSession::labelled([("service", "billing")]),
        &["nightly-job"],
    )
    .await
    .expect("begin");
    // The Attach call's tags show in ListSessions.
    let listed = crate::helpers::list_sessions(&app).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].tags, ["nightly-job"]);
    let session_id = session.id.clone();
    session
        .send(SessionRequest::execute(
            7,
            app.sql("INSERT INTO patients (name) VALUES ($1)"),
            canary(),
        ))
        .await;
    session.outcome(7).await.expect("a session's insert");
    session.commit().await;

    let events = lines(&trail, 9).await;
    let statement = |sql_operation: &str, method: &str| -> Vec<&Value> {
        events
            .iter()
            .filter(|e| {
                e["event"] == "statement"
                    && e["operation"] == sql_operation
                    && e["method"] == method
            })
            .collect()
    };
    let select = statement("SELECT", "sqlgate.v1.Query/Execute");
    assert_eq!(select.len(), 1, "{events:#?}");
    let select = select[0];
    assert_eq!(select["tables"], serde_json::json!(["patients"]));
    assert_eq!(select["rows_returned"], 1);
    assert_eq!(select["code"], "OK");
    assert_eq!(
        select["tags"],
        serde_json::json!(["checkout-42"]),
        "a tag with a space is dropped"
    );
    assert!(
        select["caller"]
            .as_str()
            .is_some_and(|c| c.starts_with("127.0.0.1:"))
    );
    assert!(
        select["fingerprint"]
            .as_str()
            .is_some_and(|f| f.len() == 16)
    );
    assert!(chrono::DateTime::parse_from_rfc3339(select["time"].as_str().expect("time")).is_ok());

    let inserts = statement("INSERT", "sqlgate.v1.Query/Execute");
    assert_eq!(inserts.len(), 2, "{events:#?}");
    assert_eq!(inserts[0]["rows_affected"], 1);
    assert_eq!(inserts[1]["code"], "ALREADY_EXISTS");
    assert!(inserts[1]["sqlstate"].is_string(), "{:?}", inserts[1]);

    let streamed = statement("SELECT", "sqlgate.v1.Query/ExecuteStream");
    assert_eq!(streamed.len(), 1, "{events:#?}");
    assert_eq!(streamed[0]["rows_returned"], 1);

    let updated = statement("UPDATE", "sqlgate.v1.Query/ExecuteBatch");
    assert_eq!(updated.len(), 1, "{events:#?}");
    let deleted = statement("DELETE", "sqlgate.v1.Query/ExecuteBatch");
    assert_eq!(deleted.len(), 1, "{events:#?}");
    assert_eq!(deleted[0]["rows_affected"], 1);
    // Each statement of a batch that committed has its own duration.
    assert_ne!(
        updated[0]["duration_ms"], deleted[0]["duration_ms"],
        "{events:#?}"
    );

    let in_session = statement("INSERT", "sqlgate.v1.Sessions/Attach");
    assert_eq!(in_session.len(), 1, "{events:#?}");
    assert_eq!(in_session[0]["session"], session_id.as_str());
    assert_eq!(in_session[0]["rows_affected"], 1);
    assert_eq!(in_session[0]["tags"], serde_json::json!(["nightly-job"]));
    let ended: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "session_end")
        .collect();
    assert_eq!(ended.len(), 1, "{events:#?}");
    assert_eq!(ended[0]["session"], session_id.as_str());
    assert_eq!(ended[0]["reason"], "commit");
    assert_eq!(ended[0]["statements"], 1);
    assert_eq!(ended[0]["labels"]["service"], "billing");
    let metrics = app.metrics_address.expect("metrics served");
    let (status, text) = crate::prometheus::http_get(metrics, "/metrics").await;
    assert_eq!(status, 200);
    assert!(text.contains("sqlgate_session_ended"), "{text}");
    assert!(
        !text.contains("CANARY-PHI"),
        "a value reached the metrics: {text}"
    );
    let _ = app.stop().await;
}

crate::on_every_backend!(statements_and_sessions_are_audited_without_values);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_file_that_cannot_be_written_stops_start_up() {
    let settings = sqlgate::config::Settings {
        listen: "127.0.0.1:0".parse().expect("address"),
        database_url: "sqlite::memory:".to_owned(),
        audit: sqlgate::config::AuditSettings {
            sink: "/nonexistent-directory/audit.jsonl".to_owned(),
            ..Default::default()
        },
        ..Default::default()
    };
    let error = sqlgate::server::Application::build(settings)
        .await
        .expect_err("refused");
    assert!(error.to_string().contains("audit"), "{error}");
}

/// The trail names the role every statement ran with — for a caller
/// without an identity, `roles.default`, the same in Query calls and in
/// sessions — and a call refused before its statement ran (a parameter
/// that does not decode) still has its event, with its outcome code and
/// without the values it carried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_names_the_effective_role_and_refused_calls_are_audited() {
    let dir = tempfile::tempdir().expect("temp dir");
    let trail = dir.path().join("audit.jsonl");
    let sink = trail.display().to_string();
    let Some(app) = spawn_app_with(Backend::Sqlite, |settings| {
        settings.audit.sink = sink;
        settings.roles.default = sqlgate::grpc::identity::Role::Writer;
    })
    .await
    else {
        return;
    };
    let mut query = app.query.clone();
    query
        .execute(execute(&app, "SELECT 1", vec![]))
        .await
        .expect("select");
    let refused = query
        .execute(execute(
            &app,
            "SELECT $1, $2",
            vec![v::text(CANARY), pb::Value { kind: None }],
        ))
        .await
        .expect_err("a parameter without a value");
    assert_eq!(refused.code(), Code::InvalidArgument);
    let mut stream_refused = execute(&app, "SELECT $1", vec![pb::Value { kind: None }]);
    stream_refused.get_mut().sql = app.sql("SELECT $1 AS streamed");
    let streamed = query.execute_stream(stream_refused).await;
    assert_eq!(streamed.expect_err("refused").code(), Code::InvalidArgument);
    let mut session = Session::begin_on(app.channel.clone(), BeginSession::default())
        .await
        .expect("begin");
    session
        .send(SessionRequest::execute(1, app.sql("SELECT 2"), vec![]))
        .await;
    session.outcome(1).await.expect("a session's select");
    // A session request refused while decoding has its event too.
    session
        .send(SessionRequest::execute(
            2,
            app.sql("SELECT $1 AS undecoded"),
            vec![v::text(CANARY), pb::Value { kind: None }],
        ))
        .await;
    session
        .outcome(2)
        .await
        .expect_err("a parameter without a value");
    session.rollback().await;

    let events = lines(&trail, 6).await;
    for event in &events {
        assert_eq!(event["role"], "writer", "{event:#?}");
    }
    let refused: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "statement" && e["code"] == "INVALID_ARGUMENT")
        .collect();
    assert_eq!(refused.len(), 3, "{events:#?}");
    assert_eq!(refused[0]["method"], "sqlgate.v1.Query/Execute");
    assert_eq!(refused[0]["operation"], "SELECT");
    assert!(
        refused[0]["fingerprint"]
            .as_str()
            .is_some_and(|f| f.len() == 16),
        "{events:#?}"
    );
    assert_eq!(refused[1]["method"], "sqlgate.v1.Query/ExecuteStream");
    assert_eq!(refused[2]["method"], "sqlgate.v1.Sessions/Attach");
    assert_eq!(refused[2]["operation"], "SELECT");
    assert!(refused[2]["session"].is_string(), "{events:#?}");
    let _ = app.stop().await;
}
