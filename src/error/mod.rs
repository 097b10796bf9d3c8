//! The crate's error type and its one mapping to the wire: a `tonic::Status`
//! with `google.rpc` details (SQLSTATE in `ErrorInfo`, `BadRequest` for the
//! request's own fields, `RetryInfo` where trying again can help).
//!
//! Database messages may reach the caller; connection strings, passwords and
//! parameter values never do: nothing here formats a parameter's value.
//!
//! This module holds [`Error`], its constructors and the questions the
//! crate asks of it (code, SQLSTATE, reclassification after a deadline).
//! The mapping to `tonic::Status` lives in `status`; the translation of
//! sqlx's errors, with the databases' own codes mapped to gRPC codes, in
//! `sqlstate`.

mod sqlstate;
mod status;

use tonic::Code;

/// The `ErrorInfo.domain` of every error sqlgate sends.
pub const ERROR_DOMAIN: &str = "sqlgate.dev";

/// Everything that can go wrong while serving a call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is missing or malformed (`field` names it, e.g. `sql`).
    #[error("{field}: {message}")]
    InvalidRequest {
        /// The request field at fault.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// A parameter cannot be bound (0-based `index`).
    #[error("parameter {index}: {message}")]
    InvalidParameter {
        /// Position of the parameter, from 0.
        index: usize,
        /// What is wrong with it; never the value itself.
        message: String,
    },
    /// The result is larger than the caller or the server accepts inline.
    #[error("{0}")]
    ResultTooLarge(String),
    /// A result column has a type sqlgate cannot carry.
    #[error(
        "column {column:?} has type {db_type}, which sqlgate cannot carry; cast it in the query (for example to text)"
    )]
    UnsupportedColumn {
        /// The column's name.
        column: String,
        /// The database's type name.
        db_type: String,
    },
    /// A value in the result cannot be represented without loss.
    #[error("column {column:?}: value cannot be represented ({reason}); cast it in the query")]
    UnrepresentableValue {
        /// The column's name.
        column: String,
        /// Why, without the value.
        reason: String,
    },
    /// The database refused or failed the statement.
    #[error("{0}")]
    Database(DatabaseFailure),
    /// No pooled connection became free within the pool's acquire timeout.
    #[error("all {max_connections} database connections are busy; try again shortly")]
    PoolExhausted {
        /// The pool's size, to help the caller judge.
        max_connections: u32,
    },
    /// The database cannot be reached.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// One statement of a batch failed; the whole batch rolled back.
    #[error("statement {index}: {source}")]
    InBatch {
        /// Position of the failed statement, from 0.
        index: usize,
        /// What went wrong with it.
        source: Box<Error>,
    },
    /// The call's deadline passed; the statement was stopped on the server.
    #[error("deadline exceeded {0}")]
    DeadlineExceeded(DeadlinePhase),
    /// No more sessions may open now.
    #[error("{0}")]
    SessionLimit(String),
    /// ExecuteStream calls already hold their share of the pool.
    #[error("{0}")]
    StreamLimit(String),
    /// A stream's reader took no frame (granted no HTTP/2 window) for this
    /// long; its statement was cancelled and its connection given back.
    #[error(
        "the stream's reader took no data for {}; the statement was cancelled (read the stream as it arrives, or use a larger HTTP/2 window)",
        humantime::format_duration(*.0)
    )]
    ReaderStalled(std::time::Duration),
    /// A session request out of order (execute before begin, …).
    #[error("{0}")]
    SessionProtocol(String),
    /// No open session has this id.
    #[error("no open session {0:?}")]
    SessionNotFound(String),
    /// The session ended for a reason other than commit or rollback;
    /// its transaction was rolled back.
    #[error("session ended ({0}); its transaction was rolled back")]
    SessionEnded(&'static str),
    /// A statement ended a session's transaction by itself; what the
    /// session wrote before it may have been committed.
    #[error(
        "a statement ended the session's transaction by itself (not through sqlgate): what the \
         session wrote before it may have been committed; the session is closed"
    )]
    TransactionLost,
    /// A session's COMMIT did not answer within its bound, or its one
    /// write (its own transaction) was cut off: the database may or may
    /// not have committed, and the connection was closed.
    #[error(
        "the commit was cut off before it answered; its outcome is unknown (it may or may not \
         have committed): check before retrying"
    )]
    CommitOutcomeUnknown,
    /// A reader tried to write: the database refused it inside the
    /// read-only transaction every reader's call and session runs in.
    #[error("the caller's role (reader) may only read; the database refused: {0}")]
    ReadOnlyRole(DatabaseFailure),
    /// The caller's role does not allow this call.
    #[error("{0}")]
    Forbidden(String),
    /// The caller has as many calls, streams or sessions in flight as one
    /// caller may (`limits.per_caller.*`).
    #[error(
        "this caller already has {limit} {what} in flight, the most one caller may \
         ({setting}); try again when one has ended"
    )]
    CallerLimit {
        /// `calls`, `streams` or `sessions`.
        what: &'static str,
        /// The limit.
        limit: u32,
        /// The setting that sets it.
        setting: &'static str,
    },
    /// sqlgate has `limits.max_concurrent_calls` calls in flight and sheds
    /// more instead of queueing them.
    #[error("sqlgate has {0} calls in flight, the most it takes at once; try again shortly")]
    Overloaded(u32),
    /// sqlgate is shutting down and takes no new work.
    #[error("sqlgate is shutting down; try another instance")]
    ShuttingDown,
    /// A fault in sqlgate itself.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Where a call was when its deadline passed. "Waiting for a connection"
