//! Settings on their own: defaults, validation messages, and the layering
//! of file, environment and flags (in figment's `Jail`, so that the tests'
//! environment variables stay their own).

use std::{path::Path, time::Duration};

use super::*;

#[test]
fn defaults_are_valid_and_use_sqlite() {
    let settings = Settings::default();
    settings.validate().expect("defaults validate");
    assert!(settings.database_url.starts_with("sqlite:"));
}

#[test]
fn an_audit_table_name_must_be_plain_identifiers() {
    let mut settings = Settings::default();
    for good in ["sqlgate_audit", "audit.sqlgate_audit", ""] {
        settings.audit.table = good.to_owned();
        settings.validate().expect(good);
    }
    for bad in [
        "audit; drop table x",
        "a.b.c",
        "1audit",
        "\"audit\"",
        "audit.",
    ] {
        settings.audit.table = bad.to_owned();
        let err = settings.validate().expect_err(bad).to_string();
        assert!(err.contains("audit.table"), "{err}");
    }
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
        assert_eq!(settings.listen.tcp().map(|a| a.port()), Some(7001));
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

#[test]
fn stream_share_and_stall_timeout_load_and_are_checked() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("SQLGATE_LIMITS__STREAM_MAX_POOL_SHARE", "0.25");
        jail.set_env("SQLGATE_LIMITS__STREAM_STALL_TIMEOUT", "1500ms");
        let settings = Settings::load(None, &Overrides::default())
            .map_err(|e| figment::Error::from(e.to_string()))?;
        assert_eq!(settings.limits.stream_max_pool_share, 0.25);
        assert_eq!(
            settings.limits.stream_stall_timeout,
            Duration::from_millis(1500)
        );
        Ok(())
    });
    let mut settings = Settings::default();
    settings.limits.stream_max_pool_share = 1.5;
    let err = settings
        .validate()
        .expect_err("a share above 1")
        .to_string();
    assert!(err.contains("limits.stream_max_pool_share"), "{err}");
    let mut settings = Settings::default();
    settings.limits.stream_stall_timeout = Duration::ZERO;
    let err = settings.validate().expect_err("no stall time").to_string();
    assert!(err.contains("limits.stream_stall_timeout"), "{err}");
}

#[test]
fn connection_and_cache_bounds_load_from_env_and_are_checked() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("SQLGATE_TRANSPORT__MAX_CONNECTIONS", "8");
        jail.set_env("SQLGATE_TRANSPORT__HANDSHAKE_TIMEOUT", "2s");
        jail.set_env("SQLGATE_POOL__STATEMENT_CACHE_CAPACITY", "0");
        jail.set_env("SQLGATE_POOL__MAX_CACHED_STATEMENT_BYTES", "1024");
        let settings = Settings::load(None, &Overrides::default())
            .map_err(|e| figment::Error::from(e.to_string()))?;
        assert_eq!(settings.transport.max_connections, 8);
        assert_eq!(settings.transport.handshake_timeout, Duration::from_secs(2));
        assert_eq!(settings.pool.statement_cache_capacity, 0);
        assert_eq!(settings.pool.max_cached_statement_bytes, 1024);
        Ok(())
    });
    for (adjust, key) in [
        (
            (|s: &mut Settings| s.transport.max_connections = 0) as fn(&mut Settings),
            "transport.max_connections",
        ),
        (
            |s: &mut Settings| s.transport.handshake_timeout = Duration::ZERO,
            "transport.handshake_timeout",
        ),
    ] {
        let mut settings = Settings::default();
        adjust(&mut settings);
        let err = settings.validate().expect_err("must fail").to_string();
        assert!(err.contains(key), "{err}");
    }
}

#[test]
fn roles_and_caller_limits_come_from_the_environment_and_are_checked() {
    figment::Jail::expect_with(|jail| {
        let defaults = Settings::load(None, &Overrides::default())
            .map_err(|e| figment::Error::from(e.to_string()))?;
        // Nothing set: everyone may do everything, as before roles.
        assert_eq!(defaults.roles.default, crate::grpc::identity::Role::Admin);
        jail.set_env("SQLGATE_ROLES__DEFAULT", "reader");
        jail.set_env("SQLGATE_LIMITS__PER_CALLER__MAX_STREAMS", "2");
        jail.set_env("SQLGATE_LIMITS__MAX_CONCURRENT_CALLS", "64");
        let settings = Settings::load(None, &Overrides::default())
            .map_err(|e| figment::Error::from(e.to_string()))?;
        assert_eq!(settings.roles.default, crate::grpc::identity::Role::Reader);
        assert_eq!(settings.limits.per_caller.max_streams, 2);
        assert_eq!(settings.limits.per_caller.max_calls, 256);
        assert_eq!(settings.limits.max_concurrent_calls, 64);
        jail.set_env("SQLGATE_ROLES__DEFAULT", "superuser");
        let err = Settings::load(None, &Overrides::default())
            .expect_err("an unknown role")
            .to_string();
        assert!(err.contains("roles.default"), "{err}");
        jail.set_env("SQLGATE_ROLES__DEFAULT", "writer");
        jail.set_env("SQLGATE_LIMITS__PER_CALLER__MAX_SESSIONS", "0");
        let err = Settings::load(None, &Overrides::default())
            .expect_err("no sessions at all")
            .to_string();
        assert!(err.contains("limits.per_caller.max_sessions"), "{err}");
        Ok(())
    });
}

