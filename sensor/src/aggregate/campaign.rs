//! Campaigns: the sources that share a fingerprint template within a window. The key is the
//! winning rule's id when a rule matched, and the structural template hash when none did (an
//! unnamed tool still clusters). A campaign stays open while packets with its key keep arriving
//! less than the window apart; it closes when the window passes, or when the table is full and
//! it is the least recently active (counted).

use std::{collections::BTreeMap, collections::HashMap};

use serde::Serialize;

use super::{
    classes::{METHODS, PROTOCOLS, PacketIdClass, SourceIdClass, TTL_FAMILIES},
    distinct::DistinctCounter,
    intern::Names,
    lru::{Linked, Links, Lru},
};
use crate::{clock::rfc3339_micros, fingerprint::ipid::SourceHashing};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CampaignKey {
    Rule(u16),
    Template(u64),
}

#[derive(Debug, Default)]
pub struct Campaign {
    links: Links,
    pub key: Option<CampaignKey>,
    /// Never reused: a source's record remembers the serial of the campaign it was counted in.
    pub serial: u32,
    pub tool: u16,
    pub variant: u16,
    pub rule: u16,
    pub category: u16,
    /// The template of the first packet (the key itself for unnamed tools).
    pub template_hash: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    pub packets: u64,
    pub sources: DistinctCounter,
    pub dests: DistinctCounter,
    pub methods: [u64; METHODS.len()],
    pub protocols: [u64; PROTOCOLS.len()],
    pub id_packets: [u64; PacketIdClass::COUNT],
    pub id_sources: [u64; SourceIdClass::COUNT],
    pub ttl_packets: [u64; TTL_FAMILIES.len()],
    pub ttl_sources: [u64; TTL_FAMILIES.len()],
    pub max_processes: u32,
}

impl Linked for Campaign {
    fn links(&mut self) -> &mut Links {
        &mut self.links
    }
}

/// Why a campaign closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    /// No packet with its key for longer than the window.
    Window,
    /// The campaign table was full and this was the least recently active campaign.
    Capacity,
}

pub struct CampaignTable {
    slots: Vec<Campaign>,
    /// Keyed with the source index's multiply-xor hash, random per table: SipHash took more
    /// than the rest of the look-up, on every event, and a sender still cannot aim the template
    /// hashes it causes at one bucket chain.
    index: HashMap<CampaignKey, u32, SourceHashing>,
    lru: Lru,
    free: Vec<u32>,
    max_campaigns: usize,
    next_serial: u32,
    /// Campaigns opened so far.
    pub opened: u64,
}

