//! Draining the ring buffers, one per CPU: asynchronously, in batches, oldest record first,
//! without copying records.
//!
//! Records of one source can arrive on several CPUs (a NIC that hashes ports spreads a scanner's
//! packets over its queues), and the IP-ID analysis reads a source's packets in order. So a
//! batch is a merge of the rings by the records' kernel timestamps, not one ring after another.
//! aya's reader takes a record as it reads it, and a merge must look at each ring's next record
//! before choosing one: the rings are read in place here ([`RingPages`], also what the tests and
//! the kernel benchmark read rings with).

use std::{
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
    sync::atomic::{AtomicU32, AtomicU64, Ordering},
    time::Duration,
};

use aya::maps::MapData;
use tokio::io::unix::AsyncFd;

use super::CaptureError;
use crate::record;

const BUSY_BIT: u32 = 1 << 31;
const DISCARD_BIT: u32 = 1 << 30;
const HEADER_BYTES: u64 = 8;

/// The ring bytes a record of `len` bytes takes: its header and body, rounded up to 8.
fn span(len: u32) -> u64 {
    (u64::from(len) + HEADER_BYTES).next_multiple_of(8)
}

/// A ring buffer map's pages, mapped for reading records in place: the record at the consumer
/// position can be looked at before it is taken.
pub struct RingPages {
    consumer: *const AtomicU64,
    producer: *const AtomicU64,
    data: *const u8,
    mask: u64,
    page: usize,
    mapped: usize,
    /// Our consumer position, published after each record.
    pos: u64,
    /// The producer position as last read: records before it are committed or busy.
    produced: u64,
    /// The record at `pos`: its timestamp and length, once looked at.
    head: Option<(u64, u32)>,
}

// SAFETY: the pointers are to mappings owned by this value; the kernel writes them concurrently,
// and every access to the positions and headers is atomic.
unsafe impl Send for RingPages {}

