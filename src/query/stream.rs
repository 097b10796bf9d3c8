//! ExecuteStream's unit of work: metadata first, rows in frames cut by count
//! and size, stats last. Frames go through a bounded channel, so a slow
//! reader holds the query back instead of growing sqlgate's memory; a reader
//! that goes away gets its statement cancelled on the server, and its
//! connection is recovered where the backend allows it (see
//! `Dialect::recover`) or closed, never returned dirty.
//!
//! A stream holds its pooled connection for as long as its reader takes,
//! so two limits keep readers from starving everyone else:
//! - streams may hold at most `limits.stream_max_pool_share` of the pool;
//!   past it a stream is refused at once (RESOURCE_EXHAUSTED, `STREAM_LIMIT`);
//! - a reader that takes no frame for `limits.stream_stall_timeout` (it
//!   grants no HTTP/2 window) has its stream ended: the statement is
//!   cancelled, the connection recovered or closed, and the caller answered
//!   RESOURCE_EXHAUSTED (`READER_STALLED`) behind the frames already queued.
//!
//! A reader's stream always runs in a read-only transaction, as its unary
//! calls do (see `engine`).

use std::{sync::Arc, time::Instant};

use tokio::sync::mpsc;

use super::{
    executor::run_statement,
    frames::{FrameSink, StreamEvent, StreamFrames, StreamStats},
    statement::Statement,
};
use crate::{
    audit::table::AuditWriter,
    config::LimitSettings,
    db::{
        self, Database, Deadline, Driver,
        transaction::{Access, Begin, Checkout, Failure, Hold},
    },
    error::Error,
    telemetry::traces::TraceSpan,
};

/// What a stream's channel carries: events, or the one error that ends it.
type Event = Result<StreamEvent, Error>;

/// One stream's work: its statement, its deadline (the whole stream),
/// what it may do to the database, and what it keeps until it is over.
#[derive(Debug)]
pub(crate) struct StreamUnit {
    /// The statement.
    pub(crate) statement: Statement,
    /// Bounds the whole stream.
    pub(crate) deadline: Deadline,
    /// Read-only for a reader.
    pub(crate) access: Access,
    /// Kept by the stream's task until it ends.
    pub(crate) hold: Hold,
    /// Records the statement in the audit table if it may write (`None`:
    /// off, or a reader).
    pub(crate) writer: Option<AuditWriter>,
    /// Why the statement must not run at all (it names the audit table).
    pub(crate) refused: Option<Error>,
}

/// Starts a stream in a task of its own and returns its events:
/// [`StreamEvent::Columns`], row batches, then [`StreamEvent::Finished`] —
/// or an error, last. A statement a call must not run, or a stream over
/// the streams' share of the pool, gets its refusal as its only event.
pub(crate) fn run_stream<DB: Driver>(
    db: Arc<Database<DB>>,
    unit: StreamUnit,
    limits: LimitSettings,
) -> mpsc::Receiver<Event> {
    let StreamUnit {
        statement,
        deadline,
        access,
        hold,
        writer,
        refused,
    } = unit;
    // One place more than the frames buffered, kept for the last event
    // (stats or the error): the answer to a reader that stalled never
    // waits for room behind the frames it did not take.
    let (sender, receiver) = mpsc::channel(limits.stream_buffer_frames.max(1) + 1);
    let admitted = statement
        .check_for_call(1)
        .and_then(|()| refused.map_or(Ok(()), Err))
        .and_then(|()| db.admit_stream(limits.stream_max_pool_share));
    let slot = match admitted {
        Ok(slot) => slot,
        Err(refused) => {
            // The channel is new and empty: this cannot wait.
            let _ = sender.try_send(Err(refused));
            return receiver;
        }
    };
    db.count_call();
    // In the statement's span (none when traces are off).
    tokio::spawn(TraceSpan::current().scope(Box::pin(async move {
        // Fails only if the reader is gone already: nothing to do then
        // (the slot and the hold are given back as the task ends).
        let Ok(last) = sender.clone().reserve_owned().await else {
            return;
        };
        let run = StreamRun {
            deadline,
            access,
            writer: writer.as_ref(),
        };
        let streamed = access.answer(stream_unit(&db, &statement, &limits, run, &sender).await);
        // The work is over and the connection given back: so are the
        // stream's place in the pool's share and the caller's place under
        // the limits — before the reader hears the end, so that its next
        // stream may start at once.
        drop(slot);
        drop(hold);
        match streamed {
            Ok(Some(stats)) => {
                last.send(Ok(StreamEvent::Finished(stats)));
            }
            // The reader left: nobody to tell.
            Ok(None) => {}
            Err(error) => {
                last.send(Err(error));
            }
        }
    })));
    receiver
}

