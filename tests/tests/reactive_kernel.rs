//! The reactive TCP responder in the real kernel (BPF_PROG_TEST_RUN): the SYN-ACK built from a
//! crafted SYN is byte-exact (its checksums checked by etherparse, an independent parser), cookies
//! validate and expire, out-of-scope SYNs pass untouched, the reflector limit holds, and with the
//! responder off nothing is ever transmitted.

use std::time::Duration;

use etherparse::{NetHeaders, PacketHeaders, TransportHeader};
use sensor::capture::{PortSet, XdpVerdict, parse_prefixes};
use sensor_common::{Counter, MatchAction, ReactivePolicy, SensorConfig, record_flags};
use sensor_tests::{
    frames::{Frame, L4, LINUX_SYN_OPTIONS, TCP_ACK, TCP_PSH, TCP_SYN},
    harness::Harness,
};

/// What a Linux server answers to a Linux SYN (MSS, SACK permitted, timestamps, window scale):
/// MSS, SACK permitted packed before timestamps (TSval = the cookie, TSecr = the client's TSval),
/// window scale 7.
fn synack_options(v4: bool, cookie: u32, client_tsval: u32) -> Vec<u8> {
    let mut o = vec![2, 4];
    o.extend_from_slice(&(if v4 { 1460u16 } else { 1440 }).to_be_bytes());
    o.extend_from_slice(&[4, 2, 8, 10]);
    o.extend_from_slice(&cookie.to_be_bytes());
    o.extend_from_slice(&client_tsval.to_be_bytes());
    o.extend_from_slice(&[1, 3, 3, 7]);
    o
}

/// The client's TSval in LINUX_SYN_OPTIONS.
const CLIENT_TSVAL: u32 = 0x0001_0203;
/// nmap -sS offers only an MSS.
const NMAP_SYN_OPTIONS: [u8; 4] = [2, 4, 5, 0xb4];
const REQUEST: &[u8] = b"OPTIONS sip:nm SIP/2.0\r\nVia: SIP/2.0/TCP nm;branch=foo\r\n\r\n";

fn responder(policy: ReactivePolicy, action: MatchAction, cookie_shift: Option<u32>) -> Harness {
    let mut config = SensorConfig::new(action, false, 1024).with_reactive(policy, 10, 10);
    if let Some(shift) = cookie_shift {
        config.cookie_shift = shift;
    }
    let mut h = Harness::with(config, &PortSet::default(), 1 << 20);
    h.program
        .set_reactive_prefixes(&parse_prefixes("203.0.113.0/24,2001:db8:dead::/48").unwrap())
        .unwrap();
    h.program
        .set_cookie_secret(0, [0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210])
        .unwrap();
    h.program.set_cookie_secret(1, [7, 8]).unwrap();
    h
}

fn syn(src: &str, dst: &str) -> Frame {
    let mut f = Frame::tcp(src, dst, 41000, 5060, TCP_SYN, &LINUX_SYN_OPTIONS);
    f.ip_id = 777;
    f.ttl = 52;
    if let L4::Tcp { seq, .. } = &mut f.l4 {
        *seq = 0x1000_0000;
    }
    f
}

/// The reply the responder must send to `syn`, given the cookie it chose.
fn expected_synack(syn: &Frame, cookie: u32) -> Vec<u8> {
    let isn = match &syn.l4 {
        L4::Tcp { seq, .. } => *seq,
        _ => unreachable!(),
    };
    let v4 = syn.src.is_ipv4();
    let options = match &syn.l4 {
        L4::Tcp { options, .. } if options.as_slice() == LINUX_SYN_OPTIONS => {
            synack_options(v4, cookie, CLIENT_TSVAL)
        }
        L4::Tcp { options, .. } if options.as_slice() == NMAP_SYN_OPTIONS => {
            vec![2, 4, 0x05, if v4 { 0xb4 } else { 0xa0 }]
        }
        _ => unreachable!("expected replies are written for Linux and nmap SYNs"),
    };
    let mut reply = Frame::tcp(
        &syn.dst.to_string(),
        &syn.src.to_string(),
        syn.dst_port,
        syn.src_port,
        TCP_SYN | TCP_ACK,
        &options,
    );
    reply.vlans = syn.vlans.clone();
    reply.ip_id = 0;
    reply.ttl = 64;
    reply.dont_fragment = true;
    if let L4::Tcp {
        seq, ack, window, ..
    } = &mut reply.l4
    {
        *seq = cookie;
        *ack = isn.wrapping_add(1);
        *window = 64240;
    }
    let mut bytes = reply.build();
    // The reply goes back where the SYN came from.
    bytes[0..6].copy_from_slice(&sensor_tests::frames::ETH_SRC);
    bytes[6..12].copy_from_slice(&sensor_tests::frames::ETH_DST);
    bytes
}

