//! Where OTLP export goes, and as what service: one answer for traces and
//! metrics alike, from the `[otlp]` settings or the standard `OTEL_*`
//! variables.

use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;

use crate::config::OtlpSettings;

/// The variables that switch OTLP export on when `otlp.endpoint` is empty.
const ENDPOINT_VARIABLES: [&str; 3] = [
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
];

/// Where export goes, when it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `otlp.endpoint`.
    Configured(String),
    /// The standard variables, read by the exporter itself.
    FromEnvironment,
}

/// The endpoint in force: the setting, else the standard variables, else
/// none (export off; `OTEL_SDK_DISABLED=true` turns it off too).
pub(crate) fn endpoint(settings: &OtlpSettings) -> Option<Endpoint> {
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    if disabled {
        None
    } else if !settings.endpoint.trim().is_empty() {
        Some(Endpoint::Configured(settings.endpoint.trim().to_owned()))
    } else if ENDPOINT_VARIABLES
        .iter()
        .any(|name| std::env::var(name).is_ok_and(|value| !value.trim().is_empty()))
    {
        Some(Endpoint::FromEnvironment)
    } else {
        None
    }
}

impl Endpoint {
    /// Points an exporter `builder` here (from the environment: as the
    /// exporter reads it itself).
    pub(crate) fn aim<B: WithExportConfig>(self, builder: B) -> B {
        match self {
            Endpoint::Configured(url) => builder.with_endpoint(url),
            Endpoint::FromEnvironment => builder,
        }
    }
}

/// The resource every span and metric carries: `service.name` from
/// `otlp.service_name`, else `OTEL_SERVICE_NAME`, else `sqlgate`, and
/// whatever `OTEL_RESOURCE_ATTRIBUTES` adds.
pub(crate) fn resource(settings: &OtlpSettings) -> Resource {
    let builder = Resource::builder();
    let named_by_environment = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.is_empty());
    if !settings.service_name.trim().is_empty() {
        builder
            .with_service_name(settings.service_name.trim().to_owned())
            .build()
    } else if named_by_environment {
        builder.build()
    } else {
        builder.with_service_name("sqlgate").build()
    }
}
