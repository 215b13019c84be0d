//! One JSON object per line, to stdout or a file.
//!
//! An output can fail under a running agent: the disk fills, the directory is removed, its
//! permissions change. The writer never stops the agent for that and never loses a line silently:
//!
//! - lines are queued and written once per batch ([`NdjsonWriter::flush`]), which reports how many
//!   reached the output and how many were lost;
//! - a line is only ever written whole: when a write stops half way (a full disk), the file is cut
//!   back to the end of the last whole line;
//! - before each batch the writer checks that its path still names the file it has open, and
//!   reopens (creates) it if not: a removed or replaced file or directory is noticed instead of
//!   writing into an unlinked inode;
//! - while the output cannot be written, lines are dropped and counted, one error is printed on
//!   stderr for the whole outage, and opening the output again is retried every second; when a
//!   write succeeds again, one line says so with the number of lines lost.

use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde::Serialize;

/// Mode of files the writer creates: events carry attacker data and addresses that not every
/// local user should read. Set explicitly, whatever the umask.
pub const OUTPUT_MODE: u32 = 0o640;
/// How often a failed output is tried again.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// Queued bytes that trigger a write before the caller's flush (offline analysis queues a whole
/// file between flushes).
const QUEUE_BYTES: usize = 256 * 1024;

/// What one [`NdjsonWriter::flush`] did with the queued lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flushed {
    /// Event lines ([`NdjsonWriter::write_event`]) that reached the output.
    pub events_written: u64,
    /// Lines of any kind that were lost.
    pub lines_lost: u64,
}

enum Sink {
    Stdout(io::Stdout),
    File {
        path: PathBuf,
        /// `None` while the output cannot be opened.
        file: Option<File>,
        /// Device and inode of the open file, to notice when the path names another (or none).
        identity: (u64, u64),
    },
    /// Any writer (tests).
    Other(Box<dyn Write + Send>),
}

/// An outage: from the first failed write to the next successful one.
struct Outage {
    lost: u64,
    last_attempt: Instant,
}

pub struct NdjsonWriter {
    sink: Sink,
    /// Whole lines waiting for the next flush.
    pending: Vec<u8>,
    /// End offset in `pending` of each queued line, and whether it is an event.
    lines: Vec<(usize, bool)>,
    outage: Option<Outage>,
    /// What writes triggered by a full queue did, reported by the next flush.
    carried: Flushed,
}

impl NdjsonWriter {
    pub fn stdout() -> Self {
        Self::with_sink(Sink::Stdout(io::stdout()))
    }

    /// Creates (or appends to) `path`; a file it creates gets mode [`OUTPUT_MODE`]. An error here
    /// is a configuration error: the agent has not started.
    pub fn create(path: &Path) -> io::Result<Self> {
        let (file, identity) = open_output(path)?;
        Ok(Self::with_sink(Sink::File {
            path: path.to_path_buf(),
            file: Some(file),
            identity,
        }))
    }

    pub fn new(out: Box<dyn Write + Send>) -> Self {
        Self::with_sink(Sink::Other(out))
    }

    fn with_sink(sink: Sink) -> Self {
        Self {
            sink,
            pending: Vec::with_capacity(256 * 1024),
            lines: Vec::new(),
            outage: None,
            carried: Flushed::default(),
        }
    }

    /// Queues a document that is not an event (stats, findings).
    pub fn write<T: Serialize>(&mut self, doc: &T) -> io::Result<()> {
        self.queue(doc, false)
    }

    /// Queues an event; [`Flushed::events_written`] counts it once it is written.
    pub fn write_event<T: Serialize>(&mut self, doc: &T) -> io::Result<()> {
        self.queue(doc, true)
    }

    /// Queues an event already serialised (one JSON document, no newline inside), as the
    /// pipeline does when the same bytes also go to Kafka.
    pub fn write_event_raw(&mut self, json: &[u8]) {
        self.pending.extend_from_slice(json);
        self.pending.push(b'\n');
        self.lines.push((self.pending.len(), true));
        self.write_if_full();
    }

    fn queue<T: Serialize>(&mut self, doc: &T, event: bool) -> io::Result<()> {
        let start = self.pending.len();
        if let Err(e) = serde_json::to_writer(&mut self.pending, doc) {
            self.pending.truncate(start);
            return Err(io::Error::other(e));
        }
        self.pending.push(b'\n');
        self.lines.push((self.pending.len(), event));
        self.write_if_full();
        Ok(())
    }

