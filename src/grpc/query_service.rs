//! `sqlgate.v1.Query`: decode the request, run it through the
//! [`QueryEngine`], encode the result.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{
    call_log::CallLog,
    convert,
    deadline::call_deadline,
    pb::{self, query_server::Query},
};
use crate::{config::DeadlineSettings, db::Driver, error::DeadlinePhase, query::QueryEngine};

/// The Query service over one engine.
#[derive(Debug)]
pub(crate) struct QueryService<DB: Driver> {
    engine: QueryEngine<DB>,
    deadlines: DeadlineSettings,
}

impl<DB: Driver> QueryService<DB> {
    /// Serves Query calls with `engine`, each bounded per `deadlines`.
    pub(crate) fn new(engine: QueryEngine<DB>, deadlines: DeadlineSettings) -> Self {
        Self { engine, deadlines }
    }
}

type FrameStream = Pin<Box<dyn Stream<Item = Result<pb::ResultFrame, Status>> + Send>>;

#[tonic::async_trait]
impl<DB: Driver> Query for QueryService<DB> {
    async fn execute(
        &self,
        request: Request<pb::ExecuteRequest>,
    ) -> Result<Response<pb::ExecuteResponse>, Status> {
        let log = CallLog::start("Execute", &request);
        let deadline = call_deadline(request.metadata(), &self.deadlines.execute);
        let request = request.into_inner();
        let statement = match convert::statement(request.sql, request.params, self.engine.limits())
        {
            Ok(statement) => statement,
            Err(err) => {
                let status = Status::from(err);
                log.finish("-", 0, Err(&status));
                return Err(status);
            }
        };
        let fingerprint = statement.fingerprint.clone();
        match self
            .engine
            .execute(statement, request.max_rows, deadline)
            .await
        {
            Ok(output) => {
                log.finish(&fingerprint, output.rows.len(), Ok(()));
                Ok(Response::new(output.into()))
            }
            Err(err) => {
                let status = Status::from(err);
                log.finish(&fingerprint, 0, Err(&status));
                Err(status)
            }
        }
    }

    type ExecuteStreamStream = FrameStream;

    async fn execute_stream(
        &self,
        request: Request<pb::ExecuteRequest>,
    ) -> Result<Response<Self::ExecuteStreamStream>, Status> {
        let log = CallLog::start("ExecuteStream", &request);
        let deadline = call_deadline(request.metadata(), &self.deadlines.execute_stream);
        let request = request.into_inner();
        let statement = convert::statement(request.sql, request.params, self.engine.limits())
            .map_err(|err| {
                let status = Status::from(err);
                log.finish("-", 0, Err(&status));
                status
            })?;
        if let Err(err) = deadline.check(DeadlinePhase::BeforeStart) {
            let status = Status::from(err);
            log.finish(&statement.fingerprint, 0, Err(&status));
            return Err(status);
        }
        log.finish(&statement.fingerprint, 0, Ok(()));
        let events = self.engine.execute_stream(statement, deadline);
        let frames = ReceiverStream::new(events)
            .map(|event| event.map(pb::ResultFrame::from).map_err(Status::from));
        Ok(Response::new(Box::pin(frames)))
    }

    async fn execute_batch(
        &self,
        request: Request<pb::ExecuteBatchRequest>,
    ) -> Result<Response<pb::ExecuteBatchResponse>, Status> {
        let log = CallLog::start("ExecuteBatch", &request);
        let deadline = call_deadline(request.metadata(), &self.deadlines.execute_batch);
        let request = request.into_inner();
        let limits = self.engine.limits();
        let statements = request
            .statements
            .into_iter()
            .enumerate()
            .map(|(index, s)| {
                convert::statement(s.sql, s.params, limits).map_err(|err| {
                    crate::error::Error::InBatch {
                        index,
                        source: Box::new(err),
                    }
                })
            })
            .collect::<Result<Vec<_>, _>>();
        let statements = match statements {
            Ok(statements) => statements,
            Err(err) => {
                let status = Status::from(err);
                log.finish("-", 0, Err(&status));
                return Err(status);
            }
        };
        let fingerprints = statements
            .iter()
            .map(|s| s.fingerprint.as_str())
            .take(8)
            .collect::<Vec<_>>()
            .join(",");
        match self
            .engine
            .execute_batch(statements, request.max_rows, deadline)
            .await
        {
            Ok(outputs) => {
                let rows = outputs.iter().map(|o| o.rows.len()).sum();
                log.finish(&fingerprints, rows, Ok(()));
                Ok(Response::new(pb::ExecuteBatchResponse {
                    results: outputs.into_iter().map(pb::ExecuteResponse::from).collect(),
                }))
            }
            Err(err) => {
                let status = Status::from(err);
                log.finish(&fingerprints, 0, Err(&status));
                Err(status)
            }
        }
    }
}
