//! What a rule can look at: the packet, the parsed message, and values derived from them,
//! each reachable by a stable field name (`via.branch`, `header:User-Agent`, `ip.ttl`...).

use std::{cell::OnceCell, net::IpAddr};

use crate::{
    event::Event,
    record::Transport,
    sip::{
        HeaderName, SipMessage,
        fields::{CSeq, NameAddr, Uri, Via, sdp_line},
        message::parse_u32,
        places::{CSeqAt, NameAddrAt, UriAt, ViaAt},
    },
};

use super::infer::{SvTag, decode_sv_tag};

/// The packet-level facts of an event (what the record says beside the payload).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    pub src_ip: IpAddr,
    pub dst_ip: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    pub transport: Transport,
    pub ttl: u8,
    /// IPv4 identification; 0 for IPv6.
    pub ip_id: u16,
    pub dont_fragment: bool,
    pub ip_version: u8,
    /// TCP sequence number, for TCP records.
    pub tcp_seq: Option<u32>,
}

impl Packet {
    pub fn from_event(event: &Event<'_>) -> Self {
        let r = event.record;
        Packet {
            src_ip: r.src_ip(),
            dst_ip: r.dst_ip(),
            src_port: r.src_port(),
            dst_port: r.dst_port(),
            transport: r.transport(),
            ttl: r.ttl(),
            ip_id: r.ip_id(),
            dont_fragment: r.dont_fragment(),
            ip_version: r.ip_version(),
            tcp_seq: (r.transport() == Transport::Tcp).then_some(r.raw().tcp_seq),
        }
    }
}

/// Everything derived from one message, each part computed the first time a rule (or an
/// inference, or the output) asks for it: with the classification cache most packets need few.
pub struct Facts<'a> {
    pub msg: &'a SipMessage<'a>,
    pub packet: Option<Packet>,
    ruri: OnceCell<Option<Uri<'a>>>,
    via: OnceCell<Option<Via<'a>>>,
    from: OnceCell<Option<NameAddr<'a>>>,
    to: OnceCell<Option<NameAddr<'a>>>,
    contact: OnceCell<Option<NameAddr<'a>>>,
    cseq: OnceCell<Option<CSeq<'a>>>,
    sv_tag: OnceCell<Option<SvTag>>,
    /// Where the structured fields lie, when the message's template is known: laid over the
    /// message instead of parsing them.
    places: Option<&'a FieldPlaces>,
}

/// Where a template's structured fields lie (see [`crate::sip::places`]): what [`Facts`] would
/// parse, found once per template. A field the template lacks is `None` here too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldPlaces {
    ruri: Option<UriAt>,
    via: Option<ViaAt>,
    from: Option<NameAddrAt>,
    to: Option<NameAddrAt>,
    contact: Option<NameAddrAt>,
    cseq: Option<CSeqAt>,
}

impl FieldPlaces {
    /// The places of the message's fields (those `facts` has found already, and the others);
    /// `None` when one of them cannot be placed.
    pub fn of(facts: &Facts<'_>) -> Option<Self> {
        let bytes = facts.msg.bytes();
        // Outer `None`: a field that is there but cannot be placed.
        fn place<T, A>(field: Option<T>, at: impl FnOnce(&T) -> Option<A>) -> Option<Option<A>> {
            match field {
                None => Some(None),
                Some(f) => at(&f).map(Some),
            }
        }
        Some(FieldPlaces {
            ruri: place(facts.ruri(), |u| UriAt::of(bytes, u))?,
            via: place(facts.via(), |v| ViaAt::of(bytes, v))?,
            from: place(facts.from(), |a| NameAddrAt::of(bytes, a))?,
            to: place(facts.to(), |a| NameAddrAt::of(bytes, a))?,
            contact: place(facts.contact(), |a| NameAddrAt::of(bytes, a))?,
            cseq: place(facts.cseq(), |c| CSeqAt::of(bytes, c))?,
        })
    }
}

