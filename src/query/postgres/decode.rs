//! PostgreSQL results into values: each column's decoder is chosen once
//! from its type OID when the statement is planned (scalars, one-dimensional
//! arrays, enums as text), and every row's values are read with it.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use serde_json::value::RawValue;
use sqlx::{
    Column, Decode, Postgres, Row, TypeInfo, ValueRef,
    error::BoxDynError,
    postgres::{PgColumn, PgRow, PgTypeKind, PgValueFormat, PgValueRef, types::Oid},
    types::Json,
};
use uuid::Uuid;

use super::numeric::NumericText;
use crate::{
    error::Error,
    query::value::{ColumnInfo, SqlValue, ValueKind},
};

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

/// Describes a result column and picks its decoder from the type OID.
pub(super) fn plan_column(column: &PgColumn) -> Result<(ColumnInfo, PgDecoder), Error> {
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

fn opt<T>(value: Option<T>, wrap: impl FnOnce(T) -> SqlValue) -> SqlValue {
    value.map_or(SqlValue::Null, wrap)
}

/// Decodes column `i` as `scalar`. The scalar was chosen from the column's
/// type OID when the statement was planned, so sqlx's per-value type check
/// (a tenth of the work per streamed row) is skipped.
pub(super) fn decode_scalar(
    row: &PgRow,
    i: usize,
    scalar: PgScalar,
) -> Result<SqlValue, sqlx::Error> {
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

/// Decodes column `i` as a one-dimensional array of `scalar`, keeping
/// its NULL elements.
pub(super) fn decode_array(
    row: &PgRow,
    i: usize,
    scalar: PgScalar,
) -> Result<SqlValue, sqlx::Error> {
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
