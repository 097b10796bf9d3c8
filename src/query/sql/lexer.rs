//! Splits SQL text into the tokens the database itself would see, per
//! backend: where a string, a quoted identifier or a comment ends differs
//! (PostgreSQL nests block comments and has dollar quotes and `E'…'`
//! escapes; MySQL escapes with backslashes, runs the code inside `/*! … */`
//! and needs a space after `--`; SQLite quotes identifiers with `[…]`).
//! Getting that wrong in the database's favour would let a caller hide a
//! statement or a function call from [`super::analysis`], so when in doubt
//! the lexer sees *more* code, never less.

use crate::db::Backend;

/// One significant token; white space and comments are skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Token<'a> {
    /// An unquoted word: keyword or identifier, as written.
    Word(&'a str),
    /// A quoted identifier's text, quotes included.
    QuotedIdentifier(&'a str),
    /// A string literal, quotes (and any prefix) included.
    Text(&'a str),
    /// A numeric literal.
    Number,
    /// A positional placeholder: `$n` / `?n` (numbered) or `?` (anonymous).
    Placeholder(Option<usize>),
    /// A named parameter or MySQL user variable: `@x`, `:x` (SQLite).
    Variable,
    /// A MySQL system variable: `@@x`, `@@session.x` (the word after `@@`).
    SystemVariable(&'a str),
    /// `;` between statements.
    Semicolon,
    /// `(`.
    Open,
    /// `)`.
    Close,
    /// `.`.
    Dot,
    /// Any other punctuation or operator character.
    Symbol(u8),
}

/// The tokens of `sql` as `backend` reads them.
pub(crate) struct Lexer<'a> {
    sql: &'a str,
    bytes: &'a [u8],
    at: usize,
    backend: Backend,
    /// Inside a MySQL `/*! … */` comment, whose content is code.
    in_executable_comment: bool,
}

impl<'a> Lexer<'a> {
    /// A lexer over `sql` with `backend`'s rules.
    pub(crate) fn new(sql: &'a str, backend: Backend) -> Self {
        Self {
            sql,
            bytes: sql.as_bytes(),
            at: 0,
            backend,
            in_executable_comment: false,
        }
    }

    fn peek(&self, offset: usize) -> Option<u8> {
        self.bytes.get(self.at + offset).copied()
    }

    /// Skips white space and comments; false at the end of the text.
    fn skip_insignificant(&mut self) -> bool {
        loop {
            let Some(b) = self.peek(0) else { return false };
            match b {
                _ if b.is_ascii_whitespace() => self.at += 1,
                b'-' if self.peek(1) == Some(b'-') && self.dash_comment_starts() => {
                    self.skip_line();
                }
                b'#' if self.backend == Backend::MySql => self.skip_line(),
                b'/' if self.peek(1) == Some(b'*') => {
                    if self.backend == Backend::MySql && self.executable_comment_starts() {
                        continue;
                    }
                    self.skip_block_comment();
                }
                b'*' if self.in_executable_comment && self.peek(1) == Some(b'/') => {
                    self.in_executable_comment = false;
                    self.at += 2;
                }
                _ => return true,
            }
        }
    }

    /// MySQL takes `--` as a comment only when white space (or the end)
    /// follows; `1--1` is arithmetic there.
    fn dash_comment_starts(&self) -> bool {
        self.backend != Backend::MySql
            || self
                .peek(2)
                .is_none_or(|next| next.is_ascii_whitespace() || next.is_ascii_control())
    }

    /// `/*!` or `/*M!` (optionally followed by a version number): MySQL and
    /// MariaDB run the comment's content, so the lexer reads it as code.
    fn executable_comment_starts(&mut self) -> bool {
        let marker = match (self.peek(2), self.peek(3)) {
            (Some(b'!'), _) => 3,
            (Some(b'M'), Some(b'!')) => 4,
            _ => return false,
        };
        self.at += marker;
        while self.peek(0).is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
        self.in_executable_comment = true;
        true
    }

    fn skip_line(&mut self) {
        while let Some(b) = self.peek(0) {
            self.at += 1;
            if b == b'\n' {
                break;
            }
        }
    }

    /// PostgreSQL nests block comments; MySQL and SQLite end at the first
    /// `*/`. An unterminated comment runs to the end.
    fn skip_block_comment(&mut self) {
        self.at += 2;
        let mut depth = 1usize;
        while let Some(b) = self.peek(0) {
            if b == b'*' && self.peek(1) == Some(b'/') {
                self.at += 2;
                depth -= 1;
                if depth == 0 {
                    return;
                }
            } else if b == b'/' && self.peek(1) == Some(b'*') && self.backend == Backend::Postgres {
                self.at += 2;
                depth += 1;
            } else {
                self.at += 1;
            }
        }
    }

    /// Skips a quoted run opened at `self.at` by `quote`. A doubled quote
    /// stands for itself; `backslash` also lets `\` escape the next byte.
    fn skip_quoted(&mut self, quote: u8, backslash: bool) {
        self.at += 1;
        while let Some(b) = self.peek(0) {
            if backslash && b == b'\\' {
                self.at += 2;
                continue;
            }
            self.at += 1;
            if b == quote {
                if self.peek(0) == Some(quote) {
                    self.at += 1;
                    continue;
                }
                return;
            }
        }
        self.at = self.bytes.len();
    }

    /// `$tag$ … $tag$` at `self.at`, if one starts there (PostgreSQL).
    fn skip_dollar_quoted(&mut self) -> bool {
        let start = self.at;
        let mut end = start + 1;
        if self.bytes.get(end).is_some_and(|b| b.is_ascii_digit()) {
            return false;
        }
        while self
            .bytes
            .get(end)
            .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b >= 0x80)
        {
            end += 1;
        }
        if self.bytes.get(end) != Some(&b'$') {
            return false;
        }
        let tag = &self.bytes[start..=end];
        let body = end + 1;
        self.at = self.bytes[body..]
            .windows(tag.len())
            .position(|window| window == tag)
            .map_or(self.bytes.len(), |offset| body + offset + tag.len());
        true
    }

    /// SQLite reads a TCL-style suffix as part of a `$`/`@`/`:` parameter:
    /// `::name` pieces and one `(…)` that runs to the next `)` or white
    /// space, quotes included (`$1(') ; PRAGMA …` is one parameter, then
    /// code). The lexer must see the same split.
    fn skip_tcl_suffix(&mut self) {
        loop {
            match (self.peek(0), self.peek(1)) {
                (Some(b':'), Some(b':')) => {
                    self.at += 2;
                    self.read_word();
                }
                (Some(b'('), _) => {
                    self.at += 1;
                    while let Some(b) = self.peek(0) {
                        if b.is_ascii_whitespace() {
                            return;
                        }
                        self.at += 1;
                        if b == b')' {
                            return;
                        }
                    }
                    return;
                }
                _ => return,
            }
        }
    }

    fn read_number(&mut self) -> Option<usize> {
        let start = self.at;
        while self.peek(0).is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
        self.sql.get(start..self.at)?.parse().ok()
    }

    fn read_word(&mut self) -> &'a str {
        let start = self.at;
        while self.peek(0).is_some_and(|b| is_word_byte(b, self.backend)) {
            self.at += 1;
        }
        self.sql.get(start..self.at).unwrap_or_default()
    }

    /// A string literal whose prefix (`E`, `N`, `X`, `B`, `U&`, `_utf8mb4`)
    /// was just read as `word`, if the quote follows at once.
    fn prefixed_string(&mut self, start: usize, word: &str) -> Option<Token<'a>> {
        if self.peek(0) != Some(b'\'') {
            return None;
        }
        let lower = word.to_ascii_lowercase();
        let backslash = match self.backend {
            Backend::Postgres => match lower.as_str() {
                "e" => true,
                "n" | "x" | "b" => false,
                _ => return None,
            },
            Backend::MySql => match lower.as_str() {
                "n" => true,
                "x" | "b" => false,
                charset if charset.starts_with('_') => true,
                _ => return None,
            },
            Backend::Sqlite => match lower.as_str() {
                "x" => false,
                _ => return None,
            },
        };
        self.skip_quoted(b'\'', backslash);
        Some(Token::Text(
            self.sql.get(start..self.at).unwrap_or_default(),
        ))
    }
}

