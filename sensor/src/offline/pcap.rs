//! Streaming reader for capture files: classic pcap (either byte order, micro- or nanosecond
//! timestamps) and pcapng (SHB, IDB, EPB, SPB and the obsolete PB; other blocks are skipped).
//!
//! Capture files come from anywhere, so every length is checked before it is used: a hostile or
//! damaged file gives a [`CaptureFileError`] naming the byte offset of the bad header or block,
//! never a panic or an unbounded allocation. After the first error the iterator ends.

use std::{
    fs::File,
    io::{self, BufReader, Read},
    path::Path,
};

/// Largest packet accepted, as libpcap's MAXIMUM_SNAPLEN: more is a corrupt length.
pub const MAX_PACKET_BYTES: u32 = 262_144;
/// Largest pcapng block accepted: a packet of [`MAX_PACKET_BYTES`] plus generous options.
pub const MAX_BLOCK_BYTES: u32 = MAX_PACKET_BYTES + 65_536;

/// Bytes read from the file at a time.
const READ_BUFFER_BYTES: usize = 1 << 20;

const PCAP_MAGIC_MICROS: u32 = 0xa1b2_c3d4;
const PCAP_MAGIC_NANOS: u32 = 0xa1b2_3c4d;
const PCAPNG_SHB: u32 = 0x0a0d_0d0a;
const PCAPNG_BYTE_ORDER_MAGIC: u32 = 0x1a2b_3c4d;
const PCAPNG_IDB: u32 = 1;
const PCAPNG_OBSOLETE_PB: u32 = 2;
const PCAPNG_SPB: u32 = 3;
const PCAPNG_EPB: u32 = 6;
const IDB_OPTION_TSRESOL: u16 = 9;
const IDB_OPTION_TSOFFSET: u16 = 14;
const OPTION_END: u16 = 0;

/// A link-layer header type (the LINKTYPE_ registry numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LinkType(pub u16);

impl LinkType {
    pub const ETHERNET: LinkType = LinkType(1);
    /// Raw IP, version from the first nibble.
    pub const RAW: LinkType = LinkType(101);
    /// Linux cooked capture v1 (`tcpdump -i any` before libpcap 1.10).
    pub const LINUX_SLL: LinkType = LinkType(113);
    pub const IPV4: LinkType = LinkType(228);
    pub const IPV6: LinkType = LinkType(229);
    /// Linux cooked capture v2.
    pub const LINUX_SLL2: LinkType = LinkType(276);
}

/// Which of the two file formats a reader found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaptureFormat {
    Pcap,
    PcapNg,
}

/// One packet record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// Nanoseconds since the Unix epoch; `None` for pcapng Simple Packet Blocks, which carry none.
    pub timestamp_ns: Option<u64>,
    /// Length of the packet on the wire.
    pub original_len: u32,
    /// The bytes the capture kept (at most `original_len` unless the file says otherwise).
    pub data: Vec<u8>,
    /// Interface index within the file: always 0 for pcap; the IDB number of its section for
    /// pcapng.
    pub interface: u32,
    pub link_type: LinkType,
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureFileError {
    #[error("reading the capture at byte {offset}: {source}")]
    Io { offset: u64, source: io::Error },
    #[error("not a pcap or pcapng file: it starts with {magic:02x?}")]
    UnknownFormat { magic: [u8; 4] },
    #[error(
        "file ends inside the {what} at byte {offset}: {needed} bytes needed, {available} left"
    )]
    Truncated {
        what: &'static str,
        offset: u64,
        needed: u64,
        available: u64,
    },
    #[error(
        "packet at byte {offset} claims {captured} captured bytes, more than {MAX_PACKET_BYTES}"
    )]
    PacketTooLong { offset: u64, captured: u32 },
    #[error("pcapng block at byte {offset}: {reason}")]
    BadBlock { offset: u64, reason: String },
    #[error(
        "pcapng packet at byte {offset} names interface {interface}, but its section has {known}"
    )]
    UnknownInterface {
        offset: u64,
        interface: u32,
        known: usize,
    },
    #[error("packet {interface}/{link_type:?} cannot become an Ethernet frame: {reason}")]
    NotEthernet {
        interface: u32,
        link_type: LinkType,
        reason: &'static str,
    },
}

/// Byte order of the file section being read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endian {
    Little,
    Big,
}

impl Endian {
    fn u16(self, b: &[u8], at: usize) -> u16 {
        let bytes = [b[at], b[at + 1]];
        match self {
            Endian::Little => u16::from_le_bytes(bytes),
            Endian::Big => u16::from_be_bytes(bytes),
        }
    }

    fn u32(self, b: &[u8], at: usize) -> u32 {
        let bytes = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        match self {
            Endian::Little => u32::from_le_bytes(bytes),
            Endian::Big => u32::from_be_bytes(bytes),
        }
    }
}

/// Timestamp resolution and offset of a pcapng interface.
#[derive(Clone, Copy, Debug)]
struct Interface {
    link_type: LinkType,
    snap_len: u32,
    /// Timestamp units per second: 10^n or 2^n.
    units_per_second: u64,
    offset_seconds: i64,
}

impl Interface {
    fn to_ns(self, ticks: u64) -> u64 {
        let ns = u128::from(ticks) * 1_000_000_000 / u128::from(self.units_per_second);
        let ns = i128::try_from(ns).unwrap_or(i128::MAX)
            + i128::from(self.offset_seconds) * 1_000_000_000;
        u64::try_from(ns.max(0)).unwrap_or(u64::MAX)
    }
}

