//! Where events go. Each output is a sink of its own, any combination at once:
//!
//! - [`ndjson`]: one JSON document per line (events, and the documents about the sensor);
//! - [`pcapng`]: each captured record as a packet, with its fingerprint in a comment;
//! - [`metrics`]: the Prometheus exposition, served over HTTP by the live agent;
//! - [`file`]: what the file outputs share: 0640 files, rotation, failure and recovery, counters;
//! - [`kafka`]: events to a Kafka topic, with a bounded on-disk [`spool`] while the broker is away.
//!
//! [`Outputs`] holds the enabled sinks for the pipeline. Each sink counts what it wrote and what
//! it dropped; a sink that cannot write drops and counts, and never stops the others.

pub mod event;
pub mod file;
pub mod fingerprint;
pub mod json;
pub mod kafka;
pub mod lean;
pub mod metrics;
pub mod ndjson;
pub mod pcapng;
pub mod sip;
pub mod spool;

use serde::Serialize;

pub use file::{Destination, OutputError, Rotation, SinkCounters};
pub use ndjson::NdjsonSink;
pub use pcapng::{InterfaceNames, Label, PcapngSink};

use crate::{
    output::metrics::{Exposition, Kind},
    record::Record,
};

/// Which outputs to open, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputOptions {
    /// NDJSON documents; `None`: no NDJSON.
    pub ndjson: Option<Destination>,
    /// pcapng of the records; `None`: no pcapng.
    pub pcapng: Option<Destination>,
    /// Applies to every file output.
    pub rotation: Rotation,
    /// How the pcapng interface blocks name the records' interfaces.
    pub interface_names: InterfaceNames,
}

impl Default for OutputOptions {
    /// NDJSON to stdout, nothing else.
    fn default() -> Self {
        Self {
            ndjson: Some(Destination::Stdout),
            pcapng: None,
            rotation: Rotation::default(),
            interface_names: InterfaceNames::System,
        }
    }
}

impl OutputOptions {
    /// NDJSON to `path`, nothing else.
    pub fn ndjson_file(path: impl Into<std::path::PathBuf>) -> Self {
        Self {
            ndjson: Some(Destination::File(path.into())),
            ..Self::default()
        }
    }
}

/// One output's state for the stats document.
#[derive(Serialize)]
pub struct OutputDoc {
    pub destination: String,
    /// False from a failure until the output is written again.
    pub up: bool,
    pub written: u64,
    pub dropped: u64,
    pub errors: u64,
    pub bytes: u64,
    pub rotations: u64,
    pub files_opened: u64,
}

/// The enabled sinks.
pub struct Outputs {
    ndjson: Option<NdjsonSink>,
    pcapng: Option<PcapngSink>,
}

impl Outputs {
    /// Opens every enabled output; any that cannot be opened is an error before anything runs.
    pub fn open(options: &OutputOptions) -> Result<Self, OutputError> {
        let ndjson = options
            .ndjson
            .clone()
            .map(|d| NdjsonSink::new(d, options.rotation))
            .transpose()?;
        let pcapng = options
            .pcapng
            .clone()
            .map(|d| PcapngSink::new(d, options.rotation, options.interface_names.clone()))
            .transpose()?;
        Ok(Self { ndjson, pcapng })
    }

    /// One event: its document (already serialised as `json`, once for every output) to
    /// NDJSON, its record (with the fingerprint) to pcapng.
    pub fn event(
        &mut self,
        record: &Record<'_>,
        wall_ns: u64,
        label: Option<&Label<'_>>,
        json: &[u8],
    ) {
        if let Some(ndjson) = &mut self.ndjson {
            ndjson.write_serialized(json, Some(wall_ns));
        }
        if let Some(pcapng) = &mut self.pcapng {
            pcapng.record(record, wall_ns, label);
        }
    }

    /// A record whose event is not written (sampled out): pcapng only.
    pub fn record_only(&mut self, record: &Record<'_>, wall_ns: u64, label: Option<&Label<'_>>) {
        if let Some(pcapng) = &mut self.pcapng {
            pcapng.record(record, wall_ns, label);
        }
    }

    /// A document about the sensor or its findings (stats, rogue servers): NDJSON only.
    pub fn document<T: Serialize>(&mut self, doc: &T) {
        if let Some(ndjson) = &mut self.ndjson {
            ndjson.write(doc, None);
        }
    }

    /// The enabled outputs' files.
    fn files_mut(&mut self) -> impl Iterator<Item = &mut file::OutputFile> {
        let ndjson = self.ndjson.as_mut().map(NdjsonSink::output_mut);
        let pcapng = self.pcapng.as_mut().map(PcapngSink::output_mut);
        ndjson.into_iter().chain(pcapng)
    }

    pub fn flush(&mut self) {
        self.files_mut().for_each(file::OutputFile::flush);
    }

    /// Periodic work of the file outputs (time rotation, moved files, retries).
    pub fn tick(&mut self, now_ns: u64) {
        self.files_mut().for_each(|f| f.tick(now_ns));
    }

    pub fn finish(&mut self) {
        self.files_mut().for_each(file::OutputFile::finish);
    }

