//! Header parsing with direct packet access: one bounds check per header, then reads inside it.
//!
//! The rules here are mirrored by the agent's userspace extractor (`sensor::offline::extract`) so
//! that offline analysis produces the same records; change both together.

use aya_ebpf::programs::XdpContext;
use sensor_common::{CaptureRecord, Counter, ip_flags, ip_proto};

const ETH_HEADER_LEN: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
const MAX_VLAN_TAGS: usize = 2;
/// IPv6 extension headers followed before giving up (counted as `Ipv6ExtensionLimit`).
const MAX_IPV6_EXTENSIONS: usize = 4;

const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_AUTH: u8 = 51;
const IPV6_DEST_OPTS: u8 = 60;

/// What the record needs from the headers of a UDP or TCP frame.
///
/// The first `CaptureRecord::HEADER_LEN` bytes have the record's layout exactly (checked below at
/// compile time), so that `emit` copies them into the ring buffer as 13 word stores; the fields
/// the program sets at emit time (timestamp, interface, queue, frame length, captured length,
/// flags) are written over the copy there. Only the offsets at the end are not in the record.
///
/// Addresses are kept as 32-bit words loaded straight from the packet (so in memory they hold the
/// wire bytes): word loads and stores, where byte arrays would make LLVM call a byte-by-byte
/// memset/memcpy.
#[repr(C)]
pub struct Headers {
    pub timestamp_ns: u64,
    pub ifindex: u32,
    pub rx_queue: u32,
    pub src_addr: [u32; 4],
    pub dst_addr: [u32; 4],
    pub tcp_seq: u32,
    pub tcp_ack: u32,
    pub flow_label: u32,
    pub frame_len: u32,
    pub ip_id: u16,
    pub ip_total_len: u16,
    pub frag_offset: u16,
    pub src_port: u16,
    pub dst_port: u16,
    pub tcp_window: u16,
    pub payload_len: u16,
    pub captured_len: u16,
    pub payload_offset: u16,
    pub vlan_ids: [u16; 2],
    pub ip_version: u8,
    pub ttl: u8,
    pub tos: u8,
    pub l4_proto: u8,
    pub ip_flags: u8,
    pub flags: u8,
    pub vlan_count: u8,
    pub tcp_flags: u8,
    pub tcp_data_offset: u8,
    pub tcp_options_len: u8,
    pub reserved: [u8; 8],
    // Not in the record.
    pub tcp_options_offset: u16,
    /// Offset of the IP header (after Ethernet and VLAN tags).
    pub l3_offset: u16,
    /// Offset of the UDP or TCP header.
    pub l4_offset: u16,
    pub padding: u16,
}

/// Words of `Headers` that are the record's first `CaptureRecord::HEADER_LEN` bytes.
pub const RECORD_HEAD_WORDS: usize = CaptureRecord::HEADER_LEN / 8;

// `Headers` starts with the record's header, field for field.
const _: () = {
    use core::mem::offset_of;
    macro_rules! same {
        ($($f:ident),*) => {
            $(assert!(offset_of!(Headers, $f) == offset_of!(CaptureRecord, $f));)*
        };
    }
    same!(
        timestamp_ns,
        ifindex,
        rx_queue,
        src_addr,
        dst_addr,
        tcp_seq,
        tcp_ack,
        flow_label,
        frame_len,
        ip_id,
        ip_total_len,
        frag_offset,
        src_port,
        dst_port,
        tcp_window,
        payload_len,
        captured_len,
        payload_offset,
        vlan_ids,
        ip_version,
        ttl,
        tos,
        l4_proto,
        ip_flags,
        flags,
        vlan_count,
        tcp_flags,
        tcp_data_offset,
        tcp_options_len,
        reserved
    );
    assert!(offset_of!(Headers, tcp_options_offset) == CaptureRecord::HEADER_LEN);
    assert!(CaptureRecord::HEADER_LEN.is_multiple_of(8));
    assert!(core::mem::size_of::<Headers>().is_multiple_of(8));
};

