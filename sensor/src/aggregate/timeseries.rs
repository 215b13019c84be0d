//! Events over time per series (per tool), in bounded memory: buckets of one width for every
//! series, the width taken from a ladder of calendar-friendly sizes (1 s, 5 s, 10 s, 30 s, 1 min,
//! 5 min, 15 min, 1 h, 6 h, 1 d, 7 d, 28 d) and widened when the span would need more than [`MAX_BUCKETS`]. Each
//! width divides the next and bucket starts are multiples of the width since the epoch, so
//! widening merges whole buckets and never splits one.

const NS: u64 = 1_000_000_000;
pub const WIDTHS_S: [u64; 12] = [
    1, 5, 10, 30, 60, 300, 900, 3600, 21_600, 86_400, 604_800, 2_419_200,
];
pub const MAX_BUCKETS: usize = 2048;

#[derive(Clone, Debug, Default)]
pub struct Timeseries {
    /// Start of bucket 0 (ns since the epoch), a multiple of the width.
    origin_ns: u64,
    width: usize,
    len: usize,
    /// Per series; shorter than `len` when its last buckets are empty.
    series: Vec<Vec<u32>>,
}

impl Timeseries {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn width_s(&self) -> u64 {
        WIDTHS_S[self.width]
    }

    fn width_ns(&self) -> u64 {
        self.width_s() * NS
    }

    pub fn origin_ns(&self) -> u64 {
        self.origin_ns
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Series indices in use (some may be empty).
    pub fn series_count(&self) -> usize {
        self.series.len()
    }

    /// Bucket counts of series `key` (missing trailing buckets are zero).
    pub fn series(&self, key: usize) -> &[u32] {
        self.series.get(key).map_or(&[], Vec::as_slice)
    }

    pub fn add(&mut self, key: usize, t_ns: u64) {
        if self.len == 0 {
            self.origin_ns = t_ns - t_ns % self.width_ns();
            self.len = 1;
        }
        let index = loop {
            let w = self.width_ns();
            if t_ns < self.origin_ns {
                let start = t_ns - t_ns % w;
                let extra = ((self.origin_ns - start) / w) as usize;
                if self.len + extra > MAX_BUCKETS {
                    if self.widen() {
                        continue;
                    }
                    // At the widest width, a time before the first bucket is counted in it.
                    break 0;
                }
                for s in self.series.iter_mut().filter(|s| !s.is_empty()) {
                    s.splice(0..0, std::iter::repeat_n(0, extra));
                }
                self.origin_ns = start;
                self.len += extra;
            }
            let index = ((t_ns - self.origin_ns) / w) as usize;
            if index >= MAX_BUCKETS && self.widen() {
                continue;
            }
            // At the widest width, a time beyond the last bucket is counted in it.
            let index = index.min(MAX_BUCKETS - 1);
            self.len = self.len.max(index + 1);
            break index;
        };
        if self.series.len() <= key {
            self.series.resize_with(key + 1, Vec::new);
        }
        let s = &mut self.series[key];
        if s.len() <= index {
            s.resize(index + 1, 0);
        }
        s[index] = s[index].saturating_add(1);
    }

    /// One step up the ladder; false at the top.
    fn widen(&mut self) -> bool {
        if self.width + 1 >= WIDTHS_S.len() {
            return false;
        }
        self.rebin(self.width + 1);
        true
    }

    fn rebin(&mut self, width: usize) {
        let old_w = self.width_ns();
        let new_w = WIDTHS_S[width] * NS;
        let origin = self.origin_ns;
        let new_origin = origin - origin % new_w;
        let map = |j: usize| ((origin + j as u64 * old_w - new_origin) / new_w) as usize;
        let new_len = if self.len == 0 {
            0
        } else {
            map(self.len - 1) + 1
        };
        for s in &mut self.series {
            if s.is_empty() {
                continue;
            }
            let mut merged = vec![0u32; map(s.len() - 1) + 1];
            for (j, n) in s.iter().enumerate() {
                let m = &mut merged[map(j)];
                *m = m.saturating_add(*n);
            }
            *s = merged;
        }
        self.origin_ns = new_origin;
        self.width = width;
        self.len = new_len;
    }

    /// A copy with at most `max` buckets (for a plot), widened as needed.
    pub fn with_at_most(&self, max: usize) -> Timeseries {
        let mut copy = self.clone();
        while copy.len > max && copy.widen() {}
        copy
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.series.iter().map(|s| s.capacity() * 4).sum::<usize>() + self.series.capacity() * 24
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 3600 * NS;

    #[test]
    fn buckets_widen_and_keep_every_event() {
        let mut t = Timeseries::new();
        let base = 1_700_000_000 * NS;
        for i in 0..37u64 {
            t.add(0, base + i * H);
            t.add(1, base + i * H / 2);
        }
        assert_eq!(
            t.width_s(),
            300,
            "36 hours of minutes is 2160 buckets: 5 minutes"
        );
        assert!(t.len() <= MAX_BUCKETS);
        let total = |t: &Timeseries, k| t.series(k).iter().map(|n| u64::from(*n)).sum::<u64>();
        assert_eq!(total(&t, 0), 37);
        assert_eq!(total(&t, 1), 37);
        // Earlier than the origin: buckets are prepended.
        t.add(0, base - 10 * H);
        assert_eq!(total(&t, 0), 38);
        assert_eq!(t.origin_ns() % (t.width_s() * NS), 0);
        let small = t.with_at_most(100);
        assert!(small.len() <= 100, "{}", small.len());
        assert_eq!(total(&small, 0), 38);
        assert_eq!(total(&small, 1), 37);
    }

    #[test]
    fn far_apart_times_stay_bounded() {
        let mut t = Timeseries::new();
        t.add(0, 0);
        t.add(0, 1_800_000_000 * NS);
        t.add(0, u64::MAX);
        assert!(t.len() <= MAX_BUCKETS);
        assert_eq!(t.series(0).iter().sum::<u32>(), 3);
    }
}
