//! Names (tools, rules, variants, sensors) as small integers, so records and campaigns hold two
//! bytes instead of a string. Bounded: names come from documents that may come from anywhere,
//! so past `capacity` names every new one becomes [`OTHER`] and is counted.

use std::collections::HashMap;

use super::Observation;
use crate::words::same_text;

/// The symbol of every name that did not fit.
pub const OTHER: u16 = 0;
const OTHER_NAME: &str = "(other)";
/// Longest name kept, in bytes (cut on a character boundary).
pub const NAME_MAX: usize = 96;

/// Slots of the recent-name cache (16 bytes each): room for the four names of each of a hundred
/// rules, so that the built-in set's names seldom share a slot (with 128 slots they took turns).
const RECENT_BITS: u32 = 9;
const RECENT: usize = 1 << RECENT_BITS;

#[derive(Debug)]
pub struct Names {
    index: HashMap<Box<str>, u16>,
    names: Vec<Box<str>>,
    /// (address, symbol) of names met recently, by address: the agent interns the same few
    /// rule strings for every event, and comparing one against the name it had last time costs
    /// far less than hashing it. The address only finds the slot; the bytes are compared, so a
    /// string met at a reused address is still looked up by its content.
    recent: [(usize, u16); RECENT],
    capacity: usize,
    /// Lookups of new names that found the table full.
    pub overflowed: u64,
}

impl Names {
    pub fn new(capacity: usize) -> Self {
        Self {
            index: HashMap::new(),
            names: vec![OTHER_NAME.into()],
            recent: [(0, OTHER); RECENT],
            capacity: capacity.clamp(1, usize::from(u16::MAX)),
            overflowed: 0,
        }
    }

    fn bounded(name: &str) -> &str {
        if name.len() <= NAME_MAX {
            return name;
        }
        let mut end = NAME_MAX;
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        &name[..end]
    }

    pub fn intern(&mut self, name: &str) -> u16 {
        let name = Self::bounded(name);
        let at = name.as_ptr() as usize;
        let slot = &mut self.recent
            [(at.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (usize::BITS - RECENT_BITS)) % RECENT];
        if slot.0 == at
            && slot.1 != OTHER
            && same_text(self.names[usize::from(slot.1)].as_bytes(), name.as_bytes())
        {
            return slot.1;
        }
        let sym = match self.index.get(name) {
            Some(&sym) => sym,
            None if self.names.len() > self.capacity => {
                self.overflowed += 1;
                return OTHER;
            }
            None => {
                let sym = self.names.len() as u16;
                self.names.push(name.into());
                self.index.insert(name.into(), sym);
                sym
            }
        };
        *slot = (at, sym);
        sym
    }

    pub fn get(&self, sym: u16) -> &str {
        self.names.get(usize::from(sym)).map_or(OTHER_NAME, |n| n)
    }

    /// Symbols in use, [`OTHER`] first.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.len() <= 1
    }
}

/// The symbols of one observation's names: the tool in the tools' table, and the tool, rule,
/// variant and category in the names' table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Symbols {
    pub tool: u16,
    pub campaign_tool: u16,
    pub rule: u16,
    pub variant: u16,
    pub category: u16,
}

impl Symbols {
    /// Whether every name has its own symbol (none became [`OTHER`]).
    pub fn all_known(&self) -> bool {
        [
            self.tool,
            self.campaign_tool,
            self.rule,
            self.variant,
            self.category,
        ]
        .iter()
        .all(|&s| s != OTHER)
    }
}

/// Slots of [`RecentNames`] (a power of two).
const RECENT_NAME_SLOTS: usize = 256;

/// An observation's four names, borrowed.
#[derive(Clone, Copy)]
pub struct NameSet<'a> {
    pub tool: &'a str,
    pub rule: &'a str,
    pub variant: Option<&'a str>,
    pub category: &'a str,
}

impl<'a> NameSet<'a> {
    pub fn of(o: &Observation<'a>) -> Self {
        Self {
            tool: o.tool,
            rule: o.rule,
            variant: o.variant,
            category: o.category,
        }
    }
}

/// Four names kept for a template (by the aggregator and the lean events' writer): every packet
/// of a template has the same names, and comparing them with the kept ones, in full, costs less
/// than what was done with them.
pub struct KeptNames {
    tool: Box<str>,
    rule: Box<str>,
    variant: Option<Box<str>>,
    category: Box<str>,
}

