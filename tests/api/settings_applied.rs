//! Configuration keys the README lists, each seen to take effect: the pool's
//! idle and lifetime limits, and every method's default and maximum
//! deadline (the maximum caps what a client asks for).

use std::time::{Duration, Instant};

use futures::StreamExt;
use sqlgate::grpc::pb;
use tonic::Code;

use crate::{
    helpers::{Backend, RawClient, WAIT, raw_query_client, spawn_app_with, within},
    pg_activity::{Backends, sqlgate_backends},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_idle_connections_above_the_minimum_close_after_the_idle_timeout() {
    let Some(app) = spawn_app_with(Backend::Postgres, |s| {
        s.pool.max_connections = 4;
        s.pool.min_connections = 1;
        s.pool.idle_timeout = Duration::from_secs(1);
    })
    .await
    else {
        return;
    };
    // Four calls at once open four connections.
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let mut query = app.query.clone();
            tokio::spawn(async move {
                query
                    .execute(pb::ExecuteRequest {
                        sql: "SELECT pg_sleep(0.3)".into(),
                        params: vec![],
                        max_rows: 0,
                    })
                    .await
            })
        })
        .collect();
    for call in calls {
        within(WAIT, "a call", call)
            .await
            .expect("join")
            .expect("pg_sleep");
    }
    // sqlgate's backends: the pool's four, and the control connection that
    // cancels statements.
    let mut direct = app.postgres_direct().await;
    assert_eq!(app.pool_stats().await.open_connections, 4);
    assert_eq!(
        sqlgate_backends(&mut direct, &app.db.name, Backends::All).await,
        5
    );
    // A second later the three above the minimum are closed; one stays.
    let started = Instant::now();
    loop {
        let open = sqlgate_backends(&mut direct, &app.db.name, Backends::All).await - 1;
        if open == 1 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{open} connections still open 5 s after they went idle (idle timeout 1 s, minimum 1)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "closed after {:?}, before the idle timeout",
        started.elapsed()
    );
    assert_eq!(app.pool_stats().await.open_connections, 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connections_are_replaced_after_their_lifetime() {
    let Some(app) = spawn_app_with(Backend::Postgres, |s| {
        s.pool.max_connections = 1;
        s.pool.min_connections = 1;
        s.pool.max_lifetime = Duration::from_secs(1);
    })
    .await
    else {
        return;
    };
    let pid = || async {
        match app.run("SELECT pg_backend_pid()").await.rows[0].values[0].kind {
            Some(pb::value::Kind::IntValue(pid)) => pid,
            ref other => panic!("pid came back as {other:?}"),
        }
    };
    let opened = Instant::now();
    let first = pid().await;
    assert_eq!(pid().await, first, "the one connection is reused");
    // Replaced once past its lifetime (checked when it goes back to the
    // pool and by the pool's reaper), never before.
    loop {
        let now = pid().await;
        if now != first {
            break;
        }
        assert!(
            opened.elapsed() < Duration::from_secs(3),
            "the connection outlived its 1 s lifetime by 2 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        opened.elapsed() >= Duration::from_millis(900),
        "replaced after {:?}, before its lifetime",
        opened.elapsed()
    );
    assert!(app.pool_stats().await.connections_opened >= 2);
    app.stop().await;
}

/// A request with `grpc-timeout` set by hand (none when `timeout` is None).
fn request<T>(message: T, timeout: Option<Duration>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(timeout) = timeout {
        let header = format!("{}m", timeout.as_millis());
        request
            .metadata_mut()
            .insert("grpc-timeout", header.parse().expect("ascii"));
    }
    request
}

fn sleep_request() -> pb::ExecuteRequest {
    pb::ExecuteRequest {
        sql: "SELECT pg_sleep(10)".into(),
        params: vec![],
        max_rows: 0,
    }
}

/// How long each method takes to answer DEADLINE_EXCEEDED for a 10 s
/// statement, with `timeout` as the client's deadline.
async fn deadline_of(client: &mut RawClient, method: &str, timeout: Option<Duration>) -> Duration {
    let started = Instant::now();
    let status = match method {
        "execute" => within(
            WAIT,
            "Execute",
            client.execute(request(sleep_request(), timeout)),
        )
        .await
        .expect_err("deadline"),
        "execute_batch" => {
            let batch = pb::ExecuteBatchRequest {
                statements: vec![pb::BatchStatement {
                    sql: "SELECT pg_sleep(10)".into(),
                    params: vec![],
                }],
                max_rows: 0,
            };
            within(
                WAIT,
                "ExecuteBatch",
                client.execute_batch(request(batch, timeout)),
            )
            .await
            .expect_err("deadline")
        }
        _ => {
            let mut frames = within(
                WAIT,
                "ExecuteStream",
                client.execute_stream(request(sleep_request(), timeout)),
            )
            .await
            .expect("the stream opens")
            .into_inner();
            loop {
                match within(WAIT, "a frame", frames.next()).await {
                    Some(Ok(_)) => {}
                    Some(Err(status)) => break status,
                    None => panic!("the stream ended without its deadline error"),
                }
            }
        }
    };
    assert_eq!(
        status.code(),
        Code::DeadlineExceeded,
        "{method}: {status:?}"
    );
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_each_method_has_its_default_deadline_and_caps_the_clients() {
    // Each method gets its own numbers, so that mixing them up fails.
    let budgets = [
        ("execute", 300, 500),
        ("execute_stream", 400, 600),
        ("execute_batch", 350, 550),
    ];
    let Some(app) = spawn_app_with(Backend::Postgres, |s| {
        let ms = Duration::from_millis;
        s.deadlines.execute.default = ms(300);
        s.deadlines.execute.max = ms(500);
        s.deadlines.execute_stream.default = ms(400);
        s.deadlines.execute_stream.max = ms(600);
        s.deadlines.execute_batch.default = ms(350);
        s.deadlines.execute_batch.max = ms(550);
    })
    .await
    else {
        return;
    };
    let mut client = raw_query_client(app.address);
    for (method, default, max) in budgets {
        let (default, max) = (Duration::from_millis(default), Duration::from_millis(max));
        let slack = Duration::from_millis(150);
        let took = deadline_of(&mut client, method, None).await;
        assert!(
            took >= default && took < default + slack,
            "{method} without a deadline answered after {took:?}; its default is {default:?}"
        );
        let took = deadline_of(&mut client, method, Some(Duration::from_secs(3600))).await;
        assert!(
            took >= max && took < max + slack,
            "{method} asked for an hour answered after {took:?}; its maximum is {max:?}"
        );
        // A deadline under the maximum is the client's own.
        let asked = Duration::from_millis(200);
        let took = deadline_of(&mut client, method, Some(asked)).await;
        assert!(
            took >= asked && took < asked + slack,
            "{method} asked for {asked:?} answered after {took:?}"
        );
    }
    app.stop().await;
}

/// `statement_timeout` as PostgreSQL shows it (`1998ms`, `2s`, `1h`), in ms.
fn timeout_millis(shown: &str) -> u64 {
    let (number, unit) = shown.split_at(
        shown
            .find(|c: char| c.is_alphabetic())
            .unwrap_or(shown.len()),
    );
    let number: u64 = number
        .parse()
        .unwrap_or_else(|_| panic!("a number in {shown:?}"));
    match unit {
        "ms" | "" => number,
        "s" => number * 1000,
        "min" => number * 60_000,
        "h" => number * 3_600_000,
        other => panic!("unit {other:?} in {shown:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_transaction_is_bounded_in_the_database_by_what_is_left_of_its_deadline() {
    let Some(app) = spawn_app_with(Backend::Postgres, |_| {}).await else {
        return;
    };
    app.run("CREATE TABLE seen (setting TEXT)").await;
    let mut client = raw_query_client(app.address);
    // A write runs in a transaction whose SET LOCAL statement_timeout is
    // the call's remaining budget: the database itself stops it in time.
    within(
        WAIT,
        "the insert",
        client.execute(request(
            pb::ExecuteRequest {
                sql: "INSERT INTO seen SELECT current_setting('statement_timeout')".into(),
                params: vec![],
                max_rows: 0,
            },
            Some(Duration::from_secs(2)),
        )),
    )
    .await
    .expect("insert");
    let rows = app.run("SELECT setting FROM seen").await.rows;
    assert_eq!(rows.len(), 1);
    let Some(pb::value::Kind::TextValue(shown)) = &rows[0].values[0].kind else {
        panic!("{rows:?}")
    };
    let millis = timeout_millis(shown);
    assert!(
        (1000..=2000).contains(&millis),
        "statement_timeout {shown} inside a call with a 2 s deadline"
    );
    // Outside any transaction the connection's backstop (the longest method
    // maximum, 1 h) is back: the SET LOCAL ended with the transaction.
    let rows = app
        .run("SELECT current_setting('statement_timeout')")
        .await
        .rows;
    let Some(pb::value::Kind::TextValue(shown)) = &rows[0].values[0].kind else {
        panic!("{rows:?}")
    };
    assert_eq!(timeout_millis(shown), 3_600_000, "{shown}");
    app.stop().await;
}
