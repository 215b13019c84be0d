//! Attribution tests: the seeds' payloads must lead to the seed authors' conclusions, a packet
//! built per tool as the reference describes must be attributed to that tool with its evidence,
//! benign SIP must not be called a scanner, and hostile bytes must not break anything.

use std::net::IpAddr;

use sensor_common::{CaptureRecord, ip_flags, ip_proto, record_flags};

use super::{Engine, Fingerprint, Packet, SourceTracker, infer::HostClass, ipid::IpIdBehaviour};
use crate::{
    event::Event,
    record::{Record, Transport},
    sip::SipMessage,
};

fn engine() -> Engine {
    Engine::builtin().expect("built-in rules load")
}

struct Pkt {
    src: &'static str,
    dst: &'static str,
    sport: u16,
    dport: u16,
    ttl: u8,
    id: u16,
    df: bool,
    tcp: bool,
}

impl Default for Pkt {
    fn default() -> Self {
        Pkt {
            src: "198.51.100.7",
            dst: "192.0.2.10",
            sport: 5060,
            dport: 5060,
            ttl: 52,
            id: 0,
            df: true,
            tcp: false,
        }
    }
}

impl Pkt {
    fn packet(&self) -> Packet {
        Packet {
            src_ip: self.src.parse().unwrap(),
            dst_ip: self.dst.parse().unwrap(),
            src_port: self.sport,
            dst_port: self.dport,
            transport: if self.tcp {
                Transport::Tcp
            } else {
                Transport::Udp
            },
            ttl: self.ttl,
            ip_id: self.id,
            dont_fragment: self.df,
            ip_version: 4,
            tcp_seq: self.tcp.then_some(1),
        }
    }
}

fn classify<'e>(engine: &'e Engine, payload: &[u8], pkt: &Pkt) -> Fingerprint<'e> {
    let msg = SipMessage::parse(payload);
    engine.classify_packet(&msg, Some(pkt.packet()), None)
}

