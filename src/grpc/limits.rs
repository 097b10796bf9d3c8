//! Limits per caller and overall: how many `Query` calls, streams and
//! sessions one caller may have in flight (`limits.per_caller.*`), and how
//! many all callers may have together (`limits.max_concurrent_calls`).
//! Past a limit a call is refused at once — RESOURCE_EXHAUSTED with
//! `RetryInfo`, reason `CALLER_LIMIT` or `OVERLOADED` — never queued.
//!
//! [`Limited`] wraps the two services that reach the database (`Query` and
//! `Sessions`). They are served under the call layers, so it runs once the
//! caller is resolved (and, with authentication, authenticated); health,
//! reflection and `Admin` are never shed, so that probes and operators get
//! through an overload. It admits a call before its request is decoded and
//! hands the handler a [`CallSlot`] in the request's extensions; the
//! handler moves it into the task that does the work (the unary unit, the
//! stream's task, the session's task), so a place is given back when the
//! work is over — not when the caller stops waiting for it (a caller that
//! cancels slow statements does not get more of them running).
//!
//! A caller is its identity's name when authentication gave it one, else
//! its address: the IP, so that a client opening more connections (or a
//! flood of ephemeral ports) stays one caller, and for IPv6 its /64, which
//! one client can fill with addresses. On the Unix socket, which has no
//! addresses, it is the peer's user id (the kernel's, not a claim). A caller's entry lives only while
//! it has something in flight, and everything in flight counts toward
//! `limits.max_concurrent_calls`, so the table never holds more callers
//! than that, whatever keys arrive.

use std::{
    collections::HashMap,
    convert::Infallible,
    fmt,
    net::{IpAddr, Ipv6Addr},
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
};

use futures::future::{Either, Ready, ready};
use tonic::{body::Body, server::NamedService};
use tower::Service;

use super::{Peer, observe::Caller};
use crate::{
    config::{CallerLimitSettings, LimitSettings},
    db::transaction::Hold,
    error::Error,
};

/// What a call holds while it runs, by method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `Execute`, `ExecuteBatch`.
    Call,
    /// `ExecuteStream`.
    Stream,
    /// `Sessions/Attach`.
    Session,
}

impl Kind {
    /// The kind of the call to `path` (a method of a limited service).
    fn of(path: &str) -> Self {
        match path {
            "/sqlgate.v1.Query/ExecuteStream" => Kind::Stream,
            "/sqlgate.v1.Sessions/Attach" => Kind::Session,
            _ => Kind::Call,
        }
    }
}

/// Who counts as one caller; see the module.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum CallerKey {
    /// An authenticated identity.
    Name(Arc<str>),
    /// A client without an identity: its IPv4 address, or its IPv6 /64.
    Address(IpAddr),
    /// A client on the Unix socket without an identity: its user id.
    Uid(u32),
    /// None of those (no peer, or a Unix peer whose user the kernel did
    /// not report): all such callers are one.
    Unknown,
}

impl CallerKey {
    /// The caller of `request`, as the call layers resolved it.
    fn of<B>(request: &http::Request<B>) -> Self {
        let caller = Caller::in_extensions(request.extensions());
        if let Some(identity) = caller.identity() {
            return Self::Name(identity.name.clone());
        }
        match caller.peer() {
            Some(Peer::Tcp(address)) => Self::Address(network(address.ip())),
            Some(Peer::Unix { uid: Some(uid) }) => Self::Uid(uid),
            Some(Peer::Unix { uid: None }) | None => Self::Unknown,
        }
    }
}

/// An IPv4 address as it is; an IPv6 one as its /64 (IPv4-mapped IPv6
/// addresses are IPv4).
fn network(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let [a, b, c, d, ..] = v6.segments();
            IpAddr::V6(Ipv6Addr::new(a, b, c, d, 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// As `GetPoolStats.callers` names the caller.
impl fmt::Display for CallerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallerKey::Name(name) => f.write_str(name),
            CallerKey::Address(ip @ IpAddr::V4(_)) => ip.fmt(f),
            CallerKey::Address(ip) => write!(f, "{ip}/64"),
            CallerKey::Uid(uid) => write!(f, "unix:uid={uid}"),
            CallerKey::Unknown => f.write_str("unknown"),
        }
    }
}

/// What one caller has in flight now.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CallerLoad {
    /// `Execute` and `ExecuteBatch` calls.
    pub(crate) calls: u32,
    /// Open streams.
    pub(crate) streams: u32,
    /// Open sessions.
    pub(crate) sessions: u32,
}

impl CallerLoad {
    fn count(self, kind: Kind) -> u32 {
        match kind {
            Kind::Call => self.calls,
            Kind::Stream => self.streams,
            Kind::Session => self.sessions,
        }
    }

    fn count_mut(&mut self, kind: Kind) -> &mut u32 {
        match kind {
            Kind::Call => &mut self.calls,
            Kind::Stream => &mut self.streams,
            Kind::Session => &mut self.sessions,
        }
    }

    fn total(self) -> u32 {
        self.calls + self.streams + self.sessions
    }
}

