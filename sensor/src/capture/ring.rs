//! Draining the ring buffer: asynchronously, in batches, without copying records.

use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;

use super::CaptureError;

/// Reads records from the ring buffer as they arrive.
pub struct RingReader {
    fd: AsyncFd<RingBuf<MapData>>,
}

impl RingReader {
    pub fn new(ring: RingBuf<MapData>) -> Result<Self, CaptureError> {
        // SAFETY: the ring buffer owns its descriptor and the AsyncFd owns the ring buffer, so
        // the descriptor stays open for as long as it is registered.
        let fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| CaptureError::Ring(e.into_parts().1))?;
        Ok(Self { fd })
    }

    /// Waits until records are available (woken by the kernel, or at the latest after `tick`,
    /// since the kernel may batch wakeups), then hands each one to `handle` until the ring is
    /// empty or `max` records were handled. Returns the number handled.
    pub async fn drain_batch(
        &mut self,
        max: usize,
        tick: Duration,
        mut handle: impl FnMut(&[u8]),
    ) -> Result<usize, CaptureError> {
        loop {
            let handled = drain(self.fd.get_mut(), max, &mut handle);
            if handled > 0 {
                return Ok(handled);
            }
            match tokio::time::timeout(tick, self.fd.readable_mut()).await {
                Ok(Ok(mut guard)) => {
                    let handled = drain(guard.get_inner_mut(), max, &mut handle);
                    if handled < max {
                        // Emptied: wait for the next wakeup (or tick).
                        guard.clear_ready();
                    }
                    if handled > 0 {
                        return Ok(handled);
                    }
                }
                Ok(Err(e)) => return Err(CaptureError::Ring(e)),
                Err(_tick) => {}
            }
        }
    }

    /// Hands every record available now to `handle`, without waiting.
    pub fn drain_now(&mut self, mut handle: impl FnMut(&[u8])) -> usize {
        drain(self.fd.get_mut(), usize::MAX, &mut handle)
    }
}

fn drain(ring: &mut RingBuf<MapData>, max: usize, handle: &mut impl FnMut(&[u8])) -> usize {
    let mut handled = 0;
    while handled < max {
        let Some(item) = ring.next() else { break };
        handle(&item);
        handled += 1;
    }
    handled
}
