//! Field inference, as the first seed's analyst does it by hand: what a tag encodes, what the
//! Via and Contact addresses say about the sender's host, how many scanner processes ran, and
//! what the TTL says about the stack and the distance.

use std::net::{IpAddr, Ipv4Addr};

use crate::escape::escape_bounded;

use super::facts::parse_ip;
#[cfg(target_arch = "x86_64")]
use crate::simd::in_range;

/// Longest decoded SIPVicious tag payload kept (an IPv6 target is 36 characters).
const SV_TAG_MAX: usize = 48;

/// What a SIPVicious `createTag` tag carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SvTagKind {
    /// svmap: the target address in hex and 4 hex digits of its port. IPv4: 8 hex digits.
    /// IPv6: the address as svmap was given it, colons removed (`2001db8250` for
    /// `2001:db8:2::50`), so its length varies and only the packet's destination can confirm it.
    Target,
    /// svcrack auth retry: `user:password`.
    Credentials,
    /// svwar: the extension being probed.
    Extension,
}

/// A tag in SIPVicious' `createTag` encoding: hex of `payload + 0x01 + random decimal`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SvTag {
    pub kind: SvTagKind,
    encoded: [u8; SV_TAG_MAX],
    len: u8,
}

impl SvTag {
    /// The payload before the 0x01 separator, decoded from hex (printable ASCII).
    pub fn encoded(&self) -> &[u8] {
        &self.encoded[..usize::from(self.len)]
    }

    pub fn kind_str(&self) -> &'static str {
        match self.kind {
            SvTagKind::Target => "target",
            SvTagKind::Credentials => "credentials",
            SvTagKind::Extension => "extension",
        }
    }

    /// The svmap target this tag was made for.
    pub fn target(&self) -> Option<(IpAddr, u16)> {
        if self.kind != SvTagKind::Target {
            return None;
        }
        let text = std::str::from_utf8(self.encoded()).ok()?;
        if text.len() != 12 {
            return None;
        }
        let (ip_hex, port_hex) = text.split_at(8);
        let port = u16::from_str_radix(port_hex, 16).ok()?;
        let ip = IpAddr::V4(Ipv4Addr::from(u32::from_str_radix(ip_hex, 16).ok()?));
        Some((ip, port))
    }

    /// The svcrack guess `(user, password)`.
    pub fn credentials(&self) -> Option<(&[u8], &[u8])> {
        if self.kind != SvTagKind::Credentials {
            return None;
        }
        let e = self.encoded();
        let colon = e.iter().position(|&b| b == b':')?;
        Some((&e[..colon], &e[colon + 1..]))
    }
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes the hex digits `hex` (an even number of them, at most twice `out`'s length) into
/// `out`; how many bytes, or `None` if one is not a hex digit. Sixteen digits at a time on x86-64
/// (SSE2 is part of its baseline): the From tag of every SIPVicious packet is decoded, and
/// decoding and checking it a byte at a time was a tenth of the work of a recalled message.
fn hex_decode(hex: &[u8], out: &mut [u8]) -> Option<usize> {
    // The stores below rely on it.
    assert!(hex.len().is_multiple_of(2) && hex.len() <= 2 * out.len());
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{
            __m128i, _mm_and_si128, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128,
            _mm_packus_epi16, _mm_set1_epi8, _mm_set1_epi16, _mm_slli_epi16, _mm_srli_epi16,
            _mm_storel_epi64, _mm_sub_epi8,
        };
        while done + 16 <= hex.len() {
            // SAFETY: hex[done..done + 16] is in bounds, and out[done / 2..done / 2 + 8] too
            // (hex.len() <= 2 * out.len()); the rest are register-only SSE2 operations, always
            // available on x86-64.
            unsafe {
                let v = _mm_loadu_si128(hex.as_ptr().add(done).cast::<__m128i>());
                // Setting 0x20 keeps bytes above 0x7f negative, outside the letters' range.
                let digit = in_range(v, b'0', b'9');
                let lower = _mm_or_si128(v, _mm_set1_epi8(0x20));
                let letter = in_range(lower, b'a', b'f');
                if _mm_movemask_epi8(_mm_or_si128(digit, letter)) != 0xffff {
                    return None;
                }
                let nibbles = _mm_or_si128(
                    _mm_and_si128(digit, _mm_sub_epi8(v, _mm_set1_epi8(b'0' as i8))),
                    _mm_and_si128(letter, _mm_sub_epi8(lower, _mm_set1_epi8(b'a' as i8 - 10))),
                );
                // Each 16-bit lane holds a pair: its first digit in the low byte.
                let high = _mm_slli_epi16(_mm_and_si128(nibbles, _mm_set1_epi16(0x0f)), 4);
                let low = _mm_srli_epi16(nibbles, 8);
                let bytes = _mm_packus_epi16(_mm_or_si128(high, low), _mm_set1_epi8(0));
                _mm_storel_epi64(out.as_mut_ptr().add(done / 2).cast::<__m128i>(), bytes);
            }
            done += 16;
        }
    }
    for (pair, byte) in hex[done..].chunks_exact(2).zip(&mut out[done / 2..]) {
        *byte = hex_val(pair[0])? << 4 | hex_val(pair[1])?;
    }
    Some(hex.len() / 2)
}

