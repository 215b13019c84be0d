//! Hostile frames through the real XDP program (BPF_PROG_TEST_RUN) and the agent's pipeline:
//! more than 100,000 frames (the reference corpus, the differential test's crafted frames, their
//! deterministic mutations, random bytes, and valid headers followed by random bytes) under three
//! configurations, one with the reactive TCP responder on. For every frame the program must not
//! return XDP_ABORTED; after every configuration the counters must reconcile exactly; every record
//! the kernel wrote must decode (`Record::from_bytes` and `OwnedRecord`) and go through the
//! pipeline, and so must corrupted copies of the records, without a panic.
//!
//! `cargo test -p sensor-tests --test hostile_frames -- --nocapture` prints the numbers.

use std::{collections::BTreeMap, os::fd::AsFd as _};

use sensor::{
    capture::{PortSet, RingPages, SensorProgram, XdpVerdict, parse_prefixes},
    clock::WallClock,
    counters::KernelCounters,
    pipeline::{Pipeline, PipelineOptions},
    record::{OwnedRecord, Record},
};
use sensor_common::{CaptureRecord, Counter, MatchAction, ReactivePolicy, SensorConfig};
use sensor_tests::mutation::{
    MAX_FRAME, MIN_KERNEL_FRAME, Rng, corpus_frames, crafted_frames, mutate,
};

/// Frames per configuration; three configurations.
const FRAMES_PER_CONFIG: usize = 36_000;

struct Config {
    name: &'static str,
    config: SensorConfig,
    ports: PortSet,
    ring_bytes: u32,
    /// Frames run between two drains of the ring: more than the ring holds forces ring_full.
    drain_every: usize,
    reactive_prefixes: Option<&'static str>,
    seed: u64,
}

/// What a configuration's run saw.
#[derive(Default)]
struct Tally {
    frames: u64,
    verdicts: BTreeMap<String, u64>,
    aborted: Vec<String>,
    records: u64,
    undecodable: u64,
    corrupted_records: u64,
    kernel: KernelCounters,
}

/// A ring buffer item copied to 8-byte aligned memory, as the kernel hands items out.
fn aligned(bytes: &[u8]) -> Vec<u64> {
    let mut words = vec![0u64; bytes.len().div_ceil(8)];
    // SAFETY: `words` holds at least bytes.len() bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), words.as_mut_ptr().cast(), bytes.len());
    }
    words
}

fn as_bytes(words: &[u64], len: usize) -> &[u8] {
    // SAFETY: `words` holds at least `len` bytes.
    unsafe { std::slice::from_raw_parts(words.as_ptr().cast(), len) }
}

struct Bombard<'c> {
    setup: &'c Config,
    program: SensorProgram,
    /// One per CPU.
    rings: Vec<RingPages>,
    /// The agent's pipeline on the kernel's records, writing to /dev/null.
    pipeline: Pipeline,
    /// The same pipeline on corrupted copies of them.
    corrupted: Pipeline,
    clock: WallClock,
    rng: Rng,
    tally: Tally,
}

impl<'c> Bombard<'c> {
    fn new(setup: &'c Config) -> Self {
        let mut program = SensorProgram::load(setup.ring_bytes).expect("load (are you root?)");
        program.set_config(setup.config).expect("config");
        program.set_ports(&setup.ports).expect("ports");
        if let Some(prefixes) = setup.reactive_prefixes {
            program
                .set_reactive_prefixes(&parse_prefixes(prefixes).expect("prefixes"))
                .expect("reactive prefixes");
            program
                .set_cookie_secret(0, [0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210])
                .expect("secret");
            program.set_cookie_secret(1, [7, 8]).expect("secret");
        }
        let rings = program
            .take_rings()
            .iter()
            .map(|map| RingPages::map(map.fd().as_fd()).expect("map the ring"))
            .collect();
        let options = PipelineOptions {
            rules: None,
            outputs: sensor::output::OutputOptions::ndjson_file("/dev/null"),
            detect_rogue: Some(sensor::rogue::TrackerConfig::default()),
            ..Default::default()
        };
        Self {
            setup,
            program,
            rings,
            pipeline: Pipeline::new(&options).expect("pipeline"),
            corrupted: Pipeline::new(&options).expect("pipeline"),
            clock: WallClock::now(),
            rng: Rng(setup.seed ^ 0x00c0_ffee),
            tally: Tally::default(),
        }
    }

