//! Server-side sessions: a transaction that lives exactly as long as the
//! bidi stream that owns it. `SessionManager::attach` starts one task per
//! session; the task owns the session's connection and ends it — cancel the
//! running statement, roll back, return (or close) the connection, count
//! the reason — however the session ends. Nothing relies on `Drop` alone.
//!
//! Every session has an owner ([`SessionOwner`]): only it (or an admin)
//! sees and ends the session through `Admin`, and a reader's session is
//! read-only at the database whatever its `begin` asked for.

mod client;
mod labels;
mod open;
mod registry;
mod runner;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use tokio::sync::mpsc;

pub use labels::Labels;
pub use registry::{EndReason, SessionOwner, SessionRegistry, SessionState, SessionSummary};

use crate::{
    audit::table::AuditTable,
    config::{LimitSettings, MethodBudget},
    db::{Database, Driver, Isolation, transaction::Hold},
    error::Error,
    query::{Statement, StreamEvent},
};

/// How a session's transaction is opened.
#[derive(Debug, Clone)]
pub struct BeginOptions {
    /// The isolation level asked for.
    pub isolation: Isolation,
    /// Whether the transaction may write.
    pub read_only: bool,
    /// Shown by ListSessions.
    pub labels: BTreeMap<String, String>,
    /// Roll back after this long without a request (capped by the server).
    pub idle_timeout: Option<Duration>,
}

/// A client's request, decoded.
#[derive(Debug)]
pub enum SessionCommand {
    /// Open the transaction; must come first.
    Begin {
        /// How the transaction is opened.
        options: BeginOptions,
        /// The first statement, run as soon as the transaction is open
        /// (inline begin: one message instead of two): an `Execute`, or
        /// an `Invalid` when it did not decode.
        first: Option<Box<SessionCommand>>,
    },
    /// Run one statement.
    Execute {
        /// Echoed on every answer to this request.
        request_id: u64,
        /// The statement.
        statement: Statement,
        /// The statement's own time limit, if the client set one.
        timeout: Option<Duration>,
        /// Commit when it succeeds, roll back when it fails; either way
        /// the session ends (a transaction in one exchange).
        commit_after: bool,
    },
    /// Commit and end.
    Commit,
    /// Roll back and end.
    Rollback,
    /// A request that could not be decoded; answered with `error`.
    Invalid {
        /// The request's id, when it had one.
        request_id: u64,
        /// What was wrong.
        error: Error,
        /// The request asked to commit after it: it failed, so the
        /// session rolls back and ends.
        commit_after: bool,
        /// Its statement's text, for the audit trail's event (only when
        /// the text itself was within the limits; never its values).
        sql: Option<Arc<str>>,
    },
}

impl SessionCommand {
    /// Whether the client asks with this request for the session to end
    /// (commit, rollback, or a statement with `commit_after`, carried by
    /// `begin` or not).
    pub fn ends_session(&self) -> bool {
        match self {
            Self::Commit | Self::Rollback => true,
            Self::Execute { commit_after, .. } | Self::Invalid { commit_after, .. } => {
                *commit_after
            }
            Self::Begin { first, .. } => first.as_deref().is_some_and(Self::ends_session),
        }
    }
}

/// What arrives from the client's stream.
#[derive(Debug)]
pub enum Inbound {
    /// A request.
    Command(SessionCommand),
    /// The stream broke (reset, cancelled with an error).
    Broken,
    /// A message arrived that is not a `SessionRequest`: the client is
    /// still there and is told why its session ends.
    Undecodable(Error),
}

/// What the session tells the client.
#[derive(Debug)]
pub enum SessionEvent {
    /// The transaction is open.
    Began {
        /// The session's id (for Admin calls).
        session_id: String,
    },
    /// Part of a request's result.
    Frame {
        /// The request it answers.
        request_id: u64,
        /// Metadata, rows or stats.
        event: StreamEvent,
    },
    /// A request finished.
    Done {
        /// The request.
        request_id: u64,
    },
    /// A request failed; the session goes on.
    Error {
        /// The request (0 for begin/commit/rollback).
        request_id: u64,
        /// Why.
        error: Error,
    },
    /// The transaction committed; the session is over.
    Committed,
    /// The transaction rolled back; the session is over.
    RolledBack,
    /// The session ended otherwise; the stream closes with this status.
    Ended(Error),
}

