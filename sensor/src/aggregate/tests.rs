use super::*;

const T0: u64 = 1_700_000_000;

fn obs<'a>(src: &str, t_s: u64, tool: &'a str, rule: &'a str) -> Observation<'a> {
    Observation {
        time_ns: t_s * NS,
        src_ip: src.parse().unwrap(),
        src_port: 5060,
        dest_ip: "203.0.113.10".parse().unwrap(),
        dest_port: 5060,
        proto: "udp",
        ttl: Some(52),
        ip_id: Some(0x1234),
        df: true,
        sensor: None,
        method: Some("OPTIONS"),
        user_agent: Some("friendly-scanner"),
        tool,
        variant: Some("svmap"),
        category: "scanner",
        rule,
        template_hash: 0xabcd,
        id_packet: Some("non_zero"),
        id_behaviour: None,
        ttl_initial: Some(64),
        processes: Some(1),
        process_base: Some(5060),
        via: None,
        contact: None,
    }
}

fn config(max_sources: usize, idle_s: u64, window_s: u64, max_campaigns: usize) -> AggregateConfig {
    AggregateConfig {
        max_sources,
        source_idle_s: idle_s,
        campaign_window_s: window_s,
        max_campaigns,
    }
}

#[test]
fn max_sources_is_respected_and_evictions_are_counted() {
    let mut a = Aggregator::new(config(100, 0, 86_400, 16));
    for i in 0..1000u32 {
        let src = std::net::Ipv4Addr::from(0xc633_6400 + i).to_string();
        a.observe(&obs(&src, T0 + u64::from(i), "sipvicious", "svmap"));
    }
    let c = a.counters();
    assert_eq!(c.sources_tracked, 100);
    assert_eq!(c.sources_evicted_capacity, 900);
    assert_eq!(c.sources_evicted_idle, 0);
    assert_eq!(c.source_records, 1000);
    // Distinct counts do not depend on the table: every source is counted once.
    assert_eq!(a.totals().sources, 1000);
    assert_eq!(a.top_campaigns(5)[0].sources, 1000);
    assert!(a.sources.iter().count() == 100);
}

#[test]
fn idle_sources_are_evicted_by_event_time() {
    let mut a = Aggregator::new(config(1000, 60, 86_400, 16));
    a.observe(&obs("198.51.100.1", T0, "sipvicious", "svmap"));
    a.observe(&obs("198.51.100.2", T0 + 30, "sipvicious", "svmap"));
    a.observe(&obs("198.51.100.3", T0 + 61, "sipvicious", "svmap"));
    let c = a.counters();
    assert_eq!((c.sources_tracked, c.sources_evicted_idle), (2, 1));
    // Out of order: an old event does not evict anything by itself.
    a.observe(&obs("198.51.100.4", T0 + 1, "sipvicious", "svmap"));
    assert_eq!(a.counters().sources_evicted_idle, 1);
    a.expire((T0 + 200) * NS);
    let c = a.counters();
    assert_eq!((c.sources_tracked, c.sources_evicted_idle), (0, 4));
    // The evicted sources stay in the top sources.
    assert_eq!(a.top_sources(10).len(), 4);
}

#[test]
fn a_returning_source_is_one_source() {
    let mut a = Aggregator::new(config(1000, 60, 86_400, 16));
    a.observe(&obs("198.51.100.1", T0, "sipvicious", "svmap"));
    a.observe(&obs("198.51.100.1", T0 + 1000, "sipvicious", "svmap"));
    assert_eq!(a.counters().source_records, 2);
    let top = a.top_sources(10);
    assert_eq!(top.len(), 1);
    assert_eq!(top[0].events, 2);
    assert_eq!(a.tools()[0].sources, 1);
    assert_eq!(a.top_campaigns(1)[0].ip_id.sources.values().sum::<u64>(), 1);
}

/// The distinct counters skip a source already counted in them (its record says it was): a
/// source that moves to another tool and campaign is counted there, and once only when it
/// comes back.
#[test]
fn a_source_moving_between_tools_is_counted_once_in_each() {
    let mut a = Aggregator::new(config(1000, 0, 86_400, 16));
    for (i, (tool, rule)) in [
        ("sipvicious", "svmap"),
        ("sipvicious", "svmap"),
        ("nmap", "nmap-options"),
        ("sipvicious", "svmap"),
        ("nmap", "nmap-options"),
    ]
    .into_iter()
    .enumerate()
    {
        a.observe(&obs("198.51.100.7", T0 + i as u64, tool, rule));
    }
    a.observe(&obs("198.51.100.8", T0 + 9, "nmap", "nmap-options"));
    let tools = a.tools();
    let sources = |name: &str| tools.iter().find(|t| t.name == name).unwrap().sources;
    assert_eq!((sources("sipvicious"), sources("nmap")), (1, 2));
    let campaigns = a.top_campaigns(5);
    let by_rule = |rule: &str| campaigns.iter().find(|c| c.key == rule).unwrap().sources;
    assert_eq!((by_rule("svmap"), by_rule("nmap-options")), (1, 2));
    assert_eq!(a.totals().sources, 2);
}

