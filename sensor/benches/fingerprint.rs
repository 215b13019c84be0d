//! Parse + fingerprint throughput on one core, over a darknet-like mix of SIP probes.
//!
//! `cargo bench -p sensor --bench fingerprint` (optionally `-- SECONDS` of CPU per stage,
//! default 2; `FP_BENCH_STAGE=parse` runs only the stages whose name starts so, for profiling).
//! Rates are per CPU second of the benchmark thread, so other load on the machine does not
//! count against them.
//!
//! Stages, each over the same messages, each reported in messages per second and as a ratio to
//! the baseline measured in the same run:
//! - baseline: find every line end with memchr (the least any parser must do),
//! - parse: `SipMessage::parse`,
//! - parse + classify: the rule engine with inference, no per-source state,
//! - parse + classify + IP-ID tracker: what the agent computes per record,
//! - full event document: the above plus the `sip`/`fingerprint` JSON objects serialized.

use std::{
    hint::black_box,
    time::{Duration, Instant},
};

use sensor::{
    fingerprint::{Engine, Packet, SourceTracker},
    output::{fingerprint::FingerprintDoc, sip::SipDoc},
    record::Transport,
    sip::SipMessage,
};

fn crlf(text: &str) -> Vec<u8> {
    text.lines()
        .flat_map(|l| [l, "\r\n"])
        .collect::<String>()
        .into_bytes()
}

