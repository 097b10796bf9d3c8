//! Who a caller is and what it may do: the values authentication resolves
//! (from an mTLS client certificate, a bearer token or a JWT) and every
//! later decision reads (the database-enforced role, session ownership,
//! per-caller limits, the call log). With authentication off, a caller is
//! its peer address and holds [`Role::Admin`], as before authentication
//! existed.

use std::{fmt, sync::Arc};

/// What a caller may do. Read-only is enforced by the database (every
/// transaction a reader opens is read-only), never by parsing SQL.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads only: every call and session runs read-only at the database.
    Reader,
    /// Reads and writes; no `Admin` service.
    Writer,
    /// Everything, including the `Admin` service and other callers' sessions.
    Admin,
}

impl Role {
    /// The name used in configuration, logs and `ListSessions`.
    pub fn name(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::Admin => "admin",
        }
    }

    /// Whether this role may only read.
    pub fn is_read_only(self) -> bool {
        self == Role::Reader
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How the caller proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// A client certificate signed by the configured client CA.
    ClientCertificate,
    /// A bearer token whose hash is configured.
    Token,
    /// A JWT verified against the configured JWKS.
    Jwt,
}

/// An authenticated caller: its name (certificate subject/SAN, token name,
/// JWT subject) and role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The caller's name, as logs and `ListSessions` show it.
    pub name: Arc<str>,
    /// What it may do.
    pub role: Role,
    /// How it proved it.
    pub proof: Proof,
}

/// The verified client certificate of a TLS connection, put into each
/// request's extensions by the transport for authentication to read: the
/// certificate's subject common name and its DNS/URI SANs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// The subject's common name, if any.
    pub common_name: Option<String>,
    /// DNS names and URIs from the subject alternative names.
    pub sans: Vec<String>,
}
