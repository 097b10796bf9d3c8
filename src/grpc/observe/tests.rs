//! The layer on its own: paths, statuses, and when and how a line is written.

use super::*;

#[test]
fn a_path_names_service_and_method() {
    assert_eq!(
        split_path("/sqlgate.v1.Query/Execute"),
        ("sqlgate.v1.Query", "Execute")
    );
    assert_eq!(
        split_path("/grpc.health.v1.Health/Watch"),
        ("grpc.health.v1.Health", "Watch")
    );
    assert_eq!(split_path("/"), ("-", "-"));
    assert_eq!(split_path(""), ("-", "-"));
    assert_eq!(split_path("/odd"), ("-", "odd"));
    // The caller chooses the path: what is not a short name is not echoed.
    let long = format!("/sqlgate.v1.Query/{}", "A".repeat(10_000));
    assert_eq!(split_path(&long), ("sqlgate.v1.Query", "?"));
    assert_eq!(
        split_path("/sqlgate.v1.Query/Exec%20ute"),
        ("sqlgate.v1.Query", "?")
    );
    assert_eq!(split_path("/sqlgate.v1.Query/"), ("sqlgate.v1.Query", "-"));
}

#[test]
fn the_status_comes_from_grpc_status() {
    let mut headers = http::HeaderMap::new();
    assert_eq!(grpc_status(&headers), None);
    headers.insert("grpc-status", http::HeaderValue::from_static("0"));
    assert_eq!(grpc_status(&headers), Some(Code::Ok));
    headers.insert("grpc-status", http::HeaderValue::from_static("3"));
    assert_eq!(grpc_status(&headers), Some(Code::InvalidArgument));
    headers.insert("grpc-status", http::HeaderValue::from_static("x"));
    assert_eq!(grpc_status(&headers), Some(Code::Unknown));
}

mod lines {
    //! The layer around a stub service, its lines captured.

    use std::{
        collections::VecDeque,
        convert::Infallible,
        net::SocketAddr,
        sync::{Arc, Mutex},
    };

    use hyper::body::Bytes;
    use tonic::transport::server::TcpConnectInfo;

    use super::*;

    /// A response body that yields these frames, then ends.
    #[derive(Default)]
    struct Frames(VecDeque<Frame<Bytes>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }

