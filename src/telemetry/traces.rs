//! Traces over OTLP: spans made with `tracing` under the target
//! [`TARGET`] (and only those: never the HTTP/2, gRPC or database stacks',
//! so the exporter does not trace itself) go to an OpenTelemetry batch
//! exporter. The caller's W3C `traceparent`/`tracestate` is continued.
//! Off, no layer is interested in [`TARGET`]: every span made there is
//! disabled, which costs a cached check.
//!
//! The span tree: `rpc` (one per call, server kind, `rpc.*`) ⊃ `statement`
//! (one per Query call, client kind, `db.*`; `pool.wait` events on it) —
//! or, for a session, `rpc` (the `Attach` call) ⊃ `session` (covering the
//! session's life, its end reason as `sqlgate.session.end_reason` and the
//! `session.end` event) ⊃ one `statement` per execute.

use opentelemetry::{
    propagation::{Extractor, TextMapPropagator},
    trace::{TraceContextExt, TracerProvider as _},
};
use opentelemetry_otlp::SpanExporter;
use opentelemetry_sdk::{propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{Layer, Registry, filter::Targets};

use super::otlp;
use crate::{config::OtlpSettings, error::Error};

/// The target of every span (and span event) that is exported.
pub(crate) const TARGET: &str = "sqlgate::trace";

/// The export layer, filtered to [`TARGET`].
pub(super) type TraceLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// The tracer provider and its layer, when an OTLP endpoint is set. Must
/// run inside the Tokio runtime (the exporter's channel is made here).
pub(super) fn build(
    settings: &OtlpSettings,
) -> Result<Option<(SdkTracerProvider, TraceLayer)>, String> {
    let Some(endpoint) = otlp::endpoint(settings) else {
        return Ok(None);
    };
    let exporter = endpoint
        .aim(SpanExporter::builder().with_tonic())
        .build()
        .map_err(|err| format!("OTLP span exporter: {err}"))?;
    // The sampler comes from OTEL_TRACES_SAMPLER (parent-based, always on
    // by default), read by the SDK.
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(otlp::resource(settings))
        .build();
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("sqlgate"))
        .with_location(false)
        .with_threads(false)
        .with_level(false)
        // No `busy_ns`/`idle_ns`: they cost two clock reads at every poll
        // of a call's futures (a call's span is entered at each poll) and
        // two attributes on every exported span; a span's own start and
        // end say how long it took.
        .with_tracked_inactivity(false)
        // Entering a span does not make its OpenTelemetry context the
        // thread's current one: nothing in sqlgate reads that (the trace id
        // comes from the span itself), and activating it allocated at every
        // poll of a call's futures.
        .with_context_activation(false)
        .with_filter(only_sqlgate_spans())
        .boxed();
    Ok(Some((provider, layer)))
}

/// The export layer's filter: [`TARGET`] only. A `Targets` filter (not a
/// closure) decides once per call site and tells the subscriber the most
/// verbose level it wants, so the HTTP/2, gRPC and database stacks'
/// `trace!` and `debug!` call sites stay switched off as they are with
/// traces off. A closure filter answers "sometimes" for every call site and
/// no level hint, which made every such call site in h2, hyper and sqlx
/// evaluate its filters on every frame.
fn only_sqlgate_spans() -> Targets {
    Targets::new().with_target(TARGET, tracing::Level::INFO)
}

/// Reads `traceparent`/`tracestate` from gRPC metadata.
struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// The span of one call to `method` (a known `rpc.method`, or `_OTHER`),
/// continuing the caller's trace when its headers carry one. Disabled
/// (and nothing read) when traces are off.
pub(crate) fn rpc_span(method: &'static str, headers: &http::HeaderMap) -> Span {
    let span = tracing::info_span!(
        target: TARGET,
        "rpc",
        otel.name = method,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        rpc.system.name = "grpc",
        rpc.method = method,
        rpc.response.status_code = tracing::field::Empty,
        sqlgate.caller = tracing::field::Empty,
        sqlgate.session.id = tracing::field::Empty,
        sqlgate.tags = tracing::field::Empty,
        sqlgate.session.labels = tracing::field::Empty,
    );
    if !span.is_disabled() {
        let parent = TraceContextPropagator::new().extract(&Headers(headers));
        if parent.span().span_context().is_valid() {
            let _ = span.set_parent(parent);
        }
    }
    span
}

