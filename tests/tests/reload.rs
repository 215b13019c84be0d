//! Run-time reconfiguration under traffic, on a veth lab with the real XDP program: while a
//! sender streams SIP (1000 per second) to a port that stays in the set, the port set and the action change six
//! times (control socket, `sensor ctl`, SIGHUP with a rewritten config file, `reload`), and not
//! one packet to that port is lost. The same run writes rotated NDJSON and pcapng files and
//! serves metrics, which promtool checks mid-run.

use std::{
    collections::BTreeSet,
    io::{BufRead as _, Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use sensor_tests::{agent_run::read_ndjson, temp_path};
use xtask::{
    lab::{self, Lab, NetnsGuard},
    traffic::sip_request,
};

/// Packets per second of the stream to the port that never leaves the set; it runs from before
/// the first change until after the last. Low enough for a debug build of the agent to keep up
/// on a busy machine, so that commands are answered promptly (an agent behind its ring answers
/// between batches).
const STREAM_PPS: u32 = 1_000;
const STREAM_PORT: u16 = 5060;
const PROBES: u32 = 10;

fn write_config(path: &Path, dir: &Path, lab: &Lab, ports: &str, action: &str) {
    let text = format!(
        r#"[capture]
interface = "{iface}"
ports = "{ports}"
action = "{action}"

[fingerprint]
threads = 2

[ndjson]
path = "{dir}/events.ndjson"

[pcapng]
path = "{dir}/records.pcapng"

[rotation]
size = "512KiB"

[metrics]
listen = "127.0.0.1:9560"

[control]
socket = "{dir}/sensor.sock"
"#,
        iface = lab.dark_if,
        dir = dir.display(),
    );
    std::fs::write(path, text).unwrap();
}

/// Sends `count` OPTIONS to `target` from the scanner namespace, Call-IDs `lab-<first + i>`, at
/// about `pps` packets per second.
fn send(lab: &Lab, target: SocketAddr, first: u32, count: u32, pps: u32) {
    send_until(lab, target, first, count, pps, &AtomicBool::new(false));
}

/// As [`send`], stopping early once `stop` is set; returns how many were sent.
fn send_until(
    lab: &Lab,
    target: SocketAddr,
    first: u32,
    count: u32,
    pps: u32,
    stop: &AtomicBool,
) -> u32 {
    let _ns = lab.enter_scan().unwrap();
    let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
    let from = socket.local_addr().unwrap();
    let start = Instant::now();
    for i in 0..count {
        if stop.load(Ordering::Relaxed) {
            return i;
        }
        let payload = sip_request("OPTIONS", target.ip(), from.ip(), from.port(), first + i);
        while let Err(e) = socket.send_to(&payload, target) {
            // ENOBUFS: the qdisc is full for a moment; the packet is not sent yet, so retry.
            assert_eq!(e.raw_os_error(), Some(libc::ENOBUFS), "send: {e}");
            std::thread::sleep(Duration::from_micros(200));
        }
        let due = start + Duration::from_secs_f64(f64::from(i + 1) / f64::from(pps));
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    count
}

fn ctl(socket: &Path, command: &str) -> String {
    let answer = sensor::control::send(socket, command, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("control `{command}`: {e}"));
    assert!(answer.starts_with("ok: "), "`{command}`: {answer}");
    answer
}

fn scrape(lab: &Lab) -> String {
    let _ns = NetnsGuard::enter(&lab.dark_ns).unwrap();
    let mut stream = TcpStream::connect("127.0.0.1:9560").expect("metrics endpoint");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: sensor\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    body.to_string()
}

fn promtool(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("metric {name} missing"))
}

fn files_named(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .collect();
    v.sort();
    v
}

/// The sensor, killed if the test fails before stopping it (it would hold the test's output pipe
/// open and run on in a removed namespace).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The sequence number in the Call-ID of a lab request.
fn seq(event: &serde_json::Value) -> u32 {
    event["sip"]["call_id"]
        .as_str()
        .and_then(|c| c.strip_prefix("lab-"))
        .and_then(|c| c.split('@').next())
        .and_then(|s| s.parse().ok())
        .expect("a lab Call-ID")
}

#[test]
fn port_set_and_action_change_under_traffic_without_loss() {
    let lab = Lab::create("rld").expect("lab");
    let dir = temp_path("reload");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("sensor.toml");
    let socket = dir.join("sensor.sock");
    write_config(&config, &dir, &lab, "5060", "drop");

    let mut child = KillOnDrop(
        lab.in_dark(sensor_tests::sensor_binary().to_str().unwrap())
            .args(["run", "--config"])
            .arg(&config)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sensor"),
    );
    let stderr = child.0.stderr.take().unwrap();
    let (line_tx, line_rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
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
    let wait_for = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match line_rx.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("the sensor never said `{needle}`"),
            }
        }
    };
    wait_for("attached to");
    wait_for("control socket");

    let host = lab::darknet_v4(90);
    let at = |port: u16| SocketAddr::new(IpAddr::V4(host), port);
    let pause = || std::thread::sleep(Duration::from_millis(400));
    let mut answers = Vec::new();
    let stop = AtomicBool::new(false);
    let (metrics_mid, (sent, stream_time)) = std::thread::scope(|scope| {
        // Stops the stream however this thread leaves the scope (a failed step panics).
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _stop_guard = StopOnDrop(&stop);
        let stream = scope.spawn(|| {
            let start = Instant::now();
            let sent = send_until(&lab, at(STREAM_PORT), 0, 1_000_000, STREAM_PPS, &stop);
            (sent, start.elapsed())
        });
        pause();
        // 1. A port joins the set: what goes to it from now on is recorded.
        answers.push(ctl(&socket, "ports 5060,5070"));
        send(&lab, at(5070), 100_000, PROBES, 1000);
        pause();
        // 2. The action changes.
        answers.push(ctl(&socket, "action pass"));
        pause();
        // 3. SIGHUP with a rewritten file: 5070 leaves the set, 5080-5090 join, drop again.
        write_config(&config, &dir, &lab, "5060,5080-5090", "drop");
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.0.id() as i32, libc::SIGHUP) };
        answers.push(wait_for("SIGHUP: "));
        send(&lab, at(5070), 200_000, PROBES, 1000);
        send(&lab, at(5085), 300_000, PROBES, 1000);
        pause();
        // 4. `sensor ctl`, the command line client.
        let out = Command::new(sensor_tests::sensor_binary())
            .args(["ctl", "--socket"])
            .arg(&socket)
            .args(["action", "pass"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        answers.push(String::from_utf8_lossy(&out.stdout).trim().to_string());
        pause();
        // 5. Back to the stream's port alone.
        answers.push(ctl(&socket, "ports 5060"));
        pause();
        // 6. `reload` over the socket: the file's ports and action again.
        answers.push(ctl(&socket, "reload"));
        let metrics = scrape(&lab);
        pause();
        stop.store(true, Ordering::Relaxed);
        (metrics, stream.join().unwrap())
    });
    assert!(
        sent >= STREAM_PPS,
        "the stream ran through every change: {sent} sent"
    );
    let status_line = ctl(&socket, "status");
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: as above.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGINT) };
    let status = child.0.wait().unwrap();
    let stderr = reader.join().unwrap();
    assert!(status.success(), "exit 0 on SIGINT: {status}\n{stderr}");
    assert!(!lab.dark_has_xdp().unwrap(), "detached on exit");
    assert!(!socket.exists(), "control socket removed on exit");

    // Every change was applied in place, and said what changed.
    assert!(answers[0].contains("(changed: ports)"), "{}", answers[0]);
    assert!(answers[1].contains("(changed: action)"), "{}", answers[1]);
    assert!(
        answers[2].contains("SIGHUP: ok: reloaded"),
        "{}",
        answers[2]
    );
    assert!(
        answers[2].contains("changed: ports, action"),
        "{}",
        answers[2]
    );
    assert!(answers[3].contains("(changed: action)"), "{}", answers[3]);
    assert!(answers[4].contains("ports 5060;"), "{}", answers[4]);
    assert!(
        answers[5].contains("changed: ports, action"),
        "{}",
        answers[5]
    );
    assert!(
        status_line.contains("ports 5060,5080-5090; action drop"),
        "{status_line}"
    );
    assert!(
        status_line.contains("; analyst threads 2; analyst waits "),
        "{status_line}"
    );
    let changes = stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("config.changes"))
        .map(|v| v.trim().to_string());
    assert_eq!(changes.as_deref(), Some("6"), "{stderr}");

    // Mid-run metrics: promtool accepts them; per-CPU kernel counters; the changes counted.
    promtool(&metrics_mid);
    assert_eq!(metric(&metrics_mid, "sensor_config_changes_total"), 6);
    assert!(metrics_mid.contains("sensor_kernel_percpu_emitted_total{cpu=\"0\"}"));
    assert!(metrics_mid.contains("sensor_config_action{action=\"drop\"} 1"));
    // Two analyst threads, from the file's key, through every reload.
    assert_eq!(metric(&metrics_mid, "sensor_analyst_threads"), 2);
    assert!(metrics_mid.contains("sensor_output_up{output=\"pcapng\"} 1"));

    // Every NDJSON file, in name order: each line is whole JSON (rotation split nothing).
    let ndjson_files = files_named(&dir, "events-");
    let docs: Vec<serde_json::Value> = ndjson_files.iter().flat_map(|f| read_ndjson(f)).collect();
    let events: Vec<&serde_json::Value> = docs
        .iter()
        .filter(|d| d["event_type"] == "sip_probe")
        .collect();
    let stats = docs.last().expect("documents");
    assert_eq!(stats["event_type"], "stats");
    assert_eq!(stats["reconciled"], true);

    // Not one packet to the port that stayed is lost, none is duplicated.
    let mut stream_seqs = BTreeSet::new();
    let mut probes = [0u32; 3];
    for e in &events {
        let s = seq(e);
        match e["dest_port"].as_u64().unwrap() {
            5060 => assert!(stream_seqs.insert(s), "sequence {s} twice"),
            5070 => {
                assert!(
                    (100_000..100_000 + PROBES).contains(&s),
                    "5070 recorded out of the set: {s}"
                );
                probes[0] += 1;
            }
            5085 => probes[2] += 1,
            other => panic!("unexpected port {other}"),
        }
    }
    assert_eq!(
        stream_seqs.len() as u32,
        sent,
        "packets to {STREAM_PORT} lost"
    );
    assert_eq!(stream_seqs.last(), Some(&(sent - 1)));
    assert_eq!(probes[0], PROBES, "5070 while in the set");
    assert_eq!(probes[2], PROBES, "5085 after the SIGHUP reload");

    // The counters reconcile: every matched frame became a record, every record an event.
    let k = &stats["kernel"];
    let n = |v: &serde_json::Value| v.as_u64().unwrap();
    assert_eq!(n(&k["ring_full"]), 0);
    assert_eq!(n(&k["matched"]), n(&k["emitted"]));
    assert_eq!(n(&k["emitted"]), events.len() as u64);
    assert!(
        n(&k["port_miss"]) >= u64::from(PROBES),
        "5070 after removal: port_miss"
    );
    assert_eq!(n(&stats["agent"]["events_written"]), events.len() as u64);
    assert_eq!(n(&stats["agent"]["output_errors"]), 0);
    assert!(
        n(&stats["outputs"]["ndjson"]["rotations"]) > 0,
        "NDJSON rotated by size under traffic"
    );
    assert!(
        n(&stats["outputs"]["pcapng"]["rotations"]) > 0,
        "pcapng rotated by size under traffic"
    );

    // The rotated pcapng files: tshark reads each, and together they hold every record.
    let pcapng_files = files_named(&dir, "records-");
    let mut packets = 0;
    for f in &pcapng_files {
        let out = Command::new("tshark").arg("-r").arg(f).output().unwrap();
        assert!(out.status.success(), "tshark -r {}: {out:?}", f.display());
        packets += String::from_utf8_lossy(&out.stdout).lines().count();
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(f).unwrap().permissions());
        assert_eq!(mode & 0o777 & !0o640, 0, "{} mode {mode:o}", f.display());
    }
    assert_eq!(packets, events.len());

    eprintln!(
        "reload under traffic: {sent} sent to {STREAM_PORT} over {:.1} s, {} recorded (none \
         lost); 6 changes applied; probes 5070 in set {}/{PROBES}, 5085 after reload {}/{PROBES}; \
         kernel matched {} emitted {} port_miss {} ring_full {}; {} NDJSON files, {} pcapng files \
         ({packets} packets)",
        stream_time.as_secs_f64(),
        stream_seqs.len(),
        probes[0],
        probes[2],
        n(&k["matched"]),
        n(&k["emitted"]),
        n(&k["port_miss"]),
        n(&k["ring_full"]),
        ndjson_files.len(),
        pcapng_files.len(),
    );
    let _ = std::fs::remove_dir_all(&dir);
}
