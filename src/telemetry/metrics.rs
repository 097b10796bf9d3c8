//! Metrics, named after the OpenTelemetry semantic conventions for RPC
//! servers and database clients, plus sqlgate's own session, deadline and
//! connection figures. One meter provider per application, read by a
//! Prometheus registry (for the `/metrics` endpoint) and/or an OTLP
//! periodic reader; with neither configured nothing is built and the call
//! path records nothing.
//!
//! Pool, session and count figures are observed at collection time from
//! what sqlgate keeps anyway (no work per call); only the two duration
//! histograms and the pool wait histogram are recorded as things happen.

use std::{fmt, sync::Arc, time::Duration};

use opentelemetry::{
    KeyValue,
    metrics::{Histogram, Meter, MeterProvider as _},
};
use opentelemetry_otlp::MetricExporter;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use tonic::Code;

use super::{
    counts,
    names::{code_name, known_method},
    otlp,
};
use crate::{
    config::Settings,
    db::{Backend, PoolHandle, PoolObserver, PoolSnapshot},
    session::SessionRegistry,
};

/// A histogram of durations in seconds, with the conventions' buckets.
fn seconds(
    meter: &Meter,
    name: &'static str,
    description: &'static str,
) -> opentelemetry::metrics::Histogram<f64> {
    meter
        .f64_histogram(name)
        .with_unit("s")
        .with_description(description)
        .with_boundaries(DURATION_BUCKETS.to_vec())
        .build()
}

/// Histogram buckets for durations in seconds (the conventions' advice).
const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// An application's metrics: the provider (flushed and stopped at
/// shutdown), the Prometheus registry it feeds, and the instruments the
/// call layer records into.
#[derive(Debug, Default)]
pub struct Metrics {
    provider: Option<SdkMeterProvider>,
    registry: Option<prometheus::Registry>,
    calls: Option<CallMetrics>,
}

impl Metrics {
    /// Builds the provider the settings ask for (`metrics.listen`: a
    /// Prometheus registry; an OTLP endpoint: a periodic OTLP export) and
    /// registers every instrument over `pool` and `sessions`. Off (nothing
    /// built) when neither is set. Must run inside the Tokio runtime (the
    /// OTLP exporter's channel is made here).
    pub(crate) fn start(
        settings: &Settings,
        pool: &Arc<dyn PoolHandle>,
        sessions: &Arc<SessionRegistry>,
    ) -> Result<Self, String> {
        let endpoint = otlp::endpoint(&settings.otlp, otlp::Signal::Metrics);
        let prometheus_on = settings.metrics.listen.is_some();
        if !prometheus_on && endpoint.is_none() {
            return Ok(Self::default());
        }
        let mut builder = SdkMeterProvider::builder().with_resource(otlp::resource(&settings.otlp));
        let registry = if prometheus_on {
            let registry = prometheus::Registry::new();
            let reader = opentelemetry_prometheus::exporter()
                .with_registry(registry.clone())
                .build()
                .map_err(|err| format!("Prometheus exporter: {err}"))?;
            builder = builder.with_reader(reader);
            Some(registry)
        } else {
            None
        };
        if let Some(endpoint) = endpoint {
            let exporter = endpoint
                .aim(MetricExporter::builder().with_tonic())
                .build()
                .map_err(|err| format!("OTLP metric exporter: {err}"))?;
            builder = builder.with_reader(PeriodicReader::builder(exporter).build());
        }
        let provider = builder.build();
        let meter = provider.meter("sqlgate");
        let backend = pool.backend();
        observe_pool(&meter, pool);
        observe_sessions(&meter, sessions);
        observe_counts(&meter);
        let wait_time = seconds(
            &meter,
            "db.client.connection.wait_time",
            "Time callers waited for a pooled connection",
        );
        let create_time = seconds(
            &meter,
            "db.client.connection.create_time",
            "Time it took to open a connection a caller needed",
        );
        let pool_name = pool_attributes(backend);
        let created_pool = pool_name.clone();
        pool.observe(PoolObserver {
            waited: Box::new(move |waited, _timed_out| {
                wait_time.record(waited.as_secs_f64(), &pool_name);
            }),
            created: Box::new(move |took| {
                create_time.record(took.as_secs_f64(), &created_pool);
            }),
        });
        let calls = CallMetrics::new(&meter, backend);
        sessions.measure_with(calls.clone());
        Ok(Self {
            provider: Some(provider),
            registry,
            calls: Some(calls),
        })
    }

    /// What the call layer records into; `None` when metrics are off.
    pub(crate) fn calls(&self) -> Option<CallMetrics> {
        self.calls.clone()
    }

    /// The Prometheus registry, when `metrics.listen` is set.
    pub(crate) fn registry(&self) -> Option<prometheus::Registry> {
        self.registry.clone()
    }

    /// Exports what is left and stops (at shutdown).
    pub(crate) fn shutdown(&self) {
        if let Some(provider) = &self.provider
            && let Err(err) = provider.shutdown()
        {
            tracing::warn!(%err, "metrics: final export failed");
        }
    }
}

/// The pool's attributes: which database system, which pool.
fn pool_attributes(backend: Backend) -> [KeyValue; 2] {
    [
        KeyValue::new("db.system.name", db_system(backend)),
        KeyValue::new("db.client.connection.pool.name", "sqlgate"),
    ]
}

/// `db.system.name` as the conventions spell it.
pub(crate) fn db_system(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => "postgresql",
        Backend::MySql => "mysql",
        Backend::Sqlite => "sqlite",
    }
}

/// A pool figure exported as a gauge: name, unit, description, reader.
type PoolGauge = (
    &'static str,
    &'static str,
    &'static str,
    fn(&PoolSnapshot) -> i64,
);

