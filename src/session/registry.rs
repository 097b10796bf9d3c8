//! The open sessions, their limits, and how many ended for each reason.
//! Everything operators see (ListSessions, TerminateSession, the session
//! figures in GetPoolStats) comes from here. Each session records its
//! owner, so that a caller who is not an admin sees and ends only its own.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    audit::{Actor, Audit, SessionEndRecord},
    config::SessionSettings,
    db::transaction::Hold,
    error::Error,
    grpc::identity::Role,
};

/// Why a session ended. Every end is counted under one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EndReason {
    /// The client committed.
    Commit,
    /// The client rolled back.
    Rollback,
    /// The client's stream broke (cancelled, killed, reset, keepalive timeout).
    ClientGone,
    /// The client closed its side of the stream without committing.
    StreamEnded,
    /// No request arrived within the idle timeout.
    IdleTimeout,
    /// The session reached its maximum lifetime.
    MaxLifetime,
    /// `Admin.TerminateSession`.
    Terminated,
    /// sqlgate shut down.
    Shutdown,
    /// The database failed in a way that ended the session.
    Failed,
    /// A statement ended the session's transaction by itself (a stored
    /// procedure's COMMIT): sqlgate can no longer vouch for atomicity.
    TransactionLost,
    /// The Attach call's own deadline (its `grpc-timeout`) passed.
    CallDeadline,
}

impl EndReason {
    /// The name used in stats and logs.
    pub fn name(self) -> &'static str {
        match self {
            EndReason::Commit => "commit",
            EndReason::Rollback => "rollback",
            EndReason::ClientGone => "client_gone",
            EndReason::StreamEnded => "stream_ended",
            EndReason::IdleTimeout => "idle_timeout",
            EndReason::MaxLifetime => "max_lifetime",
            EndReason::Terminated => "terminated",
            EndReason::Shutdown => "shutdown",
            EndReason::Failed => "failed",
            EndReason::TransactionLost => "transaction_lost",
            EndReason::CallDeadline => "call_deadline",
        }
    }
}

/// What a session is doing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Waiting for the client's next request.
    Idle,
    /// Running a statement.
    Executing,
    /// The database aborted the transaction; only rollback helps.
    Aborted,
}

impl SessionState {
    /// The name shown by ListSessions.
    pub fn name(self) -> &'static str {
        match self {
            SessionState::Idle => "idle",
            SessionState::Executing => "executing",
            SessionState::Aborted => "aborted",
        }
    }
}

/// Who opened a session.
#[derive(Debug, Clone)]
pub struct SessionOwner {
    /// The caller's name (its identity; its address with authentication
    /// off): only this caller, or an admin, sees and ends the session.
    pub name: String,
    /// The client's address.
    pub peer: String,
    /// The caller's role: a reader's session is read-only at the database,
    /// whatever its `begin` asked for.
    pub role: Role,
    /// The `sqlgate-tag` values of the Attach call (request tags).
    pub tags: Vec<String>,
}

impl SessionOwner {
    /// The owner as the audit trail names it.
    pub(crate) fn actor(&self) -> Actor {
        Actor {
            caller: self.name.clone(),
            role: Some(self.role.name()),
            peer: Some(self.peer.clone()),
        }
    }
}

/// One open session, as operators see it.
#[derive(Debug)]
pub(crate) struct SessionEntry {
    /// Random, unguessable id.
    pub(crate) id: String,
    /// Who opened it.
    pub(crate) owner: SessionOwner,
    /// The client's labels (never data).
    pub(crate) labels: BTreeMap<String, String>,
    /// Wall-clock start, for display.
    pub(crate) started_at: SystemTime,
    started: Instant,
    /// What changes while the session runs, under one lock.
    activity: Mutex<Activity>,
    statements: AtomicU64,
    terminate: CancellationToken,
    ended: CancellationToken,
}

/// What a session is doing, and since when.
#[derive(Debug)]
struct Activity {
    last: Instant,
    state: SessionState,
    /// The statement running now (fingerprint only).
    fingerprint: Option<Arc<str>>,
}

