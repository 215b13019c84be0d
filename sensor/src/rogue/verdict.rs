//! The five signs of a rogue SIP daemon, how they are counted, and the verdicts drawn from them.
//!
//! Active probing ([`crate::probe`]) and passive tracking ([`super::Tracker`]) fill the same
//! [`Tally`] per server and transport; the signs, the score and the verdicts are computed here,
//! once, so both modes apply the same rules.

use std::fmt;

use serde::Serialize;

/// What happened to the exchanges with one server over one transport.
///
/// An *attempt* is one exchange tried: a request sent (UDP, or TCP on an established connection),
/// or a TCP connection attempt that never got as far as carrying a request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub attempts: u64,
    /// Requests that expect an answer (ACK excluded) sent to the server.
    pub requests: u64,
    /// Requests answered with a SIP status line.
    pub sip_answered: u64,
    /// SIP answers with a final status code (200-699).
    pub sip_final: u64,
    /// Requests answered with bytes that are not SIP.
    pub non_sip_answered: u64,
    /// Requests after which nothing came back from the daemon: timeouts, and connections the
    /// server closed or reset without a reply.
    pub unanswered: u64,
    /// Of `unanswered`: no answer within the timeout.
    pub reply_timeouts: u64,
    /// Of `unanswered`: the server closed or reset the connection with the request unanswered.
    pub closed_without_reply: u64,
    /// TCP connection attempts, and what became of them.
    pub connects: u64,
    pub accepted: u64,
    pub refused: u64,
    pub connect_timeouts: u64,
    /// ICMP port unreachable (or a TCP-level equivalent seen by a UDP socket): nothing listens.
    /// Active probing only: the sensor does not capture ICMP.
    pub port_unreachable: u64,
    /// ICMP host or network unreachable, administratively prohibited: something in the way.
    pub path_unreachable: u64,
}

impl Tally {
    pub fn add(&mut self, other: &Tally) {
        self.attempts += other.attempts;
        self.requests += other.requests;
        self.sip_answered += other.sip_answered;
        self.sip_final += other.sip_final;
        self.non_sip_answered += other.non_sip_answered;
        self.unanswered += other.unanswered;
        self.reply_timeouts += other.reply_timeouts;
        self.closed_without_reply += other.closed_without_reply;
        self.connects += other.connects;
        self.accepted += other.accepted;
        self.refused += other.refused;
        self.connect_timeouts += other.connect_timeouts;
        self.port_unreachable += other.port_unreachable;
        self.path_unreachable += other.path_unreachable;
    }

    /// Attempts on which the daemon itself said nothing: no SIP, no bytes.
    fn silent_attempts(&self) -> u64 {
        self.unanswered
            + self.refused
            + self.connect_timeouts
            + self.port_unreachable
            + self.path_unreachable
    }

    fn timeouts(&self) -> u64 {
        self.reply_timeouts + self.connect_timeouts
    }
}

/// One of the five signs, with the counts behind it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Sign {
    pub present: bool,
    /// How many attempts showed it ...
    pub count: u64,
    /// ... out of how many.
    pub of: u64,
    /// What was measured, in words.
    pub evidence: String,
}

/// The five signs of the seed, in its order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Signs {
    /// 1. No response generation by the daemon.
    pub no_response: Sign,
    /// 2. Protocol mismatch on the port.
    pub protocol_mismatch: Sign,
    /// 3. Connection establishment failure.
    pub connection_failure: Sign,
    /// 4. No specific error as response.
    pub no_specific_error: Sign,
    /// 5. Frequent timeouts.
    pub frequent_timeouts: Sign,
}

/// Points per present sign: the score is 0 (behaves like a working SIP daemon on every count)
/// to 100 (all five signs).
pub const POINTS_PER_SIGN: u8 = 20;

