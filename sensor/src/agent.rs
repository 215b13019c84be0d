//! The live run: load, configure and attach the kernel program, drain its ring buffer into the
//! pipeline; serve metrics and control commands; change the port set, the action and the other
//! kernel settings at run time by updating the program's maps in place; detach and report on
//! stop.

use std::{
    future::Future,
    net::SocketAddr,
    path::PathBuf,
    pin::pin,
    time::{Duration, Instant},
};

use sensor_common::{
    DEFAULT_PREFIX_LEN, DEFAULT_RING_BYTES, MatchAction, PAYLOAD_CAPACITY, ReactivePolicy,
    SensorConfig,
};

use tokio::sync::{Notify, mpsc};

use crate::sampling::SamplingConfig;
use crate::{
    aggregate::AggregateConfig,
    capture::{AttachMode, CaptureError, PortSet, Prefix, RingReader, SensorProgram},
    clock::WallClock,
    config::{ConfigError, ConfigFile},
    control::{ControlCommand, ControlError, ControlRequest, ControlSocket},
    counters::{AgentCounters, KernelCounters},
    identity::SensorIdentity,
    output::{
        Destination, OutputOptions, SinkCounters,
        event::EventDetail,
        kafka::{KafkaConfig, KafkaStats},
        metrics::{self, Exposition, Kind, ListenError, RateWindow, ScrapeRequest},
    },
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
/// How often the pipeline does its periodic work (the rogue tracker's timeouts and findings, the
/// outputs' time rotation and retries) and the event rate is sampled.
const PIPELINE_TICK: Duration = Duration::from_secs(1);
/// The window of `sensor_events_per_second`.
const RATE_WINDOW: Duration = Duration::from_secs(10);

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
    pub reactive_prefixes: Vec<Prefix>,
    /// SYN-ACKs per second per source, and the burst: the reflector limit.
    pub synack_rate: u32,
    pub synack_burst: u32,
    /// Which outputs, where (default: NDJSON to stdout).
    pub outputs: OutputOptions,
    /// Stop after this many events (for tests and demonstrations).
    pub max_events: Option<u64>,
    /// Follow requests and responses per server and report rogue SIP daemons (needs
    /// `match_source_port` to see the responses).
    pub detect_rogue: Option<TrackerConfig>,
    /// Fingerprint rules loaded beside the built-in ones.
    pub rules: Option<PathBuf>,
    /// Serve Prometheus metrics here (`GET /metrics`).
    pub metrics_listen: Option<SocketAddr>,
    /// Take control commands on this Unix socket.
    pub control_socket: Option<PathBuf>,
    /// Where `reload` (and SIGHUP) read the configuration again; `None`: no file to reload.
    pub reload: Option<ReloadSource>,
    /// Reload on SIGHUP (the binary sets it; a library user may keep the signal to itself).
    pub reload_on_sighup: bool,
    /// The `sensor` object added to every event; None leaves it out.
    pub identity: Option<SensorIdentity>,
    /// Also send every event to Kafka.
    pub kafka: Option<KafkaConfig>,
    /// Give up every capability (and optionally become a user) once attached; `None` keeps them
    /// (the in-process tests, whose test harness has other threads).
    pub privileges: Option<PrivilegePlan>,
    /// Bounds and windows of the per-source and campaign aggregation.
    pub aggregate: AggregateConfig,
    /// How much explanation events carry (compact by default).
    pub detail: EventDetail,
    /// Write only the first events of each source and template per window.
    pub sampling: Option<SamplingConfig>,
    /// Analysts on threads of their own; 1: the analysis runs on the loop's thread.
    pub threads: usize,
}

/// The configuration file and the command line's keys, laid over the file again at each reload
/// so that a key given as a flag keeps the flag's value.
#[derive(Clone, Debug)]
pub struct ReloadSource {
    pub path: PathBuf,
    pub flags: ConfigFile,
}

