use std::io::Cursor;

use sensor_common::{CaptureRecord, MatchAction, SensorConfig};
use serde_json::{Value, json};

use super::*;
use crate::{
    capture::PortSet,
    counters::KernelCounters,
    offline::{FrameContext, extract},
    pipeline::{Pipeline, PipelineOptions},
    record::Record,
};

const NS: u64 = 1_000_000_000;
/// 2009-11-01T00:00:00Z: the seed's era.
const T0: u64 = 1_257_033_600 * NS;

/// Ethernet + IPv4 + UDP to port 5060 (checksums left zero: the extractor does not check them).
fn udp4(src: [u8; 4], src_port: u16, ttl: u8, ip_id: u16, df: bool, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
    let total = (20 + 8 + payload.len()) as u16;
    f.extend_from_slice(&[0x45, 0x00]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&ip_id.to_be_bytes());
    f.extend_from_slice(&[if df { 0x40 } else { 0 }, 0, ttl, 17, 0, 0]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[69, 17, 22, 74]);
    f.extend_from_slice(&src_port.to_be_bytes());
    f.extend_from_slice(&5060u16.to_be_bytes());
    f.extend_from_slice(&(8 + payload.len() as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

/// The first seed's two payloads: stock svmap (python 2 era) and the modified
/// sundayddr/192.168.1.9 copy, with the svmap tag encoding 69.17.22.74:5060.
fn seed_payload(modified: bool, src_port: u16) -> Vec<u8> {
    if modified {
        format!(
            "OPTIONS sip:100@69.17.22.74 SIP/2.0\r\nVia: SIP/2.0/UDP 192.168.1.9:{src_port};branch=z9hG4bK-17038962;rport\r\nContent-Length: 0\r\nFrom: \"sipsscuser\"<sip:100@192.168.1.9>;tag=77194458456158489721772408023096992174807017852\r\nAccept: application/sdp\r\nUser-Agent: sundayddr\r\nTo: \"sipscc\"<sip:100@192.168.1.9>\r\nContact: sip:100@192.168.1.9:{src_port}\r\nCSeq: 1 OPTIONS\r\nCall-ID: 124296019799750175018545983\r\nMax-Forwards: 70\r\n\r\n"
        )
    } else {
        format!(
            "OPTIONS sip:100@69.17.22.74 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{src_port};branch=z9hG4bK-1047900479;rport\r\nContent-Length: 0\r\nFrom: \"sipvicious\"<sip:100@1.1.1.1>;tag=34353131313634613133633401353835363538393133\r\nAccept: application/sdp\r\nUser-Agent: friendly-scanner\r\nTo: \"sipvicious\"<sip:100@1.1.1.1>\r\nContact: sip:100@127.0.0.1:{src_port}\r\nCSeq: 1 OPTIONS\r\nCall-ID: 965192181434457134540520\r\nMax-Forwards: 70\r\n\r\n"
        )
    }
    .into_bytes()
}

/// The seed's situation: 17 OPTIONS from 17 sources over 36 hours to one darknet address, 7 of
/// them with IP-ID 0 and DF; 3 from ports above 5060 (up to 5064: five svmap processes).
pub(crate) fn seed_frames() -> Vec<(u64, Vec<u8>)> {
    (0..17u8)
        .map(|i| {
            let t = T0 + u64::from(i) * 36 * 3600 * NS / 16;
            let zero_id = i % 5 < 2 && i < 16; // 0, 1, 5, 6, 10, 11, 15: seven sources
            let ip_id = if zero_id {
                0
            } else {
                0x1000 + u16::from(i) * 977
            };
            let df = zero_id || i % 4 != 3;
            let ttl = if i == 4 || i == 9 { 113 } else { 44 + i };
            let src_port = match i {
                2 => 5061,
                8 => 5062,
                13 => 5064,
                _ => 5060,
            };
            let payload = seed_payload(i % 2 == 1, src_port);
            let src = [198, 51, 100, 10 + i];
            (t, udp4(src, src_port, ttl, ip_id, df, &payload))
        })
        .collect()
}

fn temp_path(name: &str) -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!("sensor-report-{}-{n}-{name}", std::process::id()))
}

/// Frames through the pipeline (as `sensor analyze` runs it), NDJSON into `path`; returns the
/// pipeline's own report.
fn through_pipeline(frames: &[(u64, Vec<u8>)], path: &std::path::Path) -> Summary {
    let mut pipeline = Pipeline::new(&PipelineOptions {
        outputs: crate::output::OutputOptions::ndjson_file(path),
        ..PipelineOptions::default()
    })
    .unwrap();
    let config = SensorConfig::new(MatchAction::Drop, false, 1024);
    for (t, frame) in frames {
        let context = FrameContext {
            timestamp_ns: *t,
            ifindex: 1,
            rx_queue: 0,
        };
        let record: CaptureRecord = extract(
            frame,
            frame.len() as u32,
            &config,
            &PortSet::default(),
            &context,
        )
        .unwrap();
        pipeline.record(Record::new(&record).unwrap(), *t);
    }
    let report = pipeline.report(DEFAULT_TOP);
    pipeline.finish(&KernelCounters::default());
    report
}

fn report_file(path: &std::path::Path) -> Report {
    let mut report = Report::new();
    let file = std::fs::File::open(path).unwrap();
    report.read_ndjson(std::io::BufReader::new(file)).unwrap();
    report
}

#[test]
fn seed_situation_reported_with_its_numbers() {
    let path = temp_path("seed.ndjson");
    let live = through_pipeline(&seed_frames(), &path);
    let report = report_file(&path);
    std::fs::remove_file(&path).ok();
    let s = report.summary(DEFAULT_TOP);
    if std::env::var_os("SENSOR_SHOW_REPORT").is_some() {
        eprintln!("{s}");
    }

    assert_eq!((s.events, s.sources, s.destinations), (17, 17, 1));
    assert!((s.hours - 36.0).abs() < 1e-9, "{}", s.hours);
    let sv = &s.findings[0];
    assert_eq!(sv.tool, "sipvicious");
    assert_eq!((sv.packets, sv.sources), (17, 17));
    assert_eq!(
        (
            sv.ipv4_sources,
            sv.zero_id_df_sources,
            sv.zero_id_df_packets
        ),
        (17, 7, 7)
    );
    assert_eq!((sv.multi_process_sources, sv.max_processes), (3, 5));
    let text = s.to_string();
    for expected in [
        "17 events from 17 sources over 36.0 hours (2009-11-01 00:00:00 to 2009-11-02 12:00:00 UTC)",
        "sipvicious: 17 packets over 36.0 hours from 17 unique sources",
        "one packet per source",
        "7 of 17 IPv4 sources sent IP-ID 0 with DF in every packet (7 packets)",
        "the other 10 are not shown to be non-Linux",
        "3 of 17 sources bound a port above port 5060",
        "up to 5 concurrent scanner processes",
        "6.18 kernel",
        "192.168.1.9",
        "127.0.0.1",
        "\"sundayddr\" (8)",
        "\"friendly-scanner\" (9)",
        "initial TTL: 64 for 15 sources",
        "128 for 2 sources (Windows)",
    ] {
        let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(flat.contains(expected), "missing {expected:?} in:\n{text}");
    }
    // Two campaigns: the stock svmap rule and the modified copy's.
    let keys: Vec<(&str, u64, u64)> = s
        .campaigns
        .iter()
        .map(|c| (c.key.as_str(), c.packets, c.sources))
        .collect();
    assert_eq!(
        keys,
        [
            ("sipvicious-svmap-py2", 9, 9),
            ("sipvicious-svmap-mod-sundayddr", 8, 8)
        ]
    );
    let zero: u64 = s
        .campaigns
        .iter()
        .map(|c| c.ip_id.sources.get("zero_df").copied().unwrap_or(0))
        .sum();
    assert_eq!(zero, 7);

    // The report over the NDJSON says what the pipeline said when it finished.
    let mut live_json = serde_json::to_value(&live).unwrap();
    let mut file_json = serde_json::to_value(&s).unwrap();
    assert_eq!(
        file_json["other_documents"], 3,
        "two campaigns and the stats"
    );
    for j in [&mut live_json, &mut file_json] {
        j["other_documents"] = json!(0);
    }
    assert_eq!(live_json, file_json);
}

#[test]
fn pipeline_writes_campaign_documents_and_aggregate_stats() {
    let path = temp_path("docs.ndjson");
    through_pipeline(&seed_frames(), &path);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).ok();
    let docs: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let campaigns: Vec<&Value> = docs
        .iter()
        .filter(|d| d["event_type"] == "campaign")
        .collect();
    assert_eq!(campaigns.len(), 2);
    let c = &campaigns[0]["campaign"];
    assert_eq!(c["state"], "open");
    assert_eq!(
        c["schema_version"],
        Value::Null,
        "the version is at the top"
    );
    assert_eq!(campaigns[0]["schema_version"], 1);
    assert!(c["id"].as_str().unwrap().contains('@'));
    let stats = docs.iter().find(|d| d["event_type"] == "stats").unwrap();
    assert_eq!(stats["aggregate"]["events"], 17);
    // 2.25 hours between sources, an idle timeout of one hour: each is evicted by the next.
    assert_eq!(stats["aggregate"]["source_records"], 17);
    assert_eq!(stats["aggregate"]["sources_tracked"], 1);
    assert_eq!(stats["aggregate"]["sources_evicted_idle"], 16);
    assert_eq!(stats["aggregate"]["sources_evicted_capacity"], 0);
}

