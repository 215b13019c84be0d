//! Benchmark 1: kernel cost per frame of the real XDP program, by frame class, as a ratio to an
//! empty XDP program (returns XDP_PASS) measured in the same run. BPF_PROG_TEST_RUN, one million
//! runs per measurement, the calling thread pinned to one CPU; median of five measurements.
//!
//! Matched frames write a full record each: the ring buffer is drained every 50,000 runs (fewer
//! with a smaller ring) so that every run takes the reserve-copy-submit path rather than the
//! ring-full path.
//!
//! Time on a shared machine is noisy, so the benchmark also counts the kernel instructions each
//! run costs (perf_event_open, where the machine has hardware counters): a ratio that does not
//! move with the load.
//!
//! Matched classes are followed by two reference lines, measured interleaved in the same rounds:
//! the floor of the ring buffer itself on this machine, from minimal XDP programs with a ring of
//! the same size: `bpf_ringbuf_reserve` of a record-sized entry + `bpf_ringbuf_submit` and
//! nothing else, and the same with the frame's first bytes (up to a record) copied in with one
//! `bpf_xdp_load_bytes`. No program that writes such a record can cost less.
//!
//! `KERNEL_COST_BASELINE=<object>` also loads another build of the program (say, the previous
//! commit's `sensor-ebpf` object) and measures it interleaved in the same rounds, for before/after
//! comparisons that the machine's load does not skew.
//!
//! Run: `cargo bench -p sensor-tests --bench kernel_cost` (root), or `cargo xtask bench`.

use std::time::Duration;

use sensor::capture::{PortSet, XdpVerdict};
use sensor_common::{CaptureRecord, Counter, MatchAction, SensorConfig};
use sensor_tests::{
    frames::{Frame, LINUX_SYN_OPTIONS, TCP_SYN},
    harness::Harness,
    pin_to_cpu,
};
use xtask::{
    perf::KernelInstructions,
    xdp_pass::{PassProgram, RingFloor},
};

const RUNS: u32 = 1_000_000;
const ROUNDS: usize = 5;
/// The sensor's ring buffer size in this benchmark (the agent's default), also used by the floor
/// programs; `KERNEL_COST_RING_BYTES` overrides it (a ring that fits in the cache shows how much
/// of a record's cost is cache misses on ring memory).
const RING_BYTES: u32 = 64 << 20;

/// Runs between drains: as many as the ring holds records, so every run writes one.
fn chunk() -> u32 {
    let records = ring_bytes() as usize / (CaptureRecord::SIZE + 8);
    [50_000, 25_000, 10_000, 5_000, 1_000, 500, 100]
        .into_iter()
        .find(|&c| c as usize <= records)
        .unwrap_or(10)
}

