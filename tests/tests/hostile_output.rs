//! Attacker-written strings in every output: hostile payloads (ANSI and OSC escapes, C1 controls
//! raw and UTF-8 encoded, NULs, invalid UTF-8, header lines as long as a record holds, and 64 KB
//! headers where no record limits them) through the agent's pipeline into NDJSON, through the
//! terminal lines `cargo xtask run` prints, through the probe's table and JSON and through the
//! rogue tracker's documents. Every output byte must be printable ASCII (or a line break between
//! documents), and every string field bounded.

use std::net::{IpAddr, SocketAddr};

use sensor::{
    capture::PortSet,
    escape::check_document,
    fingerprint::Engine,
    offline::{FrameContext, extract},
    output::{fingerprint::FingerprintDoc, sip::SipDoc},
    pipeline::{Pipeline, PipelineOptions},
    probe::{self, Attempt, Method, Outcome},
    record::{Record, Transport},
    sip::SipMessage,
};
use sensor_common::{MatchAction, SensorConfig};
use sensor_tests::{frames::Frame, sensor_process::RemoveOnDrop, temp_path};

/// The longest string in any document: the escaped template of an unknown message.
const DOCUMENT_STRING_MAX: usize = 4 * 2048 + 32;
/// The longest value of a SIP field: 256 input bytes, escaped, and the cut marker.
const SIP_FIELD_MAX: usize = 4 * sensor::output::sip::FIELD_MAX + 16;
/// The longest `payload.printable`: a record's whole payload, escaped.
const PRINTABLE_MAX: usize = 4 * sensor_common::PAYLOAD_CAPACITY;

/// Payloads an attacker could send, each a SIP request with something nasty where a terminal or
/// a parser would notice.
fn hostile_payloads() -> Vec<(&'static str, Vec<u8>)> {
    let mut long_header = b"OPTIONS sip:a@b SIP/2.0\r\nUser-Agent: ".to_vec();
    long_header.extend(std::iter::repeat_n(b'\x1b', 300));
    long_header.extend(std::iter::repeat_n(b'A', 1200));
    long_header.extend_from_slice(b"\r\n\r\n");
    let mut many_headers = b"REGISTER sip:x SIP/2.0\r\n".to_vec();
    for i in 0..200 {
        many_headers.extend_from_slice(format!("X-\x1b[{i}m: ").as_bytes());
        many_headers.extend_from_slice(b"\x9b\r\n");
    }
    vec![
        (
            "ANSI and OSC escapes",
            b"OPTIONS sip:\x1b[2J\x1b[H@203.0.113.9 SIP/2.0\r\n\
              Via: SIP/2.0/UDP \x1b]0;owned\x07:5060;branch=z9hG4bK\x1b[31m\r\n\
              From: \"\x1b[5mEvil\x1b[0m\" <sip:\x1b[8m@x>;tag=\x1b[?1049h\r\n\
              To: <sip:100@203.0.113.9>\r\n\
              User-Agent: friendly-scanner\x1b]52;c;cm0gLXJmIC8=\x07\r\n\
              Call-ID: \x1bP+q\x1b\\\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
                .to_vec(),
        ),
        (
            "C1 controls, raw and UTF-8",
            b"INVITE sip:\x9b2J@x SIP/2.0\r\nUser-Agent: \xc2\x9b31m\x85\xc2\x85\x8d\x90\r\n\
              Contact: \"\xc2\x9d0;t\xc2\x9c\" <sip:a@\x9bb>\r\nSubject: \x9b6n\r\n\r\n"
                .to_vec(),
        ),
        (
            "NULs",
            b"OPTIONS sip:a\0b@x SIP/2.0\r\nUser-Agent: sip\0vicious\r\nFrom: \"\0\" <sip:\0@\0>;tag=\0\r\n\0\0: \0\r\n\r\n"
                .to_vec(),
        ),
        (
            "invalid UTF-8",
            b"OPTIONS sip:\xff\xfe@x SIP/2.0\r\nUser-Agent: \xc0\xaf\xed\xa0\x80\xf8\x88\x80\x80\x80\r\nTo: \xe2\x80\xae<sip:x@y>\r\n\r\n"
                .to_vec(),
        ),
        ("a header line as long as a record holds", long_header),
        ("more headers than the parser keeps", many_headers),
        (
            "a response with a hostile reason and server",
            b"SIP/2.0 200 \x1b[32mOK\x1b[0m\r\nServer: \x1b]0;x\x07kamailio\r\nCSeq: 1 OPTIONS\r\n\r\n"
                .to_vec(),
        ),
    ]
}

