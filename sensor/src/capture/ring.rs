//! Draining the ring buffer: asynchronously, in batches, without copying records.

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

    /// Waits until records are available, then hands each one to `handle` until the ring is
    /// empty or `max` records were handled. Returns the number handled.
    pub async fn drain_batch(
        &mut self,
        max: usize,
        mut handle: impl FnMut(&[u8]),
    ) -> Result<usize, CaptureError> {
        loop {
            let mut guard = self.fd.readable_mut().await.map_err(CaptureError::Ring)?;
            let ring = guard.get_inner_mut();
            let mut handled = 0;
            while handled < max {
                let Some(item) = ring.next() else { break };
                handle(&item);
                handled += 1;
            }
            if handled < max {
                // Empty: wait for the next wakeup.
                guard.clear_ready();
            }
            if handled > 0 {
                return Ok(handled);
            }
        }
    }

    /// Hands every record available now to `handle`, without waiting.
    pub fn drain_now(&mut self, mut handle: impl FnMut(&[u8])) -> usize {
        let ring = self.fd.get_mut();
        let mut handled = 0;
        while let Some(item) = ring.next() {
            handle(&item);
            handled += 1;
        }
        handled
    }
}
