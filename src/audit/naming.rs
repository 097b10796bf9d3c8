//! Whether a statement may reach the audit table by name, as the backend
//! resolves names: a reference counts when it is qualified with the audit
//! table's schema, or unqualified while that schema may be where
//! unqualified names resolve (PostgreSQL's search path, MySQL's current
//! database). A same-named table in another schema (`app.events` beside
//! `audit.events`) is not the audit table and passes.
//!
//! The text is read with the backend's own lexer, once for every way a
//! server's settings can make it read strings and comments
//! (`NO_BACKSLASH_ESCAPES`, `standard_conforming_strings`, a MySQL too old
//! for a `/*!NNNNN … */` comment), and a reference found by any reading
//! counts. String literals and dollar-quoted bodies are read as code too
//! (a function body, a `PREPARE … FROM '…'`, SQLite's `'name'`). Every
//! place the table's name appears as a word in the raw text must be
//! accounted for by a reading as a name it could judge — one in a
//! comment, or inside a longer token, counts. Names built from pieces by
//! dynamic SQL get past any reading of the text: only the database's
//! grants stop those (see the README).
//!
//! What would make an unqualified name resolve elsewhere later is refused
//! too: changing PostgreSQL's search path (`search_path`, `SET SCHEMA`,
//! `set_config` with a setting name that is not spelled out, `pg_settings`)
//! and MySQL's `USE`.

use crate::{
    db::Backend,
    query::sql::lexer::{Lexer, Token},
};

/// How deep string literals inside string literals are read as code.
const MAX_DEPTH: usize = 8;

/// PostgreSQL keeps the first 63 bytes of a longer identifier.
const POSTGRES_NAME_BYTES: usize = 63;

/// What a statement may do to the audit table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reach {
    /// It does not name the table.
    None,
    /// It names the table (or may: when in doubt).
    NamesTable,
    /// It may change where unqualified names resolve.
    MovesNames,
}

/// How the audit table's name resolves on one deployment.
#[derive(Debug, Clone)]
pub(crate) struct Resolution {
    /// The table's name, lower-case.
    table: String,
    /// Its schema (MySQL: database), lower-case, when configured; without
    /// one, a name qualified with any schema may be the table.
    schema: Option<String>,
    /// Whether an unqualified name may resolve to the table: yes unless
    /// start-up found the schema outside the search path.
    unqualified: bool,
    backend: Backend,
}

impl Resolution {
    /// `schema.table` or `table` (plain identifiers) on `backend`, with
    /// unqualified names taken to resolve to it until
    /// [`Resolution::schema_not_searched`] says otherwise.
    pub(crate) fn new(schema: Option<&str>, table: &str, backend: Backend) -> Self {
        Self {
            table: table.to_ascii_lowercase(),
            schema: schema.map(str::to_ascii_lowercase),
            unqualified: true,
            backend,
        }
    }

    /// Start-up found the configured schema outside the search path
    /// (PostgreSQL) or not the current database (MySQL): an unqualified
    /// name cannot reach the table. SQLite searches every attached
    /// database, so there it always may.
    pub(crate) fn schema_not_searched(&mut self) {
        if self.schema.is_some() && self.backend != Backend::Sqlite {
            self.unqualified = false;
        }
    }

