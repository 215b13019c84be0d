//! pcapng of the captured records, for Wireshark and tshark.
//!
//! A record holds the fields of a frame's headers, not their bytes, so each packet is rebuilt
//! from them: Ethernet (addresses zero: the record has none), the VLAN tags, IPv4 (without
//! options) or IPv6 (without extension headers), UDP or TCP with its options, and the captured
//! payload prefix; lengths as the original headers declared them, the IPv4 header checksum
//! computed, and the UDP/TCP checksum computed when the whole payload was captured (0, "not
//! computed", when it was cut: the missing bytes are unknown). The packet's original length is
//! the frame's. Each file is one section with one interface block per interface seen (link type
//! Ethernet, nanosecond timestamps, snaplen the most a record gives back), and each packet
//! carries the fingerprint in a comment, escaped.

use std::collections::HashMap;

use sensor_common::PAYLOAD_CAPACITY;

use super::file::{Destination, OutputError, OutputFile, Rotation};
use crate::{
    escape::escape_bounded,
    record::{Record, Transport},
};

const BLOCK_SHB: u32 = 0x0A0D_0D0A;
const BLOCK_IDB: u32 = 1;
const BLOCK_EPB: u32 = 6;
const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;
const LINKTYPE_ETHERNET: u16 = 1;
const OPT_END: u16 = 0;
const OPT_COMMENT: u16 = 1;
const SHB_USERAPPL: u16 = 4;
const IF_NAME: u16 = 2;
const IF_TSRESOL: u16 = 9;
const EPB_FLAGS: u16 = 2;
/// epb_flags: inbound (bits 0-1 = 01).
const EPB_INBOUND: u32 = 1;
/// Longest frame a record gives back: Ethernet, two VLAN tags, IPv6, TCP with 40 bytes of
/// options, and the payload capacity.
pub const SNAPLEN: u32 = 14 + 8 + 40 + 60 + PAYLOAD_CAPACITY as u32;
/// Bound on attacker-influenced text in a comment (rule text is escaped at load, but a comment
/// should stay a line).
const COMMENT_FIELD_MAX: usize = 128;

/// How the interfaces of records are named in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InterfaceNames {
    /// Live: the name of the ifindex on this host (`ifindex N` if it has none).
    System,
    /// Offline: the records' interface numbers are the capture file's; named `LABEL#N`.
    Capture(String),
}

/// The pcapng output.
pub struct PcapngSink {
    file: OutputFile,
    naming: InterfaceNames,
    /// Interface ids in the current section, by ifindex.
    interfaces: HashMap<u32, u32>,
    generation: u64,
    names: HashMap<u32, String>,
    unit: Vec<u8>,
    frame: Vec<u8>,
}

impl PcapngSink {
    pub fn new(
        destination: Destination,
        rotation: Rotation,
        naming: InterfaceNames,
    ) -> Result<Self, OutputError> {
        Ok(Self {
            file: OutputFile::new("pcapng", destination, rotation, section_header())?,
            naming,
            interfaces: HashMap::new(),
            generation: 0,
            names: HashMap::new(),
            unit: Vec::with_capacity(2048),
            frame: Vec::with_capacity(SNAPLEN as usize),
        })
    }

    /// One record as a packet (with its interface's block first if the section lacks it).
    pub fn record(&mut self, record: &Record<'_>, wall_ns: u64, label: Option<&Label<'_>>) {
        self.frame.clear();
        frame_from_record(record, &mut self.frame);
        let comment = label.map(comment);
        // An interface block is at most a few dozen bytes: room for one is asked for always.
        let estimate = 32 + self.frame.len() + comment.as_ref().map_or(0, String::len) + 64;
        let Some(generation) = self.file.prepare(estimate, Some(wall_ns)) else {
            return;
        };
        if generation != self.generation {
            // A new file or section: its interfaces start over.
            self.interfaces.clear();
            self.generation = generation;
        }
        self.unit.clear();
        let ifindex = record.ifindex();
        let id = match self.interfaces.get(&ifindex) {
            Some(id) => *id,
            None => {
                let id = self.interfaces.len() as u32;
                let name = self.interface_name(ifindex);
                interface_block(&mut self.unit, &name);
                self.interfaces.insert(ifindex, id);
                id
            }
        };
        let original_len = record.raw().frame_len.max(self.frame.len() as u32);
        packet_block(
            &mut self.unit,
            id,
            wall_ns,
            &self.frame,
            original_len,
            comment.as_deref(),
        );
        self.file.append(&self.unit);
    }

