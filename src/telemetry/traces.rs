//! Traces over OTLP, made with the OpenTelemetry API directly: a span is a
//! [`TraceSpan`], started with its parent named (or, inside a call's
//! work, the span in scope) and exported by the SDK's batch exporter when
//! its last handle is dropped. The caller's W3C `traceparent`/`tracestate`
//! is continued.
//!
//! Not through `tracing` on purpose: a `tracing` span is entered and left
//! at every poll of the futures it instruments, and each enter, exit and
//! field record went through the subscriber's registry once per layer and
//! through the OpenTelemetry bridge's conversions — most of tracing's cost
//! per call (callgrind: ~86,000 instructions over 127,000 for a point
//! select). Here a span costs its start, its attributes and its export;
//! putting it in scope for a future's polls ([`TraceSpan::scope`]) is a
//! thread-local push and pop.
//!
//! Off (no OTLP endpoint), there is no tracer: every [`TraceSpan`] is
//! empty, and starting one is a check of an unset cell.
//!
//! The span tree: `rpc` (one per call, server kind, `rpc.*`) ⊃ `statement`
//! (one per Query call, client kind, `db.*`; `pool.wait` events on it;
//! a batch's statements each a child of the batch's) — or, for a session,
//! `rpc` (the `Attach` call) ⊃ `session` (covering the session's life, its
//! end reason as `sqlgate.session.end_reason` and the `session.end`
//! event) ⊃ one `statement` per execute.

use std::{
    borrow::Cow,
    pin::Pin,
    sync::OnceLock,
    task::{Context as TaskContext, Poll},
};

use opentelemetry::{
    Context, KeyValue, Value,
    propagation::{Extractor, TextMapPropagator},
    trace::{SpanBuilder, SpanKind, Status, TraceContextExt, Tracer, TracerProvider as _},
};
use opentelemetry_sdk::{
    propagation::TraceContextPropagator,
    trace::{SdkTracer, SdkTracerProvider},
};
use pin_project_lite::pin_project;

use super::{otlp, span_export::OtlpSpanExporter};
use crate::{config::OtlpSettings, error::Error};

/// The process's tracer, set once when traces are on. A process serves
/// one configuration, as the log does (its subscriber is process-wide).
static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// The tracer provider, when an OTLP endpoint is set: its tracer becomes
/// the process's (a second call keeps the first tracer). Must run inside
/// the Tokio runtime (the exporter's channel is made here).
pub(super) fn build(settings: &OtlpSettings) -> Result<Option<SdkTracerProvider>, String> {
    let Some(endpoint) = otlp::endpoint(settings, otlp::Signal::Traces) else {
        return Ok(None);
    };
    let exporter = OtlpSpanExporter::new(endpoint)?;
    // The sampler comes from OTEL_TRACES_SAMPLER (parent-based, always on
    // by default), read by the SDK.
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(otlp::resource(settings))
        .build();
    let _ = TRACER.set(provider.tracer("sqlgate"));
    Ok(Some(provider))
}

/// One exported span, or nothing (traces off, or a span that is not
/// sampled and so records nothing). Cheap to clone: clones are handles to
/// the same span, which ends when the last one is dropped.
#[derive(Clone, Default)]
pub(crate) struct TraceSpan(Option<Context>);

impl std::fmt::Debug for TraceSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.span_ids() {
            Some((trace, span)) => write!(f, "TraceSpan({trace}/{span})"),
            None => f.write_str("TraceSpan(off)"),
        }
    }
}

impl TraceSpan {
    /// Starts a span named `name` of `kind` under `parent` (an empty
    /// context: a new trace), with `attributes`; empty when traces are off.
    fn start(
        name: impl Into<Cow<'static, str>>,
        kind: SpanKind,
        parent: &Context,
        attributes: Vec<KeyValue>,
    ) -> Self {
        let Some(tracer) = TRACER.get() else {
            return Self(None);
        };
        let builder = SpanBuilder::from_name(name)
            .with_kind(kind)
            .with_attributes(attributes);
        let span = tracer.build_with_context(builder, parent);
        Self(Some(parent.with_span(span)))
    }

    /// The span in scope where this runs (see [`TraceSpan::scope`]); empty
    /// when there is none or traces are off.
    pub(crate) fn current() -> Self {
        if TRACER.get().is_none() {
            return Self(None);
        }
        Context::map_current(|context| Self(context.has_active_span().then(|| context.clone())))
    }

    /// Whether this span records anything: false when traces are off or
    /// the span was not sampled, and then nothing need be computed for it.
    pub(crate) fn is_recording(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|context| context.span().is_recording())
    }

    /// Sets an attribute (nothing when not recording).
    pub(crate) fn set(&self, key: &'static str, value: impl Into<Value>) {
        if let Some(context) = &self.0 {
            context.span().set_attribute(KeyValue::new(key, value));
        }
    }

    /// Marks the span as failed (the conventions' `ERROR` status).
    pub(crate) fn set_error(&self) {
        if let Some(context) = &self.0 {
            context.span().set_status(Status::error(""));
        }
    }

    /// Adds the event `name` with `attributes`.
    fn event(&self, name: &'static str, attributes: Vec<KeyValue>) {
        if let Some(context) = &self.0 {
            context.span().add_event(name, attributes);
        }
    }

    /// `future`, with this span in scope at each of its polls: spans
    /// started inside it (and its spawned work, see [`TraceSpan::current`])
    /// are this one's children, and its pool waits are events on it.
    /// Nothing is done at a poll when the span is empty.
    pub(crate) fn scope<F: Future>(&self, future: F) -> InScope<F> {
        InScope {
            future,
            context: self.0.clone(),
        }
    }

    /// Runs `work` with this span in scope.
    pub(crate) fn in_scope<R>(&self, work: impl FnOnce() -> R) -> R {
        let _guard = self.0.clone().map(Context::attach);
        work()
    }

    /// The trace and span ids (32 and 16 hex digits), when exported.
    pub(crate) fn span_ids(&self) -> Option<(String, String)> {
        let context = self.0.as_ref()?;
        let span = context.span();
        let ids = span.span_context();
        ids.is_valid()
            .then(|| (ids.trace_id().to_string(), ids.span_id().to_string()))
    }
}

