//! Types shared by the XDP program (`sensor-ebpf`) and the agent (`sensor`).
//!
//! Everything here is `#[repr(C)]`, padding-free and made of plain integers, so that the kernel
//! writes the exact bytes the agent reads. Multi-byte numbers are in host byte order (the kernel
//! side converts from network order once); addresses and TCP option bytes are kept as they were on
//! the wire.
#![no_std]

/// Bytes of L4 payload a record can hold.
///
/// 1024 holds every scanner request in the reference corpus whole, SDP bodies included (svwar and
/// sippts INVITEs, the SIPScan INVITE of the second seed are 600 to 800 bytes; svmap OPTIONS about
/// 400, nmap NSE about 550), so header order and the body's `s=` line survive. A power of two
/// because the kernel masks the copy length with `PAYLOAD_CAPACITY - 1` to keep the verifier happy.
pub const PAYLOAD_CAPACITY: usize = 1024;

/// The default number of payload bytes captured per record (`--prefix-len`).
pub const DEFAULT_PREFIX_LEN: u16 = PAYLOAD_CAPACITY as u16;

/// TCP options are at most 40 bytes (data offset 15 words minus the fixed 20-byte header).
pub const TCP_OPTIONS_CAPACITY: usize = 40;

/// Ports are held as a bitmap of 65536 bits in 1024 array slots of 64 bits.
pub const PORT_BITMAP_WORDS: u32 = 1024;

/// The port set as the XDP program reads it: global data of the object (section `.data.ports`,
/// which the loader makes a one-slot array map of that name), so that the per-frame check is a
/// plain load, with no map lookup.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortMatch {
    /// Bit `port & 63` of word `port >> 6` is set for a port in the set.
    pub words: [u64; PORT_BITMAP_WORDS as usize],
    /// Non-zero: a frame also matches when its source port is in the set; the agent keeps it
    /// equal to `SensorConfig::match_source_port` (here so that a frame that does not match reads
    /// no other map).
    pub match_source_port: u64,
}

impl PortMatch {
    pub const fn empty() -> Self {
        Self {
            words: [0; PORT_BITMAP_WORDS as usize],
            match_source_port: 0,
        }
    }
}

/// Default ring buffer memory, all CPUs' rings together: 64 MiB holds about 57,000 records of a
/// full 1024-byte payload and about 101,000 of a 400-byte svmap OPTIONS (class 512): one to two
/// seconds of a 50 kpps scan burst with the agent stalled.
pub const DEFAULT_RING_BYTES: u32 = 64 * 1024 * 1024;

/// Slots of the per-CPU ring array in the object; the agent sets it to the number of possible
/// CPUs when it loads the program.
pub const MAX_CPUS: usize = 1024;

/// Size of the ring in the object's inner map definition: only a template for the verifier (the
/// agent creates the real rings); one page, the smallest ring the kernel makes.
pub const RING_TEMPLATE_BYTES: usize = 4096;

/// Names of the maps in the object, used by the agent to find them.
pub mod map_names {
    pub const EVENTS: &str = "EVENTS";
    pub const SOURCE_BUCKETS: &str = "SOURCE_BUCKETS";
    pub const SYNACK_BUCKETS: &str = "SYNACK_BUCKETS";
    pub const REACTIVE_PREFIXES: &str = "REACTIVE_PREFIXES";
    pub const COOKIE_SECRETS: &str = "COOKIE_SECRETS";
    pub const COUNTERS: &str = "COUNTERS";
    pub const CONFIG: &str = "CONFIG";
    /// The `PortMatch` global (section `.data.ports`).
    pub const PORT_MATCH: &str = ".data.ports";
}

/// Name of the XDP program in the object.
pub const PROGRAM_NAME: &str = "sip_sensor";

/// What to do with a frame whose port matched.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchAction {
    /// XDP_DROP: the darknet default, nothing listens behind the sensor.
    Drop = 0,
    /// XDP_PASS: hand the frame on to the kernel stack.
    Pass = 1,
}

