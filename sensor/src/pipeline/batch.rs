//! Records and their analyses held by value, to cross from an analyst's thread to the sink's.
//! The strings an [`Analysed`] borrows are copied into one buffer per batch (the rule's names
//! are kept as the rule's index and read back from the engine), so a batch costs no allocation
//! once its buffers have grown.

use std::net::IpAddr;

use sensor_common::CaptureRecord;

use super::analyst::{Analysed, Analyst, EventOutput};
use crate::{
    aggregate::{HostSeen, Observation, UNKNOWN},
    fingerprint::Engine,
    record::Record,
};

/// A string in a batch's text buffer.
#[derive(Clone, Copy, Debug)]
struct Span {
    start: u32,
    len: u32,
}

impl Span {
    fn put(text: &mut String, s: &str) -> Self {
        let start = text.len() as u32;
        text.push_str(s);
        Span {
            start,
            len: s.len() as u32,
        }
    }

    fn put_bytes(buffer: &mut Vec<u8>, bytes: &[u8]) -> Self {
        let start = buffer.len() as u32;
        buffer.extend_from_slice(bytes);
        Span {
            start,
            len: bytes.len() as u32,
        }
    }

    fn range(self) -> std::ops::Range<usize> {
        let start = self.start as usize;
        start..start + self.len as usize
    }

    fn get(self, text: &str) -> &str {
        text.get(self.range()).unwrap_or_default()
    }

    fn get_bytes(self, buffer: &[u8]) -> &[u8] {
        buffer.get(self.range()).unwrap_or_default()
    }
}

#[derive(Clone, Copy, Debug)]
struct StoredHost {
    class: Span,
    host: Span,
}

#[derive(Clone, Copy, Debug)]
enum StoredOutput {
    Written { line: Span, lean: bool },
    SampledOut,
    Unserialisable,
}

/// An [`Analysed`] with its strings in the batch's buffers.
#[derive(Clone, Copy, Debug)]
struct StoredAnalysis {
    time_ns: u64,
    src_ip: IpAddr,
    src_port: u16,
    dest_ip: IpAddr,
    dest_port: u16,
    proto: Span,
    ttl: Option<u8>,
    ip_id: Option<u16>,
    df: bool,
    has_sensor: bool,
    method: Option<Span>,
    user_agent: Option<Span>,
    rule_index: Option<u16>,
    template_hash: u64,
    id_packet: Option<Span>,
    id_behaviour: Option<Span>,
    ttl_initial: Option<u8>,
    processes: Option<u32>,
    process_base: Option<u16>,
    via: Option<StoredHost>,
    contact: Option<StoredHost>,
    confidence: f64,
    output: StoredOutput,
}

/// Records in the order they were read, each with its wall-clock time and, once an analyst has
/// been over the batch, its analysis.
#[derive(Default)]
pub struct Batch {
    /// Whole records: holding only the fixed part and the captured payload (about half, for an
    /// OPTIONS) measured the same (lean, three analysts, medians of 9: 0.42 s against 0.43).
    records: Vec<CaptureRecord>,
    times: Vec<u64>,
    /// `None`: the record failed validation (counted by the sink).
    analyses: Vec<Option<StoredAnalysis>>,
    text: String,
    /// Event lines.
    lines: Vec<u8>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Empties the batch, keeping its buffers.
    pub fn clear(&mut self) {
        self.records.clear();
        self.times.clear();
        self.analyses.clear();
        self.text.clear();
        self.lines.clear();
    }

    pub fn push(&mut self, record: &CaptureRecord, wall_ns: u64) {
        self.records.push(*record);
        self.times.push(wall_ns);
    }

    /// Every record through `analyst`, in order.
    pub fn analyse(&mut self, analyst: &mut Analyst) {
        self.analyses.clear();
        self.text.clear();
        self.lines.clear();
        for (raw, &wall_ns) in self.records.iter().zip(&self.times) {
            let stored = Record::new(raw).ok().map(|record| {
                let analysed = analyst.analyse(record, wall_ns);
                store(&analysed, &mut self.text, &mut self.lines)
            });
            self.analyses.push(stored);
        }
    }

    /// The `i`th record, its time, and its analysis (`None` if it failed validation, or the
    /// batch was not analysed). `engine`: the analysts' engine; `sensor`: their sensor name.
    pub fn get<'a>(
        &'a self,
        i: usize,
        engine: &'a Engine,
        sensor: Option<&'a str>,
    ) -> Option<(Record<'a>, u64, Option<Analysed<'a>>)> {
        let raw = self.records.get(i)?;
        let wall_ns = *self.times.get(i)?;
        let record = Record::new(raw).ok()?;
        let analysed = self
            .analyses
            .get(i)
            .copied()
            .flatten()
            .map(|s| view(&s, &self.text, &self.lines, engine, sensor));
        Some((record, wall_ns, analysed))
    }
}

