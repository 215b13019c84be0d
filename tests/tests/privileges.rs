//! Least privilege (docs/privileges.md): the running agent's credentials read from
//! /proc/PID/status, every thread of it; what a thread without capabilities can still do with the
//! program's open descriptors; output files created 0640.

use std::{
    net::{IpAddr, SocketAddr},
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
};

use sensor::{
    capture::{CaptureError, PortSet, SensorProgram, parse_prefixes},
    privilege::{self, Credentials},
};
use sensor_common::{MatchAction, SensorConfig};
use sensor_tests::{
    agent_run::read_ndjson,
    sensor_process::{RemoveOnDrop, SensorProcess, final_counter},
    temp_path,
};
use xtask::{lab, lab::Lab, traffic};

fn probes(docs: &[serde_json::Value]) -> usize {
    docs.iter()
        .filter(|d| d["event_type"] == "sip_probe")
        .count()
}

#[test]
fn running_agent_holds_no_capability() {
    let lab = Lab::create("cap").expect("lab");
    let output = temp_path("caps.ndjson");
    let _cleanup = RemoveOnDrop(output.clone());
    let before = Credentials::of("self").expect("own status");
    let sensor = SensorProcess::run_in(
        &lab.dark_ns,
        &[
            "--iface",
            &lab.dark_if,
            "--output",
            output.to_str().unwrap(),
            "--threads",
            "3",
        ],
    );
    sensor.wait_attached();
    let (after, threads) = sensor.credentials();
    println!("before (the process that starts the agent, as root): {before}");
    println!("after attaching (the agent, pid {}): {after}", sensor.pid());

    // As documented: on this kernel nothing is kept (see privilege::capabilities_kept).
    let kept = privilege::capabilities_kept();
    assert_eq!(
        kept, 0,
        "a kernel from 6.5 on needs no capability after attach"
    );
    assert_ne!(
        before.cap_eff, 0,
        "the test starts the agent with capabilities"
    );
    assert_eq!(after.cap_eff, kept, "CapEff");
    assert_eq!(after.cap_prm, kept, "CapPrm");
    assert_eq!(after.cap_bnd, kept, "CapBnd");
    assert_eq!(after.cap_inh, 0, "CapInh");
    assert_eq!(after.cap_amb, 0, "CapAmb");
    assert!(after.no_new_privs, "NoNewPrivs");
    assert_eq!(after.uid, [0; 4], "without --user the agent stays uid 0");
    // The main thread and three analysts, started after the drop.
    assert!(threads.len() >= 4, "{} threads", threads.len());
    for thread in &threads {
        assert_eq!(thread, &after, "every thread of the agent");
    }
    // The agent says so, right after the attach message.
    assert!(
        sensor
            .wait_for_line(
                "privileges dropped: CapEff 0000000000000000",
                std::time::Duration::from_secs(10)
            )
            .is_some(),
        "{}",
        sensor.stderr_so_far()
    );
    // What it holds: the link and the maps, not the program (see SensorProgram::close_program).
    let held: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", sensor.pid()))
        .expect("list descriptors")
        .filter_map(Result::ok)
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .map(|target| target.to_string_lossy().into_owned())
        .filter(|target| target.starts_with("anon_inode:bpf"))
        .collect();
    println!("bpf descriptors held: {held:?}");
    assert!(held.iter().any(|t| t == "anon_inode:bpf_link"), "{held:?}");
    assert!(held.iter().any(|t| t == "anon_inode:bpf-map"), "{held:?}");
    assert!(!held.iter().any(|t| t == "anon_inode:bpf-prog"), "{held:?}");

    // Without a capability it still does its work: records arrive, counters are read at exit
    // (map lookups on its open descriptors), the link is released.
    traffic::udp_sip_burst(
        &lab,
        SocketAddr::new(IpAddr::V4(lab::darknet_v4(90)), 5060),
        25,
    )
    .expect("send");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let ended = sensor.stop(libc::SIGTERM);
    assert!(ended.status.success(), "{}", ended.stderr);
    assert_eq!(final_counter(&ended.stderr, "kernel.emitted"), Some(25));
    assert_eq!(
        final_counter(&ended.stderr, "agent.events_written"),
        Some(25)
    );
    assert!(
        ended.stderr.contains("counters reconcile"),
        "{}",
        ended.stderr
    );
    assert!(!lab.dark_has_xdp().unwrap(), "detached on exit");
    assert_eq!(probes(&read_ndjson(&output)), 25);
    let mode = std::fs::metadata(&output).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640, "output mode {mode:o}");
}

