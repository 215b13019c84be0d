//! Analysts on threads of their own (`--threads`), fed by the thread that reads records and
//! feeding the sink on that same thread, in the order the records were read.
//!
//! Everything an analyst keeps is keyed by source (IP-ID history, SYN joins, sampling) or is a
//! cache whose verdicts do not depend on what it held, so records are shared out by a keyed hash
//! of the source address and a source's records meet the same state whichever analyst has them.
//! Campaigns span sources, so the sink alone aggregates, taking records in the order they were
//! read: its documents are those of one thread. Two differences, documented for the flag: each
//! analyst keeps its own source bound, and under `--event-detail lean` each writes its own
//! compact example of a template.
//!
//! Records go out in rounds of at most [`ROUND`]: each analyst gets its share of a round as one
//! batch (possibly empty), and the pool keeps the round's order (which analyst had each record).
//! At most [`ROUNDS_OUT`] rounds and [`RECORDS_OUT`] records are out at a time, and every queue
//! holds [`ROUNDS_OUT`] batches, so no send ever waits: the one thread that feeds and drains the
//! queues cannot deadlock with the analysts. Live, a drain of the rings often gives a handful of
//! records, sent at once as a small round: the bound on rounds is loose so that a few such rounds
//! do not make the reading thread wait while the analysts wake up; the bound on records is what
//! holds memory.
//!
//! The live agent's loop, on a tokio runtime, waits for a round on [`AnalystPool::ready`];
//! `sensor analyze`, and the live loop when no more may go out, block instead
//! ([`AnalystPool::wait`]): an analyst's share of one round is a fraction of a millisecond.

use std::{
    collections::VecDeque,
    hash::BuildHasher as _,
    sync::{
        Arc,
        mpsc::{Receiver, SyncSender, TryRecvError, sync_channel},
    },
    thread::JoinHandle,
};

use tokio::sync::Notify;

use super::{
    analyst::{Analysed, Analyst, sum_analyst_counters},
    batch::Batch,
};
use crate::{
    counters::AgentCounters, fingerprint::Engine, fingerprint::ipid::SourceHashing, record::Record,
};

/// Records per round (in unit tests, few: many rounds, and batches left empty). Each round wakes
/// every analyst and is woken back by each: rounds of 512 instead of 128 took 9 % less wall
/// time and 5 % less CPU time offline (lean, three analysts, two CPUs; BENCHMARKS.md).
pub const ROUND: usize = if cfg!(test) { 7 } else { 512 };

/// Rounds out at a time, and the capacity of every queue.
pub const ROUNDS_OUT: usize = 16;

/// Records out at a time (four full rounds).
pub const RECORDS_OUT: usize = 4 * ROUND;

/// A round's order names each record's analyst in a byte.
pub const MAX_ANALYSTS: usize = u8::MAX as usize;

/// One analyst's thread, as the feeding thread sees it.
struct Worker {
    to: SyncSender<Batch>,
    from: Receiver<Batch>,
    thread: Option<JoinHandle<()>>,
    /// This round's batch, once received.
    arrived: Option<Batch>,
    /// The analyst's counters as its last batch left them.
    counters: AgentCounters,
}

pub struct AnalystPool {
    workers: Vec<Worker>,
    /// Rung by an analyst after each batch it sends back.
    ready: Arc<Notify>,
    /// Keyed at random: traffic crafted to put every source on one analyst costs speed only.
    hashing: SourceHashing,
    /// The round being filled, one batch per analyst, and which analyst has each record.
    filling: Vec<Batch>,
    order: Vec<u8>,
    /// The orders of the rounds out, oldest first, and the records they hold.
    out: VecDeque<Vec<u8>>,
    records_out: usize,
    /// Emptied batches and orders, for the rounds to come.
    spare_batches: Vec<Batch>,
    spare_orders: Vec<Vec<u8>>,
    engine: Arc<Engine>,
    /// The sensor name the analysts write into events.
    sensor: Option<String>,
}

impl AnalystPool {
    /// Starts one thread per analyst (at most [`MAX_ANALYSTS`]).
    pub fn start(analysts: Vec<Analyst>) -> std::io::Result<Self> {
        let first = analysts
            .first()
            .ok_or_else(|| std::io::Error::other("a pool of no analysts"))?;
        let engine = first.engine().clone();
        let sensor = first.sensor_name().map(str::to_owned);
        let ready = Arc::new(Notify::new());
        let mut workers = Vec::with_capacity(analysts.len());
        for (index, analyst) in analysts.into_iter().take(MAX_ANALYSTS).enumerate() {
            let (to, input) = sync_channel::<Batch>(ROUNDS_OUT);
            let (output, from) = sync_channel::<Batch>(ROUNDS_OUT);
            let rung = ready.clone();
            let thread = std::thread::Builder::new()
                .name(format!("analyst-{index}"))
                .spawn(move || analyse(analyst, input, output, rung))?;
            workers.push(Worker {
                to,
                from,
                thread: Some(thread),
                arrived: None,
                counters: AgentCounters::default(),
            });
        }
        Ok(Self {
            filling: workers.iter().map(|_| Batch::default()).collect(),
            workers,
            ready,
            hashing: SourceHashing::new(),
            order: Vec::with_capacity(ROUND),
            out: VecDeque::with_capacity(ROUNDS_OUT),
            records_out: 0,
            spare_batches: Vec::new(),
            spare_orders: Vec::new(),
            engine,
            sensor,
        })
    }

