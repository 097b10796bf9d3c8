//! The deadline storm: healthy point selects beside callers whose
//! statements always outlive their deadline, and how sqlgate answers those.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use sqlgate::grpc::pb::query_client::QueryClient;

use super::{request, select::point_select_via};
use crate::{
    BoxError,
    measure::{closed_loop, median, order_text, percentile, ratios_text},
    report::Measurement,
    setup::Setup,
};

/// The storm: callers whose statement (a 200 ms sleep) always outlives
/// their deadline.
const STORM_CALLERS: usize = 4;
const STORM_DEADLINE: Duration = Duration::from_millis(20);
const STORM_SQL: &str = "SELECT pg_sleep(0.2)";
/// The healthy point-select callers measured with and without the storm.
const HEALTHY_CALLERS: usize = 12;

/// The two sides of a storm round.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Weather {
    Calm,
    Storm,
}

/// HTTP/2 to sqlgate without tonic's `Channel`, for the storm's callers.
/// A `Channel` ends a call itself when the call's `grpc-timeout` runs out
/// (the caller sees CANCELLED "Timeout expired", made up on the client),
/// usually before sqlgate's own answer arrives; these callers wait for
/// sqlgate's answer, so that it is what gets measured. (hyper's HTTP/2
/// client is compiled in already: tonic's `Channel` is built on it.)
type PlainHttp2 = tower::util::BoxCloneService<
    http::Request<tonic::body::Body>,
    http::Response<hyper::body::Incoming>,
    // A concrete error: with `BoxError` here, the generated client's
    // futures fail the `Send` check that `tokio::spawn` makes.
    std::io::Error,
>;

/// A query client over one [`PlainHttp2`] connection to `address`.
async fn query_client_without_local_deadline(
    address: SocketAddr,
) -> Result<QueryClient<PlainHttp2>, BoxError> {
    let tcp = tokio::net::TcpStream::connect(address).await?;
    tcp.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await?;
    tokio::spawn(connection);
    let authority: http::uri::Authority = address.to_string().parse()?;
    let service = tower::service_fn(move |mut request: http::Request<tonic::body::Body>| {
        let mut sender = sender.clone();
        let authority = authority.clone();
        // tonic's client writes only the path; `Channel` adds the rest.
        let uri = request.uri().path_and_query().cloned().map(|path| {
            http::Uri::builder()
                .scheme("http")
                .authority(authority)
                .path_and_query(path)
                .build()
        });
        async move {
            match uri {
                Some(Ok(uri)) => *request.uri_mut() = uri,
                _ => return Err(std::io::Error::other("cannot make the request's URI")),
            }
            sender.ready().await.map_err(std::io::Error::other)?;
            sender
                .send_request(request)
                .await
                .map_err(std::io::Error::other)
        }
    });
    Ok(QueryClient::new(PlainHttp2::new(service)))
}

/// How one of the storm's calls ended.
enum Ending {
    /// sqlgate answered DEADLINE_EXCEEDED, this long after the deadline
    /// (counted from when the client sent the call).
    DeadlineExceeded(Duration),
    /// Anything else: a status code (or what happened) and its message.
    Other(String, String),
}

/// One storm caller: calls back to back until `stop`, each waiting for
/// sqlgate's answer; the call in flight at `stop` is finished and counted.
async fn storm_caller(
    mut client: QueryClient<PlainHttp2>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<Ending> {
    let mut endings = Vec::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let begun = Instant::now();
        let call = client.execute(request(STORM_SQL, vec![], Some("20m")));
        let ending = match tokio::time::timeout(Duration::from_secs(10), call).await {
            Err(_) => Ending::Other("no answer".into(), "none within 10 s".into()),
            Ok(Ok(_)) => Ending::Other(
                "OK".into(),
                "a 200 ms sleep finished within its 20 ms deadline".into(),
            ),
            Ok(Err(status)) if status.code() == tonic::Code::DeadlineExceeded => {
                Ending::DeadlineExceeded(begun.elapsed().saturating_sub(STORM_DEADLINE))
            }
            Ok(Err(status)) => {
                Ending::Other(format!("{:?}", status.code()), status.message().to_owned())
            }
        };
        endings.push(ending);
    }
    endings
}

