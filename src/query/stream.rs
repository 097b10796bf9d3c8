//! ExecuteStream's unit of work: metadata first, rows in frames cut by count
//! and size, stats last. Frames go through a bounded channel, so a slow
//! reader holds the query back instead of growing sqlgate's memory; a reader
//! that goes away gets its statement cancelled on the server, and its
//! connection is recovered where the backend allows it (see
//! `Dialect::recover`) or closed, never returned dirty.

use std::time::Instant;

use tokio::sync::mpsc;

use super::{
    executor::run_statement,
    frames::{FrameSink, StreamEvent, StreamStats},
    statement::Statement,
};
use crate::{
    config::LimitSettings,
    db::{
        self, Database, Deadline, Driver,
        transaction::{Begin, Checkout, Failure},
    },
    error::Error,
};

type Sender = mpsc::Sender<Result<StreamEvent, Error>>;

/// Runs `statement` and streams it into `sender`, all within `deadline`.
/// Errors are returned for the caller to send.
pub(crate) async fn run_stream<DB: Driver>(
    db: &Database<DB>,
    statement: &Statement,
    limits: &LimitSettings,
    deadline: Deadline,
    sender: &Sender,
) -> Result<(), Error> {
    let started = Instant::now();
    // The server-side id is needed to cancel a statement whose reader left.
    let mut checkout = Checkout::take(db, &deadline, true).await?;
    if statement.leaves_state() {
        checkout.note_state_change();
    }
    let transactional = !statement.is_plain_read()
        || statement.leaves_state()
        || !DB::PLAIN_READS_OUTSIDE_TRANSACTION;
    let mut sink = FrameSink::new(sender, limits);
    let work = async {
        if !transactional {
            let rows_affected =
                run_statement::<DB, _>(checkout.connection(), statement, &mut sink).await?;
            sink.flush().await?;
            return Ok::<_, Failure>(rows_affected);
        }
        checkout.begin(Begin::Bounded(&deadline)).await?;
        match run_statement::<DB, _>(checkout.connection(), statement, &mut sink).await {
            Ok(rows_affected) => {
                // Every row reached the channel before the commit.
                sink.flush().await?;
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
            let stats = StreamStats {
                rows_affected,
                rows_returned: sink.rows_returned(),
                elapsed: started.elapsed(),
            };
            // Nothing to undo if the reader left just now: the work is done.
            let _ = sender.send(Ok(StreamEvent::Finished(stats))).await;
            Ok(())
        }
        Ok(Err(failure)) => {
            checkout.give_back_after(&failure).await;
            match failure.into_error() {
                Some(error) if !sink.reader_gone() && !sender.is_closed() => {
                    Err(error.after_deadline(deadline.expired()))
                }
                _ => {
                    tracing::debug!(fingerprint = %statement.fingerprint, "stream reader gone; statement cancelled");
                    Ok(())
                }
            }
        }
        Err(cut) => {
            checkout.abandon();
            Err(cut.error())
        }
    }
}
