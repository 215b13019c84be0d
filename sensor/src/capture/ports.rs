//! The set of ports the kernel program matches, as the 65536-bit bitmap it reads.

use std::{fmt, str::FromStr};

use sensor_common::PORT_BITMAP_WORDS;

/// Default SIP ports: 5060 (UDP/TCP) and 5061 (TLS, and scanners probe it in the clear too).
pub const DEFAULT_PORTS: [u16; 2] = [5060, 5061];

#[derive(Clone, PartialEq, Eq)]
pub struct PortSet {
    words: Box<[u64; PORT_BITMAP_WORDS as usize]>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PortSetError {
    #[error("port list is empty: give at least one port, e.g. 5060")]
    Empty,
    #[error("bad port `{0}`: expected a number from 1 to 65535 or a range like 5060-5070")]
    BadPort(String),
    #[error("bad port range `{0}`: the first port must not be greater than the last")]
    BadRange(String),
}

impl PortSet {
    pub fn empty() -> Self {
        Self {
            words: Box::new([0; PORT_BITMAP_WORDS as usize]),
        }
    }

    pub fn insert(&mut self, port: u16) {
        self.words[usize::from(port >> 6)] |= 1 << (port & 63);
    }

    pub fn contains(&self, port: u16) -> bool {
        self.words[usize::from(port >> 6)] >> (port & 63) & 1 == 1
    }

    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|w| *w == 0)
    }

    /// The 64-bit words of the bitmap, indexed as the kernel indexes them.
    pub fn words(&self) -> &[u64; PORT_BITMAP_WORDS as usize] {
        &self.words
    }

    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        (0..=u16::MAX).filter(|p| self.contains(*p))
    }
}

impl Default for PortSet {
    fn default() -> Self {
        let mut set = Self::empty();
        for port in DEFAULT_PORTS {
            set.insert(port);
        }
        set
    }
}

impl FromStr for PortSet {
    type Err = PortSetError;

    /// Parses `5060,5061,6000-6010`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut set = Self::empty();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let parse = |p: &str| -> Result<u16, PortSetError> {
                match p.trim().parse::<u16>() {
                    Ok(port) if port > 0 => Ok(port),
                    _ => Err(PortSetError::BadPort(item.to_string())),
                }
            };
            match item.split_once('-') {
                Some((lo, hi)) => {
                    let (lo, hi) = (parse(lo)?, parse(hi)?);
                    if lo > hi {
                        return Err(PortSetError::BadRange(item.to_string()));
                    }
                    for port in lo..=hi {
                        set.insert(port);
                    }
                }
                None => set.insert(parse(item)?),
            }
        }
        if set.is_empty() {
            return Err(PortSetError::Empty);
        }
        Ok(set)
    }
}

/// Lists ports compactly, ranges folded: `5060-5061,6000`.
impl fmt::Display for PortSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut ports = self.iter().peekable();
        while let Some(start) = ports.next() {
            let mut end = start;
            while ports.peek() == Some(&(end.wrapping_add(1))) && end != u16::MAX {
                end = ports.next().unwrap_or(end);
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if start == end {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for PortSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PortSet({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_and_ranges() {
        let set: PortSet = "5060, 5061,6000-6002".parse().unwrap();
        assert_eq!(set.to_string(), "5060-5061,6000-6002");
        assert!(set.contains(6001));
        assert!(!set.contains(5062));
        assert_eq!(
            set.words()[5060 >> 6],
            (1 << (5060 & 63)) | (1 << (5061 & 63))
        );
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!("".parse::<PortSet>(), Err(PortSetError::Empty));
        assert_eq!(
            "0".parse::<PortSet>(),
            Err(PortSetError::BadPort("0".into()))
        );
        assert_eq!(
            "65536".parse::<PortSet>(),
            Err(PortSetError::BadPort("65536".into()))
        );
        assert_eq!(
            "x".parse::<PortSet>(),
            Err(PortSetError::BadPort("x".into()))
        );
        assert_eq!(
            "10-5".parse::<PortSet>(),
            Err(PortSetError::BadRange("10-5".into()))
        );
    }

    #[test]
    fn edges() {
        let set: PortSet = "1,65535".parse().unwrap();
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![1, 65535]);
        assert_eq!(set.to_string(), "1,65535");
        assert_eq!(PortSet::default().to_string(), "5060-5061");
    }
}
