//! The client's end of a `Sessions/Attach` stream, as the tests drive it:
//! request builders, a small session type, and the checks every session
//! test shares (the database sees the transaction; how the stream ended).

use std::time::{Duration, Instant};

use sqlgate::grpc::pb::{
    self, BeginSession, SessionRequest, SessionResponse, session_request::Request as R,
    session_response::Response as Answer, sessions_client::SessionsClient, value::Kind,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming, transport::Channel};

use crate::{
    helpers::{Backend, TestApp, error_details, spawn_app, v},
    observe::DatabaseView,
};

/// How long sqlgate may take to clean up after a session ends: cancel,
/// roll back, return the connection.
pub const CLEANUP_BOUND: Duration = Duration::from_secs(1);

/// How long any one answer may take before the test gives up on it.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// The next answer on `answers`, within [`ANSWER_WITHIN`].
async fn next_answer(
    answers: &mut Streaming<SessionResponse>,
) -> Result<Option<SessionResponse>, tonic::Status> {
    tokio::time::timeout(ANSWER_WITHIN, answers.message())
        .await
        .expect("an answer within 10 s")
}

/// A client's end of one session stream.
pub struct Session {
    pub requests: Option<mpsc::Sender<SessionRequest>>,
    pub answers: Streaming<SessionResponse>,
    pub id: String,
    /// The request id [`Session::query`] uses next.
    next_request: u64,
    /// When the last request was sent: the server's idle clock starts
    /// after it.
    pub last_sent: Option<Instant>,
}

impl Session {
    /// Opens a stream without sending anything.
    pub async fn attach(
        channel: Channel,
    ) -> Result<(mpsc::Sender<SessionRequest>, Streaming<SessionResponse>), tonic::Status> {
        Self::attach_tagged(channel, &[]).await
    }

    /// [`Session::attach`], the call carrying `tags` as `sqlgate-tag` metadata.
    pub async fn attach_tagged(
        channel: Channel,
        tags: &[&str],
    ) -> Result<(mpsc::Sender<SessionRequest>, Streaming<SessionResponse>), tonic::Status> {
        Self::attach_call(channel, tags, None).await
    }

    /// [`Session::attach_tagged`], the call carrying a `grpc-timeout`
    /// header when `timeout` is set (by hand: tonic's client-side timeout
    /// would cut the call locally and hide what the server does).
    pub async fn attach_call(
        channel: Channel,
        tags: &[&str],
        timeout: Option<Duration>,
    ) -> Result<(mpsc::Sender<SessionRequest>, Streaming<SessionResponse>), tonic::Status> {
        let (requests, inbox) = mpsc::channel(16);
        let mut call = tonic::Request::new(ReceiverStream::new(inbox));
        if let Some(timeout) = timeout {
            let header = format!("{}m", timeout.as_millis());
            call.metadata_mut()
                .insert("grpc-timeout", header.parse().expect("ascii"));
        }
        for tag in tags {
            call.metadata_mut()
                .append("sqlgate-tag", tag.parse().expect("a tag"));
        }
        let answers = SessionsClient::new(channel)
            .attach(call)
            .await?
            .into_inner();
        Ok((requests, answers))
    }

    /// Begins a session; the error status if the server refuses it.
    pub async fn begin(app: &TestApp, labels: &[(&str, &str)]) -> Result<Self, tonic::Status> {
        Self::begin_on(
            app.channel.clone(),
            BeginSession::labelled(labels.iter().copied()),
        )
        .await
    }

    /// Begins a session with `begin` over `channel`.
    pub async fn begin_on(channel: Channel, begin: BeginSession) -> Result<Self, tonic::Status> {
        Self::begin_tagged(channel, begin, &[]).await
    }

    /// [`Session::begin_on`], the Attach call carrying `tags`.
    pub async fn begin_tagged(
        channel: Channel,
        begin: BeginSession,
        tags: &[&str],
    ) -> Result<Self, tonic::Status> {
        Self::begin_call(channel, begin, tags, None).await
    }

