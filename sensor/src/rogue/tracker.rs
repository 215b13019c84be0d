//! Passive rogue detection: follows requests and responses per server on a mirrored link.
//!
//! A pure consumer of [`Event`]s: [`Tracker::observe`] takes each captured frame (both
//! directions, so the sensor must run with `--match-source-port`), [`Tracker::poll`] resolves
//! timeouts and returns the servers newly found rogue. Memory is bounded: at most
//! `max_servers` servers and `max_flows_per_server` client flows each; idle servers are evicted,
//! and every eviction is counted.
//!
//! Times are the kernel's CLOCK_MONOTONIC nanoseconds of the records (`poll` takes the same
//! clock), so a capture replayed with its own timestamps works the same way.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
};

use serde::Serialize;

use super::{
    shape::{self, Shape},
    verdict::{self, RogueReason, Signs, Silence, Tally, TransportVerdict, Verdict},
};
use crate::{
    escape::escape_bounded,
    event::Event,
    record::{MatchedOn, Record, Transport},
};

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

/// Bytes of a reply kept as a sample (escaped when reported).
const SAMPLE_BYTES: usize = 96;

#[derive(Clone, Debug)]
pub struct TrackerConfig {
    /// Servers tracked at once; past this the least recently seen are evicted.
    pub max_servers: usize,
    /// Client flows tracked per server; past this the least recently seen is evicted.
    pub max_flows_per_server: usize,
    /// A request with no reply for this long counts as a timeout.
    pub reply_timeout_ns: u64,
    /// A SYN with neither SYN-ACK nor RST for this long counts as a connect timeout.
    pub connect_timeout_ns: u64,
    /// A server (or flow) not seen for this long is forgotten.
    pub idle_timeout_ns: u64,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        Self {
            max_servers: 4096,
            max_flows_per_server: 64,
            reply_timeout_ns: 5_000_000_000,
            connect_timeout_ns: 5_000_000_000,
            idle_timeout_ns: 600_000_000_000,
        }
    }
}

/// A server: the address and port requests go to, and the transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerKey {
    pub addr: SocketAddr,
    pub transport: Transport,
}

/// What the tracker did, for the stats output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TrackerCounters {
    pub events_observed: u64,
    /// Frames that could not be read: TCP segments from a server's side of a flow never seen
    /// opening (nor carrying a request).
    pub events_unattributed: u64,
    pub servers_created: u64,
    pub servers_evicted_idle: u64,
    pub servers_evicted_capacity: u64,
    pub flows_evicted_capacity: u64,
    pub findings: u64,
    /// Servers tracked now.
    pub servers_tracked: u64,
}

impl TrackerCounters {
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> {
        [
            ("events_observed", self.events_observed),
            ("events_unattributed", self.events_unattributed),
            ("servers_created", self.servers_created),
            ("servers_evicted_idle", self.servers_evicted_idle),
            ("servers_evicted_capacity", self.servers_evicted_capacity),
            ("flows_evicted_capacity", self.flows_evicted_capacity),
            ("findings", self.findings),
            ("servers_tracked", self.servers_tracked),
        ]
        .into_iter()
    }
}

#[derive(Clone, Debug, Default)]
struct Flow {
    last_seen_ns: u64,
    /// TCP: a SYN seen, neither SYN-ACK nor RST yet; since when.
    connecting_since: Option<u64>,
    /// TCP: the SYN's sequence number; a retransmitted SYN carries the same one.
    syn_seq: Option<u32>,
    /// A hash of the last request's bytes: a retransmission is the same bytes again.
    last_request: Option<u64>,
    accepted: bool,
    /// A request waiting for its reply, since when.
    request_since: Option<u64>,
    /// A provisional (1xx) answer came; a final one is still due.
    awaiting_final: bool,
    /// The server sent payload on this flow (TCP: later segments may be continuations).
    server_spoke: bool,
    client_closed: bool,
    carried_request: bool,
    /// Resolved; later segments are ignored until the flow is forgotten or reopened.
    done: bool,
}

#[derive(Clone, Debug)]
struct Server {
    last_seen_ns: u64,
    first_wall_ns: u64,
    last_wall_ns: u64,
    tally: Tally,
    flows: HashMap<SocketAddr, Flow>,
    last_status: Option<(u16, Vec<u8>)>,
    server_header: Option<Vec<u8>>,
    non_sip_sample: Option<Vec<u8>>,
    flagged: bool,
}

