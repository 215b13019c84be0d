//! The `sensor` command: a thin shell over the library.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use std::io::Write as _;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use sensor::{
    agent::{self, ReloadSource},
    aggregate::AggregateConfig,
    capture::{AttachMode, PortSet},
    config::{self, Action, ConfigFile, ReactiveMode},
    identity::Prefix,
    output::kafka::{KafkaConfig, consume_topics},
    probe::{self, Method, ProbeOptions, Transports, target},
    report::{DEFAULT_TOP, Report, plot},
};
use sensor_common::MatchAction;

#[derive(Parser)]
#[command(
    name = "sensor",
    version,
    about = "Kernel-assisted darknet sensor for SIP scanning"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Attach to an interface and write one JSON event per matched frame.
    Run(Box<RunArgs>),
    /// Analyse a capture file (pcap or pcapng) with the same pipeline as live traffic; needs no
    /// privileges.
    Analyze(AnalyzeArgs),
    /// Probe SIP servers with OPTIONS, INVITE and REGISTER and judge each one: genuine SIP
    /// daemon, rogue listener, not listening, filtered or unknown, with the evidence for the
    /// five signs. Sends only to the addresses named.
    Probe(ProbeArgs),
    /// Send a command to a running sensor's control socket (`ports 5060,5070`, `action pass`,
    /// `reload`, `status`, `help`) and print its answer.
    Ctl(CtlArgs),
    /// Summarise NDJSON events: top tools, campaigns and sources, the seed-style findings, and
    /// optionally a plot of events over time per tool.
    Report(ReportArgs),
    /// Read the events of one or more sensors' Kafka topics and print one merged report.
    KafkaReport(KafkaReportArgs),
}

#[derive(clap::Args)]
struct CtlArgs {
    /// The sensor's control socket (`sensor run --control`).
    #[arg(long, short = 's', default_value = "/run/sensor.sock")]
    socket: PathBuf,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
    /// The command and its arguments, e.g. `ports 5060,5070-5080`.
    #[arg(required = true, num_args = 1.., trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// Bounds and windows of the aggregation (shared by run, analyze and report).
#[derive(clap::Args, Clone, Copy)]
struct AggregateArgs {
    /// Sources tracked at once; the least recently seen are evicted (and counted).
    #[arg(long, default_value_t = AggregateConfig::default().max_sources as u64,
          value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    max_sources: u64,
    /// Seconds without a packet before a source's record is closed; 0: never.
    #[arg(long, value_name = "SECONDS", default_value_t = AggregateConfig::default().source_idle_s)]
    source_idle: u64,
    /// Seconds: a campaign stays open while packets with its fingerprint template arrive less
    /// than this apart.
    #[arg(long, value_name = "SECONDS", default_value_t = AggregateConfig::default().campaign_window_s,
          value_parser = clap::value_parser!(u64).range(1..))]
    campaign_window: u64,
    /// Campaigns open at once; the least recently active are closed (and counted).
    #[arg(long, default_value_t = AggregateConfig::default().max_campaigns as u64,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_campaigns: u64,
}

impl AggregateArgs {
    fn config(&self) -> AggregateConfig {
        AggregateConfig {
            max_sources: self.max_sources as usize,
            source_idle_s: self.source_idle,
            campaign_window_s: self.campaign_window,
            max_campaigns: self.max_campaigns as usize,
        }
    }
}

#[derive(clap::Args)]
struct ReportArgs {
    /// NDJSON files of events (`sensor run -o`, `sensor analyze`); `-` reads standard input.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Rows per table.
    #[arg(long, default_value_t = DEFAULT_TOP)]
    top: usize,
    /// Write a plot of events over time per tool to this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// The summary as one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    aggregate: AggregateArgs,
}

#[derive(Clone, Copy, ValueEnum)]
enum TransportArg {
    Udp,
    Tcp,
    Both,
}

