//! Short byte strings read as machine words: their first and last `N` bytes, two loads that
//! overlap or meet for any length from `N` to `2 N`. The hot paths compare and pack the short
//! names and words of a message this way instead of a loop or a call to `memcmp`.

/// The first and the last `N` bytes of `bytes`; `None` when it is shorter than `N`.
#[inline(always)]
pub(crate) fn ends<const N: usize>(bytes: &[u8]) -> Option<([u8; N], [u8; N])> {
    Some((*bytes.first_chunk::<N>()?, *bytes.last_chunk::<N>()?))
}

/// `a == b`, without a call to `memcmp` for the short names compared on every event: two
/// overlapping loads from each side.
#[inline(always)]
pub(crate) fn same_text(a: &[u8], b: &[u8]) -> bool {
    let len = a.len();
    if len != b.len() {
        return false;
    }
    match len {
        0 => true,
        1..=3 => a[0] == b[0] && a[len / 2] == b[len / 2] && a[len - 1] == b[len - 1],
        4..=7 => ends::<4>(a) == ends::<4>(b),
        8..=15 => ends::<8>(a) == ends::<8>(b),
        16..=32 => ends::<16>(a) == ends::<16>(b),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_text_is_equality() {
        let text: Vec<u8> = (0..40u8).map(|i| b'a' + i % 26).collect();
        for len in 0..=40 {
            let a = &text[..len];
            let copy = a.to_vec();
            assert!(same_text(a, &copy));
            for at in 0..len {
                let mut b = a.to_vec();
                b[at] ^= 1;
                assert!(!same_text(a, &b), "{len} {at}");
            }
            assert!(!same_text(a, &text[..(len + 1).min(40)]) || len == 40);
        }
    }

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
