//! [`Driver`]: everything generic code asks of a backend, in one bound.
//!
//! sqlx reaches a connection's statements through `Executor`, implemented
//! for `&mut DB::Connection` of each backend; generic code would have to
//! repeat `for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>` on
//! every function. Here that bound is written once, on the blanket impl,
//! and the few driver calls sqlgate makes are methods of the trait.

use futures::{FutureExt, future::BoxFuture, stream::BoxStream};
use sqlx::{
    AssertSqlSafe, Either, Executor, IntoArguments, SqlSafeStr, database::HasStatementCache,
};

use super::Dialect;
use crate::query::codec::Codec;

/// What a statement yields as it runs: a result summary (rows affected)
/// or a row, or the driver's error.
pub(crate) type Results<'c, DB> = BoxStream<
    'c,
    Result<Either<<DB as sqlx::Database>::QueryResult, <DB as sqlx::Database>::Row>, sqlx::Error>,
>;

/// A backend sqlgate can run statements on: its values ([`Codec`]), its
/// differences ([`Dialect`]) and the driver calls below.
pub(crate) trait Driver:
    Codec + Dialect + HasStatementCache + Send + Sync + 'static
{
    /// Runs text without parameters (transaction control, settings) over
    /// the simple protocol, so it never takes a prepared-statement slot.
    fn raw(conn: &mut Self::Connection, sql: String) -> BoxFuture<'_, Result<(), sqlx::Error>>;

    /// Runs `sql` with `arguments` as a prepared statement, yielding results
    /// and rows as they arrive.
    fn fetch_many(
        conn: &mut Self::Connection,
        sql: String,
        arguments: Self::Arguments,
    ) -> Results<'_, Self>;

    /// Runs a fixed query without parameters and says whether it returned
    /// a row (a yes/no question to the database).
    fn returns_a_row<'c>(
        conn: &'c mut Self::Connection,
        sql: &'static str,
    ) -> BoxFuture<'c, Result<bool, sqlx::Error>>;

    /// Prepares `sql` (sqlx caches it by text) to learn its result columns.
    fn prepare(
        conn: &mut Self::Connection,
        sql: String,
    ) -> BoxFuture<'_, Result<Self::Statement, sqlx::Error>>;
}

impl<DB> Driver for DB
where
    DB: Codec + Dialect + HasStatementCache + Send + Sync + 'static,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    fn raw(conn: &mut DB::Connection, sql: String) -> BoxFuture<'_, Result<(), sqlx::Error>> {
        conn.execute(sqlx::raw_sql(AssertSqlSafe(sql)))
            .map(|done| done.map(|_| ()))
            .boxed()
    }

    fn fetch_many(
        conn: &mut DB::Connection,
        sql: String,
        arguments: DB::Arguments,
    ) -> Results<'_, DB> {
        conn.fetch_many(sqlx::query_with(AssertSqlSafe(sql), arguments))
    }

    fn returns_a_row<'c>(
        conn: &'c mut DB::Connection,
        sql: &'static str,
    ) -> BoxFuture<'c, Result<bool, sqlx::Error>> {
        conn.fetch_optional(sqlx::raw_sql(AssertSqlSafe(sql)))
            .map(|row| row.map(|row| row.is_some()))
            .boxed()
    }

    fn prepare(
        conn: &mut DB::Connection,
        sql: String,
    ) -> BoxFuture<'_, Result<DB::Statement, sqlx::Error>> {
        conn.prepare_with(AssertSqlSafe(sql).into_sql_str(), &[])
    }
}
