//! Frames for tests that throw many frames at the kernel program and the userspace extractor:
//! every frame of the reference corpus, crafted frames covering each parser branch, frames with
//! lengths just around each length check, and a deterministic mutator (bit flips, byte stores,
//! truncations, VLAN tags, IHL, lengths, fragment fields, IPv6 extension headers, protocols,
//! ports, padding). Shared by the differential test, the hostile-frame test and the fuzz corpus
//! seeds, so that all of them start from the same frames.

use std::path::PathBuf;

use sensor::offline::CaptureReader;

use crate::frames::{Frame, L4, LINUX_SYN_OPTIONS, TCP_ACK, TCP_PSH, TCP_SYN};

/// Kept well below the size at which BPF_PROG_TEST_RUN would build a multi-buffer frame (a page
/// less head- and tailroom), where the kernel can read headers only in the first buffer.
pub const MAX_FRAME: usize = 2048;
/// BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header (EINVAL).
pub const MIN_KERNEL_FRAME: usize = 14;

/// xorshift64*: deterministic, seeded, no dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }
}

pub fn corpus_frames() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/corpus")
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("pcap") | Some("pcapng")
            )
        })
        .collect();
    files.sort();
    assert!(files.len() >= 10, "corpus has {} captures", files.len());
    let mut frames = Vec::new();
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let reader = CaptureReader::open(&file).unwrap_or_else(|e| panic!("{name}: {e}"));
        for (i, packet) in reader.enumerate() {
            let packet = packet.unwrap_or_else(|e| panic!("{name}: {e}"));
            let (frame, wire_len) = packet
                .ethernet_frame()
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                wire_len as usize,
                frame.len(),
                "{name} #{i} was cut by its snap length"
            );
            frames.push((format!("{name} #{i}"), frame.into_owned()));
        }
    }
    frames
}

pub const SIP_OPTIONS: &[u8] = b"OPTIONS sip:100@203.0.113.9 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.1.1:5060;branch=z9hG4bK-1;rport\r\nMax-Forwards: 70\r\nTo: \"sipvicious\"<sip:100@1.1.1.1>\r\nFrom: \"sipvicious\"<sip:100@1.1.1.1>;tag=3133\r\nUser-Agent: friendly-scanner\r\nCall-ID: 1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";

pub fn ext(kind: u8, total_len: usize, fill: u8) -> (u8, Vec<u8>) {
    // The builder adds the next-header byte; the second byte is the length field.
    let mut body = vec![fill; total_len - 1];
    body[0] = match kind {
        51 => (total_len / 4 - 2) as u8,
        44 => 0,
        _ => (total_len / 8 - 1) as u8,
    };
    (kind, body)
}

pub fn fragment_ext(offset_bytes: u16, more: bool) -> (u8, Vec<u8>) {
    let field = (offset_bytes & 0xfff8) | u16::from(more);
    let mut body = vec![0u8; 7];
    body[1..3].copy_from_slice(&field.to_be_bytes());
    body[3..7].copy_from_slice(&0xdead_beefu32.to_be_bytes());
    (44, body)
}

