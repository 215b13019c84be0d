//! Event documents as the report reads them: the typed subset of a `sip_probe` document the
//! aggregator needs, deserialized from JSON bytes or from a `serde_json::Value`, strings
//! borrowed where the JSON has no escapes. Every field is optional on the way in; a document
//! without a readable time or addresses is not usable and is counted as such.

use std::{
    borrow::Cow,
    io::{BufRead, Read as _},
    net::IpAddr,
};

use serde::Deserialize;

use crate::{
    aggregate::{
        HostSeen, Observation, UNKNOWN,
        classes::{
            HOST_CLASSES, PROTOCOLS, behaviour_name, host_class_index, packet_id_name,
            protocol_index,
        },
    },
    clock::parse_rfc3339,
};

/// Longest NDJSON line read; longer lines are skipped and counted as unreadable.
pub const MAX_LINE: usize = 1 << 20;

type Text<'a> = Option<Cow<'a, str>>;

#[derive(Deserialize, Default)]
pub struct ProbeInput<'a> {
    #[serde(borrow, default)]
    pub event_type: Text<'a>,
    #[serde(borrow, default)]
    timestamp: Text<'a>,
    #[serde(borrow, default)]
    src_ip: Text<'a>,
    #[serde(default)]
    src_port: Option<u16>,
    #[serde(borrow, default)]
    dest_ip: Text<'a>,
    #[serde(default)]
    dest_port: Option<u16>,
    #[serde(borrow, default)]
    proto: Text<'a>,
    #[serde(default)]
    ip: Option<IpInput>,
    #[serde(borrow, default)]
    sip: Option<SipInput<'a>>,
    #[serde(borrow, default)]
    fingerprint: Option<FingerprintInput<'a>>,
    #[serde(borrow, default)]
    sensor: Option<SensorInput<'a>>,
    /// The counters of a `stats` document.
    #[serde(default)]
    agent: Option<AgentInput>,
}

#[derive(Deserialize, Default)]
struct AgentInput {
    #[serde(default)]
    events_sampled_out: Option<u64>,
}

#[derive(Deserialize, Default)]
struct IpInput {
    #[serde(default)]
    ttl: Option<u8>,
    #[serde(default)]
    id: Option<u16>,
    #[serde(default)]
    df: Option<bool>,
}

#[derive(Deserialize, Default)]
struct SipInput<'a> {
    #[serde(borrow, default)]
    method: Text<'a>,
    #[serde(borrow, default)]
    user_agent: Text<'a>,
}

#[derive(Deserialize, Default)]
struct SensorInput<'a> {
    #[serde(borrow, default)]
    name: Text<'a>,
}

#[derive(Deserialize, Default)]
struct FingerprintInput<'a> {
    #[serde(borrow, default)]
    tool: Text<'a>,
    #[serde(borrow, default)]
    variant: Text<'a>,
    #[serde(borrow, default)]
    category: Text<'a>,
    #[serde(borrow, default)]
    rule: Text<'a>,
    #[serde(borrow, default)]
    template_hash: Text<'a>,
    #[serde(borrow, default)]
    inferences: Option<InferencesInput<'a>>,
}

#[derive(Deserialize, Default)]
struct InferencesInput<'a> {
    #[serde(borrow, default)]
    via_host: Option<HostInput<'a>>,
    #[serde(borrow, default)]
    contact_host: Option<HostInput<'a>>,
    #[serde(default)]
    processes: Option<ProcessesInput>,
    #[serde(default)]
    ttl: Option<TtlInput>,
    #[serde(borrow, default)]
    ip_id: Option<IpIdInput<'a>>,
}

#[derive(Deserialize, Default)]
struct HostInput<'a> {
    #[serde(borrow, default)]
    class: Text<'a>,
    #[serde(borrow, default)]
    host: Text<'a>,
}

#[derive(Deserialize, Default)]
struct ProcessesInput {
    #[serde(default)]
    processes: Option<u32>,
    #[serde(default)]
    base_port: Option<u16>,
}

#[derive(Deserialize, Default)]
struct TtlInput {
    #[serde(default)]
    initial: Option<u8>,
}

#[derive(Deserialize, Default)]
struct IpIdInput<'a> {
    #[serde(borrow, default)]
    packet: Text<'a>,
    #[serde(borrow, default)]
    source: Option<IpIdSourceInput<'a>>,
}

#[derive(Deserialize, Default)]
struct IpIdSourceInput<'a> {
    #[serde(borrow, default)]
    behaviour: Text<'a>,
}

fn text<'a>(t: &'a Text<'_>) -> Option<&'a str> {
    t.as_deref()
}

