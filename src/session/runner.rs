//! One session's task. It owns the session's connection from `begin` to
//! the end, and whatever ends the session, cleans up in one order: cancel
//! the running statement on the server, roll back, then return the
//! connection to the pool — or close it when any step failed or its state
//! is unknown.

use std::{sync::Arc, time::Duration};

use sqlx::{Executor, IntoArguments, Pool, pool::PoolConnection};
use tokio::{sync::mpsc, time::Instant};

use super::{
    BeginOptions, Inbound, SessionCommand, SessionEvent,
    registry::{EndReason, SessionEntry, SessionGuard, SessionRegistry, SessionState},
};
use crate::{
    config::{LimitSettings, MethodBudget},
    db::{Database, Deadline, Dialect, Interrupt},
    error::{DeadlinePhase, Error},
    query::{
        Statement, StreamEvent, StreamStats,
        codec::Codec,
        executor::{Failure, run_statement},
        stream::{FrameSink, FrameTarget},
    },
};

/// How long a statement may take to stop after it was cancelled, and a
/// rollback to finish, before the connection is closed instead.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(2);

/// After the client's side of the stream ends, how long to watch for its
/// response side closing too (a cancelled call rather than a half-close).
/// Only the reason counted depends on it; both roll back.
const HALF_CLOSE_GRACE: Duration = Duration::from_millis(30);

/// How long sqlgate waits for the first request (`begin`).
const BEGIN_WAIT: Duration = Duration::from_secs(30);

/// What a session needs besides its streams.
pub(super) struct Context {
    pub(super) db: Arc<Database>,
    pub(super) registry: Arc<SessionRegistry>,
    pub(super) statement_budget: MethodBudget,
    pub(super) limits: LimitSettings,
    pub(super) peer: String,
}

type Outbound = mpsc::Sender<SessionEvent>;

/// The open session: its connection and what cleanup needs to know.
struct Open<DB: sqlx::Database> {
    conn: PoolConnection<DB>,
    server_id: Option<i64>,
    interrupt: Arc<Interrupt>,
    read_only: bool,
    /// A statement was cut off and its connection's state is unknown.
    dirty: bool,
}

/// How one statement in the session went.
enum StatementOutcome {
    Done,
    Failed(Error),
    /// The session must end (the statement was already cancelled).
    End(EndReason),
}

