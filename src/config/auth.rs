//! The `[auth]` section: who may call sqlgate. Bearer tokens (configured
//! only as SHA-256 hashes, in a file and/or `SQLGATE_AUTH__TOKENS`), JWTs
//! verified against a JWKS file, and client certificates mapped to roles.
//! Nothing configured means authentication is off: every caller is its peer
//! address with role admin, as before authentication existed.
//!
//! Only the values are checked here ([`AuthSettings::validate`]); the files
//! are read when the application is built, and again whenever they change.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::grpc::identity::Role;

/// The services callable without credentials by default: probes and
/// discovery tools carry none.
pub const DEFAULT_OPEN_SERVICES: [&str; 3] = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// The longest clock skew accepted: more would keep an expired token alive
/// for longer than operators expect from its `exp`.
const MAX_CLOCK_SKEW: Duration = Duration::from_secs(600);

/// Authentication; see the module.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// A TOML file of bearer tokens, one `[[token]]` table each with
    /// `name`, `role` and `sha256` (the hex SHA-256 of the token): the
    /// tokens themselves are never stored. Reloaded when it changes.
    pub tokens_file: Option<PathBuf>,
    /// More tokens, as `name:role:sha256` entries (a list, or one string
    /// separated by commas), so that `SQLGATE_AUTH__TOKENS` can carry them.
    #[serde(deserialize_with = "string_list")]
    pub tokens: Vec<String>,
    /// JWTs signed by an identity provider.
    pub jwt: JwtSettings,
    /// Callers identified by their TLS client certificate.
    pub client_certificates: ClientCertificateSettings,
    /// Services (`package.Service`) callable without credentials: health
    /// probes and reflection by default. sqlgate's own services cannot be
    /// opened (turn authentication off instead).
    #[serde(deserialize_with = "string_list")]
    pub open_services: Vec<String>,
    /// How often the tokens file and the JWKS file are checked for
    /// changes; zero reads them only at start-up.
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            tokens_file: None,
            tokens: Vec::new(),
            jwt: JwtSettings::default(),
            client_certificates: ClientCertificateSettings::default(),
            open_services: DEFAULT_OPEN_SERVICES.map(str::to_owned).to_vec(),
            reload_interval: Duration::from_secs(5),
        }
    }
}

/// JWT verification: keys, expected issuer and audience, and the claims
/// that name the caller and its role.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct JwtSettings {
    /// A JWKS file (`{"keys": [...]}`, as an identity provider publishes
    /// it) holding the public keys tokens are signed with (RSA, EC P-256 /
    /// P-384, Ed25519). Reloaded when it changes.
    pub jwks_file: Option<PathBuf>,
    /// Accepted `iss` values; required with `jwks_file`.
    #[serde(deserialize_with = "string_list")]
    pub issuer: Vec<String>,
    /// Accepted `aud` values (a token must name one); required with
    /// `jwks_file`, so that tokens minted for other services are refused.
    #[serde(deserialize_with = "string_list")]
    pub audience: Vec<String>,
    /// Clock difference tolerated on `exp` and `nbf`.
    #[serde(with = "humantime_serde")]
    pub clock_skew: Duration,
    /// The claim that names the caller.
    pub name_claim: String,
    /// The claim that holds the caller's role (`reader`, `writer` or
    /// `admin`; or a list of which the highest counts). A dotted path
    /// (`realm_access.roles`) reaches into nested objects.
    pub role_claim: String,
}

impl Default for JwtSettings {
    fn default() -> Self {
        Self {
            jwks_file: None,
            issuer: Vec::new(),
            audience: Vec::new(),
            clock_skew: Duration::from_secs(60),
            name_claim: "sub".to_owned(),
            role_claim: "role".to_owned(),
        }
    }
}

/// Roles for TLS client certificates (verified by the transport against
/// its client CA).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClientCertificateSettings {
    /// Certificate name (subject common name, or a DNS or URI subject
    /// alternative name) → role.
    #[serde(serialize_with = "role_map")]
    pub roles: BTreeMap<String, Role>,
    /// The role of a certificate none of whose names is in `roles`; unset
    /// refuses such certificates.
    #[serde(serialize_with = "optional_role")]
    pub default_role: Option<Role>,
}

impl ClientCertificateSettings {
    /// Whether certificates identify callers at all.
    pub fn enabled(&self) -> bool {
        !self.roles.is_empty() || self.default_role.is_some()
    }
}

impl AuthSettings {
    /// Whether any credential is configured: if none is, authentication
    /// is off.
    pub fn enabled(&self) -> bool {
        self.tokens_file.is_some()
            || !self.tokens.is_empty()
            || self.jwt.jwks_file.is_some()
            || self.client_certificates.enabled()
    }

