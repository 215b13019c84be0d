//! IP-ID behaviour: what one packet's ID says, and what a source's IDs say across its packets,
//! with DF, as OS / NAT / tool hints. Per-source state lives in a bounded LRU table.
//!
//! Caveat carried into every hint: the classic "Linux sends ID 0 for unconnected UDP with DF"
//! (CVE-2002-0510) no longer holds on recent kernels; on this project's 6.18 kernel such packets
//! carry non-zero IDs incrementing by one.

use std::{hash::BuildHasher as _, net::IpAddr};

use hashbrown::HashTable;

use super::facts::Packet;

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

const NIL: u32 = u32::MAX;

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
}

impl SourceHashing {
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
    state: SourceState,
    prev: u32,
    next: u32,
}

/// Per-source IP-ID state with bounded memory: at most `capacity` sources, the least recently
/// seen evicted first (and counted).
pub struct SourceTracker {
    capacity: usize,
    /// Slots of `nodes`, found by the node's key: 4 bytes a bucket instead of a copy of the
    /// 17-byte address beside each slot (a million sources: about 40 MB less).
    index: HashTable<u32>,
    hashing: SourceHashing,
    nodes: Vec<Node>,
    head: u32,
    tail: u32,
    evictions: u64,
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
            head: NIL,
            tail: NIL,
            evictions: 0,
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

    fn unlink(&mut self, i: u32) {
        let (prev, next) = {
            let n = &self.nodes[i as usize];
            (n.prev, n.next)
        };
        if prev == NIL {
            self.head = next;
        } else {
            self.nodes[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.nodes[next as usize].prev = prev;
        }
    }

    fn push_front(&mut self, i: u32) {
        self.nodes[i as usize].prev = NIL;
        self.nodes[i as usize].next = self.head;
        if self.head != NIL {
            self.nodes[self.head as usize].prev = i;
        }
        self.head = i;
        if self.tail == NIL {
            self.tail = i;
        }
    }

    fn insert_slot(&mut self, hash: u64, slot: u32) {
        let (nodes, hashing) = (&self.nodes, &self.hashing);
        self.index
            .insert_unique(hash, slot, |&i| hashing.hash_one(nodes[i as usize].key));
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
                self.unlink(i);
                i
            }
            None if self.nodes.len() < self.capacity => {
                self.nodes.push(Node {
                    key: p.src_ip,
                    state: SourceState::default(),
                    prev: NIL,
                    next: NIL,
                });
                let i = (self.nodes.len() - 1) as u32;
                self.insert_slot(hash, i);
                i
            }
            None => {
                let victim = self.tail;
                self.unlink(victim);
                let old_hash = self.hashing.hash_one(self.nodes[victim as usize].key);
                if let Ok(entry) = self.index.find_entry(old_hash, |&i| i == victim) {
                    entry.remove();
                }
                self.evictions += 1;
                let node = &mut self.nodes[victim as usize];
                node.key = p.src_ip;
                node.state = SourceState::default();
                self.insert_slot(hash, victim);
                victim
            }
        };
        self.push_front(i);
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

    #[test]
    fn bounded_lru() {
        let mut t = SourceTracker::new(3);
        for i in 0..3 {
            t.observe(&packet(&format!("10.0.0.{i}"), 0, true), 0);
        }
        // Touch .0 so .1 becomes the oldest.
        t.observe(&packet("10.0.0.0", 0, true), 1);
        t.observe(&packet("10.0.0.9", 0, true), 2);
        assert_eq!(t.len(), 3);
        assert_eq!(t.evictions(), 1);
        // .0 survived with its history, .1 was evicted and starts over.
        assert_eq!(t.observe(&packet("10.0.0.0", 0, true), 3).packets, 3);
        assert_eq!(t.observe(&packet("10.0.0.1", 0, true), 4).packets, 1);
        for i in 0..10_000u32 {
            let ip = std::net::Ipv4Addr::from(i).to_string();
            t.observe(&packet(&ip, 1, true), 5);
        }
        assert_eq!(t.len(), 3);
        assert!(t.evictions() > 9_000);
    }
}
