//! The event document written straight into the output buffer: no intermediate strings, no
//! serializer, attacker bytes escaped on the way in.
//!
//! It writes what `json::EventDoc` with its `sip` and `fingerprint` objects serializes to, field
//! for field and in the same order, with one difference by default ([`EventDetail::Compact`]):
//! the rule prose every event repeated is left to the rule file and the documentation. Evidence
//! items name the rule, the field, the section and the observed value (not the test, note and
//! weight); inferences give their conclusions as codes and numbers (the tag's target and whether
//! it is the destination, the host class, the process count, the initial TTL, the IP-ID class
//! and the source's behaviour) without the sentences explaining them. `docs/event-schema.md`
//! lists both forms. [`EventDetail::Full`] writes the whole document as before (through
//! serde: it is the rarely used form).
//!
//! Tests compare the compact document with the full one minus those fields, on every corpus
//! record.

use std::{cell::Cell, io::Write as _, net::IpAddr};

use serde::Serialize;

use crate::{
    clock::civil_from_days,
    escape::hex,
    event::Event,
    fingerprint::{
        ClassCache, Engine, Verdict,
        engine::EVIDENCE_VALUE_MAX,
        engine::bit,
        facts::{Facts, Kind, Value},
        infer::{SvTag, SvTagKind, classify_host, infer_tag, infer_ttl, process_count},
        ipid::{IpIdBehaviour, PacketIpId, SourceView, classify_packet},
        rules::{Condition, Rule},
    },
    output::{
        fingerprint::round2,
        json::{ReactiveDoc, SCHEMA_VERSION, TcpDoc},
        sip::{FIELD_MAX, NAME_MAX, QUIRKS_MAX},
    },
    record::{MatchedOn, Transport, tcp_flags_string},
    sip::{
        HeaderName, SipMessage, StartLine,
        fields::{NameAddr, sdp_line},
        message::{header_flags, parse_u32},
    },
};

/// How much each `sip_probe` event carries (`--event-detail`, `[events] detail`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventDetail {
    /// What the aggregator and the report read, and the payload's length
    /// (`output::lean`); the first event of each template per window is compact.
    Lean,
    /// The parsed message, the escaped payload, the evidence as codes, values and rule
    /// references, the inferences as codes and numbers (the default).
    #[default]
    Compact,
    /// Also each condition's test, note and weight, and the inferences' explanations.
    Full,
}

/// What the engine concluded about one event, for writing it.
pub struct Analysis<'a, 'f> {
    pub engine: &'a Engine,
    pub cache: &'a ClassCache,
    pub verdict: &'a Verdict,
    pub facts: &'a Facts<'f>,
    pub source: Option<SourceView>,
}

/// How each byte of attacker text is written inside a JSON string: `escape::escape_bytes`
/// (printable ASCII, `\\`, `\r`, `\n`, `\t`, `\xNN`) then JSON's own escaping of `\` and `"`.
/// 0: as it is; 1: `\"`; 2: `\\\\`; 3: `\\r`, `\\n`, `\\t`; 4: `\\xNN`.
static TEXT_CLASS: [u8; 256] = {
    let mut t = [4u8; 256];
    let mut b = 0x20;
    while b < 0x7f {
        t[b] = 0;
        b += 1;
    }
    t[b'"' as usize] = 1;
    t[b'\\' as usize] = 2;
    t[b'\r' as usize] = 3;
    t[b'\n' as usize] = 3;
    t[b'\t' as usize] = 3;
    t
};

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Each byte as written inside a JSON string (see [`TEXT_CLASS`]): at most five bytes, padded
/// to eight so that one unaligned store writes any of them, with the length in the last byte.
static TEXT_ESCAPES: [[u8; 8]; 256] = {
    let mut t = [[0u8; 8]; 256];
    let mut b = 0;
    while b < 256 {
        let e = &mut t[b];
        match TEXT_CLASS[b] {
            0 => {
                e[0] = b as u8;
                e[7] = 1;
            }
            1 => {
                (e[0], e[1]) = (b'\\', b'"');
                e[7] = 2;
            }
            2 => {
                (e[0], e[1], e[2], e[3]) = (b'\\', b'\\', b'\\', b'\\');
                e[7] = 4;
            }
            3 => {
                (e[0], e[1]) = (b'\\', b'\\');
                e[2] = match b as u8 {
                    b'\r' => b'r',
                    b'\n' => b'n',
                    _ => b't',
                };
                e[7] = 3;
            }
            _ => {
                (e[0], e[1], e[2]) = (b'\\', b'\\', b'x');
                e[3] = HEX_DIGITS[b >> 4];
                e[4] = HEX_DIGITS[b & 15];
                e[7] = 5;
            }
        }
        b += 1;
    }
    t
};

/// The most bytes [`TEXT_ESCAPES`] writes for one input byte.
const MAX_ESCAPE: usize = 5;

/// Bit i: byte i of `v` is not written as it is (a control byte, DEL, a byte above 0x7f, `"`
/// or `\`). SSE2 is part of the x86-64 baseline.
#[cfg(target_arch = "x86_64")]
fn specials(v: std::arch::x86_64::__m128i) -> u32 {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_cmplt_epi8, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };
    // SAFETY: register-only SSE2 operations, always available on x86-64.
    unsafe {
        // Signed: bytes above 0x7f are negative, so "below 0x20" takes them too.
        let low = _mm_cmplt_epi8(v, _mm_set1_epi8(0x20));
        let del = _mm_cmpeq_epi8(v, _mm_set1_epi8(0x7f));
        let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
        let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
        _mm_movemask_epi8(_mm_or_si128(
            _mm_or_si128(low, del),
            _mm_or_si128(quote, backslash),
        )) as u32
    }
}

/// Up to sixteen bytes as one block, padded with spaces (a byte written as it is): most names and
/// values are shorter than sixteen, and one test of the block replaces a look-up per byte.
#[cfg(target_arch = "x86_64")]
fn short_block(bytes: &[u8]) -> std::arch::x86_64::__m128i {
    use std::arch::x86_64::{__m128i, _mm_loadu_si128};
    let mut block = [b' '; 16];
    let len = bytes.len().min(16);
    block[..len].copy_from_slice(&bytes[..len]);
    // SAFETY: `block` is 16 bytes.
    unsafe { _mm_loadu_si128(block.as_ptr().cast::<__m128i>()) }
}

