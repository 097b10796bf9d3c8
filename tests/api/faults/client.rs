//! A client process that dies like a real one: this test binary run again
//! with one `#[ignore]`d test selected (the re-exec pattern of
//! `fixtures`). It opens a session, inserts a few ledger keys, says so on
//! stdout and waits, never committing, to be killed with SIGKILL — no
//! goodbye, no half-close: the kernel resets its connection.

use std::{process::Stdio, time::Duration};

use sqlgate::grpc::pb::{
    self, BeginSession, SessionRequest, SessionResponse, session_response::Response as Answer,
    sessions_client::SessionsClient,
};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    sync::mpsc,
};
use tokio_stream::{StreamExt, wrappers::ReceiverStream};

/// `ADDR|SQL|PREFIX`: run [`killable_writer`] against sqlgate at `ADDR`,
/// inserting with statement `SQL` the keys `PREFIX-0` … `PREFIX-2`.
const WRITER: &str = "SQLGATE_FAULT_WRITER";

/// Keys each writer inserts.
const KEYS: usize = 3;

/// The keys a writer with `prefix` may write.
pub fn writer_keys(prefix: &str) -> Vec<String> {
    (0..KEYS).map(|n| format!("{prefix}-{n}")).collect()
}

/// Starts a writer process against sqlgate at `address`, waits (up to
/// 10 s) until it has written its keys or given up, then SIGKILLs it.
/// Returns whether it got as far as writing them all (its keys must never
/// be committed either way: it never asks to).
pub async fn write_then_die(address: std::net::SocketAddr, insert: &str, prefix: &str) -> bool {
    let mut child = tokio::process::Command::new(std::env::current_exe().expect("the test binary"))
        .args([
            "--exact",
            "faults::client::killable_writer",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(WRITER, format!("{address}|{insert}|{prefix}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the writer process");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let ready = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.trim() == "READY" {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    child.start_kill().expect("SIGKILL");
    let _ = child.wait().await;
    ready
}

/// The writer itself (does nothing unless started by [`write_then_die`]).
#[tokio::test(flavor = "current_thread")]
#[ignore = "a process the fault suite starts and kills; does nothing on its own"]
async fn killable_writer() {
    let Ok(spec) = std::env::var(WRITER) else {
        return;
    };
    let mut parts = spec.splitn(3, '|');
    let (Some(address), Some(insert), Some(prefix)) = (parts.next(), parts.next(), parts.next())
    else {
        panic!("{WRITER}={spec}: want ADDR|SQL|PREFIX");
    };
    let Ok(mut client) = SessionsClient::connect(format!("http://{address}")).await else {
        return;
    };
    let (requests, inbox) = mpsc::channel(8);
    let Ok(answers) = client.attach(ReceiverStream::new(inbox)).await else {
        return;
    };
    let mut answers = answers.into_inner();
    let _ = requests
        .send(SessionRequest::begin(BeginSession::labelled([(
            "test",
            "killed-writer",
        )])))
        .await;
    for (n, key) in writer_keys(prefix).iter().enumerate() {
        let _ = requests
            .send(SessionRequest::execute_within(
                n as u64 + 1,
                insert.to_owned(),
                vec![pb::Value::text(key), pb::Value::text("killed")],
                Duration::from_secs(5),
            ))
            .await;
        loop {
            match answers.next().await {
                Some(Ok(SessionResponse {
                    response: Some(Answer::Done(_)),
                    ..
                })) => break,
                Some(Ok(SessionResponse {
                    response: Some(Answer::Error(_)),
                    ..
                }))
                | Some(Err(_))
                | None => return,
                Some(Ok(_)) => {}
            }
        }
    }
    // The harness printed `test … ... ` without a line break.
    println!("\nREADY");
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}