impl<'a> Facts<'a> {
    pub fn new(msg: &'a SipMessage<'a>, packet: Option<Packet>) -> Self {
        Facts {
            msg,
            packet,
            ruri: OnceCell::new(),
            via: OnceCell::new(),
            from: OnceCell::new(),
            to: OnceCell::new(),
            contact: OnceCell::new(),
            cseq: OnceCell::new(),
            sv_tag: OnceCell::new(),
            places: None,
        }
    }

    /// Reads the structured fields from `places` instead of parsing them. The places must be
    /// those of a message of the same template ([`crate::sip::Layout`]).
    pub fn with_places(mut self, places: Option<&'a FieldPlaces>) -> Self {
        self.places = places;
        self
    }

    /// A structured field, found once: laid over the message from the template's places when
    /// there are some, parsed from the message otherwise.
    fn field<'s, T>(
        &'s self,
        cell: &'s OnceCell<Option<T>>,
        laid: impl FnOnce(&FieldPlaces, &'a [u8]) -> Option<T>,
        parsed: impl FnOnce() -> Option<T>,
    ) -> Option<&'s T> {
        cell.get_or_init(|| match self.places {
            Some(places) => laid(places, self.msg.bytes()),
            None => parsed(),
        })
        .as_ref()
    }

    pub fn ruri(&self) -> Option<&Uri<'a>> {
        self.field(
            &self.ruri,
            |p, bytes| p.ruri.map(|at| at.at(bytes)),
            || self.msg.request_uri().map(Uri::parse),
        )
    }

    pub fn via(&self) -> Option<&Via<'a>> {
        self.field(
            &self.via,
            |p, bytes| p.via.map(|at| at.at(bytes)),
            || self.msg.header_value(HeaderName::Via).map(Via::parse),
        )
    }

    pub fn from(&self) -> Option<&NameAddr<'a>> {
        self.field(
            &self.from,
            |p, bytes| p.from.map(|at| at.at(bytes)),
            || self.msg.header_value(HeaderName::From).map(NameAddr::parse),
        )
    }

    pub fn to(&self) -> Option<&NameAddr<'a>> {
        self.field(
            &self.to,
            |p, bytes| p.to.map(|at| at.at(bytes)),
            || self.msg.header_value(HeaderName::To).map(NameAddr::parse),
        )
    }

    pub fn contact(&self) -> Option<&NameAddr<'a>> {
        self.field(
            &self.contact,
            |p, bytes| p.contact.map(|at| at.at(bytes)),
            || {
                self.msg
                    .header_value(HeaderName::Contact)
                    .map(NameAddr::parse)
            },
        )
    }

    pub fn cseq(&self) -> Option<&CSeq<'a>> {
        self.field(
            &self.cseq,
            |p, bytes| p.cseq.map(|at| at.at(bytes)),
            || self.msg.header_value(HeaderName::CSeq).map(CSeq::parse),
        )
    }

    pub fn call_id(&self) -> Option<&'a [u8]> {
        self.msg.header_value(HeaderName::CallId)
    }

    /// The From tag decoded as SIPVicious' `createTag` encoding, when it is one.
    pub fn sv_tag(&self) -> Option<SvTag> {
        self.sv_tag_ref().copied()
    }

    fn sv_tag_ref(&self) -> Option<&SvTag> {
        self.sv_tag
            .get_or_init(|| self.from().and_then(|f| f.tag).and_then(decode_sv_tag))
            .as_ref()
    }
}

/// Which header a header field names: a known one (compact forms included) or a raw name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderKey {
    Known(HeaderName),
    Raw(Vec<u8>),
}

impl HeaderKey {
    pub fn parse(name: &str) -> Self {
        match HeaderName::from_rule_name(name) {
            HeaderName::Other => HeaderKey::Raw(name.as_bytes().to_vec()),
            known => HeaderKey::Known(known),
        }
    }

