//! `sqlgate.v1.Sessions`: one bidi stream, one session. This file only
//! moves messages: the client's requests are decoded as the session reads
//! them (in the session's own task), and the session's events are encoded
//! on the way out. The session itself (and all its cleanup) lives in
//! [`crate::session`].

use std::{
    pin::Pin,
    task::{Context, Poll, ready},
};

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::{
    codec::UNDECODABLE,
    convert,
    deadline::parse_grpc_timeout,
    identity::Role,
    limits::CallSlot,
    observe::{CallNote, Caller, RequestTags},
    pb::{self, sessions_server::Sessions},
};
use crate::{
    config::LimitSettings,
    db::{Backend, Driver},
    error::Error,
    query::StreamEvent,
    session::{Inbound, SessionEvent, SessionManager, SessionOwner},
};

/// The Sessions service.
#[derive(Debug)]
pub(crate) struct SessionService<DB: Driver> {
    manager: SessionManager<DB>,
    /// The role of a caller without an identity (`roles.default`).
    anonymous: Role,
}

impl<DB: Driver> SessionService<DB> {
    /// Serves sessions with `manager`; callers without an identity hold
    /// the role `anonymous`.
    pub(crate) fn new(manager: SessionManager<DB>, anonymous: Role) -> Self {
        Self { manager, anonymous }
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<pb::SessionResponse, Status>> + Send>>;

#[tonic::async_trait]
impl<DB: Driver> Sessions for SessionService<DB> {
    type AttachStream = ResponseStream;

    async fn attach(
        &self,
        mut request: Request<Streaming<pb::SessionRequest>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let note = CallNote::of(&request);
        let caller = Caller::of(&request);
        let owner = SessionOwner {
            name: caller.to_string(),
            peer: caller
                .peer()
                .map_or_else(|| "unknown".to_owned(), |peer| peer.to_string()),
            role: caller.role(self.anonymous),
            tags: RequestTags::of(&request),
        };
        // sqlgate enforces the call's own deadline itself: the session ends
        // when it passes, whether or not the client library enforces it.
        let call_end = request
            .metadata()
            .get("grpc-timeout")
            .and_then(|value| value.to_str().ok())
            .and_then(parse_grpc_timeout)
            // A deadline too far to represent is no deadline.
            .and_then(|timeout| tokio::time::Instant::now().checked_add(timeout));
        let hold = CallSlot::take(&mut request);
        let requests = SessionRequests {
            requests: request.into_inner(),
            limits: self.manager.limits().clone(),
            backend: DB::BACKEND,
            ended: false,
        };
        let (outbound, events) = mpsc::channel(self.manager.limits().stream_buffer_frames);
        self.manager
            .attach(owner, hold, call_end, requests, outbound);
        let responses = ReceiverStream::new(events).map(move |event| {
            note_event(&note, &event);
            convert::session_response(event)
        });
        Ok(Response::new(Box::pin(responses)))
    }
}

/// The client's requests, decoded, as its session reads them. The session
/// polls them itself, in its own task: no reader task and no channel
/// between the two (a session costs one spawn, and a request reaches it
/// without a hop). A request waits in the HTTP/2 stream until the session
/// asks for the next one. Ends when the client closes its side, and after
/// a broken stream or a message that does not decode (nothing after those
/// is read).
struct SessionRequests {
    requests: Streaming<pb::SessionRequest>,
    /// The request caps, for decoding.
    limits: LimitSettings,
    /// The backend whose placeholders statements are checked against.
    backend: Backend,
    /// Nothing more is read: the stream ended, broke, or sent garbage.
    ended: bool,
}

impl Stream for SessionRequests {
    type Item = Inbound;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Inbound>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        let item = match ready!(this.requests.poll_next_unpin(cx)) {
            Some(Ok(request)) => {
                return Poll::Ready(Some(Inbound::Command(convert::session_command(
                    request,
                    &this.limits,
                    this.backend,
                ))));
            }
            // Half-close: the session sees the end of its requests.
            None => None,
            Some(Err(status)) if is_decode_failure(&status) => {
                Some(Inbound::Undecodable(Error::invalid_request(
                    "request",
                    "a message could not be decoded as a SessionRequest",
                )))
            }
            Some(Err(_)) => Some(Inbound::Broken),
        };
        this.ended = true;
        Poll::Ready(item)
    }
}

/// A message that does not decode (the codec says so with its own
/// message): the client's mistake, not a broken stream.
fn is_decode_failure(status: &Status) -> bool {
    status.code() == tonic::Code::InvalidArgument && status.message().starts_with(UNDECODABLE)
}

/// What an Attach call's line says: the session it opened and the rows
/// sent over it (its statements are many; each has its own fingerprint,
/// which the line does not list).
fn note_event(note: &CallNote, event: &SessionEvent) {
    match event {
        SessionEvent::Began { session_id } => note.session(session_id),
        SessionEvent::Frame {
            event: StreamEvent::Rows(rows),
            ..
        } => note.rows(rows.len()),
        _ => {}
    }
}
