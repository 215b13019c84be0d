//! The lab: a darknet namespace and a scanner namespace joined by a veth pair.
//!
//! ```text
//!  scanner ns                              darknet ns (the sensor attaches here)
//!  <scan_if> 198.51.100.2/24  <== veth ==>  <dark_if> 198.51.100.1/24
//!            2001:db8:5060::2/64                      2001:db8:5060::1/64
//!  routes: 203.0.113.0/24 via 198.51.100.1, 2001:db8:dead::/48 via 2001:db8:5060::1
//! ```
//!
//! The darknet prefixes (203.0.113.0/24, 2001:db8:dead::/48) are owned by nobody: packets to them
//! arrive at the darknet end and go no further (a new namespace does not forward). Only
//! documentation ranges are used. Everything is removed on drop; namespaces left by a killed run
//! are swept by [`sweep_stale`].

use std::{
    fs::File,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::AsRawFd as _,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context as _, Result, bail};

use crate::cmd;

/// Every lab namespace name starts with this, then `<tag>-<pid>-<n>-`.
pub const NAMESPACE_PREFIX: &str = "sslab";

pub const DARK_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub const SCAN_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
pub const DARK_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x5060, 0, 0, 0, 0, 1);
pub const SCAN_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x5060, 0, 0, 0, 0, 2);
/// The darknet prefixes routed to the darknet end.
pub const DARKNET_V4: &str = "203.0.113.0/24";
pub const DARKNET_V6: &str = "2001:db8:dead::/48";

/// A darknet address in 203.0.113.0/24.
pub fn darknet_v4(host: u8) -> Ipv4Addr {
    Ipv4Addr::new(203, 0, 113, host)
}

/// A darknet address in 2001:db8:dead::/48.
pub fn darknet_v6(host: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0xdead, 0, 0, 0, 0, host)
}

static SEQUENCE: AtomicU32 = AtomicU32::new(0);

pub struct Lab {
    pub dark_ns: String,
    pub scan_ns: String,
    pub dark_if: String,
    pub scan_if: String,
}

impl Lab {
    /// Creates the two namespaces and the veth pair. `tag` (a few letters) names the user.
    pub fn create(tag: &str) -> Result<Self> {
        let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let base = format!("{NAMESPACE_PREFIX}{tag}-{pid}-{n}");
        // Interface names: at most 15 bytes, unique on the machine while the lab lives.
        let short = format!("{:x}{:x}", pid, n);
        let lab = Self {
            dark_ns: format!("{base}-dark"),
            scan_ns: format!("{base}-scan"),
            dark_if: format!("sd{short}"),
            scan_if: format!("ss{short}"),
        };
        if lab.dark_if.len() > 15 {
            bail!("interface name {} too long", lab.dark_if);
        }
        // From here on, Drop removes whatever was created.
        lab.build()
            .with_context(|| format!("creating lab {base}"))?;
        Ok(lab)
    }

    fn build(&self) -> Result<()> {
        cmd("ip", &["netns", "add", &self.dark_ns])?;
        cmd("ip", &["netns", "add", &self.scan_ns])?;
        cmd(
            "ip",
            &[
                "link",
                "add",
                &self.dark_if,
                "netns",
                &self.dark_ns,
                "type",
                "veth",
                "peer",
                "name",
                &self.scan_if,
                "netns",
                &self.scan_ns,
            ],
        )?;
        for (ns, ifname, v4, v6) in [
            (&self.dark_ns, &self.dark_if, DARK_V4, DARK_V6),
            (&self.scan_ns, &self.scan_if, SCAN_V4, SCAN_V6),
        ] {
            let ip = |args: &[&str]| -> Result<()> {
                let mut full = vec!["-n", ns.as_str()];
                full.extend_from_slice(args);
                cmd("ip", &full)
            };
            ip(&["link", "set", "lo", "up"])?;
            ip(&["addr", "add", &format!("{v4}/24"), "dev", ifname])?;
            ip(&[
                "-6",
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                ifname,
                "nodad",
            ])?;
            ip(&["link", "set", ifname, "up"])?;
        }
        cmd(
            "ip",
            &[
                "-n",
                &self.scan_ns,
                "route",
                "add",
                DARKNET_V4,
                "via",
                &DARK_V4.to_string(),
            ],
        )?;
        cmd(
            "ip",
            &[
                "-n",
                &self.scan_ns,
                "-6",
                "route",
                "add",
                DARKNET_V6,
                "via",
                &DARK_V6.to_string(),
            ],
        )?;
        Ok(())
    }

    /// A command that runs inside the scanner namespace.
    pub fn in_scan(&self, program: &str) -> Command {
        in_namespace(&self.scan_ns, program)
    }

    /// A command that runs inside the darknet namespace.
    pub fn in_dark(&self, program: &str) -> Command {
        in_namespace(&self.dark_ns, program)
    }