#[derive(clap::Args)]
struct ProbeArgs {
    /// Targets: ADDRESS, ADDRESS:PORT or [IPV6]:PORT. Names are not resolved.
    targets: Vec<String>,
    /// Read more targets from FILE, one per line (`#` starts a comment).
    #[arg(long, value_name = "FILE")]
    targets_file: Option<PathBuf>,
    /// Port for targets that name none.
    #[arg(long, default_value_t = probe::target::DEFAULT_PORT,
          value_parser = clap::value_parser!(u16).range(1..))]
    port: u16,
    /// Transports to probe.
    #[arg(long, value_enum, default_value = "both")]
    transport: TransportArg,
    /// Requests to send, in order.
    #[arg(long, value_delimiter = ',', default_value = "options,invite,register")]
    methods: Vec<Method>,
    /// RFC 3261 T1 in milliseconds: the first UDP retransmission interval (doubles, capped at 4 s).
    #[arg(long, default_value_t = 500)]
    t1_ms: u64,
    /// UDP retransmissions per request at most.
    #[arg(long, default_value_t = 3)]
    retransmissions: u32,
    /// Milliseconds to wait for an answer to each request.
    #[arg(long, default_value_t = 4000)]
    timeout_ms: u64,
    /// Milliseconds a TCP connect may take.
    #[arg(long, default_value_t = 3000)]
    connect_timeout_ms: u64,
    /// Targets probed at the same time.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Packets per second over the whole run.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// One JSON object per target instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    Native,
    Generic,
    Auto,
}

#[derive(Clone, Copy, ValueEnum)]
enum ReactiveArg {
    /// Never answer (default).
    Off,
    /// SYN-ACK with a SYN cookie, then silence (like the rogue listener of the second seed).
    Silent,
    /// SYN-ACK with a SYN cookie, then RST after the first data segment.
    Reset,
}

#[derive(Clone, Copy, ValueEnum)]
enum ActionArg {
    /// Drop matched frames (darknet default: nothing listens).
    Drop,
    /// Pass matched frames on to the kernel stack.
    Pass,
}

/// Flags of `run`. Each overrides the same key of --config; a flag not given leaves the file's
/// value (or the default shown) in force.
#[derive(clap::Args)]
struct RunArgs {
    /// Configuration file (TOML; docs/config.md). Flags override its keys; SIGHUP and the
    /// control command `reload` read it again.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Interface to attach to (the darknet NIC).
    #[arg(long, short = 'i')]
    iface: Option<String>,
    /// XDP attach mode; `auto` tries native then generic and reports which it got [default: native].
    #[arg(long, value_enum)]
    xdp_mode: Option<ModeArg>,
    /// Ports to match, e.g. `5060,5061` or `5060-5070` [default: 5060,5061].
    #[arg(long, value_parser = parse_ports)]
    ports: Option<PortSet>,
    /// Also match frames whose source port is in the set (mirrored links, responses);
    /// `--match-source-port=false` overrides a config that sets it.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    match_source_port: Option<bool>,
    /// What the kernel does with matched frames [default: drop].
    #[arg(long, value_enum)]
    action: Option<ActionArg>,
    /// Payload bytes captured per frame (1 to 1024) [default: 1024].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    prefix_len: Option<u16>,
    /// Ring buffer memory, all CPUs' rings together: a power of two multiple of the page size,
    /// in bytes or e.g. `64MiB`. Each CPU gets a ring of the largest power of two in its share
    /// (at least a page) [default: 64MiB].
    #[arg(long, value_parser = config::parse_size)]
    ring_bytes: Option<u64>,
    /// Bytes waiting in a CPU's ring before the kernel wakes the agent (once, by the record
    /// that brings the ring to them); 0 leaves it to the kernel (a wakeup whenever the agent has
    /// caught up). The agent also drains every 10 ms [default: 0].
    #[arg(long)]
    wakeup_bytes: Option<u32>,
    /// Records per second admitted per source by the kernel; 0: unlimited. What a source sends
    /// beyond it is shed in the kernel and counted (`rate_limited`) [default: 0].
    #[arg(long)]
    source_rate: Option<u32>,
    /// Burst allowed per source above --source-rate (records) [default: 100].
    #[arg(long)]
    source_burst: Option<u32>,
    /// Answer TCP SYNs to --reactive-prefixes from the XDP program with SYN-cookie SYN-ACKs, so
    /// TCP scanners send their request [default: off].
    #[arg(long, value_enum)]
    reactive: Option<ReactiveArg>,
    /// Darknet prefixes the reactive responder answers for, e.g. `203.0.113.0/24,2001:db8::/32`.
    #[arg(long, value_parser = parse_prefix_list)]
    reactive_prefixes: Option<PrefixList>,
    /// SYN-ACKs per second per source (the reflector limit) [default: 10].
    #[arg(long)]
    synack_rate: Option<u32>,
    /// Burst of SYN-ACKs allowed per source above --synack-rate [default: 20].
    #[arg(long)]
    synack_burst: Option<u32>,
    #[command(flatten)]
    outputs: OutputArgs,
    /// Serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9560.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Take control commands (ports, action, reload, ...) on this Unix socket (mode 0600), e.g.
    /// /run/sensor.sock; `sensor ctl` sends them.
    #[arg(long, value_name = "PATH")]
    control: Option<PathBuf>,
    /// Stop after this many events.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Follow requests and responses per server and report rogue SIP daemons
    /// (`rogue_server`, `sip_server` and `rogue_stats` documents). Needs --match-source-port.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    detect_rogue: Option<bool>,
    /// Rogue detection: milliseconds without an answer before a request or a connect counts as
    /// timed out [default: 5000].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    rogue_timeout_ms: Option<u64>,
    /// Rogue detection: servers tracked at once (the least recently seen are evicted)
    /// [default: 4096].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    rogue_max_servers: Option<u64>,
    /// Fingerprint rule file (TOML) loaded beside the built-in rules.
    #[arg(long, value_name = "FILE")]
    rules: Option<PathBuf>,
    /// This sensor's name in every event (overrides `[sensor] name`; default: the host name).
    #[arg(long)]
    sensor_name: Option<String>,
    /// A darknet prefix this sensor watches, carried in every event (repeatable; overrides
    /// `[sensor] prefixes`).
    #[arg(long = "darknet-prefix")]
    darknet_prefixes: Vec<Prefix>,
    /// Once attached, also become this unprivileged user (the output files are handed to it).
    /// Every capability is given up after attaching in any case (docs/privileges.md).
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
    /// Keep root's capabilities after attaching (debugging only: see docs/privileges.md).
    #[arg(long, conflicts_with = "user")]
    keep_privileges: bool,
    #[command(flatten)]
    aggregate: AggregateArgs,
    #[command(flatten)]
    events: EventArgs,
    #[command(flatten)]
    threads: ThreadArgs,
}

