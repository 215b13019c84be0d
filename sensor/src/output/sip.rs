//! The `sip` object of an event: what the parser saw, every attacker string escaped and bounded.
//! Field names are part of the event schema: add, never rename.

use serde::Serialize;

use crate::{
    escape::escape_bounded,
    sip::{
        HeaderName, SipMessage, StartLine,
        fields::{CSeq, NameAddr, Via, sdp_line},
        message::{header_flags, parse_u32},
    },
};

/// Longest attacker string kept in a field (input bytes, before escaping).
pub const FIELD_MAX: usize = 256;
/// Longest header name kept in the header lists.
pub(crate) const NAME_MAX: usize = 48;
/// Quirks listed at most.
pub(crate) const QUIRKS_MAX: usize = 32;

fn esc(b: &[u8]) -> String {
    escape_bounded(b, FIELD_MAX)
}

#[derive(Serialize, Debug)]
pub struct SipDoc {
    /// `sip_request`, `sip_response`, `bare_method`, `http`, `tls`, `text`, `binary`, `empty`.
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The message looks cut (capture, unterminated header line, short body).
    pub truncated: bool,
    /// The blank line after the headers was seen.
    pub headers_complete: bool,
    /// `crlf`, `lf`, `mixed` or `none`.
    pub line_endings: &'static str,
    pub header_count: usize,
    /// Header lines beyond the parser's limit, counted but not kept.
    #[serde(skip_serializing_if = "is_zero")]
    pub headers_overflow: u32,
    /// Header names in wire order, canonical when known (`v` shows as `Via`).
    pub header_order: Vec<String>,
    /// Header names in wire order as spelled.
    pub header_names: Vec<String>,
    /// Spacing and syntax oddities: `sep:Content-Length="  "`, `name_not_token:User Agent`...
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub quirks: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<ViaDoc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<AddrDoc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<AddrDoc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contact: Option<AddrDoc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cseq: Option<CSeqDoc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_forwards: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_length: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_len: Option<usize>,
    /// SDP `s=` line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sdp_session: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Serialize, Debug)]
pub struct ViaDoc {
    pub transport: String,
    pub host: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    pub params: String,
}

#[derive(Serialize, Debug)]
pub struct AddrDoc {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
    pub uri: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    pub host: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

#[derive(Serialize, Debug)]
pub struct CSeqDoc {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num: Option<u32>,
    pub method: String,
}

impl AddrDoc {
    fn new(a: &NameAddr<'_>) -> Self {
        AddrDoc {
            display: a.display.map(esc),
            uri: esc(a.uri.raw),
            user: a.uri.user.map(esc),
            host: esc(a.uri.host),
            port: a.uri.port,
            tag: a.tag.map(esc),
        }
    }
}

impl SipDoc {
    pub fn new(msg: &SipMessage<'_>) -> Self {
        let (method, uri, version, status_code, reason) = match msg.start_line() {
            StartLine::Request {
                method,
                uri,
                version,
            } => (
                Some(esc(method)),
                Some(esc(uri)),
                Some(esc(version)),
                None,
                None,
            ),
            StartLine::Response {
                version,
                code,
                reason,
            } => (
                None,
                None,
                Some(esc(version)),
                Some(code),
                Some(esc(reason)),
            ),
            StartLine::None => (None, None, None, None, None),
        };
        let mut quirks = Vec::new();
        let mut quirk = |q: String| {
            if quirks.len() < QUIRKS_MAX {
                quirks.push(q);
            }
        };
        for h in msg.headers() {
            let name = escape_bounded(h.raw_name, NAME_MAX);
            if h.has(header_flags::NO_COLON) {
                quirk(format!("no_colon:{}", escape_bounded(h.value, NAME_MAX)));
                continue;
            }
            if h.has(header_flags::NAME_NOT_TOKEN) {
                quirk(format!("name_not_token:{name}"));
            }
            if h.name == HeaderName::Other
                && !h.has(header_flags::NAME_NOT_TOKEN)
                && h.raw_name.contains(&b'_')
            {
                quirk(format!("underscore_name:{name}"));
            }
            if h.has(header_flags::SPACE_BEFORE_COLON) {
                quirk(format!("space_before_colon:{name}"));
            }
            if h.separator != b" " {
                quirk(format!("sep:{name}=\"{}\"", escape_bounded(h.separator, 8)));
            }
            if h.has(header_flags::FOLDED) {
                quirk(format!("folded:{name}"));
            }
            if h.has(header_flags::PARTIAL) {
                quirk(format!("partial:{name}"));
            }
        }
        if msg.is_sip() && !msg.headers_complete() && !msg.truncated() {
            quirk("no_final_blank_line".to_string());
        }
        SipDoc {
            kind: msg.kind().as_str(),
            method,
            uri,
            version,
            status_code,
            reason,
            truncated: msg.truncated(),
            headers_complete: msg.headers_complete(),
            line_endings: msg.line_endings().as_str(),
            header_count: msg.header_count(),
            headers_overflow: msg.headers_overflow(),
            header_order: msg
                .headers()
                .map(|h| escape_bounded(h.order_name(), NAME_MAX))
                .collect(),
            header_names: msg
                .headers()
                .map(|h| escape_bounded(h.raw_name, NAME_MAX))
                .collect(),
            quirks,
            via: msg.header_value(HeaderName::Via).map(|v| {
                let via = Via::parse(v);
                ViaDoc {
                    transport: esc(via.transport),
                    host: esc(via.host),
                    port: via.port,
                    branch: via.branch().map(esc),
                    params: esc(via.params),
                }
            }),
            from: msg
                .header_value(HeaderName::From)
                .map(|v| AddrDoc::new(&NameAddr::parse(v))),
            to: msg
                .header_value(HeaderName::To)
                .map(|v| AddrDoc::new(&NameAddr::parse(v))),
            contact: msg
                .header_value(HeaderName::Contact)
                .map(|v| AddrDoc::new(&NameAddr::parse(v))),
            call_id: msg.header_value(HeaderName::CallId).map(esc),
            cseq: msg.header_value(HeaderName::CSeq).map(|v| {
                let c = CSeq::parse(v);
                CSeqDoc {
                    num: c.number,
                    method: esc(c.method),
                }
            }),
            user_agent: msg.header_value(HeaderName::UserAgent).map(esc),
            max_forwards: msg
                .header_value(HeaderName::MaxForwards)
                .and_then(parse_u32),
            content_length: msg.content_length(),
            body_len: msg.body().map(<[u8]>::len),
            sdp_session: msg.body().and_then(|b| sdp_line(b, b's')).map(esc),
        }
    }
}

impl SipDoc {
    /// Only what the aggregator reads (kind, method, User-Agent), escaped as [`SipDoc::new`]
    /// escapes them: for the pipeline when the event itself is written by `output::event`, so
    /// that no one pays for a document nobody serialises.
    pub fn summary(msg: &SipMessage<'_>) -> Self {
        let method = match msg.start_line() {
            StartLine::Request { method, .. } => Some(esc(method)),
            _ => None,
        };
        SipDoc {
            kind: msg.kind().as_str(),
            method,
            uri: None,
            version: None,
            status_code: None,
            reason: None,
            truncated: msg.truncated(),
            headers_complete: msg.headers_complete(),
            line_endings: msg.line_endings().as_str(),
            header_count: msg.header_count(),
            headers_overflow: msg.headers_overflow(),
            header_order: Vec::new(),
            header_names: Vec::new(),
            quirks: Vec::new(),
            via: None,
            from: None,
            to: None,
            contact: None,
            call_id: None,
            cseq: None,
            user_agent: msg.header_value(HeaderName::UserAgent).map(esc),
            max_forwards: None,
            content_length: None,
            body_len: None,
            sdp_session: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_carries_what_the_aggregator_reads_as_the_full_document_does() {
        let msg = SipMessage::parse(
            b"OPTIONS sip:100@192.0.2.1 SIP/2.0\r\nUser-Agent: friendly\x1b[31mscanner\r\n\r\n",
        );
        let (full, summary) = (SipDoc::new(&msg), SipDoc::summary(&msg));
        assert_eq!(summary.method, full.method);
        assert_eq!(summary.user_agent, full.user_agent);
        assert_eq!(summary.kind, full.kind);
        assert!(
            summary
                .user_agent
                .as_deref()
                .is_some_and(|u| !u.contains('\x1b'))
        );
    }

    #[test]
    fn document_of_a_quirky_request() {
        let msg = SipMessage::parse(
            b"REGISTER sip:x SIP/2.0\r\nMax_forwards: 70\r\nUser Agent: SIPScan 1.0\r\nContent-Length:  0\r\nv: SIP/2.0/TCP h:1;branch=b\r\n\r\n",
        );
        let doc = SipDoc::new(&msg);
        let json = serde_json::to_value(&doc).unwrap();
        assert_eq!(json["kind"], "sip_request");
        assert_eq!(json["method"], "REGISTER");
        assert_eq!(
            json["header_order"],
            serde_json::json!(["Max_forwards", "User Agent", "Content-Length", "Via"])
        );
        assert_eq!(json["header_names"][3], "v");
        let quirks: Vec<&str> = doc.quirks.iter().map(String::as_str).collect();
        assert!(
            quirks.contains(&"underscore_name:Max_forwards"),
            "{quirks:?}"
        );
        assert!(quirks.contains(&"name_not_token:User Agent"), "{quirks:?}");
        assert!(quirks.contains(&"sep:Content-Length=\"  \""), "{quirks:?}");
        assert_eq!(json["via"]["branch"], "b");
        assert_eq!(json["via"]["transport"], "TCP");
        assert!(json.get("headers_overflow").is_none());
    }

    #[test]
    fn attacker_strings_are_escaped_and_bounded() {
        let mut p = b"OPTIONS sip:x SIP/2.0\r\nUser-Agent: \x1b[31m".to_vec();
        p.extend(std::iter::repeat_n(b'A', 5000));
        p.extend_from_slice(b"\r\n\r\n");
        let doc = SipDoc::new(&SipMessage::parse(&p));
        let ua = doc.user_agent.unwrap();
        assert!(ua.starts_with("\\x1b[31m"));
        assert!(ua.len() < FIELD_MAX + 40);
        assert!(ua.contains("...[+"));
    }
}
