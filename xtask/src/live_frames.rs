//! A traffic generator for the end-to-end benchmark that the kernel drives: an XDP program run
//! by BPF_PROG_TEST_RUN in live frames mode (`BPF_F_TEST_XDP_LIVE_FRAMES`) that redirects every
//! frame to the scanner's end of the veth pair. Each frame goes out through veth's
//! `ndo_xdp_xmit` into the darknet end's receive ring, with no socket, no skb and no qdisc on the
//! sending side: it costs the sending CPU far less than AF_PACKET (the blaster), whose ceiling on
//! a two-CPU machine was the benchmark's bound.
//!
//! One test run sends a whole step. The program paces itself: before each frame it spins
//! (a bounded loop over `bpf_ktime_get_ns`) until that frame's time, kept in an array map that this
//! side sets before the run. A test run has a fixed cost of about 25 ms on this kernel (its page
//! pool is torn down after an RCU grace period), so runs cannot be short.
//!
//! The kernel sends the same frame in every run of a call, so the program varies it: it draws a
//! number k below [`SOURCES`] per frame and writes the IPv4 source's last byte as `2 + k` and the
//! destination's as `250 - k`. The two 16-bit words change by +k and -k, so the IPv4 header and
//! UDP checksums, which sum both, stay valid. The frames must be IPv4 from x.x.x.2 to x.x.x.250.
//!
//! The darknet end must have NAPI running to take such frames: an XDP program attached (the
//! sensor) or GRO on (`ethtool -K <if> gro on`, which the benchmark does). Frames veth could not
//! queue there are counted by veth (`tx_queue_N_xdp_xmit_errors` of the sending end) and reported
//! as refused: lost before any consumer, as a NIC drops what its ring cannot hold.

use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _, OwnedFd},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use crate::{
    blaster::SendReport,
    xdp_pass::{
        BPF_MAP_TYPE_ARRAY, BPF_PSEUDO_MAP_FD, create_map, insn, load_xdp, test_run_with,
        update_elem,
    },
};

const BPF_FUNC_MAP_LOOKUP_ELEM: i32 = 1;
const BPF_FUNC_KTIME_GET_NS: i32 = 5;
const BPF_FUNC_GET_PRANDOM_U32: i32 = 7;
const BPF_FUNC_REDIRECT: i32 = 23;
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;

/// Reads of the clock a frame waits at most (about 25 ns each here, so about 100 us: rates below
/// about 10,000 frames per second are sent faster than asked). The verifier walks the loop, and
/// takes at most 8,192 branches in a row.
const SPINS: i32 = 4_096;
/// Sources (and destinations) the program draws from.
const SOURCES: i32 = 241;
/// Where the IPv4 source's and destination's last bytes are in an untagged Ethernet frame.
const SRC_LAST: i16 = 14 + 15;
const DST_LAST: i16 = 14 + 19;

pub struct LiveFrames {
    program: OwnedFd,
    /// One entry: the next frame's time (ns, `bpf_ktime_get_ns`) and the time between frames.
    pacing: OwnedFd,
    interface: String,
    namespace: String,
    frame: Vec<u8>,
}

