//! The classification cache's key: a message with the parts a tool draws at random abstracted.
//!
//! Scanners send one template thousands of times, changing only tags, branches, Call-IDs,
//! addresses and ports. The key keeps everything else byte for byte: the start line's method
//! and version, header names with their spacing and colons, line endings, every punctuation
//! byte, and every word a rule or the parser may look at as a word (the template's keywords,
//! in any case). What remains, each run of letters and digits inside the request URI, the
//! header values, the status line and the body, becomes its length and the set of character
//! classes it holds (digits, `a-f`, `g-z`, `A-F`, `G-Z`). A run of digits only keeps a range of
//! lengths instead ([`DIGIT_LENGTHS`]): numbers (address octets, ports, random decimals) vary
//! in length from packet to packet where random letters do not. The message kind, its flags
//! and whether it is truncated come first.
//!
//! Two messages with the same key parse alike (the parser splits only on punctuation, and the
//! names it compares are kept), give every field at the same place, and have the same
//! structural template ([`super::template`]): so a rule condition whose outcome is the same for
//! every string the key allows for its field ([`super::uniform`]) needs evaluating once per key.
//!
//! The key is an injective encoding: literal bytes below 0x80 stand for themselves, a literal
//! byte at or above 0x80 is escaped, an abstracted run is a tag byte (0x80 | classes) and its
//! length.

use crate::{
    sip::{SipMessage, StartLine, places::offset_in},
    words::ends,
};

/// Character classes of an abstracted run.
pub const DIGIT: u8 = 1;
pub const LOWER_HEX: u8 = 2;
pub const LOWER_OTHER: u8 = 4;
pub const UPPER_HEX: u8 = 8;
pub const UPPER_OTHER: u8 = 16;

/// Longest key built; longer messages are classified without the cache.
pub const MAX_KEY_BYTES: usize = 4096;

const TAG_RUN: u8 = 0x80;
const TAG_ESCAPE: u8 = 0xfe;
/// Starts the SIP part, after the header (kind, flags) bytes.
const TAG_START: u8 = 0xf0;

/// The class bits of each byte; 0 for bytes that are not ASCII letters or digits.
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = match b as u8 {
            b'0'..=b'9' => DIGIT,
            b'a'..=b'f' => LOWER_HEX,
            b'g'..=b'z' => LOWER_OTHER,
            b'A'..=b'F' => UPPER_HEX,
            b'G'..=b'Z' => UPPER_OTHER,
            _ => 0,
        };
        b += 1;
    }
    t
};

/// The bytes a class set allows.
pub fn class_bytes(classes: u8) -> impl Iterator<Item = u8> {
    (0u8..=255).filter(move |&b| CLASS[usize::from(b)] & classes != 0)
}

/// The RFC 3261 magic cookie: kept, as the template keeps it, and what follows it abstracted.
pub const COOKIE: &[u8] = b"z9hG4bK";

/// Runs kept as they are: the template's keywords (see `template::is_keyword`), in any case,
/// because the parser compares some of them case-insensitively (`tag`, `branch`, `sip:`).
const KEPT_WORDS: [&[u8]; 56] = [
    b"in",
    b"lr",
    b"nc",
    b"ws",
    b"ack",
    b"avp",
    b"bye",
    b"ip4",
    b"ip6",
    b"md5",
    b"qop",
    b"rtp",
    b"sdp",
    b"sip",
    b"tag",
    b"tcp",
    b"tel",
    b"tls",
    b"ttl",
    b"udp",
    b"uri",
    b"wss",
    b"auth",
    b"info",
    b"sctp",
    b"sips",
    b"text",
    b"user",
    b"alias",
    b"maddr",
    b"nonce",
    b"phone",
    b"plain",
    b"prack",
    b"realm",
    b"refer",
    b"rport",
    b"branch",
    b"cancel",
    b"cnonce",
    b"digest",
    b"invite",
    b"notify",
    b"update",
    b"expires",
    b"message",
    b"options",
    b"publish",
    b"received",
    b"register",
    b"response",
    b"username",
    b"algorithm",
    b"subscribe",
    b"transport",
    b"application",
];

/// A run's length and its first, second and last letters in lower case: what tells the kept
/// words apart (no two share it), packed so that one comparison checks them.
const fn kept_signature(len: usize, first: u8, second: u8, last: u8) -> u32 {
    (len as u32) << 24
        | (first.to_ascii_lowercase() as u32) << 16
        | (second.to_ascii_lowercase() as u32) << 8
        | last.to_ascii_lowercase() as u32
}

const KEPT_SLOTS: usize = 256;

const fn kept_slot(signature: u32) -> usize {
    (signature.wrapping_mul(0x9e37_79b1) >> 24) as usize % KEPT_SLOTS
}

/// The kept words by signature, open addressing with linear probing: (signature, 0 for an
/// empty slot; the word's index in [`KEPT_WORDS`]).
static KEPT_TABLE: [(u32, u8); KEPT_SLOTS] = {
    let mut table = [(0u32, 0u8); KEPT_SLOTS];
    let mut w = 0;
    while w < KEPT_WORDS.len() {
        let word = KEPT_WORDS[w];
        let signature = kept_signature(word.len(), word[0], word[1], word[word.len() - 1]);
        let mut at = kept_slot(signature);
        while table[at].0 != 0 {
            assert!(table[at].0 != signature, "two kept words share a signature");
            at = (at + 1) % KEPT_SLOTS;
        }
        table[at] = (signature, w as u8);
        w += 1;
    }
    table
};

