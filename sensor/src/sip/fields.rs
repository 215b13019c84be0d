//! Structured views of the header values scanners give away the most in: Via, name-addr
//! (From/To/Contact), SIP URIs, CSeq, and the SDP session lines. Zero-copy and lenient: a part
//! that is missing is `None`/empty, never an error.

use memchr::{memchr, memchr2, memrchr};

use super::message::parse_u32;

/// A SIP or SIPS URI (`sip:user@host:port;params`), or whatever stands where one should be.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Uri<'a> {
    pub raw: &'a [u8],
    /// `sip`, `sips`, `tel`... empty when there is no scheme.
    pub scheme: &'a [u8],
    pub user: Option<&'a [u8]>,
    pub host: &'a [u8],
    pub port: Option<u16>,
    /// Digits after the host's colon as written (`"0"`, `"5060"`), empty when none.
    pub port_raw: &'a [u8],
    /// After the first `;` of the host part.
    pub params: &'a [u8],
}

impl<'a> Uri<'a> {
    pub fn parse(raw: &'a [u8]) -> Self {
        let raw = raw.trim_ascii();
        // A scheme is letters up to the first ':' (the first byte that is not a letter).
        let letters = raw
            .iter()
            .position(|b| !b.is_ascii_alphabetic())
            .unwrap_or(raw.len());
        let (scheme, rest) = match raw.get(letters) {
            Some(b':') if letters > 0 => (&raw[..letters], &raw[letters + 1..]),
            _ => (&raw[..0], raw),
        };
        // The user part ends at the last '@' before any header part ('?').
        let before_headers = &rest[..memchr(b'?', rest).unwrap_or(rest.len())];
        let (user, hostpart) = match memrchr(b'@', before_headers) {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        let user = user.map(|u| &u[..memchr(b':', u).unwrap_or(u.len())]);
        let params_at = memchr2(b';', b'?', hostpart).unwrap_or(hostpart.len());
        let params = hostpart.get(params_at + 1..).unwrap_or_default();
        let (host, port_raw) = split_host_port(&hostpart[..params_at]);
        Uri {
            raw,
            scheme,
            user,
            host,
            port: parse_port(port_raw),
            port_raw,
            params,
        }
    }
}

/// Splits `host:port`, `[v6]:port`, `host` into host and port digits.
pub fn split_host_port(hostport: &[u8]) -> (&[u8], &[u8]) {
    let hostport = hostport.trim_ascii();
    if hostport.first() == Some(&b'[') {
        if let Some(close) = memchr(b']', hostport) {
            let after = &hostport[close + 1..];
            let port = after.strip_prefix(b":").unwrap_or_default();
            return (&hostport[..=close], port);
        }
        return (hostport, &hostport[..0]);
    }
    // More than one colon without brackets: a bare IPv6 address, no port.
    match memrchr(b':', hostport) {
        Some(colon) if memchr(b':', &hostport[..colon]).is_none() => {
            (&hostport[..colon], &hostport[colon + 1..])
        }
        _ => (hostport, &hostport[..0]),
    }
}

pub(crate) fn parse_port(raw: &[u8]) -> Option<u16> {
    parse_u32(raw).and_then(|n| u16::try_from(n).ok())
}

/// Iterates `name[=value]` parameters separated by `;`, whitespace trimmed.
pub fn params(raw: &[u8]) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
    raw.split(|&b| b == b';')
        .map(|p| p.trim_ascii())
        .filter(|p| !p.is_empty())
        .map(|p| match p.iter().position(|&b| b == b'=') {
            Some(eq) => (p[..eq].trim_ascii(), Some(p[eq + 1..].trim_ascii())),
            None => (p, None),
        })
}

pub fn param<'a>(raw: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    params(raw)
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.unwrap_or_default())
}

/// The first Via of a Via header value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Via<'a> {
    /// `SIP/2.0/UDP`
    pub protocol: &'a [u8],
    /// `UDP`, `TCP`, ... (after the last `/` of the protocol).
    pub transport: &'a [u8],
    pub host: &'a [u8],
    pub port: Option<u16>,
    pub port_raw: &'a [u8],
    /// Everything after the first `;` (`branch=z9hG4bK-1;rport`).
    pub params: &'a [u8],
}