    fn find<'a>(&self, msg: &SipMessage<'a>) -> Option<crate::sip::Header<'a>> {
        match self {
            HeaderKey::Known(n) => msg.header(*n),
            HeaderKey::Raw(raw) => msg.header_by_raw_name(raw),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addr {
    From,
    To,
    Contact,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddrPart {
    Display,
    /// Whether the display name was quoted.
    DisplayQuoted,
    Gap,
    Uri,
    User,
    Host,
    Port,
    Params,
    ParamsSep,
    Tag,
    /// The tag read as a hexadecimal number (sipsak's tag is the Call-ID's number in hex).
    TagHexNum,
}

/// A field a rule condition reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Field {
    PayloadKind,
    Payload,
    PayloadLen,
    LineEndings,
    HeadersComplete,
    Truncated,
    HeaderCount,
    FirstLine,
    Method,
    RequestUri,
    RequestUriUser,
    RequestUriHost,
    RequestUriPort,
    SipVersion,
    StatusCode,
    /// Header names in wire order, canonical when known (list field).
    HeaderOrder,
    /// Header names in wire order as spelled (`v`, `User Agent`) (list field).
    HeaderNames,
    Header(HeaderKey),
    Line(HeaderKey),
    Sep(HeaderKey),
    Name(HeaderKey),
    ViaTransport,
    ViaHost,
    ViaPort,
    ViaBranch,
    ViaParams,
    Addr(Addr, AddrPart),
    CallId,
    CallIdNum,
    CallIdHost,
    CSeqNum,
    CSeqMethod,
    UserAgent,
    MaxForwards,
    ContentLength,
    Body,
    SdpSession,
    SdpOrigin,
    SvTagKind,
    SvTagValue,
    Transport,
    SrcIp,
    DstIp,
    SrcPort,
    DstPort,
    Ttl,
    IpId,
    Df,
    IpVersion,
    TcpSeq,
}

/// Fixed field names (header fields are `header:NAME`, `line:NAME`, `sep:NAME`, `name:NAME`).
const NAMED: &[(&str, Field)] = &[
    ("payload.kind", Field::PayloadKind),
    ("payload", Field::Payload),
    ("payload.len", Field::PayloadLen),
    ("line_endings", Field::LineEndings),
    ("headers_complete", Field::HeadersComplete),
    ("truncated", Field::Truncated),
    ("header_count", Field::HeaderCount),
    ("first_line", Field::FirstLine),
    ("method", Field::Method),
    ("request_uri", Field::RequestUri),
    ("request_uri.user", Field::RequestUriUser),
    ("request_uri.host", Field::RequestUriHost),
    ("request_uri.port", Field::RequestUriPort),
    ("sip_version", Field::SipVersion),
    ("status_code", Field::StatusCode),
    ("header_order", Field::HeaderOrder),
    ("header_names", Field::HeaderNames),
    ("via.transport", Field::ViaTransport),
    ("via.host", Field::ViaHost),
    ("via.port", Field::ViaPort),
    ("via.branch", Field::ViaBranch),
    ("via.params", Field::ViaParams),
    ("call_id", Field::CallId),
    ("call_id.num", Field::CallIdNum),
    ("call_id.host", Field::CallIdHost),
    ("cseq.num", Field::CSeqNum),
    ("cseq.method", Field::CSeqMethod),
    ("user_agent", Field::UserAgent),
    ("max_forwards", Field::MaxForwards),
    ("content_length", Field::ContentLength),
    ("body", Field::Body),
    ("sdp.s", Field::SdpSession),
    ("sdp.o", Field::SdpOrigin),
    ("sv_tag.kind", Field::SvTagKind),
    ("sv_tag.value", Field::SvTagValue),
    ("transport", Field::Transport),
    ("src_ip", Field::SrcIp),
    ("dst_ip", Field::DstIp),
    ("src_port", Field::SrcPort),
    ("dst_port", Field::DstPort),
    ("ip.ttl", Field::Ttl),
    ("ip.id", Field::IpId),
    ("ip.df", Field::Df),
    ("ip.version", Field::IpVersion),
    ("tcp.seq", Field::TcpSeq),
];

const ADDR_PARTS: &[(&str, AddrPart)] = &[
    ("display", AddrPart::Display),
    ("display_quoted", AddrPart::DisplayQuoted),
    ("gap", AddrPart::Gap),
    ("uri", AddrPart::Uri),
    ("user", AddrPart::User),
    ("host", AddrPart::Host),
    ("port", AddrPart::Port),
    ("params", AddrPart::Params),
    ("params_sep", AddrPart::ParamsSep),
    ("tag", AddrPart::Tag),
    ("tag.hexnum", AddrPart::TagHexNum),
];

/// The kind of value a field yields, for validating operators at load time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Bytes,
    Int,
    Bool,
    Ip,
    List,
}

