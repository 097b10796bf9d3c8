//! sqlgate's connections as PostgreSQL itself sees them
//! (`pg_stat_activity`): what the tests check to know that a statement runs,
//! that a transaction is over, or that no connection is left behind.

use std::time::Duration;

/// Which of sqlgate's PostgreSQL backends [`sqlgate_backends`] counts.
#[derive(Debug, Clone, Copy)]
pub enum Backends<'a> {
    /// Every connection sqlgate holds open.
    All,
    /// Running a statement or holding a transaction open.
    Busy,
    /// Running a statement whose text contains this.
    Running(&'a str),
}

/// How many of sqlgate's backends (`application_name = 'sqlgate'`) on
/// `database` are in the state asked for, as PostgreSQL sees them.
pub async fn sqlgate_backends(
    direct: &mut sqlx::PgConnection,
    database: &str,
    which: Backends<'_>,
) -> i64 {
    let (state, pattern) = match which {
        Backends::All => ("TRUE", String::new()),
        Backends::Busy => (
            "(state LIKE 'idle in transaction%' OR state = 'active')",
            String::new(),
        ),
        Backends::Running(text) => ("state = 'active'", text.to_owned()),
    };
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 \
         AND application_name = 'sqlgate' AND {state} AND query LIKE $2"
    )))
    .bind(database)
    .bind(format!("%{pattern}%"))
    .fetch_one(direct)
    .await
    .expect("pg_stat_activity")
}

/// Waits (up to 2 s) until [`sqlgate_backends`] counts exactly `count`;
/// fails naming `what` otherwise.
pub async fn wait_for_backends(
    direct: &mut sqlx::PgConnection,
    database: &str,
    which: Backends<'_>,
    count: i64,
    what: &str,
) {
    let started = std::time::Instant::now();
    loop {
        let now = sqlgate_backends(direct, database, which).await;
        if now == count {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{what}: {now} sqlgate backend(s) ({which:?}), expected {count}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