/// Runs one session to its end.
pub(super) async fn run<DB>(
    context: Context,
    pool: Pool<DB>,
    mut inbound: mpsc::Receiver<Inbound>,
    outbound: Outbound,
) where
    DB: Codec + Dialect,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let first = tokio::select! {
        message = inbound.recv() => message,
        () = outbound.closed() => return,
        () = context.registry.shutting_down() => {
            let _ = outbound.send(SessionEvent::Ended(Error::ShuttingDown)).await;
            return;
        }
        () = tokio::time::sleep(BEGIN_WAIT) => {
            let _ = outbound.send(SessionEvent::Ended(Error::SessionProtocol(
                "no begin arrived; a session starts with begin".to_owned(),
            ))).await;
            return;
        }
    };
    let options = match first {
        Some(Inbound::Command(SessionCommand::Begin(options))) => options,
        Some(Inbound::Command(SessionCommand::Invalid { error, .. })) => {
            let _ = outbound.send(SessionEvent::Ended(error)).await;
            return;
        }
        Some(Inbound::Command(_)) => {
            let _ = outbound
                .send(SessionEvent::Ended(Error::SessionProtocol(
                    "a session starts with begin".to_owned(),
                )))
                .await;
            return;
        }
        Some(Inbound::Broken) | None => return,
    };

    let guard = match context
        .registry
        .open(context.peer.clone(), options.labels.clone())
    {
        Ok(guard) => guard,
        Err(error) => {
            let _ = outbound.send(SessionEvent::Ended(error)).await;
            return;
        }
    };
    let mut open = match begin::<DB>(&context, &pool, &options).await {
        Ok(open) => open,
        Err(error) => {
            guard.end(EndReason::Failed);
            let _ = outbound.send(SessionEvent::Ended(error)).await;
            return;
        }
    };
    let entry = guard.entry().clone();
    if outbound
        .send(SessionEvent::Began {
            session_id: entry.id.clone(),
        })
        .await
        .is_err()
    {
        finish::<DB>(&context, open, guard, EndReason::ClientGone, &outbound).await;
        return;
    }

    let settings = context.registry.settings();
    let idle_timeout = options
        .idle_timeout
        .unwrap_or(settings.default_idle_timeout)
        .min(settings.max_idle_timeout);
    let lifetime_end = Instant::now() + settings.max_lifetime;
    let max_statements = settings.max_statements;
    let scope = SessionScope {
        context: &context,
        entry: &entry,
        outbound: &outbound,
        lifetime_end,
    };

    let reason = loop {
        let idle_end = Instant::from_std(entry.last_activity()) + idle_timeout;
        let message = tokio::select! {
            biased;
            () = entry.terminated() => break EndReason::Terminated,
            () = context.registry.shutting_down() => break EndReason::Shutdown,
            () = outbound.closed() => break EndReason::ClientGone,
            () = tokio::time::sleep_until(lifetime_end) => break EndReason::MaxLifetime,
            () = tokio::time::sleep_until(idle_end) => break EndReason::IdleTimeout,
            message = inbound.recv() => message,
        };
        let command = match message {
            // The client closed its side without committing: never commit
            // on that. A cancelled call looks the same at first; its
            // response side closes right after, which tells them apart.
            None => {
                let gone = tokio::time::timeout(HALF_CLOSE_GRACE, outbound.closed()).await;
                break if gone.is_ok() {
                    EndReason::ClientGone
                } else {
                    EndReason::StreamEnded
                };
            }
            Some(Inbound::Broken) => break EndReason::ClientGone,
            Some(Inbound::Command(command)) => command,
        };
        entry.touch();
        match command {
            SessionCommand::Begin(_) => {
                let error = Error::SessionProtocol("the session has already begun".to_owned());
                let _ = outbound
                    .send(SessionEvent::Error {
                        request_id: 0,
                        error,
                    })
                    .await;
            }
            SessionCommand::Invalid { request_id, error } => {
                let _ = outbound
                    .send(SessionEvent::Error { request_id, error })
                    .await;
            }
            SessionCommand::Execute {
                request_id,
                statement,
                timeout,
            } => {
                if entry.statements() >= max_statements {
                    let error = Error::SessionProtocol(format!(
                        "the session ran its maximum of {max_statements} statements; commit or roll back"
                    ));
                    let _ = outbound
                        .send(SessionEvent::Error { request_id, error })
                        .await;
                    continue;
                }
                let deadline = context.statement_budget.deadline(timeout);
                let request = StatementRequest {
                    request_id,
                    statement: &statement,
                    deadline,
                };
                match execute::<DB>(&scope, &mut open, request).await {
                    StatementOutcome::Done => {
                        let _ = outbound.send(SessionEvent::Done { request_id }).await;
                    }
                    StatementOutcome::Failed(error) => {
                        if aborts_transaction::<DB>(&error) {
                            entry.set_state(SessionState::Aborted);
                        }
                        if open.dirty
                            || (matches!(error, Error::DeadlineExceeded(_))
                                && !DB::transaction_survives_interrupt())
                        {
                            let _ = outbound
                                .send(SessionEvent::Error { request_id, error })
                                .await;
                            break EndReason::Failed;
                        }
                        let _ = outbound
                            .send(SessionEvent::Error { request_id, error })
                            .await;
                    }
                    StatementOutcome::End(reason) => break reason,
                }
                entry.touch();
            }
            SessionCommand::Commit => {
                match raw(&mut open.conn, "COMMIT").await {
                    Ok(()) => {
                        release::<DB>(open).await;
                        guard.end(EndReason::Commit);
                        let _ = outbound.send(SessionEvent::Committed).await;
                    }
                    Err(error) => {
                        // A failed COMMIT ends the transaction (rolled back).
                        finish_quietly::<DB>(&context, open, guard, EndReason::Failed).await;
                        let _ = outbound.send(SessionEvent::Ended(error)).await;
                    }
                }
                linger(&context, inbound, &outbound, "committed").await;
                return;
            }
            SessionCommand::Rollback => {
                match raw(&mut open.conn, "ROLLBACK").await {
                    Ok(()) => {
                        release::<DB>(open).await;
                        guard.end(EndReason::Rollback);
                    }
                    Err(_) => close::<DB>(&context, open, guard, EndReason::Rollback).await,
                }
                let _ = outbound.send(SessionEvent::RolledBack).await;
                linger(&context, inbound, &outbound, "rolled back").await;
                return;
            }
        }
    };
    finish::<DB>(&context, open, guard, reason, &outbound).await;
}

/// Acquires the session's connection and opens its transaction.
async fn begin<DB>(
    context: &Context,
    pool: &Pool<DB>,
    options: &BeginOptions,
) -> Result<Open<DB>, Error>
where
    DB: Codec + Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let deadline = Deadline::after(context.statement_budget.default);
    let mut conn = context.db.acquire_within(pool, &deadline).await?;
    let interrupt = Interrupt::new(&deadline);
    let setup = async {
        let server_id = DB::arm(&mut conn, &interrupt, true).await?;
        for sql in DB::session_begin(options.isolation, options.read_only) {
            conn.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(sql)))
                .await?;
        }
        Ok::<_, sqlx::Error>(server_id)
    };
    match tokio::time::timeout_at(deadline.instant(), setup).await {
        Ok(Ok(server_id)) => Ok(Open {
            conn,
            server_id,
            interrupt,
            read_only: options.read_only,
            dirty: false,
        }),
        Ok(Err(err)) => {
            drop(conn.detach());
            Err(err.into())
        }
        Err(_) => {
            drop(conn.detach());
            Err(Error::DeadlineExceeded(DeadlinePhase::Database))
        }
    }
}