fn store(a: &Analysed<'_>, text: &mut String, lines: &mut Vec<u8>) -> StoredAnalysis {
    let o = &a.observation;
    let mut host = |h: &HostSeen<'_>| StoredHost {
        class: Span::put(text, h.class),
        host: Span::put(text, h.host),
    };
    let via = o.via.as_ref().map(&mut host);
    let contact = o.contact.as_ref().map(&mut host);
    let mut put = |s: &str| Span::put(text, s);
    let output = match a.output {
        EventOutput::Written { line, lean } => StoredOutput::Written {
            line: Span::put_bytes(lines, line),
            lean,
        },
        EventOutput::SampledOut => StoredOutput::SampledOut,
        EventOutput::Unserialisable => StoredOutput::Unserialisable,
    };
    StoredAnalysis {
        time_ns: o.time_ns,
        src_ip: o.src_ip,
        src_port: o.src_port,
        dest_ip: o.dest_ip,
        dest_port: o.dest_port,
        proto: put(o.proto),
        ttl: o.ttl,
        ip_id: o.ip_id,
        df: o.df,
        has_sensor: o.sensor.is_some(),
        method: o.method.map(&mut put),
        user_agent: o.user_agent.map(&mut put),
        rule_index: a.rule_index,
        template_hash: o.template_hash,
        id_packet: o.id_packet.map(&mut put),
        id_behaviour: o.id_behaviour.map(&mut put),
        ttl_initial: o.ttl_initial,
        processes: o.processes,
        process_base: o.process_base,
        via,
        contact,
        confidence: a.confidence,
        output,
    }
}

fn view<'a>(
    s: &StoredAnalysis,
    text: &'a str,
    lines: &'a [u8],
    engine: &'a Engine,
    sensor: Option<&'a str>,
) -> Analysed<'a> {
    let rule = s
        .rule_index
        .and_then(|i| engine.rules().get(usize::from(i)));
    let host = |h: StoredHost| HostSeen {
        class: h.class.get(text),
        host: h.host.get(text),
    };
    Analysed {
        observation: Observation {
            time_ns: s.time_ns,
            src_ip: s.src_ip,
            src_port: s.src_port,
            dest_ip: s.dest_ip,
            dest_port: s.dest_port,
            proto: s.proto.get(text),
            ttl: s.ttl,
            ip_id: s.ip_id,
            df: s.df,
            sensor: sensor.filter(|_| s.has_sensor),
            method: s.method.map(|m| m.get(text)),
            user_agent: s.user_agent.map(|u| u.get(text)),
            tool: rule.map_or(UNKNOWN, |r| r.tool.as_str()),
            variant: rule.and_then(|r| r.variant.as_deref()),
            category: rule.map_or(UNKNOWN, |r| r.category.as_str()),
            rule: rule.map_or(UNKNOWN, |r| r.id.as_str()),
            template_hash: s.template_hash,
            id_packet: s.id_packet.map(|p| p.get(text)),
            id_behaviour: s.id_behaviour.map(|b| b.get(text)),
            ttl_initial: s.ttl_initial,
            processes: s.processes,
            process_base: s.process_base,
            via: s.via.map(host),
            contact: s.contact.map(host),
        },
        rule_index: s.rule_index,
        confidence: s.confidence,
        output: match s.output {
            StoredOutput::Written { line, lean } => EventOutput::Written {
                line: line.get_bytes(lines),
                lean,
            },
            StoredOutput::SampledOut => EventOutput::SampledOut,
            StoredOutput::Unserialisable => EventOutput::Unserialisable,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{output::event::EventDetail, pipeline::PipelineOptions};

    /// Every corpus record analysed directly and through a batch: the same analysis, field by
    /// field, event line by event line.
    #[test]
    fn a_batch_gives_back_what_the_analyst_said() {
        for detail in [EventDetail::Compact, EventDetail::Lean, EventDetail::Full] {
            let options = PipelineOptions {
                detail,
                ..PipelineOptions::default()
            };
            let engine = Arc::new(Engine::load(None).unwrap());
            let mut direct = Analyst::new(engine.clone(), &options);
            let mut batched = Analyst::new(engine.clone(), &options);
            let records = crate::offline::corpus_records_varied();
            let mut batch = Batch::default();
            for (i, raw) in records.iter().enumerate() {
                batch.push(raw, 1_795_313_043_000_000_000 + i as u64);
            }
            batch.analyse(&mut batched);
            assert_eq!(batch.len(), records.len());
            let mut compared = 0;
            for (i, raw) in records.iter().enumerate() {
                let (_, wall_ns, from_batch) = batch.get(i, &engine, None).unwrap();
                assert_eq!(wall_ns, 1_795_313_043_000_000_000 + i as u64);
                let Ok(record) = Record::new(raw) else {
                    assert!(from_batch.is_none());
                    continue;
                };
                let expected = direct.analyse(record, wall_ns);
                let got = from_batch.unwrap();
                assert_eq!(got.observation, expected.observation, "record {i}");
                assert_eq!(got.rule_index, expected.rule_index);
                assert_eq!(got.confidence, expected.confidence);
                assert_eq!(got.output, expected.output, "record {i}");
                compared += 1;
            }
            assert!(compared > 200, "{compared}");
            batch.clear();
            assert!(batch.is_empty());
        }
    }
}
