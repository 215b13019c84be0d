//! Crafted Ethernet frames for kernel tests: every field under the test's control, checksums
//! right, so that the same frames also make valid pcaps.

use std::net::IpAddr;

pub const ETH_DST: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
pub const ETH_SRC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];

#[derive(Clone, Debug)]
pub enum L4 {
    Udp,
    Tcp {
        flags: u8,
        seq: u32,
        ack: u32,
        window: u16,
        options: Vec<u8>,
    },
    /// Any other protocol number; the payload follows the IP header directly.
    Other(u8),
}

/// A frame description; `build()` lays it out.
#[derive(Clone, Debug)]
pub struct Frame {
    /// (TPID, VLAN ID) per tag, outermost first.
    pub vlans: Vec<(u16, u16)>,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    pub ttl: u8,
    pub tos: u8,
    pub ip_id: u16,
    pub dont_fragment: bool,
    pub more_fragments: bool,
    /// Fragment offset in bytes (multiple of 8).
    pub frag_offset: u16,
    pub ipv4_options: Vec<u8>,
    pub flow_label: u32,
    /// IPv6 extension headers as (type, bytes without the next-header byte).
    pub ipv6_extensions: Vec<(u8, Vec<u8>)>,
    pub l4: L4,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn udp(src: &str, dst: &str, src_port: u16, dst_port: u16, payload: &[u8]) -> Self {
        Self {
            vlans: Vec::new(),
            src: src.parse().expect("source address"),
            dst: dst.parse().expect("destination address"),
            src_port,
            dst_port,
            ttl: 64,
            tos: 0,
            ip_id: 0x1234,
            dont_fragment: true,
            more_fragments: false,
            frag_offset: 0,
            ipv4_options: Vec::new(),
            flow_label: 0,
            ipv6_extensions: Vec::new(),
            l4: L4::Udp,
            payload: payload.to_vec(),
        }
    }

    pub fn tcp(
        src: &str,
        dst: &str,
        src_port: u16,
        dst_port: u16,
        flags: u8,
        options: &[u8],
    ) -> Self {
        Self {
            l4: L4::Tcp {
                flags,
                seq: 0x0102_0304,
                ack: 0,
                window: 64240,
                options: options.to_vec(),
            },
            ..Self::udp(src, dst, src_port, dst_port, &[])
        }
    }

    /// Offset of the L4 payload in the built frame.
    pub fn payload_offset(&self) -> usize {
        14 + 4 * self.vlans.len() + self.ip_header_len() + self.l4_header_len()
    }

    fn ip_header_len(&self) -> usize {
        match self.src {
            IpAddr::V4(_) => 20 + self.ipv4_options.len(),
            IpAddr::V6(_) => {
                40 + self
                    .ipv6_extensions
                    .iter()
                    .map(|(_, b)| b.len() + 1)
                    .sum::<usize>()
            }
        }
    }

    fn l4_header_len(&self) -> usize {
        match &self.l4 {
            L4::Udp => 8,
            L4::Tcp { options, .. } => 20 + options.len(),
            L4::Other(_) => 0,
        }
    }

