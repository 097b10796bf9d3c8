//! What a statement would do to the connection it runs on, read from its
//! tokens once, when the request is decoded.
//!
//! The pool is shared: whatever a call leaves on a connection (a setting,
//! a temp table, a lock, a prepared statement, a `LISTEN`) reaches the
//! next caller. sqlgate therefore sorts every statement into:
//! - refused, with what to use instead: statements whose only effect is
//!   connection state ([`Refusal::SessionState`], in calls), transaction
//!   control ([`Refusal::TransactionControl`]: a call is one transaction
//!   already, a session ends by its own messages), state sqlgate cannot
//!   undo or relay ([`Refusal::ConnectionObject`], [`Refusal::Copy`]),
//!   sqlgate's own settings ([`Refusal::OwnSetting`]), and on SQLite
//!   anything reaching outside the database file ([`Refusal::Confinement`]);
//! - [`Analysis::leaves_state`]: statements that may change connection
//!   state without saying so (a function sqlgate does not know to be
//!   pure, `DO`, `CALL`, a temp table, a MySQL user variable). They run in
//!   a transaction, and the connection is reset (PostgreSQL) or closed
//!   (MySQL) before anyone else gets it;
//! - the rest, which leave nothing behind; plain reads among them run bare.
//!
//! The lexer reads text as the database does, and every doubt falls on the
//! safe side: an unknown statement or function leaves state.

use super::{
    functions::{is_pure_function, is_structural_keyword},
    lexer::{Lexer, Token},
};
use crate::db::Backend;

/// Why sqlgate will not run a statement, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Changes the pooled connection for whoever uses it next (`SET`,
    /// `RESET`, `USE`): refused in calls, allowed in a session (whose
    /// connection is reset before reuse).
    SessionState {
        /// The statement, as named in the message.
        what: &'static str,
    },
    /// Begins, ends or widens a transaction: refused everywhere.
    TransactionControl {
        /// The statement, as named in the message.
        what: &'static str,
    },
    /// Creates per-connection objects sqlgate cannot undo or relay
    /// (`PREPARE`, `DEALLOCATE`, `DISCARD`, `LISTEN`, `LOAD`, …).
    ConnectionObject {
        /// The statement, as named in the message.
        what: &'static str,
        /// What to do instead.
        instead: &'static str,
    },
    /// `COPY … FROM STDIN` / `TO STDOUT` need the copy sub-protocol.
    Copy,
    /// More than one statement in one text (SQLite would run them all).
    SeveralStatements,
    /// SQLite named parameters (`:a`, `@a`, `$a`): parameters are positional.
    NamedParameters,
    /// Changes a setting sqlgate relies on to bound every call.
    OwnSetting {
        /// The setting.
        name: String,
    },
    /// Reaches outside the SQLite database file or past its schema rules.
    Confinement {
        /// The statement, as named in the message.
        what: &'static str,
    },
}

/// What one statement text does, as far as sqlgate needs to know.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Analysis {
    /// Parameters the text expects (highest `$n`/`?n`, or the count of `?`).
    pub(crate) parameters: usize,
    /// Statements in the text (0: only white space, comments and `;`).
    pub(crate) statements: usize,
    /// Only reads: may run outside a transaction.
    pub(crate) plain_read: bool,
    /// May change connection state that outlives the call.
    pub(crate) leaves_state: bool,
    /// On MySQL, commits implicitly.
    pub(crate) implicit_commit: bool,
    /// Calls a stored procedure (`CALL`), which on MySQL may run its own
    /// transaction control.
    pub(crate) calls_procedure: bool,
    /// The first reason to refuse it, whatever the context.
    pub(crate) refusal: Option<Refusal>,
    /// One `INSERT`, `UPDATE`, `DELETE` or `MERGE` without `RETURNING`,
    /// refused nowhere and leaving no connection state: it returns no rows
    /// (so nothing after it can fail it) and is atomic on its own, so a
    /// transaction of just this statement may be the statement alone.
    pub(crate) single_write: bool,
}

