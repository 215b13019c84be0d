//! The configuration file (`--config FILE`, TOML). Minimal for now: the sensor's identity and the
//! Kafka output; flags given on the command line override it. Unknown keys are errors, so that a
//! typo does not silently fall back to a default.
//!
//! ```toml
//! [sensor]
//! name = "dark-ams-1"
//! prefixes = ["203.0.113.0/24", "2001:db8:dead::/48"]
//!
//! [kafka]
//! brokers = ["kafka-1:9092", "kafka-2:9092"]
//! topic = "sip-darknet.events"
//! ```
//!
//! See [`crate::output::kafka::KafkaConfig`] and docs/kafka.md for every Kafka key.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{identity::Prefix, output::kafka::KafkaConfig};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub sensor: SensorSection,
    pub kafka: Option<KafkaConfig>,
}

/// `[sensor]`: who this sensor is.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SensorSection {
    /// Unique within a fleet; default: the host name.
    pub name: Option<String>,
    /// The darknet prefixes this sensor watches, carried in every event.
    #[serde(default)]
    pub prefixes: Vec<Prefix>,
}

impl ConfigFile {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates `text`; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source: Box::new(source),
        })?;
        if let Some(kafka) = &config.kafka {
            kafka.validate().map_err(|message| ConfigError::Invalid {
                path: path.to_path_buf(),
                message,
            })?;
        }
        if config.sensor.name.as_deref().is_some_and(str::is_empty) {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                message: "[sensor] name must not be empty".into(),
            });
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_file() {
        let text = r#"
            [sensor]
            name = "dark-1"
            prefixes = ["203.0.113.0/24"]

            [kafka]
            brokers = ["127.0.0.1:9092"]
            topic = "sip"
            acks = "all"
            compression = "zstd"
            linger_ms = 20

            [kafka.spool]
            dir = "/tmp/spool"
            max_bytes = 1048576

            [kafka.security]
            protocol = "sasl_ssl"
            sasl_mechanism = "SCRAM-SHA-512"
            sasl_username = "sensor"
            sasl_password = "secret"

            [kafka.properties]
            "socket.keepalive.enable" = "true"
        "#;
        let c = ConfigFile::parse(text, Path::new("t.toml")).unwrap();
        assert_eq!(c.sensor.name.as_deref(), Some("dark-1"));
        let k = c.kafka.unwrap();
        assert_eq!(k.topic, "sip");
        assert_eq!(k.spool.max_bytes, 1 << 20);
        assert_eq!(k.linger_ms, 20);
    }

    #[test]
    fn rejects_typos_and_bad_values() {
        let e = ConfigFile::parse(
            "[kafka]\nbrokers=['a:1']\ntopic='t'\nlingr_ms=1\n",
            Path::new("t"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("lingr_ms"), "{e}");
        let e = ConfigFile::parse(
            "[kafka]\nbrokers=['a:1']\ntopic='t'\ncompression='brotli'\n",
            Path::new("t"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("brotli"), "{e}");
        let e = ConfigFile::parse("[kafka]\nbrokers=[]\ntopic='t'\n", Path::new("t")).unwrap_err();
        assert!(e.to_string().contains("brokers"), "{e}");
        let e =
            ConfigFile::parse("[sensor]\nprefixes=['10.0.0.1/8']\n", Path::new("t")).unwrap_err();
        assert!(e.to_string().contains("host bits"), "{e}");
        let e = ConfigFile::parse(
            "[kafka]\nbrokers=['a:1']\ntopic='t'\nacks='0'\n",
            Path::new("t"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("at least once"), "{e}");
    }
}
