//! Fewer round trips per transaction: a `begin` may carry the session's
//! first statement, and an `execute` may ask to commit after it, so that
//! begin–statement–commit is one message. What the client sees in every
//! outcome (success, a failing statement, a failing commit), and what a
//! careless or hostile client gets for requests sqlgate must not run.

use sqlgate::grpc::pb::{
    self, BeginSession, SessionExecute, SessionRequest, session_response::Response as Answer,
};
use tonic::Code;

use crate::{
    helpers::{Backend, TestApp, spawn_app, v},
    observe::DatabaseView,
    on_every_backend,
    session_client::{CLEANUP_BOUND, Session},
};

/// What the server answered on one stream, in order, and how the stream
/// ended (`Ok` for status OK).
struct Exchange {
    answers: Vec<(u64, Answer)>,
    ended: Result<(), tonic::Status>,
}

impl Exchange {
    /// The answers' kinds, for comparing sequences: `began`, `frame 1`,
    /// `done 1`, `error 1 INVALID_ARGUMENT`, `committed`, `rolled_back`.
    fn kinds(&self) -> Vec<String> {
        self.answers
            .iter()
            .filter_map(|(id, answer)| match answer {
                Answer::Began(_) => Some("began".to_owned()),
                // Metadata and stats frames vary by statement and backend.
                Answer::Frame(_) => None,
                Answer::Done(_) => Some(format!("done {id}")),
                Answer::Error(error) => Some(format!("error {id} {:?}", Code::from(error.code))),
                Answer::Committed(_) => Some("committed".to_owned()),
                Answer::RolledBack(_) => Some("rolled_back".to_owned()),
            })
            .collect()
    }

