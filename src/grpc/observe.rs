//! The one layer every RPC passes through, whatever its service (Query,
//! Sessions, Admin, health, reflection): it resolves the caller, starts the
//! clock, hands the handler a [`CallNote`], and writes the call's line when
//! the response ends — when a stream ends, not when it starts — with the
//! gRPC status code, or CANCELLED when the client went away first.
//!
//! This is the seam where the cross-cutting concerns attach: tracing spans
//! and metrics read the same call record (method, caller, clock, note,
//! code), audit the same outcome, and authentication resolves the
//! [`Caller`] here before the handler runs: a call whose credentials prove
//! nothing never reaches its handler, and is answered UNAUTHENTICATED (see
//! [`crate::grpc::auth`]).
//!
//! Lines: `call done` (code OK) or `call failed`, with `service`, `method`,
//! `peer` (the identity's name once authenticated, else the address),
//! `role` (authenticated calls), `fingerprint` (`-` when none), `session`
//! (Attach only), `rows`, `code`, `refused` (the reason, for a call
//! refused by authentication; never the credential) and `elapsed_ms`;
//! sqlgate's own services at `info`, health and reflection at `debug`.
//! Never parameter values or row contents.

mod note;

use std::{
    pin::Pin,
    task::{Context, Poll, ready},
    time::Instant,
};

use hyper::body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tonic::Code;
use tower::{Layer, Service};

pub(crate) use note::{CallNote, Caller, RequestTags};

use super::auth::{Authenticator, Refusal};
use tracing::Level;

use crate::audit::{Actor, Audit, StatementRecord};
use crate::telemetry::{
    metrics::CallMetrics,
    names,
    traces::{self, TraceSpan},
};

/// Calls of sqlgate's own services are logged at `info`; the rest (health
/// probes every few seconds, reflection) at `debug`.
const OWN_SERVICES: &str = "/sqlgate.";

/// Wraps a service (the gRPC routes) in [`Observe`], authenticating with
/// `auth` (off by default).
#[derive(Debug, Clone, Default)]
pub(crate) struct ObserveLayer {
    auth: Authenticator,
    observers: Observers,
}

/// What records each call besides its log line; each part is `None` when
/// it is off, and then costs the call nothing.
#[derive(Debug, Clone, Default)]
pub(crate) struct Observers {
    /// Call and operation durations (metrics on).
    pub(crate) metrics: Option<CallMetrics>,
    /// The audit trail (on when `audit.sink` is set).
    pub(crate) audit: Option<Audit>,
}

impl ObserveLayer {
    /// The layer, authenticating every call with `auth`.
    pub(crate) fn new(auth: Authenticator) -> Self {
        Self {
            auth,
            observers: Observers::default(),
        }
    }

    /// The same layer, every call recorded by `observers` too.
    pub(crate) fn observed_by(self, observers: Observers) -> Self {
        Self { observers, ..self }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            auth: self.auth.clone(),
            observers: self.observers.clone(),
        }
    }
}

/// Observes (and authenticates) each call to `inner`; see the module.
#[derive(Debug, Clone)]
pub(crate) struct Observe<S> {
    inner: S,
    auth: Authenticator,
    observers: Observers,
}

impl<S, B, ResBody> Service<http::Request<B>> for Observe<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>>,
    ResBody: Default,
{
    type Response = http::Response<ObservedBody<ResBody>>;
    type Error = S::Error;
    type Future = ObservedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let mut caller = Caller::from_connection(request.extensions());
        let checked = self.auth.check(
            request.uri().path(),
            request.headers(),
            request.extensions(),
        );
        let refusal = match checked {
            Ok(Some(identity)) => {
                caller = caller.authenticated(identity);
                None
            }
            Ok(None) => None,
            Err(refusal) => Some(refusal),
        };
        let note = CallNote::keeping_statements(self.observers.audit.is_some());
        let tags = request_tags(request.headers());
        let span = traces::rpc_span(names::known_method(request.uri().path()), request.headers());
        if span.is_recording() {
            span.set("sqlgate.caller", caller.to_string());
            if !tags.is_empty() {
                span.set("sqlgate.tags", tags.join(","));
            }
        }
        let call = Call {
            path: request.uri().path_and_query().cloned(),
            caller: caller.clone(),
            note: note.clone(),
            started: Instant::now(),
            code: None,
            refusal: None,
            metrics: self.observers.metrics.clone(),
            audit: self.observers.audit.clone(),
            tags,
            span: span.clone(),
        };
        if let Some(refusal) = refusal {
            // The handler never runs: the answer is the refusal.
            return ObservedFuture {
                inner: Answer::Refused {
                    refusal: Some(refusal),
                },
                call: Some(call),
                span,
            };
        }
        request.extensions_mut().insert(caller);
        request.extensions_mut().insert(note);
        if let Some(tags) = call.tags_for_handler() {
            request.extensions_mut().insert(tags);
        }
        // The handler runs with the call's span in scope, and so do the
        // tasks it spawns (they take the span in scope), so statements are
        // its children.
        let future = span.in_scope(|| self.inner.call(request));
        ObservedFuture {
            inner: Answer::Handler { future },
            call: Some(call),
            span,
        }
    }
}

