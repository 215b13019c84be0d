//! The Kafka output against a real Kafka-protocol broker (tansu, in memory, on loopback).
//!
//! Events are real: crafted SIP frames run through the real XDP program (BPF_PROG_TEST_RUN), and
//! the records it writes go through the agent's own `Pipeline`, the code `sensor run` uses, to
//! NDJSON and Kafka at once. What NDJSON got is the reference for what Kafka must hold.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use sensor::{
    clock::WallClock,
    counters::KernelCounters,
    identity::SensorIdentity,
    output::kafka::{KafkaConfig, KafkaStats, consume_topics},
    pipeline::{Pipeline, PipelineOptions},
    report,
};
use sensor_tests::{
    frames::Frame,
    harness::Harness,
    kafka::{Broker, free_port},
    sensor_binary, temp_path,
};

/// `n` distinct SIP requests from `sources` scanners (every fifth over IPv6), through the
/// kernel program: one raw ring buffer record each.
fn records_through_xdp(n: usize, sources: usize, tag: &str) -> Vec<Vec<u8>> {
    let mut harness = Harness::new();
    (0..n)
        .map(|i| {
            let s = i % sources;
            let (src, dst) = if s % 5 == 4 {
                (format!("2001:db8:5ca::{s:x}"), "2001:db8:dead::9".to_string())
            } else {
                (
                    format!("198.51.{}.{}", 100 + s / 200, 1 + s % 200),
                    "203.0.113.9".to_string(),
                )
            };
            let payload = format!(
                "OPTIONS sip:{i}@203.0.113.9 SIP/2.0\r\nVia: SIP/2.0/UDP {src}:5060\r\nCall-ID: {tag}-{i}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
            );
            let frame = Frame::udp(&src, &dst, 5060, 5060, payload.as_bytes()).build();
            let mut run = harness.run(&frame);
            assert_eq!(run.raw.len(), 1, "one record per SIP frame");
            run.raw.remove(0)
        })
        .collect()
}

fn identity(name: &str) -> SensorIdentity {
    SensorIdentity {
        name: name.into(),
        interface: "dark0".into(),
        prefixes: vec![
            "203.0.113.0/24".parse().unwrap(),
            "2001:db8:dead::/48".parse().unwrap(),
        ],
    }
}

fn kafka_config(brokers: &str, topic: &str, spool: &Path) -> KafkaConfig {
    let mut c = KafkaConfig::new(vec![brokers.to_string()], topic);
    c.linger_ms = 5;
    c.message_timeout_ms = 3_000;
    c.shutdown_timeout_ms = 5_000;
    c.retry_backoff_max_ms = 1_000;
    c.spool.dir = spool.to_path_buf();
    c
}

/// The live agent's pipeline, fed ring buffer items as the agent feeds it.
struct EventSink {
    pipeline: Pipeline,
    clock: WallClock,
}

impl EventSink {
    fn handle(&mut self, item: &[u8]) {
        self.pipeline.ring_item(item, None, &self.clock);
    }

    fn flush(&mut self) {
        self.pipeline.flush();
    }

    fn kafka_counters(&self) -> Option<std::sync::Arc<sensor::output::kafka::KafkaCounters>> {
        self.pipeline.kafka_counters()
    }

    fn finish(
        mut self,
        kernel: &KernelCounters,
    ) -> (
        sensor::counters::AgentCounters,
        Option<sensor::output::kafka::KafkaStats>,
    ) {
        let kafka = self.pipeline.finish(kernel);
        (self.pipeline.counters, kafka)
    }
}

fn open_sink(ndjson: &Path, name: &str, kafka: KafkaConfig) -> EventSink {
    let options = PipelineOptions {
        outputs: sensor::output::OutputOptions::ndjson_file(ndjson),
        identity: Some(identity(name)),
        kafka: Some(kafka),
        ..Default::default()
    };
    let mut pipeline = Pipeline::new(&options).expect("open the outputs");
    pipeline.start_outputs().expect("start the Kafka output");
    EventSink {
        pipeline,
        clock: WallClock::now(),
    }
}

