//! End to end on a veth pair between two network namespaces: the real XDP program attached in
//! native mode, real kernel sockets and real scanners sending from the peer namespace.

use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr},
    process::Stdio,
    sync::mpsc,
    time::Duration,
};

use sensor::{
    agent::{RunOptions, RunSummary},
    capture::AttachMode,
};
use sensor_common::Counter;
use sensor_tests::{
    agent_run::{read_ndjson, run_agent_in},
    temp_path,
};
use xtask::{lab, lab::Lab, traffic};

/// Runs the agent in the lab's darknet namespace while `send` runs in another thread; the agent
/// stops 300 ms after `send` returns. Returns the summary and the NDJSON lines written.
fn run_agent_with(
    lab: &Lab,
    options: RunOptions,
    send: impl FnOnce() + Send,
) -> (RunSummary, Vec<serde_json::Value>) {
    run_agent_in(&lab.dark_ns, options, Duration::from_millis(300), send)
}

fn probes(docs: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    docs.iter()
        .filter(|d| d["event_type"] == "sip_probe")
        .collect()
}

/// The sequence number the lab's sender puts in a request's Call-ID (`lab-SEQ@...`).
fn lab_sequence(payload: &str) -> u32 {
    payload
        .split("Call-ID: lab-")
        .nth(1)
        .and_then(|s| s.split('@').next())
        .and_then(|s| s.parse().ok())
        .expect("Call-ID carries the sequence number")
}

#[test]
fn ten_thousand_datagrams_all_arrive_as_records() {
    const COUNT: u32 = 10_000;
    let lab = Lab::create("e2e").expect("lab");
    let target = SocketAddr::new(IpAddr::V4(lab::darknet_v4(50)), 5060);
    let (summary, docs) = run_agent_with(&lab, RunOptions::new(&lab.dark_if), || {
        let sent = traffic::udp_sip_burst(&lab, target, COUNT).expect("send");
        assert_eq!(sent, COUNT);
    });
    assert_eq!(summary.mode, AttachMode::Native);

    // Every datagram arrived, once, with its payload.
    let probes = probes(&docs);
    let mut seqs = BTreeSet::new();
    for p in &probes {
        assert_eq!(p["dest_ip"], "203.0.113.50");
        assert_eq!(p["dest_port"], 5060);
        assert_eq!(p["proto"], "UDP");
        let text = p["payload"]["printable"].as_str().unwrap();
        assert!(
            text.starts_with("OPTIONS sip:100@203.0.113.50 SIP/2.0\\r\\n"),
            "{text}"
        );
        assert_eq!(p["payload"]["truncated"], false);
        let seq = lab_sequence(text);
        assert!(seqs.insert(seq), "sequence {seq} seen twice");
    }
    assert_eq!(seqs.len() as u32, COUNT);
    assert_eq!(seqs.last(), Some(&(COUNT - 1)));

    // The counters reconcile: seen = matched + not matched, matched = emitted + lost.
    let k = summary.kernel;
    k.check().expect("kernel counters reconcile");
    assert_eq!(k.get(Counter::Matched), u64::from(COUNT));
    assert_eq!(k.get(Counter::Emitted), u64::from(COUNT));
    assert_eq!(k.get(Counter::RingFull), 0);
    assert_eq!(
        k.get(Counter::FramesSeen),
        k.get(Counter::Matched) + k.not_matched()
    );
    assert_eq!(summary.agent.records_read, u64::from(COUNT));
    assert_eq!(summary.agent.events_written, u64::from(COUNT));
    assert_eq!(summary.agent.records_undecodable, 0);

    // The final stats document says the same.
    let stats = docs.last().unwrap();
    assert_eq!(stats["event_type"], "stats");
    assert_eq!(stats["reconciled"], true);
    assert_eq!(stats["kernel"]["emitted"], u64::from(COUNT));
    // The aggregator saw every event: one source, its campaign written at exit, the report.
    assert_eq!(stats["aggregate"]["events"], u64::from(COUNT));
    assert_eq!(stats["aggregate"]["sources_tracked"], 1);
    let campaigns: Vec<_> = docs
        .iter()
        .filter(|d| d["event_type"] == "campaign")
        .collect();
    assert_eq!(campaigns.len(), 1, "one template, one campaign");
    assert_eq!(campaigns[0]["campaign"]["packets"], u64::from(COUNT));
    assert_eq!(campaigns[0]["campaign"]["state"], "open");
    assert_eq!(summary.report.events, u64::from(COUNT));
    assert_eq!(summary.report.sources, 1);
    assert!(!lab.dark_has_xdp().unwrap(), "detached after the run");
}

