//! `sensor report` end to end, without privileges: the corpus captures through `sensor analyze`
//! into NDJSON, then the report (table, JSON and plot) over it; the first seed's situation as a
//! capture, reported with the seed's numbers; and the event schema document checked against
//! every field the corpus makes the sensor write.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::{Command, Output},
};

use sensor::{
    offline::analyze::{AnalyzeOptions, analyze},
    output::event::EventDetail,
    pipeline::PipelineOptions,
    report::{self, Report},
    rogue::TrackerConfig,
};
use sensor_tests::{corpus, frames::Frame, sensor_binary, temp_path};
use serde_json::Value;

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path = temp_path(name);
        std::fs::create_dir_all(&path).expect("temp dir");
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

fn run(args: &[&str], stdin: Option<&Path>) -> Output {
    let mut cmd = Command::new(sensor_binary());
    cmd.args(args);
    if let Some(path) = stdin {
        cmd.stdin(std::fs::File::open(path).expect("stdin file"));
    }
    let out = cmd.output().expect("run sensor");
    assert!(
        out.status.success(),
        "sensor {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn read_docs(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("NDJSON")
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON document per line"))
        .collect()
}

fn library_summary(path: &Path, top: usize) -> report::Summary {
    let mut report = Report::new();
    let file = std::fs::File::open(path).expect("NDJSON");
    report
        .read_ndjson(std::io::BufReader::new(file))
        .expect("read");
    report.summary(top)
}

/// One line, words separated by single spaces (the table wraps findings).
fn flat(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn report_over_the_corpus_analyzed_by_the_cli() {
    let dir = TempDir::new("corpus-report");
    let ndjson = dir.0.join("corpus.ndjson");
    let manifest = corpus::manifest();
    for capture in &manifest.captures {
        let pcap = corpus::dir().join(&capture.file);
        let out = run(
            &[
                "analyze",
                pcap.to_str().unwrap(),
                "-o",
                ndjson.to_str().unwrap(),
            ],
            None,
        );
        // Analyze prints the same report for each file on stderr.
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("Aggregation:"), "{stderr}");
    }
    let docs = read_docs(&ndjson);
    let probes = docs
        .iter()
        .filter(|d| d["event_type"] == "sip_probe")
        .count() as u64;
    let campaign_docs = docs
        .iter()
        .filter(|d| d["event_type"] == "campaign")
        .count();
    assert!(
        probes > 100 && campaign_docs > 10,
        "{probes} {campaign_docs}"
    );

    let svg = dir.0.join("corpus.svg");
    let table = run(
        &[
            "report",
            ndjson.to_str().unwrap(),
            "--plot",
            svg.to_str().unwrap(),
        ],
        None,
    );
    let text = String::from_utf8(table.stdout).expect("ASCII table");
    eprintln!("{text}");
    assert!(
        text.bytes()
            .all(|b| b == b'\n' || (0x20..0x7f).contains(&b))
    );
    assert!(
        text.starts_with(&format!("{probes} events from 4 sources")),
        "{text}"
    );

    // The JSON summary is the library's over the same file: one code path.
    let json: Value =
        serde_json::from_slice(&run(&["report", ndjson.to_str().unwrap(), "--json"], None).stdout)
            .expect("JSON summary");
    let expected = serde_json::to_value(library_summary(&ndjson, report::DEFAULT_TOP)).unwrap();
    assert_eq!(json, expected);
    assert_eq!(json["events"], probes);
    assert_eq!(json["other_documents"], docs.len() as u64 - probes);
    assert_eq!(json["unreadable"], 0);
    let tools: BTreeSet<&str> = json["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    for tool in [
        "sipvicious",
        "nmap",
        "zmap",
        "masscan",
        "sipsak",
        "sipp",
        "kamailio",
    ] {
        assert!(tools.contains(tool), "{tool} missing from {tools:?}");
    }
    // Findings name scanners, not benign traffic.
    let findings: Vec<&str> = json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["tool"].as_str().unwrap())
        .collect();
    assert!(findings.contains(&"sipvicious") && findings.contains(&"nmap"));
    assert!(!findings.contains(&"kamailio"), "{findings:?}");
    // Every svmap capture is one campaign of the svmap rule: OPTIONS, INVITE and REGISTER to
    // the darknet addresses, over IPv4 and IPv6.
    let svmap = json["campaigns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["key"] == "sipvicious-svmap-py3")
        .expect("svmap campaign");
    assert_eq!(svmap["packets"], 17);
    assert_eq!(svmap["methods"]["OPTIONS"], 9);
    assert_eq!(svmap["methods"]["INVITE"], 4);
    assert_eq!(svmap["methods"]["REGISTER"], 4);
    assert_eq!(svmap["sources"], 2, "198.51.100.2 and 2001:db8:1::2");
    assert_eq!(
        svmap["destinations"], 9,
        "203.0.113.48/29 and 2001:db8:2::50"
    );

    let plot = std::fs::read_to_string(&svg).expect("plot written");
    assert!(plot.starts_with("<svg") && plot.trim_end().ends_with("</svg>"));
    assert!(plot.contains(">sipvicious</text>") && plot.contains(">nmap</text>"));
    assert!(plot.matches("<rect").count() > 20, "bars drawn");
}

/// Ethernet frames of the first seed's situation: 17 svmap OPTIONS to one darknet address from
/// 17 sources over 36 hours, 7 with IP-ID 0 and DF, 3 from source ports above 5060.
fn seed_capture(path: &Path) {
    // pcap, little-endian, microseconds: magic, version 2.4, zone, accuracy, snaplen, Ethernet.
    let mut pcap = Vec::new();
    pcap.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    pcap.extend_from_slice(&2u16.to_le_bytes());
    pcap.extend_from_slice(&4u16.to_le_bytes());
    for word in [0u32, 0, 65_535, 1] {
        pcap.extend_from_slice(&word.to_le_bytes());
    }
    let t0: u32 = 1_257_033_600; // 2009-11-01T00:00:00Z
    for i in 0..17u32 {
        let modified = i % 2 == 1;
        let src_port = match i {
            2 => 5061,
            8 => 5062,
            13 => 5064,
            _ => 5060,
        };
        let payload = if modified {
            format!(
                "OPTIONS sip:100@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.168.1.9:{src_port};branch=z9hG4bK-17038962;rport\r\nContent-Length: 0\r\nFrom: \"sipsscuser\"<sip:100@192.168.1.9>;tag=77194458456158489721772408023096992174807017852\r\nAccept: application/sdp\r\nUser-Agent: sundayddr\r\nTo: \"sipscc\"<sip:100@192.168.1.9>\r\nContact: sip:100@192.168.1.9:{src_port}\r\nCSeq: 1 OPTIONS\r\nCall-ID: 124296019799750175018545983\r\nMax-Forwards: 70\r\n\r\n"
            )
        } else {
            format!(
                "OPTIONS sip:100@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{src_port};branch=z9hG4bK-1047900479;rport\r\nContent-Length: 0\r\nFrom: \"sipvicious\"<sip:100@1.1.1.1>;tag=34353131313634613133633401353835363538393133\r\nAccept: application/sdp\r\nUser-Agent: friendly-scanner\r\nTo: \"sipvicious\"<sip:100@1.1.1.1>\r\nContact: sip:100@127.0.0.1:{src_port}\r\nCSeq: 1 OPTIONS\r\nCall-ID: 965192181434457134540520\r\nMax-Forwards: 70\r\n\r\n"
            )
        };
        let zero_id = i % 5 < 2 && i < 16;
        let mut frame = Frame::udp(
            &format!("198.51.100.{}", 10 + i),
            "192.0.2.1",
            src_port,
            5060,
            payload.as_bytes(),
        );
        frame.ip_id = if zero_id { 0 } else { 0x1000 + i as u16 * 977 };
        frame.dont_fragment = zero_id || i % 4 != 3;
        frame.ttl = if i == 4 || i == 9 { 113 } else { 44 + i as u8 };
        let bytes = frame.build();
        let t = t0 + i * 36 * 3600 / 16;
        for word in [t, 0, bytes.len() as u32, bytes.len() as u32] {
            pcap.extend_from_slice(&word.to_le_bytes());
        }
        pcap.extend_from_slice(&bytes);
    }
    std::fs::write(path, pcap).expect("write the capture");
}

#[test]
fn seed_situation_comes_out_of_the_tool() {
    let dir = TempDir::new("seed-report");
    let pcap = dir.0.join("seed.pcap");
    let ndjson = dir.0.join("seed.ndjson");
    seed_capture(&pcap);
    run(
        &[
            "analyze",
            pcap.to_str().unwrap(),
            "-o",
            ndjson.to_str().unwrap(),
        ],
        None,
    );
    // From standard input, as an operator would pipe it.
    let out = run(&["report", "-"], Some(&ndjson));
    let text = String::from_utf8(out.stdout).expect("ASCII");
    eprintln!("{text}");
    let text = flat(&text);
    for expected in [
        "17 events from 17 sources over 36.0 hours (2009-11-01 00:00:00 to 2009-11-02 12:00:00 UTC), to 1 destination",
        "sipvicious: 17 packets over 36.0 hours from 17 unique sources",
        "one packet per source",
        "7 of 17 IPv4 sources sent IP-ID 0 with DF in every packet (7 packets): Linux's unconnected UDP on older kernels, so these are likely Linux; the other 10 are not shown to be non-Linux",
        "the 6.18 kernel measured for this sensor sends non-zero IDs",
        "3 of 17 sources bound a port above port 5060: the tool takes the next free port, so up to 5 concurrent scanner processes",
        "Via host tool_constant for 8 sources (e.g. 192.168.1.9)",
        "Via host loopback_unresolved for 9 sources (e.g. 127.0.0.1)",
        "initial TTL: 64 for 15 sources",
        "\"friendly-scanner\" (9), \"sundayddr\" (8)",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    let json: Value =
        serde_json::from_slice(&run(&["report", ndjson.to_str().unwrap(), "--json"], None).stdout)
            .expect("JSON");
    let sv = &json["findings"][0];
    assert_eq!(sv["tool"], "sipvicious");
    assert_eq!(sv["packets"], 17);
    assert_eq!(sv["sources"], 17);
    assert_eq!(sv["hours"], 36.0);
    assert_eq!(sv["zero_id_df_sources"], 7);
    assert_eq!(sv["ipv4_sources"], 17);
    assert_eq!(sv["max_processes"], 5);
}

#[test]
fn sampled_events_are_counted_and_the_report_says_so() {
    let dir = TempDir::new("sampled-report");
    let pcap = corpus::dir().join("svwar.pcap");
    let all = dir.0.join("all.ndjson");
    let sampled = dir.0.join("sampled.ndjson");
    let threads = dir.0.join("threads.ndjson");
    for (out, extra) in [
        (&all, &[][..]),
        (&sampled, &["--events-per-template", "1"][..]),
        // Sampling is per source and template: sharing sources out among analysts keeps it.
        (
            &threads,
            &["--events-per-template", "1", "--threads", "3"][..],
        ),
    ] {
        let mut args = vec![
            "analyze",
            pcap.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        run(&args, None);
    }
    let agent = |path: &Path| {
        let docs = read_docs(path);
        let stats = docs
            .iter()
            .find(|d| d["event_type"] == "stats")
            .expect("a stats document");
        let n = |k: &str| stats["agent"][k].as_u64().unwrap_or(0);
        let probes = docs
            .iter()
            .filter(|d| d["event_type"] == "sip_probe")
            .count() as u64;
        (
            n("records_read"),
            n("events_written"),
            n("events_sampled_out"),
            probes,
        )
    };
    let (read, written, sampled_out, probes) = agent(&all);
    assert_eq!((written, sampled_out, probes), (read, 0, read));
    let (read_s, written_s, sampled_out_s, probes_s) = agent(&sampled);
    assert_eq!(read_s, read);
    assert!(
        written_s < read && sampled_out_s > 0,
        "{written_s} {sampled_out_s}"
    );
    assert_eq!(written_s + sampled_out_s, read);
    assert_eq!(probes_s, written_s);
    assert_eq!(agent(&threads), agent(&sampled));
    for bad in ["0", "65", "x"] {
        let out = Command::new(sensor_binary())
            .args(["analyze", pcap.to_str().unwrap(), "--threads", bad])
            .output()
            .expect("run sensor");
        assert!(!out.status.success(), "--threads {bad} must fail");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--threads"), "--threads {bad}: {stderr}");
    }
    let text =
        flat(&String::from_utf8(run(&["report", sampled.to_str().unwrap()], None).stdout).unwrap());
    let expected =
        format!("({sampled_out_s} more events were counted by the sensor but not written");
    assert!(text.contains(&expected), "missing {expected:?} in:\n{text}");
    let json: Value =
        serde_json::from_slice(&run(&["report", sampled.to_str().unwrap(), "--json"], None).stdout)
            .expect("JSON");
    assert_eq!(json["sampled_out"], sampled_out_s);
    assert_eq!(json["events"], written_s);
}

/// `--event-detail lean` writes every template's first event compact and the rest lean, and
/// `sensor report` reads the same from either file: the lean event carries all it reads. The
/// same again from lean events written by three analysts (`--threads 3`): every source meets
/// its own history whichever analyst has it.
#[test]
fn lean_events_give_the_same_report_as_compact_ones() {
    let dir = TempDir::new("lean-report");
    let mut lean_events = 0;
    for capture in &corpus::manifest().captures {
        let pcap = corpus::dir().join(&capture.file);
        let compact = dir.0.join(format!("{}-compact.ndjson", capture.file));
        let lean = dir.0.join(format!("{}-lean.ndjson", capture.file));
        let threaded = dir.0.join(format!("{}-lean-threads.ndjson", capture.file));
        for (out, detail, threads) in [
            (&compact, "compact", "1"),
            (&lean, "lean", "1"),
            (&threaded, "lean", "3"),
        ] {
            run(
                &[
                    "analyze",
                    pcap.to_str().unwrap(),
                    "-o",
                    out.to_str().unwrap(),
                    "--event-detail",
                    detail,
                    "--threads",
                    threads,
                ],
                None,
            );
        }
        let report = |path: &Path| -> Value {
            serde_json::from_slice(&run(&["report", path.to_str().unwrap(), "--json"], None).stdout)
                .expect("JSON")
        };
        assert_eq!(report(&lean), report(&compact), "{}", capture.file);
        assert_eq!(report(&threaded), report(&lean), "{}", capture.file);

        let docs = read_docs(&lean);
        let probes: Vec<&Value> = docs
            .iter()
            .filter(|d| d["event_type"] == "sip_probe")
            .collect();
        let (lean_probes, examples): (Vec<&Value>, Vec<&Value>) =
            probes.iter().partition(|d| d["detail"] == "lean");
        let stats = docs.iter().find(|d| d["event_type"] == "stats").unwrap();
        assert_eq!(stats["agent"]["events_lean"], lean_probes.len());
        assert_eq!(stats["agent"]["events_written"], probes.len());
        // Each lean event's template has its compact example, written before it.
        let mut seen = BTreeSet::new();
        for d in &probes {
            let template = d["fingerprint"]["template_hash"].as_str().unwrap();
            if d["detail"] == "lean" {
                assert!(seen.contains(template), "{}: {d}", capture.file);
                assert!(d.get("sip").is_none_or(|s| s.get("header_order").is_none()));
            } else {
                assert!(d["sip"]["header_order"].is_array(), "{d}");
                seen.insert(template.to_string());
            }
        }
        assert_eq!(examples.len(), seen.len(), "one example per template");
        lean_events += lean_probes.len();
        assert!(
            std::fs::metadata(&lean).unwrap().len() <= std::fs::metadata(&compact).unwrap().len()
        );
    }
    assert!(lean_events > 100, "{lean_events}");
}

// ---- The schema document ----

/// Map-valued fields whose keys are data, with the placeholder the document uses.
const DATA_KEYED: &[(&str, &str)] = &[
    ("campaign.methods", "<method>"),
    ("campaign.protocols", "<proto>"),
    ("campaign.ip_id.sources", "<class>"),
    ("campaign.ip_id.packets", "<class>"),
    ("campaign.ttl.sources", "<family>"),
    ("campaign.ttl.packets", "<family>"),
];

fn collect_paths(value: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            let placeholder = DATA_KEYED
                .iter()
                .find(|(p, _)| *p == prefix)
                .map(|(_, h)| *h);
            for (key, v) in map {
                let name = placeholder.unwrap_or(key);
                let path = if prefix.is_empty() {
                    name.to_string()
                } else {
                    format!("{prefix}.{name}")
                };
                out.insert(path.clone());
                collect_paths(v, &path, out);
            }
        }
        Value::Array(items) => {
            for item in items {
                collect_paths(item, &format!("{prefix}[]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn event_schema_doc_names_every_field_the_sensor_writes() {
    let doc_path = xtask::workspace_root().join("docs/event-schema.md");
    let doc = std::fs::read_to_string(&doc_path).expect("docs/event-schema.md");
    let dir = TempDir::new("schema");
    let mut paths: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let manifest = corpus::manifest();
    // Every form of the event: lean, the default compact one, and full.
    for (capture, detail) in manifest
        .captures
        .iter()
        .flat_map(|c| [EventDetail::Lean, EventDetail::Compact, EventDetail::Full].map(|e| (c, e)))
    {
        let out = dir.0.join(format!("{}-{detail:?}.ndjson", capture.file));
        // Both directions and the rogue tracker: responses, sip_server and rogue_stats too.
        let options = AnalyzeOptions {
            ports: Default::default(),
            match_source_port: true,
            prefix_len: sensor_common::DEFAULT_PREFIX_LEN,
            pipeline: PipelineOptions {
                outputs: sensor::output::OutputOptions::ndjson_file(&out),
                detect_rogue: Some(TrackerConfig::default()),
                detail,
                ..PipelineOptions::default()
            },
            metrics_file: None,
        };
        analyze(&corpus::dir().join(&capture.file), &options).expect("analyze");
        for d in read_docs(&out) {
            let event_type = d["event_type"].as_str().expect("event_type").to_string();
            collect_paths(&d, "", paths.entry(event_type).or_default());
        }
    }
    for event_type in [
        "sip_probe",
        "campaign",
        "stats",
        "sip_server",
        "rogue_stats",
    ] {
        assert!(
            paths.contains_key(event_type),
            "the corpus wrote no {event_type} document"
        );
    }
    if std::env::var_os("SENSOR_SCHEMA_PATHS").is_some() {
        for (event_type, fields) in &paths {
            for f in fields {
                println!("{event_type} {f}");
            }
        }
    }
    let mut missing = Vec::new();
    for (event_type, fields) in &paths {
        assert!(
            doc.contains(&format!("`{event_type}`")),
            "event type {event_type} not in the document"
        );
        for field in fields {
            if !doc.contains(&format!("`{field}`")) {
                missing.push(format!("{event_type}: `{field}`"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "fields written but not in {}:\n{}",
        doc_path.display(),
        missing.join("\n")
    );
    assert!(doc.contains("`schema_version`") && doc.contains("schema_version: 1"));
}
