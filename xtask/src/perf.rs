//! Hardware instruction counts of the calling thread, from perf_event_open(2): unlike time,
//! they do not change with what else runs on a shared machine.

use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

const PERF_TYPE_HARDWARE: u32 = 0;
const PERF_COUNT_HW_INSTRUCTIONS: u64 = 1;
const EXCLUDE_USER: u64 = 1 << 4;
const EXCLUDE_HV: u64 = 1 << 6;

/// Counts instructions the calling thread executes in the kernel.
pub struct KernelInstructions {
    fd: OwnedFd,
}

impl KernelInstructions {
    /// `None` where the machine exposes no hardware counters (some virtual machines).
    pub fn open() -> Option<Self> {
        // perf_event_attr: type u32, size u32, config u64, sample_period u64, sample_type u64,
        // read_format u64, flags u64 (bit fields) ...; 128 bytes is PERF_ATTR_SIZE_VER7.
        let mut attr = [0u8; 128];
        attr[0..4].copy_from_slice(&PERF_TYPE_HARDWARE.to_ne_bytes());
        attr[4..8].copy_from_slice(&128u32.to_ne_bytes());
        attr[8..16].copy_from_slice(&PERF_COUNT_HW_INSTRUCTIONS.to_ne_bytes());
        attr[40..48].copy_from_slice(&(EXCLUDE_USER | EXCLUDE_HV).to_ne_bytes());
        // SAFETY: attr is a valid perf_event_attr of the size it declares; pid 0 = this thread,
        // cpu -1 = any.
        let fd =
            unsafe { libc::syscall(libc::SYS_perf_event_open, attr.as_ptr(), 0, -1, -1, 0u64) };
        if fd < 0 {
            return None;
        }
        // SAFETY: a new descriptor we own.
        Some(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd as i32) },
        })
    }

    pub fn read(&self) -> io::Result<u64> {
        let mut value = [0u8; 8];
        // SAFETY: reading 8 bytes into an 8-byte buffer.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), value.as_mut_ptr().cast(), 8) };
        if n != 8 {
            return Err(io::Error::last_os_error());
        }
        Ok(u64::from_ne_bytes(value))
    }

    /// Kernel instructions `f` costs.
    pub fn measure<T>(&self, f: impl FnOnce() -> T) -> io::Result<(T, u64)> {
        let before = self.read()?;
        let out = f();
        let after = self.read()?;
        Ok((out, after.saturating_sub(before)))
    }
}
