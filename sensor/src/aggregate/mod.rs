//! Aggregation of events into sources, campaigns, tools and a timeseries, in bounded memory.
//!
//! The aggregator takes [`Observation`]s: the few fields of an event document it needs, borrowed.
//! The live pipeline and `sensor analyze` make them from the engine's verdict
//! ([`Observation::from_analysis`]) or, with `--verbose-evidence`, from the [`EventDoc`] they
//! just wrote ([`Observation::from_doc`]); `sensor report` and any other consumer of event documents (an
//! NDJSON file, stdin, a Kafka topic) make them from JSON (`report::input`). Both paths land
//! in the same bins, so a report over a file says what the live run said on exit.
//!
//! - [`source`]: one fixed-size record per source address (the size is tested), an idle
//!   timeout and a maximum number of sources, evictions counted.
//! - [`campaign`]: sources sharing a fingerprint template (the rule id, or the template hash
//!   for an unnamed tool) within a window.
//! - [`tools`]: per-tool and per-sensor tallies for the report's findings.
//! - [`timeseries`]: events over time per tool, for the plot.
//! - [`distinct`], [`intern`], [`lru`], [`classes`]: the bounded building blocks.
//!
//! Time is the events' own time (a capture file's timestamps, or the kernel's), so timeouts mean
//! the same offline and live. Expiry is driven by the latest time seen, which makes out-of-order
//! input (merged files) safe.

mod analysis;
pub mod campaign;
pub mod classes;
pub mod distinct;
pub mod doc;
pub mod intern;
pub mod lru;
pub mod source;
pub mod timeseries;
pub mod tools;

use std::net::IpAddr;

use serde::Serialize;

use crate::{clock::rfc3339_micros, output::json::EventDoc};

pub use analysis::ObservationText;
use campaign::{CampaignKey, CampaignSummary, CampaignTable, CloseReason};
use classes::{
    METHODS, PacketIdClass, SourceIdClass, TTL_FAMILIES, behaviour_code, host_class_index,
    method_index, protocol_index, source_id_class, ttl_class, ttl_family,
};
use distinct::DistinctCounter;
use intern::{NameSet, Names, RecentNames, Symbols};
use source::{SourceRecord, SourceTable, flags, key_of};
use timeseries::Timeseries;
use tools::{HostClassCount, SensorTally, ToolTally, host_classes};

const NS: u64 = 1_000_000_000;
/// Tools tracked by name; more share `(other)`.
const MAX_TOOLS: usize = 256;
/// Sensors tracked by name (merged topics); more share `(other)`.
const MAX_SENSORS: usize = 64;
/// Rule ids, variants and categories.
const MAX_NAMES: usize = 4096;
/// Closed campaigns kept for the report (the largest), and waiting to be written.
const CLOSED_KEPT: usize = 256;
const CLOSED_QUEUE: usize = 4096;
/// Evicted sources kept for the report's top sources (the largest).
const EVICTED_KEPT: usize = 256;

/// Bounds and windows; every one of them is a flag of `sensor run`, `analyze` and `report`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AggregateConfig {
    /// Sources tracked at once; past it the least recently seen is evicted.
    pub max_sources: usize,
    /// Seconds without a packet after which a source's record is closed (0: never).
    pub source_idle_s: u64,
    /// A campaign stays open while its packets arrive less than this many seconds apart.
    pub campaign_window_s: u64,
    /// Campaigns open at once; past it the least recently active is closed.
    pub max_campaigns: usize,
}

impl Default for AggregateConfig {
    fn default() -> Self {
        Self {
            max_sources: 1_000_000,
            source_idle_s: 3600,
            campaign_window_s: 86_400,
            max_campaigns: 4096,
        }
    }
}

/// The aggregator's own accounting, in the `stats` document (`aggregate` object).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AggregateCounters {
    /// Events aggregated.
    pub events: u64,
    /// Source records created (a source that returns after eviction counts again).
    pub source_records: u64,
    pub sources_tracked: u64,
    pub max_sources: u64,
    pub sources_evicted_idle: u64,
    pub sources_evicted_capacity: u64,
    pub campaigns_opened: u64,
    pub campaigns_open: u64,
    pub campaigns_closed_window: u64,
    pub campaigns_closed_capacity: u64,
    /// Closed campaigns whose document could not be queued (the owner did not take them).
    pub campaign_documents_dropped: u64,
    /// Names (tools, rules, variants, sensors) beyond the tables' bounds, counted as `(other)`.
    pub names_overflowed: u64,
}

