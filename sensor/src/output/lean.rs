//! The lean event (`--event-detail lean`): what the aggregator and `sensor report` read of a
//! packet, and nothing more; about a fifth of the compact event (768 bytes against 3,634 on
//! average in the fingerprint benchmark's traffic).
//!
//! At line rate a scanner repeats one message template millions of times, and the compact
//! event repeats with it the whole parsed message, the evidence and the escaped payload: 3.6 kB
//! a packet, more than a disk takes at a million packets a second. The lean event keeps the
//! packet's own facts (time, addresses, ports, TTL, IP-ID, DF, payload length), the attribution
//! (tool, variant, category, rule, confidence, template hash) and the per-packet inferences the
//! report counts (Via and Contact hosts, processes, initial TTL, IP-ID class and the source's
//! behaviour), under the same keys as the compact event, so that queries and `sensor report`
//! read both alike.
//!
//! What it leaves out is the same for every packet of a template, so [`TemplateExamples`] has
//! the first event of each template in every window written in the compact form: the details
//! of a lean event are in the compact event with the same `fingerprint.template_hash`.

use super::event::{ascii, boolean, float, ip, template_hash, timestamp, uint};
use crate::{
    aggregate::{
        HostSeen, Observation,
        intern::{KeptNames, NameSet},
    },
    output::json::SCHEMA_VERSION,
    record::Record,
};

/// Writes the lean event of `record`, whose observation is `obs`, as one line (without the line
/// end). The observation's attacker text is escaped already; it is written as JSON strings.
pub fn write_lean(out: &mut Vec<u8>, record: &Record<'_>, obs: &Observation<'_>, confidence: f64) {
    write_head(out, record, obs);
    write_attribution(out, obs, confidence);
    write_inferences(out, obs);
}

/// [`write_lean`] for a stream of events: the attribution (tool, variant, category, confidence,
/// rule, template hash) is the same for every packet of a template, so it is kept as written,
/// by template, and copied.
pub struct LeanWriter {
    /// Direct-mapped by template hash; a slot holds what its bytes were written from, compared
    /// in full before they are used.
    attributions: Vec<Option<Attribution>>,
}

/// Slots of the attribution table (a power of two).
const ATTRIBUTION_SLOTS: usize = 256;

struct Attribution {
    template_hash: u64,
    confidence: u64,
    names: KeptNames,
    bytes: Box<[u8]>,
}

impl Attribution {
    fn is_of(&self, obs: &Observation<'_>, confidence: f64) -> bool {
        self.template_hash == obs.template_hash
            && self.confidence == confidence.to_bits()
            && self.names.are(NameSet::of(obs))
    }
}

impl Default for LeanWriter {
    fn default() -> Self {
        Self {
            attributions: (0..ATTRIBUTION_SLOTS).map(|_| None).collect(),
        }
    }
}

impl LeanWriter {
    /// The same line as [`write_lean`].
    pub fn write(
        &mut self,
        out: &mut Vec<u8>,
        record: &Record<'_>,
        obs: &Observation<'_>,
        confidence: f64,
    ) {
        write_head(out, record, obs);
        let slot = &mut self.attributions[obs.template_hash as usize % ATTRIBUTION_SLOTS];
        match slot {
            Some(kept) if kept.is_of(obs, confidence) => out.extend_from_slice(&kept.bytes),
            _ => {
                let start = out.len();
                write_attribution(out, obs, confidence);
                *slot = Some(Attribution {
                    template_hash: obs.template_hash,
                    confidence: confidence.to_bits(),
                    names: KeptNames::new(NameSet::of(obs)),
                    bytes: out[start..].into(),
                });
            }
        }
        write_inferences(out, obs);
    }
}

