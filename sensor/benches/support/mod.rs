//! What the userspace benchmarks share: a darknet-like traffic generator whose packets vary as
//! the real tools vary them (tags, branches, Call-IDs, sources, ports, IP-IDs), CPU-time and
//! instruction counters for the benchmark thread, and ring-buffer records built from packets.

#![allow(dead_code)]

use std::{net::Ipv4Addr, time::Duration};

use sensor_common::{CaptureRecord, PAYLOAD_CAPACITY, ip_flags, ip_proto, record_flags};

/// xorshift64*: deterministic, so every run generates the same traffic.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn pick(&mut self, alphabet: &[u8]) -> u8 {
        alphabet[self.below(alphabet.len() as u64) as usize]
    }
}

const DIGITS: &[u8] = b"0123456789";
const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
const LOWER: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const HEX: &[u8] = b"0123456789abcdef";
const LOWER_ALNUM: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// How a tool picks its source port and IP-IDs.
#[derive(Clone, Copy)]
enum Stack {
    /// Binds 5060 (or the next free port), Linux stack with DF: SIPVicious, sipsak.
    Bind5060,
    /// Ephemeral port, Linux stack: nmap NSE, sippts, an unknown tool.
    Ephemeral,
    /// Raw packets, IP-ID 54321, no DF: zmap before 4.1.
    Zmap,
    /// Raw packets, fixed source port range, TTL 255: masscan.
    Masscan,
}

