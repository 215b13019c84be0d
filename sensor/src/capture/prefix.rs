//! IP prefixes (`203.0.113.0/24`, `2001:db8:dead::/48`) for the reactive responder's scope.

use std::{fmt, net::IpAddr, str::FromStr};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpPrefix {
    pub addr: IpAddr,
    pub len: u8,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("bad prefix `{0}`: expected ADDRESS/LENGTH such as 203.0.113.0/24 or 2001:db8:dead::/48")]
pub struct PrefixError(pub String);

impl IpPrefix {
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

    pub fn contains(&self, ip: IpAddr) -> bool {
        let bits = |a: IpAddr| -> u128 {
            match a {
                IpAddr::V4(v) => u128::from(u32::from(v)) << 96,
                IpAddr::V6(v) => u128::from(v),
            }
        };
        if self.addr.is_ipv4() != ip.is_ipv4() {
            return false;
        }
        let len = u32::from(self.len);
        if len == 0 {
            return true;
        }
        let mask = u128::MAX << (128 - len);
        bits(self.addr) & mask == bits(ip) & mask
    }
}

impl FromStr for IpPrefix {
    type Err = PrefixError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || PrefixError(s.to_string());
        let (addr, len) = s.trim().split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let len: u8 = len.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(bad());
        }
        Ok(Self { addr, len })
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Parses a comma-separated list of prefixes.
pub fn parse_prefixes(s: &str) -> Result<Vec<IpPrefix>, PrefixError> {
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
        let p: IpPrefix = "203.0.113.0/24".parse().unwrap();
        assert!(p.contains("203.0.113.9".parse().unwrap()));
        assert!(!p.contains("203.0.114.9".parse().unwrap()));
        assert!(!p.contains("2001:db8::1".parse().unwrap()));
        let (len, key) = p.lpm_key();
        assert_eq!(len, 120);
        assert_eq!(&key[10..], &[0xff, 0xff, 203, 0, 113, 0]);
        let v6: IpPrefix = "2001:db8:dead::/48".parse().unwrap();
        assert!(v6.contains("2001:db8:dead::10".parse().unwrap()));
        assert_eq!(v6.lpm_key().0, 48);
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
            assert!(bad.parse::<IpPrefix>().is_err(), "{bad}");
        }
        assert_eq!(
            parse_prefixes("203.0.113.0/24, 2001:db8::/32")
                .unwrap()
                .len(),
            2
        );
    }
}