/// A run of 2 to 11 letters and digits as two words: its first and last 8 bytes (4 or 2 for a
/// shorter one; they overlap), little-endian, for comparing it whole.
const fn packed(run: &[u8]) -> (u64, u64) {
    let width = if run.len() >= 8 {
        8
    } else if run.len() >= 4 {
        4
    } else {
        2
    };
    let (mut first, mut last, mut i) = (0u64, 0u64, 0);
    while i < width {
        first |= (run[i] as u64) << (8 * i);
        last |= (run[run.len() - width + i] as u64) << (8 * i);
        i += 1;
    }
    (first, last)
}

/// [`packed`] read with a load or two ([`ends`]), in lower case: setting bit 5 of a letter
/// makes it lower case and leaves a digit as it is. `None` for a run shorter than 2 bytes.
#[inline]
fn packed_lower(run: &[u8]) -> Option<(u64, u64)> {
    let ((first, last), width) = match run.len() {
        8.. => (
            ends::<8>(run).map(|(f, l)| (u64::from_le_bytes(f), u64::from_le_bytes(l)))?,
            8,
        ),
        4..=7 => {
            let word = |w| u64::from(u32::from_le_bytes(w));
            (ends::<4>(run).map(|(f, l)| (word(f), word(l)))?, 4)
        }
        _ => {
            let word = |w| u64::from(u16::from_le_bytes(w));
            (ends::<2>(run).map(|(f, l)| (word(f), word(l)))?, 2)
        }
    };
    let case = 0x2020_2020_2020_2020u64 >> (64 - 8 * width);
    Some((first | case, last | case))
}

/// The kept words packed ([`packed`]), by their index in [`KEPT_WORDS`].
static KEPT_PACKED: [(u64, u64); KEPT_WORDS.len()] = {
    let mut words = [(0, 0); KEPT_WORDS.len()];
    let mut w = 0;
    while w < KEPT_WORDS.len() {
        words[w] = packed(KEPT_WORDS[w]);
        w += 1;
    }
    words
};

/// Whether `run`, letters and digits, is a kept word, in any case. Every run of letters of
/// every value comes through here: its signature finds the one candidate (most runs meet an
/// empty slot at once), then one comparison of two words.
#[inline]
fn is_kept_word(run: &[u8]) -> bool {
    if run.len() < 2 || run.len() > 11 {
        return false;
    }
    let signature = kept_signature(run.len(), run[0], run[1], run[run.len() - 1]);
    let mut at = kept_slot(signature);
    loop {
        match KEPT_TABLE[at] {
            (0, _) => return false,
            (s, w) if s == signature => {
                return packed_lower(run) == Some(KEPT_PACKED[usize::from(w)]);
            }
            _ => at = (at + 1) % KEPT_SLOTS,
        }
    }
}

/// The length ranges a run of digits is known by in a SIP message's key: the lengths of an
/// address octet or small number, a port, a 32-bit decimal, and longer random decimals (80 bits
/// is at most 25 digits).
pub const DIGIT_LENGTHS: [(u16, u16); 8] = [
    (1, 3),
    (4, 5),
    (6, 10),
    (11, 16),
    (17, 25),
    (26, 32),
    (33, 64),
    (65, u16::MAX),
];

fn digit_bucket(len: usize) -> u8 {
    DIGIT_LENGTHS
        .iter()
        .position(|&(_, hi)| len <= usize::from(hi))
        .unwrap_or(DIGIT_LENGTHS.len() - 1) as u8
}

/// One element of an abstracted value, for deciding conditions over it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Item {
    Byte(u8),
    /// `min..=max` bytes (the same for a run of letters), each from `classes`.
    Run {
        classes: u8,
        min: u16,
        max: u16,
    },
}

/// Where a message's bytes are abstracted: everything outside these spans is kept.
#[derive(Clone, Copy, Debug)]
struct Region {
    start: u32,
    end: u32,
}

/// The key being written: room for the worst case (every byte escaped), so that appending
/// needs no capacity check beyond the index.
struct Out {
    bytes: Box<[u8]>,
    len: usize,
}

impl Default for Out {
    fn default() -> Self {
        Out {
            bytes: vec![0; 2 * MAX_KEY_BYTES + 64].into_boxed_slice(),
            len: 0,
        }
    }
}

impl Out {
    #[inline]
    fn push(&mut self, b: u8) {
        self.bytes[self.len] = b;
        self.len += 1;
    }

