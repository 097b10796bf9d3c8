//! `sqlgate.v1.Admin`: what operators ask of the pool and the sessions.
//! The pool's figures are for admins only; any caller may list and end
//! its own sessions (an admin, everyone's). Another caller's session is
//! answered as an unknown one, so that its existence is not told.

use std::{sync::Arc, time::Duration};

use tonic::{Request, Response, Status};

use super::{
    convert::duration,
    identity::Role,
    limits::CallerLimits,
    observe::Caller,
    pb::{self, admin_server::Admin},
};
use crate::{db::PoolHandle, error::Error, health::HealthState, session::SessionRegistry};

/// How long TerminateSession waits for the session to have rolled back.
const TERMINATE_WAIT: Duration = Duration::from_secs(5);

/// Callers named in `PoolStats.callers`, busiest first.
const CALLERS_REPORTED: usize = 16;

/// The Admin service.
#[derive(Debug, Clone)]
pub(crate) struct AdminService {
    db: Arc<dyn PoolHandle>,
    sessions: Arc<SessionRegistry>,
    health: Arc<HealthState>,
    limits: Arc<CallerLimits>,
    /// The role of a caller without an identity (`roles.default`).
    anonymous: Role,
}

impl AdminService {
    /// Reports on `db`, `sessions`, the health probe and the callers'
    /// `limits`; callers without an identity hold the role `anonymous`.
    pub(crate) fn new(
        db: Arc<dyn PoolHandle>,
        sessions: Arc<SessionRegistry>,
        health: Arc<HealthState>,
        limits: Arc<CallerLimits>,
        anonymous: Role,
    ) -> Self {
        Self {
            db,
            sessions,
            health,
            limits,
            anonymous,
        }
    }

    /// Whose sessions the caller of `request` may see and end: everyone's
    /// (`None`) for an admin, else its own (its name).
    fn sessions_of<T>(&self, request: &Request<T>) -> Option<String> {
        let caller = Caller::of(request);
        (caller.role(self.anonymous) != Role::Admin).then(|| caller.to_string())
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn get_pool_stats(
        &self,
        request: Request<pb::GetPoolStatsRequest>,
    ) -> Result<Response<pb::PoolStats>, Status> {
        let role = Caller::of(&request).role(self.anonymous);
        if role != Role::Admin {
            return Err(Error::Forbidden(format!(
                "GetPoolStats is for the admin role; this caller is a {role}"
            ))
            .into());
        }
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
        let limits = self.limits.snapshot(CALLERS_REPORTED);
        stats.calls_in_flight = limits.in_flight;
        stats.calls_shed = limits.shed;
        stats.caller_limit_refusals = limits.refused;
        stats.callers = limits
            .busiest
            .into_iter()
            .map(|(caller, load)| {
                let load = pb::CallerLoad {
                    calls: load.calls,
                    streams: load.streams,
                    sessions: load.sessions,
                };
                (caller, load)
            })
            .collect();
        Ok(Response::new(stats))
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let owner = self.sessions_of(&request);
        let sessions = self
            .sessions
            .list(owner.as_deref())
            .into_iter()
            .map(pb::SessionInfo::from)
            .collect();
        Ok(Response::new(pb::ListSessionsResponse { sessions }))
    }

    async fn terminate_session(
        &self,
        request: Request<pb::TerminateSessionRequest>,
    ) -> Result<Response<pb::TerminateSessionResponse>, Status> {
        let caller = Caller::of(&request);
        let owner = self.sessions_of(&request);
        let id = request.into_inner().session_id;
        if id.is_empty() {
            return Err(Error::invalid_request("session_id", "is empty").into());
        }
        self.sessions
            .terminate(&id, owner.as_deref(), TERMINATE_WAIT)
            .await?;
        let by = if owner.is_some() {
            "its owner"
        } else {
            "an admin"
        };
        tracing::info!(session = %id, caller = %caller, "session terminated by {by}");
        Ok(Response::new(pb::TerminateSessionResponse {}))
    }
}
