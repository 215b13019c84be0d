//! An XDP program that only returns XDP_PASS, loaded straight through bpf(2) from two
//! instructions. Two uses: the floor for kernel cost measurements (nothing of the sensor's object,
//! maps, BTF or toolchain is in it), and the scanner end of a lab veth pair, which must run an XDP
//! program to receive what the sensor sends with XDP_TX (the reactive responder's SYN-ACKs).

use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
    sync::atomic::Ordering::{Acquire, Release},
    time::Duration,
};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_XDP: u32 = 37;
const BPF_PROG_TYPE_XDP: u32 = 6;

/// `r0 = XDP_PASS (2); exit`.
const PASS_PROGRAM: [[u8; 8]; 2] = [
    [0xb7, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00], // mov64 r0, 2
    [0x95, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00], // exit
];

fn bpf(cmd: libc::c_long, attr: &mut [u8; 128]) -> io::Result<i64> {
    // SAFETY: attr is a zero-initialised bpf_attr of the size we pass.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn put_u32(attr: &mut [u8; 128], at: usize, v: u32) {
    attr[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put_u64(attr: &mut [u8; 128], at: usize, v: u64) {
    attr[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

pub struct PassProgram {
    fd: OwnedFd,
}

/// Loads `code` (BPF instructions) as an XDP program named `name` (at most 15 bytes).
pub(crate) fn load_xdp(code: &[[u8; 8]], name: &[u8]) -> io::Result<PassProgram> {
    let bytes: Vec<u8> = code.concat();
    let license = b"GPL\0";
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, BPF_PROG_TYPE_XDP);
    put_u32(&mut attr, 4, code.len() as u32);
    put_u64(&mut attr, 8, bytes.as_ptr() as u64);
    put_u64(&mut attr, 16, license.as_ptr() as u64);
    attr[48..48 + name.len().min(15)].copy_from_slice(&name[..name.len().min(15)]);
    let fd = match bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => fd,
        Err(e) => {
            // Again with the verifier's log, which says why.
            let mut log = vec![0u8; 1 << 16];
            put_u32(&mut attr, 24, 1);
            put_u32(&mut attr, 28, log.len() as u32);
            put_u64(&mut attr, 32, log.as_mut_ptr() as u64);
            let _ = bpf(BPF_PROG_LOAD, &mut attr);
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            return Err(io::Error::new(
                e.kind(),
                format!(
                    "{e}; verifier: {}",
                    String::from_utf8_lossy(&log[..end]).trim()
                ),
            ));
        }
    };
    // SAFETY: the kernel returned a new descriptor that we now own.
    Ok(PassProgram {
        fd: unsafe { OwnedFd::from_raw_fd(fd as i32) },
    })
}

impl PassProgram {
    pub fn load() -> io::Result<Self> {
        load_xdp(&PASS_PROGRAM, b"xdp_pass")
    }

    /// Attaches to `interface` (in the calling thread's network namespace) as a bpf_link, in
    /// native mode; the attachment lasts as long as the returned descriptor.
    pub fn attach(&self, interface: &str) -> io::Result<OwnedFd> {
        let name = std::ffi::CString::new(interface)?;
        // SAFETY: valid C string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                interface.to_string(),
            ));
        }
        let mut attr = [0u8; 128];
        put_u32(&mut attr, 0, self.fd.as_raw_fd() as u32);
        put_u32(&mut attr, 4, ifindex);
        put_u32(&mut attr, 8, BPF_XDP);
        put_u32(&mut attr, 12, 1 << 2); // XDP_FLAGS_DRV_MODE
        let fd = bpf(BPF_LINK_CREATE, &mut attr)?;
        // SAFETY: the kernel returned a new descriptor that we now own.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }

    /// BPF_PROG_TEST_RUN: the verdict and the kernel's mean time per run.
    pub fn test_run(&self, frame: &[u8], repeat: u32) -> io::Result<(u32, Duration)> {
        test_run(self.fd.as_fd(), frame, repeat)
    }

    /// The program's descriptor, for a program loaded with [`load_xdp`] that is not the pass
    /// program.
    pub(crate) fn into_fd(self) -> OwnedFd {
        self.fd
    }
}

/// BPF_PROG_TEST_RUN of the XDP program `fd` (any, the sensor's too): the verdict and the kernel's
/// mean time per run. Callable from several threads at once.
pub fn test_run(fd: BorrowedFd<'_>, frame: &[u8], repeat: u32) -> io::Result<(u32, Duration)> {
    test_run_with(fd, frame, repeat, 0)
}

