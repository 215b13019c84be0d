//! Rogue SIP daemons, against real peers in network namespaces, actively and passively.
//!
//! The lab's darknet namespace holds five servers, one address each, all on port 5060:
//!
//! | address      | peer                                                  | verdict       |
//! |--------------|-------------------------------------------------------|---------------|
//! | 203.0.113.10 | kamailio answering OPTIONS 200, INVITE 404, REG 401   | genuine       |
//! | 203.0.113.11 | netcat listening on TCP and UDP, silent (the seed)    | rogue         |
//! | 203.0.113.12 | socat answering every request with an HTTP error      | rogue         |
//! | 203.0.113.13 | nothing: the port is closed                           | not_listening |
//! | 203.0.113.14 | nothing reachable: nftables drops its packets         | filtered      |
//!
//! The probe runs as a library in the scanner namespace. The sensor runs on a mirror port (see
//! `xtask::mirror`): tc copies both directions of the darknet veth to a veth in a tap namespace,
//! where the real XDP program, matching source ports too, captures the same exchanges and feeds
//! the passive tracker. The servers get their packets untouched by the sensor.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    os::unix::{fs::PermissionsExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use sensor::{
    agent::RunOptions,
    probe::{self, Outcome, ProbeOptions, Target, TargetReport, Transports},
    record::Transport,
    rogue::{RogueReason, TrackerConfig, TransportVerdict, Verdict},
};
use sensor_common::MatchAction;
use sensor_tests::{agent_run::run_agent_in, temp_path};
use xtask::{lab::Lab, mirror::Mirror};

const GENUINE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const SILENT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 11);
const GARBAGE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 12);
const CLOSED: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 13);
const DROPPED: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 14);

const PEERS: [(Ipv4Addr, &str, Verdict); 5] = [
    (GENUINE, "kamailio", Verdict::Genuine),
    (SILENT, "silent netcat", Verdict::Rogue),
    (GARBAGE, "garbage socat", Verdict::Rogue),
    (CLOSED, "closed port", Verdict::NotListening),
    (DROPPED, "dropped by nftables", Verdict::Filtered),
];

/// A minimal kamailio: stateless answers, specific errors for what it will not do.
const KAMAILIO_CFG: &str = r#"#!KAMAILIO
debug=1
log_stderror=yes
children=1
tcp_children=1
disable_tcp=no
auto_aliases=no
listen=udp:203.0.113.10:5060
listen=tcp:203.0.113.10:5060
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "textops.so"
request_route {
    if (is_method("ACK")) { exit; }
    if (is_method("OPTIONS")) { sl_send_reply("200", "OK"); exit; }
    if (is_method("REGISTER")) { sl_send_reply("401", "Unauthorized"); exit; }
    if (is_method("INVITE")) { sl_send_reply("404", "Not Found"); exit; }
    sl_send_reply("405", "Method Not Allowed");
}
"#;

/// What the garbage peer says to anything: another protocol, with a terminal escape in it.
const GARBAGE_SCRIPT: &str = "#!/bin/sh\n\
printf 'HTTP/1.0 400 Bad Request\\r\\nServer: \\033[2Jrogue\\r\\n\\r\\n'\n\
sleep 3\n";

const NFT_RULES: &str = "table inet rogue_lab {\n\
  chain input {\n\
    type filter hook input priority 0; policy accept;\n\
    ip daddr 203.0.113.14 drop\n\
  }\n\
}\n";

/// The peer processes; each in its own process group, killed (group and all) on drop.
struct Peers {
    children: Vec<Child>,
    dir: PathBuf,
}