/// What a stream's statement runs with.
struct StreamRun<'a> {
    /// Bounds the whole stream.
    deadline: Deadline,
    /// Read-only for a reader.
    access: Access,
    /// Records a write in the audit table.
    writer: Option<&'a AuditWriter>,
}

/// Runs `statement` and streams it into `sender`, all within `deadline`.
/// Returns the stats to send last, `None` when the reader left, or the
/// error to answer with.
async fn stream_unit<DB: Driver>(
    db: &Database<DB>,
    statement: &Statement,
    limits: &LimitSettings,
    run: StreamRun<'_>,
    sender: &mpsc::Sender<Event>,
) -> Result<Option<StreamStats>, Error> {
    let StreamRun {
        deadline,
        access,
        writer,
    } = run;
    let started = Instant::now();
    // The server-side id is needed to cancel a statement whose reader left.
    let mut checkout = Checkout::take(db, &deadline, true).await?;
    if statement.leaves_state() {
        checkout.note_state_change();
    }
    let transactional = !statement.is_plain_read()
        || statement.leaves_state()
        || access.is_read_only()
        || !DB::PLAIN_READS_OUTSIDE_TRANSACTION;
    let frames = StreamFrames::new(sender, limits.stream_stall_timeout);
    let mut sink = FrameSink::new(frames, limits);
    let work = async {
        if !transactional {
            let rows_affected =
                run_statement::<DB, _>(checkout.connection(), statement, &mut sink).await?;
            sink.flush().await?;
            return Ok::<_, Failure>(rows_affected);
        }
        checkout.begin(Begin::Bounded(&deadline, access)).await?;
        match run_statement::<DB, _>(checkout.connection(), statement, &mut sink).await {
            Ok(rows_affected) => {
                // Every row reached the channel before the commit.
                sink.flush().await?;
                if let Some(writer) = writer.filter(|_| statement.may_write()) {
                    checkout.stage_audit_row(&writer.row_sql(
                        &statement.sanitized_text(),
                        &statement.fingerprint,
                        (sink.rows_returned(), rows_affected),
                        started.elapsed(),
                    ));
                }
                checkout.commit().await?;
                Ok(rows_affected)
            }
            Err(failure) if failure.leaves_connection_dirty() => Err(failure),
            Err(failure) => Err(checkout.rollback_after(failure).await),
        }
    };
    match db::within(&deadline, db.drained(), work).await {
        Ok(Ok(rows_affected)) => {
            checkout.release().await;
            Ok(Some(StreamStats {
                rows_affected,
                rows_returned: sink.rows_returned(),
                elapsed: started.elapsed(),
            }))
        }
        Ok(Err(failure)) => {
            checkout.give_back_after(&failure).await;
            if sink.target().stalled() {
                db.count_stalled_stream();
                tracing::info!(
                    fingerprint = %statement.fingerprint,
                    stall = ?limits.stream_stall_timeout,
                    rows_sent = sink.rows_returned(),
                    "stream reader stalled; statement cancelled, connection given back"
                );
                return Err(Error::ReaderStalled(limits.stream_stall_timeout));
            }
            match failure.into_error() {
                Some(error) if !sink.reader_gone() && !sender.is_closed() => {
                    Err(error.after_deadline(deadline.expired()))
                }
                _ => {
                    tracing::debug!(fingerprint = %statement.fingerprint, "stream reader gone; statement cancelled");
                    Ok(None)
                }
            }
        }
        Err(cut) => {
            checkout.abandon();
            Err(cut.error())
        }
    }
}