impl Analysis {
    /// Reads `sql` as `backend` would.
    pub(crate) fn of(sql: &str, backend: Backend) -> Self {
        let mut analysis = Self {
            plain_read: true,
            ..Self::default()
        };
        let mut highest = 0usize;
        let mut anonymous = 0usize;
        let mut statement: Vec<Token<'_>> = Vec::new();
        let mut statements = 0usize;
        let mut trigger = TriggerBody::default();
        for token in Lexer::new(sql, backend) {
            match token {
                Token::Placeholder(Some(number)) => highest = highest.max(number),
                Token::Placeholder(None) => anonymous += 1,
                _ => {}
            }
            if backend == Backend::Sqlite {
                trigger.follow(&statement, token);
            }
            if token == Token::Semicolon && !trigger.inside {
                if !statement.is_empty() {
                    analysis.add(&statement, backend);
                    statements += 1;
                }
                statement.clear();
                continue;
            }
            statement.push(token);
        }
        if !statement.is_empty() {
            analysis.add(&statement, backend);
            statements += 1;
        }
        if statements == 0 {
            analysis.plain_read = false;
        }
        if statements > 1 && analysis.refusal.is_none() {
            // PostgreSQL and MySQL refuse several statements in one
            // prepared text themselves; SQLite would run them all.
            analysis.refusal = Some(Refusal::SeveralStatements);
        }
        analysis.parameters = highest.max(anonymous);
        analysis.statements = statements;
        analysis.single_write &= statements == 1
            && analysis.refusal.is_none()
            && !analysis.leaves_state
            && !analysis.calls_procedure
            && !analysis.implicit_commit;
        analysis
    }

    /// True when the text holds no statement at all.
    pub(crate) fn is_empty(&self) -> bool {
        self.statements == 0
    }

    /// Folds one statement's tokens into the analysis.
    fn add(&mut self, tokens: &[Token<'_>], backend: Backend) {
        let words = Words(tokens);
        let first = words.lower(0);
        if backend == Backend::MySql && first == "set" && words.lower(1) == "statement" {
            // MariaDB's `SET STATEMENT x = … FOR <statement>`: the settings
            // last one statement; the statement is read like any other.
            let inner = tokens
                .iter()
                .position(|token| matches!(token, Token::Word(w) if w.eq_ignore_ascii_case("for")));
            if let Some(at) = inner {
                let settings = Words(&tokens[..at]);
                if self.refusal.is_none() {
                    self.refusal = settings
                        .names()
                        .find(|name| is_own_setting(name, backend))
                        .map(|name| Refusal::OwnSetting { name });
                }
                self.plain_read = false;
                self.add(&tokens[at + 1..], backend);
                return;
            }
        }
        let read = is_read(&words, &first);
        self.plain_read &= read;
        // Only a row-returning clause makes these return rows.
        self.single_write = matches!(first.as_str(), "insert" | "update" | "delete" | "merge")
            && !words.contains("returning");
        if self.refusal.is_none() {
            self.refusal = refusal(&words, &first, backend);
        }
        if self.refusal.is_none() && backend == Backend::Sqlite && tokens.contains(&Token::Variable)
        {
            self.refusal = Some(Refusal::NamedParameters);
        }
        if backend != Backend::Sqlite && leaves_state(tokens, &words, &first, backend) {
            self.leaves_state = true;
        }
        if backend == Backend::MySql && commits_implicitly(&words, &first) {
            self.implicit_commit = true;
        }
        if first == "call" {
            self.calls_procedure = true;
        }
    }
}

/// The words of one statement, lower-cased on demand.
struct Words<'t, 'a>(&'t [Token<'a>]);

impl Words<'_, '_> {
    /// The `index`th word of the statement (`""` past the end or when that
    /// token is not a word), lower-cased.
    fn lower(&self, index: usize) -> String {
        self.0
            .iter()
            .filter(|token| !matches!(token, Token::Open))
            .nth(index)
            .and_then(|token| match token {
                Token::Word(word) => Some(word.to_ascii_lowercase()),
                _ => None,
            })
            .unwrap_or_default()
    }

    /// Whether any word of the statement is `word` (lower-case).
    fn contains(&self, word: &str) -> bool {
        self.0
            .iter()
            .any(|token| matches!(token, Token::Word(w) if w.eq_ignore_ascii_case(word)))
    }

    /// The statement's words and MySQL system-variable names, lower-cased
    /// (`SET @@autocommit` names `autocommit`).
    fn names(&self) -> impl Iterator<Item = String> + '_ {
        self.0.iter().filter_map(|token| match token {
            Token::Word(word) | Token::SystemVariable(word) => Some(word.to_ascii_lowercase()),
            _ => None,
        })
    }
}

/// Where a SQLite `CREATE TRIGGER … BEGIN … END` body is: its statements
/// end with `;` but belong to the trigger. The body opens at the first
/// BEGIN and closes at the END that matches no CASE (a body holds no
/// nested BEGIN; `begin` inside it is a name).
#[derive(Debug, Default)]
struct TriggerBody {
    inside: bool,
    open_cases: usize,
}

