//! Telemetry, one responsibility per file: the diagnostic log and its
//! format (`log`), metrics and their instruments (`metrics`), the
//! Prometheus endpoint (`prometheus`), traces over OTLP (`traces`), where
//! OTLP export goes (`otlp`), and the process-wide counts metrics report
//! by kind (`counts`), and the names calls are given (`names`). Nothing here ever carries a parameter value or a
//! row.

pub(crate) mod counts;
mod log;
pub(crate) mod metrics;
pub(crate) mod names;
mod otlp;
pub(crate) mod prometheus;
mod span_encode;
mod span_export;
pub(crate) mod traces;

use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::{Registry, layer::SubscriberExt};

use crate::config::Settings;

pub use metrics::Metrics;

/// The process's telemetry pipeline: flushed by [`Telemetry::shutdown`].
#[derive(Debug, Default)]
pub struct Telemetry {
    tracer: Option<SdkTracerProvider>,
}

/// Installs the process-wide log from `settings` (`log_filter`,
/// `log.format`) and, when an OTLP endpoint is set, trace export. Must run inside the Tokio runtime. Safe to call more than once:
/// later calls leave the first in place. A trace exporter that cannot be
/// built is reported and left off: traces never stop sqlgate.
pub fn init(settings: &Settings) -> Telemetry {
    let log = log::layer(&settings.log_filter, settings.log.effective_format());
    let tracer = traces::build(&settings.otlp).unwrap_or_else(|why| {
        eprintln!("sqlgate: traces off: {why}");
        None
    });
    log::install(Registry::default().with(log));
    Telemetry { tracer }
}

impl Telemetry {
    /// Exports the spans still buffered (at shutdown).
    pub fn shutdown(self) {
        if let Some(tracer) = self.tracer
            && let Err(err) = tracer.shutdown()
        {
            eprintln!("sqlgate: final trace export failed: {err}");
        }
    }
}
