//! The database side: which backend (chosen once, then a type parameter),
//! the pool and how sqlgate acquires from it (counting waiters, which sqlx
//! does not), the one way a connection is held for work and given back
//! (`transaction`), and what differs between backends outside of values.

mod backend;
mod deadline;
mod dialect;
mod driver;
mod first_contact;
mod handle;
mod interrupt;
mod metrics;
mod namespace;
mod pool;
mod timeouts;
pub(crate) mod transaction;

use std::time::Duration;

pub use backend::Backend;
pub use deadline::Deadline;
pub(crate) use deadline::{Cut, within};
pub(crate) use dialect::Dialect;
pub use dialect::Isolation;
pub(crate) use driver::{Driver, cacheable};
pub use handle::{PoolHandle, StreamFigures};
pub(crate) use interrupt::Interrupt;
pub use metrics::{PoolObserver, PoolSnapshot};
pub(crate) use pool::Database;

/// How long any cleanup step may take — a cancel reaching the server, a
/// rollback, a cancelled statement coming back — before sqlgate gives up on
/// the connection and closes it (which makes the server roll back).
pub(crate) const CLEANUP_TIMEOUT: Duration = Duration::from_secs(2);
