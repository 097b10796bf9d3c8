//! Start-up for the audit table: create it when `audit.create_table`
//! allows, then prove that sqlgate can insert a row — inside a
//! transaction that is rolled back, so that only INSERT is needed and
//! nothing is left behind — and refuse to start otherwise: a deployment
//! that asked for an audit table must not run writes without it.

use std::time::Duration;

use super::{Actor, table::AuditTable, table::AuditWriter};
use crate::{
    db::{
        Database, Deadline, Driver,
        transaction::{Access, Begin, Checkout},
    },
    error::Error,
};

/// How long the start-up check may take.
const CHECK_BUDGET: Duration = Duration::from_secs(10);

/// Creates (if `create`) and checks `table` on `db`; the error says what
/// to do when sqlgate cannot insert into it.
pub(crate) async fn prepare<DB: Driver>(
    db: &Database<DB>,
    table: &AuditTable,
    create: bool,
) -> Result<(), Error> {
    let deadline = Deadline::after(CHECK_BUDGET);
    let mut checkout = Checkout::take(db, &deadline, false).await?;
    let checked = async {
        if create {
            DB::raw(checkout.connection(), table.create_sql())
                .await
                .map_err(|err| format!("cannot create it: {err}"))?;
        }
        checkout
            .begin(Begin::Bounded(&deadline, Access::ReadWrite))
            .await
            .map_err(|failure| failure.error.to_string())?;
        let probe = AuditWriter {
            table: table.clone(),
            actor: Actor {
                caller: "sqlgate start-up check".to_owned(),
                role: None,
                peer: None,
            },
            method: "-",
            session: None,
            tags: Vec::new(),
        }
        .row_sql("SELECT 1", "0000000000000000", (0, 0), Duration::ZERO);
        let inserted = DB::raw(checkout.connection(), probe).await;
        checkout.rollback().await;
        inserted.map_err(|err| format!("cannot insert into it: {err}"))
    };
    let checked = tokio::time::timeout_at(deadline.instant(), checked).await;
    match checked {
        Ok(Ok(())) => {
            checkout.release().await;
            Ok(())
        }
        Ok(Err(why)) => {
            checkout.close();
            Err(refusal(table, &why))
        }
        Err(_) => {
            checkout.close();
            Err(refusal(table, "the check timed out"))
        }
    }
}

fn refusal(table: &AuditTable, why: &str) -> Error {
    Error::Internal(format!(
        "audit.table {}: {why}; create it with the DDL in the README (Observability → \
         Audit table) and grant sqlgate INSERT on it, or set audit.create_table = true",
        table.name()
    ))
}