    /// The rows answering `request_id`.
    fn rows(&self, request_id: u64) -> Vec<pb::Row> {
        self.answers
            .iter()
            .filter(|(id, _)| *id == request_id)
            .filter_map(|(_, answer)| match answer {
                Answer::Frame(pb::ResultFrame {
                    frame: Some(pb::result_frame::Frame::Rows(batch)),
                }) => Some(batch.rows.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }
}

/// Sends `requests` on one new session stream without waiting for any
/// answer (as a client that pipelines does), then reads every answer until
/// the server ends the stream. The request side stays open meanwhile, so
/// that only the server ends the session.
async fn exchange(app: &TestApp, requests: Vec<SessionRequest>) -> Exchange {
    exchange_then(app, requests, false).await
}

/// As [`exchange`]; with `half_close`, the client closes its side right
/// after sending (as a client whose request iterator runs out does).
async fn exchange_then(app: &TestApp, requests: Vec<SessionRequest>, half_close: bool) -> Exchange {
    let (sender, mut answers) = Session::attach(app.channel.clone()).await.expect("attach");
    for request in requests {
        sender.send(request).await.expect("send");
    }
    let sender = (!half_close).then_some(sender);
    let mut seen = Vec::new();
    let ended = loop {
        let next = tokio::time::timeout(std::time::Duration::from_secs(10), answers.message())
            .await
            .expect("the server answers within 10 s");
        match next {
            Ok(Some(answer)) => {
                let response = answer.response.expect("an answer has a response");
                seen.push((answer.request_id, response));
            }
            Ok(None) => break Ok(()),
            Err(status) => break Err(status),
        }
    };
    drop(sender);
    Exchange {
        answers: seen,
        ended,
    }
}

fn insert(app: &TestApp, request_id: u64, id: i64) -> SessionExecute {
    SessionExecute::new(
        request_id,
        app.sql("INSERT INTO t (id) VALUES ($1)"),
        vec![v::int(id)],
    )
}

/// A begin that carries its statement and commits after it.
fn one_message(app: &TestApp, request_id: u64, id: i64) -> SessionRequest {
    SessionRequest::begin(
        BeginSession::default().with_first(insert(app, request_id, id).then_commit()),
    )
}

async fn a_transaction_in_one_message(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    app.run("CREATE TABLE t (id INTEGER PRIMARY KEY)").await;
    let mut view = DatabaseView::of(&app).await;

    let done = exchange(&app, vec![one_message(&app, 7, 1)]).await;
    assert_eq!(done.kinds(), ["began", "done 7", "committed"]);
    assert!(done.ended.is_ok(), "{:?}", done.ended);
    assert_eq!(app.count("t").await, 1);

    // The client may close its side once the one message is sent.
    let done = exchange_then(&app, vec![one_message(&app, 8, 10)], true).await;
    assert_eq!(done.kinds(), ["began", "done 8", "committed"]);
    assert_eq!(app.count("t").await, 2);

    // A first statement without commit_after: the session goes on.
    let select = SessionExecute::new(
        1,
        app.sql("SELECT id FROM t WHERE id = $1"),
        vec![v::int(1)],
    );
    let done = exchange(
        &app,
        vec![
            SessionRequest::begin(BeginSession::default().with_first(select)),
            SessionRequest::execute(2, app.sql("INSERT INTO t (id) VALUES (2)"), vec![]),
            SessionRequest::execute_and_commit(3, app.sql("INSERT INTO t (id) VALUES (3)"), vec![]),
        ],
    )
    .await;
    assert_eq!(
        done.kinds(),
        ["began", "done 1", "done 2", "done 3", "committed"]
    );
    assert_eq!(done.rows(1).len(), 1);
    assert!(done.ended.is_ok(), "{:?}", done.ended);
    assert_eq!(app.count("t").await, 4);

    let ended = app.pool_stats().await.sessions_ended;
    assert_eq!(ended.get("commit"), Some(&3));
    view.assert_settles_clean(&app, CLEANUP_BOUND).await;
    app.stop().await;
}
on_every_backend!(a_transaction_in_one_message);

async fn a_failing_statement_rolls_back_instead_of_committing(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    app.run("CREATE TABLE t (id INTEGER PRIMARY KEY)").await;
    app.run("INSERT INTO t (id) VALUES (1)").await;
    let mut view = DatabaseView::of(&app).await;

    // The first statement fails (duplicate key): error, rolled back, end.
    let done = exchange(&app, vec![one_message(&app, 4, 1)]).await;
    assert_eq!(
        done.kinds(),
        ["began", "error 4 AlreadyExists", "rolled_back"]
    );
    assert!(done.ended.is_ok(), "{:?}", done.ended);

    // A statement earlier in the session is rolled back with it.
    let done = exchange(
        &app,
        vec![
            SessionRequest::begin(BeginSession::default().with_first(insert(&app, 1, 2))),
            SessionRequest::begin(BeginSession::default()),
            SessionRequest::execute_and_commit(
                3,
                app.sql("INSERT INTO missing (id) VALUES (1)"),
                vec![],
            ),
        ],
    )
    .await;
    assert_eq!(
        done.kinds(),
        [
            "began",
            "done 1",
            "error 0 FailedPrecondition",
            "error 3 InvalidArgument",
            "rolled_back"
        ]
    );
    assert_eq!(app.count("t").await, 1, "nothing of either session is kept");
    let ended = app.pool_stats().await.sessions_ended;
    assert_eq!(ended.get("rollback"), Some(&2));
    assert_eq!(ended.get("commit"), None);
    view.assert_settles_clean(&app, CLEANUP_BOUND).await;
    app.stop().await;
}
on_every_backend!(a_failing_statement_rolls_back_instead_of_committing);

/// A commit that fails (a deferred constraint checked at commit): the
/// statement's `done` has gone out, then the stream ends with the commit's
/// error, and nothing is kept. A session that is that one write is its own
/// transaction: the check fails the write itself, which is answered as a
/// failing statement, rolled back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_commit_ends_the_stream_with_its_error() {
    let Some(app) = spawn_app(Backend::Postgres).await else {
        return;
    };
    app.run("CREATE TABLE t (id INTEGER UNIQUE DEFERRABLE INITIALLY DEFERRED)")
        .await;
    app.run("INSERT INTO t (id) VALUES (1)").await;
    let mut view = DatabaseView::of(&app).await;

    let done = exchange(
        &app,
        vec![
            SessionRequest::begin(BeginSession::default().with_first(insert(&app, 5, 1))),
            SessionRequest::commit(),
        ],
    )
    .await;
    assert_eq!(done.kinds(), ["began", "done 5"]);
    let status = done.ended.expect_err("the commit fails");
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    assert_eq!(app.count("t").await, 1);
    assert_eq!(
        app.pool_stats().await.sessions_ended.get("failed"),
        Some(&1)
    );

    let done = exchange(&app, vec![one_message(&app, 6, 1)]).await;
    assert_eq!(
        done.kinds(),
        ["began", "error 6 AlreadyExists", "rolled_back"]
    );
    assert!(done.ended.is_ok(), "{:?}", done.ended);
    assert_eq!(app.count("t").await, 1);
    view.assert_settles_clean(&app, CLEANUP_BOUND).await;
    app.stop().await;
}

/// A write tagged `marker` (in a comment), to find it in `pg_stat_activity`.
fn tagged_write(request_id: u64, id: i64, marker: &str) -> SessionExecute {
    SessionExecute::new(
        request_id,
        format!("INSERT INTO t (id) VALUES ($1) /* {marker} */"),
        vec![v::int(id)],
    )
}

/// Whether the write tagged `marker` was the last thing its connection
/// ran: so when it was its own transaction; a session's COMMIT (or
/// ROLLBACK) follows it otherwise. Read directly, not through sqlgate.
async fn ran_last(direct: &mut sqlx::PgConnection, marker: &str) -> bool {
    let backends: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
         AND pid <> pg_backend_pid() AND state = 'idle' AND query LIKE '%' || $1 || '%'",
    )
    .bind(marker)
    .fetch_one(direct)
    .await
    .expect("pg_stat_activity");
    backends == 1
}

/// On PostgreSQL a session that is one write (a begin carrying it with
/// commit_after, default options) is its own transaction: one round trip
/// instead of BEGIN, the write and COMMIT. Anything that needs the
/// transaction around it still gets one: a non-default isolation, a
/// read-only begin, rows to return (something after the write could
/// still fail it), a session that goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_is_one_write_is_its_own_transaction() {
    let Some(app) = spawn_app(Backend::Postgres).await else {
        return;
    };
    app.run("CREATE TABLE t (id INTEGER PRIMARY KEY)").await;
    let mut view = DatabaseView::of(&app).await;
    let mut direct = app.postgres_direct().await;

