//! The message parser: start line, header spans in wire order, body. Zero-copy and allocation-free:
//! header positions go into a fixed array, extra headers are counted, never stored.
//!
//! Nothing here rejects a message: malformed lines, odd spacing and missing line endings are what
//! tells one scanner from another, so they are kept and flagged.

use std::mem::MaybeUninit;

use super::{
    classify::{PayloadKind, classify_other},
    headers::{HeaderName, is_token_byte},
    scan::Scanner,
};

/// Headers kept per message. SIP requests from scanners carry 8 to 16; more than 64 is itself
/// a sign of a hostile or broken sender and only the count of the rest is kept.
pub const MAX_HEADERS: usize = 64;

/// Flags of one header line.
pub mod header_flags {
    /// Continued on following lines that start with whitespace (RFC 3261 §7.3.1 folding).
    pub const FOLDED: u8 = 1 << 0;
    /// The line has no colon at all; `value` is the whole line.
    pub const NO_COLON: u8 = 1 << 1;
    /// The name holds characters outside RFC 3261 `token` (e.g. `User Agent`).
    pub const NAME_NOT_TOKEN: u8 = 1 << 2;
    /// Whitespace between the name and the colon (`Via : ...`).
    pub const SPACE_BEFORE_COLON: u8 = 1 << 3;
    /// The line was cut by the end of the captured bytes.
    pub const PARTIAL: u8 = 1 << 4;
    /// The line ended with a bare LF rather than CRLF.
    pub const BARE_LF: u8 = 1 << 5;
}

/// Flags of a whole message.
pub mod message_flags {
    /// At least one line ended with CRLF.
    pub const CRLF: u16 = 1 << 0;
    /// At least one line ended with a bare LF.
    pub const BARE_LF: u16 = 1 << 1;
    /// The blank line that ends the headers was seen.
    pub const HEADERS_COMPLETE: u16 = 1 << 2;
    /// The capture says the payload was cut (prefix length or frame end).
    pub const CAPTURE_CUT: u16 = 1 << 3;
    /// The start line is not `METHOD SP URI SP SIP/x.y` or `SIP/x.y SP code SP reason`.
    pub const START_LINE_MALFORMED: u16 = 1 << 4;
    /// The last line has no line ending.
    pub const LAST_LINE_UNTERMINATED: u16 = 1 << 5;
}

#[derive(Clone, Copy, Debug, Default)]
struct Span {
    start: u32,
    end: u32,
}

impl Span {
    fn new(start: usize, end: usize) -> Self {
        // Inputs are capped at u32::MAX bytes in `parse_captured`, so these never truncate.
        Self {
            start: start as u32,
            end: end as u32,
        }
    }

    fn get(self, bytes: &[u8]) -> &[u8] {
        bytes
            .get(self.start as usize..self.end as usize)
            .unwrap_or_default()
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    name: HeaderName,
    compact: bool,
    flags: u8,
    line: Span,
    raw_name: Span,
    separator: Span,
    value: Span,
}

/// One header as it was on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header<'a> {
    pub name: HeaderName,
    /// The name as spelled, trimmed (`v`, `User Agent`, `Max_forwards`); empty for `NO_COLON`.
    pub raw_name: &'a [u8],
    /// The bytes between the colon and the value: `" "` normally, `"  "` for nmap's
    /// Content-Length, `""` for `Name:value`.
    pub separator: &'a [u8],
    /// The value, without trailing whitespace. Folded values keep their inner line breaks.
    pub value: &'a [u8],
    /// The whole line (all of its folded lines), without the final line ending.
    pub line: &'a [u8],
    /// The compact form (`v`, `f`, ...) was used.
    pub compact: bool,
    /// [`header_flags`] bits.
    pub flags: u8,
}

impl<'a> Header<'a> {
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// The name to show in a header order: canonical when known, raw otherwise.
    pub fn order_name(&self) -> &'a [u8] {
        match self.name {
            HeaderName::Other => self.raw_name,
            known => known.canonical().as_bytes(),
        }
    }
}

/// How lines ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineEndings {
    Crlf,
    Lf,
    Mixed,
    /// A single line without any line ending.
    None,
}

impl LineEndings {
    pub fn as_str(self) -> &'static str {
        match self {
            LineEndings::Crlf => "crlf",
            LineEndings::Lf => "lf",
            LineEndings::Mixed => "mixed",
            LineEndings::None => "none",
        }
    }
}

