//! The probe's output: a table with the evidence for a terminal, or one JSON object per target.
//!
//! Everything a target sent (reason phrases, Server headers, non-SIP bytes) goes through
//! [`crate::escape`] first: a rogue listener's bytes never reach the terminal as they are.

use std::fmt::Write as _;

use serde::Serialize;

use super::{Outcome, TargetReport, USER_AGENT};
use crate::{
    clock::rfc3339_micros, escape::escape_bounded, output::json::SCHEMA_VERSION,
    rogue::verdict::RogueReason,
};

/// Bytes of a sample shown in the table's evidence.
const SAMPLE_SHOWN: usize = 64;

/// One letter per sign, in the seed's order, `-` when absent: N no response, P protocol
/// mismatch, C connection failure, E no specific error, T frequent timeouts.
pub fn sign_letters(report: &TargetReport) -> String {
    report
        .signs
        .iter()
        .zip(['N', 'P', 'C', 'E', 'T'])
        .map(|((_, sign), letter)| if sign.present { letter } else { '-' })
        .collect()
}

fn short(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Sip { code: 0, .. } => "sip-request".to_string(),
        Outcome::Sip { code, is_final, .. } => {
            if *is_final {
                code.to_string()
            } else {
                format!("{code}(no final)")
            }
        }
        Outcome::NonSip { .. } => "non-sip".to_string(),
        Outcome::Timeout => "timeout".to_string(),
        Outcome::ClosedWithoutReply => "closed".to_string(),
        Outcome::Refused => "refused".to_string(),
        Outcome::ConnectTimeout => "syn-timeout".to_string(),
        Outcome::Unreachable { .. } => "unreachable".to_string(),
        Outcome::LocalError { .. } => "error".to_string(),
    }
}

fn reasons_text(reasons: &[RogueReason]) -> String {
    reasons
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// The table, then each target's evidence for the five signs.
pub fn table(reports: &[TargetReport]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<26} {:<14} {:>5}  {:<5}  {:<34} TCP (OPTIONS INVITE REGISTER)",
        "TARGET", "VERDICT", "SCORE", "SIGNS", "UDP (OPTIONS INVITE REGISTER)"
    );
    for r in reports {
        let per = |transport: crate::record::Transport| {
            r.transports
                .iter()
                .find(|t| t.transport == transport)
                .map(|t| {
                    t.attempts
                        .iter()
                        .map(|a| short(&a.outcome))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_else(|| "-".to_string())
        };
        let _ = writeln!(
            out,
            "{:<26} {:<14} {:>5}  {:<5}  {:<34} {}",
            r.target.to_string(),
            r.verdict.as_str(),
            r.score,
            sign_letters(r),
            per(crate::record::Transport::Udp),
            per(crate::record::Transport::Tcp),
        );
    }
    let _ = writeln!(
        out,
        "\nSIGNS: N no response, P protocol mismatch, C connection failure, E no specific error, \
         T frequent timeouts (20 points each)"
    );
    for r in reports {
        let _ = write!(out, "\n{} {}", r.target, r.verdict.as_str());
        if !r.reasons.is_empty() {
            let _ = write!(out, " ({})", reasons_text(&r.reasons));
        }
        let _ = writeln!(out, ", score {}", r.score);
        for (i, (name, sign)) in r.signs.iter().enumerate() {
            let _ = writeln!(
                out,
                "  {}. {:<19} {:<7} {}",
                i + 1,
                name,
                if sign.present { "present" } else { "absent" },
                sign.evidence
            );
        }
        for t in &r.transports {
            for a in &t.attempts {
                let detail = match &a.outcome {
                    Outcome::Sip {
                        code,
                        reason,
                        server,
                        call_id_matched,
                        ..
                    } => {
                        let mut d = format!("{code} {}", escape_bounded(reason, SAMPLE_SHOWN));
                        if let Some(server) = server {
                            let _ =
                                write!(d, " [server: {}]", escape_bounded(server, SAMPLE_SHOWN));
                        }
                        if !call_id_matched {
                            d.push_str(" [Call-ID not ours]");
                        }
                        d
                    }
                    Outcome::NonSip { sample } => {
                        format!("non-SIP: {}", escape_bounded(sample, SAMPLE_SHOWN))
                    }
                    Outcome::Unreachable { error } | Outcome::LocalError { error } => {
                        format!("{}: {error}", a.outcome.kind())
                    }
                    other => other.kind().to_string(),
                };
                let _ = writeln!(
                    out,
                    "     {} {:<8} sent {} in {} ms: {detail}",
                    a.transport.as_str(),
                    a.method.as_str(),
                    a.sent,
                    a.elapsed_ms
                );
            }
        }
    }
    out
}

/// One target's JSON document (`event_type: probe_result`).
#[derive(Serialize)]
pub struct ProbeDoc<'a> {
    pub timestamp: String,
    pub event_type: &'static str,
    pub schema_version: u32,
    pub user_agent: &'static str,
    /// N, P, C, E, T or `-` per sign, as in the table.
    pub sign_letters: String,
    #[serde(flatten)]
    pub report: &'a TargetReport,
}