/// How much each event carries, and how many are written: shared by `run` and `analyze`.
#[derive(clap::Args)]
struct EventArgs {
    /// lean: what the aggregator and `sensor report` read (addresses, IP fields, attribution,
    /// per-packet inferences), with each template's first event per --campaign-window written
    /// compact; compact: the parsed message, the escaped payload, evidence and inferences as
    /// codes; full: also each evidence item's test, note and weight and the inferences'
    /// explanations. Default: compact (or the config's [events] detail).
    #[arg(long, value_enum, value_name = "DETAIL")]
    event_detail: Option<EventDetailArg>,
    /// The same as --event-detail full.
    #[arg(long, conflicts_with = "event_detail")]
    verbose_evidence: bool,
    /// Write only the first N events of each source address and fingerprint template in
    /// every --campaign-window; the rest are counted (agent.events_sampled_out), aggregated and
    /// kept in pcapng, not written to NDJSON or Kafka. Default: every event.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    events_per_template: Option<u32>,
}

#[derive(Clone, Copy, ValueEnum)]
enum EventDetailArg {
    Lean,
    Compact,
    Full,
}

impl EventArgs {
    /// The flags as `[events]` keys of a configuration layer.
    fn apply(&self, layer: &mut ConfigFile) {
        use sensor::output::event::EventDetail;
        layer.events.detail = match (self.verbose_evidence, self.event_detail) {
            (true, _) | (_, Some(EventDetailArg::Full)) => Some(EventDetail::Full),
            (_, Some(EventDetailArg::Compact)) => Some(EventDetail::Compact),
            (_, Some(EventDetailArg::Lean)) => Some(EventDetail::Lean),
            (false, None) => None,
        };
        layer.events.per_template = self.events_per_template;
    }
}

