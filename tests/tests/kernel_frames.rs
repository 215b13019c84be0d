//! The real XDP program in the real kernel (BPF_PROG_TEST_RUN), one test per frame class.
//!
//! Each test states the XDP verdict, the counters that moved, and the record byte for byte: the
//! expected record is built from the frame's description, not by parsing its bytes, so a
//! parsing mistake in the program cannot hide behind the same mistake in the test.

use std::net::IpAddr;

use sensor::{
    capture::{PortSet, RingReader, SensorProgram, XdpVerdict},
    record::Record,
};
use sensor_common::{
    CaptureRecord, Counter, MatchAction, PAYLOAD_CLASSES, RecordHead, SensorConfig,
    TCP_OPTIONS_CAPACITY, ip_flags, record_flags,
};
use sensor_tests::{
    frames::{Frame, L4, LINUX_SYN_OPTIONS, TCP_ACK, TCP_PSH, TCP_SYN},
    harness::{Harness, Run},
    pin_to_cpu,
};

const SIP_OPTIONS: &[u8] = b"OPTIONS sip:100@203.0.113.9 SIP/2.0\r\n\
Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-3280387012;rport\r\n\
Max-Forwards: 70\r\n\
To: \"sipvicious\"<sip:100@1.1.1.1>\r\n\
From: \"sipvicious\"<sip:100@1.1.1.1>;tag=63303030303230613133633401353737303930303337\r\n\
User-Agent: friendly-scanner\r\n\
Call-ID: 969890095556717129979978\r\n\
Contact: sip:100@198.51.100.7:5060\r\n\
CSeq: 1 OPTIONS\r\n\
Accept: application/sdp\r\n\
Content-Length: 0\r\n\r\n";

fn sip_frame() -> Frame {
    Frame::udp("198.51.100.7", "203.0.113.9", 5060, 5060, SIP_OPTIONS)
}

