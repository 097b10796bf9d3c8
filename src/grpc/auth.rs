//! Who is calling: the one check every call passes, in the call layer
//! (`observe`) before any handler runs, so that no service can forget it.
//!
//! A call proves its caller with, in this order:
//!
//! 1. an `authorization: Bearer <token>` header: a token whose SHA-256 is
//!    configured (compared in constant time), else, when a JWKS is
//!    configured and the token has a JWT's shape, a JWT verified against it;
//!    a header that proves nothing is refused, whatever else the call has;
//! 2. else the TLS client certificate the transport verified, when
//!    certificates are mapped to roles.
//!
//! Missing or wrong credentials answer UNAUTHENTICATED with a short reason
//! (never the credential). Services in `auth.open_services` (health probes
//! and reflection by default) are not checked. With nothing configured,
//! authentication is off: every call passes with no identity, its caller
//! being its peer address with role admin, as before.
//!
//! The tokens file and the JWKS file are read again every
//! `auth.reload_interval`; a change that parses replaces the old
//! credentials, one that does not is logged and the old ones are kept.

mod certificate;
mod jwt;
mod refusal;
mod tokens;

use std::{
    path::PathBuf,
    sync::{Arc, Mutex, PoisonError, RwLock},
    time::Duration,
};

use http::{Extensions, HeaderMap, header::AUTHORIZATION};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub(crate) use refusal::Refusal;
pub use tokens::hash_token;

use self::{certificate::Certificates, jwt::Keys, tokens::Tokens};
use crate::{
    config::{AuthSettings, TokenEntry},
    grpc::{
        identity::{ClientCertificate, Identity},
        poll::spawn_poll,
    },
};

/// The longest `authorization` value looked at: far above any opaque token
/// and above common JWTs, and it bounds the work a caller can cause.
/// (The transport refuses header lists over 16 KiB before this.)
const MAX_CREDENTIAL_BYTES: usize = 8 * 1024;

/// Authenticates calls; cheap to clone. The default is off.
#[derive(Debug, Clone, Default)]
pub(crate) struct Authenticator(Option<Arc<Shared>>);

/// Everything authentication knows.
#[derive(Debug)]
struct Shared {
    /// `package.Service` names callable without credentials.
    open_services: Vec<String>,
    certificates: Certificates,
    jwt: jwt::Policy,
    sources: Sources,
    /// The credentials read from the sources, replaced on reload.
    current: RwLock<Arc<Loaded>>,
    /// The last reload failure logged for each file (tokens, JWKS), so
    /// that a broken file is reported once, not at every poll.
    complaints: Mutex<[Option<String>; 2]>,
    reload_interval: Duration,
}

/// Where the reloadable credentials come from.
#[derive(Debug)]
struct Sources {
    /// `auth.tokens` entries, parsed.
    entries: Vec<TokenEntry>,
    tokens_file: Option<PathBuf>,
    jwks_file: Option<PathBuf>,
}

/// Credentials built from the sources, with the files' text they were
/// built from. Each file is reloaded on its own: a broken JWKS does not
/// hold back a new token, nor the reverse.
#[derive(Debug)]
struct Loaded {
    tokens_text: Option<String>,
    tokens: Arc<Tokens>,
    jwks_text: Option<String>,
    /// Shared with the previous `Loaded` while the JWKS is unchanged, so
    /// that the tokens it verified stay remembered.
    keys: Option<Arc<Keys>>,
}

impl Sources {
    fn new(settings: &AuthSettings) -> Result<Self, String> {
        let entries = settings
            .tokens
            .iter()
            .enumerate()
            .map(|(index, entry)| {
                TokenEntry::parse(entry)
                    .map_err(|why| format!("auth.tokens: entry {}: {why}", index + 1))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            entries,
            tokens_file: settings.tokens_file.clone(),
            jwks_file: settings.jwt.jwks_file.clone(),
        })
    }

    fn has_files(&self) -> bool {
        self.tokens_file.is_some() || self.jwks_file.is_some()
    }

    /// The text of the file at `path` (`key` names its setting), if any.
    fn read(key: &str, path: Option<&PathBuf>) -> Result<Option<String>, String> {
        path.map(|path| {
            std::fs::read_to_string(path)
                .map_err(|err| format!("{key}: cannot read {}: {err}", path.display()))
        })
        .transpose()
    }

