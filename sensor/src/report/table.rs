//! The report as text for a terminal: a headline, the findings, and tables of tools, campaigns,
//! sources and sensors. Every string that came from input passes through
//! [`terminal_safe`](crate::escape::terminal_safe) with a bound before it reaches a cell.

use std::fmt;

use super::{
    Summary,
    findings::{short_time, span_text},
};
use crate::escape::terminal_safe;

/// Width findings are wrapped to.
const WRAP: usize = 100;
/// Widest cell for names and lists.
const CELL_MAX: usize = 40;

fn cell(s: &str) -> String {
    terminal_safe(s, CELL_MAX)
}

fn counts<'a>(map: impl IntoIterator<Item = (&'a &'static str, &'a u64)>) -> String {
    let mut v: Vec<(&str, u64)> = map.into_iter().map(|(k, n)| (*k, *n)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    v.iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

struct Table {
    headers: Vec<&'static str>,
    /// Right-aligned columns (numbers).
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(columns: &[(&'static str, bool)]) -> Self {
        Self {
            headers: columns.iter().map(|(h, _)| *h).collect(),
            right: columns.iter().map(|(_, r)| *r).collect(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn render(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.len()).collect();
        for row in &self.rows {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.len());
            }
        }
        let line = |f: &mut fmt::Formatter<'_>, cells: &[String]| -> fmt::Result {
            let mut out = String::from("  ");
            for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
                if i > 0 {
                    out.push_str("  ");
                }
                if self.right[i] {
                    out.push_str(&format!("{c:>w$}"));
                } else {
                    out.push_str(&format!("{c:<w$}"));
                }
            }
            writeln!(f, "{}", out.trim_end())
        };
        let headers: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        line(f, &headers)?;
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        line(f, &rule)?;
        for row in &self.rows {
            line(f, row)?;
        }
        Ok(())
    }
}

/// Word-wraps `text` to [`WRAP`] columns, the first line after `first`, the others after
/// `rest`.
fn wrap(f: &mut fmt::Formatter<'_>, first: &str, rest: &str, text: &str) -> fmt::Result {
    let mut line = String::from(first);
    let mut empty = true;
    for word in text.split(' ') {
        if !empty && line.len() + 1 + word.len() > WRAP {
            writeln!(f, "{line}")?;
            line = String::from(rest);
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    writeln!(f, "{line}")
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let approx = if self.sources_approximate {
            "about "
        } else {
            ""
        };
        if self.events == 0 {
            writeln!(f, "0 events")?;
        } else {
            writeln!(
                f,
                "{} events from {approx}{} sources over {} ({} to {} UTC), to {} destination{}",
                self.events,
                self.sources,
                span_text(0, (self.hours * 3.6e12) as u64),
                short_time(&self.first_seen),
                short_time(&self.last_seen),
                self.destinations,
                if self.destinations == 1 { "" } else { "s" },
            )?;
        }
        if self.sampled_out > 0 {
            writeln!(
                f,
                "({} more events were counted by the sensor but not written (--events-per-template): \
                 the counts here cover the events written; the sensor's campaign documents and \
                 its own report cover every packet)",
                self.sampled_out
            )?;
        }
        if self.other_documents + self.unreadable > 0 {
            writeln!(
                f,
                "({} other documents and {} unreadable records skipped)",
                self.other_documents, self.unreadable
            )?;
        }

        if !self.findings.is_empty() {
            writeln!(f, "\nFindings")?;
            for tool in &self.findings {
                let mut statements = tool.statements.iter();
                if let Some(head) = statements.next() {
                    wrap(f, "  ", "    ", head)?;
                }
                for s in statements {
                    wrap(f, "    - ", "      ", s)?;
                }
            }
            let mut caveats: Vec<&str> = Vec::new();
            for c in self.findings.iter().flat_map(|t| &t.caveats) {
                if !caveats.contains(c) {
                    caveats.push(c);
                }
            }
            if !caveats.is_empty() {
                writeln!(f, "  Caveats")?;
                for c in caveats {
                    wrap(f, "    - ", "      ", c)?;
                }
            }
        }

        if !self.tools.is_empty() {
            writeln!(f, "\nTools ({})", self.tools.len())?;
            let mut t = Table::new(&[
                ("tool", false),
                ("category", false),
                ("events", true),
                ("sources", true),
                ("first seen", false),
                ("last seen", false),
                ("variants", false),
            ]);
            for tool in self.tools.iter().take(self.top.max(1)) {
                // The commonest variant, and how many others.
                let named: Vec<&(String, u64)> = tool
                    .variants
                    .iter()
                    .filter(|(v, _)| !v.is_empty())
                    .collect();
                let variants = match named.split_first() {
                    None => String::new(),
                    Some(((v, n), rest)) => {
                        let more = rest.len() as u64 + u64::from(tool.other_variants > 0);
                        let mut s = format!("{} {n}", terminal_safe(v, 32));
                        if more > 0 {
                            s.push_str(&format!(" (+{more} more)"));
                        }
                        s
                    }
                };
                t.row(vec![
                    cell(&tool.name),
                    cell(&tool.category),
                    tool.events.to_string(),
                    format!(
                        "{}{}",
                        if tool.sources_approximate { "~" } else { "" },
                        tool.sources
                    ),
                    short_time(&tool.first_seen),
                    short_time(&tool.last_seen),
                    variants,
                ]);
            }
            t.render(f)?;
        }

        if !self.campaigns.is_empty() {
            writeln!(
                f,
                "\nCampaigns ({} shown of {}; sources sharing a rule, or a template for unknown \
                 tools, within {})",
                self.campaigns.len(),
                self.campaigns_total,
                span_text(0, self.campaigns[0].window_s.saturating_mul(1_000_000_000)),
            )?;
            let mut t = Table::new(&[
                ("campaign", false),
                ("tool", false),
                ("state", false),
                ("packets", true),
                ("sources", true),
                ("dests", true),
                ("methods", false),
                ("IP-ID (sources)", false),
                ("TTL (sources)", false),
                ("first seen", false),
                ("last seen", false),
            ]);
            for c in &self.campaigns {
                let approx = |a: bool| if a { "~" } else { "" };
                t.row(vec![
                    cell(&c.key),
                    cell(&c.tool),
                    c.state.to_string(),
                    c.packets.to_string(),
                    format!("{}{}", approx(c.sources_approximate), c.sources),
                    format!("{}{}", approx(c.destinations_approximate), c.destinations),
                    counts(&c.methods),
                    counts(&c.ip_id.sources),
                    counts(&c.ttl.sources),
                    short_time(&c.first_seen),
                    short_time(&c.last_seen),
                ]);
            }
            t.render(f)?;
        }

        if !self.top_sources.is_empty() {
            writeln!(
                f,
                "\nTop sources ({} shown of {approx}{})",
                self.top_sources.len(),
                self.sources
            )?;
            let mut t = Table::new(&[
                ("source", false),
                ("events", true),
                ("dests", true),
                ("tool", false),
                ("src ports", false),
                ("methods", false),
                ("TTL", false),
                ("IP-ID", false),
                ("first seen", false),
                ("last seen", false),
            ]);
            for s in &self.top_sources {
                let mut tools = s
                    .tools
                    .iter()
                    .map(|t| cell(t))
                    .collect::<Vec<_>>()
                    .join(",");
                if s.multiple_tools && s.tools.len() == 1 {
                    tools.push_str(",+");
                }
                t.row(vec![
                    cell(&s.src_ip),
                    s.events.to_string(),
                    format!("~{}", s.destinations),
                    tools,
                    s.src_ports.clone(),
                    s.methods.join(","),
                    s.ttl.clone(),
                    s.ip_id.to_string(),
                    short_time(&s.first_seen),
                    short_time(&s.last_seen),
                ]);
            }
            t.render(f)?;
        }

        if self.sensors.iter().any(|s| s.name != super::UNNAMED_SENSOR) {
            writeln!(f, "\nSensors")?;
            let mut t = Table::new(&[
                ("sensor", false),
                ("events", true),
                ("sources", true),
                ("first seen", false),
                ("last seen", false),
            ]);
            for s in &self.sensors {
                t.row(vec![
                    cell(&s.name),
                    s.events.to_string(),
                    s.sources.to_string(),
                    short_time(&s.first_seen),
                    short_time(&s.last_seen),
                ]);
            }
            t.render(f)?;
        }

        let a = &self.aggregate;
        writeln!(
            f,
            "\nAggregation: {} source records, {} tracked (at most {}), evicted {} idle and {} \
             at capacity; {} campaigns opened, {} open, closed {} by window and {} at capacity",
            a.source_records,
            a.sources_tracked,
            a.max_sources,
            a.sources_evicted_idle,
            a.sources_evicted_capacity,
            a.campaigns_opened,
            a.campaigns_open,
            a.campaigns_closed_window,
            a.campaigns_closed_capacity,
        )?;
        if a.names_overflowed + a.campaign_documents_dropped > 0 {
            writeln!(
                f,
                "  ({} names beyond the tables' bounds counted as (other); {} campaign documents \
                 dropped)",
                a.names_overflowed, a.campaign_documents_dropped
            )?;
        }
        Ok(())
    }
}