#[test]
fn observability_sections_load_from_the_environment_and_are_checked() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("SQLGATE_LOG__FORMAT", "json");
        jail.set_env("SQLGATE_METRICS__LISTEN", "0.0.0.0:9464");
        jail.set_env("SQLGATE_OTLP__ENDPOINT", "http://collector:4317");
        jail.set_env("SQLGATE_AUDIT__SINK", "stdout");
        jail.set_env("SQLGATE_AUDIT__TABLE", "audit.sqlgate_audit");
        let settings = Settings::load(None, &Overrides::default()).expect("loads");
        assert_eq!(settings.audit.table, "audit.sqlgate_audit");
        assert_eq!(settings.log.format, Some(LogFormat::Json));
        assert_eq!(
            settings.metrics.listen,
            Some("0.0.0.0:9464".parse().expect("address"))
        );
        assert_eq!(settings.otlp.endpoint, "http://collector:4317");
        assert_eq!(settings.audit.sink, "stdout");

        jail.set_env("SQLGATE_METRICS__LISTEN", "");
        let settings = Settings::load(None, &Overrides::default()).expect("loads");
        assert_eq!(settings.metrics.listen, None, "empty means off");

        jail.set_env("SQLGATE_METRICS__LISTEN", "everywhere");
        let err = Settings::load(None, &Overrides::default())
            .expect_err("not an address")
            .to_string();
        assert!(err.contains("metrics.listen"), "{err}");

        jail.set_env("SQLGATE_METRICS__LISTEN", "");
        jail.set_env("SQLGATE_LOG__FORMAT", "xml");
        let err = Settings::load(None, &Overrides::default())
            .expect_err("unknown format")
            .to_string();
        assert!(err.contains("log.format"), "{err}");
        Ok(())
    });
}

#[test]
fn a_unix_socket_and_its_mode_come_from_the_environment() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("SQLGATE_LISTEN", "unix:/run/sqlgate/sqlgate.sock");
        jail.set_env("SQLGATE_LISTEN_MODE", "0600");
        let settings = Settings::load(None, &Overrides::default())
            .map_err(|e| figment::Error::from(e.to_string()))?;
        assert_eq!(
            settings.listen,
            ListenAddress::Unix("/run/sqlgate/sqlgate.sock".into())
        );
        assert_eq!(settings.listen_mode.bits(), 0o600);
        assert_eq!(settings.exposure(false), Ok(Exposure::Guarded));
        jail.set_env("SQLGATE_LISTEN_MODE", "0999");
        let err = Settings::load(None, &Overrides::default())
            .expect_err("not octal")
            .to_string();
        assert!(err.contains("listen_mode"), "{err}");
        Ok(())
    });
}

#[test]
fn listen_mode_in_a_file_is_a_string_of_octal_digits() {
    figment::Jail::expect_with(|jail| {
        jail.create_file(
            "sqlgate.toml",
            "listen = \"unix:sqlgate.sock\"\nlisten_mode = \"0666\"\n",
        )?;
        let settings = Settings::load(Some(Path::new("sqlgate.toml")), &Overrides::default())
            .map_err(|e| figment::Error::from(e.to_string()))?;
        assert_eq!(settings.listen_mode.bits(), 0o666);
        assert_eq!(settings.listen.to_string(), "unix:sqlgate.sock");
        // Every local user may connect: as open as a network address.
        let refused = settings
            .exposure(false)
            .expect_err("open to every local user");
        assert!(refused.contains("every local user"), "{refused}");
        assert!(matches!(settings.exposure(true), Ok(Exposure::Insecure(_))));
        Ok(())
    });
}

#[test]
fn a_toml_octal_integer_mode_that_opens_the_socket_is_refused() {
    // TOML's 0o660 is the integer 432, read by its digits as 0o432: other
    // users could write to the socket. The start-up check refuses it.
    figment::Jail::expect_with(|jail| {
        jail.create_file(
            "sqlgate.toml",
            "listen = \"unix:sqlgate.sock\"\nlisten_mode = 0o660\n",
        )?;
        let settings = Settings::load(Some(Path::new("sqlgate.toml")), &Overrides::default())
            .map_err(|e| figment::Error::from(e.to_string()))?;
        assert_eq!(settings.listen_mode.bits(), 0o432);
        let refused = settings
            .exposure(false)
            .expect_err("open to every local user");
        assert!(refused.contains("listen_mode = \"0432\""), "{refused}");
        Ok(())
    });
}
