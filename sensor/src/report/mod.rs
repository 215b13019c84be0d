//! Reports over event documents: the code behind `sensor kafka-report` and, later, `sensor
//! report` (issue 4).
//!
//! Deliberately minimal for now: a [`Report`] takes event documents one at a time (from NDJSON
//! lines, Kafka records, or a live run), keeps per-sensor, per-tool and per-source tallies, and
//! renders a [`Summary`] as a table or JSON. Campaigns, IP-ID and TTL distributions, the
//! seed-style findings and plots belong to issue 4 and are meant to be added here. Per-source
//! state is not bounded yet (a report over a day of a darknet is fine; a long-running live
//! report needs the bounded table of issue 4).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    fmt,
};

use serde::Serialize;

/// The tool name of events without a fingerprint.
pub const UNKNOWN_TOOL: &str = "unknown";
/// The sensor name of events without a `sensor` object (a single-sensor NDJSON file).
pub const UNNAMED_SENSOR: &str = "-";

#[derive(Default)]
struct SourceTally {
    events: u64,
    first_seen: String,
    last_seen: String,
    sensors: BTreeSet<String>,
    tools: BTreeSet<String>,
    destinations: HashSet<String>,
}

#[derive(Default)]
struct Tally {
    events: u64,
    sources: HashSet<String>,
    first_seen: String,
    last_seen: String,
}

impl Tally {
    fn add(&mut self, source: &str, timestamp: &str) {
        self.events += 1;
        if !self.sources.contains(source) {
            self.sources.insert(source.to_string());
        }
        widen(&mut self.first_seen, &mut self.last_seen, timestamp);
    }
}

/// RFC 3339 UTC timestamps of one fixed format order as strings.
fn widen(first: &mut String, last: &mut String, t: &str) {
    if t.is_empty() {
        return;
    }
    if first.is_empty() || t < first.as_str() {
        *first = t.to_string();
    }
    if last.is_empty() || t > last.as_str() {
        *last = t.to_string();
    }
}

/// Aggregates event documents.
#[derive(Default)]
pub struct Report {
    events: u64,
    /// Documents that are not `sip_probe` events (e.g. `stats`).
    other_documents: u64,
    /// Inputs that are not JSON objects.
    unreadable: u64,
    first_seen: String,
    last_seen: String,
    sensors: BTreeMap<String, Tally>,
    tools: BTreeMap<String, Tally>,
    sources: HashMap<String, SourceTally>,
}

impl Report {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one JSON document given as bytes (an NDJSON line or a Kafka record).
    pub fn add_json(&mut self, bytes: &[u8]) {
        match serde_json::from_slice::<serde_json::Value>(bytes) {
            Ok(doc) => self.add(&doc),
            Err(_) => self.unreadable += 1,
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
            return;
        }
        self.events += 1;
        let source = doc["src_ip"].as_str().unwrap_or("?");
        let timestamp = doc["timestamp"].as_str().unwrap_or("");
        let sensor = doc["sensor"]["name"].as_str().unwrap_or(UNNAMED_SENSOR);
        let tool = doc["fingerprint"]["tool"].as_str().unwrap_or(UNKNOWN_TOOL);
        widen(&mut self.first_seen, &mut self.last_seen, timestamp);
        self.sensors
            .entry(sensor.to_string())
            .or_default()
            .add(source, timestamp);
        self.tools
            .entry(tool.to_string())
            .or_default()
            .add(source, timestamp);
        let s = self.sources.entry(source.to_string()).or_default();
        s.events += 1;
        widen(&mut s.first_seen, &mut s.last_seen, timestamp);
        if !s.sensors.contains(sensor) {
            s.sensors.insert(sensor.to_string());
        }
        if !s.tools.contains(tool) {
            s.tools.insert(tool.to_string());
        }
        if let Some(dest) = doc["dest_ip"].as_str()
            && !s.destinations.contains(dest)
        {
            s.destinations.insert(dest.to_string());
        }
    }

