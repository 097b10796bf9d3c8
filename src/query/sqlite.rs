//! SQLite: values keep their storage class (integer, real, text, blob).
//! Columns declared BOOLEAN, DATE, TIME or DATETIME come back as those
//! kinds; SQLite has no decimal, UUID, JSON or zoned type, so those are
//! stored and returned as text, and it has no arrays at all.

use sqlx::{
    Arguments, Column, Row, Sqlite, TypeInfo, ValueRef,
    sqlite::{SqliteArguments, SqliteColumn, SqliteQueryResult, SqliteRow},
};

use super::{
    codec::{Codec, unrepresentable},
    value::{ColumnInfo, SqlValue, ValueKind, text_form},
};
use crate::error::Error;

/// What a column's declared type tells about its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SqliteDecoder {
    /// Integers 0/1 read as booleans.
    Boolean,
    /// Text read as a date when it parses as one.
    Date,
    /// Text read as a time of day when it parses as one.
    Time,
    /// Text read as a date-time (or an instant, with an offset).
    DateTime,
    /// The storage class decides.
    Dynamic,
}

fn add_param(args: &mut SqliteArguments, value: &SqlValue) -> Result<(), String> {
    let added = match value {
        SqlValue::Null => args.add(Option::<i64>::None),
        SqlValue::Bool(v) => args.add(*v),
        SqlValue::Int(v) => args.add(*v),
        SqlValue::Float(v) => args.add(*v),
        SqlValue::Text(v) | SqlValue::Json(v) => args.add(v.clone()),
        SqlValue::Bytes(v) => args.add(v.clone()),
        SqlValue::Decimal(v) if super::value::is_special_decimal(v) => {
            return Err(format!("SQLite stores decimals as text and has no {v}"));
        }
        SqlValue::Decimal(v) => args.add(v.clone()),
        SqlValue::Timestamp(v) => args.add(text_form::format_instant(v)),
        SqlValue::DateTime(v) => args.add(text_form::format_datetime(v)),
        SqlValue::Date(v) => args.add(text_form::format_date(v)),
        SqlValue::Time(v) => args.add(text_form::format_time(v)),
        SqlValue::Uuid(v) => args.add(v.hyphenated().to_string()),
        SqlValue::Array(_) => return Err("SQLite has no array type".to_owned()),
    };
    added.map_err(|err| err.to_string())
}

impl Codec for Sqlite {
    type Decoder = SqliteDecoder;

    fn encode_params(params: &[SqlValue]) -> Result<SqliteArguments, Error> {
        let mut args = SqliteArguments::default();
        for (index, value) in params.iter().enumerate() {
            add_param(&mut args, value).map_err(|msg| Error::invalid_parameter(index, msg))?;
        }
        Ok(args)
    }

    const CHECK_PARAMETER_COUNT: bool = true;

    fn plan_column(column: &SqliteColumn) -> Result<(ColumnInfo, SqliteDecoder), Error> {
        let type_name = column.type_info().name();
        let (decoder, kind) = match type_name {
            "BOOLEAN" => (SqliteDecoder::Boolean, ValueKind::Bool),
            "DATE" => (SqliteDecoder::Date, ValueKind::Date),
            "TIME" => (SqliteDecoder::Time, ValueKind::Time),
            "DATETIME" => (SqliteDecoder::DateTime, ValueKind::DateTime),
            "INTEGER" => (SqliteDecoder::Dynamic, ValueKind::Int),
            "REAL" => (SqliteDecoder::Dynamic, ValueKind::Float),
            "TEXT" => (SqliteDecoder::Dynamic, ValueKind::Text),
            "BLOB" => (SqliteDecoder::Dynamic, ValueKind::Bytes),
            _ => (SqliteDecoder::Dynamic, ValueKind::Unknown),
        };
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
        row: &SqliteRow,
        i: usize,
        decoder: SqliteDecoder,
        column: &ColumnInfo,
    ) -> Result<SqlValue, Error> {
        decode_value(row, i, decoder).map_err(|err| unrepresentable(column, err))
    }

    fn rows_affected(result: &SqliteQueryResult) -> u64 {
        result.rows_affected()
    }
}

fn decode_value(
    row: &SqliteRow,
    i: usize,
    decoder: SqliteDecoder,
) -> Result<SqlValue, sqlx::Error> {
    let storage = {
        let raw = row.try_get_raw(i)?;
        if raw.is_null() {
            return Ok(SqlValue::Null);
        }
        raw.type_info().name().to_owned()
    };
    Ok(match storage.as_str() {
        "INTEGER" => {
            let value: i64 = row.try_get_unchecked(i)?;
            match (decoder, value) {
                (SqliteDecoder::Boolean, 0) => SqlValue::Bool(false),
                (SqliteDecoder::Boolean, 1) => SqlValue::Bool(true),
                _ => SqlValue::Int(value),
            }
        }
        "REAL" => SqlValue::Float(row.try_get_unchecked(i)?),
        "BLOB" => SqlValue::Bytes(row.try_get_unchecked(i)?),
        _ => {
            let text: String = row.try_get_unchecked(i)?;
            typed_text(text, decoder)
        }
    })
}

/// Reads text as the declared temporal type when it parses as one, and as
/// text otherwise (SQLite does not enforce declared types).
fn typed_text(text: String, decoder: SqliteDecoder) -> SqlValue {
    let typed = match decoder {
        SqliteDecoder::Date => text_form::parse_date(&text).map(SqlValue::Date),
        SqliteDecoder::Time => text_form::parse_time(&text).map(SqlValue::Time),
        SqliteDecoder::DateTime => text_form::parse_datetime(&text)
            .map(SqlValue::DateTime)
            .or_else(|| text_form::parse_instant(&text).map(SqlValue::Timestamp)),
        SqliteDecoder::Boolean | SqliteDecoder::Dynamic => None,
    };
    typed.unwrap_or(SqlValue::Text(text))
}
