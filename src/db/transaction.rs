//! The one way sqlgate holds a connection for work: [`Checkout`]. Unary
//! calls, batches, streams and sessions all take one, open and end their
//! transactions through it, and give it back through it — released clean
//! to the pool, or abandoned (the statement cancelled on the server, the
//! connection recovered or closed), never returned in an unknown state.

use std::{any::Any, sync::Arc};

use sqlx::{Pool, pool::PoolConnection};

use super::{CLEANUP_TIMEOUT, Database, Deadline, Driver, Interrupt, Isolation};
use crate::{
    error::{DeadlinePhase, Error},
    telemetry::counts::{self, CloseCause},
};

/// Why database work did not finish, and what it left the connection in.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The database refused, or the request was wrong: the connection is
    /// in a known state and may go back to the pool.
    Clean(Error),
    /// The connection's state is unknown (rows still in flight, protocol
    /// out of step): it must be cancelled, then recovered or closed.
    Dirty(Error),
    /// The reader of the result went away mid-result: the statement must
    /// be stopped, and there is nobody left to tell.
    ReaderGone,
    /// The connection itself can no longer be trusted (the protocol is out
    /// of step, or the prepared statements sqlx cached on it are gone): it
    /// is closed, never recovered.
    Broken(Error),
}

impl Failure {
    /// A driver error: the protocol stays in step only when the database
    /// itself reported the error, and the connection stays usable only if
    /// that error is not "your cached prepared statement is gone".
    pub(crate) fn from_driver(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::Database(db) if lost_prepared_statement(db.as_ref()) => {
                Self::Broken(err.into())
            }
            sqlx::Error::Database(_) => Self::Clean(err.into()),
            _ => Self::Broken(err.into()),
        }
    }

    /// True when the connection must be closed rather than recovered.
    pub(crate) fn breaks_connection(&self) -> bool {
        matches!(self, Self::Broken(_))
    }

    /// True unless the connection is known to be clean.
    pub(crate) fn leaves_connection_dirty(&self) -> bool {
        !matches!(self, Self::Clean(_))
    }

    /// The error to answer with; `None` when the reader is gone.
    pub(crate) fn into_error(self) -> Option<Error> {
        match self {
            Self::Clean(error) | Self::Dirty(error) | Self::Broken(error) => Some(error),
            Self::ReaderGone => None,
        }
    }

    /// The same failure with its error rewritten (e.g. naming the batch
    /// statement that failed).
    pub(crate) fn map_error(self, rewrite: impl FnOnce(Error) -> Error) -> Self {
        match self {
            Self::Clean(error) => Self::Clean(rewrite(error)),
            Self::Dirty(error) => Self::Dirty(rewrite(error)),
            Self::Broken(error) => Self::Broken(rewrite(error)),
            Self::ReaderGone => Self::ReaderGone,
        }
    }

    /// The same failure, now known to leave the connection dirty.
    fn dirty(self) -> Self {
        match self {
            Self::Clean(error) => Self::Dirty(error),
            other => other,
        }
    }
}

/// A statement sqlx had prepared and cached on this connection no longer
/// exists on the server (a caller's `DEALLOCATE ALL` reached it): every
/// later cached statement on the connection would fail the same way.
fn lost_prepared_statement(error: &dyn sqlx::error::DatabaseError) -> bool {
    // PostgreSQL invalid_sql_statement_name; MySQL ER_UNKNOWN_STMT_HANDLER.
    error.code().as_deref() == Some("26000")
        || error
            .message()
            .contains("Unknown prepared statement handler")
}

/// A transaction-control statement (BEGIN, COMMIT, a setting) that failed,
/// and whether it left the connection's state unknown. Unlike a statement's
/// [`Failure`] it has no reader that could have left.
#[derive(Debug)]
pub(crate) struct ControlFailure {
    /// What the database (or the driver) said.
    pub(crate) error: Error,
    /// The protocol may be out of step: cancel, then recover or close.
    pub(crate) dirty: bool,
}

