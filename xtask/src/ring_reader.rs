//! A BPF ring buffer consumer straight over its mmapped pages, for the kernel cost benchmark:
//! it empties a ring between runs at the cost of reading one header per record, so that the
//! ring's memory stays as the runs left it (in the cache, when the ring fits in it). aya's reader
//! keeps its consumer position to itself, so two readers of one ring cannot take turns; the
//! benchmark uses this one only.

use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd},
    sync::atomic::{AtomicU32, AtomicU64, Ordering},
};

const BUSY_BIT: u32 = 1 << 31;
const DISCARD_BIT: u32 = 1 << 30;
const HEADER_BYTES: u64 = 8;

/// What a drain took out of the ring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drained {
    pub records: u64,
    pub bytes: u64,
}

pub struct RingReader {
    consumer: *mut u64,
    /// The producer page, followed by the data pages mapped twice (a record that wraps around
    /// the end reads as one contiguous run).
    producer: *const u64,
    mapped: usize,
    page: usize,
    mask: u64,
}

// SAFETY: the pointers are to shared mappings that live as long as the reader; every access to
// the positions and record headers is atomic, and record bodies are only read.
unsafe impl Send for RingReader {}
unsafe impl Sync for RingReader {}

impl RingReader {
    /// Maps the ring buffer map `fd` (its size read from the descriptor's fdinfo).
    pub fn map(fd: BorrowedFd<'_>) -> io::Result<Self> {
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))?;
        let ring_bytes: u32 = info
            .lines()
            .find_map(|line| line.strip_prefix("max_entries:"))
            .and_then(|v| v.trim().parse().ok())
            .filter(|v: &u32| v.is_power_of_two())
            .ok_or_else(|| io::Error::other("no ring buffer size in the map's fdinfo"))?;
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let mapped = page + 2 * ring_bytes as usize;
        // SAFETY: mapping the ring buffer's pages as the kernel documents: the consumer page
        // read-write at offset 0; the producer page and the data (twice) read-only after it.
        let (consumer, producer) = unsafe {
            let c = libc::mmap(
                std::ptr::null_mut(),
                page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            );
            if c == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            let p = libc::mmap(
                std::ptr::null_mut(),
                mapped,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                page as libc::off_t,
            );
            if p == libc::MAP_FAILED {
                let error = io::Error::last_os_error();
                libc::munmap(c, page);
                return Err(error);
            }
            (c.cast::<u64>(), p.cast::<u64>())
        };
        Ok(Self {
            consumer,
            producer,
            mapped,
            page,
            mask: u64::from(ring_bytes) - 1,
        })
    }

    fn consumer_pos(&self) -> &AtomicU64 {
        // SAFETY: the consumer page is mapped, 8-byte aligned, for the life of self.
        unsafe { AtomicU64::from_ptr(self.consumer) }
    }

    fn producer_pos(&self) -> &AtomicU64 {
        // SAFETY: as above, for the producer page.
        unsafe { AtomicU64::from_ptr(self.producer.cast_mut()) }
    }

    /// Takes every committed record, reading only its header; stops at the first one still
    /// being written.
    pub fn drain(&self) -> Drained {
        let mut drained = Drained::default();
        let mut pos = self.consumer_pos().load(Ordering::Relaxed);
        let produced = self.producer_pos().load(Ordering::Acquire);
        let data = self.producer.cast::<u8>().wrapping_add(self.page);
        while pos < produced {
            let at = (pos & self.mask) as usize;
            // SAFETY: `at` < ring size; the header and the record (at most the ring's size) lie
            // within the double mapping.
            let header = unsafe { AtomicU32::from_ptr(data.add(at).cast::<u32>().cast_mut()) };
            let len = header.load(Ordering::Acquire);
            if len & BUSY_BIT != 0 {
                break;
            }
            let body = u64::from(len & !(BUSY_BIT | DISCARD_BIT));
            if len & DISCARD_BIT == 0 {
                drained.records += 1;
                drained.bytes += body;
            }
            pos += (body + HEADER_BYTES).next_multiple_of(8);
        }
        if drained.records > 0 {
            self.consumer_pos().store(pos, Ordering::Release);
        }
        drained
    }
}

impl Drop for RingReader {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what map() mapped.
        unsafe {
            libc::munmap(self.consumer.cast(), self.page);
            libc::munmap(self.producer.cast_mut().cast(), self.mapped);
        }
    }
}
