//! The live pipeline: load, configure, attach, drain, decode, write; detach and report on stop.

use std::{future::Future, path::PathBuf, pin::pin, time::Duration};

use sensor_common::{
    DEFAULT_PREFIX_LEN, DEFAULT_RING_BYTES, MatchAction, PAYLOAD_CAPACITY, SensorConfig,
};

use crate::{
    capture::{AttachMode, CaptureError, PortSet, RingReader, SensorProgram},
    clock::{WallClock, realtime_ns},
    counters::{AgentCounters, KernelCounters},
    event::Event,
    fingerprint::{Engine, RuleError, SourceTracker},
    output::{
        NdjsonWriter,
        json::{EventDoc, StatsDoc},
    },
    record::Record,
};

/// Records handled per wakeup before the loop checks for shutdown and flushes.
const BATCH: usize = 4096;

#[derive(Clone, Debug)]
pub struct RunOptions {
    pub interface: String,
    pub mode: AttachMode,
    pub ports: PortSet,
    pub match_source_port: bool,
    pub action: MatchAction,
    pub prefix_len: u16,
    pub ring_bytes: u32,
    /// None: stdout.
    pub output: Option<PathBuf>,
    /// Stop after this many events (for tests and demonstrations).
    pub max_events: Option<u64>,
    /// Fingerprint rules loaded beside the built-in ones.
    pub rules: Option<PathBuf>,
}

impl RunOptions {
    pub fn new(interface: impl Into<String>) -> Self {
        Self {
            interface: interface.into(),
            mode: AttachMode::Native,
            ports: PortSet::default(),
            match_source_port: false,
            action: MatchAction::Drop,
            prefix_len: DEFAULT_PREFIX_LEN,
            ring_bytes: DEFAULT_RING_BYTES,
            output: None,
            max_events: None,
            rules: None,
        }
    }

    pub fn kernel_config(&self) -> SensorConfig {
        SensorConfig::new(self.action, self.match_source_port, self.prefix_len)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error("cannot open output {path}: {source}")]
    Output {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("prefix length {0} out of range: expected 1 to {PAYLOAD_CAPACITY}")]
    PrefixLen(u16),
    #[error(transparent)]
    Rules(#[from] RuleError),
}

/// What a run did, for the final report.
#[derive(Clone, Debug)]
pub struct RunSummary {
    pub interface: String,
    pub ifindex: u32,
    pub mode: AttachMode,
    pub kernel: KernelCounters,
    pub agent: AgentCounters,
}

/// Told once the program is attached, so a caller can start traffic or report readiness.
pub struct Attached {
    pub interface: String,
    pub ifindex: u32,
    pub mode: AttachMode,
    pub link_id: Option<u32>,
}

/// Runs until `shutdown` completes or `max_events` events were written. The program is detached
/// before the function returns, on every path.
pub async fn run(
    options: &RunOptions,
    shutdown: impl Future<Output = ()>,
    on_attached: impl FnOnce(&Attached),
) -> Result<RunSummary, AgentError> {
    if options.prefix_len == 0 || usize::from(options.prefix_len) > PAYLOAD_CAPACITY {
        return Err(AgentError::PrefixLen(options.prefix_len));
    }
    // Rules first: a bad rule file stops the run before anything is attached.
    let engine = Engine::load(options.rules.as_deref())?;
    let mut sources = SourceTracker::default();
    let mut writer = match &options.output {
        None => NdjsonWriter::stdout(),
        Some(path) => NdjsonWriter::create(path).map_err(|source| AgentError::Output {
            path: path.clone(),
            source,
        })?,
    };
    let mut program = SensorProgram::load(options.ring_bytes)?;
    program.set_config(options.kernel_config())?;
    program.set_ports(&options.ports)?;
    let ring = program
        .take_ring()
        .ok_or(CaptureError::Missing(sensor_common::map_names::EVENTS))?;
    let mut reader = RingReader::new(ring)?;
    let attachment = program.attach(&options.interface, options.mode)?;
    on_attached(&Attached {
        interface: options.interface.clone(),
        ifindex: attachment.ifindex,
        mode: attachment.mode,
        link_id: attachment.link_id(),
    });

    let clock = WallClock::now();
    let mut agent = AgentCounters::default();
    let limit = options.max_events.unwrap_or(u64::MAX);
    let mut shutdown = pin!(shutdown);
    let mut handle = |bytes: &[u8], agent: &mut AgentCounters, writer: &mut NdjsonWriter| {
        agent.records_read += 1;
        match Record::from_bytes(bytes) {
            Ok(record) => {
                let event = Event {
                    record,
                    wall_ns: clock.wall_ns(record.timestamp_ns()),
                };
                match writer.write(&EventDoc::analyzed(&event, &engine, &mut sources)) {
                    Ok(()) => agent.events_written += 1,
                    Err(_) => agent.output_errors += 1,
                }
            }
            Err(_) => agent.records_undecodable += 1,
        }
    };
    while agent.events_written < limit {
        tokio::select! {
            _ = &mut shutdown => break,
            drained = reader.drain_batch(BATCH, |bytes| handle(bytes, &mut agent, &mut writer)) => {
                drained?;
                if writer.flush().is_err() {
                    agent.output_errors += 1;
                }
            }
        }
    }

    let ifindex = attachment.ifindex;
    let mode = attachment.mode;
    attachment.detach();
    // Records committed before the detach are still in the ring: take them too.
    reader.drain_now(|bytes| handle(bytes, &mut agent, &mut writer));
    // Let in-flight program runs on other CPUs finish their counter updates.
    tokio::time::sleep(Duration::from_millis(20)).await;
    reader.drain_now(|bytes| handle(bytes, &mut agent, &mut writer));
    let kernel = program.counters()?;
    if writer
        .write(&StatsDoc::new(realtime_ns(), &kernel, &agent))
        .and_then(|()| writer.flush())
        .is_err()
    {
        agent.output_errors += 1;
    }
    Ok(RunSummary {
        interface: options.interface.clone(),
        ifindex,
        mode,
        kernel,
        agent,
    })
}