    /// The tokens file's text now.
    fn tokens_text(&self) -> Result<Option<String>, String> {
        Self::read("auth.tokens_file", self.tokens_file.as_ref())
    }

    /// The JWKS file's text now.
    fn jwks_text(&self) -> Result<Option<String>, String> {
        Self::read("auth.jwt.jwks_file", self.jwks_file.as_ref())
    }

    /// The tokens the tokens file's `text` holds, with the configured entries.
    fn tokens(&self, text: Option<&str>) -> Result<Tokens, String> {
        Tokens::build(&self.entries, self.tokens_file.as_deref().zip(text))
    }

    /// The keys of the JWKS file's `text`.
    fn keys(&self, text: Option<&str>) -> Result<Option<Keys>, String> {
        self.jwks_file
            .as_deref()
            .zip(text)
            .map(|(path, text)| Keys::parse(path, text))
            .transpose()
            .map_err(|err| format!("auth.jwt.jwks_file: {err}"))
    }

    fn load(&self) -> Result<Loaded, String> {
        let tokens_text = self.tokens_text()?;
        let tokens = self.tokens(tokens_text.as_deref())?;
        let jwks_text = self.jwks_text()?;
        let keys = self.keys(jwks_text.as_deref())?;
        Ok(Loaded {
            tokens_text,
            tokens: Arc::new(tokens),
            jwks_text,
            keys: keys.map(Arc::new),
        })
    }
}

/// Reads and checks the credential files `settings` names, as start-up
/// will, so that the binary can refuse a bad one before anything starts:
/// the error names the setting (`auth.tokens_file: …`) and what is wrong.
pub fn check_files(settings: &AuthSettings) -> Result<(), String> {
    if settings.enabled() {
        Sources::new(settings)?.load()?;
    }
    Ok(())
}

impl Authenticator {
    /// Authentication as `settings` configure it (off if they configure no
    /// credential), with the files read now.
    pub(crate) fn new(settings: &AuthSettings) -> Result<Self, String> {
        if !settings.enabled() {
            tracing::info!("authentication off: every caller is its peer address, with role admin");
            return Ok(Self(None));
        }
        let sources = Sources::new(settings)?;
        let loaded = sources.load()?;
        let certificates = Certificates::new(&settings.client_certificates);
        tracing::info!(
            tokens = loaded.tokens.len(),
            jwt_keys = loaded.keys.as_deref().map_or(0, Keys::len),
            client_certificates = certificates.enabled(),
            open_services = ?settings.open_services,
            "authentication on"
        );
        Ok(Self(Some(Arc::new(Shared {
            open_services: settings.open_services.clone(),
            certificates,
            jwt: jwt::Policy::new(&settings.jwt),
            sources,
            current: RwLock::new(Arc::new(loaded)),
            complaints: Mutex::new([None, None]),
            reload_interval: settings.reload_interval,
        }))))
    }

    /// Who the call to `path` with `headers` and `extensions` comes from:
    /// `Ok(None)` when authentication is off or the service is open, the
    /// identity its credentials prove, or why they prove none.
    pub(crate) fn check(
        &self,
        path: &str,
        headers: &HeaderMap,
        extensions: &Extensions,
    ) -> Result<Option<Identity>, Refusal> {
        let Some(shared) = &self.0 else {
            return Ok(None);
        };
        if shared.is_open(path) {
            return Ok(None);
        }
        let mut values = headers.get_all(AUTHORIZATION).iter();
        match (values.next(), values.next()) {
            (Some(_), Some(_)) => Err(Refusal::new("more than one authorization header")),
            (Some(value), None) => shared.bearer(value.as_bytes()).map(Some),
            (None, _) => match extensions.get::<ClientCertificate>() {
                Some(certificate) if shared.certificates.enabled() => {
                    shared.certificates.identify(certificate).map(Some)
                }
                _ => Err(Refusal::new(
                    "missing credentials (send authorization: Bearer <token>)",
                )),
            },
        }
    }

