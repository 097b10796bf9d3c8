//! A validated statement: SQL text within the size cap, parameters within
//! their count cap, a fingerprint that identifies the statement's shape in
//! logs without revealing any literal or parameter in it, and what it would
//! do to the pooled connection ([`Analysis`]), so that a statement which
//! would reach later callers is refused before it runs.

use std::sync::Arc;

use super::{analysed::Analysed, sql::Refusal, value::SqlValue};
use crate::{config::LimitSettings, db::Backend, error::Error};

/// One statement ready to run.
#[derive(Debug, Clone)]
pub struct Statement {
    /// The SQL as the caller sent it.
    pub sql: Arc<str>,
    /// Positional parameters.
    pub params: Vec<SqlValue>,
    /// See [`fingerprint`]; shared with the cache of analysed texts.
    pub fingerprint: Arc<str>,
    /// What the text does, read with `backend`'s lexer (once per distinct
    /// text: see [`Analysed`]).
    analysed: Arc<Analysed>,
    backend: Backend,
}

impl Statement {
    /// Validates `sql` and `params` against the limits, reading the text
    /// as `backend` will.
    pub fn new(
        sql: String,
        params: Vec<SqlValue>,
        limits: &LimitSettings,
        backend: Backend,
    ) -> Result<Self, Error> {
        if sql.len() > limits.max_statement_bytes {
            return Err(Error::invalid_request(
                "sql",
                format!(
                    "statement is {} bytes; the limit is {} bytes",
                    sql.len(),
                    limits.max_statement_bytes
                ),
            ));
        }
        Self::check_param_count(params.len(), limits)?;
        let analysed = Analysed::of(sql, backend);
        if analysed.analysis.is_empty() {
            return Err(Error::invalid_request("sql", "statement is empty"));
        }
        Ok(Self {
            sql: analysed.sql.clone(),
            params,
            fingerprint: analysed.fingerprint.clone(),
            analysed,
            backend,
        })
    }

    /// Refuses more than `limits.max_params` parameters. [`Statement::new`]
    /// applies it; it is public so that a decoder can refuse an oversized
    /// parameter list by its length, before decoding any of it.
    pub fn check_param_count(count: usize, limits: &LimitSettings) -> Result<(), Error> {
        if count > limits.max_params {
            return Err(Error::invalid_request(
                "params",
                format!("{count} parameters; the limit is {}", limits.max_params),
            ));
        }
        Ok(())
    }

    /// True for statements that only read (`SELECT`, `VALUES`, `SHOW`, …):
    /// they can run without a wrapping transaction, since a refused result
    /// leaves nothing half-done.
    pub fn is_plain_read(&self) -> bool {
        self.analysed.analysis.plain_read
    }

    /// True when the statement may change connection state that outlives
    /// it (see [`Analysis::leaves_state`]): its connection must be reset or
    /// closed before anyone else gets it.
    pub fn leaves_state(&self) -> bool {
        self.analysed.analysis.leaves_state
    }

    /// True unless the statement only reads and calls nothing that could
    /// write: a `SELECT` of a user function (`SELECT archive(42)`) may
    /// write, and its write is audited like an `UPDATE`'s.
    pub fn may_write(&self) -> bool {
        !self.is_plain_read() || self.leaves_state()
    }

    /// True for one write that returns no rows and changes nothing but
    /// data (see [`Analysis::single_write`]): as a whole transaction, it
    /// may run without BEGIN and COMMIT where the backend commits a lone
    /// statement by itself.
    pub fn is_single_write(&self) -> bool {
        self.analysed.analysis.single_write
    }

    /// The text with every literal replaced by `?`, for a span's
    /// `db.query.text`: computed once per distinct text (cached texts).
    pub fn sanitized_text(&self) -> Arc<str> {
        self.analysed.sanitized()
    }

    /// The number of parameters the text expects.
    pub fn expected_parameters(&self) -> usize {
        self.analysed.analysis.parameters
    }