impl AggregateCounters {
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> {
        [
            ("events", self.events),
            ("source_records", self.source_records),
            ("sources_tracked", self.sources_tracked),
            ("max_sources", self.max_sources),
            ("sources_evicted_idle", self.sources_evicted_idle),
            ("sources_evicted_capacity", self.sources_evicted_capacity),
            ("campaigns_opened", self.campaigns_opened),
            ("campaigns_open", self.campaigns_open),
            ("campaigns_closed_window", self.campaigns_closed_window),
            ("campaigns_closed_capacity", self.campaigns_closed_capacity),
            (
                "campaign_documents_dropped",
                self.campaign_documents_dropped,
            ),
            ("names_overflowed", self.names_overflowed),
        ]
        .into_iter()
    }
}

/// The host a tool wrote in Via or Contact, as the fingerprint's inference classified it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostSeen<'a> {
    /// One of `classes::HOST_CLASSES`.
    pub class: &'static str,
    pub host: &'a str,
}

/// What the aggregator reads of one `sip_probe` event.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Observation<'a> {
    pub time_ns: u64,
    pub src_ip: IpAddr,
    pub src_port: u16,
    pub dest_ip: IpAddr,
    pub dest_port: u16,
    /// The names of closed vocabularies (transport, IP-ID classes, host classes) are the
    /// static names this version writes: the analyst threads hand them to the sink as they
    /// are, where a name borrowed from the message is copied.
    pub proto: &'static str,
    pub ttl: Option<u8>,
    /// IPv4 only.
    pub ip_id: Option<u16>,
    pub df: bool,
    /// The `sensor.name` of merged topics.
    pub sensor: Option<&'a str>,
    pub method: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub tool: &'a str,
    pub variant: Option<&'a str>,
    pub category: &'a str,
    pub rule: &'a str,
    pub template_hash: u64,
    /// `fingerprint.inferences.ip_id.packet`.
    pub id_packet: Option<&'static str>,
    /// `fingerprint.inferences.ip_id.source.behaviour`.
    pub id_behaviour: Option<&'static str>,
    /// `fingerprint.inferences.ttl.initial`.
    pub ttl_initial: Option<u8>,
    pub processes: Option<u32>,
    /// The port the tool binds first (`fingerprint.inferences.processes.base_port`).
    pub process_base: Option<u16>,
    pub via: Option<HostSeen<'a>>,
    pub contact: Option<HostSeen<'a>>,
}

/// The tool name of events without a fingerprint.
pub const UNKNOWN: &str = "unknown";

impl<'a> Observation<'a> {
    /// From the document the pipeline just wrote, and the event's time.
    pub fn from_doc(doc: &'a EventDoc<'_>, time_ns: u64) -> Self {
        let fp = doc.fingerprint.as_ref();
        let inf = fp.map(|f| &f.inferences);
        let host = |h: &'a crate::output::fingerprint::HostDoc| HostSeen {
            class: h.class,
            host: &h.host,
        };
        Observation {
            time_ns,
            src_ip: doc.src_ip,
            src_port: doc.src_port,
            dest_ip: doc.dest_ip,
            dest_port: doc.dest_port,
            proto: doc.proto,
            ttl: Some(doc.ip.ttl),
            ip_id: doc.ip.id,
            df: doc.ip.df,
            sensor: doc.sensor.map(|s| s.name.as_str()),
            method: doc.sip.as_ref().and_then(|s| s.method.as_deref()),
            user_agent: doc.sip.as_ref().and_then(|s| s.user_agent.as_deref()),
            tool: fp.map_or(UNKNOWN, |f| f.tool),
            variant: fp.and_then(|f| f.variant),
            category: fp.map_or(UNKNOWN, |f| f.category),
            rule: fp.map_or(UNKNOWN, |f| f.rule),
            template_hash: fp
                .and_then(|f| u64::from_str_radix(&f.template_hash, 16).ok())
                .unwrap_or(0),
            id_packet: inf
                .and_then(|i| i.ip_id.as_ref())
                .map(|i| i.packet)
                .or_else(|| {
                    doc.ip
                        .id
                        .map(|id| if id == 0 { "zero" } else { "non_zero" })
                }),
            id_behaviour: inf
                .and_then(|i| i.ip_id.as_ref())
                .and_then(|i| i.source.as_ref())
                .map(|s| s.behaviour),
            ttl_initial: inf.and_then(|i| i.ttl.as_ref()).map(|t| t.initial),
            processes: inf.and_then(|i| i.processes.as_ref()).map(|p| p.processes),
            process_base: inf.and_then(|i| i.processes.as_ref()).map(|p| p.base_port),
            via: inf.and_then(|i| i.via_host.as_ref()).map(host),
            contact: inf.and_then(|i| i.contact_host.as_ref()).map(host),
        }
    }
}

