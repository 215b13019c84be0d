//! Benchmark 1: kernel cost per frame of the real XDP program, by frame class, as a ratio to an
//! empty XDP program (returns XDP_PASS) measured in the same run. BPF_PROG_TEST_RUN, one million
//! runs per measurement, the calling thread pinned to CPU 0; median of five measurements.
//!
//! Matched frames write a full record each: the ring buffer is drained between calls of 50,000
//! runs (fewer with a smaller ring), outside what is timed, so that every run takes the
//! reserve-copy-submit path rather than the ring-full path (a run that found it full is
//! reported). The drain reads only the records' headers (`sensor::capture::RingPages`, the
//! agent's reader), so that the ring's memory stays as the runs left it. Matched classes are measured with the agent's default ring (64 MiB);
//! `KERNEL_COST_RINGS=<bytes>,<bytes>...` measures others in turn.
//!
//! Time on a shared machine is noisy, so the benchmark also counts the kernel instructions each
//! run costs (perf_event_open, where the machine has hardware counters): a ratio that does not
//! move with the load.
//!
//! Matched classes are followed by four reference lines, measured interleaved in the same
//! rounds with a ring of the same size: the floor of the ring buffer itself on this machine, from
//! minimal XDP programs: `bpf_ringbuf_reserve` of a record-sized entry + `bpf_ringbuf_submit` and
//! nothing else; the same with the frame's first bytes (up to a record) copied in with one
//! `bpf_xdp_load_bytes`; and that copy into a record only as large as it needs (records packed
//! in the ring rather than one fixed size). No program that writes such a record can cost less.
//! The fourth is the other way out of XDP: the same bytes through `bpf_perf_event_output` into a
//! per-CPU perf buffer of the same size.
//!
//! Last, two CPUs write records at the same time (the copy floor program, so nothing but the
//! ring is shared): into one shared ring, and each into its own. The ratio is what one ring for
//! all receive queues costs over rings per CPU.
//!
//! `KERNEL_COST_BASELINE=<object>` also loads another build of the program (say, the previous
//! commit's `sensor-ebpf` object) and measures it interleaved in the same rounds, for before/after
//! comparisons that the machine's load does not skew.
//!
//! Run: `cargo bench -p sensor-tests --bench kernel_cost` (root), or `cargo xtask bench`.

use std::{cell::RefCell, os::fd::BorrowedFd, time::Duration};

use sensor::capture::{PortSet, RingPages, XdpVerdict};
use sensor_common::{CaptureRecord, Counter, MatchAction, SensorConfig};
use sensor_tests::{
    frames::{Frame, LINUX_SYN_OPTIONS, SVMAP_OPTIONS, TCP_SYN},
    harness::Harness,
    pin_to_cpu,
};
use xtask::{
    perf::KernelInstructions,
    xdp_pass::{self, PassProgram, PerfFloor, RingFloor},
};

const RUNS: u32 = 1_000_000;
const ROUNDS: usize = 5;
const RUN_CPU: usize = 0;
/// The agent's default ring. (A 2 MiB ring, the L2 caches of this machine's two CPUs together,
/// cost the same per record, and takes 20 times as long to measure: more drains between runs.)
const RINGS: [u32; 1] = [64 << 20];

fn rings() -> Vec<u32> {
    match std::env::var("KERNEL_COST_RINGS") {
        Ok(list) => list
            .split(',')
            .map(|v| {
                v.trim()
                    .parse()
                    .expect("KERNEL_COST_RINGS: ring sizes in bytes")
            })
            .collect(),
        Err(_) => RINGS.to_vec(),
    }
}

/// Runs between drains: as many as the ring holds records, so every run writes one.
fn chunk(ring_bytes: u32) -> u32 {
    let records = ring_bytes as usize / (CaptureRecord::SIZE + 8);
    [50_000, 25_000, 10_000, 5_000, 2_000, 1_000]
        .into_iter()
        .find(|&c| c as usize <= records)
        .unwrap_or(500)
}

