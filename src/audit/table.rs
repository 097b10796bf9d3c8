//! The audit table (`audit.table`): for a write, its audit record is
//! inserted into a table of the database itself, in the same transaction
//! as the write, so that an audited write and its record commit or roll
//! back together. The rows are the JSON statement event's fields (never a
//! parameter value or a row).
//!
//! The table and its rows are described once here, with sea-orm's query
//! builder (`sea_query`), so that each backend gets its own DDL and
//! quoting. The rows a unit of work stages are sent ahead of its COMMIT, in
//! the same round trip (see `Checkout::stage_audit_row`): no round trip
//! more than the write's own transaction. sqlgate never reads the table.

use std::{
    borrow::Cow,
    time::{Duration, SystemTime},
};

use sea_orm::sea_query::{
    Alias, ColumnDef, Expr, Iden, InsertStatement, MysqlQueryBuilder, PostgresQueryBuilder, Query,
    SqliteQueryBuilder, Table, TableCreateStatement, TableRef, Value,
};

use super::{Actor, tables};
use crate::{db::Backend, error::Error, query::Statement};

/// The table's columns, in order.
#[derive(Debug, Clone, Copy)]
enum Column {
    Id,
    Time,
    Event,
    Caller,
    Role,
    Peer,
    Method,
    Session,
    Fingerprint,
    Operation,
    Tables,
    RowsReturned,
    RowsAffected,
    DurationMs,
    Code,
    Sqlstate,
    Tags,
}

impl Column {
    const ALL: [Column; 17] = [
        Column::Id,
        Column::Time,
        Column::Event,
        Column::Caller,
        Column::Role,
        Column::Peer,
        Column::Method,
        Column::Session,
        Column::Fingerprint,
        Column::Operation,
        Column::Tables,
        Column::RowsReturned,
        Column::RowsAffected,
        Column::DurationMs,
        Column::Code,
        Column::Sqlstate,
        Column::Tags,
    ];

    /// The column's definition; every text column is bounded (MySQL
    /// cannot index or default unbounded text, and a row stays small).
    fn definition(self) -> ColumnDef {
        let mut column = ColumnDef::new(self);
        match self {
            Column::Id => column.string_len(36).not_null().primary_key(),
            Column::Time => column.string_len(32).not_null(),
            Column::Event | Column::Role | Column::Operation | Column::Code => {
                column.string_len(32).not_null()
            }
            Column::Sqlstate => column.string_len(8).null(),
            Column::Fingerprint => column.string_len(16).not_null(),
            Column::Caller | Column::Peer | Column::Method | Column::Session => {
                column.string_len(255).null()
            }
            Column::Tables | Column::Tags => column.text().not_null(),
            Column::RowsReturned | Column::RowsAffected => column.big_integer().not_null(),
            Column::DurationMs => column.double().not_null(),
        };
        column
    }
}

impl Iden for Column {
    fn quoted(&self) -> Cow<'static, str> {
        Cow::Borrowed(self.unquoted_static())
    }

    fn unquoted(&self) -> &str {
        self.unquoted_static()
    }
}

impl Column {
    fn unquoted_static(self) -> &'static str {
        match self {
            Column::Id => "id",
            Column::Time => "time",
            Column::Event => "event",
            Column::Caller => "caller",
            Column::Role => "role",
            Column::Peer => "peer",
            Column::Method => "method",
            Column::Session => "session",
            Column::Fingerprint => "fingerprint",
            Column::Operation => "operation",
            Column::Tables => "tables",
            Column::RowsReturned => "rows_returned",
            Column::RowsAffected => "rows_affected",
            Column::DurationMs => "duration_ms",
            Column::Code => "code",
            Column::Sqlstate => "sqlstate",
            Column::Tags => "tags",
        }
    }
}

/// The longest caller, peer, method or session id kept (the column's size).
const MAX_TEXT: usize = 255;

/// The audit table of one deployment: its name and backend.
#[derive(Debug, Clone)]
pub(crate) struct AuditTable {
    /// `table` or `schema.table`, as configured (checked to be plain
    /// identifiers by the settings' validation).
    name: String,
    /// The last part of the name, lower-cased: what a statement naming
    /// the table contains.
    word: String,
    backend: Backend,
}