impl Headers {
    /// Zeroes `h` in place, word by word with volatile stores: LLVM would otherwise merge zero
    /// stores into a call to compiler_builtins' memset, a byte-at-a-time loop that cost hundreds
    /// of instructions per frame; and in place, because a returned struct is copied the same way.
    #[inline(always)]
    pub fn zero_in_place(h: &mut core::mem::MaybeUninit<Headers>) -> &mut Headers {
        let words = h.as_mut_ptr().cast::<u64>();
        unsafe {
            for i in 0..core::mem::size_of::<Headers>() / 8 {
                core::ptr::write_volatile(words.add(i), 0);
            }
            h.assume_init_mut()
        }
    }
}

/// Pointer to `len` bytes at `off`, or `Truncated` when the frame ends first.
#[inline(always)]
fn header(ctx: &XdpContext, off: usize, len: usize) -> Result<*const u8, Counter> {
    let start = ctx.data();
    if start + off + len > ctx.data_end() {
        return Err(Counter::Truncated);
    }
    Ok((start + off) as *const u8)
}

#[inline(always)]
unsafe fn u8_at(p: *const u8, i: usize) -> u8 {
    unsafe { *p.add(i) }
}

/// Network-order 16-bit field. Every such field sits at an even offset from the frame start
/// (Ethernet, VLAN tags, IP, its options and extension headers are all whole 16-bit words), so a
/// halfword load: two instructions where byte loads and shifts take four.
#[inline(always)]
unsafe fn be16(p: *const u8, i: usize) -> u16 {
    unsafe { u16::from_be(*(p.add(i) as *const u16)) }
}

/// Network-order 32-bit field: one word load (see `word`).
#[inline(always)]
unsafe fn be32(p: *const u8, i: usize) -> u32 {
    unsafe { u32::from_be(word(p, i)) }
}

/// A 32-bit word of packet memory, byte order untouched. Packet data is only 2-byte aligned; BPF
/// loads do not fault on misalignment (the verifier only checks bounds), and a word load is what
/// keeps address copies cheap.
#[inline(always)]
unsafe fn word(p: *const u8, i: usize) -> u32 {
    unsafe { *(p.add(i) as *const u32) }
}

/// What `quick` found.
pub enum Quick {
    /// Untagged IPv4 (any IHL) or IPv6 without extension headers, carrying UDP or TCP, every check
    /// `parse` makes passed: what `parse` would return.
    Parsed(Parsed),
    /// An untagged frame of another ethertype: `parse` would return `NonIp`.
    NonIp,
    /// Anything else: `parse` decides.
    Parse,
}

/// The outcome of the common frame, decided with as little work as possible, so that frames that
/// do not match (ports not in the set, non-IP) end before any other work.
#[inline(always)]
pub fn quick(ctx: &XdpContext) -> Quick {
    match quick_inner(ctx) {
        Some(quick) => quick,
        None => Quick::Parse,
    }
}

