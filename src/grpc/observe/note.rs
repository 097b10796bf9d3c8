//! What a call's handler tells the observation layer, and who the caller
//! is: the two values the layer puts into every request's extensions.

use std::{
    fmt,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use tonic::transport::server::TcpConnectInfo;

use crate::grpc::{
    Peer,
    identity::{Identity, Role},
};

/// Batches name at most this many statements in their log line.
const FINGERPRINTS_LOGGED: usize = 8;

/// Who made a call: the peer's address, and the identity authentication
/// resolved (mTLS subject, token name, JWT subject), so that logs,
/// `ListSessions`, limits and audit all name the caller one way.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Caller {
    /// The peer, when the transport knows it.
    peer: Option<Peer>,
    /// Who authentication says it is; `None` with authentication off.
    identity: Option<Identity>,
}

impl Caller {
    /// The caller as the transport saw it: the [`Peer`] it put into the
    /// request, else (a TCP server other than sqlgate's own) tonic's
    /// connection info.
    pub(super) fn from_connection(extensions: &http::Extensions) -> Self {
        let peer = extensions.get::<Peer>().copied().or_else(|| {
            extensions
                .get::<TcpConnectInfo>()
                .and_then(TcpConnectInfo::remote_addr)
                .map(Peer::Tcp)
        });
        Self {
            peer,
            identity: None,
        }
    }

    /// The same caller, now known as `identity`.
    pub(crate) fn authenticated(self, identity: Identity) -> Self {
        Self {
            identity: Some(identity),
            ..self
        }
    }

    /// Who authentication says it is (`None` with authentication off).
    pub(crate) fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    /// What the caller may do: its identity's role, or `anonymous` (the
    /// `roles.default` setting; `admin` unless set: everyone may do
    /// everything, as before roles) when it has none, as with
    /// authentication off.
    pub(crate) fn role(&self, anonymous: Role) -> Role {
        self.identity
            .as_ref()
            .map_or(anonymous, |identity| identity.role)
    }

    /// The caller the layer resolved for `request` (or, outside the served
    /// stack, as its connection info says).
    pub(crate) fn of<T>(request: &tonic::Request<T>) -> Self {
        Self::in_extensions(request.extensions())
    }

    /// [`Caller::of`] a request with these `extensions`.
    pub(crate) fn in_extensions(extensions: &http::Extensions) -> Self {
        extensions
            .get::<Caller>()
            .cloned()
            .unwrap_or_else(|| Self::from_connection(extensions))
    }

    /// The peer, when the transport knows it.
    pub(crate) fn peer(&self) -> Option<Peer> {
        self.peer
    }
}

/// The identity's name (`billing`), else the peer (`127.0.0.1:4321`,
/// `unix:uid=1000`), else `unknown`.
impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.identity, self.peer) {
            (Some(identity), _) => f.write_str(&identity.name),
            (None, Some(address)) => address.fmt(f),
            (None, None) => f.write_str("unknown"),
        }
    }
}

/// The call's `sqlgate-tag` values, checked by the layer (see
/// `request_tags`), for handlers that keep them (a session's owner).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RequestTags(pub(crate) Vec<String>);

impl RequestTags {
    /// The tags of `request`'s call (none outside the layer).
    pub(crate) fn of<T>(request: &tonic::Request<T>) -> Vec<String> {
        request
            .extensions()
            .get::<RequestTags>()
            .map(|tags| tags.0.clone())
            .unwrap_or_default()
    }
}

/// What only the handler knows about its call (statement fingerprints,
/// rows sent, the session id), shared with the layer that writes the
/// call's line when the response ends. Cheap to clone and to update from
/// a response stream as each frame goes out. Never parameter values or
/// row contents: the methods take nothing that could carry them.
#[derive(Debug, Clone, Default)]
pub(crate) struct CallNote(Arc<Shared>);

#[derive(Debug, Default)]
struct Shared {
    rows: AtomicU64,
    text: Mutex<NoteText>,
    /// Whether statements are kept for the audit trail (it is on).
    keeps_statements: bool,
}

/// A statement of the call, kept for the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct NotedStatement {
    /// The caller's text (parsed for the trail, never written).
    pub(super) sql: Arc<str>,
    /// Its fingerprint.
    pub(super) fingerprint: Arc<str>,
    /// Rows sent back (`None`: the call's count).
    pub(super) rows_returned: Option<u64>,
    /// Rows the database changed.
    pub(super) rows_affected: u64,
    /// How long it ran (`None`: the call's duration stands for it).
    pub(super) duration: Option<std::time::Duration>,
}

/// The note's text fields, taken once when the line is written.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct NoteText {
    /// Statement fingerprint(s), comma-separated.
    pub(super) fingerprint: Option<Arc<str>>,
    /// The session a `Sessions/Attach` call opened.
    pub(super) session: Option<String>,
    /// What the call's statement does (`SELECT`…; `BATCH` for several).
    pub(super) operation: Option<&'static str>,
    /// The call's statements, when the audit trail keeps them.
    pub(super) statements: Vec<NotedStatement>,
    /// The database's SQLSTATE, when it refused the call's statement.
    pub(super) sqlstate: Option<String>,
    /// The role the handler ran the call with (`roles.default` for a
    /// caller without an identity).
    pub(super) role: Option<&'static str>,
}

impl CallNote {
    /// The note of `request`'s call; a detached one (recorded, never
    /// written) when the request did not come through the layer, as in
    /// unit tests.
    pub(crate) fn of<T>(request: &tonic::Request<T>) -> Self {
        request
            .extensions()
            .get::<CallNote>()
            .cloned()
            .unwrap_or_default()
    }