/// The first byte at or after `from` that is not written as it is, or `bytes.len()`. Sixteen
/// bytes at a time: SIP text has a line end every few dozen bytes and nothing else to escape.
#[cfg(target_arch = "x86_64")]
fn next_special(bytes: &[u8], from: usize) -> usize {
    use std::arch::x86_64::{__m128i, _mm_loadu_si128};
    let len = bytes.len();
    let mut at = from;
    while at + 16 <= len {
        // SAFETY: bytes[at..at + 16] is in bounds.
        let mask = specials(unsafe { _mm_loadu_si128(bytes.as_ptr().add(at).cast::<__m128i>()) });
        if mask != 0 {
            return at + mask.trailing_zeros() as usize;
        }
        at += 16;
    }
    // The last few bytes.
    let tail = bytes.get(at..).unwrap_or_default();
    if tail.is_empty() {
        return len;
    }
    let mask = specials(short_block(tail));
    if mask != 0 {
        at + mask.trailing_zeros() as usize
    } else {
        len
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn next_special(bytes: &[u8], from: usize) -> usize {
    from + bytes[from..]
        .iter()
        .position(|&b| TEXT_CLASS[usize::from(b)] != 0)
        .unwrap_or(bytes.len() - from)
}

/// Attacker bytes, escaped, without the quotes.
///
/// The hot loop of every event: runs of plain text are stored sixteen bytes at a time (the
/// whole block is stored, then the output advances only past the plain bytes), and each byte
/// to escape is one table store. No call per run, no capacity check per byte.
fn text_body(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = bytes.len();
    // The output is at most MAX_ESCAPE bytes per input byte, and a store writes at most 16 bytes
    // from the current end: both stay inside this reservation (see the invariant below).
    out.reserve(len * MAX_ESCAPE + 16);
    let src = bytes.as_ptr();
    let mut i = 0;
    let mut w = 0;
    // SAFETY: invariant `w <= MAX_ESCAPE * i` (`i + j` in the tail). Every store starts at
    // `base + w` and writes 16 (a block, only while bytes are left) or 8 (an escape, only while
    // bytes are left) bytes, so it ends before `base + MAX_ESCAPE * len + 16`, inside the
    // reserved spare capacity. Reads are from
    // bytes[i..i + 16] or bytes[i], in bounds by the loop conditions. `set_len` covers exactly
    // the `w` bytes written, all initialised.
    unsafe {
        let base = out.as_mut_ptr().add(out.len());
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_storeu_si128};
            while i + 16 <= len {
                let v = _mm_loadu_si128(src.add(i).cast::<__m128i>());
                _mm_storeu_si128(base.add(w).cast::<__m128i>(), v);
                let mask = specials(v);
                if mask == 0 {
                    i += 16;
                    w += 16;
                    continue;
                }
                let plain = mask.trailing_zeros() as usize;
                i += plain;
                w += plain;
                w += put_escaped(base.add(w), *src.add(i));
                i += 1;
            }
            // The last bytes (most of the short fields), through the same block step: copied
            // into a buffer padded with plain bytes, so that a block read from any of them
            // stays inside it and the padding never reads as a byte to escape.
            let rest = len - i;
            if rest > 0 {
                let mut tail = [b'x'; 32];
                tail[..rest].copy_from_slice(&bytes[i..]);
                let mut j = 0;
                while j < rest {
                    // j < 16, so tail[j..j + 16] is inside the buffer.
                    let v = _mm_loadu_si128(tail.as_ptr().add(j).cast::<__m128i>());
                    _mm_storeu_si128(base.add(w).cast::<__m128i>(), v);
                    // No bit set (32 zeros) or one past the tail: the rest is plain.
                    let plain = (specials(v).trailing_zeros() as usize).min(rest - j);
                    j += plain;
                    w += plain;
                    if j < rest {
                        w += put_escaped(base.add(w), tail[j]);
                        j += 1;
                    }
                }
                i = len;
            }
        }
        while i < len {
            w += put_escaped(base.add(w), *src.add(i));
            i += 1;
        }
        out.set_len(out.len() + w);
    }
}

/// Writes byte `b` as [`TEXT_ESCAPES`] says; returns how many of the 8 bytes stored count.
///
/// SAFETY: `dst` must be valid for 8 bytes of writes.
#[inline(always)]
unsafe fn put_escaped(dst: *mut u8, b: u8) -> usize {
    let e = TEXT_ESCAPES[usize::from(b)];
    // SAFETY: the caller's contract.
    unsafe { dst.cast::<[u8; 8]>().write_unaligned(e) };
    usize::from(e[7])
}

/// Attacker bytes as a JSON string: `escape::escape_bounded(bytes, max)`, serialized.
fn text(out: &mut Vec<u8>, bytes: &[u8], max: usize) {
    out.push(b'"');
    if bytes.len() <= max {
        text_body(out, bytes);
    } else {
        text_body(out, &bytes[..max]);
        let _ = write!(out, "...[+{}]", bytes.len() - max);
    }
    out.push(b'"');
}

/// A string that is already printable ASCII (rule text, names, codes): only `"` and `\` need
/// JSON's escaping. Inlined: an event writes about ten such strings, and the short path is
/// cheaper than a call that saves the registers the long path needs.
#[inline(always)]
pub(super) fn ascii(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    #[cfg(target_arch = "x86_64")]
    if bytes.len() <= 32 && quoted_short(out, bytes) {
        return;
    }
    ascii_escaped(out, bytes);
}

/// [`ascii`] for a string that needs escaping or is long.
#[inline(never)]
fn ascii_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    let mut start = 0;
    loop {
        let i = next_special(bytes, start);
        out.extend_from_slice(&bytes[start..i]);
        let Some(&b) = bytes.get(i) else {
            break;
        };
        start = i + 1;
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b if b < 0x20 => {
                let _ = write!(out, "\\u{:04x}", b);
            }
            // DEL and non-ASCII: JSON takes them as they are (serde writes UTF-8 text so).
            b => out.push(b),
        }
    }
    out.push(b'"');
}

