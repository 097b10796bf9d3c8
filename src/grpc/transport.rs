//! Serves the gRPC routes over HTTP/2 with hyper directly. tonic's own
//! `Server` wraps every call in its `GrpcTimeout` layer, which answers
//! CANCELLED when the client's `grpc-timeout` passes and races sqlgate's own
//! deadline handling; serving the routes here leaves deadlines wholly to
//! sqlgate (DEADLINE_EXCEEDED, and cleanup on the database). It also gives
//! shutdown a bound: connections still open after the drain are dropped.
//!
//! Every route is served under [`call_layers`], here and nowhere else, so
//! that no service can be served without them.

use std::{convert::Infallible, net::SocketAddr, time::Duration};

use hyper::server::conn::http2;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use tokio::net::TcpListener;
use tonic::{service::Routes, transport::server::TcpConnectInfo};
use tower::{Layer, Service};

use super::observe::{Observe, ObserveLayer, ObservedBody};
use crate::config::TransportSettings;

/// How long, after the drain, the calls it cut have to get their answer
/// (UNAVAILABLE) to their callers before their connections are dropped.
const ANSWER_GRACE: Duration = Duration::from_secs(1);

/// Accepts connections until `shutdown` resolves, then lets in-flight
/// calls finish for up to `drain`. Calls still running then are cut by
/// `cut_in_flight` (answered, and cancelled on the server); their answers
/// get [`ANSWER_GRACE`] to leave, and whatever is still open is dropped.
pub(crate) async fn serve(
    listener: TcpListener,
    routes: Routes,
    settings: &TransportSettings,
    drain: Duration,
    shutdown: impl Future<Output = ()>,
    cut_in_flight: impl FnOnce(),
) {
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(settings.keepalive_interval))
        .keep_alive_timeout(settings.keepalive_timeout)
        .max_concurrent_streams(settings.max_concurrent_streams);
    let graceful = GracefulShutdown::new();
    let routes = call_layers(routes.prepare());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, remote) = match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(error = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let service = with_peer(routes.clone(), stream.local_addr().ok(), remote);
                let connection = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(err) = connection.await {
                        tracing::debug!(error = %err, peer = %remote, "connection ended with an error");
                    }
                });
            }
        }
    }
    drop(listener);
    let closed = graceful.shutdown();
    tokio::pin!(closed);
    if tokio::time::timeout(drain, &mut closed).await.is_ok() {
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
/// that observes it (the call log); tracing, metrics, audit and
/// authentication attach to that same layer.
fn call_layers(routes: Routes) -> Observe<Routes> {
    ObserveLayer.layer(routes)
}

/// The response of a served call.
type Answer = http::Response<ObservedBody<tonic::body::Body>>;

/// Adds the peer's address to every request, where the call layers and
/// `Request::remote_addr` look for it (call logs name the caller).
fn with_peer(
    routes: Observe<Routes>,
    local: Option<SocketAddr>,
    remote: SocketAddr,
) -> impl Service<
    http::Request<hyper::body::Incoming>,
    Response = Answer,
    Error = Infallible,
    Future = impl Future<Output = Result<Answer, Infallible>> + Send,
> + Clone {
    tower::service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(TcpConnectInfo {
            local_addr: local,
            remote_addr: Some(remote),
        });
        let mut routes = routes.clone();
        async move { routes.call(request).await }
    })
}