/// Takes every record in the ring, reading only the header (and timestamp) of each; returns how
/// many.
fn drain(pages: &RefCell<RingPages>) -> u64 {
    pages.borrow_mut().drain(|_| {})
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Medians over the rounds of one program on one frame class.
#[derive(Default)]
struct Samples {
    ns: Vec<f64>,
    instructions: Vec<f64>,
    /// Runs that wrote no record (the ring was full), over all rounds.
    unwritten: u64,
}

impl Samples {
    /// One measurement: `RUNS` runs. With a ring, in chunks of as many runs as it holds
    /// records, drained between chunks (outside what is timed), so that every run can write one.
    fn measure(
        &mut self,
        mut run: impl FnMut(u32) -> Duration,
        ring: Option<(&dyn Fn() -> u64, u32)>,
        perf: Option<&KernelInstructions>,
    ) {
        let chunk = ring.map_or(RUNS, |(_, ring_bytes)| chunk(ring_bytes));
        let mut total = Duration::ZERO;
        let mut instructions = 0;
        for _ in 0..RUNS / chunk {
            let (mean, counted) = match perf {
                Some(p) => p.measure(|| run(chunk)).expect("read counter"),
                None => (run(chunk), 0),
            };
            total += mean * chunk;
            instructions += counted;
            if let Some((drain, _)) = ring {
                self.unwritten += u64::from(chunk).saturating_sub(drain());
            }
        }
        self.ns.push(total.as_nanos() as f64 / f64::from(RUNS));
        self.instructions
            .push(instructions as f64 / f64::from(RUNS));
    }

    fn medians(self) -> (f64, f64) {
        (median(self.ns), median(self.instructions))
    }
}

fn mean<V, E: std::fmt::Debug>(result: Result<(V, Duration), E>) -> Duration {
    result.expect("BPF_PROG_TEST_RUN").1
}

struct Row<'a> {
    label: &'a str,
    samples: Samples,
    target: Option<f64>,
}

/// One program measured on one frame class: how to run it, how to empty its ring.
struct Line<'a> {
    label: String,
    target: Option<f64>,
    run: Box<dyn Fn(u32) -> Duration + 'a>,
    drain: Box<dyn Fn() -> u64 + 'a>,
    samples: Samples,
}

impl<'a> Line<'a> {
    fn new(
        label: String,
        target: Option<f64>,
        run: impl Fn(u32) -> Duration + 'a,
        drain: impl Fn() -> u64 + 'a,
    ) -> Self {
        Self {
            label,
            target,
            run: Box::new(run),
            drain: Box::new(drain),
            samples: Samples::default(),
        }
    }
}

fn print_row(row: Row<'_>, empty: (f64, f64)) {
    let unwritten = row.samples.unwritten;
    let (s, si) = row.samples.medians();
    let (e, ei) = empty;
    let ratio_ins = if ei > 0.0 { si / ei } else { 0.0 };
    let verdict = row.target.map_or(String::new(), |t| {
        format!("{t:>6.1} {:>4}", if s / e <= t { "yes" } else { "NO" })
    });
    println!(
        "{:<40} {s:>9.1} {e:>8.1} {:>6.2} {si:>10.0} {ei:>9.0} {ratio_ins:>6.2} {verdict}",
        row.label,
        s / e
    );
    if unwritten > 0 {
        println!(
            "  ({unwritten} runs found the ring full: the figure above mixes in the ring-full path)"
        );
    }
}

/// Checks that `frame` takes the path the class claims.
fn check_verdict(sensor: &mut Sensor, name: &str, frame: &[u8], matched: bool) {
    let h = &mut sensor.harness;
    let before = h.counters();
    let (verdict, _) = h.program.test_run(frame, 1).expect("test run");
    let moved = h.counters().since(&before);
    let records: u64 = sensor.readers.iter().map(drain).sum();
    assert_eq!(records, u64::from(matched), "{name}");
    assert_eq!(moved.get(Counter::Emitted), u64::from(matched), "{name}");
    let expected = if matched {
        XdpVerdict::Drop
    } else {
        XdpVerdict::Pass
    };
    assert_eq!(verdict, expected, "{name}");
}

/// The program under test (or the baseline build) with its rings and a reader of each.
struct Sensor {
    harness: Harness,
    /// One per CPU (one in all for builds from before the per-CPU rings).
    readers: Vec<RefCell<RingPages>>,
}

impl Sensor {
    fn new(harness: Harness) -> Self {
        let readers = (0..harness.cpus())
            .map(|cpu| RefCell::new(RingPages::map(harness.ring_fd(cpu)).expect("map the ring")))
            .collect();
        Self { harness, readers }
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.harness
            .program
            .program_fd()
            .expect("program descriptor")
    }

    /// The reader of the ring that runs on `RUN_CPU` write into (CPU 0: also the one ring of a
    /// build from before the per-CPU rings).
    fn reader(&self) -> &RefCell<RingPages> {
        &self.readers[RUN_CPU]
    }
}

