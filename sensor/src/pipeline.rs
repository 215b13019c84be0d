//! What the agent does with each record once the kernel (or the userspace extractor, for capture
//! files) has produced it: parse the SIP payload, fingerprint the sender, join reactive sessions,
//! follow servers, write the outputs, count everything. The live agent and `sensor analyze` share
//! it, so a capture file is analysed exactly as live traffic is.

use std::{path::PathBuf, sync::Arc};

use crate::{
    aggregate::{AggregateConfig, Aggregator, Observation, doc::CampaignDoc},
    clock::{WallClock, monotonic_ns, realtime_ns},
    counters::{AgentCounters, KernelCounters},
    event::Event,
    fingerprint::{Engine, RuleError, SourceTracker},
    identity::SensorIdentity,
    output::{
        NdjsonWriter,
        json::{EventDoc, StatsDoc},
        kafka::{KafkaConfig, KafkaCounters, KafkaOutput, KafkaOutputError, KafkaStats},
    },
    record::Record,
    report::Summary,
    rogue::{
        Tracker, TrackerConfig, TrackerCounters,
        doc::{RogueStatsDoc, ServerDoc},
    },
    session::SynJoiner,
};

/// Answered SYNs remembered to join to the request that follows.
const SYN_JOIN_CAPACITY: usize = 65_536;

