//! Benchmark 2: end to end on veth. The project's own generator offers SIP OPTIONS at rising rates
//! to the darknet end; at each rate the sensor and then `tcpdump -w` with the filter `udp port
//! 5060` take the same stream, and the highest rate at which each loses nothing is reported.
//!
//! Two generators ([`Generator`]): XDP live frames through BPF_PROG_TEST_RUN (`live_frames`, the
//! default), or AF_PACKET with PACKET_QDISC_BYPASS and sendmmsg (`blaster`, the first one, whose
//! sending cost bounded every step on two CPUs). The generator runs on CPU 0, the sensor's agent
//! and tcpdump on CPU 1. Where the darknet end's receive side runs (its NAPI, and with it the XDP
//! program, or the stack and tcpdump's copy) is the other choice ([`Receive`]).

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use crate::{
    blaster::Blaster,
    frames::Frame,
    lab::{self, Lab},
    live_frames::LiveFrames,
};

/// Which generator offers the frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Generator {
    /// XDP live frames through BPF_PROG_TEST_RUN, paced by the program, 241 sources.
    Live,
    /// AF_PACKET, PACKET_QDISC_BYPASS, sendmmsg: 256 prebuilt frames.
    Packet,
}

/// Where the darknet end's receive side runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Receive {
    /// On the generator's CPU, in its softirq: the generator waits for the receive side, so no
    /// frame is lost before the consumer, and the rate is bounded by that CPU.
    Generator,
    /// In a kernel thread of its own (threaded NAPI, real-time) on the consumer's CPU, as a
    /// NIC's receive queue is served: a generator faster than the receive side fills veth's
    /// 256-frame ring, and what veth cannot queue is lost and counted (live generator only).
    Consumer,
}

/// The rates tried, in frames per second.
pub const LADDER: [u64; 12] = [
    25_000, 50_000, 100_000, 150_000, 200_000, 300_000, 400_000, 600_000, 800_000, 1_000_000,
    1_400_000, 2_000_000,
];
/// Frames offered at each rate: one second's worth, at least this many.
const MIN_FRAMES: u64 = 50_000;

/// What one consumer did with one offered burst.
#[derive(Clone, Debug, Default)]
pub struct StepResult {
    pub offered_rate: u64,
    pub sent: u64,
    /// Of them, frames the darknet end's device could not take (in `device_drops` too).
    pub refused: u64,
    pub achieved_rate: f64,
    /// Records written by the sensor, or packets captured by tcpdump.
    pub received: u64,
    /// Losses the consumer counted (ring_full + rate_limited + output errors; tcpdump's "dropped
    /// by kernel").
    pub counted_losses: u64,
    /// Frames dropped before any consumer saw them: the veth pair's own counters and the
    /// kernel's input backlog drops.
    pub device_drops: u64,
    /// Sensor only: frames the XDP program saw that matched.
    pub matched: u64,
}

impl StepResult {
    pub fn zero_loss(&self) -> bool {
        self.received == self.sent
    }

    /// The share of the frames sent that the consumer did not get.
    pub fn lost_share(&self) -> f64 {
        self.sent.saturating_sub(self.received) as f64 / self.sent.max(1) as f64
    }

    /// More than 1 % lost: the ladder goes on past steps that lost less (with the receive side
    /// on the consumer's CPU, veth's 256-frame ring loses a few frames at any rate on a virtual
    /// machine, whenever the NAPI thread is woken late), and stops after two such steps.
    fn overloaded(&self) -> bool {
        self.lost_share() > 0.01
    }

    /// `sent = received + counted losses` (device drops included).
    pub fn accounted(&self) -> bool {
        self.sent == self.received + self.counted_losses + self.device_drops
    }
}

fn mac_of(lab_ns: &str, ifname: &str) -> Result<[u8; 6]> {
    let out = Command::new("ip")
        .args(["netns", "exec", lab_ns, "cat"])
        .arg(format!("/sys/class/net/{ifname}/address"))
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut mac = [0u8; 6];
    for (i, part) in text.trim().split(':').enumerate().take(6) {
        mac[i] = u8::from_str_radix(part, 16).context("parse MAC")?;
    }
    Ok(mac)
}

fn device_counter(ns: &str, ifname: &str, name: &str) -> u64 {
    Command::new("ip")
        .args(["netns", "exec", ns, "cat"])
        .arg(format!("/sys/class/net/{ifname}/statistics/{name}"))
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(0)
}

