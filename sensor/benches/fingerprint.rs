//! Benchmark 3 (userspace): records per second per core through decode, SIP parsing and
//! fingerprinting, without output and with NDJSON written to a file.
//!
//! `cargo bench -p sensor --bench fingerprint` (optionally `-- SECONDS` of CPU per stage,
//! default 2; `FP_BENCH_STAGE=parse` runs only the stages whose name starts so, and
//! `FP_BENCH_PASSES=N` runs exactly N passes per stage instead of a CPU budget, for profiling:
//! two callgrind runs with different N, subtracted, give the instructions per message without
//! the set-up).
//! Rates are per CPU second of the benchmark thread, so other load on the machine does not
//! count against them; instructions per message (perf counters, where allowed) do not depend on
//! the load at all.
//!
//! The traffic is generated as the tools vary it (support::traffic): 4096 packets from 512
//! sources, SIPVicious-heavy, each with its own tags, branches, Call-IDs, ports and IP-IDs.
//!
//! Stages, each over the same packets, each reported as a ratio to the baseline measured in the
//! same run:
//! - baseline: find every line end of the payloads with memchr (the least any parser does),
//! - parse: `SipMessage::parse`,
//! - reference engine: parse + every rule evaluated (`Engine::classify_packet`, no cache),
//! - agent, no output: decode the ring item, parse, fingerprint, IP-ID tracker,
//! - agent, NDJSON file: the pipeline's per-record work with events written to a file.
//! - agent, NDJSON lean: the same with `--event-detail lean` (one event per packet, lean but
//!   for each template's first),
//! - agent, NDJSON, sampled: the same with `--events-per-template 8` (not the issue's
//!   target figure: most events are counted and aggregated, not written),
//! - agent, many sources: the lean stage with every record given one of 65,536 sources at
//!   random, as a darknet's senders arrive, once with each source's state fetched ahead (as the
//!   agent does) and once without: their ratio is what fetching ahead gains when that state is
//!   far larger than the caches.

#[path = "support/mod.rs"]
mod support;

use std::{
    hint::black_box,
    path::PathBuf,
    time::{Duration, Instant},
};

use sensor::{
    clock::WallClock,
    counters::AgentCounters,
    event::Event,
    fingerprint::{ClassCache, Engine, Packet, Recalled, SourceTracker, facts::Facts},
    output::event::EventDetail,
    pipeline::{Pipeline, PipelineOptions},
    record::{Record, Transport},
    sip::SipMessage,
};
use sensor_common::CaptureRecord;
use support::{Instructions, Sample};

const PACKETS: usize = 4096;
const SOURCES: usize = 512;
/// Sources of the many-sources stages: within the IP-ID tracker's default capacity, so that
/// they measure fetching state, not evicting it.
const MANY_SOURCES: u32 = 65_536;

fn packet(s: &Sample) -> Packet {
    Packet {
        src_ip: s.src.into(),
        dst_ip: s.dst.into(),
        src_port: s.src_port,
        dst_port: s.dst_port,
        transport: Transport::Udp,
        ttl: s.ttl,
        ip_id: s.ip_id,
        dont_fragment: s.df,
        ip_version: 4,
        tcp_seq: None,
    }
}

struct Rate {
    per_second: f64,
    instructions: Option<f64>,
}

/// Runs `pass` (one pass over all packets) repeatedly for about `budget` of CPU time.
fn measure(name: &str, budget: Duration, mut pass: impl FnMut() -> usize) -> Option<Rate> {
    if let Ok(only) = std::env::var("FP_BENCH_STAGE")
        && !name.starts_with(&only)
    {
        return None;
    }
    // Warm-up pass (caches, lazy regex state, the classification cache).
    black_box(pass());
    let counter = Instructions::new();
    let wall = Instant::now();
    let start = support::thread_cpu();
    let first = counter.read();
    let mut done = 0usize;
    let passes: Option<usize> = std::env::var("FP_BENCH_PASSES")
        .ok()
        .and_then(|n| n.parse().ok());
    while match passes {
        Some(n) => done < n * PACKETS,
        None => support::thread_cpu() - start < budget,
    } {
        black_box(pass());
        done += PACKETS;
    }
    let instructions = first
        .zip(counter.read())
        .map(|(a, b)| (b - a) as f64 / done as f64);
    let cpu = (support::thread_cpu() - start).as_secs_f64();
    let per_second = done as f64 / cpu;
    println!(
        "{name:<44} {per_second:>11.0} msg/s {:>8.3} us/msg {:>9} instr/msg  (cpu/wall {:.0}%)",
        1e6 / per_second,
        instructions.map_or("n/a".to_string(), |i| format!("{i:.0}")),
        100.0 * cpu / wall.elapsed().as_secs_f64()
    );
    Some(Rate {
        per_second,
        instructions,
    })
}

