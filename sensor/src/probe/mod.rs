//! Active rogue detection: `sensor probe TARGET[:PORT] ...`.
//!
//! Sends well-formed OPTIONS, INVITE and REGISTER requests ([`message`]) over UDP, TCP or both
//! ([`exchange`]) to the targets the operator names ([`target`]: IP literals only), with
//! retransmissions, timeouts, bounded concurrency and a global packet rate; then measures the
//! five signs and gives each target a verdict with the same rules as the passive tracker
//! ([`crate::rogue::verdict`]). [`report`] prints a table or JSON.
//!
//! Sockets are created on the tokio runtime's threads, so a caller that runs the probe from
//! inside a network namespace uses a current-thread runtime on a thread in that namespace.

pub mod exchange;
pub mod message;
pub mod report;
pub mod target;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde::Serialize;
use tokio::{sync::Semaphore, task::JoinSet, time::Instant};

pub use exchange::{Attempt, Outcome};
pub use message::{Method, USER_AGENT};
pub use target::{Target, TargetError};

use crate::{
    record::Transport,
    rogue::verdict::{self, RogueReason, Signs, Silence, Tally, TransportVerdict, Verdict},
};

/// Which transports to probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transports {
    Udp,
    Tcp,
    Both,
}

impl Transports {
    pub fn list(self) -> &'static [Transport] {
        match self {
            Transports::Udp => &[Transport::Udp],
            Transports::Tcp => &[Transport::Tcp],
            Transports::Both => &[Transport::Udp, Transport::Tcp],
        }
    }
}

#[derive(Clone, Debug)]
pub struct ProbeOptions {
    pub transports: Transports,
    pub methods: Vec<Method>,
    /// RFC 3261 T1, the first UDP retransmission interval (doubling up to T2 = 4 s).
    pub t1: Duration,
    /// UDP retransmissions per request at most.
    pub retransmissions: u32,
    /// How long to wait for an answer to one request.
    pub timeout: Duration,
    /// How long a TCP connect may take.
    pub connect_timeout: Duration,
    /// Targets probed at the same time.
    pub concurrency: usize,
    /// Packets per second over the whole run (requests, retransmissions, SYNs, ACKs).
    pub rate: f64,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        Self {
            transports: Transports::Both,
            methods: Method::ALL.to_vec(),
            t1: Duration::from_millis(500),
            retransmissions: 3,
            timeout: Duration::from_secs(4),
            connect_timeout: Duration::from_secs(3),
            concurrency: 8,
            rate: 20.0,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProbeError {
    #[error("no targets: name at least one ADDRESS[:PORT] or give --targets-file")]
    NoTargets,
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("no methods to send: give at least one of options, invite, register")]
    NoMethods,
    #[error("--concurrency must be between 1 and {MAX_CONCURRENCY}, got {0}")]
    Concurrency(usize),
    #[error("--rate must be a positive number of packets per second, got {0}")]
    Rate(f64),
    #[error("{0} must be more than zero")]
    ZeroDuration(&'static str),
    #[error("{0} targets is more than the {MAX_TARGETS} one run may probe")]
    TooManyTargets(usize),
}

/// Targets probed at once at most.
pub const MAX_CONCURRENCY: usize = 1024;

/// One run's bound on targets: a survey of a few servers, not a scan of networks.
pub const MAX_TARGETS: usize = 65_536;

impl ProbeOptions {
    pub fn validate(&self) -> Result<(), ProbeError> {
        if self.methods.is_empty() {
            return Err(ProbeError::NoMethods);
        }
        if self.concurrency == 0 || self.concurrency > MAX_CONCURRENCY {
            return Err(ProbeError::Concurrency(self.concurrency));
        }
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return Err(ProbeError::Rate(self.rate));
        }
        for (name, d) in [
            ("--t1-ms", self.t1),
            ("--timeout-ms", self.timeout),
            ("--connect-timeout-ms", self.connect_timeout),
        ] {
            if d.is_zero() {
                return Err(ProbeError::ZeroDuration(name));
            }
        }
        Ok(())
    }
}

/// A global packet rate: each packet takes the next free slot, `1/rate` after the previous one.
pub struct RateLimiter {
    interval: Duration,
    next: Mutex<Instant>,
}

impl RateLimiter {
    pub fn new(per_second: f64) -> Self {
        Self {
            interval: Duration::from_secs_f64(1.0 / per_second.max(1e-3)),
            next: Mutex::new(Instant::now()),
        }
    }