impl From<sqlx::Error> for ControlFailure {
    fn from(err: sqlx::Error) -> Self {
        Self {
            dirty: !matches!(err, sqlx::Error::Database(_)),
            error: err.into(),
        }
    }
}

impl From<ControlFailure> for Failure {
    fn from(failure: ControlFailure) -> Self {
        if failure.dirty {
            Self::Dirty(failure.error)
        } else {
            Self::Clean(failure.error)
        }
    }
}

/// What a unit of work may do to the database, from its caller's role.
/// Read-only is the database's own: a read-only transaction (and, on
/// MySQL and SQLite, a read-only connection until the work ends), so that
/// no spelling of a write gets through — never a guess from the SQL text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Reads and writes (writers, admins).
    ReadWrite,
    /// Reads only (readers): every statement runs in a read-only
    /// transaction, plain reads included.
    ReadOnly,
}

impl Access {
    /// Read-only when `read_only` (the caller's role only reads).
    pub(crate) fn read_only_if(read_only: bool) -> Self {
        if read_only {
            Access::ReadOnly
        } else {
            Access::ReadWrite
        }
    }

    /// Whether the database must refuse writes.
    pub(crate) fn is_read_only(self) -> bool {
        self == Access::ReadOnly
    }

    /// `error` as the caller hears it: for a reader, the database's
    /// refusal to write is its role's doing ([`Error::for_reader`]).
    pub(crate) fn error(self, error: Error) -> Error {
        match self {
            Access::ReadOnly => error.for_reader(),
            Access::ReadWrite => error,
        }
    }

    /// `outcome` as the caller hears it (see [`Access::error`]).
    pub(crate) fn answer<T>(self, outcome: Result<T, Error>) -> Result<T, Error> {
        outcome.map_err(|error| self.error(error))
    }
}

/// What a call keeps alive for as long as its work runs — its place under
/// the per-caller and overall limits — moved into the task that does the
/// work, so that a caller that goes away mid-call does not give its place
/// back while the database still works for it. Opaque here: the limits
/// are the gRPC layer's.
#[derive(Default)]
pub(crate) struct Hold(Option<Arc<dyn Any + Send + Sync>>);

impl Hold {
    /// Holds `held` until this hold is dropped.
    pub(crate) fn new(held: Arc<dyn Any + Send + Sync>) -> Self {
        Self(Some(held))
    }
}

impl std::fmt::Debug for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Hold"
        } else {
            "Hold(none)"
        })
    }
}

/// How a transaction is opened.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Begin<'a> {
    /// A call's transaction: its statements stop on the server when the
    /// deadline passes; read-only for a reader.
    Bounded(&'a Deadline, Access),
    /// A session's transaction, as the client asked for it.
    Session {
        /// The isolation level.
        isolation: Isolation,
        /// Whether it may write.
        read_only: bool,
    },
}

/// Stops a connection's running statement from outside: cancels its
/// in-process interrupt (SQLite) and, with the server id, asks the server
/// over the control pool. Cloned out of a [`Checkout`] so that it can be
/// used while the statement holds the connection.
#[derive(Debug)]
pub(crate) struct Canceller<DB: Driver> {
    control: Option<Pool<DB>>,
    server_id: Option<i64>,
    interrupt: Arc<Interrupt>,
}

impl<DB: Driver> Clone for Canceller<DB> {
    fn clone(&self) -> Self {
        Self {
            control: self.control.clone(),
            server_id: self.server_id,
            interrupt: self.interrupt.clone(),
        }
    }
}

impl<DB: Driver> Canceller<DB> {
    /// Asks the server to cancel the statement; `stop_in_process` also
    /// stops an in-process statement and anything after it on this
    /// connection. True if a cancel reached the server.
    pub(crate) async fn cancel(&self, stop_in_process: bool) -> bool {
        if stop_in_process {
            self.interrupt.cancel();
        }
        match (&self.control, self.server_id) {
            (Some(control), Some(id)) => DB::cancel_statement(control, id).await,
            _ => false,
        }
    }
}

