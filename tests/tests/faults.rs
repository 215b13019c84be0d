//! Faults, with the real `sensor` binary in lab namespaces: killed with SIGKILL under traffic; a
//! flood beyond what its ring buffer holds; an output that cannot be written (a full tmpfs in a
//! private mount namespace, permission denied, the directory removed); bad flags and
//! configuration. The agent drops its capabilities once attached (docs/privileges.md), so a
//! directory's mode bits bind it as they bind any user.
//!
//! `cargo test -p sensor-tests --test faults -- --nocapture --test-threads 1` prints the numbers.

use std::{
    net::{IpAddr, SocketAddr},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use sensor_tests::{
    agent_run::read_ndjson,
    sensor_binary,
    sensor_process::{Ended, RemoveOnDrop, SensorProcess, final_counter},
    temp_path,
};
use xtask::{blaster::Blaster, lab, lab::Lab, traffic};

/// Sends UDP SIP datagrams from the scanner namespace until dropped; counts what it sent.
struct SteadyTraffic {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SteadyTraffic {
    fn start(lab: &Lab, host: u8) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let target = SocketAddr::new(IpAddr::V4(lab::darknet_v4(host)), 5060);
        let scan_ns = lab.scan_ns.clone();
        let (stop_flag, counter) = (stop.clone(), sent.clone());
        let thread = std::thread::spawn(move || {
            // A Lab value for the traffic helpers, naming the same namespaces; never dropped
            // (dropping it would delete them).
            let view = std::mem::ManuallyDrop::new(Lab {
                dark_ns: String::new(),
                scan_ns,
                dark_if: String::new(),
                scan_if: String::new(),
            });
            while !stop_flag.load(Ordering::Relaxed) {
                if let Ok(n) = traffic::udp_sip_burst(&view, target, 20) {
                    counter.fetch_add(u64::from(n), Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Self {
            stop,
            sent,
            thread: Some(thread),
        }
    }

    /// Stops and returns the number of datagrams sent.
    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.sent.load(Ordering::Relaxed)
    }
}

impl Drop for SteadyTraffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Whether a bpf_link with this id still exists (BPF_LINK_GET_FD_BY_ID).
fn link_exists(id: u32) -> bool {
    const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;
    let mut attr = [0u32; 4];
    attr[0] = id;
    // SAFETY: bpf(2) with a zeroed attribute block large enough for this command.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_GET_FD_BY_ID,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if fd >= 0 {
        // SAFETY: a descriptor the call just returned.
        unsafe { libc::close(fd as i32) };
        return true;
    }
    false
}

fn link_id(attach_line: &str) -> u32 {
    attach_line
        .split("bpf_link ")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no bpf_link id in `{attach_line}`"))
}

/// Waits (5 s at most) until the darknet end has no XDP program.
fn wait_detached(lab: &Lab) -> bool {
    for _ in 0..250 {
        if !lab.dark_has_xdp().unwrap() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn counter(ended: &Ended, name: &str) -> u64 {
    final_counter(&ended.stderr, name)
        .unwrap_or_else(|| panic!("no {name} in the final report:\n{}", ended.stderr))
}

#[test]
fn sigkill_under_traffic_leaves_nothing_attached_and_a_new_agent_starts() {
    let lab = Lab::create("kill").expect("lab");
    let output = temp_path("kill.ndjson");
    let _cleanup = RemoveOnDrop(output.clone());
    let args = [
        "--iface",
        &lab.dark_if,
        "--output",
        output.to_str().unwrap(),
    ];
    let traffic = SteadyTraffic::start(&lab, 100);

    let first = SensorProcess::run_in(&lab.dark_ns, &args);
    let link = link_id(&first.wait_attached());
    assert!(link_exists(link), "link {link} exists while the agent runs");
    assert!(lab.dark_has_xdp().unwrap());
    std::thread::sleep(Duration::from_millis(500));
    let killed = first.stop(libc::SIGKILL);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&killed.status),
        Some(libc::SIGKILL)
    );
    assert!(
        wait_detached(&lab),
        "an XDP program is still attached after SIGKILL"
    );
    assert!(!link_exists(link), "bpf_link {link} outlived the agent");
    let written_before = read_ndjson_lenient(&output);
    println!(
        "SIGKILL: link {link} gone, interface clean; {written_before} events were written before"
    );

    // A new agent on the same interface, traffic still flowing.
    let second = SensorProcess::run_in(&lab.dark_ns, &args);
    let line = second.wait_attached();
    assert!(line.contains("native mode"), "{line}");
    std::thread::sleep(Duration::from_millis(500));
    let sent = traffic.finish();
    std::thread::sleep(Duration::from_millis(300));
    let ended = second.stop(libc::SIGTERM);
    assert!(ended.status.success(), "{}", ended.stderr);
    assert!(
        ended.stderr.contains("counters reconcile"),
        "{}",
        ended.stderr
    );
    let emitted = counter(&ended, "kernel.emitted");
    assert!(emitted > 0, "the new agent got traffic");
    assert_eq!(counter(&ended, "agent.events_written"), emitted);
    assert!(wait_detached(&lab));
    println!("restart: the new agent wrote {emitted} events ({sent} datagrams sent in all)");
}

/// Lines of a file that may end in a partial line (the agent was killed).
fn read_ndjson_lenient(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
        .count()
}

/// Blasts `count` frames from the scanner end with AF_PACKET as fast as it can.
fn blast(lab: &Lab, frames: &[Vec<u8>], count: u64) -> u64 {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let _ns = lab.enter_scan().expect("enter scanner namespace");
                Blaster::new(&lab.scan_if, frames.to_vec())
                    .expect("AF_PACKET socket")
                    .send(count, 0)
                    .expect("send")
                    .sent
            })
            .join()
            .expect("sender")
    })
}

