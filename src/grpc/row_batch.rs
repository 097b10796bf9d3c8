//! `sqlgate.v1.RowBatch`, written by hand instead of generated, so that a
//! streamed batch is encoded once, straight from sqlgate's values.
//!
//! prost encodes a nested message by asking each level for its length and
//! then encoding it, which asks the level below again: a value inside a row
//! inside a batch inside a frame is measured four times. It also needs the
//! batch built as `pb::Row`s and `pb::Value`s first, and it writes varints
//! byte by byte. For a streamed result of a million rows that was a
//! quarter of sqlgate's work per row. Here each value is written straight
//! from its `SqlValue` into the row's bytes, and the batch only copies rows
//! out. The wire format is the generated one's (`repeated Row rows = 1`),
//! so clients see no difference; decoding fills [`RowBatch::rows`].

use prost::{
    DecodeError, Message,
    bytes::{Buf, BufMut},
    encoding::{self, DecodeContext, WireType},
};

use super::pb;
use crate::query::value::SqlValue;

/// A batch of rows: decoded rows (what a client reads) and rows encoded by
/// sqlgate (what the server sends). Both are written when encoding.
#[derive(Clone, PartialEq, Default, Debug)]
pub struct RowBatch {
    /// The rows, as a decoded message holds them.
    pub rows: Vec<pb::Row>,
    /// Rows already encoded as field 1, each with its key and length.
    encoded: Vec<u8>,
    /// How many rows `encoded` holds.
    encoded_rows: usize,
}

impl RowBatch {
    /// Encodes `rows` straight into the batch's wire form.
    pub fn encode_rows(rows: Vec<Vec<SqlValue>>) -> Self {
        let mut encoded = Vec::new();
        let (mut row, mut value_body) = (Vec::new(), Vec::new());
        let encoded_rows = rows.len();
        for values in &rows {
            row.clear();
            for value in values {
                put_message(ROW_VALUES, &mut row, &mut value_body, |body| {
                    put_value_body(value, body);
                });
            }
            if encoded.is_empty() {
                // Rows of one result are alike: size the batch from the first.
                encoded.reserve((row.len() + 4) * rows.len());
            }
            put_length_delimited(BATCH_ROWS, &row, &mut encoded);
        }
        Self {
            rows: Vec::new(),
            encoded,
            encoded_rows,
        }
    }

    /// How many rows the batch holds, decoded or encoded.
    pub fn len(&self) -> usize {
        self.rows.len() + self.encoded_rows
    }

