//! Sessions: a short transaction per call through each side, and how soon
//! sqlgate cleans up after a client process is killed (the benchmark
//! re-runs itself as that client, in its hidden `--session-client` mode).

use std::{
    collections::HashMap,
    net::SocketAddr,
    process::Stdio,
    time::{Duration, Instant},
};

use sqlgate::grpc::pb::{self, admin_client::AdminClient, sessions_client::SessionsClient};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::{
    Args, BoxError,
    measure::{Others, ab, percentile},
    report::Measurement,
    setup::Setup,
};

/// What one session answer is, for [`wait_for`].
type Answer = pb::session_response::Response;

/// Reads answers until one that `wanted` accepts; an error answer, or the
/// stream ending first, is an error.
async fn wait_for(
    answers: &mut tonic::Streaming<pb::SessionResponse>,
    what: &str,
    wanted: impl Fn(&pb::SessionResponse) -> bool,
) -> Result<(), BoxError> {
    while let Some(answer) = answers.message().await? {
        if let Some(Answer::Error(error)) = &answer.response {
            return Err(format!("waiting for {what}: {}", error.message).into());
        }
        if wanted(&answer) {
            return Ok(());
        }
    }
    Err(format!("session ended before {what}").into())
}

const SESSION_UPDATE: &str = "UPDATE bench_items SET amount = amount + 1 WHERE id = $1";

/// Opens a session, waits for `began`, sends an update of row `id` and
/// waits for its `done`: one round trip each, as the direct client awaits
/// BEGIN and then the UPDATE. The caller keeps the sender (dropping it
/// half-closes the stream, which rolls back).
async fn begin_and_update(
    channel: Channel,
    id: i64,
) -> Result<
    (
        mpsc::Sender<pb::SessionRequest>,
        tonic::Streaming<pb::SessionResponse>,
    ),
    BoxError,
> {
    let (requests, inbox) = mpsc::channel(4);
    let mut answers = SessionsClient::new(channel)
        .attach(ReceiverStream::new(inbox))
        .await?
        .into_inner();
    requests
        .send(pb::SessionRequest::begin(pb::BeginSession::default()))
        .await?;
    wait_for(&mut answers, "began", |a| {
        matches!(a.response, Some(Answer::Began(_)))
    })
    .await?;
    requests
        .send(pb::SessionRequest::execute(
            1,
            SESSION_UPDATE,
            vec![pb::Value::int(id)],
        ))
        .await?;
    wait_for(&mut answers, "the update's done", |a| {
        a.request_id == 1 && matches!(a.response, Some(Answer::Done(_)))
    })
    .await?;
    Ok((requests, answers))
}

/// One session: begin, update one row, commit, each awaited in turn.
async fn one_session(channel: Channel, id: i64) -> Result<(), BoxError> {
    let (requests, mut answers) = begin_and_update(channel, id).await?;
    requests.send(pb::SessionRequest::commit()).await?;
    wait_for(&mut answers, "committed", |a| {
        matches!(a.response, Some(Answer::Committed(_)))
    })
    .await
}

/// One session in one message: a begin carrying the update with
/// `commit_after`; waits for `committed`.
pub(crate) async fn one_message_session(channel: Channel, id: i64) -> Result<(), BoxError> {
    let update = pb::SessionExecute::new(1, SESSION_UPDATE, vec![pb::Value::int(id)]).then_commit();
    let begin = pb::SessionRequest::begin(pb::BeginSession::default().with_first(update));
    let mut answers = SessionsClient::new(channel)
        .attach(futures::stream::iter([begin]))
        .await?
        .into_inner();
    wait_for(&mut answers, "committed", |a| {
        matches!(a.response, Some(Answer::Committed(_)))
    })
    .await
}

/// The direct side of the session workloads: BEGIN, the update, COMMIT,
/// each awaited (what a direct client needs for a transaction).
fn direct_update(
    rows: i64,
) -> impl Fn(PgPool, u64) -> futures::future::BoxFuture<'static, Result<(), BoxError>>
+ Send
+ Sync
+ Clone
+ 'static {
    move |pool: PgPool, i: u64| {
        Box::pin(async move {
            let mut tx = pool.begin().await?;
            sqlx::query(SESSION_UPDATE)
                .bind((i as i64 % rows) + 1)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(())
        })
    }
}

