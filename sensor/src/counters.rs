//! The kernel program's per-CPU counters, summed, and the agent's own counters.
//!
//! Both sets reconcile: see [`KernelCounters::check`]. Together they account for every frame the
//! program saw and every record it emitted.

use std::fmt;

use sensor_common::Counter;

/// Kernel counters summed over CPUs, indexed by [`Counter`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelCounters {
    values: [u64; Counter::COUNT as usize],
}

/// A broken counter invariant: some frame or record is not accounted for.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Unreconciled {
    #[error("frames_seen {seen} != sum of outcomes {outcomes}")]
    Outcomes { seen: u64, outcomes: u64 },
    #[error(
        "matched {matched} != emitted {emitted} + ring_full {ring_full} + rate_limited {rate_limited}"
    )]
    Matched {
        matched: u64,
        emitted: u64,
        ring_full: u64,
        rate_limited: u64,
    },
}

impl KernelCounters {
    /// Outcome counters: each frame increments exactly one of them.
    pub const OUTCOMES: [Counter; 8] = [
        Counter::NonIp,
        Counter::Truncated,
        Counter::Malformed,
        Counter::NonFirstFragment,
        Counter::OtherL4,
        Counter::Ipv6ExtensionLimit,
        Counter::PortMiss,
        Counter::Matched,
    ];

    pub fn from_values(values: [u64; Counter::COUNT as usize]) -> Self {
        Self { values }
    }

    pub fn get(&self, counter: Counter) -> u64 {
        self.values[counter as usize]
    }

    pub fn add(&mut self, counter: Counter, n: u64) {
        self.values[counter as usize] += n;
    }

    /// Frames that did not match: everything but `Matched` among the outcomes.
    pub fn not_matched(&self) -> u64 {
        Self::OUTCOMES
            .iter()
            .filter(|c| **c != Counter::Matched)
            .map(|c| self.get(*c))
            .sum()
    }

    /// `seen = sum(outcomes)` and `matched = emitted + ring_full + rate_limited`.
    pub fn check(&self) -> Result<(), Unreconciled> {
        let seen = self.get(Counter::FramesSeen);
        let outcomes = self.not_matched() + self.get(Counter::Matched);
        if seen != outcomes {
            return Err(Unreconciled::Outcomes { seen, outcomes });
        }
        let (matched, emitted, ring_full, rate_limited) = (
            self.get(Counter::Matched),
            self.get(Counter::Emitted),
            self.get(Counter::RingFull),
            self.get(Counter::RateLimited),
        );
        if matched != emitted + ring_full + rate_limited {
            return Err(Unreconciled::Matched {
                matched,
                emitted,
                ring_full,
                rate_limited,
            });
        }
        Ok(())
    }

    /// Counts since `earlier` (counters only grow).
    pub fn since(&self, earlier: &KernelCounters) -> KernelCounters {
        let mut values = [0; Counter::COUNT as usize];
        for (i, v) in values.iter_mut().enumerate() {
            *v = self.values[i].saturating_sub(earlier.values[i]);
        }
        Self { values }
    }

    pub fn iter(&self) -> impl Iterator<Item = (Counter, u64)> + '_ {
        Counter::ALL.iter().map(|c| (*c, self.get(*c)))
    }
}

/// Kernel counters per CPU, as the per-CPU array holds them (indexed by possible CPU).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PerCpuCounters {
    cpus: Vec<KernelCounters>,
}

impl PerCpuCounters {
    pub fn new(cpus: Vec<KernelCounters>) -> Self {
        Self { cpus }
    }

    pub fn cpus(&self) -> &[KernelCounters] {
        &self.cpus
    }

    pub fn sum(&self) -> KernelCounters {
        let mut sum = KernelCounters::default();
        for cpu in &self.cpus {
            for (counter, value) in cpu.iter() {
                sum.add(counter, value);
            }
        }
        sum
    }
}

