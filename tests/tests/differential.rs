//! Differential test: the real XDP program (BPF_PROG_TEST_RUN) and the userspace extractor
//! (`sensor::offline::extract`) on the same frames must give the same outcome counter and, for
//! matched frames, byte-identical records.
//!
//! Frames: every frame of every capture in tests/corpus, crafted frames covering each parser
//! branch, every truncation of the crafted frames, and tens of thousands of deterministic
//! mutations (bit flips, byte stores, truncations, VLAN tags, IHL, lengths, fragment fields,
//! IPv6 extension headers, protocols, ports, padding). Run under three configurations: source
//! matching with the full prefix; destination-only matching with a short prefix and XDP_PASS;
//! every port with a prefix beyond the record's capacity.
//!
//! Compared: the outcome counter, the verdict, and record bytes [8, HEADER_LEN) (all but the
//! kernel's clock; ifindex and rx_queue are what BPF_PROG_TEST_RUN supplies: the loopback's
//! index and queue 0), all 40 TCP option bytes, and payload[..captured_len]; payload bytes past
//! captured_len are left unwritten by the kernel and are not compared.
//!
//! Needs root (loads the program). `cargo test -p sensor-tests --test differential -- --nocapture`
//! prints the numbers.

use std::collections::BTreeMap;

use sensor::{
    capture::{PortSet, XdpVerdict},
    counters::KernelCounters,
    offline::{FrameContext, extract},
};
use sensor_common::{CaptureRecord, Counter, MatchAction, SensorConfig};
use sensor_tests::{
    frames::Frame,
    harness::Harness,
    mutation::{
        MAX_FRAME, MIN_KERNEL_FRAME, Rng, SIP_OPTIONS, corpus_frames, crafted_frames, mutate,
    },
};

/// Mutated frames per configuration.
const MUTATIONS: usize = 12_000;

fn record_bytes(record: &CaptureRecord) -> &[u8] {
    // SAFETY: CaptureRecord is plain integers with no padding (checked in sensor-common).
    unsafe {
        std::slice::from_raw_parts(
            (record as *const CaptureRecord).cast::<u8>(),
            CaptureRecord::SIZE,
        )
    }
}

const TCP_OPTIONS_AT: usize = CaptureRecord::HEADER_LEN;
const PAYLOAD_AT: usize = CaptureRecord::HEADER_LEN + sensor_common::TCP_OPTIONS_CAPACITY;

/// Names the record fields a byte range touches, for mismatch reports.
fn field_at(offset: usize) -> &'static str {
    const FIELDS: &[(usize, &str)] = &[
        (0, "timestamp_ns"),
        (8, "ifindex"),
        (12, "rx_queue"),
        (16, "src_addr"),
        (32, "dst_addr"),
        (48, "tcp_seq"),
        (52, "tcp_ack"),
        (56, "flow_label"),
        (60, "frame_len"),
        (64, "ip_id"),
        (66, "ip_total_len"),
        (68, "frag_offset"),
        (70, "src_port"),
        (72, "dst_port"),
        (74, "tcp_window"),
        (76, "payload_len"),
        (78, "captured_len"),
        (80, "payload_offset"),
        (82, "vlan_ids"),
        (86, "ip_version"),
        (87, "ttl"),
        (88, "tos"),
        (89, "l4_proto"),
        (90, "ip_flags"),
        (91, "flags"),
        (92, "vlan_count"),
        (93, "tcp_flags"),
        (94, "tcp_data_offset"),
        (95, "tcp_options_len"),
        (96, "reserved"),
        (TCP_OPTIONS_AT, "tcp_options"),
        (PAYLOAD_AT, "payload"),
    ];
    FIELDS
        .iter()
        .rev()
        .find(|(start, _)| *start <= offset)
        .map(|(_, name)| *name)
        .unwrap_or("?")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

struct Differ {
    name: &'static str,
    harness: Harness,
    config: SensorConfig,
    ports: PortSet,
    context: FrameContext,
    compared: usize,
    userspace_only: usize,
    outcomes: BTreeMap<&'static str, usize>,
    mismatches: Vec<String>,
}