/// The record the program must write for `frame`, from its description.
fn expected(frame: &Frame, built: &[u8], prefix: usize, flags: u8) -> CaptureRecord {
    let mut r = CaptureRecord::zeroed();
    let put = |dst: &mut [u8; 16], ip: IpAddr| match ip {
        IpAddr::V4(a) => dst[..4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => *dst = a.octets(),
    };
    put(&mut r.src_addr, frame.src);
    put(&mut r.dst_addr, frame.dst);
    let ext_len: usize = frame.ipv6_extensions.iter().map(|(_, b)| b.len() + 1).sum();
    let l4_header = match &frame.l4 {
        L4::Udp => 8,
        L4::Tcp { options, .. } => 20 + options.len(),
        L4::Other(_) => 0,
    };
    let l4_len = l4_header + frame.payload.len();
    match frame.src {
        IpAddr::V4(_) => {
            r.ip_version = 4;
            r.ip_id = frame.ip_id;
            r.ip_total_len = (20 + frame.ipv4_options.len() + l4_len) as u16;
            if frame.dont_fragment {
                r.ip_flags |= ip_flags::DF;
            }
        }
        IpAddr::V6(_) => {
            r.ip_version = 6;
            r.flow_label = frame.flow_label;
            r.ip_total_len = (40 + ext_len + l4_len) as u16;
            if frame.ipv6_extensions.iter().any(|(t, _)| *t == 44) {
                r.ip_flags |= ip_flags::IPV6_FRAGMENT_HEADER;
            }
        }
    }
    if frame.more_fragments {
        r.ip_flags |= ip_flags::MF;
    }
    r.frag_offset = frame.frag_offset;
    r.ttl = frame.ttl;
    r.tos = frame.tos;
    r.src_port = frame.src_port;
    r.dst_port = frame.dst_port;
    r.frame_len = built.len() as u32;
    r.payload_len = frame.payload.len() as u16;
    r.captured_len = frame.payload.len().min(prefix) as u16;
    r.payload_offset = frame.payload_offset() as u16;
    r.vlan_count = frame.vlans.len() as u8;
    for (i, (_, id)) in frame.vlans.iter().enumerate() {
        r.vlan_ids[i] = *id;
    }
    r.flags = flags;
    match &frame.l4 {
        L4::Udp => r.l4_proto = 17,
        L4::Tcp {
            flags,
            seq,
            ack,
            window,
            options,
        } => {
            r.l4_proto = 6;
            r.tcp_flags = *flags;
            r.tcp_seq = *seq;
            r.tcp_ack = *ack;
            r.tcp_window = *window;
            r.tcp_data_offset = ((20 + options.len()) / 4) as u8;
            r.tcp_options_len = options.len() as u8;
            r.tcp_options[..options.len()].copy_from_slice(options);
        }
        L4::Other(p) => r.l4_proto = *p,
    }
    r.payload[..usize::from(r.captured_len)]
        .copy_from_slice(&frame.payload[..usize::from(r.captured_len)]);
    r
}

fn bytes(r: &CaptureRecord) -> &[u8] {
    // SAFETY: CaptureRecord is plain bytes without padding.
    unsafe { std::slice::from_raw_parts((r as *const CaptureRecord).cast(), CaptureRecord::SIZE) }
}

/// Bytes of the record the kernel should reserve for `captured` payload bytes: the fixed part and
/// the smallest payload class that holds them.
fn record_bytes(captured: usize) -> usize {
    let class = PAYLOAD_CLASSES
        .into_iter()
        .find(|&class| class >= captured)
        .expect("a class holds every payload");
    RecordHead::SIZE + class
}

/// Compares a kernel record with the expected one byte for byte: the whole header (after taking
/// the timestamp and the context fields from the kernel's record), all 40 option bytes, and the
/// captured payload; and checks that the kernel reserved the smallest record class that holds
/// the payload.
fn assert_record(run: &Run, expected: &CaptureRecord) {
    assert_eq!(run.records.len(), 1, "exactly one record");
    assert_eq!(
        run.raw[0].len(),
        record_bytes(usize::from(expected.captured_len)),
        "record of the class for {} payload bytes",
        expected.captured_len
    );
    let got = run.records[0].record().raw();
    assert_ne!(got.timestamp_ns, 0, "timestamp set");
    assert_eq!(
        got.ifindex, 1,
        "BPF_PROG_TEST_RUN runs on the loopback device"
    );
    assert_eq!(got.rx_queue, 0);
    let mut want = *expected;
    want.timestamp_ns = got.timestamp_ns;
    want.ifindex = got.ifindex;
    let (g, w) = (run.raw[0].as_slice(), bytes(&want));
    let header_and_options = CaptureRecord::HEADER_LEN + TCP_OPTIONS_CAPACITY;
    for i in 0..header_and_options {
        assert_eq!(
            g[i],
            w[i],
            "record byte {i} differs\n got: {:02x?}\nwant: {:02x?}",
            &g[..header_and_options],
            &w[..header_and_options]
        );
    }
    let captured = usize::from(want.captured_len);
    assert_eq!(
        &g[header_and_options..header_and_options + captured],
        &w[header_and_options..header_and_options + captured],
        "payload"
    );
}

/// Asserts exactly these counters moved, by these amounts.
fn assert_counters(run: &Run, moved: &[(Counter, u64)]) {
    for counter in Counter::ALL {
        let want = moved
            .iter()
            .find(|(c, _)| *c == counter)
            .map(|(_, n)| *n)
            .unwrap_or(0);
        assert_eq!(
            run.counters.get(counter),
            want,
            "counter {}",
            counter.name()
        );
    }
    run.counters.check().expect("counters reconcile");
}

const MATCHED: &[(Counter, u64)] = &[
    (Counter::FramesSeen, 1),
    (Counter::Matched, 1),
    (Counter::Emitted, 1),
];

fn skipped(counter: Counter) -> [(Counter, u64); 2] {
    [(Counter::FramesSeen, 1), (counter, 1)]
}

#[test]
fn ipv4_udp_sip_is_recorded_and_dropped() {
    let mut h = Harness::new();
    let frame = sip_frame();
    let built = frame.build();
    let run = h.run(&built);
    assert_eq!(run.verdict, XdpVerdict::Drop);
    assert_counters(&run, MATCHED);
    assert_record(
        &run,
        &expected(&frame, &built, 1024, record_flags::MATCHED_DST_PORT),
    );
}

/// Each CPU writes into its own ring: a frame run on CPU n is in ring n and in no other.
#[test]
fn records_land_in_the_ring_of_their_cpu() {
    let mut h = Harness::new();
    let built = sip_frame().build();
    let online = aya::util::online_cpus().expect("online CPUs");
    assert!(h.cpus() >= online.len(), "a ring for every online CPU");
    for &cpu in &online {
        pin_to_cpu(cpu as usize);
        let (verdict, _) = h.program.test_run(&built, 1).expect("test run");
        assert_eq!(verdict, XdpVerdict::Drop);
        for ring in 0..h.cpus() {
            let records = h.drain_cpu(ring);
            let expected = usize::from(ring == cpu as usize);
            assert_eq!(records.len(), expected, "run on CPU {cpu}, ring {ring}");
        }
    }
}

/// Edge-triggered readiness events of a ring within `wait_ms`: each is a wakeup the kernel
/// sent to the ring's waiters.
fn wakeups(epoll: &std::os::fd::OwnedFd, wait_ms: i32) -> usize {
    use std::os::fd::AsRawFd as _;
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; 4];
    let mut seen = 0;
    // SAFETY: a valid epoll descriptor and event buffer.
    while unsafe { libc::epoll_wait(epoll.as_raw_fd(), events.as_mut_ptr(), 4, wait_ms) } > 0 {
        seen += 1;
    }
    seen
}