    #[inline]
    fn extend(&mut self, bytes: &[u8]) {
        self.bytes[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    fn get(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Builds keys; holds its buffers so that a key costs no allocation.
#[derive(Default)]
pub struct KeyBuilder {
    key: Out,
    regions: Vec<Region>,
    /// Runs of digits known by their length range (SIP messages), not their length (others:
    /// the template of a non-SIP payload cuts it at 64 bytes and counts its length).
    digit_ranges: bool,
    /// The runs the last key abstracts, and the message it is for (its bytes and flags).
    free: Vec<FreeRun>,
    built: Vec<u8>,
    built_flags: u16,
}

impl KeyBuilder {
    /// The key of `msg`; `None` when it would be longer than [`MAX_KEY_BYTES`].
    pub fn build(&mut self, msg: &SipMessage<'_>) -> Option<&[u8]> {
        self.key.len = 0;
        self.regions.clear();
        self.free.clear();
        self.built.clear();
        let bytes = msg.bytes();
        if bytes.len() > MAX_KEY_BYTES {
            return None;
        }
        self.key.push(msg.kind() as u8);
        self.key.extend(&msg.flags().to_le_bytes());
        self.key.push(u8::from(msg.truncated()));
        self.key.push(u8::from(msg.headers_overflow() > 0));
        self.digit_ranges = msg.is_sip();
        if !self.digit_ranges {
            self.key.extend(&(bytes.len() as u32).to_le_bytes());
        }
        self.key.push(TAG_START);
        self.find_regions(msg);
        let mut pos = 0;
        for r in &self.regions {
            let (start, end) = (r.start as usize, r.end as usize);
            literal(&mut self.key, &bytes[pos..start]);
            let part = Part { bytes, start, end };
            abstracted(&mut self.key, part, self.digit_ranges, &mut self.free);
            pos = end;
        }
        literal(&mut self.key, &bytes[pos..]);
        self.built.extend_from_slice(bytes);
        self.built_flags = msg.flags();
        (self.key.len <= MAX_KEY_BYTES).then_some(self.key.get())
    }

    /// The digits of `msg` outside the parts the key abstracts, with their offsets: the ones
    /// [`mask_digits_into`] would turn into `0` over the whole payload, but that the key keeps
    /// (the version's, a header name's). Two payloads masked alike whose such digits are equal
    /// are masked alike inside those parts alone, and parse alike ([`crate::sip::Layout`]).
    /// For a message no longer than a key may be ([`MAX_KEY_BYTES`]): the offsets are `u16`.
    pub fn kept_digits(&mut self, msg: &SipMessage<'_>) -> Vec<(u16, u8)> {
        self.regions.clear();
        self.find_regions(msg);
        let bytes = msg.bytes();
        let mut kept = Vec::new();
        let mut pos = 0;
        let outside = self
            .regions
            .iter()
            .map(|r| (r.start as usize, r.end as usize))
            .chain([(bytes.len(), bytes.len())]);
        for (start, end) in outside {
            for i in (pos..start).filter(|&i| masks(bytes, i)) {
                kept.push((i as u16, bytes[i]));
            }
            pos = end;
        }
        kept
    }

    /// What another request of `msg`'s template, with its runs of letters and digits at the
    /// same places (see [`runs_into`]), must have for the same key ([`has_fixed`]): the fixed
    /// bytes (as long as the message), the letters and digits it must repeat, [`ANY_DIGITS`]
    /// where it may hold any digits, 0 elsewhere; and the runs of letters it may hold others
    /// in ([`FreeRun::admits`]). It must repeat every letter and digit outside the parts the
    /// key abstracts, and inside them the kept words and the magic cookie that starts a run.
    /// Builds `msg`'s key unless it was the last built.
    pub fn free_runs(&mut self, msg: &SipMessage<'_>) -> (Box<[u8]>, Box<[FreeRun]>) {
        let bytes = msg.bytes();
        if self.built != bytes || self.built_flags != msg.flags() {
            self.build(msg);
        }
        let mut fixed: Box<[u8]> = (bytes.iter())
            .map(|&b| if CLASS[usize::from(b)] != 0 { b } else { 0 })
            .collect();
        let mut free = Vec::new();
        for run in &self.free {
            let start = usize::from(run.start) + if run.cookie { COOKIE.len() } else { 0 };
            let end = usize::from(run.start) + usize::from(run.len);
            if run.classes == DIGIT {
                fixed[start..end].fill(ANY_DIGITS);
            } else {
                fixed[start..end].fill(0);
                free.push(*run);
            }
        }
        (fixed, free.into())
    }

    /// The key last built.
    pub fn last_key(&self) -> &[u8] {
        self.key.get()
    }

    fn push_region(&mut self, bytes: &[u8], span: &[u8]) {
        if let Some(start) = offset_in(bytes, span)
            && !span.is_empty()
        {
            // Regions come in order and never overlap; one that would is left literal.
            let floor = self.regions.last().map_or(0, |r| r.end as usize);
            if start >= floor {
                self.regions.push(Region {
                    start: start as u32,
                    end: (start + span.len()) as u32,
                });
            }
        }
    }

    fn find_regions(&mut self, msg: &SipMessage<'_>) {
        let bytes = msg.bytes();
        if !msg.is_sip() {
            // The template shapes the first 64 bytes: the abstraction must not join a run
            // across that cut.
            let cut = bytes.len().min(64);
            self.push_region(bytes, &bytes[..cut]);
            self.push_region(bytes, &bytes[cut..]);
            return;
        }
        match msg.start_line() {
            StartLine::Request { uri, .. } => self.push_region(bytes, uri),
            StartLine::Response { .. } => {
                // Code and reason; version and the space after it kept.
                let line = msg.first_line();
                let from = line
                    .iter()
                    .position(|&b| b == b' ')
                    .map_or(line.len(), |p| p + 1);
                self.push_region(bytes, &line[from..]);
            }
            StartLine::None => {}
        }
        for h in msg.headers() {
            self.push_region(bytes, h.value);
        }
        if let Some(body) = msg.body() {
            let base = offset_in(bytes, body).unwrap_or(bytes.len());
            let mut start = 0;
            while start < body.len() {
                let end = memchr::memchr(b'\n', &body[start..]).map_or(body.len(), |e| start + e);
                let line = &body[start..end];
                // `s=`, `o=`...: the line type is kept, as the template keeps it.
                let skip = if line.len() >= 2 && line[1] == b'=' {
                    2
                } else {
                    0
                };
                self.push_region(bytes, &bytes[base + start + skip..base + end]);
                start = end + 1;
            }
        }
    }

    /// The items of a field's value (a slice of the message the key was last built for), or
    /// `None` when the value does not start and end at run boundaries of the key (so the key
    /// does not pin its abstraction down).
    pub fn items(&self, msg: &SipMessage<'_>, value: &[u8]) -> Option<Vec<Item>> {
        let bytes = msg.bytes();
        if value.is_empty() {
            return Some(Vec::new());
        }
        let start = offset_in(bytes, value)?;
        let end = start + value.len();
        let mut items = Vec::with_capacity(value.len());
        let mut pos = start;
        let is_alnum = |i: usize| CLASS[usize::from(bytes[i])] != 0;
        for r in &self.regions {
            let (rs, re) = (r.start as usize, r.end as usize);
            if re <= pos {
                continue;
            }
            if rs >= end {
                break;
            }
            if pos < rs {
                items.extend(bytes[pos..rs].iter().map(|&b| Item::Byte(b)));
            }
            let (from, to) = (pos.max(rs), end.min(re));
            // Cutting a run of the region in two would describe the piece by the classes of
            // the whole run: not allowed.
            if (from > rs && is_alnum(from - 1) && is_alnum(from))
                || (to < re && is_alnum(to - 1) && is_alnum(to))
            {
                return None;
            }
            abstract_items(&bytes[from..to], &mut items, self.digit_ranges);
            pos = to;
        }
        if pos < end {
            items.extend(bytes[pos..end].iter().map(|&b| Item::Byte(b)));
        }
        Some(items)
    }
}

/// Whether `bytes[start..end]` holds a digit [`mask_digits_into`] would mask.
pub fn has_masked_digit(bytes: &[u8], start: usize, end: usize) -> bool {
    (start..end.min(bytes.len())).any(|i| masks(bytes, i))
}

/// Whether the digit at `i` is one [`mask_digits_into`] masks: not right after an ASCII letter.
fn masks(bytes: &[u8], i: usize) -> bool {
    bytes[i].is_ascii_digit() && !(i > 0 && bytes[i - 1].is_ascii_alphabetic())
}

/// Copies `src` into `dst` (as long; the shorter of the two is copied) with every digit not
/// right after an ASCII letter read as `0`: what varies between the packets of most templates.
pub fn mask_digits_into(src: &[u8], dst: &mut [u8]) {
    let len = src.len().min(dst.len());
    let (src, dst) = (&src[..len], &mut dst[..len]);
    if len == 0 {
        return;
    }
    dst[0] = if masks(src, 0) { b'0' } else { src[0] };
    let mut i = 1;
    #[cfg(target_arch = "x86_64")]
    {
        // Thirty-two bytes at a time where the CPU can (std caches the answer), then sixteen.
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            i = unsafe { mask_blocks_avx2(src, dst, i) };
        }
        i = mask_blocks_sse2(src, dst, i);
    }
    for i in i..len {
        dst[i] = if masks(src, i) { b'0' } else { src[i] };
    }
}

/// The thirty-two-bytes-at-a-time part of [`mask_digits_into`], from `i` >= 1 (each block is
/// read with the byte before it); returns where the next part goes on. `src` and `dst` are as
/// long.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn mask_blocks_avx2(src: &[u8], dst: &mut [u8], mut i: usize) -> usize {
    use std::arch::x86_64::{
        __m256i, _mm256_and_si256, _mm256_andnot_si256, _mm256_blendv_epi8, _mm256_cmpgt_epi8,
        _mm256_loadu_si256, _mm256_or_si256, _mm256_set1_epi8, _mm256_storeu_si256,
    };
    let end = src.len().min(dst.len());
    i = i.max(1);
    while i + 32 <= end {
        // SAFETY: both loads read 32 bytes inside `src` (i >= 1 and i + 32 <= end), the store
        // writes 32 inside `dst` (as long).
        unsafe {
            let v = _mm256_loadu_si256(src.as_ptr().add(i).cast::<__m256i>());
            let before = _mm256_loadu_si256(src.as_ptr().add(i - 1).cast::<__m256i>());
            let digit = _mm256_and_si256(
                _mm256_cmpgt_epi8(v, _mm256_set1_epi8(b'0' as i8 - 1)),
                _mm256_cmpgt_epi8(_mm256_set1_epi8(b'9' as i8 + 1), v),
            );
            let lower = _mm256_or_si256(before, _mm256_set1_epi8(0x20));
            let letter = _mm256_and_si256(
                _mm256_cmpgt_epi8(lower, _mm256_set1_epi8(b'a' as i8 - 1)),
                _mm256_cmpgt_epi8(_mm256_set1_epi8(b'z' as i8 + 1), lower),
            );
            let masked = _mm256_andnot_si256(letter, digit);
            let out = _mm256_blendv_epi8(v, _mm256_set1_epi8(b'0' as i8), masked);
            _mm256_storeu_si256(dst.as_mut_ptr().add(i).cast::<__m256i>(), out);
        }
        i += 32;
    }
    i
}

/// The sixteen-bytes-at-a-time part of [`mask_digits_into`], as [`mask_blocks_avx2`].
#[cfg(target_arch = "x86_64")]
fn mask_blocks_sse2(src: &[u8], dst: &mut [u8], mut i: usize) -> usize {
    use std::arch::x86_64::{
        __m128i, _mm_and_si128, _mm_andnot_si128, _mm_loadu_si128, _mm_or_si128, _mm_set1_epi8,
        _mm_storeu_si128,
    };

    use crate::simd::in_range;
    let end = src.len().min(dst.len());
    i = i.max(1);
    while i + 16 <= end {
        // SAFETY: SSE2 is part of the x86-64 baseline; both loads read 16 bytes inside `src`
        // (i >= 1 and i + 16 <= end), the store writes 16 inside `dst` (as long).
        unsafe {
            let v = _mm_loadu_si128(src.as_ptr().add(i).cast::<__m128i>());
            let before = _mm_loadu_si128(src.as_ptr().add(i - 1).cast::<__m128i>());
            let digit = in_range(v, b'0', b'9');
            let letter = in_range(_mm_or_si128(before, _mm_set1_epi8(0x20)), b'a', b'z');
            let masked = _mm_andnot_si128(letter, digit);
            let out = _mm_or_si128(
                _mm_andnot_si128(masked, v),
                _mm_and_si128(masked, _mm_set1_epi8(b'0' as i8)),
            );
            _mm_storeu_si128(dst.as_mut_ptr().add(i).cast::<__m128i>(), out);
        }
        i += 16;
    }
    i
}

/// Copies `src` into `dst` (as long; the shorter of the two is copied) with every ASCII letter
/// and digit read as `x`: where a payload's runs of letters and digits are, whatever they hold.
pub fn runs_into(src: &[u8], dst: &mut [u8]) {
    let len = src.len().min(dst.len());
    let (src, dst) = (&src[..len], &mut dst[..len]);
    let mut i = 0;
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{
            __m128i, _mm_and_si128, _mm_andnot_si128, _mm_loadu_si128, _mm_or_si128, _mm_set1_epi8,
            _mm_storeu_si128,
        };

        use crate::simd::in_range;
        while i + 16 <= len {
            // SAFETY: SSE2 is part of the x86-64 baseline; the load reads 16 bytes inside `src`,
            // the store writes 16 inside `dst` (as long).
            unsafe {
                let v = _mm_loadu_si128(src.as_ptr().add(i).cast::<__m128i>());
                let alnum = _mm_or_si128(
                    in_range(v, b'0', b'9'),
                    in_range(_mm_or_si128(v, _mm_set1_epi8(0x20)), b'a', b'z'),
                );
                let out = _mm_or_si128(
                    _mm_andnot_si128(alnum, v),
                    _mm_and_si128(alnum, _mm_set1_epi8(b'x' as i8)),
                );
                _mm_storeu_si128(dst.as_mut_ptr().add(i).cast::<__m128i>(), out);
            }
            i += 16;
        }
    }
    for i in i..len {
        dst[i] = if src[i].is_ascii_alphanumeric() {
            b'x'
        } else {
            src[i]
        };
    }
}

/// In [`KeyBuilder::free_runs`]'s fixed bytes: any digit.
pub const ANY_DIGITS: u8 = 1;

/// Whether `payload` has the byte `fixed` has wherever that is a letter or digit, and a digit
/// wherever it is [`ANY_DIGITS`] (`fixed` as long).
pub fn has_fixed(payload: &[u8], fixed: &[u8]) -> bool {
    if payload.len() != fixed.len() {
        return false;
    }
    let mut i = 0;
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{
            __m128i, _mm_and_si128, _mm_andnot_si128, _mm_cmpeq_epi8, _mm_loadu_si128,
            _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8, _mm_setzero_si128,
        };

        use crate::simd::in_range;
        while i + 16 <= payload.len() {
            // SAFETY: SSE2 is part of the x86-64 baseline; both loads read 16 bytes inside
            // slices of the same length.
            let same = unsafe {
                let p = _mm_loadu_si128(payload.as_ptr().add(i).cast::<__m128i>());
                let f = _mm_loadu_si128(fixed.as_ptr().add(i).cast::<__m128i>());
                let any = _mm_cmpeq_epi8(f, _mm_set1_epi8(ANY_DIGITS as i8));
                let digit = _mm_and_si128(any, in_range(p, b'0', b'9'));
                let same = _mm_andnot_si128(any, _mm_cmpeq_epi8(p, f));
                _mm_movemask_epi8(_mm_or_si128(
                    _mm_or_si128(same, digit),
                    _mm_cmpeq_epi8(f, _mm_setzero_si128()),
                ))
            };
            if same != 0xffff {
                return false;
            }
            i += 16;
        }
    }
    (i..payload.len()).all(|i| match fixed[i] {
        0 => true,
        ANY_DIGITS => payload[i].is_ascii_digit(),
        f => payload[i] == f,
    })
}

