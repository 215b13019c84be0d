//! The real XDP program, loaded into the real kernel, run on crafted frames.

use std::os::fd::{AsFd as _, BorrowedFd};

use aya::maps::MapData;
use sensor::{
    capture::{PortSet, RingPages, SensorProgram, XdpVerdict},
    counters::KernelCounters,
    record::OwnedRecord,
};
use sensor_common::{MatchAction, SensorConfig};

pub struct Harness {
    pub program: SensorProgram,
    /// One per CPU: a test run writes into the ring of the CPU it runs on.
    maps: Vec<MapData>,
    /// The rings, read as the agent reads them.
    rings: Vec<RingPages>,
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
        let maps = program.take_rings();
        assert!(!maps.is_empty(), "the program has its rings");
        let rings = maps
            .iter()
            .map(|map| RingPages::map(map.fd().as_fd()).expect("map the ring"))
            .collect();
        Self {
            program,
            maps,
            rings,
        }
    }

    /// The ring buffer of `cpu`, for a reader of its own (the kernel cost benchmark's, which
    /// then must not also use [`Harness::drain`]).
    pub fn ring_fd(&self, cpu: usize) -> BorrowedFd<'_> {
        self.maps[cpu].fd().as_fd()
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

    /// Records waiting in the ring of `cpu`, taken.
    pub fn drain_cpu(&mut self, cpu: usize) -> Vec<OwnedRecord> {
        let mut records = Vec::new();
        self.rings[cpu].drain(|item| {
            records.push(OwnedRecord::from_unaligned(item).expect("kernel record decodes"));
        });
        records
    }

    pub fn cpus(&self) -> usize {
        self.rings.len()
    }

    /// Takes every record in the ring buffers.
    pub fn drain(&mut self) -> (Vec<OwnedRecord>, Vec<Vec<u8>>) {
        let mut records = Vec::new();
        let mut raw = Vec::new();
        for ring in &mut self.rings {
            ring.drain(|item| {
                raw.push(item.to_vec());
                records.push(OwnedRecord::from_unaligned(item).expect("kernel record decodes"));
            });
        }
        (records, raw)
    }
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}