/// With a wakeup threshold, the record that takes a ring's backlog across it wakes the reader,
/// and the records after it do not while the backlog stays above it: a reader that has fallen
/// behind is not interrupted once per record.
#[test]
fn a_wakeup_threshold_wakes_the_reader_once_per_crossing() {
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
    let span = (8 + record_bytes(SIP_OPTIONS.len())) as u32;
    let mut h = Harness::with(
        SensorConfig::new(MatchAction::Drop, false, 1024).with_wakeup_bytes(2 * span + span / 2),
        &PortSet::default(),
        1 << 20,
    );
    pin_to_cpu(0);
    // SAFETY: plain epoll_create1; the descriptor is owned at once.
    let epoll = unsafe { OwnedFd::from_raw_fd(libc::epoll_create1(libc::EPOLL_CLOEXEC)) };
    let mut event = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLET) as u32,
        u64: 0,
    };
    // SAFETY: valid descriptors and event; the ring is empty, so no event is queued yet.
    let added = unsafe {
        libc::epoll_ctl(
            epoll.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            h.ring_fd(0).as_raw_fd(),
            &mut event,
        )
    };
    assert_eq!(added, 0, "{}", std::io::Error::last_os_error());
    let built = sip_frame().build();
    let record = |h: &mut Harness, n: usize| {
        for _ in 0..n {
            let (verdict, _) = h.program.test_run(&built, 1).expect("test run");
            assert_eq!(verdict, XdpVerdict::Drop);
        }
    };
    record(&mut h, 2);
    assert_eq!(wakeups(&epoll, 100), 0, "below the threshold: no wakeup");
    record(&mut h, 1);
    assert_eq!(
        wakeups(&epoll, 1000),
        1,
        "the crossing record wakes the reader"
    );
    record(&mut h, 5);
    assert_eq!(
        wakeups(&epoll, 100),
        0,
        "above the threshold: no more wakeups"
    );
    assert_eq!(h.drain_cpu(0).len(), 8);
    record(&mut h, 3);
    assert_eq!(wakeups(&epoll, 1000), 1, "drained, then crossed again");
    assert_eq!(h.drain_cpu(0).len(), 3);
}