/// Bytes that continue an unquoted word. PostgreSQL and MySQL allow `$`
/// inside identifiers (`a$1` is one word); any non-ASCII byte is a letter.
fn is_word_byte(b: u8, backend: Backend) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80 || (b == b'$' && backend != Backend::Sqlite)
}

impl<'a> Iterator for Lexer<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        if !self.skip_insignificant() {
            return None;
        }
        let start = self.at;
        let b = self.peek(0)?;
        let token = match b {
            b'\'' => {
                // Standard strings on PostgreSQL and SQLite; MySQL escapes.
                self.skip_quoted(b'\'', self.backend == Backend::MySql);
                Token::Text(self.sql.get(start..self.at).unwrap_or_default())
            }
            b'"' if self.backend == Backend::MySql => {
                self.skip_quoted(b'"', true);
                Token::Text(self.sql.get(start..self.at).unwrap_or_default())
            }
            b'"' | b'`' => {
                self.skip_quoted(b, false);
                Token::QuotedIdentifier(self.sql.get(start..self.at).unwrap_or_default())
            }
            b'[' if self.backend == Backend::Sqlite => {
                while let Some(b) = self.peek(0) {
                    self.at += 1;
                    if b == b']' {
                        break;
                    }
                }
                Token::QuotedIdentifier(self.sql.get(start..self.at).unwrap_or_default())
            }
            b'$' if self.backend != Backend::MySql => {
                if self.peek(1).is_some_and(|b| b.is_ascii_digit()) {
                    self.at += 1;
                    let number = self.read_number();
                    if self.backend == Backend::Sqlite {
                        self.skip_tcl_suffix();
                    }
                    Token::Placeholder(number)
                } else if self.backend == Backend::Postgres && self.skip_dollar_quoted() {
                    Token::Text(self.sql.get(start..self.at).unwrap_or_default())
                } else if self.backend == Backend::Sqlite {
                    self.at += 1;
                    self.read_word();
                    self.skip_tcl_suffix();
                    Token::Variable
                } else {
                    self.at += 1;
                    Token::Symbol(b'$')
                }
            }
            b'?' if self.backend != Backend::Postgres => {
                self.at += 1;
                if self.backend == Backend::Sqlite
                    && self.peek(0).is_some_and(|b| b.is_ascii_digit())
                {
                    Token::Placeholder(self.read_number())
                } else {
                    Token::Placeholder(None)
                }
            }
            b'@' if self.backend == Backend::MySql && self.peek(1) == Some(b'@') => {
                self.at += 2;
                Token::SystemVariable(self.read_word())
            }
            // MySQL also names user variables `@'x'`, `@"x"`, `` @`x` `` and `@.x`.
            b'@' if self.peek(1).is_some_and(|b| {
                is_word_byte(b, self.backend)
                    || (self.backend == Backend::MySql && matches!(b, b'\'' | b'"' | b'`' | b'.'))
            }) =>
            {
                self.at += 1;
                self.read_word();
                if self.backend == Backend::Sqlite {
                    self.skip_tcl_suffix();
                }
                Token::Variable
            }
            // SQLite also takes `#name` as a parameter.
            b'#' if self.backend == Backend::Sqlite
                && self.peek(1).is_some_and(|b| is_word_byte(b, self.backend)) =>
            {
                self.at += 1;
                self.read_word();
                self.skip_tcl_suffix();
                Token::Variable
            }
            b':' if self.backend == Backend::Sqlite
                && self
                    .peek(1)
                    .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_') =>
            {
                self.at += 1;
                self.read_word();
                self.skip_tcl_suffix();
                Token::Variable
            }
            b'0'..=b'9' => {
                while self
                    .peek(0)
                    .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_')
                {
                    self.at += 1;
                }
                Token::Number
            }
            b';' => {
                self.at += 1;
                Token::Semicolon
            }
            b'(' => {
                self.at += 1;
                Token::Open
            }
            b')' => {
                self.at += 1;
                Token::Close
            }
            b'.' => {
                self.at += 1;
                Token::Dot
            }
            _ if is_word_byte(b, self.backend) && b != b'$' => {
                let word = self.read_word();
                if let Some(text) = self.prefixed_string(start, word) {
                    text
                } else if word.eq_ignore_ascii_case("u")
                    && self.backend == Backend::Postgres
                    && self.peek(0) == Some(b'&')
                    && matches!(self.peek(1), Some(b'\'' | b'"'))
                {
                    // U&'…' / U&"…": unicode escapes, quotes still doubled.
                    self.at += 1;
                    let quote = self.peek(0).unwrap_or(b'\'');
                    self.skip_quoted(quote, false);
                    if quote == b'\'' {
                        Token::Text(self.sql.get(start..self.at).unwrap_or_default())
                    } else {
                        Token::QuotedIdentifier(self.sql.get(start..self.at).unwrap_or_default())
                    }
                } else {
                    Token::Word(word)
                }
            }
            _ => {
                // One byte of punctuation; a multi-byte character is a word above.
                self.at += 1;
                Token::Symbol(b)
            }
        };
        Some(token)
    }
}