enum State {
    Pcap {
        endian: Endian,
        ns_per_fraction: u64,
        link_type: LinkType,
    },
    PcapNg {
        endian: Endian,
        interfaces: Vec<Interface>,
    },
    Done,
}

/// Reads packets one at a time from any byte stream.
pub struct CaptureReader<R: Read> {
    input: R,
    /// Bytes consumed so far: the offset of the next header, for error messages.
    offset: u64,
    state: State,
    format: CaptureFormat,
}

impl CaptureReader<BufReader<File>> {
    pub fn open(path: impl AsRef<Path>) -> Result<Self, CaptureFileError> {
        let file = File::open(path).map_err(|source| CaptureFileError::Io { offset: 0, source })?;
        // Large reads: a capture is read once, front to back.
        Self::new(BufReader::with_capacity(READ_BUFFER_BYTES, file))
    }
}

impl<R: Read> CaptureReader<R> {
    /// Reads the file header (pcap) or the first section header (pcapng).
    pub fn new(input: R) -> Result<Self, CaptureFileError> {
        let mut reader = Self {
            input,
            offset: 0,
            state: State::Done,
            format: CaptureFormat::Pcap,
        };
        let mut magic = [0u8; 4];
        reader.read_exact_or(&mut magic, "file header")?;
        match u32::from_le_bytes(magic) {
            PCAPNG_SHB => {
                reader.format = CaptureFormat::PcapNg;
                reader.read_section_header()?;
            }
            _ => reader.read_pcap_header(magic)?,
        }
        Ok(reader)
    }

    pub fn format(&self) -> CaptureFormat {
        self.format
    }

    fn read_pcap_header(&mut self, magic: [u8; 4]) -> Result<(), CaptureFileError> {
        let (endian, ns_per_fraction) = match (u32::from_le_bytes(magic), u32::from_be_bytes(magic))
        {
            (PCAP_MAGIC_MICROS, _) => (Endian::Little, 1_000),
            (PCAP_MAGIC_NANOS, _) => (Endian::Little, 1),
            (_, PCAP_MAGIC_MICROS) => (Endian::Big, 1_000),
            (_, PCAP_MAGIC_NANOS) => (Endian::Big, 1),
            _ => return Err(CaptureFileError::UnknownFormat { magic }),
        };
        let mut rest = [0u8; 20];
        self.read_exact_or(&mut rest, "pcap file header")?;
        // Version (4), thiszone (4), sigfigs (4), snaplen (4), then the link type, whose upper
        // 16 bits carry FCS information we do not need.
        let link_type = LinkType((endian.u32(&rest, 16) & 0xffff) as u16);
        self.state = State::Pcap {
            endian,
            ns_per_fraction,
            link_type,
        };
        Ok(())
    }

    /// Reads an SHB whose 4-byte type was already read; starts a new section.
    fn read_section_header(&mut self) -> Result<(), CaptureFileError> {
        let block_offset = self.offset - 4;
        let mut head = [0u8; 8];
        self.read_exact_or(&mut head, "pcapng section header")?;
        // The byte-order magic decides how to read everything in the section, the length too.
        let endian = match (
            u32::from_le_bytes([head[4], head[5], head[6], head[7]]),
            u32::from_be_bytes([head[4], head[5], head[6], head[7]]),
        ) {
            (PCAPNG_BYTE_ORDER_MAGIC, _) => Endian::Little,
            (_, PCAPNG_BYTE_ORDER_MAGIC) => Endian::Big,
            _ => {
                return Err(CaptureFileError::BadBlock {
                    offset: block_offset,
                    reason: format!("section header has byte-order magic {:02x?}", &head[4..8]),
                });
            }
        };
        let total_len = endian.u32(&head, 0);
        // Type, length, magic, version (4), section length (8), trailing length.
        let body = self.read_block_rest(block_offset, total_len, 12, 28, endian)?;
        let major = endian.u16(&body, 0);
        if major != 1 {
            return Err(CaptureFileError::BadBlock {
                offset: block_offset,
                reason: format!("unsupported pcapng major version {major}"),
            });
        }
        self.state = State::PcapNg {
            endian,
            interfaces: Vec::new(),
        };
        Ok(())
    }

    /// Reads the rest of a pcapng block after `already` bytes, checks the trailing length, and
    /// returns the body between the already-read head and the trailing length.
    fn read_block_rest(
        &mut self,
        block_offset: u64,
        total_len: u32,
        already: u32,
        minimum: u32,
        endian: Endian,
    ) -> Result<Vec<u8>, CaptureFileError> {
        let bad = |reason: String| CaptureFileError::BadBlock {
            offset: block_offset,
            reason,
        };
        if total_len < minimum || !total_len.is_multiple_of(4) {
            return Err(bad(format!(
                "length {total_len} is not a multiple of 4 of at least {minimum}"
            )));
        }
        if total_len > MAX_BLOCK_BYTES {
            return Err(bad(format!(
                "length {total_len} is more than the {MAX_BLOCK_BYTES} accepted"
            )));
        }
        let mut rest = self.read_vec(u64::from(total_len - already), "pcapng block")?;
        let trailer_at = rest.len() - 4;
        let trailer = endian.u32(&rest, trailer_at);
        if trailer != total_len {
            return Err(bad(format!(
                "leading length {total_len} and trailing length {trailer} differ"
            )));
        }
        rest.truncate(trailer_at);
        Ok(rest)
    }