/// The NDJSON file: event lines (as written; not the campaign and other summary documents) and
/// the final stats document.
fn read_ndjson(path: &Path) -> (Vec<String>, serde_json::Value) {
    let text = std::fs::read_to_string(path).expect("NDJSON output");
    let mut events = Vec::new();
    let mut stats = serde_json::Value::Null;
    for line in text.lines() {
        let doc: serde_json::Value = serde_json::from_str(line).expect("JSON line");
        if doc["event_type"] == "stats" {
            stats = doc;
        } else if doc["event_type"] == "sip_probe" {
            events.push(line.to_string());
        }
    }
    (events, stats)
}

struct Got {
    partition: i32,
    offset: i64,
    key: String,
    payload: String,
}

fn consume(broker: &Broker, topics: &[&str]) -> Vec<Got> {
    let config = KafkaConfig::new(vec![broker.addr()], "unused");
    let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
    let mut got = Vec::new();
    consume_topics(&config, &topics, Duration::from_secs(60), |c| {
        got.push(Got {
            partition: c.partition,
            offset: c.offset,
            key: String::from_utf8(c.key.unwrap_or_default().to_vec()).expect("UTF-8 key"),
            payload: String::from_utf8(c.payload.to_vec()).expect("UTF-8 payload"),
        })
    })
    .expect("read the topics back");
    got
}

/// Waits for a condition the exporter reaches by itself; the limit only turns a hang into a
/// failure, it does not measure speed.
fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir(name: &str) -> TempDir {
    let d = temp_path(name);
    std::fs::create_dir_all(&d).unwrap();
    TempDir(d)
}

fn print_stats(label: &str, k: &KafkaStats) {
    let parts: Vec<String> = k.iter().map(|(n, v)| format!("{n}={v}")).collect();
    eprintln!("{label}: {}", parts.join(" "));
}