/// What stays the same for every statement of one session: where it
/// answers, its registry entry, and when its lifetime ends.
struct SessionScope<'a> {
    context: &'a Context,
    entry: &'a SessionEntry,
    outbound: &'a Outbound,
    lifetime_end: Instant,
}

/// One statement the client asked the session to run.
struct StatementRequest<'a> {
    request_id: u64,
    statement: &'a Statement,
    deadline: Deadline,
}

/// Runs one statement, answering frames for its request id. Whatever
/// interrupts it (its deadline, the client leaving, a terminate, shutdown,
/// the session's lifetime) cancels it on the server first, then waits for
/// it to stop so that the connection stays in a known state.
async fn execute<DB>(
    scope: &SessionScope<'_>,
    open: &mut Open<DB>,
    request: StatementRequest<'_>,
) -> StatementOutcome
where
    DB: Codec + Dialect,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let SessionScope {
        context,
        entry,
        outbound,
        lifetime_end,
    } = *scope;
    let StatementRequest {
        request_id,
        statement,
        deadline,
    } = request;
    open.interrupt.set_deadline(&deadline);
    entry.set_running(Some(statement.fingerprint.clone()));
    if entry.state() != SessionState::Aborted {
        entry.set_state(SessionState::Executing);
    }
    let started = std::time::Instant::now();
    let mut sink = FrameSink::new(
        SessionFrames {
            outbound,
            request_id,
        },
        &context.limits,
    );
    let server_id = open.server_id;
    let control = DB::control_pool(&context.db);
    let interrupt = open.interrupt.clone();

    let (result, interruption) = {
        let running = run_statement::<DB, _>(&mut open.conn, statement, &mut sink);
        tokio::pin!(running);
        let finished = tokio::select! {
            biased;
            result = &mut running => Ok(result),
            () = tokio::time::sleep_until(deadline.instant()) => Err(Interruption::Deadline),
            () = entry.terminated() => Err(Interruption::End(EndReason::Terminated)),
            () = context.registry.shutting_down() => Err(Interruption::End(EndReason::Shutdown)),
            () = outbound.closed() => Err(Interruption::End(EndReason::ClientGone)),
            () = tokio::time::sleep_until(lifetime_end) => Err(Interruption::End(EndReason::MaxLifetime)),
        };
        match finished {
            Ok(result) => (result, None),
            Err(interruption) => {
                // Cancel on the server, then let the statement return its
                // error, so that the connection stays in a known state.
                if let (Some(control), Some(id)) = (&control, server_id) {
                    DB::cancel_statement(control, id).await;
                }
                if matches!(interruption, Interruption::End(_)) {
                    interrupt.cancel();
                }
                let settled = tokio::time::timeout(CLEANUP_TIMEOUT, &mut running).await;
                let dirty = !matches!(
                    settled,
                    Ok(Ok(_)
                        | Err(Failure {
                            connection_dirty: false,
                            ..
                        }))
                );
                let failure = Failure {
                    error: Error::Internal("statement interrupted".to_owned()),
                    connection_dirty: dirty,
                };
                (Err(failure), Some(interruption))
            }
        }
    };
    entry.set_running(None);
    if entry.state() == SessionState::Executing {
        entry.set_state(SessionState::Idle);
    }

    match (result, interruption) {
        (Ok(rows_affected), None) => {
            if let Err(failure) = sink.flush().await {
                open.dirty = failure.connection_dirty;
                return StatementOutcome::End(EndReason::ClientGone);
            }
            let stats = StreamStats {
                rows_affected,
                rows_returned: sink.rows_returned(),
                elapsed: started.elapsed(),
            };
            if outbound
                .send(SessionEvent::Frame {
                    request_id,
                    event: StreamEvent::Finished(stats),
                })
                .await
                .is_err()
            {
                return StatementOutcome::End(EndReason::ClientGone);
            }
            StatementOutcome::Done
        }
        (Err(failure), None) => {
            open.dirty = failure.connection_dirty;
            if outbound.is_closed() {
                return StatementOutcome::End(EndReason::ClientGone);
            }
            StatementOutcome::Failed(failure.error.after_deadline(deadline.expired()))
        }
        (Err(failure), Some(Interruption::Deadline)) => {
            open.dirty = failure.connection_dirty;
            StatementOutcome::Failed(Error::DeadlineExceeded(DeadlinePhase::Database))
        }
        (Err(failure), Some(Interruption::End(reason))) => {
            open.dirty = failure.connection_dirty;
            StatementOutcome::End(reason)
        }
        (Ok(_), Some(Interruption::End(reason))) => StatementOutcome::End(reason),
        (Ok(_), Some(Interruption::Deadline)) => {
            StatementOutcome::Failed(Error::DeadlineExceeded(DeadlinePhase::Database))
        }
    }
}