/// Healthy point selects with and without callers that time out, calm and
/// storm in a random order in each round; and how the timed-out calls
/// were answered. Any answer to them but DEADLINE_EXCEEDED fails the run.
pub(crate) async fn deadline_storm(setup: &Setup) -> Result<Vec<Measurement>, BoxError> {
    let healthy = point_select_via(setup, &setup.channels);
    let mut storm_clients = Vec::new();
    for _ in 0..STORM_CALLERS {
        storm_clients.push(query_client_without_local_deadline(setup.address).await?);
    }
    let (mut calm_rates, mut storm_rates) = (Vec::new(), Vec::new());
    let (mut ratios, mut orders) = (Vec::new(), Vec::new());
    let (mut calm_lat, mut storm_lat) = (Vec::new(), Vec::new());
    let mut endings = Vec::new();
    for _ in 0..setup.rounds {
        let order = setup.shuffled(&[Weather::Calm, Weather::Storm]);
        let (mut calm, mut stormy) = (0.0, 0.0);
        for weather in &order {
            if *weather == Weather::Calm {
                let sample = closed_loop(HEALTHY_CALLERS, setup.seconds, healthy.clone()).await?;
                calm = sample.rate();
                calm_lat.extend(sample.latencies);
                continue;
            }
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let callers: Vec<_> = storm_clients
                .iter()
                .map(|client| tokio::spawn(storm_caller(client.clone(), stop.clone())))
                .collect();
            let sample = closed_loop(HEALTHY_CALLERS, setup.seconds, healthy.clone()).await;
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            // Wait for the last calls too: every call is counted, and none
            // spills into the next side.
            for caller in callers {
                endings.extend(caller.await?);
            }
            let sample = sample?;
            stormy = sample.rate();
            storm_lat.extend(sample.latencies);
        }
        calm_rates.push(calm);
        storm_rates.push(stormy);
        ratios.push(stormy / calm);
        orders.push(order_text(&order));
    }

    let mut after_deadline = Vec::new();
    let mut other: std::collections::BTreeMap<String, (usize, String)> = Default::default();
    for ending in endings {
        match ending {
            Ending::DeadlineExceeded(late) => after_deadline.push(late),
            Ending::Other(code, message) => other.entry(code).or_insert((0, message)).0 += 1,
        }
    }
    let calls = after_deadline.len() + other.values().map(|(n, _)| n).sum::<usize>();
    if !other.is_empty() {
        let others: Vec<String> = other
            .iter()
            .map(|(code, (n, message))| format!("{n} × {code} (first: {message:?})"))
            .collect();
        return Err(format!(
            "the deadline storm's {calls} calls should all end DEADLINE_EXCEEDED; {} did, and: {}",
            after_deadline.len(),
            others.join("; ")
        )
        .into());
    }
    if calls == 0 {
        return Err("the deadline storm made no calls".into());
    }

    let (calm_rate, storm_rate) = (median(calm_rates), median(storm_rates));
    let ratio = median(ratios.clone());
    let late_p50 = percentile(&mut after_deadline, 0.5);
    let late_p99 = percentile(&mut after_deadline, 0.99);
    eprintln!(
        "deadline storm: healthy calls at {ratio:.2} of calm throughput (rounds: {}); \
         {calls} timed-out calls, all DEADLINE_EXCEEDED, answered {:.1} / {:.1} ms \
         (p50 / p99) after their deadline",
        ratios_text(&ratios),
        late_p50.unwrap_or_default(),
        late_p99.unwrap_or_default(),
    );
    let healthy = Measurement {
        workload: format!(
            "healthy point selects ({HEALTHY_CALLERS} callers) while {STORM_CALLERS} more \
             time out every 20 ms"
        ),
        unit: "ops/s".into(),
        direct: Some(calm_rate),
        sqlgate: storm_rate,
        ratio: Some(ratio),
        ratios,
        orders,
        sqlgate_p50_ms: percentile(&mut storm_lat, 0.5),
        sqlgate_p99_ms: percentile(&mut storm_lat, 0.99),
        direct_p50_ms: percentile(&mut calm_lat, 0.5),
        direct_p99_ms: percentile(&mut calm_lat, 0.99),
        target: "(\"direct\" = the same callers without the storm)".into(),
        ..Measurement::default()
    };
    let timed_out = Measurement {
        workload: format!(
            "the storm's calls ({calls}, 20 ms deadline, 200 ms statement): \
             sqlgate's answer after the deadline"
        ),
        unit: "ms (p99)".into(),
        sqlgate: late_p99.unwrap_or_default(),
        sqlgate_p50_ms: late_p50,
        sqlgate_p99_ms: late_p99,
        target: format!("every call DEADLINE_EXCEEDED ({calls} of {calls})"),
        met: Some(true),
        deadline_exceeded: Some(calls),
        ..Measurement::default()
    };
    Ok(vec![healthy, timed_out])
}
