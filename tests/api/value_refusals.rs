//! Values a backend has no type for are refused, naming the parameter —
//! never stored as something else.

use sqlgate::grpc::pb::{ValueList, value::Kind};
use tonic::Code;

use crate::{
    helpers::{Backend, error_details, spawn_app, v},
    on_every_backend,
};

async fn kinds_the_backend_lacks_are_refused_naming_the_parameter(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    app.run("CREATE TABLE t (id INTEGER)").await;
    let array = v::of(Kind::ArrayValue(ValueList {
        values: vec![v::int(1)],
    }));
    let result = app
        .execute("INSERT INTO t (id) VALUES ($1)", vec![array])
        .await;
    match backend {
        Backend::Postgres => {
            // PostgreSQL has arrays, but not in an integer column.
            let status = result.expect_err("int8[] into integer");
            assert_eq!(status.code(), Code::InvalidArgument);
        }
        Backend::MySql | Backend::Sqlite => {
            let status = result.expect_err("no arrays");
            assert_eq!(status.code(), Code::InvalidArgument);
            let (reason, _, fields) = error_details(&status);
            assert_eq!(reason, "INVALID_PARAMETER");
            assert_eq!(fields, ["params[0]"]);
            assert!(
                status.message().contains("no array type"),
                "{}",
                status.message()
            );
        }
    }
    // Nested arrays are refused before reaching any backend.
    let nested = v::of(Kind::ArrayValue(ValueList {
        values: vec![v::of(Kind::ArrayValue(ValueList { values: vec![] }))],
    }));
    let status = app
        .execute(
            "SELECT $1",
            vec![v::int(1), nested].into_iter().skip(1).collect(),
        )
        .await
        .expect_err("nested arrays");
    assert_eq!(status.code(), Code::InvalidArgument);
    // PostgreSQL's special numerics exist only there: elsewhere they are
    // refused, naming the parameter, never stored as 0 or as text.
    if backend != Backend::Postgres {
        app.run("CREATE TABLE d (x DECIMAL(10, 2))").await;
        for special in ["NaN", "Infinity", "-Infinity"] {
            let status = app
                .execute(
                    "INSERT INTO d (x) VALUES ($1)",
                    vec![v::of(Kind::DecimalValue(special.into()))],
                )
                .await
                .expect_err(special);
            assert_eq!(
                status.code(),
                Code::InvalidArgument,
                "{special}: {status:?}"
            );
            let (reason, _, fields) = error_details(&status);
            assert_eq!(reason, "INVALID_PARAMETER");
            assert_eq!(fields, ["params[0]"]);
        }
        assert_eq!(app.count("d").await, 0);
    }
    assert_eq!(app.count("t").await, 0);
    app.stop().await;
}
on_every_backend!(kinds_the_backend_lacks_are_refused_naming_the_parameter);

/// A leap second (second 60) is refused where the backend would store
/// another value in its place: PostgreSQL moves it to second 00 of the next
/// minute (`23:59:60` becomes `24:00:00` in a `time`, the next day's
/// midnight in a `timestamp`), MySQL and MariaDB have no second 60. SQLite
/// stores the text as sent and gives it back unchanged.
async fn leap_seconds_are_refused_where_they_would_be_moved(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let (time, datetime) = match backend {
        Backend::Postgres => ("TIME", "TIMESTAMP"),
        Backend::MySql => ("TIME(6)", "DATETIME(6)"),
        Backend::Sqlite => ("TIME", "DATETIME"),
    };
    app.run(&format!(
        "CREATE TABLE leap (id INTEGER PRIMARY KEY, t {time}, dt {datetime})"
    ))
    .await;
    let leaps = [
        ("t", Kind::TimeValue("23:59:60".into())),
        ("t", Kind::TimeValue("12:30:60.500000".into())),
        ("dt", Kind::DatetimeValue("2016-12-31T23:59:60".into())),
        (
            "dt",
            Kind::DatetimeValue("2016-12-31T23:59:60.999999".into()),
        ),
    ];
    for (id, (column, leap)) in leaps.iter().enumerate() {
        let result = app
            .execute(
                &format!("INSERT INTO leap (id, {column}) VALUES ($1, $2)"),
                vec![v::int(id as i64), v::of(leap.clone())],
            )
            .await;
        if backend == Backend::Sqlite {
            result.unwrap_or_else(|status| panic!("{leap:?}: {status:?}"));
            let back = app
                .execute(
                    &format!("SELECT {column} FROM leap WHERE id = $1"),
                    vec![v::int(id as i64)],
                )
                .await
                .expect("read back");
            assert_eq!(back.rows[0].values[0].kind.as_ref(), Some(leap));
            continue;
        }
        let status = result.expect_err("a leap second");
        assert_eq!(status.code(), Code::InvalidArgument, "{leap:?}: {status:?}");
        let (reason, _, fields) = error_details(&status);
        assert_eq!(reason, "INVALID_PARAMETER");
        assert_eq!(fields, ["params[1]"]);
        assert!(
            status.message().contains("second 60 (a leap second)"),
            "{}",
            status.message()
        );
    }
    if backend == Backend::Postgres {
        // Inside an array too, naming the element.
        let status = app
            .execute(
                "SELECT $1::time[]",
                vec![v::of(Kind::ArrayValue(ValueList {
                    values: vec![
                        v::of(Kind::TimeValue("23:59:59".into())),
                        v::of(leaps[0].1.clone()),
                    ],
                }))],
            )
            .await
            .expect_err("a leap second in an array");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().contains("element 1"),
            "{}",
            status.message()
        );
    }
    let expected = if backend == Backend::Sqlite {
        leaps.len()
    } else {
        0
    };
    assert_eq!(app.count("leap").await, expected as i64);
    app.stop().await;
}
on_every_backend!(leap_seconds_are_refused_where_they_would_be_moved);