        fn is_end_stream(&self) -> bool {
            self.0.is_empty()
        }
    }

    /// Everything written by the subscriber [`Lines::install`] sets.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lines").extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Lines {
        /// Captures this thread's events up to `level` while the guard lives.
        fn install(level: Level) -> (Self, tracing::subscriber::DefaultGuard) {
            let lines = Lines::default();
            let writer = lines.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(level)
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .finish();
            (lines, tracing::subscriber::set_default(subscriber))
        }

        fn all(&self) -> Vec<String> {
            String::from_utf8_lossy(&self.0.lock().expect("lines"))
                .lines()
                .map(str::to_owned)
                .collect()
        }

        /// The one line written; panics unless exactly one was.
        fn one(&self) -> String {
            let all = self.all();
            assert_eq!(all.len(), 1, "{all:?}");
            all[0].clone()
        }
    }

    fn trailers(code: &'static str) -> Frame<Bytes> {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static(code));
        Frame::trailers(trailers)
    }

    fn data() -> Frame<Bytes> {
        Frame::data(Bytes::from_static(b"frame"))
    }

    /// Calls `path` through the layer on a handler that notes `rows` and a
    /// fingerprint and answers with `status` in its headers (if any) and
    /// `frames` as its body.
    fn call(
        path: &str,
        status: Option<&'static str>,
        frames: Vec<Frame<Bytes>>,
    ) -> http::Response<ObservedBody<Frames>> {
        let mut frames = Some(frames);
        let handler = tower::service_fn(move |request: http::Request<()>| {
            let note = request.extensions().get::<CallNote>().expect("a note");
            note.fingerprint(&std::sync::Arc::from("f1"));
            note.rows(2);
            note.rows(3);
            let mut response = http::Response::builder();
            if let Some(status) = status {
                response = response.header("grpc-status", status);
            }
            let response = response
                .body(Frames(frames.take().unwrap_or_default().into()))
                .expect("response");
            std::future::ready(Ok::<_, Infallible>(response))
        });
        let mut request = http::Request::builder()
            .uri(path)
            .body(())
            .expect("request");
        let peer: SocketAddr = ([127, 0, 0, 1], 4321).into();
        request.extensions_mut().insert(TcpConnectInfo {
            local_addr: None,
            remote_addr: Some(peer),
        });
        futures::executor::block_on(ObserveLayer::default().layer(handler).call(request))
            .expect("answer")
    }

    /// Polls the next frame of `body`.
    fn next<B: Body + Unpin>(body: &mut B) -> Option<Result<Frame<B::Data>, B::Error>> {
        futures::executor::block_on(std::future::poll_fn(|cx| {
            Pin::new(&mut *body).poll_frame(cx)
        }))
    }

    #[test]
    fn a_stream_is_logged_once_at_its_trailers() {
        let (lines, _guard) = Lines::install(Level::INFO);
        let response = call(
            "/sqlgate.v1.Query/ExecuteStream",
            None,
            vec![data(), data(), trailers("0")],
        );
        let mut body = response.into_body();
        assert!(next(&mut body).is_some());
        assert!(next(&mut body).is_some());
        assert_eq!(lines.all(), Vec::<String>::new(), "nothing before the end");
        assert!(next(&mut body).is_some());
        let line = lines.one();
        for part in [
            "INFO",
            "call done",
            "service=\"sqlgate.v1.Query\"",
            "method=\"ExecuteStream\"",
            "peer=127.0.0.1:4321",
            "fingerprint=\"f1\"",
            "rows=5",
            "code=Ok",
            "elapsed_ms=",
        ] {
            assert!(line.contains(part), "{part:?} missing from {line}");
        }
        assert!(next(&mut body).is_none());
        drop(body);
        assert_eq!(lines.all().len(), 1, "written once");
    }

    #[test]
    fn a_failed_stream_takes_the_code_of_its_trailers() {
        let (lines, _guard) = Lines::install(Level::INFO);
        let mut body = call(
            "/sqlgate.v1.Query/ExecuteStream",
            None,
            vec![data(), trailers("4")],
        )
        .into_body();
        while next(&mut body).is_some() {}
        let line = lines.one();
        assert!(line.contains("call failed"), "{line}");
        assert!(line.contains("code=DeadlineExceeded"), "{line}");
    }

    #[test]
    fn a_trailers_only_answer_is_logged_with_its_header_status() {
        let (lines, _guard) = Lines::install(Level::INFO);
        // hyper sends an empty body's headers and drops it unpolled.
        drop(call("/sqlgate.v1.Query/Execute", Some("3"), vec![]));
        let line = lines.one();
        assert!(line.contains("call failed"), "{line}");
        assert!(line.contains("code=InvalidArgument"), "{line}");
    }

    #[test]
    fn a_stream_dropped_before_its_end_is_cancelled() {
        let (lines, _guard) = Lines::install(Level::INFO);
        let mut body = call(
            "/sqlgate.v1.Sessions/Attach",
            None,
            vec![data(), data(), trailers("0")],
        )
        .into_body();
        assert!(next(&mut body).is_some());
        drop(body);
        let line = lines.one();
        assert!(line.contains("call failed"), "{line}");
        assert!(line.contains("code=Cancelled"), "{line}");
    }

    #[test]
    fn a_call_dropped_before_its_answer_is_cancelled() {
        let (lines, _guard) = Lines::install(Level::INFO);
        let handler = tower::service_fn(|_: http::Request<()>| {
            std::future::pending::<Result<http::Response<Frames>, Infallible>>()
        });
        let request = http::Request::builder()
            .uri("/sqlgate.v1.Admin/ListSessions")
            .body(())
            .expect("request");
        drop(ObserveLayer::default().layer(handler).call(request));
        let line = lines.one();
        for part in [
            "call failed",
            "method=\"ListSessions\"",
            "peer=unknown",
            "fingerprint=\"-\"",
            "code=Cancelled",
        ] {
            assert!(line.contains(part), "{part:?} missing from {line}");
        }
    }

    #[test]
    fn health_and_reflection_calls_are_logged_at_debug_only() {
        let paths = [
            "/grpc.health.v1.Health/Check",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        ];
        {
            let (lines, _guard) = Lines::install(Level::INFO);
            for path in paths {
                drop(call(path, Some("0"), vec![]));
            }
            assert_eq!(lines.all(), Vec::<String>::new());
        }
        let (lines, _guard) = Lines::install(Level::DEBUG);
        for path in paths {
            drop(call(path, Some("0"), vec![]));
        }
        let all = lines.all();
        assert_eq!(all.len(), 2, "{all:?}");
        assert!(all[0].contains("DEBUG") && all[0].contains("method=\"Check\""));
    }
}

