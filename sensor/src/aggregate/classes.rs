//! Small closed sets the aggregator counts by: SIP methods, IP-ID classes, TTL families, host
//! classes. Each maps the string the event document carries to a small index, so per-source
//! state holds bitmasks and bytes instead of strings, and documents from any source (the live
//! pipeline, an NDJSON file, a Kafka topic) land in the same bins. Unknown strings fall into an
//! explicit `other` bin rather than being dropped.

/// SIP request methods with a bit each in a source's method mask; the last two bits are
/// `other` (a non-standard method) and `none` (no request line: a response, an empty or non-SIP
/// payload).
pub const METHODS: [&str; 16] = [
    "OPTIONS",
    "INVITE",
    "REGISTER",
    "ACK",
    "BYE",
    "CANCEL",
    "SUBSCRIBE",
    "NOTIFY",
    "MESSAGE",
    "INFO",
    "PRACK",
    "UPDATE",
    "REFER",
    "PUBLISH",
    "other",
    "none",
];
const METHOD_OTHER: usize = 14;
const METHOD_NONE: usize = 15;

pub fn method_index(method: Option<&str>) -> usize {
    match method {
        None => METHOD_NONE,
        Some(m) => METHODS[..METHOD_OTHER]
            .iter()
            .position(|known| *known == m)
            .unwrap_or(METHOD_OTHER),
    }
}

/// What one IPv4 packet's ID was (`fingerprint.inferences.ip_id.packet`, with DF).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum PacketIdClass {
    /// ID 0 with DF: the classic unconnected-UDP Linux signature (older kernels).
    ZeroDf = 0,
    /// ID 0 without DF.
    Zero,
    /// 54321 without DF: zmap before 4.1.
    Fixed54321,
    /// masscan's derived TCP ID.
    MasscanDerived,
    NonZero,
    /// IPv6 (no ID) or no IP-ID inference in the document.
    NotApplicable,
}

impl PacketIdClass {
    pub const COUNT: usize = 6;
    pub const NAMES: [&'static str; Self::COUNT] = [
        "zero_df",
        "zero",
        "fixed_54321",
        "masscan_derived",
        "non_zero",
        "not_applicable",
    ];

    /// From the document's `packet` string and `df`; `None` (IPv6, or no inference): not
    /// applicable.
    pub fn of(packet: Option<&str>, df: bool) -> Self {
        match packet {
            Some("zero") if df => Self::ZeroDf,
            Some("zero") => Self::Zero,
            Some("fixed_54321") => Self::Fixed54321,
            Some("masscan_derived") => Self::MasscanDerived,
            Some(_) => Self::NonZero,
            None => Self::NotApplicable,
        }
    }

    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    pub fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// What a source's IDs say over all its packets, as the aggregator counts sources. The first
/// classes come from the source's own counters (exact, whatever the number of packets); the
/// sequence behaviours come from the fingerprint engine's per-source view
/// (`fingerprint.inferences.ip_id.source.behaviour`), which needs three packets or more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum SourceIdClass {
    /// Every IPv4 packet had ID 0 and DF.
    ZeroDf = 0,
    /// Every IPv4 packet had ID 0, at least one without DF.
    Zero,
    Fixed54321,
    MasscanDerived,
    Constant,
    Incrementing,
    IncrementingShared,
    Random,
    /// Non-zero IDs, too few packets (or no engine view) to say more.
    NonZero,
    /// IPv6 only.
    NotApplicable,
}

impl SourceIdClass {
    pub const COUNT: usize = 10;
    pub const NAMES: [&'static str; Self::COUNT] = [
        "zero_df",
        "zero",
        "fixed_54321",
        "masscan_derived",
        "constant",
        "incrementing",
        "incrementing_shared",
        "random",
        "non_zero",
        "not_applicable",
    ];

    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    pub fn from_index(i: u8) -> Self {
        match i {
            0 => Self::ZeroDf,
            1 => Self::Zero,
            2 => Self::Fixed54321,
            3 => Self::MasscanDerived,
            4 => Self::Constant,
            5 => Self::Incrementing,
            6 => Self::IncrementingShared,
            7 => Self::Random,
            8 => Self::NonZero,
            _ => Self::NotApplicable,
        }
    }
}

/// The static name of a packet IP-ID class read from a document: the names
/// [`PacketIdClass::of`] tells apart, and `non_zero` for any other, which it reads so too.
pub fn packet_id_name(packet: &str) -> &'static str {
    match packet {
        "zero" => "zero",
        "fixed_54321" => "fixed_54321",
        "masscan_derived" => "masscan_derived",
        _ => "non_zero",
    }
}