/// Frames the veth pair dropped: the sender's tx_dropped and the darknet end's rx_dropped.
pub fn device_drops(lab: &Lab) -> u64 {
    device_counter(&lab.scan_ns, &lab.scan_if, "tx_dropped")
        + device_counter(&lab.dark_ns, &lab.dark_if, "rx_dropped")
}

/// Frames the veth pair dropped, for a generator: the live generator's frames that veth could not
/// queue are in both ends' counters (the sender's tx_dropped and the receiver's rx_dropped), so
/// only the receiver's count them.
fn drops_for(lab: &Lab, generator: Generator) -> u64 {
    match generator {
        Generator::Packet => device_drops(lab),
        Generator::Live => device_counter(&lab.dark_ns, &lab.dark_if, "rx_dropped"),
    }
}

/// SIP OPTIONS frames from 256 sources to 16 darknet addresses, addressed to the darknet end.
pub fn sip_frames(lab: &Lab) -> Result<Vec<Vec<u8>>> {
    let dst_mac = mac_of(&lab.dark_ns, &lab.dark_if)?;
    let src_mac = mac_of(&lab.scan_ns, &lab.scan_if)?;
    let mut frames = Vec::new();
    for i in 0..256u32 {
        let src = format!("198.51.100.{}", 2 + (i % 250));
        let dst = lab::darknet_v4(10 + (i % 16) as u8).to_string();
        let payload = crate::traffic::sip_request("OPTIONS", dst.parse()?, src.parse()?, 5060, i);
        let mut frame = Frame::udp(&src, &dst, 5060, 5060, &payload).build();
        frame[0..6].copy_from_slice(&dst_mac);
        frame[6..12].copy_from_slice(&src_mac);
        frames.push(frame);
    }
    Ok(frames)
}

/// Moves the darknet end's receive processing (NAPI) to a kernel thread of its own on CPU 1, where
/// the consumer runs, as a NIC's receive queue is served on one CPU.
pub fn thread_napi(lab: &Lab) -> Result<()> {
    crate::cmd(
        "ip",
        &[
            "netns",
            "exec",
            &lab.dark_ns,
            "sh",
            "-c",
            &format!("echo 1 > /sys/class/net/{}/threaded", lab.dark_if),
        ],
    )?;
    let ps = Command::new("ps").args(["-eo", "pid=,comm="]).output()?;
    // A thread's name is cut to 15 bytes: `napi/<interface>-<id>`.
    let name = format!("napi/{}", lab.dark_if);
    let name = &name[..name.len().min(15)];
    let mut pinned = 0;
    for line in String::from_utf8_lossy(&ps.stdout).lines() {
        if let Some((pid, comm)) = line.trim().split_once(' ')
            && comm.trim().starts_with(name)
        {
            crate::cmd("taskset", &["-p", "-c", "1", pid])?;
            // A real-time thread, so that it takes the CPU from the consumer at once, as the
            // receive softirq of a NIC's interrupt does.
            crate::cmd("chrt", &["-f", "-p", "50", pid])?;
            pinned += 1;
        }
    }
    if pinned == 0 {
        bail!("no NAPI thread for {} to pin", lab.dark_if);
    }
    Ok(())
}

/// The live generator's frame: SIP OPTIONS from 198.51.100.2 to 203.0.113.250, whose addresses
/// the generator varies.
pub fn live_frame(lab: &Lab) -> Result<Vec<u8>> {
    let dst_mac = mac_of(&lab.dark_ns, &lab.dark_if)?;
    let src_mac = mac_of(&lab.scan_ns, &lab.scan_if)?;
    let (src, dst) = ("198.51.100.2", lab::darknet_v4(250).to_string());
    let payload = crate::traffic::sip_request("OPTIONS", dst.parse()?, src.parse()?, 5060, 0);
    let mut frame = Frame::udp(src, &dst, 5060, 5060, &payload).build();
    frame[0..6].copy_from_slice(&dst_mac);
    frame[6..12].copy_from_slice(&src_mac);
    Ok(frame)
}

/// The frames of a run and how they are offered.
pub struct Stream<'a> {
    pub lab: &'a Lab,
    pub generator: Generator,
    /// The packet generator's frames (the live generator makes its own).
    pub frames: Vec<Vec<u8>>,
}

