//! One JSON object per line, to stdout or a file.

use std::{
    fs::{File, OpenOptions},
    io::{self, BufWriter, Write},
    os::unix::fs::OpenOptionsExt as _,
    path::Path,
};

use serde::Serialize;

pub struct NdjsonWriter {
    out: BufWriter<Box<dyn Write + Send>>,
}

impl NdjsonWriter {
    pub fn stdout() -> Self {
        Self::new(Box::new(io::stdout()))
    }

    /// Creates (or appends to) `path`, mode 0640: events carry attacker data and addresses that
    /// not every local user should read.
    pub fn create(path: &Path) -> io::Result<Self> {
        let file: File = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(path)?;
        Ok(Self::new(Box::new(file)))
    }

    pub fn new(out: Box<dyn Write + Send>) -> Self {
        Self {
            out: BufWriter::with_capacity(256 * 1024, out),
        }
    }

    pub fn write<T: Serialize>(&mut self, doc: &T) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, doc).map_err(io::Error::other)?;
        self.out.write_all(b"\n")
    }

    /// Writes one already-serialized JSON document (no newline inside) as a line.
    pub fn write_raw(&mut self, json: &[u8]) -> io::Result<()> {
        self.out.write_all(json)?;
        self.out.write_all(b"\n")
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
