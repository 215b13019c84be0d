//! Orchestration for the sensor: setup of a fresh machine, builds, the veth lab, the test suite.
//! Also a library, so that the end-to-end tests build their networks with the same [`lab`].

pub mod bench;
pub mod blaster;
pub mod frames;
pub mod fuzz;
pub mod lab;
pub mod live_frames;
pub mod mirror;
pub mod perf;
pub mod setup;
pub mod show;
pub mod traffic;
pub mod xdp_pass;

use std::process::Command;

use anyhow::{Context as _, Result, bail};

/// Runs a command to completion; an error names it and its exit status.
pub fn cmd(program: &str, args: &[&str]) -> Result<()> {
    let status = Command::new(program)
        .args(args)
        .status()
        .with_context(|| format!("running {program}"))?;
    if !status.success() {
        bail!("`{program} {}` failed: {status}", args.join(" "));
    }
    Ok(())
}

/// Whether a command runs and exits 0 (its output discarded).
pub fn command_ok(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> std::path::PathBuf {
    let manifest = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or(manifest)
}

/// Pins the calling thread to one CPU (per-CPU maps, stable measurements).
pub fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t with one bit set, for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}
