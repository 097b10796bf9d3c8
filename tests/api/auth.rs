//! Caller authentication, over a real socket: with tokens configured, every
//! RPC of every service (Query, Sessions, Admin) wants a good credential and
//! answers UNAUTHENTICATED without one, while health and reflection stay
//! open; JWTs are verified against a JWKS file (signature, issuer,
//! audience, expiry, not-before, skew, role); the call log names the
//! token's caller and never the token; `sqlgate hash-token` prints the hash
//! an operator configures.

use std::{path::Path, process::Stdio, time::Duration};

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header, jwk::Jwk};
use serde_json::json;
use sqlgate::{
    config::Settings,
    grpc::pb::{
        self, BeginSession, SessionRequest, admin_client::AdminClient, query_client::QueryClient,
        session_response::Response as Answer, sessions_client::SessionsClient,
    },
};
use tokio::{io::AsyncWriteExt, sync::mpsc};
use tokio_stream::{StreamExt, wrappers::ReceiverStream};
use tonic::{Code, Status, metadata::MetadataValue, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::{
    binary::Sqlgate,
    helpers::{Backend, TestApp, WAIT, spawn_app_with, within},
};

/// The admin's token and the writer's, as their holders send them.
const ADMIN_TOKEN: &str = "sg_admin_7a1f0c9e4b2d";
const WRITER_TOKEN: &str = "sg_billing_55e3d2a8c1";

/// A sqlgate on SQLite whose settings `adjust` changes.
async fn app(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_with(Backend::Sqlite, adjust)
        .await
        .expect("SQLite is always there")
}

/// `name:role:sha256` for `token`.
fn entry(name: &str, role: &str, token: &str) -> String {
    format!("{name}:{role}:{}", sqlgate::grpc::auth::hash_token(token))
}

/// A sqlgate that knows the admin's and the writer's tokens.
async fn app_with_tokens(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    app(|settings| {
        settings.auth.tokens = vec![
            entry("ops", "admin", ADMIN_TOKEN),
            entry("billing", "writer", WRITER_TOKEN),
        ];
        adjust(settings);
    })
    .await
}

/// `message` with `authorization` set to `value`, if any.
fn with_auth<T>(message: T, value: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(value) = value {
        request.metadata_mut().insert(
            "authorization",
            MetadataValue::try_from(value).expect("a header value"),
        );
    }
    request
}

/// A session begun with `Bearer {token}`: the sender that keeps it open,
/// once its begin is answered.
async fn session_as(app: &TestApp, token: &str) -> mpsc::Sender<SessionRequest> {
    let (requests, inbox) = mpsc::channel(4);
    let mut answers = SessionsClient::new(app.channel.clone())
        .attach(with_auth(
            ReceiverStream::new(inbox),
            Some(&format!("Bearer {token}")),
        ))
        .await
        .expect("attach")
        .into_inner();
    requests
        .send(SessionRequest::begin(BeginSession::default()))
        .await
        .expect("send begin");
    within(WAIT, "began", answers.message())
        .await
        .expect("began")
        .expect("an answer");
    requests
}

/// The open sessions, as `Bearer {token}` lists them.
async fn sessions_listed_by(app: &TestApp, token: &str) -> Vec<pb::SessionInfo> {
    AdminClient::new(app.channel.clone())
        .list_sessions(with_auth(
            pb::ListSessionsRequest {},
            Some(&format!("Bearer {token}")),
        ))
        .await
        .expect("list")
        .into_inner()
        .sessions
}

/// The RPCs the matrix calls: one of each service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rpc {
    QueryExecute,
    SessionsAttach,
    AdminGetPoolStats,
    HealthCheck,
    Reflection,
}

const RPCS: [Rpc; 5] = [
    Rpc::QueryExecute,
    Rpc::SessionsAttach,
    Rpc::AdminGetPoolStats,
    Rpc::HealthCheck,
    Rpc::Reflection,
];

impl Rpc {
    fn is_open(self) -> bool {
        matches!(self, Rpc::HealthCheck | Rpc::Reflection)
    }

