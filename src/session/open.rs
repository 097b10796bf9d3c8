//! [`Session`]: one open session — its connection (a [`Checkout`] inside
//! the session's transaction), its place in the registry, and where it
//! answers. It runs statements one at a time and ends through one
//! [`Session::end`], whatever the reason: cancel what runs, commit or roll
//! back, give the connection back clean or close it, count the reason, and
//! tell the client.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use super::{
    BeginOptions, SessionEvent, SessionManager,
    client::ClientLink,
    registry::{EndReason, SessionEntry, SessionGuard},
};
use tonic::Code;

use crate::{
    audit::{
        StatementRecord,
        table::{AuditWriter, check_statement},
    },
    db::{
        CLEANUP_TIMEOUT, Deadline, Driver, Isolation, cacheable,
        transaction::{Access, Begin, Checkout, Failure},
    },
    error::{DeadlinePhase, Error},
    query::{
        Statement, StreamEvent, StreamStats,
        executor::run_statement,
        frames::{FrameSink, FrameTarget},
    },
    query::{fingerprint::fingerprint, operation::operation_name},
    telemetry::counts::CloseCause,
    telemetry::{metrics::db_system, traces},
};

/// How long an interrupted statement's answer waits for the cancel to
/// reach the server and the statement to stop. Past it the client is
/// answered anyway and the connection, whose state is then unknown, is
/// closed in the background (on a dead path the cancel hangs too).
const SETTLE_GRACE: Duration = Duration::from_millis(500);

/// An open session.
pub(super) struct Session<DB: Driver> {
    manager: SessionManager<DB>,
    checkout: Checkout<DB>,
    guard: SessionGuard,
    entry: Arc<SessionEntry>,
    client: ClientLink,
    /// When the session must end, whatever it is doing.
    lifetime_end: tokio::time::Instant,
    /// The Attach call's own deadline (its `grpc-timeout`), if it has one:
    /// the session ends when it passes.
    call_end: Option<tokio::time::Instant>,
    /// A statement was cut off and the connection's state is unknown.
    dirty: bool,
    /// The session's transaction is read-only.
    read_only: bool,
    /// What the owner may do: a reader's refusals to write by the database
    /// are answered PERMISSION_DENIED.
    access: Access,
    /// The statement running now, kept for the audit trail (when it is on).
    audited: Option<AuditedStatement>,
    /// The session is one write that is its own transaction, run without
    /// BEGIN or COMMIT (see `Dialect::ONE_WRITE_IS_ITS_OWN_TRANSACTION`):
    /// the database committed it if it succeeded and rolled it back if it
    /// failed; nothing is open around it.
    own_transaction: bool,
    /// That write was cut off and may or may not have committed: the
    /// session ends saying so, and its connection is closed.
    outcome_unknown: bool,
}

/// A session statement on its way to the audit trail.
struct AuditedStatement {
    sql: Arc<str>,
    fingerprint: Arc<str>,
    started: Instant,
}

/// How a session's statement ended, for the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Executed {
    /// It succeeded; the client has its frames and `done`.
    Done,
    /// It failed; the client has its `error`, and the session goes on.
    Failed,
    /// The session must end, for this reason.
    End(EndReason),
}

/// What cut a statement short.
#[derive(Debug, Clone, Copy)]
enum Interruption {
    Deadline,
    End(EndReason),
}

/// How a statement's run ended.
enum Ran {
    /// It finished by itself: rows affected, or why it failed.
    Finished(Result<u64, Failure>),
    /// Something cut it short; it was cancelled and waited for. `dirty`
    /// when it did not come back clean in time.
    Interrupted { by: Interruption, dirty: bool },
}

