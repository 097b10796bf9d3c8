//! The standard `grpc.health.v1` service, and the probe behind it.
//!
//! Liveness reflects the process only, so a database outage never restarts
//! every pod. Readiness (and the per-service entries) reflects a background
//! probe that runs a trivial statement on a connection of its own (never
//! one of the main pool: a pool full of busy callers must not look like an
//! unreachable database), with failure and success thresholds so one slow
//! probe does not flap it, and pool saturation (callers waiting above a
//! level for a while), which is reported and logged as such, with its
//! reason, and never as the database being down. On shutdown, readiness
//! goes NOT_SERVING first.
//!
//! tonic-health answers `Watch` on an unknown service with NOT_FOUND; the
//! gRPC health spec asks for a streamed SERVICE_UNKNOWN, so sqlgate serves
//! the protocol itself.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use futures::{Stream, StreamExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tonic_health::pb::{
    HealthCheckRequest, HealthCheckResponse, health_check_response::ServingStatus,
    health_server::Health,
};

use crate::{
    config::HealthSettings,
    db::{PoolHandle, PoolSnapshot},
};

/// Follows the process only.
pub const LIVENESS: &str = "liveness";

/// The names that follow readiness.
pub const READINESS_NAMES: [&str; 4] = ["", "readiness", "sqlgate.v1.Query", "sqlgate.v1.Sessions"];

/// The current answer for every known name, and who is watching.
#[derive(Debug)]
pub struct HealthState {
    statuses: HashMap<&'static str, watch::Sender<ServingStatus>>,
    /// Once shutting down, nothing makes sqlgate ready again.
    stopping: AtomicBool,
    /// Cancelled at shutdown, once readiness is NOT_SERVING: ends every
    /// `Watch` stream, which would otherwise hold the drain open until its
    /// timeout (gRPC clients with health checking keep one open).
    stopped: CancellationToken,
    probe: Mutex<ProbeReport>,
}

/// What the last probe found, for GetPoolStats. (Whether the database is
/// reachable is the pool's own flag, `PoolHandle::is_reachable`.)
#[derive(Debug, Clone, Default)]
pub struct ProbeReport {
    /// How long the last probe took.
    pub last_latency: Duration,
    /// Whether too many callers have been waiting for too long.
    pub saturated: bool,
    /// Why the pool counts as saturated; empty when it does not.
    pub saturation_reason: String,
}

impl HealthState {
    /// Everything SERVING: sqlgate starts with a connected pool.
    pub fn new() -> Arc<Self> {
        Self::starting(true)
    }

    /// Liveness SERVING; readiness SERVING only if the database was
    /// `reached` at start-up (otherwise the probe makes it ready later).
    pub fn starting(reached: bool) -> Arc<Self> {
        let readiness = if reached {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        let statuses = READINESS_NAMES
            .iter()
            .map(|name| (*name, watch::channel(readiness).0))
            .chain([(LIVENESS, watch::channel(ServingStatus::Serving).0)])
            .collect();
        Arc::new(Self {
            statuses,
            stopping: AtomicBool::new(false),
            stopped: CancellationToken::new(),
            probe: Mutex::new(ProbeReport::default()),
        })
    }

    /// The answer for `name`, `None` for a name sqlgate does not know.
    pub fn status(&self, name: &str) -> Option<ServingStatus> {
        self.statuses.get(name).map(|sender| *sender.borrow())
    }

    fn set_ready(&self, ready: bool) {
        let status = if ready && !self.stopping.load(Ordering::SeqCst) {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        for name in READINESS_NAMES {
            if let Some(sender) = self.statuses.get(name) {
                sender.send_if_modified(|current| {
                    let changed = *current != status;
                    *current = status;
                    changed
                });
            }
        }
    }

    /// Shutdown: readiness NOT_SERVING for good; liveness stays.
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.set_ready(false);
        self.stopped.cancel();
    }

    /// The last probe's findings.
    pub fn probe_report(&self) -> ProbeReport {
        self.probe
            .lock()
            .map(|report| report.clone())
            .unwrap_or_default()
    }
}

/// Runs the probe every `settings.probe_interval` until `stop` is cancelled.
pub fn spawn_probe(
    db: Arc<dyn PoolHandle>,
    state: Arc<HealthState>,
    settings: HealthSettings,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut failures = 0u32;
        let mut successes = 0u32;
        // From what start-up found: a database not reached then needs
        // `success_threshold` good probes before sqlgate is ready.
        let mut up = db.is_reachable();
        let mut waiting_since: Option<Instant> = None;
        let mut saturated = false;
        let mut interval = tokio::time::interval(settings.probe_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = interval.tick() => {}
            }
            let started = Instant::now();
            let ok = db.probe(settings.probe_timeout).await;
            let latency = started.elapsed();
            if ok {
                successes += 1;
                failures = 0;
                if !up && successes >= settings.success_threshold {
                    up = true;
                    tracing::info!("database reachable; ready");
                }
            } else {
                failures += 1;
                successes = 0;
                if up && failures >= settings.failure_threshold {
                    up = false;
                    tracing::warn!(failures, "database unreachable; not ready");
                }
            }
            let pool = db.snapshot();
            waiting_since = match (pool.waiting > settings.saturation_waiters, waiting_since) {
                (true, None) => Some(Instant::now()),
                (true, since) => since,
                (false, _) => None,
            };
            let saturation = waiting_since
                .filter(|since| since.elapsed() >= settings.saturation_duration)
                .map(|since| saturation_reason(&pool, since.elapsed(), &settings));
            match (&saturation, saturated) {
                (Some(reason), false) => {
                    saturated = true;
                    tracing::warn!(%reason, database_reachable = up, "pool saturated; not ready");
                }
                (None, true) => {
                    saturated = false;
                    tracing::info!("pool no longer saturated");
                }
                _ => {}
            }
            if let Ok(mut report) = state.probe.lock() {
                *report = ProbeReport {
                    last_latency: latency,
                    saturated,
                    saturation_reason: saturation.unwrap_or_default(),
                };
            }
            db.set_reachable(up);
            state.set_ready(up && !saturated);
        }
    })
}