    /// Calls this RPC over `channel` with `authorization`; `Ok` when it
    /// did what it is for (a row, a session begun, figures, SERVING, a
    /// service list).
    async fn call(self, channel: &Channel, authorization: Option<&str>) -> Result<(), Status> {
        match self {
            Rpc::QueryExecute => {
                let response = QueryClient::new(channel.clone())
                    .execute(with_auth(
                        pb::ExecuteRequest {
                            sql: "SELECT 1 AS one".into(),
                            ..Default::default()
                        },
                        authorization,
                    ))
                    .await?
                    .into_inner();
                assert_eq!(response.rows.len(), 1);
            }
            Rpc::SessionsAttach => {
                let (requests, inbox) = mpsc::channel(4);
                let mut answers = SessionsClient::new(channel.clone())
                    .attach(with_auth(ReceiverStream::new(inbox), authorization))
                    .await?
                    .into_inner();
                // An answer with no gRPC status in its headers (HTTP 431)
                // shows as an error on the stream, not on `attach`, and
                // may have dropped the requests already.
                let _ = requests
                    .send(SessionRequest::begin(BeginSession::default()))
                    .await;
                let answer = within(WAIT, "began", answers.message())
                    .await?
                    .expect("an answer");
                assert!(
                    matches!(answer.response, Some(Answer::Began(_))),
                    "{answer:?}"
                );
            }
            Rpc::AdminGetPoolStats => {
                let stats = AdminClient::new(channel.clone())
                    .get_pool_stats(with_auth(pb::GetPoolStatsRequest {}, authorization))
                    .await?
                    .into_inner();
                assert!(stats.max_connections > 0);
            }
            Rpc::HealthCheck => {
                let response = HealthClient::new(channel.clone())
                    .check(with_auth(HealthCheckRequest::default(), authorization))
                    .await?
                    .into_inner();
                assert_eq!(response.status, 1, "SERVING");
            }
            Rpc::Reflection => {
                use tonic_reflection::pb::v1::{
                    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
                    server_reflection_request::MessageRequest,
                };
                let request = ServerReflectionRequest {
                    host: String::new(),
                    message_request: Some(MessageRequest::ListServices(String::new())),
                };
                let mut responses = ServerReflectionClient::new(channel.clone())
                    .server_reflection_info(with_auth(tokio_stream::iter([request]), authorization))
                    .await?
                    .into_inner();
                within(WAIT, "a reflection answer", responses.next())
                    .await
                    .expect("an answer")?;
            }
        }
        Ok(())
    }
}

