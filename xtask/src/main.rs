//! `cargo xtask <command>`: setup, build, run (the lab), test.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use xtask::{fuzz, lab, setup, traffic, workspace_root};

#[derive(Parser)]
#[command(
    name = "xtask",
    about = "Build, lab and test orchestration for the SIP darknet sensor"
)]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what a fresh machine lacks (apt packages, rust-src, bpf-linker, sipvicious, tansu).
    Setup,
    /// Build the XDP program and the agent (release).
    Build,
    /// Run the sensor: in a veth lab with a demonstration mix by default, or on a real interface
    /// with `cargo xtask run -- --iface eth1 [sensor run options]`.
    Run {
        /// Options for `sensor run`; with --iface, no lab is built.
        #[arg(last = true)]
        sensor_args: Vec<String>,
    },
    /// Run the benchmarks and print their ratios against the baselines and peers measured in the
    /// same run: kernel cost per frame, end to end on veth against tcpdump, userspace records
    /// and offline analysis against sipgrep and tshark, memory per source.
    Bench {
        /// Only these benchmarks: kernel, e2e, userspace, memory (default: all).
        #[arg(value_delimiter = ',')]
        only: Vec<String>,
        /// More flags for `sensor run` in the end-to-end benchmark, one per use, e.g.
        /// `--sensor-arg=--events-per-template --sensor-arg=8`.
        #[arg(long = "sensor-arg", value_name = "FLAG", allow_hyphen_values = true)]
        sensor_args: Vec<String>,
        /// The end-to-end benchmark's generator: XDP live frames, or AF_PACKET (the first).
        #[arg(long, value_enum, default_value = "live")]
        generator: xtask::bench::Generator,
        /// Where the end-to-end benchmark's receive side runs: in the generator's softirq on
        /// CPU 0, or in a NAPI thread on the consumer's CPU 1 (NIC-like; live generator only).
        #[arg(long, value_enum, default_value = "generator")]
        receive: xtask::bench::Receive,
    },
    /// Fuzz every cargo-fuzz target (fuzz/) for a while each; new inputs join fuzz/corpus.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Only these targets (default: all).
        #[arg(value_delimiter = ',')]
        targets: Vec<String>,
    },
    /// Run every check and test: formatting, clippy, unit, kernel and end-to-end tests, and a
    /// bounded run of each fuzz target (without extra arguments).
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(last = true)]
        cargo_args: Vec<String>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Task::Setup => setup::setup(),
        Task::Build => {
            setup::setup()?;
            build_release()
        }
        Task::Run { sensor_args } => {
            setup::setup()?;
            build_release()?;
            if sensor_args
                .iter()
                .any(|a| a == "--iface" || a == "-i" || a.starts_with("--iface="))
            {
                run_on_interface(&sensor_args)
            } else {
                run_lab(&sensor_args)
            }
        }
        Task::Bench {
            only,
            sensor_args,
            generator,
            receive,
        } => {
            setup::setup()?;
            build_release()?;
            bench(&only, &sensor_args, generator, receive)
        }
        Task::Fuzz { seconds, targets } => {
            setup::setup()?;
            fuzz_all(&targets, fuzz::Budget::Seconds(seconds))
        }
        Task::Test { cargo_args } => {
            setup::setup()?;
            test(&cargo_args)
        }
    }
}

fn cargo(args: &[&str]) -> Result<()> {
    let status = Command::new(env!("CARGO"))
        .args(args)
        .current_dir(workspace_root())
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("`cargo {}` failed: {status}", args.join(" "));
    }
    Ok(())
}

fn build_release() -> Result<()> {
    cargo(&["build", "--release", "--package", "sensor"])
}

fn sensor_binary() -> PathBuf {
    workspace_root().join("target/release/sensor")
}

fn run_on_interface(args: &[String]) -> Result<()> {
    let status = Command::new(sensor_binary())
        .arg("run")
        .args(args)
        .status()
        .context("starting the sensor")?;
    if !status.success() {
        bail!("sensor exited with {status}");
    }
    Ok(())
}