#[test]
fn flood_beyond_the_ring_is_counted_and_the_agent_stays_responsive() {
    const FLOOD: u64 = 200_000;
    let lab = Lab::create("flood").expect("lab");
    let frames = xtask::bench::sip_frames(&lab).expect("frames");
    // One page: a handful of records fit (each one the fixed part and its payload class).
    let args = [
        "--iface",
        &lab.dark_if,
        "--ring-bytes",
        "4096",
        "--output",
        "/dev/null",
    ];

    // 1. A flood, then SIGTERM: every frame accounted for.
    let sensor = SensorProcess::run_in(&lab.dark_ns, &args);
    sensor.wait_attached();
    let drops_before = xtask::bench::device_drops(&lab);
    let sent = blast(&lab, &frames, FLOOD);
    std::thread::sleep(Duration::from_millis(500));
    let device_drops = xtask::bench::device_drops(&lab) - drops_before;
    let ended = sensor.stop(libc::SIGTERM);
    assert!(ended.status.success(), "{}", ended.stderr);
    let matched = counter(&ended, "kernel.matched");
    let emitted = counter(&ended, "kernel.emitted");
    let ring_full = counter(&ended, "kernel.ring_full");
    let read = counter(&ended, "agent.records_read");
    let written = counter(&ended, "agent.events_written");
    let output_errors = counter(&ended, "agent.output_errors");
    println!(
        "flood: sent {sent}; device drops {device_drops}; matched {matched} = emitted {emitted} + \
         ring_full {ring_full}; records read {read}, events written {written}, output errors \
         {output_errors}; SIGTERM to exit {:?}",
        ended.took
    );
    assert_eq!(sent, FLOOD);
    assert!(ring_full > 0, "a one-page ring must overflow under a flood");
    assert!(
        ended.stderr.contains("counters reconcile"),
        "{}",
        ended.stderr
    );
    assert_eq!(matched, emitted + ring_full, "rate limiting is off");
    assert_eq!(read, emitted);
    assert_eq!(written + output_errors, read);
    assert_eq!(output_errors, 0);
    assert_eq!(
        sent,
        written + ring_full + device_drops,
        "sent = records written + ring_full + device drops"
    );
    assert!(
        ended.took < Duration::from_secs(10),
        "SIGTERM took {:?}",
        ended.took
    );

    // 2. SIGTERM in the middle of a flood: the agent still stops, detaches and reconciles.
    let sensor = SensorProcess::run_in(&lab.dark_ns, &args);
    sensor.wait_attached();
    let ended = std::thread::scope(|scope| {
        let sender = scope.spawn(|| blast(&lab, &frames, 2 * FLOOD));
        std::thread::sleep(Duration::from_millis(50));
        let ended = sensor.stop(libc::SIGTERM);
        let _ = sender.join();
        ended
    });
    println!("SIGTERM during a flood: exit after {:?}", ended.took);
    assert!(ended.status.success(), "{}", ended.stderr);
    assert!(
        ended.stderr.contains("counters reconcile"),
        "{}",
        ended.stderr
    );
    assert!(
        ended.took < Duration::from_secs(10),
        "SIGTERM took {:?}",
        ended.took
    );
    assert!(wait_detached(&lab));
}