impl Server {
    fn new(now: u64, wall: u64) -> Self {
        Self {
            last_seen_ns: now,
            first_wall_ns: wall,
            last_wall_ns: wall,
            tally: Tally::default(),
            flows: HashMap::new(),
            last_status: None,
            server_header: None,
            non_sip_sample: None,
            flagged: false,
        }
    }
}

/// A server's state as the tracker judges it now.
#[derive(Clone, Debug, Serialize)]
pub struct ServerReport {
    pub server_ip: IpAddr,
    pub server_port: u16,
    pub proto: &'static str,
    /// Over every transport tracked for this address and port.
    pub verdict: Verdict,
    pub transport_verdict: TransportVerdict,
    pub reasons: Vec<RogueReason>,
    /// 20 points per sign present (see `verdict::Signs::score`).
    pub score: u8,
    pub signs: Signs,
    pub counts: Tally,
    pub clients: usize,
    /// Wall-clock nanoseconds of the first and last frame seen.
    #[serde(skip)]
    pub first_seen_wall_ns: u64,
    #[serde(skip)]
    pub last_seen_wall_ns: u64,
    /// The last SIP status line's code and reason phrase, escaped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_status: Option<String>,
    /// The server's `Server:` (or `User-Agent:`) header, escaped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_header: Option<String>,
    /// The first non-SIP bytes it sent, escaped and bounded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub non_sip_sample: Option<String>,
}

pub struct Tracker {
    config: TrackerConfig,
    servers: HashMap<ServerKey, Server>,
    counters: TrackerCounters,
}

/// Which way a frame goes, as far as SIP roles are concerned.
enum Direction {
    ToServer {
        server: SocketAddr,
        client: SocketAddr,
    },
    FromServer {
        server: SocketAddr,
        client: SocketAddr,
    },
}

impl Tracker {
    pub fn new(config: TrackerConfig) -> Self {
        Self {
            config,
            servers: HashMap::new(),
            counters: TrackerCounters::default(),
        }
    }

    pub fn counters(&self) -> TrackerCounters {
        TrackerCounters {
            servers_tracked: self.servers.len() as u64,
            ..self.counters
        }
    }

    /// Takes one captured frame into account.
    pub fn observe(&mut self, event: &Event<'_>) {
        self.counters.events_observed += 1;
        let record = event.record;
        let now = record.timestamp_ns();
        let transport = record.transport();
        let src = SocketAddr::new(record.src_ip(), record.src_port());
        let dst = SocketAddr::new(record.dst_ip(), record.dst_port());
        let direction = self.direction(&record, src, dst);
        let (server_addr, client, to_server) = match direction {
            Direction::ToServer { server, client } => (server, client, true),
            Direction::FromServer { server, client } => (server, client, false),
        };
        let key = ServerKey {
            addr: server_addr,
            transport,
        };
        if !self.servers.contains_key(&key) {
            // A server is only ever created by what a client sends to it: segments from an
            // unknown server's side of a TCP flow cannot be read without their start.
            if !to_server && transport == Transport::Tcp && record.raw().tcp_flags & TCP_SYN == 0 {
                self.counters.events_unattributed += 1;
                return;
            }
            self.make_room(now);
            self.servers.insert(key, Server::new(now, event.wall_ns));
            self.counters.servers_created += 1;
        }
        let max_flows = self.config.max_flows_per_server;
        let Some(server) = self.servers.get_mut(&key) else {
            return;
        };
        if !to_server
            && transport == Transport::Tcp
            && record.raw().tcp_flags & TCP_SYN == 0
            && !server.flows.contains_key(&client)
        {
            self.counters.events_unattributed += 1;
            return;
        }
        server.last_seen_ns = server.last_seen_ns.max(now);
        server.last_wall_ns = server.last_wall_ns.max(event.wall_ns);
        let evicted = match transport {
            Transport::Udp => udp(server, client, to_server, &record, now, max_flows),
            Transport::Tcp => tcp(server, client, to_server, &record, now, max_flows),
        };
        self.counters.flows_evicted_capacity += evicted;
    }

