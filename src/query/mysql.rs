//! MySQL and MariaDB: parameters bind as the nearest MySQL type (there are
//! no arrays; UUIDs and JSON travel as text; instants as UTC `DATETIME`, so
//! that the server checks a `TIMESTAMP` column's range), result columns are
//! decoded by the column type the server reports, string columns as text
//! or bytes by their character set, and zero dates are refused, never read
//! as NULL.

use chrono::NaiveTime;
use sqlx::{
    Arguments, Column, Decode, MySql, Row, Type, TypeInfo, ValueRef,
    mysql::{MySqlArguments, MySqlColumn, MySqlQueryResult, MySqlRow, MySqlTypeInfo},
};

use super::{
    codec::{Codec, unrepresentable},
    value::{ColumnInfo, SqlValue, ValueKind},
};
use crate::error::Error;

/// How a MySQL column's values are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MySqlDecoder {
    /// `TINYINT(1)`: 0 and 1 read as booleans, anything else as an integer.
    Boolean,
    Signed,
    /// Unsigned types that fit in int64.
    Unsigned,
    /// `BIGINT UNSIGNED` may exceed int64, so it is sent as a decimal.
    UnsignedBig,
    Float,
    Double,
    Decimal,
    Text,
    Json,
    Bytes,
    Date,
    Time,
    DateTime,
    Timestamp,
    Null,
}

fn decoder_for(type_name: &str) -> Option<(MySqlDecoder, ValueKind)> {
    use MySqlDecoder as D;
    Some(match type_name {
        "BOOLEAN" => (D::Boolean, ValueKind::Bool),
        "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" | "YEAR" => {
            (D::Signed, ValueKind::Int)
        }
        "TINYINT UNSIGNED" | "SMALLINT UNSIGNED" | "MEDIUMINT UNSIGNED" | "INT UNSIGNED" => {
            (D::Unsigned, ValueKind::Int)
        }
        "BIGINT UNSIGNED" => (D::UnsignedBig, ValueKind::Decimal),
        "FLOAT" => (D::Float, ValueKind::Float),
        "DOUBLE" => (D::Double, ValueKind::Float),
        "DECIMAL" => (D::Decimal, ValueKind::Decimal),
        "CHAR" | "VARCHAR" | "TEXT" | "TINYTEXT" | "MEDIUMTEXT" | "LONGTEXT" | "ENUM" | "SET" => {
            (D::Text, ValueKind::Text)
        }
        "JSON" => (D::Json, ValueKind::Json),
        "BINARY" | "VARBINARY" | "BLOB" | "TINYBLOB" | "MEDIUMBLOB" | "LONGBLOB" | "BIT"
        | "GEOMETRY" => (D::Bytes, ValueKind::Bytes),
        "DATE" => (D::Date, ValueKind::Date),
        "TIME" => (D::Time, ValueKind::Time),
        "DATETIME" => (D::DateTime, ValueKind::DateTime),
        "TIMESTAMP" => (D::Timestamp, ValueKind::Timestamp),
        "NULL" => (D::Null, ValueKind::Null),
        _ => return None,
    })
}

/// The name of a string column's type as its character set says: sqlx
/// names them by the column's BINARY flag, which MySQL also sets for a
/// binary *collation* of a text charset (`utf8mb4_bin`, MariaDB's JSON).
/// Only the `binary` charset (63) holds bytes; any other is text the
/// server transcodes to the connection's utf8mb4.
fn string_type_name(type_info: &MySqlTypeInfo) -> &str {
    let name = type_info.name();
    let is_text = <str as Type<MySql>>::compatible(type_info);
    match name {
        "BINARY" if is_text => "CHAR",
        "VARBINARY" if is_text => "VARCHAR",
        "TINYBLOB" if is_text => "TINYTEXT",
        "BLOB" if is_text => "TEXT",
        "MEDIUMBLOB" if is_text => "MEDIUMTEXT",
        "LONGBLOB" if is_text => "LONGTEXT",
        "CHAR" if !is_text => "BINARY",
        "VARCHAR" if !is_text => "VARBINARY",
        "TINYTEXT" if !is_text => "TINYBLOB",
        "TEXT" if !is_text => "BLOB",
        "MEDIUMTEXT" if !is_text => "MEDIUMBLOB",
        "LONGTEXT" if !is_text => "LONGBLOB",
        other => other,
    }
}

/// What the codec tells the caller when a parameter has a leap second.
const NO_LEAP_SECONDS: &str = "MySQL and MariaDB do not have";

fn add_param(args: &mut MySqlArguments, value: &SqlValue) -> Result<(), String> {
    if let Some(refusal) = super::value::leap_second_refusal(value, NO_LEAP_SECONDS)
        .or_else(|| super::value::sub_microsecond_refusal(value))
    {
        return Err(refusal);
    }
    let added = match value {
        SqlValue::Null => args.add(Option::<String>::None),
        SqlValue::Bool(v) => args.add(*v),
        SqlValue::Int(v) => args.add(*v),
        SqlValue::Float(v) => args.add(*v),
        SqlValue::Decimal(v) if super::value::is_special_decimal(v) => {
            return Err(format!("MySQL and MariaDB DECIMAL has no {v}"));
        }
        // MySQL converts decimal text to DECIMAL exactly.
        SqlValue::Text(v) | SqlValue::Json(v) | SqlValue::Decimal(v) => args.add(v.as_str()),
        SqlValue::Bytes(v) => args.add(v.as_slice()),
        // As DATETIME in UTC (the connection's time zone), not as sqlx's
        // TIMESTAMP: MariaDB turns a TIMESTAMP parameter outside TIMESTAMP's
        // range (1970 to 2038) into NULL without an error, even in strict
        // mode, and a `NOT NULL DEFAULT current_timestamp` column then
        // takes the current time. A DATETIME is checked against the column
        // it is stored in: strict mode refuses it there (1292), and DATETIME
        // columns keep their wider range.
        SqlValue::Timestamp(v) => args.add(v.naive_utc()),
        SqlValue::DateTime(v) => args.add(*v),
        SqlValue::Date(v) => args.add(*v),
        SqlValue::Time(v) => args.add(*v),
        SqlValue::Uuid(v) => args.add(v.hyphenated().to_string()),
        SqlValue::Array(_) => {
            return Err("MySQL and MariaDB have no array type".to_owned());
        }
    };
    added.map_err(|err| err.to_string())
}