    let alone = BeginSession::default().with_first(tagged_write(1, 1, "alone-1").then_commit());
    let done = exchange(&app, vec![SessionRequest::begin(alone)]).await;
    assert_eq!(done.kinds(), ["began", "done 1", "committed"]);
    assert!(done.ended.is_ok(), "{:?}", done.ended);
    assert!(ran_last(&mut direct, "alone-1").await, "no COMMIT after it");

    let serializable = BeginSession {
        isolation: pb::IsolationLevel::Serializable as i32,
        ..BeginSession::default().with_first(tagged_write(2, 2, "isolated-2").then_commit())
    };
    let returning = SessionExecute {
        sql: "INSERT INTO t (id) VALUES ($1) RETURNING id /* returning-3 */".to_owned(),
        ..tagged_write(3, 3, "").then_commit()
    };
    for (begin, marker) in [
        (serializable, "isolated-2"),
        (BeginSession::default().with_first(returning), "returning-3"),
    ] {
        let done = exchange(&app, vec![SessionRequest::begin(begin)]).await;
        assert_eq!(
            done.kinds().last().map(String::as_str),
            Some("committed"),
            "{marker}"
        );
        assert!(
            !ran_last(&mut direct, marker).await,
            "{marker}: COMMIT after it"
        );
    }
    let done = exchange(
        &app,
        vec![
            SessionRequest::begin(BeginSession::default().with_first(tagged_write(
                4,
                4,
                "goes-on-4",
            ))),
            SessionRequest::commit(),
        ],
    )
    .await;
    assert_eq!(done.kinds(), ["began", "done 4", "committed"]);
    assert!(!ran_last(&mut direct, "goes-on-4").await);
    // A read-only begin's write is refused by the database inside the
    // transaction, never run alone.
    let read_only = BeginSession {
        read_only: true,
        ..BeginSession::default().with_first(tagged_write(5, 5, "read-only-5").then_commit())
    };
    let done = exchange(&app, vec![SessionRequest::begin(read_only)]).await;
    assert_eq!(done.kinds().last().map(String::as_str), Some("rolled_back"));

