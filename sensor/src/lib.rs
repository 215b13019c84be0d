//! The darknet SIP sensor agent, as a library: one module per concern.
//!
//! - [`capture`]: the XDP program, its maps, attachment and ring buffer.
//! - [`record`]: checked, typed views of the kernel's records.
//! - [`event`]: a record with its time, and what the agent learns from it.
//! - [`sip`]: SIP message parsing; [`fingerprint`]: which scanner sent it, with evidence.
//! - [`offline`]: capture files and the userspace twin of the kernel parser.
//! - [`output`]: the sinks (NDJSON, pcapng, Prometheus metrics), rotation, the JSON documents.
//! - [`rogue`]: rogue SIP daemons seen passively; [`probe`]: the same five signs, tested actively.
//! - [`pipeline`]: what happens to each record, live or from a capture file.
//! - [`aggregate`]: sources, campaigns, tools and a timeseries in bounded memory;
//!   [`report`]: the report over event documents (`sensor report`, `sensor kafka-report`, and on
//!   exit), its plot.
//! - [`output`]: NDJSON, pcapng, Prometheus metrics, Kafka (with its on-disk spool), and the JSON
//!   document of an event.
//! - [`config`], [`identity`]: the config file and the sensor's identity in every event;
//!   [`control`]: the control socket.
//! - [`agent`]: the live run: kernel program, ring buffer, pipeline, run-time changes.
//! - [`privilege`]: what the agent gives up once attached.
//! - [`counters`], [`clock`], [`escape`]: accounting, time, and terminal-safe text.

pub mod agent;
pub mod aggregate;
pub mod capture;
pub mod clock;
pub mod config;
pub mod control;
pub mod counters;
pub mod escape;
pub mod event;
pub mod fingerprint;
pub mod identity;
pub mod offline;
pub mod output;
pub mod pipeline;
pub mod prefetch;
pub mod prefix;
pub mod privilege;
pub mod probe;
pub mod record;
pub mod report;
pub mod rogue;
pub mod sampling;
pub mod session;
#[cfg(target_arch = "x86_64")]
mod simd;
pub mod sip;
mod words;
