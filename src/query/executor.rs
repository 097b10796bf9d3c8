//! Runs one statement on one connection, generically over the backend: binds
//! the parameters, decodes rows as they arrive, and either collects them
//! within a budget (unary calls) or hands them out in frames (streams).
//!
//! Errors say whether the connection is still in a known state: a statement
//! abandoned mid-result leaves unread rows on the wire, so that connection
//! must be cancelled and closed, never returned to the pool.

use futures::TryStreamExt;
use sqlx::{Either, Row, Statement as _};

use super::{
    codec::Codec,
    statement::Statement,
    value::{ColumnInfo, SqlValue, row_wire_len},
    wire::RowWriter,
};
use crate::{
    db::{Driver, transaction::Failure},
    error::Error,
};

/// The whole result of one statement.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueryOutput {
    /// The result's columns (empty for statements that return no rows).
    pub columns: Vec<ColumnInfo>,
    /// The rows, each in column order.
    pub rows: Vec<Vec<SqlValue>>,
    /// Rows inserted, updated or deleted.
    pub rows_affected: u64,
    /// How long the statement ran on its connection (its own share of a
    /// batch, for its span and its audit event).
    pub elapsed: std::time::Duration,
}

/// How many rows and bytes a unary result may still take.
#[derive(Debug, Clone)]
pub(crate) struct ResultBudget {
    rows_left: usize,
    bytes_left: usize,
    max_rows: usize,
    max_bytes: usize,
}

impl ResultBudget {
    pub(crate) fn new(max_rows: usize, max_bytes: usize) -> Self {
        Self {
            rows_left: max_rows,
            bytes_left: max_bytes,
            max_rows,
            max_bytes,
        }
    }

    fn take(&mut self, row: &[SqlValue]) -> Result<(), Error> {
        if self.rows_left == 0 {
            return Err(Error::ResultTooLarge(format!(
                "the result has more than {} rows (max_rows); raise max_rows or use ExecuteStream",
                self.max_rows
            )));
        }
        let size = row_wire_len(row);
        if size > self.bytes_left {
            return Err(Error::ResultTooLarge(format!(
                "the result is larger than the inline limit of {} bytes; use ExecuteStream",
                self.max_bytes
            )));
        }
        self.rows_left -= 1;
        self.bytes_left -= size;
        Ok(())
    }
}

/// The columns of a result and how to decode each.
pub(crate) struct RowPlan<DB: Codec> {
    pub(crate) columns: Vec<ColumnInfo>,
    decoders: Vec<DB::Decoder>,
}

impl<DB: Codec> RowPlan<DB> {
    pub(crate) fn from_columns(columns: &[DB::Column]) -> Result<Self, Error> {
        let mut infos = Vec::with_capacity(columns.len());
        let mut decoders = Vec::with_capacity(columns.len());
        for column in columns {
            let (info, decoder) = DB::plan_column(column)?;
            infos.push(info);
            decoders.push(decoder);
        }
        Ok(Self {
            columns: infos,
            decoders,
        })
    }

    pub(crate) fn decode_row(&self, row: &DB::Row) -> Result<Vec<SqlValue>, Error> {
        // Sized up front: collecting a fallible iterator starts small and
        // grows, a reallocation per row.
        let mut values = Vec::with_capacity(self.columns.len());
        for (index, (decoder, column)) in self.decoders.iter().zip(&self.columns).enumerate() {
            values.push(DB::decode(row, index, *decoder, column)?);
        }
        Ok(values)
    }

    /// Writes `row` into `out` (cleared first) in its wire form, each
    /// value straight from the driver's row where the backend can.
    pub(crate) fn encode_row(&self, row: &DB::Row, out: &mut RowWriter) -> Result<(), Error> {
        out.clear();
        for (index, (decoder, column)) in self.decoders.iter().zip(&self.columns).enumerate() {
            DB::encode_value(row, index, *decoder, column, out)?;
        }
        Ok(())
    }
}

/// What [`run_statement`] hands each row to.
pub(crate) trait RowSink<DB: Codec> {
    /// Called once, before the first row (or at the end when there are none).
    async fn columns(&mut self, columns: &[ColumnInfo]) -> Result<(), Failure>;
    /// Called per row, with the plan that reads it.
    async fn row(&mut self, plan: &RowPlan<DB>, row: &DB::Row) -> Result<(), Failure>;
    /// Resolves when the consumer is gone; runs beside the wait for the next row.
    async fn consumer_gone(&self);
}

