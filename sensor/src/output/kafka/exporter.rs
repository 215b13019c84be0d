//! The exporter thread: owns the librdkafka producer and the spool.
//!
//! - Live events go straight to the producer while the spool is empty and the brokers are up.
//! - Once anything is in the spool, or librdkafka reports all brokers down, or its queue is full
//!   (a slow broker), new events are appended to the spool instead, so that per-source order is
//!   kept: the spool is a FIFO and is drained before live sending resumes.
//! - A live event whose delivery fails (timeout, broker error, purge at shutdown) is appended to
//!   the spool. A record the broker rejects as invalid or too large fails for good (counted).
//! - The spool is drained in order. After a failure the exporter waits (exponential backoff) and
//!   then sends one record as a probe; once a delivery succeeds it sends a full window.
//! - At shutdown it keeps delivering for `shutdown_timeout_ms`, then purges librdkafka's queues:
//!   what was not acknowledged goes back to the spool, which is synced and checkpointed.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc::{Receiver, RecvTimeoutError, TryRecvError},
    },
    time::{Duration, Instant},
};

use rdkafka::{
    ClientContext,
    error::{KafkaError, RDKafkaErrorCode},
    message::{DeliveryResult, Message},
    producer::{BaseProducer, BaseRecord, Producer, ProducerContext, PurgeConfig},
};

use super::{KafkaConfig, KafkaCounters, KafkaOutputError};
use crate::output::spool::{Appended, Outcome, Pos, Spool, SpoolRecord};

/// Records from the spool in flight at once while the broker is healthy.
const SPOOL_WINDOW: u64 = 10_000;
/// Channel items taken per loop turn before servicing the producer.
const TAKE_PER_TURN: usize = 4096;
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// Attempts from the spool that failed in a row before the producer is made anew. A fresh
/// producer gets a fresh producer id: this unsticks an idempotent producer whose broker lost
/// its state (seen with a broker restarted empty), and costs nothing when the broker is down.
const RESTART_AFTER_FAILED_ATTEMPTS: u32 = 3;

/// Where a record handed to librdkafka came from.
#[derive(Debug)]
enum Origin {
    Live,
    Spool(Pos),
}

struct Report {
    origin: Origin,
    error: Option<KafkaError>,
    /// For a failed live record: the record, to spool it.
    record: Option<SpoolRecord>,
}

/// librdkafka calls this from `poll` on the exporter thread.
struct Context {
    reports: Mutex<Vec<Report>>,
    brokers_down: AtomicBool,
    fatal: AtomicBool,
    counters: Arc<KafkaCounters>,
    last_error: Mutex<Option<String>>,
}

impl Context {
    fn push(&self, report: Report) {
        match self.reports.lock() {
            Ok(mut r) => r.push(report),
            Err(poisoned) => poisoned.into_inner().push(report),
        }
    }

    fn take(&self) -> Vec<Report> {
        match self.reports.lock() {
            Ok(mut r) => std::mem::take(&mut *r),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        }
    }

    fn take_error(&self) -> Option<String> {
        match self.last_error.lock() {
            Ok(mut e) => e.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        }
    }
}

impl ClientContext for Context {
    fn error(&self, error: KafkaError, reason: &str) {
        self.counters.errors(1);
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::AllBrokersDown) => {
                self.brokers_down.store(true, Ordering::Relaxed)
            }
            Some(RDKafkaErrorCode::Fatal) => self.fatal.store(true, Ordering::Relaxed),
            _ => {}
        }
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(format!("{error}: {reason}"));
        }
    }

    fn log(&self, _level: rdkafka::config::RDKafkaLogLevel, _fac: &str, _message: &str) {
        // Errors arrive through `error`; librdkafka's debug chatter is not the operator's.
    }
}

impl ProducerContext for Context {
    type DeliveryOpaque = Box<Origin>;

    fn delivery(&self, result: &DeliveryResult<'_>, origin: Box<Origin>) {
        let origin = *origin;
        let report = match result {
            Ok(_) => Report {
                origin,
                error: None,
                record: None,
            },
            Err((error, message)) => {
                let record = matches!(origin, Origin::Live).then(|| SpoolRecord {
                    timestamp_ms: message.timestamp().to_millis().unwrap_or(0),
                    key: message.key().unwrap_or_default().to_vec(),
                    payload: message.payload().unwrap_or_default().to_vec(),
                });
                Report {
                    origin,
                    error: Some(error.clone()),
                    record,
                }
            }
        };
        self.push(report);
    }
}