/// [`test_run`] with the command's `flags` (`BPF_F_TEST_XDP_LIVE_FRAMES`).
pub(crate) fn test_run_with(
    fd: BorrowedFd<'_>,
    frame: &[u8],
    repeat: u32,
    flags: u32,
) -> io::Result<(u32, Duration)> {
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, fd.as_raw_fd() as u32);
    put_u32(&mut attr, 8, frame.len() as u32);
    put_u64(&mut attr, 16, frame.as_ptr() as u64);
    put_u32(&mut attr, 32, repeat);
    put_u32(&mut attr, 64, flags);
    bpf(BPF_PROG_TEST_RUN, &mut attr)?;
    let retval = u32::from_ne_bytes(attr[4..8].try_into().unwrap_or_default());
    let duration = u32::from_ne_bytes(attr[36..40].try_into().unwrap_or_default());
    Ok((retval, Duration::from_nanos(u64::from(duration))))
}

/// BPF_MAP_CREATE: a map of `kind` (`BPF_MAP_TYPE_*`) with keys and values of these sizes.
pub(crate) fn create_map(
    kind: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
) -> io::Result<OwnedFd> {
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, kind);
    put_u32(&mut attr, 4, key_size);
    put_u32(&mut attr, 8, value_size);
    put_u32(&mut attr, 12, max_entries);
    let fd = bpf(BPF_MAP_CREATE, &mut attr)?;
    // SAFETY: the kernel returned a new descriptor that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// BPF_MAP_UPDATE_ELEM: `key` to `value` in `map` (each as many bytes as the map's sizes).
pub(crate) fn update_elem(map: BorrowedFd<'_>, key: &[u8], value: &[u8]) -> io::Result<()> {
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, map.as_raw_fd() as u32);
    put_u64(&mut attr, 8, key.as_ptr() as u64);
    put_u64(&mut attr, 16, value.as_ptr() as u64);
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(|_| ())
}

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
pub(crate) const BPF_MAP_TYPE_ARRAY: u32 = 2;
/// `ld_imm64`'s source register for "the map whose descriptor is the immediate".
pub(crate) const BPF_PSEUDO_MAP_FD: u8 = 1;
const BPF_MAP_TYPE_RINGBUF: u32 = 27;
const BPF_FUNC_RINGBUF_RESERVE: i32 = 131;
const BPF_FUNC_RINGBUF_SUBMIT: i32 = 132;
const BPF_FUNC_XDP_LOAD_BYTES: i32 = 189;

/// One BPF instruction: opcode, dst and src registers, offset, immediate.
pub(crate) fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[0] = code;
    b[1] = (src << 4) | dst;
    b[2..4].copy_from_slice(&off.to_le_bytes());
    b[4..8].copy_from_slice(&imm.to_le_bytes());
    b
}

/// The floor of writing a record into a ring buffer from XDP: `bpf_ringbuf_reserve` of a
/// constant size, optionally `bpf_xdp_load_bytes` of the first `copy` bytes of the frame into it,
/// `bpf_ringbuf_submit`, XDP_PASS. Nothing else: no parsing, no maps besides the ring. Measured
/// next to the sensor, it shows what the ring buffer alone costs per record on this machine.
pub struct RingFloor {
    prog: PassProgram,
    /// The ring (the program refers to it by this descriptor's number).
    map: OwnedFd,
}