    fn direction(&self, record: &Record<'_>, src: SocketAddr, dst: SocketAddr) -> Direction {
        let to = Direction::ToServer {
            server: dst,
            client: src,
        };
        let from = Direction::FromServer {
            server: src,
            client: dst,
        };
        let transport = record.transport();
        if transport == Transport::Tcp {
            let flags = record.raw().tcp_flags;
            if flags & TCP_SYN != 0 {
                return if flags & TCP_ACK != 0 { from } else { to };
            }
        }
        match shape::classify(record.payload()) {
            Shape::Request { .. } => return to,
            Shape::Response { .. } => return from,
            _ => {}
        }
        // Known roles decide frames whose content does not (both ports may be 5060).
        let known = |addr: SocketAddr, peer: SocketAddr| {
            self.servers
                .get(&ServerKey { addr, transport })
                .is_some_and(|s| s.flows.contains_key(&peer))
        };
        if known(src, dst) {
            return from;
        }
        if known(dst, src) {
            return to;
        }
        match record.matched_on() {
            MatchedOn::Destination => to,
            MatchedOn::Source => from,
        }
    }

    /// Evicts idle servers, then the least recently seen eighth if still full (amortised: one
    /// sort per `max_servers / 8` new servers, not one scan per server).
    fn make_room(&mut self, now: u64) {
        if self.servers.len() < self.config.max_servers.max(1) {
            return;
        }
        self.evict_idle(now);
        if self.servers.len() < self.config.max_servers.max(1) {
            return;
        }
        let mut ages: Vec<(u64, ServerKey)> = self
            .servers
            .iter()
            .map(|(k, s)| (s.last_seen_ns, *k))
            .collect();
        let n = (ages.len() / 8).max(1);
        ages.select_nth_unstable(n - 1);
        for (_, key) in &ages[..n] {
            self.servers.remove(key);
            self.counters.servers_evicted_capacity += 1;
        }
    }

    fn evict_idle(&mut self, now: u64) {
        let idle = self.config.idle_timeout_ns;
        let before = self.servers.len();
        self.servers
            .retain(|_, s| now.saturating_sub(s.last_seen_ns) < idle);
        self.counters.servers_evicted_idle += (before - self.servers.len()) as u64;
        for server in self.servers.values_mut() {
            server
                .flows
                .retain(|_, f| now.saturating_sub(f.last_seen_ns) < idle);
        }
    }

    /// Resolves timeouts as of `now`, evicts idle servers, and returns a report for each server
    /// that became rogue since the last poll (once per server while it is tracked).
    pub fn poll(&mut self, now: u64) -> Vec<ServerReport> {
        let (reply, connect) = (self.config.reply_timeout_ns, self.config.connect_timeout_ns);
        for server in self.servers.values_mut() {
            for flow in server.flows.values_mut() {
                if let Some(since) = flow.connecting_since
                    && now.saturating_sub(since) >= connect
                {
                    flow.connecting_since = None;
                    flow.done = true;
                    server.tally.connect_timeouts += 1;
                    server.tally.attempts += 1;
                }
                if let Some(since) = flow.request_since
                    && now.saturating_sub(since) >= reply
                {
                    flow.request_since = None;
                    server.tally.reply_timeouts += 1;
                    server.tally.unanswered += 1;
                }
            }
        }
        self.evict_idle(now);
        let mut newly_rogue: Vec<ServerKey> = self
            .servers
            .iter()
            .filter(|(_, s)| {
                !s.flagged
                    && verdict::assess(&s.tally, Silence::Unreadable).0 == TransportVerdict::Rogue
            })
            .map(|(k, _)| *k)
            .collect();
        newly_rogue.sort();
        let mut findings = Vec::with_capacity(newly_rogue.len());
        for key in newly_rogue {
            if let Some(server) = self.servers.get_mut(&key) {
                server.flagged = true;
            }
            if let Some(report) = self.report(&key) {
                findings.push(report);
            }
        }
        self.counters.findings += findings.len() as u64;
        findings
    }

    /// Every tracked server's report, in address order.
    pub fn snapshot(&self) -> Vec<ServerReport> {
        let mut keys: Vec<ServerKey> = self.servers.keys().copied().collect();
        keys.sort();
        keys.iter().filter_map(|k| self.report(k)).collect()
    }

    /// The verdict on an address and port over every transport tracked for it.
    pub fn verdict(&self, addr: SocketAddr) -> Verdict {
        verdict::combine(
            [Transport::Udp, Transport::Tcp]
                .into_iter()
                .filter_map(|transport| self.servers.get(&ServerKey { addr, transport }))
                .map(|s| verdict::assess(&s.tally, Silence::Unreadable).0),
        )
    }