/// The packet's own facts and its SIP method and User-Agent.
fn write_head(out: &mut Vec<u8>, record: &Record<'_>, obs: &Observation<'_>) {
    let raw = record.raw();
    out.extend_from_slice(b"{\"timestamp\":");
    timestamp(out, obs.time_ns);
    out.extend_from_slice(b",\"event_type\":\"sip_probe\",\"schema_version\":");
    uint(out, u64::from(SCHEMA_VERSION));
    out.extend_from_slice(b",\"detail\":\"lean\",\"src_ip\":");
    ip(out, obs.src_ip);
    out.extend_from_slice(b",\"src_port\":");
    uint(out, u64::from(obs.src_port));
    out.extend_from_slice(b",\"dest_ip\":");
    ip(out, obs.dest_ip);
    out.extend_from_slice(b",\"dest_port\":");
    uint(out, u64::from(obs.dest_port));
    out.extend_from_slice(b",\"proto\":");
    ascii(out, obs.proto);
    out.extend_from_slice(b",\"ip\":{\"version\":");
    uint(out, u64::from(record.ip_version()));
    if let Some(ttl) = obs.ttl {
        out.extend_from_slice(b",\"ttl\":");
        uint(out, u64::from(ttl));
    }
    if let Some(id) = obs.ip_id {
        out.extend_from_slice(b",\"id\":");
        uint(out, u64::from(id));
    }
    out.extend_from_slice(b",\"df\":");
    boolean(out, obs.df);
    out.extend_from_slice(b"},\"payload\":{\"len\":");
    uint(out, u64::from(raw.payload_len));
    out.extend_from_slice(b",\"captured\":");
    uint(out, u64::from(raw.captured_len));
    out.extend_from_slice(b",\"truncated\":");
    boolean(out, record.payload_truncated());
    out.push(b'}');
    if obs.method.is_some() || obs.user_agent.is_some() {
        let mut sep = b'{';
        out.extend_from_slice(b",\"sip\":");
        for (name, value) in [("method", obs.method), ("user_agent", obs.user_agent)] {
            if let Some(value) = value {
                out.push(sep);
                sep = b',';
                ascii(out, name);
                out.push(b':');
                ascii(out, value);
            }
        }
        out.push(b'}');
    }
}

/// From `,"fingerprint":{` to the template hash: what every packet of a template shares.
fn write_attribution(out: &mut Vec<u8>, obs: &Observation<'_>, confidence: f64) {
    out.extend_from_slice(b",\"fingerprint\":{\"tool\":");
    ascii(out, obs.tool);
    if let Some(variant) = obs.variant {
        out.extend_from_slice(b",\"variant\":");
        ascii(out, variant);
    }
    out.extend_from_slice(b",\"category\":");
    ascii(out, obs.category);
    out.extend_from_slice(b",\"confidence\":");
    float(out, confidence);
    out.extend_from_slice(b",\"rule\":");
    ascii(out, obs.rule);
    out.extend_from_slice(b",\"template_hash\":");
    template_hash(out, obs.template_hash);
}

