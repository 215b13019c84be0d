//! What the fuzz targets share: the built-in engine, the checks every output document must
//! pass, and the record a fuzz input stands for.

use std::sync::OnceLock;

use sensor::fingerprint::Engine;
use sensor_common::{CaptureRecord, PAYLOAD_CAPACITY, TCP_OPTIONS_CAPACITY, ip_proto};

/// The built-in rules, loaded once per fuzzing process.
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| Engine::builtin().expect("the built-in rules load"))
}

/// No string in a document is longer: the longest field is the escaped structural template of
/// an unknown message (2048 input bytes, up to 4 output bytes each, and the cut marker).
pub const DOCUMENT_STRING_MAX: usize = 4 * 2048 + 32;

/// Serializes `doc` and panics (a fuzz finding) if any string in it could reach a terminal as
/// more than text, or is unbounded.
pub fn assert_safe_document<T: serde::Serialize>(doc: &T) {
    let value = serde_json::to_value(doc).expect("every document serializes");
    if let Err(e) = sensor::escape::check_document(&value, DOCUMENT_STRING_MAX) {
        panic!("unsafe output: {e}");
    }
}

/// Bytes of a record before its payload: what a fuzz input for a record starts with.
pub const RECORD_PREFIX: usize = CaptureRecord::HEADER_LEN + TCP_OPTIONS_CAPACITY;

/// The record `data` stands for: its first [`RECORD_PREFIX`] bytes (zero-padded) are the header
/// and TCP options as the kernel writes them, the rest (up to the record's capacity) the payload.
/// With `repair`, the fields the agent validates are forced into range so that the input reaches
/// the analysis; without, they are left as they are, to exercise the validation.
pub fn record_from(data: &[u8], repair: bool) -> Box<CaptureRecord> {
    let mut bytes = vec![0u8; CaptureRecord::SIZE];
    let (head, payload) = data.split_at(data.len().min(RECORD_PREFIX));
    bytes[..head.len()].copy_from_slice(head);
    let payload = &payload[..payload.len().min(PAYLOAD_CAPACITY)];
    bytes[RECORD_PREFIX..RECORD_PREFIX + payload.len()].copy_from_slice(payload);
    let mut record = Box::new(CaptureRecord::zeroed());
    // SAFETY: CaptureRecord is plain integers with no padding; `bytes` is exactly its size.
    unsafe {
        std::ptr::copy_nonoverlapping(
            bytes.as_ptr(),
            (&mut *record as *mut CaptureRecord).cast::<u8>(),
            CaptureRecord::SIZE,
        );
    }
    if repair {
        record.ip_version = if record.ip_version & 1 == 0 { 4 } else { 6 };
        record.l4_proto = if record.l4_proto & 1 == 0 {
            ip_proto::UDP
        } else {
            ip_proto::TCP
        };
        record.captured_len = payload.len() as u16;
        record.tcp_options_len %= TCP_OPTIONS_CAPACITY as u8 + 1;
    }
    record
}
