//! The listening socket: TCP, or a Unix domain socket for a sidecar (the
//! caller and sqlgate in one pod, the socket on a shared volume).
//!
//! A Unix socket's file outlives a process that crashed, so at start-up a
//! file that is a socket nobody answers on is replaced; one that another
//! process still listens on is refused ("in use"), and so is a path that is
//! not a socket at all (never deleted: it may be someone's data). The file
//! gets `listen_mode` as its mode (connecting needs write permission on
//! it), and is removed when the listener closes, unless another process
//! has put its own socket there meanwhile.

use std::{
    io,
    net::SocketAddr,
    os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio_util::either::Either;

use crate::{
    config::{ListenAddress, SocketMode},
    grpc::Peer,
};

/// An accepted client connection, TCP or Unix.
pub(crate) type ClientStream = Either<TcpStream, UnixStream>;

/// How long the start-up check waits for a socket's owner to answer before
/// calling it in use.
const IN_USE_PROBE: Duration = Duration::from_secs(1);

/// A bound listener.
#[derive(Debug)]
pub(crate) enum Listener {
    /// On a TCP address.
    Tcp(TcpListener),
    /// On a Unix socket, whose file goes when this does.
    Unix(UnixListener, SocketFile),
}

impl Listener {
    /// Binds `address`; a Unix socket's file gets `mode`. Errors are one
    /// line naming the address and what to do.
    pub(crate) async fn bind(address: &ListenAddress, mode: SocketMode) -> Result<Self, String> {
        match address {
            ListenAddress::Tcp(address) => TcpListener::bind(address)
                .await
                .map(Self::Tcp)
                .map_err(|err| format!("cannot listen on {address}: {err}")),
            ListenAddress::Unix(path) => {
                if let Existing::Stale(probed) = check_unix_path(path).await? {
                    // Removed only if it is still the socket the probe
                    // found dead: something put there since (another
                    // sqlgate starting, a file) is left alone.
                    let now = std::fs::symlink_metadata(path)
                        .map(|metadata| (metadata.dev(), metadata.ino()))
                        .ok();
                    if now != Some(probed) {
                        return Err(format!(
                            "unix:{}: the path changed while sqlgate checked it; sqlgate leaves \
                             it as it is",
                            path.display()
                        ));
                    }
                    std::fs::remove_file(path).map_err(|err| {
                        format!("cannot replace the stale socket {}: {err}", path.display())
                    })?;
                    tracing::info!(path = %path.display(), "replaced a stale socket file");
                }
                let listener = UnixListener::bind(path)
                    .map_err(|err| format!("cannot listen on unix:{}: {err}", path.display()))?;
                // From here on the file is ours: removed if anything fails.
                let file = SocketFile::created(path)?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode.bits()))
                    .map_err(|err| {
                        format!("cannot set mode {mode} on {}: {err}", path.display())
                    })?;
                Ok(Self::Unix(listener, file))
            }
        }
    }

    /// The address bound: the TCP port chosen when it was 0.
    pub(crate) fn local_address(&self) -> io::Result<ListenAddress> {
        match self {
            Self::Tcp(listener) => listener.local_addr().map(ListenAddress::Tcp),
            Self::Unix(_, file) => Ok(ListenAddress::Unix(file.path.clone())),
        }
    }

    /// The next client connection, its peer, and (TCP) the local address it
    /// reached.
    pub(crate) async fn accept(&self) -> io::Result<(ClientStream, Peer, Option<SocketAddr>)> {
        match self {
            Self::Tcp(listener) => {
                let (stream, remote) = listener.accept().await?;
                let _ = stream.set_nodelay(true);
                let local = stream.local_addr().ok();
                Ok((Either::Left(stream), Peer::Tcp(remote), local))
            }
            Self::Unix(listener, _) => {
                let (stream, _) = listener.accept().await?;
                let peer = Peer::of_unix_stream(&stream);
                Ok((Either::Right(stream), peer, None))
            }
        }
    }
}

/// What is at a Unix socket's path before sqlgate binds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Existing {
    /// Nothing.
    Nothing,
    /// A socket no process listens on (left by one that crashed), with
    /// its device and inode, to know it again when it is removed.
    Stale((u64, u64)),
}

