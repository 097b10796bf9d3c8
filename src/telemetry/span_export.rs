//! The span exporter: each batch the SDK's batch processor hands over is
//! encoded directly ([`super::span_encode`]) and sent as one OTLP/gRPC
//! `TraceService/Export` call over tonic.
//!
//! It reads the standard variables opentelemetry-otlp's gRPC exporter
//! reads for traces, in the same order: the endpoint
//! (`otlp.endpoint`, else `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, else
//! `OTEL_EXPORTER_OTLP_ENDPOINT`, else `http://localhost:4317`), headers
//! (`OTEL_EXPORTER_OTLP_TRACES_HEADERS`, else `OTEL_EXPORTER_OTLP_HEADERS`:
//! `key=value,…`, values percent-decoded) and the timeout in milliseconds
//! (`OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`, else `OTEL_EXPORTER_OTLP_TIMEOUT`,
//! else 10 s; it bounds connecting too). Like sqlgate's build of that
//! exporter, it speaks plain HTTP/2 without compression, and refuses an
//! `https://` endpoint rather than send it headers in clear text. A batch
//! that fails is dropped, and a warning says so at most once a minute (the
//! SDK's own report goes to its internal log, which is not built in).
//! Partial-success answers are not read.

use std::{
    str::FromStr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::{Buf, BufMut};
use http::uri::PathAndQuery;
use opentelemetry_sdk::{
    Resource,
    error::{OTelSdkError, OTelSdkResult},
    trace::{SpanData, SpanExporter},
};
use tonic::{
    Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    metadata::{MetadataKey, MetadataMap, MetadataValue},
    transport::{Channel, Endpoint as ChannelEndpoint},
};

use super::{
    otlp::Endpoint,
    span_encode::{EncodedResource, export_request},
};

/// Where OTLP/gRPC goes when nothing says otherwise.
const DEFAULT_ENDPOINT: &str = "http://localhost:4317";
/// How long one export may take when nothing says otherwise.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// The least time between two warnings that export fails.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Sends batches of spans to an OTLP/gRPC collector.
#[derive(Debug)]
pub(super) struct OtlpSpanExporter {
    channel: Channel,
    headers: MetadataMap,
    resource: EncodedResource,
    /// Failed batches, and when a warning last said so.
    failures: Arc<Failures>,
}

/// Export failures since the last warning, and its time: an operator
/// learns that spans are being lost without a line per batch.
#[derive(Debug, Default)]
struct Failures(Mutex<FailureCount>);

#[derive(Debug, Default)]
struct FailureCount {
    since_warning: u64,
    warned_at: Option<Instant>,
}

impl Failures {
    /// Counts a dropped batch of `spans`; warns when none was said for
    /// [`WARN_EVERY`]. `why` is the collector's or the transport's answer
    /// (never a span's content).
    fn dropped(&self, spans: usize, why: &str) {
        let Ok(mut count) = self.0.lock() else {
            return;
        };
        count.since_warning += 1;
        if count.warned_at.is_some_and(|at| at.elapsed() < WARN_EVERY) {
            return;
        }
        let failed = std::mem::take(&mut count.since_warning);
        count.warned_at = Some(Instant::now());
        tracing::warn!(
            failed_batches = failed,
            last_batch_spans = spans,
            reason = why,
            "span export failed: spans are being dropped"
        );
    }
}

impl OtlpSpanExporter {
    /// The exporter for `endpoint`; must run inside the Tokio runtime (the
    /// channel's connection task is spawned there, and connects lazily).
    pub(super) fn new(endpoint: Endpoint) -> Result<Self, String> {
        Self::with_variables(endpoint, |name| std::env::var(name).ok())
    }

    fn with_variables(
        endpoint: Endpoint,
        variable: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let either = |traces: &str, common: &str| {
            variable(traces)
                .filter(|value| !value.trim().is_empty())
                .or_else(|| variable(common).filter(|value| !value.trim().is_empty()))
        };
        let url = match endpoint {
            Endpoint::Configured(url) => url,
            Endpoint::FromEnvironment => either(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            )
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned()),
        };
        let timeout = either(
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TIMEOUT",
        )
        .and_then(|millis| millis.trim().parse::<u64>().ok())
        .map_or(DEFAULT_TIMEOUT, Duration::from_millis);
        let headers = headers(
            &either(
                "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
                "OTEL_EXPORTER_OTLP_HEADERS",
            )
            .unwrap_or_default(),
        );
        let url = url.trim();
        // No TLS is built into the exporter: an `https` collector would be
        // sent the headers (API keys) and spans in clear text before it
        // refused them. Refused here, and traces stay off.
        if !url.starts_with("http://") {
            return Err(format!(
                "OTLP endpoint {url:?}: only http:// is supported (no TLS is built in); \
                 run a collector beside sqlgate and let it forward over TLS"
            ));
        }
        // Bounded whether or not a connection exists: a collector address
        // that drops packets would otherwise hold the batch thread for the
        // operating system's connect timeout (minutes).
        let channel = ChannelEndpoint::from_str(url)
            .map_err(|err| format!("OTLP endpoint {url:?}: {err}"))?
            .connect_timeout(timeout)
            .timeout(timeout)
            .connect_lazy();
        Ok(Self {
            channel,
            headers,
            resource: EncodedResource::default(),
            failures: Arc::default(),
        })
    }
}

