//! `sqlgate.v1.Query`: decode the request, run it through the
//! [`QueryEngine`], encode the result. The caller's role decides what the
//! engine may do (a reader's calls are read-only at the database), and the
//! call's place under the limits goes with its work.

use std::{pin::Pin, sync::Arc};

use futures::{Stream, StreamExt};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{
    convert,
    deadline::call_deadline,
    identity::Role,
    limits::CallSlot,
    observe::{CallNote, Caller, RequestTags},
    pb::{self, query_server::Query},
};
use crate::{
    audit::{Actor, table::AuditWriter},
    config::DeadlineSettings,
    db::{Backend, Driver, transaction::Access},
    error::{DeadlinePhase, Error},
    query::{
        QueryEngine, Statement, StreamEvent, fingerprint::fingerprint, operation::operation_name,
    },
    telemetry::{
        metrics::db_system,
        traces::{self, TraceSpan},
    },
};

/// The Query service over one engine.
#[derive(Debug)]
pub(crate) struct QueryService<DB: Driver> {
    engine: QueryEngine<DB>,
    deadlines: DeadlineSettings,
    /// The role of a caller without an identity (`roles.default`).
    anonymous: Role,
}

impl<DB: Driver> QueryService<DB> {
    /// Serves Query calls with `engine`, each bounded per `deadlines`;
    /// callers without an identity hold the role `anonymous`.
    pub(crate) fn new(
        engine: QueryEngine<DB>,
        deadlines: DeadlineSettings,
        anonymous: Role,
    ) -> Self {
        Self {
            engine,
            deadlines,
            anonymous,
        }
    }

    /// What the caller of `request` may do to the database; its role is
    /// noted for the audit trail.
    fn access<T>(&self, request: &Request<T>, note: &CallNote) -> Access {
        let role = Caller::of(request).role(self.anonymous);
        note.role(role);
        Access::read_only_if(role.is_read_only())
    }

    /// Who the caller's writes are recorded as in the audit table, when
    /// it is on (`method`: the call's).
    fn audit_writer<T>(&self, request: &Request<T>, method: &'static str) -> Option<AuditWriter> {
        let table = self.engine.audit_table()?;
        let caller = Caller::of(request);
        Some(AuditWriter {
            table: table.clone(),
            actor: Actor {
                caller: caller.to_string(),
                role: Some(caller.role(self.anonymous).name()),
                peer: caller.peer().map(|peer| peer.to_string()),
            },
            method,
            session: None,
            tags: RequestTags::of(request),
        })
    }

    /// Decodes one statement of a request, read as this backend reads it.
    /// A statement refused here (a parameter that does not decode, too
    /// many, an oversized text) is still noted for the audit trail — its
    /// text within the size limit, never its values — so that the refusal
    /// has its event.
    fn statement(
        &self,
        note: &CallNote,
        sql: String,
        params: Vec<pb::Value>,
    ) -> Result<Statement, Error> {
        let limits = self.engine.limits();
        let kept = (note.keeps_statements() && sql.len() <= limits.max_statement_bytes)
            .then(|| sql.clone());
        let decoded = convert::statement(sql, params, limits, DB::BACKEND);
        if decoded.is_err()
            && let Some(sql) = kept
        {
            let fingerprint = fingerprint(&sql).into();
            note.statement(&Arc::from(sql), &fingerprint);
        }
        decoded
    }
}

/// Notes the database's SQLSTATE, when it refused, for the audit trail.
fn note_refusal(note: &CallNote, error: &Error) {
    if let Some(sqlstate) = error.sqlstate() {
        note.sqlstate(sqlstate);
    }
}

/// The span of `statement` run on backend `backend`, in database
/// `namespace`.
fn statement_span(backend: Backend, namespace: Option<&str>, statement: &Statement) -> TraceSpan {
    traces::statement_span(
        db_system(backend),
        namespace,
        operation_name(&statement.sql),
        || statement.sanitized_text(),
    )
}

type FrameStream = Pin<Box<dyn Stream<Item = Result<pb::ResultFrame, Status>> + Send>>;

#[tonic::async_trait]
impl<DB: Driver> Query for QueryService<DB> {
    async fn execute(
        &self,
        mut request: Request<pb::ExecuteRequest>,
    ) -> Result<Response<pb::ExecuteResponse>, Status> {
        let note = CallNote::of(&request);
        let deadline = call_deadline(request.metadata(), &self.deadlines.execute);
        let access = self.access(&request, &note);
        let writer = self.audit_writer(&request, "sqlgate.v1.Query/Execute");
        let hold = CallSlot::take(&mut request);
        let request = request.into_inner();
        let statement = self.statement(&note, request.sql, request.params)?;
        note.fingerprint(&statement.fingerprint);
        note.operation(operation_name(&statement.sql));
        note.statement(&statement.sql, &statement.fingerprint);
        let span = statement_span(DB::BACKEND, self.engine.namespace(), &statement);
        let output = span
            .scope(
                self.engine
                    .execute(statement, request.max_rows, deadline, access, hold, writer),
            )
            .await;
        traces::statement_done(&span, output.as_ref().map(|output| output.rows.len()));
        let output = output.inspect_err(|error| note_refusal(&note, error))?;
        note.rows(output.rows.len());
        note.statement_rows([(
            output.rows.len() as u64,
            output.rows_affected,
            output.elapsed,
        )]);
        Ok(Response::new(output.into()))
    }

