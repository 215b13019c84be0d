//! The `sensor` command: a thin shell over the library.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use std::io::Write as _;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use sensor::{
    agent::{self, RunOptions},
    aggregate::AggregateConfig,
    capture::{AttachMode, PortSet},
    config::ConfigFile,
    identity::{Prefix, SensorIdentity, hostname},
    output::kafka::{KafkaConfig, consume_topics},
    probe::{self, Method, ProbeOptions, Transports, target},
    report::{DEFAULT_TOP, Report, plot},
    rogue::TrackerConfig,
};
use sensor_common::{DEFAULT_PREFIX_LEN, DEFAULT_RING_BYTES, MatchAction};

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
    Run(RunArgs),
    /// Read the events of one or more sensors' Kafka topics and print one merged report.
    KafkaReport(KafkaReportArgs),
    /// Analyse a capture file (pcap or pcapng) with the same pipeline as live traffic; needs no
    /// privileges.
    Analyze(AnalyzeArgs),
    /// Probe SIP servers with OPTIONS, INVITE and REGISTER and judge each one: genuine SIP
    /// daemon, rogue listener, not listening, filtered or unknown, with the evidence for the
    /// five signs. Sends only to the addresses named.
    Probe(ProbeArgs),
    /// Report over NDJSON event files (`-`: standard input): the seed-style findings per tool,
    /// top tools, campaigns and sources; optionally a plot of events over time per tool.
    Report(ReportArgs),
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

#[derive(clap::Args)]
struct RunArgs {
    /// Interface to attach to (the darknet NIC).
    #[arg(long, short = 'i')]
    iface: String,
    /// XDP attach mode; `auto` tries native then generic and reports which it got.
    #[arg(long, value_enum, default_value = "native")]
    xdp_mode: ModeArg,
    /// Ports to match, e.g. `5060,5061` or `5060-5070`.
    #[arg(long, default_value = "5060,5061", value_parser = parse_ports)]
    ports: PortSet,
    /// Also match frames whose source port is in the set (mirrored links, responses).
    #[arg(long)]
    match_source_port: bool,
    /// What the kernel does with matched frames.
    #[arg(long, value_enum, default_value = "drop")]
    action: ActionArg,
    /// Payload bytes captured per frame (1 to 1024).
    #[arg(long, default_value_t = DEFAULT_PREFIX_LEN,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    prefix_len: u16,
    /// Ring buffer size in bytes: a power of two multiple of the page size.
    #[arg(long, default_value_t = DEFAULT_RING_BYTES)]
    ring_bytes: u32,
    /// Bytes waiting in the ring before the kernel wakes the agent; 0 leaves it to the kernel
    /// (a wakeup whenever the agent has caught up). The agent also drains every 10 ms.
    #[arg(long, default_value_t = 0)]
    wakeup_bytes: u32,
    /// Records per second admitted per source by the kernel; 0: unlimited. What a source sends
    /// beyond it is shed in the kernel and counted (`rate_limited`).
    #[arg(long, default_value_t = 0)]
    source_rate: u32,
    /// Burst allowed per source above --source-rate (records).
    #[arg(long, default_value_t = 100)]
    source_burst: u32,
    /// Answer TCP SYNs to --reactive-prefixes from the XDP program with SYN-cookie SYN-ACKs, so
    /// TCP scanners send their request; off by default.
    #[arg(long, value_enum, default_value = "off")]
    reactive: ReactiveArg,
    /// Darknet prefixes the reactive responder answers for, e.g. `203.0.113.0/24,2001:db8::/32`.
    #[arg(long, value_parser = parse_prefix_list, default_value = "")]
    reactive_prefixes: PrefixList,
    /// SYN-ACKs per second per source (the reflector limit).
    #[arg(long, default_value_t = 10)]
    synack_rate: u32,
    /// Burst of SYN-ACKs allowed per source above --synack-rate.
    #[arg(long, default_value_t = 20)]
    synack_burst: u32,
    /// Write events to this file (mode 0640, appended) instead of stdout.
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
    /// Stop after this many events.
    #[arg(long)]
    count: Option<u64>,
    /// Follow requests and responses per server and report rogue SIP daemons
    /// (`rogue_server`, `sip_server` and `rogue_stats` documents). Needs --match-source-port.
    #[arg(long)]
    detect_rogue: bool,
    /// Rogue detection: milliseconds without an answer before a request or a connect counts as
    /// timed out.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
    rogue_timeout_ms: u64,
    /// Rogue detection: servers tracked at once (the least recently seen are evicted).
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    rogue_max_servers: u64,
    /// Fingerprint rule file (TOML) loaded beside the built-in rules.
    #[arg(long, value_name = "FILE")]
    rules: Option<PathBuf>,
    /// Config file (TOML): `[sensor]` identity and the `[kafka]` output (see docs/kafka.md).
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// This sensor's name in every event (overrides `[sensor] name`; default: the host name).
    #[arg(long)]
    sensor_name: Option<String>,
    /// A darknet prefix this sensor watches, carried in every event (repeatable; overrides
    /// `[sensor] prefixes`).
    #[arg(long = "darknet-prefix")]
    darknet_prefixes: Vec<Prefix>,
    /// Once attached, also become this unprivileged user (the output file is handed to it).
    /// Every capability is given up after attaching in any case (docs/privileges.md).
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
    /// Keep root's capabilities after attaching (debugging only: see docs/privileges.md).
    #[arg(long, conflicts_with = "user")]
    keep_privileges: bool,
    #[command(flatten)]
    aggregate: AggregateArgs,
}

