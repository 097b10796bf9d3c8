//! [`QueryEngine`]: the three Query operations over the pool.
//!
//! Each unit of database work runs in a task of its own, so a caller that
//! goes away mid-call cannot cut it in half (a dropped sqlx future can leave
//! a connection inside a transaction). Statements that only read run as
//! they are; anything else runs inside a transaction, so that a refused
//! result (too many rows) or a failure rolls everything back.
//!
//! The pool is shared, so a statement that would change the connection
//! for later callers is refused before it runs (`Statement::check_for_call`),
//! and one that may change it without saying so runs in a transaction on a
//! connection that is reset, or closed, before anyone else gets it.
//!
//! A reader's call (`Access::ReadOnly`) always runs in a transaction the
//! database itself keeps read-only — plain reads too, which otherwise run
//! bare — so that no statement, however spelled (a data-modifying CTE, a
//! function that writes, a view over one), writes for it; the database's
//! refusal reaches the reader as PERMISSION_DENIED. Writers' calls run as
//! before, at the same cost.
//!
//! Every call carries a [`Deadline`]. The wait for a connection spends it;
//! what is left bounds the work, inside the database too. When it passes,
//! the caller is answered DEADLINE_EXCEEDED at once, and a detached task
//! cancels the statement on the server and closes the connection.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::{
    executor::{QueryOutput, ResultBudget, collect},
    frames::StreamEvent,
    operation::operation_name,
    statement::Statement,
    stream::{StreamUnit, run_stream},
};
use crate::{
    audit::table::{AuditTable, AuditWriter, check_statement},
    config::LimitSettings,
    db::{
        self, Cut, Database, Deadline, Driver,
        transaction::{Access, Begin, Checkout, Failure, Hold},
    },
    error::{DeadlinePhase, Error},
    telemetry::{
        metrics::db_system,
        traces::{self, TraceSpan},
    },
};

/// Runs statements for the Query service.
#[derive(Debug)]
pub(crate) struct QueryEngine<DB: Driver> {
    db: Arc<Database<DB>>,
    limits: LimitSettings,
    /// Where writes' audit rows go (`audit.table`; `None`: off).
    audit_table: Option<AuditTable>,
}

impl<DB: Driver> Clone for QueryEngine<DB> {
    fn clone(&self) -> Self {
        Self {
            db: self.db.clone(),
            limits: self.limits.clone(),
            audit_table: self.audit_table.clone(),
        }
    }
}

impl<DB: Driver> QueryEngine<DB> {
    /// The database the engine's URL names (`db.namespace`).
    pub(crate) fn namespace(&self) -> Option<&str> {
        self.db.namespace()
    }

    /// An engine over `db`, capped by `limits`; with `audit_table`, every
    /// write's audit row is inserted into it in the write's own
    /// transaction (and statements naming it are refused).
    pub(crate) fn new(
        db: Arc<Database<DB>>,
        limits: LimitSettings,
        audit_table: Option<AuditTable>,
    ) -> Self {
        Self {
            db,
            limits,
            audit_table,
        }
    }

    /// The audit table, when it is on.
    pub(crate) fn audit_table(&self) -> Option<&AuditTable> {
        self.audit_table.as_ref()
    }

    /// The caps in force, for request validation.
    pub(crate) fn limits(&self) -> &LimitSettings {
        &self.limits
    }

    fn budget(&self, max_rows: u32) -> Result<ResultBudget, Error> {
        let max_rows = match max_rows {
            0 => self.limits.default_max_rows,
            n if n > self.limits.max_rows_limit => {
                return Err(Error::invalid_request(
                    "max_rows",
                    format!(
                        "{n} is above the server's limit of {}; use ExecuteStream for large results",
                        self.limits.max_rows_limit
                    ),
                ));
            }
            n => n,
        };
        Ok(ResultBudget::new(
            max_rows as usize,
            self.limits.max_response_bytes,
        ))
    }

