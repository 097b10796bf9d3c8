//! The real `sqlgate` binary as a child process, with everything it writes
//! to stdout and stderr captured for the test to read.

use std::{
    net::SocketAddr,
    process::{ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tonic::transport::Channel;

/// A running (or exited) `sqlgate serve`.
pub struct Sqlgate {
    child: tokio::process::Child,
    output: Arc<Mutex<Vec<String>>>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

/// A free port on the loopback interface.
pub fn free_address() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
}

fn capture(
    stream: impl AsyncRead + Unpin + Send + 'static,
    tag: &'static str,
    output: Arc<Mutex<Vec<String>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            output.lock().expect("output").push(format!("{tag}{line}"));
        }
    })
}

impl Sqlgate {
    /// Starts `sqlgate serve ARGS` with `envs` and no other `SQLGATE_*` or
    /// `OTEL_*` variable of this process, and no shutdown delay unless `envs`
    /// set `SQLGATE_SHUTDOWN__DELAY` (tests stop their server at once). Logs
    /// are text lines unless `envs` says otherwise (`SQLGATE_LOG__FORMAT`;
    /// empty: unset, so that sqlgate picks the format itself).
    pub fn start(args: &[&str], envs: &[(&str, &str)]) -> Self {
        Self::start_in(None, args, envs)
    }

    /// Starts `sqlgate serve` on a free loopback port over `database_url`,
    /// with `envs`, and waits until it listens; returns it and its address.
    pub async fn serving(database_url: &str, envs: &[(&str, &str)]) -> (Self, SocketAddr) {
        let address = free_address();
        let listen = address.to_string();
        let mut sqlgate = Self::start(&["--listen", &listen, "--database-url", database_url], envs);
        sqlgate.wait_listening(address).await;
        (sqlgate, address)
    }

    /// [`Sqlgate::start`] in working directory `dir` (the test's own by
    /// default).
    pub fn start_in(dir: Option<&std::path::Path>, args: &[&str], envs: &[(&str, &str)]) -> Self {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_sqlgate"));
        command.arg("serve").args(args);
        if let Some(dir) = dir {
            command.current_dir(dir);
        }
        for (key, _) in std::env::vars() {
            if key.starts_with("SQLGATE_") || key.starts_with("OTEL_") {
                command.env_remove(key);
            }
        }
        command.env("SQLGATE_LOG__FORMAT", "text");
        command.env("SQLGATE_SHUTDOWN__DELAY", "0s");
        for (key, value) in envs {
            if value.is_empty() && *key == "SQLGATE_LOG__FORMAT" {
                command.env_remove(key);
            } else {
                command.env(key, value);
            }
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("sqlgate binary");
        let output = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            capture(
                child.stdout.take().expect("stdout"),
                "stdout: ",
                output.clone(),
            ),
            capture(
                child.stderr.take().expect("stderr"),
                "stderr: ",
                output.clone(),
            ),
        ];
        Self {
            child,
            output,
            readers,
        }
    }

    /// Waits (up to 10 s) until `address` accepts connections.
    pub async fn wait_listening(&mut self, address: SocketAddr) {
        let started = Instant::now();
        loop {
            if tokio::net::TcpStream::connect(address).await.is_ok() {
                return;
            }
            if let Some(status) = self.try_wait() {
                panic!(
                    "sqlgate exited ({status}) instead of listening on {address}:\n{}",
                    self.output().join("\n")
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "sqlgate did not listen on {address} within 10 s:\n{}",
                self.output().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Everything written so far, one entry per line (`stdout: …`/`stderr: …`).
    pub fn output(&self) -> Vec<String> {
        self.output.lock().expect("output").clone()
    }

    /// Waits (up to `within`) for the process to exit by itself; its exit
    /// status and every line it wrote.
    pub async fn exited(mut self, within: Duration) -> (ExitStatus, Vec<String>) {
        let status = tokio::time::timeout(within, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("sqlgate still running after {within:?}"))
            .expect("wait");
        for reader in self.readers.drain(..) {
            tokio::time::timeout(Duration::from_secs(5), reader)
                .await
                .expect("output read to its end")
                .expect("reader");
        }
        let output = self.output();
        (status, output)
    }

    /// Sends signal `name` (`TERM`, `INT`…) and returns at once.
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().expect("running").to_string();
        let sent = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .expect("kill");
        assert!(sent.success());
    }

    /// The process id, for what the test reads of it under `/proc`.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// The exit status if the process has exited by now, without waiting.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// SIGTERM, then [`Sqlgate::exited`].
    pub async fn stop(self) -> (ExitStatus, Vec<String>) {
        self.signal("TERM");
        self.exited(Duration::from_secs(15)).await
    }
}

/// A channel to a sqlgate at `address`.
pub async fn channel(address: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{address}"))
        .expect("uri")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect to sqlgate")
}
