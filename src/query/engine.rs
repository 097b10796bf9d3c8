//! [`QueryEngine`]: the three Query operations over the configured pool.
//!
//! Each unit of database work runs in a task of its own, so a caller that
//! goes away mid-call cannot cut it in half (a dropped sqlx future can leave
//! a connection inside a transaction). Statements that only read run as
//! they are; anything else runs inside a transaction, so that a refused
//! result (too many rows) or a failure rolls everything back.
//!
//! Every call carries a [`Deadline`]. The wait for a connection spends it;
//! what is left bounds the work, inside the database too. When it passes,
//! the caller is answered DEADLINE_EXCEEDED at once, and a detached task
//! cancels the statement on the server and closes the connection.

use std::sync::Arc;

use sqlx::{
    AssertSqlSafe, Executor, IntoArguments, MySql, Pool, Postgres, Sqlite, pool::PoolConnection,
};
use tokio::sync::mpsc;

use super::{
    codec::Codec,
    executor::{Failure, QueryOutput, ResultBudget, collect},
    statement::Statement,
    stream::{StreamEvent, run_stream},
};
use crate::{
    config::LimitSettings,
    db::{self, Backend, Cut, Database, DbPool, Deadline, Dialect, Interrupt, abandon},
    error::{DeadlinePhase, Error},
};

/// Runs statements for the Query service.
#[derive(Debug, Clone)]
pub struct QueryEngine {
    db: Arc<Database>,
    limits: LimitSettings,
}

impl QueryEngine {
    /// An engine over `db`, capped by `limits`.
    pub fn new(db: Arc<Database>, limits: LimitSettings) -> Self {
        Self { db, limits }
    }

    /// The caps in force, for request validation.
    pub fn limits(&self) -> &LimitSettings {
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

    /// Runs one statement and returns its whole result.
    pub async fn execute(
        &self,
        statement: Statement,
        max_rows: u32,
        deadline: Deadline,
    ) -> Result<QueryOutput, Error> {
        let mut outputs = self.run(vec![statement], max_rows, deadline).await?;
        outputs
            .pop()
            .ok_or_else(|| Error::Internal("no result for the statement".to_owned()))
    }

    /// Runs several statements in one transaction: all commit or none do.
    pub async fn execute_batch(
        &self,
        statements: Vec<Statement>,
        max_rows: u32,
        deadline: Deadline,
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
        self.run(statements, max_rows, deadline).await
    }

    /// One unit of work on the configured backend, in a task of its own.
    async fn run(
        &self,
        statements: Vec<Statement>,
        max_rows: u32,
        deadline: Deadline,
    ) -> Result<Vec<QueryOutput>, Error> {
        let budget = self.budget(max_rows)?;
        deadline.check(DeadlinePhase::BeforeStart)?;
        let db = self.db.clone();
        self.db.count_call();
        spawn_unit(async move {
            let (db, statements) = (&db, &statements);
            match db.pool().clone() {
                DbPool::Postgres(pool) => {
                    Box::pin(run_unit::<Postgres>(
                        db, &pool, statements, budget, deadline,
                    ))
                    .await
                }
                DbPool::MySql(pool) => {
                    Box::pin(run_unit::<MySql>(db, &pool, statements, budget, deadline)).await
                }
                DbPool::Sqlite(pool) => {
                    Box::pin(run_unit::<Sqlite>(db, &pool, statements, budget, deadline)).await
                }
            }
        })
        .await
    }

    /// Runs one statement and streams its result: [`StreamEvent::Columns`]
    /// first, then row batches, then [`StreamEvent::Finished`], or one error.
    /// The channel is bounded, so a slow reader slows the query; dropping the
    /// receiver, or the deadline passing, cancels the statement on the
    /// server and closes its connection.
    pub fn execute_stream(
        &self,
        statement: Statement,
        deadline: Deadline,
    ) -> mpsc::Receiver<Result<StreamEvent, Error>> {
        let (sender, receiver) = mpsc::channel(self.limits.stream_buffer_frames);
        let db = self.db.clone();
        let limits = self.limits.clone();
        self.db.count_call();
        tokio::spawn(async move {
            let outcome = match db.pool().clone() {
                DbPool::Postgres(pool) => {
                    Box::pin(run_stream::<Postgres>(
                        &db, &pool, &statement, &limits, deadline, &sender,
                    ))
                    .await
                }
                DbPool::MySql(pool) => {
                    Box::pin(run_stream::<MySql>(
                        &db, &pool, &statement, &limits, deadline, &sender,
                    ))
                    .await
                }
                DbPool::Sqlite(pool) => {
                    Box::pin(run_stream::<Sqlite>(
                        &db, &pool, &statement, &limits, deadline, &sender,
                    ))
                    .await
                }
            };
            if let Err(error) = outcome {
                // The receiver may be gone already; nothing else to tell.
                let _ = sender.send(Err(error)).await;
            }
        });
        receiver
    }
}

/// Runs `work` in its own task and waits for it. The backend-specific
/// futures are boxed where they are created: spawning and awaiting move a
/// future by value, and an unboxed one is tens of kilobytes (memcpy showed
/// up as 40% of sqlgate's instructions per call before they were boxed).
async fn spawn_unit<T: Send + 'static>(
    work: impl Future<Output = Result<T, Error>> + Send + 'static,
) -> Result<T, Error> {
    tokio::spawn(work)
        .await
        .map_err(|err| Error::Internal(format!("database task failed: {err}")))?
}