impl<DB: Driver> Session<DB> {
    /// Acquires the session's connection and opens its transaction. On
    /// failure the session is over: its place is given up (reason
    /// `failed`) and the client is told why. `only` is the session's one
    /// statement, when its begin carries it with `commit_after`: a single
    /// write with default options is then its own transaction, and no
    /// BEGIN is sent.
    pub(super) async fn begin(
        manager: &SessionManager<DB>,
        options: &BeginOptions,
        guard: SessionGuard,
        client: ClientLink,
        call_end: Option<tokio::time::Instant>,
        only: Option<&Statement>,
    ) -> Option<Self> {
        let access = Access::read_only_if(guard.entry().owner.role.is_read_only());
        let budget = manager.statement_budget;
        let deadline = budget.deadline(call_end.map(|end| {
            end.saturating_duration_since(tokio::time::Instant::now())
                .min(budget.default)
        }));
        let begin = Begin::Session {
            isolation: options.isolation,
            read_only: options.read_only,
        };
        // Not with the audit table on: a write's audit row is inserted
        // with the COMMIT, in the same transaction. Nor for a text too
        // long to cache: with no rows, the statement is described after
        // it ran, which would then be a round trip that could fail after
        // the write committed.
        let candidate = only.filter(|only| {
            DB::ONE_WRITE_IS_ITS_OWN_TRANSACTION
                && options.isolation == Isolation::Default
                && !options.read_only
                && manager.audit_table.is_none()
                && only.is_single_write()
                && cacheable(&DB::statement_text(&only.sql, &only.params))
        });
        let opened = async {
            // The server id costs a round trip: for such a write, only for
            // a shape that ran out its deadline before, so that a repeat
            // can be cancelled by id (see `TimeoutMemory`); otherwise a
            // write cut off is stopped by closing its connection.
            let want_server_id = candidate
                .is_some_and(|only| manager.db.timed_out().has_timed_out(&only.fingerprint));
            let checkout = Checkout::take(&manager.db, &deadline, want_server_id).await?;
            if candidate.is_some() && DB::closing_stops_statements(checkout.connection_ref()) {
                return Ok((checkout, true));
            }
            // The server id comes with the BEGIN (`Dialect::open_session`).
            let checkout = checkout.begin_within(&deadline, begin).await?;
            Ok((checkout, false))
        };
        match opened.await {
            Ok((checkout, own_transaction)) => Some(Self {
                lifetime_end: tokio::time::Instant::now()
                    + manager.registry.settings().max_lifetime,
                call_end,
                manager: manager.clone(),
                checkout,
                entry: guard.entry().clone(),
                guard,
                client,
                dirty: false,
                read_only: options.read_only,
                access,
                audited: None,
                own_transaction,
                outcome_unknown: false,
            }),
            Err(error) => {
                guard.end(EndReason::Failed);
                client.tell(SessionEvent::Ended(error)).await;
                None
            }
        }
    }

    /// The session's registry entry (activity, terminate signal).
    pub(super) fn entry(&self) -> &SessionEntry {
        &self.entry
    }

    /// When the session's maximum lifetime runs out.
    pub(super) fn lifetime_end(&self) -> tokio::time::Instant {
        self.lifetime_end
    }

    /// Resolves when the Attach call's own deadline passes (never, when
    /// the call has none).
    pub(super) fn call_ended(&self) -> impl Future<Output = ()> + Send + use<DB> {
        until(self.call_end)
    }

    /// Tells the client the transaction is open; false if it is gone.
    pub(super) async fn announce(&mut self) -> bool {
        let began = SessionEvent::Began {
            session_id: self.entry.id.clone(),
        };
        self.client.tell(began).await
    }