    /// The configured schema, when there is one.
    pub(crate) fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// What `sql` (`lower`: the same text as [`searchable_text`] makes
    /// it) may do to the table. Most statements name neither the table nor anything that
    /// moves names, and are not lexed at all.
    pub(crate) fn reach(&self, sql: &str, lower: &str) -> Reach {
        let postgres = self.backend == Backend::Postgres;
        // A Unicode-escaped identifier can spell any name.
        if postgres && lower.contains("u&\"") {
            return Reach::NamesTable;
        }
        if postgres
            && ["search_path", "pg_settings"]
                .iter()
                .any(|word| contains_word(lower, word))
        {
            return Reach::MovesNames;
        }
        let truncates = postgres && self.table.len() >= POSTGRES_NAME_BYTES;
        let occurrences: Vec<usize> = word_matches(lower, &self.table, truncates).collect();
        let may_move = match self.backend {
            Backend::Postgres => {
                contains_word(lower, "set_config") || contains_word(lower, "schema")
            }
            Backend::MySql => contains_word(lower, "use"),
            Backend::Sqlite => false,
        };
        if occurrences.is_empty() && !may_move {
            return Reach::None;
        }
        // A statement that names the schema (a MySQL routine created in
        // the audit database runs with it as its default database) gets
        // no benefit of the doubt for its unqualified names.
        let scope = Scope {
            resolution: self,
            unqualified: self.unqualified
                || self
                    .schema
                    .as_deref()
                    .is_some_and(|schema| contains_word(lower, schema)),
            root: sql,
        };
        let mut reach = Reach::None;
        for &reading in Reading::all(self.backend) {
            let mut judged = Vec::new();
            let found = scope.read(sql, reading, 0, &mut judged);
            if found != Reach::None {
                return found;
            }
            if occurrences.iter().any(|at| !judged.contains(at)) {
                reach = Reach::NamesTable;
            }
        }
        reach
    }
}

/// One way a server may read the text.
#[derive(Debug, Clone, Copy)]
struct Reading {
    /// `Some`: every string literal escapes with `\` (or none does).
    backslashes: Option<bool>,
    /// MySQL's `/*! … */` is code.
    executable_comments: bool,
}

impl Reading {
    const DEFAULT: Reading = Reading {
        backslashes: None,
        executable_comments: true,
    };

    /// Every reading of `backend`'s servers, the default first.
    fn all(backend: Backend) -> &'static [Reading] {
        match backend {
            // Standard strings (E'' escapes), or every string escaping.
            Backend::Postgres => &[
                Reading::DEFAULT,
                Reading {
                    backslashes: Some(true),
                    executable_comments: true,
                },
            ],
            Backend::MySql => &[
                Reading::DEFAULT,
                Reading {
                    backslashes: Some(false),
                    executable_comments: true,
                },
                Reading {
                    backslashes: None,
                    executable_comments: false,
                },
                Reading {
                    backslashes: Some(false),
                    executable_comments: false,
                },
            ],
            Backend::Sqlite => &[Reading::DEFAULT],
        }
    }

    fn lexer<'a>(self, sql: &'a str, backend: Backend) -> Lexer<'a> {
        let mut lexer = Lexer::new(sql, backend);
        if let Some(backslashes) = self.backslashes {
            lexer = lexer.with_backslashes(backslashes);
        }
        if !self.executable_comments {
            lexer = lexer.without_executable_comments();
        }
        lexer
    }
}

/// What one statement is judged against.
struct Scope<'r> {
    resolution: &'r Resolution,
    /// Whether an unqualified name of the table counts, for this statement.
    unqualified: bool,
    /// The statement's whole text (every token is a slice of it).
    root: &'r str,
}

