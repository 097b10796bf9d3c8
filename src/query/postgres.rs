//! PostgreSQL: parameters carry their PostgreSQL type (NULL is left for the
//! server to infer), result columns are decoded by type OID, arrays keep
//! their NULL elements.

use std::{fmt::Write as _, str::FromStr};

use bigdecimal::BigDecimal;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use serde_json::value::RawValue;
use sqlx::{
    Arguments, Column, Decode, Encode, Postgres, Row, Type, TypeInfo, ValueRef,
    encode::IsNull,
    error::BoxDynError,
    postgres::{
        PgArgumentBuffer, PgArguments, PgColumn, PgHasArrayType, PgQueryResult, PgRow, PgTypeInfo,
        PgTypeKind, PgValueFormat, PgValueRef, types::Oid,
    },
    types::Json,
};
use uuid::Uuid;

use super::{
    codec::{Codec, array_element_kind, unrepresentable},
    placeholders::{PlaceholderStyle, expected_parameters},
    value::{ColumnInfo, SqlValue, ValueKind},
};
use crate::error::Error;

/// How a PostgreSQL column's values are read.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PgDecoder {
    /// One value.
    Scalar(PgScalar),
    /// A one-dimensional array of this element type.
    Array(PgScalar),
}

/// The scalar PostgreSQL types sqlgate reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PgScalar {
    Bool,
    Int2,
    Int4,
    Int8,
    Oid,
    Float4,
    Float8,
    Numeric,
    Text,
    Bytes,
    Json,
    Uuid,
    Date,
    Time,
    Timestamp,
    Timestamptz,
    /// `void` (e.g. `SELECT pg_sleep(1)`): always NULL.
    Void,
}

impl PgScalar {
    fn from_oid(oid: u32) -> Option<Self> {
        Some(match oid {
            16 => Self::Bool,
            21 => Self::Int2,
            23 => Self::Int4,
            20 => Self::Int8,
            26 => Self::Oid,
            700 => Self::Float4,
            701 => Self::Float8,
            1700 => Self::Numeric,
            25 | 1043 | 1042 | 19 | 705 => Self::Text,
            17 => Self::Bytes,
            114 | 3802 => Self::Json,
            2950 => Self::Uuid,
            1082 => Self::Date,
            1083 => Self::Time,
            1114 => Self::Timestamp,
            1184 => Self::Timestamptz,
            2278 => Self::Void,
            _ => return None,
        })
    }

    fn array_from_oid(oid: u32) -> Option<Self> {
        Some(match oid {
            1000 => Self::Bool,
            1005 => Self::Int2,
            1007 => Self::Int4,
            1016 => Self::Int8,
            1028 => Self::Oid,
            1021 => Self::Float4,
            1022 => Self::Float8,
            1231 => Self::Numeric,
            1009 | 1015 | 1014 | 1003 => Self::Text,
            1001 => Self::Bytes,
            199 | 3807 => Self::Json,
            2951 => Self::Uuid,
            1182 => Self::Date,
            1183 => Self::Time,
            1115 => Self::Timestamp,
            1185 => Self::Timestamptz,
            _ => return None,
        })
    }

    fn kind(self) -> ValueKind {
        match self {
            Self::Bool => ValueKind::Bool,
            Self::Int2 | Self::Int4 | Self::Int8 | Self::Oid => ValueKind::Int,
            Self::Float4 | Self::Float8 => ValueKind::Float,
            Self::Numeric => ValueKind::Decimal,
            Self::Text => ValueKind::Text,
            Self::Bytes => ValueKind::Bytes,
            Self::Json => ValueKind::Json,
            Self::Uuid => ValueKind::Uuid,
            Self::Date => ValueKind::Date,
            Self::Time => ValueKind::Time,
            Self::Timestamp => ValueKind::DateTime,
            Self::Timestamptz => ValueKind::Timestamp,
            Self::Void => ValueKind::Null,
        }
    }
}

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

fn add_param(args: &mut PgArguments, value: &SqlValue) -> Result<(), String> {
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

fn parse_decimal(text: &str) -> Result<NumericParam, String> {
    // The special values, as PostgreSQL spells them (and sqlgate returns them).
    let special = match text {
        "NaN" => Some(0xC000),
        "Infinity" => Some(0xD000),
        "-Infinity" => Some(0xF000),
        _ => None,
    };
    match special {
        Some(sign) => Ok(NumericParam::Special(sign)),
        None => BigDecimal::from_str(text)
            .map(NumericParam::Finite)
            .map_err(|_| "not a decimal".to_owned()),
    }
}

/// A `numeric` parameter: a finite decimal, or NaN / ±Infinity, which
/// `BigDecimal` cannot hold (sent in numeric's binary format: no digits,
/// the special value in the sign word).
enum NumericParam {
    Finite(BigDecimal),
    Special(u16),
}

impl Type<Postgres> for NumericParam {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(Oid(1700))
    }
}

