//! The domain's SQL values and column descriptions, independent of both the
//! wire (protobuf) and any one database. Backend codecs translate between
//! these and the drivers' types; `grpc::convert` translates to the wire.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Timelike, Utc};
use prost::encoding::encoded_len_varint;
use uuid::Uuid;

/// One SQL value, carried without loss.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    /// SQL NULL.
    Null,
    /// A boolean.
    Bool(bool),
    /// Every integer width, as 64 bits.
    Int(i64),
    /// real / double precision.
    Float(f64),
    /// Character data.
    Text(String),
    /// Binary data.
    Bytes(Vec<u8>),
    /// numeric / decimal as exact text, keeping its scale (`-12.3400`).
    Decimal(String),
    /// An instant (types with a time zone).
    Timestamp(DateTime<Utc>),
    /// A wall-clock date and time without a zone.
    DateTime(NaiveDateTime),
    /// A calendar date.
    Date(NaiveDate),
    /// A time of day without a zone.
    Time(NaiveTime),
    /// JSON text, exactly as the database gave it.
    Json(String),
    /// A UUID.
    Uuid(Uuid),
    /// An array; elements may be [`SqlValue::Null`].
    Array(Vec<SqlValue>),
}

/// The portable type of a value or column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueKind {
    /// Not known before a value is seen (SQLite expressions).
    Unknown,
    /// Only NULL.
    Null,
    /// See [`SqlValue::Bool`].
    Bool,
    /// See [`SqlValue::Int`].
    Int,
    /// See [`SqlValue::Float`].
    Float,
    /// See [`SqlValue::Text`].
    Text,
    /// See [`SqlValue::Bytes`].
    Bytes,
    /// See [`SqlValue::Decimal`].
    Decimal,
    /// See [`SqlValue::Timestamp`].
    Timestamp,
    /// See [`SqlValue::DateTime`].
    DateTime,
    /// See [`SqlValue::Date`].
    Date,
    /// See [`SqlValue::Time`].
    Time,
    /// See [`SqlValue::Json`].
    Json,
    /// See [`SqlValue::Uuid`].
    Uuid,
    /// See [`SqlValue::Array`].
    Array,
}

/// A result column as the caller sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnInfo {
    /// The column's name (or alias).
    pub name: String,
    /// The portable type its values are sent as.
    pub kind: ValueKind,
    /// For arrays, the portable type of the elements.
    pub element_kind: Option<ValueKind>,
    /// The database's own type name, lower case (`int8`, `varchar`, `numeric`).
    pub db_type: String,
    /// Whether it may hold NULL, where the database says.
    pub nullable: Option<bool>,
}

impl SqlValue {
    /// The portable kind of this value.
    pub fn kind(&self) -> ValueKind {
        match self {
            SqlValue::Null => ValueKind::Null,
            SqlValue::Bool(_) => ValueKind::Bool,
            SqlValue::Int(_) => ValueKind::Int,
            SqlValue::Float(_) => ValueKind::Float,
            SqlValue::Text(_) => ValueKind::Text,
            SqlValue::Bytes(_) => ValueKind::Bytes,
            SqlValue::Decimal(_) => ValueKind::Decimal,
            SqlValue::Timestamp(_) => ValueKind::Timestamp,
            SqlValue::DateTime(_) => ValueKind::DateTime,
            SqlValue::Date(_) => ValueKind::Date,
            SqlValue::Time(_) => ValueKind::Time,
            SqlValue::Json(_) => ValueKind::Json,
            SqlValue::Uuid(_) => ValueKind::Uuid,
            SqlValue::Array(_) => ValueKind::Array,
        }
    }

    /// The bytes this value takes as one entry of a `Row` on the wire
    /// (`repeated Value values = 1`: key, length and the `Value` message).
    /// Exact for every kind but the temporal ones, whose text forms are
    /// counted at their longest. Used to cut streamed frames and to enforce
    /// the inline result cap, so that both hold for the encoded bytes.
    pub fn wire_len(&self) -> usize {
        length_delimited(self.body_len())
    }

