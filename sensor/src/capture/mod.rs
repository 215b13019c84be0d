//! The kernel side of the agent: the XDP program, its maps, its attachment and its ring buffer.

mod ports;
mod program;
mod ring;

use std::{fmt, str::FromStr};

pub use crate::prefix::{Prefix, PrefixError, parse_prefixes};
pub use ports::{DEFAULT_PORTS, PortSet, PortSetError};
pub use program::{Attachment, SensorProgram, XdpVerdict, ifindex};
pub use ring::{RingPages, RingReader};

/// How the program is attached to the interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AttachMode {
    /// In the driver (XDP_FLAGS_DRV_MODE): the fast path. Fails if the driver lacks XDP.
    #[default]
    Native,
    /// In the kernel's generic hook (XDP_FLAGS_SKB_MODE): works everywhere, much slower.
    Generic,
    /// Native if the driver supports it, else generic; the mode used is reported.
    Auto,
}

impl AttachMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
            AttachMode::Auto => "auto",
        }
    }
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AttachMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "native" | "driver" | "drv" => Ok(AttachMode::Native),
            "generic" | "skb" => Ok(AttachMode::Generic),
            "auto" => Ok(AttachMode::Auto),
            other => Err(format!(
                "unknown XDP mode `{other}`: expected native, generic or auto"
            )),
        }
    }
}

/// Everything that can go wrong between the agent and the kernel, each with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("no such network interface `{0}` in this network namespace: check `ip link`")]
    NoInterface(String),
    #[error(
        "missing privilege to load or attach XDP programs ({0}): run as root or grant \
         CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON"
    )]
    Privilege(String),
    #[error(
        "interface `{interface}` does not support XDP in {mode} mode ({message}); \
         use --xdp-mode generic (slower) or auto"
    )]
    ModeUnsupported {
        interface: String,
        mode: AttachMode,
        message: String,
    },
    #[error(
        "interface `{0}` already has an XDP program attached; remove it first \
         (`ip link set dev {0} xdp off`) or stop the other sensor"
    )]
    Busy(String),
    #[error("attaching to `{0}` failed: {1}")]
    Attach(String, String),
    #[error("loading the XDP program failed: {0}")]
    Load(String),
    #[error(
        "the XDP object has no `{0}`: the build is inconsistent, rebuild with `cargo xtask build`"
    )]
    Missing(&'static str),
    #[error("map {map}: {message}")]
    Map { map: &'static str, message: String },
    #[error(
        "ring buffer size {ring_bytes} is not a power of two multiple of the page size ({page}): \
         try 67108864 (64 MiB)"
    )]
    RingSize { ring_bytes: u32, page: u32 },
    #[error("{0} possible CPUs: the program has ring slots for 1 to {max}", max = sensor_common::MAX_CPUS)]
    Cpus(usize),
    #[error("BPF_PROG_TEST_RUN failed: {0}")]
    TestRun(String),
    #[error("ring buffer: {0}")]
    Ring(std::io::Error),
}
