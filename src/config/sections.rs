//! The settings' sections, one type each with its defaults: the pool,
//! request and result limits, the HTTP/2 transport, the readiness probe,
//! shutdown, sessions, and per-method deadlines ([`MethodBudget`]). Kept
//! apart from [`super::Settings`]' loading so that each section's fields,
//! docs and defaults read together.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::grpc::identity::Role;

/// Pool sizing and connection lifetimes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PoolSettings {
    /// Most connections open at once.
    pub max_connections: u32,
    /// Connections kept open even when idle.
    pub min_connections: u32,
    /// Longest a call waits for a free connection before RESOURCE_EXHAUSTED.
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    /// An idle connection above `min_connections` is closed after this long.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A connection is replaced after this long, whatever its use.
    #[serde(with = "humantime_serde")]
    pub max_lifetime: Duration,
    /// Prepared statements each connection keeps (sqlx's statement cache,
    /// least recently used dropped first). Each costs memory in sqlgate and
    /// in the database's server process; 0 caches nothing.
    pub statement_cache_capacity: usize,
    /// Statements longer than this (bytes of text) are never cached: they
    /// run as unnamed statements, parsed on every call, so that callers
    /// sending many distinct long statements cannot fill sqlgate's memory
    /// and the database's. 0 caches nothing.
    pub max_cached_statement_bytes: usize,
}

/// Request and result caps.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitSettings {
    /// Longest statement text accepted, in bytes.
    pub max_statement_bytes: usize,
    /// Most parameters on one statement.
    pub max_params: usize,
    /// Rows `Execute` returns when the request's `max_rows` is 0.
    pub default_max_rows: u32,
    /// The largest `max_rows` a caller may ask of `Execute`/`ExecuteBatch`.
    pub max_rows_limit: u32,
    /// Largest inline result (`Execute`, `ExecuteBatch`), in bytes; kept
    /// under gRPC's common 4 MiB message limit.
    pub max_response_bytes: usize,
    /// Most statements in one `ExecuteBatch`.
    pub max_batch_statements: usize,
    /// Most rows in one streamed frame.
    pub stream_batch_rows: usize,
    /// Most bytes in one streamed frame (approximate).
    pub stream_batch_bytes: usize,
    /// Frames buffered per stream before the query waits for the client.
    pub stream_buffer_frames: usize,
    /// Most of the pool that `ExecuteStream` calls may hold at once, as a
    /// fraction of `pool.max_connections` (at least one stream): a stream
    /// holds its connection for as long as its reader takes, so readers
    /// that stall must not be able to take every connection.
    pub stream_max_pool_share: f64,
    /// A stream whose reader takes no frame for this long (it grants no
    /// HTTP/2 flow-control window) is ended: its statement is cancelled and
    /// its connection given back, instead of being held until the deadline.
    #[serde(with = "humantime_serde")]
    pub stream_stall_timeout: Duration,
    /// Most `Query` calls, streams and sessions in flight at once, all
    /// callers together; more are shed at once (RESOURCE_EXHAUSTED,
    /// `OVERLOADED`), never queued.
    pub max_concurrent_calls: u32,
    /// What one caller may have in flight at once.
    pub per_caller: CallerLimitSettings,
}

/// What one caller (an authenticated identity; with authentication off,
/// one client address) may have in flight at once, so that a greedy caller
/// cannot take every call slot, stream or session from the others. Past a
/// limit the caller's next call is refused at once (RESOURCE_EXHAUSTED,
/// `CALLER_LIMIT`, with `RetryInfo`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CallerLimitSettings {
    /// `Execute` and `ExecuteBatch` calls.
    pub max_calls: u32,
    /// Open `ExecuteStream` calls.
    pub max_streams: u32,
    /// Open sessions (`Sessions/Attach` streams).
    pub max_sessions: u32,
}

impl Default for CallerLimitSettings {
    fn default() -> Self {
        Self {
            max_calls: 256,
            max_streams: 4,
            max_sessions: 8,
        }
    }
}

/// Roles: what a caller may do (see `grpc::identity::Role`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RoleSettings {
    /// The role of a caller without an identity (every caller while
    /// authentication is off): `admin` (the default: everything, as before
    /// roles existed), `writer` or `reader`.
    pub default: Role,
}

impl Default for RoleSettings {
    fn default() -> Self {
        Self {
            default: Role::Admin,
        }
    }
}