/// A snapshot of one session for ListSessions.
#[derive(Debug, Clone)]
pub struct SessionSummary {
    /// See `SessionEntry::id`.
    pub id: String,
    /// The client's address.
    pub peer: String,
    /// The owner's name (see [`SessionOwner::name`]).
    pub caller: String,
    /// The owner's role.
    pub role: Role,
    /// See [`SessionOwner::tags`].
    pub tags: Vec<String>,
    /// See `SessionEntry::labels`.
    pub labels: BTreeMap<String, String>,
    /// The state now.
    pub state: SessionState,
    /// When it began.
    pub started_at: SystemTime,
    /// How long it has been open.
    pub age: Duration,
    /// How long since its last request.
    pub idle: Duration,
    /// The statement running now (fingerprint only).
    pub current_fingerprint: Option<String>,
    /// Statements run so far.
    pub statements: u64,
}

impl SessionEntry {
    /// Resolves when an operator asks for this session to end.
    pub(crate) async fn terminated(&self) {
        self.terminate.cancelled().await;
    }

    /// Runs `change` on the session's activity. A poisoned lock (a panic
    /// elsewhere) leaves the activity as it was: it is only reported.
    fn with_activity<T>(&self, change: impl FnOnce(&mut Activity) -> T) -> Option<T> {
        self.activity
            .lock()
            .ok()
            .map(|mut activity| change(&mut activity))
    }

    /// The client sent a request now (the idle timeout starts again).
    pub(crate) fn touch(&self) {
        self.with_activity(|activity| activity.last = Instant::now());
    }

    /// When the client last sent a request.
    pub(crate) fn last_activity(&self) -> Instant {
        self.with_activity(|activity| activity.last)
            .unwrap_or_else(Instant::now)
    }

    /// The database gave up on the transaction; only rollback helps.
    pub(crate) fn mark_aborted(&self) {
        self.with_activity(|activity| activity.state = SessionState::Aborted);
    }

    /// A statement starts running (an aborted session stays aborted).
    pub(crate) fn statement_started(&self, fingerprint: Arc<str>) {
        self.statements.fetch_add(1, Ordering::Relaxed);
        self.with_activity(|activity| {
            activity.fingerprint = Some(fingerprint);
            if activity.state != SessionState::Aborted {
                activity.state = SessionState::Executing;
            }
        });
    }

    /// The running statement ended, however it ended.
    pub(crate) fn statement_finished(&self) {
        self.with_activity(|activity| {
            activity.fingerprint = None;
            if activity.state == SessionState::Executing {
                activity.state = SessionState::Idle;
            }
        });
    }

    /// Statements run so far.
    pub(crate) fn statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    fn summary(&self) -> SessionSummary {
        let (state, last, current_fingerprint) = self
            .with_activity(|activity| {
                (
                    activity.state,
                    activity.last,
                    activity.fingerprint.as_deref().map(str::to_owned),
                )
            })
            .unwrap_or((SessionState::Idle, Instant::now(), None));
        SessionSummary {
            id: self.id.clone(),
            peer: self.owner.peer.clone(),
            caller: self.owner.name.clone(),
            role: self.owner.role,
            tags: self.owner.tags.clone(),
            labels: self.labels.clone(),
            state,
            started_at: self.started_at,
            age: self.started.elapsed(),
            idle: last.elapsed(),
            current_fingerprint,
            statements: self.statements(),
        }
    }
}

/// All open sessions and the counters of ended ones.
#[derive(Debug)]
pub struct SessionRegistry {
    open: Mutex<HashMap<String, Arc<SessionEntry>>>,
    ended: Mutex<BTreeMap<EndReason, u64>>,
    settings: SessionSettings,
    /// Sessions may hold at most this many pooled connections.
    max_open: usize,
    accepting: AtomicBool,
    shutdown: CancellationToken,
    /// Every session's task, so that shutdown can wait for them to end.
    tasks: TaskTracker,
    /// When shutdown began (set once, by [`SessionRegistry::shut_down`]).
    shutdown_began: std::sync::OnceLock<tokio::time::Instant>,
    /// The audit trail, when it is on (set once, at start-up).
    audit: std::sync::OnceLock<Audit>,
    /// Where session statements' durations go, when metrics are on (set
    /// once, at start-up).
    operations: std::sync::OnceLock<crate::telemetry::metrics::CallMetrics>,
}

