//! What the agent does with each record once the kernel (or the userspace extractor, for capture
//! files) has produced it: parse the SIP payload, fingerprint the sender, join reactive sessions,
//! follow servers, write the outputs, count everything. The live agent and `sensor analyze` share
//! it, so a capture file is analysed exactly as live traffic is.

use std::{collections::HashMap, path::PathBuf, sync::Arc};

use sensor_common::record_flags;

use crate::{
    aggregate::{AggregateConfig, Aggregator, Observation, ObservationText, doc::CampaignDoc},
    clock::{WallClock, monotonic_ns, realtime_ns},
    counters::{AgentCounters, KernelCounters},
    event::Event,
    fingerprint::{ClassCache, Engine, Packet, RuleError, SourceTracker, facts::Facts},
    identity::SensorIdentity,
    output::{
        Label, OutputError, OutputOptions, Outputs,
        event::{Analysis, EventDetail, write_event},
        fingerprint::{FingerprintDoc, round2},
        json::{EventDoc, StatsDoc},
        kafka::{KafkaConfig, KafkaCounters, KafkaOutput, KafkaOutputError, KafkaStats},
        lean::{TemplateExamples, write_lean},
        metrics::{CampaignGauges, Exposition, Kind},
        sip::SipDoc,
    },
    record::Record,
    report::Summary,
    rogue::{
        Tracker, TrackerConfig, TrackerCounters,
        doc::{RogueStatsDoc, ServerDoc},
    },
    sampling::{EventSampler, SamplingConfig},
    session::{SynFields, SynJoiner},
    sip::SipMessage,
};

/// Answered SYNs remembered to join to the request that follows.
const SYN_JOIN_CAPACITY: usize = 65_536;