/// How a pipeline stage hands its records to the pipeline.
#[derive(Clone, Copy)]
struct Feed {
    /// Each pass gives every record one of this many source addresses (198.18.0.0/15, the
    /// benchmarking range), drawn at random, for the per-source state of a large darknet's many
    /// senders; `None`: the traffic's own 512.
    sources: Option<u32>,
    /// Each record comes with the next as the item to fetch ahead for, as the ring reader
    /// gives it; without, only the next record's bytes are fetched ahead.
    ahead: bool,
}

impl Feed {
    const TRAFFIC: Feed = Feed {
        sources: None,
        ahead: true,
    };
}

/// What every pipeline stage runs over: the records, the clock and the output file.
struct Traffic<'a> {
    records: &'a [CaptureRecord],
    clock: &'a WallClock,
    out_path: &'a std::path::Path,
}

/// The pipeline's whole per-record work with NDJSON written to the traffic's output file, one
/// flush per pass of ring items as the agent does; returns the rate and the pipeline's counters.
fn pipeline_stage(
    name: &str,
    budget: Duration,
    traffic: &Traffic<'_>,
    sampling: Option<sensor::sampling::SamplingConfig>,
    detail: EventDetail,
    feed: Feed,
) -> (Option<Rate>, AgentCounters) {
    let Traffic {
        records,
        clock,
        out_path,
    } = *traffic;
    let _ = std::fs::remove_file(out_path);
    let mut pipeline = Pipeline::new(&PipelineOptions {
        outputs: sensor::output::OutputOptions::ndjson_file(out_path.to_path_buf()),
        sampling,
        detail,
        ..PipelineOptions::default()
    })
    .expect("pipeline");
    let mut records = records.to_vec();
    let mut counter = 0u32;
    let rate = measure(name, budget, || {
        if let Some(sources) = feed.sources {
            for r in &mut records {
                // Drawn at random, as a darknet's senders arrive: in order, each source's state
                // would lie next to the last one's and be fetched by the CPU's own prefetcher.
                counter += 1;
                let mut x = counter.wrapping_mul(0x9e37_79b9);
                x ^= x >> 16;
                x = x.wrapping_mul(0x85eb_ca6b);
                x ^= x >> 13;
                let source = x % sources;
                r.src_addr[..4].copy_from_slice(&(0xc612_0000 + source).to_be_bytes());
            }
        }
        for (i, r) in records.iter().enumerate() {
            let bytes = |at: usize| records.get(at).map(support::record_bytes);
            // As the ring reader does: the record after the next is fetched, and the next is
            // given to fetch its state; without that, the next record is fetched.
            let fetched = if feed.ahead { i + 2 } else { i + 1 };
            if let Some(fetched) = bytes(fetched) {
                sensor::record::prefetch(fetched.as_ptr());
            }
            let next = bytes(i + 1).filter(|_| feed.ahead);
            pipeline.ring_item(black_box(support::record_bytes(r)), next, clock);
        }
        pipeline.flush();
        // Keep the file small: the writes happened, the disk need not keep them.
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .open(out_path)
            .and_then(|f| f.set_len(0));
        PACKETS
    });
    (rate, pipeline.counters)
}

