//! A session client that can be killed like a real one: the session tests
//! start it as a separate process, wait for `READY`, then SIGKILL it.
//!
//! Usage: `session_client ADDR lock|sleep` — begins a session, inserts a
//! row into `pending` (id 7), locks row 1 of `locked` with `FOR UPDATE`,
//! and with `sleep` also starts `SELECT pg_sleep(30)`. Then it prints
//! `READY <session id>` and waits to be killed.

use std::time::Duration;

use sqlgate::grpc::pb::{
    self, BeginSession, SessionExecute, SessionRequest, session_request::Request as R,
    session_response::Response as Answer, sessions_client::SessionsClient, value::Kind,
};
use tokio::sync::mpsc;
use tokio_stream::{StreamExt, wrappers::ReceiverStream};

fn execute(request_id: u64, sql: &str, params: Vec<pb::Value>) -> SessionRequest {
    SessionRequest {
        request: Some(R::Execute(SessionExecute {
            request_id,
            sql: sql.to_owned(),
            params,
            timeout: Some(prost_types::Duration {
                seconds: 60,
                nanos: 0,
            }),
        })),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let address = args.next().ok_or("usage: session_client ADDR lock|sleep")?;
    let mode = args.next().unwrap_or_else(|| "lock".to_owned());
    let mut client = SessionsClient::connect(format!("http://{address}")).await?;
    let (requests, inbox) = mpsc::channel(8);
    let mut answers = client
        .attach(ReceiverStream::new(inbox))
        .await?
        .into_inner();
    requests
        .send(SessionRequest {
            request: Some(R::Begin(BeginSession {
                labels: [("test".to_owned(), "killed-client".to_owned())].into(),
                ..BeginSession::default()
            })),
        })
        .await?;
    let session_id = match answers.next().await {
        Some(Ok(pb::SessionResponse {
            response: Some(Answer::Began(began)),
            ..
        })) => began.session_id,
        other => return Err(format!("no began: {other:?}").into()),
    };
    let id = pb::Value {
        kind: Some(Kind::IntValue(7)),
    };
    requests
        .send(execute(1, "INSERT INTO pending (id) VALUES ($1)", vec![id]))
        .await?;
    requests
        .send(execute(
            2,
            "SELECT id FROM locked WHERE id = 1 FOR UPDATE",
            vec![],
        ))
        .await?;
    let mut done = 0;
    while done < 2 {
        match answers.next().await {
            Some(Ok(pb::SessionResponse {
                response: Some(Answer::Done(_)),
                ..
            })) => done += 1,
            Some(Ok(pb::SessionResponse {
                response: Some(Answer::Error(error)),
                ..
            })) => {
                return Err(format!("statement failed: {}", error.message).into());
            }
            Some(Ok(_)) => {}
            other => return Err(format!("stream ended: {other:?}").into()),
        }
    }
    if mode == "sleep" {
        requests
            .send(execute(3, "SELECT pg_sleep(30)", vec![]))
            .await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("READY {session_id}");
    // Wait to be killed; keep the stream open.
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}