/// Writes `bytes` (at most 32) between quotes if none needs JSON's escaping; false, with nothing
/// written, if one does. Most strings of an event are names and short values: each is read as
/// two overlapping loads and stored as two overlapping stores, tested at once, with no copy
/// call and no loop.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn quoted_short(out: &mut Vec<u8>, bytes: &[u8]) -> bool {
    use std::{
        arch::x86_64::{__m128i, _mm_loadu_si128, _mm_set_epi32, _mm_set_epi64x, _mm_storeu_si128},
        ptr::{read_unaligned, write_unaligned},
    };
    // Four spaces: padding that is written as it is.
    const SPACES: i32 = 0x2020_2020;
    let len = bytes.len();
    // The stores below rely on it (the caller's test makes it free).
    assert!(len <= 32);
    out.reserve(34);
    // SAFETY: every load reads `bytes[0..k]` and `bytes[len - k..len]` with `k <= len` (or
    // single bytes below `len`), so in bounds. 34 bytes are reserved past the end of `out`:
    // the quotes at 0 and 1 + len <= 33, and every store lies within 1..1 + len. `set_len`
    // covers the 2 + len bytes written, all of them initialised: the two stores of a pair
    // overlap or meet, so together they cover 1..1 + len.
    unsafe {
        let src = bytes.as_ptr();
        let end = out.as_mut_ptr().add(out.len());
        if len >= 16 {
            let lo = _mm_loadu_si128(src.cast::<__m128i>());
            let hi = _mm_loadu_si128(src.add(len - 16).cast::<__m128i>());
            if specials(lo) | specials(hi) != 0 {
                return false;
            }
            _mm_storeu_si128(end.add(1).cast::<__m128i>(), lo);
            _mm_storeu_si128(end.add(1 + len - 16).cast::<__m128i>(), hi);
        } else if len >= 8 {
            let lo = read_unaligned(src.cast::<i64>());
            let hi = read_unaligned(src.add(len - 8).cast::<i64>());
            if specials(_mm_set_epi64x(hi, lo)) != 0 {
                return false;
            }
            write_unaligned(end.add(1).cast::<i64>(), lo);
            write_unaligned(end.add(1 + len - 8).cast::<i64>(), hi);
        } else if len >= 4 {
            let lo = read_unaligned(src.cast::<i32>());
            let hi = read_unaligned(src.add(len - 4).cast::<i32>());
            if specials(_mm_set_epi32(SPACES, SPACES, hi, lo)) != 0 {
                return false;
            }
            write_unaligned(end.add(1).cast::<i32>(), lo);
            write_unaligned(end.add(1 + len - 4).cast::<i32>(), hi);
        } else if len > 0 {
            // One to three bytes: the first, the middle and the last cover them all.
            let (a, b, c) = (*src, *src.add(len / 2), *src.add(len - 1));
            let word = i32::from_le_bytes([a, b, c, b' ']);
            if specials(_mm_set_epi32(SPACES, SPACES, SPACES, word)) != 0 {
                return false;
            }
            *end.add(1) = a;
            *end.add(1 + len / 2) = b;
            *end.add(len) = c;
        }
        *end = b'"';
        *end.add(1 + len) = b'"';
        out.set_len(out.len() + len + 2);
    }
    true
}

/// `"name":` (an object's first field): a constant, so the copy compiles to a few stores.
macro_rules! key {
    ($out:expr, $name:literal) => {
        $out.extend_from_slice(concat!("\"", $name, "\":").as_bytes())
    };
}

/// `,"name":` (every field but an object's first).
macro_rules! next {
    ($out:expr, $name:literal) => {
        $out.extend_from_slice(concat!(",\"", $name, "\":").as_bytes())
    };
}

fn key(out: &mut Vec<u8>, name: &str) {
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

/// `,"name":` (every field but an object's first).
fn next(out: &mut Vec<u8>, name: &str) {
    out.push(b',');
    key(out, name);
}

/// Appends `bytes` (at most 32) as two overlapping loads and stores: the numbers, addresses,
/// hashes and times of an event are short and of varying length, and a copy of a varying
/// length is a call to `memcpy`.
#[inline(always)]
fn put_short(out: &mut Vec<u8>, bytes: &[u8]) {
    use std::ptr::{read_unaligned, write_unaligned};
    let len = bytes.len();
    assert!(len <= 32);
    out.reserve(32);
    // SAFETY: every load reads `bytes[0..k]` and `bytes[len - k..len]` with `k <= len` (or
    // single bytes below `len`), so in bounds; every store lies within the `len <= 32` bytes
    // reserved past the end of `out`, and the two stores of a pair overlap or meet, so
    // `set_len` covers initialised bytes only.
    unsafe {
        let (src, dst) = (bytes.as_ptr(), out.as_mut_ptr().add(out.len()));
        if len >= 16 {
            let (lo, hi) = (
                read_unaligned(src.cast::<u128>()),
                read_unaligned(src.add(len - 16).cast::<u128>()),
            );
            write_unaligned(dst.cast::<u128>(), lo);
            write_unaligned(dst.add(len - 16).cast::<u128>(), hi);
        } else if len >= 8 {
            let (lo, hi) = (
                read_unaligned(src.cast::<u64>()),
                read_unaligned(src.add(len - 8).cast::<u64>()),
            );
            write_unaligned(dst.cast::<u64>(), lo);
            write_unaligned(dst.add(len - 8).cast::<u64>(), hi);
        } else if len >= 4 {
            let (lo, hi) = (
                read_unaligned(src.cast::<u32>()),
                read_unaligned(src.add(len - 4).cast::<u32>()),
            );
            write_unaligned(dst.cast::<u32>(), lo);
            write_unaligned(dst.add(len - 4).cast::<u32>(), hi);
        } else if len > 0 {
            // One to three bytes: the first, the middle and the last cover them all.
            *dst = *src;
            *dst.add(len / 2) = *src.add(len / 2);
            *dst.add(len - 1) = *src.add(len - 1);
        }
        out.set_len(out.len() + len);
    }
}

#[inline(always)]
pub(super) fn uint(out: &mut Vec<u8>, n: u64) {
    put_short(out, itoa::Buffer::new().format(n).as_bytes());
}

pub(super) fn boolean(out: &mut Vec<u8>, b: bool) {
    out.extend_from_slice(if b { b"true" } else { b"false" });
}

pub(super) fn float(out: &mut Vec<u8>, x: f64) {
    // serde_json's own formatting, so that both forms print a confidence alike.
    let _ = serde_json::to_writer(&mut *out, &x);
}

/// Each octet in decimal: up to three digits, then the digit count in the last byte.
static OCTET_TEXT: [[u8; 4]; 256] = {
    let mut t = [[0u8; 4]; 256];
    let mut o = 0;
    while o < 256 {
        let e = &mut t[o];
        let d = [(o / 100) as u8, (o / 10 % 10) as u8, (o % 10) as u8];
        let first = if o >= 100 {
            0
        } else if o >= 10 {
            1
        } else {
            2
        };
        let mut k = 0;
        while first + k < 3 {
            e[k] = b'0' + d[first + k];
            k += 1;
        }
        e[3] = k as u8;
        o += 1;
    }
    t
};

pub(super) fn ip(out: &mut Vec<u8>, addr: IpAddr) {
    match addr {
        IpAddr::V4(v4) => {
            // Each octet's digits from a table, stored four bytes at a time into a buffer that
            // is stored at once: two addresses per event, and a formatter costs more than the
            // address.
            let mut text = [0u8; 24];
            text[0] = b'"';
            let mut n = 1;
            for (i, o) in v4.octets().into_iter().enumerate() {
                let digits = OCTET_TEXT[usize::from(o)];
                // The quote and at most three octets of four bytes each precede: n <= 13, and
                // the four bytes stored end inside the buffer.
                text[n..n + 4].copy_from_slice(&digits);
                n += usize::from(digits[3]);
                text[n] = if i < 3 { b'.' } else { b'"' };
                n += 1;
            }
            put_short(out, &text[..n]);
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "\"{v6}\"");
        }
    }
}

