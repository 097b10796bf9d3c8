//! Names that may stand before `(` without changing connection state:
//! keywords that take a parenthesised list, type names with modifiers, and
//! built-in functions known to be pure as far as the connection goes (they
//! may read the clock or a random source; none sets a setting, takes a
//! session lock or creates an object). Anything not listed is taken to
//! leave state: the call then runs in a transaction and the connection is
//! reset or closed after it. Deliberately absent: `set_config`, the
//! advisory-lock and `get_lock` families, `setseed`, `nextval`/`setval`,
//! `last_insert_id`, `dblink*`, and every user-defined function.

use crate::db::Backend;

/// Keywords followed by `(` that are syntax, not a call. On MySQL only
/// reserved words count: a stored function may be named `filter`.
pub(crate) fn is_structural_keyword(word: &str, backend: Backend) -> bool {
    if backend == Backend::MySql {
        return MYSQL_RESERVED_BEFORE_PAREN.contains(&word);
    }
    matches!(
        word,
        "in" | "values"
            | "exists"
            | "any"
            | "all"
            | "some"
            | "as"
            | "on"
            | "using"
            | "over"
            | "filter"
            | "within"
            | "partition"
            | "by"
            | "and"
            | "or"
            | "not"
            | "where"
            | "select"
            | "from"
            | "join"
            | "set"
            | "returning"
            | "case"
            | "when"
            | "then"
            | "else"
            | "row"
            | "array"
            | "lateral"
            | "cube"
            | "rollup"
            | "sets"
            | "key"
            | "unique"
            | "check"
            | "conflict"
            | "distinct"
            | "limit"
            | "offset"
            | "is"
            | "between"
            | "like"
            | "ilike"
            | "escape"
            | "union"
            | "intersect"
            | "except"
            | "with"
            | "include"
            | "having"
            | "group"
            | "order"
            | "fetch"
            | "tablesample"
            | "repeatable"
            | "default"
            | "primary"
            | "foreign"
            | "constraint"
            | "generated"
            | "identity"
            | "stored"
            | "collate"
            | "into"
            | "table"
            | "if"
            | "elseif"
            | "return"
            | "grouping"
            | "window"
            | "range"
            | "rows"
            | "groups"
            | "to"
            | "for"
            | "of"
            | "nowait"
            | "similar"
            | "match"
            | "against"
            | "interval"
    )
}

/// Built-in functions and type names of `backend` that change no
/// connection state (SQLite callers cannot define functions in SQL, and
/// SQLite statements are never taken to leave state).
pub(crate) fn is_pure_function(name: &str, backend: Backend) -> bool {
    let list = match backend {
        Backend::Postgres => POSTGRES_PURE,
        Backend::MySql => MYSQL_PURE,
        Backend::Sqlite => return true,
    };
    list.binary_search(&name).is_ok()
}