/// What an output fault run observed.
struct OutputRun {
    ended: Ended,
    output: PathBuf,
}

impl OutputRun {
    fn check(&self, what: &str, error_text: &str) -> (u64, u64) {
        let e = &self.ended;
        let (written, lost) = check_counts_only(e, what, error_text);
        // Whole lines only, and the stats document last, with the same count of losses.
        let docs = read_ndjson(&self.output);
        let last = docs.last().expect("lines after recovery");
        assert_eq!(last["event_type"], "stats", "[{what}]");
        assert_eq!(last["outputs"]["ndjson"]["dropped"], lost, "[{what}]");
        (written, lost)
    }
}

/// Runs the agent writing to `dir/events.ndjson` (through `wrap`, which may put it in another
/// mount namespace) under steady traffic; `break_it` breaks the output, `mend` mends it.
fn output_fault(
    lab: &Lab,
    command: Command,
    output: PathBuf,
    break_it: &dyn Fn(&SensorProcess),
    mend: &dyn Fn(&SensorProcess),
) -> OutputRun {
    let traffic = SteadyTraffic::start(lab, 110);
    let sensor = SensorProcess::spawn(command);
    sensor.wait_attached();
    std::thread::sleep(Duration::from_millis(500));
    break_it(&sensor);
    sensor
        .wait_for_line("failed:", Duration::from_secs(20))
        .unwrap_or_else(|| panic!("no error reported:\n{}", sensor.stderr_so_far()));
    // Lose some more while broken.
    std::thread::sleep(Duration::from_millis(1500));
    mend(&sensor);
    sensor
        .wait_for_line("writable again", Duration::from_secs(20))
        .unwrap_or_else(|| panic!("no recovery:\n{}", sensor.stderr_so_far()));
    std::thread::sleep(Duration::from_millis(500));
    traffic.finish();
    std::thread::sleep(Duration::from_millis(300));
    let ended = sensor.stop(libc::SIGTERM);
    assert!(wait_detached(lab));
    OutputRun { ended, output }
}

fn sensor_command(lab: &Lab, output: &Path) -> Command {
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", &lab.dark_ns])
        .arg(sensor_binary())
        .args(["run", "--iface", &lab.dark_if, "--output"])
        .arg(output);
    command
}