impl Field {
    pub fn parse(name: &str) -> Option<Field> {
        if let Some((_, f)) = NAMED.iter().find(|(n, _)| *n == name) {
            return Some(f.clone());
        }
        for (prefix, make) in [
            ("header:", Field::Header as fn(HeaderKey) -> Field),
            ("line:", Field::Line),
            ("sep:", Field::Sep),
            ("name:", Field::Name),
        ] {
            if let Some(h) = name.strip_prefix(prefix) {
                return (!h.is_empty()).then(|| make(HeaderKey::parse(h)));
            }
        }
        let (addr, part) = name.split_once('.')?;
        let addr = match addr {
            "from" => Addr::From,
            "to" => Addr::To,
            "contact" => Addr::Contact,
            _ => return None,
        };
        ADDR_PARTS
            .iter()
            .find(|(n, _)| *n == part)
            .map(|(_, p)| Field::Addr(addr, *p))
    }

    /// All fixed names, for error messages and documentation.
    pub fn known_names() -> String {
        let mut names: Vec<String> = NAMED.iter().map(|(n, _)| n.to_string()).collect();
        for a in ["from", "to", "contact"] {
            names.extend(ADDR_PARTS.iter().map(|(p, _)| format!("{a}.{p}")));
        }
        names.extend(["header:NAME", "line:NAME", "sep:NAME", "name:NAME"].map(String::from));
        names.join(", ")
    }

    pub fn kind(&self) -> Kind {
        use Field::*;
        match self {
            PayloadLen | HeaderCount | RequestUriPort | StatusCode | ViaPort | CallIdNum
            | CSeqNum | MaxForwards | ContentLength | SrcPort | DstPort | Ttl | IpId
            | IpVersion | TcpSeq => Kind::Int,
            Addr(_, AddrPart::Port | AddrPart::TagHexNum) => Kind::Int,
            HeadersComplete | Truncated | Df => Kind::Bool,
            Addr(_, AddrPart::DisplayQuoted) => Kind::Bool,
            SrcIp | DstIp => Kind::Ip,
            HeaderOrder | HeaderNames => Kind::List,
            _ => Kind::Bytes,
        }
    }
}

/// How the classification cache's key ([`super::key`]) bears on a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyBearing {
    /// The key fixes the field outright (structure, kind, flags): evaluate once per key.
    Fixed,
    /// A piece of the message (or absent): the key fixes where it is and its abstraction.
    Span,
    /// Packet fields, numbers read from digits, decoded tags: evaluated for every packet.
    PerPacket,
}

impl Field {
    pub(crate) fn key_bearing(&self) -> KeyBearing {
        use Field::*;
        match self {
            PayloadKind
            | LineEndings
            | HeadersComplete
            | Truncated
            | HeaderOrder
            | HeaderNames
            | Addr(_, AddrPart::DisplayQuoted) => KeyBearing::Fixed,
            Payload | FirstLine | Method | RequestUri | RequestUriUser | RequestUriHost
            | SipVersion | Header(_) | Line(_) | Sep(_) | Name(_) | ViaTransport | ViaHost
            | ViaBranch | ViaParams | CallId | CallIdHost | CSeqMethod | UserAgent | Body
            | SdpSession | SdpOrigin => KeyBearing::Span,
            Addr(
                _,
                AddrPart::Display
                | AddrPart::Gap
                | AddrPart::Uri
                | AddrPart::User
                | AddrPart::Host
                | AddrPart::Params
                | AddrPart::ParamsSep
                | AddrPart::Tag,
            ) => KeyBearing::Span,
            _ => KeyBearing::PerPacket,
        }
    }
}