/// HTTP/2 settings: noticing dead peers, bounding sockets, and how long
/// a client connection may live.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TransportSettings {
    /// How often to ping an idle connection.
    #[serde(with = "humantime_serde")]
    pub keepalive_interval: Duration,
    /// How long to wait for a ping's answer before dropping the connection.
    #[serde(with = "humantime_serde")]
    pub keepalive_timeout: Duration,
    /// Largest request message accepted, in bytes.
    pub max_request_bytes: usize,
    /// Calls (streams) one HTTP/2 connection may have open at once. Every
    /// open session is one, so this must stay above `sessions.max_open`;
    /// hyper's own default (200) would refuse a busy client's streams.
    pub max_concurrent_streams: u32,
    /// A client connection must complete the HTTP/2 handshake (the
    /// preface, its SETTINGS, and its acknowledgement of sqlgate's) within
    /// this long, or it is closed: a socket that sends nothing, or half a
    /// preface, would otherwise hold a descriptor (and a connection slot)
    /// forever.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Most client connections open at once; further connections are
    /// closed as soon as they are accepted, so that no caller can exhaust
    /// sqlgate's file descriptors or memory by opening sockets.
    pub max_connections: u32,
    /// A client connection older than this is asked to go away (HTTP/2
    /// GOAWAY): its calls in flight and its open sessions go on, and the
    /// client opens a new connection for its next calls, which a Service
    /// in front of several replicas may route to another one. HTTP/2
    /// connections live long and a Service balances connections, not
    /// calls: without this, replicas added later get no traffic from
    /// clients already connected. Unset (the default): never.
    #[serde(default, with = "humantime_serde")]
    pub max_connection_age: Option<Duration>,
    /// Up to this much is added, at random, to each connection's
    /// `max_connection_age`, so that connections opened together (at a
    /// rollout) are not all sent away together. Unset: a tenth of the age.
    #[serde(default, with = "humantime_serde")]
    pub max_connection_age_jitter: Option<Duration>,
    /// How long, after its GOAWAY, a connection's calls in flight and open
    /// sessions may go on before the connection is closed (which cuts
    /// them: sessions roll back). Unset (the default): as long as they
    /// take; `sessions.max_lifetime` and the deadlines bound them anyway.
    #[serde(default, with = "humantime_serde")]
    pub max_connection_age_grace: Option<Duration>,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: 16,
            min_connections: 1,
            acquire_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(1800),
            statement_cache_capacity: DEFAULT_STATEMENT_CACHE_CAPACITY,
            max_cached_statement_bytes: DEFAULT_MAX_CACHED_STATEMENT_BYTES,
        }
    }
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            max_statement_bytes: 1024 * 1024,
            max_params: 65_535,
            default_max_rows: 1_000,
            max_rows_limit: 100_000,
            max_response_bytes: 3 * 1024 * 1024 + 512 * 1024,
            max_batch_statements: 10_000,
            stream_batch_rows: 1_000,
            stream_batch_bytes: 256 * 1024,
            stream_buffer_frames: 4,
            stream_max_pool_share: 0.5,
            stream_stall_timeout: Duration::from_secs(30),
            max_concurrent_calls: 1024,
            per_caller: CallerLimitSettings::default(),
        }
    }
}

impl Default for TransportSettings {
    fn default() -> Self {
        Self {
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(5),
            max_request_bytes: 16 * 1024 * 1024,
            max_concurrent_streams: 1024,
            handshake_timeout: Duration::from_secs(5),
            max_connections: DEFAULT_MAX_CLIENT_CONNECTIONS,
            max_connection_age: None,
            max_connection_age_jitter: None,
            max_connection_age_grace: None,
        }
    }
}

/// The readiness probe and what makes sqlgate not ready.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HealthSettings {
    /// How often the probe runs.
    #[serde(with = "humantime_serde")]
    pub probe_interval: Duration,
    /// The probe's own budget (acquire + `SELECT 1`).
    #[serde(with = "humantime_serde")]
    pub probe_timeout: Duration,
    /// Consecutive failed probes before readiness goes NOT_SERVING.
    pub failure_threshold: u32,
    /// Consecutive good probes before it comes back.
    pub success_threshold: u32,
    /// Callers waiting for a connection above this count…
    pub saturation_waiters: u32,
    /// …for this long make sqlgate not ready.
    #[serde(with = "humantime_serde")]
    pub saturation_duration: Duration,
}

impl Default for HealthSettings {
    fn default() -> Self {
        Self {
            probe_interval: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(2),
            failure_threshold: 2,
            success_threshold: 2,
            saturation_waiters: 32,
            saturation_duration: Duration::from_secs(10),
        }
    }
}

