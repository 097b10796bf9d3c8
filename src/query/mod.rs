//! Statement execution: validated statements in, domain values out. The
//! gRPC layer only decodes requests into [`Statement`]s and encodes what
//! comes back; everything about running SQL lives here.

mod analysed;
pub(crate) mod codec;
mod engine;
pub(crate) mod executor;
pub mod fingerprint;
pub(crate) mod frames;
mod mysql;
pub mod operation;
mod postgres;
pub(crate) mod sql;
mod sqlite;
pub mod statement;
pub(crate) mod stream;
pub mod value;
pub mod wire;

pub(crate) use engine::QueryEngine;
pub use executor::QueryOutput;
pub use frames::{StreamEvent, StreamStats};
pub use statement::Statement;
pub use value::{ColumnInfo, SqlValue, ValueKind};