    fn write_if_full(&mut self) {
        if self.pending.len() >= QUEUE_BYTES {
            let flushed = self.write_queue();
            self.carried.events_written += flushed.events_written;
            self.carried.lines_lost += flushed.lines_lost;
        }
    }

    /// Writes the queued lines. Never fails: what could not be written is counted in the result
    /// (and reported on stderr once per outage).
    pub fn flush(&mut self) -> Flushed {
        let mut flushed = std::mem::take(&mut self.carried);
        let now = self.write_queue();
        flushed.events_written += now.events_written;
        flushed.lines_lost += now.lines_lost;
        flushed
    }

    fn write_queue(&mut self) -> Flushed {
        if self.lines.is_empty() {
            return Flushed::default();
        }
        let result = match self.ready() {
            Ok(()) => self.write_pending(),
            Err(e) => Err((0, e)),
        };
        let mut flushed = Flushed::default();
        let complete = match &result {
            Ok(()) => self.lines.len(),
            Err((written, _)) => self
                .lines
                .iter()
                .take_while(|(end, _)| end <= written)
                .count(),
        };
        for (i, (_, event)) in self.lines.iter().enumerate() {
            if i < complete {
                flushed.events_written += u64::from(*event);
            } else {
                flushed.lines_lost += 1;
            }
        }
        match result {
            Ok(()) => {
                if let Some(outage) = self.outage.take() {
                    eprintln!(
                        "sensor: output {}: writing again; {} lines were lost while it could not \
                         be written (counted in output_errors)",
                        self.name(),
                        outage.lost
                    );
                }
            }
            Err((written, e)) => {
                let complete_bytes = complete.checked_sub(1).map_or(0, |i| self.lines[i].0);
                self.cut_partial_line(written - complete_bytes);
                self.fail(&e, flushed.lines_lost);
            }
        }
        self.pending.clear();
        self.lines.clear();
        flushed
    }

    /// Lines lost in the current outage, if the output is failing now.
    pub fn failing(&self) -> Option<u64> {
        self.outage.as_ref().map(|o| o.lost)
    }

    fn name(&self) -> String {
        match &self.sink {
            Sink::Stdout(_) => "stdout".into(),
            Sink::File { path, .. } => path.display().to_string(),
            Sink::Other(_) => "writer".into(),
        }
    }

    /// Makes sure the output can be written to: reopens a file whose path no longer names it,
    /// and retries a failed output at most every [`RETRY_INTERVAL`].
    fn ready(&mut self) -> io::Result<()> {
        if let Some(outage) = &mut self.outage {
            if outage.last_attempt.elapsed() < RETRY_INTERVAL {
                return Err(io::Error::other("the output failed less than a second ago"));
            }
            outage.last_attempt = Instant::now();
        }
        if let Sink::File {
            path,
            file,
            identity,
        } = &mut self.sink
        {
            let current = std::fs::metadata(&*path).map(|m| (m.dev(), m.ino()));
            if file.is_none() || current.ok() != Some(*identity) {
                // Removed, replaced, or never reopened after a failure: open the path anew.
                *file = None;
                let (opened, id) = open_output(path)?;
                *file = Some(opened);
                *identity = id;
            }
        }
        Ok(())
    }

    /// Writes `pending`; on failure, the bytes written before it.
    fn write_pending(&mut self) -> Result<(), (usize, io::Error)> {
        let out: &mut dyn Write = match &mut self.sink {
            Sink::Stdout(s) => s,
            Sink::File { file: Some(f), .. } => f,
            Sink::File { file: None, .. } => {
                return Err((0, io::Error::other("the output is not open")));
            }
            Sink::Other(w) => w,
        };
        let mut written = 0;
        while written < self.pending.len() {
            match out.write(&self.pending[written..]) {
                Ok(0) => return Err((written, io::ErrorKind::WriteZero.into())),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err((written, e)),
            }
        }
        out.flush().map_err(|e| (written, e))
    }

    /// A write that stopped inside a line left `partial` bytes of it in the file: cut them off so
    /// the file stays whole lines.
    fn cut_partial_line(&mut self, partial: usize) {
        if partial == 0 {
            return;
        }
        if let Sink::File { file: Some(f), .. } = &self.sink
            && let Ok(meta) = f.metadata()
        {
            let _ = f.set_len(meta.len().saturating_sub(partial as u64));
        }
    }

