//! The direct encoding against opentelemetry-proto's own conversion: the
//! bytes decode to the request opentelemetry-otlp would have sent.

use std::{
    borrow::Cow,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use opentelemetry::{
    Array, InstrumentationScope, KeyValue, StringValue, Value,
    trace::{Event, Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState},
};
use opentelemetry_proto::{
    tonic::collector::trace::v1::ExportTraceServiceRequest,
    transform::{
        common::tonic::ResourceAttributesWithSchema,
        trace::tonic::group_spans_by_resource_and_scope,
    },
};
use opentelemetry_sdk::{
    Resource,
    trace::{SpanData, SpanEvents, SpanLinks},
};
use proptest::prelude::*;
use prost::Message;

use super::{EncodedResource, export_request};

/// What opentelemetry-otlp sends for `spans`, and what the direct
/// encoding decodes to.
fn both(
    spans: Vec<SpanData>,
    resource: &Resource,
) -> (ExportTraceServiceRequest, ExportTraceServiceRequest) {
    let bytes = export_request(&spans, &EncodedResource::new(resource));
    let decoded = ExportTraceServiceRequest::decode(bytes.as_slice()).expect("decodes");
    let expected = ExportTraceServiceRequest {
        resource_spans: group_spans_by_resource_and_scope(
            spans,
            &ResourceAttributesWithSchema::from(resource),
        ),
    };
    (decoded, expected)
}

fn context(trace: u128, span: u64, flags: u8, remote: bool, state: &str) -> SpanContext {
    SpanContext::new(
        TraceId::from(trace),
        SpanId::from(span),
        TraceFlags::new(flags),
        remote,
        state.parse::<TraceState>().unwrap_or_default(),
    )
}

fn span(
    name: impl Into<Cow<'static, str>>,
    kind: SpanKind,
    attributes: Vec<KeyValue>,
    scope: InstrumentationScope,
) -> SpanData {
    let start = UNIX_EPOCH + Duration::from_nanos(1_764_000_000_123_456_789);
    SpanData {
        span_context: context(
            0x0af7651916cd43dd8448eb211c80319c,
            0xb7ad6b7169203331,
            1,
            false,
            "",
        ),
        parent_span_id: SpanId::from(0x00f067aa0ba902b7),
        parent_span_is_remote: true,
        span_kind: kind,
        name: name.into(),
        start_time: start,
        end_time: start + Duration::from_micros(1_506),
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: Status::Unset,
        instrumentation_scope: scope,
    }
}

#[test]
fn sqlgate_spans_encode_as_opentelemetry_otlp_would() {
    let scope = InstrumentationScope::builder("sqlgate").build();
    let mut rpc = span(
        "sqlgate.v1.Query/Execute",
        SpanKind::Server,
        vec![
            KeyValue::new("rpc.system.name", "grpc"),
            KeyValue::new("rpc.method", "sqlgate.v1.Query/Execute"),
            KeyValue::new("sqlgate.caller", "127.0.0.1:50123".to_owned()),
            KeyValue::new("rpc.response.status_code", "DEADLINE_EXCEEDED"),
        ],
        scope.clone(),
    );
    rpc.status = Status::error("");
    let mut statement = span(
        "SELECT",
        SpanKind::Client,
        vec![
            KeyValue::new("db.system.name", "postgresql"),
            KeyValue::new("db.operation.name", "SELECT"),
            KeyValue::new("db.query.text", "select * from t where id = $1"),
            KeyValue::new("db.response.returned_rows", 0_i64),
        ],
        scope,
    );
    statement.parent_span_id = SpanId::INVALID;
    statement.parent_span_is_remote = false;
    statement.events.events.push(Event::new(
        "pool.wait",
        UNIX_EPOCH + Duration::from_nanos(1_764_000_000_200_000_000),
        vec![
            KeyValue::new("wait_ms", 0.042),
            KeyValue::new("timed_out", false),
        ],
        0,
    ));
    let resource = Resource::builder_empty()
        .with_service_name("sqlgate")
        .with_attribute(KeyValue::new("service.instance.id", "pod-7"))
        .build();
    let (decoded, expected) = both(vec![rpc, statement], &resource);
    assert_eq!(decoded, expected);
}

#[test]
fn every_field_and_value_kind_encodes_as_opentelemetry_otlp_would() {
    let scoped = InstrumentationScope::builder("other")
        .with_version("1.2.3")
        .with_schema_url("https://opentelemetry.io/schemas/1.26.0")
        .with_attributes([KeyValue::new("scope.flag", true)])
        .build();
    let mut data = span(
        "every field ✓",
        SpanKind::Consumer,
        vec![
            KeyValue::new("empty", ""),
            KeyValue::new("zero", 0_i64),
            KeyValue::new("negative", i64::MIN),
            KeyValue::new("float", -0.0_f64),
            KeyValue::new("nan", f64::NAN.to_bits() as i64),
            KeyValue::new("false", false),
            KeyValue::new(
                "strings",
                Value::Array(Array::String(vec![
                    StringValue::from(""),
                    StringValue::from("ünïcode"),
                ])),
            ),
            KeyValue::new("ints", Value::Array(Array::I64(vec![-1, 0, 300]))),
            KeyValue::new("floats", Value::Array(Array::F64(vec![1.5, -2.25]))),
            KeyValue::new("bools", Value::Array(Array::Bool(vec![true, false]))),
            KeyValue::new("no elements", Value::Array(Array::I64(vec![]))),
        ],
        scoped.clone(),
    );
    data.span_context = context(u128::MAX, u64::MAX, 0, true, "vendor=abc,other=x");
    data.dropped_attributes_count = 7;
    data.events.dropped_count = 2;
    data.events
        .events
        .push(Event::new("no attributes", UNIX_EPOCH, vec![], 3));
    data.links.dropped_count = 1;
    data.links.links.push(Link::new(
        context(42, 43, 1, true, "k=v"),
        vec![KeyValue::new("link.kind", "follows")],
        5,
    ));
    data.status = Status::Ok;
    let mut other = span(
        "",
        SpanKind::Internal,
        vec![],
        InstrumentationScope::builder("sqlgate").build(),
    );
    other.status = Status::error("a description");
    other.start_time = UNIX_EPOCH - Duration::from_secs(1);
    let resource = Resource::builder_empty()
        .with_schema_url([KeyValue::new("k", "v")], "https://example.com/schema")
        .build();
    let (decoded, expected) = both(vec![data.clone(), other, data], &resource);
    assert_eq!(decoded, expected);
}

#[test]
fn an_empty_batch_is_an_empty_resource_spans() {
    let resource = Resource::builder_empty().build();
    let (decoded, expected) = both(vec![], &resource);
    // opentelemetry-proto sends one ResourceSpans with no scope even then.
    assert_eq!(decoded, expected);
}

fn any_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::I64),
        any::<f64>()
            .prop_filter("NaN is not equal to itself", |f| !f.is_nan())
            .prop_map(Value::F64),
        ".{0,40}".prop_map(|text| Value::String(StringValue::from(text))),
        proptest::collection::vec(any::<i64>(), 0..5).prop_map(|v| Value::Array(Array::I64(v))),
        proptest::collection::vec(".{0,8}", 0..5).prop_map(|v| {
            Value::Array(Array::String(
                v.into_iter().map(StringValue::from).collect(),
            ))
        }),
    ]
}

