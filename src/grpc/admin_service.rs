//! `sqlgate.v1.Admin`: what operators ask of the pool and the sessions.

use std::{sync::Arc, time::Duration};

use tonic::{Request, Response, Status};

use super::{
    convert::duration,
    pb::{self, admin_server::Admin},
};
use crate::{db::PoolHandle, error::Error, health::HealthState, session::SessionRegistry};

/// How long TerminateSession waits for the session to have rolled back.
const TERMINATE_WAIT: Duration = Duration::from_secs(5);

/// The Admin service.
#[derive(Debug, Clone)]
pub(crate) struct AdminService {
    db: Arc<dyn PoolHandle>,
    sessions: Arc<SessionRegistry>,
    health: Arc<HealthState>,
}

impl AdminService {
    /// Reports on `db`, `sessions` and the health probe.
    pub(crate) fn new(
        db: Arc<dyn PoolHandle>,
        sessions: Arc<SessionRegistry>,
        health: Arc<HealthState>,
    ) -> Self {
        Self {
            db,
            sessions,
            health,
        }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn get_pool_stats(
        &self,
        _request: Request<pb::GetPoolStatsRequest>,
    ) -> Result<Response<pb::PoolStats>, Status> {
        let mut stats: pb::PoolStats = self.db.snapshot().into();
        let probe = self.health.probe_report();
        stats.database_reachable = self.db.is_reachable();
        stats.last_probe_latency = Some(duration(probe.last_latency));
        stats.saturated = probe.saturated;
        stats.saturation_reason = probe.saturation_reason;
        let streams = self.db.streams();
        stats.open_streams = streams.open;
        stats.streams_refused = streams.refused;
        stats.streams_stalled = streams.stalled;
        stats.open_sessions = u32::try_from(self.sessions.open_count()).unwrap_or(u32::MAX);
        stats.sessions_ended = self
            .sessions
            .ended_counts()
            .into_iter()
            .map(|(reason, count)| (reason.to_owned(), count))
            .collect();
        Ok(Response::new(stats))
    }

    async fn list_sessions(
        &self,
        _request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let sessions = self
            .sessions
            .list()
            .into_iter()
            .map(pb::SessionInfo::from)
            .collect();
        Ok(Response::new(pb::ListSessionsResponse { sessions }))
    }

    async fn terminate_session(
        &self,
        request: Request<pb::TerminateSessionRequest>,
    ) -> Result<Response<pb::TerminateSessionResponse>, Status> {
        let id = request.into_inner().session_id;
        if id.is_empty() {
            return Err(Error::invalid_request("session_id", "is empty").into());
        }
        self.sessions.terminate(&id, TERMINATE_WAIT).await?;
        tracing::info!(session = %id, "session terminated by an operator");
        Ok(Response::new(pb::TerminateSessionResponse {}))
    }
}