impl Scope<'_> {
    /// Reads `sql` (the statement, or the inside of one of its string
    /// literals) and notes in `judged` where each name of the table it
    /// judged starts.
    fn read(&self, sql: &str, reading: Reading, depth: usize, judged: &mut Vec<usize>) -> Reach {
        let backend = self.resolution.backend;
        let tokens: Vec<Token<'_>> = reading.lexer(sql, backend).collect();
        if backend == Backend::MySql
            && depth == 0
            && matches!(tokens.first(), Some(Token::Word(word)) if word.eq_ignore_ascii_case("use"))
        {
            return Reach::MovesNames;
        }
        for (index, token) in tokens.iter().enumerate() {
            if backend == Backend::Postgres && moves_search_path(&tokens, index) {
                return Reach::MovesNames;
            }
            if let Some((at, name)) = self.name_of(token)
                && self.is_table(name)
            {
                judged.push(at);
                if self.counts(&tokens[..index]) {
                    return Reach::NamesTable;
                }
            }
            if let Token::Text(text) = token
                && depth < MAX_DEPTH
                && let Some(inside) = quoted_content(text)
            {
                let found = self.read(inside, reading, depth + 1, judged);
                if found != Reach::None {
                    return found;
                }
            }
        }
        Reach::None
    }

    /// Where in the statement a name token's name starts, and the name:
    /// a word, a quoted identifier, or a string (SQLite reads a string as
    /// a name where one is expected; MySQL in `ANSI_QUOTES` mode reads
    /// `"…"` as one).
    fn name_of<'t>(&self, token: &Token<'t>) -> Option<(usize, &'t str)> {
        let name = match token {
            Token::Word(word) => word,
            Token::QuotedIdentifier(text) | Token::Text(text) => quoted_content(text)?,
            _ => return None,
        };
        Some((offset_in(self.root, name), name))
    }

    fn is_table(&self, name: &str) -> bool {
        let table = &self.resolution.table;
        if self.resolution.backend == Backend::Postgres && name.len() > POSTGRES_NAME_BYTES {
            return name
                .get(..POSTGRES_NAME_BYTES)
                .is_some_and(|kept| kept.eq_ignore_ascii_case(table));
        }
        name.eq_ignore_ascii_case(table)
    }

    /// Whether the table's name after `before` counts: qualified with the
    /// audit schema (or with any, when none is configured), qualified with
    /// anything but a name, or unqualified where that may reach the table.
    fn counts(&self, before: &[Token<'_>]) -> bool {
        match before {
            [.., qualifier, Token::Dot] => {
                let Some((_, schema)) = self.name_of(qualifier) else {
                    return true;
                };
                match &self.resolution.schema {
                    _ if schema.is_empty() => true,
                    Some(audit) => schema.eq_ignore_ascii_case(audit),
                    None => true,
                }
            }
            [Token::Dot] => true,
            _ => self.unqualified,
        }
    }
}

/// Whether the token at `index` starts something that may change
/// PostgreSQL's search path without the word `search_path`: `SET SCHEMA`,
/// or `set_config` whose setting is not a plain string literal of its
/// own (`set_config('search' || '_path', …)`).
fn moves_search_path(tokens: &[Token<'_>], index: usize) -> bool {
    let is_word = |token: Option<&Token<'_>>, word: &str| match token {
        Some(Token::Word(found)) => found.eq_ignore_ascii_case(word),
        Some(Token::QuotedIdentifier(text)) => {
            quoted_content(text).is_some_and(|found| found.eq_ignore_ascii_case(word))
        }
        _ => false,
    };
    if is_word(tokens.get(index), "set") && is_word(tokens.get(index + 1), "schema") {
        return true;
    }
    if !is_word(tokens.get(index), "set_config") {
        return false;
    }
    let spelled_out = matches!(
        (tokens.get(index + 1), tokens.get(index + 2), tokens.get(index + 3)),
        (Some(Token::Open), Some(Token::Text(setting)), Some(Token::Symbol(b',')))
            if setting.starts_with('\'')
                && quoted_content(setting).is_some_and(|name| {
                    name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
                })
    );
    !spelled_out
}

/// The inside of a quoted token (`'…'`, `E'…'`, `"…"`, `` `…` ``, `[…]`,
/// `$tag$…$tag$`), as written (doubled quotes stay doubled).
fn quoted_content(text: &str) -> Option<&str> {
    if let Some(rest) = text.strip_prefix('$') {
        let tag = rest.find('$')? + 2;
        let body = text.get(tag..)?;
        let closing = text.get(..tag)?;
        return Some(body.strip_suffix(closing).unwrap_or(body));
    }
    let open = text.find(['\'', '"', '`', '['])?;
    let close = match text.as_bytes()[open] {
        b'[' => ']',
        quote => char::from(quote),
    };
    let body = text.get(open + 1..)?;
    Some(body.strip_suffix(close).unwrap_or(body))
}

