//! `sensor analyze --threads N`: the capture's records shared out among N analysts by source
//! address, on threads of their own, and their analyses written and aggregated by the one sink
//! in the order the file holds them.
//!
//! Everything an analyst keeps is keyed by source (IP-ID history, SYN joins, sampling) or is a
//! cache whose verdicts do not depend on what it held, so a source's records meet the same
//! state whichever analyst has them. Campaigns span sources, so the sink alone aggregates; it
//! takes the records in file order, so its documents are those of one thread. Two differences,
//! both documented for the flag: each analyst keeps its own source bound, and under
//! `--event-detail lean` each writes its own compact example of a template.
//!
//! The reader works in rounds of [`ROUND`] records: each analyst gets its share of a round as
//! one batch (possibly empty), the sink gets the round's order (which analyst had each record).
//! Every queue is first in, first out and holds whole rounds, so no thread waits for a round
//! that is not already queued before its own: the bounded queues cannot deadlock.

use std::{
    hash::BuildHasher as _,
    sync::mpsc::{Receiver, SyncSender, channel, sync_channel},
};

use sensor_common::CaptureRecord;

use super::analyze::Frames;
use crate::{
    fingerprint::ipid::SourceHashing,
    pipeline::{Analyst, Pipeline, PipelineOptions, batch::Batch},
    record::Record,
};

/// Records per round (in unit tests, few: many rounds, and batches left empty).
const ROUND: usize = if cfg!(test) { 7 } else { 128 };

/// Rounds queued ahead between threads.
const DEPTH: usize = 4;

/// Reads `frames` to the end through `threads` analysts and the pipeline's sink.
pub(super) fn run(
    frames: &mut Frames,
    pipeline: &mut Pipeline,
    options: &PipelineOptions,
    threads: usize,
) {
    let threads = threads.clamp(1, usize::from(u8::MAX));
    let engine = pipeline.analyst_mut().engine().clone();
    let mut extra: Vec<Analyst> = (1..threads)
        .map(|_| Analyst::new(engine.clone(), options))
        .collect();
    let sensor = options.identity.as_ref().map(|i| i.name.as_str());
    let (analyst, sink, counters) = pipeline.parts_mut();
    let (recycle_tx, recycle_rx) = channel::<Batch>();
    let (order_tx, order_rx) = sync_channel::<Vec<u8>>(DEPTH);
    std::thread::scope(|scope| {
        let mut to_analysts = Vec::with_capacity(threads);
        let mut from_analysts = Vec::with_capacity(threads);
        for analyst in std::iter::once(analyst).chain(extra.iter_mut()) {
            let (in_tx, in_rx) = sync_channel::<Batch>(DEPTH);
            let (out_tx, out_rx) = sync_channel::<Batch>(DEPTH);
            to_analysts.push(in_tx);
            from_analysts.push(out_rx);
            scope.spawn(move || analyse(analyst, in_rx, out_tx));
        }
        let reader = scope.spawn(move || read(frames, to_analysts, order_tx, recycle_rx));
        // The sink, on this thread: the rounds in order, each record from its analyst's batch.
        let mut cursors = vec![0usize; threads];
        let mut batches: Vec<Batch> = Vec::with_capacity(threads);
        for order in order_rx {
            batches.clear();
            for from in &from_analysts {
                // An analyst gone early has panicked: the scope reports it.
                let Ok(batch) = from.recv() else { return };
                batches.push(batch);
            }
            cursors.iter_mut().for_each(|c| *c = 0);
            for &shard in &order {
                let shard = usize::from(shard);
                let i = cursors[shard];
                cursors[shard] += 1;
                counters.records_read += 1;
                match batches[shard].get(i, &engine, sensor) {
                    Some((record, wall_ns, Some(analysed))) => {
                        sink.take(record, wall_ns, &analysed, counters)
                    }
                    _ => counters.records_undecodable += 1,
                }
            }
            for batch in batches.drain(..) {
                // The reader may be gone at the end of the file; the batch is then dropped.
                let _ = recycle_tx.send(batch);
            }
        }
        let _ = reader.join();
    });
    for other in &extra {
        pipeline.analyst_mut().absorb_counters(other);
    }
}

