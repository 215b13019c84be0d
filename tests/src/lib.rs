//! Helpers for the privileged end-to-end tests: crafted frames, a harness around the real XDP
//! program under BPF_PROG_TEST_RUN, a real Kafka broker, and (from `xtask::lab`) namespaces and
//! veth pairs.

pub mod agent_run;
pub mod corpus;
/// Crafted frames live in xtask, where the lab's traffic generator uses them too.
pub use xtask::frames;
pub mod harness;
pub mod kafka;
pub mod mutation;
pub mod sensor_process;

use std::{path::PathBuf, process::Command, sync::OnceLock};

/// The `sensor` binary, built once per test process (debug profile).
pub fn sensor_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = xtask::workspace_root();
            let status = Command::new(env!("CARGO"))
                .args(["build", "--quiet", "--package", "sensor", "--bin", "sensor"])
                .current_dir(&root)
                .status()
                .expect("run cargo build");
            assert!(status.success(), "building the sensor binary failed");
            root.join("target/debug/sensor")
        })
        .clone()
}

/// A fresh path under the system temporary directory, removed by the caller.
pub fn temp_path(name: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!("sensor-test-{}-{n}-{name}", std::process::id()))
}

pub use xtask::pin_to_cpu;