/// The first line of a SIP message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartLine<'a> {
    Request {
        method: &'a [u8],
        uri: &'a [u8],
        version: &'a [u8],
    },
    Response {
        version: &'a [u8],
        code: u16,
        reason: &'a [u8],
    },
    /// Not a SIP message (see [`SipMessage::kind`]).
    None,
}

#[derive(Clone, Copy, Debug, Default)]
enum StartKind {
    Request,
    Response,
    #[default]
    None,
}

/// A parsed payload. Borrows the captured bytes; costs no allocation.
#[derive(Clone)]
// C layout with the header slots last: the other fields start zeroed, and with the slots in
// between the compiler zeroes the whole 2 KB in one memset instead of leaving them unwritten.
#[repr(C)]
pub struct SipMessage<'a> {
    bytes: &'a [u8],
    kind: PayloadKind,
    start_kind: StartKind,
    start: [Span; 3],
    start_line: Span,
    status_code: u16,
    count: u8,
    overflow: u32,
    body_start: Option<u32>,
    flags: u16,
    /// The first `count` are initialized: a parse writes only the headers it finds, never the
    /// whole array (it is most of the struct's 2 KB).
    slots: [MaybeUninit<Slot>; MAX_HEADERS],
}

impl std::fmt::Debug for SipMessage<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SipMessage")
            .field("kind", &self.kind)
            .field("start_line", &self.start_line())
            .field("headers", &self.headers().collect::<Vec<_>>())
            .field("overflow", &self.overflow)
            .field("flags", &self.flags)
            .finish()
    }
}

fn find_byte(haystack: &[u8], needle: u8) -> Option<usize> {
    memchr::memchr(needle, haystack)
}

fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

impl<'a> SipMessage<'a> {
    /// Parses a complete payload.
    #[inline]
    pub fn parse(bytes: &'a [u8]) -> Self {
        Self::parse_captured(bytes, false)
    }

    /// Parses captured bytes; `cut` says the capture holds fewer bytes than the packet did
    /// ([`crate::record::Record::payload_truncated`]).
    // Inlined so that the message is built where the caller keeps it: returning 2 KB by value
    // from an outlined function costs a copy per message.
    #[inline]
    pub fn parse_captured(bytes: &'a [u8], cut: bool) -> Self {
        let mut msg = Self::unparsed(bytes, cut);
        msg.parse_all();
        msg
    }

    /// A message of `bytes` not parsed yet: [`SipMessage::parse_or_lay`] parses it where it is.
    /// (A message parsed in a function and returned is copied, 2 KB, where the caller keeps it,
    /// unless the function is inlined and the compiler sees through it; this way it never is.)
    #[inline]
    pub fn unparsed(bytes: &'a [u8], cut: bool) -> Self {
        let bytes = &bytes[..bytes.len().min(u32::MAX as usize)];
        SipMessage {
            bytes,
            kind: PayloadKind::Empty,
            start_kind: StartKind::None,
            start: [Span::default(); 3],
            start_line: Span::default(),
            status_code: 0,
            slots: [MaybeUninit::uninit(); MAX_HEADERS],
            count: 0,
            overflow: 0,
            body_start: None,
            flags: if cut { message_flags::CAPTURE_CUT } else { 0 },
        }
    }

    /// Parses the message's bytes (again, if it was parsed), or lays `layout` over them: a
    /// layout made from a message they differ from only where [`Layout`] says (the caller
    /// checks; other bytes give a message that does not describe them, but reads only inside
    /// them).
    pub fn parse_or_lay(&mut self, layout: Option<&Layout>) {
        let cut = self.flags & message_flags::CAPTURE_CUT;
        (self.kind, self.start_kind, self.start, self.start_line) = (
            PayloadKind::Empty,
            StartKind::None,
            [Span::default(); 3],
            Span::default(),
        );
        (
            self.status_code,
            self.count,
            self.overflow,
            self.body_start,
            self.flags,
        ) = (0, 0, 0, None, cut);
        match layout {
            Some(layout) => layout.lay_over(self),
            None => self.parse_all(),
        }
    }