/// A floor program with a reader of its ring.
struct Floor {
    program: RingFloor,
    pages: RefCell<RingPages>,
}

impl Floor {
    fn load(ring_bytes: u32, record: u32, copy: u32) -> Self {
        let program =
            RingFloor::load(ring_bytes, record, copy).expect("load the ring buffer floor program");
        let pages = RingPages::map(program.ring_fd()).expect("map the floor's ring");
        Self {
            program,
            pages: RefCell::new(pages),
        }
    }
}

fn config() -> SensorConfig {
    SensorConfig::new(MatchAction::Drop, false, 1024)
}

/// The ring memory that gives each CPU a ring of `ring_bytes` (the agent splits its ring memory
/// between the CPUs).
fn total_ring_bytes(ring_bytes: u32) -> u32 {
    let cpus = aya::util::nr_cpus().expect("number of CPUs") as u32;
    ring_bytes * cpus.next_power_of_two()
}

fn load_sensor(ring_bytes: u32) -> Sensor {
    Sensor::new(Harness::with(
        config(),
        &PortSet::default(),
        total_ring_bytes(ring_bytes),
    ))
}

fn load_baseline(ring_bytes: u32) -> Option<Sensor> {
    let path = std::env::var_os("KERNEL_COST_BASELINE")?;
    let object = std::fs::read(&path).expect("read the baseline object");
    let program =
        sensor::capture::SensorProgram::load_object(&object, total_ring_bytes(ring_bytes))
            .expect("load the baseline object");
    let harness = Harness::with_program(program, config(), &PortSet::default());
    Some(Sensor::new(harness))
}

