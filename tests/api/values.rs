//! Values survive the round trip — parameter in, column out — unchanged, on
//! every backend: fixed extremes first, then random values (proptest).
//! Values a backend cannot take: `value_refusals`.

use std::str::FromStr;

use bigdecimal::BigDecimal;
use proptest::{prelude::*, test_runner::TestRunner};
use prost_types::Timestamp;
use sqlgate::grpc::pb::{self, value::Kind};

use crate::{
    helpers::{Backend, TestApp, spawn_app, v},
    on_every_backend,
};

/// A column per value kind, with the backend's type for it.
struct Kinds {
    columns: Vec<(&'static str, &'static str)>,
}

fn kinds(backend: Backend) -> Kinds {
    let columns = match backend {
        Backend::Postgres => vec![
            ("b", "BOOLEAN"),
            ("i", "BIGINT"),
            ("f", "DOUBLE PRECISION"),
            ("t", "TEXT"),
            ("y", "BYTEA"),
            ("d", "NUMERIC(38,10)"),
            ("ts", "TIMESTAMPTZ"),
            ("dt", "TIMESTAMP"),
            ("da", "DATE"),
            ("ti", "TIME"),
            ("j", "JSONB"),
            ("u", "UUID"),
        ],
        Backend::MySql => vec![
            ("b", "BOOLEAN"),
            ("i", "BIGINT"),
            ("f", "DOUBLE"),
            ("t", "TEXT CHARACTER SET utf8mb4"),
            ("y", "LONGBLOB"),
            ("d", "DECIMAL(38,10)"),
            ("ts", "TIMESTAMP(6) NULL"),
            ("dt", "DATETIME(6)"),
            ("da", "DATE"),
            ("ti", "TIME(6)"),
            ("j", "LONGTEXT"),
            ("u", "CHAR(36)"),
        ],
        Backend::Sqlite => vec![
            ("b", "BOOLEAN"),
            ("i", "INTEGER"),
            ("f", "REAL"),
            ("t", "TEXT"),
            ("y", "BLOB"),
            ("d", "TEXT"),
            ("ts", "TEXT"),
            ("dt", "DATETIME"),
            ("da", "DATE"),
            ("ti", "TIME"),
            ("j", "TEXT"),
            ("u", "TEXT"),
        ],
    };
    Kinds { columns }
}

async fn create_table(app: &TestApp) {
    let columns: Vec<String> = kinds(app.backend)
        .columns
        .iter()
        .map(|(name, ty)| format!("{name} {ty}"))
        .collect();
    app.run(&format!(
        "CREATE TABLE vals (id INTEGER PRIMARY KEY, {})",
        columns.join(", ")
    ))
    .await;
}

/// What comes back for `sent` on `backend`: the same value, except where
/// the backend has no such type and stores it as text (documented).
fn expected_back(backend: Backend, sent: &Kind) -> Kind {
    match (backend, sent) {
        (Backend::Sqlite, Kind::DecimalValue(s) | Kind::JsonValue(s) | Kind::UuidValue(s)) => {
            Kind::TextValue(s.clone())
        }
        (Backend::Sqlite, Kind::TimestampValue(ts)) => Kind::TextValue(
            chrono::DateTime::from_timestamp(ts.seconds, u32::try_from(ts.nanos).expect("nanos"))
                .expect("ts")
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        ),
        (Backend::MySql, Kind::JsonValue(s)) => Kind::TextValue(s.clone()),
        (Backend::MySql, Kind::UuidValue(s)) => Kind::TextValue(s.clone()),
        _ => sent.clone(),
    }
}

