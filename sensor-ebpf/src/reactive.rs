//! The reactive TCP responder: a stateless SYN-ACK (its sequence number a SYN cookie) for SYNs to
//! darknet prefixes, so that TCP scanners send the request they came for; and cookie validation
//! for what follows. Off unless the agent turns it on.
//!
//! Cookie: `hash(secret, addresses, ports, client ISN, t)`, 29 bits, with `t mod 4` in bits 1-2
//! and the secret's generation in bit 0. `t` is `now >> cookie_shift`; a cookie validates for the
//! current and the previous `t`, with either of the two secrets the agent keeps.

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{
        bpf_loop, bpf_xdp_adjust_tail, bpf_xdp_get_buff_len, bpf_xdp_load_bytes,
        bpf_xdp_store_bytes,
    },
    macros::map,
    maps::{
        Array, LruPerCpuHashMap, PerCpuArray,
        lpm_trie::{Key, LpmTrie},
    },
    programs::XdpContext,
};
use sensor_common::{
    Counter, REACTIVE_PREFIXES, ReactivePolicy, SOURCE_BUCKETS, SensorConfig, SourceBucket,
};

use crate::{admit, count, parse::Headers};

#[map(name = "REACTIVE_PREFIXES")]
static PREFIXES: LpmTrie<[u32; 4], u8> = LpmTrie::with_max_entries(REACTIVE_PREFIXES, 0);

/// Two 128-bit SipHash keys: slot `secret_generation` signs, both validate.
#[map(name = "COOKIE_SECRETS")]
static SECRETS: Array<[u64; 2]> = Array::with_max_entries(2, 0);

/// Room to build a reply's headers: the 512-byte stack is taken by the parse and the record.
#[map(name = "REPLY_SCRATCH")]
static REPLY_SCRATCH: PerCpuArray<[u64; 16]> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "SYNACK_BUCKETS")]
static SYNACK_BUCKETS: LruPerCpuHashMap<[u32; 4], SourceBucket> =
    LruPerCpuHashMap::with_max_entries(SOURCE_BUCKETS, 0);

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

/// What the responder makes of a matched TCP segment, decided before the record is written.
pub enum Reply {
    /// Nothing to do with this segment.
    None,
    /// A SYN to answer with this cookie.
    SynAck(u32),
    /// A segment of a session with a valid cookie; `reset` when policy says answer its data.
    Session { reset: bool },
}

/// `::ffff:0:0/96` as the third 32-bit word in memory order.
const V4_MAPPED_WORD: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

#[inline(always)]
fn lpm_key(h: &Headers, addr: &[u32; 4]) -> Key<[u32; 4]> {
    if h.ip_version == 4 {
        Key::new(128, [0, 0, V4_MAPPED_WORD, addr[0]])
    } else {
        Key::new(128, *addr)
    }
}

#[inline(always)]
fn in_prefixes(h: &Headers, addr: &[u32; 4]) -> bool {
    PREFIXES.get(lpm_key(h, addr)).is_some()
}

/// A source we may answer: unicast, not unspecified, not loopback.
#[inline(always)]
fn answerable_source(h: &Headers) -> bool {
    let first = h.src_addr[0].to_ne_bytes();
    if h.ip_version == 4 {
        let a = first[0];
        a != 0 && a != 127 && a < 224
    } else {
        let unspecified_or_loopback = h.src_addr[0] == 0
            && h.src_addr[1] == 0
            && h.src_addr[2] == 0
            && (h.src_addr[3] == 0 || h.src_addr[3] == u32::from_ne_bytes([0, 0, 0, 1]));
        first[0] != 0xff && !unspecified_or_loopback
    }
}

#[inline(always)]
fn rotl(x: u64, b: u32) -> u64 {
    x.rotate_left(b)
}