#[inline(always)]
fn quick_inner(ctx: &XdpContext) -> Option<Quick> {
    let start = ctx.data();
    let end = ctx.data_end();
    // Ethernet + the smallest IPv4 header + UDP: the least a frame this path takes holds.
    if start + ETH_HEADER_LEN + 20 + 8 > end {
        return None;
    }
    let eth = start as *const u8;
    let ethertype = unsafe { be16(eth, 12) };
    let (l4, ip_payload, proto, ip_version) = if ethertype == ETHERTYPE_IPV4 {
        let ip = unsafe { eth.add(ETH_HEADER_LEN) };
        let b0 = unsafe { u8_at(ip, 0) };
        let ihl = usize::from(b0 & 0x0f) * 4;
        if b0 >> 4 != 4 || ihl < 20 {
            return None;
        }
        let total = usize::from(unsafe { be16(ip, 2) });
        // Not a later fragment (offset 0), and the total length covers the header.
        if unsafe { be16(ip, 6) } & 0x1fff != 0 || total < ihl {
            return None;
        }
        (
            ETH_HEADER_LEN + ihl,
            total - ihl,
            unsafe { u8_at(ip, 9) },
            4,
        )
    } else if ethertype == ETHERTYPE_IPV6 {
        if start + ETH_HEADER_LEN + 40 > end {
            return None;
        }
        let ip = unsafe { eth.add(ETH_HEADER_LEN) };
        if unsafe { u8_at(ip, 0) } >> 4 != 6 {
            return None;
        }
        (
            ETH_HEADER_LEN + 40,
            usize::from(unsafe { be16(ip, 4) }),
            unsafe { u8_at(ip, 6) },
            6,
        )
    } else if ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ {
        return None;
    } else {
        return Some(Quick::NonIp);
    };
    if proto == ip_proto::UDP {
        if start + l4 + 8 > end {
            return None;
        }
        let udp = (start + l4) as *const u8;
        let udp_len = usize::from(unsafe { be16(udp, 4) });
        if udp_len < 8 || ip_payload < 8 {
            return None;
        }
        let carried = if udp_len < ip_payload {
            udp_len
        } else {
            ip_payload
        };
        Some(Quick::Parsed(Parsed {
            l3_offset: ETH_HEADER_LEN,
            l4_offset: l4,
            payload_offset: l4 + 8,
            payload_len: carried - 8,
            src_port: unsafe { be16(udp, 0) },
            dst_port: unsafe { be16(udp, 2) },
            ip_version,
            l4_proto: proto,
            ip6_flags: 0,
        }))
    } else if proto == ip_proto::TCP {
        if start + l4 + 20 > end {
            return None;
        }
        let tcp = (start + l4) as *const u8;
        let data_offset = usize::from(unsafe { u8_at(tcp, 12) } >> 4) * 4;
        if data_offset < 20 || ip_payload < data_offset || start + l4 + data_offset > end {
            return None;
        }
        Some(Quick::Parsed(Parsed {
            l3_offset: ETH_HEADER_LEN,
            l4_offset: l4,
            payload_offset: l4 + data_offset,
            payload_len: ip_payload - data_offset,
            src_port: unsafe { be16(tcp, 0) },
            dst_port: unsafe { be16(tcp, 2) },
            ip_version,
            l4_proto: proto,
            ip6_flags: 0,
        }))
    } else {
        None
    }
}

/// What matching needs from a UDP or TCP first fragment: offsets, ports and lengths, returned in
/// registers. Everything else a record holds is read by `fill`, for matched frames only, so the
/// frames that do not match (nearly all of them) write nothing to the stack.
#[derive(Clone, Copy)]
pub struct Parsed {
    /// Offset of the IP header (after Ethernet and VLAN tags).
    pub l3_offset: usize,
    /// Offset of the UDP or TCP header.
    pub l4_offset: usize,
    pub payload_offset: usize,
    /// L4 payload length the headers declare.
    pub payload_len: usize,
    pub src_port: u16,
    pub dst_port: u16,
    pub ip_version: u8,
    pub l4_proto: u8,
    /// `ip_flags` from an IPv6 fragment header (IPv4 flags are read again by `fill`).
    pub ip6_flags: u8,
}