impl<'a> Via<'a> {
    pub fn parse(value: &'a [u8]) -> Self {
        let value = value.trim_ascii();
        // Several Vias may share one header, comma-separated: keep the first.
        let value = &value[..memchr(b',', value).unwrap_or(value.len())];
        let proto_end = value
            .iter()
            .position(|b| b.is_ascii_whitespace())
            .unwrap_or(value.len());
        let protocol = &value[..proto_end];
        let transport = &protocol[memrchr(b'/', protocol).map_or(0, |p| p + 1)..];
        let rest = &value[proto_end..];
        let semi = memchr(b';', rest).unwrap_or(rest.len());
        let (host, port_raw) = split_host_port(&rest[..semi]);
        Via {
            protocol,
            transport,
            host,
            port: parse_port(port_raw),
            port_raw,
            params: rest.get(semi + 1..).unwrap_or_default(),
        }
    }

    pub fn param(&self, name: &[u8]) -> Option<&'a [u8]> {
        param(self.params, name)
    }

    pub fn branch(&self) -> Option<&'a [u8]> {
        self.param(b"branch")
    }
}

/// A From, To or Contact value: `"Display" <uri>;params` or `uri;params`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NameAddr<'a> {
    /// Display name without its quotes; `None` when there is none at all.
    pub display: Option<&'a [u8]>,
    pub display_quoted: bool,
    /// Bytes between the display name and `<` (`""` in svmap's `"sipvicious"<sip:`, `" "`
    /// in most tools).
    pub gap: &'a [u8],
    /// The URI was in angle brackets.
    pub angle: bool,
    pub uri: Uri<'a>,
    /// Parameters after the URI, without the leading separator.
    pub params: &'a [u8],
    /// What stood between the URI and the parameters: `";"`, `"; "` (old SIPVicious),
    /// `" "` (a tag after a bare space)...
    pub params_sep: &'a [u8],
    pub tag: Option<&'a [u8]>,
}

impl<'a> NameAddr<'a> {
    pub fn parse(value: &'a [u8]) -> Self {
        let value = value.trim_ascii();
        let mut out = NameAddr::default();
        let mut rest = value;
        if rest.first() == Some(&b'"') {
            let mut i = 1;
            let mut close = None;
            while i < rest.len() {
                match rest[i] {
                    b'\\' => i += 2,
                    b'"' => {
                        close = Some(i);
                        break;
                    }
                    _ => i += 1,
                }
            }
            let close = close.unwrap_or(rest.len());
            out.display = Some(&rest[1..close.min(rest.len())]);
            out.display_quoted = true;
            rest = rest.get(close + 1..).unwrap_or_default();
        }
        let uri_part;
        let after;
        match memchr(b'<', rest) {
            Some(lt) => {
                let before = &rest[..lt];
                if !out.display_quoted {
                    let token = before.trim_ascii();
                    if !token.is_empty() {
                        out.display = Some(token);
                    }
                    let lead = before.len() - before.trim_ascii_start().len();
                    out.gap = &before[lead + token.len()..];
                } else {
                    out.gap = before;
                }
                out.angle = true;
                let inner = &rest[lt + 1..];
                let gt = memchr(b'>', inner).unwrap_or(inner.len());
                uri_part = &inner[..gt];
                after = inner.get(gt + 1..).unwrap_or_default();
            }
            None => {
                let semi = memchr(b';', rest).unwrap_or(rest.len());
                // Without brackets a `;` ends the URI: what follows are header parameters.
                let bare = &rest[..semi];
                let space_tag = find_subslice(bare, b" tag=");
                let end = space_tag.unwrap_or(semi);
                uri_part = &rest[..end];
                after = &rest[end..];
            }
        }
        out.uri = Uri::parse(uri_part);
        let sep_len = after
            .iter()
            .take_while(|&&b| b == b';' || b == b' ' || b == b'\t')
            .count();
        out.params_sep = &after[..sep_len];
        out.params = &after[sep_len..];
        out.tag = param(out.params, b"tag");
        out
    }
}

fn find_subslice(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `CSeq: 1 OPTIONS`
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CSeq<'a> {
    pub number: Option<u32>,
    /// The number as written.
    pub number_raw: &'a [u8],
    pub method: &'a [u8],
}

impl<'a> CSeq<'a> {
    pub fn parse(value: &'a [u8]) -> Self {
        let value = value.trim_ascii();
        let split = value
            .iter()
            .position(|b| b.is_ascii_whitespace())
            .unwrap_or(value.len());
        CSeq {
            number: parse_u32(&value[..split]),
            number_raw: &value[..split],
            method: value[split..].trim_ascii(),
        }
    }
}

