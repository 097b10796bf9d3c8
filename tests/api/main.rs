//! sqlgate's integration tests: one test binary; each test starts the real
//! server on an ephemeral port, against a real PostgreSQL, MariaDB or SQLite
//! database of its own, and calls it through the generated clients.

#![allow(unreachable_pub)]

mod audit;
mod audit_table;
mod auth;
mod backend_settings;
mod bad_input;
mod batch;
mod binary;
mod call_log;
mod caller_limits;
mod client_scenario;
mod config;
mod connection_limits;
mod deadlines;
mod discovery;
mod errors;
mod faults;
mod fixtures;
mod fuzz;
mod health;
mod health_shutdown;
mod helpers;
mod inline_begin;
mod isolation;
mod isolation_mysql;
mod isolation_postgres;
mod isolation_sqlite;
mod limits;
mod log_format;
mod log_privacy;
mod memory_bounds;
mod mysql_values;
mod observe;
mod owned_database;
mod pg_activity;
mod pod;
mod pool_stats;
mod postgres_values;
mod prometheus;
mod proxy;
mod query;
mod roles;
mod secrets;
mod session_call_deadline;
mod session_client;
mod session_client_gone;
mod session_end;
mod session_isolation;
mod session_limits;
mod sessions;
mod settings_applied;
mod stream_cancel;
mod stream_deadlines;
mod stream_limits;
mod stream_starvation;
mod streaming;
mod test_database;
mod tls;
mod traces;
mod unix_listen;
mod unix_sockets;
mod value_refusals;
mod values;
