//! The XDP program: parse Ethernet/VLAN/IPv4/IPv6/UDP/TCP, match ports from a map, write one
//! record per match into the ring buffer (sized to the payload it holds), count every outcome.
//!
//! It stays small on purpose: no SIP here, only what must run per frame at line rate. Every path
//! returns XDP_PASS or the configured action; none returns XDP_ABORTED.
#![no_std]
#![no_main]

mod parse;
mod reactive;

use aya_ebpf::{
    bindings::{
        BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, BPF_RINGBUF_HDR_SZ, xdp_action,
    },
    btf_maps::{ArrayOfMaps, RingBuf},
    helpers::{
        bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_ringbuf_query, bpf_xdp_get_buff_len,
        bpf_xdp_load_bytes,
    },
    macros::{btf_map, map, xdp},
    maps::{Array, LruPerCpuHashMap, PerCpuArray},
    programs::XdpContext,
};
use sensor_common::{
    COUNTER_SLOTS, CaptureRecord, CaptureRecordOf, Counter, MAX_CPUS, MatchAction, PAYLOAD_CLASSES,
    PortMatch, RING_TEMPLATE_BYTES, SOURCE_BUCKETS, SensorConfig, SourceBucket,
    TCP_OPTIONS_CAPACITY, ip_proto, record_flags,
};

use crate::{parse::Headers, reactive::Reply};

/// One ring buffer per CPU, indexed by CPU number: CPUs that match frames at the same time never
/// contend for a ring (one shared ring cost 1.1 - 1.7x per record with two CPUs writing). The
/// agent creates the rings, sized at run time, and fills every possible CPU's slot; the size here
/// is only the template the verifier checks against.
#[btf_map]
static EVENTS: ArrayOfMaps<RingBuf<CaptureRecord, RING_TEMPLATE_BYTES>, MAX_CPUS> =
    ArrayOfMaps::new();

/// All counters of a CPU in one slot: one map lookup per frame, not one per counter.
#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<[u64; COUNTER_SLOTS]> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "CONFIG")]
static CONFIG: Array<SensorConfig> = Array::with_max_entries(1, 0);

/// The port set, as global data: the agent writes it through the section's map (`.data.ports`);
/// the program reads it with plain loads, where a map lookup costs a dozen instructions more per
/// frame.
#[unsafe(no_mangle)]
#[unsafe(link_section = ".data.ports")]
static mut PORT_MATCH: PortMatch = PortMatch::empty();

/// Per-source token buckets, per CPU so that no lock or atomic is needed: RSS keeps a source on
/// one queue, so a per-CPU bucket is in practice a per-source bucket.
#[map(name = "SOURCE_BUCKETS")]
static SOURCE_BUCKETS_MAP: LruPerCpuHashMap<[u32; 4], SourceBucket> =
    LruPerCpuHashMap::with_max_entries(SOURCE_BUCKETS, 0);

/// Counts off the per-frame path (the reactive responder's side counters).
#[inline(always)]
fn count(counter: Counter) {
    if let Some(block) = COUNTERS.get_ptr_mut(0) {
        // Per-CPU slot: no other writer, a plain increment is enough.
        unsafe { (*block)[counter as usize & (COUNTER_SLOTS - 1)] += 1 };
    }
}

#[inline(always)]
fn port_in_set(port: u16) -> bool {
    // Volatile: the agent changes it at run time, the compiler must not assume its initial value.
    let word = unsafe {
        core::ptr::read_volatile(
            (&raw const PORT_MATCH.words)
                .cast::<u64>()
                .add(usize::from(port >> 6)),
        )
    };
    (word >> (port & 63)) & 1 == 1
}

/// Counts a frame that ends here: `FramesSeen` and its one outcome, in one lookup.
#[inline(always)]
fn outcome(counter: Counter) {
    if let Some(block) = COUNTERS.get_ptr_mut(0) {
        // Per-CPU slot: no other writer, plain increments are enough.
        unsafe {
            (*block)[Counter::FramesSeen as usize] += 1;
            (*block)[counter as usize & (COUNTER_SLOTS - 1)] += 1;
        }
    }
}