/// Decodes a tag made by SIPVicious' `createTag`; `None` for any other tag.
pub fn decode_sv_tag(tag: &[u8]) -> Option<SvTag> {
    // payload (<= 48) + 0x01 + up to 10 random digits, hex-encoded.
    if !tag.len().is_multiple_of(2) || tag.len() < 6 || tag.len() > 2 * (SV_TAG_MAX + 11) {
        return None;
    }
    let mut raw = [0u8; 64];
    let n = hex_decode(tag, &mut raw[..SV_TAG_MAX + 11])?;
    let classes = ByteClasses::of(&raw);
    // Bits 0..k.
    let below = |k: usize| (1u64 << k) - 1;
    let sep = (classes.separator & below(n)).trailing_zeros() as usize;
    if sep >= n {
        return None;
    }
    let (payload, random) = (below(sep), below(n) & !below(sep + 1));
    if sep == 0
        || sep > SV_TAG_MAX
        || classes.graphic & payload != payload
        || random == 0
        || n - sep - 1 > 10
        || classes.digit & random != random
    {
        return None;
    }
    let all_hex = classes.hex & payload == payload;
    // svwar extensions are short; 12 or more hex digits are an svmap target (IPv6 as svmap
    // writes it is at most 32 + 4).
    let kind = if all_hex && (12..=36).contains(&sep) {
        SvTagKind::Target
    } else if classes.colon & payload != 0 {
        SvTagKind::Credentials
    } else {
        SvTagKind::Extension
    };
    let mut encoded = [0u8; SV_TAG_MAX];
    encoded[..sep].copy_from_slice(&raw[..sep]);
    Some(SvTag {
        kind,
        encoded,
        len: sep as u8,
    })
}

/// Bit i of each: byte i of a decoded tag is the separator (0x01), printable ASCII but the
/// space, a decimal digit, a hex digit, a colon. The tag's checks are then a few masks, not a
/// loop over its bytes each.
struct ByteClasses {
    separator: u64,
    graphic: u64,
    digit: u64,
    hex: u64,
    colon: u64,
}

