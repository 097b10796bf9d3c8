//! sqlgate: a gRPC data-access service that owns the lifecycle of database
//! work for its callers — one managed pool, statements bounded by deadlines,
//! sessions that end with their stream, and health that reflects the pool.
//!
//! # Layout
//!
//! The backend is read once, from the database URL, in
//! [`server::Application::build`]; from there on it is a type parameter
//! (`DB: db::Driver`) of the pool, the engine, the sessions and the services.
//!
//! - [`config`]: typed settings (defaults < file < `SQLGATE_*` env < flags).
//! - [`error`]: the crate's error enum and its one mapping to `tonic::Status`.
//! - [`db`]: the backend and its driver trait, the pool, the one way a
//!   connection is held for work (`db::transaction::Checkout`), cancels.
//! - [`query`]: statement execution (unary, batch, stream), frames, and
//!   value and row conversion per backend.
//! - [`session`]: server-side sessions bound to a stream: one `Session`
//!   type, ended through one `end(reason)`; the registry shutdown waits on.
//! - [`grpc`]: generated code, the services (decode → domain → encode),
//!   wire conversions, and the one tower layer every call passes.
//! - [`health`]: the `grpc.health.v1` reporter and the readiness probe.
//! - [`server`]: [`server::Application`] wires everything, serves, drains.
//! - [`telemetry`]: the log (text or JSON), traces over OTLP, metrics
//!   (Prometheus and OTLP).
//! - `audit`: the audit trail, one JSON line per statement and session end.

#![forbid(unsafe_code)]

pub(crate) mod audit;
pub mod config;
pub mod db;
pub mod error;
pub mod grpc;
pub mod health;
pub mod query;
pub mod server;
pub mod session;
pub mod telemetry;