    pub async fn acquire(&self) {
        let slot = {
            let mut next = self
                .next
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let now = Instant::now();
            let slot = (*next).max(now);
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

/// What one transport showed.
#[derive(Clone, Debug, Serialize)]
pub struct TransportReport {
    #[serde(serialize_with = "transport_name")]
    pub transport: Transport,
    pub verdict: TransportVerdict,
    pub reasons: Vec<RogueReason>,
    pub counts: Tally,
    pub attempts: Vec<Attempt>,
}

fn transport_name<S: serde::Serializer>(t: &Transport, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(t.as_str())
}

/// The verdict on one target, with its evidence.
#[derive(Clone, Debug, Serialize)]
pub struct TargetReport {
    pub target: SocketAddr,
    pub verdict: Verdict,
    pub reasons: Vec<RogueReason>,
    /// 20 points per sign present, over all transports.
    pub score: u8,
    pub signs: Signs,
    pub transports: Vec<TransportReport>,
}

/// The tally of one transport's attempts (see [`Tally`] for what each count means).
pub fn tally(attempts: &[Attempt]) -> Tally {
    let mut t = Tally::default();
    for a in attempts {
        if matches!(a.outcome, Outcome::LocalError { .. }) {
            continue;
        }
        t.attempts += 1;
        let connected = match a.transport {
            Transport::Udp => true,
            Transport::Tcp => {
                t.connects += 1;
                !matches!(
                    a.outcome,
                    Outcome::Refused | Outcome::ConnectTimeout | Outcome::Unreachable { .. }
                )
            }
        };
        if connected {
            t.requests += 1;
            if a.transport == Transport::Tcp {
                t.accepted += 1;
            }
        }
        match &a.outcome {
            Outcome::Sip { is_final, .. } => {
                t.sip_answered += 1;
                t.sip_final += u64::from(*is_final);
            }
            Outcome::NonSip { .. } => t.non_sip_answered += 1,
            Outcome::Timeout => {
                t.unanswered += 1;
                t.reply_timeouts += 1;
            }
            Outcome::ClosedWithoutReply => {
                t.unanswered += 1;
                t.closed_without_reply += 1;
            }
            Outcome::Refused => match a.transport {
                Transport::Udp => t.port_unreachable += 1,
                Transport::Tcp => t.refused += 1,
            },
            Outcome::ConnectTimeout => t.connect_timeouts += 1,
            Outcome::Unreachable { .. } => t.path_unreachable += 1,
            Outcome::LocalError { .. } => {}
        }
    }
    t
}

/// Judges a target from its attempts (grouped by transport, in the order given).
pub fn judge(target: SocketAddr, attempts: Vec<Attempt>) -> TargetReport {
    let mut transports: Vec<TransportReport> = Vec::new();
    for attempt in attempts {
        match transports
            .iter_mut()
            .find(|t| t.transport == attempt.transport)
        {
            Some(t) => t.attempts.push(attempt),
            None => transports.push(TransportReport {
                transport: attempt.transport,
                verdict: TransportVerdict::NoEvidence,
                reasons: Vec::new(),
                counts: Tally::default(),
                attempts: vec![attempt],
            }),
        }
    }
    let mut total = Tally::default();
    let mut reasons = Vec::new();
    for t in &mut transports {
        t.counts = tally(&t.attempts);
        // The probe would have seen ICMP port unreachable, so UDP silence means open|filtered.
        (t.verdict, t.reasons) = verdict::assess(&t.counts, Silence::OpenOrFiltered);
        total.add(&t.counts);
        reasons.extend(t.reasons.iter().copied());
    }
    reasons.sort();
    reasons.dedup();
    let signs = Signs::from_tally(&total);
    TargetReport {
        target,
        verdict: verdict::combine(transports.iter().map(|t| t.verdict)),
        reasons,
        score: signs.score(),
        signs,
        transports,
    }
}

/// Probes one target: each transport in turn, each method in turn.
pub async fn probe_target(
    target: Target,
    options: &ProbeOptions,
    limiter: &RateLimiter,
) -> TargetReport {
    let mut attempts = Vec::new();
    for transport in options.transports.list() {
        for method in &options.methods {
            attempts.push(match transport {
                Transport::Udp => exchange::udp(target.0, *method, options, limiter).await,
                Transport::Tcp => exchange::tcp(target.0, *method, options, limiter).await,
            });
        }
    }
    judge(target.0, attempts)
}

/// Probes every target, at most `concurrency` at a time; reports come back in target order.
pub async fn probe_all(
    targets: &[Target],
    options: &ProbeOptions,
) -> Result<Vec<TargetReport>, ProbeError> {
    options.validate()?;
    if targets.is_empty() {
        return Err(ProbeError::NoTargets);
    }
    if targets.len() > MAX_TARGETS {
        return Err(ProbeError::TooManyTargets(targets.len()));
    }
    let options = Arc::new(options.clone());
    let limiter = Arc::new(RateLimiter::new(options.rate));
    let slots = Arc::new(Semaphore::new(options.concurrency));
    let mut tasks = JoinSet::new();
    for (index, target) in targets.iter().copied().enumerate() {
        let (options, limiter, slots) = (options.clone(), limiter.clone(), slots.clone());
        tasks.spawn(async move {
            // The semaphore is never closed, so acquiring cannot fail; if it ever did, probing
            // without a slot is still bounded by the rate limit.
            let _slot = slots.acquire_owned().await.ok();
            (index, probe_target(target, &options, &limiter).await)
        });
    }
    let mut reports: Vec<Option<TargetReport>> = vec![None; targets.len()];
    while let Some(done) = tasks.join_next().await {
        // A task that panicked (a bug) leaves its slot empty; its target is then reported
        // unknown, with no attempts, rather than lost.
        if let Ok((index, report)) = done {
            reports[index] = Some(report);
        }
    }
    Ok(reports
        .into_iter()
        .zip(targets)
        .map(|(r, t)| r.unwrap_or_else(|| judge(t.0, Vec::new())))
        .collect())
}