/// (weight, payload): roughly what a 5060 darknet sees, SIPVicious-heavy.
fn mix() -> Vec<(usize, Vec<u8>)> {
    let svmap_py2 = crlf(
        "OPTIONS sip:100@192.0.2.1 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-1047900479;rport
Content-Length: 0
From: \"sipvicious\"<sip:100@1.1.1.1>;tag=34353131313634613133633401353835363538393133
Accept: application/sdp
User-Agent: friendly-scanner
To: \"sipvicious\"<sip:100@1.1.1.1>
Contact: sip:100@127.0.0.1:5060
CSeq: 1 OPTIONS
Call-ID: 965192181434457134540520
Max-Forwards: 70
",
    );
    let svmap_py3 = crlf(
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
    let sundayddr = crlf(
        "OPTIONS sip:100@192.0.2.1 SIP/2.0
Via: SIP/2.0/UDP 192.168.1.9:5060;branch=z9hG4bK-17038962;rport
Content-Length: 0
From: \"sipsscuser\"<sip:100@192.168.1.9>;tag=77194458456158489721772408023096992174807017852
Accept: application/sdp
User-Agent: sundayddr
To: \"sipscc\"<sip:100@192.168.1.9>
Contact: sip:100@192.168.1.9:5060
CSeq: 1 OPTIONS
Call-ID: 124296019799750175018545983
Max-Forwards: 70
",
    );
    let svwar = crlf(
        "REGISTER sip:192.0.2.10 SIP/2.0
Via: SIP/2.0/UDP 127.0.1.1:5061;branch=z9hG4bK-1234567;rport
Max-Forwards: 70
To: \"100\"<sip:100@192.0.2.10>
From: \"100\"<sip:100@192.0.2.10>;tag=3130300132373138323831383238
User-Agent: friendly-scanner
Call-ID: 1234567890
Contact: sip:100@192.0.2.10
CSeq: 1 REGISTER
Accept: application/sdp
Content-Length: 0
",
    );
    let nmap = crlf(
        "OPTIONS sip:192.0.2.10 SIP/2.0
Via: SIP/2.0/UDP 198.51.100.7:45123;rport;branch=z9hG4bKabcdefghijklmnopqrstuvwxy
Max-Forwards: 70
From: \"Nmap NSE\" <sip:user@192.0.2.10>;tag=ABCDEFGHIJKLMNOPQRST
To: \"Nmap NSE\" <sip:user@192.0.2.10>
Call-ID: aB3_aB3_aB3_aB3_aB3_aB3_aB3_aB3_aB3_aB3_aB3_aB3_aB3_aB3_aB3_
CSeq: 1234 OPTIONS
User-Agent: Nmap NSE
Contact: \"Nmap NSE\" <sip:user@198.51.100.7:45123>
Expires: 300
Allow: PRACK, INVITE ,ACK, BYE, CANCEL, UPDATE, SUBSCRIBE,NOTIFY, REFER, MESSAGE, OPTIONS
Accept: application/sdp
Content-Length:  0
",
    );
    let sippts = crlf(
        "OPTIONS sip:100@192.0.2.10 SIP/2.0
Via: SIP/2.0/UDP 10.0.0.1:43211;branch=0123456789abcdefghijklmnopqqrstuvwxyz0123456789abcdefghijklmnopqqrstu;rport
From:  <sip:100@192.0.2.10>;tag=1a2b3c4d
To:  <sip:100@192.0.2.10>
Contact: <sip:100@10.0.0.1:43211;transport=UDP>;expires=120
Call-ID: 0123456789abcdef0123456789abcdef
CSeq: 1 OPTIONS
Max-Forwards: 70
User-Agent: pplsip
Allow: INVITE, REGISTER, ACK, CANCEL, BYE, NOTIFY, REFER, OPTIONS, INFO, SUBSCRIBE, UPDATE, PRACK, MESSAGE
Content-Length: 0
",
    );
    let zmap = b"OPTIONS sip:qwertyui@192.0.2.10 SIP/2.0\nVia: SIP/2.0/UDP 198.51.100.7:51515;branch=abcdef.0123456789;rport;alias\nFrom: sip:asdfghjk@198.51.100.7:51515;tag=12345678\nTo: sip:zxcvbnmq@192.0.2.10\nCall-ID: 9876543210@198.51.100.7\nCSeq: 1 OPTIONS\nContact: sip:poiuytre@198.51.100.7:51515\nContent-Length: 0\nMax-Forwards: 20\nUser-Agent: lkjhgfds\nAccept: text/plain\n\n".to_vec();
    let masscan = b"OPTIONS sip:carol@chicago.com SIP/2.0\r\nVia: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKhjhs8ass877\r\nMax-Forwards: 70\r\nTo: <sip:carol@chicago.com>\r\nFrom: Alice <sip:alice@atlanta.com>;tag=1928301774\r\nCall-ID: a84b4c76e66710\r\nCSeq: 63104 OPTIONS\r\nContact: <sip:alice@pc33.atlanta.com>\r\nAccept: application/sdp\r\nContent-Length: 0\r\n".to_vec();
    let unknown = crlf(
        "REGISTER sip:192.0.2.10 SIP/2.0
Via: SIP/2.0/UDP 198.51.100.9:5070;branch=z9hG4bKx91ab
From: <sip:probe@198.51.100.9>;tag=91ab
To: <sip:777@192.0.2.10>
Call-ID: 77712
CSeq: 7 REGISTER
X-Probe: yes
Content-Length: 0
",
    );
    vec![
        (30, svmap_py2),
        (15, svmap_py3),
        (10, sundayddr),
        (10, svwar),
        (5, nmap),
        (5, sippts),
        (5, zmap),
        (5, masscan),
        (10, unknown),
        (3, b"OPTIONS".to_vec()),
        (2, (0..200u8).map(|b| b.wrapping_mul(37)).collect()),
    ]
}

fn packet(i: usize) -> Packet {
    let src = [198, 51, (i >> 8) as u8, i as u8];
    Packet {
        src_ip: std::net::IpAddr::from(src),
        dst_ip: "192.0.2.10".parse().unwrap(),
        src_port: 5060,
        dst_port: 5060,
        transport: Transport::Udp,
        ttl: 50,
        ip_id: i as u16,
        dont_fragment: true,
        ip_version: 4,
        tcp_seq: None,
    }
}

/// CPU time of this thread: the machine is shared, and wall time would count other
/// processes' turns on the core.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Runs `f` over the messages repeatedly for about `budget` of CPU time; returns messages per
/// CPU second (0 when the stage is skipped).
fn measure(
    name: &str,
    budget: Duration,
    msgs: &[Vec<u8>],
    mut f: impl FnMut(usize, &[u8]) -> usize,
) -> f64 {
    if let Ok(only) = std::env::var("FP_BENCH_STAGE")
        && !name.starts_with(&only)
    {
        return 0.0;
    }
    // Warm-up pass (caches, lazy regex state).
    for (i, m) in msgs.iter().enumerate() {
        black_box(f(i, m));
    }
    let wall = Instant::now();
    let start = thread_cpu();
    let mut done = 0usize;
    let mut sink = 0usize;
    while thread_cpu() - start < budget {
        for (i, m) in msgs.iter().enumerate() {
            sink = sink.wrapping_add(f(i, black_box(m)));
        }
        done += msgs.len();
    }
    black_box(sink);
    let cpu = (thread_cpu() - start).as_secs_f64();
    let rate = done as f64 / cpu;
    println!(
        "{name:<42} {rate:>12.0} msg/s  {:>8.2} us/msg  (cpu/wall {:.0}%)",
        1e6 / rate,
        100.0 * cpu / wall.elapsed().as_secs_f64()
    );
    rate
}

fn main() {
    let seconds: f64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(2.0);
    let budget = Duration::from_secs_f64(seconds);
    let engine = Engine::builtin().expect("built-in rules");
    let mut msgs = Vec::new();
    for (weight, payload) in mix() {
        msgs.extend(std::iter::repeat_n(payload, weight));
    }
    // Interleave so that consecutive messages differ, as on the wire.
    let mut order: Vec<usize> = (0..msgs.len()).collect();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for i in (1..order.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        order.swap(i, (seed as usize) % (i + 1));
    }
    let msgs: Vec<Vec<u8>> = order.into_iter().map(|i| msgs[i].clone()).collect();
    let bytes: usize = msgs.iter().map(Vec::len).sum();
    println!(
        "mix: {} messages, {} rules, mean {} bytes/message, {:.1} CPU-s per stage, one thread",
        msgs.len(),
        engine.rules().len(),
        bytes / msgs.len(),
        seconds
    );

    let baseline = measure("baseline: memchr line scan", budget, &msgs, |_, m| {
        memchr::memchr_iter(b'\n', m).count()
    });
    let parse = measure("parse", budget, &msgs, |_, m| {
        let msg = SipMessage::parse(m);
        msg.header_count() + msg.body().map_or(0, <[u8]>::len)
    });
    let classify = measure("parse + classify", budget, &msgs, |i, m| {
        let msg = SipMessage::parse(m);
        let fp = engine.classify_packet(&msg, Some(packet(i)), None);
        fp.evidence.len()
    });
    let mut sources = SourceTracker::new(10_000);
    let tracked = measure("parse + classify + IP-ID tracker", budget, &msgs, |i, m| {
        let msg = SipMessage::parse(m);
        let p = packet(i % 5000);
        let view = sources.observe(&p, i as u64);
        let fp = engine.classify_packet(&msg, Some(p), Some(view));
        fp.evidence.len()
    });
    let mut buf = Vec::with_capacity(8192);
    let full = measure(
        "full: + sip/fingerprint JSON documents",
        budget,
        &msgs,
        |i, m| {
            let msg = SipMessage::parse(m);
            let p = packet(i % 5000);
            let view = sources.observe(&p, i as u64);
            let fp = engine.classify_packet(&msg, Some(p), Some(view));
            buf.clear();
            serde_json::to_writer(
                &mut buf,
                &(SipDoc::new(&msg), FingerprintDoc::from_fingerprint(fp)),
            )
            .expect("serializable");
            buf.len()
        },
    );
    let json_bytes: usize = msgs
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let msg = SipMessage::parse(m);
            let fp = engine.classify_packet(&msg, Some(packet(i)), None);
            serde_json::to_vec(&(SipDoc::new(&msg), FingerprintDoc::new(&fp)))
                .map_or(0, |v| v.len())
        })
        .sum();
    println!(
        "mean size of the sip + fingerprint objects: {} bytes/event",
        json_bytes / msgs.len()
    );
    println!();
    println!("ratios to the baseline (memchr line scan of the same bytes):");
    for (name, rate) in [
        ("parse", parse),
        ("parse + classify", classify),
        ("parse + classify + tracker", tracked),
        ("full documents", full),
    ] {
        if rate > 0.0 && baseline > 0.0 {
            println!("  {name:<28} {:>8.1}x slower", baseline / rate);
        }
    }
    println!(
        "classify costs {:.1}x a parse; the agent's per-record work (full) runs at {:.0} msg/s",
        parse / classify,
        full
    );
}
