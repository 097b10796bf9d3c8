//! Rows in `sqlgate.v1`'s protobuf wire form (`Row { repeated Value values
//! = 1 }`), written once, as each row arrives from the database, so that a
//! streamed result needs no intermediate value per column, no row vector
//! and no second pass to encode: a backend may write a column's value
//! straight from the driver's bytes (see `Codec::encode_value`), and the
//! rest go through [`put_value_body`]. The gRPC layer sends
//! [`EncodedRows`] as they are (`grpc::row_batch`).
//!
//! The bytes must be exactly what the generated code would write for
//! `From<SqlValue> for pb::Value`; the property tests in `grpc::row_batch`
//! and the backends' transcoding tests compare them.

use prost::encoding::WireType;

use super::value::{SqlValue, text_form};

/// Rows already encoded, each as field 1 of a `RowBatch` (key, length,
/// `Row` message), with how many there are.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EncodedRows {
    bytes: Vec<u8>,
    rows: usize,
}

impl EncodedRows {
    /// No rows, with room for `capacity` bytes.
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(capacity),
            rows: 0,
        }
    }

    /// `rows` values lists, encoded: the tests' way to compare a frame
    /// with the values it should hold.
    #[cfg(test)]
    pub fn from_values(rows: &[Vec<SqlValue>]) -> Self {
        let mut encoded = Self::default();
        let mut row = RowWriter::default();
        for values in rows {
            row.clear();
            for value in values {
                row.value(value);
            }
            if encoded.bytes.is_empty() {
                // Rows of one result are alike: size the batch from the first.
                encoded.bytes.reserve(row.framed_len() * rows.len());
            }
            encoded.push(&row);
        }
        encoded
    }

    /// Appends one row.
    pub(crate) fn push(&mut self, row: &RowWriter) {
        put_length_delimited(BATCH_ROWS, &row.body, &mut self.bytes);
        self.rows += 1;
    }

    /// How many rows.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether there is no row.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The encoded bytes (field 1 of a `RowBatch`, once per row).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// How many bytes.
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }
}

/// One row being encoded: its `Row` body, each value written once as an
/// entry of `Row.values` (key, length, `Value` body). The body's length is
/// known before it is written (one field of known size), so no value goes
/// through a buffer of its own, except arrays. The buffers are kept from
/// row to row.
#[derive(Debug, Default)]
pub(crate) struct RowWriter {
    body: Vec<u8>,
    /// An array's elements, before their length is known.
    scratch: Vec<u8>,
}

impl RowWriter {
    /// Starts a new row.
    pub(crate) fn clear(&mut self) {
        self.body.clear();
    }

    /// The bytes the row takes inside a `RowBatch` (key, length, body).
    pub(crate) fn framed_len(&self) -> usize {
        1 + prost::encoding::encoded_len_varint(self.body.len() as u64) + self.body.len()
    }

    /// Appends `value`, as [`put_value_body`] writes it.
    pub(crate) fn value(&mut self, value: &SqlValue) {
        match value {
            SqlValue::Null => self.null(),
            SqlValue::Bool(v) => self.varint(kind::BOOL, u64::from(*v)),
            SqlValue::Int(v) => self.int(*v),
            SqlValue::Float(v) => self.double(*v),
            SqlValue::Text(v) => self.length_delimited(kind::TEXT, v.as_bytes()),
            SqlValue::Bytes(v) => self.length_delimited(kind::BYTES, v),
            SqlValue::Json(v) => self.length_delimited(kind::JSON, v.as_bytes()),
            SqlValue::Timestamp(v) => self.timestamp(v.timestamp(), v.timestamp_subsec_nanos()),
            SqlValue::Uuid(v) => {
                let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
                let text = v.hyphenated().encode_lower(&mut text);
                self.length_delimited(kind::UUID, text.as_bytes());
            }
            SqlValue::Decimal(v) => self.length_delimited(kind::DECIMAL, v.as_bytes()),
            SqlValue::DateTime(v) => {
                self.length_delimited(kind::DATETIME, text_form::format_datetime(v).as_bytes())
            }
            SqlValue::Date(v) => {
                self.length_delimited(kind::DATE, text_form::format_date(v).as_bytes())
            }
            SqlValue::Time(v) => {
                self.length_delimited(kind::TIME, text_form::format_time(v).as_bytes())
            }
            SqlValue::Array(_) => {
                self.scratch.clear();
                put_value_body(value, &mut self.scratch);
                put_length_delimited(ROW_VALUES, &self.scratch, &mut self.body);
            }
        }
    }