/// The limits' figures, for `GetPoolStats`.
#[derive(Debug, Clone, Default)]
pub(crate) struct LimitsSnapshot {
    /// Calls, streams and sessions in flight now, all callers.
    pub(crate) in_flight: u32,
    /// Refused since start for `limits.max_concurrent_calls`.
    pub(crate) shed: u64,
    /// Refused since start for a caller's own limit.
    pub(crate) refused: u64,
    /// The callers with the most in flight, busiest first.
    pub(crate) busiest: Vec<(String, CallerLoad)>,
}

/// The counts, under one lock: admitting a call is a few increments.
#[derive(Debug, Default)]
struct Counts {
    in_flight: u32,
    callers: HashMap<CallerKey, CallerLoad>,
}

/// The per-caller and overall limits, and what is in flight now.
#[derive(Debug)]
pub(crate) struct CallerLimits {
    max_in_flight: u32,
    per_caller: CallerLimitSettings,
    counts: Mutex<Counts>,
    shed: AtomicU64,
    refused: AtomicU64,
}

impl CallerLimits {
    /// Limits as `settings` configure them.
    pub(crate) fn new(settings: &LimitSettings) -> Arc<Self> {
        Arc::new(Self {
            max_in_flight: settings.max_concurrent_calls,
            per_caller: settings.per_caller.clone(),
            counts: Mutex::default(),
            shed: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        })
    }

    /// `service`, with every call admitted (or refused) here first.
    pub(crate) fn wrap<S>(self: &Arc<Self>, service: S) -> Limited<S> {
        Limited {
            inner: service,
            limits: self.clone(),
        }
    }

    fn counts(&self) -> MutexGuard<'_, Counts> {
        // Nothing panics while the lock is held; a poisoned lock's counts
        // are still right.
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The caller's limit for `kind`: its value, what it counts, its setting.
    fn limit(&self, kind: Kind) -> (u32, &'static str, &'static str) {
        match kind {
            Kind::Call => (
                self.per_caller.max_calls,
                "calls",
                "limits.per_caller.max_calls",
            ),
            Kind::Stream => (
                self.per_caller.max_streams,
                "streams",
                "limits.per_caller.max_streams",
            ),
            Kind::Session => (
                self.per_caller.max_sessions,
                "sessions",
                "limits.per_caller.max_sessions",
            ),
        }
    }

    /// Takes a place for `key`'s call of `kind`, or says which limit it is
    /// over. The caller's own limit is checked first, so that a greedy
    /// caller's refusals never count as the server's load.
    fn admit(self: &Arc<Self>, key: CallerKey, kind: Kind) -> Result<CallSlot, Error> {
        let (limit, what, setting) = self.limit(kind);
        let mut counts = self.counts();
        let held = counts.callers.get(&key).map_or(0, |load| load.count(kind));
        if held >= limit {
            drop(counts);
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(Error::CallerLimit {
                what,
                limit,
                setting,
            });
        }
        if counts.in_flight >= self.max_in_flight {
            drop(counts);
            self.shed.fetch_add(1, Ordering::Relaxed);
            return Err(Error::Overloaded(self.max_in_flight));
        }
        counts.in_flight += 1;
        *counts
            .callers
            .entry(key.clone())
            .or_default()
            .count_mut(kind) += 1;
        drop(counts);
        Ok(CallSlot(Arc::new(Slot {
            limits: self.clone(),
            key,
            kind,
        })))
    }

    /// Gives back a place; a caller with nothing left in flight leaves the
    /// table.
    fn release(&self, key: &CallerKey, kind: Kind) {
        let mut counts = self.counts();
        counts.in_flight = counts.in_flight.saturating_sub(1);
        if let Some(load) = counts.callers.get_mut(key) {
            let held = load.count_mut(kind);
            *held = held.saturating_sub(1);
            if load.total() == 0 {
                counts.callers.remove(key);
            }
        }
    }

    /// The figures now, with the `top` busiest callers.
    pub(crate) fn snapshot(&self, top: usize) -> LimitsSnapshot {
        let (in_flight, mut busiest) = {
            let counts = self.counts();
            let busiest: Vec<_> = counts
                .callers
                .iter()
                .map(|(key, load)| (key.clone(), *load))
                .collect();
            (counts.in_flight, busiest)
        };
        busiest.sort_by_key(|(_, load)| std::cmp::Reverse(load.total()));
        busiest.truncate(top);
        LimitsSnapshot {
            in_flight,
            shed: self.shed.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            busiest: busiest
                .into_iter()
                .map(|(key, load)| (key.to_string(), load))
                .collect(),
        }
    }
}

/// A call's place under the limits, given back when the last clone is
/// dropped. It travels in the request's extensions (which want `Clone`) to
/// the handler, which moves it into the work's task ([`CallSlot::take`]).
#[derive(Debug, Clone)]
pub(crate) struct CallSlot(Arc<Slot>);

#[derive(Debug)]
struct Slot {
    limits: Arc<CallerLimits>,
    key: CallerKey,
    kind: Kind,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.limits.release(&self.key, self.kind);
    }
}

