//! IP-ID behaviour: what one packet's ID says, and what a source's IDs say across its packets,
//! with DF, as OS / NAT / tool hints. Per-source state lives in a bounded table (CLOCK eviction).
//!
//! Caveat carried into every hint: the classic "Linux sends ID 0 for unconnected UDP with DF"
//! (CVE-2002-0510) no longer holds on recent kernels; on this project's 6.18 kernel such packets
//! carry non-zero IDs incrementing by one.

use std::{hash::BuildHasher as _, net::IpAddr};

use hashbrown::HashTable;

use super::facts::Packet;
use crate::prefetch;

/// zmap before 4.1 writes this ID into every packet.
pub const ZMAP_IP_ID: u16 = 54321;

/// What one packet's ID says on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketIpId {
    Zero,
    /// 54321 without DF: zmap before 4.1.
    Zmap,
    /// TCP with `id == (dst_ip ^ dst_port ^ seq) & 0xffff`: masscan.
    MasscanDerived,
    NonZero,
    /// IPv6 has no ID.
    NotApplicable,
}

impl PacketIpId {
    pub fn as_str(self) -> &'static str {
        match self {
            PacketIpId::Zero => "zero",
            PacketIpId::Zmap => "fixed_54321",
            PacketIpId::MasscanDerived => "masscan_derived",
            PacketIpId::NonZero => "non_zero",
            PacketIpId::NotApplicable => "not_applicable",
        }
    }
}

pub fn masscan_ip_id(dst_ip: IpAddr, dst_port: u16, seq: u32) -> Option<u16> {
    let IpAddr::V4(v4) = dst_ip else { return None };
    Some((u32::from(v4) ^ u32::from(dst_port) ^ seq) as u16)
}

pub fn classify_packet(p: &Packet) -> PacketIpId {
    if p.ip_version != 4 {
        return PacketIpId::NotApplicable;
    }
    if let Some(seq) = p.tcp_seq
        && masscan_ip_id(p.dst_ip, p.dst_port, seq) == Some(p.ip_id)
        && !p.dont_fragment
    {
        return PacketIpId::MasscanDerived;
    }
    match p.ip_id {
        0 => PacketIpId::Zero,
        ZMAP_IP_ID if !p.dont_fragment => PacketIpId::Zmap,
        _ => PacketIpId::NonZero,
    }
}

/// A source's ID sequence over the packets seen so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpIdBehaviour {
    /// Fewer than 3 packets (2 if both IDs are zero).
    Insufficient,
    Zero,
    Constant(u16),
    /// Every step forward by a small amount; `strict` when all steps are equal.
    Incrementing {
        step: u16,
        strict: bool,
    },
    Random,
}

impl IpIdBehaviour {
    pub fn as_str(self) -> &'static str {
        match self {
            IpIdBehaviour::Insufficient => "insufficient",
            IpIdBehaviour::Zero => "zero",
            IpIdBehaviour::Constant(_) => "constant",
            IpIdBehaviour::Incrementing { strict: true, .. } => "incrementing",
            IpIdBehaviour::Incrementing { strict: false, .. } => "incrementing_shared",
            IpIdBehaviour::Random => "random",
        }
    }
}

/// Forward steps up to this size count as "incrementing" (other traffic in between allowed).
const SMALL_STEP: u16 = 1024;

#[derive(Clone, Copy, Debug, Default)]
struct SourceState {
    packets: u64,
    df_packets: u64,
    zero: u64,
    first_id: u16,
    last_id: u16,
    all_same: bool,
    small_steps: u64,
    equal_steps: u64,
    last_step: Option<u16>,
    step_sum: u64,
    first_ns: u64,
    last_ns: u64,
}

impl SourceState {
    fn observe(&mut self, id: u16, df: bool, now_ns: u64) {
        if self.packets == 0 {
            self.first_id = id;
            self.all_same = true;
            self.first_ns = now_ns;
        } else {
            let step = id.wrapping_sub(self.last_id);
            if id != self.first_id {
                self.all_same = false;
            }
            if (1..=SMALL_STEP).contains(&step) {
                self.small_steps += 1;
                self.step_sum += u64::from(step);
            }
            if self.last_step == Some(step) {
                self.equal_steps += 1;
            }
            self.last_step = Some(step);
        }
        self.packets += 1;
        self.df_packets += u64::from(df);
        self.zero += u64::from(id == 0);
        self.last_id = id;
        self.last_ns = now_ns;
    }

