//! `sqlgate.v1.Sessions`: one bidi stream, one session. This file only
//! moves messages: a reader task decodes the client's requests into the
//! session's inbox, and the session's events are encoded on the way out.
//! The session itself (and all its cleanup) lives in [`crate::session`].

use std::pin::Pin;

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
    db::Driver,
    error::Error,
    query::StreamEvent,
    session::{Inbound, SessionEvent, SessionManager, SessionOwner},
};

/// Requests read ahead of the session (the client may pipeline).
const INBOX: usize = 16;

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
        // Formatted once: an address takes thousands of instructions.
        let peer = caller
            .peer()
            .map_or_else(|| "unknown".to_owned(), |peer| peer.to_string());
        let owner = SessionOwner {
            // As `Caller` prints: its identity's name, else its peer.
            name: caller
                .identity()
                .map_or_else(|| peer.clone(), |identity| identity.name.to_string()),
            peer,
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
        let mut requests = request.into_inner();
        let (inbox, inbound) = mpsc::channel(INBOX);
        let (outbound, events) = mpsc::channel(self.manager.limits().stream_buffer_frames);
        let limits = self.manager.limits().clone();
        tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    message = requests.message() => message,
                    // The session ended and dropped its inbox.
                    () = inbox.closed() => return,
                };
                let item = match message {
                    Ok(Some(request)) => {
                        Inbound::Command(convert::session_command(request, &limits, DB::BACKEND))
                    }
                    // Half-close: dropping the inbox tells the session.
                    Ok(None) => return,
                    Err(status) if is_decode_failure(&status) => {
                        Inbound::Undecodable(Error::invalid_request(
                            "request",
                            "a message could not be decoded as a SessionRequest",
                        ))
                    }
                    Err(_) => Inbound::Broken,
                };
                let broken = matches!(item, Inbound::Broken | Inbound::Undecodable(_));
                if inbox.send(item).await.is_err() || broken {
                    return;
                }
            }
        });
        self.manager
            .attach(owner, hold, call_end, inbound, outbound);
        let responses = ReceiverStream::new(events).map(move |event| {
            note_event(&note, &event);
            convert::session_response(event)
        });
        Ok(Response::new(Box::pin(responses)))
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
