//! Offline input: capture files and the userspace twin of the kernel frame parser.
//!
//! - [`pcap`]: a streaming reader for pcap and pcapng files.

pub mod pcap;

pub use pcap::{CaptureFileError, CaptureFormat, CaptureReader, LinkType, Packet};
