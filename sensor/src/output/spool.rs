//! A bounded on-disk FIFO of Kafka records: where events wait while the broker is away.
//!
//! The spool is a directory of append-only segment files (`<20-digit id>.seg`), a `cursor` file
//! and a `lock` file. Each segment starts with an 8-byte magic and holds frames:
//!
//! ```text
//! u32 LE body length | u32 LE CRC-32 of body | body = i64 LE timestamp ms | u16 LE key length | key | payload
//! ```
//!
//! Reading is separate from acknowledging. [`Spool::next_record`] hands out records in order; each one
//! stays on disk, "outstanding", until [`Spool::resolve`] says it was delivered, failed for good,
//! or must be retried. The acknowledged watermark only moves over a contiguous prefix of resolved
//! records; segments wholly behind it are deleted, and the watermark is persisted in `cursor` by
//! [`Spool::checkpoint`] (atomically, by rename). A retry rewinds the read position to the first
//! record to retry once nothing is in flight any more (go-back-N); records delivered after it are
//! skipped on the second pass, not sent twice. After a crash, records between the persisted
//! watermark and what was really delivered are sent again: at least once, never lost.
//!
//! The size limit counts every byte of every segment on disk. An append that would pass it is
//! refused ([`Appended::Full`]): the caller sheds the record and counts it (tail drop: what is
//! already spooled is kept).

use std::{
    collections::BTreeMap,
    fs::{self, File, OpenOptions},
    io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write},
    os::{fd::AsRawFd, unix::fs::OpenOptionsExt as _},
    path::{Path, PathBuf},
};

const MAGIC: &[u8; 8] = b"SIPSPL01";
const HEADER_LEN: u64 = MAGIC.len() as u64;
/// Length and CRC before each body.
const FRAME_OVERHEAD: u64 = 8;
/// Timestamp and key length at the start of each body.
const BODY_FIXED: usize = 10;
/// A frame body larger than this is corruption, not data (events are a few KiB).
const MAX_BODY: u32 = 64 << 20;
const CURSOR: &str = "cursor";
const LOCK: &str = "lock";

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "spool {0} is in use by another process (one spool directory per sensor: set [kafka.spool] dir)"
    )]
    Locked(PathBuf),
    #[error("spool size limit {max_bytes} bytes is below the minimum of {min} bytes")]
    TooSmall { max_bytes: u64, min: u64 },
    #[error("spool record key of {0} bytes is longer than 65535")]
    KeyTooLong(usize),
}

/// One Kafka record as the spool keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpoolRecord {
    /// Kafka record timestamp, milliseconds since the epoch.
    pub timestamp_ms: i64,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
}

impl SpoolRecord {
    fn frame_len(&self) -> u64 {
        FRAME_OVERHEAD + (BODY_FIXED + self.key.len() + self.payload.len()) as u64
    }
}

/// Where a record starts: segment id and byte offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    pub segment: u64,
    pub offset: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Appended {
    Stored,
    /// The size limit would be passed: the record was not stored.
    Full,
}

/// What became of a record handed out by [`Spool::next_record`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// Will never be delivered (e.g. the broker rejects it as too large): dropped from the spool.
    Failed,
    /// Send it again later, in order.
    Retry,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    InFlight,
    Retry,
    Done,
}

#[derive(Debug)]
struct Outstanding {
    end: Pos,
    state: State,
}

/// What opening found on disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Records left by an earlier run, to be sent now (a record that fails its CRC is among them
    /// and is counted as corrupt when read).
    pub records: u64,
    /// Segments cut short at a torn tail or an unreadable frame (a crash during an append, or
    /// damage): whatever followed the cut is gone and cannot be counted in records.
    pub truncated: u64,
}

pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    _lock: File,
    /// Segment id to its size in bytes (header included), for every segment on disk.
    segments: BTreeMap<u64, u64>,
    /// The segment being appended to: id and writer. Its size is in `segments`.
    writer: Option<(u64, BufWriter<File>)>,
    writer_dirty: bool,
    /// Next record to hand out.
    read: Pos,
    reader: Option<(u64, BufReader<File>, u64)>,
    /// Every record before this is resolved.
    acked: Pos,
    persisted: Option<Pos>,
    /// Records handed out and not yet behind the watermark, by start position.
    outstanding: BTreeMap<Pos, Outstanding>,
    in_flight: u64,
    retries: u64,
    /// Records on disk not yet resolved.
    pending: u64,
    total_bytes: u64,
    /// Records discarded because they failed their checks while reading.
    corrupt: u64,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn segment_name(id: u64) -> String {
    format!("{id:020}.seg")
}