    /// Reads the next packet into `packet`, reusing its buffer: once the buffer has grown to
    /// the largest packet, reading costs no allocation (classic pcap; a pcapng block is still
    /// read into a block of its own). `Ok(false)` at the end of the file; after an error the
    /// reader is done.
    pub fn read_packet(&mut self, packet: &mut Packet) -> Result<bool, CaptureFileError> {
        let result = match self.state {
            State::Pcap {
                endian,
                ns_per_fraction,
                link_type,
            } => self.read_pcap_into(endian, ns_per_fraction, link_type, packet),
            State::PcapNg { .. } => self.next_pcapng().map(|next| match next {
                Some(p) => {
                    *packet = p;
                    true
                }
                None => false,
            }),
            State::Done => return Ok(false),
        };
        match result {
            Ok(true) => Ok(true),
            Ok(false) => {
                self.state = State::Done;
                Ok(false)
            }
            Err(e) => {
                self.state = State::Done;
                Err(e)
            }
        }
    }

    fn read_pcap_into(
        &mut self,
        endian: Endian,
        ns_per_fraction: u64,
        link_type: LinkType,
        packet: &mut Packet,
    ) -> Result<bool, CaptureFileError> {
        let record_offset = self.offset;
        let mut head = [0u8; 16];
        if !self.read_exact_or_eof(&mut head, "pcap record header")? {
            return Ok(false);
        }
        let seconds = u64::from(endian.u32(&head, 0));
        let fraction = u64::from(endian.u32(&head, 4));
        let captured = endian.u32(&head, 8);
        let original_len = endian.u32(&head, 12);
        if captured > MAX_PACKET_BYTES {
            return Err(CaptureFileError::PacketTooLong {
                offset: record_offset,
                captured,
            });
        }
        packet.data.resize(captured as usize, 0);
        let data_offset = self.offset;
        if !self.read_exact_or_eof(&mut packet.data, "pcap packet data")? && captured > 0 {
            return Err(CaptureFileError::Truncated {
                what: "pcap packet data",
                offset: data_offset,
                needed: u64::from(captured),
                available: 0,
            });
        }
        packet.timestamp_ns = Some(
            seconds
                .saturating_mul(1_000_000_000)
                .saturating_add(fraction.saturating_mul(ns_per_fraction)),
        );
        packet.original_len = original_len;
        packet.interface = 0;
        packet.link_type = link_type;
        Ok(true)
    }

    fn next_pcap(
        &mut self,
        endian: Endian,
        ns_per_fraction: u64,
        link_type: LinkType,
    ) -> Result<Option<Packet>, CaptureFileError> {
        let record_offset = self.offset;
        let mut head = [0u8; 16];
        if !self.read_exact_or_eof(&mut head, "pcap record header")? {
            return Ok(None);
        }
        let seconds = u64::from(endian.u32(&head, 0));
        let fraction = u64::from(endian.u32(&head, 4));
        let captured = endian.u32(&head, 8);
        let original_len = endian.u32(&head, 12);
        if captured > MAX_PACKET_BYTES {
            return Err(CaptureFileError::PacketTooLong {
                offset: record_offset,
                captured,
            });
        }
        let data = self.read_vec(u64::from(captured), "pcap packet data")?;
        Ok(Some(Packet {
            timestamp_ns: Some(
                seconds
                    .saturating_mul(1_000_000_000)
                    .saturating_add(fraction.saturating_mul(ns_per_fraction)),
            ),
            original_len,
            data,
            interface: 0,
            link_type,
        }))
    }

    fn next_pcapng(&mut self) -> Result<Option<Packet>, CaptureFileError> {
        loop {
            let block_offset = self.offset;
            let mut block_type = [0u8; 4];
            if !self.read_exact_or_eof(&mut block_type, "pcapng block header")? {
                return Ok(None);
            }
            if u32::from_le_bytes(block_type) == PCAPNG_SHB {
                self.read_section_header()?;
                continue;
            }
            let State::PcapNg { endian, .. } = self.state else {
                return Ok(None);
            };
            let mut len = [0u8; 4];
            self.read_exact_or(&mut len, "pcapng block header")?;
            let total_len = endian.u32(&len, 0);
            let kind = endian.u32(&block_type, 0);
            let body = self.read_block_rest(block_offset, total_len, 8, 12, endian)?;
            let State::PcapNg { interfaces, .. } = &mut self.state else {
                return Ok(None);
            };
            match kind {
                PCAPNG_IDB => interfaces.push(parse_idb(&body, endian, block_offset)?),
                PCAPNG_EPB | PCAPNG_OBSOLETE_PB => {
                    return parse_packet_block(kind, &body, endian, interfaces, block_offset)
                        .map(Some);
                }
                PCAPNG_SPB => {
                    return parse_simple_block(&body, endian, interfaces, block_offset).map(Some);
                }
                // Name resolution, statistics, decryption secrets, custom blocks: not packets.
                _ => {}
            }
        }
    }

    fn read_exact_or(
        &mut self,
        buf: &mut [u8],
        what: &'static str,
    ) -> Result<(), CaptureFileError> {
        if self.read_exact_or_eof(buf, what)? {
            Ok(())
        } else {
            Err(CaptureFileError::Truncated {
                what,
                offset: self.offset,
                needed: buf.len() as u64,
                available: 0,
            })
        }
    }

