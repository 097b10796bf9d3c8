//! TLS on sqlgate's listener and TLS to the database, over real sockets,
//! with certificates the tests make with rcgen:
//!
//! - a TLS client (rustls, ALPN `h2`) calls; a plaintext one is refused;
//! - mTLS: a client certificate signed by the client CA is served (and its
//!   names are what sqlgate reads from it); an expired one, one signed by
//!   another CA, and none at all fail the handshake;
//! - the handshake timeout bounds the TLS handshake and the HTTP/2 one
//!   after it, and `transport.max_connections` counts connections still
//!   in their TLS handshake;
//! - certificates rotated the way Kubernetes rotates a mounted secret (a
//!   symlinked directory swapped) reach new connections while an open
//!   session commits over its old one; a rotation that cannot be used
//!   keeps the old certificate and is reported once; a rotated client CA
//!   decides new handshakes;
//! - PostgreSQL over TLS (`sslmode=verify-full`) on a throwaway cluster
//!   of the test's own that refuses plaintext, and MySQL/MariaDB URLs
//!   that demand TLS from a server without it.

use std::{
    io,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use hyper_util::rt::TokioIo;
use rcgen::{
    CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType,
    date_time_ymd,
};
use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject},
};
use sqlgate::{
    config::Settings,
    error::Error,
    grpc::pb::{self, query_client::QueryClient, value::Kind},
    server::Application,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::oneshot,
    task::JoinHandle,
};
use tokio_rustls::{TlsConnector, client::TlsStream};
use tonic::transport::{Channel, Endpoint};

use crate::{
    binary::{Sqlgate, free_address},
    health::health_command,
    helpers::{Backend, TEST_BOUND, closed_within, select_one, within},
    owned_database::{OwnedMariaDb, OwnedPostgres},
    session_client::Session,
    test_database::TestDatabase,
};

/// The client connection preface of HTTP/2 (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

// ---------------------------------------------------------------- certificates

/// A certificate and its private key, as PEM.
#[derive(Clone)]
struct Pem {
    cert: String,
    key: String,
}

/// A certificate authority of the test's own.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("key");
        Self {
            issuer: CertifiedIssuer::self_signed(params, key).expect("CA"),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate signed by this CA.
    fn sign(&self, params: CertificateParams) -> Pem {
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// A server certificate named `common_name`, for `names` (DNS names
    /// or IP addresses).
    fn server(&self, common_name: &str, names: &[&str]) -> Pem {
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A client certificate named `common_name` with `sans` (DNS names and
    /// URIs), valid now — or, with `expired`, only during 2020.
    fn client(&self, common_name: &str, sans: &[SanType], expired: bool) -> Pem {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.subject_alt_names = sans.to_vec();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        if expired {
            params.not_before = date_time_ymd(2020, 1, 1);
            params.not_after = date_time_ymd(2021, 1, 1);
        }
        self.sign(params)
    }
}

fn dns(name: &str) -> SanType {
    SanType::DnsName(name.try_into().expect("dns name"))
}

fn uri(name: &str) -> SanType {
    SanType::URI(name.try_into().expect("uri"))
}

/// A directory laid out as Kubernetes mounts a secret: every file is a
/// symlink through `..data`, itself a symlink to a directory of the
/// current generation; an update writes a new generation and swaps
/// `..data` in one rename.
struct SecretDir {
    dir: tempfile::TempDir,
    generation: u32,
}

impl SecretDir {
    fn new(files: &[(&str, &str)]) -> Self {
        let mut secret = Self {
            dir: tempfile::tempdir().expect("dir"),
            generation: 0,
        };
        secret.write_generation(files);
        for (name, _) in files {
            std::os::unix::fs::symlink(format!("..data/{name}"), secret.path(name))
                .expect("file link");
        }
        secret
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `files` as a new generation and points `..data` at it.
    fn write_generation(&mut self, files: &[(&str, &str)]) {
        self.generation += 1;
        let generation = format!("..gen_{}", self.generation);
        std::fs::create_dir(self.path(&generation)).expect("generation dir");
        for (name, contents) in files {
            std::fs::write(self.path(&generation).join(name), contents).expect("write");
        }
        let staged = self.path("..data_tmp");
        std::os::unix::fs::symlink(&generation, &staged).expect("staged link");
        std::fs::rename(&staged, self.path("..data")).expect("swap ..data");
    }
}

// ---------------------------------------------------------------- clients

/// A TLS client trusting one CA, with or without a certificate of its
/// own; it records the common name of the server certificate each of its
/// connections was shown.
#[derive(Clone)]
struct TlsClient {
    config: Arc<ClientConfig>,
    server_names: Arc<Mutex<Vec<String>>>,
}

impl TlsClient {
    fn new(ca: &Ca, identity: Option<&Pem>) -> Self {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca.pem().as_bytes()).expect("CA pem"))
            .expect("root");
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(roots);
        let mut config = match identity {
            Some(pem) => builder
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_slice(pem.cert.as_bytes()).expect("cert")],
                    PrivateKeyDer::from_pem_slice(pem.key.as_bytes()).expect("key"),
                )
                .expect("client certificate"),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Self {
            config: Arc::new(config),
            server_names: Arc::default(),
        }
    }

    /// A TLS connection to `address` (server name `localhost`), its
    /// handshake done — as far as the client can tell: in TLS 1.3 the
    /// server judges the client's certificate after that.
    async fn handshake(&self, address: SocketAddr) -> io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(address).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from("localhost").expect("server name");
        let stream = TlsConnector::from(self.config.clone())
            .connect(name, tcp)
            .await?;
        let (_, session) = stream.get_ref();
        if !self.config.alpn_protocols.is_empty() {
            assert_eq!(session.alpn_protocol(), Some(&b"h2"[..]), "ALPN h2");
        }
        if let Some([leaf, ..]) = session.peer_certificates() {
            let (_, cert) = x509_parser::parse_x509_certificate(leaf).expect("server cert");
            let name = cert
                .subject()
                .iter_common_name()
                .find_map(|cn| cn.as_str().ok())
                .unwrap_or_default()
                .to_owned();
            self.server_names.lock().expect("names").push(name);
        }
        Ok(stream)
    }

    /// A gRPC channel over this client's TLS connections.
    async fn channel(&self, address: SocketAddr) -> Result<Channel, tonic::transport::Error> {
        let client = self.clone();
        let connector = tower::service_fn(move |_: http::Uri| {
            let client = client.clone();
            async move { client.handshake(address).await.map(TokioIo::new) }
        });
        Endpoint::from_shared(format!("http://{address}"))
            .expect("uri")
            .connect_timeout(Duration::from_secs(5))
            .connect_with_connector(connector)
            .await
    }

    /// The server certificates' common names, one per connection so far.
    /// This client offering `protocols` in ALPN instead of `h2`.
    fn offering(&self, protocols: &[&[u8]]) -> Self {
        let mut config = (*self.config).clone();
        config.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
        Self {
            config: Arc::new(config),
            server_names: Arc::default(),
        }
    }

    fn server_names(&self) -> Vec<String> {
        self.server_names.lock().expect("names").clone()
    }

    /// What the server answers a connection with this client's
    /// certificate: `Ok` if it serves HTTP/2 on it, else the error (the
    /// TLS alert it sent).
    async fn verdict(&self, address: SocketAddr) -> Result<(), String> {
        let mut stream = self
            .handshake(address)
            .await
            .map_err(|err| err.to_string())?;
        // The server's HTTP/2 SETTINGS come after it accepted the
        // certificate; its alert comes instead.
        stream
            .write_all(&[PREFACE, &[0, 0, 0, 0x4, 0, 0, 0, 0, 0]].concat())
            .await
            .map_err(|err| err.to_string())?;
        let mut buffer = [0; 64];
        match stream.read(&mut buffer).await {
            Ok(0) => Err("closed without an alert".to_owned()),
            Ok(_) => Ok(()),
            Err(err) => Err(err.to_string()),
        }
    }
}

