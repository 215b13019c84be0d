//! The [`Observation`] of an event made straight from the engine's verdict, for the pipeline's
//! compact path: the event itself is written by `output::event`, so no event document exists
//! to read it from, and building one only for the aggregator cost more than the rest of the
//! per-packet work. It reads what [`Observation::from_doc`] reads, computed the way the
//! document computes it; `tests::from_analysis_equals_from_doc` holds the two together over the
//! whole corpus.

use std::net::IpAddr;

use crate::{
    escape::escape_bounded_into,
    event::Event,
    fingerprint::{
        Engine,
        infer::{classify_host, infer_ttl, process_count},
        ipid::{PacketIpId, classify_packet},
    },
    output::{event::Analysis, sip::FIELD_MAX},
    sip::{HeaderName, SipMessage, StartLine},
};

use super::{HostSeen, Observation, UNKNOWN};

/// How much of a Via or Contact host the inferences keep (as `infer::infer_host`).
const HOST_MAX: usize = 64;

/// The escaped attacker text an [`Observation`] borrows: kept by the pipeline and reused, so
/// that an observation costs no allocation once the buffers have grown.
#[derive(Default)]
pub struct ObservationText {
    method: String,
    user_agent: String,
    via: String,
    contact: String,
}

impl<'a> Observation<'a> {
    /// The observation of one analysed event (`sensor`: the `sensor.name` of the event). Its
    /// names are borrowed from `engine`, the analysis's engine, which outlives the analysis.
    pub fn from_analysis(
        event: &Event<'_>,
        msg: &SipMessage<'_>,
        analysis: &Analysis<'_, '_>,
        engine: &'a Engine,
        sensor: Option<&'a str>,
        text: &'a mut ObservationText,
    ) -> Self {
        let r = event.record;
        let raw = r.raw();
        let ip_id = (r.ip_version() == 4).then_some(raw.ip_id);
        let rule = analysis
            .verdict
            .winner
            .map(|(i, _)| &engine.rules()[usize::from(i)]);
        let facts = analysis.facts;
        let packet = facts.packet;
        let src_ip = packet.map(|p| p.src_ip);
        let constants: &[IpAddr] = rule.map_or(&[], |r| &r.tool_constants);
        let id_class = packet
            .map(|p| classify_packet(&p))
            .filter(|c| *c != PacketIpId::NotApplicable);
        let via = facts.via().filter(|v| !v.host.is_empty());
        let processes = rule.and_then(|r| r.source_port_base).and_then(|base| {
            // The Via port counts even when its host is empty, as in `engine::infer`.
            process_count(
                base,
                facts.via().and_then(|v| v.port),
                packet.map(|p| p.src_port),
            )
            .map(|(_, _, n)| (base, n))
        });

        let ObservationText {
            method,
            user_agent,
            via: via_text,
            contact: contact_text,
        } = text;
        let method = match msg.start_line() {
            StartLine::Request { method: m, .. } => Some(escaped(m, FIELD_MAX, method)),
            _ => None,
        };
        let user_agent = msg
            .header_value(HeaderName::UserAgent)
            .map(|ua| escaped(ua, FIELD_MAX, user_agent));
        let via_host = via.map(|v| v.host);
        let via = via.map(|v| HostSeen {
            class: classify_host(v.host, src_ip, constants).as_str(),
            host: escaped(v.host, HOST_MAX, via_text),
        });
        let contact = facts
            .contact()
            .filter(|c| !c.uri.host.is_empty())
            .map(|c| match via {
                // Most senders put one address in both: classified and escaped once.
                Some(seen) if via_host == Some(c.uri.host) => seen,
                _ => HostSeen {
                    class: classify_host(c.uri.host, src_ip, constants).as_str(),
                    host: escaped(c.uri.host, HOST_MAX, contact_text),
                },
            });
        Observation {
            time_ns: event.wall_ns,
            src_ip: r.src_ip(),
            src_port: r.src_port(),
            dest_ip: r.dst_ip(),
            dest_port: r.dst_port(),
            proto: r.transport().as_str(),
            ttl: Some(r.ttl()),
            ip_id,
            df: r.dont_fragment(),
            sensor,
            method,
            user_agent,
            tool: rule.map_or(UNKNOWN, |r| r.tool.as_str()),
            variant: rule.and_then(|r| r.variant.as_deref()),
            category: rule.map_or(UNKNOWN, |r| r.category.as_str()),
            rule: rule.map_or(UNKNOWN, |r| r.id.as_str()),
            template_hash: analysis.verdict.template.0,
            id_packet: id_class
                .map(PacketIpId::as_str)
                .or_else(|| ip_id.map(|id| if id == 0 { "zero" } else { "non_zero" })),
            id_behaviour: id_class.and(analysis.source).map(|s| s.behaviour.as_str()),
            ttl_initial: packet.map(|p| infer_ttl(p.ttl).initial),
            processes: processes.map(|(_, n)| n),
            process_base: processes.map(|(base, _)| base),
            via,
            contact,
        }
    }
}

fn escaped<'t>(bytes: &[u8], max: usize, out: &'t mut String) -> &'t str {
    out.clear();
    escape_bounded_into(bytes, max, out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{
        event::for_each_corpus_analysis, fingerprint::FingerprintDoc, json::EventDoc, sip::SipDoc,
    };

    #[test]
    fn from_analysis_equals_from_doc() {
        let mut text = ObservationText::default();
        let mut with_hosts = 0;
        let checked = for_each_corpus_analysis(|event, msg, a| {
            let fp = a.cache.fingerprint(a.engine, a.verdict, a.facts, a.source);
            let doc = EventDoc::new(event)
                .with_analysis(SipDoc::new(msg), FingerprintDoc::from_fingerprint(fp));
            let direct = Observation::from_analysis(event, msg, a, a.engine, None, &mut text);
            assert_eq!(direct, Observation::from_doc(&doc, event.wall_ns));
            with_hosts += usize::from(direct.via.is_some() && direct.processes.is_some());
        });
        assert!(checked > 250 && with_hosts > 30, "{checked} {with_hosts}");
    }
}