    fn parse_all(&mut self) {
        let bytes = self.bytes;
        let mut scan = Scanner::new(bytes);
        let (first_end, next) = match scan.newline(0) {
            Some(lf) => (lf, lf + 1),
            None => {
                self.flags |= message_flags::LAST_LINE_UNTERMINATED;
                (bytes.len(), bytes.len())
            }
        };
        let mut line_end = first_end;
        if line_end > 0 && bytes[line_end - 1] == b'\r' {
            line_end -= 1;
            self.flags |= message_flags::CRLF;
        } else if next > first_end {
            self.flags |= message_flags::BARE_LF;
        }
        self.start_line = Span::new(0, line_end);
        if !self.parse_start_line(line_end) {
            self.kind = classify_other(bytes, &bytes[..line_end]);
            return;
        }
        self.parse_headers(next, &mut scan);
    }

    fn slots(&self) -> &[Slot] {
        let init = &self.slots[..usize::from(self.count)];
        // SAFETY: `push_header` writes slot `count` before incrementing `count`, and nothing
        // else changes `count`: the first `count` slots are initialized. MaybeUninit<Slot> and
        // Slot have the same layout.
        unsafe { &*(init as *const [MaybeUninit<Slot>] as *const [Slot]) }
    }

    fn last_slot_mut(&mut self) -> Option<&mut Slot> {
        let last = usize::from(self.count).checked_sub(1)?;
        // SAFETY: slot `count - 1` is initialized (see `slots`).
        Some(unsafe { self.slots[last].assume_init_mut() })
    }