    /// Adds a record to the round being filled; true when the round is full (send it).
    pub fn push(&mut self, record: Record<'_>, wall_ns: u64) -> bool {
        let shard = (self.hashing.hash_one(record.src_ip()) % self.workers.len() as u64) as usize;
        self.filling[shard].push(record, wall_ns);
        self.order.push(shard as u8);
        self.order.len() >= ROUND
    }

    /// Analyst threads.
    pub fn threads(&self) -> usize {
        self.workers.len()
    }

    /// Records pushed and not yet sent.
    pub fn filling(&self) -> usize {
        self.order.len()
    }

    /// Rounds sent and not yet taken.
    pub fn rounds_out(&self) -> usize {
        self.out.len()
    }

    /// Whether the round being filled can be sent now (fewer than [`ROUNDS_OUT`] rounds are out,
    /// and it keeps the records out within [`RECORDS_OUT`]).
    pub fn can_send(&self) -> bool {
        self.out.len() < ROUNDS_OUT && self.records_out + self.order.len() <= RECORDS_OUT
    }

    /// Sends the round being filled, if it holds records. The caller has checked
    /// [`can_send`](Self::can_send) (and taken the oldest round if not): otherwise the round
    /// stays, to be sent later.
    pub fn send(&mut self) {
        if self.order.is_empty() || !self.can_send() {
            return;
        }
        for (worker, batch) in self.workers.iter().zip(self.filling.iter_mut()) {
            let mut next = self.spare_batches.pop().unwrap_or_default();
            next.clear();
            let batch = std::mem::replace(batch, next);
            // Never full (see the module doc); an analyst gone has panicked, which `wait` and
            // `take` report.
            let _ = worker.to.try_send(batch);
        }
        let next = self.spare_orders.pop().unwrap_or_default();
        self.records_out += self.order.len();
        self.out.push_back(std::mem::replace(&mut self.order, next));
    }

    /// Whether every batch of the oldest round out has come back, taking those that have.
    pub fn oldest_done(&mut self) -> bool {
        if self.out.is_empty() {
            return false;
        }
        let mut done = true;
        for worker in &mut self.workers {
            if worker.arrived.is_none() {
                match worker.from.try_recv() {
                    Ok(batch) => worker.arrived = Some(batch),
                    Err(TryRecvError::Empty) => done = false,
                    Err(TryRecvError::Disconnected) => worker.rethrow(),
                }
            }
        }
        done
    }

    /// Blocks until the oldest round out is analysed; at once if no round is out.
    pub fn wait(&mut self) {
        if self.out.is_empty() {
            return;
        }
        for worker in &mut self.workers {
            if worker.arrived.is_none() {
                match worker.from.recv() {
                    Ok(batch) => worker.arrived = Some(batch),
                    Err(_) => worker.rethrow(),
                }
            }
        }
    }

    /// Rung after each batch an analyst sends back: a task waiting for
    /// [`oldest_done`](Self::oldest_done) waits for it (a ring between the look and the wait is
    /// kept as a permit, so none is lost).
    pub fn ready(&self) -> Arc<Notify> {
        self.ready.clone()
    }

    /// Hands each record of the oldest round to `each`, in the order pushed, with its
    /// analysis (`None`: the copy failed validation, never expected). Call when
    /// [`oldest_done`](Self::oldest_done) or after [`wait`](Self::wait); otherwise waits.
    pub fn take(&mut self, mut each: impl FnMut(Option<(Record<'_>, u64, &Analysed<'_>)>)) {
        self.wait();
        let Some(order) = self.out.pop_front() else {
            return;
        };
        self.records_out -= order.len();
        let mut cursors = [0usize; MAX_ANALYSTS];
        let sensor = self.sensor.as_deref();
        for &shard in &order {
            let shard = usize::from(shard);
            let i = cursors[shard];
            cursors[shard] += 1;
            let handed = self.workers[shard].arrived.as_ref().and_then(|batch| {
                batch.with(i, &self.engine, sensor, |record, wall_ns, analysed| {
                    analysed.map(|analysed| each(Some((record, wall_ns, analysed))))
                })
            });
            if handed.flatten().is_none() {
                each(None);
            }
        }
        for worker in &mut self.workers {
            if let Some(batch) = worker.arrived.take() {
                worker.counters = batch.analyst_counters;
                self.spare_batches.push(batch);
            }
        }
        let mut order = order;
        order.clear();
        self.spare_orders.push(order);
    }

    /// The analysts' counters (cache, evictions), summed, as their last batches left them.
    pub fn fill_counters(&self, counters: &mut AgentCounters) {
        sum_analyst_counters(self.workers.iter().map(|w| &w.counters), counters);
    }
}

impl Worker {
    /// The analyst's thread has ended, which it does only by panicking: the panic goes on here.
    fn rethrow(&mut self) -> ! {
        if let Some(thread) = self.thread.take()
            && let Err(panic) = thread.join()
        {
            std::panic::resume_unwind(panic);
        }
        panic!("an analyst thread ended while records were out");
    }
}

impl Drop for AnalystPool {
    fn drop(&mut self) {
        for worker in &mut self.workers {
            // Closing the queue ends the thread once it has finished its batch.
            let (closed, _) = sync_channel(0);
            drop(std::mem::replace(&mut worker.to, closed));
            if let Some(thread) = worker.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

/// An analyst's thread: each batch analysed and sent back, until the queue closes.
fn analyse(
    mut analyst: Analyst,
    input: Receiver<Batch>,
    output: SyncSender<Batch>,
    ready: Arc<Notify>,
) {
    for mut batch in input {
        batch.analyse(&mut analyst);
        if output.send(batch).is_err() {
            return;
        }
        ready.notify_one();
    }
}
