//! Records and their analyses held by value, to cross from an analyst's thread to the sink's.
//! The strings an [`Analysed`] borrows are copied into one buffer per batch (the rule's names
//! are kept as the rule's index and read back from the engine), so a batch costs no allocation
//! once its buffers have grown.

use std::net::IpAddr;

use sensor_common::RecordHead;

use super::analyst::{Analysed, Analyst, EventOutput};
use crate::{
    aggregate::{HostSeen, Observation, UNKNOWN},
    counters::AgentCounters,
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
    class: &'static str,
    host: Span,
}

#[derive(Clone, Copy, Debug)]
enum StoredOutput {
    Written { line: Span, lean: bool },
    SampledOut,
    Unserialisable,
}

/// An [`Analysed`] with the strings it borrows from the message in the batch's buffers (the
/// static names of closed vocabularies are kept as they are).
#[derive(Clone, Copy, Debug)]
struct StoredAnalysis {
    time_ns: u64,
    src_ip: IpAddr,
    src_port: u16,
    dest_ip: IpAddr,
    dest_port: u16,
    proto: &'static str,
    ttl: Option<u8>,
    ip_id: Option<u16>,
    df: bool,
    has_sensor: bool,
    method: Option<Span>,
    user_agent: Option<Span>,
    rule_index: Option<u16>,
    template_hash: u64,
    id_packet: Option<&'static str>,
    id_behaviour: Option<&'static str>,
    ttl_initial: Option<u8>,
    processes: Option<u32>,
    process_base: Option<u16>,
    via: Option<StoredHost>,
    contact: Option<StoredHost>,
    confidence: f64,
    output: StoredOutput,
}

/// Validated records in the order they were pushed, each with its wall-clock time and, once an
/// analyst has been over the batch, its analysis.
#[derive(Default)]
pub struct Batch {
    /// The records one after the other, each its fixed part and captured payload only (ring
    /// items come in several sizes), each starting on a word, as the record's alignment wants.
    words: Vec<u64>,
    /// Where each record starts in `words`, and its length in bytes.
    records: Vec<(u32, u32)>,
    times: Vec<u64>,
    /// `None`: the record no longer validates (never expected; counted by the sink).
    analyses: Vec<Option<StoredAnalysis>>,
    text: String,
    /// Event lines.
    lines: Vec<u8>,
    /// The counters of the analyst that went over the batch, as they stood after it.
    pub analyst_counters: AgentCounters,
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
        self.words.clear();
        self.records.clear();
        self.times.clear();
        self.analyses.clear();
        self.text.clear();
        self.lines.clear();
    }

    /// Copies `record` (its fixed part and captured payload) into the batch. The words are
    /// written once: zeroing them first, then copying over them, was a `memset` per record.
    pub fn push(&mut self, record: Record<'_>, wall_ns: u64) {
        let payload = record.payload();
        let len = RecordHead::SIZE + payload.len();
        let words = len.div_ceil(8);
        let start = self.words.len();
        self.words.reserve(words);
        // SAFETY: `words` words are reserved past `start`; `words >= 1` since the head is not
        // empty. The last one is zeroed first (the record may end inside it), then the head's
        // `SIZE` bytes and the payload's are copied over the first `len <= 8 * words` bytes, so
        // every word below the new length is initialised. `RecordHead` is plain bytes
        // (`#[repr(C)]`, no padding), `SIZE` of them; the payload is another allocation.
        unsafe {
            let dst = self.words.as_mut_ptr().add(start);
            dst.add(words - 1).write(0);
            let bytes = dst.cast::<u8>();
            std::ptr::copy_nonoverlapping(
                (record.raw() as *const RecordHead).cast::<u8>(),
                bytes,
                RecordHead::SIZE,
            );
            std::ptr::copy_nonoverlapping(
                payload.as_ptr(),
                bytes.add(RecordHead::SIZE),
                payload.len(),
            );
            self.words.set_len(start + words);
        }
        self.records.push((start as u32, len as u32));
        self.times.push(wall_ns);
    }

    /// Every record through `analyst`, in order.
    pub fn analyse(&mut self, analyst: &mut Analyst) {
        self.analyses.clear();
        self.text.clear();
        self.lines.clear();
        for i in 0..self.records.len() {
            let Some(&wall_ns) = self.times.get(i) else {
                break;
            };
            let stored = record_at(&self.words, &self.records, i).map(|record| {
                let analysed = analyst.analyse(record, wall_ns);
                store(&analysed, &mut self.text, &mut self.lines)
            });
            self.analyses.push(stored);
        }
        analyst.fill_counters(&mut self.analyst_counters);
    }

    /// Calls `f` with the `i`th record, its time, and its analysis (`None` if the batch was not
    /// analysed, or the record failed validation then); `None` without calling `f` if there is
    /// no such record or it fails validation now. `engine`: the analysts' engine; `sensor`:
    /// their sensor name. The analysis is lent, not returned: it is a few hundred bytes, and
    /// each move of it was a copy on the thread every record goes through.
    pub fn with<R>(
        &self,
        i: usize,
        engine: &Engine,
        sensor: Option<&str>,
        f: impl FnOnce(Record<'_>, u64, Option<&Analysed<'_>>) -> R,
    ) -> Option<R> {
        let wall_ns = *self.times.get(i)?;
        let record = record_at(&self.words, &self.records, i)?;
        let analysed = self
            .analyses
            .get(i)
            .and_then(Option::as_ref)
            .map(|s| view(s, &self.text, &self.lines, engine, sensor));
        Some(f(record, wall_ns, analysed.as_ref()))
    }
}

