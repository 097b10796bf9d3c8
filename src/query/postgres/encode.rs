//! Parameters into PostgreSQL arguments: each value bound as its PostgreSQL
//! type (NULL untyped, so that the server infers it; JSON as `jsonb`;
//! arrays as `Vec<Option<T>>` of their element kind), and the statement
//! text that gives each type signature its own prepared statement.

use std::fmt::Write as _;

use sqlx::{
    Arguments, Encode, Postgres, Type,
    encode::IsNull,
    error::BoxDynError,
    postgres::{PgArgumentBuffer, PgArguments, PgHasArrayType, PgTypeInfo, types::Oid},
};

use super::numeric::parse_decimal;
use crate::query::{
    codec::array_element_kind,
    value::{SqlValue, ValueKind, leap_second_refusal, sub_microsecond_refusal},
};

/// A NULL parameter whose type PostgreSQL infers from the statement
/// (type OID 0), so that NULL fits any column.
struct UntypedNull;

impl Type<Postgres> for UntypedNull {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(Oid(0))
    }
}

impl Encode<'_, Postgres> for UntypedNull {
    fn encode_by_ref(&self, _buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        Ok(IsNull::Yes)
    }
}

/// JSON text sent as `jsonb` without re-serialising it.
struct JsonbText<'a>(&'a str);

impl Type<Postgres> for JsonbText<'_> {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(Oid(3802))
    }
}

impl PgHasArrayType for JsonbText<'_> {
    fn array_type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(Oid(3807))
    }
}

impl Encode<'_, Postgres> for JsonbText<'_> {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        // jsonb's binary format: version 1, then the text.
        buf.push(1);
        buf.extend_from_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }
}

/// What PostgreSQL would do with a leap second: it takes second 60 and
/// stores second 00 of the next minute (`23:59:60` as `24:00:00` in a
/// `time`, as the next day's midnight in a `timestamp`).
const LEAP_SECOND_MOVES: &str = "PostgreSQL would store as second 00 of the next minute";

/// Binds one parameter as its PostgreSQL type.
pub(super) fn add_param(args: &mut PgArguments, value: &SqlValue) -> Result<(), String> {
    if let Some(refusal) =
        leap_second_refusal(value, LEAP_SECOND_MOVES).or_else(|| sub_microsecond_refusal(value))
    {
        return Err(refusal);
    }
    let added = match value {
        SqlValue::Null => args.add(UntypedNull),
        SqlValue::Bool(v) => args.add(*v),
        SqlValue::Int(v) => args.add(*v),
        SqlValue::Float(v) => args.add(*v),
        SqlValue::Text(v) => args.add(v.as_str()),
        SqlValue::Bytes(v) => args.add(v.as_slice()),
        SqlValue::Decimal(v) => args.add(parse_decimal(v)?),
        SqlValue::Timestamp(v) => args.add(*v),
        SqlValue::DateTime(v) => args.add(*v),
        SqlValue::Date(v) => args.add(*v),
        SqlValue::Time(v) => args.add(*v),
        SqlValue::Json(v) => args.add(JsonbText(v)),
        SqlValue::Uuid(v) => args.add(*v),
        SqlValue::Array(items) => return add_array(args, items),
    };
    added.map_err(|err| err.to_string())
}