#[derive(Clone, Debug, Default)]
pub struct PipelineOptions {
    /// Fingerprint rules loaded beside the built-in ones.
    pub rules: Option<PathBuf>,
    /// Which outputs, where.
    pub outputs: OutputOptions,
    /// Follow requests and responses per server and report rogue SIP daemons.
    pub detect_rogue: Option<TrackerConfig>,
    /// The `sensor` object added to every event (name, interface, darknet prefixes).
    pub identity: Option<SensorIdentity>,
    /// Also send every event to Kafka (keyed by source address).
    pub kafka: Option<KafkaConfig>,
    /// Bounds and windows of the per-source and campaign aggregation.
    pub aggregate: AggregateConfig,
    /// How much each `sip_probe` event carries (`--event-detail`).
    pub detail: EventDetail,
    /// Write only the first events of each source and template per window (`sampling`).
    pub sampling: Option<SamplingConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Rules(#[from] RuleError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error(transparent)]
    Kafka(#[from] KafkaOutputError),
}

pub struct Pipeline {
    engine: Engine,
    /// Rules evaluated once per message template (`fingerprint::cache`).
    cache: ClassCache,
    detail: EventDetail,
    sampler: Option<EventSampler>,
    /// Under `--event-detail lean`, which events are their template's compact example.
    template_examples: Option<TemplateExamples>,
    sources: SourceTracker,
    joiner: SynJoiner,
    rogue: Option<Tracker>,
    aggregate: Aggregator,
    outputs: Outputs,
    identity: Option<SensorIdentity>,
    kafka: Option<KafkaOutput>,
    /// Started by `start_outputs`, not by `new`: the Kafka producer runs threads, and the live
    /// agent must drop its capabilities while it is still single-threaded.
    kafka_config: Option<KafkaConfig>,
    /// One event serialised once, for NDJSON and Kafka alike.
    line: Vec<u8>,
    /// The escaped text of the compact path's observations, reused.
    observation_text: ObservationText,
    /// Events per attributed tool (`unknown` included); tool names come from the rules, so the
    /// map stays as small as the rule set.
    tools: HashMap<String, u64>,
    pub counters: AgentCounters,
}

impl Pipeline {
    /// Loads the rules (a bad rule file is an error before anything else happens) and opens the
    /// outputs.
    pub fn new(options: &PipelineOptions) -> Result<Self, PipelineError> {
        let engine = Engine::load(options.rules.as_deref())?;
        let outputs = Outputs::open(&options.outputs)?;
        Ok(Self {
            engine,
            cache: ClassCache::default(),
            detail: options.detail,
            sampler: options.sampling.map(EventSampler::new),
            template_examples: (options.detail == EventDetail::Lean)
                .then(|| TemplateExamples::new(options.aggregate.campaign_window_s)),
            sources: SourceTracker::default(),
            joiner: SynJoiner::new(SYN_JOIN_CAPACITY),
            rogue: options.detect_rogue.clone().map(Tracker::new),
            aggregate: Aggregator::new(options.aggregate),
            outputs,
            identity: options.identity.clone(),
            kafka: None,
            kafka_config: options.kafka.clone(),
            line: Vec::with_capacity(4096),
            observation_text: ObservationText::default(),
            tools: HashMap::new(),
            counters: AgentCounters::default(),
        })
    }

    /// Starts the outputs that run threads of their own (Kafka, resuming its spool). Events
    /// handled before this go to the other outputs only.
    pub fn start_outputs(&mut self) -> Result<(), PipelineError> {
        if let Some(config) = self.kafka_config.take() {
            let name = self
                .identity
                .as_ref()
                .map(|i| i.name.clone())
                .unwrap_or_else(crate::identity::hostname);
            self.kafka = Some(KafkaOutput::start(&config, &name)?);
        }
        Ok(())
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
            self.identity.as_ref().map(|i| i.name.as_str()),
            &mut self.observation_text,
        );
        let confidence = round2(verdict.confidence());
        let label = Label {
            tool: observation.tool,
            variant: observation.variant,
            rule: observation.rule,
            category: observation.category,
            confidence,
        };
        if written {
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
                    write_lean(&mut self.line, &record, &observation, confidence);
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
            if !serialised {
                // Serialising our own document cannot fail; if it did, every output lost it.
                self.counters.output_errors += 1;
                return;
            }
            self.outputs
                .event(&record, wall_ns, Some(&label), &self.line);
            self.counters.events_written += 1;
            if detail == EventDetail::Lean {
                self.counters.events_lean += 1;
            }
            if let Some(kafka) = &self.kafka {
                // Keyed by source address: one source's events stay in one partition, in
                // order. A non-blocking hand-off: a slow broker never slows the ring drain.
                let key = record.src_ip().to_string();
                kafka.offer(
                    key.as_bytes(),
                    (wall_ns / 1_000_000) as i64,
                    self.line.clone(),
                );
            }
        } else {
            // Sampled out: no NDJSON or Kafka document, but pcapng keeps the record.
            self.outputs.record_only(&record, wall_ns, Some(&label));
            self.counters.events_sampled_out += 1;
        }
        match self.tools.get_mut(observation.tool) {
            Some(n) => *n += 1,
            None => {
                self.tools.insert(observation.tool.to_string(), 1);
            }
        }
        self.aggregate.observe(&observation);
        self.write_closed_campaigns();
        if let Some(tracker) = &mut self.rogue {
            tracker.observe(&event);
        }
    }

    /// Campaigns the aggregator closed, as `campaign` documents.
    fn write_closed_campaigns(&mut self) {
        for campaign in self.aggregate.take_closed() {
            self.outputs
                .document(&CampaignDoc::new(realtime_ns(), &campaign));
        }
    }

    /// Pushes buffered output out; called after each batch.
    pub fn flush(&mut self) {
        self.sync_cache_counters();
        self.outputs.flush();
        self.counters.output_errors = self.outputs.dropped();
    }

    /// Periodic work, about once a second: the rogue tracker's timeouts and new findings, and
    /// the outputs' (time rotation, moved files, retries after a failure).
    pub fn tick(&mut self) {
        self.aggregate.expire(realtime_ns());
        self.write_closed_campaigns();
        if let Some(tracker) = &mut self.rogue {
            for report in tracker.poll(monotonic_ns()) {
                self.outputs
                    .document(&ServerDoc::finding(realtime_ns(), &report));
            }
        }
        self.outputs.tick(realtime_ns());
        self.counters.output_errors = self.outputs.dropped();
    }

    fn sync_cache_counters(&mut self) {
        let cache = self.cache.counters;
        self.counters.fingerprint_cache_hits = cache.hits;
        self.counters.fingerprint_cache_misses = cache.misses;
        self.counters.fingerprint_cache_evictions = cache.evictions;
        self.counters.fingerprint_cache_bypassed = cache.bypassed;
        self.counters.fingerprint_cache_unadmitted = cache.unadmitted;
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

    /// Messages for the operator since the last call: an output that failed or came back.
    pub fn take_notices(&mut self) -> Vec<String> {
        self.outputs.take_notices()
    }

    /// The Kafka output's live counters, if it is on.
    pub fn kafka_counters(&self) -> Option<Arc<KafkaCounters>> {
        self.kafka.as_ref().map(KafkaOutput::counters)
    }

    /// The report of everything aggregated so far, `top` rows per table.
    pub fn report(&self, top: usize) -> Summary {
        Summary::new(&self.aggregate, top)
    }

    /// The final documents: open campaigns, each tracked server's state, the tracker's
    /// counters, and the stats (kernel counters when there is a kernel, i.e. live); then the
    /// outputs are closed. Stops the Kafka output first, which delivers or spools what is left
    /// (blocking, up to its shutdown timeout).
    pub fn finish(&mut self, kernel: &KernelCounters) -> Option<KafkaStats> {
        let kafka = self.kafka.take().map(KafkaOutput::finish);
        self.counters.source_evictions = self.sources.evictions();
        self.counters.syn_join_evictions = self.joiner.evicted;
        // No expiry by the wall clock here: a capture file's campaigns end where the file does,
        // and are reported open, as a live run's are when it stops.
        self.write_closed_campaigns();
        let now = realtime_ns();
        for campaign in self.aggregate.open_campaigns() {
            self.outputs.document(&CampaignDoc::new(now, &campaign));
        }
        if let Some(tracker) = &mut self.rogue {
            for report in tracker.poll(monotonic_ns()) {
                self.outputs
                    .document(&ServerDoc::finding(realtime_ns(), &report));
            }
        }
        if let Some(tracker) = &self.rogue {
            let now = realtime_ns();
            for report in tracker.snapshot() {
                self.outputs.document(&ServerDoc::state(now, &report));
            }
            self.outputs
                .document(&RogueStatsDoc::new(now, tracker.counters()));
        }
        self.flush();
        let stats = StatsDoc::new(realtime_ns(), kernel, &self.counters)
            .with_outputs(&self.outputs)
            .with_kafka(kafka.as_ref())
            .with_aggregate(&self.aggregate.counters());
        self.outputs.document(&stats);
        self.outputs.finish();
        self.counters.output_errors = self.outputs.dropped();
        kafka
    }

    pub fn rogue_counters(&self) -> Option<TrackerCounters> {
        self.rogue.as_ref().map(Tracker::counters)
    }

    pub fn outputs(&self) -> &Outputs {
        &self.outputs
    }

    /// Events per tool so far.
    pub fn tool_counts(&self) -> &HashMap<String, u64> {
        &self.tools
    }

    /// Campaign gauges for the metrics: open campaigns, and sources the aggregator tracks.
    pub fn campaign_gauges(&self) -> Option<CampaignGauges> {
        let counters = self.aggregate.counters();
        Some(CampaignGauges {
            active: counters.campaigns_open,
            sources: counters.sources_tracked,
        })
    }

    /// The pipeline's metric families: agent counters, events per tool, the outputs, campaigns.
    pub fn write_metrics(&self, out: &mut Exposition) {
        let c = &self.counters;
        out.counter(
            "sensor_agent_records_read_total",
            "Records read from the ring buffer (or made from a capture file).",
            c.records_read,
        );
        out.counter(
            "sensor_agent_records_undecodable_total",
            "Records that failed validation.",
            c.records_undecodable,
        );
        out.counter(
            "sensor_events_total",
            "Events handed to the outputs.",
            c.events_written,
        );
        out.counter(
            "sensor_events_lean_total",
            "Events written in the lean form (--event-detail lean): all but each template's first per window.",
            c.events_lean,
        );
        out.counter(
            "sensor_events_sampled_out_total",
            "Events not written: their source had sent its --events-per-template quota of that template in the window.",
            c.events_sampled_out,
        );
        // The classification cache: a rise of `unadmitted` against `hits` is a sender that
        // varies its template with every packet, paid for with a full evaluation of the rules.
        for (name, help, value) in [
            (
                "sensor_fingerprint_cache_hits_total",
                "Messages whose template the classification cache knew.",
                c.fingerprint_cache_hits,
            ),
            (
                "sensor_fingerprint_cache_misses_total",
                "Messages of a template the cache did not hold.",
                c.fingerprint_cache_misses,
            ),
            (
                "sensor_fingerprint_cache_unadmitted_total",
                "Misses classified in full without making an entry (a template's first message).",
                c.fingerprint_cache_unadmitted,
            ),
            (
                "sensor_fingerprint_cache_bypassed_total",
                "Messages classified without the cache (key too long, or a key collision).",
                c.fingerprint_cache_bypassed,
            ),
            (
                "sensor_fingerprint_cache_evictions_total",
                "Templates evicted from the cache at its bound.",
                c.fingerprint_cache_evictions,
            ),
        ] {
            out.counter(name, help, value);
        }
        out.family(
            "sensor_events_by_tool_total",
            Kind::Counter,
            "Events per attributed tool (unknown: no rule matched).",
        );
        let mut tools: Vec<(&String, &u64)> = self.tools.iter().collect();
        tools.sort();
        for (tool, n) in tools {
            out.sample("sensor_events_by_tool_total", &[("tool", tool)], *n);
        }
        self.outputs.write_metrics(out);
        if let Some(campaigns) = self.campaign_gauges() {
            out.gauge(
                "sensor_campaigns_active",
                "Campaigns active now (sources sharing a fingerprint template within the window).",
                campaigns.active,
            );
            out.gauge(
                "sensor_campaign_sources",
                "Sources the aggregator tracks (bounded by --max-sources).",
                campaigns.sources,
            );
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        output::{Destination, InterfaceNames, Rotation},
        sampling::SamplingConfig,
    };

    /// Every corpus record through a pipeline writing NDJSON and pcapng; returns the counters,
    /// the events the aggregator saw, the `sip_probe` lines written, and the pcapng's size.
    fn run(sampling: Option<SamplingConfig>, name: &str) -> (AgentCounters, u64, usize, u64) {
        let dir =
            std::env::temp_dir().join(format!("sensor-pipeline-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut pipeline = Pipeline::new(&PipelineOptions {
            outputs: OutputOptions {
                ndjson: Some(Destination::File(dir.join("events.ndjson"))),
                pcapng: Some(Destination::File(dir.join("records.pcapng"))),
                rotation: Rotation::default(),
                interface_names: InterfaceNames::Capture("t".into()),
            },
            sampling,
            ..PipelineOptions::default()
        })
        .unwrap();
        for (i, raw) in crate::offline::corpus_records().iter().enumerate() {
            let record = Record::new(raw).unwrap();
            pipeline.counters.records_read += 1;
            pipeline.record(record, 1_795_313_043_000_000_000 + i as u64);
        }
        let aggregated = pipeline.aggregate.counters().events;
        pipeline.finish(&KernelCounters::default());
        let text = std::fs::read_to_string(dir.join("events.ndjson")).unwrap();
        let probes = text.lines().filter(|l| l.contains("\"sip_probe\"")).count();
        let pcapng = std::fs::metadata(dir.join("records.pcapng")).unwrap().len();
        std::fs::remove_dir_all(&dir).unwrap();
        (pipeline.counters, aggregated, probes, pcapng)
    }

    #[test]
    fn sampled_out_events_are_counted_aggregated_and_kept_in_pcapng() {
        let (all, all_aggregated, all_probes, all_pcapng) = run(None, "all");
        let sampling = SamplingConfig {
            per_template: 1,
            window_s: 86_400,
        };
        let (sampled, aggregated, probes, pcapng) = run(Some(sampling), "one");
        let records = all.records_read;
        assert!(records > 200, "{records}");
        assert_eq!(all.events_written, records);
        assert_eq!(all.events_sampled_out, 0);
        assert_eq!(all_probes as u64, records);
        // Fewer written, none lost: written + sampled out = read, and the aggregator and
        // pcapng saw every record either way.
        assert!(sampled.events_written < records / 2, "{sampled:?}");
        assert_eq!(sampled.events_written + sampled.events_sampled_out, records);
        assert_eq!(probes as u64, sampled.events_written);
        assert_eq!(aggregated, records);
        assert_eq!(all_aggregated, records);
        assert_eq!(pcapng, all_pcapng);
    }
}