    /// The length of the encoded `sqlgate.v1.Value` message: its one
    /// `kind` field (see `query::wire::put_value_body`).
    fn body_len(&self) -> usize {
        // Every field number of `kind` is below 16: a one-byte key.
        match self {
            SqlValue::Null | SqlValue::Bool(_) => 2,
            SqlValue::Int(v) => 1 + encoded_len_varint(*v as u64),
            SqlValue::Float(_) => 9,
            SqlValue::Text(s) | SqlValue::Json(s) | SqlValue::Decimal(s) => {
                length_delimited(s.len())
            }
            SqlValue::Bytes(b) => length_delimited(b.len()),
            // A Timestamp message: seconds and nanos, at most 11 + 6 bytes.
            SqlValue::Timestamp(_) => length_delimited(17),
            // `[+]YYYYYY-MM-DD` and `HH:MM:SS.fffffffff` at their longest.
            SqlValue::DateTime(_) => length_delimited(13 + 1 + 18),
            SqlValue::Date(_) => length_delimited(13),
            SqlValue::Time(_) => length_delimited(18),
            SqlValue::Uuid(_) => length_delimited(36),
            SqlValue::Array(values) => {
                length_delimited(values.iter().map(SqlValue::wire_len).sum())
            }
        }
    }
}

/// Whether `decimal` is one of PostgreSQL's special numeric values
/// (`NaN`, `Infinity`, `-Infinity`): accepted as parameters only where the
/// backend has them, refused (naming the parameter) elsewhere.
pub(crate) fn is_special_decimal(decimal: &str) -> bool {
    matches!(decimal, "NaN" | "Infinity" | "-Infinity")
}

/// Why `value` cannot be sent to a database that has no leap seconds, or
/// `None`: a `time_value` or `datetime_value` with second 60 (chrono keeps
/// it; PostgreSQL would store the next minute's second 00 in its place,
/// and MySQL/MariaDB have no second 60). `backend_says` finishes the
/// sentence for the backend at hand. Arrays name the element.
pub(crate) fn leap_second_refusal(value: &SqlValue, backend_says: &str) -> Option<String> {
    let kind = match value {
        SqlValue::Time(v) if v.nanosecond() >= 1_000_000_000 => "time_value",
        SqlValue::DateTime(v) if v.nanosecond() >= 1_000_000_000 => "datetime_value",
        SqlValue::Timestamp(v) if v.nanosecond() >= 1_000_000_000 => "timestamp_value",
        SqlValue::Array(items) => {
            return items.iter().enumerate().find_map(|(i, item)| {
                leap_second_refusal(item, backend_says).map(|msg| format!("element {i}: {msg}"))
            });
        }
        _ => return None,
    };
    Some(format!(
        "{kind} has second 60 (a leap second), which {backend_says}; it is refused rather than changed"
    ))
}

/// Why `value` cannot be sent to a database that keeps microseconds, or
/// `None`: a `time_value`, `datetime_value` or `timestamp_value` with
/// nanoseconds PostgreSQL and MySQL would cut off (PostgreSQL toward
/// 2000-01-01, so that the same instant rounds differently on either side
/// of it). Arrays name the element.
pub(crate) fn sub_microsecond_refusal(value: &SqlValue) -> Option<String> {
    let (kind, nanos) = match value {
        SqlValue::Time(v) => ("time_value", v.nanosecond()),
        SqlValue::DateTime(v) => ("datetime_value", v.nanosecond()),
        SqlValue::Timestamp(v) => ("timestamp_value", v.nanosecond()),
        SqlValue::Array(items) => {
            return items.iter().enumerate().find_map(|(i, item)| {
                sub_microsecond_refusal(item).map(|msg| format!("element {i}: {msg}"))
            });
        }
        _ => return None,
    };
    (nanos % 1_000 != 0).then(|| {
        format!(
            "{kind} has a fraction of a microsecond, which the database would cut off; \
             it is refused rather than changed"
        )
    })
}