    /// Runs one statement and returns its whole result. `hold` is kept
    /// until the work is over, even if the caller leaves first.
    pub(crate) async fn execute(
        &self,
        statement: Statement,
        max_rows: u32,
        deadline: Deadline,
        access: Access,
        hold: Hold,
        writer: Option<AuditWriter>,
    ) -> Result<QueryOutput, Error> {
        let mut outputs = self
            .run(
                vec![statement],
                max_rows,
                deadline,
                (access, writer, false),
                hold,
            )
            .await?;
        outputs
            .pop()
            .ok_or_else(|| Error::Internal("no result for the statement".to_owned()))
    }

    /// Runs several statements in one transaction: all commit or none do.
    pub(crate) async fn execute_batch(
        &self,
        statements: Vec<Statement>,
        max_rows: u32,
        deadline: Deadline,
        access: Access,
        hold: Hold,
        writer: Option<AuditWriter>,
    ) -> Result<Vec<QueryOutput>, Error> {
        if statements.is_empty() {
            return Err(Error::invalid_request("statements", "the batch is empty"));
        }
        if statements.len() > self.limits.max_batch_statements {
            return Err(Error::invalid_request(
                "statements",
                format!(
                    "{} statements; the limit is {}",
                    statements.len(),
                    self.limits.max_batch_statements
                ),
            ));
        }
        self.run(statements, max_rows, deadline, (access, writer, true), hold)
            .await
    }

    /// One unit of work on the configured backend, in a task of its own
    /// (which keeps `hold`); `writer` (audit table on) records its writes;
    /// a batch's statements each get a span of their own.
    async fn run(
        &self,
        statements: Vec<Statement>,
        max_rows: u32,
        deadline: Deadline,
        (access, writer, batch): (Access, Option<AuditWriter>, bool),
        hold: Hold,
    ) -> Result<Vec<QueryOutput>, Error> {
        let budget = self.budget(max_rows)?;
        for statement in &statements {
            statement.check_for_call(statements.len())?;
            check_statement(self.audit_table.as_ref(), statement)?;
        }
        deadline.check(DeadlinePhase::BeforeStart)?;
        let db = self.db.clone();
        self.db.count_call();
        // A reader writes nothing: its read-only transaction would refuse
        // the audit row too.
        let writer = writer.filter(|_| !access.is_read_only());
        spawn_unit(Box::pin(async move {
            let _hold = hold;
            let unit = Unit {
                statements: &statements,
                budget,
                access,
                writer: writer.as_ref(),
                spans: batch.then(|| db.namespace()),
            };
            access.answer(run_unit(&db, unit, deadline).await)
        }))
        .await
    }

    /// Runs one statement and streams its result: [`StreamEvent::Columns`]
    /// first, then row batches, then [`StreamEvent::Finished`], or one error.
    /// The channel is bounded, so a slow reader slows the query; dropping the
    /// receiver, the deadline passing, or the reader taking nothing for
    /// `limits.stream_stall_timeout` cancels the statement on the server and
    /// recovers or closes its connection. Streams hold at most
    /// `limits.stream_max_pool_share` of the pool; past it the stream's only
    /// event is RESOURCE_EXHAUSTED (see `stream`), as is the refusal of a
    /// statement a call must not run.
    /// `hold` is kept until the stream's work is over.
    pub(crate) fn execute_stream(
        &self,
        statement: Statement,
        deadline: Deadline,
        access: Access,
        hold: Hold,
        writer: Option<AuditWriter>,
    ) -> mpsc::Receiver<Result<StreamEvent, Error>> {
        let refused = check_statement(self.audit_table.as_ref(), &statement).err();
        let unit = StreamUnit {
            statement,
            deadline,
            access,
            hold,
            writer: writer.filter(|_| !access.is_read_only()),
            refused,
        };
        run_stream(self.db.clone(), unit, self.limits.clone())
    }
}

