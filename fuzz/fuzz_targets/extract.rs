//! The userspace twin of the kernel's frame parser on arbitrary frames and configurations: no
//! panic, and every record it produces validates, holds no more than it may, and holds exactly
//! the frame's bytes. Input: one byte of flags, two of prefix length, one choosing the port set,
//! then the frame.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sensor::{
    capture::PortSet,
    event::Event,
    offline::{FrameContext, extract},
    output::json::EventDoc,
    record::Record,
};
use sensor_common::{MatchAction, PAYLOAD_CAPACITY, SensorConfig};

fn port_sets() -> &'static [PortSet; 3] {
    static SETS: OnceLock<[PortSet; 3]> = OnceLock::new();
    SETS.get_or_init(|| {
        [
            PortSet::default(),
            "5060,80,65535".parse().expect("ports"),
            "1-65535".parse().expect("ports"),
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    let [flags, prefix_hi, prefix_lo, port_choice, frame @ ..] = data else {
        return;
    };
    let action = if flags & 1 == 0 {
        MatchAction::Drop
    } else {
        MatchAction::Pass
    };
    // Beyond the record's capacity too: the kernel masks such a prefix and so must the twin.
    let prefix_len = u16::from_be_bytes([*prefix_hi, *prefix_lo]) % 2048;
    let config = SensorConfig::new(action, flags & 2 != 0, prefix_len);
    let ports = &port_sets()[usize::from(*port_choice % 3)];
    // A capture cut by its snap length reports a longer wire length than it holds.
    let wire_len = frame.len() as u32 + if flags & 4 != 0 { u32::from(*port_choice) } else { 0 };
    let context = FrameContext::default();
    let Ok(record) = extract(frame, wire_len, &config, ports, &context) else {
        return;
    };
    let view = Record::new(&record).expect("the extractor's records validate");
    let captured = usize::from(record.captured_len);
    assert!(captured <= PAYLOAD_CAPACITY);
    assert!(captured <= usize::from(prefix_len).min(PAYLOAD_CAPACITY));
    assert!(captured <= usize::from(record.payload_len));
    let start = usize::from(record.payload_offset);
    assert_eq!(view.payload(), &frame[start..start + captured]);
    sensor_fuzz::assert_safe_document(&EventDoc::new(&Event {
        record: view,
        wall_ns: 0,
    }));
});
