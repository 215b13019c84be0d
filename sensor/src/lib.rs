//! The darknet SIP sensor agent, as a library: one module per concern.
//!
//! - [`capture`]: the XDP program, its maps, attachment and ring buffer.
//! - [`record`]: checked, typed views of the kernel's records.
//! - [`event`]: a record with its time, and what the agent learns from it.
//! - [`sip`]: SIP message parsing; [`fingerprint`]: which scanner sent it, with evidence.
//! - [`offline`]: capture files and the userspace twin of the kernel parser.
//! - [`output`]: NDJSON and the JSON document of an event.
//! - [`rogue`]: rogue SIP daemons seen passively; [`probe`]: the same five signs, tested actively.
//! - [`pipeline`]: what happens to each record, live or from a capture file.
//! - [`aggregate`]: sources, campaigns, tools and a timeseries in bounded memory;
//!   [`report`]: the report over event documents (`sensor report`, and on exit), its plot.
//! - [`agent`]: the live run: kernel program, ring buffer, pipeline.
//! - [`counters`], [`clock`], [`escape`]: accounting, time, and terminal-safe text.

pub mod agent;
pub mod aggregate;
pub mod capture;
pub mod clock;
pub mod counters;
pub mod escape;
pub mod event;
pub mod fingerprint;
pub mod offline;
pub mod output;
pub mod pipeline;
pub mod probe;
pub mod record;
pub mod report;
pub mod rogue;
pub mod session;
pub mod sip;