proptest! {
    #[test]
    fn random_attributes_encode_as_opentelemetry_otlp_would(
        attributes in proptest::collection::vec(("[a-z.]{0,20}", any_value()), 0..12),
        event_attributes in proptest::collection::vec(("[a-z]{1,8}", any_value()), 0..4),
        name in ".{0,30}",
        trace in any::<u128>(),
        span_id in any::<u64>(),
        parent in any::<u64>(),
        flags in any::<u8>(),
        remote in any::<bool>(),
        nanos in any::<u64>(),
    ) {
        let attributes: Vec<KeyValue> = attributes
            .into_iter()
            .map(|(key, value)| KeyValue::new(key, value))
            .collect();
        let mut data = span(name, SpanKind::Client, attributes, InstrumentationScope::builder("sqlgate").build());
        data.span_context = context(trace, span_id, flags, remote, "");
        data.parent_span_id = SpanId::from(parent);
        data.parent_span_is_remote = remote;
        data.start_time = SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos);
        data.events.events.push(Event::new(
            "e",
            SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos / 2),
            event_attributes
                .into_iter()
                .map(|(key, value)| KeyValue::new(key, value))
                .collect(),
            0,
        ));
        let resource = Resource::builder_empty().with_service_name("s").build();
        let (decoded, expected) = both(vec![data], &resource);
        prop_assert_eq!(decoded, expected);
    }
}
