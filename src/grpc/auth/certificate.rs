//! Client certificates, verified by the TLS transport against its client CA,
//! mapped to a role by one of their names: the subject common name first,
//! then the DNS and URI subject alternative names in the certificate's order.

use std::{collections::BTreeMap, sync::Arc};

use super::refusal::Refusal;
use crate::{
    config::ClientCertificateSettings,
    grpc::identity::{ClientCertificate, Identity, Proof, Role},
};

/// How certificates map to roles.
#[derive(Debug, Clone, Default)]
pub(super) struct Certificates {
    roles: BTreeMap<String, Role>,
    default_role: Option<Role>,
}

impl Certificates {
    pub(super) fn new(settings: &ClientCertificateSettings) -> Self {
        Self {
            roles: settings.roles.clone(),
            default_role: settings.default_role,
        }
    }

    /// Whether certificates identify callers at all.
    pub(super) fn enabled(&self) -> bool {
        !self.roles.is_empty() || self.default_role.is_some()
    }

    /// The identity `certificate` proves: its first mapped name with that
    /// name's role; else its first name with the default role; else none.
    pub(super) fn identify(&self, certificate: &ClientCertificate) -> Result<Identity, Refusal> {
        let mut names = certificate
            .common_name
            .iter()
            .chain(&certificate.sans)
            .filter(|name| !name.is_empty() && !name.chars().any(char::is_control));
        let identity = |name: &str, role| Identity {
            name: Arc::from(name),
            role,
            proof: Proof::ClientCertificate,
        };
        if let Some((name, role)) = names
            .clone()
            .find_map(|name| self.roles.get(name).map(|role| (name, *role)))
        {
            return Ok(identity(name, role));
        }
        match (self.default_role, names.next()) {
            (Some(role), Some(name)) => Ok(identity(name, role)),
            (Some(_), None) => Err(Refusal::new("client certificate has no usable name")),
            (None, _) => Err(Refusal::new("client certificate not mapped to a role")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(common_name: Option<&str>, sans: &[&str]) -> ClientCertificate {
        ClientCertificate {
            common_name: common_name.map(str::to_owned),
            sans: sans.iter().map(|san| (*san).to_owned()).collect(),
        }
    }

    fn certificates(default_role: Option<Role>) -> Certificates {
        Certificates::new(&ClientCertificateSettings {
            roles: [
                ("billing".to_owned(), Role::Writer),
                ("spiffe://prod/reports".to_owned(), Role::Reader),
            ]
            .into(),
            default_role,
        })
    }

    #[test]
    fn a_mapped_name_gives_its_role_common_name_first() {
        let certificates = certificates(None);
        let by_cn = certificates
            .identify(&certificate(Some("billing"), &["spiffe://prod/reports"]))
            .expect("mapped");
        assert_eq!(
            (&*by_cn.name, by_cn.role, by_cn.proof),
            ("billing", Role::Writer, Proof::ClientCertificate)
        );
        let by_san = certificates
            .identify(&certificate(
                Some("host-1"),
                &["h1.internal", "spiffe://prod/reports"],
            ))
            .expect("mapped by SAN");
        assert_eq!(
            (&*by_san.name, by_san.role),
            ("spiffe://prod/reports", Role::Reader)
        );
    }

    #[test]
    fn an_unmapped_certificate_gets_the_default_role_or_is_refused() {
        let unmapped = certificate(None, &["h1.internal"]);
        let refusal = certificates(None).identify(&unmapped).expect_err("refused");
        assert_eq!(refusal.0, "client certificate not mapped to a role");
        let identity = certificates(Some(Role::Reader))
            .identify(&unmapped)
            .expect("default role");
        assert_eq!(
            (&*identity.name, identity.role),
            ("h1.internal", Role::Reader)
        );
        let nameless = certificate(None, &[]);
        assert!(
            certificates(Some(Role::Reader))
                .identify(&nameless)
                .is_err()
        );
    }
}
