//! One session's task: the protocol around a [`Session`]. It waits for
//! `begin`, registers the session and opens it, feeds it the client's
//! requests one at a time, and ends it — through [`Session::end`] — on
//! commit, rollback, or whatever else comes first (the client leaving, the
//! idle timeout, the session's lifetime, a terminate, shutdown).

use std::time::Duration;

use tokio::{sync::mpsc, time::Instant};

use super::{
    BeginOptions, Inbound, SessionCommand, SessionEvent, SessionManager,
    client::ClientLink,
    open::{Executed, Session, until},
    registry::{EndReason, SessionOwner},
};
use crate::{
    db::{Driver, transaction::Hold},
    error::{DeadlinePhase, Error},
};

/// After the client's side of the stream ends, how long to watch for its
/// response side closing too (a cancelled call rather than a half-close).
/// Only the reason counted depends on it; both roll back.
const HALF_CLOSE_GRACE: Duration = Duration::from_millis(30);

/// How long sqlgate waits for the first request (`begin`).
const BEGIN_WAIT: Duration = Duration::from_secs(30);

/// Runs one session to its end. `hold` (the caller's place under the
/// limits) goes with the session's registry place: given back as the
/// session ends, before the client hears it.
pub(super) async fn run<DB: Driver>(
    manager: SessionManager<DB>,
    owner: SessionOwner,
    hold: Hold,
    call_end: Option<tokio::time::Instant>,
    mut inbound: mpsc::Receiver<Inbound>,
    outbound: mpsc::Sender<SessionEvent>,
) {
    let client = ClientLink::new(outbound, manager.registry.clone());
    let Some((mut options, first)) =
        wait_for_begin(&manager, &mut inbound, &client, call_end).await
    else {
        return;
    };
    // A reader's session is read-only whatever it asked for: its reads
    // work as they would, and a write is refused by the database
    // (PERMISSION_DENIED), rather than refusing the whole session.
    if owner.role.is_read_only() {
        options.read_only = true;
    }
    crate::telemetry::traces::session_labels(&options.labels);
    let guard = match manager.registry.open(owner, options.labels.clone(), hold) {
        Ok(guard) => guard,
        Err(error) => {
            client.tell(SessionEvent::Ended(error)).await;
            return;
        }
    };
    crate::telemetry::traces::session_opened(&guard.entry().id);
    // A begin carrying a statement to commit after: the whole session.
    let only = match first.as_deref() {
        Some(SessionCommand::Execute {
            statement,
            commit_after: true,
            ..
        }) => Some(statement),
        _ => None,
    };
    let Some(mut session) =
        Session::begin(&manager, &options, guard, client.clone(), call_end, only).await
    else {
        return;
    };
    if !session.announce().await {
        session.end(EndReason::ClientGone).await;
        return;
    }
    // Inline begin: the first statement came with begin.
    if let Some(first) = first
        && let Some(reason) = handle(&manager, &mut session, &client, *first).await
    {
        session.end(reason).await;
        return;
    }

    let settings = manager.registry.settings();
    let idle_timeout = options
        .idle_timeout
        .unwrap_or(settings.default_idle_timeout)
        .min(settings.max_idle_timeout);
    let reason = loop {
        let idle_end = Instant::from_std(session.entry().last_activity()) + idle_timeout;
        let message = tokio::select! {
            biased;
            () = session.entry().terminated() => break EndReason::Terminated,
            () = manager.registry.shutting_down() => break EndReason::Shutdown,
            () = client.gone() => break EndReason::ClientGone,
            () = tokio::time::sleep_until(session.lifetime_end()) => break EndReason::MaxLifetime,
            () = tokio::time::sleep_until(idle_end) => break EndReason::IdleTimeout,
            () = session.call_ended() => break EndReason::CallDeadline,
            message = inbound.recv() => message,
        };
        let command = match message {
            // The client closed its side without committing: never commit
            // on that. A cancelled call looks the same at first; its
            // response side closes right after, which tells them apart.
            None => {
                let gone = tokio::time::timeout(HALF_CLOSE_GRACE, client.gone()).await;
                break if gone.is_ok() {
                    EndReason::ClientGone
                } else {
                    EndReason::StreamEnded
                };
            }
            Some(Inbound::Broken) => break EndReason::ClientGone,
            Some(Inbound::Undecodable(error)) => {
                refuse(&client, 0, error).await;
                break EndReason::Failed;
            }
            Some(Inbound::Command(command)) => command,
        };
        session.entry().touch();
        if let Some(reason) = handle(&manager, &mut session, &client, command).await {
            break reason;
        }
    };
    // After `committed` / `rolled_back` the stream ends (status OK): a
    // client reading to the end is not left waiting.
    session.end(reason).await;
}

