//! The userspace twin of the XDP program's frame parser: the record the kernel would write for a
//! frame, computed from the frame's bytes.
//!
//! This mirrors `sensor-ebpf/src/parse.rs` (`try_parse`) and `emit()` in `sensor-ebpf/src/main.rs`
//! rule for rule, in the same order, so that offline analysis of a capture gives the same records
//! as a live run; `tests/tests/differential.rs` runs both on the same frames and compares them
//! byte for byte. Change both sides together.
//!
//! What the kernel takes from its context rather than the frame (the timestamp, the ingress
//! interface, the receive queue) comes from the caller in [`FrameContext`].

use sensor_common::{
    CaptureRecord, Counter, PAYLOAD_CAPACITY, SensorConfig, TCP_OPTIONS_CAPACITY, ip_flags,
    ip_proto, record_flags,
};

use crate::capture::PortSet;

const ETH_HEADER_LEN: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
const MAX_VLAN_TAGS: usize = 2;
const MAX_IPV6_EXTENSIONS: usize = 4;

const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_AUTH: u8 = 51;
const IPV6_DEST_OPTS: u8 = 60;

/// What the kernel fills from the XDP context instead of the frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameContext {
    /// `bpf_ktime_get_ns()` in the kernel; for a capture file, the packet's time.
    pub timestamp_ns: u64,
    pub ifindex: u32,
    pub rx_queue: u32,
}

/// The header fields a record needs, as `parse.rs` collects them.
#[derive(Default)]
struct Headers {
    src_addr: [u8; 16],
    dst_addr: [u8; 16],
    tcp_seq: u32,
    tcp_ack: u32,
    flow_label: u32,
    ip_id: u16,
    ip_total_len: u16,
    frag_offset: u16,
    src_port: u16,
    dst_port: u16,
    tcp_window: u16,
    payload_len: u16,
    payload_offset: u16,
    tcp_options_offset: u16,
    vlan_ids: [u16; 2],
    ip_version: u8,
    ttl: u8,
    tos: u8,
    l4_proto: u8,
    ip_flags: u8,
    vlan_count: u8,
    tcp_flags: u8,
    tcp_data_offset: u8,
    tcp_options_len: u8,
}

/// `len` bytes at `off`, or `Truncated` when the frame ends first: the kernel's `header()`.
fn header(frame: &[u8], off: usize, len: usize) -> Result<&[u8], Counter> {
    frame.get(off..off + len).ok_or(Counter::Truncated)
}