#[test]
fn every_event_is_consumed_back_exactly_keyed_and_ordered_by_source() {
    const EVENTS: usize = 2_000;
    let broker = Broker::start();
    broker.create_topic("sip-roundtrip", 4);
    let dir = temp_dir("roundtrip");
    let ndjson = dir.0.join("events.ndjson");
    let records = records_through_xdp(EVENTS, 60, "rt");

    let mut sink = open_sink(
        &ndjson,
        "dark-rt",
        kafka_config(&broker.addr(), "sip-roundtrip", &dir.0.join("spool")),
    );
    for r in &records {
        sink.handle(r);
    }
    sink.flush();
    let (agent, kafka) = sink.finish(&KernelCounters::default());
    let kafka = kafka.expect("kafka counters");
    print_stats("round trip", &kafka);
    assert_eq!(agent.events_written, EVENTS as u64);
    assert_eq!(kafka.offered, EVENTS as u64);
    assert_eq!(kafka.delivered, EVENTS as u64);
    assert_eq!(kafka.channel_dropped + kafka.shed + kafka.failed, 0);
    assert_eq!(kafka.spool_pending, 0);
    kafka.check().expect("kafka counters reconcile");

    let (lines, stats) = read_ndjson(&ndjson);
    assert_eq!(lines.len(), EVENTS);
    assert_eq!(stats["kafka"]["kafka_delivered"], EVENTS as u64);
    assert_eq!(stats["kafka"]["kafka_reconciled"], true);

    let got = consume(&broker, &["sip-roundtrip"]);
    eprintln!("round trip: consumed {} of {} events", got.len(), EVENTS);
    assert_eq!(got.len(), EVENTS, "every event once");
    // Exactly the same bytes as the NDJSON lines.
    let mut a: Vec<&str> = lines.iter().map(String::as_str).collect();
    let mut b: Vec<&str> = got.iter().map(|g| g.payload.as_str()).collect();
    a.sort_unstable();
    b.sort_unstable();
    assert!(a == b, "Kafka holds exactly the NDJSON events");

    // Keyed by source, one partition per source, in the order the sensor saw them.
    let mut partition_of: BTreeMap<&str, i32> = BTreeMap::new();
    let mut kafka_order: BTreeMap<&str, Vec<(i64, &str)>> = BTreeMap::new();
    for g in &got {
        let doc: serde_json::Value = serde_json::from_str(&g.payload).unwrap();
        assert_eq!(doc["src_ip"].as_str(), Some(g.key.as_str()), "key = src_ip");
        assert_eq!(doc["sensor"]["name"], "dark-rt");
        assert_eq!(doc["sensor"]["interface"], "dark0");
        assert_eq!(
            doc["sensor"]["prefixes"],
            serde_json::json!(["203.0.113.0/24", "2001:db8:dead::/48"])
        );
        let p = *partition_of.entry(&g.key).or_insert(g.partition);
        assert_eq!(p, g.partition, "source {} in one partition", g.key);
        kafka_order
            .entry(&g.key)
            .or_default()
            .push((g.offset, &g.payload));
    }
    let used: BTreeSet<i32> = partition_of.values().copied().collect();
    eprintln!(
        "round trip: {} sources over partitions {used:?}",
        partition_of.len()
    );
    assert!(used.len() > 1, "sources spread over partitions");
    let mut ndjson_order: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for line in &lines {
        let doc: serde_json::Value = serde_json::from_str(line).unwrap();
        ndjson_order
            .entry(doc["src_ip"].as_str().unwrap().to_string())
            .or_default()
            .push(line);
    }
    for (key, mut seq) in kafka_order {
        seq.sort_unstable_by_key(|(o, _)| *o);
        let seq: Vec<&str> = seq.into_iter().map(|(_, p)| p).collect();
        assert!(seq == ndjson_order[key], "order of source {key} kept");
    }
}

#[test]
fn broker_stopped_mid_run_and_restarted_loses_nothing() {
    const BEFORE: usize = 600;
    const DURING: usize = 900;
    let mut broker = Broker::start();
    broker.create_topic("sip-outage", 3);
    let dir = temp_dir("outage");
    let ndjson = dir.0.join("events.ndjson");
    let records = records_through_xdp(BEFORE + DURING, 40, "out");

    let mut sink = open_sink(
        &ndjson,
        "dark-outage",
        kafka_config(&broker.addr(), "sip-outage", &dir.0.join("spool")),
    );
    let counters = sink.kafka_counters().expect("kafka on");
    for r in &records[..BEFORE] {
        sink.handle(r);
    }
    sink.flush();
    wait_for(
        "the first events to be delivered",
        Duration::from_secs(120),
        || counters.snapshot().delivered == BEFORE as u64,
    );
    // The broker keeps its data in memory: read what it has before it goes.
    let first = consume(&broker, &["sip-outage"]);
    assert_eq!(first.len(), BEFORE);

    broker.stop();
    for r in &records[BEFORE..] {
        sink.handle(r);
    }
    sink.flush();
    wait_for(
        "events to reach the spool",
        Duration::from_secs(120),
        || counters.snapshot().spool_pending > 0,
    );
    let during_outage = counters.snapshot();
    print_stats("outage, broker down", &during_outage);
    assert_eq!(during_outage.delivered, BEFORE as u64);

    broker.restart();
    broker.create_topic("sip-outage", 3);
    wait_for(
        "the spool to drain into the restarted broker",
        Duration::from_secs(300),
        || {
            let s = counters.snapshot();
            s.delivered >= (BEFORE + DURING) as u64 && s.spool_pending == 0
        },
    );
    let (_, kafka) = sink.finish(&KernelCounters::default());
    let kafka = kafka.expect("kafka counters");
    print_stats("outage, final", &kafka);
    kafka.check().expect("kafka counters reconcile");
    let produced = (BEFORE + DURING) as u64;
    assert_eq!(kafka.offered, produced);
    assert_eq!(
        kafka.delivered + kafka.shed,
        produced,
        "produced = delivered + shed"
    );
    assert_eq!(kafka.shed + kafka.failed + kafka.channel_dropped, 0);
    assert!(kafka.spooled > 0, "the outage went through the spool");
    assert_eq!(kafka.spool_pending, 0);

    let second = consume(&broker, &["sip-outage"]);
    let (lines, stats) = read_ndjson(&ndjson);
    assert_eq!(stats["kafka"]["kafka_reconciled"], true);
    let all: BTreeSet<&str> = lines.iter().map(String::as_str).collect();
    let consumed: Vec<&str> = first
        .iter()
        .chain(second.iter())
        .map(|g| g.payload.as_str())
        .collect();
    let distinct: BTreeSet<&str> = consumed.iter().copied().collect();
    eprintln!(
        "outage: consumed {} records ({} before the stop, {} after the restart), {} distinct, {} duplicates; {} events produced",
        consumed.len(),
        first.len(),
        second.len(),
        distinct.len(),
        consumed.len() - distinct.len(),
        lines.len()
    );
    assert_eq!(all.len(), BEFORE + DURING);
    assert!(distinct == all, "every event produced was consumed");
}

