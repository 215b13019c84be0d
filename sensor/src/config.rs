//! The configuration file (`--config FILE`, TOML): everything the flags of `sensor run` and
//! `sensor analyze` set, one section per concern. Flags given on the command line override the
//! file key by key; unknown keys are errors, so that a typo never silently falls back to a
//! default. docs/config.md documents every key; docs/sensor.example.toml is a complete file.
//!
//! The command line is parsed into the same shape ([`ConfigFile`]) and laid over the file with
//! [`ConfigFile::overlay`]; [`ConfigFile::run_options`] then applies the defaults and checks the
//! values together. On reload (SIGHUP, or `reload` on the control socket) the file is read again
//! and the same flags laid over it, so a key given as a flag keeps the flag's value.
//!
//! Sections other engines own are added beside these (the Kafka output's `[kafka]`, the sensor
//! identity's `[sensor]`): each is an optional table of its own.

use std::{
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use sensor_common::{
    DEFAULT_PREFIX_LEN, DEFAULT_RING_BYTES, MatchAction, PAYLOAD_CAPACITY, ReactivePolicy,
};
use serde::{Deserialize, Deserializer, de};

use crate::{
    agent::RunOptions,
    capture::{AttachMode, PortSet},
    identity::{Prefix, SensorIdentity, hostname},
    output::kafka::KafkaConfig,
    output::{Destination, OutputOptions, Rotation, event::EventDetail, pcapng::InterfaceNames},
    pipeline::PipelineOptions,
    rogue::TrackerConfig,
    sampling::SamplingConfig,
};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {reason}")]
    Read {
        path: PathBuf,
        reason: std::io::Error,
    },
    /// Syntax, unknown keys, values of the wrong type or out of their form (the message shows
    /// the line and the key).
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// A value that parses but cannot be used, or keys that do not go together.
    #[error("{origin}: {key}: {message}")]
    Invalid {
        origin: String,
        key: &'static str,
        message: String,
    },
}

/// The whole file. Every key is optional; [`ConfigFile::run_options`] supplies the defaults.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub capture: CaptureSection,
    #[serde(default)]
    pub reactive: ReactiveSection,
    #[serde(default)]
    pub rogue: RogueSection,
    #[serde(default)]
    pub fingerprint: FingerprintSection,
    #[serde(default)]
    pub ndjson: NdjsonSection,
    #[serde(default)]
    pub pcapng: PcapngSection,
    #[serde(default)]
    pub rotation: RotationSection,
    #[serde(default)]
    pub metrics: MetricsSection,
    #[serde(default)]
    pub control: ControlSection,
    #[serde(default)]
    pub events: EventsSection,
    /// `[sensor]`: the identity every event carries.
    #[serde(default)]
    pub sensor: SensorSection,
    /// `[kafka]`: the Kafka output (docs/kafka.md); from the file only.
    pub kafka: Option<KafkaConfig>,
}

/// `[sensor]`: who this sensor is, for central consumers merging many of them.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SensorSection {
    /// Default: the host name.
    pub name: Option<String>,
    /// The darknet prefixes this sensor watches, carried in every event.
    pub prefixes: Option<Vec<Prefix>>,
}

/// `[capture]`: the interface, what the kernel program matches, and what it does with it.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureSection {
    pub interface: Option<String>,
    #[serde(default, deserialize_with = "from_str_value")]
    pub xdp_mode: Option<AttachMode>,
    /// `"5060,5061"`, `"5060-5070"`, or a list: `[5060, "6000-6010"]`. Reloadable.
    #[serde(default, deserialize_with = "ports_value")]
    pub ports: Option<PortSet>,
    /// Reloadable.
    pub match_source_port: Option<bool>,
    /// Reloadable.
    pub action: Option<Action>,
    /// Reloadable.
    pub prefix_len: Option<u16>,
    #[serde(default, deserialize_with = "size_value")]
    pub ring_bytes: Option<u64>,
    /// Reloadable.
    pub wakeup_bytes: Option<u32>,
    /// Reloadable.
    pub source_rate: Option<u32>,
    /// Reloadable.
    pub source_burst: Option<u32>,
    /// Stop after this many events (tests, demonstrations).
    pub count: Option<u64>,
}