/// The pool figures, read from a snapshot at each collection.
fn observe_pool(meter: &Meter, pool: &Arc<dyn PoolHandle>) {
    let attributes = pool_attributes(pool.backend());
    let with_state = |state: &'static str| {
        let mut all = attributes.to_vec();
        all.push(KeyValue::new("db.client.connection.state", state));
        all
    };
    let (idle_attributes, used_attributes) = (with_state("idle"), with_state("used"));
    let figures = pool.clone();
    meter
        .i64_observable_up_down_counter("db.client.connection.count")
        .with_unit("{connection}")
        .with_description("Connections open now, by state")
        .with_callback(move |observer| {
            let snapshot = figures.snapshot();
            observer.observe(i64::from(snapshot.idle_connections), &idle_attributes);
            observer.observe(i64::from(snapshot.in_use_connections), &used_attributes);
        })
        .build();
    let gauges: [PoolGauge; 3] = [
        (
            "db.client.connection.max",
            "{connection}",
            "Most connections the pool may open",
            |s| i64::from(s.max_connections),
        ),
        (
            "db.client.connection.idle.min",
            "{connection}",
            "Idle connections the pool keeps open",
            |s| i64::from(s.min_connections),
        ),
        (
            "db.client.connection.pending_requests",
            "{request}",
            "Callers waiting for a connection now",
            |s| i64::from(s.waiting),
        ),
    ];
    for (name, unit, description, read) in gauges {
        let figures = pool.clone();
        let attributes = attributes.clone();
        meter
            .i64_observable_up_down_counter(name)
            .with_unit(unit)
            .with_description(description)
            .with_callback(move |observer| observer.observe(read(&figures.snapshot()), &attributes))
            .build();
    }
    let figures = pool.clone();
    meter
        .u64_observable_counter("db.client.connection.timeouts")
        .with_unit("{timeout}")
        .with_description("Acquisitions that gave up waiting for a connection")
        .with_callback(move |observer| {
            observer.observe(figures.snapshot().acquire_timeouts, &attributes);
        })
        .build();
}

/// Sessions open now, and ended so far by reason.
fn observe_sessions(meter: &Meter, sessions: &Arc<SessionRegistry>) {
    let open = sessions.clone();
    meter
        .i64_observable_up_down_counter("sqlgate.session.count")
        .with_unit("{session}")
        .with_description("Sessions open now")
        .with_callback(move |observer| {
            observer.observe(i64::try_from(open.open_count()).unwrap_or(i64::MAX), &[]);
        })
        .build();
    let ended = sessions.clone();
    meter
        .u64_observable_counter("sqlgate.session.ended")
        .with_unit("{session}")
        .with_description("Sessions ended, by reason")
        .with_callback(move |observer| {
            for (reason, count) in ended.ended_counts() {
                observer.observe(count, &[KeyValue::new("reason", reason)]);
            }
        })
        .build();
}

/// Deadlines exceeded by phase, connections closed by cause.
fn observe_counts(meter: &Meter) {
    meter
        .u64_observable_counter("sqlgate.deadline.exceeded")
        .with_unit("{call}")
        .with_description("Calls and statements cut by their deadline, by phase")
        .with_callback(|observer| {
            for (phase, count) in counts::DEADLINE_PHASES.iter().zip(counts::deadlines()) {
                observer.observe(count, &[KeyValue::new("phase", *phase)]);
            }
        })
        .build();
    meter
        .u64_observable_counter("sqlgate.connection.closed")
        .with_unit("{connection}")
        .with_description("Pooled connections closed instead of reused, by cause")
        .with_callback(|observer| {
            for (cause, count) in counts::CLOSE_CAUSES.iter().zip(counts::closed()) {
                observer.observe(count, &[KeyValue::new("cause", *cause)]);
            }
        })
        .build();
}

/// The histograms recorded as calls end.
#[derive(Clone)]
pub(crate) struct CallMetrics {
    rpc_duration: Histogram<f64>,
    operation_duration: Histogram<f64>,
    db_system: &'static str,
}

impl fmt::Debug for CallMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallMetrics").finish_non_exhaustive()
    }
}

impl CallMetrics {
    fn new(meter: &Meter, backend: Backend) -> Self {
        Self {
            rpc_duration: seconds(
                meter,
                "rpc.server.call.duration",
                "Duration of gRPC calls, to the end of the response stream",
            ),
            operation_duration: seconds(
                meter,
                "db.client.operation.duration",
                "Duration of database operations (Query calls and session statements)",
            ),
            db_system: db_system(backend),
        }
    }

    /// A call to `path` ended with `code` after `elapsed`.
    pub(crate) fn call(&self, path: &str, code: Code, elapsed: Duration) {
        let method = known_method(path);
        self.rpc_duration.record(
            elapsed.as_secs_f64(),
            &[
                KeyValue::new("rpc.system.name", "grpc"),
                KeyValue::new("rpc.method", method),
                KeyValue::new("rpc.response.status_code", code_name(code)),
            ],
        );
    }

    /// A database operation (`operation`: `SELECT`, `INSERT`, … or
    /// `BATCH`) ended with `code` after `elapsed`.
    pub(crate) fn operation(&self, operation: &'static str, code: Code, elapsed: Duration) {
        let mut attributes = vec![
            KeyValue::new("db.system.name", self.db_system),
            KeyValue::new("db.operation.name", operation),
        ];
        if code != Code::Ok {
            attributes.push(KeyValue::new("error.type", code_name(code)));
        }
        self.operation_duration
            .record(elapsed.as_secs_f64(), &attributes);
    }
}
