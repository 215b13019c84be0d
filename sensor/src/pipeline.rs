//! What the agent does with each record once the kernel (or the userspace extractor, for capture
//! files) has produced it: parse the SIP payload, fingerprint the sender, join reactive sessions,
//! follow servers, write the outputs, count everything. The live agent and `sensor analyze` share
//! it, so a capture file is analysed exactly as live traffic is.

use std::path::PathBuf;

use crate::{
    clock::{WallClock, monotonic_ns, realtime_ns},
    counters::{AgentCounters, KernelCounters},
    event::Event,
    fingerprint::{ClassCache, Engine, Packet, RuleError, SourceTracker, facts::Facts},
    output::{
        NdjsonWriter,
        event::{Analysis, EvidenceDetail, write_event},
        json::{EventDoc, StatsDoc},
    },
    output::{fingerprint::FingerprintDoc, sip::SipDoc},
    record::Record,
    rogue::{
        Tracker, TrackerConfig, TrackerCounters,
        doc::{RogueStatsDoc, ServerDoc},
    },
    session::SynJoiner,
    sip::SipMessage,
};

/// Answered SYNs remembered to join to the request that follows.
const SYN_JOIN_CAPACITY: usize = 65_536;
/// Events are written into one buffer and handed to the output when it holds this much (or at
/// the batch's flush): one large write instead of one per event, and no second copy.
const PENDING_BYTES: usize = 1 << 20;

