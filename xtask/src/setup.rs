//! `cargo xtask setup`: everything a fresh machine needs, installed only if missing.

use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::{cmd, command_ok};

/// Debian packages: the eBPF linker's LLVM, the lab's tools, and the real peers the tests use.
pub const APT_PACKAGES: &[&str] = &[
    // bpf-linker against Debian's LLVM 22.
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    // The lab and its checks.
    "iproute2",
    "tcpdump",
    "tshark",
    "ethtool",
    // Real scanners and SIP peers.
    "nmap",
    "sipsak",
    "sip-tester",
    "masscan",
    "zmap",
    "socat",
    "netcat-openbsd",
    "kamailio",
    // A firewall DROP in a namespace: the rogue tests' filtered peer.
    "nftables",
    // Output checks and benchmark peers.
    "prometheus",
    "sipgrep",
    // The Kafka output: librdkafka is built from the rdkafka crate's bundled source with cmake
    // and linked statically against Debian's OpenSSL (TLS, SCRAM), Cyrus SASL (GSSAPI) and
    // zstd. librdkafka 2.12's cmake build includes curl/curl.h even with curl off, hence the
    // curl headers (nothing links libcurl).
    "cmake",
    "pkg-config",
    "g++",
    "libssl-dev",
    "libsasl2-dev",
    "libcurl4-openssl-dev",
];

/// A Kafka-protocol broker for the Kafka tests (Apache-2.0; none is packaged in Debian here):
/// `cargo install tansu --features dynostore`, once per machine: about 12 minutes on an idle
/// 2-core machine, 57 minutes here under `nice` while others were building.
pub const TANSU_VERSION: &str = "0.6.0";

/// PyPI packages: SIPVicious (svmap, svwar, svcrack).
pub const PIP_PACKAGES: &[&str] = &["sipvicious"];

/// The nightly that ships with these machines; a newer one may emit bitcode LLVM 22 can't read.
pub const EBPF_TOOLCHAIN: &str = "nightly";

pub fn setup() -> Result<()> {
    apt()?;
    rust_src()?;
    bpf_linker()?;
    cargo_fuzz()?;
    pip()?;
    tansu()?;
    Ok(())
}

fn tansu() -> Result<()> {
    if command_ok("tansu", &["--version"]) {
        eprintln!("setup: tansu present");
        return Ok(());
    }
    eprintln!("setup: building the tansu Kafka broker for the Kafka tests (about 12 minutes)");
    let status = Command::new("nice")
        .args([
            "-n",
            "10",
            "cargo",
            "install",
            "tansu",
            "--version",
            TANSU_VERSION,
            "--locked",
            "--features",
            "dynostore",
        ])
        .status()
        .context("running cargo install tansu")?;
    if !status.success() {
        bail!("cargo install tansu failed: {status}");
    }
    Ok(())
}

/// cargo-fuzz, for the fuzz targets (run with the nightly toolchain).
fn cargo_fuzz() -> Result<()> {
    if command_ok("cargo", &["fuzz", "--version"]) {
        eprintln!("setup: cargo-fuzz present");
        return Ok(());
    }
    eprintln!("setup: installing cargo-fuzz");
    let status = Command::new("cargo")
        .args(["install", "cargo-fuzz", "--locked"])
        .status()
        .context("running cargo install cargo-fuzz")?;
    if !status.success() {
        bail!("cargo install cargo-fuzz failed: {status}");
    }
    Ok(())
}

fn apt_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn apt() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| !apt_installed(p))
        .collect();
    if missing.is_empty() {
        eprintln!("setup: apt packages present");
        return Ok(());
    }
    eprintln!("setup: installing {}", missing.join(" "));
    cmd("apt-get", &["update", "-q"]).context("apt-get update")?;
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(&missing);
    let status = Command::new("apt-get")
        .args(&args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("running apt-get install")?;
    if !status.success() {
        bail!("apt-get install {} failed: {status}", missing.join(" "));
    }
    Ok(())
}

fn rust_src() -> Result<()> {
    let out = Command::new("rustup")
        .args([
            "component",
            "list",
            "--installed",
            "--toolchain",
            EBPF_TOOLCHAIN,
        ])
        .output()
        .context("running rustup")?;
    if String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.starts_with("rust-src"))
    {
        eprintln!("setup: rust-src present for {EBPF_TOOLCHAIN}");
        return Ok(());
    }
    cmd(
        "rustup",
        &[
            "component",
            "add",
            "rust-src",
            "--toolchain",
            EBPF_TOOLCHAIN,
        ],
    )
}

fn bpf_linker() -> Result<()> {
    if command_ok("bpf-linker", &["--version"]) {
        eprintln!("setup: bpf-linker present");
        return Ok(());
    }
    eprintln!("setup: building bpf-linker against LLVM 22 (1-3 minutes)");
    let path = format!(
        "/usr/lib/llvm-22/bin:{}",
        std::env::var("PATH").unwrap_or_default()
    );
    let status = Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--locked",
            "--no-default-features",
            "--features",
            "llvm-22",
        ])
        .env("PATH", path)
        .env("LLVM_PREFIX", "/usr/lib/llvm-22")
        .status()
        .context("running cargo install bpf-linker")?;
    if !status.success() {
        bail!("cargo install bpf-linker failed: {status}");
    }
    Ok(())
}

fn pip() -> Result<()> {
    for package in PIP_PACKAGES {
        if command_ok("python3", &["-m", "pip", "show", "-q", package]) {
            eprintln!("setup: {package} present");
            continue;
        }
        cmd(
            "python3",
            &[
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                package,
            ],
        )?;
    }
    // pyenv installs console scripts as shims only after a rehash.
    let _ = Command::new("pyenv").arg("rehash").status();
    Ok(())
}
