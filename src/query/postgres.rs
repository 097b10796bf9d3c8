//! PostgreSQL: parameters carry their PostgreSQL type (NULL is left for the
//! server to infer), result columns are decoded by type OID, arrays keep
//! their NULL elements.

use std::fmt::Write as _;

use bigdecimal::BigDecimal;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use serde_json::value::RawValue;
use sqlx::{
    Arguments, Column, Encode, Postgres, Row, Type, TypeInfo,
    encode::IsNull,
    error::BoxDynError,
    postgres::{
        PgArgumentBuffer, PgArguments, PgColumn, PgHasArrayType, PgQueryResult, PgRow,
        PgTypeInfo, PgTypeKind,
        types::Oid,
    },
    types::Json,
};
use uuid::Uuid;

use super::{
    codec::{Codec, array_element_kind, unrepresentable},
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
        SqlValue::Decimal(v) => args.add(v),
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
        Some(ValueKind::Decimal) => args.add(elements(items, |v| match v {
            SqlValue::Decimal(d) => Some(d.clone()),
            _ => None,
        })),
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

fn decode_scalar(row: &PgRow, i: usize, scalar: PgScalar) -> Result<SqlValue, sqlx::Error> {
    Ok(match scalar {
        PgScalar::Bool => opt(row.try_get::<Option<bool>, _>(i)?, SqlValue::Bool),
        PgScalar::Int2 => opt(row.try_get::<Option<i16>, _>(i)?, |v| {
            SqlValue::Int(v.into())
        }),
        PgScalar::Int4 => opt(row.try_get::<Option<i32>, _>(i)?, |v| {
            SqlValue::Int(v.into())
        }),
        PgScalar::Int8 => opt(row.try_get::<Option<i64>, _>(i)?, SqlValue::Int),
        PgScalar::Oid => opt(row.try_get::<Option<Oid>, _>(i)?, |v| {
            SqlValue::Int(v.0.into())
        }),
        PgScalar::Float4 => opt(row.try_get::<Option<f32>, _>(i)?, |v| {
            SqlValue::Float(v.into())
        }),
        PgScalar::Float8 => opt(row.try_get::<Option<f64>, _>(i)?, SqlValue::Float),
        PgScalar::Numeric => opt(row.try_get::<Option<BigDecimal>, _>(i)?, SqlValue::Decimal),
        // Text-like types (and enums) share text's binary format.
        PgScalar::Text => opt(
            row.try_get_unchecked::<Option<String>, _>(i)?,
            SqlValue::Text,
        ),
        PgScalar::Bytes => opt(row.try_get::<Option<Vec<u8>>, _>(i)?, SqlValue::Bytes),
        PgScalar::Json => opt(
            row.try_get::<Option<Json<Box<RawValue>>>, _>(i)?,
            |v| SqlValue::Json(v.0.get().to_owned()),
        ),
        PgScalar::Uuid => opt(row.try_get::<Option<Uuid>, _>(i)?, SqlValue::Uuid),
        PgScalar::Date => opt(row.try_get::<Option<NaiveDate>, _>(i)?, SqlValue::Date),
        PgScalar::Time => opt(row.try_get::<Option<NaiveTime>, _>(i)?, SqlValue::Time),
        PgScalar::Timestamp => opt(
            row.try_get::<Option<NaiveDateTime>, _>(i)?,
            SqlValue::DateTime,
        ),
        PgScalar::Timestamptz => opt(
            row.try_get::<Option<DateTime<Utc>>, _>(i)?,
            SqlValue::Timestamp,
        ),
    })
}

fn decode_array(row: &PgRow, i: usize, scalar: PgScalar) -> Result<SqlValue, sqlx::Error> {
    fn array<T>(
        values: Option<Vec<Option<T>>>,
        wrap: impl Fn(T) -> SqlValue,
    ) -> SqlValue {
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
        PgScalar::Numeric => array(row.try_get(i)?, SqlValue::Decimal),
        PgScalar::Text => array(row.try_get_unchecked(i)?, SqlValue::Text),
        PgScalar::Bytes => array(row.try_get(i)?, SqlValue::Bytes),
        PgScalar::Json => array::<Json<Box<RawValue>>>(row.try_get(i)?, |v| {
            SqlValue::Json(v.0.get().to_owned())
        }),
        PgScalar::Uuid => array(row.try_get(i)?, SqlValue::Uuid),
        PgScalar::Date => array(row.try_get(i)?, SqlValue::Date),
        PgScalar::Time => array(row.try_get(i)?, SqlValue::Time),
        PgScalar::Timestamp => array(row.try_get(i)?, SqlValue::DateTime),
        PgScalar::Timestamptz => array(row.try_get(i)?, SqlValue::Timestamp),
    })
}