/// Decode, parse, IP-ID tracker and fingerprint of every record: the agent without output.
fn agent_pass(
    records: &[CaptureRecord],
    engine: &Engine,
    sources: &mut SourceTracker,
    cache: &mut ClassCache,
) -> usize {
    records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            // As the ring reader does: the next record is fetched while this one is handled.
            if let Some(next) = records.get(i + 1) {
                sensor::record::prefetch(support::record_bytes(next).as_ptr());
            }
            let Ok(record) = Record::from_bytes(black_box(support::record_bytes(r))) else {
                return 0;
            };
            let event = Event {
                record,
                wall_ns: record.timestamp_ns(),
            };
            let mut sip = SipMessage::unparsed(record.payload(), record.payload_truncated());
            let recalled = cache.parse(&mut sip);
            let packet = Packet::from_event(&event);
            let view = sources.observe(&packet, event.wall_ns);
            let facts = Facts::new(&sip, Some(packet))
                .with_places(recalled.as_ref().and_then(Recalled::places));
            let verdict = cache.classify(engine, &facts, recalled.as_ref());
            black_box(view);
            verdict.winner.map_or(0, |(r, _)| usize::from(r))
        })
        .sum()
}

/// The records of `samples` with two headers after the start line whose lengths make a
/// template of their own for each packet (61 × 67 combinations for 4096 packets).
fn template_flood(samples: &[support::Sample]) -> Vec<CaptureRecord> {
    samples
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut s = s.clone();
            let line_end = s
                .payload
                .iter()
                .position(|&b| b == b'\n')
                .map_or(s.payload.len(), |p| p + 1);
            let pad = format!(
                "X-Pad: {}\r\nX-Id: {}\r\n",
                "q".repeat(1 + i % 61),
                "z".repeat(1 + i / 61 % 67)
            );
            s.payload.splice(line_end..line_end, pad.into_bytes());
            support::record(&s, 1_000_000 * i as u64)
        })
        .collect()
}