/// The static name of a per-source behaviour read from a document, `None` for a name this
/// version does not write ([`behaviour_code`] reads those as none reported).
pub fn behaviour_name(behaviour: &str) -> Option<&'static str> {
    BEHAVIOURS.into_iter().find(|b| *b == behaviour)
}

/// The behaviours the engine writes (`IpIdBehaviour::as_str`).
const BEHAVIOURS: [&str; 6] = [
    "insufficient",
    "zero",
    "constant",
    "incrementing",
    "incrementing_shared",
    "random",
];

/// The engine's per-source sequence behaviour, as a byte (0: none reported).
pub fn behaviour_code(behaviour: Option<&str>) -> u8 {
    match behaviour {
        Some("zero") => 1,
        Some("constant") => 2,
        Some("incrementing") => 3,
        Some("incrementing_shared") => 4,
        Some("random") => 5,
        // `insufficient`, absent, or a name this version does not know.
        _ => 0,
    }
}

/// A source's class from its counters, the packet classes it showed and the engine's behaviour.
pub fn source_id_class(
    v4_packets: u32,
    zero_df_packets: u32,
    zero_packets: u32,
    packet_classes: u8,
    behaviour: u8,
) -> SourceIdClass {
    if v4_packets == 0 {
        return SourceIdClass::NotApplicable;
    }
    if zero_df_packets == v4_packets {
        return SourceIdClass::ZeroDf;
    }
    if zero_packets == v4_packets {
        return SourceIdClass::Zero;
    }
    let only = |c: PacketIdClass| packet_classes & !PacketIdClass::NotApplicable.bit() == c.bit();
    if only(PacketIdClass::Fixed54321) {
        return SourceIdClass::Fixed54321;
    }
    if only(PacketIdClass::MasscanDerived) {
        return SourceIdClass::MasscanDerived;
    }
    match behaviour {
        2 => SourceIdClass::Constant,
        3 => SourceIdClass::Incrementing,
        4 => SourceIdClass::IncrementingShared,
        5 => SourceIdClass::Random,
        _ => SourceIdClass::NonZero,
    }
}

/// Initial TTL families (`fingerprint.inferences.ttl.initial`), and `mixed` for a source whose
/// packets came from more than one.
pub const TTL_FAMILIES: [&str; 6] = ["32", "64", "128", "255", "mixed", "unknown"];
pub const TTL_MIXED: u8 = 4;
pub const TTL_UNKNOWN: u8 = 5;

/// The family index of an initial TTL; the family is recomputed from the raw TTL when the
/// document carries no inference, with the engine's own boundaries.
pub fn ttl_family(initial: Option<u8>, ttl: Option<u8>) -> u8 {
    let initial = initial.or_else(|| {
        ttl.map(|t| match t {
            0..=32 => 32,
            33..=64 => 64,
            65..=128 => 128,
            _ => 255,
        })
    });
    match initial {
        Some(32) => 0,
        Some(64) => 1,
        Some(128) => 2,
        Some(255) => 3,
        _ => TTL_UNKNOWN,
    }
}

/// A source's TTL class from the mask of families its packets showed.
pub fn ttl_class(families: u8) -> u8 {
    match families.count_ones() {
        0 => TTL_UNKNOWN,
        1 => families.trailing_zeros() as u8,
        _ => TTL_MIXED,
    }
}

/// Classes of the host a tool wrote in Via or Contact (`fingerprint.inferences.via_host.class`),
/// the names `fingerprint::infer::HostClass::as_str` gives, and `other`.
pub const HOST_CLASSES: [&str; 14] = [
    "loopback_unresolved",
    "debian_hosts_file",
    "loopback",
    "docker_bridge",
    "private_nat",
    "shared_cgnat",
    "link_local",
    "unspecified",
    "same_as_source",
    "public_other_than_source",
    "tool_constant",
    "hostname",
    "empty",
    "other",
];

pub fn host_class_index(class: &str) -> usize {
    HOST_CLASSES
        .iter()
        .position(|c| *c == class)
        .unwrap_or(HOST_CLASSES.len() - 1)
}

/// Transports, by the document's `proto`.
pub const PROTOCOLS: [&str; 3] = ["UDP", "TCP", "other"];

