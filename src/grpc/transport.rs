//! Serves the gRPC routes over HTTP/2 with hyper directly. tonic's own
//! `Server` wraps every call in its `GrpcTimeout` layer, which answers
//! CANCELLED when the client's `grpc-timeout` passes and races sqlgate's own
//! deadline handling; serving the routes here leaves deadlines wholly to
//! sqlgate (DEADLINE_EXCEEDED, and cleanup on the database). It also gives
//! shutdown a bound: connections still open after the drain are dropped.
//!
//! Sockets are bounded here too: at most `transport.max_connections` client
//! connections are open at once (more are closed as soon as they are
//! accepted), and a connection that does not complete its HTTP/2 handshake
//! within `transport.handshake_timeout` is closed, so that neither silent
//! sockets nor a flood of them can hold sqlgate's descriptors.
//!
//! With `[tls]` set, every connection is TLS (HTTP/2 by ALPN `h2`): the
//! TLS handshake runs in the connection's own task, under the same
//! handshake timeout as the HTTP/2 handshake that follows it (one deadline
//! from accept for both), and the HTTP/2 handshake is followed on the
//! decrypted stream. A verified client certificate's names go into every
//! request of its connection as a [`ClientCertificate`].
//!
//! A client connection older than `transport.max_connection_age` (plus
//! its jitter) is sent HTTP/2 GOAWAY, as at shutdown: its calls and
//! sessions go on (for at most `max_connection_age_grace`), and the client
//! reconnects for new calls, so that replicas added behind a Service get
//! their share of long-lived clients.
//!
//! The listener is TCP or a Unix socket (see `listener`); a connection on
//! either is served the same way, its [`Peer`] put into every request.
//!
//! Every route is served under [`call_layers`], here and nowhere else, so
//! that no service can be served without them.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use hyper::server::conn::http2;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::graceful::GracefulConnection,
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::{OwnedSemaphorePermit, Semaphore, oneshot, watch},
};
use tonic::{service::Routes, transport::server::TcpConnectInfo};
use tower::{Layer, Service};

use super::{
    Peer,
    auth::Authenticator,
    identity::ClientCertificate,
    observe::{Observe, ObserveLayer, Observers},
};
use crate::config::TransportSettings;

mod client_tls;
mod listener;
mod tls;

pub(crate) use client_tls::ProbeTls;
pub(crate) use listener::{ClientStream, Listener, check_listen};
pub(crate) use tls::ServerTls;

/// Who may connect (TLS, and mTLS's client CA) and who may call (the
/// credentials every call is checked against).
pub(crate) struct Admission {
    /// TLS on the listener, `None` for plaintext.
    pub(crate) tls: Option<Arc<ServerTls>>,
    /// Checks every call's credentials (off when none are configured).
    pub(crate) auth: Authenticator,
    /// What records every call besides its log line (metrics, audit…).
    pub(crate) observers: Observers,
}

/// How long, after the drain, the calls it cut have to get their answer
/// (UNAVAILABLE) to their callers before their connections are dropped.
const ANSWER_GRACE: Duration = Duration::from_secs(1);

