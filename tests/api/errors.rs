//! The README's errors table, end to end: constraint violations on every
//! backend, and real serialization failures and deadlocks between two
//! sessions, with the codes and details a caller would check.

use std::time::Duration;

use sqlgate::grpc::pb::{
    self, IsolationLevel, SessionRequest, session_response::Response as Answer, value::Kind,
};
use tonic::Code;
use tonic_types::StatusExt;

use crate::{
    helpers::{Backend, TestApp, error_details, spawn_app, v},
    on_every_backend,
    session_client::{Session, error_status},
};

/// Runs `sql` as request `request_id` of `session`; its rows, or its error
/// as the `tonic::Status` a unary call would carry.
async fn run(
    session: &mut Session,
    request_id: u64,
    sql: String,
) -> Result<Vec<pb::Row>, tonic::Status> {
    session
        .send(SessionRequest::execute(request_id, sql, vec![]))
        .await;
    outcome_of(session, request_id).await
}

/// The outcome of request `request_id`, already sent.
async fn outcome_of(session: &mut Session, request_id: u64) -> Result<Vec<pb::Row>, tonic::Status> {
    session
        .outcome(request_id)
        .await
        .map_err(|error| error_status(&error))
}

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
    let mut first = Session::begin_as(&app, IsolationLevel::Serializable, false).await;
    let mut second = Session::begin_as(&app, IsolationLevel::Serializable, false).await;
    for session in [&mut first, &mut second] {
        let rows = run(session, 1, "SELECT sum(v) FROM t".into())
            .await
            .expect("read");
        assert_eq!(rows.len(), 1);
    }
    run(&mut first, 2, "UPDATE t SET v = v + 1 WHERE id = 1".into())
        .await
        .expect("first write");
    first.commit().await;
    let status = run(
        &mut second,
        2,
        "UPDATE t SET v = v + 10 WHERE id = 1".into(),
    )
    .await
    .expect_err("the second write cannot be serialized");
    assert_retryable(&status, &["40001"]);
    assert!(
        status.message().contains("serialize"),
        "{}",
        status.message()
    );
    second.rollback().await;
    assert_eq!(value_of(&app, 1).await, 1, "only the first write stands");

    // Retried as RetryInfo suggests, it goes through.
    let mut retry = Session::begin_as(&app, IsolationLevel::Serializable, false).await;
    run(&mut retry, 1, "UPDATE t SET v = v + 10 WHERE id = 1".into())
        .await
        .expect("the retry");
    retry.commit().await;
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

    let mut a = Session::begin_as(&app, IsolationLevel::Unspecified, false).await;
    let mut b = Session::begin_as(&app, IsolationLevel::Unspecified, false).await;
    run(&mut a, 1, update(1)).await.expect("a locks row 1");
    run(&mut b, 1, update(2)).await.expect("b locks row 2");
    a.send(SessionRequest::execute(2, update(2), vec![])).await;
    // Let a block on row 2 before b closes the cycle.
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.send(SessionRequest::execute(2, update(1), vec![])).await;

    // One of the two is refused; the other finishes once the victim's
    // transaction has rolled back (PostgreSQL holds its locks until then).
    let (mut a_outcome, mut b_outcome) = (None, None);
    let rollback = SessionRequest::rollback();
    let mut rollback_sent = [false; 2];
    while a_outcome.is_none() || b_outcome.is_none() {
        tokio::select! {
            outcome = outcome_of(&mut a, 2), if a_outcome.is_none() => a_outcome = Some(outcome),
            outcome = outcome_of(&mut b, 2), if b_outcome.is_none() => b_outcome = Some(outcome),
        }
        // The victim rolls back at once, which frees the survivor.
        for (index, (session, outcome)) in [(&mut a, &a_outcome), (&mut b, &b_outcome)]
            .into_iter()
            .enumerate()
        {
            if matches!(outcome, Some(Err(_))) && !rollback_sent[index] {
                session.send(rollback.clone()).await;
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
    let rolled_back = victim.next().await;
    assert!(
        matches!(rolled_back.response, Some(Answer::RolledBack(_))),
        "{rolled_back:?}"
    );
    survivor.commit().await;
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