/// A template hash as a JSON string of 16 lower-case hex digits (`TemplateHash::hex`, written
/// in place).
pub(super) fn template_hash(out: &mut Vec<u8>, hash: u64) {
    let mut text = [b'"'; 18];
    for (i, digit) in text[1..17].iter_mut().enumerate() {
        *digit = HEX_DIGITS[(hash >> ((15 - i) * 4)) as usize & 15];
    }
    put_short(out, &text);
}

/// `clock::rfc3339_micros`, written in place.
pub(super) fn timestamp(out: &mut Vec<u8>, epoch_ns: u64) {
    let secs = epoch_ns / 1_000_000_000;
    let micros = (epoch_ns % 1_000_000_000) / 1_000;
    let Some(second) = second_text(secs) else {
        // Beyond the year 9999: the general formatter (no packet's clock says so).
        out.push(b'"');
        out.extend_from_slice(crate::clock::rfc3339_micros(epoch_ns).as_bytes());
        out.push(b'"');
        return;
    };
    // "YYYY-MM-DDTHH:MM:SS.uuuuuuZ"
    let mut text = *b"\"0000-00-00T00:00:00.000000Z\"";
    text[1..20].copy_from_slice(&second);
    for (i, digit) in text[21..27].iter_mut().enumerate() {
        *digit = b'0' + (micros / 10u64.pow(5 - i as u32) % 10) as u8;
    }
    put_short(out, &text);
}

thread_local! {
    /// The second last written and its text: events come in time order, so most share their
    /// second with the one before, and its date need not be worked out again.
    static LAST_SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
}

/// `YYYY-MM-DDTHH:MM:SS` of `secs` since the epoch, for years 0 to 9999 (`None` beyond).
fn second_text(secs: u64) -> Option<[u8; 19]> {
    let (last, text) = LAST_SECOND.get();
    if last == secs {
        return Some(text);
    }
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    if !(0..10_000).contains(&y) {
        return None;
    }
    let rem = secs % 86_400;
    let mut text = *b"0000-00-00T00:00:00";
    let mut put = |at: usize, n: u64| {
        text[at] = b'0' + (n / 10 % 10) as u8;
        text[at + 1] = b'0' + (n % 10) as u8;
    };
    put(0, y as u64 / 100);
    put(2, y as u64 % 100);
    put(5, u64::from(m));
    put(8, u64::from(d));
    put(11, rem / 3600);
    put(14, (rem / 60) % 60);
    put(17, rem % 60);
    LAST_SECOND.set((secs, text));
    Some(text)
}

fn serialized(out: &mut Vec<u8>, value: &impl Serialize) {
    let _ = serde_json::to_writer(&mut *out, value);
}

/// One event, as one line (without the line end).
pub fn write_event(
    out: &mut Vec<u8>,
    event: &Event<'_>,
    msg: &SipMessage<'_>,
    analysis: &Analysis<'_, '_>,
    syn: Option<&crate::session::SynFields>,
) {
    let r = event.record;
    let raw = r.raw();
    let v4 = r.ip_version() == 4;
    out.push(b'{');
    key!(out, "timestamp");
    timestamp(out, event.wall_ns);
    out.extend_from_slice(b",\"event_type\":\"sip_probe\"");
    next!(out, "schema_version");
    uint(out, u64::from(SCHEMA_VERSION));
    next!(out, "src_ip");
    ip(out, r.src_ip());
    next!(out, "src_port");
    uint(out, u64::from(r.src_port()));
    next!(out, "dest_ip");
    ip(out, r.dst_ip());
    next!(out, "dest_port");
    uint(out, u64::from(r.dst_port()));
    next!(out, "proto");
    ascii(out, r.transport().as_str());
    next!(out, "ifindex");
    uint(out, u64::from(r.ifindex()));
    next!(out, "rx_queue");
    uint(out, u64::from(r.rx_queue()));
    if !r.vlan_ids().is_empty() {
        next!(out, "vlan");
        out.push(b'[');
        for (i, v) in r.vlan_ids().iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            uint(out, u64::from(*v));
        }
        out.push(b']');
    }
    next!(out, "matched_on");
    ascii(
        out,
        match r.matched_on() {
            MatchedOn::Destination => "dest",
            MatchedOn::Source => "src",
        },
    );
    next!(out, "frame_len");
    uint(out, u64::from(raw.frame_len));
    next!(out, "ip");
    out.push(b'{');
    key!(out, "version");
    uint(out, u64::from(r.ip_version()));
    next!(out, "ttl");
    uint(out, u64::from(r.ttl()));
    if v4 {
        next!(out, "id");
        uint(out, u64::from(raw.ip_id));
    } else {
        next!(out, "flow_label");
        uint(out, u64::from(raw.flow_label));
    }
    next!(out, "df");
    boolean(out, r.dont_fragment());
    next!(out, "mf");
    boolean(out, r.more_fragments());
    if r.reserved_bit() {
        out.extend_from_slice(b",\"reserved_bit\":true");
    }
    next!(out, "frag_offset");
    uint(out, u64::from(raw.frag_offset));
    next!(out, "tos");
    uint(out, u64::from(raw.tos));
    next!(out, "total_len");
    uint(out, u64::from(raw.ip_total_len));
    out.push(b'}');
    if r.transport() == Transport::Tcp {
        next!(out, "tcp");
        serialized(
            out,
            &TcpDoc {
                flags: tcp_flags_string(raw.tcp_flags),
                seq: raw.tcp_seq,
                ack: raw.tcp_ack,
                window: raw.tcp_window,
                data_offset: raw.tcp_data_offset,
                options: hex(r.tcp_options()),
            },
        );
    }
    next!(out, "payload");
    out.push(b'{');
    key!(out, "len");
    uint(out, u64::from(raw.payload_len));
    next!(out, "captured");
    uint(out, u64::from(raw.captured_len));
    next!(out, "truncated");
    boolean(out, r.payload_truncated());
    if r.frame_short() {
        out.extend_from_slice(b",\"frame_short\":true");
    }
    next!(out, "printable");
    text(out, r.payload(), usize::MAX);
    out.push(b'}');
    let answered = raw.flags & sensor_common::record_flags::SYN_ANSWERED != 0;
    let session = raw.flags & sensor_common::record_flags::REACTIVE_SESSION != 0;
    if answered || session {
        next!(out, "reactive");
        serialized(
            out,
            &ReactiveDoc {
                syn_answered: answered,
                session,
                syn: syn.cloned(),
            },
        );
    }
    next!(out, "sip");
    write_sip(out, msg, analysis.facts);
    next!(out, "fingerprint");
    write_fingerprint(out, analysis);
    out.push(b'}');
}