/// Output flags shared by `run` and `analyze`.
#[derive(clap::Args)]
struct OutputArgs {
    /// Write NDJSON events to this file (mode 0640, appended; with rotation, the base name of
    /// the rotated files) instead of stdout; `-` is stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<String>,
    /// No NDJSON output.
    #[arg(long, conflicts_with = "output")]
    no_ndjson: bool,
    /// Also write the captured records as pcapng to this file (mode 0640; `-` is stdout).
    #[arg(long, value_name = "FILE")]
    pcapng: Option<String>,
    /// No pcapng output (overrides a config that has one).
    #[arg(long, conflicts_with = "pcapng")]
    no_pcapng: bool,
    /// Start a new output file before one grows past this size, e.g. `100MiB`.
    #[arg(long, value_parser = config::parse_size, value_name = "SIZE")]
    rotate_size: Option<u64>,
    /// Start a new output file at every multiple of this interval (UTC-aligned), e.g. `1h`.
    #[arg(long, value_parser = config::parse_interval, value_name = "INTERVAL")]
    rotate_interval: Option<Duration>,
}

impl OutputArgs {
    fn apply(&self, layer: &mut ConfigFile) {
        if let Some(path) = &self.output {
            layer.ndjson.enabled = Some(true);
            layer.ndjson.path = Some(path.clone());
        }
        if self.no_ndjson {
            layer.ndjson.enabled = Some(false);
        }
        if let Some(path) = &self.pcapng {
            layer.pcapng.enabled = Some(true);
            layer.pcapng.path = Some(path.clone());
        }
        if self.no_pcapng {
            layer.pcapng.enabled = Some(false);
        }
        layer.rotation.size = self.rotate_size;
        layer.rotation.interval = self.rotate_interval;
    }
}

impl RunArgs {
    /// The flags as a configuration layer, to lay over the file.
    fn layer(&self) -> ConfigFile {
        let mut c = ConfigFile::default();
        let k = &mut c.capture;
        k.interface = self.iface.clone();
        k.xdp_mode = self.xdp_mode.map(|m| match m {
            ModeArg::Native => AttachMode::Native,
            ModeArg::Generic => AttachMode::Generic,
            ModeArg::Auto => AttachMode::Auto,
        });
        k.ports = self.ports.clone();
        k.match_source_port = self.match_source_port;
        k.action = self.action.map(|a| match a {
            ActionArg::Drop => Action::Drop,
            ActionArg::Pass => Action::Pass,
        });
        k.prefix_len = self.prefix_len;
        k.ring_bytes = self.ring_bytes;
        k.wakeup_bytes = self.wakeup_bytes;
        k.source_rate = self.source_rate;
        k.source_burst = self.source_burst;
        k.count = self.count;
        let r = &mut c.reactive;
        r.mode = self.reactive.map(|m| match m {
            ReactiveArg::Off => ReactiveMode::Off,
            ReactiveArg::Silent => ReactiveMode::Silent,
            ReactiveArg::Reset => ReactiveMode::Reset,
        });
        r.prefixes = self.reactive_prefixes.clone().map(|p| p.0);
        r.synack_rate = self.synack_rate;
        r.synack_burst = self.synack_burst;
        c.rogue.detect = self.detect_rogue;
        c.rogue.timeout_ms = self.rogue_timeout_ms;
        c.rogue.max_servers = self.rogue_max_servers;
        c.fingerprint.rules = self.rules.clone();
        c.fingerprint.threads = self.threads.threads;
        self.outputs.apply(&mut c);
        self.events.apply(&mut c);
        c.metrics.listen = self.metrics_listen;
        c.control.socket = self.control.clone();
        c.sensor.name = self.sensor_name.clone();
        if !self.darknet_prefixes.is_empty() {
            c.sensor.prefixes = Some(self.darknet_prefixes.clone());
        }
        c
    }
}

#[derive(Clone, Debug)]
struct PrefixList(Vec<Prefix>);

fn parse_prefix_list(s: &str) -> Result<PrefixList, String> {
    sensor::capture::parse_prefixes(s)
        .map(PrefixList)
        .map_err(|e| e.to_string())
}

#[derive(clap::Args)]
struct AnalyzeArgs {
    /// The capture file.
    file: PathBuf,
    /// Configuration file: its [capture] ports, match_source_port and prefix_len, [fingerprint],
    /// [ndjson], [pcapng], [rotation] and [metrics] file apply; flags override them.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Ports to match, as `sensor run --ports` [default: 5060,5061].
    #[arg(long, value_parser = parse_ports)]
    ports: Option<PortSet>,
    /// Also match frames whose source port is in the set.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    match_source_port: Option<bool>,
    /// Payload bytes captured per frame (1 to 1024), as `sensor run --prefix-len`
    /// [default: 1024].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    prefix_len: Option<u16>,
    /// Fingerprint rule file (TOML) loaded beside the built-in rules.
    #[arg(long, value_name = "FILE")]
    rules: Option<PathBuf>,
    #[command(flatten)]
    outputs: OutputArgs,
    /// Write the Prometheus exposition of the run to this file at the end (mode 0640).
    #[arg(long, value_name = "FILE")]
    metrics_file: Option<PathBuf>,
    #[command(flatten)]
    aggregate: AggregateArgs,
    #[command(flatten)]
    events: EventArgs,
    #[command(flatten)]
    threads: ThreadArgs,
}