fn temp_dir(name: &str) -> RemoveOnDrop {
    let dir = temp_path(name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    RemoveOnDrop(dir)
}

#[test]
fn full_filesystem_is_counted_and_recovered() {
    let lab = Lab::create("full").expect("lab");
    let mount_point = temp_dir("tmpfs");
    let dir = mount_point.0.clone();
    let output = dir.join("events.ndjson");
    // A 64 MiB tmpfs that exists only in a private mount namespace: gone with the agent, whatever
    // happens to the test.
    let mut command = Command::new("unshare");
    command
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(
            "mount -t tmpfs -o size=64m,mode=0755 sensor-test-full \"$0\" && \
             exec ip netns exec \"$1\" \"$2\" run --iface \"$3\" --output \"$0/events.ndjson\"",
        )
        .arg(&dir)
        .arg(&lab.dark_ns)
        .arg(sensor_binary())
        .arg(&lab.dark_if);
    // The agent's view of the tmpfs, from outside its mount namespace.
    let inside = |sensor: &SensorProcess, name: &str| -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", sensor.pid()))
            .join(dir.strip_prefix("/").expect("absolute"))
            .join(name)
    };
    let run = output_fault(
        &lab,
        command,
        output.clone(),
        &|sensor| {
            // Fill it: write until the filesystem says it is full.
            use std::io::Write as _;
            let mut filler = std::fs::File::create(inside(sensor, "filler")).expect("filler");
            let block = vec![0u8; 64 * 1024];
            while filler.write_all(&block).is_ok() {}
        },
        &|sensor| {
            // Whole lines only: a write the full disk stopped half way was cut back.
            let text = std::fs::read_to_string(inside(sensor, "events.ndjson")).expect("output");
            for line in text.lines() {
                serde_json::from_str::<serde_json::Value>(line)
                    .unwrap_or_else(|e| panic!("a partial line after ENOSPC ({e}): {line}"));
            }
            std::fs::remove_file(inside(sensor, "filler")).expect("remove filler")
        },
    );
    // The output lived in the agent's mount namespace and is gone with it: its stderr says the
    // rest.
    let _ = check_counts_only(&run.ended, "full filesystem", "No space left on device");
}

/// Lines of stderr that report the NDJSON output failing, and recovering.
fn outage_lines<'a>(stderr: &'a str, marker: &str) -> Vec<&'a str> {
    stderr
        .lines()
        .filter(|l| l.contains("ndjson output") && l.contains(marker))
        .collect()
}

/// The checks of [`OutputRun::check`] that need only the agent's stderr: the failure reported
/// (once per outage: a nearly full disk can fail, take a shorter line, and fail again, each a
/// short outage of its own, but never a line per lost event), the recovery reported, and every
/// event either written or counted as dropped. Returns (written, dropped) for the NDJSON output.
fn check_counts_only(e: &Ended, what: &str, error_text: &str) -> (u64, u64) {
    assert!(e.status.success(), "[{what}] {}", e.stderr);
    let failures = outage_lines(&e.stderr, "failed:");
    let recovered = outage_lines(&e.stderr, "writable again");
    assert!(
        !failures.is_empty(),
        "[{what}] the failure reported:\n{}",
        e.stderr
    );
    assert!(
        failures.iter().all(|l| l.contains(error_text)),
        "[{what}] {failures:?}"
    );
    assert!(
        !recovered.is_empty(),
        "[{what}] recovery reported:\n{}",
        e.stderr
    );
    assert!(
        failures.len() <= recovered.len() + 1 && failures.len() < 50,
        "[{what}] one error per outage, not per event:\n{}",
        e.stderr
    );
    let read = counter(e, "agent.records_read");
    let handed = counter(e, "agent.events_written");
    let written = counter(e, "output.ndjson.written");
    let lost = counter(e, "output.ndjson.dropped");
    assert_eq!(counter(e, "kernel.emitted"), read, "[{what}]");
    assert_eq!(handed, read, "[{what}] every record became an event");
    assert_eq!(counter(e, "agent.output_errors"), lost, "[{what}]");
    // The NDJSON output also carries the documents about the run (campaigns, stats): at least
    // every event is written or counted dropped.
    assert!(
        written + lost >= handed,
        "[{what}] every event written or counted lost: {written} + {lost} < {handed}"
    );
    assert!(lost > 0, "[{what}] the outage lost events");
    assert!(written > 0, "[{what}]");
    println!(
        "[{what}] records {read}: written {written}, lost and counted {lost}; stderr: {} / {}",
        failures[0], recovered[0]
    );
    (written, lost)
}

