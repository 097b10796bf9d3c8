//! The diagnostic log: `key=value` text lines for a person, or JSON lines
//! with the same fields for an aggregator. Either way one line per event,
//! to stderr, filtered by `log_filter`.

use tracing_subscriber::{EnvFilter, Layer, Registry, fmt};

use crate::config::LogFormat;

/// Dependencies whose own logging is noise at `info` (and, for the HTTP/2
/// and gRPC stacks, would make an OTLP exporter log its own requests).
const QUIETED: [&str; 4] = ["sqlx=warn", "h2=warn", "hyper=warn", "tonic=warn"];

/// The log layer, its filter applied to it alone.
pub(super) type LogLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// The log layer for `filter` (`tracing` syntax; an invalid one falls
/// back to `info`, though settings validation refuses it first) and
/// `format`.
pub(super) fn layer(filter: &str, format: LogFormat) -> LogLayer {
    let mut filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    for directive in QUIETED {
        if let Ok(directive) = directive.parse() {
            filter = filter.add_directive(directive);
        }
    }
    match format {
        LogFormat::Text => fmt::layer()
            .with_target(false)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_target(false)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    }
}

/// Installs `subscriber` as the process's. Safe to call more than once:
/// later calls leave the first in place.
pub(super) fn install(subscriber: impl tracing::Subscriber + Send + Sync + 'static) {
    let _ = tracing::subscriber::set_global_default(subscriber);
    // `log` records (from dependencies that use it) are not bridged: the
    // ones worth seeing come through `tracing` already.
}
