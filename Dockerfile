# syntax=docker/dockerfile:1
# sqlgate's container image: a release build, then a runtime image with the
# binary alone (distroless: glibc and CA certificates, no shell, no package
# manager), running as an unprivileged user.
#
#   docker build -t sqlgate .
#   docker run -e SQLGATE_LISTEN=0.0.0.0:50051 -e SQLGATE_DATABASE_URL=postgres://… \
#     -e SQLGATE_AUTH__TOKENS=… -p 50051:50051 sqlgate

ARG RUST_VERSION=1.94

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
# Dependencies first, so that a source change does not rebuild them.
COPY Cargo.toml Cargo.lock build.rs ./
COPY bench/Cargo.toml bench/Cargo.toml
COPY proto proto
RUN mkdir -p src bench/src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && echo 'fn main() {}' > bench/src/main.rs \
    && cargo build --release --locked --bin sqlgate \
    && rm -rf src bench/src
COPY src src
COPY bench bench
# The stub's build outputs are older than the real sources: touch them so
# cargo rebuilds the crate itself.
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin sqlgate \
    && install -D -m 0755 target/release/sqlgate /out/sqlgate

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/sqlgate /usr/local/bin/sqlgate
# 65532: distroless' "nonroot"; Kubernetes' runAsNonRoot needs it numeric.
USER 65532:65532
EXPOSE 50051
ENTRYPOINT ["/usr/local/bin/sqlgate"]
CMD ["serve"]
# Exits 0 only when readiness is SERVING (the database reachable, the pool
# not saturated, not shutting down). Plaintext: with TLS on, probe otherwise.
HEALTHCHECK --interval=10s --timeout=4s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/sqlgate", "health", "--service", "readiness", "--addr", "127.0.0.1:50051", "--timeout", "3s"]
