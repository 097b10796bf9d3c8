//! Logging. Lines are structured (`key=value`) and never carry parameter
//! values or row contents. OpenTelemetry export comes later.

use tracing_subscriber::{EnvFilter, fmt};

/// Installs the global subscriber with `filter` (`tracing` syntax).
/// Safe to call more than once: later calls leave the first in place.
pub fn init(filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    // sqlx's own statement logging is off in the pool; keep its noise down too.
    let filter = filter
        .add_directive("sqlx=warn".parse().unwrap_or_default())
        .add_directive("h2=warn".parse().unwrap_or_default())
        .add_directive("hyper=warn".parse().unwrap_or_default());
    let _ = fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