/// The per-packet inferences, and the end of the event.
fn write_inferences(out: &mut Vec<u8>, obs: &Observation<'_>) {
    out.extend_from_slice(b",\"inferences\":{");
    let start = out.len();
    host(out, start, "via_host", obs.via);
    host(out, start, "contact_host", obs.contact);
    if let (Some(base), Some(n)) = (obs.process_base, obs.processes) {
        comma(out, start);
        out.extend_from_slice(b"\"processes\":{\"base_port\":");
        uint(out, u64::from(base));
        out.extend_from_slice(b",\"processes\":");
        uint(out, u64::from(n));
        out.push(b'}');
    }
    if let Some(initial) = obs.ttl_initial {
        comma(out, start);
        out.extend_from_slice(b"\"ttl\":{\"initial\":");
        uint(out, u64::from(initial));
        out.push(b'}');
    }
    if let Some(packet) = obs.id_packet {
        comma(out, start);
        out.extend_from_slice(b"\"ip_id\":{\"packet\":");
        ascii(out, packet);
        if let Some(behaviour) = obs.id_behaviour {
            out.extend_from_slice(b",\"source\":{\"behaviour\":");
            ascii(out, behaviour);
            out.push(b'}');
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"}}}");
}

/// A separating comma, unless the object that began at `start` is still empty.
fn comma(out: &mut Vec<u8>, start: usize) {
    if out.len() > start {
        out.push(b',');
    }
}

fn host(out: &mut Vec<u8>, start: usize, name: &str, seen: Option<HostSeen<'_>>) {
    let Some(seen) = seen else { return };
    comma(out, start);
    ascii(out, name);
    out.extend_from_slice(b":{\"host\":");
    ascii(out, seen.host);
    out.extend_from_slice(b",\"class\":");
    ascii(out, seen.class);
    out.push(b'}');
}

/// Slots in the table of templates (a power of two): 16 bytes each, 1 MiB in all.
pub const TEMPLATE_SLOTS: usize = 1 << 16;

/// Which events are written in the compact form under `--event-detail lean`: the first of each
/// fingerprint template in every window. Direct-mapped and fixed in size: a template whose slot
/// another took is written in full again, which only writes more detail, never less.
pub struct TemplateExamples {
    window_ns: u64,
    /// (template hash with its low bit set, so that 0 means empty; when its window began).
    slots: Vec<(u64, u64)>,
}

impl TemplateExamples {
    pub fn new(window_s: u64) -> Self {
        TemplateExamples {
            window_ns: window_s.max(1).saturating_mul(1_000_000_000),
            slots: vec![(0, 0); TEMPLATE_SLOTS],
        }
    }

    /// Whether the event with `template` at `time_ns` is its template's example (written in
    /// full). Template hashes are already uniform, so they index the table directly; an
    /// attacker varying templates only gets more compact events written.
    pub fn is_example(&mut self, template: u64, time_ns: u64) -> bool {
        let key = template | 1;
        let slot = &mut self.slots[(template >> 40) as usize & (TEMPLATE_SLOTS - 1)];
        let expired = time_ns < slot.1 || time_ns - slot.1 >= self.window_ns;
        if slot.0 == key && !expired {
            return false;
        }
        *slot = (key, time_ns);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        aggregate::ObservationText, output::event::for_each_corpus_analysis,
        report::input::ProbeInput,
    };

    /// The lean event of every corpus record reads back, through the report's own reader, as
    /// the observation the aggregator got (to the microsecond the timestamp keeps), and is safe
    /// printable JSON.
    #[test]
    fn the_report_reads_the_observation_back_from_every_lean_event() {
        let mut text = ObservationText::default();
        let mut with_hosts = 0;
        let checked = for_each_corpus_analysis(|event, msg, a| {
            let obs = Observation::from_analysis(event, msg, a, a.engine, None, &mut text);
            let mut line = Vec::new();
            write_lean(&mut line, &event.record, &obs, a.verdict.confidence());
            let doc: serde_json::Value = serde_json::from_slice(&line)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&line)));
            crate::escape::check_document(&doc, 4096).unwrap();
            let input: ProbeInput<'_> = serde_json::from_slice(&line).unwrap();
            assert!(input.is_probe());
            let read = input.observation().expect("a usable observation");
            let want = Observation {
                time_ns: obs.time_ns / 1_000 * 1_000,
                ..obs
            };
            assert_eq!(read, want, "{}", String::from_utf8_lossy(&line));
            with_hosts += usize::from(obs.via.is_some() && obs.processes.is_some());
        });
        assert!(checked > 250 && with_hosts > 30, "{checked} {with_hosts}");
    }

    /// The writer that keeps attributions writes what `write_lean` writes: for every corpus
    /// record, the first time and again (from the kept bytes), and for an observation that
    /// shares a template hash with a kept one but not its tool, variant, category, rule or
    /// confidence.
    #[test]
    fn the_lean_writer_writes_what_write_lean_writes() {
        let mut text = ObservationText::default();
        let mut writer = LeanWriter::default();
        let (mut line, mut want) = (Vec::new(), Vec::new());
        let mut check = |writer: &mut LeanWriter, record: &Record<'_>, obs: &Observation<'_>, c| {
            line.clear();
            want.clear();
            writer.write(&mut line, record, obs, c);
            write_lean(&mut want, record, obs, c);
            assert_eq!(
                String::from_utf8_lossy(&line),
                String::from_utf8_lossy(&want)
            );
        };
        let checked = for_each_corpus_analysis(|event, msg, a| {
            let obs = Observation::from_analysis(event, msg, a, a.engine, None, &mut text);
            let record = &event.record;
            let c = a.verdict.confidence();
            check(&mut writer, record, &obs, c);
            check(&mut writer, record, &obs, c);
            let others = [
                Observation {
                    tool: "other",
                    ..obs
                },
                Observation {
                    variant: None,
                    ..obs
                },
                Observation {
                    variant: Some("other"),
                    ..obs
                },
                Observation {
                    category: "other",
                    ..obs
                },
                Observation {
                    rule: "other",
                    ..obs
                },
            ];
            for other in &others {
                check(&mut writer, record, other, c);
            }
            check(&mut writer, record, &obs, c + 0.01);
            check(&mut writer, record, &obs, c);
        });
        assert!(checked > 250, "{checked}");
    }

    #[test]
    fn the_first_event_of_a_template_per_window_is_the_example() {
        const S: u64 = 1_000_000_000;
        let mut t = TemplateExamples::new(60);
        assert!(t.is_example(0xabc0_0000_0000_0001, 100 * S));
        assert!(!t.is_example(0xabc0_0000_0000_0001, 101 * S));
        // Another template, another example.
        assert!(t.is_example(0x1230_0000_0000_0001, 101 * S));
        // The next window, and time going backwards (merged files), give another example.
        assert!(t.is_example(0xabc0_0000_0000_0001, 160 * S));
        assert!(!t.is_example(0xabc0_0000_0000_0001, 161 * S));
        assert!(t.is_example(0xabc0_0000_0000_0001, 5 * S));
        // Two templates on one slot take it in turn: each is written in full again.
        let (a, b) = (0x0000_0100_0000_0000, 0x1000_0100_0000_0000);
        assert!(t.is_example(a, 200 * S));
        assert!(t.is_example(b, 200 * S));
        assert!(t.is_example(a, 200 * S));
    }
}
