//! The JSON document of an event, following Suricata EVE names where they fit (`timestamp`,
//! `event_type`, `src_ip`, `src_port`, `dest_ip`, `dest_port`, `proto`). Field names are part of
//! the documented schema (docs/event-schema.md): add fields, never rename them.

use std::net::IpAddr;

use serde::Serialize;

use crate::{
    clock::rfc3339_micros,
    counters::{AgentCounters, KernelCounters},
    escape::{escape_bytes, hex},
    event::Event,
    fingerprint::{Engine, SourceTracker},
    identity::SensorIdentity,
    output::kafka::KafkaStats,
    output::{fingerprint::FingerprintDoc, sip::SipDoc},
    record::{MatchedOn, tcp_flags_string},
    sip::SipMessage,
};

/// Version of the event schema; bumped only on incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Serialize)]
pub struct EventDoc<'a> {
    pub timestamp: String,
    pub event_type: &'static str,
    pub schema_version: u32,
    pub src_ip: IpAddr,
    pub src_port: u16,
    pub dest_ip: IpAddr,
    pub dest_port: u16,
    pub proto: &'static str,
    pub ifindex: u32,
    pub rx_queue: u32,
    #[serde(skip_serializing_if = "<[u16]>::is_empty")]
    pub vlan: &'a [u16],
    /// `dest` normally; `src` when the source port matched (a response on a mirrored link).
    pub matched_on: &'static str,
    pub frame_len: u32,
    pub ip: IpDoc,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpDoc>,
    pub payload: PayloadDoc,
    /// Present for TCP segments the reactive responder answered or validated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reactive: Option<ReactiveDoc>,
    /// The parsed payload (`output::sip`), when the agent parsed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sip: Option<SipDoc>,
    /// The attribution with its evidence (`output::fingerprint`), when the agent ran the engine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<FingerprintDoc<'a>>,
    /// Which sensor saw it (name, interface, darknet prefixes), so that a central consumer can
    /// merge many sensors; absent when no identity is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sensor: Option<&'a SensorIdentity>,
}

#[derive(Serialize)]
pub struct ReactiveDoc {
    /// This SYN was answered with a SYN-cookie SYN-ACK.
    pub syn_answered: bool,
    /// This segment's ACK carried a valid cookie: the scanner completed a handshake with us.
    pub session: bool,
    /// The session's SYN, joined from its own record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syn: Option<crate::session::SynFields>,
}

#[derive(Serialize)]
pub struct IpDoc {
    pub version: u8,
    pub ttl: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow_label: Option<u32>,
    pub df: bool,
    pub mf: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub reserved_bit: bool,
    pub frag_offset: u16,
    pub tos: u8,
    pub total_len: u16,
}

#[derive(Serialize)]
pub struct TcpDoc {
    pub flags: String,
    pub seq: u32,
    pub ack: u32,
    pub window: u16,
    pub data_offset: u8,
    /// Raw option bytes, hex.
    pub options: String,
}

#[derive(Serialize)]
pub struct PayloadDoc {
    /// L4 payload length the headers declare.
    pub len: u16,
    /// Bytes captured.
    pub captured: u16,
    /// Captured bytes are fewer than `len`.
    pub truncated: bool,
    /// The frame itself held fewer bytes than its headers declare.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub frame_short: bool,
    /// The captured bytes, escaped to printable ASCII (see `escape`): lossless and terminal-safe.
    pub printable: String,
}

impl<'a> EventDoc<'a> {
    pub fn new(event: &Event<'a>) -> Self {
        let r = event.record;
        let raw = r.raw();
        let v4 = r.ip_version() == 4;
        Self {
            timestamp: rfc3339_micros(event.wall_ns),
            event_type: "sip_probe",
            schema_version: SCHEMA_VERSION,
            src_ip: r.src_ip(),
            src_port: r.src_port(),
            dest_ip: r.dst_ip(),
            dest_port: r.dst_port(),
            proto: r.transport().as_str(),
            ifindex: r.ifindex(),
            rx_queue: r.rx_queue(),
            vlan: r.vlan_ids(),
            matched_on: match r.matched_on() {
                MatchedOn::Destination => "dest",
                MatchedOn::Source => "src",
            },
            frame_len: raw.frame_len,
            ip: IpDoc {
                version: r.ip_version(),
                ttl: r.ttl(),
                id: v4.then_some(raw.ip_id),
                flow_label: (!v4).then_some(raw.flow_label),
                df: r.dont_fragment(),
                mf: r.more_fragments(),
                reserved_bit: r.reserved_bit(),
                frag_offset: raw.frag_offset,
                tos: raw.tos,
                total_len: raw.ip_total_len,
            },
            tcp: (r.transport() == crate::record::Transport::Tcp).then(|| TcpDoc {
                flags: tcp_flags_string(raw.tcp_flags),
                seq: raw.tcp_seq,
                ack: raw.tcp_ack,
                window: raw.tcp_window,
                data_offset: raw.tcp_data_offset,
                options: hex(r.tcp_options()),
            }),
            payload: PayloadDoc {
                len: raw.payload_len,
                captured: raw.captured_len,
                truncated: r.payload_truncated(),
                frame_short: r.frame_short(),
                printable: escape_bytes(r.payload()),
            },
            reactive: {
                let answered = raw.flags & sensor_common::record_flags::SYN_ANSWERED != 0;
                let session = raw.flags & sensor_common::record_flags::REACTIVE_SESSION != 0;
                (answered || session).then_some(ReactiveDoc {
                    syn_answered: answered,
                    session,
                    syn: None,
                })
            },
            sip: None,
            fingerprint: None,
            sensor: None,
        }
    }

