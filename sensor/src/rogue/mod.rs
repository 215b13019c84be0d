//! Rogue SIP daemons: the five signs of the seed (no response; protocol mismatch on the port;
//! connection establishment failure; no specific error as response; frequent timeouts), the
//! verdicts drawn from them, and the passive tracker that finds them in mirrored traffic.
//!
//! - [`verdict`]: the shared tally, signs, score and verdict rules (active and passive alike);
//! - [`tracker`]: passive detection from [`crate::event::Event`]s;
//! - [`shape`]: a minimal "is this SIP?" check, independent of the full parser;
//! - [`doc`]: the NDJSON documents (`rogue_server`, `sip_server`, `rogue_stats`).
//!
//! Active probing is [`crate::probe`]. docs/rogue.md describes both.

pub mod doc;
pub mod shape;
pub mod tracker;
pub mod verdict;

pub use tracker::{ServerKey, ServerReport, Tracker, TrackerConfig, TrackerCounters};
pub use verdict::{RogueReason, Signs, Tally, TransportVerdict, Verdict};