    /// Fills `buf`; `Ok(false)` at a clean end of input (no byte read), an error if the input
    /// ends part way.
    fn read_exact_or_eof(
        &mut self,
        buf: &mut [u8],
        what: &'static str,
    ) -> Result<bool, CaptureFileError> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.input.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(CaptureFileError::Io {
                        offset: self.offset + filled as u64,
                        source,
                    });
                }
            }
        }
        let start = self.offset;
        self.offset += filled as u64;
        match filled {
            0 => Ok(false),
            n if n == buf.len() => Ok(true),
            n => Err(CaptureFileError::Truncated {
                what,
                offset: start,
                needed: buf.len() as u64,
                available: n as u64,
            }),
        }
    }

    /// Reads exactly `len` bytes, growing the buffer only as data arrives so that a hostile
    /// length cannot make it allocate more than the file holds.
    fn read_vec(&mut self, len: u64, what: &'static str) -> Result<Vec<u8>, CaptureFileError> {
        let start = self.offset;
        // Lengths are bounded by the callers (MAX_PACKET_BYTES, MAX_BLOCK_BYTES): room for all
        // of it at once rather than growing the vector as the bytes come.
        let mut data = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        (&mut self.input)
            .take(len)
            .read_to_end(&mut data)
            .map_err(|source| CaptureFileError::Io {
                offset: start,
                source,
            })?;
        self.offset += data.len() as u64;
        if (data.len() as u64) < len {
            return Err(CaptureFileError::Truncated {
                what,
                offset: start,
                needed: len,
                available: data.len() as u64,
            });
        }
        Ok(data)
    }
}

impl<R: Read> Iterator for CaptureReader<R> {
    type Item = Result<Packet, CaptureFileError>;

    fn next(&mut self) -> Option<Self::Item> {
        let result = match self.state {
            State::Pcap {
                endian,
                ns_per_fraction,
                link_type,
            } => self.next_pcap(endian, ns_per_fraction, link_type),
            State::PcapNg { .. } => self.next_pcapng(),
            State::Done => return None,
        };
        match result {
            Ok(Some(packet)) => Some(Ok(packet)),
            Ok(None) => {
                self.state = State::Done;
                None
            }
            Err(e) => {
                self.state = State::Done;
                Some(Err(e))
            }
        }
    }
}

fn parse_idb(body: &[u8], endian: Endian, offset: u64) -> Result<Interface, CaptureFileError> {
    if body.len() < 8 {
        return Err(CaptureFileError::BadBlock {
            offset,
            reason: format!(
                "interface description body is {} bytes, less than 8",
                body.len()
            ),
        });
    }
    let mut interface = Interface {
        link_type: LinkType(endian.u16(body, 0)),
        snap_len: endian.u32(body, 4),
        units_per_second: 1_000_000,
        offset_seconds: 0,
    };
    for (code, value) in options(&body[8..], endian, offset)? {
        match code {
            IDB_OPTION_TSRESOL if !value.is_empty() => {
                let exponent = u32::from(value[0] & 0x7f);
                let base: u64 = if value[0] & 0x80 != 0 { 2 } else { 10 };
                interface.units_per_second =
                    base.checked_pow(exponent)
                        .ok_or_else(|| CaptureFileError::BadBlock {
                            offset,
                            reason: format!("if_tsresol {:#04x} overflows", value[0]),
                        })?;
            }
            IDB_OPTION_TSOFFSET if value.len() >= 8 => {
                let bytes: [u8; 8] = value[..8].try_into().unwrap_or([0; 8]);
                interface.offset_seconds = match endian {
                    Endian::Little => i64::from_le_bytes(bytes),
                    Endian::Big => i64::from_be_bytes(bytes),
                };
            }
            _ => {}
        }
    }
    Ok(interface)
}

/// Splits a pcapng option list into (code, value) pairs, checking each length.
fn options(
    mut bytes: &[u8],
    endian: Endian,
    offset: u64,
) -> Result<Vec<(u16, &[u8])>, CaptureFileError> {
    let mut list = Vec::new();
    while bytes.len() >= 4 {
        let code = endian.u16(bytes, 0);
        let len = usize::from(endian.u16(bytes, 2));
        if code == OPTION_END {
            break;
        }
        let padded = len.div_ceil(4) * 4;
        if bytes.len() - 4 < padded {
            return Err(CaptureFileError::BadBlock {
                offset,
                reason: format!("option {code} of {len} bytes runs past the block"),
            });
        }
        list.push((code, &bytes[4..4 + len]));
        bytes = &bytes[4 + padded..];
    }
    Ok(list)
}

fn interface_at(
    interfaces: &[Interface],
    id: u32,
    offset: u64,
) -> Result<Interface, CaptureFileError> {
    usize::try_from(id)
        .ok()
        .and_then(|i| interfaces.get(i))
        .copied()
        .ok_or(CaptureFileError::UnknownInterface {
            offset,
            interface: id,
            known: interfaces.len(),
        })
}

