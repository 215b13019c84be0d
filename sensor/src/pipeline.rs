//! What the agent does with each record once the kernel (or the userspace extractor, for capture
//! files) has produced it: parse the SIP payload, fingerprint the sender, join reactive sessions,
//! follow servers, write the outputs, count everything. The live agent and `sensor analyze` share
//! it, so a capture file is analysed exactly as live traffic is.

use std::path::PathBuf;

use crate::{
    aggregate::{AggregateConfig, Aggregator, Observation, doc::CampaignDoc},
    clock::{WallClock, monotonic_ns, realtime_ns},
    counters::{AgentCounters, KernelCounters},
    event::Event,
    fingerprint::{Engine, RuleError, SourceTracker},
    output::{
        NdjsonWriter,
        json::{EventDoc, StatsDoc},
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
    /// Bounds and windows of the per-source and campaign aggregation.
    pub aggregate: AggregateConfig,
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
    sources: SourceTracker,
    joiner: SynJoiner,
    rogue: Option<Tracker>,
    aggregate: Aggregator,
    writer: NdjsonWriter,
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
            sources: SourceTracker::default(),
            joiner: SynJoiner::new(SYN_JOIN_CAPACITY),
            rogue: options.detect_rogue.clone().map(Tracker::new),
            aggregate: Aggregator::new(options.aggregate),
            writer,
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
        let mut doc = EventDoc::analyzed(&event, &self.engine, &mut self.sources);
        if let Some(reactive) = &mut doc.reactive {
            reactive.syn = self.joiner.observe(&record, wall_ns);
        }
        match self.writer.write(&doc) {
            Ok(()) => self.counters.events_written += 1,
            Err(_) => self.counters.output_errors += 1,
        }
        self.aggregate
            .observe(&Observation::from_doc(&doc, wall_ns));
        self.write_closed_campaigns();
        if let Some(tracker) = &mut self.rogue {
            tracker.observe(&event);
        }
    }

    /// Pushes buffered output out; called after each batch.
    pub fn flush(&mut self) {
        if self.writer.flush().is_err() {
            self.counters.output_errors += 1;
        }
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

    /// The final documents: each tracked server's state, the tracker's counters, and the stats
    /// (kernel counters when there is a kernel, i.e. live).
    pub fn finish(&mut self, kernel: &KernelCounters) {
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
        if self
            .writer
            .write(
                &StatsDoc::new(realtime_ns(), kernel, &self.counters)
                    .with_aggregate(&self.aggregate.counters()),
            )
            .is_err()
        {
            self.counters.output_errors += 1;
        }
        self.flush();
    }

    /// The report of everything aggregated so far, `top` rows per table.
    pub fn report(&self, top: usize) -> Summary {
        Summary::new(&self.aggregate, top)
    }

    pub fn rogue_counters(&self) -> Option<TrackerCounters> {
        self.rogue.as_ref().map(Tracker::counters)
    }
}