    /// Refuses what a call (one transaction on a pooled connection) must
    /// not run; `batch_len` is the number of statements in the call.
    pub fn check_for_call(&self, batch_len: usize) -> Result<(), Error> {
        match &self.analysed.analysis.refusal {
            Some(Refusal::SessionState { what }) => Err(refuse(format!(
                "{what} would change the pooled connection for later callers; {}",
                self.set_instead()
            ))),
            Some(Refusal::TransactionControl { what }) => Err(refuse(format!(
                "{what}: each call runs in a transaction of its own; use a session \
                 (sqlgate.v1.Sessions/Attach) for a transaction across statements"
            ))),
            Some(_) => self.check_anywhere(),
            None if batch_len > 1 && self.analysed.analysis.implicit_commit => Err(refuse(
                "this statement commits implicitly on MySQL, which would break the batch's \
                 atomicity; run it on its own",
            )),
            None if batch_len > 1
                && self.backend == Backend::MySql
                && self.analysed.analysis.calls_procedure =>
            {
                Err(refuse(
                    "CALL in a batch: a MySQL procedure may commit, which would break the \
                     batch's atomicity; run it on its own",
                ))
            }
            None => Ok(()),
        }
    }

    /// Refuses what a session (whose transaction sqlgate began and ends)
    /// must not run. Session state is allowed: the session's connection is
    /// reset or closed before anyone else gets it.
    pub fn check_for_session(&self, read_only: bool) -> Result<(), Error> {
        if read_only && self.backend == Backend::MySql && self.analysed.analysis.calls_procedure {
            return Err(refuse(
                "a read-only session cannot CALL a procedure on MySQL: a procedure may end the \
                 read-only transaction and start a writing one",
            ));
        }
        match &self.analysed.analysis.refusal {
            Some(Refusal::SessionState { .. }) => Ok(()),
            Some(Refusal::TransactionControl { what }) => Err(refuse(format!(
                "{what}: a session's transaction is the one sqlgate began; end it with the \
                 session's commit or rollback message"
            ))),
            Some(_) => self.check_anywhere(),
            None if self.analysed.analysis.implicit_commit => Err(refuse(
                "this statement commits implicitly on MySQL, which would end the session's \
                 transaction; run it as a call outside the session",
            )),
            None => Ok(()),
        }
    }

    /// Refusals that hold in calls and sessions alike.
    fn check_anywhere(&self) -> Result<(), Error> {
        match &self.analysed.analysis.refusal {
            Some(Refusal::ConnectionObject { what, instead }) => Err(refuse(format!(
                "{what} is not supported through sqlgate: {instead}"
            ))),
            Some(Refusal::NamedParameters) => Err(refuse(
                "named parameters (:name, @name, $name) are not supported: parameters are \
                 positional, ?NNN or $N",
            )),
            Some(Refusal::SeveralStatements) => Err(refuse(
                "one statement per request: send the others as requests of their own, or \
                 together in ExecuteBatch",
            )),
            Some(Refusal::Copy) => Err(refuse(
                "COPY … FROM STDIN / TO STDOUT needs the copy protocol, which sqlgate does not \
                 relay; use INSERT with parameters, or ExecuteStream to read",
            )),
            Some(Refusal::OwnSetting { name }) => {
                let why = if matches!(
                    name.as_str(),
                    "statement_timeout"
                        | "client_connection_check_interval"
                        | "max_statement_time"
                        | "max_execution_time"
                ) {
                    "it bounds every call on the server; use the call's deadline instead"
                } else if matches!(name.as_str(), "tx_read_only" | "transaction_read_only") {
                    "it keeps a reader's calls read-only; a session's begin chooses read-only"
                } else {
                    "it decides how values are read and written, which would change them without a word"
                };
                Err(refuse(format!(
                    "{name} is set by sqlgate on every connection and cannot be changed: {why}"
                )))
            }
            Some(Refusal::Confinement { what }) => Err(refuse(format!(
                "{what} is not allowed: it reaches outside the database or outlives the call"
            ))),
            _ => Ok(()),
        }
    }

    fn set_instead(&self) -> &'static str {
        match self.backend {
            Backend::Postgres => {
                "use SET LOCAL (a call or batch runs in one transaction), or a session"
            }
            Backend::MySql => "use SET STATEMENT … FOR, or a session",
            Backend::Sqlite => "use a session",
        }
    }
}

