//! `sensor analyze`: a capture file through the same pipeline as live traffic. Frames become
//! records with the userspace twin of the kernel parser, so the counters mean what they mean live.

use std::{
    fs::File,
    io::BufReader,
    path::{Path, PathBuf},
};

use sensor_common::{CaptureRecord, Counter, MatchAction, SensorConfig};

use super::{CaptureFileError, CaptureReader, FrameContext, extract_into};
use crate::{
    capture::PortSet,
    counters::{AgentCounters, KernelCounters},
    output::{
        InterfaceNames,
        metrics::{Exposition, Kind, write_kernel},
    },
    pipeline::{Pipeline, PipelineError, PipelineOptions},
    record::Record,
    report::{DEFAULT_TOP, Summary},
};

#[derive(Clone, Debug)]
pub struct AnalyzeOptions {
    pub ports: PortSet,
    pub match_source_port: bool,
    pub prefix_len: u16,
    pub pipeline: PipelineOptions,
    /// Write the metrics exposition here at the end.
    pub metrics_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    #[error("cannot read {path}: {source}")]
    Open {
        path: PathBuf,
        source: CaptureFileError,
    },
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error("cannot write metrics file {path}: {reason}")]
    Metrics {
        path: PathBuf,
        reason: std::io::Error,
    },
}

#[derive(Debug)]
pub struct AnalyzeSummary {
    /// Packets read from the file.
    pub packets: u64,
    /// Packets whose link type has no Ethernet form (counted, not analysed).
    pub not_ethernet: u64,
    /// What the kernel program would have counted for these frames.
    pub kernel: KernelCounters,
    pub agent: AgentCounters,
    /// The file ended with an error after `packets` packets.
    pub read_error: Option<CaptureFileError>,
    /// Tools, campaigns, sources and findings over the file's events.
    pub report: Summary,
    /// Outputs that failed or came back during the analysis.
    pub notices: Vec<String>,
}

/// The file's frames as the kernel program would see them: a record for each frame it would
/// match, and what it would count for every frame.
struct Frames {
    reader: CaptureReader<BufReader<File>>,
    /// One packet buffer, reused: reading a packet costs no allocation.
    packet: super::Packet,
    config: SensorConfig,
    ports: PortSet,
    pub kernel: KernelCounters,
    /// Packets read from the file.
    pub packets: u64,
    pub not_ethernet: u64,
    /// The file ended with this error.
    pub read_error: Option<CaptureFileError>,
}

impl Frames {
    fn open(path: &Path, options: &AnalyzeOptions) -> Result<Self, AnalyzeError> {
        let reader = CaptureReader::open(path).map_err(|source| AnalyzeError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self {
            reader,
            packet: super::Packet {
                timestamp_ns: None,
                original_len: 0,
                data: Vec::with_capacity(2048),
                interface: 0,
                link_type: super::LinkType::ETHERNET,
            },
            config: SensorConfig::new(
                MatchAction::Drop,
                options.match_source_port,
                options.prefix_len,
            ),
            ports: options.ports.clone(),
            kernel: KernelCounters::default(),
            packets: 0,
            not_ethernet: 0,
            read_error: None,
        })
    }

    /// Writes the next matching frame's record into `record` and returns its time (the
    /// packet's); `None` at the end of the file or at a read error (kept in `read_error`). The
    /// caller's buffer, not a returned value: a record is 1,176 bytes, and each move of it is a
    /// copy.
    pub fn next_record(&mut self, record: &mut CaptureRecord) -> Option<u64> {
        loop {
            match self.reader.read_packet(&mut self.packet) {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => {
                    self.read_error = Some(e);
                    return None;
                }
            }
            self.packets += 1;
            let Ok((frame, wire_len)) = self.packet.ethernet_frame() else {
                self.not_ethernet += 1;
                continue;
            };
            let timestamp_ns = self.packet.timestamp_ns.unwrap_or(0);
            let context = FrameContext {
                timestamp_ns,
                ifindex: self.packet.interface,
                rx_queue: 0,
            };
            self.kernel.add(Counter::FramesSeen, 1);
            match extract_into(
                &frame,
                wire_len,
                &self.config,
                &self.ports,
                &context,
                record,
            ) {
                Ok(()) => {
                    self.kernel.add(Counter::Matched, 1);
                    self.kernel.add(Counter::Emitted, 1);
                    return Some(timestamp_ns);
                }
                Err(outcome) => self.kernel.add(outcome, 1),
            }
        }
    }
}