/// Accepts connections until `shutdown` resolves, then lets in-flight
/// calls finish until `drain` after the moment `shutdown` resolves to (when
/// the drain began: whatever shutdown did first, such as ending sessions,
/// spends the same drain, so that the drain is never waited out twice).
/// Calls still running then are cut by
/// `cut_in_flight` (answered, and cancelled on the server); their answers
/// get [`ANSWER_GRACE`] to leave, and whatever is still open is dropped.
/// With TLS, every connection is TLS, with the certificate current when
/// it is accepted; every call is authenticated before its handler runs.
pub(crate) async fn serve(
    listener: Listener,
    routes: Routes,
    settings: &TransportSettings,
    admission: Admission,
    drain: Duration,
    shutdown: impl Future<Output = tokio::time::Instant>,
    cut_in_flight: impl FnOnce(),
) {
    let Admission {
        tls,
        auth,
        observers,
    } = admission;
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(settings.keepalive_interval))
        .keep_alive_timeout(settings.keepalive_timeout)
        .max_concurrent_streams(settings.max_concurrent_streams);
    let builder = Arc::new(builder);
    // Every connection holds a receiver until it ends: a value sent asks
    // them all to go away, and the sender sees when the last one has.
    let (stop_connections, stop) = watch::channel(());
    let routes = call_layers(routes.prepare(), auth, observers);
    let slots = Arc::new(Semaphore::new(settings.max_connections as usize));
    let mut refusals = Refusals::default();
    let handshake_timeout = settings.handshake_timeout;
    tokio::pin!(shutdown);
    let drain_began = loop {
        tokio::select! {
            began = &mut shutdown => break began,
            accepted = listener.accept() => {
                let (stream, remote, local) = match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(error = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    // Closed at once: the client's calls fail fast
                    // (UNAVAILABLE in grpc-go, -java and -core) and it
                    // reconnects with backoff, or to another replica,
                    // instead of waiting out its deadline in our backlog.
                    drop(stream);
                    refusals.refused(remote, settings.max_connections);
                    continue;
                };
                // One deadline, from now, for the TLS handshake (if any)
                // and the HTTP/2 handshake after it.
                let accepted = Accepted {
                    remote,
                    local,
                    handshake_deadline: tokio::time::Instant::now() + handshake_timeout,
                    slot,
                    stop: stop.clone(),
                    age: ConnectionAge::chosen(settings),
                };
                let connection = Connection {
                    http: builder.clone(),
                    routes: routes.clone(),
                    accepted,
                };
                // The TLS handshake runs in the connection's task, so that
                // a slow or silent client never holds up the accept loop.
                let tls = tls.as_ref().map(|tls| tls.acceptor());
                tokio::spawn(connection.serve(stream, tls));
            }
        }
    };
    drop(listener);
    drop(stop);
    stop_connections.send_replace(());
    let closed = stop_connections.closed();
    tokio::pin!(closed);
    if tokio::time::timeout_at(drain_began + drain, &mut closed)
        .await
        .is_ok()
    {
        return;
    }
    cut_in_flight();
    if tokio::time::timeout(ANSWER_GRACE, &mut closed)
        .await
        .is_err()
    {
        tracing::warn!(
            ?drain,
            "connections still open after the drain timeout; dropping them"
        );
    }
}

/// The layers every call passes through, outermost first: today the one
/// that observes it (the call log, and `observers`: metrics…) and
/// authenticates it with `auth` before any handler runs.
fn call_layers(routes: Routes, auth: Authenticator, observers: Observers) -> Observe<Routes> {
    ObserveLayer::new(auth).observed_by(observers).layer(routes)
}

/// Adds the peer to every request, where the call layers look for it
/// (call logs name the caller; a TCP peer's address also where
/// `Request::remote_addr` looks), and the
/// names of the connection's verified client certificate, if it presented
/// one, where authentication looks for them.
fn with_peer<B, S>(
    routes: S,
    local: Option<SocketAddr>,
    remote: Peer,
    client: Option<ClientCertificate>,
) -> impl Service<
    http::Request<B>,
    Response = S::Response,
    Error = S::Error,
    Future = impl Future<Output = Result<S::Response, S::Error>> + Send,
> + Clone
where
    S: Service<http::Request<B>> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    tower::service_fn(move |mut request: http::Request<B>| {
        let extensions = request.extensions_mut();
        extensions.insert(remote);
        if let Peer::Tcp(remote) = remote {
            extensions.insert(TcpConnectInfo {
                local_addr: local,
                remote_addr: Some(remote),
            });
        }
        if let Some(client) = &client {
            extensions.insert(client.clone());
        }
        let mut routes = routes.clone();
        async move { routes.call(request).await }
    })
}

/// What the accept loop hands a connection's task.
struct Accepted {
    remote: Peer,
    local: Option<SocketAddr>,
    /// When the TLS and HTTP/2 handshakes must be complete.
    handshake_deadline: tokio::time::Instant,
    /// The connection's place under `transport.max_connections`, held
    /// until it ends (its handshakes included).
    slot: OwnedSemaphorePermit,
    /// Taken at accept, so that a shutdown that begins during the TLS
    /// handshake still reaches the connection (and waits for it).
    stop: watch::Receiver<()>,
    /// When the connection is sent away for its age (`None`: never).
    age: Option<ConnectionAge>,
}

/// One accepted client connection, served in a task of its own.
struct Connection {
    http: Arc<http2::Builder<TokioExecutor>>,
    routes: Observe<Routes>,
    accepted: Accepted,
}