pub fn crafted_frames() -> Vec<(String, Vec<u8>)> {
    let v4 = |sp, dp, payload: &[u8]| Frame::udp("198.51.100.7", "203.0.113.9", sp, dp, payload);
    let v6 = |sp, dp, payload: &[u8]| Frame::udp("2001:db8::7", "2001:db8::9", sp, dp, payload);
    let mut list: Vec<(&str, Frame)> = vec![
        ("udp4 sip", v4(5060, 5060, SIP_OPTIONS)),
        ("udp4 empty", v4(46539, 5060, b"")),
        ("udp4 7 bytes", v4(40000, 5060, b"OPTIONS")),
        ("udp4 5061", v4(40000, 5061, SIP_OPTIONS)),
        ("udp4 src match", v4(5060, 40000, b"SIP/2.0 200 OK\r\n\r\n")),
        ("udp4 miss", v4(40000, 53, b"dns")),
        ("udp4 big", v4(5060, 5060, &[b'x'; 1400])),
        ("udp6 sip", v6(5060, 5060, SIP_OPTIONS)),
        ("udp6 miss", v6(5060, 80, b"x")),
        (
            "tcp4 syn",
            Frame::tcp(
                "198.51.100.7",
                "203.0.113.9",
                40000,
                5060,
                TCP_SYN,
                &LINUX_SYN_OPTIONS,
            ),
        ),
        (
            "tcp4 psh",
            Frame {
                payload: SIP_OPTIONS.to_vec(),
                ..Frame::tcp(
                    "198.51.100.7",
                    "203.0.113.9",
                    40000,
                    5060,
                    TCP_PSH | TCP_ACK,
                    &[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2],
                )
            },
        ),
        (
            "tcp4 max options",
            Frame::tcp(
                "198.51.100.7",
                "203.0.113.9",
                40000,
                5060,
                TCP_SYN,
                &[1; 40],
            ),
        ),
        (
            "tcp6 psh",
            Frame {
                payload: SIP_OPTIONS.to_vec(),
                ..Frame::tcp(
                    "2001:db8::7",
                    "2001:db8::9",
                    40000,
                    5060,
                    TCP_PSH | TCP_ACK,
                    &LINUX_SYN_OPTIONS,
                )
            },
        ),
        (
            "icmp4",
            Frame {
                l4: L4::Other(1),
                payload: vec![8, 0, 0, 0, 0, 1, 0, 1],
                ..v4(0, 0, b"")
            },
        ),
        (
            "icmp6",
            Frame {
                l4: L4::Other(58),
                payload: vec![128, 0, 0, 0, 0, 1, 0, 1],
                ..v6(0, 0, b"")
            },
        ),
    ];
    let mut with = |name: &'static str, base: Frame, change: &dyn Fn(&mut Frame)| {
        let mut frame = base;
        change(&mut frame);
        list.push((name, frame));
    };
    with("vlan", v4(5060, 5060, SIP_OPTIONS), &|f| {
        f.vlans = vec![(0x8100, 100)]
    });
    with("qinq", v6(5060, 5060, SIP_OPTIONS), &|f| {
        f.vlans = vec![(0x88a8, 10), (0x8100, 4095)]
    });
    with("three tags", v4(5060, 5060, SIP_OPTIONS), &|f| {
        f.vlans = vec![(0x88a8, 1), (0x8100, 2), (0x8100, 3)]
    });
    with("ipv4 options", v4(5060, 5060, SIP_OPTIONS), &|f| {
        f.ipv4_options = vec![1; 40]
    });
    with("first fragment", v4(5060, 5060, SIP_OPTIONS), &|f| {
        f.more_fragments = true;
        f.dont_fragment = false;
    });
    with("later fragment", v4(5060, 5060, SIP_OPTIONS), &|f| {
        f.frag_offset = 1480;
        f.dont_fragment = false;
    });
    with("tos ttl flow", v6(5060, 5060, SIP_OPTIONS), &|f| {
        f.tos = 0xb8;
        f.ttl = 1;
        f.flow_label = 0xabcde;
    });
    with("ipv6 hbh dst rt", v6(5060, 5060, SIP_OPTIONS), &|f| {
        f.ipv6_extensions = vec![ext(0, 8, 1), ext(60, 16, 1), ext(43, 24, 0)]
    });
    with("ipv6 auth", v6(5060, 5060, SIP_OPTIONS), &|f| {
        f.ipv6_extensions = vec![ext(51, 24, 0)]
    });
    with("ipv6 first fragment", v6(5060, 5060, SIP_OPTIONS), &|f| {
        f.ipv6_extensions = vec![fragment_ext(0, true)]
    });
    with("ipv6 later fragment", v6(5060, 5060, SIP_OPTIONS), &|f| {
        f.ipv6_extensions = vec![fragment_ext(1448, false)]
    });
    with("ipv6 four extensions", v6(5060, 5060, SIP_OPTIONS), &|f| {
        f.ipv6_extensions = vec![
            ext(0, 8, 1),
            ext(60, 8, 1),
            ext(60, 8, 1),
            fragment_ext(0, false),
        ]
    });
    with("ipv6 five extensions", v6(5060, 5060, SIP_OPTIONS), &|f| {
        f.ipv6_extensions = vec![ext(0, 8, 1); 5]
    });
    with("tcp6 behind extensions", v6(40000, 5060, b""), &|f| {
        f.l4 = L4::Tcp {
            flags: TCP_SYN,
            seq: 7,
            ack: 0,
            window: 1024,
            options: vec![2, 4, 5, 0xb4],
        };
        f.ipv6_extensions = vec![ext(60, 8, 1)];
    });
    let mut frames: Vec<(String, Vec<u8>)> = list
        .into_iter()
        .map(|(n, f)| (format!("crafted {n}"), f.build()))
        .collect();

    // Frames the builder cannot make.
    let sip = v4(5060, 5060, b"OPTIONS").build();
    let mut padded = sip.clone();
    padded.resize(60, 0);
    frames.push(("crafted ethernet padding".into(), padded));
    let mut arp = sip.clone();
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    frames.push(("crafted arp".into(), arp));
    let mut short_ip = sip.clone();
    short_ip[16..18].copy_from_slice(&19u16.to_be_bytes());
    frames.push(("crafted total length < ihl".into(), short_ip));
    let mut bad_version = sip.clone();
    bad_version[14] = 0x65;
    frames.push(("crafted version 6 in ipv4".into(), bad_version));
    let mut udp_short = sip.clone();
    udp_short[14 + 20 + 4..14 + 20 + 6].copy_from_slice(&7u16.to_be_bytes());
    frames.push(("crafted udp length 7".into(), udp_short));
    let mut udp_long = sip.clone();
    udp_long[14 + 20 + 4..14 + 20 + 6].copy_from_slice(&3000u16.to_be_bytes());
    frames.push(("crafted udp length beyond ip".into(), udp_long));
    let mut ip_long = sip;
    ip_long[16..18].copy_from_slice(&1500u16.to_be_bytes());
    frames.push(("crafted ip length beyond frame".into(), ip_long));
    frames.extend(boundary_frames());
    frames
}

