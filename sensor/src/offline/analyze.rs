//! `sensor analyze`: a capture file through the same pipeline as live traffic. Frames become
//! records with the userspace twin of the kernel parser, so the counters mean what they mean live.

use std::path::{Path, PathBuf};

use sensor_common::{CaptureRecord, Counter, MatchAction, SensorConfig};

use super::{CaptureFileError, CaptureReader, FrameContext, extract};
use crate::{
    capture::PortSet,
    counters::{AgentCounters, KernelCounters},
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
}

pub fn analyze(path: &Path, options: &AnalyzeOptions) -> Result<AnalyzeSummary, AnalyzeError> {
    let reader = CaptureReader::open(path).map_err(|source| AnalyzeError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let mut pipeline = Pipeline::new(&options.pipeline)?;
    pipeline.start_outputs()?;
    let config = SensorConfig::new(
        MatchAction::Drop,
        options.match_source_port,
        options.prefix_len,
    );
    let mut kernel = KernelCounters::default();
    let mut summary = AnalyzeSummary {
        packets: 0,
        not_ethernet: 0,
        kernel: KernelCounters::default(),
        agent: AgentCounters::default(),
        read_error: None,
        report: Summary::default(),
    };
    // One record buffer, reused: the pipeline borrows it for the duration of a packet.
    let mut record = Box::new(CaptureRecord::zeroed());
    for packet in reader {
        let packet = match packet {
            Ok(packet) => packet,
            Err(e) => {
                summary.read_error = Some(e);
                break;
            }
        };
        summary.packets += 1;
        let Ok((frame, wire_len)) = packet.ethernet_frame() else {
            summary.not_ethernet += 1;
            continue;
        };
        let timestamp_ns = packet.timestamp_ns.unwrap_or(0);
        let context = FrameContext {
            timestamp_ns,
            ifindex: packet.interface,
            rx_queue: 0,
        };
        kernel.add(Counter::FramesSeen, 1);
        match extract(&frame, wire_len, &config, &options.ports, &context) {
            Ok(extracted) => {
                kernel.add(Counter::Matched, 1);
                kernel.add(Counter::Emitted, 1);
                *record = extracted;
                pipeline.counters.records_read += 1;
                match Record::new(&record) {
                    Ok(view) => pipeline.record(view, timestamp_ns),
                    Err(_) => pipeline.counters.records_undecodable += 1,
                }
            }
            Err(outcome) => kernel.add(outcome, 1),
        }
    }
    summary.report = pipeline.report(DEFAULT_TOP);
    let (agent, _) = pipeline.finish(&kernel);
    summary.kernel = kernel;
    summary.agent = agent;
    Ok(summary)
}
