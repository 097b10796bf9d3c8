//! What sqlx reports, turned into an [`Error`]: the databases' own error
//! codes (SQLSTATE classes for PostgreSQL, SQLSTATE plus error numbers for
//! MySQL/MariaDB, extended result codes for SQLite) mapped to gRPC codes
//! once, and connection failures to UNAVAILABLE.

use tonic::Code;

use super::{DatabaseFailure, Error};

impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::Database(db) => Error::Database(classify(db.as_ref())),
            sqlx::Error::PoolClosed => Error::Unavailable("the pool is closed".to_owned()),
            sqlx::Error::Io(io) => Error::Unavailable(io.kind().to_string()),
            sqlx::Error::Tls(_) => Error::Unavailable("TLS failure".to_owned()),
            sqlx::Error::WorkerCrashed => Error::Unavailable("database worker crashed".to_owned()),
            sqlx::Error::Encode(source) => Error::invalid_request("params", source.to_string()),
            sqlx::Error::ColumnDecode { index, source } => Error::UnrepresentableValue {
                column: index,
                reason: source.to_string(),
            },
            // sqlx's MySQL driver checks the parameter count itself.
            sqlx::Error::Protocol(message) if message.contains("parameters were provided") => {
                let message = message
                    .split(" (sqlx")
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                Error::invalid_request("params", message)
            }
            sqlx::Error::Protocol(message) => Error::Internal(format!("protocol: {message}")),
            other => Error::Internal(other.to_string()),
        }
    }
}

/// Maps a database's own error to a gRPC code: SQLSTATE classes for
/// PostgreSQL, SQLSTATE plus error numbers for MySQL, result codes for SQLite.
fn classify(db: &dyn sqlx::error::DatabaseError) -> DatabaseFailure {
    let sqlstate = db.code().map(|c| c.into_owned()).unwrap_or_default();
    let message = db.message().to_owned();
    // PostgreSQL's read_only_sql_transaction; MySQL/MariaDB's 1792
    // (ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION) has the same SQLSTATE.
    let mut read_only_refusal = sqlstate == "25006";
    let code = if let Some(mysql) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        mysql_code(mysql.number(), &sqlstate)
    } else if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        let result = sqlstate.parse().unwrap_or(1);
        // SQLITE_READONLY and its extended codes (`query_only`).
        read_only_refusal = result & 0xff == 8;
        sqlite_code(result)
    } else if sqlstate == "57014" && message.contains("statement timeout") {
        Code::DeadlineExceeded
    } else {
        sqlstate_code(&sqlstate)
    };
    DatabaseFailure {
        code,
        sqlstate,
        message,
        read_only_refusal,
    }
}

/// PostgreSQL (and MySQL's standard) SQLSTATE → gRPC code.
fn sqlstate_code(sqlstate: &str) -> Code {
    match sqlstate {
        "23505" => Code::AlreadyExists,
        "40001" | "40P01" => Code::Aborted,
        "42501" => Code::PermissionDenied,
        "57014" => Code::Cancelled,
        "25P02" | "25006" => Code::FailedPrecondition,
        // "bind message supplies N parameters, but prepared statement requires M"
        "08P01" => Code::InvalidArgument,
        "57P01" | "57P02" | "57P03" => Code::Unavailable,
        _ => match sqlstate.get(..2).unwrap_or_default() {
            "42" | "22" | "0A" | "26" | "34" | "3D" | "3F" | "07" => Code::InvalidArgument,
            "23" | "25" | "2B" | "55" => Code::FailedPrecondition,
            "28" => Code::Unauthenticated,
            "08" => Code::Unavailable,
            "53" | "54" => Code::ResourceExhausted,
            "40" => Code::Aborted,
            _ => Code::Internal,
        },
    }
}

/// MySQL/MariaDB error numbers that SQLSTATE alone does not tell apart.
fn mysql_code(number: u16, sqlstate: &str) -> Code {
    match number {
        1062 | 1586 => Code::AlreadyExists,
        1213 | 1205 => Code::Aborted,
        1044 | 1142 | 1143 | 1227 => Code::PermissionDenied,
        1045 => Code::Unauthenticated,
        3024 | 1969 => Code::DeadlineExceeded,
        1317 => Code::Cancelled,
        1210 | 1064 | 1146 | 1054 | 1049 | 1149 | 1166 => Code::InvalidArgument,
        // A value the column cannot hold, refused by strict mode (set on
        // every connection) instead of being stored changed: wrong type or
        // format (1366, 1292, 1411), out of range (1264, 1690), too long
        // (1406), not an ENUM/SET member or cut short (1265, whose SQLSTATE
        // 01000 is a warning's), division by zero in a write (1365).
        // Like PostgreSQL's class 22, the value is the caller's to fix.
        1366 | 1292 | 1411 | 1264 | 1690 | 1406 | 1265 | 1365 => Code::InvalidArgument,
        // NOT NULL, a missing value for a column without a default (1364,
        // strict mode), foreign keys, CHECK constraints.
        1048 | 1364 | 1451 | 1452 | 3819 | 4025 => Code::FailedPrecondition,
        _ => sqlstate_code(sqlstate),
    }
}

/// SQLite extended result codes → gRPC code.
fn sqlite_code(code: i32) -> Code {
    match code {
        2067 | 1555 => Code::AlreadyExists,
        5 | 6 | 261 | 517 => Code::Aborted,
        9 => Code::Cancelled,
        3 | 23 => Code::PermissionDenied,
        8 | 1032 => Code::FailedPrecondition,
        13 => Code::ResourceExhausted,
        _ if code & 0xff == 19 => Code::FailedPrecondition,
        1 | 20 | 25 | 18 => Code::InvalidArgument,
        _ => Code::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_map_to_the_designed_codes() {
        assert_eq!(sqlstate_code("42601"), Code::InvalidArgument);
        assert_eq!(sqlstate_code("42P01"), Code::InvalidArgument);
        assert_eq!(sqlstate_code("23505"), Code::AlreadyExists);
        assert_eq!(sqlstate_code("40001"), Code::Aborted);
        assert_eq!(sqlstate_code("40P01"), Code::Aborted);
        assert_eq!(sqlstate_code("42501"), Code::PermissionDenied);
        assert_eq!(sqlstate_code("28P01"), Code::Unauthenticated);
        assert_eq!(sqlstate_code("08006"), Code::Unavailable);
        assert_eq!(sqlstate_code("XX000"), Code::Internal);
        assert_eq!(mysql_code(1062, "23000"), Code::AlreadyExists);
        assert_eq!(mysql_code(1213, "40001"), Code::Aborted);
        // Strict mode's value errors: a bad ENUM member is SQLSTATE 01000.
        assert_eq!(mysql_code(1265, "01000"), Code::InvalidArgument);
        assert_eq!(mysql_code(1292, "22007"), Code::InvalidArgument);
        assert_eq!(mysql_code(1366, "HY000"), Code::InvalidArgument);
        assert_eq!(mysql_code(1364, "HY000"), Code::FailedPrecondition);
        assert_eq!(sqlite_code(2067), Code::AlreadyExists);
        assert_eq!(sqlite_code(1299), Code::FailedPrecondition);
    }
}