/// is reported apart from "running in the database": a full pool is not a
/// slow database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadlinePhase {
    /// Before anything started (zero or already-passed deadline).
    BeforeStart,
    /// Waiting for a pooled connection.
    Queue,
    /// Running in the database.
    Database,
}

impl std::fmt::Display for DeadlinePhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DeadlinePhase::BeforeStart => "before the call started",
            DeadlinePhase::Queue => "while waiting for a database connection",
            DeadlinePhase::Database => "while the statement ran; it was cancelled on the server",
        })
    }
}

/// What the database said, classified once.
#[derive(Debug, Clone)]
pub struct DatabaseFailure {
    /// The gRPC code this failure maps to.
    pub code: Code,
    /// SQLSTATE (PostgreSQL, MySQL) or the extended result code (SQLite).
    pub sqlstate: String,
    /// The database's own message.
    pub message: String,
    /// The database refused a write because the transaction (or the
    /// connection) is read-only.
    pub read_only_refusal: bool,
}

impl std::fmt::Display for DatabaseFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (SQLSTATE {})", self.message, self.sqlstate)
    }
}

impl Error {
    /// Shorthand for a bad request field.
    pub fn invalid_request(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidRequest {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Shorthand for a parameter that cannot be bound.
    pub fn invalid_parameter(index: usize, message: impl Into<String>) -> Self {
        Error::InvalidParameter {
            index,
            message: message.into(),
        }
    }

    /// The gRPC code the caller sees.
    pub fn code(&self) -> Code {
        match self {
            Error::InvalidRequest { .. }
            | Error::InvalidParameter { .. }
            | Error::UnsupportedColumn { .. } => Code::InvalidArgument,
            Error::ResultTooLarge(_) | Error::PoolExhausted { .. } => Code::ResourceExhausted,
            Error::UnrepresentableValue { .. } => Code::OutOfRange,
            Error::Database(failure) => failure.code,
            Error::Unavailable(_) => Code::Unavailable,
            Error::InBatch { source, .. } => source.code(),
            Error::DeadlineExceeded(_) => Code::DeadlineExceeded,
            Error::SessionLimit(_)
            | Error::StreamLimit(_)
            | Error::ReaderStalled(_)
            | Error::CallerLimit { .. }
            | Error::Overloaded(_) => Code::ResourceExhausted,
            Error::ReadOnlyRole(_) | Error::Forbidden(_) => Code::PermissionDenied,
            Error::SessionProtocol(_) => Code::FailedPrecondition,
            Error::SessionNotFound(_) => Code::NotFound,
            Error::SessionEnded("shutdown") | Error::ShuttingDown => Code::Unavailable,
            Error::SessionEnded("call_deadline") | Error::CommitOutcomeUnknown => {
                Code::DeadlineExceeded
            }
            Error::SessionEnded(_) | Error::TransactionLost => Code::Aborted,
            Error::Internal(_) => Code::Internal,
        }
    }

    /// The SQLSTATE, when the database produced this error.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            Error::Database(failure) | Error::ReadOnlyRole(failure) => Some(&failure.sqlstate),
            Error::InBatch { source, .. } => source.sqlstate(),
            _ => None,
        }
    }

    /// The error a reader sees: the database's refusal to write in a
    /// read-only transaction (PostgreSQL and MySQL SQLSTATE 25006, SQLite
    /// `SQLITE_READONLY`) becomes PERMISSION_DENIED, since it is the
    /// caller's role that forbids the write, not the state of the system
    /// (a writer's own read-only session keeps FAILED_PRECONDITION).
    pub fn for_reader(self) -> Self {
        match self {
            Error::Database(failure) if failure.read_only_refusal => Error::ReadOnlyRole(failure),
            Error::InBatch { index, source } => Error::InBatch {
                index,
                source: Box::new(source.for_reader()),
            },
            other => other,
        }
    }

    /// Reclassifies a cancellation the database reports (PostgreSQL 57014,
    /// SQLite's interrupt, MySQL's KILL QUERY) as DEADLINE_EXCEEDED when the
    /// call's deadline has passed: sqlgate cancelled it for that reason.
    pub fn after_deadline(self, deadline_passed: bool) -> Self {
        match self {
            Error::Database(ref failure)
                if deadline_passed
                    && matches!(failure.code, Code::Cancelled | Code::DeadlineExceeded) =>
            {
                Error::DeadlineExceeded(DeadlinePhase::Database)
            }
            Error::InBatch { index, source } => Error::InBatch {
                index,
                source: Box::new(source.after_deadline(deadline_passed)),
            },
            other => other,
        }
    }

    /// True when PostgreSQL or SQLite refused to run the statement inside a
    /// transaction block (`VACUUM`, `CREATE DATABASE`, …): it may be run
    /// again on its own, since it did nothing.
    pub fn is_forbidden_in_transaction(&self) -> bool {
        match self {
            Error::Database(failure) => {
                failure.sqlstate == "25001"
                    || (failure.sqlstate == "1" && failure.message.contains("within a transaction"))
            }
            _ => false,
        }
    }
}