pub fn protocol_index(proto: &str) -> usize {
    match proto {
        "udp" | "UDP" => 0,
        "tcp" | "TCP" => 1,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fingerprint::infer::{HostClass, classify_host};

    #[test]
    fn every_engine_host_class_has_its_own_bin() {
        for class in HostClass::ALL {
            let i = host_class_index(class.as_str());
            assert_ne!(
                i,
                HOST_CLASSES.len() - 1,
                "{} falls in other",
                class.as_str()
            );
        }
        assert_eq!(HostClass::ALL.len(), HOST_CLASSES.len() - 1);
        let c = classify_host(b"127.0.0.1", None, &[]);
        assert_eq!(
            HOST_CLASSES[host_class_index(c.as_str())],
            "loopback_unresolved"
        );
    }

    /// A document's IP-ID names become static names that the aggregator reads as it reads the
    /// document's own: every name the engine writes, and names it does not know.
    #[test]
    fn ip_id_names_from_documents_read_as_the_documents_do() {
        use crate::fingerprint::ipid::{IpIdBehaviour, PacketIpId};
        let packets = [
            PacketIpId::Zero,
            PacketIpId::Zmap,
            PacketIpId::MasscanDerived,
            PacketIpId::NonZero,
            PacketIpId::NotApplicable,
        ];
        let names = packets.map(PacketIpId::as_str);
        for packet in names.into_iter().chain(["", "zero_df", "ZERO", "other"]) {
            for df in [false, true] {
                assert_eq!(
                    PacketIdClass::of(Some(packet_id_name(packet)), df),
                    PacketIdClass::of(Some(packet), df),
                    "{packet}"
                );
            }
        }
        let behaviours = [
            IpIdBehaviour::Insufficient,
            IpIdBehaviour::Zero,
            IpIdBehaviour::Constant(7),
            IpIdBehaviour::Incrementing {
                step: 1,
                strict: true,
            },
            IpIdBehaviour::Incrementing {
                step: 1,
                strict: false,
            },
            IpIdBehaviour::Random,
        ];
        let names = behaviours.map(IpIdBehaviour::as_str);
        for behaviour in names.into_iter().chain(["", "Random", "other"]) {
            assert_eq!(
                behaviour_code(behaviour_name(behaviour)),
                behaviour_code(Some(behaviour)),
                "{behaviour}"
            );
        }
        // Every name the engine writes is kept.
        for name in names {
            assert_eq!(behaviour_name(name), Some(name));
        }
        assert_eq!(BEHAVIOURS.len(), names.len());
    }

    #[test]
    fn methods_map_to_bits() {
        assert_eq!(METHODS[method_index(Some("OPTIONS"))], "OPTIONS");
        assert_eq!(METHODS[method_index(Some("PUBLISH"))], "PUBLISH");
        assert_eq!(METHODS[method_index(Some("SCAN"))], "other");
        assert_eq!(METHODS[method_index(Some("other"))], "other");
        assert_eq!(METHODS[method_index(None)], "none");
    }

    #[test]
    fn source_classes() {
        let zdf = PacketIdClass::ZeroDf.bit();
        let nz = PacketIdClass::NonZero.bit();
        assert_eq!(source_id_class(0, 0, 0, 0, 0), SourceIdClass::NotApplicable);
        assert_eq!(source_id_class(1, 1, 1, zdf, 0), SourceIdClass::ZeroDf);
        assert_eq!(
            source_id_class(3, 2, 3, zdf | PacketIdClass::Zero.bit(), 1),
            SourceIdClass::Zero
        );
        assert_eq!(source_id_class(1, 0, 0, nz, 0), SourceIdClass::NonZero);
        assert_eq!(
            source_id_class(5, 1, 1, nz | zdf, 3),
            SourceIdClass::Incrementing
        );
        assert_eq!(
            source_id_class(4, 0, 0, PacketIdClass::Fixed54321.bit(), 2),
            SourceIdClass::Fixed54321
        );
        for i in 0..SourceIdClass::COUNT as u8 {
            assert_eq!(SourceIdClass::from_index(i) as u8, i);
        }
    }

    #[test]
    fn ttl_families_and_classes() {
        assert_eq!(TTL_FAMILIES[ttl_family(Some(64), Some(50)) as usize], "64");
        assert_eq!(TTL_FAMILIES[ttl_family(None, Some(113)) as usize], "128");
        assert_eq!(TTL_FAMILIES[ttl_family(None, None) as usize], "unknown");
        assert_eq!(TTL_FAMILIES[ttl_class(0b0010) as usize], "64");
        assert_eq!(TTL_FAMILIES[ttl_class(0b0110) as usize], "mixed");
        assert_eq!(TTL_FAMILIES[ttl_class(0) as usize], "unknown");
    }
}
