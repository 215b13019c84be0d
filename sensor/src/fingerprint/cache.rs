//! The classification cache: rule evaluation once per message template, not once per packet.
//!
//! A scanner repeats its template thousands of times. For each template, met through its key
//! ([`super::key`]), the cache works out once which predicates (conditions, shared between
//! rules) the key decides ([`super::uniform`]), which rules that rules out, and which
//! predicates remain to be evaluated per packet: values that vary (numbers, decoded tags,
//! addresses, ports, TTL, IP-ID, fields compared with each other) and text the key does not
//! pin down. Per packet only those run; the scoring and the choice of the winner are then
//! remembered per outcome of the remaining predicates.
//!
//! Most packets of a template differ from its first only in the values of their digits, or in
//! random letters at the same places. The cache keeps that first packet's parse
//! ([`super::recall`]): such a packet is found by its payload, without being parsed or
//! building its key, and gets the parse, the places of its fields and the entry.
//!
//! The verdict is by construction the engine's own ([`Engine::classify_packet`]): the same
//! scoring function reads the same outcomes. `tests::cache_changes_no_attribution` and the
//! corpus test check it on every packet they have.

use std::{
    cell::{OnceCell, RefCell},
    collections::HashMap,
};

use crate::sip::{SipMessage, places::Place};

use super::{
    engine::{
        Alternative, Engine, Fingerprint, Inferences, MAX_ALTERNATIVES, Score, infer, score_by,
        select, template_text_of, unknown_evidence, winner_evidence,
    },
    facts::{Facts, KeyBearing, Value, number_of},
    ipid::SourceView,
    key::{self, Item, KeyBuilder},
    recall::{Recall, Recalled},
    rules::{Condition, Op},
    template::{TemplateHash, template_hash},
    uniform,
};

/// Decisions of a predicate over a value's items kept ([`ClassCache`]'s `decided`); when full,
/// all are forgotten.
const DECIDED_KEPT: usize = 4096;
/// Templates kept; beyond, the least recently used (clock) is dropped.
pub const DEFAULT_CAPACITY: usize = 1024;
/// Outcome combinations of the per-packet predicates remembered per template.
const MAX_DECISIONS: usize = 32;
/// Per-packet predicates a template may leave (one bit each in the outcome word); a template
/// that leaves more is evaluated in full for every packet.
const MAX_RESIDUAL: usize = 128;

/// What the cache did, for the agent's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheCounters {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    /// Messages classified without the cache (key too long, or its slot held by another key).
    pub bypassed: u64,
    /// Misses of a key not met within the cache's recent reach: classified in full, and the
    /// entry built only if the key comes again ([`Doorkeeper`]).
    pub unadmitted: u64,
}

/// The engine's verdict on one message, by rule index; the evidence is read from the message
/// when the verdict is written ([`ClassCache::fingerprint`]).
#[derive(Clone, Copy, Debug)]
pub struct Verdict {
    pub winner: Option<(u16, Score)>,
    alternatives: [(u16, f64); MAX_ALTERNATIVES],
    alternative_count: u8,
    pub template: TemplateHash,
    /// The cache entry the verdict came from (for the template text of unknown messages).
    entry: Option<u32>,
}

impl Verdict {
    pub fn alternatives(&self) -> &[(u16, f64)] {
        &self.alternatives[..usize::from(self.alternative_count)]
    }

    pub fn confidence(&self) -> f64 {
        self.winner.map_or(0.0, |(_, s)| s.confidence)
    }

