//! PostgreSQL's scalar values written straight into their wire form, for
//! streamed rows: text, JSON and `bytea` are copied from the row's bytes
//! into the frame instead of into a `String` or `Vec` of their own first,
//! integers, floats and instants are read from their binary form in place,
//! and no [`SqlValue`] per column or vector per row is built.
//!
//! Each type is read as `decode::decode_scalar` reads it: the fast paths
//! below take only the binary values whose reading cannot differ (the
//! exact width, ASCII text, an instant well inside chrono's range), and
//! hand everything else to the same decoders, so that the same values are
//! refused with the same reasons. What is written is what
//! [`RowWriter::value`] writes for the value `decode_scalar` returns;
//! the API tests compare a stream's bytes with a unary call's over random
//! values of each type. Arrays take the general path.

use sqlx::{
    Decode, Postgres, Row, ValueRef,
    error::BoxDynError,
    postgres::{PgRow, PgValueFormat, PgValueRef, types::Oid},
};
use uuid::Uuid;

use super::{
    decode::{Day, Instant, JsonText, PgScalar, TimeOfDay, WallClock},
    numeric::NumericText,
};
use crate::query::{
    value::SqlValue,
    wire::{RowWriter, kind},
};

/// Appends column `index` of `row`, a `scalar`, to `out`.
pub(super) fn scalar(
    row: &PgRow,
    index: usize,
    scalar: PgScalar,
    out: &mut RowWriter,
) -> Result<(), sqlx::Error> {
    let value = row.try_get_raw(index)?;
    write(value, scalar, out).map_err(|source| sqlx::Error::ColumnDecode {
        index: format!("{index:?}"),
        source,
    })
}

/// Seconds from the Unix epoch to PostgreSQL's (2000-01-01).
const POSTGRES_EPOCH_UNIX: i64 = 946_684_800;

/// Instants within this many microseconds of PostgreSQL's epoch (about
/// 190,000 years) are inside chrono's range, so reading them cannot fail.
const SURELY_IN_RANGE: u64 = 6_000_000_000_000_000_000;

fn write(value: PgValueRef<'_>, scalar: PgScalar, out: &mut RowWriter) -> Result<(), BoxDynError> {
    if value.is_null() {
        out.null();
        return Ok(());
    }
    // The value's bytes when they are in binary form (never NULL here).
    let binary = match value.format() {
        PgValueFormat::Binary => Some(value.as_bytes()?),
        PgValueFormat::Text => None,
    };
    match scalar {
        // NULL whatever its bytes (see `decode::decode_scalar`).
        PgScalar::Void => out.null(),
        PgScalar::Bool => {
            let v = <bool as Decode<Postgres>>::decode(value)?;
            out.varint(kind::BOOL, u64::from(v));
        }
        PgScalar::Int2 => match binary.and_then(|b| <[u8; 2]>::try_from(b).ok()) {
            Some(bytes) => out.int(i16::from_be_bytes(bytes).into()),
            None => out.int(<i16 as Decode<Postgres>>::decode(value)?.into()),
        },
        PgScalar::Int4 => match binary.and_then(|b| <[u8; 4]>::try_from(b).ok()) {
            Some(bytes) => out.int(i32::from_be_bytes(bytes).into()),
            None => out.int(<i32 as Decode<Postgres>>::decode(value)?.into()),
        },
        PgScalar::Int8 => match binary.and_then(|b| <[u8; 8]>::try_from(b).ok()) {
            Some(bytes) => out.int(i64::from_be_bytes(bytes)),
            None => out.int(<i64 as Decode<Postgres>>::decode(value)?),
        },
        PgScalar::Oid => out.int(<Oid as Decode<Postgres>>::decode(value)?.0.into()),
        PgScalar::Float4 => out.double(<f32 as Decode<Postgres>>::decode(value)?.into()),
        PgScalar::Float8 => match binary.and_then(|b| <[u8; 8]>::try_from(b).ok()) {
            Some(bytes) => out.double(f64::from_be_bytes(bytes)),
            None => out.double(<f64 as Decode<Postgres>>::decode(value)?),
        },
        PgScalar::Text => out.length_delimited(kind::TEXT, utf8(value)?),
        PgScalar::Bytes => match binary {
            Some(bytes) => out.length_delimited(kind::BYTES, bytes),
            // `\x…` hex: decoded by sqlx into a vector.
            None => {
                out.length_delimited(kind::BYTES, &<Vec<u8> as Decode<Postgres>>::decode(value)?)
            }
        },
        PgScalar::Json => match binary.and_then(|bytes| json_ascii(&value, bytes)) {
            Some(text) => out.length_delimited(kind::JSON, text),
            None => {
                let text = <JsonText<'_> as Decode<Postgres>>::decode(value)?;
                out.length_delimited(kind::JSON, text.0.as_bytes());
            }
        },
        PgScalar::Timestamptz => match binary.and_then(|b| <[u8; 8]>::try_from(b).ok()) {
            Some(bytes) if i64::from_be_bytes(bytes).unsigned_abs() <= SURELY_IN_RANGE => {
                let micros = i64::from_be_bytes(bytes);
                let seconds = micros.div_euclid(1_000_000) + POSTGRES_EPOCH_UNIX;
                let nanos = micros.rem_euclid(1_000_000) as u32 * 1_000;
                out.timestamp(seconds, nanos);
            }
            _ => out.value(&SqlValue::Timestamp(
                <Instant as Decode<Postgres>>::decode(value)?.0,
            )),
        },
        // The rest hold no text of their own (or, for numeric, are built
        // as text by their decoder): written as their value would be.
        PgScalar::Numeric => {
            let v = <NumericText as Decode<Postgres>>::decode(value)?;
            out.length_delimited(kind::DECIMAL, v.0.as_bytes());
        }
        PgScalar::Uuid => out.value(&SqlValue::Uuid(<Uuid as Decode<Postgres>>::decode(value)?)),
        PgScalar::Date => out.value(&SqlValue::Date(<Day as Decode<Postgres>>::decode(value)?.0)),
        PgScalar::Time => out.value(&SqlValue::Time(
            <TimeOfDay as Decode<Postgres>>::decode(value)?.0,
        )),
        PgScalar::Timestamp => out.value(&SqlValue::DateTime(
            <WallClock as Decode<Postgres>>::decode(value)?.0,
        )),
    }
    Ok(())
}

/// A text value's bytes, checked as sqlx's `&str` reads them: ASCII (most
/// text) is checked a word at a time, anything else by `from_utf8`.
fn utf8<'r>(value: PgValueRef<'r>) -> Result<&'r [u8], BoxDynError> {
    let bytes = value.as_bytes()?;
    if bytes.is_ascii() {
        return Ok(bytes);
    }
    <&str as Decode<Postgres>>::decode(value).map(str::as_bytes)
}

/// The text of a binary `json` or `jsonb` value when it is ASCII, read as
/// `JsonText` reads it (`jsonb`: version 1, then the text); `None` sends
/// the value to `JsonText` itself.
fn json_ascii<'r>(value: &PgValueRef<'r>, bytes: &'r [u8]) -> Option<&'r [u8]> {
    let text = if value.type_info().oid() == Some(Oid(3802)) {
        match bytes.split_first() {
            Some((1, text)) => text,
            _ => return None,
        }
    } else {
        bytes
    };
    text.is_ascii().then_some(text)
}