    fn behaviour(&self) -> IpIdBehaviour {
        let steps = self.packets.saturating_sub(1);
        if self.zero == self.packets && self.packets >= 2 {
            return IpIdBehaviour::Zero;
        }
        if self.packets < 3 {
            return IpIdBehaviour::Insufficient;
        }
        if self.all_same {
            return IpIdBehaviour::Constant(self.first_id);
        }
        if self.small_steps == steps {
            let strict = self.equal_steps + 1 == steps;
            let step = if strict {
                self.last_step.unwrap_or(1)
            } else {
                (self.step_sum / steps.max(1)) as u16
            };
            return IpIdBehaviour::Incrementing { step, strict };
        }
        IpIdBehaviour::Random
    }
}

/// A source's state as seen after the current packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceView {
    pub packets: u64,
    pub df_packets: u64,
    pub zero_id_packets: u64,
    pub behaviour: IpIdBehaviour,
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
}

/// IP-ID conclusions for one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpIdInference {
    pub id: u16,
    pub df: bool,
    pub packet: PacketIpId,
    pub source: Option<SourceView>,
    pub hints: Vec<&'static str>,
    pub caveats: Vec<&'static str>,
}

const CAVEAT_KERNEL: &str = "Linux's UDP IP-ID changed across versions: older kernels sent 0 for \
    unconnected UDP with DF (CVE-2002-0510), recent ones (6.18 measured here) send non-zero IDs \
    incrementing by one, so zero points to an older Linux and non-zero does not rule Linux out";
const CAVEAT_NAT: &str = "a NAT or middlebox on the path may rewrite IP-IDs";

pub fn infer_ip_id(p: &Packet, source: Option<SourceView>) -> Option<IpIdInference> {
    let packet = classify_packet(p);
    if packet == PacketIpId::NotApplicable {
        return None;
    }
    let df = p.dont_fragment;
    let mut hints = Vec::new();
    let mut caveats = Vec::new();
    match packet {
        PacketIpId::Zero if df => {
            hints.push(
                "IP-ID 0 with DF: an unconnected UDP socket on an older Linux kernel (the seed's \
                 reasoning: Linux zeroes the ID of non-fragmentable UDP)",
            );
            caveats.push(CAVEAT_KERNEL);
        }
        PacketIpId::Zero => hints.push("IP-ID 0 without DF: unusual for a stack; a crafted packet"),
        PacketIpId::Zmap => {
            hints.push("IP-ID 54321 without DF: the constant zmap wrote before 4.1 (raw packets)")
        }
        PacketIpId::MasscanDerived => {
            hints.push("IP-ID equals (dst_ip ^ dst_port ^ seq) & 0xffff: masscan's raw TCP packets")
        }
        PacketIpId::NonZero => {
            hints.push(if df {
                "non-zero IP-ID with DF: not the classic Linux zero ID; a BSD or Windows stack, a \
                 NAT rewriting IDs, or a recent Linux kernel"
            } else {
                "non-zero IP-ID without DF: a raw-packet tool, Windows, or a stack that clears DF"
            });
            caveats.push(CAVEAT_KERNEL);
            caveats.push(CAVEAT_NAT);
        }
        PacketIpId::NotApplicable => {}
    }
    if let Some(view) = source {
        match view.behaviour {
            IpIdBehaviour::Zero => hints.push(
                "this source always sends IP-ID 0: Linux sending unconnected UDP with DF (older kernels)",
            ),
            IpIdBehaviour::Constant(ZMAP_IP_ID) => {
                hints.push("this source always sends IP-ID 54321: zmap before 4.1")
            }
            IpIdBehaviour::Constant(_) => {
                hints.push("this source repeats one non-zero IP-ID: a crafted or replayed packet")
            }
            IpIdBehaviour::Incrementing { strict: true, .. } => hints.push(
                "this source's IP-IDs increment by a fixed step: one counter used only for this \
                 traffic (a per-socket or per-destination counter, as recent Linux and BSDs keep)",
            ),
            IpIdBehaviour::Incrementing { strict: false, .. } => hints.push(
                "this source's IP-IDs increase by varying small steps: a counter shared with other \
                 traffic (a global-counter stack such as Windows, or a NAT)",
            ),
            IpIdBehaviour::Random => hints.push(
                "this source's IP-IDs are random: a raw-packet tool (nmap, zmap 4.1+), a stack \
                 with randomised IDs (OpenBSD, FreeBSD option), or a NAT that randomises",
            ),
            IpIdBehaviour::Insufficient => {}
        }
    }
    Some(IpIdInference {
        id: p.ip_id,
        df,
        packet,
        source,
        hints,
        caveats,
    })
}