    fn frame(&mut self, label: &dyn Fn() -> String, frame: &[u8]) {
        if frame.len() < MIN_KERNEL_FRAME {
            return;
        }
        let (verdict, _) = self.program.test_run(frame, 1).expect("BPF_PROG_TEST_RUN");
        self.tally.frames += 1;
        *self
            .tally
            .verdicts
            .entry(format!("{verdict:?}"))
            .or_default() += 1;
        if verdict == XdpVerdict::Aborted && self.tally.aborted.len() < 20 {
            self.tally.aborted.push(format!(
                "{}: {}",
                label(),
                frame.iter().map(|b| format!("{b:02x}")).collect::<String>()
            ));
        }
        if self
            .tally
            .frames
            .is_multiple_of(self.setup.drain_every as u64)
        {
            self.drain();
        }
    }

    /// One record from the kernel: through the pipeline as it is, and as a corrupted copy.
    fn record(&mut self, item: &[u8]) {
        self.tally.records += 1;
        if Record::from_bytes(item).is_err() || OwnedRecord::from_unaligned(item).is_err() {
            self.tally.undecodable += 1;
        }
        self.pipeline.ring_item(item, None, &self.clock);
        // A corrupted copy: bytes of the header, the option length, the lengths and the
        // payload overwritten, as a kernel bug or a hostile writer might leave them.
        let mut copy = aligned(item);
        let len = item.len().min(CaptureRecord::SIZE);
        {
            // SAFETY: `copy` holds at least `len` bytes; u8 has no alignment needs.
            let bytes =
                unsafe { std::slice::from_raw_parts_mut(copy.as_mut_ptr().cast::<u8>(), len) };
            for _ in 0..1 + self.rng.below(6) {
                let at = match self.rng.below(3) {
                    0 => self.rng.below(CaptureRecord::HEADER_LEN),
                    1 => 76 + self.rng.below(20),
                    _ => self.rng.below(len),
                };
                bytes[at] = self.rng.byte();
            }
        }
        let cut = if self.rng.below(8) == 0 {
            self.rng.below(len + 1)
        } else {
            len
        };
        self.corrupted
            .ring_item(as_bytes(&copy, cut), None, &self.clock);
        self.tally.corrupted_records += 1;
    }

    fn drain(&mut self) {
        let mut rings = std::mem::take(&mut self.rings);
        for ring in &mut rings {
            ring.drain(|item| self.record(item));
        }
        self.rings = rings;
        self.pipeline.flush();
        self.corrupted.flush();
    }

    /// Runs the configuration's frames and checks what must hold after them.
    fn run(mut self, corpus: &[(String, Vec<u8>)], crafted: &[(String, Vec<u8>)]) -> Tally {
        let bases: Vec<&Vec<u8>> = corpus.iter().chain(crafted).map(|(_, f)| f).collect();
        for (label, frame) in corpus.iter().chain(crafted) {
            self.frame(&|| label.clone(), frame);
        }
        let mut rng = Rng(self.setup.seed);
        let mut i = 0usize;
        while self.tally.frames < FRAMES_PER_CONFIG as u64 {
            i += 1;
            let frame = match i % 8 {
                // Random bytes.
                0 => {
                    let len = MIN_KERNEL_FRAME + rng.below(MAX_FRAME - MIN_KERNEL_FRAME);
                    (0..len).map(|_| rng.byte()).collect()
                }
                // Valid headers of a base frame, random bytes after a random point.
                1 => {
                    let base = bases[rng.below(bases.len())];
                    let keep = rng.below(base.len().min(80) + 1);
                    let len = keep + rng.below(MAX_FRAME - keep);
                    let mut f = base[..keep].to_vec();
                    f.extend((keep..len).map(|_| rng.byte()));
                    f
                }
                // The differential test's mutations (six in eight).
                _ => {
                    let base = bases[rng.below(bases.len())];
                    mutate(&mut rng, base)
                }
            };
            self.frame(
                &|| format!("frame {i} (seed {:#x})", self.setup.seed),
                &frame,
            );
        }
        self.drain();

        let kernel = self.program.counters().expect("counters");
        self.check(&kernel);
        self.tally.kernel = kernel;
        self.tally
    }

