//! The mixed load every scenario runs while its fault hits: workers that
//! each repeat one kind of call, with a deadline, until stopped. Every
//! answer is timed against its deadline, checked for a code the kind of
//! call may answer, and every write goes into the ledger.
//!
//! The clients send `grpc-timeout` over plain hyper HTTP/2 (tonic's own
//! channel would cut the call locally at the deadline and hide what sqlgate
//! answers, and when).

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use sqlgate::grpc::pb::{
    self, BatchStatement, BeginSession, ExecuteBatchRequest, ExecuteRequest, SessionRequest,
    SessionResponse, query_client::QueryClient, result_frame::Frame,
    session_response::Response as Answer, sessions_client::SessionsClient, value::Kind,
};
use tokio::{sync::mpsc, task::JoinHandle};
use tokio_stream::{StreamExt, wrappers::ReceiverStream};
use tonic::Code;

use super::{
    ledger::{Ledger, Outcome, outcome_of},
    rig::{MARGIN, Rig},
};

type Http = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    tonic::body::Body,
>;

/// One HTTP/2 connection to sqlgate, shared by the clients made from it.
#[derive(Clone)]
pub struct Connection {
    http: Http,
    origin: tonic::codegen::http::Uri,
}

impl Connection {
    /// A new connection (opened on first use).
    pub fn to(address: SocketAddr) -> Self {
        Self::patient(address, Duration::from_secs(2))
    }

    /// A new connection whose TCP connect may take up to `connect_timeout`
    /// (a storm overflows the listen backlog: SYNs are retried).
    pub fn patient(address: SocketAddr, connect_timeout: Duration) -> Self {
        let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(connect_timeout));
        let http =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .http2_only(true)
                .build(connector);
        let origin = format!("http://{address}").parse().expect("uri");
        Self { http, origin }
    }

    pub fn query(&self) -> QueryClient<Http> {
        QueryClient::with_origin(self.http.clone(), self.origin.clone())
            .max_decoding_message_size(64 << 20)
    }

    /// Opens the connection with a readiness check; the error, if any.
    pub async fn health_check(&self) -> Result<(), tonic::Status> {
        let mut health = tonic_health::pb::health_client::HealthClient::with_origin(
            self.http.clone(),
            self.origin.clone(),
        );
        let mut request = tonic::Request::new(tonic_health::pb::HealthCheckRequest {
            service: "readiness".to_owned(),
        });
        request.set_timeout(Duration::from_secs(30));
        health.check(request).await.map(drop)
    }

    pub fn sessions(&self) -> SessionsClient<Http> {
        SessionsClient::with_origin(self.http.clone(), self.origin.clone())
    }
}

/// The kinds of call the load makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CallKind {
    /// `SELECT … WHERE id = $1` (the row must be the one asked for).
    PointSelect,
    /// One `INSERT` into the ledger table (autocommit).
    Write,
    /// Three `INSERT`s in one `ExecuteBatch`.
    Batch,
    /// A 1,000-row `ExecuteStream` (complete, or an error: never short).
    Stream,
    /// A session of two `INSERT`s that commits, rolls back or is cancelled.
    Session,
    /// A statement that outlives its 500 ms deadline.
    Timeout,
}

impl CallKind {
    /// The deadline the client gives each call of this kind.
    pub fn deadline(self) -> Duration {
        match self {
            CallKind::PointSelect | CallKind::Write => Duration::from_secs(2),
            CallKind::Batch | CallKind::Stream => Duration::from_secs(3),
            CallKind::Session => Duration::from_secs(4),
            CallKind::Timeout => Duration::from_millis(500),
        }
    }
}

/// How many workers of each kind.
#[derive(Debug, Clone, Copy)]
pub struct Mix {
    pub point_selects: usize,
    pub writes: usize,
    pub batches: usize,
    pub streams: usize,
    pub sessions: usize,
    pub timeouts: usize,
}

impl Default for Mix {
    fn default() -> Self {
        Self {
            point_selects: 3,
            writes: 2,
            batches: 1,
            streams: 1,
            sessions: 2,
            timeouts: 1,
        }
    }
}

impl Mix {
    fn workers(self) -> Vec<CallKind> {
        [
            (CallKind::PointSelect, self.point_selects),
            (CallKind::Write, self.writes),
            (CallKind::Batch, self.batches),
            (CallKind::Stream, self.streams),
            (CallKind::Session, self.sessions),
            (CallKind::Timeout, self.timeouts),
        ]
        .into_iter()
        .flat_map(|(kind, n)| std::iter::repeat_n(kind, n))
        .collect()
    }
}