/// Inserts one row of `values` (in column order) and reads it back.
async fn round_trip(app: &TestApp, id: i64, values: Vec<pb::Value>) -> Vec<pb::Value> {
    let kinds = kinds(app.backend);
    let names: Vec<&str> = kinds.columns.iter().map(|(n, _)| *n).collect();
    let placeholders: Vec<String> = (2..=names.len() + 1).map(|i| format!("${i}")).collect();
    let mut params = vec![v::int(id)];
    params.extend(values);
    app.execute(
        &format!(
            "INSERT INTO vals (id, {}) VALUES ($1, {})",
            names.join(", "),
            placeholders.join(", ")
        ),
        params,
    )
    .await
    .unwrap_or_else(|status| panic!("insert: {status:?}"));
    let select = format!("SELECT {} FROM vals WHERE id = $1", names.join(", "));
    let back = app
        .execute(&select, vec![v::int(id)])
        .await
        .unwrap_or_else(|status| panic!("select: {status:?}"));
    assert_eq!(back.rows.len(), 1);
    // A stream writes its rows straight from the database's values where
    // the backend can; a unary call through the values sqlgate decodes.
    // The caller must get the same bytes either way.
    let streamed = app
        .stream(&select, vec![v::int(id)])
        .await
        .unwrap_or_else(|status| panic!("stream: {status:?}"));
    assert_eq!(
        streamed
            .iter()
            .map(prost::Message::encode_to_vec)
            .collect::<Vec<_>>(),
        back.rows
            .iter()
            .map(prost::Message::encode_to_vec)
            .collect::<Vec<_>>(),
        "streamed and unary rows differ"
    );
    let values = back
        .rows
        .into_iter()
        .next()
        .map(|r| r.values)
        .unwrap_or_default();
    // Callers zip these with what they sent: a short row must fail here,
    // not shorten the comparison.
    assert_eq!(
        values.len(),
        names.len(),
        "a value for every column: {values:?}"
    );
    values
}