/// An Enhanced Packet Block, or the obsolete Packet Block (16-bit interface id and drop count).
fn parse_packet_block(
    kind: u32,
    body: &[u8],
    endian: Endian,
    interfaces: &[Interface],
    offset: u64,
) -> Result<Packet, CaptureFileError> {
    if body.len() < 20 {
        return Err(CaptureFileError::BadBlock {
            offset,
            reason: format!("packet block body is {} bytes, less than 20", body.len()),
        });
    }
    let id = if kind == PCAPNG_EPB {
        endian.u32(body, 0)
    } else {
        u32::from(endian.u16(body, 0))
    };
    let interface = interface_at(interfaces, id, offset)?;
    let ticks = (u64::from(endian.u32(body, 4)) << 32) | u64::from(endian.u32(body, 8));
    let captured = endian.u32(body, 12);
    let original_len = endian.u32(body, 16);
    if captured > MAX_PACKET_BYTES {
        return Err(CaptureFileError::PacketTooLong { offset, captured });
    }
    let data = body
        .get(20..20 + captured as usize)
        .ok_or_else(|| CaptureFileError::BadBlock {
            offset,
            reason: format!(
                "{captured} captured bytes do not fit in a block body of {}",
                body.len()
            ),
        })?;
    Ok(Packet {
        timestamp_ns: Some(interface.to_ns(ticks)),
        original_len,
        data: data.to_vec(),
        interface: id,
        link_type: interface.link_type,
    })
}

/// A Simple Packet Block: interface 0, no timestamp; the captured length is implied.
fn parse_simple_block(
    body: &[u8],
    endian: Endian,
    interfaces: &[Interface],
    offset: u64,
) -> Result<Packet, CaptureFileError> {
    if body.len() < 4 {
        return Err(CaptureFileError::BadBlock {
            offset,
            reason: "simple packet block has no length".into(),
        });
    }
    let interface = interface_at(interfaces, 0, offset)?;
    let original_len = endian.u32(body, 0);
    let mut captured = (body.len() - 4).min(original_len as usize);
    if interface.snap_len > 0 {
        captured = captured.min(interface.snap_len as usize);
    }
    Ok(Packet {
        timestamp_ns: None,
        original_len,
        data: body[4..4 + captured].to_vec(),
        interface: 0,
        link_type: interface.link_type,
    })
}

