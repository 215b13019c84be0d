//! SSE2 byte tests shared by the scanners that go sixteen bytes at a time (escaping, digit
//! masking, tag decoding). SSE2 is part of the x86-64 baseline.

use std::arch::x86_64::{__m128i, _mm_andnot_si128, _mm_cmplt_epi8, _mm_set1_epi8};

/// Bytes of `x` from `low` to `high` (`high` below 0x7f), as all-ones bytes. Signed compares:
/// bytes above 0x7f are negative, below any such range.
#[inline(always)]
pub(crate) fn in_range(x: __m128i, low: u8, high: u8) -> __m128i {
    // SAFETY: register-only SSE2 operations, always available on x86-64.
    unsafe {
        _mm_andnot_si128(
            _mm_cmplt_epi8(x, _mm_set1_epi8(low as i8)),
            _mm_cmplt_epi8(x, _mm_set1_epi8(high as i8 + 1)),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::arch::x86_64::{_mm_loadu_si128, _mm_movemask_epi8};

    use super::*;

    #[test]
    fn in_range_is_the_byte_comparison() {
        let all: Vec<u8> = (0..=255).collect();
        for (low, high) in [
            (b'0', b'9'),
            (b'a', b'f'),
            (0x20, 0x7e),
            (0, 0x7e),
            (0x41, 0x41),
        ] {
            for block in all.chunks_exact(16) {
                // SAFETY: `block` is 16 bytes.
                let v = unsafe { _mm_loadu_si128(block.as_ptr().cast::<__m128i>()) };
                // SAFETY: register-only SSE2.
                let bits = unsafe { _mm_movemask_epi8(in_range(v, low, high)) } as u32;
                for (i, &b) in block.iter().enumerate() {
                    assert_eq!(bits >> i & 1 == 1, (low..=high).contains(&b), "{b:#x}");
                }
            }
        }
    }
}