/// Whether a gRPC call with `client` is served (`SELECT 1`); connecting
/// and calling are both bounded.
async fn call_with(client: &TlsClient, address: SocketAddr) -> Result<i64, String> {
    let channel = client
        .channel(address)
        .await
        .map_err(|err| format!("connect: {err}"))?;
    within(
        Duration::from_secs(10),
        "a call",
        select_one(&mut QueryClient::new(channel)),
    )
    .await
    .map_err(|code| format!("call: {code:?}"))
}

// ---------------------------------------------------------------- servers

/// An in-process sqlgate on a SQLite file, with TLS as the test sets it.
struct Server {
    address: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    _db: Option<TestDatabase>,
}

/// Settings for an in-process sqlgate on a free port over `database_url`.
fn settings_for(database_url: &str) -> Settings {
    let mut settings = Settings {
        listen: "127.0.0.1:0".parse().expect("addr"),
        database_url: database_url.to_owned(),
        ..Settings::default()
    };
    settings.pool.max_connections = 2;
    settings.pool.acquire_timeout = Duration::from_secs(2);
    settings.shutdown.delay = Duration::ZERO;
    settings
}

impl Server {
    async fn start(adjust: impl FnOnce(&mut Settings)) -> Self {
        let db = TestDatabase::create(Backend::Sqlite)
            .await
            .expect("SQLite is always there");
        let mut server = Self::start_on(&db.url.clone(), adjust).await;
        server._db = Some(db);
        server
    }

    /// Starts sqlgate over `database_url`.
    async fn start_on(database_url: &str, adjust: impl FnOnce(&mut Settings)) -> Self {
        let mut settings = settings_for(database_url);
        adjust(&mut settings);
        let app = Application::build(settings).await.expect("sqlgate starts");
        let address = app.address().tcp().expect("a TCP address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            app.run_until_stopped(async {
                let _ = stopped.await;
            })
            .await
            .expect("sqlgate runs");
        });
        Self {
            address,
            stop: Some(stop),
            task: Some(task),
            _db: None,
        }
    }

    /// Runs `sql` through this sqlgate, over a plaintext client
    /// connection of its own; panics if the call fails.
    async fn run(&self, sql: &str) -> pb::ExecuteResponse {
        let channel = Channel::from_shared(format!("http://{}", self.address))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        QueryClient::new(channel)
            .execute(pb::ExecuteRequest {
                sql: sql.to_owned(),
                params: vec![],
                max_rows: 0,
            })
            .await
            .expect("query over TLS")
            .into_inner()
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            within(Duration::from_secs(15), "sqlgate's shutdown", task)
                .await
                .expect("sqlgate's task");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_on_a_unix_socket_as_on_tcp() {
    within(TEST_BOUND, "the test", mtls_on_a_unix_socket()).await;
}

/// A listener on a Unix socket with TLS that requires client
/// certificates: the health command gets in with the CA, the name and a
/// client certificate, and is refused the handshake without the
/// certificate, or in plaintext.
async fn mtls_on_a_unix_socket() {
    let (files, mut envs, db) = mtls_listener("sidecar-probe").await;
    let path = |name: &str| files.path(name).to_str().expect("path").to_owned();
    let socket = files.path("sqlgate.sock");
    let listen = format!("unix:{}", socket.display());
    envs.push(("SQLGATE_LISTEN", listen.clone()));
    let envs: Vec<_> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut sqlgate = Sqlgate::start(&["--database-url", &db.url], &envs);
    crate::unix_listen::wait_for_socket(&mut sqlgate, &socket).await;
    let (ca_file, cert, key) = (path("ca.crt"), path("client.crt"), path("client.key"));
    let tls = [
        "--addr",
        &listen,
        "--tls-ca",
        &ca_file,
        "--tls-server-name",
        "sqlgate.apps.svc",
    ];
    let identity = ["--tls-cert", cert.as_str(), "--tls-key", key.as_str()];
    let (code, stderr) = health_command(&[&tls[..], &identity[..]].concat()).await;
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stderr) = health_command(&tls).await;
    assert_eq!(code, Some(1), "without a client certificate: {stderr}");
    let (code, stderr) = health_command(&["--addr", &listen]).await;
    assert_eq!(code, Some(1), "plaintext: {stderr}");
    let (status, output) = sqlgate.stop().await;
    assert!(status.success(), "{status}: {output:#?}");
    assert!(!socket.exists(), "the socket file is removed at shutdown");
}