/// Why the pool counts as saturated, in words for logs and GetPoolStats:
/// a busy pool, told apart from an unreachable database.
fn saturation_reason(
    pool: &PoolSnapshot,
    for_how_long: Duration,
    settings: &HealthSettings,
) -> String {
    format!(
        "{} callers waiting for a database connection (more than {}) for {}; {} of {} connections in use",
        pool.waiting,
        settings.saturation_waiters,
        humantime::format_duration(Duration::from_millis(
            u64::try_from(for_how_long.as_millis()).unwrap_or(u64::MAX)
        )),
        pool.in_use_connections,
        pool.max_connections,
    )
}

/// Logs the pool's figures once a minute at debug level.
pub fn spawn_pool_log(
    db: Arc<dyn PoolHandle>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = interval.tick() => {}
            }
            let s = db.snapshot();
            tracing::debug!(
                open = s.open_connections,
                idle = s.idle_connections,
                in_use = s.in_use_connections,
                waiting = s.waiting,
                acquire_timeouts = s.acquire_timeouts,
                wait_p99_ms = s.acquire_wait_p99.as_secs_f64() * 1000.0,
                "pool"
            );
        }
    })
}

/// `grpc.health.v1.Health` over [`HealthState`].
#[derive(Debug, Clone)]
pub struct HealthService {
    state: Arc<HealthState>,
}

impl HealthService {
    /// Answers from `state`.
    pub fn new(state: Arc<HealthState>) -> Self {
        Self { state }
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let name = request.into_inner().service;
        match self.state.status(&name) {
            Some(status) => Ok(Response::new(HealthCheckResponse {
                status: status.into(),
            })),
            None => Err(Status::not_found(format!("unknown service {name:?}"))),
        }
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let name = request.into_inner().service;
        let stopped = self.state.stopped.clone();
        let Some(sender) = self.state.statuses.get(name.as_str()) else {
            // The spec: stream SERVICE_UNKNOWN and keep the call open (until shutdown).
            let unknown = HealthCheckResponse {
                status: ServingStatus::ServiceUnknown.into(),
            };
            let until_stopped = futures::stream::once(async move { stopped.cancelled().await })
                .filter_map(|()| async { None });
            let stream = futures::stream::once(async move { Ok(unknown) }).chain(until_stopped);
            return Ok(Response::new(Box::pin(stream)));
        };
        Ok(Response::new(watch_until_stopped(
            sender.subscribe(),
            stopped,
        )))
    }
}

