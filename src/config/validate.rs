//! The checks on values that parse but make no sense, alone or together
//! (a pool of zero, a default deadline above its maximum, …). Each failure
//! is one line naming the setting, so that start-up says what to fix.

use super::{ConfigError, ListenAddress, Settings};

impl Settings {
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
        if !self.audit.table_is_valid() {
            return fail(
                "audit.table",
                "must be a table name or schema.name (letters, digits, _)",
            );
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
        if !(limits.stream_max_pool_share > 0.0 && limits.stream_max_pool_share <= 1.0) {
            return fail(
                "limits.stream_max_pool_share",
                "must be above 0 and at most 1",
            );
        }
        if limits.stream_stall_timeout.is_zero() {
            return fail("limits.stream_stall_timeout", "must be more than zero");
        }
        if limits.max_concurrent_calls == 0 {
            return fail("limits.max_concurrent_calls", "must be at least 1");
        }
        let per_caller = &limits.per_caller;
        for (key, value) in [
            ("limits.per_caller.max_calls", per_caller.max_calls),
            ("limits.per_caller.max_streams", per_caller.max_streams),
            ("limits.per_caller.max_sessions", per_caller.max_sessions),
        ] {
            if value == 0 {
                return fail(key, "must be at least 1");
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
        if self.transport.handshake_timeout.is_zero() {
            return fail("transport.handshake_timeout", "must be more than zero");
        }
        if self.transport.max_connections == 0 {
            return fail("transport.max_connections", "must be at least 1");
        }
        if self
            .transport
            .max_connection_age
            .is_some_and(|age| age.is_zero())
        {
            return fail(
                "transport.max_connection_age",
                "must be more than zero (leave it unset for no limit)",
            );
        }
        if let Err((key, why)) = self.auth.validate() {
            return fail(&key, &why);
        }
        self.tls.validate()?;
        if let Err(err) = tracing_subscriber::EnvFilter::try_new(&self.log_filter) {
            return fail("log_filter", &err.to_string());
        }
        Ok(())
    }
}

/// Who can reach sqlgate's listener, and with what protection: the
/// start-up check that keeps a default configuration from serving any SQL
/// to a whole network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exposure {
    /// Loopback only, or protected by TLS and/or authentication.
    Guarded,
    /// A non-loopback address without TLS or authentication, allowed by
    /// `--insecure`: say so, loudly, once.
    Insecure(String),
}

impl Settings {
    /// Refuses (with one line naming what to set) a `listen` that is
    /// neither loopback nor a Unix socket (reached only through the file
    /// system, guarded by `listen_mode`)
    /// with neither TLS nor authentication, unless `insecure`; then it is
    /// [`Exposure::Insecure`] with the warning to log.
    pub fn exposure(&self, insecure: bool) -> Result<Exposure, String> {
        // A Unix socket whose mode lets any local user connect is as open
        // as a network address: every process on the host is a caller.
        let open_to_all_users =
            matches!(self.listen, ListenAddress::Unix(_)) && self.listen_mode.bits() & 0o007 != 0;
        let guarded = self.listen.is_local() && !open_to_all_users;
        if guarded || self.tls.enabled() || self.auth.enabled() {
            return Ok(Exposure::Guarded);
        }
        let what = if open_to_all_users {
            format!(
                "listen = {} has listen_mode = \"{}\", which lets every local user connect, and \
                 neither TLS ([tls]) nor authentication ([auth]) is configured: any process on \
                 the host could run any SQL as sqlgate's database user (write the mode as a \
                 string of octal digits, e.g. listen_mode = \"0660\")",
                self.listen, self.listen_mode
            )
        } else {
            format!(
                "listen = {} is not a loopback address and neither TLS ([tls]) nor \
                 authentication ([auth]) is configured: anyone who can reach it could run any \
                 SQL as sqlgate's database user",
                self.listen
            )
        };
        if insecure {
            Ok(Exposure::Insecure(format!(
                "{what} (started with --insecure)"
            )))
        } else {
            Err(format!(
                "{what}; configure TLS or authentication, or start with --insecure"
            ))
        }
    }
}