fn ring_bytes() -> u32 {
    std::env::var("KERNEL_COST_RING_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(RING_BYTES)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Mean ns and kernel instructions per run over RUNS runs, in chunks with the ring drained
/// between them (the drain is outside what is counted).
fn sensor_cost(h: &mut Harness, frame: &[u8], perf: Option<&KernelInstructions>) -> (f64, f64) {
    let mut total = Duration::ZERO;
    let mut instructions = 0u64;
    let chunk = chunk();
    for _ in 0..RUNS / chunk {
        let ((_, mean), counted) = match perf {
            Some(p) => p
                .measure(|| h.program.test_run(frame, chunk).expect("test run"))
                .expect("read counter"),
            None => (h.program.test_run(frame, chunk).expect("test run"), 0),
        };
        total += mean * chunk;
        instructions += counted;
        h.drain();
    }
    (
        total.as_nanos() as f64 / f64::from(RUNS),
        instructions as f64 / f64::from(RUNS),
    )
}

/// As `sensor_cost`, for a ring buffer floor program.
fn floor_cost(floor: &RingFloor, frame: &[u8], perf: Option<&KernelInstructions>) -> (f64, f64) {
    let mut total = Duration::ZERO;
    let mut instructions = 0u64;
    let chunk = chunk();
    for _ in 0..RUNS / chunk {
        let ((_, mean), counted) = match perf {
            Some(p) => p
                .measure(|| floor.test_run(frame, chunk).expect("test run"))
                .expect("read counter"),
            None => (floor.test_run(frame, chunk).expect("test run"), 0),
        };
        total += mean * chunk;
        instructions += counted;
        floor.drain();
    }
    (
        total.as_nanos() as f64 / f64::from(RUNS),
        instructions as f64 / f64::from(RUNS),
    )
}

fn empty_cost(empty: &PassProgram, frame: &[u8], perf: Option<&KernelInstructions>) -> (f64, f64) {
    let ((_, mean), counted) = match perf {
        Some(p) => p
            .measure(|| empty.test_run(frame, RUNS).unwrap())
            .expect("read counter"),
        None => (empty.test_run(frame, RUNS).unwrap(), 0),
    };
    (mean.as_nanos() as f64, counted as f64 / f64::from(RUNS))
}

fn main() {
    pin_to_cpu(0);
    let sip = b"OPTIONS sip:100@203.0.113.9 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-3280387012;rport\r\nMax-Forwards: 70\r\nTo: \"sipvicious\"<sip:100@1.1.1.1>\r\nFrom: \"sipvicious\"<sip:100@1.1.1.1>;tag=63303030303230613133633401353737303930303337\r\nUser-Agent: friendly-scanner\r\nCall-ID: 969890095556717129979978\r\nContact: sip:100@198.51.100.7:5060\r\nCSeq: 1 OPTIONS\r\nAccept: application/sdp\r\nContent-Length: 0\r\n\r\n";
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
    let mut h = Harness::with(
        SensorConfig::new(MatchAction::Drop, false, 1024),
        &PortSet::default(),
        ring_bytes(),
    );
    let mut baseline = std::env::var_os("KERNEL_COST_BASELINE").map(|path| {
        let object = std::fs::read(&path).expect("read the baseline object");
        let program = sensor::capture::SensorProgram::load_object(&object, ring_bytes())
            .expect("load the baseline object");
        println!("baseline object: {}", path.to_string_lossy());
        Harness::with_program(
            program,
            SensorConfig::new(MatchAction::Drop, false, 1024),
            &PortSet::default(),
        )
    });
    let record = CaptureRecord::SIZE as u32;
    let reserve_floor =
        RingFloor::load(ring_bytes(), record, 0).expect("load the ring buffer floor program");
    let perf = KernelInstructions::open();
    println!(
        "kernel cost per frame (BPF_PROG_TEST_RUN, {RUNS} runs, median of {ROUNDS}, ring {} MiB)",
        ring_bytes() >> 20
    );
    if perf.is_none() {
        println!("(no hardware counters here: instruction columns are 0)");
    }
    println!(
        "{:<38} {:>9} {:>8} {:>6} {:>10} {:>9} {:>6} {:>6} {:>4}",
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
    for (name, frame, matched) in &classes {
        // Verdict check first: a benchmark of the wrong path would be worthless.
        let before = h.counters();
        let (verdict, _) = h.program.test_run(frame, 1).unwrap();
        let moved = h.counters().since(&before);
        h.drain();
        assert_eq!(moved.get(Counter::Emitted), u64::from(*matched), "{name}");
        assert_eq!(
            verdict,
            if *matched {
                XdpVerdict::Drop
            } else {
                XdpVerdict::Pass
            },
            "{name}"
        );
        // The floor programs of a matched class: reserve + submit, and reserve + copy + submit.
        let copy_floor = matched.then(|| {
            let copy = (frame.len() as u32).min(record);
            (
                copy,
                RingFloor::load(ring_bytes(), record, copy).expect("load the copy floor program"),
            )
        });
        let (mut sensor, mut floor, mut sensor_ins, mut floor_ins) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut rf, mut rf_ins, mut cf, mut cf_ins) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut base, mut base_ins) = (Vec::new(), Vec::new());
        if let Some(b) = baseline.as_mut() {
            let (verdict, _) = b.program.test_run(frame, 1).unwrap();
            b.drain();
            assert_eq!(
                verdict == XdpVerdict::Drop,
                *matched,
                "baseline verdict, {name}"
            );
        }
        for _ in 0..ROUNDS {
            let (ns, ins) = empty_cost(&empty, frame, perf.as_ref());
            floor.push(ns);
            floor_ins.push(ins);
            let (ns, ins) = sensor_cost(&mut h, frame, perf.as_ref());
            sensor.push(ns);
            sensor_ins.push(ins);
            if let Some(b) = baseline.as_mut() {
                let (ns, ins) = sensor_cost(b, frame, perf.as_ref());
                base.push(ns);
                base_ins.push(ins);
            }
            if let Some((_, copy_floor)) = &copy_floor {
                let (ns, ins) = floor_cost(&reserve_floor, frame, perf.as_ref());
                rf.push(ns);
                rf_ins.push(ins);
                let (ns, ins) = floor_cost(copy_floor, frame, perf.as_ref());
                cf.push(ns);
                cf_ins.push(ins);
            }
        }
        let (s, e) = (median(sensor), median(floor));
        let (si, ei) = (median(sensor_ins), median(floor_ins));
        let ratio = s / e;
        let ratio_ins = if ei > 0.0 { si / ei } else { 0.0 };
        let target = if *matched { 3.0 } else { 1.3 };
        println!(
            "{name:<38} {s:>9.1} {e:>8.1} {ratio:>6.2} {si:>10.0} {ei:>9.0} {ratio_ins:>6.2} {target:>6.1} {:>4}",
            if ratio <= target { "yes" } else { "NO" }
        );
        if !base.is_empty() {
            let (b, bi) = (median(base), median(base_ins));
            let ratio_ins = if ei > 0.0 { bi / ei } else { 0.0 };
            println!(
                "{:<38} {b:>9.1} {e:>8.1} {:>6.2} {bi:>10.0} {ei:>9.0} {ratio_ins:>6.2}",
                "  baseline object",
                b / e
            );
        }
        if let Some((copy, _)) = copy_floor {
            for (label, ns, ins) in [
                (format!("  floor: reserve {record} B + submit"), rf, rf_ins),
                (format!("  floor: + copy {copy} B of frame"), cf, cf_ins),
            ] {
                let (f, fi) = (median(ns), median(ins));
                let ratio_ins = if ei > 0.0 { fi / ei } else { 0.0 };
                println!(
                    "{label:<38} {f:>9.1} {e:>8.1} {:>6.2} {fi:>10.0} {ei:>9.0} {ratio_ins:>6.2}",
                    f / e
                );
            }
        }
    }
    h.counters()
        .check()
        .expect("counters reconcile after the benchmark");
}