fn main() {
    let seconds: f64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(2.0);
    let budget = Duration::from_secs_f64(seconds);
    let engine = Engine::builtin().expect("built-in rules");
    let samples = support::traffic(PACKETS, SOURCES, 0x5eed);
    let records: Vec<CaptureRecord> = samples
        .iter()
        .enumerate()
        .map(|(i, s)| support::record(s, i as u64 * 1000))
        .collect();
    let bytes: usize = samples.iter().map(|s| s.payload.len()).sum();
    println!(
        "traffic: {PACKETS} packets from {SOURCES} sources, {} rules, mean {} payload bytes, \
         {seconds:.1} CPU-s per stage, one thread",
        engine.rules().len(),
        bytes / PACKETS,
    );

    let baseline = measure("baseline: memchr line scan", budget, || {
        samples
            .iter()
            .map(|s| memchr::memchr_iter(b'\n', black_box(&s.payload)).count())
            .sum()
    });
    let parse = measure("parse", budget, || {
        samples
            .iter()
            .map(|s| {
                let msg = SipMessage::parse(black_box(&s.payload));
                msg.header_count() + msg.body().map_or(0, <[u8]>::len)
            })
            .sum()
    });
    let reference = measure("reference engine: parse + all rules", budget, || {
        samples
            .iter()
            .map(|s| {
                let msg = SipMessage::parse(black_box(&s.payload));
                engine
                    .classify_packet(&msg, Some(packet(s)), None)
                    .evidence
                    .len()
            })
            .sum()
    });
    let mut sources = SourceTracker::default();
    let mut cache = ClassCache::default();
    let agent = measure("agent, no output: decode+parse+fingerprint", budget, || {
        agent_pass(&records, &engine, &mut sources, &mut cache)
    });
    println!(
        "  classification cache: {:?}, {} templates",
        cache.counters,
        cache.len()
    );
    // The same traffic with a template of its own for nearly every packet (two padding headers
    // of varying lengths): more templates than the cache holds, as a sender varying its message
    // on purpose would make. Every packet misses the cache; this measures what a miss costs.
    let flood_records = template_flood(&samples);
    let mut sources = SourceTracker::default();
    let mut cache = ClassCache::default();
    let flood = measure("agent, no output, template flood", budget, || {
        agent_pass(&flood_records, &engine, &mut sources, &mut cache)
    });
    println!(
        "  classification cache: {:?}, {} templates",
        cache.counters,
        cache.len()
    );
    let out_path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fingerprint-bench.ndjson");
    let clock = WallClock::now();
    let traffic = Traffic {
        records: &records,
        clock: &clock,
        out_path: &out_path,
    };
    let (ndjson, counters) = pipeline_stage(
        "agent, NDJSON to a file",
        budget,
        &traffic,
        None,
        EventDetail::Compact,
        Feed::TRAFFIC,
    );
    let events = counters.events_written;
    // The same with `--event-detail lean`: one event per packet, each template's first compact.
    let (lean, counters) = pipeline_stage(
        "agent, NDJSON lean",
        budget,
        &traffic,
        None,
        EventDetail::Lean,
        Feed::TRAFFIC,
    );
    println!(
        "  events written {}, of them lean {}",
        counters.events_written, counters.events_lean
    );
    // The lean stage again with many sources, their state fetched ahead and not: the ratio of
    // the two, in the same run, is what fetching ahead gains when the per-source state is far
    // larger than the caches.
    let many = |ahead| {
        pipeline_stage(
            if ahead {
                "agent, many sources: NDJSON lean"
            } else {
                "agent, many sources: not fetched ahead"
            },
            budget,
            &traffic,
            None,
            EventDetail::Lean,
            Feed {
                sources: Some(MANY_SOURCES),
                ahead,
            },
        )
        .0
    };
    let (many_ahead, many_not_ahead) = (many(true), many(false));
    if let (Some(ahead), Some(not_ahead)) = (&many_ahead, &many_not_ahead) {
        println!(
            "  many sources: {:.2}x the rate with each source's state fetched ahead",
            ahead.per_second / not_ahead.per_second
        );
    }
    // The same with `--events-per-template 8`: every pass after the first repeats each
    // source's templates, as a long scan does, so nearly every event is counted, not written.
    let (sampled, counters) = pipeline_stage(
        "agent, NDJSON, 8 events per template",
        budget,
        &traffic,
        Some(sensor::sampling::SamplingConfig {
            per_template: 8,
            window_s: 86_400,
        }),
        EventDetail::Compact,
        Feed::TRAFFIC,
    );
    println!(
        "  events written {}, sampled out {}",
        counters.events_written, counters.events_sampled_out
    );
    // The size of an event as written, measured on one pass into a fresh file (lean: the
    // first pass, where every template's first event is its compact example).
    let event_bytes = |detail: EventDetail| {
        let _ = std::fs::remove_file(&out_path);
        let mut sizing = Pipeline::new(&PipelineOptions {
            outputs: sensor::output::OutputOptions::ndjson_file(out_path.clone()),
            detail,
            ..PipelineOptions::default()
        })
        .expect("pipeline");
        for r in &records {
            sizing.ring_item(support::record_bytes(r), None, &clock);
        }
        sizing.flush();
        let bytes = std::fs::metadata(&out_path).map_or(0, |m| m.len()) / PACKETS as u64;
        let _ = std::fs::remove_file(&out_path);
        bytes
    };
    println!(
        "events written in the NDJSON stage: {events}; mean event size {} bytes, lean {} bytes",
        event_bytes(EventDetail::Compact),
        event_bytes(EventDetail::Lean)
    );

    println!();
    println!("ratios to the baseline (memchr line scan of the same payloads, same run):");
    let Some(base) = baseline else { return };
    for (name, rate) in [
        ("parse", &parse),
        ("reference engine", &reference),
        ("agent, no output", &agent),
        ("agent, template flood", &flood),
        ("agent, NDJSON to a file", &ndjson),
        ("agent, NDJSON lean", &lean),
        ("agent, NDJSON, sampled", &sampled),
    ] {
        if let Some(rate) = rate {
            let instr = rate
                .instructions
                .zip(base.instructions)
                .map_or(String::new(), |(r, b)| {
                    format!(", {:.1}x instructions", r / b)
                });
            println!(
                "  {name:<26} {:>8.1}x slower{instr}",
                base.per_second / rate.per_second
            );
        }
    }
    println!("targets (issue 6): >= 3,000,000 msg/s/core without output, >= 1,000,000 with NDJSON");
    for (name, rate, target) in [
        ("agent, no output", &agent, 3e6),
        ("agent, NDJSON to a file", &ndjson, 1e6),
        ("agent, NDJSON lean", &lean, 1e6),
    ] {
        if let Some(rate) = rate {
            println!(
                "  {name:<26} {:>10.0} msg/s: {}",
                rate.per_second,
                if rate.per_second >= target {
                    "met"
                } else {
                    "not met"
                }
            );
        }
    }
}