impl AuditTable {
    /// The table `name` (`table` or `schema.table`) on `backend`; `None`
    /// when `name` is empty (the audit table is off).
    pub(crate) fn new(name: &str, backend: Backend) -> Option<Self> {
        let name = name.trim();
        if name.is_empty() {
            return None;
        }
        let word = name.rsplit('.').next().unwrap_or(name).to_ascii_lowercase();
        Some(Self {
            name: name.to_owned(),
            word,
            backend,
        })
    }

    /// The configured name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    fn table_ref(&self) -> TableRef {
        match self.name.split_once('.') {
            Some((schema, table)) => (Alias::new(schema), Alias::new(table)).into(),
            None => Alias::new(self.name.as_str()).into(),
        }
    }

    /// The table's DDL for this backend (`CREATE TABLE IF NOT EXISTS`):
    /// run at start-up when `audit.create_table` is on, and printed in the
    /// README for operators who create it themselves.
    pub(crate) fn create_sql(&self) -> String {
        let mut create: TableCreateStatement = Table::create();
        create.table(self.table_ref()).if_not_exists();
        for column in Column::ALL {
            create.col(column.definition());
        }
        match self.backend {
            Backend::Postgres => create.to_string(PostgresQueryBuilder),
            Backend::MySql => create.to_string(MysqlQueryBuilder),
            Backend::Sqlite => create.to_string(SqliteQueryBuilder),
        }
    }

    /// Refuses `sql` (PERMISSION_DENIED) when it names the audit table,
    /// or may undo part of a transaction (`SAVEPOINT`, `ROLLBACK TO`,
    /// `RELEASE`): a write rolled back to a savepoint would otherwise keep
    /// the audit row staged for it, which commits with the transaction.
    pub(crate) fn check(&self, sql: &str) -> Result<(), Error> {
        let text = searchable_text(sql, self.backend);
        if self.is_named_in(&text) {
            return Err(Error::Forbidden(format!(
                "statements may not name the audit table {}",
                self.name
            )));
        }
        if ["savepoint", "rollback", "release"]
            .iter()
            .any(|word| contains_word(&text, word))
        {
            return Err(Error::Forbidden(format!(
                "savepoints (SAVEPOINT, ROLLBACK TO, RELEASE) are refused while the audit table \
                 {} is on: a write rolled back to a savepoint would keep its audit row",
                self.name
            )));
        }
        Ok(())
    }

    /// Whether lower-cased `text` may name the audit table: its name as a word
    /// anywhere in the raw text, in any case — inside literals, comments
    /// and dollar-quoted bodies too, because a backend may read those as
    /// names (SQLite takes `DELETE FROM 'sqlgate_audit'` as a table name,
    /// MySQL runs `/*! … */` as code, PostgreSQL runs a `DO $$ … $$` body) —
    /// or a PostgreSQL Unicode-escaped identifier (`U&"…"`), which can
    /// spell any name. Such a statement is refused, so that a caller
    /// cannot forge, read or erase audit rows through sqlgate; a few
    /// statements that only mention the name in a string are refused too.
    /// Dynamic SQL that builds the name from pieces gets past this; only
    /// the database's grants stop that (see the README).
    fn is_named_in(&self, text: &str) -> bool {
        if self.backend == Backend::Postgres && text.contains("u&\"") {
            return true;
        }
        contains_word(text, &self.word)
    }

    /// [`AuditTable::is_named_in`] for a statement as a caller wrote it.
    #[cfg(test)]
    fn is_named_by(&self, sql: &str) -> bool {
        self.is_named_in(&searchable_text(sql, self.backend))
    }

    /// The INSERT of one audit row: `row` as the JSON statement event has
    /// it, with the values written into the text by the backend's own
    /// quoting (the row is sent ahead of the COMMIT as plain text, so
    /// that it takes no prepared-statement slot and no round trip).
    pub(crate) fn insert_sql(&self, row: &AuditRow<'_>) -> String {
        let (operation, tables) = tables::describe(row.sanitized, self.backend);
        let time = chrono::DateTime::<chrono::Utc>::from(SystemTime::now())
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let values: [Value; 17] = [
            uuid::Uuid::new_v4().to_string().into(),
            time.into(),
            "statement".into(),
            bounded(&row.who.actor.caller).into(),
            row.who.actor.role.unwrap_or("").into(),
            row.who.actor.peer.as_deref().map(bounded).into(),
            row.who.method.into(),
            row.who.session.as_deref().map(bounded).into(),
            row.fingerprint.into(),
            operation.into(),
            json_list(&tables).into(),
            clamp(row.rows_returned).into(),
            clamp(row.rows_affected).into(),
            (row.duration.as_secs_f64() * 1000.0).into(),
            "OK".into(),
            Option::<String>::None.into(),
            json_list(&row.who.tags).into(),
        ];
        let mut insert: InsertStatement = Query::insert();
        insert.into_table(self.table_ref()).columns(Column::ALL);
        // The values match the columns in number: this cannot fail.
        let _ = insert.values(values.map(|value| self.literal(value)));
        match self.backend {
            Backend::Postgres => insert.to_string(PostgresQueryBuilder),
            Backend::MySql => insert.to_string(MysqlQueryBuilder),
            Backend::Sqlite => insert.to_string(SqliteQueryBuilder),
        }
    }
}