#[test]
fn agent_becomes_the_user_it_is_given() {
    let nobody = privilege::User::lookup("nobody").expect("user nobody");
    let lab = Lab::create("usr").expect("lab");
    let output = temp_path("user.ndjson");
    let _cleanup = RemoveOnDrop(output.clone());
    let sensor = SensorProcess::run_in(
        &lab.dark_ns,
        &[
            "--iface",
            &lab.dark_if,
            "--output",
            output.to_str().unwrap(),
            "--user",
            "nobody",
        ],
    );
    sensor.wait_attached();
    let (after, threads) = sensor.credentials();
    println!("with --user nobody: {after}");
    assert_eq!(after.uid, [nobody.uid; 4]);
    assert_eq!(after.gid, [nobody.gid; 4]);
    assert_eq!((after.cap_eff, after.cap_prm, after.cap_bnd), (0, 0, 0));
    assert!(after.no_new_privs);
    for thread in &threads {
        assert_eq!(thread, &after);
    }
    let meta = std::fs::metadata(&output).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (nobody.uid, nobody.gid));
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);

    traffic::udp_sip_burst(
        &lab,
        SocketAddr::new(IpAddr::V4(lab::darknet_v4(91)), 5060),
        10,
    )
    .expect("send");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let ended = sensor.stop(libc::SIGINT);
    assert!(ended.status.success(), "{}", ended.stderr);
    assert_eq!(probes(&read_ndjson(&output)), 10);
    assert!(!lab.dark_has_xdp().unwrap());
}

/// What docs/privileges.md claims: lookups and updates through descriptors already open need no
/// capability (Linux 6.5 and later), while loading and attaching do. Checked in a thread of its
/// own, since capabilities belong to threads.
#[test]
fn open_map_descriptors_need_no_capability() {
    let lab = Lab::create("fds").expect("lab");
    let dark_ns = lab.dark_ns.clone();
    let dark_if = lab.dark_if.clone();
    std::thread::spawn(move || {
        let _ns = xtask::lab::NetnsGuard::enter(&dark_ns).expect("enter");
        let mut program = SensorProgram::load(1 << 16).expect("load (with capabilities)");
        privilege::drop_thread_capabilities(0).expect("capset");
        let me = Credentials::of("thread-self").expect("own status");
        assert_eq!((me.cap_eff, me.cap_prm), (0, 0));

        // Everything the agent does after attaching, and a reload would do: map updates.
        program
            .set_config(SensorConfig::new(MatchAction::Pass, true, 512))
            .expect("config update without capabilities");
        program
            .set_ports(&"5060-5070".parse::<PortSet>().unwrap())
            .expect("port update without capabilities");
        program
            .set_reactive_prefixes(&parse_prefixes("203.0.113.0/24").unwrap())
            .expect("prefix update without capabilities");
        program
            .set_cookie_secret(1, [1, 2])
            .expect("secret rotation without capabilities");
        program
            .counters()
            .expect("counter lookups without capabilities");

        // Creating an XDP bpf_link checks no capability: holding the program descriptor is the
        // permission. Which is why the agent closes it once attached.
        match program.attach(&dark_if, sensor::capture::AttachMode::Native) {
            Ok(attachment) => {
                println!("a thread without capabilities but with the program descriptor attached");
                attachment.detach();
            }
            Err(e) => println!("attach without capabilities refused: {e}"),
        }
        program
            .close_program()
            .expect("close the program descriptor");
        assert!(
            program
                .attach(&dark_if, sensor::capture::AttachMode::Native)
                .is_err(),
            "attached with the program descriptor closed"
        );
        program
            .set_config(SensorConfig::new(MatchAction::Drop, false, 1024))
            .expect("the maps outlive the program descriptor");
        // Loading needs capabilities.
        assert!(matches!(
            SensorProgram::load(1 << 16),
            Err(CaptureError::Privilege(_)) | Err(CaptureError::Load(_))
        ));
    })
    .join()
    .expect("the capability-less thread's checks");
    assert!(!lab.dark_has_xdp().unwrap());
}
