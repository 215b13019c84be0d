//! Output files: created 0640, rotated by size and by time, and written in whole units (one NDJSON
//! line; one pcapng record with the interface block it needs) so that neither a rotation nor a
//! failed write leaves part of a unit behind.
//!
//! Once running, a destination that cannot be written (disk full, permission denied, directory
//! removed) is not fatal: the units meant for it are dropped and counted, the error is reported
//! once, and the destination is tried again at most every second until it can be written again.

use std::{
    ffi::CString,
    fs::{File, OpenOptions},
    io::{self, Write},
    os::unix::{
        ffi::OsStrExt as _,
        fs::{MetadataExt as _, OpenOptionsExt as _},
    },
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::clock::{compact_utc, realtime_ns};

/// Units are collected up to this many bytes before they are written out (and at every flush,
/// after each drained batch). 1 MiB rather than 256 KiB: fewer, larger writes made the userspace
/// benchmark's lean stage about 5 % faster (median of 12 paired runs) and its compact stage
/// about 2 %; 64 KiB made the lean stage about 9 % slower.
pub const BUFFER_BYTES: usize = 1024 * 1024;
/// How long a failed destination rests before it is tried again.
const RETRY: Duration = Duration::from_secs(1);
/// How often the path of an open file is checked to still name that file (moved by logrotate,
/// removed with its directory).
const IDENTITY_CHECK: Duration = Duration::from_millis(200);
/// Units written between two readings of the clock for that check: at line rate the check
/// with a clock reading per unit was a third of the write's instructions (111 of 323 per lean
/// event, callgrind). The periodic tick checks as well, so a slow stream is checked at least
/// once a second.
const IDENTITY_CHECK_UNITS: u32 = 32;
/// Output files hold attacker data and addresses that not every local user should read.
const FILE_MODE: u32 = 0o640;

/// When to start a new file. With neither limit the output is one file, appended to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rotation {
    /// Start a new file rather than let one grow past this many bytes (a unit larger than this
    /// gets a file of its own).
    pub max_bytes: Option<u64>,
    /// Start a new file at every multiple of this interval since the epoch (UTC), so that files
    /// cover aligned periods: 1h gives one file per clock hour.
    pub interval: Option<Duration>,
}

impl Rotation {
    pub fn is_on(&self) -> bool {
        self.max_bytes.is_some() || self.interval.is_some()
    }
}

/// Where an output goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    Stdout,
    /// A file; with rotation, the base name of the files (see [`rotated_name`]).
    File(PathBuf),
}

