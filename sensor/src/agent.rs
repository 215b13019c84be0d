//! The live run: load, configure and attach the kernel program, drain its ring buffer into the
//! pipeline; detach and report on stop.

use std::{future::Future, path::PathBuf, pin::pin, time::Duration};

use sensor_common::{
    DEFAULT_PREFIX_LEN, DEFAULT_RING_BYTES, MatchAction, PAYLOAD_CAPACITY, ReactivePolicy,
    SensorConfig,
};

use crate::{
    aggregate::AggregateConfig,
    capture::{AttachMode, CaptureError, IpPrefix, PortSet, RingReader, SensorProgram},
    clock::WallClock,
    counters::{AgentCounters, KernelCounters},
    identity::SensorIdentity,
    output::kafka::{KafkaConfig, KafkaStats},
    pipeline::{Pipeline, PipelineError, PipelineOptions},
    privilege::{Credentials, PrivilegeError, PrivilegePlan},
    report::{DEFAULT_TOP, Summary},
    rogue::{TrackerConfig, TrackerCounters},
};

/// Records handled per wakeup before the loop checks for shutdown and flushes.
const BATCH: usize = 4096;
/// The longest a record waits in the ring when the kernel batches wakeups.
const DRAIN_TICK: Duration = Duration::from_millis(10);
/// How often the SYN cookie secret changes; a cookie survives one change.
const SECRET_ROTATION: Duration = Duration::from_secs(600);
/// How often the pipeline does its periodic work (the rogue tracker's timeouts and findings).
const PIPELINE_TICK: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
pub struct RunOptions {
    pub interface: String,
    pub mode: AttachMode,
    pub ports: PortSet,
    pub match_source_port: bool,
    pub action: MatchAction,
    pub prefix_len: u16,
    pub ring_bytes: u32,
    /// Bytes waiting in the ring before the kernel wakes the agent (0: the kernel's policy).
    pub wakeup_bytes: u32,
    /// Per-source records per second admitted by the kernel (0: unlimited), and the burst.
    pub source_rate: u32,
    pub source_burst: u32,
    /// Answer TCP SYNs to `reactive_prefixes` with SYN-cookie SYN-ACKs (off by default).
    pub reactive: ReactivePolicy,
    pub reactive_prefixes: Vec<IpPrefix>,
    /// SYN-ACKs per second per source, and the burst: the reflector limit.
    pub synack_rate: u32,
    pub synack_burst: u32,
    /// None: stdout.
    pub output: Option<PathBuf>,
    /// Stop after this many events (for tests and demonstrations).
    pub max_events: Option<u64>,
    /// Follow requests and responses per server and report rogue SIP daemons (needs
    /// `match_source_port` to see the responses).
    pub detect_rogue: Option<TrackerConfig>,
    /// Fingerprint rules loaded beside the built-in ones.
    pub rules: Option<PathBuf>,
    /// The `sensor` object added to every event; None leaves it out.
    pub identity: Option<SensorIdentity>,
    /// Also send every event to Kafka.
    pub kafka: Option<KafkaConfig>,
    /// Give up every capability (and optionally become a user) once attached; `None` keeps them
    /// (the in-process tests, whose test harness has other threads).
    pub privileges: Option<PrivilegePlan>,
    /// Bounds and windows of the per-source and campaign aggregation.
    pub aggregate: AggregateConfig,
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
            wakeup_bytes: 0,
            source_rate: 0,
            source_burst: 0,
            reactive: ReactivePolicy::Off,
            reactive_prefixes: Vec::new(),
            synack_rate: 10,
            synack_burst: 20,
            output: None,
            max_events: None,
            detect_rogue: None,
            rules: None,
            identity: None,
            kafka: None,
            privileges: None,
            aggregate: AggregateConfig::default(),
        }
    }

    pub fn kernel_config(&self) -> SensorConfig {
        SensorConfig::new(self.action, self.match_source_port, self.prefix_len)
            .with_wakeup_bytes(self.wakeup_bytes)
            .with_source_limit(self.source_rate, self.source_burst)
            .with_reactive(self.reactive, self.synack_rate, self.synack_burst)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error("prefix length {0} out of range: expected 1 to {PAYLOAD_CAPACITY}")]
    PrefixLen(u16),
    #[error(
        "--reactive needs --reactive-prefixes: the darknet prefixes it may answer for \
         (e.g. 203.0.113.0/24)"
    )]
    ReactiveWithoutPrefixes,
    #[error("cannot read random bytes for the SYN cookie secret: {0}")]
    Random(std::io::Error),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Privilege(#[from] PrivilegeError),
    #[error("cannot hand the output {path} to user {user}: {source}")]
    OutputOwner {
        path: PathBuf,
        user: String,
        source: std::io::Error,
    },
}

/// What a run did, for the final report.
#[derive(Clone, Debug)]
pub struct RunSummary {
    pub interface: String,
    pub ifindex: u32,
    pub mode: AttachMode,
    pub kernel: KernelCounters,
    pub agent: AgentCounters,
    pub rogue: Option<TrackerCounters>,
    /// Kafka output counters, when it was on.
    pub kafka: Option<KafkaStats>,
    /// Tools, campaigns, sources and findings over the run's events.
    pub report: Summary,
}

