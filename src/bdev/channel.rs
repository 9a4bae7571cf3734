//! A bdev's I/O channel on one reactor: submission, validation, completion delivery, NoMem retries, rate limiting and the poller that serves channels with work.

use super::iostat::IoStats;
use super::{compare, histogram, qos, range_lock};
use super::{BdevError, BdevHandle, BdevIo, IoSink, IoStatus, IoType, ModuleChannel};
use crate::reactor::{self, PollStatus, PollerHandle};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Instant;

pub(super) struct ChannelCore {
    pub(super) sink: Rc<dyn IoSink>,
    pub(super) block_size: u64,
    /// Completions waiting for delivery outside submit/poll.
    pub(super) ready: RefCell<VecDeque<BdevIo>>,
    /// I/O a module answered NoMem, to resubmit.
    pub(super) nomem: RefCell<VecDeque<BdevIo>>,
    /// >0 while the module is executing (submit or poll): completions are queued.
    pub(super) in_module: Cell<u32>,
    /// Submitted and not yet delivered.
    pub(super) outstanding: Cell<usize>,
    pub(super) stats: RefCell<IoStats>,
    /// This channel's latency histogram while the bdev's is enabled.
    pub(super) histogram: RefCell<Option<Box<histogram::Histogram>>>,
    /// A channel whose module needs no poll has no poller of its own: it is put on this
    /// reactor's list of channels with work (see `Pending`) when a completion or retry is
    /// queued, and polled from there. `scheduled`: it is on that list; `owner`: the channel.
    pub(super) own_poller: bool,
    pub(super) scheduled: Cell<bool>,
    pub(super) owner: RefCell<Weak<ChannelShared>>,
    /// Range locks on this channel and the writes they hold back (see `range_lock`).
    pub(super) locks: range_lock::ChannelLocks,
}

/// A module's handle for completing I/O of one channel.
#[derive(Clone)]
pub struct Completer(pub(super) Rc<ChannelCore>);

impl Completer {
    /// Completes `io` with `status`. `NoMem` queues it for a retry instead.
    pub fn complete(&self, mut io: BdevIo, status: IoStatus) {
        let core = &self.0;
        if status == IoStatus::NoMem {
            core.nomem.borrow_mut().push_back(io);
            core.schedule();
            return;
        }
        io.status = status;
        if core.in_module.get() > 0 {
            core.ready.borrow_mut().push_back(io);
            core.schedule();
        } else {
            core.deliver(io, ChannelCore::clock());
        }
    }
}

impl ChannelCore {
    /// Puts the channel on this reactor's list of channels with work, unless it has a
    /// poller of its own or is on the list already.
    pub(super) fn schedule(&self) {
        if self.own_poller || self.scheduled.get() {
            return;
        }
        if let Some(ch) = self.owner.borrow().upgrade() {
            // (Not during the thread's teardown, when the list is gone.)
            let queued = PENDING.try_with(|p| p.borrow_mut().push(ch)).is_ok();
            self.scheduled.set(queued);
        }
    }

    /// The time stamp of I/O submitted or completed now: the start of the current reactor
    /// loop (`reactor::now()`, no clock read; the clock itself off a reactor). Reading the
    /// clock per I/O cost more than a malloc bdev's whole I/O (and per batch still 7 % of a
    /// core on io_uring, whose loops are short), so latency statistics have the granularity
    /// of a reactor loop: microseconds under load, 0 for I/O that completes within the loop
    /// that submitted it (malloc, null).
    pub(super) fn clock() -> Instant {
        crate::reactor::now()
    }

    /// Hands a completed I/O to the sink; `now` is the completion time (one clock read
    /// serves a whole batch of deliveries).
    pub(super) fn deliver(&self, mut io: BdevIo, now: Instant) {
        self.outstanding.set(self.outstanding.get() - 1);
        self.locks.write_left(&mut io);
        let lat = io.leave_layer(now);
        if io.status == IoStatus::Success {
            let bytes = match io.io_type {
                IoType::Read | IoType::Write | IoType::Unmap | IoType::WriteZeroes => {
                    io.num_blocks.saturating_mul(self.block_size)
                }
                _ => 0,
            };
            self.stats.borrow_mut().record(io.io_type, bytes, lat);
            if let Some(h) = self.histogram.borrow_mut().as_mut() {
                h.tally(io.io_type, lat);
            }
        } else {
            self.stats.borrow_mut().record_error(io.io_type);
        }
        self.sink.io_done(io);
    }
}