/// How sqlgate stops.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownSettings {
    /// After SIGTERM, how long sqlgate goes on accepting connections and
    /// calls (readiness already NOT_SERVING) before it stops accepting:
    /// load balancers and Kubernetes endpoints take a while to stop
    /// routing to a pod that is going away, and calls they route meanwhile
    /// must not be refused.
    #[serde(with = "humantime_serde")]
    pub delay: Duration,
    /// How long in-flight calls may take to finish after the delay.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
}

impl Default for ShutdownSettings {
    fn default() -> Self {
        Self {
            delay: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// Limits on server-side sessions.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SessionSettings {
    /// Most sessions open at once.
    pub max_open: u32,
    /// Most of the pool that sessions may hold, as a fraction of
    /// `pool.max_connections`, so that sessions cannot starve Query calls.
    pub max_pool_share: f64,
    /// Most statements one session may run.
    pub max_statements: u64,
    /// A session is rolled back after this long, whatever it is doing.
    #[serde(with = "humantime_serde")]
    pub max_lifetime: Duration,
    /// Idle time before a session is rolled back, when `begin` sets none.
    #[serde(with = "humantime_serde")]
    pub default_idle_timeout: Duration,
    /// The longest idle timeout a client may ask for.
    #[serde(with = "humantime_serde")]
    pub max_idle_timeout: Duration,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            max_open: 64,
            max_pool_share: 0.75,
            max_statements: 100_000,
            max_lifetime: Duration::from_secs(3600),
            default_idle_timeout: Duration::from_secs(60),
            max_idle_timeout: Duration::from_secs(600),
        }
    }
}

/// A call's budget when the client sends no `grpc-timeout`, and the most
/// it may have when the client asks for more.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MethodBudget {
    /// Used when the client sets no deadline.
    #[serde(with = "humantime_serde")]
    pub default: Duration,
    /// The most a client may ask for.
    #[serde(with = "humantime_serde")]
    pub max: Duration,
}

/// Per-method deadlines. Every call's budget is min(client's
/// `grpc-timeout`, `max`), or `default` when the client sends none.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DeadlineSettings {
    /// `Query.Execute`.
    pub execute: MethodBudget,
    /// `Query.ExecuteStream` (the whole stream).
    pub execute_stream: MethodBudget,
    /// `Query.ExecuteBatch`.
    pub execute_batch: MethodBudget,
    /// One `execute` inside a session (its `timeout` field).
    pub session_execute: MethodBudget,
}

impl Default for DeadlineSettings {
    fn default() -> Self {
        let budget = |default, max| MethodBudget {
            default: Duration::from_secs(default),
            max: Duration::from_secs(max),
        };
        Self {
            execute: budget(30, 300),
            execute_stream: budget(300, 3600),
            execute_batch: budget(60, 600),
            session_execute: budget(30, 300),
        }
    }
}

impl DeadlineSettings {
    /// The longest any single statement may run: the database-side safety
    /// net set on every connection.
    pub fn longest(&self) -> Duration {
        [
            self.execute.max,
            self.execute_stream.max,
            self.execute_batch.max,
            self.session_execute.max,
        ]
        .into_iter()
        .max()
        .unwrap_or_default()
    }
}

/// Statements each pooled connection keeps prepared by default: sqlx's
/// own default, which keeps the hot statements of most applications
/// prepared. Bounded in bytes by [`DEFAULT_MAX_CACHED_STATEMENT_BYTES`],
/// a full cache costs at most 400 KiB of text per connection in sqlgate;
/// PostgreSQL keeps about 40 times a long `IN` list's text per statement
/// (measured on 15: 66 KB for 1 KiB, 172 KB for 4 KiB), so at most
/// ~17 MB per server process.
const DEFAULT_STATEMENT_CACHE_CAPACITY: usize = 100;

/// The longest statement cached by default, in bytes of text. Application
/// statements, even ORM-generated joins, are mostly shorter; longer ones
/// are usually generated (`IN` lists, multi-row `VALUES`) and often
/// distinct, where a cache slot is rarely reused. Unprepared, a 4 KiB `IN`
/// list cost PostgreSQL 0.75 ms more per call (1.36 ms against 0.61 ms).
const DEFAULT_MAX_CACHED_STATEMENT_BYTES: usize = 4 * 1024;

/// Client connections open at once by default. gRPC clients multiplex
/// their calls over one connection per server, so this covers a thousand
/// client processes; idle, each costs about 33 KiB (measured: 1,000
/// connections, +33 MiB), and it stays below common open-file limits.
const DEFAULT_MAX_CLIENT_CONNECTIONS: u32 = 1024;