#[inline(always)]
fn match_source_port() -> bool {
    unsafe { core::ptr::read_volatile(&raw const PORT_MATCH.match_source_port) != 0 }
}

#[xdp]
pub fn sip_sensor(ctx: XdpContext) -> u32 {
    // The common frame that does not match ends here, before any other work: its ports (all
    // that is kept of `quick` here, so nothing else is held across the map lookups).
    match parse::quick(&ctx) {
        parse::Quick::Parsed(p)
            if !port_in_set(p.dst_port) && !(match_source_port() && port_in_set(p.src_port)) =>
        {
            outcome(Counter::PortMiss);
            return xdp_action::XDP_PASS;
        }
        parse::Quick::NonIp => {
            outcome(Counter::NonIp);
            return xdp_action::XDP_PASS;
        }
        _ => {}
    }
    // A matched common frame is parsed by `quick` again (cheaper than the full parse, and cheaper
    // than keeping what it found across the lookups); anything else takes the full parse.
    let parsed = match parse::quick(&ctx) {
        parse::Quick::Parsed(parsed) => parsed,
        _ => match parse::parse(&ctx) {
            Ok(parsed) => parsed,
            Err(counter) => {
                outcome(counter);
                return xdp_action::XDP_PASS;
            }
        },
    };
    let flags = if port_in_set(parsed.dst_port) {
        record_flags::MATCHED_DST_PORT
    } else if match_source_port() && port_in_set(parsed.src_port) {
        record_flags::MATCHED_SRC_PORT
    } else {
        outcome(Counter::PortMiss);
        return xdp_action::XDP_PASS;
    };
    // Array maps always hold their slots; the default (all zero) means drop, dst only.
    let config = match CONFIG.get(0) {
        Some(config) => *config,
        None => SensorConfig::new(MatchAction::Drop, false, 0),
    };
    // Array maps always hold their slots: the lookup cannot fail.
    let Some(block) = COUNTERS.get_ptr_mut(0) else {
        return xdp_action::XDP_PASS;
    };
    let counters = unsafe { &mut *block };
    counters[Counter::FramesSeen as usize] += 1;
    let mut storage = core::mem::MaybeUninit::<Headers>::uninit();
    if !parse::fill(&ctx, &parsed, &mut storage) {
        // Unreachable: `parse` checked the same bounds. Counted rather than assumed.
        counters[Counter::Truncated as usize] += 1;
        return xdp_action::XDP_PASS;
    }
    let headers = unsafe { storage.assume_init_ref() };
    counters[Counter::Matched as usize] += 1;
    let now = unsafe { bpf_ktime_get_ns() };
    let reply = if headers.l4_proto == ip_proto::TCP && flags == record_flags::MATCHED_DST_PORT {
        reactive::classify(headers, &config, now)
    } else {
        Reply::None
    };
    // As plain integers, defined on every path: LLVM spills the payload of `Reply::None` across
    // the record's branches undefined, and the verifier rejects the read (`!read_ok`).
    let (reply_flag, cookie, reset) = match reply {
        Reply::SynAck(cookie) => (record_flags::SYN_ANSWERED, cookie, false),
        Reply::Session { reset } => (record_flags::REACTIVE_SESSION, 0, reset),
        Reply::None => (0, 0, false),
    };
    let flags = flags | reply_flag;
    if config.source_period_ns != 0
        && !admit(
            &SOURCE_BUCKETS_MAP,
            &headers.src_addr,
            now,
            config.source_period_ns,
            config.source_burst_ns,
        )
    {
        counters[Counter::RateLimited as usize] += 1;
    } else if emit(&ctx, headers, flags, &config, now) {
        counters[Counter::Emitted as usize] += 1;
    } else {
        counters[Counter::RingFull as usize] += 1;
    }
    // The record holds the request as it came; only now may the frame become the reply.
    let answered = if reply_flag == record_flags::SYN_ANSWERED {
        reactive::answer_syn(&ctx, headers, &config, now, cookie)
    } else if reset {
        reactive::answer_data(&ctx, headers)
    } else {
        None
    };
    if let Some(action) = answered {
        return action;
    }
    if config.action == MatchAction::Pass as u32 {
        xdp_action::XDP_PASS
    } else {
        xdp_action::XDP_DROP
    }
}

