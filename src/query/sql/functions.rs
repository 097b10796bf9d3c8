//! Names that may stand before `(` without changing connection state:
//! keywords that take a parenthesised list, type names with modifiers, and
//! built-in functions known to be pure as far as the connection goes (they
//! may read the clock or a random source; none sets a setting, takes a
//! session lock or creates an object). Anything not listed is taken to
//! leave state: the call then runs in a transaction and the connection is
//! reset or closed after it. Deliberately absent: `set_config`, the
//! advisory-lock and `get_lock` families, `setseed`, `nextval`/`setval`,
//! `last_insert_id`, `dblink*`, and every user-defined function.

/// Keywords followed by `(` that are syntax, not a call.
pub(crate) fn is_structural_keyword(word: &str) -> bool {
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

/// Built-in functions and type names that change no connection state.
pub(crate) fn is_pure_function(name: &str) -> bool {
    PURE_FUNCTIONS.binary_search(&name).is_ok()
}

/// Sorted, lower-case (checked by a unit test).
const PURE_FUNCTIONS: &[&str] = &[
    "abs",
    "acos",
    "adddate",
    "addtime",
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
    "bin",
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
    "current_database",
    "current_date",
    "current_schema",
    "current_schemas",
    "current_setting",
    "current_time",
    "current_timestamp",
    "current_user",
    "curtime",
    "database",
    "date",
    "date_add",
    "date_bin",
    "date_format",
    "date_part",
    "date_sub",
    "date_trunc",
    "datediff",
    "datetime",
    "day",
    "dayofmonth",
    "dayofweek",
    "dayofyear",
    "decimal",
    "decode",
    "degrees",
    "dense_rank",
    "div",
    "double",
    "elt",
    "encode",
    "enum",
    "every",
    "exp",
    "extract",
    "factorial",
    "field",
    "find_in_set",
    "first_value",
    "float",
    "float4",
    "float8",
    "floor",
    "format",
    "format_type",
    "found_rows",
    "from_base64",
    "from_unixtime",
    "gcd",
    "gen_random_uuid",
    "generate_series",
    "generate_subscripts",
    "glob",
    "greatest",
    "group_concat",
    "has_schema_privilege",
    "has_table_privilege",
    "hex",
    "hour",
    "ifnull",
    "iif",
    "inet_aton",
    "inet_ntoa",
    "inet_server_addr",
    "initcap",
    "insert",
    "instr",
    "int",
    "int2",
    "int4",
    "int4range",
    "int8",
    "int8range",
    "integer",
    "isempty",
    "isfinite",
    "isnull",
    "isodow",
    "json_agg",
    "json_array",
    "json_array_elements",
    "json_array_elements_text",
    "json_array_length",
    "json_build_array",
    "json_build_object",
    "json_contains",
    "json_each",
    "json_each_text",
    "json_extract",
    "json_extract_path",
    "json_extract_path_text",
    "json_group_array",
    "json_group_object",
    "json_insert",
    "json_keys",
    "json_length",
    "json_object",
    "json_object_agg",
    "json_object_keys",
    "json_populate_record",
    "json_query",
    "json_remove",
    "json_replace",
    "json_set",
    "json_to_record",
    "json_to_recordset",
    "json_type",
    "json_typeof",
    "json_unquote",
    "json_valid",
    "json_value",
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
    "julianday",
    "lag",
    "last_day",
    "last_value",
    "lcase",
    "lcm",
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
    "mediumint",
    "mid",
    "min",
    "minute",
    "mod",
    "mode",
    "month",
    "nchar",
    "now",
    "nth_value",
    "ntile",
    "nullif",
    "numeric",
    "numrange",
    "nvarchar",
    "nvl",
    "obj_description",
    "oct",
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
    "printf",
    "quarter",
    "quote",
    "quote_ident",
    "quote_literal",
    "quote_nullable",
    "radians",
    "rand",
    "random",
    "range_merge",
    "rank",
    "real",
    "regexp_instr",
    "regexp_like",
    "regexp_match",
    "regexp_matches",
    "regexp_replace",
    "regexp_split_to_array",
    "regexp_split_to_table",
    "regexp_substr",
    "repeat",
    "replace",
    "reverse",
    "right",
    "round",
    "row_count",
    "row_number",
    "row_to_json",
    "rpad",
    "rtrim",
    "scale",
    "schema",
    "second",
    "session_user",
    "sha1",
    "sha2",
    "sign",
    "signed",
    "sin",
    "sleep",
    "smallint",
    "split_part",
    "sqrt",
    "starts_with",
    "statement_timestamp",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "str_to_date",
    "strftime",
    "string_agg",
    "string_to_array",
    "string_to_table",
    "strpos",
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
    "timestamptz",
    "timetz",
    "tinyint",
    "to_base64",
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
    "total",
    "transaction_timestamp",
    "translate",
    "trim",
    "trunc",
    "truncate",
    "ts_headline",
    "ts_rank",
    "ts_rank_cd",
    "tsrange",
    "tstzrange",
    "txid_current",
    "typeof",
    "ucase",
    "unhex",
    "unicode",
    "unix_timestamp",
    "unnest",
    "unsigned",
    "upper",
    "upper_inc",
    "upper_inf",
    "user",
    "utc_date",
    "utc_time",
    "utc_timestamp",
    "uuid",
    "uuid_generate_v4",
    "var_pop",
    "var_samp",
    "varbinary",
    "varbit",
    "varchar",
    "variance",
    "varying",
    "version",
    "websearch_to_tsquery",
    "week",
    "weekday",
    "width_bucket",
    "year",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_sorted_lower_case_and_free_of_state_changers() {
        assert!(PURE_FUNCTIONS.windows(2).all(|pair| pair[0] < pair[1]));
        assert!(
            PURE_FUNCTIONS
                .iter()
                .all(|name| name.bytes().all(|b| !b.is_ascii_uppercase()))
        );
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
            assert!(!is_pure_function(state_changer), "{state_changer}");
        }
        assert!(is_pure_function("count") && is_pure_function("now"));
    }
}