/// Analyst threads: shared by `run` and `analyze`.
#[derive(clap::Args)]
struct ThreadArgs {
    /// Threads analysing records (1 to 64), each with the sources it is given (by a keyed hash
    /// of the address), beside the thread that reads records and writes events; 1: everything
    /// on one thread [default: 1, or the config's [fingerprint] threads]. Events, campaigns and
    /// the report are the same, in the order records were read; the source bound of the IP-ID
    /// history (--max-sources is the aggregator's) is per thread, and under --event-detail lean
    /// each thread writes its own compact example of a template.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=i64::from(config::MAX_THREADS)))]
    threads: Option<u16>,
}

/// The sampling of the configuration, in the campaign window of this run.
fn sampling(
    configured: Option<sensor::sampling::SamplingConfig>,
    aggregate: &AggregateArgs,
) -> Option<sensor::sampling::SamplingConfig> {
    configured.map(|s| sensor::sampling::SamplingConfig {
        window_s: aggregate.campaign_window,
        ..s
    })
}

fn analyze_command(args: AnalyzeArgs) -> anyhow::Result<()> {
    let mut layer = ConfigFile::default();
    layer.capture.ports = args.ports.clone();
    layer.capture.match_source_port = args.match_source_port;
    layer.capture.prefix_len = args.prefix_len;
    layer.fingerprint.rules = args.rules.clone();
    layer.fingerprint.threads = args.threads.threads;
    args.outputs.apply(&mut layer);
    layer.metrics.file = args.metrics_file.clone();
    args.events.apply(&mut layer);
    let settings = match &args.config {
        Some(path) => ConfigFile::load(path)?
            .overlay(&layer)
            .analyze_settings(&format!("config {}", path.display()))?,
        None => layer.analyze_settings("command line")?,
    };
    let mut pipeline = settings.pipeline;
    pipeline.aggregate = args.aggregate.config();
    pipeline.sampling = sampling(pipeline.sampling, &args.aggregate);
    let options = sensor::offline::analyze::AnalyzeOptions {
        ports: settings.ports,
        match_source_port: settings.match_source_port,
        prefix_len: settings.prefix_len,
        pipeline,
        metrics_file: settings.metrics_file,
    };
    let summary = sensor::offline::analyze::analyze(&args.file, &options)?;
    for notice in &summary.notices {
        eprintln!("sensor: {notice}");
    }
    eprintln!(
        "sensor: analysed {} packets from {} ({} not Ethernet); counters:",
        summary.packets,
        args.file.display(),
        summary.not_ethernet
    );
    eprint!("{}{}", summary.kernel, summary.agent);
    eprint!("\n{}", summary.report);
    if let Some(e) = summary.read_error {
        anyhow::bail!(
            "{} is damaged after packet {}: {e}",
            args.file.display(),
            summary.packets
        );
    }
    Ok(())
}

fn parse_ports(s: &str) -> Result<PortSet, String> {
    s.parse()
        .map_err(|e: sensor::capture::PortSetError| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(*args),
        Command::Probe(args) => probe_command(args),
        Command::Analyze(args) => analyze_command(args),
        Command::Ctl(args) => ctl_command(args),
        Command::Report(args) => report_command(args),
        Command::KafkaReport(args) => kafka_report(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sensor: error: {}", error_text(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each said once: many of the library's errors end their message
/// with their cause and also give it as their source, so the plain chain (`{:#}`) said "No such
/// file or directory" three times. A cause is left out only when the text so far ends with it.
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let said = cause.to_string();
        if text.ends_with(&said) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&said);
    }
    text
}

