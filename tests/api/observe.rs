//! What the database itself shows of sqlgate's connections: the truth that a
//! client cannot see. A rolled-back row and an uncommitted one look the same
//! from another connection (both invisible), so a cleanup test that only
//! counts rows passes while a transaction is still open. These views look
//! where the truth is: `pg_stat_activity` and `pg_locks` on PostgreSQL,
//! `information_schema.INNODB_TRX` and `PROCESSLIST` on MariaDB, and on
//! SQLite whether a second writer can take the database's write lock.

use std::time::{Duration, Instant};

use sqlx::{ConnectOptions, Connection};

use crate::{
    helpers::{Backend, TestApp},
    pg_activity::{Backends, sqlgate_backends},
};

/// A direct connection (not through sqlgate) that watches sqlgate's own.
pub enum DatabaseView {
    Postgres {
        conn: sqlx::PgConnection,
        database: String,
    },
    MySql {
        conn: sqlx::MySqlConnection,
        database: String,
    },
    Sqlite {
        path: std::path::PathBuf,
    },
}

/// What the view saw at one moment.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Seen {
    /// sqlgate connections idle inside a transaction (PostgreSQL: `idle in
    /// transaction`; MariaDB: any active InnoDB transaction, idle or not;
    /// SQLite: the write lock is held). A PostgreSQL statement running
    /// inside a transaction counts under `running`.
    pub open_transactions: i64,
    /// sqlgate connections running a statement now (PostgreSQL and MariaDB).
    pub running: i64,
    /// Locks held by sqlgate connections (PostgreSQL `pg_locks`, advisory
    /// locks included; MariaDB: rows locked by its transactions).
    pub locks: i64,
    /// sqlgate transactions that have written something not yet committed
    /// (PostgreSQL: a transaction id assigned; MariaDB: undo log entries;
    /// SQLite: the write lock held).
    pub writes: i64,
}

impl Seen {
    pub fn is_clean(&self) -> bool {
        *self == Seen::default()
    }
}

impl DatabaseView {
    /// A view of `app`'s database.
    pub async fn of(app: &TestApp) -> Self {
        match app.backend {
            Backend::Postgres => DatabaseView::Postgres {
                conn: app.postgres_direct().await,
                database: app.db.name.clone(),
            },
            Backend::MySql => DatabaseView::MySql {
                conn: app.mysql_direct().await,
                database: app.db.name.clone(),
            },
            Backend::Sqlite => DatabaseView::Sqlite {
                path: app
                    .db
                    .sqlite_path()
                    .expect("a SQLite test database has a file"),
            },
        }
    }