/// Fails unless every byte is printable ASCII or a line feed.
fn assert_printable(what: &str, bytes: &[u8]) {
    if let Some((at, b)) = bytes
        .iter()
        .enumerate()
        .find(|(_, b)| **b != b'\n' && !(0x20..0x7f).contains(*b))
    {
        panic!("{what}: byte {b:#04x} at {at} is not printable ASCII");
    }
}

fn check_sip_fields(label: &str, sip: &serde_json::Value) {
    for field in [
        "method",
        "uri",
        "reason",
        "user_agent",
        "call_id",
        "sdp_session",
    ] {
        if let Some(s) = sip[field].as_str() {
            assert!(
                s.len() <= SIP_FIELD_MAX,
                "{label}: sip.{field} is {} bytes",
                s.len()
            );
        }
    }
    for addr in ["from", "to", "contact"] {
        for part in ["display", "uri", "user", "host", "tag"] {
            if let Some(s) = sip[addr][part].as_str() {
                assert!(s.len() <= SIP_FIELD_MAX, "{label}: sip.{addr}.{part}");
            }
        }
    }
    let headers = sip["header_names"].as_array().map_or(0, Vec::len);
    assert!(
        headers <= sensor::sip::MAX_HEADERS,
        "{label}: {headers} header names"
    );
}

#[test]
fn hostile_payloads_come_out_escaped_and_bounded_everywhere() {
    let output = temp_path("hostile.ndjson");
    let _cleanup = RemoveOnDrop(output.clone());
    let mut pipeline = Pipeline::new(&PipelineOptions {
        rules: None,
        outputs: sensor::output::OutputOptions::ndjson_file(&output),
        detect_rogue: Some(sensor::rogue::TrackerConfig::default()),
        ..Default::default()
    })
    .expect("pipeline");
    let config = SensorConfig::new(MatchAction::Drop, true, sensor_common::DEFAULT_PREFIX_LEN);
    let ports = PortSet::default();
    let mut fed = 0u64;
    for (n, (label, payload)) in hostile_payloads().into_iter().enumerate() {
        // Both ways: to the darknet (a request), and back from a "server" (src port 5060), UDP
        // and TCP, so the rogue tracker sees them too.
        for (src, dst, sport, dport, tcp) in [
            ("198.51.100.7", "203.0.113.9", 40000 + n as u16, 5060, false),
            ("203.0.113.9", "198.51.100.7", 5060, 40000 + n as u16, false),
            ("2001:db8::7", "2001:db8::9", 41000 + n as u16, 5060, true),
        ] {
            let mut frame = Frame::udp(src, dst, sport, dport, &payload);
            if tcp {
                frame = Frame {
                    payload: payload.clone(),
                    ..Frame::tcp(src, dst, sport, dport, 0x18, &[1, 1, 1, 1])
                };
            }
            let bytes = frame.build();
            let record = extract(
                &bytes,
                bytes.len() as u32,
                &config,
                &ports,
                &FrameContext::default(),
            )
            .unwrap_or_else(|outcome| panic!("{label}: not matched ({outcome:?})"));
            let view = Record::new(&record).expect("record");
            pipeline.record(view, 1_700_000_000_000_000_000 + fed * 1_000);
            fed += 1;
        }
    }
    pipeline.tick();
    pipeline.finish(&Default::default());
    assert_eq!(pipeline.counters.events_written, fed);
    assert_eq!(pipeline.counters.output_errors, 0);

    // NDJSON: every byte printable, every string bounded, the SIP fields within their bound.
    let bytes = std::fs::read(&output).expect("output");
    assert_printable("NDJSON output", &bytes);
    let text = String::from_utf8(bytes).expect("ASCII");
    let mut events = 0;
    let mut terminal = String::new();
    for line in text.lines() {
        let doc: serde_json::Value = serde_json::from_str(line).expect("JSON line");
        check_document(&doc, DOCUMENT_STRING_MAX).unwrap_or_else(|e| panic!("{e}: {line}"));
        if doc["event_type"] == "sip_probe" {
            events += 1;
            let printable = doc["payload"]["printable"].as_str().unwrap();
            assert!(printable.len() <= PRINTABLE_MAX);
            check_sip_fields(&format!("event {events}"), &doc["sip"]);
        }
        // The lines `cargo xtask run` prints from the same file.
        if let Some(shown) = xtask::show::event_line(line) {
            terminal.push_str(&shown);
            terminal.push('\n');
            assert!(shown.len() <= 200, "terminal line of {} bytes", shown.len());
        }
    }
    assert_eq!(events, fed);
    assert_printable("cargo xtask run lines", terminal.as_bytes());
    assert!(
        text.contains("\\\\x1b]0;owned\\\\x07"),
        "escapes are kept, escaped (lossless)"
    );
    assert!(
        text.contains("\"event_type\":\"rogue_stats\""),
        "the rogue tracker's documents are in the output too"
    );
}

