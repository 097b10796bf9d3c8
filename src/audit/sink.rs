//! Where audit lines go: stdout or a file (appended to), written by a
//! thread of their own, so that a slow disk or a full pipe never holds a
//! call. Lines are flushed as soon as the queue is empty.

use std::{
    fs::OpenOptions,
    io::{BufWriter, Write},
    sync::mpsc,
};

/// Lines formatted and waiting to be written.
const LINES_QUEUED: usize = 1024;

/// Starts the writer for `sink` (`stdout` or a path); the sender lines go
/// to. The file is opened here, so that a path sqlgate cannot write stops
/// start-up.
pub(super) fn start(sink: &str) -> Result<mpsc::SyncSender<String>, String> {
    let mut out: Box<dyn Write + Send> = if sink == "stdout" {
        Box::new(std::io::stdout())
    } else {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(sink)
            .map_err(|err| format!("cannot open the audit file {sink}: {err}"))?;
        Box::new(file)
    };
    // Bounded: a stalled sink holds the formatter, whose own bounded
    // queue then fills (see `Audit`), so memory stays bounded.
    let (sender, lines) = mpsc::sync_channel::<String>(LINES_QUEUED);
    std::thread::Builder::new()
        .name("sqlgate-audit".to_owned())
        .spawn(move || {
            let mut writer = BufWriter::new(&mut out);
            while let Ok(line) = lines.recv() {
                let mut written = writeln!(writer, "{line}");
                while let Ok(line) = lines.try_recv() {
                    written = written.and_then(|()| writeln!(writer, "{line}"));
                }
                if let Err(err) = written.and_then(|()| writer.flush()) {
                    tracing::error!(%err, "audit: cannot write the audit trail");
                }
            }
        })
        .map_err(|err| format!("cannot start the audit writer: {err}"))?;
    Ok(sender)
}