/// Errors that retrying cannot fix: the record itself is refused.
fn permanent(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::BadMessage
        )
    )
}

pub(super) struct Exporter {
    config: KafkaConfig,
    sensor_name: String,
    producer: BaseProducer<Context>,
    spool: Spool,
    rx: Receiver<SpoolRecord>,
    counters: Arc<KafkaCounters>,
    /// Live records handed to librdkafka and not yet reported.
    live_in_flight: u64,
    /// A delivery succeeded since the last failure: send a full window from the spool.
    healthy: bool,
    backoff: Duration,
    next_attempt: Instant,
    /// Failed attempts from the spool since the last success.
    failed_attempts: u32,
    last_checkpoint: Instant,
    /// Logged state: spooling (true) or sending live (false).
    spooling_logged: bool,
    shed_logged: bool,
    closing: bool,
}

fn create_producer(
    config: &KafkaConfig,
    sensor_name: &str,
    counters: &Arc<KafkaCounters>,
) -> Result<BaseProducer<Context>, KafkaOutputError> {
    let context = Context {
        reports: Mutex::new(Vec::new()),
        brokers_down: AtomicBool::new(false),
        fatal: AtomicBool::new(false),
        counters: counters.clone(),
        last_error: Mutex::new(None),
    };
    Ok(config
        .producer_config(sensor_name)?
        .create_with_context(context)?)
}

impl Exporter {
    pub(super) fn new(
        config: &KafkaConfig,
        sensor_name: &str,
        rx: Receiver<SpoolRecord>,
        counters: Arc<KafkaCounters>,
    ) -> Result<Self, KafkaOutputError> {
        let (spool, recovered) = Spool::open(&config.spool.dir, config.spool.max_bytes)?;
        counters.resumed(recovered.records);
        counters.spool_truncated(recovered.truncated);
        counters.set_spool(spool.pending(), spool.bytes(), 0);
        if recovered.records > 0 || recovered.truncated > 0 {
            eprintln!(
                "sensor: kafka: resuming {} events from the spool {}{}",
                recovered.records,
                spool.dir().display(),
                if recovered.truncated > 0 {
                    format!(
                        " ({} segment(s) cut at a torn or damaged tail)",
                        recovered.truncated
                    )
                } else {
                    String::new()
                }
            );
        }
        let producer = create_producer(config, sensor_name, &counters)?;
        let now = Instant::now();
        Ok(Self {
            config: config.clone(),
            sensor_name: sensor_name.to_string(),
            producer,
            spool,
            rx,
            counters,
            live_in_flight: 0,
            healthy: false,
            backoff: FIRST_BACKOFF,
            next_attempt: now,
            failed_attempts: 0,
            last_checkpoint: now,
            // A resumed spool was announced above.
            spooling_logged: recovered.records > 0,
            shed_logged: false,
            closing: false,
        })
    }

    fn context(&self) -> &Context {
        self.producer.context()
    }

    pub(super) fn run(mut self) {
        loop {
            let busy = self.spool.pending() > 0 || self.live_in_flight > 0;
            let wait = Duration::from_millis(if busy { 5 } else { 50 });
            let mut disconnected = false;
            match self.rx.recv_timeout(wait) {
                Ok(record) => self.accept(record),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => disconnected = true,
            }
            for _ in 0..TAKE_PER_TURN {
                if disconnected {
                    break;
                }
                match self.rx.try_recv() {
                    Ok(record) => self.accept(record),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => disconnected = true,
                }
            }
            self.service(Duration::ZERO);
            if disconnected {
                return self.shutdown();
            }
        }
    }

    /// New events wait in the spool while it holds anything (order) or the brokers are down.
    fn must_spool(&self) -> bool {
        self.spool.pending() > 0 || self.context().brokers_down.load(Ordering::Relaxed)
    }

