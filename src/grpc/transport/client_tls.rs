//! The client side of TLS, for `sqlgate health` against a sqlgate whose
//! listener has TLS on (the kubelet's own gRPC probes speak plaintext
//! only): the server certificate is verified against a CA file, and with
//! mTLS a client certificate is presented. The files are read as the
//! listener reads its own, with the same one-line errors naming the file.

use std::{path::Path, sync::Arc};

use rustls::{ClientConfig, RootCertStore, pki_types::ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::{TlsConnector, client::TlsStream};

use super::tls::{ALPN_H2, FileName, certificates, private_key};

/// What the health command verifies and presents.
pub(crate) struct ProbeTls {
    connector: TlsConnector,
    server_name: ServerName<'static>,
}

impl ProbeTls {
    /// Trusts the certificates in `ca_file`, expects the server to be
    /// `server_name`, and presents `client` (certificate and key files)
    /// when given.
    pub(crate) fn new(
        ca_file: &Path,
        server_name: &str,
        client: Option<(&Path, &Path)>,
    ) -> Result<Self, String> {
        let read = |path: &Path| std::fs::read(path).map_err(|err| err.to_string());
        let ca_name = FileName("--tls-ca", Some(ca_file));
        let mut roots = RootCertStore::empty();
        for certificate in certificates(&ca_name, &read(ca_file))? {
            roots
                .add(certificate)
                .map_err(|err| format!("{ca_name}: {err}"))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|err| format!("TLS: {err}"))?
            .with_root_certificates(roots);
        let mut config = match client {
            None => builder.with_no_client_auth(),
            Some((cert_file, key_file)) => {
                let cert_name = FileName("--tls-cert", Some(cert_file));
                let key_name = FileName("--tls-key", Some(key_file));
                builder
                    .with_client_auth_cert(
                        certificates(&cert_name, &read(cert_file))?,
                        private_key(&key_name, &read(key_file))?,
                    )
                    .map_err(|err| format!("{cert_name} and {key_name}: {err}"))?
            }
        };
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        let server_name = ServerName::try_from(server_name.to_owned()).map_err(|_| {
            format!("--tls-server-name {server_name:?} is not a DNS name or address")
        })?;
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }

    /// Completes the TLS handshake on `stream`, a connection to the
    /// server (TCP or its Unix socket).
    pub(crate) async fn handshake<S>(&self, stream: S) -> std::io::Result<TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.connector
            .connect(self.server_name.clone(), stream)
            .await
    }
}
