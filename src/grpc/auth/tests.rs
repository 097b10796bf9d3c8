//! The check on its own: headers, open services, certificates from the
//! request's extensions, and reloading the tokens file.

use std::collections::BTreeMap;

use http::HeaderValue;

use super::*;
use crate::grpc::identity::{Proof, Role};

const QUERY: &str = "/sqlgate.v1.Query/Execute";

fn settings(tokens: &[(&str, &str, &str)]) -> AuthSettings {
    AuthSettings {
        tokens: tokens
            .iter()
            .map(|(name, role, token)| format!("{name}:{role}:{}", hash_token(token)))
            .collect(),
        ..AuthSettings::default()
    }
}

fn authenticator(settings: &AuthSettings) -> Authenticator {
    Authenticator::new(settings).expect("authentication builds")
}

fn headers(values: &[&[u8]]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for value in values {
        headers.append(
            AUTHORIZATION,
            HeaderValue::from_bytes(value).expect("a header value"),
        );
    }
    headers
}

/// The check of a call to `path` with these `authorization` values.
fn check(auth: &Authenticator, path: &str, values: &[&[u8]]) -> Result<Option<Identity>, String> {
    auth.check(path, &headers(values), &Extensions::new())
        .map_err(|refusal| refusal.reason().to_owned())
}

#[test]
fn off_lets_everyone_through_without_an_identity() {
    let auth = authenticator(&AuthSettings::default());
    assert_eq!(check(&auth, QUERY, &[]), Ok(None));
    assert_eq!(check(&auth, QUERY, &[b"Bearer anything"]), Ok(None));
}

#[test]
fn a_known_token_proves_its_caller() {
    let auth = authenticator(&settings(&[("billing", "writer", "s3cret-b")]));
    for value in [
        &b"Bearer s3cret-b"[..],
        b"bearer s3cret-b",
        b"BEARER   s3cret-b ",
    ] {
        let identity = check(&auth, QUERY, &[value])
            .expect("accepted")
            .expect("an identity");
        assert_eq!(
            (&*identity.name, identity.role, identity.proof),
            ("billing", Role::Writer, Proof::Token)
        );
    }
}

#[test]
fn missing_malformed_unknown_and_huge_credentials_are_refused() {
    let auth = authenticator(&settings(&[("billing", "writer", "s3cret-b")]));
    let huge = format!("Bearer {}", "a".repeat(MAX_CREDENTIAL_BYTES));
    let cases: [(&[&[u8]], &str); 9] = [
        (&[], "missing credentials"),
        (&[b"s3cret-b"], "malformed"),
        (&[b"Basic czNjcmV0LWI="], "malformed"),
        (&[b"Bearer "], "malformed"),
        (&[b"Bearer s3cret b"], "malformed"),
        (&[b"Bearer \xffs3cret"], "malformed"),
        (&[b"Bearer s3cret-c"], "unknown token"),
        (&[huge.as_bytes()], "too large"),
        (&[b"Bearer s3cret-b", b"Bearer s3cret-b"], "more than one"),
    ];
    for (values, reason) in cases {
        let refused = check(&auth, QUERY, values).expect_err("refused");
        assert!(refused.contains(reason), "{values:?}: {refused}");
        assert!(!refused.contains("s3cret"), "the token echoed: {refused}");
    }
}

#[test]
fn open_services_need_nothing_and_unknown_paths_need_credentials() {
    let mut settings = settings(&[("billing", "writer", "s3cret-b")]);
    let auth = authenticator(&settings);
    for path in [
        "/grpc.health.v1.Health/Check",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ] {
        assert_eq!(check(&auth, path, &[]), Ok(None), "{path}");
        assert_eq!(check(&auth, path, &[b"garbage"]), Ok(None), "{path}");
    }
    for path in [
        "/grpc.health.v1.Health.Extra/Check",
        "/grpc.health.v1.Healt/Check",
        "/no.Such/Method",
        "/grpc.health.v1.Health",
        "",
    ] {
        assert!(check(&auth, path, &[]).is_err(), "{path}");
    }
    settings.open_services = vec!["grpc.reflection.v1.ServerReflection".into()];
    let auth = authenticator(&settings);
    assert!(check(&auth, "/grpc.health.v1.Health/Check", &[]).is_err());
}

