//! TLS on the listener, from PEM files that are read again when they
//! change: [`ServerTls`] holds the server configuration new handshakes use,
//! and a reload task replaces it when the files' content changes. A
//! connection keeps the configuration it was accepted with, so rotating a
//! certificate never touches open connections.
//!
//! The files are polled (read every `tls.reload_interval` and compared),
//! not watched: Kubernetes rotates a mounted secret by swapping a symlinked
//! directory, which notifications on the old files' inodes never report.
//! A change that cannot be used (a file half written, a key that does not
//! match the certificate) keeps the previous configuration and is logged
//! once, until the files change again.
//!
//! With a client CA, client certificates are verified by rustls during the
//! handshake (chain to the CA, validity period, key usage); the verified
//! certificate's subject common name and DNS/URI SANs are read here into a
//! [`ClientCertificate`] for authentication.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError, RwLock},
};

use rustls::{
    RootCertStore, ServerConfig,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use x509_parser::{certificate::X509Certificate, extensions::GeneralName};

use crate::config::{ClientAuth, TlsSettings};
use crate::grpc::{identity::ClientCertificate, poll::spawn_poll};

/// The protocol offered in ALPN: gRPC is HTTP/2 only.
pub(super) const ALPN_H2: &[u8] = b"h2";

/// The listener's TLS: the configuration new handshakes use, replaced
/// when the files change.
pub(crate) struct ServerTls {
    settings: TlsSettings,
    current: RwLock<Arc<ServerConfig>>,
    /// The files as they were when `current` was built (or last found
    /// unusable); only the reload task reads and replaces it.
    seen: Mutex<Files>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert_file", &self.settings.cert_file)
            .field("client_auth", &self.settings.client_auth())
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Reads the files and builds the configuration; `Ok(None)` when TLS
    /// is off. A file that cannot be read or used fails start-up with a
    /// message naming it (never its contents).
    pub(crate) fn load(settings: &TlsSettings) -> Result<Option<Arc<Self>>, String> {
        if !settings.enabled() {
            return Ok(None);
        }
        let files = Files::read(settings);
        let (config, summary) = files.server_config(settings)?;
        tracing::info!(
            certificate = %summary,
            client_auth = settings.client_auth().name(),
            reload_interval = ?settings.reload_interval,
            "TLS on the listener"
        );
        summary.warn_if_expired();
        Ok(Some(Arc::new(Self {
            settings: settings.clone(),
            current: RwLock::new(config),
            seen: Mutex::new(files),
        })))
    }

    /// An acceptor for one new connection, with the configuration current now.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        TlsAcceptor::from(current.clone())
    }

    /// Starts polling the files every `tls.reload_interval`, until `stop`.
    pub(crate) fn spawn_reload(self: &Arc<Self>, stop: CancellationToken) -> JoinHandle<()> {
        let tls = self.clone();
        spawn_poll(tls.settings.reload_interval, stop, "TLS", move || {
            tls.reload();
        })
    }

    /// Reads the files; if they changed, builds and installs the new
    /// configuration, or keeps the old one and says why (once per change).
    fn reload(&self) -> Reload {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let files = Files::read(&self.settings);
        if files == *seen {
            return Reload::Unchanged;
        }
        let outcome = match files.server_config(&self.settings) {
            Ok((config, summary)) => {
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = config;
                tracing::info!(
                    certificate = %summary,
                    "TLS files changed; new connections use the new certificate"
                );
                summary.warn_if_expired();
                Reload::Reloaded
            }
            Err(err) => {
                // Files caught in the middle of being written: they differ
                // again at once. Try again at the next poll, without a word.
                if Files::read(&self.settings) != files {
                    return Reload::Changing;
                }
                tracing::warn!(
                    error = %err,
                    "TLS files changed but cannot be used; new connections keep the previous certificate"
                );
                Reload::Kept(err)
            }
        };
        *seen = files;
        outcome
    }
}

/// What one poll of the files found.
#[derive(Debug, PartialEq, Eq)]
enum Reload {
    /// The files are as last seen.
    Unchanged,
    /// They changed and the new certificate is in use.
    Reloaded,
    /// They changed but cannot be used (why): the previous certificate stays.
    Kept(String),
    /// They were changing while read: read again at the next poll.
    Changing,
}

