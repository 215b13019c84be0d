//! Offline input: capture files and the userspace twin of the kernel frame parser.
//!
//! - [`pcap`]: a streaming reader for pcap and pcapng files.
//! - [`extract`](mod@extract): the record the XDP program would write for a frame.
//! - [`analyze`](mod@analyze): a capture file through the live pipeline.

pub mod analyze;
pub mod extract;
pub mod pcap;

pub use extract::{FrameContext, extract};
pub use pcap::{CaptureFileError, CaptureFormat, CaptureReader, LinkType, Packet};

/// For unit tests: every record of every capture in `tests/corpus`, as the userspace extractor
/// makes them (ports 5060 and 5061, both directions, 1024-byte prefix), files in name order,
/// each record stamped with its packet's time on ifindex 3, queue 1.
#[cfg(test)]
pub(crate) fn corpus_records() -> Vec<sensor_common::CaptureRecord> {
    use sensor_common::{MatchAction, SensorConfig};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus");
    let mut ports = crate::capture::PortSet::empty();
    ports.insert(5060);
    ports.insert(5061);
    let config = SensorConfig::new(MatchAction::Drop, true, 1024);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("corpus directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "pcap" || e == "pcapng"))
        .collect();
    files.sort();
    let mut out = Vec::new();
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
            if let Ok(raw) = extract(&frame, wire_len, &config, &ports, &ctx) {
                out.push(raw);
            }
        }
    }
    out
}