fn addr(out: &mut Vec<u8>, a: &NameAddr<'_>) {
    out.push(b'{');
    let mut first = true;
    let mut field = |out: &mut Vec<u8>, name: &str| {
        if !first {
            out.push(b',');
        }
        first = false;
        key(out, name);
    };
    if let Some(d) = a.display {
        field(out, "display");
        text(out, d, FIELD_MAX);
    }
    field(out, "uri");
    text(out, a.uri.raw, FIELD_MAX);
    if let Some(u) = a.uri.user {
        field(out, "user");
        text(out, u, FIELD_MAX);
    }
    field(out, "host");
    text(out, a.uri.host, FIELD_MAX);
    if let Some(p) = a.uri.port {
        field(out, "port");
        uint(out, u64::from(p));
    }
    if let Some(t) = a.tag {
        field(out, "tag");
        text(out, t, FIELD_MAX);
    }
    out.push(b'}');
}

/// `output::sip::SipDoc`, written in place.
pub fn write_sip(out: &mut Vec<u8>, msg: &SipMessage<'_>, facts: &Facts<'_>) {
    out.push(b'{');
    key!(out, "kind");
    ascii(out, msg.kind().as_str());
    match msg.start_line() {
        StartLine::Request {
            method,
            uri,
            version,
        } => {
            next!(out, "method");
            text(out, method, FIELD_MAX);
            next!(out, "uri");
            text(out, uri, FIELD_MAX);
            next!(out, "version");
            text(out, version, FIELD_MAX);
        }
        StartLine::Response {
            version,
            code,
            reason,
        } => {
            next!(out, "version");
            text(out, version, FIELD_MAX);
            next!(out, "status_code");
            uint(out, u64::from(code));
            next!(out, "reason");
            text(out, reason, FIELD_MAX);
        }
        StartLine::None => {}
    }
    next!(out, "truncated");
    boolean(out, msg.truncated());
    next!(out, "headers_complete");
    boolean(out, msg.headers_complete());
    next!(out, "line_endings");
    ascii(out, msg.line_endings().as_str());
    next!(out, "header_count");
    uint(out, msg.header_count() as u64);
    if msg.headers_overflow() > 0 {
        next!(out, "headers_overflow");
        uint(out, u64::from(msg.headers_overflow()));
    }
    next!(out, "header_order");
    out.push(b'[');
    for (i, h) in msg.headers().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        text(out, h.order_name(), NAME_MAX);
    }
    out.push(b']');
    next!(out, "header_names");
    out.push(b'[');
    for (i, h) in msg.headers().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        text(out, h.raw_name, NAME_MAX);
    }
    out.push(b']');
    // Quirks, as SipDoc words them; a message has none or a few.
    let mut quirks = 0;
    let mut quirk = |out: &mut Vec<u8>, s: &str| {
        if quirks < QUIRKS_MAX {
            out.extend_from_slice(if quirks == 0 { b",\"quirks\":[" } else { b"," });
            ascii(out, s);
            quirks += 1;
        }
    };
    let mut s = String::new();
    for h in msg.headers() {
        let plain = h.flags == 0 && h.separator == b" " && h.name != HeaderName::Other;
        if plain {
            continue;
        }
        let mut name = String::new();
        crate::escape::escape_bounded_into(h.raw_name, NAME_MAX, &mut name);
        let mut say = |out: &mut Vec<u8>, what: &str, rest: &str| {
            s.clear();
            s.push_str(what);
            s.push(':');
            s.push_str(rest);
            quirk(out, &s);
        };
        if h.has(header_flags::NO_COLON) {
            let mut value = String::new();
            crate::escape::escape_bounded_into(h.value, NAME_MAX, &mut value);
            say(out, "no_colon", &value);
            continue;
        }
        if h.has(header_flags::NAME_NOT_TOKEN) {
            say(out, "name_not_token", &name);
        }
        if h.name == HeaderName::Other
            && !h.has(header_flags::NAME_NOT_TOKEN)
            && h.raw_name.contains(&b'_')
        {
            say(out, "underscore_name", &name);
        }
        if h.has(header_flags::SPACE_BEFORE_COLON) {
            say(out, "space_before_colon", &name);
        }
        if h.separator != b" " {
            let mut sep = String::new();
            crate::escape::escape_bounded_into(h.separator, 8, &mut sep);
            say(out, "sep", &format!("{name}=\"{sep}\""));
        }
        if h.has(header_flags::FOLDED) {
            say(out, "folded", &name);
        }
        if h.has(header_flags::PARTIAL) {
            say(out, "partial", &name);
        }
    }
    if msg.is_sip() && !msg.headers_complete() && !msg.truncated() {
        quirk(out, "no_final_blank_line");
    }
    if quirks > 0 {
        out.push(b']');
    }
    if let Some(via) = facts.via() {
        next!(out, "via");
        out.push(b'{');
        key!(out, "transport");
        text(out, via.transport, FIELD_MAX);
        next!(out, "host");
        text(out, via.host, FIELD_MAX);
        if let Some(p) = via.port {
            next!(out, "port");
            uint(out, u64::from(p));
        }
        if let Some(b) = via.branch() {
            next!(out, "branch");
            text(out, b, FIELD_MAX);
        }
        next!(out, "params");
        text(out, via.params, FIELD_MAX);
        out.push(b'}');
    }
    for (name, a) in [
        ("from", facts.from()),
        ("to", facts.to()),
        ("contact", facts.contact()),
    ] {
        if let Some(a) = a {
            next(out, name);
            addr(out, a);
        }
    }
    if let Some(c) = facts.call_id() {
        next!(out, "call_id");
        text(out, c, FIELD_MAX);
    }
    if let Some(c) = facts.cseq() {
        next!(out, "cseq");
        out.push(b'{');
        if let Some(n) = c.number {
            key!(out, "num");
            uint(out, u64::from(n));
            out.push(b',');
        }
        key!(out, "method");
        text(out, c.method, FIELD_MAX);
        out.push(b'}');
    }
    if let Some(ua) = msg.header_value(HeaderName::UserAgent) {
        next!(out, "user_agent");
        text(out, ua, FIELD_MAX);
    }
    if let Some(mf) = msg
        .header_value(HeaderName::MaxForwards)
        .and_then(parse_u32)
    {
        next!(out, "max_forwards");
        uint(out, u64::from(mf));
    }
    if let Some(cl) = msg.content_length() {
        next!(out, "content_length");
        uint(out, u64::from(cl));
    }
    if let Some(body) = msg.body() {
        next!(out, "body_len");
        uint(out, body.len() as u64);
        if let Some(s) = sdp_line(body, b's') {
            next!(out, "sdp_session");
            text(out, s, FIELD_MAX);
        }
    }
    out.push(b'}');
}