/// What the kernel does with matched frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Drop,
    Pass,
}

impl From<Action> for MatchAction {
    fn from(a: Action) -> Self {
        match a {
            Action::Drop => MatchAction::Drop,
            Action::Pass => MatchAction::Pass,
        }
    }
}

/// `[reactive]`: the TCP responder. Reloadable.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReactiveSection {
    pub mode: Option<ReactiveMode>,
    /// `["203.0.113.0/24", "2001:db8:dead::/48"]` (or one comma-separated string).
    #[serde(default, deserialize_with = "prefixes_value")]
    pub prefixes: Option<Vec<Prefix>>,
    pub synack_rate: Option<u32>,
    pub synack_burst: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReactiveMode {
    Off,
    Silent,
    Reset,
}

impl From<ReactiveMode> for ReactivePolicy {
    fn from(m: ReactiveMode) -> Self {
        match m {
            ReactiveMode::Off => ReactivePolicy::Off,
            ReactiveMode::Silent => ReactivePolicy::Silent,
            ReactiveMode::Reset => ReactivePolicy::Reset,
        }
    }
}

/// `[rogue]`: passive rogue-server detection.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RogueSection {
    pub detect: Option<bool>,
    pub timeout_ms: Option<u64>,
    pub max_servers: Option<u64>,
}

/// The most analyst threads `[fingerprint] threads` and `--threads` take.
pub const MAX_THREADS: u16 = 64;

/// `[fingerprint]`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FingerprintSection {
    /// A rule file loaded beside the built-in rules.
    pub rules: Option<PathBuf>,
    /// Threads analysing records, 1 to 64 (default 1).
    pub threads: Option<u16>,
}

/// `[ndjson]`: events as JSON lines.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NdjsonSection {
    /// Default true.
    pub enabled: Option<bool>,
    /// A file, or `-` for stdout (the default).
    pub path: Option<String>,
}

/// `[pcapng]`: the records as packets.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PcapngSection {
    /// Default: true when a path is given.
    pub enabled: Option<bool>,
    /// A file, or `-` for stdout.
    pub path: Option<String>,
}

/// `[rotation]`: for every file output.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotationSection {
    /// `"100MiB"`, `"1GB"`, or bytes.
    #[serde(default, deserialize_with = "size_value")]
    pub size: Option<u64>,
    /// `"1h"`, `"15m"`, `"30s"`, `"1d"`, or seconds.
    #[serde(default, deserialize_with = "interval_value")]
    pub interval: Option<Duration>,
}

/// `[metrics]`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// Serve `GET /metrics` here (`sensor run`).
    pub listen: Option<SocketAddr>,
    /// Write the exposition to this file at the end (`sensor analyze`; node_exporter's textfile
    /// collector reads such files).
    pub file: Option<PathBuf>,
}

/// `[control]`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlSection {
    /// Unix socket taking `ports`, `action`, `reload`, ... (mode 0600).
    pub socket: Option<PathBuf>,
}

/// `[events]`: how much each `sip_probe` event carries, and how many are written.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsSection {
    /// `lean`, `compact` (the default) or `full` (`--event-detail`).
    pub detail: Option<EventDetail>,
    /// Events written per source and template in every campaign window
    /// (`--events-per-template`); default: every event.
    pub per_template: Option<u32>,
}

/// Builds `overlay`: each key of `top` that is set replaces the one below.
macro_rules! overlay {
    ($t:ty { $($field:ident),* $(,)? }) => {
        impl $t {
            /// These values, each replaced by `top`'s where `top` sets it.
            pub fn overlay(&self, top: &Self) -> Self {
                Self { $($field: top.$field.clone().or_else(|| self.$field.clone()),)* }
            }
        }
    };
}

