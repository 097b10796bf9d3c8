//! A streamed result's events, and cutting a statement's rows into them,
//! for ExecuteStream and session results: by row count and by encoded
//! size, so that no frame passes the configured limit (a single larger row
//! travels alone).
//!
//! ExecuteStream's frames go into a bounded channel that the transport
//! drains as the client grants HTTP/2 window; a send that waits longer than
//! the stall time means the reader takes nothing ([`StreamFrames`]).

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use tokio::sync::mpsc;

use super::{
    codec::Codec,
    executor::{RowPlan, RowSink},
    value::ColumnInfo,
    wire::{EncodedRows, RowWriter},
};
use crate::{config::LimitSettings, db::transaction::Failure, error::Error};

/// One event of a streamed result.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// The result's columns; always first.
    Columns(Vec<ColumnInfo>),
    /// A batch of rows, in their wire form.
    Rows(EncodedRows),
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

/// Cuts a stream of rows into frames by count and encoded size.
/// Shared by ExecuteStream and session results.
#[derive(Debug)]
struct FrameBatcher {
    /// The rows of the next frame, already in their wire form.
    pending: EncodedRows,
    rows_returned: u64,
    max_rows: usize,
    /// The bytes the rows of one frame may take: the frame's limit less the
    /// `ResultFrame` field around them.
    max_row_bytes: usize,
}

impl FrameBatcher {
    /// Frames of at most `limits.stream_batch_rows` rows, each a
    /// `ResultFrame` of at most `limits.stream_batch_bytes` encoded bytes,
    /// except that a single row larger than that travels alone.
    fn new(limits: &LimitSettings) -> Self {
        let max_bytes = limits.stream_batch_bytes;
        // `ResultFrame.rows` (field 2): a one-byte key and the batch's length.
        let frame_overhead = 1 + prost::encoding::encoded_len_varint(max_bytes as u64);
        Self {
            pending: EncodedRows::default(),
            rows_returned: 0,
            max_rows: limits.stream_batch_rows.max(1),
            max_row_bytes: max_bytes.saturating_sub(frame_overhead),
        }
    }

    /// The pending rows, when a row of `size` bytes would not fit beside them.
    fn make_room(&mut self, size: usize) -> Option<EncodedRows> {
        if !self.pending.is_empty() && self.pending.byte_len() + size > self.max_row_bytes {
            self.take()
        } else {
            None
        }
    }

    /// Adds a row (after [`FrameBatcher::make_room`]); returns a full
    /// frame's rows when one is ready to send.
    fn push(&mut self, row: &RowWriter) -> Option<EncodedRows> {
        self.pending.push(row);
        self.rows_returned += 1;
        if self.pending.len() >= self.max_rows || self.pending.byte_len() >= self.max_row_bytes {
            self.take()
        } else {
            None
        }
    }

    /// The rows not sent yet, if any.
    fn take(&mut self) -> Option<EncodedRows> {
        if self.pending.is_empty() {
            return None;
        }
        // The next frame will likely be as long as this one; an eighth
        // more spares it a reallocation (a copy of the whole frame) when
        // its rows come out a little longer. A frame larger than the
        // limit (one large row travels alone) does not make every later
        // frame reserve as much: at most twice the limit is reserved.
        let bytes = self.pending.byte_len();
        let capacity = (bytes + bytes / 8).min(self.max_row_bytes.saturating_mul(2));
        Some(std::mem::replace(
            &mut self.pending,
            EncodedRows::with_capacity(capacity),
        ))
    }

    /// Rows seen so far.
    fn rows_returned(&self) -> u64 {
        self.rows_returned
    }
}

/// Where a [`FrameSink`]'s frames go: ExecuteStream's channel, or a
/// session's stream (with the request id).
pub(crate) trait FrameTarget {
    /// Sends one event; false when the reader is gone.
    async fn deliver(&self, event: StreamEvent) -> bool;
    /// Resolves when the reader is gone and the statement should stop.
    async fn gone(&self);
}

/// ExecuteStream's frames: the bounded channel the transport drains.
///
/// The transport takes a frame only when the client has granted HTTP/2
/// flow-control window for it, so a send that waits for room longer than
/// `stall` means the reader has taken nothing for that long: the frame is
/// refused as if the reader were gone, and [`StreamFrames::stalled`] says
/// why, so that the stream ends (statement cancelled, connection given
/// back) instead of holding a pooled connection until its deadline.
pub(crate) struct StreamFrames<'a> {
    sender: &'a mpsc::Sender<Result<StreamEvent, Error>>,
    stall: Duration,
    stalled: AtomicBool,
}

impl<'a> StreamFrames<'a> {
    /// Frames into `sender`; a reader that takes none for `stall` is cut off.
    pub(crate) fn new(
        sender: &'a mpsc::Sender<Result<StreamEvent, Error>>,
        stall: Duration,
    ) -> Self {
        Self {
            sender,
            stall,
            stalled: AtomicBool::new(false),
        }
    }