    pub fn report(&self, key: &ServerKey) -> Option<ServerReport> {
        let server = self.servers.get(key)?;
        let (transport_verdict, reasons) = verdict::assess(&server.tally, Silence::Unreadable);
        let signs = Signs::from_tally(&server.tally);
        Some(ServerReport {
            server_ip: key.addr.ip(),
            server_port: key.addr.port(),
            proto: key.transport.as_str(),
            verdict: self.verdict(key.addr),
            transport_verdict,
            reasons,
            score: signs.score(),
            signs,
            counts: server.tally,
            clients: server.flows.len(),
            first_seen_wall_ns: server.first_wall_ns,
            last_seen_wall_ns: server.last_wall_ns,
            last_status: server
                .last_status
                .as_ref()
                .map(|(code, reason)| format!("{code} {}", escape_bounded(reason, SAMPLE_BYTES))),
            server_header: server
                .server_header
                .as_ref()
                .map(|h| escape_bounded(h, SAMPLE_BYTES)),
            non_sip_sample: server
                .non_sip_sample
                .as_ref()
                .map(|s| escape_bounded(s, SAMPLE_BYTES)),
        })
    }
}

/// The flow of `client`, made if needed; evicts the least recently seen flow when full.
/// Returns the flow and how many flows were evicted.
fn flow_entry(
    flows: &mut HashMap<SocketAddr, Flow>,
    client: SocketAddr,
    now: u64,
    max_flows: usize,
) -> (&mut Flow, u64) {
    let mut evicted = 0;
    if !flows.contains_key(&client)
        && flows.len() >= max_flows.max(1)
        && let Some(oldest) = flows
            .iter()
            .min_by_key(|(_, f)| f.last_seen_ns)
            .map(|(k, _)| *k)
    {
        flows.remove(&oldest);
        evicted = 1;
    }
    let flow = flows.entry(client).or_default();
    flow.last_seen_ns = flow.last_seen_ns.max(now);
    (flow, evicted)
}

/// A client's request: starts the wait for a reply, unless one is already pending (a
/// retransmission). ACK expects no answer and is not counted.
fn request(tally: &mut Tally, flow: &mut Flow, method: &[u8], payload: &[u8], now: u64) {
    let mut hasher = std::hash::DefaultHasher::new();
    std::hash::Hash::hash(payload, &mut hasher);
    let hash = std::hash::Hasher::finish(&hasher);
    // Retransmissions (also those after a timeout was counted) are not new requests.
    let retransmission = flow.last_request.replace(hash) == Some(hash);
    if method == b"ACK" || flow.request_since.is_some() || retransmission {
        return;
    }
    tally.requests += 1;
    tally.attempts += 1;
    flow.request_since = Some(now);
    flow.awaiting_final = false;
    flow.carried_request = true;
}

/// The server's payload, if it starts a reply (or is the first thing it says on the flow).
fn reply(server: &mut Server, client: SocketAddr, payload: &[u8]) {
    let Some(flow) = server.flows.get_mut(&client) else {
        return;
    };
    let pending = flow.request_since.is_some();
    let first_words = !flow.server_spoke;
    flow.server_spoke = true;
    let tally = &mut server.tally;
    match shape::classify(payload) {
        Shape::Empty | Shape::Keepalive => {}
        Shape::Response { code, reason } => {
            if pending {
                tally.sip_answered += 1;
                flow.request_since = None;
                if code >= 200 {
                    tally.sip_final += 1;
                } else {
                    flow.awaiting_final = true;
                }
            } else if flow.awaiting_final && code >= 200 {
                tally.sip_final += 1;
                flow.awaiting_final = false;
            } else if first_words {
                // A SIP answer to a request the capture missed: still a daemon speaking SIP.
                tally.sip_answered += 1;
            }
            server.last_status = Some((code, reason.iter().take(SAMPLE_BYTES).copied().collect()));
            if let Some(h) =
                shape::header(payload, "Server").or_else(|| shape::header(payload, "User-Agent"))
            {
                server.server_header = Some(h.iter().take(SAMPLE_BYTES).copied().collect());
            }
        }
        Shape::Request { .. } => {
            // The peer speaks SIP (a UA sending its own requests): an answer of sorts.
            if pending {
                tally.sip_answered += 1;
                flow.request_since = None;
            }
        }
        Shape::Partial | Shape::NotSip => {
            if pending || first_words {
                tally.non_sip_answered += 1;
                if pending {
                    flow.request_since = None;
                }
                if server.non_sip_sample.is_none() {
                    server.non_sip_sample =
                        Some(payload.iter().take(SAMPLE_BYTES).copied().collect());
                }
            }
        }
    }
}

