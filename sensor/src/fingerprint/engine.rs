//! The engine: loads rule files once, scores every rule against a message's facts, and returns
//! the best attribution with the evidence that produced it and what the packet gives away.

use std::path::Path;

use crate::{
    escape::{escape_bounded, escape_bytes_into},
    event::Event,
    sip::SipMessage,
};

use super::{
    facts::{Facts, Kind, Packet, Value},
    infer::{
        HostInference, ProcessEstimate, TagInference, TtlInference, estimate_processes, infer_host,
        infer_tag, infer_ttl,
    },
    ipid::{IpIdInference, SourceTracker, SourceView, infer_ip_id},
    rules::{Condition, Rule, RuleError, RuleFile},
    template::{TemplateHash, template_hash, template_text},
};

/// The rules shipped with the sensor.
pub const BUILTIN_RULES: &str = include_str!("../../rules/builtin.toml");

/// Longest observed value shown in one evidence item.
pub(crate) const EVIDENCE_VALUE_MAX: usize = 160;

/// Certainty is never claimed: the best a rule can score.
const MAX_CONFIDENCE: f64 = 0.99;

/// Other matching rules reported beside the winner.
pub(crate) const MAX_ALTERNATIVES: usize = 3;

pub struct Engine {
    rules: Vec<Rule>,
    ruleset: String,
    /// One per distinct predicate (see `Condition::predicate`): the automaton that decides it
    /// over a classification-cache key, built the first time a key needs it.
    pub(crate) automata: Vec<std::sync::OnceLock<Option<super::uniform::Dfa>>>,
    /// `,"ruleset":"..."`, escaped once.
    pub(crate) json_ruleset: String,
}

/// One reason for an attribution: which rule, which field, what test, what was seen.
#[derive(Clone, Debug, PartialEq)]
pub struct Evidence<'e> {
    pub rule: &'e str,
    pub field: &'e str,
    /// `require`, `require_any`, `boost`, `expect`, or `template` for unknown messages.
    pub section: &'static str,
    pub test: &'e str,
    /// The observed value, escaped and bounded.
    pub value: String,
    pub note: Option<&'e str>,
    pub weight: f64,
}

#[derive(Clone, Debug)]
pub struct Alternative<'e> {
    pub rule: &'e Rule,
    pub confidence: f64,
}

/// What the packet gives away about its sender, beside the tool.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Inferences {
    pub tag: Option<TagInference>,
    pub via_host: Option<HostInference>,
    pub contact_host: Option<HostInference>,
    pub processes: Option<ProcessEstimate>,
    pub ttl: Option<TtlInference>,
    pub ip_id: Option<IpIdInference>,
}

/// The engine's verdict on one event.
#[derive(Clone, Debug)]
pub struct Fingerprint<'e> {
    /// The winning rule; `None` = unknown tool.
    pub rule: Option<&'e Rule>,
    pub confidence: f64,
    pub evidence: Vec<Evidence<'e>>,
    /// Stock values the winning rule expected and did not see: how this copy was modified.
    pub modifications: Vec<Evidence<'e>>,
    pub alternatives: Vec<Alternative<'e>>,
    pub template: TemplateHash,
    /// The template itself, escaped, for unknown messages (so a cluster can be read).
    pub template_text: Option<String>,
    pub inferences: Inferences,
    pub ruleset: &'e str,
}

