//! delay: latency injection over a claimed base bdev.
//!
//! Each I/O goes to the base; when the base completes it, the completion is held until its
//! latency has passed: reads and writes use their configured average latency, one in a
//! hundred uses the p99 latency instead; other types pass at once. A timed poller per channel
//! (paused while nothing waits) releases due completions. Latencies (microseconds) change
//! live through `bdev_delay_update_latency`.

#![forbid(unsafe_code)]

use super::stack::Base;
use super::util::FastRng;
use super::{
    BdevError, BdevHandle, BdevInfo, BdevIo, Completer, IoChannel, IoSink, IoStatus, IoType,
    ModuleChannel,
};
use crate::reactor::{self, PollStatus, PollerHandle};
use serde_json::{json, Value};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const PRODUCT_NAME: &str = "delay";
/// Longest latency applied (longer settings are clamped): one hour.
const MAX_LATENCY_US: u64 = 3_600_000_000;
/// Period of the timed poller releasing completions.
const TIMER_PERIOD_US: u64 = 10;

/// Which latency `bdev_delay_update_latency` changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatencyKind {
    AvgRead,
    P99Read,
    AvgWrite,
    P99Write,
}

impl LatencyKind {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "avg_read" => LatencyKind::AvgRead,
            "p99_read" => LatencyKind::P99Read,
            "avg_write" => LatencyKind::AvgWrite,
            "p99_write" => LatencyKind::P99Write,
            _ => return None,
        })
    }
}

/// Latencies in microseconds, shared with every channel.
#[derive(Debug, Default)]
pub struct Latencies {
    us: [AtomicU64; 4],
}

impl Latencies {
    pub fn get(&self, k: LatencyKind) -> u64 {
        self.us[k as usize].load(Ordering::Relaxed)
    }
    pub fn set(&self, k: LatencyKind, us: u64) {
        self.us[k as usize].store(us, Ordering::Relaxed)
    }
}

pub struct DelayBdev {
    base: Base,
    latencies: Arc<Latencies>,
}

impl DelayBdev {
    pub fn latencies(&self) -> &Latencies {
        &self.latencies
    }
}

/// Completions waiting for their time, one FIFO per latency kind (each in deadline order
/// while the latency is unchanged), plus those that pass at once.
struct Held {
    queues: [VecDeque<(Instant, BdevIo)>; 4],
    timer: Option<PollerHandle>,
    timer_running: bool,
    rng: FastRng,
    latencies: Arc<Latencies>,
    upper: Completer,
}

impl Held {
    fn hold(&mut self, io: BdevIo) {
        let p99 = self.rng.below(100) == 0;
        let kind = match (io.io_type, p99) {
            (IoType::Read, false) => LatencyKind::AvgRead,
            (IoType::Read, true) => LatencyKind::P99Read,
            (IoType::Write, false) => LatencyKind::AvgWrite,
            (IoType::Write, true) => LatencyKind::P99Write,
            _ => unreachable!("only reads and writes are held"),
        };
        let due =
            Instant::now() + Duration::from_micros(self.latencies.get(kind).min(MAX_LATENCY_US));
        self.queues[kind as usize].push_back((due, io));
        if !self.timer_running {
            if let Some(t) = &self.timer {
                t.resume();
                self.timer_running = true;
            }
        }
    }

    fn pop_due(&mut self, now: Instant) -> Option<BdevIo> {
        for q in self.queues.iter_mut() {
            if q.front().is_some_and(|(due, _)| *due <= now) {
                return q.pop_front().map(|(_, io)| io);
            }
        }
        None
    }

    fn is_empty(&self) -> bool {
        self.queues.iter().all(VecDeque::is_empty)
    }
}

/// Receives base completions: holds successful reads and writes, passes the rest.
struct DelaySink {
    held: Rc<RefCell<Held>>,
}

impl IoSink for DelaySink {
    fn io_done(&self, io: BdevIo) {
        if io.status() == IoStatus::Success && matches!(io.io_type, IoType::Read | IoType::Write) {
            self.held.borrow_mut().hold(io);
        } else {
            let upper = self.held.borrow().upper.clone();
            let status = io.status();
            upper.complete(io, status);
        }
    }
}

struct DelayChannel {
    base: IoChannel,
    held: Rc<RefCell<Held>>,
}

impl ModuleChannel for DelayChannel {
    fn submit(&mut self, io: BdevIo, _done: &Completer) {
        self.base.submit(io);
    }
}