impl ByteClasses {
    #[cfg(target_arch = "x86_64")]
    fn of(raw: &[u8; 64]) -> Self {
        use std::arch::x86_64::{
            __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128,
            _mm_set1_epi8,
        };
        let mut c = Self {
            separator: 0,
            graphic: 0,
            digit: 0,
            hex: 0,
            colon: 0,
        };
        for (i, block) in raw.chunks_exact(16).enumerate() {
            // SAFETY: `block` is 16 bytes; the rest are register-only SSE2 operations, always
            // available on x86-64.
            unsafe {
                let v = _mm_loadu_si128(block.as_ptr().cast::<__m128i>());
                let bits = |m: __m128i| (_mm_movemask_epi8(m) as u32 as u64) << (16 * i);
                let digit = in_range(v, b'0', b'9');
                let letter = in_range(_mm_or_si128(v, _mm_set1_epi8(0x20)), b'a', b'f');
                c.separator |= bits(_mm_cmpeq_epi8(v, _mm_set1_epi8(1)));
                c.graphic |= bits(in_range(v, 0x21, 0x7e));
                c.digit |= bits(digit);
                c.hex |= bits(_mm_or_si128(digit, letter));
                c.colon |= bits(_mm_cmpeq_epi8(v, _mm_set1_epi8(b':' as i8)));
            }
        }
        c
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn of(raw: &[u8; 64]) -> Self {
        let bits = |f: fn(&u8) -> bool| {
            raw.iter()
                .enumerate()
                .fold(0u64, |m, (i, b)| m | u64::from(f(b)) << i)
        };
        Self {
            separator: bits(|b| *b == 1),
            graphic: bits(u8::is_ascii_graphic),
            digit: bits(u8::is_ascii_digit),
            hex: bits(u8::is_ascii_hexdigit),
            colon: bits(|b| *b == b':'),
        }
    }
}

/// What a tag decoded to, compared with the packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagInference {
    pub field: &'static str,
    pub encoding: &'static str,
    pub kind: &'static str,
    /// Escaped decoded payload (`c000020113c4`, `100`, `100:1234`).
    pub decoded: String,
    /// svmap: the target the scanner meant, `ip:port`.
    pub target: Option<String>,
    /// svmap: whether that target is the packet's real destination.
    pub matches_destination: Option<bool>,
    pub extension: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub note: String,
}

pub fn infer_tag(tag: &SvTag, dst: Option<(IpAddr, u16)>) -> TagInference {
    let mut out = TagInference {
        field: "from.tag",
        encoding: "sipvicious_createtag",
        kind: tag.kind_str(),
        decoded: escape_bounded(tag.encoded(), 64),
        target: None,
        matches_destination: None,
        extension: None,
        user: None,
        password: None,
        note: String::new(),
    };
    match tag.kind {
        SvTagKind::Target => {
            let v6_target = match dst {
                Some((IpAddr::V6(dip), dport)) if tag.target().is_none() => {
                    let expected = format!("{}{dport:04x}", dip.to_string().replace(':', ""));
                    Some((expected.as_bytes() == tag.encoded(), dip, dport))
                }
                _ => None,
            };
            if let Some((same, dip, dport)) = v6_target {
                out.matches_destination = Some(same);
                if same {
                    out.target = Some(format!("[{dip}]:{dport}"));
                    out.note = format!(
                        "svmap encodes its IPv6 target in the From tag with the colons removed; \
                         it is [{dip}]:{dport}, this packet's own destination"
                    );
                } else {
                    out.note = "svmap encodes its IPv6 target in the From tag with the colons \
                                removed; it is not this packet's destination"
                        .to_string();
                }
            } else if let Some((ip, port)) = tag.target() {
                let target = match ip {
                    IpAddr::V4(v4) => format!("{v4}:{port}"),
                    IpAddr::V6(v6) => format!("[{v6}]:{port}"),
                };
                out.note = match dst {
                    Some((dip, dport)) if dip == ip && dport == port => format!(
                        "svmap encodes its target in the From tag; it decodes to {target}, this \
                         packet's own destination"
                    ),
                    Some((dip, dport)) => format!(
                        "svmap encodes its target in the From tag; it decodes to {target}, not this \
                         packet's destination {dip}:{dport}: the payload was replayed, relayed, \
                         edited (an address obfuscated) or sent to another address than it was built for"
                    ),
                    None => {
                        format!("svmap encodes its target in the From tag; it decodes to {target}")
                    }
                };
                out.matches_destination = dst.map(|(dip, dport)| dip == ip && dport == port);
                out.target = Some(target);
            }
        }
        SvTagKind::Credentials => {
            if let Some((user, password)) = tag.credentials() {
                out.user = Some(escape_bounded(user, 64));
                out.password = Some(escape_bounded(password, 64));
                out.note = "svcrack puts the credentials it is trying in the From tag of its \
                            authenticated retry: this is the password guess"
                    .to_string();
            }
        }
        SvTagKind::Extension => {
            out.extension = Some(escape_bounded(tag.encoded(), 64));
            out.note = "svwar encodes the extension it probes in the From tag".to_string();
        }
    }
    out
}

