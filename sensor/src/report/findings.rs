//! The seed-style findings: per tool, the sentences the first seed's analyst wrote by hand
//! ("17 packets over 36 hours from 17 unique sources, 7 with IP-ID zero, so mostly Linux"),
//! stated from the aggregated numbers, each with its caveat. Every name and example from the
//! input is made terminal-safe and bounded here, so the sentences are safe to print as they are.

use serde::Serialize;

use crate::{
    aggregate::{
        ToolSummary,
        classes::{PacketIdClass, SourceIdClass},
    },
    escape::terminal_safe,
    fingerprint::infer::HostClass,
};

/// Longest name or example quoted in a sentence.
const QUOTE_MAX: usize = 64;
/// User agents and examples quoted per sentence.
const QUOTED: usize = 3;

/// Said once under the findings, referred to by the IP-ID sentences.
pub const IP_ID_CAVEAT: &str = "IP-ID: Linux sent ID 0 for unconnected UDP with DF on older \
    kernels (CVE-2002-0510) but no longer does: the 6.18 kernel measured for this sensor sends \
    non-zero IDs incrementing by one, with DF. So ID 0 with DF points to an older Linux, and a \
    non-zero ID does not rule Linux out. A NAT or middlebox on the path may rewrite IDs.";
pub const ESTIMATE_CAVEAT: &str = "Counts marked \"about\" or \"~\" are estimates: distinct \
    counts are exact up to 1024 values, then HyperLogLog (about 1.6 % error); per-source \
    destination counts are always a 32-byte sketch (exact for a handful, about 13 % error).";

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ToolFindings {
    pub tool: String,
    pub category: String,
    pub packets: u64,
    pub hours: f64,
    pub sources: u64,
    pub sources_approximate: bool,
    /// Sources with an IPv4 packet; those whose every IPv4 packet had IP-ID 0 and DF, and their
    /// packets.
    pub ipv4_sources: u64,
    pub zero_id_df_sources: u64,
    pub zero_id_df_packets: u64,
    pub multi_process_sources: u64,
    pub max_processes: u32,
    pub statements: Vec<String>,
    /// Caveats the statements rely on (said once in the table).
    pub caveats: Vec<&'static str>,
}

fn quote(s: &str) -> String {
    terminal_safe(s, QUOTE_MAX)
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `2026-11-22T02:04:03.123456Z` as `2026-11-22 02:04:03`; anything else made terminal-safe.
pub fn short_time(s: &str) -> String {
    let b = s.as_bytes();
    if b.len() >= 19 && b[10] == b'T' && s.is_ascii() {
        format!("{} {}", &s[..10], &s[11..19])
    } else {
        quote(s)
    }
}

/// "36.0 hours", "12 minutes", "3.2 seconds".
pub fn span_text(first_ns: u64, last_ns: u64) -> String {
    let s = last_ns.saturating_sub(first_ns) as f64 / 1e9;
    if s >= 3600.0 {
        format!("{:.1} hours", s / 3600.0)
    } else if s >= 60.0 {
        format!("{:.0} minutes", s / 60.0)
    } else {
        format!("{s:.1} seconds")
    }
}

fn ttl_hint(family: &str) -> &'static str {
    match family {
        "32" => "old Windows, or a TTL the tool set",
        "64" => "Linux, a BSD, macOS or another Unix-like stack",
        "128" => "Windows",
        "255" => "a raw-packet scanner that sets 255, or network equipment",
        "mixed" => {
            "TTL families change between packets: randomised by the tool, or hosts behind one address"
        }
        _ => "no TTL",
    }
}

fn id_hint(class: &str) -> Option<&'static str> {
    Some(match class {
        "zero" => "ID 0 without DF: crafted packets",
        "fixed_54321" => "ID 54321 without DF: zmap before 4.1",
        "masscan_derived" => "ID derived from destination and sequence number: masscan",
        "constant" => "one repeated non-zero ID: crafted or replayed packets",
        "incrementing" => {
            "IDs counting up by a fixed step: a counter used only for this traffic (recent Linux, BSDs)"
        }
        "incrementing_shared" => {
            "IDs counting up by varying steps: a counter shared with other traffic (a global-counter stack such as Windows, or a NAT)"
        }
        "random" => {
            "random IDs: a raw-packet tool, a stack that randomises IDs (OpenBSD), or a NAT"
        }
        _ => return None,
    })
}

fn host_explanation(class: &str) -> &'static str {
    HostClass::ALL
        .iter()
        .find(|c| c.as_str() == class)
        .map_or("an address the engine could not classify", |c| {
            c.explanation()
        })
}

/// The findings of the `top` busiest tools that are not benign (all tools if every one is).
pub fn all(tools: &[ToolSummary], top: usize) -> Vec<ToolFindings> {
    let not_benign: Vec<&ToolSummary> = tools.iter().filter(|t| t.category != "benign").collect();
    let chosen: Vec<&ToolSummary> = if not_benign.is_empty() {
        tools.iter().collect()
    } else {
        not_benign
    };
    chosen.into_iter().take(top.max(1)).map(tool).collect()
}