/// What cut a statement short.
#[derive(Debug, Clone, Copy)]
enum Interruption {
    Deadline,
    End(EndReason),
}

/// Whether the database has given up on the transaction after `error`.
fn aborts_transaction<DB: Dialect>(error: &Error) -> bool {
    error.sqlstate() == Some("25P02")
        || (DB::errors_abort_transaction()
            && matches!(error, Error::Database(_) | Error::DeadlineExceeded(_)))
}

/// Ends a session that did not commit or roll back on request: cancel,
/// roll back, return or close; count the reason; tell the client if it is
/// still there.
async fn finish<DB>(
    context: &Context,
    open: Open<DB>,
    guard: SessionGuard,
    reason: EndReason,
    outbound: &Outbound,
) where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    finish_quietly::<DB>(context, open, guard, reason).await;
    if !outbound.is_closed() {
        let _ = outbound.send(SessionEvent::RolledBack).await;
        let _ = outbound
            .send(SessionEvent::Ended(Error::SessionEnded(reason.name())))
            .await;
    }
}

async fn finish_quietly<DB>(
    context: &Context,
    mut open: Open<DB>,
    guard: SessionGuard,
    reason: EndReason,
) where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    if open.dirty {
        return close::<DB>(context, open, guard, reason).await;
    }
    match tokio::time::timeout(CLEANUP_TIMEOUT, raw(&mut open.conn, "ROLLBACK")).await {
        Ok(Ok(())) => {
            release::<DB>(open).await;
            guard.end(reason);
        }
        _ => close::<DB>(context, open, guard, reason).await,
    }
}

/// Returns a clean connection (outside any transaction) to the pool.
async fn release<DB>(mut open: Open<DB>)
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    for sql in DB::session_end(open.read_only) {
        if raw(&mut open.conn, &sql).await.is_err() {
            drop(open.conn.detach());
            return;
        }
    }
    DB::disarm(&mut open.conn).await;
    drop(open.conn);
}

/// Closes the connection: its state is unknown, and closing it makes the
/// server roll back whatever it still holds. Cancels first.
async fn close<DB>(context: &Context, open: Open<DB>, guard: SessionGuard, reason: EndReason)
where
    DB: Dialect,
{
    if let (true, Some(control), Some(id)) =
        (open.dirty, DB::control_pool(&context.db), open.server_id)
    {
        DB::cancel_statement(&control, id).await;
    }
    drop(open.conn.detach());
    guard.end(reason);
}

/// After commit or rollback the stream stays open until the client closes
/// it (or shutdown); anything it still sends is answered with a clear error.
async fn linger(
    context: &Context,
    mut inbound: mpsc::Receiver<Inbound>,
    outbound: &Outbound,
    how: &str,
) {
    loop {
        tokio::select! {
            message = inbound.recv() => match message {
                Some(Inbound::Command(command)) => {
                    let request_id = match command {
                        SessionCommand::Execute { request_id, .. } | SessionCommand::Invalid { request_id, .. } => request_id,
                        _ => 0,
                    };
                    let error = Error::SessionProtocol(format!("the session has ended ({how})"));
                    if outbound.send(SessionEvent::Error { request_id, error }).await.is_err() {
                        return;
                    }
                }
                Some(Inbound::Broken) | None => return,
            },
            () = outbound.closed() => return,
            () = context.registry.shutting_down() => return,
            () = tokio::time::sleep(BEGIN_WAIT) => return,
        }
    }
}

async fn raw<DB>(conn: &mut PoolConnection<DB>, sql: &str) -> Result<(), Error>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    conn.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())))
        .await
        .map(|_| ())
        .map_err(Error::from)
}

/// Where a session statement's frames go: the session's stream, tagged
/// with the request they answer.
struct SessionFrames<'a> {
    outbound: &'a Outbound,
    request_id: u64,
}

impl FrameTarget for SessionFrames<'_> {
    async fn deliver(&self, event: StreamEvent) -> bool {
        self.outbound
            .send(SessionEvent::Frame {
                request_id: self.request_id,
                event,
            })
            .await
            .is_ok()
    }

    async fn gone(&self) {
        // The session's own loop watches for the client leaving, so that it
        // can cancel on the server before the statement is dropped.
        std::future::pending::<()>().await
    }
}
