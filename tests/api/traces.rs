//! Traces over OTLP, received by an in-process collector (a tonic server
//! implementing the OTLP trace service from `opentelemetry-proto`): the
//! caller's `traceparent` is continued, each call has its server span and
//! each statement a client span under it (a stream's statement span lasts
//! as long as the stream), a session has a span of its own under its
//! call's, with its end reason and its statements as children,
//! and — the canary test — a parameter value sent through Execute,
//! ExecuteStream, ExecuteBatch and a session, in statements that succeed
//! and that fail, reaches no span, no log line at `debug`, no metric and
//! no audit event.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::{
    collector::{
        metrics::v1::{
            ExportMetricsServiceRequest, ExportMetricsServiceResponse,
            metrics_service_server::{MetricsService, MetricsServiceServer},
        },
        trace::v1::{
            ExportTraceServiceRequest, ExportTraceServiceResponse,
            trace_service_server::{TraceService, TraceServiceServer},
        },
    },
    common::v1::{KeyValue, any_value::Value as AnyValue},
    metrics::v1::{Metric, metric::Data, number_data_point},
    trace::v1::{Span, span::SpanKind, status::StatusCode},
};
use sqlgate::grpc::pb::{self, BeginSession, SessionRequest, query_client::QueryClient};
use tempfile::TempDir;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Code, Request, Response, Status};

use crate::{
    binary::{Sqlgate, channel, free_address},
    helpers::v,
    secrets::assert_absent,
    session_client::Session,
};

/// The caller's trace and span, as a W3C `traceparent` carries them.
const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT_SPAN_ID: &str = "b7ad6b7169203331";
/// How long after its call's span a statement's span may end: the task that
/// ran the statement ends it, a moment after the answer went out (it failed
/// about one run in six without slack on a loaded machine).
const SPAN_END_SLACK_NANOS: u64 = 250_000_000;

/// The value no span or log line may carry.
const CANARY: &str = "CANARY-PHI-7f3a91";

/// Keeps every span and metric exported to it.
#[derive(Debug, Default, Clone)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
    metrics: Arc<Mutex<Vec<Metric>>>,
    span_exports: Arc<Mutex<Vec<SpanExport>>>,
}

/// One span export as seen: the resource's `service.name`, the scopes'
/// names and the `x-test-tenant` header.
type SpanExport = (Option<String>, Vec<String>, Option<String>);

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let mut metrics = self.metrics.lock().expect("metrics");
        for resource in request.into_inner().resource_metrics {
            for scope in resource.scope_metrics {
                metrics.extend(scope.metrics);
            }
        }
        Ok(Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let tenant = request
            .metadata()
            .get("x-test-tenant")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let mut spans = self.spans.lock().expect("spans");
        for resource in request.into_inner().resource_spans {
            let service = resource.resource.as_ref().and_then(|resource| {
                resource
                    .attributes
                    .iter()
                    .find(|kv| kv.key == "service.name")
                    .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                        AnyValue::StringValue(name) => Some(name.clone()),
                        _ => None,
                    })
            });
            let scopes = resource
                .scope_spans
                .iter()
                .map(|scope| {
                    scope
                        .scope
                        .as_ref()
                        .map(|s| s.name.clone())
                        .unwrap_or_default()
                })
                .collect();
            self.span_exports
                .lock()
                .expect("exports")
                .push((service, scopes, tenant.clone()));
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Collector {
    /// Serves the collector on a free port; its address.
    async fn start(&self) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(self.clone()))
                .add_service(MetricsServiceServer::new(self.clone()))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        address
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().expect("spans").clone()
    }

    /// Waits (up to 20 s) for a span that `wanted` accepts.
    async fn wait_for(&self, what: &str, wanted: impl Fn(&Span) -> bool) -> Span {
        let started = Instant::now();
        loop {
            if let Some(span) = self.spans().into_iter().find(&wanted) {
                return span;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no {what} span within 20 s; got: {:#?}",
                self.spans()
                    .iter()
                    .map(|span| span.name.clone())
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A span attribute's value as text (strings, integers, booleans).
fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .map(|value| match value {
            AnyValue::StringValue(s) => s.clone(),
            AnyValue::IntValue(i) => i.to_string(),
            AnyValue::BoolValue(b) => b.to_string(),
            AnyValue::DoubleValue(d) => d.to_string(),
            other => format!("{other:?}"),
        })
}

fn is_rpc(method: &'static str) -> impl Fn(&Span) -> bool {
    move |span: &Span| span.name == method && span.kind == SpanKind::Server as i32
}

fn child_of(parent: &Span) -> impl Fn(&Span) -> bool + '_ {
    move |span: &Span| span.parent_span_id == parent.span_id && span.trace_id == parent.trace_id
}

/// A request carrying the caller's trace context.
fn traced<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01")
            .parse()
            .expect("metadata"),
    );
    request
}

