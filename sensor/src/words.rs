//! Short byte strings read as machine words: their first and last `N` bytes, two loads that
//! overlap or meet for any length from `N` to `2 N`. The hot paths compare and pack the short
//! names and words of a message this way instead of a loop or a call to `memcmp`.

/// The first and the last `N` bytes of `bytes`; `None` when it is shorter than `N`.
#[inline(always)]
pub(crate) fn ends<const N: usize>(bytes: &[u8]) -> Option<([u8; N], [u8; N])> {
    Some((*bytes.first_chunk::<N>()?, *bytes.last_chunk::<N>()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_are_the_first_and_last_bytes() {
        let bytes: Vec<u8> = (0..12).collect();
        assert_eq!(
            ends::<8>(&bytes),
            Some(([0, 1, 2, 3, 4, 5, 6, 7], [4, 5, 6, 7, 8, 9, 10, 11]))
        );
        assert_eq!(ends::<4>(&bytes[..4]), Some(([0, 1, 2, 3], [0, 1, 2, 3])));
        assert_eq!(ends::<4>(&bytes[..3]), None);
    }
}
