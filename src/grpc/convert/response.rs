//! Domain results and events → answers on the wire: a unary result
//! ([`pb::ExecuteResponse`]), a stream's frames ([`pb::ResultFrame`]), a
//! session's events ([`session_response`]) with errors as
//! `google.rpc.Status`, and the Admin views of sessions and the pool.
//! Encoding cannot fail: durations and times saturate rather than error,
//! so an answer is never lost to its own encoding.

use prost_types::{Duration as PbDuration, Timestamp};

use super::value::rows;
use crate::{
    db::PoolSnapshot,
    error::Error,
    grpc::pb,
    query::{QueryOutput, StreamEvent},
    session::{SessionEvent, SessionSummary},
};

/// Encodes a session event; [`SessionEvent::Ended`] closes the stream with its status.
pub fn session_response(event: SessionEvent) -> Result<pb::SessionResponse, tonic::Status> {
    use pb::session_response::Response as R;
    let (request_id, response) = match event {
        SessionEvent::Began { session_id } => (0, R::Began(pb::SessionBegan { session_id })),
        SessionEvent::Frame { request_id, event } => (request_id, R::Frame(event.into())),
        SessionEvent::Done { request_id } => (request_id, R::Done(pb::RequestDone {})),
        SessionEvent::Error { request_id, error } => (request_id, R::Error(rpc_status(error))),
        SessionEvent::Committed => (0, R::Committed(pb::SessionCommitted {})),
        SessionEvent::RolledBack => (0, R::RolledBack(pb::SessionRolledBack {})),
        SessionEvent::Ended(error) => return Err(error.into()),
    };
    Ok(pb::SessionResponse {
        request_id,
        response: Some(response),
    })
}

/// An error as a `google.rpc.Status` message, details included.
fn rpc_status(error: Error) -> tonic_types::pb::Status {
    use prost::Message;
    let status: tonic::Status = error.into();
    tonic_types::pb::Status::decode(status.details()).unwrap_or_else(|_| tonic_types::pb::Status {
        code: status.code() as i32,
        message: status.message().to_owned(),
        details: Vec::new(),
    })
}

impl From<QueryOutput> for pb::ExecuteResponse {
    fn from(output: QueryOutput) -> Self {
        pb::ExecuteResponse {
            columns: output.columns.into_iter().map(pb::Column::from).collect(),
            rows: rows(output.rows),
            rows_affected: output.rows_affected,
        }
    }
}

impl From<StreamEvent> for pb::ResultFrame {
    fn from(event: StreamEvent) -> Self {
        use pb::result_frame::Frame;
        let frame = match event {
            StreamEvent::Columns(columns) => Frame::Metadata(pb::ResultMetadata {
                columns: columns.into_iter().map(pb::Column::from).collect(),
            }),
            StreamEvent::Rows(batch) => Frame::Rows(pb::RowBatch::from(batch)),
            StreamEvent::Finished(stats) => Frame::Stats(pb::ResultStats {
                rows_affected: stats.rows_affected,
                rows_returned: stats.rows_returned,
                elapsed: Some(duration(stats.elapsed)),
            }),
        };
        pb::ResultFrame { frame: Some(frame) }
    }
}

/// A std duration on the wire (saturating; never fails).
pub fn duration(value: std::time::Duration) -> PbDuration {
    PbDuration {
        seconds: i64::try_from(value.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(value.subsec_nanos()).unwrap_or_default(),
    }
}

/// A wall-clock time on the wire (saturating; before 1970 reads as 1970).
fn timestamp(value: std::time::SystemTime) -> Timestamp {
    let since_epoch = duration(
        value
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default(),
    );
    Timestamp {
        seconds: since_epoch.seconds,
        nanos: since_epoch.nanos,
    }
}

impl From<SessionSummary> for pb::SessionInfo {
    fn from(summary: SessionSummary) -> Self {
        pb::SessionInfo {
            session_id: summary.id,
            peer: summary.peer,
            labels: summary.labels.into_iter().collect(),
            state: summary.state.name().to_owned(),
            started_at: Some(timestamp(summary.started_at)),
            age: Some(duration(summary.age)),
            idle: Some(duration(summary.idle)),
            current_statement_fingerprint: summary.current_fingerprint.unwrap_or_default(),
            statements_executed: summary.statements,
            caller: summary.caller,
            role: summary.role.name().to_owned(),
            tags: summary.tags,
        }
    }
}

impl From<PoolSnapshot> for pb::PoolStats {
    /// The pool's own figures; Admin adds the session and probe figures.
    fn from(snapshot: PoolSnapshot) -> Self {
        pb::PoolStats {
            backend: snapshot.backend.name().to_owned(),
            max_connections: snapshot.max_connections,
            min_connections: snapshot.min_connections,
            open_connections: snapshot.open_connections,
            idle_connections: snapshot.idle_connections,
            in_use_connections: snapshot.in_use_connections,
            waiting: snapshot.waiting,
            acquire_timeouts: snapshot.acquire_timeouts,
            acquire_wait_p50: Some(duration(snapshot.acquire_wait_p50)),
            acquire_wait_p99: Some(duration(snapshot.acquire_wait_p99)),
            acquire_wait_max: Some(duration(snapshot.acquire_wait_max)),
            calls_total: snapshot.calls_total,
            connections_opened: snapshot.connections_opened,
            connections_closed: snapshot.connections_closed,
            ..pb::PoolStats::default()
        }
    }
}