impl Connection {
    /// Runs the TLS handshake (with `tls`) within the handshake deadline,
    /// then serves HTTP/2 over the (decrypted) stream.
    async fn serve(self, stream: ClientStream, tls: Option<tokio_rustls::TlsAcceptor>) {
        let Some(tls) = tls else {
            self.serve_http2(stream, None).await;
            return;
        };
        let peer = self.accepted.remote;
        let stream = match tokio::time::timeout_at(
            self.accepted.handshake_deadline,
            tls.accept(stream),
        )
        .await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => {
                // Wrong certificates, plaintext on the TLS port, scanners:
                // the client learns why from the TLS alert.
                tracing::debug!(peer = %peer, error = %err, "TLS handshake failed; connection closed");
                return;
            }
            Err(_) => {
                tracing::debug!(
                    peer = %peer,
                    "no TLS handshake within the handshake timeout; connection closed"
                );
                return;
            }
        };
        let client = match stream.get_ref().1.peer_certificates() {
            Some([leaf, ..]) => match tls::client_certificate(leaf) {
                Ok(client) => {
                    tracing::debug!(
                        peer = %peer,
                        common_name = client.common_name.as_deref().unwrap_or(""),
                        sans = ?client.sans,
                        "client certificate verified"
                    );
                    Some(client)
                }
                Err(err) => {
                    // Verified, yet unreadable: refuse rather than serve a
                    // client whose names authentication cannot see.
                    tracing::warn!(peer = %peer, error = %err, "client certificate unreadable; connection closed");
                    return;
                }
            },
            _ => None,
        };
        self.serve_http2(stream, client).await;
    }

    /// Serves HTTP/2 on `stream`, holding the connection's slot until it
    /// ends. A connection whose HTTP/2 handshake is not complete by the
    /// handshake deadline is dropped, which closes its socket.
    async fn serve_http2<S>(self, stream: S, client: Option<ClientCertificate>)
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let Self {
            http,
            routes,
            accepted,
        } = self;
        let _slot = accepted.slot;
        let peer = accepted.remote;
        let (stream, handshaken) = HandshakeWatch::new(stream);
        let service = with_peer(routes, accepted.local, peer, client);
        let connection = until_closed(
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service)),
            accepted.stop,
            accepted.age,
            peer,
        );
        tokio::pin!(connection);
        // A watch dropped before the handshake completes means the connection
        // is over: its own branch below answers then.
        let handshake = async {
            if handshaken.await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        let early = tokio::time::timeout_at(accepted.handshake_deadline, async {
            tokio::select! {
                biased;
                ended = &mut connection => Some(ended),
                () = handshake => None,
            }
        })
        .await;
        let ended = match early {
            Ok(Some(ended)) => ended,
            Ok(None) => connection.await,
            Err(_) => {
                tracing::debug!(
                    peer = %peer,
                    "no HTTP/2 handshake within the handshake timeout; connection closed"
                );
                return;
            }
        };
        if let Err(err) = ended {
            tracing::debug!(error = %err, peer = %peer, "connection ended with an error");
        }
    }
}

/// When a connection is sent away for its age, and how long its calls may
/// then go on (`transport.max_connection_age*`).
#[derive(Debug, Clone, Copy)]
struct ConnectionAge {
    /// When GOAWAY is sent: the age plus this connection's share of the jitter.
    goaway_at: tokio::time::Instant,
    /// How long after GOAWAY the connection is closed whatever still runs.
    grace: Option<Duration>,
}

impl ConnectionAge {
    /// This connection's, accepted now (`None` when connections never age).
    fn chosen(settings: &TransportSettings) -> Option<Self> {
        let age = settings.max_connection_age?;
        let jitter = settings.max_connection_age_jitter.unwrap_or(age / 10);
        Some(Self {
            goaway_at: tokio::time::Instant::now() + age + jitter.mul_f64(random_fraction()),
            grace: settings.max_connection_age_grace,
        })
    }
}

/// A number in [0, 1), different for every call (std's hasher keys are
/// random): enough to spread connections' ages, no cryptography needed.
fn random_fraction() -> f64 {
    use std::hash::BuildHasher;
    let bits = std::collections::hash_map::RandomState::new().hash_one(0u8) >> 11;
    bits as f64 / (1u64 << 53) as f64
}