/// Reads one frame at the reader's position. `Ok(None)`: end of data (or a torn tail).
/// `Err(Corrupt)`: a complete frame that fails its CRC, with its length so it can be skipped.
enum FrameRead {
    Record(SpoolRecord, u64),
    End,
    /// A frame that fails its checks; `Some(len)` if it can be skipped.
    Corrupt(Option<u64>),
}

fn read_frame(r: &mut impl Read, available: u64) -> io::Result<FrameRead> {
    if available < FRAME_OVERHEAD {
        return Ok(FrameRead::End);
    }
    let mut head = [0u8; 8];
    r.read_exact(&mut head)?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if len > MAX_BODY || (len as usize) < BODY_FIXED {
        return Ok(FrameRead::Corrupt(None));
    }
    let frame_len = FRAME_OVERHEAD + u64::from(len);
    if frame_len > available {
        return Ok(FrameRead::End);
    }
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body)?;
    if crc32fast::hash(&body) != crc {
        return Ok(FrameRead::Corrupt(Some(frame_len)));
    }
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&body[..8]);
    let key_len = usize::from(u16::from_le_bytes([body[8], body[9]]));
    if BODY_FIXED + key_len > body.len() {
        return Ok(FrameRead::Corrupt(Some(frame_len)));
    }
    let payload = body.split_off(BODY_FIXED + key_len);
    let key = body[BODY_FIXED..].to_vec();
    Ok(FrameRead::Record(
        SpoolRecord {
            timestamp_ms: i64::from_le_bytes(ts),
            key,
            payload,
        },
        frame_len,
    ))
}

impl Spool {
    /// The smallest size limit accepted: room for a few segments of large events.
    pub const MIN_BYTES: u64 = 64 * 1024;