/// Asserts that `result` is a refusal: UNAUTHENTICATED, its message
/// containing `reason`, and no part of `credential` echoed.
fn assert_refused(result: Result<(), Status>, reason: &str, credential: &str, what: &str) {
    let status = result.expect_err(what);
    assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
    assert!(
        status.message().contains(reason),
        "{what}: {:?} lacks {reason:?}",
        status.message()
    );
    let token = credential.rsplit(' ').next().unwrap_or_default();
    if token.len() >= 8 {
        assert!(
            !status.message().contains(token),
            "{what}: the credential echoed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_wants_a_good_token_and_health_and_reflection_stay_open() {
    let app = app_with_tokens(|_| {}).await;
    let admin = format!("Bearer {ADMIN_TOKEN}");
    // 12 KiB reaches the layer (under the transport's 16 KiB header list
    // limit), which refuses it as too large without reading it.
    let large = format!("Bearer {}", "x".repeat(12 * 1024));
    let bad: [(&str, Option<&str>, &str); 6] = [
        ("no header", None, "missing credentials"),
        ("a token without its scheme", Some(ADMIN_TOKEN), "malformed"),
        (
            "another scheme",
            Some("Basic b3BzOnBhc3N3b3Jk"),
            "malformed",
        ),
        ("an empty bearer", Some("Bearer"), "malformed"),
        (
            "an unknown token",
            Some("Bearer sg_admin_7a1f0c9e4b2e"),
            "unknown token",
        ),
        ("a large header", Some(&large), "too large"),
    ];
    for rpc in RPCS {
        for (what, value, reason) in bad {
            let result = rpc.call(&app.channel, value).await;
            let what = format!("{rpc:?} with {what}");
            if rpc.is_open() {
                result.unwrap_or_else(|status| panic!("{what}: {status:?}"));
            } else {
                assert_refused(result, reason, value.unwrap_or_default(), &what);
            }
        }
        rpc.call(&app.channel, Some(&admin))
            .await
            .unwrap_or_else(|status| panic!("{rpc:?} with the admin's token: {status:?}"));
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_headers_are_refused_by_the_transport_and_sqlgate_serves_on() {
    let app = app_with_tokens(|_| {}).await;
    let admin = format!("Bearer {ADMIN_TOKEN}");
    // Over HTTP/2's header list limit (16 KiB), the transport answers HTTP
    // 431 before any layer sees the call (gRPC clients read UNKNOWN); the
    // connection serves on.
    let over = format!("Bearer {}", "x".repeat(32 * 1024));
    for rpc in RPCS {
        let status = rpc
            .call(&app.channel, Some(&over))
            .await
            .expect_err("a 32 KiB header");
        assert_eq!(status.code(), Code::Unknown, "{rpc:?}: {status:?}");
        assert!(status.message().contains("431"), "{rpc:?}: {status:?}");
        rpc.call(&app.channel, Some(&admin))
            .await
            .unwrap_or_else(|status| panic!("{rpc:?} after a 431: {status:?}"));
    }
    // At 64 KiB (four times the limit) it closes the connection as abuse
    // (GOAWAY, ENHANCE_YOUR_CALM: RESOURCE_EXHAUSTED); new connections
    // are served.
    let huge = format!("Bearer {}", "x".repeat(64 * 1024));
    for rpc in RPCS {
        let channel = crate::binary::channel(app.address).await;
        let status = rpc
            .call(&channel, Some(&huge))
            .await
            .expect_err("a 64 KiB header");
        assert_eq!(
            status.code(),
            Code::ResourceExhausted,
            "{rpc:?}: {status:?}"
        );
        let channel = crate::binary::channel(app.address).await;
        rpc.call(&channel, Some(&admin))
            .await
            .unwrap_or_else(|status| panic!("{rpc:?} after a GOAWAY: {status:?}"));
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_can_be_closed_too() {
    let app = app_with_tokens(|settings| settings.auth.open_services.clear()).await;
    for rpc in [Rpc::HealthCheck, Rpc::Reflection] {
        assert_refused(
            rpc.call(&app.channel, None).await,
            "missing credentials",
            "",
            &format!("{rpc:?}"),
        );
        rpc.call(&app.channel, Some(&format!("Bearer {WRITER_TOKEN}")))
            .await
            .unwrap_or_else(|status| panic!("{rpc:?} with a token: {status:?}"));
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_list_names_the_token_s_caller() {
    let app = app_with_tokens(|_| {}).await;
    let requests = session_as(&app, WRITER_TOKEN).await;
    let sessions = sessions_listed_by(&app, ADMIN_TOKEN).await;
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].caller, "billing");
    assert_eq!(sessions[0].role, "writer");
    drop(requests);
    app.stop().await;
}

/// `sqlgate hash-token` with `input` on stdin: its exit success and stdout.
async fn hash_token_command(input: &str) -> (bool, String) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sqlgate"))
        .arg("hash-token")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sqlgate hash-token");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input.as_bytes()).await.expect("write");
    drop(stdin);
    let output = within(WAIT, "hash-token", child.wait_with_output())
        .await
        .expect("output");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).trim().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_call_log_names_the_token_s_caller_and_never_the_token() {
    // The operator's way: the hash comes from `sqlgate hash-token`.
    let (ok, hash) = hash_token_command(&format!("{WRITER_TOKEN}\n")).await;
    assert!(ok);
    assert_eq!(hash, sqlgate::grpc::auth::hash_token(WRITER_TOKEN));
    assert_eq!(hash.len(), 64);
    let (ok, _) = hash_token_command("").await;
    assert!(!ok, "an empty token is refused");

    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("auth.db").display());
    let tokens = format!("billing:writer:{hash}");
    let (sqlgate, address) = Sqlgate::serving(
        &url,
        &[
            ("SQLGATE_LOG_FILTER", "info"),
            ("SQLGATE_AUTH__TOKENS", &tokens),
        ],
    )
    .await;
    let channel = crate::binary::channel(address).await;
    let execute = |sql: &'static str, authorization: Option<String>| {
        let channel = channel.clone();
        async move {
            QueryClient::new(channel)
                .execute(with_auth(
                    pb::ExecuteRequest {
                        sql: sql.into(),
                        ..Default::default()
                    },
                    authorization.as_deref(),
                ))
                .await
        }
    };
    execute(
        "SELECT 1 AS accepted",
        Some(format!("Bearer {WRITER_TOKEN}")),
    )
    .await
    .expect("the writer's call");
    let refused = execute(
        "SELECT 1 AS refused",
        Some("Bearer sg_billing_wrong".into()),
    )
    .await
    .expect_err("an unknown token");
    assert_eq!(refused.code(), Code::Unauthenticated);
    let refused = execute("SELECT 1 AS bare", None)
        .await
        .expect_err("no token");
    assert_eq!(refused.code(), Code::Unauthenticated);

    let accepted = sqlgate::query::fingerprint::fingerprint("SELECT 1 AS accepted");
    let lines = wait_for_call_lines(&sqlgate, 3).await;
    let line = lines
        .iter()
        .find(|line| line.contains(&accepted))
        .unwrap_or_else(|| panic!("no line of the accepted call: {lines:?}"));
    for part in ["call done", "peer=billing", "role=\"writer\"", "code=Ok"] {
        assert!(line.contains(part), "{part:?} missing from {line}");
    }
    let refusals: Vec<_> = lines
        .iter()
        .filter(|line| line.contains("code=Unauthenticated"))
        .collect();
    assert_eq!(refusals.len(), 2, "{lines:?}");
    for line in &refusals {
        for part in [
            "INFO",
            "call failed",
            "method=\"Execute\"",
            "peer=127.0.0.1:",
            "fingerprint=\"-\"",
        ] {
            assert!(line.contains(part), "{part:?} missing from {line}");
        }
    }
    assert!(
        refusals
            .iter()
            .any(|line| line.contains("refused=\"unknown token\""))
    );
    assert!(
        refusals
            .iter()
            .any(|line| line.contains("refused=\"missing credentials"))
    );
    let (status, output) = sqlgate.stop().await;
    assert!(status.success(), "{output:?}");
    for secret in [WRITER_TOKEN, "sg_billing_wrong"] {
        crate::secrets::assert_absent(secret, &output, "a token");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_credentials_file_stops_start_up_naming_the_setting() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(
        &tokens,
        "[[token]]\nname = \"billing\"\nrole = \"writer\"\nsha256 = \"not-a-hash\"\n",
    )
    .expect("write");
    let tokens = tokens.display().to_string();
    let sqlgate = Sqlgate::start(
        &["--listen", "127.0.0.1:0"],
        &[("SQLGATE_AUTH__TOKENS_FILE", tokens.as_str())],
    );
    let (status, output) = sqlgate.exited(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(2), "{output:?}");
    let line = output
        .iter()
        .find(|line| line.contains("invalid setting"))
        .unwrap_or_else(|| panic!("no line naming the setting: {output:?}"));
    for part in ["`auth.tokens_file`", "token 1", "64 hex digits"] {
        assert!(line.contains(part), "{part:?} missing from {line}");
    }
}

/// Waits (up to 10 s) until the log holds `count` call lines; all of them.
async fn wait_for_call_lines(sqlgate: &Sqlgate, count: usize) -> Vec<String> {
    let started = std::time::Instant::now();
    loop {
        let lines: Vec<_> = sqlgate
            .output()
            .into_iter()
            .filter(|line| line.contains("call done") || line.contains("call failed"))
            .collect();
        if lines.len() >= count {
            return lines;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{count} call lines not within 10 s: {lines:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

mod jwt {
    //! JWTs against a JWKS file of an RSA and an EC key.

    use super::*;

    const ISSUER: &str = "https://idp.example.test";
    const AUDIENCE: &str = "sqlgate";

    /// A sqlgate that takes JWTs of the test keys (60 s of clock skew),
    /// with the directory holding its JWKS file.
    async fn app_with_jwks() -> (TestApp, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("jwks.json");
        write_jwks(&path, true, true);
        let app = app(|settings| {
            settings.auth.jwt.jwks_file = Some(path);
            settings.auth.jwt.issuer = vec![ISSUER.into()];
            settings.auth.jwt.audience = vec![AUDIENCE.into(), "reporting".into()];
            settings.auth.jwt.clock_skew = Duration::from_secs(60);
        })
        .await;
        (app, dir)
    }

    /// The JWKS an identity provider would publish for the test keys (the
    /// RSA key, the EC key or both).
    fn write_jwks(path: &Path, with_rsa: bool, with_ec: bool) {
        let public = |pem: &str, algorithm, kid: &str| {
            let key = if algorithm == Algorithm::RS256 {
                EncodingKey::from_rsa_pem(pem.as_bytes())
            } else {
                EncodingKey::from_ec_pem(pem.as_bytes())
            }
            .expect("a test key");
            let mut jwk = Jwk::from_encoding_key(&key, algorithm).expect("a JWK");
            jwk.common.key_id = Some(kid.to_owned());
            jwk
        };
        let mut keys = Vec::new();
        if with_rsa {
            keys.push(public(RSA_KEY, Algorithm::RS256, "rsa-1"));
        }
        if with_ec {
            keys.push(public(EC_KEY, Algorithm::ES256, "ec-1"));
        }
        let set = json!({ "keys": keys });
        std::fs::write(path, set.to_string()).expect("write the JWKS");
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    /// Claims that pass: issuer, audience, a subject, a role, valid now.
    fn claims(subject: &str, role: &str) -> serde_json::Value {
        json!({
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": subject,
            "role": role,
            "iat": now(),
            "nbf": now() - 5,
            "exp": now() + 600,
        })
    }

    /// `claims` with `key` (a JSON object) set to `value`.
    fn with(
        mut claims: serde_json::Value,
        key: &str,
        value: serde_json::Value,
    ) -> serde_json::Value {
        claims[key] = value;
        claims
    }

    /// A JWT of `claims` signed with `pem` under `algorithm`, naming `kid`.
    fn sign(
        algorithm: Algorithm,
        pem: &str,
        kid: Option<&str>,
        claims: &serde_json::Value,
    ) -> String {
        let mut header = Header::new(algorithm);
        header.kid = kid.map(str::to_owned);
        let key = match algorithm {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(pem.as_bytes()),
            Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()),
            _ => Ok(EncodingKey::from_secret(pem.as_bytes())),
        }
        .expect("a signing key");
        jsonwebtoken::encode(&header, claims, &key).expect("a JWT")
    }

    fn rsa(claims: &serde_json::Value) -> String {
        sign(Algorithm::RS256, RSA_KEY, Some("rsa-1"), claims)
    }

    /// An unsigned token (`alg: none`) of `claims`.
    fn unsigned(claims: &serde_json::Value) -> String {
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        format!(
            "{}.{}.",
            b64(br#"{"alg":"none","typ":"JWT","kid":"rsa-1"}"#),
            b64(claims.to_string().as_bytes())
        )
    }

    async fn execute(app: &TestApp, token: &str) -> Result<(), Status> {
        Rpc::QueryExecute
            .call(&app.channel, Some(&format!("Bearer {token}")))
            .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_valid_token_of_either_key_passes_within_the_skew() {
        let (app, _dir) = app_with_jwks().await;
        let good = claims("svc-billing", "writer");
        execute(&app, &rsa(&good)).await.expect("RS256");
        execute(&app, &sign(Algorithm::ES256, EC_KEY, Some("ec-1"), &good))
            .await
            .expect("ES256");
        execute(&app, &sign(Algorithm::ES256, EC_KEY, None, &good))
            .await
            .expect("no kid: the key that fits is found");
        execute(
            &app,
            &rsa(&with(good.clone(), "aud", json!(["other", "reporting"]))),
        )
        .await
        .expect("one of several audiences");
        // Expired 30 s ago, or valid from 30 s ahead: within 60 s of skew.
        execute(&app, &rsa(&with(good.clone(), "exp", json!(now() - 30))))
            .await
            .expect("expired within the skew");
        execute(&app, &rsa(&with(good.clone(), "nbf", json!(now() + 30))))
            .await
            .expect("not yet valid within the skew");
        app.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_tokens_are_refused_with_their_reason() {
        let (app, _dir) = app_with_jwks().await;
        let good = claims("svc-billing", "writer");
        let no_role = {
            let mut claims = good.clone();
            claims.as_object_mut().expect("object").remove("role");
            claims
        };
        let cases = [
            (
                "expired",
                rsa(&with(good.clone(), "exp", json!(now() - 300))),
                "token expired",
            ),
            (
                "not yet valid",
                rsa(&with(good.clone(), "nbf", json!(now() + 300))),
                "not yet valid",
            ),
            (
                "a wrong audience",
                rsa(&with(good.clone(), "aud", json!("billing-api"))),
                "wrong audience",
            ),
            (
                "a wrong issuer",
                rsa(&with(
                    good.clone(),
                    "iss",
                    json!("https://evil.example.test"),
                )),
                "wrong issuer",
            ),
            (
                "a malformed expiry",
                rsa(&with(good.clone(), "exp", json!("never"))),
                "claim",
            ),
            (
                "a key not in the set",
                sign(Algorithm::RS256, OTHER_RSA_KEY, Some("rsa-1"), &good),
                "bad signature",
            ),
            (
                "a key id not in the set",
                sign(Algorithm::RS256, OTHER_RSA_KEY, Some("rsa-9"), &good),
                "unknown key id",
            ),
            ("alg none", unsigned(&good), "malformed token header"),
            (
                "HS256 keyed with the public key's id",
                sign(Algorithm::HS256, "any secret", Some("rsa-1"), &good),
                "algorithm not accepted",
            ),
            (
                "an unknown role",
                rsa(&with(good.clone(), "role", json!("superuser"))),
                "unknown role",
            ),
            ("no role", rsa(&no_role), "no role claim"),
            (
                "no subject",
                rsa(&with(good.clone(), "sub", json!(42))),
                "no sub claim",
            ),
            (
                "a signature cut short",
                {
                    let token = rsa(&good);
                    token[..token.len() - 10].to_owned()
                },
                "",
            ),
        ];
        for (what, token, reason) in cases {
            assert_refused(execute(&app, &token).await, reason, &token, what);
        }
        app.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_subject_names_the_caller_in_the_session_list() {
        let (app, _dir) = app_with_jwks().await;
        let reader = sign(
            Algorithm::ES256,
            EC_KEY,
            Some("ec-1"),
            &claims("svc-reports", "reader"),
        );
        let requests = session_as(&app, &reader).await;
        let admin = rsa(&claims("ops@example.test", "admin"));
        let sessions = sessions_listed_by(&app, &admin).await;
        assert_eq!(sessions.len(), 1);
        assert_eq!(sessions[0].caller, "svc-reports");
        drop(requests);
        app.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_token_used_before_still_expires() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("jwks.json");
        write_jwks(&path, true, true);
        let app = app(|settings| {
            settings.auth.jwt.jwks_file = Some(path);
            settings.auth.jwt.issuer = vec![ISSUER.into()];
            settings.auth.jwt.audience = vec![AUDIENCE.into()];
            settings.auth.jwt.clock_skew = Duration::ZERO;
        })
        .await;
        let token = rsa(&with(claims("svc", "reader"), "exp", json!(now() + 1)));
        execute(&app, &token).await.expect("valid now");
        execute(&app, &token).await.expect("valid again");
        tokio::time::sleep(Duration::from_millis(2_100)).await;
        assert_refused(
            execute(&app, &token).await,
            "token expired",
            &token,
            "later",
        );
        app.stop().await;
    }

    /// Waits (up to 5 s) until `token` gets `expected` (OK or a refusal
    /// containing the text).
    async fn until(app: &TestApp, token: &str, expected: Result<(), &str>) {
        let started = std::time::Instant::now();
        loop {
            let result = execute(app, token).await;
            let matched = match (&result, expected) {
                (Ok(()), Ok(())) => true,
                (Err(status), Err(reason)) => {
                    status.code() == Code::Unauthenticated && status.message().contains(reason)
                }
                _ => false,
            };
            if matched {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "still {result:?}, expected {expected:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keys_and_tokens_files_are_reloaded_when_they_change() {
        let dir = tempfile::tempdir().expect("temp dir");
        let jwks = dir.path().join("jwks.json");
        let tokens = dir.path().join("tokens.toml");
        write_jwks(&jwks, false, true);
        std::fs::write(&tokens, "").expect("an empty tokens file");
        let app = app(|settings| {
            settings.auth.tokens_file = Some(tokens.clone());
            settings.auth.reload_interval = Duration::from_millis(100);
            settings.auth.jwt.jwks_file = Some(jwks.clone());
            settings.auth.jwt.issuer = vec![ISSUER.into()];
            settings.auth.jwt.audience = vec![AUDIENCE.into()];
        })
        .await;
        let good = claims("svc", "writer");
        let by_rsa = rsa(&good);
        let by_ec = sign(Algorithm::ES256, EC_KEY, Some("ec-1"), &good);
        execute(&app, &by_ec)
            .await
            .expect("the EC key is in the set");
        assert_refused(
            execute(&app, &by_rsa).await,
            "unknown key id",
            &by_rsa,
            "no RSA key yet",
        );

        // The provider rotates: the RSA key in, the EC key out. A token
        // verified before is not taken on trust after its key is gone.
        write_jwks(&jwks, true, false);
        until(&app, &by_rsa, Ok(())).await;
        until(&app, &by_ec, Err("unknown key id")).await;

        // A broken file changes nothing.
        std::fs::write(&jwks, "{not json").expect("write");
        tokio::time::sleep(Duration::from_millis(400)).await;
        execute(&app, &by_rsa)
            .await
            .expect("the last good keys stay");

        // A token added to the file is accepted shortly after.
        let token = "sg_added_later_0f3c";
        assert_refused(
            execute(&app, token).await,
            "unknown token",
            token,
            "not there yet",
        );
        std::fs::write(
            &tokens,
            format!(
                "[[token]]\nname = \"later\"\nrole = \"reader\"\nsha256 = \"{}\"\n",
                sqlgate::grpc::auth::hash_token(token)
            ),
        )
        .expect("write");
        until(&app, token, Ok(())).await;
        app.stop().await;
    }

    // Test-only keys, generated for this suite with `openssl genpkey`;
    // they sign nothing but these tests' tokens.

    const RSA_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQC+iJJrh2wLCujH
Q8tlukqeOpQbSZqO2p53XQEVYNlwybVTmgZfV6RF8lWbq4QQZx1n9KzkUtc1kxtr
4pCFe77E/GMqVV52AS1EsEksXsLpHaDI5Ud5dm8FiNiOyWZiKVGN9t4h9SOwd01g
gBgufyS0pwfwQq1YfUg7cg32Ea8oaCLnlDRBB03FXns6Rl/YR6lGJAdaJFTYMKlK
MhEnFA8gsKYklNSuiZ292T1cGbC9uS3SCNs1KqfyiYNC+YUhzefjbkqAhTlNa82O
B95np4t5mUPNsmnhvqnVeWH57FqR0kx+b9exz9vtzqaqE6/pTkTKHnckLOZY40AF
t0qYfTvzAgMBAAECggEAGdty84DXWtBKMvCyY8XaZorQmrtsbEKjCtPmV75jA/l7
0DKw9rNwKcXvdEbcj1VPGlKMPBg5+J1UNVnz/wmCJD2UP6SCQ0V5nT7HT2w0y2on
7dufzY4TFw8xRH90k5HD7Z45Gyanh0VJjPUVUwoSMyoP271QxReLe/XIi0JvIO50
l/GeudUvephv4UPzw4EVJkaCcP56uWe1nfA6AJvKu5v0f+z4/La8NvyEqLDC635Q
fw6D8+DYE3UbX0yAZXWjqEXF5ztWQgIQ9wxuGQoM7dw6GHGr0Tkd/hN8v5nf3jZT
16NFXcMvM7W+GKDRsbKNfQ0MCK9Q69FU+pEDCs3vMQKBgQD5xqqAIBiHTIY3nlS1
yAj2zRZioy4ybXRS9QhtysYOoK4nNO6QzhKWVpdo38MOI+2n4jKmx4BguKkumCCC
bFZrVVyZUcEjDnXl/yd6HnneKtWQOFjYZK70T3RAbqf2DjkFofdNXEHoIsCGS3tj
V0mC+HQJyZyGDuy4a5fq9gx1vwKBgQDDR/6jge98Y8cYcUqw0H52ZDlQ6V0SeWcb
2tZl6aMpj/5ZD3/IwBASlE+ZRaqi8FcQzms3aRgsvJOgs5n7zUxk9H88o2saaNwk
5HA36sOyfcNqOU6fglSjpLfaPq9svl5xHcb5o4qzaFu7ca5HxwfU4pMyTD+fARN2
gfHZc42OzQKBgHseIgzlxTFr1vyzXq372+9LSC12od7ZdO0vOuhjexzatv08ahuW
eDMCm79mDI97xjlqlez/iZgjbcE520xuemqNuQcZ9UmCZzrnel4Hh6qrEnn0TFbd
yh9Cytq3sLLob9MG8w9+2j3CY4PO0RM2g1W7gfcRGcY6tRRydH+sqJehAoGAGKaw
9VEEu04ZJvO+Ov3GyQkz1wvubNOYeYKxh+Hrb+a2c+Wp+tyL6tyAA9gwhysRwpRc
In2IyLTxadriOFAdMa1PlocGkSnliF6x780Z8SFBFtqvGyGnr5SuhMVe/bo2T88z
e/XyH12wHsRl/LeaPHxxmmrXqSnInDAhKJMWro0CgYBQXfO1maqyFouIohDyG/Dz
7E1mT5yuc7cDOAWU3CZIEgcM8i5/MMNI8zIZ5N4w/5BvR9SPiU47wK86MUxL/7LC
RHC2ipaS9Vq9tMIU7guHJlWPhXxd4hb/sm01ArMQrdIlZ7SgYXJq/u2GN925OZsY
iYYyhH9YCMrfA0eC/VyRsw==
-----END PRIVATE KEY-----
";

    const OTHER_RSA_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQC1qkLzIAdG16c9
U4xMjAyCy2Ot7sXhRteMcX34JSO3vbQzRKV6y5OHDiDvX3dMkRzI2bjp9gXX5AGT
Dn+BH/RLdKGcSADs6LrBrZjKkqoDFvgmY946D26+rizcpsFkjpw41eQP92VIbADX
Vi04TdSPjGT9myIZOr/1xCbJ7AhJLEEdnqAdhpOAlaDoEuuCPp00knDnCKxFmPhA
I8jEzwLL3X7CAXnp8xt5bGWVssYHToDYSzD3GzCONrvPkZQEXQcN5B5L3o3nLp/g
tQ84by1eSn2wPe71+TQ40Kw93Oem7fk0c1NWXn/A058jUdxEEa3UfDwfiFWn64Zm
rbmcy5EVAgMBAAECggEAVnRJ2lSSwfcdgwUAzukThyduL7djertxF0hnr7FVFztz
x7ZSnmbFtc9WgzTGnKyuqzNaWhWYYE8FJMwQiA4B/+rogmyN7DExt7x662Ty/fdv
by2186GmjZ5sgTHm9Ykc9bttBuAw1k938wLzEEmR8CLbaQnsJ1+bPUX1Q8FNjCxy
fmsu8V85bbXOtizPCTKd4XumVXfcOYcukqvexJUSch4n+vmVF4W6PmVYFeb5F0m2
x3VvjH42TIbDieAGZ92S0WZ2et+dcLVGcplURiiUg0HsUFNCB+jR6n5+A2X26NCP
k6kOSzljLSl6Wap4NDQF6L5IVKV3mBxeLcJtJ2P0nQKBgQDpyffzNoYL1JnL/App
9wcqyoWFLCoWa99c6qDt8HlVZkujZ9cUCRcLwsOTskH8/g9JgkDaMBIxFNAAGW7c
nMfDqO/54dcgzqQ4HchrodOctmYmJz+NhRhiiCcdwzShh7Uk7gmXjg/tDJdnxiAL
itrAntCIpUcff9mmG3m1JrnafwKBgQDG7JPPdjbaMAY0BTHbN2Ysr7Dxd2XfW7yc
Lj+go5jE/Cx+w7++DE5gXVGKPy5fzqB48xlgQiIAVHspmGB82XgzhS8s4dDsHMMM
L4B9vLPKJWnl7x8UFk/mUo3TYM95EBDtQioOWlSLkzFLnslP1eqImxh9Voj7A1Kk
rYfDu/fCawKBgQDbZu+LEGA8Ogkbpi0fxPS089raX9gfspysVoUwx70WqCnT8F+o
Ld+y6dUhhujmxIcUNWknWnW4GhAaB8RCxd+zf5e2qnt6DnOPNmQgnn45U/QJWkwK
RB3eWmhbRhbegL0/KyVVVb0cefSdLxJjwqwImQKbOoDEzvczLBXMK8u/gQKBgARp
z0W1C7Z/hkO1Mcv5SK0JINXankn8UQzuAb9goc0NAze0xBZFU5/TsjFtAWxiuzCz
xAZcsUBsn2bm2I0sjfwmoktOn0H9yV4F18XyX9LGTbkqOvhJHnCvuDHOXgwDjTyW
UTSMUH/gPiG9Xh4FUvTA7CQrvVJEWpsItpBjJTYNAoGBAMDAT1C/eFRNbD3haDV7
cBQ5gPZ2rL9xoCUDqz/GW9xM2uWBRiVeeGCyj0mdZeV4z+1mWP5p3d2XzaGt+R+A
p5YCQhLDv5bFhKFsiDjJgsE0jKg4F7jQt8sXuv6R9QJ4HHg+UyJVFrnq+xmZvndo
223RP2z2Oha0xyA1tVMBc7Mf
-----END PRIVATE KEY-----
";

    const EC_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg4vozS0MpSptAOfMF
m50PO3Steh+XZG+RF9Sry0w1IOyhRANCAASAkKpPMxVLHFpqiydVwNgcwlkXMglW
E1Z4/xc7r75cN1AMCOL1bL6gL7DF7+iHut8AM+eLDZyYhjiY2L/0k8FT
-----END PRIVATE KEY-----
";
}
