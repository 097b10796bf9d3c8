//! Bearer tokens, known only by their SHA-256: a presented token is hashed
//! and compared with every configured hash in constant time, so neither
//! the configuration nor the time an answer takes gives a token away.

use std::{path::Path, sync::Arc};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{
    config::TokenEntry,
    grpc::identity::{Identity, Proof, Role},
};

/// The hex SHA-256 of `token`: what the configuration holds for it.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// One known token.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Known {
    name: Arc<str>,
    role: Role,
    hash: [u8; 32],
}

/// The configured tokens (from settings and the tokens file).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Tokens {
    known: Vec<Known>,
}

/// The tokens file: `[[token]]` tables.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    token: Vec<TokenEntry>,
}

impl Tokens {
    /// The tokens of `entries` (`auth.tokens`, already checked) and of the
    /// file's `text` (read from `path`); an error names the setting and
    /// says which entry is wrong.
    pub(super) fn build(
        entries: &[TokenEntry],
        file: Option<(&Path, &str)>,
    ) -> Result<Self, String> {
        let mut tokens = Self::default();
        for (index, entry) in entries.iter().enumerate() {
            tokens
                .add(entry)
                .map_err(|why| format!("auth.tokens: entry {}: {why}", index + 1))?;
        }
        if let Some((path, text)) = file {
            let at = |why: String| format!("auth.tokens_file: {}: {why}", path.display());
            let parsed: TokensFile =
                toml::from_str(text).map_err(|err| at(one_line(&err.to_string())))?;
            for (index, entry) in parsed.token.iter().enumerate() {
                entry
                    .check()
                    .and_then(|()| tokens.add(entry))
                    .map_err(|why| at(format!("token {}: {why}", index + 1)))?;
            }
        }
        Ok(tokens)
    }

    fn add(&mut self, entry: &TokenEntry) -> Result<(), String> {
        let mut hash = [0; 32];
        hex::decode_to_slice(&entry.sha256, &mut hash)
            .map_err(|_| format!("the hash of {} is not 64 hex digits", entry.name))?;
        if self.known.iter().any(|known| known.hash == hash) {
            return Err(format!(
                "the hash of {} is configured twice (one token, two callers?)",
                entry.name
            ));
        }
        self.known.push(Known {
            name: entry.name.as_str().into(),
            role: entry.role,
            hash,
        });
        Ok(())
    }

    /// How many tokens are known.
    pub(super) fn len(&self) -> usize {
        self.known.len()
    }

    /// The identity `token` proves, if it is a known one. Every known hash
    /// is compared, in constant time, whatever matches.
    pub(super) fn identify(&self, token: &str) -> Option<Identity> {
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for known in &self.known {
            if bool::from(known.hash.ct_eq(&presented)) {
                found = Some(known);
            }
        }
        found.map(|known| Identity {
            name: known.name.clone(),
            role: known.role,
            proof: Proof::Token,
        })
    }
}

/// A parser's message on one line.
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, role: Role, token: &str) -> TokenEntry {
        TokenEntry {
            name: name.to_owned(),
            role,
            sha256: hash_token(token),
        }
    }

    #[test]
    fn the_hash_is_hex_sha256() {
        // echo -n test | sha256sum
        assert_eq!(
            hash_token("test"),
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
    }

    #[test]
    fn a_known_token_names_its_caller_and_role() {
        let file = format!(
            "# comment\n[[token]]\nname = \"reports\"\nrole = \"reader\"\nsha256 = \"{}\"\n",
            hash_token("r-secret").to_uppercase()
        );
        let tokens = Tokens::build(
            &[entry("billing", Role::Writer, "b-secret")],
            Some((Path::new("tokens.toml"), &file)),
        )
        .expect("builds");
        assert_eq!(tokens.len(), 2);
        let billing = tokens.identify("b-secret").expect("billing");
        assert_eq!(
            (&*billing.name, billing.role, billing.proof),
            ("billing", Role::Writer, Proof::Token)
        );
        assert_eq!(
            tokens.identify("r-secret").expect("reports").role,
            Role::Reader
        );
        assert_eq!(tokens.identify("b-secre"), None);
        assert_eq!(tokens.identify(""), None);
    }

    #[test]
    fn a_bad_file_says_where() {
        let path = Path::new("tokens.toml");
        let cases = [
            (
                "[[token]]\nname = \"a\"\nrole = \"root\"\nsha256 = \"00\"\n",
                "root",
            ),
            (
                "[[token]]\nname = \"a\"\nrole = \"reader\"\nsha256 = \"00\"\n",
                "token 1: the hash of a must be 64 hex digits",
            ),
            ("[[token]]\nname = \"a\"\nrole = \"reader\"\n", "sha256"),
            ("[[tokens]]\n", "tokens"),
            ("not toml", "tokens.toml"),
        ];
        for (text, expected) in cases {
            let err = Tokens::build(&[], Some((path, text))).expect_err(text);
            assert!(err.contains(expected), "{text:?}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
        let twice = format!(
            "[[token]]\nname = \"b\"\nrole = \"reader\"\nsha256 = \"{}\"\n",
            hash_token("same")
        );
        let err = Tokens::build(&[entry("a", Role::Admin, "same")], Some((path, &twice)))
            .expect_err("a hash twice");
        assert!(err.contains("twice"), "{err}");
    }
}
