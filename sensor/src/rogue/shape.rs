//! A deliberately minimal "is this SIP?" check, for rogue detection only.
//!
//! It looks at the first line and nothing else: a response starts with `SIP/2.0 ` and a 3-digit
//! status code; a request line is `METHOD SP Request-URI SP SIP/2.0`. The full parser lives in
//! [`crate::sip`]; this module keeps rogue detection independent of it, and answers the one
//! question the five signs need: did the peer speak SIP at all, and with which status code.

/// What the first bytes of a message look like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape<'a> {
    /// `SIP/2.0 NNN reason`: a status line with its code and (raw, unescaped) reason phrase.
    Response { code: u16, reason: &'a [u8] },
    /// `METHOD uri SIP/2.0`.
    Request { method: &'a [u8] },
    /// Only CR and LF: a SIP keepalive (RFC 5626 double CRLF) or stray line ends.
    Keepalive,
    /// Nothing at all.
    Empty,
    /// Too few bytes to tell yet, but a prefix of something SIP could start with.
    Partial,
    /// Bytes that are not SIP.
    NotSip,
}

impl Shape<'_> {
    /// A status line or a request line.
    pub fn is_sip(&self) -> bool {
        matches!(self, Shape::Response { .. } | Shape::Request { .. })
    }
}

const VERSION: &[u8] = b"SIP/2.0";
/// Longest first line examined; SIP lines are short, and a bound keeps the check cheap.
const MAX_LINE: usize = 2048;

/// Classifies the first line of `bytes`. Leading CR/LF (keepalives before a message) are skipped.
pub fn classify(bytes: &[u8]) -> Shape<'_> {
    if bytes.is_empty() {
        return Shape::Empty;
    }
    let start = bytes
        .iter()
        .position(|b| *b != b'\r' && *b != b'\n')
        .unwrap_or(bytes.len());
    let rest = &bytes[start..];
    if rest.is_empty() {
        return Shape::Keepalive;
    }
    let window = &rest[..rest.len().min(MAX_LINE)];
    let Some(end) = window.iter().position(|b| *b == b'\r' || *b == b'\n') else {
        // No line end yet: is what we have a prefix of a possible SIP line?
        return if could_start_sip(window) && window.len() < MAX_LINE {
            Shape::Partial
        } else {
            Shape::NotSip
        };
    };
    let line = &window[..end];
    if let Some(after) = line.strip_prefix(VERSION) {
        return status_line(after).unwrap_or(Shape::NotSip);
    }
    request_line(line).unwrap_or(Shape::NotSip)
}

/// `SP NNN [SP reason]` after the version.
fn status_line(after: &[u8]) -> Option<Shape<'_>> {
    let after = after.strip_prefix(b" ")?;
    let digits = after.get(..3)?;
    if !digits.iter().all(u8::is_ascii_digit) || !(b'1'..=b'6').contains(&digits[0]) {
        return None;
    }
    let code = digits
        .iter()
        .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
    let reason = match after.get(3..) {
        None | Some([]) => &[][..],
        Some([b' ', reason @ ..]) => reason,
        Some(_) => return None,
    };
    Some(Shape::Response { code, reason })
}

/// `METHOD SP uri SP SIP/2.0`, METHOD an RFC 3261 token of upper-case letters, URI with a scheme.
fn request_line(line: &[u8]) -> Option<Shape<'_>> {
    let mut parts = line.split(|b| *b == b' ');
    let method = parts.next()?;
    let uri = parts.next()?;
    let version = parts.next()?;
    if parts.next().is_some() || version != VERSION {
        return None;
    }
    let method_ok = !method.is_empty()
        && method.len() <= 32
        && method.iter().all(|b| b.is_ascii_uppercase() || *b == b'-');
    let uri_ok = !uri.is_empty() && uri.contains(&b':');
    (method_ok && uri_ok).then_some(Shape::Request { method })
}

fn could_start_sip(prefix: &[u8]) -> bool {
    let n = prefix.len().min(VERSION.len());
    prefix[..n] == VERSION[..n] || prefix.iter().all(|b| b.is_ascii_uppercase())
}

/// The value of the first header called `name` (case-insensitive; compact forms are the
/// caller's business), trimmed; `None` if absent. Only the header block is searched.
pub fn header<'a>(message: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let head_end = find(message, b"\r\n\r\n").unwrap_or(message.len());
    message[..head_end]
        .split(|b| *b == b'\n')
        .skip(1)
        .find_map(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let colon = line.iter().position(|b| *b == b':')?;
            let (key, value) = line.split_at(colon);
            key.trim_ascii()
                .eq_ignore_ascii_case(name.as_bytes())
                .then(|| value[1..].trim_ascii())
        })
}

/// Position of `needle` in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses() {
        assert_eq!(
            classify(b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n"),
            Shape::Response {
                code: 200,
                reason: b"OK"
            }
        );
        assert_eq!(
            classify(b"\r\n\r\nSIP/2.0 404 Not Found\r\n"),
            Shape::Response {
                code: 404,
                reason: b"Not Found"
            }
        );
        assert_eq!(
            classify(b"SIP/2.0 100\r\n"),
            Shape::Response {
                code: 100,
                reason: b""
            }
        );
        assert_eq!(classify(b"SIP/2.0 20 OK\r\n"), Shape::NotSip);
        assert_eq!(classify(b"SIP/2.0 999 Odd\r\n"), Shape::NotSip);
        assert_eq!(classify(b"SIP/2.0 2000 OK\r\n"), Shape::NotSip);
        assert_eq!(classify(b"SIP/2.0 200OK\r\n"), Shape::NotSip);
        assert_eq!(classify(b"SIP/2.0 2"), Shape::Partial);
    }

    #[test]
    fn requests() {
        assert_eq!(
            classify(b"OPTIONS sip:100@203.0.113.1 SIP/2.0\r\n"),
            Shape::Request { method: b"OPTIONS" }
        );
        assert_eq!(classify(b"options sip:x SIP/2.0\r\n"), Shape::NotSip);
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Shape::NotSip);
        assert_eq!(classify(b"INVITE sip:x SIP/2.0 extra\r\n"), Shape::NotSip);
        assert_eq!(classify(b"INVITE nouri SIP/2.0\r\n"), Shape::NotSip);
        assert_eq!(classify(b"INVI"), Shape::Partial);
    }

    #[test]
    fn garbage_keepalives_and_empty() {
        assert_eq!(classify(b"HTTP/1.0 400 Bad Request\r\n\r\n"), Shape::NotSip);
        assert_eq!(classify(b"\x1b[31mgarbage\r\n"), Shape::NotSip);
        assert_eq!(classify(b"\x00\x01\x02"), Shape::NotSip);
        assert_eq!(classify(b"\r\n\r\n"), Shape::Keepalive);
        assert_eq!(classify(b""), Shape::Empty);
        assert_eq!(classify(&[b'A'; 4096]), Shape::NotSip);
        assert!(!Shape::Keepalive.is_sip());
    }

    #[test]
    fn headers() {
        let msg = b"SIP/2.0 200 OK\r\nCall-ID: abc@x\r\nserver:  kamailio \r\n\r\nBody: no\r\n";
        assert_eq!(header(msg, "call-id"), Some(&b"abc@x"[..]));
        assert_eq!(header(msg, "Server"), Some(&b"kamailio"[..]));
        assert_eq!(header(msg, "Body"), None);
        assert_eq!(header(b"", "Via"), None);
    }
}
