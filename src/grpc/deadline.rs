//! The call's budget from its `grpc-timeout` header, resolved by the one
//! rule in [`MethodBudget::deadline`]: min(what the client asks, the
//! method's maximum), or the method's default when the client sets none.
//! tonic's own timeout is not used: it answers CANCELLED and does not bound
//! a streaming body.

use std::time::Duration;

use tonic::metadata::MetadataMap;

use crate::{config::MethodBudget, db::Deadline};

/// The deadline of a call that arrived with `metadata` now.
pub(crate) fn call_deadline(metadata: &MetadataMap, budget: &MethodBudget) -> Deadline {
    let asked = metadata
        .get("grpc-timeout")
        .and_then(|value| value.to_str().ok())
        .and_then(parse_grpc_timeout);
    budget.deadline(asked)
}

/// Parses the gRPC wire form: up to 8 digits and a unit (H, M, S, m, u, n).
/// A malformed header counts as absent.
pub(crate) fn parse_grpc_timeout(text: &str) -> Option<Duration> {
    let split = text.len().checked_sub(1)?;
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(value.checked_mul(3600)?),
        "M" => Duration::from_secs(value.checked_mul(60)?),
        "S" => Duration::from_secs(value),
        "m" => Duration::from_millis(value),
        "u" => Duration::from_micros(value),
        "n" => Duration::from_nanos(value),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit_and_refuses_garbage() {
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_grpc_timeout("0n"), Some(Duration::ZERO));
        for bad in ["", "S", "10", "123456789S", "1x", "-1S", "1.5S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_header_is_capped_by_the_method_budget() {
        let budget = MethodBudget {
            default: Duration::from_secs(30),
            max: Duration::from_secs(60),
        };
        let mut metadata = MetadataMap::new();
        let none = call_deadline(&metadata, &budget).remaining();
        assert!(none > Duration::from_secs(29) && none <= Duration::from_secs(30));
        metadata.insert("grpc-timeout", "1H".parse().expect("ascii"));
        assert!(call_deadline(&metadata, &budget).remaining() <= Duration::from_secs(60));
        metadata.insert("grpc-timeout", "100m".parse().expect("ascii"));
        assert!(call_deadline(&metadata, &budget).remaining() <= Duration::from_millis(100));
    }
}