/// Hashes source addresses for the tracker's index: a multiply-xor hash, fast enough for every
/// packet, keyed with random bits per tracker so that a sender choosing its (spoofed) source
/// addresses cannot aim them at one bucket chain.
#[derive(Clone, Copy)]
pub struct SourceHashing {
    k0: u64,
    k1: u64,
}

impl SourceHashing {
    pub fn new() -> Self {
        let mut key = [0u8; 16];
        // SAFETY: a valid buffer of the given length.
        let n = unsafe { libc::getrandom(key.as_mut_ptr().cast(), key.len(), 0) };
        if n != key.len() as isize {
            // No entropy source: the address of this frame and the time, which an outside
            // sender cannot read either.
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            let here = &t as *const u64 as u64;
            key[..8].copy_from_slice(&t.to_le_bytes());
            key[8..].copy_from_slice(&here.to_le_bytes());
        }
        SourceHashing {
            k0: u64::from_le_bytes(key[..8].try_into().unwrap_or_default()),
            k1: u64::from_le_bytes(key[8..].try_into().unwrap_or_default()) | 1,
        }
    }

    /// The same keys in every run, for hashes whose results must not change between runs (the
    /// aggregator's distinct counters, so that a report over the same documents gives the same
    /// estimates). Not for an index a sender could aim at.
    pub const fn fixed() -> Self {
        SourceHashing {
            k0: 0x243f_6a88_85a3_08d3,
            k1: 0x1319_8a2e_0370_7345,
        }
    }
}

impl Default for SourceHashing {
    fn default() -> Self {
        Self::new()
    }
}

pub struct SourceHasher {
    state: u64,
    k1: u64,
}

impl std::hash::BuildHasher for SourceHashing {
    type Hasher = SourceHasher;
    fn build_hasher(&self) -> SourceHasher {
        SourceHasher {
            state: self.k0,
            k1: self.k1,
        }
    }
}

