//! Telemetry, one responsibility per file: the diagnostic log and its
//! format (`log`), metrics and their instruments (`metrics`), the
//! Prometheus endpoint (`prometheus`), where OTLP export goes (`otlp`),
//! and the process-wide counts metrics report by kind (`counts`). Nothing
//! here ever carries a parameter value or a row.

pub(crate) mod counts;
mod log;
pub(crate) mod metrics;
mod otlp;
pub(crate) mod prometheus;

use crate::config::Settings;

pub use metrics::Metrics;

/// Installs the process-wide log subscriber from `settings` (`log_filter`,
/// `log.format`). Safe to call more than once: later calls leave the first
/// in place.
pub fn init(settings: &Settings) {
    log::install(&settings.log_filter, settings.log.effective_format());
}
