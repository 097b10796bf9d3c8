//! One log line per call: method, caller, statement fingerprint, rows,
//! duration and outcome. Never parameter values or row contents.

use std::time::Instant;

/// Collects what a call's log line says, then writes it.
pub(crate) struct CallLog {
    method: &'static str,
    peer: String,
    started: Instant,
}

impl CallLog {
    pub(crate) fn start<T>(method: &'static str, request: &tonic::Request<T>) -> Self {
        let peer = request
            .remote_addr()
            .map_or_else(|| "unknown".to_owned(), |addr| addr.to_string());
        Self {
            method,
            peer,
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
                peer = %self.peer,
                fingerprint = fingerprints,
                rows,
                elapsed_ms,
                "call done"
            ),
            Err(status) => tracing::info!(
                method = self.method,
                peer = %self.peer,
                fingerprint = fingerprints,
                code = ?status.code(),
                elapsed_ms,
                "call failed"
            ),
        }
    }
}
