//! Aggregation cost per event and memory per source.
//!
//! `cargo bench -p sensor --bench aggregate` (optionally `-- N` sources, default 1000000).
//! Times are CPU time of the benchmark thread (the machines are shared). Two workloads over the
//! same observation shape (an svmap OPTIONS with its inferences, as the pipeline hands it over):
//! - distinct: N sources, one event each (a darknet's long tail; the table grows to N),
//! - repeat: the same 1000 sources again and again (a few busy scanners),
//! - churn: N distinct sources through a table of 10000: every event evicts one.
//!
//! Memory: the aggregator's own estimate of its heap (slab at capacity, index buckets,
//! campaigns, tools, timeseries) divided by the sources tracked.

use std::hint::black_box;

use sensor::aggregate::{AggregateConfig, Aggregator, HostSeen, Observation};

fn cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid clock id and pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn observation(i: u32, t_ns: u64) -> Observation<'static> {
    Observation {
        time_ns: t_ns,
        src_ip: std::net::Ipv4Addr::from(0x0a00_0000 + i).into(),
        src_port: 5060,
        dest_ip: std::net::Ipv4Addr::from(0xcb00_7100 + (i & 0xff)).into(),
        dest_port: 5060,
        proto: "UDP",
        ttl: Some(40 + (i % 20) as u8),
        ip_id: Some(if i.is_multiple_of(3) { 0 } else { i as u16 | 1 }),
        df: true,
        sensor: None,
        method: Some("OPTIONS"),
        user_agent: Some("friendly-scanner"),
        tool: "sipvicious",
        variant: Some("svmap"),
        category: "scanner",
        rule: "sipvicious-svmap-py3",
        template_hash: 0xf08e_c1bc_4622_6d8f,
        id_packet: Some(if i.is_multiple_of(3) {
            "zero"
        } else {
            "non_zero"
        }),
        id_behaviour: None,
        ttl_initial: Some(64),
        processes: Some(1),
        process_base: Some(5060),
        via: Some(HostSeen {
            class: "loopback_unresolved",
            host: "127.0.0.1",
        }),
        contact: None,
    }
}

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let config = AggregateConfig {
        max_sources: n as usize,
        source_idle_s: 0,
        ..AggregateConfig::default()
    };
    let t0 = 1_700_000_000_000_000_000u64;

    let mut distinct = Aggregator::new(config);
    let start = cpu_ns();
    for i in 0..n {
        distinct.observe(black_box(&observation(i, t0 + u64::from(i) * 1_000_000)));
    }
    let spent = cpu_ns() - start;
    let c = distinct.counters();
    println!(
        "distinct: {n} events, {} sources tracked: {:.0} ns/event, {} heap bytes per source",
        c.sources_tracked,
        spent as f64 / f64::from(n),
        distinct.heap_bytes() / c.sources_tracked.max(1) as usize
    );

    let mut repeat = Aggregator::new(config);
    let start = cpu_ns();
    for i in 0..n {
        repeat.observe(black_box(&observation(
            i % 1000,
            t0 + u64::from(i) * 1_000_000,
        )));
    }
    let spent = cpu_ns() - start;
    println!(
        "repeat: {n} events over 1000 sources: {:.0} ns/event",
        spent as f64 / f64::from(n)
    );
    let mut churn = Aggregator::new(AggregateConfig {
        max_sources: 10_000,
        ..config
    });
    let start = cpu_ns();
    for i in 0..n {
        churn.observe(black_box(&observation(i, t0 + u64::from(i) * 1_000_000)));
    }
    let spent = cpu_ns() - start;
    println!(
        "churn: {n} events, {} evicted at capacity: {:.0} ns/event",
        churn.counters().sources_evicted_capacity,
        spent as f64 / f64::from(n)
    );

    let start = cpu_ns();
    let summary = sensor::report::Summary::new(&distinct, 10);
    println!(
        "report over the distinct run ({} sources): {:.1} ms",
        summary.sources,
        (cpu_ns() - start) as f64 / 1e6
    );
}