    /// Whether the batch holds no row.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

// Field numbers of the messages written here (proto/sqlgate/v1/*.proto).
const BATCH_ROWS: u32 = 1;
const ROW_VALUES: u32 = 1;
const LIST_VALUES: u32 = 1;
const TIMESTAMP_SECONDS: u32 = 1;
const TIMESTAMP_NANOS: u32 = 2;

/// The body of a `sqlgate.v1.Value`: its `kind`, one field of the oneof.
/// Must say what `From<SqlValue> for pb::Value` says; the property tests
/// compare the bytes with prost's encoding of that.
fn put_value_body(value: &SqlValue, out: &mut Vec<u8>) {
    use crate::query::value::text_form;
    match value {
        SqlValue::Null => put_varint_field(1, 0, out),
        SqlValue::Bool(v) => put_varint_field(2, u64::from(*v), out),
        SqlValue::Int(v) => put_varint_field(3, *v as u64, out),
        SqlValue::Float(v) => {
            put_key(4, WireType::SixtyFourBit, out);
            out.extend_from_slice(&v.to_le_bytes());
        }
        SqlValue::Text(v) => put_length_delimited(5, v.as_bytes(), out),
        SqlValue::Bytes(v) => put_length_delimited(6, v, out),
        SqlValue::Decimal(v) => put_length_delimited(7, v.as_bytes(), out),
        SqlValue::Timestamp(v) => {
            let (seconds, nanos) = (v.timestamp(), v.timestamp_subsec_nanos());
            let mut timestamp = [0u8; 24];
            let mut len = 0;
            // proto3 leaves zero scalars out.
            for (field, number) in [
                (TIMESTAMP_SECONDS, seconds as u64),
                (TIMESTAMP_NANOS, u64::from(nanos)),
            ] {
                if number != 0 {
                    len += encode_varint_into(u64::from(field << 3), &mut timestamp[len..]);
                    len += encode_varint_into(number, &mut timestamp[len..]);
                }
            }
            put_length_delimited(8, &timestamp[..len], out);
        }
        SqlValue::DateTime(v) => {
            put_length_delimited(9, text_form::format_datetime(v).as_bytes(), out)
        }
        SqlValue::Date(v) => put_length_delimited(10, text_form::format_date(v).as_bytes(), out),
        SqlValue::Time(v) => put_length_delimited(11, text_form::format_time(v).as_bytes(), out),
        SqlValue::Json(v) => put_length_delimited(12, v.as_bytes(), out),
        SqlValue::Uuid(v) => {
            let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
            put_length_delimited(13, v.hyphenated().encode_lower(&mut text).as_bytes(), out);
        }
        SqlValue::Array(values) => {
            let (mut list, mut element) = (Vec::new(), Vec::new());
            for value in values {
                put_message(LIST_VALUES, &mut list, &mut element, |body| {
                    put_value_body(value, body);
                });
            }
            put_length_delimited(14, &list, out);
        }
    }
}

/// Writes field `field` as an embedded message whose body `write` produces,
/// using `scratch` (cleared first) to learn the body's length.
fn put_message(
    field: u32,
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    write: impl FnOnce(&mut Vec<u8>),
) {
    scratch.clear();
    write(scratch);
    put_length_delimited(field, scratch, out);
}

fn put_length_delimited(field: u32, bytes: &[u8], out: &mut Vec<u8>) {
    put_key(field, WireType::LengthDelimited, out);
    put_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

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

impl Message for RowBatch {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        encoding::message::encode_repeated(1, &self.rows, buf);
        buf.put_slice(&self.encoded);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            1 => encoding::message::merge_repeated(wire_type, &mut self.rows, buf, ctx),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        encoding::message::encoded_len_repeated(1, &self.rows) + self.encoded.len()
    }

    fn clear(&mut self) {
        self.rows.clear();
        self.encoded.clear();
        self.encoded_rows = 0;
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::{grpc::convert::value::tests::arb_value, query::value::row_wire_len};

    /// What the generated code would have sent: a `repeated Row` message.
    #[derive(Clone, PartialEq, prost::Message)]
    struct GeneratedRowBatch {
        #[prost(message, repeated, tag = "1")]
        rows: Vec<pb::Row>,
    }

    fn as_generated(rows: &[Vec<SqlValue>]) -> GeneratedRowBatch {
        GeneratedRowBatch {
            rows: rows
                .iter()
                .map(|values| pb::Row {
                    values: values.iter().cloned().map(pb::Value::from).collect(),
                })
                .collect(),
        }
    }

    proptest! {
        #[test]
        fn encodes_exactly_what_the_generated_message_would(
            rows in prop::collection::vec(prop::collection::vec(arb_value(), 0..6), 0..8)
        ) {
            let expected = as_generated(&rows);
            let batch = RowBatch::encode_rows(rows.clone());
            prop_assert_eq!(batch.len(), rows.len());
            prop_assert_eq!(batch.encode_to_vec(), expected.encode_to_vec());
            // A client decodes it into the same rows.
            let decoded = RowBatch::decode(batch.encode_to_vec().as_slice()).expect("decodes");
            prop_assert_eq!(decoded.rows, expected.rows);
        }

        #[test]
        fn a_frame_holding_it_encodes_as_before(
            rows in prop::collection::vec(prop::collection::vec(arb_value(), 1..4), 1..4)
        ) {
            let frame = pb::ResultFrame {
                frame: Some(pb::result_frame::Frame::Rows(RowBatch::encode_rows(rows.clone()))),
            };
            let decoded = pb::ResultFrame::decode(frame.encode_to_vec().as_slice()).expect("decodes");
            let Some(pb::result_frame::Frame::Rows(batch)) = decoded.frame else {
                panic!("not a row batch");
            };
            prop_assert_eq!(batch.rows, as_generated(&rows).rows);
        }
    }

    /// Whether a temporal kind (counted at its longest text form) is in `value`.
    fn temporal(value: &SqlValue) -> bool {
        match value {
            SqlValue::Timestamp(_)
            | SqlValue::DateTime(_)
            | SqlValue::Date(_)
            | SqlValue::Time(_) => true,
            SqlValue::Array(values) => values.iter().any(temporal),
            _ => false,
        }
    }

    proptest! {
        #[test]
        fn row_wire_len_counts_the_encoded_bytes(
            rows in prop::collection::vec(prop::collection::vec(arb_value(), 0..6), 0..8)
        ) {
            let counted: usize = rows.iter().map(|row| row_wire_len(row)).sum();
            let exact = RowBatch::encode_rows(rows.clone()).encoded_len();
            if rows.iter().flatten().any(temporal) {
                prop_assert!(counted >= exact, "{counted} < {exact}");
            } else {
                prop_assert_eq!(counted, exact);
            }
        }
    }

    #[test]
    fn decoded_and_encoded_rows_are_both_sent() {
        let mut batch = RowBatch::encode_rows(vec![vec![SqlValue::Int(2)]]);
        batch.rows.push(pb::Row {
            values: vec![pb::Value::from(SqlValue::Int(1))],
        });
        let decoded = RowBatch::decode(batch.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(decoded.len(), 2);
        assert_eq!(decoded.rows[0].values[0], pb::Value::from(SqlValue::Int(1)));
        assert_eq!(decoded.rows[1].values[0], pb::Value::from(SqlValue::Int(2)));
    }
}
