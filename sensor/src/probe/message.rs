//! Well-formed SIP requests for the probe (RFC 3261 section 8.1.1): OPTIONS, INVITE with an SDP
//! offer that asks for no media, REGISTER that creates no binding, and the ACK, CANCEL and BYE
//! that close an INVITE properly.

use std::{
    hash::{BuildHasher as _, Hasher as _, RandomState},
    net::{IpAddr, SocketAddr},
    sync::atomic::{AtomicU64, Ordering},
};

use crate::{record::Transport, rogue::shape};

/// The probe's User-Agent: it says what it is, so that an operator reading a server's log
/// knows who asked.
pub const USER_AGENT: &str = concat!("sip-darknet-sensor-probe/", env!("CARGO_PKG_VERSION"));

/// The user part of every URI the probe puts in a request: an unlikely account, so a genuine
/// daemon answers INVITE with a specific error (404, 480, 403, 401 ...).
pub const PROBE_USER: &str = "sensor-probe";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Method {
    Options,
    Invite,
    Register,
}

impl Method {
    pub const ALL: [Method; 3] = [Method::Options, Method::Invite, Method::Register];

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Options => "OPTIONS",
            Method::Invite => "INVITE",
            Method::Register => "REGISTER",
        }
    }
}

impl std::str::FromStr for Method {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "OPTIONS" => Ok(Method::Options),
            "INVITE" => Ok(Method::Invite),
            "REGISTER" => Ok(Method::Register),
            _ => Err(format!(
                "unknown method `{s}`: expected options, invite or register"
            )),
        }
    }
}

/// A token that is unique within this process and unpredictable across processes (branch,
/// tag and Call-ID material; not a secret).
fn token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

fn host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    }
}

fn hostport(addr: SocketAddr) -> String {
    format!("{}:{}", host(addr.ip()), addr.port())
}

/// One request and what is needed to answer its responses (ACK) or abandon it (CANCEL).
#[derive(Clone, Debug)]
pub struct Request {
    pub method: Method,
    transport: Transport,
    local: SocketAddr,
    request_uri: String,
    to: String,
    from: String,
    branch: String,
    call_id: String,
    cseq: u32,
}

