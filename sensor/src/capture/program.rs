//! Loading the XDP program, filling its maps, reading its counters, and attaching it.

use std::io;

use aya::{
    Ebpf, EbpfLoader,
    maps::{
        Array, ArrayOfMaps, Map, MapData, MapError, PerCpuArray,
        lpm_trie::{Key, LpmTrie},
    },
    programs::{ProgramError, TestRun, TestRunOptions, Xdp, XdpMode, links::FdLink},
};
use sensor_common::{COUNTER_SLOTS, Counter, PROGRAM_NAME, PortMatch, SensorConfig, map_names};

use super::{AttachMode, CaptureError, PortSet, Prefix};
use crate::counters::{KernelCounters, PerCpuCounters};

/// The port bitmap map of builds of the program from before `PortMatch`, which `load_object` can
/// load for comparisons.
const LEGACY_PORTS: &str = "PORTS";

/// The compiled XDP object, built by `build.rs` from `sensor-ebpf`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sensor-ebpf"));

/// The program loaded into the kernel, with its maps; not yet attached to anything.
pub struct SensorProgram {
    ebpf: Ebpf,
    /// The ring buffer maps, one per possible CPU, by CPU number.
    rings: Vec<MapData>,
}

/// The program's XDP verdict on one test frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpVerdict {
    Aborted,
    Drop,
    Pass,
    Tx,
    Redirect,
    Other(u32),
}

impl XdpVerdict {
    pub fn from_code(code: u32) -> Self {
        match code {
            0 => Self::Aborted,
            1 => Self::Drop,
            2 => Self::Pass,
            3 => Self::Tx,
            4 => Self::Redirect,
            other => Self::Other(other),
        }
    }
}

/// An attached program: dropping it detaches (the link is a bpf_link held by this process, so the
/// kernel also detaches if the process dies).
pub struct Attachment {
    link: Option<FdLink>,
    pub ifindex: u32,
    pub mode: AttachMode,
}

impl Attachment {
    /// Detaches now rather than on drop.
    pub fn detach(mut self) {
        self.link.take();
    }

    /// The kernel's id for the link, for `bpftool link show`.
    pub fn link_id(&self) -> Option<u32> {
        self.link
            .as_ref()
            .and_then(|l| l.info().ok())
            .map(|info| info.id())
    }
}

fn is_permission_error(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES))
}

/// The first `io::Error` in an error's source chain, where the kernel's errno is.
fn root_io_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a io::Error> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return Some(io);
        }
        current = e.source();
    }
    None
}

/// Full text of an error and its sources, for messages; a source whose text the message already
/// shows is not repeated.
fn chain_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut current = err.source();
    while let Some(e) = current {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        current = e.source();
    }
    text
}

impl SensorProgram {
    /// Loads the program and creates its maps, with one ring buffer per possible CPU.
    /// `ring_bytes`, the memory of all the rings together, must be a power of two multiple of
    /// the page size ([`per_cpu_ring_bytes`] splits it).
    pub fn load(ring_bytes: u32) -> Result<Self, CaptureError> {
        Self::load_object(OBJECT, ring_bytes)
    }