/// What kind of address a tool wrote as its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostClass {
    /// 127.0.0.1: SIPVicious' fallback when it cannot resolve its own name.
    LoopbackUnresolved,
    /// 127.0.1.1: the Debian/Ubuntu `/etc/hosts` entry for the machine's own name.
    DebianHostsFile,
    Loopback,
    /// 172.17.0.0/16: Docker's default bridge.
    DockerBridge,
    /// RFC 1918 / unique local: behind NAT.
    Private,
    /// 100.64.0.0/10: carrier-grade NAT.
    SharedCgnat,
    LinkLocal,
    Unspecified,
    /// Equal to the packet's source address (whatever its range).
    SameAsSource,
    /// Public, not the packet's source.
    PublicOther,
    /// An address the matched rule knows the tool hard-codes.
    ToolConstant,
    Hostname,
    Empty,
}

impl HostClass {
    /// Every class, for consumers that bin by class (the aggregator).
    pub const ALL: [HostClass; 13] = [
        HostClass::LoopbackUnresolved,
        HostClass::DebianHostsFile,
        HostClass::Loopback,
        HostClass::DockerBridge,
        HostClass::Private,
        HostClass::SharedCgnat,
        HostClass::LinkLocal,
        HostClass::Unspecified,
        HostClass::SameAsSource,
        HostClass::PublicOther,
        HostClass::ToolConstant,
        HostClass::Hostname,
        HostClass::Empty,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HostClass::LoopbackUnresolved => "loopback_unresolved",
            HostClass::DebianHostsFile => "debian_hosts_file",
            HostClass::Loopback => "loopback",
            HostClass::DockerBridge => "docker_bridge",
            HostClass::Private => "private_nat",
            HostClass::SharedCgnat => "shared_cgnat",
            HostClass::LinkLocal => "link_local",
            HostClass::Unspecified => "unspecified",
            HostClass::SameAsSource => "same_as_source",
            HostClass::PublicOther => "public_other_than_source",
            HostClass::ToolConstant => "tool_constant",
            HostClass::Hostname => "hostname",
            HostClass::Empty => "empty",
        }
    }

    pub fn explanation(self) -> &'static str {
        match self {
            HostClass::LoopbackUnresolved => {
                "127.0.0.1: the tool could not resolve its own host name (SIPVicious falls back to \
                 127.0.0.1 when gethostbyname(gethostname()) fails)"
            }
            HostClass::DebianHostsFile => {
                "127.0.1.1: the host name resolves through a Debian/Ubuntu /etc/hosts entry: the \
                 scanner runs on a Debian-family system"
            }
            HostClass::Loopback => "a loopback address: the tool used its loopback interface",
            HostClass::DockerBridge => {
                "Docker's default bridge (172.17.0.0/16): the tool runs in a container"
            }
            HostClass::Private => {
                "a private address: the scanner's own LAN address, so it sits behind NAT"
            }
            HostClass::SharedCgnat => {
                "shared address space (100.64.0.0/10): the scanner sits behind carrier-grade NAT"
            }
            HostClass::LinkLocal => "a link-local address",
            HostClass::Unspecified => "the unspecified address (0.0.0.0 or ::)",
            HostClass::SameAsSource => {
                "the packet's own source address: no NAT between the tool and the sensor"
            }
            HostClass::PublicOther => {
                "a public address other than the packet's source: a relay, spoofing, a multi-homed \
                 host, or an external address set by hand"
            }
            HostClass::ToolConstant => {
                "an address hard-coded in this tool or variant (seen from many unrelated sources), \
                 not evidence of the sender's own network"
            }
            HostClass::Hostname => "a host name rather than an address",
            HostClass::Empty => "no host",
        }
    }
}