/// Begin, update one row, commit: a short transaction per call. With
/// `one_message`, sqlgate's side sends it as one message (inline begin and
/// `commit_after`) and waits once; otherwise it awaits each step, as the
/// direct side does.
pub(crate) async fn session_update(
    setup: &Setup,
    one_message: bool,
) -> Result<Measurement, BoxError> {
    let rows = setup.rows;
    let channels = setup.channels.clone();
    let via = move |i: u64| {
        let channel = channels[i as usize % channels.len()].clone();
        let id = (i as i64 % rows) + 1;
        let call: futures::future::BoxFuture<'static, Result<(), BoxError>> = if one_message {
            Box::pin(one_message_session(channel, id))
        } else {
            Box::pin(one_session(channel, id))
        };
        call
    };
    let (name, target) = if one_message {
        (
            "session in one message: begin carrying the update with commit_after (concurrency 8)",
            (0.7, "≥ 0.7 × direct"),
        )
    } else {
        (
            "session: begin, update one row, commit (concurrency 8)",
            (0.0, ""),
        )
    };
    ab(
        setup,
        name.into(),
        8,
        direct_update(rows),
        via,
        Others::none(),
        target,
    )
    .await
}

/// The hidden client mode: a session holding a row lock, waiting to be killed.
pub(crate) async fn session_client(address: SocketAddr) -> Result<(), BoxError> {
    let channel = Channel::from_shared(format!("http://{address}"))?
        .connect()
        .await?;
    // Keep the sender: dropping it would half-close the stream and roll back.
    let (_requests, _answers) = begin_and_update(channel, 1).await?;
    println!("READY");
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}

/// Sessions ended because their client went away so far, and the pool's
/// connections in use now.
async fn ended_client_gone(admin: &mut AdminClient<Channel>) -> Result<(u64, u32), BoxError> {
    let stats = admin
        .get_pool_stats(pb::GetPoolStatsRequest {})
        .await?
        .into_inner();
    let ended: HashMap<String, u64> = stats.sessions_ended;
    Ok((
        ended.get("client_gone").copied().unwrap_or_default(),
        stats.in_use_connections,
    ))
}

/// From SIGKILL of a client process to its rollback done and connection back.
pub(crate) async fn cleanup_latency(setup: &Setup, args: &Args) -> Result<Measurement, BoxError> {
    use tokio::io::AsyncBufReadExt;
    let kills = if args.quick { 5 } else { 50 };
    let exe = std::env::current_exe()?;
    let mut admin = setup.admin.clone();
    let mut latencies = Vec::new();
    for _ in 0..kills {
        let mut child = tokio::process::Command::new(&exe)
            .args(["--session-client", &setup.address.to_string()])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        lines.next_line().await?.ok_or("client did not start")?;
        let (before, _) = ended_client_gone(&mut admin).await?;
        child.start_kill()?;
        let killed = Instant::now();
        loop {
            let (ended, in_use) = ended_client_gone(&mut admin).await?;
            if ended > before && in_use == 0 {
                break;
            }
            if killed.elapsed() > Duration::from_secs(5) {
                return Err("session not cleaned up within 5 s".into());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        latencies.push(killed.elapsed());
        child.wait().await?;
    }
    let p50 = percentile(&mut latencies, 0.5);
    let p99 = percentile(&mut latencies, 0.99).unwrap_or_default();
    eprintln!(
        "cleanup after SIGKILL: p50 {:.1} ms, p99 {p99:.1} ms",
        p50.unwrap_or_default()
    );
    Ok(Measurement {
        workload: format!("session cleanup after SIGKILL ({kills} kills)"),
        unit: "ms (p99)".into(),
        direct: None,
        sqlgate: p99,
        ratio: None,
        sqlgate_p50_ms: p50,
        sqlgate_p99_ms: Some(p99),
        direct_p50_ms: None,
        direct_p99_ms: None,
        target: "p99 < 100 ms".into(),
        met: Some(p99 < 100.0),
        pgbouncer: None,
        pgbouncer_ratio: None,
        direct_cpu: None,
        sqlgate_cpu: None,
        ..Measurement::default()
    })
}