impl Fingerprint<'_> {
    pub fn tool(&self) -> &str {
        self.rule.map_or("unknown", |r| r.tool.as_str())
    }

    pub fn variant(&self) -> Option<&str> {
        self.rule.and_then(|r| r.variant.as_deref())
    }

    pub fn version(&self) -> Option<&str> {
        self.rule.and_then(|r| r.version.as_deref())
    }

    pub fn category(&self) -> &'static str {
        self.rule.map_or("unknown", |r| r.category.as_str())
    }

    pub fn rule_id(&self) -> &str {
        self.rule.map_or("unknown", |r| r.id.as_str())
    }

    /// Attributed to a scanning tool (not benign infrastructure, not unknown).
    pub fn is_scanner(&self) -> bool {
        self.rule
            .is_some_and(|r| r.category == super::rules::Category::Scanner)
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Score {
    pub confidence: f64,
    pub matched: usize,
    /// Which `require_any`, `boost` and `expect` conditions held (rules have at most 64 per
    /// section), so the winner's evidence needs no second evaluation.
    pub any: u64,
    pub boost: u64,
    pub expect: u64,
}

fn mask(conds: &[Condition], holds: &mut impl FnMut(&Condition) -> bool) -> u64 {
    conds
        .iter()
        .enumerate()
        .filter(|(_, c)| holds(c))
        .fold(0, |m, (i, _)| m | 1 << i)
}

pub(crate) fn bit(mask: u64, i: usize) -> bool {
    mask & (1 << i) != 0
}

/// A rule's score given how each of its conditions comes out (`None`: it does not apply). The
/// one scoring for the engine and the classification cache, so that both agree to the bit.
pub(crate) fn score_by(rule: &Rule, mut holds: impl FnMut(&Condition) -> bool) -> Option<Score> {
    if !rule.require_order.iter().all(|&i| holds(&rule.require[i])) {
        return None;
    }
    let any = mask(&rule.require_any, &mut holds);
    if !rule.require_any.is_empty() && any == 0 {
        return None;
    }
    if rule.reject.iter().any(&mut holds) {
        return None;
    }
    let boost = mask(&rule.boost, &mut holds);
    let expect = mask(&rule.expect, &mut holds);
    let mut confidence = rule.confidence;
    let mut matched = rule.require.len() + usize::from(any != 0);
    for (conds, m) in [(&rule.boost, boost), (&rule.expect, expect)] {
        for (i, c) in conds.iter().enumerate() {
            if bit(m, i) {
                confidence += c.weight;
                matched += 1;
            }
        }
    }
    Some(Score {
        confidence: confidence.min(MAX_CONFIDENCE),
        matched,
        any,
        boost,
        expect,
    })
}

/// A selection: the winner with its score, the other matching rules with their confidence.
pub(crate) type Selection<T> = (Option<(T, Score)>, Vec<(T, f64)>);

/// The winner (highest confidence, then most conditions matched, first in rule order) and the
/// other matching rules with their confidence, best first. `T` names a rule.
pub(crate) fn select<T: Copy>(scored: impl Iterator<Item = (T, Score)>) -> Selection<T> {
    let mut best: Option<(T, Score)> = None;
    let mut alternatives: Vec<(T, f64)> = Vec::new();
    for (rule, s) in scored {
        let better = match &best {
            None => true,
            Some((_, b)) => {
                s.confidence > b.confidence
                    || (s.confidence == b.confidence && s.matched > b.matched)
            }
        };
        if better {
            if let Some((prev, ps)) = best.replace((rule, s)) {
                alternatives.push((prev, ps.confidence));
            }
        } else {
            alternatives.push((rule, s.confidence));
        }
    }
    alternatives.sort_by(|a, b| b.1.total_cmp(&a.1));
    alternatives.truncate(MAX_ALTERNATIVES);
    (best, alternatives)
}

/// The winner's evidence and modifications, from the masks its scoring left.
pub(crate) fn winner_evidence<'e>(
    rule: &'e Rule,
    score: &Score,
    facts: &Facts<'_>,
) -> (Vec<Evidence<'e>>, Vec<Evidence<'e>>) {
    let mut evidence_items = Vec::new();
    let mut modifications = Vec::new();
    for c in &rule.require {
        evidence_items.push(evidence(rule, facts, "require", c));
    }
    for (i, c) in rule.require_any.iter().enumerate() {
        if bit(score.any, i) {
            evidence_items.push(evidence(rule, facts, "require_any", c));
        }
    }
    for (i, c) in rule.boost.iter().enumerate() {
        if bit(score.boost, i) {
            evidence_items.push(evidence(rule, facts, "boost", c));
        }
    }
    for (i, c) in rule.expect.iter().enumerate() {
        if bit(score.expect, i) {
            evidence_items.push(evidence(rule, facts, "expect", c));
        } else {
            modifications.push(evidence(rule, facts, "expect", c));
        }
    }
    (evidence_items, modifications)
}