    /// Adds what the parser and the fingerprint engine found.
    pub fn with_analysis(mut self, sip: SipDoc, fingerprint: FingerprintDoc<'a>) -> Self {
        self.sip = Some(sip);
        self.fingerprint = Some(fingerprint);
        self
    }

    /// The document of an event with its payload parsed and fingerprinted (the source's
    /// IP-ID state updated on the way).
    pub fn analyzed(event: &Event<'a>, engine: &'a Engine, sources: &mut SourceTracker) -> Self {
        let record = event.record;
        let sip = SipMessage::parse_captured(record.payload(), record.payload_truncated());
        let fingerprint = engine.classify_tracked(event, &sip, sources);
        Self::new(event).with_analysis(
            SipDoc::new(&sip),
            FingerprintDoc::from_fingerprint(fingerprint),
        )
    }

    /// Adds the `sensor` object.
    pub fn with_sensor(mut self, sensor: Option<&'a SensorIdentity>) -> Self {
        self.sensor = sensor;
        self
    }
}

/// The final (or periodic) counters, as an `event_type: stats` document, like EVE's stats.
#[derive(Serialize)]
pub struct StatsDoc {
    pub timestamp: String,
    pub event_type: &'static str,
    pub schema_version: u32,
    pub kernel: serde_json::Map<String, serde_json::Value>,
    pub agent: serde_json::Map<String, serde_json::Value>,
    /// Whether the kernel counters reconcile (`seen = outcomes`, `matched = emitted + ring_full`).
    pub reconciled: bool,
    /// Kafka output counters (`kafka_delivered`, `kafka_spooled`, `kafka_shed`, ...), when the
    /// Kafka output is on; `kafka_reconciled` says whether they add up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka: Option<serde_json::Map<String, serde_json::Value>>,
    /// The aggregator's counters (sources tracked and evicted, campaigns), when it ran.
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub aggregate: serde_json::Map<String, serde_json::Value>,
    /// Each output's counters (`ndjson`, `pcapng`): written, dropped, errors, bytes, rotations.
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub outputs: serde_json::Map<String, serde_json::Value>,
}

impl StatsDoc {
    pub fn new(wall_ns: u64, kernel: &KernelCounters, agent: &AgentCounters) -> Self {
        Self {
            timestamp: rfc3339_micros(wall_ns),
            event_type: "stats",
            schema_version: SCHEMA_VERSION,
            kernel: kernel
                .iter()
                .map(|(c, v)| (c.name().to_string(), v.into()))
                .collect(),
            agent: agent
                .iter()
                .map(|(n, v)| (n.to_string(), v.into()))
                .collect(),
            reconciled: kernel.check().is_ok(),
            kafka: None,
            aggregate: serde_json::Map::new(),
            outputs: serde_json::Map::new(),
        }
    }

    pub fn with_kafka(mut self, kafka: Option<&KafkaStats>) -> Self {
        self.kafka = kafka.map(|k| {
            let mut map: serde_json::Map<String, serde_json::Value> =
                k.iter().map(|(n, v)| (n.to_string(), v.into())).collect();
            map.insert("kafka_reconciled".into(), k.check().is_ok().into());
            map
        });
        self
    }

    pub fn with_aggregate(mut self, counters: &crate::aggregate::AggregateCounters) -> Self {
        self.aggregate = counters
            .iter()
            .map(|(n, v)| (n.to_string(), v.into()))
            .collect();
        self
    }

    pub fn with_outputs(mut self, outputs: &crate::output::Outputs) -> Self {
        for (name, doc) in outputs.docs() {
            if let Ok(value) = serde_json::to_value(doc) {
                self.outputs.insert(name.to_string(), value);
            }
        }
        self
    }
}