/// The span of one statement (client kind): `db.query.text` is the
/// statement with every literal replaced by `?` (see
/// [`crate::query::fingerprint::sanitized_text`]), never a value.
pub(crate) fn statement_span(
    db_system: &'static str,
    namespace: Option<&str>,
    operation: &'static str,
    sanitized_text: impl FnOnce() -> std::sync::Arc<str>,
) -> Span {
    let span = tracing::info_span!(
        target: TARGET,
        "statement",
        otel.name = operation,
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        db.system.name = db_system,
        db.namespace = tracing::field::Empty,
        db.operation.name = operation,
        db.query.text = tracing::field::Empty,
        db.operation.batch.size = tracing::field::Empty,
        db.response.status_code = tracing::field::Empty,
        db.response.returned_rows = tracing::field::Empty,
        error.type = tracing::field::Empty,
    );
    if !span.is_disabled() {
        span.record("db.query.text", &*sanitized_text());
        if let Some(namespace) = namespace {
            span.record("db.namespace", namespace);
        }
    }
    span
}

/// The span of one session (internal kind), a child of its `Attach`
/// call's span, covering the session's life: its statements are its
/// children, and [`session_ended`] records why it ended.
pub(crate) fn session_span() -> Span {
    tracing::info_span!(
        target: TARGET,
        "session",
        otel.name = "session",
        otel.kind = "internal",
        sqlgate.session.id = tracing::field::Empty,
        sqlgate.session.labels = tracing::field::Empty,
        sqlgate.session.end_reason = tracing::field::Empty,
        sqlgate.session.statements = tracing::field::Empty,
    )
}

/// Records on the current span (a session's, where the session runs)
/// its id.
pub(crate) fn session_opened(session_id: &str) {
    let span = Span::current();
    if !span.is_disabled() {
        span.record("sqlgate.session.id", session_id);
    }
}

/// Records on the current span (a session's, where the session runs)
/// why it ended and how many statements it ran.
pub(crate) fn session_ended(reason: &'static str, statements: u64) {
    let span = Span::current();
    if !span.is_disabled() {
        span.record("sqlgate.session.end_reason", reason);
        span.record("sqlgate.session.statements", statements);
    }
}

/// Records how a statement ended on its span: rows returned, or the
/// error's kind (the gRPC code) and the database's SQLSTATE.
pub(crate) fn statement_done(span: &Span, outcome: Result<usize, &Error>) {
    if span.is_disabled() {
        return;
    }
    match outcome {
        Ok(rows) => {
            span.record("db.response.returned_rows", rows);
        }
        Err(error) => {
            span.record("otel.status_code", "ERROR");
            span.record("error.type", super::names::code_name(error.code()));
            if let Some(sqlstate) = error.sqlstate() {
                span.record("db.response.status_code", sqlstate);
            }
        }
    }
}

/// Records a session's labels (`k=v,…`) on its span, the current one
/// where the session runs.
pub(crate) fn session_labels(labels: &std::collections::BTreeMap<String, String>) {
    let span = Span::current();
    if span.is_disabled() || labels.is_empty() {
        return;
    }
    let text = labels
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(",");
    span.record("sqlgate.session.labels", text);
}

/// The trace id of `span` (32 hex digits), when it is exported.
pub(crate) fn trace_id(span: &Span) -> Option<String> {
    if span.is_disabled() {
        return None;
    }
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}
