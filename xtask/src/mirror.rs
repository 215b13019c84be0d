//! A mirror (SPAN) port for a [`Lab`]: copies of every frame crossing the darknet-side veth, in
//! both directions, delivered to a veth whose far end sits in a namespace of its own.
//!
//! ```text
//!  scanner ns                 darknet ns (the servers)                       tap ns
//!  <scan_if> <== veth ==> <dark_if> --tc ingress+egress mirred--> <mirror_if> ==> <tap_if>
//! ```
//!
//! XDP sees only frames arriving at its interface. On the darknet veth that is the client's
//! half of each exchange; the servers' answers leave through it and are never seen. The mirror
//! gives the sensor what a switch's SPAN port gives it: both directions, as ingress, on an
//! interface that carries nothing else, without touching the real traffic (the servers get
//! their packets whatever the sensor does with the copies). tc's mirred action runs before
//! netfilter on ingress, so a firewall DROP on the server still lets the sensor see the packet,
//! as on a real mirrored link.

use std::{
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    cmd,
    lab::{Lab, NAMESPACE_PREFIX, NetnsGuard},
};

static SEQUENCE: AtomicU32 = AtomicU32::new(0);

pub struct Mirror {
    /// The namespace of the sensor's end.
    pub tap_ns: String,
    /// Where the copies arrive (attach the sensor here).
    pub tap_if: String,
    /// The mirror's sending end, in the lab's darknet namespace.
    pub mirror_if: String,
}

impl Mirror {
    /// Mirrors both directions of `lab.dark_if` to a new tap namespace. `tag` names the user.
    pub fn create(lab: &Lab, tag: &str) -> Result<Self> {
        let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        // Same naming as the lab's namespaces, so that `lab::sweep_stale` finds leftovers.
        let short = format!("{pid:x}{n:x}");
        let mirror = Self {
            tap_ns: format!("{NAMESPACE_PREFIX}{tag}-{pid}-{n}-tap"),
            tap_if: format!("st{short}"),
            mirror_if: format!("sm{short}"),
        };
        if mirror.tap_if.len() > 15 {
            bail!("interface name {} too long", mirror.tap_if);
        }
        // From here on, Drop removes whatever was created.
        mirror
            .build(lab)
            .with_context(|| format!("creating mirror {}", mirror.tap_ns))?;
        Ok(mirror)
    }

    fn build(&self, lab: &Lab) -> Result<()> {
        cmd("ip", &["netns", "add", &self.tap_ns])?;
        cmd(
            "ip",
            &[
                "link",
                "add",
                &self.mirror_if,
                "netns",
                &lab.dark_ns,
                "type",
                "veth",
                "peer",
                "name",
                &self.tap_if,
                "netns",
                &self.tap_ns,
            ],
        )?;
        cmd(
            "ip",
            &["-n", &lab.dark_ns, "link", "set", &self.mirror_if, "up"],
        )?;
        cmd("ip", &["-n", &self.tap_ns, "link", "set", "lo", "up"])?;
        cmd(
            "ip",
            &["-n", &self.tap_ns, "link", "set", &self.tap_if, "up"],
        )?;
        cmd(
            "tc",
            &[
                "-n",
                &lab.dark_ns,
                "qdisc",
                "add",
                "dev",
                &lab.dark_if,
                "clsact",
            ],
        )?;
        for direction in ["ingress", "egress"] {
            // u32 matching everything: cls_matchall is not in every kernel, u32 is.
            cmd(
                "tc",
                &[
                    "-n",
                    &lab.dark_ns,
                    "filter",
                    "add",
                    "dev",
                    &lab.dark_if,
                    direction,
                    "u32",
                    "match",
                    "u32",
                    "0",
                    "0",
                    "action",
                    "mirred",
                    "egress",
                    "mirror",
                    "dev",
                    &self.mirror_if,
                ],
            )?;
        }
        Ok(())
    }

    /// Moves the calling thread into the tap namespace until the guard drops.
    pub fn enter_tap(&self) -> Result<NetnsGuard> {
        NetnsGuard::enter(&self.tap_ns)
    }

    /// Whether any XDP program is attached to the tap interface.
    pub fn tap_has_xdp(&self) -> Result<bool> {
        let out = Command::new("ip")
            .args([
                "-n",
                &self.tap_ns,
                "-d",
                "link",
                "show",
                "dev",
                &self.tap_if,
            ])
            .output()
            .context("ip link show")?;
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(text.contains("prog/xdp") || text.contains(" xdp"))
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        // Deleting the namespace deletes the tap end, which deletes the mirror end; the tc
        // filters go with the lab's darknet namespace.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.tap_ns])
            .status();
    }
}