/// The agent's reader hands out the records of all CPUs oldest first: a source whose packets
/// reach several CPUs keeps its order (its IP-ID sequence depends on it).
#[test]
fn records_of_all_cpus_come_out_oldest_first() {
    let online = aya::util::online_cpus().expect("online CPUs");
    if online.len() < 2 {
        println!("one CPU online: nothing to merge");
        return;
    }
    let (first, second) = (online[0] as usize, online[1] as usize);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _entered = runtime.enter();
    let mut program = SensorProgram::load(1 << 20).expect("load the XDP program (root needed)");
    program
        .set_config(SensorConfig::new(MatchAction::Drop, false, 64))
        .expect("config");
    program.set_ports(&PortSet::default()).expect("ports");
    let mut reader = RingReader::new(program.take_rings()).expect("ring reader");
    // Five frames on one CPU, five on the other, five on the first again: source ports 1..=15
    // in the order they were run.
    let mut port = 0;
    for cpu in [second, first, second] {
        pin_to_cpu(cpu);
        for _ in 0..5 {
            port += 1;
            let frame = Frame::udp("198.51.100.7", "203.0.113.9", port, 5060, SIP_OPTIONS).build();
            program.test_run(&frame, 1).expect("test run");
        }
    }
    let mut seen = Vec::new();
    let mut ahead = Vec::new();
    reader.drain_now(|bytes, next| {
        let record = Record::from_bytes(bytes).expect("record");
        seen.push((record.timestamp_ns(), record.src_port()));
        ahead.push(next.map(|n| Record::from_bytes(n).expect("next record").src_port()));
    });
    let ports: Vec<u16> = seen.iter().map(|&(_, p)| p).collect();
    assert_eq!(
        ports,
        (1..=15).collect::<Vec<u16>>(),
        "records in the order run"
    );
    // Each record comes with the one after it in its own ring: the second CPU's ring holds
    // 1 – 5 and 11 – 15, the first's 6 – 10.
    let after_in_ring = |p: u16| match p {
        5 => Some(11),
        10 | 15 => None,
        p => Some(p + 1),
    };
    assert_eq!(
        ahead,
        ports.iter().map(|&p| after_in_ring(p)).collect::<Vec<_>>(),
        "the record after each in its ring"
    );
    assert!(
        seen.windows(2).all(|w| w[0].0 <= w[1].0),
        "timestamps ascend"
    );
}

#[test]
fn ipv4_with_options_honours_ihl() {
    let mut h = Harness::new();
    let mut frame = sip_frame();
    // Record Route with room for two addresses, padded: IHL 7 + 2 words = 9... keep it at 8 bytes.
    frame.ipv4_options = vec![0x07, 0x07, 0x04, 0, 0, 0, 0, 0x00];
    frame.ttl = 47;
    frame.tos = 0xb8;
    frame.dont_fragment = false;
    frame.ip_id = 54321;
    let built = frame.build();
    let run = h.run(&built);
    assert_eq!(run.verdict, XdpVerdict::Drop);
    assert_counters(&run, MATCHED);
    assert_record(
        &run,
        &expected(&frame, &built, 1024, record_flags::MATCHED_DST_PORT),
    );
    // 40 bytes of options, the most IHL allows.
    let mut frame = sip_frame();
    frame.ipv4_options = vec![1; 40];
    let built = frame.build();
    let run = h.run(&built);
    assert_record(
        &run,
        &expected(&frame, &built, 1024, record_flags::MATCHED_DST_PORT),
    );
}

#[test]
fn ipv6_udp_with_flow_label() {
    let mut h = Harness::new();
    let mut frame = Frame::udp("2001:db8::7", "2001:db8:dead::9", 5061, 5060, SIP_OPTIONS);
    frame.flow_label = 0xabcde;
    frame.tos = 0x2e;
    frame.ttl = 57;
    let built = frame.build();
    let run = h.run(&built);
    assert_eq!(run.verdict, XdpVerdict::Drop);
    assert_counters(&run, MATCHED);
    assert_record(
        &run,
        &expected(&frame, &built, 1024, record_flags::MATCHED_DST_PORT),
    );
}