    /// As `load`, from another build of the program (an ELF object with the same maps and
    /// program name): for comparing builds, as the kernel cost benchmark does.
    pub fn load_object(object: &[u8], ring_bytes: u32) -> Result<Self, CaptureError> {
        let page = page_size();
        if !ring_bytes.is_power_of_two() || ring_bytes < page || !ring_bytes.is_multiple_of(page) {
            return Err(CaptureError::RingSize { ring_bytes, page });
        }
        let cpus = possible_cpus()?;
        let per_cpu = per_cpu_ring_bytes(ring_bytes, cpus, page);
        // Builds from before the per-CPU rings have one ring for all CPUs (loadable for
        // before/after comparisons): it gets all the ring memory.
        let shared_ring = aya_obj::Object::parse(object).is_ok_and(|o| {
            o.maps.get(map_names::EVENTS).is_some_and(|m| {
                m.map_type() == aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_RINGBUF as u32
            })
        });
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(
                map_names::EVENTS,
                if shared_ring { ring_bytes } else { cpus },
            )
            .load(object)
            .map_err(|e| {
                if root_io_error(&e).is_some_and(is_permission_error) {
                    CaptureError::Privilege(chain_text(&e))
                } else {
                    CaptureError::Load(chain_text(&e))
                }
            })?;
        let rings = if shared_ring {
            match ebpf.take_map(map_names::EVENTS) {
                Some(Map::RingBuf(ring)) => vec![ring],
                _ => return Err(CaptureError::Missing(map_names::EVENTS)),
            }
        } else {
            fill_rings(&mut ebpf, cpus, per_cpu)?
        };
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or(CaptureError::Missing(PROGRAM_NAME))?
            .try_into()
            .map_err(|e: ProgramError| CaptureError::Load(e.to_string()))?;
        program.load().map_err(|e| {
            if root_io_error(&e).is_some_and(is_permission_error) {
                CaptureError::Privilege(chain_text(&e))
            } else {
                CaptureError::Load(chain_text(&e))
            }
        })?;
        Ok(Self { ebpf, rings })
    }

    /// Writes the settings the program reads per frame; takes effect on the next frame.
    pub fn set_config(&mut self, config: SensorConfig) -> Result<(), CaptureError> {
        let mut map: Array<_, SensorConfig> = self.map(map_names::CONFIG)?;
        map.set(0, config, 0).map_err(|e| CaptureError::Map {
            map: map_names::CONFIG,
            message: e.to_string(),
        })?;
        if self.ebpf.map(map_names::PORT_MATCH).is_none() && self.ebpf.map(LEGACY_PORTS).is_some() {
            // A build of the program from before `PortMatch` reads the switch from CONFIG.
            return Ok(());
        }
        // The per-frame check reads the source-port switch next to the port bitmap.
        let match_source_port = u64::from(config.match_source_port != 0);
        self.update_port_match(|ports| ports.match_source_port = match_source_port)
    }

    /// Writes the port bitmap. The whole `PortMatch` is written in one update; words that do not
    /// change are rewritten with the same bytes, so a port that stays in the set matches
    /// throughout.
    pub fn set_ports(&mut self, ports: &PortSet) -> Result<(), CaptureError> {
        if self.ebpf.map(map_names::PORT_MATCH).is_none() && self.ebpf.map(LEGACY_PORTS).is_some() {
            // A build of the program from before `PortMatch` (see `load_object`).
            let mut map: Array<_, u64> = self.map(LEGACY_PORTS)?;
            for (index, word) in ports.words().iter().enumerate() {
                map.set(index as u32, *word, 0)
                    .map_err(|e| CaptureError::Map {
                        map: LEGACY_PORTS,
                        message: e.to_string(),
                    })?;
            }
            return Ok(());
        }
        self.update_port_match(|current| current.words = *ports.words())
    }

    /// Reads the program's `PortMatch` global, changes it, writes it back if it changed.
    fn update_port_match(
        &mut self,
        change: impl FnOnce(&mut PortMatch),
    ) -> Result<(), CaptureError> {
        let error = |e: aya::maps::MapError| CaptureError::Map {
            map: map_names::PORT_MATCH,
            message: e.to_string(),
        };
        let mut map: Array<_, PortMatch> = self.map(map_names::PORT_MATCH)?;
        let current = map.get(&0, 0).map_err(error)?;
        let mut next = current;
        change(&mut next);
        if next != current {
            map.set(0, next, 0).map_err(error)?;
        }
        Ok(())
    }

