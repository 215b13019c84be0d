//! Kafka output: every event as one JSON record (the EventDoc schema), keyed by source address,
//! delivered at least once through librdkafka, with a bounded on-disk spool for when the broker
//! is away. See docs/kafka.md for the design, the counters and deployment.
//!
//! The agent hands events to [`KafkaOutput::offer`], which never blocks: it puts the record on a
//! bounded channel and counts a drop if the channel is full. A dedicated thread (the exporter,
//! [`exporter`]) owns the producer and the spool.

mod consumer;
mod exporter;

use std::{
    collections::BTreeMap,
    fmt,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc::{self, SyncSender, TrySendError},
    },
    thread::JoinHandle,
};

use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

pub use consumer::{ConsumeError, ConsumeSummary, Consumed, consume_topics};

use super::spool::{Spool, SpoolError, SpoolRecord};

/// `[kafka]` in the config file.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    /// Topic the events go to.
    pub topic: String,
    /// `all` (default) or `1`. `0` cannot be at least once and is refused.
    #[serde(default)]
    pub acks: Acks,
    /// librdkafka's idempotent producer: no duplicates and no reordering from its own retries.
    /// Needs `acks = "all"`.
    #[serde(default = "yes")]
    pub idempotence: bool,
    #[serde(default)]
    pub compression: Compression,
    /// How long librdkafka waits to fill a batch (`linger.ms`).
    #[serde(default = "default_linger_ms")]
    pub linger_ms: u32,
    /// Largest batch per partition in bytes (`batch.size`).
    #[serde(default = "default_batch_bytes")]
    pub batch_bytes: u32,
    /// Largest batch per partition in messages (`batch.num.messages`).
    #[serde(default = "default_batch_messages")]
    pub batch_messages: u32,
    /// A record not acknowledged within this time fails and goes to the spool
    /// (`message.timeout.ms`).
    #[serde(default = "default_message_timeout_ms")]
    pub message_timeout_ms: u32,
    /// librdkafka's in-memory queue bound, in messages (`queue.buffering.max.messages`); when it
    /// is full (a slow broker), events go to the spool.
    #[serde(default = "default_queue_max_messages")]
    pub queue_max_messages: u32,
    /// The same bound in KiB (`queue.buffering.max.kbytes`).
    #[serde(default = "default_queue_max_kbytes")]
    pub queue_max_kbytes: u32,
    /// Events between the ring buffer drain and the exporter thread; a full channel drops (and
    /// counts) rather than block the drain.
    #[serde(default = "default_channel_capacity")]
    pub channel_capacity: usize,
    /// At shutdown, how long to keep delivering before whatever is left goes to the spool.
    #[serde(default = "default_shutdown_timeout_ms")]
    pub shutdown_timeout_ms: u32,
    /// Longest wait between two attempts to send from the spool while the broker fails.
    #[serde(default = "default_retry_backoff_max_ms")]
    pub retry_backoff_max_ms: u32,
    /// librdkafka partitioner. The default, `murmur2_random`, puts a key in the same partition as
    /// the Java client does, so every producer of a fleet agrees.
    #[serde(default = "default_partitioner")]
    pub partitioner: String,
    /// Client id; default `sip-darknet-sensor-<sensor name>`.
    pub client_id: Option<String>,
    #[serde(default)]
    pub spool: SpoolConfig,
    #[serde(default)]
    pub security: SecurityConfig,
    /// Any other librdkafka property, applied last (an escape hatch; see librdkafka's
    /// CONFIGURATION.md).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

fn yes() -> bool {
    true
}
fn default_linger_ms() -> u32 {
    100
}
fn default_batch_bytes() -> u32 {
    1_000_000
}
fn default_batch_messages() -> u32 {
    10_000
}
fn default_message_timeout_ms() -> u32 {
    30_000
}
fn default_queue_max_messages() -> u32 {
    100_000
}
fn default_queue_max_kbytes() -> u32 {
    64 * 1024
}
fn default_channel_capacity() -> usize {
    65_536
}
fn default_shutdown_timeout_ms() -> u32 {
    10_000
}
fn default_retry_backoff_max_ms() -> u32 {
    30_000
}
fn default_partitioner() -> String {
    "murmur2_random".into()
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum Acks {
    #[default]
    #[serde(rename = "all", alias = "-1")]
    All,
    #[serde(rename = "1")]
    Leader,
    #[serde(rename = "0")]
    NoAck,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    #[default]
    Lz4,
    Zstd,
}

/// `[kafka.spool]`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// One directory per sensor; locked while the sensor runs.
    #[serde(default = "default_spool_dir")]
    pub dir: PathBuf,
    /// Size limit of the spool on disk; past it new events are shed and counted.
    #[serde(default = "default_spool_max_bytes")]
    pub max_bytes: u64,
}