#[test]
fn restart_resumes_from_the_spool_and_a_full_spool_sheds_and_counts() {
    const EVENTS: usize = 400;
    const SPOOL_BYTES: u64 = 96 * 1024;
    let port = free_port();
    let brokers = format!("127.0.0.1:{port}");
    let dir = temp_dir("resume");
    let spool = dir.0.join("spool");
    let ndjson1 = dir.0.join("run1.ndjson");
    let records = records_through_xdp(EVENTS, 25, "res");

    // Run 1: no broker at all, a small spool.
    let mut config = kafka_config(&brokers, "sip-resume", &spool);
    config.spool.max_bytes = SPOOL_BYTES;
    config.shutdown_timeout_ms = 1_000;
    let mut sink = open_sink(&ndjson1, "dark-resume", config.clone());
    for r in &records {
        sink.handle(r);
    }
    sink.flush();
    let (_, run1) = sink.finish(&KernelCounters::default());
    let run1 = run1.expect("kafka counters");
    print_stats("resume, run 1 (no broker)", &run1);
    run1.check().expect("run 1 counters reconcile");
    assert_eq!(run1.offered, EVENTS as u64);
    assert_eq!(run1.delivered, 0);
    assert!(run1.shed > 0, "the spool limit was reached and shed");
    assert!(run1.spool_pending > 0);
    assert_eq!(run1.shed + run1.spool_pending, EVENTS as u64);
    assert!(run1.spool_bytes <= SPOOL_BYTES);
    let (lines1, stats1) = read_ndjson(&ndjson1);
    assert_eq!(stats1["kafka"]["kafka_shed"], run1.shed);

    // Run 2: the broker is there; the sensor resumes from the spool with nothing new.
    let broker = Broker::start_on(port);
    broker.create_topic("sip-resume", 2);
    let ndjson2 = dir.0.join("run2.ndjson");
    let sink = open_sink(&ndjson2, "dark-resume", config);
    let counters = sink.kafka_counters().expect("kafka on");
    wait_for(
        "the resumed spool to drain",
        Duration::from_secs(300),
        || {
            let s = counters.snapshot();
            s.spool_pending == 0 && s.delivered >= run1.spool_pending
        },
    );
    let (_, run2) = sink.finish(&KernelCounters::default());
    let run2 = run2.expect("kafka counters");
    print_stats("resume, run 2 (broker up)", &run2);
    run2.check().expect("run 2 counters reconcile");
    assert_eq!(run2.resumed, run1.spool_pending);
    assert_eq!(run2.delivered, run1.spool_pending);
    assert_eq!(
        run2.delivered + run1.shed,
        EVENTS as u64,
        "produced = delivered + shed across the restart"
    );

    let got = consume(&broker, &["sip-resume"]);
    eprintln!(
        "resume: {} events produced, {} shed, {} resumed and consumed",
        EVENTS,
        run1.shed,
        got.len()
    );
    assert_eq!(got.len() as u64, run1.spool_pending);
    let produced: BTreeSet<&str> = lines1.iter().map(String::as_str).collect();
    let consumed: BTreeSet<&str> = got.iter().map(|g| g.payload.as_str()).collect();
    assert_eq!(consumed.len(), got.len(), "no duplicates");
    assert!(consumed.is_subset(&produced), "exactly the events of run 1");
    assert!(
        !std::fs::read_dir(&spool)
            .unwrap()
            .filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().ends_with(".seg")),
        "a drained spool leaves no segments"
    );
}

