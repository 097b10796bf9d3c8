//! What each backend must provide to run a statement generically: bind
//! [`SqlValue`] parameters, describe result columns, and decode row values.

use sqlx::Database;

use super::{
    value::{ColumnInfo, SqlValue},
    wire::RowWriter,
};
use crate::error::Error;

/// A database's translation between [`SqlValue`] and its driver types.
pub(crate) trait Codec: Database {
    /// How one column's values are read, chosen once per result.
    type Decoder: Copy + Send + Sync + 'static;

    /// Binds the parameters; a value the backend cannot take is an
    /// [`Error::InvalidParameter`] naming its index.
    fn encode_params(params: &[SqlValue]) -> Result<Self::Arguments, Error>;

    /// The text sent to the driver. sqlx caches prepared statements by text
    /// alone, so a backend whose statements fix their parameter types at
    /// prepare time (PostgreSQL) must make the text differ per type signature.
    fn statement_text(sql: &str, params: &[SqlValue]) -> String {
        let _ = params;
        sql.to_owned()
    }

    /// Whether sqlgate must check the parameter count itself: PostgreSQL
    /// accepts more declared parameter types than a statement uses, and
    /// SQLite's driver binds missing parameters as NULL.
    const CHECK_PARAMETER_COUNT: bool = false;

    /// Describes a result column and picks its decoder.
    fn plan_column(column: &Self::Column) -> Result<(ColumnInfo, Self::Decoder), Error>;

    /// Reads the value at `index` of `row`.
    fn decode(
        row: &Self::Row,
        index: usize,
        decoder: Self::Decoder,
        column: &ColumnInfo,
    ) -> Result<SqlValue, Error>;

    /// Appends the value at `index` of `row` to a row in its wire form,
    /// byte for byte what [`Codec::decode`] and then [`RowWriter::value`]
    /// would write, and with the same errors. A backend that can write
    /// some types straight from the driver's bytes, without the
    /// intermediate [`SqlValue`], does so here.
    fn encode_value(
        row: &Self::Row,
        index: usize,
        decoder: Self::Decoder,
        column: &ColumnInfo,
        out: &mut RowWriter,
    ) -> Result<(), Error> {
        out.value(&Self::decode(row, index, decoder, column)?);
        Ok(())
    }

    /// Rows inserted, updated or deleted.
    fn rows_affected(result: &Self::QueryResult) -> u64;
}

/// Turns a driver's decode failure into an error naming the column, never the value.
pub(crate) fn unrepresentable(column: &ColumnInfo, err: sqlx::Error) -> Error {
    let reason = match err {
        sqlx::Error::ColumnDecode { source, .. } => source.to_string(),
        other => other.to_string(),
    };
    Error::UnrepresentableValue {
        column: column.name.clone(),
        reason,
    }
}

/// Checks that every non-null element of an array has one kind, and returns it.
pub(crate) fn array_element_kind(
    items: &[SqlValue],
) -> Result<Option<super::value::ValueKind>, String> {
    let mut kind = None;
    for item in items {
        match item {
            SqlValue::Null => {}
            SqlValue::Array(_) => return Err("nested arrays are not supported".to_owned()),
            other => match kind {
                None => kind = Some(other.kind()),
                Some(seen) if seen == other.kind() => {}
                Some(seen) => {
                    return Err(format!(
                        "array elements must share one kind; found {seen:?} and {:?}",
                        other.kind()
                    ));
                }
            },
        }
    }
    Ok(kind)
}