    /// Moves the calling thread into the darknet namespace until the guard drops.
    pub fn enter_dark(&self) -> Result<NetnsGuard> {
        NetnsGuard::enter(&self.dark_ns)
    }

    /// Moves the calling thread into the scanner namespace until the guard drops.
    pub fn enter_scan(&self) -> Result<NetnsGuard> {
        NetnsGuard::enter(&self.scan_ns)
    }

    /// Attaches an XDP_PASS program to the scanner's end, which veth needs there to deliver
    /// frames the darknet end sends with XDP_TX. Detached when the returned descriptor drops.
    pub fn let_scanner_receive_xdp_tx(&self) -> Result<std::os::fd::OwnedFd> {
        let _ns = self.enter_scan()?;
        let program = crate::xdp_pass::PassProgram::load().context("load XDP_PASS program")?;
        program
            .attach(&self.scan_if)
            .context("attach XDP_PASS to the scanner end")
    }

    /// Turns GRO on at the darknet end, which gives it NAPI: veth takes frames redirected to it
    /// from XDP (the live-frames generator's) only then, unless an XDP program is attached there.
    pub fn take_redirected_frames(&self) -> Result<()> {
        cmd(
            "ip",
            &[
                "netns",
                "exec",
                &self.dark_ns,
                "ethtool",
                "-K",
                &self.dark_if,
                "gro",
                "on",
            ],
        )
    }

    /// Gives the scanner's interface another address of its subnet (198.51.100.0/24 or
    /// 2001:db8:5060::/64), to send from as another source.
    pub fn add_scan_address(&self, addr: IpAddr) -> Result<()> {
        let (cidr, flags): (String, &[&str]) = match addr {
            IpAddr::V4(a) if a.octets()[..3] == SCAN_V4.octets()[..3] => (format!("{a}/24"), &[]),
            // No duplicate address detection: the address is usable at once.
            IpAddr::V6(a) if a.segments()[..4] == SCAN_V6.segments()[..4] => {
                (format!("{a}/64"), &["nodad"])
            }
            _ => bail!("{addr} is not in the scanner's subnet"),
        };
        let mut args = vec![
            "-n",
            &self.scan_ns,
            "addr",
            "add",
            &cidr,
            "dev",
            &self.scan_if,
        ];
        args.extend_from_slice(flags);
        cmd("ip", &args)
    }

    /// Whether any XDP program is attached to the darknet interface.
    pub fn dark_has_xdp(&self) -> Result<bool> {
        let out = Command::new("ip")
            .args([
                "-n",
                &self.dark_ns,
                "-d",
                "link",
                "show",
                "dev",
                &self.dark_if,
            ])
            .output()
            .context("ip link show")?;
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(text.contains("prog/xdp") || text.contains(" xdp"))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth pair, which deletes the other end and
        // any XDP program attached to either.
        for ns in [&self.dark_ns, &self.scan_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn in_namespace(ns: &str, program: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, program]);
    c
}

/// Holds the calling thread in another network namespace; returns it home on drop.
pub struct NetnsGuard {
    home: File,
}

impl NetnsGuard {
    pub fn enter(ns: &str) -> Result<Self> {
        let home = File::open("/proc/thread-self/ns/net").context("open own netns")?;
        let target =
            File::open(format!("/run/netns/{ns}")).with_context(|| format!("open netns {ns}"))?;
        // SAFETY: valid descriptors; setns only affects this thread.
        if unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns({ns}): {}", std::io::Error::last_os_error());
        }
        Ok(Self { home })
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::setns(self.home.as_raw_fd(), libc::CLONE_NEWNET) };
    }
}

/// Removes lab namespaces whose creating process is gone (a run killed before its Drop).
pub fn sweep_stale() -> Result<Vec<String>> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .context("ip netns list")?;
    let mut removed = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(rest) = name.strip_prefix(NAMESPACE_PREFIX) else {
            continue;
        };
        let pid = rest.split('-').nth(1).and_then(|p| p.parse::<i32>().ok());
        let alive = pid.is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
            removed.push(name.to_string());
        }
    }
    Ok(removed)
}

/// Lab namespaces that exist now (any owner).
pub fn existing_namespaces() -> Vec<String> {
    Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| l.split_whitespace().next())
                .filter(|n| n.starts_with(NAMESPACE_PREFIX))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `addr` is in one of the ranges the lab may send to.
pub fn is_lab_address(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => {
            let o = a.octets();
            matches!(
                (o[0], o[1], o[2]),
                (192, 0, 2) | (198, 51, 100) | (203, 0, 113)
            ) || a.is_loopback()
        }
        IpAddr::V6(a) => {
            let s = a.segments();
            (s[0] == 0x2001 && s[1] == 0xdb8) || a.is_loopback()
        }
    }
}
