//! Names (tools, rules, variants, sensors) as small integers, so records and campaigns hold two
//! bytes instead of a string. Bounded: names come from documents that may come from anywhere,
//! so past `capacity` names every new one becomes [`OTHER`] and is counted.

use std::collections::HashMap;

/// The symbol of every name that did not fit.
pub const OTHER: u16 = 0;
const OTHER_NAME: &str = "(other)";
/// Longest name kept, in bytes (cut on a character boundary).
pub const NAME_MAX: usize = 96;

#[derive(Debug)]
pub struct Names {
    index: HashMap<Box<str>, u16>,
    names: Vec<Box<str>>,
    capacity: usize,
    /// Lookups of new names that found the table full.
    pub overflowed: u64,
}

impl Names {
    pub fn new(capacity: usize) -> Self {
        Self {
            index: HashMap::new(),
            names: vec![OTHER_NAME.into()],
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
        if let Some(&sym) = self.index.get(name) {
            return sym;
        }
        if self.names.len() > self.capacity {
            self.overflowed += 1;
            return OTHER;
        }
        let sym = self.names.len() as u16;
        self.names.push(name.into());
        self.index.insert(name.into(), sym);
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut long = Names::new(4);
        let s = long.intern(&"é".repeat(100));
        assert!(long.get(s).len() <= NAME_MAX);
    }
}
