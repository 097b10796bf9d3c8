//! [`Application`]: binds the listener (port 0 picks a free one), connects
//! the pool, and serves until the shutdown future resolves; then readiness
//! goes NOT_SERVING, the server stops and the pool is closed.

use std::{net::SocketAddr, sync::Arc};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic_health::pb::health_server::HealthServer;

use crate::{
    config::Settings,
    db::Database,
    error::Error,
    grpc::{AdminService, QueryService, SessionService, pb, transport},
    health::{self, HealthService, HealthState},
    query::QueryEngine,
    session::{SessionManager, SessionRegistry},
};

/// How long closing the pool may wait, after the drain, for connections
/// whose cut statements are still being cancelled.
const POOL_CLOSE_BOUND: std::time::Duration = std::time::Duration::from_secs(3);

/// A bound, connected, not yet serving sqlgate.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    address: SocketAddr,
    database: Arc<Database>,
    settings: Settings,
}

impl Application {
    /// Connects the pool and binds the listener.
    pub async fn build(settings: Settings) -> Result<Self, Error> {
        let database = Arc::new(
            Database::connect(
                &settings.database_url,
                &settings.pool,
                settings.deadlines.longest(),
            )
            .await?,
        );
        let listener = TcpListener::bind(settings.listen).await.map_err(|err| {
            Error::Internal(format!("cannot listen on {}: {err}", settings.listen))
        })?;
        let address = listener
            .local_addr()
            .map_err(|err| Error::Internal(format!("no local address: {err}")))?;
        Ok(Self {
            listener,
            address,
            database,
            settings,
        })
    }

    /// The address actually bound.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Serves until `shutdown` resolves, then closes the pool.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let Self {
            listener,
            address,
            database,
            settings,
        } = self;
        let health = HealthState::new();
        let background = CancellationToken::new();
        let probe = health::spawn_probe(
            database.clone(),
            health.clone(),
            settings.health.clone(),
            background.clone(),
        );
        let pool_log = health::spawn_pool_log(database.clone(), background.clone());
        let health_service = HealthServer::new(HealthService::new(health.clone()));
        let engine = QueryEngine::new(database.clone(), settings.limits.clone());
        let max_request = settings.transport.max_request_bytes;
        let query = pb::query_server::QueryServer::new(QueryService::new(
            engine,
            settings.deadlines.clone(),
        ))
        .max_decoding_message_size(max_request);
        let sessions =
            SessionRegistry::new(settings.sessions.clone(), settings.pool.max_connections);
        let session_service =
            pb::sessions_server::SessionsServer::new(SessionService::new(SessionManager::new(
                database.clone(),
                sessions.clone(),
                settings.deadlines.session_execute,
                settings.limits.clone(),
            )))
            .max_decoding_message_size(max_request);
        let admin = pb::admin_server::AdminServer::new(AdminService::new(
            database.clone(),
            sessions.clone(),
            health.clone(),
        ));
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|err| Error::Internal(format!("reflection: {err}")))?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .map_err(|err| Error::Internal(format!("reflection: {err}")))?;

        tracing::info!(
            %address,
            backend = database.backend().name(),
            max_connections = settings.pool.max_connections,
            "sqlgate serving"
        );
        let routes = Routes::new(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(query)
            .add_service(session_service)
            .add_service(admin);
        let health_on_stop = health.clone();
        let sessions_on_stop = sessions.clone();
        let drain = settings.shutdown.drain_timeout;
        transport::serve(listener, routes, &settings.transport, drain, async move {
            shutdown.await;
            // Readiness first, so that no new traffic is sent here.
            health_on_stop.set_stopping();
            tracing::info!("shutting down: not ready, draining");
            // Open sessions would hold the drain open: roll them back first
            // (new ones are refused from now on).
            sessions_on_stop.shut_down(drain).await;
        })
        .await;
        // The drain is over: whatever still runs is cut and cancelled on
        // the server, so that closing the pool does not wait for it.
        database.cut_in_flight();
        background.cancel();
        let _ = tokio::join!(probe, pool_log);
        database.close(POOL_CLOSE_BOUND).await;
        tracing::info!("pool closed; stopped");
        Ok(())
    }
}