impl Peers {
    fn start(lab: &Lab) -> Self {
        let dir = temp_path("peers");
        fs::create_dir_all(&dir).expect("peer directory");
        let mut peers = Peers {
            children: Vec::new(),
            dir,
        };
        for host in [GENUINE, SILENT, GARBAGE, CLOSED, DROPPED] {
            run(lab
                .in_dark("ip")
                .args(["addr", "add", &format!("{host}/32"), "dev", "lo"]));
        }
        let cfg = peers.dir.join("kamailio.cfg");
        fs::write(&cfg, KAMAILIO_CFG).unwrap();
        let garbage = peers.dir.join("garbage.sh");
        fs::write(&garbage, GARBAGE_SCRIPT).unwrap();
        fs::set_permissions(&garbage, fs::Permissions::from_mode(0o755)).unwrap();
        let rules = peers.dir.join("drop.nft");
        fs::write(&rules, NFT_RULES).unwrap();
        run(lab.in_dark("nft").arg("-f").arg(&rules));

        let dir = peers.dir.display().to_string();
        peers.spawn(
            lab,
            "kamailio",
            &[
                "-f",
                &cfg.display().to_string(),
                "-DD",
                "-E",
                "-Y",
                &dir,
                "-P",
                &format!("{dir}/kamailio.pid"),
            ],
        );
        // The seed's rogue daemon: netcat listening, reading, never answering.
        peers.spawn(lab, "nc", &["-d", "-l", "-k", &SILENT.to_string(), "5060"]);
        peers.spawn(
            lab,
            "nc",
            &["-d", "-u", "-l", "-k", &SILENT.to_string(), "5060"],
        );
        let exec = format!("EXEC:{}", garbage.display());
        peers.spawn(
            lab,
            "socat",
            &[
                &format!("TCP-LISTEN:5060,bind={GARBAGE},fork,reuseaddr"),
                &exec,
            ],
        );
        peers.spawn(
            lab,
            "socat",
            &[&format!("UDP-RECVFROM:5060,bind={GARBAGE},fork"), &exec],
        );
        peers.wait_listening(lab);
        peers
    }