#[test]
fn kafka_report_merges_two_sensors_with_the_report_code() {
    let broker = Broker::start();
    broker.create_topic("sensor-a", 2);
    broker.create_topic("sensor-b", 2);
    let dir = temp_dir("report");
    let mut all_docs = Vec::new();
    for (name, topic, n, tag) in [
        ("dark-a", "sensor-a", 150, "a"),
        ("dark-b", "sensor-b", 250, "b"),
    ] {
        let ndjson = dir.0.join(format!("{name}.ndjson"));
        let mut sink = open_sink(
            &ndjson,
            name,
            kafka_config(&broker.addr(), topic, &dir.0.join(format!("spool-{name}"))),
        );
        // 20 sources: the same scanners hit both sensors.
        for r in records_through_xdp(n, 20, tag) {
            sink.handle(&r);
        }
        let (_, kafka) = sink.finish(&KernelCounters::default());
        assert_eq!(kafka.expect("kafka").delivered, n as u64);
        let (lines, _) = read_ndjson(&ndjson);
        all_docs.extend(
            lines
                .iter()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()),
        );
    }
    let expected = serde_json::to_value(report::summarize(all_docs.iter()).summary(5)).unwrap();

    let run = |extra: &[&str]| {
        let out = Command::new(sensor_binary())
            .args([
                "kafka-report",
                "--brokers",
                &broker.addr(),
                "--topics",
                "sensor-a,sensor-b",
                "--top",
                "5",
            ])
            .args(extra)
            .output()
            .expect("run sensor kafka-report");
        assert!(
            out.status.success(),
            "kafka-report failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("UTF-8 report")
    };
    let json: serde_json::Value = serde_json::from_str(&run(&["--json"])).expect("JSON summary");
    assert_eq!(
        json, expected,
        "the same report as the report module over NDJSON"
    );
    assert_eq!(json["events"], 400);
    assert_eq!(json["sources"], 20);
    let sensors: Vec<(&str, u64)> = json["sensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].as_str().unwrap(), r["events"].as_u64().unwrap()))
        .collect();
    assert_eq!(sensors, [("dark-b", 250), ("dark-a", 150)]);
    assert_eq!(
        json["top_sources"][0]["sensors"],
        serde_json::json!(["dark-a", "dark-b"]),
        "one scanner seen by both sensors, merged"
    );
    let table = run(&[]);
    eprintln!("{table}");
    assert!(table.contains("400 events from 20 sources"), "{table}");
    assert!(table.contains("dark-a") && table.contains("dark-b"));
}

/// The whole path, as an operator runs it: `sensor run --config FILE` attached to a veth in a
/// lab, real datagrams from the scanner namespace, the broker on the darknet namespace's
/// loopback; then `sensor kafka-report` and a consumer read the topic back.
#[test]
fn sensor_run_with_a_config_file_publishes_every_event() {
    use std::{
        io::{BufRead as _, BufReader},
        net::{IpAddr, SocketAddr},
        process::Stdio,
        sync::mpsc,
    };
    use xtask::{lab, lab::Lab, traffic};

    const COUNT: u32 = 1_000;
    let lab = Lab::create("kfk").expect("lab");
    let port = free_port();
    let broker = Broker::start_in(Some(&lab.dark_ns), port);
    broker.create_topic("sip-e2e", 3);
    let dir = temp_dir("e2e");
    let config = dir.0.join("sensor.toml");
    let ndjson = dir.0.join("events.ndjson");
    std::fs::write(
        &config,
        format!(
            r#"
[sensor]
name = "dark-e2e"
prefixes = ["{}", "{}"]

[kafka]
brokers = ["127.0.0.1:{port}"]
topic = "sip-e2e"
compression = "zstd"
linger_ms = 10
message_timeout_ms = 5000

[kafka.spool]
dir = "{}"
max_bytes = 16777216
"#,
            lab::DARKNET_V4,
            lab::DARKNET_V6,
            dir.0.join("spool").display()
        ),
    )
    .unwrap();

    let mut sensor = lab
        .in_dark(sensor_binary().to_str().unwrap())
        .args(["run", "--iface", &lab.dark_if, "--config"])
        .arg(&config)
        .arg("--output")
        .arg(&ndjson)
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sensor run");
    let stderr = sensor.stderr.take().unwrap();
    let (attached_tx, attached_rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("attached to") {
                let _ = attached_tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    if attached_rx.recv_timeout(Duration::from_secs(60)).is_err() {
        let _ = sensor.kill();
        let _ = sensor.wait();
        panic!(
            "sensor did not attach: {}",
            reader.join().unwrap_or_default()
        );
    }
    let target = SocketAddr::new(IpAddr::V4(lab::darknet_v4(70)), 5060);
    let sent = traffic::udp_sip_burst(&lab, target, COUNT).expect("send");
    assert_eq!(sent, COUNT);
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: kill(2) on our child's pid.
    unsafe { libc::kill(sensor.id() as i32, libc::SIGINT) };
    let status = sensor.wait().expect("sensor exit");
    let log = reader.join().unwrap_or_default();
    eprintln!("{log}");
    assert!(status.success(), "sensor run failed: {log}");
    assert!(log.contains("sensor: kafka counters reconcile"), "{log}");

    let (lines, stats) = read_ndjson(&ndjson);
    assert_eq!(lines.len(), COUNT as usize, "every datagram is an event");
    assert_eq!(stats["kafka"]["kafka_delivered"], COUNT);
    assert_eq!(stats["kafka"]["kafka_reconciled"], true);
    let docs: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for d in &docs {
        assert_eq!(d["sensor"]["name"], "dark-e2e");
        assert_eq!(d["sensor"]["interface"], lab.dark_if.as_str());
        assert_eq!(
            d["sensor"]["prefixes"],
            serde_json::json!([lab::DARKNET_V4, lab::DARKNET_V6])
        );
    }

    // Read back: the exact lines, and the same report as over the NDJSON file.
    let got = broker.in_netns(|| consume(&broker, &["sip-e2e"]));
    let mut a: Vec<&str> = lines.iter().map(String::as_str).collect();
    let mut b: Vec<&str> = got.iter().map(|g| g.payload.as_str()).collect();
    a.sort_unstable();
    b.sort_unstable();
    eprintln!("e2e: {} events written, {} consumed", a.len(), b.len());
    assert!(a == b, "Kafka holds exactly the NDJSON events");
    let out = lab
        .in_dark(sensor_binary().to_str().unwrap())
        .args(["kafka-report", "--config"])
        .arg(&config)
        .arg("--json")
        .output()
        .expect("run sensor kafka-report");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON summary");
    let expected = serde_json::to_value(report::summarize(docs.iter()).summary(20)).unwrap();
    assert_eq!(json, expected);
    drop(broker);
    drop(lab);
}
