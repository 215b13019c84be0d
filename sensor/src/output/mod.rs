//! Where events go: NDJSON today; each format in its own module.

pub mod json;
pub mod ndjson;
pub mod spool;

pub use ndjson::NdjsonWriter;