impl Destination {
    /// `-` is stdout.
    pub fn parse(s: &str) -> Self {
        if s == "-" {
            Destination::Stdout
        } else {
            Destination::File(PathBuf::from(s))
        }
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Stdout => f.write_str("stdout"),
            Destination::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// What one output did. Every unit handed to an output ends up in exactly one of `written` and
/// `dropped` (once flushed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SinkCounters {
    /// Units written (NDJSON documents; pcapng packet records).
    pub written: u64,
    /// Units lost because the destination could not be written.
    pub dropped: u64,
    /// Failed operations (open, write); one failure may drop many units.
    pub errors: u64,
    /// Bytes written, file headers included.
    pub bytes: u64,
    /// New files started by rotation (size or time).
    pub rotations: u64,
    /// Files opened: the first, rotations, and reopens after a failure or a removal.
    pub files_opened: u64,
}

impl SinkCounters {
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> {
        [
            ("written", self.written),
            ("dropped", self.dropped),
            ("errors", self.errors),
            ("bytes", self.bytes),
            ("rotations", self.rotations),
            ("files_opened", self.files_opened),
        ]
        .into_iter()
    }
}

/// Errors that stop a run before it starts; later failures are counted instead.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("cannot open {label} output {path}: {reason}")]
    Open {
        label: &'static str,
        path: PathBuf,
        reason: io::Error,
    },
    #[error("{label} output directory {path} cannot take rotated files: {reason}")]
    Directory {
        label: &'static str,
        path: PathBuf,
        reason: io::Error,
    },
    #[error("{label} output to stdout cannot be rotated: give it a file")]
    StdoutRotation { label: &'static str },
}

enum Handle {
    /// A duplicate of descriptor 1, written directly (no line buffering in between).
    Stdout(File),
    File(OpenOutput),
}

struct OpenOutput {
    file: File,
    path: PathBuf,
    /// Identity of the file, to notice when its path no longer names it.
    dev: u64,
    ino: u64,
    /// Bytes in the file that end on a unit boundary (where to cut back to after a short write).
    len: u64,
    /// Units in the file.
    units: u64,
    /// With time rotation: when this file's period ends (epoch ns).
    period_end: Option<u64>,
}

struct Down {
    retry_at: Instant,
    dropped_at_failure: u64,
}

/// One output destination: buffered whole units, rotation, failure and recovery.
pub struct OutputFile {
    label: &'static str,
    destination: Destination,
    rotation: Rotation,
    /// Written at the start of every file and after every reopen (pcapng: a section header).
    header: Vec<u8>,
    handle: Option<Handle>,
    buf: Vec<u8>,
    /// End offset in `buf` of each buffered chunk, and whether it is a unit (or a header).
    chunks: Vec<(usize, bool)>,
    /// Units among the chunks.
    buffered_units: u64,
    generation: u64,
    down: Option<Down>,
    last_identity_check: Instant,
    /// Units prepared since the clock was last read for the identity check.
    units_unchecked: u32,
    /// Under size rotation: the second and sequence number of the last file created.
    last_sequence: Option<(u64, u32)>,
    notices: Vec<String>,
    counters: SinkCounters,
}

impl OutputFile {
    /// Opens the destination: a plain file now, so that a path that cannot be written stops the
    /// run before it starts; rotated files when their first unit comes, after checking that
    /// their directory takes new files.
    pub fn new(
        label: &'static str,
        destination: Destination,
        rotation: Rotation,
        header: Vec<u8>,
    ) -> Result<Self, OutputError> {
        let mut output = Self {
            label,
            destination,
            rotation,
            header,
            handle: None,
            buf: Vec::with_capacity(BUFFER_BYTES),
            chunks: Vec::new(),
            buffered_units: 0,
            generation: 0,
            down: None,
            last_identity_check: Instant::now(),
            units_unchecked: 0,
            last_sequence: None,
            notices: Vec::new(),
            counters: SinkCounters::default(),
        };
        match &output.destination {
            Destination::Stdout if rotation.is_on() => {
                return Err(OutputError::StdoutRotation { label });
            }
            Destination::Stdout => output.open(None).map_err(|reason| OutputError::Open {
                label,
                path: PathBuf::from("stdout"),
                reason,
            })?,
            Destination::File(path) if rotation.is_on() => {
                let dir = parent_dir(path);
                check_writable_dir(&dir).map_err(|reason| OutputError::Directory {
                    label,
                    path: dir,
                    reason,
                })?;
            }
            Destination::File(path) => {
                let path = path.clone();
                output.open(None).map_err(|reason| OutputError::Open {
                    label,
                    path,
                    reason,
                })?;
            }
        }
        Ok(output)
    }

    pub fn counters(&self) -> SinkCounters {
        self.counters
    }

    pub fn label(&self) -> &'static str {
        self.label
    }

    pub fn destination(&self) -> &Destination {
        &self.destination
    }

    /// Whether the destination is taking units (false from a failure until it is written again).
    pub fn is_up(&self) -> bool {
        self.down.is_none()
    }