/// Checks IP and TCP checksums with etherparse, and returns the TCP header.
fn parse_checked(frame: &[u8]) -> etherparse::TcpHeader {
    let parsed = PacketHeaders::from_ethernet_slice(frame).expect("etherparse reads the reply");
    let Some(TransportHeader::Tcp(tcp)) = parsed.transport else {
        panic!("not TCP")
    };
    let payload = parsed.payload.slice();
    match parsed.net.expect("IP") {
        NetHeaders::Ipv4(ip, _) => {
            assert_eq!(
                ip.header_checksum,
                ip.calc_header_checksum(),
                "IPv4 checksum"
            );
            assert_eq!(
                tcp.checksum,
                tcp.calc_checksum_ipv4(&ip, payload).unwrap(),
                "TCP checksum"
            );
        }
        NetHeaders::Ipv6(ip, _) => {
            assert_eq!(
                tcp.checksum,
                tcp.calc_checksum_ipv6(&ip, payload).unwrap(),
                "TCP checksum"
            );
        }
        _ => panic!("not IP"),
    }
    tcp
}

fn cookie_of(reply: &[u8]) -> u32 {
    parse_checked(reply).sequence_number
}

/// The client's next segment: ACK of the SYN-ACK, optionally with data.
fn ack_for(syn: &Frame, cookie_ack: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let isn = match &syn.l4 {
        L4::Tcp { seq, .. } => *seq,
        _ => unreachable!(),
    };
    let mut f = syn.clone();
    f.l4 = L4::Tcp {
        flags,
        seq: isn.wrapping_add(1),
        ack: cookie_ack,
        window: 502,
        options: vec![],
    };
    f.payload = payload.to_vec();
    f.build()
}

#[test]
fn synack_is_byte_exact_for_ipv4_ipv6_and_vlan() {
    let mut h = responder(ReactivePolicy::Silent, MatchAction::Drop, None);
    let mut tagged = syn("198.51.100.7", "203.0.113.9");
    tagged.vlans = vec![(0x8100, 42)];
    let mut nmap = syn("198.51.100.7", "203.0.113.9");
    if let L4::Tcp {
        options, window, ..
    } = &mut nmap.l4
    {
        *options = NMAP_SYN_OPTIONS.to_vec();
        *window = 1024;
    }
    nmap.dont_fragment = false;
    for frame in [
        syn("198.51.100.7", "203.0.113.9"),
        syn("2001:db8::7", "2001:db8:dead::9"),
        tagged,
        nmap,
    ] {
        let before = h.counters();
        let (verdict, out) = h.program.test_run_output(&frame.build()).unwrap();
        assert_eq!(verdict, XdpVerdict::Tx);
        let cookie = cookie_of(&out);
        assert_eq!(out, expected_synack(&frame, cookie), "reply bytes");
        let moved = h.counters().since(&before);
        assert_eq!(moved.get(Counter::SynAckSent), 1);
        assert_eq!(moved.get(Counter::Emitted), 1, "the SYN is recorded too");
        let (records, _) = h.drain();
        let rec = records[0].record();
        assert_ne!(rec.raw().flags & record_flags::SYN_ANSWERED, 0);
        assert_eq!(
            rec.raw().tcp_seq,
            0x1000_0000,
            "the record holds the SYN, not the reply"
        );
        assert_eq!(rec.ttl(), 52);
    }
}

#[test]
fn cookies_validate_and_then_policy_applies() {
    for policy in [ReactivePolicy::Silent, ReactivePolicy::Reset] {
        let mut h = responder(policy, MatchAction::Drop, None);
        let s = syn("198.51.100.7", "203.0.113.9");
        let (_, reply) = h.program.test_run_output(&s.build()).unwrap();
        let cookie = cookie_of(&reply);
        h.drain();

        // The bare ACK completing the handshake: valid, silent under both policies.
        let before = h.counters();
        let (verdict, _) = h
            .program
            .test_run_output(&ack_for(&s, cookie.wrapping_add(1), TCP_ACK, &[]))
            .unwrap();
        assert_eq!(verdict, XdpVerdict::Drop);
        assert_eq!(h.counters().since(&before).get(Counter::CookieValid), 1);

        // The request: recorded as a reactive session; answered by policy.
        let before = h.counters();
        let data = ack_for(&s, cookie.wrapping_add(1), TCP_ACK | TCP_PSH, REQUEST);
        let (verdict, out) = h.program.test_run_output(&data).unwrap();
        let moved = h.counters().since(&before);
        assert_eq!(moved.get(Counter::CookieValid), 1);
        let (records, _) = h.drain();
        let last = records.last().unwrap().record();
        assert_ne!(last.raw().flags & record_flags::REACTIVE_SESSION, 0);
        assert_eq!(last.payload(), REQUEST);
        match policy {
            ReactivePolicy::Silent => {
                assert_eq!(verdict, XdpVerdict::Drop);
                assert_eq!(moved.get(Counter::RstSent), 0);
            }
            _ => {
                assert_eq!(verdict, XdpVerdict::Tx);
                assert_eq!(moved.get(Counter::RstSent), 1);
                let tcp = parse_checked(&out);
                assert!(tcp.rst && !tcp.syn && !tcp.ack);
                assert_eq!(tcp.sequence_number, cookie.wrapping_add(1));
                assert_eq!(tcp.source_port, 5060);
                assert_eq!(tcp.destination_port, 41000);
            }
        }

        // A forged cookie does not validate.
        let before = h.counters();
        let forged = ack_for(&s, cookie.wrapping_add(9), TCP_ACK | TCP_PSH, REQUEST);
        let (verdict, _) = h.program.test_run_output(&forged).unwrap();
        assert_eq!(verdict, XdpVerdict::Drop);
        let moved = h.counters().since(&before);
        assert_eq!(moved.get(Counter::CookieInvalid), 1);
        assert_eq!(moved.get(Counter::RstSent), 0);
        let (records, _) = h.drain();
        assert_eq!(
            records[0].record().raw().flags & record_flags::REACTIVE_SESSION,
            0
        );
    }
}

