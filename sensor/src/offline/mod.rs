//! Offline input: capture files and the userspace twin of the kernel frame parser.
//!
//! - [`pcap`]: a streaming reader for pcap and pcapng files.
//! - [`extract`](mod@extract): the record the XDP program would write for a frame.
//! - [`analyze`](mod@analyze): a capture file through the live pipeline (on several threads
//!   with `--threads`, as live).

pub mod analyze;
pub mod extract;
pub mod pcap;

pub use extract::{FrameContext, extract, extract_into};
pub use pcap::{CaptureFileError, CaptureFormat, CaptureReader, LinkType, Packet};

/// For unit tests: every Ethernet frame of every capture in `tests/corpus`, files in name order,
/// with its wire length and its context (the packet's time, ifindex 3, queue 1).
#[cfg(test)]
pub(crate) fn for_each_corpus_frame(mut each: impl FnMut(&[u8], u32, &FrameContext)) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("corpus directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "pcap" || e == "pcapng"))
        .collect();
    files.sort();
    for file in files {
        for packet in CaptureReader::open(&file).expect("corpus file") {
            let packet = packet.expect("corpus packet");
            let Ok((frame, wire_len)) = packet.ethernet_frame() else {
                continue;
            };
            let ctx = FrameContext {
                timestamp_ns: packet.timestamp_ns.unwrap_or(0),
                ifindex: 3,
                rx_queue: 1,
            };
            each(&frame, wire_len, &ctx);
        }
    }
}

/// For unit tests: every record of every capture in `tests/corpus`, as the userspace extractor
/// makes them (ports 5060 and 5061, both directions, 1024-byte prefix), files in name order,
/// each record stamped with its packet's time on ifindex 3, queue 1.
#[cfg(test)]
pub(crate) fn corpus_records() -> Vec<sensor_common::CaptureRecord> {
    use sensor_common::{MatchAction, SensorConfig};
    let mut ports = crate::capture::PortSet::empty();
    ports.insert(5060);
    ports.insert(5061);
    let config = SensorConfig::new(MatchAction::Drop, true, 1024);
    let mut out = Vec::new();
    for_each_corpus_frame(|frame, wire_len, ctx| {
        if let Ok(raw) = extract(frame, wire_len, &config, &ports, ctx) {
            out.push(raw);
        }
    });
    out
}

/// For unit tests: [`corpus_records`] and, from every seventh of them, what the corpus lacks.
#[cfg(test)]
pub(crate) fn corpus_records_varied() -> Vec<sensor_common::CaptureRecord> {
    use sensor_common::{ip_flags, record_flags};
    let mut out = corpus_records();
    // What the corpus lacks: VLAN tags, the evil bit, a short frame, a cut payload, the
    // reactive flags, hostile bytes.
    let mut extra = Vec::new();
    for (i, r) in out.iter().enumerate().step_by(7) {
        let mut r = *r;
        match i % 5 {
            0 => {
                r.vlan_count = 2;
                r.vlan_ids = [10, 20];
            }
            1 => {
                r.ip_flags |= ip_flags::RESERVED;
                r.flags |= record_flags::FRAME_SHORT;
            }
            2 => {
                r.payload_len = r.captured_len.saturating_add(100);
                r.captured_len /= 2;
            }
            3 => r.flags |= record_flags::SYN_ANSWERED | record_flags::REACTIVE_SESSION,
            _ => {
                let n = usize::from(r.captured_len).min(40);
                for (j, b) in r.payload[..n].iter_mut().enumerate() {
                    if j % 3 == 0 {
                        *b = [0x1b, b'"', b'\\', 0xff, 0, b'\t'][j % 6];
                    }
                }
            }
        }
        extra.push(r);
    }
    out.extend(extra);
    out
}