impl RingFloor {
    /// A ring of `ring_bytes` (a power-of-two number of pages) and records of `record` bytes
    /// (`copy` <= `record` bytes of each frame copied in; 0: none).
    pub fn load(ring_bytes: u32, record: u32, copy: u32) -> io::Result<Self> {
        let map = create_map(BPF_MAP_TYPE_RINGBUF, 0, 0, ring_bytes)?;
        let fd = map.as_raw_fd();
        let mut code: Vec<[u8; 8]> = vec![
            insn(0xbf, 6, 1, 0, 0),                  // r6 = r1 (ctx)
            insn(0x18, 1, BPF_PSEUDO_MAP_FD, 0, fd), // r1 = map (ld_imm64)
            insn(0, 0, 0, 0, 0),
            insn(0xb7, 2, 0, 0, record as i32), // r2 = size
            insn(0xb7, 3, 0, 0, 0),             // r3 = 0
            insn(0x85, 0, 0, 0, BPF_FUNC_RINGBUF_RESERVE),
        ];
        let mut body: Vec<[u8; 8]> = Vec::new();
        body.push(insn(0xbf, 7, 0, 0, 0)); // r7 = r0
        if copy > 0 {
            body.extend([
                insn(0xbf, 1, 6, 0, 0),           // r1 = ctx
                insn(0xb7, 2, 0, 0, 0),           // r2 = offset 0
                insn(0xbf, 3, 7, 0, 0),           // r3 = record
                insn(0xb7, 4, 0, 0, copy as i32), // r4 = len
                insn(0x85, 0, 0, 0, BPF_FUNC_XDP_LOAD_BYTES),
            ]);
        }
        body.extend([
            insn(0xbf, 1, 7, 0, 0), // r1 = record
            insn(0xb7, 2, 0, 0, 0), // r2 = flags 0
            insn(0x85, 0, 0, 0, BPF_FUNC_RINGBUF_SUBMIT),
        ]);
        code.push(insn(0x15, 0, 0, body.len() as i16, 0)); // if r0 == 0 skip the body
        code.extend(body);
        code.push(insn(0xb7, 0, 0, 0, 2)); // r0 = XDP_PASS
        code.push(insn(0x95, 0, 0, 0, 0)); // exit
        let prog = load_xdp(&code, b"ring_floor")?;
        Ok(Self { prog, map })
    }

    pub fn test_run(&self, frame: &[u8], repeat: u32) -> io::Result<(u32, Duration)> {
        self.prog.test_run(frame, repeat)
    }

    /// The ring buffer map, for a reader.
    pub fn ring_fd(&self) -> BorrowedFd<'_> {
        self.map.as_fd()
    }
}

const BPF_MAP_TYPE_PERF_EVENT_ARRAY: u32 = 4;
const BPF_FUNC_PERF_EVENT_OUTPUT: i32 = 25;
const BPF_F_CURRENT_CPU: u64 = 0xffff_ffff;
const PERF_TYPE_SOFTWARE: u32 = 1;
const PERF_COUNT_SW_BPF_OUTPUT: u64 = 10;
const PERF_SAMPLE_RAW: u64 = 1 << 10;
const PERF_ATTR_WATERMARK: u64 = 1 << 14;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
const PERF_RECORD_LOST: u32 = 2;
const PERF_RECORD_SAMPLE: u32 = 9;
/// `data_head` and `data_tail` in `struct perf_event_mmap_page`.
const PERF_DATA_HEAD: usize = 1024;
const PERF_DATA_TAIL: usize = 1032;

/// One CPU's perf buffer, mapped: the control page and the data pages after it.
struct PerfBuffer {
    event: OwnedFd,
    base: *mut u8,
    /// Bytes of data (a power of two); the mapping is one page more.
    data_len: usize,
    page: usize,
}

impl PerfBuffer {
    fn open(cpu: u32, data_len: usize) -> io::Result<Self> {
        let mut attr = [0u8; 128];
        put_u32(&mut attr, 0, PERF_TYPE_SOFTWARE);
        put_u32(&mut attr, 4, 128); // the size of this perf_event_attr
        put_u64(&mut attr, 8, PERF_COUNT_SW_BPF_OUTPUT);
        put_u64(&mut attr, 16, 1); // sample_period
        put_u64(&mut attr, 24, PERF_SAMPLE_RAW);
        // Enabled, and woken only at a watermark of half the buffer: no wakeup per record, as
        // the sensor batches its own.
        put_u64(&mut attr, 40, PERF_ATTR_WATERMARK);
        put_u32(&mut attr, 48, (data_len / 2) as u32);
        // SAFETY: attr is a zero-initialised perf_event_attr of the size it declares.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_perf_event_open,
                attr.as_ptr(),
                -1,
                cpu as libc::c_int,
                -1,
                PERF_FLAG_FD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel returned a new descriptor that we now own.
        let event = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        // SAFETY: a shared read-write mapping of the event's buffer, as perf documents it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                page + data_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                event.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            event,
            base: base.cast(),
            data_len,
            page,
        })
    }

    /// Consumes every record; returns (samples, samples the kernel reported lost).
    fn drain(&self) -> (u64, u64) {
        // SAFETY: the control page is mapped; head is read before the data, tail written after.
        unsafe {
            let head_ptr = self.base.add(PERF_DATA_HEAD).cast::<u64>();
            let tail_ptr = self.base.add(PERF_DATA_TAIL).cast::<u64>();
            let head = std::sync::atomic::AtomicU64::from_ptr(head_ptr).load(Acquire);
            let mut tail = tail_ptr.read_volatile();
            let data = self.base.add(self.page);
            let (mut samples, mut lost) = (0, 0);
            while tail < head {
                let at = (tail as usize) & (self.data_len - 1);
                // Records are 8-byte aligned and 8-byte sized: no field of 8 bytes or less wraps.
                let kind = data.add(at).cast::<u32>().read();
                let size = data.add(at + 6).cast::<u16>().read();
                match kind {
                    PERF_RECORD_SAMPLE => samples += 1,
                    PERF_RECORD_LOST => {
                        lost += data
                            .add((at + 16) & (self.data_len - 1))
                            .cast::<u64>()
                            .read()
                    }
                    _ => {}
                }
                tail += u64::from(size.max(8));
            }
            std::sync::atomic::AtomicU64::from_ptr(tail_ptr).store(head, Release);
            (samples, lost)
        }
    }
}