#[inline(always)]
fn sipround(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = rotl(v[1], 13);
    v[1] ^= v[0];
    v[0] = rotl(v[0], 32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = rotl(v[3], 16);
    v[3] ^= v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = rotl(v[3], 21);
    v[3] ^= v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = rotl(v[1], 17);
    v[1] ^= v[2];
    v[2] = rotl(v[2], 32);
}

/// SipHash-1-3 over six 64-bit words (the kernel's own SYN cookies use SipHash too).
#[inline(always)]
fn siphash(key: &[u64; 2], words: &[u64; 6]) -> u64 {
    let mut v = [
        key[0] ^ 0x736f_6d65_7073_6575,
        key[1] ^ 0x646f_7261_6e64_6f6d,
        key[0] ^ 0x6c79_6765_6e65_7261,
        key[1] ^ 0x7465_6462_7974_6573,
    ];
    for w in words {
        v[3] ^= *w;
        sipround(&mut v);
        v[0] ^= *w;
    }
    let last = 48u64 << 56;
    v[3] ^= last;
    sipround(&mut v);
    v[0] ^= last;
    v[2] ^= 0xff;
    sipround(&mut v);
    sipround(&mut v);
    sipround(&mut v);
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

#[inline(always)]
fn cookie(h: &Headers, client_isn: u32, t: u64, generation: u32) -> Option<u32> {
    let secret = SECRETS.get(generation & 1)?;
    let w = |a: &[u32; 4], i: usize| u64::from(a[i]) | (u64::from(a[i + 1]) << 32);
    let words = [
        w(&h.src_addr, 0),
        w(&h.src_addr, 2),
        w(&h.dst_addr, 0),
        w(&h.dst_addr, 2),
        (u64::from(h.src_port) << 48) | (u64::from(h.dst_port) << 32) | u64::from(client_isn),
        t,
    ];
    let hash = siphash(secret, &words) as u32;
    Some((hash & !7) | (((t as u32) & 3) << 1) | (generation & 1))
}

/// Decides, before the record is written, what this TCP segment gets.
#[inline(always)]
pub fn classify(h: &Headers, config: &SensorConfig, now: u64) -> Reply {
    if config.reactive == ReactivePolicy::Off as u32 {
        return Reply::None;
    }
    let flags = h.tcp_flags;
    if flags & TCP_RST != 0 {
        return Reply::None;
    }
    let scoped =
        in_prefixes(h, &h.dst_addr) && !in_prefixes(h, &h.src_addr) && answerable_source(h);
    let t_now = now >> (config.cookie_shift & 63);
    if flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
        if !scoped {
            count(Counter::ReactiveOutOfScope);
            return Reply::None;
        }
        return match cookie(h, h.tcp_seq, t_now, config.secret_generation) {
            Some(c) => Reply::SynAck(c),
            None => Reply::None,
        };
    }
    if flags & TCP_ACK == 0 || flags & TCP_SYN != 0 || !scoped {
        return Reply::None;
    }
    let candidate = h.tcp_ack.wrapping_sub(1);
    let t_bits = u64::from((candidate >> 1) & 3);
    let t = if t_bits == t_now & 3 {
        t_now
    } else if t_bits == t_now.wrapping_sub(1) & 3 {
        t_now.wrapping_sub(1)
    } else {
        count(Counter::CookieInvalid);
        return Reply::None;
    };
    match cookie(h, h.tcp_seq.wrapping_sub(1), t, candidate & 1) {
        Some(c) if c == candidate => {
            count(Counter::CookieValid);
            let data = h.payload_len > 0 || flags & TCP_FIN != 0;
            Reply::Session {
                reset: data && config.reactive == ReactivePolicy::Reset as u32,
            }
        }
        // A data segment of a session that began before a cookie's window closed can still be
        // an old session of ours; it is counted as invalid all the same.
        _ => {
            count(Counter::CookieInvalid);
            Reply::None
        }
    }
}

/// Answers a SYN with a SYN-ACK (if the source is within its rate) by rewriting the frame in
/// place; returns the XDP action to take.
#[inline(always)]
pub fn answer_syn(
    ctx: &XdpContext,
    h: &Headers,
    config: &SensorConfig,
    now: u64,
    cookie: u32,
) -> Option<u32> {
    if config.synack_period_ns == 0
        || !admit(
            &SYNACK_BUCKETS,
            &h.src_addr,
            now,
            config.synack_period_ns,
            config.synack_burst_ns,
        )
    {
        count(Counter::SynAckRefused);
        return None;
    }
    let mut words = core::mem::MaybeUninit::<[u32; 5]>::uninit();
    zero_words(words.as_mut_ptr().cast(), 5);
    let options = unsafe { &mut *words.as_mut_ptr().cast::<[u8; 20]>() };
    let len = synack_options(ctx, h, cookie, options);
    let ok = rewrite(
        ctx,
        h,
        Segment {
            seq: cookie,
            ack: h.tcp_seq.wrapping_add(1),
            flags: TCP_SYN | TCP_ACK,
            window: 64240,
            options,
            options_len: len,
        },
    );
    if ok {
        count(Counter::SynAckSent);
        Some(xdp_action::XDP_TX)
    } else {
        count(Counter::ReplyFailed);
        None
    }
}

/// Zeroes `n` 32-bit words with volatile stores, which LLVM cannot fold into compiler_builtins'
/// byte-at-a-time memset.
#[inline(always)]
fn zero_words(p: *mut u32, n: usize) {
    for i in 0..n {
        unsafe { core::ptr::write_volatile(p.add(i), 0) };
    }
}

/// What the client offered in its SYN options.
struct Offers {
    sack: bool,
    window_scale: bool,
    timestamp: bool,
    /// The client's TSval, when it sent timestamps.
    tsval: u32,
}

/// State of the option walk, handed to its bpf_loop callback.
#[repr(C)]
struct OptionWalk {
    bytes: [u64; 8],
    len: u32,
    at: u32,
    /// Bit 0: window scale, bit 1: SACK permitted, bit 2: timestamps.
    seen: u32,
    tsval: u32,
}

/// One option per call. Walking options is a loop whose paths multiply for the verifier when
/// unrolled; under bpf_loop the callback is verified once.
#[inline(never)]
extern "C" fn walk_option(_index: u32, ctx: *mut core::ffi::c_void) -> i64 {
    let w = unsafe { &mut *(ctx as *mut OptionWalk) };
    if w.at >= w.len || w.at >= 40 {
        return 1;
    }
    let b = w.bytes.as_ptr().cast::<u8>();
    let byte = |k: u32| u32::from(unsafe { *b.add((k & 63) as usize) });
    let kind = byte(w.at);
    if kind == 0 {
        return 1;
    }
    if kind == 1 {
        w.at += 1;
        return 0;
    }
    let olen = byte(w.at + 1);
    if olen < 2 {
        return 1;
    }
    if kind == 3 {
        w.seen |= 1;
    } else if kind == 4 {
        w.seen |= 2;
    } else if kind == 8 && olen == 10 {
        w.seen |= 4;
        w.tsval = (byte(w.at + 2) << 24)
            | (byte(w.at + 3) << 16)
            | (byte(w.at + 4) << 8)
            | byte(w.at + 5);
    }
    w.at += olen;
    0
}

/// Walks the SYN's options (at most 40 bytes).
#[inline(always)]
fn offers(ctx: &XdpContext, h: &Headers) -> Offers {
    let mut found = Offers {
        sack: false,
        window_scale: false,
        timestamp: false,
        tsval: 0,
    };
    let len = u32::from(h.tcp_options_len);
    if len == 0 {
        return found;
    }
    let mut storage = core::mem::MaybeUninit::<OptionWalk>::uninit();
    zero_words(
        storage.as_mut_ptr().cast(),
        core::mem::size_of::<OptionWalk>() / 4,
    );
    let walk = unsafe { storage.assume_init_mut() };
    walk.len = len;
    let copy = ((len - 1) & 63) + 1;
    let b = walk.bytes.as_mut_ptr().cast::<u8>();
    if unsafe { bpf_xdp_load_bytes(ctx.ctx, u32::from(h.tcp_options_offset), b.cast(), copy) } != 0
    {
        return found;
    }
    unsafe {
        bpf_loop(
            40,
            walk_option as *const () as *mut core::ffi::c_void,
            (walk as *mut OptionWalk).cast(),
            0,
        );
    }
    found.window_scale = walk.seen & 1 != 0;
    found.sack = walk.seen & 2 != 0;
    found.timestamp = walk.seen & 4 != 0;
    found.tsval = walk.tsval;
    found
}

/// The options a Linux server puts in its SYN-ACK, given what the client offered, in Linux's
/// order and padding: MSS; timestamps (SACK-permitted packed before them) or SACK-permitted
/// alone; window scale. Our TSval is the cookie: stateless, like the rest. Returns the length.
#[inline(always)]
fn synack_options(ctx: &XdpContext, h: &Headers, cookie: u32, out: &mut [u8; 20]) -> usize {
    let offered = offers(ctx, h);
    // MSS for a 1500-byte path.
    let mss: u16 = if h.ip_version == 4 { 1460 } else { 1440 };
    let [m0, m1] = mss.to_be_bytes();
    out[0] = 2;
    out[1] = 4;
    out[2] = m0;
    out[3] = m1;
    let mut n = 4;
    if offered.timestamp {
        let echo = offered.tsval;
        if offered.sack {
            out[4] = 4;
            out[5] = 2;
        } else {
            out[4] = 1;
            out[5] = 1;
        }
        out[6] = 8;
        out[7] = 10;
        let [v0, v1, v2, v3] = cookie.to_be_bytes();
        let [e0, e1, e2, e3] = echo.to_be_bytes();
        out[8] = v0;
        out[9] = v1;
        out[10] = v2;
        out[11] = v3;
        out[12] = e0;
        out[13] = e1;
        out[14] = e2;
        out[15] = e3;
        n = 16;
    } else if offered.sack {
        out[4] = 1;
        out[5] = 1;
        out[6] = 4;
        out[7] = 2;
        n = 8;
    }
    // The branches above leave n at 4, 8 or 16; the bound lets the compiler drop the checks.
    if offered.window_scale && n <= 16 {
        out[n] = 1;
        out[n + 1] = 3;
        out[n + 2] = 3;
        out[n + 3] = 7;
        n += 4;
    }
    n
}

/// Answers data of a cookie session with RST (policy `reset`).
#[inline(always)]
pub fn answer_data(ctx: &XdpContext, h: &Headers) -> Option<u32> {
    let ok = rewrite(
        ctx,
        h,
        Segment {
            seq: h.tcp_ack,
            ack: 0,
            flags: TCP_RST,
            window: 0,
            options: &[0; 20],
            options_len: 0,
        },
    );
    if ok {
        count(Counter::RstSent);
        Some(xdp_action::XDP_TX)
    } else {
        count(Counter::ReplyFailed);
        None
    }
}

struct Segment<'a> {
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    options: &'a [u8; 20],
    /// 0, 4, 8, 12, 16 or 20.
    options_len: usize,
}

