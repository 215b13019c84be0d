//! Reading topics back: every partition from its first record to the end it had when reading
//! started. No consumer group offsets are committed: a report run changes nothing on the cluster.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use rdkafka::{
    ClientConfig, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
    error::KafkaError,
    message::Message,
};

use super::{KafkaConfig, KafkaOutputError};

const METADATA_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    #[error(transparent)]
    Config(#[from] KafkaOutputError),
    #[error("kafka: {context}: {source}")]
    Kafka { context: String, source: KafkaError },
    #[error("kafka: topic {0} does not exist")]
    NoTopic(String),
    #[error("kafka: no progress for {idle:?}; partitions not read to their end: {missing}")]
    Stalled { idle: Duration, missing: String },
}

/// One record read back.
#[derive(Debug)]
pub struct Consumed<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub payload: &'a [u8],
    pub timestamp_ms: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConsumeSummary {
    pub records: u64,
    /// (topic, partition) to the number of records read from it.
    pub partitions: BTreeMap<(String, i32), u64>,
}

fn kafka(context: impl Into<String>) -> impl FnOnce(KafkaError) -> ConsumeError {
    let context = context.into();
    move |source| ConsumeError::Kafka { context, source }
}

/// Reads every record of `topics` present when called, in partition order, and gives each to
/// `each`. `config` supplies the brokers and security settings (its topic is not used). Fails if
/// no record arrives for `idle` while some partition is not read to its end.
pub fn consume_topics(
    config: &KafkaConfig,
    topics: &[String],
    idle: Duration,
    mut each: impl FnMut(&Consumed<'_>),
) -> Result<ConsumeSummary, ConsumeError> {
    let mut client: ClientConfig = config.client_config()?;
    // librdkafka's assign() needs a group id, but partitions are assigned explicitly and no
    // offset is ever committed: a report run changes nothing on the cluster.
    client
        .set("group.id", "sip-darknet-sensor-report")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest");
    let consumer: BaseConsumer = client.create().map_err(kafka("creating the consumer"))?;

    // Where each partition ends now.
    let mut assignment = TopicPartitionList::new();
    let mut ends: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for topic in topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), METADATA_TIMEOUT)
            .map_err(kafka(format!("metadata of {topic}")))?;
        let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
            return Err(ConsumeError::NoTopic(topic.clone()));
        };
        if t.error().is_some() || t.partitions().is_empty() {
            return Err(ConsumeError::NoTopic(topic.clone()));
        }
        for p in t.partitions() {
            let (low, high) = consumer
                .fetch_watermarks(topic, p.id(), METADATA_TIMEOUT)
                .map_err(kafka(format!("offsets of {topic}/{}", p.id())))?;
            if high > low {
                assignment
                    .add_partition_offset(topic, p.id(), Offset::Offset(low))
                    .map_err(kafka("assignment"))?;
                ends.insert((topic.clone(), p.id()), high);
            }
        }
    }
    let mut summary = ConsumeSummary::default();
    if ends.is_empty() {
        return Ok(summary);
    }
    consumer.assign(&assignment).map_err(kafka("assign"))?;

    let mut last_progress = Instant::now();
    while !ends.is_empty() {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                last_progress = Instant::now();
                let key = (m.topic().to_string(), m.partition());
                let Some(&end) = ends.get(&key) else {
                    continue;
                };
                if m.offset() >= end {
                    ends.remove(&key);
                    continue;
                }
                each(&Consumed {
                    topic: m.topic(),
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key(),
                    payload: m.payload().unwrap_or_default(),
                    timestamp_ms: m.timestamp().to_millis(),
                });
                summary.records += 1;
                *summary.partitions.entry(key.clone()).or_default() += 1;
                if m.offset() + 1 >= end {
                    ends.remove(&key);
                }
            }
            Some(Err(e)) => {
                // Transient fetch errors are retried by librdkafka; report only a stall.
                let _ = e;
            }
            None => {}
        }
        if last_progress.elapsed() >= idle {
            let missing = ends
                .iter()
                .map(|((t, p), end)| format!("{t}/{p} (end {end})"))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(ConsumeError::Stalled { idle, missing });
        }
    }
    Ok(summary)
}
