//! PostgreSQL: parameters carry their PostgreSQL type (NULL is left for the
//! server to infer), result columns are decoded by type OID, arrays keep
//! their NULL elements.
//!
//! This module only wires the [`Codec`] impl. Binding parameters and the
//! statement text per type signature live in `encode`, column planning and
//! value decoding in `decode`, streamed scalars written straight into
//! their wire form in `transcode`, and `numeric`'s binary format (both ways,
//! since sqlx's `BigDecimal` loses the display scale and the special
//! values) in `numeric`.

mod decode;
mod encode;
mod numeric;
mod transcode;

use sqlx::{
    Postgres,
    postgres::{PgArguments, PgColumn, PgQueryResult, PgRow},
};

use super::{
    codec::{Codec, unrepresentable},
    value::{ColumnInfo, SqlValue},
    wire::RowWriter,
};
use crate::error::Error;
use decode::PgDecoder;

impl Codec for Postgres {
    type Decoder = PgDecoder;

    fn encode_params(params: &[SqlValue]) -> Result<PgArguments, Error> {
        let mut args = PgArguments::default();
        for (index, value) in params.iter().enumerate() {
            encode::add_param(&mut args, value)
                .map_err(|msg| Error::invalid_parameter(index, msg))?;
        }
        Ok(args)
    }

    fn statement_text(sql: &str, params: &[SqlValue]) -> String {
        encode::statement_text(sql, params)
    }

    const CHECK_PARAMETER_COUNT: bool = true;

    fn plan_column(column: &PgColumn) -> Result<(ColumnInfo, PgDecoder), Error> {
        decode::plan_column(column)
    }

    fn decode(
        row: &PgRow,
        index: usize,
        decoder: PgDecoder,
        column: &ColumnInfo,
    ) -> Result<SqlValue, Error> {
        match decoder {
            PgDecoder::Scalar(scalar) => decode::decode_scalar(row, index, scalar),
            PgDecoder::Array(scalar) => decode::decode_array(row, index, scalar),
        }
        .map_err(|err| unrepresentable(column, err))
    }

    fn encode_value(
        row: &PgRow,
        index: usize,
        decoder: PgDecoder,
        column: &ColumnInfo,
        out: &mut RowWriter,
    ) -> Result<(), Error> {
        match decoder {
            PgDecoder::Scalar(scalar) => transcode::scalar(row, index, scalar, out)
                .map_err(|err| unrepresentable(column, err)),
            PgDecoder::Array(_) => {
                out.value(&Self::decode(row, index, decoder, column)?);
                Ok(())
            }
        }
    }

    fn rows_affected(result: &PgQueryResult) -> u64 {
        result.rows_affected()
    }
}
