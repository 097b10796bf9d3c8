//! An OTLP trace collector that accepts every export and keeps nothing:
//! where the traced sqlgate of the tracing-cost workload sends its spans,
//! and, with `--otlp-sink ADDR`, a stand-alone one for instruction counts
//! of a traced sqlgate under callgrind.

use std::net::SocketAddr;

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_server::{TraceService, TraceServiceServer},
};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

use crate::BoxError;

/// Accepts every export and drops it.
#[derive(Debug, Clone, Copy)]
struct DiscardingSink;

#[tonic::async_trait]
impl TraceService for DiscardingSink {
    async fn export(
        &self,
        _request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

/// Serves the sink on `listener` until the process ends.
async fn serve(listener: tokio::net::TcpListener) -> Result<(), BoxError> {
    tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(DiscardingSink))
        .serve_with_incoming(TcpListenerStream::new(listener))
        .await?;
    Ok(())
}

/// Serves the sink on a free loopback port in this process; returns it.
pub(crate) async fn start() -> Result<SocketAddr, BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(serve(listener));
    Ok(address)
}

/// Serves the sink on `address` until the process is stopped
/// (`--otlp-sink`).
pub(crate) async fn run(address: SocketAddr) -> Result<(), BoxError> {
    serve(tokio::net::TcpListener::bind(address).await?).await
}