/// A sqlgate on a SQLite file of its own, exporting to `collector`,
/// logging at debug, auditing to `audit.jsonl` in its directory, serving
/// metrics at the returned address.
async fn start(
    collector: std::net::SocketAddr,
) -> (Sqlgate, std::net::SocketAddr, std::net::SocketAddr, TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("traces.db").display()
    );
    let endpoint = format!("http://{collector}");
    let audit = dir.path().join("audit.jsonl").display().to_string();
    let metrics = free_address();
    let metrics_listen = metrics.to_string();
    let (sqlgate, address) = Sqlgate::serving(
        &url,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
            ("OTEL_SERVICE_NAME", "sqlgate-under-test"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-test-tenant=blue%20team"),
            ("SQLGATE_LOG_FILTER", "debug"),
            ("SQLGATE_AUDIT__SINK", audit.as_str()),
            ("SQLGATE_METRICS__LISTEN", metrics_listen.as_str()),
        ],
    )
    .await;
    (sqlgate, address, metrics, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_and_statements_make_a_span_tree_under_the_callers_trace_without_values() {
    let collector = Collector::default();
    let (sqlgate, address, metrics, dir) = start(collector.start().await).await;
    let mut query = QueryClient::new(channel(address).await);
    let canary = || vec![v::text(CANARY)];
    let execute = |sql: &str, params: Vec<pb::Value>| pb::ExecuteRequest {
        sql: sql.to_owned(),
        params,
        max_rows: 0,
    };

    query
        .execute(traced(execute(
            "CREATE TABLE notes (body TEXT PRIMARY KEY)",
            vec![],
        )))
        .await
        .expect("create");
    query
        .execute(traced(execute(
            "INSERT INTO notes (body) VALUES ($1)",
            canary(),
        )))
        .await
        .expect("insert");
    let read = query
        .execute(traced(execute(
            "SELECT body FROM notes WHERE body = $1",
            canary(),
        )))
        .await
        .expect("select")
        .into_inner();
    assert_eq!(read.rows.len(), 1);
    let mut stream = query
        .execute_stream(traced(execute(
            "SELECT body, 'CANARY-PHI-literal' AS tag FROM notes WHERE body <> $1 OR body = $1",
            canary(),
        )))
        .await
        .expect("stream")
        .into_inner();
    while stream.message().await.expect("frame").is_some() {}
    let duplicate = query
        .execute(traced(execute(
            "INSERT INTO notes (body) VALUES ($1)",
            canary(),
        )))
        .await
        .expect_err("duplicate");
    assert_eq!(duplicate.code(), Code::AlreadyExists);
    query
        .execute_batch(traced(pb::ExecuteBatchRequest {
            statements: vec![
                pb::BatchStatement {
                    sql: "SELECT count(*) FROM notes WHERE body = $1".to_owned(),
                    params: canary(),
                },
                pb::BatchStatement {
                    sql: "SELECT $1".to_owned(),
                    params: canary(),
                },
            ],
            max_rows: 0,
        }))
        .await
        .expect("batch");
    let failed_batch = query
        .execute_batch(traced(pb::ExecuteBatchRequest {
            statements: vec![
                pb::BatchStatement {
                    sql: "SELECT $1".to_owned(),
                    params: canary(),
                },
                pb::BatchStatement {
                    sql: "INSERT INTO notes (body) VALUES ($1)".to_owned(),
                    params: canary(),
                },
            ],
            max_rows: 0,
        }))
        .await
        .expect_err("a duplicate in a batch");
    assert_eq!(failed_batch.code(), Code::AlreadyExists);
    let mut session = Session::begin_on(channel(address).await, BeginSession::default())
        .await
        .expect("begin");
    session
        .send(SessionRequest::execute(
            1,
            "SELECT body FROM notes WHERE body = $1".to_owned(),
            canary(),
        ))
        .await;
    session.outcome(1).await.expect("a session's select");
    session
        .send(SessionRequest::execute(
            2,
            "INSERT INTO notes (body) VALUES ($1)".to_owned(),
            canary(),
        ))
        .await;
    session
        .outcome(2)
        .await
        .expect_err("a duplicate in a session");
    session.rollback().await;

    // The call's span continues the caller's trace.
    let select = collector
        .wait_for("Execute", |span| {
            is_rpc("sqlgate.v1.Query/Execute")(span)
                && collector.spans().iter().any(|child| {
                    child_of(span)(child)
                        && attribute(child, "db.operation.name").as_deref() == Some("SELECT")
                })
        })
        .await;
    assert_eq!(hex(&select.trace_id), TRACE_ID);
    assert_eq!(hex(&select.parent_span_id), PARENT_SPAN_ID);
    // Every export names the service and the scope, and carries the
    // configured headers.
    let exports = collector.span_exports.lock().expect("exports").clone();
    assert!(!exports.is_empty());
    for (service, scopes, tenant) in exports {
        assert_eq!(service.as_deref(), Some("sqlgate-under-test"));
        assert_eq!(scopes, vec!["sqlgate".to_owned()]);
        assert_eq!(tenant.as_deref(), Some("blue team"));
    }
    assert_eq!(
        attribute(&select, "rpc.system.name").as_deref(),
        Some("grpc")
    );
    assert_eq!(
        attribute(&select, "rpc.response.status_code").as_deref(),
        Some("OK")
    );
    assert!(attribute(&select, "sqlgate.caller").is_some_and(|c| c.starts_with("127.0.0.1:")));
    // Its statement is its child, a client span with the text's shape only.
    let statement = collector
        .wait_for("SELECT statement", child_of(&select))
        .await;
    assert_eq!(statement.kind, SpanKind::Client as i32);
    assert_eq!(
        attribute(&statement, "db.system.name").as_deref(),
        Some("sqlite")
    );
    // The database the URL names (SQLite's: the file's name, no path).
    assert_eq!(
        attribute(&statement, "db.namespace").as_deref(),
        Some("traces.db")
    );
    assert_eq!(
        attribute(&statement, "db.query.text").as_deref(),
        Some("select body from notes where body = $1")
    );
    assert_eq!(
        attribute(&statement, "db.response.returned_rows").as_deref(),
        Some("1")
    );
    assert!(statement.start_time_unix_nano >= select.start_time_unix_nano);
    // The wait for a pooled connection happened in the task that ran the
    // statement, with the statement's span in scope: its event is there.
    assert_pool_wait(&statement);
    // The statement's span ends in the task that ran it, which may finish
    // a moment after the call's answer went out: allow that moment.
    assert!(statement.end_time_unix_nano <= select.end_time_unix_nano + SPAN_END_SLACK_NANOS);

    // A stream: its statement span covers the stream, inside the call's.
    let streamed = collector
        .wait_for("ExecuteStream", is_rpc("sqlgate.v1.Query/ExecuteStream"))
        .await;
    assert_eq!(hex(&streamed.trace_id), TRACE_ID);
    let streamed_statement = collector
        .wait_for("stream statement", child_of(&streamed))
        .await;
    assert_eq!(
        attribute(&streamed_statement, "db.query.text").as_deref(),
        Some("select body, ? as tag from notes where body <> $1 or body = $1")
    );
    assert!(
        streamed_statement.end_time_unix_nano <= streamed.end_time_unix_nano + SPAN_END_SLACK_NANOS
    );
    assert_pool_wait(&streamed_statement);

    // A failing statement: the database's code on the statement span.
    let failed = collector
        .wait_for("failed Execute", |span| {
            is_rpc("sqlgate.v1.Query/Execute")(span)
                && attribute(span, "rpc.response.status_code").as_deref() == Some("ALREADY_EXISTS")
        })
        .await;
    let failed_statement = collector
        .wait_for("failed statement", child_of(&failed))
        .await;
    assert_eq!(
        attribute(&failed_statement, "error.type").as_deref(),
        Some("ALREADY_EXISTS")
    );
    assert!(attribute(&failed_statement, "db.response.status_code").is_some());
    // The statement failed: its span's status says so; the call's does
    // not (ALREADY_EXISTS is the caller's doing, not the server's).
    assert_eq!(
        failed_statement.status.as_ref().map(|status| status.code),
        Some(StatusCode::Error as i32)
    );
    assert_ne!(
        failed.status.as_ref().map(|status| status.code),
        Some(StatusCode::Error as i32)
    );

    // A batch: one span, its size.
    let batch = collector
        .wait_for("ExecuteBatch", is_rpc("sqlgate.v1.Query/ExecuteBatch"))
        .await;
    let batch_statement = collector
        .wait_for("batch statement", child_of(&batch))
        .await;
    assert_eq!(
        attribute(&batch_statement, "db.operation.batch.size").as_deref(),
        Some("2")
    );
    // Each statement of a batch: a span of its own under the batch's,
    // with its own outcome and rows.
    let under_a_batch = |span: &Span| {
        collector.spans().iter().any(|parent| {
            attribute(parent, "db.operation.name").as_deref() == Some("BATCH")
                && child_of(parent)(span)
        })
    };
    let failed_in_batch = collector
        .wait_for("a batch's failing statement", |span| {
            attribute(span, "error.type").as_deref() == Some("ALREADY_EXISTS")
                && under_a_batch(span)
        })
        .await;
    assert_eq!(
        attribute(&failed_in_batch, "db.query.text").as_deref(),
        Some("insert into notes (body) values ($1)")
    );
    let counted_in_batch = collector
        .wait_for("a batch's statement", |span| {
            attribute(span, "db.query.text").as_deref()
                == Some("select count(*) from notes where body = $1")
                && under_a_batch(span)
        })
        .await;
    assert_eq!(
        attribute(&counted_in_batch, "db.response.returned_rows").as_deref(),
        Some("1")
    );
    assert!(attribute(&counted_in_batch, "error.type").is_none());

    // A session: a span of its own under its call's, covering its life
    // and saying how it ended.
    let attach = collector
        .wait_for("Attach", is_rpc("sqlgate.v1.Sessions/Attach"))
        .await;
    let session_span = collector
        .wait_for("session", |span| {
            child_of(&attach)(span) && span.name == "session"
        })
        .await;
    assert_eq!(session_span.kind, SpanKind::Internal as i32);
    assert_eq!(
        attribute(&session_span, "sqlgate.session.end_reason").as_deref(),
        Some("rollback")
    );
    assert_eq!(
        attribute(&session_span, "sqlgate.session.statements").as_deref(),
        Some("2")
    );
    assert_eq!(
        attribute(&session_span, "sqlgate.session.id"),
        attribute(&attach, "sqlgate.session.id")
    );
    assert!(attribute(&session_span, "sqlgate.session.id").is_some());
    // It starts inside the call's; it ends as the session's task does,
    // which may be a moment after the client heard the end and the
    // call's response closed.
    assert!(session_span.start_time_unix_nano >= attach.start_time_unix_nano);
    let end = session_span
        .events
        .iter()
        .find(|event| event.name == "session.end")
        .unwrap_or_else(|| panic!("no session.end event: {session_span:#?}"));
    let reason = end
        .attributes
        .iter()
        .find(|kv| kv.key == "end_reason")
        .and_then(|kv| kv.value.as_ref()?.value.as_ref());
    assert_eq!(reason, Some(&AnyValue::StringValue("rollback".to_owned())));
    // Its statements are children of the session's span.
    let session_statement = collector
        .wait_for("session statement", |span| {
            child_of(&session_span)(span) && attribute(span, "error.type").is_some()
        })
        .await;
    assert_eq!(
        attribute(&session_statement, "db.query.text").as_deref(),
        Some("insert into notes (body) values ($1)")
    );
    assert_eq!(
        attribute(&session_statement, "db.namespace").as_deref(),
        Some("traces.db")
    );

    // Nor in the metrics, nor in the audit trail (which did record the
    // statements, the failing ones included).
    let (status, text) = crate::prometheus::http_get(metrics, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        !text.contains("CANARY-PHI"),
        "a value reached the metrics: {text}"
    );
    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).expect("audit trail");
    assert!(audit.contains("\"code\":\"ALREADY_EXISTS\""), "{audit}");
    assert!(
        !audit.contains("CANARY-PHI"),
        "a value reached the audit trail: {audit}"
    );

    // No value anywhere: not in a span, not in the log at debug. (The
    // final export at shutdown does not hold the exit.)
    let (status, output) = sqlgate.stop().await;
    assert!(status.success(), "{status:?}");
    let exported = format!("{:?}", collector.spans());
    assert!(
        !exported.contains("CANARY-PHI"),
        "a value reached a span: {exported}"
    );
    assert_absent("CANARY-PHI", &output, "a parameter value or literal");
    // The call line names the trace and the call's span.
    let select_span_id = hex(&select.span_id);
    assert!(
        output.iter().any(|line| line.contains("call done")
            && line.contains(TRACE_ID)
            && line.contains(&select_span_id)),
        "no call line carries the trace id and the call's span id {select_span_id}"
    );
}