impl Drop for DelayChannel {
    fn drop(&mut self) {
        if let Some(t) = self.held.borrow_mut().timer.take() {
            // Off its reactor (thread teardown) the poller goes with the reactor anyway.
            if reactor::current_core() == Some(t.core()) {
                t.unregister();
            }
        }
    }
}

fn release_due(held: &Rc<RefCell<Held>>) -> PollStatus {
    let now = Instant::now();
    let mut n = 0;
    loop {
        // Release the borrow before completing: the user may submit from its sink.
        let next = held.borrow_mut().pop_due(now);
        let Some(io) = next else { break };
        let upper = held.borrow().upper.clone();
        upper.complete(io, IoStatus::Success);
        n += 1;
    }
    let mut h = held.borrow_mut();
    if h.is_empty() && h.timer_running {
        if let Some(t) = &h.timer {
            t.pause();
        }
        h.timer_running = false;
    }
    PollStatus::from_work(n)
}

impl super::Bdev for DelayBdev {
    fn open_channel(
        &self,
        _bdev: &BdevHandle,
        done: &Completer,
    ) -> Result<Box<dyn ModuleChannel>, BdevError> {
        let held = Rc::new(RefCell::new(Held {
            queues: Default::default(),
            timer: None,
            timer_running: false,
            rng: FastRng::new(),
            latencies: self.latencies.clone(),
            upper: done.clone(),
        }));
        let sink: Rc<dyn IoSink> = Rc::new(DelaySink { held: held.clone() });
        let base = IoChannel::open(&self.base.handle, sink)?;
        let weak = Rc::downgrade(&held);
        let timer = reactor::register_poller("bdev_delay_timer", TIMER_PERIOD_US, move || {
            weak.upgrade().map_or(PollStatus::Idle, |h| release_due(&h))
        });
        timer.pause();
        held.borrow_mut().timer = Some(timer);
        Ok(Box::new(DelayChannel { base, held }))
    }

    fn driver_specific(&self) -> Value {
        json!({"delay": {
            "base_bdev_name": self.base.name(),
            "avg_read_latency": self.latencies.get(LatencyKind::AvgRead),
            "p99_read_latency": self.latencies.get(LatencyKind::P99Read),
            "avg_write_latency": self.latencies.get(LatencyKind::AvgWrite),
            "p99_write_latency": self.latencies.get(LatencyKind::P99Write),
        }})
    }

    fn config(&self, info: &BdevInfo) -> Option<Value> {
        Some(crate::rpc::config_entry(
            "bdev_delay_create",
            json!({
                "name": info.name,
                "base_bdev_name": self.base.name(),
                "avg_read_latency": self.latencies.get(LatencyKind::AvgRead),
                "p99_read_latency": self.latencies.get(LatencyKind::P99Read),
                "avg_write_latency": self.latencies.get(LatencyKind::AvgWrite),
                "p99_write_latency": self.latencies.get(LatencyKind::P99Write),
                "uuid": info.uuid,
            }),
        ))
    }

    fn destruct(&self) {
        self.base.close();
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[derive(Debug, Clone)]
pub struct DelayOpts {
    pub name: String,
    pub base_bdev_name: String,
    pub avg_read_latency: u64,
    pub p99_read_latency: u64,
    pub avg_write_latency: u64,
    pub p99_write_latency: u64,
    pub uuid: Option<String>,
}

pub fn create(opts: DelayOpts, done: impl FnOnce(Result<BdevHandle, BdevError>) + Send + 'static) {
    let made = (|| {
        if opts.p99_read_latency < opts.avg_read_latency
            || opts.p99_write_latency < opts.avg_write_latency
        {
            return Err(BdevError::Invalid(
                "p99 latency must not be lower than the average latency".into(),
            ));
        }
        let (info, base) = super::stack::open_stacked(
            &opts.name,
            &opts.base_bdev_name,
            "bdev_delay",
            PRODUCT_NAME,
            opts.uuid.as_deref(),
        )?;
        let latencies = Arc::new(Latencies::default());
        latencies.set(LatencyKind::AvgRead, opts.avg_read_latency);
        latencies.set(LatencyKind::P99Read, opts.p99_read_latency);
        latencies.set(LatencyKind::AvgWrite, opts.avg_write_latency);
        latencies.set(LatencyKind::P99Write, opts.p99_write_latency);
        Ok((info, DelayBdev { base, latencies }))
    })();
    match made {
        Ok((info, bdev)) => super::register(info, Box::new(bdev), done),
        Err(e) => done(Err(e)),
    }
}