/// Runs `work` in its own task and waits for it. The backend-specific
/// futures are boxed where they are created: spawning and awaiting move a
/// future by value, and an unboxed one is tens of kilobytes (memcpy showed
/// up as 40% of sqlgate's instructions per call before they were boxed).
async fn spawn_unit<T: Send + 'static>(
    work: impl Future<Output = Result<T, Error>> + Send + 'static,
) -> Result<T, Error> {
    // In the caller's span (none when traces are off): the statement's
    // work and its pool wait belong to its call.
    tokio::spawn(TraceSpan::current().scope(work))
        .await
        .map_err(|err| Error::Internal(format!("database task failed: {err}")))?
}

/// One unit of work on one connection within `deadline`: a writer's plain
/// read as it is, anything else in a transaction (read-only for a reader).
/// On success or a clean failure the connection goes back to the pool;
/// otherwise it is abandoned.
async fn run_unit<DB: Driver>(
    db: &Database<DB>,
    unit: Unit<'_>,
    deadline: Deadline,
) -> Result<Vec<QueryOutput>, Error> {
    let (statements, access) = (unit.statements, unit.access);
    // The server id costs a round trip; fetch it only for shapes that ran
    // out their deadline before, so that a repeat can be cancelled and the
    // connection kept (see `TimeoutMemory`), and for statements that may
    // change the connection: one may have switched off what stops a
    // statement on a closed connection (`set_config` with a computed
    // name), so a cut one must be cancelled by id, never just dropped.
    let leaves_state = statements.iter().any(Statement::leaves_state);
    let want_server_id = leaves_state
        || statements
            .iter()
            .any(|statement| db.timed_out().has_timed_out(&statement.fingerprint));
    let mut checkout = Checkout::take(db, &deadline, want_server_id).await?;
    if leaves_state {
        checkout.note_state_change();
    }
    // A reader's plain read runs in a read-only transaction too: what
    // looks like a read may still write (a view over a function that does).
    let only_reads = DB::PLAIN_READS_OUTSIDE_TRANSACTION
        && !access.is_read_only()
        && !leaves_state
        && statements.iter().all(Statement::is_plain_read);

    let work = async {
        if only_reads {
            let mut budget = unit.budget;
            let mut outputs = Vec::with_capacity(statements.len());
            for statement in statements {
                outputs.push(collect_one(&mut checkout, statement, &mut budget, unit.spans).await?);
            }
            Ok(outputs)
        } else {
            run_in_transaction(&mut checkout, unit, &deadline).await
        }
    };
    match db::within(&deadline, db.drained(), work).await {
        Ok(Ok(outputs)) => {
            checkout.release().await;
            Ok(outputs)
        }
        Ok(Err(failure)) => {
            if deadline.expired() {
                // Stopped by the database's own limit (SET LOCAL
                // statement_timeout) or cut off mid-result: either way it
                // ran out its deadline, and next time sqlgate may be first.
                remember_timeout(db, statements);
            }
            checkout.give_back_after(&failure).await;
            // A unary result is collected by a task that outlives its
            // caller: no reader can leave it mid-result.
            let error = failure.into_error().unwrap_or_else(|| {
                Error::Internal("a unary result cannot lose its reader".to_owned())
            });
            Err(error.after_deadline(deadline.expired()))
        }
        Err(cut) => {
            // Answer now; stop the statement and recover or close the connection behind.
            if cut == Cut::Deadline {
                remember_timeout(db, statements);
            }
            checkout.abandon();
            Err(cut.error())
        }
    }
}

/// One unit's statements and what they run with.
struct Unit<'a> {
    statements: &'a [Statement],
    budget: ResultBudget,
    access: Access,
    /// Records each write in the audit table (`None`: off, or a reader).
    writer: Option<&'a AuditWriter>,
    /// A batch's: each statement runs in a span of its own, in this
    /// database (`db.namespace`); `None`: the caller's span is the
    /// statement's.
    spans: Option<Option<&'a str>>,
}