impl Drop for PerfBuffer {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `open`, unmapped once.
        unsafe { libc::munmap(self.base.cast(), self.page + self.data_len) };
    }
}

/// The floor of the other way out of XDP: `bpf_perf_event_output` into a per-CPU perf buffer,
/// with an 8-byte header from the stack and the first `copy` bytes of the frame appended by the
/// helper. Its commit updates CPU-local positions without a locked instruction, where the ring
/// buffer's submit exchanges the record's header atomically.
pub struct PerfFloor {
    prog: PassProgram,
    _map: OwnedFd,
    buffers: Vec<PerfBuffer>,
}

impl PerfFloor {
    /// `data_len` bytes of perf buffer per CPU (a power-of-two number of pages).
    pub fn load(cpus: u32, data_len: usize, copy: u32) -> io::Result<Self> {
        let map = create_map(BPF_MAP_TYPE_PERF_EVENT_ARRAY, 4, 4, cpus)?;
        let mut buffers = Vec::new();
        for cpu in 0..cpus {
            let buffer = PerfBuffer::open(cpu, data_len)?;
            let value = buffer.event.as_raw_fd() as u32;
            update_elem(map.as_fd(), &cpu.to_ne_bytes(), &value.to_ne_bytes())?;
            buffers.push(buffer);
        }
        let flags = (u64::from(copy) << 32) | BPF_F_CURRENT_CPU;
        let code: Vec<[u8; 8]> = vec![
            insn(0xbf, 6, 1, 0, 0),                               // r6 = r1 (ctx)
            insn(0x7a, 10, 0, -8, 0), // *(u64 *)(r10 - 8) = 0: the header
            insn(0xbf, 1, 6, 0, 0),   // r1 = ctx
            insn(0x18, 2, BPF_PSEUDO_MAP_FD, 0, map.as_raw_fd()), // r2 = map (ld_imm64)
            insn(0, 0, 0, 0, 0),
            insn(0x18, 3, 0, 0, flags as u32 as i32), // r3 = flags (ld_imm64)
            insn(0, 0, 0, 0, (flags >> 32) as u32 as i32),
            insn(0xbf, 4, 10, 0, 0), // r4 = r10
            insn(0x07, 4, 0, 0, -8), // r4 -= 8
            insn(0xb7, 5, 0, 0, 8),  // r5 = 8
            insn(0x85, 0, 0, 0, BPF_FUNC_PERF_EVENT_OUTPUT),
            insn(0xb7, 0, 0, 0, 2), // r0 = XDP_PASS
            insn(0x95, 0, 0, 0, 0), // exit
        ];
        let prog = load_xdp(&code, b"perf_floor")?;
        Ok(Self {
            prog,
            _map: map,
            buffers,
        })
    }

    pub fn test_run(&self, frame: &[u8], repeat: u32) -> io::Result<(u32, Duration)> {
        self.prog.test_run(frame, repeat)
    }

    /// Consumes every CPU's records; returns (records, records the kernel reported lost).
    pub fn drain(&self) -> (u64, u64) {
        self.buffers.iter().fold((0, 0), |(s, l), b| {
            let (bs, bl) = b.drain();
            (s + bs, l + bl)
        })
    }
}