/// Runs one request of an open session; returns why the session ends, if
/// this request ends it (commit, rollback, a statement run with
/// `commit_after`, or a failure the session cannot survive).
async fn handle<DB: Driver>(
    manager: &SessionManager<DB>,
    session: &mut Session<DB>,
    client: &ClientLink,
    command: SessionCommand,
) -> Option<EndReason> {
    match command {
        SessionCommand::Begin { .. } => {
            let error = Error::SessionProtocol("the session has already begun".to_owned());
            refuse(client, 0, error).await;
            None
        }
        SessionCommand::Invalid {
            request_id,
            error,
            commit_after,
            sql,
        } => match session.refuse_invalid(request_id, sql, error).await {
            Executed::End(reason) => Some(reason),
            Executed::Done | Executed::Failed => commit_after.then_some(EndReason::Rollback),
        },
        SessionCommand::Execute {
            request_id,
            statement,
            timeout,
            commit_after,
        } => {
            let max_statements = manager.registry.settings().max_statements;
            let executed = if session.entry().statements() >= max_statements {
                let error = Error::SessionProtocol(format!(
                    "the session ran its maximum of {max_statements} statements; commit or roll back"
                ));
                refuse(client, request_id, error).await;
                Executed::Failed
            } else {
                let deadline = manager.statement_budget.deadline(timeout);
                let executed = session.execute(request_id, &statement, deadline).await;
                session.entry().touch();
                executed
            };
            match executed {
                Executed::End(reason) => Some(reason),
                Executed::Done if commit_after => Some(EndReason::Commit),
                Executed::Failed if commit_after => Some(EndReason::Rollback),
                Executed::Done | Executed::Failed => None,
            }
        }
        SessionCommand::Commit => Some(EndReason::Commit),
        SessionCommand::Rollback => Some(EndReason::Rollback),
    }
}

/// Waits for the first request, which must be `begin` (with its first
/// statement, if it carries one); anything else (or nothing within
/// [`BEGIN_WAIT`], or shutdown) ends the stream with a clear status.
async fn wait_for_begin<DB: Driver>(
    manager: &SessionManager<DB>,
    inbound: &mut mpsc::Receiver<Inbound>,
    client: &ClientLink,
    call_end: Option<tokio::time::Instant>,
) -> Option<(BeginOptions, Option<Box<SessionCommand>>)> {
    let first = tokio::select! {
        message = inbound.recv() => message,
        () = client.gone() => return None,
        () = manager.registry.shutting_down() => {
            client.tell(SessionEvent::Ended(Error::ShuttingDown)).await;
            return None;
        }
        () = until(call_end) => {
            client.tell(SessionEvent::Ended(Error::DeadlineExceeded(
                DeadlinePhase::BeforeStart,
            ))).await;
            return None;
        }
        () = tokio::time::sleep(BEGIN_WAIT) => {
            client.tell(SessionEvent::Ended(Error::SessionProtocol(
                "no begin arrived; a session starts with begin".to_owned(),
            ))).await;
            return None;
        }
    };
    let refusal = match first {
        Some(Inbound::Command(SessionCommand::Begin { options, first })) => {
            return Some((options, first));
        }
        Some(Inbound::Command(SessionCommand::Invalid { error, .. })) => error,
        Some(Inbound::Command(_)) => {
            Error::SessionProtocol("a session starts with begin".to_owned())
        }
        Some(Inbound::Undecodable(error)) => error,
        Some(Inbound::Broken) | None => return None,
    };
    client.tell(SessionEvent::Ended(refusal)).await;
    None
}

/// Answers one request with an error; the session goes on.
async fn refuse(client: &ClientLink, request_id: u64, error: Error) {
    client.tell(SessionEvent::Error { request_id, error }).await;
}
