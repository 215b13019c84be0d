//! SIP message parsing: zero-copy over the captured payload.
//!
//! - [`message`]: start line, header spans in wire order, body, truncation.
//! - [`headers`]: header names, compact forms, case-insensitive lookup.
//! - [`fields`]: Via, From/To/Contact, URIs, CSeq, SDP lines.
//! - [`classify`]: what a payload is when it is not SIP.
//! - [`places`]: where those fields lie, for a template's other packets.
//! - `scan`: line ends and colons, 64 bytes at a time.

pub mod classify;
pub mod fields;
pub mod headers;
pub mod message;
pub mod places;
mod scan;

pub use classify::PayloadKind;
pub use headers::HeaderName;
pub use message::{Header, Layout, LineEndings, MAX_HEADERS, SipMessage, StartLine};
