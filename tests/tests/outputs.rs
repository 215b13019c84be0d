//! Every output at once over the corpus of real scanner captures: NDJSON, pcapng and the metrics
//! exposition from one pipeline run; Debian's tshark reads the pcapng back and decodes what the
//! events say, and Debian's promtool accepts the metrics. Needs no privileges.

use std::{
    collections::BTreeMap,
    io::Write as _,
    path::Path,
    process::{Command, Stdio},
};

use sensor::{
    capture::PortSet,
    counters::KernelCounters,
    offline::{FrameContext, extract},
    output::{
        Destination, InterfaceNames, OutputOptions, Rotation,
        metrics::{Exposition, write_kernel},
        pcapng::frame_from_record,
    },
    pipeline::{Pipeline, PipelineOptions},
    record::Record,
};
use sensor_common::{Counter, MatchAction, SensorConfig};
use sensor_tests::{agent_run::read_ndjson, corpus, temp_path};

/// Checks `text` with `promtool check metrics`; returns its complaints.
pub fn promtool(text: &str) -> Result<(), String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool (Debian package prometheus; cargo xtask setup installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// tshark's view of each packet: the named fields, tab-separated, first occurrence.
fn tshark_fields(file: &Path, fields: &[&str]) -> Vec<BTreeMap<String, String>> {
    let mut command = Command::new("tshark");
    command
        .arg("-r")
        .arg(file)
        .args(["-o", "ip.check_checksum:TRUE"])
        .args(["-o", "udp.check_checksum:TRUE"])
        .args(["-o", "tcp.check_checksum:TRUE"])
        // nmap's UDP probe to 5060 is an RPC call, and tshark's RPC dissector then claims every
        // later packet between the same addresses and ports, which in a file merging several
        // captures includes sipp's call.
        .args(["--disable-protocol", "rpc"])
        .args(["-T", "fields", "-E", "separator=/t", "-E", "occurrence=f"]);
    for f in fields {
        command.args(["-e", f]);
    }
    let out = command
        .output()
        .expect("run tshark (cargo xtask setup installs it)");
    assert!(
        out.status.success(),
        "tshark -r {} failed: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            fields
                .iter()
                .map(|f| f.to_string())
                .zip(line.split('\t').map(str::to_string))
                .collect()
        })
        .collect()
}