    /// Replaces the reactive responder's prefixes (the addresses it may answer for).
    pub fn set_reactive_prefixes(&mut self, prefixes: &[Prefix]) -> Result<(), CaptureError> {
        let map = self
            .ebpf
            .map_mut(map_names::REACTIVE_PREFIXES)
            .ok_or(CaptureError::Missing(map_names::REACTIVE_PREFIXES))?;
        let mut trie: LpmTrie<_, [u8; 16], u8> =
            LpmTrie::try_from(map).map_err(|e| CaptureError::Map {
                map: map_names::REACTIVE_PREFIXES,
                message: e.to_string(),
            })?;
        let old: Vec<Key<[u8; 16]>> = trie.keys().filter_map(Result::ok).collect();
        for prefix in prefixes {
            let (len, data) = prefix.lpm_key();
            trie.insert(&Key::new(len, data), 1, 0)
                .map_err(|e| CaptureError::Map {
                    map: map_names::REACTIVE_PREFIXES,
                    message: e.to_string(),
                })?;
        }
        for key in old {
            let keep = prefixes.iter().any(|p| {
                let (len, data) = p.lpm_key();
                len == key.prefix_len() && data == key.data()
            });
            if !keep {
                let _ = trie.remove(&key);
            }
        }
        Ok(())
    }

    /// Writes a SYN cookie secret into slot `generation` (0 or 1).
    pub fn set_cookie_secret(
        &mut self,
        generation: u32,
        secret: [u64; 2],
    ) -> Result<(), CaptureError> {
        let mut map: Array<_, [u64; 2]> = self.map(map_names::COOKIE_SECRETS)?;
        map.set(generation & 1, secret, 0)
            .map_err(|e| CaptureError::Map {
                map: map_names::COOKIE_SECRETS,
                message: e.to_string(),
            })
    }

    /// Reads and sums the per-CPU counters.
    pub fn counters(&self) -> Result<KernelCounters, CaptureError> {
        Ok(self.counters_per_cpu()?.sum())
    }

    /// Reads the counters of every CPU.
    pub fn counters_per_cpu(&self) -> Result<PerCpuCounters, CaptureError> {
        let map = self
            .ebpf
            .map(map_names::COUNTERS)
            .ok_or(CaptureError::Missing(map_names::COUNTERS))?;
        let map_error = |e: aya::maps::MapError| CaptureError::Map {
            map: map_names::COUNTERS,
            message: e.to_string(),
        };
        let map: PerCpuArray<_, [u64; COUNTER_SLOTS]> =
            PerCpuArray::try_from(map).map_err(map_error)?;
        let per_cpu = map.get(&0, 0).map_err(map_error)?;
        Ok(PerCpuCounters::new(
            per_cpu
                .iter()
                .map(|slots| {
                    let mut values = [0u64; Counter::COUNT as usize];
                    values.copy_from_slice(&slots[..Counter::COUNT as usize]);
                    KernelCounters::from_values(values)
                })
                .collect(),
        ))
    }

    /// The ring buffer maps, one per possible CPU by CPU number, to be read by the caller
    /// ([`super::RingReader`], [`super::RingPages`]). Can be taken once (empty afterwards).
    pub fn take_rings(&mut self) -> Vec<MapData> {
        std::mem::take(&mut self.rings)
    }