    /// True once a frame waited `stall` for room and was given up.
    pub(crate) fn stalled(&self) -> bool {
        self.stalled.load(Ordering::Relaxed)
    }
}

impl FrameTarget for StreamFrames<'_> {
    async fn deliver(&self, event: StreamEvent) -> bool {
        let event = match self.sender.try_send(Ok(event)) {
            Ok(()) => return true,
            Err(mpsc::error::TrySendError::Closed(_)) => return false,
            Err(mpsc::error::TrySendError::Full(event)) => event,
        };
        match tokio::time::timeout(self.stall, self.sender.send(event)).await {
            Ok(sent) => sent.is_ok(),
            Err(_) => {
                self.stalled.store(true, Ordering::Relaxed);
                false
            }
        }
    }

    async fn gone(&self) {
        self.sender.closed().await;
    }
}

/// Cuts a statement's rows into frames and sends them to a [`FrameTarget`].
pub(crate) struct FrameSink<T> {
    target: T,
    batcher: FrameBatcher,
    /// The row being encoded; its buffers serve every row.
    row: RowWriter,
    /// The target refused a frame: its reader is gone.
    reader_gone: bool,
}

impl<T: FrameTarget> FrameSink<T> {
    /// A sink cutting frames per `limits`.
    pub(crate) fn new(target: T, limits: &LimitSettings) -> Self {
        Self {
            target,
            batcher: FrameBatcher::new(limits),
            row: RowWriter::default(),
            reader_gone: false,
        }
    }

    /// True once the target refused a frame.
    pub(crate) fn reader_gone(&self) -> bool {
        self.reader_gone
    }

    /// Rows sent (or pending) so far.
    pub(crate) fn rows_returned(&self) -> u64 {
        self.batcher.rows_returned()
    }

    /// Where the frames go.
    pub(crate) fn target(&self) -> &T {
        &self.target
    }

    async fn send(&mut self, event: StreamEvent) -> Result<(), Failure> {
        if !self.target.deliver(event).await {
            self.reader_gone = true;
            return Err(Failure::ReaderGone);
        }
        Ok(())
    }

    /// Sends the rows not sent yet.
    pub(crate) async fn flush(&mut self) -> Result<(), Failure> {
        match self.batcher.take() {
            Some(rows) => self.send(StreamEvent::Rows(rows)).await,
            None => Ok(()),
        }
    }
}

impl<DB: Codec, T: FrameTarget> RowSink<DB> for FrameSink<T> {
    async fn columns(&mut self, columns: &[ColumnInfo]) -> Result<(), Failure> {
        self.send(StreamEvent::Columns(columns.to_vec())).await
    }

    async fn row(&mut self, plan: &RowPlan<DB>, row: &DB::Row) -> Result<(), Failure> {
        plan.encode_row(row, &mut self.row)
            .map_err(Failure::Dirty)?;
        if let Some(rows) = self.batcher.make_room(self.row.framed_len()) {
            self.send(StreamEvent::Rows(rows)).await?;
        }
        match self.batcher.push(&self.row) {
            Some(rows) => self.send(StreamEvent::Rows(rows)).await,
            None => Ok(()),
        }
    }

    async fn consumer_gone(&self) {
        self.target.gone().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns() -> StreamEvent {
        StreamEvent::Columns(Vec::new())
    }

    #[tokio::test]
    async fn a_reader_that_takes_nothing_for_the_stall_time_is_cut_off() {
        let stall = Duration::from_millis(100);
        let (sender, _receiver) = mpsc::channel(1);
        let frames = StreamFrames::new(&sender, stall);
        assert!(frames.deliver(columns()).await, "room for one frame");
        let started = std::time::Instant::now();
        assert!(!frames.deliver(columns()).await, "no room, nobody reading");
        assert!(frames.stalled());
        assert!(started.elapsed() >= stall, "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_slow_reader_that_keeps_reading_is_not_cut_off() {
        let stall = Duration::from_millis(200);
        let (sender, mut receiver) = mpsc::channel(1);
        let reader = tokio::spawn(async move {
            let mut taken = 0;
            while receiver.recv().await.is_some() {
                taken += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            taken
        });
        {
            let frames = StreamFrames::new(&sender, stall);
            for _ in 0..8 {
                assert!(frames.deliver(columns()).await);
            }
            assert!(!frames.stalled());
        }
        drop(sender);
        assert_eq!(reader.await.expect("reader"), 8);
    }

    #[tokio::test]
    async fn a_reader_gone_is_not_a_stall() {
        let (sender, receiver) = mpsc::channel(1);
        drop(receiver);
        let frames = StreamFrames::new(&sender, Duration::from_secs(60));
        assert!(!frames.deliver(columns()).await);
        assert!(!frames.stalled());
    }
}