#[derive(Clone, Debug, Default)]
pub struct PipelineOptions {
    /// Fingerprint rules loaded beside the built-in ones.
    pub rules: Option<PathBuf>,
    /// NDJSON events go here; `None`: stdout.
    pub output: Option<PathBuf>,
    /// Follow requests and responses per server and report rogue SIP daemons.
    pub detect_rogue: Option<TrackerConfig>,
    /// How much explanation events carry.
    pub evidence: EvidenceDetail,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Rules(#[from] RuleError),
    #[error("cannot open output {path}: {source}")]
    Output {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub struct Pipeline {
    engine: Engine,
    cache: ClassCache,
    sources: SourceTracker,
    joiner: SynJoiner,
    rogue: Option<Tracker>,
    writer: NdjsonWriter,
    evidence: EvidenceDetail,
    /// Events written and not handed to the output yet, and how many.
    pending: Vec<u8>,
    pending_events: u64,
    pub counters: AgentCounters,
}

impl Pipeline {
    /// Loads the rules (a bad rule file is an error before anything else happens) and opens the
    /// outputs.
    pub fn new(options: &PipelineOptions) -> Result<Self, PipelineError> {
        let engine = Engine::load(options.rules.as_deref())?;
        let writer = match &options.output {
            None => NdjsonWriter::stdout(),
            Some(path) => NdjsonWriter::create(path).map_err(|source| PipelineError::Output {
                path: path.clone(),
                source,
            })?,
        };
        Ok(Self {
            engine,
            cache: ClassCache::default(),
            sources: SourceTracker::default(),
            joiner: SynJoiner::new(SYN_JOIN_CAPACITY),
            rogue: options.detect_rogue.clone().map(Tracker::new),
            writer,
            evidence: options.evidence,
            pending: Vec::with_capacity(PENDING_BYTES + 64 * 1024),
            pending_events: 0,
            counters: AgentCounters::default(),
        })
    }

    /// A ring buffer item: validated, then processed. Undecodable items are counted.
    pub fn ring_item(&mut self, bytes: &[u8], clock: &WallClock) {
        self.counters.records_read += 1;
        match Record::from_bytes(bytes) {
            Ok(record) => {
                let wall_ns = clock.wall_ns(record.timestamp_ns());
                self.record(record, wall_ns);
            }
            Err(_) => self.counters.records_undecodable += 1,
        }
    }

    /// One record, with its wall-clock time.
    pub fn record(&mut self, record: Record<'_>, wall_ns: u64) {
        let event = Event { record, wall_ns };
        let sip = SipMessage::parse_captured(record.payload(), record.payload_truncated());
        let packet = Packet::from_event(&event);
        let source = self.sources.observe(&packet, wall_ns);
        let facts = Facts::new(&sip, Some(packet));
        let verdict = self.cache.classify(&self.engine, &facts);
        let flags = record.raw().flags;
        let reactive = flags
            & (sensor_common::record_flags::SYN_ANSWERED
                | sensor_common::record_flags::REACTIVE_SESSION)
            != 0;
        let syn = if reactive {
            self.joiner.observe(&record, wall_ns)
        } else {
            None
        };
        let written = match self.evidence {
            EvidenceDetail::Compact => {
                let analysis = Analysis {
                    engine: &self.engine,
                    cache: &self.cache,
                    verdict: &verdict,
                    facts: &facts,
                    source: Some(source),
                };
                write_event(&mut self.pending, &event, &sip, &analysis, syn.as_ref());
                self.pending.push(b'\n');
                self.pending_events += 1;
                if self.pending.len() >= PENDING_BYTES {
                    self.hand_over();
                }
                Ok(())
            }
            EvidenceDetail::Full => {
                let fingerprint =
                    self.cache
                        .fingerprint(&self.engine, &verdict, &facts, Some(source));
                let mut doc = EventDoc::new(&event).with_analysis(
                    SipDoc::new(&sip),
                    FingerprintDoc::from_fingerprint(fingerprint),
                );
                if let Some(reactive) = &mut doc.reactive {
                    reactive.syn = syn;
                }
                self.writer.write(&doc)
            }
        };
        match (written, self.evidence) {
            (Ok(()), EvidenceDetail::Full) => self.counters.events_written += 1,
            (Ok(()), EvidenceDetail::Compact) => {}
            (Err(_), _) => self.counters.output_errors += 1,
        }
        if let Some(tracker) = &mut self.rogue {
            tracker.observe(&event);
        }
    }

    /// Pushes buffered output out; called after each batch.
    /// Hands the pending events to the output; counts them written or lost.
    fn hand_over(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        match self.writer.write_lines(&self.pending) {
            Ok(()) => self.counters.events_written += self.pending_events,
            Err(_) => self.counters.output_errors += self.pending_events,
        }
        self.pending.clear();
        self.pending_events = 0;
    }

    pub fn flush(&mut self) {
        self.hand_over();
        self.sync_cache_counters();
        if self.writer.flush().is_err() {
            self.counters.output_errors += 1;
        }
    }

    fn sync_cache_counters(&mut self) {
        let cache = self.cache.counters;
        self.counters.fingerprint_cache_hits = cache.hits;
        self.counters.fingerprint_cache_misses = cache.misses;
        self.counters.fingerprint_cache_evictions = cache.evictions;
        self.counters.fingerprint_cache_bypassed = cache.bypassed;
    }

    /// Periodic work: the rogue tracker's timeouts and new findings.
    pub fn tick(&mut self) {
        if self.rogue.is_none() {
            return;
        }
        // Findings go after the events already written.
        self.hand_over();
        let Some(tracker) = &mut self.rogue else {
            return;
        };
        for report in tracker.poll(monotonic_ns()) {
            if self
                .writer
                .write(&ServerDoc::finding(realtime_ns(), &report))
                .is_err()
            {
                self.counters.output_errors += 1;
            }
        }
        self.flush();
    }

    pub fn wants_ticks(&self) -> bool {
        self.rogue.is_some()
    }

    /// The final documents: each tracked server's state, the tracker's counters, and the stats
    /// (kernel counters when there is a kernel, i.e. live).
    pub fn finish(&mut self, kernel: &KernelCounters) {
        self.hand_over();
        self.tick();
        self.sync_cache_counters();
        if let Some(tracker) = &self.rogue {
            let now = realtime_ns();
            for report in tracker.snapshot() {
                if self.writer.write(&ServerDoc::state(now, &report)).is_err() {
                    self.counters.output_errors += 1;
                }
            }
            if self
                .writer
                .write(&RogueStatsDoc::new(now, tracker.counters()))
                .is_err()
            {
                self.counters.output_errors += 1;
            }
        }
        if self
            .writer
            .write(&StatsDoc::new(realtime_ns(), kernel, &self.counters))
            .is_err()
        {
            self.counters.output_errors += 1;
        }
        self.flush();
    }

    /// Keeps per-source state for up to `capacity` sources (the least recently seen are evicted
    /// beyond it).
    pub fn track_sources(&mut self, capacity: usize) {
        self.sources = SourceTracker::new(capacity);
    }

    /// Sources the pipeline holds state for.
    pub fn tracked_sources(&self) -> usize {
        self.sources.len()
    }

    pub fn rogue_counters(&self) -> Option<TrackerCounters> {
        self.rogue.as_ref().map(Tracker::counters)
    }
}
