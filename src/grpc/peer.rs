//! Who is at the other end of a client connection, as the transport saw
//! it: a TCP address, or a process on a Unix socket (known by the user id
//! the kernel reports for it, since it has no address). Logs, the audit
//! trail, `ListSessions` and the per-caller limits name an unauthenticated
//! caller by it.

use std::{fmt, net::SocketAddr};

/// The peer of one client connection; put into every request of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Peer {
    /// A TCP client.
    Tcp(SocketAddr),
    /// A client on the Unix socket; `uid` is its user as the kernel
    /// reports it (`SO_PEERCRED`), `None` where it cannot.
    Unix {
        /// The peer process's user id.
        uid: Option<u32>,
    },
}

impl Peer {
    /// A Unix socket client, with the credentials of `stream`'s peer.
    pub(crate) fn of_unix_stream(stream: &tokio::net::UnixStream) -> Self {
        Self::Unix {
            uid: stream.peer_cred().ok().map(|cred| cred.uid()),
        }
    }
}

/// `127.0.0.1:4321`, `unix:uid=1000`, or `unix` when the uid is unknown.
impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(address) => address.fmt(f),
            Self::Unix { uid: Some(uid) } => write!(f, "unix:uid={uid}"),
            Self::Unix { uid: None } => f.write_str("unix"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_print_as_logs_show_them() {
        let tcp = Peer::Tcp(([10, 0, 0, 7], 40000).into());
        assert_eq!(tcp.to_string(), "10.0.0.7:40000");
        assert_eq!(Peer::Unix { uid: Some(1000) }.to_string(), "unix:uid=1000");
        assert_eq!(Peer::Unix { uid: None }.to_string(), "unix");
    }

    #[tokio::test]
    async fn a_unix_peer_is_known_by_its_uid() {
        let (ours, _theirs) = tokio::net::UnixStream::pair().expect("pair");
        let Peer::Unix { uid } = Peer::of_unix_stream(&ours) else {
            panic!("a Unix stream is a Unix peer");
        };
        let me = std::fs::metadata("/proc/self").map(|m| {
            use std::os::unix::fs::MetadataExt;
            m.uid()
        });
        assert_eq!(uid, me.ok());
    }
}