    /// Starts re-reading the credential files every `auth.reload_interval`
    /// until `stop`; nothing to start when there are no files to watch.
    pub(crate) fn spawn_reload(&self, stop: CancellationToken) -> Option<JoinHandle<()>> {
        let shared = self.0.clone()?;
        if shared.reload_interval.is_zero() || !shared.sources.has_files() {
            return None;
        }
        Some(spawn_poll(
            shared.reload_interval,
            stop,
            "authentication",
            move || shared.reload(),
        ))
    }
}

impl Shared {
    /// Whether `path` (`/package.Service/Method`) belongs to an open service.
    fn is_open(&self, path: &str) -> bool {
        let service = path
            .strip_prefix('/')
            .and_then(|path| path.rsplit_once('/'))
            .map(|(service, _)| service);
        service.is_some_and(|service| self.open_services.iter().any(|open| open == service))
    }

    fn current(&self) -> Arc<Loaded> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The identity an `authorization` header value proves.
    fn bearer(&self, value: &[u8]) -> Result<Identity, Refusal> {
        if value.len() > MAX_CREDENTIAL_BYTES {
            return Err(Refusal::new("authorization header too large"));
        }
        let malformed = || Refusal::new("malformed authorization header (expected Bearer <token>)");
        let text = std::str::from_utf8(value).map_err(|_| malformed())?;
        let (scheme, token) = text.trim().split_once(' ').ok_or_else(malformed)?;
        let token = token.trim_start();
        if !scheme.eq_ignore_ascii_case("bearer")
            || token.is_empty()
            || !token.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(malformed());
        }
        let loaded = self.current();
        if let Some(identity) = loaded.tokens.identify(token) {
            return Ok(identity);
        }
        match &loaded.keys {
            Some(keys) if token.bytes().filter(|&b| b == b'.').count() == 2 => {
                self.jwt.verify(keys, token)
            }
            _ => Err(Refusal::new("unknown token")),
        }
    }

    /// Reads the files again and uses each one that changed and parses;
    /// one that does not is reported (once) and the old one kept.
    fn reload(&self) {
        let current = self.current();
        let mut complaints = self
            .complaints
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let tokens = changed(
            self.sources.tokens_text(),
            &current.tokens_text,
            |text| self.sources.tokens(text).map(Arc::new),
            &mut complaints[0],
        );
        let keys = changed(
            self.sources.jwks_text(),
            &current.jwks_text,
            |text| self.sources.keys(text).map(|keys| keys.map(Arc::new)),
            &mut complaints[1],
        );
        if tokens.is_none() && keys.is_none() {
            return;
        }
        let (tokens_text, tokens) =
            tokens.unwrap_or_else(|| (current.tokens_text.clone(), current.tokens.clone()));
        let (jwks_text, keys) =
            keys.unwrap_or_else(|| (current.jwks_text.clone(), current.keys.clone()));
        tracing::info!(
            tokens = tokens.len(),
            jwt_keys = keys.as_deref().map_or(0, Keys::len),
            "authentication credentials reloaded"
        );
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(Loaded {
            tokens_text,
            tokens,
            jwks_text,
            keys,
        });
    }
}

/// One credentials file at a reload, `read` being its text now: when it
/// differs from `last` and `build` accepts it, the new text and what was
/// built from it. A file unchanged forgets its complaint; one unreadable
/// or unusable is complained about and gives `None` (the old stays).
fn changed<T>(
    read: Result<Option<String>, String>,
    last: &Option<String>,
    build: impl FnOnce(Option<&str>) -> Result<T, String>,
    complaint: &mut Option<String>,
) -> Option<(Option<String>, T)> {
    let outcome = read.and_then(|text| {
        if text == *last {
            return Ok(None);
        }
        let built = build(text.as_deref())?;
        Ok(Some((text, built)))
    });
    match outcome {
        Ok(changed) => {
            *complaint = None;
            changed
        }
        Err(why) => {
            complain(complaint, why);
            None
        }
    }
}

/// Logs `why` a file was not reloaded, unless it is what was logged last.
fn complain(last: &mut Option<String>, why: String) {
    if last.as_deref() != Some(why.as_str()) {
        tracing::warn!(error = %why, "credentials file not reloaded; the previous credentials stay in use");
        *last = Some(why);
    }
}

#[cfg(test)]
mod tests;