impl CallSlot {
    /// Takes the slot out of `request`, as a [`Hold`] for the task that
    /// does the call's work; an empty hold outside the limited services.
    pub(crate) fn take<T>(request: &mut tonic::Request<T>) -> Hold {
        request
            .extensions_mut()
            .remove::<CallSlot>()
            .map_or_else(Hold::default, |slot| Hold::new(slot.0))
    }
}

/// A service whose calls are admitted by [`CallerLimits`] first; see the
/// module.
#[derive(Debug, Clone)]
pub(crate) struct Limited<S> {
    inner: S,
    limits: Arc<CallerLimits>,
}

impl<S: NamedService> NamedService for Limited<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for Limited<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>, Error = Infallible>,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Either<Ready<Result<http::Response<Body>, Infallible>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let kind = Kind::of(request.uri().path());
        match self.limits.admit(CallerKey::of(&request), kind) {
            Ok(slot) => {
                request.extensions_mut().insert(slot);
                Either::Right(self.inner.call(request))
            }
            // Answered before the request is read: a refusal costs no decoding.
            Err(refusal) => Either::Left(ready(Ok(tonic::Status::from(refusal).into_http()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::transport::server::TcpConnectInfo;

    use super::*;

    fn limits(max_in_flight: u32, max_calls: u32) -> Arc<CallerLimits> {
        CallerLimits::new(&LimitSettings {
            max_concurrent_calls: max_in_flight,
            per_caller: CallerLimitSettings {
                max_calls,
                ..CallerLimitSettings::default()
            },
            ..LimitSettings::default()
        })
    }

    fn address(ip: &str) -> CallerKey {
        CallerKey::Address(network(ip.parse().expect("ip")))
    }

    #[test]
    fn a_caller_at_its_limit_is_refused_while_another_is_admitted() {
        let limits = limits(10, 2);
        let greedy = address("10.0.0.1");
        let held: Vec<_> = (0..2)
            .map(|_| limits.admit(greedy.clone(), Kind::Call).expect("admitted"))
            .collect();
        let refusal = limits
            .admit(greedy.clone(), Kind::Call)
            .expect_err("refused");
        assert!(matches!(refusal, Error::CallerLimit { what: "calls", .. }));
        // Its streams and sessions count apart.
        let stream = limits.admit(greedy.clone(), Kind::Stream).expect("stream");
        let polite = limits
            .admit(address("10.0.0.2"), Kind::Call)
            .expect("another caller");
        let snapshot = limits.snapshot(10);
        assert_eq!(snapshot.in_flight, 4);
        assert_eq!(snapshot.refused, 1);
        assert_eq!(
            snapshot.busiest[0],
            (
                "10.0.0.1".to_owned(),
                CallerLoad {
                    calls: 2,
                    streams: 1,
                    sessions: 0
                }
            )
        );
        drop((held, stream, polite));
        let snapshot = limits.snapshot(10);
        assert_eq!(snapshot.in_flight, 0);
        assert!(snapshot.busiest.is_empty(), "{snapshot:?}");
    }

    #[test]
    fn past_the_overall_limit_calls_are_shed() {
        let limits = limits(2, 10);
        let first = limits.admit(address("10.0.0.1"), Kind::Call).expect("1");
        let _second = limits.admit(address("10.0.0.2"), Kind::Session).expect("2");
        let refusal = limits
            .admit(address("10.0.0.3"), Kind::Call)
            .expect_err("shed");
        assert!(matches!(refusal, Error::Overloaded(2)));
        assert_eq!(limits.snapshot(10).shed, 1);
        // A slot is given back when its last holder lets go.
        let clone = first.clone();
        drop(first);
        assert!(limits.admit(address("10.0.0.3"), Kind::Call).is_err());
        drop(clone);
        assert!(limits.admit(address("10.0.0.3"), Kind::Call).is_ok());
    }

    #[test]
    fn ports_and_ipv6_interface_ids_are_one_caller() {
        assert_eq!(address("10.0.0.1"), address("::ffff:10.0.0.1"));
        assert_eq!(address("2001:db8:1:2::1"), address("2001:db8:1:2:ffff::9"));
        assert_ne!(address("2001:db8:1:2::1"), address("2001:db8:1:3::1"));
        assert_eq!(address("2001:db8:1:2::1").to_string(), "2001:db8:1:2::/64");
        let mut request = http::Request::new(());
        request.extensions_mut().insert(TcpConnectInfo {
            local_addr: None,
            remote_addr: Some("10.0.0.1:4321".parse().expect("addr")),
        });
        assert_eq!(CallerKey::of(&request), address("10.0.0.1"));
        request
            .extensions_mut()
            .insert(Peer::Unix { uid: Some(1000) });
        assert_eq!(CallerKey::of(&request), CallerKey::Uid(1000));
        assert_eq!(CallerKey::Uid(1000).to_string(), "unix:uid=1000");
        request.extensions_mut().insert(Peer::Unix { uid: None });
        assert_eq!(CallerKey::of(&request), CallerKey::Unknown);
    }
}