    fn spawn(&mut self, lab: &Lab, program: &str, args: &[&str]) {
        let log = fs::File::create(
            self.dir
                .join(format!("{program}-{}.log", self.children.len())),
        )
        .expect("peer log");
        let child = lab
            .in_dark(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start {program} (cargo xtask setup installs it): {e}"));
        self.children.push(child);
    }

    /// Waits until every peer's socket is bound (kamailio takes a moment to start).
    fn wait_listening(&self, lab: &Lab) {
        let want = [
            ("udp", GENUINE),
            ("tcp", GENUINE),
            ("udp", SILENT),
            ("tcp", SILENT),
            ("udp", GARBAGE),
            ("tcp", GARBAGE),
        ];
        let start = Instant::now();
        loop {
            let out = lab.in_dark("ss").args(["-Hlnut"]).output().expect("ss");
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            let missing: Vec<_> = want
                .iter()
                .filter(|(proto, addr)| {
                    !text
                        .lines()
                        .any(|l| l.starts_with(proto) && l.contains(&format!("{addr}:5060")))
                })
                .collect();
            if missing.is_empty() {
                return;
            }
            if start.elapsed() > Duration::from_secs(30) {
                panic!(
                    "peers not listening after 30 s: {missing:?}\n{text}\nlogs:\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn logs(&self) -> String {
        let mut all = String::new();
        if let Ok(entries) = fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                if e.path().extension().is_some_and(|x| x == "log") {
                    all += &format!(
                        "== {}\n{}\n",
                        e.path().display(),
                        fs::read_to_string(e.path()).unwrap_or_default()
                    );
                }
            }
        }
        all
    }
}

impl Drop for Peers {
    fn drop(&mut self) {
        for child in &mut self.children {
            let group = child.id() as i32;
            // SAFETY: signalling process groups this test created (pgid = the child's pid).
            unsafe { libc::kill(-group, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for child in &mut self.children {
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            // SAFETY: as above; whatever ignored SIGTERM.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn run(command: &mut Command) {
    let out = command.output().expect("run command");
    assert!(
        out.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn targets() -> Vec<Target> {
    PEERS
        .iter()
        .map(|(addr, _, _)| Target(SocketAddr::new(IpAddr::V4(*addr), 5060)))
        .collect()
}

/// Short timeouts: the peers are one veth away.
fn probe_options() -> ProbeOptions {
    ProbeOptions {
        transports: Transports::Both,
        t1: Duration::from_millis(200),
        retransmissions: 3,
        timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(2),
        concurrency: 5,
        rate: 200.0,
        ..ProbeOptions::default()
    }
}

fn transport(report: &TargetReport, t: Transport) -> &probe::TransportReport {
    report
        .transports
        .iter()
        .find(|r| r.transport == t)
        .unwrap_or_else(|| panic!("{} has no {} report", report.target, t.as_str()))
}

#[test]
fn five_peers_classified_actively_and_passively() {
    let lab = Lab::create("rog").expect("lab");
    let mirror = Mirror::create(&lab, "rog").expect("mirror port");
    let peers = Peers::start(&lab);

    let mut options = RunOptions::new(&mirror.tap_if);
    options.match_source_port = true;
    // Copies on a mirror port go nowhere whatever the action; pass keeps the inline semantics
    // the sensor would need if it sat on the servers' own link.
    options.action = MatchAction::Pass;
    // Shorter than the probe's own timeouts, so every exchange is resolved before the end.
    options.detect_rogue = Some(TrackerConfig {
        reply_timeout_ns: 1_000_000_000,
        connect_timeout_ns: 1_000_000_000,
        ..TrackerConfig::default()
    });
    let mut reports = Vec::new();
    let (summary, docs) =
        run_agent_in(&mirror.tap_ns, options, Duration::from_millis(1500), || {
            let _ns = lab.enter_scan().expect("enter scanner namespace");
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            reports = runtime
                .block_on(probe::probe_all(&targets(), &probe_options()))
                .expect("probe");
        });
    let table = probe::report::table(&reports);
    let logs = peers.logs();
    drop(peers);

    // Active: each peer gets its verdict, for the right reasons.
    assert_eq!(reports.len(), PEERS.len(), "{table}");
    for (report, (addr, name, expected)) in reports.iter().zip(PEERS) {
        assert_eq!(report.target.ip(), IpAddr::V4(addr));
        assert_eq!(
            report.verdict, expected,
            "active verdict on the {name}\n{table}\n{logs}"
        );
    }
    let [genuine, silent, garbage, closed, dropped] = &reports[..] else {
        unreachable!()
    };
    for t in [Transport::Udp, Transport::Tcp] {
        let codes: Vec<u16> = transport(genuine, t)
            .attempts
            .iter()
            .map(|a| match &a.outcome {
                Outcome::Sip {
                    code,
                    is_final: true,
                    call_id_matched: true,
                    server: Some(server),
                    ..
                } if server.starts_with(b"kamailio") => *code,
                other => panic!("kamailio over {t:?}: {other:?}\n{table}"),
            })
            .collect();
        assert_eq!(codes, [200, 404, 401], "{table}");
    }
    assert_eq!(genuine.score, 0, "{table}");
    assert_eq!(
        silent.reasons,
        [RogueReason::AcceptedNeverAnswered],
        "{table}"
    );
    assert_eq!(
        transport(silent, Transport::Udp).verdict,
        TransportVerdict::OpenOrFiltered
    );
    assert!(silent.signs.no_response.present && silent.signs.frequent_timeouts.present);
    assert!(!silent.signs.protocol_mismatch.present);
    assert_eq!(garbage.reasons, [RogueReason::NonSipReply], "{table}");
    assert!(garbage.signs.protocol_mismatch.present && garbage.signs.no_specific_error.present);
    for t in [Transport::Udp, Transport::Tcp] {
        for a in &transport(garbage, t).attempts {
            assert!(
                matches!(&a.outcome, Outcome::NonSip { sample } if sample.starts_with(b"HTTP/1.0 400")),
                "{a:?}"
            );
        }
        assert_eq!(
            transport(closed, t).verdict,
            TransportVerdict::NotListening,
            "{table}"
        );
    }
    assert!(closed.signs.connection_failure.present);
    assert_eq!(
        transport(dropped, Transport::Tcp).verdict,
        TransportVerdict::Filtered
    );
    assert_eq!(
        transport(dropped, Transport::Udp).verdict,
        TransportVerdict::OpenOrFiltered
    );
    assert!(dropped.signs.frequent_timeouts.present && dropped.signs.connection_failure.present);

    // Passive: the same exchanges, as the sensor on the mirror port saw them.
    summary.kernel.check().expect("kernel counters reconcile");
    let servers: Vec<&serde_json::Value> = docs
        .iter()
        .filter(|d| d["event_type"] == "sip_server")
        .collect();
    let mut passive: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for d in &servers {
        assert_eq!(d["server_port"], 5060, "{d}");
        passive
            .entry(d["server_ip"].as_str().unwrap().to_string())
            .or_default()
            .insert(d["verdict"].as_str().unwrap().to_string());
    }
    let describe = || {
        servers
            .iter()
            .map(|d| {
                format!(
                    "{} {} {} {} {}",
                    d["server_ip"], d["proto"], d["verdict"], d["transport_verdict"], d["counts"]
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    for (addr, name, expected) in PEERS {
        let verdicts = passive.get(&addr.to_string());
        assert_eq!(
            verdicts,
            Some(&BTreeSet::from([expected.as_str().to_string()])),
            "passive verdict on the {name}\n{}",
            describe()
        );
        let protos: BTreeSet<&str> = servers
            .iter()
            .filter(|d| d["server_ip"] == addr.to_string())
            .map(|d| d["proto"].as_str().unwrap())
            .collect();
        assert_eq!(protos, BTreeSet::from(["TCP", "UDP"]), "{name}");
    }
    // The answers were captured too: kamailio's six, and the garbage peer's bytes escaped.
    let doc = |ip: Ipv4Addr, proto: &str| {
        *servers
            .iter()
            .find(|d| d["server_ip"] == ip.to_string() && d["proto"] == proto)
            .unwrap()
    };
    for proto in ["UDP", "TCP"] {
        assert_eq!(
            doc(GENUINE, proto)["counts"]["sip_answered"],
            3,
            "{}",
            describe()
        );
        assert_eq!(
            doc(GENUINE, proto)["counts"]["sip_final"],
            3,
            "{}",
            describe()
        );
        assert!(
            doc(GARBAGE, proto)["non_sip_sample"]
                .as_str()
                .unwrap()
                .starts_with("HTTP/1.0 400 Bad Request\\r\\nServer: \\x1b[2Jrogue"),
            "{}",
            describe()
        );
    }
    assert_eq!(
        doc(SILENT, "TCP")["reasons"],
        serde_json::json!(["accepted_never_answered"])
    );
    assert_eq!(doc(CLOSED, "TCP")["counts"]["refused"], 3, "{}", describe());
    assert_eq!(
        doc(DROPPED, "TCP")["counts"]["connect_timeouts"],
        3,
        "{}",
        describe()
    );

    // Findings: exactly the two rogue servers were flagged, with their reasons.
    let flagged: BTreeSet<String> = docs
        .iter()
        .filter(|d| d["event_type"] == "rogue_server")
        .map(|d| d["server_ip"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        flagged,
        BTreeSet::from([SILENT.to_string(), GARBAGE.to_string()]),
        "{}",
        describe()
    );
    let stats = docs
        .iter()
        .find(|d| d["event_type"] == "rogue_stats")
        .expect("rogue_stats document");
    assert_eq!(stats["rogue"]["servers_created"], 10);
    assert_eq!(stats["rogue"]["servers_evicted_capacity"], 0);
    let counters = summary.rogue.expect("tracker counters");
    assert_eq!(counters.events_observed, summary.agent.events_written);
    assert_eq!(
        counters.findings as usize,
        docs.iter()
            .filter(|d| d["event_type"] == "rogue_server")
            .count()
    );

    assert!(!mirror.tap_has_xdp().unwrap(), "detached after the run");
}

/// `sensor probe` as an operator runs it: a targets file, the table on stdout with the
/// target's bytes escaped, and JSON.
#[test]
fn probe_command_prints_table_and_json() {
    let lab = Lab::create("rgb").expect("lab");
    let peers = Peers::start(&lab);
    let bin = sensor_tests::sensor_binary();
    let file = temp_path("targets.txt");
    fs::write(
        &file,
        format!("# lab peers\n{GENUINE}\n{GARBAGE}:5060  # the HTTP one\n"),
    )
    .unwrap();
    let probe = |extra: &[&str]| {
        let out = lab
            .in_scan(bin.to_str().unwrap())
            .args(["probe", "--targets-file"])
            .arg(&file)
            .args(["--rate", "200", "--timeout-ms", "2000", "--t1-ms", "200"])
            .args(extra)
            .output()
            .expect("run sensor probe");
        let stdout = String::from_utf8(out.stdout).expect("stdout is text");
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{stdout}\n{stderr}");
        (stdout, stderr)
    };
    let (table, stderr) = probe(&[CLOSED.to_string().as_str()]);
    assert!(stderr.contains("as sip-darknet-sensor-probe/"), "{stderr}");
    assert!(
        table
            .bytes()
            .all(|b| b == b'\n' || (0x20..0x7f).contains(&b)),
        "only printable ASCII reaches the terminal:\n{table}"
    );
    let row = |addr: Ipv4Addr| {
        table
            .lines()
            .find(|l| l.starts_with(&format!("{addr}:5060 ")))
            .unwrap_or_else(|| panic!("no row for {addr}:\n{table}"))
            .to_string()
    };
    assert!(row(GENUINE).contains(" genuine "), "{table}");
    assert!(row(GENUINE).contains("200 404 401"), "{table}");
    assert!(row(GARBAGE).contains(" rogue "), "{table}");
    assert!(row(CLOSED).contains(" not_listening "), "{table}");
    assert!(
        table.contains("non-SIP: HTTP/1.0 400 Bad Request\\r\\nServer: \\x1b[2Jrogue"),
        "{table}"
    );

    let (json, _) = probe(&["--json", "--transport", "tcp", "--methods", "options"]);
    let docs: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[0]["target"], format!("{GENUINE}:5060"));
    assert_eq!(docs[0]["verdict"], "genuine");
    assert_eq!(docs[0]["transports"][0]["transport"], "TCP");
    assert_eq!(docs[0]["transports"][0]["attempts"][0]["method"], "OPTIONS");
    assert_eq!(
        docs[0]["transports"][0]["attempts"][0]["outcome"]["code"],
        200
    );
    assert_eq!(docs[1]["verdict"], "rogue");
    assert_eq!(docs[1]["reasons"], serde_json::json!(["non_sip_reply"]));
    assert_eq!(docs[1]["sign_letters"], "-P-E-");
    let _ = fs::remove_file(&file);
    drop(peers);
}

#[test]
fn bad_targets_and_flags_are_refused_before_anything_is_sent() {
    let bin = sensor_tests::sensor_binary();
    let run = |args: &[&str]| {
        let out = Command::new(&bin).args(args).output().expect("run sensor");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    for (args, needle) in [
        (vec!["probe"], "no targets"),
        (vec!["probe", "sip.example.com"], "does not resolve names"),
        (vec!["probe", "192.0.2.1:0"], "bad port"),
        (vec!["probe", "192.0.2.1:70000"], "bad port"),
        (vec!["probe", "224.0.0.1"], "multicast"),
        (vec!["probe", "255.255.255.255"], "broadcast"),
        (vec!["probe", "0.0.0.0"], "unspecified"),
        (vec!["probe", "--rate", "0", "192.0.2.1"], "--rate"),
        (
            vec!["probe", "--concurrency", "0", "192.0.2.1"],
            "--concurrency",
        ),
        (
            vec!["probe", "--timeout-ms", "0", "192.0.2.1"],
            "--timeout-ms",
        ),
        (
            vec!["probe", "--transport", "sctp", "192.0.2.1"],
            "--transport",
        ),
        (
            vec!["probe", "--methods", "bye", "192.0.2.1"],
            "unknown method `bye`",
        ),
        (
            vec![
                "probe",
                "--targets-file",
                "/nonexistent/targets",
                "192.0.2.1",
            ],
            "cannot read targets file",
        ),
        (
            vec!["run", "--iface", "lo", "--detect-rogue"],
            "--match-source-port",
        ),
    ] {
        let (ok, err) = run(&args);
        assert!(!ok, "{args:?} must fail");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let path = temp_path("bad-targets.txt");
    fs::write(&path, "192.0.2.1\n\nsip.example.com\n").unwrap();
    let (ok, err) = run(&["probe", "--targets-file", path.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains(":3: `sip.example.com`"), "{err}");
    let _ = fs::remove_file(Path::new(&path));
}