impl<'a> ProbeDoc<'a> {
    pub fn new(wall_ns: u64, report: &'a TargetReport) -> Self {
        Self {
            timestamp: rfc3339_micros(wall_ns),
            event_type: "probe_result",
            schema_version: SCHEMA_VERSION,
            user_agent: USER_AGENT,
            sign_letters: sign_letters(report),
            report,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::{
        probe::{Attempt, Method, judge},
        record::Transport,
    };

    fn attempt(transport: Transport, method: Method, outcome: Outcome) -> Attempt {
        Attempt {
            method,
            transport,
            sent: 1,
            elapsed_ms: 3,
            outcome,
        }
    }

    #[test]
    fn hostile_bytes_are_escaped_in_table_and_json() {
        let target: SocketAddr = "203.0.113.12:5060".parse().unwrap();
        let hostile = b"HTTP/1.0 400 Bad\r\nServer: \x1b[2J\x1b]0;owned\x07\x9b".to_vec();
        let report = judge(
            target,
            vec![
                attempt(
                    Transport::Udp,
                    Method::Options,
                    Outcome::NonSip {
                        sample: hostile.clone(),
                    },
                ),
                attempt(
                    Transport::Tcp,
                    Method::Options,
                    Outcome::Sip {
                        code: 404,
                        reason: b"Not \x1b[31mFound".to_vec(),
                        is_final: true,
                        call_id_matched: true,
                        server: Some(b"evil\x1b[0m".to_vec()),
                    },
                ),
            ],
        );
        let text = table(std::slice::from_ref(&report));
        assert!(
            text.bytes()
                .all(|b| b == b'\n' || (0x20..0x7f).contains(&b)),
            "{text}"
        );
        assert!(
            text.contains("non-SIP: HTTP/1.0 400 Bad\\r\\nServer: \\x1b[2J"),
            "{text}"
        );
        assert!(
            text.contains("404 Not \\x1b[31mFound [server: evil\\x1b[0m]"),
            "{text}"
        );
        let json = serde_json::to_string(&ProbeDoc::new(0, &report)).unwrap();
        assert!(
            !json.contains('\u{1b}') && !json.contains("\\u001b"),
            "{json}"
        );
        let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(doc["event_type"], "probe_result");
        assert_eq!(doc["verdict"], "rogue");
        assert_eq!(
            doc["transports"][0]["attempts"][0]["outcome"]["kind"],
            "non_sip"
        );
        assert_eq!(
            crate::escape::unescape_bytes(
                doc["transports"][0]["attempts"][0]["outcome"]["sample"]
                    .as_str()
                    .unwrap()
            )
            .unwrap(),
            hostile
        );
    }

    #[test]
    fn table_shows_every_sign_and_letters() {
        let target: SocketAddr = "203.0.113.14:5060".parse().unwrap();
        let report = judge(
            target,
            Method::ALL
                .iter()
                .map(|m| attempt(Transport::Tcp, *m, Outcome::ConnectTimeout))
                .collect(),
        );
        assert_eq!(report.verdict.as_str(), "filtered");
        assert_eq!(sign_letters(&report), "N-CET");
        let text = table(&[report]);
        for name in [
            "no_response",
            "protocol_mismatch",
            "connection_failure",
            "no_specific_error",
            "frequent_timeouts",
        ] {
            assert!(text.contains(name), "{text}");
        }
        assert!(
            text.contains("syn-timeout syn-timeout syn-timeout"),
            "{text}"
        );
    }
}