/// Runs `statement` on `conn`, feeding `sink`; returns rows affected.
pub(crate) async fn run_statement<DB, S>(
    conn: &mut DB::Connection,
    statement: &Statement,
    sink: &mut S,
) -> Result<u64, Failure>
where
    DB: Driver,
    S: RowSink<DB>,
{
    let expected = statement.expected_parameters();
    if DB::CHECK_PARAMETER_COUNT && expected != statement.params.len() {
        return Err(Failure::Clean(Error::invalid_request(
            "params",
            format!(
                "the statement takes {expected} parameters; {} were given",
                statement.params.len()
            ),
        )));
    }
    let args = DB::encode_params(&statement.params).map_err(Failure::Clean)?;
    let text = DB::statement_text(&statement.sql, &statement.params);
    let mut plan: Option<RowPlan<DB>> = None;
    let mut rows_affected = 0;
    {
        let mut results = DB::fetch_many(conn, text.clone(), args);
        loop {
            // The next row first: while rows are ready, the consumer's
            // watch is never polled (registering and dropping its waiter
            // per row was a tenth of a streamed row's work), and a reader
            // that left is seen at the next frame anyway.
            let next = tokio::select! {
                biased;
                next = results.try_next() => next.map_err(Failure::from_driver)?,
                () = sink.consumer_gone() => return Err(Failure::ReaderGone),
            };
            let Some(item) = next else { break };
            match item {
                Either::Left(done) => rows_affected += DB::rows_affected(&done),
                Either::Right(row) => {
                    if plan.is_none() {
                        let new_plan =
                            RowPlan::<DB>::from_columns(row.columns()).map_err(Failure::Dirty)?;
                        sink.columns(&new_plan.columns).await?;
                        plan = Some(new_plan);
                    }
                    if let Some(plan) = &plan {
                        sink.row(plan, &row).await?;
                    }
                }
            }
        }
    }
    if plan.is_none() {
        // No rows: describe the statement for its columns. sqlx caches
        // prepared statements by text, so this is usually free.
        let described = DB::prepare(conn, text)
            .await
            .map_err(Failure::from_driver)?;
        let plan = RowPlan::<DB>::from_columns(described.columns()).map_err(Failure::Clean)?;
        sink.columns(&plan.columns).await?;
    }
    // Drivers report a SELECT's row count (PostgreSQL) or the previous
    // statement's changes (SQLite) here; a read affects no rows.
    Ok(if statement.is_plain_read() {
        0
    } else {
        rows_affected
    })
}

/// Collects a whole result within a budget, for unary calls.
pub(crate) struct Collector<'a> {
    pub(crate) output: QueryOutput,
    pub(crate) budget: &'a mut ResultBudget,
}

impl<DB: Codec> RowSink<DB> for Collector<'_> {
    async fn columns(&mut self, columns: &[ColumnInfo]) -> Result<(), Failure> {
        self.output.columns = columns.to_vec();
        Ok(())
    }

    async fn row(&mut self, plan: &RowPlan<DB>, row: &DB::Row) -> Result<(), Failure> {
        let row = plan.decode_row(row).map_err(Failure::Dirty)?;
        self.budget.take(&row).map_err(Failure::Dirty)?;
        self.output.rows.push(row);
        Ok(())
    }

    async fn consumer_gone(&self) {
        // The unary caller's answer is produced by a task that outlives it.
        std::future::pending::<()>().await
    }
}

/// Runs `statement` and collects its result.
pub(crate) async fn collect<DB>(
    conn: &mut DB::Connection,
    statement: &Statement,
    budget: &mut ResultBudget,
) -> Result<QueryOutput, Failure>
where
    DB: Driver,
{
    let started = std::time::Instant::now();
    let mut collector = Collector {
        output: QueryOutput::default(),
        budget,
    };
    let rows_affected = Box::pin(run_statement::<DB, _>(conn, statement, &mut collector)).await?;
    collector.output.rows_affected = rows_affected;
    collector.output.elapsed = started.elapsed();
    Ok(collector.output)
}
