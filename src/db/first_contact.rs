//! The first connection at start-up, and what its failure means. A
//! database that cannot be reached *yet* (nothing listening, a name that
//! does not resolve yet, no answer, a server still starting up) is normal
//! in a cluster where sqlgate and its database start together: sqlgate then
//! starts not ready and the health probe makes it ready once the database
//! answers. A database that answered and refused (wrong password, unknown
//! database, TLS it cannot agree on) or a URL that does not parse is a
//! configuration to fix: start-up stops, saying why (never with the URL,
//! which may hold a password).

use std::time::Duration;

use super::Driver;
use crate::error::Error;

/// What the first connection attempt found.
#[derive(Debug)]
pub(crate) enum FirstContact {
    /// The database answered.
    Reached,
    /// Not reachable now; why, in words without the URL.
    Unreachable(String),
}

/// Opens one connection to `url` (outside the pool, so that the error is the
/// database's own rather than the pool's timeout) within `timeout`, and
/// closes it. `Err` for a configuration that cannot work.
pub(crate) async fn first_contact<DB: Driver>(
    url: &str,
    timeout: Duration,
) -> Result<FirstContact, Error> {
    use sqlx::Connection;
    match tokio::time::timeout(timeout, DB::Connection::connect(url)).await {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            Ok(FirstContact::Reached)
        }
        Ok(Err(sqlx::Error::Configuration(_))) => {
            Err(Error::Unavailable("the database URL is invalid".to_owned()))
        }
        Ok(Err(err)) if not_reachable_yet(&err) => {
            Ok(FirstContact::Unreachable(redact(&err.to_string())))
        }
        // The database's own words and code: sqlx's `Display` adds the
        // server's C source line (`at line 948`), which reads as a line of
        // the caller's configuration.
        Ok(Err(sqlx::Error::Database(db))) => {
            let message = redact(db.message());
            Err(Error::Unavailable(match db.code() {
                Some(code) => format!("the database refused: {message} (SQLSTATE {code})"),
                None => format!("the database refused: {message}"),
            }))
        }
        Ok(Err(err)) => Err(Error::Unavailable(redact(&err.to_string()))),
        Err(_) => Ok(FirstContact::Unreachable(format!(
            "no answer within {}",
            humantime::format_duration(timeout)
        ))),
    }
}

/// Whether a connection error says "not there yet" rather than "refused":
/// network errors (connection refused, a host name not resolving yet,
/// reset), a connection closed before the database said anything (a relay
/// or sidecar that is up while the database behind it is not: the driver
/// reads an empty answer as a protocol error), and a server that answers
/// that it is starting, shutting down or full (PostgreSQL `57P0x`,
/// `53300`, SQLSTATE class `08`).
/// Some I/O errors are configurations to fix, though: a TLS handshake that
/// fails (a certificate not valid for the name, an unknown issuer: kind
/// `InvalidData`), and a file the URL names (`sslrootcert`, `ssl-ca`…)
/// that is missing or unreadable.
fn not_reachable_yet(err: &sqlx::Error) -> bool {
    use std::io::ErrorKind;
    match err {
        sqlx::Error::Io(io) => !matches!(
            io.kind(),
            ErrorKind::InvalidData
                | ErrorKind::NotFound
                | ErrorKind::PermissionDenied
                | ErrorKind::InvalidInput
        ),
        sqlx::Error::PoolTimedOut | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("57P") || code == "53300" || code.starts_with("08")
        }),
        _ => false,
    }
}

/// Drops anything that looks like a URL from a message (it may hold a password).
pub(crate) fn redact(text: &str) -> String {
    if text.contains("://") {
        "the database URL is invalid".to_owned()
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_errors_are_not_reachable_yet_configuration_errors_are_not() {
        let refused = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(not_reachable_yet(&refused));
        let certificate = sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "invalid peer certificate: UnknownIssuer",
        ));
        assert!(!not_reachable_yet(&certificate));
        let missing_ca = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::NotFound));
        assert!(!not_reachable_yet(&missing_ca));
        assert!(not_reachable_yet(&sqlx::Error::PoolTimedOut));
        assert!(!not_reachable_yet(&sqlx::Error::Configuration(
            "bad".into()
        )));
        assert!(!not_reachable_yet(&sqlx::Error::Tls("no TLS".into())));
    }

    #[test]
    fn a_message_with_a_url_is_replaced() {
        assert_eq!(
            redact("cannot reach postgres://u:secret@db/x"),
            "the database URL is invalid"
        );
        assert_eq!(redact("connection refused"), "connection refused");
    }
}
