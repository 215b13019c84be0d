//! One request over one transport, and what came back.

use std::{io, net::SocketAddr, time::Duration};

use serde::Serialize;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpStream, UdpSocket},
    time::{Instant, timeout_at},
};

use super::{
    ProbeOptions, RateLimiter,
    message::{Method, Request},
};
use crate::{
    escape::escape_bounded,
    record::Transport,
    rogue::shape::{self, Shape},
};

/// RFC 3261 T2: the cap on the retransmission interval.
const T2: Duration = Duration::from_secs(4);
/// Largest reply kept from a TCP stream; a SIP daemon's answer to these requests is far smaller.
const MAX_REPLY: usize = 64 * 1024;

/// What one request got. Byte fields are raw, as the target sent them: serialized escaped
/// (see [`crate::escape`]), and to be escaped before any other display.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A SIP status line. `code` is the final code if one came, else the last provisional one
    /// (0 if the peer sent a SIP request instead of an answer).
    Sip {
        code: u16,
        reason: Vec<u8>,
        /// A final (200-699) answer came.
        is_final: bool,
        /// The answer carried our Call-ID.
        call_id_matched: bool,
        /// `Server:` or `User-Agent:` value.
        server: Option<Vec<u8>>,
    },
    /// Bytes that are not SIP.
    NonSip { sample: Vec<u8> },
    /// Sent; nothing came back before the timeout.
    Timeout,
    /// TCP: the connection was accepted, then closed or reset with no reply.
    ClosedWithoutReply,
    /// TCP RST to the SYN, or ICMP port unreachable for UDP.
    Refused,
    /// TCP: neither SYN-ACK nor RST before the connect timeout.
    ConnectTimeout,
    /// ICMP host or network unreachable, or administratively prohibited.
    Unreachable { error: String },
    /// A local failure (no socket, no route ...): not evidence about the target.
    LocalError { error: String },
}

impl Outcome {
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Sip { .. } => "sip",
            Outcome::NonSip { .. } => "non_sip",
            Outcome::Timeout => "timeout",
            Outcome::ClosedWithoutReply => "closed_without_reply",
            Outcome::Refused => "refused",
            Outcome::ConnectTimeout => "connect_timeout",
            Outcome::Unreachable { .. } => "unreachable",
            Outcome::LocalError { .. } => "local_error",
        }
    }
}

