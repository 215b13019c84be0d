//! The fingerprint engine with the built-in rules on arbitrary records: the record validated as
//! the agent validates ring buffer items, then parsed, classified (with and without packet facts
//! and per-source IP-ID state) and turned into the event document, which must be escaped and
//! bounded. The input is a record as the kernel writes it (see `sensor_fuzz::record_from`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sensor::{
    event::Event,
    fingerprint::SourceTracker,
    output::json::EventDoc,
    record::{OwnedRecord, Record},
    sip::SipMessage,
};

fuzz_target!(|data: &[u8]| {
    let engine = sensor_fuzz::engine();
    // As written: whatever the validation says, it must say it without panicking.
    let raw = sensor_fuzz::record_from(data, false);
    let _ = OwnedRecord::new(raw);
    // As a ring item of any length (the kernel writes records of several payload classes).
    let _ = OwnedRecord::from_unaligned(data);
    let repaired = sensor_fuzz::record_from(data, true);
    let record = Record::new(&repaired).expect("a repaired record validates");

    let sip = SipMessage::parse_captured(record.payload(), record.payload_truncated());
    let bare = engine.classify_packet(&sip, None, None);
    let _ = (bare.tool(), bare.rule_id(), bare.is_scanner(), bare.confidence);

    // The same source three times, so the IP-ID tracker has a behaviour to infer.
    let mut sources = SourceTracker::new(4);
    for i in 0..3u64 {
        let event = Event {
            record,
            wall_ns: 1_700_000_000_000_000_000 + i * 1_000_000,
        };
        let doc = EventDoc::analyzed(&event, engine, &mut sources);
        sensor_fuzz::assert_safe_document(&doc);
    }
});