#[test]
fn cookies_expire() {
    // Time units of 2^27 ns (134 ms): a cookie lives for at most two units.
    let mut h = responder(ReactivePolicy::Silent, MatchAction::Drop, Some(27));
    let s = syn("198.51.100.7", "203.0.113.9");
    let (_, reply) = h.program.test_run_output(&s.build()).unwrap();
    let cookie = cookie_of(&reply);
    std::thread::sleep(Duration::from_millis(700));
    let before = h.counters();
    h.program
        .test_run_output(&ack_for(&s, cookie.wrapping_add(1), TCP_ACK, &[]))
        .unwrap();
    let moved = h.counters().since(&before);
    assert_eq!(moved.get(Counter::CookieInvalid), 1);
    assert_eq!(moved.get(Counter::CookieValid), 0);
}

#[test]
fn out_of_scope_syns_pass_untouched() {
    let mut h = responder(ReactivePolicy::Silent, MatchAction::Pass, None);
    for (src, dst) in [
        ("198.51.100.7", "192.0.2.9"),  // destination not a darknet prefix
        ("203.0.113.5", "203.0.113.9"), // source inside the darknet
        ("127.0.0.1", "203.0.113.9"),   // loopback source
        ("2001:db8::7", "2001:db8:beef::9"),
    ] {
        let frame = syn(src, dst).build();
        let before = h.counters();
        let (verdict, out) = h.program.test_run_output(&frame).unwrap();
        assert_eq!(verdict, XdpVerdict::Pass, "{src} -> {dst}");
        assert_eq!(out, frame, "{src} -> {dst}: untouched");
        let moved = h.counters().since(&before);
        assert_eq!(moved.get(Counter::ReactiveOutOfScope), 1);
        assert_eq!(moved.get(Counter::SynAckSent), 0);
    }
}

#[test]
fn reflector_limit_holds() {
    sensor_tests::pin_to_cpu(0);
    let config = SensorConfig::new(MatchAction::Drop, false, 1024).with_reactive(
        ReactivePolicy::Silent,
        5,
        5,
    );
    let mut h = Harness::with(config, &PortSet::default(), 1 << 20);
    h.program
        .set_reactive_prefixes(&parse_prefixes("203.0.113.0/24").unwrap())
        .unwrap();
    h.program.set_cookie_secret(0, [1, 2]).unwrap();
    let frame = syn("198.51.100.7", "203.0.113.9").build();
    let before = h.counters();
    let mut tx = 0;
    for _ in 0..30 {
        let (verdict, _) = h.program.test_run_output(&frame).unwrap();
        if verdict == XdpVerdict::Tx {
            tx += 1;
        } else {
            assert_eq!(verdict, XdpVerdict::Drop);
        }
    }
    let moved = h.counters().since(&before);
    assert_eq!(tx, 5);
    assert_eq!(moved.get(Counter::SynAckSent), 5);
    assert_eq!(moved.get(Counter::SynAckRefused), 25);
    // Another source still gets its answer.
    let (verdict, _) = h
        .program
        .test_run_output(&syn("198.51.100.8", "203.0.113.9").build())
        .unwrap();
    assert_eq!(verdict, XdpVerdict::Tx);
}

#[test]
fn off_means_nothing_is_transmitted() {
    let mut h = responder(ReactivePolicy::Off, MatchAction::Drop, None);
    let s = syn("198.51.100.7", "203.0.113.9");
    let before = h.counters();
    let (verdict, out) = h.program.test_run_output(&s.build()).unwrap();
    assert_eq!(verdict, XdpVerdict::Drop);
    assert_eq!(out, s.build());
    let (verdict, _) = h
        .program
        .test_run_output(&ack_for(&s, 12345, TCP_ACK | TCP_PSH, REQUEST))
        .unwrap();
    assert_eq!(verdict, XdpVerdict::Drop);
    let moved = h.counters().since(&before);
    for c in [
        Counter::SynAckSent,
        Counter::RstSent,
        Counter::SynAckRefused,
        Counter::CookieValid,
        Counter::CookieInvalid,
        Counter::ReactiveOutOfScope,
    ] {
        assert_eq!(moved.get(c), 0, "{}", c.name());
    }
    assert_eq!(moved.get(Counter::Emitted), 2);
}
