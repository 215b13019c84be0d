//! An XDP program that only returns XDP_PASS, loaded straight through bpf(2) from two
//! instructions. Two uses: the floor for kernel cost measurements (nothing of the sensor's object,
//! maps, BTF or toolchain is in it), and the scanner end of a lab veth pair, which must run an XDP
//! program to receive what the sensor sends with XDP_TX (the reactive responder's SYN-ACKs).

use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
    time::Duration,
};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_XDP: u32 = 37;
const BPF_PROG_TYPE_XDP: u32 = 6;

/// `r0 = XDP_PASS (2); exit`.
const PASS_PROGRAM: [u8; 16] = [
    0xb7, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, // mov64 r0, 2
    0x95, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // exit
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

impl PassProgram {
    pub fn load() -> io::Result<Self> {
        let license = b"GPL\0";
        let mut attr = [0u8; 128];
        put_u32(&mut attr, 0, BPF_PROG_TYPE_XDP);
        put_u32(&mut attr, 4, (PASS_PROGRAM.len() / 8) as u32);
        put_u64(&mut attr, 8, PASS_PROGRAM.as_ptr() as u64);
        put_u64(&mut attr, 16, license.as_ptr() as u64);
        attr[48..57].copy_from_slice(b"xdp_pass\0");
        let fd = bpf(BPF_PROG_LOAD, &mut attr)?;
        // SAFETY: the kernel returned a new descriptor that we now own.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd as i32) },
        })
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
}

/// BPF_PROG_TEST_RUN of the XDP program `fd` (any, the sensor's too): the verdict and the kernel's
/// mean time per run. Callable from several threads at once.
pub fn test_run(fd: BorrowedFd<'_>, frame: &[u8], repeat: u32) -> io::Result<(u32, Duration)> {
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, fd.as_raw_fd() as u32);
    put_u32(&mut attr, 8, frame.len() as u32);
    put_u64(&mut attr, 16, frame.as_ptr() as u64);
    put_u32(&mut attr, 32, repeat);
    bpf(BPF_PROG_TEST_RUN, &mut attr)?;
    let retval = u32::from_ne_bytes(attr[4..8].try_into().unwrap_or_default());
    let duration = u32::from_ne_bytes(attr[36..40].try_into().unwrap_or_default());
    Ok((retval, Duration::from_nanos(u64::from(duration))))
}

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_TYPE_RINGBUF: u32 = 27;
const BPF_FUNC_RINGBUF_RESERVE: i32 = 131;
const BPF_FUNC_RINGBUF_SUBMIT: i32 = 132;
const BPF_FUNC_XDP_LOAD_BYTES: i32 = 189;

/// One BPF instruction: opcode, dst and src registers, offset, immediate.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
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
        let mut attr = [0u8; 128];
        put_u32(&mut attr, 0, BPF_MAP_TYPE_RINGBUF);
        put_u32(&mut attr, 12, ring_bytes);
        let map = bpf(BPF_MAP_CREATE, &mut attr)?;
        // SAFETY: the kernel returned a new descriptor that we now own.
        let map = unsafe { OwnedFd::from_raw_fd(map as i32) };
        let fd = map.as_raw_fd();
        let mut code: Vec<[u8; 8]> = vec![
            insn(0xbf, 6, 1, 0, 0),  // r6 = r1 (ctx)
            insn(0x18, 1, 1, 0, fd), // r1 = map (ld_imm64, BPF_PSEUDO_MAP_FD)
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
        let bytes: Vec<u8> = code.concat();
        let license = b"GPL\0";
        let mut attr = [0u8; 128];
        put_u32(&mut attr, 0, BPF_PROG_TYPE_XDP);
        put_u32(&mut attr, 4, code.len() as u32);
        put_u64(&mut attr, 8, bytes.as_ptr() as u64);
        put_u64(&mut attr, 16, license.as_ptr() as u64);
        attr[48..58].copy_from_slice(b"ring_floor");
        let prog = bpf(BPF_PROG_LOAD, &mut attr)?;
        // SAFETY: the kernel returned a new descriptor that we now own.
        let prog = PassProgram {
            fd: unsafe { OwnedFd::from_raw_fd(prog as i32) },
        };
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