    /// Runs one statement and answers for `request_id` (frames, then done
    /// or error). Whatever interrupts it (its deadline, the client leaving,
    /// a terminate, shutdown, the session's lifetime) cancels it on the
    /// server first, then waits for it to stop so that the connection stays
    /// in a known state.
    pub(super) async fn execute(
        &mut self,
        request_id: u64,
        statement: &Statement,
        deadline: Deadline,
    ) -> Executed {
        if self.manager.registry.audit().is_some() {
            self.audited = Some(AuditedStatement {
                sql: statement.sql.clone(),
                fingerprint: statement.fingerprint.clone(),
                started: Instant::now(),
            });
        }
        let allowed = statement
            .check_for_session(self.read_only)
            .and_then(|()| check_statement(self.manager.audit_table.as_ref(), statement));
        if let Err(error) = allowed {
            return self.failed(request_id, error).await;
        }
        if statement.leaves_state() {
            self.checkout.note_state_change();
        }
        self.checkout.set_deadline(&deadline);
        self.entry.statement_started(statement.fingerprint.clone());
        let started = Instant::now();
        let target = SessionFrames {
            client: self.client.clone(),
            request_id,
        };
        let mut sink = FrameSink::new(target, &self.manager.limits);
        // A child of the session's span (the session's task runs in it).
        let span = traces::statement_span(
            db_system(DB::BACKEND),
            self.manager.db.namespace(),
            operation_name(&statement.sql),
            || statement.sanitized_text(),
        );
        let ran = span
            .scope(self.run_interruptible(statement, &mut sink, deadline))
            .await;
        self.entry.statement_finished();
        let code = match &ran {
            Ran::Finished(Ok(_)) => {
                traces::statement_done(
                    &span,
                    Ok(usize::try_from(sink.rows_returned()).unwrap_or(usize::MAX)),
                );
                Code::Ok
            }
            Ran::Finished(Err(
                Failure::Clean(error) | Failure::Dirty(error) | Failure::Broken(error),
            )) => {
                traces::statement_done(&span, Err(error));
                error.code()
            }
            Ran::Finished(Err(Failure::ReaderGone)) => Code::Cancelled,
            Ran::Interrupted {
                by: Interruption::Deadline,
                ..
            } => Code::DeadlineExceeded,
            Ran::Interrupted { .. } => Code::Cancelled,
        };
        if let Some(operations) = self.manager.registry.operations() {
            operations.operation(operation_name(&statement.sql), code, started.elapsed());
        }

        match ran {
            Ran::Finished(Ok(rows_affected)) => {
                // A statement sqlgate could not see into (a procedure) may
                // have ended the transaction: ask the database.
                if statement.leaves_state()
                    && self.checkout.still_in_transaction().await == Some(false)
                {
                    self.dirty = true;
                    return Executed::End(EndReason::TransactionLost);
                }
                // A write that is its own transaction has committed: the
                // client leaving now changes nothing, and it is counted so.
                let gone = if self.own_transaction {
                    EndReason::Commit
                } else {
                    EndReason::ClientGone
                };
                if let Err(failure) = sink.flush().await {
                    self.dirty = !self.own_transaction && failure.leaves_connection_dirty();
                    return Executed::End(gone);
                }
                let stats = StreamStats {
                    rows_affected,
                    rows_returned: sink.rows_returned(),
                    elapsed: started.elapsed(),
                };
                self.audit(stats.rows_returned, rows_affected, None);
                self.stage_audit_row(statement, &stats);
                let finished = SessionEvent::Frame {
                    request_id,
                    event: StreamEvent::Finished(stats),
                };
                if !self.client.tell(finished).await {
                    return Executed::End(gone);
                }
                self.client.tell(SessionEvent::Done { request_id }).await;
                Executed::Done
            }
            Ran::Finished(Err(failure)) => {
                self.dirty = failure.leaves_connection_dirty();
                // Only the database's own refusal surely rolled it back.
                self.outcome_unknown =
                    self.own_transaction && !matches!(failure, Failure::Clean(_));
                match failure.into_error() {
                    Some(error) if !self.client.is_gone() => {
                        let error = error.after_deadline(deadline.expired());
                        self.failed(request_id, error).await
                    }
                    _ => Executed::End(EndReason::ClientGone),
                }
            }
            Ran::Interrupted {
                by: Interruption::Deadline,
                dirty,
            } => {
                self.dirty = dirty;
                let error = Error::DeadlineExceeded(DeadlinePhase::Database);
                self.failed(request_id, error).await
            }
            Ran::Interrupted {
                by: Interruption::End(reason),
                dirty,
            } => {
                self.dirty = dirty;
                Executed::End(reason)
            }
        }
    }

