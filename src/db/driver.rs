//! [`Driver`]: everything generic code asks of a backend, in one bound.
//!
//! sqlx reaches a connection's statements through `Executor`, implemented
//! for `&mut DB::Connection` of each backend; generic code would have to
//! repeat `for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>` on
//! every function. Here that bound is written once, on the blanket impl,
//! and the few driver calls sqlgate makes are methods of the trait.
//!
//! It is also where a statement is kept out of sqlx's statement cache when
//! it is too long to cache (see [`limit_statement_cache`]).

use std::sync::atomic::{AtomicUsize, Ordering};

use futures::{FutureExt, future::BoxFuture, stream::BoxStream};
use sqlx::{
    AssertSqlSafe, Connection, Either, Executor, IntoArguments, SqlSafeStr,
    database::HasStatementCache,
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
    /// and rows as they arrive. A statement longer than the cache's byte
    /// limit runs unnamed: prepared for this call only, never cached.
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
    /// A statement too long to cache leaves the connection's cache empty
    /// (sqlx can describe a statement only by caching it).
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
        let cached = cacheable(&sql);
        conn.fetch_many(sqlx::query_with(AssertSqlSafe(sql), arguments).persistent(cached))
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
        if cacheable(&sql) {
            return conn.prepare_with(AssertSqlSafe(sql).into_sql_str(), &[]);
        }
        async move {
            // sqlx describes a statement only through its cache (and without
            // a cache, PostgreSQL's prepared statement would never be
            // closed): prepare, then empty the cache so that the long text
            // is held neither here nor by the server. Only reached for a
            // long statement that returned no rows.
            let described = conn
                .prepare_with(AssertSqlSafe(sql).into_sql_str(), &[])
                .await;
            conn.clear_cached_statements().await?;
            described
        }
        .boxed()
    }
}

/// The longest statement text cached, in bytes; 0 caches nothing.
/// Process-wide because the driver's calls are handed a bare connection
/// (sqlgate runs one pool per process); set by [`limit_statement_cache`]
/// when the pool is built, before any statement runs.
static MAX_CACHED_STATEMENT_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Sets which statements may be cached: none when connections cache no
/// statements (`capacity` 0: sqlx would otherwise leave PostgreSQL's
/// prepared statements open), else those up to `max_bytes` long.
pub(crate) fn limit_statement_cache(capacity: usize, max_bytes: usize) {
    let limit = if capacity == 0 { 0 } else { max_bytes };
    MAX_CACHED_STATEMENT_BYTES.store(limit, Ordering::Relaxed);
}

/// Whether `sql` may take a slot in the connection's statement cache:
/// once it has run, describing it again costs no round trip.
pub(crate) fn cacheable(sql: &str) -> bool {
    let limit = MAX_CACHED_STATEMENT_BYTES.load(Ordering::Relaxed);
    limit > 0 && sql.len() <= limit
}
