//! Benchmark 4: resident memory per source with one million distinct sources fed through the
//! agent's pipeline (everything it keeps per source: the fingerprint engine's IP-ID tracker and
//! the aggregator's source record; whatever else the pipeline grows is measured the same way).
//!
//! `cargo bench -p sensor --bench memory` (optionally `-- SOURCES`, default 1,000,000).
//!
//! The baseline is the same pipeline after a warm-up from a handful of sources (rules loaded,
//! classification cache and output buffers filled): the difference in VmRSS after the million
//! sources, divided by their number, is what one more source costs. Events go to /dev/null.

#[path = "support/mod.rs"]
mod support;

use std::net::Ipv4Addr;

use sensor::{
    clock::WallClock,
    pipeline::{Pipeline, PipelineOptions},
};

/// Target of issue 6.
const TARGET_BYTES_PER_SOURCE: f64 = 300.0;

/// VmRSS and VmHWM of this process, in bytes.
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn main() {
    let sources: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let samples = support::traffic(4096, 512, 0x3e3);
    let mut pipeline = Pipeline::new(&PipelineOptions {
        outputs: sensor::output::OutputOptions::ndjson_file("/dev/null"),
        ..PipelineOptions::default()
    })
    .expect("pipeline");
    pipeline.track_sources(sources);
    let clock = WallClock::now();
    let mut record = support::record(&samples[0], 0);
    let mut feed = |pipeline: &mut Pipeline, i: usize, source: Ipv4Addr| {
        record = support::record(&samples[i % samples.len()], i as u64 * 1000);
        record.src_addr[..4].copy_from_slice(&source.octets());
        pipeline.ring_item(support::record_bytes(&record), None, &clock);
        if i % 4096 == 4095 {
            pipeline.flush();
        }
    };
    // Warm-up: every template seen, from 8 sources.
    for i in 0..samples.len() {
        feed(&mut pipeline, i, Ipv4Addr::new(192, 0, 2, (i % 8) as u8));
    }
    pipeline.flush();
    let (empty_rss, _) = memory();
    let start = std::time::Instant::now();
    for i in 0..sources {
        // 10.0.0.0/8 and up: every source distinct.
        feed(&mut pipeline, i, Ipv4Addr::from(0x0a00_0000u32 + i as u32));
    }
    pipeline.flush();
    let elapsed = start.elapsed().as_secs_f64();
    let (rss, peak) = memory();
    let tracked = pipeline.tracked_sources();
    let aggregated = pipeline.campaign_gauges().map_or(0, |g| g.sources);
    let per_source = (rss.saturating_sub(empty_rss)) as f64 / sources as f64;
    println!(
        "{sources} distinct sources through the pipeline in {elapsed:.1} s; sources tracked: \
         {tracked} by the IP-ID tracker, {aggregated} by the aggregator"
    );
    println!(
        "VmRSS after warm-up (baseline) {:.1} MB, after the sources {:.1} MB, peak {:.1} MB",
        empty_rss as f64 / 1e6,
        rss as f64 / 1e6,
        peak as f64 / 1e6
    );
    println!(
        "resident memory per source: {per_source:.0} bytes (target <= {TARGET_BYTES_PER_SOURCE:.0}: {})",
        if per_source <= TARGET_BYTES_PER_SOURCE && tracked >= sources {
            "met"
        } else {
            "not met"
        }
    );
    if tracked < sources {
        println!(
            "  (only {tracked} of the {sources} sources are kept: the bound evicted the rest)"
        );
    }
}