    pub fn build(&self) -> Vec<u8> {
        let mut f = Vec::with_capacity(128 + self.payload.len());
        f.extend_from_slice(&ETH_DST);
        f.extend_from_slice(&ETH_SRC);
        for (tpid, id) in &self.vlans {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&id.to_be_bytes());
        }
        let l4 = self.l4_bytes();
        let proto = match &self.l4 {
            L4::Udp => 17,
            L4::Tcp { .. } => 6,
            L4::Other(p) => *p,
        };
        match (self.src, self.dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                f.extend_from_slice(&0x0800u16.to_be_bytes());
                assert!(
                    self.ipv4_options.len().is_multiple_of(4),
                    "IPv4 options pad to 4 bytes"
                );
                let ihl = (20 + self.ipv4_options.len()) / 4;
                let total = (ihl * 4 + l4.len()) as u16;
                let mut frag = self.frag_offset / 8;
                if self.dont_fragment {
                    frag |= 0x4000;
                }
                if self.more_fragments {
                    frag |= 0x2000;
                }
                let mut ip = vec![0x40 | ihl as u8, self.tos];
                ip.extend_from_slice(&total.to_be_bytes());
                ip.extend_from_slice(&self.ip_id.to_be_bytes());
                ip.extend_from_slice(&frag.to_be_bytes());
                ip.extend_from_slice(&[self.ttl, proto, 0, 0]);
                ip.extend_from_slice(&src.octets());
                ip.extend_from_slice(&dst.octets());
                ip.extend_from_slice(&self.ipv4_options);
                let sum = checksum(&ip, 0);
                ip[10..12].copy_from_slice(&sum.to_be_bytes());
                f.extend_from_slice(&ip);
                f.extend_from_slice(&l4_with_checksum(
                    &l4,
                    &self.l4,
                    &pseudo_v4(src.octets(), dst.octets(), proto, l4.len()),
                ));
            }
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                f.extend_from_slice(&0x86ddu16.to_be_bytes());
                let mut ext = Vec::new();
                let first_next = self
                    .ipv6_extensions
                    .first()
                    .map(|(t, _)| *t)
                    .unwrap_or(proto);
                for (i, (_, body)) in self.ipv6_extensions.iter().enumerate() {
                    let next = self
                        .ipv6_extensions
                        .get(i + 1)
                        .map(|(t, _)| *t)
                        .unwrap_or(proto);
                    ext.push(next);
                    ext.extend_from_slice(body);
                }
                let payload_len = (ext.len() + l4.len()) as u16;
                let word = (6u32 << 28) | (u32::from(self.tos) << 20) | (self.flow_label & 0xfffff);
                f.extend_from_slice(&word.to_be_bytes());
                f.extend_from_slice(&payload_len.to_be_bytes());
                f.push(first_next);
                f.push(self.ttl);
                f.extend_from_slice(&src.octets());
                f.extend_from_slice(&dst.octets());
                f.extend_from_slice(&ext);
                f.extend_from_slice(&l4_with_checksum(
                    &l4,
                    &self.l4,
                    &pseudo_v6(src.octets(), dst.octets(), proto, l4.len()),
                ));
            }
            _ => panic!("source and destination must be the same IP version"),
        }
        f
    }

    fn l4_bytes(&self) -> Vec<u8> {
        let mut l4 = Vec::new();
        match &self.l4 {
            L4::Udp => {
                l4.extend_from_slice(&self.src_port.to_be_bytes());
                l4.extend_from_slice(&self.dst_port.to_be_bytes());
                l4.extend_from_slice(&((8 + self.payload.len()) as u16).to_be_bytes());
                l4.extend_from_slice(&[0, 0]);
            }
            L4::Tcp {
                flags,
                seq,
                ack,
                window,
                options,
            } => {
                assert!(
                    options.len().is_multiple_of(4) && options.len() <= 40,
                    "TCP options pad to 4, max 40"
                );
                l4.extend_from_slice(&self.src_port.to_be_bytes());
                l4.extend_from_slice(&self.dst_port.to_be_bytes());
                l4.extend_from_slice(&seq.to_be_bytes());
                l4.extend_from_slice(&ack.to_be_bytes());
                l4.push((((20 + options.len()) / 4) as u8) << 4);
                l4.push(*flags);
                l4.extend_from_slice(&window.to_be_bytes());
                l4.extend_from_slice(&[0, 0, 0, 0]);
                l4.extend_from_slice(options);
            }
            L4::Other(_) => {}
        }
        l4.extend_from_slice(&self.payload);
        l4
    }
}

fn pseudo_v4(src: [u8; 4], dst: [u8; 4], proto: u8, len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(12);
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(&[0, proto]);
    p.extend_from_slice(&(len as u16).to_be_bytes());
    p
}

fn pseudo_v6(src: [u8; 16], dst: [u8; 16], proto: u8, len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(40);
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(&(len as u32).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, proto]);
    p
}

fn l4_with_checksum(l4: &[u8], kind: &L4, pseudo: &[u8]) -> Vec<u8> {
    let mut out = l4.to_vec();
    let at = match kind {
        L4::Udp => 6,
        L4::Tcp { .. } => 16,
        L4::Other(_) => return out,
    };
    let mut sum = checksum(&out, sum_words(pseudo));
    if sum == 0 && matches!(kind, L4::Udp) {
        sum = 0xffff;
    }
    out[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    out
}

fn sum_words(data: &[u8]) -> u32 {
    let mut sum = 0u32;
    for chunk in data.chunks(2) {
        let word = if chunk.len() == 2 {
            u16::from_be_bytes([chunk[0], chunk[1]])
        } else {
            u16::from_be_bytes([chunk[0], 0])
        };
        sum += u32::from(word);
    }
    sum
}

/// The Internet checksum of `data`, starting from a partial sum.
pub fn checksum(data: &[u8], initial: u32) -> u16 {
    let mut sum = initial + sum_words(data);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// TCP option bytes of a Linux SYN: MSS 1460, SACK permitted, timestamps, NOP, window scale 7.
pub const LINUX_SYN_OPTIONS: [u8; 20] = [
    0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a, 0x00, 0x01, 0x02, 0x03, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x03, 0x03, 0x07,
];

pub const TCP_SYN: u8 = 0x02;
pub const TCP_ACK: u8 = 0x10;
pub const TCP_PSH: u8 = 0x08;

/// A SIPVicious svmap OPTIONS probe (392 bytes) from 198.51.100.7 to 203.0.113.9: the matched
/// frame of the kernel cost benchmark and of the kernel profile.
pub const SVMAP_OPTIONS: &[u8] = b"OPTIONS sip:100@203.0.113.9 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-3280387012;rport\r\nMax-Forwards: 70\r\nTo: \"sipvicious\"<sip:100@1.1.1.1>\r\nFrom: \"sipvicious\"<sip:100@1.1.1.1>;tag=63303030303230613133633401353737303930303337\r\nUser-Agent: friendly-scanner\r\nCall-ID: 969890095556717129979978\r\nContact: sip:100@198.51.100.7:5060\r\nCSeq: 1 OPTIONS\r\nAccept: application/sdp\r\nContent-Length: 0\r\n\r\n";
