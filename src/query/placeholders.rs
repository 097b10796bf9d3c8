//! Counts the parameters a statement expects, from its text. PostgreSQL
//! accepts more declared parameter types than a statement uses and SQLite's
//! driver binds missing parameters as NULL, so neither reports a wrong
//! parameter count by itself; sqlgate refuses it before running anything.

/// Which placeholder syntax to count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PlaceholderStyle {
    /// `$1`, `$2`, … (PostgreSQL). `?` is an operator there, not a placeholder.
    Numbered,
    /// `$1`, `?1`, `?` (SQLite): the highest number, or the count of bare `?`.
    Sqlite,
}

/// The number of parameters `sql` expects, skipping string literals, quoted
/// identifiers, comments and PostgreSQL dollar-quoted bodies.
pub(crate) fn expected_parameters(sql: &str, style: PlaceholderStyle) -> usize {
    let bytes = sql.as_bytes();
    let mut i = 0;
    let mut highest = 0usize;
    let mut anonymous = 0usize;
    while i < bytes.len() {
        match bytes[i] {
            b'\'' | b'"' | b'`' => i = skip_quoted(bytes, i),
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i < bytes.len() && !(bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/')) {
                    i += 1;
                }
                i += 2;
            }
            // `a$1` is an identifier on PostgreSQL, not a placeholder.
            b'$' if i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_') => {
                i += 1;
            }
            b'$' => {
                let (number, end) = read_number(bytes, i + 1);
                if let Some(number) = number {
                    highest = highest.max(number);
                    i = end;
                } else if let Some(end) = skip_dollar_quoted(bytes, i) {
                    i = end;
                } else {
                    i += 1;
                }
            }
            b'?' if style == PlaceholderStyle::Sqlite => {
                let (number, end) = read_number(bytes, i + 1);
                match number {
                    Some(number) => highest = highest.max(number),
                    None => anonymous += 1,
                }
                i = end;
            }
            _ => i += 1,
        }
    }
    highest.max(anonymous)
}

fn read_number(bytes: &[u8], start: usize) -> (Option<usize>, usize) {
    let mut end = start;
    while end < bytes.len() && bytes[end].is_ascii_digit() {
        end += 1;
    }
    let number = std::str::from_utf8(&bytes[start..end])
        .ok()
        .and_then(|digits| digits.parse().ok());
    (number, end.max(start))
}

/// Skips a quoted run starting at `start`; doubled quotes escape themselves.
fn skip_quoted(bytes: &[u8], start: usize) -> usize {
    let quote = bytes[start];
    let mut i = start + 1;
    while i < bytes.len() {
        if bytes[i] == b'\\' && quote == b'\'' {
            // E'…' and MySQL strings escape with backslashes.
            i += 2;
            continue;
        }
        if bytes[i] == quote {
            if bytes.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    bytes.len()
}

/// Skips `$tag$ … $tag$` starting at `start`, if one starts there.
fn skip_dollar_quoted(bytes: &[u8], start: usize) -> Option<usize> {
    let mut end = start + 1;
    while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
        end += 1;
    }
    if bytes.get(end) != Some(&b'$') {
        return None;
    }
    let tag = &bytes[start..=end];
    let body = end + 1;
    let close = bytes[body..]
        .windows(tag.len())
        .position(|window| window == tag)
        .map_or(bytes.len(), |offset| body + offset + tag.len());
    Some(close)
}

#[cfg(test)]
mod tests {
    use super::{PlaceholderStyle::*, expected_parameters as count};

    #[test]
    fn counts_numbered_placeholders_outside_literals() {
        assert_eq!(count("SELECT 1", Numbered), 0);
        assert_eq!(count("SELECT $1, $2, $1", Numbered), 2);
        assert_eq!(count("SELECT $3", Numbered), 3);
        assert_eq!(
            count("SELECT '$4', \"$5\" -- $6\n, /* $7 */ $1", Numbered),
            1
        );
        assert_eq!(count("SELECT $$ $9 $$, $body$ $8 $body$, $2", Numbered), 2);
        assert_eq!(count("SELECT '{}'::jsonb ? 'a'", Numbered), 0);
        assert_eq!(count("SELECT E'it\\'s $3', $1", Numbered), 1);
        assert_eq!(count("SELECT a$1 FROM t", Numbered), 0);
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_arbitrary_text(sql in "\\PC{0,80}") {
            let _ = count(&sql, Numbered);
            let _ = count(&sql, Sqlite);
        }
    }

    #[test]
    fn counts_sqlite_placeholders() {
        assert_eq!(count("SELECT ?, ?", Sqlite), 2);
        assert_eq!(count("SELECT ?2, ?1", Sqlite), 2);
        assert_eq!(count("SELECT $1, '?'", Sqlite), 1);
    }
}