fn be16(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

fn be32(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// Produces the record the XDP program writes for `frame`, or the outcome counter it increments
/// instead (`NonIp`, `Truncated`, `Malformed`, `NonFirstFragment`, `OtherL4`,
/// `Ipv6ExtensionLimit` or `PortMiss`). `Ok` is the kernel's `Matched` (and `Emitted`).
///
/// `frame` is what the kernel can read directly (the linear part of the XDP buffer);
/// `wire_len` is the length the kernel's `bpf_xdp_get_buff_len` reports. They are equal for a
/// live frame; a capture cut by its snap length passes the original length and the kept bytes,
/// and then gets the record the kernel would have written as far as those bytes allow: headers
/// past the cut are `Truncated`, payload past it is not captured. A `wire_len` below
/// `frame.len()` is taken as `frame.len()`.
///
/// Bytes of `payload` past `captured_len` are zero here; the kernel leaves them unwritten.
pub fn extract(
    frame: &[u8],
    wire_len: u32,
    config: &SensorConfig,
    ports: &PortSet,
    context: &FrameContext,
) -> Result<CaptureRecord, Counter> {
    let mut record = CaptureRecord::zeroed();
    extract_into(frame, wire_len, config, ports, context, &mut record)?;
    Ok(record)
}

/// [`extract`] into `record`, which holds a record `extract_into` wrote or is zeroed: only the
/// bytes this record and the last one wrote are written, instead of a whole 1,176-byte record
/// being zeroed, built and copied for every frame of a capture. On an error `record` is left
/// as it was.
pub fn extract_into(
    frame: &[u8],
    wire_len: u32,
    config: &SensorConfig,
    ports: &PortSet,
    context: &FrameContext,
    record: &mut CaptureRecord,
) -> Result<(), Counter> {
    let headers = parse(frame)?;
    let flags = if ports.contains(headers.dst_port) {
        record_flags::MATCHED_DST_PORT
    } else if config.match_source_port != 0 && ports.contains(headers.src_port) {
        record_flags::MATCHED_SRC_PORT
    } else {
        return Err(Counter::PortMiss);
    };
    let frame_len = wire_len.max(u32::try_from(frame.len()).unwrap_or(u32::MAX));
    emit(
        frame,
        frame_len,
        &headers,
        flags,
        config.prefix_len,
        context,
        record,
    );
    Ok(())
}

/// `try_parse` in `sensor-ebpf/src/parse.rs`.
fn parse(frame: &[u8]) -> Result<Headers, Counter> {
    let mut h = Headers::default();

    let eth = header(frame, 0, ETH_HEADER_LEN)?;
    let mut ethertype = be16(eth, 12);
    let mut off = ETH_HEADER_LEN;
    for i in 0..MAX_VLAN_TAGS {
        if ethertype != ETHERTYPE_VLAN && ethertype != ETHERTYPE_QINQ {
            break;
        }
        let tag = header(frame, off, 4)?;
        h.vlan_ids[i] = be16(tag, 0) & 0x0fff;
        h.vlan_count += 1;
        ethertype = be16(tag, 2);
        off += 4;
    }

    let ip_payload: usize;
    let mut next: u8;
    match ethertype {
        ETHERTYPE_IPV4 => {
            let ip = header(frame, off, 20)?;
            let b0 = ip[0];
            let ihl = usize::from(b0 & 0x0f) * 4;
            if b0 >> 4 != 4 || ihl < 20 {
                return Err(Counter::Malformed);
            }
            header(frame, off, ihl)?;
            let total = be16(ip, 2);
            if usize::from(total) < ihl {
                return Err(Counter::Malformed);
            }
            let frag = be16(ip, 6);
            h.ip_version = 4;
            h.tos = ip[1];
            h.ip_total_len = total;
            h.ip_id = be16(ip, 4);
            h.frag_offset = (frag & 0x1fff) << 3;
            if frag & 0x4000 != 0 {
                h.ip_flags |= ip_flags::DF;
            }
            if frag & 0x2000 != 0 {
                h.ip_flags |= ip_flags::MF;
            }
            if frag & 0x8000 != 0 {
                h.ip_flags |= ip_flags::RESERVED;
            }
            h.ttl = ip[8];
            next = ip[9];
            h.src_addr[..4].copy_from_slice(&ip[12..16]);
            h.dst_addr[..4].copy_from_slice(&ip[16..20]);
            if h.frag_offset != 0 {
                return Err(Counter::NonFirstFragment);
            }
            off += ihl;
            ip_payload = usize::from(total) - ihl;
        }
        ETHERTYPE_IPV6 => {
            let ip = header(frame, off, 40)?;
            let b0 = ip[0];
            if b0 >> 4 != 6 {
                return Err(Counter::Malformed);
            }
            let b1 = ip[1];
            let payload = be16(ip, 4);
            h.ip_version = 6;
            h.tos = ((b0 & 0x0f) << 4) | (b1 >> 4);
            h.flow_label = (u32::from(b1 & 0x0f) << 16) | u32::from(be16(ip, 2));
            h.ip_total_len = payload.saturating_add(40);
            next = ip[6];
            h.ttl = ip[7];
            h.src_addr.copy_from_slice(&ip[8..24]);
            h.dst_addr.copy_from_slice(&ip[24..40]);
            off += 40;
            let mut remaining = usize::from(payload);
            for _ in 0..MAX_IPV6_EXTENSIONS {
                let len = match next {
                    IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS => {
                        let ext = header(frame, off, 8)?;
                        next = ext[0];
                        (usize::from(ext[1]) + 1) * 8
                    }
                    IPV6_AUTH => {
                        let ext = header(frame, off, 8)?;
                        next = ext[0];
                        (usize::from(ext[1]) + 2) * 4
                    }
                    IPV6_FRAGMENT => {
                        let ext = header(frame, off, 8)?;
                        next = ext[0];
                        let frag = be16(ext, 2);
                        h.ip_flags |= ip_flags::IPV6_FRAGMENT_HEADER;
                        if frag & 1 != 0 {
                            h.ip_flags |= ip_flags::MF;
                        }
                        h.frag_offset = frag & 0xfff8;
                        if h.frag_offset != 0 {
                            return Err(Counter::NonFirstFragment);
                        }
                        8
                    }
                    _ => break,
                };
                if remaining < len {
                    return Err(Counter::Malformed);
                }
                remaining -= len;
                off += len;
            }
            if matches!(
                next,
                IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS | IPV6_AUTH | IPV6_FRAGMENT
            ) {
                return Err(Counter::Ipv6ExtensionLimit);
            }
            ip_payload = remaining;
        }
        _ => return Err(Counter::NonIp),
    }

    h.l4_proto = next;
    match next {
        ip_proto::UDP => {
            let udp = header(frame, off, 8)?;
            let udp_len = usize::from(be16(udp, 4));
            // A first fragment's UDP length covers the whole datagram; the IP length bounds what
            // this packet carries.
            let carried = udp_len.min(ip_payload);
            if carried < 8 {
                return Err(Counter::Malformed);
            }
            h.src_port = be16(udp, 0);
            h.dst_port = be16(udp, 2);
            h.payload_len = (carried - 8) as u16;
            h.payload_offset = (off + 8) as u16;
        }
        ip_proto::TCP => {
            let tcp = header(frame, off, 20)?;
            let b12 = tcp[12];
            let data_offset = usize::from(b12 >> 4) * 4;
            if data_offset < 20 || ip_payload < data_offset {
                return Err(Counter::Malformed);
            }
            header(frame, off, data_offset)?;
            h.src_port = be16(tcp, 0);
            h.dst_port = be16(tcp, 2);
            h.tcp_seq = be32(tcp, 4);
            h.tcp_ack = be32(tcp, 8);
            h.tcp_data_offset = b12 >> 4;
            h.tcp_flags = tcp[13];
            h.tcp_window = be16(tcp, 14);
            h.tcp_options_len = (data_offset - 20) as u8;
            h.tcp_options_offset = (off + 20) as u16;
            h.payload_len = (ip_payload - data_offset) as u16;
            h.payload_offset = (off + data_offset) as u16;
        }
        _ => return Err(Counter::OtherL4),
    }
    Ok(h)
}

/// `emit()` in `sensor-ebpf/src/main.rs`, without the ring buffer.
fn emit(
    frame: &[u8],
    frame_len: u32,
    h: &Headers,
    mut flags: u8,
    prefix_len: u32,
    context: &FrameContext,
    r: &mut CaptureRecord,
) {
    // What the last record wrote and this one may not: its payload (zero past
    // `captured_len`, as in a zeroed record), the TCP options, the reserved bytes. Every other
    // field is written below.
    let last_captured = usize::from(r.captured_len).min(PAYLOAD_CAPACITY);
    r.captured_len = 0;
    r.tcp_options = [0; TCP_OPTIONS_CAPACITY];
    r.reserved = [0; 8];
    // Payload present in the frame: Ethernet padding of short frames lies beyond the IP length,
    // so bound by what the headers declare as well as by what the frame holds.
    let in_frame = frame_len.saturating_sub(u32::from(h.payload_offset));
    let declared = u32::from(h.payload_len);
    if in_frame < declared {
        flags |= record_flags::FRAME_SHORT;
    }
    let want = in_frame
        .min(declared)
        .min(prefix_len)
        .min(PAYLOAD_CAPACITY as u32);
    if want > 0 {
        // The kernel masks the length for the verifier; after the clamp above the mask changes
        // nothing, but mirror it rule for rule.
        let len = ((want - 1) & (PAYLOAD_CAPACITY as u32 - 1)) + 1;
        let start = usize::from(h.payload_offset);
        // bpf_xdp_load_bytes fails, and the kernel captures nothing, when the bytes are not
        // all in the frame; here that happens only past a capture's snap length, where the
        // kernel would have had the bytes: keep what there is.
        let end = (start + len as usize).min(frame.len());
        if let Some(bytes) = frame.get(start..end) {
            r.payload[..bytes.len()].copy_from_slice(bytes);
            r.captured_len = bytes.len() as u16;
        }
    }
    let captured = usize::from(r.captured_len);
    if captured < last_captured {
        r.payload[captured..last_captured].fill(0);
    }
    let opts = usize::from(h.tcp_options_len);
    if opts > 0 && opts <= TCP_OPTIONS_CAPACITY {
        let start = usize::from(h.tcp_options_offset);
        if let Some(bytes) = frame.get(start..start + opts) {
            r.tcp_options[..opts].copy_from_slice(bytes);
        }
    }
    r.timestamp_ns = context.timestamp_ns;
    r.ifindex = context.ifindex;
    r.rx_queue = context.rx_queue;
    r.src_addr = h.src_addr;
    r.dst_addr = h.dst_addr;
    r.tcp_seq = h.tcp_seq;
    r.tcp_ack = h.tcp_ack;
    r.flow_label = h.flow_label;
    r.frame_len = frame_len;
    r.ip_id = h.ip_id;
    r.ip_total_len = h.ip_total_len;
    r.frag_offset = h.frag_offset;
    r.src_port = h.src_port;
    r.dst_port = h.dst_port;
    r.tcp_window = h.tcp_window;
    r.payload_len = h.payload_len;
    r.payload_offset = h.payload_offset;
    r.vlan_ids = h.vlan_ids;
    r.ip_version = h.ip_version;
    r.ttl = h.ttl;
    r.tos = h.tos;
    r.l4_proto = h.l4_proto;
    r.ip_flags = h.ip_flags;
    r.flags = flags;
    r.vlan_count = h.vlan_count;
    r.tcp_flags = h.tcp_flags;
    r.tcp_data_offset = h.tcp_data_offset;
    r.tcp_options_len = h.tcp_options_len;
}

#[cfg(test)]
mod tests {
    use sensor_common::MatchAction;

    use crate::record::record_bytes;

    use super::*;

    /// Ethernet + IPv4 (DF, TTL 64, ID 0x1234) + UDP 5060 -> `dst_port` + payload.
    fn udp4(dst_port: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
        let total = (20 + 8 + payload.len()) as u16;
        f.extend_from_slice(&[0x45, 0x10]);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[0x12, 0x34, 0x40, 0x00, 64, 17, 0, 0]);
        f.extend_from_slice(&[198, 51, 100, 7, 203, 0, 113, 9]);
        f.extend_from_slice(&5060u16.to_be_bytes());
        f.extend_from_slice(&dst_port.to_be_bytes());
        f.extend_from_slice(&(8 + payload.len() as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(payload);
        f
    }

    /// One record extracted into again and again holds, byte for byte, what `extract` makes of
    /// each frame: nothing of the record before stays. Every corpus frame, with prefixes that
    /// take the payloads whole and cut them short in turn; frames that do not match leave the
    /// record as it was.
    #[test]
    fn extracting_into_a_used_record_makes_what_extract_makes() {
        let mut ports = PortSet::empty();
        ports.insert(5060);
        let mut record = CaptureRecord::zeroed();
        let (mut same, mut refused, mut frames) = (0, 0, 0);
        crate::offline::for_each_corpus_frame(|frame, wire_len, ctx| {
            let prefix = [1024, 7, 300][frames % 3];
            frames += 1;
            // Destination port 5060 only: the corpus's answers and its 5061 frames are refused.
            let config = SensorConfig::new(MatchAction::Drop, false, prefix);
            let before = record;
            match (
                extract(frame, wire_len, &config, &ports, ctx),
                extract_into(frame, wire_len, &config, &ports, ctx, &mut record),
            ) {
                (Ok(want), Ok(())) => {
                    assert_eq!(record_bytes(&record), record_bytes(&want), "frame {frames}");
                    same += 1;
                }
                (Err(a), Err(b)) => {
                    assert_eq!(a, b);
                    assert_eq!(
                        record_bytes(&record),
                        record_bytes(&before),
                        "frame {frames}"
                    );
                    refused += 1;
                }
                (a, b) => panic!("frame {frames}: {:?} / {b:?}", a.err()),
            }
        });
        assert!(same > 150 && refused > 20, "{same} {refused}");
    }

    fn run(frame: &[u8], config: SensorConfig) -> Result<CaptureRecord, Counter> {
        let context = FrameContext {
            timestamp_ns: 5,
            ifindex: 2,
            rx_queue: 1,
        };
        extract(
            frame,
            frame.len() as u32,
            &config,
            &PortSet::default(),
            &context,
        )
    }

    const FULL: SensorConfig = SensorConfig::new(MatchAction::Drop, false, 1024);

    #[test]
    fn matched_udp_frame_fills_the_record() {
        let frame = udp4(5060, b"OPTIONS sip:x SIP/2.0\r\n\r\n");
        let r = run(&frame, FULL).unwrap();
        assert_eq!(&r.src_addr[..4], &[198, 51, 100, 7]);
        assert_eq!(&r.dst_addr[..4], &[203, 0, 113, 9]);
        assert_eq!((r.src_port, r.dst_port), (5060, 5060));
        assert_eq!((r.ip_version, r.ttl, r.tos, r.ip_id), (4, 64, 0x10, 0x1234));
        assert_eq!(r.ip_flags, ip_flags::DF);
        assert_eq!(r.flags, record_flags::MATCHED_DST_PORT);
        assert_eq!(
            (r.payload_offset, r.payload_len, r.captured_len),
            (42, 25, 25)
        );
        assert_eq!(&r.payload[..7], b"OPTIONS");
        assert_eq!(r.frame_len as usize, frame.len());
        assert_eq!((r.timestamp_ns, r.ifindex, r.rx_queue), (5, 2, 1));
    }

    #[test]
    fn outcomes_other_than_a_match() {
        assert_eq!(run(&udp4(53, b"x"), FULL).err(), Some(Counter::PortMiss));
        let with_sources = SensorConfig::new(MatchAction::Drop, true, 1024);
        let mut reply = udp4(53, b"x");
        reply[34..38].copy_from_slice(&[0x13, 0xc4, 0x9c, 0x40]);
        assert_eq!(
            run(&reply, with_sources).unwrap().flags,
            record_flags::MATCHED_SRC_PORT
        );
        assert_eq!(run(&[0; 13], FULL).err(), Some(Counter::Truncated));
        let mut arp = udp4(5060, b"");
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(run(&arp, FULL).err(), Some(Counter::NonIp));
        let mut ihl = udp4(5060, b"");
        ihl[14] = 0x44;
        assert_eq!(run(&ihl, FULL).err(), Some(Counter::Malformed));
        let mut fragment = udp4(5060, b"");
        fragment[20..22].copy_from_slice(&[0x00, 0x01]);
        assert_eq!(run(&fragment, FULL).err(), Some(Counter::NonFirstFragment));
        let mut icmp = udp4(5060, b"");
        icmp[23] = 1;
        assert_eq!(run(&icmp, FULL).err(), Some(Counter::OtherL4));
    }

    #[test]
    fn prefix_padding_and_short_frames() {
        let frame = udp4(5060, &[b'a'; 300]);
        let r = run(&frame, SensorConfig::new(MatchAction::Drop, false, 100)).unwrap();
        assert_eq!((r.payload_len, r.captured_len), (300, 100));
        assert_eq!(r.payload[100], 0);

        // Ethernet padding past the IP length is not payload.
        let mut padded = udp4(5060, b"OPTIONS");
        padded.resize(60, 0xee);
        let r = run(&padded, FULL).unwrap();
        assert_eq!((r.payload_len, r.captured_len), (7, 7));
        assert_eq!(r.flags & record_flags::FRAME_SHORT, 0);

        // A frame shorter than its headers declare.
        let short = &udp4(5060, &[b'b'; 50])[..60];
        let r = run(short, FULL).unwrap();
        assert_eq!((r.payload_len, r.captured_len), (50, 18));
        assert_ne!(r.flags & record_flags::FRAME_SHORT, 0);
    }
}
