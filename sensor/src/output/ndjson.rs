//! One JSON document per line, to stdout or to (rotated) files.

use serde::Serialize;

use super::file::{Destination, OutputError, OutputFile, Rotation};

pub struct NdjsonSink {
    file: OutputFile,
    line: Vec<u8>,
}

impl NdjsonSink {
    pub fn new(destination: Destination, rotation: Rotation) -> Result<Self, OutputError> {
        Ok(Self {
            file: OutputFile::new("ndjson", destination, rotation, Vec::new())?,
            line: Vec::with_capacity(4096),
        })
    }

    /// Writes one document as a line. `at_ns` is the time of the event it describes (it decides
    /// the file under time rotation); `None` for documents about the sensor itself.
    pub fn write<T: Serialize>(&mut self, doc: &T, at_ns: Option<u64>) -> bool {
        self.line.clear();
        if serde_json::to_writer(&mut self.line, doc).is_err() {
            // Not expected for these documents; counted with the drops all the same.
            self.file.count_dropped();
            return false;
        }
        self.line.push(b'\n');
        self.file.write_unit(&self.line, at_ns)
    }

    /// Writes one document already serialised (no newline inside) as a line.
    pub fn write_serialized(&mut self, json: &[u8], at_ns: Option<u64>) -> bool {
        self.file.write_line(json, at_ns)
    }

    /// The file (rotation, failures, counters) this sink writes.
    pub fn output(&self) -> &OutputFile {
        &self.file
    }

    pub fn output_mut(&mut self) -> &mut OutputFile {
        &mut self.file
    }
}