impl SessionRegistry {
    /// A registry whose sessions may hold at most `max_pool_share` of a
    /// pool of `pool_size` connections, and at most `max_open` in all.
    pub fn new(settings: SessionSettings, pool_size: u32) -> Arc<Self> {
        let share = (f64::from(pool_size) * settings.max_pool_share).floor() as usize;
        let max_open = (settings.max_open as usize).min(share.max(1));
        Arc::new(Self {
            open: Mutex::new(HashMap::new()),
            ended: Mutex::new(BTreeMap::new()),
            settings,
            max_open,
            accepting: AtomicBool::new(true),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            shutdown_began: std::sync::OnceLock::new(),
            audit: std::sync::OnceLock::new(),
            operations: std::sync::OnceLock::new(),
        })
    }

    /// Records every session's statements and end in `audit` from now on.
    pub(crate) fn audit_with(&self, audit: Audit) {
        let _ = self.audit.set(audit);
    }

    /// The audit trail, when it is on.
    pub(crate) fn audit(&self) -> Option<&Audit> {
        self.audit.get()
    }

    /// Records every session statement's duration in `metrics` from now
    /// on (`db.client.operation.duration`, as Query calls are).
    pub(crate) fn measure_with(&self, metrics: crate::telemetry::metrics::CallMetrics) {
        let _ = self.operations.set(metrics);
    }

    /// Where session statements' durations go, when metrics are on.
    pub(crate) fn operations(&self) -> Option<&crate::telemetry::metrics::CallMetrics> {
        self.operations.get()
    }

    /// The session settings in force.
    pub fn settings(&self) -> &SessionSettings {
        &self.settings
    }

    /// Registers a new session, or refuses it when sqlgate is shutting
    /// down (UNAVAILABLE) or at its limit (RESOURCE_EXHAUSTED, retry later).
    pub(crate) fn open(
        self: &Arc<Self>,
        owner: SessionOwner,
        labels: BTreeMap<String, String>,
        hold: Hold,
    ) -> Result<SessionGuard, Error> {
        if !self.accepting.load(Ordering::Relaxed) {
            return Err(Error::ShuttingDown);
        }
        let mut open = self
            .open
            .lock()
            .map_err(|_| Error::Internal("session registry poisoned".to_owned()))?;
        if open.len() >= self.max_open {
            return Err(Error::SessionLimit(format!(
                "{} sessions are open, the most this server allows; try again shortly",
                open.len()
            )));
        }
        let entry = Arc::new(SessionEntry {
            id: uuid::Uuid::new_v4().to_string(),
            owner,
            labels,
            started_at: SystemTime::now(),
            started: Instant::now(),
            activity: Mutex::new(Activity {
                last: Instant::now(),
                state: SessionState::Idle,
                fingerprint: None,
            }),
            statements: AtomicU64::new(0),
            terminate: CancellationToken::new(),
            ended: CancellationToken::new(),
        });
        open.insert(entry.id.clone(), entry.clone());
        Ok(SessionGuard {
            registry: self.clone(),
            entry,
            hold,
            ended: false,
        })
    }

    /// The open sessions: all of them (`owner` `None`), or those of the
    /// caller named `owner`.
    pub fn list(&self, owner: Option<&str>) -> Vec<SessionSummary> {
        let mut sessions: Vec<_> = self
            .open
            .lock()
            .map(|open| {
                open.values()
                    .filter(|entry| owner.is_none_or(|name| entry.owner.name == name))
                    .map(|entry| entry.summary())
                    .collect()
            })
            .unwrap_or_default();
        sessions.sort_by_key(|session| session.started_at);
        sessions
    }