/// The server's certificate, key and (optionally) client CA, written to
/// files of a directory of their own.
struct TlsFiles {
    dir: tempfile::TempDir,
}

/// Files for a listener that requires client certificates — its own
/// (`sqlgate.apps.svc`), the CA, and a client certificate named `client`
/// (`client.crt`, `client.key`) — the variables that set TLS from them,
/// and a SQLite database.
async fn mtls_listener(client: &str) -> (TlsFiles, Vec<(&'static str, String)>, TestDatabase) {
    let ca = Ca::new("sqlgate test CA");
    let files = TlsFiles::new(&ca.server("sqlgate", &["sqlgate.apps.svc"]), Some(&ca));
    let client = ca.client(client, &[], false);
    std::fs::write(files.path("client.crt"), &client.cert).expect("cert");
    std::fs::write(files.path("client.key"), &client.key).expect("key");
    let db = TestDatabase::create(Backend::Sqlite)
        .await
        .expect("SQLite is always there");
    let path = |name: &str| files.path(name).to_str().expect("path").to_owned();
    let envs = vec![
        ("SQLGATE_TLS__CERT_FILE", path("tls.crt")),
        ("SQLGATE_TLS__KEY_FILE", path("tls.key")),
        ("SQLGATE_TLS__CLIENT_CA_FILE", path("ca.crt")),
        ("SQLGATE_TLS__CLIENT_AUTH", "required".to_owned()),
    ];
    (files, envs, db)
}

impl TlsFiles {
    fn new(server: &Pem, client_ca: Option<&Ca>) -> Self {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("tls.crt"), &server.cert).expect("cert");
        std::fs::write(dir.path().join("tls.key"), &server.key).expect("key");
        if let Some(ca) = client_ca {
            std::fs::write(dir.path().join("ca.crt"), ca.pem()).expect("ca");
        }
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Sets `settings.tls` to these files (the client CA if written).
    fn apply(&self, settings: &mut Settings) {
        settings.tls.cert_file = Some(self.path("tls.crt"));
        settings.tls.key_file = Some(self.path("tls.key"));
        if self.path("ca.crt").exists() {
            settings.tls.client_ca_file = Some(self.path("ca.crt"));
        }
    }
}

// ---------------------------------------------------------------- listener

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_is_served_and_a_plaintext_one_is_refused() {
    within(TEST_BOUND, "the test", tls_and_plaintext()).await;
}

async fn tls_and_plaintext() {
    let ca = Ca::new("sqlgate test CA");
    let files = TlsFiles::new(&ca.server("sqlgate", &["localhost", "127.0.0.1"]), None);
    let server = Server::start(|settings| files.apply(settings)).await;
    let address = server.address;

    // A TLS client that verifies the server's certificate is served over
    // HTTP/2 (the ALPN check is in `handshake`).
    let client = TlsClient::new(&ca, None);
    assert_eq!(call_with(&client, address).await, Ok(1));
    assert_eq!(client.server_names(), ["sqlgate"]);

    // HTTP/2 is the only protocol offered: a client offering no ALPN
    // speaks HTTP/2 all the same; one offering only HTTP/1.1 is refused.
    assert_eq!(client.offering(&[]).verdict(address).await, Ok(()));
    let http1 = client.offering(&[b"http/1.1"]).verdict(address).await;
    assert!(
        http1
            .as_ref()
            .is_err_and(|err| err.contains("NoApplicationProtocol")),
        "{http1:?}"
    );

    // One that trusts another CA refuses the server.
    let stranger = TlsClient::new(&Ca::new("another CA"), None);
    let refused = stranger
        .handshake(address)
        .await
        .expect_err("an unknown issuer");
    assert!(refused.to_string().contains("UnknownIssuer"), "{refused}");

    // A plaintext gRPC client gets no answer: its call fails at once.
    let started = Instant::now();
    let plaintext = match Channel::from_shared(format!("http://{address}"))
        .expect("uri")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
    {
        Ok(channel) => select_one(&mut QueryClient::new(channel)).await,
        Err(_) => Err(tonic::Code::Unavailable),
    };
    assert!(plaintext.is_err(), "{plaintext:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    // Its bytes are not TLS: the connection closes at once, not at the
    // handshake timeout.
    let mut raw = TcpStream::connect(address).await.expect("connect");
    raw.write_all(PREFACE).await.expect("preface");
    let opened = Instant::now();
    let closed = closed_within(raw, Duration::from_secs(3))
        .await
        .expect("a plaintext preface on the TLS port is closed");
    assert!(closed.duration_since(opened) < Duration::from_secs(1));

    // The TLS client is still served.
    assert_eq!(call_with(&client, address).await, Ok(1));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_verified_against_the_client_ca() {
    within(TEST_BOUND, "the test", client_certificates()).await;
}

async fn client_certificates() {
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let files = TlsFiles::new(
        &server_ca.server("sqlgate", &["localhost"]),
        Some(&client_ca),
    );
    // `tls.client_auth` unset: a client CA makes certificates required.
    let server = Server::start(|settings| files.apply(settings)).await;
    let address = server.address;

    let valid = client_ca.client("billing-api", &[dns("billing.internal")], false);
    let expired = client_ca.client("billing-api", &[], true);
    let forged = Ca::new("client CA").client("billing-api", &[], false);
    let foreign = Ca::new("another CA").client("billing-api", &[], false);
    let with = |pem: &Pem| TlsClient::new(&server_ca, Some(pem));
    let without = TlsClient::new(&server_ca, None);

    assert_eq!(with(&valid).verdict(address).await, Ok(()));
    assert_eq!(call_with(&with(&valid), address).await, Ok(1));

    // rustls answers each with its own alert; the gRPC call fails too.
    for (what, client, alert) in [
        (
            "an expired certificate",
            with(&expired),
            "CertificateExpired",
        ),
        (
            "a certificate signed by another CA of the client CA's name",
            with(&forged),
            "DecryptError",
        ),
        (
            "a certificate from an unknown CA",
            with(&foreign),
            "UnknownCA",
        ),
        ("no certificate", without.clone(), "CertificateRequired"),
    ] {
        let verdict = client.verdict(address).await;
        assert!(
            verdict.as_ref().is_err_and(|err| err.contains(alert)),
            "{what}: {verdict:?}"
        );
        let call = call_with(&client, address).await;
        assert!(call.is_err(), "{what}: {call:?}");
    }
    assert_eq!(call_with(&with(&valid), address).await, Ok(1));
    server.stop().await;

    // `optional`: a client without a certificate is served; a bad one
    // still fails.
    let server = Server::start(|settings| {
        files.apply(settings);
        settings.tls.client_auth = Some(sqlgate::config::ClientAuth::Optional);
    })
    .await;
    let address = server.address;
    assert_eq!(call_with(&without, address).await, Ok(1));
    assert_eq!(call_with(&with(&valid), address).await, Ok(1));
    let verdict = with(&expired).verdict(address).await;
    assert!(
        verdict
            .as_ref()
            .is_err_and(|err| err.contains("CertificateExpired")),
        "{verdict:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handshake_timeout_bounds_the_tls_handshake_and_the_http2_one_after_it() {
    within(TEST_BOUND, "the test", tls_handshake_timeout()).await;
}

async fn tls_handshake_timeout() {
    const HANDSHAKE: Duration = Duration::from_secs(1);
    let ca = Ca::new("sqlgate test CA");
    let files = TlsFiles::new(&ca.server("sqlgate", &["localhost"]), None);
    let server = Server::start(|settings| {
        files.apply(settings);
        settings.transport.handshake_timeout = HANDSHAKE;
        settings.transport.max_connections = 3;
    })
    .await;
    let address = server.address;
    let client = TlsClient::new(&ca, None);

    // A client that completed both handshakes, with a session open
    // across the timeout.
    let mut session = Session::begin_on(
        client.channel(address).await.expect("connect"),
        pb::BeginSession::default(),
    )
    .await
    .expect("begin");

    // A socket that never sends a ClientHello, and one that completes TLS
    // but never sends the HTTP/2 preface: both hold a connection slot.
    let silent = TcpStream::connect(address).await.expect("connect");
    let no_preface = client.handshake(address).await.expect("TLS handshake");
    let opened = Instant::now();

    // The limit (3) is reached: a fourth connection is closed at once.
    let refused = TcpStream::connect(address).await.expect("connect");
    let closed = closed_within(refused, Duration::from_secs(2))
        .await
        .expect("a connection over the limit is closed");
    assert!(closed.duration_since(opened) < HANDSHAKE / 2);

    for (what, closed) in [
        (
            "a socket that never sends a ClientHello",
            closed_within(silent, HANDSHAKE + Duration::from_secs(3)).await,
        ),
        (
            "a TLS connection that never sends the HTTP/2 preface",
            closed_within(no_preface, HANDSHAKE + Duration::from_secs(3)).await,
        ),
    ] {
        let closed = closed.unwrap_or_else(|| panic!("{what}: still open"));
        let after = closed.duration_since(opened);
        assert!(
            after >= HANDSHAKE - Duration::from_millis(200)
                && after < HANDSHAKE + Duration::from_secs(2),
            "{what}: closed after {after:?}"
        );
    }

    // Their slots are free again, and the session's connection lived on.
    assert_eq!(call_with(&client, address).await, Ok(1));
    assert_eq!(session.row("SELECT 2").await, vec![Kind::IntValue(2)]);
    session.commit().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_client_ca_decides_new_handshakes() {
    within(TEST_BOUND, "the test", client_ca_rotation()).await;
}

async fn client_ca_rotation() {
    let server_ca = Ca::new("server CA");
    let (old_ca, new_ca) = (Ca::new("old client CA"), Ca::new("new client CA"));
    let server_pem = server_ca.server("sqlgate", &["localhost"]);
    let (server_cert, server_key) = (server_pem.cert.as_str(), server_pem.key.as_str());
    let (old_ca_pem, new_ca_pem) = (old_ca.pem(), new_ca.pem());
    let mut secret = SecretDir::new(&[
        ("tls.crt", server_cert),
        ("tls.key", server_key),
        ("ca.crt", &old_ca_pem),
    ]);
    let server = Server::start(|settings| {
        settings.tls.cert_file = Some(secret.path("tls.crt"));
        settings.tls.key_file = Some(secret.path("tls.key"));
        settings.tls.client_ca_file = Some(secret.path("ca.crt"));
        settings.tls.reload_interval = Duration::from_millis(200);
    })
    .await;
    let address = server.address;
    let old_client = TlsClient::new(&server_ca, Some(&old_ca.client("old", &[], false)));
    let new_client = TlsClient::new(&server_ca, Some(&new_ca.client("new", &[], false)));
    let old_channel = old_client.channel(address).await.expect("connect");
    assert_eq!(
        select_one(&mut QueryClient::new(old_channel.clone())).await,
        Ok(1)
    );
    assert!(new_client.verdict(address).await.is_err());

    secret.write_generation(&[
        ("tls.crt", server_cert),
        ("tls.key", server_key),
        ("ca.crt", &new_ca_pem),
    ]);
    let started = Instant::now();
    while new_client.verdict(address).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the new client CA is not used within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // New handshakes with the old CA's certificates fail; the connection
    // made before the rotation is still served.
    let refused = old_client.verdict(address).await;
    assert!(
        refused.as_ref().is_err_and(|err| err.contains("UnknownCA")),
        "{refused:?}"
    );
    assert_eq!(call_with(&new_client, address).await, Ok(1));
    assert_eq!(select_one(&mut QueryClient::new(old_channel)).await, Ok(1));
    server.stop().await;
}

// ---------------------------------------------------------------- the binary

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_certificates_reach_new_connections_while_open_ones_go_on() {
    within(TEST_BOUND, "the test", rotation()).await;
}

async fn rotation() {
    let ca = Ca::new("sqlgate test CA");
    let first = ca.server("sqlgate-first", &["localhost"]);
    let second = ca.server("sqlgate-second", &["localhost"]);
    let mut secret = SecretDir::new(&[("tls.crt", &first.cert), ("tls.key", &first.key)]);
    let db = TestDatabase::create(Backend::Sqlite)
        .await
        .expect("SQLite is always there");
    let (cert_file, key_file) = (secret.path("tls.crt"), secret.path("tls.key"));
    let (cert_file, key_file) = (
        cert_file.to_str().expect("path"),
        key_file.to_str().expect("path"),
    );
    let (sqlgate, address) = Sqlgate::serving(
        &db.url,
        &[
            ("SQLGATE_TLS__CERT_FILE", cert_file),
            ("SQLGATE_TLS__KEY_FILE", key_file),
            ("SQLGATE_TLS__RELOAD_INTERVAL", "200ms"),
            ("SQLGATE_LOG_FILTER", "info"),
        ],
    )
    .await;
    let open = TlsClient::new(&ca, None);
    let open_channel = open.channel(address).await.expect("connect");
    assert_eq!(
        select_one(&mut QueryClient::new(open_channel.clone())).await,
        Ok(1)
    );
    let mut session = Session::begin_on(open_channel.clone(), pb::BeginSession::default())
        .await
        .expect("begin");
    session
        .query("CREATE TABLE rotated (id INTEGER PRIMARY KEY)")
        .await
        .expect("create");
    session
        .query("INSERT INTO rotated VALUES (1)")
        .await
        .expect("insert");

    // A rotation caught half done: the new certificate with the old key.
    secret.write_generation(&[("tls.crt", &second.cert), ("tls.key", &first.key)]);
    let warning = "TLS files changed but cannot be used";
    wait_for_line(&sqlgate, warning).await;
    let fresh = TlsClient::new(&ca, None);
    assert_eq!(call_with(&fresh, address).await, Ok(1));
    assert_eq!(fresh.server_names(), ["sqlgate-first"]);
    // Polled five more times, the same files: no second warning.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let warnings = lines_with(&sqlgate, warning);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("does not match") && warnings[0].contains("tls.key_file"),
        "{warnings:?}"
    );

    // The whole rotation: new connections get the new certificate.
    secret.write_generation(&[("tls.crt", &second.cert), ("tls.key", &second.key)]);
    wait_for_line(&sqlgate, "new connections use the new certificate").await;
    let fresh = TlsClient::new(&ca, None);
    assert_eq!(call_with(&fresh, address).await, Ok(1));
    assert_eq!(fresh.server_names(), ["sqlgate-second"]);

    // The session's connection, made with the first certificate, goes on:
    // it writes, commits, and takes new calls, on that one connection.
    session
        .query("INSERT INTO rotated VALUES (2)")
        .await
        .expect("insert after the rotation");
    session.commit().await;
    assert_eq!(
        select_one(&mut QueryClient::new(open_channel.clone())).await,
        Ok(1)
    );
    assert_eq!(open.server_names(), ["sqlgate-first"], "one connection");
    let count = QueryClient::new(fresh.channel(address).await.expect("connect"))
        .execute(pb::ExecuteRequest {
            sql: "SELECT count(*) FROM rotated".to_owned(),
            params: vec![],
            max_rows: 0,
        })
        .await
        .expect("count")
        .into_inner();
    assert_eq!(count.rows[0].values[0].kind, Some(Kind::IntValue(2)));

    drop(open_channel);
    let (status, output) = sqlgate.stop().await;
    assert!(status.success(), "{status}: {output:#?}");
    let started = output
        .iter()
        .find(|line| line.contains("TLS on the listener"))
        .unwrap_or_else(|| panic!("no start-up line: {output:#?}"));
    assert!(started.contains("CN=sqlgate-first"), "{started}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_takes_tls_from_its_environment_and_reads_the_client_certificate() {
    within(TEST_BOUND, "the test", binary_mtls()).await;
}

async fn binary_mtls() {
    let ca = Ca::new("sqlgate test CA");
    let files = TlsFiles::new(&ca.server("sqlgate", &["localhost"]), Some(&ca));
    let db = TestDatabase::create(Backend::Sqlite)
        .await
        .expect("SQLite is always there");
    let path = |name: &str| files.path(name).to_str().expect("path").to_owned();
    let (cert, key, client_ca) = (path("tls.crt"), path("tls.key"), path("ca.crt"));
    let envs = [
        ("SQLGATE_TLS__CERT_FILE", cert.as_str()),
        ("SQLGATE_TLS__KEY_FILE", key.as_str()),
        ("SQLGATE_TLS__CLIENT_CA_FILE", client_ca.as_str()),
        ("SQLGATE_TLS__CLIENT_AUTH", "required"),
        ("SQLGATE_LOG_FILTER", "info,sqlgate=debug"),
    ];
    let (sqlgate, address) = Sqlgate::serving(&db.url, &envs).await;
    let client = ca.client(
        "billing-api",
        &[
            dns("billing.internal"),
            uri("spiffe://example.org/ns/prod/sa/billing"),
        ],
        false,
    );
    let client = TlsClient::new(&ca, Some(&client));
    assert_eq!(call_with(&client, address).await, Ok(1));
    let anonymous = call_with(&TlsClient::new(&ca, None), address).await;
    assert!(anonymous.is_err(), "no client certificate: {anonymous:?}");
    let line = wait_for_line(&sqlgate, "client certificate verified").await;
    for part in [
        "common_name=\"billing-api\"",
        "billing.internal",
        "spiffe://example.org/ns/prod/sa/billing",
    ] {
        assert!(line.contains(part), "{part:?} missing from {line}");
    }
    let (status, output) = sqlgate.stop().await;
    assert!(status.success(), "{status}: {output:#?}");

    // Files that cannot be used stop start-up, naming the file.
    std::fs::write(files.path("tls.key"), "not a key\n").expect("write");
    let (status, output) = Sqlgate::start(
        &[
            "--listen",
            &free_address().to_string(),
            "--database-url",
            &db.url,
        ],
        &envs,
    )
    .exited(Duration::from_secs(20))
    .await;
    assert_eq!(status.code(), Some(1), "{output:#?}");
    assert!(
        output.iter().any(|line| line.contains("cannot start")
            && line.contains("`tls.key_file`")
            && line.contains("no private key")),
        "{output:#?}"
    );
    // Settings that do not fit together are refused before anything runs.
    let (status, output) = Sqlgate::start(
        &[
            "--listen",
            &free_address().to_string(),
            "--database-url",
            &db.url,
        ],
        &[("SQLGATE_TLS__CERT_FILE", cert.as_str())],
    )
    .exited(Duration::from_secs(20))
    .await;
    assert_eq!(status.code(), Some(2), "{output:#?}");
    assert!(
        output
            .iter()
            .any(|line| line.contains("`tls.key_file`: must be set with tls.cert_file")),
        "{output:#?}"
    );
}

/// The lines sqlgate wrote so far that contain `part`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_command_speaks_tls_and_mtls_to_the_listener() {
    within(TEST_BOUND, "the test", health_over_mtls()).await;
}

/// `sqlgate health --tls-ca …` against a listener that requires client
/// certificates: SERVING with the right CA, name and client certificate;
/// refused (exit 1, saying why) without any one of them.
async fn health_over_mtls() {
    let (files, envs, db) = mtls_listener("kubelet-probe").await;
    let path = |name: &str| files.path(name).to_str().expect("path").to_owned();
    let envs: Vec<_> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (sqlgate, address) = Sqlgate::serving(&db.url, &envs).await;
    let address = address.to_string();
    let (ca_file, cert, key) = (path("ca.crt"), path("client.crt"), path("client.key"));
    let tls = |extra: &[&str]| {
        let mut args = vec!["--addr", address.as_str(), "--tls-ca", ca_file.as_str()];
        args.extend_from_slice(extra);
        args.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        health_command(&args).await
    };
    let named = ["--tls-server-name", "sqlgate.apps.svc"];
    let identity = ["--tls-cert", cert.as_str(), "--tls-key", key.as_str()];
    for service in ["liveness", "readiness"] {
        let args = [&named[..], &identity[..], &["--service", service]].concat();
        let (code, stderr) = run(tls(&args)).await;
        assert_eq!(code, Some(0), "{service}: {stderr}");
    }
    // Without the client certificate, the listener refuses the handshake.
    let (code, stderr) = run(tls(&named)).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("not serving"), "{stderr}");
    // The certificate does not carry 127.0.0.1, the address's host.
    let (code, stderr) = run(tls(&identity)).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("certificate"), "{stderr}");
    // Another CA: the server is not trusted.
    std::fs::write(files.path("other-ca.crt"), Ca::new("another CA").pem()).expect("ca");
    let other = path("other-ca.crt");
    let args = [
        &["--addr", address.as_str(), "--tls-ca", other.as_str()][..],
        &named[..],
        &identity[..],
    ]
    .concat();
    let (code, stderr) = health_command(&args).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("UnknownIssuer"), "{stderr}");
    // Plaintext against TLS, and a CA file that is not one.
    let (code, _) = health_command(&["--addr", address.as_str()]).await;
    assert_eq!(code, Some(1));
    let (code, stderr) =
        health_command(&["--addr", address.as_str(), "--tls-ca", key.as_str()]).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("`--tls-ca`") && !stderr.contains("PRIVATE"),
        "{stderr}"
    );
    let (status, output) = sqlgate.stop().await;
    assert!(status.success(), "{status}: {output:#?}");
}

