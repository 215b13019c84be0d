//! Joining a reactive TCP session's SYN to its data.
//!
//! The kernel answers SYNs statelessly, so the request that follows arrives in a record of its
//! own. The SYN carried what identifies the sender's stack (TTL, IP-ID, window, TCP options); this
//! keeps recent answered SYNs, keyed by 4-tuple and initial sequence number, so the request's
//! event can carry them. Bounded: the oldest SYNs are forgotten first, and counted.

use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
};

use serde::Serialize;

use crate::{clock::rfc3339_micros, escape::hex, record::Record};
use sensor_common::record_flags;

/// What a SYN told about its sender.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SynFields {
    pub timestamp: String,
    pub ttl: u8,
    pub ip_id: u16,
    pub df: bool,
    pub window: u16,
    /// TCP option bytes, hex.
    pub options: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct SessionKey {
    src: IpAddr,
    dst: IpAddr,
    src_port: u16,
    dst_port: u16,
    isn: u32,
}

pub struct SynJoiner {
    syns: HashMap<SessionKey, SynFields>,
    order: VecDeque<SessionKey>,
    capacity: usize,
    /// SYNs forgotten to stay within capacity.
    pub evicted: u64,
}

impl SynJoiner {
    pub fn new(capacity: usize) -> Self {
        Self {
            syns: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            evicted: 0,
        }
    }

    /// Remembers an answered SYN; for a segment of a reactive session, returns its SYN's fields.
    pub fn observe(&mut self, record: &Record, wall_ns: u64) -> Option<SynFields> {
        let raw = record.raw();
        let key = |isn: u32| SessionKey {
            src: record.src_ip(),
            dst: record.dst_ip(),
            src_port: record.src_port(),
            dst_port: record.dst_port(),
            isn,
        };
        if raw.flags & record_flags::SYN_ANSWERED != 0 {
            let k = key(raw.tcp_seq);
            if self.syns.len() >= self.capacity
                && !self.syns.contains_key(&k)
                && let Some(oldest) = self.order.pop_front()
            {
                self.syns.remove(&oldest);
                self.evicted += 1;
            }
            if self
                .syns
                .insert(
                    k,
                    SynFields {
                        timestamp: rfc3339_micros(wall_ns),
                        ttl: record.ttl(),
                        ip_id: record.ip_id(),
                        df: record.dont_fragment(),
                        window: raw.tcp_window,
                        options: hex(record.tcp_options()),
                    },
                )
                .is_none()
            {
                self.order.push_back(k);
            }
            return None;
        }
        if raw.flags & record_flags::REACTIVE_SESSION != 0 {
            return self.syns.get(&key(raw.tcp_seq.wrapping_sub(1))).cloned();
        }
        None
    }

    pub fn len(&self) -> usize {
        self.syns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.syns.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sensor_common::{CaptureRecord, ip_proto};

    fn tcp(flags: u8, seq: u32, sport: u16) -> Box<CaptureRecord> {
        let mut r = Box::new(CaptureRecord::zeroed());
        r.ip_version = 4;
        r.l4_proto = ip_proto::TCP;
        r.src_addr[..4].copy_from_slice(&[198, 51, 100, 7]);
        r.dst_addr[..4].copy_from_slice(&[203, 0, 113, 9]);
        r.src_port = sport;
        r.dst_port = 5060;
        r.tcp_seq = seq;
        r.ttl = 51;
        r.tcp_window = 1024;
        r.tcp_options_len = 4;
        r.tcp_options[..4].copy_from_slice(&[2, 4, 5, 0xb4]);
        r.flags = record_flags::MATCHED_DST_PORT | flags;
        r
    }

    #[test]
    fn joins_the_syn_to_the_request() {
        let mut j = SynJoiner::new(8);
        let syn = tcp(record_flags::SYN_ANSWERED, 1000, 40000);
        assert_eq!(j.observe(&Record::new(&syn).unwrap(), 0), None);
        let data = tcp(record_flags::REACTIVE_SESSION, 1001, 40000);
        let fields = j.observe(&Record::new(&data).unwrap(), 0).expect("joined");
        assert_eq!(fields.ttl, 51);
        assert_eq!(fields.window, 1024);
        assert_eq!(fields.options, "020405b4");
        // Another connection (other port) does not join.
        let other = tcp(record_flags::REACTIVE_SESSION, 1001, 40001);
        assert_eq!(j.observe(&Record::new(&other).unwrap(), 0), None);
    }

    #[test]
    fn stays_bounded() {
        let mut j = SynJoiner::new(2);
        for seq in 0..5 {
            let syn = tcp(record_flags::SYN_ANSWERED, seq * 10, 40000);
            j.observe(&Record::new(&syn).unwrap(), 0);
        }
        assert_eq!(j.len(), 2);
        assert_eq!(j.evicted, 3);
        let oldest = tcp(record_flags::REACTIVE_SESSION, 1, 40000);
        assert_eq!(j.observe(&Record::new(&oldest).unwrap(), 0), None);
        let newest = tcp(record_flags::REACTIVE_SESSION, 41, 40000);
        assert!(j.observe(&Record::new(&newest).unwrap(), 0).is_some());
    }
}