pin_project! {
    /// A future polled with its span in scope (see [`TraceSpan::scope`]).
    pub(crate) struct InScope<F> {
        #[pin]
        future: F,
        context: Option<Context>,
    }
}

impl<F: Future> Future for InScope<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
        let this = self.project();
        let _guard = this.context.clone().map(Context::attach);
        this.future.poll(cx)
    }
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
/// continuing the caller's trace when its headers carry one. Empty (and
/// nothing read) when traces are off.
pub(crate) fn rpc_span(method: &'static str, headers: &http::HeaderMap) -> TraceSpan {
    if TRACER.get().is_none() {
        return TraceSpan::default();
    }
    let parent = TraceContextPropagator::new().extract(&Headers(headers));
    let parent = if parent.span().span_context().is_valid() {
        parent
    } else {
        Context::new()
    };
    TraceSpan::start(
        method,
        SpanKind::Server,
        &parent,
        vec![
            KeyValue::new("rpc.system.name", "grpc"),
            KeyValue::new("rpc.method", method),
        ],
    )
}

/// The span of one statement (client kind), a child of the span in scope:
/// `db.query.text` is the statement with every literal replaced by `?`
/// (see [`crate::query::fingerprint::sanitized_text`]), never a value.
pub(crate) fn statement_span(
    db_system: &'static str,
    namespace: Option<&str>,
    operation: &'static str,
    sanitized_text: impl FnOnce() -> std::sync::Arc<str>,
) -> TraceSpan {
    if TRACER.get().is_none() {
        return TraceSpan::default();
    }
    let parent = Context::current();
    let mut attributes = Vec::with_capacity(4);
    attributes.push(KeyValue::new("db.system.name", db_system));
    attributes.push(KeyValue::new("db.operation.name", operation));
    let text = sanitized_text();
    if !text.is_empty() {
        attributes.push(KeyValue::new("db.query.text", Value::String(text.into())));
    }
    if let Some(namespace) = namespace {
        attributes.push(KeyValue::new("db.namespace", namespace.to_owned()));
    }
    TraceSpan::start(operation, SpanKind::Client, &parent, attributes)
}

/// The span of one session (internal kind), a child of the span in scope
/// (its `Attach` call's), covering the session's life: its statements
/// are its children, and [`session_ended`] records why it ended.
pub(crate) fn session_span() -> TraceSpan {
    if TRACER.get().is_none() {
        return TraceSpan::default();
    }
    TraceSpan::start(
        "session",
        SpanKind::Internal,
        &Context::current(),
        Vec::new(),
    )
}

/// Records on the span in scope (a session's, where the session runs)
/// its id.
pub(crate) fn session_opened(session_id: &str) {
    let span = TraceSpan::current();
    if span.is_recording() {
        span.set("sqlgate.session.id", session_id.to_owned());
    }
}

/// Records on the span in scope (a session's, where the session runs)
/// why it ended and how many statements it ran, as attributes and as the
/// `session.end` event.
pub(crate) fn session_ended(reason: &'static str, statements: u64) {
    let span = TraceSpan::current();
    if !span.is_recording() {
        return;
    }
    let statements = i64::try_from(statements).unwrap_or(i64::MAX);
    span.set("sqlgate.session.end_reason", reason);
    span.set("sqlgate.session.statements", statements);
    span.event(
        "session.end",
        vec![
            KeyValue::new("end_reason", reason),
            KeyValue::new("statements", statements),
        ],
    );
}

/// A pool wait, as the `pool.wait` event on the span in scope (the
/// statement's that waited).
pub(crate) fn pool_waited(waited: std::time::Duration, timed_out: bool) {
    let span = TraceSpan::current();
    if span.is_recording() {
        span.event(
            "pool.wait",
            vec![
                KeyValue::new("wait_ms", waited.as_secs_f64() * 1000.0),
                KeyValue::new("timed_out", timed_out),
            ],
        );
    }
}

/// Records how a statement ended on its span: rows returned, or the
/// error's kind (the gRPC code) and the database's SQLSTATE.
pub(crate) fn statement_done(span: &TraceSpan, outcome: Result<usize, &Error>) {
    if !span.is_recording() {
        return;
    }
    match outcome {
        Ok(rows) => {
            span.set(
                "db.response.returned_rows",
                i64::try_from(rows).unwrap_or(i64::MAX),
            );
        }
        Err(error) => {
            span.set_error();
            span.set("error.type", super::names::code_name(error.code()));
            if let Some(sqlstate) = error.sqlstate() {
                span.set("db.response.status_code", sqlstate.to_owned());
            }
        }
    }
}

/// Records a session's labels (`k=v,…`) on its span, the one in scope
/// where the session runs.
pub(crate) fn session_labels(labels: &std::collections::BTreeMap<String, String>) {
    let span = TraceSpan::current();
    if !span.is_recording() || labels.is_empty() {
        return;
    }
    let text = labels
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(",");
    span.set("sqlgate.session.labels", text);
}
