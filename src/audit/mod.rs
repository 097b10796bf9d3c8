//! The audit trail: one JSON line per statement and per session end —
//! who (caller, role, address), when, which session, the statement's
//! fingerprint, operation and the tables it names, rows returned and
//! affected, duration, outcome — and never a parameter value or a row.
//! Written to its own sink (`audit.sink`: `stdout` or a file), apart from
//! the diagnostic log. The schema is documented in the README
//! (Observability → Audit trail).
//!
//! The call path only hands over what it has (the statement's text stays
//! behind an `Arc`); sanitizing, parsing and formatting happen on the
//! writer's thread.

pub(crate) mod prepare;
mod sink;
pub(crate) mod table;
mod tables;

use std::{
    collections::BTreeMap,
    sync::{Arc, mpsc},
    time::{Duration, SystemTime},
};

use serde_json::json;
use tonic::Code;

use crate::{db::Backend, query::fingerprint::sanitized_text, telemetry::names::code_name};

/// Who did it, as every event names them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Actor {
    /// The caller: its identity's name, else its address.
    pub(crate) caller: String,
    /// Its role, when authenticated.
    pub(crate) role: Option<&'static str>,
    /// The client's address.
    pub(crate) peer: Option<String>,
}

/// One statement that ran (or was refused by the database).
#[derive(Debug)]
pub(crate) struct StatementRecord {
    /// Who ran it.
    pub(crate) actor: Actor,
    /// `sqlgate.v1.Query/Execute`, … or `sqlgate.v1.Sessions/Attach`.
    pub(crate) method: &'static str,
    /// The session it ran in, if any.
    pub(crate) session: Option<String>,
    /// The caller's text: only sanitized and parsed, never written.
    pub(crate) sql: Arc<str>,
    /// Its fingerprint.
    pub(crate) fingerprint: Arc<str>,
    /// Rows sent back, and rows the database says it changed.
    pub(crate) rows_returned: u64,
    /// See above.
    pub(crate) rows_affected: u64,
    /// How long it took (for a batch: the whole batch).
    pub(crate) duration: Duration,
    /// The gRPC code the caller got.
    pub(crate) code: Code,
    /// The database's SQLSTATE when it refused.
    pub(crate) sqlstate: Option<String>,
    /// The caller's `sqlgate-tag` values.
    pub(crate) tags: Vec<String>,
}

/// A session that ended.
#[derive(Debug)]
pub(crate) struct SessionEndRecord {
    /// Who opened it.
    pub(crate) actor: Actor,
    /// Its id.
    pub(crate) session: String,
    /// Why it ended (`commit`, `rollback`, `client_gone`…).
    pub(crate) reason: &'static str,
    /// Statements it ran.
    pub(crate) statements: u64,
    /// Its whole life.
    pub(crate) duration: Duration,
    /// Its labels (never data).
    pub(crate) labels: BTreeMap<String, String>,
}

enum Record {
    Statement(StatementRecord),
    SessionEnd(SessionEndRecord),
}

/// Records waiting for the writer; past this (a sink that stopped taking
/// lines) new events are dropped, each drop logged as an error, rather
/// than holding calls or growing memory without bound.
const QUEUE: usize = 65_536;

/// The audit trail's handle: cheap to clone; `None` where it is off.
#[derive(Debug, Clone)]
pub(crate) struct Audit {
    records: mpsc::SyncSender<(SystemTime, RecordBox)>,
}

/// A record on its way to the writer.
struct RecordBox(Record);

impl std::fmt::Debug for RecordBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Record")
    }
}

impl Audit {
    /// The trail `sink` names (`stdout` or a file path), for statements
    /// run on `backend`; `None` when `sink` is empty.
    pub(crate) fn start(sink: &str, backend: Backend) -> Result<Option<Self>, String> {
        let sink = sink.trim();
        if sink.is_empty() {
            return Ok(None);
        }
        let lines = sink::start(sink)?;
        let (records, inbox) = mpsc::sync_channel::<(SystemTime, RecordBox)>(QUEUE);
        std::thread::Builder::new()
            .name("sqlgate-audit-format".to_owned())
            .spawn(move || {
                while let Ok((time, RecordBox(record))) = inbox.recv() {
                    if lines.send(format_line(time, record, backend)).is_err() {
                        return;
                    }
                }
            })
            .map_err(|err| format!("cannot start the audit formatter: {err}"))?;
        Ok(Some(Self { records }))
    }

    /// Records a statement.
    pub(crate) fn statement(&self, record: StatementRecord) {
        self.queue(Record::Statement(record));
    }

    /// Records a session's end.
    pub(crate) fn session_end(&self, record: SessionEndRecord) {
        self.queue(Record::SessionEnd(record));
    }

    /// Hands `record` to the writer without waiting.
    fn queue(&self, record: Record) {
        if let Err(mpsc::TrySendError::Full(_)) = self
            .records
            .try_send((SystemTime::now(), RecordBox(record)))
        {
            tracing::error!("audit: the sink is not keeping up; an audit event was dropped");
        }
    }
}

/// One event as its JSON line.
fn format_line(time: SystemTime, record: Record, backend: Backend) -> String {
    let time = chrono::DateTime::<chrono::Utc>::from(time)
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let event = match record {
        Record::Statement(s) => {
            let (operation, tables) = tables::describe(&sanitized_text(&s.sql, backend), backend);
            json!({
                "time": time,
                "event": "statement",
                "caller": s.actor.caller,
                "role": s.actor.role,
                "peer": s.actor.peer,
                "method": s.method,
                "session": s.session,
                "fingerprint": &*s.fingerprint,
                "operation": operation,
                "tables": tables,
                "rows_returned": s.rows_returned,
                "rows_affected": s.rows_affected,
                "duration_ms": s.duration.as_secs_f64() * 1000.0,
                "code": code_name(s.code),
                "sqlstate": s.sqlstate,
                "tags": s.tags,
            })
        }
        Record::SessionEnd(s) => json!({
            "time": time,
            "event": "session_end",
            "caller": s.actor.caller,
            "role": s.actor.role,
            "peer": s.actor.peer,
            "session": s.session,
            "reason": s.reason,
            "statements": s.statements,
            "duration_ms": s.duration.as_secs_f64() * 1000.0,
            "labels": s.labels,
        }),
    };
    event.to_string()
}