/// Where `part` (a slice of `root`) starts in `root`.
fn offset_in(root: &str, part: &str) -> usize {
    (part.as_ptr() as usize).wrapping_sub(root.as_ptr() as usize)
}

/// `sql` as word searches must see it: lower-cased, and on MySQL with the
/// version number of an executable comment blanked out — the server reads
/// the code right after it as a word of its own (`/*!50000events*/` names
/// `events`), where a search would see `50000events`. Same length as
/// `sql`, so positions match.
pub(crate) fn searchable_text(sql: &str, backend: Backend) -> String {
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
pub(crate) fn contains_word(text: &str, word: &str) -> bool {
    word_matches(text, word, false).next().is_some()
}

/// Where lower-cased `text` holds `word` as a whole word; with `prefix`,
/// a longer identifier that starts with it counts too.
fn word_matches<'t>(
    text: &'t str,
    word: &'t str,
    prefix: bool,
) -> impl Iterator<Item = usize> + 't {
    let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'$';
    text.match_indices(word)
        .filter(move |(at, found)| {
            let before = at
                .checked_sub(1)
                .and_then(|i| text.as_bytes().get(i))
                .copied();
            let after = text.as_bytes().get(at + found.len()).copied();
            !before.is_some_and(is_word) && (prefix || !after.is_some_and(is_word))
        })
        .map(|(at, _)| at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reach(resolution: &Resolution, sql: &str) -> Reach {
        resolution.reach(sql, &searchable_text(sql, resolution.backend))
    }

    fn qualified(backend: Backend, searched: bool) -> Resolution {
        let mut resolution = Resolution::new(Some("audit"), "events", backend);
        if !searched {
            resolution.schema_not_searched();
        }
        resolution
    }

    #[test]
    fn a_same_named_table_elsewhere_passes() {
        for backend in [Backend::Postgres, Backend::MySql] {
            let audit = qualified(backend, false);
            for sql in [
                "select * from events",
                "insert into app.events (id) values (1)",
                "delete from \"app\".\"events\" where id = 1",
                "select events(1)",
                "select * from app . events e join other.events o on e.id = o.id",
                "update events set body = 'events' where id = 2",
                "select * from app./* x */events",
            ] {
                let sql = if backend == Backend::MySql {
                    sql.replace('"', "`")
                } else {
                    sql.to_owned()
                };
                assert_eq!(reach(&audit, &sql), Reach::None, "{backend:?}: {sql}");
            }
        }
    }

    #[test]
    fn every_spelling_of_the_table_counts() {
        for backend in [Backend::Postgres, Backend::MySql] {
            let audit = qualified(backend, false);
            let mut spellings = vec![
                "delete from audit.events",
                "DELETE FROM AUDIT.EVENTS",
                "delete from audit . events",
                "delete from audit/* c */./* c */events",
                "delete from audit -- c\n . events",
                "delete from mydb.audit.events",
                "select audit.events.id from x",
                "select * from app.x, audit.events",
                "select 'audit.events'::regclass",
                "prepare s from 'delete from audit.events'",
                "delete from (select 1).events",
                "select * from events -- events",
                "select 1 /* audit.events */",
                "select * from 1.events",
                "create procedure audit.p() delete from events",
            ];
            if backend == Backend::Postgres {
                spellings.extend([
                    r#"delete from "audit"."events""#,
                    r#"delete from "AUDIT" . "Events""#,
                    "do $$ begin delete from audit.events; end $$",
                    "do $f$ begin execute 'delete from audit.events'; end $f$",
                    "select E'\\'', 1 from audit.events",
                    "select 1 from x -- c\r, audit.events",
                    // Seen as `audit . events` by a server with
                    // standard_conforming_strings off, `x . events` otherwise.
                    "select 'a\\' , ' , 1 from audit . -- ' x .\n events",
                ]);
            } else {
                spellings.extend([
                    "delete from `audit`.`events`",
                    "delete from `AUDIT` . `EVENTS`",
                    "delete from \"audit\".\"events\"",
                    "delete from audit/*! . */events",
                    "delete from audit/*!12345.events*/",
                    "delete from audit/*!99999 x*/.events",
                    "delete from audit # c\n . events",
                    // Seen as `audit . events` by a server with
                    // NO_BACKSLASH_ESCAPES, `x . events` otherwise.
                    "select 'a\\' , 1 from audit . # ' x .\n events",
                ]);
            }
            for sql in spellings {
                assert_ne!(reach(&audit, sql), Reach::None, "{backend:?}: {sql}");
            }
        }
    }

    #[test]
    fn unqualified_names_count_where_the_schema_is_searched() {
        for backend in [Backend::Postgres, Backend::MySql, Backend::Sqlite] {
            let searched = qualified(backend, true);
            assert_eq!(
                reach(&searched, "delete from events"),
                Reach::NamesTable,
                "{backend:?}"
            );
            assert_eq!(reach(&searched, "delete from app.events"), Reach::None);
        }
        // A version number runs into the name it hides.
        let mysql = qualified(Backend::MySql, true);
        for sql in [
            "delete from /*!50000events*/",
            "delete from /*M!100000events*/",
        ] {
            assert_eq!(reach(&mysql, sql), Reach::NamesTable, "{sql}");
        }
        assert_eq!(
            searchable_text("A /*!50000B*/ /*M!1C*/ /*1D*/", Backend::MySql),
            "a /*!     b*/ /*m! c*/ /*1d*/"
        );
        // SQLite searches every attached database.
        let sqlite = qualified(Backend::Sqlite, false);
        assert_eq!(reach(&sqlite, "delete from events"), Reach::NamesTable);
        // Without a schema, any qualifier may be the table's.
        let bare = Resolution::new(None, "sqlgate_audit", Backend::Postgres);
        for sql in [
            "delete from sqlgate_audit",
            "delete from public.sqlgate_audit",
            "delete from app.sqlgate_audit",
            r#"insert into U&"sqlgate\005faudit" values (1)"#,
        ] {
            assert_ne!(reach(&bare, sql), Reach::None, "{sql}");
        }
        assert_eq!(reach(&bare, "delete from sqlgate_audit_notes"), Reach::None);
    }

    #[test]
    fn what_moves_unqualified_names_is_refused() {
        let postgres = qualified(Backend::Postgres, false);
        for sql in [
            "set search_path = audit",
            "SET LOCAL \"search_path\" TO audit",
            "select set_config('search_path', 'audit', true)",
            "select set_config('search' || '_path', 'audit', true)",
            "select pg_catalog.set_config(name => 'x', 'y', true)",
            "select set_config(E'\\x73earch_path', 'audit', true)",
            "set schema 'audit'",
            "alter role current_user set search_path = audit",
            "update pg_settings set setting = 'audit' where name like 'search%'",
        ] {
            assert_eq!(reach(&postgres, sql), Reach::MovesNames, "{sql}");
        }
        assert_eq!(
            reach(&postgres, "select set_config('app.user_id', '7', true)"),
            Reach::None
        );
        let mysql = qualified(Backend::MySql, false);
        assert_eq!(reach(&mysql, "USE audit"), Reach::MovesNames);
        assert_eq!(reach(&mysql, "/*!USE audit */"), Reach::MovesNames);
        assert_eq!(reach(&mysql, "/*!50000USE audit */"), Reach::MovesNames);
        assert_eq!(reach(&mysql, "select 'use'"), Reach::None);
    }

    #[test]
    fn long_postgres_names_are_cut_as_postgres_cuts_them() {
        let table = "t".repeat(63);
        let resolution = Resolution::new(None, &table, Backend::Postgres);
        assert_eq!(
            reach(&resolution, &format!("delete from {table}xyz")),
            Reach::NamesTable
        );
    }
}