#[test]
fn json_values_and_bytes_give_the_same_report() {
    let path = temp_path("values.ndjson");
    through_pipeline(&seed_frames(), &path);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).ok();
    let values: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let by_value = summarize(values.iter()).summary(5);
    let mut by_bytes = Report::new();
    by_bytes.read_ndjson(Cursor::new(text.as_bytes())).unwrap();
    assert_eq!(
        serde_json::to_value(&by_value).unwrap(),
        serde_json::to_value(by_bytes.summary(5)).unwrap()
    );
}

#[test]
fn unreadable_and_other_documents_are_counted() {
    let mut report = Report::new();
    let input = b"not json\n{\"event_type\":\"stats\"}\n\n[1,2]\n{\"event_type\":\"sip_probe\",\"timestamp\":\"yesterday\",\"src_ip\":\"192.0.2.1\",\"dest_ip\":\"192.0.2.2\"}\n{\"event_type\":\"sip_probe\",\"src_port\":\"x\"}\n{\"event_type\":\"sip_probe\",\"timestamp\":\"2026-01-01T00:00:00Z\",\"src_ip\":\"192.0.2.1\",\"dest_ip\":\"192.0.2.2\"}\n";
    assert_eq!(report.read_ndjson(Cursor::new(&input[..])).unwrap(), 7);
    let mut long = vec![b'{'; input::MAX_LINE + 10];
    long.push(b'\n');
    report.read_ndjson(Cursor::new(long)).unwrap();
    report.add(&json!("a string"));
    let s = report.summary(5);
    assert_eq!((s.events, s.other_documents, s.unreadable), (1, 1, 6));
    assert_eq!(s.tools[0].name, UNKNOWN_TOOL);
    assert!(s.to_string().contains("1 other documents and 6 unreadable"));
}