    fn interface_name(&mut self, ifindex: u32) -> String {
        let naming = &self.naming;
        self.names
            .entry(ifindex)
            .or_insert_with(|| match naming {
                InterfaceNames::System => {
                    system_interface_name(ifindex).unwrap_or_else(|| format!("ifindex {ifindex}"))
                }
                InterfaceNames::Capture(label) => format!("{label}#{ifindex}"),
            })
            .clone()
    }

    /// The file (rotation, failures, counters) this sink writes.
    pub fn output(&self) -> &OutputFile {
        &self.file
    }

    pub fn output_mut(&mut self) -> &mut OutputFile {
        &mut self.file
    }
}

fn system_interface_name(ifindex: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: the buffer holds IF_NAMESIZE bytes, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: if_indextoname wrote a NUL-terminated name into buf.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

/// What a packet's comment says of its attribution.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Label<'a> {
    pub tool: &'a str,
    pub variant: Option<&'a str>,
    pub rule: &'a str,
    pub category: &'a str,
    pub confidence: f64,
}

/// The fingerprint as one line: `fingerprint: tool=... variant=... rule=... category=...
/// confidence=0.95`, every value escaped to printable ASCII and bounded.
pub fn comment(label: &Label<'_>) -> String {
    let esc = |s: &str| escape_bounded(s.as_bytes(), COMMENT_FIELD_MAX);
    format!(
        "fingerprint: tool={} variant={} rule={} category={} confidence={:.2}",
        esc(label.tool),
        esc(label.variant.unwrap_or("-")),
        esc(label.rule),
        label.category,
        label.confidence
    )
}

fn put16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

fn option(out: &mut Vec<u8>, code: u16, value: &[u8]) {
    put16(out, code);
    put16(out, value.len() as u16);
    out.extend_from_slice(value);
    pad4(out);
}

/// Starts a block; returns where it starts, for [`end_block`].
fn begin_block(out: &mut Vec<u8>, kind: u32) -> usize {
    let start = out.len();
    put32(out, kind);
    put32(out, 0);
    start
}

fn end_block(out: &mut Vec<u8>, start: usize) {
    pad4(out);
    let total = (out.len() - start + 4) as u32;
    out[start + 4..start + 8].copy_from_slice(&total.to_le_bytes());
    put32(out, total);
}

/// A Section Header Block (little-endian, section length unknown).
pub fn section_header() -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    let start = begin_block(&mut out, BLOCK_SHB);
    put32(&mut out, BYTE_ORDER_MAGIC);
    put16(&mut out, 1);
    put16(&mut out, 0);
    out.extend_from_slice(&u64::MAX.to_le_bytes());
    let app = format!("sip-darknet-sensor {}", env!("CARGO_PKG_VERSION"));
    option(&mut out, SHB_USERAPPL, app.as_bytes());
    option(&mut out, OPT_END, &[]);
    end_block(&mut out, start);
    out
}

/// An Interface Description Block: Ethernet, [`SNAPLEN`], nanosecond timestamps.
pub fn interface_block(out: &mut Vec<u8>, name: &str) {
    let start = begin_block(out, BLOCK_IDB);
    put16(out, LINKTYPE_ETHERNET);
    put16(out, 0);
    put32(out, SNAPLEN);
    let name = escape_bounded(name.as_bytes(), 64);
    option(out, IF_NAME, name.as_bytes());
    option(out, IF_TSRESOL, &[9]);
    option(out, OPT_END, &[]);
    end_block(out, start);
}

/// An Enhanced Packet Block.
pub fn packet_block(
    out: &mut Vec<u8>,
    interface_id: u32,
    timestamp_ns: u64,
    frame: &[u8],
    original_len: u32,
    comment: Option<&str>,
) {
    let start = begin_block(out, BLOCK_EPB);
    put32(out, interface_id);
    put32(out, (timestamp_ns >> 32) as u32);
    put32(out, timestamp_ns as u32);
    put32(out, frame.len() as u32);
    put32(out, original_len);
    out.extend_from_slice(frame);
    pad4(out);
    if let Some(text) = comment {
        // Option values are at most 65535 bytes; comments here are far shorter.
        let text = &text.as_bytes()[..text.len().min(60_000)];
        option(out, OPT_COMMENT, text);
    }
    option(out, EPB_FLAGS, &EPB_INBOUND.to_le_bytes());
    option(out, OPT_END, &[]);
    end_block(out, start);
}

