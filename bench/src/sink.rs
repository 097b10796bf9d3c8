//! An OTLP trace collector that accepts every export and keeps nothing:
//! where the traced sqlgate of the tracing-cost workload sends its spans,
//! and, with `--otlp-sink ADDR`, a stand-alone one for instruction counts
//! of a traced sqlgate under callgrind.
//!
//! It answers the collector's `Export` call without decoding the spans
//! (their bytes are read and skipped as one field): the workload measures
//! what tracing costs sqlgate, and a real collector decodes on its own
//! CPU, usually on another machine. Here it would share the benchmark's
//! two cores with sqlgate and charge sqlgate for the collector's work.
//! `--otlp-sink-decodes` decodes every export instead, as the collector's
//! generated server would, to show that part.

use std::{
    convert::Infallible,
    net::SocketAddr,
    task::{Context, Poll},
};

use futures::future::{BoxFuture, Ready, ready};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status, server::NamedService};

use crate::BoxError;

/// The collector's trace service and its one method.
const SERVICE: &str = "opentelemetry.proto.collector.trace.v1.TraceService";
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// An export request read as a message with no known field: prost skips
/// the whole `resource_spans` list as one length-delimited field.
#[derive(Clone, PartialEq, prost::Message)]
struct Unread {}

/// Accepts every export and drops it; decodes it first when `decode`.
#[derive(Debug, Clone, Copy)]
struct DiscardingSink {
    decode: bool,
}

/// The `Export` method: answers success whatever arrived.
#[derive(Debug, Clone, Copy)]
struct Export;

impl<M> tonic::server::UnaryService<M> for Export {
    type Response = ExportTraceServiceResponse;
    type Future = Ready<Result<Response<ExportTraceServiceResponse>, Status>>;

    fn call(&mut self, _request: Request<M>) -> Self::Future {
        ready(Ok(Response::new(ExportTraceServiceResponse::default())))
    }
}

impl NamedService for DiscardingSink {
    const NAME: &'static str = SERVICE;
}

impl<B> tower::Service<http::Request<B>> for DiscardingSink
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<BoxError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let decode = self.decode;
        Box::pin(async move {
            if request.uri().path() != EXPORT_PATH {
                return Ok(Status::unimplemented("only Export").into_http());
            }
            Ok(if decode {
                let codec = tonic_prost::ProstCodec::<
                    ExportTraceServiceResponse,
                    ExportTraceServiceRequest,
                >::default();
                tonic::server::Grpc::new(codec).unary(Export, request).await
            } else {
                let codec =
                    tonic_prost::ProstCodec::<ExportTraceServiceResponse, Unread>::default();
                tonic::server::Grpc::new(codec).unary(Export, request).await
            })
        })
    }
}

/// Serves the sink on `listener` until the process ends.
async fn serve(listener: tokio::net::TcpListener, decode: bool) -> Result<(), BoxError> {
    tonic::transport::Server::builder()
        .add_service(DiscardingSink { decode })
        .serve_with_incoming(TcpListenerStream::new(listener))
        .await?;
    Ok(())
}

/// Serves the sink on a free loopback port in this process; returns it.
pub(crate) async fn start(decode: bool) -> Result<SocketAddr, BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(serve(listener, decode));
    Ok(address)
}

/// Serves the sink on `address` until the process is stopped
/// (`--otlp-sink`).
pub(crate) async fn run(address: SocketAddr, decode: bool) -> Result<(), BoxError> {
    serve(tokio::net::TcpListener::bind(address).await?, decode).await
}
