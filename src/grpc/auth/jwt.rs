//! JWTs signed by an identity provider, verified against the public keys of
//! a JWKS file: the signature (with an algorithm the key is meant for, never
//! the token's say alone: no `none`, no HMAC with a public key), then `iss`,
//! `aud`, `exp` and `nbf` (within the configured clock skew), then the
//! caller's name and role from the configured claims.

use std::{
    borrow::Cow,
    collections::HashMap,
    path::Path,
    sync::{Arc, PoisonError, RwLock},
};

use jsonwebtoken::{
    Algorithm, DecodingKey, Validation,
    errors::ErrorKind,
    jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm, PublicKeyUse},
};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::refusal::Refusal;
use crate::{
    config::JwtSettings,
    grpc::identity::{Identity, Proof, Role},
};

/// The longest caller name taken from a token: it is written to logs.
const MAX_NAME_BYTES: usize = 256;

/// Tokens remembered as verified. A client sends the same token with every
/// call until it renews it, and verifying a signature costs far more than a
/// call's other work; the bound keeps a flood of distinct tokens from
/// growing memory (at 4,096 the expired ones go, then all).
const VERIFIED_CAPACITY: usize = 4096;

/// One usable key of the set.
struct Key {
    /// `kid`, if the set names it.
    id: Option<String>,
    /// The algorithms it may verify: the one its `alg` names, or those its
    /// type and curve allow.
    algorithms: Vec<Algorithm>,
    key: DecodingKey,
}

/// The keys of a JWKS file, and the tokens verified with them (a new set
/// starts with none).
pub(super) struct Keys {
    keys: Vec<Key>,
    /// SHA-256 of a token → what it proved, until when.
    verified: RwLock<HashMap<[u8; 32], Verified>>,
}

/// A token that passed verification: its identity, valid from `nbf` (if
/// it has one) until `exp`, in seconds since the epoch. Its signature,
/// issuer and audience cannot change; its time is checked again at each use.
#[derive(Debug, Clone)]
struct Verified {
    identity: Identity,
    not_before: Option<u64>,
    expires: u64,
}

impl Verified {
    /// Whether it is valid at `now`, give or take `leeway` seconds, as
    /// verification judges it.
    fn valid_at(&self, now: u64, leeway: u64) -> bool {
        self.expires.saturating_add(leeway) >= now
            && self
                .not_before
                .is_none_or(|nbf| nbf <= now.saturating_add(leeway))
    }
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field(
                "ids",
                &self
                    .keys
                    .iter()
                    .map(|key| key.id.as_deref())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Keys {
    /// The signing keys of the JWKS `text` (read from `path`, named in
    /// errors). Encryption keys are skipped; symmetric keys, keys of no
    /// supported type and a set without a usable key are refused.
    pub(super) fn parse(path: &Path, text: &str) -> Result<Self, String> {
        let at = |why: String| format!("{}: {why}", path.display());
        let set: JwkSet = serde_json::from_str(text)
            .map_err(|err| at(format!("not a JWKS ({{\"keys\": [...]}}): {err}")))?;
        let mut keys = Vec::new();
        for (index, jwk) in set.keys.iter().enumerate() {
            let name = jwk
                .common
                .key_id
                .as_deref()
                .map_or_else(|| format!("key {}", index + 1), |id| format!("key {id:?}"));
            if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
                continue;
            }
            let allowed: &[Algorithm] = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => &[
                    Algorithm::RS256,
                    Algorithm::RS384,
                    Algorithm::RS512,
                    Algorithm::PS256,
                    Algorithm::PS384,
                    Algorithm::PS512,
                ],
                AlgorithmParameters::EllipticCurve(params) => match params.curve {
                    EllipticCurve::P256 => &[Algorithm::ES256],
                    EllipticCurve::P384 => &[Algorithm::ES384],
                    _ => return Err(at(format!("{name}: unsupported curve"))),
                },
                AlgorithmParameters::OctetKeyPair(params)
                    if params.curve == EllipticCurve::Ed25519 =>
                {
                    &[Algorithm::EdDSA]
                }
                AlgorithmParameters::OctetKey(_) => {
                    return Err(at(format!(
                        "{name}: symmetric (oct) keys are not accepted; \
                         use the identity provider's public keys"
                    )));
                }
                _ => return Err(at(format!("{name}: unsupported key type"))),
            };
            let algorithms = match jwk.common.key_algorithm {
                None => allowed.to_vec(),
                Some(named) => match Algorithm::try_from(named) {
                    Ok(algorithm) if allowed.contains(&algorithm) => vec![algorithm],
                    _ if is_encryption(named) => continue,
                    _ => {
                        return Err(at(format!(
                            "{name}: alg {named} does not fit the key's type"
                        )));
                    }
                },
            };
            let key = DecodingKey::from_jwk(jwk).map_err(|err| at(format!("{name}: {err}")))?;
            keys.push(Key {
                id: jwk.common.key_id.clone(),
                algorithms,
                key,
            });
        }
        if keys.is_empty() {
            return Err(at("no signing key".to_owned()));
        }
        Ok(Self {
            keys,
            verified: RwLock::new(HashMap::new()),
        })
    }