fn default_spool_dir() -> PathBuf {
    "/var/lib/sip-darknet-sensor/kafka-spool".into()
}
fn default_spool_max_bytes() -> u64 {
    1 << 30
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            dir: default_spool_dir(),
            max_bytes: default_spool_max_bytes(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

/// A string that `Debug` does not print.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// `[kafka.security]`: TLS and SASL.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityConfig {
    #[serde(default)]
    pub protocol: SecurityProtocol,
    /// CA bundle to verify the brokers (`ssl.ca.location`).
    pub ca_location: Option<PathBuf>,
    /// Client certificate and key for mutual TLS.
    pub certificate_location: Option<PathBuf>,
    pub key_location: Option<PathBuf>,
    pub key_password: Option<Secret>,
    /// Check the broker's host name against its certificate (default true).
    pub verify_hostname: Option<bool>,
    /// `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`, `GSSAPI` or `OAUTHBEARER`.
    pub sasl_mechanism: Option<String>,
    pub sasl_username: Option<String>,
    pub sasl_password: Option<Secret>,
    /// Read the SASL password from this file instead (first line), to keep it out of the config.
    pub sasl_password_file: Option<PathBuf>,
    pub kerberos_service_name: Option<String>,
    pub kerberos_principal: Option<String>,
    pub kerberos_keytab: Option<PathBuf>,
}

impl KafkaConfig {
    /// A config with defaults for everything but the brokers and the topic.
    pub fn new(brokers: Vec<String>, topic: impl Into<String>) -> Self {
        Self {
            brokers,
            topic: topic.into(),
            acks: Acks::All,
            idempotence: true,
            compression: Compression::default(),
            linger_ms: default_linger_ms(),
            batch_bytes: default_batch_bytes(),
            batch_messages: default_batch_messages(),
            message_timeout_ms: default_message_timeout_ms(),
            queue_max_messages: default_queue_max_messages(),
            queue_max_kbytes: default_queue_max_kbytes(),
            channel_capacity: default_channel_capacity(),
            shutdown_timeout_ms: default_shutdown_timeout_ms(),
            retry_backoff_max_ms: default_retry_backoff_max_ms(),
            partitioner: default_partitioner(),
            client_id: None,
            spool: SpoolConfig::default(),
            security: SecurityConfig::default(),
            properties: BTreeMap::new(),
        }
    }

    /// Checks what serde cannot; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.brokers.is_empty() || self.brokers.iter().any(|b| b.trim().is_empty()) {
            return Err("[kafka] brokers must list at least one host:port".into());
        }
        validate_topic(&self.topic)?;
        if self.acks == Acks::NoAck {
            return Err(
                "[kafka] acks = \"0\" cannot deliver at least once: use \"all\" (or \"1\")".into(),
            );
        }
        if self.idempotence && self.acks != Acks::All {
            return Err("[kafka] idempotence = true needs acks = \"all\"".into());
        }
        if self.channel_capacity == 0 {
            return Err("[kafka] channel_capacity must be at least 1".into());
        }
        if self.spool.max_bytes < Spool::MIN_BYTES {
            return Err(format!(
                "[kafka.spool] max_bytes must be at least {} bytes",
                Spool::MIN_BYTES
            ));
        }
        let s = &self.security;
        let sasl = matches!(
            s.protocol,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        );
        if sasl {
            let mechanism = s.sasl_mechanism.as_deref().unwrap_or("");
            match mechanism {
                "PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512" => {
                    if s.sasl_username.is_none()
                        || (s.sasl_password.is_none() && s.sasl_password_file.is_none())
                    {
                        return Err(format!(
                            "[kafka.security] sasl_mechanism {mechanism} needs sasl_username and sasl_password (or sasl_password_file)"
                        ));
                    }
                }
                "GSSAPI" | "OAUTHBEARER" => {}
                other => {
                    return Err(format!(
                        "[kafka.security] sasl_mechanism {other:?}: expected PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, GSSAPI or OAUTHBEARER"
                    ));
                }
            }
        } else if s.sasl_mechanism.is_some() {
            return Err(
                "[kafka.security] sasl_mechanism needs protocol = \"sasl_plaintext\" or \"sasl_ssl\""
                    .into(),
            );
        }
        Ok(())
    }

    /// Brokers and security: what a producer and a consumer share.
    pub fn client_config(&self) -> Result<ClientConfig, KafkaOutputError> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.brokers.join(","));
        let s = &self.security;
        c.set(
            "security.protocol",
            match s.protocol {
                SecurityProtocol::Plaintext => "plaintext",
                SecurityProtocol::Ssl => "ssl",
                SecurityProtocol::SaslPlaintext => "sasl_plaintext",
                SecurityProtocol::SaslSsl => "sasl_ssl",
            },
        );
        let path = |p: &PathBuf| p.to_string_lossy().into_owned();
        if let Some(p) = &s.ca_location {
            c.set("ssl.ca.location", path(p));
        }
        if let Some(p) = &s.certificate_location {
            c.set("ssl.certificate.location", path(p));
        }
        if let Some(p) = &s.key_location {
            c.set("ssl.key.location", path(p));
        }
        if let Some(p) = &s.key_password {
            c.set("ssl.key.password", &p.0);
        }
        if let Some(verify) = s.verify_hostname {
            c.set(
                "ssl.endpoint.identification.algorithm",
                if verify { "https" } else { "none" },
            );
        }
        if let Some(m) = &s.sasl_mechanism {
            c.set("sasl.mechanism", m);
        }
        if let Some(u) = &s.sasl_username {
            c.set("sasl.username", u);
        }
        if let Some(p) = &s.sasl_password {
            c.set("sasl.password", &p.0);
        }
        if let Some(file) = &s.sasl_password_file {
            let text =
                std::fs::read_to_string(file).map_err(|source| KafkaOutputError::PasswordFile {
                    path: file.clone(),
                    source,
                })?;
            c.set("sasl.password", text.lines().next().unwrap_or(""));
        }
        if let Some(v) = &s.kerberos_service_name {
            c.set("sasl.kerberos.service.name", v);
        }
        if let Some(v) = &s.kerberos_principal {
            c.set("sasl.kerberos.principal", v);
        }
        if let Some(p) = &s.kerberos_keytab {
            c.set("sasl.kerberos.keytab", path(p));
        }
        Ok(c)
    }

    /// The producer's librdkafka configuration.
    pub fn producer_config(&self, sensor_name: &str) -> Result<ClientConfig, KafkaOutputError> {
        let mut c = self.client_config()?;
        let client_id = self
            .client_id
            .clone()
            .unwrap_or_else(|| format!("sip-darknet-sensor-{sensor_name}"));
        c.set("client.id", client_id)
            .set(
                "acks",
                match self.acks {
                    Acks::All => "all",
                    Acks::Leader => "1",
                    Acks::NoAck => "0",
                },
            )
            .set("enable.idempotence", self.idempotence.to_string())
            .set(
                "compression.type",
                match self.compression {
                    Compression::None => "none",
                    Compression::Lz4 => "lz4",
                    Compression::Zstd => "zstd",
                },
            )
            .set("linger.ms", self.linger_ms.to_string())
            .set("batch.size", self.batch_bytes.to_string())
            .set("batch.num.messages", self.batch_messages.to_string())
            .set("message.timeout.ms", self.message_timeout_ms.to_string())
            .set(
                "queue.buffering.max.messages",
                self.queue_max_messages.to_string(),
            )
            .set(
                "queue.buffering.max.kbytes",
                self.queue_max_kbytes.to_string(),
            )
            .set("partitioner", &self.partitioner);
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        Ok(c)
    }
}

