//! PostgreSQL results into values: each column's decoder is chosen once
//! from its type OID when the statement is planned (scalars, one-dimensional
//! arrays, enums as text), and every row's values are read with it. Dates
//! and times are read by wrappers that refuse what no value kind carries
//! (`time` 24:00:00, `infinity`, dates beyond chrono's range) instead of
//! letting sqlx wrap it around or panic.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, Utc};
use serde_json::value::RawValue;
use sqlx::{
    Column, Decode, Postgres, Row, Type, TypeInfo, ValueRef,
    error::BoxDynError,
    postgres::{
        PgColumn, PgHasArrayType, PgRow, PgTypeInfo, PgTypeKind, PgValueFormat, PgValueRef,
        types::Oid,
    },
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
pub(super) struct JsonText<'r>(pub(super) &'r str);

impl<'r> Decode<'r, Postgres> for JsonText<'r> {
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
        Ok(Self(text))
    }
}

/// A `time` value. PostgreSQL's `time` runs to `24:00:00` (also what it
/// stores for `23:59:60`), which no time of day carries: sqlx would read it
/// as `00:00:00`, the start of the same day. It is refused instead.
pub(super) struct TimeOfDay(pub(super) NaiveTime);

/// A `date`; `infinity`, `-infinity` and days beyond chrono's range
/// (±262,143 years) are refused, where sqlx would panic.
pub(super) struct Day(pub(super) NaiveDate);

/// A `timestamp`; like [`Day`] for `infinity` and range.
pub(super) struct WallClock(pub(super) NaiveDateTime);

/// A `timestamptz`; like [`Day`] for `infinity` and range.
pub(super) struct Instant(pub(super) DateTime<Utc>);

/// Microseconds in a day: `time`'s binary value for `24:00:00`.
const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Why `24:00:00` is refused (the column's name is added by the caller).
const END_OF_DAY: &str = "time 24:00:00 (the end of the day), which no time_value carries";

/// Why `infinity` and `-infinity` are refused.
const INFINITE: &str = "PostgreSQL's infinity or -infinity, which no date or time value carries";

/// Why a date beyond chrono's range is refused.
const BEYOND_RANGE: &str = "a date beyond the years -262143 to 262143 that sqlgate carries";

/// PostgreSQL's epoch for `date` and `timestamp`: 2000-01-01 00:00:00.
const POSTGRES_EPOCH: NaiveDateTime = match NaiveDate::from_ymd_opt(2000, 1, 1) {
    Some(day) => day.and_time(NaiveTime::MIN),
    None => panic!("2000-01-01 is a date"),
};

/// A `timestamp` or `timestamptz` in binary form (microseconds since the
/// epoch; `i64::MAX`/`MIN` are `infinity`/`-infinity`), checked.
fn wall_clock(value: PgValueRef<'_>) -> Result<NaiveDateTime, BoxDynError> {
    let micros = <i64 as Decode<Postgres>>::decode(value)?;
    if micros == i64::MAX || micros == i64::MIN {
        return Err(INFINITE.into());
    }
    POSTGRES_EPOCH
        .checked_add_signed(TimeDelta::microseconds(micros))
        .ok_or_else(|| BEYOND_RANGE.into())
}

/// The type information of the chrono type a wrapper stands in for, so
/// that sqlx's checks (and arrays of it) see the same PostgreSQL type.
macro_rules! same_type_as {
    ($wrapper:ty, $chrono:ty) => {
        impl Type<Postgres> for $wrapper {
            fn type_info() -> PgTypeInfo {
                <$chrono as Type<Postgres>>::type_info()
            }
        }

        impl PgHasArrayType for $wrapper {
            fn array_type_info() -> PgTypeInfo {
                <$chrono as PgHasArrayType>::array_type_info()
            }
        }
    };
}

same_type_as!(TimeOfDay, NaiveTime);
same_type_as!(Day, NaiveDate);
same_type_as!(WallClock, NaiveDateTime);
same_type_as!(Instant, DateTime<Utc>);

impl<'r> Decode<'r, Postgres> for TimeOfDay {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        if value.format() == PgValueFormat::Binary {
            // `time`'s binary format: microseconds since midnight.
            let micros = <i64 as Decode<Postgres>>::decode(value.clone())?;
            if !(0..MICROS_PER_DAY).contains(&micros) {
                return Err(END_OF_DAY.into());
            }
        } else if value.as_str()?.starts_with("24:") {
            return Err(END_OF_DAY.into());
        }
        <NaiveTime as Decode<Postgres>>::decode(value).map(Self)
    }
}

impl<'r> Decode<'r, Postgres> for Day {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        if value.format() == PgValueFormat::Text {
            return <NaiveDate as Decode<Postgres>>::decode(value).map(Self);
        }
        // `date`'s binary format: days since the epoch; `i32::MAX`/`MIN`
        // are `infinity`/`-infinity`.
        let days = <i32 as Decode<Postgres>>::decode(value)?;
        if days == i32::MAX || days == i32::MIN {
            return Err(INFINITE.into());
        }
        POSTGRES_EPOCH
            .date()
            .checked_add_signed(TimeDelta::days(days.into()))
            .map(Self)
            .ok_or_else(|| BEYOND_RANGE.into())
    }
}

impl<'r> Decode<'r, Postgres> for WallClock {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        match value.format() {
            PgValueFormat::Binary => wall_clock(value).map(Self),
            PgValueFormat::Text => <NaiveDateTime as Decode<Postgres>>::decode(value).map(Self),
        }
    }
}

impl<'r> Decode<'r, Postgres> for Instant {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        match value.format() {
            PgValueFormat::Binary => wall_clock(value).map(|utc| Self(utc.and_utc())),
            PgValueFormat::Text => <DateTime<Utc> as Decode<Postgres>>::decode(value).map(Self),
        }
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
        PgScalar::Json => opt(row.try_get_unchecked::<Option<JsonText<'_>>, _>(i)?, |v| {
            SqlValue::Json(v.0.to_owned())
        }),
        PgScalar::Uuid => opt(row.try_get_unchecked::<Option<Uuid>, _>(i)?, SqlValue::Uuid),
        PgScalar::Date => opt(row.try_get_unchecked::<Option<Day>, _>(i)?, |v| {
            SqlValue::Date(v.0)
        }),
        PgScalar::Time => opt(row.try_get_unchecked::<Option<TimeOfDay>, _>(i)?, |v| {
            SqlValue::Time(v.0)
        }),
        PgScalar::Timestamp => opt(row.try_get_unchecked::<Option<WallClock>, _>(i)?, |v| {
            SqlValue::DateTime(v.0)
        }),
        PgScalar::Timestamptz => opt(row.try_get_unchecked::<Option<Instant>, _>(i)?, |v| {
            SqlValue::Timestamp(v.0)
        }),
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
        PgScalar::Date => array::<Day>(row.try_get(i)?, |v| SqlValue::Date(v.0)),
        PgScalar::Time => array::<TimeOfDay>(row.try_get(i)?, |v| SqlValue::Time(v.0)),
        PgScalar::Timestamp => array::<WallClock>(row.try_get(i)?, |v| SqlValue::DateTime(v.0)),
        PgScalar::Timestamptz => array::<Instant>(row.try_get(i)?, |v| SqlValue::Timestamp(v.0)),
        PgScalar::Void => SqlValue::Null,
    })
}
