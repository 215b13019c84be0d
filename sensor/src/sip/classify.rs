//! What a payload is when it is not (or not only) a SIP message: a darknet sees probes of every
//! kind on 5060, and the odd ones are fingerprints too.

/// The kind of a captured payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PayloadKind {
    /// A SIP request line was found.
    SipRequest,
    /// A SIP status line was found.
    SipResponse,
    /// A method name alone, nothing else (zmap's 7-byte `OPTIONS` probe, `sip_5060.pkt`).
    BareMethod,
    /// An HTTP request or response line.
    Http,
    /// A TLS record header (handshake, alert, ...): a TLS client on 5060/5061.
    Tls,
    /// Printable text that is neither SIP nor HTTP.
    Text,
    /// Anything else.
    Binary,
    /// No payload bytes at all.
    Empty,
}

impl PayloadKind {
    /// Stable snake_case name used in JSON and in rule files.
    pub fn as_str(self) -> &'static str {
        match self {
            PayloadKind::SipRequest => "sip_request",
            PayloadKind::SipResponse => "sip_response",
            PayloadKind::BareMethod => "bare_method",
            PayloadKind::Http => "http",
            PayloadKind::Tls => "tls",
            PayloadKind::Text => "text",
            PayloadKind::Binary => "binary",
            PayloadKind::Empty => "empty",
        }
    }

    pub const ALL: [PayloadKind; 8] = [
        PayloadKind::SipRequest,
        PayloadKind::SipResponse,
        PayloadKind::BareMethod,
        PayloadKind::Http,
        PayloadKind::Tls,
        PayloadKind::Text,
        PayloadKind::Binary,
        PayloadKind::Empty,
    ];

    pub fn is_sip(self) -> bool {
        matches!(self, PayloadKind::SipRequest | PayloadKind::SipResponse)
    }
}

/// SIP methods of RFC 3261 and its extensions; a bare payload equal to one of them is a probe.
const SIP_METHODS: &[&[u8]] = &[
    b"OPTIONS",
    b"INVITE",
    b"REGISTER",
    b"ACK",
    b"BYE",
    b"CANCEL",
    b"SUBSCRIBE",
    b"NOTIFY",
    b"MESSAGE",
    b"INFO",
    b"PRACK",
    b"UPDATE",
    b"REFER",
    b"PUBLISH",
];

const HTTP_METHODS: &[&[u8]] = &[
    b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"CONNECT", b"PATCH", b"TRACE",
];

/// Classifies a payload whose first line is not a SIP start line.
pub fn classify_other(payload: &[u8], first_line: &[u8]) -> PayloadKind {
    if payload.is_empty() {
        return PayloadKind::Empty;
    }
    let trimmed = trim_line_end(payload);
    if SIP_METHODS.iter().any(|m| m.eq_ignore_ascii_case(trimmed)) {
        return PayloadKind::BareMethod;
    }
    // TLS record: content type 20..=23, major version 3, minor 0..=4.
    if payload.len() >= 3
        && (0x14..=0x17).contains(&payload[0])
        && payload[1] == 3
        && payload[2] <= 4
    {
        return PayloadKind::Tls;
    }
    if is_http_line(first_line) {
        return PayloadKind::Http;
    }
    let printable = payload
        .iter()
        .filter(|&&b| (0x20..0x7f).contains(&b) || matches!(b, b'\r' | b'\n' | b'\t'))
        .count();
    // Mostly printable: text (a protocol we do not parse, or garbage typed by hand).
    if printable * 10 >= payload.len() * 9 {
        PayloadKind::Text
    } else {
        PayloadKind::Binary
    }
}

fn trim_line_end(bytes: &[u8]) -> &[u8] {
    let mut end = bytes.len();
    while end > 0 && matches!(bytes[end - 1], b'\r' | b'\n') {
        end -= 1;
    }
    &bytes[..end]
}

fn is_http_line(line: &[u8]) -> bool {
    if line.starts_with(b"HTTP/") {
        return true;
    }
    let Some(space) = line.iter().position(|&b| b == b' ') else {
        return false;
    };
    let line = trim_line_end(line);
    HTTP_METHODS.contains(&&line[..space])
        && line.len() >= 8
        && line[line.len() - 8..].starts_with(b"HTTP/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first_line(p: &[u8]) -> &[u8] {
        let end = p.iter().position(|&b| b == b'\n').unwrap_or(p.len());
        &p[..end]
    }

    fn kind(p: &[u8]) -> PayloadKind {
        classify_other(p, first_line(p))
    }

    #[test]
    fn kinds() {
        assert_eq!(kind(b""), PayloadKind::Empty);
        assert_eq!(kind(b"OPTIONS"), PayloadKind::BareMethod);
        assert_eq!(kind(b"OPTIONS\r\n"), PayloadKind::BareMethod);
        assert_eq!(
            kind(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            PayloadKind::Http
        );
        assert_eq!(kind(b"HTTP/1.1 200 OK\r\n"), PayloadKind::Http);
        assert_eq!(kind(b"\x16\x03\x01\x00\xa5\x01\x00\x00"), PayloadKind::Tls);
        assert_eq!(kind(b"hello there\r\n"), PayloadKind::Text);
        assert_eq!(kind(b"\x00\x01\x02\x03\xff\xfe"), PayloadKind::Binary);
        for k in PayloadKind::ALL {
            assert!(!k.as_str().is_empty());
        }
    }
}
