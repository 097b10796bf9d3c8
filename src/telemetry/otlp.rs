//! Where OTLP export goes, and as what service: one answer for traces and
//! metrics alike, from the `[otlp]` settings or the standard `OTEL_*`
//! variables.

use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;

use crate::config::OtlpSettings;

/// What is exported: each signal is switched on by its own variable as
/// well as by the common one, as the OpenTelemetry specification reads
/// them (a traces endpoint alone exports no metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    /// Spans.
    Traces,
    /// Metrics.
    Metrics,
}

impl Signal {
    /// The variables that switch this signal's export on when
    /// `otlp.endpoint` is empty.
    fn variables(self) -> [&'static str; 2] {
        match self {
            Signal::Traces => [
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            ],
            Signal::Metrics => [
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
            ],
        }
    }
}

/// Where export goes, when it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `otlp.endpoint`.
    Configured(String),
    /// The standard variables, read by the exporter itself.
    FromEnvironment,
}

/// The endpoint in force for `signal`: the setting, else the standard
/// variables, else none (export off; `OTEL_SDK_DISABLED=true` turns it off
/// too).
pub(crate) fn endpoint(settings: &OtlpSettings, signal: Signal) -> Option<Endpoint> {
    endpoint_in(settings, signal, |name| std::env::var(name).ok())
}

/// [`endpoint`], reading the variables through `variable`.
fn endpoint_in(
    settings: &OtlpSettings,
    signal: Signal,
    variable: impl Fn(&str) -> Option<String>,
) -> Option<Endpoint> {
    let set = |name: &str| variable(name).is_some_and(|value| !value.trim().is_empty());
    let disabled =
        variable("OTEL_SDK_DISABLED").is_some_and(|value| value.eq_ignore_ascii_case("true"));
    if disabled {
        None
    } else if !settings.endpoint.trim().is_empty() {
        Some(Endpoint::Configured(settings.endpoint.trim().to_owned()))
    } else if signal.variables().into_iter().any(set) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn with(variables: &[(&str, &str)], signal: Signal) -> Option<Endpoint> {
        endpoint_in(&OtlpSettings::default(), signal, |name| {
            variables
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        })
    }

    #[test]
    fn each_signal_is_switched_on_by_its_own_variable_or_the_common_one() {
        let common = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")];
        assert_eq!(
            with(&common, Signal::Traces),
            Some(Endpoint::FromEnvironment)
        );
        assert_eq!(
            with(&common, Signal::Metrics),
            Some(Endpoint::FromEnvironment)
        );
        let traces = [(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://collector:4317",
        )];
        assert_eq!(
            with(&traces, Signal::Traces),
            Some(Endpoint::FromEnvironment)
        );
        assert_eq!(with(&traces, Signal::Metrics), None);
        let metrics = [(
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
            "http://collector:4317",
        )];
        assert_eq!(with(&metrics, Signal::Traces), None);
        assert_eq!(
            with(&metrics, Signal::Metrics),
            Some(Endpoint::FromEnvironment)
        );
        assert_eq!(with(&[], Signal::Traces), None);
        let blank = [("OTEL_EXPORTER_OTLP_ENDPOINT", "  ")];
        assert_eq!(with(&blank, Signal::Metrics), None);
    }

    #[test]
    fn the_setting_wins_and_sdk_disabled_turns_everything_off() {
        let settings = OtlpSettings {
            endpoint: " http://configured:4317 ".to_owned(),
            ..OtlpSettings::default()
        };
        assert_eq!(
            endpoint_in(&settings, Signal::Metrics, |_| None),
            Some(Endpoint::Configured("http://configured:4317".to_owned()))
        );
        let disabled = |name: &str| (name == "OTEL_SDK_DISABLED").then(|| "TRUE".to_owned());
        assert_eq!(endpoint_in(&settings, Signal::Traces, disabled), None);
    }
}
