//! A client channel to sqlgate wherever it listens: on TCP, or on its Unix
//! socket, which tonic reaches only through a connector (the URI's
//! authority is then a placeholder). For Rust callers: the integration
//! tests and the benchmark.

use tonic::transport::{Channel, Endpoint, Error, Uri};

use crate::config::ListenAddress;

/// Connects to sqlgate at `address`, with the endpoint's settings made by
/// `configure` (windows, timeouts…).
pub async fn channel(
    address: &ListenAddress,
    configure: impl FnOnce(Endpoint) -> Endpoint,
) -> Result<Channel, Error> {
    match address {
        ListenAddress::Tcp(address) => {
            let endpoint = Endpoint::from_shared(format!("http://{address}"))?;
            configure(endpoint).connect().await
        }
        ListenAddress::Unix(path) => {
            let path = path.clone();
            let endpoint = Endpoint::from_static("http://localhost");
            configure(endpoint)
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        tokio::net::UnixStream::connect(path)
                            .await
                            .map(hyper_util::rt::TokioIo::new)
                    }
                }))
                .await
        }
    }
}