impl Serialize for Outcome {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("kind", self.kind())?;
        match self {
            Outcome::Sip {
                code,
                reason,
                is_final,
                call_id_matched,
                server,
            } => {
                map.serialize_entry("code", code)?;
                map.serialize_entry("reason", &escape_bounded(reason, 128))?;
                map.serialize_entry("final", is_final)?;
                map.serialize_entry("call_id_matched", call_id_matched)?;
                if let Some(server) = server {
                    map.serialize_entry("server", &escape_bounded(server, 128))?;
                }
            }
            Outcome::NonSip { sample } => {
                map.serialize_entry("sample", &escape_bounded(sample, 256))?;
            }
            Outcome::Unreachable { error } | Outcome::LocalError { error } => {
                map.serialize_entry("error", error)?;
            }
            _ => {}
        }
        map.end()
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Attempt {
    pub method: Method,
    #[serde(serialize_with = "transport_name")]
    pub transport: Transport,
    /// Datagrams sent (UDP: 1 + retransmissions) or 1 for TCP once connected, 0 if not.
    pub sent: u32,
    pub elapsed_ms: u64,
    pub outcome: Outcome,
}

fn transport_name<S: serde::Serializer>(t: &Transport, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(t.as_str())
}

impl Serialize for Method {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

fn classify_error(e: &io::Error) -> Outcome {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => Outcome::Refused,
        Some(libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EACCES | libc::EPERM) => {
            Outcome::Unreachable {
                error: e.to_string(),
            }
        }
        Some(libc::ETIMEDOUT) => Outcome::ConnectTimeout,
        _ => Outcome::LocalError {
            error: e.to_string(),
        },
    }
}

/// A final-or-provisional SIP answer parsed out of `bytes` (one whole message's header block).
fn sip_outcome(bytes: &[u8], code: u16, reason: &[u8], call_id: &str) -> Outcome {
    Outcome::Sip {
        code,
        reason: reason.iter().take(128).copied().collect(),
        is_final: code >= 200,
        call_id_matched: shape::header(bytes, "Call-ID")
            .or_else(|| shape::header(bytes, "i"))
            .is_some_and(|v| v == call_id.as_bytes()),
        server: shape::header(bytes, "Server")
            .or_else(|| shape::header(bytes, "User-Agent"))
            .map(|v| v.iter().take(128).copied().collect()),
    }
}

fn unspecified_for(target: SocketAddr) -> SocketAddr {
    match target {
        SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
        SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
    }
}

/// One request over UDP with RFC 3261 retransmissions: sent at 0, T1, 3*T1, 7*T1 ... (the
/// interval doubling up to T2), at most `retransmissions` times, until an answer or the timeout
/// (a shortened Timer B/F: 64*T1 is too long for a survey). A provisional answer stops the
/// retransmissions and the wait goes on for a final one. A connected socket is used so that an
/// ICMP port unreachable comes back as ECONNREFUSED.
pub async fn udp(
    target: SocketAddr,
    method: Method,
    options: &ProbeOptions,
    limiter: &RateLimiter,
) -> Attempt {
    let start = Instant::now();
    let mut attempt = Attempt {
        method,
        transport: Transport::Udp,
        sent: 0,
        elapsed_ms: 0,
        outcome: Outcome::Timeout,
    };
    let socket = match UdpSocket::bind(unspecified_for(target)).await {
        Ok(s) => s,
        Err(e) => {
            attempt.outcome = Outcome::LocalError {
                error: e.to_string(),
            };
            return attempt;
        }
    };
    if let Err(e) = socket.connect(target).await {
        attempt.outcome = classify_error(&e);
        return attempt;
    }
    let local = match socket.local_addr() {
        Ok(a) => a,
        Err(e) => {
            attempt.outcome = Outcome::LocalError {
                error: e.to_string(),
            };
            return attempt;
        }
    };
    let request = Request::new(method, Transport::Udp, target, local);
    let bytes = request.encode();
    let deadline = start + options.timeout;
    let mut interval = options.t1;
    let mut next_send = Some(start);
    let mut provisional: Option<Outcome> = None;
    let mut buf = vec![0u8; 65536];
    attempt.outcome = loop {
        if let Some(at) = next_send
            && Instant::now() >= at
        {
            limiter.acquire().await;
            if let Err(e) = socket.send(&bytes).await {
                break classify_error(&e);
            }
            attempt.sent += 1;
            next_send =
                (attempt.sent <= options.retransmissions).then(|| Instant::now() + interval);
            interval = (interval * 2).min(T2);
        }
        let wake = next_send.map_or(deadline, |at| at.min(deadline));
        match timeout_at(wake, socket.recv(&mut buf)).await {
            Err(_) if Instant::now() >= deadline => {
                break match provisional.take() {
                    Some(p) => {
                        if method == Method::Invite {
                            limiter.acquire().await;
                            let _ = socket.send(&request.cancel()).await;
                        }
                        p
                    }
                    None => Outcome::Timeout,
                };
            }
            Err(_) => continue,
            Ok(Err(e)) => break classify_error(&e),
            Ok(Ok(n)) => {
                let datagram = &buf[..n];
                match shape::classify(datagram) {
                    Shape::Empty | Shape::Keepalive => continue,
                    Shape::Response { code, reason } => {
                        let outcome = sip_outcome(datagram, code, reason, request.call_id());
                        if code < 200 {
                            next_send = None;
                            provisional = Some(outcome);
                            continue;
                        }
                        if method == Method::Invite {
                            limiter.acquire().await;
                            let _ = socket.send(&request.ack(datagram, code)).await;
                            if (200..300).contains(&code) {
                                limiter.acquire().await;
                                let _ = socket.send(&request.bye(datagram)).await;
                            }
                        }
                        break outcome;
                    }
                    Shape::Request { .. } => {
                        break Outcome::Sip {
                            code: 0,
                            reason: Vec::new(),
                            is_final: false,
                            call_id_matched: false,
                            server: None,
                        };
                    }
                    Shape::Partial | Shape::NotSip => {
                        break Outcome::NonSip {
                            sample: datagram.iter().take(256).copied().collect(),
                        };
                    }
                }
            }
        }
    };
    attempt.elapsed_ms = start.elapsed().as_millis() as u64;
    attempt
}

/// One request over its own TCP connection: connect (the kernel retransmits SYNs) within the
/// connect timeout, write the request, read until a final answer, non-SIP bytes, the peer's
/// close, or the timeout.
pub async fn tcp(
    target: SocketAddr,
    method: Method,
    options: &ProbeOptions,
    limiter: &RateLimiter,
) -> Attempt {
    let start = Instant::now();
    let mut attempt = Attempt {
        method,
        transport: Transport::Tcp,
        sent: 0,
        elapsed_ms: 0,
        outcome: Outcome::Timeout,
    };
    limiter.acquire().await;
    let mut stream =
        match timeout_at(start + options.connect_timeout, TcpStream::connect(target)).await {
            Err(_) => {
                attempt.outcome = Outcome::ConnectTimeout;
                attempt.elapsed_ms = start.elapsed().as_millis() as u64;
                return attempt;
            }
            Ok(Err(e)) => {
                attempt.outcome = classify_error(&e);
                attempt.elapsed_ms = start.elapsed().as_millis() as u64;
                return attempt;
            }
            Ok(Ok(s)) => s,
        };
    let local = match stream.local_addr() {
        Ok(a) => a,
        Err(e) => {
            attempt.outcome = Outcome::LocalError {
                error: e.to_string(),
            };
            return attempt;
        }
    };
    let request = Request::new(method, Transport::Tcp, target, local);
    limiter.acquire().await;
    let deadline = Instant::now() + options.timeout;
    attempt.outcome = match timeout_at(deadline, stream.write_all(&request.encode())).await {
        Err(_) => Outcome::Timeout,
        Ok(Err(e)) if is_reset(&e) => Outcome::ClosedWithoutReply,
        Ok(Err(e)) => classify_error(&e),
        Ok(Ok(())) => {
            attempt.sent = 1;
            read_answer(&mut stream, &request, deadline, limiter).await
        }
    };
    let _ = stream.shutdown().await;
    attempt.elapsed_ms = start.elapsed().as_millis() as u64;
    attempt
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
    )
}

