//! [`Application`]: everything is chosen and wired in [`Application::build`]
//! — the backend (read once from the URL; from then on a type parameter),
//! the pool, the engine, the sessions, the five services, the health probe
//! — the listener's TLS read from its files, and the listener bound (port 0
//! picks a free one; or a Unix socket, for a sidecar).
//! [`Application::run_until_stopped`] only serves and drains: when the
//! shutdown future resolves, readiness goes NOT_SERVING, calls are still
//! served for `shutdown.delay`, then the listener closes, open sessions roll
//! back, calls get the drain timeout to finish, what still runs is cut, and
//! the pool is closed.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use sqlx::{MySql, Postgres, Sqlite};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic_health::pb::health_server::HealthServer;

use crate::{
    audit::{Audit, prepare::prepare as prepare_audit_table, table::AuditTable},
    config::{ListenAddress, Settings},
    db::{Backend, Database, Driver, PoolHandle},
    error::Error,
    grpc::{
        AdminService, Observers, QueryService, SessionService,
        auth::Authenticator,
        limits::CallerLimits,
        pb,
        transport::{self, Listener, ServerTls},
    },
    health::{self, HealthService, HealthState},
    query::QueryEngine,
    session::{SessionManager, SessionRegistry},
    telemetry::{Metrics, prometheus},
};

/// How long closing the pool may wait, after the drain, for connections
/// whose cut statements are still being cancelled.
const POOL_CLOSE_BOUND: Duration = Duration::from_secs(3);

/// A wired, bound, not yet serving sqlgate.
#[derive(Debug)]
pub struct Application {
    listener: Listener,
    address: ListenAddress,
    routes: Routes,
    pool: Arc<dyn PoolHandle>,
    health: Arc<HealthState>,
    sessions: Arc<SessionRegistry>,
    /// Checks every call's credentials (off when none are configured).
    auth: Authenticator,
    /// TLS on the listener (`None` when off), reloaded in the background.
    tls: Option<Arc<ServerTls>>,
    background: Background,
    /// Metrics (off unless `metrics.listen` or an OTLP endpoint is set).
    metrics: Metrics,
    /// Where `GET /metrics` is served, when it is.
    metrics_address: Option<SocketAddr>,
    /// The audit trail (off unless `audit.sink` is set).
    audit: Option<Audit>,
    settings: Settings,
}

impl Application {
    /// Reads the listener's TLS files (if TLS is on), connects the pool of
    /// the backend the URL names, wires every service over it, starts the
    /// health probe (and the TLS files' reload), and binds the listener.
    pub async fn build(settings: Settings) -> Result<Self, Error> {
        let auth = Authenticator::new(&settings.auth).map_err(Error::Internal)?;
        let backend = Backend::from_url(&settings.database_url)
            .ok_or_else(|| Error::Unavailable("unsupported database URL scheme".to_owned()))?;
        // Before the database: a bad certificate file fails start-up at once.
        let tls =
            ServerTls::load(&settings.tls).map_err(|err| Error::Internal(format!("TLS: {err}")))?;
        let wired = match backend {
            Backend::Postgres => wire::<Postgres>(&settings).await?,
            Backend::MySql => wire::<MySql>(&settings).await?,
            Backend::Sqlite => wire::<Sqlite>(&settings).await?,
        };
        let listener = Listener::bind(&settings.listen, settings.listen_mode)
            .await
            .map_err(Error::Internal)?;
        let address = listener
            .local_address()
            .map_err(|err| Error::Internal(format!("no local address: {err}")))?;
        let metrics =
            Metrics::start(&settings, &wired.pool, &wired.sessions).map_err(Error::Internal)?;
        let audit = Audit::start(&settings.audit.sink, backend).map_err(Error::Internal)?;
        if let Some(audit) = &audit {
            wired.sessions.audit_with(audit.clone());
        }
        let metrics_listener = match (settings.metrics.listen, metrics.registry()) {
            (Some(address), Some(registry)) => Some((
                prometheus::bind(address).await.map_err(Error::Internal)?,
                registry,
            )),
            _ => None,
        };
        let metrics_address = metrics_listener
            .as_ref()
            .and_then(|(listener, _)| listener.local_addr().ok());
        let mut background =
            Background::start(&wired.pool, &wired.health, &auth, tls.as_ref(), &settings);
        if let Some((listener, registry)) = metrics_listener {
            background.tasks.push(prometheus::spawn(
                listener,
                registry,
                background.stop.clone(),
            ));
        }
        Ok(Self {
            listener,
            address,
            routes: wired.routes,
            pool: wired.pool,
            health: wired.health,
            sessions: wired.sessions,
            auth,
            tls,
            background,
            metrics,
            metrics_address,
            audit,
            settings,
        })
    }

    /// The address actually bound (a TCP port 0 resolved).
    pub fn address(&self) -> &ListenAddress {
        &self.address
    }

    /// Where `GET /metrics` is served (`metrics.listen`, its port chosen
    /// when 0), or `None` when it is off.
    pub fn metrics_address(&self) -> Option<SocketAddr> {
        self.metrics_address
    }