fn ctl_command(args: CtlArgs) -> anyhow::Result<()> {
    let command = args.command.join(" ");
    let answer = sensor::control::send(&args.socket, &command, Duration::from_secs(args.timeout))
        .with_context(|| format!("talking to the sensor at {}", args.socket.display()))?;
    println!("{answer}");
    if !answer.starts_with("ok") {
        anyhow::bail!("the sensor refused `{command}`");
    }
    Ok(())
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let flags = args.layer();
    let mut options = match &args.config {
        Some(path) => {
            let source = ReloadSource {
                path: path.clone(),
                flags,
            };
            source.load()?
        }
        None => flags.run_options("command line")?,
    };
    // SIGHUP reloads the configuration (or says there is none): it never kills the sensor.
    options.reload_on_sighup = true;
    options.aggregate = args.aggregate.config();
    options.sampling = sampling(options.sampling, &args.aggregate);
    // Resolved before anything is attached: a wrong name is a configuration error.
    let user = args
        .user
        .as_deref()
        .map(sensor::privilege::User::lookup)
        .transpose()?;
    options.privileges =
        (!args.keep_privileges).then_some(sensor::privilege::PrivilegePlan { user });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let summary = runtime.block_on(async {
        let shutdown = async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        };
        agent::run(&options, shutdown, |attached| {
            eprintln!(
                "sensor: attached to {} (ifindex {}) in {} mode{}; ports {}; action {}; prefix {} bytes",
                attached.interface,
                attached.ifindex,
                attached.mode,
                attached.link_id.map(|id| format!(", bpf_link {id}")).unwrap_or_default(),
                options.ports,
                match options.action {
                    MatchAction::Drop => "drop",
                    MatchAction::Pass => "pass",
                },
                options.prefix_len,
            );
            if let Some(addr) = options.metrics_listen {
                eprintln!("sensor: metrics at http://{addr}/metrics");
            }
            if let Some(path) = &options.control_socket {
                eprintln!("sensor: control socket {} (sensor ctl --socket {0} help)", path.display());
            }
            match &attached.credentials {
                Some(c) => eprintln!("sensor: privileges dropped: {c}"),
                None => eprintln!("sensor: privileges kept (--keep-privileges)"),
            }
        })
        .await
    })?;
    eprintln!(
        "sensor: detached from {} ({} mode); final counters:",
        summary.interface, summary.mode
    );
    eprint!("{}{}", summary.kernel, summary.agent);
    for (output, counters) in &summary.outputs {
        for (name, value) in counters.iter() {
            eprintln!("  output.{:<22} {value:>14}", format!("{output}.{name}"));
        }
    }
    if summary.config_changes + summary.config_failures > 0 {
        eprintln!(
            "  config.changes {:>29}\n  config.failures {:>28}",
            summary.config_changes, summary.config_failures
        );
    }
    if let Some(rogue) = summary.rogue {
        for (name, value) in rogue.iter() {
            eprintln!("  rogue.{name:<23} {value:>14}");
        }
    }
    if let Some(kafka) = &summary.kafka {
        eprint!("{kafka}");
    }
    match summary.kernel.check() {
        Ok(()) => eprintln!("sensor: counters reconcile"),
        Err(e) => eprintln!("sensor: counters do not reconcile: {e}"),
    }
    if let Some(kafka) = &summary.kafka {
        match kafka.check() {
            Ok(()) => eprintln!("sensor: kafka counters reconcile"),
            Err(e) => eprintln!("sensor: kafka counters do not reconcile: {e}"),
        }
    }
    eprint!("\n{}", summary.report);
    Ok(())
}

fn probe_command(args: ProbeArgs) -> anyhow::Result<()> {
    let mut targets = args
        .targets
        .iter()
        .map(|t| target::parse(t, args.port))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(path) = &args.targets_file {
        targets.extend(target::read_file(path, args.port)?);
    }
    let options = ProbeOptions {
        transports: match args.transport {
            TransportArg::Udp => Transports::Udp,
            TransportArg::Tcp => Transports::Tcp,
            TransportArg::Both => Transports::Both,
        },
        methods: args.methods,
        t1: std::time::Duration::from_millis(args.t1_ms),
        retransmissions: args.retransmissions,
        timeout: std::time::Duration::from_millis(args.timeout_ms),
        connect_timeout: std::time::Duration::from_millis(args.connect_timeout_ms),
        concurrency: args.concurrency,
        rate: args.rate,
    };
    options.validate()?;
    eprintln!(
        "sensor: probing {} target(s) as {} ({} per second at most, {} at a time)",
        targets.len(),
        probe::USER_AGENT,
        options.rate,
        options.concurrency
    );
    // One thread: the sockets are made where the command runs (its network namespace).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let reports = runtime.block_on(probe::probe_all(&targets, &options))?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let now = sensor::clock::realtime_ns();
        for report in &reports {
            serde_json::to_writer(&mut out, &probe::report::ProbeDoc::new(now, report))?;
            writeln!(out)?;
        }
    } else {
        write!(out, "{}", probe::report::table(&reports))?;
    }
    out.flush()?;
    Ok(())
}