fn evidence_item(out: &mut Vec<u8>, cond: &Condition, facts: &Facts<'_>, first: bool) {
    if !first {
        out.push(b',');
    }
    out.extend_from_slice(cond.json_evidence.as_bytes());
    evidence_value(out, facts, cond);
    out.push(b'}');
}

/// `engine::render` (the observed value, escaped and bounded), written as a JSON string.
fn evidence_value(out: &mut Vec<u8>, facts: &Facts<'_>, cond: &Condition) {
    if cond.field.kind() == Kind::List {
        ascii(out, &crate::fingerprint::engine::render(facts, cond));
        return;
    }
    match facts.get(&cond.field) {
        Value::Missing => out.extend_from_slice(b"\"(absent)\""),
        Value::Bytes(b) => text(out, b, EVIDENCE_VALUE_MAX),
        Value::Int(n) => {
            out.push(b'"');
            uint(out, n);
            out.push(b'"');
        }
        Value::Bool(b) => out.extend_from_slice(if b { b"\"true\"" } else { b"\"false\"" }),
        Value::Ip(addr) => ip(out, addr),
        Value::List => out.extend_from_slice(b"\"\""),
    }
}

/// `output::fingerprint::FingerprintDoc` (compact: see the module documentation).
fn write_fingerprint(out: &mut Vec<u8>, a: &Analysis<'_, '_>) {
    let rules = a.engine.rules();
    let rule = a.verdict.winner.map(|(r, _)| &rules[usize::from(r)]);
    out.extend_from_slice(match rule {
        Some(r) => r.json_head.as_bytes(),
        None => b"{\"tool\":\"unknown\",\"category\":\"unknown\"",
    });
    next!(out, "confidence");
    float(out, round2(a.verdict.confidence()));
    next!(out, "rule");
    out.extend_from_slice(rule.map_or(&b"\"unknown\""[..], |r| r.json_id.as_bytes()));
    out.extend_from_slice(a.engine.json_ruleset.as_bytes());
    if let Some(r) = rule {
        out.extend_from_slice(r.json_tags.as_bytes());
    }
    next!(out, "evidence");
    out.push(b'[');
    match (rule, &a.verdict.winner) {
        (Some(rule), Some((_, score))) => {
            let mut first = true;
            let mut item = |out: &mut Vec<u8>, c: &Condition| {
                evidence_item(out, c, a.facts, first);
                first = false;
            };
            for c in &rule.require {
                item(out, c);
            }
            for (i, c) in rule.require_any.iter().enumerate() {
                if bit(score.any, i) {
                    item(out, c);
                }
            }
            for (i, c) in rule.boost.iter().enumerate() {
                if bit(score.boost, i) {
                    item(out, c);
                }
            }
            for (i, c) in rule.expect.iter().enumerate() {
                if bit(score.expect, i) {
                    item(out, c);
                }
            }
            out.push(b']');
            let mut first = true;
            for (i, c) in rule.expect.iter().enumerate() {
                if !bit(score.expect, i) {
                    if first {
                        out.extend_from_slice(b",\"modifications\":[");
                    }
                    evidence_item(out, c, a.facts, first);
                    first = false;
                }
            }
            if !first {
                out.push(b']');
            }
        }
        _ => {
            out.extend_from_slice(
                b"{\"rule\":\"unknown\",\"field\":\"template\",\"section\":\"template\",\"value\":",
            );
            template_hash(out, a.verdict.template.0);
            out.extend_from_slice(b"}]");
        }
    }
    let alternatives = a.verdict.alternatives();
    if !alternatives.is_empty() {
        next!(out, "alternatives");
        out.push(b'[');
        for (i, &(r, confidence)) in alternatives.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(rules[usize::from(r)].json_alternative.as_bytes());
            float(out, round2(confidence));
            out.push(b'}');
        }
        out.push(b']');
    }
    next!(out, "template_hash");
    template_hash(out, a.verdict.template.0);
    if rule.is_none() {
        next!(out, "template");
        ascii(out, &a.cache.template_text(a.verdict, a.facts));
    }
    next!(out, "inferences");
    write_inferences(out, a, rule);
    out.push(b'}');
}

fn host_inference(
    out: &mut Vec<u8>,
    name: &str,
    field: &str,
    host: &[u8],
    port: Option<u16>,
    source: Option<IpAddr>,
    constants: &[IpAddr],
) {
    next(out, name);
    out.push(b'{');
    key!(out, "field");
    ascii(out, field);
    next!(out, "host");
    text(out, host, 64);
    if let Some(p) = port {
        next!(out, "port");
        uint(out, u64::from(p));
    }
    next!(out, "class");
    ascii(out, classify_host(host, source, constants).as_str());
    out.push(b'}');
}

fn tag_inference(out: &mut Vec<u8>, tag: &SvTag, dst: Option<(IpAddr, u16)>) {
    out.extend_from_slice(
        b",\"tag\":{\"field\":\"from.tag\",\"encoding\":\"sipvicious_createtag\"",
    );
    next!(out, "kind");
    ascii(out, tag.kind_str());
    next!(out, "decoded");
    text(out, tag.encoded(), 64);
    match tag.kind {
        SvTagKind::Target => {
            if matches!(dst, Some((IpAddr::V6(_), _))) && tag.target().is_none() {
                // An IPv6 target written without its colons: rare; the engine's own code.
                let t = infer_tag(tag, dst);
                if let Some(target) = &t.target {
                    next!(out, "target");
                    ascii(out, target);
                }
                if let Some(m) = t.matches_destination {
                    next!(out, "matches_destination");
                    boolean(out, m);
                }
            } else if let Some((tip, tport)) = tag.target() {
                next!(out, "target");
                out.push(b'"');
                match tip {
                    IpAddr::V4(v4) => {
                        let _ = write!(out, "{v4}:{tport}");
                    }
                    IpAddr::V6(v6) => {
                        let _ = write!(out, "[{v6}]:{tport}");
                    }
                }
                out.push(b'"');
                if let Some((dip, dport)) = dst {
                    next!(out, "matches_destination");
                    boolean(out, dip == tip && dport == tport);
                }
            }
        }
        SvTagKind::Credentials => {
            if let Some((user, password)) = tag.credentials() {
                next!(out, "user");
                text(out, user, 64);
                next!(out, "password");
                text(out, password, 64);
            }
        }
        SvTagKind::Extension => {
            next!(out, "extension");
            text(out, tag.encoded(), 64);
        }
    }
    out.push(b'}');
}