    /// What `digest`'s token proved, if it was verified and is valid now.
    fn recall(&self, digest: &[u8; 32], now: u64, leeway: u64) -> Option<Identity> {
        let verified = self.verified.read().unwrap_or_else(PoisonError::into_inner);
        verified
            .get(digest)
            .filter(|entry| entry.valid_at(now, leeway))
            .map(|entry| entry.identity.clone())
    }

    /// Remembers that `digest`'s token proved `entry`.
    fn remember(&self, digest: [u8; 32], entry: Verified, now: u64, leeway: u64) {
        let mut verified = self
            .verified
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if verified.len() >= VERIFIED_CAPACITY {
            verified.retain(|_, entry| entry.valid_at(now, leeway));
            if verified.len() >= VERIFIED_CAPACITY {
                verified.clear();
            }
        }
        verified.insert(digest, entry);
    }

    /// How many keys are usable.
    pub(super) fn len(&self) -> usize {
        self.keys.len()
    }
}

/// Whether a JWK `alg` names an encryption algorithm (such keys are skipped).
fn is_encryption(algorithm: KeyAlgorithm) -> bool {
    matches!(
        algorithm,
        KeyAlgorithm::RSA1_5 | KeyAlgorithm::RSA_OAEP | KeyAlgorithm::RSA_OAEP_256
    )
}

/// What a token must satisfy, and where its name and role are.
#[derive(Debug)]
pub(super) struct Policy {
    issuer: Vec<String>,
    audience: Vec<String>,
    leeway: u64,
    name_claim: String,
    role_claim: String,
}

impl Policy {
    pub(super) fn new(settings: &JwtSettings) -> Self {
        Self {
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            leeway: settings.clock_skew.as_secs(),
            name_claim: settings.name_claim.clone(),
            role_claim: settings.role_claim.clone(),
        }
    }