    fn check(&mut self, k: &KernelCounters) {
        let name = self.setup.name;
        k.check()
            .unwrap_or_else(|e| panic!("[{name}] counters do not reconcile: {e}\n{k}"));
        assert_eq!(
            k.get(Counter::FramesSeen),
            self.tally.frames,
            "[{name}] frames_seen"
        );
        let outcomes: u64 = KernelCounters::OUTCOMES.iter().map(|c| k.get(*c)).sum();
        assert_eq!(outcomes, self.tally.frames, "[{name}] sum of outcomes");
        assert_eq!(
            k.get(Counter::Matched),
            k.get(Counter::Emitted) + k.get(Counter::RingFull) + k.get(Counter::RateLimited),
            "[{name}] matched = emitted + ring_full + rate_limited"
        );
        assert_eq!(
            k.get(Counter::Emitted),
            self.tally.records,
            "[{name}] records read"
        );
        let agent = self.pipeline.counters;
        assert_eq!(agent.records_read, self.tally.records, "[{name}]");
        assert_eq!(
            agent.records_undecodable, 0,
            "[{name}] kernel records all decode"
        );
        assert_eq!(
            self.tally.undecodable, 0,
            "[{name}] kernel records all decode"
        );
        assert_eq!(agent.events_written, self.tally.records, "[{name}] events");
        assert_eq!(agent.output_errors, 0, "[{name}]");
        let corrupted = self.corrupted.counters;
        assert_eq!(corrupted.records_read, self.tally.corrupted_records);
        assert_eq!(
            corrupted.records_undecodable + corrupted.events_written,
            corrupted.records_read,
            "[{name}] every corrupted record is either refused and counted, or processed"
        );
        println!(
            "[{name}] {} frames; verdicts {:?}; kernel: matched {} emitted {} ring_full {} \
             rate_limited {} synack_sent {} rst_sent {} reply_failed {}; {} records decoded and \
             processed; {} corrupted copies: {} refused, {} processed",
            self.tally.frames,
            self.tally.verdicts,
            k.get(Counter::Matched),
            k.get(Counter::Emitted),
            k.get(Counter::RingFull),
            k.get(Counter::RateLimited),
            k.get(Counter::SynAckSent),
            k.get(Counter::RstSent),
            k.get(Counter::ReplyFailed),
            self.tally.records,
            corrupted.records_read,
            corrupted.records_undecodable,
            corrupted.events_written,
        );
    }
}

#[test]
fn hostile_frames_never_abort_and_always_reconcile() {
    let corpus = corpus_frames();
    let crafted = crafted_frames();
    let configs = [
        Config {
            name: "source matching, full prefix, drop",
            config: SensorConfig::new(MatchAction::Drop, true, sensor_common::DEFAULT_PREFIX_LEN),
            ports: PortSet::default(),
            ring_bytes: 1 << 22,
            drain_every: 64,
            reactive_prefixes: None,
            seed: 0xbad_f00d_0001,
        },
        Config {
            name: "reactive reset, every port, pass",
            config: SensorConfig::new(MatchAction::Pass, true, 512).with_reactive(
                ReactivePolicy::Reset,
                1_000_000,
                1_000,
            ),
            ports: "1-65535".parse().expect("ports"),
            ring_bytes: 1 << 22,
            drain_every: 64,
            reactive_prefixes: Some("203.0.113.0/24,2001:db8::9/128"),
            seed: 0xbad_f00d_0002,
        },
        Config {
            name: "one-page ring, source rate limit, short prefix",
            config: SensorConfig::new(MatchAction::Drop, false, 64).with_source_limit(1_000, 10),
            ports: "5060,5061,80".parse().expect("ports"),
            ring_bytes: 4096,
            // A page holds 14 records of this prefix's class (128 payload bytes): drained this
            // rarely, it overflows.
            drain_every: 256,
            reactive_prefixes: None,
            seed: 0xbad_f00d_0003,
        },
    ];
    let mut total = 0;
    let mut aborted = Vec::new();
    let mut tallies = Vec::new();
    for setup in &configs {
        let tally = Bombard::new(setup).run(&corpus, &crafted);
        total += tally.frames;
        aborted.extend(
            tally
                .aborted
                .iter()
                .map(|a| format!("[{}] {a}", setup.name)),
        );
        assert_eq!(tally.verdicts.get("Aborted"), None, "[{}]", setup.name);
        tallies.push(tally);
    }
    println!("{total} frames through the XDP program, none aborted");
    assert!(aborted.is_empty(), "XDP_ABORTED:\n{}", aborted.join("\n"));
    assert!(total >= 100_000, "only {total} frames");
    // Each configuration exercised what it is for.
    assert!(
        tallies[1].verdicts.get("Tx").copied().unwrap_or(0) > 0,
        "reactive replies"
    );
    assert!(tallies[0].records > 1000 && tallies[1].records > 1000);
    assert!(
        tallies[2].kernel.get(Counter::RingFull) > 0,
        "a one-page ring overflows"
    );
    assert!(
        tallies[2].kernel.get(Counter::RateLimited) > 0,
        "sources over their rate"
    );
}