impl std::hash::Hasher for SourceHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.state = (self.state ^ u64::from_le_bytes(word))
                .wrapping_mul(self.k1)
                .rotate_left(23);
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.state = (self.state ^ u64::from(n)).wrapping_mul(self.k1);
    }

    fn finish(&self) -> u64 {
        // Murmur3's finalizer: every output bit depends on every input bit (the table takes
        // both its top and its bottom bits).
        let mut h = self.state;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

struct Node {
    key: IpAddr,
    /// Set by every packet from this source, cleared by the hand passing over it: a source whose
    /// bit is clear when the hand comes round had no packet for a whole turn.
    referenced: bool,
    state: SourceState,
}

/// Per-source IP-ID state with bounded memory: at most `capacity` sources. When the table is full
/// a new source takes the slot of one chosen by CLOCK (second chance), counted in `evictions`: a
/// hand sweeps the slots in order from where it stopped last, clears the referenced bit of every
/// source that had a packet since it last passed, and evicts the first source whose bit is
/// already clear. A new source starts with its bit clear just behind the hand, so it has a full
/// turn to send again.
///
/// CLOCK only approximates least-recently-seen: a source with a packet in every turn of the hand
/// is never evicted, but the others go in slot order from the hand, not in the order they were
/// last seen. It is used because an exact LRU list wrote three other nodes per packet besides
/// the source's own (both neighbours to unlink it, the old head to link it in front), the two
/// neighbours at random places in a slab of megabytes; setting the bit writes only the node the
/// packet updates anyway.
pub struct SourceTracker {
    capacity: usize,
    /// Slots of `nodes`, found by the node's key: 4 bytes a bucket instead of a copy of the
    /// 17-byte address beside each slot (a million sources: about 40 MB less).
    index: HashTable<u32>,
    hashing: SourceHashing,
    nodes: Vec<Node>,
    /// The next slot the hand looks at when the table is full.
    hand: u32,
    evictions: u64,
    /// Slots the hand has stepped over, for the tests of its bound.
    #[cfg(test)]
    hand_steps: u64,
}

impl SourceTracker {
    pub const DEFAULT_CAPACITY: usize = 100_000;

    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        SourceTracker {
            capacity,
            index: HashTable::with_capacity(capacity.min(4096)),
            hashing: SourceHashing::new(),
            nodes: Vec::with_capacity(capacity.min(4096)),
            hand: 0,
            evictions: 0,
            #[cfg(test)]
            hand_steps: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// The slot to evict, with the hand left just past it (so the source put there gets a full
    /// turn).
    ///
    /// One sweep is at most a turn and a step: if every bit is set, the first turn clears them
    /// all and the first slot of the second turn is taken; the loop's bound of two turns is never
    /// reached. Over a run the hand cannot be made quadratic either: every step but the last of
    /// a sweep clears a bit, and only a packet from a tracked source sets one, so the hand takes
    /// at most one step per packet plus one per eviction.
    fn sweep(&mut self) -> u32 {
        let n = self.nodes.len();
        let mut i = self.hand as usize;
        let mut steps = 0;
        while steps < 2 * n {
            steps += 1;
            let node = &mut self.nodes[i];
            if !node.referenced {
                break;
            }
            node.referenced = false;
            i = if i + 1 == n { 0 } else { i + 1 };
        }
        #[cfg(test)]
        {
            self.hand_steps += steps as u64;
        }
        self.hand = if i + 1 == n { 0 } else { i as u32 + 1 };
        i as u32
    }

    fn insert_slot(&mut self, hash: u64, slot: u32) {
        let (nodes, hashing) = (&self.nodes, &self.hashing);
        self.index
            .insert_unique(hash, slot, |&i| hashing.hash_one(nodes[i as usize].key));
    }

    /// Asks the CPU to fetch what [`observe`](Self::observe) for `addr` will read (as
    /// `SourceTable::prefetch`): the index is probed, the node it points at only asked for.
    pub fn prefetch(&self, addr: IpAddr) {
        let hash = self.hashing.hash_one(addr);
        let nodes = self.nodes.as_ptr();
        self.index.find(hash, |&i| {
            prefetch::object(nodes.wrapping_add(i as usize));
            false
        });
    }

    /// Records a packet and returns its source's view.
    pub fn observe(&mut self, p: &Packet, now_ns: u64) -> SourceView {
        let hash = self.hashing.hash_one(p.src_ip);
        let nodes = &self.nodes;
        let found = self
            .index
            .find(hash, |&i| nodes[i as usize].key == p.src_ip)
            .copied();
        let i = match found {
            Some(i) => {
                self.nodes[i as usize].referenced = true;
                i
            }
            None if self.nodes.len() < self.capacity => {
                self.nodes.push(Node {
                    key: p.src_ip,
                    referenced: false,
                    state: SourceState::default(),
                });
                let i = (self.nodes.len() - 1) as u32;
                self.insert_slot(hash, i);
                i
            }
            None => {
                let victim = self.sweep();
                let old_hash = self.hashing.hash_one(self.nodes[victim as usize].key);
                if let Ok(entry) = self.index.find_entry(old_hash, |&i| i == victim) {
                    entry.remove();
                }
                self.evictions += 1;
                let node = &mut self.nodes[victim as usize];
                node.key = p.src_ip;
                node.referenced = false;
                node.state = SourceState::default();
                self.insert_slot(hash, victim);
                victim
            }
        };
        let state = &mut self.nodes[i as usize].state;
        state.observe(p.ip_id, p.dont_fragment, now_ns);
        SourceView {
            packets: state.packets,
            df_packets: state.df_packets,
            zero_id_packets: state.zero,
            behaviour: state.behaviour(),
            first_seen_ns: state.first_ns,
            last_seen_ns: state.last_ns,
        }
    }
}

impl Default for SourceTracker {
    fn default() -> Self {
        Self::new(Self::DEFAULT_CAPACITY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Transport;

    fn packet(src: &str, id: u16, df: bool) -> Packet {
        Packet {
            src_ip: src.parse().unwrap(),
            dst_ip: "192.0.2.1".parse().unwrap(),
            src_port: 5060,
            dst_port: 5060,
            transport: Transport::Udp,
            ttl: 52,
            ip_id: id,
            dont_fragment: df,
            ip_version: 4,
            tcp_seq: None,
        }
    }

    fn run(ids: &[u16], df: bool) -> IpIdBehaviour {
        let mut t = SourceTracker::new(8);
        let mut last = None;
        for (n, id) in ids.iter().enumerate() {
            last = Some(t.observe(&packet("198.51.100.7", *id, df), n as u64));
        }
        last.unwrap().behaviour
    }

    #[test]
    fn behaviours() {
        assert_eq!(run(&[0, 0], true), IpIdBehaviour::Zero);
        assert_eq!(run(&[5, 9], true), IpIdBehaviour::Insufficient);
        assert_eq!(
            run(&[100, 101, 102, 103], true),
            IpIdBehaviour::Incrementing {
                step: 1,
                strict: true
            }
        );
        assert_eq!(
            run(&[65534, 65535, 0, 1], true),
            IpIdBehaviour::Incrementing {
                step: 1,
                strict: true
            }
        );
        assert!(matches!(
            run(&[100, 103, 110, 111], false),
            IpIdBehaviour::Incrementing { strict: false, .. }
        ));
        assert_eq!(
            run(&[54321, 54321, 54321], false),
            IpIdBehaviour::Constant(54321)
        );
        assert_eq!(
            run(&[17, 40000, 3, 61000, 222], false),
            IpIdBehaviour::Random
        );
    }

    #[test]
    fn packet_classes() {
        assert_eq!(
            classify_packet(&packet("1.2.3.4", 0, true)),
            PacketIpId::Zero
        );
        assert_eq!(
            classify_packet(&packet("1.2.3.4", 54321, false)),
            PacketIpId::Zmap
        );
        assert_eq!(
            classify_packet(&packet("1.2.3.4", 54321, true)),
            PacketIpId::NonZero
        );
        let mut tcp = packet("1.2.3.4", 0, false);
        tcp.transport = Transport::Tcp;
        tcp.dst_port = 5060;
        tcp.tcp_seq = Some(0x1234_5678);
        tcp.ip_id = masscan_ip_id(tcp.dst_ip, 5060, 0x1234_5678).unwrap();
        assert_eq!(classify_packet(&tcp), PacketIpId::MasscanDerived);
    }

    #[test]
    fn seed_reasoning_hints() {
        let zero = infer_ip_id(&packet("1.2.3.4", 0, true), None).unwrap();
        assert!(zero.hints[0].contains("older Linux"));
        assert!(zero.caveats[0].contains("6.18"));
        let nonzero = infer_ip_id(&packet("1.2.3.4", 4242, true), None).unwrap();
        assert!(nonzero.hints[0].contains("BSD"));
        assert!(nonzero.hints[0].contains("NAT"));
    }

    fn v4(i: u32) -> String {
        std::net::Ipv4Addr::from(i).to_string()
    }

    /// The packet count of `src` if it is tracked, looked up without observing (which would
    /// evict).
    fn packets(t: &SourceTracker, src: &str) -> Option<u64> {
        let ip: IpAddr = src.parse().unwrap();
        t.index
            .find(t.hashing.hash_one(ip), |&i| t.nodes[i as usize].key == ip)
            .map(|&i| t.nodes[i as usize].state.packets)
    }

    #[test]
    fn bounded() {
        let mut t = SourceTracker::new(3);
        for i in 0..3 {
            t.observe(&packet(&format!("10.0.0.{i}"), 0, true), 0);
        }
        // A second packet from .0, whose slot the hand looks at first: it clears .0's bit and
        // takes .1.
        t.observe(&packet("10.0.0.0", 0, true), 1);
        t.observe(&packet("10.0.0.9", 0, true), 2);
        assert_eq!(t.len(), 3);
        assert_eq!(t.evictions(), 1);
        // .0 survived with its history, .1 was evicted and starts over.
        assert_eq!(t.observe(&packet("10.0.0.0", 0, true), 3).packets, 3);
        assert_eq!(t.observe(&packet("10.0.0.1", 0, true), 4).packets, 1);
        for i in 0..10_000u32 {
            t.observe(&packet(&v4(i), 1, true), 5);
        }
        assert_eq!(t.len(), 3);
        assert!(t.evictions() > 9_000);
    }

    #[test]
    fn second_chance() {
        // The same sources and the same newcomer, with and without a second packet from .0
        // before the newcomer: .0's slot is the first the hand looks at.
        for again in [false, true] {
            let mut t = SourceTracker::new(4);
            for i in 0..4 {
                t.observe(&packet(&format!("10.0.0.{i}"), 0, true), 0);
            }
            if again {
                t.observe(&packet("10.0.0.0", 0, true), 1);
            }
            t.observe(&packet("10.0.0.9", 0, true), 2);
            assert_eq!((t.len(), t.evictions()), (4, 1));
            if again {
                assert_eq!(packets(&t, "10.0.0.0"), Some(2));
                assert_eq!(packets(&t, "10.0.0.1"), None);
            } else {
                assert_eq!(packets(&t, "10.0.0.0"), None);
                assert_eq!(packets(&t, "10.0.0.1"), Some(1));
            }
            assert_eq!(packets(&t, "10.0.0.2"), Some(1));
            assert_eq!(packets(&t, "10.0.0.3"), Some(1));
            assert_eq!(packets(&t, "10.0.0.9"), Some(1));
        }
    }

    #[test]
    fn newcomer_gets_a_full_turn() {
        // Sources with one packet each go in arrival order: each newcomer is put just behind the
        // hand, so the next sweeps take the older sources first.
        const CAP: u32 = 8;
        let mut t = SourceTracker::new(CAP as usize);
        let ip = |i: u32| v4(0x0a00_0000 + i);
        for i in 0..CAP {
            t.observe(&packet(&ip(i), 0, true), 0);
        }
        for i in CAP..3 * CAP {
            t.observe(&packet(&ip(i), 0, true), 1);
            for j in 0..=i {
                let kept = j + CAP > i;
                assert_eq!(packets(&t, &ip(j)).is_some(), kept, "{j} after {i}");
            }
        }
    }

    #[test]
    fn flood_keeps_a_busy_source() {
        const CAP: usize = 64;
        const FLOOD: u32 = 20_000;
        let mut t = SourceTracker::new(CAP);
        let busy = packet("192.0.2.77", 7, true);
        for i in 0..FLOOD {
            t.observe(&packet(&v4(0x0a00_0000 + i), 1, true), u64::from(i));
            // One packet from the busy source after each newcomer: it never misses a turn.
            let view = t.observe(&busy, u64::from(i));
            assert_eq!(view.packets, u64::from(i) + 1);
            assert_eq!(t.len(), CAP.min(i as usize + 2));
        }
        // FLOOD + 1 distinct sources through CAP slots.
        assert_eq!(t.evictions(), u64::from(FLOOD) + 1 - CAP as u64);
    }

    #[test]
    fn reused_slot_starts_fresh() {
        // One slot: the newcomer takes the only source's slot after the hand clears its bit.
        let mut t = SourceTracker::new(1);
        for n in 0..5u16 {
            t.observe(&packet("10.0.0.1", 100 + n, false), u64::from(n));
        }
        let view = t.observe(&packet("10.0.0.2", 0, true), 20);
        assert_eq!(t.evictions(), 1);
        assert_eq!(packets(&t, "10.0.0.1"), None);
        assert_eq!(
            view,
            SourceView {
                packets: 1,
                df_packets: 1,
                zero_id_packets: 1,
                behaviour: IpIdBehaviour::Insufficient,
                first_seen_ns: 20,
                last_seen_ns: 20,
            }
        );
        // The old source's IDs are not part of the newcomer's sequence.
        let view = t.observe(&packet("10.0.0.2", 0, true), 21);
        assert_eq!((view.packets, view.behaviour), (2, IpIdBehaviour::Zero));
    }

    #[test]
    fn hand_sweep_is_bounded() {
        const CAP: u32 = 100;
        let mut t = SourceTracker::new(CAP as usize);
        let mut sent = 0u64;
        for _ in 0..2 {
            for i in 0..CAP {
                t.observe(&packet(&v4(0x0a00_0000 + i), 0, true), 0);
                sent += 1;
            }
        }
        // Every bit set: the first turn clears them all, the first slot of the second is taken.
        t.observe(&packet("192.0.2.1", 0, true), 1);
        sent += 1;
        assert_eq!(t.hand_steps, u64::from(CAP) + 1);
        assert_eq!(packets(&t, &v4(0x0a00_0000)), None);
        assert_eq!(packets(&t, &v4(0x0a00_0001)), Some(2));
        // A sender that sends from every tracked source before each new one makes every sweep a
        // full turn, but pays a packet for every step.
        for round in 0..300u32 {
            let tracked: Vec<IpAddr> = t.nodes.iter().map(|n| n.key).collect();
            for ip in tracked {
                t.observe(&packet(&ip.to_string(), 0, true), 2);
                sent += 1;
            }
            t.observe(&packet(&v4(0x0b00_0000 + round), 0, true), 2);
            sent += 1;
        }
        assert_eq!(t.evictions(), 301);
        assert!(
            t.hand_steps <= sent + t.evictions(),
            "{} steps for {sent} packets",
            t.hand_steps
        );
    }

    #[test]
    fn node_size() {
        // Key (17) + flag (1) + state (80), rounded to 8: the flag takes a byte of padding where
        // the LRU list's two u32 links made it 112, so 8 bytes less per source (memory bench,
        // issue 6: <= 300 bytes a source in all).
        assert_eq!(size_of::<Node>(), 104);
    }
}