/// `engine::infer` as codes and numbers (see the module documentation).
fn write_inferences(out: &mut Vec<u8>, a: &Analysis<'_, '_>, rule: Option<&Rule>) {
    let facts = a.facts;
    let packet = facts.packet;
    let constants: &[IpAddr] = rule.map_or(&[], |r| &r.tool_constants);
    let src_ip = packet.map(|p| p.src_ip);
    // Every member is optional: an opening brace, then `,"member":...` each, the first comma
    // dropped at the end.
    let start = out.len();
    out.push(b'{');
    if let Some(tag) = facts.sv_tag() {
        tag_inference(out, &tag, packet.map(|p| (p.dst_ip, p.dst_port)));
    }
    let via = facts.via();
    if let Some(v) = via.filter(|v| !v.host.is_empty()) {
        host_inference(
            out, "via_host", "via.host", v.host, v.port, src_ip, constants,
        );
    }
    if let Some(c) = facts.contact().filter(|c| !c.uri.host.is_empty()) {
        host_inference(
            out,
            "contact_host",
            "contact.host",
            c.uri.host,
            c.uri.port,
            src_ip,
            constants,
        );
    }
    if let Some((base, (bound, basis, processes))) =
        rule.and_then(|r| r.source_port_base).and_then(|base| {
            process_count(base, via.and_then(|v| v.port), packet.map(|p| p.src_port))
                .map(|c| (base, c))
        })
    {
        next!(out, "processes");
        out.push(b'{');
        key!(out, "base_port");
        uint(out, u64::from(base));
        next!(out, "bound_port");
        uint(out, u64::from(bound));
        next!(out, "basis");
        ascii(out, basis);
        next!(out, "processes");
        uint(out, u64::from(processes));
        out.push(b'}');
    }
    if let Some(p) = packet {
        let ttl = infer_ttl(p.ttl);
        next!(out, "ttl");
        out.push(b'{');
        key!(out, "observed");
        uint(out, u64::from(ttl.observed));
        next!(out, "initial");
        uint(out, u64::from(ttl.initial));
        next!(out, "hops");
        uint(out, u64::from(ttl.hops));
        out.push(b'}');
        let class = classify_packet(&p);
        if class != PacketIpId::NotApplicable {
            next!(out, "ip_id");
            out.push(b'{');
            key!(out, "id");
            uint(out, u64::from(p.ip_id));
            next!(out, "df");
            boolean(out, p.dont_fragment);
            next!(out, "packet");
            ascii(out, class.as_str());
            if let Some(s) = a.source {
                next!(out, "source");
                out.push(b'{');
                key!(out, "packets");
                uint(out, s.packets);
                next!(out, "df_packets");
                uint(out, s.df_packets);
                next!(out, "zero_id_packets");
                uint(out, s.zero_id_packets);
                next!(out, "behaviour");
                ascii(out, s.behaviour.as_str());
                match s.behaviour {
                    IpIdBehaviour::Incrementing { step, .. } => {
                        next!(out, "step");
                        uint(out, u64::from(step));
                    }
                    IpIdBehaviour::Constant(v) => {
                        next!(out, "constant");
                        uint(out, u64::from(v));
                    }
                    _ => {}
                }
                out.push(b'}');
            }
            out.push(b'}');
        }
    }
    // Drop the comma after the opening brace.
    if out.len() > start + 1 && out[start + 1] == b',' {
        out.remove(start + 1);
    }
    out.push(b'}');
}