/// A run the key abstracts, by offset and length; one with letters is a run a request of a
/// template may hold other letters in ([`KeyBuilder::free_runs`]).
#[derive(Clone, Copy, Debug)]
pub struct FreeRun {
    start: u16,
    len: u16,
    /// Its classes (after the cookie, if it starts with it).
    classes: u8,
    cookie: bool,
}

impl FreeRun {
    /// Whether the run at the same place in `payload` is abstracted in the key as the
    /// template's: the same classes, no kept word, and no cookie unless the template's had it
    /// (then it is one of the fixed bytes).
    pub fn admits(&self, payload: &[u8]) -> bool {
        let start = usize::from(self.start);
        let Some(run) = payload.get(start..start + usize::from(self.len)) else {
            return false;
        };
        if self.cookie {
            return classes_of(&run[COOKIE.len().min(run.len())..]) == self.classes;
        }
        let classes = classes_of(run);
        classes == self.classes
            && !(classes != DIGIT && is_kept_word(run))
            && !run.starts_with(COOKIE)
    }
}

fn literal(key: &mut Out, bytes: &[u8]) {
    if bytes.is_ascii() {
        key.extend(bytes);
        return;
    }
    for &b in bytes {
        if b >= 0x80 {
            key.push(TAG_ESCAPE);
        }
        key.push(b);
    }
}