/// Adds a 16-bit word, as it lies in memory, to a ones' complement sum.
#[inline(always)]
fn add(sum: &mut u32, word: u16) {
    *sum += u32::from(word);
}

#[inline(always)]
fn add32(sum: &mut u32, word: u32) {
    *sum += word & 0xffff;
    *sum += word >> 16;
}

#[inline(always)]
fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// Turns the received frame into the reply: same L2 (MACs swapped, VLAN tags kept), a fresh IP
/// header without options or extension headers, a fresh TCP header. The new headers are built on
/// the stack and written with bpf_xdp_store_bytes, so no variable-offset packet writes need
/// proving to the verifier. Checksums are computed from the 16-bit words as they lie in memory
/// (ones' complement sums are byte-order neutral).
#[inline(always)]
fn rewrite(ctx: &XdpContext, h: &Headers, seg: Segment) -> bool {
    let Some(scratch) = REPLY_SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    let scratch = unsafe { &mut *scratch };
    let v4 = h.ip_version == 4;
    let ip_len: usize = if v4 { 20 } else { 40 };
    let opt_len = seg.options_len & 0x1c;
    let tcp_len = 20 + opt_len;
    let l3 = u32::from(h.l3_offset);
    let new_len = l3 as usize + ip_len + tcp_len;
    let old_len = unsafe { bpf_xdp_get_buff_len(ctx.ctx) } as usize;
    let delta = new_len as i32 - old_len as i32;
    if delta != 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } != 0 {
        return false;
    }

    // MACs swapped through the scratch buffer: read into bytes 0..12, write from 16..28.
    let m = scratch.as_mut_ptr().cast::<u8>();
    if unsafe { bpf_xdp_load_bytes(ctx.ctx, 0, m.cast(), 12) } != 0 {
        return false;
    }
    for i in 0..6 {
        unsafe {
            *m.add(16 + i) = *m.add(6 + i);
            *m.add(22 + i) = *m.add(i);
        }
    }
    if unsafe { bpf_xdp_store_bytes(ctx.ctx, 0, m.add(16).cast(), 12) } != 0 {
        return false;
    }

    for w in scratch.iter_mut() {
        unsafe { core::ptr::write_volatile(w, 0) };
    }
    let b = scratch.as_mut_ptr().cast::<u8>();
    let mut pseudo: u32 = 0;
    unsafe {
        if v4 {
            let words: [u16; 10] = [
                u16::from_ne_bytes([0x45, 0]),
                ((20 + tcp_len) as u16).to_be(),
                0,
                0x4000u16.to_be(),
                u16::from_ne_bytes([64, 6]),
                0,
                h.dst_addr[0] as u16,
                (h.dst_addr[0] >> 16) as u16,
                h.src_addr[0] as u16,
                (h.src_addr[0] >> 16) as u16,
            ];
            let mut sum: u32 = 0;
            for (i, w) in words.iter().enumerate() {
                (b.add(i * 2) as *mut u16).write_unaligned(*w);
                add(&mut sum, *w);
            }
            (b.add(10) as *mut u16).write_unaligned(fold(sum));
            add32(&mut pseudo, h.dst_addr[0]);
            add32(&mut pseudo, h.src_addr[0]);
        } else {
            (b as *mut u32).write_unaligned(0x6000_0000u32.to_be());
            (b.add(4) as *mut u16).write_unaligned((tcp_len as u16).to_be());
            *b.add(6) = 6;
            *b.add(7) = 64;
            for i in 0..4 {
                (b.add(8 + i * 4) as *mut u32).write_unaligned(h.dst_addr[i]);
                (b.add(24 + i * 4) as *mut u32).write_unaligned(h.src_addr[i]);
                add32(&mut pseudo, h.dst_addr[i]);
                add32(&mut pseudo, h.src_addr[i]);
            }
        }
        add(&mut pseudo, u16::from_ne_bytes([0, 6]));
        add(&mut pseudo, (tcp_len as u16).to_be());

        let tcp = b.add(ip_len);
        let mut sum = pseudo;
        let head: [u16; 10] = [
            h.dst_port.to_be(),
            h.src_port.to_be(),
            ((seg.seq >> 16) as u16).to_be(),
            (seg.seq as u16).to_be(),
            ((seg.ack >> 16) as u16).to_be(),
            (seg.ack as u16).to_be(),
            u16::from_ne_bytes([((tcp_len / 4) as u8) << 4, seg.flags]),
            seg.window.to_be(),
            0,
            0,
        ];
        for (i, w) in head.iter().enumerate() {
            (tcp.add(i * 2) as *mut u16).write_unaligned(*w);
            add(&mut sum, *w);
        }
        for i in 0..10 {
            if i * 2 >= opt_len {
                break;
            }
            let w = u16::from_ne_bytes([seg.options[i * 2], seg.options[i * 2 + 1]]);
            (tcp.add(20 + i * 2) as *mut u16).write_unaligned(w);
            add(&mut sum, w);
        }
        (tcp.add(16) as *mut u16).write_unaligned(fold(sum));
    }
    // Bound the length for the verifier: at most the 128-byte buffer.
    let len = (((ip_len + tcp_len) as u32 - 1) & 127) + 1;
    unsafe { bpf_xdp_store_bytes(ctx.ctx, l3, b.cast(), len) == 0 }
}
