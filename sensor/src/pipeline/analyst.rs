//! The per-record half of the pipeline: parse the SIP payload, follow the source's IP-ID,
//! classify, join reactive sessions, decide sampling and serialise the event. Everything it
//! keeps is keyed by the source address (or by the template, within one analyst), so records
//! can be shared out among analysts by source and each analyses its share alone.

use std::{net::IpAddr, sync::Arc};

use sensor_common::record_flags;

use super::PipelineOptions;
use crate::{
    aggregate::{Observation, ObservationText},
    counters::AgentCounters,
    event::Event,
    fingerprint::{ClassCache, Engine, Packet, Recalled, SourceTracker, facts::Facts},
    identity::SensorIdentity,
    output::{
        event::{Analysis, EventDetail, write_event},
        fingerprint::{FingerprintDoc, round2},
        json::EventDoc,
        lean::{LeanWriter, TemplateExamples},
        sip::SipDoc,
    },
    record::Record,
    sampling::EventSampler,
    session::{SynFields, SynJoiner},
    sip::SipMessage,
};

/// Answered SYNs remembered to join to the request that follows.
const SYN_JOIN_CAPACITY: usize = 65_536;

/// What became of one record's event document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventOutput<'a> {
    /// Serialised, to be written (`lean`: in the lean form).
    Written { line: &'a [u8], lean: bool },
    /// Not written: the source had sent its quota of the template (pcapng keeps the record).
    SampledOut,
    /// Serialising our own document failed: every output lost it (counted).
    Unserialisable,
}

/// One record, analysed: what the sink writes and aggregates.
#[derive(Clone, Copy, Debug)]
pub struct Analysed<'a> {
    pub observation: Observation<'a>,
    /// The winning rule's index in the engine's rules.
    pub rule_index: Option<u16>,
    /// The verdict's confidence, rounded as the documents write it.
    pub confidence: f64,
    pub output: EventOutput<'a>,
}

pub struct Analyst {
    engine: Arc<Engine>,
    /// Rules evaluated once per message template (`fingerprint::cache`).
    cache: ClassCache,
    detail: EventDetail,
    sampler: Option<EventSampler>,
    /// Under `--event-detail lean`, which events are their template's compact example.
    template_examples: Option<TemplateExamples>,
    /// Lean events' writer, which keeps each template's attribution as written.
    lean_writer: LeanWriter,
    sources: SourceTracker,
    joiner: SynJoiner,
    identity: Option<SensorIdentity>,
    /// One event serialised once, for NDJSON and Kafka alike.
    line: Vec<u8>,
    /// The escaped text of the observations, reused.
    observation_text: ObservationText,
}

