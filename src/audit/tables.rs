//! What a statement does and to which tables, for the audit trail: the
//! statement is parsed with `sqlparser` (in the backend's dialect) from its
//! sanitized text — literals already replaced by `?` — so that nothing the
//! parser keeps can be a value.

use std::ops::ControlFlow;

use sqlparser::{
    ast::{Statement, visit_relations},
    dialect::{Dialect, GenericDialect, MySqlDialect, PostgreSqlDialect, SQLiteDialect},
    parser::Parser,
};

use crate::{db::Backend, query::operation::operation_name};

/// The most table names one event lists.
const MAX_TABLES: usize = 32;

/// A statement's operation (`SELECT`, `INSERT`…, from its first keyword)
/// and the tables it names, in order of appearance, each once. A
/// statement the parser does not understand names no tables.
pub(crate) fn describe(sanitized: &str, backend: Backend) -> (&'static str, Vec<String>) {
    let operation = operation_name(sanitized);
    let dialect: Box<dyn Dialect> = match backend {
        Backend::Postgres => Box::new(PostgreSqlDialect {}),
        Backend::MySql => Box::new(MySqlDialect {}),
        Backend::Sqlite => Box::new(SQLiteDialect {}),
    };
    let statements = Parser::parse_sql(dialect.as_ref(), sanitized)
        .or_else(|_| Parser::parse_sql(&GenericDialect {}, sanitized))
        .unwrap_or_default();
    let mut tables: Vec<String> = Vec::new();
    for statement in &statements {
        collect(statement, &mut tables);
    }
    (operation, tables)
}

fn collect(statement: &Statement, tables: &mut Vec<String>) {
    let _ = visit_relations(statement, |relation| {
        let name = relation.to_string();
        if !tables.contains(&name) && tables.len() < MAX_TABLES {
            tables.push(name);
        }
        ControlFlow::<()>::Continue(())
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_named_once_in_order() {
        let (operation, tables) = describe(
            "insert into audit_log (a) select b from notes join people p on p.id = notes.owner where notes.id = $1",
            Backend::Postgres,
        );
        assert_eq!(operation, "INSERT");
        assert_eq!(tables, ["audit_log", "notes", "people"]);
        let (operation, tables) = describe("update `s`.`t` set a = ? where b = ?", Backend::MySql);
        assert_eq!(operation, "UPDATE");
        assert_eq!(tables, ["`s`.`t`"]);
        assert_eq!(
            describe("not sql at all", Backend::Sqlite),
            ("OTHER", vec![])
        );
    }
}