/// The one evidence item of a message no rule matched.
pub(crate) fn unknown_evidence(template: TemplateHash) -> Evidence<'static> {
    Evidence {
        rule: "unknown",
        field: "template",
        section: "template",
        test: UNKNOWN_TEST,
        value: template.hex(),
        note: None,
        weight: 0.0,
    }
}

pub(crate) const UNKNOWN_TEST: &str = "no rule matched: packets with the same structural template \
                                       hash come from the same unnamed tool";

/// The observed value of a condition's field, escaped and bounded, as evidence shows it.
pub(crate) fn render(facts: &Facts<'_>, cond: &Condition) -> String {
    if cond.field.kind() == Kind::List {
        let mut out = String::with_capacity(160);
        for (i, name) in facts.names(&cond.field).enumerate() {
            if i > 0 {
                out.push(',');
            }
            escape_bytes_into(&name[..name.len().min(40)], &mut out);
            if out.len() > EVIDENCE_VALUE_MAX * 4 {
                out.push_str(",...");
                break;
            }
        }
        return out;
    }
    match facts.get(&cond.field) {
        Value::Missing => "(absent)".to_string(),
        Value::Bytes(b) => escape_bounded(b, EVIDENCE_VALUE_MAX),
        Value::Int(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Ip(ip) => ip.to_string(),
        Value::List => String::new(),
    }
}

pub(crate) fn evidence<'e>(
    rule: &'e Rule,
    facts: &Facts<'_>,
    section: &'static str,
    cond: &'e Condition,
) -> Evidence<'e> {
    Evidence {
        rule: &rule.id,
        field: &cond.field_name,
        section,
        test: &cond.describe,
        value: render(facts, cond),
        note: cond.note.as_deref(),
        weight: cond.weight,
    }
}

impl Engine {
    /// The built-in rules only.
    pub fn builtin() -> Result<Self, RuleError> {
        Self::from_texts(&[(BUILTIN_RULES, "builtin")])
    }

    /// The built-in rules plus an operator's file, if given.
    pub fn load(extra: Option<&Path>) -> Result<Self, RuleError> {
        let Some(path) = extra else {
            return Self::builtin();
        };
        let text = std::fs::read_to_string(path).map_err(|error| RuleError::Read {
            path: path.display().to_string(),
            error,
        })?;
        Self::from_texts(&[
            (BUILTIN_RULES, "builtin"),
            (&text, &path.display().to_string()),
        ])
    }