impl KeptNames {
    pub fn new(names: NameSet<'_>) -> Self {
        Self {
            tool: names.tool.into(),
            rule: names.rule.into(),
            variant: names.variant.map(Into::into),
            category: names.category.into(),
        }
    }

    /// Whether these are `names`.
    pub fn are(&self, names: NameSet<'_>) -> bool {
        let same = |kept: &str, name: &str| same_text(kept.as_bytes(), name.as_bytes());
        same(&self.tool, names.tool)
            && same(&self.rule, names.rule)
            && match (&self.variant, names.variant) {
                (Some(kept), Some(variant)) => same(kept, variant),
                (kept, variant) => kept.is_none() && variant.is_none(),
            }
            && same(&self.category, names.category)
    }
}

/// Observations' names and their [`Symbols`], kept by template hash, so that the names are
/// compared instead of interned one by one. Only names that all had symbols are kept, so a full
/// table still counts every lookup that overflowed it.
pub struct RecentNames {
    slots: Vec<Option<(KeptNames, Symbols)>>,
}

impl Default for RecentNames {
    fn default() -> Self {
        Self {
            slots: (0..RECENT_NAME_SLOTS).map(|_| None).collect(),
        }
    }
}

impl RecentNames {
    /// The symbols kept for `names` under `key` (a template hash), if they are these names'.
    pub fn get(&self, key: u64, names: NameSet<'_>) -> Option<Symbols> {
        let (kept, symbols) = self.slots[key as usize % RECENT_NAME_SLOTS].as_ref()?;
        kept.are(names).then_some(*symbols)
    }

    pub fn keep(&mut self, key: u64, names: NameSet<'_>, symbols: Symbols) {
        self.slots[key as usize % RECENT_NAME_SLOTS] = Some((KeptNames::new(names), symbols));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_names_answer_only_for_the_same_names() {
        let mut recent = RecentNames::default();
        let names = NameSet {
            tool: "sipvicious",
            rule: "sipvicious-svmap-py3",
            variant: Some("svmap"),
            category: "scanner",
        };
        let symbols = Symbols {
            tool: 1,
            campaign_tool: 2,
            rule: 3,
            variant: 4,
            category: 5,
        };
        assert_eq!(recent.get(7, names), None);
        recent.keep(7, names, symbols);
        assert_eq!(recent.get(7, names), Some(symbols));
        // Another key on the same slot, with the same names: the names decide.
        assert_eq!(
            recent.get(7 + RECENT_NAME_SLOTS as u64, names),
            Some(symbols)
        );
        for other in [
            NameSet {
                tool: "sipviciouz",
                ..names
            },
            NameSet {
                rule: "sipvicious-svmap-py2",
                ..names
            },
            NameSet {
                variant: Some("svwar"),
                ..names
            },
            NameSet {
                variant: None,
                ..names
            },
            NameSet {
                category: "scanners",
                ..names
            },
        ] {
            assert_eq!(recent.get(7, other), None);
        }
        assert!(symbols.all_known());
        assert!(
            !Symbols {
                rule: OTHER,
                ..symbols
            }
            .all_known()
        );
    }

    #[test]
    fn bounded_table_and_names() {
        let mut n = Names::new(2);
        let a = n.intern("svmap");
        assert_eq!(n.intern("svmap"), a);
        let b = n.intern("nmap");
        assert_ne!(a, b);
        assert_eq!(n.intern("zmap"), OTHER);
        assert_eq!(n.overflowed, 1);
        assert_eq!(n.get(a), "svmap");
        assert_eq!(n.get(OTHER), "(other)");
        // The recent-name cache answers by content, not by address: the same buffer holding
        // another name gets that name's symbol.
        let mut buffer = String::from("svmap");
        assert_eq!(n.intern(&buffer), a);
        buffer.replace_range(.., "nmap!");
        assert_eq!(n.intern(&buffer[..4]), b);
        buffer.replace_range(.., "zmap");
        assert_eq!(n.intern(&buffer), OTHER);
        assert_eq!(n.overflowed, 2);
        let mut long = Names::new(4);
        let s = long.intern(&"é".repeat(100));
        assert!(long.get(s).len() <= NAME_MAX);
    }
}