#[test]
fn campaigns_group_sources_by_rule_or_template_within_the_window() {
    let mut a = Aggregator::new(config(1000, 0, 3600, 16));
    // Two rules at once: two campaigns.
    a.observe(&obs(
        "198.51.100.1",
        T0,
        "sipvicious",
        "sipvicious-svmap-py2",
    ));
    a.observe(&obs(
        "198.51.100.2",
        T0 + 10,
        "sipvicious",
        "sipvicious-svmap-py2",
    ));
    a.observe(&obs(
        "198.51.100.3",
        T0 + 20,
        "nmap",
        "nmap-nse-sip-methods",
    ));
    // Unknown tools: grouped by template hash.
    let mut u1 = obs("198.51.100.4", T0 + 30, "unknown", "unknown");
    u1.template_hash = 1;
    let mut u2 = obs("198.51.100.5", T0 + 40, "unknown", "unknown");
    u2.template_hash = 1;
    let mut u3 = obs("198.51.100.6", T0 + 50, "unknown", "unknown");
    u3.template_hash = 2;
    for o in [u1, u2, u3] {
        a.observe(&o);
    }
    let open = a.open_campaigns();
    assert_eq!(open.len(), 4);
    let by_key = |k: &str| open.iter().find(|c| c.key == k).unwrap().clone();
    let sv = by_key("sipvicious-svmap-py2");
    assert_eq!((sv.packets, sv.sources, sv.destinations), (2, 2, 1));
    assert_eq!(sv.tool, "sipvicious");
    assert_eq!(sv.variant.as_deref(), Some("svmap"));
    assert_eq!(sv.methods["OPTIONS"], 2);
    assert_eq!(sv.state, "open");
    assert!(sv.id.starts_with("sipvicious-svmap-py2@"));
    assert_eq!(by_key("template:0000000000000001").sources, 2);
    assert_eq!(by_key("template:0000000000000002").sources, 1);

    // Past the window the campaign closes; the same rule later opens a new one.
    a.observe(&obs(
        "198.51.100.1",
        T0 + 50 + 3601,
        "sipvicious",
        "sipvicious-svmap-py2",
    ));
    let closed = a.take_closed();
    assert_eq!(closed.len(), 4, "every campaign idle for an hour closed");
    let old = closed
        .iter()
        .find(|c| c.key == "sipvicious-svmap-py2")
        .unwrap();
    assert_eq!(old.state, "closed");
    assert_eq!(old.close_reason, Some(CloseReason::Window));
    assert_eq!(old.packets, 2);
    assert!(a.take_closed().is_empty(), "taken once");
    let open = a.open_campaigns();
    assert_eq!(open.len(), 1);
    assert_eq!((open[0].packets, open[0].sources), (1, 1));
    assert_ne!(open[0].id, old.id);
    let c = a.counters();
    assert_eq!((c.campaigns_opened, c.campaigns_closed_window), (5, 4));
    // The report sees closed and open campaigns.
    assert_eq!(a.top_campaigns(10).len(), 5);
}

#[test]
fn campaign_table_is_bounded() {
    let mut a = Aggregator::new(config(1000, 0, 86_400, 3));
    for i in 0..10u64 {
        let mut o = obs("198.51.100.1", T0 + i, "unknown", "unknown");
        o.template_hash = i;
        a.observe(&o);
    }
    let c = a.counters();
    assert_eq!((c.campaigns_open, c.campaigns_closed_capacity), (3, 7));
    let closed = a.take_closed();
    assert_eq!(closed.len(), 7);
    assert!(
        closed
            .iter()
            .all(|c| c.close_reason == Some(CloseReason::Capacity))
    );
}