#[inline]
fn push_run(key: &mut Out, classes: u8, mut len: usize, digit_ranges: bool) {
    if digit_ranges && classes == DIGIT && len > 0 {
        key.push(TAG_RUN | classes);
        key.push(digit_bucket(len));
        return;
    }
    while len > 0 {
        let piece = len.min(255);
        key.push(TAG_RUN | classes);
        key.push(piece as u8);
        len -= piece;
    }
}

/// The next token of `bytes` at `i`: a byte that is not a letter or digit (classes 0), or a
/// maximal run of letters and digits with the classes it holds.
#[inline]
fn token(bytes: &[u8], i: usize) -> (usize, u8) {
    let mut classes = CLASS[usize::from(bytes[i])];
    if classes == 0 {
        return (i + 1, 0);
    }
    let mut end = i + 1;
    while let Some(&b) = bytes.get(end) {
        let c = CLASS[usize::from(b)];
        if c == 0 {
            break;
        }
        classes |= c;
        end += 1;
    }
    (end, classes)
}

fn classes_of(run: &[u8]) -> u8 {
    run.iter().fold(0, |c, &b| c | CLASS[usize::from(b)])
}

/// A part of a message the key abstracts: `bytes[start..end]`.
#[derive(Clone, Copy)]
struct Part<'a> {
    bytes: &'a [u8],
    start: usize,
    end: usize,
}