impl TriggerBody {
    /// Follows `token`, the next token of `statement` so far.
    fn follow(&mut self, statement: &[Token<'_>], token: Token<'_>) {
        let Token::Word(word) = token else { return };
        if !self.inside {
            if word.eq_ignore_ascii_case("begin") && creates_trigger(statement) {
                self.inside = true;
                self.open_cases = 0;
            }
        } else if word.eq_ignore_ascii_case("case") {
            self.open_cases += 1;
        } else if word.eq_ignore_ascii_case("end") {
            if self.open_cases == 0 {
                self.inside = false;
            } else {
                self.open_cases -= 1;
            }
        }
    }
}

/// `CREATE TRIGGER …` (TEMP triggers are refused anyway).
fn creates_trigger(tokens: &[Token<'_>]) -> bool {
    let words = Words(tokens);
    words.lower(0) == "create" && words.lower(1) == "trigger"
}

/// Reads that can run outside a transaction: nothing they do needs undoing.
fn is_read(words: &Words<'_, '_>, first: &str) -> bool {
    matches!(
        first,
        "select" | "values" | "table" | "show" | "describe" | "desc"
    ) && !words.contains("into")
}

/// Why the statement is refused, if it is.
fn refusal(words: &Words<'_, '_>, first: &str, backend: Backend) -> Option<Refusal> {
    let second = words.lower(1);
    let transaction = |what| Some(Refusal::TransactionControl { what });
    match (backend, first) {
        (_, "begin") => transaction("BEGIN"),
        (_, "start") if second == "transaction" => transaction("START TRANSACTION"),
        (_, "commit") => transaction("COMMIT"),
        (_, "end") => transaction("END"),
        (_, "abort") => transaction("ABORT"),
        (_, "rollback") if second != "to" => transaction("ROLLBACK"),
        (Backend::Postgres, "prepare") if second == "transaction" => {
            transaction("PREPARE TRANSACTION")
        }
        (Backend::MySql, "xa") => transaction("XA"),
        (_, "set") => set_refusal(words, &second, backend),
        (Backend::Postgres | Backend::MySql, "reset") if second != "query" => {
            Some(Refusal::SessionState { what: "RESET" })
        }
        (Backend::MySql, "use") => Some(Refusal::SessionState { what: "USE" }),
        (Backend::MySql, "lock" | "unlock") => Some(Refusal::ConnectionObject {
            what: "LOCK TABLES",
            instead: "lock rows with SELECT … FOR UPDATE inside a session",
        }),
        (Backend::MySql, "kill") => Some(Refusal::ConnectionObject {
            what: "KILL",
            instead: "end a session with Admin/TerminateSession",
        }),
        (Backend::Postgres, "alter") if second == "system" => Some(Refusal::ConnectionObject {
            what: "ALTER SYSTEM",
            instead: "server settings are the operator's, not a caller's",
        }),
        (Backend::MySql, "handler") => Some(Refusal::ConnectionObject {
            what: "HANDLER",
            instead: "use SELECT",
        }),
        (Backend::Postgres | Backend::MySql, "prepare" | "execute" | "deallocate") => {
            Some(Refusal::ConnectionObject {
                what: "PREPARE / EXECUTE / DEALLOCATE",
                instead: "send the statement with parameters: sqlgate prepares and caches it",
            })
        }
        (Backend::Postgres, "discard") => Some(Refusal::ConnectionObject {
            what: "DISCARD",
            instead: "sqlgate resets connections itself",
        }),
        (Backend::Postgres, "listen" | "unlisten") => Some(Refusal::ConnectionObject {
            what: "LISTEN",
            instead: "notifications cannot be delivered through sqlgate",
        }),
        (Backend::Postgres, "load") => Some(Refusal::ConnectionObject {
            what: "LOAD",
            instead: "load libraries through the server's configuration",
        }),
        (Backend::Postgres, "copy") if words.contains("stdin") || words.contains("stdout") => {
            Some(Refusal::Copy)
        }
        (Backend::Postgres, _) => {
            own_setting_in_function(words.0).or_else(|| ends_other_connections(words.0))
        }
        (Backend::Sqlite, "attach" | "detach") => Some(Refusal::Confinement {
            what: "ATTACH / DETACH",
        }),
        (Backend::Sqlite, "vacuum") if words.contains("into") => Some(Refusal::Confinement {
            what: "VACUUM INTO",
        }),
        (Backend::Sqlite, "pragma") => pragma_refusal(words.0),
        (Backend::Sqlite, "create")
            if matches!(second.as_str(), "temp" | "temporary") || names_temp_schema(words.0) =>
        {
            Some(Refusal::Confinement {
                what: "CREATE TEMP",
            })
        }
        _ => None,
    }
}

/// `SET …`: transaction characteristics are transaction control; sqlgate's
/// own settings are never the caller's; `SET LOCAL` (PostgreSQL) ends with
/// the transaction and is allowed; anything else is session state.
fn set_refusal(words: &Words<'_, '_>, second: &str, backend: Backend) -> Option<Refusal> {
    let third = words.lower(2);
    if second == "transaction"
        || (second == "session" && third == "characteristics")
        || ((second == "session" || second == "global") && third == "transaction")
        || words
            .names()
            .any(|word| word == "autocommit" || word == "completion_type")
    {
        return Some(Refusal::TransactionControl {
            what: "SET TRANSACTION",
        });
    }
    if second == "global" || second == "persist" || words.names().any(|word| word == "global") {
        return Some(Refusal::ConnectionObject {
            what: "SET GLOBAL",
            instead: "server settings are the operator's, not a caller's",
        });
    }
    if let Some(name) = words.names().find(|word| is_own_setting(word, backend)) {
        return Some(Refusal::OwnSetting { name });
    }
    match (backend, second) {
        (Backend::Postgres, "local") => None,
        // `SET STATEMENT x = … FOR <statement>` (MariaDB) lasts one statement.
        (Backend::MySql, "statement") if words.contains("for") => None,
        _ => Some(Refusal::SessionState { what: "SET" }),
    }
}

/// Settings sqlgate (or its driver) sets on every connection and relies
/// on: the server-side bound on each call (a caller switching it off would
/// outlive its own deadline), what values are read and written with
/// (encoding, time zone, strict mode: changing them would change values
/// without a word), and MySQL's read-only characteristic, which keeps a
/// reader's call read-only past a statement that commits implicitly
/// (`SET STATEMENT tx_read_only = 0 FOR CREATE TABLE …` would lift it).
fn is_own_setting(word: &str, backend: Backend) -> bool {
    match backend {
        Backend::Postgres => matches!(
            word,
            "statement_timeout" | "client_connection_check_interval" | "client_encoding"
        ),
        Backend::MySql => matches!(
            word,
            "max_statement_time"
                | "max_execution_time"
                | "sql_mode"
                | "time_zone"
                | "names"
                | "character"
                | "character_set_client"
                | "character_set_connection"
                | "character_set_results"
                | "collation_connection"
                | "tx_read_only"
                | "transaction_read_only"
        ),
        Backend::Sqlite => false,
    }
}

/// `set_config('statement_timeout', …)`: the same rule as `SET`, for the
/// function form with a literal name. (A name passed as a parameter cannot
/// be read here; the call then leaves state and the connection is reset.)
fn own_setting_in_function(tokens: &[Token<'_>]) -> Option<Refusal> {
    tokens.windows(3).find_map(|window| match window {
        [Token::Word(function), Token::Open, Token::Text(literal)]
            if function.eq_ignore_ascii_case("set_config") =>
        {
            let literal = literal.to_ascii_lowercase();
            ["statement_timeout", "client_connection_check_interval"]
                .into_iter()
                .find(|name| literal.contains(name))
                .map(|name| Refusal::OwnSetting {
                    name: name.to_owned(),
                })
        }
        _ => None,
    })
}

/// `pg_terminate_backend(…)` / `pg_cancel_backend(…)`: every pooled
/// connection is the same database user, so one caller could end another's.
fn ends_other_connections(tokens: &[Token<'_>]) -> Option<Refusal> {
    tokens
        .windows(2)
        .any(|window| {
            matches!(window, [Token::Word(name), Token::Open]
                if name.eq_ignore_ascii_case("pg_terminate_backend")
                    || name.eq_ignore_ascii_case("pg_cancel_backend"))
        })
        .then_some(Refusal::ConnectionObject {
            what: "pg_terminate_backend / pg_cancel_backend",
            instead: "end a session with Admin/TerminateSession",
        })
}

/// A SQLite object named through the `temp` schema (`CREATE TABLE temp.x`,
/// quoted or not) is a TEMP object too.
fn names_temp_schema(tokens: &[Token<'_>]) -> bool {
    tokens.windows(2).any(|window| match window {
        [Token::Word(name), Token::Dot] => {
            name.eq_ignore_ascii_case("temp") || name.eq_ignore_ascii_case("temporary")
        }
        [Token::QuotedIdentifier(quoted), Token::Dot] => {
            let name = quoted
                .get(1..quoted.len().saturating_sub(1))
                .unwrap_or_default();
            name.eq_ignore_ascii_case("temp") || name.eq_ignore_ascii_case("temporary")
        }
        _ => false,
    })
}

/// A PRAGMA that only reads (no `= value`, and an argument only for the
/// introspection pragmas that take a table or index name) is allowed; any
/// other may change the connection beyond the call, or the schema rules
/// (`writable_schema`), and is refused.
fn pragma_refusal(tokens: &[Token<'_>]) -> Option<Refusal> {
    // PRAGMA [schema.]name [= value | (argument)]
    let name = match tokens {
        [_, Token::Word(_), Token::Dot, Token::Word(name), ..] | [_, Token::Word(name), ..] => {
            name.to_ascii_lowercase()
        }
        _ => String::new(),
    };
    let sets = tokens.contains(&Token::Symbol(b'='));
    let takes_a_name = matches!(
        name.as_str(),
        "table_info"
            | "table_xinfo"
            | "table_list"
            | "index_list"
            | "index_info"
            | "index_xinfo"
            | "foreign_key_list"
            | "foreign_key_check"
            | "integrity_check"
            | "quick_check"
    );
    let argument = tokens.contains(&Token::Open);
    if sets || (argument && !takes_a_name) {
        Some(Refusal::Confinement { what: "PRAGMA" })
    } else {
        None
    }
}

/// MySQL statements that commit the open transaction before they run.
fn commits_implicitly(words: &Words<'_, '_>, first: &str) -> bool {
    let second = words.lower(1);
    match first {
        "create" | "drop" | "alter" => second != "temporary",
        "rename" | "truncate" | "grant" | "revoke" | "analyze" | "optimize" | "repair"
        | "check" | "flush" | "install" | "uninstall" | "cache" => true,
        _ => false,
    }
}

/// Whether the statement may leave connection state behind: anything but
/// statements known to leave none, with no call to a function not known
/// to be pure, and no MySQL user variable.
fn leaves_state(
    tokens: &[Token<'_>],
    words: &Words<'_, '_>,
    first: &str,
    backend: Backend,
) -> bool {
    let second = words.lower(1);
    let known_inert = match first {
        "select" | "with" | "values" | "table" | "insert" | "update" | "delete" | "merge"
        | "replace" | "explain" | "show" | "describe" | "desc" | "alter" | "drop" | "truncate"
        | "comment" | "grant" | "revoke" | "analyze" | "vacuum" | "reindex" | "cluster"
        | "refresh" | "savepoint" | "release" | "rollback" | "lock" | "copy" | "checkpoint"
        | "notify" => true,
        "create" => !matches!(second.as_str(), "temp" | "temporary" | "global" | "local"),
        "set" => backend == Backend::Postgres && second == "local",
        _ => false,
    };
    if !known_inert {
        return true;
    }
    // `SELECT … INTO TEMP t` (PostgreSQL) makes a temp table.
    if words.contains("temp") || words.contains("temporary") {
        return true;
    }
    calls_impure_function(tokens, backend) || tokens.contains(&Token::Variable)
}

/// A word or quoted identifier followed by `(` that is neither a keyword
/// nor a relation name (`INSERT INTO t (a)`), and not a known pure function.
fn calls_impure_function(tokens: &[Token<'_>], backend: Backend) -> bool {
    for (index, window) in tokens.windows(2).enumerate() {
        if window[1] != Token::Open {
            continue;
        }
        let name = match window[0] {
            // MySQL identifiers may start with digits (`9lock(…)`); a
            // number is never called otherwise.
            Token::Number => return true,
            Token::Word(word) => word.to_ascii_lowercase(),
            Token::QuotedIdentifier(quoted) => {
                // A quoted name is taken as written; only its exact
                // lower-case form can match a known function.
                quoted
                    .get(1..quoted.len().saturating_sub(1))
                    .unwrap_or_default()
                    .to_owned()
            }
            _ => continue,
        };
        if is_structural_keyword(&name, backend) {
            continue;
        }
        // Walk back over a qualified name (`schema.f`, `a.b.c`).
        let mut start = index;
        let mut qualifier = None;
        while start >= 2 && tokens[start - 1] == Token::Dot {
            qualifier = Some(tokens[start - 2]);
            start -= 2;
        }
        let before = start.checked_sub(1).map(|at| tokens[at]);
        if let Some(Token::Word(word)) = before {
            let word = word.to_ascii_lowercase();
            if matches!(
                word.as_str(),
                "into" | "table" | "references" | "exists" | "update" | "only" | "index" | "view"
            ) {
                continue;
            }
        }
        let qualified_by_catalog = match qualifier {
            None => true,
            Some(Token::Word(schema)) => schema.eq_ignore_ascii_case("pg_catalog"),
            Some(_) => false,
        };
        if !(qualified_by_catalog && is_pure_function(&name, backend)) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests;