    /// Fills the start line spans; false when the line is not a SIP start line.
    fn parse_start_line(&mut self, end: usize) -> bool {
        let line = &self.bytes[..end];
        if line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"SIP/") {
            let version_end = find_byte(line, b' ').unwrap_or(line.len());
            let rest_start = (version_end + 1).min(line.len());
            let rest = &line[rest_start..];
            let code_len = rest.iter().take_while(|b| b.is_ascii_digit()).count();
            let reason_start = (rest_start + code_len + 1).min(line.len());
            if code_len != 3 || (rest.len() > 3 && rest[3] != b' ') {
                self.flags |= message_flags::START_LINE_MALFORMED;
            }
            self.status_code = status_code(&rest[..code_len]);
            self.start = [
                Span::new(0, version_end),
                Span::new(rest_start, rest_start + code_len),
                Span::new(reason_start, line.len()),
            ];
            self.start_kind = StartKind::Response;
            self.kind = PayloadKind::SipResponse;
            return true;
        }
        let Some(method_end) = find_byte(line, b' ') else {
            return false;
        };
        if method_end == 0 || !line[..method_end].iter().all(|&b| is_token_byte(b)) {
            return false;
        }
        let uri_start = method_end + 1;
        let last_space = line.iter().rposition(|&b| b == b' ').unwrap_or(method_end);
        let version = &line[last_space + 1..];
        let sip_version = version.len() >= 4 && version[..4].eq_ignore_ascii_case(b"SIP/");
        if sip_version && last_space > method_end {
            let uri = &line[uri_start..last_space];
            if uri.is_empty() || uri.contains(&b' ') || version != b"SIP/2.0" {
                self.flags |= message_flags::START_LINE_MALFORMED;
            }
            self.start = [
                Span::new(0, method_end),
                Span::new(uri_start, last_space),
                Span::new(last_space + 1, line.len()),
            ];
        } else {
            // A request line cut before its version, or one without it, still names a SIP
            // URI: keep it as a (malformed) request rather than calling it text.
            let rest = &line[uri_start..];
            let sip_uri = rest.len() >= 4
                && (rest[..4].eq_ignore_ascii_case(b"sip:")
                    || rest[..4].eq_ignore_ascii_case(b"sips"));
            if !sip_uri {
                return false;
            }
            self.flags |= message_flags::START_LINE_MALFORMED;
            self.start = [
                Span::new(0, method_end),
                Span::new(uri_start, line.len()),
                Span::new(line.len(), line.len()),
            ];
        }
        self.start_kind = StartKind::Request;
        self.kind = PayloadKind::SipRequest;
        true
    }

    fn parse_headers(&mut self, mut pos: usize, scan: &mut Scanner<'_>) {
        let bytes = self.bytes;
        let cut = self.flags & message_flags::CAPTURE_CUT != 0;
        // Whether the previous header line was stored (so a folded line may extend it).
        let mut last_stored = false;
        while pos < bytes.len() {
            let (mut end, next, terminated) = match scan.newline(pos) {
                Some(lf) => (lf, lf + 1, true),
                None => (bytes.len(), bytes.len(), false),
            };
            let mut line_flags = 0u8;
            if end > pos && bytes[end - 1] == b'\r' {
                end -= 1;
                if terminated {
                    self.flags |= message_flags::CRLF;
                }
            } else if terminated {
                self.flags |= message_flags::BARE_LF;
                line_flags |= header_flags::BARE_LF;
            }
            if !terminated {
                self.flags |= message_flags::LAST_LINE_UNTERMINATED;
                if cut {
                    line_flags |= header_flags::PARTIAL;
                }
            }
            if end == pos {
                if terminated {
                    self.flags |= message_flags::HEADERS_COMPLETE;
                    self.body_start = Some(next as u32);
                }
                return;
            }
            if is_ws(bytes[pos])
                && last_stored
                && let Some(slot) = self.last_slot_mut()
            {
                slot.flags |= header_flags::FOLDED | line_flags;
                let value_end = trim_end(bytes, pos, end);
                if value_end > pos {
                    if slot.value.start == slot.value.end {
                        slot.value.start = skip_ws(bytes, pos, end) as u32;
                    }
                    slot.value.end = value_end as u32;
                }
                slot.line.end = end as u32;
            } else if is_ws(bytes[pos]) && !last_stored && self.count as usize >= MAX_HEADERS {
                // Continuation of a header past the limit: already counted.
            } else {
                last_stored = self.push_header(pos, end, line_flags, scan);
            }
            pos = next;
        }
    }

    /// Stores one header line; false when the array was full and it was only counted.
    fn push_header(
        &mut self,
        start: usize,
        end: usize,
        mut flags: u8,
        scan: &mut Scanner<'_>,
    ) -> bool {
        if usize::from(self.count) >= MAX_HEADERS {
            self.overflow = self.overflow.saturating_add(1);
            return false;
        }
        let bytes = self.bytes;
        let slot = match scan.colon(start, end) {
            None => Slot {
                name: HeaderName::Other,
                compact: false,
                flags: flags | header_flags::NO_COLON,
                line: Span::new(start, end),
                raw_name: Span::new(start, start),
                separator: Span::new(start, start),
                value: Span::new(start, trim_end(bytes, start, end)),
            },
            Some(colon) => {
                let name_end = trim_end(bytes, start, colon);
                if name_end < colon {
                    flags |= header_flags::SPACE_BEFORE_COLON;
                }
                let raw_name = &bytes[start..name_end];
                let (name, compact) = HeaderName::lookup(raw_name);
                // A known name is spelled in token characters: only unknown ones need the check.
                if name == HeaderName::Other
                    && (raw_name.is_empty() || !raw_name.iter().all(|&b| is_token_byte(b)))
                {
                    flags |= header_flags::NAME_NOT_TOKEN;
                }
                let value_start = skip_ws(bytes, colon + 1, end);
                Slot {
                    name,
                    compact,
                    flags,
                    line: Span::new(start, end),
                    raw_name: Span::new(start, name_end),
                    separator: Span::new(colon + 1, value_start),
                    value: Span::new(value_start, trim_end(bytes, value_start, end)),
                }
            }
        };
        self.slots[usize::from(self.count)] = MaybeUninit::new(slot);
        self.count += 1;
        true
    }

    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    pub fn kind(&self) -> PayloadKind {
        self.kind
    }

    pub fn is_sip(&self) -> bool {
        self.kind.is_sip()
    }

    pub fn start_line(&self) -> StartLine<'a> {
        let b = self.bytes;
        match self.start_kind {
            StartKind::Request => StartLine::Request {
                method: self.start[0].get(b),
                uri: self.start[1].get(b),
                version: self.start[2].get(b),
            },
            StartKind::Response => StartLine::Response {
                version: self.start[0].get(b),
                code: self.status_code,
                reason: self.start[2].get(b),
            },
            StartKind::None => StartLine::None,
        }
    }

    /// The first line as it was, without its line ending.
    pub fn first_line(&self) -> &'a [u8] {
        self.start_line.get(self.bytes)
    }

    pub fn method(&self) -> Option<&'a [u8]> {
        match self.start_line() {
            StartLine::Request { method, .. } => Some(method),
            _ => None,
        }
    }

    pub fn request_uri(&self) -> Option<&'a [u8]> {
        match self.start_line() {
            StartLine::Request { uri, .. } => Some(uri),
            _ => None,
        }
    }

    pub fn status_code(&self) -> Option<u16> {
        match self.start_kind {
            StartKind::Response => Some(self.status_code),
            _ => None,
        }
    }

    /// Headers in wire order (at most [`MAX_HEADERS`]).
    pub fn headers(&self) -> impl ExactSizeIterator<Item = Header<'a>> + '_ {
        self.slots().iter().map(|slot| self.view(slot))
    }

    fn view(&self, slot: &Slot) -> Header<'a> {
        let b = self.bytes;
        Header {
            name: slot.name,
            raw_name: slot.raw_name.get(b),
            separator: slot.separator.get(b),
            value: slot.value.get(b),
            line: slot.line.get(b),
            compact: slot.compact,
            flags: slot.flags,
        }
    }

    /// Headers stored.
    pub fn header_count(&self) -> usize {
        usize::from(self.count)
    }

    /// Header lines seen past [`MAX_HEADERS`] and not stored.
    pub fn headers_overflow(&self) -> u32 {
        self.overflow
    }

    /// The first header with this name (compact forms included).
    pub fn header(&self, name: HeaderName) -> Option<Header<'a>> {
        self.slots()
            .iter()
            .find(|s| s.name == name)
            .map(|s| self.view(s))
    }

    /// The first header whose raw name equals `raw`, case-insensitively: for names the table
    /// does not know, malformed ones included.
    pub fn header_by_raw_name(&self, raw: &[u8]) -> Option<Header<'a>> {
        self.headers()
            .find(|h| h.raw_name.eq_ignore_ascii_case(raw))
    }

    pub fn header_value(&self, name: HeaderName) -> Option<&'a [u8]> {
        self.header(name).map(|h| h.value)
    }

    pub fn flags(&self) -> u16 {
        self.flags
    }

    pub fn has(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }

    /// The blank line ending the headers was seen.
    pub fn headers_complete(&self) -> bool {
        self.has(message_flags::HEADERS_COMPLETE)
    }

    /// The message is incomplete: the capture says it was cut, its last header line has no
    /// ending, or the body is shorter than its Content-Length.
    pub fn truncated(&self) -> bool {
        truncated(self.flags, self.kind, self.body().map(<[u8]>::len), || {
            self.content_length()
        })
    }

    /// The bytes after the blank line; `None` when the blank line was not seen.
    pub fn body(&self) -> Option<&'a [u8]> {
        self.body_start
            .and_then(|start| self.bytes.get(start as usize..))
    }

    /// Content-Length, when present and a number.
    pub fn content_length(&self) -> Option<u32> {
        content_length(self.slots(), self.bytes)
    }

    pub fn line_endings(&self) -> LineEndings {
        match (
            self.has(message_flags::CRLF),
            self.has(message_flags::BARE_LF),
        ) {
            (true, false) => LineEndings::Crlf,
            (false, true) => LineEndings::Lf,
            (true, true) => LineEndings::Mixed,
            (false, false) => LineEndings::None,
        }
    }
}