impl AuditTable {
    /// `value` as a literal of the INSERT. On MySQL a text is written as a
    /// hex literal (`_utf8mb4 X'…'`): the builder's quoting escapes `'`
    /// with a backslash, which a server in `NO_BACKSLASH_ESCAPES` mode
    /// would read as the string's end — and callers choose some of these
    /// texts (their identity's name, a statement's identifiers). A hex
    /// literal reads the same whatever the `sql_mode`.
    fn literal(&self, value: Value) -> Expr {
        match (self.backend, value) {
            (Backend::MySql, Value::String(Some(text))) => {
                let hex: String = text.bytes().map(|byte| format!("{byte:02X}")).collect();
                Expr::cust(format!("_utf8mb4 X'{hex}'"))
            }
            (_, value) => value.into(),
        }
    }
}

/// Refuses `statement` when the audit table is on and the statement may
/// name it or undo part of a transaction (see [`AuditTable::check`]): the
/// one check that calls, streams and sessions all make before running a
/// statement.
pub(crate) fn check_statement(
    table: Option<&AuditTable>,
    statement: &Statement,
) -> Result<(), Error> {
    table.map_or(Ok(()), |table| table.check(&statement.sql))
}

/// `sql` as word searches must see it: lower-cased, and on MySQL with the
/// version number of an executable comment blanked out — the server reads
/// the code right after it as a word of its own (`/*!50000sqlgate_audit*/`
/// names `sqlgate_audit`), where a search would see
/// `50000sqlgate_audit`. Same length as `sql`.
fn searchable_text(sql: &str, backend: Backend) -> String {
    let text = sql.to_ascii_lowercase();
    if backend != Backend::MySql || !(text.contains("/*!") || text.contains("/*m!")) {
        return text;
    }
    let mut blanked = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(at) = rest.find("/*") {
        let (before, after) = rest.split_at(at + 2);
        blanked.push_str(before);
        let marker = if after.starts_with('!') {
            1
        } else if after.starts_with("m!") {
            2
        } else {
            0
        };
        let (marker, code) = after.split_at(marker);
        blanked.push_str(marker);
        let digits = if marker.is_empty() {
            0
        } else {
            code.bytes().take_while(u8::is_ascii_digit).count()
        };
        blanked.extend(std::iter::repeat_n(' ', digits));
        rest = code.get(digits..).unwrap_or_default();
    }
    blanked.push_str(rest);
    blanked
}

