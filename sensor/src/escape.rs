//! Escaping of attacker-written bytes before they reach an output or a terminal.
//!
//! Printable ASCII stays as it is (backslash doubled); CR, LF and TAB become `\r`, `\n`, `\t`;
//! every other byte, control characters, ESC, DEL and all non-ASCII included, becomes `\xNN`. The
//! result is pure printable ASCII, so no terminal escape sequence can survive it, and it is
//! lossless: [`unescape_bytes`] gives the original bytes back.

use std::fmt::Write as _;

/// Escapes `bytes` into `out`.
pub fn escape_bytes_into(bytes: &[u8], out: &mut String) {
    out.reserve(bytes.len());
    let mut rest = bytes;
    while !rest.is_empty() {
        // Runs of printable ASCII (most of a SIP message) are copied whole.
        let plain = plain_prefix(rest);
        // SAFETY: every byte of the run is printable ASCII (0x20 to 0x7e), which is UTF-8.
        out.push_str(unsafe { std::str::from_utf8_unchecked(&rest[..plain]) });
        let Some((&b, tail)) = rest[plain..].split_first() else {
            break;
        };
        match b {
            b'\\' => out.push_str("\\\\"),
            b'\r' => out.push_str("\\r"),
            b'\n' => out.push_str("\\n"),
            b'\t' => out.push_str("\\t"),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
        rest = tail;
    }
}

/// Whether `b` is written as it is: printable ASCII but the backslash.
#[cfg(any(test, not(target_arch = "x86_64")))]
fn is_plain(b: u8) -> bool {
    (0x20..=0x7e).contains(&b) && b != b'\\'
}

/// How many of the first bytes of `bytes` are plain ([`is_plain`]). Sixteen at a time on x86-64
/// (SSE2 is part of its baseline): every event escapes its User-Agent and its Via and Contact
/// hosts, which took 555 instructions per lean event a byte at a time (callgrind).
fn plain_prefix(bytes: &[u8]) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{
            __m128i, _mm_andnot_si128, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8,
            _mm_set1_epi8,
        };

        use crate::simd::in_range;
        // Bit i: byte i of the block is plain.
        let plain_bits = |v: __m128i| {
            // SAFETY: register-only SSE2 operations, always available on x86-64.
            unsafe {
                let printable = in_range(v, 0x20, 0x7e);
                let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
                _mm_movemask_epi8(_mm_andnot_si128(backslash, printable)) as u32
            }
        };
        let mut at = 0;
        while at + 16 <= bytes.len() {
            // SAFETY: bytes[at..at + 16] is in bounds.
            let v = unsafe { _mm_loadu_si128(bytes.as_ptr().add(at).cast::<__m128i>()) };
            let plain = plain_bits(v);
            if plain != 0xffff {
                return at + (!plain).trailing_zeros() as usize;
            }
            at += 16;
        }
        // The last few bytes (most hosts and names are shorter than a block), padded with
        // spaces, which are plain.
        let tail = &bytes[at..];
        let mut block = [b' '; 16];
        block[..tail.len()].copy_from_slice(tail);
        // SAFETY: `block` is 16 bytes.
        let plain = plain_bits(unsafe { _mm_loadu_si128(block.as_ptr().cast::<__m128i>()) });
        at + ((!plain).trailing_zeros() as usize).min(tail.len())
    }
    #[cfg(not(target_arch = "x86_64"))]
    bytes
        .iter()
        .position(|&b| !is_plain(b))
        .unwrap_or(bytes.len())
}

pub fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 16);
    escape_bytes_into(bytes, &mut out);
    out
}

/// Escapes and bounds: at most `max` input bytes, with `...[+N]` appended when cut.
pub fn escape_bounded(bytes: &[u8], max: usize) -> String {
    let mut out = String::with_capacity(bytes.len().min(max) + 16);
    escape_bounded_into(bytes, max, &mut out);
    out
}

/// [`escape_bounded`], appended to `out`.
pub fn escape_bounded_into(bytes: &[u8], max: usize, out: &mut String) {
    escape_bytes_into(&bytes[..bytes.len().min(max)], out);
    if bytes.len() > max {
        let _ = write!(out, "...[+{}]", bytes.len() - max);
    }
}

/// Text for a terminal table, from strings that are usually escaped already (the sensor's own
/// documents) but may come from anywhere (an NDJSON file, a Kafka topic): printable ASCII stays
/// as it is, backslashes included, so already-escaped text reads unchanged; every other byte
/// becomes `\xNN` as in [`escape_bytes`]. At most `max` input bytes, then `...[+N]`. Not
/// lossless (a literal `\x1b` and an escaped ESC read the same); for display only.
pub fn terminal_safe(text: &str, max: usize) -> String {
    let bytes = text.as_bytes();
    let kept = &bytes[..bytes.len().min(max)];
    let mut out = String::with_capacity(kept.len() + 8);
    for &b in kept {
        if (0x20..=0x7e).contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    if bytes.len() > max {
        let _ = write!(out, "...[+{}]", bytes.len() - max);
    }
    out
}

/// Inverse of [`escape_bytes`]; `None` if `s` is not something it produced.
pub fn unescape_bytes(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        match bytes.get(i + 1)? {
            b'\\' => out.push(b'\\'),
            b'r' => out.push(b'\r'),
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'x' => {
                let hex = s.get(i + 2..i + 4)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            _ => return None,
        }
        i += 2;
    }
    Some(out)
}

/// A string in an output document that could reach a terminal as more than text, or is longer
/// than any field the sensor writes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UnsafeText {
    #[error("{path}: byte {byte:#04x} at {at} is not printable ASCII")]
    NotPrintable { path: String, byte: u8, at: usize },
    #[error("{path}: {len} bytes, more than the bound of {max}")]
    TooLong {
        path: String,
        len: usize,
        max: usize,
    },
}

