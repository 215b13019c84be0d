//! Where events go: NDJSON and Kafka today; each format in its own module.

pub mod fingerprint;
pub mod json;
pub mod kafka;
pub mod ndjson;
pub mod sip;
pub mod spool;

pub use ndjson::NdjsonWriter;
