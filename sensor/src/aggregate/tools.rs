//! Per-tool and per-sensor tallies: what the report's tables and seed-style findings are made
//! of. Bounded: a fixed number of tools and sensors (further names share `(other)`), a few
//! variants, user agents and example hosts per tool.

use serde::Serialize;

use super::{
    classes::{HOST_CLASSES, METHODS, PacketIdClass, SourceIdClass, TTL_FAMILIES},
    distinct::DistinctCounter,
    intern::{NAME_MAX, Names},
};

/// Variants and user agents listed per tool; the rest are counted together.
pub const LISTED_MAX: usize = 8;
/// Example hosts kept per tool and host class.
pub const EXAMPLES_PER_CLASS: usize = 3;

/// Distinct strings with counts, the first [`LISTED_MAX`] kept, the rest counted as others.
#[derive(Clone, Debug, Default)]
pub struct Listed {
    pub items: Vec<(Box<str>, u64)>,
    pub others: u64,
}

fn bounded(s: &str) -> &str {
    let mut end = s.len().min(NAME_MAX);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl Listed {
    pub fn add(&mut self, s: &str) {
        let s = bounded(s);
        if let Some(item) = self.items.iter_mut().find(|(k, _)| &**k == s) {
            item.1 += 1;
        } else if self.items.len() < LISTED_MAX {
            self.items.push((s.into(), 1));
        } else {
            self.others += 1;
        }
    }

    /// Most frequent first.
    pub fn sorted(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self
            .items
            .iter()
            .map(|(k, n)| (k.to_string(), *n))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }
}

#[derive(Debug, Default)]
pub struct ToolTally {
    pub category: u16,
    pub packets: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    pub sources: DistinctCounter,
    pub variants: Listed,
    pub user_agents: Listed,
    pub methods: [u64; METHODS.len()],
    pub id_sources: [u64; SourceIdClass::COUNT],
    pub id_packets: [u64; PacketIdClass::COUNT],
    pub ttl_sources: [u64; TTL_FAMILIES.len()],
    pub ttl_packets: [u64; TTL_FAMILIES.len()],
    /// Sources per host class seen in Via / Contact.
    pub via_sources: [u64; HOST_CLASSES.len()],
    pub contact_sources: [u64; HOST_CLASSES.len()],
    /// (class, host) examples, a few per class.
    pub via_examples: Vec<(u8, Box<str>)>,
    pub contact_examples: Vec<(u8, Box<str>)>,
    /// Sources with a process estimate, and those whose ports say more than one scanner
    /// process ran on them.
    pub process_sources: u64,
    pub multi_process_sources: u64,
    pub max_processes: u32,
    pub process_base: u16,
    pub df_packets: u64,
}

impl ToolTally {
    /// Keeps the smallest few hosts of each class, so the examples do not depend on the order
    /// events arrive in (one sensor's file, or several sensors' Kafka topics interleaved).
    pub fn add_example(examples: &mut Vec<(u8, Box<str>)>, class: u8, host: &str) {
        let host = bounded(host);
        if examples.iter().any(|(c, h)| *c == class && &**h == host) {
            return;
        }
        examples.push((class, host.into()));
        examples.sort();
        let mut kept = 0;
        examples.retain(|(c, _)| {
            if *c != class {
                return true;
            }
            kept += 1;
            kept <= EXAMPLES_PER_CLASS
        });
    }

    pub fn heap_bytes(&self) -> usize {
        self.sources.heap_bytes()
            + (self.variants.items.capacity() + self.user_agents.items.capacity()) * 40
    }
}

#[derive(Debug, Default)]
pub struct SensorTally {
    pub events: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    pub sources: DistinctCounter,
}

/// A host class with its sources and examples, for findings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HostClassCount {
    pub class: &'static str,
    pub sources: u64,
    pub examples: Vec<String>,
}

pub fn host_classes(counts: &[u64], examples: &[(u8, Box<str>)]) -> Vec<HostClassCount> {
    let mut v: Vec<HostClassCount> = HOST_CLASSES
        .iter()
        .enumerate()
        .filter(|(i, _)| counts[*i] > 0)
        .map(|(i, class)| HostClassCount {
            class,
            sources: counts[i],
            examples: examples
                .iter()
                .filter(|(c, _)| usize::from(*c) == i)
                .map(|(_, h)| h.to_string())
                .collect(),
        })
        .collect();
    v.sort_by(|a, b| b.sources.cmp(&a.sources).then(a.class.cmp(b.class)));
    v
}

/// The name of a tool's category symbol.
pub fn category_name(names: &Names, sym: u16) -> String {
    names.get(sym).to_string()
}
