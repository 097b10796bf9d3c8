//! Why a call was refused.

use std::borrow::Cow;

/// Why a call was refused: a short reason for the caller and the call log.
/// Never holds the credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal(pub(super) Cow<'static, str>);

impl Refusal {
    pub(super) fn new(reason: &'static str) -> Self {
        Self(Cow::Borrowed(reason))
    }

    pub(super) fn owned(reason: String) -> Self {
        Self(Cow::Owned(reason))
    }

    /// The reason, for the call log.
    pub(crate) fn reason(&self) -> &str {
        &self.0
    }

    /// The answer the caller gets.
    pub(crate) fn to_status(&self) -> tonic::Status {
        tonic::Status::unauthenticated(self.0.clone())
    }
}
