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
        Self::check_param_count(params.len(), limits)?;
        let fingerprint = hash(&normalized);
        Ok(Self {
            sql: sql.into(),
            params,
            fingerprint,
            plain_read,
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

/// True when the text so far ends inside a word (`x1`, `a$1`), where a
/// digit belongs to the word rather than starting a number.
fn continues_word(out: &str) -> bool {
    out.as_bytes()
        .last()
        .is_some_and(|p| p.is_ascii_alphanumeric() || *p == b'_' || *p == b'$')
}

/// Strips comments, replaces string and numeric literals with `?`, folds
/// white space and lower-cases the rest. Runs on every call: one pass over
/// the bytes, no allocation but the output.
fn normalize(sql: &str) -> String {
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut i = 0;
    let mut pending_space = false;
    let push = |out: &mut String, text: &str, pending_space: &mut bool| {
        if *pending_space && !out.is_empty() {
            out.push(' ');
        }
        *pending_space = false;
        out.push_str(text);
    };
    while i < bytes.len() {
        let b = bytes[i];
        let next = bytes.get(i + 1).copied();
        if b == b'-' && next == Some(b'-') {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
            pending_space = true;
        } else if b == b'/' && next == Some(b'*') {
            i += 2;
            while i < bytes.len() && !(bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/')) {
                i += 1;
            }
            i = (i + 2).min(bytes.len());
            pending_space = true;
        } else if b == b'\'' || b == b'"' || b == b'`' {
            // Quoted identifiers keep their text; string literals become `?`.
            let start = i;
            i += 1;
            while i < bytes.len() {
                if bytes[i] == b {
                    if bytes.get(i + 1) == Some(&b) {
                        i += 2;
                        continue;
                    }
                    break;
                }
                i += 1;
            }
            i = (i + 1).min(bytes.len());
            if b == b'\'' {
                push(&mut out, "?", &mut pending_space);
            } else {
                // Quotes are ASCII, so these are character boundaries.
                push(
                    &mut out,
                    sql.get(start..i).unwrap_or_default(),
                    &mut pending_space,
                );
            }
        } else if b.is_ascii_digit() && (pending_space || !continues_word(&out)) {
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'.') {
                i += 1;
            }
            push(&mut out, "?", &mut pending_space);
        } else if b.is_ascii_whitespace() {
            pending_space = true;
            i += 1;
        } else if b.is_ascii() {
            if pending_space && !out.is_empty() {
                out.push(' ');
            }
            pending_space = false;
            out.push(char::from(b.to_ascii_lowercase()));
            i += 1;
        } else {
            // A multi-byte character: copy it whole, lower-cased.
            let ch = sql
                .get(i..)
                .and_then(|rest| rest.chars().next())
                .unwrap_or(' ');
            if pending_space && !out.is_empty() {
                out.push(' ');
            }
            pending_space = false;
            out.extend(ch.to_lowercase());
            i += ch.len_utf8();
        }
    }
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
        let err = Statement::new("SELECT 1".into(), vec![SqlValue::Null; 3], &limits)
            .expect_err("too many");
        assert!(
            matches!(err, Error::InvalidRequest { ref field, ref message }
                if field == "params" && message == "3 parameters; the limit is 2"),
            "{err:?}"
        );
        assert!(Statement::new("SELECT 1".into(), vec![SqlValue::Null; 2], &limits).is_ok());
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