/// PostgreSQL built-ins (sorted, lower-case; checked by a unit test).
const POSTGRES_PURE: &[&str] = &[
    "abs",
    "acos",
    "age",
    "array_agg",
    "array_append",
    "array_cat",
    "array_dims",
    "array_length",
    "array_lower",
    "array_position",
    "array_positions",
    "array_prepend",
    "array_remove",
    "array_replace",
    "array_to_json",
    "array_to_string",
    "array_upper",
    "ascii",
    "asin",
    "atan",
    "atan2",
    "avg",
    "bigint",
    "binary",
    "bit",
    "bit_and",
    "bit_length",
    "bit_or",
    "bool_and",
    "bool_or",
    "boolean",
    "btrim",
    "cardinality",
    "cast",
    "cbrt",
    "ceil",
    "ceiling",
    "char",
    "char_length",
    "character",
    "character_length",
    "chr",
    "coalesce",
    "col_description",
    "concat",
    "concat_ws",
    "convert",
    "cos",
    "cot",
    "count",
    "cume_dist",
    "current_database",
    "current_date",
    "current_schema",
    "current_schemas",
    "current_setting",
    "current_time",
    "current_timestamp",
    "current_user",
    "date",
    "date_bin",
    "date_part",
    "date_trunc",
    "decimal",
    "decode",
    "degrees",
    "dense_rank",
    "div",
    "double",
    "encode",
    "every",
    "exp",
    "extract",
    "factorial",
    "first_value",
    "float",
    "float4",
    "float8",
    "floor",
    "format",
    "format_type",
    "gcd",
    "gen_random_uuid",
    "generate_series",
    "generate_subscripts",
    "greatest",
    "has_schema_privilege",
    "has_table_privilege",
    "inet_server_addr",
    "initcap",
    "int",
    "int2",
    "int4",
    "int4range",
    "int8",
    "int8range",
    "integer",
    "isempty",
    "isfinite",
    "isodow",
    "json_agg",
    "json_array",
    "json_array_elements",
    "json_array_elements_text",
    "json_array_length",
    "json_build_array",
    "json_build_object",
    "json_each",
    "json_each_text",
    "json_extract_path",
    "json_extract_path_text",
    "json_object",
    "json_object_agg",
    "json_object_keys",
    "json_populate_record",
    "json_to_record",
    "json_to_recordset",
    "json_typeof",
    "jsonb_agg",
    "jsonb_array_elements",
    "jsonb_array_elements_text",
    "jsonb_array_length",
    "jsonb_build_array",
    "jsonb_build_object",
    "jsonb_each",
    "jsonb_each_text",
    "jsonb_extract_path",
    "jsonb_extract_path_text",
    "jsonb_insert",
    "jsonb_object",
    "jsonb_object_agg",
    "jsonb_object_keys",
    "jsonb_path_exists",
    "jsonb_path_match",
    "jsonb_path_query",
    "jsonb_path_query_array",
    "jsonb_path_query_first",
    "jsonb_populate_record",
    "jsonb_pretty",
    "jsonb_set",
    "jsonb_strip_nulls",
    "jsonb_to_record",
    "jsonb_to_recordset",
    "jsonb_typeof",
    "lag",
    "last_value",
    "lcm",
    "lead",
    "least",
    "left",
    "length",
    "ln",
    "localtime",
    "localtimestamp",
    "log",
    "log10",
    "log2",
    "lower",
    "lower_inc",
    "lower_inf",
    "lpad",
    "ltrim",
    "make_date",
    "make_interval",
    "make_time",
    "make_timestamp",
    "make_timestamptz",
    "max",
    "md5",
    "min",
    "mod",
    "mode",
    "nchar",
    "now",
    "nth_value",
    "ntile",
    "nullif",
    "numeric",
    "numrange",
    "nvl",
    "obj_description",
    "octet_length",
    "overlay",
    "percent_rank",
    "percentile_cont",
    "percentile_disc",
    "pg_backend_pid",
    "pg_column_size",
    "pg_current_xact_id",
    "pg_get_constraintdef",
    "pg_get_indexdef",
    "pg_get_viewdef",
    "pg_is_in_recovery",
    "pg_postmaster_start_time",
    "pg_relation_size",
    "pg_size_pretty",
    "pg_sleep",
    "pg_table_is_visible",
    "pg_total_relation_size",
    "pg_typeof",
    "phraseto_tsquery",
    "pi",
    "plainto_tsquery",
    "position",
    "pow",
    "power",
    "quote",
    "quote_ident",
    "quote_literal",
    "quote_nullable",
    "radians",
    "random",
    "range_merge",
    "rank",
    "real",
    "regexp_match",
    "regexp_matches",
    "regexp_replace",
    "regexp_split_to_array",
    "regexp_split_to_table",
    "repeat",
    "replace",
    "reverse",
    "right",
    "round",
    "row_number",
    "row_to_json",
    "rpad",
    "rtrim",
    "scale",
    "session_user",
    "sign",
    "sin",
    "smallint",
    "split_part",
    "sqrt",
    "starts_with",
    "statement_timestamp",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "string_agg",
    "string_to_array",
    "string_to_table",
    "strpos",
    "substr",
    "substring",
    "sum",
    "tan",
    "text",
    "time",
    "timestamp",
    "timestamptz",
    "timetz",
    "to_char",
    "to_date",
    "to_hex",
    "to_json",
    "to_jsonb",
    "to_number",
    "to_regclass",
    "to_regtype",
    "to_timestamp",
    "to_tsquery",
    "to_tsvector",
    "transaction_timestamp",
    "translate",
    "trim",
    "trunc",
    "ts_headline",
    "ts_rank",
    "ts_rank_cd",
    "tsrange",
    "tstzrange",
    "txid_current",
    "unnest",
    "upper",
    "upper_inc",
    "upper_inf",
    "uuid_generate_v4",
    "var_pop",
    "var_samp",
    "varbit",
    "varchar",
    "variance",
    "varying",
    "version",
    "websearch_to_tsquery",
    "width_bucket",
];

