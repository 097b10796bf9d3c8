//! Typed settings. Sources, later ones winning: built-in defaults, an
//! optional TOML file, `SQLGATE_*` environment variables (nested keys joined
//! by `__`, e.g. `SQLGATE_POOL__MAX_CONNECTIONS`), then command-line flags.
//! [`Settings::validate`] turns bad values into one line naming the setting.

use std::{net::SocketAddr, path::Path, time::Duration};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use serde::{Deserialize, Serialize};

/// The file a fresh checkout uses when no database is configured, so that
/// `sqlgate serve` works with nothing installed.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://sqlgate.db?mode=rwc";

/// Everything the service can be told.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Address the gRPC server listens on; port 0 picks a free port.
    pub listen: SocketAddr,
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
    /// Log filter in `tracing` syntax, e.g. `info,sqlgate=debug`.
    pub log_filter: String,
}

/// Pool sizing and connection lifetimes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PoolSettings {
    /// Most connections open at once.
    pub max_connections: u32,
    /// Connections kept open even when idle.
    pub min_connections: u32,
    /// Longest a call waits for a free connection before RESOURCE_EXHAUSTED.
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    /// An idle connection above `min_connections` is closed after this long.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A connection is replaced after this long, whatever its use.
    #[serde(with = "humantime_serde")]
    pub max_lifetime: Duration,
}

/// Request and result caps.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitSettings {
    /// Longest statement text accepted, in bytes.
    pub max_statement_bytes: usize,
    /// Most parameters on one statement.
    pub max_params: usize,
    /// Rows `Execute` returns when the request's `max_rows` is 0.
    pub default_max_rows: u32,
    /// The largest `max_rows` a caller may ask of `Execute`/`ExecuteBatch`.
    pub max_rows_limit: u32,
    /// Largest inline result (`Execute`, `ExecuteBatch`), in bytes; kept
    /// under gRPC's common 4 MiB message limit.
    pub max_response_bytes: usize,
    /// Most statements in one `ExecuteBatch`.
    pub max_batch_statements: usize,
    /// Most rows in one streamed frame.
    pub stream_batch_rows: usize,
    /// Most bytes in one streamed frame (approximate).
    pub stream_batch_bytes: usize,
    /// Frames buffered per stream before the query waits for the client.
    pub stream_buffer_frames: usize,
}

/// HTTP/2 settings that let the server notice dead peers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TransportSettings {
    /// How often to ping an idle connection.
    #[serde(with = "humantime_serde")]
    pub keepalive_interval: Duration,
    /// How long to wait for a ping's answer before dropping the connection.
    #[serde(with = "humantime_serde")]
    pub keepalive_timeout: Duration,
    /// Largest request message accepted, in bytes.
    pub max_request_bytes: usize,
    /// Calls (streams) one HTTP/2 connection may have open at once. Every
    /// open session is one, so this must stay above `sessions.max_open`;
    /// hyper's own default (200) would refuse a busy client's streams.
    pub max_concurrent_streams: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            database_url: DEFAULT_DATABASE_URL.to_owned(),
            pool: PoolSettings::default(),
            limits: LimitSettings::default(),
            transport: TransportSettings::default(),
            deadlines: DeadlineSettings::default(),
            sessions: SessionSettings::default(),
            health: HealthSettings::default(),
            shutdown: ShutdownSettings::default(),
            log_filter: "info".to_owned(),
        }
    }
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: 16,
            min_connections: 1,
            acquire_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(1800),
        }
    }
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            max_statement_bytes: 1024 * 1024,
            max_params: 65_535,
            default_max_rows: 1_000,
            max_rows_limit: 100_000,
            max_response_bytes: 3 * 1024 * 1024 + 512 * 1024,
            max_batch_statements: 10_000,
            stream_batch_rows: 1_000,
            stream_batch_bytes: 256 * 1024,
            stream_buffer_frames: 4,
        }
    }
}

impl Default for TransportSettings {
    fn default() -> Self {
        Self {
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(5),
            max_request_bytes: 16 * 1024 * 1024,
            max_concurrent_streams: 1024,
        }
    }
}

/// The readiness probe and what makes sqlgate not ready.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HealthSettings {
    /// How often the probe runs.
    #[serde(with = "humantime_serde")]
    pub probe_interval: Duration,
    /// The probe's own budget (acquire + `SELECT 1`).
    #[serde(with = "humantime_serde")]
    pub probe_timeout: Duration,
    /// Consecutive failed probes before readiness goes NOT_SERVING.
    pub failure_threshold: u32,
    /// Consecutive good probes before it comes back.
    pub success_threshold: u32,
    /// Callers waiting for a connection above this count…
    pub saturation_waiters: u32,
    /// …for this long make sqlgate not ready.
    #[serde(with = "humantime_serde")]
    pub saturation_duration: Duration,
}

impl Default for HealthSettings {
    fn default() -> Self {
        Self {
            probe_interval: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(2),
            failure_threshold: 2,
            success_threshold: 2,
            saturation_waiters: 32,
            saturation_duration: Duration::from_secs(10),
        }
    }
}

