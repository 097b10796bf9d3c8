//! A session's labels: free-form key/value pairs a client attaches at
//! `begin` so that operators can tell sessions apart in ListSessions. They
//! are kept for the session's whole life and shown to operators, so their
//! number and size are capped here, where a session's labels are made.

use std::collections::BTreeMap;

use crate::error::Error;

/// Most labels a session may carry.
const MAX_LABELS: usize = 32;
/// The longest key, and the longest value, in bytes.
const MAX_LABEL_BYTES: usize = 256;

/// Labels within the caps; the only way to get one is [`Labels::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labels(BTreeMap<String, String>);

impl Labels {
    /// Checks the client's labels against the caps: at most 32 of them, no
    /// key or value longer than 256 bytes. Refused as `begin.labels`, the
    /// only field labels arrive in.
    pub fn new(labels: impl IntoIterator<Item = (String, String)>) -> Result<Self, Error> {
        let labels: BTreeMap<String, String> = labels.into_iter().collect();
        if labels.len() > MAX_LABELS
            || labels
                .iter()
                .any(|(k, v)| k.len() > MAX_LABEL_BYTES || v.len() > MAX_LABEL_BYTES)
        {
            return Err(Error::invalid_request(
                "begin.labels",
                format!("at most {MAX_LABELS} labels of at most {MAX_LABEL_BYTES} bytes each"),
            ));
        }
        Ok(Self(labels))
    }

    /// The checked labels, as the session and its registry entry keep them.
    pub fn into_map(self) -> BTreeMap<String, String> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(count: usize, key_len: usize, value_len: usize) -> Vec<(String, String)> {
        (0..count)
            .map(|i| {
                let key = format!("{i:0>key_len$}");
                (key, "v".repeat(value_len))
            })
            .collect()
    }

    #[test]
    fn labels_within_the_caps_are_kept() {
        let kept = Labels::new(labels(MAX_LABELS, MAX_LABEL_BYTES, MAX_LABEL_BYTES))
            .expect("at the caps")
            .into_map();
        assert_eq!(kept.len(), MAX_LABELS);
        assert!(Labels::new(Vec::new()).expect("none").into_map().is_empty());
    }

    #[test]
    fn too_many_or_too_long_labels_are_refused() {
        for (bad, why) in [
            (labels(MAX_LABELS + 1, 4, 4), "too many"),
            (labels(1, MAX_LABEL_BYTES + 1, 4), "key too long"),
            (labels(1, 4, MAX_LABEL_BYTES + 1), "value too long"),
        ] {
            let err = Labels::new(bad).expect_err(why);
            assert!(
                matches!(err, Error::InvalidRequest { ref field, ref message }
                    if field == "begin.labels"
                        && message == "at most 32 labels of at most 256 bytes each"),
                "{why}: {err:?}"
            );
        }
    }
}