/// A pooled connection checked out for one unit of work (a call or a
/// session), armed for cancelling, and what is needed to give it back.
#[derive(Debug)]
pub(crate) struct Checkout<DB: Driver> {
    conn: PoolConnection<DB>,
    canceller: Canceller<DB>,
    /// sqlgate opened a transaction that has not ended yet.
    in_transaction: bool,
    /// The transaction was opened read-only and the backend's
    /// connection-level part of that (`Dialect::READ_ONLY_UNDO`) is not
    /// undone yet: it is, with the COMMIT or on release.
    read_only: bool,
    /// A statement may have changed connection state that outlives it:
    /// reset (or close) before the connection goes back to the pool.
    state_changed: bool,
    /// How this backend undoes connection state (`None`: it cannot, and
    /// a changed connection is closed).
    reset: Option<Arc<str>>,
    /// Audit-table INSERTs (each ending in `; `) staged by the open
    /// transaction's writes: sent ahead of its COMMIT, in the same round
    /// trip, and forgotten when it rolls back.
    audit_rows: String,
}

impl<DB: Driver> Checkout<DB> {
    /// Takes a connection within `deadline` and arms it for cancelling.
    /// `want_server_id` fetches the server-side id where that costs a round
    /// trip (see `TimeoutMemory`).
    pub(crate) async fn take(
        db: &Database<DB>,
        deadline: &Deadline,
        want_server_id: bool,
    ) -> Result<Self, Error> {
        let mut conn = db.acquire_within(deadline).await?;
        let interrupt = Interrupt::new(deadline);
        let armed = tokio::time::timeout_at(
            deadline.instant(),
            DB::arm(&mut conn, &interrupt, want_server_id),
        )
        .await;
        let canceller = Canceller {
            control: db.control().cloned(),
            server_id: None,
            interrupt,
        };
        let mut checkout = Self {
            conn,
            canceller,
            in_transaction: false,
            read_only: false,
            state_changed: false,
            reset: db.reset_sql(),
            audit_rows: String::new(),
        };
        match armed {
            Ok(Ok(server_id)) => {
                checkout.canceller.server_id = server_id;
                Ok(checkout)
            }
            Ok(Err(err)) => {
                checkout.abandon();
                Err(err.into())
            }
            Err(_) => {
                checkout.abandon();
                Err(Error::DeadlineExceeded(DeadlinePhase::Database))
            }
        }
    }

    /// The connection, to run statements on.
    pub(crate) fn connection(&mut self) -> &mut DB::Connection {
        &mut self.conn
    }

    /// The connection, to ask about.
    pub(crate) fn connection_ref(&self) -> &DB::Connection {
        &self.conn
    }

    /// What stops this connection's statements from outside.
    pub(crate) fn canceller(&self) -> Canceller<DB> {
        self.canceller.clone()
    }

    /// Whether the connection's server-side id is known, so that a
    /// statement running on it can be cancelled by id; without it, only
    /// closing the connection stops one on a server.
    pub(crate) fn knows_server_id(&self) -> bool {
        self.canceller.server_id.is_some()
    }

    /// Notes that a statement about to run may change connection state
    /// that outlives it (see `Statement::leaves_state`); from then on the
    /// connection is reset or closed before anyone else gets it.
    pub(crate) fn note_state_change(&mut self) {
        self.state_changed = true;
    }

    /// Whether the connection is still inside the transaction sqlgate
    /// began, asked of the database itself; `None` where the backend has
    /// no cheap way to tell. A statement sqlgate could not recognise may
    /// have ended it (a procedure's COMMIT).
    pub(crate) async fn still_in_transaction(&mut self) -> Option<bool> {
        let probe = DB::IN_TRANSACTION_PROBE?;
        Some(
            DB::returns_a_row(&mut self.conn, probe)
                .await
                .unwrap_or(false),
        )
    }

    /// Moves the in-process deadline (each statement of a session has its own).
    pub(crate) fn set_deadline(&self, deadline: &Deadline) {
        self.canceller.interrupt.set_deadline(deadline);
    }