/// Kafka's topic name rules: 1 to 249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic(topic: &str) -> Result<(), String> {
    let ok = !topic.is_empty()
        && topic.len() <= 249
        && topic != "."
        && topic != ".."
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "[kafka] topic {topic:?}: expected 1 to 249 characters of a-z A-Z 0-9 . _ -"
        ))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KafkaOutputError {
    #[error("kafka: {0}")]
    Config(String),
    #[error("kafka: cannot read the SASL password file {path}: {source}")]
    PasswordFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("kafka: cannot create the producer: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    #[error("kafka: {0}")]
    Spool(#[from] SpoolError),
    #[error("kafka: cannot start the exporter thread: {0}")]
    Thread(std::io::Error),
}

/// Live counters, shared between the agent, the exporter thread and whoever reports them.
#[derive(Debug, Default)]
pub struct KafkaCounters {
    offered: AtomicU64,
    channel_dropped: AtomicU64,
    delivered: AtomicU64,
    spooled: AtomicU64,
    shed: AtomicU64,
    failed: AtomicU64,
    errors: AtomicU64,
    resumed: AtomicU64,
    spool_corrupt: AtomicU64,
    spool_truncated: AtomicU64,
    spool_pending: AtomicU64,
    spool_bytes: AtomicU64,
    producer_restarts: AtomicU64,
}

macro_rules! bump {
    ($($name:ident),*) => {
        impl KafkaCounters {
            $(
                pub(crate) fn $name(&self, n: u64) {
                    self.$name.fetch_add(n, Ordering::Relaxed);
                }
            )*
        }
    };
}

bump!(
    offered,
    channel_dropped,
    delivered,
    spooled,
    shed,
    failed,
    errors,
    resumed,
    spool_truncated,
    producer_restarts
);

impl KafkaCounters {
    pub(crate) fn set_spool(&self, pending: u64, bytes: u64, corrupt: u64) {
        self.spool_pending.store(pending, Ordering::Relaxed);
        self.spool_bytes.store(bytes, Ordering::Relaxed);
        self.spool_corrupt.store(corrupt, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> KafkaStats {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        KafkaStats {
            offered: g(&self.offered),
            channel_dropped: g(&self.channel_dropped),
            delivered: g(&self.delivered),
            spooled: g(&self.spooled),
            shed: g(&self.shed),
            failed: g(&self.failed),
            errors: g(&self.errors),
            resumed: g(&self.resumed),
            spool_corrupt: g(&self.spool_corrupt),
            spool_truncated: g(&self.spool_truncated),
            spool_pending: g(&self.spool_pending),
            spool_bytes: g(&self.spool_bytes),
            producer_restarts: g(&self.producer_restarts),
        }
    }
}

/// The Kafka counters at one instant. After [`KafkaOutput::finish`] they reconcile:
/// `offered + resumed = delivered + shed + failed + spool_corrupt + spool_pending`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KafkaStats {
    /// Events accepted from the agent into the exporter's channel.
    pub offered: u64,
    /// Events lost because the channel to the exporter was full (the drain never waits).
    pub channel_dropped: u64,
    /// Records the broker acknowledged (live or from the spool).
    pub delivered: u64,
    /// Records written to the spool (cumulative; a record can be spooled once per run).
    pub spooled: u64,
    /// Records lost because the spool was full.
    pub shed: u64,
    /// Records lost for good: rejected by the broker as invalid or too large, or unwritable to
    /// the spool.
    pub failed: u64,
    /// Error reports: failed deliveries (each then spooled or failed) and client errors.
    pub errors: u64,
    /// Records found in the spool at start, left by an earlier run.
    pub resumed: u64,
    /// Spool records discarded because they failed their CRC.
    pub spool_corrupt: u64,
    /// Spool segments cut at a torn tail at start (a crash during an append).
    pub spool_truncated: u64,
    /// Records in the spool now, not yet delivered.
    pub spool_pending: u64,
    /// Bytes of the spool on disk now.
    pub spool_bytes: u64,
    /// Producers recreated after a fatal librdkafka error or repeated failed attempts.
    pub producer_restarts: u64,
}

/// Counts that do not add up at the end of a run.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "kafka: offered {offered} + resumed {resumed} != delivered {delivered} + shed {shed} + failed {failed} + spool_corrupt {corrupt} + spool_pending {pending}"
)]
pub struct KafkaUnreconciled {
    pub offered: u64,
    pub resumed: u64,
    pub delivered: u64,
    pub shed: u64,
    pub failed: u64,
    pub corrupt: u64,
    pub pending: u64,
}

impl KafkaStats {
    /// Every event handed to the exporter, or found in the spool, is delivered, shed, failed or
    /// still in the spool. Holds once the exporter has finished (nothing in flight).
    pub fn check(&self) -> Result<(), KafkaUnreconciled> {
        let input = self.offered + self.resumed;
        let output =
            self.delivered + self.shed + self.failed + self.spool_corrupt + self.spool_pending;
        if input == output {
            Ok(())
        } else {
            Err(KafkaUnreconciled {
                offered: self.offered,
                resumed: self.resumed,
                delivered: self.delivered,
                shed: self.shed,
                failed: self.failed,
                corrupt: self.spool_corrupt,
                pending: self.spool_pending,
            })
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> {
        [
            ("kafka_offered", self.offered),
            ("kafka_channel_dropped", self.channel_dropped),
            ("kafka_delivered", self.delivered),
            ("kafka_spooled", self.spooled),
            ("kafka_shed", self.shed),
            ("kafka_failed", self.failed),
            ("kafka_errors", self.errors),
            ("kafka_resumed", self.resumed),
            ("kafka_spool_corrupt", self.spool_corrupt),
            ("kafka_spool_truncated", self.spool_truncated),
            ("kafka_spool_pending", self.spool_pending),
            ("kafka_spool_bytes", self.spool_bytes),
            ("kafka_producer_restarts", self.producer_restarts),
        ]
        .into_iter()
    }
}

impl fmt::Display for KafkaStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, value) in self.iter() {
            writeln!(f, "  agent.{name:<23} {value:>14}")?;
        }
        Ok(())
    }
}