    /// Starts or extends an outage; the error is printed once per outage.
    fn fail(&mut self, error: &io::Error, lost: u64) {
        if let Sink::File { file, .. } = &mut self.sink {
            // Reopened on the next try: the path may name a new file by then.
            *file = None;
        }
        match &mut self.outage {
            Some(outage) => outage.lost += lost,
            None => {
                eprintln!(
                    "sensor: output {}: cannot write: {error}; lines are dropped and counted \
                     (output_errors) until it can be written again, retried every second",
                    self.name()
                );
                self.outage = Some(Outage {
                    lost,
                    last_attempt: Instant::now(),
                });
            }
        }
    }
}

/// Opens `path` for appending, creating it with mode [`OUTPUT_MODE`] if it does not exist.
fn open_output(path: &Path) -> io::Result<(File, (u64, u64))> {
    let created = OpenOptions::new()
        .create_new(true)
        .append(true)
        .mode(OUTPUT_MODE)
        .open(path);
    let file = match created {
        Ok(file) => {
            // The umask may have taken bits away; the mode is part of the contract.
            file.set_permissions(std::fs::Permissions::from_mode(OUTPUT_MODE))?;
            file
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            OpenOptions::new().append(true).open(path)?
        }
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    Ok((file, (meta.dev(), meta.ino())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ndjson-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn creates_files_0640_whatever_the_umask() {
        let dir = temp_dir("mode");
        let path = dir.join("events.ndjson");
        // SAFETY: umask(2) has no preconditions; restored below.
        let old = unsafe { libc::umask(0o077) };
        let writer = NdjsonWriter::create(&path);
        unsafe { libc::umask(old) };
        drop(writer.unwrap());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn full_device_loses_lines_counted() {
        // /dev/full: every write fails with ENOSPC.
        let mut w = NdjsonWriter::create(Path::new("/dev/full")).unwrap();
        w.write_event(&serde_json::json!({"n": 1})).unwrap();
        w.write(&serde_json::json!({"stats": true})).unwrap();
        let f = w.flush();
        assert_eq!(
            f,
            Flushed {
                events_written: 0,
                lines_lost: 2
            }
        );
        assert_eq!(w.failing(), Some(2));
        // Within the retry interval, the next batch is dropped without a write.
        w.write_event(&serde_json::json!({"n": 2})).unwrap();
        assert_eq!(w.flush().lines_lost, 1);
        assert_eq!(w.failing(), Some(3));
    }

    #[test]
    fn removed_directory_is_noticed_and_recovered() {
        let dir = temp_dir("removed");
        let path = dir.join("events.ndjson");
        let mut w = NdjsonWriter::create(&path).unwrap();
        w.write_event(&serde_json::json!({"n": 1})).unwrap();
        assert_eq!(w.flush().events_written, 1);

        std::fs::remove_dir_all(&dir).unwrap();
        w.write_event(&serde_json::json!({"n": 2})).unwrap();
        let f = w.flush();
        assert_eq!(
            (f.events_written, f.lines_lost),
            (0, 1),
            "not into the unlinked file"
        );

        std::fs::create_dir_all(&dir).unwrap();
        std::thread::sleep(RETRY_INTERVAL);
        w.write_event(&serde_json::json!({"n": 3})).unwrap();
        assert_eq!(w.flush().events_written, 1);
        assert_eq!(w.failing(), None);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"n\":3}\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_replaced_file_is_reopened() {
        let dir = temp_dir("replaced");
        let path = dir.join("events.ndjson");
        let mut w = NdjsonWriter::create(&path).unwrap();
        w.write_event(&serde_json::json!({"n": 1})).unwrap();
        w.flush();
        std::fs::rename(&path, dir.join("events.ndjson.1")).unwrap();
        w.write_event(&serde_json::json!({"n": 2})).unwrap();
        assert_eq!(w.flush().events_written, 1);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"n\":2}\n");
        assert_eq!(
            std::fs::read_to_string(dir.join("events.ndjson.1")).unwrap(),
            "{\"n\":1}\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Accepts `room` bytes, then fails like a full disk.
    struct Filling {
        room: usize,
        out: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    }

    impl Write for Filling {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            self.out.lock().unwrap().extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_write_stopped_half_way_counts_whole_lines() {
        let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut w = NdjsonWriter::new(Box::new(Filling {
            room: 12,
            out: out.clone(),
        }));
        for n in 0..3 {
            w.write_event(&serde_json::json!({"n": n})).unwrap();
        }
        // Each line is 8 bytes: the first fits, the second is cut.
        assert_eq!(
            w.flush(),
            Flushed {
                events_written: 1,
                lines_lost: 2
            }
        );
        assert_eq!(out.lock().unwrap().len(), 12);
    }
}
