//! The structural template of a message and its stable hash: method, header names in order as
//! spelled, the spacing around colons, line endings, and each value's shape with its random
//! parts abstracted (digit runs become `9`, hex runs `x`, letter runs `a`, mixed runs `w`;
//! SIP keywords are kept). Packets of one tool share a template whatever their targets, tags
//! and Call-IDs, so unnamed tools still cluster.
//!
//! The hash is 64-bit FNV-1a over the template bytes: stable across runs, builds and machines.

use crate::sip::SipMessage;

/// The words `is_keyword` keeps, as a list: the classification cache's key keeps them too
/// (`key::is_kept_word`), and its tests check both against this list.
#[cfg(test)]
pub(crate) const KEYWORDS: &[&[u8]] = &[
    b"SIP",
    b"sip",
    b"sips",
    b"tel",
    b"UDP",
    b"TCP",
    b"TLS",
    b"SCTP",
    b"WS",
    b"WSS",
    b"udp",
    b"tcp",
    b"tls",
    b"tag",
    b"branch",
    b"rport",
    b"alias",
    b"received",
    b"transport",
    b"expires",
    b"lr",
    b"maddr",
    b"ttl",
    b"user",
    b"phone",
    b"application",
    b"sdp",
    b"text",
    b"plain",
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
    b"Digest",
    b"MD5",
    b"username",
    b"realm",
    b"nonce",
    b"uri",
    b"response",
    b"algorithm",
    b"qop",
    b"auth",
    b"cnonce",
    b"nc",
    b"IN",
    b"IP4",
    b"IP6",
    b"RTP",
    b"AVP",
];

/// Words kept literally in value shapes: they are protocol structure, not data. A `match`
/// compiles to a switch on length then byte compares: this runs for every word of every value.
fn is_keyword(run: &[u8]) -> bool {
    matches!(
        run,
        b"SIP"
            | b"sip"
            | b"sips"
            | b"tel"
            | b"UDP"
            | b"TCP"
            | b"TLS"
            | b"SCTP"
            | b"WS"
            | b"WSS"
            | b"udp"
            | b"tcp"
            | b"tls"
            | b"tag"
            | b"branch"
            | b"rport"
            | b"alias"
            | b"received"
            | b"transport"
            | b"expires"
            | b"lr"
            | b"maddr"
            | b"ttl"
            | b"user"
            | b"phone"
            | b"application"
            | b"sdp"
            | b"text"
            | b"plain"
            | b"OPTIONS"
            | b"INVITE"
            | b"REGISTER"
            | b"ACK"
            | b"BYE"
            | b"CANCEL"
            | b"SUBSCRIBE"
            | b"NOTIFY"
            | b"MESSAGE"
            | b"INFO"
            | b"PRACK"
            | b"UPDATE"
            | b"REFER"
            | b"PUBLISH"
            | b"Digest"
            | b"MD5"
            | b"username"
            | b"realm"
            | b"nonce"
            | b"uri"
            | b"response"
            | b"algorithm"
            | b"qop"
            | b"auth"
            | b"cnonce"
            | b"nc"
            | b"IN"
            | b"IP4"
            | b"IP6"
            | b"RTP"
            | b"AVP"
    )
}

/// The RFC 3261 magic cookie: kept, and what follows it shaped.
const COOKIE: &[u8] = b"z9hG4bK";

/// Body lines shaped at most (SDP bodies are short; the rest is noise).
const BODY_LINES: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TemplateHash(pub u64);

impl TemplateHash {
    pub fn hex(self) -> String {
        format!("{:016x}", self.0)
    }
}

trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

struct Fnv(u64);