/// The `i`th record, validated again (it was when pushed; the copy is checked, not trusted).
fn record_at<'a>(words: &'a [u64], records: &[(u32, u32)], i: usize) -> Option<Record<'a>> {
    let &(start, len) = records.get(i)?;
    let bytes = words_as_bytes(words.get(start as usize..)?).get(..len as usize)?;
    Record::from_bytes(bytes).ok()
}

fn words_as_bytes(words: &[u64]) -> &[u8] {
    // SAFETY: any `u64` is eight valid bytes; the length is the same memory's.
    unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<u8>(), words.len() * 8) }
}

fn store(a: &Analysed<'_>, text: &mut String, lines: &mut Vec<u8>) -> StoredAnalysis {
    let o = &a.observation;
    let mut host = |h: &HostSeen<'_>| StoredHost {
        class: h.class,
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
        proto: o.proto,
        ttl: o.ttl,
        ip_id: o.ip_id,
        df: o.df,
        has_sensor: o.sensor.is_some(),
        method: o.method.map(&mut put),
        user_agent: o.user_agent.map(&mut put),
        rule_index: a.rule_index,
        template_hash: o.template_hash,
        id_packet: o.id_packet,
        id_behaviour: o.id_behaviour,
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
        class: h.class,
        host: h.host.get(text),
    };
    Analysed {
        observation: Observation {
            time_ns: s.time_ns,
            src_ip: s.src_ip,
            src_port: s.src_port,
            dest_ip: s.dest_ip,
            dest_port: s.dest_port,
            proto: s.proto,
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
            id_packet: s.id_packet,
            id_behaviour: s.id_behaviour,
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
            let valid: Vec<(usize, Record<'_>)> = records
                .iter()
                .enumerate()
                .filter_map(|(i, raw)| Some((i, Record::new(raw).ok()?)))
                .collect();
            for &(i, record) in &valid {
                batch.push(record, 1_795_313_043_000_000_000 + i as u64);
            }
            batch.analyse(&mut batched);
            assert_eq!(batch.len(), valid.len());
            let mut compared = 0;
            for (j, &(i, record)) in valid.iter().enumerate() {
                batch
                    .with(j, &engine, None, |copy, wall_ns, from_batch| {
                        assert_eq!(wall_ns, 1_795_313_043_000_000_000 + i as u64);
                        assert_eq!(copy.payload(), record.payload(), "record {i}");
                        assert_eq!(copy.src_ip(), record.src_ip());
                        assert_eq!(copy.tcp_options(), record.tcp_options());
                        assert_eq!(copy.timestamp_ns(), record.timestamp_ns());
                        let expected = direct.analyse(record, wall_ns);
                        let got = from_batch.unwrap();
                        assert_eq!(got.observation, expected.observation, "record {i}");
                        assert_eq!(got.rule_index, expected.rule_index);
                        assert_eq!(got.confidence, expected.confidence);
                        assert_eq!(got.output, expected.output, "record {i}");
                    })
                    .unwrap();
                compared += 1;
            }
            assert!(
                batch
                    .with(valid.len(), &engine, None, |_, _, _| ())
                    .is_none()
            );
            assert!(compared > 200, "{compared}");
            batch.clear();
            assert!(batch.is_empty());
        }
    }
}