/// A parse without the bytes it was made from: what every payload that differs from that one
/// only in the values of digits inside header values, the request URI, the status line after
/// the version and the body parses into. The parser reads no digit's value there (it splits on
/// punctuation, whitespace and line ends, and compares names outside those parts), so such a
/// payload has its lines, headers and flags at the same offsets; only the status code is read
/// again ([`SipMessage::parse_or_lay`]).
#[derive(Clone, Debug)]
pub struct Layout {
    kind: PayloadKind,
    start_kind: StartKind,
    start: [Span; 3],
    start_line: Span,
    overflow: u32,
    body_start: Option<u32>,
    flags: u16,
    slots: Box<[Slot]>,
}

impl SipMessage<'_> {
    /// This message's parse, for [`SipMessage::parse_or_lay`].
    pub fn layout(&self) -> Layout {
        Layout {
            kind: self.kind,
            start_kind: self.start_kind,
            start: self.start,
            start_line: self.start_line,
            overflow: self.overflow,
            body_start: self.body_start,
            flags: self.flags,
            slots: self.slots().into(),
        }
    }
}

impl Layout {
    /// Whether the message of `bytes` (laid over, [`SipMessage::parse_or_lay`]) is truncated:
    /// it depends on the value of the Content-Length, the one thing the layout does not say.
    pub fn truncated(&self, bytes: &[u8]) -> bool {
        let body_len = self
            .body_start
            .and_then(|start| bytes.len().checked_sub(start as usize));
        truncated(self.flags, self.kind, body_len, || {
            content_length(&self.slots, bytes)
        })
    }