impl Request {
    pub fn new(
        method: Method,
        transport: Transport,
        target: SocketAddr,
        local: SocketAddr,
    ) -> Self {
        let target_host = hostport(target);
        let request_uri = match method {
            // REGISTER's Request-URI names the domain only (RFC 3261 10.2).
            Method::Register => format!("sip:{target_host}"),
            _ => format!("sip:{PROBE_USER}@{target_host}"),
        };
        let to = format!("<sip:{PROBE_USER}@{target_host}>");
        let from = match method {
            Method::Register => to.clone(),
            _ => format!("<sip:{PROBE_USER}@{}>", host(local.ip())),
        };
        Self {
            method,
            transport,
            local,
            request_uri,
            to,
            from: format!("{from};tag={}", &token()[..10]),
            branch: format!("z9hG4bK-{}", token()),
            call_id: format!("{}@{}", token(), host(local.ip())),
            cseq: 1,
        }
    }

    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// The request's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let (extra, body) = match self.method {
            Method::Options => ("Accept: application/sdp\r\n".to_string(), String::new()),
            Method::Invite => (
                "Content-Type: application/sdp\r\n".to_string(),
                self.sdp_offer(),
            ),
            // Expires 0 with a Contact asks to remove that binding: a REGISTER that can never
            // leave a registration behind on a real server.
            Method::Register => ("Expires: 0\r\n".to_string(), String::new()),
        };
        self.build(
            self.method.as_str(),
            &self.branch,
            &self.to,
            self.cseq,
            &extra,
            &body,
            true,
        )
    }

    /// ACK for a final response to this INVITE: in the same transaction (same branch) for a
    /// non-2xx answer (RFC 3261 17.1.1.3); a new transaction for a 2xx. Sent to the target
    /// itself, never to another address a response's Contact names.
    pub fn ack(&self, response: &[u8], code: u16) -> Vec<u8> {
        let to = self.to_with_tag(response);
        let branch = if (200..300).contains(&code) {
            format!("z9hG4bK-{}", token())
        } else {
            self.branch.clone()
        };
        self.build("ACK", &branch, &to, self.cseq, "", "", false)
    }

    /// BYE ending the dialog a 2xx to this INVITE created.
    pub fn bye(&self, response: &[u8]) -> Vec<u8> {
        let to = self.to_with_tag(response);
        self.build(
            "BYE",
            &format!("z9hG4bK-{}", token()),
            &to,
            self.cseq + 1,
            "",
            "",
            false,
        )
    }

    /// CANCEL for this INVITE after a provisional answer and no final one (RFC 3261 9.1).
    pub fn cancel(&self) -> Vec<u8> {
        self.build("CANCEL", &self.branch, &self.to, self.cseq, "", "", false)
    }

    fn to_with_tag(&self, response: &[u8]) -> String {
        // The To header with the tag the server added; its raw bytes are only copied back if
        // they are plain printable text (a hostile server gets no header injection this way).
        shape::header(response, "To")
            .or_else(|| shape::header(response, "t"))
            .filter(|v| v.len() <= 512 && v.iter().all(|b| (0x20..0x7f).contains(b)))
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::to_string)
            .unwrap_or_else(|| self.to.clone())
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        &self,
        method: &str,
        branch: &str,
        to: &str,
        cseq: u32,
        extra: &str,
        body: &str,
        contact: bool,
    ) -> Vec<u8> {
        let transport = self.transport.as_str();
        let local = hostport(self.local);
        let contact = if contact {
            let param = match self.transport {
                Transport::Udp => "",
                Transport::Tcp => ";transport=tcp",
            };
            format!("Contact: <sip:{PROBE_USER}@{local}{param}>\r\n")
        } else {
            String::new()
        };
        format!(
            "{method} {uri} SIP/2.0\r\n\
             Via: SIP/2.0/{transport} {local};branch={branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: {from}\r\n\
             To: {to}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} {method}\r\n\
             {contact}\
             User-Agent: {USER_AGENT}\r\n\
             {extra}\
             Content-Length: {len}\r\n\
             \r\n\
             {body}",
            uri = self.request_uri,
            from = self.from,
            call_id = self.call_id,
            len = body.len(),
        )
        .into_bytes()
    }

    /// An SDP offer with its one stream inactive on the discard port: a valid INVITE body that
    /// asks for no media to be sent anywhere.
    fn sdp_offer(&self) -> String {
        let (net, addr) = match self.local.ip() {
            IpAddr::V4(a) => ("IP4", a.to_string()),
            IpAddr::V6(a) => ("IP6", a.to_string()),
        };
        format!(
            "v=0\r\n\
             o=- 0 0 IN {net} {addr}\r\n\
             s=-\r\n\
             c=IN {net} {addr}\r\n\
             t=0 0\r\n\
             m=audio 9 RTP/AVP 0\r\n\
             a=rtpmap:0 PCMU/8000\r\n\
             a=inactive\r\n"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rogue::shape::{Shape, classify};

    fn addrs() -> (SocketAddr, SocketAddr) {
        (
            "203.0.113.10:5060".parse().unwrap(),
            "198.51.100.2:40000".parse().unwrap(),
        )
    }

    #[test]
    fn requests_are_well_formed() {
        let (target, local) = addrs();
        for method in Method::ALL {
            for transport in [Transport::Udp, Transport::Tcp] {
                let req = Request::new(method, transport, target, local);
                let bytes = req.encode();
                let text = String::from_utf8(bytes.clone()).unwrap();
                assert!(
                    matches!(classify(&bytes), Shape::Request { method: m } if m == method.as_str().as_bytes()),
                    "{text}"
                );
                let head_end = text.find("\r\n\r\n").unwrap() + 4;
                let body = &text[head_end..];
                let declared: usize = shape::header(&bytes, "Content-Length")
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap();
                assert_eq!(declared, body.len(), "{text}");
                assert!(text.contains(&format!("User-Agent: {USER_AGENT}\r\n")));
                assert!(text.contains(&format!(
                    "Via: SIP/2.0/{} 198.51.100.2:40000;branch=z9hG4bK-",
                    transport.as_str()
                )));
                assert!(text.contains("CSeq: 1 "), "{text}");
                for line in text[..head_end].lines() {
                    assert!(
                        line.is_empty() || line.contains(':') || line.ends_with("SIP/2.0"),
                        "{line}"
                    );
                }
            }
        }
        let register = String::from_utf8(
            Request::new(Method::Register, Transport::Udp, target, local).encode(),
        )
        .unwrap();
        assert!(register.starts_with("REGISTER sip:203.0.113.10:5060 SIP/2.0\r\n"));
        assert!(register.contains("Expires: 0\r\n"));
        let invite =
            String::from_utf8(Request::new(Method::Invite, Transport::Udp, target, local).encode())
                .unwrap();
        assert!(invite.contains("a=inactive\r\n"));
    }

    #[test]
    fn ack_copies_the_to_tag_and_keeps_the_branch_for_errors() {
        let (target, local) = addrs();
        let req = Request::new(Method::Invite, Transport::Udp, target, local);
        let response = format!(
            "SIP/2.0 404 Not Found\r\nTo: <sip:{PROBE_USER}@203.0.113.10:5060>;tag=abc\r\n\r\n"
        );
        let ack = String::from_utf8(req.ack(response.as_bytes(), 404)).unwrap();
        assert!(ack.starts_with(&format!(
            "ACK sip:{PROBE_USER}@203.0.113.10:5060 SIP/2.0\r\n"
        )));
        assert!(ack.contains(";tag=abc\r\n"));
        assert!(ack.contains(&req.branch));
        assert!(ack.contains("CSeq: 1 ACK\r\n"));
        let ack2xx = String::from_utf8(req.ack(response.as_bytes(), 200)).unwrap();
        assert!(!ack2xx.contains(&req.branch));
        let bye = String::from_utf8(req.bye(response.as_bytes())).unwrap();
        assert!(bye.contains("CSeq: 2 BYE\r\n"));
        // A hostile To header is not copied.
        let hostile = b"SIP/2.0 404 x\r\nTo: <sip:a>;tag=1\x1b[2J\r\n\r\n";
        let ack = String::from_utf8(req.ack(hostile, 404)).unwrap();
        assert!(!ack.contains('\x1b'));
        let cancel = String::from_utf8(req.cancel()).unwrap();
        assert!(cancel.starts_with("CANCEL ") && cancel.contains("CSeq: 1 CANCEL\r\n"));
    }

    #[test]
    fn ipv6_hosts_are_bracketed() {
        let req = Request::new(
            Method::Options,
            Transport::Udp,
            "[2001:db8::1]:5060".parse().unwrap(),
            "[2001:db8::2]:40000".parse().unwrap(),
        );
        let text = String::from_utf8(req.encode()).unwrap();
        assert!(text.starts_with(&format!(
            "OPTIONS sip:{PROBE_USER}@[2001:db8::1]:5060 SIP/2.0\r\n"
        )));
        assert!(text.contains("Via: SIP/2.0/UDP [2001:db8::2]:40000;"));
    }
}