/// Lengths set just around where each length check flips: IPv6 payload lengths around the end
/// of each kind of extension header, IPv4 total lengths around the header and the UDP and TCP
/// headers, TCP data offsets around the IP payload.
pub fn boundary_frames() -> Vec<(String, Vec<u8>)> {
    let mut frames = Vec::new();
    let v6 = Frame::udp("2001:db8::7", "2001:db8::9", 5060, 5060, b"OPTIONS");
    for (kind, extension) in [
        (0, ext(0, 16, 1)),
        (43, ext(43, 8, 0)),
        (60, ext(60, 24, 1)),
        (51, ext(51, 12, 0)),
        (44, fragment_ext(0, true)),
    ] {
        let ext_len = extension.1.len() + 1;
        let frame = Frame {
            ipv6_extensions: vec![extension],
            ..v6.clone()
        }
        .build();
        for payload_len in [ext_len - 1, ext_len, ext_len + 7, ext_len + 8, ext_len + 9] {
            let mut f = frame.clone();
            set16(&mut f, 14 + 4, payload_len as u16);
            frames.push((
                format!("boundary ipv6 ext {kind} payload length {payload_len}"),
                f,
            ));
        }
    }
    let v4 = Frame::udp("198.51.100.7", "203.0.113.9", 5060, 5060, b"OPTIONS").build();
    for total in [19u16, 20, 21, 27, 28, 29, 35] {
        let mut f = v4.clone();
        set16(&mut f, 14 + 2, total);
        frames.push((format!("boundary ipv4 total length {total}"), f));
    }
    for udp_len in [0u16, 7, 8, 9, 15, 16] {
        let mut f = v4.clone();
        set16(&mut f, 14 + 20 + 4, udp_len);
        frames.push((format!("boundary udp length {udp_len}"), f));
    }
    let tcp = Frame::tcp(
        "198.51.100.7",
        "203.0.113.9",
        40000,
        5060,
        TCP_SYN,
        &LINUX_SYN_OPTIONS,
    );
    let tcp = Frame {
        payload: b"OPTIONS".to_vec(),
        ..tcp
    }
    .build();
    for total in [39u16, 40, 44, 59, 60, 61, 67] {
        let mut f = tcp.clone();
        set16(&mut f, 14 + 2, total);
        frames.push((format!("boundary tcp ip total length {total}"), f));
    }
    for data_offset in [0u8, 4, 5, 10, 11, 15] {
        let mut f = tcp.clone();
        f[14 + 20 + 12] = data_offset << 4;
        frames.push((format!("boundary tcp data offset {data_offset}"), f));
    }
    frames
}

