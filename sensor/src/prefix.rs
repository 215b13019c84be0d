//! IP prefixes in CIDR notation (`203.0.113.0/24`, `2001:db8:dead::/48`): the darknet prefixes a
//! sensor names in its events, and the reactive responder's scope (an LPM trie in the kernel).

use std::{fmt, net::IpAddr, str::FromStr};

use serde::{Deserialize, Serialize, Serializer};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PrefixError {
    #[error(
        "bad prefix `{0}`: expected ADDRESS/LENGTH such as 203.0.113.0/24 or 2001:db8:dead::/48"
    )]
    Syntax(String),
    #[error("bad prefix `{0}`: prefix length too long for the address family")]
    Length(String),
    #[error("bad prefix `{0}`: host bits set (did you mean {1}?)")]
    HostBits(String, Prefix),
}

/// An address prefix, host bits clear.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

impl Prefix {
    fn masked(addr: IpAddr, len: u8) -> IpAddr {
        match addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        }
    }

    pub fn contains(&self, addr: IpAddr) -> bool {
        addr.is_ipv4() == self.addr.is_ipv4() && Self::masked(addr, self.len) == self.addr
    }

    /// The key the kernel's LPM trie uses: 16 bytes, IPv4 mapped into `::ffff:0:0/96`.
    pub fn lpm_key(&self) -> (u32, [u8; 16]) {
        match self.addr {
            IpAddr::V4(a) => {
                let mut bytes = [0u8; 16];
                bytes[..4].copy_from_slice(&a.octets());
                (
                    u32::from(self.len) + 96,
                    sensor_common::lpm_key_bytes(4, &bytes),
                )
            }
            IpAddr::V6(a) => (u32::from(self.len), a.octets()),
        }
    }
}

impl FromStr for Prefix {
    type Err = PrefixError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let syntax = || PrefixError::Syntax(s.into());
        let (addr, len) = s.split_once('/').ok_or_else(syntax)?;
        let addr: IpAddr = addr.parse().map_err(|_| syntax())?;
        let len: u8 = len.parse().map_err(|_| syntax())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(PrefixError::Length(s.into()));
        }
        let masked = Self::masked(addr, len);
        if masked != addr {
            return Err(PrefixError::HostBits(
                s.into(),
                Prefix { addr: masked, len },
            ));
        }
        Ok(Prefix { addr, len })
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl Serialize for Prefix {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Prefix {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Parses a comma-separated list of prefixes.
pub fn parse_prefixes(s: &str) -> Result<Vec<Prefix>, PrefixError> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::parse)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_matches() {
        let p: Prefix = "203.0.113.0/24".parse().unwrap();
        assert!(p.contains("203.0.113.9".parse().unwrap()));
        assert!(!p.contains("203.0.114.9".parse().unwrap()));
        assert!(!p.contains("2001:db8::1".parse().unwrap()));
        let (len, key) = p.lpm_key();
        assert_eq!(len, 120);
        assert_eq!(&key[10..], &[0xff, 0xff, 203, 0, 113, 0]);
        let v6: Prefix = "2001:db8:dead::/48".parse().unwrap();
        assert!(v6.contains("2001:db8:dead::10".parse().unwrap()));
        assert_eq!(v6.lpm_key().0, 48);
        let all: Prefix = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("198.51.100.1".parse().unwrap()));
    }

    #[test]
    fn rejects_bad_prefixes() {
        for bad in [
            "203.0.113.0",
            "203.0.113.0/33",
            "x/8",
            "2001:db8::/129",
            "1.2.3.4/-1",
        ] {
            assert!(bad.parse::<Prefix>().is_err(), "{bad}");
        }
        assert_eq!(
            parse_prefixes("203.0.113.0/24, 2001:db8::/32")
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn host_bits_are_refused_with_the_prefix_meant() {
        let e = "203.0.113.7/24".parse::<Prefix>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "bad prefix `203.0.113.7/24`: host bits set (did you mean 203.0.113.0/24?)"
        );
    }

    #[test]
    fn round_trips_through_serde() {
        let p: Prefix = "2001:db8::/32".parse().unwrap();
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, "\"2001:db8::/32\"");
        assert_eq!(serde_json::from_str::<Prefix>(&json).unwrap(), p);
    }
}
