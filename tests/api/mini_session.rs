//! The least of a session client that the backend tests need: begin with an
//! isolation level and read-only flag, run statements, roll back. Every
//! wait is bounded.

use std::time::Duration;

use sqlgate::grpc::pb::{
    self, BeginSession, SessionExecute, SessionRequest, SessionResponse,
    session_request::Request as R, session_response::Response as Answer,
    sessions_client::SessionsClient, value::Kind,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use crate::helpers::TestApp;

/// How long any one answer may take.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// A client's end of one open session.
pub struct MiniSession {
    requests: mpsc::Sender<SessionRequest>,
    answers: Streaming<SessionResponse>,
    next_request: u64,
}

impl MiniSession {
    /// Attaches and begins; panics unless the server answers `began`.
    pub async fn begin(app: &TestApp, isolation: pb::IsolationLevel, read_only: bool) -> Self {
        let (requests, inbox) = mpsc::channel(16);
        let mut answers = SessionsClient::new(app.channel.clone())
            .attach(ReceiverStream::new(inbox))
            .await
            .expect("attach")
            .into_inner();
        requests
            .send(SessionRequest {
                request: Some(R::Begin(BeginSession {
                    isolation: isolation.into(),
                    read_only,
                    ..BeginSession::default()
                })),
            })
            .await
            .expect("send begin");
        let answer = tokio::time::timeout(ANSWER_WITHIN, answers.message())
            .await
            .expect("began within 10 s")
            .expect("stream ok")
            .expect("an answer");
        assert!(
            matches!(answer.response, Some(Answer::Began(_))),
            "expected began, got {answer:?}"
        );
        Self {
            requests,
            answers,
            next_request: 1,
        }
    }

    /// Runs `sql` (no parameters) and returns its rows' values, or the
    /// request's error as a `tonic::Status` (with its details).
    pub async fn query(&mut self, sql: &str) -> Result<Vec<Vec<Kind>>, tonic::Status> {
        let request_id = self.next_request;
        self.next_request += 1;
        self.requests
            .send(SessionRequest {
                request: Some(R::Execute(SessionExecute {
                    request_id,
                    sql: sql.to_owned(),
                    params: vec![],
                    timeout: None,
                })),
            })
            .await
            .expect("send execute");
        let mut rows = Vec::new();
        loop {
            let answer = tokio::time::timeout(ANSWER_WITHIN, self.answers.message())
                .await
                .unwrap_or_else(|_| panic!("no answer to {sql:?} within 10 s"))
                .expect("stream ok")
                .expect("an answer");
            assert_eq!(answer.request_id, request_id, "{answer:?}");
            match answer.response {
                Some(Answer::Frame(frame)) => {
                    if let Some(pb::result_frame::Frame::Rows(batch)) = frame.frame {
                        rows.extend(batch.rows.into_iter().map(|row| {
                            row.values
                                .into_iter()
                                .map(|value| value.kind.expect("a kind"))
                                .collect()
                        }));
                    }
                }
                Some(Answer::Done(_)) => return Ok(rows),
                Some(Answer::Error(error)) => {
                    let code = tonic::Code::from(error.code);
                    let message = error.message.clone();
                    let details = prost::Message::encode_to_vec(&error);
                    return Err(tonic::Status::with_details(code, message, details.into()));
                }
                other => panic!("unexpected answer {other:?}"),
            }
        }
    }

    /// Runs `sql` and returns its one row; panics on an error.
    pub async fn row(&mut self, sql: &str) -> Vec<Kind> {
        let mut rows = self
            .query(sql)
            .await
            .unwrap_or_else(|status| panic!("{sql}: {status:?}"));
        assert_eq!(rows.len(), 1, "{sql}: {rows:?}");
        rows.remove(0)
    }

    /// Rolls back and waits for `rolled_back`.
    pub async fn rollback(mut self) {
        self.requests
            .send(SessionRequest {
                request: Some(R::Rollback(pb::RollbackSession {})),
            })
            .await
            .expect("send rollback");
        let answer = tokio::time::timeout(ANSWER_WITHIN, self.answers.message())
            .await
            .expect("rolled back within 10 s")
            .expect("stream ok")
            .expect("an answer");
        assert!(
            matches!(answer.response, Some(Answer::RolledBack(_))),
            "expected rolled_back, got {answer:?}"
        );
    }
}

/// The text of a value that must be text.
pub fn text(kind: &Kind) -> &str {
    match kind {
        Kind::TextValue(s) => s,
        other => panic!("expected text_value, got {other:?}"),
    }
}

/// The integer of a value that must be an int.
pub fn int(kind: &Kind) -> i64 {
    match kind {
        Kind::IntValue(n) => *n,
        other => panic!("expected int_value, got {other:?}"),
    }
}