    /// [`Session::begin_tagged`], the Attach call carrying a
    /// `grpc-timeout` of `timeout` when set.
    pub async fn begin_call(
        channel: Channel,
        begin: BeginSession,
        tags: &[&str],
        timeout: Option<Duration>,
    ) -> Result<Self, tonic::Status> {
        let (requests, mut answers) = Self::attach_call(channel, tags, timeout).await?;
        requests
            .send(SessionRequest::begin(begin))
            .await
            .expect("send begin");
        match next_answer(&mut answers).await? {
            Some(SessionResponse {
                response: Some(Answer::Began(began)),
                ..
            }) => Ok(Self {
                requests: Some(requests),
                answers,
                id: began.session_id,
                next_request: 1_000,
                last_sent: None,
            }),
            other => panic!("expected began, got {other:?}"),
        }
    }

    pub async fn send(&mut self, request: SessionRequest) {
        self.last_sent = Some(Instant::now());
        self.requests
            .as_ref()
            .expect("stream open")
            .send(request)
            .await
            .expect("send");
    }

    /// Runs a statement and collects its rows, or the request's error.
    pub async fn execute(
        &mut self,
        app: &TestApp,
        request_id: u64,
        sql: &str,
        params: Vec<pb::Value>,
    ) -> Result<Vec<pb::Row>, tonic_types::pb::Status> {
        self.run(request_id, app.sql(sql), params).await
    }

    /// Runs `sql` exactly as given (no placeholder rewriting).
    async fn run(
        &mut self,
        request_id: u64,
        sql: String,
        params: Vec<pb::Value>,
    ) -> Result<Vec<pb::Row>, tonic_types::pb::Status> {
        self.send(SessionRequest::execute(request_id, sql, params))
            .await;
        self.outcome(request_id).await
    }

    /// The next answer on the stream (within 10 s); panics if the stream
    /// failed or ended.
    pub async fn next(&mut self) -> SessionResponse {
        next_answer(&mut self.answers)
            .await
            .expect("stream ok")
            .expect("an answer")
    }

