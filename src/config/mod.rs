//! Typed settings. Sources, later ones winning: built-in defaults, an
//! optional TOML file, `SQLGATE_*` environment variables (nested keys joined
//! by `__`, e.g. `SQLGATE_POOL__MAX_CONNECTIONS`), then command-line flags.
//! [`Settings::validate`] turns bad values into one line naming the setting.
//!
//! This module holds the top-level [`Settings`] and their loading. The
//! sections' own types (pool, limits, deadlines, sessions, health,
//! transport, shutdown) live in `sections` and are re-exported here, so
//! that `config::LimitSettings` and the like keep their paths; the checks
//! on loaded values live in `validate`. The `tls` section, its checks
//! included, lives in `tls`.

mod auth;
mod listen;
mod observability;
mod sections;
mod tls;
mod validate;

use std::{net::SocketAddr, path::Path};

pub use listen::{ListenAddress, MAX_UNIX_PATH_BYTES, SocketMode};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use serde::{Deserialize, Serialize};

pub use auth::{
    AuthSettings, ClientCertificateSettings, DEFAULT_OPEN_SERVICES, JwtSettings, TokenEntry,
};
pub use observability::{AuditSettings, LogFormat, LogSettings, MetricsSettings, OtlpSettings};
pub use sections::{
    CallerLimitSettings, DeadlineSettings, HealthSettings, LimitSettings, MethodBudget,
    PoolSettings, RoleSettings, SessionSettings, ShutdownSettings, TransportSettings,
};
pub use tls::{ClientAuth, TlsSettings};
pub use validate::Exposure;

/// The file a fresh checkout uses when no database is configured, so that
/// `sqlgate serve` works with nothing installed.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://sqlgate.db?mode=rwc";

/// Everything the service can be told.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Where the gRPC server listens: `host:port` (port 0 picks a free
    /// port) or `unix:PATH` (a Unix domain socket, for a sidecar).
    pub listen: ListenAddress,
    /// The permission bits of the Unix socket's file (with `listen =
    /// "unix:…"`; ignored on TCP).
    pub listen_mode: SocketMode,
    /// `postgres://…`, `mysql://…` (MariaDB too) or `sqlite://…`.
    pub database_url: String,
    /// The connection pool.
    pub pool: PoolSettings,
    /// Caps that protect the service and its callers from huge requests and results.
    pub limits: LimitSettings,
    /// The HTTP/2 transport.
    pub transport: TransportSettings,
    /// How long each kind of call may take.
    pub deadlines: DeadlineSettings,
    /// Server-side sessions (`Sessions.Attach`).
    pub sessions: SessionSettings,
    /// The readiness probe.
    pub health: HealthSettings,
    /// Shutting down.
    pub shutdown: ShutdownSettings,
    /// Who may call: tokens, JWTs, client certificates (off when none is configured).
    pub auth: AuthSettings,
    /// TLS (and mTLS) on the listener.
    pub tls: TlsSettings,
    /// What callers may do.
    pub roles: RoleSettings,
    /// Log filter in `tracing` syntax, e.g. `info,sqlgate=debug`.
    pub log_filter: String,
    /// How log lines are written (`text` or `json`).
    pub log: LogSettings,
    /// The Prometheus endpoint (off unless `listen` is set).
    pub metrics: MetricsSettings,
    /// Traces and metrics over OTLP (off unless an endpoint is set).
    pub otlp: OtlpSettings,
    /// The audit trail (off unless a sink is set).
    pub audit: AuditSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: ListenAddress::Tcp(SocketAddr::from(([127, 0, 0, 1], 50051))),
            listen_mode: SocketMode::default(),
            database_url: DEFAULT_DATABASE_URL.to_owned(),
            pool: PoolSettings::default(),
            limits: LimitSettings::default(),
            transport: TransportSettings::default(),
            deadlines: DeadlineSettings::default(),
            sessions: SessionSettings::default(),
            health: HealthSettings::default(),
            shutdown: ShutdownSettings::default(),
            auth: AuthSettings::default(),
            tls: TlsSettings::default(),
            roles: RoleSettings::default(),
            log_filter: "info".to_owned(),
            log: LogSettings::default(),
            metrics: MetricsSettings::default(),
            otlp: OtlpSettings::default(),
            audit: AuditSettings::default(),
        }
    }
}

/// Settings given on the command line; `None` leaves the lower sources' value.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Overrides {
    /// `--listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<ListenAddress>,
    /// `--database-url`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    /// `--log-filter`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_filter: Option<String>,
}

/// A setting that is missing, malformed or out of range.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {0}")]
pub struct ConfigError(String);

impl Settings {
    /// Loads the settings from all sources and validates them.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError(format!(
                    "--config: file {} does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file(path));
        }
        let settings: Settings = figment
            .merge(
                Env::prefixed("SQLGATE_")
                    .filter(|key| names_a_setting(key.as_str()))
                    .split("__"),
            )
            .merge(Serialized::defaults(overrides))
            .extract()
            .map_err(|err| ConfigError(one_line(&err)))?;
        settings.validate()?;
        Ok(settings)
    }
}

/// The top-level keys of [`Settings`].
const TOP_LEVEL_KEYS: [&str; 18] = [
    "listen",
    "listen_mode",
    "database_url",
    "pool",
    "limits",
    "transport",
    "deadlines",
    "sessions",
    "health",
    "shutdown",
    "auth",
    "tls",
    "roles",
    "log_filter",
    "log",
    "metrics",
    "otlp",
    "audit",
];

/// Whether a `SQLGATE_*` variable (its name without the prefix) is meant
/// for the settings. Others are left alone: Kubernetes' service links for a
/// Service named `sqlgate` (`SQLGATE_PORT`, `SQLGATE_SERVICE_HOST`, …) and
/// the test suite's `SQLGATE_TEST_*` would otherwise stop start-up. A
/// misspelt key under a known section (`SQLGATE_POOL__MAX_CONECTIONS`) is
/// still refused.
fn names_a_setting(key: &str) -> bool {
    let section = key.split("__").next().unwrap_or_default();
    TOP_LEVEL_KEYS
        .iter()
        .any(|known| known.eq_ignore_ascii_case(section))
}

/// figment reports every failed key; start-up wants one readable line.
fn one_line(err: &figment::Error) -> String {
    let mut text = err.to_string().replace('\n', "; ");
    if let Some(first) = err.clone().into_iter().next()
        && !first.path.is_empty()
    {
        text = format!("`{}`: {}", first.path.join("."), first.kind);
        if let Some(source) = &first.metadata {
            text.push_str(&format!(" (from {})", source.name));
        }
    }
    text
}

#[cfg(test)]
// figment's Jail closures return its (large) error type.
#[allow(clippy::result_large_err)]
mod tests;