    /// Writes the layout into a message of its bytes, as `parse_all` would.
    fn lay_over(&self, msg: &mut SipMessage<'_>) {
        msg.kind = self.kind;
        msg.start_kind = self.start_kind;
        msg.start = self.start;
        msg.start_line = self.start_line;
        msg.overflow = self.overflow;
        msg.body_start = self.body_start;
        msg.flags = self.flags;
        for (slot, kept) in msg.slots.iter_mut().zip(self.slots.iter()) {
            *slot = MaybeUninit::new(*kept);
        }
        msg.count = self.slots.len() as u8;
        if let StartKind::Response = self.start_kind {
            msg.status_code = status_code(self.start[1].get(msg.bytes));
        }
    }
}

/// The value of the first Content-Length header among `slots`, as a number.
fn content_length(slots: &[Slot], bytes: &[u8]) -> Option<u32> {
    let slot = slots.iter().find(|s| s.name == HeaderName::ContentLength)?;
    parse_u32(slot.value.get(bytes))
}

/// [`SipMessage::truncated`], from the parts of a parse it reads.
fn truncated(
    flags: u16,
    kind: PayloadKind,
    body_len: Option<usize>,
    content_length: impl FnOnce() -> Option<u32>,
) -> bool {
    let has = |flag| flags & flag != 0;
    if has(message_flags::CAPTURE_CUT) {
        return true;
    }
    if !kind.is_sip() {
        return false;
    }
    if has(message_flags::LAST_LINE_UNTERMINATED) && !has(message_flags::HEADERS_COMPLETE) {
        return true;
    }
    match (body_len, content_length) {
        (Some(body), declared) => declared().is_some_and(|d| (body as u64) < u64::from(d)),
        _ => false,
    }
}

/// The status code of the code digits as the start line has them (the first three).
fn status_code(digits: &[u8]) -> u16 {
    digits
        .iter()
        .take(3)
        .fold(0u16, |n, d| n * 10 + u16::from(d.wrapping_sub(b'0')))
}

/// Parses a decimal u32 (surrounding whitespace allowed); `None` on anything else or overflow.
pub fn parse_u32(bytes: &[u8]) -> Option<u32> {
    let bytes = bytes.trim_ascii();
    if bytes.is_empty() || bytes.len() > 10 {
        return None;
    }
    let mut n: u64 = 0;
    for &b in bytes {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(b - b'0');
    }
    u32::try_from(n).ok()
}

fn skip_ws(bytes: &[u8], mut pos: usize, end: usize) -> usize {
    while pos < end && is_ws(bytes[pos]) {
        pos += 1;
    }
    pos
}

