//! SQLite runs in-process: a progress handler interrupts a statement when
//! its deadline passes or it is cancelled; there is no server to cancel on.

use std::{sync::Arc, time::Duration};

use sea_orm::{ConnectOptions, DatabaseConnection};
use sqlx::{Pool, Sqlite, sqlite::SqliteJournalMode};

use super::{Dialect, Isolation, PoolHook, plain_begin};
use crate::{
    db::{Backend, Deadline, Interrupt},
    error::Error,
};

impl Dialect for Sqlite {
    const BACKEND: Backend = Backend::Sqlite;
    const PLAIN_READS_OUTSIDE_TRANSACTION: bool = false;

    fn single_connection(url: &str) -> bool {
        url.contains(":memory:")
    }

    fn configure(
        options: &mut ConnectOptions,
        hook: PoolHook<Self>,
        single_connection: bool,
        statement_cache_capacity: usize,
    ) {
        options.map_sqlx_sqlite_pool_opts(hook);
        options.map_sqlx_sqlite_opts(move |opts| {
            let opts = if single_connection {
                opts
            } else {
                opts.journal_mode(SqliteJournalMode::Wal)
            };
            // Writers wait for each other instead of failing at once.
            // (`mode=rwc` in the URL already asks sqlx to create the file.)
            opts.busy_timeout(Duration::from_secs(5))
                .foreign_keys(true)
                .statement_cache_capacity(statement_cache_capacity)
        });
    }

    fn typed_pool(connection: &DatabaseConnection) -> Pool<Sqlite> {
        connection.get_sqlite_connection_pool().clone()
    }

    fn connection_setup(_longest: Duration) -> Vec<String> {
        Vec::new()
    }

    fn reset_sql(_longest: Duration) -> Option<String> {
        // Nothing to undo: statements that would change the connection
        // beyond the call (PRAGMA, ATTACH, TEMP objects) are refused.
        Some(String::new())
    }

    fn begin_sql(_deadline: &Deadline, read_only: bool) -> String {
        if read_only {
            // The connection refuses every write until READ_ONLY_UNDO
            // (callers cannot reach PRAGMA: sqlgate refuses it).
            "PRAGMA query_only = ON; BEGIN".to_owned()
        } else {
            "BEGIN".to_owned()
        }
    }

    const READ_ONLY_UNDO: Option<&'static str> = Some("PRAGMA query_only = OFF");

    async fn arm(
        conn: &mut sqlx::SqliteConnection,
        interrupt: &Arc<Interrupt>,
        _want_server_id: bool,
    ) -> Result<Option<i64>, sqlx::Error> {
        // SQLite runs in-process: a progress handler interrupts the
        // statement once its deadline passes or it is cancelled.
        let interrupt = interrupt.clone();
        conn.lock_handle()
            .await?
            .set_progress_handler(1_000, move || interrupt.may_continue());
        Ok(None)
    }

    fn session_begin(_isolation: Isolation, read_only: bool) -> String {
        // SQLite transactions are always serializable, which satisfies any
        // level asked for. Read-only is the connection's query_only flag.
        if read_only {
            "PRAGMA query_only = ON; BEGIN".to_owned()
        } else {
            "BEGIN".to_owned()
        }
    }

    async fn open_session(
        conn: &mut sqlx::SqliteConnection,
        begin: String,
        _want_server_id: bool,
    ) -> Result<Option<i64>, sqlx::Error> {
        plain_begin(conn, begin).await
    }

    fn transaction_survives_interrupt() -> bool {
        false
    }

    async fn disarm(conn: &mut sqlx::SqliteConnection) {
        if let Ok(mut handle) = conn.lock_handle().await {
            handle.remove_progress_handler();
        }
    }

    fn control_pool(_url: &str) -> Result<Option<Pool<Sqlite>>, Error> {
        Ok(None)
    }

    async fn cancel_statement(_pool: &Pool<Sqlite>, _id: i64) -> bool {
        // The progress handler interrupts it.
        true
    }
}
