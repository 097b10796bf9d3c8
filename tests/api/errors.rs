//! The README's errors table, end to end: constraint violations on every
//! backend, and real serialization failures and deadlocks between two
//! sessions, with the codes and details a caller would check.

use std::time::Duration;

use prost::Message;
use sqlgate::grpc::pb::{
    self, BeginSession, IsolationLevel, SessionExecute, SessionRequest, SessionResponse,
    session_request::Request as R, session_response::Response as Answer,
    sessions_client::SessionsClient, value::Kind,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming};
use tonic_types::StatusExt;

use crate::{
    helpers::{Backend, TestApp, error_details, spawn_app, v},
    on_every_backend,
};

/// Bound on every wait for a session's answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

async fn constraint_violations_are_failed_precondition_with_sqlstate(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    app.run("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
        .await;
    app.run(
        "CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER NOT NULL, qty INTEGER, \
         CONSTRAINT child_parent FOREIGN KEY (parent_id) REFERENCES parent (id), \
         CONSTRAINT qty_positive CHECK (qty > 0))",
    )
    .await;
    app.run("INSERT INTO parent (id) VALUES (1)").await;
    app.run("INSERT INTO child (id, parent_id, qty) VALUES (1, 1, 5)")
        .await;
    let insert = "INSERT INTO child (id, parent_id, qty) VALUES ($1, $2, $3)";

    // (what is violated, the statement, its parameters, the expected
    // sqlstate per backend, a word of the database's own message)
    let cases = [
        (
            "foreign key (insert)",
            insert,
            vec![v::int(2), v::int(99), v::int(5)],
            ["23503", "23000", "787"],
            "foreign key",
        ),
        (
            "foreign key (delete of a referenced row)",
            "DELETE FROM parent WHERE id = $1",
            vec![v::int(1)],
            ["23503", "23000", "787"],
            "foreign key",
        ),
        (
            "check",
            insert,
            vec![v::int(3), v::int(1), v::int(0)],
            ["23514", "23000", "275"],
            "qty_positive",
        ),
        (
            "not null",
            insert,
            vec![v::int(4), v::null(), v::int(5)],
            ["23502", "23000", "1299"],
            "parent_id",
        ),
    ];
    for (what, sql, params, sqlstates, word) in cases {
        let status = app.execute(sql, params).await.expect_err(what);
        assert_eq!(
            status.code(),
            Code::FailedPrecondition,
            "{what}: {status:?}"
        );
        let (reason, metadata, fields) = error_details(&status);
        assert_eq!(reason, "DATABASE_ERROR", "{what}");
        assert!(fields.is_empty(), "{what}: {fields:?}");
        let expected = match backend {
            Backend::Postgres => sqlstates[0],
            Backend::MySql => sqlstates[1],
            Backend::Sqlite => sqlstates[2],
        };
        assert_eq!(
            metadata.get("sqlstate").map(String::as_str),
            Some(expected),
            "{what}: {status:?}"
        );
        // The database's own message reaches the caller.
        assert!(
            status.message().to_lowercase().contains(word),
            "{what}: {:?} does not mention {word:?}",
            status.message()
        );
        assert!(
            status.details_have_no_retry_info(),
            "{what}: a constraint violation is not worth retrying"
        );
    }
    // Nothing changed.
    assert_eq!(app.count("parent").await, 1);
    assert_eq!(app.count("child").await, 1);
    app.stop().await;
}
on_every_backend!(constraint_violations_are_failed_precondition_with_sqlstate);

trait NoRetry {
    fn details_have_no_retry_info(&self) -> bool;
}

impl NoRetry for tonic::Status {
    fn details_have_no_retry_info(&self) -> bool {
        self.get_error_details().retry_info().is_none()
    }
}

/// A client's end of one session.
struct Session {
    requests: mpsc::Sender<SessionRequest>,
    answers: Streaming<SessionResponse>,
}

impl Session {
    async fn begin(app: &TestApp, isolation: IsolationLevel) -> Self {
        let (requests, inbox) = mpsc::channel(8);
        requests
            .send(SessionRequest {
                request: Some(R::Begin(BeginSession {
                    isolation: isolation as i32,
                    ..BeginSession::default()
                })),
            })
            .await
            .expect("send begin");
        let mut answers = SessionsClient::new(app.channel.clone())
            .attach(ReceiverStream::new(inbox))
            .await
            .expect("attach")
            .into_inner();
        let began = Self::next(&mut answers).await;
        assert!(
            matches!(began.response, Some(Answer::Began(_))),
            "{began:?}"
        );
        Self { requests, answers }
    }

    async fn next(answers: &mut Streaming<SessionResponse>) -> SessionResponse {
        tokio::time::timeout(ANSWER_WITHIN, answers.message())
            .await
            .expect("an answer in time")
            .expect("stream ok")
            .expect("an answer")
    }

    async fn send(&self, request_id: u64, sql: String) {
        self.requests
            .send(SessionRequest {
                request: Some(R::Execute(SessionExecute {
                    request_id,
                    sql,
                    params: vec![],
                    timeout: None,
                })),
            })
            .await
            .expect("send execute");
    }

    /// The outcome of request `request_id`: its rows, or its error.
    async fn outcome(&mut self, request_id: u64) -> Result<Vec<pb::Row>, tonic::Status> {
        let mut rows = Vec::new();
        loop {
            let answer = Self::next(&mut self.answers).await;
            assert_eq!(answer.request_id, request_id, "{answer:?}");
            match answer.response {
                Some(Answer::Frame(frame)) => {
                    if let Some(pb::result_frame::Frame::Rows(batch)) = frame.frame {
                        rows.extend(batch.rows);
                    }
                }
                Some(Answer::Done(_)) => return Ok(rows),
                Some(Answer::Error(error)) => return Err(as_status(error)),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    async fn run(&mut self, request_id: u64, sql: String) -> Result<Vec<pb::Row>, tonic::Status> {
        self.send(request_id, sql).await;
        self.outcome(request_id).await
    }

    async fn end(mut self, commit: bool) {
        let request = if commit {
            R::Commit(pb::CommitSession {})
        } else {
            R::Rollback(pb::RollbackSession {})
        };
        self.requests
            .send(SessionRequest {
                request: Some(request),
            })
            .await
            .expect("send end");
        let answer = Self::next(&mut self.answers).await;
        match answer.response {
            Some(Answer::Committed(_)) if commit => {}
            Some(Answer::RolledBack(_)) if !commit => {}
            other => panic!("unexpected answer to commit={commit}: {other:?}"),
        }
    }
}

/// A session's error answer as the `tonic::Status` a unary call would carry.
fn as_status(error: tonic_types::pb::Status) -> tonic::Status {
    tonic::Status::with_details(
        Code::from_i32(error.code),
        error.message.clone(),
        error.encode_to_vec().into(),
    )
}

/// ABORTED, with RetryInfo and the SQLSTATE: a failure worth retrying.
fn assert_retryable(status: &tonic::Status, sqlstates: &[&str]) {
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    let (reason, metadata, _) = error_details(status);
    assert_eq!(reason, "DATABASE_ERROR");
    let sqlstate = metadata.get("sqlstate").map(String::as_str);
    assert!(
        sqlstate.is_some_and(|s| sqlstates.contains(&s)),
        "sqlstate {sqlstate:?}, expected one of {sqlstates:?}"
    );
    let details = status.get_error_details();
    let retry = details.retry_info().expect("RetryInfo");
    assert!(retry.retry_delay.is_some(), "{retry:?}");
}

async fn value_of(app: &TestApp, id: i64) -> i64 {
    let rows = app
        .execute("SELECT v FROM t WHERE id = $1", vec![v::int(id)])
        .await
        .expect("select v")
        .rows;
    assert_eq!(rows.len(), 1);
    match rows[0].values[0].kind {
        Some(Kind::IntValue(n)) => n,
        ref other => panic!("v came back as {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_serialization_failure_is_aborted_with_retry_info() {
    let Some(app) = spawn_app(Backend::Postgres).await else {
        return;
    };
    app.run("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)")
        .await;
    app.run("INSERT INTO t (id, v) VALUES (1, 0), (2, 0)").await;

    // Two serializable sessions both read, then both write the same row.
    let mut first = Session::begin(&app, IsolationLevel::Serializable).await;
    let mut second = Session::begin(&app, IsolationLevel::Serializable).await;
    for session in [&mut first, &mut second] {
        let rows = session
            .run(1, "SELECT sum(v) FROM t".into())
            .await
            .expect("read");
        assert_eq!(rows.len(), 1);
    }
    first
        .run(2, "UPDATE t SET v = v + 1 WHERE id = 1".into())
        .await
        .expect("first write");
    first.end(true).await;
    let status = second
        .run(2, "UPDATE t SET v = v + 10 WHERE id = 1".into())
        .await
        .expect_err("the second write cannot be serialized");
    assert_retryable(&status, &["40001"]);
    assert!(
        status.message().contains("serialize"),
        "{}",
        status.message()
    );
    second.end(false).await;
    assert_eq!(value_of(&app, 1).await, 1, "only the first write stands");

    // Retried as RetryInfo suggests, it goes through.
    let mut retry = Session::begin(&app, IsolationLevel::Serializable).await;
    retry
        .run(1, "UPDATE t SET v = v + 10 WHERE id = 1".into())
        .await
        .expect("the retry");
    retry.end(true).await;
    assert_eq!(value_of(&app, 1).await, 11);
    app.stop().await;
}

/// Two sessions update rows 1 and 2 in opposite orders: the database picks
/// one as the deadlock's victim, the other goes on.
async fn deadlock_is_aborted_with_retry_info(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    app.run("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)")
        .await;
    app.run("INSERT INTO t (id, v) VALUES (1, 0), (2, 0)").await;
    let update = |id: i64| format!("UPDATE t SET v = v + 1 WHERE id = {id}");

    let mut a = Session::begin(&app, IsolationLevel::Unspecified).await;
    let mut b = Session::begin(&app, IsolationLevel::Unspecified).await;
    a.run(1, update(1)).await.expect("a locks row 1");
    b.run(1, update(2)).await.expect("b locks row 2");
    a.send(2, update(2)).await;
    // Let a block on row 2 before b closes the cycle.
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.send(2, update(1)).await;

    // One of the two is refused; the other finishes once the victim's
    // transaction has rolled back (PostgreSQL holds its locks until then).
    let (mut a_outcome, mut b_outcome) = (None, None);
    let rollback = SessionRequest {
        request: Some(R::Rollback(pb::RollbackSession {})),
    };
    let mut rollback_sent = [false; 2];
    while a_outcome.is_none() || b_outcome.is_none() {
        tokio::select! {
            outcome = a.outcome(2), if a_outcome.is_none() => a_outcome = Some(outcome),
            outcome = b.outcome(2), if b_outcome.is_none() => b_outcome = Some(outcome),
        }
        // The victim rolls back at once, which frees the survivor.
        for (index, (session, outcome)) in
            [(&a, &a_outcome), (&b, &b_outcome)].into_iter().enumerate()
        {
            if matches!(outcome, Some(Err(_))) && !rollback_sent[index] {
                session
                    .requests
                    .send(rollback.clone())
                    .await
                    .expect("rollback");
                rollback_sent[index] = true;
            }
        }
    }
    let (victim, survivor, victim_status) = match (a_outcome, b_outcome) {
        (Some(Err(status)), Some(Ok(_))) => (a, b, status),
        (Some(Ok(_)), Some(Err(status))) => (b, a, status),
        other => panic!("exactly one session must be the deadlock's victim: {other:?}"),
    };
    let sqlstates: &[&str] = match backend {
        Backend::Postgres => &["40P01"],
        _ => &["40001"],
    };
    assert_retryable(&victim_status, sqlstates);
    assert!(
        victim_status.message().to_lowercase().contains("deadlock"),
        "{}",
        victim_status.message()
    );
    let mut victim = victim;
    let rolled_back = Session::next(&mut victim.answers).await;
    assert!(
        matches!(rolled_back.response, Some(Answer::RolledBack(_))),
        "{rolled_back:?}"
    );
    survivor.end(true).await;
    // The survivor's two updates stand; the victim's are gone.
    assert_eq!(value_of(&app, 1).await, 1);
    assert_eq!(value_of(&app, 2).await, 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_deadlock_is_aborted_with_retry_info() {
    deadlock_is_aborted_with_retry_info(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_deadlock_is_aborted_with_retry_info() {
    deadlock_is_aborted_with_retry_info(Backend::MySql).await;
}
