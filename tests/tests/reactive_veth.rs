//! The reactive responder on a veth pair: a real TCP client in the scanner namespace completes
//! a handshake with a darknet address nobody listens on and sends a SIP request, which the sensor
//! records with its SYN's fields; nmap -sV's SIP probe over TCP is captured the same way; the
//! reflector limit holds under a SYN flood; with the responder off nothing is transmitted.

use std::{
    process::{Child, Stdio},
    time::Duration,
};

use sensor::{agent::RunOptions, capture::parse_prefixes};
use sensor_common::{Counter, ReactivePolicy};
use sensor_tests::agent_run::run_agent_in;
use xtask::{
    blaster::Blaster,
    frames::{Frame, L4, LINUX_SYN_OPTIONS, TCP_SYN},
    lab::{self, Lab},
};

fn reactive_options(lab: &Lab, policy: ReactivePolicy) -> RunOptions {
    let mut options = RunOptions::new(&lab.dark_if);
    options.reactive = policy;
    options.reactive_prefixes = parse_prefixes(lab::DARKNET_V4).unwrap();
    options
}

/// tcpdump on the scanner's end, counting TCP segments from the darknet.
fn watch_replies(lab: &Lab) -> Child {
    let child = lab
        .in_scan("tcpdump")
        .args([
            "-i",
            &lab.scan_if,
            "-Q",
            "in",
            "-n",
            "-l",
            "-q",
            "tcp and src net",
            lab::DARKNET_V4,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("tcpdump");
    std::thread::sleep(Duration::from_millis(800));
    child
}

/// The TCP segments from the darknet that tcpdump saw arrive.
fn replies(child: Child) -> Vec<String> {
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().expect("tcpdump output");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn tcp_client_completes_a_handshake_and_its_request_is_recorded_with_its_syn() {
    let lab = Lab::create("rtcp").expect("lab");
    let _receiver = lab
        .let_scanner_receive_xdp_tx()
        .expect("XDP_PASS on the scanner end");
    let target = lab::darknet_v4(30);
    let script = format!(
        "import socket,time\n\
         s=socket.create_connection(('{target}',5060),timeout=3)\n\
         s.sendall(b'OPTIONS sip:100@{target} SIP/2.0\\r\\nVia: SIP/2.0/TCP {scan}:5060;branch=z9hG4bK-reactive\\r\\nContent-Length: 0\\r\\n\\r\\n')\n\
         time.sleep(0.5)\n\
         print('connected')\n",
        scan = lab::SCAN_V4
    );
    let (summary, docs) = run_agent_in(
        &lab.dark_ns,
        reactive_options(&lab, ReactivePolicy::Silent),
        Duration::from_millis(300),
        || {
            let out = lab
                .in_scan("python3")
                .args(["-c", &script])
                .output()
                .expect("python3");
            assert!(
                String::from_utf8_lossy(&out.stdout).contains("connected"),
                "the client's connect() succeeded: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        },
    );
    let k = summary.kernel;
    assert!(k.get(Counter::SynAckSent) >= 1);
    assert!(
        k.get(Counter::CookieValid) >= 2,
        "the handshake ACK and the data"
    );
    let request = docs
        .iter()
        .find(|d| {
            d["event_type"] == "sip_probe"
                && d["payload"]["printable"]
                    .as_str()
                    .is_some_and(|p| p.starts_with("OPTIONS sip:100@203.0.113.30 SIP/2.0"))
        })
        .expect("the request was recorded");
    assert_eq!(request["proto"], "TCP");
    assert_eq!(request["reactive"]["session"], true);
    let syn = &request["reactive"]["syn"];
    assert_eq!(syn["ttl"], 64, "the SYN's fields are joined: {request}");
    assert!(
        syn["options"].as_str().unwrap().starts_with("020405b4"),
        "{syn}"
    );
    let syn_doc = docs
        .iter()
        .find(|d| d["reactive"]["syn_answered"] == true)
        .expect("the SYN's own event");
    assert_eq!(syn_doc["tcp"]["flags"], "S");
    summary.kernel.check().expect("counters reconcile");
}

#[test]
fn nmap_service_probe_over_tcp_is_captured_at_a_darknet_address() {
    let lab = Lab::create("rnmap").expect("lab");
    let _receiver = lab
        .let_scanner_receive_xdp_tx()
        .expect("XDP_PASS on the scanner end");
    let target = lab::darknet_v4(31).to_string();
    let (summary, docs) = run_agent_in(
        &lab.dark_ns,
        reactive_options(&lab, ReactivePolicy::Silent),
        Duration::from_millis(300),
        || {
            let status = lab
                .in_scan("nmap")
                .args([
                    "-n",
                    "-Pn",
                    "-sS",
                    "-sV",
                    "--version-light",
                    "-p5060",
                    &target,
                ])
                .stdout(Stdio::null())
                .status()
                .expect("nmap");
            assert!(status.success());
        },
    );
    let probe = docs
        .iter()
        .find(|d| {
            d["payload"]["printable"].as_str().is_some_and(|p| {
                p.starts_with("OPTIONS sip:nm SIP/2.0\\r\\nVia: SIP/2.0/TCP nm;branch=foo")
            })
        })
        .unwrap_or_else(|| {
            let seen: Vec<String> = docs
                .iter()
                .map(|d| {
                    format!(
                        "{} {} {}",
                        d["tcp"]["flags"], d["reactive"], d["payload"]["printable"]
                    )
                })
                .collect();
            panic!("nmap's SIP probe over TCP was captured: {seen:#?}")
        });
    assert_eq!(probe["proto"], "TCP");
    assert_eq!(probe["reactive"]["session"], true);
    assert_eq!(probe["fingerprint"]["tool"], "nmap", "{probe}");
    assert_eq!(
        probe["fingerprint"]["rule"], "nmap-service-probe-tcp",
        "{probe}"
    );
    assert!(summary.kernel.get(Counter::SynAckSent) >= 1);
}

/// Sends `count` SYNs from one source at 2,000 per second, from one CPU (the SYN-ACK buckets
/// are per CPU, and veth runs the receive side on the sender's CPU); returns how long it took.
fn syn_flood(lab: &Lab, count: u64) -> Duration {
    let frames: Vec<Vec<u8>> = (0..count as u32)
        .map(|i| {
            let mut f = Frame::tcp(
                "198.51.100.2",
                "203.0.113.40",
                40000 + (i % 1000) as u16,
                5060,
                TCP_SYN,
                &LINUX_SYN_OPTIONS,
            );
            if let L4::Tcp { seq, .. } = &mut f.l4 {
                *seq = i;
            }
            f.build()
        })
        .collect();
    sensor_tests::pin_to_cpu(0);
    let _ns = lab.enter_scan().unwrap();
    Blaster::new(&lab.scan_if, frames)
        .unwrap()
        .send(count, 2000)
        .unwrap()
        .elapsed
}

#[test]
fn reflector_limit_holds_under_a_syn_flood() {
    let lab = Lab::create("rflood").expect("lab");
    let _receiver = lab
        .let_scanner_receive_xdp_tx()
        .expect("XDP_PASS on the scanner end");
    let watcher = watch_replies(&lab);
    let mut options = reactive_options(&lab, ReactivePolicy::Silent);
    options.synack_rate = 5;
    options.synack_burst = 5;
    let mut flood = Duration::ZERO;
    let (summary, _) = run_agent_in(&lab.dark_ns, options, Duration::from_millis(300), || {
        flood = syn_flood(&lab, 400);
    });
    let replies = replies(watcher);
    let k = summary.kernel;
    let sent = k.get(Counter::SynAckSent);
    // The burst of 5, plus what 5 per second earns over the flood (0.2 s when the machine is
    // idle, longer when it is not), plus one for a token earned at the edge.
    let earned = (flood.as_secs_f64() * 5.0).ceil() as u64;
    assert!(
        (5..=5 + earned + 1).contains(&sent),
        "SYN-ACKs sent: {sent} over {flood:?}"
    );
    assert_eq!(
        k.get(Counter::SynAckSent) + k.get(Counter::SynAckRefused),
        400
    );
    assert_eq!(
        replies.len() as u64,
        sent,
        "what the kernel counted is what arrived: {replies:#?}"
    );
}

#[test]
fn with_the_responder_off_nothing_is_transmitted() {
    let lab = Lab::create("roff").expect("lab");
    let _receiver = lab
        .let_scanner_receive_xdp_tx()
        .expect("XDP_PASS on the scanner end");
    let watcher = watch_replies(&lab);
    let (summary, docs) = run_agent_in(
        &lab.dark_ns,
        RunOptions::new(&lab.dark_if),
        Duration::from_millis(300),
        || {
            let _ = syn_flood(&lab, 200);
            let _ = lab
                .in_scan("python3")
                .args(["-c", "import socket\ntry:\n socket.create_connection(('203.0.113.41',5060),timeout=1)\nexcept OSError:\n pass\n"])
                .status();
        },
    );
    let replies = replies(watcher);
    assert!(
        replies.is_empty(),
        "no TCP segment came back from the darknet: {replies:#?}"
    );
    let k = summary.kernel;
    for c in [Counter::SynAckSent, Counter::RstSent, Counter::CookieValid] {
        assert_eq!(k.get(c), 0, "{}", c.name());
    }
    assert!(
        docs.iter()
            .filter(|d| d["event_type"] == "sip_probe")
            .count()
            >= 200
    );
}