overlay!(SensorSection { name, prefixes });

overlay!(CaptureSection {
    interface,
    xdp_mode,
    ports,
    match_source_port,
    action,
    prefix_len,
    ring_bytes,
    wakeup_bytes,
    source_rate,
    source_burst,
    count,
});
overlay!(ReactiveSection {
    mode,
    prefixes,
    synack_rate,
    synack_burst
});
overlay!(RogueSection {
    detect,
    timeout_ms,
    max_servers
});
overlay!(FingerprintSection { rules, threads });
overlay!(NdjsonSection { enabled, path });
overlay!(PcapngSection { enabled, path });
overlay!(RotationSection { size, interval });
overlay!(MetricsSection { listen, file });
overlay!(ControlSection { socket });
overlay!(EventsSection {
    detail,
    per_template
});

/// What `sensor analyze` takes from the configuration.
#[derive(Clone, Debug)]
pub struct AnalyzeSettings {
    pub ports: PortSet,
    pub match_source_port: bool,
    pub prefix_len: u16,
    pub pipeline: PipelineOptions,
    pub metrics_file: Option<PathBuf>,
}

impl ConfigFile {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|reason| ConfigError::Read {
            path: path.to_path_buf(),
            reason,
        })?;
        Self::parse(&text, path)
    }

    /// Parses `text`; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Self =
            toml::from_str(text).map_err(|e: toml::de::Error| ConfigError::Parse {
                path: path.to_path_buf(),
                message: e.to_string().trim_end().to_string(),
            })?;
        let origin = path.display().to_string();
        if let Some(kafka) = &config.kafka {
            kafka.validate().map_err(|message| ConfigError::Invalid {
                origin: origin.clone(),
                key: "[kafka]",
                message,
            })?;
        }
        if config.sensor.name.as_deref().is_some_and(str::is_empty) {
            return Err(ConfigError::Invalid {
                origin,
                key: "[sensor] name",
                message: "must not be empty".into(),
            });
        }
        Ok(config)
    }

    /// This configuration with every key `top` sets replaced by `top`'s (the command line over
    /// the file).
    pub fn overlay(&self, top: &Self) -> Self {
        Self {
            capture: self.capture.overlay(&top.capture),
            reactive: self.reactive.overlay(&top.reactive),
            rogue: self.rogue.overlay(&top.rogue),
            fingerprint: self.fingerprint.overlay(&top.fingerprint),
            ndjson: self.ndjson.overlay(&top.ndjson),
            pcapng: self.pcapng.overlay(&top.pcapng),
            rotation: self.rotation.overlay(&top.rotation),
            metrics: self.metrics.overlay(&top.metrics),
            control: self.control.overlay(&top.control),
            events: self.events.overlay(&top.events),
            sensor: self.sensor.overlay(&top.sensor),
            kafka: top.kafka.clone().or_else(|| self.kafka.clone()),
        }
    }

    /// The options of a live run, defaults applied and values checked together. `origin` names
    /// where the values came from, for errors.
    pub fn run_options(&self, origin: &str) -> Result<RunOptions, ConfigError> {
        let invalid = |key: &'static str, message: String| ConfigError::Invalid {
            origin: origin.to_string(),
            key,
            message,
        };
        let c = &self.capture;
        let interface = c.interface.clone().ok_or_else(|| {
            invalid(
                "[capture] interface",
                "missing: give the darknet interface to attach to (or --iface)".into(),
            )
        })?;
        if interface.is_empty() {
            return Err(invalid("[capture] interface", "must not be empty".into()));
        }
        let mut options = RunOptions::new(interface);
        options.mode = c.xdp_mode.unwrap_or_default();
        options.ports = c.ports.clone().unwrap_or_default();
        options.match_source_port = c.match_source_port.unwrap_or(false);
        options.action = c.action.map_or(MatchAction::Drop, MatchAction::from);
        options.prefix_len = self.prefix_len(origin)?;
        let ring_bytes = c.ring_bytes.unwrap_or(u64::from(DEFAULT_RING_BYTES));
        options.ring_bytes = u32::try_from(ring_bytes).map_err(|_| {
            invalid(
                "[capture] ring_bytes",
                format!("{ring_bytes} is more than the kernel takes (at most 2GiB)"),
            )
        })?;
        options.wakeup_bytes = c.wakeup_bytes.unwrap_or(0);
        options.source_rate = c.source_rate.unwrap_or(0);
        options.source_burst = c.source_burst.unwrap_or(100);
        options.max_events = c.count;
        if c.count == Some(0) {
            return Err(invalid("[capture] count", "must be at least 1".into()));
        }

        let r = &self.reactive;
        options.reactive = r.mode.map_or(ReactivePolicy::Off, ReactivePolicy::from);
        options.reactive_prefixes = r.prefixes.clone().unwrap_or_default();
        options.synack_rate = r.synack_rate.unwrap_or(10);
        options.synack_burst = r.synack_burst.unwrap_or(20);
        if options.reactive != ReactivePolicy::Off && options.reactive_prefixes.is_empty() {
            return Err(invalid(
                "[reactive] prefixes",
                "the reactive responder (mode silent or reset) needs the darknet prefixes it may \
                 answer for, e.g. [\"203.0.113.0/24\"] (or --reactive-prefixes)"
                    .into(),
            ));
        }

        let g = &self.rogue;
        if g.detect == Some(true) {
            if !options.match_source_port {
                return Err(invalid(
                    "[rogue] detect",
                    "needs [capture] match_source_port = true (--match-source-port): without it \
                     the sensor never sees the servers' answers"
                        .into(),
                ));
            }
            let timeout_ms = g.timeout_ms.unwrap_or(5000);
            if timeout_ms == 0 {
                return Err(invalid("[rogue] timeout_ms", "must be at least 1".into()));
            }
            let max_servers = g.max_servers.unwrap_or(4096);
            if !(1..=1_000_000).contains(&max_servers) {
                return Err(invalid(
                    "[rogue] max_servers",
                    format!("{max_servers} is out of range: expected 1 to 1000000"),
                ));
            }
            options.detect_rogue = Some(TrackerConfig {
                max_servers: max_servers as usize,
                reply_timeout_ns: timeout_ms.saturating_mul(1_000_000),
                connect_timeout_ns: timeout_ms.saturating_mul(1_000_000),
                ..TrackerConfig::default()
            });
        }
        options.rules = self.fingerprint.rules.clone();
        options.threads = self.threads(origin)?;
        (options.detail, options.sampling) = self.events(origin)?;
        options.outputs = self.outputs(origin)?;
        options.metrics_listen = self.metrics.listen;
        options.kafka = self.kafka.clone();
        // Events carry the identity when one is configured, and always when they go to Kafka,
        // where many sensors meet.
        let sensor = &self.sensor;
        let prefixes = sensor.prefixes.clone().unwrap_or_default();
        if sensor.name.is_some() || !prefixes.is_empty() || self.kafka.is_some() {
            options.identity = Some(SensorIdentity {
                name: sensor.name.clone().unwrap_or_else(hostname),
                interface: options.interface.clone(),
                prefixes,
            });
        }
        options.control_socket = self.control.socket.clone();
        if options
            .control_socket
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return Err(invalid("[control] socket", "must not be empty".into()));
        }
        Ok(options)
    }

    /// The settings `sensor analyze` uses; the keys about the interface and the kernel are not
    /// read.
    pub fn analyze_settings(&self, origin: &str) -> Result<AnalyzeSettings, ConfigError> {
        let (detail, sampling) = self.events(origin)?;
        Ok(AnalyzeSettings {
            ports: self.capture.ports.clone().unwrap_or_default(),
            match_source_port: self.capture.match_source_port.unwrap_or(false),
            prefix_len: self.prefix_len(origin)?,
            pipeline: PipelineOptions {
                rules: self.fingerprint.rules.clone(),
                outputs: self.outputs(origin)?,
                detail,
                sampling,
                threads: self.threads(origin)?,
                ..Default::default()
            },
            metrics_file: self.metrics.file.clone(),
        })
    }

    /// `[events]`: the detail, and the sampling with the default campaign window (the caller
    /// sets the window it runs with).
    fn events(&self, origin: &str) -> Result<(EventDetail, Option<SamplingConfig>), ConfigError> {
        if self.events.per_template == Some(0) {
            return Err(ConfigError::Invalid {
                origin: origin.to_string(),
                key: "[events] per_template",
                message: "must be at least 1 (leave it out to write every event)".into(),
            });
        }
        let sampling = self.events.per_template.map(|per_template| SamplingConfig {
            per_template,
            window_s: crate::aggregate::AggregateConfig::default().campaign_window_s,
        });
        Ok((self.events.detail.unwrap_or_default(), sampling))
    }

    /// `[fingerprint] threads`: analyst threads.
    fn threads(&self, origin: &str) -> Result<usize, ConfigError> {
        let threads = self.fingerprint.threads.unwrap_or(1);
        if !(1..=MAX_THREADS).contains(&threads) {
            return Err(ConfigError::Invalid {
                origin: origin.to_string(),
                key: "[fingerprint] threads",
                message: format!("{threads} is out of range: expected 1 to {MAX_THREADS}"),
            });
        }
        Ok(usize::from(threads))
    }

    fn prefix_len(&self, origin: &str) -> Result<u16, ConfigError> {
        let prefix_len = self.capture.prefix_len.unwrap_or(DEFAULT_PREFIX_LEN);
        if prefix_len == 0 || usize::from(prefix_len) > PAYLOAD_CAPACITY {
            return Err(ConfigError::Invalid {
                origin: origin.to_string(),
                key: "[capture] prefix_len",
                message: format!("{prefix_len} is out of range: expected 1 to {PAYLOAD_CAPACITY}"),
            });
        }
        Ok(prefix_len)
    }

    fn outputs(&self, origin: &str) -> Result<OutputOptions, ConfigError> {
        let invalid = |key: &'static str, message: String| ConfigError::Invalid {
            origin: origin.to_string(),
            key,
            message,
        };
        let destination = |key: &'static str, path: &str| {
            if path.is_empty() {
                Err(invalid(
                    key,
                    "must not be empty (use \"-\" for stdout)".into(),
                ))
            } else {
                Ok(Destination::parse(path))
            }
        };
        let ndjson = match self.ndjson.enabled {
            Some(false) => None,
            _ => Some(destination(
                "[ndjson] path",
                self.ndjson.path.as_deref().unwrap_or("-"),
            )?),
        };
        let pcapng = match (self.pcapng.enabled, self.pcapng.path.as_deref()) {
            (Some(false), _) | (None, None) => None,
            (Some(true), None) => {
                return Err(invalid(
                    "[pcapng] path",
                    "missing: pcapng is enabled but has no path".into(),
                ));
            }
            (_, Some(path)) => Some(destination("[pcapng] path", path)?),
        };
        if ndjson == Some(Destination::Stdout) && pcapng == Some(Destination::Stdout) {
            return Err(invalid(
                "[pcapng] path",
                "NDJSON already goes to stdout; give pcapng a file".into(),
            ));
        }
        let rotation = Rotation {
            max_bytes: self.rotation.size,
            interval: self.rotation.interval,
        };
        if let Some(size) = rotation.max_bytes
            && size < 1024
        {
            return Err(invalid(
                "[rotation] size",
                format!("{size} bytes is too small: at least 1KiB"),
            ));
        }
        if let Some(interval) = rotation.interval
            && interval < Duration::from_secs(1)
        {
            return Err(invalid("[rotation] interval", "must be at least 1s".into()));
        }
        if rotation.is_on()
            && (ndjson == Some(Destination::Stdout) || pcapng == Some(Destination::Stdout))
        {
            return Err(invalid(
                "[rotation]",
                "rotation needs file outputs, and an output goes to stdout: give [ndjson] path \
                 (--output) a file, or disable it"
                    .into(),
            ));
        }
        Ok(OutputOptions {
            ndjson,
            pcapng,
            rotation,
            interface_names: InterfaceNames::System,
        })
    }
}