pub struct Aggregator {
    config: AggregateConfig,
    names: Names,
    tool_names: Names,
    sensor_names: Names,
    /// The symbols of recent observations' names, by template.
    recent_names: RecentNames,
    sources: SourceTable,
    campaigns: CampaignTable,
    /// Indexed by tool symbol.
    tools: Vec<ToolTally>,
    /// Indexed by sensor symbol.
    sensors: Vec<SensorTally>,
    series: Timeseries,
    all_sources: DistinctCounter,
    all_dests: DistinctCounter,
    first_ns: u64,
    last_ns: u64,
    watermark_ns: u64,
    closed_queue: Vec<CampaignSummary>,
    closed_kept: Vec<CampaignSummary>,
    evicted_kept: Vec<SourceSummary>,
    counters: AggregateCounters,
}

/// Keeps the `max` largest by `size`, merging an item into an equal one already kept.
fn keep_largest<T>(
    kept: &mut Vec<T>,
    item: T,
    max: usize,
    size: impl Fn(&T) -> u64,
    merge: impl Fn(&mut T, &T) -> bool,
) {
    for k in kept.iter_mut() {
        if merge(k, &item) {
            return;
        }
    }
    if kept.len() < max {
        kept.push(item);
        return;
    }
    if let Some((i, smallest)) = kept.iter().enumerate().min_by_key(|(_, k)| size(k))
        && size(smallest) < size(&item)
    {
        kept[i] = item;
    }
}

impl Default for Aggregator {
    fn default() -> Self {
        Self::new(AggregateConfig::default())
    }
}

impl Aggregator {
    pub fn new(config: AggregateConfig) -> Self {
        Self {
            config,
            names: Names::new(MAX_NAMES),
            tool_names: Names::new(MAX_TOOLS),
            sensor_names: Names::new(MAX_SENSORS),
            recent_names: RecentNames::default(),
            sources: SourceTable::new(config.max_sources),
            campaigns: CampaignTable::new(config.max_campaigns),
            tools: Vec::new(),
            sensors: Vec::new(),
            series: Timeseries::new(),
            all_sources: DistinctCounter::new(),
            all_dests: DistinctCounter::new(),
            first_ns: u64::MAX,
            last_ns: 0,
            watermark_ns: 0,
            closed_queue: Vec::new(),
            closed_kept: Vec::new(),
            evicted_kept: Vec::new(),
            counters: AggregateCounters::default(),
        }
    }

    pub fn config(&self) -> &AggregateConfig {
        &self.config
    }

    pub fn counters(&self) -> AggregateCounters {
        AggregateCounters {
            sources_tracked: self.sources.len() as u64,
            max_sources: self.sources.max_sources() as u64,
            campaigns_opened: self.campaigns.opened,
            campaigns_open: self.campaigns.len() as u64,
            names_overflowed: self.names.overflowed
                + self.tool_names.overflowed
                + self.sensor_names.overflowed,
            ..self.counters
        }
    }

    /// The hash distinct counters count. Fixed keys, so that a report over the same documents
    /// gives the same estimates every time (the source index, which a sender could aim at,
    /// keeps its own random keys).
    fn hash(&self, addr: IpAddr) -> u64 {
        distinct::address_hash(key_of(addr))
    }

    /// Closes sources idle for longer than the idle timeout and campaigns whose window has
    /// passed, as of `now_ns` (or the latest event time, if later).
    pub fn expire(&mut self, now_ns: u64) {
        self.watermark_ns = self.watermark_ns.max(now_ns);
        if self.config.source_idle_s > 0 {
            let cutoff = self
                .watermark_ns
                .saturating_sub(self.config.source_idle_s.saturating_mul(NS));
            while let Some(record) = self.sources.pop_idle(cutoff) {
                self.counters.sources_evicted_idle += 1;
                self.keep_evicted(&record);
            }
        }
        let cutoff = self
            .watermark_ns
            .saturating_sub(self.config.campaign_window_s.saturating_mul(NS));
        while let Some(campaign) = self.campaigns.pop_idle(cutoff) {
            self.close(&campaign, CloseReason::Window);
        }
    }

    fn close(&mut self, campaign: &campaign::Campaign, reason: CloseReason) {
        match reason {
            CloseReason::Window => self.counters.campaigns_closed_window += 1,
            CloseReason::Capacity => self.counters.campaigns_closed_capacity += 1,
        }
        let summary = CampaignSummary::new(
            campaign,
            &self.names,
            Some(reason),
            self.config.campaign_window_s,
        );
        if self.closed_queue.len() < CLOSED_QUEUE {
            self.closed_queue.push(summary.clone());
        } else {
            self.counters.campaign_documents_dropped += 1;
        }
        keep_largest(
            &mut self.closed_kept,
            summary,
            CLOSED_KEPT,
            |c| c.packets,
            |_, _| false,
        );
    }

