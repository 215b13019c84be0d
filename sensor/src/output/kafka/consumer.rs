//! Reading topics back: every partition from its first record until the reader has caught up
//! with it (librdkafka's partition end-of-file event, from the high watermark of the broker's
//! fetch responses). No consumer group offsets are committed: a report run changes nothing on
//! the cluster.
//!
//! The end is taken from fetch responses, not from a ListOffsets query up front: tansu 0.6.0's
//! in-memory engine answers ListOffsets(latest) with the base offset of the last batch plus one,
//! which would end the read after the first record of a batch.

use std::{
    collections::{BTreeMap, BTreeSet},
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

/// Reads every record of `topics` up to where the reader catches up with each partition, in
/// partition order, and gives each to `each`. `config` supplies the brokers and security
/// settings (its topic is not used). Fails if no record and no end arrives for `idle` while some
/// partition is not read to its end.
pub fn consume_topics(
    config: &KafkaConfig,
    topics: &[String],
    idle: Duration,
    mut each: impl FnMut(&Consumed<'_>),
) -> Result<ConsumeSummary, ConsumeError> {
    let mut summary = ConsumeSummary::default();
    for topic in topics {
        consume_topic(config, topic, idle, &mut each, &mut summary)?;
    }
    Ok(summary)
}

/// One topic per consumer: librdkafka's end-of-partition event names the partition, not the
/// topic.
fn consume_topic(
    config: &KafkaConfig,
    topic: &str,
    idle: Duration,
    each: &mut impl FnMut(&Consumed<'_>),
    summary: &mut ConsumeSummary,
) -> Result<(), ConsumeError> {
    let mut client: ClientConfig = config.client_config()?;
    // librdkafka's assign() needs a group id, but partitions are assigned explicitly and no
    // offset is ever committed: a report run changes nothing on the cluster.
    client
        .set("group.id", "sip-darknet-sensor-report")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest");
    let consumer: BaseConsumer = client.create().map_err(kafka("creating the consumer"))?;
    let metadata = consumer
        .fetch_metadata(Some(topic), METADATA_TIMEOUT)
        .map_err(kafka(format!("metadata of {topic}")))?;
    let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Err(ConsumeError::NoTopic(topic.to_string()));
    };
    if t.error().is_some() || t.partitions().is_empty() {
        return Err(ConsumeError::NoTopic(topic.to_string()));
    }
    let mut assignment = TopicPartitionList::new();
    let mut open: BTreeSet<i32> = BTreeSet::new();
    for p in t.partitions() {
        assignment
            .add_partition_offset(topic, p.id(), Offset::Beginning)
            .map_err(kafka("assignment"))?;
        open.insert(p.id());
    }
    consumer.assign(&assignment).map_err(kafka("assign"))?;

    let mut last_progress = Instant::now();
    while !open.is_empty() {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                last_progress = Instant::now();
                each(&Consumed {
                    topic: m.topic(),
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key(),
                    payload: m.payload().unwrap_or_default(),
                    timestamp_ms: m.timestamp().to_millis(),
                });
                summary.records += 1;
                *summary
                    .partitions
                    .entry((m.topic().to_string(), m.partition()))
                    .or_default() += 1;
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                last_progress = Instant::now();
                open.remove(&p);
            }
            // Transient fetch errors are retried by librdkafka; only a stall is reported.
            Some(Err(_)) | None => {}
        }
        if last_progress.elapsed() >= idle {
            let missing = open
                .iter()
                .map(|p| format!("{topic}/{p}"))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(ConsumeError::Stalled { idle, missing });
        }
    }
    Ok(())
}
