//! "Database messages reach the caller; connection strings and passwords
//! never do": the real binary, its whole output captured, with passwords in
//! its database URL, good and bad. Parameter values and what a call writes
//! to the logs: `log_privacy`.

use std::time::Duration;

use sqlgate::grpc::pb::{self, admin_client::AdminClient, query_client::QueryClient};
use sqlx::{Connection, Executor};
use tonic::{Code, transport::Channel};

use crate::{
    binary::{Sqlgate, channel, free_address},
    helpers::{Backend, spawn_app},
    test_database::{drop_in_background, host_and_database},
};

/// Fails naming `what` if any line of `output` contains `secret`.
pub fn assert_absent(secret: &str, output: &[String], what: &str) {
    let found: Vec<_> = output.iter().filter(|line| line.contains(secret)).collect();
    assert!(
        found.is_empty(),
        "{what} appears in sqlgate's output: {found:?}"
    );
}

fn assert_status_clean(status: &tonic::Status, secrets: &[&str]) {
    let details = String::from_utf8_lossy(status.details()).into_owned();
    for secret in secrets {
        assert!(
            !status.message().contains(secret) && !details.contains(secret),
            "a secret reached the caller: {status:?}"
        );
    }
}

/// Starts the binary on `url` (debug logs, a 1 s acquire timeout) and waits
/// (up to 20 s) for it to exit by itself: its status and every line.
async fn start_failing(url: &str) -> (std::process::ExitStatus, Vec<String>) {
    Sqlgate::start(
        &[
            "--listen",
            &free_address().to_string(),
            "--database-url",
            url,
        ],
        &[
            ("SQLGATE_LOG_FILTER", "debug"),
            ("SQLGATE_POOL__ACQUIRE_TIMEOUT", "1s"),
        ],
    )
    .exited(Duration::from_secs(20))
    .await
}

/// PostgreSQL roles of the test's own, dropped when the test ends.
pub struct Roles {
    admin_url: String,
    names: Vec<String>,
}

impl Roles {
    /// Creates `(name, password, can log in)` roles through `admin_url`.
    pub async fn create(admin_url: &str, roles: &[(&str, &str, bool)]) -> Self {
        let mut conn = sqlx::PgConnection::connect(admin_url)
            .await
            .expect("admin connection");
        for (name, password, login) in roles {
            let login = if *login { "LOGIN" } else { "NOLOGIN" };
            conn.execute(sqlx::AssertSqlSafe(format!(
                "CREATE ROLE {name} {login} PASSWORD '{password}'"
            )))
            .await
            .expect("create role");
        }
        Self {
            admin_url: admin_url.to_owned(),
            names: roles
                .iter()
                .map(|(name, _, _)| (*name).to_owned())
                .collect(),
        }
    }
}

impl Drop for Roles {
    fn drop(&mut self) {
        drop_in_background::<sqlx::PgConnection>(
            self.admin_url.clone(),
            self.names
                .iter()
                .map(|name| format!("DROP ROLE IF EXISTS {name}"))
                .collect(),
        );
    }
}

/// MariaDB accounts of the test's own, dropped when the test ends.
struct Accounts {
    admin_url: String,
    accounts: Vec<String>,
}

impl Accounts {
    /// Creates `user` (from any host and from localhost) with `password`,
    /// granted `grant` on `database`, through the admin connection.
    async fn create(
        admin: &mut sqlx::MySqlConnection,
        admin_url: &str,
        (user, password): (&str, &str),
        grant: &str,
        database: &str,
    ) -> Self {
        let accounts = Accounts {
            admin_url: admin_url.to_owned(),
            accounts: vec![format!("'{user}'@'%'"), format!("'{user}'@'localhost'")],
        };
        for account in &accounts.accounts {
            admin
                .execute(sqlx::AssertSqlSafe(format!(
                    "CREATE USER {account} IDENTIFIED BY '{password}'"
                )))
                .await
                .expect("create user");
            admin
                .execute(sqlx::AssertSqlSafe(format!(
                    "GRANT {grant} ON {database}.* TO {account}"
                )))
                .await
                .expect("grant");
        }
        accounts
    }
}

