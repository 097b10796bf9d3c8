//! Database servers a test owns: a PostgreSQL cluster (`initdb` + `pg_ctl`
//! from the installed PostgreSQL) and a MariaDB instance
//! (`mariadb-install-db` + `mariadbd`), each in a temporary directory on a
//! free port, so that a test may reconfigure, restart or kill them without
//! touching the machine's shared servers. Both are stopped and removed on
//! drop.
//!
//! Where the server binaries are missing the start functions return `None`
//! after a loud `SKIPPING` line — and fail under `CI=true`.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{binary::free_address, test_database::running_in_ci};

/// The newest PostgreSQL server binaries installed, if any.
fn postgres_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// Whether this process runs as root (PostgreSQL's tools then run as the
/// `postgres` user: the server refuses to run as root).
pub fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|meta| meta.uid() == 0)
}

/// Gives `path` (and all below it) to OS user `user`, when root.
pub fn owned_by(user: &str, path: &Path) {
    if running_as_root() {
        let status = Command::new("chown")
            .args(["-R", &format!("{user}:{user}")])
            .arg(path)
            .status()
            .expect("chown");
        assert!(status.success());
    }
}

/// Runs PostgreSQL tool `tool` of `bin` with `args` (as `postgres` when
/// root); panics with its output if it fails.
fn pg_tool(bin: &Path, tool: &str, args: &[&str]) {
    let program = bin.join(tool);
    let mut command = if running_as_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(&program);
        command
    } else {
        Command::new(&program)
    };
    let output = command.args(args).output().expect("run a PostgreSQL tool");
    assert!(
        output.status.success(),
        "{tool} {args:?}: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Says loudly that a test is skipped for want of `what`; fails in CI.
fn skip_without(what: &str) {
    assert!(!running_in_ci(), "{what} is missing in CI (CI is set)");
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "\n!!!!! SKIPPING: {what} is missing; a test-owned server cannot start. !!!!!\n"
    );
}

/// A PostgreSQL cluster of the test's own: trust authentication for
/// `postgres` over TCP on 127.0.0.1 and over a socket in its directory,
/// `fsync` off.
pub struct OwnedPostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

impl OwnedPostgres {
    /// Starts a cluster after `configure` has adjusted its data directory
    /// (written files, appended to `postgresql.conf`, replaced
    /// `pg_hba.conf`) between `initdb` and the first start.
    pub async fn start_with(configure: impl FnOnce(&Path) + Send + 'static) -> Option<Self> {
        let Some(bin) = postgres_bin() else {
            skip_without("PostgreSQL's initdb (/usr/lib/postgresql/*/bin)");
            return None;
        };
        let port = free_address().port();
        tokio::task::spawn_blocking(move || Self::create(bin, port, configure))
            .await
            .expect("cluster set-up")
            .into()
    }

    fn create(bin: PathBuf, port: u16, configure: impl FnOnce(&Path)) -> Self {
        let dir = tempfile::tempdir().expect("dir");
        let cluster = Self { dir, bin, port };
        owned_by("postgres", cluster.dir());
        let data = cluster.data();
        pg_tool(
            &cluster.bin,
            "initdb",
            &[
                "-D",
                data.to_str().expect("path"),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        let mut conf = std::fs::read_to_string(data.join("postgresql.conf")).expect("conf");
        conf.push_str(&format!(
            "\nport = {port}\nlisten_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\n\
             fsync = off\nshared_buffers = 16MB\n",
            cluster.dir().display()
        ));
        std::fs::write(data.join("postgresql.conf"), conf).expect("conf");
        configure(&data);
        owned_by("postgres", cluster.dir());
        cluster.pg_ctl(&["-w", "-t", "60", "start"]);
        cluster
    }

    /// `pg_ctl -D DATA -l LOG ARGS` (the log given every time: without it
    /// the server would inherit and hold this process's pipes).
    fn pg_ctl(&self, args: &[&str]) {
        let data = self.data();
        let log = self.dir().join("server.log");
        let mut all = vec![
            "-D",
            data.to_str().expect("path"),
            "-l",
            log.to_str().expect("path"),
        ];
        all.extend_from_slice(args);
        pg_tool(&self.bin, "pg_ctl", &all);
    }

    /// The cluster's directory (its data directory is `data` inside).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The data directory.
    pub fn data(&self) -> PathBuf {
        self.dir().join("data")
    }

    /// The TCP port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL of the cluster's `postgres` database at `host`, with `params`.
    pub fn url(&self, host: &str, params: &str) -> String {
        format!("postgres://postgres@{host}:{}/postgres?{params}", self.port)
    }

    /// A URL of database `name` on 127.0.0.1.
    pub fn database_url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// `pg_ctl restart -m MODE` (`fast`: connections are told and the
    /// server shuts down cleanly; `immediate`: it quits at once and
    /// recovers from its WAL on start), waited for until it accepts
    /// connections again.
    pub async fn restart(&self, mode: &str) {
        let this = (self.bin.clone(), self.dir().to_owned(), mode.to_owned());
        tokio::task::spawn_blocking(move || {
            let (bin, dir, mode) = this;
            let data = dir.join("data");
            let log = dir.join("server.log");
            pg_tool(
                &bin,
                "pg_ctl",
                &[
                    "-D",
                    data.to_str().expect("path"),
                    "-l",
                    log.to_str().expect("path"),
                    "-m",
                    &mode,
                    "-w",
                    "-t",
                    "60",
                    "restart",
                ],
            );
        })
        .await
        .expect("pg_ctl restart");
    }
}

impl Drop for OwnedPostgres {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| self.pg_ctl(&["-m", "immediate", "-w", "stop"]));
    }
}