fn udp(
    server: &mut Server,
    client: SocketAddr,
    to_server: bool,
    record: &Record<'_>,
    now: u64,
    max_flows: usize,
) -> u64 {
    let payload = record.payload();
    if to_server {
        let (flow, evicted) = flow_entry(&mut server.flows, client, now, max_flows);
        if let Shape::Request { method } = shape::classify(payload) {
            request(&mut server.tally, flow, method, payload, now);
        }
        evicted
    } else {
        let evicted = match server.flows.get_mut(&client) {
            Some(flow) => {
                flow.last_seen_ns = flow.last_seen_ns.max(now);
                0
            }
            None => flow_entry(&mut server.flows, client, now, max_flows).1,
        };
        // Every datagram is a whole message; the first on a flow and each one answering a
        // pending request count.
        reply(server, client, payload);
        evicted
    }
}

fn tcp(
    server: &mut Server,
    client: SocketAddr,
    to_server: bool,
    record: &Record<'_>,
    now: u64,
    max_flows: usize,
) -> u64 {
    let flags = record.raw().tcp_flags;
    let payload = record.payload();
    if to_server {
        let seq = record.raw().tcp_seq;
        let fresh_syn = flags & TCP_SYN != 0
            && server.flows.get(&client).is_none_or(|f| {
                // A retransmitted SYN (same sequence number) is the same attempt, even after
                // its connect timeout was counted.
                f.syn_seq != Some(seq) && (f.done || f.client_closed || f.syn_seq.is_none())
            });
        if fresh_syn {
            // A new connection on this client port: forget the old one.
            server.flows.remove(&client);
        }
        let (flow, evicted) = flow_entry(&mut server.flows, client, now, max_flows);
        let tally = &mut server.tally;
        if fresh_syn {
            tally.connects += 1;
            flow.connecting_since = Some(now);
            flow.syn_seq = Some(seq);
            return evicted;
        }
        if flow.done {
            return evicted;
        }
        if let Shape::Request { method } = shape::classify(payload) {
            request(tally, flow, method, payload, now);
        }
        if flags & (TCP_FIN | TCP_RST) != 0 {
            flow.client_closed = true;
            if flags & TCP_RST != 0 && flow.request_since.take().is_some() {
                // The client gave up waiting and tore the connection down.
                tally.reply_timeouts += 1;
                tally.unanswered += 1;
            }
        }
        return evicted;
    }
    let Some(flow) = server.flows.get_mut(&client) else {
        return 0;
    };
    flow.last_seen_ns = flow.last_seen_ns.max(now);
    if flow.done {
        return 0;
    }
    let tally = &mut server.tally;
    if flags & TCP_SYN != 0 && flags & TCP_ACK != 0 {
        if flow.connecting_since.take().is_some() {
            flow.accepted = true;
            tally.accepted += 1;
        }
        return 0;
    }
    if flags & TCP_RST != 0 && flow.connecting_since.take().is_some() {
        tally.refused += 1;
        tally.attempts += 1;
        flow.done = true;
        return 0;
    }
    if !payload.is_empty()
        && (flow.request_since.is_some() || flow.awaiting_final || !flow.server_spoke)
    {
        reply(server, client, payload);
    }
    let Some(flow) = server.flows.get_mut(&client) else {
        return 0;
    };
    if flags & (TCP_FIN | TCP_RST) != 0 {
        let tally = &mut server.tally;
        if flow.request_since.take().is_some() {
            tally.unanswered += 1;
            if flow.client_closed {
                // The client had given up waiting; the server only followed its close.
                tally.reply_timeouts += 1;
            } else {
                tally.closed_without_reply += 1;
            }
        }
        flow.done = true;
    }
    0
}

#[cfg(test)]
mod tests {
    use sensor_common::{CaptureRecord, ip_proto, record_flags};

    use super::*;

    const CLIENT: &str = "198.51.100.2";
    const SERVER: &str = "203.0.113.11";
    const SECOND: u64 = 1_000_000_000;

    struct Frame {
        raw: Box<CaptureRecord>,
    }