    /// Checks the section's values; the error names the setting.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let fail = |key: &str, why: String| Err((format!("auth.{key}"), why));
        for (index, entry) in self.tokens.iter().enumerate() {
            if let Err(why) = TokenEntry::parse(entry) {
                return fail("tokens", format!("entry {}: {why}", index + 1));
            }
        }
        for service in &self.open_services {
            if !is_service_name(service) {
                return fail(
                    "open_services",
                    format!("{service:?} is not a service name like grpc.health.v1.Health"),
                );
            }
            if service.starts_with("sqlgate.") {
                return fail(
                    "open_services",
                    format!(
                        "{service} cannot be opened: its callers would act as admin \
                         (turn authentication off instead)"
                    ),
                );
            }
        }
        let jwt = &self.jwt;
        if jwt.jwks_file.is_some() {
            if jwt.issuer.is_empty() {
                return fail(
                    "jwt.issuer",
                    "required with auth.jwt.jwks_file (tokens of any issuer would pass)".into(),
                );
            }
            if jwt.audience.is_empty() {
                return fail(
                    "jwt.audience",
                    "required with auth.jwt.jwks_file (tokens minted for other services \
                     would pass)"
                        .into(),
                );
            }
        }
        if jwt.clock_skew > MAX_CLOCK_SKEW {
            return fail("jwt.clock_skew", "must be at most 10m".into());
        }
        if jwt.name_claim.trim().is_empty() {
            return fail("jwt.name_claim", "must name a claim".into());
        }
        if jwt.role_claim.trim().is_empty() {
            return fail("jwt.role_claim", "must name a claim".into());
        }
        for name in self.client_certificates.roles.keys() {
            if name.is_empty() || name.chars().any(char::is_control) {
                return fail(
                    "client_certificates.roles",
                    format!("{name:?} is not a certificate name"),
                );
            }
        }
        Ok(())
    }
}

/// One configured bearer token: who holds it, its role, and its hash.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// The caller's name, as logs and `ListSessions` show it.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// The hex SHA-256 of the token.
    pub sha256: String,
}

impl TokenEntry {
    /// Parses `name:role:sha256`, checking each part.
    pub fn parse(entry: &str) -> Result<Self, String> {
        let mut parts = entry.trim().splitn(3, ':');
        let (Some(name), Some(role), Some(sha256)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err("expected name:role:sha256".to_owned());
        };
        let role = match role {
            "reader" => Role::Reader,
            "writer" => Role::Writer,
            "admin" => Role::Admin,
            other => {
                return Err(format!("unknown role {other:?} (reader, writer or admin)"));
            }
        };
        let entry = Self {
            name: name.to_owned(),
            role,
            sha256: sha256.to_owned(),
        };
        entry.check()?;
        Ok(entry)
    }

    /// Checks the name and the hash.
    pub fn check(&self) -> Result<(), String> {
        if !is_token_name(&self.name) {
            return Err(format!(
                "name {:?} must be 1 to 128 visible characters without ':' or ','",
                self.name
            ));
        }
        if self.sha256.len() != 64 || !self.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "the hash of {} must be 64 hex digits (the SHA-256 of the token; \
                 `sqlgate hash-token` prints it)",
                self.name
            ));
        }
        Ok(())
    }
}

/// A token's name: what logs print, so short and visible.
fn is_token_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b':' && b != b',')
}

/// `package.Service`: dotted identifiers.
fn is_service_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|part| {
            !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        })
}

/// A list of strings given as a list, or as one string separated by
/// commas (as environment variables give it; an empty string is an empty
/// list).
fn string_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let items = match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(text) => text.split(',').map(str::to_owned).collect(),
        OneOrMany::Many(items) => items,
    };
    Ok(items
        .into_iter()
        .map(|item| item.trim().to_owned())
        .filter(|item| !item.is_empty())
        .collect())
}

/// Roles as their names (the role type is deserialize-only).
fn role_map<S: Serializer>(
    roles: &BTreeMap<String, Role>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_map(roles.iter().map(|(name, role)| (name, role.name())))
}