    /// Opens a transaction.
    pub(crate) async fn begin(&mut self, how: Begin<'_>) -> Result<(), ControlFailure> {
        // Counted as open from the first byte sent: a BEGIN cut short may
        // have reached the server.
        self.in_transaction = true;
        match how {
            Begin::Bounded(deadline, access) => {
                self.read_only = access.is_read_only();
                self.raw(DB::begin_sql(deadline, access.is_read_only()))
                    .await
            }
            Begin::Session {
                isolation,
                read_only,
            } => {
                self.read_only = read_only;
                // A session can be cancelled by id whatever it runs: learn
                // the id with the BEGIN where [`Checkout::take`] did not.
                let want_server_id = self.canceller.server_id.is_none();
                let sql = DB::session_begin(isolation, read_only);
                if let Some(id) = DB::open_session(&mut self.conn, sql, want_server_id).await? {
                    self.canceller.server_id = Some(id);
                }
                Ok(())
            }
        }
    }

    /// Opens a transaction within `deadline`, for work that has nothing to
    /// do until it is open (a session). On failure the connection is closed
    /// — a BEGIN cut short leaves its state unknown — and the error returned.
    pub(crate) async fn begin_within(
        mut self,
        deadline: &Deadline,
        how: Begin<'_>,
    ) -> Result<Self, Error> {
        let failure = match tokio::time::timeout_at(deadline.instant(), self.begin(how)).await {
            Ok(Ok(())) => return Ok(self),
            Ok(Err(failure)) => failure.error,
            Err(_) => Error::DeadlineExceeded(DeadlinePhase::Database),
        };
        self.close_for(CloseCause::Broken);
        Err(failure)
    }

    /// Stages the audit-table INSERT of a write of the open transaction:
    /// it reaches the database with the COMMIT, so that the write and its
    /// audit row commit together or not at all.
    pub(crate) fn stage_audit_row(&mut self, insert: &str) {
        self.audit_rows.push_str(insert);
        self.audit_rows.push_str("; ");
    }

    /// Runs an audit-table INSERT at once, outside any transaction: for
    /// a statement the database runs only outside one (VACUUM, CREATE
    /// DATABASE), which has no transaction to share.
    pub(crate) async fn insert_audit_row_now(&mut self, insert: &str) -> Result<(), Failure> {
        Ok(self.raw(insert.to_owned()).await?)
    }

    /// Commits the open transaction — after the audit rows its writes
    /// staged, which run first in the same round trip (if one fails, the
    /// COMMIT does not run, and the transaction is rolled back) — and
    /// undoes a read-only connection state in the same round trip too (a
    /// failed COMMIT stops there: the release undoes it then).
    pub(crate) async fn commit(&mut self) -> Result<(), ControlFailure> {
        let undo = DB::READ_ONLY_UNDO.filter(|_| self.read_only);
        let mut sql = std::mem::take(&mut self.audit_rows);
        sql.push_str("COMMIT");
        if let Some(undo) = undo {
            sql.push_str("; ");
            sql.push_str(undo);
        }
        self.raw(sql).await?;
        if undo.is_some() {
            self.read_only = false;
        }
        self.in_transaction = false;
        Ok(())
    }

    /// Rolls the open transaction back, within [`CLEANUP_TIMEOUT`]; true
    /// when it did. A rollback that fails or hangs leaves the connection in
    /// an unknown state: it must not go back to the pool.
    pub(crate) async fn rollback(&mut self) -> bool {
        // The writes these recorded are undone: so are their records.
        self.audit_rows.clear();
        let rolled_back = matches!(
            tokio::time::timeout(CLEANUP_TIMEOUT, self.raw("ROLLBACK".to_owned())).await,
            Ok(Ok(()))
        );
        if rolled_back {
            self.in_transaction = false;
        }
        rolled_back
    }

    /// Rolls back after `failure`. If the rollback itself fails (SQLite may
    /// have rolled back already when a statement was interrupted; the
    /// connection may be gone), the connection's state is unknown: the
    /// original error stands and the connection is marked dirty.
    pub(crate) async fn rollback_after(&mut self, failure: Failure) -> Failure {
        if self.rollback().await {
            failure
        } else {
            failure.dirty()
        }
    }