/// One unit of work on one connection within `deadline`: a plain read as
/// it is, anything else in a transaction. On success or a clean failure
/// the connection goes back to the pool; otherwise it is abandoned.
async fn run_unit<DB>(
    db: &Database,
    pool: &Pool<DB>,
    statements: &[Statement],
    budget: ResultBudget,
    deadline: Deadline,
) -> Result<Vec<QueryOutput>, Error>
where
    DB: Codec + Dialect,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let mut conn = db.acquire_within(pool, &deadline).await?;
    let only_reads =
        statements.iter().all(Statement::is_plain_read) && db.backend() != Backend::Sqlite;
    // The server id costs a round trip; fetch it only for shapes that ran
    // out their deadline before, so that a repeat can be cancelled and the
    // connection kept (see `TimeoutMemory`).
    let want_server_id = statements
        .iter()
        .any(|statement| db.timed_out().has_timed_out(&statement.fingerprint));
    let interrupt = Interrupt::new(&deadline);
    let armed = tokio::time::timeout_at(deadline.instant(), async {
        let server_id = DB::arm(&mut conn, &interrupt, want_server_id).await?;
        Ok::<_, sqlx::Error>(server_id)
    })
    .await;
    let server_id = match armed {
        Ok(Ok(id)) => id,
        Ok(Err(err)) => {
            tokio::spawn(abandon(DB::control_pool(db), conn, interrupt, None, false));
            return Err(err.into());
        }
        Err(_) => {
            tokio::spawn(abandon(DB::control_pool(db), conn, interrupt, None, false));
            return Err(Error::DeadlineExceeded(DeadlinePhase::Database));
        }
    };

    let work = async {
        if only_reads {
            let mut budget = budget;
            let mut outputs = Vec::with_capacity(statements.len());
            for statement in statements {
                outputs.push(collect::<DB>(&mut conn, statement, &mut budget).await?);
            }
            Ok(outputs)
        } else {
            run_in_transaction::<DB>(&mut conn, statements, budget, &deadline).await
        }
    };
    match db::within(&deadline, db.drained(), work).await {
        Ok(Ok(outputs)) => {
            DB::disarm(&mut conn).await;
            Ok(outputs)
        }
        Ok(Err(failure)) => {
            let error = failure.error.after_deadline(deadline.expired());
            if deadline.expired() {
                // Stopped by the database's own limit (SET LOCAL
                // statement_timeout) or cut off mid-result: either way it
                // ran out its deadline, and next time sqlgate may be first.
                remember_timeout(db, statements);
            }
            if failure.connection_dirty {
                tokio::spawn(abandon(
                    DB::control_pool(db),
                    conn,
                    interrupt,
                    server_id,
                    !only_reads,
                ));
            } else {
                DB::disarm(&mut conn).await;
            }
            Err(error)
        }
        Err(cut) => {
            // Answer now; stop the statement and recover or close the connection behind.
            if cut == Cut::Deadline {
                remember_timeout(db, statements);
            }
            tokio::spawn(abandon(
                DB::control_pool(db),
                conn,
                interrupt,
                server_id,
                !only_reads,
            ));
            Err(cut.error())
        }
    }
}