fn crlf(text: &str) -> Vec<u8> {
    let mut out = String::new();
    for line in text.lines() {
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.into_bytes()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SIPVicious createTag(): hex(payload + 0x01 + random decimal).
fn sv_tag(payload: &str, random: u32) -> String {
    hex(format!("{payload}\x01{random}").as_bytes())
}

fn has_evidence(fp: &Fingerprint<'_>, field: &str) -> bool {
    fp.evidence.iter().any(|e| e.field == field)
}

fn assert_tool(fp: &Fingerprint<'_>, tool: &str, rule: &str) {
    assert_eq!(
        (fp.tool(), fp.rule_id()),
        (tool, rule),
        "evidence: {:#?}\nalternatives: {:?}",
        fp.evidence,
        fp.alternatives
            .iter()
            .map(|a| (&a.rule.id, a.confidence))
            .collect::<Vec<_>>()
    );
    assert!(fp.confidence > 0.5, "{}", fp.confidence);
    // Never a bare label: every evidence item names the rule and the field.
    assert!(!fp.evidence.is_empty());
    for e in &fp.evidence {
        assert_eq!(e.rule, rule);
        assert!(!e.field.is_empty() && !e.test.is_empty());
    }
}

// -------------------------------------------------------------------------------------------
// First seed (000_3dea23a074adfe33.txt): the two payloads, exactly as printed there (including
// the blog's `> tag=` without a semicolon), destination obfuscated to 192.0.2.1 as in the text.

const SEED_PAYLOAD_1: &str = include_str!("../../../tests/corpus/seeds/seed1-payload1.txt");

const SEED_PAYLOAD_2: &str = include_str!("../../../tests/corpus/seeds/seed1-payload2.txt");

#[test]
fn seed_payload_1_is_stock_svmap_python2_unresolved_host() {
    let e = engine();
    let pkt = Pkt {
        src: "203.0.113.50",
        dst: "192.0.2.1",
        id: 0,
        df: true,
        ..Pkt::default()
    };
    let fp = classify(&e, &crlf(SEED_PAYLOAD_1), &pkt);
    assert_tool(&fp, "sipvicious", "sipvicious-svmap-py2");
    assert_eq!(fp.variant(), Some("svmap"));
    assert!(fp.version().unwrap().starts_with("python2-era"));
    assert!(fp.is_scanner());
    for field in [
        "header_order",
        "via.params",
        "sv_tag.kind",
        "user_agent",
        "from.display",
    ] {
        assert!(has_evidence(&fp, field), "{field}: {:#?}", fp.evidence);
    }
    assert!(fp.modifications.is_empty(), "{:?}", fp.modifications);

    // Via and Contact 127.0.0.1: the tool could not resolve its own name.
    let inf = &fp.inferences;
    let via = inf.via_host.as_ref().unwrap();
    assert_eq!(via.class, HostClass::LoopbackUnresolved);
    assert!(via.note.contains("could not resolve its own host name"));
    assert_eq!(
        inf.contact_host.as_ref().unwrap().class,
        HostClass::LoopbackUnresolved
    );

    // The From tag decodes to the target the scanner meant: the darknet address the blog
    // obfuscated to 192.0.2.1 in the request line is still in the tag.
    let tag = inf.tag.as_ref().unwrap();
    assert_eq!(tag.target.as_deref(), Some("69.17.22.74:5060"));
    assert_eq!(tag.matches_destination, Some(false));

    // Source port 5060: one process, no local SIP listener.
    let p = inf.processes.as_ref().unwrap();
    assert_eq!(p.processes, 1);
    assert!(p.note.contains("one scanner process"));

    // IP-ID 0 with DF: the seed's Linux reasoning, with the kernel caveat.
    let ipid = inf.ip_id.as_ref().unwrap();
    assert!(ipid.hints[0].contains("Linux"));
    assert!(ipid.caveats.iter().any(|c| c.contains("6.18")));

    // Sent to the address the tag names, the tag matches the destination.
    let direct = classify(
        &e,
        &crlf(SEED_PAYLOAD_1),
        &Pkt {
            dst: "69.17.22.74",
            ..Pkt::default()
        },
    );
    assert_eq!(
        direct.inferences.tag.unwrap().matches_destination,
        Some(true)
    );
}

#[test]
fn seed_payload_2_is_modified_svmap_with_hard_coded_local_address() {
    let e = engine();
    let pkt = Pkt {
        src: "203.0.113.51",
        dst: "192.0.2.1",
        id: 0x3a7c,
        df: true,
        ..Pkt::default()
    };
    let fp = classify(&e, &crlf(SEED_PAYLOAD_2), &pkt);
    assert_tool(&fp, "sipvicious", "sipvicious-svmap-mod-sundayddr");
    assert!(fp.variant().unwrap().contains("sundayddr"));
    assert!(fp.rule.unwrap().tags.contains(&"modified".to_string()));
    // Structure from svmap (the same header order and branch), identity edited.
    for field in [
        "via.params",
        "header_order",
        "user_agent",
        "from.display",
        "via.host",
    ] {
        assert!(has_evidence(&fp, field), "{field}: {:#?}", fp.evidence);
    }
    // 192.168.1.9 in every field: a hard-coded address, not NAT.
    let via = fp.inferences.via_host.as_ref().unwrap();
    assert_eq!(via.class, HostClass::ToolConstant);
    assert!(via.note.contains("hard-coded"));
    // The stock svmap tag is gone: nothing to decode.
    assert!(fp.inferences.tag.is_none());
    assert_eq!(fp.inferences.processes.as_ref().unwrap().processes, 1);
    // Non-zero IP-ID: not the classic Linux zero; BSD, NAT or a recent kernel.
    let ipid = fp.inferences.ip_id.as_ref().unwrap();
    assert!(ipid.hints[0].contains("BSD") && ipid.hints[0].contains("NAT"));

    // The same scan from source port 5084: about 25 concurrent processes.
    let payload = crlf(&SEED_PAYLOAD_2.replace("192.168.1.9:5060", "192.168.1.9:5084"));
    let fp = classify(
        &e,
        &payload,
        &Pkt {
            sport: 5084,
            ..Pkt::default()
        },
    );
    let p = fp.inferences.processes.as_ref().unwrap();
    assert_eq!(p.processes, 25);
    assert!(p.note.contains("about 25 concurrent"));
}

#[test]
fn seed_ip_id_reasoning_across_packets_of_one_source() {
    // The seed's IP-ID argument per source: a source that always sends 0 with DF reads as
    // older Linux; one whose IDs count up reads as a per-socket counter (recent Linux/BSD).
    let e = engine();
    let mut sources = SourceTracker::new(16);
    let payload = crlf(SEED_PAYLOAD_1);
    let msg = SipMessage::parse(&payload);
    let mut last = None;
    for id in [0u16, 0, 0] {
        let pkt = Pkt {
            id,
            ..Pkt::default()
        }
        .packet();
        let view = sources.observe(&pkt, 0);
        last = Some(e.classify_packet(&msg, Some(pkt), Some(view)));
    }
    let fp = last.take().unwrap();
    let ipid = fp.inferences.ip_id.unwrap();
    assert_eq!(ipid.source.unwrap().behaviour, IpIdBehaviour::Zero);
    assert!(
        ipid.hints
            .iter()
            .any(|h| h.contains("always sends IP-ID 0"))
    );

    for id in [7000u16, 7001, 7002] {
        let pkt = Pkt {
            src: "203.0.113.9",
            id,
            ..Pkt::default()
        }
        .packet();
        let view = sources.observe(&pkt, 0);
        last = Some(e.classify_packet(&msg, Some(pkt), Some(view)));
    }
    let ipid = last.unwrap().inferences.ip_id.unwrap();
    assert_eq!(
        ipid.source.unwrap().behaviour,
        IpIdBehaviour::Incrementing {
            step: 1,
            strict: true
        }
    );
}

// -------------------------------------------------------------------------------------------
// Second seed (004_3708bf2eee978841.txt): the three SIPScan requests. The document was
// flattened onto one line; line breaks are restored at header names and the branch's wrap
// (`...FBBC C449...`) is rejoined. Everything else is as printed, `Contact:` empty included.

const SIPSCAN_INVITE: &str = include_str!("../../../tests/corpus/seeds/seed2-sipscan-invite.txt");

const SIPSCAN_REGISTER: &str =
    include_str!("../../../tests/corpus/seeds/seed2-sipscan-register.txt");

const SIPSCAN_OPTIONS: &str = include_str!("../../../tests/corpus/seeds/seed2-sipscan-options.txt");

#[test]
fn sipscan_requests_of_the_second_seed() {
    let e = engine();
    let tcp = |sport| Pkt {
        src: "172.19.6.194",
        dst: "192.0.2.1",
        sport,
        tcp: true,
        ..Pkt::default()
    };
    let fp = classify(&e, &crlf(SIPSCAN_INVITE), &tcp(3326));
    assert_tool(&fp, "sipscan", "sipscan-invite");
    assert!(has_evidence(&fp, "call_id.num"), "Call-ID = local port");
    assert!(has_evidence(&fp, "sdp.s"));

    let fp = classify(&e, &crlf(SIPSCAN_REGISTER), &tcp(3327));
    assert_tool(&fp, "sipscan", "sipscan-register");
    // The malformed header names are evidence in their own right.
    assert!(has_evidence(&fp, "header:Max_forwards"));
    assert!(has_evidence(&fp, "name:User Agent"));
    assert!(has_evidence(&fp, "header:User Agent"));

    let fp = classify(&e, &crlf(SIPSCAN_OPTIONS), &tcp(3328));
    assert_tool(&fp, "sipscan", "sipscan-options");
    assert!(
        fp.evidence
            .iter()
            .any(|e| e.field == "call_id.num" && e.value == "1057")
    );
    // The Via host is the sender's private LAN address.
    // The Via host is the packet's source: sender and sensor on one LAN, no NAT between.
    assert_eq!(
        fp.inferences.via_host.unwrap().class,
        HostClass::SameAsSource
    );
}

// -------------------------------------------------------------------------------------------
// One packet per tool, built as shared/reference/scanner-fingerprints.md describes.

#[test]
fn svmap_python3_generated() {
    let e = engine();
    let payload = crlf(
        "OPTIONS sip:100@192.0.2.10 SIP/2.0
Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-3280387012;rport
Max-Forwards: 70
To: \"sipvicious\"<sip:100@1.1.1.1>
From: \"sipvicious\"<sip:100@1.1.1.1>;tag=63303030303230613133633401353737303930303337
User-Agent: friendly-scanner
Call-ID: 969890095556717129979978
Contact: sip:100@198.51.100.7:5060
CSeq: 1 OPTIONS
Accept: application/sdp
Content-Length: 0
",
    );
    let fp = classify(&e, &payload, &Pkt::default());
    assert_tool(&fp, "sipvicious", "sipvicious-svmap-py3");
    assert!(fp.version().unwrap().starts_with("python3-era"));
    let tag = fp.inferences.tag.as_ref().unwrap();
    assert_eq!(tag.target.as_deref(), Some("192.0.2.10:5060"));
    assert_eq!(tag.matches_destination, Some(true));
    assert_eq!(
        fp.inferences.via_host.as_ref().unwrap().class,
        HostClass::SameAsSource
    );
    // The Python 2 rule lost on header order: it must not even be an alternative.
    assert!(
        fp.alternatives
            .iter()
            .all(|a| a.rule.id != "sipvicious-svmap-py2")
    );
}

#[test]
fn svmap_modified_display_name_is_reported_as_a_modification() {
    let e = engine();
    let payload = crlf(&format!(
        "OPTIONS sip:100@192.0.2.10 SIP/2.0
Via: SIP/2.0/UDP 162.217.96.20:0;branch=z9hG4bK-1366198931;rport
Max-Forwards: 70
To: \"PBX\"<sip:100@1.1.1.1>
From: \"PBX\"<sip:100@1.1.1.1>;tag={}
User-Agent: friendly-scanner
Call-ID: 12345678901234567890
Contact: sip:100@162.217.96.20:0
CSeq: 1 OPTIONS
Accept: application/sdp
Content-Length: 0
",
        sv_tag("c000020a13c4", 55512)
    ));
    let fp = classify(
        &e,
        &payload,
        &Pkt {
            src: "162.217.96.20",
            sport: 41234,
            ..Pkt::default()
        },
    );
    assert_tool(&fp, "sipvicious", "sipvicious-svmap-py3");
    assert_eq!(fp.modifications.len(), 1);
    assert_eq!(fp.modifications[0].field, "from.display");
    assert_eq!(fp.modifications[0].value, "PBX");
    let via = fp.inferences.via_host.as_ref().unwrap();
    assert!(via.note.contains("port 0"));
    // Port 0 in Via and an ephemeral source port: no process estimate.
    assert!(fp.inferences.processes.is_none());
}

#[test]
fn svmap_compact_generated() {
    let e = engine();
    let payload = crlf(&format!(
        "OPTIONS sip:100@192.0.2.10 SIP/2.0
v: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-77;rport
t: \"sipvicious\"<sip:100@1.1.1.1>
f: \"sipvicious\"<sip:100@1.1.1.1>;tag={}
i: 123456789
m: sip:100@198.51.100.7:5060
CSeq: 1 OPTIONS
Max-Forwards: 70
Accept: application/sdp
Content-Length: 0
",
        sv_tag("c000020a13c4", 1)
    ));
    let fp = classify(&e, &payload, &Pkt::default());
    assert_tool(&fp, "sipvicious", "sipvicious-svmap-compact-py3");
}

#[test]
fn svwar_generated_python3_and_python2() {
    let e = engine();
    let tag = sv_tag("100", 2718281828);
    let py3 = crlf(&format!(
        "REGISTER sip:192.0.2.10 SIP/2.0
Via: SIP/2.0/UDP 127.0.1.1:5061;branch=z9hG4bK-1234567;rport
Max-Forwards: 70
To: \"100\"<sip:100@192.0.2.10>
From: \"100\"<sip:100@192.0.2.10>;tag={tag}
User-Agent: friendly-scanner
Call-ID: 1234567890
Contact: sip:100@192.0.2.10
CSeq: 1 REGISTER
Accept: application/sdp
Content-Length: 0
"
    ));
    let fp = classify(
        &e,
        &py3,
        &Pkt {
            sport: 5061,
            ..Pkt::default()
        },
    );
    assert_tool(&fp, "sipvicious", "sipvicious-svwar-py3");
    assert_eq!(
        fp.inferences.tag.as_ref().unwrap().extension.as_deref(),
        Some("100")
    );
    assert_eq!(
        fp.inferences.via_host.as_ref().unwrap().class,
        HostClass::DebianHostsFile
    );
    assert_eq!(fp.inferences.processes.as_ref().unwrap().processes, 2);

    let py2 = crlf(&format!(
        "REGISTER sip:100@192.0.2.10 SIP/2.0
Via: SIP/2.0/UDP 172.17.0.3:5060;branch=z9hG4bK-99;rport
Content-Length: 0
From: \"100\"<sip:100@192.0.2.10>; tag={tag}
Accept: application/sdp
User-Agent: friendly-scanner
To: \"100\"<sip:100@192.0.2.10>
Contact: sip:100@192.0.2.10
CSeq: 1 REGISTER
Call-ID: 55
Max-Forwards: 70
"
    ));
    let fp = classify(&e, &py2, &Pkt::default());
    assert_tool(&fp, "sipvicious", "sipvicious-svwar-py2");
    assert_eq!(
        fp.inferences.via_host.as_ref().unwrap().class,
        HostClass::DockerBridge
    );
}

#[test]
fn svcrack_generated_first_request_and_auth_retry() {
    let e = engine();
    let first = crlf(
        "REGISTER sip:192.0.2.10 SIP/2.0
Via: SIP/2.0/UDP 10.0.0.8:5060;branch=z9hG4bK-424242;rport
Max-Forwards: 70
To: \"100\" <sip:100@192.0.2.10>
From: \"100\" <sip:100@192.0.2.10>;tag=3206210844
User-Agent: friendly-scanner
Call-ID: 4242424242
Contact: sip:100@192.0.2.10
CSeq: 1 REGISTER
Accept: application/sdp
Content-Length: 0
",
    );
    let fp = classify(&e, &first, &Pkt::default());
    assert_tool(&fp, "sipvicious", "sipvicious-svcrack-py3");
    assert_eq!(
        fp.inferences.via_host.as_ref().unwrap().class,
        HostClass::Private
    );

    let retry = crlf(&format!(
        "REGISTER sip:192.0.2.10 SIP/2.0
Via: SIP/2.0/UDP 10.0.0.8:5060;branch=z9hG4bK-424243;rport
Max-Forwards: 70
To: \"100\" <sip:100@192.0.2.10>
From: \"100\" <sip:100@192.0.2.10>;tag={}
User-Agent: friendly-scanner
Call-ID: 4242424242
Contact: sip:100@192.0.2.10
CSeq: 2 REGISTER
Accept: application/sdp
Content-Length: 0
Authorization: Digest username=\"100\",realm=\"asterisk\",nonce=\"4f2a\",uri=\"sip:192.0.2.10\",algorithm=MD5,qop=auth,response=\"0123456789abcdef0123456789abcdef\"
",
        sv_tag("100:1234", 77)
    ));
    let fp = classify(&e, &retry, &Pkt::default());
    assert_tool(&fp, "sipvicious", "sipvicious-svcrack-py3");
    assert!(has_evidence(&fp, "header:Authorization"));
    let tag = fp.inferences.tag.as_ref().unwrap();
    assert_eq!(
        (tag.user.as_deref(), tag.password.as_deref()),
        (Some("100"), Some("1234"))
    );

    let py2 = crlf(
        "REGISTER sip:192.0.2.10 SIP/2.0
Via: SIP/2.0/UDP 10.0.0.8:5060;branch=z9hG4bK-1;rport
Content-Length: 0
From: \"100\" <sip:100@192.0.2.10>;tag=1876543210
Accept: application/sdp
User-Agent: friendly-scanner
To: \"100\" <sip:100@192.0.2.10>
Contact: sip:100@192.0.2.10
CSeq: 1 REGISTER
Call-ID: 77
Max-Forwards: 70
",
    );
    assert_tool(
        &classify(&e, &py2, &Pkt::default()),
        "sipvicious",
        "sipvicious-svcrack-py2",
    );
}

#[test]
fn asterisk_pbx_svwar_variant() {
    let e = engine();
    let payload = crlf(
        "REGISTER sip:192.0.2.10 SIP/2.0
Via: SIP/2.0/UDP 10.1.1.5:5060;branch=88y8n2p4U3;rport
Content-Length: 0
From: \"100\"<sip:100@192.0.2.10>;tag=as5f6e7d
Accept: application/sdp
User-Agent: Asterisk PBX
To: \"100\"<sip:100@192.0.2.10>
Contact: sip:100@192.0.2.10
CSeq: 1 REGISTER
Call-ID: 1234
Max-Forwards: 70
",
    );
    let fp = classify(&e, &payload, &Pkt::default());
    assert_tool(&fp, "sipvicious", "sipvicious-svwar-mod-asterisk-pbx");
    assert!(has_evidence(&fp, "via.branch"));
}

fn nmap_nse(method: &str, user: &str, expires: u32, extra: &str) -> Vec<u8> {
    let call_id = "aB3_".repeat(15);
    crlf(&format!(
        "{method} sip:192.0.2.10 SIP/2.0
Via: SIP/2.0/UDP 198.51.100.7:45123;rport;branch=z9hG4bKabcdefghijklmnopqrstuvwxy
Max-Forwards: 70
From: \"Nmap NSE\" <sip:{user}@192.0.2.10>;tag=ABCDEFGHIJKLMNOPQRST
To: \"Nmap NSE\" <sip:{user}@192.0.2.10>
Call-ID: {call_id}
CSeq: 1234 {method}
User-Agent: Nmap NSE
Contact: \"Nmap NSE\" <sip:{user}@198.51.100.7:45123>
Expires: {expires}
Allow: PRACK, INVITE ,ACK, BYE, CANCEL, UPDATE, SUBSCRIBE,NOTIFY, REFER, MESSAGE, OPTIONS
{extra}Content-Length:  0
"
    ))
}

#[test]
fn nmap_nse_scripts() {
    let e = engine();
    let pkt = Pkt {
        sport: 45123,
        ..Pkt::default()
    };
    let fp = classify(
        &e,
        &nmap_nse("OPTIONS", "user", 300, "Accept: application/sdp\r\n"),
        &pkt,
    );
    assert_tool(&fp, "nmap", "nmap-nse-sip-methods");
    assert!(
        fp.evidence
            .iter()
            .any(|e| e.field == "line:Content-Length" && e.value == "Content-Length:  0")
    );
    let fp = classify(&e, &nmap_nse("REGISTER", "101", 0, ""), &pkt);
    assert_tool(&fp, "nmap", "nmap-nse-sip-enum-users");
    let auth = "Authorization: Digest username=\"admin\", realm=\"asterisk\", nonce=\"1\", uri=\"sip:192.0.2.10\", response=\"0123456789abcdef0123456789abcdef\", algorithm=MD5\r\n";
    let fp = classify(&e, &nmap_nse("REGISTER", "admin", 0, auth), &pkt);
    assert_tool(&fp, "nmap", "nmap-nse-sip-brute");
    assert!(fp.inferences.processes.is_none());
}

const NMAP_PROBE_UDP: &str = "OPTIONS sip:nm SIP/2.0\r\nVia: SIP/2.0/UDP nm;branch=foo;rport\r\nFrom: <sip:nm@nm>;tag=root\r\nTo: <sip:nm2@nm2>\r\nCall-ID: 50000\r\nCSeq: 42 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\nContact: <sip:nm@nm>\r\nAccept: application/sdp\r\n\r\n";

#[test]
fn nmap_service_probes_udp_and_tcp() {
    let e = engine();
    let raw = Pkt {
        sport: 47201,
        ttl: 41,
        id: 31337,
        df: false,
        ..Pkt::default()
    };
    let fp = classify(&e, NMAP_PROBE_UDP.as_bytes(), &raw);
    assert_tool(&fp, "nmap", "nmap-service-probe-udp");
    assert!(
        fp.evidence
            .iter()
            .any(|e| e.field == "ip.ttl" && e.note.unwrap().contains("37..59"))
    );

    let tcp_payload = NMAP_PROBE_UDP.replace(
        "SIP/2.0/UDP nm;branch=foo;rport",
        "SIP/2.0/TCP nm;branch=foo",
    );
    let fp = classify(
        &e,
        tcp_payload.as_bytes(),
        &Pkt {
            tcp: true,
            ..Pkt::default()
        },
    );
    assert_tool(&fp, "nmap", "nmap-service-probe-tcp");

    let rfc = "OPTIONS sip:nm SIP/2.0\r\nVia: SIP/2.0/UDP nm;branch=foo;rport\r\nMax-Forwards: 70\r\nTo: <sip:nm@nm>\r\nFrom: <sip:nm@nm>;tag=root\r\nCall-ID: 50000\r\nCSeq: 63104 OPTIONS\r\nContact: <sip:nm@nm>\r\nAccept: application/sdp\r\nContent-Length: 0\r\n\r\n";
    let fp = classify(&e, rfc.as_bytes(), &raw);
    assert_eq!(fp.tool(), "nmap");
}

#[test]
fn sippts_generated() {
    let e = engine();
    let branch: String = "0123456789abcdefghijklmnopqqrstuvwxyz"
        .chars()
        .cycle()
        .take(71)
        .collect();
    let payload = crlf(&format!(
        "OPTIONS sip:100@192.0.2.10 SIP/2.0
Via: SIP/2.0/UDP 10.0.0.1:43211;branch={branch};rport
From:  <sip:100@192.0.2.10>;tag=1a2b3c4d
To:  <sip:100@192.0.2.10>
Contact: <sip:100@10.0.0.1:43211;transport=UDP>;expires=120
Call-ID: 0123456789abcdef0123456789abcdef
CSeq: 1 OPTIONS
Max-Forwards: 70
User-Agent: pplsip
Allow: INVITE, REGISTER, ACK, CANCEL, BYE, NOTIFY, REFER, OPTIONS, INFO, SUBSCRIBE, UPDATE, PRACK, MESSAGE
Content-Length: 0
"
    ));
    let fp = classify(
        &e,
        &payload,
        &Pkt {
            sport: 43211,
            ..Pkt::default()
        },
    );
    assert_tool(&fp, "sippts", "sippts");
    assert!(has_evidence(&fp, "sep:From"));
    assert!(fp.modifications.is_empty());
}

#[test]
fn sipsak_generated() {
    let e = engine();
    let c: u32 = 1_804_289_383 + 5060;
    let payload = crlf(&format!(
        "OPTIONS sip:100@192.0.2.10 SIP/2.0
Via: SIP/2.0/UDP scanner.example.net:5060;branch=z9hG4bK.6b8b4567;rport;alias
From: sip:sipsak@scanner.example.net:5060;tag={c:x}
To: sip:100@192.0.2.10
Call-ID: {c}@scanner.example.net
CSeq: 1 OPTIONS
Contact: sip:sipsak@scanner.example.net:5060
Content-Length: 0
Max-Forwards: 70
User-Agent: sipsak 0.9.8.1
Accept: text/plain
"
    ));
    let fp = classify(&e, &payload, &Pkt::default());
    assert_tool(&fp, "sipsak", "sipsak");
    assert_eq!(fp.category(), "dual-use");
    assert!(
        has_evidence(&fp, "from.tag.hexnum"),
        "tag == Call-ID number"
    );
    assert_eq!(
        fp.inferences.via_host.as_ref().unwrap().class,
        HostClass::Hostname
    );
}

#[test]
fn sipcli_generated() {
    let e = engine();
    let body = "v=0\r\no=sipcli-Session 1 1 IN IP4 198.51.100.7\r\ns=sipcli\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\nm=audio 8000 RTP/AVP 0\r\n";
    let payload = format!(
        "INVITE sip:100@192.0.2.10 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7:5071;branch=z9hG4bK-0123456789abcdef0123456789abcdef;rport\r\nFrom: 1<sip:1@192.0.2.10>;tag=2fd7b751\r\nTo: <sip:100@192.0.2.10>\r\nCall-ID: 9f8e7d6c5b4a\r\nCSeq: 1 INVITE\r\nContact: <sip:1@198.51.100.7:5071>\r\nAllow: INVITE, ACK, CANCEL, BYE\r\nUser-Agent: sipcli/v1.8\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let fp = classify(&e, payload.as_bytes(), &Pkt::default());
    assert_tool(&fp, "sipcli", "sipcli");
}

const SIPP_INVITE: &str = "INVITE sip:service@192.0.2.10:5060 SIP/2.0
Via: SIP/2.0/UDP 198.51.100.7:5061;branch=z9hG4bK-4242-1-0
From: sipp <sip:sipp@198.51.100.7:5061>;tag=4242SIPpTag001
To: service <sip:service@192.0.2.10:5060>
Call-ID: 1-4242@198.51.100.7
CSeq: 1 INVITE
Contact: sip:sipp@198.51.100.7:5061
Max-Forwards: 70
Subject: Performance Test
Content-Type: application/sdp
Content-Length: 0
";

#[test]
fn sipp_uac_is_identified_and_a_sipp_call_is_not_a_scanner() {
    let e = engine();
    let fp = classify(&e, &crlf(SIPP_INVITE), &Pkt::default());
    assert_tool(&fp, "sipp", "sipp-default-scenario");
    assert!(!fp.is_scanner());
    // The rest of a UAC<->UAS call: responses, ACK, BYE.
    let ok = "SIP/2.0 200 OK
Via: SIP/2.0/UDP 198.51.100.7:5061;branch=z9hG4bK-4242-1-0
From: sipp <sip:sipp@198.51.100.7:5061>;tag=4242SIPpTag001
To: service <sip:service@192.0.2.10:5060>;tag=4243SIPpTag011
Call-ID: 1-4242@198.51.100.7
CSeq: 1 INVITE
Contact: <sip:192.0.2.10:5060;transport=UDP>
Content-Length: 0
";
    let ack = SIPP_INVITE
        .replace("INVITE sip", "ACK sip")
        .replace("1 INVITE", "1 ACK");
    let bye = SIPP_INVITE
        .replace("INVITE sip", "BYE sip")
        .replace("1 INVITE", "2 BYE");
    for msg in [ok, &ack, &bye] {
        let fp = classify(&e, &crlf(msg), &Pkt::default());
        assert!(!fp.is_scanner(), "{} {}", fp.rule_id(), msg);
        assert_eq!(fp.tool(), "sipp");
    }
}

#[test]
fn kamailio_keepalive_is_benign() {
    let e = engine();
    let payload = crlf(
        "OPTIONS sip:192.0.2.20:5060 SIP/2.0
Via: SIP/2.0/UDP 192.0.2.5;branch=z9hG4bK1c3b.6e6ba7a6000000000000000000000000.0
To: <sip:192.0.2.20:5060>
From: <sip:dispatcher@localhost>;tag=8a1f63a77e8ab6d0e8e8bb5b3a6d0e2c-7c4b
CSeq: 10 OPTIONS
Call-ID: 1a4c3f5b2e6d7a8c-12345@192.0.2.5
Max-Forwards: 70
Content-Length: 0
User-Agent: kamailio (5.7.4 (x86_64/linux))
",
    );
    let fp = classify(&e, &payload, &Pkt::default());
    assert_tool(&fp, "kamailio", "kamailio-keepalive");
    assert_eq!(fp.category(), "benign");
    assert!(!fp.is_scanner());
    // No keepalive is mistaken for any scanner rule, even as an alternative.
    assert!(
        fp.alternatives
            .iter()
            .all(|a| a.rule.category != super::Category::Scanner)
    );
}

const MASSCAN: &str = "OPTIONS sip:carol@chicago.com SIP/2.0\r\nVia: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKhjhs8ass877\r\nMax-Forwards: 70\r\nTo: <sip:carol@chicago.com>\r\nFrom: Alice <sip:alice@atlanta.com>;tag=1928301774\r\nCall-ID: a84b4c76e66710\r\nCSeq: 63104 OPTIONS\r\nContact: <sip:alice@pc33.atlanta.com>\r\nAccept: application/sdp\r\nContent-Length: 0\r\n";

#[test]
fn masscan_static_payload() {
    let e = engine();
    let pkt = Pkt {
        sport: 41234,
        ttl: 249,
        id: 0x5a5a,
        df: false,
        ..Pkt::default()
    };
    let fp = classify(&e, MASSCAN.as_bytes(), &pkt);
    assert_tool(&fp, "masscan", "masscan");
    assert!(has_evidence(&fp, "ip.ttl"));
    assert_eq!(fp.inferences.ttl.as_ref().unwrap().initial, 255);
    // The same RFC example with its final blank line is not masscan.
    let with_blank = format!("{MASSCAN}\r\n");
    assert_eq!(
        classify(&e, with_blank.as_bytes(), &pkt).rule_id(),
        "rfc3261-example-copy"
    );
}

#[test]
fn zmap_template_and_seven_byte_probe() {
    let e = engine();
    let payload = "OPTIONS sip:qwertyui@192.0.2.10 SIP/2.0\nVia: SIP/2.0/UDP 198.51.100.7:51515;branch=abcdef.0123456789;rport;alias\nFrom: sip:asdfghjk@198.51.100.7:51515;tag=12345678\nTo: sip:zxcvbnmq@192.0.2.10\nCall-ID: 9876543210@198.51.100.7\nCSeq: 1 OPTIONS\nContact: sip:poiuytre@198.51.100.7:51515\nContent-Length: 0\nMax-Forwards: 20\nUser-Agent: lkjhgfds\nAccept: text/plain\n\n";
    let old = Pkt {
        sport: 51515,
        ttl: 247,
        id: 54321,
        df: false,
        ..Pkt::default()
    };
    let fp = classify(&e, payload.as_bytes(), &old);
    assert_tool(&fp, "zmap", "zmap-sip-template-pre41");
    assert!(has_evidence(&fp, "line_endings"));
    assert!(fp.inferences.ip_id.as_ref().unwrap().hints[0].contains("zmap"));
    let new = Pkt {
        ttl: 60,
        id: 1234,
        ..old
    };
    assert_tool(
        &classify(&e, payload.as_bytes(), &new),
        "zmap",
        "zmap-sip-template",
    );

    let fp = classify(&e, b"OPTIONS", &old);
    assert_tool(&fp, "zmap", "zmap-sip-7byte-pre41");
    assert_eq!(SipMessage::parse(b"OPTIONS").kind().as_str(), "bare_method");
    assert_tool(&classify(&e, b"OPTIONS", &new), "zmap", "zmap-sip-7byte");
}

// -------------------------------------------------------------------------------------------
// Unknown tools cluster by template; rules are data an operator can extend.

fn invented_tool(user: &str, tag: &str, call_id: &str) -> Vec<u8> {
    crlf(&format!(
        "OPTIONS sip:{user}@192.0.2.10 SIP/2.0
Via: SIP/2.0/UDP 198.51.100.7:5070;branch=z9hG4bKx{tag}
From: <sip:probe@198.51.100.7>;tag={tag}
To: <sip:{user}@192.0.2.10>
Call-ID: {call_id}
CSeq: 7 OPTIONS
X-Probe: yes
Content-Length: 0
"
    ))
}

#[test]
fn unknown_tool_clusters_by_template() {
    let e = engine();
    let a = classify(&e, &invented_tool("200", "91ab", "77712"), &Pkt::default());
    let b = classify(&e, &invented_tool("31337", "0fe", "5"), &Pkt::default());
    assert_eq!(a.tool(), "unknown");
    assert_eq!(a.category(), "unknown");
    assert_eq!(a.confidence, 0.0);
    assert_eq!(a.template, b.template);
    assert_eq!(a.evidence[0].field, "template");
    assert_eq!(a.evidence[0].value, a.template.hex());
    assert!(a.template_text.as_ref().unwrap().contains("X-Probe: a"));
    let other = classify(&e, &crlf(SIPP_INVITE), &Pkt::default());
    assert_ne!(a.template, other.template);
}

#[test]
fn operator_rules_extend_the_builtin_set_without_recompiling() {
    let extra = r#"
format = 1
ruleset = "local-1"

[[rule]]
id = "local-x-probe"
tool = "x-probe"
confidence = 0.7
require = [ { field = "header:X-Probe", equals = "yes", note = "seen in our darknet" } ]
"#;
    let e =
        Engine::from_texts(&[(super::BUILTIN_RULES, "builtin"), (extra, "local.toml")]).unwrap();
    assert_eq!(e.ruleset(), "builtin-2026.05+local-1");
    let fp = classify(&e, &invented_tool("1", "2", "3"), &Pkt::default());
    assert_tool(&fp, "x-probe", "local-x-probe");
    assert_eq!(fp.evidence[0].note, Some("seen in our darknet"));

    let clash = extra.replace("local-x-probe", "sipsak");
    let err = Engine::from_texts(&[(super::BUILTIN_RULES, "builtin"), (&clash, "local.toml")])
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("local.toml") && err.contains("\"sipsak\"") && err.contains("builtin"),
        "{err}"
    );

    let missing = Engine::load(Some(std::path::Path::new("/nonexistent/rules.toml")))
        .err()
        .unwrap()
        .to_string();
    assert!(missing.contains("/nonexistent/rules.toml"), "{missing}");
}

#[test]
fn builtin_rules_are_well_formed() {
    let e = engine();
    assert!(e.rules().len() >= 30);
    for r in e.rules() {
        assert!(!r.tool.is_empty());
        assert!((0.0..=1.0).contains(&r.confidence));
    }
    for tool in [
        "sipvicious",
        "nmap",
        "sippts",
        "sipsak",
        "sipcli",
        "sipp",
        "masscan",
        "zmap",
        "sipscan",
        "kamailio",
    ] {
        assert!(e.rules().iter().any(|r| r.tool == tool), "{tool}");
    }
}

// -------------------------------------------------------------------------------------------
// Hostile input: never panic, and every string that leaves the engine is printable ASCII.

fn assert_printable(s: &str) {
    assert!(
        s.bytes().all(|b| (0x20..0x7f).contains(&b)),
        "unescaped byte in {s:?}"
    );
}

fn assert_all_printable(fp: &Fingerprint<'_>) {
    for e in fp.evidence.iter().chain(&fp.modifications) {
        assert_printable(&e.value);
        assert!(e.value.len() < 4096);
    }
    if let Some(t) = &fp.template_text {
        assert_printable(t);
    }
    let inf = &fp.inferences;
    for h in [&inf.via_host, &inf.contact_host].into_iter().flatten() {
        assert_printable(&h.host);
    }
    if let Some(t) = &inf.tag {
        assert_printable(&t.decoded);
    }
}

#[test]
fn hostile_payloads_never_panic_and_come_out_escaped() {
    let e = engine();
    let mut cases: Vec<Vec<u8>> = vec![
        b"OPTIONS sip:100@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP \x1b[31m1.2.3.4\x1b[0m:5060;branch=z9hG4bK-1;rport\r\nUser-Agent: \x1b]0;pwned\x07\x1b[2J friendly-scanner\r\nFrom: \"\x00\x01\x02\"<sip:\x7f@1.1.1.1>;tag=\x9b\xff\r\nContent-Length: 0\r\n\r\n".to_vec(),
        b"OPTIONS sip:a SIP/2.0\r\nVia: \x00\x00\x00\r\n\r\n".to_vec(),
        (0..=255u8).cycle().take(4096).collect(),
        vec![0xff; 1024],
        Vec::new(),
    ];
    let mut huge = b"OPTIONS sip:a SIP/2.0\r\nUser-Agent: ".to_vec();
    huge.extend(std::iter::repeat_n(b'\x1b', 100_000));
    huge.extend_from_slice(b"\r\n\r\n");
    cases.push(huge);
    let mut many = b"REGISTER sip:a SIP/2.0\r\n".to_vec();
    for i in 0..10_000 {
        many.extend_from_slice(format!("Via: SIP/2.0/UDP 10.0.0.{}:5060\r\n", i % 256).as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    cases.push(many);
    // Deterministic pseudo-random mutations of real payloads.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for base in [
        crlf(SEED_PAYLOAD_1),
        crlf(SIPSCAN_INVITE),
        MASSCAN.as_bytes().to_vec(),
    ] {
        for _ in 0..300 {
            let mut m = base.clone();
            for _ in 0..8 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let i = (seed as usize) % m.len();
                m[i] = (seed >> 32) as u8;
            }
            seed ^= seed << 13;
            m.truncate((seed as usize) % (m.len() + 1));
            cases.push(m);
        }
    }
    let mut sources = SourceTracker::new(4);
    for (n, payload) in cases.iter().enumerate() {
        for cut in [false, true] {
            let msg = SipMessage::parse_captured(payload, cut);
            let pkt = Pkt {
                id: n as u16,
                ..Pkt::default()
            }
            .packet();
            let view = sources.observe(&pkt, n as u64);
            let fp = e.classify_packet(&msg, Some(pkt), Some(view));
            assert_all_printable(&fp);
            let doc = crate::output::fingerprint::FingerprintDoc::new(&fp);
            let sip = crate::output::sip::SipDoc::new(&msg);
            let json = serde_json::to_string(&(doc, sip)).unwrap();
            assert_printable(&json);
            assert!(json.len() < 64 * 1024, "{} bytes", json.len());
        }
    }
}

// -------------------------------------------------------------------------------------------
// Through a real record and event, as the agent calls it.

fn record_for(payload: &[u8], truncated_by: u16) -> Box<CaptureRecord> {
    let mut r = Box::new(CaptureRecord::zeroed());
    r.ip_version = 4;
    r.l4_proto = ip_proto::UDP;
    r.src_addr[..4].copy_from_slice(&[203, 0, 113, 50]);
    r.dst_addr[..4].copy_from_slice(&[69, 17, 22, 74]);
    r.src_port = 5060;
    r.dst_port = 5060;
    r.ttl = 49;
    r.ip_id = 0;
    r.ip_flags = ip_flags::DF;
    r.flags = record_flags::MATCHED_DST_PORT;
    let n = payload.len().min(r.payload.len());
    r.payload[..n].copy_from_slice(&payload[..n]);
    r.captured_len = n as u16;
    r.payload_len = n as u16 + truncated_by;
    r
}

#[test]
fn classify_from_an_event() {
    let e = engine();
    let payload = crlf(SEED_PAYLOAD_1);
    let raw = record_for(&payload, 0);
    let record = Record::new(&raw).unwrap();
    let event = Event { record, wall_ns: 1 };
    let msg = SipMessage::parse_captured(record.payload(), record.payload_truncated());
    let mut sources = SourceTracker::new(8);
    let fp = e.classify_tracked(&event, &msg, &mut sources);
    assert_tool(&fp, "sipvicious", "sipvicious-svmap-py2");
    assert_eq!(
        fp.inferences.tag.as_ref().unwrap().matches_destination,
        Some(true)
    );
    let ttl = fp.inferences.ttl.as_ref().unwrap();
    assert_eq!((ttl.initial, ttl.hops), (64, 15));
    assert_eq!(sources.len(), 1);
    let src: IpAddr = "203.0.113.50".parse().unwrap();
    assert_eq!(record.src_ip(), src);

    // Cut at a 300-byte prefix: marked truncated, and still attributed on what survived (the
    // header order holds as far as it goes; the cut line is left out).
    let raw = record_for(&payload[..300], (payload.len() - 300) as u16);
    let record = Record::new(&raw).unwrap();
    let msg = SipMessage::parse_captured(record.payload(), record.payload_truncated());
    assert!(msg.truncated());
    let event = Event { record, wall_ns: 2 };
    let fp = e.classify(&event, &msg);
    assert_tool(&fp, "sipvicious", "sipvicious-svmap-py2");
    // Cut inside the From tag: only the display name is left, a weak (0.5) identity-only hint.
    let raw = record_for(&payload[..180], 200);
    let record = Record::new(&raw).unwrap();
    let msg = SipMessage::parse_captured(record.payload(), record.payload_truncated());
    let fp = e.classify(&Event { record, wall_ns: 3 }, &msg);
    assert_eq!(fp.rule_id(), "ua-only-sipvicious");
    assert_eq!(fp.confidence, 0.5);
    assert_all_printable(&fp);
}

#[test]
fn event_document_carries_sip_and_fingerprint_objects() {
    let e = engine();
    let payload = crlf(SEED_PAYLOAD_2);
    let raw = record_for(&payload, 0);
    let record = Record::new(&raw).unwrap();
    let event = Event { record, wall_ns: 1 };
    let mut sources = SourceTracker::new(8);
    let doc = crate::output::json::EventDoc::analyzed(&event, &e, &mut sources);
    let json = serde_json::to_value(&doc).unwrap();
    assert_eq!(json["sip"]["kind"], "sip_request");
    assert_eq!(json["sip"]["user_agent"], "sundayddr");
    assert_eq!(json["sip"]["header_order"][1], "Content-Length");
    assert_eq!(json["fingerprint"]["tool"], "sipvicious");
    assert_eq!(
        json["fingerprint"]["rule"],
        "sipvicious-svmap-mod-sundayddr"
    );
    assert_eq!(
        json["fingerprint"]["inferences"]["via_host"]["class"],
        "tool_constant"
    );
    assert_eq!(
        json["fingerprint"]["inferences"]["ip_id"]["source"]["packets"],
        1
    );
    // Without analysis the objects are absent, not null.
    let plain = serde_json::to_value(crate::output::json::EventDoc::new(&event)).unwrap();
    assert!(plain.get("sip").is_none() && plain.get("fingerprint").is_none());
}
