//! The `[tls]` section: TLS on sqlgate's own listener (and mTLS with a
//! client CA), from PEM files that are read again when they change. Kept in
//! a file of its own, with its checks, so that it reads as one piece.
//!
//! TLS to the *database* is not set here: it is part of `database_url`
//! (`sslmode=verify-full&sslrootcert=…`, `ssl-mode=VERIFY_IDENTITY&ssl-ca=…`).

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// TLS for the gRPC listener. Off unless `cert_file` and `key_file` are
/// set; then sqlgate serves only TLS (HTTP/2 over ALPN `h2`) on `listen`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// The server's certificate chain (PEM): its own certificate first,
    /// then any intermediates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// The private key of the first certificate in `cert_file` (PEM:
    /// PKCS#8, PKCS#1 or SEC1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// CA certificates (PEM) that client certificates must chain to; set
    /// it to verify client certificates (mTLS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<PathBuf>,
    /// Whether clients must present a certificate. Unset: `required` when
    /// `client_ca_file` is set, `none` otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_auth: Option<ClientAuth>,
    /// How often the files are read again to see whether they changed
    /// (Kubernetes replaces mounted secrets by swapping a symlinked
    /// directory, which file notifications on the old files miss).
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
}

impl Default for TlsSettings {
    fn default() -> Self {
        Self {
            cert_file: None,
            key_file: None,
            client_ca_file: None,
            client_auth: None,
            reload_interval: Duration::from_secs(5),
        }
    }
}

/// Whether a TLS client must present a certificate signed by the client CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// No client certificate is asked for.
    None,
    /// A client may present one (it must then be valid); a client without
    /// one connects too, and authentication decides what it may do.
    Optional,
    /// A client without a valid certificate fails the TLS handshake.
    Required,
}

impl ClientAuth {
    /// The name used in configuration and logs.
    pub fn name(self) -> &'static str {
        match self {
            ClientAuth::None => "none",
            ClientAuth::Optional => "optional",
            ClientAuth::Required => "required",
        }
    }
}

impl TlsSettings {
    /// Whether the listener serves TLS.
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some()
    }

    /// Whether clients must, may or need not present a certificate, with
    /// the default filled in (`required` when a client CA is set).
    pub fn client_auth(&self) -> ClientAuth {
        self.client_auth
            .unwrap_or(if self.client_ca_file.is_some() {
                ClientAuth::Required
            } else {
                ClientAuth::None
            })
    }

    /// Checks that the settings make sense together; the files themselves
    /// are read when the server starts.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let fail = |key: &str, why: &str| Err(ConfigError(format!("`tls.{key}`: {why}")));
        for (key, path) in [
            ("cert_file", &self.cert_file),
            ("key_file", &self.key_file),
            ("client_ca_file", &self.client_ca_file),
        ] {
            if path
                .as_ref()
                .is_some_and(|path| path.as_os_str().is_empty())
            {
                return fail(key, "must not be empty (leave it unset instead)");
            }
        }
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => return fail("key_file", "must be set with tls.cert_file"),
            (None, Some(_)) => return fail("cert_file", "must be set with tls.key_file"),
            _ => {}
        }
        if !self.enabled() {
            if self.client_ca_file.is_some() {
                return fail(
                    "client_ca_file",
                    "needs tls.cert_file and tls.key_file (client certificates are asked for in a TLS handshake)",
                );
            }
            if self
                .client_auth
                .is_some_and(|auth| auth != ClientAuth::None)
            {
                return fail(
                    "client_auth",
                    "needs tls.cert_file, tls.key_file and tls.client_ca_file",
                );
            }
        }
        match (self.client_auth, &self.client_ca_file) {
            (Some(auth @ (ClientAuth::Optional | ClientAuth::Required)), None) => {
                return Err(ConfigError(format!(
                    "`tls.client_auth`: `{}` needs tls.client_ca_file (the CA client certificates are verified against)",
                    auth.name()
                )));
            }
            (Some(ClientAuth::None), Some(_)) => {
                return fail(
                    "client_auth",
                    "is `none` but tls.client_ca_file is set: set `optional` or `required`, or unset tls.client_ca_file",
                );
            }
            _ => {}
        }
        if self.reload_interval.is_zero() {
            return fail("reload_interval", "must be more than zero");
        }
        Ok(())
    }
}

