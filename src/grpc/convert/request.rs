//! Requests on the wire → domain commands: a statement and its parameters
//! ([`statement`]), and one session request ([`session_command`]) with the
//! options a session begins with. This file only decodes; the rules a
//! decoded command must obey (how many parameters, which labels) belong to
//! [`Statement`] and [`Labels`], which this code calls. A value that cannot
//! be decoded is refused with its parameter's index.

use std::{sync::Arc, time::Duration};

use crate::{
    config::LimitSettings,
    db::{Backend, Isolation},
    error::Error,
    grpc::pb,
    query::{SqlValue, Statement},
    session::{BeginOptions, Labels, SessionCommand},
};

/// Builds a validated statement from a request's fields. The parameter
/// count is checked before any value is decoded, so that a request with a
/// huge list is refused without the work of decoding it.
pub fn statement(
    sql: String,
    params: Vec<pb::Value>,
    limits: &LimitSettings,
    backend: Backend,
) -> Result<Statement, Error> {
    statement_or_text(sql, params, limits, backend).map_err(|(error, _)| error)
}

/// [`statement`], giving back the text of a statement refused for its
/// parameters (when the text is within the size limit) for the audit
/// trail's event — moved, not copied.
fn statement_or_text(
    sql: String,
    params: Vec<pb::Value>,
    limits: &LimitSettings,
    backend: Backend,
) -> Result<Statement, (Error, Option<String>)> {
    let keep = |sql: String| (sql.len() <= limits.max_statement_bytes).then_some(sql);
    if let Err(error) = Statement::check_param_count(params.len(), limits) {
        return Err((error, keep(sql)));
    }
    let params = params
        .into_iter()
        .enumerate()
        .map(|(index, value)| {
            SqlValue::try_from(value).map_err(|message| Error::invalid_parameter(index, message))
        })
        .collect::<Result<Vec<_>, _>>();
    match params {
        Ok(params) => Statement::new(sql, params, limits, backend).map_err(|error| (error, None)),
        Err(error) => Err((error, keep(sql))),
    }
}

/// Decodes one session request; what cannot be decoded becomes
/// [`SessionCommand::Invalid`], answered for that request only. A begin
/// whose options decode but whose first statement does not still begins:
/// its first statement is the invalid command.
pub fn session_command(
    request: pb::SessionRequest,
    limits: &LimitSettings,
    backend: Backend,
) -> SessionCommand {
    use pb::session_request::Request as R;
    match request.request {
        None => SessionCommand::Invalid {
            request_id: 0,
            error: Error::invalid_request("request", "empty session request"),
            commit_after: false,
            sql: None,
        },
        Some(R::Begin(mut begin)) => {
            let first = begin.first.take();
            match begin_options(begin) {
                Ok(options) => SessionCommand::Begin {
                    options,
                    first: first.map(|first| Box::new(execute_command(first, limits, backend))),
                },
                Err(error) => SessionCommand::Invalid {
                    request_id: 0,
                    error,
                    commit_after: false,
                    sql: None,
                },
            }
        }
        Some(R::Execute(execute)) => execute_command(execute, limits, backend),
        Some(R::Commit(_)) => SessionCommand::Commit,
        Some(R::Rollback(_)) => SessionCommand::Rollback,
    }
}

/// One execute (on its own, or a begin's first statement) as a command.
fn execute_command(
    execute: pb::SessionExecute,
    limits: &LimitSettings,
    backend: Backend,
) -> SessionCommand {
    let (request_id, commit_after) = (execute.request_id, execute.commit_after);
    let invalid = |error, sql: Option<String>| SessionCommand::Invalid {
        request_id,
        error,
        commit_after,
        sql: sql.map(Arc::from),
    };
    let timeout = match execute.timeout.map(Duration::try_from).transpose() {
        Ok(timeout) => timeout,
        Err(_) => {
            let sql = (execute.sql.len() <= limits.max_statement_bytes).then_some(execute.sql);
            return invalid(
                Error::invalid_request("timeout", "must not be negative"),
                sql,
            );
        }
    };
    match statement_or_text(execute.sql, execute.params, limits, backend) {
        Ok(statement) => SessionCommand::Execute {
            request_id,
            statement,
            timeout,
            commit_after,
        },
        Err((error, sql)) => invalid(error, sql),
    }
}

/// A `begin`'s fields as the options a session opens with; checked in the
/// order isolation, labels, idle timeout (the first failure is reported).
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
    let labels = Labels::new(begin.labels)?;
    let idle_timeout = match begin.idle_timeout.map(Duration::try_from).transpose() {
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
        labels: labels.into_map(),
        idle_timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_many_parameters_are_refused_before_any_is_decoded() {
        let limits = LimitSettings {
            max_params: 2,
            ..LimitSettings::default()
        };
        // None of these values would decode: the count must be refused first.
        let params = vec![pb::Value { kind: None }; 3];
        let err =
            statement("SELECT 1".into(), params, &limits, Backend::Postgres).expect_err("too many");
        assert!(
            matches!(err, Error::InvalidRequest { ref field, ref message }
                if field == "params" && message == "3 parameters; the limit is 2"),
            "{err:?}"
        );
        let params = vec![pb::Value { kind: None }; 2];
        let err = statement("SELECT 1".into(), params, &limits, Backend::Postgres)
            .expect_err("undecodable");
        assert!(
            matches!(err, Error::InvalidParameter { index: 0, .. }),
            "{err:?}"
        );
    }
}