    fn of(decision: &Decision, template: TemplateHash, entry: Option<u32>) -> Self {
        Verdict {
            winner: decision.winner,
            alternatives: decision.alternatives,
            alternative_count: decision.alternative_count,
            template,
            entry,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Decision {
    winner: Option<(u16, Score)>,
    alternatives: [(u16, f64); MAX_ALTERNATIVES],
    alternative_count: u8,
}

impl Decision {
    fn from_scores(scored: impl Iterator<Item = (u16, Score)>) -> Self {
        let (winner, alternatives) = select(scored);
        let mut d = Decision {
            winner,
            alternatives: [(0, 0.0); MAX_ALTERNATIVES],
            alternative_count: alternatives.len() as u8,
        };
        d.alternatives[..alternatives.len()].copy_from_slice(&alternatives);
        d
    }
}

/// A condition, by place: rule index, section (0 require .. 4 reject), index in the section.
#[derive(Clone, Copy, Debug)]
struct CondRef {
    rule: u16,
    section: u8,
    index: u8,
}

impl CondRef {
    fn get(self, engine: &Engine) -> &Condition {
        let rule = &engine.rules()[usize::from(self.rule)];
        let section = match self.section {
            0 => &rule.require,
            1 => &rule.require_any,
            2 => &rule.boost,
            3 => &rule.expect,
            _ => &rule.reject,
        };
        &section[usize::from(self.index)]
    }
}

/// What a predicate is for one template.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Known(bool),
    /// Evaluated per packet: its bit in the residual outcome word.
    Residual(u8),
    /// Belongs only to rules the template rules out.
    Unused,
}

struct Entry {
    hash: u64,
    key: Box<[u8]>,
    template: TemplateHash,
    template_text: OnceCell<String>,
    /// Per predicate.
    outcomes: Box<[Outcome]>,
    /// Rules the key does not rule out, in engine order.
    alive: Box<[u16]>,
    /// The predicates evaluated per packet, one condition each.
    residual: Box<[CondRef]>,
    decisions: Vec<(u128, Decision)>,
    referenced: bool,
    /// Which entry this is (slots are reused): recalled templates point at an entry and a
    /// generation.
    generation: u32,
}

/// Per-template verdicts; owned by one pipeline (not shared between threads).
pub struct ClassCache {
    builder: KeyBuilder,
    index: HashMap<u64, u32, BuildIdentity>,
    entries: Vec<Entry>,
    capacity: usize,
    hand: usize,
    /// Templates met (packets that differ only in the values of digits), with their parse and
    /// entry: most packets find their entry there without being parsed or building their key.
    recall: Recall,
    generations: u32,
    doorkeeper: Doorkeeper,
    /// What [`uniform::decide`] said, by predicate and the value's items: templates share most
    /// of their values (a tool's User-Agent, its Via parameters), and deciding one over an
    /// automaton costs more than building the rest of an entry.
    decided: RefCell<HashMap<u64, Decided, BuildIdentity>>,
    pub counters: CacheCounters,
}

/// A predicate decided over a value's items (by the hash of both).
struct Decided {
    predicate: usize,
    items: Box<[Item]>,
    test: Option<bool>,
}

/// The hash of a predicate and a value's items, for [`Decided`].
fn items_hash(predicate: usize, items: &[Item]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    items
        .iter()
        .fold((predicate as u64).wrapping_mul(K), |h, item| {
            let word = match *item {
                Item::Byte(b) => u64::from(b),
                Item::Run { classes, min, max } => {
                    1 << 48 | u64::from(classes) << 32 | u64::from(min) << 16 | u64::from(max)
                }
            };
            (h ^ word).wrapping_mul(K).rotate_left(29)
        })
}

/// Which keys were met once recently: a key gets an entry only at its second sighting.
///
/// Building an entry works out every predicate over every string the key allows, which costs
/// far more than evaluating every rule on one message (the fingerprint benchmark's template
/// flood stage, every key admitted: about 34 us against 3 to 4 us). A sender that varies its message so that no template
/// repeats would otherwise pay that price on every packet and bring the agent down to a small
/// fraction of its rate. With the doorkeeper such a message costs a full evaluation, as without
/// the cache, while a scanner's template, repeated thousands of times, gets its entry at its
/// second packet.
///
/// A Bloom filter of two bits per key, eight bits per cache entry, emptied after as many first
/// sightings as the cache has entries: "recently" means within the last that many templates
/// met once. (A direct-mapped table of keys was tried first: two templates sharing a slot and
/// taking turns evicted each other from it and never got an entry.) While the filter is full,
/// about one key in twenty that was never met passes for one that was, and gets its entry at
/// its first sighting: only the cost of a miss without the doorkeeper.
struct Doorkeeper {
    bits: Box<[u64]>,
    /// First sightings since the filter was last emptied, and how many it takes.
    recorded: usize,
    limit: usize,
}

impl Doorkeeper {
    fn new(capacity: usize) -> Self {
        let bits = (capacity * 8).next_power_of_two().max(64);
        Doorkeeper {
            bits: vec![0; bits / 64].into(),
            recorded: 0,
            limit: capacity,
        }
    }

    /// Whether `hash` was met since the filter was last emptied; records it if not.
    fn admit(&mut self, hash: u64) -> bool {
        let mask = self.bits.len() * 64 - 1;
        // The key hash is uniform in all its bits: its two halves are the two positions.
        let positions = [hash as usize & mask, (hash >> 32) as usize & mask];
        let set = |bits: &[u64], i: usize| bits[i / 64] & (1 << (i % 64)) != 0;
        if positions.iter().all(|&i| set(&self.bits, i)) {
            return true;
        }
        if self.recorded >= self.limit {
            self.bits.fill(0);
            self.recorded = 0;
        }
        self.recorded += 1;
        for i in positions {
            self.bits[i / 64] |= 1 << (i % 64);
        }
        false
    }
}

/// Recalled templates kept per cache entry (an entry has one per combination of its digit-run
/// lengths, and one per packet recognised by its shape): 4,096 in all, each about the size of
/// its message and its header table, and twice the message's size more for a request learnt
/// from a parse (its shape). Before shapes, on the offline benchmark's capture (19 k templates,
/// 377-byte messages), 8 per entry took 8.7 MB more per analyst than 4 and saved 0.1 % of the
/// instructions; 2 saved 3.4 MB and cost 0.2 %.
const TEMPLATES_PER_ENTRY: usize = 4;

/// The map's keys are already hashes.
#[derive(Clone, Copy, Default)]
pub(super) struct BuildIdentity;

pub(super) struct Identity(u64);

impl std::hash::BuildHasher for BuildIdentity {
    type Hasher = Identity;
    fn build_hasher(&self) -> Identity {
        Identity(0)
    }
}

impl std::hash::Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl Default for ClassCache {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl ClassCache {
    pub fn new(capacity: usize) -> Self {
        ClassCache {
            builder: KeyBuilder::default(),
            index: HashMap::with_capacity_and_hasher(capacity, BuildIdentity),
            entries: Vec::with_capacity(capacity.min(4096)),
            capacity: capacity.max(1),
            hand: 0,
            recall: Recall::new(capacity.max(1) * TEMPLATES_PER_ENTRY),
            generations: 0,
            doorkeeper: Doorkeeper::new(capacity.max(1)),
            decided: RefCell::new(HashMap::with_hasher(BuildIdentity)),
            counters: CacheCounters::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Parses `msg` ([`SipMessage::unparsed`]), or, for a template met before, lays that
    /// template's parse over it ([`super::recall`]). What it returns goes to
    /// [`Facts::with_places`] and [`ClassCache::classify`].
    pub fn parse(&mut self, msg: &mut SipMessage<'_>) -> Option<Recalled> {
        self.recall.parse(msg)
    }

    /// The engine's verdict on a message; `recalled` is what [`ClassCache::parse`] returned for
    /// it (`None` for a message parsed otherwise).
    pub fn classify(
        &mut self,
        engine: &Engine,
        facts: &Facts<'_>,
        recalled: Option<&Recalled>,
    ) -> Verdict {
        if let Some(r) = recalled
            && let Some(kept) = self.recall.kept_mut(r)
            && let Some(entry) = self.entries.get_mut(kept.entry as usize)
            && entry.generation == kept.generation
        {
            self.counters.hits += 1;
            return verdict(engine, facts, kept.entry, entry, Some(&mut kept.checks));
        }
        let Some(slot) = self.slot(engine, facts) else {
            return evaluate_all(engine, facts);
        };
        let entry = &mut self.entries[slot as usize];
        let checks = match recalled {
            Some(r) => self.recall.kept_mut(r).map(|kept| {
                *kept = Kept::new(slot, entry.generation);
                &mut kept.checks
            }),
            None => {
                self.recall
                    .learn(&mut self.builder, facts, Kept::new(slot, entry.generation));
                None
            }
        };
        verdict(engine, facts, slot, entry, checks)
    }

    /// The entry of the message's key, made if new; `None` when the message goes without the
    /// cache (counted).
    fn slot(&mut self, engine: &Engine, facts: &Facts<'_>) -> Option<u32> {
        let Some(key) = self.builder.build(facts.msg) else {
            self.counters.bypassed += 1;
            return None;
        };
        let hash = key::hash(key);
        Some(match self.index.get(&hash) {
            Some(&i) if *self.entries[i as usize].key == *key => {
                self.counters.hits += 1;
                i
            }
            Some(_) => {
                self.counters.bypassed += 1;
                return None;
            }
            None => {
                self.counters.misses += 1;
                if !self.doorkeeper.admit(hash) {
                    self.counters.unadmitted += 1;
                    return None;
                }
                let entry = self.build_entry(engine, facts, hash);
                self.insert(entry)
            }
        })
    }

    fn insert(&mut self, mut entry: Entry) -> u32 {
        self.generations = self.generations.wrapping_add(1);
        entry.generation = self.generations;
        if self.entries.len() < self.capacity {
            self.entries.push(entry);
            let i = (self.entries.len() - 1) as u32;
            self.index.insert(self.entries[i as usize].hash, i);
            return i;
        }
        // Clock: pass over recently used entries once, take the first that was not.
        loop {
            let i = self.hand;
            self.hand = (self.hand + 1) % self.entries.len();
            if std::mem::take(&mut self.entries[i].referenced) {
                continue;
            }
            self.counters.evictions += 1;
            self.index.remove(&self.entries[i].hash);
            self.index.insert(entry.hash, i as u32);
            self.entries[i] = entry;
            return i as u32;
        }
    }

    /// Works out what the key decides. `self.builder` holds the message's key and regions.
    fn build_entry(&self, engine: &Engine, facts: &Facts<'_>, hash: u64) -> Entry {
        let rules = engine.rules();
        let mut seen: Vec<Option<CondRef>> = vec![None; engine.automata.len()];
        for (r, rule) in rules.iter().enumerate() {
            for (section, conds) in [
                &rule.require,
                &rule.require_any,
                &rule.boost,
                &rule.expect,
                &rule.reject,
            ]
            .into_iter()
            .enumerate()
            {
                for (i, c) in conds.iter().enumerate() {
                    seen[c.predicate].get_or_insert(CondRef {
                        rule: r as u16,
                        section: section as u8,
                        index: i as u8,
                    });
                }
            }
        }
        // What the key decides, worked out only for the predicates that matter: a rule's
        // `require`, `reject` and `require_any` first, the rest only for rules still in play.
        let mut memo: Vec<Option<Option<bool>>> = vec![None; seen.len()];
        let mut known = |c: &Condition| -> Option<bool> {
            *memo[c.predicate].get_or_insert_with(|| {
                let c = seen[c.predicate].map_or(c, |r| r.get(engine));
                self.known_outcome(engine, c.predicate, c, facts)
            })
        };
        let alive: Vec<u16> = rules
            .iter()
            .enumerate()
            .filter(|(_, rule)| {
                !rule.require.iter().any(|c| known(c) == Some(false))
                    && !rule.reject.iter().any(|c| known(c) == Some(true))
                    && (rule.require_any.is_empty()
                        || rule.require_any.iter().any(|c| known(c) != Some(false)))
            })
            .map(|(r, _)| r as u16)
            .collect();
        let mut outcomes: Vec<Outcome> = vec![Outcome::Unused; seen.len()];
        let mut residual = Vec::new();
        for &r in &alive {
            for c in rules[usize::from(r)].conditions() {
                let p = c.predicate;
                if outcomes[p] != Outcome::Unused {
                    continue;
                }
                outcomes[p] = match known(c) {
                    Some(b) => Outcome::Known(b),
                    None => {
                        residual.push(seen[p].unwrap_or(CondRef {
                            rule: r,
                            section: 0,
                            index: 0,
                        }));
                        Outcome::Residual((residual.len() - 1).min(255) as u8)
                    }
                };
            }
        }
        Entry {
            hash,
            key: self.builder_key().into(),
            template: template_hash(facts.msg),
            template_text: OnceCell::new(),
            outcomes: outcomes.into(),
            alive: alive.into(),
            residual: residual.into(),
            decisions: Vec::new(),
            referenced: false,
            generation: 0,
        }
    }

    fn builder_key(&self) -> Vec<u8> {
        self.builder.last_key().to_vec()
    }

    /// The predicate's outcome for every message with this key, when the key decides it.
    fn known_outcome(
        &self,
        engine: &Engine,
        predicate: usize,
        c: &Condition,
        facts: &Facts<'_>,
    ) -> Option<bool> {
        if matches!(c.op, Op::SameAs(_)) {
            return None;
        }
        match c.field.key_bearing() {
            KeyBearing::PerPacket => None,
            KeyBearing::Fixed => Some(c.holds(facts)),
            KeyBearing::Span => {
                let value = match facts.get(&c.field) {
                    Value::Bytes(v) => v,
                    // Absent for every message of the key.
                    _ => return Some(c.holds(facts)),
                };
                if matches!(c.op, Op::Present(_)) {
                    return Some(c.holds(facts));
                }
                let items = self.builder.items(facts.msg, value)?;
                let dfa = || {
                    engine.automata[predicate]
                        .get_or_init(|| uniform::build(&c.op))
                        .as_ref()
                };
                let hash = items_hash(predicate, &items);
                let mut decided = self.decided.borrow_mut();
                let test = match decided.get(&hash) {
                    Some(d) if d.predicate == predicate && *d.items == *items => d.test,
                    _ => {
                        let test = uniform::decide(&c.op, &items, dfa);
                        if decided.len() >= DECIDED_KEPT {
                            decided.clear();
                        }
                        let items = items.into();
                        decided.insert(
                            hash,
                            Decided {
                                predicate,
                                items,
                                test,
                            },
                        );
                        test
                    }
                };
                test.map(|test| test != c.negate)
            }
        }
    }

    /// The verdict as the engine writes it: rules, evidence with the observed values, template,
    /// inferences.
    pub fn fingerprint<'e>(
        &self,
        engine: &'e Engine,
        verdict: &Verdict,
        facts: &Facts<'_>,
        source: Option<SourceView>,
    ) -> Fingerprint<'e> {
        let rules = engine.rules();
        let rule = verdict.winner.map(|(r, _)| &rules[usize::from(r)]);
        let mut fp = Fingerprint {
            rule,
            confidence: verdict.confidence(),
            evidence: Vec::new(),
            modifications: Vec::new(),
            alternatives: verdict
                .alternatives()
                .iter()
                .map(|&(r, confidence)| Alternative {
                    rule: &rules[usize::from(r)],
                    confidence,
                })
                .collect(),
            template: verdict.template,
            template_text: None,
            inferences: Inferences::default(),
            ruleset: engine.ruleset(),
        };
        match (rule, &verdict.winner) {
            (Some(rule), Some((_, score))) => {
                (fp.evidence, fp.modifications) = winner_evidence(rule, score, facts);
            }
            _ => {
                fp.template_text = Some(self.template_text(verdict, facts));
                fp.evidence.push(unknown_evidence(verdict.template));
            }
        }
        fp.inferences = infer(facts, rule, source);
        fp
    }

    /// The escaped template of an unknown message (kept with its cache entry).
    pub fn template_text(&self, verdict: &Verdict, facts: &Facts<'_>) -> String {
        match verdict.entry.and_then(|e| self.entries.get(e as usize)) {
            Some(entry) => entry
                .template_text
                .get_or_init(|| template_text_of(facts.msg))
                .clone(),
            None => template_text_of(facts.msg),
        }
    }
}

/// The verdict from entry `slot`: its per-packet predicates evaluated on this message (through
/// the recalled template's checks, made on first need, when it came recalled).
fn verdict(
    engine: &Engine,
    facts: &Facts<'_>,
    slot: u32,
    entry: &mut Entry,
    checks: Option<&mut Option<Checks>>,
) -> Verdict {
    entry.referenced = true;
    if entry.residual.len() > MAX_RESIDUAL {
        return evaluate_all(engine, facts);
    }
    let bits = match checks {
        Some(checks) => checks
            .get_or_insert_with(|| Checks::compile(engine, &entry.residual, facts))
            .bits(engine, facts),
        None => residual_bits(engine, &entry.residual, facts),
    };
    if let Some((_, d)) = entry.decisions.iter().find(|(b, _)| *b == bits) {
        return Verdict::of(d, entry.template, Some(slot));
    }
    let decision = decide(engine, &entry.outcomes, &entry.alive, bits);
    if entry.decisions.len() < MAX_DECISIONS {
        entry.decisions.push((bits, decision));
    }
    Verdict::of(&decision, entry.template, Some(slot))
}

/// What a recalled template keeps of the classification cache: the entry of its key, that
/// entry's generation when the template met it, and the entry's per-packet predicates as the
/// template needs them evaluated (made for that entry).
pub(super) struct Kept {
    pub entry: u32,
    pub generation: u32,
    pub checks: Option<Checks>,
}

impl Kept {
    pub fn new(entry: u32, generation: u32) -> Self {
        Kept {
            entry,
            generation,
            checks: None,
        }
    }
}

/// The outcome word of an entry's per-packet predicates, each evaluated on the message.
fn residual_bits(engine: &Engine, residual: &[CondRef], facts: &Facts<'_>) -> u128 {
    let mut bits = 0u128;
    for (i, c) in residual.iter().enumerate() {
        if c.get(engine).holds(facts) {
            bits |= 1 << i;
        }
    }
    bits
}

/// An entry's per-packet predicates as one recalled template needs them evaluated. The
/// template's packets have every field at the same place and differ only in digits (not right
/// after a letter: the digits it masks), so a text condition on a field without such a digit
/// has one outcome for all of them, and one on a field with some is a test of the bytes at
/// that place, without finding the field again.
pub(super) struct Checks {
    /// Outcome bits the template decides.
    fixed: u128,
    /// The others: their bit, and how to evaluate them.
    varying: Box<[(u8, Check)]>,
}

#[derive(Clone, Copy)]
enum Check {
    /// A text condition on the bytes at a place.
    Bytes { at: Place, cond: CondRef },
    /// A condition on the number read from the text at a place.
    Number { at: Place, cond: CondRef },
    /// A `same_as` condition between the bytes at two places.
    Same {
        at: Place,
        other: Place,
        negate: bool,
    },
    /// Evaluated as the engine does.
    Facts(CondRef),
}

impl Checks {
    fn compile(engine: &Engine, residual: &[CondRef], facts: &Facts<'_>) -> Self {
        let bytes = facts.msg.bytes();
        let mut fixed = 0u128;
        let mut varying = Vec::new();
        for (i, &cref) in residual.iter().enumerate() {
            let c = cref.get(engine);
            // The place of a text value in the message, and whether its packets may differ
            // there; `None` for values that are not such text.
            let place = |field: &super::facts::Field| -> Option<Option<(Place, bool)>> {
                if field.key_bearing() == KeyBearing::PerPacket {
                    return None;
                }
                match facts.get(field) {
                    Value::Missing => Some(None),
                    Value::Bytes(v) => {
                        let at = Place::of(bytes, v)?;
                        let range = at.range();
                        Some(Some((
                            at,
                            key::has_masked_digit(bytes, range.start, range.end),
                        )))
                    }
                    _ => None,
                }
            };
            // A number read from a text: checked at its place when packets may differ there.
            let number = || match facts.number_text(&c.field)? {
                None => Some(None),
                Some(text) => {
                    let at = Place::of(bytes, text)?;
                    let range = at.range();
                    let varies = key::has_masked_digit(bytes, range.start, range.end);
                    Some(varies.then_some(Check::Number { at, cond: cref }))
                }
            };
            let check = match &c.op {
                Op::SameAs(other) => match (place(&c.field), place(other)) {
                    (Some(Some((at, a))), Some(Some((other, b)))) if a || b => Some(Check::Same {
                        at,
                        other,
                        negate: c.negate,
                    }),
                    (Some(_), Some(_)) => None,
                    _ => Some(Check::Facts(cref)),
                },
                Op::Order(_) | Op::EqList(_) => Some(Check::Facts(cref)),
                _ if let Some(check) = number() => check,
                _ => match place(&c.field) {
                    Some(Some((at, true))) => Some(Check::Bytes { at, cond: cref }),
                    Some(_) => None,
                    None => Some(Check::Facts(cref)),
                },
            };
            match check {
                Some(check) => varying.push((i as u8, check)),
                None if c.holds(facts) => fixed |= 1 << i,
                None => {}
            }
        }
        Checks {
            fixed,
            varying: varying.into(),
        }
    }

    fn bits(&self, engine: &Engine, facts: &Facts<'_>) -> u128 {
        let bytes = facts.msg.bytes();
        let mut bits = self.fixed;
        for &(i, check) in self.varying.iter() {
            let holds = match check {
                Check::Bytes { at, cond } => cond.get(engine).holds_for(Value::Bytes(at.at(bytes))),
                Check::Number { at, cond } => {
                    cond.get(engine).holds_for(number_of(Some(at.at(bytes))))
                }
                Check::Same { at, other, negate } => (at.at(bytes) == other.at(bytes)) != negate,
                Check::Facts(cond) => cond.get(engine).holds(facts),
            };
            if holds {
                bits |= 1 << i;
            }
        }
        bits
    }
}

/// Scores the rules the key left, reading each predicate's outcome from the template or from
/// this packet's residual bits.
fn decide(engine: &Engine, outcomes: &[Outcome], alive: &[u16], bits: u128) -> Decision {
    let rules = engine.rules();
    let holds = |c: &Condition| match outcomes[c.predicate] {
        Outcome::Known(b) => b,
        Outcome::Residual(i) => bits & (1u128 << i) != 0,
        // Not reachable for a rule that is alive; false keeps the scoring total.
        Outcome::Unused => false,
    };
    Decision::from_scores(
        alive
            .iter()
            .filter_map(|&r| score_by(&rules[usize::from(r)], holds).map(|s| (r, s))),
    )
}

/// Every rule evaluated on the message: what the engine does without the cache.
fn evaluate_all(engine: &Engine, facts: &Facts<'_>) -> Verdict {
    let decision = Decision::from_scores(
        engine
            .rules()
            .iter()
            .enumerate()
            .filter_map(|(r, rule)| score_by(rule, |c| c.holds(facts)).map(|s| (r as u16, s))),
    );
    Verdict::of(&decision, template_hash(facts.msg), None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        event::Event,
        fingerprint::{Packet, SourceTracker},
        record::Record,
        sip::SipMessage,
    };

    /// Everything a fingerprint says, in a comparable form.
    fn summary(fp: &Fingerprint<'_>) -> String {
        format!(
            "{} {:016x} {:?} {:?} {:?} {:?} {:?} {:?}",
            fp.rule_id(),
            fp.confidence.to_bits(),
            fp.evidence,
            fp.modifications,
            fp.alternatives
                .iter()
                .map(|a| (&a.rule.id, a.confidence.to_bits()))
                .collect::<Vec<_>>(),
            fp.template,
            fp.template_text,
            fp.inferences,
        )
    }

    /// Classifies with the cache and without; panics on any difference.
    fn same_both_ways(
        engine: &Engine,
        cache: &mut ClassCache,
        payload: &[u8],
        p: Packet,
        cut: bool,
    ) {
        // The cache's own way in: recalled templates' parses and field places included.
        let mut msg = SipMessage::unparsed(payload, cut);
        let recalled = cache.parse(&mut msg);
        let facts =
            Facts::new(&msg, Some(p)).with_places(recalled.as_ref().and_then(Recalled::places));
        let verdict = cache.classify(engine, &facts, recalled.as_ref());
        let cached = cache.fingerprint(engine, &verdict, &facts, None);
        let parsed = SipMessage::parse_captured(payload, cut);
        let reference = engine.classify_packet(&parsed, Some(p), None);
        assert_eq!(
            summary(&cached),
            summary(&reference),
            "payload {:?}",
            crate::escape::escape_bytes(payload)
        );
    }

    /// Every record of every corpus capture, as the userspace extractor makes them.
    fn corpus() -> Vec<(Vec<u8>, Packet, bool)> {
        let out: Vec<_> = crate::offline::corpus_records()
            .iter()
            .map(|raw| {
                let record = Record::new(raw).expect("valid record");
                let event = Event { record, wall_ns: 0 };
                (
                    record.payload().to_vec(),
                    Packet::from_event(&event),
                    record.payload_truncated(),
                )
            })
            .collect();
        assert!(out.len() > 200, "corpus records: {}", out.len());
        out
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// A payload with what scanners vary varied, and some of what they do not: digits and
    /// letters redrawn within their class (the same key, other values), a letter's case or a
    /// digit turned into a letter (another key), a byte cut off (truncation).
    fn mutate(payload: &[u8], rng: &mut Rng) -> (Vec<u8>, bool) {
        let mut p = payload.to_vec();
        let mut cut = false;
        // Mostly the variation of one template (the cache's hits), sometimes another template.
        let kinds = if rng.below(10) < 7 { 5 } else { 8 };
        for _ in 0..1 + rng.below(12) {
            if p.is_empty() {
                break;
            }
            let i = rng.below(p.len());
            p[i] = match (rng.below(kinds), p[i]) {
                (0..=4, b'0'..=b'9') => b'0' + rng.below(10) as u8,
                (0..=4, b'a'..=b'f') => b'a' + rng.below(6) as u8,
                (0..=4, b'g'..=b'z') => b'g' + rng.below(20) as u8,
                (0..=4, b'A'..=b'F') => b'A' + rng.below(6) as u8,
                (0..=4, b'G'..=b'Z') => b'G' + rng.below(20) as u8,
                (5, c) if c.is_ascii_alphabetic() => c ^ 0x20,
                (6, c) if c.is_ascii_digit() => b'a' + rng.below(26) as u8,
                (7, _) => {
                    cut = true;
                    p.truncate(i);
                    continue;
                }
                (_, c) => c,
            };
        }
        (p, cut)
    }

    #[test]
    fn cache_changes_no_attribution() {
        let engine = Engine::builtin().expect("built-in rules");
        let mut cache = ClassCache::new(1024);
        let records = corpus();
        // Twice over the corpus (the second time from the cache), then mutations, which share
        // keys with the originals and with each other.
        for _ in 0..2 {
            for (payload, p, cut) in &records {
                same_both_ways(&engine, &mut cache, payload, *p, *cut);
            }
        }
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for round in 0..12 {
            for (payload, p, cut) in &records {
                let (m, m_cut) = mutate(payload, &mut rng);
                let mut p = *p;
                p.ip_id = rng.next() as u16;
                p.ttl = rng.next() as u8;
                if round % 2 == 0 {
                    p.src_port = 5060 + rng.below(4) as u16;
                }
                same_both_ways(&engine, &mut cache, &m, p, *cut || m_cut);
            }
        }
        // The comparisons above went through hits on entries other messages made.
        assert!(cache.counters.hits > 1000, "{:?}", cache.counters);
        // And with entries evicted and their slots reused.
        let mut small = ClassCache::new(8);
        for (payload, p, cut) in records.iter().chain(&records) {
            same_both_ways(&engine, &mut small, payload, *p, *cut);
        }
        assert!(small.counters.evictions > 0, "{:?}", small.counters);
    }

    #[test]
    fn a_template_gets_its_entry_at_its_second_sighting() {
        let engine = Engine::builtin().expect("built-in rules");
        let (payload, p, cut) = corpus()
            .into_iter()
            .find(|(payload, ..)| payload.starts_with(b"OPTIONS"))
            .expect("an OPTIONS record");
        let mut cache = ClassCache::new(64);
        for (sighting, (len, unadmitted, hits)) in
            [(0, 1, 0), (1, 1, 0), (1, 1, 1)].into_iter().enumerate()
        {
            same_both_ways(&engine, &mut cache, &payload, p, cut);
            let c = cache.counters;
            assert_eq!(
                (cache.len(), c.unadmitted, c.hits),
                (len, unadmitted, hits),
                "after sighting {sighting}: {c:?}"
            );
        }
        // A flood of templates that never repeat builds an entry only for the few keys the
        // filter mistakes for ones it met (about one in twenty while it is full), and is
        // classified as the engine classifies it.
        let mut flood = ClassCache::new(64);
        for n in 0..500 {
            let mut m = payload.clone();
            let line_end = m.iter().position(|&b| b == b'\n').unwrap() + 1;
            let pad = format!("X-Pad: {}\r\n", "q".repeat(1 + n));
            m.splice(line_end..line_end, pad.into_bytes());
            same_both_ways(&engine, &mut flood, &m, p, cut);
        }
        let c = flood.counters;
        assert_eq!(c.misses, 500, "{c:?}");
        assert!(c.unadmitted >= 475, "{c:?}");
    }

    #[test]
    fn tracked_sources_read_the_same() {
        // The verdict does not depend on per-source state; the inferences read it the same way.
        let engine = Engine::builtin().expect("built-in rules");
        let mut cache = ClassCache::default();
        let mut sources = SourceTracker::new(64);
        let mut reference_sources = SourceTracker::new(64);
        for (payload, p, cut) in corpus() {
            let msg = SipMessage::parse_captured(&payload, cut);
            let facts = Facts::new(&msg, Some(p));
            let view = sources.observe(&p, 1);
            let verdict = cache.classify(&engine, &facts, None);
            let cached = cache.fingerprint(&engine, &verdict, &facts, Some(view));
            let reference_view = reference_sources.observe(&p, 1);
            let reference = engine.classify_packet(&msg, Some(p), Some(reference_view));
            assert_eq!(summary(&cached), summary(&reference));
        }
    }
}