impl ReloadSource {
    pub fn load(&self) -> Result<RunOptions, ConfigError> {
        let mut options = ConfigFile::load(&self.path)?
            .overlay(&self.flags)
            .run_options(&format!("config {}", self.path.display()))?;
        options.reload = Some(self.clone());
        Ok(options)
    }
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
            outputs: OutputOptions::default(),
            max_events: None,
            detect_rogue: None,
            rules: None,
            metrics_listen: None,
            control_socket: None,
            reload: None,
            reload_on_sighup: false,
            identity: None,
            kafka: None,
            privileges: None,
            aggregate: AggregateConfig::default(),
            detail: EventDetail::Compact,
            sampling: None,
            threads: 1,
        }
    }

    /// The settings that change at run time (ports, the kernel config, the reactive prefixes),
    /// in a line.
    pub fn describe_live(&self) -> String {
        format!(
            "ports {}; action {}; match_source_port {}; prefix_len {}; source_rate {} burst {}; \
             wakeup_bytes {}; reactive {} ({} prefixes, synack_rate {} burst {})",
            self.ports,
            match self.action {
                MatchAction::Drop => "drop",
                MatchAction::Pass => "pass",
            },
            if self.match_source_port { "on" } else { "off" },
            self.prefix_len,
            self.source_rate,
            self.source_burst,
            self.wakeup_bytes,
            match self.reactive {
                ReactivePolicy::Off => "off",
                ReactivePolicy::Silent => "silent",
                ReactivePolicy::Reset => "reset",
            },
            self.reactive_prefixes.len(),
            self.synack_rate,
            self.synack_burst,
        )
    }

    /// Keys that differ between `self` and `other` and only a restart changes.
    fn restart_only_changes(&self, other: &RunOptions) -> Vec<&'static str> {
        let mut keys = Vec::new();
        let mut check = |changed: bool, key: &'static str| {
            if changed {
                keys.push(key);
            }
        };
        check(self.interface != other.interface, "[capture] interface");
        check(self.mode != other.mode, "[capture] xdp_mode");
        check(self.ring_bytes != other.ring_bytes, "[capture] ring_bytes");
        check(self.max_events != other.max_events, "[capture] count");
        check(self.outputs.ndjson != other.outputs.ndjson, "[ndjson]");
        check(self.outputs.pcapng != other.outputs.pcapng, "[pcapng]");
        check(
            self.outputs.rotation != other.outputs.rotation,
            "[rotation]",
        );
        check(self.rules != other.rules, "[fingerprint] rules");
        check(self.threads != other.threads, "[fingerprint] threads");
        check(self.detail != other.detail, "[events] detail");
        check(
            self.sampling.map(|s| s.per_template) != other.sampling.map(|s| s.per_template),
            "[events] per_template",
        );
        check(
            format!("{:?}", self.detect_rogue) != format!("{:?}", other.detect_rogue),
            "[rogue]",
        );
        check(
            self.metrics_listen != other.metrics_listen,
            "[metrics] listen",
        );
        check(
            self.control_socket != other.control_socket,
            "[control] socket",
        );
        keys
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
    Metrics(#[from] ListenError),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("cannot handle SIGHUP: {0}")]
    Signal(std::io::Error),
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
    /// Each output's counters.
    pub outputs: Vec<(&'static str, SinkCounters)>,
    /// Run-time configuration changes applied (reloads and control commands) and refused.
    pub config_changes: u64,
    pub config_failures: u64,
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

/// Runs until `shutdown` completes or `max_events` events were written, reporting failures of
/// outputs and run-time changes on stderr. The program is detached before the function
/// returns, on every path.
pub async fn run(
    options: &RunOptions,
    shutdown: impl Future<Output = ()>,
    on_attached: impl FnOnce(&Attached),
) -> Result<RunSummary, AgentError> {
    run_with(options, shutdown, on_attached, |notice| {
        eprintln!("sensor: {notice}")
    })
    .await
}

/// [`run`], with the operator's messages (an output failed or came back, a reload) handed to
/// `notify`.
pub async fn run_with(
    options: &RunOptions,
    shutdown: impl Future<Output = ()>,
    on_attached: impl FnOnce(&Attached),
    mut notify: impl FnMut(&str),
) -> Result<RunSummary, AgentError> {
    if options.prefix_len == 0 || usize::from(options.prefix_len) > PAYLOAD_CAPACITY {
        return Err(AgentError::PrefixLen(options.prefix_len));
    }
    // Rules, outputs, the metrics address and the control socket first: any of them failing
    // stops the run before anything is attached.
    let mut pipeline = Pipeline::new(&PipelineOptions {
        rules: options.rules.clone(),
        outputs: options.outputs.clone(),
        detect_rogue: options.detect_rogue.clone(),
        identity: options.identity.clone(),
        kafka: options.kafka.clone(),
        aggregate: options.aggregate,
        detail: options.detail,
        sampling: options.sampling,
        threads: options.threads,
    })?;
    if options.reactive != ReactivePolicy::Off && options.reactive_prefixes.is_empty() {
        return Err(AgentError::ReactiveWithoutPrefixes);
    }
    let metrics_listener = options.metrics_listen.map(metrics::bind).transpose()?;
    let mut control_socket = options
        .control_socket
        .as_deref()
        .map(ControlSocket::bind)
        .transpose()?;
    let mut hangups = if options.reload_on_sighup {
        Some(
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .map_err(AgentError::Signal)?,
        )
    } else {
        None
    };

    let mut program = SensorProgram::load(options.ring_bytes)?;
    let kernel_config = options.kernel_config();
    program.set_config(kernel_config)?;
    program.set_ports(&options.ports)?;
    program.set_reactive_prefixes(&options.reactive_prefixes)?;
    // Secrets always, so that a reload can turn the responder on.
    program.set_cookie_secret(0, random_secret()?)?;
    program.set_cookie_secret(1, random_secret()?)?;
    let mut secret_rotation = tokio::time::interval_at(
        tokio::time::Instant::now() + SECRET_ROTATION,
        SECRET_ROTATION,
    );
    let mut reader = RingReader::new(program.take_rings())?;
    let attachment = program.attach(&options.interface, options.mode)?;
    let link_id = attachment.link_id();
    program.close_program()?;
    // Everything that needs a capability is done: the program is loaded and attached, its maps
    // are open, the ring buffer is mapped, the metrics and control sockets are bound. What
    // follows (reading the ring, map lookups and updates on open descriptors, writing the
    // outputs) needs none; an error here detaches, as every other error does.
    let credentials = match &options.privileges {
        Some(plan) => {
            if let Some(user) = &plan.user {
                // The user must be able to reopen its outputs after a failure.
                for destination in [&options.outputs.ndjson, &options.outputs.pcapng] {
                    if let Some(Destination::File(path)) = destination
                        && path.exists()
                    {
                        std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)).map_err(
                            |source| AgentError::OutputOwner {
                                path: path.clone(),
                                user: user.name.clone(),
                                source,
                            },
                        )?;
                    }
                }
            }
            Some(crate::privilege::drop_privileges(plan)?)
        }
        None => None,
    };
    // The Kafka producer's threads start only now, after the drop: capabilities belong to
    // threads.
    pipeline.start_outputs()?;
    on_attached(&Attached {
        interface: options.interface.clone(),
        ifindex: attachment.ifindex,
        mode: attachment.mode,
        link_id,
        credentials,
    });

    let (scrape_tx, mut scrapes) = mpsc::channel::<ScrapeRequest>(8);
    let metrics_task = metrics_listener.map(|l| tokio::spawn(metrics::serve(l, scrape_tx)));
    let (control_tx, mut commands) = mpsc::channel::<ControlRequest>(8);
    let control_task = control_socket.as_mut().map(|s| s.serve(control_tx));

    let mut live = Live {
        current: options.clone(),
        kernel_config,
        mode: attachment.mode,
        changes: 0,
        failures: 0,
        rate: RateWindow::new(RATE_WINDOW),
    };
    let clock = WallClock::now();
    let limit = options.max_events.unwrap_or(u64::MAX);
    let mut shutdown = pin!(shutdown);
    let mut ticks = tokio::time::interval(PIPELINE_TICK);
    let analysed = pipeline.analysed_signal();
    let result = loop {
        if pipeline.counters.events_written >= limit {
            break Ok(());
        }
        tokio::select! {
            // In this order: the rare branches first, so that a stop, a scrape or a command is
            // taken at the next turn however busy the ring is.
            biased;
            _ = &mut shutdown => break Ok(()),
            Some(request) = commands.recv() => {
                let answer = live.command(&mut program, &pipeline, request.command);
                notify(&format!("control: {answer}"));
                let _ = request.reply.send(answer);
            }
            Some(()) = hangup(&mut hangups) => {
                let answer = live.reload(&mut program);
                notify(&format!("SIGHUP: {answer}"));
            }
            Some(reply) = scrapes.recv() => {
                let _ = reply.send(live.metrics(&program, &pipeline));
            }
            _ = ticks.tick() => {
                pipeline.tick();
                live.rate.record(Instant::now(), pipeline.counters.events_written);
            }
            _ = secret_rotation.tick() => {
                // Sign with the other slot from now on; the old secret still validates the
                // cookies it signed until the next rotation.
                let next = live.kernel_config.secret_generation ^ 1;
                let rotated = random_secret().and_then(|secret| {
                    program.set_cookie_secret(next, secret)?;
                    let mut config = live.kernel_config;
                    config.secret_generation = next;
                    program.set_config(config)?;
                    live.kernel_config = config;
                    Ok(())
                });
                if let Err(e) = rotated {
                    break Err(e);
                }
            }
            // With analyst threads: a round came back, to be written.
            () = rung(analysed.as_deref()), if pipeline.awaiting_analysts() => {
                pipeline.flush();
            }
            drained = reader.drain_batch(BATCH, DRAIN_TICK, |bytes, next| pipeline.ring_item(bytes, next, &clock)) => {
                if let Err(e) = drained {
                    break Err(e.into());
                }
                pipeline.flush();
                // While the ring never runs dry this loop never waits, and on this one-thread
                // runtime nothing else would run: not the metrics and control connections, not
                // the signal and timer drivers. Give them a turn after every batch.
                tokio::task::yield_now().await;
            }
        }
        for notice in pipeline.take_notices() {
            notify(&notice);
        }
    };
    if let Some(task) = metrics_task {
        task.abort();
    }
    if let Some(task) = control_task {
        task.abort();
    }
    drop(control_socket);

    let ifindex = attachment.ifindex;
    let mode = attachment.mode;
    attachment.detach();
    result?;
    // Records committed before the detach are still in the ring: take them too.
    reader.drain_now(|bytes, next| pipeline.ring_item(bytes, next, &clock));
    // Let in-flight program runs on other CPUs finish their counter updates.
    tokio::time::sleep(Duration::from_millis(20)).await;
    reader.drain_now(|bytes, next| pipeline.ring_item(bytes, next, &clock));
    let kernel = program.counters()?;
    // Every record read is written and aggregated before the report.
    pipeline.settle();
    // Before finish: the report is of the events; finish only writes the final documents.
    let report = pipeline.report(DEFAULT_TOP);
    // Blocking, and nothing else runs now: the Kafka output delivers or spools what is left,
    // within its shutdown timeout.
    let kafka = pipeline.finish(&kernel);
    for notice in pipeline.take_notices() {
        notify(&notice);
    }
    Ok(RunSummary {
        interface: options.interface.clone(),
        ifindex,
        mode,
        kernel,
        agent: pipeline.counters,
        rogue: pipeline.rogue_counters(),
        outputs: pipeline
            .outputs()
            .states()
            .into_iter()
            .map(|(name, output)| (name, output.counters()))
            .collect(),
        config_changes: live.changes,
        config_failures: live.failures,
        kafka,
        report,
    })
}