    /// Opens (creating if needed) the spool in `dir`, takes its lock, checks every frame on disk
    /// from the persisted watermark on, and truncates a torn tail left by a crash.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<(Self, Recovered), SpoolError> {
        if max_bytes < Self::MIN_BYTES {
            return Err(SpoolError::TooSmall {
                max_bytes,
                min: Self::MIN_BYTES,
            });
        }
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let lock_path = dir.join(LOCK);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        // SAFETY: flock(2) on a descriptor we own.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(SpoolError::Locked(dir.to_path_buf()));
        }
        let mut segments = BTreeMap::new();
        for entry in fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            let name = entry.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let len = entry.metadata().map_err(io_err(&entry.path()))?.len();
            segments.insert(id, len);
        }
        let cursor = read_cursor(&dir.join(CURSOR));
        let first = segments.keys().next().copied().unwrap_or(0);
        let start = match cursor {
            Some(c) if segments.contains_key(&c.segment) => c,
            _ => Pos {
                segment: first,
                offset: HEADER_LEN,
            },
        };
        let mut spool = Self {
            dir: dir.to_path_buf(),
            max_bytes,
            segment_bytes: (max_bytes / 16).clamp(Self::MIN_BYTES / 4, 64 << 20),
            _lock: lock,
            segments: BTreeMap::new(),
            writer: None,
            writer_dirty: false,
            read: start,
            reader: None,
            acked: start,
            persisted: cursor,
            outstanding: BTreeMap::new(),
            in_flight: 0,
            retries: 0,
            pending: 0,
            total_bytes: 0,
            corrupt: 0,
        };
        let mut recovered = Recovered::default();
        for (id, len) in segments {
            let path = dir.join(segment_name(id));
            if id < start.segment {
                // Wholly behind the watermark: a deletion interrupted by a crash.
                fs::remove_file(&path).map_err(io_err(&path))?;
                continue;
            }
            let from = if id == start.segment {
                start.offset
            } else {
                HEADER_LEN
            };
            let (records, valid_end, cuts) = scan_segment(&path, from, len)?;
            // A watermark past the data (the tail was lost with the machine): nothing to read.
            let valid_end = valid_end.min(len);
            recovered.records += records;
            recovered.truncated += cuts;
            if valid_end < len {
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_err(&path))?;
                f.set_len(valid_end).map_err(io_err(&path))?;
            }
            spool.segments.insert(id, valid_end);
            spool.total_bytes += valid_end;
        }
        spool.pending = recovered.records;
        if spool.segments.is_empty() {
            spool.reset_positions();
        }
        Ok((spool, recovered))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Records on disk not yet delivered (including those in flight from the spool).
    pub fn pending(&self) -> u64 {
        self.pending
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.total_bytes
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Records handed out by [`Self::next_record`] whose outcome is not known yet.
    pub fn in_flight(&self) -> u64 {
        self.in_flight
    }

    /// Records discarded while reading because they failed their checks.
    pub fn corrupt(&self) -> u64 {
        self.corrupt
    }

    /// Appends a record at the tail, or refuses it if the size limit would be passed.
    pub fn append(&mut self, record: &SpoolRecord) -> Result<Appended, SpoolError> {
        if record.key.len() > usize::from(u16::MAX) {
            return Err(SpoolError::KeyTooLong(record.key.len()));
        }
        let frame_len = record.frame_len();
        let rotate = match &self.writer {
            None => true,
            Some((id, _)) => {
                let size = self.segments.get(id).copied().unwrap_or(0);
                size + frame_len > self.segment_bytes && size > HEADER_LEN
            }
        };
        let new_segment_cost = if rotate { HEADER_LEN } else { 0 };
        if self.total_bytes + new_segment_cost + frame_len > self.max_bytes {
            return Ok(Appended::Full);
        }
        if rotate {
            self.rotate()?;
        }
        let Some((id, writer)) = self.writer.as_mut() else {
            return Ok(Appended::Full);
        };
        let body_len = (BODY_FIXED + record.key.len() + record.payload.len()) as u32;
        let mut hasher = crc32fast::Hasher::new();
        let ts = record.timestamp_ms.to_le_bytes();
        let key_len = (record.key.len() as u16).to_le_bytes();
        hasher.update(&ts);
        hasher.update(&key_len);
        hasher.update(&record.key);
        hasher.update(&record.payload);
        let path = self.dir.join(segment_name(*id));
        (|| -> io::Result<()> {
            writer.write_all(&body_len.to_le_bytes())?;
            writer.write_all(&hasher.finalize().to_le_bytes())?;
            writer.write_all(&ts)?;
            writer.write_all(&key_len)?;
            writer.write_all(&record.key)?;
            writer.write_all(&record.payload)
        })()
        .map_err(io_err(&path))?;
        *self.segments.entry(*id).or_insert(HEADER_LEN) += frame_len;
        self.total_bytes += frame_len;
        self.pending += 1;
        self.writer_dirty = true;
        Ok(Appended::Stored)
    }

    fn rotate(&mut self) -> Result<(), SpoolError> {
        self.sync_writer()?;
        let id = self
            .segments
            .keys()
            .next_back()
            .map(|last| last + 1)
            .unwrap_or(self.read.segment);
        let path = self.dir.join(segment_name(id));
        let file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o640)
            .open(&path)
            .map_err(io_err(&path))?;
        let mut writer = BufWriter::with_capacity(256 * 1024, file);
        writer.write_all(MAGIC).map_err(io_err(&path))?;
        self.segments.insert(id, HEADER_LEN);
        self.total_bytes += HEADER_LEN;
        if self.segments.len() == 1 {
            self.read = Pos {
                segment: id,
                offset: HEADER_LEN,
            };
            self.acked = self.read;
        }
        self.writer = Some((id, writer));
        self.writer_dirty = true;
        Ok(())
    }

    /// Hands appended bytes to the kernel (no fsync: the spool survives a crash of the sensor,
    /// not of the machine, except at [`Self::close`] and rotation).
    pub fn flush(&mut self) -> Result<(), SpoolError> {
        if !self.writer_dirty {
            return Ok(());
        }
        if let Some((id, w)) = self.writer.as_mut() {
            w.flush()
                .map_err(io_err(&self.dir.join(segment_name(*id))))?;
        }
        self.writer_dirty = false;
        Ok(())
    }

    fn sync_writer(&mut self) -> Result<(), SpoolError> {
        self.flush()?;
        if let Some((id, w)) = self.writer.as_mut() {
            w.get_ref()
                .sync_data()
                .map_err(io_err(&self.dir.join(segment_name(*id))))?;
        }
        Ok(())
    }

    /// Next record to send, in order, or None if there is none now: the spool is empty, every
    /// record is in flight, or a retry waits for the records in flight to settle.
    pub fn next_record(&mut self) -> Result<Option<(Pos, SpoolRecord)>, SpoolError> {
        if self.retries > 0 {
            if self.in_flight > 0 {
                return Ok(None);
            }
            self.rewind();
        }
        loop {
            if self.read < self.acked {
                // Everything behind the watermark is resolved (delivered after a rewind).
                self.read = self.acked;
            }
            let Some(&size) = self.segments.get(&self.read.segment) else {
                return Ok(None);
            };
            let is_tail = self
                .writer
                .as_ref()
                .is_some_and(|(id, _)| *id == self.read.segment)
                || self.segments.keys().next_back() == Some(&self.read.segment);
            if self.read.offset >= size {
                if is_tail {
                    return Ok(None);
                }
                let Some(next) = self
                    .segments
                    .range(self.read.segment + 1..)
                    .next()
                    .map(|(id, _)| *id)
                else {
                    return Ok(None);
                };
                self.read = Pos {
                    segment: next,
                    offset: HEADER_LEN,
                };
                self.advance_watermark()?;
                continue;
            }
            if is_tail {
                self.flush()?;
            }
            let pos = self.read;
            if let Some(o) = self.outstanding.get(&pos) {
                // Delivered on an earlier pass, before a retry rewound past it.
                self.read = o.end;
                continue;
            }
            let path = self.dir.join(segment_name(pos.segment));
            let reader = self.reader_at(pos).map_err(io_err(&path))?;
            let frame = read_frame(reader, size - pos.offset).map_err(io_err(&path))?;
            match frame {
                FrameRead::Record(record, len) => {
                    let end = Pos {
                        segment: pos.segment,
                        offset: pos.offset + len,
                    };
                    if let Some((_, _, at)) = self.reader.as_mut() {
                        *at = end.offset;
                    }
                    self.read = end;
                    self.outstanding.insert(
                        pos,
                        Outstanding {
                            end,
                            state: State::InFlight,
                        },
                    );
                    self.in_flight += 1;
                    return Ok(Some((pos, record)));
                }
                FrameRead::End => {
                    // Nothing complete here: only a torn tail can do this, and open() cut those.
                    self.reader = None;
                    return Ok(None);
                }
                FrameRead::Corrupt(skip) => {
                    self.reader = None;
                    self.corrupt += 1;
                    self.pending = self.pending.saturating_sub(1);
                    let end = match skip {
                        Some(len) => Pos {
                            segment: pos.segment,
                            offset: pos.offset + len,
                        },
                        // Unknown length: the rest of this segment is lost.
                        None => Pos {
                            segment: pos.segment,
                            offset: size,
                        },
                    };
                    self.outstanding.insert(
                        pos,
                        Outstanding {
                            end,
                            state: State::Done,
                        },
                    );
                    self.read = end;
                    self.advance_watermark()?;
                }
            }
        }
    }

    fn reader_at(&mut self, pos: Pos) -> io::Result<&mut BufReader<File>> {
        let reusable =
            matches!(&self.reader, Some((id, _, at)) if *id == pos.segment && *at == pos.offset);
        if !reusable {
            let mut file = File::open(self.dir.join(segment_name(pos.segment)))?;
            file.seek(SeekFrom::Start(pos.offset))?;
            self.reader = Some((
                pos.segment,
                BufReader::with_capacity(256 * 1024, file),
                pos.offset,
            ));
        }
        match self.reader.as_mut() {
            Some((_, r, _)) => Ok(r),
            None => Err(io::Error::other("spool reader missing")),
        }
    }

    /// Records the outcome of a record handed out by [`Self::next_record`].
    pub fn resolve(&mut self, pos: Pos, outcome: Outcome) -> Result<(), SpoolError> {
        let Some(o) = self.outstanding.get_mut(&pos) else {
            return Ok(());
        };
        if o.state != State::InFlight {
            return Ok(());
        }
        self.in_flight -= 1;
        match outcome {
            Outcome::Delivered | Outcome::Failed => {
                o.state = State::Done;
                self.pending = self.pending.saturating_sub(1);
                self.advance_watermark()
            }
            Outcome::Retry => {
                o.state = State::Retry;
                self.retries += 1;
                Ok(())
            }
        }
    }

    /// Once nothing is in flight: read again from the first record to retry.
    fn rewind(&mut self) {
        let first = self
            .outstanding
            .iter()
            .find(|(_, o)| o.state == State::Retry)
            .map(|(p, _)| *p);
        self.outstanding.retain(|_, o| o.state != State::Retry);
        self.retries = 0;
        if let Some(first) = first {
            self.read = first;
            self.reader = None;
        }
    }

    /// Moves the watermark over resolved records and deletes segments wholly behind it.
    /// Records of the next segment may be resolved before the last ones of this segment (they
    /// go to other partitions), so popping and moving to the next segment alternate until
    /// neither makes progress.
    fn advance_watermark(&mut self) -> Result<(), SpoolError> {
        loop {
            let mut moved = false;
            while let Some(entry) = self.outstanding.first_entry() {
                if entry.key() != &self.acked || entry.get().state != State::Done {
                    break;
                }
                self.acked = entry.remove().end;
                moved = true;
            }
            // A watermark at the end of a sealed segment moves to the next one.
            let size = self.segments.get(&self.acked.segment).copied();
            let is_writer = self
                .writer
                .as_ref()
                .is_some_and(|(id, _)| *id == self.acked.segment);
            if let Some(size) = size
                && self.acked.offset >= size
                && !is_writer
                && let Some(next) = self
                    .segments
                    .range(self.acked.segment + 1..)
                    .next()
                    .map(|(id, _)| *id)
            {
                let old = self.acked.segment;
                self.acked = Pos {
                    segment: next,
                    offset: HEADER_LEN,
                };
                self.delete_segment(old)?;
                moved = true;
            }
            if !moved {
                break;
            }
        }
        if self.pending == 0 && self.in_flight == 0 && self.outstanding.is_empty() {
            self.clear()?;
        }
        Ok(())
    }

    fn delete_segment(&mut self, id: u64) -> Result<(), SpoolError> {
        if let Some(size) = self.segments.remove(&id) {
            self.total_bytes = self.total_bytes.saturating_sub(size);
        }
        if self.reader.as_ref().is_some_and(|(r, _, _)| *r == id) {
            self.reader = None;
        }
        if self.writer.as_ref().is_some_and(|(w, _)| *w == id) {
            self.writer = None;
        }
        let path = self.dir.join(segment_name(id));
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(&path)(e)),
            _ => Ok(()),
        }
    }

    /// Everything delivered: remove every segment and start afresh.
    fn clear(&mut self) -> Result<(), SpoolError> {
        let ids: Vec<u64> = self.segments.keys().copied().collect();
        let next = ids.last().map(|l| l + 1).unwrap_or(self.read.segment);
        for id in ids {
            self.delete_segment(id)?;
        }
        self.writer = None;
        self.writer_dirty = false;
        self.read = Pos {
            segment: next,
            offset: HEADER_LEN,
        };
        self.acked = self.read;
        self.total_bytes = 0;
        Ok(())
    }

    fn reset_positions(&mut self) {
        let next = self
            .read
            .segment
            .max(self.persisted.map_or(0, |p| p.segment));
        self.read = Pos {
            segment: next,
            offset: HEADER_LEN,
        };
        self.acked = self.read;
    }

    /// Persists the watermark if it moved, so that a restart does not send delivered records
    /// again.
    pub fn checkpoint(&mut self) -> Result<(), SpoolError> {
        if self.persisted == Some(self.acked) {
            return Ok(());
        }
        let tmp = self.dir.join("cursor.tmp");
        let path = self.dir.join(CURSOR);
        fs::write(
            &tmp,
            format!("{} {}\n", self.acked.segment, self.acked.offset),
        )
        .map_err(io_err(&tmp))?;
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        self.persisted = Some(self.acked);
        Ok(())
    }

    /// Flushes and syncs the tail and persists the watermark. Records still in flight count as
    /// not delivered: they are sent again by the next run.
    pub fn close(mut self) -> Result<(), SpoolError> {
        self.sync_writer()?;
        self.checkpoint()
    }
}

