//! The NDJSON documents of rogue detection, beside the `sip_probe` events:
//!
//! - `rogue_server`: a server newly found rogue (once per server while it is tracked);
//! - `sip_server`: every tracked server's state, written when the agent stops;
//! - `rogue_stats`: the tracker's counters, written when the agent stops.
//!
//! Field names are part of the documented schema (docs/rogue.md): add fields, never rename.

use serde::Serialize;

use super::{ServerReport, TrackerCounters};
use crate::{clock::rfc3339_micros, output::json::SCHEMA_VERSION};

#[derive(Serialize)]
pub struct ServerDoc<'a> {
    pub timestamp: String,
    pub event_type: &'static str,
    pub schema_version: u32,
    pub first_seen: String,
    pub last_seen: String,
    #[serde(flatten)]
    pub report: &'a ServerReport,
}

impl<'a> ServerDoc<'a> {
    /// A `rogue_server` finding.
    pub fn finding(wall_ns: u64, report: &'a ServerReport) -> Self {
        Self::new("rogue_server", wall_ns, report)
    }

    /// A `sip_server` state report.
    pub fn state(wall_ns: u64, report: &'a ServerReport) -> Self {
        Self::new("sip_server", wall_ns, report)
    }

    fn new(event_type: &'static str, wall_ns: u64, report: &'a ServerReport) -> Self {
        Self {
            timestamp: rfc3339_micros(wall_ns),
            event_type,
            schema_version: SCHEMA_VERSION,
            first_seen: rfc3339_micros(report.first_seen_wall_ns),
            last_seen: rfc3339_micros(report.last_seen_wall_ns),
            report,
        }
    }
}

#[derive(Serialize)]
pub struct RogueStatsDoc {
    pub timestamp: String,
    pub event_type: &'static str,
    pub schema_version: u32,
    pub rogue: TrackerCounters,
}

impl RogueStatsDoc {
    pub fn new(wall_ns: u64, counters: TrackerCounters) -> Self {
        Self {
            timestamp: rfc3339_micros(wall_ns),
            event_type: "rogue_stats",
            schema_version: SCHEMA_VERSION,
            rogue: counters,
        }
    }
}
