//! PostgreSQL values at the edges of the Values table: numeric NaN and
//! infinities, empty and all-NULL arrays (sent as `text[]`), `json` (not
//! `jsonb`) text kept exactly as stored, arrays with NULL elements, the
//! native type names reported for columns, and the dates and times no value
//! kind carries (`time` 24:00:00, `infinity`), refused rather than moved.

use prost_types::Timestamp;
use sqlgate::grpc::pb::{self, ValueList, ValueType, value::Kind};
use tonic::Code;

use crate::helpers::{Backend, error_details, kinds, spawn_app, v};

fn dec(s: &str) -> pb::Value {
    v::of(Kind::DecimalValue(s.to_owned()))
}

fn array(values: Vec<pb::Value>) -> pb::Value {
    v::of(Kind::ArrayValue(ValueList { values }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_numeric_nan_and_infinities_are_spelled_as_postgres_does() {
    let Some(app) = spawn_app(Backend::Postgres).await else {
        return;
    };
    let specials = ["NaN", "Infinity", "-Infinity"];

    // As results.
    let response = app
        .run("SELECT 'NaN'::numeric, 'infinity'::numeric, '-inf'::numeric, 1.50::numeric")
        .await;
    assert_eq!(
        kinds(&response.rows[0]),
        vec![
            Kind::DecimalValue("NaN".into()),
            Kind::DecimalValue("Infinity".into()),
            Kind::DecimalValue("-Infinity".into()),
            Kind::DecimalValue("1.50".into()),
        ]
    );
    for column in &response.columns {
        assert_eq!(column.r#type, ValueType::Decimal as i32, "{column:?}");
        assert_eq!(column.db_type, "numeric", "{column:?}");
    }

    // As parameters, into a column and back, and compared on the server.
    app.run("CREATE TABLE n (id INT PRIMARY KEY, x NUMERIC)")
        .await;
    for (id, special) in specials.iter().enumerate() {
        let id = i64::try_from(id).expect("id");
        app.execute(
            "INSERT INTO n VALUES ($1, $2)",
            vec![v::int(id), dec(special)],
        )
        .await
        .unwrap_or_else(|status| panic!("{special} as a parameter: {status:?}"));
    }
    let response = app.run("SELECT x, x::text FROM n ORDER BY id").await;
    assert_eq!(response.rows.len(), specials.len());
    for (row, special) in response.rows.iter().zip(specials) {
        assert_eq!(
            kinds(row),
            vec![
                Kind::DecimalValue(special.into()),
                Kind::TextValue(special.into())
            ]
        );
    }
    let response = app
        .execute(
            "SELECT $1::numeric = 'Infinity'::numeric, $2::numeric < 0, $3::numeric = 'NaN'",
            vec![dec("Infinity"), dec("-Infinity"), dec("NaN")],
        )
        .await
        .expect("compare");
    assert_eq!(
        kinds(&response.rows[0]),
        vec![
            Kind::BoolValue(true),
            Kind::BoolValue(true),
            Kind::BoolValue(true)
        ]
    );
    // In an array parameter too.
    let response = app
        .execute(
            "SELECT $1 AS xs",
            vec![array(vec![
                dec("NaN"),
                dec("-Infinity"),
                dec("1.50"),
                v::null(),
            ])],
        )
        .await
        .expect("numeric[]");
    assert_eq!(response.columns[0].db_type, "numeric[]");
    assert_eq!(
        kinds(&response.rows[0]),
        vec![Kind::ArrayValue(ValueList {
            values: vec![dec("NaN"), dec("-Infinity"), dec("1.50"), v::null()]
        })]
    );
    // Other spellings are still refused: decimals are plain text.
    let status = app
        .execute("SELECT $1::numeric", vec![dec("inf")])
        .await
        .expect_err("not a spelling sqlgate sends back");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_empty_and_all_null_arrays_are_sent_as_text_arrays() {
    let Some(app) = spawn_app(Backend::Postgres).await else {
        return;
    };
    for (what, sent, elements) in [
        ("empty", array(vec![]), 0),
        ("all-NULL", array(vec![v::null(), v::null()]), 2),
    ] {
        let response = app
            .execute("SELECT pg_typeof($1)::text", vec![sent.clone()])
            .await
            .unwrap_or_else(|status| panic!("{what}: {status:?}"));
        assert_eq!(
            kinds(&response.rows[0]),
            vec![Kind::TextValue("text[]".into())],
            "{what}"
        );

        let response = app
            .execute("SELECT $1::int8[] AS a", vec![sent])
            .await
            .unwrap_or_else(|status| panic!("{what} cast to int8[]: {status:?}"));
        let column = &response.columns[0];
        assert_eq!(column.r#type, ValueType::Array as i32, "{column:?}");
        assert_eq!(column.element_type, ValueType::Int as i32, "{column:?}");
        assert_eq!(column.db_type, "int8[]", "{column:?}");
        assert_eq!(
            kinds(&response.rows[0]),
            vec![Kind::ArrayValue(ValueList {
                values: vec![v::null(); elements]
            })],
            "{what}"
        );
    }
    // Into an int8[] column, through the cast the README asks for.
    app.run("CREATE TABLE a (id INT PRIMARY KEY, xs INT8[])")
        .await;
    app.execute(
        "INSERT INTO a VALUES (1, $1::int8[])",
        vec![array(vec![v::null()])],
    )
    .await
    .expect("insert");
    let response = app.run("SELECT xs, cardinality(xs) FROM a").await;
    assert_eq!(
        kinds(&response.rows[0]),
        vec![
            Kind::ArrayValue(ValueList {
                values: vec![v::null()]
            }),
            Kind::IntValue(1)
        ]
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_json_columns_keep_their_text_exactly() {
    let Some(app) = spawn_app(Backend::Postgres).await else {
        return;
    };
    // Key order, white space and a duplicate key: json keeps them, jsonb does not.
    let stored = r#"{"b": 1,   "a": [1,2], "b": 2}"#;
    app.run("CREATE TABLE docs (id INT PRIMARY KEY, j JSON, jb JSONB)")
        .await;
    app.run(&format!(
        "INSERT INTO docs VALUES (1, '{stored}', '{stored}')"
    ))
    .await;
    let response = app.run("SELECT j, jb FROM docs").await;
    assert_eq!(
        kinds(&response.rows[0]),
        vec![
            Kind::JsonValue(stored.into()),
            Kind::JsonValue(r#"{"a": [1, 2], "b": 2}"#.into()),
        ]
    );
    let described: Vec<(i32, &str)> = response
        .columns
        .iter()
        .map(|c| (c.r#type, c.db_type.as_str()))
        .collect();
    assert_eq!(
        described,
        vec![
            (ValueType::Json as i32, "json"),
            (ValueType::Json as i32, "jsonb")
        ]
    );

    // The value read comes back unchanged when sent again to a json column
    // through a text parameter cast in SQL …
    app.execute(
        "INSERT INTO docs (id, j) VALUES (2, $1::text::json)",
        vec![v::text(stored)],
    )
    .await
    .expect("insert as text");
    // … while a json_value parameter is sent as jsonb (documented), so a
    // json column receives jsonb's normal form.
    app.execute(
        "INSERT INTO docs (id, j) VALUES (3, $1)",
        vec![v::of(Kind::JsonValue(stored.into()))],
    )
    .await
    .expect("insert as json_value");
    let response = app.run("SELECT j FROM docs WHERE id > 1 ORDER BY id").await;
    assert_eq!(response.rows.len(), 2);
    assert_eq!(
        kinds(&response.rows[0]),
        vec![Kind::JsonValue(stored.into())]
    );
    assert_eq!(
        kinds(&response.rows[1]),
        vec![Kind::JsonValue(r#"{"a": [1, 2], "b": 2}"#.into())]
    );
    app.stop().await;
}

#[tokio::test]
async fn postgres_arrays_keep_null_elements_and_types() {
    let Some(app) = spawn_app(Backend::Postgres).await else {
        return;
    };
    app.run("CREATE TABLE arr (id INT PRIMARY KEY, ints BIGINT[], texts TEXT[], nums NUMERIC[], stamps TIMESTAMPTZ[])")
        .await;
    let list = |values: Vec<pb::Value>| v::of(Kind::ArrayValue(ValueList { values }));
    let ints = list(vec![v::int(i64::MIN), v::null(), v::int(7)]);
    let texts = list(vec![v::text("a,b"), v::null(), v::text("{\"quoted\"}")]);
    let nums = list(vec![v::of(Kind::DecimalValue("1.50".into())), v::null()]);
    let stamps = list(vec![v::of(Kind::TimestampValue(Timestamp {
        seconds: 86_400,
        nanos: 5_000,
    }))]);
    app.execute(
        "INSERT INTO arr VALUES (1, $1, $2, $3, $4)",
        vec![ints.clone(), texts.clone(), nums.clone(), stamps.clone()],
    )
    .await
    .expect("insert arrays");
    let back = app.run("SELECT ints, texts, nums, stamps FROM arr").await;
    assert_eq!(back.columns[0].r#type(), ValueType::Array);
    assert_eq!(back.columns[0].element_type(), ValueType::Int);
    assert_eq!(back.columns[0].db_type, "int8[]");
    assert_eq!(back.rows[0].values, vec![ints, texts, nums, stamps]);

    // An array parameter used with ANY().
    let found = app
        .execute(
            "SELECT count(*) FROM arr WHERE 7 = ANY($1)",
            vec![list(vec![v::int(7), v::int(8)])],
        )
        .await
        .expect("any");
    assert_eq!(found.rows[0].values[0].kind, Some(Kind::IntValue(1)));
    app.stop().await;
}

#[tokio::test]
async fn postgres_reports_native_type_names() {
    let Some(app) = spawn_app(Backend::Postgres).await else {
        return;
    };
    let back = app
        .run("SELECT 1::int2 AS a, 2::int4 AS b, 3::int8 AS c, 1.5::numeric(10,2) AS d, 'x'::varchar AS e, now() AS f")
        .await;
    let types: Vec<_> = back
        .columns
        .iter()
        .map(|c| (c.db_type.as_str(), c.r#type()))
        .collect();
    assert_eq!(
        types,
        [
            ("int2", ValueType::Int),
            ("int4", ValueType::Int),
            ("int8", ValueType::Int),
            ("numeric", ValueType::Decimal),
            ("varchar", ValueType::Text),
            ("timestamptz", ValueType::Timestamp),
        ]
    );
    assert_eq!(
        back.rows[0].values[3].kind,
        Some(Kind::DecimalValue("1.50".into()))
    );
    app.stop().await;
}

/// Asserts that reading `sql` is refused as a value no kind carries,
/// naming `column` and saying why (`because`).
async fn assert_unrepresentable(
    app: &crate::helpers::TestApp,
    sql: &str,
    column: &str,
    because: &str,
) {
    let status = app.execute(sql, vec![]).await.expect_err(sql);
    assert_eq!(status.code(), Code::OutOfRange, "{sql}: {status:?}");
    let (reason, _, _) = error_details(&status);
    assert_eq!(reason, "UNREPRESENTABLE_VALUE", "{sql}");
    assert!(
        status.message().contains(&format!("column \"{column}\""))
            && status.message().contains(because),
        "{sql}: {}",
        status.message()
    );
    // A stream writes its values by another path: refused the same way.
    let streamed = app.stream(sql, vec![]).await.expect_err(sql);
    assert_eq!(streamed.code(), status.code(), "{sql}: {streamed:?}");
    assert_eq!(streamed.message(), status.message(), "{sql}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_end_of_day_and_infinite_dates_are_refused_not_moved() {
    let Some(app) = spawn_app(Backend::Postgres).await else {
        return;
    };
    // PostgreSQL stores a `time` of 23:59:60 as 24:00:00, which no time of
    // day carries: it must not come back as 00:00:00.
    app.run(
        "CREATE TABLE times (id INT PRIMARY KEY, t TIME, ts TIMESTAMP, tz TIMESTAMPTZ, d DATE)",
    )
    .await;
    app.run(
        "INSERT INTO times (id, t, ts, tz, d) VALUES \
         (1, '23:59:60', '2016-12-31 23:59:60', '2016-12-31 23:59:60Z', '2016-12-31'), \
         (2, '24:00:00', 'infinity', '-infinity', 'infinity'), \
         (3, '23:59:59.999999', '2016-12-31 23:59:59.999999', NULL, NULL)",
    )
    .await;
    let end_of_day = "time 24:00:00 (the end of the day)";
    assert_unrepresentable(&app, "SELECT t FROM times WHERE id = 1", "t", end_of_day).await;
    assert_unrepresentable(&app, "SELECT t FROM times WHERE id = 2", "t", end_of_day).await;
    assert_unrepresentable(
        &app,
        "SELECT ARRAY[t] AS ts FROM times WHERE id = 1",
        "ts",
        end_of_day,
    )
    .await;
    let infinite = "infinity or -infinity";
    for column in ["ts", "tz", "d"] {
        assert_unrepresentable(
            &app,
            &format!("SELECT {column} FROM times WHERE id = 2"),
            column,
            infinite,
        )
        .await;
    }
    assert_unrepresentable(
        &app,
        "SELECT ARRAY[d] AS ds FROM times WHERE id = 2",
        "ds",
        infinite,
    )
    .await;
    assert_unrepresentable(
        &app,
        "SELECT '294276-12-31'::date AS far",
        "far",
        "beyond the years",
    )
    .await;
    // Read as text, as the message says: PostgreSQL's own spelling.
    let back = app
        .run("SELECT t::text, ts::text, tz::text, d::text FROM times WHERE id = 2")
        .await;
    let text = |s: &str| Kind::TextValue(s.to_owned());
    assert_eq!(
        kinds(&back.rows[0]),
        vec![
            text("24:00:00"),
            text("infinity"),
            text("-infinity"),
            text("infinity")
        ]
    );
    // A timestamp never holds second 60: PostgreSQL made the next day's
    // midnight of it on input (its doing, visible in its own text too).
    // Ordinary values still come back unchanged.
    let back = app
        .run("SELECT ts, ts::text, tz FROM times WHERE id = 1")
        .await;
    assert_eq!(
        kinds(&back.rows[0]),
        vec![
            Kind::DatetimeValue("2017-01-01T00:00:00".into()),
            text("2017-01-01 00:00:00"),
            Kind::TimestampValue(Timestamp {
                seconds: 1_483_228_800,
                nanos: 0
            }),
        ]
    );
    let back = app.run("SELECT t, ts FROM times WHERE id = 3").await;
    assert_eq!(
        kinds(&back.rows[0]),
        vec![
            Kind::TimeValue("23:59:59.999999".into()),
            Kind::DatetimeValue("2016-12-31T23:59:59.999999".into()),
        ]
    );
    app.stop().await;
}

/// Encoded rows, to compare what two calls sent byte for byte.
fn encoded(rows: &[pb::Row]) -> Vec<Vec<u8>> {
    rows.iter().map(prost::Message::encode_to_vec).collect()
}

/// A stream writes each scalar straight from PostgreSQL's bytes into its
/// frame; a unary call decodes it into sqlgate's value first. For every
/// scalar type (beyond the columns of `values`), with random values and
/// NULLs, the caller gets the same bytes both ways.
#[test]
fn postgres_streamed_scalars_are_the_unary_bytes() {
    use proptest::{prelude::*, test_runner::TestRunner};
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let Some(app) = runtime.block_on(spawn_app(Backend::Postgres)) else {
        return;
    };
    runtime.block_on(app.run("CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')"));
    // Each column from one parameter, cast in SQL to the type under test.
    let sql = "SELECT $1::int8::int2 AS i2, $2::int8::int4 AS i4, $3::int8::oid AS o, \
               $4::float8::float4 AS f4, $5::float8 AS f8, $6::text::varchar AS vc, \
               $7::text::char(3) AS c3, $8::text::name AS n, $9::text::json AS j, \
               $10::text::jsonb AS jb, $11::text::mood AS m, $12::bytea AS y, \
               $13::bool AS b, pg_sleep(0) AS v, $14::text AS t";
    let float = prop_oneof![
        any::<f64>().prop_filter("finite", |f| f.is_finite()),
        Just(0.0),
        Just(-0.0),
        Just(f64::MIN_POSITIVE),
    ];
    let text = "[^\u{0}]{0,24}";
    let json = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        "[a-z ]{0,10}".prop_map(|s| format!(r#"{{"k": ["{s}", 1.50, null, true]}}"#)),
    ];
    let nullable =
        |kind: BoxedStrategy<Kind>| prop_oneof![1 => Just(Kind::NullValue(0)), 5 => kind];
    let row = (
        (
            nullable(any::<i16>().prop_map(|n| Kind::IntValue(n.into())).boxed()),
            nullable(any::<i32>().prop_map(|n| Kind::IntValue(n.into())).boxed()),
            nullable(any::<u32>().prop_map(|n| Kind::IntValue(n.into())).boxed()),
            nullable(
                any::<f32>()
                    .prop_filter("finite", |f| f.is_finite())
                    .prop_map(|f| Kind::FloatValue(f.into()))
                    .boxed(),
            ),
            nullable(float.prop_map(Kind::FloatValue).boxed()),
            nullable(text.prop_map(Kind::TextValue).boxed()),
            nullable("[a-z]{0,3}".prop_map(Kind::TextValue).boxed()),
        ),
        (
            nullable("[a-z_]{1,20}".prop_map(Kind::TextValue).boxed()),
            nullable(json.clone().prop_map(Kind::TextValue).boxed()),
            nullable(json.prop_map(Kind::TextValue).boxed()),
            nullable(
                prop::sample::select(vec!["sad", "ok", "happy"])
                    .prop_map(|m| Kind::TextValue(m.into()))
                    .boxed(),
            ),
            nullable(
                prop::collection::vec(any::<u8>(), 0..48)
                    .prop_map(Kind::BytesValue)
                    .boxed(),
            ),
            nullable(any::<bool>().prop_map(Kind::BoolValue).boxed()),
            nullable(text.prop_map(Kind::TextValue).boxed()),
        ),
    );
    let mut runner = TestRunner::new(proptest::test_runner::Config {
        cases: 64,
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    });
    runner
        .run(&row, |((a, b, c, d, e, f, g), (h, i, j, k, l, m, n))| {
            let params: Vec<pb::Value> = [a, b, c, d, e, f, g, h, i, j, k, l, m, n]
                .into_iter()
                .map(v::of)
                .collect();
            let (unary, streamed) = runtime.block_on(async {
                let unary = app.execute(sql, params.clone()).await.expect("unary");
                let streamed = app.stream(sql, params).await.expect("stream");
                (unary, streamed)
            });
            prop_assert_eq!(unary.rows.len(), 1);
            prop_assert_eq!(encoded(&streamed), encoded(&unary.rows));
            Ok(())
        })
        .unwrap_or_else(|err| panic!("{err}"));
    // PostgreSQL's special floats, which no parameter above carries.
    let specials = "SELECT 'NaN'::float4, '-Infinity'::float4, 'Infinity'::float8, \
                    'NaN'::float8, '-0'::float8, 'NaN'::numeric, 12.3400::numeric, \
                    '\\x00ff'::bytea, 'infinity'::text, ''::varchar";
    runtime.block_on(async {
        let unary = app.execute(specials, vec![]).await.expect("unary");
        let streamed = app.stream(specials, vec![]).await.expect("stream");
        assert_eq!(encoded(&streamed), encoded(&unary.rows));
    });
    runtime.block_on(app.stop());
}