fn lines_with(sqlgate: &Sqlgate, part: &str) -> Vec<String> {
    sqlgate
        .output()
        .into_iter()
        .filter(|line| line.contains(part))
        .collect()
}

/// Waits (up to 10 s) for a line containing `part`; the first one.
async fn wait_for_line(sqlgate: &Sqlgate, part: &str) -> String {
    let started = Instant::now();
    loop {
        if let Some(line) = lines_with(sqlgate, part).into_iter().next() {
            return line;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no line with {part:?} within 10 s:\n{}",
            sqlgate.output().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------- the database

/// A PostgreSQL cluster of the test's own (the machine's server is shared
/// and must not be reconfigured): TLS with `server`'s certificate, and
/// plaintext TCP refused by `pg_hba.conf`, so that a connection that works
/// is a TLS one. `None` (loudly, never in CI) where PostgreSQL's server
/// binaries are missing.
async fn tls_postgres(server: &Pem) -> Option<OwnedPostgres> {
    let server = server.clone();
    OwnedPostgres::start_with(move |data| {
        std::fs::write(data.join("server.crt"), &server.cert).expect("cert");
        std::fs::write(data.join("server.key"), &server.key).expect("key");
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                data.join("server.key"),
                std::fs::Permissions::from_mode(0o600),
            )
            .expect("key mode");
        }
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\n\
             hostssl all all 127.0.0.1/32 trust\n\
             hostssl all all ::1/128 trust\n\
             hostnossl all all 0.0.0.0/0 reject\n\
             hostnossl all all ::/0 reject\n",
        )
        .expect("pg_hba.conf");
        let mut conf = std::fs::read_to_string(data.join("postgresql.conf")).expect("conf");
        conf.push_str("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        std::fs::write(data.join("postgresql.conf"), conf).expect("conf");
    })
    .await
}

/// Why sqlgate could not start over `url`: the error of `Application::build`.
async fn start_failure(url: &str) -> Error {
    match Application::build(settings_for(url)).await {
        Ok(_) => panic!("sqlgate started over {url}"),
        Err(err) => err,
    }
}

/// A start-up failure is UNAVAILABLE and says why without the URL.
fn assert_unavailable_without_url(err: &Error, url: &str, says: &str) {
    let message = err.to_string();
    assert!(matches!(err, Error::Unavailable(_)), "{url}: {err:?}");
    assert!(
        !message.contains(url) && !message.contains("://"),
        "the URL reached the message: {message}"
    );
    assert!(
        message.contains(says),
        "{url}: {message:?} should say {says:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_tls_verifies_the_server_certificate() {
    within(TEST_BOUND, "the test", postgres_tls()).await;
}

async fn postgres_tls() {
    let ca = Ca::new("database CA");
    // Named `localhost` only: 127.0.0.1 is not a name it carries.
    let Some(postgres) = tls_postgres(&ca.server("database", &["localhost"])).await else {
        return;
    };
    let ca_file = postgres.dir().join("database-ca.crt");
    std::fs::write(&ca_file, ca.pem()).expect("ca");
    let ca_file = ca_file.to_str().expect("path").to_owned();

    // verify-full, by the certificate's name: served, over TLS, every
    // connection of sqlgate's.
    let url = postgres.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={ca_file}"),
    );
    let server = Server::start_on(&url, |_| {}).await;
    let tls = server
        .run(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl) \
             FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = 'sqlgate'",
        )
        .await;
    let values: Vec<_> = tls.rows[0].values.iter().map(|v| v.kind.clone()).collect();
    let Some(Kind::IntValue(encrypted)) = values[0] else {
        panic!("{values:?}")
    };
    assert!(encrypted >= 1, "{values:?}");
    assert_eq!(values[1], Some(Kind::IntValue(0)), "plaintext connections");
    server.stop().await;

    // verify-ca checks the chain only: by address too.
    let url = postgres.url(
        "127.0.0.1",
        &format!("sslmode=verify-ca&sslrootcert={ca_file}"),
    );
    let server = Server::start_on(&url, |_| {}).await;
    server.stop().await;

    // What fails, and says why: a name the certificate does not carry,
    // a CA that did not sign it, and plaintext (refused by the server).
    let other_ca = postgres.dir().join("other-ca.crt");
    std::fs::write(&other_ca, Ca::new("another CA").pem()).expect("ca");
    let other_ca = other_ca.to_str().expect("path");
    for (url, says) in [
        (
            postgres.url(
                "127.0.0.1",
                &format!("sslmode=verify-full&sslrootcert={ca_file}"),
            ),
            "not valid for name",
        ),
        (
            postgres.url(
                "localhost",
                &format!("sslmode=verify-full&sslrootcert={other_ca}"),
            ),
            "UnknownIssuer",
        ),
        (
            postgres.url("localhost", "sslmode=disable"),
            "no encryption",
        ),
    ] {
        let err = start_failure(&url).await;
        assert_unavailable_without_url(&err, &url, says);
    }
}