fn host_seen<'a>(h: Option<&'a HostInput<'_>>) -> Option<HostSeen<'a>> {
    h.map(|h| HostSeen {
        // The aggregator keeps the class's index: a name this version does not know counts
        // as `other` either way.
        class: HOST_CLASSES[host_class_index(text(&h.class).unwrap_or("other"))],
        host: text(&h.host).unwrap_or(""),
    })
}

impl ProbeInput<'_> {
    pub fn is_probe(&self) -> bool {
        self.event_type.as_deref() == Some("sip_probe")
    }

    /// A `stats` document's `agent.events_sampled_out`: events the sensor counted and did not
    /// write (`--events-per-template`).
    pub fn sampled_out(&self) -> Option<u64> {
        if self.event_type.as_deref() != Some("stats") {
            return None;
        }
        self.agent.as_ref().and_then(|a| a.events_sampled_out)
    }

    /// The observation, or `None` when the time or an address is missing or unreadable.
    pub fn observation(&self) -> Option<Observation<'_>> {
        let time_ns = parse_rfc3339(text(&self.timestamp)?)?;
        let src_ip: IpAddr = text(&self.src_ip)?.parse().ok()?;
        let dest_ip: IpAddr = text(&self.dest_ip)?.parse().ok()?;
        let ip = self.ip.as_ref();
        let fp = self.fingerprint.as_ref();
        let inf = fp.and_then(|f| f.inferences.as_ref());
        let ip_id = ip.and_then(|i| i.id);
        Some(Observation {
            time_ns,
            src_ip: src_ip.to_canonical(),
            src_port: self.src_port.unwrap_or(0),
            dest_ip: dest_ip.to_canonical(),
            dest_port: self.dest_port.unwrap_or(0),
            proto: PROTOCOLS[protocol_index(text(&self.proto).unwrap_or(""))],
            ttl: ip.and_then(|i| i.ttl),
            ip_id,
            df: ip.and_then(|i| i.df).unwrap_or(false),
            sensor: self.sensor.as_ref().and_then(|s| text(&s.name)),
            method: self.sip.as_ref().and_then(|s| text(&s.method)),
            user_agent: self.sip.as_ref().and_then(|s| text(&s.user_agent)),
            tool: fp.and_then(|f| text(&f.tool)).unwrap_or(UNKNOWN),
            variant: fp.and_then(|f| text(&f.variant)),
            category: fp.and_then(|f| text(&f.category)).unwrap_or(UNKNOWN),
            rule: fp.and_then(|f| text(&f.rule)).unwrap_or(UNKNOWN),
            template_hash: fp
                .and_then(|f| text(&f.template_hash))
                .and_then(|h| u64::from_str_radix(h, 16).ok())
                .unwrap_or(0),
            id_packet: inf
                .and_then(|i| i.ip_id.as_ref())
                .and_then(|i| text(&i.packet))
                .map(packet_id_name)
                .or_else(|| ip_id.map(|id| if id == 0 { "zero" } else { "non_zero" })),
            id_behaviour: inf
                .and_then(|i| i.ip_id.as_ref())
                .and_then(|i| i.source.as_ref())
                .and_then(|s| text(&s.behaviour))
                .and_then(behaviour_name),
            ttl_initial: inf.and_then(|i| i.ttl.as_ref()).and_then(|t| t.initial),
            processes: inf
                .and_then(|i| i.processes.as_ref())
                .and_then(|p| p.processes),
            process_base: inf
                .and_then(|i| i.processes.as_ref())
                .and_then(|p| p.base_port),
            via: host_seen(inf.and_then(|i| i.via_host.as_ref())),
            contact: host_seen(inf.and_then(|i| i.contact_host.as_ref())),
        })
    }
}

/// Reads NDJSON lines from `input` and gives each non-empty line to `each`, bounded: a line
/// longer than [`MAX_LINE`] is skipped (`each` gets `None` for it). Returns the lines read.
pub fn for_each_line(
    mut input: impl BufRead,
    mut each: impl FnMut(Option<&[u8]>),
) -> std::io::Result<u64> {
    let mut line = Vec::new();
    let mut lines = 0;
    loop {
        line.clear();
        let n = (&mut input)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(lines);
        }
        lines += 1;
        if line.len() > MAX_LINE {
            // The rest of the long line, without keeping it.
            if line.last() != Some(&b'\n') {
                input.skip_until(b'\n')?;
            }
            each(None);
            continue;
        }
        let trimmed = line.trim_ascii();
        if !trimmed.is_empty() {
            each(Some(trimmed));
        }
    }
}