/// Whether lower-cased `text` holds `word` (lower case) as a whole word:
/// not inside a longer identifier (`sqlgate_audit_notes`, `released`).
fn contains_word(text: &str, word: &str) -> bool {
    let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'$';
    text.match_indices(word).any(|(at, found)| {
        let before = at
            .checked_sub(1)
            .and_then(|i| text.as_bytes().get(i))
            .copied();
        let after = text.as_bytes().get(at + found.len()).copied();
        !before.is_some_and(is_word) && !after.is_some_and(is_word)
    })
}

/// Who writes, for every audit row of a call or a session.
#[derive(Debug, Clone)]
pub(crate) struct AuditWriter {
    /// Where the rows go.
    pub(crate) table: AuditTable,
    /// Who the caller is.
    pub(crate) actor: Actor,
    /// The gRPC method (`sqlgate.v1.Query/Execute`, …).
    pub(crate) method: &'static str,
    /// The session, for a session's writes.
    pub(crate) session: Option<String>,
    /// The caller's `sqlgate-tag` values.
    pub(crate) tags: Vec<String>,
}

impl AuditWriter {
    /// The INSERT of the audit row of a statement whose text, literals
    /// replaced (`sanitized`: [`Statement::sanitized_text`], made once per
    /// distinct text), is parsed for its operation and tables; it changed
    /// `rows_affected` rows and returned `rows_returned`, in `duration`.
    pub(crate) fn row_sql(
        &self,
        sanitized: &str,
        fingerprint: &str,
        rows: (u64, u64),
        duration: Duration,
    ) -> String {
        self.table.insert_sql(&AuditRow {
            who: self,
            sanitized,
            fingerprint,
            rows_returned: rows.0,
            rows_affected: rows.1,
            duration,
        })
    }
}

/// One statement's audit row.
#[derive(Debug)]
pub(crate) struct AuditRow<'a> {
    who: &'a AuditWriter,
    /// The statement's text with every literal replaced by `?`.
    sanitized: &'a str,
    fingerprint: &'a str,
    rows_returned: u64,
    rows_affected: u64,
    duration: Duration,
}