pub(super) struct ChannelShared {
    pub(super) core: Rc<ChannelCore>,
    pub(super) module: RefCell<Option<Box<dyn ModuleChannel>>>,
    pub(super) bdev: BdevHandle,
    pub(super) reactor_core: u32,
    pub(super) poller: RefCell<Option<PollerHandle>>,
    pub(super) closing: Cell<bool>,
    /// The module's `needs_poll`.
    pub(super) module_polled: bool,
    /// The bdev's rate limits, if any (see `qos`), and the I/O waiting for them in order,
    /// released by the QoS poller (registered only while the bdev has limits).
    pub(super) qos: RefCell<Option<Arc<qos::Qos>>>,
    pub(super) qos_wait: RefCell<VecDeque<BdevIo>>,
    pub(super) qos_poller: RefCell<Option<PollerHandle>>,
    /// The layer's compare / compare-and-write for a module without them (opened by the
    /// first such I/O).
    pub(super) fallback: RefCell<Option<Rc<compare::Fallback>>>,
}

/// A bdev's I/O channel on one reactor. Dropping it closes it: I/O still in flight
/// completes to the sink, then the module channel is released.
pub struct IoChannel {
    pub(super) shared: Rc<ChannelShared>,
}

impl IoChannel {
    pub(crate) fn open(bdev: &BdevHandle, sink: Rc<dyn IoSink>) -> Result<IoChannel, BdevError> {
        let reactor_core = reactor::current_core()
            .ok_or_else(|| BdevError::Invalid("channels are opened on a reactor".into()))?;
        if bdev.is_removed() {
            return Err(BdevError::Removing(bdev.info.name.clone()));
        }
        let core = Rc::new(ChannelCore {
            sink,
            block_size: bdev.info.block_size as u64,
            // Grown by the first I/O (then kept): an idle channel holds no queue memory.
            ready: RefCell::new(VecDeque::new()),
            nomem: RefCell::new(VecDeque::new()),
            in_module: Cell::new(0),
            outstanding: Cell::new(0),
            stats: RefCell::new(IoStats::new()),
            histogram: RefCell::new(
                bdev.histogram_config()
                    .map(|c| Box::new(histogram::Histogram::new(c))),
            ),
            own_poller: true,
            scheduled: Cell::new(false),
            owner: RefCell::new(Weak::new()),
            locks: range_lock::ChannelLocks::new(bdev),
        });
        let module = bdev.module.open_channel(bdev, &Completer(core.clone()))?;
        let module_polled = module.needs_poll();
        let mut core = core;
        if !module_polled {
            // Only this function holds the core yet (the module keeps no completer of a
            // module that needs no poll; if it did, the channel keeps a poller of its own).
            if let Some(c) = Rc::get_mut(&mut core) {
                c.own_poller = false;
            }
        }
        let own_poller = core.own_poller;
        let shared = Rc::new(ChannelShared {
            core,
            module: RefCell::new(Some(module)),
            bdev: bdev.clone(),
            reactor_core,
            poller: RefCell::new(None),
            closing: Cell::new(false),
            module_polled,
            qos: RefCell::new(None),
            qos_wait: RefCell::new(VecDeque::new()),
            qos_poller: RefCell::new(None),
            fallback: RefCell::new(None),
        });
        *shared.core.owner.borrow_mut() = Rc::downgrade(&shared);
        shared.set_qos(bdev.qos());
        if own_poller {
            // The poller owns the channel: it outlives the handle until in-flight I/O is done.
            let polled = shared.clone();
            let poller = reactor::register_poller(
                format!("bdev_channel_{}", bdev.info.name),
                0,
                move || polled.poll(),
            );
            *shared.poller.borrow_mut() = Some(poller);
        } else {
            // Polled from this reactor's list of channels with work, which owns a closing
            // channel until its in-flight I/O is done; an idle channel costs no poll.
            Pending::ensure_poller();
        }
        CHANNELS.with(|c| {
            let mut c = c.borrow_mut();
            // Dead entries are dropped when the list doubled since the last sweep, so that
            // opening n channels costs O(n), not O(n^2).
            if c.len() >= CHANNELS_SWEEP.get() {
                c.retain(|w| w.strong_count() > 0);
                CHANNELS_SWEEP.set((c.len() * 2).max(64));
            }
            c.push(Rc::downgrade(&shared));
        });
        Ok(IoChannel { shared })
    }

    pub fn bdev(&self) -> &BdevHandle {
        &self.shared.bdev
    }

    /// I/O submitted and not yet delivered.
    pub fn outstanding(&self) -> usize {
        self.shared.core.outstanding.get()
    }

    /// Submits `io`. Its completion arrives later at the sink (never inside this call).
    pub fn submit(&self, mut io: BdevIo) {
        let s = &self.shared;
        assert_eq!(
            reactor::current_core(),
            Some(s.reactor_core),
            "I/O is submitted on the channel's own reactor"
        );
        let core = &s.core;
        core.outstanding.set(core.outstanding.get() + 1);
        io.enter_layer(ChannelCore::clock());
        io.status = IoStatus::Pending;
        let verdict = validate(&s.bdev, &io);
        if verdict != IoStatus::Pending || s.closing.get() {
            io.status = if verdict == IoStatus::Pending {
                IoStatus::Aborted
            } else {
                verdict
            };
            core.ready.borrow_mut().push_back(io);
            core.schedule();
            return;
        }
        if io.io_type.is_compare() && !s.bdev.supports(io.io_type) {
            return compare::Fallback::submit(s, io);
        }
        s.submit_admitted(io);
    }
}