/// A field's value in one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value<'a> {
    Missing,
    Bytes(&'a [u8]),
    Int(u64),
    Bool(bool),
    Ip(IpAddr),
    /// List fields are read through [`Facts::names`], not as a value.
    List,
}

impl Value<'_> {
    /// Equality across kinds where it makes sense (an IP against its text, a number against
    /// its digits), used by `same_as`.
    pub fn same(&self, other: &Value<'_>) -> bool {
        match (self, other) {
            (Value::Missing, _) | (_, Value::Missing) => false,
            (Value::Bytes(a), Value::Bytes(b)) => a == b,
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Ip(a), Value::Ip(b)) => a == b,
            (Value::Ip(ip), Value::Bytes(b)) | (Value::Bytes(b), Value::Ip(ip)) => {
                parse_ip(b) == Some(*ip)
            }
            (Value::Int(n), Value::Bytes(b)) | (Value::Bytes(b), Value::Int(n)) => {
                parse_u64(b) == Some(*n)
            }
            _ => false,
        }
    }
}

pub fn parse_ip(bytes: &[u8]) -> Option<IpAddr> {
    if let Some(v4) = dotted_quad(bytes) {
        return Some(IpAddr::V4(v4));
    }
    let inner = bytes
        .strip_prefix(b"[")
        .and_then(|b| b.strip_suffix(b"]"))
        .unwrap_or(bytes);
    // Hostnames (most hosts that are not a dotted quad) are turned away before the standard
    // parser, which takes nothing but hex digits, colons and dots.
    if !inner
        .iter()
        .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
    {
        return None;
    }
    std::str::from_utf8(inner).ok()?.parse().ok()
}

/// An IPv4 address in the one form the standard parser takes (four decimal octets, no leading
/// zeros), in one pass, without its UTF-8 check and generic parser: Via and Contact hosts are
/// classified for every event. `None` for anything else, which [`parse_ip`] hands to the
/// standard parser.
fn dotted_quad(bytes: &[u8]) -> Option<std::net::Ipv4Addr> {
    if !(7..=15).contains(&bytes.len()) {
        return None;
    }
    let mut octets = [0u8; 4];
    let mut done = 0;
    let (mut n, mut digits) = (0u16, 0u8);
    for &b in bytes {
        if b == b'.' {
            if digits == 0 || done == 3 {
                return None;
            }
            octets[done] = n as u8;
            done += 1;
            (n, digits) = (0, 0);
        } else {
            let d = b.wrapping_sub(b'0');
            // Not a digit, or a digit after a leading zero.
            if d > 9 || (digits == 1 && n == 0) {
                return None;
            }
            n = n * 10 + u16::from(d);
            digits += 1;
            if n > 255 {
                return None;
            }
        }
    }
    if done != 3 || digits == 0 {
        return None;
    }
    octets[3] = n as u8;
    Some(octets.into())
}

fn parse_u64(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() || bytes.len() > 19 || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(bytes.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

fn parse_hex_u64(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() || bytes.len() > 16 || !bytes.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(bytes).ok()?, 16).ok()
}

fn bytes_or_missing(b: Option<&[u8]>) -> Value<'_> {
    b.map_or(Value::Missing, Value::Bytes)
}

fn int_or_missing<T: Into<u64>>(n: Option<T>) -> Value<'static> {
    n.map_or(Value::Missing, |n| Value::Int(n.into()))
}

/// The value of a number field read from `text` ([`Facts::number_text`]).
pub fn number_of(text: Option<&[u8]>) -> Value<'static> {
    int_or_missing(text.and_then(parse_u32))
}