/// `text`, cut to the column's size on a character boundary.
fn bounded(text: &str) -> String {
    let mut end = text.len().min(MAX_TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// A count as a signed column holds it.
fn clamp(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// A list as the JSON event writes it (`["a","b"]`).
fn json_list(items: &[String]) -> String {
    serde_json::Value::from(items.to_vec()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mysql_executable_comment_version_does_not_hide_the_word_after_it() {
        assert_eq!(
            searchable_text("A /*!50000B*/ /*M!1C*/ /*1D*/", Backend::MySql),
            "a /*!     b*/ /*m! c*/ /*1d*/"
        );
        // Not MySQL: such comments are comments, left as they are.
        assert_eq!(
            searchable_text("/*!50000B*/", Backend::Postgres),
            "/*!50000b*/"
        );
        let table = AuditTable::new("sqlgate_audit", Backend::MySql).expect("a name");
        assert!(table.is_named_by("DELETE FROM /*!50000sqlgate_audit*/"));
        assert!(table.check("/*!50000ROLLBACK*/ TO SAVEPOINT s").is_err());
    }

    fn writer(backend: Backend) -> AuditWriter {
        AuditWriter {
            table: AuditTable::new("sqlgate_audit", backend).expect("a name"),
            actor: Actor {
                caller: "o'brien".to_owned(),
                role: Some("writer"),
                peer: Some("127.0.0.1:5".to_owned()),
            },
            method: "sqlgate.v1.Query/Execute",
            session: None,
            tags: vec!["t1".to_owned()],
        }
    }

    #[test]
    fn a_row_names_tables_and_never_a_literal() {
        for backend in [Backend::Postgres, Backend::MySql, Backend::Sqlite] {
            // The text a statement carries, sanitized once per text.
            let statement = Statement::new(
                "insert into notes (body) values ('CANARY-PHI-1') ".to_owned(),
                Vec::new(),
                &crate::config::LimitSettings::default(),
                backend,
            )
            .expect("a statement");
            let sql = writer(backend).row_sql(
                &statement.sanitized_text(),
                &statement.fingerprint,
                (0, 1),
                Duration::from_millis(3),
            );
            // MySQL's texts are hex literals; PostgreSQL's `E'…'` escape `'`
            // with a backslash (read so whatever the server's settings).
            let shown = |text: &str| match backend {
                Backend::MySql => text.bytes().map(|byte| format!("{byte:02X}")).collect(),
                Backend::Postgres => text.replace('\'', "\\'"),
                Backend::Sqlite => text.replace('\'', "''"),
            };
            assert!(!sql.contains(&shown("CANARY")), "{sql}");
            assert!(sql.contains(&shown("notes")), "{sql}");
            assert!(sql.contains(&shown("o'brien")), "{sql}");
        }
    }

    #[test]
    fn the_ddl_names_every_column_once() {
        for backend in [Backend::Postgres, Backend::MySql, Backend::Sqlite] {
            let ddl = writer(backend).table.create_sql();
            assert!(ddl.starts_with("CREATE TABLE IF NOT EXISTS"), "{ddl}");
            let quote = if backend == Backend::MySql { '`' } else { '"' };
            for column in Column::ALL {
                let quoted = format!("{quote}{}{quote} ", column.unquoted());
                assert_eq!(ddl.matches(&quoted).count(), 1, "{quoted} in {ddl}");
            }
        }
    }

    #[test]
    fn statements_naming_the_table_are_recognised() {
        let table = AuditTable::new("audit.SQLGATE_AUDIT", Backend::Postgres).expect("a name");
        assert!(table.is_named_by("delete from sqlgate_audit"));
        assert!(table.is_named_by("select * from audit.\"sqlgate_audit\""));
        assert!(table.is_named_by("UPDATE Sqlgate_Audit set code = 'x'"));
        assert!(!table.is_named_by("select * from sqlgate_audit_copy"));
        // Read as a name by some backend, or able to spell any name.
        assert!(table.is_named_by("select 'sqlgate_audit'"));
        assert!(table.is_named_by(r#"insert into U&"sqlgate\005faudit" values (1)"#));
        assert!(table.is_named_by("DO $$ BEGIN DELETE FROM sqlgate_audit; END $$"));
        let table = AuditTable::new("sqlgate_audit", Backend::MySql).expect("a name");
        assert!(table.is_named_by("truncate `sqlgate_audit`"));
        assert!(table.is_named_by("DELETE FROM /*! sqlgate_audit */"));
        let table = AuditTable::new("sqlgate_audit", Backend::Sqlite).expect("a name");
        assert!(table.is_named_by("DELETE FROM 'sqlgate_audit'"));
        assert!(!table.is_named_by("DELETE FROM notes WHERE tag = 'sqlgate_auditor'"));
    }

    #[test]
    fn savepoints_are_refused_while_the_table_is_on() {
        let table = AuditTable::new("sqlgate_audit", Backend::Postgres).expect("a name");
        for sql in [
            "SAVEPOINT s",
            "rollback to s",
            "/* x */ ROLLBACK TO SAVEPOINT s",
            "RELEASE SAVEPOINT s",
        ] {
            assert!(table.check(sql).is_err(), "{sql}");
        }
        for sql in ["UPDATE releases SET released = true", "SELECT 1"] {
            assert!(table.check(sql).is_ok(), "{sql}");
        }
    }

    #[test]
    fn mysql_texts_are_hex_literals_whatever_the_sql_mode() {
        let table = AuditTable::new("sqlgate_audit", Backend::MySql).expect("a name");
        let quoted = table.literal(Value::String(Some("a\\'; DROP TABLE t; --".to_owned())));
        let insert = {
            let mut insert: InsertStatement = Query::insert();
            insert
                .into_table(table.table_ref())
                .columns([Column::Caller]);
            let _ = insert.values([quoted]);
            insert.to_string(MysqlQueryBuilder)
        };
        assert!(
            insert.ends_with("VALUES (_utf8mb4 X'615C273B2044524F50205441424C4520743B202D2D')"),
            "{insert}"
        );
        assert!(!insert.contains('\\'), "{insert}");
    }
}
