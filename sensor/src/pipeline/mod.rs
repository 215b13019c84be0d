//! What the agent does with each record once the kernel (or the userspace extractor, for capture
//! files) has produced it: parse the SIP payload, fingerprint the sender, join reactive sessions,
//! follow servers, write the outputs, count everything. The live agent and `sensor analyze` share
//! it, so a capture file is analysed exactly as live traffic is.
//!
//! Two halves: an [`Analyst`] does the per-record work, whose state is keyed by source address,
//! and a [`Sink`] writes, aggregates and follows servers in the order records arrived. A
//! [`Pipeline`] is one of each on one thread; `sensor analyze --threads` shares records out among
//! analysts by source and feeds one sink (`offline::parallel`).

pub mod analyst;
pub mod batch;
pub mod sink;

use std::{collections::HashMap, path::PathBuf, sync::Arc};

pub use analyst::{Analysed, Analyst, EventOutput};
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
    analyst: Analyst,
    sink: Sink,
    pub counters: AgentCounters,
}

impl Pipeline {
    /// Loads the rules (a bad rule file is an error before anything else happens) and opens the
    /// outputs.
    pub fn new(options: &PipelineOptions) -> Result<Self, PipelineError> {
        let engine = Arc::new(Engine::load(options.rules.as_deref())?);
        Ok(Self {
            analyst: Analyst::new(engine, options),
            sink: Sink::new(options)?,
            counters: AgentCounters::default(),
        })
    }

    /// Starts the outputs that run threads of their own (Kafka, resuming its spool). Events
    /// handled before this go to the other outputs only.
    pub fn start_outputs(&mut self) -> Result<(), PipelineError> {
        self.sink.start_outputs()
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
        let analysed = self.analyst.analyse(record, wall_ns);
        self.sink
            .take(record, wall_ns, &analysed, &mut self.counters);
    }

    /// The analyst, for the threads of `sensor analyze --threads` (`offline::parallel`).
    pub fn analyst_mut(&mut self) -> &mut Analyst {
        &mut self.analyst
    }

    /// The analyst, the sink and the counters, for analysts on threads of their own feeding the
    /// sink (`offline::parallel`).
    pub fn parts_mut(&mut self) -> (&mut Analyst, &mut Sink, &mut AgentCounters) {
        (&mut self.analyst, &mut self.sink, &mut self.counters)
    }

    /// Pushes buffered output out; called after each batch.
    pub fn flush(&mut self) {
        self.analyst.fill_counters(&mut self.counters);
        self.sink.flush(&mut self.counters);
    }

    /// Periodic work, about once a second: campaigns' windows, the rogue tracker's timeouts and
    /// new findings, and the outputs' (time rotation, moved files, retries after a failure).
    pub fn tick(&mut self) {
        self.sink.tick(&mut self.counters);
    }

    /// Keeps per-source IP-ID state for up to `capacity` sources; beyond it a source not seen for
    /// a turn of the tracker's CLOCK hand is evicted (an approximation of least recently seen).
    pub fn track_sources(&mut self, capacity: usize) {
        self.analyst.track_sources(capacity);
    }

    /// Sources the pipeline holds state for.
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

    /// The report of everything aggregated so far, `top` rows per table.
    pub fn report(&self, top: usize) -> Summary {
        self.sink.report(top)
    }

    /// The final documents: open campaigns, each tracked server's state, the tracker's
    /// counters, and the stats (kernel counters when there is a kernel, i.e. live); then the
    /// outputs are closed. Stops the Kafka output first, which delivers or spools what is left
    /// (blocking, up to its shutdown timeout).
    pub fn finish(&mut self, kernel: &KernelCounters) -> Option<KafkaStats> {
        self.analyst.fill_counters(&mut self.counters);
        self.sink.finish(kernel, &mut self.counters)
    }

    pub fn rogue_counters(&self) -> Option<TrackerCounters> {
        self.sink.rogue_counters()
    }

    pub fn outputs(&self) -> &Outputs {
        self.sink.outputs()
    }

    /// Events per tool so far.
    pub fn tool_counts(&self) -> &HashMap<String, u64> {
        self.sink.tool_counts()
    }

    /// Campaign gauges for the metrics: open campaigns, and sources the aggregator tracks.
    pub fn campaign_gauges(&self) -> Option<CampaignGauges> {
        Some(self.sink.campaign_gauges())
    }

    /// The pipeline's metric families: agent counters, events per tool, the outputs, campaigns.
    pub fn write_metrics(&self, out: &mut Exposition) {
        self.sink.write_metrics(out, &self.counters);
    }
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
        let aggregated = pipeline.sink.aggregated_events();
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
