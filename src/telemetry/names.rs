//! The names telemetry and the audit trail give to calls: the method as
//! `rpc.method` (from a closed set) and the gRPC status code as the
//! conventions write it. Depends on nothing of sqlgate's own, so that any
//! module may use it.

use tonic::Code;

/// The methods sqlgate serves, as `rpc.method` values. Any other path
/// (a caller may send any) is recorded as `_OTHER`, so that a hostile
/// caller cannot grow the number of series.
const KNOWN_METHODS: [&str; 11] = [
    "sqlgate.v1.Query/Execute",
    "sqlgate.v1.Query/ExecuteStream",
    "sqlgate.v1.Query/ExecuteBatch",
    "sqlgate.v1.Sessions/Attach",
    "sqlgate.v1.Admin/GetPoolStats",
    "sqlgate.v1.Admin/ListSessions",
    "sqlgate.v1.Admin/TerminateSession",
    "grpc.health.v1.Health/Check",
    "grpc.health.v1.Health/Watch",
    "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// `rpc.method` for a request path: a known method, or `_OTHER`.
pub(crate) fn known_method(path: &str) -> &'static str {
    let path = path.strip_prefix('/').unwrap_or(path);
    KNOWN_METHODS
        .iter()
        .find(|known| **known == path)
        .copied()
        .unwrap_or("_OTHER")
}

/// A gRPC status code as the conventions write it (`DEADLINE_EXCEEDED`).
pub(crate) fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_methods_share_one_value() {
        assert_eq!(
            known_method("/sqlgate.v1.Query/Execute"),
            "sqlgate.v1.Query/Execute"
        );
        assert_eq!(known_method("/sqlgate.v1.Query/Nope1"), "_OTHER");
        assert_eq!(known_method("/x"), "_OTHER");
    }
}