/// The current answer first, then every change; at shutdown, the last
/// change (NOT_SERVING) if not yet sent, then the end of the stream.
fn watch_until_stopped(
    receiver: watch::Receiver<ServingStatus>,
    stopped: CancellationToken,
) -> WatchStream {
    fn answer(status: ServingStatus) -> Result<HealthCheckResponse, Status> {
        Ok(HealthCheckResponse {
            status: status.into(),
        })
    }
    let first = answer(*receiver.borrow());
    let changes = futures::stream::unfold(
        (receiver, stopped, false),
        |(mut receiver, stopped, ended)| async move {
            if ended {
                return None;
            }
            tokio::select! {
                biased;
                changed = receiver.changed() => {
                    changed.ok()?;
                    let status = *receiver.borrow_and_update();
                    Some((answer(status), (receiver, stopped, false)))
                }
                () = stopped.cancelled() => {
                    // NOT_SERVING was set before the token was cancelled.
                    let pending = receiver.has_changed().unwrap_or(false);
                    pending.then(|| {
                        let status = *receiver.borrow_and_update();
                        (answer(status), (receiver, stopped, true))
                    })
                }
            }
        },
    );
    Box::pin(futures::stream::once(async move { first }).chain(changes))
}

/// How `sqlgate health` speaks TLS to a sqlgate whose listener has it on.
#[derive(Debug, Clone, Default)]
pub struct HealthTls {
    /// The CA the server's certificate must chain to.
    pub ca_file: std::path::PathBuf,
    /// The name the server's certificate must carry (default: the host of
    /// the address).
    pub server_name: Option<String>,
    /// A client certificate and its key, for a listener that requires
    /// mTLS (`tls.client_auth = "required"`).
    pub client: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

/// `sqlgate health`: asks the health service at `address` about `service`
/// within `timeout`, as an exec probe, a Docker `HEALTHCHECK` or an ECS
/// health check would. `Ok` only when it answers SERVING; otherwise what
/// it answered, or why it could not ask. Plaintext, or TLS with `tls`;
/// `address` is `host:port`, or `unix:PATH` for a Unix socket.
pub async fn ask(
    address: &str,
    service: &str,
    timeout: Duration,
    tls: Option<&HealthTls>,
) -> Result<(), String> {
    use tokio_util::either::Either;
    use tonic_health::pb::health_client::HealthClient;
    let unix = address.strip_prefix("unix:").map(std::path::PathBuf::from);
    // A Unix socket has no authority: the URI's is a placeholder.
    let authority = if unix.is_some() { "localhost" } else { address };
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{authority}"))
        .map_err(|err| format!("{address:?} is not an address: {err}"))?
        .connect_timeout(timeout)
        .timeout(timeout);
    let probe_tls = match tls {
        None => None,
        Some(tls) => {
            let host = authority
                .rsplit_once(':')
                .map_or(authority, |(host, _)| host)
                .trim_start_matches('[')
                .trim_end_matches(']');
            let name = tls.server_name.as_deref().unwrap_or(host);
            let client = tls
                .client
                .as_ref()
                .map(|(cert, key)| (cert.as_path(), key.as_path()));
            Some(Arc::new(crate::grpc::transport::ProbeTls::new(
                &tls.ca_file,
                name,
                client,
            )?))
        }
    };
    let asked = async {
        let channel = if unix.is_none() && probe_tls.is_none() {
            endpoint.connect().await
        } else {
            let address = address.to_owned();
            let connector = tower::service_fn(move |_: http::Uri| {
                let (probe_tls, address, unix) = (probe_tls.clone(), address.clone(), unix.clone());
                async move {
                    let stream: crate::grpc::transport::ClientStream = match unix {
                        Some(path) => Either::Right(tokio::net::UnixStream::connect(path).await?),
                        None => {
                            let tcp = tokio::net::TcpStream::connect(&address).await?;
                            let _ = tcp.set_nodelay(true);
                            Either::Left(tcp)
                        }
                    };
                    let stream = match probe_tls {
                        None => Either::Left(stream),
                        Some(probe_tls) => Either::Right(probe_tls.handshake(stream).await?),
                    };
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                }
            });
            endpoint.connect_with_connector(connector).await
        }
        .map_err(|err| format!("cannot connect to {address}: {}", error_chain(&err)))?;
        HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .map_err(|status| format!("{service}: {} {}", status.code(), status.message()))
    };
    let answer = tokio::time::timeout(timeout, asked)
        .await
        .map_err(|_| format!("no answer from {address} within {timeout:?}"))??;
    match answer.into_inner().status() {
        ServingStatus::Serving => Ok(()),
        other => Err(format!("{service}: {}", other.as_str_name())),
    }
}

/// An error and its sources, on one line (a TLS failure is several levels down).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