    /// Ends a session from outside and waits (up to `wait`) until it has
    /// rolled back: any session (`owner` `None`), or only one of the
    /// caller named `owner`. NOT_FOUND for an id that is not open — or not
    /// that caller's: whether another caller's session exists is not told.
    pub async fn terminate(
        &self,
        id: &str,
        owner: Option<&str>,
        wait: Duration,
    ) -> Result<(), Error> {
        let entry = self
            .open
            .lock()
            .ok()
            .and_then(|open| open.get(id).cloned())
            .filter(|entry| owner.is_none_or(|name| entry.owner.name == name))
            .ok_or_else(|| Error::SessionNotFound(id.to_owned()))?;
        entry.terminate.cancel();
        let _ = tokio::time::timeout(wait, entry.ended.cancelled()).await;
        Ok(())
    }

    /// Sessions open now.
    pub fn open_count(&self) -> usize {
        self.open.lock().map(|open| open.len()).unwrap_or_default()
    }

    /// Sessions ended so far, by reason name.
    pub fn ended_counts(&self) -> BTreeMap<&'static str, u64> {
        self.ended
            .lock()
            .map(|ended| ended.iter().map(|(r, n)| (r.name(), *n)).collect())
            .unwrap_or_default()
    }

    /// Runs a session's task, tracked so that shutdown can wait for it.
    pub(crate) fn spawn(&self, session: impl Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(session);
    }

    /// Stops taking sessions and ends the open ones (reason `shutdown`);
    /// waits up to `wait` for their tasks to have rolled back and ended.
    pub async fn shut_down(&self, wait: Duration) {
        self.accepting.store(false, Ordering::Relaxed);
        self.shutdown.cancel();
        self.tasks.close();
        if tokio::time::timeout(wait, self.tasks.wait()).await.is_err() {
            tracing::warn!(
                open = self.open_count(),
                "sessions still ending after the drain timeout"
            );
        }
    }

    /// Resolves when sqlgate shuts down.
    pub(crate) async fn shutting_down(&self) {
        self.shutdown.cancelled().await;
    }

    /// Resolves `grace` after shutdown began.
    pub(crate) async fn shutdown_plus(&self, grace: Duration) {
        self.shutting_down().await;
        let began = self
            .shutdown_began
            .get()
            .copied()
            .unwrap_or_else(tokio::time::Instant::now);
        tokio::time::sleep_until(began + grace).await;
    }

    fn close(&self, entry: &SessionEntry, reason: EndReason) {
        if let Ok(mut open) = self.open.lock() {
            open.remove(&entry.id);
        }
        if let Ok(mut ended) = self.ended.lock() {
            *ended.entry(reason).or_default() += 1;
        }
        if let Some(audit) = self.audit() {
            audit.session_end(SessionEndRecord {
                actor: entry.owner.actor(),
                session: entry.id.clone(),
                reason: reason.name(),
                statements: entry.statements(),
                duration: entry.started.elapsed(),
                labels: entry.labels.clone(),
            });
        }
        entry.ended.cancel();
    }
}

/// Holds a session's place in the registry, and its caller's place under
/// the limits; ending it counts the reason and gives both back — before
/// the client hears that the session ended, so that its next session may
/// begin at once. Dropped without [`SessionGuard::end`] (a panic), it
/// counts as `failed`.
#[derive(Debug)]
pub(crate) struct SessionGuard {
    registry: Arc<SessionRegistry>,
    entry: Arc<SessionEntry>,
    /// The caller's place under the limits, given back with the guard.
    #[expect(dead_code, reason = "held for its Drop")]
    hold: Hold,
    ended: bool,
}

impl SessionGuard {
    pub(crate) fn entry(&self) -> &Arc<SessionEntry> {
        &self.entry
    }

    /// Removes the session and counts why it ended.
    pub(crate) fn end(mut self, reason: EndReason) {
        self.ended = true;
        self.registry.close(&self.entry, reason);
        tracing::info!(session = %self.entry.id, reason = reason.name(), statements = self.entry.statements(), "session ended");
        // On the session's span, when traces are exported.
        crate::telemetry::traces::session_ended(reason.name(), self.entry.statements());
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        if !self.ended {
            self.registry.close(&self.entry, EndReason::Failed);
        }
    }
}
