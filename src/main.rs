//! The `sqlgate` binary: parse the command line, load the settings, set up
//! logging, serve until SIGINT or SIGTERM. `sqlgate hash-token` prints the
//! hash of a bearer token, as the `[auth]` settings take it.

use std::{io::Read, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use mimalloc::MiMalloc;
use sqlgate::{
    config::{Exposure, ListenAddress, Overrides, Settings},
    grpc::auth::{check_files, hash_token},
    server::Application,
    telemetry,
};

/// Every call and every streamed row allocates (values, frames, HTTP/2
/// buffers); mimalloc does that with a fraction of glibc malloc's work.
#[global_allocator]
static ALLOCATOR: MiMalloc = MiMalloc;

/// Turns transparent huge pages off for this process, as mimalloc's own
/// `allow_thp=0` would (it cannot be set from here: mimalloc starts before
/// `main`). mimalloc advises its arena for huge pages, so wherever a large
/// block (a stream's frame, its copy in tonic's buffer) first lands in a
/// 2 MiB region, the whole region became resident: a slow
/// reader of 1,000,000 rows grew sqlgate's RSS by 6 MiB in 2 MiB steps,
/// about 1 MiB without. sqlgate's heap is a few tens of MiB, too small for
/// huge pages to save anything measurable (page faults per streamed row
/// stay negligible). The flag is checked at each page fault, so it covers
/// the arena mimalloc mapped before `main` (only what was touched before
/// the call stays in huge pages).
fn without_transparent_huge_pages() {
    // Fails only on kernels before 3.15: huge pages then stay as they are.
    #[cfg(target_os = "linux")]
    let _ = nix::sys::prctl::set_thp_disable(true);
}

#[derive(Debug, Parser)]
#[command(name = "sqlgate", version, about = "A gRPC data-access service")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service.
    Serve {
        /// A TOML settings file.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Address to listen on: host:port, or unix:PATH for a Unix socket
        /// (default 127.0.0.1:50051).
        #[arg(long, value_name = "ADDR")]
        listen: Option<ListenAddress>,
        /// postgres://…, mysql://… or sqlite://… (default: ./sqlgate.db).
        #[arg(long, value_name = "URL")]
        database_url: Option<String>,
        /// Log filter, e.g. `info,sqlgate=debug`.
        #[arg(long, value_name = "FILTER")]
        log_filter: Option<String>,
        /// Serve a non-loopback address with neither TLS nor
        /// authentication (refused otherwise).
        #[arg(long)]
        insecure: bool,
    },
    /// Print the SHA-256 (hex) of a bearer token read from stdin, for
    /// `auth.tokens` or the tokens file (the token itself is never stored).
    HashToken,
    /// Ask a running sqlgate's health service; exit 0 only when the
    /// service is SERVING (for exec probes and container health checks).
    Health {
        /// `liveness`, `readiness`, `` (the server), or a service name.
        #[arg(long, default_value = "readiness")]
        service: String,
        /// Where sqlgate listens: host:port, or unix:PATH.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:50051")]
        addr: String,
        /// How long to wait for the answer, e.g. `2s`.
        #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
        /// Speak TLS, trusting this CA (PEM) for the server's certificate.
        #[arg(long, value_name = "FILE")]
        tls_ca: Option<PathBuf>,
        /// The name the server's certificate must carry (default: the
        /// host of --addr).
        #[arg(long, value_name = "NAME", requires = "tls_ca")]
        tls_server_name: Option<String>,
        /// A client certificate (PEM), for a listener that requires mTLS.
        #[arg(long, value_name = "FILE", requires_all = ["tls_ca", "tls_key"])]
        tls_cert: Option<PathBuf>,
        /// The client certificate's private key (PEM).
        #[arg(long, value_name = "FILE", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    // Before the runtime's threads allocate anything.
    without_transparent_huge_pages();
    let command = Cli::parse().command;
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(run(command)),
        Err(err) => {
            eprintln!("sqlgate: cannot start the async runtime: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the subcommand.
async fn run(command: Command) -> ExitCode {
    match command {
        Command::Serve {
            config,
            listen,
            database_url,
            log_filter,
            insecure,
        } => serve(config, listen, database_url, log_filter, insecure).await,
        Command::HashToken => hash_stdin(),
        Command::Health {
            service,
            addr,
            timeout,
            tls_ca,
            tls_server_name,
            tls_cert,
            tls_key,
        } => {
            let tls = tls_ca.map(|ca_file| sqlgate::health::HealthTls {
                ca_file,
                server_name: tls_server_name,
                client: tls_cert.zip(tls_key),
            });
            health_check(&addr, &service, timeout, tls.as_ref()).await
        }
    }
}

/// `sqlgate health`: exit 0 only when the service answers SERVING.
async fn health_check(
    addr: &str,
    service: &str,
    timeout: std::time::Duration,
    tls: Option<&sqlgate::health::HealthTls>,
) -> ExitCode {
    match sqlgate::health::ask(addr, service, timeout, tls).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("sqlgate: not serving: {why}");
            ExitCode::FAILURE
        }
    }
}

/// `sqlgate hash-token`: the token is the first line of stdin, without its
/// line ending (so `echo` and a file with a final newline both work).
fn hash_stdin() -> ExitCode {
    let mut input = String::new();
    if let Err(err) = std::io::stdin().read_to_string(&mut input) {
        eprintln!("sqlgate: cannot read the token from stdin: {err}");
        return ExitCode::from(2);
    }
    let token = input.lines().next().unwrap_or_default();
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        eprintln!(
            "sqlgate: give the token on stdin, one line of visible ASCII characters without spaces"
        );
        return ExitCode::from(2);
    }
    println!("{}", hash_token(token));
    ExitCode::SUCCESS
}

/// `sqlgate serve`.
async fn serve(
    config: Option<PathBuf>,
    listen: Option<ListenAddress>,
    database_url: Option<String>,
    log_filter: Option<String>,
    insecure: bool,
) -> ExitCode {
    let mut signals = ShutdownSignals::install();
    let overrides = Overrides {
        listen,
        database_url,
        log_filter,
    };
    let settings = match Settings::load(config.as_deref(), &overrides) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("sqlgate: {err}");
            return ExitCode::from(2);
        }
    };
    // The credential files, read as start-up will read them: a bad one
    // stops here, like any invalid setting, with a line naming it.
    if let Err(err) = check_files(&settings.auth) {
        match err.split_once(": ") {
            Some((key, why)) => eprintln!("sqlgate: invalid setting `{key}`: {why}"),
            None => eprintln!("sqlgate: invalid setting {err}"),
        }
        return ExitCode::from(2);
    }
    // A socket path that cannot be served (no directory, a file that is
    // not a socket, a socket in use) is a wrong setting too.
    if let Err(why) = sqlgate::server::check_listen(&settings).await {
        eprintln!("sqlgate: invalid setting `listen`: {why}");
        return ExitCode::from(2);
    }
    let exposure = match settings.exposure(insecure) {
        Ok(exposure) => exposure,
        Err(why) => {
            eprintln!("sqlgate: refusing to start: {why}");
            return ExitCode::from(2);
        }
    };
    let telemetry = telemetry::init(&settings);
    if let Exposure::Insecure(warning) = exposure {
        tracing::warn!("INSECURE: {warning}");
    }
    let app = match Application::build(settings).await {
        Ok(app) => app,
        Err(err) => {
            eprintln!("sqlgate: cannot start: {err}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = async move {
        signals.next().await;
        // A second signal means "now": skip the drain.
        tokio::spawn(async move {
            signals.next().await;
            eprintln!("sqlgate: second signal; exiting without draining");
            std::process::exit(1);
        });
    };
    let served = app.run_until_stopped(shutdown).await;
    telemetry.shutdown();
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("sqlgate: {err}");
            ExitCode::FAILURE
        }
    }
}

/// SIGINT and SIGTERM, listened for from the start of `serve`: a signal
/// that arrives while sqlgate is still starting is kept, and shuts it down
/// (gracefully) as soon as it serves, instead of killing it half-built.
struct ShutdownSignals {
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignals {
    /// Starts listening (where the platform cannot, Ctrl-C alone is awaited).
    fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Self {
                interrupt: signal(SignalKind::interrupt()).ok(),
                terminate: signal(SignalKind::terminate()).ok(),
            }
        }
        #[cfg(not(unix))]
        {
            Self {}
        }
    }

    /// Resolves on the next SIGINT or SIGTERM (one received before counts).
    async fn next(&mut self) {
        #[cfg(unix)]
        {
            let interrupt = async {
                match &mut self.interrupt {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            };
            let terminate = async {
                match &mut self.terminate {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = interrupt => {}
                _ = terminate => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
