//! Who wrote an event: the sensor's name, interface and darknet prefixes, carried in every event
//! (the `sensor` object) so that a central consumer can merge many sensors.

use std::{fmt, net::IpAddr, str::FromStr};

use serde::{Deserialize, Serialize, Serializer};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PrefixError {
    #[error("darknet prefix {0:?}: expected ADDRESS/LENGTH, e.g. 203.0.113.0/24")]
    Syntax(String),
    #[error("darknet prefix {0:?}: prefix length too long for the address family")]
    Length(String),
    #[error("darknet prefix {0:?}: host bits set (did you mean {1}?)")]
    HostBits(String, Prefix),
}

/// An address prefix in CIDR notation, host bits clear.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

impl Prefix {
    fn masked(addr: IpAddr, len: u8) -> IpAddr {
        match addr {
            IpAddr::V4(a) => {
                let bits = u32::from(a);
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                IpAddr::V4((bits & mask).into())
            }
            IpAddr::V6(a) => {
                let bits = u128::from(a);
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                IpAddr::V6((bits & mask).into())
            }
        }
    }

    pub fn contains(&self, addr: IpAddr) -> bool {
        addr.is_ipv4() == self.addr.is_ipv4() && Self::masked(addr, self.len) == self.addr
    }
}

impl FromStr for Prefix {
    type Err = PrefixError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| PrefixError::Syntax(s.into()))?;
        let addr: IpAddr = addr.parse().map_err(|_| PrefixError::Syntax(s.into()))?;
        let len: u8 = len.parse().map_err(|_| PrefixError::Syntax(s.into()))?;
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

/// The `sensor` object of an event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SensorIdentity {
    /// Unique within a fleet; the default is the host name.
    pub name: String,
    /// The interface the sensor is attached to.
    pub interface: String,
    /// The darknet prefixes this sensor watches (configured; empty if not configured).
    #[serde(default)]
    pub prefixes: Vec<Prefix>,
}

/// The machine's host name, for the default sensor name.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer and its length are valid; gethostname NUL-terminates within it or
    // truncates, and we stop at the first NUL or the end.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "sensor".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(s) if !s.is_empty() => s.to_string(),
        _ => "sensor".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_checks_prefixes() {
        let p: Prefix = "203.0.113.0/24".parse().unwrap();
        assert_eq!(p.to_string(), "203.0.113.0/24");
        assert!(p.contains("203.0.113.77".parse().unwrap()));
        assert!(!p.contains("203.0.114.1".parse().unwrap()));
        let p6: Prefix = "2001:db8:dead::/48".parse().unwrap();
        assert!(p6.contains("2001:db8:dead::5".parse().unwrap()));
        assert!(matches!(
            "203.0.113.1/24".parse::<Prefix>(),
            Err(PrefixError::HostBits(_, _))
        ));
        assert!(matches!(
            "203.0.113.0/33".parse::<Prefix>(),
            Err(PrefixError::Length(_))
        ));
        assert!(matches!(
            "203.0.113.0".parse::<Prefix>(),
            Err(PrefixError::Syntax(_))
        ));
        let zero: Prefix = "0.0.0.0/0".parse().unwrap();
        assert!(zero.contains("8.8.8.8".parse().unwrap()));
    }

    #[test]
    fn serializes_as_strings() {
        let id = SensorIdentity {
            name: "dark-1".into(),
            interface: "eth1".into(),
            prefixes: vec!["203.0.113.0/24".parse().unwrap()],
        };
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(
            json,
            r#"{"name":"dark-1","interface":"eth1","prefixes":["203.0.113.0/24"]}"#
        );
        let back: SensorIdentity = serde_json::from_str(&json).unwrap();
        assert_eq!(back, id);
    }
}