impl Codec for MySql {
    type Decoder = MySqlDecoder;

    fn encode_params(params: &[SqlValue]) -> Result<MySqlArguments, Error> {
        let mut args = MySqlArguments::default();
        for (index, value) in params.iter().enumerate() {
            add_param(&mut args, value).map_err(|msg| Error::invalid_parameter(index, msg))?;
        }
        Ok(args)
    }

    fn plan_column(column: &MySqlColumn) -> Result<(ColumnInfo, MySqlDecoder), Error> {
        let type_name = string_type_name(column.type_info());
        let (decoder, kind) = decoder_for(type_name).ok_or_else(|| Error::UnsupportedColumn {
            column: column.name().to_owned(),
            db_type: type_name.to_ascii_lowercase(),
        })?;
        let info = ColumnInfo {
            name: column.name().to_owned(),
            kind,
            element_kind: None,
            db_type: type_name.to_ascii_lowercase(),
            nullable: None,
        };
        Ok((info, decoder))
    }

    fn decode(
        row: &MySqlRow,
        i: usize,
        decoder: MySqlDecoder,
        column: &ColumnInfo,
    ) -> Result<SqlValue, Error> {
        decode_value(row, i, decoder).map_err(|err| unrepresentable(column, err))
    }

    fn rows_affected(result: &MySqlQueryResult) -> u64 {
        result.rows_affected()
    }
}

fn opt<T>(value: Option<T>, wrap: impl FnOnce(T) -> SqlValue) -> SqlValue {
    value.map_or(SqlValue::Null, wrap)
}

fn decode_value(row: &MySqlRow, i: usize, decoder: MySqlDecoder) -> Result<SqlValue, sqlx::Error> {
    use MySqlDecoder as D;
    Ok(match decoder {
        D::Boolean => opt(row.try_get_unchecked::<Option<i64>, _>(i)?, |v| match v {
            0 => SqlValue::Bool(false),
            1 => SqlValue::Bool(true),
            other => SqlValue::Int(other),
        }),
        D::Signed => opt(row.try_get_unchecked::<Option<i64>, _>(i)?, SqlValue::Int),
        D::Unsigned => opt(row.try_get_unchecked::<Option<u64>, _>(i)?, |v| {
            i64::try_from(v).map_or_else(|_| SqlValue::Decimal(v.to_string()), SqlValue::Int)
        }),
        D::UnsignedBig => opt(row.try_get_unchecked::<Option<u64>, _>(i)?, |v| {
            SqlValue::Decimal(v.to_string())
        }),
        D::Float => opt(row.try_get::<Option<f32>, _>(i)?, |v| {
            SqlValue::Float(v.into())
        }),
        D::Double => opt(row.try_get::<Option<f64>, _>(i)?, SqlValue::Float),
        // The binary protocol sends DECIMAL as its exact text.
        D::Decimal => opt(
            row.try_get_unchecked::<Option<String>, _>(i)?,
            SqlValue::Decimal,
        ),
        D::Text => opt(
            row.try_get_unchecked::<Option<String>, _>(i)?,
            SqlValue::Text,
        ),
        D::Json => opt(
            row.try_get_unchecked::<Option<String>, _>(i)?,
            SqlValue::Json,
        ),
        D::Bytes => opt(
            row.try_get_unchecked::<Option<Vec<u8>>, _>(i)?,
            SqlValue::Bytes,
        ),
        D::Date => temporal(row, i, SqlValue::Date)?,
        D::Time => opt(row.try_get::<Option<NaiveTime>, _>(i)?, SqlValue::Time),
        D::DateTime => temporal(row, i, SqlValue::DateTime)?,
        D::Timestamp => temporal(row, i, SqlValue::Timestamp)?,
        D::Null => SqlValue::Null,
    })
}

/// Why a zero date is refused: it names no day, so no `date_value`,
/// `datetime_value` or `timestamp_value` can carry it, and NULL would
/// hide it.
const ZERO_DATE: &str = "a MySQL zero date (0000-00-00), which names no calendar day; \
     select NULLIF(column, 0) to read it as NULL, or CAST(column AS CHAR) to read its text";

/// Reads a DATE, DATETIME or TIMESTAMP value, failing on a zero date
/// (`0000-00-00`, `0000-00-00 00:00:00`). sqlx reports those as NULL; a
/// real NULL has no bytes at all, a zero date has its (empty) length prefix.
fn temporal<'r, T: Decode<'r, MySql>>(
    row: &'r MySqlRow,
    i: usize,
    wrap: impl FnOnce(T) -> SqlValue,
) -> Result<SqlValue, sqlx::Error> {
    let raw = row.try_get_raw(i)?;
    let source = if !raw.is_null() {
        match T::decode(raw) {
            Ok(value) => return Ok(wrap(value)),
            Err(source) => source,
        }
    } else if <&[u8] as Decode<MySql>>::decode(raw).is_err() {
        return Ok(SqlValue::Null);
    } else {
        ZERO_DATE.into()
    };
    Err(sqlx::Error::ColumnDecode {
        index: i.to_string(),
        source,
    })
}
