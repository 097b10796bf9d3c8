//! Values on the wire ↔ [`SqlValue`], and the kinds and columns that
//! describe them. A value is the one place a caller's data crosses into the
//! domain, so decoding checks everything that can be wrong with it (no kind
//! set, a malformed date, UUID, decimal or JSON, an out-of-range timestamp)
//! and says what, without the value itself; the request decoder adds the
//! parameter's index. Encoding cannot fail: every [`SqlValue`] has a wire
//! form, and the round trip is lossless (see the property tests).

use chrono::DateTime;
use prost_types::Timestamp;

use crate::{
    grpc::pb::{self, value::Kind},
    query::{ColumnInfo, SqlValue, ValueKind, value::text_form},
};

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

/// Rows of values as wire rows, for the unary answer.
pub(super) fn rows(rows: Vec<Vec<SqlValue>>) -> Vec<pb::Row> {
    rows.into_iter()
        .map(|values| pb::Row {
            values: values.into_iter().map(pb::Value::from).collect(),
        })
        .collect()
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