#[test]
fn permission_denied_is_counted_and_recovered() {
    let lab = Lab::create("perm").expect("lab");
    let dir = temp_dir("perm");
    let output = dir.0.join("events.ndjson");
    let run = output_fault(
        &lab,
        sensor_command(&lab, &output),
        output.clone(),
        &|_| {
            // The file goes away and the directory is read-only: root without CAP_DAC_OVERRIDE
            // cannot create it again.
            std::fs::remove_file(&output).expect("remove output");
            std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o555))
                .expect("chmod");
        },
        &|_| {
            std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).expect("chmod")
        },
    );
    let (written, _) = run.check("permission denied", "Permission denied");
    let probes = read_ndjson(&output)
        .iter()
        .filter(|d| d["event_type"] == "sip_probe")
        .count() as u64;
    assert!(
        probes > 0 && probes < written,
        "the new file holds what came after"
    );
}

#[test]
fn removed_directory_is_counted_and_recovered() {
    let lab = Lab::create("rmdir").expect("lab");
    let dir = temp_dir("rmdir");
    let output = dir.0.join("events.ndjson");
    let run = output_fault(
        &lab,
        sensor_command(&lab, &output),
        output.clone(),
        &|_| std::fs::remove_dir_all(&dir.0).expect("remove the directory"),
        &|_| std::fs::create_dir_all(&dir.0).expect("make it again"),
    );
    run.check("removed directory", "No such file or directory");
}

#[test]
fn bad_flags_and_configuration_fail_clearly_with_nothing_attached() {
    let lab = Lab::create("flags").expect("lab");
    let bad_rules = temp_path("bad-rules.toml");
    let _r = RemoveOnDrop(bad_rules.clone());
    std::fs::write(&bad_rules, "schema = 1\n[[rule]\nid = ").unwrap();
    let a_dir = temp_dir("outdir");
    let bad_rules = bad_rules.to_str().unwrap().to_string();
    let out_dir = a_dir.0.to_str().unwrap().to_string();
    let iface = lab.dark_if.clone();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--rules", "/nonexistent/rules.toml"],
            "/nonexistent/rules.toml",
        ),
        (vec!["--rules", &bad_rules], &bad_rules),
        (
            vec!["--output", "/nonexistent/dir/events.ndjson"],
            "cannot open ndjson output /nonexistent/dir/events.ndjson",
        ),
        (vec!["--output", &out_dir], "cannot open ndjson output"),
        (
            vec!["--reactive", "silent"],
            "needs the darknet prefixes it may answer for",
        ),
        (
            vec!["--reactive-prefixes", "203.0.113.0/99"],
            "bad prefix `203.0.113.0/99`",
        ),
        (
            vec!["--detect-rogue"],
            "needs [capture] match_source_port = true (--match-source-port)",
        ),
        (
            vec!["--user", "no-such-user-here"],
            "no user `no-such-user-here`",
        ),
        (vec!["--user", "root"], "is root"),
        (
            vec!["--user", "nobody", "--keep-privileges"],
            "cannot be used with",
        ),
        (vec!["--ring-bytes", "0"], "power of two"),
        (vec!["--ring-bytes", "12288"], "power of two"),
        (vec!["--ports", "5060,x"], "bad port `x`"),
        (vec!["--xdp-mode", "turbo"], "xdp-mode"),
        (vec!["--prefix-len", "1025"], "prefix-len"),
        (vec!["--rogue-timeout-ms", "0"], "rogue-timeout-ms"),
        (vec!["--no-such-flag"], "--no-such-flag"),
    ];
    for (extra, needle) in &cases {
        let mut args = vec!["--iface", iface.as_str()];
        args.extend(extra.iter().copied());
        let out = Command::new("ip")
            .args(["netns", "exec", &lab.dark_ns])
            .arg(sensor_binary())
            .arg("run")
            .args(&args)
            .output()
            .expect("run the sensor");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra:?} must fail");
        assert_ne!(out.status.code(), Some(0), "{extra:?}");
        assert!(
            stderr.contains(needle),
            "{extra:?}: expected `{needle}` in:\n{stderr}"
        );
        assert!(
            !stderr.contains("attached to"),
            "{extra:?} attached:\n{stderr}"
        );
        assert!(
            !lab.dark_has_xdp().unwrap(),
            "{extra:?} left a program attached"
        );
        println!(
            "{extra:?}: exit {:?}: {}",
            out.status.code(),
            stderr.lines().next().unwrap_or_default()
        );
    }
}