#[cfg(test)]
mod tests {
    use super::{Token::*, *};

    fn tokens(sql: &str, backend: Backend) -> Vec<Token<'_>> {
        Lexer::new(sql, backend).collect()
    }

    fn words(sql: &str, backend: Backend) -> Vec<String> {
        tokens(sql, backend)
            .into_iter()
            .filter_map(|token| match token {
                Word(word) => Some(word.to_ascii_lowercase()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn postgres_standard_strings_do_not_escape_with_backslash() {
        assert_eq!(
            tokens(r"select '\' as a, $1::text", Backend::Postgres),
            vec![
                Word("select"),
                Text(r"'\'"),
                Word("as"),
                Word("a"),
                Symbol(b','),
                Placeholder(Some(1)),
                Symbol(b':'),
                Symbol(b':'),
                Word("text"),
            ]
        );
        // E'' strings do: the function call after it is code.
        assert_eq!(
            words(r"select E'\'', f(1), 'x'", Backend::Postgres),
            ["select", "f"]
        );
    }

    #[test]
    fn postgres_nests_block_comments() {
        assert_eq!(
            tokens("select /* /* */ $1 */ 2", Backend::Postgres),
            vec![Word("select"), Number]
        );
        // MySQL ends the comment at the first `*/`.
        assert_eq!(
            words("select /* /* */ f(1) */", Backend::MySql),
            ["select", "f"]
        );
    }

    #[test]
    fn dollar_quotes_and_placeholders() {
        assert_eq!(
            tokens(
                "select $$ f() $$, $body$ g() $body$, $2, a$1",
                Backend::Postgres
            ),
            vec![
                Word("select"),
                Text("$$ f() $$"),
                Symbol(b','),
                Text("$body$ g() $body$"),
                Symbol(b','),
                Placeholder(Some(2)),
                Symbol(b','),
                Word("a$1"),
            ]
        );
    }

    #[test]
    fn mysql_runs_executable_comments_and_needs_space_after_dashes() {
        assert_eq!(
            words("select 1 /*!50000 , get_lock('x', 0) */", Backend::MySql),
            ["select", "get_lock"]
        );
        assert_eq!(
            words("select 1 /*M!100000 , get_lock('x', 0) */", Backend::MySql),
            ["select", "get_lock"]
        );
        assert_eq!(
            words("select 1 --get_lock('x',0)", Backend::MySql),
            ["select", "get_lock"]
        );
        assert_eq!(
            words("select 1 -- get_lock('x',0)", Backend::MySql),
            ["select"]
        );
        assert_eq!(
            words("select 1 # get_lock('x',0)", Backend::MySql),
            ["select"]
        );
        // On PostgreSQL `--` always starts a comment.
        assert_eq!(words("select 1 --f()", Backend::Postgres), ["select"]);
    }

    #[test]
    fn mysql_strings_escape_with_backslash_and_double_quotes_are_strings() {
        assert_eq!(
            words(r#"select 'a\' , f(1), ', "b\" g()""#, Backend::MySql),
            ["select"]
        );
        assert_eq!(
            tokens("select @x, @@session.time_zone, `t`", Backend::MySql),
            vec![
                Word("select"),
                Variable,
                Symbol(b','),
                SystemVariable("session"),
                Dot,
                Word("time_zone"),
                Symbol(b','),
                QuotedIdentifier("`t`"),
            ]
        );
    }

    #[test]
    fn mysql_quoted_user_variables_are_variables() {
        for sql in [
            "select @'x' := 5",
            "select @\"x\" := 5",
            "select @`x` := 5",
            "select @.x := 5",
        ] {
            assert!(tokens(sql, Backend::MySql).contains(&Variable), "{sql}");
        }
    }

    #[test]
    fn sqlite_placeholders_and_identifiers() {
        assert_eq!(
            tokens("select ?, ?2, :name, [a b], $x", Backend::Sqlite),
            vec![
                Word("select"),
                Placeholder(None),
                Symbol(b','),
                Placeholder(Some(2)),
                Symbol(b','),
                Variable,
                Symbol(b','),
                QuotedIdentifier("[a b]"),
                Symbol(b','),
                Variable,
            ]
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_always_ends(sql in "\\PC{0,80}") {
            for backend in [Backend::Postgres, Backend::MySql, Backend::Sqlite] {
                let count = Lexer::new(&sql, backend).take(1000).count();
                proptest::prop_assert!(count <= sql.len());
            }
        }
    }
}