/// What the TLS files held when read: their bytes, or why they could not
/// be read. Compared whole to tell whether anything changed.
#[derive(Debug, PartialEq, Eq)]
struct Files {
    cert: Contents,
    key: Contents,
    client_ca: Option<Contents>,
}

/// One file's bytes, or the reason it could not be read.
pub(super) type Contents = Result<Vec<u8>, String>;

impl Files {
    fn read(settings: &TlsSettings) -> Self {
        let read = |path: &Option<PathBuf>| {
            path.as_deref()
                .map(|path| std::fs::read(path).map_err(|err| err.to_string()))
        };
        Self {
            cert: read(&settings.cert_file).unwrap_or_else(|| Err("not set".to_owned())),
            key: read(&settings.key_file).unwrap_or_else(|| Err("not set".to_owned())),
            client_ca: read(&settings.client_ca_file),
        }
    }

    /// The server configuration these files make, and a summary of its
    /// certificate for the logs; or what is wrong, naming the file.
    fn server_config(
        &self,
        settings: &TlsSettings,
    ) -> Result<(Arc<ServerConfig>, CertSummary), String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cert_file = FileName("tls.cert_file", settings.cert_file.as_deref());
        let key_file = FileName("tls.key_file", settings.key_file.as_deref());
        let chain = certificates(&cert_file, &self.cert)?;
        let key = private_key(&key_file, &self.key)?;
        let summary = CertSummary::of(&chain[0]);
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|err| format!("TLS: {err}"))?;
        let builder = match settings.client_auth() {
            ClientAuth::None => builder.with_no_client_auth(),
            auth => {
                let ca_file = FileName("tls.client_ca_file", settings.client_ca_file.as_deref());
                let contents = self
                    .client_ca
                    .as_ref()
                    .ok_or_else(|| format!("{ca_file}: not set"))?;
                let verifier = client_verifier(&ca_file, contents, auth, provider)?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|err| match err {
                rustls::Error::InconsistentKeys(_) => {
                    format!("{key_file} does not match the certificate in {cert_file}")
                }
                other => format!("{cert_file} and {key_file}: {other}"),
            })?;
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok((Arc::new(config), summary))
    }
}

/// A setting's name and its path, as messages show them.
pub(super) struct FileName<'a>(pub(super) &'static str, pub(super) Option<&'a Path>);

impl fmt::Display for FileName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            Some(path) => write!(f, "`{}` ({})", self.0, path.display()),
            None => write!(f, "`{}`", self.0),
        }
    }
}

/// The PEM certificates in a file; at least one.
pub(super) fn certificates(
    file: &FileName<'_>,
    contents: &Contents,
) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = contents
        .as_ref()
        .map_err(|err| format!("{file}: cannot read it: {err}"))?;
    let chain = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| format!("{file}: {}", pem_problem(&err)))?;
    if chain.is_empty() {
        return Err(format!(
            "{file}: no certificate in it (expected PEM `-----BEGIN CERTIFICATE-----`)"
        ));
    }
    Ok(chain)
}

/// The PEM private key in a file.
pub(super) fn private_key(
    file: &FileName<'_>,
    contents: &Contents,
) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = contents
        .as_ref()
        .map_err(|err| format!("{file}: cannot read it: {err}"))?;
    PrivateKeyDer::from_pem_slice(bytes).map_err(|err| match err {
        rustls::pki_types::pem::Error::NoItemsFound => format!(
            "{file}: no private key in it (expected PEM `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY`)"
        ),
        other => format!("{file}: {}", pem_problem(&other)),
    })
}

/// What is wrong with a PEM file, in words that never quote its contents
/// (a key file's lines are secret).
fn pem_problem(err: &rustls::pki_types::pem::Error) -> &'static str {
    use rustls::pki_types::pem::Error;
    match err {
        Error::MissingSectionEnd { .. } => "not valid PEM: a section has no END line (cut short?)",
        Error::IllegalSectionStart { .. } => "not valid PEM: a malformed BEGIN line",
        Error::Base64Decode(_) => "not valid PEM: a section is not valid base64",
        Error::NoItemsFound => "nothing usable in it",
        _ => "not valid PEM",
    }
}