pub fn tool(t: &ToolSummary) -> ToolFindings {
    let name = quote(&t.name);
    let mut statements = Vec::new();
    let mut caveats = Vec::new();
    let approx = if t.sources_approximate { "about " } else { "" };
    if t.sources_approximate {
        caveats.push(ESTIMATE_CAVEAT);
    }
    let mut head = format!(
        "{name}: {} over {} from {approx}{}, {} to {} UTC",
        plural(t.events, "packet", "packets"),
        span_text(t.first_ns, t.last_ns),
        plural(t.sources, "unique source", "unique sources"),
        short_time(&t.first_seen),
        short_time(&t.last_seen)
    );
    if t.events == t.sources && t.events > 1 {
        head.push_str("; one packet per source");
    }
    statements.push(head);

    let variants: Vec<String> = t
        .variants
        .iter()
        .filter(|(v, _)| !v.is_empty())
        .map(|(v, n)| format!("{} ({n})", quote(v)))
        .collect();
    if !variants.is_empty() {
        let mut s = format!("variants: {}", variants.join(", "));
        if t.other_variants > 0 {
            s.push_str(&format!(
                ", and {} more packets of other variants",
                t.other_variants
            ));
        }
        statements.push(s);
    }

    // IP-ID, per source, as the seed counts it.
    let ipv4_sources: u64 = t
        .ip_id_sources
        .iter()
        .filter(|(c, _)| *c != SourceIdClass::NotApplicable.name())
        .map(|(_, n)| n)
        .sum();
    let zero_df = t.id_sources(SourceIdClass::ZeroDf);
    let zero_df_packets = t.id_packets(PacketIdClass::ZeroDf);
    if ipv4_sources > 0 {
        caveats.push(IP_ID_CAVEAT);
        let counted = format!(
            "{zero_df} of {} sent IP-ID 0 with DF in every packet",
            plural(ipv4_sources, "IPv4 source", "IPv4 sources")
        );
        if zero_df > 0 {
            let others = ipv4_sources - zero_df;
            statements.push(format!(
                "{counted} ({}): Linux's unconnected UDP on older kernels, so {} likely Linux{} \
                 (see the IP-ID caveat)",
                plural(zero_df_packets, "packet", "packets"),
                if zero_df == 1 { "it is" } else { "these are" },
                if others > 0 {
                    format!("; the other {others} are not shown to be non-Linux")
                } else {
                    String::new()
                }
            ));
        } else {
            statements.push(format!(
                "{counted}: no sign of an older Linux kernel, and no evidence against a recent one \
                 (see the IP-ID caveat)"
            ));
        }
        let others: Vec<String> = t
            .ip_id_sources
            .iter()
            .filter_map(|(c, n)| id_hint(c).map(|hint| format!("{n} {c} ({hint})")))
            .collect();
        if !others.is_empty() {
            statements.push(format!("IP-ID behaviour per source: {}", others.join("; ")));
        }
        if t.df_packets > 0 {
            let ipv4_packets: u64 = t
                .ip_id_packets
                .iter()
                .filter(|(c, _)| *c != PacketIdClass::NotApplicable.name())
                .map(|(_, n)| n)
                .sum();
            statements.push(format!(
                "DF set on {} of {} IPv4 packets",
                t.df_packets, ipv4_packets
            ));
        }
    }

    if !t.ttl_sources.is_empty() {
        let families: Vec<String> = t
            .ttl_sources
            .iter()
            .map(|(f, n)| {
                format!(
                    "{f} for {} ({})",
                    plural(*n, "source", "sources"),
                    ttl_hint(f)
                )
            })
            .collect();
        statements.push(format!("initial TTL: {}", families.join(", ")));
    }

    let base = t
        .process_base
        .map_or("its base port".to_string(), |b| format!("port {b}"));
    if t.multi_process_sources > 0 {
        statements.push(format!(
            "{} of {} bound a port above {base}: the tool takes the next free port, so up to {} \
             concurrent scanner processes ran on one host (or a local SIP service held {base} \
             and one process fewer)",
            t.multi_process_sources,
            plural(t.process_sources, "source", "sources"),
            t.max_processes
        ));
    } else if t.process_sources > 0 {
        statements.push(format!(
            "{} of {} bound {base} itself: one scanner process per host, and no local SIP \
             service on {base}",
            t.process_sources,
            plural(t.process_sources, "source", "sources")
        ));
    }

    for (field, hosts) in [("Via", &t.via_hosts), ("Contact", &t.contact_hosts)] {
        for h in hosts {
            let examples: Vec<String> = h.examples.iter().take(QUOTED).map(|e| quote(e)).collect();
            statements.push(format!(
                "{field} host {} for {}{}: {}",
                h.class,
                plural(h.sources, "source", "sources"),
                if examples.is_empty() {
                    String::new()
                } else {
                    format!(" (e.g. {})", examples.join(", "))
                },
                host_explanation(h.class)
            ));
        }
    }

    if !t.user_agents.is_empty() {
        let mut uas: Vec<String> = t
            .user_agents
            .iter()
            .take(QUOTED)
            .map(|(ua, n)| format!("\"{}\" ({n})", quote(ua)))
            .collect();
        let more = t.user_agents.len().saturating_sub(QUOTED) as u64;
        if more > 0 {
            uas.push(format!("and {}", plural(more, "more", "more")));
        }
        if t.other_user_agents > 0 {
            uas.push(format!(
                "and {} with further user agents",
                plural(t.other_user_agents, "packet", "packets")
            ));
        }
        statements.push(format!("User-Agent: {}", uas.join(", ")));
    }

    ToolFindings {
        tool: name,
        category: quote(&t.category),
        packets: t.events,
        hours: t.last_ns.saturating_sub(t.first_ns) as f64 / 3.6e12,
        sources: t.sources,
        sources_approximate: t.sources_approximate,
        ipv4_sources,
        zero_id_df_sources: zero_df,
        zero_id_df_packets: zero_df_packets,
        multi_process_sources: t.multi_process_sources,
        max_processes: t.max_processes,
        statements,
        caveats,
    }
}