/// What the load saw.
#[derive(Default)]
struct Tally {
    /// Answers by kind and code.
    codes: BTreeMap<(CallKind, i32), u64>,
    /// Answers that came later than their deadline plus the margin.
    late: Vec<String>,
    /// Wrong answers: a row other than the one asked for, a short stream, a
    /// code the call may not answer.
    wrong: Vec<String>,
    /// When the last call of each kind that succeeded had started.
    last_ok: BTreeMap<CallKind, Instant>,
}

/// The load's report once stopped.
#[derive(Debug, Clone)]
pub struct Report {
    pub codes: BTreeMap<(CallKind, i32), u64>,
    pub calls: u64,
}

impl Report {
    /// Answers of `kind` with `code`.
    pub fn count(&self, kind: CallKind, code: Code) -> u64 {
        self.codes.get(&(kind, code as i32)).copied().unwrap_or(0)
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{} calls:", self.calls)?;
        let mut by_kind: BTreeMap<CallKind, Vec<String>> = BTreeMap::new();
        for ((kind, code), n) in &self.codes {
            by_kind
                .entry(*kind)
                .or_default()
                .push(format!("{:?} {n}", Code::from_i32(*code)));
        }
        for (kind, codes) in by_kind {
            writeln!(f, "  {kind:?}: {}", codes.join(", "))?;
        }
        Ok(())
    }
}

/// A running load.
pub struct Load {
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
    workers: Vec<JoinHandle<()>>,
    lenient: Arc<AtomicBool>,
    pub ledger: Ledger,
}

/// What each worker needs.
#[derive(Clone)]
struct Worker {
    connection: Connection,
    sql: Statements,
    ledger: Ledger,
    tally: Arc<Mutex<Tally>>,
    keys: Arc<AtomicU64>,
    prefix: String,
    /// Codes a call may answer besides those of its kind: UNAVAILABLE and
    /// the transport's own codes while sqlgate shuts down.
    lenient: Arc<AtomicBool>,
    /// How far past its deadline an answer may come.
    margin: Duration,
}

/// The statements, in the backend's spelling.
#[derive(Clone)]
struct Statements {
    point_select: String,
    insert: String,
    stream: String,
    sleep: String,
}

impl Load {
    /// Starts `mix` against `rig`'s sqlgate; keys start with `prefix`.
    pub fn start(rig: &Rig, mix: Mix, ledger: Ledger, prefix: &str) -> Self {
        Self::start_with_margin(rig, mix, ledger, prefix, MARGIN)
    }

    /// [`Load::start`], allowing answers up to `margin` past their deadline.
    pub fn start_with_margin(
        rig: &Rig,
        mix: Mix,
        ledger: Ledger,
        prefix: &str,
        margin: Duration,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let lenient = Arc::new(AtomicBool::new(false));
        let worker = Worker {
            connection: Connection::to(rig.address),
            sql: Statements {
                point_select: rig.sql("SELECT id, body FROM items WHERE id = $1"),
                insert: rig.sql("INSERT INTO ledger (k, via) VALUES ($1, $2)"),
                stream: "SELECT id, body FROM items ORDER BY id".to_owned(),
                sleep: rig.sleep_sql(5),
            },
            ledger: ledger.clone(),
            tally: tally.clone(),
            keys: Arc::default(),
            prefix: prefix.to_owned(),
            lenient: lenient.clone(),
            margin,
        };
        let workers = mix
            .workers()
            .into_iter()
            .enumerate()
            .map(|(n, kind)| {
                let (worker, stop) = (worker.clone(), stop.clone());
                tokio::spawn(async move { worker.run(kind, n as u64, stop).await })
            })
            .collect();
        Self {
            stop,
            tally,
            workers,
            lenient,
            ledger,
        }
    }

    /// From now on, calls may also be cut by sqlgate shutting down.
    pub fn expect_shutdown(&self) {
        self.lenient.store(true, Ordering::SeqCst);
    }

