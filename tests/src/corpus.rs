//! The corpus of real scanner captures (tests/corpus): its manifest and its frames.

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub struct Manifest {
    pub schema: u32,
    #[serde(rename = "capture")]
    pub captures: Vec<Capture>,
}

#[derive(Debug, Deserialize)]
pub struct Capture {
    pub file: String,
    /// Expected attribution of what the scanner side sent; `benign` for no scanner.
    pub tool: String,
    #[serde(default)]
    pub also: Vec<String>,
    pub packets: usize,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub command: Option<String>,
}

/// The addresses the corpus's scanners sent from.
pub const SCANNER_SOURCES: [&str; 2] = ["198.51.100.2", "2001:db8:1::2"];

pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

pub fn manifest() -> Manifest {
    let text = std::fs::read_to_string(dir().join("manifest.toml")).expect("corpus manifest");
    toml::from_str(&text).expect("manifest parses")
}

/// One frame of a capture: time, Ethernet bytes, length on the wire.
pub struct CapturedFrame {
    pub timestamp_ns: u64,
    pub bytes: Vec<u8>,
    pub wire_len: u32,
}

/// Every frame of a capture file, as Ethernet.
pub fn frames(file: &str) -> Vec<CapturedFrame> {
    let reader = sensor::offline::CaptureReader::open(dir().join(file)).expect("open capture");
    reader
        .map(|packet| {
            let packet = packet.expect("capture reads");
            let (frame, wire_len) = packet.ethernet_frame().expect("Ethernet frame");
            CapturedFrame {
                timestamp_ns: packet.timestamp_ns.unwrap_or(0),
                bytes: frame.into_owned(),
                wire_len,
            }
        })
        .collect()
}