/// Checks that sqlgate can create its socket at `path`: the directory
/// exists, and nothing is there but, at most, a stale socket. Changes
/// nothing; start-up calls it before anything else, so that a wrong path
/// stops it with one line (as an invalid setting does).
pub(crate) async fn check_listen(address: &ListenAddress) -> Result<(), String> {
    match address {
        ListenAddress::Tcp(_) => Ok(()),
        ListenAddress::Unix(path) => check_unix_path(path).await.map(|_| ()),
    }
}

/// [`check_listen`] for a Unix socket's path.
async fn check_unix_path(path: &Path) -> Result<Existing, String> {
    let shown = path.display();
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    if !directory.is_dir() {
        return Err(format!(
            "unix:{shown}: the directory {} does not exist (sqlgate creates the socket, \
             not its directory)",
            directory.display()
        ));
    }
    let metadata = match std::fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Existing::Nothing),
        Err(err) => return Err(format!("unix:{shown}: {err}")),
    };
    if !metadata.file_type().is_socket() {
        return Err(format!(
            "unix:{shown}: the path exists and is not a socket; sqlgate leaves it as it \
             is: remove it or choose another path"
        ));
    }
    match tokio::time::timeout(IN_USE_PROBE, UnixStream::connect(path)).await {
        Err(_) | Ok(Ok(_)) => Err(format!(
            "unix:{shown}: the socket is in use (another process listens on it)"
        )),
        Ok(Err(err)) if err.kind() == io::ErrorKind::ConnectionRefused => {
            Ok(Existing::Stale((metadata.dev(), metadata.ino())))
        }
        Ok(Err(err)) => Err(format!("unix:{shown}: {err}")),
    }
}

/// The file of the socket sqlgate bound, removed when the listener is
/// dropped — unless what is at the path then is no longer that file.
#[derive(Debug)]
pub(crate) struct SocketFile {
    path: PathBuf,
    /// The file's device and inode, to know it again.
    identity: (u64, u64),
}

impl SocketFile {
    /// The file just bound at `path`.
    fn created(path: &Path) -> Result<Self, String> {
        let metadata = std::fs::symlink_metadata(path)
            .map_err(|err| format!("the socket {} vanished: {err}", path.display()))?;
        Ok(Self {
            path: path.to_owned(),
            identity: (metadata.dev(), metadata.ino()),
        })
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let still_ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|metadata| (metadata.dev(), metadata.ino()) == self.identity);
        if still_ours && let Err(err) = std::fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %err, "cannot remove the socket file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix(path: &Path) -> ListenAddress {
        ListenAddress::Unix(path.to_owned())
    }

    #[tokio::test]
    async fn the_socket_gets_its_mode_and_goes_with_the_listener() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("s.sock");
        let listener = Listener::bind(&unix(&path), "0600".parse().expect("mode"))
            .await
            .expect("binds");
        let metadata = std::fs::metadata(&path).expect("socket");
        assert!(metadata.file_type().is_socket());
        assert_eq!(metadata.permissions().mode() & 0o777, 0o600);
        let err = Listener::bind(&unix(&path), SocketMode::default())
            .await
            .expect_err("in use");
        assert!(err.contains("in use"), "{err}");
        drop(listener);
        assert!(!path.exists(), "removed with the listener");
    }

    #[tokio::test]
    async fn a_stale_socket_is_replaced_and_other_files_are_left_alone() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("s.sock");
        // A socket whose listener is gone, as a crashed process leaves it.
        drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
        assert!(path.exists());
        let listener = Listener::bind(&unix(&path), SocketMode::default())
            .await
            .expect("replaces the stale socket");
        drop(listener);
        std::fs::write(&path, "data").expect("file");
        let err = Listener::bind(&unix(&path), SocketMode::default())
            .await
            .expect_err("not a socket");
        assert!(err.contains("is not a socket"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).expect("kept"), "data");
        let missing = dir.path().join("nowhere").join("s.sock");
        let err = check_listen(&unix(&missing))
            .await
            .expect_err("no directory");
        assert!(
            err.contains("nowhere") && err.contains("does not exist"),
            "{err}"
        );
    }
}