impl Drop for Accounts {
    fn drop(&mut self) {
        drop_in_background::<sqlx::MySqlConnection>(
            self.admin_url.clone(),
            self.accounts
                .iter()
                .map(|account| format!("DROP USER IF EXISTS {account}"))
                .collect(),
        );
    }
}

/// Runs a few calls that succeed and fail; every status is checked clean.
async fn calls_through(channel: Channel, secrets: &[&str]) {
    let mut query = QueryClient::new(channel.clone());
    let ok = query
        .execute(pb::ExecuteRequest {
            sql: "SELECT 1".into(),
            ..Default::default()
        })
        .await
        .expect("a call through the password-protected pool");
    assert_eq!(ok.into_inner().rows.len(), 1);
    for sql in ["SELEC nonsense", "SELECT * FROM no_such_table"] {
        let status = query
            .execute(pb::ExecuteRequest {
                sql: sql.into(),
                ..Default::default()
            })
            .await
            .expect_err(sql);
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert_status_clean(&status, secrets);
    }
    let stats = AdminClient::new(channel)
        .get_pool_stats(pb::GetPoolStatsRequest {})
        .await
        .expect("stats")
        .into_inner();
    let stats = format!("{stats:?}");
    for secret in secrets {
        assert!(!stats.contains(secret), "{stats}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_passwords_in_the_database_url_never_reach_logs_or_callers() {
    let Some(app) = spawn_app(Backend::Postgres).await else {
        return;
    };
    let admin_url = app.db.url.clone();
    let _database = app.stop().await;
    let (host, database) = host_and_database(&admin_url);
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let (user, locked) = (format!("sg_user_{tag}"), format!("sg_locked_{tag}"));
    let password = format!("PwSecret{}", &tag[..12]);
    let locked_password = format!("PwLocked{}", &tag[..12]);
    let _roles = Roles::create(
        &admin_url,
        &[(&user, &password, true), (&locked, &locked_password, false)],
    )
    .await;
    let secrets = [password.as_str(), locked_password.as_str()];

    // A good URL with a password: the service runs; callers and logs never see it.
    let url = format!("postgres://{user}:{password}@{host}/{database}");
    let (sqlgate, address) = Sqlgate::serving(&url, &[("SQLGATE_LOG_FILTER", "debug")]).await;
    calls_through(channel(address).await, &secrets).await;
    let (status, output) = sqlgate.stop().await;
    assert_eq!(status.code(), Some(0), "{output:?}");
    assert!(
        output.iter().any(|line| line.contains("sqlgate serving")),
        "the output was captured: {output:?}"
    );
    assert!(output.iter().any(|line| line.contains("call failed")));
    assert_absent(&password, &output, "the password");
    assert_absent(&url, &output, "the database URL");
    assert_absent(
        "is a superuser",
        &output,
        "the superuser warning, for a role that is none",
    );

    // URLs that cannot start the service: a role that may not log in, a
    // URL that does not parse. (A port with nothing listening starts, not
    // ready: see `pod`.)
    let failing = [
        (
            format!("postgres://{locked}:{locked_password}@{host}/{database}"),
            "not permitted to log in",
        ),
        (
            format!("postgres://{user}:{password}@{host}:notaport/{database}"),
            "the database URL is invalid",
        ),
    ];
    for (url, says) in failing {
        let (status, output) = start_failing(&url).await;
        assert_eq!(status.code(), Some(1), "{url}: {output:?}");
        assert!(
            output.iter().any(|line| line.contains(says)),
            "{url}: the output says {says:?}: {output:?}"
        );
        for secret in secrets {
            assert_absent(secret, &output, "a password");
        }
        assert_absent(" at line ", &output, "the database server's source line");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_a_wrong_password_never_reaches_the_logs() {
    let Some(app) = spawn_app(Backend::MySql).await else {
        return;
    };
    let admin_url = app.db.url.clone();
    let _database = app.stop().await;
    let (host, database) = host_and_database(&admin_url);
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let user = format!("sg_{}", &tag[..12]);
    let password = format!("PwRight{}", &tag[..12]);
    let wrong = format!("PwWrong{}", &tag[..12]);
    let mut admin = sqlx::MySqlConnection::connect(&admin_url)
        .await
        .expect("admin connection");
    let accounts =
        Accounts::create(&mut admin, &admin_url, (&user, &password), "ALL", &database).await;
    let secrets = [password.as_str(), wrong.as_str()];

    drop(admin);
    {
        // The right password: it serves, and says nothing of it.
        let url = format!("mysql://{user}:{password}@{host}/{database}");
        let (sqlgate, address) = Sqlgate::serving(&url, &[("SQLGATE_LOG_FILTER", "debug")]).await;
        calls_through(channel(address).await, &secrets).await;
        let (status, output) = sqlgate.stop().await;
        assert_eq!(status.code(), Some(0), "{output:?}");
        assert!(output.iter().any(|line| line.contains("sqlgate serving")));
        // A wrong one: start-up fails with the database's reason, no password.
        let url = format!("mysql://{user}:{wrong}@{host}/{database}");
        let (status, failed) = start_failing(&url).await;
        assert_eq!(status.code(), Some(1), "{failed:?}");
        assert!(
            failed.iter().any(|line| line.contains("Access denied")),
            "{failed:?}"
        );
        for secret in secrets {
            assert_absent(secret, &output, "a password");
            assert_absent(secret, &failed, "a password");
        }
    }
    drop(accounts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_a_refused_privilege_is_permission_denied() {
    let Some(app) = spawn_app(Backend::MySql).await else {
        return;
    };
    let admin_url = app.db.url.clone();
    let _database = app.stop().await;
    let (host, database) = host_and_database(&admin_url);
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let (user, password) = (format!("sg_ro_{}", &tag[..12]), format!("Pw{}", &tag[..12]));
    let mut admin = sqlx::MySqlConnection::connect(&admin_url)
        .await
        .expect("admin connection");
    admin
        .execute("CREATE TABLE t (id INTEGER)")
        .await
        .expect("create");
    admin
        .execute("INSERT INTO t VALUES (1)")
        .await
        .expect("insert");
    // An account that may read the test's database and nothing more.
    let _accounts = Accounts::create(
        &mut admin,
        &admin_url,
        (&user, &password),
        "SELECT",
        &database,
    )
    .await;
    let url = format!("mysql://{user}:{password}@{host}/{database}");
    let address = free_address();
    let mut sqlgate = Sqlgate::start(
        &["--listen", &address.to_string(), "--database-url", &url],
        &[],
    );
    sqlgate.wait_listening(address).await;
    let mut query = QueryClient::new(channel(address).await);
    let read = query
        .execute(pb::ExecuteRequest {
            sql: "SELECT id FROM t".into(),
            ..Default::default()
        })
        .await
        .expect("reading is granted");
    assert_eq!(read.into_inner().rows.len(), 1);
    let status = query
        .execute(pb::ExecuteRequest {
            sql: "INSERT INTO t VALUES (2)".into(),
            ..Default::default()
        })
        .await
        .expect_err("writing is not granted");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(
        crate::helpers::error_details(&status)
            .1
            .get("sqlstate")
            .map(String::as_str),
        Some("42000"),
        "{status:?}"
    );
    let (stopped, output) = sqlgate.stop().await;
    assert!(stopped.success(), "{output:?}");
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
        .fetch_one(&mut admin)
        .await
        .expect("count");
    assert_eq!(count, 1, "nothing was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_superuser_database_user_is_warned_about_once_at_start_up() {
    let Some(app) = spawn_app(Backend::Postgres).await else {
        return;
    };
    // The suite connects as `postgres`, a superuser.
    let url = app.db.url.clone();
    let (sqlgate, _address) = Sqlgate::serving(&url, &[]).await;
    let (status, output) = sqlgate.stop().await;
    assert_eq!(status.code(), Some(0), "{output:?}");
    let warnings: Vec<_> = output
        .iter()
        .filter(|line| line.contains("is a superuser"))
        .collect();
    assert_eq!(warnings.len(), 1, "{output:?}");
    assert!(warnings[0].contains("WARN"), "{warnings:?}");
    app.stop().await;
}