    fn frame(
        transport: Transport,
        from_server: bool,
        client_port: u16,
        flags: u8,
        payload: &[u8],
        at_s: f64,
    ) -> Frame {
        let mut raw = Box::new(CaptureRecord::zeroed());
        raw.ip_version = 4;
        raw.l4_proto = match transport {
            Transport::Udp => ip_proto::UDP,
            Transport::Tcp => ip_proto::TCP,
        };
        let c: std::net::Ipv4Addr = CLIENT.parse().unwrap();
        let s: std::net::Ipv4Addr = SERVER.parse().unwrap();
        let (src, dst, sport, dport) = if from_server {
            (s, c, 5060, client_port)
        } else {
            (c, s, client_port, 5060)
        };
        raw.src_addr[..4].copy_from_slice(&src.octets());
        raw.dst_addr[..4].copy_from_slice(&dst.octets());
        raw.src_port = sport;
        raw.dst_port = dport;
        raw.flags = if from_server {
            record_flags::MATCHED_SRC_PORT
        } else {
            record_flags::MATCHED_DST_PORT
        };
        raw.tcp_flags = flags;
        raw.payload[..payload.len()].copy_from_slice(payload);
        raw.captured_len = payload.len() as u16;
        raw.payload_len = payload.len() as u16;
        raw.timestamp_ns = (at_s * SECOND as f64) as u64;
        Frame { raw }
    }

    fn feed(tracker: &mut Tracker, frames: &[Frame]) {
        for f in frames {
            let record = Record::new(&f.raw).unwrap();
            tracker.observe(&Event {
                record,
                wall_ns: record.timestamp_ns(),
            });
        }
    }

    const OPTIONS: &[u8] = b"OPTIONS sip:probe@203.0.113.11 SIP/2.0\r\nCall-ID: 1\r\n\r\n";
    const OK: &[u8] = b"SIP/2.0 200 OK\r\nServer: kamailio (5.6.3)\r\n\r\n";

    fn tcp_exchange(port: u16, t: f64, answer: Option<&[u8]>) -> Vec<Frame> {
        use Transport::Tcp;
        let mut v = vec![
            frame(Tcp, false, port, TCP_SYN, b"", t),
            frame(Tcp, true, port, TCP_SYN | TCP_ACK, b"", t + 0.001),
            frame(Tcp, false, port, TCP_ACK, b"", t + 0.002),
            frame(Tcp, false, port, TCP_ACK | 0x08, OPTIONS, t + 0.003),
            frame(Tcp, true, port, TCP_ACK, b"", t + 0.004),
        ];
        if let Some(answer) = answer {
            v.push(frame(Tcp, true, port, TCP_ACK | 0x08, answer, t + 0.005));
        }
        v
    }

    fn server(transport: Transport) -> ServerKey {
        ServerKey {
            addr: SocketAddr::new(SERVER.parse().unwrap(), 5060),
            transport,
        }
    }

    #[test]
    fn genuine_tcp_and_udp() {
        let mut t = Tracker::new(TrackerConfig::default());
        let mut frames = tcp_exchange(40000, 1.0, Some(OK));
        frames.push(frame(Transport::Udp, false, 40001, 0, OPTIONS, 1.1));
        frames.push(frame(Transport::Udp, true, 40001, 0, OK, 1.2));
        feed(&mut t, &frames);
        assert!(t.poll(100 * SECOND).is_empty());
        let addr = server(Transport::Tcp).addr;
        assert_eq!(t.verdict(addr), Verdict::Genuine);
        let r = t.report(&server(Transport::Tcp)).unwrap();
        assert_eq!(r.counts.sip_answered, 1);
        assert_eq!(r.score, 0);
        assert_eq!(r.server_header.as_deref(), Some("kamailio (5.6.3)"));
        assert_eq!(r.last_status.as_deref(), Some("200 OK"));
    }

    #[test]
    fn accepted_silent_listener_flagged_after_timeout() {
        let mut t = Tracker::new(TrackerConfig::default());
        feed(&mut t, &tcp_exchange(40000, 1.0, None));
        assert!(t.poll(2 * SECOND).is_empty(), "still waiting");
        let findings = t.poll(7 * SECOND);
        assert_eq!(findings.len(), 1);
        assert_eq!(
            findings[0].reasons,
            vec![RogueReason::AcceptedNeverAnswered]
        );
        assert_eq!(findings[0].verdict, Verdict::Rogue);
        assert!(t.poll(8 * SECOND).is_empty(), "flagged once");
        assert_eq!(t.counters().findings, 1);
    }

