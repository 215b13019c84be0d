//! Header parsing with direct packet access: one bounds check per header, then reads inside it.
//!
//! The rules here are mirrored by the agent's userspace extractor (`sensor::offline::extract`) so
//! that offline analysis produces the same records; change both together.

use aya_ebpf::programs::XdpContext;
use sensor_common::{Counter, ip_flags, ip_proto};

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

/// What the record needs from the headers of a UDP or TCP frame. `repr(C)` with a size that is
/// a multiple of 4, for `new`.
///
/// Addresses are kept as 32-bit words loaded straight from the packet (so in memory they hold the
/// wire bytes): word loads and stores, where byte arrays would make LLVM call a byte-by-byte
/// memset/memcpy.
#[repr(C)]
pub struct Headers {
    pub src_addr: [u32; 4],
    pub dst_addr: [u32; 4],
    pub tcp_seq: u32,
    pub tcp_ack: u32,
    pub flow_label: u32,
    pub ip_id: u16,
    pub ip_total_len: u16,
    pub frag_offset: u16,
    pub src_port: u16,
    pub dst_port: u16,
    pub tcp_window: u16,
    pub payload_len: u16,
    pub payload_offset: u16,
    pub tcp_options_offset: u16,
    /// Offset of the IP header (after Ethernet and VLAN tags).
    pub l3_offset: u16,
    /// Offset of the UDP or TCP header.
    pub l4_offset: u16,
    pub vlan_ids: [u16; 2],
    pub ip_version: u8,
    pub ttl: u8,
    pub tos: u8,
    pub l4_proto: u8,
    pub ip_flags: u8,
    pub vlan_count: u8,
    pub tcp_flags: u8,
    pub tcp_data_offset: u8,
    pub tcp_options_len: u8,
}