impl CampaignTable {
    pub fn new(max_campaigns: usize) -> Self {
        Self {
            slots: Vec::new(),
            index: HashMap::with_hasher(SourceHashing::new()),
            lru: Lru::default(),
            free: Vec::new(),
            max_campaigns: max_campaigns.max(1),
            next_serial: 1,
            opened: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The open campaign of `key`, or a new one (after closing the least recently active when
    /// the table is full: returned, boxed, because a campaign is 512 bytes and the result was
    /// copied whole for every event, closed campaign or not). `true` when new.
    pub fn entry(&mut self, key: CampaignKey, now_ns: u64) -> (u32, bool, Option<Box<Campaign>>) {
        if let Some(&slot) = self.index.get(&key) {
            self.lru.touch(&mut self.slots, slot);
            return (slot, false, None);
        }
        let mut closed = None;
        if self.index.len() >= self.max_campaigns
            && let Some(oldest) = self.lru.oldest()
        {
            closed = Some(Box::new(self.remove(oldest)));
        }
        let campaign = Campaign {
            key: Some(key),
            serial: self.next_serial,
            first_ns: now_ns,
            last_ns: now_ns,
            ..Campaign::default()
        };
        // Serials wrap after four billion campaigns; 0 stays "none".
        self.next_serial = self.next_serial.checked_add(1).unwrap_or(1);
        self.opened += 1;
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = campaign;
                slot
            }
            None => {
                self.slots.push(campaign);
                (self.slots.len() - 1) as u32
            }
        };
        self.index.insert(key, slot);
        self.lru.push_front(&mut self.slots, slot);
        (slot, true, closed)
    }

    fn remove(&mut self, slot: u32) -> Campaign {
        self.lru.unlink(&mut self.slots, slot);
        let campaign = std::mem::take(&mut self.slots[slot as usize]);
        if let Some(key) = campaign.key {
            self.index.remove(&key);
        }
        self.free.push(slot);
        campaign
    }

    /// Closes and returns the least recently active campaign if its last packet is older than
    /// `cutoff_ns`.
    pub fn pop_idle(&mut self, cutoff_ns: u64) -> Option<Campaign> {
        let oldest = self.lru.oldest()?;
        (self.slots[oldest as usize].last_ns < cutoff_ns).then(|| self.remove(oldest))
    }

    pub fn get_mut(&mut self, slot: u32) -> &mut Campaign {
        &mut self.slots[slot as usize]
    }

    /// The campaign in `slot` if it is still the one with `serial`.
    pub fn current_mut(&mut self, slot: u32, serial: u32) -> Option<&mut Campaign> {
        self.slots
            .get_mut(slot as usize)
            .filter(|c| c.key.is_some() && c.serial == serial)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Campaign> {
        self.slots.iter().filter(|c| c.key.is_some())
    }

    pub fn heap_bytes(&self) -> usize {
        self.slots.capacity() * size_of::<Campaign>()
            + self
                .slots
                .iter()
                .map(|c| c.sources.heap_bytes() + c.dests.heap_bytes())
                .sum::<usize>()
            + self.index.capacity() * 24
    }
}

/// A distribution over sources and over packets.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Distribution {
    pub sources: BTreeMap<&'static str, u64>,
    pub packets: BTreeMap<&'static str, u64>,
}

fn nonzero(names: &[&'static str], counts: &[u64]) -> BTreeMap<&'static str, u64> {
    names
        .iter()
        .zip(counts)
        .filter(|(_, n)| **n > 0)
        .map(|(name, n)| (*name, *n))
        .collect()
}

/// A campaign as plain data: the `campaign` object of an `event_type: campaign` document and a
/// row of the report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CampaignSummary {
    /// `KEY@FIRST_SEEN`: stable across runs over the same data.
    pub id: String,
    /// The rule id, or `template:HASH` for an unnamed tool.
    pub key: String,
    pub tool: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    pub category: String,
    /// The rule id (`unknown` when no rule matched).
    pub rule: String,
    /// The template hash (16 hex digits) of the campaign's first packet.
    pub template_hash: String,
    /// `open` (still active when the summary was made) or `closed`.
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub close_reason: Option<CloseReason>,
    pub first_seen: String,
    pub last_seen: String,
    pub duration_s: f64,
    pub packets: u64,
    pub sources: u64,
    pub sources_approximate: bool,
    pub destinations: u64,
    pub destinations_approximate: bool,
    pub methods: BTreeMap<&'static str, u64>,
    pub protocols: BTreeMap<&'static str, u64>,
    /// IP-ID behaviour: per source (`aggregate::classes::SourceIdClass`) and per packet.
    pub ip_id: Distribution,
    /// Initial TTL families (`32`, `64`, `128`, `255`, `mixed` for sources whose packets had
    /// several, `unknown`).
    pub ttl: Distribution,
    /// Largest number of concurrent scanner processes inferred from source ports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_processes: Option<u32>,
    /// The window the campaign was grouped with, in seconds.
    pub window_s: u64,
    #[serde(skip)]
    pub first_ns: u64,
    #[serde(skip)]
    pub last_ns: u64,
}

impl CampaignSummary {
    pub fn new(c: &Campaign, names: &Names, state: Option<CloseReason>, window_s: u64) -> Self {
        let rule = names.get(c.rule).to_string();
        let key = match c.key {
            Some(CampaignKey::Template(hash)) => format!("template:{hash:016x}"),
            _ => rule.clone(),
        };
        let first_seen = rfc3339_micros(c.first_ns);
        let variant = names.get(c.variant);
        CampaignSummary {
            id: format!("{key}@{first_seen}"),
            key,
            tool: names.get(c.tool).to_string(),
            variant: (!variant.is_empty()).then(|| variant.to_string()),
            category: names.get(c.category).to_string(),
            rule,
            template_hash: format!("{:016x}", c.template_hash),
            state: if state.is_some() { "closed" } else { "open" },
            close_reason: state,
            first_seen,
            last_seen: rfc3339_micros(c.last_ns),
            duration_s: c.last_ns.saturating_sub(c.first_ns) as f64 / 1e9,
            packets: c.packets,
            sources: c.sources.count(),
            sources_approximate: c.sources.is_approximate(),
            destinations: c.dests.count(),
            destinations_approximate: c.dests.is_approximate(),
            methods: nonzero(&METHODS, &c.methods),
            protocols: nonzero(&PROTOCOLS, &c.protocols),
            ip_id: Distribution {
                sources: nonzero(&SourceIdClass::NAMES, &c.id_sources),
                packets: nonzero(&PacketIdClass::NAMES, &c.id_packets),
            },
            ttl: Distribution {
                sources: nonzero(&TTL_FAMILIES, &c.ttl_sources),
                packets: nonzero(&TTL_FAMILIES, &c.ttl_packets),
            },
            max_processes: (c.max_processes > 0).then_some(c.max_processes),
            window_s,
            first_ns: c.first_ns,
            last_ns: c.last_ns,
        }
    }
}
