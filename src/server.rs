//! [`Application`]: binds the listener (port 0 picks a free one), connects
//! the pool, and serves until the shutdown future resolves; then readiness
//! goes NOT_SERVING, the server stops and the pool is closed.

use std::{net::SocketAddr, sync::Arc};

use tokio::net::TcpListener;
use tonic::service::Routes;

use crate::{
    config::Settings,
    db::Database,
    error::Error,
    grpc::{AdminService, QueryService, SessionService, pb, transport},
    health::Health,
    query::QueryEngine,
    session::{SessionManager, SessionRegistry},
};

/// How long in-flight calls may take to finish once shutdown starts.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

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

    /// The pool, for tests and diagnostics.
    pub fn database(&self) -> Arc<Database> {
        self.database.clone()
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
        let (health, health_service) = Health::start().await;
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
        transport::serve(
            listener,
            routes,
            &settings.transport,
            DRAIN_TIMEOUT,
            async move {
                shutdown.await;
                health_on_stop.set_not_ready().await;
                tracing::info!("shutting down");
                // Open sessions would hold the drain open: roll them back first.
                sessions_on_stop.shut_down(DRAIN_TIMEOUT).await;
            },
        )
        .await;
        database.close().await;
        tracing::info!("pool closed; stopped");
        Ok(())
    }
}
