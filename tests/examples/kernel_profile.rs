//! Runs the real XDP program on a SIP OPTIONS frame in a loop (BPF_PROG_TEST_RUN on CPU 0, the
//! ring drained between calls), for a sampling profiler to see where a matched frame's time goes
//! in the kernel. No hardware counters are needed: the software clock samples the kernel too.
//!
//! ```text
//! cargo build --release -p sensor-tests --example kernel_profile
//! perf record -e cpu-clock -C 0 -g -o /tmp/kernel.perf -- target/release/examples/kernel_profile 8
//! perf script -i /tmp/kernel.perf -F ip,sym | awk -v RS= '/sip_sensor/ {split($0,l,"\n");
//!   split(l[1],f," "); c[f[2]]++; n++} END {for (s in c) printf "%5.1f%% %s\n", 100*c[s]/n, s}' \
//!   | sort -rn
//! ```
//!
//! The last command splits the samples taken inside the program by the function they landed in
//! (the program itself, or the helpers and kernel functions it calls).
//!
//! Arguments: seconds to run (default 8), total ring bytes (default the agent's), runs per call
//! (default 20,000). Prints the median time per run the kernel reported.

use sensor::capture::PortSet;
use sensor_common::{Counter, DEFAULT_RING_BYTES, MatchAction, SensorConfig};
use sensor_tests::{
    frames::{Frame, SVMAP_OPTIONS},
    harness::Harness,
    pin_to_cpu,
};

fn arg(n: usize, default: u64) -> u64 {
    std::env::args()
        .nth(n)
        .map(|a| {
            a.parse()
                .expect("arguments: seconds, ring bytes, runs per call")
        })
        .unwrap_or(default)
}

fn main() {
    pin_to_cpu(0);
    let seconds = arg(1, 8);
    let ring_bytes = arg(2, u64::from(DEFAULT_RING_BYTES)) as u32;
    let runs = arg(3, 20_000) as u32;
    let frame = Frame::udp("198.51.100.7", "203.0.113.9", 5060, 5060, SVMAP_OPTIONS).build();
    let mut harness = Harness::with(
        SensorConfig::new(MatchAction::Drop, false, sensor_common::DEFAULT_PREFIX_LEN),
        &PortSet::default(),
        ring_bytes,
    );
    let start = std::time::Instant::now();
    let mut per_run = Vec::new();
    while start.elapsed().as_secs() < seconds {
        let (_, mean) = harness.program.test_run(&frame, runs).expect("test run");
        per_run.push(mean.as_nanos());
        harness.drain();
    }
    per_run.sort_unstable();
    println!(
        "{} calls of {runs} runs: median {} ns per run; ring full {} times",
        per_run.len(),
        per_run[per_run.len() / 2],
        harness.counters().get(Counter::RingFull)
    );
}