/// Serves `connection` until it ends. When shutdown begins (`stop`
/// changes) or the connection reaches its `age`, it is asked to end
/// gracefully: HTTP/2 GOAWAY, so the client opens a new connection for new
/// calls, while the calls and sessions already open go on. An aged
/// connection still open after its grace is closed (dropped) here; at
/// shutdown the drain bounds it instead.
async fn until_closed<C: GracefulConnection>(
    connection: C,
    mut stop: watch::Receiver<()>,
    age: Option<ConnectionAge>,
    peer: Peer,
) -> Result<(), C::Error> {
    /// Resolves at `deadline`; never without one.
    async fn at(deadline: Option<tokio::time::Instant>) {
        match deadline {
            Some(deadline) => tokio::time::sleep_until(deadline).await,
            None => std::future::pending().await,
        }
    }
    tokio::pin!(connection);
    let mut going_away = false;
    let mut stop_seen = false;
    let mut close_at = None;
    loop {
        let aged_at = age.filter(|_| !going_away).map(|age| age.goaway_at);
        tokio::select! {
            ended = &mut connection => return ended,
            _ = stop.changed(), if !stop_seen => {
                stop_seen = true;
                if !going_away {
                    going_away = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
            () = at(aged_at), if aged_at.is_some() => {
                going_away = true;
                connection.as_mut().graceful_shutdown();
                close_at = age
                    .and_then(|age| age.grace)
                    .map(|grace| tokio::time::Instant::now() + grace);
                tracing::debug!(peer = %peer, "connection reached its maximum age; GOAWAY sent");
            }
            () = at(close_at), if close_at.is_some() => {
                tracing::debug!(
                    peer = %peer,
                    "connection still busy at the end of its age grace; closed"
                );
                return Ok(());
            }
        }
    }
}

/// Connections refused for want of a slot, logged at most once a second
/// (a flood of connections must not become a flood of log lines).
#[derive(Debug, Default)]
struct Refusals {
    /// When the last line was written.
    logged_at: Option<Instant>,
    /// Refusals since that line.
    unlogged: u64,
}

impl Refusals {
    /// How often a refusal may be logged.
    const LOG_INTERVAL: Duration = Duration::from_secs(1);

    /// Counts a refused connection from `peer`, and logs the refusals
    /// counted so far if no line was written for [`Self::LOG_INTERVAL`].
    fn refused(&mut self, peer: Peer, max_connections: u32) {
        self.unlogged += 1;
        if self
            .logged_at
            .is_some_and(|at| at.elapsed() < Self::LOG_INTERVAL)
        {
            return;
        }
        tracing::warn!(
            peer = %peer,
            max_connections,
            refused = self.unlogged,
            "client connection limit reached; new connections are closed"
        );
        self.logged_at = Some(Instant::now());
        self.unlogged = 0;
    }
}

/// HTTP/2 frame type of SETTINGS, and its ACK flag (RFC 9113 §6.5).
const SETTINGS_FRAME: u8 = 0x4;
const ACK_FLAG: u8 = 0x1;
/// Length of the client connection preface, `PRI * HTTP/2.0…` (RFC 9113 §3.4).
const PREFACE_LEN: usize = 24;
/// Length of an HTTP/2 frame header.
const FRAME_HEADER_LEN: usize = 9;

/// A client socket whose first bytes are followed as they pass to hyper,
/// to tell when its HTTP/2 handshake is complete: the preface, then frames
/// up to the client's acknowledgement of sqlgate's SETTINGS (which shows
/// that the client reads too). hyper keeps no time limit on that itself.
/// Past the handshake it only forwards. It reads HTTP/2 bytes, so with TLS
/// it wraps the decrypted stream.
struct HandshakeWatch<S> {
    inner: S,
    progress: Handshake,
    /// Fired once the handshake is complete; `None` from then on.
    done: Option<oneshot::Sender<()>>,
}

impl<S> HandshakeWatch<S> {
    /// The watched socket, and what resolves when its handshake is done.
    fn new(inner: S) -> (Self, oneshot::Receiver<()>) {
        let (done, handshaken) = oneshot::channel();
        let watch = Self {
            inner,
            progress: Handshake::Preface { left: PREFACE_LEN },
            done: Some(done),
        };
        (watch, handshaken)
    }
}

/// Where a client is in its handshake, byte by byte. Its bytes are not
/// checked here (hyper refuses a wrong preface or a first frame other than
/// SETTINGS); only counted, to find the SETTINGS acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handshake {
    /// Reading the preface: `left` bytes to go.
    Preface { left: usize },
    /// Reading a frame header: `have` of its bytes so far.
    FrameHeader {
        header: [u8; FRAME_HEADER_LEN],
        have: usize,
    },
    /// Skipping a frame's payload: `left` bytes to go.
    Payload { left: usize },
    /// The client acknowledged sqlgate's SETTINGS.
    Complete,
}

impl Handshake {
    const NEXT_FRAME: Self = Self::FrameHeader {
        header: [0; FRAME_HEADER_LEN],
        have: 0,
    };

    /// Follows `bytes`, the next ones the client sent.
    fn follow(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match self {
                Self::Preface { left } | Self::Payload { left } => {
                    let taken = (*left).min(bytes.len());
                    *left -= taken;
                    bytes = &bytes[taken..];
                    if *left == 0 {
                        *self = Self::NEXT_FRAME;
                    }
                }
                Self::FrameHeader { header, have } => {
                    let taken = (FRAME_HEADER_LEN - *have).min(bytes.len());
                    header[*have..*have + taken].copy_from_slice(&bytes[..taken]);
                    *have += taken;
                    bytes = &bytes[taken..];
                    if *have == FRAME_HEADER_LEN {
                        let length = u32::from_be_bytes([0, header[0], header[1], header[2]]);
                        *self = if header[3] == SETTINGS_FRAME && header[4] & ACK_FLAG != 0 {
                            Self::Complete
                        } else if length == 0 {
                            Self::NEXT_FRAME
                        } else {
                            Self::Payload {
                                left: length as usize,
                            }
                        };
                    }
                }
                Self::Complete => return,
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for HandshakeWatch<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if this.done.is_some() && matches!(polled, Poll::Ready(Ok(()))) {
            this.progress.follow(&buf.filled()[before..]);
            if this.progress == Handshake::Complete
                && let Some(done) = this.done.take()
            {
                let _ = done.send(());
            }
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for HandshakeWatch<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use super::*;

    #[tokio::test]
    async fn every_request_carries_the_peer_and_the_client_certificate_of_its_connection() {
        let names = tower::service_fn(|request: http::Request<()>| async move {
            let extensions = request.extensions();
            Ok::<_, Infallible>((
                extensions
                    .get::<TcpConnectInfo>()
                    .and_then(|info| info.remote_addr),
                extensions.get::<ClientCertificate>().cloned(),
            ))
        });
        let remote = SocketAddr::from(([10, 0, 0, 7], 40000));
        let client = ClientCertificate {
            common_name: Some("billing-api".to_owned()),
            sans: vec!["spiffe://example.org/billing".to_owned()],
        };
        let mut with_certificate = with_peer(names, None, Peer::Tcp(remote), Some(client.clone()));
        for _ in 0..2 {
            let seen = with_certificate
                .call(http::Request::new(()))
                .await
                .expect("infallible");
            assert_eq!(seen, (Some(remote), Some(client.clone())));
        }
        let mut without = with_peer(names, None, Peer::Tcp(remote), None);
        let seen = without
            .call(http::Request::new(()))
            .await
            .expect("infallible");
        assert_eq!(seen, (Some(remote), None));
    }

    /// The bytes a client sends: preface, SETTINGS, WINDOW_UPDATE, then
    /// the SETTINGS acknowledgement.
    fn client_handshake() -> Vec<u8> {
        let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        bytes.extend([0, 0, 6, SETTINGS_FRAME, 0, 0, 0, 0, 0]);
        bytes.extend([0, 2, 0, 0, 0, 0]);
        bytes.extend([0, 0, 4, 0x8, 0, 0, 0, 0, 0, 0, 1, 0, 0]);
        bytes.extend([0, 0, 0, SETTINGS_FRAME, ACK_FLAG, 0, 0, 0, 0]);
        bytes
    }

    #[test]
    fn the_handshake_completes_at_the_settings_acknowledgement() {
        let bytes = client_handshake();
        let mut whole = Handshake::Preface { left: PREFACE_LEN };
        whole.follow(&bytes[..bytes.len() - 1]);
        assert_ne!(whole, Handshake::Complete);
        whole.follow(&bytes[bytes.len() - 1..]);
        assert_eq!(whole, Handshake::Complete);
    }

    #[test]
    fn the_handshake_is_followed_across_reads_of_any_size() {
        let bytes = client_handshake();
        for chunk in 1..bytes.len() {
            let mut progress = Handshake::Preface { left: PREFACE_LEN };
            for piece in bytes.chunks(chunk) {
                progress.follow(piece);
            }
            assert_eq!(progress, Handshake::Complete, "chunks of {chunk}");
        }
    }

    #[test]
    fn half_a_preface_or_settings_without_acknowledgement_is_incomplete() {
        let bytes = client_handshake();
        for end in [0, 12, PREFACE_LEN, PREFACE_LEN + 15, bytes.len() - 9] {
            let mut progress = Handshake::Preface { left: PREFACE_LEN };
            progress.follow(&bytes[..end]);
            assert_ne!(progress, Handshake::Complete, "{end} bytes");
        }
    }
}
