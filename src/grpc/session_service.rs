//! `sqlgate.v1.Sessions`: one bidi stream, one session. This file only
//! moves messages: a reader task decodes the client's requests into the
//! session's inbox, and the session's events are encoded on the way out.
//! The session itself (and all its cleanup) lives in [`crate::session`].

use std::{pin::Pin, time::Duration};

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
        let registry = self.manager.registry().clone();
        tokio::spawn(async move {
            // The client's last request asked to end the session (it
            // expects no more answers after the end).
            let mut asked_to_end = false;
            loop {
                let message = tokio::select! {
                    message = requests.message() => message,
                    // The session ended and dropped its inbox.
                    () = inbox.closed() => {
                        if !asked_to_end {
                            tokio::select! {
                                () = drain(&mut requests) => {}
                                () = registry.shutting_down() => {}
                            }
                        }
                        return;
                    }
                };
                let item = match message {
                    Ok(Some(request)) => {
                        let command = convert::session_command(request, &limits, DB::BACKEND);
                        asked_to_end = command.ends_session();
                        Inbound::Command(command)
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

/// How long, after its session ended, a stream's requests are still read
/// (and dropped) while the client has not closed its side.
const DRAIN_BOUND: Duration = Duration::from_secs(1);

/// Reads and drops what the client still sends after its session ended
/// from the server's side (terminate, idle timeout, a failure), until it
/// closes its side or [`DRAIN_BOUND`] passes. Dropping the request side at
/// once makes HTTP/2 reset the stream once the status is out, and a client
/// that sent a request before it saw the end (a statement right after an
/// Admin/TerminateSession) may see its write fail and report that
/// (UNKNOWN) instead of the status the server sent. Not after the client's
/// own commit or rollback: it expects the end, and a stream left open would
/// keep an old connection (after GOAWAY) from closing.
async fn drain(requests: &mut Streaming<pb::SessionRequest>) {
    let _ = tokio::time::timeout(DRAIN_BOUND, async {
        while let Ok(Some(_)) = requests.message().await {}
    })
    .await;
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