#[test]
fn batched_wakeups_still_deliver_every_record() {
    // A wakeup threshold larger than the whole burst: the kernel never wakes the agent, and the
    // agent's drain timer must still deliver everything.
    const COUNT: u32 = 500;
    let lab = Lab::create("wake").expect("lab");
    let target = SocketAddr::new(IpAddr::V4(lab::darknet_v4(51)), 5060);
    let mut options = RunOptions::new(&lab.dark_if);
    options.wakeup_bytes = 4 << 20;
    let (summary, docs) = run_agent_with(&lab, options, || {
        traffic::udp_sip_burst(&lab, target, COUNT).expect("send");
    });
    assert_eq!(probes(&docs).len() as u32, COUNT);
    assert_eq!(summary.kernel.get(Counter::Emitted), u64::from(COUNT));
    summary.kernel.check().expect("counters reconcile");
}

#[test]
fn svmap_options_arrive_with_their_payload() {
    let lab = Lab::create("svm").expect("lab");
    let target = lab::darknet_v4(60).to_string();
    let (summary, docs) = run_agent_with(&lab, RunOptions::new(&lab.dark_if), || {
        let status = lab
            .in_scan("sipvicious_svmap")
            .args([target.as_str(), "--timeout", "0.5"])
            .stdout(Stdio::null())
            .status()
            .expect("run sipvicious_svmap (cargo xtask setup installs it)");
        // svmap exits 30 when nothing answered, which is what a darknet does.
        assert!(
            matches!(status.code(), Some(0) | Some(30)),
            "svmap exited with {status}"
        );
    });
    let probes = probes(&docs);
    assert!(!probes.is_empty(), "svmap's OPTIONS arrived");
    for p in &probes {
        assert_eq!(p["dest_ip"], target.as_str());
        assert_eq!(p["src_ip"], lab::SCAN_V4.to_string());
        let text = p["payload"]["printable"].as_str().unwrap();
        assert!(
            text.starts_with(&format!("OPTIONS sip:100@{target} SIP/2.0\\r\\n")),
            "{text}"
        );
        assert!(
            text.contains("User-Agent: friendly-scanner\\r\\n"),
            "{text}"
        );
        assert!(text.ends_with("Content-Length: 0\\r\\n\\r\\n"), "{text}");
        assert_eq!(p["payload"]["truncated"], false);
        // svmap binds 5060 first; sendto() on an unconnected socket sets DF on Linux.
        assert_eq!(p["src_port"], 5060);
        assert_eq!(p["ip"]["df"], true);
    }
    summary.kernel.check().expect("counters reconcile");
    assert_eq!(summary.kernel.get(Counter::Emitted), probes.len() as u64);
}

#[test]
fn generic_and_auto_modes_report_what_they_got() {
    let lab = Lab::create("mode").expect("lab");
    let target = SocketAddr::new(IpAddr::V4(lab::darknet_v4(70)), 5060);
    let mut options = RunOptions::new(&lab.dark_if);
    options.mode = AttachMode::Generic;
    let (summary, docs) = run_agent_with(&lab, options, || {
        traffic::udp_sip_burst(&lab, target, 50).unwrap();
    });
    assert_eq!(summary.mode, AttachMode::Generic);
    assert_eq!(probes(&docs).len(), 50);

    let mut options = RunOptions::new(&lab.dark_if);
    options.mode = AttachMode::Auto;
    let (summary, _) = run_agent_with(&lab, options, || {});
    assert_eq!(summary.mode, AttachMode::Native, "veth supports native XDP");
}

