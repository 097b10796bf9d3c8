//! Reading SQL text the way the database will: tokens ([`lexer`]), and
//! what a statement would do to the connection it runs on ([`analysis`]).

pub(crate) mod analysis;
mod functions;
pub(crate) mod lexer;

pub(crate) use analysis::{Analysis, Refusal};