mod authentication {
    //! The layer with authentication on: a refused call never reaches its
    //! handler and is logged with its reason; an accepted one carries its
    //! identity to the handler and into the line.

    use std::{convert::Infallible, net::SocketAddr};

    use tonic::transport::server::TcpConnectInfo;

    use super::*;
    use crate::{
        config::AuthSettings,
        grpc::{auth::hash_token, identity::Role},
    };

    /// Captures this thread's lines at `info` while the guard lives.
    fn capture() -> (
        std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
        tracing::subscriber::DefaultGuard,
    ) {
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(Level::INFO)
            .with_ansi(false)
            .with_writer(move || Writer(writer.clone()))
            .finish();
        (lines, tracing::subscriber::set_default(subscriber))
    }

    struct Writer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Writer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lines").extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn layer() -> ObserveLayer {
        let settings = AuthSettings {
            tokens: vec![format!("billing:writer:{}", hash_token("s3cret"))],
            ..AuthSettings::default()
        };
        ObserveLayer::new(Authenticator::new(&settings).expect("builds"))
    }

    /// Calls Query/Execute through `layer` with `authorization`, on a
    /// handler that records the caller it was given.
    fn call(authorization: Option<&str>) -> (http::Response<ObservedBody<String>>, Option<Caller>) {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
        let record = seen.clone();
        let handler = tower::service_fn(move |request: http::Request<()>| {
            *record.lock().expect("seen") = request.extensions().get::<Caller>().cloned();
            let response = http::Response::builder()
                .header("grpc-status", "0")
                .body(String::new())
                .expect("response");
            std::future::ready(Ok::<_, Infallible>(response))
        });
        let mut request = http::Request::builder().uri("/sqlgate.v1.Query/Execute");
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let mut request = request.body(()).expect("request");
        let peer: SocketAddr = ([127, 0, 0, 1], 4321).into();
        request.extensions_mut().insert(TcpConnectInfo {
            local_addr: None,
            remote_addr: Some(peer),
        });
        let response =
            futures::executor::block_on(layer().layer(handler).call(request)).expect("an answer");
        let caller = seen.lock().expect("seen").clone();
        (response, caller)
    }

    fn text(lines: &std::sync::Mutex<Vec<u8>>) -> String {
        String::from_utf8_lossy(&lines.lock().expect("lines")).into_owned()
    }

    #[test]
    fn a_refused_call_never_reaches_its_handler_and_is_logged_with_its_reason() {
        let (lines, _guard) = capture();
        for (authorization, reason) in [
            (None, "missing credentials"),
            (Some("Bearer wrong-token"), "unknown token"),
        ] {
            let (response, caller) = call(authorization);
            assert_eq!(caller, None, "the handler ran");
            assert_eq!(grpc_status(response.headers()), Some(Code::Unauthenticated));
            let message = response.headers().get("grpc-message").expect("a message");
            assert!(
                message
                    .to_str()
                    .expect("ascii")
                    .contains(&reason.replace(' ', "%20")),
                "{message:?}"
            );
            drop(response);
            let text = text(&lines);
            let line = text.lines().last().expect("a line");
            for part in [
                "INFO",
                "call failed",
                "peer=127.0.0.1:4321",
                "code=Unauthenticated",
                &format!("refused=\"{reason}"),
            ] {
                assert!(line.contains(part), "{part:?} missing from {line}");
            }
            assert!(!line.contains("wrong-token"), "{line}");
            assert!(!line.contains("role="), "{line}");
        }
    }

    #[test]
    fn an_accepted_call_carries_its_identity_to_the_handler_and_the_line() {
        let (lines, _guard) = capture();
        let (response, caller) = call(Some("Bearer s3cret"));
        let caller = caller.expect("the handler ran");
        assert_eq!(caller.to_string(), "billing");
        assert_eq!(caller.role(Role::Admin), Role::Writer);
        drop(response);
        let text = text(&lines);
        let line = text.lines().last().expect("a line");
        for part in ["call done", "peer=billing", "role=\"writer\"", "code=Ok"] {
            assert!(line.contains(part), "{part:?} missing from {line}");
        }
        assert!(!line.contains("refused"), "{line}");
        assert!(!line.contains("s3cret"), "{line}");
    }
}