/// Where the IP header starts, following up to three VLAN tags; None if not IP.
pub fn ip_offset(frame: &[u8]) -> Option<(usize, u16)> {
    let mut off = 12;
    for _ in 0..4 {
        let ethertype = u16::from_be_bytes([*frame.get(off)?, *frame.get(off + 1)?]);
        if ethertype == 0x8100 || ethertype == 0x88a8 {
            off += 4;
            continue;
        }
        return Some((off + 2, ethertype));
    }
    None
}

pub fn set16(frame: &mut [u8], at: usize, value: u16) {
    if let Some(slot) = frame.get_mut(at..at + 2) {
        slot.copy_from_slice(&value.to_be_bytes());
    }
}

/// Where the L4 header starts for a plain IPv4 or IPv6 packet (no extension headers).
pub fn l4_offset(frame: &[u8]) -> Option<(usize, u8)> {
    let (ip, ethertype) = ip_offset(frame)?;
    match ethertype {
        0x0800 => Some((
            ip + usize::from(frame.get(ip)? & 0x0f) * 4,
            *frame.get(ip + 9)?,
        )),
        0x86dd => Some((ip + 40, *frame.get(ip + 6)?)),
        _ => None,
    }
}

pub fn mutate(rng: &mut Rng, base: &[u8]) -> Vec<u8> {
    let mut f = base.to_vec();
    for _ in 0..1 + rng.below(3) {
        if f.is_empty() {
            break;
        }
        match rng.below(16) {
            0 => {
                let at = rng.below(f.len().min(96));
                f[at] ^= 1 << rng.below(8);
            }
            1 => {
                let at = rng.below(f.len());
                f[at] ^= 1 << rng.below(8);
            }
            2 => {
                let at = rng.below(f.len().min(96));
                f[at] = rng.byte();
            }
            3 => {
                let len = rng.below(f.len() + 1);
                f.truncate(len);
            }
            4 => {
                let tpid: u16 = if rng.below(2) == 0 { 0x8100 } else { 0x88a8 };
                let mut tag = tpid.to_be_bytes().to_vec();
                tag.extend_from_slice(&(rng.next_u64() as u16).to_be_bytes());
                if f.len() >= 12 {
                    f.splice(12..12, tag);
                }
            }
            5 => {
                if f.len() >= 18 && matches!(u16::from_be_bytes([f[12], f[13]]), 0x8100 | 0x88a8) {
                    f.drain(12..16);
                }
            }
            6 => {
                if let Some((ip, 0x0800)) = ip_offset(&f)
                    && let Some(b) = f.get_mut(ip)
                {
                    *b = (*b & 0xf0) | rng.below(16) as u8;
                }
            }
            7 => {
                if let Some((ip, ethertype)) = ip_offset(&f) {
                    let at = if ethertype == 0x86dd { ip + 4 } else { ip + 2 };
                    let current = f
                        .get(at..at + 2)
                        .map(|b| u16::from_be_bytes([b[0], b[1]]))
                        .unwrap_or(0);
                    // IPv4 total length counts the header; around its end the length checks flip.
                    let header_len = if ethertype == 0x86dd {
                        0
                    } else {
                        f.get(ip).map(|b| u16::from(b & 0x0f) * 4).unwrap_or(20)
                    };
                    let value = match rng.below(4) {
                        0 => rng.next_u64() as u16,
                        1 => current.wrapping_add(rng.below(16) as u16).wrapping_sub(8),
                        2 => rng.below(64) as u16,
                        _ => (header_len + [0u16, 8, 20, 28, 40][rng.below(5)])
                            .wrapping_add(rng.below(3) as u16)
                            .wrapping_sub(1),
                    };
                    set16(&mut f, at, value);
                }
            }
            8 => {
                if let Some((l4, proto)) = l4_offset(&f) {
                    match proto {
                        17 => {
                            let value = match rng.below(2) {
                                0 => rng.next_u64() as u16,
                                _ => rng.below(32) as u16,
                            };
                            set16(&mut f, l4 + 4, value);
                        }
                        6 => {
                            if let Some(b) = f.get_mut(l4 + 12) {
                                *b = (rng.below(16) as u8) << 4 | (*b & 0x0f);
                            }
                        }
                        _ => {}
                    }
                }
            }
            9 => {
                // Insert an IPv6 extension header right after the fixed header.
                if let Some((ip, 0x86dd)) = ip_offset(&f)
                    && f.len() >= ip + 40
                {
                    let kind = [0u8, 43, 44, 51, 60][rng.below(5)];
                    let len_field = rng.below(4) as u8;
                    let total = match kind {
                        44 => 8,
                        51 => (usize::from(len_field) + 2) * 4,
                        _ => (usize::from(len_field) + 1) * 8,
                    };
                    let mut header = vec![0u8; total];
                    header[0] = f[ip + 6];
                    header[1] = if kind == 44 { 0 } else { len_field };
                    if kind == 44 {
                        let field = [0u16, 1, 8, 0xfff9, rng.next_u64() as u16][rng.below(5)];
                        header[2..4].copy_from_slice(&field.to_be_bytes());
                    }
                    f[ip + 6] = kind;
                    let payload = u16::from_be_bytes([f[ip + 4], f[ip + 5]]);
                    let new_payload = match rng.below(4) {
                        0 => payload,
                        1 | 2 => payload.wrapping_add(total as u16),
                        // Just around the end of the new header: the boundaries of the
                        // "extension longer than the payload" check and of the L4 checks.
                        _ => (total as u16 + [0u16, 1, 8, 9, 20][rng.below(5)])
                            .saturating_sub(rng.below(2) as u16),
                    };
                    set16(&mut f, ip + 4, new_payload);
                    f.splice(ip + 40..ip + 40, header);
                }
            }
            10 => {
                if let Some((ip, 0x0800)) = ip_offset(&f) {
                    let field = [
                        0u16,
                        0x2000,
                        0x4000,
                        0x8000,
                        0x0001,
                        0x2001,
                        0x1fff,
                        rng.next_u64() as u16,
                    ][rng.below(8)];
                    set16(&mut f, ip + 6, field);
                }
            }
            11 => {
                let pad = 1 + rng.below(64);
                let fill = if rng.below(2) == 0 { 0 } else { rng.byte() };
                f.extend(std::iter::repeat_n(fill, pad));
            }
            12 => {
                let ethertype = [
                    0x0800u16,
                    0x86dd,
                    0x8100,
                    0x88a8,
                    0x0806,
                    0x88cc,
                    rng.next_u64() as u16,
                ][rng.below(7)];
                let at = ip_offset(&f).map(|(ip, _)| ip - 2).unwrap_or(12);
                set16(&mut f, at, ethertype);
            }
            13 => {
                if let Some((l4, _)) = l4_offset(&f) {
                    let port = [5060u16, 5061, 5062, 0, 65535, rng.next_u64() as u16][rng.below(6)];
                    set16(&mut f, l4 + 2 * rng.below(2), port);
                }
            }
            14 => {
                if let Some((ip, ethertype)) = ip_offset(&f) {
                    let at = if ethertype == 0x86dd { ip + 6 } else { ip + 9 };
                    let proto = [6u8, 17, 1, 58, 0, 43, 44, 51, 60, rng.byte()][rng.below(10)];
                    if let Some(b) = f.get_mut(at) {
                        *b = proto;
                    }
                }
            }
            _ => {
                if let Some((ip, _)) = ip_offset(&f) {
                    let version = [4u8, 6, 0, 15][rng.below(4)];
                    if let Some(b) = f.get_mut(ip) {
                        *b = version << 4 | (*b & 0x0f);
                    }
                }
            }
        }
    }
    f.truncate(MAX_FRAME);
    f
}