    /// Runs `statement` until it finishes or something ends it early; see
    /// [`Session::execute`].
    async fn run_interruptible(
        &mut self,
        statement: &Statement,
        sink: &mut FrameSink<SessionFrames>,
        deadline: Deadline,
    ) -> Ran {
        let canceller = self.checkout.canceller();
        // Nothing but closing the connection can stop a write that is its
        // own transaction without its connection's id.
        let uncancellable = self.own_transaction && !self.checkout.knows_server_id();
        let running = run_statement::<DB, _>(self.checkout.connection(), statement, sink);
        tokio::pin!(running);
        let interruption = tokio::select! {
            biased;
            result = &mut running => return Ran::Finished(result),
            () = tokio::time::sleep_until(deadline.instant()) => Interruption::Deadline,
            () = self.entry.terminated() => Interruption::End(EndReason::Terminated),
            () = self.manager.registry.shutting_down() => Interruption::End(EndReason::Shutdown),
            () = self.client.gone() => Interruption::End(EndReason::ClientGone),
            () = tokio::time::sleep_until(self.lifetime_end) => {
                Interruption::End(EndReason::MaxLifetime)
            }
            () = until(self.call_end) => Interruption::End(EndReason::CallDeadline),
        };
        // Cancel on the server, then let the statement return its error, so
        // that the connection stays in a known state. A deadline's answer
        // waits for that only [`SETTLE_GRACE`]; past it (or past the cleanup
        // bound for the other interruptions) the connection counts as dirty
        // and is closed, never reused.
        let out_of_time = matches!(
            interruption,
            Interruption::Deadline | Interruption::End(EndReason::CallDeadline)
        );
        // A write that cannot be cancelled, when its answer is due now or
        // nobody is left to hear it, is cut at once (its connection is
        // closed, which stops it); a terminate or shutdown lets it finish
        // within the cleanup bound.
        let client_gone = matches!(interruption, Interruption::End(EndReason::ClientGone));
        let bound = if uncancellable && (out_of_time || client_gone) {
            Duration::ZERO
        } else if out_of_time {
            SETTLE_GRACE
        } else {
            CLEANUP_TIMEOUT
        };
        if self.own_transaction && out_of_time {
            // Next time this shape's connection id is learnt first.
            self.manager.db.timed_out().remember(&statement.fingerprint);
        }
        let stop_in_process = matches!(interruption, Interruption::End(_));
        let settled = tokio::time::timeout(bound, async {
            canceller.cancel(stop_in_process).await;
            (&mut running).await
        })
        .await;
        let dirty = !matches!(settled, Ok(Ok(_) | Err(Failure::Clean(_))));
        if self.own_transaction {
            if let Ok(Ok(rows_affected)) = settled {
                // It finished, and committed, before the cut reached it.
                return Ran::Finished(Ok(rows_affected));
            }
            // A refusal by the database rolled it back; otherwise it may
            // have committed as the connection closed.
            self.outcome_unknown = dirty;
        }
        Ran::Interrupted {
            by: interruption,
            dirty,
        }
    }

    /// Answers a request that could not be decoded, with its event in the
    /// audit trail (naming its text's fingerprint when the text was
    /// within the limits; never its values); the session goes on.
    pub(super) async fn refuse_invalid(
        &mut self,
        request_id: u64,
        sql: Option<Arc<str>>,
        error: Error,
    ) -> Executed {
        if self.manager.registry.audit().is_some() {
            let sql = sql.unwrap_or_else(|| Arc::from(""));
            self.audited = Some(AuditedStatement {
                fingerprint: Arc::from(fingerprint(&sql)),
                sql,
                started: Instant::now(),
            });
        }
        self.failed(request_id, error).await
    }

