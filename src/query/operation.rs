//! The operation a statement performs (`SELECT`, `INSERT`, …), read from
//! its first keyword for metrics and spans (`db.operation.name`): one pass
//! over a few bytes, and a closed set of values, so that a caller cannot
//! create new metric series by writing odd statements.

/// Operations named as they are; every other first word is `OTHER`.
const OPERATIONS: [&str; 26] = [
    "SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "UPSERT", "REPLACE", "WITH", "VALUES",
    "TABLE", "CREATE", "ALTER", "DROP", "TRUNCATE", "CALL", "DO", "EXPLAIN", "SHOW", "DESCRIBE",
    "PRAGMA", "ANALYZE", "VACUUM", "GRANT", "REVOKE", "COPY", "SET",
];

/// The statement's operation: its first keyword (after white space,
/// comments and opening parentheses), upper-cased, if it is a known one;
/// else `OTHER`.
pub fn operation_name(sql: &str) -> &'static str {
    let mut rest = sql;
    loop {
        let trimmed = rest.trim_start_matches(|c: char| c.is_whitespace() || c == '(');
        if let Some(comment) = trimmed.strip_prefix("--") {
            rest = comment.split_once('\n').map_or("", |(_, after)| after);
        } else if let Some(comment) = trimmed.strip_prefix("/*") {
            rest = comment.split_once("*/").map_or("", |(_, after)| after);
        } else {
            rest = trimmed;
            break;
        }
    }
    let word_end = rest
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(rest.len());
    let word = &rest[..word_end];
    OPERATIONS
        .iter()
        .find(|known| known.eq_ignore_ascii_case(word))
        .copied()
        .unwrap_or("OTHER")
}

#[cfg(test)]
mod tests {
    use super::operation_name;

    #[test]
    fn the_first_keyword_names_the_operation() {
        assert_eq!(operation_name("select 1"), "SELECT");
        assert_eq!(operation_name("  -- note\n /* x */ (SELECT 1)"), "SELECT");
        assert_eq!(operation_name("Insert into t values ($1)"), "INSERT");
        assert_eq!(operation_name("with d as (delete from t) select 1"), "WITH");
        assert_eq!(operation_name("CANARY-PHI-1234"), "OTHER");
        assert_eq!(operation_name(""), "OTHER");
        assert_eq!(operation_name("/* unterminated"), "OTHER");
    }
}
