//! The one mapping of an [`Error`] to the wire: a `tonic::Status` whose
//! `google.rpc` details carry the machine-readable reason and SQLSTATE
//! (`ErrorInfo`), the request field at fault (`BadRequest`, with the
//! statement's index inside a batch) and `RetryInfo` where trying again
//! can help. Kept apart so that what callers see is decided in one place.

use std::{borrow::Cow, collections::HashMap, time::Duration};

use tonic::Code;
use tonic_types::{ErrorDetails, StatusExt};

use super::{DeadlinePhase, ERROR_DOMAIN, Error};

impl DeadlinePhase {
    /// The phase as `ErrorInfo.metadata["phase"]` names it.
    fn name(self) -> &'static str {
        match self {
            DeadlinePhase::BeforeStart => "before_start",
            DeadlinePhase::Queue => "queue",
            DeadlinePhase::Database => "database",
        }
    }
}

impl Error {
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
            Error::StreamLimit(_) => "STREAM_LIMIT",
            Error::ReaderStalled(_) => "READER_STALLED",
            Error::SessionProtocol(_) => "SESSION_PROTOCOL",
            Error::SessionNotFound(_) => "SESSION_NOT_FOUND",
            Error::SessionEnded(_) => "SESSION_ENDED",
            Error::TransactionLost => "TRANSACTION_LOST",
            Error::CommitOutcomeUnknown => "COMMIT_OUTCOME_UNKNOWN",
            Error::ReadOnlyRole(_) => "READ_ONLY_ROLE",
            Error::Forbidden(_) => "ROLE_FORBIDS",
            Error::CallerLimit { .. } => "CALLER_LIMIT",
            Error::Overloaded(_) => "OVERLOADED",
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
        if let Error::CallerLimit { setting, .. } = self {
            metadata.insert("limit".to_owned(), (*setting).to_owned());
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
            Error::PoolExhausted { .. } | Error::SessionLimit(_) | Error::Overloaded(_) => {
                Some(Duration::from_millis(100))
            }
            Error::CallerLimit { what: "calls", .. } => Some(Duration::from_millis(100)),
            // A stream holds its connection for long (a session too); a
            // retry right away would most likely be refused again.
            Error::StreamLimit(_) | Error::CallerLimit { .. } => Some(Duration::from_secs(1)),
            Error::Database(failure) if failure.code == Code::Aborted => {
                Some(Duration::from_millis(50))
            }
            _ => None,
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        if let Error::DeadlineExceeded(phase) = &err {
            crate::telemetry::counts::deadline_exceeded(*phase);
        }
        let details = err.details();
        tonic::Status::with_error_details(err.code(), err.to_string(), details)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_readers_refused_write_is_permission_denied_and_keeps_its_sqlstate() {
        let refused = |read_only_refusal| {
            Error::Database(super::super::DatabaseFailure {
                code: Code::FailedPrecondition,
                sqlstate: "25006".to_owned(),
                message: "cannot execute INSERT in a read-only transaction".to_owned(),
                read_only_refusal,
            })
        };
        let in_batch = Error::InBatch {
            index: 1,
            source: Box::new(refused(true)),
        };
        let status: tonic::Status = in_batch.for_reader().into();
        assert_eq!(status.code(), Code::PermissionDenied);
        let info = status
            .get_error_details()
            .error_info()
            .cloned()
            .expect("info");
        assert_eq!(info.reason, "READ_ONLY_ROLE");
        assert_eq!(
            info.metadata.get("sqlstate").map(String::as_str),
            Some("25006")
        );
        assert_eq!(
            info.metadata.get("statement_index").map(String::as_str),
            Some("1")
        );
        // Only a refusal to write changes: other errors stay as they were.
        let other: tonic::Status = refused(false).for_reader().into();
        assert_eq!(other.code(), Code::FailedPrecondition);
    }

    #[test]
    fn limit_refusals_say_which_limit_and_when_to_retry() {
        let status: tonic::Status = Error::CallerLimit {
            what: "sessions",
            limit: 8,
            setting: "limits.per_caller.max_sessions",
        }
        .into();
        assert_eq!(status.code(), Code::ResourceExhausted);
        let details = status.get_error_details();
        let info = details.error_info().expect("info");
        assert_eq!(info.reason, "CALLER_LIMIT");
        assert_eq!(
            info.metadata.get("limit").map(String::as_str),
            Some("limits.per_caller.max_sessions")
        );
        assert_eq!(
            details.retry_info().and_then(|retry| retry.retry_delay),
            Some(Duration::from_secs(1))
        );
        let shed: tonic::Status = Error::Overloaded(1024).into();
        assert_eq!(shed.code(), Code::ResourceExhausted);
        assert!(shed.get_error_details().retry_info().is_some());
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