#[test]
fn sensor_binary_detaches_on_sigint_and_prints_counters() {
    let lab = Lab::create("bin").expect("lab");
    let output = temp_path("bin.ndjson");
    let mut child = lab
        .in_dark(sensor_tests::sensor_binary().to_str().unwrap())
        .args(["run", "--iface", &lab.dark_if, "--output"])
        .arg(&output)
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sensor");
    // Wait for the attach message.
    let stderr = child.stderr.take().unwrap();
    let (line_tx, line_rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead as _;
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = line_tx.send(line.clone());
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let first = line_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("sensor speaks");
    assert!(
        first.contains("attached to") && first.contains("native mode"),
        "{first}"
    );
    assert!(lab.dark_has_xdp().unwrap(), "attached while running");
    traffic::udp_sip_burst(
        &lab,
        SocketAddr::new(IpAddr::V4(lab::darknet_v4(80)), 5060),
        20,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    let stderr = reader.join().unwrap();
    assert!(status.success(), "exit 0 on SIGINT: {status}\n{stderr}");
    assert!(
        stderr.contains("kernel.emitted                            20"),
        "{stderr}"
    );
    assert!(stderr.contains("counters reconcile"), "{stderr}");
    assert!(!lab.dark_has_xdp().unwrap(), "detached on exit");
    let docs = read_ndjson(&output);
    assert_eq!(probes(&docs).len(), 20);
    let _ = std::fs::remove_file(&output);
}

#[test]
fn errors_are_clear_and_leave_nothing_attached() {
    let lab = Lab::create("err").expect("lab");
    let bin = sensor_tests::sensor_binary();
    let run = |args: &[&str]| {
        let out = lab
            .in_dark(bin.to_str().unwrap())
            .args(args)
            .output()
            .unwrap();
        (out.status, String::from_utf8_lossy(&out.stderr).to_string())
    };
    let (status, err) = run(&["run", "--iface", "nosuch0"]);
    assert!(!status.success());
    assert!(err.contains("no such network interface `nosuch0`"), "{err}");

    // Loopback has no native XDP: native must fail and say what to do, never fall back.
    let (status, err) = run(&["run", "--iface", "lo", "--xdp-mode", "native"]);
    assert!(!status.success());
    assert!(err.contains("does not support XDP in native mode"), "{err}");
    assert!(err.contains("--xdp-mode generic"), "{err}");

    for (args, needle) in [
        (
            vec!["run", "--iface", &lab.dark_if, "--ports", "0"],
            "bad port `0`",
        ),
        (
            vec!["run", "--iface", &lab.dark_if, "--ports", "9-1"],
            "bad port range",
        ),
        (
            vec!["run", "--iface", &lab.dark_if, "--prefix-len", "0"],
            "prefix-len",
        ),
        (
            vec!["run", "--iface", &lab.dark_if, "--prefix-len", "4096"],
            "prefix-len",
        ),
        (
            vec!["run", "--iface", &lab.dark_if, "--xdp-mode", "fast"],
            "xdp-mode",
        ),
        (
            vec!["run", "--iface", &lab.dark_if, "--ring-bytes", "1000"],
            "power of two",
        ),
        (vec!["run"], "--iface"),
    ] {
        let (status, err) = run(&args);
        assert!(!status.success(), "{args:?} must fail");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    assert!(
        !lab.dark_has_xdp().unwrap(),
        "nothing attached after errors"
    );
}

/// The documents of `kind`, without what differs between a live run and an analysis of its
/// pcapng (the time written, the interface).
fn comparable(docs: &[serde_json::Value], kind: &str) -> Vec<serde_json::Value> {
    docs.iter()
        .filter(|d| d["event_type"] == kind)
        .map(|d| {
            let mut d = d.clone();
            let map = d.as_object_mut().unwrap();
            for key in ["timestamp", "ifindex", "rx_queue"] {
                map.remove(key);
            }
            d
        })
        .collect()
}

/// Threads of this process named as the agent names its analysts.
fn analyst_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("analyst-"))
        .count()
}

#[test]
fn analyst_threads_write_what_one_thread_writes_live() {
    const SOURCES: u8 = 6;
    const PER_SOURCE: u32 = 200;
    const TOTAL: usize = SOURCES as usize * PER_SOURCE as usize;
    let lab = Lab::create("thr").expect("lab");
    let sources: Vec<IpAddr> = (0..SOURCES)
        .map(|i| IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 20 + i)))
        .collect();
    for &source in &sources {
        lab.add_scan_address(source).expect("address the scanner");
    }
    let target = SocketAddr::new(IpAddr::V4(lab::darknet_v4(70)), 5060);
    let pcapng = temp_path("threads.pcapng");
    let mut options = RunOptions::new(&lab.dark_if);
    options.threads = 3;
    options.outputs.pcapng = Some(sensor::output::Destination::File(pcapng.clone()));
    let (written_tx, written_rx) = mpsc::channel();
    let (summary, docs) = sensor_tests::agent_run::run_agent_watched(
        &lab.dark_ns,
        options,
        Duration::from_millis(300),
        |events| {
            let sent =
                traffic::udp_sip_from_sources(&lab, target, &sources, PER_SOURCE).expect("send");
            assert_eq!(sent as usize, TOTAL);
            // The analysts' last rounds are written while the agent runs, not at its stop.
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            let mut written = 0;
            while std::time::Instant::now() < deadline {
                written = std::fs::read_to_string(events)
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| l.contains("\"sip_probe\""))
                    .count();
                if written == TOTAL {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            written_tx.send((written, analyst_threads())).unwrap();
        },
    );
    let (written, analysts) = written_rx.recv().unwrap();
    assert_eq!(written, TOTAL, "written before the stop");
    assert_eq!(analysts, 3, "the analysts ran on threads of their own");
    summary.kernel.check().expect("kernel counters reconcile");
    assert_eq!(summary.kernel.get(Counter::Emitted), TOTAL as u64);
    assert_eq!(summary.agent.records_read, TOTAL as u64);
    assert_eq!(summary.agent.events_written, TOTAL as u64);
    let a = &summary.agent;
    assert_eq!(
        a.fingerprint_cache_hits + a.fingerprint_cache_misses + a.fingerprint_cache_bypassed,
        TOTAL as u64,
        "every analyst's cache counters are summed: {a:?}"
    );

    // Each source's datagrams in the order sent.
    let live = comparable(&docs, "sip_probe");
    assert_eq!(live.len(), TOTAL);
    let mut next = std::collections::BTreeMap::new();
    for p in &live {
        let seq = lab_sequence(p["payload"]["printable"].as_str().unwrap());
        let expected = next.entry(p["src_ip"].to_string()).or_insert(0);
        assert_eq!(seq, *expected, "{}", p["src_ip"]);
        *expected += 1;
    }
    assert_eq!(next.len(), usize::from(SOURCES));

    // The same records analysed on one thread, from the pcapng the live run wrote: the same
    // events (IP-ID inferences, processes, attribution), campaigns and report.
    let offline_events = temp_path("threads-offline.ndjson");
    let analyzed = sensor::offline::analyze::analyze(
        &pcapng,
        &sensor::offline::analyze::AnalyzeOptions {
            ports: sensor::capture::PortSet::default(),
            match_source_port: false,
            prefix_len: sensor_common::DEFAULT_PREFIX_LEN,
            pipeline: sensor::pipeline::PipelineOptions {
                outputs: sensor::output::OutputOptions::ndjson_file(&offline_events),
                threads: 1,
                ..Default::default()
            },
            metrics_file: None,
        },
    )
    .expect("analyze the live run's pcapng");
    let offline = read_ndjson(&offline_events);
    let _ = std::fs::remove_file(&offline_events);
    let _ = std::fs::remove_file(&pcapng);
    assert_eq!(analyzed.agent.events_written, TOTAL as u64);
    for kind in ["sip_probe", "campaign"] {
        let (x, y) = (comparable(&docs, kind), comparable(&offline, kind));
        assert_eq!(x.len(), y.len(), "{kind}");
        for (i, (x, y)) in x.iter().zip(&y).enumerate() {
            assert_eq!(x, y, "{kind} {i}");
        }
    }
    assert_eq!(summary.report.to_string(), analyzed.report.to_string());
    assert!(!lab.dark_has_xdp().unwrap(), "detached after the run");
}