    /// Waits (up to `within`) until a call of every kind in the mix that
    /// started after `since` has succeeded: service is back without a
    /// restart. How long after `since` the last kind recovered.
    pub async fn wait_recovered(
        &self,
        kinds: &[CallKind],
        since: Instant,
        within: Duration,
    ) -> Duration {
        let started = Instant::now();
        loop {
            let missing: Vec<CallKind> = {
                let tally = self.tally.lock().expect("tally");
                kinds
                    .iter()
                    .copied()
                    .filter(|kind| tally.last_ok.get(kind).is_none_or(|at| *at < since))
                    .collect()
            };
            if missing.is_empty() {
                return since.elapsed();
            }
            assert!(
                started.elapsed() < within,
                "no successful {missing:?} within {within:?} after the fault ended"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the workers (each finishes its call in flight) and asserts
    /// that every answer was in time and right.
    pub async fn stop(self) -> Report {
        self.stop.store(true, Ordering::SeqCst);
        for worker in self.workers {
            tokio::time::timeout(Duration::from_secs(30), worker)
                .await
                .expect("a load worker finished its last call")
                .expect("a load worker ended without a panic");
        }
        let tally = self.tally.lock().expect("tally");
        let report = Report {
            codes: tally.codes.clone(),
            calls: tally.codes.values().sum(),
        };
        assert!(
            tally.late.is_empty(),
            "answers later than their deadline + the margin:\n{}\n{report}",
            tally.late.join("\n")
        );
        assert!(
            tally.wrong.is_empty(),
            "wrong answers:\n{}\n{report}",
            tally.wrong.join("\n")
        );
        report
    }
}

/// Codes any call may answer while the database is restarting, black-holed
/// or refusing connections, and while sqlgate sheds load.
const FAULT_CODES: [Code; 4] = [
    Code::Ok,
    Code::Unavailable,
    Code::DeadlineExceeded,
    Code::ResourceExhausted,
];

impl Worker {
    async fn run(self, kind: CallKind, n: u64, stop: Arc<AtomicBool>) {
        let mut round = n;
        while !stop.load(Ordering::SeqCst) {
            round += 1;
            let deadline = kind.deadline();
            let started = Instant::now();
            let call = self.call(kind, round, deadline);
            let answer = tokio::time::timeout(deadline + Duration::from_secs(10), call).await;
            let took = started.elapsed();
            let (code, wrong, detail) = match answer {
                Ok(Ok(())) => (Code::Ok, None, None),
                Ok(Err(Failure::Status(code, message))) => (code, None, Some(message)),
                Ok(Err(Failure::Wrong(code, what))) => (code, Some(what), None),
                Err(_) => (Code::Unknown, Some("no answer at all".to_owned()), None),
            };
            self.tally_answer(kind, code, wrong, detail, started, took, deadline);
            if code != Code::Ok {
                // Back off a little, as a client with retries would.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// Counts one answer; notes it if late, wrong or of a code its kind
    /// may not answer.
    #[allow(clippy::too_many_arguments)]
    fn tally_answer(
        &self,
        kind: CallKind,
        code: Code,
        wrong: Option<String>,
        detail: Option<String>,
        started: Instant,
        took: Duration,
        deadline: Duration,
    ) {
        let mut tally = self.tally.lock().expect("tally");
        *tally.codes.entry((kind, code as i32)).or_default() += 1;
        if code == Code::Ok {
            tally.last_ok.insert(kind, started);
        }
        if took > deadline + self.margin {
            tally
                .late
                .push(format!("{kind:?} answered {code:?} after {took:?}"));
        }
        let allowed = FAULT_CODES.contains(&code)
            // A session cut by the database going away ends ABORTED;
            // sqlgate shutting down cuts calls with the transport's codes.
            || (kind == CallKind::Session && code == Code::Aborted)
            || self.lenient.load(Ordering::SeqCst)
                && (matches!(code, Code::Cancelled | Code::Unknown | Code::Aborted)
                    || code == Code::Internal
                        && detail.as_deref().is_some_and(|d| d.starts_with("h2 protocol error")));
        if let Some(what) = wrong {
            tally.wrong.push(format!("{kind:?}: {what}"));
        } else if !allowed {
            tally.wrong.push(format!(
                "{kind:?} answered {code:?}: {}",
                detail.unwrap_or_default()
            ));
        }
    }

    fn key(&self, via: &str) -> String {
        let n = self.keys.fetch_add(1, Ordering::Relaxed);
        format!("{}-{via}-{n}", self.prefix)
    }

    async fn call(&self, kind: CallKind, round: u64, deadline: Duration) -> Result<(), Failure> {
        match kind {
            CallKind::PointSelect => self.point_select(round, deadline).await,
            CallKind::Write => self.write(deadline).await,
            CallKind::Batch => self.batch(deadline).await,
            CallKind::Stream => self.stream(deadline).await,
            CallKind::Session => self.session(round, deadline).await,
            CallKind::Timeout => self.timeout(deadline).await,
        }
    }

    async fn point_select(&self, round: u64, deadline: Duration) -> Result<(), Failure> {
        let id = (round * 7919 % 1000 + 1) as i64;
        let response = self
            .connection
            .query()
            .execute(timed(
                ExecuteRequest {
                    sql: self.sql.point_select.clone(),
                    params: vec![pb::Value::int(id)],
                    max_rows: 0,
                },
                deadline,
            ))
            .await
            .map_err(Failure::from)?
            .into_inner();
        match response.rows.first().and_then(|row| row.values.first()) {
            Some(pb::Value {
                kind: Some(Kind::IntValue(got)),
            }) if *got == id && response.rows.len() == 1 => Ok(()),
            other => Err(Failure::Wrong(
                Code::Ok,
                format!("asked for row {id}, got {other:?}"),
            )),
        }
    }

    async fn write(&self, deadline: Duration) -> Result<(), Failure> {
        let key = self.key("unary");
        let answer = self
            .connection
            .query()
            .execute(timed(
                ExecuteRequest {
                    sql: self.sql.insert.clone(),
                    params: vec![pb::Value::text(&key), pb::Value::text("unary")],
                    max_rows: 0,
                },
                deadline,
            ))
            .await;
        match answer {
            Ok(_) => {
                self.ledger.record(&key, Outcome::Committed);
                Ok(())
            }
            Err(status) => {
                self.ledger.record(&key, outcome_of(&status));
                Err(Failure::from(status))
            }
        }
    }

    async fn batch(&self, deadline: Duration) -> Result<(), Failure> {
        let keys: Vec<String> = (0..3).map(|_| self.key("batch")).collect();
        let statements = keys
            .iter()
            .map(|key| BatchStatement {
                sql: self.sql.insert.clone(),
                params: vec![pb::Value::text(key), pb::Value::text("batch")],
            })
            .collect();
        let answer = self
            .connection
            .query()
            .execute_batch(timed(
                ExecuteBatchRequest {
                    statements,
                    max_rows: 0,
                },
                deadline,
            ))
            .await;
        match answer {
            Ok(_) => {
                self.ledger.record_all(&keys, Outcome::Committed);
                Ok(())
            }
            Err(status) => {
                self.ledger.record_all(&keys, outcome_of(&status));
                Err(Failure::from(status))
            }
        }
    }

    async fn stream(&self, deadline: Duration) -> Result<(), Failure> {
        let mut frames = self
            .connection
            .query()
            .execute_stream(timed(
                ExecuteRequest {
                    sql: self.sql.stream.clone(),
                    params: vec![],
                    max_rows: 0,
                },
                deadline,
            ))
            .await
            .map_err(Failure::from)?
            .into_inner();
        let (mut rows, mut stats) = (0u64, None);
        while let Some(frame) = frames.next().await {
            match frame.map_err(Failure::from)?.frame {
                Some(Frame::Rows(batch)) => rows += batch.rows.len() as u64,
                Some(Frame::Stats(s)) => stats = Some(s.rows_returned),
                _ => {}
            }
        }
        match stats {
            Some(1000) if rows == 1000 => Ok(()),
            other => Err(Failure::Wrong(
                Code::Ok,
                format!("a stream ended OK with {rows} rows, stats {other:?}"),
            )),
        }
    }

    async fn timeout(&self, deadline: Duration) -> Result<(), Failure> {
        let answer = self
            .connection
            .query()
            .execute(timed(
                ExecuteRequest {
                    sql: self.sql.sleep.clone(),
                    params: vec![],
                    max_rows: 0,
                },
                deadline,
            ))
            .await;
        match answer {
            Ok(_) => Err(Failure::Wrong(
                Code::Ok,
                "a 5 s statement succeeded within 500 ms".to_owned(),
            )),
            Err(status) => Err(Failure::from(status)),
        }
    }

    /// A session of two inserts; every sixth is cancelled (the stream
    /// dropped), every third of the rest rolled back, the others commit.
    async fn session(&self, round: u64, deadline: Duration) -> Result<(), Failure> {
        let ending = match round % 6 {
            0 => Ending::Cancel,
            3 => Ending::Rollback,
            _ => Ending::Commit,
        };
        let keys = vec![self.key("session"), self.key("session")];
        let mut commit_sent = false;
        let mut rolled_back = false;
        let result = self
            .session_with(&keys, ending, deadline, &mut commit_sent, &mut rolled_back)
            .await;
        let outcome = match (&result, ending) {
            (Ok(()), Ending::Commit) => Outcome::Committed,
            // Told `rolled_back` (shutdown won the race with the commit):
            // definite, so its rows must not be there.
            (Err(_), Ending::Commit) if commit_sent && !rolled_back => Outcome::Unknown,
            _ => Outcome::Failed,
        };
        self.ledger.record_all(&keys, outcome);
        result
    }

    async fn session_with(
        &self,
        keys: &[String],
        ending: Ending,
        deadline: Duration,
        commit_sent: &mut bool,
        rolled_back: &mut bool,
    ) -> Result<(), Failure> {
        let (requests, inbox) = mpsc::channel(8);
        let send = |request: SessionRequest| {
            let requests = requests.clone();
            async move {
                requests
                    .send(request)
                    .await
                    .map_err(|_| Failure::Status(Code::Unknown, "the stream ended".to_owned()))
            }
        };
        send(SessionRequest::begin(BeginSession::labelled([(
            "load", "faults",
        )])))
        .await?;
        let mut answers = self
            .connection
            .sessions()
            .attach(timed(ReceiverStream::new(inbox), deadline))
            .await
            .map_err(Failure::from)?
            .into_inner();
        match next_answer(&mut answers).await? {
            Answer::Began(_) => {}
            other => return Err(Failure::Wrong(Code::Ok, format!("no began: {other:?}"))),
        }
        for (n, key) in keys.iter().enumerate() {
            let sent = send(SessionRequest::execute_within(
                n as u64 + 1,
                self.sql.insert.clone(),
                vec![pb::Value::text(key), pb::Value::text("session")],
                Duration::from_secs(1),
            ))
            .await;
            if sent.is_err() {
                return Err(why_ended(&mut answers).await);
            }
            loop {
                match next_answer(&mut answers).await? {
                    Answer::Done(_) => break,
                    Answer::Error(error) => {
                        // The statement failed: end the session; its
                        // answer is what the stream says next.
                        // The server may have ended the session already
                        // (its connection closed): then the send fails.
                        let _ = send(SessionRequest::rollback()).await;
                        let code = Code::from_i32(error.code);
                        let _ = next_answer(&mut answers).await;
                        return Err(Failure::Status(code, error.message));
                    }
                    _ => {}
                }
            }
        }
        match ending {
            Ending::Cancel => {
                drop(answers);
                return Ok(());
            }
            Ending::Rollback => {
                if send(SessionRequest::rollback()).await.is_err() {
                    return Err(why_ended(&mut answers).await);
                }
            }
            Ending::Commit => {
                if send(SessionRequest::commit()).await.is_err() {
                    return Err(why_ended(&mut answers).await);
                }
                *commit_sent = true;
            }
        }
        match next_answer(&mut answers).await? {
            Answer::Committed(_) if ending == Ending::Commit => Ok(()),
            Answer::RolledBack(_) if ending == Ending::Rollback => Ok(()),
            // The session ended another way first (shutdown, a
            // terminate): rolled back, and the status says why.
            Answer::RolledBack(_) => {
                *rolled_back = true;
                let why = next_answer(&mut answers).await;
                Err(match why {
                    Err(failure) => failure,
                    Ok(Answer::Error(error)) => {
                        Failure::Status(Code::from_i32(error.code), error.message)
                    }
                    Ok(other) => Failure::Wrong(
                        Code::Ok,
                        format!("{ending:?} answered rolled_back, then {other:?}"),
                    ),
                })
            }
            Answer::Error(error) => Err(Failure::Status(Code::from_i32(error.code), error.message)),
            other => Err(Failure::Wrong(
                Code::Ok,
                format!("{ending:?} answered {other:?}"),
            )),
        }
    }
}

/// Why a session's stream ended, once sending to it failed (the server
/// ended the session — its call deadline, a closed connection — and
/// stopped reading): its final status.
async fn why_ended(answers: &mut tonic::Streaming<SessionResponse>) -> Failure {
    loop {
        if let Err(failure) = next_answer(answers).await {
            return failure;
        }
    }
}

/// The next answer of a session, or why there is none.
async fn next_answer(answers: &mut tonic::Streaming<SessionResponse>) -> Result<Answer, Failure> {
    match answers.next().await {
        Some(Ok(SessionResponse {
            response: Some(answer),
            ..
        })) => Ok(answer),
        Some(Ok(_)) => Err(Failure::Wrong(Code::Ok, "an empty answer".to_owned())),
        Some(Err(status)) => Err(Failure::from(status)),
        None => Err(Failure::Status(
            Code::Unknown,
            "the stream ended".to_owned(),
        )),
    }
}

/// How a load session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Commit,
    Rollback,
    Cancel,
}

/// Why a call did not succeed.
enum Failure {
    /// The status code it ended with, and its message.
    Status(Code, String),
    /// A wrong answer (with the code it came with).
    Wrong(Code, String),
}

impl From<tonic::Status> for Failure {
    fn from(status: tonic::Status) -> Self {
        Failure::Status(status.code(), status.message().to_owned())
    }
}

/// `message` with `grpc-timeout` set to `deadline`.
fn timed<T>(message: T, deadline: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(deadline);
    request
}