/// Validates the frame's headers and returns what matching needs, or the outcome counter for
/// frames that are not UDP or TCP first fragments. Only what matching and the checks need is
/// read here; `fill` reads the rest for matched frames.
#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Result<Parsed, Counter> {
    let eth = header(ctx, 0, ETH_HEADER_LEN)?;
    let mut ethertype = unsafe { be16(eth, 12) };
    let mut off = ETH_HEADER_LEN;
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != ETHERTYPE_VLAN && ethertype != ETHERTYPE_QINQ {
            break;
        }
        let tag = header(ctx, off, 4)?;
        ethertype = unsafe { be16(tag, 2) };
        off += 4;
    }

    let l3_offset = off;
    let mut ip6_flags = 0;
    // Bytes of IP payload (after the IP header and any extension headers).
    let ip_payload: usize;
    let mut next: u8;
    let ip_version: u8;
    match ethertype {
        ETHERTYPE_IPV4 => {
            let ip = header(ctx, off, 20)?;
            let b0 = unsafe { u8_at(ip, 0) };
            let ihl = usize::from(b0 & 0x0f) * 4;
            if b0 >> 4 != 4 || ihl < 20 {
                return Err(Counter::Malformed);
            }
            // Options must be in the frame too.
            header(ctx, off, ihl)?;
            let total = unsafe { be16(ip, 2) };
            if usize::from(total) < ihl {
                return Err(Counter::Malformed);
            }
            if unsafe { be16(ip, 6) } & 0x1fff != 0 {
                return Err(Counter::NonFirstFragment);
            }
            ip_version = 4;
            next = unsafe { u8_at(ip, 9) };
            off += ihl;
            ip_payload = usize::from(total) - ihl;
        }
        ETHERTYPE_IPV6 => {
            let ip = header(ctx, off, 40)?;
            let b0 = unsafe { u8_at(ip, 0) };
            if b0 >> 4 != 6 {
                return Err(Counter::Malformed);
            }
            let payload = unsafe { be16(ip, 4) };
            ip_version = 6;
            next = unsafe { u8_at(ip, 6) };
            off += 40;
            let mut remaining = usize::from(payload);
            for _ in 0..MAX_IPV6_EXTENSIONS {
                let len = match next {
                    IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS => {
                        let ext = header(ctx, off, 8)?;
                        next = unsafe { u8_at(ext, 0) };
                        (usize::from(unsafe { u8_at(ext, 1) }) + 1) * 8
                    }
                    IPV6_AUTH => {
                        let ext = header(ctx, off, 8)?;
                        next = unsafe { u8_at(ext, 0) };
                        (usize::from(unsafe { u8_at(ext, 1) }) + 2) * 4
                    }
                    IPV6_FRAGMENT => {
                        let ext = header(ctx, off, 8)?;
                        next = unsafe { u8_at(ext, 0) };
                        let frag = unsafe { be16(ext, 2) };
                        ip6_flags |= ip_flags::IPV6_FRAGMENT_HEADER;
                        if frag & 1 != 0 {
                            ip6_flags |= ip_flags::MF;
                        }
                        if frag & 0xfff8 != 0 {
                            return Err(Counter::NonFirstFragment);
                        }
                        8
                    }
                    _ => break,
                };
                if remaining < len {
                    return Err(Counter::Malformed);
                }
                remaining -= len;
                off += len;
            }
            if matches!(
                next,
                IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS | IPV6_AUTH | IPV6_FRAGMENT
            ) {
                return Err(Counter::Ipv6ExtensionLimit);
            }
            ip_payload = remaining;
        }
        _ => return Err(Counter::NonIp),
    }

    let (src_port, dst_port, payload_offset, payload_len) = match next {
        ip_proto::UDP => {
            let udp = header(ctx, off, 8)?;
            let udp_len = usize::from(unsafe { be16(udp, 4) });
            // A first fragment's UDP length covers the whole datagram; the IP length bounds what
            // this packet carries.
            let carried = if udp_len < ip_payload {
                udp_len
            } else {
                ip_payload
            };
            if carried < 8 {
                return Err(Counter::Malformed);
            }
            unsafe { (be16(udp, 0), be16(udp, 2), off + 8, carried - 8) }
        }
        ip_proto::TCP => {
            let tcp = header(ctx, off, 20)?;
            let b12 = unsafe { u8_at(tcp, 12) };
            let data_offset = usize::from(b12 >> 4) * 4;
            if data_offset < 20 || ip_payload < data_offset {
                return Err(Counter::Malformed);
            }
            header(ctx, off, data_offset)?;
            unsafe {
                (
                    be16(tcp, 0),
                    be16(tcp, 2),
                    off + data_offset,
                    ip_payload - data_offset,
                )
            }
        }
        _ => return Err(Counter::OtherL4),
    };
    Ok(Parsed {
        l3_offset,
        l4_offset: off,
        payload_offset,
        payload_len,
        src_port,
        dst_port,
        ip_version,
        l4_proto: next,
        ip6_flags,
    })
}