/// The agent's handle on the Kafka output.
pub struct KafkaOutput {
    tx: Option<SyncSender<SpoolRecord>>,
    counters: Arc<KafkaCounters>,
    thread: Option<JoinHandle<()>>,
}

impl KafkaOutput {
    /// Opens the spool (resuming what an earlier run left), creates the producer and starts the
    /// exporter thread. Fails on a bad configuration or an unusable spool, never on an
    /// unreachable broker (that is what the spool is for).
    pub fn start(config: &KafkaConfig, sensor_name: &str) -> Result<Self, KafkaOutputError> {
        config.validate().map_err(KafkaOutputError::Config)?;
        let counters = Arc::new(KafkaCounters::default());
        let (tx, rx) = mpsc::sync_channel(config.channel_capacity);
        let exporter = exporter::Exporter::new(config, sensor_name, rx, counters.clone())?;
        let thread = std::thread::Builder::new()
            .name("kafka-exporter".into())
            .spawn(move || exporter.run())
            .map_err(KafkaOutputError::Thread)?;
        Ok(Self {
            tx: Some(tx),
            counters,
            thread: Some(thread),
        })
    }

    /// Hands one event to the exporter without waiting. Counted as offered, or as dropped if
    /// the channel is full.
    pub fn offer(&self, key: &[u8], timestamp_ms: i64, payload: Vec<u8>) {
        let Some(tx) = &self.tx else {
            self.counters.channel_dropped(1);
            return;
        };
        let record = SpoolRecord {
            timestamp_ms,
            key: key.to_vec(),
            payload,
        };
        match tx.try_send(record) {
            Ok(()) => self.counters.offered(1),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counters.channel_dropped(1)
            }
        }
    }

    /// The live counters (for a metrics endpoint).
    pub fn counters(&self) -> Arc<KafkaCounters> {
        self.counters.clone()
    }

    /// Closes the channel and waits for the exporter: it delivers what it can within
    /// `shutdown_timeout_ms`, spools the rest and persists the spool. Returns the final counters.
    pub fn finish(mut self) -> KafkaStats {
        self.tx = None;
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            // The exporter never panics by design; if it did, say so in the counters.
            self.counters.errors(1);
        }
        self.counters.snapshot()
    }
}