/// The checks every I/O passes before a module sees it: `Pending` means accepted.
pub(super) fn validate(bdev: &BdevHandle, io: &BdevIo) -> IoStatus {
    if bdev.is_removed() {
        return IoStatus::Aborted;
    }
    if !bdev.supports(io.io_type) && !compare::Fallback::serves(bdev, io.io_type) {
        return IoStatus::Unsupported;
    }
    if io.io_type.has_range() {
        if io.num_blocks == 0 {
            return IoStatus::InvalidRequest;
        }
        match io.offset_blocks.checked_add(io.num_blocks) {
            Some(end) if end <= bdev.num_blocks() => {}
            _ => return IoStatus::InvalidLbaRange,
        }
    }
    if io.io_type.carries_data() {
        let want = io
            .num_blocks
            .checked_mul(bdev.info.block_size as u64 * compare::data_copies(io.io_type));
        if want != Some(io.buf_len() as u64) {
            return IoStatus::InvalidRequest;
        }
        if io.io_type == IoType::CompareAndWrite && compare::split_at(io).is_none() {
            return IoStatus::InvalidRequest;
        }
    }
    IoStatus::Pending
}

impl ChannelShared {
    /// Submits an accepted I/O: held back by a range lock it overlaps (block-modifying
    /// I/O), then by the rate limits, then to the module.
    pub(super) fn submit_admitted(&self, mut io: BdevIo) {
        let core = &self.core;
        if io.io_type.modifies_blocks() && core.locks.holds_back(&mut io) {
            core.locks.hold(io);
            return;
        }
        if let Some(q) = self.qos.borrow().as_ref() {
            let mut wait = self.qos_wait.borrow_mut();
            if !wait.is_empty() || !q.admit(&io, core.block_size) {
                wait.push_back(io);
                return;
            }
        }
        self.submit_to_module(io);
    }

    pub(super) fn submit_to_module(&self, io: BdevIo) {
        let core = &self.core;
        let completer = Completer(core.clone());
        core.in_module.set(core.in_module.get() + 1);
        match self.module.borrow_mut().as_mut() {
            Some(m) => m.submit(io, &completer),
            None => completer.complete(io, IoStatus::Aborted),
        }
        core.in_module.set(core.in_module.get() - 1);
    }

    pub(super) fn poll(&self) -> PollStatus {
        let core = &self.core;
        // Fast path of a loop with nothing to do (a module completing from `submit`, no
        // completion queued, no retry, not closing): a few loads, no module call.
        if !self.module_polled
            && !self.closing.get()
            && core.ready.borrow().is_empty()
            && core.nomem.borrow().is_empty()
        {
            return PollStatus::Idle;
        }
        let mut work = 0;
        {
            let completer = Completer(core.clone());
            core.in_module.set(core.in_module.get() + 1);
            if let Some(m) = self.module.borrow_mut().as_mut() {
                work += m.poll(&completer);
            }
            core.in_module.set(core.in_module.get() - 1);
        }
        // Deliver what is ready now; completions these deliveries cause wait for the next
        // poll, so a sink resubmitting at once cannot loop here forever.
        let ready = core.ready.borrow().len();
        if ready > 0 {
            let now = ChannelCore::clock();
            for _ in 0..ready {
                let Some(io) = core.ready.borrow_mut().pop_front() else {
                    break;
                };
                core.deliver(io, now);
                work += 1;
            }
        }
        let retries = core.nomem.borrow().len();
        for _ in 0..retries {
            let Some(io) = core.nomem.borrow_mut().pop_front() else {
                break;
            };
            self.submit_to_module(io);
            work += 1;
        }
        if self.closing.get() && core.outstanding.get() == 0 {
            self.finish_close();
        }
        PollStatus::from_work(work)
    }

    /// Installs (or removes) the bdev's rate limits on this channel; without limits, I/O
    /// still waiting goes to the module at once.
    pub(super) fn set_qos(self: &Rc<Self>, limits: Option<Arc<qos::Qos>>) {
        let limited = limits.is_some();
        *self.qos.borrow_mut() = limits;
        let mut poller = self.qos_poller.borrow_mut();
        if limited && poller.is_none() {
            let me = Rc::downgrade(self);
            *poller = Some(reactor::register_poller(
                format!("bdev_qos_{}", self.bdev.info.name),
                qos::RELEASE_PERIOD.as_micros() as u64,
                move || match me.upgrade() {
                    Some(ch) => PollStatus::from_work(ch.release_qos()),
                    None => PollStatus::Idle,
                },
            ));
        } else if !limited {
            if let Some(p) = poller.take() {
                p.unregister();
            }
            drop(poller);
            self.release_qos();
        }
    }

