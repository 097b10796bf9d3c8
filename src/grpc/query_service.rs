//! `sqlgate.v1.Query`: decode the request, run it through the
//! [`QueryEngine`], encode the result.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{
    convert,
    deadline::call_deadline,
    observe::CallNote,
    pb::{self, query_server::Query},
};
use crate::{
    config::DeadlineSettings,
    db::Driver,
    error::{DeadlinePhase, Error},
    query::{QueryEngine, Statement, StreamEvent},
};

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

impl<DB: Driver> QueryService<DB> {
    /// Decodes one statement of a request, read as this backend reads it.
    fn statement(&self, sql: String, params: Vec<pb::Value>) -> Result<Statement, Error> {
        convert::statement(sql, params, self.engine.limits(), DB::BACKEND)
    }
}

#[tonic::async_trait]
impl<DB: Driver> Query for QueryService<DB> {
    async fn execute(
        &self,
        request: Request<pb::ExecuteRequest>,
    ) -> Result<Response<pb::ExecuteResponse>, Status> {
        let note = CallNote::of(&request);
        let deadline = call_deadline(request.metadata(), &self.deadlines.execute);
        let request = request.into_inner();
        let statement = self.statement(request.sql, request.params)?;
        note.fingerprint(&statement.fingerprint);
        let output = self
            .engine
            .execute(statement, request.max_rows, deadline)
            .await?;
        note.rows(output.rows.len());
        Ok(Response::new(output.into()))
    }

    type ExecuteStreamStream = FrameStream;

    async fn execute_stream(
        &self,
        request: Request<pb::ExecuteRequest>,
    ) -> Result<Response<Self::ExecuteStreamStream>, Status> {
        let note = CallNote::of(&request);
        let deadline = call_deadline(request.metadata(), &self.deadlines.execute_stream);
        let request = request.into_inner();
        let statement = self.statement(request.sql, request.params)?;
        note.fingerprint(&statement.fingerprint);
        deadline.check(DeadlinePhase::BeforeStart)?;
        let events = self.engine.execute_stream(statement, deadline);
        let frames = ReceiverStream::new(events).map(move |event| {
            // Counted as each batch goes out: the call's line, written
            // when the stream ends, says how many rows were sent.
            if let Ok(StreamEvent::Rows(rows)) = &event {
                note.rows(rows.len());
            }
            event.map(pb::ResultFrame::from).map_err(Status::from)
        });
        Ok(Response::new(Box::pin(frames)))
    }

    async fn execute_batch(
        &self,
        request: Request<pb::ExecuteBatchRequest>,
    ) -> Result<Response<pb::ExecuteBatchResponse>, Status> {
        let note = CallNote::of(&request);
        let deadline = call_deadline(request.metadata(), &self.deadlines.execute_batch);
        let request = request.into_inner();
        let limits = self.engine.limits();
        let statements = request
            .statements
            .into_iter()
            .enumerate()
            .map(|(index, s)| {
                convert::statement(s.sql, s.params, limits, DB::BACKEND).map_err(|err| {
                    crate::error::Error::InBatch {
                        index,
                        source: Box::new(err),
                    }
                })
            })
            .collect::<Result<Vec<_>, _>>();
        let statements = statements?;
        note.fingerprints(statements.iter().map(|s| s.fingerprint.as_str()));
        let outputs = self
            .engine
            .execute_batch(statements, request.max_rows, deadline)
            .await?;
        note.rows(outputs.iter().map(|o| o.rows.len()).sum());
        Ok(Response::new(pb::ExecuteBatchResponse {
            results: outputs.into_iter().map(pb::ExecuteResponse::from).collect(),
        }))
    }
}