/// The next SIGHUP, or never when SIGHUP is not ours.
async fn hangup(signal: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match signal {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// The next ring of `signal`, or never without one.
async fn rung(signal: Option<&Notify>) {
    match signal {
        Some(s) => s.notified().await,
        None => std::future::pending().await,
    }
}

/// The settings in force while running, and what changed them.
struct Live {
    current: RunOptions,
    /// What the program's config map holds (the cookie secret generation included).
    kernel_config: SensorConfig,
    mode: AttachMode,
    changes: u64,
    failures: u64,
    rate: RateWindow,
}

impl Live {
    fn command(
        &mut self,
        program: &mut SensorProgram,
        pipeline: &Pipeline,
        command: ControlCommand,
    ) -> String {
        let mut next = self.current.clone();
        match command {
            ControlCommand::Ports(ports) => next.ports = ports,
            ControlCommand::Action(action) => next.action = action,
            ControlCommand::PrefixLen(n) => next.prefix_len = n,
            ControlCommand::MatchSourcePort(on) => next.match_source_port = on,
            ControlCommand::SourceRate { rate, burst } => {
                next.source_rate = rate;
                if let Some(burst) = burst {
                    next.source_burst = burst;
                }
            }
            ControlCommand::Reload => return self.reload(program),
            ControlCommand::Status => {
                let c = &pipeline.counters;
                return format!(
                    "ok: {}; events {}; records_read {}; output_errors {}; changes {}; \
                     failed changes {}; analyst threads {}; analyst waits {}",
                    self.current.describe_live(),
                    c.events_written,
                    c.records_read,
                    c.output_errors,
                    self.changes,
                    self.failures,
                    pipeline.analyst_threads(),
                    c.analyst_waits
                );
            }
            ControlCommand::Help => return format!("ok: {}", crate::control::HELP),
        }
        match self.apply(program, next) {
            Ok(changed) if changed.is_empty() => {
                format!("ok: unchanged: {}", self.current.describe_live())
            }
            Ok(changed) => format!(
                "ok: {} (changed: {})",
                self.current.describe_live(),
                changed.join(", ")
            ),
            Err(e) => {
                self.failures += 1;
                format!("error: {e}")
            }
        }
    }

    /// Reads the configuration file again and applies what can change at run time; a file that
    /// does not load changes nothing.
    fn reload(&mut self, program: &mut SensorProgram) -> String {
        let Some(source) = self.current.reload.clone() else {
            self.failures += 1;
            return "error: no configuration file to reload (start with --config FILE)".into();
        };
        let next = match source.load() {
            Ok(next) => next,
            Err(e) => {
                self.failures += 1;
                return format!("error: reload failed, the running configuration stays: {e}");
            }
        };
        let ignored = self.current.restart_only_changes(&next);
        match self.apply(program, next) {
            Ok(changed) => {
                let mut answer = format!(
                    "ok: reloaded {}: {} (changed: {})",
                    source.path.display(),
                    self.current.describe_live(),
                    if changed.is_empty() {
                        "nothing".to_string()
                    } else {
                        changed.join(", ")
                    }
                );
                if !ignored.is_empty() {
                    answer.push_str(&format!(
                        "; these changed in the file and take a restart: {}",
                        ignored.join(", ")
                    ));
                }
                answer
            }
            Err(e) => {
                self.failures += 1;
                format!("error: reload failed while applying it: {e}")
            }
        }
    }

    /// Writes what differs between the settings in force and `next` into the program's maps, in
    /// place: the port bitmap word by word (a port in both sets matches throughout), the config
    /// slot in one update. Only the run-time settings of `next` are taken.
    fn apply(
        &mut self,
        program: &mut SensorProgram,
        next: RunOptions,
    ) -> Result<Vec<&'static str>, AgentError> {
        if next.reactive != ReactivePolicy::Off && next.reactive_prefixes.is_empty() {
            return Err(AgentError::ReactiveWithoutPrefixes);
        }
        if next.prefix_len == 0 || usize::from(next.prefix_len) > PAYLOAD_CAPACITY {
            return Err(AgentError::PrefixLen(next.prefix_len));
        }
        let old = &self.current;
        let mut changed = Vec::new();
        if next.reactive_prefixes != old.reactive_prefixes {
            // Before the config, so that a responder turned on finds its prefixes in place.
            program.set_reactive_prefixes(&next.reactive_prefixes)?;
            changed.push("reactive_prefixes");
        }
        if next.ports != old.ports {
            program.set_ports(&next.ports)?;
            changed.push("ports");
        }
        let mut config = next.kernel_config();
        config.secret_generation = self.kernel_config.secret_generation;
        if config != self.kernel_config {
            program.set_config(config)?;
            self.kernel_config = config;
            for (differs, key) in [
                (next.action != old.action, "action"),
                (
                    next.match_source_port != old.match_source_port,
                    "match_source_port",
                ),
                (next.prefix_len != old.prefix_len, "prefix_len"),
                (next.wakeup_bytes != old.wakeup_bytes, "wakeup_bytes"),
                (
                    (next.source_rate, next.source_burst) != (old.source_rate, old.source_burst),
                    "source_rate",
                ),
                (next.reactive != old.reactive, "reactive"),
                (
                    (next.synack_rate, next.synack_burst) != (old.synack_rate, old.synack_burst),
                    "synack_rate",
                ),
            ] {
                if differs {
                    changed.push(key);
                }
            }
        }
        let current = &mut self.current;
        current.ports = next.ports;
        current.action = next.action;
        current.match_source_port = next.match_source_port;
        current.prefix_len = next.prefix_len;
        current.wakeup_bytes = next.wakeup_bytes;
        current.source_rate = next.source_rate;
        current.source_burst = next.source_burst;
        current.reactive = next.reactive;
        current.reactive_prefixes = next.reactive_prefixes;
        current.synack_rate = next.synack_rate;
        current.synack_burst = next.synack_burst;
        if !changed.is_empty() {
            self.changes += 1;
        }
        Ok(changed)
    }

    /// The exposition for a scrape: read the kernel's per-CPU counters now.
    fn metrics(&self, program: &SensorProgram, pipeline: &Pipeline) -> String {
        let mut out = Exposition::new();
        out.family(
            "sensor_info",
            Kind::Gauge,
            "The sensor's version, interface and XDP attach mode (value 1).",
        );
        out.sample(
            "sensor_info",
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("interface", &self.current.interface),
                ("xdp_mode", self.mode.as_str()),
            ],
            1u64,
        );
        if let Ok(per_cpu) = program.counters_per_cpu() {
            metrics::write_kernel(&mut out, &per_cpu.sum(), Some(&per_cpu));
        }
        out.gauge(
            "sensor_events_per_second",
            "Events per second over the last 10 seconds.",
            self.rate.per_second(),
        );
        pipeline.write_metrics(&mut out);
        let c = &self.current;
        out.gauge(
            "sensor_config_ports",
            "Ports in the match set.",
            c.ports.iter().count() as u64,
        );
        out.family(
            "sensor_config_action",
            Kind::Gauge,
            "What the kernel does with matched frames: 1 for the action in force.",
        );
        for (name, action) in [("drop", MatchAction::Drop), ("pass", MatchAction::Pass)] {
            out.sample(
                "sensor_config_action",
                &[("action", name)],
                c.action == action,
            );
        }
        out.gauge(
            "sensor_config_prefix_len",
            "Payload bytes captured per record.",
            u64::from(c.prefix_len),
        );
        out.counter(
            "sensor_config_changes_total",
            "Run-time configuration changes applied (reloads and control commands).",
            self.changes,
        );
        out.counter(
            "sensor_config_failures_total",
            "Run-time configuration changes refused (a bad file, a bad value).",
            self.failures,
        );
        out.into_text()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reload_names_what_needs_a_restart() {
        let old = RunOptions::new("eth1");
        let mut new = old.clone();
        new.ports = "5060,5070".parse().unwrap();
        new.action = MatchAction::Pass;
        assert!(old.restart_only_changes(&new).is_empty());
        new.interface = "eth2".into();
        new.outputs.pcapng = Some(crate::output::Destination::File("/tmp/x".into()));
        new.metrics_listen = Some("127.0.0.1:1".parse().unwrap());
        new.detail = EventDetail::Lean;
        new.threads = 3;
        assert_eq!(
            old.restart_only_changes(&new),
            [
                "[capture] interface",
                "[pcapng]",
                "[fingerprint] threads",
                "[events] detail",
                "[metrics] listen"
            ]
        );
        assert!(
            new.describe_live()
                .starts_with("ports 5060,5070; action pass; match_source_port off;")
        );
    }
}