impl RingPages {
    /// Maps the ring buffer map `fd` (its size read from the descriptor's fdinfo).
    pub fn map(fd: BorrowedFd<'_>) -> std::io::Result<Self> {
        let fd = fd.as_raw_fd();
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))?;
        let bytes: u64 = info
            .lines()
            .find_map(|line| line.strip_prefix("max_entries:"))
            .and_then(|v| v.trim().parse().ok())
            .filter(|v: &u64| v.is_power_of_two())
            .ok_or_else(|| std::io::Error::other("no ring buffer size in the map's fdinfo"))?;
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let mapped = page + 2 * bytes as usize;
        // SAFETY: mapping the ring buffer's pages as the kernel documents: the consumer page
        // read-write at offset 0; the producer page and the data pages (twice, so that a record
        // that wraps reads as one run) read-only after it.
        let (consumer, producer) = unsafe {
            let c = libc::mmap(
                std::ptr::null_mut(),
                page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            );
            if c == libc::MAP_FAILED {
                return Err(std::io::Error::last_os_error());
            }
            let p = libc::mmap(
                std::ptr::null_mut(),
                mapped,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd,
                page as libc::off_t,
            );
            if p == libc::MAP_FAILED {
                let error = std::io::Error::last_os_error();
                libc::munmap(c, page);
                return Err(error);
            }
            (c.cast::<AtomicU64>(), p.cast::<AtomicU64>())
        };
        // SAFETY: just mapped.
        let pos = unsafe { (*consumer).load(Ordering::Acquire) };
        Ok(Self {
            consumer,
            producer,
            data: producer.cast::<u8>().wrapping_add(page),
            mask: bytes - 1,
            page,
            mapped,
            pos,
            produced: pos,
            head: None,
        })
    }

    /// Reads the producer position: records written since are now visible to `look`.
    pub fn refresh(&mut self) {
        // SAFETY: the producer page is mapped for the life of self.
        self.produced = unsafe { (*self.producer).load(Ordering::Acquire) };
    }

    /// The timestamp and length of the record at `pos`, if it is committed; discarded records
    /// are skipped.
    pub fn look(&mut self) -> Option<(u64, u32)> {
        if self.head.is_some() {
            return self.head;
        }
        while self.pos < self.produced {
            let at = (self.pos & self.mask) as usize;
            // SAFETY: `at` is inside the ring; a header is 8-byte aligned.
            let header =
                unsafe { (*self.data.add(at).cast::<AtomicU32>()).load(Ordering::Acquire) };
            if header & BUSY_BIT != 0 {
                return None;
            }
            let len = header & !(BUSY_BIT | DISCARD_BIT);
            if header & DISCARD_BIT != 0 {
                self.skip(len);
                continue;
            }
            let body = self.body(len);
            let timestamp = body
                .get(..8)
                .map_or(0, |b| u64::from_ne_bytes(b.try_into().unwrap_or_default()));
            self.head = Some((timestamp, len));
            return self.head;
        }
        None
    }

    /// The record at the consumer position, of `len` bytes (as `look` gave it).
    pub fn body(&self, len: u32) -> &[u8] {
        let at = (self.pos & self.mask) as usize + HEADER_BYTES as usize;
        // SAFETY: a committed record lies within the double mapping (the kernel never writes
        // one longer than the ring), and stays unchanged until the consumer position passes it.
        unsafe { std::slice::from_raw_parts(self.data.add(at), len as usize) }
    }

    /// Fetches the record after the one at the consumer position, of `len` bytes, ahead of its
    /// turn ([`record::prefetch`]), from its header on: where it starts if it is there already
    /// (the data pages are mapped twice, so the address is inside the mapping either way).
    fn prefetch_next(&self, len: u32) {
        let next = self.pos + span(len);
        record::prefetch(self.data.wrapping_add((next & self.mask) as usize));
    }

    /// The record after the one at the consumer position (of `len` bytes) if it is committed,
    /// for its state to be fetched while this one is handled; the record after it is fetched
    /// ahead. When it is not committed yet, it is fetched ahead itself, and `None`. Takes
    /// nothing.
    fn ahead(&self, len: u32) -> Option<&[u8]> {
        let next = self.pos + span(len);
        if next >= self.produced {
            self.prefetch_next(len);
            return None;
        }
        let at = (next & self.mask) as usize;
        // SAFETY: `at` is inside the ring and 8-byte aligned; the header of a position before the
        // producer's is written.
        let header = unsafe { (*self.data.add(at).cast::<AtomicU32>()).load(Ordering::Acquire) };
        if header & (BUSY_BIT | DISCARD_BIT) != 0 {
            self.prefetch_next(len);
            return None;
        }
        let next_len = header & !(BUSY_BIT | DISCARD_BIT);
        let after = next + span(next_len);
        record::prefetch(self.data.wrapping_add((after & self.mask) as usize));
        // SAFETY: as in `body`: a committed record lies within the double mapping and stays
        // unchanged until the consumer position passes it.
        Some(unsafe {
            std::slice::from_raw_parts(self.data.add(at + HEADER_BYTES as usize), next_len as usize)
        })
    }

    /// Hands every record written before the call to `handle`, in ring order; returns how many.
    pub fn drain(&mut self, mut handle: impl FnMut(&[u8])) -> u64 {
        self.refresh();
        let mut records = 0;
        while let Some((_, len)) = self.look() {
            self.prefetch_next(len);
            handle(self.body(len));
            self.skip(len);
            records += 1;
        }
        records
    }

    /// Marks the record at the consumer position, of `len` bytes, consumed.
    pub fn skip(&mut self, len: u32) {
        self.pos += span(len);
        self.head = None;
        // SAFETY: the consumer page is mapped read-write for the life of self.
        unsafe { (*self.consumer).store(self.pos, Ordering::Release) };
    }
}

impl Drop for RingPages {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what new() mapped.
        unsafe {
            libc::munmap(self.consumer.cast_mut().cast(), self.page);
            libc::munmap(self.producer.cast_mut().cast(), self.mapped);
        }
    }
}

/// One CPU's ring: the map (its descriptor, for epoll) and its pages.
struct CpuRing {
    map: MapData,
    pages: RingPages,
}

/// Reads records from the CPUs' ring buffers as they arrive.
pub struct RingReader {
    rings: Vec<CpuRing>,
    /// Indices of the rings with a record to hand out, during a drain.
    active: Vec<usize>,
    /// An epoll instance over every ring: readable when any of them has records to read.
    ready: AsyncFd<OwnedFd>,
}

