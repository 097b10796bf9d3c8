//! Backend differences outside of values: how to name the server-side
//! connection running a statement, and how to cancel that statement from
//! another connection (dropping a sqlx future does not stop the query).

use std::time::Duration;

use sqlx::{MySql, Pool, Postgres, Sqlite};

/// How long sqlgate tries to reach the database to cancel a statement.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(2);

/// Cancelling a running statement on the database server.
pub(crate) trait Dialect: sqlx::Database {
    /// The id of the server-side connection (`pg_backend_pid()`,
    /// `CONNECTION_ID()`); `None` where the backend runs in-process.
    fn server_connection_id(
        conn: &mut Self::Connection,
    ) -> impl Future<Output = Result<Option<i64>, sqlx::Error>> + Send;

    /// Asks the server, over another pooled connection, to cancel whatever
    /// connection `id` is running. Best effort: the caller closes the
    /// cancelled connection afterwards in any case.
    fn cancel_statement(pool: &Pool<Self>, id: i64) -> impl Future<Output = ()> + Send;
}

impl Dialect for Postgres {
    async fn server_connection_id(
        conn: &mut sqlx::PgConnection,
    ) -> Result<Option<i64>, sqlx::Error> {
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(conn)
            .await?;
        Ok(Some(pid.into()))
    }

    async fn cancel_statement(pool: &Pool<Postgres>, id: i64) {
        let cancel = sqlx::query("SELECT pg_cancel_backend($1)")
            .bind(i32::try_from(id).unwrap_or_default())
            .execute(pool);
        match tokio::time::timeout(CANCEL_TIMEOUT, cancel).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "pg_cancel_backend failed"),
            Err(_) => tracing::warn!("pg_cancel_backend timed out"),
        }
    }
}

impl Dialect for MySql {
    async fn server_connection_id(
        conn: &mut sqlx::MySqlConnection,
    ) -> Result<Option<i64>, sqlx::Error> {
        let id: u64 = sqlx::query_scalar("SELECT CONNECTION_ID()")
            .fetch_one(conn)
            .await?;
        Ok(i64::try_from(id).ok())
    }

    async fn cancel_statement(pool: &Pool<MySql>, id: i64) {
        // KILL takes no placeholder; `id` is an integer we read ourselves.
        let sql = format!("KILL QUERY {id}");
        let cancel = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(pool);
        match tokio::time::timeout(CANCEL_TIMEOUT, cancel).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "KILL QUERY failed"),
            Err(_) => tracing::warn!("KILL QUERY timed out"),
        }
    }
}

impl Dialect for Sqlite {
    async fn server_connection_id(
        _conn: &mut sqlx::SqliteConnection,
    ) -> Result<Option<i64>, sqlx::Error> {
        Ok(None)
    }

    async fn cancel_statement(_pool: &Pool<Sqlite>, _id: i64) {
        // In-process: closing the connection stops the statement's worker.
    }
}
