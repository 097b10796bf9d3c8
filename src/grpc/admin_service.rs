//! `sqlgate.v1.Admin`: what operators ask of the pool and the sessions.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::pb::{self, admin_server::Admin};
use crate::db::Database;

/// The Admin service.
#[derive(Debug, Clone)]
pub struct AdminService {
    db: Arc<Database>,
}

impl AdminService {
    /// Reports on `db`.
    pub fn new(db: Arc<Database>) -> Self {
        Self { db }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn get_pool_stats(
        &self,
        _request: Request<pb::GetPoolStatsRequest>,
    ) -> Result<Response<pb::PoolStats>, Status> {
        Ok(Response::new(self.db.snapshot().into()))
    }

    async fn list_sessions(
        &self,
        _request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        Err(Status::unimplemented(
            "sessions (Sessions.Attach) are not served by this version",
        ))
    }

    async fn terminate_session(
        &self,
        _request: Request<pb::TerminateSessionRequest>,
    ) -> Result<Response<pb::TerminateSessionResponse>, Status> {
        Err(Status::unimplemented(
            "sessions (Sessions.Attach) are not served by this version",
        ))
    }
}