fn main() {
    pin_to_cpu(RUN_CPU);
    let sip = SVMAP_OPTIONS;
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&[2, 0, 0, 0, 0, 2, 0x08, 0x06]);
    arp.extend_from_slice(&[0; 46]);
    let classes: Vec<(&str, Vec<u8>, bool)> = vec![
        ("ARP (non-IP)", arp, false),
        (
            "IPv4 UDP to port 53",
            Frame::udp("198.51.100.7", "203.0.113.9", 40000, 53, &[0; 32]).build(),
            false,
        ),
        (
            "IPv4 TCP SYN to port 80",
            Frame::tcp(
                "198.51.100.7",
                "203.0.113.9",
                40000,
                80,
                TCP_SYN,
                &LINUX_SYN_OPTIONS,
            )
            .build(),
            false,
        ),
        (
            "IPv6 UDP to port 53",
            Frame::udp("2001:db8::7", "2001:db8:dead::9", 40000, 53, &[0; 32]).build(),
            false,
        ),
        (
            "IPv4 UDP SIP OPTIONS (svmap, 392 B)",
            Frame::udp("198.51.100.7", "203.0.113.9", 5060, 5060, sip).build(),
            true,
        ),
        (
            "IPv4 UDP SIP 1400 B (1024 captured)",
            Frame::udp("198.51.100.7", "203.0.113.9", 5060, 5060, &[b'A'; 1400]).build(),
            true,
        ),
        (
            "IPv4 TCP SYN to 5060",
            Frame::tcp(
                "198.51.100.7",
                "203.0.113.9",
                40000,
                5060,
                TCP_SYN,
                &LINUX_SYN_OPTIONS,
            )
            .build(),
            true,
        ),
        (
            "IPv6 UDP SIP OPTIONS",
            Frame::udp("2001:db8::7", "2001:db8:dead::9", 5060, 5060, sip).build(),
            true,
        ),
    ];

    let empty = PassProgram::load().expect("load the empty XDP program (root needed)");
    let rings = rings();
    let cpus = aya::util::nr_cpus().expect("number of CPUs") as u32;
    let record = CaptureRecord::SIZE as u32;
    let perf = KernelInstructions::open();
    if let Some(path) = std::env::var_os("KERNEL_COST_BASELINE") {
        println!("baseline object: {}", path.to_string_lossy());
    }
    println!(
        "kernel cost per frame (BPF_PROG_TEST_RUN, {RUNS} runs, median of {ROUNDS}, on CPU {RUN_CPU})"
    );
    if perf.is_none() {
        println!("(no hardware counters here: instruction columns are 0)");
    }
    println!(
        "{:<40} {:>9} {:>8} {:>6} {:>10} {:>9} {:>6} {:>6} {:>4}",
        "frame class",
        "sensor ns",
        "empty ns",
        "ratio",
        "sensor ins",
        "empty ins",
        "ratio",
        "target",
        "met"
    );
    let measure_empty = |e: &mut Samples, frame: &[u8]| {
        e.measure(
            |repeat| mean(empty.test_run(frame, repeat)),
            None,
            perf.as_ref(),
        )
    };

    // Frames that do not match never touch the ring: measured once, on the first ring.
    let mut sensor = load_sensor(rings[0]);
    for (name, frame, _) in classes.iter().filter(|(_, _, matched)| !matched) {
        check_verdict(&mut sensor, name, frame, false);
        let (mut s, mut e) = (Samples::default(), Samples::default());
        for _ in 0..ROUNDS {
            measure_empty(&mut e, frame);
            s.measure(
                |repeat| mean(xdp_pass::test_run(sensor.fd(), frame, repeat)),
                None,
                perf.as_ref(),
            );
        }
        let empty_medians = e.medians();
        print_row(
            Row {
                label: name,
                samples: s,
                target: Some(1.3),
            },
            empty_medians,
        );
    }
    let mut last_counters = vec![sensor.harness.counters()];
    drop(sensor);

    for &ring_bytes in &rings {
        println!("-- matched frames, ring of {} KiB", ring_bytes >> 10);
        let mut sensor = load_sensor(ring_bytes);
        let mut baseline = load_baseline(ring_bytes);
        let reserve_floor = Floor::load(ring_bytes, record, 0);
        for (name, frame, _) in classes.iter().filter(|(_, _, matched)| *matched) {
            // Verdict check first: a benchmark of the wrong path would be worthless.
            check_verdict(&mut sensor, name, frame, true);
            if let Some(b) = &mut baseline {
                check_verdict(b, "baseline", frame, true);
            }
            let copy = (frame.len() as u32).min(record);
            let copy_floor = Floor::load(ring_bytes, record, copy);
            let packed = (copy + 64).next_multiple_of(8);
            let packed_floor = Floor::load(ring_bytes, packed, copy);
            let perf_floor = PerfFloor::load(cpus, ring_bytes as usize, copy)
                .expect("load the perf event array floor program");
            // The lines of this class, each a program and the drain of its ring, measured in
            // this order in every round.
            let mut lines = vec![Line::new(
                name.to_string(),
                Some(3.0),
                |repeat| mean(xdp_pass::test_run(sensor.fd(), frame, repeat)),
                || drain(sensor.reader()),
            )];
            if let Some(base) = &baseline {
                lines.push(Line::new(
                    "  baseline object".into(),
                    None,
                    |repeat| mean(xdp_pass::test_run(base.fd(), frame, repeat)),
                    || drain(base.reader()),
                ));
            }
            for (label, floor) in [
                (
                    format!("  floor: reserve {record} B + submit"),
                    &reserve_floor,
                ),
                (format!("  floor: + copy {copy} B of frame"), &copy_floor),
                (
                    format!("  floor: same copy, {packed} B record"),
                    &packed_floor,
                ),
            ] {
                lines.push(Line::new(
                    label,
                    None,
                    |repeat| mean(floor.program.test_run(frame, repeat)),
                    || drain(&floor.pages),
                ));
            }
            lines.push(Line::new(
                format!("  floor: perf event output, {copy} B"),
                None,
                |repeat| mean(perf_floor.test_run(frame, repeat)),
                || perf_floor.drain().0,
            ));
            let mut e = Samples::default();
            for _ in 0..ROUNDS {
                measure_empty(&mut e, frame);
                for line in &mut lines {
                    line.samples
                        .measure(&line.run, Some((&line.drain, ring_bytes)), perf.as_ref());
                }
            }
            let empty_medians = e.medians();
            for line in lines {
                print_row(
                    Row {
                        label: &line.label,
                        samples: line.samples,
                        target: line.target,
                    },
                    empty_medians,
                );
            }
        }
        last_counters.push(sensor.harness.counters());
    }
    let sip_frame = &classes
        .iter()
        .find(|(_, _, matched)| *matched)
        .expect("a matched class")
        .1;
    contention(sip_frame, rings[0]);
    sensor_contention(sip_frame, rings[0]);
    for counters in last_counters {
        counters
            .check()
            .expect("counters reconcile after the benchmark");
    }
}