    /// Keeps an evicted source for the report's top sources if it is among the largest (or was
    /// kept before). Sources churn at the packet rate in a darknet, so the common case, a small
    /// source that does not qualify, allocates nothing.
    fn keep_evicted(&mut self, record: &SourceRecord) {
        if let Some(i) = self.evicted_kept.iter().position(|k| k.key == record.addr) {
            let summary = self.source_summary(record);
            self.evicted_kept[i].merge(&summary);
            return;
        }
        if self.evicted_kept.len() >= EVICTED_KEPT
            && self
                .evicted_kept
                .iter()
                .all(|k| k.events >= u64::from(record.packets))
        {
            return;
        }
        let summary = self.source_summary(record);
        keep_largest(
            &mut self.evicted_kept,
            summary,
            EVICTED_KEPT,
            |s| s.events,
            |_, _| false,
        );
    }

    /// Campaigns closed since the last call, for their documents.
    pub fn take_closed(&mut self) -> Vec<CampaignSummary> {
        std::mem::take(&mut self.closed_queue)
    }

    /// The symbols of `o`'s names, from the recent ones or interned.
    fn name_symbols(&mut self, o: &Observation<'_>) -> Symbols {
        let names = NameSet::of(o);
        if let Some(symbols) = self.recent_names.get(o.template_hash, names) {
            return symbols;
        }
        let symbols = Symbols {
            tool: self.tool_names.intern(o.tool),
            // Campaigns name their tool from the larger table (tools beyond MAX_TOOLS still
            // read).
            campaign_tool: self.names.intern(o.tool),
            rule: self.names.intern(o.rule),
            variant: self.names.intern(o.variant.unwrap_or("")),
            category: self.names.intern(o.category),
        };
        if symbols.all_known() {
            self.recent_names.keep(o.template_hash, names, symbols);
        }
        symbols
    }

    /// Fetches ahead the source record [`observe`](Self::observe) will read for `source`.
    pub fn prefetch_source(&self, source: IpAddr) {
        self.sources.prefetch(source);
    }

    /// Fetches ahead the records [`observe`](Self::observe) will relink for `source`, whose own
    /// record was fetched ahead already ([`prefetch_source`](Self::prefetch_source)).
    pub fn prefetch_neighbours(&self, source: IpAddr) {
        self.sources.prefetch_neighbours(source);
    }