fn read_cursor(path: &Path) -> Option<Pos> {
    let text = fs::read_to_string(path).ok()?;
    let mut parts = text.split_whitespace();
    let segment = parts.next()?.parse().ok()?;
    let offset = parts.next()?.parse().ok()?;
    Some(Pos { segment, offset })
}

/// Counts the records of a segment from `from`; returns (records, end of the data kept, cuts).
/// A frame that fails its CRC but has a plausible length is kept and counted as a record: it is
/// discarded (and counted as corrupt) when read. A bad header, an implausible length or a torn
/// tail ends the data kept: the segment is cut there, and the cut is counted.
fn scan_segment(path: &Path, from: u64, len: u64) -> Result<(u64, u64, u64), SpoolError> {
    let mut file = File::open(path).map_err(io_err(path))?;
    let mut magic = [0u8; 8];
    if len < HEADER_LEN || file.read_exact(&mut magic).is_err() || &magic != MAGIC {
        // Not a segment we wrote (or torn before its header): keep nothing of it.
        return Ok((0, 0, 1));
    }
    let from = from.max(HEADER_LEN);
    file.seek(SeekFrom::Start(from)).map_err(io_err(path))?;
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    let (mut records, mut at) = (0u64, from);
    loop {
        match read_frame(&mut reader, len.saturating_sub(at)).map_err(io_err(path))? {
            FrameRead::Record(_, frame_len) | FrameRead::Corrupt(Some(frame_len)) => {
                records += 1;
                at += frame_len;
            }
            FrameRead::End => return Ok((records, at, u64::from(at < len))),
            FrameRead::Corrupt(None) => return Ok((records, at, 1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("spool-unit-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn rec(i: u32) -> SpoolRecord {
        SpoolRecord {
            timestamp_ms: i64::from(i),
            key: format!("198.51.100.{}", i % 7).into_bytes(),
            payload: format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(200)).into_bytes(),
        }
    }

    fn drain(spool: &mut Spool) -> Vec<SpoolRecord> {
        let mut out = Vec::new();
        while let Some((pos, r)) = spool.next_record().unwrap() {
            spool.resolve(pos, Outcome::Delivered).unwrap();
            out.push(r);
        }
        out
    }

    #[test]
    fn fifo_across_segments_and_cleans_up() {
        let d = dir("fifo");
        let (mut s, rec0) = Spool::open(&d, Spool::MIN_BYTES * 4).unwrap();
        assert_eq!(rec0, Recovered::default());
        for i in 0..500 {
            assert_eq!(s.append(&rec(i)).unwrap(), Appended::Stored);
        }
        assert!(s.segments.len() > 2, "rotated: {}", s.segments.len());
        assert_eq!(s.pending(), 500);
        let got = drain(&mut s);
        assert_eq!(got, (0..500).map(rec).collect::<Vec<_>>());
        assert_eq!(s.pending(), 0);
        assert_eq!(s.bytes(), 0);
        // Appending after a full drain works again.
        s.append(&rec(9)).unwrap();
        assert_eq!(drain(&mut s), vec![rec(9)]);
        s.close().unwrap();
        let left: Vec<_> = fs::read_dir(&d)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
            .collect();
        assert!(left.is_empty(), "segments left: {left:?}");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn out_of_order_deliveries_across_segments_clean_up() {
        let d = dir("ooo");
        let (mut s, _) = Spool::open(&d, Spool::MIN_BYTES * 4).unwrap();
        for i in 0..300 {
            s.append(&rec(i)).unwrap();
        }
        assert!(s.segments.len() > 2);
        let mut handed = Vec::new();
        while let Some((pos, _)) = s.next_record().unwrap() {
            handed.push(pos);
        }
        assert_eq!(handed.len(), 300);
        // Deliveries come back in reverse: every segment boundary is crossed out of order.
        for pos in handed.iter().rev() {
            s.resolve(*pos, Outcome::Delivered).unwrap();
        }
        assert_eq!(s.pending(), 0);
        assert_eq!(s.bytes(), 0, "every segment deleted");
        assert!(s.outstanding.is_empty());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn limit_sheds_and_keeps_the_oldest() {
        let d = dir("full");
        let (mut s, _) = Spool::open(&d, Spool::MIN_BYTES).unwrap();
        let mut stored = 0;
        let mut full = 0;
        for i in 0..1000 {
            match s.append(&rec(i)).unwrap() {
                Appended::Stored => stored += 1,
                Appended::Full => full += 1,
            }
        }
        assert!(stored > 100 && full > 0, "stored {stored} full {full}");
        assert!(s.bytes() <= Spool::MIN_BYTES);
        let got = drain(&mut s);
        assert_eq!(got, (0..stored).map(rec).collect::<Vec<_>>());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn retry_rewinds_in_order_without_resending_delivered() {
        let d = dir("retry");
        let (mut s, _) = Spool::open(&d, Spool::MIN_BYTES * 4).unwrap();
        for i in 0..10 {
            s.append(&rec(i)).unwrap();
        }
        let mut handed = Vec::new();
        for _ in 0..5 {
            handed.push(s.next_record().unwrap().unwrap());
        }
        // 0 and 1 delivered, 2 must retry, 3 delivered, 4 still in flight.
        s.resolve(handed[0].0, Outcome::Delivered).unwrap();
        s.resolve(handed[1].0, Outcome::Delivered).unwrap();
        s.resolve(handed[2].0, Outcome::Retry).unwrap();
        s.resolve(handed[3].0, Outcome::Delivered).unwrap();
        assert!(
            s.next_record().unwrap().is_none(),
            "waits for the in-flight record"
        );
        s.resolve(handed[4].0, Outcome::Retry).unwrap();
        let rest = drain(&mut s);
        let expect: Vec<_> = [2, 4, 5, 6, 7, 8, 9].into_iter().map(rec).collect();
        assert_eq!(rest, expect);
        assert_eq!(s.pending(), 0);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn reopen_resumes_after_the_watermark_and_cuts_a_torn_tail() {
        let d = dir("reopen");
        {
            let (mut s, _) = Spool::open(&d, Spool::MIN_BYTES * 4).unwrap();
            for i in 0..20 {
                s.append(&rec(i)).unwrap();
            }
            for _ in 0..5 {
                let (pos, _) = s.next_record().unwrap().unwrap();
                s.resolve(pos, Outcome::Delivered).unwrap();
            }
            // In flight at close: sent again by the next run.
            let _ = s.next_record().unwrap().unwrap();
            s.close().unwrap();
        }
        // A crash in the middle of an append leaves half a frame.
        let last = fs::read_dir(&d)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .max()
            .unwrap();
        let mut f = OpenOptions::new().append(true).open(&last).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2, 3]).unwrap();
        drop(f);
        {
            // The lock is exclusive while open.
            let (s, recovered) = Spool::open(&d, Spool::MIN_BYTES * 4).unwrap();
            assert!(matches!(
                Spool::open(&d, Spool::MIN_BYTES * 4),
                Err(SpoolError::Locked(_))
            ));
            assert_eq!(
                recovered,
                Recovered {
                    records: 15,
                    truncated: 1
                }
            );
            drop(s);
        }
        let (mut s, _) = Spool::open(&d, Spool::MIN_BYTES * 4).unwrap();
        assert_eq!(drain(&mut s), (5..20).map(rec).collect::<Vec<_>>());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn corrupt_frame_is_skipped_and_counted() {
        let d = dir("corrupt");
        let (mut s, _) = Spool::open(&d, Spool::MIN_BYTES * 4).unwrap();
        for i in 0..3 {
            s.append(&rec(i)).unwrap();
        }
        s.flush().unwrap();
        // Flip a payload byte of the second record.
        let path = d.join(segment_name(s.read.segment));
        let mut bytes = fs::read(&path).unwrap();
        let second = HEADER_LEN as usize + rec(0).frame_len() as usize;
        bytes[second + 30] ^= 0xff;
        fs::write(&path, bytes).unwrap();
        let got = drain(&mut s);
        assert_eq!(got, vec![rec(0), rec(2)]);
        assert_eq!(s.corrupt(), 1);
        assert_eq!(s.pending(), 0);
        fs::remove_dir_all(&d).unwrap();
    }
}