impl Analyst {
    pub fn new(engine: Arc<Engine>, options: &PipelineOptions) -> Self {
        Self {
            engine,
            cache: ClassCache::default(),
            detail: options.detail,
            sampler: options.sampling.map(EventSampler::new),
            template_examples: (options.detail == EventDetail::Lean)
                .then(|| TemplateExamples::new(options.aggregate.campaign_window_s)),
            lean_writer: LeanWriter::default(),
            sources: SourceTracker::default(),
            joiner: SynJoiner::new(SYN_JOIN_CAPACITY),
            identity: options.identity.clone(),
            line: Vec::with_capacity(4096),
            observation_text: ObservationText::default(),
        }
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The sensor name this analyst writes into observations.
    pub fn sensor_name(&self) -> Option<&str> {
        self.identity.as_ref().map(|i| i.name.as_str())
    }

    /// Fetches ahead the state [`analyse`](Self::analyse) will read for a packet from `source`.
    pub fn prefetch_source(&self, source: IpAddr) {
        self.sources.prefetch(source);
    }

    /// One record, with its wall-clock time.
    pub fn analyse<'s>(&'s mut self, record: Record<'_>, wall_ns: u64) -> Analysed<'s> {
        let event = Event { record, wall_ns };
        let mut sip = SipMessage::unparsed(record.payload(), record.payload_truncated());
        let recalled = self.cache.parse(&mut sip);
        let packet = Packet::from_event(&event);
        let source = self.sources.observe(&packet, wall_ns);
        let facts = Facts::new(&sip, Some(packet))
            .with_places(recalled.as_ref().and_then(Recalled::places));
        let verdict = self.cache.classify(&self.engine, &facts, recalled.as_ref());
        // The join table forgets the SYN once its request arrives, written or not.
        let syn = if record.raw().flags
            & (record_flags::SYN_ANSWERED | record_flags::REACTIVE_SESSION)
            != 0
        {
            self.joiner.observe(&record, wall_ns)
        } else {
            None
        };
        let written = self
            .sampler
            .as_mut()
            .is_none_or(|s| s.admit(record.src_ip(), verdict.template.0, wall_ns));
        let analysis = Analysis {
            engine: &self.engine,
            cache: &self.cache,
            verdict: &verdict,
            facts: &facts,
            source: Some(source),
        };
        let observation = Observation::from_analysis(
            &event,
            &sip,
            &analysis,
            &self.engine,
            self.identity.as_ref().map(|i| i.name.as_str()),
            &mut self.observation_text,
        );
        let confidence = round2(verdict.confidence());
        let rule_index = verdict.winner.map(|(i, _)| i);
        let output = if written {
            self.line.clear();
            let identity = self.identity.as_ref();
            // Lean: each template's first event per window is written compact, as its example.
            let example = self
                .template_examples
                .as_mut()
                .is_some_and(|t| t.is_example(verdict.template.0, wall_ns));
            let detail = match self.detail {
                EventDetail::Lean if example => EventDetail::Compact,
                detail => detail,
            };
            let serialised = match detail {
                EventDetail::Lean => {
                    self.lean_writer
                        .write(&mut self.line, &record, &observation, confidence);
                    append_sensor(&mut self.line, identity)
                }
                EventDetail::Compact => {
                    write_event(&mut self.line, &event, &sip, &analysis, syn.as_ref());
                    append_sensor(&mut self.line, identity)
                }
                EventDetail::Full => {
                    full_line(&mut self.line, &event, &sip, &analysis, syn, identity)
                }
            };
            if serialised {
                EventOutput::Written {
                    line: &self.line,
                    lean: detail == EventDetail::Lean,
                }
            } else {
                EventOutput::Unserialisable
            }
        } else {
            EventOutput::SampledOut
        };
        Analysed {
            observation,
            rule_index,
            confidence,
            output,
        }
    }

    /// Writes the counters this analyst keeps (the cache's, and the bounded tables' evictions)
    /// into `counters`.
    pub fn fill_counters(&self, counters: &mut AgentCounters) {
        let cache = self.cache.counters;
        counters.fingerprint_cache_hits = cache.hits;
        counters.fingerprint_cache_misses = cache.misses;
        counters.fingerprint_cache_evictions = cache.evictions;
        counters.fingerprint_cache_bypassed = cache.bypassed;
        counters.fingerprint_cache_unadmitted = cache.unadmitted;
        counters.source_evictions = self.sources.evictions();
        counters.syn_join_evictions = self.joiner.evicted;
    }

    /// Keeps per-source IP-ID state for up to `capacity` sources (beyond it, the tracker's CLOCK
    /// evicts one not seen for a turn of its hand).
    pub fn track_sources(&mut self, capacity: usize) {
        self.sources = SourceTracker::new(capacity);
    }

    /// Sources the analyst holds state for.
    pub fn tracked_sources(&self) -> usize {
        self.sources.len()
    }
}

/// Writes the sum of the analysts' counters (`parts`, each as [`Analyst::fill_counters`] wrote
/// it) into `counters`.
pub fn sum_analyst_counters<'a>(
    parts: impl IntoIterator<Item = &'a AgentCounters>,
    counters: &mut AgentCounters,
) {
    let c = counters;
    (
        c.fingerprint_cache_hits,
        c.fingerprint_cache_misses,
        c.fingerprint_cache_evictions,
        c.fingerprint_cache_bypassed,
        c.fingerprint_cache_unadmitted,
        c.source_evictions,
        c.syn_join_evictions,
    ) = (0, 0, 0, 0, 0, 0, 0);
    for p in parts {
        c.fingerprint_cache_hits += p.fingerprint_cache_hits;
        c.fingerprint_cache_misses += p.fingerprint_cache_misses;
        c.fingerprint_cache_evictions += p.fingerprint_cache_evictions;
        c.fingerprint_cache_bypassed += p.fingerprint_cache_bypassed;
        c.fingerprint_cache_unadmitted += p.fingerprint_cache_unadmitted;
        c.source_evictions += p.source_evictions;
        c.syn_join_evictions += p.syn_join_evictions;
    }
}

/// Appends the `sensor` object to the event in `line`, last, as `EventDoc` places it.
fn append_sensor(line: &mut Vec<u8>, identity: Option<&SensorIdentity>) -> bool {
    if let Some(identity) = identity
        && line.pop() == Some(b'}')
    {
        line.extend_from_slice(b",\"sensor\":");
        if serde_json::to_writer(&mut *line, identity).is_err() {
            return false;
        }
        line.push(b'}');
    }
    true
}

/// `--verbose-evidence`: the whole event document, serialised.
fn full_line(
    line: &mut Vec<u8>,
    event: &Event<'_>,
    sip: &SipMessage<'_>,
    a: &Analysis<'_, '_>,
    syn: Option<SynFields>,
    identity: Option<&SensorIdentity>,
) -> bool {
    let fingerprint = a.cache.fingerprint(a.engine, a.verdict, a.facts, a.source);
    let mut doc = EventDoc::new(event)
        .with_analysis(
            SipDoc::new(sip),
            FingerprintDoc::from_fingerprint(fingerprint),
        )
        .with_sensor(identity);
    if let Some(reactive) = &mut doc.reactive {
        reactive.syn = syn;
    }
    serde_json::to_writer(&mut *line, &doc).is_ok()
}