impl Differ {
    fn new(name: &'static str, config: SensorConfig, ports: PortSet) -> Self {
        let harness = Harness::with(config, &ports, 1 << 20);
        // BPF_PROG_TEST_RUN runs XDP as if received on the loopback device of the caller's
        // network namespace, queue 0.
        let lo = sensor::capture::ifindex("lo").expect("loopback index");
        Self {
            name,
            harness,
            config,
            ports,
            context: FrameContext {
                timestamp_ns: 0,
                ifindex: lo,
                rx_queue: 0,
            },
            compared: 0,
            userspace_only: 0,
            outcomes: BTreeMap::new(),
            mismatches: Vec::new(),
        }
    }

    fn mismatch(&mut self, label: &str, frame: &[u8], what: String) {
        if self.mismatches.len() < 30 {
            self.mismatches.push(format!(
                "[{}] {label}: {what}\n    frame ({} bytes): {}",
                self.name,
                frame.len(),
                hex(frame)
            ));
        } else {
            self.mismatches.push(String::new());
        }
    }

    fn check(&mut self, label: &str, frame: &[u8]) {
        let userspace = extract(
            frame,
            frame.len() as u32,
            &self.config,
            &self.ports,
            &self.context,
        );
        if frame.len() < MIN_KERNEL_FRAME {
            // The kernel cannot be asked; the parser's first check is the Ethernet header.
            self.userspace_only += 1;
            if !matches!(userspace, Err(Counter::Truncated)) {
                self.mismatch(label, frame, "short frame is not Truncated".into());
            }
            return;
        }
        let before = self.harness.counters();
        let (verdict, _) = self
            .harness
            .program
            .test_run(frame, 1)
            .expect("BPF_PROG_TEST_RUN");
        let moved = self.harness.counters().since(&before);
        let (_, raw) = self.harness.drain();
        self.compared += 1;

        let kernel_outcomes: Vec<Counter> = KernelCounters::OUTCOMES
            .iter()
            .copied()
            .filter(|c| moved.get(*c) > 0)
            .collect();
        let [kernel_outcome] = kernel_outcomes[..] else {
            self.mismatch(
                label,
                frame,
                format!("kernel moved outcome counters {kernel_outcomes:?}, expected exactly one"),
            );
            return;
        };
        *self.outcomes.entry(kernel_outcome.name()).or_default() += 1;
        let user_outcome = match &userspace {
            Ok(_) => Counter::Matched,
            Err(counter) => *counter,
        };
        if kernel_outcome != user_outcome {
            self.mismatch(
                label,
                frame,
                format!("outcome: kernel {kernel_outcome:?}, userspace {user_outcome:?}"),
            );
            return;
        }
        let expected_verdict = if kernel_outcome == Counter::Matched
            && self.config.action == MatchAction::Drop as u32
        {
            XdpVerdict::Drop
        } else {
            XdpVerdict::Pass
        };
        if verdict != expected_verdict {
            self.mismatch(label, frame, format!("verdict {verdict:?}"));
        }
        let Ok(user_record) = userspace else {
            if !raw.is_empty() {
                self.mismatch(
                    label,
                    frame,
                    format!("{} records for an unmatched frame", raw.len()),
                );
            }
            return;
        };
        if raw.len() != 1 || moved.get(Counter::Emitted) != 1 {
            self.mismatch(
                label,
                frame,
                format!(
                    "matched frame gave {} records, emitted {}",
                    raw.len(),
                    moved.get(Counter::Emitted)
                ),
            );
            return;
        }
        let kernel = &raw[0];
        let user = record_bytes(&user_record);
        let captured = usize::from(user_record.captured_len);
        let ranges = [
            (8, TCP_OPTIONS_AT),
            (TCP_OPTIONS_AT, PAYLOAD_AT),
            (PAYLOAD_AT, PAYLOAD_AT + captured),
        ];
        let mut differing = Vec::new();
        for (start, end) in ranges {
            for i in start..end {
                if kernel.get(i) != user.get(i) {
                    let field = field_at(i);
                    if differing.last() != Some(&field) {
                        differing.push(field);
                    }
                }
            }
        }
        if !differing.is_empty() {
            self.mismatch(
                label,
                frame,
                format!(
                    "record fields differ: {differing:?}\n    kernel:    {}\n    userspace: {}",
                    hex(&kernel[..PAYLOAD_AT]),
                    hex(&user[..PAYLOAD_AT])
                ),
            );
        }
    }

    fn report(&self) -> String {
        format!(
            "{}: {} frames compared with the kernel ({} shorter than 14 bytes checked in userspace only); outcomes {:?}; {} mismatches",
            self.name,
            self.compared,
            self.userspace_only,
            self.outcomes,
            self.mismatches.len()
        )
    }
}