    pub fn observe(&mut self, o: &Observation<'_>) {
        let t = o.time_ns;
        self.counters.events += 1;
        self.first_ns = self.first_ns.min(t);
        self.last_ns = self.last_ns.max(t);
        self.expire(t);

        let Symbols {
            tool: tool_sym,
            campaign_tool: campaign_tool_sym,
            rule: rule_sym,
            variant: variant_sym,
            category: category_sym,
        } = self.name_symbols(o);
        let key = if o.rule.is_empty() || o.rule == UNKNOWN {
            CampaignKey::Template(o.template_hash)
        } else {
            CampaignKey::Rule(rule_sym)
        };
        let src_hash = self.hash(o.src_ip);
        let dest_hash = self.hash(o.dest_ip);
        self.all_dests.insert(dest_hash);

        let (cslot, campaign_new, closed) = self.campaigns.entry(key, t);
        if let Some(closed) = closed {
            self.close(&closed, CloseReason::Capacity);
        }
        if campaign_new {
            let c = self.campaigns.get_mut(cslot);
            c.tool = campaign_tool_sym;
            c.variant = variant_sym;
            c.rule = rule_sym;
            c.category = category_sym;
            c.template_hash = o.template_hash;
        }

        let (sslot, source_new, evicted) = self.sources.entry(o.src_ip, t);
        if let Some(evicted) = evicted {
            self.counters.sources_evicted_capacity += 1;
            self.keep_evicted(&evicted);
        }
        // A source with a record was counted when the record was made: the source-keyed
        // distinct counters below take a source's address only when it may be new to them.
        if source_new {
            self.counters.source_records += 1;
            self.all_sources.insert(src_hash);
        }

        // The source's record.
        let packet_class = PacketIdClass::of(o.id_packet, o.df);
        let family = ttl_family(o.ttl_initial, o.ttl);
        let method = method_index(o.method);
        let proto = protocol_index(o.proto);
        let sensor_sym = o.sensor.map(|s| self.sensor_names.intern(s));
        let r = self.sources.get_mut(sslot);
        let (old_id_class, old_ttl_class) = (r.id_class, r.ttl_class);
        let (old_campaign, old_tool) = (r.campaign_serial, r.tool);
        let old_processes = r.max_processes;
        let (old_via, old_contact) = (r.via_classes, r.contact_classes);
        r.packets = r.packets.saturating_add(1);
        r.first_ns = r.first_ns.min(t);
        r.last_ns = r.last_ns.max(t);
        r.dests.insert(dest_hash);
        r.src_port_min = r.src_port_min.min(o.src_port);
        r.src_port_max = r.src_port_max.max(o.src_port);
        r.flags |= match proto {
            0 => flags::UDP,
            1 => flags::TCP,
            _ => 0,
        };
        r.methods |= 1 << method;
        if let Some(ttl) = o.ttl {
            r.ttl_min = r.ttl_min.min(ttl);
            r.ttl_max = r.ttl_max.max(ttl);
        }
        if usize::from(family) < 4 {
            r.ttl_families |= 1 << family;
        }
        if let Some(id) = o.ip_id {
            r.v4_packets = r.v4_packets.saturating_add(1);
            if id == 0 {
                r.zero_id_packets = r.zero_id_packets.saturating_add(1);
                if o.df {
                    r.zero_id_df_packets = r.zero_id_df_packets.saturating_add(1);
                }
            }
            r.id_packet_classes |= packet_class.bit();
        }
        let behaviour = behaviour_code(o.id_behaviour);
        if behaviour != 0 {
            r.id_behaviour = behaviour;
        }
        if let Some(via) = &o.via {
            r.via_classes |= 1 << host_class_index(via.class);
        }
        if let Some(contact) = &o.contact {
            r.contact_classes |= 1 << host_class_index(contact.class);
        }
        if let Some(p) = o.processes {
            r.max_processes = r.max_processes.max(p.min(u32::from(u16::MAX)) as u16);
        }
        if let Some(s) = sensor_sym
            && s < 16
        {
            r.sensors |= 1 << s;
        }
        let id_class = source_id_class(
            r.v4_packets,
            r.zero_id_df_packets,
            r.zero_id_packets,
            r.id_packet_classes,
            r.id_behaviour,
        ) as u8;
        let ttl_cls = ttl_class(r.ttl_families);
        r.id_class = id_class;
        r.ttl_class = ttl_cls;
        let new_via = r.via_classes & !old_via;
        let new_contact = r.contact_classes & !old_contact;
        let now_multi_process = old_processes <= 1 && r.max_processes > 1;
        let now_has_processes = old_processes == 0 && r.max_processes > 0;
        let max_processes = u32::from(r.max_processes);

        // The campaign.
        let c = self.campaigns.get_mut(cslot);
        let serial = c.serial;
        c.packets += 1;
        c.first_ns = c.first_ns.min(t);
        c.last_ns = c.last_ns.max(t);
        // A source last counted in this campaign is in its counter already.
        let counted_here = !source_new && old_campaign == serial;
        let new_in_campaign = !counted_here && c.sources.insert(src_hash);
        c.dests.insert(dest_hash);
        c.methods[method] += 1;
        c.protocols[proto] += 1;
        c.id_packets[packet_class as usize] += 1;
        c.ttl_packets[usize::from(family)] += 1;
        c.max_processes = c.max_processes.max(o.processes.unwrap_or(0));
        if counted_here {
            move_count(&mut c.id_sources, old_id_class, id_class);
            move_count(&mut c.ttl_sources, old_ttl_class, ttl_cls);
        } else if new_in_campaign {
            // A source returning to a campaign it left keeps the class it was counted with.
            c.id_sources[usize::from(id_class)] += 1;
            c.ttl_sources[usize::from(ttl_cls)] += 1;
        }

        // The tool.
        if self.tools.len() <= usize::from(tool_sym) {
            self.tools
                .resize_with(usize::from(tool_sym) + 1, ToolTally::default);
        }
        let tool = &mut self.tools[usize::from(tool_sym)];
        if tool.packets == 0 {
            tool.first_ns = t;
            tool.category = category_sym;
        }
        tool.packets += 1;
        tool.first_ns = tool.first_ns.min(t);
        tool.last_ns = tool.last_ns.max(t);
        let counted_by_tool = !source_new && old_tool == tool_sym;
        let new_in_tool = !counted_by_tool && tool.sources.insert(src_hash);
        tool.variants.add(o.variant.unwrap_or(""));
        if let Some(ua) = o.user_agent {
            tool.user_agents.add(ua);
        }
        tool.methods[method] += 1;
        tool.id_packets[packet_class as usize] += 1;
        if o.ip_id.is_some() && o.df {
            tool.df_packets += 1;
        }
        tool.ttl_packets[usize::from(family)] += 1;
        if counted_by_tool {
            move_count(&mut tool.id_sources, old_id_class, id_class);
            move_count(&mut tool.ttl_sources, old_ttl_class, ttl_cls);
        } else if new_in_tool {
            tool.id_sources[usize::from(id_class)] += 1;
            tool.ttl_sources[usize::from(ttl_cls)] += 1;
        }
        for (new_bits, counts, examples, seen) in [
            (
                new_via,
                &mut tool.via_sources,
                &mut tool.via_examples,
                &o.via,
            ),
            (
                new_contact,
                &mut tool.contact_sources,
                &mut tool.contact_examples,
                &o.contact,
            ),
        ] {
            if new_bits != 0
                && let Some(seen) = seen
            {
                let class = host_class_index(seen.class);
                counts[class] += 1;
                ToolTally::add_example(examples, class as u8, seen.host);
            }
        }
        if now_multi_process {
            tool.multi_process_sources += 1;
        }
        if now_has_processes {
            tool.process_sources += 1;
        }
        if let Some(base) = o.process_base {
            tool.process_base = base;
        }
        tool.max_processes = tool.max_processes.max(max_processes);
        self.series.add(usize::from(tool_sym), t);

        // The sensor.
        let sensor_index = usize::from(sensor_sym.unwrap_or(0));
        if self.sensors.len() <= sensor_index {
            self.sensors
                .resize_with(sensor_index + 1, SensorTally::default);
        }
        let sensor = &mut self.sensors[sensor_index];
        if sensor.events == 0 {
            sensor.first_ns = t;
        }
        sensor.events += 1;
        sensor.first_ns = sensor.first_ns.min(t);
        sensor.last_ns = sensor.last_ns.max(t);
        sensor.sources.insert(src_hash);

        let r = self.sources.get_mut(sslot);
        if !source_new && old_tool != tool_sym {
            r.flags |= flags::MULTI_TOOL;
        }
        if !source_new && old_campaign != serial {
            r.flags |= flags::MULTI_CAMPAIGN;
        }
        r.tool = tool_sym;
        r.campaign_slot = cslot;
        r.campaign_serial = serial;
    }

