//! The live pipeline: load, configure, attach, drain, decode, write; detach and report on stop.

use std::{future::Future, path::PathBuf, pin::pin, sync::Arc, time::Duration};

use sensor_common::{
    DEFAULT_PREFIX_LEN, DEFAULT_RING_BYTES, MatchAction, PAYLOAD_CAPACITY, SensorConfig,
};

use crate::{
    capture::{AttachMode, CaptureError, PortSet, RingReader, SensorProgram},
    clock::{WallClock, realtime_ns},
    counters::{AgentCounters, KernelCounters},
    event::Event,
    identity::SensorIdentity,
    output::{
        NdjsonWriter,
        json::{EventDoc, StatsDoc},
        kafka::{KafkaConfig, KafkaCounters, KafkaOutput, KafkaOutputError, KafkaStats},
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
    /// The `sensor` object added to every event; None leaves it out.
    pub identity: Option<SensorIdentity>,
    /// Also send every event to Kafka.
    pub kafka: Option<KafkaConfig>,
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
            identity: None,
            kafka: None,
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
    Kafka(#[from] KafkaOutputError),
}

/// What a run did, for the final report.
#[derive(Clone, Debug)]
pub struct RunSummary {
    pub interface: String,
    pub ifindex: u32,
    pub mode: AttachMode,
    pub kernel: KernelCounters,
    pub agent: AgentCounters,
    /// Kafka output counters, when it was on.
    pub kafka: Option<KafkaStats>,
}

/// What happens to every record the agent reads: decoded, made into an event document (with
/// the sensor's identity) and written to every output that is on, NDJSON and Kafka at once.
/// Kafka only gets a non-blocking hand-off, so a broker never slows the ring buffer drain.
/// Public so that tests can feed it records from BPF_PROG_TEST_RUN.
pub struct EventSink {
    clock: WallClock,
    identity: Option<SensorIdentity>,
    writer: NdjsonWriter,
    kafka: Option<KafkaOutput>,
    buf: Vec<u8>,
    pub counters: AgentCounters,
}

impl EventSink {
    /// Opens the outputs `options` asks for (NDJSON to its file or stdout; Kafka if
    /// configured, resuming its spool).
    pub fn open(options: &RunOptions) -> Result<Self, AgentError> {
        let writer = match &options.output {
            None => NdjsonWriter::stdout(),
            Some(path) => NdjsonWriter::create(path).map_err(|source| AgentError::Output {
                path: path.clone(),
                source,
            })?,
        };
        Self::with_writer(options, writer)
    }

    pub fn with_writer(options: &RunOptions, writer: NdjsonWriter) -> Result<Self, AgentError> {
        let kafka = match &options.kafka {
            None => None,
            Some(config) => {
                let name = options
                    .identity
                    .as_ref()
                    .map(|i| i.name.clone())
                    .unwrap_or_else(crate::identity::hostname);
                Some(KafkaOutput::start(config, &name)?)
            }
        };
        Ok(Self {
            clock: WallClock::now(),
            identity: options.identity.clone(),
            writer,
            kafka,
            buf: Vec::with_capacity(4096),
            counters: AgentCounters::default(),
        })
    }

    /// The Kafka output's live counters, if it is on.
    pub fn kafka_counters(&self) -> Option<Arc<KafkaCounters>> {
        self.kafka.as_ref().map(KafkaOutput::counters)
    }

    /// Handles one ring buffer item.
    pub fn handle(&mut self, bytes: &[u8]) {
        self.counters.records_read += 1;
        let Ok(record) = Record::from_bytes(bytes) else {
            self.counters.records_undecodable += 1;
            return;
        };
        let event = Event {
            record,
            wall_ns: self.clock.wall_ns(record.timestamp_ns()),
        };
        let doc = EventDoc::new(&event).with_sensor(self.identity.as_ref());
        let Some(kafka) = &self.kafka else {
            match self.writer.write(&doc) {
                Ok(()) => self.counters.events_written += 1,
                Err(_) => self.counters.output_errors += 1,
            }
            return;
        };
        self.buf.clear();
        if serde_json::to_writer(&mut self.buf, &doc).is_err() {
            // Serializing our own document cannot fail; if it did, both outputs lost it.
            self.counters.output_errors += 1;
            return;
        }
        match self.writer.write_raw(&self.buf) {
            Ok(()) => self.counters.events_written += 1,
            Err(_) => self.counters.output_errors += 1,
        }
        // Keyed by source address: one source's events stay in one partition, in order.
        let key = record.src_ip().to_string();
        kafka.offer(
            key.as_bytes(),
            (event.wall_ns / 1_000_000) as i64,
            self.buf.clone(),
        );
    }

    pub fn flush(&mut self) {
        if self.writer.flush().is_err() {
            self.counters.output_errors += 1;
        }
    }

    /// Stops the Kafka output (delivering or spooling what is left; this can take up to its
    /// `shutdown_timeout_ms`), then writes the final `stats` document. Blocking.
    pub fn finish(mut self, kernel: &KernelCounters) -> (AgentCounters, Option<KafkaStats>) {
        let kafka = self.kafka.take().map(KafkaOutput::finish);
        if self
            .writer
            .write(&StatsDoc::new(realtime_ns(), kernel, &self.counters).with_kafka(kafka.as_ref()))
            .and_then(|()| self.writer.flush())
            .is_err()
        {
            self.counters.output_errors += 1;
        }
        (self.counters, kafka)
    }
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
    let mut sink = EventSink::open(options)?;
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

    let limit = options.max_events.unwrap_or(u64::MAX);
    let mut shutdown = pin!(shutdown);
    while sink.counters.events_written < limit {
        tokio::select! {
            _ = &mut shutdown => break,
            drained = reader.drain_batch(BATCH, |bytes| sink.handle(bytes)) => {
                drained?;
                sink.flush();
            }
        }
    }

    let ifindex = attachment.ifindex;
    let mode = attachment.mode;
    attachment.detach();
    // Records committed before the detach are still in the ring: take them too.
    reader.drain_now(|bytes| sink.handle(bytes));
    // Let in-flight program runs on other CPUs finish their counter updates.
    tokio::time::sleep(Duration::from_millis(20)).await;
    reader.drain_now(|bytes| sink.handle(bytes));
    let kernel = program.counters()?;
    // The Kafka output may wait for the broker at shutdown: off the async thread.
    let (agent, kafka) = tokio::task::spawn_blocking(move || sink.finish(&kernel))
        .await
        .unwrap_or_default();
    Ok(RunSummary {
        interface: options.interface.clone(),
        ifindex,
        mode,
        kernel,
        agent,
        kafka,
    })
}
