//! The floor: the cheapest gRPC service that answers the point select the
//! way sqlgate does. It serves `sqlgate.v1.Query/Execute` for that one
//! statement only — decode the request, run the statement on a sqlx pool
//! the size of sqlgate's, encode the row — with no deadlines, limits,
//! logging, checks or analysis. What a gRPC data service cannot go below
//! on this machine, so sqlgate is compared with it as well as with a
//! direct client.
//!
//! Its own binary (`sqlgate-floor ADDR DATABASE_URL POOL_SIZE SQL`),
//! started by the benchmark as a child process like sqlgate, so that its
//! CPU time is read apart from the client's, and with sqlgate's allocator
//! (mimalloc), so that the comparison is of the work done, not of malloc.
//! `SQL` is the statement it serves, given by the benchmark.

use std::net::SocketAddr;

use mimalloc::MiMalloc;

use sqlgate::grpc::pb::{
    self, ExecuteBatchRequest, ExecuteBatchResponse, ExecuteRequest, ExecuteResponse,
    query_server::{Query, QueryServer},
    value::Kind,
};
use sqlx::{PgPool, Row, postgres::PgPoolOptions};
use tonic::{Request, Response, Status};

#[global_allocator]
static ALLOCATOR: MiMalloc = MiMalloc;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const USAGE: &str = "usage: sqlgate-floor ADDR DATABASE_URL POOL_SIZE SQL";

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, database_url, pool_size, sql] = args.as_slice() else {
        return Err(USAGE.into());
    };
    // Static, as a service's statements are: sqlx takes it without a copy.
    let sql: &'static str = Box::leak(sql.clone().into_boxed_str());
    serve_floor(listen.parse()?, database_url, pool_size.parse()?, sql).await
}

/// Serves the floor on `listen` over a pool of `pool_size` connections to
/// `database_url`, answering `sql` only, until the process is killed.
async fn serve_floor(
    listen: SocketAddr,
    database_url: &str,
    pool_size: u32,
    sql: &'static str,
) -> Result<(), BoxError> {
    // Configured as sqlgate's pool and the direct client's.
    let pool = PgPoolOptions::new()
        .max_connections(pool_size)
        .min_connections(pool_size)
        .test_before_acquire(false)
        .connect(database_url)
        .await?;
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(QueryServer::new(Floor { pool, sql }))
        .serve(listen)
        .await?;
    Ok(())
}

/// The floor's service: the point select, nothing else.
struct Floor {
    pool: PgPool,
    /// The point select's text (the only statement served).
    sql: &'static str,
}

#[tonic::async_trait]
impl Query for Floor {
    async fn execute(
        &self,
        request: Request<ExecuteRequest>,
    ) -> Result<Response<ExecuteResponse>, Status> {
        let request = request.into_inner();
        if request.sql != self.sql {
            return Err(Status::unimplemented(
                "the floor serves the point select only",
            ));
        }
        let Some(Kind::IntValue(id)) = request.params.first().and_then(|p| p.kind.clone()) else {
            return Err(Status::invalid_argument("one int64 parameter"));
        };
        let row = sqlx::query(self.sql)
            .bind(id)
            .fetch_one(&self.pool)
            .await
            .map_err(|err| Status::internal(err.to_string()))?;
        let cell = |e: sqlx::Error| Status::internal(e.to_string());
        let created = row
            .try_get::<chrono::DateTime<chrono::Utc>, _>(3)
            .map_err(cell)?;
        let values = vec![
            Kind::IntValue(row.try_get(0).map_err(cell)?),
            Kind::TextValue(row.try_get(1).map_err(cell)?),
            Kind::DecimalValue(
                row.try_get::<bigdecimal::BigDecimal, _>(2)
                    .map_err(cell)?
                    .to_string(),
            ),
            Kind::TimestampValue(prost_types::Timestamp {
                seconds: created.timestamp(),
                nanos: created.timestamp_subsec_nanos() as i32,
            }),
        ];
        let columns = [
            ("id", pb::ValueType::Int, "INT8"),
            ("name", pb::ValueType::Text, "TEXT"),
            ("amount", pb::ValueType::Decimal, "NUMERIC"),
            ("created", pb::ValueType::Timestamp, "TIMESTAMPTZ"),
        ]
        .into_iter()
        .map(|(name, kind, db_type)| pb::Column {
            name: name.into(),
            r#type: kind.into(),
            db_type: db_type.into(),
            ..pb::Column::default()
        })
        .collect();
        Ok(Response::new(ExecuteResponse {
            columns,
            rows: vec![pb::Row {
                values: values
                    .into_iter()
                    .map(|kind| pb::Value { kind: Some(kind) })
                    .collect(),
            }],
            rows_affected: 0,
        }))
    }

    type ExecuteStreamStream = futures::stream::Empty<Result<pb::ResultFrame, Status>>;

    async fn execute_stream(
        &self,
        _request: Request<ExecuteRequest>,
    ) -> Result<Response<Self::ExecuteStreamStream>, Status> {
        Err(Status::unimplemented(
            "the floor serves the point select only",
        ))
    }

    async fn execute_batch(
        &self,
        _request: Request<ExecuteBatchRequest>,
    ) -> Result<Response<ExecuteBatchResponse>, Status> {
        Err(Status::unimplemented(
            "the floor serves the point select only",
        ))
    }
}
