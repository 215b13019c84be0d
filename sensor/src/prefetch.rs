//! Asking the CPU to fetch memory into its caches ahead of its use: the next record while this
//! one is handled, and the per-source state the next record will read. Only hints: any address
//! may be given, and none is read.

/// Fetches the cache lines holding the `len` bytes at `at`.
#[inline]
pub fn bytes(at: *const u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let offset = at as usize & 63;
        let start = at.wrapping_sub(offset);
        for line in 0..(offset + len).div_ceil(64) {
            // SAFETY: a prefetch neither faults nor reads into the program's state, whatever the
            // address; `wrapping_add` forms the address without claiming it is in bounds.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(line * 64).cast::<i8>()) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (at, len);
}

/// Fetches the cache lines holding the `T` at `at`.
#[inline]
pub fn object<T>(at: *const T) {
    bytes(at.cast(), size_of::<T>());
}
