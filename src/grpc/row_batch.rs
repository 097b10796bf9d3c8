//! `sqlgate.v1.RowBatch`, written by hand instead of generated, so that a
//! streamed batch is sent as the bytes sqlgate wrote while the rows
//! arrived ([`EncodedRows`], see `query::wire`).
//!
//! prost encodes a nested message by asking each level for its length and
//! then encoding it, which asks the level below again: a value inside a row
//! inside a batch inside a frame is measured four times. It also needs the
//! batch built as `pb::Row`s and `pb::Value`s first. Here the batch only
//! copies rows out. The wire format is the generated one's
//! (`repeated Row rows = 1`), so clients see no difference; decoding fills
//! [`RowBatch::rows`].

use prost::{
    DecodeError, Message,
    bytes::{Buf, BufMut},
    encoding::{self, DecodeContext, WireType},
};

use super::pb;
use crate::query::wire::EncodedRows;

/// A batch of rows: decoded rows (what a client reads) and rows encoded by
/// sqlgate (what the server sends). Both are written when encoding.
#[derive(Clone, PartialEq, Default, Debug)]
pub struct RowBatch {
    /// The rows, as a decoded message holds them.
    pub rows: Vec<pb::Row>,
    /// Rows already encoded as field 1, each with its key and length.
    encoded: EncodedRows,
}

impl From<EncodedRows> for RowBatch {
    fn from(encoded: EncodedRows) -> Self {
        Self {
            rows: Vec::new(),
            encoded,
        }
    }
}

impl RowBatch {
    /// How many rows the batch holds, decoded or encoded.
    pub fn len(&self) -> usize {
        self.rows.len() + self.encoded.len()
    }

    /// Whether the batch holds no row.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Message for RowBatch {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        encoding::message::encode_repeated(1, &self.rows, buf);
        buf.put_slice(self.encoded.as_bytes());
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
        encoding::message::encoded_len_repeated(1, &self.rows) + self.encoded.byte_len()
    }

    fn clear(&mut self) {
        self.rows.clear();
        self.encoded = EncodedRows::default();
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::{
        grpc::convert::value::tests::arb_value,
        query::value::{SqlValue, row_wire_len},
    };

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
            let batch = RowBatch::from(EncodedRows::from_values(&rows));
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
                frame: Some(pb::result_frame::Frame::Rows(RowBatch::from(EncodedRows::from_values(&rows)))),
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
            let exact = RowBatch::from(EncodedRows::from_values(&rows)).encoded_len();
            if rows.iter().flatten().any(temporal) {
                prop_assert!(counted >= exact, "{counted} < {exact}");
            } else {
                prop_assert_eq!(counted, exact);
            }
        }
    }

    #[test]
    fn decoded_and_encoded_rows_are_both_sent() {
        let mut batch = RowBatch::from(EncodedRows::from_values(&[vec![SqlValue::Int(2)]]));
        batch.rows.push(pb::Row {
            values: vec![pb::Value::from(SqlValue::Int(1))],
        });
        let decoded = RowBatch::decode(batch.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(decoded.len(), 2);
        assert_eq!(decoded.rows[0].values[0], pb::Value::from(SqlValue::Int(1)));
        assert_eq!(decoded.rows[1].values[0], pb::Value::from(SqlValue::Int(2)));
    }
}
