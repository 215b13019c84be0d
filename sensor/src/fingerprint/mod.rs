//! Scanner fingerprinting: which tool sent a packet, with the evidence, and what the packet
//! gives away about its sender.
//!
//! - [`rules`]: the rule file format (TOML, versioned), validation, compiled rules.
//! - [`facts`]: the fields a rule reads, computed once per message.
//! - [`engine`]: scoring, the verdict and its evidence.
//! - [`infer`]: tag decoding, Via/Contact host classes, process count, TTL.
//! - [`ipid`]: IP-ID behaviour per packet and per source (bounded, CLOCK eviction).
//! - [`template`]: the structural template hash that clusters unnamed tools.
//! - [`cache`]: rule evaluation once per template ([`key`]), per-packet predicates only;
//!   a template's later packets are recalled without being parsed (`recall`).
//!
//! ```no_run
//! # use sensor::{fingerprint::{Engine, SourceTracker}, sip::SipMessage, event::Event};
//! # fn demo(event: &Event<'_>) -> Result<(), sensor::fingerprint::RuleError> {
//! let engine = Engine::load(None)?; // built-in rules (+ an operator's file)
//! let mut sources = SourceTracker::default();
//! let sip = SipMessage::parse_captured(event.record.payload(), event.record.payload_truncated());
//! let fp = engine.classify_tracked(event, &sip, &mut sources);
//! println!("{} {:?} {:.2}", fp.tool(), fp.variant(), fp.confidence);
//! # Ok(()) }
//! ```

pub mod cache;
pub mod engine;
pub mod facts;
pub mod infer;
pub mod ipid;
pub mod key;
pub mod recall;
pub mod rules;
pub mod template;
mod uniform;

#[cfg(test)]
mod tests;

pub use cache::{ClassCache, Verdict};
pub use engine::{Alternative, BUILTIN_RULES, Engine, Evidence, Fingerprint, Inferences};
pub use facts::Packet;
pub use ipid::{SourceTracker, SourceView};
pub use recall::Recalled;
pub use rules::{Category, Rule, RuleError, RuleFile};
