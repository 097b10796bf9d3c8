//! sqlgate's integration tests: one test binary; each test starts the real
//! server on an ephemeral port, against a real PostgreSQL, MariaDB or SQLite
//! database of its own, and calls it through the generated clients.

#![allow(unreachable_pub)]

mod bad_input;
mod batch;
mod binary;
mod config;
mod deadlines;
mod discovery;
mod errors;
mod health;
mod helpers;
mod limits;
mod pool_stats;
mod proxy;
mod query;
mod secrets;
mod sessions;
mod streaming;
mod values;