pub fn classify_host(host: &[u8], source: Option<IpAddr>, tool_constants: &[IpAddr]) -> HostClass {
    if host.is_empty() {
        return HostClass::Empty;
    }
    let Some(ip) = parse_ip(host) else {
        return HostClass::Hostname;
    };
    if tool_constants.contains(&ip) {
        return HostClass::ToolConstant;
    }
    if source == Some(ip) {
        return HostClass::SameAsSource;
    }
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if v4 == Ipv4Addr::new(127, 0, 0, 1) {
                HostClass::LoopbackUnresolved
            } else if v4 == Ipv4Addr::new(127, 0, 1, 1) {
                HostClass::DebianHostsFile
            } else if v4.is_loopback() {
                HostClass::Loopback
            } else if o[0] == 172 && o[1] == 17 {
                HostClass::DockerBridge
            } else if v4.is_private() {
                HostClass::Private
            } else if o[0] == 100 && (64..128).contains(&o[1]) {
                HostClass::SharedCgnat
            } else if v4.is_link_local() {
                HostClass::LinkLocal
            } else if v4.is_unspecified() {
                HostClass::Unspecified
            } else {
                HostClass::PublicOther
            }
        }
        IpAddr::V6(v6) => {
            let seg0 = v6.segments()[0];
            if v6.is_loopback() {
                HostClass::Loopback
            } else if v6.is_unspecified() {
                HostClass::Unspecified
            } else if seg0 & 0xfe00 == 0xfc00 {
                HostClass::Private
            } else if seg0 & 0xffc0 == 0xfe80 {
                HostClass::LinkLocal
            } else {
                HostClass::PublicOther
            }
        }
    }
}

/// The class of the Via or Contact host, with what it means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostInference {
    pub field: &'static str,
    pub host: String,
    pub port: Option<u16>,
    pub class: HostClass,
    pub note: String,
}

pub fn infer_host(
    field: &'static str,
    host: &[u8],
    port: Option<u16>,
    source: Option<IpAddr>,
    tool_constants: &[IpAddr],
) -> HostInference {
    let class = classify_host(host, source, tool_constants);
    let mut note = class.explanation().to_string();
    if port == Some(0) {
        note.push_str(
            "; port 0: the tool bound port 0 (svmap -P 0), the kernel picked an ephemeral source \
             port but the header still says 0",
        );
    }
    HostInference {
        field,
        host: escape_bounded(host, 64),
        port,
        class,
        note,
    }
}

/// How many scanner processes ran on the sender, for tools that bind a fixed port and take
/// the next free one when it is busy (SIPVicious: 5060, 5061, ...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessEstimate {
    pub base_port: u16,
    pub bound_port: u16,
    /// `via.port` (the tool's own view) or `src_port`.
    pub basis: &'static str,
    pub processes: u32,
    pub note: String,
}

/// Ports above the base still read as "the tool counted up to here".
const MAX_PORT_WALK: u16 = 1024;

/// The port the tool bound, where it was read, and the processes that implies (the estimate
/// without its explanation).
pub fn process_count(
    base: u16,
    via_port: Option<u16>,
    src_port: Option<u16>,
) -> Option<(u16, &'static str, u32)> {
    let in_walk = |p: u16| p >= base && p - base < MAX_PORT_WALK;
    let (bound, basis) = match (via_port, src_port) {
        (Some(v), _) if in_walk(v) => (v, "via.port"),
        (_, Some(s)) if in_walk(s) => (s, "src_port"),
        _ => return None,
    };
    Some((bound, basis, u32::from(bound - base) + 1))
}