/// `span` carries one `pool.wait` event, for a wait that did not time out.
fn assert_pool_wait(span: &Span) {
    let waits: Vec<_> = span
        .events
        .iter()
        .filter(|event| event.name == "pool.wait")
        .collect();
    assert_eq!(waits.len(), 1, "pool.wait events of {span:#?}");
    let timed_out = waits[0]
        .attributes
        .iter()
        .find(|kv| kv.key == "timed_out")
        .and_then(|kv| kv.value.as_ref()?.value.as_ref());
    assert_eq!(timed_out, Some(&AnyValue::BoolValue(false)));
    assert!(
        waits[0].attributes.iter().any(|kv| kv.key == "wait_ms"),
        "{span:#?}"
    );
}

/// Whether `attributes` hold `key` = the string `value`.
fn has(attributes: &[KeyValue], key: &str, value: &str) -> bool {
    attributes.iter().any(|kv| {
        kv.key == key
            && kv.value.as_ref().and_then(|v| v.value.as_ref())
                == Some(&AnyValue::StringValue(value.to_owned()))
    })
}

impl Collector {
    /// Waits (up to 20 s) until an export of metric `name` gives `wanted`
    /// a data point it accepts (exports are cumulative: later ones count
    /// everything so far).
    async fn wait_for_metric(&self, name: &str, wanted: impl Fn(&Data) -> bool) {
        let started = Instant::now();
        loop {
            let metrics = self.metrics.lock().expect("metrics").clone();
            if metrics
                .iter()
                .filter(|metric| metric.name == name)
                .filter_map(|metric| metric.data.as_ref())
                .any(&wanted)
            {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no fitting {name} within 20 s: {:#?}",
                metrics
                    .iter()
                    .filter(|m| m.name == name)
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_a_known_workload_arrive_over_otlp() {
    let collector = Collector::default();
    let endpoint = format!("http://{}", collector.start().await);
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("m.db").display());
    let (sqlgate, address) = Sqlgate::serving(
        &url,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_METRIC_EXPORT_INTERVAL", "200"),
            ("SQLGATE_POOL__MAX_CONNECTIONS", "7"),
        ],
    )
    .await;
    let mut query = QueryClient::new(channel(address).await);
    for _ in 0..3 {
        query
            .execute(pb::ExecuteRequest {
                sql: "SELECT 1".to_owned(),
                ..Default::default()
            })
            .await
            .expect("select");
    }
    query
        .execute(pb::ExecuteRequest {
            sql: "SELEC 1".to_owned(),
            ..Default::default()
        })
        .await
        .expect_err("syntax");
    // Session statements are database operations too.
    let mut session = Session::begin_on(channel(address).await, BeginSession::default())
        .await
        .expect("begin");
    for request_id in 1..=2 {
        session
            .send(SessionRequest::execute(
                request_id,
                "SELECT 1".to_owned(),
                vec![],
            ))
            .await;
        session
            .outcome(request_id)
            .await
            .expect("a session's select");
    }
    session.rollback().await;
    let calls = |code: &'static str, count: u64| {
        move |data: &Data| match data {
            Data::Histogram(histogram) => histogram.data_points.iter().any(|point| {
                has(&point.attributes, "rpc.method", "sqlgate.v1.Query/Execute")
                    && has(&point.attributes, "rpc.response.status_code", code)
                    && point.count == count
            }),
            _ => false,
        }
    };
    collector
        .wait_for_metric("rpc.server.call.duration", calls("OK", 3))
        .await;
    collector
        .wait_for_metric("rpc.server.call.duration", calls("INVALID_ARGUMENT", 1))
        .await;
    collector
        .wait_for_metric("db.client.connection.max", |data| match data {
            Data::Sum(sum) => sum
                .data_points
                .iter()
                .any(|point| point.value == Some(number_data_point::Value::AsInt(7))),
            _ => false,
        })
        .await;
    collector
        .wait_for_metric("db.client.operation.duration", |data| match data {
            Data::Histogram(histogram) => histogram.data_points.iter().any(|point| {
                // Three Query calls and two session statements.
                has(&point.attributes, "db.operation.name", "SELECT") && point.count == 5
            }),
            _ => false,
        })
        .await;
    let _ = sqlgate.stop().await;
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// On PostgreSQL a statement's span names the database the URL names
/// (`db.namespace`) and the system (`postgresql`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_statement_span_names_its_database() {
    let Some(db) =
        crate::test_database::TestDatabase::create(crate::helpers::Backend::Postgres).await
    else {
        return;
    };
    let collector = Collector::default();
    let endpoint = format!("http://{}", collector.start().await);
    let (_sqlgate, address) = Sqlgate::serving(
        &db.url,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ],
    )
    .await;
    QueryClient::new(channel(address).await)
        .execute(traced(pb::ExecuteRequest {
            sql: "SELECT 1 AS one".to_owned(),
            ..Default::default()
        }))
        .await
        .expect("select");
    let statement = collector
        .wait_for("a statement span", |span| {
            attribute(span, "db.system.name").is_some()
        })
        .await;
    assert_eq!(
        attribute(&statement, "db.system.name").as_deref(),
        Some("postgresql")
    );
    assert_eq!(
        attribute(&statement, "db.namespace").as_deref(),
        Some(db.name.as_str())
    );
}

/// A collector that is not there: calls go on as usual, the spans are
/// dropped, and one warning (not one per batch) tells the operator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_collector_is_reported_once_and_calls_go_on() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    // Nothing listens there.
    let endpoint = format!("http://{}", free_address());
    let (sqlgate, address) = Sqlgate::serving(
        &url,
        &[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "20"),
            ("SQLGATE_LOG_FILTER", "info"),
        ],
    )
    .await;
    let mut query = QueryClient::new(channel(address).await);
    let warnings = |output: &[String]| {
        output
            .iter()
            .filter(|line| line.contains("span export failed"))
            .count()
    };
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut calls = 0;
    while warnings(&sqlgate.output()) == 0 {
        assert!(
            std::time::Instant::now() < until,
            "no warning after {calls} calls: {:?}",
            sqlgate.output()
        );
        let answer = crate::helpers::select_one(&mut query).await;
        assert_eq!(answer, Ok(1), "a call while the collector is away");
        calls += 1;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // More failed batches within the minute: no more warnings.
    for _ in 0..10 {
        assert_eq!(crate::helpers::select_one(&mut query).await, Ok(1));
        tokio::time::sleep(std::time::Duration::from_millis(40)).await;
    }
    let (status, output) = sqlgate.stop().await;
    assert!(status.success(), "{status:?}");
    assert_eq!(warnings(&output), 1, "{output:?}");
}
