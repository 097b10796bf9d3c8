//! The Unix socket columns of the point selects, run in the same rounds as
//! the other sides:
//!
//! - sqlgate listening on a Unix socket (a sidecar: the caller in the same
//!   pod), PostgreSQL reached over TCP as by the main sqlgate side; set
//!   against the direct client (and the main, TCP, sqlgate side);
//! - sqlgate (on TCP) and the direct client both reaching PostgreSQL over
//!   its Unix socket (`host=/var/run/postgresql`), set against each other.
//!
//! Two more sqlgate processes and one more pool would hold 48 more
//! PostgreSQL connections for the whole run; these keep none while idle
//! (no minimum, a 1 s idle timeout), so that the run stays under
//! PostgreSQL's default 100 connections, and each of their runs is
//! preceded by a short warm-up (see `measure`).

use std::path::{Path, PathBuf};

use sqlx::{PgPool, postgres::PgPoolOptions};
use tonic::transport::Channel;

use crate::{
    Args, BoxError,
    setup::{connect_when_up, connections, spawn_sqlgate},
};

/// How long an idle connection of the Unix sides' pools is kept.
const IDLE: &str = "1s";

/// One more sqlgate process and the connections to it.
pub(crate) struct Server {
    pub(crate) child: tokio::process::Child,
    pub(crate) channels: Vec<Channel>,
}

/// PostgreSQL over its Unix socket: sqlgate's side and the direct client's.
pub(crate) struct OverPostgresSocket {
    pub(crate) sqlgate: Server,
    pub(crate) direct: PgPool,
}

/// The processes and pools of the Unix socket columns; each `None` when it
/// is not run (another workload only, or no PostgreSQL socket).
#[derive(Default)]
pub(crate) struct UnixSides {
    /// sqlgate listening on a Unix socket.
    pub(crate) listening: Option<Server>,
    /// Both sides over PostgreSQL's socket.
    pub(crate) postgres: Option<OverPostgresSocket>,
    /// The directory of sqlgate's socket, removed at the end.
    dir: Option<PathBuf>,
}

impl UnixSides {
    /// Starts the sides: sqlgate on a socket in a fresh directory over
    /// `url`, and, when `--postgres-socket-dir` holds PostgreSQL's socket,
    /// a sqlgate and a pool over it.
    pub(crate) async fn start(args: &Args, url: &str, pool_size: u32) -> Result<Self, BoxError> {
        let dir = std::env::temp_dir().join(format!("sqlgate-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let listen = format!("unix:{}", dir.join("sqlgate.sock").display());
        let idle = [
            ("SQLGATE_POOL__MIN_CONNECTIONS", "0"),
            ("SQLGATE_POOL__IDLE_TIMEOUT", IDLE),
        ];
        let child = spawn_sqlgate(&listen, url, pool_size, &idle)?;
        connect_when_up(&listen, "sqlgate on a Unix socket").await?;
        let listening = Some(Server {
            child,
            channels: connections(&listen).await?,
        });
        let postgres = match socket_url(url, &args.postgres_socket_dir) {
            Some(socket_url) => {
                let address = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
                let child = spawn_sqlgate(&address.to_string(), &socket_url, pool_size, &idle)?;
                connect_when_up(&address.to_string(), "sqlgate over PostgreSQL's socket").await?;
                let sqlgate = Server {
                    child,
                    channels: connections(&address.to_string()).await?,
                };
                let direct = PgPoolOptions::new()
                    .max_connections(pool_size)
                    .min_connections(0)
                    .idle_timeout(Some(std::time::Duration::from_secs(1)))
                    .test_before_acquire(false)
                    .connect_lazy(&format!("{socket_url}&application_name=sqlgate-bench"))?;
                Some(OverPostgresSocket { sqlgate, direct })
            }
            None => {
                eprintln!(
                    "no PostgreSQL socket in {}: the columns over it are left out \
                     (--postgres-socket-dir names another directory)",
                    args.postgres_socket_dir.display()
                );
                None
            }
        };
        Ok(Self {
            listening,
            postgres,
            dir: Some(dir),
        })
    }

    /// Stops the processes and removes the socket's directory.
    pub(crate) async fn stop(self) {
        let children = [
            self.listening.map(|server| server.child),
            self.postgres.map(|sides| sides.sqlgate.child),
        ];
        for mut child in children.into_iter().flatten() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        if let Some(dir) = self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// `url` (`postgres://user@host:port/db`) rewritten to reach the same
/// database over the socket in `dir`
/// (`postgres:///db?host=DIR&port=PORT&user=USER`), when that socket exists.
fn socket_url(url: &str, dir: &Path) -> Option<String> {
    let rest = url.strip_prefix("postgres://")?;
    let (authority, database) = rest.split_once('/')?;
    let database = database.split('?').next().unwrap_or(database);
    let (user, host) = authority
        .rsplit_once('@')
        .unwrap_or(("postgres", authority));
    let port = host.rsplit_once(':').map_or("5432", |(_, port)| port);
    let credentials = match user.split_once(':') {
        Some((user, password)) => format!("user={user}&password={password}"),
        None => format!("user={user}"),
    };
    dir.join(format!(".s.PGSQL.{port}")).exists().then(|| {
        format!(
            "postgres:///{database}?host={}&port={port}&{credentials}",
            dir.display()
        )
    })
}
