//! Where the structured fields of a message lie, by offset. A template's packets have them at
//! the same offsets ([`super::message::Layout`]: the field parsers, like the message parser,
//! split on punctuation and whitespace and read no digit's value), so they are found once per
//! template and laid over each packet; only the numbers in them are read per packet.

use super::{
    fields::{CSeq, NameAddr, Uri, Via, parse_port},
    message::parse_u32,
};

/// Where `inner` starts in `outer`, when it lies inside it.
pub fn offset_in(outer: &[u8], inner: &[u8]) -> Option<usize> {
    let off = (inner.as_ptr() as usize).wrapping_sub(outer.as_ptr() as usize);
    (off <= outer.len() && inner.len() <= outer.len() - off).then_some(off)
}

/// A part of a message, by offset and length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    start: u16,
    len: u16,
}

impl Place {
    /// Where `part` lies in `bytes`; `None` when it is not inside them. An empty part is empty
    /// wherever it is (parsers give some from elsewhere).
    pub fn of(bytes: &[u8], part: &[u8]) -> Option<Place> {
        if part.is_empty() {
            return Some(Place { start: 0, len: 0 });
        }
        Some(Place {
            start: u16::try_from(offset_in(bytes, part)?).ok()?,
            len: u16::try_from(part.len()).ok()?,
        })
    }

    /// The range of the part in its message.
    pub fn range(self) -> std::ops::Range<usize> {
        usize::from(self.start)..usize::from(self.start) + usize::from(self.len)
    }

    /// An optional part: `Some(None)` for an absent one.
    fn of_optional(bytes: &[u8], part: Option<&[u8]>) -> Option<Option<Place>> {
        match part {
            None => Some(None),
            Some(part) => Place::of(bytes, part).map(Some),
        }
    }

    /// The part in a message of the same template (empty if the message is too short).
    pub fn at(self, bytes: &[u8]) -> &[u8] {
        bytes.get(self.range()).unwrap_or_default()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UriAt {
    raw: Place,
    scheme: Place,
    user: Option<Place>,
    host: Place,
    port_raw: Place,
    params: Place,
}

impl UriAt {
    pub fn of(bytes: &[u8], uri: &Uri<'_>) -> Option<Self> {
        Some(UriAt {
            raw: Place::of(bytes, uri.raw)?,
            scheme: Place::of(bytes, uri.scheme)?,
            user: Place::of_optional(bytes, uri.user)?,
            host: Place::of(bytes, uri.host)?,
            port_raw: Place::of(bytes, uri.port_raw)?,
            params: Place::of(bytes, uri.params)?,
        })
    }

    #[inline]
    pub fn at<'a>(&self, bytes: &'a [u8]) -> Uri<'a> {
        let port_raw = self.port_raw.at(bytes);
        Uri {
            raw: self.raw.at(bytes),
            scheme: self.scheme.at(bytes),
            user: self.user.map(|u| u.at(bytes)),
            host: self.host.at(bytes),
            port: parse_port(port_raw),
            port_raw,
            params: self.params.at(bytes),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ViaAt {
    protocol: Place,
    transport: Place,
    host: Place,
    port_raw: Place,
    params: Place,
}

impl ViaAt {
    pub fn of(bytes: &[u8], via: &Via<'_>) -> Option<Self> {
        Some(ViaAt {
            protocol: Place::of(bytes, via.protocol)?,
            transport: Place::of(bytes, via.transport)?,
            host: Place::of(bytes, via.host)?,
            port_raw: Place::of(bytes, via.port_raw)?,
            params: Place::of(bytes, via.params)?,
        })
    }

    pub fn at<'a>(&self, bytes: &'a [u8]) -> Via<'a> {
        let port_raw = self.port_raw.at(bytes);
        Via {
            protocol: self.protocol.at(bytes),
            transport: self.transport.at(bytes),
            host: self.host.at(bytes),
            port: parse_port(port_raw),
            port_raw,
            params: self.params.at(bytes),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameAddrAt {
    display: Option<Place>,
    display_quoted: bool,
    gap: Place,
    angle: bool,
    uri: UriAt,
    params: Place,
    params_sep: Place,
    tag: Option<Place>,
}

impl NameAddrAt {
    pub fn of(bytes: &[u8], addr: &NameAddr<'_>) -> Option<Self> {
        Some(NameAddrAt {
            display: Place::of_optional(bytes, addr.display)?,
            display_quoted: addr.display_quoted,
            gap: Place::of(bytes, addr.gap)?,
            angle: addr.angle,
            uri: UriAt::of(bytes, &addr.uri)?,
            params: Place::of(bytes, addr.params)?,
            params_sep: Place::of(bytes, addr.params_sep)?,
            tag: Place::of_optional(bytes, addr.tag)?,
        })
    }

    #[inline]
    pub fn at<'a>(&self, bytes: &'a [u8]) -> NameAddr<'a> {
        NameAddr {
            display: self.display.map(|d| d.at(bytes)),
            display_quoted: self.display_quoted,
            gap: self.gap.at(bytes),
            angle: self.angle,
            uri: self.uri.at(bytes),
            params: self.params.at(bytes),
            params_sep: self.params_sep.at(bytes),
            tag: self.tag.map(|t| t.at(bytes)),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CSeqAt {
    number_raw: Place,
    method: Place,
}

impl CSeqAt {
    pub fn of(bytes: &[u8], cseq: &CSeq<'_>) -> Option<Self> {
        Some(CSeqAt {
            number_raw: Place::of(bytes, cseq.number_raw)?,
            method: Place::of(bytes, cseq.method)?,
        })
    }

    pub fn at<'a>(&self, bytes: &'a [u8]) -> CSeq<'a> {
        let number_raw = self.number_raw.at(bytes);
        CSeq {
            number: parse_u32(number_raw),
            number_raw,
            method: self.method.at(bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_laid_over_another_packet_of_the_template() {
        let first = b"\"sipvicious\"<sip:100@1.1.1.1:5060>;tag=3435313131";
        let other = b"\"sipvicious\"<sip:274@9.1.8.1:5071>;tag=9935313100";
        let at = NameAddrAt::of(first, &NameAddr::parse(first)).expect("placed");
        assert_eq!(at.at(other), NameAddr::parse(other));
        assert_eq!(at.at(other).uri.port, Some(5071));
        let via = b"SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-1;rport";
        let via2 = b"SIP/2.0/UDP 99.0.7.3:6060;branch=z9hG4bK-9;rport";
        let at = ViaAt::of(via, &Via::parse(via)).expect("placed");
        assert_eq!(at.at(via2), Via::parse(via2));
        let cseq = CSeqAt::of(b"1 OPTIONS", &CSeq::parse(b"1 OPTIONS")).expect("placed");
        assert_eq!(cseq.at(b"7 OPTIONS").number, Some(7));
        // A part that is not inside the bytes has no place.
        assert_eq!(Place::of(b"abc", b"xyz"), None);
    }
}