    /// Every open campaign, as of now.
    pub fn open_campaigns(&self) -> Vec<CampaignSummary> {
        self.campaigns
            .iter()
            .map(|c| CampaignSummary::new(c, &self.names, None, self.config.campaign_window_s))
            .collect()
    }

    /// The largest campaigns, open and closed, most packets first.
    pub fn top_campaigns(&self, top: usize) -> Vec<CampaignSummary> {
        let mut all = self.open_campaigns();
        all.extend(self.closed_kept.iter().cloned());
        all.sort_by(|a, b| {
            b.packets
                .cmp(&a.packets)
                .then(b.sources.cmp(&a.sources))
                .then(a.first_ns.cmp(&b.first_ns))
                .then(a.id.cmp(&b.id))
        });
        all.truncate(top);
        all
    }

    fn source_summary(&self, r: &SourceRecord) -> SourceSummary {
        let methods = METHODS
            .iter()
            .enumerate()
            .filter(|(i, _)| r.methods & (1 << i) != 0)
            .map(|(_, m)| *m)
            .collect();
        let sensors = (0..16u16)
            .filter(|s| r.sensors & (1 << s) != 0)
            .map(|s| self.sensor_names.get(s).to_string())
            .collect();
        SourceSummary {
            key: r.addr,
            src_ip: r.address().to_string(),
            events: u64::from(r.packets),
            destinations: r.dests.count(),
            sensors,
            tools: vec![self.tool_names.get(r.tool).to_string()],
            multiple_tools: r.flags & flags::MULTI_TOOL != 0,
            multiple_campaigns: r.flags & flags::MULTI_CAMPAIGN != 0,
            first_seen: rfc3339_micros(r.first_ns),
            last_seen: rfc3339_micros(r.last_ns),
            src_ports: if r.src_port_min == r.src_port_max {
                r.src_port_min.to_string()
            } else {
                format!("{}-{}", r.src_port_min, r.src_port_max)
            },
            methods,
            ttl: if r.ttl_min > r.ttl_max {
                String::new()
            } else if r.ttl_min == r.ttl_max {
                r.ttl_min.to_string()
            } else {
                format!("{}-{}", r.ttl_min, r.ttl_max)
            },
            ttl_family: TTL_FAMILIES[usize::from(r.ttl_class)],
            ip_id: SourceIdClass::from_index(r.id_class).name(),
            max_processes: (r.max_processes > 0).then_some(u32::from(r.max_processes)),
            first_ns: r.first_ns,
            last_ns: r.last_ns,
        }
    }

