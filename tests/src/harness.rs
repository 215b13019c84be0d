//! The real XDP program, loaded into the real kernel, run on crafted frames.

use std::os::fd::{AsFd as _, BorrowedFd};

use aya::maps::{MapData, RingBuf};
use sensor::{
    capture::{PortSet, SensorProgram, XdpVerdict},
    counters::KernelCounters,
    record::OwnedRecord,
};
use sensor_common::{CaptureRecord, MatchAction, SensorConfig};

pub struct Harness {
    pub program: SensorProgram,
    ring: RingBuf<MapData>,
}

/// What one frame did: the verdict, the records it produced, the counters it moved.
pub struct Run {
    pub verdict: XdpVerdict,
    pub records: Vec<OwnedRecord>,
    pub counters: KernelCounters,
    /// Raw record bytes as the kernel wrote them.
    pub raw: Vec<Vec<u8>>,
}

impl Harness {
    /// Loads the program with a small ring buffer, default ports, drop, full prefix.
    pub fn new() -> Self {
        Self::with(
            SensorConfig::new(MatchAction::Drop, false, sensor_common::DEFAULT_PREFIX_LEN),
            &PortSet::default(),
            1 << 20,
        )
    }

    pub fn with(config: SensorConfig, ports: &PortSet, ring_bytes: u32) -> Self {
        let program =
            SensorProgram::load(ring_bytes).expect("load the XDP program (are you root?)");
        Self::with_program(program, config, ports)
    }

    /// As `with`, for a program loaded some other way (another build, `SensorProgram::load_object`).
    pub fn with_program(mut program: SensorProgram, config: SensorConfig, ports: &PortSet) -> Self {
        program.set_config(config).expect("config");
        program.set_ports(ports).expect("ports");
        let ring = program.take_ring().expect("ring");
        Self { program, ring }
    }

    /// The ring buffer map, for a reader of its own (the kernel cost benchmark drains it from
    /// another CPU; it then must not also use [`Harness::drain`]).
    pub fn ring_fd(&self) -> BorrowedFd<'_> {
        self.ring.as_fd()
    }

    pub fn counters(&self) -> KernelCounters {
        self.program.counters().expect("counters")
    }

    /// Runs `frame` once and collects what it produced.
    pub fn run(&mut self, frame: &[u8]) -> Run {
        let before = self.counters();
        let (verdict, _) = self.program.test_run(frame, 1).expect("BPF_PROG_TEST_RUN");
        let counters = self.counters().since(&before);
        let (records, raw) = self.drain();
        Run {
            verdict,
            records,
            counters,
            raw,
        }
    }

    /// Takes every record in the ring buffer.
    pub fn drain(&mut self) -> (Vec<OwnedRecord>, Vec<Vec<u8>>) {
        let mut records = Vec::new();
        let mut raw = Vec::new();
        while let Some(item) = self.ring.next() {
            raw.push(item[..CaptureRecord::SIZE.min(item.len())].to_vec());
            records.push(OwnedRecord::from_unaligned(&item).expect("kernel record decodes"));
        }
        (records, raw)
    }
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}