/// Token bucket in nanoseconds of credit: a source earns one nanosecond per nanosecond, up to
/// the burst, and a record costs one period. No division on the per-frame path.
#[inline(always)]
fn admit(
    buckets: &LruPerCpuHashMap<[u32; 4], SourceBucket>,
    src: &[u32; 4],
    now: u64,
    period_ns: u64,
    burst_ns: u64,
) -> bool {
    match buckets.get_ptr_mut(src) {
        Some(bucket) => unsafe {
            let earned = now.saturating_sub((*bucket).last_ns);
            let mut credit = (*bucket).credit_ns.saturating_add(earned);
            if credit > burst_ns {
                credit = burst_ns;
            }
            (*bucket).last_ns = now;
            if credit >= period_ns {
                (*bucket).credit_ns = credit - period_ns;
                true
            } else {
                (*bucket).credit_ns = credit;
                false
            }
        },
        None => {
            // A new source starts with a full bucket, less this record.
            let bucket = SourceBucket {
                credit_ns: burst_ns.saturating_sub(period_ns),
                last_ns: now,
            };
            // If the insert fails the record is still admitted: shedding needs evidence.
            let _ = buckets.insert(src, &bucket, 0);
            true
        }
    }
}

/// Writes the record in place in a ring buffer reservation (the stack is too small for it), in
/// the smallest record class that holds the payload. Returns false when the ring buffer is full.
#[inline(always)]
fn emit(ctx: &XdpContext, h: &Headers, mut flags: u8, config: &SensorConfig, now: u64) -> bool {
    // A CPU without a ring (the agent fills every possible CPU's slot) counts as a full ring.
    let Some(ring) = EVENTS.get(unsafe { bpf_get_smp_processor_id() }) else {
        return false;
    };
    let frame_len = unsafe { bpf_xdp_get_buff_len(ctx.ctx) } as u32;
    // Payload present in the frame: Ethernet padding of short frames lies beyond the IP length,
    // so bound by what the headers declare as well as by what the frame holds.
    let in_frame = frame_len.saturating_sub(u32::from(h.payload_offset));
    let declared = u32::from(h.payload_len);
    if in_frame < declared {
        flags |= record_flags::FRAME_SHORT;
    }
    let mut want = if in_frame < declared {
        in_frame
    } else {
        declared
    };
    if want > config.prefix_len {
        want = config.prefix_len;
    }
    let record = Written {
        flags,
        frame_len,
        want,
        now,
    };
    // The verifier needs a constant reservation size: one branch per class (PAYLOAD_CLASSES).
    // A prefix length above the capacity (a config the agent refuses anyway) takes the largest
    // class, which captures the capacity, not a wrapped length.
    const C: [usize; 5] = PAYLOAD_CLASSES;
    if want <= C[0] as u32 {
        write_record::<{ C[0] }>(ctx, ring, h, &record, config)
    } else if want <= C[1] as u32 {
        write_record::<{ C[1] }>(ctx, ring, h, &record, config)
    } else if want <= C[2] as u32 {
        write_record::<{ C[2] }>(ctx, ring, h, &record, config)
    } else if want <= C[3] as u32 {
        write_record::<{ C[3] }>(ctx, ring, h, &record, config)
    } else {
        write_record::<{ C[4] }>(ctx, ring, h, &record, config)
    }
}

