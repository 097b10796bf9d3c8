//! One log line per call: method, caller, statement fingerprint, rows,
//! duration and outcome. Never parameter values or row contents.

use std::{net::SocketAddr, time::Instant};

/// Collects what a call's log line says, then writes it.
pub(crate) struct CallLog {
    method: &'static str,
    /// Formatted only when the line is written (not at all below `info`).
    peer: Option<SocketAddr>,
    started: Instant,
}

impl CallLog {
    pub(crate) fn start<T>(method: &'static str, request: &tonic::Request<T>) -> Self {
        Self {
            method,
            peer: request.remote_addr(),
            started: Instant::now(),
        }
    }

    /// Writes the line; `fingerprints` identify the statements, `rows` counts what came back.
    pub(crate) fn finish(
        &self,
        fingerprints: &str,
        rows: usize,
        outcome: Result<(), &tonic::Status>,
    ) {
        let elapsed_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        match outcome {
            Ok(()) => tracing::info!(
                method = self.method,
                peer = %Peer(self.peer),
                fingerprint = fingerprints,
                rows,
                elapsed_ms,
                "call done"
            ),
            Err(status) => tracing::info!(
                method = self.method,
                peer = %Peer(self.peer),
                fingerprint = fingerprints,
                code = ?status.code(),
                elapsed_ms,
                "call failed"
            ),
        }
    }
}

/// Displays a caller's address, or `unknown`.
pub(super) struct Peer(pub(super) Option<SocketAddr>);

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(address) => address.fmt(f),
            None => f.write_str("unknown"),
        }
    }
}