    /// Runs transaction control or setting text.
    async fn raw(&mut self, sql: String) -> Result<(), ControlFailure> {
        Ok(DB::raw(&mut self.conn, sql).await?)
    }

    /// Gives a clean connection back to the pool, undoing what the session
    /// set and whatever connection state a statement may have changed;
    /// closes it if that fails. A transaction still open (a COMMIT the
    /// database refused but kept open) is rolled back first.
    pub(crate) async fn release(mut self) {
        if self.in_transaction && !self.rollback().await {
            self.close();
            return;
        }
        if self.state_changed && !self.reset_state().await {
            self.close();
            return;
        }
        if let Some(undo) = DB::READ_ONLY_UNDO.filter(|_| self.read_only)
            && self.raw(undo.to_owned()).await.is_err()
        {
            self.close();
            return;
        }
        DB::disarm(&mut self.conn).await;
    }

    /// Undoes connection state a caller may have changed, and checks that
    /// the prepared statements sqlx cached are all still there. False when
    /// the backend cannot reset, or the reset fails: close the connection.
    async fn reset_state(&mut self) -> bool {
        let Some(reset) = self.reset.clone() else {
            return false;
        };
        let mut sql = reset.to_string();
        if let Some(verify) =
            DB::verify_prepared_sql(sqlx::Connection::cached_statements_size(&*self.conn))
        {
            sql.push_str(&verify);
        }
        if sql.is_empty() {
            return true;
        }
        matches!(
            tokio::time::timeout(CLEANUP_TIMEOUT, self.raw(sql)).await,
            Ok(Ok(()))
        )
    }

    /// Gives back a connection after `failure`: clean ones are released
    /// (reset first if a statement may have changed their state); broken
    /// ones are closed; the rest are abandoned (cancelled, then recovered —
    /// or closed, if a statement may have changed their state).
    pub(crate) async fn give_back_after(self, failure: &Failure) {
        if failure.breaks_connection() {
            self.close_for(CloseCause::Broken);
        } else if failure.leaves_connection_dirty() {
            self.abandon();
        } else {
            self.release().await;
        }
    }

    /// Gives back a connection whose state is unknown: the statement is
    /// stopped (interrupt, then a cancel on the server), and the connection
    /// goes back to the pool once [`super::Dialect::recover`]ed, or is
    /// closed. Runs detached, so that the caller is answered first.
    pub(crate) fn abandon(self) {
        tokio::spawn(async move {
            let Self {
                mut conn,
                canceller,
                in_transaction,
                state_changed,
                ..
            } = self;
            // A connection whose state a statement may have changed is not
            // recovered: closing is its reset.
            if canceller.cancel(true).await
                && !state_changed
                && DB::recover(&mut conn, in_transaction).await
            {
                return;
            }
            // Dropping the socket closes it at once; a graceful close would
            // first wait for the statement's pending output. The server
            // notices and rolls back (PostgreSQL also stops the statement:
            // client_connection_check_interval).
            counts::connection_closed(CloseCause::Abandoned);
            drop(conn.detach());
        });
    }

    /// Closes the connection at once, after a rollback or reset that
    /// failed: the server rolls back whatever it still holds.
    pub(crate) fn close(self) {
        self.close_for(CloseCause::ResetFailed);
    }

    /// [`Self::close`], counted under `cause`.
    pub(crate) fn close_for(self, cause: CloseCause) {
        counts::connection_closed(cause);
        drop(self.conn.detach());
    }

    /// Cancels whatever still runs on the server, then closes the
    /// connection: for a session whose cancelled statement did not come
    /// back in time. Runs detached (the cancel is bounded by its own
    /// timeout): on a dead path the cancel hangs too, and the session's
    /// client is answered without waiting for it. The connection is never
    /// handed to anyone else.
    pub(crate) fn discard(self) {
        tokio::spawn(async move {
            self.canceller.cancel(false).await;
            self.close_for(CloseCause::Discarded);
        });
    }
}