/// Told once the program is attached, so a caller can start traffic or report readiness.
pub struct Attached {
    pub interface: String,
    pub ifindex: u32,
    pub mode: AttachMode,
    pub link_id: Option<u32>,
    /// The credentials after dropping privileges, when they were dropped.
    pub credentials: Option<Credentials>,
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
    // Rules and outputs first: a bad rule file or output stops the run before anything is
    // attached.
    let mut pipeline = Pipeline::new(&PipelineOptions {
        rules: options.rules.clone(),
        output: options.output.clone(),
        detect_rogue: options.detect_rogue.clone(),
        identity: options.identity.clone(),
        kafka: options.kafka.clone(),
        aggregate: options.aggregate,
    })?;
    if options.reactive != ReactivePolicy::Off && options.reactive_prefixes.is_empty() {
        return Err(AgentError::ReactiveWithoutPrefixes);
    }
    let mut program = SensorProgram::load(options.ring_bytes)?;
    let mut kernel_config = options.kernel_config();
    program.set_config(kernel_config)?;
    program.set_ports(&options.ports)?;
    if options.reactive != ReactivePolicy::Off {
        program.set_reactive_prefixes(&options.reactive_prefixes)?;
        program.set_cookie_secret(0, random_secret()?)?;
        program.set_cookie_secret(1, random_secret()?)?;
    }
    let mut secret_rotation = tokio::time::interval_at(
        tokio::time::Instant::now() + SECRET_ROTATION,
        SECRET_ROTATION,
    );
    let ring = program
        .take_ring()
        .ok_or(CaptureError::Missing(sensor_common::map_names::EVENTS))?;
    let mut reader = RingReader::new(ring)?;
    let attachment = program.attach(&options.interface, options.mode)?;
    let link_id = attachment.link_id();
    program.close_program()?;
    // Everything that needs a capability is done: the program is loaded and attached, its maps
    // are open and the ring buffer is mapped. What follows (reading the ring, map lookups and
    // updates on open descriptors, writing the output) needs none; an error here detaches, as
    // every other error does, by dropping the attachment.
    let credentials = match &options.privileges {
        Some(plan) => {
            if let (Some(user), Some(path)) = (&plan.user, &options.output) {
                // The user must be able to reopen its output after a rotation or a failure.
                std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)).map_err(
                    |source| AgentError::OutputOwner {
                        path: path.clone(),
                        user: user.name.clone(),
                        source,
                    },
                )?;
            }
            Some(crate::privilege::drop_privileges(plan)?)
        }
        None => None,
    };
    pipeline.start_outputs()?;
    on_attached(&Attached {
        interface: options.interface.clone(),
        ifindex: attachment.ifindex,
        mode: attachment.mode,
        link_id,
        credentials,
    });

    let clock = WallClock::now();
    let limit = options.max_events.unwrap_or(u64::MAX);
    let mut shutdown = pin!(shutdown);
    let mut ticks = tokio::time::interval(PIPELINE_TICK);
    while pipeline.counters.events_written < limit {
        tokio::select! {
            _ = &mut shutdown => break,
            drained = reader.drain_batch(BATCH, DRAIN_TICK, |bytes| pipeline.ring_item(bytes, &clock)) => {
                drained?;
                pipeline.flush();
            }
            _ = secret_rotation.tick(), if options.reactive != ReactivePolicy::Off => {
                // Sign with the other slot from now on; the old secret still validates the
                // cookies it signed until the next rotation.
                let next = kernel_config.secret_generation ^ 1;
                program.set_cookie_secret(next, random_secret()?)?;
                kernel_config.secret_generation = next;
                program.set_config(kernel_config)?;
            }
            _ = ticks.tick(), if pipeline.wants_ticks() => pipeline.tick(),
        }
    }

    let ifindex = attachment.ifindex;
    let mode = attachment.mode;
    attachment.detach();
    // Records committed before the detach are still in the ring: take them too.
    reader.drain_now(|bytes| pipeline.ring_item(bytes, &clock));
    // Let in-flight program runs on other CPUs finish their counter updates.
    tokio::time::sleep(Duration::from_millis(20)).await;
    reader.drain_now(|bytes| pipeline.ring_item(bytes, &clock));
    let kernel = program.counters()?;
    let rogue = pipeline.rogue_counters();
    // Before finish: the report is of the events; finish only writes the final documents.
    let report = pipeline.report(DEFAULT_TOP);
    // Blocking, and nothing else runs now: the Kafka output delivers or spools what is left,
    // within its shutdown timeout.
    let (agent, kafka) = pipeline.finish(&kernel);
    Ok(RunSummary {
        interface: options.interface.clone(),
        ifindex,
        mode,
        kernel,
        agent,
        rogue,
        kafka,
        report,
    })
}

/// 128 random bits from the kernel for a SipHash key.
fn random_secret() -> Result<[u64; 2], AgentError> {
    let mut bytes = [0u8; 16];
    // SAFETY: valid buffer and length.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        return Err(AgentError::Random(std::io::Error::last_os_error()));
    }
    let (a, b) = bytes.split_at(8);
    Ok([
        u64::from_ne_bytes(a.try_into().unwrap_or_default()),
        u64::from_ne_bytes(b.try_into().unwrap_or_default()),
    ])
}