/// (weight, stack, payload template). Placeholders: `{Dn}` n random digits, `{Ln}` letters,
/// `{ln}` lower-case letters, `{Un}` upper-case letters, `{xn}` lower-case hex, `{wn}` lower-case
/// letters and digits, `{R}` a decimal of 1 to 10 digits (Python's getrandbits(32)), `{DST}`,
/// `{SRC}`, `{SPORT}` the packet's addresses, `{SVTAG}` an svmap From tag encoding the
/// destination, `{EXT}` an extension and `{SVEXT}` an svwar tag encoding it.
const TEMPLATES: &[(u32, Stack, &str)] = &[
    (
        30,
        Stack::Bind5060,
        "OPTIONS sip:100@{DST} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{SPORT};branch=z9hG4bK-{R};rport\r\nContent-Length: 0\r\nFrom: \"sipvicious\"<sip:100@1.1.1.1>;tag={SVTAG}\r\nAccept: application/sdp\r\nUser-Agent: friendly-scanner\r\nTo: \"sipvicious\"<sip:100@1.1.1.1>\r\nContact: sip:100@127.0.0.1:{SPORT}\r\nCSeq: 1 OPTIONS\r\nCall-ID: {D24}\r\nMax-Forwards: 70\r\n\r\n",
    ),
    (
        15,
        Stack::Bind5060,
        "OPTIONS sip:100@{DST} SIP/2.0\r\nVia: SIP/2.0/UDP {SRC}:{SPORT};branch=z9hG4bK-{R};rport\r\nMax-Forwards: 70\r\nTo: \"sipvicious\"<sip:100@1.1.1.1>\r\nFrom: \"sipvicious\"<sip:100@1.1.1.1>;tag={SVTAG}\r\nUser-Agent: friendly-scanner\r\nCall-ID: {D24}\r\nContact: sip:100@{SRC}:{SPORT}\r\nCSeq: 1 OPTIONS\r\nAccept: application/sdp\r\nContent-Length: 0\r\n\r\n",
    ),
    (
        10,
        Stack::Bind5060,
        "OPTIONS sip:100@{DST} SIP/2.0\r\nVia: SIP/2.0/UDP 192.168.1.9:5060;branch=z9hG4bK-{D8};rport\r\nContent-Length: 0\r\nFrom: \"sipsscuser\"<sip:100@192.168.1.9>;tag={D47}\r\nAccept: application/sdp\r\nUser-Agent: sundayddr\r\nTo: \"sipscc\"<sip:100@192.168.1.9>\r\nContact: sip:100@192.168.1.9:5060\r\nCSeq: 1 OPTIONS\r\nCall-ID: {D27}\r\nMax-Forwards: 70\r\n\r\n",
    ),
    (
        10,
        Stack::Bind5060,
        "REGISTER sip:{DST} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.1.1:{SPORT};branch=z9hG4bK-{R};rport\r\nMax-Forwards: 70\r\nTo: \"{EXT}\"<sip:{EXT}@{DST}>\r\nFrom: \"{EXT}\"<sip:{EXT}@{DST}>;tag={SVEXT}\r\nUser-Agent: friendly-scanner\r\nCall-ID: {R}\r\nContact: sip:{EXT}@{DST}\r\nCSeq: 1 REGISTER\r\nAccept: application/sdp\r\nContent-Length: 0\r\n\r\n",
    ),
    (
        5,
        Stack::Ephemeral,
        "OPTIONS sip:{DST} SIP/2.0\r\nVia: SIP/2.0/UDP {SRC}:{SPORT};rport;branch=z9hG4bK{L25}\r\nMax-Forwards: 70\r\nFrom: \"Nmap NSE\" <sip:user@{DST}>;tag={U20}\r\nTo: \"Nmap NSE\" <sip:user@{DST}>\r\nCall-ID: {w60}\r\nCSeq: 1234 OPTIONS\r\nUser-Agent: Nmap NSE\r\nContact: \"Nmap NSE\" <sip:user@{SRC}:{SPORT}>\r\nExpires: 300\r\nAllow: PRACK, INVITE ,ACK, BYE, CANCEL, UPDATE, SUBSCRIBE,NOTIFY, REFER, MESSAGE, OPTIONS\r\nAccept: application/sdp\r\nContent-Length:  0\r\n\r\n",
    ),
    (
        5,
        Stack::Ephemeral,
        "OPTIONS sip:100@{DST} SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:{SPORT};branch={w71};rport\r\nFrom:  <sip:100@{DST}>;tag={x8}\r\nTo:  <sip:100@{DST}>\r\nContact: <sip:100@10.0.0.1:{SPORT};transport=UDP>;expires=120\r\nCall-ID: {x32}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nUser-Agent: pplsip\r\nAllow: INVITE, REGISTER, ACK, CANCEL, BYE, NOTIFY, REFER, OPTIONS, INFO, SUBSCRIBE, UPDATE, PRACK, MESSAGE\r\nContent-Length: 0\r\n\r\n",
    ),
    (
        5,
        Stack::Zmap,
        "OPTIONS sip:{l8}@{DST} SIP/2.0\nVia: SIP/2.0/UDP {SRC}:{SPORT};branch={L6}.{D10};rport;alias\nFrom: sip:{l8}@{SRC}:{SPORT};tag={D8}\nTo: sip:{l8}@{DST}\nCall-ID: {D10}@{SRC}\nCSeq: 1 OPTIONS\nContact: sip:{l8}@{SRC}:{SPORT}\nContent-Length: 0\nMax-Forwards: 20\nUser-Agent: {L8}\nAccept: text/plain\n\n",
    ),
    (
        5,
        Stack::Masscan,
        "OPTIONS sip:carol@chicago.com SIP/2.0\r\nVia: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKhjhs8ass877\r\nMax-Forwards: 70\r\nTo: <sip:carol@chicago.com>\r\nFrom: Alice <sip:alice@atlanta.com>;tag=1928301774\r\nCall-ID: a84b4c76e66710\r\nCSeq: 63104 OPTIONS\r\nContact: <sip:alice@pc33.atlanta.com>\r\nAccept: application/sdp\r\nContent-Length: 0\r\n",
    ),
    (
        10,
        Stack::Ephemeral,
        "REGISTER sip:{DST} SIP/2.0\r\nVia: SIP/2.0/UDP {SRC}:{SPORT};branch=z9hG4bKx{x4}\r\nFrom: <sip:probe@{SRC}>;tag={x4}\r\nTo: <sip:{D3}@{DST}>\r\nCall-ID: {D5}\r\nCSeq: 7 REGISTER\r\nX-Probe: yes\r\nContent-Length: 0\r\n\r\n",
    ),
    (3, Stack::Zmap, "OPTIONS"),
];

