//! Client-side constructors on the generated messages. prost turns every
//! `oneof` into an `Option` of an enum, so a Rust client would spell
//! `SessionRequest { request: Some(Request::Execute(SessionExecute { .. })) }`
//! for each message it sends; these build the common ones in one call. The
//! server never uses them: they are for callers (the integration tests, the
//! benchmark, and any Rust client of sqlgate).

use std::collections::HashMap;

use super::pb::{
    self, BeginSession, CommitSession, RollbackSession, SessionExecute, SessionRequest,
    session_request::Request, value::Kind,
};

impl SessionRequest {
    /// The first message of a session, opening it with `options`
    /// (isolation, read-only, labels, idle timeout).
    pub fn begin(options: BeginSession) -> Self {
        Self::of(Request::Begin(options))
    }

    /// Runs `sql` with `params` in the session under the server's default
    /// statement timeout; `request_id` tags every answer to it.
    pub fn execute(request_id: u64, sql: impl Into<String>, params: Vec<pb::Value>) -> Self {
        Self::of(Request::Execute(SessionExecute::new(
            request_id, sql, params,
        )))
    }

    /// Runs `sql` with `params` and commits right after it (rolls back if
    /// it fails): the session ends with this request.
    pub fn execute_and_commit(
        request_id: u64,
        sql: impl Into<String>,
        params: Vec<pb::Value>,
    ) -> Self {
        Self::of(Request::Execute(
            SessionExecute::new(request_id, sql, params).then_commit(),
        ))
    }

    /// As [`SessionRequest::execute`], with a timeout of its own for this
    /// statement (the server caps it at its maximum).
    pub fn execute_within(
        request_id: u64,
        sql: impl Into<String>,
        params: Vec<pb::Value>,
        timeout: std::time::Duration,
    ) -> Self {
        // Only a timeout beyond i64::MAX seconds fails to convert; the
        // longest one the wire can carry means the same to the server.
        let timeout = prost_types::Duration::try_from(timeout).unwrap_or(prost_types::Duration {
            seconds: i64::MAX,
            nanos: 999_999_999,
        });
        Self::of(Request::Execute(SessionExecute {
            timeout: Some(timeout),
            ..SessionExecute::new(request_id, sql, params)
        }))
    }

    /// Commits the session's transaction and ends the session.
    pub fn commit() -> Self {
        Self::of(Request::Commit(CommitSession {}))
    }

    /// Rolls the session's transaction back and ends the session.
    pub fn rollback() -> Self {
        Self::of(Request::Rollback(RollbackSession {}))
    }

    fn of(request: Request) -> Self {
        Self {
            request: Some(request),
        }
    }
}

impl SessionExecute {
    /// `sql` with `params`, tagged `request_id`, under the server's default
    /// statement timeout.
    pub fn new(request_id: u64, sql: impl Into<String>, params: Vec<pb::Value>) -> Self {
        Self {
            request_id,
            sql: sql.into(),
            params,
            ..Self::default()
        }
    }

    /// The same statement, committing the session right after it (rolling
    /// back if it fails).
    pub fn then_commit(self) -> Self {
        Self {
            commit_after: true,
            ..self
        }
    }
}

impl BeginSession {
    /// These options with `first` as the session's first statement (inline
    /// begin: begin and statement in one message; with
    /// [`SessionExecute::then_commit`], the whole transaction).
    pub fn with_first(self, first: SessionExecute) -> Self {
        Self {
            first: Some(first),
            ..self
        }
    }

    /// Default options with `labels` (shown by `Admin/ListSessions`), the
    /// usual way a caller tags its sessions.
    pub fn labelled<K: Into<String>, V: Into<String>>(
        labels: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            labels: labels
                .into_iter()
                .map(|(key, value)| (key.into(), value.into()))
                .collect::<HashMap<_, _>>(),
            ..Self::default()
        }
    }
}

impl pb::Value {
    /// SQL NULL as a parameter.
    pub fn null() -> Self {
        Kind::NullValue(0).into()
    }

    /// A boolean parameter.
    pub fn bool(value: bool) -> Self {
        Kind::BoolValue(value).into()
    }

    /// An integer parameter (every integer width).
    pub fn int(value: i64) -> Self {
        Kind::IntValue(value).into()
    }

    /// A text parameter.
    pub fn text(value: impl Into<String>) -> Self {
        Kind::TextValue(value.into()).into()
    }

    /// A binary parameter.
    pub fn bytes(value: impl Into<Vec<u8>>) -> Self {
        Kind::BytesValue(value.into()).into()
    }
}

/// Any kind of value as a parameter, without spelling `Some`.
impl From<Kind> for pb::Value {
    fn from(kind: Kind) -> Self {
        Self { kind: Some(kind) }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_timeout_reaches_the_wire_as_given() {
        let request =
            SessionRequest::execute_within(3, "SELECT 1", vec![], Duration::from_millis(1500));
        let Some(Request::Execute(execute)) = request.request else {
            panic!("an execute request: {request:?}");
        };
        assert_eq!(
            execute.timeout,
            Some(prost_types::Duration {
                seconds: 1,
                nanos: 500_000_000
            })
        );
        assert_eq!((execute.request_id, execute.sql.as_str()), (3, "SELECT 1"));
    }

    #[test]
    fn labels_become_the_map() {
        let begin = BeginSession::labelled([("team", "billing")]);
        assert_eq!(
            begin.labels.get("team").map(String::as_str),
            Some("billing")
        );
        assert!(!begin.read_only);
    }
}
