//! A validated statement: SQL text within the size cap, parameters within
//! their count cap, and a fingerprint that identifies the statement's shape
//! in logs without revealing any literal or parameter in it.

use std::sync::Arc;

use super::value::SqlValue;
use crate::{config::LimitSettings, error::Error};

/// One statement ready to run.
#[derive(Debug, Clone)]
pub struct Statement {
    /// The SQL as the caller sent it.
    pub sql: Arc<str>,
    /// Positional parameters.
    pub params: Vec<SqlValue>,
    /// See [`fingerprint`].
    pub fingerprint: String,
    /// See [`Statement::is_plain_read`]; worked out once, with the fingerprint.
    plain_read: bool,
}

impl Statement {
    /// Validates `sql` and `params` against the limits.
    pub fn new(sql: String, params: Vec<SqlValue>, limits: &LimitSettings) -> Result<Self, Error> {
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
        let normalized = normalize(&sql);
        let mut words = normalized
            .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .filter(|word| !word.is_empty());
        let Some(first) = words.next() else {
            return Err(Error::invalid_request("sql", "statement is empty"));
        };
        // `SELECT … INTO` creates a table; keep it transactional.
        let plain_read = matches!(
            first,
            "select" | "values" | "table" | "show" | "describe" | "desc"
        ) && !words.any(|word| word == "into");
        if params.len() > limits.max_params {
            return Err(Error::invalid_request(
                "params",
                format!(
                    "{} parameters; the limit is {}",
                    params.len(),
                    limits.max_params
                ),
            ));
        }
        let fingerprint = hash(&normalized);
        Ok(Self {
            sql: sql.into(),
            params,
            fingerprint,
            plain_read,
        })
    }

    /// True for statements that only read (`SELECT`, `VALUES`, `SHOW`, …):
    /// they can run without a wrapping transaction, since a refused result
    /// leaves nothing half-done.
    pub fn is_plain_read(&self) -> bool {
        self.plain_read
    }
}

/// A stable 16-hex-digit hash of the statement with comments removed,
/// literals replaced by `?`, white space folded and keywords lower-cased:
/// the same query shape gives the same fingerprint whatever its values.
pub fn fingerprint(sql: &str) -> String {
    hash(&normalize(sql))
}

/// FNV-1a of the normalized text, as 16 hex digits.
fn hash(normalized: &str) -> String {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = normalized.bytes().fold(FNV_OFFSET, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME)
    });
    format!("{hash:016x}")
}

/// Strips comments, replaces string and numeric literals with `?`, folds
/// white space and lower-cases the rest.
fn normalize(sql: &str) -> String {
    let chars: Vec<char> = sql.chars().collect();
    let mut out = String::with_capacity(sql.len());
    let mut i = 0;
    let mut pending_space = false;
    let mut push = |out: &mut String, text: &str, pending_space: &mut bool| {
        if *pending_space && !out.is_empty() {
            out.push(' ');
        }
        *pending_space = false;
        out.push_str(text);
    };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '-' && next == Some('-') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
            pending_space = true;
        } else if c == '/' && next == Some('*') {
            i += 2;
            while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                i += 1;
            }
            i += 2;
            pending_space = true;
        } else if c == '\'' || c == '"' || c == '`' {
            // Quoted identifiers keep their text; string literals become `?`.
            let quote = c;
            let start = i;
            i += 1;
            while i < chars.len() {
                if chars[i] == quote {
                    if chars.get(i + 1) == Some(&quote) {
                        i += 2;
                        continue;
                    }
                    break;
                }
                i += 1;
            }
            i += 1;
            if quote == '\'' {
                push(&mut out, "?", &mut pending_space);
            } else {
                let end = i.min(chars.len());
                let ident: String = chars[start..end].iter().collect();
                push(&mut out, &ident, &mut pending_space);
            }
            continue;
        } else if c.is_ascii_digit()
            && !out
                .chars()
                .last()
                .is_some_and(|p| p.is_ascii_alphanumeric() || p == '_' || p == '$')
        {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            push(&mut out, "?", &mut pending_space);
            continue;
        } else if c.is_whitespace() {
            pending_space = true;
            i += 1;
        } else {
            let lower: String = c.to_lowercase().collect();
            push(&mut out, &lower, &mut pending_space);
            i += 1;
        }
    }
    let _ = &mut push;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stmt(sql: &str) -> Result<Statement, Error> {
        Statement::new(sql.to_owned(), vec![], &LimitSettings::default())
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
    fn oversized_statements_are_refused() {
        let limits = LimitSettings {
            max_statement_bytes: 10,
            ..LimitSettings::default()
        };
        let err = Statement::new("SELECT 1234567890".into(), vec![], &limits).expect_err("too big");
        assert!(err.to_string().contains("limit is 10 bytes"));
    }
}