    /// Each enabled output: its name, whether it is up, and its counters.
    pub fn states(&self) -> Vec<(&'static str, &file::OutputFile)> {
        let mut v = Vec::with_capacity(2);
        if let Some(s) = &self.ndjson {
            v.push(("ndjson", s.output()));
        }
        if let Some(s) = &self.pcapng {
            v.push(("pcapng", s.output()));
        }
        v
    }

    /// Units dropped by all outputs together.
    pub fn dropped(&self) -> u64 {
        self.states()
            .iter()
            .map(|(_, f)| f.counters().dropped)
            .sum()
    }

    /// Messages for the operator since the last call (failures, recoveries).
    pub fn take_notices(&mut self) -> Vec<String> {
        self.files_mut().flat_map(|f| f.take_notices()).collect()
    }

    /// The `outputs` object of the stats document.
    pub fn docs(&self) -> Vec<(&'static str, OutputDoc)> {
        self.states()
            .into_iter()
            .map(|(name, f)| {
                let c = f.counters();
                (
                    name,
                    OutputDoc {
                        destination: f.destination().to_string(),
                        up: f.is_up(),
                        written: c.written,
                        dropped: c.dropped,
                        errors: c.errors,
                        bytes: c.bytes,
                        rotations: c.rotations,
                        files_opened: c.files_opened,
                    },
                )
            })
            .collect()
    }

    /// `sensor_output_*{output="ndjson|pcapng"}`.
    pub fn write_metrics(&self, out: &mut Exposition) {
        let states = self.states();
        out.family(
            "sensor_output_up",
            Kind::Gauge,
            "1 while the output is being written, 0 from a failure until it can be written again.",
        );
        for (name, f) in &states {
            out.sample("sensor_output_up", &[("output", name)], f.is_up());
        }
        type Family = (&'static str, &'static str, fn(&SinkCounters) -> u64);
        let families: [Family; 6] = [
            (
                "sensor_output_written_total",
                "Units written: NDJSON documents, pcapng packets.",
                |c| c.written,
            ),
            (
                "sensor_output_dropped_total",
                "Units dropped because the output could not be written.",
                |c| c.dropped,
            ),
            (
                "sensor_output_errors_total",
                "Failed opens and writes (one may drop many units).",
                |c| c.errors,
            ),
            (
                "sensor_output_bytes_total",
                "Bytes written, file headers included.",
                |c| c.bytes,
            ),
            (
                "sensor_output_rotations_total",
                "New files started by size or time rotation.",
                |c| c.rotations,
            ),
            (
                "sensor_output_files_opened_total",
                "Files opened: the first, rotations, and reopens after a failure or a removal.",
                |c| c.files_opened,
            ),
        ];
        for (metric, help, get) in families {
            out.family(metric, Kind::Counter, help);
            for (name, f) in &states {
                out.sample(metric, &[("output", name)], get(&f.counters()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use sensor_common::CaptureRecord;

    use super::*;
    use crate::event::Event;

    fn record() -> Box<CaptureRecord> {
        crate::record::test_record()
    }

    #[test]
    fn a_failing_output_drops_and_counts_while_the_other_writes_on() {
        let dir = std::env::temp_dir().join(format!("sensor-outputs-{}", std::process::id()));
        let gone = dir.join("gone");
        std::fs::create_dir_all(&gone).unwrap();
        let mut outputs = Outputs::open(&OutputOptions {
            ndjson: Some(Destination::File(gone.join("events.ndjson"))),
            pcapng: Some(Destination::File(dir.join("records.pcapng"))),
            rotation: Rotation::default(),
            interface_names: InterfaceNames::Capture("t".into()),
        })
        .unwrap();
        let raw = record();
        let rec = Record::new(&raw).unwrap();
        let event = Event {
            record: rec,
            wall_ns: 1,
        };
        let doc = crate::output::json::EventDoc::new(&event);
        let json = serde_json::to_vec(&doc).unwrap();
        outputs.event(&rec, 1, None, &json);
        outputs.flush();
        std::fs::remove_dir_all(&gone).unwrap();
        outputs.tick(2);
        for _ in 0..4 {
            outputs.event(&rec, 3, None, &json);
        }
        outputs.finish();
        let docs = outputs.docs();
        let (_, ndjson) = &docs[0];
        let (_, pcapng) = &docs[1];
        assert!(!ndjson.up);
        assert_eq!((ndjson.written, ndjson.dropped, ndjson.errors), (1, 4, 1));
        assert!(pcapng.up);
        assert_eq!((pcapng.written, pcapng.dropped), (5, 0));
        assert_eq!(outputs.dropped(), 4);
        let notices = outputs.take_notices();
        assert!(
            notices.iter().any(|n| n.starts_with("ndjson output ")
                && n.contains("open failed: No such file or directory")),
            "{notices:?}"
        );
        let mut text = Exposition::new();
        outputs.write_metrics(&mut text);
        let text = text.into_text();
        assert!(
            text.contains("sensor_output_up{output=\"ndjson\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("sensor_output_dropped_total{output=\"ndjson\"} 4\n"),
            "{text}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