#[test]
fn a_mapped_client_certificate_proves_its_caller_unless_a_header_is_sent() {
    let mut settings = settings(&[("billing", "writer", "s3cret-b")]);
    settings.client_certificates.roles =
        BTreeMap::from([("reports.internal".to_owned(), Role::Reader)]);
    let auth = authenticator(&settings);
    let mut extensions = Extensions::new();
    extensions.insert(ClientCertificate {
        common_name: Some("reports".into()),
        sans: vec!["reports.internal".into()],
    });
    let identity = auth
        .check(QUERY, &HeaderMap::new(), &extensions)
        .expect("accepted")
        .expect("an identity");
    assert_eq!(
        (&*identity.name, identity.role, identity.proof),
        ("reports.internal", Role::Reader, Proof::ClientCertificate)
    );
    // A header, if sent, decides: a good one names its caller, a bad one is refused.
    let identity = auth
        .check(QUERY, &headers(&[b"Bearer s3cret-b"]), &extensions)
        .expect("accepted")
        .expect("an identity");
    assert_eq!(identity.proof, Proof::Token);
    assert!(
        auth.check(QUERY, &headers(&[b"Bearer nope"]), &extensions)
            .is_err()
    );
    // An unmapped certificate, with no default role, is refused.
    let mut unmapped = Extensions::new();
    unmapped.insert(ClientCertificate {
        common_name: Some("stranger".into()),
        sans: vec![],
    });
    let refusal = auth
        .check(QUERY, &HeaderMap::new(), &unmapped)
        .expect_err("unmapped");
    assert_eq!(refusal.reason(), "client certificate not mapped to a role");
    // With a default role it passes under its common name.
    settings.client_certificates.default_role = Some(Role::Reader);
    let identity = authenticator(&settings)
        .check(QUERY, &HeaderMap::new(), &unmapped)
        .expect("default role")
        .expect("an identity");
    assert_eq!((&*identity.name, identity.role), ("stranger", Role::Reader));
}

#[test]
fn certificates_count_only_when_mapped() {
    let auth = authenticator(&settings(&[("billing", "writer", "s3cret-b")]));
    let mut extensions = Extensions::new();
    extensions.insert(ClientCertificate {
        common_name: Some("billing".into()),
        sans: vec![],
    });
    let refusal = auth
        .check(QUERY, &HeaderMap::new(), &extensions)
        .expect_err("certificates are not configured");
    assert!(refusal.reason().contains("missing credentials"));
}

#[test]
fn the_tokens_file_is_reloaded_when_it_changes_and_kept_when_broken() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tokens.toml");
    let write = |name: &str, token: &str| {
        std::fs::write(
            &path,
            format!(
                "[[token]]\nname = \"{name}\"\nrole = \"reader\"\nsha256 = \"{}\"\n",
                hash_token(token)
            ),
        )
        .expect("write");
    };
    write("first", "token-1");
    let auth = authenticator(&AuthSettings {
        tokens_file: Some(path.clone()),
        ..AuthSettings::default()
    });
    let shared = auth.0.clone().expect("on");
    let name = |value: &[u8]| check(&auth, QUERY, &[value]).map(|id| id.map(|id| id.name));
    assert_eq!(name(b"Bearer token-1"), Ok(Some("first".into())));

    write("second", "token-2");
    shared.reload();
    assert_eq!(name(b"Bearer token-2"), Ok(Some("second".into())));
    assert!(name(b"Bearer token-1").is_err(), "the old token is gone");

    std::fs::write(&path, "[[token]]\nname = \"broken\"\n").expect("write");
    shared.reload();
    assert_eq!(name(b"Bearer token-2"), Ok(Some("second".into())), "kept");
    assert!(
        shared.complaints.lock().expect("complaints")[0]
            .as_deref()
            .is_some_and(|why| why.contains("tokens.toml")),
    );
    std::fs::remove_file(&path).expect("remove");
    shared.reload();
    assert_eq!(name(b"Bearer token-2"), Ok(Some("second".into())), "kept");
}

#[test]
fn start_up_names_the_setting_of_a_bad_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = AuthSettings {
        tokens_file: Some(dir.path().join("absent.toml")),
        ..AuthSettings::default()
    };
    let err = check_files(&missing).expect_err("missing");
    assert!(err.starts_with("auth.tokens_file: cannot read"), "{err}");
    let jwks = dir.path().join("keys.json");
    std::fs::write(&jwks, "{}").expect("write");
    let mut bad = AuthSettings::default();
    bad.jwt.jwks_file = Some(jwks);
    let err = check_files(&bad).expect_err("not a set");
    assert!(err.starts_with("auth.jwt.jwks_file: "), "{err}");
    check_files(&AuthSettings::default()).expect("nothing to read");
}