/// One generated packet: the payload and the header fields a record carries.
#[derive(Clone)]
pub struct Sample {
    pub payload: Vec<u8>,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
    pub ttl: u8,
    pub ip_id: u16,
    pub df: bool,
}

fn hex_of(bytes: &[u8], out: &mut String) {
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 15)] as char);
    }
}

fn random_run(rng: &mut Rng, alphabet: &[u8], n: usize, out: &mut String) {
    for _ in 0..n {
        out.push(rng.pick(alphabet) as char);
    }
}

/// A decimal as Python prints getrandbits(32): 1 to 10 digits, mostly 9 or 10.
fn getrandbits32(rng: &mut Rng) -> String {
    (rng.next() as u32).to_string()
}

fn fill(template: &str, rng: &mut Rng, s: &Sample) -> Vec<u8> {
    let ext = 100 + rng.below(900);
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = open + rest[open..].find('}').expect("closed placeholder");
        let name = &rest[open + 1..close];
        rest = &rest[close + 1..];
        match name {
            "DST" => out.push_str(&s.dst.to_string()),
            "SRC" => out.push_str(&s.src.to_string()),
            "SPORT" => out.push_str(&s.src_port.to_string()),
            "EXT" => out.push_str(&ext.to_string()),
            "R" => out.push_str(&getrandbits32(rng)),
            "SVTAG" => {
                let payload = format!(
                    "{:08x}{:04x}\x01{}",
                    u32::from(s.dst),
                    s.dst_port,
                    getrandbits32(rng)
                );
                hex_of(payload.as_bytes(), &mut out);
            }
            "SVEXT" => {
                let payload = format!("{ext}\x01{}", getrandbits32(rng));
                hex_of(payload.as_bytes(), &mut out);
            }
            _ => {
                let (class, n) = name.split_at(1);
                let n: usize = n.parse().expect("placeholder length");
                let alphabet = match class {
                    "D" => DIGITS,
                    "L" => LETTERS,
                    "l" => LOWER,
                    "U" => UPPER,
                    "x" => HEX,
                    "w" => LOWER_ALNUM,
                    other => panic!("unknown placeholder class {other}"),
                };
                random_run(rng, alphabet, n, &mut out);
            }
        }
    }
    out.push_str(rest);
    out.into_bytes()
}

/// `count` packets from `sources` scanners (a source keeps its tool, port, TTL and IP-ID
/// counter) to random addresses of a /16 darknet (203.0.0.0/16).
pub fn traffic(count: usize, sources: usize, seed: u64) -> Vec<Sample> {
    let mut rng = Rng::new(seed);
    let total: u32 = TEMPLATES.iter().map(|t| t.0).sum();
    struct Source {
        ip: Ipv4Addr,
        template: usize,
        port: u16,
        ip_id: u16,
        ttl: u8,
    }
    let mut pool: Vec<Source> = (0..sources.max(1))
        .map(|i| {
            let mut w = rng.below(u64::from(total)) as u32;
            let template = TEMPLATES
                .iter()
                .position(|t| {
                    if w < t.0 {
                        true
                    } else {
                        w -= t.0;
                        false
                    }
                })
                .unwrap_or(0);
            let (port, ttl) = match TEMPLATES[template].1 {
                Stack::Bind5060 => (5060 + (rng.below(8) == 0) as u16, 40 + rng.below(20) as u8),
                Stack::Ephemeral => (32768 + rng.below(28000) as u16, 40 + rng.below(20) as u8),
                Stack::Zmap => (32768 + rng.below(28233) as u16, 230 + rng.below(20) as u8),
                Stack::Masscan => (40000 + rng.below(20000) as u16, 230 + rng.below(20) as u8),
            };
            Source {
                ip: Ipv4Addr::from(0xc633_0000 | (i as u32 & 0xffff) | (rng.below(4) as u32) << 16),
                template,
                port,
                ip_id: rng.next() as u16,
                ttl,
            }
        })
        .collect();
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let source = &mut pool[rng.below(sources.max(1) as u64) as usize];
        let (_, stack, template) = TEMPLATES[source.template];
        source.ip_id = source.ip_id.wrapping_add(1);
        let (ip_id, df) = match stack {
            Stack::Bind5060 | Stack::Ephemeral => (source.ip_id, true),
            Stack::Zmap => (54321, false),
            Stack::Masscan => (rng.next() as u16, false),
        };
        let mut sample = Sample {
            payload: Vec::new(),
            src: source.ip,
            dst: Ipv4Addr::from(0xcb00_0000 | (rng.below(1 << 16) as u32)),
            src_port: source.port,
            dst_port: 5060,
            ttl: source.ttl,
            ip_id,
            df,
        };
        sample.payload = fill(template, &mut rng, &sample);
        out.push(sample);
    }
    out
}