impl RingReader {
    pub fn new(rings: Vec<MapData>) -> Result<Self, CaptureError> {
        // SAFETY: epoll_create1 has no preconditions; a non-negative result is a new descriptor.
        let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epoll < 0 {
            return Err(CaptureError::Ring(std::io::Error::last_os_error()));
        }
        // SAFETY: a new descriptor that nothing else owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(epoll) };
        let rings = rings
            .into_iter()
            .map(|map| {
                let pages = RingPages::map(map.fd().as_fd()).map_err(CaptureError::Ring)?;
                Ok(CpuRing { map, pages })
            })
            .collect::<Result<Vec<_>, CaptureError>>()?;
        for (index, ring) in rings.iter().enumerate() {
            let mut event = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: index as u64,
            };
            // SAFETY: both descriptors are open; the event is a valid epoll_event.
            let added = unsafe {
                libc::epoll_ctl(
                    epoll.as_raw_fd(),
                    libc::EPOLL_CTL_ADD,
                    ring.map.fd().as_fd().as_raw_fd(),
                    &mut event,
                )
            };
            if added < 0 {
                return Err(CaptureError::Ring(std::io::Error::last_os_error()));
            }
        }
        // SAFETY: the AsyncFd owns the epoll descriptor, so it stays open for as long as it is
        // registered.
        let ready =
            unsafe { AsyncFd::register_with_interest(epoll, tokio::io::Interest::READABLE) }
                .map_err(|e| CaptureError::Ring(e.into_parts().1))?;
        Ok(Self {
            active: Vec::with_capacity(rings.len()),
            rings,
            ready,
        })
    }

    /// Waits until records are available (woken by the kernel, or at the latest after `tick`,
    /// since the kernel may batch wakeups), then hands each one to `handle`, oldest first, until
    /// the rings are empty or `max` records were handled. Returns the number handled.
    ///
    /// `handle` gets each record with the one after it in the same ring, when that one is
    /// committed already: most often the next handed out, so that what it needs can be fetched
    /// ahead.
    pub async fn drain_batch(
        &mut self,
        max: usize,
        tick: Duration,
        mut handle: impl FnMut(&[u8], Option<&[u8]>),
    ) -> Result<usize, CaptureError> {
        loop {
            let handled = self.drain(max, &mut handle);
            if handled > 0 {
                return Ok(handled);
            }
            match tokio::time::timeout(tick, self.ready.readable()).await {
                Ok(Ok(mut guard)) => {
                    // Wait for the next wakeup (or tick) after this; the rings are read at the
                    // top of the loop, after the readiness is cleared, so no wakeup is lost.
                    guard.clear_ready();
                }
                Ok(Err(e)) => return Err(CaptureError::Ring(e)),
                Err(_tick) => {}
            }
        }
    }

    /// Hands every record available now to `handle`, oldest first, without waiting (with the
    /// next, as [`drain_batch`](Self::drain_batch)).
    pub fn drain_now(&mut self, mut handle: impl FnMut(&[u8], Option<&[u8]>)) -> usize {
        self.drain(usize::MAX, &mut handle)
    }

    /// Up to `max` of the records written before the call, merged by timestamp.
    fn drain(&mut self, max: usize, handle: &mut impl FnMut(&[u8], Option<&[u8]>)) -> usize {
        // The rings with records: a machine has many CPUs, few of them receiving.
        self.active.clear();
        for (index, ring) in self.rings.iter_mut().enumerate() {
            ring.pages.refresh();
            if ring.pages.look().is_some() {
                self.active.push(index);
            }
        }
        let mut handled = 0;
        while handled < max && !self.active.is_empty() {
            let mut oldest = 0;
            let mut oldest_time = u64::MAX;
            for (slot, &index) in self.active.iter().enumerate() {
                if let Some((timestamp, _)) = self.rings[index].pages.head
                    && (slot == 0 || timestamp < oldest_time)
                {
                    oldest = slot;
                    oldest_time = timestamp;
                }
            }
            let ring = &mut self.rings[self.active[oldest]].pages;
            let Some((_, len)) = ring.head else { break };
            handle(ring.body(len), ring.ahead(len));
            ring.skip(len);
            handled += 1;
            if ring.look().is_none() {
                self.active.swap_remove(oldest);
            }
        }
        handled
    }
}
