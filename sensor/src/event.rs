//! An event: one decoded record with its wall-clock time, and what the agent learns from it.

use crate::record::Record;

/// One matched frame as the agent sees it. Borrows the record's bytes (from the ring buffer or a
/// capture file) for as long as the event is being processed.
#[derive(Clone, Copy)]
pub struct Event<'a> {
    pub record: Record<'a>,
    /// Nanoseconds since the Unix epoch.
    pub wall_ns: u64,
}