#[cfg(test)]
// figment's Jail closures return its (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{Overrides, Settings};

    fn with(adjust: impl FnOnce(&mut TlsSettings)) -> Result<(), String> {
        let mut settings = Settings::default();
        adjust(&mut settings.tls);
        settings.validate().map_err(|err| err.to_string())
    }

    fn files(tls: &mut TlsSettings) {
        tls.cert_file = Some("tls.crt".into());
        tls.key_file = Some("tls.key".into());
    }

    #[test]
    fn off_by_default_and_on_with_a_certificate_and_key() {
        let tls = TlsSettings::default();
        assert!(!tls.enabled());
        assert_eq!(tls.client_auth(), ClientAuth::None);
        assert_eq!(with(files), Ok(()));
    }

    #[test]
    fn a_client_ca_requires_client_certificates_unless_told_otherwise() {
        let mut tls = TlsSettings::default();
        files(&mut tls);
        tls.client_ca_file = Some("ca.crt".into());
        assert_eq!(tls.client_auth(), ClientAuth::Required);
        tls.client_auth = Some(ClientAuth::Optional);
        assert_eq!(tls.client_auth(), ClientAuth::Optional);
    }

    #[test]
    fn settings_that_do_not_fit_together_name_the_key() {
        type Case = (fn(&mut TlsSettings), &'static str);
        let cases: [Case; 8] = [
            (
                |tls| tls.cert_file = Some("tls.crt".into()),
                "`tls.key_file`: must be set with tls.cert_file",
            ),
            (
                |tls| tls.key_file = Some("tls.key".into()),
                "`tls.cert_file`: must be set with tls.key_file",
            ),
            (
                |tls| tls.client_ca_file = Some("ca.crt".into()),
                "`tls.client_ca_file`: needs tls.cert_file",
            ),
            (
                |tls| tls.client_auth = Some(ClientAuth::Required),
                "`tls.client_auth`: needs tls.cert_file",
            ),
            (
                |tls| {
                    files(tls);
                    tls.client_auth = Some(ClientAuth::Optional);
                },
                "`tls.client_auth`: `optional` needs tls.client_ca_file",
            ),
            (
                |tls| {
                    files(tls);
                    tls.client_ca_file = Some("ca.crt".into());
                    tls.client_auth = Some(ClientAuth::None);
                },
                "`tls.client_auth`: is `none` but tls.client_ca_file is set",
            ),
            (
                |tls| {
                    files(tls);
                    tls.reload_interval = Duration::ZERO;
                },
                "`tls.reload_interval`: must be more than zero",
            ),
            (
                |tls| {
                    files(tls);
                    tls.cert_file = Some(PathBuf::new());
                },
                "`tls.cert_file`: must not be empty",
            ),
        ];
        for (adjust, says) in cases {
            let err = with(adjust).expect_err(says);
            assert!(err.contains(says), "{err:?} should say {says:?}");
        }
    }

    #[test]
    fn the_section_loads_from_a_file_and_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "sqlgate.toml",
                "[tls]\ncert_file = \"/etc/sqlgate/tls/tls.crt\"\nkey_file = \"/etc/sqlgate/tls/tls.key\"\n",
            )?;
            jail.set_env("SQLGATE_TLS__CLIENT_CA_FILE", "/etc/sqlgate/ca/ca.crt");
            jail.set_env("SQLGATE_TLS__CLIENT_AUTH", "optional");
            jail.set_env("SQLGATE_TLS__RELOAD_INTERVAL", "30s");
            let settings = Settings::load(Some(Path::new("sqlgate.toml")), &Overrides::default())
                .map_err(|e| figment::Error::from(e.to_string()))?;
            let tls = &settings.tls;
            assert_eq!(
                tls.cert_file.as_deref(),
                Some(Path::new("/etc/sqlgate/tls/tls.crt"))
            );
            assert_eq!(
                tls.key_file.as_deref(),
                Some(Path::new("/etc/sqlgate/tls/tls.key"))
            );
            assert_eq!(
                tls.client_ca_file.as_deref(),
                Some(Path::new("/etc/sqlgate/ca/ca.crt"))
            );
            assert_eq!(tls.client_auth(), ClientAuth::Optional);
            assert_eq!(tls.reload_interval, Duration::from_secs(30));

            jail.set_env("SQLGATE_TLS__CLIENT_AUTH", "sometimes");
            let err = Settings::load(Some(Path::new("sqlgate.toml")), &Overrides::default())
                .expect_err("an unknown client_auth")
                .to_string();
            assert!(err.contains("tls.client_auth"), "{err}");
            jail.set_env("SQLGATE_TLS__CLIENT_AUTH", "required");
            jail.set_env("SQLGATE_TLS__CERT_FLE", "x");
            let err = Settings::load(Some(Path::new("sqlgate.toml")), &Overrides::default())
                .expect_err("a misspelt key")
                .to_string();
            assert!(err.contains("tls.cert_fle"), "{err}");
            Ok(())
        });
    }
}