    /// Appends `null_value`.
    pub(crate) fn null(&mut self) {
        self.varint(kind::NULL, 0);
    }

    /// Appends `int_value`.
    pub(crate) fn int(&mut self, value: i64) {
        self.varint(kind::INT, value as u64);
    }

    /// Appends a value whose kind is the varint field `field`.
    pub(crate) fn varint(&mut self, field: u32, value: u64) {
        let mut entry = [0u8; 13];
        let value_len = encode_varint_into(value, &mut entry[3..]);
        // Field numbers of `kind` are below 16: one-byte keys.
        entry[0] = key_byte(ROW_VALUES, WireType::LengthDelimited);
        entry[1] = 1 + value_len as u8;
        entry[2] = key_byte(field, WireType::Varint);
        self.body.extend_from_slice(&entry[..3 + value_len]);
    }

    /// Appends `float_value`.
    pub(crate) fn double(&mut self, value: f64) {
        let mut entry = [0u8; 11];
        entry[0] = key_byte(ROW_VALUES, WireType::LengthDelimited);
        entry[1] = 9;
        entry[2] = key_byte(kind::FLOAT, WireType::SixtyFourBit);
        entry[3..].copy_from_slice(&value.to_le_bytes());
        self.body.extend_from_slice(&entry);
    }

    /// Appends a value whose kind is the length-delimited field `field`
    /// (text, bytes, JSON, …).
    pub(crate) fn length_delimited(&mut self, field: u32, bytes: &[u8]) {
        let len = bytes.len() as u64;
        let value_len = 1 + prost::encoding::encoded_len_varint(len) as u64 + len;
        let mut head = [0u8; 22];
        head[0] = key_byte(ROW_VALUES, WireType::LengthDelimited);
        let mut at = 1 + encode_varint_into(value_len, &mut head[1..]);
        head[at] = key_byte(field, WireType::LengthDelimited);
        at += 1;
        at += encode_varint_into(len, &mut head[at..]);
        self.body.reserve(at + bytes.len());
        self.body.extend_from_slice(&head[..at]);
        self.body.extend_from_slice(bytes);
    }

    /// Appends `timestamp_value`: a `google.protobuf.Timestamp`.
    pub(crate) fn timestamp(&mut self, seconds: i64, nanos: u32) {
        let mut timestamp = [0u8; 24];
        let len = timestamp_body(seconds, nanos, &mut timestamp);
        self.length_delimited(kind::TIMESTAMP, &timestamp[..len]);
    }
}

/// A key of one byte (fields below 16).
const fn key_byte(field: u32, wire_type: WireType) -> u8 {
    (field << 3 | wire_type as u32) as u8
}

/// A `Timestamp` message's body into `out`; returns its length.
fn timestamp_body(seconds: i64, nanos: u32, out: &mut [u8; 24]) -> usize {
    let mut len = 0;
    // proto3 leaves zero scalars out.
    for (field, number) in [
        (TIMESTAMP_SECONDS, seconds as u64),
        (TIMESTAMP_NANOS, u64::from(nanos)),
    ] {
        if number != 0 {
            len += encode_varint_into(u64::from(field << 3), &mut out[len..]);
            len += encode_varint_into(number, &mut out[len..]);
        }
    }
    len
}

// Field numbers of the messages written here (proto/sqlgate/v1/*.proto).
const BATCH_ROWS: u32 = 1;
const ROW_VALUES: u32 = 1;
const LIST_VALUES: u32 = 1;
const TIMESTAMP_SECONDS: u32 = 1;
const TIMESTAMP_NANOS: u32 = 2;

/// `Value.kind`'s field numbers, for backends writing a value themselves.
pub(crate) mod kind {
    /// `null_value`.
    pub(crate) const NULL: u32 = 1;
    /// `bool_value`.
    pub(crate) const BOOL: u32 = 2;
    /// `int_value`.
    pub(crate) const INT: u32 = 3;
    /// `float_value`.
    pub(crate) const FLOAT: u32 = 4;
    /// `text_value`.
    pub(crate) const TEXT: u32 = 5;
    /// `bytes_value`.
    pub(crate) const BYTES: u32 = 6;
    /// `decimal_value`.
    pub(crate) const DECIMAL: u32 = 7;
    /// `timestamp_value`.
    pub(crate) const TIMESTAMP: u32 = 8;
    /// `datetime_value`.
    pub(crate) const DATETIME: u32 = 9;
    /// `date_value`.
    pub(crate) const DATE: u32 = 10;
    /// `time_value`.
    pub(crate) const TIME: u32 = 11;
    /// `json_value`.
    pub(crate) const JSON: u32 = 12;
    /// `uuid_value`.
    pub(crate) const UUID: u32 = 13;
    /// `array_value`.
    pub(crate) const ARRAY: u32 = 14;
}