impl SpanExporter for OtlpSpanExporter {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        let body = export_request(&batch, &self.resource);
        let spans = batch.len();
        drop(batch);
        let failures = Arc::clone(&self.failures);
        let mut client = tonic::client::Grpc::new(self.channel.clone());
        let mut request = tonic::Request::new(body);
        *request.metadata_mut() = self.headers.clone();
        async move {
            let sent = match client.ready().await {
                Ok(()) => client
                    .unary(
                        request,
                        PathAndQuery::from_static(EXPORT_PATH),
                        EncodedExport,
                    )
                    .await
                    .map(drop)
                    .map_err(|status| format!("{:?}: {}", status.code(), status.message())),
                Err(err) => Err(err.to_string()),
            };
            sent.map_err(|why| {
                failures.dropped(spans, &why);
                OTelSdkError::InternalFailure(format!("OTLP export: {why}"))
            })
        }
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = EncodedResource::new(resource);
    }
}

/// `key=value,…` (values percent-decoded) as gRPC metadata; a pair that
/// is not a valid metadata key and value is left out.
fn headers(text: &str) -> MetadataMap {
    let mut map = MetadataMap::new();
    for pair in text.split(',') {
        let Some((key, value)) = pair.split_once('=') else {
            continue;
        };
        let key = key.trim().to_ascii_lowercase();
        let value = percent_decoded(value.trim());
        if key.is_empty() || value.is_empty() {
            continue;
        }
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            map.insert(key, value);
        }
    }
    map
}

/// `%XX` sequences decoded; the text as it is when one is malformed.
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = bytes
                .get(index + 1..index + 3)
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u8::from_str_radix(hex, 16).ok());
            let Some(byte) = hex else {
                return text.to_owned();
            };
            out.push(byte);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| text.to_owned())
}

/// The export call's codec: the request is already protobuf bytes; the
/// answer (`ExportTraceServiceResponse`) is read and not decoded.
#[derive(Debug, Clone, Copy, Default)]
struct EncodedExport;

impl Codec for EncodedExport {
    type Encode = Vec<u8>;
    type Decode = ();
    type Encoder = Self;
    type Decoder = Self;

    fn encoder(&mut self) -> Self {
        *self
    }

    fn decoder(&mut self) -> Self {
        *self
    }
}

impl Encoder for EncodedExport {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for EncodedExport {
    type Item = ();
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<()>, Status> {
        src.advance(src.remaining());
        Ok(Some(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_read_as_the_specification_writes_them() {
        let map = headers(" Api-Key = s%20e%2Ccret , tenant=a=b,broken, =x,empty=, bad key=1");
        assert_eq!(
            map.get("api-key").and_then(|v| v.to_str().ok()),
            Some("s e,cret")
        );
        assert_eq!(map.get("tenant").and_then(|v| v.to_str().ok()), Some("a=b"));
        assert_eq!(map.len(), 2, "{map:?}");
        assert_eq!(percent_decoded("100%"), "100%");
        assert_eq!(percent_decoded("%zz"), "%zz");
    }

    #[tokio::test]
    async fn the_traces_variables_win_over_the_common_ones() {
        let variables = |name: &str| match name {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://common:4317".to_owned()),
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" => Some("http://traces:4317".to_owned()),
            "OTEL_EXPORTER_OTLP_HEADERS" => Some("common=1".to_owned()),
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS" => Some("traces=1".to_owned()),
            _ => None,
        };
        let exporter =
            OtlpSpanExporter::with_variables(Endpoint::FromEnvironment, variables).expect("builds");
        assert!(exporter.headers.get("traces").is_some());
        assert!(exporter.headers.get("common").is_none());
        for url in [
            "not a url",
            "https://collector:4317",
            "grpc://collector:4317",
        ] {
            let refused =
                OtlpSpanExporter::with_variables(Endpoint::Configured(url.to_owned()), |_| None);
            assert!(refused.is_err(), "{url}");
        }
        let https_by_variable = |name: &str| {
            (name == "OTEL_EXPORTER_OTLP_ENDPOINT").then(|| "https://vendor.example".to_owned())
        };
        assert!(
            OtlpSpanExporter::with_variables(Endpoint::FromEnvironment, https_by_variable).is_err()
        );
    }
}