/// Starts sessions over the pool.
#[derive(Debug)]
pub(crate) struct SessionManager<DB: Driver> {
    db: Arc<Database<DB>>,
    registry: Arc<SessionRegistry>,
    statement_budget: MethodBudget,
    limits: LimitSettings,
    /// Where writes' audit rows go (`audit.table`; `None`: off).
    audit_table: Option<AuditTable>,
}

impl<DB: Driver> Clone for SessionManager<DB> {
    fn clone(&self) -> Self {
        Self {
            db: self.db.clone(),
            registry: self.registry.clone(),
            statement_budget: self.statement_budget,
            limits: self.limits.clone(),
            audit_table: self.audit_table.clone(),
        }
    }
}

impl<DB: Driver> SessionManager<DB> {
    /// Sessions over `db`, registered in `registry`; each statement is
    /// bounded by `statement_budget`. With `audit_table`, every session
    /// write's audit row is inserted into it in the session's transaction
    /// (and statements naming it are refused).
    pub(crate) fn new(
        db: Arc<Database<DB>>,
        registry: Arc<SessionRegistry>,
        (statement_budget, limits): (MethodBudget, LimitSettings),
        audit_table: Option<AuditTable>,
    ) -> Self {
        Self {
            db,
            registry,
            statement_budget,
            limits,
            audit_table,
        }
    }

    /// The request caps, for decoding.
    pub(crate) fn limits(&self) -> &LimitSettings {
        &self.limits
    }

    /// The sessions' registry (shutdown, for the stream's reader).
    pub(crate) fn registry(&self) -> &Arc<SessionRegistry> {
        &self.registry
    }

    /// Runs `owner`'s session fed by `inbound` and answering on
    /// `outbound`, in a task of its own that shutdown waits for and that
    /// keeps `hold` until the session has ended (rolled back or committed,
    /// its connection given back). The session ends when `inbound` closes
    /// without a commit, when `outbound`'s receiver is dropped (client
    /// gone), when `call_end` (the Attach call's own deadline, if it has
    /// one) passes, or for any of the reasons in [`EndReason`].
    pub(crate) fn attach(
        &self,
        owner: SessionOwner,
        hold: Hold,
        call_end: Option<tokio::time::Instant>,
        inbound: mpsc::Receiver<Inbound>,
        outbound: mpsc::Sender<SessionEvent>,
    ) {
        let manager = self.clone();
        // In a span of its own under the Attach call's: the session's
        // statements are its children, its end reason an attribute.
        let span = crate::telemetry::traces::session_span();
        self.registry.spawn(span.scope(Box::pin(runner::run(
            manager, owner, hold, call_end, inbound, outbound,
        ))));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Backend;

    fn execute(commit_after: bool) -> SessionCommand {
        let statement = Statement::new(
            "UPDATE t SET n = 1".to_owned(),
            vec![],
            &LimitSettings::default(),
            Backend::Postgres,
        )
        .expect("a statement");
        SessionCommand::Execute {
            request_id: 1,
            statement,
            timeout: None,
            commit_after,
        }
    }

    fn begin(first: Option<SessionCommand>) -> SessionCommand {
        SessionCommand::Begin {
            options: BeginOptions {
                isolation: Isolation::Default,
                read_only: false,
                labels: BTreeMap::new(),
                idle_timeout: None,
            },
            first: first.map(Box::new),
        }
    }

    #[test]
    fn only_the_clients_own_ending_requests_end_the_session() {
        for ending in [
            SessionCommand::Commit,
            SessionCommand::Rollback,
            execute(true),
            begin(Some(execute(true))),
            SessionCommand::Invalid {
                request_id: 1,
                error: Error::SessionProtocol("bad".to_owned()),
                commit_after: true,
                sql: None,
            },
        ] {
            assert!(ending.ends_session(), "{ending:?}");
        }
        for going_on in [execute(false), begin(None), begin(Some(execute(false)))] {
            assert!(!going_on.ends_session(), "{going_on:?}");
        }
    }
}
