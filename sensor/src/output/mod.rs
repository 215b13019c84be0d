//! Where events go: NDJSON today; each format in its own module.

pub mod event;
pub mod fingerprint;
pub mod json;
pub mod ndjson;
pub mod sip;

pub use ndjson::NdjsonWriter;