impl PgHasArrayType for NumericParam {
    fn array_type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(Oid(1231))
    }
}

impl Encode<'_, Postgres> for NumericParam {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        match self {
            Self::Finite(decimal) => {
                <BigDecimal as Encode<'_, Postgres>>::encode_by_ref(decimal, buf)
            }
            Self::Special(sign) => {
                // ndigits, weight, sign, dscale.
                for word in [0, 0, *sign, 0] {
                    buf.extend_from_slice(&word.to_be_bytes());
                }
                Ok(IsNull::No)
            }
        }
    }
}

/// `numeric` read as its exact text. sqlx's `BigDecimal` decoding drops the
/// column's display scale (`1.50` would come back as `1.5000`), so sqlgate
/// reads the binary format itself: base-10000 digits, a weight, a sign and
/// the display scale. NaN and infinities come back as PostgreSQL spells them.
struct NumericText(String);

impl Type<Postgres> for NumericText {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(Oid(1700))
    }
}

impl PgHasArrayType for NumericText {
    fn array_type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(Oid(1231))
    }
}

impl<'r> Decode<'r, Postgres> for NumericText {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        match value.format() {
            PgValueFormat::Text => Ok(Self(value.as_str()?.to_owned())),
            PgValueFormat::Binary => numeric_text(value.as_bytes()?).map(Self),
        }
    }
}

/// A `json` or `jsonb` value as its text. PostgreSQL has validated it
/// already, so it is passed on without being parsed again.
struct JsonText(String);

impl<'r> Decode<'r, Postgres> for JsonText {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        let is_jsonb = value.type_info().oid() == Some(Oid(3802));
        let text = match value.format() {
            PgValueFormat::Text => value.as_str()?,
            PgValueFormat::Binary if is_jsonb => match value.as_bytes()?.split_first() {
                // jsonb's binary format: version 1, then the text.
                Some((1, text)) => std::str::from_utf8(text)?,
                _ => return Err("unknown jsonb binary format version".into()),
            },
            PgValueFormat::Binary => value.as_str()?,
        };
        Ok(Self(text.to_owned()))
    }
}

