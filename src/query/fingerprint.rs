//! A statement's fingerprint and its sanitized text: what logs, spans,
//! metrics and the audit trail may show of a statement — its shape, never
//! a value written into it. Kept apart from [`super::statement`] so that the
//! cache of analysed statements can use it without depending on statements.

/// A stable 16-hex-digit hash of the statement with comments removed,
/// literals replaced by `?`, white space folded and keywords lower-cased:
/// the same query shape gives the same fingerprint whatever its values.
pub fn fingerprint(sql: &str) -> String {
    hash(&normalize(sql))
}

/// The statement as spans may show it (`db.query.text`): comments
/// removed, string and numeric literals replaced by `?`, and — beyond what
/// the fingerprint does — double-quoted text on MySQL (a string there)
/// and dollar-quoted bodies (PostgreSQL) replaced by `?` too, so that no
/// value written into the text survives. Placeholders stay as they are.
pub fn sanitized_text(sql: &str, backend: crate::db::Backend) -> String {
    let normalized = normalize(sql);
    let mut out = String::with_capacity(normalized.len());
    let mut rest = normalized.as_str();
    while let Some(at) = rest.find(['"', '$']) {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if tail.starts_with('"') && backend == crate::db::Backend::MySql {
            let end = tail[1..].find('"').map_or(tail.len(), |end| end + 2);
            out.push('?');
            rest = &tail[end..];
        } else if let Some(tag_end) = dollar_tag_end(tail) {
            let tag = &tail[..tag_end];
            let end = tail[tag_end..]
                .find(tag)
                .map_or(tail.len(), |end| tag_end + end + tag.len());
            out.push('?');
            rest = &tail[end..];
        } else {
            out.push_str(&tail[..1]);
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// If `text` starts with a dollar-quote tag (`$$`, `$body$`), its length.
fn dollar_tag_end(text: &str) -> Option<usize> {
    let inner = text.strip_prefix('$')?;
    let name_len = inner
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(inner.len());
    let name = &inner[..name_len];
    let starts_as_tag = name.is_empty() || !name.starts_with(|c: char| c.is_ascii_digit());
    (starts_as_tag && inner[name_len..].starts_with('$')).then_some(name_len + 2)
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
pub(super) fn normalize(sql: &str) -> String {
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