pub fn analyze(path: &Path, options: &AnalyzeOptions) -> Result<AnalyzeSummary, AnalyzeError> {
    let mut frames = Frames::open(path, options)?;
    let mut pipeline_options = options.pipeline.clone();
    // The records' interface numbers are the capture file's, not this host's.
    let label = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "capture".into());
    pipeline_options.outputs.interface_names = InterfaceNames::Capture(label);
    let mut pipeline = Pipeline::new(&pipeline_options)?;
    pipeline.start_outputs()?;
    // Two record buffers, reused in turn: the pipeline borrows one for the duration of a packet
    // (with analyst threads, it copies the record into a round) while the next record is read
    // into the other.
    let mut record = Box::new(CaptureRecord::zeroed());
    let mut next = Box::new(CaptureRecord::zeroed());
    let mut time = frames.next_record(&mut record);
    while let Some(timestamp_ns) = time {
        // The next record is read first, so that its source's state is fetched while this
        // one is handled.
        let next_time = frames.next_record(&mut next);
        if next_time.is_some()
            && pipeline.fetches_ahead()
            && let Ok(view) = Record::new(&next)
        {
            pipeline.prefetch_source(view.src_ip());
        }
        pipeline.counters.records_read += 1;
        match Record::new(&record) {
            Ok(view) => pipeline.record(view, timestamp_ns),
            Err(_) => pipeline.counters.records_undecodable += 1,
        }
        std::mem::swap(&mut record, &mut next);
        time = next_time;
    }
    pipeline.settle();
    let kernel = frames.kernel;
    let mut summary = AnalyzeSummary {
        packets: frames.packets,
        not_ethernet: frames.not_ethernet,
        kernel: KernelCounters::default(),
        agent: AgentCounters::default(),
        read_error: frames.read_error.take(),
        report: Summary::default(),
        notices: Vec::new(),
    };
    summary.report = pipeline.report(DEFAULT_TOP);
    pipeline.finish(&kernel);
    summary.notices = pipeline.take_notices();
    summary.kernel = kernel;
    summary.agent = pipeline.counters;
    if let Some(metrics_path) = &options.metrics_file {
        let mut out = Exposition::new();
        out.family(
            "sensor_info",
            Kind::Gauge,
            "The sensor's version and the capture file analysed (value 1).",
        );
        let file = path.display().to_string();
        out.sample(
            "sensor_info",
            &[("version", env!("CARGO_PKG_VERSION")), ("capture", &file)],
            1u64,
        );
        out.counter(
            "sensor_capture_packets_total",
            "Packets read from the capture file.",
            summary.packets,
        );
        out.counter(
            "sensor_capture_not_ethernet_total",
            "Packets whose link type has no Ethernet form (not analysed).",
            summary.not_ethernet,
        );
        // What the kernel program would have counted: summed only, there are no CPUs here.
        write_kernel(&mut out, &kernel, None);
        pipeline.write_metrics(&mut out);
        write_metrics_file(metrics_path, &out.into_text()).map_err(|reason| {
            AnalyzeError::Metrics {
                path: metrics_path.clone(),
                reason,
            }
        })?;
    }
    Ok(summary)
}

