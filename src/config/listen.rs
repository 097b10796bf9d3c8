//! Where the gRPC listener is: a TCP address (`127.0.0.1:50051`) or a Unix
//! domain socket (`unix:/run/sqlgate/sqlgate.sock`), for a sidecar whose
//! caller shares the pod (and a volume) with sqlgate; and the mode given
//! to that socket's file (`listen_mode`).

use std::{fmt, net::SocketAddr, path::PathBuf, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// The prefix that marks a Unix socket path in `listen`.
const UNIX_PREFIX: &str = "unix:";

/// Longest socket path the kernel takes: `sun_path` is 108 bytes on Linux,
/// one of them the terminating NUL.
pub const MAX_UNIX_PATH_BYTES: usize = 107;

/// Where the gRPC listener is. Written as in `listen`: `host:port`, or
/// `unix:` and an absolute or relative path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ListenAddress {
    /// A TCP address; port 0 picks a free port.
    Tcp(SocketAddr),
    /// A Unix domain socket's path.
    Unix(PathBuf),
}

impl ListenAddress {
    /// Whether only this host can reach it: a loopback address, or a Unix
    /// socket (reached through the file system, guarded by its mode).
    pub fn is_local(&self) -> bool {
        match self {
            Self::Tcp(address) => address.ip().is_loopback(),
            Self::Unix(_) => true,
        }
    }

    /// The TCP address, when it is one.
    pub fn tcp(&self) -> Option<SocketAddr> {
        match self {
            Self::Tcp(address) => Some(*address),
            Self::Unix(_) => None,
        }
    }
}

impl From<SocketAddr> for ListenAddress {
    fn from(address: SocketAddr) -> Self {
        Self::Tcp(address)
    }
}

impl FromStr for ListenAddress {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(path) = text.strip_prefix(UNIX_PREFIX) {
            if path.is_empty() {
                return Err("unix: needs a path, e.g. unix:/run/sqlgate/sqlgate.sock".to_owned());
            }
            if path.len() > MAX_UNIX_PATH_BYTES {
                return Err(format!(
                    "the socket path {path} is {} bytes long; Unix sockets take at most {MAX_UNIX_PATH_BYTES}",
                    path.len()
                ));
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        text.parse::<SocketAddr>().map(Self::Tcp).map_err(|_| {
            format!("{text:?} is neither host:port (an IP address and a port) nor unix:PATH")
        })
    }
}

/// As it is written in `listen`.
impl fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(address) => address.fmt(f),
            Self::Unix(path) => write!(f, "{UNIX_PREFIX}{}", path.display()),
        }
    }
}

impl Serialize for ListenAddress {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ListenAddress {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(de::Error::custom)
    }
}

/// The permission bits of the Unix socket's file (`listen_mode`, octal, as
/// `chmod` takes them). Connecting needs write permission on it, so the
/// mode decides who may call. Default 0660: in a pod, the caller's
/// container usually runs as another user than sqlgate's and shares the
/// pod's `fsGroup` with it (the group of a shared `emptyDir`), so the
/// group must be let in; everyone else stays out. Use `0600` when the
/// caller runs as sqlgate's own user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketMode(u32);

impl SocketMode {
    /// The mode bits.
    pub fn bits(self) -> u32 {
        self.0
    }
}

impl Default for SocketMode {
    fn default() -> Self {
        Self(0o660)
    }
}

impl FromStr for SocketMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let digits = text.strip_prefix("0o").unwrap_or(text);
        match u32::from_str_radix(digits, 8) {
            Ok(bits) if !digits.is_empty() && bits <= 0o777 => Ok(Self(bits)),
            _ => Err(format!(
                "{text:?} is not a file mode: give octal permission bits such as \"0660\""
            )),
        }
    }
}

/// Octal, four digits: `0660`.
impl fmt::Display for SocketMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl Serialize for SocketMode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A string of octal digits; an integer too (an environment variable such
/// as `SQLGATE_LISTEN_MODE=0660` arrives as one), read by its decimal
/// digits as if they were octal ones, as `chmod 660` reads them.
impl<'de> Deserialize<'de> for SocketMode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = SocketMode;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("octal permission bits such as \"0660\"")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<SocketMode, E> {
                text.parse().map_err(E::custom)
            }

            fn visit_u64<E: de::Error>(self, digits: u64) -> Result<SocketMode, E> {
                self.visit_str(&digits.to_string())
            }

            fn visit_i64<E: de::Error>(self, digits: i64) -> Result<SocketMode, E> {
                self.visit_str(&digits.to_string())
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_and_unix_addresses_parse_and_print_as_written() {
        for text in [
            "127.0.0.1:50051",
            "[::1]:0",
            "unix:/run/sqlgate.sock",
            "unix:rel.sock",
        ] {
            let address: ListenAddress = text.parse().expect(text);
            assert_eq!(address.to_string(), text);
        }
        assert!(matches!(
            "unix:/a.sock".parse::<ListenAddress>(),
            Ok(ListenAddress::Unix(path)) if path == std::path::Path::new("/a.sock")
        ));
    }

    #[test]
    fn bad_addresses_are_refused_with_a_reason() {
        let long = format!("unix:/{}", "d".repeat(MAX_UNIX_PATH_BYTES));
        let err = long.parse::<ListenAddress>().expect_err("too long");
        assert!(err.contains("at most 107"), "{err}");
        let fits = format!("unix:/{}", "d".repeat(MAX_UNIX_PATH_BYTES - 1));
        fits.parse::<ListenAddress>().expect("107 bytes fit");
        assert!("unix:".parse::<ListenAddress>().is_err());
        assert!("localhost:50051".parse::<ListenAddress>().is_err());
    }

    #[test]
    fn only_loopback_and_unix_sockets_are_local() {
        for (text, local) in [
            ("127.0.0.1:1", true),
            ("0.0.0.0:1", false),
            ("unix:/s", true),
        ] {
            assert_eq!(text.parse::<ListenAddress>().expect(text).is_local(), local);
        }
    }

    #[test]
    fn modes_are_octal() {
        assert_eq!("0660".parse::<SocketMode>(), Ok(SocketMode(0o660)));
        assert_eq!("600".parse::<SocketMode>(), Ok(SocketMode(0o600)));
        assert_eq!("0o666".parse::<SocketMode>(), Ok(SocketMode(0o666)));
        for bad in ["", "0680", "1777", "rw"] {
            assert!(bad.parse::<SocketMode>().is_err(), "{bad}");
        }
        assert_eq!(SocketMode(0o600).to_string(), "0600");
        assert_eq!(SocketMode::default().bits(), 0o660);
    }
}
