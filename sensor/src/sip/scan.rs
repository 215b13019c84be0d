//! Where the line ends and colons of a message are, found 64 bytes at a time.
//!
//! A SIP message is a dozen short lines: a `memchr` call per line and a byte loop per header
//! name spend more on starting up than on searching. Here each 64-byte block is classified once
//! (SSE2 on x86-64, eight bytes at a time elsewhere) into one bit per byte for `\n` and one for
//! `:`, and every later question about the block is a shift and a trailing-zero count.

/// Bits of one 64-byte block: bit `i` is byte `block * 64 + i`.
#[derive(Clone, Copy)]
struct Masks {
    newline: u64,
    colon: u64,
}

/// Blocks whose masks are kept once computed: a whole record payload (1024 bytes).
const KEPT_BLOCKS: usize = 16;

pub struct Scanner<'a> {
    bytes: &'a [u8],
    /// Bit `b`: block `b`'s masks are in `kept[b]`.
    have: u32,
    kept: [Masks; KEPT_BLOCKS],
    /// Beyond the kept blocks, the last one computed (`usize::MAX`: none).
    far_block: usize,
    far: Masks,
}

const NO_BITS: Masks = Masks {
    newline: 0,
    colon: 0,
};

impl<'a> Scanner<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Scanner {
            bytes,
            have: 0,
            kept: [NO_BITS; KEPT_BLOCKS],
            far_block: usize::MAX,
            far: NO_BITS,
        }
    }

    #[inline]
    fn masks(&mut self, block: usize) -> Masks {
        if block < KEPT_BLOCKS {
            if self.have & (1 << block) == 0 {
                self.have |= 1 << block;
                self.kept[block] = classify(self.bytes, block * 64);
            }
            return self.kept[block];
        }
        if block != self.far_block {
            self.far_block = block;
            self.far = classify(self.bytes, block * 64);
        }
        self.far
    }

    /// The first `\n` at or after `pos`.
    #[inline]
    pub fn newline(&mut self, pos: usize) -> Option<usize> {
        self.find(pos, self.bytes.len(), |m| m.newline)
    }

    /// The first `:` in `pos..end`.
    #[inline]
    pub fn colon(&mut self, pos: usize, end: usize) -> Option<usize> {
        self.find(pos, end.min(self.bytes.len()), |m| m.colon)
    }

    #[inline]
    fn find(&mut self, mut pos: usize, end: usize, which: impl Fn(Masks) -> u64) -> Option<usize> {
        while pos < end {
            let block = pos / 64;
            let bits = which(self.masks(block)) & (u64::MAX << (pos % 64));
            if bits != 0 {
                let found = block * 64 + bits.trailing_zeros() as usize;
                return (found < end).then_some(found);
            }
            pos = (block + 1) * 64;
        }
        None
    }
}

/// The masks of the 64 bytes at `start` (fewer at the end of the message: the rest of the
/// block is classified as zero bytes, which match nothing).
fn classify(bytes: &[u8], start: usize) -> Masks {
    let rest = bytes.get(start..).unwrap_or_default();
    match rest.first_chunk::<64>() {
        Some(block) => classify_full(block),
        None => {
            let mut block = [0u8; 64];
            block[..rest.len()].copy_from_slice(rest);
            classify_full(&block)
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn classify_full(block: &[u8; 64]) -> Masks {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8,
    };
    let mut masks = Masks {
        newline: 0,
        colon: 0,
    };
    // SAFETY: SSE2 is part of the x86-64 baseline, so these instructions always exist; each
    // load reads the 16 bytes of a `chunk` and has no alignment requirement.
    unsafe {
        let newline = _mm_set1_epi8(b'\n' as i8);
        let colon = _mm_set1_epi8(b':' as i8);
        for (i, chunk) in block.chunks_exact(16).enumerate() {
            let v = _mm_loadu_si128(chunk.as_ptr().cast::<__m128i>());
            let n = _mm_movemask_epi8(_mm_cmpeq_epi8(v, newline)) as u16;
            let c = _mm_movemask_epi8(_mm_cmpeq_epi8(v, colon)) as u16;
            masks.newline |= u64::from(n) << (16 * i);
            masks.colon |= u64::from(c) << (16 * i);
        }
    }
    masks
}

#[cfg(not(target_arch = "x86_64"))]
fn classify_full(block: &[u8; 64]) -> Masks {
    classify_words(block)
}

/// The portable form: eight bytes at a time in a u64.
#[cfg(any(test, not(target_arch = "x86_64")))]
fn classify_words(block: &[u8; 64]) -> Masks {
    /// One bit per byte of `word` equal to `byte` (exact: no carries between bytes).
    fn equal_bits(word: u64, byte: u8) -> u64 {
        const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
        let x = word ^ (u64::from(byte) * 0x0101_0101_0101_0101);
        let nonzero = ((x & LOW7) + LOW7) | x;
        let zero_high = !(nonzero | LOW7);
        // Gather the eight high bits into the low byte.
        ((zero_high >> 7).wrapping_mul(0x0102_0408_1020_4080)) >> 56
    }
    let mut masks = Masks {
        newline: 0,
        colon: 0,
    };
    for (i, chunk) in block.chunks_exact(8).enumerate() {
        let word = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
        masks.newline |= equal_bits(word, b'\n') << (8 * i);
        masks.colon |= equal_bits(word, b':') << (8 * i);
    }
    masks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portable_form_agrees() {
        let mut block = [0u8; 64];
        for seed in 0..200u32 {
            for (i, b) in block.iter_mut().enumerate() {
                let r = (seed * 64 + i as u32).wrapping_mul(2_654_435_761) >> 24;
                *b = [b'\n', b':', 0x8a, 0xba, 0x0b, 0x3b, b'x', 0xff][(r % 8) as usize];
            }
            let (a, b) = (classify_full(&block), classify_words(&block));
            assert_eq!((a.newline, a.colon), (b.newline, b.colon));
        }
    }

    #[test]
    fn agrees_with_a_byte_loop() {
        let mut bytes = Vec::new();
        for i in 0..700u32 {
            bytes.push(match i.wrapping_mul(2_654_435_761) >> 28 {
                0 | 1 => b'\n',
                2 => b':',
                3 => 0x8a, // '\n' | 0x80: must not count
                4 => 0xba, // ':' | 0x80
                _ => b'a' + (i % 26) as u8,
            });
        }
        for len in [0, 1, 63, 64, 65, 127, 128, 200, 700] {
            let bytes = &bytes[..len];
            let mut scan = Scanner::new(bytes);
            for pos in 0..=len {
                let want = bytes[pos.min(len)..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map(|i| pos + i);
                assert_eq!(scan.newline(pos), want, "newline len {len} pos {pos}");
                for end in [pos, pos + 1, pos + 30, pos + 100, len] {
                    let want = bytes[pos.min(len)..end.min(len).max(pos.min(len))]
                        .iter()
                        .position(|&b| b == b':')
                        .map(|i| pos + i);
                    assert_eq!(scan.colon(pos, end), want, "colon len {len} {pos}..{end}");
                }
            }
        }
    }
}