/// The agent's settings for the kernel program: slot 0 of the `CONFIG` array.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SensorConfig {
    /// A [`MatchAction`] value.
    pub action: u32,
    /// Non-zero: a frame also matches when its source port is in the set (mirrored links).
    pub match_source_port: u32,
    /// Payload bytes to capture, 1..=[`PAYLOAD_CAPACITY`].
    pub prefix_len: u32,
    /// Records are submitted without waking the reader until this many bytes wait in the ring;
    /// the reader also drains on a timer. 0: the kernel's own policy (wake when the reader has
    /// caught up).
    pub wakeup_bytes: u32,
    /// Per-source token bucket: one record costs this many nanoseconds of credit (1e9 / rate).
    /// 0: no limit.
    pub source_period_ns: u64,
    /// Credit a source can bank, in nanoseconds (burst * period).
    pub source_burst_ns: u64,
    /// A [`ReactivePolicy`] value: 0 leaves TCP unanswered (the default).
    pub reactive: u32,
    /// SYN cookies carry time in units of 2^cookie_shift nanoseconds and stay valid for the
    /// current and the previous unit.
    pub cookie_shift: u32,
    /// Which slot of `COOKIE_SECRETS` signs new cookies (0 or 1); the other still validates.
    pub secret_generation: u32,
    pub reserved: u32,
    /// Per-source token bucket for SYN-ACKs (same units as the record bucket); the darknet must
    /// not become a reflector. 0 period: no SYN-ACK is ever sent.
    pub synack_period_ns: u64,
    pub synack_burst_ns: u64,
}

/// How the XDP program answers TCP at darknet addresses.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReactivePolicy {
    /// Never answer (default).
    Off = 0,
    /// SYN-ACK with a SYN cookie; then stay silent, like the rogue listener of the second seed.
    Silent = 1,
    /// SYN-ACK with a SYN cookie; then answer the first data segment with RST.
    Reset = 2,
}

/// SYN cookies are valid for two time units of 2^36 ns (about 69 s each).
pub const DEFAULT_COOKIE_SHIFT: u32 = 36;

impl SensorConfig {
    pub const fn new(action: MatchAction, match_source_port: bool, prefix_len: u16) -> Self {
        Self {
            action: action as u32,
            match_source_port: match_source_port as u32,
            prefix_len: prefix_len as u32,
            wakeup_bytes: 0,
            source_period_ns: 0,
            source_burst_ns: 0,
            reactive: ReactivePolicy::Off as u32,
            cookie_shift: DEFAULT_COOKIE_SHIFT,
            secret_generation: 0,
            reserved: 0,
            synack_period_ns: 0,
            synack_burst_ns: 0,
        }
    }

    /// Answers TCP SYNs to reactive prefixes with at most `per_second` SYN-ACKs per source
    /// (bursts of `burst`).
    pub const fn with_reactive(
        mut self,
        policy: ReactivePolicy,
        per_second: u32,
        burst: u32,
    ) -> Self {
        self.reactive = policy as u32;
        if per_second == 0 {
            self.synack_period_ns = 0;
            self.synack_burst_ns = 0;
        } else {
            self.synack_period_ns = 1_000_000_000 / per_second as u64;
            let burst = if burst == 0 { 1 } else { burst as u64 };
            self.synack_burst_ns = self.synack_period_ns * burst;
        }
        self
    }

    /// Limits each source to `per_second` records with bursts of `burst`; 0 turns it off.
    pub const fn with_source_limit(mut self, per_second: u32, burst: u32) -> Self {
        if per_second == 0 {
            self.source_period_ns = 0;
            self.source_burst_ns = 0;
        } else {
            self.source_period_ns = 1_000_000_000 / per_second as u64;
            let burst = if burst == 0 { 1 } else { burst as u64 };
            self.source_burst_ns = self.source_period_ns * burst;
        }
        self
    }

    pub const fn with_wakeup_bytes(mut self, bytes: u32) -> Self {
        self.wakeup_bytes = bytes;
        self
    }
}

/// A source's token bucket (per CPU), in the `SOURCE_BUCKETS` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceBucket {
    /// Banked credit, nanoseconds.
    pub credit_ns: u64,
    /// When the credit was last topped up.
    pub last_ns: u64,
}

/// Sources tracked by the token bucket at once (LRU: the least recent are forgotten).
pub const SOURCE_BUCKETS: u32 = 65_536;

