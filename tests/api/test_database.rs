//! The databases the tests run against: a database of the test's own on
//! each backend, made from the suite's admin URLs and dropped when the test
//! ends.
//!
//! Backends come from `SQLGATE_TEST_POSTGRES_URL` and `SQLGATE_TEST_MYSQL_URL`
//! (defaults: the local servers on their standard ports). An unreachable
//! backend skips the test with a loud message, except under `CI=true`,
//! where it fails.

use sqlx::{Connection, Executor};

use crate::helpers::Backend;

/// The PostgreSQL URL the suite administers from (its `postgres` database).
pub fn postgres_admin_url() -> String {
    std::env::var("SQLGATE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// The MariaDB URL the suite administers from (its `mysql` database).
pub fn mysql_admin_url() -> String {
    std::env::var("SQLGATE_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/mysql".to_owned())
}

/// Replaces the database name at the end of a URL.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let base = base.rsplit_once('/').map_or(base, |(head, _)| head);
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

/// `host:port` and database name of a test database URL.
pub fn host_and_database(url: &str) -> (String, String) {
    let after_at = url.rsplit_once('@').map_or(url, |(_, rest)| rest);
    let after_scheme = after_at
        .split_once("://")
        .map_or(after_at, |(_, rest)| rest);
    let (host, database) = after_scheme.split_once('/').expect("a database name");
    (
        host.to_owned(),
        database.split('?').next().unwrap_or_default().to_owned(),
    )
}

/// A database of the test's own, dropped when the test ends.
pub struct TestDatabase {
    pub backend: Backend,
    /// The URL sqlgate connects with.
    pub url: String,
    /// The database's name (PostgreSQL/MariaDB).
    pub name: String,
    /// The database file (SQLite).
    sqlite_path: Option<std::path::PathBuf>,
    admin_url: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDatabase {
    /// Creates the database; `None` when the backend is unreachable outside
    /// CI (skipped loudly).
    pub async fn create(backend: Backend) -> Option<Self> {
        let name = format!("sqlgate_test_{}", uuid::Uuid::new_v4().simple());
        match backend {
            Backend::Postgres => {
                Self::on_server::<sqlx::PgConnection>(backend, postgres_admin_url(), name).await
            }
            Backend::MySql => {
                Self::on_server::<sqlx::MySqlConnection>(backend, mysql_admin_url(), name).await
            }
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let path = dir.path().join("test.db");
                Some(Self {
                    backend,
                    url: format!("sqlite://{}?mode=rwc", path.display()),
                    name,
                    admin_url: String::new(),
                    sqlite_path: Some(path),
                    _dir: Some(dir),
                })
            }
        }
    }
}

impl TestDatabase {
    /// Creates database `name` on the server `admin_url` points to
    /// (PostgreSQL or MariaDB, through connection type `C`).
    async fn on_server<C>(backend: Backend, admin_url: String, name: String) -> Option<Self>
    where
        C: Connection,
        for<'c> &'c mut C: Executor<'c>,
    {
        let mut conn = unreachable_skips(backend, C::connect(&admin_url).await)?;
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .expect("create test database");
        Some(Self {
            backend,
            url: with_database(&admin_url, &name),
            name,
            admin_url,
            sqlite_path: None,
            _dir: None,
        })
    }

    /// A stand-in that owns nothing and drops nothing: what a stopped
    /// `TestApp` keeps once it has handed its database to the test.
    pub fn placeholder() -> Self {
        Self {
            backend: Backend::Sqlite,
            url: String::new(),
            name: String::new(),
            admin_url: String::new(),
            sqlite_path: None,
            _dir: None,
        }
    }

    /// The SQLite database file, for a direct connection beside sqlgate's.
    pub fn sqlite_path(&self) -> Option<std::path::PathBuf> {
        self.sqlite_path.clone()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (backend, admin_url, name) = (self.backend, self.admin_url.clone(), self.name.clone());
        if backend == Backend::Sqlite {
            return;
        }
        match backend {
            Backend::Postgres => drop_in_background::<sqlx::PgConnection>(
                admin_url,
                vec![format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")],
            ),
            Backend::MySql => drop_in_background::<sqlx::MySqlConnection>(
                admin_url,
                vec![format!("DROP DATABASE IF EXISTS {name}")],
            ),
            Backend::Sqlite => {}
        }
    }
}

/// Runs `statements` (best effort: cleanup) through a fresh connection to
/// `admin_url`, from `Drop`, where async work cannot run: on a thread with
/// a runtime of its own, waited for.
pub fn drop_in_background<C>(admin_url: String, statements: Vec<String>)
where
    C: sqlx::Connection + 'static,
    for<'c> &'c mut C: sqlx::Executor<'c>,
{
    let _ = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            if let Ok(mut conn) = C::connect(&admin_url).await {
                for sql in statements {
                    let _ = conn.execute(sqlx::AssertSqlSafe(sql)).await;
                }
            }
        });
    })
    .join();
}

/// Whether this run is CI's: `CI` set to anything but empty, `0`, `false`,
/// `no` or `off` (CI systems spell it `true`, `1`, `yes`…).
pub fn running_in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| {
        !matches!(
            value.trim().to_ascii_lowercase().as_str(),
            "" | "0" | "false" | "no" | "off"
        )
    })
}

/// Skips a test whose backend is unreachable — loudly, and never in CI.
/// The message is written straight to the process's stderr: the test
/// harness captures `eprintln!` of passing tests, which would make a
/// skipped backend look like `ok`.
fn unreachable_skips<T, E: std::fmt::Display>(backend: Backend, result: Result<T, E>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(err) => {
            if running_in_ci() {
                panic!("{backend:?} is unreachable in CI (CI is set): {err}");
            }
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr().lock(),
                "\n!!!!! SKIPPING: {backend:?} is unreachable ({err}). Start it or set SQLGATE_TEST_*_URL. !!!!!\n"
            );
            None
        }
    }
}