    /// What sqlgate's connections hold and run now.
    pub async fn seen(&mut self) -> Seen {
        match self {
            DatabaseView::Postgres { conn, database } => {
                let open = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 \
                     AND application_name = 'sqlgate' AND state LIKE 'idle in transaction%'",
                )
                .bind(&*database)
                .fetch_one(&mut *conn)
                .await
                .expect("pg_stat_activity");
                let running = sqlgate_backends(conn, database, Backends::Running("")).await;
                let locks = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
                     WHERE a.datname = $1 AND a.application_name = 'sqlgate'",
                )
                .bind(&*database)
                .fetch_one(&mut *conn)
                .await
                .expect("pg_locks");
                let writes = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 \
                     AND application_name = 'sqlgate' AND backend_xid IS NOT NULL",
                )
                .bind(&*database)
                .fetch_one(&mut *conn)
                .await
                .expect("pg_stat_activity");
                Seen {
                    open_transactions: open,
                    running,
                    locks,
                    writes,
                }
            }
            DatabaseView::MySql { conn, database } => {
                let transactions = innodb_transactions(conn, database).await;
                let running = sqlx::query_scalar(
                    "SELECT count(*) FROM information_schema.PROCESSLIST \
                     WHERE DB = ? AND COMMAND IN ('Query', 'Execute') AND ID <> CONNECTION_ID()",
                )
                .bind(&*database)
                .fetch_one(&mut *conn)
                .await
                .expect("PROCESSLIST");
                Seen {
                    open_transactions: i64::try_from(transactions.len()).expect("count"),
                    running,
                    locks: transactions.iter().map(|t| t.row_locks).sum(),
                    writes: transactions
                        .iter()
                        .filter(|t| t.undo_entries > 0)
                        .count()
                        .try_into()
                        .expect("count"),
                }
            }
            DatabaseView::Sqlite { path } => {
                let held = i64::from(!sqlite_write_lock_is_free(path).await);
                Seen {
                    open_transactions: held,
                    running: 0,
                    locks: 0,
                    writes: held,
                }
            }
        }
    }

    /// sqlgate's statements whose text contains `pattern` running now
    /// (PostgreSQL and MariaDB; SQLite runs in-process: see
    /// [`DatabaseView::seen`] for its write lock).
    pub async fn running(&mut self, pattern: &str) -> i64 {
        match self {
            DatabaseView::Postgres { conn, database } => {
                sqlgate_backends(conn, database, Backends::Running(pattern)).await
            }
            DatabaseView::MySql { conn, database } => sqlx::query_scalar(
                "SELECT count(*) FROM information_schema.PROCESSLIST \
                 WHERE DB = ? AND COMMAND IN ('Query', 'Execute') AND INFO LIKE ?",
            )
            .bind(&*database)
            .bind(format!("%{pattern}%"))
            .fetch_one(&mut *conn)
            .await
            .expect("PROCESSLIST"),
            DatabaseView::Sqlite { .. } => panic!("SQLite statements run in-process"),
        }
    }

    /// How many connections sqlgate holds open to the database. On SQLite:
    /// 1 while any connection is open (the WAL file exists until the last
    /// connection closes), else 0.
    pub async fn connections(&mut self) -> i64 {
        match self {
            DatabaseView::Postgres { conn, database } => {
                sqlgate_backends(conn, database, Backends::All).await
            }
            DatabaseView::MySql { conn, database } => sqlx::query_scalar(
                "SELECT count(*) FROM information_schema.PROCESSLIST \
                 WHERE DB = ? AND ID <> CONNECTION_ID()",
            )
            .bind(&*database)
            .fetch_one(&mut *conn)
            .await
            .expect("PROCESSLIST"),
            DatabaseView::Sqlite { path } => {
                let mut wal = path.clone().into_os_string();
                wal.push("-wal");
                i64::from(std::path::Path::new(&wal).exists())
            }
        }
    }

    /// Rows in `table`, read directly (committed rows only).
    pub async fn count_rows(&mut self, table: &str) -> i64 {
        match self {
            DatabaseView::Postgres { conn, .. } => {
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                    .fetch_one(&mut *conn)
                    .await
                    .expect("count")
            }
            DatabaseView::MySql { conn, database } => sqlx::query_scalar(sqlx::AssertSqlSafe(
                format!("SELECT count(*) FROM {database}.{table}"),
            ))
            .fetch_one(&mut *conn)
            .await
            .expect("count"),
            DatabaseView::Sqlite { path } => {
                let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(&*path)
                    .connect()
                    .await
                    .expect("direct SQLite connection");
                let count = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SELECT count(*) FROM {table}"
                )))
                .fetch_one(&mut conn)
                .await
                .expect("count");
                conn.close().await.expect("close");
                count
            }
        }
    }

    /// Waits until `condition` holds for what the view sees, at most `within`.
    pub async fn wait_until(
        &mut self,
        within: Duration,
        what: &str,
        condition: impl Fn(&Seen) -> bool,
    ) -> Seen {
        let started = Instant::now();
        loop {
            let seen = self.seen().await;
            if condition(&seen) {
                return seen;
            }
            if started.elapsed() >= within {
                let detail = self.describe().await;
                panic!("{what}: not within {within:?}; the database shows {seen:?}:\n{detail}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// sqlgate's connections as the database lists them, for a failure message.
    pub async fn describe(&mut self) -> String {
        match self {
            DatabaseView::Postgres { conn, database } => {
                let rows: Vec<(i32, Option<String>, Option<String>)> = sqlx::query_as(
                    "SELECT pid, state, query FROM pg_stat_activity \
                     WHERE datname = $1 AND application_name = 'sqlgate'",
                )
                .bind(&*database)
                .fetch_all(&mut *conn)
                .await
                .expect("pg_stat_activity");
                format!("{rows:?}")
            }
            DatabaseView::MySql { conn, database } => {
                let rows: Vec<(i64, String, Option<String>)> = sqlx::query_as(
                    "SELECT ID, COMMAND, INFO FROM information_schema.PROCESSLIST WHERE DB = ?",
                )
                .bind(&*database)
                .fetch_all(&mut *conn)
                .await
                .expect("PROCESSLIST");
                let transactions = innodb_transactions(conn, database).await;
                format!("{rows:?}; open transactions: {transactions:?}")
            }
            DatabaseView::Sqlite { .. } => "(SQLite: the write lock is held)".to_owned(),
        }
    }

    /// Asserts that sqlgate settles, within `within`, to: no open
    /// transaction, no running statement and no lock on the database, and
    /// every pooled connection back in the pool.
    pub async fn assert_settles_clean(&mut self, app: &TestApp, within: Duration) {
        let started = Instant::now();
        self.wait_until(within, "sqlgate's connections clean", Seen::is_clean)
            .await;
        loop {
            let in_use = app.pool_in_use().await;
            if in_use == 0 {
                break;
            }
            assert!(
                started.elapsed() < within,
                "{in_use} connection(s) still checked out of the pool after {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Whether a second writer can take SQLite's write lock at once (no busy
/// wait): false while any connection holds a write transaction open.
pub async fn sqlite_write_lock_is_free(path: &std::path::Path) -> bool {
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .busy_timeout(Duration::ZERO)
        .connect()
        .await
        .expect("direct SQLite connection");
    let free = sqlx::raw_sql("BEGIN IMMEDIATE")
        .execute(&mut conn)
        .await
        .is_ok();
    if free {
        sqlx::raw_sql("ROLLBACK")
            .execute(&mut conn)
            .await
            .expect("rollback");
    }
    conn.close().await.expect("close");
    free
}

/// One active InnoDB transaction of a sqlgate connection.
#[derive(Debug)]
pub struct InnodbTransaction {
    /// Shown in failure messages.
    #[allow(dead_code)]
    pub thread_id: i64,
    pub row_locks: i64,
    pub undo_entries: i64,
}

/// The active InnoDB transactions of sqlgate's connections to `database`,
/// from `SHOW ENGINE INNODB STATUS`. Not `INNODB_TRX`: InnoDB serves that
/// table from a cache it refreshes only when nobody has read it for 0.1 s,
/// so with tests reading it in parallel it can stay stale indefinitely.
async fn innodb_transactions(
    conn: &mut sqlx::MySqlConnection,
    database: &str,
) -> Vec<InnodbTransaction> {
    let ours: Vec<i64> = sqlx::query_scalar(
        "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = ? AND ID <> CONNECTION_ID()",
    )
    .bind(database)
    .fetch_all(&mut *conn)
    .await
    .expect("PROCESSLIST");
    let (_, _, status): (String, String, String) = sqlx::query_as("SHOW ENGINE INNODB STATUS")
        .fetch_one(&mut *conn)
        .await
        .expect("SHOW ENGINE INNODB STATUS");
    let mut found = Vec::new();
    // Each transaction: "---TRANSACTION 598, ACTIVE 0 sec", an optional
    // "1 lock struct(s), heap size 1128, 0 row lock(s), …", then
    // "MariaDB thread id 272, …" (or "MySQL thread id …").
    let (mut active, mut row_locks, mut undo_entries) = (false, 0, 0);
    for line in status.lines() {
        if let Some(header) = line.strip_prefix("---TRANSACTION ") {
            active = header.contains("ACTIVE");
            (row_locks, undo_entries) = (0, 0);
        } else if let Some((before, after)) = line.split_once(" row lock(s)") {
            row_locks = before
                .rsplit(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .expect("a row lock count");
            undo_entries = after
                .split_once("undo log entries ")
                .and_then(|(_, n)| n.trim().parse().ok())
                .unwrap_or_default();
        } else if let Some((_, rest)) = line.split_once(" thread id ") {
            let thread_id: i64 = rest
                .split(',')
                .next()
                .and_then(|n| n.trim().parse().ok())
                .expect("a thread id");
            if active && ours.contains(&thread_id) {
                found.push(InnodbTransaction {
                    thread_id,
                    row_locks,
                    undo_entries,
                });
            }
            active = false;
        }
    }
    found
}
