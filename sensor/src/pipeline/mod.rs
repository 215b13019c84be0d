//! What the agent does with each record once the kernel (or the userspace extractor, for capture
//! files) has produced it: parse the SIP payload, fingerprint the sender, join reactive sessions,
//! follow servers, write the outputs, count everything. The live agent and `sensor analyze` share
//! it, so a capture file is analysed exactly as live traffic is.
//!
//! Two halves: an [`Analyst`] does the per-record work, whose state is keyed by source address,
//! and a [`Sink`] writes, aggregates and follows servers in the order records arrived. A
//! [`Pipeline`] is one of each on the calling thread, or with `--threads N`, N analysts on
//! threads of their own sharing the records out by source and one sink on the calling thread
//! ([`pool`]).

pub mod analyst;
pub mod batch;
pub mod pool;
pub mod sink;

use std::{net::IpAddr, path::PathBuf, sync::Arc};

use tokio::sync::Notify;

pub use analyst::{Analysed, Analyst, EventOutput};
pub use pool::AnalystPool;
pub use sink::Sink;

use crate::{
    aggregate::AggregateConfig,
    clock::WallClock,
    counters::{AgentCounters, KernelCounters},
    fingerprint::{Engine, RuleError},
    identity::SensorIdentity,
    output::{
        OutputError, OutputOptions, Outputs,
        event::EventDetail,
        kafka::{KafkaConfig, KafkaCounters, KafkaOutputError, KafkaStats},
        metrics::{CampaignGauges, Exposition},
    },
    record::Record,
    report::Summary,
    rogue::{TrackerConfig, TrackerCounters},
    sampling::SamplingConfig,
};

