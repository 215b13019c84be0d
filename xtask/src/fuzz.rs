//! The cargo-fuzz targets (fuzz/): a bounded run of each in `cargo xtask test`, a longer one in
//! `cargo xtask fuzz`. libFuzzer needs the nightly toolchain. Two input directories per target
//! are kept in the repository: fuzz/seeds/<target>, written by `sensor-tests`' `seed-fuzz-corpus`
//! from the test frames and never minimized, and fuzz/corpus/<target>, what longer runs found,
//! minimized after each run.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::{setup::EBPF_TOOLCHAIN, workspace_root};

/// Every target in fuzz/Cargo.toml, with the runs the test suite gives it: a few seconds each
/// on this machine's sanitizer build.
pub const TARGETS: &[(&str, u64)] = &[
    ("sip_parse", 20_000),
    ("fingerprint", 3_000),
    ("recall", 3_000),
    ("capture_reader", 200_000),
    ("extract", 100_000),
];

/// How long libFuzzer runs a target.
#[derive(Clone, Copy, Debug)]
pub enum Budget {
    /// `-runs=N`: a fixed number of inputs, the test suite's bounded run. New inputs go to a
    /// temporary directory: a test run leaves the repository as it found it.
    Runs(u64),
    /// `-max_total_time=S`: the longer run; new inputs join the kept corpus.
    Seconds(u64),
}

/// What one run did, from libFuzzer's final statistics.
#[derive(Clone, Debug)]
pub struct FuzzRun {
    pub target: String,
    pub runs: u64,
    pub seconds: u64,
    pub corpus_inputs: u64,
}

pub fn corpus_dir(target: &str) -> PathBuf {
    workspace_root().join("fuzz/corpus").join(target)
}

pub fn seeds_dir(target: &str) -> PathBuf {
    workspace_root().join("fuzz/seeds").join(target)
}

fn fuzz_command() -> Command {
    // `rustup run` rather than `cargo +nightly`: the cargo that runs xtask is the stable one.
    let mut command = Command::new("rustup");
    command
        .args(["run", EBPF_TOOLCHAIN, "cargo", "fuzz"])
        .current_dir(workspace_root());
    // A stable cargo's variables must not steer the nightly one.
    for key in ["CARGO", "RUSTC", "RUSTDOC", "RUSTUP_TOOLCHAIN"] {
        command.env_remove(key);
    }
    command
}

/// Builds every target (sanitizers on, as `fuzz run` would).
pub fn build() -> Result<()> {
    let status = fuzz_command()
        .args(["build", "--fuzz-dir", "fuzz"])
        .status()
        .context("running cargo fuzz build")?;
    if !status.success() {
        bail!("`cargo fuzz build` failed: {status}");
    }
    Ok(())
}

/// Runs `target` on its kept corpus for `budget`. A crash, a leak, a timeout or an out-of-memory
/// is an error naming the input libFuzzer saved under fuzz/artifacts/.
pub fn run(target: &str, budget: Budget) -> Result<FuzzRun> {
    let corpus = corpus_dir(target);
    let seeds = seeds_dir(target);
    std::fs::create_dir_all(&corpus)?;
    let scratch = std::env::temp_dir().join(format!("sensor-fuzz-{}-{target}", std::process::id()));
    let mut command = fuzz_command();
    command.args(["run", "--fuzz-dir", "fuzz", target]);
    let limit = match budget {
        Budget::Runs(n) => {
            std::fs::create_dir_all(&scratch)?;
            command.arg(&scratch).arg(&corpus).arg(&seeds);
            format!("-runs={n}")
        }
        Budget::Seconds(s) => {
            command.arg(&corpus).arg(&seeds);
            format!("-max_total_time={s}")
        }
    };
    command.args([
        "--",
        &limit,
        "-rss_limit_mb=2048",
        "-timeout=10",
        "-print_final_stats=1",
    ]);
    let output = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("running cargo fuzz run {target}"));
    let _ = std::fs::remove_dir_all(&scratch);
    let output = output?;
    let log = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "fuzz target {target} failed ({}):\n{}",
            output.status,
            tail.join("\n")
        );
    }
    parse_stats(target, &log)
        .with_context(|| format!("no final statistics from fuzz target {target}:\n{log}"))
}

/// Minimizes what runs found for `target` (`cargo fuzz cmin` on fuzz/corpus/<target>): only
/// inputs that add coverage stay. The seeds are left alone.
pub fn minimize(target: &str) -> Result<()> {
    let status = fuzz_command()
        .args(["cmin", "--fuzz-dir", "fuzz", target])
        .arg(corpus_dir(target))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("running cargo fuzz cmin {target}"))?;
    if !status.success() {
        bail!("`cargo fuzz cmin {target}` failed: {status}");
    }
    Ok(())
}

/// `stat::number_of_executed_units: N`, `Done N runs in S second(s)` and the corpus size of the
/// last status line.
fn parse_stats(target: &str, log: &str) -> Option<FuzzRun> {
    let stat = |name: &str| -> Option<u64> {
        log.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
    };
    let runs = stat("stat::number_of_executed_units:")?;
    let seconds = log.lines().find_map(|l| {
        let rest = l.strip_prefix("Done ")?;
        rest.split(" in ")
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })?;
    let corpus_inputs = log
        .lines()
        .rev()
        .find_map(|l| {
            let rest = l.split("corp: ").nth(1)?;
            rest.split('/').next()?.parse().ok()
        })
        .unwrap_or(0);
    Some(FuzzRun {
        target: target.to_string(),
        runs,
        seconds,
        corpus_inputs,
    })
}

/// Whether fuzz/seeds/<target> has inputs (they are committed; regenerated if missing).
pub fn seeds_present(target: &str) -> bool {
    std::fs::read_dir(seeds_dir(target)).is_ok_and(|mut d| d.next().is_some())
}

pub fn describe(run: &FuzzRun) -> String {
    format!(
        "fuzz: {:<15} {:>9} runs in {:>4} s, corpus {:>5} inputs, no crash",
        run.target, run.runs, run.seconds, run.corpus_inputs
    )
}

/// The fuzz directory, for messages.
pub fn fuzz_dir() -> PathBuf {
    workspace_root().join("fuzz")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzer_statistics() {
        let log = "INFO: Seed: 1\n#2\tINITED cov: 10 ft: 11 corp: 5/100b exec/s: 0 rss: 30Mb\n\
                   #4096\tpulse  cov: 12 ft: 20 corp: 9/1Kb lim: 4 exec/s: 2048 rss: 31Mb\n\
                   Done 20000 runs in 3 second(s)\n\
                   stat::number_of_executed_units: 20000\nstat::average_exec_per_sec:     6666\n";
        let run = parse_stats("t", log).unwrap();
        assert_eq!((run.runs, run.seconds, run.corpus_inputs), (20000, 3, 9));
        assert!(parse_stats("t", "crashed").is_none());
    }

    #[test]
    fn every_target_is_declared() {
        let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
        for (target, _) in TARGETS {
            assert!(
                manifest.contains(&format!("name = \"{target}\"")),
                "{target} missing from fuzz/Cargo.toml"
            );
            assert!(
                fuzz_dir()
                    .join(format!("fuzz_targets/{target}.rs"))
                    .exists(),
                "{target} has no source"
            );
        }
    }
}