    /// Serves until `shutdown` resolves, then drains and closes the pool.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let Self {
            listener,
            address,
            routes,
            pool,
            health,
            sessions,
            auth,
            tls,
            background,
            metrics,
            metrics_address,
            audit,
            settings,
        } = self;
        tracing::info!(
            %address,
            tls = tls.is_some(),
            backend = pool.backend().name(),
            max_connections = settings.pool.max_connections,
            metrics = metrics_address.map(tracing::field::display),
            "sqlgate serving"
        );
        let observers = Observers {
            metrics: metrics.calls(),
            audit,
        };
        let drain = settings.shutdown.drain_timeout;
        let delay = settings.shutdown.delay;
        let stopping = async move {
            shutdown.await;
            let drain_began = tokio::time::Instant::now();
            // Readiness first, so that no new traffic is sent here.
            health.set_stopping();
            // Load balancers and endpoint lists learn of it with a lag:
            // calls routed here meanwhile are still served, until the delay
            // is over; only then does the listener close.
            if !delay.is_zero() {
                tracing::info!(
                    ?delay,
                    "shutting down: not ready; still serving for the delay"
                );
                tokio::time::sleep(delay).await;
            }
            tracing::info!("shutting down: no new connections, draining");
            // Open sessions would hold the drain open: roll them back first
            // (new ones are refused from now on).
            sessions.shut_down(drain).await;
            drain_began
        };
        // At the drain's end whatever still runs is cut, answered and
        // cancelled on the server, so that closing the pool does not wait.
        let cut = || pool.cut_in_flight();
        transport::serve(
            listener,
            routes,
            &settings.transport,
            transport::Admission {
                tls,
                auth,
                observers,
            },
            drain,
            stopping,
            cut,
        )
        .await;
        // Nothing may run on after this point, whatever the drain saw.
        pool.cut_in_flight();
        background.stop().await;
        pool.close(POOL_CLOSE_BOUND).await;
        // Last: the final figures (sessions ended by shutdown) go out too.
        metrics.shutdown();
        tracing::info!("pool closed; stopped");
        Ok(())
    }
}

/// Checks, changing nothing, that `settings.listen` can be served: for a
/// Unix socket, that its directory exists and that nothing but a stale
/// socket is at its path. Start-up runs it first, so that a wrong path
/// stops sqlgate with one line before it connects to anything.
pub async fn check_listen(settings: &Settings) -> Result<(), String> {
    transport::check_listen(&settings.listen).await
}

/// What [`wire`] builds for one backend; nothing in it names the backend.
struct Wired {
    routes: Routes,
    pool: Arc<dyn PoolHandle>,
    health: Arc<HealthState>,
    sessions: Arc<SessionRegistry>,
}

/// Connects the pool of backend `DB` and builds every service over it.
async fn wire<DB: Driver>(settings: &Settings) -> Result<Wired, Error> {
    let database = Arc::new(
        Database::<DB>::connect(
            &settings.database_url,
            &settings.pool,
            settings.deadlines.longest(),
        )
        .await?,
    );
    let pool: Arc<dyn PoolHandle> = database.clone();
    let health = HealthState::starting(pool.is_reachable());
    let sessions = SessionRegistry::new(settings.sessions.clone(), settings.pool.max_connections);
    let max_request = settings.transport.max_request_bytes;
    // Calls to the two services that reach the database are admitted by
    // the per-caller and overall limits first; health, reflection and
    // Admin never are.
    let limits = CallerLimits::new(&settings.limits);
    let anonymous = settings.roles.default;

    let audit_table = AuditTable::new(&settings.audit.table, DB::BACKEND);
    if let Some(table) = &audit_table {
        prepare_audit_table(&database, table, settings.audit.create_table).await?;
    }
    let engine = QueryEngine::new(
        database.clone(),
        settings.limits.clone(),
        audit_table.clone(),
    );
    let query = pb::query_server::QueryServer::new(QueryService::new(
        engine,
        settings.deadlines.clone(),
        anonymous,
    ))
    .max_decoding_message_size(max_request);
    let manager = SessionManager::new(
        database,
        sessions.clone(),
        (settings.deadlines.session_execute, settings.limits.clone()),
        audit_table,
    );
    let session_service =
        pb::sessions_server::SessionsServer::new(SessionService::new(manager, anonymous))
            .max_decoding_message_size(max_request);
    let admin = pb::admin_server::AdminServer::new(AdminService::new(
        pool.clone(),
        sessions.clone(),
        health.clone(),
        limits.clone(),
        anonymous,
    ));
    let routes = Routes::new(HealthServer::new(HealthService::new(health.clone())))
        .add_service(reflection().build_v1().map_err(reflection_error)?)
        .add_service(reflection().build_v1alpha().map_err(reflection_error)?)
        .add_service(limits.wrap(query))
        .add_service(limits.wrap(session_service))
        .add_service(admin);
    Ok(Wired {
        routes,
        pool,
        health,
        sessions,
    })
}

/// Reflection over sqlgate's protos and the ones they import, so that
/// grpcurl and similar tools need no proto files.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
}

/// Reflection is built from descriptors compiled in; failing is a build defect.
fn reflection_error(err: tonic_reflection::server::Error) -> Error {
    Error::Internal(format!("reflection: {err}"))
}

/// The health probe, the periodic pool log, and the reload of credential
/// and TLS files: started when the application is built, stopped after the
/// drain (or when an application that never served is dropped).
#[derive(Debug)]
struct Background {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Background {
    fn start(
        pool: &Arc<dyn PoolHandle>,
        health: &Arc<HealthState>,
        auth: &Authenticator,
        tls: Option<&Arc<ServerTls>>,
        settings: &Settings,
    ) -> Self {
        let stop = CancellationToken::new();
        let mut tasks = vec![
            health::spawn_probe(
                pool.clone(),
                health.clone(),
                settings.health.clone(),
                stop.clone(),
            ),
            health::spawn_pool_log(pool.clone(), stop.clone()),
        ];
        tasks.extend(auth.spawn_reload(stop.clone()));
        tasks.extend(tls.map(|tls| tls.spawn_reload(stop.clone())));
        Self { stop, tasks }
    }

    /// Stops the tasks and waits for them.
    async fn stop(mut self) {
        self.stop.cancel();
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