#[test]
fn every_output_at_once_over_the_corpus() {
    let ndjson = temp_path("corpus.ndjson");
    let pcapng = temp_path("corpus.pcapng");
    let mut pipeline = Pipeline::new(&PipelineOptions {
        rules: None,
        outputs: OutputOptions {
            ndjson: Some(Destination::File(ndjson.clone())),
            pcapng: Some(Destination::File(pcapng.clone())),
            rotation: Rotation::default(),
            interface_names: InterfaceNames::Capture("corpus".into()),
        },
        ..Default::default()
    })
    .expect("pipeline");

    // The scanners' requests and the corpus responder's answers: both ends of port 5060.
    let ports: PortSet = "5060,5061".parse().unwrap();
    let config = SensorConfig::new(MatchAction::Drop, true, 1024);
    let mut kernel = KernelCounters::default();
    let mut files: Vec<String> = corpus::manifest()
        .captures
        .into_iter()
        .map(|c| c.file)
        .collect();
    files.push("sipsak.pcapng".into());
    // What each record's frame was, to compare the rebuilt packets with.
    let mut originals: Vec<Vec<u8>> = Vec::new();
    for (index, file) in files.iter().enumerate() {
        for frame in corpus::frames(file) {
            kernel.add(Counter::FramesSeen, 1);
            let context = FrameContext {
                timestamp_ns: frame.timestamp_ns,
                // One interface per capture file: the pcapng gets an interface block for each.
                ifindex: index as u32,
                rx_queue: 0,
            };
            match extract(&frame.bytes, frame.wire_len, &config, &ports, &context) {
                Ok(record) => {
                    kernel.add(Counter::Matched, 1);
                    kernel.add(Counter::Emitted, 1);
                    pipeline.counters.records_read += 1;
                    pipeline.record(Record::new(&record).unwrap(), frame.timestamp_ns);
                    originals.push(frame.bytes);
                }
                Err(outcome) => kernel.add(outcome, 1),
            }
        }
    }
    pipeline.finish(&kernel);
    let mut exposition = Exposition::new();
    write_kernel(&mut exposition, &kernel, None);
    pipeline.write_metrics(&mut exposition);
    let metrics = exposition.into_text();

    // NDJSON: one event per record, then the stats document with every output's counters.
    let docs = read_ndjson(&ndjson);
    let events: Vec<&serde_json::Value> = docs
        .iter()
        .filter(|d| d["event_type"] == "sip_probe")
        .collect();
    let records = originals.len();
    assert!(records > 200, "the corpus gives {records} records");
    assert_eq!(events.len(), records);
    let stats = docs.last().unwrap();
    assert_eq!(stats["event_type"], "stats");
    assert_eq!(stats["outputs"]["pcapng"]["written"], records as u64);
    assert_eq!(stats["outputs"]["pcapng"]["dropped"], 0);
    assert_eq!(stats["outputs"]["ndjson"]["dropped"], 0);
    assert_eq!(pipeline.counters.output_errors, 0);

    // pcapng: tshark opens it, and decodes in each packet what its event says.
    let fields = [
        "frame.number",
        "frame.len",
        "frame.cap_len",
        "frame.interface_name",
        "frame.comment",
        "ip.src",
        "ip.dst",
        "ipv6.src",
        "ipv6.dst",
        "ip.ttl",
        "ipv6.hlim",
        "ip.id",
        "udp.srcport",
        "udp.dstport",
        "tcp.srcport",
        "tcp.dstport",
        "sip.Method",
        "sip.Status-Code",
        "ip.checksum.status",
        "udp.checksum.status",
        "tcp.checksum.status",
    ];
    let packets = tshark_fields(&pcapng, &fields);
    assert_eq!(packets.len(), records, "tshark reads every packet");
    let mut methods_compared = 0;
    let mut checksums_good = 0;
    let mut tools: BTreeMap<String, u64> = BTreeMap::new();
    for (i, (event, packet)) in events.iter().zip(&packets).enumerate() {
        let at = format!("packet {} ({})", i + 1, event["payload"]["printable"]);
        let get = |f: &str| packet.get(f).map(String::as_str).unwrap_or("");
        let v4 = event["ip"]["version"] == 4;
        let (src, dst, ttl) = if v4 {
            (get("ip.src"), get("ip.dst"), get("ip.ttl"))
        } else {
            (get("ipv6.src"), get("ipv6.dst"), get("ipv6.hlim"))
        };
        assert_eq!(src, event["src_ip"].as_str().unwrap(), "{at}");
        assert_eq!(dst, event["dest_ip"].as_str().unwrap(), "{at}");
        assert_eq!(ttl, event["ip"]["ttl"].to_string(), "{at}");
        if v4 {
            let id = u64::from_str_radix(get("ip.id").trim_start_matches("0x"), 16).unwrap();
            assert_eq!(id, event["ip"]["id"].as_u64().unwrap(), "{at}");
        }
        let l4 = if event["proto"] == "UDP" {
            "udp"
        } else {
            "tcp"
        };
        assert_eq!(
            get(&format!("{l4}.srcport")),
            event["src_port"].to_string(),
            "{at}"
        );
        assert_eq!(
            get(&format!("{l4}.dstport")),
            event["dest_port"].to_string(),
            "{at}"
        );
        // The original length is the frame's; the capture holds the rebuilt headers and the
        // captured payload.
        assert_eq!(get("frame.len"), event["frame_len"].to_string(), "{at}");
        let index: usize = event["ifindex"].as_u64().unwrap() as usize;
        assert_eq!(
            get("frame.interface_name"),
            format!("corpus#{index}"),
            "{at}"
        );
        let tool = event["fingerprint"]["tool"].as_str().unwrap();
        assert_eq!(
            get("frame.comment"),
            format!(
                "fingerprint: tool={tool} variant={} rule={} category={} confidence={:.2}",
                event["fingerprint"]["variant"].as_str().unwrap_or("-"),
                event["fingerprint"]["rule"].as_str().unwrap(),
                event["fingerprint"]["category"].as_str().unwrap(),
                event["fingerprint"]["confidence"].as_f64().unwrap(),
            ),
            "{at}"
        );
        *tools.entry(tool.to_string()).or_default() += 1;
        if let Some(method) = event["sip"]["method"].as_str() {
            // tshark dissects SIP where the payload is a whole SIP message it recognises.
            if !get("sip.Method").is_empty() {
                assert_eq!(get("sip.Method"), method, "{at}");
                methods_compared += 1;
            }
        }
        if let Some(code) = event["sip"]["status_code"].as_u64()
            && !get("sip.Status-Code").is_empty()
        {
            assert_eq!(get("sip.Status-Code"), code.to_string(), "{at}");
        }
        // Checksums: the IPv4 header's always; UDP/TCP whenever the whole payload was captured
        // (1 is tshark's "Good").
        if v4 {
            assert_eq!(get("ip.checksum.status"), "1", "{at}");
        }
        if event["payload"]["truncated"] == false {
            assert_eq!(get(&format!("{l4}.checksum.status")), "1", "{at}");
            checksums_good += 1;
        }
    }
    assert!(
        methods_compared * 10
            >= events
                .iter()
                .filter(|e| e["sip"]["method"].is_string())
                .count()
                * 9,
        "tshark decoded the SIP method of only {methods_compared} packets"
    );
    assert_eq!(
        checksums_good, records,
        "the corpus's payloads are all whole"
    );

    // The rebuilt packets are the original IP packets byte for byte where the original had no
    // IP options or extension headers (the record does not keep them). The UDP/TCP checksum is
    // left out of the comparison: these captures were taken on the sending host, where checksum
    // offload leaves a partial sum in the field; tshark found the rebuilt ones good above.
    let mut identical = 0;
    for (event, original) in events.iter().zip(&originals) {
        let vlan = event["vlan"].as_array().map_or(0, Vec::len) * 4;
        let ip = &original[14 + vlan..];
        let plain = if event["ip"]["version"] == 4 {
            ip[0] == 0x45
        } else {
            ip[6] == 6 || ip[6] == 17
        };
        if !plain {
            continue;
        }
        let ip_len = if event["ip"]["version"] == 4 {
            usize::from(u16::from_be_bytes([ip[2], ip[3]]))
        } else {
            40 + usize::from(u16::from_be_bytes([ip[4], ip[5]]))
        };
        let mut rebuilt = Vec::new();
        let mut record = Box::new(sensor_common::CaptureRecord::zeroed());
        // Rebuild from the record the pipeline saw: extract once more.
        let context = FrameContext {
            timestamp_ns: 0,
            ifindex: 0,
            rx_queue: 0,
        };
        *record = extract(original, original.len() as u32, &config, &ports, &context).unwrap();
        frame_from_record(&Record::new(&record).unwrap(), &mut rebuilt);
        let mut original_ip = ip[..ip_len].to_vec();
        let mut rebuilt_ip = rebuilt[14 + vlan..].to_vec();
        let ip_header = if event["ip"]["version"] == 4 { 20 } else { 40 };
        let checksum_at = ip_header + if event["proto"] == "UDP" { 6 } else { 16 };
        for packet in [&mut original_ip, &mut rebuilt_ip] {
            if packet.len() >= checksum_at + 2 {
                packet[checksum_at..checksum_at + 2].fill(0);
            }
        }
        assert_eq!(
            rebuilt_ip, original_ip,
            "rebuilt packet differs from the original: {}",
            event["payload"]["printable"]
        );
        identical += 1;
    }
    assert!(identical * 10 >= records * 9, "{identical} of {records}");

    // Metrics: promtool accepts them, and they count what the events say.
    promtool(&metrics).unwrap_or_else(|e| panic!("promtool: {e}\n{metrics}"));
    for (tool, n) in &tools {
        let line = format!("sensor_events_by_tool_total{{tool=\"{tool}\"}} {n}\n");
        assert!(metrics.contains(&line), "{line}");
    }
    assert!(metrics.contains(&format!("sensor_events_total {records}\n")));
    assert!(metrics.contains(&format!(
        "sensor_output_written_total{{output=\"pcapng\"}} {records}\n"
    )));
    assert!(metrics.contains(&format!("sensor_kernel_emitted_total {records}\n")));
    // Every record went through the classification cache, once.
    let value = |name: &str| -> u64 {
        let prefix = format!("{name} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{metrics}"))
    };
    let (hits, misses, unadmitted, bypassed) = (
        value("sensor_fingerprint_cache_hits_total"),
        value("sensor_fingerprint_cache_misses_total"),
        value("sensor_fingerprint_cache_unadmitted_total"),
        value("sensor_fingerprint_cache_bypassed_total"),
    );
    assert_eq!(hits + misses + bypassed, records as u64);
    assert!(hits > 0 && unadmitted > 0 && unadmitted <= misses);
    eprintln!(
        "corpus: {} files, {records} records; tshark compared {} packets ({methods_compared} SIP \
         methods, {checksums_good} L4 checksums good), {identical} byte-identical to the original; \
         promtool accepted {} metric lines; tools {tools:?}",
        files.len(),
        packets.len(),
        metrics.lines().filter(|l| !l.starts_with('#')).count()
    );
    let _ = std::fs::remove_file(&ndjson);
    let _ = std::fs::remove_file(&pcapng);
}