/// An optional role as its name.
fn optional_role<S: Serializer>(role: &Option<Role>, serializer: S) -> Result<S::Ok, S::Error> {
    match role {
        Some(role) => serializer.serialize_some(role.name()),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn off_by_default_and_valid() {
        let settings = AuthSettings::default();
        assert!(!settings.enabled());
        settings.validate().expect("defaults validate");
        assert_eq!(settings.open_services.len(), 3);
    }

    #[test]
    fn a_token_entry_is_name_role_and_hash() {
        let entry = TokenEntry::parse(&format!("billing:writer:{HASH}")).expect("parses");
        assert_eq!(entry.name, "billing");
        assert_eq!(entry.role, Role::Writer);
        for (bad, why) in [
            ("billing:writer".to_owned(), "name:role:sha256"),
            (format!("billing:root:{HASH}"), "unknown role"),
            (format!(":admin:{HASH}"), "name"),
            ("billing:admin:abc".to_owned(), "64 hex digits"),
            (
                format!("billing:admin:{}", HASH.replace('9', "z")),
                "64 hex",
            ),
        ] {
            let err = TokenEntry::parse(&bad).expect_err(&bad);
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn bad_values_name_the_setting() {
        let check = |adjust: fn(&mut AuthSettings), key: &str, why: &str| {
            let mut settings = AuthSettings::default();
            adjust(&mut settings);
            let (named, message) = settings.validate().expect_err(key);
            assert_eq!(named, key);
            assert!(message.contains(why), "{key}: {message}");
        };
        check(
            |s| s.tokens = vec!["x:writer:00".into()],
            "auth.tokens",
            "entry 1",
        );
        check(
            |s| s.open_services = vec!["sqlgate.v1.Admin".into()],
            "auth.open_services",
            "admin",
        );
        check(
            |s| s.open_services = vec!["not a service".into()],
            "auth.open_services",
            "service name",
        );
        check(
            |s| {
                s.jwt.jwks_file = Some("keys.json".into());
                s.jwt.audience = vec!["sqlgate".into()];
            },
            "auth.jwt.issuer",
            "required",
        );
        check(
            |s| {
                s.jwt.jwks_file = Some("keys.json".into());
                s.jwt.issuer = vec!["https://idp".into()];
            },
            "auth.jwt.audience",
            "required",
        );
        check(
            |s| s.jwt.clock_skew = Duration::from_secs(3600),
            "auth.jwt.clock_skew",
            "10m",
        );
        check(
            |s| s.jwt.role_claim = " ".into(),
            "auth.jwt.role_claim",
            "claim",
        );
    }

    #[test]
    fn any_credential_turns_it_on() {
        let on = |adjust: fn(&mut AuthSettings)| {
            let mut settings = AuthSettings::default();
            adjust(&mut settings);
            settings.enabled()
        };
        assert!(on(|s| s.tokens = vec![format!("a:reader:{HASH}")]));
        assert!(on(|s| s.tokens_file = Some("tokens.toml".into())));
        assert!(on(|s| s.jwt.jwks_file = Some("keys.json".into())));
        assert!(on(
            |s| s.client_certificates.default_role = Some(Role::Reader)
        ));
        assert!(on(|s| {
            s.client_certificates
                .roles
                .insert("billing".into(), Role::Writer);
        }));
        assert!(!on(|s| s.open_services.clear()));
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn loads_from_a_file_and_the_environment() {
        use std::path::Path;

        use crate::config::{Overrides, Settings};

        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "sqlgate.toml",
                &format!(
                    "[auth]\ntokens = [\"ops:admin:{HASH}\"]\nopen_services = []\n\
                     [auth.jwt]\nissuer = \"https://idp\"\naudience = [\"sqlgate\", \"db\"]\n\
                     clock_skew = \"30s\"\n\
                     [auth.client_certificates]\ndefault_role = \"reader\"\n\
                     [auth.client_certificates.roles]\n\"spiffe://prod/billing\" = \"writer\"\n"
                ),
            )?;
            let load = || Settings::load(Some(Path::new("sqlgate.toml")), &Overrides::default());
            let settings = load().map_err(|e| figment::Error::from(e.to_string()))?;
            let auth = &settings.auth;
            assert!(auth.enabled());
            assert_eq!(auth.tokens.len(), 1);
            assert!(auth.open_services.is_empty());
            assert_eq!(auth.jwt.issuer, ["https://idp"]);
            assert_eq!(auth.jwt.audience, ["sqlgate", "db"]);
            assert_eq!(auth.jwt.clock_skew, Duration::from_secs(30));
            assert_eq!(auth.client_certificates.default_role, Some(Role::Reader));
            assert_eq!(
                auth.client_certificates.roles.get("spiffe://prod/billing"),
                Some(&Role::Writer)
            );

            // Hashes through the environment, comma-separated.
            jail.set_env(
                "SQLGATE_AUTH__TOKENS",
                format!(
                    "billing:writer:{HASH}, reports:reader:{}",
                    HASH.replace('9', "a")
                ),
            );
            jail.set_env("SQLGATE_AUTH__OPEN_SERVICES", "");
            jail.set_env("SQLGATE_AUTH__RELOAD_INTERVAL", "0s");
            let settings = load().map_err(|e| figment::Error::from(e.to_string()))?;
            assert_eq!(settings.auth.tokens.len(), 2);
            assert!(settings.auth.open_services.is_empty());
            assert_eq!(settings.auth.reload_interval, Duration::ZERO);
            jail.set_env(
                "SQLGATE_AUTH__OPEN_SERVICES",
                "grpc.health.v1.Health, grpc.reflection.v1.ServerReflection",
            );
            let settings = load().map_err(|e| figment::Error::from(e.to_string()))?;
            assert_eq!(settings.auth.open_services.len(), 2);

            jail.set_env("SQLGATE_AUTH__CLIENT_CERTIFICATES__DEFAULT_ROLE", "root");
            let err = load().expect_err("an unknown role").to_string();
            assert!(
                err.contains("auth.client_certificates.default_role"),
                "{err}"
            );
            Ok(())
        });
    }
}