/// A MariaDB server of the test's own, serving TLS with `server`'s
/// certificate and refusing connections without it
/// (`require_secure_transport`); `root` without a password. `None`
/// (loudly, never in CI) where MariaDB's server binaries are missing.
async fn tls_mariadb(server: &Pem) -> Option<OwnedMariaDb> {
    let server = server.clone();
    OwnedMariaDb::start_with(move |dir| {
        std::fs::write(dir.join("server.crt"), &server.cert).expect("cert");
        std::fs::write(dir.join("server.key"), &server.key).expect("key");
        let path = |name: &str| dir.join(name).to_str().expect("path").to_owned();
        vec![
            format!("--ssl-cert={}", path("server.crt")),
            format!("--ssl-key={}", path("server.key")),
            "--require-secure-transport=ON".to_owned(),
        ]
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_over_tls_verifies_the_server_certificate() {
    within(TEST_BOUND, "the test", mysql_tls()).await;
}

async fn mysql_tls() {
    let ca = Ca::new("database CA");
    let Some(mariadb) = tls_mariadb(&ca.server("database", &["localhost"])).await else {
        return;
    };
    let ca_file = mariadb.dir().join("database-ca.crt");
    std::fs::write(&ca_file, ca.pem()).expect("ca");
    let ca_file = ca_file.to_str().expect("path").to_owned();

    // VERIFY_IDENTITY, by the certificate's name: served, over TLS.
    let url = mariadb.url(
        "localhost",
        &format!("ssl-mode=VERIFY_IDENTITY&ssl-ca={ca_file}"),
    );
    let server = Server::start_on(&url, |_| {}).await;
    let status = server.run("SHOW STATUS LIKE 'Ssl_version'").await;
    let version = status.rows[0].values[1].kind.clone();
    assert!(
        matches!(&version, Some(Kind::TextValue(v)) if v.starts_with("TLSv1")),
        "{version:?}"
    );
    server.stop().await;

    // VERIFY_CA checks the chain only: by address too.
    let url = mariadb.url("127.0.0.1", &format!("ssl-mode=VERIFY_CA&ssl-ca={ca_file}"));
    Server::start_on(&url, |_| {}).await.stop().await;

    let other_ca = mariadb.dir().join("other-ca.crt");
    std::fs::write(&other_ca, Ca::new("another CA").pem()).expect("ca");
    let other_ca = other_ca.to_str().expect("path");
    for (url, says) in [
        (
            mariadb.url(
                "127.0.0.1",
                &format!("ssl-mode=VERIFY_IDENTITY&ssl-ca={ca_file}"),
            ),
            "not valid for name",
        ),
        (
            mariadb.url(
                "localhost",
                &format!("ssl-mode=VERIFY_CA&ssl-ca={other_ca}"),
            ),
            "UnknownIssuer",
        ),
        // The same account, without TLS: refused (MariaDB 10.11 says
        // "Access denied" under require_secure_transport).
        (
            mariadb.url("localhost", "ssl-mode=DISABLED"),
            "Access denied",
        ),
    ] {
        let err = start_failure(&url).await;
        assert_unavailable_without_url(&err, &url, says);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_urls_that_demand_tls_fail_clearly_against_a_server_without_it() {
    within(TEST_BOUND, "the test", mysql_tls_refused()).await;
}

async fn mysql_tls_refused() {
    // The shared MariaDB serves no TLS (have_ssl DISABLED); a URL that
    // demands it must stop start-up, saying so, never with the URL.
    let Some(db) = TestDatabase::create(Backend::MySql).await else {
        return;
    };
    let ca = tempfile::NamedTempFile::new().expect("file");
    std::fs::write(ca.path(), Ca::new("database CA").pem()).expect("ca");
    let ca = ca.path().to_str().expect("path").to_owned();
    let mut checked = 0;
    for params in [
        "ssl-mode=REQUIRED".to_owned(),
        format!("ssl-mode=VERIFY_IDENTITY&ssl-ca={ca}"),
    ] {
        let url = format!("{}?{params}", db.url);
        match Application::build(settings_for(&url)).await {
            // A server configured with TLS after all: nothing to check here.
            Ok(_) => continue,
            Err(err) => assert_unavailable_without_url(&err, &url, "TLS"),
        }
        checked += 1;
    }
    if checked == 0 {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPING: the MySQL/MariaDB server serves TLS; nothing refused"
        );
    }
}

// ------------------------------------------------- certificate identities

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_becomes_the_callers_identity_and_role() {
    within(TEST_BOUND, "the test", certificate_identities()).await;
}

/// mTLS and authentication together: the verified certificate's name maps
/// to a role; the role decides what the caller may do (a reader cannot
/// write, a non-admin cannot read the pool's figures); an unmapped
/// certificate is refused UNAUTHENTICATED although its handshake passed.
async fn certificate_identities() {
    use sqlgate::grpc::{identity::Role, pb::admin_client::AdminClient};
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let files = TlsFiles::new(
        &server_ca.server("sqlgate", &["localhost"]),
        Some(&client_ca),
    );
    let server = Server::start(|settings| {
        files.apply(settings);
        let roles = &mut settings.auth.client_certificates.roles;
        roles.insert("reports.internal".to_owned(), Role::Reader);
        roles.insert("billing-api".to_owned(), Role::Writer);
    })
    .await;
    let address = server.address;
    let client = |common_name: &str, sans: &[SanType]| {
        TlsClient::new(
            &server_ca,
            Some(&client_ca.client(common_name, sans, false)),
        )
    };

    // A writer, known by its common name: writes, but is no admin.
    let writer = client("billing-api", &[])
        .channel(address)
        .await
        .expect("connect");
    let mut query = QueryClient::new(writer.clone());
    let execute = |sql: &str| pb::ExecuteRequest {
        sql: sql.to_owned(),
        params: vec![],
        max_rows: 0,
    };
    query
        .execute(execute("CREATE TABLE t (id INTEGER)"))
        .await
        .expect("a writer creates");
    query
        .execute(execute("INSERT INTO t VALUES (1)"))
        .await
        .expect("a writer writes");
    let status = AdminClient::new(writer)
        .get_pool_stats(pb::GetPoolStatsRequest {})
        .await
        .expect_err("a writer is no admin");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");

    // A reader, known by a DNS SAN: reads, cannot write.
    let reader = client("reporting", &[dns("reports.internal")])
        .channel(address)
        .await
        .expect("connect");
    let mut query = QueryClient::new(reader);
    let rows = query
        .execute(execute("SELECT count(*) FROM t"))
        .await
        .expect("a reader reads")
        .into_inner()
        .rows;
    assert_eq!(rows[0].values[0].kind, Some(Kind::IntValue(1)));
    let status = query
        .execute(execute("INSERT INTO t VALUES (2)"))
        .await
        .expect_err("a reader cannot write");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");

    // A certificate the CA signed but no role names: authenticated by TLS,
    // refused by sqlgate.
    let stranger = client("someone-else", &[])
        .channel(address)
        .await
        .expect("connect");
    let status = QueryClient::new(stranger)
        .execute(execute("SELECT 1"))
        .await
        .expect_err("an unmapped certificate");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    server.stop().await;
}
