//! Unix domain sockets: sqlgate reaching PostgreSQL over its Unix socket,
//! as a database URL with `host=/socket/directory` asks (a database on the
//! same host or in the same pod: no TCP, no TLS handshake).

use sqlgate::grpc::pb::value::Kind;

use crate::{
    helpers::{Backend, spawn_app_with, v},
    test_database::host_and_database,
};

/// Where Debian's PostgreSQL puts its socket; `SQLGATE_TEST_POSTGRES_SOCKET_DIR`
/// names another.
fn postgres_socket_dir() -> String {
    std::env::var("SQLGATE_TEST_POSTGRES_SOCKET_DIR")
        .unwrap_or_else(|_| "/var/run/postgresql".to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_its_unix_socket() {
    let dir = postgres_socket_dir();
    if !std::path::Path::new(&dir).join(".s.PGSQL.5432").exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "no PostgreSQL socket in {dir} (set SQLGATE_TEST_POSTGRES_SOCKET_DIR)"
        );
        eprintln!("SKIPPED: no PostgreSQL socket in {dir}");
        return;
    }
    let Some(app) = spawn_app_with(Backend::Postgres, |settings| {
        let (_, database) = host_and_database(&settings.database_url);
        settings.database_url = format!("postgres:///{database}?host={dir}&user=postgres");
    })
    .await
    else {
        return;
    };
    app.run("CREATE TABLE t (id INTEGER PRIMARY KEY)").await;
    app.execute("INSERT INTO t VALUES ($1)", vec![v::int(1)])
        .await
        .expect("insert");
    assert_eq!(app.count("t").await, 1);
    // PostgreSQL shows a Unix-socket client with port -1 (and no address).
    let seen = app
        .run("SELECT client_port FROM pg_stat_activity WHERE pid = pg_backend_pid()")
        .await;
    assert_eq!(seen.rows[0].values[0].kind, Some(Kind::IntValue(-1)));
    app.stop().await;
}