/// Two CPUs writing records at the same time, into one shared ring and each into a ring of its
/// own (the floor program that reserves, copies the frame and submits): what the sensor's one
/// ring costs over rings per CPU when several receive queues match frames at once.
fn contention(frame: &[u8], ring_bytes: u32) {
    let record = CaptureRecord::SIZE as u32;
    let copy = (frame.len() as u32).min(record);
    let load = || Floor::load(ring_bytes, record, copy);
    let shared = load();
    let own = [load(), load()];
    let (mut one, mut each) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        one.push(two_cpus([&shared, &shared], frame, ring_bytes));
        each.push(two_cpus([&own[0], &own[1]], frame, ring_bytes));
    }
    let (one, each) = (median(one), median(each));
    println!(
        "-- two CPUs writing at once (reserve + copy {copy} B + submit, ring of {} KiB each)",
        ring_bytes >> 10
    );
    println!(
        "{:<40} {one:>9.1} ns per record",
        "  one ring shared by both CPUs"
    );
    println!(
        "{:<40} {each:>9.1} ns per record ({:.2}x less)",
        "  one ring per CPU",
        one / each
    );
}

/// Mean ns per run of `RUNS` runs on each of CPUs 0 and 1 at once, in chunks that fit the
/// rings, drained between chunks.
fn two_cpus(floors: [&Floor; 2], frame: &[u8], ring_bytes: u32) -> f64 {
    let per_cpu = chunk(ring_bytes) / 2;
    let mut total = Duration::ZERO;
    for _ in 0..RUNS / per_cpu {
        let start = std::sync::Barrier::new(2);
        std::thread::scope(|s| {
            let runs: Vec<_> = floors
                .iter()
                .enumerate()
                .map(|(cpu, floor)| {
                    let (start, program) = (&start, &floor.program);
                    s.spawn(move || {
                        pin_to_cpu(cpu);
                        start.wait();
                        mean(program.test_run(frame, per_cpu))
                    })
                })
                .collect();
            for run in runs {
                total += run.join().expect("test run thread") * per_cpu;
            }
        });
        for floor in floors {
            drain(&floor.pages);
        }
    }
    total.as_nanos() as f64 / f64::from(2 * RUNS)
}

/// The sensor itself on two CPUs at once, each writing into its own ring; with
/// `KERNEL_COST_BASELINE`, that build too (a build from before the per-CPU rings shares one).
fn sensor_contention(frame: &[u8], ring_bytes: u32) {
    let sensor = load_sensor(ring_bytes);
    let baseline = load_baseline(ring_bytes);
    let (mut own, mut base) = (Vec::new(), Vec::new());
    let mut unwritten = 0;
    for _ in 0..ROUNDS {
        let (ns, lost) = sensor_two_cpus(&sensor, frame, ring_bytes);
        own.push(ns);
        unwritten += lost;
        if let Some(b) = &baseline {
            let (ns, lost) = sensor_two_cpus(b, frame, ring_bytes);
            base.push(ns);
            unwritten += lost;
        }
    }
    println!("-- the sensor on two CPUs at once (IPv4 UDP SIP OPTIONS)");
    let own = median(own);
    println!(
        "{:<40} {own:>9.1} ns per record",
        format!("  this build ({} rings)", sensor.readers.len())
    );
    if let Some(b) = &baseline {
        let base = median(base);
        println!(
            "{:<40} {base:>9.1} ns per record ({:.2}x this build)",
            format!("  baseline object ({} rings)", b.readers.len()),
            base / own
        );
    }
    if unwritten > 0 {
        println!("  ({unwritten} runs found a ring full: the figures mix in the ring-full path)");
    }
}

/// Mean ns per run of `RUNS` runs of the sensor on each of CPUs 0 and 1 at once, in chunks that
/// fit the rings, drained between chunks; and the runs that wrote no record.
fn sensor_two_cpus(sensor: &Sensor, frame: &[u8], ring_bytes: u32) -> (f64, u64) {
    let fd = sensor.fd();
    let per_cpu = chunk(ring_bytes) / 2;
    let mut total = Duration::ZERO;
    let mut unwritten = 0;
    for _ in 0..RUNS / per_cpu {
        let start = std::sync::Barrier::new(2);
        std::thread::scope(|s| {
            let runs: Vec<_> = (0..2)
                .map(|cpu| {
                    let start = &start;
                    s.spawn(move || {
                        pin_to_cpu(cpu);
                        start.wait();
                        mean(xdp_pass::test_run(fd, frame, per_cpu))
                    })
                })
                .collect();
            for run in runs {
                total += run.join().expect("test run thread") * per_cpu;
            }
        });
        let drained: u64 = sensor.readers.iter().map(drain).sum();
        unwritten += u64::from(2 * per_cpu).saturating_sub(drained);
    }
    (total.as_nanos() as f64 / f64::from(2 * RUNS), unwritten)
}