impl Drop for KafkaOutput {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Against librdkafka's in-process mock cluster: fast checks of the exporter's logic. The
/// tests crate runs the same scenarios against a real broker.
#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use rdkafka::mocking::MockCluster;

    use super::*;

    fn config(brokers: String, topic: &str, name: &str) -> (KafkaConfig, PathBuf) {
        let dir = std::env::temp_dir().join(format!("kafka-unit-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut c = KafkaConfig::new(vec![brokers], topic);
        c.linger_ms = 5;
        c.message_timeout_ms = 2_000;
        c.shutdown_timeout_ms = 3_000;
        c.retry_backoff_max_ms = 500;
        c.spool.dir = dir.clone();
        (c, dir)
    }

    fn payload(i: u32) -> Vec<u8> {
        format!("{{\"event_type\":\"sip_probe\",\"n\":{i}}}").into_bytes()
    }

    fn wait(limit: Duration, mut done: impl FnMut() -> bool) {
        let start = Instant::now();
        while !done() {
            assert!(start.elapsed() < limit, "timed out");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn read_all(c: &KafkaConfig) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        consume_topics(
            c,
            std::slice::from_ref(&c.topic),
            Duration::from_secs(20),
            |m| got.push(m.payload.to_vec()),
        )
        .unwrap();
        got.sort();
        got
    }

    #[test]
    fn librdkafka_settings_from_the_config() {
        let dir = std::env::temp_dir().join(format!("kafka-unit-{}-pw", std::process::id()));
        std::fs::write(&dir, "s3cret\n").unwrap();
        let mut c = KafkaConfig::new(vec!["k1:9093".into(), "k2:9093".into()], "t");
        c.compression = Compression::Zstd;
        c.security.protocol = SecurityProtocol::SaslSsl;
        c.security.sasl_mechanism = Some("SCRAM-SHA-512".into());
        c.security.sasl_username = Some("sensor-1".into());
        c.security.sasl_password_file = Some(dir.clone());
        c.security.ca_location = Some("/etc/ca.pem".into());
        c.properties
            .insert("socket.keepalive.enable".into(), "true".into());
        c.validate().unwrap();
        let p = c.producer_config("dark-1").unwrap();
        for (k, v) in [
            ("bootstrap.servers", "k1:9093,k2:9093"),
            ("security.protocol", "sasl_ssl"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "sensor-1"),
            ("sasl.password", "s3cret"),
            ("ssl.ca.location", "/etc/ca.pem"),
            ("acks", "all"),
            ("enable.idempotence", "true"),
            ("compression.type", "zstd"),
            ("partitioner", "murmur2_random"),
            ("client.id", "sip-darknet-sensor-dark-1"),
            ("socket.keepalive.enable", "true"),
        ] {
            assert_eq!(p.get(k), Some(v), "{k}");
        }
        // Secrets stay out of debug output.
        c.security.sasl_password = Some(Secret("hunter2".into()));
        assert!(!format!("{c:?}").contains("hunter2"));
        let _ = std::fs::remove_file(dir);
    }

    #[test]
    fn mock_round_trip_and_outage() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("t", 3, 1).unwrap();
        let (c, dir) = config(cluster.bootstrap_servers(), "t", "outage");
        let out = KafkaOutput::start(&c, "unit").unwrap();
        let counters = out.counters();
        for i in 0..200 {
            out.offer(format!("k{}", i % 7).as_bytes(), 1, payload(i));
        }
        wait(Duration::from_secs(30), || {
            counters.snapshot().delivered == 200
        });
        cluster.broker_down(1).unwrap();
        for i in 200..500 {
            out.offer(format!("k{}", i % 7).as_bytes(), 1, payload(i));
        }
        wait(Duration::from_secs(30), || {
            counters.snapshot().spool_pending > 0
        });
        cluster.broker_up(1).unwrap();
        wait(Duration::from_secs(60), || {
            let s = counters.snapshot();
            s.delivered >= 500 && s.spool_pending == 0
        });
        let stats = out.finish();
        eprintln!("{stats:?}");
        assert_eq!(stats.check(), Ok(()), "{stats:?}");
        assert_eq!(stats.delivered, 500, "{stats:?}");
        assert!(stats.spooled > 0, "{stats:?}");
        let got = read_all(&c);
        let mut want: Vec<Vec<u8>> = (0..500).map(payload).collect();
        want.sort();
        let mut distinct = got.clone();
        distinct.dedup();
        assert_eq!(distinct, want);
        let _ = std::fs::remove_dir_all(dir);
    }
}