impl Sink for Fnv {
    fn put(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

struct Text(Vec<u8>);

impl Sink for Text {
    fn put(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }
}

fn shape(value: &[u8], out: &mut impl Sink) {
    let mut i = 0;
    while i < value.len() {
        let b = value[i];
        if !b.is_ascii_alphanumeric() {
            out.put(&value[i..=i]);
            i += 1;
            continue;
        }
        let start = i;
        while i < value.len() && value[i].is_ascii_alphanumeric() {
            i += 1;
        }
        let mut run = &value[start..i];
        if let Some(rest) = run.strip_prefix(COOKIE) {
            out.put(COOKIE);
            run = rest;
            if run.is_empty() {
                continue;
            }
        }
        let (mut digits, mut hex_letters, mut letters) = (0usize, 0usize, 0usize);
        for &c in run {
            if c.is_ascii_digit() {
                digits += 1;
            } else {
                letters += 1;
                hex_letters += usize::from(c.is_ascii_hexdigit());
            }
        }
        if is_keyword(run) {
            out.put(run);
        } else if letters == 0 {
            out.put(b"9");
        } else if digits > 0 && hex_letters == letters {
            out.put(b"x");
        } else if digits == 0 {
            out.put(b"a");
        } else {
            out.put(b"w");
        }
    }
}

fn walk(msg: &SipMessage<'_>, out: &mut impl Sink) {
    out.put(msg.kind().as_str().as_bytes());
    out.put(b"|");
    out.put(msg.line_endings().as_str().as_bytes());
    out.put(b"\n");
    if !msg.is_sip() {
        // No structure to read: the kind, the length and the first bytes' shape.
        out.put(msg.bytes().len().to_string().as_bytes());
        out.put(b"\n");
        shape(&msg.bytes()[..msg.bytes().len().min(64)], out);
        return;
    }
    match msg.start_line() {
        crate::sip::StartLine::Request {
            method,
            uri,
            version,
        } => {
            out.put(method);
            out.put(b" ");
            shape(uri, out);
            out.put(b" ");
            out.put(version);
        }
        crate::sip::StartLine::Response { version, .. } => {
            out.put(version);
            out.put(b" 9");
        }
        crate::sip::StartLine::None => {}
    }
    out.put(b"\n");
    for h in msg.headers() {
        out.put(h.raw_name);
        out.put(b":");
        out.put(h.separator);
        shape(h.value, out);
        out.put(b"\n");
    }
    if msg.headers_overflow() > 0 {
        out.put(b"...\n");
    }
    out.put(if msg.headers_complete() {
        b"=\n"
    } else {
        b"!\n"
    });
    if let Some(body) = msg.body() {
        for line in body.split(|&b| b == b'\n').take(BODY_LINES) {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.len() >= 2 && line[1] == b'=' {
                out.put(&line[..2]);
                shape(&line[2..], out);
            } else {
                shape(line, out);
            }
            out.put(b"\n");
        }
    }
}

pub fn template_hash(msg: &SipMessage<'_>) -> TemplateHash {
    let mut fnv = Fnv(0xcbf2_9ce4_8422_2325);
    walk(msg, &mut fnv);
    TemplateHash(fnv.0)
}

/// The template as text (for operators looking at an unknown cluster); allocates.
pub fn template_text(msg: &SipMessage<'_>) -> Vec<u8> {
    let mut text = Text(Vec::with_capacity(256));
    walk(msg, &mut text);
    text.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zmap_like(rand_alpha: &str, digits: &str, ip: &str) -> Vec<u8> {
        format!(
            "OPTIONS sip:{rand_alpha}@{ip} SIP/2.0\nVia: SIP/2.0/UDP 198.51.100.7:40000;branch=abcdef.{digits};rport;alias\nUser-Agent: {rand_alpha}\nContent-Length: 0\n\n"
        )
        .into_bytes()
    }

    #[test]
    fn random_parts_do_not_change_the_hash() {
        let a = zmap_like("qwertyui", "0123456789", "192.0.2.1");
        let b = zmap_like("asdfghjk", "9876543210", "203.0.113.77");
        let ha = template_hash(&SipMessage::parse(&a));
        let hb = template_hash(&SipMessage::parse(&b));
        assert_eq!(ha, hb);
        assert_eq!(ha.hex().len(), 16);
    }

    #[test]
    fn structure_changes_the_hash() {
        let base = b"OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\nTo: y\r\n\r\n";
        let reordered = b"OPTIONS sip:a@b SIP/2.0\r\nTo: y\r\nVia: x\r\n\r\n";
        let spaced = b"OPTIONS sip:a@b SIP/2.0\r\nVia:  x\r\nTo: y\r\n\r\n";
        let lf = b"OPTIONS sip:a@b SIP/2.0\nVia: x\nTo: y\n\n";
        let h = |p: &[u8]| template_hash(&SipMessage::parse(p));
        assert_ne!(h(base), h(reordered));
        assert_ne!(h(base), h(spaced));
        assert_ne!(h(base), h(lf));
    }

    #[test]
    fn keyword_list_is_the_match() {
        for k in KEYWORDS {
            assert!(is_keyword(k), "{}", String::from_utf8_lossy(k));
        }
    }

    #[test]
    fn shapes() {
        let msg = SipMessage::parse(
            b"OPTIONS sip:100@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4:5060;branch=z9hG4bK-123;rport\r\nCall-ID: 4f3a9c\r\n\r\n",
        );
        let text = String::from_utf8(template_text(&msg)).unwrap();
        assert!(text.contains("OPTIONS sip:9@9.9.9.9 SIP/2.0"), "{text}");
        assert!(
            text.contains("Via: SIP/9.9/UDP 9.9.9.9:9;branch=z9hG4bK-9;rport"),
            "{text}"
        );
        assert!(text.contains("Call-ID: x"), "{text}");
    }
}