/// The verifier of client certificates: signed by a CA of `contents`,
/// required or optional as `auth` says.
fn client_verifier(
    file: &FileName<'_>,
    contents: &Contents,
    auth: ClientAuth,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, String> {
    let mut roots = RootCertStore::empty();
    for ca in certificates(file, contents)? {
        roots
            .add(ca)
            .map_err(|err| format!("{file}: a certificate cannot be used as a CA: {err}"))?;
    }
    let mut verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    if auth == ClientAuth::Optional {
        verifier = verifier.allow_unauthenticated();
    }
    verifier.build().map_err(|err| format!("{file}: {err}"))
}

/// The names a verified client certificate carries: its subject's common
/// name and its DNS and URI subject alternative names.
pub(crate) fn client_certificate(der: &CertificateDer<'_>) -> Result<ClientCertificate, String> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der)
        .map_err(|err| format!("the client certificate does not parse: {err}"))?;
    let common_name = certificate
        .subject()
        .iter_common_name()
        .find_map(|name| name.as_str().ok())
        .map(str::to_owned);
    let sans = subject_alternative_names(&certificate)?;
    Ok(ClientCertificate { common_name, sans })
}

/// DNS names and URIs from a certificate's subject alternative names.
fn subject_alternative_names(certificate: &X509Certificate<'_>) -> Result<Vec<String>, String> {
    let extension = certificate
        .subject_alternative_name()
        .map_err(|err| format!("the certificate's subject alternative names: {err}"))?;
    Ok(extension
        .map(|extension| {
            extension
                .value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DNSName(name) | GeneralName::URI(name) => Some((*name).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default())
}

/// What the logs say of a server certificate: its names and expiry.
struct CertSummary {
    names: String,
    not_after: Option<x509_parser::time::ASN1Time>,
}

impl CertSummary {
    fn of(der: &CertificateDer<'_>) -> Self {
        match x509_parser::parse_x509_certificate(der) {
            Ok((_, certificate)) => {
                let common_name = certificate
                    .subject()
                    .iter_common_name()
                    .find_map(|name| name.as_str().ok())
                    .map(|name| format!("CN={name}"));
                let sans = subject_alternative_names(&certificate).unwrap_or_default();
                let names = common_name.into_iter().chain(sans).collect::<Vec<_>>();
                Self {
                    names: names.join(", "),
                    not_after: Some(certificate.validity().not_after),
                }
            }
            Err(_) => Self {
                names: "(unreadable)".to_owned(),
                not_after: None,
            },
        }
    }

    /// Warns when the certificate is no longer valid: clients will refuse
    /// it, though sqlgate serves it as told.
    fn warn_if_expired(&self) {
        if let Some(not_after) = self.not_after
            && not_after < x509_parser::time::ASN1Time::now()
        {
            tracing::warn!(certificate = %self, "the TLS certificate has expired");
        }
    }
}

impl fmt::Display for CertSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names)?;
        if let Some(not_after) = &self.not_after {
            write!(f, " (valid until {not_after})")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use rcgen::{
        CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType,
    };

    use super::*;

    /// A CA of the test's own.
    fn ca() -> CertifiedIssuer<'static, KeyPair> {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "test CA");
        CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA")
    }

    /// A certificate for `sans` signed by `ca`, and its key, as PEM.
    fn leaf(
        ca: &CertifiedIssuer<'static, KeyPair>,
        common_name: &str,
        sans: Vec<SanType>,
    ) -> (String, String) {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, ca).expect("sign");
        (cert.pem(), key.serialize_pem())
    }

    fn dns(name: &str) -> SanType {
        SanType::DnsName(name.try_into().expect("dns name"))
    }

    fn write(path: &Path, contents: &str) {
        std::fs::write(path, contents).expect("write");
    }

    /// TLS settings over files in `dir` (written by the test).
    fn settings(dir: &Path, client_ca: bool) -> TlsSettings {
        TlsSettings {
            cert_file: Some(dir.join("tls.crt")),
            key_file: Some(dir.join("tls.key")),
            client_ca_file: client_ca.then(|| dir.join("ca.crt")),
            ..TlsSettings::default()
        }
    }

    fn load_error(settings: &TlsSettings) -> String {
        ServerTls::load(settings).expect_err("must fail")
    }

    #[test]
    fn files_that_cannot_be_used_fail_naming_the_file_never_quoting_it() {
        let dir = tempfile::tempdir().expect("dir");
        let ca = ca();
        let (cert, key) = leaf(&ca, "sqlgate", vec![dns("localhost")]);
        let (_, other_key) = leaf(&ca, "other", vec![dns("localhost")]);
        let settings = settings(dir.path(), false);

        let missing = load_error(&settings);
        assert!(
            missing.contains("`tls.cert_file`") && missing.contains("cannot read it"),
            "{missing}"
        );
        write(&dir.path().join("tls.crt"), "not a certificate\n");
        write(&dir.path().join("tls.key"), &key);
        let garbage = load_error(&settings);
        assert!(garbage.contains("no certificate in it"), "{garbage}");

        write(&dir.path().join("tls.crt"), &cert);
        // A key file cut short: its lines must not reach the message.
        let cut = &key[..key.len() / 2];
        write(&dir.path().join("tls.key"), cut);
        let truncated = load_error(&settings);
        assert!(truncated.contains("`tls.key_file`"), "{truncated}");
        let secret_line = cut.lines().nth(1).expect("a base64 line");
        assert!(!truncated.contains(secret_line), "{truncated}");

        write(&dir.path().join("tls.key"), &other_key);
        let mismatch = load_error(&settings);
        assert!(
            mismatch.contains("`tls.key_file`")
                && mismatch.contains("does not match the certificate in `tls.cert_file`"),
            "{mismatch}"
        );

        write(&dir.path().join("tls.key"), &key);
        let with_ca = TlsSettings {
            client_ca_file: Some(dir.path().join("ca.crt")),
            ..settings.clone()
        };
        let no_ca = load_error(&with_ca);
        assert!(no_ca.contains("`tls.client_ca_file`"), "{no_ca}");
        write(&dir.path().join("ca.crt"), &ca.pem());
        assert!(ServerTls::load(&with_ca).expect("loads").is_some());
        assert!(ServerTls::load(&settings).expect("loads").is_some());
        assert!(
            ServerTls::load(&TlsSettings::default())
                .expect("off")
                .is_none()
        );
    }

    #[test]
    fn a_change_is_used_once_it_is_whole_and_a_bad_one_is_reported_once() {
        let dir = tempfile::tempdir().expect("dir");
        let ca = ca();
        let (first_cert, first_key) = leaf(&ca, "first", vec![dns("localhost")]);
        let (second_cert, second_key) = leaf(&ca, "second", vec![dns("localhost")]);
        write(&dir.path().join("tls.crt"), &first_cert);
        write(&dir.path().join("tls.key"), &first_key);
        write(&dir.path().join("ca.crt"), &ca.pem());
        let tls = ServerTls::load(&settings(dir.path(), true))
            .expect("loads")
            .expect("on");
        let before = tls.acceptor().config().clone();
        assert_eq!(tls.reload(), Reload::Unchanged);

        // The new certificate without its key yet: kept, reported once.
        write(&dir.path().join("tls.crt"), &second_cert);
        match tls.reload() {
            Reload::Kept(why) => assert!(why.contains("does not match"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(tls.reload(), Reload::Unchanged);
        assert!(Arc::ptr_eq(tls.acceptor().config(), &before));

        // Its key arrives: the new configuration serves new handshakes.
        write(&dir.path().join("tls.key"), &second_key);
        assert_eq!(tls.reload(), Reload::Reloaded);
        assert!(!Arc::ptr_eq(tls.acceptor().config(), &before));
        assert_eq!(tls.reload(), Reload::Unchanged);

        // The same bytes written again are no change.
        write(&dir.path().join("tls.key"), &second_key);
        assert_eq!(tls.reload(), Reload::Unchanged);

        // A file that disappears (a secret unmounted) keeps the certificate.
        std::fs::remove_file(dir.path().join("ca.crt")).expect("remove");
        match tls.reload() {
            Reload::Kept(why) => assert!(why.contains("`tls.client_ca_file`"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(tls.reload(), Reload::Unchanged);
    }

    #[test]
    fn a_client_certificate_gives_its_common_name_and_dns_and_uri_names() {
        let ca = ca();
        let (cert, _) = leaf(
            &ca,
            "billing-api",
            vec![
                dns("billing.internal"),
                SanType::URI("spiffe://example.org/billing".try_into().expect("uri")),
                SanType::IpAddress([10, 0, 0, 1].into()),
            ],
        );
        let der = CertificateDer::from_pem_slice(cert.as_bytes()).expect("pem");
        assert_eq!(
            client_certificate(&der).expect("parses"),
            ClientCertificate {
                common_name: Some("billing-api".to_owned()),
                sans: vec![
                    "billing.internal".to_owned(),
                    "spiffe://example.org/billing".to_owned()
                ],
            }
        );
    }
}