/// The record the XDP program writes for a sample (UDP, IPv4, matched on the destination port).
pub fn record(s: &Sample, timestamp_ns: u64) -> CaptureRecord {
    let mut r = CaptureRecord::zeroed();
    r.timestamp_ns = timestamp_ns;
    r.ifindex = 2;
    r.src_addr[..4].copy_from_slice(&s.src.octets());
    r.dst_addr[..4].copy_from_slice(&s.dst.octets());
    let captured = s.payload.len().min(PAYLOAD_CAPACITY);
    r.payload[..captured].copy_from_slice(&s.payload[..captured]);
    r.captured_len = captured as u16;
    r.payload_len = s.payload.len() as u16;
    r.frame_len = (42 + s.payload.len()) as u32;
    r.ip_total_len = (28 + s.payload.len()) as u16;
    r.payload_offset = 42;
    r.ip_id = s.ip_id;
    r.src_port = s.src_port;
    r.dst_port = s.dst_port;
    r.ip_version = 4;
    r.ttl = s.ttl;
    r.l4_proto = ip_proto::UDP;
    r.ip_flags = if s.df { ip_flags::DF } else { 0 };
    r.flags = record_flags::MATCHED_DST_PORT;
    r
}

/// The bytes of a record as the ring buffer hands them over.
pub fn record_bytes(r: &CaptureRecord) -> &[u8] {
    // SAFETY: CaptureRecord is plain integers with no padding.
    unsafe {
        std::slice::from_raw_parts(
            (r as *const CaptureRecord).cast::<u8>(),
            CaptureRecord::SIZE,
        )
    }
}

/// CPU time of this thread: the machines are shared, and wall time would count other
/// processes' turns on the core.
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// User-space instructions retired by this thread (perf_event_open), the one measure that other
/// load on a shared machine does not disturb. `None` where perf events are not allowed.
pub struct Instructions(Option<i32>);

impl Instructions {
    pub fn new() -> Self {
        // struct perf_event_attr, PERF_ATTR_SIZE_VER7 (128 bytes): type, size, config, then the
        // flags word at byte 40.
        let mut attr = [0u64; 16];
        attr[0] = 128 << 32; // type PERF_TYPE_HARDWARE (0), size 128
        attr[1] = 1; // PERF_COUNT_HW_INSTRUCTIONS
        attr[5] = (1 << 5) | (1 << 6); // exclude_kernel, exclude_hv
        // SAFETY: a valid attribute block; pid 0 / cpu -1 = this thread on any CPU.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_perf_event_open,
                attr.as_ptr(),
                0 as libc::pid_t,
                -1 as libc::c_int,
                -1 as libc::c_int,
                0 as libc::c_ulong,
            )
        };
        Instructions((fd >= 0).then_some(fd as i32))
    }

    pub fn read(&self) -> Option<u64> {
        let fd = self.0?;
        let mut value = 0u64;
        // SAFETY: reading 8 bytes into a u64.
        let n = unsafe { libc::read(fd, (&mut value as *mut u64).cast(), 8) };
        (n == 8).then_some(value)
    }
}

impl Drop for Instructions {
    fn drop(&mut self) {
        if let Some(fd) = self.0 {
            // SAFETY: our own descriptor.
            unsafe { libc::close(fd) };
        }
    }
}

pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}
