//! Wire ↔ domain conversions. Decoding checks everything a caller can get
//! wrong (a value with no kind, a malformed date, UUID, decimal or JSON) and
//! answers with the parameter's index; encoding cannot fail.

use chrono::DateTime;
use prost_types::{Duration as PbDuration, Timestamp};

use super::pb::{self, value::Kind};
use crate::{
    config::LimitSettings,
    db::{Isolation, PoolSnapshot},
    error::Error,
    query::{
        ColumnInfo, QueryOutput, SqlValue, Statement, StreamEvent, ValueKind, value::text_form,
    },
    session::{BeginOptions, SessionCommand, SessionEvent, SessionSummary},
};

/// Builds a validated statement from a request's fields.
pub fn statement(
    sql: String,
    params: Vec<pb::Value>,
    limits: &LimitSettings,
) -> Result<Statement, Error> {
    if params.len() > limits.max_params {
        return Err(Error::invalid_request(
            "params",
            format!(
                "{} parameters; the limit is {}",
                params.len(),
                limits.max_params
            ),
        ));
    }
    let params = params
        .into_iter()
        .enumerate()
        .map(|(index, value)| {
            SqlValue::try_from(value).map_err(|message| Error::invalid_parameter(index, message))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Statement::new(sql, params, limits)
}

/// Most labels a session may carry, and their longest key and value.
const MAX_LABELS: usize = 32;
const MAX_LABEL_BYTES: usize = 256;

/// Decodes one session request; what cannot be decoded becomes
/// [`SessionCommand::Invalid`], answered for that request only.
pub fn session_command(request: pb::SessionRequest, limits: &LimitSettings) -> SessionCommand {
    use pb::session_request::Request as R;
    match request.request {
        None => SessionCommand::Invalid {
            request_id: 0,
            error: Error::invalid_request("request", "empty session request"),
        },
        Some(R::Begin(begin)) => match begin_options(begin) {
            Ok(options) => SessionCommand::Begin(options),
            Err(error) => SessionCommand::Invalid {
                request_id: 0,
                error,
            },
        },
        Some(R::Execute(execute)) => {
            let request_id = execute.request_id;
            let timeout = match execute
                .timeout
                .map(std::time::Duration::try_from)
                .transpose()
            {
                Ok(timeout) => timeout,
                Err(_) => {
                    return SessionCommand::Invalid {
                        request_id,
                        error: Error::invalid_request("timeout", "must not be negative"),
                    };
                }
            };
            match statement(execute.sql, execute.params, limits) {
                Ok(statement) => SessionCommand::Execute {
                    request_id,
                    statement,
                    timeout,
                },
                Err(error) => SessionCommand::Invalid { request_id, error },
            }
        }
        Some(R::Commit(_)) => SessionCommand::Commit,
        Some(R::Rollback(_)) => SessionCommand::Rollback,
    }
}

fn begin_options(begin: pb::BeginSession) -> Result<BeginOptions, Error> {
    let isolation = match pb::IsolationLevel::try_from(begin.isolation) {
        Ok(pb::IsolationLevel::Unspecified) => Isolation::Default,
        Ok(pb::IsolationLevel::ReadUncommitted) => Isolation::ReadUncommitted,
        Ok(pb::IsolationLevel::ReadCommitted) => Isolation::ReadCommitted,
        Ok(pb::IsolationLevel::RepeatableRead) => Isolation::RepeatableRead,
        Ok(pb::IsolationLevel::Serializable) => Isolation::Serializable,
        Err(_) => {
            return Err(Error::invalid_request(
                "begin.isolation",
                "unknown isolation level",
            ));
        }
    };
    if begin.labels.len() > MAX_LABELS
        || begin
            .labels
            .iter()
            .any(|(k, v)| k.len() > MAX_LABEL_BYTES || v.len() > MAX_LABEL_BYTES)
    {
        return Err(Error::invalid_request(
            "begin.labels",
            format!("at most {MAX_LABELS} labels of at most {MAX_LABEL_BYTES} bytes each"),
        ));
    }
    let idle_timeout = match begin
        .idle_timeout
        .map(std::time::Duration::try_from)
        .transpose()
    {
        Ok(Some(timeout)) if timeout.is_zero() => None,
        Ok(timeout) => timeout,
        Err(_) => {
            return Err(Error::invalid_request(
                "begin.idle_timeout",
                "must not be negative",
            ));
        }
    };
    Ok(BeginOptions {
        isolation,
        read_only: begin.read_only,
        labels: begin.labels.into_iter().collect(),
        idle_timeout,
    })
}

/// Encodes a session event; [`SessionEvent::Ended`] closes the stream with its status.
pub fn session_response(event: SessionEvent) -> Result<pb::SessionResponse, tonic::Status> {
    use pb::session_response::Response as R;
    let (request_id, response) = match event {
        SessionEvent::Began { session_id } => (0, R::Began(pb::SessionBegan { session_id })),
        SessionEvent::Frame { request_id, event } => (request_id, R::Frame(event.into())),
        SessionEvent::Done { request_id } => (request_id, R::Done(pb::RequestDone {})),
        SessionEvent::Error { request_id, error } => (request_id, R::Error(rpc_status(error))),
        SessionEvent::Committed => (0, R::Committed(pb::SessionCommitted {})),
        SessionEvent::RolledBack => (0, R::RolledBack(pb::SessionRolledBack {})),
        SessionEvent::Ended(error) => return Err(error.into()),
    };
    Ok(pb::SessionResponse {
        request_id,
        response: Some(response),
    })
}

/// An error as a `google.rpc.Status` message, details included.
fn rpc_status(error: Error) -> tonic_types::pb::Status {
    use prost::Message;
    let status: tonic::Status = error.into();
    tonic_types::pb::Status::decode(status.details()).unwrap_or_else(|_| tonic_types::pb::Status {
        code: status.code() as i32,
        message: status.message().to_owned(),
        details: Vec::new(),
    })
}

impl TryFrom<pb::Value> for SqlValue {
    /// What is wrong, without the value itself.
    type Error = String;

    fn try_from(value: pb::Value) -> Result<Self, String> {
        let kind = value
            .kind
            .ok_or_else(|| "the value has no kind set (use null_value for NULL)".to_owned())?;
        Ok(match kind {
            Kind::NullValue(_) => SqlValue::Null,
            Kind::BoolValue(v) => SqlValue::Bool(v),
            Kind::IntValue(v) => SqlValue::Int(v),
            Kind::FloatValue(v) => SqlValue::Float(v),
            Kind::TextValue(v) => SqlValue::Text(v),
            Kind::BytesValue(v) => SqlValue::Bytes(v),
            Kind::DecimalValue(v) => SqlValue::Decimal(parse_decimal(&v)?),
            Kind::TimestampValue(ts) => SqlValue::Timestamp(
                u32::try_from(ts.nanos)
                    .ok()
                    .filter(|nanos| *nanos < 1_000_000_000)
                    .and_then(|nanos| DateTime::from_timestamp(ts.seconds, nanos))
                    .ok_or_else(|| "timestamp_value is out of range".to_owned())?,
            ),
            Kind::DatetimeValue(v) => SqlValue::DateTime(
                text_form::parse_datetime(&v)
                    .ok_or("datetime_value must be YYYY-MM-DDTHH:MM:SS[.ffffff] with no zone")?,
            ),
            Kind::DateValue(v) => {
                SqlValue::Date(text_form::parse_date(&v).ok_or("date_value must be YYYY-MM-DD")?)
            }
            Kind::TimeValue(v) => SqlValue::Time(
                text_form::parse_time(&v).ok_or("time_value must be HH:MM:SS[.ffffff]")?,
            ),
            Kind::JsonValue(v) => {
                serde_json::from_str::<serde::de::IgnoredAny>(&v).map_err(|err| {
                    format!(
                        "json_value is not valid JSON (line {}, column {})",
                        err.line(),
                        err.column()
                    )
                })?;
                SqlValue::Json(v)
            }
            Kind::UuidValue(v) => SqlValue::Uuid(
                uuid::Uuid::parse_str(&v).map_err(|_| "uuid_value is not a UUID".to_owned())?,
            ),
            Kind::ArrayValue(list) => SqlValue::Array(
                list.values
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| {
                        SqlValue::try_from(v).map_err(|msg| format!("element {i}: {msg}"))
                    })
                    .collect::<Result<_, _>>()?,
            ),
        })
    }
}

/// Accepts plain decimal text only (`-12.3400`, `.5`): an exponent form
/// could ask for an enormous expansion. `NaN`, `Infinity` and `-Infinity`,
/// spelled as PostgreSQL returns them, are accepted too.
fn parse_decimal(text: &str) -> Result<String, String> {
    const MESSAGE: &str = "decimal_value must be plain decimal text such as -12.3400";
    if crate::query::value::is_special_decimal(text) {
        return Ok(text.to_owned());
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty())
        || !all_digits(whole)
        || !all_digits(fraction)
        || text.len() > 1000
    {
        return Err(MESSAGE.to_owned());
    }
    Ok(text.to_owned())
}

impl From<SqlValue> for pb::Value {
    fn from(value: SqlValue) -> Self {
        let kind = match value {
            SqlValue::Null => Kind::NullValue(0),
            SqlValue::Bool(v) => Kind::BoolValue(v),
            SqlValue::Int(v) => Kind::IntValue(v),
            SqlValue::Float(v) => Kind::FloatValue(v),
            SqlValue::Text(v) => Kind::TextValue(v),
            SqlValue::Bytes(v) => Kind::BytesValue(v),
            SqlValue::Decimal(v) => Kind::DecimalValue(v),
            SqlValue::Timestamp(v) => Kind::TimestampValue(Timestamp {
                seconds: v.timestamp(),
                nanos: i32::try_from(v.timestamp_subsec_nanos()).unwrap_or_default(),
            }),
            SqlValue::DateTime(v) => Kind::DatetimeValue(text_form::format_datetime(&v)),
            SqlValue::Date(v) => Kind::DateValue(text_form::format_date(&v)),
            SqlValue::Time(v) => Kind::TimeValue(text_form::format_time(&v)),
            SqlValue::Json(v) => Kind::JsonValue(v),
            SqlValue::Uuid(v) => Kind::UuidValue(v.hyphenated().to_string()),
            SqlValue::Array(values) => Kind::ArrayValue(pb::ValueList {
                values: values.into_iter().map(pb::Value::from).collect(),
            }),
        };
        pb::Value { kind: Some(kind) }
    }
}

impl From<ValueKind> for pb::ValueType {
    fn from(kind: ValueKind) -> Self {
        match kind {
            ValueKind::Unknown => pb::ValueType::Unspecified,
            ValueKind::Null => pb::ValueType::Null,
            ValueKind::Bool => pb::ValueType::Bool,
            ValueKind::Int => pb::ValueType::Int,
            ValueKind::Float => pb::ValueType::Float,
            ValueKind::Text => pb::ValueType::Text,
            ValueKind::Bytes => pb::ValueType::Bytes,
            ValueKind::Decimal => pb::ValueType::Decimal,
            ValueKind::Timestamp => pb::ValueType::Timestamp,
            ValueKind::DateTime => pb::ValueType::Datetime,
            ValueKind::Date => pb::ValueType::Date,
            ValueKind::Time => pb::ValueType::Time,
            ValueKind::Json => pb::ValueType::Json,
            ValueKind::Uuid => pb::ValueType::Uuid,
            ValueKind::Array => pb::ValueType::Array,
        }
    }
}

impl From<ColumnInfo> for pb::Column {
    fn from(column: ColumnInfo) -> Self {
        pb::Column {
            name: column.name,
            r#type: pb::ValueType::from(column.kind).into(),
            db_type: column.db_type,
            nullable: column.nullable,
            element_type: column
                .element_kind
                .map_or(pb::ValueType::Unspecified, pb::ValueType::from)
                .into(),
        }
    }
}

fn rows(rows: Vec<Vec<SqlValue>>) -> Vec<pb::Row> {
    rows.into_iter()
        .map(|values| pb::Row {
            values: values.into_iter().map(pb::Value::from).collect(),
        })
        .collect()
}

impl From<QueryOutput> for pb::ExecuteResponse {
    fn from(output: QueryOutput) -> Self {
        pb::ExecuteResponse {
            columns: output.columns.into_iter().map(pb::Column::from).collect(),
            rows: rows(output.rows),
            rows_affected: output.rows_affected,
        }
    }
}

impl From<StreamEvent> for pb::ResultFrame {
    fn from(event: StreamEvent) -> Self {
        use pb::result_frame::Frame;
        let frame = match event {
            StreamEvent::Columns(columns) => Frame::Metadata(pb::ResultMetadata {
                columns: columns.into_iter().map(pb::Column::from).collect(),
            }),
            StreamEvent::Rows(batch) => Frame::Rows(pb::RowBatch::encode_rows(batch)),
            StreamEvent::Finished(stats) => Frame::Stats(pb::ResultStats {
                rows_affected: stats.rows_affected,
                rows_returned: stats.rows_returned,
                elapsed: Some(duration(stats.elapsed)),
            }),
        };
        pb::ResultFrame { frame: Some(frame) }
    }
}

/// A std duration on the wire (saturating; never fails).
pub fn duration(value: std::time::Duration) -> PbDuration {
    PbDuration {
        seconds: i64::try_from(value.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(value.subsec_nanos()).unwrap_or_default(),
    }
}

/// A wall-clock time on the wire (saturating; before 1970 reads as 1970).
fn timestamp(value: std::time::SystemTime) -> Timestamp {
    let since_epoch = duration(
        value
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default(),
    );
    Timestamp {
        seconds: since_epoch.seconds,
        nanos: since_epoch.nanos,
    }
}

impl From<SessionSummary> for pb::SessionInfo {
    fn from(summary: SessionSummary) -> Self {
        pb::SessionInfo {
            session_id: summary.id,
            peer: summary.peer,
            labels: summary.labels.into_iter().collect(),
            state: summary.state.name().to_owned(),
            started_at: Some(timestamp(summary.started_at)),
            age: Some(duration(summary.age)),
            idle: Some(duration(summary.idle)),
            current_statement_fingerprint: summary.current_fingerprint.unwrap_or_default(),
            statements_executed: summary.statements,
        }
    }
}

impl From<PoolSnapshot> for pb::PoolStats {
    /// The pool's own figures; Admin adds the session and probe figures.
    fn from(snapshot: PoolSnapshot) -> Self {
        pb::PoolStats {
            backend: snapshot.backend.name().to_owned(),
            max_connections: snapshot.max_connections,
            min_connections: snapshot.min_connections,
            open_connections: snapshot.open_connections,
            idle_connections: snapshot.idle_connections,
            in_use_connections: snapshot.in_use_connections,
            waiting: snapshot.waiting,
            acquire_timeouts: snapshot.acquire_timeouts,
            acquire_wait_p50: Some(duration(snapshot.acquire_wait_p50)),
            acquire_wait_p99: Some(duration(snapshot.acquire_wait_p99)),
            acquire_wait_max: Some(duration(snapshot.acquire_wait_max)),
            calls_total: snapshot.calls_total,
            connections_opened: snapshot.connections_opened,
            connections_closed: snapshot.connections_closed,
            ..pb::PoolStats::default()
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn value(kind: Kind) -> pb::Value {
        pb::Value { kind: Some(kind) }
    }

    #[test]
    fn malformed_values_are_refused_with_a_reason() {
        for (bad, why) in [
            (pb::Value { kind: None }, "no kind"),
            (
                value(Kind::DecimalValue("1e999999999".into())),
                "plain decimal",
            ),
            (value(Kind::DecimalValue("nan".into())), "plain decimal"),
            (value(Kind::DecimalValue("inf".into())), "plain decimal"),
            (value(Kind::DecimalValue("".into())), "plain decimal"),
            (value(Kind::DateValue("2023-02-29".into())), "YYYY-MM-DD"),
            (value(Kind::TimeValue("25:00:00".into())), "HH:MM:SS"),
            (
                value(Kind::DatetimeValue("2024-01-01T00:00:00Z".into())),
                "no zone",
            ),
            (value(Kind::UuidValue("not-a-uuid".into())), "not a UUID"),
            (value(Kind::JsonValue("{".into())), "not valid JSON"),
            (
                value(Kind::TimestampValue(Timestamp {
                    seconds: i64::MAX,
                    nanos: 0,
                })),
                "out of range",
            ),
            (
                value(Kind::TimestampValue(Timestamp {
                    seconds: 0,
                    nanos: -1,
                })),
                "out of range",
            ),
        ] {
            let err = SqlValue::try_from(bad).expect_err(why);
            assert!(err.contains(why), "{err} should mention {why}");
        }
    }

    /// Any value sqlgate may send (arrays one level deep).
    pub(crate) fn arb_value() -> impl Strategy<Value = SqlValue> {
        let scalar = prop_oneof![
            Just(SqlValue::Null),
            any::<bool>().prop_map(SqlValue::Bool),
            any::<i64>().prop_map(SqlValue::Int),
            any::<f64>()
                .prop_filter("NaN never equals itself", |f| !f.is_nan())
                .prop_map(SqlValue::Float),
            ".*".prop_map(SqlValue::Text),
            proptest::collection::vec(any::<u8>(), 0..64).prop_map(SqlValue::Bytes),
            "-?[0-9]{1,28}\\.[0-9]{0,10}".prop_map(SqlValue::Decimal),
            (-62_135_596_800i64..253_402_300_799, 0u32..1_000_000).prop_map(|(s, us)| {
                SqlValue::Timestamp(DateTime::from_timestamp(s, us * 1000).expect("ts"))
            }),
            any::<u128>().prop_map(|n| SqlValue::Uuid(uuid::Uuid::from_u128(n))),
            (-62_135_596_800i64..253_402_300_799, 0u32..1_000_000).prop_map(|(s, us)| {
                SqlValue::DateTime(
                    DateTime::from_timestamp(s, us * 1000)
                        .expect("ts")
                        .naive_utc(),
                )
            }),
            (-62_135_596_800i64..253_402_300_799).prop_map(|s| {
                SqlValue::Date(DateTime::from_timestamp(s, 0).expect("ts").date_naive())
            }),
            (0u32..86_400, 0u32..1_000_000).prop_map(|(s, us)| {
                SqlValue::Time(
                    chrono::NaiveTime::from_num_seconds_from_midnight_opt(s, us * 1000)
                        .expect("time"),
                )
            }),
            (any::<i64>(), "[a-z ]{0,12}").prop_map(|(n, text)| {
                SqlValue::Json(format!("{{\"n\": {n}, \"text\": \"{text}\"}}"))
            }),
        ];
        scalar.prop_recursive(1, 8, 8, |inner| {
            proptest::collection::vec(inner, 0..8).prop_map(SqlValue::Array)
        })
    }

    proptest! {
        #[test]
        fn wire_round_trip_is_lossless(value in arb_value()) {
            let wire = pb::Value::from(value.clone());
            let back = SqlValue::try_from(wire).expect("decodes");
            prop_assert_eq!(back, value);
        }

        #[test]
        fn decoding_arbitrary_text_never_panics(text in ".{0,64}") {
            for kind in [
                Kind::DecimalValue(text.clone()),
                Kind::DateValue(text.clone()),
                Kind::TimeValue(text.clone()),
                Kind::DatetimeValue(text.clone()),
                Kind::UuidValue(text.clone()),
                Kind::JsonValue(text.clone()),
            ] {
                let _ = SqlValue::try_from(value(kind));
            }
        }
    }
}
