//! The crate's error type and its one mapping to the wire: a `tonic::Status`
//! with `google.rpc` details (SQLSTATE in `ErrorInfo`, `BadRequest` for the
//! request's own fields, `RetryInfo` where trying again can help).
//!
//! Database messages may reach the caller; connection strings, passwords and
//! parameter values never do: nothing here formats a parameter's value.

use std::{borrow::Cow, collections::HashMap, time::Duration};

use tonic::Code;
use tonic_types::{ErrorDetails, StatusExt};

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

impl DeadlinePhase {
    fn name(self) -> &'static str {
        match self {
            DeadlinePhase::BeforeStart => "before_start",
            DeadlinePhase::Queue => "queue",
            DeadlinePhase::Database => "database",
        }
    }
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
            Error::SessionLimit(_) => Code::ResourceExhausted,
            Error::SessionProtocol(_) => Code::FailedPrecondition,
            Error::SessionNotFound(_) => Code::NotFound,
            Error::SessionEnded("shutdown") | Error::ShuttingDown => Code::Unavailable,
            Error::SessionEnded(_) => Code::Aborted,
            Error::Internal(_) => Code::Internal,
        }
    }

    /// The SQLSTATE, when the database produced this error.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            Error::Database(failure) => Some(&failure.sqlstate),
            Error::InBatch { source, .. } => source.sqlstate(),
            _ => None,
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

    /// A short machine-readable reason for `ErrorInfo.reason`.
    fn reason(&self) -> &'static str {
        match self {
            Error::InvalidRequest { .. } => "INVALID_REQUEST",
            Error::InvalidParameter { .. } => "INVALID_PARAMETER",
            Error::ResultTooLarge(_) => "RESULT_TOO_LARGE",
            Error::UnsupportedColumn { .. } => "UNSUPPORTED_COLUMN_TYPE",
            Error::UnrepresentableValue { .. } => "UNREPRESENTABLE_VALUE",
            Error::Database(_) => "DATABASE_ERROR",
            Error::PoolExhausted { .. } => "POOL_EXHAUSTED",
            Error::Unavailable(_) => "DATABASE_UNAVAILABLE",
            Error::InBatch { source, .. } => source.reason(),
            Error::DeadlineExceeded(_) => "DEADLINE_EXCEEDED",
            Error::SessionLimit(_) => "SESSION_LIMIT",
            Error::SessionProtocol(_) => "SESSION_PROTOCOL",
            Error::SessionNotFound(_) => "SESSION_NOT_FOUND",
            Error::SessionEnded(_) => "SESSION_ENDED",
            Error::ShuttingDown => "SHUTTING_DOWN",
            Error::Internal(_) => "INTERNAL",
        }
    }

    fn details(&self) -> ErrorDetails {
        let mut metadata = HashMap::new();
        if let Some(sqlstate) = self.sqlstate() {
            metadata.insert("sqlstate".to_owned(), sqlstate.to_owned());
        }
        if let Error::InBatch { index, .. } = self {
            metadata.insert("statement_index".to_owned(), index.to_string());
        }
        if let Error::SessionEnded(reason) = self {
            metadata.insert("end_reason".to_owned(), (*reason).to_owned());
        }
        if let Error::DeadlineExceeded(phase) = self {
            metadata.insert("phase".to_owned(), phase.name().to_owned());
        }
        let mut details = ErrorDetails::with_error_info(self.reason(), ERROR_DOMAIN, metadata);
        let innermost = match self {
            Error::InBatch { source, index } => {
                if let Some((field, description)) = source.field_violation() {
                    details.add_bad_request_violation(
                        format!("statements[{index}].{field}"),
                        description,
                    );
                }
                source.as_ref()
            }
            other => {
                if let Some((field, description)) = other.field_violation() {
                    details.add_bad_request_violation(field, description);
                }
                other
            }
        };
        if let Some(delay) = innermost.retry_after() {
            details.set_retry_info(Some(delay));
        }
        details
    }

    fn field_violation(&self) -> Option<(Cow<'_, str>, String)> {
        match self {
            Error::InvalidRequest { field, message } => {
                Some((Cow::Borrowed(field.as_str()), message.clone()))
            }
            Error::InvalidParameter { index, message } => {
                Some((Cow::Owned(format!("params[{index}]")), message.clone()))
            }
            _ => None,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::PoolExhausted { .. } | Error::SessionLimit(_) => {
                Some(Duration::from_millis(100))
            }
            Error::Database(failure) if failure.code == Code::Aborted => {
                Some(Duration::from_millis(50))
            }
            _ => None,
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        let details = err.details();
        tonic::Status::with_error_details(err.code(), err.to_string(), details)
    }
}

impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::Database(db) => Error::Database(classify(db.as_ref())),
            sqlx::Error::PoolClosed => Error::Unavailable("the pool is closed".to_owned()),
            sqlx::Error::Io(io) => Error::Unavailable(io.kind().to_string()),
            sqlx::Error::Tls(_) => Error::Unavailable("TLS failure".to_owned()),
            sqlx::Error::WorkerCrashed => Error::Unavailable("database worker crashed".to_owned()),
            sqlx::Error::Encode(source) => Error::invalid_request("params", source.to_string()),
            sqlx::Error::ColumnDecode { index, source } => Error::UnrepresentableValue {
                column: index,
                reason: source.to_string(),
            },
            // sqlx's MySQL driver checks the parameter count itself.
            sqlx::Error::Protocol(message) if message.contains("parameters were provided") => {
                let message = message
                    .split(" (sqlx")
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                Error::invalid_request("params", message)
            }
            sqlx::Error::Protocol(message) => Error::Internal(format!("protocol: {message}")),
            other => Error::Internal(other.to_string()),
        }
    }
}