/// An analyst's thread: each batch analysed and passed on, until the reader stops.
fn analyse(analyst: &mut Analyst, input: Receiver<Batch>, output: SyncSender<Batch>) {
    for mut batch in input {
        batch.analyse(analyst);
        if output.send(batch).is_err() {
            return;
        }
    }
}

/// The reader's thread: the file's records in rounds, shared out by source address.
fn read(
    frames: &mut Frames,
    to_analysts: Vec<SyncSender<Batch>>,
    order_tx: SyncSender<Vec<u8>>,
    recycle: Receiver<Batch>,
) {
    // Keyed at random: a capture crafted to put every source on one analyst costs speed only.
    let hashing = SourceHashing::new();
    let shards = to_analysts.len() as u64;
    let mut record = Box::new(CaptureRecord::zeroed());
    let fresh = || {
        let mut batch = recycle.try_recv().unwrap_or_default();
        batch.clear();
        batch
    };
    loop {
        let mut round: Vec<Batch> = to_analysts.iter().map(|_| fresh()).collect();
        let mut order = Vec::with_capacity(ROUND);
        while order.len() < ROUND {
            let Some(wall_ns) = frames.next_record(&mut record) else {
                break;
            };
            let shard = match Record::new(&record) {
                Ok(view) => (hashing.hash_one(view.src_ip()) % shards) as usize,
                // Counted by the sink as undecodable, from whichever batch holds it.
                Err(_) => 0,
            };
            round[shard].push(&record, wall_ns);
            order.push(shard as u8);
        }
        let last = order.len() < ROUND;
        if order.is_empty() {
            return;
        }
        for (batch, to) in round.into_iter().zip(&to_analysts) {
            if to.send(batch).is_err() {
                return;
            }
        }
        if order_tx.send(order).is_err() || last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, path::Path};

    use serde_json::Value;

    use super::super::{
        CaptureReader, LinkType,
        analyze::{AnalyzeOptions, AnalyzeSummary, analyze},
    };
    use crate::{
        capture::PortSet, output::OutputOptions, output::event::EventDetail, rogue::TrackerConfig,
    };

    /// Every Ethernet packet of every corpus capture, in one nanosecond pcap file, each file's
    /// packets after the previous file's.
    fn corpus_capture(path: &Path) -> usize {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "pcap" || e == "pcapng"))
            .collect();
        files.sort();
        let mut out = Vec::new();
        out.extend_from_slice(&0xa1b2_3c4du32.to_le_bytes());
        out.extend_from_slice(&2u16.to_le_bytes());
        out.extend_from_slice(&4u16.to_le_bytes());
        for word in [0u32, 0, 65_535, 1] {
            out.extend_from_slice(&word.to_le_bytes());
        }
        let mut packets = 0;
        for (f, file) in files.iter().enumerate() {
            for packet in CaptureReader::open(file).unwrap() {
                let packet = packet.unwrap();
                if packet.link_type != LinkType::ETHERNET {
                    continue;
                }
                let t = packet.timestamp_ns.unwrap_or(0) + f as u64 * 1_000_000_000;
                let len = packet.data.len() as u32;
                for word in [
                    (t / 1_000_000_000) as u32,
                    (t % 1_000_000_000) as u32,
                    len,
                    len,
                ] {
                    out.extend_from_slice(&word.to_le_bytes());
                }
                out.extend_from_slice(&packet.data);
                packets += 1;
            }
        }
        std::fs::write(path, out).unwrap();
        packets
    }

    /// The documents written, by event type; every document's `timestamp` (the time it was
    /// written) removed.
    fn documents(path: &Path) -> BTreeMap<String, Vec<Value>> {
        let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for line in std::fs::read_to_string(path).unwrap().lines() {
            let mut doc: Value = serde_json::from_str(line).unwrap();
            let map = doc.as_object_mut().unwrap();
            map.remove("timestamp");
            let kind = map["event_type"].as_str().unwrap().to_string();
            out.entry(kind).or_default().push(doc);
        }
        out
    }

    fn run(capture: &Path, out: &Path, threads: usize, detail: EventDetail) -> AnalyzeSummary {
        let _ = std::fs::remove_file(out);
        let mut ports = PortSet::empty();
        ports.insert(5060);
        ports.insert(5061);
        let options = AnalyzeOptions {
            ports,
            match_source_port: true,
            prefix_len: 1024,
            pipeline: crate::pipeline::PipelineOptions {
                outputs: OutputOptions::ndjson_file(out),
                detect_rogue: Some(TrackerConfig::default()),
                detail,
                ..Default::default()
            },
            metrics_file: None,
            threads,
        };
        analyze(capture, &options).unwrap()
    }

    /// Three analysts write the events, campaigns, servers and report one thread writes, in the
    /// same order; the counters add up the same.
    #[test]
    fn threads_write_what_one_thread_writes() {
        let dir = std::env::temp_dir().join(format!("sensor-parallel-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let capture = dir.join("corpus.pcap");
        let packets = corpus_capture(&capture);
        let one = run(&capture, &dir.join("one.ndjson"), 1, EventDetail::Compact);
        let three = run(&capture, &dir.join("three.ndjson"), 3, EventDetail::Compact);
        assert_eq!(one.packets, packets as u64);
        assert_eq!(three.packets, one.packets);
        let records = one.agent.records_read;
        assert!(records > 200, "{records}");
        assert_eq!(three.agent.records_read, records);
        assert_eq!(three.agent.events_written, one.agent.events_written);
        assert_eq!(one.agent.events_written, records);
        assert_eq!(
            three.kernel.iter().collect::<Vec<_>>(),
            one.kernel.iter().collect::<Vec<_>>()
        );
        for agent in [&one.agent, &three.agent] {
            let cache = agent.fingerprint_cache_hits
                + agent.fingerprint_cache_misses
                + agent.fingerprint_cache_bypassed;
            assert_eq!(cache, records, "{agent:?}");
        }
        assert_eq!(three.report.to_string(), one.report.to_string());
        let (mut a, mut b) = (
            documents(&dir.join("one.ndjson")),
            documents(&dir.join("three.ndjson")),
        );
        assert_eq!(a["sip_probe"].len() as u64, records);
        // The stats differ in the classification cache's counters (three caches, not one).
        let (sa, sb) = (a.remove("stats").unwrap(), b.remove("stats").unwrap());
        assert_eq!(sa.len(), 1);
        assert_eq!(sb.len(), 1);
        assert_eq!(
            sa[0]["agent"]["events_written"],
            sb[0]["agent"]["events_written"]
        );
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
        for (kind, docs) in &a {
            assert_eq!(docs.len(), b[kind].len(), "{kind}");
            for (i, (x, y)) in docs.iter().zip(&b[kind]).enumerate() {
                assert_eq!(x, y, "{kind} document {i}");
            }
        }
        assert!(a.contains_key("campaign") && a.contains_key("sip_server"));

        // Lean: every event written; each analyst writes its own examples of a template.
        let lean_one = run(&capture, &dir.join("lean1.ndjson"), 1, EventDetail::Lean);
        let lean_three = run(&capture, &dir.join("lean3.ndjson"), 3, EventDetail::Lean);
        assert_eq!(lean_one.agent.events_written, records);
        assert_eq!(lean_three.agent.events_written, records);
        assert!(lean_three.agent.events_lean <= lean_one.agent.events_lean);
        assert_eq!(lean_three.report.to_string(), lean_one.report.to_string());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