/// Runs one statement of a unit; a batch's in a span of its own (a child
/// of the batch's), with its own outcome and rows.
async fn collect_one<DB: Driver>(
    checkout: &mut Checkout<DB>,
    statement: &Statement,
    budget: &mut ResultBudget,
    spans: Option<Option<&str>>,
) -> Result<QueryOutput, Failure> {
    let Some(namespace) = spans else {
        return collect::<DB>(checkout.connection(), statement, budget).await;
    };
    let span = traces::statement_span(
        db_system(DB::BACKEND),
        namespace,
        operation_name(&statement.sql),
        || statement.sanitized_text(),
    );
    let outcome = span
        .scope(collect::<DB>(checkout.connection(), statement, budget))
        .await;
    match &outcome {
        Ok(output) => traces::statement_done(&span, Ok(output.rows.len())),
        Err(Failure::Clean(error) | Failure::Dirty(error) | Failure::Broken(error)) => {
            traces::statement_done(&span, Err(error));
        }
        Err(Failure::ReaderGone) => {}
    }
    outcome
}

/// Notes the shapes of a unit that ran out its deadline on the database.
fn remember_timeout<DB: Driver>(db: &Database<DB>, statements: &[Statement]) {
    for statement in statements {
        db.timed_out().remember(&statement.fingerprint);
    }
}

/// BEGIN (with the deadline as a database-side limit; read-only for a
/// reader), the statements, COMMIT; ROLLBACK on the first failure. A
/// failure that left rows in flight is returned dirty instead, for the
/// caller to close the connection (which ends the transaction on the
/// server).
async fn run_in_transaction<DB: Driver>(
    checkout: &mut Checkout<DB>,
    unit: Unit<'_>,
    deadline: &Deadline,
) -> Result<Vec<QueryOutput>, Failure> {
    let Unit {
        statements,
        mut budget,
        access,
        writer,
        spans,
    } = unit;
    checkout.begin(Begin::Bounded(deadline, access)).await?;
    let mut outputs = Vec::with_capacity(statements.len());
    for (index, statement) in statements.iter().enumerate() {
        let failure = match collect_one(checkout, statement, &mut budget, spans).await {
            Ok(output) => {
                if let Some(writer) = writer.filter(|_| statement.may_write()) {
                    checkout.stage_audit_row(&writer.row_sql(
                        &statement.sanitized_text(),
                        &statement.fingerprint,
                        (output.rows.len() as u64, output.rows_affected),
                        output.elapsed,
                    ));
                }
                outputs.push(output);
                continue;
            }
            Err(failure) if failure.leaves_connection_dirty() => failure,
            Err(failure) => checkout.rollback_after(failure).await,
        };
        let forbidden_in_transaction = matches!(
            &failure,
            Failure::Clean(error) if error.is_forbidden_in_transaction()
        );
        if statements.len() == 1 && forbidden_in_transaction && !access.is_read_only() {
            // VACUUM, CREATE DATABASE, …: refused inside a transaction,
            // did nothing, atomic on their own. Never for a reader: bare,
            // nothing would keep it read-only.
            let output = collect::<DB>(checkout.connection(), statement, &mut budget).await?;
            if let Some(writer) = writer {
                // No transaction to share: the row follows the statement.
                let row = writer.row_sql(
                    &statement.sanitized_text(),
                    &statement.fingerprint,
                    (output.rows.len() as u64, output.rows_affected),
                    output.elapsed,
                );
                checkout.insert_audit_row_now(&row).await?;
            }
            return Ok(vec![output]);
        }
        return Err(in_batch(statements.len(), index, failure));
    }
    checkout.commit().await?;
    Ok(outputs)
}

/// Names the failed statement when there is more than one.
fn in_batch(count: usize, index: usize, failure: Failure) -> Failure {
    if count <= 1 {
        return failure;
    }
    failure.map_error(|error| Error::InBatch {
        index,
        source: Box::new(error),
    })
}
