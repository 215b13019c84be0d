//! Per-source state: one fixed-size record per source address, in a slab (`Vec`) with a hash
//! index, an LRU order for the idle timeout and the capacity bound, and a free list. No string,
//! `Vec` or map per source: names are symbols, sets are bitmasks, the destination count is a
//! 32-byte sketch. See the size test: issue 6 budgets 300 bytes of resident memory per source.

use std::{
    hash::BuildHasher as _,
    net::{IpAddr, Ipv6Addr},
};

use hashbrown::HashTable;

use crate::{fingerprint::ipid::SourceHashing, prefetch};

use super::{
    distinct::DestSketch,
    lru::{Linked, Links, Lru},
};

/// Record flags.
pub mod flags {
    /// The slot holds a source (not on the free list).
    pub const LIVE: u8 = 1 << 0;
    pub const UDP: u8 = 1 << 1;
    pub const TCP: u8 = 1 << 2;
    /// The source was attributed to more than one tool.
    pub const MULTI_TOOL: u8 = 1 << 3;
    /// The source was seen in more than one campaign.
    pub const MULTI_CAMPAIGN: u8 = 1 << 4;
}

/// Everything kept about one source. Counters saturate.
#[derive(Clone, Copy, Debug, Default)]
pub struct SourceRecord {
    /// The address as IPv6 octets, IPv4 as `::ffff:a.b.c.d`.
    pub addr: [u8; 16],
    pub first_ns: u64,
    pub last_ns: u64,
    pub dests: DestSketch,
    links: Links,
    /// The campaign this source was last counted in: its slot and serial (serials are never
    /// reused; a closed campaign's slot is, so both are kept).
    pub campaign_slot: u32,
    pub campaign_serial: u32,
    pub packets: u32,
    pub v4_packets: u32,
    pub zero_id_df_packets: u32,
    pub zero_id_packets: u32,
    /// The tool symbol of the last packet.
    pub tool: u16,
    /// Bit per `classes::METHODS`.
    pub methods: u16,
    /// Bit per `classes::HOST_CLASSES` seen in Via / Contact.
    pub via_classes: u16,
    pub contact_classes: u16,
    /// Bit per sensor symbol below 16 (sensor names from merged topics).
    pub sensors: u16,
    pub src_port_min: u16,
    pub src_port_max: u16,
    /// Largest process estimate (ports counted up from the tool's base port).
    pub max_processes: u16,
    pub ttl_min: u8,
    pub ttl_max: u8,
    /// Bit per TTL family index.
    pub ttl_families: u8,
    /// Bit per `PacketIdClass`.
    pub id_packet_classes: u8,
    /// The engine's latest per-source behaviour code (`classes::behaviour_code`).
    pub id_behaviour: u8,
    /// The IP-ID class and TTL class this source is currently counted under in its campaign
    /// and tool distributions.
    pub id_class: u8,
    pub ttl_class: u8,
    pub flags: u8,
}

impl Linked for SourceRecord {
    fn links(&mut self) -> &mut Links {
        &mut self.links
    }
}

pub fn key_of(addr: IpAddr) -> [u8; 16] {
    match addr.to_canonical() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

impl SourceRecord {
    fn new(addr: [u8; 16], now_ns: u64) -> Self {
        Self {
            addr,
            first_ns: now_ns,
            last_ns: now_ns,
            src_port_min: u16::MAX,
            ttl_min: u8::MAX,
            flags: flags::LIVE,
            ..Self::default()
        }
    }

    pub fn address(&self) -> IpAddr {
        Ipv6Addr::from(self.addr).to_canonical()
    }

    pub fn is_live(&self) -> bool {
        self.flags & flags::LIVE != 0
    }
}

/// Why a source left the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Eviction {
    Idle,
    Capacity,
}

pub struct SourceTable {
    records: Vec<SourceRecord>,
    /// Slots of `records`, found by the record's address: 4 bytes a bucket, the key lives in
    /// the record.
    index: HashTable<u32>,
    hashing: SourceHashing,
    lru: Lru,
    free: Vec<u32>,
    max_sources: usize,
}