pin_project! {
    /// The handler's answer (the response headers), then the call goes on
    /// in the [`ObservedBody`]. Dropped before it resolves (the client
    /// reset the call), it writes the line as CANCELLED.
    pub(crate) struct ObservedFuture<F> {
        #[pin]
        inner: Answer<F>,
        call: Option<Call>,
        // In scope at each poll (empty when traces are off).
        span: TraceSpan,
    }
}

pin_project! {
    /// Where a call's answer comes from.
    #[project = AnswerProjection]
    enum Answer<F> {
        /// The handler (the call was let through).
        Handler {
            #[pin]
            future: F,
        },
        /// Authentication: UNAUTHENTICATED, at once.
        Refused {
            refusal: Option<Refusal>,
        },
    }
}

impl<F, ResBody, E> Future for ObservedFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
    ResBody: Default,
{
    type Output = Result<http::Response<ObservedBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let span = &*this.span;
        let result = span.in_scope(|| match this.inner.project() {
            AnswerProjection::Handler { future } => future.poll(cx),
            AnswerProjection::Refused { refusal } => {
                let refusal = refusal.take();
                let status = refusal.as_ref().map_or_else(
                    || tonic::Status::unauthenticated("refused"),
                    Refusal::to_status,
                );
                if let Some(call) = this.call.as_mut() {
                    call.refusal = refusal;
                }
                Poll::Ready(Ok(status.into_http()))
            }
        });
        let result = ready!(result);
        let mut call = this.call.take();
        Poll::Ready(match result {
            Ok(response) => {
                if let Some(call) = call.as_mut() {
                    // A trailers-only answer (most errors) ends here.
                    call.code = grpc_status(response.headers());
                }
                Ok(response.map(|inner| ObservedBody { inner, call }))
            }
            Err(err) => {
                if let Some(call) = call.as_mut() {
                    call.code = Some(Code::Internal);
                }
                Err(err)
            }
        })
    }
}

pin_project! {
    /// A response body that writes its call's line when it ends: at the
    /// trailers (the status of a stream), at its last frame, or when it
    /// is dropped unfinished (the client went away: CANCELLED). The
    /// call's span ends with it (the [`Call`] holds it); nothing in the
    /// body's polls starts spans, so it is not put in scope there.
    pub(crate) struct ObservedBody<B> {
        #[pin]
        inner: B,
        call: Option<Call>,
    }
}

