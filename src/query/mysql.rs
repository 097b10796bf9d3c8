//! MySQL and MariaDB: parameters bind as the nearest MySQL type (there are
//! no arrays; UUIDs and JSON travel as text), result columns are decoded by
//! the column type the server reports.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use sqlx::{
    Arguments, Column, MySql, Row, TypeInfo,
    mysql::{MySqlArguments, MySqlColumn, MySqlQueryResult, MySqlRow},
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

fn add_param(args: &mut MySqlArguments, value: &SqlValue) -> Result<(), String> {
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
        SqlValue::Timestamp(v) => args.add(*v),
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
        let type_name = column.type_info().name();
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
        D::Date => opt(row.try_get::<Option<NaiveDate>, _>(i)?, SqlValue::Date),
        D::Time => opt(row.try_get::<Option<NaiveTime>, _>(i)?, SqlValue::Time),
        D::DateTime => opt(
            row.try_get::<Option<NaiveDateTime>, _>(i)?,
            SqlValue::DateTime,
        ),
        D::Timestamp => opt(
            row.try_get::<Option<DateTime<Utc>>, _>(i)?,
            SqlValue::Timestamp,
        ),
        D::Null => SqlValue::Null,
    })
}