/// A size: bytes as a number, or a string with a unit: `512`, `64KiB`, `100MiB`, `1GiB`, `10MB`
/// (K, M, G, T and KiB... are powers of 1024; KB, MB, GB, TB powers of 1000).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("bad size `{s}`: expected a number of bytes or e.g. 100MiB"))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "k" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "T" | "TiB" => 1 << 40,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        other => {
            return Err(format!(
                "bad size unit `{other}` in `{s}`: expected B, KiB, MiB, GiB, TiB, KB, MB, GB or TB"
            ));
        }
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("size `{s}` is too large"))
}

/// An interval: seconds as a number, or a number with a unit: `30s`, `15m`, `1h`, `1d`.
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("bad interval `{s}`: expected seconds or e.g. 15m, 1h, 1d"))?;
    let factor = match unit.trim() {
        "" | "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => {
            return Err(format!(
                "bad interval unit `{other}` in `{s}`: expected s, m, h or d"
            ));
        }
    };
    number
        .checked_mul(factor)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("interval `{s}` is too long"))
}

fn from_str_value<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: fmt::Display,
{
    let s = String::deserialize(d)?;
    s.parse().map(Some).map_err(de::Error::custom)
}

/// A number or a string.
enum NumberOrText {
    Number(u64),
    Text(String),
}