/// Writes `text` to `path` (mode 0640) through a temporary file renamed into place, so that a
/// reader (node_exporter's textfile collector) never sees half of it.
pub fn write_metrics_file(path: &Path, text: &str) -> std::io::Result<()> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o640)
        .open(&tmp)?;
    let written = file
        .write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, path::Path};

    use serde_json::Value;

    use super::{AnalyzeOptions, AnalyzeSummary, analyze};
    use crate::offline::{CaptureReader, LinkType};
    use crate::{
        capture::PortSet, output::OutputOptions, output::event::EventDetail, rogue::TrackerConfig,
    };
    use sensor_common::Counter;

    /// Every Ethernet packet of every corpus capture, in one nanosecond pcap file, each file's
    /// packets after the previous file's.
    fn corpus_capture(path: &Path) -> usize {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "pcap" || e == "pcapng"))
            .collect();
        files.sort();
        let mut out = Vec::new();
        out.extend_from_slice(&0xa1b2_3c4du32.to_le_bytes());
        out.extend_from_slice(&2u16.to_le_bytes());
        out.extend_from_slice(&4u16.to_le_bytes());
        for word in [0u32, 0, 65_535, 1] {
            out.extend_from_slice(&word.to_le_bytes());
        }
        let mut packets = 0;
        for (f, file) in files.iter().enumerate() {
            for packet in CaptureReader::open(file).unwrap() {
                let packet = packet.unwrap();
                if packet.link_type != LinkType::ETHERNET {
                    continue;
                }
                let t = packet.timestamp_ns.unwrap_or(0) + f as u64 * 1_000_000_000;
                let len = packet.data.len() as u32;
                for word in [
                    (t / 1_000_000_000) as u32,
                    (t % 1_000_000_000) as u32,
                    len,
                    len,
                ] {
                    out.extend_from_slice(&word.to_le_bytes());
                }
                out.extend_from_slice(&packet.data);
                packets += 1;
            }
        }
        std::fs::write(path, out).unwrap();
        packets
    }

    /// The documents written, by event type; every document's `timestamp` (the time it was
    /// written) removed.
    fn documents(path: &Path) -> BTreeMap<String, Vec<Value>> {
        let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for line in std::fs::read_to_string(path).unwrap().lines() {
            let mut doc: Value = serde_json::from_str(line).unwrap();
            let map = doc.as_object_mut().unwrap();
            map.remove("timestamp");
            let kind = map["event_type"].as_str().unwrap().to_string();
            out.entry(kind).or_default().push(doc);
        }
        out
    }

    fn run(capture: &Path, out: &Path, threads: usize, detail: EventDetail) -> AnalyzeSummary {
        let _ = std::fs::remove_file(out);
        let mut ports = PortSet::empty();
        ports.insert(5060);
        ports.insert(5061);
        let options = AnalyzeOptions {
            ports,
            match_source_port: true,
            prefix_len: 1024,
            pipeline: crate::pipeline::PipelineOptions {
                outputs: OutputOptions::ndjson_file(out),
                detect_rogue: Some(TrackerConfig::default()),
                detail,
                threads,
                ..Default::default()
            },
            metrics_file: None,
        };
        analyze(capture, &options).unwrap()
    }

    /// Three analysts write the events, campaigns, servers and report one thread writes, in the
    /// same order; the counters add up the same.
    #[test]
    fn threads_write_what_one_thread_writes() {
        let dir = std::env::temp_dir().join(format!("sensor-parallel-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let capture = dir.join("corpus.pcap");
        let packets = corpus_capture(&capture);
        let one = run(&capture, &dir.join("one.ndjson"), 1, EventDetail::Compact);
        let three = run(&capture, &dir.join("three.ndjson"), 3, EventDetail::Compact);
        assert_eq!(one.packets, packets as u64);
        assert_eq!(three.packets, one.packets);
        let records = one.agent.records_read;
        assert!(records > 200, "{records}");
        // Every frame matched is handled, the last one too (records are read one ahead).
        assert_eq!(records, one.kernel.get(Counter::Matched));
        assert_eq!(three.agent.records_read, records);
        assert_eq!(three.agent.events_written, one.agent.events_written);
        // The reader fills rounds of 7 far faster than analysts empty them.
        assert_eq!(one.agent.analyst_waits, 0);
        assert!(three.agent.analyst_waits > 0, "{:?}", three.agent);
        assert_eq!(one.agent.events_written, records);
        assert_eq!(
            three.kernel.iter().collect::<Vec<_>>(),
            one.kernel.iter().collect::<Vec<_>>()
        );
        for agent in [&one.agent, &three.agent] {
            let cache = agent.fingerprint_cache_hits
                + agent.fingerprint_cache_misses
                + agent.fingerprint_cache_bypassed;
            assert_eq!(cache, records, "{agent:?}");
        }
        assert_eq!(three.report.to_string(), one.report.to_string());
        let (mut a, mut b) = (
            documents(&dir.join("one.ndjson")),
            documents(&dir.join("three.ndjson")),
        );
        assert_eq!(a["sip_probe"].len() as u64, records);
        // The stats differ in the classification cache's counters (three caches, not one).
        let (sa, sb) = (a.remove("stats").unwrap(), b.remove("stats").unwrap());
        assert_eq!(sa.len(), 1);
        assert_eq!(sb.len(), 1);
        assert_eq!(
            sa[0]["agent"]["events_written"],
            sb[0]["agent"]["events_written"]
        );
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
        for (kind, docs) in &a {
            assert_eq!(docs.len(), b[kind].len(), "{kind}");
            for (i, (x, y)) in docs.iter().zip(&b[kind]).enumerate() {
                assert_eq!(x, y, "{kind} document {i}");
            }
        }
        assert!(a.contains_key("campaign") && a.contains_key("sip_server"));

        // Lean: every event written; each analyst writes its own examples of a template.
        let lean_one = run(&capture, &dir.join("lean1.ndjson"), 1, EventDetail::Lean);
        let lean_three = run(&capture, &dir.join("lean3.ndjson"), 3, EventDetail::Lean);
        assert_eq!(lean_one.agent.events_written, records);
        assert_eq!(lean_three.agent.events_written, records);
        assert!(lean_three.agent.events_lean <= lean_one.agent.events_lean);
        assert_eq!(lean_three.report.to_string(), lean_one.report.to_string());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