impl<B: Body> Body for ObservedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        let ended = match &frame {
            Some(Ok(frame)) => frame.trailers_ref().map(grpc_status),
            Some(Err(_)) => Some(Some(Code::Internal)),
            None => Some(None),
        };
        if let Some(code) = ended
            && let Some(mut call) = this.call.take()
        {
            // A body that ends with no status at all was not a gRPC answer.
            call.code = code.or(call.code).or(Some(Code::Unknown));
            drop(call);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// One call in flight; its line is written when it is dropped.
#[derive(Debug)]
struct Call {
    /// `/package.Service/Method`; split only if the line is written.
    path: Option<http::uri::PathAndQuery>,
    caller: Caller,
    note: CallNote,
    started: Instant,
    /// The status, once the response carried one; none means the client
    /// left before it did.
    code: Option<Code>,
    /// Why authentication refused the call, if it did.
    refusal: Option<Refusal>,
    /// Where the call's duration is recorded (metrics on).
    metrics: Option<CallMetrics>,
    /// Where the call's statements are recorded (audit on).
    audit: Option<Audit>,
    /// The caller's `sqlgate-tag` values (checked, at most [`MAX_TAGS`]).
    tags: Vec<String>,
    /// The call's span; it ends when the call does (empty when traces
    /// are off).
    span: TraceSpan,
}

/// One call line, at a level fixed per call site.
macro_rules! call_line {
    ($level:expr, $call:expr, $service:expr, $method:expr, $code:expr) => {{
        let text = $call.note.take_text();
        let span_ids = $call.span.span_ids();
        let outcome = if $code == Code::Ok {
            "call done"
        } else {
            "call failed"
        };
        tracing::event!(
            $level,
            service = $service,
            method = $method,
            peer = %$call.caller,
            role = $call.caller.identity().map(|identity| identity.role.name()),
            fingerprint = text.fingerprint.as_deref().unwrap_or("-"),
            session = text.session.as_deref(),
            rows = $call.note.rows_sent(),
            code = ?$code,
            refused = $call.refusal.as_ref().map(Refusal::reason),
            // Whole microseconds, so that the line shows 1.506, not 1.5055669999999999.
            elapsed_ms = $call.started.elapsed().as_micros() as f64 / 1000.0,
            trace_id = span_ids.as_ref().map(|(trace, _)| trace.as_str()),
            span_id = span_ids.as_ref().map(|(_, span)| span.as_str()),
            "{outcome}"
        );
    }};
}

impl Drop for Call {
    fn drop(&mut self) {
        let path = self.path.as_ref().map_or("", |path| path.path());
        let code = self.code.unwrap_or(Code::Cancelled);
        if self.span.is_recording() {
            self.span
                .set("rpc.response.status_code", names::code_name(code));
            if let Some(session) = self.note.session_id() {
                self.span.set("sqlgate.session.id", session);
            }
            if is_server_error(code) {
                self.span.set_error();
            }
        }
        if let Some(audit) = &self.audit {
            self.audit_statements(audit, path, code);
        }
        if let Some(metrics) = &self.metrics {
            let elapsed = self.started.elapsed();
            metrics.call(path, code, elapsed);
            if let Some(operation) = self.note.noted_operation() {
                metrics.operation(operation, code, elapsed);
            }
        }
        // Nothing is split, locked or formatted unless the line is wanted.
        if path.starts_with(OWN_SERVICES) {
            if tracing::enabled!(Level::INFO) {
                let (service, method) = split_path(path);
                call_line!(Level::INFO, self, service, method, code);
            }
        } else if tracing::enabled!(Level::DEBUG) {
            let (service, method) = split_path(path);
            call_line!(Level::DEBUG, self, service, method, code);
        }
    }
}

impl Call {
    /// The call's tags as handlers read them, when it has any.
    fn tags_for_handler(&self) -> Option<RequestTags> {
        (!self.tags.is_empty()).then(|| RequestTags(self.tags.clone()))
    }

    /// One audit event per statement the handler noted.
    fn audit_statements(&self, audit: &Audit, path: &str, code: Code) {
        let (statements, sqlstate) = self.note.take_statements();
        if statements.is_empty() {
            return;
        }
        let actor = Actor {
            caller: self.caller.to_string(),
            // The role the call ran with, as for a session's events: a
            // caller without an identity holds `roles.default`.
            role: self
                .note
                .noted_role()
                .or_else(|| self.caller.identity().map(|identity| identity.role.name())),
            peer: self.caller.peer().map(|peer| peer.to_string()),
        };
        let duration = self.started.elapsed();
        for statement in statements {
            audit.statement(StatementRecord {
                actor: actor.clone(),
                method: names::known_method(path),
                session: None,
                sql: statement.sql,
                fingerprint: statement.fingerprint,
                rows_returned: statement
                    .rows_returned
                    .unwrap_or_else(|| self.note.rows_sent()),
                rows_affected: statement.rows_affected,
                duration: statement.duration.unwrap_or(duration),
                code,
                sqlstate: sqlstate.clone(),
                tags: self.tags.clone(),
            });
        }
    }
}

/// The most `sqlgate-tag` values a call carries; more are ignored.
const MAX_TAGS: usize = 8;
/// The longest tag kept.
const MAX_TAG_BYTES: usize = 64;

/// The call's `sqlgate-tag` metadata values (like Spanner's request tags):
/// short printable identifiers only — a value that is longer, or has
/// spaces or odd bytes, is dropped rather than echoed into spans and the
/// audit trail.
fn request_tags(headers: &http::HeaderMap) -> Vec<String> {
    headers
        .get_all("sqlgate-tag")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|tag| {
            !tag.is_empty()
                && tag.len() <= MAX_TAG_BYTES
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.:=/".contains(&b))
        })
        .take(MAX_TAGS)
        .map(str::to_owned)
        .collect()
}

/// `/sqlgate.v1.Query/Execute` → (`sqlgate.v1.Query`, `Execute`); a path
/// of another shape gives `-` for what it lacks.
fn split_path(path: &str) -> (&str, &str) {
    let path = path.strip_prefix('/').unwrap_or(path);
    let (service, method) = path.rsplit_once('/').unwrap_or(("", path));
    (loggable(service), loggable(method))
}

/// The longest service or method name written as it is.
const MAX_LOGGED_NAME: usize = 96;

/// A name from the request's path as it may appear in a line: the caller
/// chooses the path, so anything that is not a short identifier (a 16 KiB
/// method name, odd bytes) is written as `?`, never echoed.
fn loggable(name: &str) -> &str {
    if name.is_empty() {
        "-"
    } else if name.len() <= MAX_LOGGED_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
    {
        name
    } else {
        "?"
    }
}

/// Codes that mark a server span as an error (the RPC conventions: the
/// others are the caller's doing).
fn is_server_error(code: Code) -> bool {
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}

/// The `grpc-status` of response headers or trailers, if they carry one.
fn grpc_status(headers: &http::HeaderMap) -> Option<Code> {
    headers
        .get("grpc-status")
        .map(|status| Code::from_bytes(status.as_bytes()))
}

#[cfg(test)]
mod tests;