    /// The sources with the most events, tracked or evicted (an evicted source that came back
    /// is merged with its earlier record).
    pub fn top_sources(&self, top: usize) -> Vec<SourceSummary> {
        if top == 0 {
            return Vec::new();
        }
        // The `top` largest tracked records, without sorting every source.
        let mut heap = std::collections::BinaryHeap::new();
        for (i, r) in self.sources.iter().enumerate() {
            heap.push(std::cmp::Reverse((r.packets, std::cmp::Reverse(r.addr), i)));
            if heap.len() > top {
                heap.pop();
            }
        }
        let tracked: Vec<&SourceRecord> = self.sources.iter().collect();
        let mut out: Vec<SourceSummary> = Vec::new();
        for std::cmp::Reverse((_, _, i)) in heap {
            out.push(self.source_summary(tracked[i]));
        }
        for evicted in &self.evicted_kept {
            if !out.iter_mut().any(|s| s.merge(evicted)) {
                out.push(evicted.clone());
            }
        }
        out.sort_by(|a, b| b.events.cmp(&a.events).then(a.src_ip.cmp(&b.src_ip)));
        out.truncate(top);
        out
    }

    /// Events per tool, as the tools' tallies count them (the sensor's metrics). Names come
    /// from the rules, so there are as many as the rule set has tools (beyond 256, the rest
    /// count as `(other)`).
    pub fn tool_events(&self) -> impl Iterator<Item = (&str, u64)> {
        self.tools
            .iter()
            .enumerate()
            .filter(|(_, t)| t.packets > 0)
            .map(|(sym, t)| (self.tool_names.get(sym as u16), t.packets))
    }

    /// Per tool, most packets first.
    pub fn tools(&self) -> Vec<ToolSummary> {
        let mut v: Vec<ToolSummary> = self
            .tools
            .iter()
            .enumerate()
            .filter(|(_, t)| t.packets > 0)
            .map(|(sym, t)| ToolSummary {
                name: self.tool_names.get(sym as u16).to_string(),
                series: sym,
                category: self.names.get(t.category).to_string(),
                events: t.packets,
                sources: t.sources.count(),
                sources_approximate: t.sources.is_approximate(),
                first_seen: rfc3339_micros(t.first_ns),
                last_seen: rfc3339_micros(t.last_ns),
                variants: t.variants.sorted(),
                other_variants: t.variants.others,
                user_agents: t.user_agents.sorted(),
                other_user_agents: t.user_agents.others,
                methods: METHODS
                    .iter()
                    .zip(t.methods)
                    .filter(|(_, n)| *n > 0)
                    .map(|(m, n)| (*m, n))
                    .collect(),
                ip_id_sources: nonzero(&SourceIdClass::NAMES, &t.id_sources),
                ip_id_packets: nonzero(&PacketIdClass::NAMES, &t.id_packets),
                ttl_sources: nonzero(&TTL_FAMILIES, &t.ttl_sources),
                via_hosts: host_classes(&t.via_sources, &t.via_examples),
                contact_hosts: host_classes(&t.contact_sources, &t.contact_examples),
                process_sources: t.process_sources,
                multi_process_sources: t.multi_process_sources,
                max_processes: t.max_processes,
                process_base: (t.process_base > 0).then_some(t.process_base),
                df_packets: t.df_packets,
                first_ns: t.first_ns,
                last_ns: t.last_ns,
            })
            .collect();
        v.sort_by(|a, b| b.events.cmp(&a.events).then(a.name.cmp(&b.name)));
        v
    }

    /// Per sensor (`-`: events without a sensor name), most events first.
    pub fn sensors(&self) -> Vec<SensorSummary> {
        let mut v: Vec<SensorSummary> = self
            .sensors
            .iter()
            .enumerate()
            .filter(|(_, s)| s.events > 0)
            .map(|(sym, s)| SensorSummary {
                name: if sym == 0 {
                    "-".to_string()
                } else {
                    self.sensor_names.get(sym as u16).to_string()
                },
                events: s.events,
                sources: s.sources.count(),
                first_seen: rfc3339_micros(s.first_ns),
                last_seen: rfc3339_micros(s.last_ns),
            })
            .collect();
        v.sort_by(|a, b| b.events.cmp(&a.events).then(a.name.cmp(&b.name)));
        v
    }

    pub fn totals(&self) -> Totals {
        let any = self.counters.events > 0;
        Totals {
            events: self.counters.events,
            sources: self.all_sources.count(),
            sources_approximate: self.all_sources.is_approximate(),
            destinations: self.all_dests.count(),
            destinations_approximate: self.all_dests.is_approximate(),
            first_ns: if any { self.first_ns } else { 0 },
            last_ns: self.last_ns,
        }
    }

    pub fn timeseries(&self) -> &Timeseries {
        &self.series
    }

