//! Draining the ring buffers, one per CPU: asynchronously, in batches, without copying records.

use std::{
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;

use super::CaptureError;

/// Reads records from the CPUs' ring buffers as they arrive.
pub struct RingReader {
    rings: Vec<RingBuf<MapData>>,
    /// An epoll instance over every ring: readable when any of them has records to read.
    ready: AsyncFd<OwnedFd>,
    /// The ring the next drain starts at, so that a busy CPU's ring does not keep the others
    /// waiting batch after batch.
    next: usize,
}

impl RingReader {
    pub fn new(rings: Vec<RingBuf<MapData>>) -> Result<Self, CaptureError> {
        // SAFETY: epoll_create1 has no preconditions; a non-negative result is a new descriptor.
        let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epoll < 0 {
            return Err(CaptureError::Ring(std::io::Error::last_os_error()));
        }
        // SAFETY: a new descriptor that nothing else owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(epoll) };
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
                    ring.as_raw_fd(),
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
            rings,
            ready,
            next: 0,
        })
    }

    /// Waits until records are available (woken by the kernel, or at the latest after `tick`,
    /// since the kernel may batch wakeups), then hands each one to `handle` until the rings are
    /// empty or `max` records were handled. Returns the number handled.
    pub async fn drain_batch(
        &mut self,
        max: usize,
        tick: Duration,
        mut handle: impl FnMut(&[u8]),
    ) -> Result<usize, CaptureError> {
        loop {
            let handled = self.drain(max, &mut handle);
            if handled > 0 {
                return Ok(handled);
            }
            match tokio::time::timeout(tick, self.ready.readable()).await {
                Ok(Ok(mut guard)) => {
                    // Emptied: wait for the next wakeup (or tick). The rings are read below,
                    // after the readiness is cleared, so that no wakeup in between is lost.
                    guard.clear_ready();
                }
                Ok(Err(e)) => return Err(CaptureError::Ring(e)),
                Err(_tick) => {}
            }
        }
    }

    /// Hands every record available now to `handle`, without waiting.
    pub fn drain_now(&mut self, mut handle: impl FnMut(&[u8])) -> usize {
        self.drain(usize::MAX, &mut handle)
    }

    /// Up to `max` records from the rings, starting at `next`.
    fn drain(&mut self, max: usize, handle: &mut impl FnMut(&[u8])) -> usize {
        let count = self.rings.len();
        let mut handled = 0;
        for step in 0..count {
            let ring = &mut self.rings[(self.next + step) % count];
            while handled < max {
                let Some(item) = ring.next() else { break };
                handle(&item);
                handled += 1;
            }
        }
        self.next = (self.next + 1) % count.max(1);
        handled
    }
}