#[test]
fn ip_id_and_ttl_distributions_follow_each_source() {
    let mut a = Aggregator::new(config(1000, 0, 86_400, 16));
    let zero = |src: &'static str, t| {
        let mut o = obs(src, t, "sipvicious", "svmap");
        o.ip_id = Some(0);
        o.id_packet = Some("zero");
        o
    };
    a.observe(&zero("198.51.100.1", T0));
    a.observe(&zero("198.51.100.2", T0));
    a.observe(&obs("198.51.100.3", T0, "sipvicious", "svmap"));
    let mut windows = obs("198.51.100.4", T0, "sipvicious", "svmap");
    windows.ttl = Some(113);
    windows.ttl_initial = Some(128);
    a.observe(&windows);
    let c = &a.open_campaigns()[0];
    assert_eq!(c.ip_id.sources["zero_df"], 2);
    assert_eq!(c.ip_id.sources["non_zero"], 2);
    assert_eq!(c.ip_id.packets["zero_df"], 2);
    assert_eq!(c.ttl.sources["64"], 3);
    assert_eq!(c.ttl.sources["128"], 1);
    // Source 1 sends a non-zero ID: it is no longer a zero-ID source, and the engine's
    // sequence view moves it on.
    let mut later = obs("198.51.100.1", T0 + 5, "sipvicious", "svmap");
    later.id_behaviour = Some("random");
    a.observe(&later);
    let c = &a.open_campaigns()[0];
    assert_eq!(c.ip_id.sources["zero_df"], 1);
    assert_eq!(c.ip_id.sources["random"], 1);
    assert_eq!(c.ip_id.sources.values().sum::<u64>(), 4);
    let tool = &a.tools()[0];
    assert_eq!(tool.id_sources(SourceIdClass::ZeroDf), 1);
    assert_eq!(tool.id_packets(PacketIdClass::ZeroDf), 2);
    // IPv6: not applicable.
    let mut v6 = obs("2001:db8::1", T0 + 6, "sipvicious", "svmap");
    v6.ip_id = None;
    v6.id_packet = None;
    a.observe(&v6);
    assert_eq!(a.open_campaigns()[0].ip_id.sources["not_applicable"], 1);
}

#[test]
fn via_contact_leaks_and_processes_per_tool() {
    let mut a = Aggregator::new(config(1000, 0, 86_400, 16));
    for (src, port, via) in [
        ("198.51.100.1", 5060, "127.0.0.1"),
        ("198.51.100.2", 5063, "192.168.1.9"),
        ("198.51.100.2", 5063, "192.168.1.9"),
        ("198.51.100.3", 5061, "192.168.1.9"),
    ] {
        let mut o = obs(src, T0, "sipvicious", "svmap");
        o.src_port = port;
        o.processes = Some(u32::from(port - 5059));
        o.via = Some(HostSeen {
            class: if via.starts_with("127") {
                "loopback_unresolved"
            } else {
                "tool_constant"
            },
            host: via,
        });
        a.observe(&o);
    }
    let t = &a.tools()[0];
    assert_eq!(t.multi_process_sources, 2);
    assert_eq!(t.max_processes, 4);
    assert_eq!(t.via_hosts[0].class, "tool_constant");
    assert_eq!(t.via_hosts[0].sources, 2);
    assert_eq!(t.via_hosts[0].examples, ["192.168.1.9"]);
    assert_eq!(t.via_hosts[1].class, "loopback_unresolved");
    let top = a.top_sources(1);
    assert_eq!(top[0].src_ip, "198.51.100.2");
    assert_eq!(top[0].src_ports, "5063");
    assert_eq!(top[0].max_processes, Some(4));
}

/// Names kept by template answer only for the same names: observations that share a template
/// hash but not a name are each tallied under their own, and a table that is full counts every
/// lookup that overflowed it, as without the kept names.
#[test]
fn names_kept_by_template_are_checked_and_overflows_still_counted() {
    let mut a = Aggregator::new(config(1000, 0, 86_400, 16));
    let names = [
        ("t1", "r1", "v1", "c1"),
        ("t1", "r2", "v1", "c1"),
        ("t1", "r1", "v2", "c1"),
        ("t1", "r1", "v1", "c2"),
        ("t2", "r1", "v1", "c1"),
    ];
    for round in 0..3u64 {
        for (i, &(tool, rule, variant, category)) in names.iter().enumerate() {
            let o = Observation {
                variant: Some(variant),
                category,
                ..obs("198.51.100.7", T0 + round * 5 + i as u64, tool, rule)
            };
            a.observe(&o);
        }
    }
    let tools: std::collections::BTreeMap<&str, u64> = a.tool_events().collect();
    assert_eq!(tools, [("t1", 12), ("t2", 3)].into_iter().collect());
    let mut campaigns: Vec<(String, String, String, u64)> = a
        .top_campaigns(16)
        .into_iter()
        .map(|c| {
            (
                c.rule.clone(),
                c.variant.clone().unwrap_or_default(),
                c.category.clone(),
                c.packets,
            )
        })
        .collect();
    campaigns.sort();
    // Campaigns are keyed by rule: r1 opened with variant v1 and category c1.
    assert_eq!(
        campaigns,
        vec![
            ("r1".into(), "v1".into(), "c1".into(), 12),
            ("r2".into(), "v1".into(), "c1".into(), 3)
        ]
    );

    // Beyond MAX_TOOLS tools, every lookup of a new one overflows, under one template or not:
    // each tool twice in a row, as a scanner repeats its template.
    let mut a = Aggregator::new(config(1000, 0, 86_400, 16));
    let tools: Vec<String> = (0..MAX_TOOLS + 10).map(|i| format!("tool{i}")).collect();
    for (i, tool) in tools.iter().enumerate() {
        for repeat in 0..2u64 {
            a.observe(&obs("198.51.100.7", T0 + 2 * i as u64 + repeat, tool, "r1"));
        }
    }
    assert_eq!(a.counters().names_overflowed, 2 * 10);
}
