//! The pcap/pcapng reader on arbitrary files: no panic, no unbounded allocation (libFuzzer's
//! -rss_limit_mb catches that), each packet turned into an Ethernet frame and through the
//! userspace extractor.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sensor::{
    capture::PortSet,
    offline::{CaptureReader, FrameContext, extract},
    record::Record,
};
use sensor_common::{MatchAction, SensorConfig};

/// Packets looked at per input; a file of many tiny packets must not make one run slow.
const MAX_PACKETS: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Ok(reader) = CaptureReader::new(std::io::Cursor::new(data)) else {
        return;
    };
    let _ = reader.format();
    let config = SensorConfig::new(MatchAction::Drop, true, 1024);
    let ports = PortSet::default();
    for packet in reader.take(MAX_PACKETS) {
        let Ok(packet) = packet else {
            // The reader ends after its first error; it must not panic getting there.
            break;
        };
        assert!(packet.data.len() <= sensor::offline::pcap::MAX_PACKET_BYTES as usize);
        let Ok((frame, wire_len)) = packet.ethernet_frame() else {
            continue;
        };
        let context = FrameContext {
            timestamp_ns: packet.timestamp_ns.unwrap_or(0),
            ifindex: packet.interface,
            rx_queue: 0,
        };
        if let Ok(record) = extract(&frame, wire_len, &config, &ports, &context) {
            Record::new(&record).expect("the extractor's records validate");
        }
    }
});
