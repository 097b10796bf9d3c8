//! [`QueryEngine`]: the three Query operations over the configured pool.
//!
//! Each unit of database work runs in a task of its own, so a caller that
//! goes away mid-call cannot cut it in half (a dropped sqlx future can leave
//! a connection inside a transaction). Statements that only read run as
//! they are; anything else runs inside a transaction, so that a refused
//! result (too many rows) or a failure rolls everything back.

use std::sync::Arc;

use sqlx::{
    Connection, Executor, IntoArguments, MySql, Pool, Postgres, Sqlite, pool::PoolConnection,
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
    db::{Database, DbPool, Dialect},
    error::Error,
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

    /// The pool, for stats.
    pub fn database(&self) -> &Arc<Database> {
        &self.db
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
    pub async fn execute(&self, statement: Statement, max_rows: u32) -> Result<QueryOutput, Error> {
        let budget = self.budget(max_rows)?;
        let db = self.db.clone();
        self.db.count_call();
        spawn_unit(async move {
            let statements = [statement];
            let mut outputs = match db.pool().clone() {
                DbPool::Postgres(pool) => {
                    run_unary::<Postgres>(&db, &pool, &statements, budget).await
                }
                DbPool::MySql(pool) => run_unary::<MySql>(&db, &pool, &statements, budget).await,
                DbPool::Sqlite(pool) => run_unary::<Sqlite>(&db, &pool, &statements, budget).await,
            }?;
            outputs
                .pop()
                .ok_or_else(|| Error::Internal("no result for the statement".to_owned()))
        })
        .await
    }

    /// Runs several statements in one transaction: all commit or none do.
    pub async fn execute_batch(
        &self,
        statements: Vec<Statement>,
        max_rows: u32,
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
        let budget = self.budget(max_rows)?;
        let db = self.db.clone();
        self.db.count_call();
        spawn_unit(async move {
            match db.pool().clone() {
                DbPool::Postgres(pool) => {
                    run_batch::<Postgres>(&db, &pool, &statements, budget).await
                }
                DbPool::MySql(pool) => run_batch::<MySql>(&db, &pool, &statements, budget).await,
                DbPool::Sqlite(pool) => run_batch::<Sqlite>(&db, &pool, &statements, budget).await,
            }
        })
        .await
    }

    /// Runs one statement and streams its result: [`StreamEvent::Columns`]
    /// first, then row batches, then [`StreamEvent::Finished`], or one error.
    /// The channel is bounded, so a slow reader slows the query; dropping the
    /// receiver cancels the statement on the server and closes its connection.
    pub fn execute_stream(
        &self,
        statement: Statement,
    ) -> mpsc::Receiver<Result<StreamEvent, Error>> {
        let (sender, receiver) = mpsc::channel(self.limits.stream_buffer_frames);
        let db = self.db.clone();
        let limits = self.limits.clone();
        self.db.count_call();
        tokio::spawn(async move {
            let outcome = match db.pool().clone() {
                DbPool::Postgres(pool) => {
                    run_stream::<Postgres>(&db, &pool, &statement, &limits, &sender).await
                }
                DbPool::MySql(pool) => {
                    run_stream::<MySql>(&db, &pool, &statement, &limits, &sender).await
                }
                DbPool::Sqlite(pool) => {
                    run_stream::<Sqlite>(&db, &pool, &statement, &limits, &sender).await
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

/// Runs `work` in its own task and waits for it.
async fn spawn_unit<T: Send + 'static>(
    work: impl Future<Output = Result<T, Error>> + Send + 'static,
) -> Result<T, Error> {
    tokio::spawn(work)
        .await
        .map_err(|err| Error::Internal(format!("database task failed: {err}")))?
}

/// One statement: as it is when it only reads, else in a transaction.
async fn run_unary<DB>(
    db: &Database,
    pool: &Pool<DB>,
    statements: &[Statement],
    budget: ResultBudget,
) -> Result<Vec<QueryOutput>, Error>
where
    DB: Codec + Dialect,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let only_reads = statements.iter().all(Statement::is_plain_read)
        && db.backend() != crate::db::Backend::Sqlite;
    if !only_reads {
        return run_batch::<DB>(db, pool, statements, budget).await;
    }
    let mut conn = db.acquire(pool).await?;
    let mut budget = budget;
    let mut outputs = Vec::with_capacity(statements.len());
    for statement in statements {
        match collect::<DB>(&mut conn, statement, &mut budget).await {
            Ok(output) => outputs.push(output),
            Err(failure) => return Err(release_after_failure(conn, failure).await),
        }
    }
    Ok(outputs)
}

/// Statements in one transaction; the failed statement's index is reported.
async fn run_batch<DB>(
    db: &Database,
    pool: &Pool<DB>,
    statements: &[Statement],
    budget: ResultBudget,
) -> Result<Vec<QueryOutput>, Error>
where
    DB: Codec + Dialect,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let mut conn = db.acquire(pool).await?;
    let outcome = run_in_transaction::<DB>(&mut conn, statements, budget.clone()).await;
    match outcome {
        Ok(outputs) => Ok(outputs),
        Err((index, failure))
            if statements.len() == 1
                && !failure.connection_dirty
                && failure.error.is_forbidden_in_transaction() =>
        {
            // VACUUM, CREATE DATABASE, …: refused inside a transaction, did
            // nothing, and are atomic on their own.
            let _ = index;
            let mut budget = budget;
            match collect::<DB>(&mut conn, &statements[0], &mut budget).await {
                Ok(output) => Ok(vec![output]),
                Err(failure) => Err(release_after_failure(conn, failure).await),
            }
        }
        Err((index, failure)) => {
            let failure = Failure {
                error: if statements.len() > 1 {
                    Error::InBatch {
                        index,
                        source: Box::new(failure.error),
                    }
                } else {
                    failure.error
                },
                connection_dirty: failure.connection_dirty,
            };
            Err(release_after_failure(conn, failure).await)
        }
    }
}

/// BEGIN, the statements, COMMIT; ROLLBACK on the first failure (the
/// caller closes the connection instead when the failure left it dirty).
async fn run_in_transaction<DB>(
    conn: &mut PoolConnection<DB>,
    statements: &[Statement],
    mut budget: ResultBudget,
) -> Result<Vec<QueryOutput>, (usize, Failure)>
where
    DB: Codec + Dialect,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let driver_failure = |index: usize| {
        move |err: sqlx::Error| {
            let dirty = !matches!(err, sqlx::Error::Database(_));
            (
                index,
                Failure {
                    error: err.into(),
                    connection_dirty: dirty,
                },
            )
        }
    };
    let mut transaction = conn.begin().await.map_err(driver_failure(0))?;
    let mut outputs = Vec::with_capacity(statements.len());
    for (index, statement) in statements.iter().enumerate() {
        match collect::<DB>(&mut transaction, statement, &mut budget).await {
            Ok(output) => outputs.push(output),
            Err(failure) => {
                if failure.connection_dirty {
                    // Rows are still in flight; the caller closes the
                    // connection, which ends the transaction on the server.
                    drop(transaction);
                } else {
                    transaction
                        .rollback()
                        .await
                        .map_err(driver_failure(index))?;
                }
                return Err((index, failure));
            }
        }
    }
    transaction
        .commit()
        .await
        .map_err(driver_failure(statements.len().saturating_sub(1)))?;
    Ok(outputs)
}

/// Returns the connection to the pool when it is in a known state, closes it
/// otherwise, and hands back the error for the caller.
async fn release_after_failure<DB: sqlx::Database>(
    conn: PoolConnection<DB>,
    failure: Failure,
) -> Error {
    if failure.connection_dirty
        && let Err(err) = conn.close().await
    {
        tracing::debug!(error = %err, "closing a dirty connection failed");
    }
    failure.error
}
