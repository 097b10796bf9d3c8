//! The workloads, each run through the direct client and through sqlgate
//! (or, for the storm, through sqlgate with and without the storm).

mod select;
mod session;
mod storm;
mod stream;
mod tracing_cost;

use sqlgate::grpc::pb;

pub(crate) use self::{
    select::{POINT, point_select, range_select},
    session::{cleanup_latency, one_message_session, session_client, session_update},
    storm::deadline_storm,
    stream::{WIDE, read_stream, stream_rows},
    tracing_cost::tracing_cost,
};

/// A unary `Query/Execute` call for `sql`: at most 1,000 rows, and with
/// `timeout` (gRPC's own text, e.g. `20m`) as its `grpc-timeout`.
fn request(
    sql: &str,
    params: Vec<pb::Value>,
    timeout: Option<&str>,
) -> tonic::Request<pb::ExecuteRequest> {
    let mut request = tonic::Request::new(pb::ExecuteRequest {
        sql: sql.into(),
        params,
        max_rows: 1000,
    });
    if let Some(Ok(value)) = timeout.map(str::parse) {
        request.metadata_mut().insert("grpc-timeout", value);
    }
    request
}
