//! sqlgate: a gRPC data-access service that owns the lifecycle of database
//! work for its callers — one managed pool, statements bounded by deadlines,
//! sessions that end with their stream, and health that reflects the pool.
//!
//! # Layout
//!
//! - [`config`]: typed settings (defaults < file < `SQLGATE_*` env < flags).
//! - [`error`]: the crate's error enum and its one mapping to `tonic::Status`.
//! - [`db`]: pool construction, backend differences, pool figures.
//! - [`query`]: statement execution, and value and row conversion.
//! - [`grpc`]: generated code, service impls (decode → domain → encode).
//! - [`session`]: server-side sessions bound to a stream, and their cleanup.
//! - [`health`]: the `grpc.health.v1` reporter.
//! - [`server`]: [`server::Application`] binds and serves until shut down.
//! - [`telemetry`]: logging setup.

#![forbid(unsafe_code)]

pub mod config;
pub mod db;
pub mod error;
pub mod grpc;
pub mod health;
pub mod query;
pub mod server;
pub mod session;
pub mod telemetry;
