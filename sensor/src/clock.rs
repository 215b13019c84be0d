//! Turning kernel monotonic timestamps into wall-clock time, and formatting it.

/// Offset from CLOCK_MONOTONIC to CLOCK_REALTIME, taken once at start.
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    offset_ns: i128,
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid clock id and pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

impl WallClock {
    pub fn now() -> Self {
        let mono = clock_ns(libc::CLOCK_MONOTONIC);
        let real = clock_ns(libc::CLOCK_REALTIME);
        Self {
            offset_ns: real - mono,
        }
    }

    /// Nanoseconds since the Unix epoch for a `bpf_ktime_get_ns()` value.
    pub fn wall_ns(&self, monotonic_ns: u64) -> u64 {
        (i128::from(monotonic_ns) + self.offset_ns).clamp(0, i128::from(u64::MAX)) as u64
    }
}

/// Current CLOCK_MONOTONIC in nanoseconds, the clock of kernel timestamps.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC) as u64
}

/// Current wall-clock time in nanoseconds since the epoch.
pub fn realtime_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME) as u64
}

/// RFC 3339 UTC with microseconds (`2026-11-22T02:04:03.123456Z`): EVE's precision, in the `Z`
/// form that ECS consumers and `date -d` both read.
pub fn rfc3339_micros(epoch_ns: u64) -> String {
    let secs = epoch_ns / 1_000_000_000;
    let micros = (epoch_ns % 1_000_000_000) / 1_000;
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Nanoseconds since the epoch of an RFC 3339 time (`2026-11-22T02:04:03.123456Z`, any number
/// of fraction digits, `Z` or a `+HH:MM` offset; `t`, `z` and a space separator accepted).
/// `None` for anything else, or a time before the epoch.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let digits = b.get(r)?;
        digits.iter().try_fold(0u32, |n, d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    // 60: a leap second, read as the next second's start.
    if second > 60 {
        return None;
    }
    let mut i = 19;
    let mut frac_ns: u64 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 9 {
                frac_ns = frac_ns * 10 + u64::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start)..9 {
            frac_ns *= 10;
        }
    }
    let offset_s: i64 = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let digit = |d: &u8| d.is_ascii_digit().then(|| i64::from(d - b'0'));
            let minutes = (digit(h1)? * 10 + digit(h2)?) * 60 + digit(m1)? * 10 + digit(m2)?;
            if *sign == b'+' {
                minutes * 60
            } else {
                -minutes * 60
            }
        }
        _ => return None,
    };
    let days = days_from_civil(i64::from(year), month, day);
    let secs = days * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second)
        - offset_s;
    let secs = u64::try_from(secs).ok()?;
    secs.checked_mul(1_000_000_000)?.checked_add(frac_ns)
}

/// (year, month, day) to days since 1970-01-01; Howard Hinnant's algorithm.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Compact UTC to the second (`20261122T020403Z`), for file names: sorts as time does and holds
/// no character a shell or a file system treats specially.
pub fn compact_utc(epoch_ns: u64) -> String {
    let secs = epoch_ns / 1_000_000_000;
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day); Howard Hinnant's algorithm.
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339_micros(0), "1970-01-01T00:00:00.000000Z");
        // 2026-11-22T02:04:03.123456Z
        assert_eq!(
            rfc3339_micros(1_795_313_043_123_456_789),
            "2026-11-22T02:04:03.123456Z"
        );
        assert_eq!(
            rfc3339_micros(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000000Z"
        );
        assert_eq!(compact_utc(1_795_313_043_123_456_789), "20261122T020403Z");
    }

    #[test]
    fn parses_what_it_formats_and_offsets() {
        for ns in [0, 1_795_313_043_123_456_000, 951_782_400_000_000_000] {
            assert_eq!(parse_rfc3339(&rfc3339_micros(ns)), Some(ns));
        }
        assert_eq!(
            parse_rfc3339("2026-11-22T03:04:03.5+01:00"),
            Some(1_795_313_043_500_000_000)
        );
        assert_eq!(
            parse_rfc3339("2026-11-22 02:04:03z"),
            Some(1_795_313_043_000_000_000)
        );
        assert_eq!(
            parse_rfc3339("2026-11-22T02:04:03.1234567891Z"),
            Some(1_795_313_043_123_456_789)
        );
        for bad in [
            "",
            "2026-11-22",
            "2026-13-22T02:04:03Z",
            "2026-11-22T02:04:03",
            "2026-11-22T02:04:03.Z",
            "2026-11-22T02:04:03+0100",
            "1969-12-31T23:59:59Z",
            "2026-11-22T02:04:03Zjunk",
            "２026-11-22T02:04:03Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn wall_clock_is_near_realtime() {
        let clock = WallClock::now();
        let wall = clock.wall_ns(monotonic_ns());
        let real = realtime_ns();
        assert!(wall.abs_diff(real) < 1_000_000_000);
    }
}