#[derive(Clone, Debug)]
struct PrefixList(Vec<sensor::capture::IpPrefix>);

fn parse_prefix_list(s: &str) -> Result<PrefixList, String> {
    sensor::capture::parse_prefixes(s)
        .map(PrefixList)
        .map_err(|e| e.to_string())
}

#[derive(clap::Args)]
struct AnalyzeArgs {
    /// The capture file.
    file: PathBuf,
    /// Ports to match, as `sensor run --ports`.
    #[arg(long, default_value = "5060,5061", value_parser = parse_ports)]
    ports: PortSet,
    /// Also match frames whose source port is in the set.
    #[arg(long)]
    match_source_port: bool,
    /// Payload bytes captured per frame (1 to 1024), as `sensor run --prefix-len`.
    #[arg(long, default_value_t = DEFAULT_PREFIX_LEN,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    prefix_len: u16,
    /// Fingerprint rule file (TOML) loaded beside the built-in rules.
    #[arg(long, value_name = "FILE")]
    rules: Option<PathBuf>,
    /// Write events to this file (mode 0640, appended) instead of stdout.
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
    #[command(flatten)]
    aggregate: AggregateArgs,
}

fn analyze_command(args: AnalyzeArgs) -> anyhow::Result<()> {
    let options = sensor::offline::analyze::AnalyzeOptions {
        ports: args.ports,
        match_source_port: args.match_source_port,
        prefix_len: args.prefix_len,
        pipeline: sensor::pipeline::PipelineOptions {
            rules: args.rules,
            output: args.output,
            aggregate: args.aggregate.config(),
            ..Default::default()
        },
    };
    let summary = sensor::offline::analyze::analyze(&args.file, &options)?;
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

fn parse_ports(s: &str) -> Result<PortSet, String> {
    s.parse()
        .map_err(|e: sensor::capture::PortSetError| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Probe(args) => probe_command(args),
        Command::Analyze(args) => analyze_command(args),
        Command::KafkaReport(args) => kafka_report(args),
        Command::Report(args) => report_command(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sensor: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    if args.detect_rogue && !args.match_source_port {
        anyhow::bail!(
            "--detect-rogue needs --match-source-port: without it the sensor never sees the \
             servers' answers"
        );
    }
    let config = match &args.config {
        Some(path) => ConfigFile::load(path)?,
        None => ConfigFile::default(),
    };
    let name = args.sensor_name.clone().or(config.sensor.name.clone());
    let prefixes = if args.darknet_prefixes.is_empty() {
        config.sensor.prefixes.clone()
    } else {
        args.darknet_prefixes.clone()
    };
    // Events carry the identity when one is configured, and always when they go to Kafka,
    // where many sensors meet.
    let identity = (name.is_some() || !prefixes.is_empty() || config.kafka.is_some()).then(|| {
        SensorIdentity {
            name: name.unwrap_or_else(hostname),
            interface: args.iface.clone(),
            prefixes,
        }
    });
    // Resolved before anything is attached: a wrong name is a configuration error.
    let user = args
        .user
        .as_deref()
        .map(sensor::privilege::User::lookup)
        .transpose()?;
    let options = RunOptions {
        interface: args.iface,
        mode: match args.xdp_mode {
            ModeArg::Native => AttachMode::Native,
            ModeArg::Generic => AttachMode::Generic,
            ModeArg::Auto => AttachMode::Auto,
        },
        ports: args.ports,
        match_source_port: args.match_source_port,
        action: match args.action {
            ActionArg::Drop => MatchAction::Drop,
            ActionArg::Pass => MatchAction::Pass,
        },
        prefix_len: args.prefix_len,
        ring_bytes: args.ring_bytes,
        wakeup_bytes: args.wakeup_bytes,
        source_rate: args.source_rate,
        source_burst: args.source_burst,
        reactive: match args.reactive {
            ReactiveArg::Off => sensor_common::ReactivePolicy::Off,
            ReactiveArg::Silent => sensor_common::ReactivePolicy::Silent,
            ReactiveArg::Reset => sensor_common::ReactivePolicy::Reset,
        },
        reactive_prefixes: args.reactive_prefixes.0,
        synack_rate: args.synack_rate,
        synack_burst: args.synack_burst,
        output: args.output,
        max_events: args.count,
        detect_rogue: args.detect_rogue.then(|| TrackerConfig {
            max_servers: args.rogue_max_servers as usize,
            reply_timeout_ns: args.rogue_timeout_ms.saturating_mul(1_000_000),
            connect_timeout_ns: args.rogue_timeout_ms.saturating_mul(1_000_000),
            ..TrackerConfig::default()
        }),
        rules: args.rules,
        identity,
        kafka: config.kafka,
        privileges: (!args.keep_privileges).then_some(sensor::privilege::PrivilegePlan { user }),
        aggregate: args.aggregate.config(),
    };
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
