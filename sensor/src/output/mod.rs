//! Where events go: NDJSON and Kafka today; each format in its own module.

pub mod json;
pub mod kafka;
pub mod ndjson;
pub mod spool;

pub use ndjson::NdjsonWriter;