impl<'a> Facts<'a> {
    /// The text a number field is read from, for the fields read from one text of the message
    /// ([`number_of`]); `Some(None)` when the message lacks it.
    pub fn number_text(&self, field: &Field) -> Option<Option<&'a [u8]>> {
        match field {
            // CSeq's number as `CSeq::parse` reads it, `parse_u32` of its text.
            Field::CSeqNum => Some(self.cseq().map(|c| c.number_raw)),
            Field::MaxForwards => Some(self.msg.header_value(HeaderName::MaxForwards)),
            _ => None,
        }
    }

    /// Reads a field. List fields yield [`Value::List`]; read them with [`Facts::names`].
    pub fn get<'f>(&'f self, field: &Field) -> Value<'f> {
        let msg = self.msg;
        let packet = self.packet.as_ref();
        match field {
            Field::PayloadKind => Value::Bytes(msg.kind().as_str().as_bytes()),
            Field::Payload => Value::Bytes(msg.bytes()),
            Field::PayloadLen => Value::Int(msg.bytes().len() as u64),
            Field::LineEndings => Value::Bytes(msg.line_endings().as_str().as_bytes()),
            Field::HeadersComplete => Value::Bool(msg.headers_complete()),
            Field::Truncated => Value::Bool(msg.truncated()),
            Field::HeaderCount => {
                Value::Int(msg.header_count() as u64 + u64::from(msg.headers_overflow()))
            }
            Field::FirstLine => Value::Bytes(msg.first_line()),
            Field::Method => bytes_or_missing(msg.method()),
            Field::RequestUri => bytes_or_missing(msg.request_uri()),
            Field::RequestUriUser => bytes_or_missing(self.ruri().and_then(|u| u.user)),
            Field::RequestUriHost => bytes_or_missing(self.ruri().map(|u| u.host)),
            Field::RequestUriPort => int_or_missing(self.ruri().and_then(|u| u.port)),
            Field::SipVersion => match msg.start_line() {
                crate::sip::StartLine::Request { version, .. }
                | crate::sip::StartLine::Response { version, .. } => Value::Bytes(version),
                crate::sip::StartLine::None => Value::Missing,
            },
            Field::StatusCode => int_or_missing(msg.status_code()),
            Field::HeaderOrder | Field::HeaderNames => Value::List,
            Field::Header(key) => bytes_or_missing(key.find(msg).map(|h| h.value)),
            Field::Line(key) => bytes_or_missing(key.find(msg).map(|h| h.line)),
            Field::Sep(key) => bytes_or_missing(key.find(msg).map(|h| h.separator)),
            Field::Name(key) => bytes_or_missing(key.find(msg).map(|h| h.raw_name)),
            Field::ViaTransport => bytes_or_missing(self.via().map(|v| v.transport)),
            Field::ViaHost => bytes_or_missing(self.via().map(|v| v.host)),
            Field::ViaPort => int_or_missing(self.via().and_then(|v| v.port)),
            Field::ViaBranch => bytes_or_missing(self.via().and_then(|v| v.branch())),
            Field::ViaParams => bytes_or_missing(self.via().map(|v| v.params)),
            Field::Addr(which, part) => {
                let addr = match which {
                    Addr::From => self.from(),
                    Addr::To => self.to(),
                    Addr::Contact => self.contact(),
                };
                let Some(a) = addr else {
                    return Value::Missing;
                };
                match part {
                    AddrPart::Display => bytes_or_missing(a.display),
                    AddrPart::DisplayQuoted => Value::Bool(a.display_quoted),
                    AddrPart::Gap => Value::Bytes(a.gap),
                    AddrPart::Uri => Value::Bytes(a.uri.raw),
                    AddrPart::User => bytes_or_missing(a.uri.user),
                    AddrPart::Host => Value::Bytes(a.uri.host),
                    AddrPart::Port => int_or_missing(a.uri.port),
                    AddrPart::Params => Value::Bytes(a.params),
                    AddrPart::ParamsSep => Value::Bytes(a.params_sep),
                    AddrPart::Tag => bytes_or_missing(a.tag),
                    AddrPart::TagHexNum => a
                        .tag
                        .and_then(parse_hex_u64)
                        .map_or(Value::Missing, Value::Int),
                }
            }
            Field::CallId => bytes_or_missing(self.call_id()),
            Field::CallIdNum => self
                .call_id()
                .and_then(|c| parse_u64(c.split(|&b| b == b'@').next().unwrap_or_default()))
                .map_or(Value::Missing, Value::Int),
            Field::CallIdHost => bytes_or_missing(
                self.call_id()
                    .and_then(|c| c.iter().position(|&b| b == b'@').map(|at| &c[at + 1..])),
            ),
            Field::CSeqNum | Field::MaxForwards => number_of(self.number_text(field).flatten()),
            Field::CSeqMethod => bytes_or_missing(self.cseq().map(|c| c.method)),
            Field::UserAgent => bytes_or_missing(msg.header_value(HeaderName::UserAgent)),
            Field::ContentLength => int_or_missing(msg.content_length()),
            Field::Body => bytes_or_missing(msg.body()),
            Field::SdpSession => bytes_or_missing(msg.body().and_then(|b| sdp_line(b, b's'))),
            Field::SdpOrigin => bytes_or_missing(msg.body().and_then(|b| sdp_line(b, b'o'))),
            Field::SvTagKind => bytes_or_missing(self.sv_tag().map(|t| t.kind_str().as_bytes())),
            Field::SvTagValue => bytes_or_missing(self.sv_tag_ref().map(|t| t.encoded())),
            Field::Transport => bytes_or_missing(packet.map(|p| match p.transport {
                Transport::Udp => &b"udp"[..],
                Transport::Tcp => &b"tcp"[..],
            })),
            Field::SrcIp => packet.map_or(Value::Missing, |p| Value::Ip(p.src_ip)),
            Field::DstIp => packet.map_or(Value::Missing, |p| Value::Ip(p.dst_ip)),
            Field::SrcPort => int_or_missing(packet.map(|p| p.src_port)),
            Field::DstPort => int_or_missing(packet.map(|p| p.dst_port)),
            Field::Ttl => int_or_missing(packet.map(|p| p.ttl)),
            Field::IpId => int_or_missing(packet.filter(|p| p.ip_version == 4).map(|p| p.ip_id)),
            Field::Df => packet.map_or(Value::Missing, |p| Value::Bool(p.dont_fragment)),
            Field::IpVersion => int_or_missing(packet.map(|p| p.ip_version)),
            Field::TcpSeq => int_or_missing(packet.and_then(|p| p.tcp_seq)),
        }
    }

    /// The names of a list field, in wire order.
    pub fn names(&self, field: &Field) -> impl Iterator<Item = &'a [u8]> + 'a {
        let raw = matches!(field, Field::HeaderNames);
        let msg: &'a SipMessage<'a> = self.msg;
        msg.headers()
            .map(move |h| if raw { h.raw_name } else { h.order_name() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_quads_parse_as_the_standard_parser_does() {
        // Octet-like pieces, good and bad, joined by dots or by something else.
        let pieces: [&[u8]; 16] = [
            b"0", b"00", b"01", b"1", b"9", b"10", b"99", b"100", b"199", b"249", b"255", b"256",
            b"999", b"1000", b"", b"a",
        ];
        let joins: [&[u8]; 6] = [b".", b".", b".", b".", b":", b".."];
        let mut state = 3u64;
        let mut random = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let mut accepted = 0;
        for _ in 0..100_000 {
            let mut bytes = Vec::new();
            for i in 0..3 + random(3) {
                if i > 0 {
                    bytes.extend_from_slice(joins[random(joins.len())]);
                }
                bytes.extend_from_slice(pieces[random(pieces.len())]);
            }
            let std = std::str::from_utf8(&bytes)
                .ok()
                .and_then(|s| s.parse::<std::net::Ipv4Addr>().ok());
            assert_eq!(
                dotted_quad(&bytes),
                std,
                "{:?}",
                String::from_utf8_lossy(&bytes)
            );
            accepted += usize::from(std.is_some());
        }
        for s in ["0.0.0.0", "255.255.255.255", "1.1.1.1", "192.168.1.9"] {
            assert_eq!(dotted_quad(s.as_bytes()), s.parse().ok());
        }
        for s in [
            "256.1.1.1",
            "01.1.1.1",
            "1.1.1",
            "1.1.1.1.",
            "1..1.1",
            "1.1.1.1000",
        ] {
            assert_eq!(dotted_quad(s.as_bytes()), None, "{s}");
        }
        assert!(accepted > 1000, "{accepted}");
    }

    #[test]
    fn addresses_parse_as_the_standard_parser_does() {
        // Hosts, addresses and pieces of both, in brackets or not.
        let pieces: [&[u8]; 14] = [
            b"1",
            b"255",
            b"0",
            b"ff",
            b"::",
            b":",
            b".",
            b"2001:db8",
            b"::1",
            b"[",
            b"]",
            b"sip",
            b"example.com",
            b"%",
        ];
        let mut random = crate::fingerprint::key::tests::below();
        let mut accepted = 0;
        for _ in 0..100_000 {
            let mut bytes = Vec::new();
            for _ in 0..1 + random(6) {
                bytes.extend_from_slice(pieces[random(pieces.len())]);
            }
            let want = std::str::from_utf8(&bytes).ok().and_then(|s| {
                s.strip_prefix('[')
                    .and_then(|s| s.strip_suffix(']'))
                    .unwrap_or(s)
                    .parse::<IpAddr>()
                    .ok()
            });
            let s = String::from_utf8_lossy(&bytes);
            assert_eq!(parse_ip(&bytes), want, "{s:?}");
            accepted += usize::from(want.is_some());
        }
        assert!(accepted > 1000, "{accepted}");
        for s in [
            "::ffff:192.0.2.1",
            "[2001:db8::198.51.100.7]",
            "[::1]",
            "2001:DB8::1",
        ] {
            assert!(parse_ip(s.as_bytes()).is_some(), "{s}");
        }
    }

    #[test]
    fn field_names_parse() {
        assert_eq!(Field::parse("via.branch"), Some(Field::ViaBranch));
        assert_eq!(
            Field::parse("from.tag.hexnum"),
            Some(Field::Addr(Addr::From, AddrPart::TagHexNum))
        );
        assert_eq!(
            Field::parse("header:User-Agent"),
            Some(Field::Header(HeaderKey::Known(HeaderName::UserAgent)))
        );
        assert_eq!(
            Field::parse("name:User Agent"),
            Some(Field::Name(HeaderKey::Raw(b"User Agent".to_vec())))
        );
        assert_eq!(Field::parse("header:"), None);
        assert_eq!(Field::parse("via.nope"), None);
        assert_eq!(Field::parse("bcc.tag"), None);
        assert!(Field::known_names().contains("contact.host"));
    }

    #[test]
    fn values_from_a_message() {
        let m = SipMessage::parse(
            b"OPTIONS sip:sipsak@example SIP/2.0\r\n\
Via: SIP/2.0/UDP h:5060;branch=z9hG4bK.1;rport;alias\r\n\
From: sip:sipsak@h:5060;tag=3039\r\n\
Call-ID: 12345@h\r\nUser Agent: x\r\n\r\n",
        );
        let f = Facts::new(&m, None);
        assert_eq!(f.get(&Field::ViaPort), Value::Int(5060));
        assert_eq!(
            f.get(&Field::Addr(Addr::From, AddrPart::TagHexNum)),
            Value::Int(0x3039)
        );
        assert_eq!(f.get(&Field::CallIdNum), Value::Int(12345));
        assert!(
            f.get(&Field::CallIdNum)
                .same(&f.get(&Field::Addr(Addr::From, AddrPart::TagHexNum)))
        );
        assert_eq!(f.get(&Field::CallIdHost), Value::Bytes(b"h"));
        assert_eq!(f.get(&Field::SrcPort), Value::Missing);
        assert_eq!(
            f.get(&Field::parse("header:User Agent").unwrap()),
            Value::Bytes(b"x")
        );
        let names: Vec<_> = f.names(&Field::HeaderOrder).collect();
        assert_eq!(names, [&b"Via"[..], b"From", b"Call-ID", b"User Agent"]);
    }
}
