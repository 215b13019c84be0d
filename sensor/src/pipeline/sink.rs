//! The shared half of the pipeline: takes analysed records in their order of arrival, writes
//! them to the outputs, counts tools, aggregates sources and campaigns and follows servers.
//! Campaigns span sources, so there is one sink however many analysts feed it.

use std::{net::IpAddr, sync::Arc};

use super::{
    PipelineError, PipelineOptions,
    analyst::{Analysed, EventOutput},
};
use crate::{
    aggregate::{Aggregator, doc::CampaignDoc},
    clock::{monotonic_ns, realtime_ns},
    counters::{AgentCounters, KernelCounters},
    event::Event,
    identity::SensorIdentity,
    output::{
        Label, Outputs,
        json::StatsDoc,
        kafka::{KafkaConfig, KafkaCounters, KafkaOutput, KafkaStats},
        metrics::{CampaignGauges, Exposition, Kind},
    },
    record::Record,
    report::Summary,
    rogue::{
        Tracker, TrackerCounters,
        doc::{RogueStatsDoc, ServerDoc},
    },
};

pub struct Sink {
    rogue: Option<Tracker>,
    aggregate: Aggregator,
    outputs: Outputs,
    identity: Option<SensorIdentity>,
    kafka: Option<KafkaOutput>,
    /// Started by `start_outputs`, not by `new`: the Kafka producer runs threads, and the live
    /// agent must drop its capabilities while it is still single-threaded.
    kafka_config: Option<KafkaConfig>,
}

impl Sink {
    /// Opens the outputs.
    pub fn new(options: &PipelineOptions) -> Result<Self, PipelineError> {
        Ok(Self {
            rogue: options.detect_rogue.clone().map(Tracker::new),
            aggregate: Aggregator::new(options.aggregate),
            outputs: Outputs::open(&options.outputs)?,
            identity: options.identity.clone(),
            kafka: None,
            kafka_config: options.kafka.clone(),
        })
    }

    /// Starts the outputs that run threads of their own (Kafka, resuming its spool).
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

    /// Fetches ahead the state [`take`](Self::take) will read for a packet from `source`.
    pub fn prefetch_source(&self, source: IpAddr) {
        self.aggregate.prefetch_source(source);
    }

    /// Fetches ahead the state [`take`](Self::take) will write besides `source`'s own: the
    /// records next to it in the aggregator's recency order.
    pub fn prefetch_neighbours(&self, source: IpAddr) {
        self.aggregate.prefetch_neighbours(source);
    }

    /// One analysed record.
    pub fn take(
        &mut self,
        record: Record<'_>,
        wall_ns: u64,
        analysed: &Analysed<'_>,
        counters: &mut AgentCounters,
    ) {
        let observation = &analysed.observation;
        let label = Label {
            tool: observation.tool,
            variant: observation.variant,
            rule: observation.rule,
            category: observation.category,
            confidence: analysed.confidence,
        };
        match analysed.output {
            EventOutput::Written { line, lean } => {
                self.outputs.event(&record, wall_ns, Some(&label), line);
                counters.events_written += 1;
                if lean {
                    counters.events_lean += 1;
                }
                if let Some(kafka) = &self.kafka {
                    // Keyed by source address: one source's events stay in one partition, in
                    // order. A non-blocking hand-off: a slow broker never slows the ring drain.
                    let key = record.src_ip().to_string();
                    kafka.offer(key.as_bytes(), (wall_ns / 1_000_000) as i64, line.to_vec());
                }
            }
            EventOutput::SampledOut => {
                self.outputs.record_only(&record, wall_ns, Some(&label));
                counters.events_sampled_out += 1;
            }
            EventOutput::Unserialisable => {
                counters.output_errors += 1;
                return;
            }
        }
        self.aggregate.observe(observation);
        self.write_closed_campaigns();
        if let Some(tracker) = &mut self.rogue {
            tracker.observe(&Event { record, wall_ns });
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
    pub fn flush(&mut self, counters: &mut AgentCounters) {
        self.outputs.flush();
        counters.output_errors = self.outputs.dropped();
    }

    /// Periodic work, about once a second: campaigns' windows, the rogue tracker's timeouts and
    /// new findings, and the outputs' (time rotation, moved files, retries after a failure).
    pub fn tick(&mut self, counters: &mut AgentCounters) {
        self.aggregate.expire(realtime_ns());
        self.write_closed_campaigns();
        if let Some(tracker) = &mut self.rogue {
            for report in tracker.poll(monotonic_ns()) {
                self.outputs
                    .document(&ServerDoc::finding(realtime_ns(), &report));
            }
        }
        self.outputs.tick(realtime_ns());
        counters.output_errors = self.outputs.dropped();
    }

    pub fn take_notices(&mut self) -> Vec<String> {
        self.outputs.take_notices()
    }

    pub fn kafka_counters(&self) -> Option<Arc<KafkaCounters>> {
        self.kafka.as_ref().map(KafkaOutput::counters)
    }

    pub fn report(&self, top: usize) -> Summary {
        Summary::new(&self.aggregate, top)
    }

    /// The final documents (open campaigns, each tracked server's state, the tracker's
    /// counters, the stats with `counters` complete), then closes the outputs. Stops the Kafka
    /// output first, which delivers or spools what is left (blocking, up to its shutdown
    /// timeout).
    pub fn finish(
        &mut self,
        kernel: &KernelCounters,
        counters: &mut AgentCounters,
    ) -> Option<KafkaStats> {
        let kafka = self.kafka.take().map(KafkaOutput::finish);
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
        self.flush(counters);
        let stats = StatsDoc::new(realtime_ns(), kernel, counters)
            .with_outputs(&self.outputs)
            .with_kafka(kafka.as_ref())
            .with_aggregate(&self.aggregate.counters());
        self.outputs.document(&stats);
        self.outputs.finish();
        counters.output_errors = self.outputs.dropped();
        kafka
    }

    pub fn rogue_counters(&self) -> Option<TrackerCounters> {
        self.rogue.as_ref().map(Tracker::counters)
    }

    pub fn outputs(&self) -> &Outputs {
        &self.outputs
    }

    pub fn aggregated_events(&self) -> u64 {
        self.aggregate.counters().events
    }

    pub fn campaign_gauges(&self) -> CampaignGauges {
        let counters = self.aggregate.counters();
        CampaignGauges {
            active: counters.campaigns_open,
            sources: counters.sources_tracked,
        }
    }

    /// The pipeline's metric families: agent counters (`c`), events per tool, the outputs,
    /// campaigns.
    pub fn write_metrics(&self, out: &mut Exposition, c: &AgentCounters) {
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
        let mut tools: Vec<(&str, u64)> = self.aggregate.tool_events().collect();
        tools.sort();
        for (tool, n) in tools {
            out.sample("sensor_events_by_tool_total", &[("tool", tool)], n);
        }
        self.outputs.write_metrics(out);
        let campaigns = self.campaign_gauges();
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
