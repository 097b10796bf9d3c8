//! Processes the tests start and kill: this same test binary run again
//! (the re-exec pattern), with one `#[ignore]`d test selected. Each fixture
//! does its work only when its environment variable is set, and returns at
//! once otherwise, so a plain `cargo test -- --ignored` run is unaffected.

use std::time::Duration;

use sqlgate::grpc::pb::{
    self, BeginSession, SessionRequest, SessionResponse, session_response::Response as Answer,
    sessions_client::SessionsClient,
};
use tokio::sync::mpsc;
use tokio_stream::{StreamExt, wrappers::ReceiverStream};

/// `ADDR,MODE` runs [`killable_session_client`] against sqlgate at `ADDR`
/// in `MODE` (`lock` or `sleep`).
pub const SESSION_CLIENT: &str = "SQLGATE_FIXTURE_SESSION_CLIENT";

/// The fixture `name` (a test of this module) as a process of its own: the
/// test harness runs that one test, and lets it print to stdout.
pub fn command(name: &str) -> tokio::process::Command {
    let mut command =
        tokio::process::Command::new(std::env::current_exe().expect("the test binary"));
    command.args([
        "--exact",
        &format!("fixtures::{name}"),
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    command
}

/// How long each of the client's statements may run: longer than any test.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(60);

/// A session client that can be killed like a real one: the session tests
/// start it as a separate process, wait for `READY`, then SIGKILL it.
///
/// Begins a session, inserts a row into `pending` (id 7), locks row 1 of
/// `locked` with `FOR UPDATE`, and in `sleep` mode also starts
/// `SELECT pg_sleep(30)`. Then it prints `READY <session id>` on a line of
/// its own and waits to be killed, its stream still open.
#[tokio::test(flavor = "current_thread")]
#[ignore = "a process the killed-client tests start; does nothing on its own"]
async fn killable_session_client() {
    let Ok(spec) = std::env::var(SESSION_CLIENT) else {
        return;
    };
    let (address, mode) = spec.split_once(',').unwrap_or((spec.as_str(), "lock"));
    let mut client = SessionsClient::connect(format!("http://{address}"))
        .await
        .expect("connect");
    let (requests, inbox) = mpsc::channel(8);
    let mut answers = client
        .attach(ReceiverStream::new(inbox))
        .await
        .expect("attach")
        .into_inner();
    let send = |request| {
        let requests = requests.clone();
        async move { requests.send(request).await.expect("send") }
    };
    send(SessionRequest::begin(BeginSession::labelled([(
        "test",
        "killed-client",
    )])))
    .await;
    let session_id = match answers.next().await {
        Some(Ok(SessionResponse {
            response: Some(Answer::Began(began)),
            ..
        })) => began.session_id,
        other => panic!("no began: {other:?}"),
    };
    send(SessionRequest::execute_within(
        1,
        "INSERT INTO pending (id) VALUES ($1)",
        vec![pb::Value::int(7)],
        STATEMENT_TIMEOUT,
    ))
    .await;
    send(SessionRequest::execute_within(
        2,
        "SELECT id FROM locked WHERE id = 1 FOR UPDATE",
        vec![],
        STATEMENT_TIMEOUT,
    ))
    .await;
    let mut done = 0;
    while done < 2 {
        match answers.next().await {
            Some(Ok(SessionResponse {
                response: Some(Answer::Done(_)),
                ..
            })) => done += 1,
            Some(Ok(SessionResponse {
                response: Some(Answer::Error(error)),
                ..
            })) => panic!("statement failed: {}", error.message),
            Some(Ok(_)) => {}
            other => panic!("stream ended: {other:?}"),
        }
    }
    if mode == "sleep" {
        send(SessionRequest::execute_within(
            3,
            "SELECT pg_sleep(30)",
            vec![],
            STATEMENT_TIMEOUT,
        ))
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The harness has printed `test … ... ` without a line break: start a
    // line of our own.
    println!("\nREADY {session_id}");
    // Wait to be killed; keep the stream open.
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}