    fn accept(&mut self, record: SpoolRecord) {
        if self.must_spool() {
            self.spool_record(record);
            return;
        }
        let sent = self.producer.send(
            BaseRecord::with_opaque_to(&self.config.topic, Box::new(Origin::Live))
                .key(&record.key[..])
                .payload(&record.payload[..])
                .timestamp(record.timestamp_ms),
        );
        match sent {
            Ok(()) => self.live_in_flight += 1,
            Err((error, _)) => {
                if permanent(&error) {
                    self.counters.failed(1);
                    self.counters.errors(1);
                } else {
                    // QueueFull (a slow broker) or anything transient: keep it on disk.
                    self.spool_record(record);
                }
            }
        }
    }

    fn spool_record(&mut self, record: SpoolRecord) {
        match self.spool.append(&record) {
            Ok(Appended::Stored) => self.counters.spooled(1),
            Ok(Appended::Full) => {
                self.counters.shed(1);
                if !self.shed_logged {
                    self.shed_logged = true;
                    eprintln!(
                        "sensor: kafka: spool full ({} of {} bytes): shedding new events (counted in kafka_shed)",
                        self.spool.bytes(),
                        self.spool.max_bytes()
                    );
                }
            }
            Err(e) => {
                self.counters.failed(1);
                self.counters.errors(1);
                eprintln!("sensor: kafka: event lost: {e}");
            }
        }
    }