/// Notes the shapes of a unit that ran out its deadline on the database.
fn remember_timeout(db: &Database, statements: &[Statement]) {
    for statement in statements {
        db.timed_out().remember(&statement.fingerprint);
    }
}

/// BEGIN (with the deadline as a database-side limit), the statements,
/// COMMIT; ROLLBACK on the first failure. A failure that left rows in
/// flight is returned dirty instead, for the caller to close the connection
/// (which ends the transaction on the server).
async fn run_in_transaction<DB>(
    conn: &mut PoolConnection<DB>,
    statements: &[Statement],
    mut budget: ResultBudget,
    deadline: &Deadline,
) -> Result<Vec<QueryOutput>, Failure>
where
    DB: Codec + Dialect,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    raw(conn, DB::begin_sql(deadline)).await?;
    let mut outputs = Vec::with_capacity(statements.len());
    for (index, statement) in statements.iter().enumerate() {
        match collect::<DB>(conn, statement, &mut budget).await {
            Ok(output) => outputs.push(output),
            Err(failure) if failure.connection_dirty => {
                return Err(in_batch(statements.len(), index, failure));
            }
            Err(failure) => {
                let failure = rollback_after(conn, failure).await;
                if failure.connection_dirty {
                    return Err(in_batch(statements.len(), index, failure));
                }
                if statements.len() == 1 && failure.error.is_forbidden_in_transaction() {
                    // VACUUM, CREATE DATABASE, …: refused inside a
                    // transaction, did nothing, atomic on their own.
                    return Ok(vec![collect::<DB>(conn, statement, &mut budget).await?]);
                }
                return Err(in_batch(statements.len(), index, failure));
            }
        }
    }
    raw(conn, "COMMIT".to_owned()).await?;
    Ok(outputs)
}

/// Rolls back after `failure`. If the rollback itself fails (SQLite may
/// have rolled back already when a statement was interrupted; the
/// connection may be gone), the connection's state is unknown: the original
/// error stands and the connection is marked for closing.
pub(crate) async fn rollback_after<DB>(conn: &mut PoolConnection<DB>, failure: Failure) -> Failure
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    match raw(conn, "ROLLBACK".to_owned()).await {
        Ok(()) => failure,
        Err(_) => Failure {
            error: failure.error,
            connection_dirty: true,
        },
    }
}

/// Names the failed statement when there is more than one.
fn in_batch(count: usize, index: usize, failure: Failure) -> Failure {
    if count <= 1 {
        return failure;
    }
    Failure {
        error: Error::InBatch {
            index,
            source: Box::new(failure.error),
        },
        connection_dirty: failure.connection_dirty,
    }
}

/// Runs transaction control text (BEGIN/COMMIT/ROLLBACK).
pub(crate) async fn raw<DB>(conn: &mut PoolConnection<DB>, sql: String) -> Result<(), Failure>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    conn.execute(sqlx::raw_sql(AssertSqlSafe(sql)))
        .await
        .map(|_| ())
        .map_err(Failure::from_driver)
}