/// How sqlgate stops.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownSettings {
    /// How long in-flight calls may take to finish after SIGTERM.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
}

impl Default for ShutdownSettings {
    fn default() -> Self {
        Self {
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// Limits on server-side sessions.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SessionSettings {
    /// Most sessions open at once.
    pub max_open: u32,
    /// Most of the pool that sessions may hold, as a fraction of
    /// `pool.max_connections`, so that sessions cannot starve Query calls.
    pub max_pool_share: f64,
    /// Most statements one session may run.
    pub max_statements: u64,
    /// A session is rolled back after this long, whatever it is doing.
    #[serde(with = "humantime_serde")]
    pub max_lifetime: Duration,
    /// Idle time before a session is rolled back, when `begin` sets none.
    #[serde(with = "humantime_serde")]
    pub default_idle_timeout: Duration,
    /// The longest idle timeout a client may ask for.
    #[serde(with = "humantime_serde")]
    pub max_idle_timeout: Duration,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            max_open: 64,
            max_pool_share: 0.75,
            max_statements: 100_000,
            max_lifetime: Duration::from_secs(3600),
            default_idle_timeout: Duration::from_secs(60),
            max_idle_timeout: Duration::from_secs(600),
        }
    }
}

/// A call's budget when the client sends no `grpc-timeout`, and the most
/// it may have when the client asks for more.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MethodBudget {
    /// Used when the client sets no deadline.
    #[serde(with = "humantime_serde")]
    pub default: Duration,
    /// The most a client may ask for.
    #[serde(with = "humantime_serde")]
    pub max: Duration,
}

/// Per-method deadlines. Every call's budget is min(client's
/// `grpc-timeout`, `max`), or `default` when the client sends none.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DeadlineSettings {
    /// `Query.Execute`.
    pub execute: MethodBudget,
    /// `Query.ExecuteStream` (the whole stream).
    pub execute_stream: MethodBudget,
    /// `Query.ExecuteBatch`.
    pub execute_batch: MethodBudget,
    /// One `execute` inside a session (its `timeout` field).
    pub session_execute: MethodBudget,
}

impl Default for DeadlineSettings {
    fn default() -> Self {
        let budget = |default, max| MethodBudget {
            default: Duration::from_secs(default),
            max: Duration::from_secs(max),
        };
        Self {
            execute: budget(30, 300),
            execute_stream: budget(300, 3600),
            execute_batch: budget(60, 600),
            session_execute: budget(30, 300),
        }
    }
}

impl DeadlineSettings {
    /// The longest any single statement may run: the database-side safety
    /// net set on every connection.
    pub fn longest(&self) -> Duration {
        [
            self.execute.max,
            self.execute_stream.max,
            self.execute_batch.max,
            self.session_execute.max,
        ]
        .into_iter()
        .max()
        .unwrap_or_default()
    }
}

/// Settings given on the command line; `None` leaves the lower sources' value.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Overrides {
    /// `--listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
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

    /// Checks values that parse but make no sense together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |key: &str, why: &str| Err(ConfigError(format!("`{key}`: {why}")));
        let scheme = self.database_url.split(':').next().unwrap_or_default();
        if !matches!(
            scheme,
            "postgres" | "postgresql" | "mysql" | "mariadb" | "sqlite"
        ) {
            return fail(
                "database_url",
                "must start with postgres://, mysql://, mariadb:// or sqlite:",
            );
        }
        let pool = &self.pool;
        if pool.max_connections == 0 {
            return fail("pool.max_connections", "must be at least 1");
        }
        if pool.min_connections > pool.max_connections {
            return fail(
                "pool.min_connections",
                "must not exceed pool.max_connections",
            );
        }
        if pool.acquire_timeout.is_zero() {
            return fail("pool.acquire_timeout", "must be more than zero");
        }
        let limits = &self.limits;
        for (key, value) in [
            ("limits.max_statement_bytes", limits.max_statement_bytes),
            ("limits.max_response_bytes", limits.max_response_bytes),
            ("limits.max_batch_statements", limits.max_batch_statements),
            ("limits.stream_batch_rows", limits.stream_batch_rows),
            ("limits.stream_batch_bytes", limits.stream_batch_bytes),
            ("limits.stream_buffer_frames", limits.stream_buffer_frames),
            ("limits.default_max_rows", limits.default_max_rows as usize),
        ] {
            if value == 0 {
                return fail(key, "must be more than zero");
            }
        }
        if limits.default_max_rows > limits.max_rows_limit {
            return fail(
                "limits.default_max_rows",
                "must not exceed limits.max_rows_limit",
            );
        }
        if limits.max_statement_bytes >= self.transport.max_request_bytes {
            return fail(
                "limits.max_statement_bytes",
                "must be below transport.max_request_bytes",
            );
        }
        for (key, budget) in [
            ("deadlines.execute", self.deadlines.execute),
            ("deadlines.execute_stream", self.deadlines.execute_stream),
            ("deadlines.execute_batch", self.deadlines.execute_batch),
            ("deadlines.session_execute", self.deadlines.session_execute),
        ] {
            if budget.default.is_zero() || budget.default > budget.max {
                return fail(key, "default must be more than zero and at most max");
            }
        }
        let sessions = &self.sessions;
        if !(sessions.max_pool_share > 0.0 && sessions.max_pool_share <= 1.0) {
            return fail("sessions.max_pool_share", "must be above 0 and at most 1");
        }
        if sessions.max_open == 0 || sessions.max_statements == 0 {
            return fail(
                "sessions",
                "max_open and max_statements must be more than zero",
            );
        }
        if sessions.default_idle_timeout.is_zero()
            || sessions.default_idle_timeout > sessions.max_idle_timeout
        {
            return fail(
                "sessions.default_idle_timeout",
                "must be more than zero and at most sessions.max_idle_timeout",
            );
        }
        let health = &self.health;
        if health.probe_interval.is_zero()
            || health.probe_timeout.is_zero()
            || health.failure_threshold == 0
            || health.success_threshold == 0
        {
            return fail(
                "health",
                "probe_interval, probe_timeout and the thresholds must be more than zero",
            );
        }
        if self.transport.keepalive_timeout.is_zero() {
            return fail("transport.keepalive_timeout", "must be more than zero");
        }
        if self.transport.max_concurrent_streams == 0 {
            return fail("transport.max_concurrent_streams", "must be more than zero");
        }
        if let Err(err) = tracing_subscriber::EnvFilter::try_new(&self.log_filter) {
            return fail("log_filter", &err.to_string());
        }
        Ok(())
    }
}