/// Sources tracked from which their state is fetched ahead ([`Pipeline::prefetch_source`]):
/// below, the aggregator's records (120 bytes each) and the IP-ID tracker's fit in a megabyte or
/// two, which the caches keep. Both tables hold the same sources; the tracker's is counted.
pub const FETCH_AHEAD_SOURCES: usize = 8192;

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
    /// Analysts on threads of their own (`--threads`); 0 or 1: the analysis runs on the
    /// calling thread.
    pub threads: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Rules(#[from] RuleError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error(transparent)]
    Kafka(#[from] KafkaOutputError),
    #[error("cannot start the analyst threads: {0}")]
    Threads(std::io::Error),
}

pub struct Pipeline {
    /// Analyses on the calling thread when there is no pool.
    analyst: Analyst,
    /// The analysts `--threads` asked for, until [`start`](Pipeline::start_outputs) gives them
    /// their threads.
    waiting: Vec<Analyst>,
    pool: Option<AnalystPool>,
    sink: Sink,
    pub counters: AgentCounters,
    /// The source last fetched ahead ([`prefetch_source`](Self::prefetch_source)), and the one
    /// before it: the next record's and, while a record is handled, most likely its own.
    fetched: Option<IpAddr>,
    fetched_before: Option<IpAddr>,
}

impl Pipeline {
    /// Loads the rules (a bad rule file is an error before anything else happens) and opens the
    /// outputs.
    pub fn new(options: &PipelineOptions) -> Result<Self, PipelineError> {
        let engine = Arc::new(Engine::load(options.rules.as_deref())?);
        let waiting = if options.threads > 1 {
            (0..options.threads)
                .map(|_| Analyst::new(engine.clone(), options))
                .collect()
        } else {
            Vec::new()
        };
        Ok(Self {
            analyst: Analyst::new(engine, options),
            waiting,
            pool: None,
            sink: Sink::new(options)?,
            counters: AgentCounters::default(),
            fetched: None,
            fetched_before: None,
        })
    }

    /// Starts what runs threads of its own: the analysts (`--threads`) and the outputs that
    /// have threads (Kafka, resuming its spool). Records handled before this are analysed on the
    /// calling thread, and their events go to the other outputs only. The live agent calls it
    /// once privileges are dropped: capabilities belong to threads.
    pub fn start_outputs(&mut self) -> Result<(), PipelineError> {
        if !self.waiting.is_empty() {
            let analysts = std::mem::take(&mut self.waiting);
            self.pool = Some(AnalystPool::start(analysts).map_err(PipelineError::Threads)?);
        }
        self.sink.start_outputs()
    }

    /// A ring buffer item: validated, then processed. Undecodable items are counted. `next`, the
    /// item most likely handled after it when it is known, has its source's state fetched
    /// ahead ([`prefetch_source`](Self::prefetch_source)).
    pub fn ring_item(&mut self, bytes: &[u8], next: Option<&[u8]>, clock: &WallClock) {
        if let Some(next) = next
            && self.fetches_ahead()
            && let Ok(next) = Record::from_bytes(next)
        {
            self.prefetch_source(next.src_ip());
        }
        self.counters.records_read += 1;
        match Record::from_bytes(bytes) {
            Ok(record) => {
                let wall_ns = clock.wall_ns(record.timestamp_ns());
                self.record(record, wall_ns);
            }
            Err(_) => self.counters.records_undecodable += 1,
        }
    }

    /// Fetches ahead, into the CPU's caches, the per-source state that handling a record from
    /// `source` will read: for the next record, while this one is handled. With many sources
    /// that state is megabytes, and the two lookups waiting on it were the two largest items of
    /// a profile of `sensor analyze` (18 % of its samples, 20,000 sources). Without analyst
    /// threads only (with them, the records are handled in rounds elsewhere).
    pub fn prefetch_source(&mut self, source: IpAddr) {
        if self.fetches_ahead() {
            self.analyst.prefetch_source(source);
            self.sink.prefetch_source(source);
            self.fetched = Some(source);
        }
    }

    /// Whether [`prefetch_source`](Self::prefetch_source) does anything: not with analyst
    /// threads, and not while the sources are few enough for their state to stay in the CPU's
    /// caches, where fetching it ahead only costs instructions.
    pub fn fetches_ahead(&self) -> bool {
        self.pool.is_none() && self.analyst.tracked_sources() >= FETCH_AHEAD_SOURCES
    }

    /// One record, with its wall-clock time: analysed and written now, or with analyst
    /// threads, added to the round being filled (written once the round comes back).
    pub fn record(&mut self, record: Record<'_>, wall_ns: u64) {
        match &mut self.pool {
            None => {
                // A record whose source's state was fetched ahead: that state is in cache now,
                // so what the aggregator will relink beside it is known, and fetched while the
                // record is analysed.
                let source = record.src_ip();
                if self.fetched_before.take() == Some(source) {
                    self.sink.prefetch_neighbours(source);
                }
                self.fetched_before = self.fetched.take();
                let analysed = self.analyst.analyse(record, wall_ns);
                self.sink
                    .take(record, wall_ns, &analysed, &mut self.counters);
            }
            Some(pool) => {
                if pool.push(record, wall_ns) {
                    send_round(pool, &mut self.sink, &mut self.counters);
                }
            }
        }
    }

    /// The pool, the sink and the counters, with analyst threads.
    fn pooled(&mut self) -> Option<(&mut AnalystPool, &mut Sink, &mut AgentCounters)> {
        let pool = self.pool.as_mut()?;
        Some((pool, &mut self.sink, &mut self.counters))
    }

    /// Writes the rounds the analysts have finished, oldest first, without waiting; then sends
    /// the round being filled.
    fn take_analysed(&mut self) {
        if let Some((pool, sink, counters)) = self.pooled() {
            while pool.oldest_done() {
                write_round(pool, sink, counters);
            }
            if pool.filling() > 0 {
                send_round(pool, sink, counters);
            }
        }
    }

    /// Sends what is filling and writes every round out, waiting for the analysts: after it,
    /// every record handed to the pipeline is written and aggregated.
    pub fn settle(&mut self) {
        if let Some((pool, sink, counters)) = self.pooled() {
            // Waiting here is the point, not a sign of analysts behind: not counted.
            while pool.filling() > 0 && !pool.can_send() {
                write_round(pool, sink, counters);
            }
            pool.send();
            while pool.rounds_out() > 0 {
                write_round(pool, sink, counters);
            }
        }
    }

    /// Whether rounds of records are out with the analyst threads (never without them). After
    /// [`flush`](Self::flush) nothing is left filling: every record handed in is written or out.
    pub fn awaiting_analysts(&self) -> bool {
        self.pool.as_ref().is_some_and(|p| p.rounds_out() > 0)
    }

    /// Analyst threads running (0: the analysis runs on the calling thread).
    pub fn analyst_threads(&self) -> usize {
        self.pool.as_ref().map_or(0, AnalystPool::threads)
    }

    /// Rung when an analyst thread finishes a batch (`None` without analyst threads): wait on it
    /// while [`awaiting_analysts`](Self::awaiting_analysts), then [`flush`](Self::flush).
    pub fn analysed_signal(&self) -> Option<Arc<Notify>> {
        self.pool.as_ref().map(AnalystPool::ready)
    }

    /// Writes what the analyst threads have finished and sends them what is filling, then
    /// pushes buffered output out; called after each batch of records.
    pub fn flush(&mut self) {
        self.take_analysed();
        self.fill_analyst_counters();
        self.sink.flush(&mut self.counters);
    }

    fn fill_analyst_counters(&mut self) {
        match &self.pool {
            None => self.analyst.fill_counters(&mut self.counters),
            Some(pool) => pool.fill_counters(&mut self.counters),
        }
    }

    /// Periodic work, about once a second: campaigns' windows, the rogue tracker's timeouts and
    /// new findings, and the outputs' (time rotation, moved files, retries after a failure).
    pub fn tick(&mut self) {
        self.sink.tick(&mut self.counters);
    }

    /// Keeps per-source IP-ID state for up to `capacity` sources (per analyst); beyond it a
    /// source not seen for a turn of the tracker's CLOCK hand is evicted (an approximation of
    /// least recently seen). Before [`start_outputs`](Self::start_outputs).
    pub fn track_sources(&mut self, capacity: usize) {
        for analyst in std::iter::once(&mut self.analyst).chain(&mut self.waiting) {
            analyst.track_sources(capacity);
        }
    }

    /// Sources the calling thread's analyst holds state for (those on threads are not asked).
    pub fn tracked_sources(&self) -> usize {
        self.analyst.tracked_sources()
    }

    /// Messages for the operator since the last call: an output that failed or came back.
    pub fn take_notices(&mut self) -> Vec<String> {
        self.sink.take_notices()
    }

    /// The Kafka output's live counters, if it is on.
    pub fn kafka_counters(&self) -> Option<Arc<KafkaCounters>> {
        self.sink.kafka_counters()
    }

    /// The report of everything aggregated so far, `top` rows per table (with analyst threads,
    /// [`settle`](Self::settle) first for every record handed in).
    pub fn report(&self, top: usize) -> Summary {
        self.sink.report(top)
    }

    /// The final documents: open campaigns, each tracked server's state, the tracker's
    /// counters, and the stats (kernel counters when there is a kernel, i.e. live); then the
    /// outputs are closed. Stops the Kafka output first, which delivers or spools what is left
    /// (blocking, up to its shutdown timeout).
    pub fn finish(&mut self, kernel: &KernelCounters) -> Option<KafkaStats> {
        self.settle();
        self.fill_analyst_counters();
        self.sink.finish(kernel, &mut self.counters)
    }

    pub fn rogue_counters(&self) -> Option<TrackerCounters> {
        self.sink.rogue_counters()
    }

    pub fn outputs(&self) -> &Outputs {
        self.sink.outputs()
    }

    /// Campaign gauges for the metrics: open campaigns, and sources the aggregator tracks.
    pub fn campaign_gauges(&self) -> Option<CampaignGauges> {
        Some(self.sink.campaign_gauges())
    }

    /// The pipeline's metric families: agent counters, events per tool, the outputs, campaigns.
    pub fn write_metrics(&self, out: &mut Exposition) {
        self.sink.write_metrics(out, &self.counters);
        out.gauge(
            "sensor_analyst_threads",
            "Threads analysing records (--threads); 0: the analysis runs on the reading thread.",
            self.analyst_threads() as u64,
        );
        out.counter(
            "sensor_agent_analyst_waits_total",
            "Times the reading thread waited for the analyst threads, every round being out: \
             rising while live, the analysts fall behind the traffic.",
            self.counters.analyst_waits,
        );
    }
}

/// Sends the round being filled to the analysts, first writing the oldest rounds out (waiting
/// for them) while as many as the pool allows are out.
fn send_round(pool: &mut AnalystPool, sink: &mut Sink, counters: &mut AgentCounters) {
    if !pool.can_send() {
        counters.analyst_waits += 1;
    }
    while !pool.can_send() {
        write_round(pool, sink, counters);
    }
    pool.send();
}

/// One round the analysts have sent back (waiting for it if need be), through the sink.
fn write_round(pool: &mut AnalystPool, sink: &mut Sink, counters: &mut AgentCounters) {
    pool.take(|item| match item {
        Some((record, wall_ns, analysed)) => sink.take(record, wall_ns, analysed, counters),
        None => counters.records_undecodable += 1,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        output::{Destination, InterfaceNames, Rotation},
        sampling::SamplingConfig,
    };
    use sensor_common::CaptureRecord;

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
        let aggregated = pipeline.sink.aggregated_events();
        pipeline.finish(&KernelCounters::default());
        let text = std::fs::read_to_string(dir.join("events.ndjson")).unwrap();
        let probes = text.lines().filter(|l| l.contains("\"sip_probe\"")).count();
        let pcapng = std::fs::metadata(dir.join("records.pcapng")).unwrap().len();
        std::fs::remove_dir_all(&dir).unwrap();
        (pipeline.counters, aggregated, probes, pcapng)
    }

    /// Fetching ahead changes nothing but timing. With more sources than fetching ahead starts
    /// at, one pipeline is given each record's successor as the record to fetch ahead for, and
    /// for every third record a cut or a zeroed one instead; it counts and reports what a
    /// pipeline given none does.
    #[test]
    fn fetching_ahead_changes_nothing() {
        let corpus = crate::offline::corpus_records();
        let records: Vec<CaptureRecord> = (0..FETCH_AHEAD_SOURCES as u32 + 2_000)
            .map(|i| {
                let mut r = corpus[i as usize % corpus.len()];
                let at = if r.ip_version == 4 { 0 } else { 12 };
                r.src_addr[at..at + 4].copy_from_slice(&(0xc612_0000 + i).to_be_bytes());
                r
            })
            .collect();
        let bytes = crate::record::record_bytes;
        let zeroed = CaptureRecord::zeroed();
        let clock = WallClock::now();
        let options = PipelineOptions {
            outputs: OutputOptions {
                ndjson: None,
                pcapng: None,
                rotation: Rotation::default(),
                interface_names: InterfaceNames::Capture("t".into()),
            },
            ..PipelineOptions::default()
        };
        let mut ahead = Pipeline::new(&options).unwrap();
        let mut plain = Pipeline::new(&options).unwrap();
        for (i, r) in records.iter().enumerate() {
            let next = match (i % 3, records.get(i + 1)) {
                (_, None) => None,
                (0, Some(_)) => Some(bytes(&zeroed)),
                (1, Some(n)) => Some(&bytes(n)[..40]),
                (_, Some(n)) => Some(bytes(n)),
            };
            ahead.ring_item(bytes(r), next, &clock);
            plain.ring_item(bytes(r), None, &clock);
        }
        assert!(ahead.fetches_ahead(), "{}", ahead.tracked_sources());
        assert_eq!(ahead.counters.records_read, records.len() as u64);
        assert_eq!(ahead.counters.records_undecodable, 0);
        assert_eq!(
            format!("{:?}", ahead.counters),
            format!("{:?}", plain.counters)
        );
        assert_eq!(ahead.report(20).to_string(), plain.report(20).to_string());
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