    /// Answers a failed request; the session goes on unless the connection
    /// is in an unknown state, or the backend's transaction did not survive
    /// the interrupt.
    async fn failed(&mut self, request_id: u64, error: Error) -> Executed {
        self.audit(0, 0, Some(&error));
        if aborts_transaction::<DB>(&error) {
            self.entry.mark_aborted();
        }
        let error = self.access.error(error);
        let ends = self.dirty
            || (matches!(error, Error::DeadlineExceeded(_))
                && !DB::transaction_survives_interrupt());
        self.client
            .tell(SessionEvent::Error { request_id, error })
            .await;
        if ends {
            Executed::End(EndReason::Failed)
        } else {
            Executed::Failed
        }
    }

    /// Stages the audit-table row of a statement that may have written
    /// (audit table on): it is inserted with the session's COMMIT, and
    /// forgotten if the session rolls back.
    fn stage_audit_row(&mut self, statement: &Statement, stats: &StreamStats) {
        let Some(table) = &self.manager.audit_table else {
            return;
        };
        if self.read_only || !statement.may_write() {
            return;
        }
        let writer = AuditWriter {
            table: table.clone(),
            actor: self.entry.owner.actor(),
            method: "sqlgate.v1.Sessions/Attach",
            session: Some(self.entry.id.clone()),
            tags: self.entry.owner.tags.clone(),
        };
        let row = writer.row_sql(
            &statement.sanitized_text(),
            &statement.fingerprint,
            (stats.rows_returned, stats.rows_affected),
            stats.elapsed,
        );
        self.checkout.stage_audit_row(&row);
    }

    /// Hands the statement running now to the audit trail (when it is on):
    /// its rows, or the error its caller got.
    fn audit(&mut self, rows_returned: u64, rows_affected: u64, error: Option<&Error>) {
        let (Some(audit), Some(statement)) = (self.manager.registry.audit(), self.audited.take())
        else {
            return;
        };
        audit.statement(StatementRecord {
            actor: self.entry.owner.actor(),
            method: "sqlgate.v1.Sessions/Attach",
            session: Some(self.entry.id.clone()),
            sql: statement.sql,
            fingerprint: statement.fingerprint,
            rows_returned,
            rows_affected,
            duration: statement.started.elapsed(),
            code: error.map_or(tonic::Code::Ok, Error::code),
            sqlstate: error.and_then(Error::sqlstate).map(str::to_owned),
            tags: self.entry.owner.tags.clone(),
        });
    }

    /// Ends the session. `Commit` commits (a failed commit ends it as
    /// `failed`, rolled back); anything else rolls back. The connection
    /// goes back to the pool clean, or is closed when its state is unknown
    /// (closing makes the server roll back). The reason is counted, and the
    /// client told if it is still there.
    pub(super) async fn end(mut self, reason: EndReason) {
        let client = self.client.clone();
        if self.outcome_unknown {
            self.checkout.discard();
            self.guard.end(reason);
            if !client.is_gone() {
                client
                    .tell(SessionEvent::Ended(Error::CommitOutcomeUnknown))
                    .await;
            }
            return;
        }
        match reason {
            // Its write committed by itself: nothing is open.
            EndReason::Commit if self.own_transaction => {
                self.give_back(EndReason::Commit).await;
                client.tell(SessionEvent::Committed).await;
            }
            EndReason::Commit => {
                let bound = self.commit_bound();
                match tokio::time::timeout_at(bound, self.checkout.commit()).await {
                    Ok(Ok(())) => {
                        self.give_back(EndReason::Commit).await;
                        client.tell(SessionEvent::Committed).await;
                    }
                    Ok(Err(failure)) => {
                        self.roll_back(EndReason::Failed).await;
                        client.tell(SessionEvent::Ended(failure.error)).await;
                    }
                    Err(_) => {
                        // The COMMIT may or may not have reached the
                        // database: never say committed or rolled back.
                        let reason = if self.call_end.is_some_and(|end| end <= bound) {
                            EndReason::CallDeadline
                        } else {
                            EndReason::Failed
                        };
                        self.checkout.close_for(CloseCause::Broken);
                        self.guard.end(reason);
                        client
                            .tell(SessionEvent::Ended(Error::CommitOutcomeUnknown))
                            .await;
                    }
                }
            }
            EndReason::Rollback => {
                self.roll_back(EndReason::Rollback).await;
                client.tell(SessionEvent::RolledBack).await;
            }
            EndReason::TransactionLost => {
                // Nothing to roll back that sqlgate began: say so, and
                // close the connection (its state is the statement's).
                self.roll_back(EndReason::TransactionLost).await;
                client
                    .tell(SessionEvent::Ended(Error::TransactionLost))
                    .await;
            }
            reason => {
                self.roll_back(reason).await;
                if !client.is_gone() {
                    client.tell(SessionEvent::RolledBack).await;
                    client
                        .tell(SessionEvent::Ended(Error::SessionEnded(reason.name())))
                        .await;
                }
            }
        }
    }