/// Strings an attacker controls (user agent, Via host, and, from a file of unknown origin,
/// every name) reach the table and the plot escaped and bounded.
#[test]
fn hostile_strings_are_escaped_in_the_table_and_the_plot() {
    let hostile = "\u{1b}[2J\u{1b}]0;owned\u{7}\u{9b}31m<svg onload=x>&\r\n";
    let long = "A".repeat(10_000);
    let mut report = Report::new();
    for i in 0..3 {
        let doc = json!({
            "event_type": "sip_probe",
            "timestamp": format!("2026-01-01T00:00:0{i}Z"),
            "src_ip": format!("192.0.2.{i}"),
            "dest_ip": "203.0.113.1",
            "proto": hostile,
            "sensor": {"name": hostile},
            "sip": {"method": hostile, "user_agent": format!("{hostile}{long}")},
            "fingerprint": {
                "tool": hostile,
                "variant": long,
                "category": hostile,
                "rule": hostile,
                "template_hash": "zz",
                "inferences": {
                    "via_host": {"class": hostile, "host": hostile},
                    "contact_host": {"class": "private_nat", "host": long},
                    "ip_id": {"packet": hostile, "source": {"behaviour": hostile}},
                },
            },
        });
        report.add_json(doc.to_string().as_bytes());
    }
    let s = report.summary(5);
    assert_eq!(s.events, 3);
    let text = s.to_string();
    assert!(
        text.bytes()
            .all(|b| b == b'\n' || (0x20..0x7f).contains(&b)),
        "control or non-ASCII bytes in:\n{text}"
    );
    assert!(text.contains("\\x1b[2J"), "{text}");
    assert!(
        !text.contains(&long[..200]),
        "unbounded string in the table"
    );
    assert!(text.lines().all(|l| l.len() < 1000), "{text}");
    let svg = plot::svg(&s);
    assert!(svg.bytes().all(|b| b == b'\n' || (0x20..0x7f).contains(&b)));
    assert_eq!(
        svg.matches("<svg").count(),
        1,
        "the name's markup is escaped"
    );
    assert!(svg.contains("&lt;svg onload=x&gt;&amp;"));
}