    /// The outcome of request `request_id`, already sent: its rows, or its
    /// error.
    pub async fn outcome(
        &mut self,
        request_id: u64,
    ) -> Result<Vec<pb::Row>, tonic_types::pb::Status> {
        let mut rows = Vec::new();
        loop {
            let answer = next_answer(&mut self.answers)
                .await
                .expect("stream ok")
                .expect("an answer");
            assert_eq!(answer.request_id, request_id, "{answer:?}");
            match answer.response {
                Some(Answer::Frame(frame)) => {
                    if let Some(pb::result_frame::Frame::Rows(batch)) = frame.frame {
                        rows.extend(batch.rows);
                    }
                }
                Some(Answer::Done(_)) => return Ok(rows),
                Some(Answer::Error(error)) => return Err(error),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    pub async fn commit(self) {
        self.end(SessionRequest::commit()).await;
    }

    pub async fn rollback(self) {
        self.end(SessionRequest::rollback()).await;
    }

    /// Sends commit or rollback and checks the matching answer.
    pub async fn end(mut self, request: SessionRequest) {
        let committing = matches!(request.request, Some(R::Commit(_)));
        self.send(request).await;
        let answer = next_answer(&mut self.answers)
            .await
            .expect("ok")
            .expect("answer");
        match answer.response {
            Some(Answer::Committed(_)) if committing => {}
            Some(Answer::RolledBack(_)) if !committing => {}
            other => panic!("unexpected answer {other:?}"),
        }
    }

    /// The client vanishes as a cancelled call does: the response stream
    /// is dropped (the call is reset) before the request side could send a
    /// clean half-close.
    pub fn vanish(self) {
        let Session {
            requests, answers, ..
        } = self;
        drop(answers);
        drop(requests);
    }

    /// Begins a session at `isolation`, read-only or not; panics unless
    /// the server answers `began`.
    pub async fn begin_as(app: &TestApp, isolation: pb::IsolationLevel, read_only: bool) -> Self {
        Self::begin_on(
            app.channel.clone(),
            BeginSession {
                isolation: isolation.into(),
                read_only,
                ..BeginSession::default()
            },
        )
        .await
        .expect("began")
    }

    /// Runs `sql` (no parameters, the next request id) and returns its rows'
    /// values, or the request's error as a `tonic::Status` with its details.
    pub async fn query(&mut self, sql: &str) -> Result<Vec<Vec<Kind>>, tonic::Status> {
        let request_id = self.next_request;
        self.next_request += 1;
        match self.run(request_id, sql.to_owned(), vec![]).await {
            Ok(rows) => Ok(rows
                .into_iter()
                .map(|row| {
                    row.values
                        .into_iter()
                        .map(|value| value.kind.expect("a kind"))
                        .collect()
                })
                .collect()),
            Err(error) => Err(error_status(&error)),
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

    /// Reads to the end of the stream (each answer within 10 s) and returns
    /// its final status.
    pub async fn final_status(&mut self) -> Option<tonic::Status> {
        loop {
            match next_answer(&mut self.answers).await {
                Ok(Some(_)) => {}
                Ok(None) => return None,
                Err(status) => return Some(status),
            }
        }
    }
}

/// Begins a session and inserts `id` into `t` in it, then checks that the
/// database sees the session's transaction open: the precondition that
/// makes every later "cleaned up" assertion mean something.
pub async fn session_holding_a_write(app: &TestApp, view: &mut DatabaseView, id: i64) -> Session {
    let mut session = Session::begin(app, &[]).await.expect("begin");
    write_and_see_it_open(app, view, &mut session, id).await;
    session
}

/// Inserts `id` into `t` in `session`, then checks that the database sees
/// the session's transaction open.
pub async fn write_and_see_it_open(
    app: &TestApp,
    view: &mut DatabaseView,
    session: &mut Session,
    id: i64,
) {
    session
        .execute(app, 1, "INSERT INTO t VALUES ($1)", vec![v::int(id)])
        .await
        .expect("insert");
    let seen = view.seen().await;
    assert_eq!(
        seen.open_transactions, 1,
        "the database sees the session's open transaction: {seen:?}"
    );
}

/// A sqlgate over `backend` with a table `t`, the database's view of its
/// connections, and a session holding a write to `t` (seen open); `None`
/// where the backend is skipped outside CI.
pub async fn app_with_a_session_holding_a_write(
    backend: Backend,
) -> Option<(TestApp, DatabaseView, Session)> {
    let app = spawn_app(backend).await?;
    app.run("CREATE TABLE t (id INTEGER)").await;
    let mut view = DatabaseView::of(&app).await;
    let session = session_holding_a_write(&app, &mut view, 1).await;
    Some((app, view, session))
}

/// Reads to the end of a session's stream (within 5 s) and returns its
/// final status, which must be an error carrying `end_reason`.
pub async fn ended_with(session: &mut Session, code: Code, end_reason: &str) {
    let status = tokio::time::timeout(Duration::from_secs(5), session.final_status())
        .await
        .expect("the session's stream ends within 5 s")
        .expect("an ending status");
    assert_eq!(status.code(), code, "{status:?}");
    let (reason, metadata, _) = error_details(&status);
    assert_eq!(reason, "SESSION_ENDED", "{status:?}");
    assert_eq!(
        metadata.get("end_reason").map(String::as_str),
        Some(end_reason),
        "{status:?}"
    );
}

/// Waits until `reason` has been counted `count` times.
pub async fn wait_for_end(app: &TestApp, reason: &str, count: u64, within: Duration) {
    let started = Instant::now();
    loop {
        let ended = app.pool_stats().await.sessions_ended;
        if ended.get(reason).copied().unwrap_or_default() >= count {
            return;
        }
        assert!(
            started.elapsed() < within,
            "{reason} not counted within {within:?}: {ended:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A session's in-stream error as the `tonic::Status` a client library
/// would build from it, details included.
pub fn error_status(error: &tonic_types::pb::Status) -> tonic::Status {
    use prost::Message;
    tonic::Status::with_details(
        Code::from_i32(error.code),
        error.message.clone(),
        error.encode_to_vec().into(),
    )
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

/// Begins two sessions, then a third that a session limit (`limit`) must
/// refuse with RESOURCE_EXHAUSTED; returns the two and the refusal.
pub async fn two_sessions_and_a_refused_third(
    app: &TestApp,
    limit: &str,
) -> (Session, Session, tonic::Status) {
    let first = Session::begin(app, &[]).await.expect("first");
    let second = Session::begin(app, &[]).await.expect("second");
    let status = match Session::begin(app, &[]).await {
        Err(status) => status,
        Ok(_) => panic!("a third session must be refused: {limit}"),
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    (first, second, status)
}