/// The body of a `sqlgate.v1.Value`: its `kind`, one field of the oneof.
/// Must say what `From<SqlValue> for pb::Value` says; the property tests
/// compare the bytes with prost's encoding of that.
pub(crate) fn put_value_body(value: &SqlValue, out: &mut Vec<u8>) {
    match value {
        SqlValue::Null => put_varint_field(kind::NULL, 0, out),
        SqlValue::Bool(v) => put_varint_field(kind::BOOL, u64::from(*v), out),
        SqlValue::Int(v) => put_varint_field(kind::INT, *v as u64, out),
        SqlValue::Float(v) => {
            put_key(kind::FLOAT, WireType::SixtyFourBit, out);
            out.extend_from_slice(&v.to_le_bytes());
        }
        SqlValue::Text(v) => put_length_delimited(kind::TEXT, v.as_bytes(), out),
        SqlValue::Bytes(v) => put_length_delimited(kind::BYTES, v, out),
        SqlValue::Decimal(v) => put_length_delimited(kind::DECIMAL, v.as_bytes(), out),
        SqlValue::Timestamp(v) => {
            let mut timestamp = [0u8; 24];
            let len = timestamp_body(v.timestamp(), v.timestamp_subsec_nanos(), &mut timestamp);
            put_length_delimited(kind::TIMESTAMP, &timestamp[..len], out);
        }
        SqlValue::DateTime(v) => put_length_delimited(
            kind::DATETIME,
            text_form::format_datetime(v).as_bytes(),
            out,
        ),
        SqlValue::Date(v) => {
            put_length_delimited(kind::DATE, text_form::format_date(v).as_bytes(), out)
        }
        SqlValue::Time(v) => {
            put_length_delimited(kind::TIME, text_form::format_time(v).as_bytes(), out)
        }
        SqlValue::Json(v) => put_length_delimited(kind::JSON, v.as_bytes(), out),
        SqlValue::Uuid(v) => {
            let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
            let text = v.hyphenated().encode_lower(&mut text);
            put_length_delimited(kind::UUID, text.as_bytes(), out);
        }
        SqlValue::Array(values) => {
            let (mut list, mut element) = (Vec::new(), Vec::new());
            for value in values {
                element.clear();
                put_value_body(value, &mut element);
                put_length_delimited(LIST_VALUES, &element, &mut list);
            }
            put_length_delimited(kind::ARRAY, &list, out);
        }
    }
}

/// A length-delimited field: key, length, bytes.
fn put_length_delimited(field: u32, bytes: &[u8], out: &mut Vec<u8>) {
    put_key(field, WireType::LengthDelimited, out);
    put_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// A varint field: key, value.
fn put_varint_field(field: u32, value: u64, out: &mut Vec<u8>) {
    put_key(field, WireType::Varint, out);
    put_varint(value, out);
}

fn put_key(field: u32, wire_type: WireType, out: &mut Vec<u8>) {
    put_varint(u64::from(field << 3 | wire_type as u32), out);
}

/// A varint built on the stack and copied once: prost's `encode_varint`
/// pushes byte by byte, and was a tenth of the work per streamed row.
fn put_varint(value: u64, out: &mut Vec<u8>) {
    if value < 0x80 {
        // Keys and most lengths: one byte.
        out.push(value as u8);
        return;
    }
    let mut bytes = [0u8; 10];
    let len = encode_varint_into(value, &mut bytes);
    out.extend_from_slice(&bytes[..len]);
}

/// Writes `value` as a varint at the start of `bytes` (at least 10 long,
/// or as long as the varint); returns its length.
fn encode_varint_into(mut value: u64, bytes: &mut [u8]) -> usize {
    let mut len = 0;
    while value >= 0x80 {
        bytes[len] = (value as u8 & 0x7f) | 0x80;
        value >>= 7;
        len += 1;
    }
    bytes[len] = value as u8;
    len + 1
}