#[test]
fn sixty_four_kilobyte_headers_are_bounded() {
    // No record holds this much (a record's payload is 1 KiB), but capture files and future
    // transports might: the parser, the document and the engine must bound it themselves.
    let engine = Engine::builtin().expect("rules");
    let mut payload = b"OPTIONS sip:".to_vec();
    payload.extend(std::iter::repeat_n(b'u', 65_536));
    payload.extend_from_slice(b"@x SIP/2.0\r\nUser-Agent: \x1b[31m");
    payload.extend(std::iter::repeat_n(b'\x9b', 65_536));
    payload.extend_from_slice(b"\r\nFrom: \"");
    payload.extend(std::iter::repeat_n(b'\0', 65_536));
    payload.extend_from_slice(b"\" <sip:a@b>;tag=1\r\nX-Long: ");
    payload.extend(std::iter::repeat_n(b'\xff', 65_536));
    payload.extend_from_slice(b"\r\n\r\n");
    for cut in [false, true] {
        let sip = SipMessage::parse_captured(&payload, cut);
        let doc = serde_json::to_value(SipDoc::new(&sip)).unwrap();
        check_document(&doc, SIP_FIELD_MAX).unwrap_or_else(|e| panic!("sip object: {e}"));
        check_sip_fields("64 KB", &doc);
        let fp = engine.classify_packet(&sip, None, None);
        let fp_doc = serde_json::to_value(FingerprintDoc::new(&fp)).unwrap();
        check_document(&fp_doc, DOCUMENT_STRING_MAX)
            .unwrap_or_else(|e| panic!("fingerprint object: {e}"));
        let size = doc.to_string().len() + fp_doc.to_string().len();
        assert!(
            size < 64 * 1024,
            "documents of {size} bytes for a 256 KB message"
        );
    }
}

#[test]
fn probe_table_and_json_escape_and_bound_what_targets_send() {
    let target = SocketAddr::new(IpAddr::from([203, 0, 113, 12]), 5060);
    let mut huge = b"HTTP/1.1 400 \x1b[2J\x1b]0;owned\x07\x9b".to_vec();
    huge.extend(std::iter::repeat_n(b'\x1b', 65_536));
    let attempt = |transport, method, outcome| Attempt {
        method,
        transport,
        sent: 1,
        elapsed_ms: 1,
        outcome,
    };
    let report = probe::judge(
        target,
        vec![
            attempt(
                Transport::Udp,
                Method::Options,
                Outcome::NonSip {
                    sample: huge.clone(),
                },
            ),
            attempt(
                Transport::Tcp,
                Method::Invite,
                Outcome::Sip {
                    code: 200,
                    reason: huge.clone(),
                    is_final: true,
                    call_id_matched: false,
                    server: Some(huge.clone()),
                },
            ),
        ],
    );
    let table = probe::report::table(std::slice::from_ref(&report));
    assert_printable("probe table", table.as_bytes());
    for line in table.lines() {
        assert!(line.len() <= 1024, "table line of {} bytes", line.len());
    }
    let json = serde_json::to_value(probe::report::ProbeDoc::new(0, &report)).unwrap();
    check_document(&json, 4 * 256 + 16).unwrap_or_else(|e| panic!("probe JSON: {e}"));
    assert_printable("probe JSON", json.to_string().as_bytes());
}
