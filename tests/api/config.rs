//! Configuration with the real binary: a TOML file, `SQLGATE_*` variables
//! over it, flags over those, each proven by what a caller observes (where
//! it listens, how many rows it allows); and a bad setting that stops
//! start-up with one line naming it.

use std::{net::SocketAddr, time::Duration};

use sqlgate::grpc::pb::{self, query_client::QueryClient};
use tonic::Code;

use crate::{
    binary::{Sqlgate, channel, free_address},
    helpers::error_details,
};

/// `SELECT id FROM t WHERE id <= rows` with `max_rows`.
async fn select(
    address: SocketAddr,
    rows: i64,
    max_rows: u32,
) -> Result<pb::ExecuteResponse, tonic::Status> {
    QueryClient::new(channel(address).await)
        .execute(pb::ExecuteRequest {
            sql: format!("SELECT id FROM t WHERE id <= {rows}"),
            params: vec![],
            max_rows,
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Checks the row settings in force at `address`: `default_max_rows` rows
/// come back with max_rows 0 (one more is refused), and `max_rows_limit`
/// is the largest max_rows accepted.
async fn assert_row_limits(address: SocketAddr, default_max_rows: u32, max_rows_limit: u32) {
    let rows = select(address, i64::from(default_max_rows), 0)
        .await
        .expect("default_max_rows rows");
    assert_eq!(rows.rows.len(), default_max_rows as usize);
    let status = select(address, i64::from(default_max_rows) + 1, 0)
        .await
        .expect_err("one row over default_max_rows");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let rows = select(address, i64::from(max_rows_limit), max_rows_limit)
        .await
        .expect("max_rows at the limit");
    assert_eq!(rows.rows.len(), max_rows_limit as usize);
    let status = select(address, 1, max_rows_limit + 1)
        .await
        .expect_err("max_rows over the limit");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(error_details(&status).2, ["max_rows"]);
    assert!(
        status
            .message()
            .contains(&format!("limit of {max_rows_limit}")),
        "{}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_file_env_and_flags_layer_in_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("app.db").display());
    let other_url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("other.db").display()
    );
    let (from_file, from_env, from_flag) = (free_address(), free_address(), free_address());
    let config = dir.path().join("sqlgate.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{from_file}\"\ndatabase_url = \"{url}\"\n\n\
             [limits]\nmax_rows_limit = 10\ndefault_max_rows = 5\n"
        ),
    )
    .expect("write config");
    let config = config.display().to_string();

    // The file alone: its address, its row limits.
    let mut sqlgate = Sqlgate::start(&["--config", &config], &[]);
    sqlgate.wait_listening(from_file).await;
    let mut query = QueryClient::new(channel(from_file).await);
    query
        .execute(pb::ExecuteRequest {
            sql: "CREATE TABLE t (id INTEGER PRIMARY KEY)".into(),
            ..Default::default()
        })
        .await
        .expect("create");
    query
        .execute(pb::ExecuteRequest {
            sql: "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 30) \
                  INSERT INTO t (id) SELECT n FROM s"
                .into(),
            ..Default::default()
        })
        .await
        .expect("fill");
    assert_row_limits(from_file, 5, 10).await;
    let (status, output) = sqlgate.stop().await;
    assert_eq!(status.code(), Some(0), "{output:?}");

    // SQLGATE_* over the file: the variable's address and row limit; the
    // file's default_max_rows still holds.
    let env = [
        ("SQLGATE_LISTEN", from_env.to_string()),
        ("SQLGATE_LIMITS__MAX_ROWS_LIMIT", "20".to_owned()),
        ("SQLGATE_DATABASE_URL", other_url.clone()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut sqlgate = Sqlgate::start(&["--config", &config], &env);
    sqlgate.wait_listening(from_env).await;
    // SQLGATE_DATABASE_URL won too: the other (empty) database has no t.
    let status = select(from_env, 1, 0).await.expect_err("no table t there");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let (status, output) = sqlgate.stop().await;
    assert_eq!(status.code(), Some(0), "{output:?}");

    // Flags over both: the flag's address and database.
    let mut sqlgate = Sqlgate::start(
        &[
            "--config",
            &config,
            "--listen",
            &from_flag.to_string(),
            "--database-url",
            &url,
        ],
        &env,
    );
    sqlgate.wait_listening(from_flag).await;
    // The flag's database (with t), the variable's max_rows_limit, the file's default.
    assert_row_limits(from_flag, 5, 20).await;
    let (status, output) = sqlgate.stop().await;
    assert_eq!(status.code(), Some(0), "{output:?}");
}

/// The example of a refused setting in the README's Configuration section.
fn readme_example() -> String {
    let readme = include_str!("../../README.md");
    let example = readme
        .lines()
        .find(|line| line.starts_with("sqlgate: invalid setting"))
        .expect("the README shows a refused setting");
    example.to_owned()
}

/// Arguments, environment, and the one line expected on stderr.
type RefusedCase<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, String);

/// Starts the binary with a bad setting; returns what it wrote.
async fn refused(args: &[&str], env: &[(&str, &str)]) -> Vec<String> {
    let sqlgate = Sqlgate::start(args, env);
    let (status, output) = sqlgate.exited(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(2), "{args:?} {env:?}: {output:?}");
    output
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_setting_stops_start_up_with_one_line_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let address = free_address();
    let listen = address.to_string();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("app.db").display());
    let base = ["--listen", listen.as_str(), "--database-url", url.as_str()];
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write config");
        path.display().to_string()
    };
    let bad_type = file("bad_type.toml", "[pool]\nmax_connections = \"zero\"\n");
    let bad_value = file("bad_value.toml", "[pool]\nmax_connections = 0\n");
    let unknown = file("unknown.toml", "[pool]\nmax_conections = 3\n");
    let missing = dir.path().join("missing.toml").display().to_string();

    let cases: Vec<RefusedCase<'_>> = vec![
        // The README's own example, word for word.
        (
            base.to_vec(),
            vec![("SQLGATE_POOL__MAX_CONNECTIONS", "zero")],
            readme_example(),
        ),
        (
            [&base[..], &["--config", &bad_type]].concat(),
            vec![],
            "sqlgate: invalid setting `pool.max_connections`: invalid type: found string \"zero\", expected u32 (from TOML file)".to_owned(),
        ),
        (
            [&base[..], &["--config", &bad_value]].concat(),
            vec![],
            "sqlgate: invalid setting `pool.max_connections`: must be at least 1".to_owned(),
        ),
        (
            base.to_vec(),
            vec![("SQLGATE_LIMITS__DEFAULT_MAX_ROWS", "200001")],
            "sqlgate: invalid setting `limits.default_max_rows`: must not exceed limits.max_rows_limit".to_owned(),
        ),
        (
            [&base[..], &["--config", &unknown]].concat(),
            vec![],
            "sqlgate: invalid setting `pool.max_conections`: unknown field: found `max_conections`, \
             expected `one of `max_connections`, `min_connections`, `acquire_timeout`, \
             `idle_timeout`, `max_lifetime`, `statement_cache_capacity`, \
             `max_cached_statement_bytes`` (from TOML file)"
                .to_owned(),
        ),
        (
            [&base[..], &["--config", &missing]].concat(),
            vec![],
            format!("sqlgate: invalid setting --config: file {missing} does not exist"),
        ),
    ];
    for (args, env, expected) in cases {
        let output = refused(&args, &env).await;
        assert_eq!(
            output.len(),
            1,
            "{args:?} {env:?}: one line, got {output:?}"
        );
        let line = output[0]
            .strip_prefix("stderr: ")
            .unwrap_or_else(|| panic!("the line goes to stderr: {output:?}"));
        assert_eq!(line, expected, "{args:?} {env:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_variables_that_name_no_setting_do_not_stop_start_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let address = free_address();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("app.db").display());
    // What Kubernetes injects for a Service named `sqlgate`, and the tests' own variable.
    let mut sqlgate = Sqlgate::start(
        &[],
        &[
            ("SQLGATE_LISTEN", &address.to_string()),
            ("SQLGATE_DATABASE_URL", &url),
            ("SQLGATE_PORT", "tcp://10.0.0.1:50051"),
            ("SQLGATE_PORT_50051_TCP_ADDR", "10.0.0.1"),
            ("SQLGATE_SERVICE_HOST", "10.0.0.1"),
            ("SQLGATE_SERVICE_PORT", "50051"),
            ("SQLGATE_TEST_POSTGRES_URL", "postgres://elsewhere/postgres"),
        ],
    );
    sqlgate.wait_listening(address).await;
    let rows = QueryClient::new(channel(address).await)
        .execute(pb::ExecuteRequest {
            sql: "SELECT 1".into(),
            ..Default::default()
        })
        .await
        .expect("serves")
        .into_inner()
        .rows;
    assert_eq!(rows.len(), 1);
    let (status, output) = sqlgate.stop().await;
    assert_eq!(status.code(), Some(0), "{output:?}");

    // A misspelt key inside a known section is still refused.
    let output = refused(
        &["--listen", &address.to_string(), "--database-url", &url],
        &[("SQLGATE_POOL__MAX_CONECTIONS", "3")],
    )
    .await;
    assert_eq!(output.len(), 1, "{output:?}");
    assert!(
        output[0]
            .starts_with("stderr: sqlgate: invalid setting `pool.max_conections`: unknown field"),
        "{output:?}"
    );
}

/// Runs `sql` on the sqlgate at `address`.
async fn run_on(address: SocketAddr, sql: &str) -> pb::ExecuteResponse {
    QueryClient::new(channel(address).await)
        .execute(pb::ExecuteRequest {
            sql: sql.to_owned(),
            params: vec![],
            max_rows: 0,
        })
        .await
        .unwrap_or_else(|status| panic!("{sql}: {status:?}"))
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_serve_with_no_database_setting_keeps_its_data_in_the_working_directory() {
    // The README's first command: no database URL, no setup. (Only the
    // listen address is given: the default port may be taken here.)
    let dir = tempfile::tempdir().expect("temp dir");
    let address = free_address();
    let listen = address.to_string();
    let mut sqlgate = Sqlgate::start_in(Some(dir.path()), &["--listen", &listen], &[]);
    sqlgate.wait_listening(address).await;
    run_on(
        address,
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)",
    )
    .await;
    run_on(address, "INSERT INTO notes (id, body) VALUES (1, 'hello')").await;
    let (status, output) = sqlgate.stop().await;
    assert!(status.success(), "{status}: {output:?}");
    assert!(
        dir.path().join("sqlgate.db").is_file(),
        "./sqlgate.db created"
    );

    // Started again in the same place, the data is still there.
    let mut sqlgate = Sqlgate::start_in(Some(dir.path()), &["--listen", &listen], &[]);
    sqlgate.wait_listening(address).await;
    let rows = run_on(address, "SELECT body FROM notes").await.rows;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].values[0].kind,
        Some(pb::value::Kind::TextValue("hello".into()))
    );
    let (status, output) = sqlgate.stop().await;
    assert!(status.success(), "{status}: {output:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_address_without_tls_or_authentication_needs_insecure() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("app.db").display());
    // Every address of the machine, not only loopback; a port of its own
    // for each start, so that no start meets the one before it.
    let on_every_address = || {
        let port = free_address().port();
        let loopback: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
        (format!("0.0.0.0:{port}"), loopback)
    };
    let args = |listen: &str| {
        vec![
            "--listen".to_owned(),
            listen.to_owned(),
            "--database-url".to_owned(),
            url.clone(),
        ]
    };

    let (listen, _) = on_every_address();
    let base = args(&listen);
    let base: Vec<&str> = base.iter().map(String::as_str).collect();
    let output = refused(&base, &[]).await;
    let lines: Vec<_> = output
        .iter()
        .filter(|line| line.contains("refusing to start"))
        .collect();
    assert_eq!(lines.len(), 1, "{output:?}");
    for part in ["0.0.0.0", "[tls]", "[auth]", "--insecure"] {
        assert!(lines[0].contains(part), "{part:?} missing: {output:?}");
    }

    // With --insecure it serves, and says so once, loudly.
    let (listen, address) = on_every_address();
    let mut insecure = args(&listen);
    insecure.push("--insecure".to_owned());
    let insecure: Vec<&str> = insecure.iter().map(String::as_str).collect();
    let mut sqlgate = Sqlgate::start(&insecure, &[]);
    sqlgate.wait_listening(address).await;
    let (status, output) = sqlgate.stop().await;
    assert_eq!(status.code(), Some(0), "{output:?}");
    let warnings = output
        .iter()
        .filter(|line| line.contains("INSECURE"))
        .count();
    assert_eq!(warnings, 1, "{output:?}");

    // A token configured: served without --insecure.
    let (listen, address) = on_every_address();
    let with_token = args(&listen);
    let with_token: Vec<&str> = with_token.iter().map(String::as_str).collect();
    let hash = "0".repeat(64);
    let mut sqlgate = Sqlgate::start(
        &with_token,
        &[("SQLGATE_AUTH__TOKENS", &format!("billing:writer:{hash}"))],
    );
    sqlgate.wait_listening(address).await;
    let (status, output) = sqlgate.stop().await;
    assert_eq!(status.code(), Some(0), "{output:?}");
    assert!(
        !output.iter().any(|line| line.contains("INSECURE")),
        "{output:?}"
    );
}