    assert_eq!(app.count("t").await, 4);
    assert_eq!(
        app.pool_stats().await.sessions_ended.get("commit"),
        Some(&4)
    );
    view.assert_settles_clean(&app, CLEANUP_BOUND).await;
    app.stop().await;
}

/// The exchange of a session that is `only`, answered well before the
/// 3 s its statement would sleep.
async fn answered_promptly(app: &TestApp, only: SessionExecute) -> Exchange {
    let started = std::time::Instant::now();
    let begin = BeginSession::default().with_first(only);
    let done = exchange(app, vec![SessionRequest::begin(begin)]).await;
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    done
}

/// A session that is one write, cut off by its deadline. The first time,
/// nothing could cancel it but closing its connection, and a write may
/// commit just as its connection closes: the session says its outcome is
/// unknown, promptly, rather than claim a rollback — and the database did
/// stop it. The next time, that shape's connection id is learnt first: it
/// is cancelled, rolled back, and the session says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_write_session_cut_off_by_its_deadline_never_claims_a_rollback_it_cannot_know() {
    let Some(app) = spawn_app(Backend::Postgres).await else {
        return;
    };
    app.run("CREATE TABLE t (id INTEGER PRIMARY KEY)").await;
    let mut view = DatabaseView::of(&app).await;
    let slow_write = |request_id, id| SessionExecute {
        timeout: Some(prost_types::Duration {
            seconds: 0,
            nanos: 300_000_000,
        }),
        ..SessionExecute::new(
            request_id,
            "INSERT INTO t (id) SELECT $1 FROM pg_sleep(3)",
            vec![v::int(id)],
        )
        .then_commit()
    };

    let done = answered_promptly(&app, slow_write(1, 1)).await;
    assert_eq!(done.kinds(), ["began", "error 1 DeadlineExceeded"]);
    let status = done.ended.expect_err("the outcome is unknown");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status.message().contains("outcome is unknown"),
        "{status:?}"
    );
    view.assert_settles_clean(&app, CLEANUP_BOUND).await;
    assert_eq!(app.count("t").await, 0, "closing its connection stopped it");

    let done = answered_promptly(&app, slow_write(2, 2)).await;
    let kinds = done.kinds();
    assert_eq!(kinds[..2], ["began", "error 2 DeadlineExceeded"]);
    assert!(kinds.contains(&"rolled_back".to_owned()), "{kinds:?}");
    if let Err(status) = &done.ended {
        assert!(
            !status.message().contains("outcome is unknown"),
            "{status:?}"
        );
    }
    assert_eq!(app.count("t").await, 0);
    view.assert_settles_clean(&app, CLEANUP_BOUND).await;
    app.stop().await;
}

