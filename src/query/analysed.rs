//! What reading a statement's text yields — its [`Analysis`] (refusal,
//! read-only, placeholder count, …) and its fingerprint — kept for the
//! texts callers send again and again.
//!
//! Callers repeat the same few statements with different parameters; the
//! lexer and the fingerprint's normalisation each read the whole text on
//! every call, and their answer depends on the text and the backend only.
//! A bounded map keyed by the text answers a repeat from memory. A hostile
//! caller sending a new text every call gains nothing: the map holds at
//! most [`CAPACITY`] texts of at most [`MAX_CACHED_BYTES`] each (so a few
//! MiB), longer texts are read afresh every time, and a full map gives up
//! one entry for each new one. The map's hasher is std's keyed SipHash,
//! so chosen texts cannot pile into one bucket.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock, PoisonError},
};

use super::{
    fingerprint::{fingerprint, sanitized_text},
    sql::Analysis,
};
use crate::db::Backend;

/// Distinct texts kept per backend.
const CAPACITY: usize = 1024;

/// Longer texts are read afresh on every call instead of being kept.
const MAX_CACHED_BYTES: usize = 4096;

/// One statement text, read.
#[derive(Debug)]
pub(crate) struct Analysed {
    /// The text itself, shared by every statement made from it.
    pub(crate) sql: Arc<str>,
    /// What the text does.
    pub(crate) analysis: Analysis,
    /// See [`fingerprint`]; shared by every statement, log line and
    /// session made from this text, never copied per call.
    pub(crate) fingerprint: Arc<str>,
    /// The backend that read it (its sanitizing rules).
    backend: Backend,
    /// See [`sanitized_text`]: made the first time a span asks for it
    /// (traces on), then shared, so a traced call does not scan its text
    /// again.
    sanitized: OnceLock<Arc<str>>,
}

impl Analysed {
    /// Reads `sql` as `backend` does, or takes the reading of the same
    /// text from the cache.
    pub(crate) fn of(sql: String, backend: Backend) -> Arc<Self> {
        if sql.len() > MAX_CACHED_BYTES {
            return Arc::new(Self::read(sql.into(), backend));
        }
        let cache = cache(backend);
        if let Some(known) = lock(cache).get(sql.as_str()) {
            return known.clone();
        }
        // Read outside the lock: other calls are not held up by a long text.
        let read = Arc::new(Self::read(sql.into(), backend));
        let mut entries = lock(cache);
        if entries.len() >= CAPACITY {
            // Any entry: a hot text that goes is read again on its next
            // call, once.
            let gone = entries.keys().next().cloned();
            if let Some(gone) = gone {
                entries.remove(&gone);
            }
        }
        entries.insert(read.sql.clone(), read.clone());
        read
    }

    fn read(sql: Arc<str>, backend: Backend) -> Self {
        Self {
            analysis: Analysis::of(&sql, backend),
            fingerprint: fingerprint(&sql).into(),
            sql,
            backend,
            sanitized: OnceLock::new(),
        }
    }

    /// The text with every literal replaced by `?` (a span's
    /// `db.query.text`), made once per text.
    pub(crate) fn sanitized(&self) -> Arc<str> {
        self.sanitized
            .get_or_init(|| sanitized_text(&self.sql, self.backend).into())
            .clone()
    }
}

type Entries = HashMap<Arc<str>, Arc<Analysed>>;

/// The cache of `backend`'s readings (one process may serve tests of
/// several backends; a text reads differently on each).
fn cache(backend: Backend) -> &'static Mutex<Entries> {
    static POSTGRES: OnceLock<Mutex<Entries>> = OnceLock::new();
    static MYSQL: OnceLock<Mutex<Entries>> = OnceLock::new();
    static SQLITE: OnceLock<Mutex<Entries>> = OnceLock::new();
    let cell = match backend {
        Backend::Postgres => &POSTGRES,
        Backend::MySql => &MYSQL,
        Backend::Sqlite => &SQLITE,
    };
    cell.get_or_init(|| Mutex::new(HashMap::with_capacity(CAPACITY)))
}

/// The map, whatever a panicking holder left: entries are inserted whole.
fn lock(cache: &Mutex<Entries>) -> std::sync::MutexGuard<'_, Entries> {
    cache.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_text_is_read_once() {
        let sql = "SELECT 1 /* analysed: repeated */";
        let first = Analysed::of(sql.to_owned(), Backend::Postgres);
        let second = Analysed::of(sql.to_owned(), Backend::Postgres);
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(*first.fingerprint, fingerprint(sql));
    }

    #[test]
    fn each_backend_reads_for_itself() {
        // `:name` is a named parameter (refused) on SQLite only.
        let sql = "SELECT :name /* analysed: per backend */";
        let postgres = Analysed::of(sql.to_owned(), Backend::Postgres);
        let sqlite = Analysed::of(sql.to_owned(), Backend::Sqlite);
        assert_eq!(postgres.analysis, Analysis::of(sql, Backend::Postgres));
        assert_eq!(sqlite.analysis, Analysis::of(sql, Backend::Sqlite));
        assert_ne!(postgres.analysis, sqlite.analysis);
    }

    #[test]
    fn the_cache_stays_bounded_and_long_texts_are_not_kept() {
        for i in 0..CAPACITY + 50 {
            Analysed::of(format!("SELECT {i} /* analysed: flood */"), Backend::MySql);
        }
        assert!(lock(cache(Backend::MySql)).len() <= CAPACITY);
        let long = format!("SELECT '{}'", "x".repeat(MAX_CACHED_BYTES));
        let first = Analysed::of(long.clone(), Backend::MySql);
        let second = Analysed::of(long, Backend::MySql);
        assert!(!Arc::ptr_eq(&first, &second));
        assert_eq!(first.analysis, second.analysis);
    }
}