    #[test]
    fn client_giving_up_and_server_following_counts_as_timeout() {
        use Transport::Tcp;
        let mut t = Tracker::new(TrackerConfig::default());
        let mut frames = tcp_exchange(40000, 1.0, None);
        frames.push(frame(Tcp, false, 40000, TCP_FIN | TCP_ACK, b"", 3.0));
        frames.push(frame(Tcp, true, 40000, TCP_FIN | TCP_ACK, b"", 3.001));
        feed(&mut t, &frames);
        let findings = t.poll(3 * SECOND);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].counts.reply_timeouts, 1);
        assert_eq!(findings[0].counts.closed_without_reply, 0);
    }

    #[test]
    fn non_sip_reply_flagged_and_escaped() {
        let mut t = Tracker::new(TrackerConfig::default());
        feed(
            &mut t,
            &[
                frame(Transport::Udp, false, 40001, 0, OPTIONS, 1.0),
                frame(Transport::Udp, true, 40001, 0, b"\x1b[2Jgarbage\r\n", 1.1),
            ],
        );
        let findings = t.poll(SECOND + 200_000_000);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].reasons, vec![RogueReason::NonSipReply]);
        assert_eq!(
            findings[0].non_sip_sample.as_deref(),
            Some("\\x1b[2Jgarbage\\r\\n")
        );
    }

    #[test]
    fn refused_and_filtered_connections() {
        use Transport::Tcp;
        let mut t = Tracker::new(TrackerConfig::default());
        feed(
            &mut t,
            &[
                frame(Tcp, false, 40000, TCP_SYN, b"", 1.0),
                frame(Tcp, true, 40000, TCP_RST | TCP_ACK, b"", 1.001),
            ],
        );
        assert_eq!(t.verdict(server(Tcp).addr), Verdict::NotListening);

        let mut t = Tracker::new(TrackerConfig::default());
        feed(
            &mut t,
            &[
                frame(Tcp, false, 40000, TCP_SYN, b"", 1.0),
                frame(Tcp, false, 40000, TCP_SYN, b"", 2.0),
                frame(Transport::Udp, false, 40001, 0, OPTIONS, 1.0),
            ],
        );
        assert_eq!(t.verdict(server(Tcp).addr), Verdict::Unknown, "not yet");
        assert!(t.poll(10 * SECOND).is_empty());
        let r = t.report(&server(Tcp)).unwrap();
        assert_eq!(
            r.counts.connect_timeouts, 1,
            "one SYN retransmitted is one attempt"
        );
        assert_eq!(r.verdict, Verdict::Filtered);
        // UDP silence alone says nothing to a sensor that cannot see ICMP.
        assert_eq!(
            t.report(&server(Transport::Udp)).unwrap().transport_verdict,
            TransportVerdict::NoEvidence
        );
    }

    #[test]
    fn retransmissions_after_a_timeout_are_not_new_attempts() {
        use Transport::{Tcp, Udp};
        let mut t = Tracker::new(TrackerConfig::default());
        feed(
            &mut t,
            &[
                frame(Tcp, false, 40000, TCP_SYN, b"", 1.0),
                frame(Udp, false, 40001, 0, OPTIONS, 1.0),
            ],
        );
        t.poll(6 * SECOND + 1);
        feed(
            &mut t,
            &[
                frame(Tcp, false, 40000, TCP_SYN, b"", 7.0),
                frame(Udp, false, 40001, 0, OPTIONS, 7.0),
            ],
        );
        t.poll(20 * SECOND);
        let tcp = t.report(&server(Tcp)).unwrap().counts;
        assert_eq!((tcp.connects, tcp.connect_timeouts), (1, 1));
        let udp = t.report(&server(Udp)).unwrap().counts;
        assert_eq!((udp.requests, udp.reply_timeouts), (1, 1));
        // A new SYN (another sequence number) on the same client port is a new attempt.
        let mut again = frame(Tcp, false, 40000, TCP_SYN, b"", 21.0);
        again.raw.tcp_seq = 77;
        feed(&mut t, &[again]);
        assert_eq!(t.report(&server(Tcp)).unwrap().counts.connects, 2);
    }

    #[test]
    fn udp_retransmissions_are_one_request() {
        use Transport::Udp;
        let mut t = Tracker::new(TrackerConfig::default());
        feed(
            &mut t,
            &[
                frame(Udp, false, 40001, 0, OPTIONS, 1.0),
                frame(Udp, false, 40001, 0, OPTIONS, 1.5),
                frame(Udp, false, 40001, 0, OPTIONS, 2.5),
                frame(Udp, true, 40001, 0, OK, 2.6),
            ],
        );
        let r = t.report(&server(Udp)).unwrap();
        assert_eq!((r.counts.requests, r.counts.sip_answered), (1, 1));
    }

    #[test]
    fn memory_is_bounded_and_evictions_counted() {
        let mut t = Tracker::new(TrackerConfig {
            max_servers: 16,
            max_flows_per_server: 4,
            idle_timeout_ns: 50 * SECOND,
            ..TrackerConfig::default()
        });
        for i in 0..100u32 {
            let mut raw = frame(
                Transport::Udp,
                false,
                40000 + i as u16,
                0,
                OPTIONS,
                1.0 + f64::from(i) * 0.01,
            );
            raw.raw.dst_addr[3] = i as u8;
            feed(&mut t, &[raw]);
        }
        assert!(t.counters().servers_tracked <= 16);
        assert_eq!(t.counters().servers_created, 100);
        assert_eq!(
            t.counters().servers_evicted_capacity + t.counters().servers_tracked,
            100
        );
        for i in 0..10u16 {
            feed(
                &mut t,
                &[frame(Transport::Udp, false, 41000 + i, 0, OPTIONS, 2.0)],
            );
        }
        assert_eq!(t.report(&server(Transport::Udp)).unwrap().clients, 4);
        assert_eq!(t.counters().flows_evicted_capacity, 6);
        t.poll(100 * SECOND);
        assert_eq!(t.counters().servers_tracked, 0);
        assert!(t.counters().servers_evicted_idle > 0);
    }

    #[test]
    fn both_ports_5060_roles_from_content_and_state() {
        use Transport::Udp;
        let mut t = Tracker::new(TrackerConfig::default());
        // Client bound to 5060 as svmap does; every frame matches on the destination port.
        let mut req = frame(Udp, false, 5060, 0, OPTIONS, 1.0);
        req.raw.flags = record_flags::MATCHED_DST_PORT;
        let mut garbage = frame(Udp, true, 5060, 0, b"\x00\x01binary", 1.1);
        garbage.raw.flags = record_flags::MATCHED_DST_PORT;
        feed(&mut t, &[req, garbage]);
        let r = t.report(&server(Udp)).unwrap();
        assert_eq!(r.counts.non_sip_answered, 1);
        assert_eq!(t.counters().servers_tracked, 1);
    }

    #[test]
    fn arbitrary_frames_never_panic() {
        // xorshift: arbitrary flags, payloads, directions and ports, deterministic.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut t = Tracker::new(TrackerConfig {
            max_servers: 8,
            max_flows_per_server: 4,
            ..TrackerConfig::default()
        });
        let seeds: [&[u8]; 5] = [
            OPTIONS,
            OK,
            b"SIP/2.0 1",
            b"\r\n\r\n",
            b"INVITE sip:x SIP/2.0\r\n",
        ];
        for i in 0..20_000u32 {
            let r = next();
            let transport = if r & 1 == 0 {
                Transport::Udp
            } else {
                Transport::Tcp
            };
            let mut payload = seeds[(r >> 8) as usize % seeds.len()].to_vec();
            let cut = (r >> 16) as usize % (payload.len() + 1);
            payload.truncate(cut);
            payload.extend((0..(r >> 24) % 8).map(|_| next() as u8));
            let mut f = frame(
                transport,
                r & 2 != 0,
                (r >> 32) as u16 % 6,
                (r >> 40) as u8,
                &payload,
                f64::from(i) * 0.01,
            );
            f.raw.tcp_seq = (r >> 48) as u32 % 3;
            f.raw.src_addr[3] = (r >> 56) as u8 % 4;
            feed(&mut t, &[f]);
            if i % 500 == 0 {
                t.poll(u64::from(i) * SECOND / 100);
            }
        }
        let counters = t.counters();
        assert!(counters.servers_tracked <= 8);
        assert_eq!(counters.events_observed, 20_000);
        let _ = t.snapshot();
    }
}