    /// Runs the program on `frame` with BPF_PROG_TEST_RUN. Map updates, ring buffer records
    /// included, really happen; the frame goes nowhere.
    pub fn test_run(
        &mut self,
        frame: &[u8],
        repeat: u32,
    ) -> Result<(XdpVerdict, std::time::Duration), CaptureError> {
        let program = self.xdp()?;
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat,
                ..Default::default()
            })
            .map_err(|e| {
                CaptureError::TestRun(format!("{e}: {:?}", std::error::Error::source(&e)))
            })?;
        Ok((XdpVerdict::from_code(result.return_value), result.duration))
    }

    /// Like [`Self::test_run`], also returning the frame as the program left it (the reply, for
    /// XDP_TX).
    pub fn test_run_output(&mut self, frame: &[u8]) -> Result<(XdpVerdict, Vec<u8>), CaptureError> {
        let program = self.xdp()?;
        let mut out = vec![0u8; frame.len() + 256];
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                repeat: 1,
                ..Default::default()
            })
            .map_err(|e| CaptureError::TestRun(chain_text(&e)))?;
        out.truncate(result.data_size_out as usize);
        Ok((XdpVerdict::from_code(result.return_value), out))
    }

    /// Attaches to `interface` as a bpf_link. `Auto` tries native first and falls back to generic;
    /// the returned attachment says which mode is in use.
    pub fn attach(
        &mut self,
        interface: &str,
        mode: AttachMode,
    ) -> Result<Attachment, CaptureError> {
        let ifindex = ifindex(interface)?;
        let tries: &[AttachMode] = match mode {
            AttachMode::Auto => &[AttachMode::Native, AttachMode::Generic],
            AttachMode::Native => &[AttachMode::Native],
            AttachMode::Generic => &[AttachMode::Generic],
        };
        let mut last = None;
        for try_mode in tries {
            match self.attach_once(interface, ifindex, *try_mode) {
                Ok(attachment) => return Ok(attachment),
                Err(e @ CaptureError::ModeUnsupported { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(CaptureError::ModeUnsupported {
            interface: interface.to_string(),
            mode,
            message: "no mode to try".into(),
        }))
    }

    fn attach_once(
        &mut self,
        interface: &str,
        ifindex: u32,
        mode: AttachMode,
    ) -> Result<Attachment, CaptureError> {
        let xdp_mode = match mode {
            AttachMode::Native => XdpMode::Driver,
            AttachMode::Generic => XdpMode::Skb,
            AttachMode::Auto => XdpMode::Default,
        };
        let program = self.xdp()?;
        let id = program
            .attach_to_if_index(ifindex, xdp_mode)
            .map_err(|e| attach_error(interface, mode, e))?;
        let link = program
            .take_link(id)
            .map_err(|e| CaptureError::Attach(interface.to_string(), e.to_string()))?;
        // aya falls back to a netlink attachment when bpf_link_create says EINVAL; such an
        // attachment outlives a killed agent, which the sensor must never leave behind.
        let link = FdLink::try_from(link).map_err(|_| {
            CaptureError::Attach(
                interface.to_string(),
                "the kernel refused a bpf_link for XDP and only a netlink attachment was possible; \
                 the sensor does not use netlink attachments because they outlive the agent"
                    .into(),
            )
        })?;
        Ok(Attachment {
            link: Some(link),
            ifindex,
            mode,
        })
    }

    /// Closes the program's own descriptor, keeping its maps and any attachment (the link holds
    /// the program in the kernel). Once attached, the agent needs only the link and the maps,
    /// and a program descriptor would let it attach the program to other interfaces without any
    /// capability: creating an XDP bpf_link checks none, holding the program is the permission.
    pub fn close_program(&mut self) -> Result<(), CaptureError> {
        self.xdp()?
            .unload()
            .map_err(|e| CaptureError::Load(e.to_string()))
    }

    /// The loaded program's descriptor (for BPF_PROG_TEST_RUN from several threads at once, as
    /// the kernel cost benchmark does).
    pub fn program_fd(&self) -> Result<std::os::fd::BorrowedFd<'_>, CaptureError> {
        let program: &Xdp = self
            .ebpf
            .program(PROGRAM_NAME)
            .ok_or(CaptureError::Missing(PROGRAM_NAME))?
            .try_into()
            .map_err(|e: ProgramError| CaptureError::Load(e.to_string()))?;
        let fd = program
            .fd()
            .map_err(|e: ProgramError| CaptureError::Load(e.to_string()))?;
        Ok(std::os::fd::AsFd::as_fd(fd))
    }

    fn xdp(&mut self) -> Result<&mut Xdp, CaptureError> {
        self.ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or(CaptureError::Missing(PROGRAM_NAME))?
            .try_into()
            .map_err(|e: ProgramError| CaptureError::Load(e.to_string()))
    }

    fn map<V: aya::Pod>(
        &mut self,
        name: &'static str,
    ) -> Result<Array<&mut MapData, V>, CaptureError> {
        let map = self.ebpf.map_mut(name).ok_or(CaptureError::Missing(name))?;
        Array::try_from(map).map_err(|e| CaptureError::Map {
            map: name,
            message: e.to_string(),
        })
    }
}

fn attach_error(interface: &str, mode: AttachMode, e: ProgramError) -> CaptureError {
    match root_io_error(&e).and_then(io::Error::raw_os_error) {
        Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) | Some(libc::ERANGE) => {
            CaptureError::ModeUnsupported {
                interface: interface.to_string(),
                mode,
                message: e.to_string(),
            }
        }
        Some(libc::EPERM) | Some(libc::EACCES) => CaptureError::Privilege(chain_text(&e)),
        Some(libc::EBUSY) | Some(libc::EEXIST) => CaptureError::Busy(interface.to_string()),
        _ => CaptureError::Attach(interface.to_string(), chain_text(&e)),
    }
}

