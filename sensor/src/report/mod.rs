//! Reports over event documents: `sensor report FILE...`, the report a live run and `sensor
//! analyze` print when they end, and any other consumer of event documents (a Kafka topic).
//!
//! A [`Report`] takes documents one at a time, as JSON bytes ([`Report::add_json`]: an NDJSON
//! line, a Kafka record), as a `serde_json::Value` ([`Report::add`]), or already typed
//! ([`Report::add_observation`]), and feeds the bounded [`Aggregator`]. [`Report::summary`]
//! (or [`Summary::new`] over any aggregator, e.g. the live pipeline's) gives a [`Summary`]: top
//! tools, campaigns and sources, and per tool the seed-style findings, stated with their numbers
//! and caveats. A summary prints as a terminal table (every string from the input made
//! terminal-safe and bounded), serializes as JSON, and draws as an SVG plot of events over time
//! per tool ([`plot::svg`]).
//!
//! - [`input`]: the typed subset of a `sip_probe` document the report reads.
//! - [`findings`]: the sentences an analyst would otherwise write by hand.
//! - [`table`]: the terminal rendering.
//! - [`plot`]: the SVG, written by hand.

pub mod findings;
pub mod input;
pub mod plot;
pub mod table;

use std::io::BufRead;

use serde::Serialize;

use crate::{
    aggregate::{
        AggregateConfig, AggregateCounters, Aggregator, Observation, SensorSummary, SourceSummary,
        ToolSummary, campaign::CampaignSummary, timeseries::Timeseries,
    },
    clock::rfc3339_micros,
};

pub use findings::ToolFindings;
use input::ProbeInput;

/// The tool name of events without a fingerprint.
pub const UNKNOWN_TOOL: &str = crate::aggregate::UNKNOWN;
/// The sensor name of events without a `sensor` object (a single-sensor NDJSON file).
pub const UNNAMED_SENSOR: &str = "-";
/// Rows per table unless told otherwise.
pub const DEFAULT_TOP: usize = 10;

/// Aggregates event documents from anywhere.
#[derive(Default)]
pub struct Report {
    aggregate: Aggregator,
    /// Documents that are not `sip_probe` events (`stats`, `campaign`, rogue documents).
    other_documents: u64,
    /// Inputs that are not JSON objects, or `sip_probe` documents without a readable time or
    /// addresses, or NDJSON lines longer than `input::MAX_LINE`.
    unreadable: u64,
    /// `agent.events_sampled_out` summed over the `stats` documents read.
    sampled_out: u64,
}

impl Report {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_config(config: AggregateConfig) -> Self {
        Self {
            aggregate: Aggregator::new(config),
            ..Self::default()
        }
    }

    /// Adds one JSON document given as bytes (an NDJSON line or a Kafka record).
    pub fn add_json(&mut self, bytes: &[u8]) {
        match serde_json::from_slice::<ProbeInput<'_>>(bytes) {
            Ok(input) => self.add_input(&input),
            // Not the shape of a probe: another document type whose fields clash, or not JSON.
            Err(_) => match serde_json::from_slice::<serde_json::Value>(bytes) {
                Ok(doc) if doc.is_object() && doc["event_type"] != "sip_probe" => {
                    self.other_documents += 1
                }
                _ => self.unreadable += 1,
            },
        }
    }

    /// Adds one event document; other documents are counted and skipped.
    pub fn add(&mut self, doc: &serde_json::Value) {
        if !doc.is_object() {
            self.unreadable += 1;
            return;
        }
        if doc["event_type"] != "sip_probe" {
            self.other_documents += 1;
            if doc["event_type"] == "stats" {
                self.sampled_out += doc["agent"]["events_sampled_out"].as_u64().unwrap_or(0);
            }
            return;
        }
        match serde::Deserialize::deserialize(doc) {
            Ok(input) => self.add_input(&input),
            Err(_) => self.unreadable += 1,
        }
    }

    fn add_input(&mut self, input: &ProbeInput<'_>) {
        if !input.is_probe() {
            self.other_documents += 1;
            self.sampled_out += input.sampled_out().unwrap_or(0);
            return;
        }
        match input.observation() {
            Some(o) => self.add_observation(&o),
            None => self.unreadable += 1,
        }
    }

    pub fn add_observation(&mut self, o: &Observation<'_>) {
        self.aggregate.observe(o);
        // Closed campaigns stay in the aggregator's summary list; nobody writes their documents
        // here, so the queue is emptied to keep it from counting them as dropped.
        self.aggregate.take_closed();
    }

    /// Adds every line of an NDJSON stream; returns the lines read.
    pub fn read_ndjson(&mut self, input: impl BufRead) -> std::io::Result<u64> {
        input::for_each_line(input, |line| match line {
            Some(line) => self.add_json(line),
            None => self.unreadable += 1,
        })
    }

    pub fn aggregator(&self) -> &Aggregator {
        &self.aggregate
    }

    /// The summary with at most `top` rows per table.
    pub fn summary(&self, top: usize) -> Summary {
        let mut s = Summary::new(&self.aggregate, top);
        s.other_documents = self.other_documents;
        s.unreadable = self.unreadable;
        s.sampled_out = self.sampled_out;
        s
    }
}

/// Aggregates every document of an iterator.
pub fn summarize<'a>(docs: impl IntoIterator<Item = &'a serde_json::Value>) -> Report {
    let mut report = Report::new();
    for doc in docs {
        report.add(doc);
    }
    report
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub events: u64,
    pub sources: u64,
    pub sources_approximate: bool,
    pub destinations: u64,
    pub other_documents: u64,
    pub unreadable: u64,
    /// Events the sensor counted but did not write (`--events-per-template`), from the input's
    /// `stats` documents: the events above cover only those written.
    pub sampled_out: u64,
    pub first_seen: String,
    pub last_seen: String,
    pub hours: f64,
    /// Per tool (scanners and unknown tools first, most events first), the seed-style findings.
    pub findings: Vec<ToolFindings>,
    pub sensors: Vec<SensorSummary>,
    pub tools: Vec<ToolSummary>,
    /// Campaigns opened in total, and the largest ones.
    pub campaigns_total: u64,
    pub campaigns: Vec<CampaignSummary>,
    pub top_sources: Vec<SourceSummary>,
    pub aggregate: AggregateCounters,
    #[serde(skip)]
    pub timeseries: Timeseries,
    #[serde(skip)]
    pub top: usize,
}

impl Summary {
    /// The summary of an aggregator (the live pipeline's, or a report's).
    pub fn new(aggregate: &Aggregator, top: usize) -> Self {
        let totals = aggregate.totals();
        let tools = aggregate.tools();
        let findings = findings::all(&tools, top);
        let counters = aggregate.counters();
        Summary {
            events: totals.events,
            sources: totals.sources,
            sources_approximate: totals.sources_approximate,
            destinations: totals.destinations,
            other_documents: 0,
            unreadable: 0,
            sampled_out: 0,
            first_seen: if totals.events > 0 {
                rfc3339_micros(totals.first_ns)
            } else {
                String::new()
            },
            last_seen: if totals.events > 0 {
                rfc3339_micros(totals.last_ns)
            } else {
                String::new()
            },
            hours: totals.last_ns.saturating_sub(totals.first_ns) as f64 / 3.6e12,
            findings,
            sensors: aggregate.sensors(),
            tools,
            campaigns_total: counters.campaigns_opened,
            campaigns: aggregate.top_campaigns(top),
            top_sources: aggregate.top_sources(top),
            aggregate: counters,
            timeseries: aggregate.timeseries().clone(),
            top,
        }
    }
}

#[cfg(test)]
mod tests;