    /// Submits waiting I/O, in order, while the limits admit it (all of it when the bdev
    /// has no limits any more; aborted when the channel is closing). Returns how many.
    pub(super) fn release_qos(&self) -> usize {
        let mut released = 0;
        loop {
            let io = {
                let mut wait = self.qos_wait.borrow_mut();
                let Some(front) = wait.front() else { break };
                let admitted = match self.qos.borrow().as_ref() {
                    _ if self.closing.get() => true,
                    Some(q) => q.admit(front, self.core.block_size),
                    None => true,
                };
                if !admitted {
                    break;
                }
                wait.pop_front()
            };
            let Some(mut io) = io else { break };
            released += 1;
            if self.closing.get() {
                io.status = IoStatus::Aborted;
                self.core.ready.borrow_mut().push_back(io);
                self.core.schedule();
            } else {
                self.submit_to_module(io);
            }
        }
        released
    }

    pub(super) fn finish_close(&self) {
        if let Some(p) = self.poller.borrow_mut().take() {
            p.unregister();
        }
        if let Some(p) = self.qos_poller.borrow_mut().take() {
            p.unregister();
        }
        drop(self.module.borrow_mut().take());
        drop(self.fallback.borrow_mut().take());
        self.bdev.closed_stats().merge(&self.core.stats.borrow());
        if let Some(h) = self.core.histogram.borrow_mut().take() {
            if let Some(closed) = self.bdev.histogram_lock().as_mut() {
                closed.merge(&h);
            }
        }
        self.core.stats.borrow_mut().clear();
    }
}

impl Drop for IoChannel {
    fn drop(&mut self) {
        self.shared.closing.set(true);
        if self.shared.core.outstanding.get() == 0 && reactor::current_core().is_some() {
            self.shared.finish_close();
        } else {
            // Polled until its in-flight I/O is delivered (then it finishes closing).
            self.shared.core.schedule();
        }
    }
}

/// This reactor's channels with queued work (completions to deliver, retries, a close to
/// finish) among those without a poller of their own, and the one poller that serves
/// them: the cost of a poll is the channels with work, not the channels open. Two vectors
/// swap so that steady-state polling allocates nothing.
struct Pending;

thread_local! {
    /// This reactor's open channels, for iostat.
    pub(super) static CHANNELS: RefCell<Vec<Weak<ChannelShared>>> = const { RefCell::new(Vec::new()) };
    static PENDING: RefCell<Vec<Rc<ChannelShared>>> = const { RefCell::new(Vec::new()) };
    static PENDING_SPARE: RefCell<Vec<Rc<ChannelShared>>> = const { RefCell::new(Vec::new()) };
    static PENDING_POLLER: Cell<bool> = const { Cell::new(false) };
    /// Length of `CHANNELS` at which its dead entries are swept next.
    static CHANNELS_SWEEP: Cell<usize> = const { Cell::new(64) };
}

/// Drops the channels still listed when the reactor drops the poller (teardown), on the
/// reactor's thread.
struct PendingGuard;

impl Drop for PendingGuard {
    fn drop(&mut self) {
        let left = PENDING.with(|p| std::mem::take(&mut *p.borrow_mut()));
        drop(left);
        PENDING_POLLER.with(|p| p.set(false));
    }
}

impl Pending {
    fn ensure_poller() {
        if PENDING_POLLER.with(|p| p.replace(true)) {
            return;
        }
        let guard = PendingGuard;
        let _handle = reactor::register_poller("bdev_channels", 0, move || {
            let _ = &guard;
            Pending::poll()
        });
    }

    fn poll() -> PollStatus {
        if PENDING.with(|p| p.borrow().is_empty()) {
            return PollStatus::Idle;
        }
        let mut batch = PENDING_SPARE.with(|s| std::mem::take(&mut *s.borrow_mut()));
        PENDING.with(|p| std::mem::swap(&mut *p.borrow_mut(), &mut batch));
        let mut work = 0;
        for ch in batch.drain(..) {
            ch.core.scheduled.set(false);
            if matches!(ch.poll(), PollStatus::Busy) {
                work += 1;
            }
            let core = &ch.core;
            let finished = ch.module.borrow().is_none();
            if !core.ready.borrow().is_empty()
                || !core.nomem.borrow().is_empty()
                || (ch.closing.get() && !finished)
            {
                core.schedule();
            }
        }
        PENDING_SPARE.with(|s| *s.borrow_mut() = batch);
        PollStatus::from_work(work)
    }
}
