//! [`ClientLink`]: a session's way to its client. Every message a session
//! sends goes through it, so that one rule holds everywhere: once shutdown
//! has begun, a client that stopped reading gets a short grace, not the
//! power to hold the drain open (its stream stays open while the session
//! waits to tell it something).

use std::{sync::Arc, time::Duration};

use tokio::sync::mpsc;

use super::{SessionEvent, SessionRegistry};

/// How long after shutdown began a session still waits for its client to
/// take a message; after that it stops trying to tell it anything.
const SHUTDOWN_SEND_GRACE: Duration = Duration::from_millis(500);

/// Where a session answers, and what bounds the wait.
#[derive(Debug, Clone)]
pub(super) struct ClientLink {
    outbound: mpsc::Sender<SessionEvent>,
    registry: Arc<SessionRegistry>,
}

impl ClientLink {
    /// A link over the session stream's outbound channel.
    pub(super) fn new(
        outbound: mpsc::Sender<SessionEvent>,
        registry: Arc<SessionRegistry>,
    ) -> Self {
        Self { outbound, registry }
    }

    /// Sends `event`; false when the client is gone, or, during shutdown,
    /// when it has not taken the message [`SHUTDOWN_SEND_GRACE`] after
    /// shutdown began.
    pub(super) async fn tell(&self, event: SessionEvent) -> bool {
        tokio::select! {
            biased;
            sent = self.outbound.send(event) => sent.is_ok(),
            () = self.registry.shutdown_plus(SHUTDOWN_SEND_GRACE) => false,
        }
    }

    /// Resolves when the client is gone (its response stream dropped).
    pub(super) async fn gone(&self) {
        self.outbound.closed().await;
    }

    /// True once the client is gone.
    pub(super) fn is_gone(&self) -> bool {
        self.outbound.is_closed()
    }
}
