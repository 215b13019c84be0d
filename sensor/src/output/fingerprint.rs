//! The `fingerprint` object of an event: the attribution, its evidence, and the inferences.
//! Attacker-derived strings arrive escaped and bounded from the engine; rule text was escaped
//! when the rules were loaded and is borrowed from the engine here. Field names are part of
//! the event schema: add, never rename.

use serde::Serialize;

use crate::fingerprint::{
    Evidence, Fingerprint,
    infer::{HostInference, ProcessEstimate, TagInference, TtlInference},
    ipid::{IpIdBehaviour, IpIdInference},
};

#[derive(Serialize, Debug)]
pub struct FingerprintDoc<'e> {
    /// Tool name, `unknown` when no rule matched.
    pub tool: &'e str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<&'e str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<&'e str>,
    /// `scanner`, `dual-use`, `benign` or `unknown`.
    pub category: &'static str,
    /// 0 to 1 (0 for unknown).
    pub confidence: f64,
    /// The winning rule's id (`unknown` when none).
    pub rule: &'e str,
    pub ruleset: &'e str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub tags: &'e [String],
    pub evidence: Vec<EvidenceDoc<'e>>,
    /// Stock values the rule expected and the packet changed: how this copy was modified.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub modifications: Vec<EvidenceDoc<'e>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub alternatives: Vec<AlternativeDoc<'e>>,
    /// Stable hash of the structural template (16 hex digits).
    pub template_hash: String,
    /// The template itself, for unknown messages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    pub inferences: InferencesDoc,
}

#[derive(Serialize, Debug)]
pub struct EvidenceDoc<'e> {
    pub rule: &'e str,
    pub field: &'e str,
    /// `require`, `require_any`, `boost`, `expect` or `template`.
    pub section: &'static str,
    pub test: &'e str,
    /// The observed value, escaped and bounded.
    pub value: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<&'e str>,
    #[serde(skip_serializing_if = "is_zero")]
    pub weight: f64,
}

fn is_zero(w: &f64) -> bool {
    *w == 0.0
}

#[derive(Serialize, Debug)]
pub struct AlternativeDoc<'e> {
    pub rule: &'e str,
    pub tool: &'e str,
    pub confidence: f64,
}

#[derive(Serialize, Debug, Default)]
pub struct InferencesDoc {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<TagDoc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via_host: Option<HostDoc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contact_host: Option<HostDoc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub processes: Option<ProcessDoc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<TtlDoc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_id: Option<IpIdDoc>,
}

#[derive(Serialize, Debug)]
pub struct TagDoc {
    pub field: &'static str,
    pub encoding: &'static str,
    /// `target`, `extension` or `credentials`.
    pub kind: &'static str,
    pub decoded: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matches_destination: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extension: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    pub note: String,
}

#[derive(Serialize, Debug)]
pub struct HostDoc {
    pub field: &'static str,
    pub host: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub class: &'static str,
    pub note: String,
}

#[derive(Serialize, Debug)]
pub struct ProcessDoc {
    pub base_port: u16,
    pub bound_port: u16,
    pub basis: &'static str,
    pub processes: u32,
    pub note: String,
}

#[derive(Serialize, Debug)]
pub struct TtlDoc {
    pub observed: u8,
    pub initial: u8,
    pub hops: u8,
    pub hint: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caveat: Option<&'static str>,
}

#[derive(Serialize, Debug)]
pub struct IpIdDoc {
    pub id: u16,
    pub df: bool,
    /// This packet alone: `zero`, `fixed_54321`, `masscan_derived`, `non_zero`.
    pub packet: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceDoc>,
    pub hints: Vec<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub caveats: Vec<&'static str>,
}

#[derive(Serialize, Debug)]
pub struct SourceDoc {
    pub packets: u64,
    pub df_packets: u64,
    pub zero_id_packets: u64,
    /// `insufficient`, `zero`, `constant`, `incrementing`, `incrementing_shared`, `random`.
    pub behaviour: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub constant: Option<u16>,
}

impl<'e> EvidenceDoc<'e> {
    fn new(e: Evidence<'e>) -> Self {
        EvidenceDoc {
            rule: e.rule,
            field: e.field,
            section: e.section,
            test: e.test,
            value: e.value,
            note: e.note,
            weight: e.weight,
        }
    }
}

impl TagDoc {
    fn new(t: TagInference) -> Self {
        TagDoc {
            field: t.field,
            encoding: t.encoding,
            kind: t.kind,
            decoded: t.decoded,
            target: t.target,
            matches_destination: t.matches_destination,
            extension: t.extension,
            user: t.user,
            password: t.password,
            note: t.note,
        }
    }
}

impl HostDoc {
    fn new(h: HostInference) -> Self {
        HostDoc {
            field: h.field,
            host: h.host,
            port: h.port,
            class: h.class.as_str(),
            note: h.note,
        }
    }
}

impl ProcessDoc {
    fn new(p: ProcessEstimate) -> Self {
        ProcessDoc {
            base_port: p.base_port,
            bound_port: p.bound_port,
            basis: p.basis,
            processes: p.processes,
            note: p.note,
        }
    }
}

