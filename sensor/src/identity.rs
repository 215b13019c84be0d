//! Who wrote an event: the sensor's name, interface and darknet prefixes, carried in every event
//! (the `sensor` object) so that a central consumer can merge many sensors.

use serde::{Deserialize, Serialize};

pub use crate::prefix::{Prefix, PrefixError};

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