/// What a careless or hostile client might send with a begin or a
/// commit_after, and what it gets: nothing runs that must not, nothing
/// after the commit runs, and no transaction is left open.
async fn what_a_one_message_transaction_will_not_do(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    app.run("CREATE TABLE t (id INTEGER PRIMARY KEY)").await;
    let mut view = DatabaseView::of(&app).await;

    // Transaction control as the first statement is refused; commit_after
    // then rolls back.
    let commit = SessionExecute::new(1, "COMMIT", vec![]).then_commit();
    let done = exchange(
        &app,
        vec![SessionRequest::begin(
            BeginSession::default().with_first(commit),
        )],
    )
    .await;
    assert_eq!(
        done.kinds(),
        ["began", "error 1 InvalidArgument", "rolled_back"]
    );

    // A first statement that does not decode (a parameter missing its
    // value) is answered for itself, and rolls back.
    let undecodable = SessionExecute {
        params: vec![pb::Value { kind: None }],
        ..insert(&app, 2, 1).then_commit()
    };
    let done = exchange(
        &app,
        vec![SessionRequest::begin(
            BeginSession::default().with_first(undecodable),
        )],
    )
    .await;
    assert_eq!(
        done.kinds(),
        ["began", "error 2 InvalidArgument", "rolled_back"]
    );

    // Begin options that do not decode: no session, and its first
    // statement never runs.
    let bad_begin = BeginSession {
        isolation: 99,
        ..BeginSession::default().with_first(insert(&app, 3, 1).then_commit())
    };
    let done = exchange(&app, vec![SessionRequest::begin(bad_begin)]).await;
    assert_eq!(done.kinds(), Vec::<String>::new());
    assert_eq!(
        done.ended.expect_err("refused").code(),
        Code::InvalidArgument
    );

    // A read-only begin cannot write through its first statement.
    let read_only = BeginSession {
        read_only: true,
        ..BeginSession::default().with_first(insert(&app, 4, 1).then_commit())
    };
    let done = exchange(&app, vec![SessionRequest::begin(read_only)]).await;
    let kinds = done.kinds();
    assert_eq!(kinds.first().map(String::as_str), Some("began"));
    assert!(kinds[1].starts_with("error 4 "), "{kinds:?}");
    assert_eq!(kinds.last().map(String::as_str), Some("rolled_back"));
    assert_eq!(app.count("t").await, 0);

    // Requests pipelined after a commit_after are never run, nor is a
    // second commit_after.
    let done = exchange(
        &app,
        vec![
            one_message(&app, 5, 1),
            SessionRequest::execute(6, app.sql("INSERT INTO t (id) VALUES (2)"), vec![]),
            SessionRequest::execute_and_commit(7, app.sql("INSERT INTO t (id) VALUES (3)"), vec![]),
            SessionRequest::commit(),
        ],
    )
    .await;
    assert_eq!(done.kinds(), ["began", "done 5", "committed"]);
    assert!(done.ended.is_ok(), "{:?}", done.ended);
    assert_eq!(app.count("t").await, 1);

    assert_eq!(app.pool_stats().await.open_sessions, 0);
    view.assert_settles_clean(&app, CLEANUP_BOUND).await;
    app.stop().await;
}
on_every_backend!(what_a_one_message_transaction_will_not_do);

/// A client that vanishes while its one-write session's write runs: the
/// connection is closed, which stops the write on the server (nothing is
/// kept, nothing stays open), the session is counted `client_gone`, and
/// the next caller gets a clean connection. Meanwhile a second caller's
/// one-write session on another row commits as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_vanishes_mid_write_leaves_nothing_behind() {
    let Some(app) = spawn_app(Backend::Postgres).await else {
        return;
    };
    app.run("CREATE TABLE t (id INTEGER PRIMARY KEY)").await;
    let mut view = DatabaseView::of(&app).await;

    let slow = SessionExecute::new(
        1,
        "INSERT INTO t (id) SELECT $1 FROM pg_sleep(3) /* vanishing */",
        vec![v::int(1)],
    )
    .then_commit();
    let (sender, mut answers) = Session::attach(app.channel.clone()).await.expect("attach");
    sender
        .send(SessionRequest::begin(
            BeginSession::default().with_first(slow),
        ))
        .await
        .expect("send");
    let began = answers.message().await.expect("an answer").expect("began");
    assert!(
        matches!(began.response, Some(Answer::Began(_))),
        "{began:?}"
    );
    let started = std::time::Instant::now();
    while view.running("vanishing").await != 1 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "the write runs"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    // A second caller at the same time.
    let done = exchange(&app, vec![one_message(&app, 2, 2)]).await;
    assert_eq!(done.kinds(), ["began", "done 2", "committed"]);

    drop(answers);
    drop(sender);
    view.assert_settles_clean(&app, CLEANUP_BOUND).await;
    assert_eq!(view.running("vanishing").await, 0, "the write was stopped");
    assert_eq!(app.count("t").await, 1, "only the second caller's row");
    let ended = app.pool_stats().await.sessions_ended;
    assert_eq!(ended.get("client_gone"), Some(&1));
    assert_eq!(ended.get("commit"), Some(&1));
    // The next caller's one-write session runs on a clean connection.
    let done = exchange(&app, vec![one_message(&app, 3, 3)]).await;
    assert_eq!(done.kinds(), ["began", "done 3", "committed"]);
    assert_eq!(app.count("t").await, 2);
    app.stop().await;
}