/// What the agent did with the records it read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgentCounters {
    /// Items read from the ring buffer.
    pub records_read: u64,
    /// Items that failed validation (never expected; counted rather than trusted).
    pub records_undecodable: u64,
    /// Events handed to the outputs.
    pub events_written: u64,
    /// Of the events written, those in the lean form (`--event-detail lean`); the others are
    /// each template's compact example.
    pub events_lean: u64,
    /// Events not written because their source had sent its quota of that template in the
    /// window (`--events-per-template`); aggregated and in pcapng all the same.
    pub events_sampled_out: u64,
    /// Documents and records the outputs dropped because they could not be written (summed over
    /// the outputs; the stats document's `outputs` says which).
    pub output_errors: u64,
    /// Sources whose IP-ID history was forgotten to keep the tracker within its bound.
    pub source_evictions: u64,
    /// Answered SYNs forgotten before their session's request arrived (bounded join table).
    pub syn_join_evictions: u64,
    /// Messages whose template the classification cache knew (rules not evaluated again).
    pub fingerprint_cache_hits: u64,
    /// Messages of a template met for the first time (or again after eviction).
    pub fingerprint_cache_misses: u64,
    pub fingerprint_cache_evictions: u64,
    /// Messages classified without the cache (too long, or a key collision).
    pub fingerprint_cache_bypassed: u64,
    /// Misses classified in full without making an entry: a template's first message within
    /// the cache's recent reach (its entry is made at the second).
    pub fingerprint_cache_unadmitted: u64,
    /// With analyst threads (`--threads`): times the thread that reads records waited for the
    /// analysts, every round it may hand out being out. Live, a count that keeps rising means
    /// the analysts fall behind the traffic (the ring then fills: `kernel.ring_full`).
    pub analyst_waits: u64,
}

impl AgentCounters {
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> {
        [
            ("records_read", self.records_read),
            ("records_undecodable", self.records_undecodable),
            ("events_written", self.events_written),
            ("events_lean", self.events_lean),
            ("events_sampled_out", self.events_sampled_out),
            ("output_errors", self.output_errors),
            ("source_evictions", self.source_evictions),
            ("syn_join_evictions", self.syn_join_evictions),
            ("fingerprint_cache_hits", self.fingerprint_cache_hits),
            ("fingerprint_cache_misses", self.fingerprint_cache_misses),
            (
                "fingerprint_cache_evictions",
                self.fingerprint_cache_evictions,
            ),
            (
                "fingerprint_cache_bypassed",
                self.fingerprint_cache_bypassed,
            ),
            (
                "fingerprint_cache_unadmitted",
                self.fingerprint_cache_unadmitted,
            ),
            ("analyst_waits", self.analyst_waits),
        ]
        .into_iter()
    }
}

impl fmt::Display for KernelCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (counter, value) in self.iter() {
            writeln!(f, "  kernel.{:<22} {value:>14}", counter.name())?;
        }
        Ok(())
    }
}

impl fmt::Display for AgentCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, value) in self.iter() {
            writeln!(f, "  agent.{name:<23} {value:>14}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciles_and_reports_gaps() {
        let mut k = KernelCounters::default();
        k.add(Counter::FramesSeen, 10);
        k.add(Counter::NonIp, 2);
        k.add(Counter::PortMiss, 3);
        k.add(Counter::Matched, 5);
        k.add(Counter::Emitted, 4);
        k.add(Counter::RingFull, 1);
        assert_eq!(k.check(), Ok(()));
        assert_eq!(k.not_matched(), 5);
        k.add(Counter::FramesSeen, 1);
        assert_eq!(
            k.check(),
            Err(Unreconciled::Outcomes {
                seen: 11,
                outcomes: 10
            })
        );
        k.add(Counter::Truncated, 1);
        k.add(Counter::Emitted, 1);
        assert!(matches!(k.check(), Err(Unreconciled::Matched { .. })));
    }

    #[test]
    fn per_cpu_sums() {
        let mut a = KernelCounters::default();
        a.add(Counter::Matched, 2);
        let mut b = KernelCounters::default();
        b.add(Counter::Matched, 3);
        b.add(Counter::RingFull, 1);
        let sum = PerCpuCounters::new(vec![a, b]).sum();
        assert_eq!(sum.get(Counter::Matched), 5);
        assert_eq!(sum.get(Counter::RingFull), 1);
    }

    #[test]
    fn since_subtracts() {
        let mut a = KernelCounters::default();
        a.add(Counter::FramesSeen, 3);
        let mut b = a;
        b.add(Counter::FramesSeen, 4);
        assert_eq!(b.since(&a).get(Counter::FramesSeen), 4);
    }
}