/// The error for a statement sqlgate will not run.
fn refuse(message: impl Into<String>) -> Error {
    Error::invalid_request("sql", message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::fingerprint::{fingerprint, normalize, sanitized_text};

    #[test]
    fn sanitized_text_keeps_no_literal() {
        use crate::db::Backend;
        assert_eq!(
            sanitized_text(
                "SELECT * FROM t WHERE a = 'CANARY' AND b = 42 AND c = $1",
                Backend::Postgres
            ),
            "select * from t where a = ? and b = ? and c = $1"
        );
        assert_eq!(
            sanitized_text(
                "DO $body$ BEGIN PERFORM 'x'; END $body$; SELECT $$CANARY$$",
                Backend::Postgres
            ),
            "do ?; select ?"
        );
        assert_eq!(
            sanitized_text("SELECT \"CANARY\" FROM t WHERE x = ?", Backend::MySql),
            "select ? from t where x = ?"
        );
        assert_eq!(
            sanitized_text("SELECT \"Name\" FROM t", Backend::Postgres),
            "select \"Name\" from t"
        );
    }

    fn stmt(sql: &str) -> Result<Statement, Error> {
        Statement::new(
            sql.to_owned(),
            vec![],
            &LimitSettings::default(),
            Backend::Postgres,
        )
    }

    #[test]
    fn fingerprints_ignore_literals_comments_and_spacing() {
        assert_eq!(
            fingerprint("SELECT * FROM p WHERE name = 'Alice' AND id = 42"),
            fingerprint("select *  from p -- who\n where name = 'Bob' and id = 7")
        );
        assert_ne!(
            fingerprint("SELECT a FROM t"),
            fingerprint("SELECT b FROM t")
        );
        assert_eq!(
            fingerprint("SELECT $1, $2"),
            fingerprint("select $1, $2"),
            "placeholders are not literals"
        );
        assert_ne!(fingerprint("SELECT $1"), fingerprint("SELECT $2"));
    }

    #[test]
    fn normalizing_keeps_identifiers_and_unicode() {
        assert_eq!(
            normalize("SELECT \"Naïve Col\", x1, 42, 'Zoë' FROM Ünïcode WHERE a$1 = 3.5e2"),
            "select \"Naïve Col\", x1, ?, ? from ünïcode where a$1 = ?"
        );
        assert_eq!(normalize("select 1 /* unterminated"), "select ?");
        assert_eq!(normalize("'unterminated"), "?");
    }

    proptest::proptest! {
        #[test]
        fn normalizing_never_panics(sql in "\\PC{0,80}") {
            let _ = normalize(&sql);
            let _ = fingerprint(&sql);
        }
    }

    #[test]
    fn empty_and_comment_only_statements_are_refused() {
        for sql in ["", "   \n\t", "-- nothing", "/* nothing */"] {
            let err = stmt(sql).expect_err("must refuse");
            assert!(matches!(err, Error::InvalidRequest { ref field, .. } if field == "sql"));
        }
    }

    #[test]
    fn plain_reads_are_recognised() {
        assert!(stmt("  /* x */ SELECT 1").expect("ok").is_plain_read());
        assert!(stmt("(select 1)").expect("ok").is_plain_read());
        assert!(!stmt("SELECT 1 INTO t").expect("ok").is_plain_read());
        assert!(
            !stmt("INSERT INTO t VALUES (1)")
                .expect("ok")
                .is_plain_read()
        );
        assert!(
            !stmt("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d")
                .expect("ok")
                .is_plain_read()
        );
    }

    #[test]
    fn too_many_parameters_are_refused() {
        let limits = LimitSettings {
            max_params: 2,
            ..LimitSettings::default()
        };
        let err = Statement::new(
            "SELECT 1".into(),
            vec![SqlValue::Null; 3],
            &limits,
            Backend::Postgres,
        )
        .expect_err("too many");
        assert!(
            matches!(err, Error::InvalidRequest { ref field, ref message }
                if field == "params" && message == "3 parameters; the limit is 2"),
            "{err:?}"
        );
        assert!(
            Statement::new(
                "SELECT 1".into(),
                vec![SqlValue::Null; 2],
                &limits,
                Backend::Postgres
            )
            .is_ok()
        );
    }

    #[test]
    fn oversized_statements_are_refused() {
        let limits = LimitSettings {
            max_statement_bytes: 10,
            ..LimitSettings::default()
        };
        let err = Statement::new(
            "SELECT 1234567890".into(),
            vec![],
            &limits,
            Backend::Postgres,
        )
        .expect_err("too big");
        assert!(err.to_string().contains("limit is 10 bytes"));
    }
}
