//! Wire ↔ domain conversions, split by what they convert:
//!
//! - `value`: single values, their kinds, columns and rows, both ways.
//!   Decoding checks everything a caller can get wrong in a value (no kind,
//!   a malformed date, UUID, decimal or JSON) and says what, never echoing
//!   the value itself.
//! - `request`: whole requests into domain commands ([`statement`],
//!   [`session_command`]); the rules those commands obey (parameter count,
//!   session labels) live in the domain types and are only called from here.
//! - `response`: domain results and events into answers; encoding cannot
//!   fail.

mod request;
mod response;
pub(super) mod value;

pub use request::{session_command, statement};
pub use response::{duration, session_response};