impl Signs {
    pub fn from_tally(t: &Tally) -> Self {
        let of = t.attempts;
        let silent = t.silent_attempts();
        let failures = t.refused + t.connect_timeouts + t.port_unreachable + t.path_unreachable;
        let timeouts = t.timeouts();
        let without_status = of.saturating_sub(t.sip_answered);
        Self {
            no_response: Sign {
                present: of > 0 && t.sip_answered + t.non_sip_answered == 0,
                count: silent,
                of,
                evidence: format!(
                    "{silent} of {of} attempts got nothing from the daemon ({} unanswered \
                     requests, {} closed without a reply, {} connections refused or timed out, \
                     {} ICMP unreachable)",
                    t.unanswered,
                    t.closed_without_reply,
                    t.refused + t.connect_timeouts,
                    t.port_unreachable + t.path_unreachable
                ),
            },
            protocol_mismatch: Sign {
                present: t.non_sip_answered > 0,
                count: t.non_sip_answered,
                of,
                evidence: format!(
                    "{} of {of} attempts answered with bytes that are not SIP",
                    t.non_sip_answered
                ),
            },
            connection_failure: Sign {
                present: failures > 0,
                count: failures,
                of,
                evidence: format!(
                    "{} of {} TCP connects refused, {} timed out; {} ICMP port unreachable, {} \
                     other ICMP unreachable",
                    t.refused,
                    t.connects,
                    t.connect_timeouts,
                    t.port_unreachable,
                    t.path_unreachable
                ),
            },
            no_specific_error: Sign {
                present: of > 0 && t.sip_answered == 0,
                count: without_status,
                of,
                evidence: format!(
                    "{without_status} of {of} attempts got no SIP status code ({} SIP answers, \
                     {} final)",
                    t.sip_answered, t.sip_final
                ),
            },
            frequent_timeouts: Sign {
                present: timeouts >= 2 && timeouts.saturating_mul(2) >= of,
                count: timeouts,
                of,
                evidence: format!(
                    "{timeouts} of {of} attempts timed out ({} waiting for a reply, {} \
                     connecting)",
                    t.reply_timeouts, t.connect_timeouts
                ),
            },
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &Sign)> {
        [
            ("no_response", &self.no_response),
            ("protocol_mismatch", &self.protocol_mismatch),
            ("connection_failure", &self.connection_failure),
            ("no_specific_error", &self.no_specific_error),
            ("frequent_timeouts", &self.frequent_timeouts),
        ]
        .into_iter()
    }

    pub fn present(&self) -> u8 {
        self.iter().filter(|(_, s)| s.present).count() as u8
    }

    /// 20 points per present sign. Distance from a working SIP daemon, not proof of a rogue
    /// one: a filtered port shows four signs too. The verdict tells them apart.
    pub fn score(&self) -> u8 {
        self.present() * POINTS_PER_SIGN
    }
}

/// Why a server is called rogue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RogueReason {
    /// It answered with bytes that are not SIP, and never in SIP.
    NonSipReply,
    /// It accepted TCP connections and never answered a request in SIP.
    AcceptedNeverAnswered,
    /// It answers, but time after time it does not.
    RepeatedTimeouts,
}

impl RogueReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RogueReason::NonSipReply => "non_sip_reply",
            RogueReason::AcceptedNeverAnswered => "accepted_never_answered",
            RogueReason::RepeatedTimeouts => "repeated_timeouts",
        }
    }
}

/// Requests that must time out, at least half of all, before a daemon that does answer in SIP
/// is called rogue for its timeouts.
pub const REPEATED_TIMEOUTS: u64 = 3;

/// What one transport says about a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TransportVerdict {
    Genuine,
    Rogue,
    NotListening,
    Filtered,
    /// Requests went unanswered with no ICMP error: a silent listener and a dropping firewall
    /// look the same over UDP (nmap's open|filtered).
    OpenOrFiltered,
    /// Contradictory evidence (some connects refused, others timed out, say).
    Inconclusive,
    /// Nothing to judge on: nothing tried, still waiting, or silence the observer cannot read.
    NoEvidence,
}

/// How to read requests that got nothing back at all over UDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Silence {
    /// The observer would have seen an ICMP port unreachable (active probing): silence means
    /// open|filtered.
    OpenOrFiltered,
    /// The observer cannot see ICMP (the passive sensor captures UDP and TCP only): silence says
    /// nothing.
    Unreadable,
}