#[derive(Clone, Debug, Default)]
pub struct PipelineOptions {
    /// Fingerprint rules loaded beside the built-in ones.
    pub rules: Option<PathBuf>,
    /// NDJSON events go here; `None`: stdout.
    pub output: Option<PathBuf>,
    /// Follow requests and responses per server and report rogue SIP daemons.
    pub detect_rogue: Option<TrackerConfig>,
    /// The `sensor` object added to every event (name, interface, darknet prefixes).
    pub identity: Option<SensorIdentity>,
    /// Also send every event to Kafka (keyed by source address).
    pub kafka: Option<KafkaConfig>,
    /// Bounds and windows of the per-source and campaign aggregation.
    pub aggregate: AggregateConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Rules(#[from] RuleError),
    #[error("cannot open output {path}: {error}")]
    Output {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(transparent)]
    Kafka(#[from] KafkaOutputError),
}

pub struct Pipeline {
    engine: Engine,
    sources: SourceTracker,
    joiner: SynJoiner,
    rogue: Option<Tracker>,
    aggregate: Aggregator,
    writer: NdjsonWriter,
    identity: Option<SensorIdentity>,
    kafka: Option<KafkaOutput>,
    /// Started by `start_outputs`, not by `new`: the Kafka producer runs threads, and the live
    /// agent must drop its capabilities while it is still single-threaded.
    kafka_config: Option<KafkaConfig>,
    /// One event serialised once, for NDJSON and Kafka alike.
    line: Vec<u8>,
    pub counters: AgentCounters,
}

impl Pipeline {
    /// Loads the rules (a bad rule file is an error before anything else happens) and opens the
    /// outputs.
    pub fn new(options: &PipelineOptions) -> Result<Self, PipelineError> {
        let engine = Engine::load(options.rules.as_deref())?;
        let writer = match &options.output {
            None => NdjsonWriter::stdout(),
            Some(path) => NdjsonWriter::create(path).map_err(|error| PipelineError::Output {
                path: path.clone(),
                error,
            })?,
        };
        Ok(Self {
            engine,
            sources: SourceTracker::default(),
            joiner: SynJoiner::new(SYN_JOIN_CAPACITY),
            rogue: options.detect_rogue.clone().map(Tracker::new),
            aggregate: Aggregator::new(options.aggregate),
            writer,
            identity: options.identity.clone(),
            kafka: None,
            kafka_config: options.kafka.clone(),
            line: Vec::with_capacity(4096),
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
        let mut doc = EventDoc::analyzed(&event, &self.engine, &mut self.sources)
            .with_sensor(self.identity.as_ref());
        if let Some(reactive) = &mut doc.reactive {
            reactive.syn = self.joiner.observe(&record, wall_ns);
        }
        self.line.clear();
        if serde_json::to_writer(&mut self.line, &doc).is_err() {
            // Serialising our own document cannot fail; if it did, every output lost it.
            self.counters.output_errors += 1;
            return;
        }
        // Counted as written when the batch is written (`flush`).
        self.writer.write_event_raw(&self.line);
        if let Some(kafka) = &self.kafka {
            // Keyed by source address: one source's events stay in one partition, in order.
            // A non-blocking hand-off: a slow broker never slows the ring buffer drain.
            let key = record.src_ip().to_string();
            kafka.offer(
                key.as_bytes(),
                (wall_ns / 1_000_000) as i64,
                self.line.clone(),
            );
        }
        self.aggregate
            .observe(&Observation::from_doc(&doc, wall_ns));
        self.write_closed_campaigns();
        if let Some(tracker) = &mut self.rogue {
            tracker.observe(&event);
        }
    }

    /// Writes the queued documents; called after each batch. Documents the output could not
    /// take are lost and counted (`output_errors`); the writer recovers on its own.
    pub fn flush(&mut self) {
        let flushed = self.writer.flush();
        self.counters.events_written += flushed.events_written;
        self.counters.output_errors += flushed.lines_lost;
    }

    /// Campaigns the aggregator closed, as `campaign` documents.
    fn write_closed_campaigns(&mut self) {
        for campaign in self.aggregate.take_closed() {
            if self
                .writer
                .write(&CampaignDoc::new(realtime_ns(), &campaign))
                .is_err()
            {
                self.counters.output_errors += 1;
            }
        }
    }

    /// Periodic work of a live run: sources and campaigns whose time passed without traffic,
    /// and the rogue tracker.
    pub fn tick(&mut self) {
        self.aggregate.expire(realtime_ns());
        self.write_closed_campaigns();
        self.poll_rogue();
    }

    /// The rogue tracker's timeouts and new findings.
    fn poll_rogue(&mut self) {
        let Some(tracker) = &mut self.rogue else {
            self.flush();
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

    /// Always: the aggregator's timeouts pass without traffic too.
    pub fn wants_ticks(&self) -> bool {
        true
    }

    /// The Kafka output's live counters, if it is on.
    pub fn kafka_counters(&self) -> Option<Arc<KafkaCounters>> {
        self.kafka.as_ref().map(KafkaOutput::counters)
    }

    /// The final documents: each tracked server's state, the tracker's counters, and the stats
    /// (kernel counters when there is a kernel, i.e. live). Stops the Kafka output first, which
    /// delivers or spools what is left (blocking, up to its shutdown timeout).
    pub fn finish(mut self, kernel: &KernelCounters) -> (AgentCounters, Option<KafkaStats>) {
        let kafka = self.kafka.take().map(KafkaOutput::finish);
        self.counters.source_evictions = self.sources.evictions();
        self.counters.syn_join_evictions = self.joiner.evicted;
        // No expiry by the wall clock here: a capture file's campaigns end where the file does,
        // and are reported open, as a live run's are when it stops.
        self.poll_rogue();
        self.write_closed_campaigns();
        let now = realtime_ns();
        for campaign in self.aggregate.open_campaigns() {
            if self
                .writer
                .write(&CampaignDoc::new(now, &campaign))
                .is_err()
            {
                self.counters.output_errors += 1;
            }
        }
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
        // Everything before the stats document is accounted for in it.
        self.flush();
        if self
            .writer
            .write(
                &StatsDoc::new(realtime_ns(), kernel, &self.counters)
                    .with_kafka(kafka.as_ref())
                    .with_aggregate(&self.aggregate.counters()),
            )
            .is_err()
        {
            self.counters.output_errors += 1;
        }
        self.flush();
        (self.counters, kafka)
    }

    /// The report of everything aggregated so far, `top` rows per table.
    pub fn report(&self, top: usize) -> Summary {
        Summary::new(&self.aggregate, top)
    }

    pub fn rogue_counters(&self) -> Option<TrackerCounters> {
        self.rogue.as_ref().map(Tracker::counters)
    }
}