    /// A note that keeps the call's statements for the audit trail when
    /// `keep` (else statements cost nothing).
    pub(super) fn keeping_statements(keep: bool) -> Self {
        Self(Arc::new(Shared {
            keeps_statements: keep,
            ..Shared::default()
        }))
    }

    /// Whether the call's statements are kept (the audit trail is on).
    pub(crate) fn keeps_statements(&self) -> bool {
        self.0.keeps_statements
    }

    /// The call runs with `role`, its caller's effective role.
    pub(crate) fn role(&self, role: Role) {
        self.text().role = Some(role.name());
    }

    /// The effective role noted, if any.
    pub(super) fn noted_role(&self) -> Option<&'static str> {
        self.text().role
    }

    /// The call runs `sql` (kept only for the audit trail).
    pub(crate) fn statement(&self, sql: &Arc<str>, fingerprint: &Arc<str>) {
        if self.0.keeps_statements {
            self.text().statements.push(NotedStatement {
                sql: sql.clone(),
                fingerprint: fingerprint.clone(),
                rows_returned: None,
                rows_affected: 0,
                duration: None,
            });
        }
    }

    /// The call's statements ended with these rows returned and affected,
    /// each after running this long, in order.
    pub(crate) fn statement_rows(
        &self,
        rows: impl IntoIterator<Item = (u64, u64, std::time::Duration)>,
    ) {
        if self.0.keeps_statements {
            let mut text = self.text();
            for (statement, (returned, affected, duration)) in text.statements.iter_mut().zip(rows)
            {
                statement.rows_returned = Some(returned);
                statement.rows_affected = affected;
                statement.duration = Some(duration);
            }
        }
    }

    /// The database refused the call's statement with this SQLSTATE.
    pub(crate) fn sqlstate(&self, sqlstate: &str) {
        if self.0.keeps_statements {
            self.text().sqlstate = Some(sqlstate.to_owned());
        }
    }

    /// The statements and SQLSTATE noted, emptied.
    pub(super) fn take_statements(&self) -> (Vec<NotedStatement>, Option<String>) {
        let mut text = self.text();
        (std::mem::take(&mut text.statements), text.sqlstate.take())
    }

    /// The call runs the statement with this fingerprint (shared, not
    /// copied: every call of a statement has it).
    pub(crate) fn fingerprint(&self, fingerprint: &Arc<str>) {
        self.text().fingerprint = Some(fingerprint.clone());
    }

    /// The call runs these statements: the first few are named.
    pub(crate) fn fingerprints<'a>(&self, fingerprints: impl IntoIterator<Item = &'a str>) {
        let joined = fingerprints
            .into_iter()
            .take(FINGERPRINTS_LOGGED)
            .collect::<Vec<_>>()
            .join(",");
        self.text().fingerprint = Some(joined.into());
    }

    /// The call runs a statement of this operation (`SELECT`, `INSERT`…,
    /// or `BATCH`), from a closed set.
    pub(crate) fn operation(&self, operation: &'static str) {
        self.text().operation = Some(operation);
    }

    /// The session noted, if any (the text stays for the line).
    pub(super) fn session_id(&self) -> Option<String> {
        self.text().session.clone()
    }

    /// The operation noted, if any.
    pub(super) fn noted_operation(&self) -> Option<&'static str> {
        self.text().operation
    }

    /// The call opened this session.
    pub(crate) fn session(&self, session_id: &str) {
        self.text().session = Some(session_id.to_owned());
    }

    /// `rows` more rows went (or are going) to the caller.
    pub(crate) fn rows(&self, rows: usize) {
        let rows = u64::try_from(rows).unwrap_or(u64::MAX);
        self.0.rows.fetch_add(rows, Ordering::Relaxed);
    }

    /// Rows counted so far.
    pub(super) fn rows_sent(&self) -> u64 {
        self.0.rows.load(Ordering::Relaxed)
    }

    /// The text fields, emptied: the call is over.
    pub(super) fn take_text(&self) -> NoteText {
        std::mem::take(&mut *self.text())
    }

    fn text(&self) -> std::sync::MutexGuard<'_, NoteText> {
        // A panic elsewhere cannot make a log line wrong: keep going.
        self.0.text.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_sums_rows_and_names_at_most_eight_statements() {
        let note = CallNote::default();
        let handler_side = note.clone();
        handler_side.rows(3);
        handler_side.rows(4);
        let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"];
        handler_side.fingerprints(names);
        assert_eq!(note.rows_sent(), 7);
        let text = note.take_text();
        assert_eq!(text.fingerprint.as_deref(), Some("a,b,c,d,e,f,g,h"));
        assert_eq!(text.session, None);
        assert_eq!(note.take_text(), NoteText::default());
    }

    #[test]
    fn a_request_outside_the_layer_gets_a_detached_note_and_its_peer() {
        let mut request = tonic::Request::new(());
        CallNote::of(&request).rows(1);
        assert_eq!(Caller::of(&request).to_string(), "unknown");
        let peer: std::net::SocketAddr = ([127, 0, 0, 1], 4321).into();
        request.extensions_mut().insert(TcpConnectInfo {
            local_addr: None,
            remote_addr: Some(peer),
        });
        assert_eq!(Caller::of(&request).to_string(), "127.0.0.1:4321");
        request
            .extensions_mut()
            .insert(Peer::Unix { uid: Some(1000) });
        assert_eq!(Caller::of(&request).to_string(), "unix:uid=1000");
    }
}
