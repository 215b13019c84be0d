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
