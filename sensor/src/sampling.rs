//! Event sampling per source and template: `--events-per-template N` writes the first N events
//! of each (source address, fingerprint template) pair in every window, and counts the rest.
//!
//! A darknet scanner repeats one template millions of times; at line rate one full event per
//! packet is gigabytes an hour that say the same thing. With sampling, every packet still goes
//! through attribution, the aggregator (sources, campaigns, the report) and pcapng; only the
//! per-packet NDJSON and Kafka event is skipped, and counted in `agent.events_sampled_out`, so
//! `records_read = events_written + events_sampled_out` holds.
//!
//! The table is direct-mapped and fixed in size: a pair whose slot another pair took starts
//! its count again, which can only write more events than N, never fewer. Slots are found by a
//! keyed hash, so a sender choosing its (spoofed) addresses cannot aim them at one slot.

use std::{
    hash::{BuildHasher, Hasher},
    net::IpAddr,
};

use crate::fingerprint::ipid::SourceHashing;

/// Slots in the table (a power of two): 24 bytes each, 1.5 MiB in all.
pub const SLOTS: usize = 1 << 16;

/// How many events per pair and window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SamplingConfig {
    /// Events written per (source, template) pair and window; at least 1.
    pub per_template: u32,
    /// The window, in seconds of the events' own time.
    pub window_s: u64,
}

#[derive(Clone, Copy, Default)]
struct Slot {
    /// The pair's 64-bit key; 0: empty.
    key: u64,
    window_start_ns: u64,
    written: u32,
}

pub struct EventSampler {
    config: SamplingConfig,
    hashing: SourceHashing,
    slots: Vec<Slot>,
}

impl EventSampler {
    pub fn new(config: SamplingConfig) -> Self {
        EventSampler {
            config: SamplingConfig {
                per_template: config.per_template.max(1),
                window_s: config.window_s.max(1),
            },
            hashing: SourceHashing::new(),
            slots: vec![Slot::default(); SLOTS],
        }
    }

    pub fn config(&self) -> SamplingConfig {
        self.config
    }

    /// Whether the event of `source` with `template` at `time_ns` is written.
    pub fn admit(&mut self, source: IpAddr, template: u64, time_ns: u64) -> bool {
        let mut hasher = self.hashing.build_hasher();
        match source {
            IpAddr::V4(v4) => hasher.write(&v4.octets()),
            IpAddr::V6(v6) => hasher.write(&v6.octets()),
        }
        hasher.write(&template.to_le_bytes());
        let key = hasher.finish() | 1;
        let slot = &mut self.slots[(key >> 32) as usize & (SLOTS - 1)];
        let window_ns = self.config.window_s.saturating_mul(1_000_000_000);
        let expired = time_ns < slot.window_start_ns || time_ns - slot.window_start_ns >= window_ns;
        if slot.key != key || expired {
            *slot = Slot {
                key,
                window_start_ns: time_ns,
                written: 1,
            };
            return true;
        }
        if slot.written < self.config.per_template {
            slot.written += 1;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn sampler(per_template: u32, window_s: u64) -> EventSampler {
        EventSampler::new(SamplingConfig {
            per_template,
            window_s,
        })
    }

    #[test]
    fn writes_the_first_n_of_a_pair_per_window() {
        let mut s = sampler(3, 60);
        let a: IpAddr = "198.51.100.7".parse().unwrap();
        let admitted: Vec<bool> = (0..6).map(|i| s.admit(a, 42, 1000 * S + i)).collect();
        assert_eq!(admitted, [true, true, true, false, false, false]);
        // The next window starts the count again.
        assert!(s.admit(a, 42, 1060 * S));
        assert!(s.admit(a, 42, 1061 * S));
        assert!(s.admit(a, 42, 1062 * S));
        assert!(!s.admit(a, 42, 1063 * S));
        // Time going backwards (merged files) starts a window rather than suppressing.
        assert!(s.admit(a, 42, 10 * S));
    }

    #[test]
    fn pairs_are_counted_apart() {
        let mut s = sampler(1, 3600);
        let a: IpAddr = "198.51.100.7".parse().unwrap();
        let b: IpAddr = "2001:db8::7".parse().unwrap();
        assert!(s.admit(a, 1, S));
        assert!(s.admit(a, 2, S));
        assert!(s.admit(b, 1, S));
        assert!(!s.admit(a, 1, 2 * S));
        assert!(!s.admit(a, 2, 2 * S));
        assert!(!s.admit(b, 1, 2 * S));
    }

    #[test]
    fn more_pairs_than_slots_write_more_never_fewer() {
        let mut s = sampler(1, 3600);
        let pairs = 4 * SLOTS as u32;
        let mut written = 0;
        for round in 0..2 {
            for i in 0..pairs {
                let src = IpAddr::from(std::net::Ipv4Addr::from(0xc633_0000 | (i & 0xffff)));
                written += u32::from(s.admit(src, u64::from(i >> 16), S + round));
            }
        }
        // Every pair's first event is written; of the second round, some still find their slot.
        assert!(written >= pairs && written < 2 * pairs, "{written}");
    }

    #[test]
    fn zero_is_taken_as_one() {
        let mut s = sampler(0, 0);
        assert_eq!(
            s.config(),
            SamplingConfig {
                per_template: 1,
                window_s: 1
            }
        );
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(s.admit(a, 9, S));
        assert!(!s.admit(a, 9, S + 1));
    }
}