#[test]
fn plot_has_a_bar_per_busy_bucket_and_a_legend_per_tool() {
    let path = temp_path("plot.ndjson");
    through_pipeline(&seed_frames(), &path);
    let report = report_file(&path);
    std::fs::remove_file(&path).ok();
    let s = report.summary(5);
    let svg = plot::svg(&s);
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    // 17 events, each alone in its bucket (36 hours in 15-minute bars), one tool.
    assert!(svg.contains("17 events per 15 min by tool"), "{svg}");
    let bars = svg.matches("fill=\"#E69F00\"").count();
    assert_eq!(bars, 17 + 1, "17 bars and the legend's swatch");
    assert!(svg.contains(">sipvicious</text>"));
    let empty = plot::svg(&Report::new().summary(5));
    assert!(empty.contains("No events"));
    // Times at both ends of what a timestamp can say draw without overflowing.
    let mut far = Report::new();
    for ts in ["1970-01-01T00:00:00Z", "2554-07-21T23:34:33Z"] {
        far.add_json(
            json!({"event_type": "sip_probe", "timestamp": ts, "src_ip": "192.0.2.1",
                   "dest_ip": "192.0.2.2"})
            .to_string()
            .as_bytes(),
        );
    }
    let s = far.summary(5);
    assert_eq!(s.events, 2);
    assert!(plot::svg(&s).contains("2 events per 28 d"));
    assert!(s.to_string().starts_with("2 events from 1 sources"));
}

/// Reports read events back from JSON text (files, Kafka): a number must come back as the very
/// number written, or a report over Kafka differs from the same report over a file in the last
/// digit (serde_json's `float_roundtrip`).
#[test]
fn numbers_come_back_from_json_text_unchanged() {
    for micros in (1u64..2_000_000).step_by(997) {
        let hours = (micros * 1000) as f64 / 3.6e12;
        let text = serde_json::to_string(&hours).unwrap();
        let back: f64 = serde_json::from_str(&text).unwrap();
        assert_eq!(back.to_bits(), hours.to_bits(), "{text}");
    }
}