/// Rebuilds the frame's bytes from a record (see the module documentation for what is kept).
pub fn frame_from_record(r: &Record<'_>, out: &mut Vec<u8>) {
    let raw = r.raw();
    // Destination and source MAC: the record keeps neither.
    out.extend_from_slice(&[0u8; 12]);
    for vid in r.vlan_ids() {
        out.extend_from_slice(&0x8100u16.to_be_bytes());
        out.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
    }
    let v4 = r.ip_version() == 4;
    out.extend_from_slice(&(if v4 { 0x0800u16 } else { 0x86dd }).to_be_bytes());

    let options = r.tcp_options();
    let options_padded = options.len().div_ceil(4) * 4;
    let (l4_header_len, proto) = match r.transport() {
        Transport::Udp => (8usize, 17u8),
        Transport::Tcp => (20 + options_padded, 6u8),
    };
    let declared_l4 = l4_header_len + usize::from(raw.payload_len);
    let ip_start = out.len();
    if v4 {
        let total = (20 + declared_l4).min(usize::from(u16::MAX)) as u16;
        let flags_fragment = (u16::from(r.reserved_bit()) << 15)
            | (u16::from(r.dont_fragment()) << 14)
            | (u16::from(r.more_fragments()) << 13)
            | ((raw.frag_offset / 8) & 0x1fff);
        out.extend_from_slice(&[0x45, raw.tos]);
        out.extend_from_slice(&total.to_be_bytes());
        out.extend_from_slice(&raw.ip_id.to_be_bytes());
        out.extend_from_slice(&flags_fragment.to_be_bytes());
        out.extend_from_slice(&[raw.ttl, proto, 0, 0]);
        out.extend_from_slice(&raw.src_addr[..4]);
        out.extend_from_slice(&raw.dst_addr[..4]);
        let sum = !fold(sum16(&out[ip_start..ip_start + 20], 0));
        out[ip_start + 10..ip_start + 12].copy_from_slice(&sum.to_be_bytes());
    } else {
        let word = (6u32 << 28) | (u32::from(raw.tos) << 20) | (raw.flow_label & 0xf_ffff);
        out.extend_from_slice(&word.to_be_bytes());
        out.extend_from_slice(&(declared_l4.min(usize::from(u16::MAX)) as u16).to_be_bytes());
        out.extend_from_slice(&[proto, raw.ttl]);
        out.extend_from_slice(&raw.src_addr);
        out.extend_from_slice(&raw.dst_addr);
    }

    let l4_start = out.len();
    out.extend_from_slice(&r.src_port().to_be_bytes());
    out.extend_from_slice(&r.dst_port().to_be_bytes());
    match r.transport() {
        Transport::Udp => {
            let len = declared_l4.min(usize::from(u16::MAX)) as u16;
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&[0, 0]);
        }
        Transport::Tcp => {
            out.extend_from_slice(&raw.tcp_seq.to_be_bytes());
            out.extend_from_slice(&raw.tcp_ack.to_be_bytes());
            let data_offset = (l4_header_len / 4) as u8;
            out.extend_from_slice(&[data_offset << 4, raw.tcp_flags]);
            out.extend_from_slice(&raw.tcp_window.to_be_bytes());
            // Checksum, then the urgent pointer (not recorded).
            out.extend_from_slice(&[0, 0, 0, 0]);
            out.extend_from_slice(options);
            // Option bytes come in whole words; pad with end-of-options.
            out.resize(out.len() + (options_padded - options.len()), 0);
        }
    }
    out.extend_from_slice(r.payload());

    let whole = raw.captured_len == raw.payload_len && !r.frame_short();
    if whole && declared_l4 <= usize::from(u16::MAX) {
        let segment_len = (out.len() - l4_start) as u32;
        let pseudo = if v4 {
            let mut p = sum16(&raw.src_addr[..4], 0);
            p = sum16(&raw.dst_addr[..4], p);
            p + u32::from(proto) + segment_len
        } else {
            let mut p = sum16(&raw.src_addr, 0);
            p = sum16(&raw.dst_addr, p);
            p + u32::from(proto) + segment_len
        };
        let mut sum = !fold(sum16(&out[l4_start..], pseudo));
        let at = match r.transport() {
            Transport::Udp => {
                // In UDP, 0 means "no checksum"; a computed 0 is sent as all ones.
                if sum == 0 {
                    sum = 0xffff;
                }
                l4_start + 6
            }
            Transport::Tcp => l4_start + 16,
        };
        out[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    }
}

