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
