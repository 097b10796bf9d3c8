//! MySQL/MariaDB types and the value kinds the README's Values table
//! promises for them: BIGINT UNSIGNED as decimal, TINYINT(1) as bool for
//! 0/1 only, BIT as bytes, YEAR and INT UNSIGNED as int, ENUM/SET as text.

use sqlgate::grpc::pb::{ValueType, value::Kind};

use crate::helpers::{Backend, TestApp, spawn_app, v};

const COLUMNS: &str = "bu, b, bits, y, e, s, iu";

async fn create(app: &TestApp) {
    app.run(
        "CREATE TABLE m (id INT PRIMARY KEY, bu BIGINT UNSIGNED, b TINYINT(1), bits BIT(12), \
         y YEAR, e ENUM('small', 'large'), s SET('a', 'b', 'c'), iu INT UNSIGNED)",
    )
    .await;
}

/// Reads every row's values (in `COLUMNS` order) and checks the columns.
async fn read(app: &TestApp) -> Vec<Vec<Kind>> {
    let response = app
        .run(&format!("SELECT {COLUMNS} FROM m ORDER BY id"))
        .await;
    let described: Vec<(&str, ValueType, &str)> = response
        .columns
        .iter()
        .map(|c| {
            (
                c.name.as_str(),
                ValueType::try_from(c.r#type).expect("a known type"),
                c.db_type.as_str(),
            )
        })
        .collect();
    assert_eq!(
        described,
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