impl Packet {
    /// The packet as an Ethernet frame, as the XDP program would see it: Ethernet as is; Linux
    /// cooked (SLL, SLL2) and raw IP behind a synthesized 14-byte Ethernet header (zero MACs,
    /// the protocol as EtherType). Returns the frame and its length on the wire.
    pub fn ethernet_frame(&self) -> Result<(std::borrow::Cow<'_, [u8]>, u32), CaptureFileError> {
        let not = |reason| CaptureFileError::NotEthernet {
            interface: self.interface,
            link_type: self.link_type,
            reason,
        };
        let (header_len, ethertype) = match self.link_type {
            LinkType::ETHERNET => {
                return Ok((std::borrow::Cow::Borrowed(&self.data), self.original_len));
            }
            LinkType::LINUX_SLL => {
                let b = self
                    .data
                    .get(14..16)
                    .ok_or(not("shorter than its SLL header"))?;
                (16, [b[0], b[1]])
            }
            LinkType::LINUX_SLL2 => {
                let b = self
                    .data
                    .get(0..2)
                    .ok_or(not("shorter than its SLL2 header"))?;
                if self.data.len() < 20 {
                    return Err(not("shorter than its SLL2 header"));
                }
                (20, [b[0], b[1]])
            }
            LinkType::RAW | LinkType::IPV4 | LinkType::IPV6 => {
                let version = self.data.first().ok_or(not("empty raw IP packet"))? >> 4;
                match version {
                    4 => (0, [0x08, 0x00]),
                    6 => (0, [0x86, 0xdd]),
                    _ => return Err(not("raw packet is neither IPv4 nor IPv6")),
                }
            }
            _ => return Err(not("unsupported link type")),
        };
        let mut frame = Vec::with_capacity(14 + self.data.len() - header_len);
        frame.extend_from_slice(&[0; 12]);
        frame.extend_from_slice(&ethertype);
        frame.extend_from_slice(&self.data[header_len..]);
        let wire_len = self
            .original_len
            .saturating_sub(header_len as u32)
            .saturating_add(14);
        Ok((std::borrow::Cow::Owned(frame), wire_len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME_A: &[u8] = b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x08\x00hello";
    const FRAME_B: &[u8] = b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x86\xddworld!!";

    fn put16(out: &mut Vec<u8>, big: bool, v: u16) {
        out.extend_from_slice(&if big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        });
    }

    fn put32(out: &mut Vec<u8>, big: bool, v: u32) {
        out.extend_from_slice(&if big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        });
    }

    fn pcap_file(big: bool, magic: u32, link: u32, records: &[(u32, u32, &[u8], u32)]) -> Vec<u8> {
        let mut f = Vec::new();
        put32(&mut f, big, magic);
        put16(&mut f, big, 2);
        put16(&mut f, big, 4);
        put32(&mut f, big, 0);
        put32(&mut f, big, 0);
        put32(&mut f, big, 65535);
        put32(&mut f, big, link);
        for (sec, frac, data, orig) in records {
            put32(&mut f, big, *sec);
            put32(&mut f, big, *frac);
            put32(&mut f, big, data.len() as u32);
            put32(&mut f, big, *orig);
            f.extend_from_slice(data);
        }
        f
    }

    fn block(big: bool, kind: u32, body: &[u8]) -> Vec<u8> {
        let mut padded = body.to_vec();
        padded.resize(body.len().div_ceil(4) * 4, 0);
        let total = 12 + padded.len() as u32;
        let mut b = Vec::new();
        put32(&mut b, big, kind);
        put32(&mut b, big, total);
        b.extend_from_slice(&padded);
        put32(&mut b, big, total);
        b
    }

    fn shb(big: bool) -> Vec<u8> {
        let mut body = Vec::new();
        put32(&mut body, big, PCAPNG_BYTE_ORDER_MAGIC);
        put16(&mut body, big, 1);
        put16(&mut body, big, 0);
        body.extend_from_slice(&[0xff; 8]);
        block(big, PCAPNG_SHB, &body)
    }

    fn idb(big: bool, link: u16, tsresol: Option<u8>) -> Vec<u8> {
        let mut body = Vec::new();
        put16(&mut body, big, link);
        put16(&mut body, big, 0);
        put32(&mut body, big, 0);
        if let Some(res) = tsresol {
            put16(&mut body, big, IDB_OPTION_TSRESOL);
            put16(&mut body, big, 1);
            body.extend_from_slice(&[res, 0, 0, 0]);
            put16(&mut body, big, OPTION_END);
            put16(&mut body, big, 0);
        }
        block(big, PCAPNG_IDB, &body)
    }

    fn epb(big: bool, interface: u32, ticks: u64, data: &[u8], orig: u32) -> Vec<u8> {
        let mut body = Vec::new();
        put32(&mut body, big, interface);
        put32(&mut body, big, (ticks >> 32) as u32);
        put32(&mut body, big, ticks as u32);
        put32(&mut body, big, data.len() as u32);
        put32(&mut body, big, orig);
        body.extend_from_slice(data);
        block(big, PCAPNG_EPB, &body)
    }

    fn spb(big: bool, data: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        put32(&mut body, big, data.len() as u32);
        body.extend_from_slice(data);
        block(big, PCAPNG_SPB, &body)
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<Packet>, CaptureFileError> {
        CaptureReader::new(bytes)?.collect()
    }

    #[test]
    fn pcap_little_endian_microseconds() {
        let file = pcap_file(
            false,
            PCAP_MAGIC_MICROS,
            1,
            &[(10, 250_000, FRAME_A, 60), (11, 1, FRAME_B, 21)],
        );
        let reader = CaptureReader::new(&file[..]).unwrap();
        assert_eq!(reader.format(), CaptureFormat::Pcap);
        let packets: Vec<Packet> = reader.collect::<Result<_, _>>().unwrap();
        assert_eq!(packets.len(), 2);
        assert_eq!(packets[0].timestamp_ns, Some(10_250_000_000));
        assert_eq!(packets[0].original_len, 60);
        assert_eq!(packets[0].data, FRAME_A);
        assert_eq!(packets[0].link_type, LinkType::ETHERNET);
        assert_eq!(packets[1].timestamp_ns, Some(11_000_001_000));
        assert_eq!(packets[1].interface, 0);
    }

    #[test]
    fn pcap_big_endian_nanoseconds() {
        let file = pcap_file(true, PCAP_MAGIC_NANOS, 113, &[(3, 7, FRAME_A, 19)]);
        let packets = read_all(&file).unwrap();
        assert_eq!(packets[0].timestamp_ns, Some(3_000_000_007));
        assert_eq!(packets[0].link_type, LinkType::LINUX_SLL);
        assert_eq!(packets[0].data, FRAME_A);
    }

    #[test]
    fn pcapng_interfaces_resolutions_and_block_kinds() {
        let mut file = shb(false);
        file.extend(idb(false, 1, None));
        file.extend(idb(false, 1, Some(9)));
        file.extend(idb(false, 1, Some(0x80 | 10)));
        // A name resolution block: skipped.
        file.extend(block(false, 4, &[0, 0, 0, 0]));
        file.extend(epb(false, 0, 5_000_001, FRAME_A, 100));
        file.extend(epb(false, 1, 5_000_000_001, FRAME_B, FRAME_B.len() as u32));
        file.extend(epb(false, 2, 3 * 1024 + 512, FRAME_A, FRAME_A.len() as u32));
        file.extend(spb(false, FRAME_B));
        let reader = CaptureReader::new(&file[..]).unwrap();
        assert_eq!(reader.format(), CaptureFormat::PcapNg);
        let packets: Vec<Packet> = reader.collect::<Result<_, _>>().unwrap();
        assert_eq!(packets.len(), 4);
        assert_eq!(packets[0].timestamp_ns, Some(5_000_001_000));
        assert_eq!(packets[0].original_len, 100);
        assert_eq!(packets[0].data, FRAME_A);
        assert_eq!(packets[1].timestamp_ns, Some(5_000_000_001));
        assert_eq!(packets[1].interface, 1);
        assert_eq!(packets[1].data, FRAME_B);
        assert_eq!(packets[2].timestamp_ns, Some(3_500_000_000));
        assert_eq!(packets[2].interface, 2);
        assert_eq!(packets[3].timestamp_ns, None);
        assert_eq!(packets[3].data, FRAME_B);
    }

    #[test]
    fn pcapng_sections_change_byte_order_and_reset_interfaces() {
        let mut file = shb(false);
        file.extend(idb(false, 1, None));
        file.extend(idb(false, 1, None));
        file.extend(epb(false, 1, 1, FRAME_A, 19));
        file.extend(shb(true));
        file.extend(idb(true, 113, Some(9)));
        file.extend(epb(true, 0, 42, FRAME_B, 21));
        let packets = read_all(&file).unwrap();
        assert_eq!(packets.len(), 2);
        assert_eq!(packets[1].link_type, LinkType::LINUX_SLL);
        assert_eq!(packets[1].timestamp_ns, Some(42));

        // Interface 1 of the first section does not exist in the second.
        let mut file = shb(false);
        file.extend(idb(false, 1, None));
        file.extend(idb(false, 1, None));
        file.extend(shb(false));
        file.extend(idb(false, 1, None));
        let second_epb_at = file.len() as u64;
        file.extend(epb(false, 1, 1, FRAME_A, 19));
        match read_all(&file) {
            Err(CaptureFileError::UnknownInterface {
                offset,
                interface: 1,
                known: 1,
            }) => assert_eq!(offset, second_epb_at),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn rejects_unknown_magic_and_short_headers() {
        assert!(matches!(
            read_all(b"GIF89a--------------------------"),
            Err(CaptureFileError::UnknownFormat { .. })
        ));
        assert!(matches!(
            read_all(b""),
            Err(CaptureFileError::Truncated { .. })
        ));
        let file = pcap_file(false, PCAP_MAGIC_MICROS, 1, &[]);
        assert!(matches!(
            read_all(&file[..10]),
            Err(CaptureFileError::Truncated { offset: 4, .. })
        ));
        assert_eq!(read_all(&file).unwrap().len(), 0);
    }

    #[test]
    fn truncated_pcap_records_name_their_offset() {
        let file = pcap_file(
            false,
            PCAP_MAGIC_MICROS,
            1,
            &[(1, 0, FRAME_A, 19), (2, 0, FRAME_B, 21)],
        );
        let second = 24 + 16 + FRAME_A.len();
        // Cut inside the second record header, then inside its data.
        for cut in [second + 5, second + 16 + 3] {
            let results: Vec<_> = CaptureReader::new(&file[..cut]).unwrap().collect();
            assert_eq!(results.len(), 2, "cut at {cut}");
            assert!(results[0].is_ok());
            match &results[1] {
                Err(CaptureFileError::Truncated { offset, .. }) => {
                    assert!(*offset as usize >= second, "cut at {cut}: offset {offset}")
                }
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
    }

    #[test]
    fn hostile_lengths_are_errors_not_allocations() {
        let mut file = pcap_file(false, PCAP_MAGIC_MICROS, 1, &[(1, 0, FRAME_A, 19)]);
        file[24 + 8..24 + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            read_all(&file),
            Err(CaptureFileError::PacketTooLong {
                offset: 24,
                captured: u32::MAX
            })
        ));

        let mut file = shb(false);
        file.extend(idb(false, 1, None));
        let at = file.len();
        let mut bad = epb(false, 0, 1, FRAME_A, 19);
        bad[4..8].copy_from_slice(&0x7fff_fff0u32.to_le_bytes());
        file.extend(bad);
        match read_all(&file) {
            Err(CaptureFileError::BadBlock { offset, reason }) => {
                assert_eq!(offset, at as u64);
                assert!(reason.contains("more than"), "{reason}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn bad_pcapng_blocks() {
        let base = {
            let mut f = shb(false);
            f.extend(idb(false, 1, None));
            f
        };
        let at = base.len() as u64;
        let expect_bad = |file: Vec<u8>, needle: &str| match read_all(&file) {
            Err(CaptureFileError::BadBlock { offset, reason }) => {
                assert_eq!(offset, at, "{reason}");
                assert!(reason.contains(needle), "{reason} lacks {needle}");
            }
            other => panic!("expected a bad block ({needle}), got {other:?}"),
        };

        let mut f = base.clone();
        let mut b = epb(false, 0, 1, FRAME_A, 19);
        let n = b.len();
        b[n - 4..].copy_from_slice(&0u32.to_le_bytes());
        f.extend(b);
        expect_bad(f, "trailing length");

        let mut f = base.clone();
        let mut b = epb(false, 0, 1, FRAME_A, 19);
        b[4..8].copy_from_slice(&13u32.to_le_bytes());
        f.extend(b);
        expect_bad(f, "multiple of 4");

        let mut f = base.clone();
        let mut b = epb(false, 0, 1, FRAME_A, 19);
        // Captured length larger than the block holds.
        b[8 + 12..8 + 16].copy_from_slice(&200u32.to_le_bytes());
        f.extend(b);
        expect_bad(f, "do not fit");

        let mut f = base.clone();
        f.extend(block(false, PCAPNG_EPB, &[0; 8]));
        expect_bad(f, "less than 20");

        // An option whose length runs past its block.
        let mut f = shb(false);
        let at_idb = f.len() as u64;
        let mut body = vec![1, 0, 0, 0, 0, 0, 0, 0];
        body.extend_from_slice(&[9, 0, 200, 0, 6, 0, 0, 0]);
        f.extend(block(false, PCAPNG_IDB, &body));
        match read_all(&f) {
            Err(CaptureFileError::BadBlock { offset, reason }) => {
                assert_eq!(offset, at_idb);
                assert!(reason.contains("runs past"), "{reason}");
            }
            other => panic!("unexpected {other:?}"),
        }

        // A section header with a broken byte-order magic.
        let mut f = shb(false);
        f[8..12].copy_from_slice(b"ABCD");
        assert!(matches!(
            read_all(&f),
            Err(CaptureFileError::BadBlock { offset: 0, .. })
        ));

        // A packet before any interface.
        let mut f = shb(false);
        f.extend(epb(false, 0, 1, FRAME_A, 19));
        assert!(matches!(
            read_all(&f),
            Err(CaptureFileError::UnknownInterface { .. })
        ));
    }

    /// Every prefix and thousands of byte mutations of a valid file: errors, never panics, and
    /// the iterator always ends.
    #[test]
    fn never_panics_on_damaged_files() {
        let mut pcapng = shb(false);
        pcapng.extend(idb(false, 1, Some(9)));
        pcapng.extend(epb(false, 0, 7, FRAME_A, 19));
        pcapng.extend(spb(false, FRAME_B));
        let pcap = pcap_file(
            true,
            PCAP_MAGIC_NANOS,
            1,
            &[(1, 2, FRAME_A, 19), (3, 4, FRAME_B, 2)],
        );
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut random = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for file in [&pcapng, &pcap] {
            for cut in 0..file.len() {
                if let Ok(reader) = CaptureReader::new(&file[..cut]) {
                    assert!(reader.take(100).count() < 100);
                }
            }
            for _ in 0..5000 {
                let mut damaged = file.clone();
                for _ in 0..1 + random() % 4 {
                    let at = (random() % damaged.len() as u64) as usize;
                    damaged[at] = random() as u8;
                }
                if let Ok(reader) = CaptureReader::new(&damaged[..]) {
                    assert!(reader.take(100).count() < 100);
                }
            }
        }
    }

    /// Every packet through `read_packet` into one reused buffer, as the text of each result.
    fn read_all_reusing(file: &[u8]) -> Vec<String> {
        let Ok(mut reader) = CaptureReader::new(file) else {
            return vec!["bad header".to_string()];
        };
        let mut packet = Packet {
            timestamp_ns: None,
            original_len: 0,
            data: Vec::new(),
            interface: 0,
            link_type: LinkType::ETHERNET,
        };
        let mut out = Vec::new();
        loop {
            match reader.read_packet(&mut packet) {
                Ok(true) => out.push(format!("{packet:?}")),
                Ok(false) => break,
                Err(e) => {
                    out.push(e.to_string());
                    break;
                }
            }
        }
        out
    }

    fn read_all_iterating(file: &[u8]) -> Vec<String> {
        let Ok(reader) = CaptureReader::new(file) else {
            return vec!["bad header".to_string()];
        };
        reader
            .map(|r| match r {
                Ok(p) => format!("{p:?}"),
                Err(e) => e.to_string(),
            })
            .collect()
    }

    #[test]
    fn reading_into_a_reused_buffer_reads_the_same() {
        let pcap = pcap_file(
            true,
            PCAP_MAGIC_NANOS,
            1,
            &[(1, 2, FRAME_A, 19), (3, 4, FRAME_B, 2), (5, 6, b"", 0)],
        );
        let mut pcapng = shb(false);
        pcapng.extend(idb(false, 1, Some(9)));
        pcapng.extend(epb(false, 0, 7, FRAME_A, 19));
        pcapng.extend(spb(false, FRAME_B));
        for file in [&pcap, &pcapng] {
            for cut in 0..=file.len() {
                assert_eq!(
                    read_all_reusing(&file[..cut]),
                    read_all_iterating(&file[..cut]),
                    "cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn cooked_and_raw_captures_become_ethernet_frames() {
        let ip = b"\x45\x00\x00\x14rest-of-ip".to_vec();
        let mut sll = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 2, 0, 0, 0x08, 0x00];
        sll.extend_from_slice(&ip);
        let packet = Packet {
            timestamp_ns: Some(1),
            original_len: sll.len() as u32,
            data: sll,
            interface: 0,
            link_type: LinkType::LINUX_SLL,
        };
        let (frame, wire_len) = packet.ethernet_frame().unwrap();
        assert_eq!(&frame[12..14], &[0x08, 0x00]);
        assert_eq!(&frame[14..], &ip[..]);
        assert_eq!(wire_len as usize, frame.len());

        let mut sll2 = vec![
            0x86, 0xdd, 0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 2, 0, 0, 0, 0, 2, 0, 0,
        ];
        sll2.extend_from_slice(b"\x60ipv6");
        let packet = Packet {
            data: sll2,
            link_type: LinkType::LINUX_SLL2,
            ..packet
        };
        let (frame, _) = packet.ethernet_frame().unwrap();
        assert_eq!(&frame[12..], b"\x86\xdd\x60ipv6");

        let packet = Packet {
            data: ip.clone(),
            link_type: LinkType::RAW,
            ..packet
        };
        assert_eq!(&packet.ethernet_frame().unwrap().0[12..14], &[0x08, 0x00]);

        let packet = Packet {
            data: vec![1, 2],
            link_type: LinkType::LINUX_SLL,
            ..packet
        };
        assert!(matches!(
            packet.ethernet_frame(),
            Err(CaptureFileError::NotEthernet { .. })
        ));
        let packet = Packet {
            link_type: LinkType(105),
            ..packet
        };
        assert!(matches!(
            packet.ethernet_frame(),
            Err(CaptureFileError::NotEthernet { .. })
        ));
    }

    #[test]
    fn reads_the_corpus_captures_alike_in_both_formats() {
        let corpus = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/corpus");
        let pcap = format!("{corpus}/sipsak.pcap");
        let pcapng = format!("{corpus}/sipsak.pcapng");
        if !Path::new(&pcapng).exists() {
            return;
        }
        let a: Vec<Packet> = CaptureReader::open(&pcap)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let b: Vec<Packet> = CaptureReader::open(&pcapng)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(!a.is_empty());
        assert_eq!(a, b);
    }
}