fn run(
    differ: &mut Differ,
    corpus: &[(String, Vec<u8>)],
    crafted: &[(String, Vec<u8>)],
    seed: u64,
) {
    for (label, frame) in corpus.iter().chain(crafted) {
        assert!(frame.len() <= MAX_FRAME, "{label} is {} bytes", frame.len());
        differ.check(label, frame);
    }
    // Truncation at every length of every crafted frame and of one corpus frame per capture.
    let mut seen_files = std::collections::BTreeSet::new();
    let to_cut = crafted.iter().chain(corpus.iter().filter(|(label, _)| {
        seen_files.insert(label.split(" #").next().unwrap_or_default().to_string())
    }));
    for (label, frame) in to_cut {
        for len in 0..frame.len() {
            differ.check(&format!("{label} cut at {len}"), &frame[..len]);
        }
    }
    let bases: Vec<&Vec<u8>> = corpus.iter().chain(crafted).map(|(_, f)| f).collect();
    let mut rng = Rng(seed);
    for i in 0..MUTATIONS {
        let base = bases[rng.below(bases.len())];
        let frame = mutate(&mut rng, base);
        differ.check(&format!("mutation {i} (seed {seed:#x})"), &frame);
    }
}

#[test]
fn kernel_and_userspace_extractors_agree() {
    let corpus = corpus_frames();
    let crafted = crafted_frames();
    assert!(crafted.iter().all(|(_, f)| f.len() >= 14));

    let mut with_sources = Differ::new(
        "source matching, full prefix",
        SensorConfig::new(MatchAction::Drop, true, sensor_common::DEFAULT_PREFIX_LEN),
        PortSet::default(),
    );
    run(&mut with_sources, &corpus, &crafted, 0x5eed_0001);

    let mut short_prefix = Differ::new(
        "destination only, 100-byte prefix, pass",
        SensorConfig::new(MatchAction::Pass, false, 100),
        "5060,80,65535".parse().expect("ports"),
    );
    run(&mut short_prefix, &corpus, &crafted, 0x5eed_0002);

    // Every port matches, so every parsed frame's record is compared; the prefix is beyond the
    // record's capacity, which the agent refuses but the kernel masks: the twin must mask alike.
    let mut every_port = Differ::new(
        "every port, out-of-range prefix 1500",
        SensorConfig::new(MatchAction::Drop, true, 1500),
        "1-65535".parse().expect("ports"),
    );
    run(&mut every_port, &corpus, &crafted, 0x5eed_0003);

    println!(
        "{} corpus frames, {} crafted frames, {} mutations per configuration",
        corpus.len(),
        crafted.len(),
        MUTATIONS
    );
    let mut failures = Vec::new();
    for differ in [&with_sources, &short_prefix, &every_port] {
        println!("{}", differ.report());
        failures.extend(differ.mismatches.iter().filter(|m| !m.is_empty()).cloned());
        assert!(
            differ.outcomes.get("matched").copied().unwrap_or(0) > 1000,
            "too few matched frames to mean anything: {:?}",
            differ.outcomes
        );
    }
    assert!(
        failures.is_empty(),
        "kernel and userspace disagree:\n{}",
        failures.join("\n")
    );
}

#[test]
fn snapped_capture_keeps_the_frame_length_and_what_it_has() {
    let frame = Frame::udp("198.51.100.7", "203.0.113.9", 5060, 5060, SIP_OPTIONS).build();
    let config = SensorConfig::new(MatchAction::Drop, false, sensor_common::DEFAULT_PREFIX_LEN);
    let context = FrameContext {
        timestamp_ns: 7,
        ifindex: 3,
        rx_queue: 1,
    };
    let cut = &frame[..100];
    let record = extract(
        cut,
        frame.len() as u32,
        &config,
        &PortSet::default(),
        &context,
    )
    .unwrap();
    assert_eq!(record.frame_len as usize, frame.len());
    assert_eq!(usize::from(record.payload_len), SIP_OPTIONS.len());
    assert_eq!(usize::from(record.captured_len), 100 - 42);
    assert_eq!(record.flags & sensor_common::record_flags::FRAME_SHORT, 0);
    assert_eq!(
        (record.timestamp_ns, record.ifindex, record.rx_queue),
        (7, 3, 1)
    );
}