    /// Messages for the operator (a failure, a recovery); each is reported once.
    pub fn take_notices(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notices)
    }

    /// Makes room for a unit of about `len` bytes stamped `at_ns` (epoch ns; `None` for
    /// documents that have no time of their own, which never start a time period): rotates when
    /// the period is over or the file would grow past its limit, opens a file when none is
    /// open. Returns the generation of the file the unit will land in (it changes with every new
    /// file or section), or `None` when the destination cannot be written now: the caller drops
    /// the unit, which is counted here.
    pub fn prepare(&mut self, len: usize, at_ns: Option<u64>) -> Option<u64> {
        if let Some(down) = &self.down
            && Instant::now() < down.retry_at
        {
            self.counters.dropped += 1;
            return None;
        }
        self.check_identity(false);
        if let Some(Handle::File(file)) = &self.handle {
            let period_over =
                matches!((file.period_end, at_ns), (Some(end), Some(at)) if at >= end);
            let too_big = self.rotation.max_bytes.is_some_and(|max| {
                file.units + self.buffered_units > 0
                    && file.len + self.buf.len() as u64 + len as u64 > max
            });
            if period_over || too_big {
                self.close();
                self.counters.rotations += 1;
            }
        }
        if self.handle.is_none()
            && let Err(e) = self.open(at_ns)
        {
            self.fail("open", &e, 0);
        }
        if self.handle.is_none() {
            self.counters.dropped += 1;
            return None;
        }
        Some(self.generation)
    }

    /// Appends one unit after a successful [`Self::prepare`]; written out when the buffer fills
    /// or at the next flush.
    pub fn append(&mut self, unit: &[u8]) {
        self.buf.extend_from_slice(unit);
        self.chunks.push((self.buf.len(), true));
        self.buffered_units += 1;
        if self.buf.len() >= BUFFER_BYTES {
            self.flush();
        }
    }

    /// Counts a unit that could not even be made (its document failed to serialise).
    pub fn count_dropped(&mut self) {
        self.counters.dropped += 1;
    }

    /// [`Self::prepare`] and [`Self::append`] for a unit whose bytes do not depend on the file.
    pub fn write_unit(&mut self, unit: &[u8], at_ns: Option<u64>) -> bool {
        self.write_parts(unit, b"", at_ns)
    }

    /// [`Self::write_unit`] of `line` and a line end, copied once, into the buffer.
    pub fn write_line(&mut self, line: &[u8], at_ns: Option<u64>) -> bool {
        self.write_parts(line, b"\n", at_ns)
    }

    fn write_parts(&mut self, head: &[u8], tail: &[u8], at_ns: Option<u64>) -> bool {
        if self.prepare(head.len() + tail.len(), at_ns).is_none() {
            return false;
        }
        self.buf.extend_from_slice(head);
        self.append(tail);
        true
    }

    /// Writes out what is buffered. A short write keeps the whole units it wrote, cuts the file
    /// back to the end of the last of them, and drops the rest (counted).
    pub fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let result = match &mut self.handle {
            Some(Handle::Stdout(out)) => write_some(out, &self.buf),
            Some(Handle::File(file)) => write_some(&mut file.file, &self.buf),
            None => Err((0, io::Error::other("no file open"))),
        };
        let written_bytes = match &result {
            Ok(()) => self.buf.len(),
            Err((n, _)) => *n,
        };
        // Whole chunks only: a cut unit is taken back out of the file.
        let good = self
            .chunks
            .iter()
            .map(|(end, _)| *end)
            .take_while(|end| *end <= written_bytes)
            .last()
            .unwrap_or(0);
        let written_units = self
            .chunks
            .iter()
            .filter(|(end, unit)| *unit && *end <= good)
            .count() as u64;
        let lost_units =
            self.chunks.iter().filter(|(_, unit)| *unit).count() as u64 - written_units;
        if let Some(Handle::File(file)) = &mut self.handle {
            if good < written_bytes {
                // Best effort: if even this fails the file ends in a partial unit, which the
                // reader of a damaged disk has to expect anyway.
                let _ = file.file.set_len(file.len + good as u64);
            }
            file.len += good as u64;
            file.units += written_units;
        }
        self.counters.written += written_units;
        self.counters.dropped += lost_units;
        self.counters.bytes += good as u64;
        self.buf.clear();
        self.chunks.clear();
        self.buffered_units = 0;
        if let Err((_, e)) = result {
            self.fail("write", &e, lost_units);
        }
    }

    /// Periodic work: writes out the buffer, closes a file whose period is over (the next unit
    /// opens the next one, so an idle sensor leaves no empty files), notices a file moved or
    /// removed under it, and retries a failed plain file so that it shows as up again.
    pub fn tick(&mut self, now_ns: u64) {
        self.flush();
        if let Some(Handle::File(file)) = &self.handle
            && file.period_end.is_some_and(|end| now_ns >= end)
        {
            self.close();
            self.counters.rotations += 1;
        }
        self.check_identity(true);
        let retry_due = self
            .down
            .as_ref()
            .is_some_and(|d| Instant::now() >= d.retry_at);
        if retry_due
            && !self.rotation.is_on()
            && self.handle.is_none()
            && let Err(e) = self.open(None)
        {
            self.fail("open", &e, 0);
        }
    }

    /// Writes out and closes the file (the end of a run).
    pub fn finish(&mut self) {
        self.flush();
        self.handle = None;
    }

    fn close(&mut self) {
        self.flush();
        self.handle = None;
    }

    /// If the open file's path names another file now (moved by logrotate, removed, its
    /// directory removed), switches to a new one at the path: what is buffered still goes to the
    /// old file, so a file never mixes units of two generations.
    fn check_identity(&mut self, force: bool) {
        if !force {
            self.units_unchecked += 1;
            if self.units_unchecked < IDENTITY_CHECK_UNITS {
                return;
            }
            self.units_unchecked = 0;
            if self.last_identity_check.elapsed() < IDENTITY_CHECK {
                return;
            }
        }
        self.last_identity_check = Instant::now();
        let Some(Handle::File(file)) = &self.handle else {
            return;
        };
        let same = std::fs::metadata(&file.path)
            .map(|m| m.dev() == file.dev && m.ino() == file.ino)
            .unwrap_or(false);
        if same {
            return;
        }
        let path = file.path.clone();
        self.close();
        self.notices.push(format!(
            "{} output {}: the file was moved or removed; starting a new one at the path",
            self.label,
            path.display()
        ));
        if !self.rotation.is_on()
            && let Err(e) = self.open(None)
        {
            self.fail("open", &e, 0);
        }
    }

    fn open(&mut self, at_ns: Option<u64>) -> io::Result<()> {
        let handle = match &self.destination {
            Destination::Stdout => {
                use std::os::fd::AsFd as _;
                Handle::Stdout(File::from(io::stdout().as_fd().try_clone_to_owned()?))
            }
            Destination::File(path) => {
                let path = path.clone();
                Handle::File(self.open_file(&path, at_ns)?)
            }
        };
        self.handle = Some(handle);
        self.generation += 1;
        self.counters.files_opened += 1;
        if !self.header.is_empty() {
            self.buf.extend_from_slice(&self.header);
            self.chunks.push((self.buf.len(), false));
        }
        if let Some(down) = self.down.take() {
            self.notices.push(format!(
                "{} output {}: writable again; {} dropped while it was not",
                self.label,
                self.destination,
                self.counters.dropped - down.dropped_at_failure
            ));
        }
        Ok(())
    }

    /// Opens the file of a period (time rotation alone: a restart within the period appends to
    /// it), or creates the next file of a second (size rotation), never reusing one.
    fn create_rotated(&mut self, base: &Path, stamp: u64) -> io::Result<(File, PathBuf)> {
        if self.rotation.max_bytes.is_none() {
            let path = rotated_name(base, stamp, None);
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(FILE_MODE)
                .open(&path)?;
            return Ok((file, path));
        }
        let second = stamp / 1_000_000_000;
        let mut sequence = match self.last_sequence {
            Some((s, n)) if s == second => n.saturating_add(1),
            _ => 0,
        };
        loop {
            let path = rotated_name(base, stamp, Some(sequence));
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(FILE_MODE)
                .open(&path)
            {
                Ok(file) => {
                    self.last_sequence = Some((second, sequence));
                    return Ok((file, path));
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && sequence < u32::MAX => {
                    sequence += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn open_file(&mut self, base: &Path, at_ns: Option<u64>) -> io::Result<OpenOutput> {
        let (file, path, period_end) = if self.rotation.is_on() {
            let at = at_ns.unwrap_or_else(realtime_ns);
            let (stamp, period_end) = match self.rotation.interval {
                Some(interval) => {
                    let step = (interval.as_nanos() as u64).max(1);
                    let start = at - at % step;
                    (start, Some(start.saturating_add(step)))
                }
                None => (at, None),
            };
            let (file, path) = self.create_rotated(base, stamp)?;
            (file, path, period_end)
        } else {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(FILE_MODE)
                .open(base)?;
            (file, base.to_path_buf(), None)
        };
        let meta = file.metadata()?;
        Ok(OpenOutput {
            file,
            path,
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            units: 0,
            period_end,
        })
    }

    /// Marks the destination down; `lost_now` units were already counted as dropped by the
    /// failed operation.
    fn fail(&mut self, operation: &str, error: &io::Error, lost_now: u64) {
        self.counters.errors += 1;
        self.handle = None;
        // What was buffered for the lost file cannot go anywhere else (its pcapng records name
        // that file's interfaces).
        let lost = self.chunks.iter().filter(|(_, unit)| *unit).count() as u64;
        self.counters.dropped += lost;
        let lost = lost + lost_now;
        self.buf.clear();
        self.chunks.clear();
        self.buffered_units = 0;
        if self.down.is_none() {
            self.notices.push(format!(
                "{} output {}: {operation} failed: {error}; dropping (and counting) what it \
                 should get until it can be written again, retrying every second",
                self.label, self.destination
            ));
            self.down = Some(Down {
                retry_at: Instant::now() + RETRY,
                dropped_at_failure: self.counters.dropped - lost,
            });
        } else if let Some(down) = &mut self.down {
            down.retry_at = Instant::now() + RETRY;
        }
    }
}

impl Drop for OutputFile {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Writes all of `buf`, or says how much was written before the error.
fn write_some(out: &mut impl Write, buf: &[u8]) -> Result<(), (usize, io::Error)> {
    let mut done = 0;
    while done < buf.len() {
        match out.write(&buf[done..]) {
            Ok(0) => return Err((done, io::Error::from(io::ErrorKind::WriteZero))),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err((done, e)),
        }
    }
    Ok(())
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn check_writable_dir(dir: &Path) -> io::Result<()> {
    let meta = std::fs::metadata(dir)?;
    if !meta.is_dir() {
        return Err(io::Error::other("not a directory"));
    }
    let c = CString::new(dir.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The name of a rotated file: the base name with the UTC time of its start before the
/// extension (`events.ndjson` → `events-20261122T020000Z.ndjson`) and, under size rotation, a
/// sequence number within that second (`events-20261122T020000Z-0001.ndjson`), zero-padded so
/// that names sort in the order the files were written.
pub fn rotated_name(base: &Path, epoch_ns: u64, sequence: Option<u32>) -> PathBuf {
    let stem = base
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    let mut name = format!("{stem}-{}", compact_utc(epoch_ns));
    if let Some(sequence) = sequence {
        name.push_str(&format!("-{sequence:04}"));
    }
    if let Some(ext) = base.extension() {
        name.push('.');
        name.push_str(&ext.to_string_lossy());
    }
    base.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("sensor-output-{}-{n}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// An NDJSON output to the file at `path`, not rotated.
    fn ndjson_file(path: &Path) -> OutputFile {
        OutputFile::new(
            "ndjson",
            Destination::File(path.to_path_buf()),
            Rotation::default(),
            Vec::new(),
        )
        .unwrap()
    }

    fn files(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    }

    const HOUR: u64 = 3_600_000_000_000;
    /// 2026-11-22T02:00:00Z.
    const T0: u64 = 1_795_312_800_000_000_000;

    #[test]
    fn plain_file_is_0640_and_appended() {
        let dir = temp_dir("plain");
        let path = dir.join("events.ndjson");
        for line in ["a\n", "b\n"] {
            let mut out = ndjson_file(&path);
            assert!(out.write_unit(line.as_bytes(), Some(T0)));
            out.finish();
            assert_eq!(out.counters().written, 1);
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a\nb\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !0o640, 0, "mode {mode:o}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_moved_file_is_seen_by_the_writes_alone() {
        // As logrotate does, with no tick in between: the writes find the move themselves,
        // within IDENTITY_CHECK_UNITS units once IDENTITY_CHECK has passed.
        let dir = temp_dir("moved");
        let path = dir.join("events.ndjson");
        let mut out = ndjson_file(&path);
        assert!(out.write_line(b"before", None));
        out.flush();
        std::fs::rename(&path, dir.join("events.ndjson.1")).unwrap();
        std::thread::sleep(IDENTITY_CHECK + Duration::from_millis(50));
        for _ in 0..IDENTITY_CHECK_UNITS {
            assert!(out.write_line(b"after", None));
        }
        out.flush();
        let notices = out.take_notices();
        assert!(notices.iter().any(|n| n.contains("moved")), "{notices:?}");
        let moved = std::fs::read_to_string(dir.join("events.ndjson.1")).unwrap();
        let now = std::fs::read_to_string(&path).unwrap();
        // Every unit is in one file or the other, whole, and the later ones are in the new one.
        assert!(moved.starts_with("before\n"));
        assert_eq!(moved.lines().count() + now.lines().count(), 33);
        assert!(now.lines().count() > 0 && now.lines().all(|l| l == "after"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn size_rotation_keeps_units_whole_and_headers_first() {
        let dir = temp_dir("size");
        let base = dir.join("records.pcapng");
        let mut out = OutputFile::new(
            "pcapng",
            Destination::File(base.clone()),
            Rotation {
                max_bytes: Some(100),
                interval: None,
            },
            b"HEADER\n".to_vec(),
        )
        .unwrap();
        let mut generations = Vec::new();
        for i in 0..20u32 {
            let unit = format!("unit {i:02} ..........\n");
            generations.push(out.prepare(unit.len(), Some(T0 + u64::from(i))).unwrap());
            out.append(unit.as_bytes());
            out.flush();
        }
        out.finish();
        let files = files(&dir);
        assert!(files.len() > 3, "{files:?}");
        let mut seen = 0;
        for f in &files {
            let text = std::fs::read_to_string(f).unwrap();
            assert!(text.len() <= 100, "{f:?} is {} bytes", text.len());
            assert!(text.starts_with("HEADER\n"), "{text}");
            for line in text.lines().skip(1) {
                assert_eq!(line, format!("unit {seen:02} .........."));
                seen += 1;
            }
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            assert!(name.starts_with("records-20261122T020000Z-0"), "{name}");
            assert!(name.ends_with(".pcapng"), "{name}");
        }
        assert_eq!(seen, 20);
        let c = out.counters();
        assert_eq!((c.written, c.dropped), (20, 0));
        assert_eq!(c.rotations as usize, files.len() - 1);
        assert_eq!(c.files_opened as usize, files.len());
        assert!(generations.windows(2).all(|w| w[0] <= w[1]));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn time_rotation_follows_aligned_periods() {
        let dir = temp_dir("time");
        let base = dir.join("events.ndjson");
        let mut out = OutputFile::new(
            "ndjson",
            Destination::File(base),
            Rotation {
                max_bytes: None,
                interval: Some(Duration::from_secs(3600)),
            },
            Vec::new(),
        )
        .unwrap();
        // Two units in the first hour, one in the second; a document without time of its own
        // goes to the current file.
        assert!(out.write_unit(b"1\n", Some(T0 + 5)));
        assert!(out.write_unit(b"2\n", Some(T0 + HOUR - 1)));
        assert!(out.write_unit(b"3\n", Some(T0 + HOUR + 30)));
        assert!(out.write_unit(b"stats\n", None));
        // The tick closes the file once its hour is over; nothing more is written, so no empty
        // file appears for the idle third hour.
        out.tick(T0 + 3 * HOUR);
        out.finish();
        let files = files(&dir);
        let names: Vec<String> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "events-20261122T020000Z.ndjson",
                "events-20261122T030000Z.ndjson"
            ]
        );
        assert_eq!(std::fs::read_to_string(&files[0]).unwrap(), "1\n2\n");
        assert_eq!(std::fs::read_to_string(&files[1]).unwrap(), "3\nstats\n");
        assert_eq!(out.counters().rotations, 2);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn removed_directory_drops_counts_and_recovers() {
        let dir = temp_dir("gone");
        let sub = dir.join("out");
        std::fs::create_dir(&sub).unwrap();
        let path = sub.join("events.ndjson");
        let mut out = ndjson_file(&path);
        assert!(out.write_unit(b"before\n", None));
        out.flush();
        std::fs::remove_dir_all(&sub).unwrap();
        out.tick(realtime_ns());
        assert!(!out.is_up());
        let notices = out.take_notices();
        assert!(
            notices.iter().any(|n| n.contains("open failed")),
            "{notices:?}"
        );
        for _ in 0..5 {
            assert!(!out.write_unit(b"lost\n", None));
        }
        assert_eq!(out.counters().dropped, 5);
        std::fs::create_dir(&sub).unwrap();
        std::thread::sleep(RETRY + Duration::from_millis(50));
        assert!(out.write_unit(b"after\n", None));
        out.finish();
        assert!(out.is_up());
        assert!(
            out.take_notices()
                .iter()
                .any(|n| n.contains("writable again; 5 dropped")),
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "after\n");
        let c = out.counters();
        assert_eq!((c.written, c.dropped, c.errors), (2, 5, 1));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn short_write_cuts_back_to_a_unit_boundary() {
        // /dev/full fails every write with ENOSPC: nothing of the units may remain.
        let mut out = ndjson_file(Path::new("/dev/full"));
        for _ in 0..3 {
            assert!(out.write_unit(b"x\n", None));
        }
        out.flush();
        let c = out.counters();
        assert_eq!((c.written, c.dropped, c.errors), (0, 3, 1));
        assert!(!out.is_up());
        assert!(out.take_notices()[0].contains("No space left on device"));
    }

    #[test]
    fn rotated_names() {
        let base = Path::new("/var/lib/sensor/events.ndjson");
        assert_eq!(
            rotated_name(base, T0, None),
            Path::new("/var/lib/sensor/events-20261122T020000Z.ndjson")
        );
        assert_eq!(
            rotated_name(Path::new("dump"), T0, Some(2)),
            Path::new("dump-20261122T020000Z-0002")
        );
    }

    #[test]
    fn stdout_cannot_rotate_and_missing_directory_is_an_error() {
        let e = OutputFile::new(
            "ndjson",
            Destination::Stdout,
            Rotation {
                max_bytes: Some(1),
                interval: None,
            },
            Vec::new(),
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("stdout cannot be rotated"), "{e}");
        let e = OutputFile::new(
            "pcapng",
            Destination::File(PathBuf::from("/nonexistent-dir/x.pcapng")),
            Rotation {
                max_bytes: Some(1),
                interval: None,
            },
            Vec::new(),
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("/nonexistent-dir"), "{e}");
        let e = OutputFile::new(
            "pcapng",
            Destination::File(PathBuf::from("/nonexistent-dir/x.pcapng")),
            Rotation::default(),
            Vec::new(),
        )
        .err()
        .unwrap();
        assert!(
            e.to_string()
                .starts_with("cannot open pcapng output /nonexistent-dir/x.pcapng"),
            "{e}"
        );
    }
}