/// Builds the lab, runs the sensor on the darknet end, sends the demonstration mix from the
/// scanner namespace, shows the events, stops the sensor and tears the lab down.
fn run_lab(extra: &[String]) -> Result<()> {
    let swept = lab::sweep_stale()?;
    if !swept.is_empty() {
        eprintln!("lab: removed stale namespaces {swept:?}");
    }
    let lab = lab::Lab::create("run")?;
    eprintln!(
        "lab: darknet namespace {} ({} {}/{}), scanner namespace {} ({} {}/{})",
        lab.dark_ns,
        lab.dark_if,
        lab::DARK_V4,
        lab::DARK_V6,
        lab.scan_ns,
        lab.scan_if,
        lab::SCAN_V4,
        lab::SCAN_V6
    );
    let out_dir = workspace_root().join("lab-output");
    std::fs::create_dir_all(&out_dir)?;
    let events_path = out_dir.join("events.ndjson");
    let _ = std::fs::remove_file(&events_path);

    let mut sensor = lab
        .in_dark(sensor_binary().to_str().unwrap_or("sensor"))
        .args(["run", "--iface", &lab.dark_if, "--output"])
        .arg(&events_path)
        .args(extra)
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the sensor in the darknet namespace")?;
    let (attached_tx, attached_rx) = mpsc::channel();
    let stderr = sensor.stderr.take().context("sensor stderr")?;
    let stderr_thread = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("attached to") {
                let _ = attached_tx.send(());
            }
            eprintln!("{line}");
        }
    });
    if attached_rx.recv_timeout(Duration::from_secs(20)).is_err() {
        stop(&mut sensor);
        bail!("the sensor did not attach within 20 s (see its messages above)");
    }

    let mix = traffic::demo_mix(&lab)?;
    eprintln!(
        "lab: sent {} SIP datagrams, {} TCP SYN to 5060, {} noise packets",
        mix.sip_udp, mix.tcp_syns, mix.noise
    );
    if xtask::command_ok("which", &["sipvicious_svmap"]) {
        eprintln!(
            "lab: running SIPVicious svmap against {}",
            lab::darknet_v4(20)
        );
        let _ = lab
            .in_scan("sipvicious_svmap")
            .args([&lab::darknet_v4(20).to_string(), "--timeout", "0.5"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    std::thread::sleep(Duration::from_millis(500));
    stop(&mut sensor);
    let _ = stderr_thread.join();

    show_events(&events_path)?;
    eprintln!("lab: full events in {}", events_path.display());
    drop(lab);
    let left = lab::existing_namespaces();
    if left
        .iter()
        .any(|n| n.contains(&format!("-{}-", std::process::id())))
    {
        bail!("lab namespaces left behind: {left:?}");
    }
    eprintln!("lab: torn down");
    Ok(())
}

/// SIGINT, then wait: the sensor detaches and prints its final counters.
fn stop(child: &mut Child) {
    // SAFETY: plain kill(2) on our child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let _ = child.wait();
}

/// One line per event (see [`xtask::show`]).
fn show_events(path: &Path) -> Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    println!("{}", xtask::show::header());
    for line in text.lines() {
        if let Some(shown) = xtask::show::event_line(line) {
            println!("{shown}");
        }
    }
    Ok(())
}

fn bench(
    only: &[String],
    extra_sensor_args: &[String],
    generator: xtask::bench::Generator,
    receive: xtask::bench::Receive,
) -> Result<()> {
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    lab::sweep_stale()?;
    if wanted("kernel") {
        println!("== 1. kernel cost per frame ==");
        cargo(&[
            "bench",
            "--package",
            "sensor-tests",
            "--bench",
            "kernel_cost",
        ])?;
    }
    if wanted("e2e") {
        println!("== 2. end to end on veth: sensor vs tcpdump -w 'udp port 5060' ==");
        // Wakeups batched by the kernel (the agent also drains every 10 ms): on a virtual
        // machine each wakeup is an inter-processor interrupt, a VM exit.
        let mut sensor_args = vec!["--wakeup-bytes", "262144"];
        sensor_args.extend(extra_sensor_args.iter().map(String::as_str));
        println!(
            "sensor run ... {}; generator {generator:?}, receive side on the {receive:?}'s CPU",
            sensor_args.join(" ")
        );
        let (sensor, tcpdump) =
            xtask::bench::end_to_end(&sensor_binary(), &sensor_args, generator, receive)?;
        let s = xtask::bench::best_zero_loss(&sensor);
        let t = xtask::bench::best_zero_loss(&tcpdump);
        let unaccounted = sensor.iter().filter(|step| !step.accounted()).count();
        let (s1, t1) = (
            xtask::bench::best_within(&sensor, 0.001),
            xtask::bench::best_within(&tcpdump, 0.001),
        );
        println!(
            "highest rate losing at most 0.1 %: sensor {s1:.0} pps, tcpdump {t1:.0} pps, ratio {:.2}",
            if t1 > 0.0 { s1 / t1 } else { f64::INFINITY }
        );
        println!(
            "highest zero-loss rate: sensor {s:.0} pps, tcpdump {t:.0} pps, ratio {:.2} (target >= 5); \
             sensor steps with unaccounted loss: {unaccounted}",
            if t > 0.0 { s / t } else { f64::INFINITY }
        );
    }
    if wanted("userspace") {
        println!(
            "== 3. userspace: records through the agent; offline analysis vs sipgrep and tshark =="
        );
        cargo(&["bench", "--package", "sensor", "--bench", "fingerprint"])?;
        cargo(&["bench", "--package", "sensor", "--bench", "offline"])?;
    }
    if wanted("memory") {
        println!("== 4. memory per source, one million sources ==");
        cargo(&["bench", "--package", "sensor", "--bench", "memory"])?;
    }
    Ok(())
}

fn test(cargo_args: &[String]) -> Result<()> {
    let swept = lab::sweep_stale()?;
    if !swept.is_empty() {
        eprintln!("test: removed stale namespaces {swept:?}");
    }
    cargo(&["fmt", "--all", "--", "--check"])?;
    cargo(&["clippy", "--all-targets", "--", "-D", "warnings"])?;
    let mut args = vec!["test"];
    args.extend(cargo_args.iter().map(String::as_str));
    let result = cargo(&args);
    // Namespaces of finished test processes are leftovers; live ones belong to another run.
    let left = lab::sweep_stale()?;
    if !left.is_empty() {
        bail!("tests left network namespaces behind (now removed): {left:?}");
    }
    result?;
    if cargo_args.is_empty() {
        // The bounded fuzz runs: a fixed number of inputs per target.
        for (target, runs) in fuzz::TARGETS {
            if !fuzz::seeds_present(target) {
                seed_fuzz_corpus()?;
            }
            let run = fuzz::run(target, fuzz::Budget::Runs(*runs))?;
            eprintln!("{}", fuzz::describe(&run));
        }
    }
    eprintln!("test: all checks and tests passed");
    Ok(())
}

/// Writes the fuzz targets' seed inputs (idempotent).
fn seed_fuzz_corpus() -> Result<()> {
    cargo(&[
        "run",
        "--quiet",
        "--package",
        "sensor-tests",
        "--bin",
        "seed-fuzz-corpus",
    ])
}

/// `cargo xtask fuzz`: seeds, builds, then runs each target for its budget and prints the runs.
fn fuzz_all(only: &[String], budget: fuzz::Budget) -> Result<()> {
    seed_fuzz_corpus()?;
    fuzz::build()?;
    let mut runs = Vec::new();
    for (target, _) in fuzz::TARGETS {
        if !only.is_empty() && !only.iter().any(|o| o == target) {
            continue;
        }
        eprintln!("fuzz: running {target} ({budget:?})");
        let run = fuzz::run(target, budget)?;
        eprintln!("{}", fuzz::describe(&run));
        // The corpus is kept in the repository: only what adds coverage stays.
        fuzz::minimize(target)?;
        runs.push(run);
    }
    println!("fuzz summary:");
    for run in &runs {
        println!("{}", fuzz::describe(run));
    }
    Ok(())
}