impl TtlDoc {
    fn new(t: TtlInference) -> Self {
        TtlDoc {
            observed: t.observed,
            initial: t.initial,
            hops: t.hops,
            hint: t.hint,
            caveat: t.caveat,
        }
    }
}

impl IpIdDoc {
    fn new(i: IpIdInference) -> Self {
        IpIdDoc {
            id: i.id,
            df: i.df,
            packet: i.packet.as_str(),
            source: i.source.map(|s| SourceDoc {
                packets: s.packets,
                df_packets: s.df_packets,
                zero_id_packets: s.zero_id_packets,
                behaviour: s.behaviour.as_str(),
                step: match s.behaviour {
                    IpIdBehaviour::Incrementing { step, .. } => Some(step),
                    _ => None,
                },
                constant: match s.behaviour {
                    IpIdBehaviour::Constant(v) => Some(v),
                    _ => None,
                },
            }),
            hints: i.hints,
            caveats: i.caveats,
        }
    }
}

/// Two decimals: more would claim precision the scoring does not have.
pub(crate) fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

impl<'e> FingerprintDoc<'e> {
    /// The document of a verdict, copying its observed values.
    pub fn new(fp: &Fingerprint<'e>) -> Self {
        Self::from_fingerprint(fp.clone())
    }

    /// The document of a verdict, taking its strings (no copies: the agent's path).
    pub fn from_fingerprint(fp: Fingerprint<'e>) -> Self {
        let rule = fp.rule;
        let inf = fp.inferences;
        FingerprintDoc {
            tool: rule.map_or("unknown", |r| r.tool.as_str()),
            variant: rule.and_then(|r| r.variant.as_deref()),
            version: rule.and_then(|r| r.version.as_deref()),
            category: rule.map_or("unknown", |r| r.category.as_str()),
            confidence: round2(fp.confidence),
            rule: rule.map_or("unknown", |r| r.id.as_str()),
            ruleset: fp.ruleset,
            tags: rule.map_or(&[], |r| r.tags.as_slice()),
            evidence: fp.evidence.into_iter().map(EvidenceDoc::new).collect(),
            modifications: fp.modifications.into_iter().map(EvidenceDoc::new).collect(),
            alternatives: fp
                .alternatives
                .iter()
                .map(|a| AlternativeDoc {
                    rule: &a.rule.id,
                    tool: &a.rule.tool,
                    confidence: round2(a.confidence),
                })
                .collect(),
            template_hash: fp.template.hex(),
            template: fp.template_text,
            inferences: InferencesDoc {
                tag: inf.tag.map(TagDoc::new),
                via_host: inf.via_host.map(HostDoc::new),
                contact_host: inf.contact_host.map(HostDoc::new),
                processes: inf.processes.map(ProcessDoc::new),
                ttl: inf.ttl.map(TtlDoc::new),
                ip_id: inf.ip_id.map(IpIdDoc::new),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        fingerprint::{Engine, Packet},
        record::Transport,
        sip::SipMessage,
    };

    #[test]
    fn document_names_tool_evidence_and_inferences() {
        let engine = Engine::builtin().unwrap();
        let payload = b"OPTIONS sip:100@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-1047900479;rport\r\nContent-Length: 0\r\nFrom: \"sipvicious\"<sip:100@1.1.1.1>;tag=34353131313634613133633401353835363538393133\r\nAccept: application/sdp\r\nUser-Agent: friendly-scanner\r\nTo: \"sipvicious\"<sip:100@1.1.1.1>\r\nContact: sip:100@127.0.0.1:5060\r\nCSeq: 1 OPTIONS\r\nCall-ID: 965192181434457134540520\r\nMax-Forwards: 70\r\n\r\n";
        let msg = SipMessage::parse(payload);
        let packet = Packet {
            src_ip: "203.0.113.50".parse().unwrap(),
            dst_ip: "69.17.22.74".parse().unwrap(),
            src_port: 5060,
            dst_port: 5060,
            transport: Transport::Udp,
            ttl: 50,
            ip_id: 0,
            dont_fragment: true,
            ip_version: 4,
            tcp_seq: None,
        };
        let fp = engine.classify_packet(&msg, Some(packet), None);
        let json = serde_json::to_value(FingerprintDoc::new(&fp)).unwrap();
        assert_eq!(json["tool"], "sipvicious");
        assert_eq!(json["variant"], "svmap");
        assert_eq!(json["category"], "scanner");
        assert_eq!(json["rule"], "sipvicious-svmap-py2");
        assert!(json["evidence"].as_array().unwrap().iter().all(|e| {
            e["rule"] == "sipvicious-svmap-py2" && e["field"].is_string() && e["test"].is_string()
        }));
        let inf = &json["inferences"];
        assert_eq!(inf["tag"]["target"], "69.17.22.74:5060");
        assert_eq!(inf["tag"]["matches_destination"], true);
        assert_eq!(inf["via_host"]["class"], "loopback_unresolved");
        assert_eq!(inf["processes"]["processes"], 1);
        assert_eq!(inf["ttl"]["initial"], 64);
        assert_eq!(inf["ip_id"]["packet"], "zero");
        assert_eq!(json["template_hash"].as_str().unwrap().len(), 16);
    }
}