fn numeric_text(bytes: &[u8]) -> Result<String, BoxDynError> {
    let word = |at: usize| -> Result<i16, BoxDynError> {
        bytes
            .get(at..at + 2)
            .map(|b| i16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "numeric value is truncated".into())
    };
    let ndigits = usize::try_from(word(0)?)?;
    let weight = i64::from(word(2)?);
    let sign = word(4)? as u16;
    let dscale = usize::try_from(word(6)?)?;
    match sign {
        0xC000 => return Ok("NaN".to_owned()),
        0xD000 => return Ok("Infinity".to_owned()),
        0xF000 => return Ok("-Infinity".to_owned()),
        _ => {}
    }
    let digits = (0..ndigits)
        .map(|i| word(8 + 2 * i))
        .collect::<Result<Vec<_>, _>>()?;
    let digit = |i: i64| -> i16 {
        usize::try_from(i)
            .ok()
            .and_then(|i| digits.get(i).copied())
            .unwrap_or(0)
    };
    let mut text = String::with_capacity(8 + 4 * ndigits + dscale);
    if sign == 0x4000 {
        text.push('-');
    }
    if weight < 0 {
        text.push('0');
    } else {
        for i in 0..=weight {
            if i == 0 {
                let _ = write!(text, "{}", digit(i));
            } else {
                let _ = write!(text, "{:04}", digit(i));
            }
        }
    }
    if dscale > 0 {
        text.push('.');
        let start = text.len();
        let mut group = weight + 1;
        while text.len() - start < dscale {
            let _ = write!(text, "{:04}", digit(group));
            group += 1;
        }
        text.truncate(start + dscale);
    }
    Ok(text)
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

impl Codec for Postgres {
    type Decoder = PgDecoder;

    fn encode_params(params: &[SqlValue]) -> Result<PgArguments, Error> {
        let mut args = PgArguments::default();
        for (index, value) in params.iter().enumerate() {
            add_param(&mut args, value).map_err(|msg| Error::invalid_parameter(index, msg))?;
        }
        Ok(args)
    }

    fn statement_text(sql: &str, params: &[SqlValue]) -> String {
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

    fn expected_parameters(sql: &str) -> Option<usize> {
        Some(expected_parameters(sql, PlaceholderStyle::Numbered))
    }

    fn plan_column(column: &PgColumn) -> Result<(ColumnInfo, PgDecoder), Error> {
        let type_info = column.type_info();
        let db_type = type_info.name().to_ascii_lowercase();
        let oid = type_info.oid().map(|oid| oid.0).unwrap_or_default();
        let decoder = if let Some(scalar) = PgScalar::from_oid(oid) {
            PgDecoder::Scalar(scalar)
        } else if let Some(scalar) = PgScalar::array_from_oid(oid) {
            PgDecoder::Array(scalar)
        } else if matches!(type_info.kind(), PgTypeKind::Enum(_)) {
            PgDecoder::Scalar(PgScalar::Text)
        } else {
            return Err(Error::UnsupportedColumn {
                column: column.name().to_owned(),
                db_type,
            });
        };
        let (kind, element_kind) = match decoder {
            PgDecoder::Scalar(scalar) => (scalar.kind(), None),
            PgDecoder::Array(scalar) => (ValueKind::Array, Some(scalar.kind())),
        };
        let info = ColumnInfo {
            name: column.name().to_owned(),
            kind,
            element_kind,
            db_type,
            nullable: None,
        };
        Ok((info, decoder))
    }

    fn decode(
        row: &PgRow,
        index: usize,
        decoder: PgDecoder,
        column: &ColumnInfo,
    ) -> Result<SqlValue, Error> {
        match decoder {
            PgDecoder::Scalar(scalar) => decode_scalar(row, index, scalar),
            PgDecoder::Array(scalar) => decode_array(row, index, scalar),
        }
        .map_err(|err| unrepresentable(column, err))
    }

    fn rows_affected(result: &PgQueryResult) -> u64 {
        result.rows_affected()
    }
}

fn opt<T>(value: Option<T>, wrap: impl FnOnce(T) -> SqlValue) -> SqlValue {
    value.map_or(SqlValue::Null, wrap)
}

/// Decodes column `i` as `scalar`. The scalar was chosen from the column's
/// type OID when the statement was planned, so sqlx's per-value type check
/// (a tenth of the work per streamed row) is skipped.
fn decode_scalar(row: &PgRow, i: usize, scalar: PgScalar) -> Result<SqlValue, sqlx::Error> {
    Ok(match scalar {
        PgScalar::Bool => opt(row.try_get_unchecked::<Option<bool>, _>(i)?, SqlValue::Bool),
        PgScalar::Int2 => opt(row.try_get_unchecked::<Option<i16>, _>(i)?, |v| {
            SqlValue::Int(v.into())
        }),
        PgScalar::Int4 => opt(row.try_get_unchecked::<Option<i32>, _>(i)?, |v| {
            SqlValue::Int(v.into())
        }),
        PgScalar::Int8 => opt(row.try_get_unchecked::<Option<i64>, _>(i)?, SqlValue::Int),
        PgScalar::Oid => opt(row.try_get_unchecked::<Option<Oid>, _>(i)?, |v| {
            SqlValue::Int(v.0.into())
        }),
        PgScalar::Float4 => opt(row.try_get_unchecked::<Option<f32>, _>(i)?, |v| {
            SqlValue::Float(v.into())
        }),
        PgScalar::Float8 => opt(row.try_get_unchecked::<Option<f64>, _>(i)?, SqlValue::Float),
        PgScalar::Numeric => opt(row.try_get_unchecked::<Option<NumericText>, _>(i)?, |v| {
            SqlValue::Decimal(v.0)
        }),
        // Text-like types (and enums) share text's binary format.
        PgScalar::Text => opt(
            row.try_get_unchecked::<Option<String>, _>(i)?,
            SqlValue::Text,
        ),
        PgScalar::Bytes => opt(
            row.try_get_unchecked::<Option<Vec<u8>>, _>(i)?,
            SqlValue::Bytes,
        ),
        PgScalar::Json => opt(row.try_get_unchecked::<Option<JsonText>, _>(i)?, |v| {
            SqlValue::Json(v.0)
        }),
        PgScalar::Uuid => opt(row.try_get_unchecked::<Option<Uuid>, _>(i)?, SqlValue::Uuid),
        PgScalar::Date => opt(
            row.try_get_unchecked::<Option<NaiveDate>, _>(i)?,
            SqlValue::Date,
        ),
        PgScalar::Time => opt(
            row.try_get_unchecked::<Option<NaiveTime>, _>(i)?,
            SqlValue::Time,
        ),
        PgScalar::Timestamp => opt(
            row.try_get_unchecked::<Option<NaiveDateTime>, _>(i)?,
            SqlValue::DateTime,
        ),
        PgScalar::Timestamptz => opt(
            row.try_get_unchecked::<Option<DateTime<Utc>>, _>(i)?,
            SqlValue::Timestamp,
        ),
        PgScalar::Void => SqlValue::Null,
    })
}

fn decode_array(row: &PgRow, i: usize, scalar: PgScalar) -> Result<SqlValue, sqlx::Error> {
    fn array<T>(values: Option<Vec<Option<T>>>, wrap: impl Fn(T) -> SqlValue) -> SqlValue {
        match values {
            None => SqlValue::Null,
            Some(values) => SqlValue::Array(
                values
                    .into_iter()
                    .map(|v| v.map_or(SqlValue::Null, &wrap))
                    .collect(),
            ),
        }
    }
    Ok(match scalar {
        PgScalar::Bool => array(row.try_get(i)?, SqlValue::Bool),
        PgScalar::Int2 => array::<i16>(row.try_get(i)?, |v| SqlValue::Int(v.into())),
        PgScalar::Int4 => array::<i32>(row.try_get(i)?, |v| SqlValue::Int(v.into())),
        PgScalar::Int8 => array(row.try_get(i)?, SqlValue::Int),
        PgScalar::Oid => array::<Oid>(row.try_get(i)?, |v| SqlValue::Int(v.0.into())),
        PgScalar::Float4 => array::<f32>(row.try_get(i)?, |v| SqlValue::Float(v.into())),
        PgScalar::Float8 => array(row.try_get(i)?, SqlValue::Float),
        PgScalar::Numeric => {
            array::<NumericText>(row.try_get_unchecked(i)?, |v| SqlValue::Decimal(v.0))
        }
        PgScalar::Text => array(row.try_get_unchecked(i)?, SqlValue::Text),
        PgScalar::Bytes => array(row.try_get(i)?, SqlValue::Bytes),
        PgScalar::Json => {
            array::<Json<Box<RawValue>>>(row.try_get(i)?, |v| SqlValue::Json(v.0.get().to_owned()))
        }
        PgScalar::Uuid => array(row.try_get(i)?, SqlValue::Uuid),
        PgScalar::Date => array(row.try_get(i)?, SqlValue::Date),
        PgScalar::Time => array(row.try_get(i)?, SqlValue::Time),
        PgScalar::Timestamp => array(row.try_get(i)?, SqlValue::DateTime),
        PgScalar::Timestamptz => array(row.try_get(i)?, SqlValue::Timestamp),
        PgScalar::Void => SqlValue::Null,
    })
}

#[cfg(test)]
mod tests {
    use super::numeric_text;

    fn encode(ndigits: i16, weight: i16, sign: u16, dscale: i16, digits: &[i16]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for word in [ndigits, weight, sign as i16, dscale].iter().chain(digits) {
            bytes.extend_from_slice(&word.to_be_bytes());
        }
        bytes
    }

    #[test]
    fn numeric_binary_keeps_the_display_scale() {
        // 1.50 as numeric(10,2): one digit group "1", one fractional group "5000", dscale 2.
        assert_eq!(
            numeric_text(&encode(2, 0, 0, 2, &[1, 5000])).expect("ok"),
            "1.50"
        );
        // 12345678.9 with dscale 10.
        assert_eq!(
            numeric_text(&encode(3, 1, 0, 10, &[1234, 5678, 9000])).expect("ok"),
            "12345678.9000000000"
        );
        // -0.0000000001: weight -3 puts the digit in the third fractional group.
        assert_eq!(
            numeric_text(&encode(1, -3, 0x4000, 10, &[100])).expect("ok"),
            "-0.0000000001"
        );
        // Zero with scale.
        assert_eq!(numeric_text(&encode(0, 0, 0, 3, &[])).expect("ok"), "0.000");
        // 10000 (trailing zero groups are not sent).
        assert_eq!(
            numeric_text(&encode(1, 1, 0, 0, &[1])).expect("ok"),
            "10000"
        );
        assert_eq!(
            numeric_text(&encode(0, 0, 0xC000, 0, &[])).expect("ok"),
            "NaN"
        );
        assert!(
            numeric_text(&[0, 1]).is_err(),
            "truncated input is an error, not a panic"
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let _ = numeric_text(&bytes);
        }
    }
}