impl SourceTable {
    pub fn new(max_sources: usize) -> Self {
        Self {
            records: Vec::new(),
            index: HashTable::new(),
            hashing: SourceHashing::new(),
            lru: Lru::default(),
            free: Vec::new(),
            max_sources: max_sources.clamp(1, u32::MAX as usize - 1),
        }
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn max_sources(&self) -> usize {
        self.max_sources
    }

    /// Asks the CPU to fetch what [`entry`](Self::entry) for `addr` will read: the index is
    /// probed (its buckets are a few bytes a source), and the record each matching bucket
    /// points at, the read that waits on memory when sources are many, is only asked for. For
    /// the next packet's source, while this one's is handled.
    pub fn prefetch(&self, addr: IpAddr) {
        let hash = self.hashing.hash_one(key_of(addr));
        let records = self.records.as_ptr();
        self.index.find(hash, |&i| {
            prefetch::object(records.wrapping_add(i as usize));
            false
        });
    }

    /// Asks the CPU to fetch the records next to `addr`'s in the recency order, which
    /// [`entry`](Self::entry) writes when it moves the record to the front: once the record
    /// itself is in cache ([`prefetch`](Self::prefetch)), its neighbours are known.
    pub fn prefetch_neighbours(&self, addr: IpAddr) {
        let key = key_of(addr);
        let hash = self.hashing.hash_one(key);
        let records = &self.records;
        if let Some(&slot) = self.index.find(hash, |&i| records[i as usize].addr == key) {
            for n in records[slot as usize].links.neighbours() {
                if let Some(r) = records.get(n as usize) {
                    prefetch::object(&r.links);
                }
            }
        }
    }

    /// The slot of `addr`, made most recently used; a new record if it is not there, after
    /// evicting the least recently seen source when the table is full (returned, so its owner
    /// can keep what it wants of it).
    pub fn entry(&mut self, addr: IpAddr, now_ns: u64) -> (u32, bool, Option<SourceRecord>) {
        let key = key_of(addr);
        let hash = self.hashing.hash_one(key);
        let records = &self.records;
        if let Some(&slot) = self.index.find(hash, |&i| records[i as usize].addr == key) {
            self.lru.touch(&mut self.records, slot);
            return (slot, false, None);
        }
        let mut evicted = None;
        if self.index.len() >= self.max_sources
            && let Some(oldest) = self.lru.oldest()
        {
            evicted = Some(self.remove(oldest));
        }
        let record = SourceRecord::new(key, now_ns);
        let slot = match self.free.pop() {
            Some(slot) => {
                self.records[slot as usize] = record;
                slot
            }
            None => {
                self.records.push(record);
                (self.records.len() - 1) as u32
            }
        };
        let (records, hashing) = (&self.records, &self.hashing);
        self.index
            .insert_unique(hash, slot, |&i| hashing.hash_one(records[i as usize].addr));
        self.lru.push_front(&mut self.records, slot);
        (slot, true, evicted)
    }

    fn remove(&mut self, slot: u32) -> SourceRecord {
        self.lru.unlink(&mut self.records, slot);
        let record = self.records[slot as usize];
        if let Ok(entry) = self
            .index
            .find_entry(self.hashing.hash_one(record.addr), |&i| i == slot)
        {
            entry.remove();
        }
        self.records[slot as usize].flags = 0;
        self.free.push(slot);
        record
    }

    /// Removes and returns the least recently seen source if it was last seen before
    /// `cutoff_ns`.
    pub fn pop_idle(&mut self, cutoff_ns: u64) -> Option<SourceRecord> {
        let oldest = self.lru.oldest()?;
        (self.records[oldest as usize].last_ns < cutoff_ns).then(|| self.remove(oldest))
    }

    pub fn get(&self, slot: u32) -> &SourceRecord {
        &self.records[slot as usize]
    }

    pub fn get_mut(&mut self, slot: u32) -> &mut SourceRecord {
        &mut self.records[slot as usize]
    }

    pub fn iter(&self) -> impl Iterator<Item = &SourceRecord> {
        self.records.iter().filter(|r| r.is_live())
    }

    /// Heap bytes held: the slab at its capacity, the index's buckets and control bytes (one
    /// 4-byte slot and one control byte per bucket, buckets a power of two at most 7/8 full),
    /// the free list.
    pub fn heap_bytes(&self) -> usize {
        let buckets = if self.index.capacity() == 0 {
            0
        } else {
            (self.index.capacity() * 8 / 7).next_power_of_two()
        };
        self.records.capacity() * size_of::<SourceRecord>()
            + buckets * (size_of::<u32>() + 1)
            + self.free.capacity() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_record_is_compact() {
        // Issue 6: at most 300 bytes of resident memory per source with a million sources.
        // The record is 120 bytes; the index adds about 10 at a million (see heap_bytes).
        assert_eq!(size_of::<SourceRecord>(), 120);
        assert_eq!(size_of::<DestSketch>(), 32);
    }

    #[test]
    fn memory_per_source_within_budget() {
        let n = 200_000u32;
        let mut table = SourceTable::new(n as usize);
        for i in 0..n {
            let addr = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            table.entry(addr, u64::from(i));
        }
        assert_eq!(table.len(), n as usize);
        let per_source = table.heap_bytes() / n as usize;
        assert!(per_source <= 300, "{per_source} bytes per source");
    }

    #[test]
    fn capacity_and_idle_evictions() {
        let mut table = SourceTable::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        let c: IpAddr = "::ffff:192.0.2.3".parse().unwrap();
        let (sa, new, ev) = table.entry(a, 10);
        assert!(new && ev.is_none());
        table.entry(b, 20);
        // a is touched, so b is the oldest when c arrives.
        let (slot, new, evicted) = table.entry(a, 30);
        assert!(slot == sa && !new && evicted.is_none());
        let (_, new, evicted) = table.entry(c, 40);
        assert!(new);
        assert_eq!(evicted.unwrap().address(), b);
        assert_eq!(table.len(), 2);
        assert_eq!(
            table
                .iter()
                .map(|r| r.address().to_string())
                .collect::<Vec<_>>()
                .len(),
            2
        );
        // IPv4-mapped IPv6 is the IPv4 source.
        assert!(!table.entry("192.0.2.3".parse().unwrap(), 41).1);
        table.get_mut(sa).last_ns = 30;
        assert!(table.pop_idle(30).is_none());
        assert_eq!(table.pop_idle(31).unwrap().address(), a);
        assert_eq!(table.len(), 1);
        // The freed slot is reused.
        let (slot, new, _) = table.entry(b, 50);
        assert!(new);
        assert_eq!(slot, sa);
    }
}
