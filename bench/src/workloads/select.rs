//! Point selects and 1,000-row range selects, unary calls both.

use sqlgate::grpc::pb::{self, query_client::QueryClient};
use sqlx::{PgPool, Row};
use tonic::transport::Channel;

use super::request;
use crate::{
    BoxError,
    measure::{Others, Pair, ab},
    report::Measurement,
    setup::{Setup, query_clients},
};

/// The point select: one row by primary key (the floor serves it too).
pub(crate) const POINT: &str = "SELECT id, name, amount, created FROM bench_items WHERE id = $1";

/// The direct client reads every column into the Rust type an application
/// would use, as sqlgate's client receives every value: the same work on
/// both sides.
fn decode_item(row: &sqlx::postgres::PgRow) -> Result<(), sqlx::Error> {
    std::hint::black_box((
        row.try_get::<i64, _>(0)?,
        row.try_get::<String, _>(1)?,
        row.try_get::<bigdecimal::BigDecimal, _>(2)?,
        row.try_get::<chrono::DateTime<chrono::Utc>, _>(3)?,
    ));
    Ok(())
}

/// One row by primary key per call, from `concurrency` callers.
pub(crate) async fn point_select(
    setup: &Setup,
    concurrency: usize,
) -> Result<Measurement, BoxError> {
    let rows = setup.rows;
    let direct = move |pool: PgPool, i: u64| async move {
        let id = (i as i64 % rows) + 1;
        let row = sqlx::query(POINT).bind(id).fetch_one(&pool).await?;
        decode_item(&row)?;
        Ok(())
    };
    let via = point_select_via(setup, &setup.channels);
    let floor = point_select_via(setup, &setup.floor_channels);
    let mut pairs = Vec::new();
    if let Some(server) = &setup.unix.listening {
        pairs.push(Pair {
            name: "sqlgate on a Unix socket",
            via: point_select_via(setup, &server.channels),
            pid: server.child.id(),
            direct: None,
        });
    }
    if let Some(sides) = &setup.unix.postgres {
        pairs.push(Pair {
            name: "PostgreSQL over its Unix socket",
            via: point_select_via(setup, &sides.sqlgate.channels),
            pid: sides.sqlgate.child.id(),
            direct: Some(sides.direct.clone()),
        });
    }
    let (target, text) = if concurrency == 16 {
        (0.6, "≥ 0.6 × direct")
    } else {
        (0.0, "")
    };
    ab(
        setup,
        format!("point select, concurrency {concurrency}"),
        concurrency,
        direct,
        via,
        Others {
            floor: Some(floor),
            pairs,
        },
        (target, text),
    )
    .await
}

/// One point select per call through the server at the other end of
/// `channels` (sqlgate's or the floor's), spread over those connections.
pub(crate) fn point_select_via(
    setup: &Setup,
    channels: &[Channel],
) -> impl Fn(u64) -> futures::future::BoxFuture<'static, Result<(), BoxError>>
+ Send
+ Sync
+ Clone
+ 'static {
    let rows = setup.rows;
    let clients = query_clients(channels);
    move |i: u64| {
        let mut client = clients[i as usize % clients.len()].clone();
        Box::pin(async move {
            let id = (i as i64 % rows) + 1;
            let response = client
                .execute(request(POINT, vec![pb::Value::int(id)], None))
                .await?
                .into_inner();
            if response.rows.len() != 1 {
                return Err("point select returned no row".into());
            }
            Ok(())
        })
    }
}

/// 1,000 rows per call (a unary answer), from four callers.
pub(crate) async fn range_select(setup: &Setup) -> Result<Measurement, BoxError> {
    const SQL: &str =
        "SELECT id, name, amount, created FROM bench_items WHERE id BETWEEN $1 AND $1 + 999";
    let rows = (setup.rows - 1000).max(1);
    let direct = move |pool: PgPool, i: u64| async move {
        let all = sqlx::query(SQL)
            .bind(i as i64 % rows)
            .fetch_all(&pool)
            .await?;
        for row in &all {
            decode_item(row)?;
        }
        Ok(())
    };
    let client = QueryClient::new(setup.channel.clone());
    let via = move |i: u64| {
        let mut client = client.clone();
        async move {
            client
                .execute(request(SQL, vec![pb::Value::int(i as i64 % rows)], None))
                .await?;
            Ok(())
        }
    };
    ab(
        setup,
        "1,000-row select, concurrency 4".into(),
        4,
        direct,
        via,
        Others::none(),
        (0.0, ""),
    )
    .await
}
