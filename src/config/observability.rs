//! The observability sections: how the diagnostic log is written
//! (`[log]`), where Prometheus scrapes (`[metrics]`), where traces and
//! metrics go over OTLP (`[otlp]`), and where the audit trail goes
//! (`[audit]`). Every one is off or quiet unless set, so that a deployment
//! that sets nothing pays nothing.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// The diagnostic log.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// `text` (`key=value` lines) or `json` (one JSON object a line, for a
    /// log aggregator); unset: JSON when stderr is not a terminal.
    pub format: Option<LogFormat>,
}

/// How a log line is written.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `time LEVEL message key=value…`, for a person at a terminal.
    Text,
    /// One JSON object a line, the same fields as the text line.
    Json,
}

impl LogSettings {
    /// The format in force: the one set, else JSON unless stderr is a
    /// terminal (containers and pipes get lines an aggregator can read).
    pub fn effective_format(&self) -> LogFormat {
        self.format.unwrap_or_else(|| {
            if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                LogFormat::Text
            } else {
                LogFormat::Json
            }
        })
    }
}

/// The Prometheus endpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSettings {
    /// `host:port` of a plain HTTP listener serving `GET /metrics` as
    /// Prometheus text (the chart uses port 9464); empty or absent: off.
    #[serde(with = "optional_address")]
    pub listen: Option<SocketAddr>,
}

/// Traces and metrics over OTLP (gRPC). Off unless an endpoint is set,
/// here or by the standard `OTEL_EXPORTER_OTLP_ENDPOINT` variable (the
/// other standard `OTEL_*` variables, such as `OTEL_SERVICE_NAME` and
/// `OTEL_TRACES_SAMPLER`, are read by the OpenTelemetry SDK itself).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OtlpSettings {
    /// The collector, e.g. `http://otel-collector:4317`; empty: the
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` variable, else off.
    pub endpoint: String,
    /// The `service.name` resource; empty: `OTEL_SERVICE_NAME`, else `sqlgate`.
    pub service_name: String,
}

/// The audit trail: one JSON line per statement and per session end,
/// never a parameter value or a row.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuditSettings {
    /// `stdout`, or a file path (appended to); empty: no audit trail.
    pub sink: String,
    /// A table of the database (`name` or `schema.name`) that receives
    /// every write's audit record in the write's own transaction, so that
    /// the two commit or roll back together; empty: off. Statements that
    /// name it are refused. sqlgate only inserts into it (see the README
    /// for its DDL and the grants).
    pub table: String,
    /// Create `table` at start-up if it is missing (needs CREATE on the
    /// database). Off by default: the operator creates the table and grants
    /// sqlgate INSERT only, and start-up stops if sqlgate cannot insert.
    pub create_table: bool,
}

impl AuditSettings {
    /// Whether `table` is a plain name or `schema.name` (letters, digits
    /// and `_`, not starting with a digit): it is written into statements
    /// and compared with what callers name.
    pub fn table_is_valid(&self) -> bool {
        let table = self.table.trim();
        table.is_empty()
            || (table.split('.').count() <= 2
                && table.split('.').all(|part| {
                    !part.is_empty()
                        && part.len() <= 63
                        && !part.starts_with(|c: char| c.is_ascii_digit())
                        && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                }))
    }
}

/// `listen = ""` and an absent key both mean "off".
mod optional_address {
    use std::net::SocketAddr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        value: &Option<SocketAddr>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(address) => serializer.serialize_str(&address.to_string()),
            None => serializer.serialize_str(""),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<SocketAddr>, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.trim().is_empty() {
            return Ok(None);
        }
        text.trim()
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom("must be host:port, e.g. 0.0.0.0:9464"))
    }
}
