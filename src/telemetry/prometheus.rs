//! The Prometheus endpoint: `GET /metrics` on a listener of its own
//! (`metrics.listen`), answered with the registry's figures as Prometheus
//! text. A deliberately small HTTP/1.1 responder: one request per
//! connection, its head read within a bound of size and time, so that a
//! scraper gets its answer and a careless or hostile client holds nothing.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use prometheus::{Encoder, TextEncoder};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

/// The largest request head read; a longer one is refused.
const MAX_HEAD_BYTES: usize = 8 * 1024;
/// How long a client has to send its request head and read the answer.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections answered at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 16;

/// Binds the endpoint's listener (at start-up, so that a port in use
/// stops sqlgate with a clear error).
pub(crate) async fn bind(address: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(address)
        .await
        .map_err(|err| format!("cannot listen on {address} for metrics: {err}"))
}

/// Serves `registry` on `listener` until `stop` is cancelled.
pub(crate) fn spawn(
    listener: TcpListener,
    registry: prometheus::Registry,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let accepted = tokio::select! {
                () = stop.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let Ok((stream, _)) = accepted else {
                continue;
            };
            let registry = registry.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(EXCHANGE_TIMEOUT, answer(stream, &registry)).await;
                drop(slot);
            });
        }
    })
}

/// Reads one request head and writes the answer.
async fn answer(mut stream: TcpStream, registry: &prometheus::Registry) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buffer = [0_u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_HEAD_BYTES {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                b"",
            )
            .await;
        }
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buffer[..read]);
    }
    let request_line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let mut parts = request_line.split(|b| *b == b' ');
    let (method, target) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let path = target.split(|b| *b == b'?').next().unwrap_or_default();
    match (method, path) {
        (b"GET", b"/metrics") => {
            let encoder = TextEncoder::new();
            let mut body = Vec::new();
            if encoder.encode(&registry.gather(), &mut body).is_err() {
                return respond(&mut stream, "500 Internal Server Error", "text/plain", b"").await;
            }
            respond(&mut stream, "200 OK", encoder.format_type(), &body).await
        }
        (b"GET", _) => {
            respond(
                &mut stream,
                "404 Not Found",
                "text/plain",
                b"GET /metrics\n",
            )
            .await
        }
        _ => respond(&mut stream, "405 Method Not Allowed", "text/plain", b"").await,
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await
}