/// Binds an array as `Vec<Option<T>>` of its element kind; an empty or
/// all-NULL array binds as `text[]` (cast it in SQL if another type is needed).
fn add_array(args: &mut PgArguments, items: &[SqlValue]) -> Result<(), String> {
    fn elements<'a, T>(
        items: &'a [SqlValue],
        pick: impl Fn(&'a SqlValue) -> Option<T>,
    ) -> Vec<Option<T>> {
        items.iter().map(pick).collect()
    }
    let kind = array_element_kind(items)?;
    let added = match kind {
        None => args.add(elements::<String>(items, |_| None)),
        Some(ValueKind::Bool) => args.add(elements(items, |v| match v {
            SqlValue::Bool(b) => Some(*b),
            _ => None,
        })),
        Some(ValueKind::Int) => args.add(elements(items, |v| match v {
            SqlValue::Int(i) => Some(*i),
            _ => None,
        })),
        Some(ValueKind::Float) => args.add(elements(items, |v| match v {
            SqlValue::Float(f) => Some(*f),
            _ => None,
        })),
        Some(ValueKind::Text) => args.add(elements(items, |v| match v {
            SqlValue::Text(s) => Some(s.as_str()),
            _ => None,
        })),
        Some(ValueKind::Bytes) => args.add(elements(items, |v| match v {
            SqlValue::Bytes(b) => Some(b.clone()),
            _ => None,
        })),
        Some(ValueKind::Decimal) => args.add(
            items
                .iter()
                .map(|v| match v {
                    SqlValue::Decimal(d) => parse_decimal(d).map(Some),
                    _ => Ok(None),
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(ValueKind::Timestamp) => args.add(elements(items, |v| match v {
            SqlValue::Timestamp(t) => Some(*t),
            _ => None,
        })),
        Some(ValueKind::DateTime) => args.add(elements(items, |v| match v {
            SqlValue::DateTime(t) => Some(*t),
            _ => None,
        })),
        Some(ValueKind::Date) => args.add(elements(items, |v| match v {
            SqlValue::Date(d) => Some(*d),
            _ => None,
        })),
        Some(ValueKind::Time) => args.add(elements(items, |v| match v {
            SqlValue::Time(t) => Some(*t),
            _ => None,
        })),
        Some(ValueKind::Json) => args.add(elements(items, |v| match v {
            SqlValue::Json(s) => Some(JsonbText(s)),
            _ => None,
        })),
        Some(ValueKind::Uuid) => args.add(elements(items, |v| match v {
            SqlValue::Uuid(u) => Some(*u),
            _ => None,
        })),
        Some(other) => return Err(format!("arrays of {other:?} are not supported")),
    };
    added.map_err(|err| err.to_string())
}

/// The PostgreSQL type a parameter is sent as, for the statement-cache key.
fn param_type_name(value: &SqlValue) -> &'static str {
    match value {
        SqlValue::Null => "unknown",
        SqlValue::Bool(_) => "bool",
        SqlValue::Int(_) => "int8",
        SqlValue::Float(_) => "float8",
        SqlValue::Text(_) => "text",
        SqlValue::Bytes(_) => "bytea",
        SqlValue::Decimal(_) => "numeric",
        SqlValue::Timestamp(_) => "timestamptz",
        SqlValue::DateTime(_) => "timestamp",
        SqlValue::Date(_) => "date",
        SqlValue::Time(_) => "time",
        SqlValue::Json(_) => "jsonb",
        SqlValue::Uuid(_) => "uuid",
        SqlValue::Array(items) => match array_element_kind(items) {
            Ok(Some(ValueKind::Bool)) => "bool[]",
            Ok(Some(ValueKind::Int)) => "int8[]",
            Ok(Some(ValueKind::Float)) => "float8[]",
            Ok(Some(ValueKind::Bytes)) => "bytea[]",
            Ok(Some(ValueKind::Decimal)) => "numeric[]",
            Ok(Some(ValueKind::Timestamp)) => "timestamptz[]",
            Ok(Some(ValueKind::DateTime)) => "timestamp[]",
            Ok(Some(ValueKind::Date)) => "date[]",
            Ok(Some(ValueKind::Time)) => "time[]",
            Ok(Some(ValueKind::Json)) => "jsonb[]",
            Ok(Some(ValueKind::Uuid)) => "uuid[]",
            _ => "text[]",
        },
    }
}

/// The text sent for `sql` bound with `params`; see
/// [`Codec::statement_text`](crate::query::codec::Codec::statement_text).
pub(super) fn statement_text(sql: &str, params: &[SqlValue]) -> String {
    if params.is_empty() {
        return sql.to_owned();
    }
    // PostgreSQL fixes parameter types when a statement is prepared and
    // sqlx caches statements by text, so the same text bound with other
    // types would be read with the first call's types. The signature in
    // a trailing comment gives each type signature its own statement.
    let mut text = String::with_capacity(sql.len() + 16 + params.len() * 8);
    text.push_str(sql);
    text.push_str("\n/* sqlgate:");
    for (index, value) in params.iter().enumerate() {
        if index > 0 {
            text.push(',');
        }
        let _ = write!(text, "{}", param_type_name(value));
    }
    text.push_str(" */");
    text
}