/// veth's count of frames it queued at its peer from XDP redirects out of `interface`, and of
/// those it could not queue (`ethtool -S`).
fn xdp_xmit_counters(namespace: &str, interface: &str) -> Result<(u64, u64)> {
    let out = Command::new("ip")
        .args(["netns", "exec", namespace, "ethtool", "-S", interface])
        .output()
        .context("ethtool -S")?;
    if !out.status.success() {
        bail!(
            "ethtool -S {interface}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (mut queued, mut errors) = (0, 0);
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some((name, value)) = line.trim().split_once(':') else {
            continue;
        };
        let (Some(queue), Ok(value)) =
            (name.strip_prefix("tx_queue_"), value.trim().parse::<u64>())
        else {
            continue;
        };
        if queue.ends_with("_xdp_xmit") {
            queued += value;
        } else if queue.ends_with("_xdp_xmit_errors") {
            errors += value;
        }
    }
    Ok((queued, errors))
}

/// The generator's program: vary the addresses, wait for the frame's time, redirect out of
/// `ifindex`. `pacing`: the map's descriptor.
fn program(ifindex: u32, pacing: i32) -> Vec<[u8; 8]> {
    // k below SOURCES; source byte 2 + k, destination byte 250 - k.
    let rewrite = [
        insn(0x85, 0, 0, 0, BPF_FUNC_GET_PRANDOM_U32),
        insn(0x94, 0, 0, 0, SOURCES), // w0 %= SOURCES
        insn(0xbf, 1, 0, 0, 0),       // r1 = k
        insn(0x07, 1, 0, 0, 2),       // r1 += 2
        insn(0x73, 7, 1, SRC_LAST, 0),
        insn(0xb7, 1, 0, 0, 250), // r1 = 250
        insn(0x1f, 1, 0, 0, 0),   // r1 -= k
        insn(0x73, 7, 1, DST_LAST, 0),
    ];
    // due = entry.next; entry.next = due + entry.gap; then spin until due, at most SPINS reads of
    // the clock (a bounded loop: the verifier walks it, and a callback through bpf_loop would
    // need BTF)
    let wait_for_due = [
        insn(0x79, 8, 0, 0, 0), // r8 = due
        insn(0x79, 2, 0, 8, 0),
        insn(0x0f, 2, 8, 0, 0),
        insn(0x7b, 0, 2, 0, 0),
        insn(0xb7, 9, 0, 0, 0), // r9 = 0
        insn(0x85, 0, 0, 0, BPF_FUNC_KTIME_GET_NS),
        insn(0x3d, 0, 8, 2, 0), // if now >= due: send
        insn(0x07, 9, 0, 0, 1),
        insn(0xa5, 9, 0, -4, SPINS), // if r9 < SPINS: read the clock again
    ];
    let mut code = vec![
        insn(0xbf, 6, 1, 0, 0),                    // r6 = ctx
        insn(0x61, 7, 6, 0, 0),                    // r7 = ctx->data
        insn(0x61, 8, 6, 4, 0),                    // r8 = ctx->data_end
        insn(0xbf, 1, 7, 0, 0),                    // r1 = data
        insn(0x07, 1, 0, 0, 34),                   // r1 += 34 (through the IPv4 destination)
        insn(0x2d, 1, 8, rewrite.len() as i16, 0), // if r1 > data_end: no rewrite
    ];
    code.extend(rewrite);
    code.extend([
        insn(0x62, 10, 0, -4, 0), // *(u32 *)(fp - 4) = 0, the key
        insn(0x18, 1, BPF_PSEUDO_MAP_FD, 0, pacing),
        insn(0, 0, 0, 0, 0),
        insn(0xbf, 2, 10, 0, 0),
        insn(0x07, 2, 0, 0, -4),
        insn(0x85, 0, 0, 0, BPF_FUNC_MAP_LOOKUP_ELEM),
        insn(0x15, 0, 0, wait_for_due.len() as i16, 0), // no entry: send at once
    ]);
    code.extend(wait_for_due);
    code.extend([
        insn(0xb7, 1, 0, 0, ifindex as i32),
        insn(0xb7, 2, 0, 0, 0),
        insn(0x85, 0, 0, 0, BPF_FUNC_REDIRECT),
        insn(0x95, 0, 0, 0, 0), // exit with the helper's XDP_REDIRECT
    ]);
    code
}

impl LiveFrames {
    /// A generator sending `frame` (IPv4, see the module's comment) out of `interface`, in
    /// `namespace`, which must be the calling thread's namespace, as it must be the sending
    /// thread's.
    pub fn new(namespace: &str, interface: &str, frame: Vec<u8>) -> Result<Self> {
        if frame.len() < 34 || frame[12..14] != [0x08, 0x00] || frame[29] != 2 || frame[33] != 250 {
            bail!("the generator's frame must be IPv4 from x.x.x.2 to x.x.x.250");
        }
        let name = std::ffi::CString::new(interface)?;
        // SAFETY: valid C string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            bail!("no interface {interface} in this namespace");
        }
        let pacing = create_map(BPF_MAP_TYPE_ARRAY, 4, 16, 1).context("create the pacing map")?;
        let program = load_xdp(&program(ifindex, pacing.as_raw_fd()), b"live_gen")
            .context("load the generator program")?
            .into_fd();
        Ok(Self {
            program,
            pacing,
            interface: interface.to_string(),
            namespace: namespace.to_string(),
            frame,
        })
    }

    fn set_pacing(&self, next_ns: u64, gap_ns: u64) -> io::Result<()> {
        let mut value = [0u8; 16];
        value[..8].copy_from_slice(&next_ns.to_ne_bytes());
        value[8..].copy_from_slice(&gap_ns.to_ne_bytes());
        update_elem(self.pacing.as_fd(), &0u32.to_ne_bytes(), &value)
    }

    /// Offers `total` frames at `rate` frames per second (0: as fast as possible) in one test
    /// run: all are sent, and those veth could not queue at the darknet end are `refused`.
    pub fn send(&self, total: u64, rate: u64) -> Result<SendReport> {
        let frames = u32::try_from(total).context("too many frames for one run")?;
        let (queued_before, refused_before) = xdp_xmit_counters(&self.namespace, &self.interface)?;
        let gap_ns = 1_000_000_000u64.checked_div(rate).unwrap_or(0);
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid timespec; CLOCK_MONOTONIC is bpf_ktime_get_ns's clock.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
        let now_ns = now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64;
        self.set_pacing(now_ns, gap_ns).context("set the pacing")?;
        // The kernel's mean time per frame over the runs, without the call's set-up and its
        // tear-down (about 25 ms).
        let (_, mean) = test_run_with(
            self.program.as_fd(),
            &self.frame,
            frames,
            BPF_F_TEST_XDP_LIVE_FRAMES,
        )
        .context("BPF_PROG_TEST_RUN in live frames mode")?;
        let (queued_after, refused_after) = xdp_xmit_counters(&self.namespace, &self.interface)?;
        let queued = queued_after.saturating_sub(queued_before);
        let refused = refused_after.saturating_sub(refused_before);
        if queued + refused != total {
            bail!("veth counted {queued} frames queued and {refused} refused of {total} sent");
        }
        Ok(SendReport {
            sent: total,
            refused,
            elapsed: mean.max(Duration::from_nanos(1)) * frames,
        })
    }
}