/// The value of the first SDP line of `kind` (`b's'`, `b'o'`...) in a body.
pub fn sdp_line(body: &[u8], kind: u8) -> Option<&[u8]> {
    body.split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .find(|l| l.len() >= 2 && l[0] == kind && l[1] == b'=')
        .map(|l| &l[2..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_fields() {
        let v = Via::parse(b"SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-1047900479;rport");
        assert_eq!(v.transport, b"UDP");
        assert_eq!(v.host, b"127.0.0.1");
        assert_eq!(v.port, Some(5060));
        assert_eq!(v.branch(), Some(&b"z9hG4bK-1047900479"[..]));
        assert_eq!(v.param(b"rport"), Some(&b""[..]));
        let v = Via::parse(b"SIP/2.0/TCP nm;branch=foo");
        assert_eq!((v.host, v.port), (&b"nm"[..], None));
        let v = Via::parse(b"SIP/2.0/UDP [2001:db8::1]:5070;rport;branch=x");
        assert_eq!((v.host, v.port), (&b"[2001:db8::1]"[..], Some(5070)));
        let v = Via::parse(b"SIP/2.0/UDP 162.217.96.20:0;branch=z9hG4bK-1;rport");
        assert_eq!((v.port, v.port_raw), (Some(0), &b"0"[..]));
        let v = Via::parse(b"");
        assert_eq!(v.host, b"");
    }

    #[test]
    fn name_addr_forms() {
        let f = NameAddr::parse(
            b"\"sipvicious\"<sip:100@1.1.1.1> tag=34353131313634613133633401353835363538393133",
        );
        assert_eq!(f.display, Some(&b"sipvicious"[..]));
        assert_eq!(f.gap, b"");
        assert_eq!(f.uri.user, Some(&b"100"[..]));
        assert_eq!(f.uri.host, b"1.1.1.1");
        assert_eq!(f.params_sep, b" ");
        assert_eq!(
            f.tag,
            Some(&b"34353131313634613133633401353835363538393133"[..])
        );

        let f = NameAddr::parse(b"\"100\" <sip:100@192.0.2.1>;tag=3206210844");
        assert_eq!(f.gap, b" ");
        assert_eq!(f.params_sep, b";");
        assert_eq!(f.tag, Some(&b"3206210844"[..]));

        let f = NameAddr::parse(b"sip:sipsak@host.example:5060;tag=7a3b1c");
        assert!(!f.angle);
        assert_eq!(f.display, None);
        assert_eq!(f.uri.user, Some(&b"sipsak"[..]));
        assert_eq!(f.uri.port, Some(5060));
        assert_eq!(f.tag, Some(&b"7a3b1c"[..]));

        let f = NameAddr::parse(b"sipp <sip:sipp@10.0.0.1:5061>;tag=123SIPpTag001");
        assert_eq!(f.display, Some(&b"sipp"[..]));
        assert_eq!(f.gap, b" ");
        assert_eq!(f.uri.port, Some(5061));

        let f = NameAddr::parse(b"\"x\"<sip:a@b>; tag=1");
        assert_eq!(f.params_sep, b"; ");
        assert_eq!(f.tag, Some(&b"1"[..]));

        let f = NameAddr::parse(b"test ;tag=325602560");
        assert_eq!(f.tag, Some(&b"325602560"[..]));
        assert_eq!(f.uri.host, b"test");

        let f = NameAddr::parse(b"\"unterminated <sip:x");
        assert_eq!(f.uri.host, b"");
        let f = NameAddr::parse(b"<sip:x");
        assert_eq!(f.uri.host, b"x");
    }

    #[test]
    fn uri_forms() {
        let u = Uri::parse(b"sip:100@192.0.2.1");
        assert_eq!(
            (u.scheme, u.user, u.host),
            (&b"sip"[..], Some(&b"100"[..]), &b"192.0.2.1"[..])
        );
        let u = Uri::parse(b"sip:nm");
        assert_eq!((u.user, u.host), (None, &b"nm"[..]));
        let u = Uri::parse(b"sip:user:pw@h:5;transport=udp?x=y");
        assert_eq!(
            (u.user, u.host, u.port),
            (Some(&b"user"[..]), &b"h"[..], Some(5))
        );
        assert_eq!(u.params, b"transport=udp?x=y");
        let u = Uri::parse(b"<172.19.6.194>");
        assert_eq!(u.scheme, b"");
    }

    #[test]
    fn cseq_and_sdp() {
        assert_eq!(
            CSeq::parse(b"1 OPTIONS"),
            CSeq {
                number: Some(1),
                number_raw: b"1",
                method: b"OPTIONS"
            }
        );
        assert_eq!(CSeq::parse(b"x").number, None);
        let body = b"v=0\r\no=test 1 2 IN IP4 1.2.3.4\r\ns=X-Lite\r\n";
        assert_eq!(sdp_line(body, b's'), Some(&b"X-Lite"[..]));
        assert_eq!(sdp_line(body, b'm'), None);
    }
}
