//! The `sensor` command: a thin shell over the library.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use sensor::{
    agent::{self, RunOptions},
    capture::{AttachMode, PortSet},
    config::ConfigFile,
    identity::{Prefix, SensorIdentity, hostname},
    output::kafka::{KafkaConfig, consume_topics},
    report::Report,
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
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    Native,
    Generic,
    Auto,
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
    /// Write events to this file (mode 0640, appended) instead of stdout.
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
    /// Stop after this many events.
    #[arg(long)]
    count: Option<u64>,
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
        Command::KafkaReport(args) => kafka_report(args),
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
        output: args.output,
        max_events: args.count,
        identity,
        kafka: config.kafka,
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
        })
        .await
    })?;
    eprintln!(
        "sensor: detached from {} ({} mode); final counters:",
        summary.interface, summary.mode
    );
    eprint!("{}{}", summary.kernel, summary.agent);
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
