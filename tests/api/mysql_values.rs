//! MySQL/MariaDB types and the value kinds the README's Values table
//! promises for them: BIGINT UNSIGNED as decimal, TINYINT(1) as bool for
//! 0/1 only, BIT as bytes, YEAR and INT UNSIGNED as int, ENUM/SET as text,
//! binary-collated text and MariaDB's JSON as text. And values never
//! changed without a word: strict mode on every connection, instants
//! outside TIMESTAMP's range and bad ENUM members refused, zero dates
//! refused rather than read as NULL.

use prost_types::Timestamp;
use sqlgate::grpc::pb::{self, ValueType, value::Kind};
use sqlx::Executor;
use tonic::Code;

use crate::helpers::{Backend, TestApp, error_details, kinds, spawn_app, v};

const COLUMNS: &str = "bu, b, bits, y, e, s, iu";

async fn create(app: &TestApp) {
    app.run(
        "CREATE TABLE m (id INT PRIMARY KEY, bu BIGINT UNSIGNED, b TINYINT(1), bits BIT(12), \
         y YEAR, e ENUM('small', 'large'), s SET('a', 'b', 'c'), iu INT UNSIGNED)",
    )
    .await;
}

/// Each column's name, type and database type, as `response` describes them.
fn described(response: &pb::ExecuteResponse) -> Vec<(&str, ValueType, &str)> {
    response
        .columns
        .iter()
        .map(|c| {
            (
                c.name.as_str(),
                ValueType::try_from(c.r#type).expect("a known type"),
                c.db_type.as_str(),
            )
        })
        .collect()
}

/// Reads every row's values (in `COLUMNS` order) and checks the columns.
async fn read(app: &TestApp) -> Vec<Vec<Kind>> {
    let response = app
        .run(&format!("SELECT {COLUMNS} FROM m ORDER BY id"))
        .await;
    assert_eq!(
        described(&response),
        vec![
            ("bu", ValueType::Decimal, "bigint unsigned"),
            ("b", ValueType::Bool, "boolean"),
            ("bits", ValueType::Bytes, "bit"),
            ("y", ValueType::Int, "year"),
            ("e", ValueType::Text, "enum"),
            // MySQL sends SET columns as strings with a SET flag, which the
            // driver names by their wire type.
            ("s", ValueType::Text, "char"),
            ("iu", ValueType::Int, "int unsigned"),
        ]
    );
    response
        .rows
        .into_iter()
        .map(|row| {
            row.values
                .into_iter()
                .map(|value| value.kind.expect("a kind"))
                .collect()
        })
        .collect()
}

fn dec(s: &str) -> Kind {
    Kind::DecimalValue(s.to_owned())
}
fn text(s: &str) -> Kind {
    Kind::TextValue(s.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_values_come_back_as_the_values_table_says() {
    let Some(app) = spawn_app(Backend::MySql).await else {
        return;
    };
    create(&app).await;
    app.run(
        "INSERT INTO m VALUES \
         (1, 18446744073709551615, 0, b'101000000001', 2155, 'large', 'a,c', 4294967295), \
         (2, 9223372036854775808, 1, b'000000000000', 1901, 'small', '', 0), \
         (3, 0, 2, b'111111111111', 2024, 'small', 'b', 2147483648), \
         (4, 1, -1, b'000000000001', 0, 'large', 'a,b,c', 1), \
         (5, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
    )
    .await;
    let null = Kind::NullValue(0);
    assert_eq!(
        read(&app).await,
        vec![
            vec![
                dec("18446744073709551615"),
                Kind::BoolValue(false),
                Kind::BytesValue(vec![0x0A, 0x01]),
                Kind::IntValue(2155),
                text("large"),
                text("a,c"),
                Kind::IntValue(4_294_967_295),
            ],
            vec![
                dec("9223372036854775808"),
                Kind::BoolValue(true),
                Kind::BytesValue(vec![0x00, 0x00]),
                Kind::IntValue(1901),
                text("small"),
                text(""),
                Kind::IntValue(0),
            ],
            vec![
                dec("0"),
                Kind::IntValue(2),
                Kind::BytesValue(vec![0x0F, 0xFF]),
                Kind::IntValue(2024),
                text("small"),
                text("b"),
                Kind::IntValue(2_147_483_648),
            ],
            vec![
                dec("1"),
                Kind::IntValue(-1),
                Kind::BytesValue(vec![0x00, 0x01]),
                Kind::IntValue(0),
                text("large"),
                text("a,b,c"),
                Kind::IntValue(1),
            ],
            vec![null.clone(); 7],
        ]
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_values_sent_as_parameters_come_back_the_same() {
    let Some(app) = spawn_app(Backend::MySql).await else {
        return;
    };
    create(&app).await;
    let rows: Vec<Vec<Kind>> = vec![
        vec![
            dec("18446744073709551615"),
            Kind::BoolValue(true),
            Kind::BytesValue(vec![0x0A, 0x01]),
            Kind::IntValue(2155),
            text("large"),
            text("a,c"),
            Kind::IntValue(4_294_967_295),
        ],
        vec![
            dec("12345678901234567890"),
            Kind::BoolValue(false),
            Kind::BytesValue(vec![0x00, 0x07]),
            Kind::IntValue(1901),
            text("small"),
            text("b"),
            Kind::IntValue(7),
        ],
    ];
    for (id, row) in rows.iter().enumerate() {
        let mut params = vec![v::int(i64::try_from(id).expect("id"))];
        params.extend(row.iter().cloned().map(v::of));
        app.execute(
            &format!("INSERT INTO m (id, {COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"),
            params,
        )
        .await
        .unwrap_or_else(|status| panic!("insert {id}: {status:?}"));
    }
    // An int other than 0/1 into TINYINT(1) comes back as an int.
    app.execute(
        "UPDATE m SET b = $1 WHERE id = $2",
        vec![v::int(5), v::int(1)],
    )
    .await
    .expect("update");
    let mut expected = rows;
    expected[1][1] = Kind::IntValue(5);
    assert_eq!(read(&app).await, expected);

    // A parameter compared with the column finds the row.
    let response = app
        .execute(
            "SELECT id FROM m WHERE bu = $1",
            vec![v::of(dec("18446744073709551615"))],
        )
        .await
        .expect("select");
    assert_eq!(response.rows.len(), 1);
    assert_eq!(response.rows[0].values[0].kind, Some(Kind::IntValue(0)));
    app.stop().await;
}

fn instant(seconds: i64, nanos: i32) -> pb::Value {
    v::of(Kind::TimestampValue(Timestamp { seconds, nanos }))
}

/// Asserts a refusal by the database: `code`, its SQLSTATE, and a message
/// naming the column at fault.
fn assert_refused(status: &tonic::Status, code: Code, sqlstate: &str, column: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    let (reason, metadata, _) = error_details(status);
    assert_eq!(reason, "DATABASE_ERROR", "{status:?}");
    assert_eq!(
        metadata.get("sqlstate").map(String::as_str),
        Some(sqlstate),
        "{status:?}"
    );
    assert!(
        status.message().contains(column),
        "the message names {column}: {}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_connections_run_in_strict_mode() {
    let Some(app) = spawn_app(Backend::MySql).await else {
        return;
    };
    let response = app.run("SELECT @@SESSION.sql_mode").await;
    let Some(Kind::TextValue(modes)) = response.rows[0].values[0].kind.clone() else {
        panic!("sql_mode came back as {response:?}");
    };
    let modes: Vec<&str> = modes.split(',').collect();
    for mode in [
        "STRICT_ALL_TABLES",
        "NO_ZERO_DATE",
        "NO_ZERO_IN_DATE",
        "ERROR_FOR_DIVISION_BY_ZERO",
    ] {
        assert!(modes.contains(&mode), "{mode} missing from {modes:?}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_instants_outside_timestamp_range_are_refused_and_nothing_is_written() {
    let Some(app) = spawn_app(Backend::MySql).await else {
        return;
    };
    app.run(
        "CREATE TABLE stamps (id INT PRIMARY KEY, ts TIMESTAMP(6) NULL, \
         tn TIMESTAMP NOT NULL DEFAULT current_timestamp, dt DATETIME(6))",
    )
    .await;
    // TIMESTAMP holds 1970-01-01 00:00:01 to 2038-01-19 03:14:07.999999 UTC.
    let outside = [
        ("a second before 1970", instant(-1, 0)),
        ("1970-01-01 00:00:00, MySQL's zero", instant(0, 0)),
        ("long before 1970", instant(-315_619_200, 0)),
        (
            "a second after 2038-01-19 03:14:07",
            instant(2_147_483_648, 0),
        ),
        ("2100", instant(4_102_444_800, 0)),
    ];
    for (what, value) in &outside {
        for column in ["ts", "tn"] {
            let status = app
                .execute(
                    &format!("INSERT INTO stamps (id, {column}) VALUES (1, $1)"),
                    vec![value.clone()],
                )
                .await
                .expect_err(what);
            assert_refused(&status, Code::InvalidArgument, "22007", column);
        }
        // An UPDATE of an existing row is refused just the same, and the
        // row keeps its value.
        app.execute(
            "INSERT INTO stamps (id, ts) VALUES (2, $1)",
            vec![instant(1_700_000_000, 0)],
        )
        .await
        .expect("an instant in range");
        let status = app
            .execute(
                "UPDATE stamps SET ts = $1 WHERE id = 2",
                vec![value.clone()],
            )
            .await
            .expect_err(what);
        assert_refused(&status, Code::InvalidArgument, "22007", "ts");
        let back = app.run("SELECT ts FROM stamps WHERE id = 2").await;
        assert_eq!(
            kinds(&back.rows[0]),
            vec![Kind::TimestampValue(Timestamp {
                seconds: 1_700_000_000,
                nanos: 0
            })],
            "{what}"
        );
        app.run("DELETE FROM stamps").await;
    }
    assert_eq!(app.count("stamps").await, 0);

    // The range's own ends are stored and read back unchanged.
    let first = Timestamp {
        seconds: 1,
        nanos: 0,
    };
    let last = Timestamp {
        seconds: 2_147_483_647,
        nanos: 999_999_000,
    };
    app.execute(
        "INSERT INTO stamps (id, ts) VALUES (1, $1), (2, $2)",
        vec![
            v::of(Kind::TimestampValue(first)),
            v::of(Kind::TimestampValue(last)),
        ],
    )
    .await
    .expect("the range's ends");
    let back = app.run("SELECT ts FROM stamps ORDER BY id").await;
    assert_eq!(
        back.rows.iter().map(kinds).collect::<Vec<_>>(),
        vec![
            vec![Kind::TimestampValue(first)],
            vec![Kind::TimestampValue(last)]
        ]
    );

    // A DATETIME column has no such range: an instant before 1970 is
    // stored there as its UTC wall-clock time.
    app.execute(
        "INSERT INTO stamps (id, dt) VALUES (3, $1)",
        vec![instant(-315_619_200, 0)],
    )
    .await
    .expect("DATETIME takes 1960");
    let back = app.run("SELECT dt FROM stamps WHERE id = 3").await;
    assert_eq!(
        kinds(&back.rows[0]),
        vec![Kind::DatetimeValue("1960-01-01T00:00:00".into())]
    );
    // Nor has the parameter itself: selected, it is its UTC wall-clock
    // time (a DATETIME), never NULL.
    let back = app
        .execute(
            "SELECT $1, $2",
            vec![instant(-315_619_200, 0), instant(4_102_444_800, 5_000)],
        )
        .await
        .expect("select");
    assert_eq!(
        kinds(&back.rows[0]),
        vec![
            Kind::DatetimeValue("1960-01-01T00:00:00".into()),
            Kind::DatetimeValue("2100-01-01T00:00:00.000005".into()),
        ]
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_text_with_binary_collations_is_text_and_binary_columns_stay_bytes() {
    let Some(app) = spawn_app(Backend::MySql).await else {
        return;
    };
    // MariaDB's JSON is LONGTEXT with utf8mb4_bin; `_bin` collations set
    // the column's BINARY flag, which does not make it bytes.
    app.run(
        "CREATE TABLE texts (id INT PRIMARY KEY, j JSON, vc VARCHAR(20) COLLATE utf8mb4_bin, \
         c CHAR(4) COLLATE utf8mb4_bin, tx TEXT COLLATE utf8mb4_bin, \
         l1 VARCHAR(20) CHARACTER SET latin1 COLLATE latin1_bin, \
         vb VARBINARY(8), bn BINARY(2), bl BLOB)",
    )
    .await;
    let json = r#"{"a": [1, 2.5, null], "é": "👩‍⚕️"}"#;
    let text = |s: &str| Kind::TextValue(s.to_owned());
    let sent = vec![
        text(json),
        text("Héllo wörld"),
        text("ab"),
        text("long 👩‍⚕️ text"),
        text("café"),
        Kind::BytesValue(vec![0xff, 0x00, 0xc3]),
        Kind::BytesValue(vec![0x80, 0x81]),
        Kind::BytesValue(vec![0xc3, 0x28, 0x00]),
    ];
    let mut params = vec![v::int(1)];
    params.extend(sent.iter().cloned().map(v::of));
    app.execute(
        "INSERT INTO texts VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        params,
    )
    .await
    .expect("insert");
    let back = app
        .run("SELECT j, vc, c, tx, l1, vb, bn, bl FROM texts")
        .await;
    assert_eq!(
        described(&back),
        vec![
            ("j", ValueType::Text, "text"),
            ("vc", ValueType::Text, "varchar"),
            ("c", ValueType::Text, "char"),
            ("tx", ValueType::Text, "text"),
            ("l1", ValueType::Text, "varchar"),
            ("vb", ValueType::Bytes, "varbinary"),
            ("bn", ValueType::Bytes, "binary"),
            ("bl", ValueType::Bytes, "blob"),
        ]
    );
    assert_eq!(kinds(&back.rows[0]), sent);

    // Expressions follow their character set the same way.
    let back = app
        .run(
            "SELECT CAST(vc AS BINARY), CONVERT(vb USING utf8mb4), \
             JSON_EXTRACT(j, '$.a'), CONCAT(vc COLLATE utf8mb4_bin, '!') FROM texts",
        )
        .await;
    assert_eq!(
        kinds(&back.rows[0]),
        vec![
            Kind::BytesValue("Héllo wörld".as_bytes().to_vec()),
            // 0xff is no UTF-8: MariaDB's conversion marks it '?'.
            text("?\0?"),
            text("[1, 2.5, null]"),
            text("Héllo wörld!"),
        ]
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_values_a_column_cannot_hold_are_refused_not_changed() {
    let Some(app) = spawn_app(Backend::MySql).await else {
        return;
    };
    app.run(
        "CREATE TABLE held (id INT PRIMARY KEY, code INT NOT NULL, \
         e ENUM('small', 'large') NOT NULL, s SET('a', 'b'), name VARCHAR(3), n TINYINT, \
         d DATE, amount DECIMAL(4, 2))",
    )
    .await;
    app.run("INSERT INTO held (id, code, e) VALUES (1, 7, 'small')")
        .await;
    // (what, the column, its value as a parameter, the SQLSTATE MariaDB gives)
    let cases = [
        ("not an ENUM member", "e", v::text("medium"), "01000"),
        ("a misspelt ENUM member", "e", v::text("smal"), "01000"),
        ("not a SET member", "s", v::text("a,z"), "01000"),
        ("too long", "name", v::text("abcd"), "22001"),
        ("out of range", "n", v::int(300), "22003"),
        ("not a date", "d", v::text("2024-02-30"), "22007"),
        (
            "too many decimals' digits",
            "amount",
            v::of(Kind::DecimalValue("123.45".into())),
            "22003",
        ),
    ];
    for (what, column, value, sqlstate) in cases {
        let status = app
            .execute(
                &format!("INSERT INTO held (id, code, {column}) VALUES (2, 7, $1)"),
                vec![value.clone()],
            )
            .await
            .expect_err(what);
        assert_refused(&status, Code::InvalidArgument, sqlstate, column);
        let status = app
            .execute(
                &format!("UPDATE held SET {column} = $1 WHERE id = 1"),
                vec![value],
            )
            .await
            .expect_err(what);
        assert_refused(&status, Code::InvalidArgument, sqlstate, column);
    }
    // Nothing was written and the row kept its values.
    let back = app
        .run("SELECT id, e, s, name, n, d, amount FROM held")
        .await;
    assert_eq!(back.rows.len(), 1);
    let null = Kind::NullValue(0);
    assert_eq!(
        kinds(&back.rows[0]),
        vec![
            Kind::IntValue(1),
            Kind::TextValue("small".into()),
            null.clone(),
            null.clone(),
            null.clone(),
            null.clone(),
            null
        ]
    );
    // A NOT NULL column given nothing (no default) is a constraint, like
    // NOT NULL itself: FAILED_PRECONDITION.
    let status = app
        .execute("INSERT INTO held (id) VALUES (3)", vec![])
        .await
        .expect_err("code has no default");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(app.count("held").await, 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_zero_dates_are_refused_never_read_as_null() {
    let Some(app) = spawn_app(Backend::MySql).await else {
        return;
    };
    app.run(
        "CREATE TABLE zeros (id INT PRIMARY KEY, d DATE NULL, dt DATETIME NULL, ts TIMESTAMP NULL)",
    )
    .await;
    // sqlgate's strict connections refuse new zero dates.
    for column in ["d", "dt", "ts"] {
        let status = app
            .execute(
                &format!("INSERT INTO zeros (id, {column}) VALUES (1, $1)"),
                vec![v::text("0000-00-00")],
            )
            .await
            .expect_err(column);
        assert_refused(&status, Code::InvalidArgument, "22007", column);
    }
    assert_eq!(app.count("zeros").await, 0);

    // Rows written before (here: by a client without strict mode) may hold them.
    let mut direct = app.mysql_direct().await;
    direct
        .execute("SET SESSION sql_mode = '', time_zone = '+00:00'")
        .await
        .expect("lenient session");
    direct
        .execute(sqlx::AssertSqlSafe(format!(
            "INSERT INTO `{}`.zeros VALUES \
             (1, '0000-00-00', NULL, NULL), (2, NULL, '0000-00-00 00:00:00', NULL), \
             (3, NULL, NULL, '0000-00-00 00:00:00'), (4, NULL, NULL, NULL), \
             (5, '2024-02-29', '2024-02-29 12:30:00', '2024-02-29 12:30:00')",
            app.db.name
        )))
        .await
        .expect("zero dates, directly");
    for (id, column) in [(1, "d"), (2, "dt"), (3, "ts")] {
        for sql in [
            format!("SELECT {column} FROM zeros WHERE id = {id}"),
            "SELECT id, d, dt, ts FROM zeros ORDER BY id".to_owned(),
        ] {
            let status = app.execute(&sql, vec![]).await.expect_err(&sql);
            assert_eq!(status.code(), Code::OutOfRange, "{sql}: {status:?}");
            let (reason, _, _) = error_details(&status);
            assert_eq!(reason, "UNREPRESENTABLE_VALUE");
            assert!(
                status.message().contains("zero date"),
                "{sql}: {}",
                status.message()
            );
        }
    }
    // A real NULL is still NULL.
    let back = app.run("SELECT d, dt, ts FROM zeros WHERE id = 4").await;
    assert_eq!(kinds(&back.rows[0]), vec![Kind::NullValue(0); 3]);
    // The message's two ways to read them work, and leave other dates be.
    let back = app
        .run(
            "SELECT NULLIF(d, 0), NULLIF(dt, 0), NULLIF(ts, 0), \
             CAST(d AS CHAR), CAST(dt AS CHAR), CAST(ts AS CHAR) FROM zeros ORDER BY id",
        )
        .await;
    let null = || Kind::NullValue(0);
    let text = |s: &str| Kind::TextValue(s.to_owned());
    let zero = "0000-00-00 00:00:00";
    assert_eq!(
        back.rows.iter().map(kinds).collect::<Vec<_>>(),
        vec![
            vec![null(), null(), null(), text("0000-00-00"), null(), null()],
            vec![null(), null(), null(), null(), text(zero), null()],
            vec![null(), null(), null(), null(), null(), text(zero)],
            vec![null(), null(), null(), null(), null(), null()],
            vec![
                Kind::DateValue("2024-02-29".into()),
                Kind::DatetimeValue("2024-02-29T12:30:00".into()),
                Kind::TimestampValue(Timestamp {
                    seconds: 1_709_209_800,
                    nanos: 0
                }),
                text("2024-02-29"),
                text("2024-02-29 12:30:00"),
                text("2024-02-29 12:30:00"),
            ],
        ]
    );
    app.stop().await;
}