/// Checks that every string in `doc` (object keys included) is printable ASCII and at most
/// `max_len` bytes: what every document the sensor writes must satisfy, whatever it was fed. Used
/// by the fuzz targets and the hostile-input tests.
pub fn check_document(doc: &serde_json::Value, max_len: usize) -> Result<(), UnsafeText> {
    fn text(path: &str, s: &str, max_len: usize) -> Result<(), UnsafeText> {
        if let Some((at, byte)) = s
            .bytes()
            .enumerate()
            .find(|(_, b)| !(0x20..0x7f).contains(b))
        {
            return Err(UnsafeText::NotPrintable {
                path: path.to_string(),
                byte,
                at,
            });
        }
        if s.len() > max_len {
            return Err(UnsafeText::TooLong {
                path: path.to_string(),
                len: s.len(),
                max: max_len,
            });
        }
        Ok(())
    }
    fn walk(path: &mut String, v: &serde_json::Value, max_len: usize) -> Result<(), UnsafeText> {
        match v {
            serde_json::Value::String(s) => text(path, s, max_len),
            serde_json::Value::Array(items) => {
                let len = path.len();
                for (i, item) in items.iter().enumerate() {
                    let _ = write!(path, "[{i}]");
                    walk(path, item, max_len)?;
                    path.truncate(len);
                }
                Ok(())
            }
            serde_json::Value::Object(map) => {
                let len = path.len();
                for (key, item) in map {
                    text(path, key, max_len)?;
                    path.push('.');
                    path.push_str(key);
                    walk(path, item, max_len)?;
                    path.truncate(len);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
    walk(&mut String::new(), doc, max_len)
}

pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_terminal_controls() {
        let hostile = b"User-Agent: \x1b[31mred\x1b]0;title\x07\x9b2J\xc2\x9b\x7f\\\r\n";
        let escaped = escape_bytes(hostile);
        assert_eq!(
            escaped,
            "User-Agent: \\x1b[31mred\\x1b]0;title\\x07\\x9b2J\\xc2\\x9b\\x7f\\\\\\r\\n"
        );
        assert!(escaped.bytes().all(|b| (0x20..0x7f).contains(&b)));
        assert_eq!(unescape_bytes(&escaped).unwrap(), hostile);
    }

    #[test]
    fn plain_prefix_is_the_byte_loop() {
        // Around one and two blocks, with every kind of byte that ends a run.
        let alphabet = [b'a', b' ', b'~', b'\\', 0x7f, 0x1f, 0x80, 0xff, 0, b'"'];
        let mut state = 7u64;
        for len in 0..40 {
            for _ in 0..200 {
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        // Mostly plain, so that long runs and whole blocks are met too.
                        alphabet[((state % 40) as usize).saturating_sub(30)]
                    })
                    .collect();
                let want = bytes.iter().position(|&b| !is_plain(b)).unwrap_or(len);
                assert_eq!(plain_prefix(&bytes), want, "{bytes:?}");
            }
        }
    }

    #[test]
    fn round_trips_every_byte() {
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(unescape_bytes(&escape_bytes(&all)).unwrap(), all);
    }

    #[test]
    fn bounds_length() {
        assert_eq!(escape_bounded(b"abcdef", 3), "abc...[+3]");
        assert_eq!(escape_bounded(b"abc", 3), "abc");
    }

    #[test]
    fn document_check_finds_raw_controls_and_long_strings() {
        let ok = serde_json::json!({"a": ["x", {"b": "\\x1b[31m"}], "n": 1});
        assert_eq!(check_document(&ok, 16), Ok(()));
        let raw = serde_json::json!({"a": [{"b": "red\u{1b}[31m"}]});
        assert_eq!(
            check_document(&raw, 16),
            Err(UnsafeText::NotPrintable {
                path: ".a[0].b".into(),
                byte: 0x1b,
                at: 3
            })
        );
        let long = serde_json::json!({"ua": "x".repeat(17)});
        assert!(matches!(
            check_document(&long, 16),
            Err(UnsafeText::TooLong { len: 17, .. })
        ));
        let non_ascii = serde_json::json!(["caf\u{e9}"]);
        assert!(check_document(&non_ascii, 16).is_err());
    }

    #[test]
    fn terminal_safe_keeps_escaped_text_and_escapes_the_rest() {
        assert_eq!(
            terminal_safe("friendly-scanner \\x1b", 64),
            "friendly-scanner \\x1b"
        );
        let hostile = "\u{1b}[2J\u{9b}31m\r\nx\u{7f}";
        let safe = terminal_safe(hostile, 64);
        assert_eq!(safe, "\\x1b[2J\\xc2\\x9b31m\\x0d\\x0ax\\x7f");
        assert!(safe.bytes().all(|b| (0x20..0x7f).contains(&b)));
        assert_eq!(terminal_safe("abcdef", 3), "abc...[+3]");
    }

    #[test]
    fn rejects_bad_escapes() {
        assert_eq!(unescape_bytes("\\q"), None);
        assert_eq!(unescape_bytes("\\x4"), None);
        assert_eq!(unescape_bytes("\\"), None);
    }
}
