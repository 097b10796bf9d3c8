//! Telemetry, one responsibility per file: the diagnostic log and its
//! format (`log`). Nothing here ever carries a parameter value or a row.

mod log;

use crate::config::Settings;

/// Installs the process-wide log subscriber from `settings` (`log_filter`,
/// `log.format`). Safe to call more than once: later calls leave the first
/// in place.
pub fn init(settings: &Settings) {
    log::install(&settings.log_filter, settings.log.effective_format());
}