    /// The identity `token` proves, or why it proves none: remembered if
    /// it was verified before and is still valid, else verified now.
    pub(super) fn verify(&self, keys: &Keys, token: &str) -> Result<Identity, Refusal> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = jsonwebtoken::get_current_timestamp();
        if let Some(identity) = keys.recall(&digest, now, self.leeway) {
            return Ok(identity);
        }
        let verified = self.verify_now(keys, token)?;
        let identity = verified.identity.clone();
        keys.remember(digest, verified, now, self.leeway);
        Ok(identity)
    }

    /// Verifies `token`'s signature and claims.
    fn verify_now(&self, keys: &Keys, token: &str) -> Result<Verified, Refusal> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| Refusal::new("malformed token header (or an unsupported alg)"))?;
        let mut candidates = keys
            .keys
            .iter()
            .filter(|key| header.kid.is_none() || key.id == header.kid)
            .peekable();
        if candidates.peek().is_none() {
            return Err(Refusal::new("unknown key id"));
        }
        let mut candidates = candidates
            .filter(|key| key.algorithms.contains(&header.alg))
            .peekable();
        if candidates.peek().is_none() {
            return Err(Refusal::new("algorithm not accepted for this key"));
        }
        let mut refusal = Refusal::new("bad signature");
        for key in candidates {
            match jsonwebtoken::decode::<Map<String, Value>>(
                token,
                &key.key,
                &self.validation(header.alg),
            ) {
                Ok(data) => {
                    let time = |claim: &str| data.claims.get(claim).and_then(Value::as_f64);
                    return Ok(Verified {
                        identity: self.identity(&data.claims)?,
                        // Verification accepted them as whole seconds.
                        not_before: time("nbf").map(|nbf| nbf.round() as u64),
                        expires: time("exp").map_or(0, |exp| exp.round() as u64),
                    });
                }
                Err(err) => {
                    refusal = refused(err.kind());
                    if !matches!(err.kind(), ErrorKind::InvalidSignature) {
                        // The signature held: the claims are what is wrong.
                        break;
                    }
                }
            }
        }
        Err(refusal)
    }

    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.leeway = self.leeway;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.set_issuer(&self.issuer);
        validation.set_audience(&self.audience);
        validation
    }

    /// The caller's name and role from verified `claims`.
    fn identity(&self, claims: &Map<String, Value>) -> Result<Identity, Refusal> {
        let name = match claim(claims, &self.name_claim) {
            Some(Value::String(name)) if is_loggable(name) => name,
            Some(Value::String(_)) => return Err(Refusal::new("unusable caller name in token")),
            _ => {
                return Err(Refusal::owned(format!(
                    "token has no {} claim",
                    self.name_claim
                )));
            }
        };
        let role = match claim(claims, &self.role_claim) {
            Some(Value::String(role)) => role_named(role),
            Some(Value::Array(roles)) => roles
                .iter()
                .filter_map(|role| role.as_str().and_then(role_named))
                .max(),
            None => {
                return Err(Refusal::owned(format!(
                    "token has no {} claim",
                    self.role_claim
                )));
            }
            Some(_) => None,
        };
        let role = role.ok_or_else(|| Refusal::new("unknown role in token"))?;
        Ok(Identity {
            name: Arc::from(name.as_str()),
            role,
            proof: Proof::Jwt,
        })
    }
}

/// The claim `name`, or, if there is none of that name and it has dots, the
/// value at that path through nested objects (`realm_access.roles`).
fn claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(value) = claims.get(name) {
        return Some(value);
    }
    let mut parts = name.split('.');
    let mut value = claims.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    Some(value)
}

/// The role a claim value names, if it names one.
fn role_named(name: &str) -> Option<Role> {
    match name {
        "reader" => Some(Role::Reader),
        "writer" => Some(Role::Writer),
        "admin" => Some(Role::Admin),
        _ => None,
    }
}

/// A name that may go into a log line as it is.
fn is_loggable(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_BYTES && !name.chars().any(char::is_control)
}