/// Darknet prefixes the reactive responder may answer for, in `REACTIVE_PREFIXES` (an LPM trie).
/// IPv4 prefixes are stored IPv4-mapped (`::ffff:a.b.c.d`, prefix length + 96).
pub const REACTIVE_PREFIXES: u32 = 1024;

/// The LPM trie key of an address, with the IPv4-mapped form for IPv4.
pub fn lpm_key_bytes(ip_version: u8, addr: &[u8; 16]) -> [u8; 16] {
    if ip_version == 4 {
        let mut mapped = [0u8; 16];
        mapped[10] = 0xff;
        mapped[11] = 0xff;
        mapped[12..].copy_from_slice(&addr[..4]);
        mapped
    } else {
        *addr
    }
}

/// Indexes of the per-CPU counters in the `COUNTERS` map.
///
/// Every frame increments `FramesSeen` and exactly one of the outcome counters (from `NonIp` to
/// `Matched`); every matched frame increments exactly one of `Emitted`, `RingFull` and
/// `RateLimited`. So `seen = sum(outcomes)` and `matched = emitted + ring_full + rate_limited`
/// hold at any quiescent moment.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    FramesSeen = 0,
    /// Not IPv4 or IPv6 after at most two VLAN tags (ARP, LLDP, a third VLAN tag, ...).
    NonIp = 1,
    /// A header the frame announces is cut short by the end of the frame.
    Truncated = 2,
    /// A header with impossible values (IP version mismatch, IHL < 5, TCP data offset < 5,
    /// IPv4 total length shorter than its header, UDP length < 8).
    Malformed = 3,
    /// IPv4 or IPv6 fragments with a non-zero offset: they carry no ports to match.
    NonFirstFragment = 4,
    /// IP packets that are neither UDP nor TCP (ICMP, ESP, ...).
    OtherL4 = 5,
    /// IPv6 packets whose extension header chain is longer than the program follows.
    Ipv6ExtensionLimit = 6,
    /// UDP or TCP whose ports are not in the set.
    PortMiss = 7,
    Matched = 8,
    Emitted = 9,
    /// Matched, but the ring buffer had no room: the record is lost, and counted here.
    RingFull = 10,
    /// Matched, but the source was over its token-bucket rate: shed, and counted here.
    RateLimited = 11,
    // Side counters of the reactive TCP responder: not outcomes, they count what it did.
    /// SYN-ACKs transmitted (XDP_TX).
    SynAckSent = 12,
    /// SYNs not answered because their source was over its SYN-ACK rate.
    SynAckRefused = 13,
    /// SYNs to a matched port not answered because the destination is not a reactive prefix, the
    /// source is one, or the source is not a unicast address.
    ReactiveOutOfScope = 14,
    /// ACKs to a reactive prefix carrying a valid cookie (a handshake completed with us).
    CookieValid = 15,
    /// ACKs to a reactive prefix whose cookie did not validate (forged, or expired).
    CookieInvalid = 16,
    /// RSTs transmitted in answer to data (policy `reset`).
    RstSent = 17,
    /// Replies that could not be built (the frame could not be resized or rewritten); the frame
    /// got the configured action instead.
    ReplyFailed = 18,
}

/// Slots of the per-CPU counter block: a power of two at least `Counter::COUNT`, so the kernel
/// can mask an index instead of checking it.
pub const COUNTER_SLOTS: usize = 32;

impl Counter {
    pub const COUNT: u32 = 19;
    pub const ALL: [Counter; Self::COUNT as usize] = [
        Counter::FramesSeen,
        Counter::NonIp,
        Counter::Truncated,
        Counter::Malformed,
        Counter::NonFirstFragment,
        Counter::OtherL4,
        Counter::Ipv6ExtensionLimit,
        Counter::PortMiss,
        Counter::Matched,
        Counter::Emitted,
        Counter::RingFull,
        Counter::RateLimited,
        Counter::SynAckSent,
        Counter::SynAckRefused,
        Counter::ReactiveOutOfScope,
        Counter::CookieValid,
        Counter::CookieInvalid,
        Counter::RstSent,
        Counter::ReplyFailed,
    ];