impl Stream<'_> {
    /// Offers `count` frames at `rate` from CPU 0: what the generator sent, and the frames the
    /// veth pair and the kernel's input backlogs dropped meanwhile.
    pub fn offer(&self, count: u64, rate: u64) -> Result<(crate::blaster::SendReport, u64)> {
        let lab = self.lab;
        let before = drops_for(lab, self.generator) + softnet_drops();
        let report = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    crate::pin_to_cpu(0);
                    let _ns = lab.enter_scan()?;
                    match self.generator {
                        Generator::Live => {
                            LiveFrames::new(&lab.scan_ns, &lab.scan_if, live_frame(lab)?)?
                                .send(count, rate)
                        }
                        Generator::Packet => {
                            Blaster::new(&lab.scan_if, self.frames.clone())?.send(count, rate)
                        }
                    }
                })
                .join()
                .map_err(|_| anyhow::anyhow!("generator thread panicked"))?
        })?;
        let after = drops_for(lab, self.generator) + softnet_drops();
        Ok((report, after.saturating_sub(before)))
    }
}

/// A consumer process whose stderr is collected in a thread.
struct Consumer {
    child: Child,
    stderr: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl Drop for Consumer {
    /// A benchmark that fails half way must not leave its consumer running.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts a process and waits until a line of its stderr contains `ready`.
fn start_and_wait(mut command: Command, ready: &'static str) -> Result<Consumer> {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("start consumer")?;
    let stderr = child.stderr.take().context("stderr")?;
    let (tx, rx) = mpsc::channel();
    let stderr = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains(ready) {
                let _ = tx.send(());
            }
            lines.push(line);
        }
        lines
    });
    if rx.recv_timeout(Duration::from_secs(30)).is_err() {
        let _ = child.kill();
        let _ = child.wait();
        bail!("consumer did not become ready (waiting for `{ready}`)");
    }
    Ok(Consumer {
        child,
        stderr: Some(stderr),
    })
}

/// SIGINT, wait, and every line the consumer wrote to stderr.
fn interrupt_and_collect(mut consumer: Consumer) -> Result<Vec<String>> {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(consumer.child.id() as i32, libc::SIGINT) };
    consumer.child.wait()?;
    consumer
        .stderr
        .take()
        .context("stderr already collected")?
        .join()
        .map_err(|_| anyhow::anyhow!("stderr reader panicked"))
}

/// Packets the kernel's per-CPU input backlogs dropped (`/proc/net/softnet_stat`, second
/// column): where a veth without XDP loses frames before any socket sees them.
fn softnet_drops() -> u64 {
    std::fs::read_to_string("/proc/net/softnet_stat")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| u64::from_str_radix(l.split_whitespace().nth(1)?, 16).ok())
        .sum()
}

/// Parses `  kernel.emitted    123` lines of the sensor's final report.
fn sensor_counters(lines: &[String]) -> BTreeMap<String, u64> {
    lines
        .iter()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let name = parts.next()?;
            let value = parts.next()?.parse().ok()?;
            (name.starts_with("kernel.") || name.starts_with("agent."))
                .then(|| (name.to_string(), value))
        })
        .collect()
}

/// One step for the sensor: start it, offer the burst, stop it, account.
pub fn sensor_step(
    stream: &Stream<'_>,
    sensor: &Path,
    sensor_args: &[&str],
    rate: u64,
    output: &Path,
) -> Result<StepResult> {
    let lab = stream.lab;
    let count = rate.max(MIN_FRAMES);
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", &lab.dark_ns, "taskset", "-c", "1"])
        .arg(sensor)
        .args(["run", "--iface", &lab.dark_if, "--output"])
        .arg(output)
        .args(sensor_args);
    let consumer = start_and_wait(command, "attached to")?;
    let (report, device_drops) = stream.offer(count, rate)?;
    std::thread::sleep(Duration::from_millis(500));
    let lines = interrupt_and_collect(consumer)?;
    let _ = std::fs::remove_file(output);
    let c = sensor_counters(&lines);
    let get = |k: &str| c.get(k).copied().unwrap_or(0);
    Ok(StepResult {
        offered_rate: rate,
        sent: report.sent,
        refused: report.refused,
        achieved_rate: report.rate(),
        // Every record the agent took: written, or counted out by `--events-per-template`.
        received: get("agent.events_written") + get("agent.events_sampled_out"),
        counted_losses: get("kernel.ring_full")
            + get("kernel.rate_limited")
            + get("agent.output_errors")
            + get("agent.records_undecodable"),
        device_drops,
        matched: get("kernel.matched"),
    })
}