fn trim_end(bytes: &[u8], start: usize, mut end: usize) -> usize {
    while end > start && matches!(bytes[end - 1], b' ' | b'\t' | b'\r') {
        end -= 1;
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    const SVMAP_PY2: &[u8] = b"OPTIONS sip:100@192.0.2.1 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-1047900479;rport\r\n\
Content-Length: 0\r\n\
From: \"sipvicious\"<sip:100@1.1.1.1> tag=34353131313634613133633401353835363538393133\r\n\
Accept: application/sdp\r\n\
User-Agent: friendly-scanner\r\n\
To: \"sipvicious\"<sip:100@1.1.1.1>\r\n\
Contact: sip:100@127.0.0.1:5060\r\n\
CSeq: 1 OPTIONS\r\n\
Call-ID: 965192181434457134540520\r\n\
Max-Forwards: 70\r\n\r\n";

    #[test]
    fn request_line_and_order() {
        let m = SipMessage::parse(SVMAP_PY2);
        assert_eq!(m.kind(), PayloadKind::SipRequest);
        assert_eq!(
            m.start_line(),
            StartLine::Request {
                method: b"OPTIONS",
                uri: b"sip:100@192.0.2.1",
                version: b"SIP/2.0"
            }
        );
        let order: Vec<&[u8]> = m.headers().map(|h| h.order_name()).collect();
        assert_eq!(
            order,
            [
                &b"Via"[..],
                b"Content-Length",
                b"From",
                b"Accept",
                b"User-Agent",
                b"To",
                b"Contact",
                b"CSeq",
                b"Call-ID",
                b"Max-Forwards"
            ]
        );
        assert!(m.headers_complete());
        assert!(!m.truncated());
        assert_eq!(m.body(), Some(&b""[..]));
        assert_eq!(m.line_endings(), LineEndings::Crlf);
        assert_eq!(m.content_length(), Some(0));
        assert_eq!(
            m.header_value(HeaderName::UserAgent),
            Some(&b"friendly-scanner"[..])
        );
    }

    #[test]
    fn parsed_again_or_laid_over_as_parsed() {
        let mut msg = SipMessage::parse(SVMAP_PY2);
        msg.parse_or_lay(None);
        assert_eq!(
            format!("{msg:?}"),
            format!("{:?}", SipMessage::parse(SVMAP_PY2))
        );
        // The same template, other digits (the Content-Length's too: truncated, and said so).
        let layout = SipMessage::parse(SVMAP_PY2).layout();
        for (from, to) in [
            ("100@192.0.2.1", "377@198.5.1.8"),
            ("Length: 0", "Length: 9"),
        ] {
            let other = String::from_utf8_lossy(SVMAP_PY2).replace(from, to);
            let parsed = SipMessage::parse(other.as_bytes());
            let mut laid = SipMessage::parse(SVMAP_PY2);
            laid.bytes = other.as_bytes();
            laid.parse_or_lay(Some(&layout));
            assert_eq!(format!("{laid:?}"), format!("{parsed:?}"));
            assert_eq!(layout.truncated(other.as_bytes()), parsed.truncated());
            assert_eq!(laid.truncated(), to.ends_with('9'));
        }
        let response = b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n";
        let mut laid = SipMessage::unparsed(b"SIP/2.0 487 OK\r\nContent-Length: 0\r\n\r\n", false);
        laid.parse_or_lay(Some(&SipMessage::parse(response).layout()));
        assert_eq!(laid.status_code(), Some(487));
    }

    #[test]
    fn status_line() {
        let m = SipMessage::parse(b"SIP/2.0 404 Not Found\r\nVia: x\r\n\r\n");
        assert_eq!(m.kind(), PayloadKind::SipResponse);
        assert_eq!(m.status_code(), Some(404));
        assert!(matches!(
            m.start_line(),
            StartLine::Response {
                reason: b"Not Found",
                code: 404,
                ..
            }
        ));
        let m = SipMessage::parse(b"SIP/2.0 20x\r\n\r\n");
        assert!(m.has(message_flags::START_LINE_MALFORMED));
    }

    #[test]
    fn compact_forms_and_spacing() {
        let m = SipMessage::parse(
            b"OPTIONS sip:a@b SIP/2.0\r\nv: SIP/2.0/UDP x\r\nf:<sip:a@b>\r\nContent-Length:  0\r\n\r\n",
        );
        let h: Vec<_> = m.headers().collect();
        assert_eq!(h[0].name, HeaderName::Via);
        assert!(h[0].compact);
        assert_eq!(h[0].raw_name, b"v");
        assert_eq!(h[1].name, HeaderName::From);
        assert_eq!(h[1].separator, b"");
        assert_eq!(h[1].value, b"<sip:a@b>");
        assert_eq!(h[2].separator, b"  ");
        assert_eq!(h[2].line, b"Content-Length:  0");
        assert_eq!(
            m.header(HeaderName::From).map(|h| h.value),
            Some(&b"<sip:a@b>"[..])
        );
    }

    #[test]
    fn malformed_lines_kept() {
        let m = SipMessage::parse(
            b"REGISTER sip:x SIP/2.0\r\nMax_forwards: 70\r\nUser Agent: SIPScan 1.0\r\njunk line\r\nVia : y\r\n\r\n",
        );
        let h: Vec<_> = m.headers().collect();
        assert_eq!(h.len(), 4);
        assert_eq!(h[0].raw_name, b"Max_forwards");
        assert_eq!(h[0].name, HeaderName::Other);
        assert!(!h[0].has(header_flags::NAME_NOT_TOKEN));
        assert_eq!(h[1].raw_name, b"User Agent");
        assert!(h[1].has(header_flags::NAME_NOT_TOKEN));
        assert_eq!(h[1].value, b"SIPScan 1.0");
        assert!(h[2].has(header_flags::NO_COLON));
        assert_eq!(h[2].value, b"junk line");
        assert_eq!(h[3].name, HeaderName::Via);
        assert!(h[3].has(header_flags::SPACE_BEFORE_COLON));
        assert_eq!(
            m.header_by_raw_name(b"user agent").map(|h| h.value),
            Some(&b"SIPScan 1.0"[..])
        );
    }

    #[test]
    fn folded_lines_and_bare_lf() {
        let m = SipMessage::parse(
            b"OPTIONS sip:a SIP/2.0\nSubject: first\n  second\n\tthird\nTo: t\n\n",
        );
        assert_eq!(m.line_endings(), LineEndings::Lf);
        let h: Vec<_> = m.headers().collect();
        assert_eq!(h.len(), 2);
        assert!(h[0].has(header_flags::FOLDED));
        assert_eq!(h[0].value, b"first\n  second\n\tthird");
        assert_eq!(h[1].value, b"t");
        assert!(m.headers_complete());
    }

    #[test]
    fn truncation() {
        let full = SVMAP_PY2;
        let cut = &full[..200];
        let m = SipMessage::parse_captured(cut, true);
        assert!(m.truncated());
        assert!(!m.headers_complete());
        let last = m.headers().last().unwrap();
        assert!(last.has(header_flags::PARTIAL));
        // Without the capture's word, an unterminated header section still reads as cut.
        assert!(SipMessage::parse(cut).truncated());
        // A body shorter than Content-Length is cut too.
        let m = SipMessage::parse(b"INVITE sip:a SIP/2.0\r\nContent-Length: 10\r\n\r\nv=0");
        assert!(m.truncated());
    }

    #[test]
    fn no_final_blank_line_is_not_truncation() {
        let m = SipMessage::parse(b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 0\r\n");
        assert!(!m.headers_complete());
        assert!(!m.truncated());
        assert_eq!(m.body(), None);
    }

    #[test]
    fn header_limit_counts_overflow() {
        let mut p = b"OPTIONS sip:a SIP/2.0\r\n".to_vec();
        for i in 0..10_000 {
            p.extend_from_slice(format!("X-H{i}: v\r\n  folded\r\n").as_bytes());
        }
        p.extend_from_slice(b"\r\nbody");
        let m = SipMessage::parse(&p);
        assert_eq!(m.header_count(), MAX_HEADERS);
        assert_eq!(m.headers_overflow(), 10_000 - MAX_HEADERS as u32);
        assert_eq!(m.body(), Some(&b"body"[..]));
        assert_eq!(m.headers().last().unwrap().value, b"v\r\n  folded");
    }

    #[test]
    fn non_sip_and_partial_start_lines() {
        assert_eq!(
            SipMessage::parse(b"OPTIONS").kind(),
            PayloadKind::BareMethod
        );
        assert_eq!(SipMessage::parse(b"").kind(), PayloadKind::Empty);
        assert_eq!(
            SipMessage::parse(b"GET / HTTP/1.0\r\n\r\n").kind(),
            PayloadKind::Http
        );
        let m = SipMessage::parse_captured(b"OPTIONS sip:100@192.0.2", true);
        assert_eq!(m.kind(), PayloadKind::SipRequest);
        assert!(m.has(message_flags::START_LINE_MALFORMED));
        assert!(m.truncated());
        assert_eq!(m.request_uri(), Some(&b"sip:100@192.0.2"[..]));
    }

    #[test]
    fn never_panics_on_odd_bytes() {
        let cases: &[&[u8]] = &[
            b"\n",
            b"\r\n\r\n",
            b"SIP/",
            b"SIP/2.0",
            b"SIP/2.0 ",
            b"A B",
            b"A  SIP/2.0",
            b"OPTIONS sip:x SIP/2.0\r\n\r",
            b"OPTIONS sip:x SIP/2.0\r\n :\r\n",
            b"OPTIONS sip:x SIP/2.0\r\n\t\r\n",
            b"OPTIONS sip:x SIP/2.0\r\n:\r\n",
            b"OPTIONS sip:x SIP/2.0\r\nA:\r\n \r\n\r\n",
            b"\xff\xfe\x00\r\n\x00:",
        ];
        for c in cases {
            let m = SipMessage::parse(c);
            let _ = (m.headers().count(), m.body(), m.truncated(), m.start_line());
            for cut in 0..c.len() {
                let m = SipMessage::parse_captured(&c[..cut], true);
                let _ = (m.headers().count(), m.truncated());
            }
        }
    }
}