/// Writes a part abstracted into `key`, and the runs it abstracts into `free`.
fn abstracted(key: &mut Out, part: Part<'_>, digit_ranges: bool, free: &mut Vec<FreeRun>) {
    let bytes = &part.bytes[..part.end];
    let mut i = part.start;
    while i < bytes.len() {
        let (start, (end, classes)) = (i, token(bytes, i));
        let run = &bytes[i..end];
        i = end;
        let (classes, cookie) = if classes == 0 {
            let b = run[0];
            if b >= 0x80 {
                key.push(TAG_ESCAPE);
            }
            key.push(b);
            continue;
        } else if classes != DIGIT && is_kept_word(run) {
            key.extend(run);
            continue;
        } else if let Some(rest) = run.strip_prefix(COOKIE) {
            key.extend(COOKIE);
            let classes = classes_of(rest);
            push_run(key, classes, rest.len(), digit_ranges);
            (classes, true)
        } else {
            push_run(key, classes, run.len(), digit_ranges);
            (classes, false)
        };
        free.push(FreeRun {
            start: start as u16,
            len: run.len() as u16,
            classes,
            cookie,
        });
    }
}

fn abstract_items(bytes: &[u8], items: &mut Vec<Item>, digit_ranges: bool) {
    let push_run = |items: &mut Vec<Item>, classes: u8, len: usize| {
        if len > 0 {
            let (min, max) = if digit_ranges && classes == DIGIT {
                DIGIT_LENGTHS[usize::from(digit_bucket(len))]
            } else {
                (len as u16, len as u16)
            };
            items.push(Item::Run { classes, min, max });
        }
    };
    let mut i = 0;
    while i < bytes.len() {
        let (end, classes) = token(bytes, i);
        let run = &bytes[i..end];
        i = end;
        if classes == 0 || (classes != DIGIT && is_kept_word(run)) {
            items.extend(run.iter().map(|&b| Item::Byte(b)));
        } else if let Some(rest) = run.strip_prefix(COOKIE) {
            items.extend(COOKIE.iter().map(|&b| Item::Byte(b)));
            push_run(items, classes_of(rest), rest.len());
        } else {
            push_run(items, classes, run.len());
        }
    }
}

