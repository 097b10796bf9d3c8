//! The gRPC surface: the generated code, the service implementations
//! (decode the request → call the domain → encode the answer), and the
//! conversions between wire and domain types.

mod admin_service;
pub mod auth;
mod client;
pub mod codec;
pub mod connect;
pub mod convert;
mod deadline;
pub mod identity;
pub(crate) mod limits;
mod observe;
mod peer;
mod poll;
mod query_service;
mod row_batch;
mod session_service;
pub(crate) mod transport;

pub(crate) use admin_service::AdminService;
pub(crate) use observe::Observers;
pub(crate) use peer::Peer;
pub(crate) use query_service::QueryService;
pub(crate) use session_service::SessionService;

/// Code generated from `proto/sqlgate/v1/*.proto`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("sqlgate.v1");

    /// Hand-written for speed; see its module.
    pub use super::row_batch::RowBatch;

    /// The encoded descriptors of sqlgate's protos (and their imports), for reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/sqlgate_descriptor.bin"));
}