    /// Stable snake_case name, used in JSON and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::FramesSeen => "frames_seen",
            Counter::NonIp => "non_ip",
            Counter::Truncated => "truncated",
            Counter::Malformed => "malformed",
            Counter::NonFirstFragment => "non_first_fragment",
            Counter::OtherL4 => "other_l4",
            Counter::Ipv6ExtensionLimit => "ipv6_extension_limit",
            Counter::PortMiss => "port_miss",
            Counter::Matched => "matched",
            Counter::Emitted => "emitted",
            Counter::RingFull => "ring_full",
            Counter::RateLimited => "rate_limited",
            Counter::SynAckSent => "synack_sent",
            Counter::SynAckRefused => "synack_refused",
            Counter::ReactiveOutOfScope => "reactive_out_of_scope",
            Counter::CookieValid => "cookie_valid",
            Counter::CookieInvalid => "cookie_invalid",
            Counter::RstSent => "rst_sent",
            Counter::ReplyFailed => "reply_failed",
        }
    }
}

/// `CaptureRecord::ip_flags` bits.
pub mod ip_flags {
    /// IPv4 Don't Fragment.
    pub const DF: u8 = 1 << 0;
    /// More Fragments (IPv4 flag or IPv6 fragment header).
    pub const MF: u8 = 1 << 1;
    /// The IPv4 reserved ("evil") bit: never set by real stacks, set by some crafted packets.
    pub const RESERVED: u8 = 1 << 2;
    /// IPv6 packet carried a fragment header.
    pub const IPV6_FRAGMENT_HEADER: u8 = 1 << 3;
}

/// `CaptureRecord::flags` bits.
pub mod record_flags {
    /// The destination port is in the set.
    pub const MATCHED_DST_PORT: u8 = 1 << 0;
    /// The source port is in the set (and source matching is on): a response on a mirrored link.
    pub const MATCHED_SRC_PORT: u8 = 1 << 1;
    /// The frame holds fewer payload bytes than the L3/L4 headers declare.
    pub const FRAME_SHORT: u8 = 1 << 2;
    /// A TCP segment whose ACK carries a valid SYN cookie of ours: part of a reactive session.
    pub const REACTIVE_SESSION: u8 = 1 << 3;
    /// A SYN the reactive responder answered with a SYN-ACK.
    pub const SYN_ANSWERED: u8 = 1 << 4;
}

/// IP protocol numbers the program distinguishes.
pub mod ip_proto {
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
}

/// One matched frame, as the XDP program writes it into the ring buffer, with room for `N`
/// payload bytes.
///
/// The kernel reserves the smallest record of [`PAYLOAD_CLASSES`] that holds the captured payload
/// (a ring holds 1.77 times as many records of a svmap OPTIONS as of full records); the agent
/// reads the fixed part, [`RecordHead`], and as many payload bytes as the ring item holds.
///
/// Field order keeps every field naturally aligned with no padding, so all
/// `HEADER_LEN` bytes before `tcp_options` are written by the kernel. Bytes of `payload` beyond
/// `captured_len` are not written and must not be read.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CaptureRecordOf<const N: usize> {
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC nanoseconds.
    pub timestamp_ns: u64,
    pub ifindex: u32,
    pub rx_queue: u32,
    /// IPv4 in the first 4 bytes (rest zero) or IPv6; network byte order.
    pub src_addr: [u8; 16],
    pub dst_addr: [u8; 16],
    pub tcp_seq: u32,
    pub tcp_ack: u32,
    /// IPv6 flow label (20 bits); 0 for IPv4.
    pub flow_label: u32,
    /// Length of the whole frame, including any fragments of a multi-buffer frame.
    pub frame_len: u32,
    /// IPv4 identification; 0 for IPv6.
    pub ip_id: u16,
    /// IPv4 total length, or 40 + IPv6 payload length (saturating).
    pub ip_total_len: u16,
    /// Fragment offset in bytes.
    pub frag_offset: u16,
    pub src_port: u16,
    pub dst_port: u16,
    pub tcp_window: u16,
    /// L4 payload length the headers declare (UDP length - 8, or IP length minus headers for TCP).
    pub payload_len: u16,
    /// Payload bytes present in `payload`.
    pub captured_len: u16,
    /// Offset of the L4 payload from the start of the frame.
    pub payload_offset: u16,
    /// VLAN IDs (12 bits) of the outer and inner tag, `vlan_count` of them valid.
    pub vlan_ids: [u16; 2],
    /// 4 or 6.
    pub ip_version: u8,
    /// TTL or hop limit.
    pub ttl: u8,
    /// IPv4 TOS or IPv6 traffic class.
    pub tos: u8,
    /// `ip_proto::UDP` or `ip_proto::TCP`.
    pub l4_proto: u8,
    /// `ip_flags` bits.
    pub ip_flags: u8,
    /// `record_flags` bits.
    pub flags: u8,
    pub vlan_count: u8,
    /// TCP flags byte (CWR..FIN); 0 for UDP.
    pub tcp_flags: u8,
    /// TCP data offset in 32-bit words; 0 for UDP.
    pub tcp_data_offset: u8,
    /// Bytes of TCP options in `tcp_options` (data offset * 4 - 20).
    pub tcp_options_len: u8,
    pub reserved: [u8; 8],
    /// Raw TCP option bytes, zero-filled past `tcp_options_len`.
    pub tcp_options: [u8; TCP_OPTIONS_CAPACITY],
    pub payload: [u8; N],
}