/// A fast 64-bit hash of a key (not keyed: a colliding key is compared in full anyway). Four
/// lanes of eight bytes each, independent until the end: a single chain of multiplications
/// waits on each one's latency, about five cycles per eight bytes.
pub fn hash(key: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mix = |h: u64, w: u64| (h ^ w).wrapping_mul(K).rotate_left(29);
    let word = |c: &[u8]| u64::from_le_bytes(c.try_into().unwrap_or([0; 8]));
    let mut lanes = [
        (key.len() as u64).wrapping_mul(K),
        K,
        K.rotate_left(16),
        K.rotate_left(32),
    ];
    let mut blocks = key.chunks_exact(32);
    for block in &mut blocks {
        for (lane, c) in lanes.iter_mut().zip(block.chunks_exact(8)) {
            *lane = mix(*lane, word(c));
        }
    }
    let rest = blocks.remainder();
    let mut words = rest.chunks_exact(8);
    for (lane, c) in lanes.iter_mut().zip(&mut words) {
        *lane = mix(*lane, word(c));
    }
    let mut tail = [0u8; 8];
    tail[..words.remainder().len()].copy_from_slice(words.remainder());
    let h =
        lanes[0] ^ lanes[1].rotate_left(16) ^ lanes[2].rotate_left(32) ^ lanes[3].rotate_left(48);
    let h = (h ^ u64::from_le_bytes(tail)).wrapping_mul(K);
    h ^ (h >> 32)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A fixed sequence of numbers below each bound asked for (xorshift), for varying inputs.
    pub fn below() -> impl FnMut(usize) -> usize {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        move |n| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        }
    }

    #[test]
    fn kept_words_are_the_list_in_any_case() {
        let listed = |run: &[u8]| KEPT_WORDS.iter().any(|w| run.eq_ignore_ascii_case(w));
        let mut below = below();
        for word in KEPT_WORDS {
            assert!(is_kept_word(word));
            assert!(is_kept_word(&word.to_ascii_uppercase()));
            // Each letter's case flipped, and each letter changed: words of the same signature
            // that are not kept, too.
            for i in 0..word.len() {
                let mut other = word.to_vec();
                other[i] = other[i].to_ascii_uppercase();
                assert!(is_kept_word(&other), "{other:?}");
                other[i] = b'a' + (other[i].to_ascii_lowercase().wrapping_sub(b'a') + 1) % 26;
                assert_eq!(is_kept_word(&other), listed(&other), "{other:?}");
            }
            assert!(!is_kept_word(&word[..word.len() - 1]) || listed(&word[..word.len() - 1]));
        }
        // Random runs of letters and digits, short enough to be looked up.
        let alphabet = b"abcdeipstuABSTn0456";
        for _ in 0..200_000 {
            let run: Vec<u8> = (0..1 + below(12))
                .map(|_| alphabet[below(alphabet.len())])
                .collect();
            assert_eq!(is_kept_word(&run), listed(&run), "{run:?}");
        }
    }

    fn key(payload: &[u8]) -> Vec<u8> {
        KeyBuilder::default()
            .build(&SipMessage::parse(payload))
            .unwrap()
            .to_vec()
    }

    #[test]
    fn random_parts_share_a_key_structure_does_not() {
        let a = key(b"OPTIONS sip:100@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-123;rport\r\nCall-ID: 4f3a\r\nUser-Agent: qrs\r\n\r\n");
        let b = key(b"OPTIONS sip:200@10.9.8.77 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.222:5061;branch=z9hG4bK-98;rport\r\nCall-ID: 1b2c\r\nUser-Agent: xyz\r\n\r\n");
        assert_eq!(a, b);
        for other in [
            // A keyword changed, in any case.
            &b"OPTIONS sip:100@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;Branch=z9hG4bK-123;rport\r\nCall-ID: 4f3a\r\nUser-Agent: qrs\r\n\r\n"[..],
            // A run's length (a run of letters; digits are known by a range of lengths).
            b"OPTIONS sip:100@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-123;rport\r\nCall-ID: 4f3a\r\nUser-Agent: qrst\r\n\r\n",
            b"OPTIONS sip:100@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-123456;rport\r\nCall-ID: 4f3a\r\nUser-Agent: qrs\r\n\r\n",
            b"OPTIONS sip:100@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-1234;rport\r\nCall-ID: 4f3a\r\nUser-Agent: qrs\r\n\r\n",
            // A run's classes.
            b"OPTIONS sip:100@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-123;rport\r\nCall-ID: 4g3a\r\nUser-Agent: qrs\r\n\r\n",
            // A name's case, the spacing, the line ending.
            b"OPTIONS sip:100@192.0.2.1 SIP/2.0\r\nvia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-123;rport\r\nCall-ID: 4f3a\r\nUser-Agent: qrs\r\n\r\n",
            b"OPTIONS sip:100@192.0.2.1 SIP/2.0\r\nVia:  SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-123;rport\r\nCall-ID: 4f3a\r\nUser-Agent: qrs\r\n\r\n",
            b"OPTIONS sip:100@192.0.2.1 SIP/2.0\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-123;rport\r\nCall-ID: 4f3a\r\nUser-Agent: qrs\r\n\r\n",
            // The method and version.
            b"OPTIONs sip:100@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-123;rport\r\nCall-ID: 4f3a\r\nUser-Agent: qrs\r\n\r\n",
        ] {
            assert_ne!(a, key(other), "{}", String::from_utf8_lossy(other));
        }
    }

    #[test]
    fn keeps_every_template_keyword_in_any_case() {
        for k in crate::fingerprint::template::KEYWORDS {
            assert!(is_kept_word(k), "{}", String::from_utf8_lossy(k));
            assert!(is_kept_word(&k.to_ascii_uppercase()));
            assert!(is_kept_word(&k.to_ascii_lowercase()));
            let mut longer = k.to_vec();
            longer.push(b'x');
            assert!(!is_kept_word(&longer));
        }
        assert!(!is_kept_word(b"friendly"));
        assert!(!is_kept_word(b"sdq"));
    }

    #[test]
    fn masks_as_the_byte_loop_does() {
        // Digits, letters (both cases, and the bytes beside them in ASCII), high bytes, around
        // the 16- and 32-byte blocks.
        let alphabet = b"0123456789aZz@[`{/:\x80\xff -";
        let mut random = below();
        for _ in 0..4000 {
            let len = random(100);
            let bytes: Vec<u8> = (0..len).map(|_| alphabet[random(alphabet.len())]).collect();
            let digit_after_letter =
                |i: usize| i > 0 && bytes[i - 1].is_ascii_alphabetic() && bytes[i].is_ascii_digit();
            let expected: Vec<u8> = (0..len)
                .map(|i| match bytes[i] {
                    b'0'..=b'9' if !digit_after_letter(i) => b'0',
                    b => b,
                })
                .collect();
            let mut masked = vec![0xaa; len];
            mask_digits_into(&bytes, &mut masked);
            assert_eq!(masked, expected, "{bytes:?}");
            let start = random(len + 1);
            let end = start + random(len - start + 1);
            assert_eq!(
                has_masked_digit(&bytes, start, end),
                (start..end).any(|i| bytes[i].is_ascii_digit() && !digit_after_letter(i))
            );
        }
    }

    #[test]
    fn runs_and_fixed_bytes_as_the_byte_loop_does() {
        let alphabet = b"0123456789aZz@[`{/:\x80\xff -\x01\x00";
        let mut random = below();
        for _ in 0..4000 {
            let len = random(100);
            let bytes: Vec<u8> = (0..len).map(|_| alphabet[random(alphabet.len())]).collect();
            let mut runs = vec![0xaa; len];
            runs_into(&bytes, &mut runs);
            let expected: Vec<u8> = (bytes.iter())
                .map(|&b| if b.is_ascii_alphanumeric() { b'x' } else { b })
                .collect();
            assert_eq!(runs, expected, "{bytes:?}");
            // Fixed bytes of another payload: its letters and digits, some of them free, some
            // digits as any digit; and the payload changed in a byte or not.
            let mut fixed: Vec<u8> = (bytes.iter())
                .map(|&b| match (b.is_ascii_alphanumeric(), random(4)) {
                    (true, 0) => 0,
                    (true, 1) if b.is_ascii_digit() => ANY_DIGITS,
                    (true, _) => b,
                    (false, _) => 0,
                })
                .collect();
            let mut payload = bytes.clone();
            if len > 0 && random(2) == 0 {
                payload[random(len)] = alphabet[random(alphabet.len())];
            }
            let expected = (0..len).all(|i| match fixed[i] {
                0 => true,
                ANY_DIGITS => payload[i].is_ascii_digit(),
                f => payload[i] == f,
            });
            assert_eq!(
                has_fixed(&payload, &fixed),
                expected,
                "{payload:?} {fixed:?}"
            );
            fixed.push(0);
            assert!(!has_fixed(&payload, &fixed));
        }
    }

    #[test]
    fn escapes_high_bytes() {
        // A literal 0x82 byte must not read as a run tag.
        let a = key(b"\x82\x05");
        let b = key(b"\x01a");
        assert_ne!(a, b);
    }

    #[test]
    fn items_of_fields() {
        let payload = b"OPTIONS sip:100@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-123;rport\r\nContent-Length:  0\r\n\r\n";
        let msg = SipMessage::parse(payload);
        let mut builder = KeyBuilder::default();
        builder.build(&msg).unwrap();
        let via = msg.header(crate::sip::HeaderName::Via).unwrap();
        let params = &via.value[via.value.iter().position(|&b| b == b';').unwrap() + 1..];
        let items = builder.items(&msg, params).unwrap();
        let mut expect: Vec<Item> = b"branch=z9hG4bK-".iter().map(|&b| Item::Byte(b)).collect();
        expect.push(Item::Run {
            classes: DIGIT,
            min: 1,
            max: 3,
        });
        expect.extend(b";rport".iter().map(|&b| Item::Byte(b)));
        assert_eq!(items, expect);
        // The whole line: name and spacing kept, value abstracted.
        let cl = msg
            .header(crate::sip::HeaderName::ContentLength)
            .unwrap()
            .line;
        let items = builder.items(&msg, cl).unwrap();
        assert_eq!(items.len(), "Content-Length:  ".len() + 1);
        // A piece of a run is not pinned down by the key.
        assert_eq!(builder.items(&msg, &params[16..17]), None);
    }
}