impl<'de> Deserialize<'de> for NumberOrText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = NumberOrText;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number or a string")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(NumberOrText::Number(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u64::try_from(v)
                    .map(NumberOrText::Number)
                    .map_err(|_| E::custom(format!("{v} is negative")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(NumberOrText::Text(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

fn size_value<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match NumberOrText::deserialize(d)? {
        NumberOrText::Number(n) => Ok(Some(n)),
        NumberOrText::Text(s) => parse_size(&s).map(Some).map_err(de::Error::custom),
    }
}

fn interval_value<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    match NumberOrText::deserialize(d)? {
        NumberOrText::Number(n) => Ok(Some(Duration::from_secs(n))),
        NumberOrText::Text(s) => parse_interval(&s).map(Some).map_err(de::Error::custom),
    }
}

/// A string (`"5060,6000-6010"`) or a list of ports and ranges (`[5060, "6000-6010"]`).
fn ports_value<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PortSet>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Ports {
        Text(String),
        List(Vec<NumberOrText>),
    }
    let text = match Ports::deserialize(d).map_err(|_| {
        de::Error::custom(
            "expected ports as a string (\"5060,6000-6010\") or a list ([5060, \"6000-6010\"])",
        )
    })? {
        Ports::Text(s) => s,
        Ports::List(items) => items
            .into_iter()
            .map(|i| match i {
                NumberOrText::Number(n) => n.to_string(),
                NumberOrText::Text(s) => s,
            })
            .collect::<Vec<_>>()
            .join(","),
    };
    text.parse().map(Some).map_err(de::Error::custom)
}

/// A list of prefixes, or one comma-separated string.
fn prefixes_value<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<Prefix>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Prefixes {
        Text(String),
        List(Vec<String>),
    }
    let items = match Prefixes::deserialize(d).map_err(|_| {
        de::Error::custom("expected prefixes as a list of strings ([\"203.0.113.0/24\"])")
    })? {
        Prefixes::Text(s) => s.split(',').map(str::to_string).collect(),
        Prefixes::List(v) => v,
    };
    items
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<Prefix>().map_err(de::Error::custom))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ConfigFile, ConfigError> {
        ConfigFile::parse(text, Path::new("sensor.toml"))
    }

    #[test]
    fn example_file_parses_and_resolves() {
        let text = include_str!("../../docs/sensor.example.toml");
        let config = parse(text).unwrap();
        let options = config.run_options("example").unwrap();
        assert_eq!(options.interface, "eth1");
        assert_eq!(options.ports.to_string(), "5060-5061");
        assert_eq!(
            options.outputs.rotation.interval,
            Some(Duration::from_secs(3600))
        );
        assert_eq!(options.outputs.rotation.max_bytes, Some(100 << 20));
        assert!(options.outputs.pcapng.is_some());
        assert_eq!(
            options.metrics_listen,
            Some("127.0.0.1:9560".parse().unwrap())
        );
        assert_eq!(options.threads, 1);
        let mut flags = ConfigFile::default();
        flags.fingerprint.threads = Some(3);
        let layered = config.overlay(&flags);
        assert_eq!(layered.run_options("t").unwrap().threads, 3);
        assert_eq!(layered.analyze_settings("t").unwrap().pipeline.threads, 3);
    }

    #[test]
    fn config_doc_holds_the_example_file() {
        let doc = include_str!("../../docs/config.md");
        let example = include_str!("../../docs/sensor.example.toml");
        assert!(
            doc.contains(&format!("```toml\n{example}```")),
            "docs/config.md must show docs/sensor.example.toml as it is"
        );
    }

    #[test]
    fn flags_override_the_file_key_by_key() {
        let file = parse(
            r#"
            [capture]
            interface = "eth1"
            ports = [5060, "6000-6001"]
            action = "pass"
            prefix_len = 512
            [ndjson]
            path = "/tmp/events.ndjson"
            "#,
        )
        .unwrap();
        let mut flags = ConfigFile::default();
        flags.capture.action = Some(Action::Drop);
        flags.capture.interface = Some("eth2".into());
        let options = file.overlay(&flags).run_options("t").unwrap();
        assert_eq!(options.interface, "eth2");
        assert_eq!(options.action, MatchAction::Drop);
        assert_eq!(options.prefix_len, 512);
        assert_eq!(options.ports.to_string(), "5060,6000-6001");
        assert_eq!(
            options.outputs.ndjson,
            Some(Destination::File("/tmp/events.ndjson".into()))
        );
    }

    #[test]
    fn errors_name_the_key_and_the_problem() {
        let cases: &[(&str, &str)] = &[
            ("[capture]\nprots = \"5060\"\n", "unknown field `prots`"),
            ("[capture]\nports = \"0\"\n", "bad port `0`"),
            ("[capture]\nports = \"9-1\"\n", "bad port range"),
            ("[capture]\naction = \"dorp\"\n", "unknown variant `dorp`"),
            (
                "[capture]\nxdp_mode = \"fast\"\n",
                "unknown XDP mode `fast`",
            ),
            ("[capture]\nprefix_len = \"x\"\n", "prefix_len"),
            (
                "[rotation]\nsize = \"10 parsecs\"\n",
                "bad size unit `parsecs`",
            ),
            ("[rotation]\ninterval = \"1w\"\n", "bad interval unit `w`"),
            (
                "[reactive]\nprefixes = [\"10.0.0.0/33\"]\n",
                "bad prefix `10.0.0.0/33`",
            ),
            ("[metrics]\nlisten = \"nowhere\"\n", "listen"),
            ("[nosuch]\n", "unknown field `nosuch`"),
            ("[events]\ndetail = \"tiny\"\n", "unknown variant `tiny`"),
            ("[events]\nper_template = -1\n", "per_template"),
        ];
        for (text, needle) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
            assert!(e.starts_with("config sensor.toml: "), "{e}");
        }
        let invalid: &[(&str, &str)] = &[
            (
                "[capture]\nports = \"5060\"\n",
                "[capture] interface: missing",
            ),
            (
                "[capture]\ninterface = \"e\"\nprefix_len = 0\n",
                "[capture] prefix_len: 0 is out of range",
            ),
            (
                "[capture]\ninterface = \"e\"\n[reactive]\nmode = \"silent\"\n",
                "[reactive] prefixes: the reactive responder",
            ),
            (
                "[capture]\ninterface = \"e\"\n[rogue]\ndetect = true\n",
                "[rogue] detect: needs [capture] match_source_port",
            ),
            (
                "[capture]\ninterface = \"e\"\n[rotation]\nsize = \"1MiB\"\n",
                "[rotation]: rotation needs file outputs",
            ),
            (
                "[capture]\ninterface = \"e\"\n[pcapng]\npath = \"-\"\n",
                "[pcapng] path: NDJSON already goes to stdout",
            ),
            (
                "[capture]\ninterface = \"e\"\n[pcapng]\nenabled = true\n",
                "[pcapng] path: missing",
            ),
            (
                "[capture]\ninterface = \"e\"\n[ndjson]\npath = \"/tmp/x\"\n[rotation]\nsize = 10\n",
                "[rotation] size: 10 bytes is too small",
            ),
            (
                "[capture]\ninterface = \"e\"\n[events]\nper_template = 0\n",
                "[events] per_template: must be at least 1",
            ),
            (
                "[capture]\ninterface = \"e\"\n[fingerprint]\nthreads = 0\n",
                "[fingerprint] threads: 0 is out of range: expected 1 to 64",
            ),
            (
                "[capture]\ninterface = \"e\"\n[fingerprint]\nthreads = 65\n",
                "[fingerprint] threads: 65 is out of range: expected 1 to 64",
            ),
        ];
        for (text, needle) in invalid {
            let e = parse(text)
                .unwrap()
                .run_options("config sensor.toml")
                .unwrap_err()
                .to_string();
            assert_eq!(
                e.find(needle),
                Some("config sensor.toml: ".len()),
                "{text:?}: {e}"
            );
        }
    }

    #[test]
    fn events_section_sets_the_detail_and_the_sampling_and_flags_win() {
        let file =
            parse("[capture]\ninterface = \"e\"\n[events]\ndetail = \"lean\"\nper_template = 4\n")
                .unwrap();
        let options = file.run_options("t").unwrap();
        assert_eq!(options.detail, EventDetail::Lean);
        assert_eq!(options.sampling.map(|s| s.per_template), Some(4));
        let analyze = file.analyze_settings("t").unwrap().pipeline;
        assert_eq!(analyze.detail, EventDetail::Lean);
        assert_eq!(analyze.sampling.map(|s| s.per_template), Some(4));
        let mut flags = ConfigFile::default();
        flags.events.detail = Some(EventDetail::Full);
        let options = file.overlay(&flags).run_options("t").unwrap();
        assert_eq!(options.detail, EventDetail::Full);
        assert_eq!(options.sampling.map(|s| s.per_template), Some(4));
        // Without the section: compact, every event.
        let options = parse("[capture]\ninterface = \"e\"\n")
            .unwrap()
            .run_options("t")
            .unwrap();
        assert_eq!(
            (options.detail, options.sampling),
            (EventDetail::Compact, None)
        );
    }

    #[test]
    fn parse_error_shows_the_line() {
        let e = parse("[capture]\ninterface = \"eth1\"\nports = \"5060,x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3"), "{e}");
        assert!(e.contains("ports"), "{e}");
    }

    #[test]
    fn sizes_and_intervals() {
        assert_eq!(parse_size("100MiB"), Ok(100 << 20));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64 KiB"), Ok(64 << 10));
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("99999999999T").is_err());
        assert_eq!(parse_interval("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_interval("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_interval("90"), Ok(Duration::from_secs(90)));
        assert!(parse_interval("1y").is_err());
        let c = parse("[rotation]\nsize = 2048\ninterval = 60\n").unwrap();
        assert_eq!(c.rotation.size, Some(2048));
        assert_eq!(c.rotation.interval, Some(Duration::from_secs(60)));
    }
}