pub fn estimate_processes(
    base: u16,
    via_port: Option<u16>,
    src_port: Option<u16>,
) -> Option<ProcessEstimate> {
    let (bound, basis, processes) = process_count(base, via_port, src_port)?;
    let mut note = if processes == 1 {
        format!(
            "bound {base} itself: nothing else held {base} on the sender, so one scanner process \
             and no local SIP service"
        )
    } else {
        format!(
            "bound {bound}: ports {base}..{} were already taken, so about {processes} concurrent \
             scanner processes on the sender (or a local SIP service on {base} and {} scanner \
             processes)",
            bound - 1,
            processes - 1
        )
    };
    if let (Some(v), Some(s)) = (via_port, src_port)
        && v != s
        && v != 0
    {
        note.push_str(&format!(
            "; the source port {s} differs from the Via port {v}: a NAT rewrote the port, the Via \
             port is the tool's own"
        ));
    }
    Some(ProcessEstimate {
        base_port: base,
        bound_port: bound,
        basis,
        processes,
        note,
    })
}

/// The initial TTL family and the hop count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TtlInference {
    pub observed: u8,
    pub initial: u8,
    pub hops: u8,
    pub hint: &'static str,
    pub caveat: Option<&'static str>,
}

pub fn infer_ttl(ttl: u8) -> TtlInference {
    let initial = match ttl {
        0..=32 => 32,
        33..=64 => 64,
        65..=128 => 128,
        _ => 255,
    };
    let hops = initial - ttl;
    let hint = match initial {
        32 => "initial TTL 32: old Windows (9x/NT 4) or a TTL set by the tool",
        64 => "initial TTL 64: Linux, a BSD, macOS or another Unix-like stack",
        128 => "initial TTL 128: Windows",
        _ => {
            "initial TTL 255: raw packets from a scanner that sets 255 (zmap before 4.1, masscan), \
             or network equipment / Solaris"
        }
    };
    let caveat = (hops > 30).then_some(
        "more than 30 hops is implausible: the initial TTL was probably randomised or unusual \
         (nmap's raw probes use 37 to 59)",
    );
    TtlInference {
        observed: ttl,
        initial,
        hops,
        hint,
        caveat,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `decode_sv_tag` a byte at a time, as it was written first.
    fn decode_byte_by_byte(tag: &[u8]) -> Option<SvTag> {
        if !tag.len().is_multiple_of(2) || tag.len() < 6 || tag.len() > 2 * (SV_TAG_MAX + 11) {
            return None;
        }
        let raw: Vec<u8> = tag
            .chunks_exact(2)
            .map(|p| Some(hex_val(p[0])? << 4 | hex_val(p[1])?))
            .collect::<Option<_>>()?;
        let sep = raw.iter().position(|&b| b == 0x01)?;
        let (payload, random) = (&raw[..sep], &raw[sep + 1..]);
        if payload.is_empty()
            || payload.len() > SV_TAG_MAX
            || !payload.iter().all(|b| b.is_ascii_graphic())
            || random.is_empty()
            || random.len() > 10
            || !random.iter().all(u8::is_ascii_digit)
        {
            return None;
        }
        let kind =
            if payload.iter().all(u8::is_ascii_hexdigit) && (12..=36).contains(&payload.len()) {
                SvTagKind::Target
            } else if payload.contains(&b':') {
                SvTagKind::Credentials
            } else {
                SvTagKind::Extension
            };
        let mut encoded = [0u8; SV_TAG_MAX];
        encoded[..payload.len()].copy_from_slice(payload);
        Some(SvTag {
            kind,
            encoded,
            len: payload.len() as u8,
        })
    }

    #[test]
    fn tags_decode_as_a_byte_at_a_time() {
        // Payloads of every kind and length, the separator anywhere (or twice, or missing), and
        // random parts of digits or not.
        let payload_bytes = b"0123456789abcdefABCDEF:g ~\x7f\x01\x80/";
        let mut random = crate::fingerprint::key::tests::below();
        let mut decoded = [0usize; 3];
        for _ in 0..60_000 {
            // A third of the payloads are hex digits only, as svmap's targets are.
            let pool = if random(3) == 0 {
                22
            } else {
                payload_bytes.len()
            };
            let mut raw: Vec<u8> = (0..random(52))
                .map(|_| payload_bytes[random(pool)])
                .collect();
            if random(8) > 0 {
                raw.push(1);
            }
            let digits = random(13);
            raw.extend((0..digits).map(|_| {
                if random(30) == 0 {
                    b'x'
                } else {
                    b'0' + random(10) as u8
                }
            }));
            let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
            let want = decode_byte_by_byte(hex.as_bytes());
            assert_eq!(decode_sv_tag(hex.as_bytes()), want, "{raw:?}");
            if let Some(t) = want {
                decoded[t.kind as usize] += 1;
            }
        }
        assert!(decoded.iter().all(|&n| n > 100), "{decoded:?}");
    }

    #[test]
    fn hex_decodes_as_a_digit_at_a_time() {
        // Around one and two blocks of sixteen digits, with every kind of byte that is not one.
        let alphabet = b"0123456789abcdefABCDEF/:@`gG\x00\x7f\x80\xff";
        let mut random = crate::fingerprint::key::tests::below();
        let mut decoded = 0;
        for len in (0..72).step_by(2) {
            for _ in 0..300 {
                let hex: Vec<u8> = (0..len)
                    .map(|_| {
                        // Mostly digits, so that whole blocks decode too.
                        let pick = random(400);
                        alphabet[if pick < 390 {
                            pick % 22
                        } else {
                            22 + pick % 10
                        }]
                    })
                    .collect();
                let want: Option<Vec<u8>> = hex
                    .chunks_exact(2)
                    .map(|p| Some(hex_val(p[0])? << 4 | hex_val(p[1])?))
                    .collect();
                let mut out = [0u8; 40];
                let got = hex_decode(&hex, &mut out).map(|n| out[..n].to_vec());
                assert_eq!(got, want, "{}", String::from_utf8_lossy(&hex));
                decoded += usize::from(got.is_some());
            }
        }
        assert!(decoded > 2000, "{decoded}");
    }

    #[test]
    fn decodes_seed_svmap_tag() {
        let tag = decode_sv_tag(b"34353131313634613133633401353835363538393133").unwrap();
        assert_eq!(tag.kind, SvTagKind::Target);
        assert_eq!(tag.encoded(), b"4511164a13c4");
        let (ip, port) = tag.target().unwrap();
        assert_eq!(ip.to_string(), "69.17.22.74");
        assert_eq!(port, 5060);
    }

    #[test]
    fn decodes_reference_tags() {
        for (tag, target) in [
            (
                "63303030303230613133633401353737303930303337",
                "192.0.2.10:5060",
            ),
            (
                "3262636137666337313363340133383939323732353135",
                "43.202.127.199:5060",
            ),
            (
                "3830303330303030313761630131333132303130313639",
                "128.3.0.0:6060",
            ),
            (
                "6434396633623535313363340133343333313138393833",
                "212.159.59.85:5060",
            ),
        ] {
            let t = decode_sv_tag(tag.as_bytes()).unwrap();
            let inf = infer_tag(&t, None);
            assert_eq!(inf.target.as_deref(), Some(target), "{tag}");
        }
    }

    #[test]
    fn decodes_svwar_and_svcrack_tags() {
        let hex = |s: &[u8]| -> String { s.iter().map(|b| format!("{b:02x}")).collect() };
        let t = decode_sv_tag(hex(b"100\x011234567890").as_bytes()).unwrap();
        assert_eq!(t.kind, SvTagKind::Extension);
        assert_eq!(infer_tag(&t, None).extension.as_deref(), Some("100"));
        let t = decode_sv_tag(hex(b"100:secret\x01987").as_bytes()).unwrap();
        assert_eq!(t.credentials(), Some((&b"100"[..], &b"secret"[..])));
        // Not createTag: plain decimal, odd length, no separator, bad random part.
        for bad in [
            &b"3206210844"[..],
            b"77194458456158489721772408023096992174807017852",
            b"313030",
            b"31303001",
            b"3130300141",
            b"zz",
        ] {
            assert_eq!(decode_sv_tag(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn tag_target_against_destination() {
        let t = decode_sv_tag(b"63303030303230613133633401353737303930303337").unwrap();
        let same = infer_tag(&t, Some(("192.0.2.10".parse().unwrap(), 5060)));
        assert_eq!(same.matches_destination, Some(true));
        let other = infer_tag(&t, Some(("192.0.2.11".parse().unwrap(), 5060)));
        assert_eq!(other.matches_destination, Some(false));
        assert!(other.note.contains("not this packet's destination"));
    }

    #[test]
    fn host_classes() {
        let src: IpAddr = "198.51.100.7".parse().unwrap();
        let c = |h: &str| classify_host(h.as_bytes(), Some(src), &[]);
        assert_eq!(c("127.0.0.1"), HostClass::LoopbackUnresolved);
        assert_eq!(c("127.0.1.1"), HostClass::DebianHostsFile);
        assert_eq!(c("127.9.9.9"), HostClass::Loopback);
        assert_eq!(c("172.17.0.5"), HostClass::DockerBridge);
        assert_eq!(c("172.18.0.5"), HostClass::Private);
        assert_eq!(c("192.168.1.9"), HostClass::Private);
        assert_eq!(c("10.1.2.3"), HostClass::Private);
        assert_eq!(c("100.70.0.1"), HostClass::SharedCgnat);
        assert_eq!(c("0.0.0.0"), HostClass::Unspecified);
        assert_eq!(c("198.51.100.7"), HostClass::SameAsSource);
        assert_eq!(c("162.217.96.20"), HostClass::PublicOther);
        assert_eq!(c("pc33.atlanta.com"), HostClass::Hostname);
        assert_eq!(c("[fd00::1]"), HostClass::Private);
        assert_eq!(c(""), HostClass::Empty);
        let constant: IpAddr = "192.168.1.9".parse().unwrap();
        assert_eq!(
            classify_host(b"192.168.1.9", Some(src), &[constant]),
            HostClass::ToolConstant
        );
        let port0 = infer_host("via.host", b"162.217.96.20", Some(0), Some(src), &[]);
        assert!(port0.note.contains("port 0"));
    }

    #[test]
    fn process_estimates() {
        let one = estimate_processes(5060, Some(5060), Some(5060)).unwrap();
        assert_eq!(one.processes, 1);
        assert!(one.note.contains("one scanner process"));
        let many = estimate_processes(5060, Some(5084), Some(5084)).unwrap();
        assert_eq!(many.processes, 25);
        let natted = estimate_processes(5060, Some(5061), Some(40000)).unwrap();
        assert_eq!((natted.processes, natted.basis), (2, "via.port"));
        assert!(natted.note.contains("NAT"));
        let by_src = estimate_processes(5060, Some(0), Some(5062)).unwrap();
        assert_eq!((by_src.processes, by_src.basis), (3, "src_port"));
        assert_eq!(estimate_processes(5060, Some(0), Some(40000)), None);
        assert_eq!(estimate_processes(5060, None, Some(5059)), None);
    }

    #[test]
    fn ttl_families() {
        assert_eq!((infer_ttl(52).initial, infer_ttl(52).hops), (64, 12));
        assert_eq!(infer_ttl(113).initial, 128);
        assert_eq!(infer_ttl(250).initial, 255);
        assert_eq!(infer_ttl(30).initial, 32);
        assert!(infer_ttl(33).caveat.is_some());
        assert!(infer_ttl(37).caveat.is_none());
        assert!(infer_ttl(60).caveat.is_none());
    }
}