    /// Heap bytes held by the aggregator's tables (an estimate from capacities).
    pub fn heap_bytes(&self) -> usize {
        self.sources.heap_bytes()
            + self.campaigns.heap_bytes()
            + self.tools.iter().map(ToolTally::heap_bytes).sum::<usize>()
            + self.series.heap_bytes()
            + self.all_sources.heap_bytes()
            + self.all_dests.heap_bytes()
    }
}

fn move_count(counts: &mut [u64], from: u8, to: u8) {
    if from != to {
        let f = &mut counts[usize::from(from)];
        *f = f.saturating_sub(1);
        counts[usize::from(to)] += 1;
    }
}

fn nonzero(names: &[&'static str], counts: &[u64]) -> Vec<(&'static str, u64)> {
    names
        .iter()
        .zip(counts)
        .filter(|(_, n)| **n > 0)
        .map(|(name, n)| (*name, *n))
        .collect()
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub events: u64,
    pub sources: u64,
    pub sources_approximate: bool,
    pub destinations: u64,
    pub destinations_approximate: bool,
    #[serde(skip)]
    pub first_ns: u64,
    #[serde(skip)]
    pub last_ns: u64,
}

/// One source, tracked or evicted.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SourceSummary {
    #[serde(skip)]
    key: [u8; 16],
    pub src_ip: String,
    pub events: u64,
    /// Estimated (a 32-byte sketch per source; near exact for a handful).
    pub destinations: u64,
    pub sensors: Vec<String>,
    /// The tool of its latest event.
    pub tools: Vec<String>,
    pub multiple_tools: bool,
    pub multiple_campaigns: bool,
    pub first_seen: String,
    pub last_seen: String,
    pub src_ports: String,
    pub methods: Vec<&'static str>,
    pub ttl: String,
    pub ttl_family: &'static str,
    pub ip_id: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_processes: Option<u32>,
    #[serde(skip)]
    pub first_ns: u64,
    #[serde(skip)]
    pub last_ns: u64,
}

impl SourceSummary {
    /// Folds `other` (the same address, an earlier or later record) into this one.
    fn merge(&mut self, other: &SourceSummary) -> bool {
        if self.key != other.key {
            return false;
        }
        self.events += other.events;
        self.destinations = self.destinations.max(other.destinations);
        for s in &other.sensors {
            if !self.sensors.contains(s) {
                self.sensors.push(s.clone());
            }
        }
        for t in &other.tools {
            if !self.tools.contains(t) {
                self.tools.push(t.clone());
            }
        }
        self.multiple_tools |= other.multiple_tools || self.tools.len() > 1;
        self.multiple_campaigns |= other.multiple_campaigns;
        if other.first_ns < self.first_ns {
            self.first_ns = other.first_ns;
            self.first_seen.clone_from(&other.first_seen);
        }
        if other.last_ns > self.last_ns {
            self.last_ns = other.last_ns;
            self.last_seen.clone_from(&other.last_seen);
        }
        for m in &other.methods {
            if !self.methods.contains(m) {
                self.methods.push(m);
            }
        }
        true
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ToolSummary {
    pub name: String,
    /// The tool's series in the timeseries.
    #[serde(skip)]
    pub series: usize,
    pub category: String,
    pub events: u64,
    pub sources: u64,
    pub sources_approximate: bool,
    pub first_seen: String,
    pub last_seen: String,
    pub variants: Vec<(String, u64)>,
    pub other_variants: u64,
    pub user_agents: Vec<(String, u64)>,
    pub other_user_agents: u64,
    pub methods: Vec<(&'static str, u64)>,
    pub ip_id_sources: Vec<(&'static str, u64)>,
    pub ip_id_packets: Vec<(&'static str, u64)>,
    pub ttl_sources: Vec<(&'static str, u64)>,
    pub via_hosts: Vec<HostClassCount>,
    pub contact_hosts: Vec<HostClassCount>,
    /// Sources with a process estimate, and those with more than one process.
    pub process_sources: u64,
    pub multi_process_sources: u64,
    pub max_processes: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_base: Option<u16>,
    /// IPv4 packets with DF set.
    pub df_packets: u64,
    #[serde(skip)]
    pub first_ns: u64,
    #[serde(skip)]
    pub last_ns: u64,
}

impl ToolSummary {
    pub fn id_sources(&self, class: SourceIdClass) -> u64 {
        self.ip_id_sources
            .iter()
            .find(|(n, _)| *n == class.name())
            .map_or(0, |(_, c)| *c)
    }

    pub fn id_packets(&self, class: PacketIdClass) -> u64 {
        self.ip_id_packets
            .iter()
            .find(|(n, _)| *n == class.name())
            .map_or(0, |(_, c)| *c)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SensorSummary {
    pub name: String,
    pub events: u64,
    pub sources: u64,
    pub first_seen: String,
    pub last_seen: String,
}

#[cfg(test)]
mod tests;