    type ExecuteStreamStream = FrameStream;

    async fn execute_stream(
        &self,
        mut request: Request<pb::ExecuteRequest>,
    ) -> Result<Response<Self::ExecuteStreamStream>, Status> {
        let note = CallNote::of(&request);
        let deadline = call_deadline(request.metadata(), &self.deadlines.execute_stream);
        let access = self.access(&request, &note);
        let writer = self.audit_writer(&request, "sqlgate.v1.Query/ExecuteStream");
        let hold = CallSlot::take(&mut request);
        let request = request.into_inner();
        let statement = self.statement(&note, request.sql, request.params)?;
        note.fingerprint(&statement.fingerprint);
        note.operation(operation_name(&statement.sql));
        note.statement(&statement.sql, &statement.fingerprint);
        deadline.check(DeadlinePhase::BeforeStart)?;
        // The statement's span lives as long as its stream: the work is
        // spawned inside it, and it ends when the stream is dropped.
        let span = statement_span(DB::BACKEND, self.engine.namespace(), &statement);
        let events = span.in_scope(|| {
            self.engine
                .execute_stream(statement, deadline, access, hold, writer)
        });
        let mut rows_sent = 0;
        let frames = ReceiverStream::new(events).map(move |event| {
            // Counted as each batch goes out: the call's line, written
            // when the stream ends, says how many rows were sent.
            match &event {
                Ok(StreamEvent::Rows(rows)) => {
                    note.rows(rows.len());
                    rows_sent += rows.len();
                }
                Ok(StreamEvent::Finished(stats)) => {
                    traces::statement_done(&span, Ok(rows_sent));
                    note.statement_rows([(
                        stats.rows_returned,
                        stats.rows_affected,
                        stats.elapsed,
                    )]);
                }
                Err(error) => {
                    traces::statement_done(&span, Err(error));
                    note_refusal(&note, error);
                }
                Ok(_) => {}
            }
            event.map(pb::ResultFrame::from).map_err(Status::from)
        });
        Ok(Response::new(Box::pin(frames)))
    }

    async fn execute_batch(
        &self,
        mut request: Request<pb::ExecuteBatchRequest>,
    ) -> Result<Response<pb::ExecuteBatchResponse>, Status> {
        let note = CallNote::of(&request);
        let deadline = call_deadline(request.metadata(), &self.deadlines.execute_batch);
        let access = self.access(&request, &note);
        let writer = self.audit_writer(&request, "sqlgate.v1.Query/ExecuteBatch");
        let hold = CallSlot::take(&mut request);
        let request = request.into_inner();
        let statements = request
            .statements
            .into_iter()
            .enumerate()
            .map(|(index, s)| {
                self.statement(&note, s.sql, s.params)
                    .map_err(|err| crate::error::Error::InBatch {
                        index,
                        source: Box::new(err),
                    })
            })
            .collect::<Result<Vec<_>, _>>();
        let statements = statements?;
        note.fingerprints(statements.iter().map(|s| &*s.fingerprint));
        note.operation("BATCH");
        for statement in &statements {
            note.statement(&statement.sql, &statement.fingerprint);
        }
        let span = traces::statement_span(
            db_system(DB::BACKEND),
            self.engine.namespace(),
            "BATCH",
            || std::sync::Arc::from(""),
        );
        span.set(
            "db.operation.batch.size",
            i64::try_from(statements.len()).unwrap_or(i64::MAX),
        );
        let outputs = span
            .scope(self.engine.execute_batch(
                statements,
                request.max_rows,
                deadline,
                access,
                hold,
                writer,
            ))
            .await;
        let rows = outputs
            .as_ref()
            .map(|outputs| outputs.iter().map(|o| o.rows.len()).sum());
        traces::statement_done(&span, rows);
        let outputs = outputs.inspect_err(|error| note_refusal(&note, error))?;
        note.statement_rows(outputs.iter().map(|output| {
            (
                output.rows.len() as u64,
                output.rows_affected,
                output.elapsed,
            )
        }));
        note.rows(outputs.iter().map(|o| o.rows.len()).sum());
        Ok(Response::new(pb::ExecuteBatchResponse {
            results: outputs.into_iter().map(pb::ExecuteResponse::from).collect(),
        }))
    }
}
