//! The database side: one sea-orm-managed pool, which backend it talks to,
//! how sqlgate acquires from it (counting waiters, which sqlx does not), and
//! what differs between backends outside of values (cancelling a statement).

mod deadline;
mod dialect;
mod interrupt;
mod metrics;
mod pool;
mod timeouts;

pub use deadline::Deadline;
pub(crate) use deadline::{Cut, within};
pub use dialect::Isolation;
pub(crate) use dialect::{Dialect, abandon};
pub(crate) use interrupt::Interrupt;
pub use metrics::PoolSnapshot;
pub use pool::{Backend, Database, DbPool};