#[test]
fn ipv6_extension_headers_are_followed() {
    let mut h = Harness::new();
    let mut frame = Frame::udp("2001:db8::7", "2001:db8:dead::9", 40000, 5060, SIP_OPTIONS);
    // Hop-by-hop (8 bytes, PadN), destination options (16 bytes), and a first fragment with MF.
    frame.ipv6_extensions = vec![
        (0, vec![0, 1, 4, 0, 0, 0, 0]),
        (60, vec![1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        (44, vec![0, 0x00, 0x01, 0xde, 0xad, 0xbe, 0xef]),
    ];
    frame.more_fragments = true;
    let built = frame.build();
    let run = h.run(&built);
    assert_counters(&run, MATCHED);
    assert_record(
        &run,
        &expected(&frame, &built, 1024, record_flags::MATCHED_DST_PORT),
    );

    // Five extension headers: more than the program follows, counted, passed.
    let mut frame = Frame::udp("2001:db8::7", "2001:db8:dead::9", 40000, 5060, SIP_OPTIONS);
    frame.ipv6_extensions = (0..5).map(|_| (60, vec![0, 1, 4, 0, 0, 0, 0])).collect();
    let run = h.run(&frame.build());
    assert_eq!(run.verdict, XdpVerdict::Pass);
    assert_counters(&run, &skipped(Counter::Ipv6ExtensionLimit));
    assert!(run.records.is_empty());
}

#[test]
fn vlan_tags_one_and_two() {
    let mut h = Harness::new();
    let mut frame = sip_frame();
    frame.vlans = vec![(0x8100, 100)];
    let built = frame.build();
    let run = h.run(&built);
    assert_counters(&run, MATCHED);
    assert_record(
        &run,
        &expected(&frame, &built, 1024, record_flags::MATCHED_DST_PORT),
    );

    let mut frame = Frame::udp("2001:db8::7", "2001:db8:dead::9", 5060, 5060, SIP_OPTIONS);
    frame.vlans = vec![(0x88a8, 3000), (0x8100, 4095)];
    let built = frame.build();
    let run = h.run(&built);
    assert_counters(&run, MATCHED);
    assert_record(
        &run,
        &expected(&frame, &built, 1024, record_flags::MATCHED_DST_PORT),
    );

    // A third tag is beyond what the program follows: not IP to it, counted as such.
    let mut frame = sip_frame();
    frame.vlans = vec![(0x88a8, 1), (0x8100, 2), (0x8100, 3)];
    let run = h.run(&frame.build());
    assert_eq!(run.verdict, XdpVerdict::Pass);
    assert_counters(&run, &skipped(Counter::NonIp));
}

#[test]
fn tcp_syn_keeps_its_options() {
    let mut h = Harness::new();
    let frame = Frame::tcp(
        "198.51.100.7",
        "203.0.113.9",
        41912,
        5060,
        TCP_SYN,
        &LINUX_SYN_OPTIONS,
    );
    let built = frame.build();
    let run = h.run(&built);
    assert_eq!(run.verdict, XdpVerdict::Drop);
    assert_counters(&run, MATCHED);
    assert_record(
        &run,
        &expected(&frame, &built, 1024, record_flags::MATCHED_DST_PORT),
    );
    let rec = run.records[0].record();
    assert_eq!(rec.tcp_options(), &LINUX_SYN_OPTIONS);
    assert!(rec.payload().is_empty());

    // A data segment with the full 40 bytes of options and a SIP payload.
    let mut frame = Frame::tcp(
        "198.51.100.7",
        "203.0.113.9",
        41912,
        5060,
        TCP_PSH | TCP_ACK,
        &[1; 40],
    );
    frame.payload = SIP_OPTIONS.to_vec();
    let built = frame.build();
    let run = h.run(&built);
    assert_record(
        &run,
        &expected(&frame, &built, 1024, record_flags::MATCHED_DST_PORT),
    );
}

#[test]
fn non_sip_traffic_passes_uncaptured() {
    let mut h = Harness::new();
    let run = h.run(&Frame::udp("198.51.100.7", "203.0.113.9", 5353, 53, b"\x12\x34").build());
    assert_eq!(run.verdict, XdpVerdict::Pass);
    assert_counters(&run, &skipped(Counter::PortMiss));
    assert!(run.records.is_empty());

    let mut icmp = Frame::udp(
        "198.51.100.7",
        "203.0.113.9",
        0,
        0,
        b"\x08\x00\xf7\xff\0\0\0\0",
    );
    icmp.l4 = L4::Other(1);
    let run = h.run(&icmp.build());
    assert_counters(&run, &skipped(Counter::OtherL4));

    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&[2, 0, 0, 0, 0, 2, 0x08, 0x06]);
    arp.extend_from_slice(&[0; 28]);
    let run = h.run(&arp);
    assert_eq!(run.verdict, XdpVerdict::Pass);
    assert_counters(&run, &skipped(Counter::NonIp));

    // Source port 5060 with source matching off: a response, not matched.
    let run = h.run(
        &Frame::udp(
            "203.0.113.9",
            "198.51.100.7",
            5060,
            40000,
            b"SIP/2.0 200 OK\r\n",
        )
        .build(),
    );
    assert_counters(&run, &skipped(Counter::PortMiss));
}

#[test]
fn truncated_at_every_header_boundary() {
    let mut h = Harness::new();
    let mut v4 = sip_frame();
    v4.vlans = vec![(0x8100, 7)];
    v4.ipv4_options = vec![1, 1, 1, 1];
    let mut v6 = Frame::tcp(
        "2001:db8::7",
        "2001:db8:dead::9",
        1,
        5060,
        TCP_SYN,
        &LINUX_SYN_OPTIONS,
    );
    v6.ipv6_extensions = vec![(0, vec![0, 1, 4, 0, 0, 0, 0])];
    for frame in [v4, v6] {
        let built = frame.build();
        // BPF_PROG_TEST_RUN needs at least an Ethernet header; every cut from there to the last
        // byte of the L4 header leaves some announced header incomplete.
        for len in 14..frame.payload_offset() {
            let run = h.run(&built[..len]);
            assert_eq!(run.verdict, XdpVerdict::Pass, "cut at {len}");
            assert_counters(&run, &skipped(Counter::Truncated));
            assert!(run.records.is_empty(), "cut at {len}");
        }
    }
}

#[test]
fn payload_cut_by_the_frame_is_flagged_short() {
    let mut h = Harness::new();
    let frame = sip_frame();
    let built = frame.build();
    let cut = frame.payload_offset() + 100;
    let run = h.run(&built[..cut]);
    assert_counters(&run, MATCHED);
    let rec = run.records[0].record();
    assert!(rec.frame_short());
    assert!(rec.payload_truncated());
    assert_eq!(rec.payload(), &SIP_OPTIONS[..100]);
    assert_eq!(rec.raw().payload_len as usize, SIP_OPTIONS.len());
    assert_eq!(rec.raw().frame_len as usize, cut);
}

#[test]
fn ethernet_padding_is_not_payload() {
    // zmap's 7-byte probe makes a 49-byte frame, padded to the 60-byte minimum on the wire.
    let mut h = Harness::new();
    let frame = Frame::udp("198.51.100.7", "203.0.113.9", 40000, 5060, b"OPTIONS");
    let mut built = frame.build();
    built.resize(60, 0);
    let run = h.run(&built);
    assert_counters(&run, MATCHED);
    assert_record(
        &run,
        &expected(&frame, &built, 1024, record_flags::MATCHED_DST_PORT),
    );
    assert_eq!(run.records[0].record().payload(), b"OPTIONS");
}

#[test]
fn malformed_headers_are_counted() {
    let mut h = Harness::new();
    let built = sip_frame().build();

    let mut bad_ihl = built.clone();
    bad_ihl[14] = 0x44;
    let run = h.run(&bad_ihl);
    assert_eq!(run.verdict, XdpVerdict::Pass);
    assert_counters(&run, &skipped(Counter::Malformed));

    let mut bad_version = built.clone();
    bad_version[14] = 0x65;
    assert_counters(&h.run(&bad_version), &skipped(Counter::Malformed));

    let mut short_total = built.clone();
    short_total[16..18].copy_from_slice(&19u16.to_be_bytes());
    assert_counters(&h.run(&short_total), &skipped(Counter::Malformed));

    let mut short_udp = built.clone();
    short_udp[38..40].copy_from_slice(&7u16.to_be_bytes());
    assert_counters(&h.run(&short_udp), &skipped(Counter::Malformed));

    let mut tcp = Frame::tcp("198.51.100.7", "203.0.113.9", 1, 5060, TCP_SYN, &[]).build();
    tcp[14 + 20 + 12] = 0x40;
    assert_counters(&h.run(&tcp), &skipped(Counter::Malformed));
}

#[test]
fn non_first_fragments_are_counted() {
    let mut h = Harness::new();
    let mut frame = sip_frame();
    frame.frag_offset = 1480;
    frame.dont_fragment = false;
    let run = h.run(&frame.build());
    assert_eq!(run.verdict, XdpVerdict::Pass);
    assert_counters(&run, &skipped(Counter::NonFirstFragment));

    let mut frame = Frame::udp("2001:db8::7", "2001:db8:dead::9", 5060, 5060, SIP_OPTIONS);
    frame.ipv6_extensions = vec![(44, vec![0, 0x05, 0xc8, 0, 0, 0, 1])];
    let run = h.run(&frame.build());
    assert_counters(&run, &skipped(Counter::NonFirstFragment));
}

#[test]
fn prefix_length_bounds_the_capture() {
    let ports = PortSet::default();
    let mut h = Harness::with(
        SensorConfig::new(MatchAction::Drop, false, 256),
        &ports,
        1 << 20,
    );
    let long = Frame::udp("198.51.100.7", "203.0.113.9", 5060, 5060, &[b'A'; 600]);
    let built = long.build();
    let run = h.run(&built);
    assert_record(
        &run,
        &expected(&long, &built, 256, record_flags::MATCHED_DST_PORT),
    );
    assert!(run.records[0].record().payload_truncated());

    let short = Frame::udp("198.51.100.7", "203.0.113.9", 5060, 5060, &[b'B'; 100]);
    let built = short.build();
    let run = h.run(&built);
    assert_record(
        &run,
        &expected(&short, &built, 256, record_flags::MATCHED_DST_PORT),
    );
    assert!(!run.records[0].record().payload_truncated());

    // The largest UDP payload in a 1500-byte frame, at the default prefix: 1024 captured.
    let mut h = Harness::new();
    let max = Frame::udp("198.51.100.7", "203.0.113.9", 5060, 5060, &[b'C'; 1472]);
    let built = max.build();
    let run = h.run(&built);
    assert_record(
        &run,
        &expected(&max, &built, 1024, record_flags::MATCHED_DST_PORT),
    );
}

#[test]
fn pass_action_and_source_port_matching() {
    let ports: PortSet = "5060".parse().unwrap();
    let mut h = Harness::with(
        SensorConfig::new(MatchAction::Pass, true, 1024),
        &ports,
        1 << 20,
    );
    let frame = Frame::udp(
        "203.0.113.9",
        "198.51.100.7",
        5060,
        40000,
        b"SIP/2.0 200 OK\r\n\r\n",
    );
    let built = frame.build();
    let run = h.run(&built);
    assert_eq!(run.verdict, XdpVerdict::Pass);
    assert_counters(&run, MATCHED);
    assert_record(
        &run,
        &expected(&frame, &built, 1024, record_flags::MATCHED_SRC_PORT),
    );
    // 5061 is not in this set.
    let run = h.run(&Frame::udp("198.51.100.7", "203.0.113.9", 1, 5061, b"x").build());
    assert_counters(&run, &skipped(Counter::PortMiss));
}

#[test]
fn full_ring_buffer_loses_nothing_silently() {
    // One page of ring holds a few records of this payload's class (the kernel's 8-byte header
    // each); the rest of the burst must be counted as lost.
    let mut h = Harness::with(
        SensorConfig::new(MatchAction::Drop, false, 1024),
        &PortSet::default(),
        4096,
    );
    let built = sip_frame().build();
    let before = h.counters();
    for _ in 0..10 {
        let (verdict, _) = h.program.test_run(&built, 1).unwrap();
        assert_eq!(
            verdict,
            XdpVerdict::Drop,
            "the action holds when the ring is full"
        );
    }
    let moved = h.counters().since(&before);
    let (records, _) = h.drain();
    assert_eq!(moved.get(Counter::Matched), 10);
    assert_eq!(records.len(), 4096 / (8 + record_bytes(SIP_OPTIONS.len())));
    assert_eq!(moved.get(Counter::Emitted), records.len() as u64);
    assert_eq!(moved.get(Counter::RingFull), 10 - records.len() as u64);
    assert!(moved.get(Counter::RingFull) > 0);
    moved.check().expect("counters reconcile");
}

#[test]
fn per_source_token_bucket_sheds_and_counts() {
    // The buckets are per CPU: keep every run of this test on one CPU.
    sensor_tests::pin_to_cpu(0);
    let config = SensorConfig::new(MatchAction::Drop, false, 1024).with_source_limit(1, 3);
    let mut h = Harness::with(config, &PortSet::default(), 1 << 20);
    let noisy = sip_frame().build();
    let before = h.counters();
    for _ in 0..10 {
        let (verdict, _) = h.program.test_run(&noisy, 1).unwrap();
        assert_eq!(verdict, XdpVerdict::Drop, "shed records keep the action");
    }
    let quiet = Frame::udp("198.51.100.8", "203.0.113.9", 5060, 5060, SIP_OPTIONS).build();
    h.program.test_run(&quiet, 1).unwrap();
    let moved = h.counters().since(&before);
    let (records, _) = h.drain();
    // A burst of 3 for the noisy source (within the same second), then shedding; the quiet
    // source has its own bucket.
    assert_eq!(moved.get(Counter::Matched), 11);
    assert_eq!(moved.get(Counter::Emitted), 4);
    assert_eq!(moved.get(Counter::RateLimited), 7);
    assert_eq!(records.len(), 4);
    assert_eq!(
        records
            .iter()
            .filter(|r| r.record().src_ip().to_string() == "198.51.100.8")
            .count(),
        1
    );
    moved.check().expect("counters reconcile");
}

/// The kernel benchmark's floor programs do what its table says they do: the ring floor writes
/// one record of the size asked with the frame's first bytes in it, and the perf floor one sample
/// per run into the running CPU's perf buffer, with nothing lost.
#[test]
fn benchmark_floor_programs_write_what_they_claim() {
    use std::os::fd::AsFd as _;
    use xtask::xdp_pass::{PerfFloor, RingFloor};
    pin_to_cpu(0);
    let frame = sip_frame().build();
    let ring = RingFloor::load(1 << 16, 200, 60).expect("load the ring floor");
    let mut pages = sensor::capture::RingPages::map(ring.ring_fd().as_fd()).expect("map");
    for _ in 0..3 {
        ring.test_run(&frame, 1).expect("test run");
    }
    let mut items = Vec::new();
    pages.drain(|item| items.push(item.to_vec()));
    assert_eq!(items.len(), 3);
    for item in &items {
        assert_eq!(item.len(), 200);
        assert_eq!(&item[..60], &frame[..60]);
    }
    let cpus = aya::util::nr_cpus().expect("CPUs") as u32;
    let perf = PerfFloor::load(cpus, 1 << 16, 60).expect("load the perf floor");
    perf.test_run(&frame, 5).expect("test run");
    assert_eq!(perf.drain(), (5, 0), "five samples, none lost");
    assert_eq!(perf.drain(), (0, 0), "drained");
}