    /// How long a COMMIT may take: the Attach call's remaining deadline,
    /// and never more than a session statement's default budget
    /// (`deadlines.session_execute.default`).
    fn commit_bound(&self) -> tokio::time::Instant {
        let longest = tokio::time::Instant::now() + self.manager.statement_budget.default;
        self.call_end.map_or(longest, |end| end.min(longest))
    }

    /// How long a ROLLBACK may take before the connection is closed
    /// instead (which rolls back too): the cleanup bound, cut to just past
    /// the Attach call's deadline, so that the client hears of its
    /// session's end about when its deadline passes.
    fn rollback_bound(&self) -> tokio::time::Instant {
        let now = tokio::time::Instant::now();
        let cleanup = now + CLEANUP_TIMEOUT;
        self.call_end
            .map_or(cleanup, |end| cleanup.min(end.max(now) + SETTLE_GRACE))
    }

    /// Rolls back and gives the connection back, or closes it (after a
    /// cancel, in the background) when it is dirty or the rollback fails
    /// or takes too long; counts `reason`.
    async fn roll_back(mut self, reason: EndReason) {
        if self.own_transaction && !self.dirty {
            // Its write never ran, or failed and was rolled back by the
            // database: nothing is open.
            self.give_back(reason).await;
            return;
        }
        if self.dirty {
            self.checkout.discard();
            self.guard.end(reason);
            return;
        }
        let bound = self.rollback_bound();
        if tokio::time::timeout_at(bound, self.checkout.rollback())
            .await
            .unwrap_or(false)
        {
            self.give_back(reason).await;
        } else {
            self.checkout.close();
            self.guard.end(reason);
        }
    }

    /// Returns the clean connection to the pool and counts `reason`.
    async fn give_back(self, reason: EndReason) {
        self.checkout.release().await;
        self.guard.end(reason);
    }
}

/// Resolves at `end`, or never when there is none.
pub(super) async fn until(end: Option<tokio::time::Instant>) {
    match end {
        Some(end) => tokio::time::sleep_until(end).await,
        None => std::future::pending().await,
    }
}

/// Whether the database has given up on the transaction after `error`.
fn aborts_transaction<DB: Driver>(error: &Error) -> bool {
    error.sqlstate() == Some("25P02")
        || (DB::errors_abort_transaction()
            && matches!(error, Error::Database(_) | Error::DeadlineExceeded(_)))
}

/// Where a session statement's frames go: the session's stream, tagged
/// with the request they answer.
struct SessionFrames {
    client: ClientLink,
    request_id: u64,
}

impl FrameTarget for SessionFrames {
    async fn deliver(&self, event: StreamEvent) -> bool {
        self.client
            .tell(SessionEvent::Frame {
                request_id: self.request_id,
                event,
            })
            .await
    }

    async fn gone(&self) {
        // The session watches for the client leaving itself, so that it
        // can cancel on the server before the statement is dropped.
        std::future::pending::<()>().await
    }
}