    /// Polls the producer, handles delivery reports, sends from the spool, keeps the spool's
    /// files and the gauges up to date.
    fn service(&mut self, poll: Duration) {
        self.producer.poll(poll);
        for report in self.context().take() {
            self.handle(report);
        }
        if self.context().fatal.load(Ordering::Relaxed) {
            let reason = self
                .producer
                .client()
                .fatal_error()
                .map(|(code, text)| format!("fatal producer error ({code}: {text})"))
                .unwrap_or_else(|| "fatal producer error".into());
            self.restart_producer(&reason);
        } else if self.failed_attempts >= RESTART_AFTER_FAILED_ATTEMPTS && !self.closing {
            let reason = format!("{} attempts from the spool failed", self.failed_attempts);
            self.restart_producer(&reason);
        }
        self.feed_from_spool();
        if let Err(e) = self.spool.flush() {
            self.counters.errors(1);
            eprintln!("sensor: kafka: {e}");
        }
        if self.last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
            self.last_checkpoint = Instant::now();
            if let Err(e) = self.spool.checkpoint() {
                self.counters.errors(1);
                eprintln!("sensor: kafka: {e}");
            }
        }
        self.counters.set_spool(
            self.spool.pending(),
            self.spool.bytes(),
            self.spool.corrupt(),
        );
        self.log_transitions();
    }

    fn handle(&mut self, report: Report) {
        let success = report.error.is_none();
        if success {
            self.counters.delivered(1);
            self.context().brokers_down.store(false, Ordering::Relaxed);
            self.healthy = true;
            self.backoff = FIRST_BACKOFF;
            self.failed_attempts = 0;
        } else {
            self.counters.errors(1);
        }
        let permanent = report.error.as_ref().is_some_and(permanent);
        match report.origin {
            Origin::Live => {
                self.live_in_flight = self.live_in_flight.saturating_sub(1);
                if success {
                    return;
                }
                if permanent {
                    self.counters.failed(1);
                } else if let Some(record) = report.record {
                    self.spool_record(record);
                } else {
                    self.counters.failed(1);
                }
            }
            Origin::Spool(pos) => {
                let outcome = if success {
                    Outcome::Delivered
                } else if permanent {
                    self.counters.failed(1);
                    Outcome::Failed
                } else {
                    self.failed_attempt();
                    Outcome::Retry
                };
                if let Err(e) = self.spool.resolve(pos, outcome) {
                    self.counters.errors(1);
                    eprintln!("sensor: kafka: {e}");
                }
            }
        }
    }

    fn failed_attempt(&mut self) {
        if self.healthy || Instant::now() >= self.next_attempt {
            self.failed_attempts += 1;
            self.next_attempt = Instant::now() + self.backoff;
            self.backoff = (self.backoff * 2).min(Duration::from_millis(u64::from(
                self.config.retry_backoff_max_ms,
            )));
        }
        self.healthy = false;
    }

    fn feed_from_spool(&mut self) {
        if self.spool.pending() == 0 || Instant::now() < self.next_attempt {
            return;
        }
        if self.closing && !self.healthy {
            // At shutdown, probing a broker that is away would only delay the exit.
            return;
        }
        let window = if self.healthy && !self.context().brokers_down.load(Ordering::Relaxed) {
            SPOOL_WINDOW
        } else {
            1
        };
        while self.spool.in_flight() < window {
            let (pos, record) = match self.spool.next_record() {
                Ok(Some(next)) => next,
                Ok(None) => break,
                Err(e) => {
                    self.counters.errors(1);
                    eprintln!("sensor: kafka: {e}");
                    self.failed_attempt();
                    break;
                }
            };
            let sent = self.producer.send(
                BaseRecord::with_opaque_to(&self.config.topic, Box::new(Origin::Spool(pos)))
                    .key(&record.key[..])
                    .payload(&record.payload[..])
                    .timestamp(record.timestamp_ms),
            );
            if let Err((error, _)) = sent {
                let outcome = if permanent(&error) {
                    self.counters.failed(1);
                    self.counters.errors(1);
                    Outcome::Failed
                } else {
                    Outcome::Retry
                };
                let _ = self.spool.resolve(pos, outcome);
                if outcome == Outcome::Retry {
                    // librdkafka's queue is full: come back on the next turn.
                    break;
                }
            }
        }
    }

    /// After a fatal error (e.g. the idempotent producer lost its sequence), or after repeated
    /// failed attempts, the producer is made anew: the old one is purged (everything
    /// unacknowledged goes back to the spool) and dropped.
    fn restart_producer(&mut self, reason: &str) {
        eprintln!("sensor: kafka: {reason}; recreating the producer");
        self.drain_producer();
        match create_producer(&self.config, &self.sensor_name, &self.counters) {
            Ok(p) => {
                self.producer = p;
                self.counters.producer_restarts(1);
            }
            Err(e) => {
                // Keep the old one: its sends fail and the records stay in the spool.
                eprintln!("sensor: kafka: {e}");
                self.context().fatal.store(false, Ordering::Relaxed);
            }
        }
        self.failed_attempts = 0;
        self.healthy = false;
        self.next_attempt = Instant::now() + self.backoff;
    }

    /// Purges librdkafka's queues and collects every report, so that nothing stays in flight.
    fn drain_producer(&mut self) {
        self.producer
            .purge(PurgeConfig::default().queue().inflight());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            self.producer.poll(Duration::from_millis(10));
            for report in self.context().take() {
                self.handle(report);
            }
            if (self.live_in_flight == 0 && self.spool.in_flight() == 0)
                || Instant::now() >= deadline
            {
                break;
            }
        }
        if self.live_in_flight > 0 {
            // librdkafka lost track of them: they are neither delivered nor spooled.
            self.counters.failed(self.live_in_flight);
            self.live_in_flight = 0;
        }
    }

    fn shutdown(mut self) {
        self.closing = true;
        let deadline =
            Instant::now() + Duration::from_millis(u64::from(self.config.shutdown_timeout_ms));
        loop {
            self.service(Duration::from_millis(10));
            let idle = self.live_in_flight == 0 && self.spool.in_flight() == 0;
            if idle && (self.spool.pending() == 0 || !self.healthy) {
                break;
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        self.drain_producer();
        if let Err(e) = self.spool.flush() {
            eprintln!("sensor: kafka: {e}");
        }
        self.counters.set_spool(
            self.spool.pending(),
            self.spool.bytes(),
            self.spool.corrupt(),
        );
        let pending = self.spool.pending();
        let dir = self.spool.dir().to_path_buf();
        if let Err(e) = self.spool.close() {
            self.counters.errors(1);
            eprintln!("sensor: kafka: {e}");
        }
        if pending > 0 {
            eprintln!(
                "sensor: kafka: {pending} events left in the spool {}; the next run sends them",
                dir.display()
            );
        }
    }

    fn log_transitions(&mut self) {
        let spooling = self.spool.pending() > 0;
        if spooling != self.spooling_logged {
            self.spooling_logged = spooling;
            if spooling {
                let why = self
                    .context()
                    .take_error()
                    .unwrap_or_else(|| "deliveries failing or slow".into());
                eprintln!(
                    "sensor: kafka: {why}; spooling events to {}",
                    self.spool.dir().display()
                );
            } else {
                self.shed_logged = false;
                eprintln!("sensor: kafka: spool drained; sending live again");
            }
        }
    }
}