/// Ones' complement sum of big-endian 16-bit words (odd length padded with zero), added to
/// `start`; folded by [`fold`].
fn sum16(bytes: &[u8], start: u32) -> u32 {
    let mut sum = u64::from(start);
    let mut chunks = bytes.chunks_exact(2);
    for c in &mut chunks {
        sum += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u64::from(*last) << 8;
    }
    while sum > 0xffff_ffff {
        sum = (sum & 0xffff_ffff) + (sum >> 32);
    }
    sum as u32
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

#[cfg(test)]
mod tests {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    use sensor_common::{CaptureRecord, ip_flags, ip_proto, record_flags};

    use super::*;

    fn udp_record() -> Box<CaptureRecord> {
        let mut r = crate::record::test_record();
        r.ttl = 51;
        r.ip_id = 0x1234;
        r.tos = 0x10;
        r.ip_flags = ip_flags::DF;
        r.flags = record_flags::MATCHED_DST_PORT;
        let payload = b"OPTIONS sip:100@203.0.113.9 SIP/2.0\r\nContent-Length: 0\r\n\r\n";
        r.payload[..payload.len()].copy_from_slice(payload);
        r.captured_len = payload.len() as u16;
        r.payload_len = payload.len() as u16;
        r.vlan_count = 1;
        r.vlan_ids = [100, 0];
        r.frame_len = (14 + 4 + 20 + 8 + payload.len()) as u32;
        r
    }

    #[test]
    fn udp_frame_parses_back_with_valid_checksums() {
        let raw = udp_record();
        let rec = Record::new(&raw).unwrap();
        let mut frame = Vec::new();
        frame_from_record(&rec, &mut frame);
        assert_eq!(frame.len() as u32, raw.frame_len);
        let p = SlicedPacket::from_ethernet(&frame).unwrap();
        let Some(NetSlice::Ipv4(ip)) = &p.net else {
            panic!("IPv4 expected")
        };
        let h = ip.header();
        assert_eq!(h.ttl(), 51);
        assert_eq!(h.identification(), 0x1234);
        assert!(h.dont_fragment());
        assert_eq!(h.source(), [198, 51, 100, 7]);
        assert_eq!(h.to_header().calc_header_checksum(), h.header_checksum());
        let Some(TransportSlice::Udp(udp)) = &p.transport else {
            panic!("UDP expected")
        };
        assert_eq!(udp.destination_port(), 5060);
        let expected = udp
            .to_header()
            .calc_checksum_ipv4(&h.to_header(), udp.payload())
            .unwrap();
        assert_eq!(udp.checksum(), expected);
        assert!(udp.payload().starts_with(b"OPTIONS sip:100@"));
        assert_eq!(p.vlan_ids().first().map(|v| v.value()), Some(100));
    }

    #[test]
    fn tcp_ipv6_frame_keeps_options_and_checksum() {
        let mut raw = udp_record();
        raw.ip_version = 6;
        raw.l4_proto = ip_proto::TCP;
        raw.vlan_count = 0;
        raw.src_addr = "2001:db8::7"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets();
        raw.dst_addr = "2001:db8:dead::9"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets();
        raw.flow_label = 0xabcde;
        raw.tcp_flags = 0x18;
        raw.tcp_seq = 1000;
        raw.tcp_ack = 2000;
        raw.tcp_window = 64240;
        let opts = [1u8, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];
        raw.tcp_options[..opts.len()].copy_from_slice(&opts);
        raw.tcp_options_len = opts.len() as u8;
        raw.tcp_data_offset = 8;
        let rec = Record::new(&raw).unwrap();
        let mut frame = Vec::new();
        frame_from_record(&rec, &mut frame);
        let p = SlicedPacket::from_ethernet(&frame).unwrap();
        let Some(NetSlice::Ipv6(ip)) = &p.net else {
            panic!("IPv6 expected")
        };
        assert_eq!(ip.header().flow_label().value(), 0xabcde);
        assert_eq!(ip.header().hop_limit(), 51);
        let Some(TransportSlice::Tcp(tcp)) = &p.transport else {
            panic!("TCP expected")
        };
        assert_eq!(tcp.options(), &opts);
        assert!(tcp.psh() && tcp.ack());
        assert_eq!(tcp.sequence_number(), 1000);
        let expected = tcp
            .to_header()
            .calc_checksum_ipv6(&ip.header().to_header(), tcp.payload())
            .unwrap();
        assert_eq!(tcp.checksum(), expected);
    }

    #[test]
    fn cut_payload_keeps_declared_lengths_and_leaves_checksum_zero() {
        let mut raw = udp_record();
        raw.payload_len += 100;
        raw.frame_len += 100;
        let rec = Record::new(&raw).unwrap();
        let mut frame = Vec::new();
        frame_from_record(&rec, &mut frame);
        let ip_total = u16::from_be_bytes([frame[18 + 2], frame[18 + 3]]);
        assert_eq!(usize::from(ip_total), 20 + 8 + usize::from(raw.payload_len));
        let udp_len = u16::from_be_bytes([frame[18 + 24], frame[18 + 25]]);
        assert_eq!(udp_len, 8 + raw.payload_len);
        assert_eq!(&frame[18 + 26..18 + 28], &[0, 0]);
    }

    #[test]
    fn every_rotated_file_has_its_section_and_interfaces() {
        let dir = std::env::temp_dir().join(format!("sensor-pcapng-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut sink = PcapngSink::new(
            Destination::File(dir.join("r.pcapng")),
            Rotation {
                max_bytes: Some(600),
                interval: None,
            },
            InterfaceNames::Capture("t".into()),
        )
        .unwrap();
        let mut raw = udp_record();
        for i in 0..12u32 {
            // Two interfaces, alternating.
            raw.ifindex = i % 2;
            raw.ip_id = i as u16;
            sink.record(&Record::new(&raw).unwrap(), 1_000 + u64::from(i), None);
        }
        sink.output_mut().finish();
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(files.len() >= 3, "{files:?}");
        let mut ids = Vec::new();
        for f in &files {
            let reader = crate::offline::CaptureReader::open(f).unwrap();
            for packet in reader {
                let packet = packet.unwrap();
                let (frame, wire_len) = packet.ethernet_frame().unwrap();
                assert_eq!(wire_len, raw.frame_len);
                ids.push((packet.interface, u16::from_be_bytes([frame[22], frame[23]])));
            }
        }
        assert_eq!(ids.len(), 12);
        // Each packet names the interface block its own file defined for its ifindex.
        for (i, (_, ip_id)) in ids.iter().enumerate() {
            assert_eq!(usize::from(*ip_id), i);
        }
        assert_eq!(sink.output().counters().written, 12);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn blocks_are_aligned_and_sized() {
        let shb = section_header();
        assert_eq!(shb.len() % 4, 0);
        assert_eq!(&shb[..4], &BLOCK_SHB.to_le_bytes());
        let total = u32::from_le_bytes(shb[4..8].try_into().unwrap()) as usize;
        assert_eq!(total, shb.len());
        assert_eq!(&shb[shb.len() - 4..], &shb[4..8]);
        let mut out = Vec::new();
        interface_block(&mut out, "eth\x1b[0m1");
        packet_block(&mut out, 0, 1, &[1, 2, 3], 60, Some("fingerprint: tool=x"));
        let idb_len = u32::from_le_bytes(out[4..8].try_into().unwrap()) as usize;
        assert_eq!(idb_len % 4, 0);
        let idb = &out[..idb_len];
        // The escape character of the name does not reach the file.
        assert!(!idb.contains(&0x1b));
        let epb = &out[idb_len..];
        assert_eq!(
            u32::from_le_bytes(epb[4..8].try_into().unwrap()) as usize,
            epb.len()
        );
    }
}
