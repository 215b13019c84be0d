//! Targets: `ADDRESS[:PORT]` as the operator wrote them, and nothing else.
//!
//! Only IP literals are accepted: the probe never resolves names, so it sends only to addresses
//! the operator named. Addresses that reach more than one host (unspecified, multicast,
//! broadcast) are refused.

use std::{
    fmt,
    net::{IpAddr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
};

pub const DEFAULT_PORT: u16 = 5060;

/// A probe target: one address and port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target(pub SocketAddr);

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("empty target")]
    Empty,
    #[error(
        "`{0}` is not an IP address: the probe does not resolve names, so that it only ever \
         sends to addresses you name (write e.g. 192.0.2.10, 192.0.2.10:5080 or [2001:db8::10]:5060)"
    )]
    NotAnAddress(String),
    #[error("`{0}`: bad port (expected 1 to 65535)")]
    BadPort(String),
    #[error("`{0}`: {1} addresses reach more than one host; name a single host")]
    NotUnicast(String, &'static str),
    #[error("{path}:{line}: {source}")]
    InFile {
        path: PathBuf,
        line: usize,
        source: Box<TargetError>,
    },
    #[error("cannot read targets file {path}: {message}")]
    File { path: PathBuf, message: String },
}

impl std::str::FromStr for Target {
    type Err = TargetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s, DEFAULT_PORT)
    }
}

/// Parses `ADDRESS`, `ADDRESS:PORT`, `[IPV6]` or `[IPV6]:PORT`; a bare IPv6 address takes
/// `default_port`.
pub fn parse(input: &str, default_port: u16) -> Result<Target, TargetError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(TargetError::Empty);
    }
    let (ip, port) = if let Some(rest) = s.strip_prefix('[') {
        let (inside, after) = rest
            .split_once(']')
            .ok_or_else(|| TargetError::NotAnAddress(s.to_string()))?;
        let ip: Ipv6Addr = inside
            .parse()
            .map_err(|_| TargetError::NotAnAddress(s.to_string()))?;
        let port = match after {
            "" => default_port,
            p => parse_port(
                p.strip_prefix(':')
                    .ok_or_else(|| TargetError::BadPort(s.to_string()))?,
                s,
            )?,
        };
        (IpAddr::V6(ip), port)
    } else if let Ok(ip) = s.parse::<IpAddr>() {
        (ip, default_port)
    } else {
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| TargetError::NotAnAddress(s.to_string()))?;
        let ip: IpAddr = host
            .parse()
            .map_err(|_| TargetError::NotAnAddress(s.to_string()))?;
        if ip.is_ipv6() {
            // `2001:db8::1:5060` is ambiguous; IPv6 with a port needs brackets.
            return Err(TargetError::NotAnAddress(s.to_string()));
        }
        (ip, parse_port(port, s)?)
    };
    if port == 0 {
        return Err(TargetError::BadPort(s.to_string()));
    }
    if ip.is_unspecified() {
        return Err(TargetError::NotUnicast(s.to_string(), "unspecified"));
    }
    if ip.is_multicast() {
        return Err(TargetError::NotUnicast(s.to_string(), "multicast"));
    }
    if let IpAddr::V4(v4) = ip
        && v4.is_broadcast()
    {
        return Err(TargetError::NotUnicast(s.to_string(), "broadcast"));
    }
    Ok(Target(SocketAddr::new(ip, port)))
}

fn parse_port(p: &str, whole: &str) -> Result<u16, TargetError> {
    p.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| TargetError::BadPort(whole.to_string()))
}

/// Targets from a file: one per line; blank lines and `#` comments are skipped.
pub fn parse_file_text(
    path: &Path,
    text: &str,
    default_port: u16,
) -> Result<Vec<Target>, TargetError> {
    let mut targets = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        targets.push(parse(line, default_port).map_err(|e| TargetError::InFile {
            path: path.to_path_buf(),
            line: i + 1,
            source: Box::new(e),
        })?);
    }
    Ok(targets)
}

pub fn read_file(path: &Path, default_port: u16) -> Result<Vec<Target>, TargetError> {
    let text = std::fs::read_to_string(path).map_err(|e| TargetError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    parse_file_text(path, &text, default_port)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> String {
        parse(s, 5060).unwrap().to_string()
    }

    #[test]
    fn accepts_addresses_with_and_without_ports() {
        assert_eq!(ok("192.0.2.10"), "192.0.2.10:5060");
        assert_eq!(ok(" 192.0.2.10:5080 "), "192.0.2.10:5080");
        assert_eq!(ok("2001:db8::10"), "[2001:db8::10]:5060");
        assert_eq!(ok("[2001:db8::10]"), "[2001:db8::10]:5060");
        assert_eq!(ok("[2001:db8::10]:5061"), "[2001:db8::10]:5061");
        assert_eq!(parse("192.0.2.10", 5070).unwrap().0.port(), 5070);
    }

    #[test]
    fn refuses_names_bad_ports_and_group_addresses() {
        use TargetError::*;
        assert_eq!(parse("", 5060), Err(Empty));
        assert!(matches!(
            parse("sip.example.com", 5060),
            Err(NotAnAddress(_))
        ));
        assert!(matches!(
            parse("sip.example.com:5060", 5060),
            Err(NotAnAddress(_))
        ));
        assert!(matches!(parse("192.0.2.10:0", 5060), Err(BadPort(_))));
        assert!(matches!(parse("192.0.2.10:99999", 5060), Err(BadPort(_))));
        assert!(matches!(parse("192.0.2.10:", 5060), Err(BadPort(_))));
        assert!(matches!(parse("[2001:db8::1]5060", 5060), Err(BadPort(_))));
        assert!(matches!(parse("[2001:db8::1", 5060), Err(NotAnAddress(_))));
        assert!(matches!(
            parse("0.0.0.0", 5060),
            Err(NotUnicast(_, "unspecified"))
        ));
        assert!(matches!(
            parse("[::]:5060", 5060),
            Err(NotUnicast(_, "unspecified"))
        ));
        assert!(matches!(
            parse("224.0.0.1", 5060),
            Err(NotUnicast(_, "multicast"))
        ));
        assert!(matches!(
            parse("ff02::1", 5060),
            Err(NotUnicast(_, "multicast"))
        ));
        assert!(matches!(
            parse("255.255.255.255", 5060),
            Err(NotUnicast(_, "broadcast"))
        ));
        let e = parse("sip.example.com", 5060).unwrap_err().to_string();
        assert!(e.contains("does not resolve names"), "{e}");
    }

    #[test]
    fn files_skip_comments_and_name_the_bad_line() {
        let path = Path::new("targets.txt");
        let t = parse_file_text(
            path,
            "# lab\n192.0.2.1\n\n198.51.100.7:5080 # a PBX\n",
            5060,
        )
        .unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[1].to_string(), "198.51.100.7:5080");
        let e = parse_file_text(path, "192.0.2.1\nexample.org\n", 5060).unwrap_err();
        assert!(
            e.to_string().starts_with("targets.txt:2: `example.org`"),
            "{e}"
        );
    }
}