impl Headers {
    /// Zeroes `h` in place, word by word with volatile stores: LLVM would otherwise merge zero
    /// stores into a call to compiler_builtins' memset, a byte-at-a-time loop that cost hundreds
    /// of instructions per frame; and in place, because a returned struct is copied the same way.
    #[inline(always)]
    pub fn zero_in_place(h: &mut core::mem::MaybeUninit<Headers>) -> &mut Headers {
        let words = h.as_mut_ptr().cast::<u32>();
        unsafe {
            for i in 0..core::mem::size_of::<Headers>() / 4 {
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

#[inline(always)]
unsafe fn be16(p: *const u8, i: usize) -> u16 {
    unsafe { u16::from_be_bytes([*p.add(i), *p.add(i + 1)]) }
}

#[inline(always)]
unsafe fn be32(p: *const u8, i: usize) -> u32 {
    unsafe { u32::from_be_bytes([*p.add(i), *p.add(i + 1), *p.add(i + 2), *p.add(i + 3)]) }
}

/// A 32-bit word of packet memory, byte order untouched. Packet data is only 2-byte aligned; BPF
/// loads do not fault on misalignment (the verifier only checks bounds), and a word load is what
/// keeps address copies cheap.
#[inline(always)]
unsafe fn word(p: *const u8, i: usize) -> u32 {
    unsafe { *(p.add(i) as *const u32) }
}

#[inline(always)]
/// Validates the frame's headers into `h` (which `Headers::new` zeroed) and returns the outcome
/// counter for frames that are not UDP or TCP first fragments. Only what matching and the checks
/// need is read here; `complete` reads the rest for matched frames.
pub fn parse(ctx: &XdpContext, h: &mut Headers) -> Result<(), Counter> {
    let eth = header(ctx, 0, ETH_HEADER_LEN)?;
    let mut ethertype = unsafe { be16(eth, 12) };
    let mut off = ETH_HEADER_LEN;
    for i in 0..MAX_VLAN_TAGS {
        if ethertype != ETHERTYPE_VLAN && ethertype != ETHERTYPE_QINQ {
            break;
        }
        let tag = header(ctx, off, 4)?;
        h.vlan_ids[i] = unsafe { be16(tag, 0) } & 0x0fff;
        h.vlan_count += 1;
        ethertype = unsafe { be16(tag, 2) };
        off += 4;
    }

    h.l3_offset = off as u16;
    // Bytes of IP payload (after the IP header and any extension headers).
    let ip_payload: usize;
    let mut next: u8;
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
            let frag = unsafe { be16(ip, 6) };
            h.ip_version = 4;
            h.ip_total_len = total;
            h.frag_offset = (frag & 0x1fff) << 3;
            if frag & 0x4000 != 0 {
                h.ip_flags |= ip_flags::DF;
            }
            if frag & 0x2000 != 0 {
                h.ip_flags |= ip_flags::MF;
            }
            if frag & 0x8000 != 0 {
                h.ip_flags |= ip_flags::RESERVED;
            }
            next = unsafe { u8_at(ip, 9) };
            if h.frag_offset != 0 {
                return Err(Counter::NonFirstFragment);
            }
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
            h.ip_version = 6;
            h.ip_total_len = payload.saturating_add(40);
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
                        h.ip_flags |= ip_flags::IPV6_FRAGMENT_HEADER;
                        if frag & 1 != 0 {
                            h.ip_flags |= ip_flags::MF;
                        }
                        h.frag_offset = frag & 0xfff8;
                        if h.frag_offset != 0 {
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

    h.l4_proto = next;
    match next {
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
            h.src_port = unsafe { be16(udp, 0) };
            h.dst_port = unsafe { be16(udp, 2) };
            h.payload_len = (carried - 8) as u16;
            h.payload_offset = (off + 8) as u16;
        }
        ip_proto::TCP => {
            let tcp = header(ctx, off, 20)?;
            let b12 = unsafe { u8_at(tcp, 12) };
            let data_offset = usize::from(b12 >> 4) * 4;
            if data_offset < 20 || ip_payload < data_offset {
                return Err(Counter::Malformed);
            }
            header(ctx, off, data_offset)?;
            h.src_port = unsafe { be16(tcp, 0) };
            h.dst_port = unsafe { be16(tcp, 2) };
            h.tcp_data_offset = b12 >> 4;
            h.tcp_options_len = (data_offset - 20) as u8;
            h.tcp_options_offset = (off + 20) as u16;
            h.payload_len = (ip_payload - data_offset) as u16;
            h.payload_offset = (off + data_offset) as u16;
        }
        _ => return Err(Counter::OtherL4),
    }
    h.l4_offset = off as u16;
    Ok(())
}

/// Reads the fields only a matched frame needs (addresses, TTL, TOS, IP-ID, flow label, TCP
/// sequence numbers, flags and window): frames that do not match never pay for them. The
/// headers were bounds-checked by `parse`; the checks here repeat them for the verifier.
#[inline(always)]
pub fn complete(ctx: &XdpContext, h: &mut Headers) -> bool {
    // Offsets come back from the stack as plain u16s; the verifier only accepts a variable
    // packet offset it can bound well below 64 KiB, so bound them (without changing them: the IP
    // header starts within 22 bytes, L4 within 22 + 40 + 4 * 2048).
    let l3 = usize::from(h.l3_offset) & 0x1f;
    let l4 = usize::from(h.l4_offset) & 0x3fff;
    if h.ip_version == 4 {
        let Ok(ip) = header(ctx, l3, 20) else {
            return false;
        };
        unsafe {
            h.tos = u8_at(ip, 1);
            h.ip_id = be16(ip, 4);
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
            h.ttl = u8_at(ip, 7);
            h.src_addr = [word(ip, 8), word(ip, 12), word(ip, 16), word(ip, 20)];
            h.dst_addr = [word(ip, 24), word(ip, 28), word(ip, 32), word(ip, 36)];
        }
    }
    if h.l4_proto == ip_proto::TCP {
        let Ok(tcp) = header(ctx, l4, 20) else {
            return false;
        };
        unsafe {
            h.tcp_seq = be32(tcp, 4);
            h.tcp_ack = be32(tcp, 8);
            h.tcp_flags = u8_at(tcp, 13);
            h.tcp_window = be16(tcp, 14);
        }
    }
    true
}