/// The short reason a verification error gives the caller.
fn refused(kind: &ErrorKind) -> Refusal {
    Refusal(Cow::Borrowed(match kind {
        ErrorKind::InvalidSignature => "bad signature",
        ErrorKind::ExpiredSignature => "token expired",
        ErrorKind::ImmatureSignature => "token not yet valid (nbf)",
        ErrorKind::InvalidIssuer => "wrong issuer",
        ErrorKind::InvalidAudience => "wrong audience",
        ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
            "exp" => "token has no exp claim",
            "iss" => "token has no iss claim",
            "aud" => "token has no aud claim",
            _ => "token lacks a required claim",
        },
        ErrorKind::InvalidClaimFormat(_) => "malformed claim in token",
        ErrorKind::InvalidAlgorithm => "algorithm not accepted for this key",
        _ => "malformed token",
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(value: serde_json::Value) -> Map<String, Value> {
        value.as_object().expect("an object").clone()
    }

    fn policy() -> Policy {
        Policy::new(&JwtSettings {
            issuer: vec!["https://idp".into()],
            audience: vec!["sqlgate".into()],
            ..JwtSettings::default()
        })
    }

    #[test]
    fn name_and_role_come_from_the_configured_claims() {
        let policy = policy();
        let identity = policy
            .identity(&claims(
                serde_json::json!({"sub": "billing", "role": "writer"}),
            ))
            .expect("an identity");
        assert_eq!(
            (&*identity.name, identity.role, identity.proof),
            ("billing", Role::Writer, Proof::Jwt)
        );
        let highest = policy
            .identity(&claims(
                serde_json::json!({"sub": "ops", "role": ["offline", "reader", "admin"]}),
            ))
            .expect("a list");
        assert_eq!(highest.role, Role::Admin);
        for (value, reason) in [
            (
                serde_json::json!({"sub": "x", "role": "root"}),
                "unknown role",
            ),
            (
                serde_json::json!({"sub": "x", "role": ["root"]}),
                "unknown role",
            ),
            (serde_json::json!({"sub": "x", "role": 3}), "unknown role"),
            (serde_json::json!({"sub": "x"}), "no role claim"),
            (serde_json::json!({"role": "admin"}), "no sub claim"),
            (
                serde_json::json!({"sub": "a\nb", "role": "admin"}),
                "unusable",
            ),
            (serde_json::json!({"sub": "", "role": "admin"}), "unusable"),
        ] {
            let refusal = policy
                .identity(&claims(value.clone()))
                .expect_err("refused");
            assert!(refusal.0.contains(reason), "{value}: {}", refusal.0);
        }
    }

    #[test]
    fn a_remembered_token_is_valid_only_within_its_times_and_the_leeway() {
        let verified = Verified {
            identity: Identity {
                name: "svc".into(),
                role: Role::Reader,
                proof: Proof::Jwt,
            },
            not_before: Some(1_000),
            expires: 2_000,
        };
        assert!(verified.valid_at(1_500, 0));
        assert!(verified.valid_at(2_000, 0));
        assert!(!verified.valid_at(2_001, 0));
        assert!(verified.valid_at(2_060, 60));
        assert!(!verified.valid_at(2_061, 60));
        assert!(!verified.valid_at(999, 0));
        assert!(verified.valid_at(940, 60));
        assert!(!verified.valid_at(939, 60));
    }

    #[test]
    fn a_dotted_claim_reaches_into_objects() {
        let policy = Policy::new(&JwtSettings {
            role_claim: "realm_access.roles".into(),
            name_claim: "https://example.com/name".into(),
            ..JwtSettings::default()
        });
        let identity = policy
            .identity(&claims(serde_json::json!({
                "https://example.com/name": "svc",
                "realm_access": {"roles": ["uma", "reader"]},
            })))
            .expect("nested");
        assert_eq!((&*identity.name, identity.role), ("svc", Role::Reader));
    }

    #[test]
    fn symmetric_and_unknown_keys_are_refused_and_encryption_keys_skipped() {
        let path = Path::new("keys.json");
        let oct = r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#;
        let err = Keys::parse(path, oct).expect_err("oct");
        assert!(err.contains("symmetric"), "{err}");
        let err = Keys::parse(path, r#"{"keys": []}"#).expect_err("empty");
        assert!(err.contains("no signing key"), "{err}");
        let err = Keys::parse(path, "[]").expect_err("not a set");
        assert!(err.starts_with("keys.json: not a JWKS"), "{err}");
        let encryption = r#"{"keys": [{"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB"}]}"#;
        let err = Keys::parse(path, encryption).expect_err("only an encryption key");
        assert!(err.contains("no signing key"), "{err}");
        let mismatch =
            r#"{"keys": [{"kty": "RSA", "alg": "ES256", "kid": "k", "n": "AQAB", "e": "AQAB"}]}"#;
        let err = Keys::parse(path, mismatch).expect_err("alg of another type");
        assert!(err.contains("does not fit"), "{err}");
    }
}
