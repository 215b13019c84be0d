//! The SIP parser on arbitrary payloads: no panic, every accessor in bounds, and the `sip`
//! object of the event document escaped and bounded. The first byte says whether the capture
//! was cut.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sensor::{output::sip::SipDoc, sip::SipMessage};

fuzz_target!(|data: &[u8]| {
    let (cut, payload) = match data.split_first() {
        Some((flag, rest)) => (flag & 1 == 1, rest),
        None => (false, data),
    };
    let msg = SipMessage::parse_captured(payload, cut);
    let _ = (
        msg.kind(),
        msg.start_line(),
        msg.method(),
        msg.request_uri(),
        msg.status_code(),
        msg.first_line(),
        msg.header_count(),
        msg.headers_overflow(),
        msg.headers_complete(),
        msg.truncated(),
        msg.content_length(),
        msg.line_endings(),
    );
    if let Some(body) = msg.body() {
        assert!(body.len() <= payload.len());
    }
    for header in msg.headers() {
        assert!(header.value.len() <= payload.len());
        let _ = header.order_name();
    }
    sensor_fuzz::assert_safe_document(&SipDoc::new(&msg));
});