/// Maps a database's own error to a gRPC code: SQLSTATE classes for
/// PostgreSQL, SQLSTATE plus error numbers for MySQL, result codes for SQLite.
fn classify(db: &dyn sqlx::error::DatabaseError) -> DatabaseFailure {
    let sqlstate = db.code().map(|c| c.into_owned()).unwrap_or_default();
    let message = db.message().to_owned();
    let code = if let Some(mysql) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        mysql_code(mysql.number(), &sqlstate)
    } else if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        sqlite_code(sqlstate.parse().unwrap_or(1))
    } else if sqlstate == "57014" && message.contains("statement timeout") {
        Code::DeadlineExceeded
    } else {
        sqlstate_code(&sqlstate)
    };
    DatabaseFailure {
        code,
        sqlstate,
        message,
    }
}

/// PostgreSQL (and MySQL's standard) SQLSTATE → gRPC code.
fn sqlstate_code(sqlstate: &str) -> Code {
    match sqlstate {
        "23505" => Code::AlreadyExists,
        "40001" | "40P01" => Code::Aborted,
        "42501" => Code::PermissionDenied,
        "57014" => Code::Cancelled,
        "25P02" | "25006" => Code::FailedPrecondition,
        // "bind message supplies N parameters, but prepared statement requires M"
        "08P01" => Code::InvalidArgument,
        "57P01" | "57P02" | "57P03" => Code::Unavailable,
        _ => match sqlstate.get(..2).unwrap_or_default() {
            "42" | "22" | "0A" | "26" | "34" | "3D" | "3F" | "07" => Code::InvalidArgument,
            "23" | "25" | "2B" | "55" => Code::FailedPrecondition,
            "28" => Code::Unauthenticated,
            "08" => Code::Unavailable,
            "53" | "54" => Code::ResourceExhausted,
            "40" => Code::Aborted,
            _ => Code::Internal,
        },
    }
}

/// MySQL/MariaDB error numbers that SQLSTATE alone does not tell apart.
fn mysql_code(number: u16, sqlstate: &str) -> Code {
    match number {
        1062 | 1586 => Code::AlreadyExists,
        1213 | 1205 => Code::Aborted,
        1044 | 1142 | 1143 | 1227 => Code::PermissionDenied,
        1045 => Code::Unauthenticated,
        3024 | 1969 => Code::DeadlineExceeded,
        1317 => Code::Cancelled,
        1210 | 1064 | 1146 | 1054 | 1049 | 1149 | 1166 | 1366 | 1292 | 1264 | 1406 => {
            Code::InvalidArgument
        }
        1048 | 1451 | 1452 | 3819 | 4025 => Code::FailedPrecondition,
        _ => sqlstate_code(sqlstate),
    }
}

/// SQLite extended result codes → gRPC code.
fn sqlite_code(code: i32) -> Code {
    match code {
        2067 | 1555 => Code::AlreadyExists,
        5 | 6 | 261 | 517 => Code::Aborted,
        9 => Code::Cancelled,
        3 | 23 => Code::PermissionDenied,
        8 | 1032 => Code::FailedPrecondition,
        13 => Code::ResourceExhausted,
        _ if code & 0xff == 19 => Code::FailedPrecondition,
        1 | 20 | 25 | 18 => Code::InvalidArgument,
        _ => Code::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_map_to_the_designed_codes() {
        assert_eq!(sqlstate_code("42601"), Code::InvalidArgument);
        assert_eq!(sqlstate_code("42P01"), Code::InvalidArgument);
        assert_eq!(sqlstate_code("23505"), Code::AlreadyExists);
        assert_eq!(sqlstate_code("40001"), Code::Aborted);
        assert_eq!(sqlstate_code("40P01"), Code::Aborted);
        assert_eq!(sqlstate_code("42501"), Code::PermissionDenied);
        assert_eq!(sqlstate_code("28P01"), Code::Unauthenticated);
        assert_eq!(sqlstate_code("08006"), Code::Unavailable);
        assert_eq!(sqlstate_code("XX000"), Code::Internal);
        assert_eq!(mysql_code(1062, "23000"), Code::AlreadyExists);
        assert_eq!(mysql_code(1213, "40001"), Code::Aborted);
        assert_eq!(sqlite_code(2067), Code::AlreadyExists);
        assert_eq!(sqlite_code(1299), Code::FailedPrecondition);
    }

    #[test]
    fn pool_exhaustion_carries_retry_info() {
        let status: tonic::Status = Error::PoolExhausted { max_connections: 4 }.into();
        assert_eq!(status.code(), Code::ResourceExhausted);
        let details = status.get_error_details();
        assert!(details.retry_info().is_some());
        assert_eq!(
            details.error_info().map(|i| i.reason.as_str()),
            Some("POOL_EXHAUSTED")
        );
    }

    #[test]
    fn batch_errors_name_the_statement() {
        let err = Error::InBatch {
            index: 2,
            source: Box::new(Error::invalid_parameter(1, "not a uuid")),
        };
        let status: tonic::Status = err.into();
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let violation = &details.bad_request().expect("bad request").field_violations[0];
        assert_eq!(violation.field, "statements[2].params[1]");
        let info = details.error_info().expect("error info");
        assert_eq!(
            info.metadata.get("statement_index").map(String::as_str),
            Some("2")
        );
    }
}