    /// The summary with at most `top` sources (most events first, then address).
    pub fn summary(&self, top: usize) -> Summary {
        let row = |name: &String, t: &Tally| Row {
            name: name.clone(),
            events: t.events,
            sources: t.sources.len() as u64,
            first_seen: t.first_seen.clone(),
            last_seen: t.last_seen.clone(),
        };
        let mut sensors: Vec<Row> = self.sensors.iter().map(|(n, t)| row(n, t)).collect();
        sensors.sort_by(|a, b| b.events.cmp(&a.events).then(a.name.cmp(&b.name)));
        let mut tools: Vec<Row> = self.tools.iter().map(|(n, t)| row(n, t)).collect();
        tools.sort_by(|a, b| b.events.cmp(&a.events).then(a.name.cmp(&b.name)));
        let mut sources: Vec<SourceRow> = self
            .sources
            .iter()
            .map(|(ip, s)| SourceRow {
                src_ip: ip.clone(),
                events: s.events,
                destinations: s.destinations.len() as u64,
                sensors: s.sensors.iter().cloned().collect(),
                tools: s.tools.iter().cloned().collect(),
                first_seen: s.first_seen.clone(),
                last_seen: s.last_seen.clone(),
            })
            .collect();
        sources.sort_by(|a, b| b.events.cmp(&a.events).then(a.src_ip.cmp(&b.src_ip)));
        sources.truncate(top);
        Summary {
            events: self.events,
            sources: self.sources.len() as u64,
            other_documents: self.other_documents,
            unreadable: self.unreadable,
            first_seen: self.first_seen.clone(),
            last_seen: self.last_seen.clone(),
            sensors,
            tools,
            top_sources: sources,
        }
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

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Row {
    pub name: String,
    pub events: u64,
    pub sources: u64,
    pub first_seen: String,
    pub last_seen: String,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct SourceRow {
    pub src_ip: String,
    pub events: u64,
    pub destinations: u64,
    pub sensors: Vec<String>,
    pub tools: Vec<String>,
    pub first_seen: String,
    pub last_seen: String,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Summary {
    pub events: u64,
    pub sources: u64,
    pub other_documents: u64,
    pub unreadable: u64,
    pub first_seen: String,
    pub last_seen: String,
    pub sensors: Vec<Row>,
    pub tools: Vec<Row>,
    pub top_sources: Vec<SourceRow>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} events from {} sources, {} to {}",
            self.events,
            self.sources,
            if self.first_seen.is_empty() {
                "-"
            } else {
                &self.first_seen
            },
            if self.last_seen.is_empty() {
                "-"
            } else {
                &self.last_seen
            },
        )?;
        if self.other_documents + self.unreadable > 0 {
            writeln!(
                f,
                "({} other documents and {} unreadable records skipped)",
                self.other_documents, self.unreadable
            )?;
        }
        for (title, rows) in [("sensor", &self.sensors), ("tool", &self.tools)] {
            writeln!(f)?;
            writeln!(
                f,
                "{title:<24} {:>10} {:>8}  {:<27} last seen",
                "events", "sources", "first seen"
            )?;
            for r in rows {
                writeln!(
                    f,
                    "{:<24} {:>10} {:>8}  {:<27} {}",
                    r.name, r.events, r.sources, r.first_seen, r.last_seen
                )?;
            }
        }
        writeln!(f)?;
        writeln!(
            f,
            "{:<40} {:>8} {:>6}  {:<20} {:<16} {:<27} last seen",
            "top sources", "events", "dests", "sensors", "tools", "first seen"
        )?;
        for s in &self.top_sources {
            writeln!(
                f,
                "{:<40} {:>8} {:>6}  {:<20} {:<16} {:<27} {}",
                s.src_ip,
                s.events,
                s.destinations,
                s.sensors.join(","),
                s.tools.join(","),
                s.first_seen,
                s.last_seen
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn probe(
        sensor: Option<&str>,
        src: &str,
        dst: &str,
        ts: &str,
        tool: Option<&str>,
    ) -> serde_json::Value {
        let mut doc = json!({
            "event_type": "sip_probe",
            "timestamp": ts,
            "src_ip": src,
            "dest_ip": dst,
        });
        if let Some(s) = sensor {
            doc["sensor"] = json!({"name": s, "interface": "eth1", "prefixes": []});
        }
        if let Some(t) = tool {
            doc["fingerprint"] = json!({"tool": t});
        }
        doc
    }

    #[test]
    fn merges_sensors_tools_and_sources() {
        let docs = [
            probe(
                Some("a"),
                "198.51.100.1",
                "203.0.113.1",
                "2026-01-01T00:00:01.000000Z",
                Some("sipvicious"),
            ),
            probe(
                Some("b"),
                "198.51.100.1",
                "203.0.113.9",
                "2026-01-01T00:00:03.000000Z",
                Some("sipvicious"),
            ),
            probe(
                Some("b"),
                "198.51.100.2",
                "203.0.113.9",
                "2026-01-01T00:00:02.000000Z",
                None,
            ),
            probe(
                None,
                "198.51.100.3",
                "203.0.113.9",
                "2026-01-01T00:00:00.000000Z",
                None,
            ),
            json!({"event_type": "stats"}),
        ];
        let mut report = summarize(docs.iter());
        report.add_json(b"not json");
        let s = report.summary(10);
        assert_eq!(s.events, 4);
        assert_eq!(s.sources, 3);
        assert_eq!(s.other_documents, 1);
        assert_eq!(s.unreadable, 1);
        assert_eq!(s.first_seen, "2026-01-01T00:00:00.000000Z");
        assert_eq!(s.last_seen, "2026-01-01T00:00:03.000000Z");
        let names: Vec<_> = s
            .sensors
            .iter()
            .map(|r| (r.name.as_str(), r.events, r.sources))
            .collect();
        assert_eq!(names, [("b", 2, 2), ("-", 1, 1), ("a", 1, 1)]);
        let tools: Vec<_> = s
            .tools
            .iter()
            .map(|r| (r.name.as_str(), r.events))
            .collect();
        assert_eq!(tools, [("sipvicious", 2), ("unknown", 2)]);
        let top = &s.top_sources[0];
        assert_eq!(top.src_ip, "198.51.100.1");
        assert_eq!(top.events, 2);
        assert_eq!(top.destinations, 2);
        assert_eq!(top.sensors, ["a", "b"]);
        let table = s.to_string();
        assert!(table.starts_with("4 events from 3 sources"), "{table}");
        assert!(report.summary(1).top_sources.len() == 1);
    }
}
