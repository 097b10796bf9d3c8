//! Polling files on a timer: TLS and authentication both read their files
//! again every `reload_interval` (polled, not watched: Kubernetes rotates
//! a mounted secret by swapping a symlinked directory, which notifications
//! on the old files never report).

use std::{sync::Arc, time::Duration};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Runs `poll` every `every`, the first time one period from now, until
/// `stop`. File reads and parsing block, so each run is off the async
/// workers; a run that panics is logged (`what` names the files) and the
/// next one runs at its time.
pub(crate) fn spawn_poll(
    every: Duration,
    stop: CancellationToken,
    what: &'static str,
    poll: impl Fn() + Send + Sync + 'static,
) -> JoinHandle<()> {
    let poll = Arc::new(poll);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let polling = poll.clone();
            if let Err(err) = tokio::task::spawn_blocking(move || polling()).await {
                tracing::warn!(error = %err, "{what} reload task failed");
            }
        }
    })
}