/// Fills `h` (zeroed here) for a matched frame: what `parse` found, and the fields only a record
/// needs (VLAN IDs, addresses, TTL, TOS, IP-ID, IP flags, flow label, TCP sequence numbers,
/// flags, window and options), read again from headers `parse` bounds-checked; the checks here
/// repeat them for the verifier. False only if they fail, which `parse` rules out.
#[inline(always)]
pub fn fill(ctx: &XdpContext, p: &Parsed, h: &mut core::mem::MaybeUninit<Headers>) -> bool {
    let h = Headers::zero_in_place(h);
    // The verifier only accepts a variable packet offset it can bound well below 64 KiB, so bound
    // them (without changing them: the IP header starts within 22 bytes, L4 within
    // 22 + 40 + 4 * 2048).
    let l3 = p.l3_offset & 0x1f;
    let l4 = p.l4_offset & 0x3fff;
    h.l3_offset = l3 as u16;
    h.l4_offset = l4 as u16;
    h.src_port = p.src_port;
    h.dst_port = p.dst_port;
    h.payload_offset = p.payload_offset as u16;
    h.payload_len = p.payload_len as u16;
    h.ip_version = p.ip_version;
    h.l4_proto = p.l4_proto;
    if l3 > ETH_HEADER_LEN {
        let Ok(tags) = header(ctx, ETH_HEADER_LEN, 4) else {
            return false;
        };
        h.vlan_ids[0] = unsafe { be16(tags, 0) } & 0x0fff;
        h.vlan_count = 1;
        if l3 > ETH_HEADER_LEN + 4 {
            let Ok(tags) = header(ctx, ETH_HEADER_LEN + 4, 4) else {
                return false;
            };
            h.vlan_ids[1] = unsafe { be16(tags, 0) } & 0x0fff;
            h.vlan_count = 2;
        }
    }
    if p.ip_version == 4 {
        let Ok(ip) = header(ctx, l3, 20) else {
            return false;
        };
        unsafe {
            h.tos = u8_at(ip, 1);
            h.ip_total_len = be16(ip, 2);
            h.ip_id = be16(ip, 4);
            let frag = be16(ip, 6);
            h.frag_offset = (frag & 0x1fff) << 3;
            let mut flags = 0;
            if frag & 0x4000 != 0 {
                flags |= ip_flags::DF;
            }
            if frag & 0x2000 != 0 {
                flags |= ip_flags::MF;
            }
            if frag & 0x8000 != 0 {
                flags |= ip_flags::RESERVED;
            }
            h.ip_flags = flags;
            h.ttl = u8_at(ip, 8);
            h.src_addr[0] = word(ip, 12);
            h.dst_addr[0] = word(ip, 16);
        }
    } else {
        let Ok(ip) = header(ctx, l3, 40) else {
            return false;
        };
        unsafe {
            let b0 = u8_at(ip, 0);
            let b1 = u8_at(ip, 1);
            h.tos = ((b0 & 0x0f) << 4) | (b1 >> 4);
            h.flow_label = (u32::from(b1 & 0x0f) << 16) | u32::from(be16(ip, 2));
            h.ip_total_len = be16(ip, 4).saturating_add(40);
            h.ttl = u8_at(ip, 7);
            h.src_addr = [word(ip, 8), word(ip, 12), word(ip, 16), word(ip, 20)];
            h.dst_addr = [word(ip, 24), word(ip, 28), word(ip, 32), word(ip, 36)];
        }
        // A first fragment (parse refused the others): offset 0.
        h.ip_flags = p.ip6_flags;
    }
    if p.l4_proto == ip_proto::TCP {
        let Ok(tcp) = header(ctx, l4, 20) else {
            return false;
        };
        unsafe {
            let b12 = u8_at(tcp, 12);
            h.tcp_data_offset = b12 >> 4;
            h.tcp_options_len = (usize::from(b12 >> 4) * 4).saturating_sub(20) as u8;
            h.tcp_options_offset = (l4 + 20) as u16;
            h.tcp_seq = be32(tcp, 4);
            h.tcp_ack = be32(tcp, 8);
            h.tcp_flags = u8_at(tcp, 13);
            h.tcp_window = be16(tcp, 14);
        }
    }
    true
}
