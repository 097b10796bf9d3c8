//! ExecuteStream's unit of work: metadata first, rows in frames cut by count
//! and size, stats last. Frames go through a bounded channel, so a slow
//! reader holds the query back instead of growing sqlgate's memory; a reader
//! that goes away gets its statement cancelled on the server and its
//! connection closed (its state is unknown), never returned dirty.

use std::time::{Duration, Instant};

use sqlx::{Connection, Executor, IntoArguments, Pool, pool::PoolConnection};
use tokio::sync::mpsc;

use super::{
    codec::Codec,
    executor::{Failure, RowSink, run_statement},
    statement::Statement,
    value::{ColumnInfo, SqlValue},
};
use crate::{
    config::LimitSettings,
    db::{Database, Dialect},
    error::Error,
};

/// One event of a streamed result.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// The result's columns; always first.
    Columns(Vec<ColumnInfo>),
    /// A batch of rows.
    Rows(Vec<Vec<SqlValue>>),
    /// The statement finished; always last.
    Finished(StreamStats),
}

/// What a streamed statement did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StreamStats {
    /// Rows inserted, updated or deleted.
    pub rows_affected: u64,
    /// Rows sent.
    pub rows_returned: u64,
    /// From the call's start to the last row.
    pub elapsed: Duration,
}

type Sender = mpsc::Sender<Result<StreamEvent, Error>>;

/// Cuts rows into frames and sends them.
struct FrameSink<'a> {
    sender: &'a Sender,
    pending: Vec<Vec<SqlValue>>,
    pending_bytes: usize,
    rows_returned: u64,
    max_rows: usize,
    max_bytes: usize,
    client_gone: bool,
}

impl FrameSink<'_> {
    async fn send(&mut self, event: StreamEvent) -> Result<(), Failure> {
        if self.sender.send(Ok(event)).await.is_err() {
            self.client_gone = true;
            return Err(Failure::dirty(Error::Internal("client gone".to_owned())));
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), Failure> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        self.send(StreamEvent::Rows(rows)).await
    }
}

impl<DB: Codec> RowSink<DB> for FrameSink<'_> {
    async fn columns(&mut self, columns: &[ColumnInfo]) -> Result<(), Failure> {
        self.send(StreamEvent::Columns(columns.to_vec())).await
    }

    async fn row(&mut self, row: Vec<SqlValue>) -> Result<(), Failure> {
        self.pending_bytes += row.iter().map(SqlValue::wire_size_hint).sum::<usize>();
        self.pending.push(row);
        self.rows_returned += 1;
        if self.pending.len() >= self.max_rows || self.pending_bytes >= self.max_bytes {
            self.flush().await?;
        }
        Ok(())
    }

    async fn consumer_gone(&self) {
        self.sender.closed().await;
    }
}

/// Runs `statement` and streams it into `sender`. Errors that happen before
/// anything was sent are returned for the caller to send.
pub(crate) async fn run_stream<DB>(
    db: &Database,
    pool: &Pool<DB>,
    statement: &Statement,
    limits: &LimitSettings,
    sender: &Sender,
) -> Result<(), Error>
where
    DB: Codec + Dialect,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let started = Instant::now();
    let mut conn = db.acquire(pool).await?;
    let server_id = DB::server_connection_id(&mut conn).await?;
    let transactional = !statement.is_plain_read() || db.backend() == crate::db::Backend::Sqlite;
    let mut sink = FrameSink {
        sender,
        pending: Vec::new(),
        pending_bytes: 0,
        rows_returned: 0,
        max_rows: limits.stream_batch_rows,
        max_bytes: limits.stream_batch_bytes,
        client_gone: false,
    };

    let outcome = if transactional {
        stream_in_transaction::<DB>(&mut conn, statement, &mut sink).await
    } else {
        run_statement::<DB, _>(&mut conn, statement, &mut sink).await
    };
    let outcome = match outcome {
        Ok(rows_affected) => sink.flush().await.map(|()| rows_affected),
        Err(failure) => Err(failure),
    };
    match outcome {
        Ok(rows_affected) => {
            let stats = StreamStats {
                rows_affected,
                rows_returned: sink.rows_returned,
                elapsed: started.elapsed(),
            };
            // Nothing to undo if the reader left just now: the work is done.
            let _ = sender.send(Ok(StreamEvent::Finished(stats))).await;
            Ok(())
        }
        Err(failure) => {
            if failure.connection_dirty {
                abandon::<DB>(pool, conn, server_id).await;
            }
            if sink.client_gone || sender.is_closed() {
                tracing::debug!(fingerprint = %statement.fingerprint, "stream reader gone; statement cancelled");
                Ok(())
            } else {
                Err(failure.error)
            }
        }
    }
}

async fn stream_in_transaction<DB>(
    conn: &mut PoolConnection<DB>,
    statement: &Statement,
    sink: &mut FrameSink<'_>,
) -> Result<u64, Failure>
where
    DB: Codec + Dialect,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let in_sync = |err: sqlx::Error| {
        let dirty = !matches!(err, sqlx::Error::Database(_));
        Failure {
            error: err.into(),
            connection_dirty: dirty,
        }
    };
    let mut transaction = conn.begin().await.map_err(in_sync)?;
    match run_statement::<DB, _>(&mut transaction, statement, sink).await {
        Ok(rows_affected) => {
            // Every row reached the channel before the commit, so a reader
            // that leaves now has seen everything that was committed.
            sink.flush().await?;
            transaction.commit().await.map_err(in_sync)?;
            Ok(rows_affected)
        }
        Err(failure) => {
            if !failure.connection_dirty {
                transaction.rollback().await.map_err(in_sync)?;
            }
            Err(failure)
        }
    }
}

/// Cancels whatever the connection still runs on the server, then closes it.
async fn abandon<DB: Dialect>(pool: &Pool<DB>, conn: PoolConnection<DB>, server_id: Option<i64>) {
    if let Some(id) = server_id {
        DB::cancel_statement(pool, id).await;
    }
    if let Err(err) = conn.close().await {
        tracing::debug!(error = %err, "closing an abandoned connection failed");
    }
}