/// The transport verdict and the rogue reasons, from a tally. The rules, in order:
///
/// 1. rogue if it answered with non-SIP bytes and never in SIP; if it accepted TCP connections
///    and left requests unanswered without ever answering in SIP; or if it answers in SIP but at
///    least [`REPEATED_TIMEOUTS`] requests, and at least half of them, timed out;
/// 2. genuine if it answered in SIP;
/// 3. not listening if connects were refused or ICMP port unreachable came back, and nothing
///    timed out connecting; filtered if connects timed out or ICMP said the path is closed, and
///    nothing was refused; inconclusive if both;
/// 4. unanswered UDP requests: open|filtered or no evidence, per [`Silence`].
pub fn assess(t: &Tally, silence: Silence) -> (TransportVerdict, Vec<RogueReason>) {
    let mut reasons = Vec::new();
    if t.sip_answered == 0 && t.non_sip_answered > 0 {
        reasons.push(RogueReason::NonSipReply);
    }
    if t.sip_answered == 0 && t.accepted > 0 && t.unanswered > 0 {
        reasons.push(RogueReason::AcceptedNeverAnswered);
    }
    if t.sip_answered > 0
        && t.reply_timeouts >= REPEATED_TIMEOUTS
        && t.reply_timeouts.saturating_mul(2) >= t.requests
    {
        reasons.push(RogueReason::RepeatedTimeouts);
    }
    if !reasons.is_empty() {
        return (TransportVerdict::Rogue, reasons);
    }
    if t.sip_answered > 0 {
        return (TransportVerdict::Genuine, reasons);
    }
    let closed = t.refused + t.port_unreachable;
    let blocked = t.connect_timeouts + t.path_unreachable;
    let verdict = match (closed > 0, blocked > 0) {
        (true, false) => TransportVerdict::NotListening,
        (false, true) => TransportVerdict::Filtered,
        (true, true) => TransportVerdict::Inconclusive,
        (false, false) if t.accepted == 0 && t.unanswered > 0 => match silence {
            Silence::OpenOrFiltered => TransportVerdict::OpenOrFiltered,
            Silence::Unreadable => TransportVerdict::NoEvidence,
        },
        (false, false) => TransportVerdict::NoEvidence,
    };
    (verdict, reasons)
}

/// The verdict on a server (an address and port), over all its transports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// It answered in SIP.
    Genuine,
    /// Something listens, and it is not a SIP daemon (or not a working one).
    Rogue,
    /// Nothing listens: refused, or ICMP port unreachable.
    NotListening,
    /// No answer of any kind: packets are dropped on the way or at the host.
    Filtered,
    /// The evidence does not decide.
    Unknown,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Genuine => "genuine",
            Verdict::Rogue => "rogue",
            Verdict::NotListening => "not_listening",
            Verdict::Filtered => "filtered",
            Verdict::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Combines the transports' verdicts:
///
/// 1. any transport rogue: rogue (a rogue listener on the port matters even beside a real
///    daemon on the other transport);
/// 2. any genuine: genuine;
/// 3. transports without evidence are left out; none left: unknown;
/// 4. all not listening: not listening;
/// 5. all filtered or open|filtered, one at least filtered: filtered;
/// 6. anything else: unknown.
pub fn combine(verdicts: impl IntoIterator<Item = TransportVerdict>) -> Verdict {
    let all: Vec<TransportVerdict> = verdicts.into_iter().collect();
    if all.contains(&TransportVerdict::Rogue) {
        return Verdict::Rogue;
    }
    if all.contains(&TransportVerdict::Genuine) {
        return Verdict::Genuine;
    }
    let judged: Vec<TransportVerdict> = all
        .into_iter()
        .filter(|v| *v != TransportVerdict::NoEvidence)
        .collect();
    if judged.is_empty() {
        return Verdict::Unknown;
    }
    if judged.iter().all(|v| *v == TransportVerdict::NotListening) {
        return Verdict::NotListening;
    }
    if judged.iter().all(|v| {
        matches!(
            v,
            TransportVerdict::Filtered | TransportVerdict::OpenOrFiltered
        )
    }) && judged.contains(&TransportVerdict::Filtered)
    {
        return Verdict::Filtered;
    }
    Verdict::Unknown
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requests(n: u64) -> Tally {
        Tally {
            attempts: n,
            requests: n,
            ..Tally::default()
        }
    }

    #[test]
    fn genuine_daemon_shows_no_sign() {
        let t = Tally {
            sip_answered: 3,
            sip_final: 3,
            connects: 3,
            accepted: 3,
            ..requests(3)
        };
        let signs = Signs::from_tally(&t);
        assert_eq!(signs.score(), 0, "{signs:?}");
        assert_eq!(
            assess(&t, Silence::OpenOrFiltered),
            (TransportVerdict::Genuine, vec![])
        );
    }

    #[test]
    fn silent_tcp_listener_is_rogue() {
        let t = Tally {
            unanswered: 3,
            reply_timeouts: 3,
            connects: 3,
            accepted: 3,
            ..requests(3)
        };
        let signs = Signs::from_tally(&t);
        assert!(signs.no_response.present);
        assert!(!signs.protocol_mismatch.present);
        assert!(!signs.connection_failure.present);
        assert!(signs.no_specific_error.present);
        assert!(signs.frequent_timeouts.present);
        assert_eq!(signs.score(), 60);
        assert_eq!(
            assess(&t, Silence::Unreadable),
            (
                TransportVerdict::Rogue,
                vec![RogueReason::AcceptedNeverAnswered]
            )
        );
    }

    #[test]
    fn garbage_is_rogue() {
        let t = Tally {
            non_sip_answered: 3,
            ..requests(3)
        };
        let signs = Signs::from_tally(&t);
        assert!(signs.protocol_mismatch.present && signs.no_specific_error.present);
        assert!(!signs.no_response.present);
        assert_eq!(
            assess(&t, Silence::OpenOrFiltered).1,
            vec![RogueReason::NonSipReply]
        );
    }

    #[test]
    fn closed_filtered_and_silence() {
        let closed = Tally {
            attempts: 3,
            connects: 3,
            refused: 3,
            ..Tally::default()
        };
        assert_eq!(
            assess(&closed, Silence::OpenOrFiltered).0,
            TransportVerdict::NotListening
        );
        let dropped = Tally {
            attempts: 3,
            connects: 3,
            connect_timeouts: 3,
            ..Tally::default()
        };
        assert_eq!(
            assess(&dropped, Silence::OpenOrFiltered).0,
            TransportVerdict::Filtered
        );
        assert!(Signs::from_tally(&dropped).frequent_timeouts.present);
        let udp_silence = Tally {
            unanswered: 3,
            reply_timeouts: 3,
            ..requests(3)
        };
        assert_eq!(
            assess(&udp_silence, Silence::OpenOrFiltered).0,
            TransportVerdict::OpenOrFiltered
        );
        assert_eq!(
            assess(&udp_silence, Silence::Unreadable).0,
            TransportVerdict::NoEvidence
        );
        let mixed = Tally {
            refused: 1,
            connect_timeouts: 1,
            ..closed
        };
        assert_eq!(
            assess(&mixed, Silence::OpenOrFiltered).0,
            TransportVerdict::Inconclusive
        );
    }

    #[test]
    fn flaky_daemon_times_out_again_and_again() {
        let t = Tally {
            sip_answered: 2,
            sip_final: 2,
            unanswered: 4,
            reply_timeouts: 4,
            ..requests(6)
        };
        assert_eq!(
            assess(&t, Silence::Unreadable),
            (TransportVerdict::Rogue, vec![RogueReason::RepeatedTimeouts])
        );
        let lossy = Tally {
            sip_answered: 8,
            unanswered: 2,
            reply_timeouts: 2,
            ..requests(10)
        };
        assert_eq!(
            assess(&lossy, Silence::Unreadable).0,
            TransportVerdict::Genuine
        );
    }

    #[test]
    fn combining_transports() {
        use TransportVerdict as T;
        assert_eq!(combine([T::Rogue, T::Genuine]), Verdict::Rogue);
        assert_eq!(combine([T::Genuine, T::OpenOrFiltered]), Verdict::Genuine);
        assert_eq!(
            combine([T::NotListening, T::NotListening]),
            Verdict::NotListening
        );
        assert_eq!(
            combine([T::NotListening, T::NoEvidence]),
            Verdict::NotListening
        );
        assert_eq!(combine([T::Filtered, T::OpenOrFiltered]), Verdict::Filtered);
        assert_eq!(combine([T::OpenOrFiltered]), Verdict::Unknown);
        assert_eq!(
            combine([T::NotListening, T::OpenOrFiltered]),
            Verdict::Unknown
        );
        assert_eq!(combine([T::NoEvidence]), Verdict::Unknown);
        assert_eq!(combine([]), Verdict::Unknown);
        assert_eq!(combine([T::Inconclusive, T::Filtered]), Verdict::Unknown);
    }
}