fn extremes() -> Vec<Vec<Kind>> {
    let ts = |seconds, nanos| Kind::TimestampValue(Timestamp { seconds, nanos });
    vec![
        vec![
            Kind::BoolValue(true),
            Kind::IntValue(i64::MAX),
            Kind::FloatValue(1.5e300),
            Kind::TextValue("héllo wörld 👩‍⚕️ \u{10FFFF}".into()),
            Kind::BytesValue(vec![0, 1, 0, 255, 0]),
            Kind::DecimalValue("9999999999999999999999999999.9999999999".into()),
            ts(1_700_000_000, 123_456_000),
            Kind::DatetimeValue("2024-02-29T23:59:59.999999".into()),
            Kind::DateValue("2024-02-29".into()),
            Kind::TimeValue("23:59:59.000001".into()),
            Kind::JsonValue(r#"{"a": [1, 2.5, null, "x"]}"#.into()),
            Kind::UuidValue("123e4567-e89b-12d3-a456-426614174000".into()),
        ],
        vec![
            Kind::BoolValue(false),
            Kind::IntValue(i64::MIN),
            Kind::FloatValue(-0.1),
            Kind::TextValue(String::new()),
            Kind::BytesValue(vec![]),
            Kind::DecimalValue("-0.0000000001".into()),
            ts(0, 1000),
            Kind::DatetimeValue("1970-01-01T00:00:00".into()),
            Kind::DateValue("1000-01-01".into()),
            Kind::TimeValue("00:00:00".into()),
            Kind::JsonValue("[]".into()),
            Kind::UuidValue("00000000-0000-0000-0000-000000000000".into()),
        ],
    ]
}

async fn extreme_values_round_trip_unchanged(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    create_table(&app).await;
    for (id, row) in extremes().into_iter().enumerate() {
        let sent: Vec<pb::Value> = row.iter().cloned().map(v::of).collect();
        let back = round_trip(&app, id as i64, sent).await;
        for (column, (sent, back)) in row.iter().zip(back).enumerate() {
            assert_eq!(
                back.kind.as_ref(),
                Some(&expected_back(backend, sent)),
                "column {column} on {backend:?}"
            );
        }
    }
    // NULL in every column comes back as NULL.
    let nulls = vec![v::null(); kinds(backend).columns.len()];
    let back = round_trip(&app, 99, nulls).await;
    assert!(
        back.iter().all(|v| v.kind == Some(Kind::NullValue(0))),
        "{back:?}"
    );
    app.stop().await;
}
on_every_backend!(extreme_values_round_trip_unchanged);

/// Random values of every kind, each column nullable.
fn arb_row(backend: Backend) -> impl Strategy<Value = Vec<Kind>> {
    let micros = 0u32..1_000_000;
    // MySQL's TIMESTAMP ends in January 2038.
    let last_second = if backend == Backend::MySql {
        2_147_483_647
    } else {
        4_102_444_800
    };
    let timestamp = (1i64..last_second, micros.clone()).prop_map(|(s, us)| {
        Kind::TimestampValue(Timestamp {
            seconds: s,
            nanos: (us * 1000) as i32,
        })
    });
    let datetime = (0i64..4_102_444_800, micros.clone()).prop_map(|(s, us)| {
        let dt = chrono::DateTime::from_timestamp(s, us * 1000)
            .expect("dt")
            .naive_utc();
        Kind::DatetimeValue(sqlgate::query::value::text_form::format_datetime(&dt))
    });
    let date = (0i64..4_102_444_800).prop_map(|s| {
        Kind::DateValue(
            chrono::DateTime::from_timestamp(s, 0)
                .expect("d")
                .format("%Y-%m-%d")
                .to_string(),
        )
    });
    let time = (0u32..86_400, micros).prop_map(|(s, us)| {
        let t = chrono::NaiveTime::from_num_seconds_from_midnight_opt(s, us * 1000).expect("t");
        Kind::TimeValue(sqlgate::query::value::text_form::format_time(&t))
    });
    let decimal = ("-?[1-9][0-9]{0,27}", "[0-9]{10}")
        .prop_map(|(whole, frac)| Kind::DecimalValue(format!("{whole}.{frac}")))
        .prop_filter(
            "valid",
            |k| matches!(k, Kind::DecimalValue(s) if BigDecimal::from_str(s).is_ok()),
        );
    // MySQL's TEXT and JSON-as-text keep any Unicode; NUL is refused by PostgreSQL text.
    let text = "[^\u{0}]{0,40}";
    let json = prop_oneof![
        any::<i32>().prop_map(|n| format!("{n}")),
        "[a-z]{0,10}".prop_map(|s| format!("[\"{s}\"]")),
    ];
    let floats = any::<f64>().prop_filter("finite", |f| f.is_finite());
    let nullable =
        |s: BoxedStrategy<Kind>| prop_oneof![1 => Just(Kind::NullValue(0)), 6 => s].boxed();
    (
        nullable(any::<bool>().prop_map(Kind::BoolValue).boxed()),
        nullable(any::<i64>().prop_map(Kind::IntValue).boxed()),
        nullable(floats.prop_map(Kind::FloatValue).boxed()),
        nullable(text.prop_map(Kind::TextValue).boxed()),
        nullable(
            proptest::collection::vec(any::<u8>(), 0..64)
                .prop_map(Kind::BytesValue)
                .boxed(),
        ),
        nullable(decimal.boxed()),
        nullable(timestamp.boxed()),
        nullable(datetime.boxed()),
        nullable(date.boxed()),
        nullable(time.boxed()),
        nullable(json.prop_map(Kind::JsonValue).boxed()),
        nullable(
            any::<u128>()
                .prop_map(|n| Kind::UuidValue(uuid::Uuid::from_u128(n).to_string()))
                .boxed(),
        ),
    )
        .prop_map(|(a, b, c, d, e, f, g, h, i, j, k, l)| vec![a, b, c, d, e, f, g, h, i, j, k, l])
}

/// JSON comes back from jsonb reformatted; compare it as JSON.
fn same_value(backend: Backend, sent: &Kind, back: &Kind) -> bool {
    match (sent, back) {
        (Kind::JsonValue(a), Kind::JsonValue(b)) => {
            serde_json::from_str::<serde_json::Value>(a).ok()
                == serde_json::from_str::<serde_json::Value>(b).ok()
        }
        (Kind::NullValue(_), Kind::NullValue(_)) => true,
        _ => &expected_back(backend, sent) == back,
    }
}

fn random_values_round_trip(backend: Backend) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let Some(app) = runtime.block_on(spawn_app(backend)) else {
        return;
    };
    runtime.block_on(create_table(&app));
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let next_id = std::sync::atomic::AtomicI64::new(1_000);
    runner
        .run(&arb_row(backend), |row| {
            let id = next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let sent: Vec<pb::Value> = row.iter().cloned().map(v::of).collect();
            let back = runtime.block_on(round_trip(&app, id, sent));
            for (column, (sent, back)) in row.iter().zip(&back).enumerate() {
                let back = back.kind.clone().unwrap_or(Kind::NullValue(0));
                prop_assert!(
                    same_value(backend, sent, &back),
                    "column {column}: sent {sent:?}, got {back:?}"
                );
            }
            Ok(())
        })
        .unwrap_or_else(|err| panic!("{backend:?}: {err}"));
    runtime.block_on(app.stop());
}

#[test]
fn random_values_round_trip_postgres() {
    random_values_round_trip(Backend::Postgres);
}

#[test]
fn random_values_round_trip_mysql() {
    random_values_round_trip(Backend::MySql);
}

#[test]
fn random_values_round_trip_sqlite() {
    random_values_round_trip(Backend::Sqlite);
}