/// What only `emit` knows of a record.
struct Written {
    flags: u8,
    frame_len: u32,
    /// Payload bytes to capture; more than `N` captures `N`.
    want: u32,
    now: u64,
}

#[inline(always)]
fn write_record<const N: usize>(
    ctx: &XdpContext,
    ring: &RingBuf<CaptureRecord, RING_TEMPLATE_BYTES>,
    h: &Headers,
    w: &Written,
    config: &SensorConfig,
) -> bool {
    let Some(mut entry) = ring.reserve_untyped::<CaptureRecordOf<N>>(0) else {
        return false;
    };
    let r = entry.as_mut_ptr();
    let mut captured: u32 = 0;
    if N > 0 && w.want > 0 {
        // The verifier needs a constant upper bound right at the call: mask, don't min().
        let want = if w.want > N as u32 { N as u32 } else { w.want };
        let len = ((want - 1) & (N as u32 - 1)) + 1;
        let ret = unsafe {
            bpf_xdp_load_bytes(
                ctx.ctx,
                u32::from(h.payload_offset),
                (*r).payload.as_mut_ptr().cast(),
                len,
            )
        };
        if ret == 0 {
            captured = len;
        }
    }
    unsafe {
        // Word stores: the options field is 8-byte aligned in an 8-byte aligned reservation.
        // Volatile, or LLVM folds the loop back into a call to a byte-by-byte memset.
        let options = (*r).tcp_options.as_mut_ptr().cast::<u64>();
        for i in 0..TCP_OPTIONS_CAPACITY / 8 {
            options.add(i).write_volatile(0);
        }
        let opts = u32::from(h.tcp_options_len);
        if opts > 0 {
            let len = ((opts - 1) & 63) + 1;
            if len <= TCP_OPTIONS_CAPACITY as u32 {
                bpf_xdp_load_bytes(
                    ctx.ctx,
                    u32::from(h.tcp_options_offset),
                    (*r).tcp_options.as_mut_ptr().cast(),
                    len,
                );
            }
        }
        // The header has the record's layout: copy it as words (volatile, or LLVM makes it a
        // byte-by-byte memcpy), then set what only emit knows.
        let from = (h as *const Headers).cast::<u64>();
        let to = r.cast::<u64>();
        for i in 0..parse::RECORD_HEAD_WORDS {
            to.add(i).write_volatile(from.add(i).read());
        }
        (*r).timestamp_ns = w.now;
        (*r).ifindex = (*ctx.ctx).ingress_ifindex;
        (*r).rx_queue = (*ctx.ctx).rx_queue_index;
        (*r).frame_len = w.frame_len;
        (*r).captured_len = captured as u16;
        (*r).flags = w.flags;
    }
    // Batch wakeups: the reader also drains on a timer, so a record never waits long. Only the
    // record that takes the ring's backlog across the threshold wakes the reader; those after it
    // do not. A reader above the threshold is awake already or short of CPU, and waking it for
    // every record would cost an interrupt per record exactly when the CPU is short (on a
    // virtual machine each is a VM exit): that made the receive path several times dearer once
    // the reader fell behind.
    let wakeup = if config.wakeup_bytes == 0 {
        0
    } else {
        // The backlog counts this record, as reserved: with the ring's header, rounded to 8.
        let span = (core::mem::size_of::<CaptureRecordOf<N>>() as u64
            + u64::from(BPF_RINGBUF_HDR_SZ))
        .next_multiple_of(8);
        let backlog = unsafe {
            bpf_ringbuf_query(
                core::ptr::from_ref(ring).cast_mut().cast(),
                u64::from(BPF_RB_AVAIL_DATA),
            )
        };
        let threshold = u64::from(config.wakeup_bytes);
        if backlog >= threshold && backlog < threshold + span {
            u64::from(BPF_RB_FORCE_WAKEUP)
        } else {
            u64::from(BPF_RB_NO_WAKEUP)
        }
    };
    entry.submit(wakeup);
    true
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable in a loaded program: the verifier rejects any reachable panic.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