/// One step for tcpdump on the same interface (no XDP program attached).
pub fn tcpdump_step(stream: &Stream<'_>, rate: u64, output: &Path) -> Result<StepResult> {
    let lab = stream.lab;
    let count = rate.max(MIN_FRAMES);
    let mut command = Command::new("ip");
    command
        .args([
            "netns",
            "exec",
            &lab.dark_ns,
            "taskset",
            "-c",
            "1",
            "tcpdump",
            "-i",
            &lab.dark_if,
        ])
        .args(["-n", "-w"])
        .arg(output)
        .arg("udp port 5060");
    let consumer = start_and_wait(command, "listening on")?;
    let (report, device_drops) = stream.offer(count, rate)?;
    // Longer than TPACKET_V3's one-second block timeout, so tcpdump has read what it got.
    std::thread::sleep(Duration::from_millis(1500));
    let lines = interrupt_and_collect(consumer)?;
    let _ = std::fs::remove_file(output);
    let number = |suffix: &str| {
        lines
            .iter()
            .find(|l| l.ends_with(suffix))
            .and_then(|l| l.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let captured = number("packets captured");
    // tcpdump's own accounting: "received by filter" counts what reached its socket, of which
    // it wrote "captured"; "dropped by kernel" is its ring overflowing.
    let unwritten = number("packets received by filter").saturating_sub(captured);
    Ok(StepResult {
        offered_rate: rate,
        sent: report.sent,
        refused: report.refused,
        achieved_rate: report.rate(),
        received: captured,
        counted_losses: number("packets dropped by kernel") + unwritten,
        device_drops,
        matched: 0,
    })
}

/// Runs the ladder for both consumers; stops a consumer's ladder after two steps that lost more
/// than 1 %.
pub fn end_to_end(
    sensor: &Path,
    sensor_args: &[&str],
    generator: Generator,
    receive: Receive,
) -> Result<(Vec<StepResult>, Vec<StepResult>)> {
    let lab = Lab::create("bench")?;
    if generator == Generator::Live {
        // For tcpdump's steps (the sensor's XDP program lets veth take them for its own). Not
        // for the packet generator, whose runs keep the conditions of the earlier ones.
        lab.take_redirected_frames()?;
    }
    if receive == Receive::Consumer {
        if generator != Generator::Live {
            bail!("the receive side on the consumer's CPU needs the live generator");
        }
        thread_napi(&lab)?;
    }
    let stream = Stream {
        lab: &lab,
        generator,
        frames: sip_frames(&lab)?,
    };
    let shm = Path::new("/dev/shm");
    let out_sensor = shm.join(format!("bench-sensor-{}.ndjson", std::process::id()));
    let out_pcap = shm.join(format!("bench-tcpdump-{}.pcap", std::process::id()));
    let mut sensor_steps = Vec::new();
    let mut tcpdump_steps = Vec::new();
    let (mut sensor_lossy, mut tcpdump_lossy) = (0, 0);
    for rate in LADDER {
        if sensor_lossy < 2 {
            let step = sensor_step(&stream, sensor, sensor_args, rate, &out_sensor)?;
            print_step("sensor", &step);
            if step.overloaded() {
                sensor_lossy += 1;
            }
            sensor_steps.push(step);
        }
        if tcpdump_lossy < 2 {
            let step = tcpdump_step(&stream, rate, &out_pcap)?;
            print_step("tcpdump", &step);
            if step.overloaded() {
                tcpdump_lossy += 1;
            }
            tcpdump_steps.push(step);
        }
        if sensor_lossy >= 2 && tcpdump_lossy >= 2 {
            break;
        }
    }
    Ok((sensor_steps, tcpdump_steps))
}

pub fn print_step(who: &str, s: &StepResult) {
    println!(
        "{who:<8} offered {:>9} pps achieved {:>11.0} pps sent {:>9} (refused {:>8}) received {:>9} counted losses {:>8} device drops {:>8} {} {}",
        s.offered_rate,
        s.achieved_rate,
        s.sent,
        s.refused,
        s.received,
        s.counted_losses,
        s.device_drops,
        if s.zero_loss() {
            "zero-loss".to_string()
        } else {
            format!("LOSSY {:.3} %", 100.0 * s.lost_share())
        },
        if s.accounted() {
            "accounted"
        } else {
            "UNACCOUNTED"
        },
    );
}

/// The highest achieved rate of a zero-loss step.
pub fn best_zero_loss(steps: &[StepResult]) -> f64 {
    best_within(steps, 0.0)
}

/// The highest achieved rate of a step that lost at most `share` of what was sent.
pub fn best_within(steps: &[StepResult], share: f64) -> f64 {
    steps
        .iter()
        .filter(|s| s.lost_share() <= share)
        .map(|s| s.achieved_rate)
        .fold(0.0, f64::max)
}