/// The bytes a row of `values` takes as one entry of a repeated `Row`
/// field (`ExecuteResponse.rows`, `RowBatch.rows`): key, length, values.
pub fn row_wire_len(values: &[SqlValue]) -> usize {
    length_delimited(values.iter().map(SqlValue::wire_len).sum())
}

/// A field of `len` bytes with a one-byte key and its length as a varint.
fn length_delimited(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

/// Text forms of the temporal kinds, shared by every codec and the wire so
/// that a value sent and a value returned compare equal.
pub mod text_form {
    use super::*;

    /// `YYYY-MM-DDTHH:MM:SS[.ffffff]`; the fraction only when not zero.
    pub fn format_datetime(value: &NaiveDateTime) -> String {
        format!(
            "{}T{}",
            value.date().format("%Y-%m-%d"),
            format_time(&value.time())
        )
    }

    /// `HH:MM:SS[.ffffff]`; the fraction only when not zero.
    pub fn format_time(value: &NaiveTime) -> String {
        let nanos = value.nanosecond() % 1_000_000_000;
        if nanos == 0 {
            value.format("%H:%M:%S").to_string()
        } else if nanos.is_multiple_of(1_000) {
            value.format("%H:%M:%S%.6f").to_string()
        } else {
            value.format("%H:%M:%S%.9f").to_string()
        }
    }

    /// `YYYY-MM-DD`.
    pub fn format_date(value: &NaiveDate) -> String {
        value.format("%Y-%m-%d").to_string()
    }

    /// Parses `YYYY-MM-DD[T| ]HH:MM:SS[.f…]` with no zone.
    pub fn parse_datetime(text: &str) -> Option<NaiveDateTime> {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
            .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f"))
            .ok()
    }

    /// Parses `YYYY-MM-DD`.
    pub fn parse_date(text: &str) -> Option<NaiveDate> {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()
    }

    /// Parses `HH:MM:SS[.f…]`.
    pub fn parse_time(text: &str) -> Option<NaiveTime> {
        NaiveTime::parse_from_str(text, "%H:%M:%S%.f").ok()
    }

    /// RFC 3339 with microseconds and `Z`, the form SQLite stores instants in.
    pub fn format_instant(value: &DateTime<Utc>) -> String {
        value.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    }

    /// Parses RFC 3339 (any offset) into an instant.
    pub fn parse_instant(text: &str) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|value| value.with_timezone(&Utc))
    }
}

#[cfg(test)]
mod tests {
    use super::text_form::*;

    #[test]
    fn leap_seconds_are_named_where_they_would_move() {
        use super::{SqlValue, leap_second_refusal};
        let leap = parse_time("23:59:60").expect("chrono reads a leap second");
        let says = "the database would move";
        assert!(
            leap_second_refusal(&SqlValue::Time(leap), says)
                .expect("refused")
                .starts_with("time_value has second 60")
        );
        let datetime = parse_datetime("2016-12-31T23:59:60.5").expect("parses");
        assert!(leap_second_refusal(&SqlValue::DateTime(datetime), says).is_some());
        let array = SqlValue::Array(vec![SqlValue::Null, SqlValue::Time(leap)]);
        assert!(
            leap_second_refusal(&array, says)
                .expect("refused")
                .starts_with("element 1: time_value")
        );
        let ordinary = parse_time("23:59:59.999999").expect("parses");
        assert_eq!(leap_second_refusal(&SqlValue::Time(ordinary), says), None);
    }

    #[test]
    fn temporal_text_forms_round_trip() {
        for text in ["2024-02-29T23:59:59.123456", "1999-01-01T00:00:00"] {
            let parsed = parse_datetime(text).expect("parses");
            assert_eq!(format_datetime(&parsed), text);
        }
        for text in ["23:59:59.000001", "00:00:00"] {
            assert_eq!(format_time(&parse_time(text).expect("parses")), text);
        }
        assert!(parse_date("2023-02-29").is_none());
    }
}