    /// Rule files as (text, origin) pairs; rule ids must be unique across all of them.
    pub fn from_texts(files: &[(&str, &str)]) -> Result<Self, RuleError> {
        let mut rules: Vec<Rule> = Vec::new();
        let mut labels = Vec::new();
        for (text, origin) in files {
            let file = RuleFile::parse(text, origin)?;
            for rule in &file.rules {
                if let Some(first) = rules.iter().find(|r| r.id == rule.id) {
                    return Err(RuleError::Duplicate {
                        origin: origin.to_string(),
                        id: rule.id.clone(),
                        first: first.origin.clone(),
                    });
                }
            }
            let label = file.ruleset.unwrap_or_else(|| origin.to_string());
            labels.push(escape_bounded(label.as_bytes(), 128));
            rules.extend(file.rules);
        }
        // Conditions that read the same field with the same test are one predicate, whichever
        // rule states them: the classification cache decides or evaluates each once.
        let mut identities: Vec<(super::facts::Field, String)> = Vec::new();
        for rule in &mut rules {
            for c in rule.conditions_mut() {
                c.predicate = match identities
                    .iter()
                    .position(|(f, id)| *f == c.field && *id == c.identity)
                {
                    Some(p) => p,
                    None => {
                        identities.push((c.field.clone(), c.identity.clone()));
                        identities.len() - 1
                    }
                };
            }
        }
        let ruleset = labels.join("+");
        Ok(Engine {
            rules,
            json_ruleset: format!(",\"ruleset\":{}", super::rules::json_string(&ruleset)),
            ruleset,
            automata: (0..identities.len())
                .map(|_| std::sync::OnceLock::new())
                .collect(),
        })
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The labels of the loaded rule files, `+`-joined.
    pub fn ruleset(&self) -> &str {
        &self.ruleset
    }

    /// Classifies one event without per-source state.
    pub fn classify<'e>(&'e self, event: &Event<'_>, sip: &SipMessage<'_>) -> Fingerprint<'e> {
        self.classify_packet(sip, Some(Packet::from_event(event)), None)
    }

    /// Classifies one event and updates (and reports) its source's IP-ID behaviour.
    pub fn classify_tracked<'e>(
        &'e self,
        event: &Event<'_>,
        sip: &SipMessage<'_>,
        sources: &mut SourceTracker,
    ) -> Fingerprint<'e> {
        let packet = Packet::from_event(event);
        let view = sources.observe(&packet, event.wall_ns);
        self.classify_packet(sip, Some(packet), Some(view))
    }

    /// The core: any message, with or without packet facts (tests, offline payloads).
    pub fn classify_packet<'e>(
        &'e self,
        sip: &SipMessage<'_>,
        packet: Option<Packet>,
        source: Option<SourceView>,
    ) -> Fingerprint<'e> {
        let facts = Facts::new(sip, packet);
        let scored = self
            .rules
            .iter()
            .filter_map(|rule| score_by(rule, |c| c.holds(&facts)).map(|s| (rule, s)));
        let (best, alternatives) = select(scored);
        let alternatives = alternatives
            .into_iter()
            .map(|(rule, confidence)| Alternative { rule, confidence })
            .collect();
        let template = template_hash(sip);
        let mut fp = Fingerprint {
            rule: best.as_ref().map(|(r, _)| *r),
            confidence: best.as_ref().map_or(0.0, |(_, s)| s.confidence),
            evidence: Vec::new(),
            modifications: Vec::new(),
            alternatives,
            template,
            template_text: None,
            inferences: Inferences::default(),
            ruleset: &self.ruleset,
        };
        match &best {
            Some((rule, score)) => {
                (fp.evidence, fp.modifications) = winner_evidence(rule, score, &facts);
            }
            None => {
                fp.template_text = Some(template_text_of(sip));
                fp.evidence.push(unknown_evidence(template));
            }
        }
        fp.inferences = infer(&facts, fp.rule, source);
        fp
    }
}

/// The template of an unknown message as events show it: escaped, bounded.
pub(crate) fn template_text_of(sip: &SipMessage<'_>) -> String {
    escape_bounded(&template_text(sip), 2048)
}

pub(crate) fn infer(
    facts: &Facts<'_>,
    rule: Option<&Rule>,
    source: Option<SourceView>,
) -> Inferences {
    let packet = facts.packet;
    let constants: &[std::net::IpAddr] = rule.map_or(&[], |r| &r.tool_constants);
    let src_ip = packet.map(|p| p.src_ip);
    Inferences {
        tag: facts
            .sv_tag()
            .as_ref()
            .map(|t| infer_tag(t, packet.map(|p| (p.dst_ip, p.dst_port)))),
        via_host: facts
            .via()
            .filter(|v| !v.host.is_empty())
            .map(|v| infer_host("via.host", v.host, v.port, src_ip, constants)),
        contact_host: facts
            .contact()
            .filter(|c| !c.uri.host.is_empty())
            .map(|c| infer_host("contact.host", c.uri.host, c.uri.port, src_ip, constants)),
        processes: rule.and_then(|r| r.source_port_base).and_then(|base| {
            estimate_processes(
                base,
                facts.via().and_then(|v| v.port),
                packet.map(|p| p.src_port),
            )
        }),
        ttl: packet.map(|p| infer_ttl(p.ttl)),
        ip_id: packet.and_then(|p| infer_ip_id(&p, source)),
    }
}