/// The top-level keys of [`Settings`].
const TOP_LEVEL_KEYS: [&str; 10] = [
    "listen",
    "database_url",
    "pool",
    "limits",
    "transport",
    "deadlines",
    "sessions",
    "health",
    "shutdown",
    "log_filter",
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
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_use_sqlite() {
        let settings = Settings::default();
        settings.validate().expect("defaults validate");
        assert!(settings.database_url.starts_with("sqlite:"));
    }

    #[test]
    fn min_above_max_names_the_setting() {
        let mut settings = Settings::default();
        settings.pool.min_connections = 50;
        let err = settings.validate().expect_err("must fail").to_string();
        assert!(err.contains("pool.min_connections"), "{err}");
    }

    #[test]
    fn file_env_and_flags_layer_in_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "sqlgate.toml",
                "listen = \"127.0.0.1:7000\"\n[pool]\nmax_connections = 3\nacquire_timeout = \"2s\"\n",
            )?;
            jail.set_env("SQLGATE_POOL__MAX_CONNECTIONS", "7");
            let overrides = Overrides {
                listen: Some("127.0.0.1:7001".parse().expect("addr")),
                ..Overrides::default()
            };
            let settings = Settings::load(Some(Path::new("sqlgate.toml")), &overrides)
                .map_err(|e| figment::Error::from(e.to_string()))?;
            assert_eq!(settings.pool.max_connections, 7);
            assert_eq!(settings.pool.acquire_timeout, Duration::from_secs(2));
            assert_eq!(settings.listen.port(), 7001);
            Ok(())
        });
    }

    #[test]
    fn variables_that_name_no_setting_are_left_alone() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("SQLGATE_PORT", "tcp://10.0.0.1:50051");
            jail.set_env("SQLGATE_SERVICE_HOST", "10.0.0.1");
            jail.set_env("SQLGATE_TEST_POSTGRES_URL", "postgres://elsewhere/postgres");
            jail.set_env("SQLGATE_POOL__MAX_CONNECTIONS", "3");
            let settings = Settings::load(None, &Overrides::default())
                .map_err(|e| figment::Error::from(e.to_string()))?;
            assert_eq!(settings.pool.max_connections, 3);
            jail.set_env("SQLGATE_POOL__MAX_CONECTIONS", "3");
            let err = Settings::load(None, &Overrides::default())
                .expect_err("a misspelt key in a known section")
                .to_string();
            assert!(err.contains("pool.max_conections"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn top_level_keys_are_the_settings_fields() {
        let value = serde_json::to_value(Settings::default()).expect("serializes");
        let mut fields: Vec<_> = value
            .as_object()
            .expect("an object")
            .keys()
            .cloned()
            .collect();
        fields.sort();
        let mut known = TOP_LEVEL_KEYS.map(str::to_owned).to_vec();
        known.sort();
        assert_eq!(fields, known);
    }

    #[test]
    fn malformed_env_value_names_the_key() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("SQLGATE_POOL__MAX_CONNECTIONS", "many");
            let err = Settings::load(None, &Overrides::default())
                .expect_err("must fail")
                .to_string();
            assert!(err.contains("pool.max_connections"), "{err}");
            assert!(!err.contains('\n'));
            Ok(())
        });
    }
}