/// A record of the largest class: what the agent builds from pcaps and tests.
pub type CaptureRecord = CaptureRecordOf<PAYLOAD_CAPACITY>;

/// The part every record has, whatever its class: the header and the TCP options.
pub type RecordHead = CaptureRecordOf<0>;

/// Payload capacities of the records the kernel writes, smallest first: a record of class `N` is
/// `RecordHead::SIZE + N` bytes. Powers of two, because the kernel masks the copy length with
/// `N - 1` to give the verifier its bound.
pub const PAYLOAD_CLASSES: [usize; 5] = [0, 128, 256, 512, PAYLOAD_CAPACITY];

impl<const N: usize> CaptureRecordOf<N> {
    /// Bytes before `tcp_options`: all written by the kernel.
    pub const HEADER_LEN: usize = core::mem::offset_of!(CaptureRecordOf<N>, tcp_options);
    pub const SIZE: usize = core::mem::size_of::<CaptureRecordOf<N>>();

    /// The fixed part of the record, whatever its class.
    pub fn head(&self) -> &RecordHead {
        // SAFETY: `RecordHead` is this struct without its payload: the same fields at the same
        // offsets, with the same alignment, and no larger.
        unsafe { &*(self as *const Self).cast::<RecordHead>() }
    }

    /// A record with every byte zero.
    pub const fn zeroed() -> Self {
        // SAFETY: all fields are integers or arrays of integers, for which zero is valid.
        unsafe { core::mem::zeroed() }
    }
}

// The layout is part of the kernel/userspace contract: fail the build if it drifts.
const _: () = {
    assert!(CaptureRecord::HEADER_LEN == 104);
    assert!(CaptureRecord::SIZE == 104 + TCP_OPTIONS_CAPACITY + PAYLOAD_CAPACITY);
    assert!(CaptureRecord::SIZE.is_multiple_of(8));
    assert!(RecordHead::SIZE == 104 + TCP_OPTIONS_CAPACITY);
    assert!(RecordHead::SIZE.is_multiple_of(8));
    // Classes ascend in powers of two (the kernel's copy mask) up to the capacity.
    let mut i = 1;
    while i < PAYLOAD_CLASSES.len() {
        assert!(
            PAYLOAD_CLASSES[i].is_power_of_two() && PAYLOAD_CLASSES[i] > PAYLOAD_CLASSES[i - 1]
        );
        i += 1;
    }
    assert!(
        PAYLOAD_CLASSES[0] == 0 && PAYLOAD_CLASSES[PAYLOAD_CLASSES.len() - 1] == PAYLOAD_CAPACITY
    );
    assert!(PAYLOAD_CAPACITY.is_power_of_two());
    assert!(COUNTER_SLOTS.is_power_of_two() && COUNTER_SLOTS >= Counter::COUNT as usize);
    assert!(core::mem::size_of::<SensorConfig>() == 64);
};

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain-old-data, no padding, every bit pattern valid.
    unsafe impl aya::Pod for super::SensorConfig {}
    unsafe impl aya::Pod for super::PortMatch {}
    unsafe impl aya::Pod for super::SourceBucket {}
    unsafe impl<const N: usize> aya::Pod for super::CaptureRecordOf<N> {}
}