/// The index of `interface` in the current network namespace.
pub fn ifindex(interface: &str) -> Result<u32, CaptureError> {
    let name = std::ffi::CString::new(interface)
        .map_err(|_| CaptureError::NoInterface(interface.to_string()))?;
    // SAFETY: a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(CaptureError::NoInterface(interface.to_string()));
    }
    Ok(index)
}

fn page_size() -> u32 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 { size as u32 } else { 4096 }
}

/// The number of possible CPUs (`/sys/devices/system/cpu/possible`): every one gets a ring, so
/// that a CPU brought online later has one too.
fn possible_cpus() -> Result<u32, CaptureError> {
    let cpus = aya::util::nr_cpus().map_err(|(path, e)| {
        CaptureError::Ring(std::io::Error::new(e.kind(), format!("{path}: {e}")))
    })?;
    u32::try_from(cpus)
        .ok()
        .filter(|&n| n > 0 && n as usize <= sensor_common::MAX_CPUS)
        .ok_or(CaptureError::Cpus(cpus))
}

/// Each CPU's share of `ring_bytes` (a power of two multiple of the page size): the largest
/// power of two that fits, at least a page.
pub fn per_cpu_ring_bytes(ring_bytes: u32, cpus: u32, page: u32) -> u32 {
    let share = ring_bytes / cpus.max(1);
    if share < page {
        page
    } else {
        1 << share.ilog2()
    }
}

/// Creates one ring of `bytes` per CPU and puts it in the program's ring array.
fn fill_rings(ebpf: &mut Ebpf, cpus: u32, bytes: u32) -> Result<Vec<MapData>, CaptureError> {
    let error = |e: MapError| CaptureError::Map {
        map: map_names::EVENTS,
        message: e.to_string(),
    };
    let outer = ebpf
        .map_mut(map_names::EVENTS)
        .ok_or(CaptureError::Missing(map_names::EVENTS))?;
    let mut outer: ArrayOfMaps<&mut MapData, MapData> =
        ArrayOfMaps::try_from(outer).map_err(error)?;
    let mut rings = Vec::with_capacity(cpus as usize);
    for cpu in 0..cpus {
        let definition = aya_obj::Map::new_from_params(
            aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_RINGBUF as u32,
            0,
            0,
            bytes,
            0,
        );
        let ring = MapData::create(definition, &format!("EVENTS_{cpu}"), None).map_err(error)?;
        outer.set(cpu, &ring, 0).map_err(error)?;
        rings.push(ring);
    }
    Ok(rings)
}

#[cfg(test)]
mod tests {
    use super::per_cpu_ring_bytes;

    #[test]
    fn ring_memory_is_split_between_cpus_in_powers_of_two() {
        let mib = 1 << 20;
        assert_eq!(per_cpu_ring_bytes(64 * mib, 1, 4096), 64 * mib);
        assert_eq!(per_cpu_ring_bytes(64 * mib, 2, 4096), 32 * mib);
        // Three CPUs: 21.3 MiB each rounds down to 16 MiB.
        assert_eq!(per_cpu_ring_bytes(64 * mib, 3, 4096), 16 * mib);
        // Never less than a page, the smallest ring the kernel makes.
        assert_eq!(per_cpu_ring_bytes(4096, 2, 4096), 4096);
        assert_eq!(per_cpu_ring_bytes(64 * mib, 1024, 4096), 64 * 1024);
    }
}
