//! An XDP program that only returns XDP_PASS, loaded straight through bpf(2) from two
//! instructions. Two uses: the floor for kernel cost measurements (nothing of the sensor's object,
//! maps, BTF or toolchain is in it), and the scanner end of a lab veth pair, which must run an XDP
//! program to receive what the sensor sends with XDP_TX (the reactive responder's SYN-ACKs).

use std::{io, os::fd::AsRawFd as _, os::fd::FromRawFd as _, os::fd::OwnedFd, time::Duration};

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
        let mut attr = [0u8; 128];
        put_u32(&mut attr, 0, self.fd.as_raw_fd() as u32);
        put_u32(&mut attr, 8, frame.len() as u32);
        put_u64(&mut attr, 16, frame.as_ptr() as u64);
        put_u32(&mut attr, 32, repeat);
        bpf(BPF_PROG_TEST_RUN, &mut attr)?;
        let retval = u32::from_ne_bytes(attr[4..8].try_into().unwrap_or_default());
        let duration = u32::from_ne_bytes(attr[36..40].try_into().unwrap_or_default());
        Ok((retval, Duration::from_nanos(u64::from(duration))))
    }
}