/// Reads SIP messages from the stream until a final answer; 1xx answers are skipped over
/// (their bodies too, by Content-Length).
async fn read_answer(
    stream: &mut TcpStream,
    request: &Request,
    deadline: Instant,
    limiter: &RateLimiter,
) -> Outcome {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut provisional: Option<Outcome> = None;
    let mut chunk = [0u8; 4096];
    loop {
        // Judge what has arrived so far.
        let start = buf
            .iter()
            .position(|b| *b != b'\r' && *b != b'\n')
            .unwrap_or(buf.len());
        buf.drain(..start);
        match shape::classify(&buf) {
            Shape::Empty | Shape::Keepalive | Shape::Partial => {}
            Shape::NotSip => {
                return Outcome::NonSip {
                    sample: buf.iter().take(256).copied().collect(),
                };
            }
            Shape::Request { .. } => {
                return Outcome::Sip {
                    code: 0,
                    reason: Vec::new(),
                    is_final: false,
                    call_id_matched: false,
                    server: None,
                };
            }
            Shape::Response { code, reason } => {
                if let Some(head_end) = shape::find(&buf, b"\r\n\r\n") {
                    let outcome =
                        sip_outcome(&buf[..head_end + 4], code, reason, request.call_id());
                    if code >= 200 {
                        if request.method == Method::Invite {
                            let message = buf[..head_end + 4].to_vec();
                            limiter.acquire().await;
                            let _ = timeout_at(
                                deadline,
                                stream.write_all(&request.ack(&message, code)),
                            )
                            .await;
                            if (200..300).contains(&code) {
                                limiter.acquire().await;
                                let _ =
                                    timeout_at(deadline, stream.write_all(&request.bye(&message)))
                                        .await;
                            }
                        }
                        return outcome;
                    }
                    let body = shape::header(&buf[..head_end], "Content-Length")
                        .or_else(|| shape::header(&buf[..head_end], "l"))
                        .and_then(|v| std::str::from_utf8(v).ok())
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    let whole = (head_end + 4).saturating_add(body);
                    if buf.len() >= whole {
                        buf.drain(..whole);
                        provisional = Some(outcome);
                        continue;
                    }
                }
            }
        }
        if buf.len() >= MAX_REPLY {
            return provisional.unwrap_or(Outcome::NonSip {
                sample: buf.iter().take(256).copied().collect(),
            });
        }
        match timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => {
                return match provisional {
                    Some(p) => {
                        if request.method == Method::Invite {
                            limiter.acquire().await;
                            let _ = stream.write_all(&request.cancel()).await;
                        }
                        p
                    }
                    None if buf.is_empty() => Outcome::Timeout,
                    // A partial first line that never completed.
                    None => Outcome::NonSip {
                        sample: buf.iter().take(256).copied().collect(),
                    },
                };
            }
            Ok(Ok(0)) => {
                return match provisional {
                    Some(p) => p,
                    None if buf.is_empty() => Outcome::ClosedWithoutReply,
                    None => match shape::classify(&buf) {
                        Shape::Response { code, reason } => {
                            sip_outcome(&buf, code, reason, request.call_id())
                        }
                        _ => Outcome::NonSip {
                            sample: buf.iter().take(256).copied().collect(),
                        },
                    },
                };
            }
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) if is_reset(&e) => {
                return provisional.unwrap_or(if buf.is_empty() {
                    Outcome::ClosedWithoutReply
                } else {
                    Outcome::NonSip {
                        sample: buf.iter().take(256).copied().collect(),
                    }
                });
            }
            Ok(Err(e)) => return provisional.unwrap_or_else(|| classify_error(&e)),
        }
    }
}