/// For unit tests: every record of `offline::corpus_records_varied` analysed as the pipeline
/// analyses it (one engine, cache and source tracker across them, times a nanosecond apart),
/// handed to `check`; returns how many there were.
#[cfg(test)]
pub(crate) fn for_each_corpus_analysis(
    mut check: impl FnMut(&Event<'_>, &SipMessage<'_>, &Analysis<'_, '_>),
) -> u64 {
    use crate::{
        fingerprint::{Packet, Recalled, SourceTracker},
        record::Record,
    };
    let engine = Engine::builtin().expect("built-in rules");
    let mut cache = ClassCache::default();
    let mut sources = SourceTracker::new(256);
    let mut count = 0;
    for raw in crate::offline::corpus_records_varied() {
        let record = Record::new(&raw).expect("valid record");
        let event = Event {
            record,
            wall_ns: 1_795_313_043_123_456_789 + count,
        };
        let mut msg = SipMessage::unparsed(record.payload(), record.payload_truncated());
        let recalled = cache.parse(&mut msg);
        let packet = Packet::from_event(&event);
        let source = sources.observe(&packet, event.wall_ns);
        let facts = Facts::new(&msg, Some(packet))
            .with_places(recalled.as_ref().and_then(Recalled::places));
        let verdict = cache.classify(&engine, &facts, recalled.as_ref());
        let analysis = Analysis {
            engine: &engine,
            cache: &cache,
            verdict: &verdict,
            facts: &facts,
            source: Some(source),
        };
        check(&event, &msg, &analysis);
        count += 1;
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{fingerprint::FingerprintDoc, json::EventDoc, sip::SipDoc};

    /// The full document minus what the compact form leaves out.
    fn without_prose(mut full: serde_json::Value) -> serde_json::Value {
        // `get_mut`, not indexing: indexing a missing key would add it.
        let fp = full.get_mut("fingerprint").unwrap();
        for list in ["evidence", "modifications"] {
            if let Some(items) = fp.get_mut(list).and_then(|v| v.as_array_mut()) {
                for item in items {
                    let item = item.as_object_mut().unwrap();
                    for k in ["test", "note", "weight"] {
                        item.remove(k);
                    }
                }
            }
        }
        let inf = fp.get_mut("inferences").unwrap();
        for (part, keys) in [
            ("tag", &["note"][..]),
            ("via_host", &["note"]),
            ("contact_host", &["note"]),
            ("processes", &["note"]),
            ("ttl", &["hint", "caveat"]),
            ("ip_id", &["hints", "caveats"]),
        ] {
            if let Some(obj) = inf.get_mut(part).and_then(|v| v.as_object_mut()) {
                for k in keys {
                    obj.remove(*k);
                }
            }
        }
        full
    }

    #[test]
    fn compact_document_is_the_full_one_without_the_prose() {
        let mut line = Vec::new();
        let checked = for_each_corpus_analysis(|event, msg, a| {
            line.clear();
            write_event(&mut line, event, msg, a, None);
            let compact: serde_json::Value = serde_json::from_slice(&line)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&line)));
            let fp = a.cache.fingerprint(a.engine, a.verdict, a.facts, a.source);
            let full = EventDoc::new(event)
                .with_analysis(SipDoc::new(msg), FingerprintDoc::from_fingerprint(fp));
            let full = without_prose(serde_json::to_value(&full).unwrap());
            assert_eq!(
                compact,
                full,
                "\ncompact: {}\nfull:    {}",
                String::from_utf8_lossy(&line),
                full
            );
            assert!(line.iter().all(|&b| (0x20..0x7f).contains(&b)));
        });
        assert!(checked > 250, "{checked}");
    }

    /// `len` pseudo-random bytes from `state`: any byte at all when `any`, else mostly `x` (plain
    /// text, as SIP is) with a byte of `alphabet` one time in `one_in`.
    fn random_bytes(
        state: &mut u64,
        len: usize,
        any: bool,
        alphabet: &[u8],
        one_in: u64,
    ) -> Vec<u8> {
        (0..len)
            .map(|_| {
                *state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                if any {
                    (*state >> 56) as u8
                } else if (*state >> 33).is_multiple_of(one_in) {
                    alphabet[((*state >> 40) % alphabet.len() as u64) as usize]
                } else {
                    b'x'
                }
            })
            .collect()
    }

    #[test]
    fn finds_every_byte_to_escape() {
        let alphabet = [b'a', b'"', b'\\', 0x1f, 0x7f, 0x80, 0xff, b' ', b'~', 0];
        let mut state = 7u64;
        for len in 0..70 {
            for _ in 0..50 {
                let bytes = random_bytes(&mut state, len, false, &alphabet, 4);
                for from in 0..=len {
                    let want = bytes[from..]
                        .iter()
                        .position(|&b| TEXT_CLASS[usize::from(b)] != 0)
                        .map_or(len, |p| from + p);
                    assert_eq!(next_special(&bytes, from), want, "{bytes:?} from {from}");
                }
            }
        }
    }

    #[test]
    fn ascii_reads_back_as_the_same_string() {
        // Around the sixteen bytes of the one-block path, with every byte it must not take.
        let alphabet = [
            "a", " ", "\"", "\\", "\n", "\u{1f}", "\u{7f}", "é", "~", "\0",
        ];
        let mut state = 5u64;
        for len in 0..40 {
            for _ in 0..60 {
                let s: String = (0..len)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        // Mostly plain text, so that whole plain blocks are met too.
                        let pick = (state % 30) as usize;
                        alphabet[pick.saturating_sub(20)]
                    })
                    .collect();
                let mut out = b"prefix".to_vec();
                ascii(&mut out, &s);
                assert_eq!(&out[..6], b"prefix");
                let back: String = serde_json::from_slice(&out[6..])
                    .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&out)));
                assert_eq!(back, s);
            }
        }
    }

    #[test]
    fn text_is_escape_then_json_for_any_bytes() {
        let alphabet = [
            b'a', b'"', b'\\', b'\r', b'\n', b'\t', 0x1f, 0x7f, 0x80, 0xff, 0,
        ];
        let mut state = 11u64;
        for len in 0..90 {
            for round in 0..40 {
                let bytes = random_bytes(&mut state, len, round % 3 == 0, &alphabet, 5);
                // Something already in the buffer, which must be kept.
                let mut out = b"prefix".to_vec();
                text(&mut out, &bytes, 64);
                let want = serde_json::to_string(&crate::escape::escape_bounded(&bytes, 64))
                    .expect("a string serializes");
                assert_eq!(String::from_utf8_lossy(&out[6..]), want, "{bytes:?}");
                assert_eq!(&out[..6], b"prefix");
            }
        }
    }

    #[test]
    fn short_copies_numbers_and_hashes_append_what_they_are_given() {
        let source: Vec<u8> = (0..32u8).map(|i| b'a' + i).collect();
        for len in 0..=32 {
            let mut out = b"prefix".to_vec();
            put_short(&mut out, &source[..len]);
            assert_eq!(out, [b"prefix", &source[..len]].concat(), "{len}");
        }
        for n in [0, 7, 10, 65_535, 4_294_967_296, u64::MAX] {
            let mut out = b"x".to_vec();
            uint(&mut out, n);
            assert_eq!(out, format!("x{n}").into_bytes());
        }
        for hash in [0, 1, 0x0123_4567_89ab_cdef, u64::MAX] {
            let mut out = b"x".to_vec();
            template_hash(&mut out, hash);
            assert_eq!(out, format!("x\"{hash:016x}\"").into_bytes());
        }
    }

    #[test]
    fn addresses_as_the_standard_library_writes_them() {
        let octets = [0u8, 1, 9, 10, 42, 99, 100, 101, 199, 200, 250, 255];
        for &a in &octets {
            for &b in &octets {
                for addr in [
                    std::net::Ipv4Addr::new(a, b, 255 - a, 255 - b),
                    std::net::Ipv4Addr::new(b, 7, a, 0),
                ] {
                    let mut out = Vec::new();
                    ip(&mut out, IpAddr::V4(addr));
                    assert_eq!(out, format!("\"{addr}\"").into_bytes());
                }
            }
        }
        // Every octet value in every position (the digits come from a table).
        for o in 0..=255u8 {
            let addr = std::net::Ipv4Addr::new(o, 255 - o, o.wrapping_mul(7), o / 3);
            let mut out = b"x".to_vec();
            ip(&mut out, IpAddr::V4(addr));
            assert_eq!(out, format!("x\"{addr}\"").into_bytes());
        }
        let v6: std::net::Ipv6Addr = "2001:db8::5060".parse().unwrap();
        let mut out = Vec::new();
        ip(&mut out, IpAddr::V6(v6));
        assert_eq!(out, b"\"2001:db8::5060\"");
    }

    #[test]
    fn timestamps_as_rfc3339_micros() {
        for ns in [
            0,
            1_795_313_043_123_456_789,
            1_795_313_043_000_001_999,
            1_795_313_043_010_203_000,
            1_795_313_043_999_999_999,
            1_795_313_044_000_000_000,
            951_782_400_000_000_000,
            u64::MAX,
        ] {
            // Twice: the second time from the cached second.
            for _ in 0..2 {
                let mut out = Vec::new();
                timestamp(&mut out, ns);
                assert_eq!(
                    out,
                    format!("\"{}\"", crate::clock::rfc3339_micros(ns)).into_bytes()
                );
            }
        }
    }
}