#[derive(clap::Args)]
struct KafkaReportArgs {
    /// Bootstrap brokers, comma-separated (overrides `[kafka] brokers` of --config).
    #[arg(long, value_delimiter = ',')]
    brokers: Vec<String>,
    /// Topics to read, comma-separated (default: `[kafka] topic` of --config).
    #[arg(long, value_delimiter = ',')]
    topics: Vec<String>,
    /// Config file for the brokers and their TLS/SASL settings (`[kafka]`).
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// How many sources to list.
    #[arg(long, default_value_t = 20)]
    top: usize,
    /// Print the summary as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Give up if no record arrives for this many seconds before every partition is read.
    #[arg(long, default_value_t = 30)]
    idle_timeout: u64,
}

fn report_command(args: ReportArgs) -> anyhow::Result<()> {
    let mut report = Report::with_config(args.aggregate.config());
    for file in &args.files {
        let read = if file.as_os_str() == "-" {
            report.read_ndjson(std::io::stdin().lock())
        } else {
            let f = std::fs::File::open(file)
                .with_context(|| format!("cannot open {}", file.display()))?;
            report.read_ndjson(std::io::BufReader::new(f))
        };
        read.with_context(|| format!("reading {}", file.display()))?;
    }
    let summary = report.summary(args.top);
    if let Some(path) = &args.plot {
        std::fs::write(path, plot::svg(&summary))
            .with_context(|| format!("cannot write the plot to {}", path.display()))?;
        eprintln!(
            "sensor: plot of events over time per tool written to {}",
            path.display()
        );
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &summary)?;
        writeln!(out)?;
    } else {
        write!(out, "{summary}")?;
    }
    out.flush()?;
    Ok(())
}

fn kafka_report(args: KafkaReportArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => ConfigFile::load(path)?.kafka,
        None => None,
    };
    let mut config = match file {
        Some(k) => k,
        None => KafkaConfig::new(Vec::new(), "unused"),
    };
    if !args.brokers.is_empty() {
        config.brokers = args.brokers.clone();
    }
    anyhow::ensure!(
        !config.brokers.is_empty(),
        "no brokers: give --brokers or a --config with [kafka] brokers"
    );
    let topics = if args.topics.is_empty() {
        anyhow::ensure!(
            args.config.is_some(),
            "no topics: give --topics or a --config with [kafka] topic"
        );
        vec![config.topic.clone()]
    } else {
        args.topics.clone()
    };
    let mut report = Report::new();
    let read = consume_topics(
        &config,
        &topics,
        Duration::from_secs(args.idle_timeout),
        |record| report.add_json(record.payload),
    )?;
    let summary = report.summary(args.top);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "{} records read from {} partitions of {}",
            read.records,
            read.partitions.len(),
            topics.join(", ")
        );
        print!("{summary}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error that writes its cause into its message and gives it as its source too.
    #[derive(Debug, thiserror::Error)]
    #[error("reading the capture at byte 0: {source}")]
    struct Reading {
        source: std::io::Error,
    }

    #[test]
    fn error_text_says_each_cause_once() {
        let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
        let e = anyhow::Error::from(Reading { source: missing }).context("cannot read x.pcap");
        assert_eq!(
            error_text(&e),
            "cannot read x.pcap: reading the capture at byte 0: entity not found"
        );
        // A cause that its error does not end with is still said.
        let e = anyhow::anyhow!("the sensor refused `stop`").context("talking to the sensor");
        assert_eq!(
            error_text(&e),
            "talking to the sensor: the sensor refused `stop`"
        );
        let e = anyhow::anyhow!("refused").context("refused twice, then gave up");
        assert_eq!(error_text(&e), "refused twice, then gave up: refused");
    }
}