/// A MariaDB server of the test's own: `root` without a password over TCP
/// on 127.0.0.1 and over a socket in its directory. This very process is
/// the server (`mariadbd` drops to `mysql` itself), so killing it kills the
/// server.
pub struct OwnedMariaDb {
    dir: tempfile::TempDir,
    server: Option<Child>,
    port: u16,
    extra: Vec<String>,
}

impl OwnedMariaDb {
    /// Starts a plain server; `None` (loudly, never in CI) where MariaDB's
    /// server binaries are missing.
    pub async fn start() -> Option<Self> {
        Self::start_with(|_| Vec::new()).await
    }

    /// Starts a server with the `mariadbd` options `prepare` returns, after
    /// it has written what they need into the server's directory.
    pub async fn start_with(
        prepare: impl FnOnce(&Path) -> Vec<String> + Send + 'static,
    ) -> Option<Self> {
        let binaries = [
            Path::new("/usr/bin/mariadb-install-db"),
            Path::new("/usr/sbin/mariadbd"),
        ];
        if binaries.iter().any(|binary| !binary.exists()) {
            skip_without("MariaDB's mariadb-install-db / mariadbd");
            return None;
        }
        let port = free_address().port();
        let mut mariadb = tokio::task::spawn_blocking(move || Self::create(port, prepare))
            .await
            .expect("server set-up");
        mariadb.start_again().await;
        Some(mariadb)
    }

    fn create(port: u16, prepare: impl FnOnce(&Path) -> Vec<String>) -> Self {
        let dir = tempfile::tempdir().expect("dir");
        let extra = prepare(dir.path());
        owned_by("mysql", dir.path());
        let mariadb = Self {
            dir,
            server: None,
            port,
            extra,
        };
        let user = running_as_root().then_some("--user=mysql");
        let output = Command::new("mariadb-install-db")
            .args([
                "--no-defaults",
                &format!("--datadir={}", mariadb.path("data")),
            ])
            .args(user)
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            .output()
            .expect("mariadb-install-db");
        assert!(
            output.status.success(),
            "mariadb-install-db: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        mariadb
    }

    fn path(&self, name: &str) -> String {
        self.dir
            .path()
            .join(name)
            .to_str()
            .expect("path")
            .to_owned()
    }

    /// The server's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The TCP port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL of the server's `mysql` database at `host`, with `params`.
    pub fn url(&self, host: &str, params: &str) -> String {
        format!("mysql://root@{host}:{}/mysql?{params}", self.port)
    }

    /// A URL of database `name` on 127.0.0.1.
    pub fn database_url(&self, name: &str) -> String {
        format!("mysql://root@127.0.0.1:{}/{name}", self.port)
    }

    /// A URL over the server's socket (which `require_secure_transport`
    /// counts as secure), for the test's own administration.
    pub fn socket_url(&self) -> String {
        format!(
            "mysql://root@localhost/mysql?socket={}",
            self.path("mysqld.sock")
        )
    }

    /// Starts `mariadbd` (again, after [`OwnedMariaDb::kill`]) and waits
    /// (up to 60 s) until it accepts connections.
    pub async fn start_again(&mut self) {
        assert!(self.server.is_none(), "the server is running");
        let user = running_as_root().then_some("--user=mysql");
        let server = Command::new("/usr/sbin/mariadbd")
            .arg("--no-defaults")
            .args(user)
            .args([
                format!("--datadir={}", self.path("data")),
                format!("--port={}", self.port),
                "--bind-address=127.0.0.1".to_owned(),
                format!("--socket={}", self.path("mysqld.sock")),
                format!("--pid-file={}", self.path("mysqld.pid")),
                format!("--log-error={}", self.path("error.log")),
                "--skip-log-bin".to_owned(),
                "--innodb-buffer-pool-size=16M".to_owned(),
            ])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mariadbd");
        self.server = Some(server);
        let url = self.socket_url();
        let started = Instant::now();
        loop {
            use sqlx::Connection;
            match sqlx::MySqlConnection::connect(&url).await {
                Ok(conn) => {
                    let _ = conn.close().await;
                    return;
                }
                Err(err) => assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "MariaDB did not start within 60 s: {err}\n{}",
                    self.log()
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL: the server dies at once, as on a crash or an OOM kill, and
    /// recovers from its redo log when started again.
    pub async fn kill(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = server.kill();
            tokio::task::spawn_blocking(move || server.wait())
                .await
                .expect("wait")
                .expect("mariadbd reaped");
        }
    }

    /// The server's error log so far, for a failure message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir().join("error.log")).unwrap_or_default()
    }
}

impl Drop for OwnedMariaDb {
    fn drop(&mut self) {
        // SIGTERM: a clean shutdown, waited for, before the files go.
        if let Some(mut server) = self.server.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &server.id().to_string()])
                .status();
            let _ = server.wait();
        }
    }
}