/// MySQL/MariaDB built-ins (sorted, lower-case): only real built-in names,
/// since a stored function named like one another backend has would be
/// called instead.
const MYSQL_PURE: &[&str] = &[
    "abs",
    "acos",
    "adddate",
    "addtime",
    "ascii",
    "asin",
    "atan",
    "atan2",
    "avg",
    "bigint",
    "bin",
    "binary",
    "bit",
    "bit_and",
    "bit_length",
    "bit_or",
    "blob",
    "cast",
    "ceil",
    "ceiling",
    "char",
    "char_length",
    "character_length",
    "coalesce",
    "concat",
    "concat_ws",
    "connection_id",
    "conv",
    "convert",
    "convert_tz",
    "cos",
    "cot",
    "count",
    "crc32",
    "cume_dist",
    "curdate",
    "current_date",
    "current_time",
    "current_timestamp",
    "current_user",
    "curtime",
    "database",
    "date",
    "date_add",
    "date_format",
    "date_sub",
    "datediff",
    "datetime",
    "day",
    "dayofmonth",
    "dayofweek",
    "dayofyear",
    "dec",
    "decimal",
    "degrees",
    "dense_rank",
    "div",
    "double",
    "elt",
    "enum",
    "exp",
    "extract",
    "field",
    "find_in_set",
    "first_value",
    "fixed",
    "float",
    "floor",
    "format",
    "found_rows",
    "from_base64",
    "from_unixtime",
    "greatest",
    "group_concat",
    "hex",
    "hour",
    "ifnull",
    "inet_aton",
    "inet_ntoa",
    "insert",
    "instr",
    "int",
    "integer",
    "isnull",
    "json",
    "json_array",
    "json_array_length",
    "json_contains",
    "json_extract",
    "json_insert",
    "json_keys",
    "json_length",
    "json_object",
    "json_query",
    "json_remove",
    "json_replace",
    "json_set",
    "json_type",
    "json_unquote",
    "json_valid",
    "json_value",
    "lag",
    "last_day",
    "last_value",
    "lcase",
    "lead",
    "least",
    "left",
    "length",
    "ln",
    "localtime",
    "localtimestamp",
    "locate",
    "log",
    "log10",
    "log2",
    "lower",
    "lpad",
    "ltrim",
    "max",
    "md5",
    "mediumint",
    "mid",
    "min",
    "minute",
    "mod",
    "month",
    "nchar",
    "now",
    "nth_value",
    "ntile",
    "nullif",
    "numeric",
    "nvarchar",
    "oct",
    "octet_length",
    "percent_rank",
    "pi",
    "position",
    "pow",
    "power",
    "quarter",
    "quote",
    "radians",
    "rand",
    "rank",
    "real",
    "regexp_instr",
    "regexp_like",
    "regexp_replace",
    "regexp_substr",
    "repeat",
    "replace",
    "reverse",
    "right",
    "round",
    "row_count",
    "row_number",
    "rpad",
    "rtrim",
    "schema",
    "second",
    "sha1",
    "sha2",
    "sign",
    "signed",
    "sin",
    "sleep",
    "smallint",
    "sqrt",
    "std",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "str_to_date",
    "substr",
    "substring",
    "substring_index",
    "sum",
    "system_user",
    "tan",
    "text",
    "time",
    "timestamp",
    "timestampadd",
    "timestampdiff",
    "tinyint",
    "to_base64",
    "trim",
    "truncate",
    "ucase",
    "unhex",
    "unix_timestamp",
    "unsigned",
    "upper",
    "user",
    "utc_date",
    "utc_time",
    "utc_timestamp",
    "uuid",
    "var_pop",
    "var_samp",
    "varbinary",
    "varchar",
    "variance",
    "version",
    "week",
    "weekday",
    "year",
];

/// MySQL reserved words that may stand before `(` as syntax.
const MYSQL_RESERVED_BEFORE_PAREN: &[&str] = &[
    "in",
    "values",
    "exists",
    "any",
    "all",
    "some",
    "as",
    "on",
    "using",
    "over",
    "partition",
    "by",
    "and",
    "or",
    "not",
    "where",
    "select",
    "from",
    "join",
    "set",
    "case",
    "when",
    "then",
    "else",
    "row",
    "key",
    "unique",
    "check",
    "distinct",
    "limit",
    "is",
    "between",
    "like",
    "escape",
    "union",
    "intersect",
    "except",
    "with",
    "having",
    "group",
    "order",
    "default",
    "primary",
    "foreign",
    "constraint",
    "collate",
    "into",
    "table",
    "return",
    "window",
    "range",
    "rows",
    "to",
    "for",
    "of",
    "match",
    "against",
    "interval",
    "lateral",
    "generated",
    "xor",
    "div",
    "regexp",
    "rlike",
    "references",
    "if",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_sorted_lower_case_and_free_of_state_changers() {
        for list in [POSTGRES_PURE, MYSQL_PURE] {
            assert!(list.windows(2).all(|pair| pair[0] < pair[1]));
            assert!(
                list.iter()
                    .all(|name| name.bytes().all(|b| !b.is_ascii_uppercase()))
            );
        }
        for state_changer in [
            "set_config",
            "pg_advisory_lock",
            "pg_try_advisory_lock",
            "get_lock",
            "setseed",
            "nextval",
            "setval",
            "last_insert_id",
            "dblink_connect",
            "lo_import",
        ] {
            for backend in [Backend::Postgres, Backend::MySql] {
                assert!(!is_pure_function(state_changer, backend), "{state_changer}");
            }
        }
        for backend in [Backend::Postgres, Backend::MySql] {
            assert!(is_pure_function("count", backend) && is_pure_function("now", backend));
        }
        // Named like another backend's built-in: a stored function on MySQL.
        for name in ["initcap", "strftime", "julianday", "to_char"] {
            assert!(!is_pure_function(name, Backend::MySql), "{name}");
        }
    }
}
