//! Block-range locks held on every channel of a bdev, so that a compare-and-write the layer emulates is atomic against all other writes.
//!
//! Like SPDK's bdev range lock. A lock is taken on the reactor of the compare-and-write:
//! the bdev-wide list (`BdevLocks`, under a mutex touched only when a lock is taken or
//! released and when a channel opens) admits it unless it overlaps a lock held or queued
//! before it, in which case it waits there until the overlapping one is released. Once
//! admitted it is installed by a message to every reactor on each of the bdev's channels
//! (`ChannelLocks`): from then on the channel holds back every block-modifying I/O (write,
//! write zeroes, unmap, compare-and-write) that overlaps the range, except the lock
//! owner's own, and the lock is granted once each channel's block-modifying I/O submitted
//! before it completed. Releasing removes it everywhere (a message to every reactor), and
//! each channel resubmits in order what it held back.
//!
//! Waiting for earlier writes costs the write path a counter: every block-modifying I/O
//! is counted in the channel's current *epoch* (one of two counters) and uncounted when
//! delivered. A lock arriving at a channel flips the epoch and is acknowledged when the
//! previous epoch's counter reaches zero: the writes it waits for are those submitted
//! before it, overlapping or not, and new writes never delay it. The check on the write
//! path with no lock on the channel is an empty-vector test; nothing allocates or locks.

use super::{for_local_channels, BdevHandle, BdevIo};
use crate::reactor;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// A locked block range, named by its lock's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LockedRange {
    pub(super) id: u64,
    pub(super) offset: u64,
    pub(super) end: u64,
}

impl LockedRange {
    pub(super) fn new(id: u64, offset: u64, num_blocks: u64) -> Self {
        Self {
            id,
            offset,
            end: offset.saturating_add(num_blocks),
        }
    }

    fn overlaps(&self, offset: u64, end: u64) -> bool {
        offset < self.end && self.offset < end
    }

    fn overlaps_range(&self, other: &LockedRange) -> bool {
        self.overlaps(other.offset, other.end)
    }
}

/// The bdev-wide locks: held (installed or being installed) and waiting for an
/// overlapping one to go, in the order they were asked for.
#[derive(Debug, Default)]
pub(super) struct BdevLocks {
    held: Vec<LockedRange>,
    waiting: VecDeque<(LockedRange, u32)>,
}

/// The range-lock state a block-modifying I/O carries through the layers: per stack
/// layer, whether it was counted in its channel's epoch and in which (two bits a layer),
/// and the lock whose owner submitted it (0: none).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct IoMark {
    counted: u16,
    pub(super) owner: u64,
}

/// Stack layers whose epochs an I/O records.
const MARKED_LAYERS: u8 = 8;

impl IoMark {
    fn layer(io: &BdevIo) -> Option<u8> {
        let d = io.depth.checked_sub(1)?;
        (d < MARKED_LAYERS).then_some(d)
    }
}

/// The lock on one channel of one lock being installed: acknowledged by each channel
/// once its earlier writes are done; the last acknowledgement grants the lock on the
/// reactor that asked for it.
struct Install {
    pending: AtomicUsize,
    core: u32,
    id: u64,
}

impl Install {
    fn ack(&self) {
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            let id = self.id;
            reactor::send_to(self.core, move || granted(id));
        }
    }
}

/// One channel's locks and the block-modifying I/O they hold back.
pub(super) struct ChannelLocks {
    ranges: RefCell<Vec<LockedRange>>,
    held_back: RefCell<VecDeque<BdevIo>>,
    /// The epoch new block-modifying I/O is counted in (0 or 1) and the count of each.
    epoch: Cell<u8>,
    in_flight: [Cell<u32>; 2],
    /// The epoch being drained for `drain_waiters`; locks arriving meanwhile wait in
    /// `next_waiters` for the next flip.
    draining: Cell<Option<u8>>,
    drain_waiters: RefCell<Vec<Arc<Install>>>,
    next_waiters: RefCell<Vec<Arc<Install>>>,
}

impl ChannelLocks {
    /// A new channel's locks: those the bdev holds now (it has no earlier writes).
    pub(super) fn new(bdev: &BdevHandle) -> Self {
        let held = bdev
            .range_locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .held
            .clone();
        Self {
            ranges: RefCell::new(held),
            held_back: RefCell::new(VecDeque::new()),
            epoch: Cell::new(0),
            in_flight: [Cell::new(0), Cell::new(0)],
            draining: Cell::new(None),
            drain_waiters: RefCell::new(Vec::new()),
            next_waiters: RefCell::new(Vec::new()),
        }
    }

    /// Whether a lock holds `io` (block-modifying) back; if not, it is counted as in
    /// flight. The write path's whole cost without locks: an empty test and a count.
    #[inline]
    pub(super) fn holds_back(&self, io: &mut BdevIo) -> bool {
        let ranges = self.ranges.borrow();
        if !ranges.is_empty() {
            let end = io.offset_blocks.saturating_add(io.num_blocks);
            if ranges
                .iter()
                .any(|r| r.id != io.lock.owner && r.overlaps(io.offset_blocks, end))
            {
                return true;
            }
        }
        if let Some(layer) = IoMark::layer(io) {
            let e = self.epoch.get();
            let c = &self.in_flight[e as usize];
            c.set(c.get() + 1);
            io.lock.counted |= (0b01 | (e as u16) << 1) << (2 * layer);
        }
        false
    }

    /// Keeps `io` until the lock it overlaps is released.
    pub(super) fn hold(&self, io: BdevIo) {
        self.held_back.borrow_mut().push_back(io);
    }

    /// Uncounts a delivered I/O (no-op for I/O that was not counted on this layer).
    #[inline]
    pub(super) fn write_left(&self, io: &mut BdevIo) {
        if io.lock.counted == 0 {
            return;
        }
        let Some(layer) = IoMark::layer(io) else {
            return;
        };
        let bits = (io.lock.counted >> (2 * layer)) & 0b11;
        if bits & 0b01 == 0 {
            return;
        }
        io.lock.counted &= !(0b11 << (2 * layer));
        let e = (bits >> 1) as u8;
        let c = &self.in_flight[e as usize];
        c.set(c.get().saturating_sub(1));
        if c.get() == 0 && self.draining.get() == Some(e) {
            self.drained();
        }
    }

    /// Installs a lock on this channel (once; a channel opened after the lock was taken
    /// has it already) and acknowledges it once the earlier writes are done.
    fn install(&self, range: LockedRange, install: &Arc<Install>) {
        {
            let mut ranges = self.ranges.borrow_mut();
            if ranges.iter().any(|r| r.id == range.id) {
                return;
            }
            ranges.push(range);
        }
        install.pending.fetch_add(1, Ordering::AcqRel);
        if self.draining.get().is_some() {
            self.next_waiters.borrow_mut().push(install.clone());
        } else {
            self.start_drain(vec![install.clone()]);
        }
    }

    /// Flips the epoch and waits for the previous one to drain (acknowledges at once when
    /// nothing is in flight).
    fn start_drain(&self, waiters: Vec<Arc<Install>>) {
        let e = self.epoch.get();
        if self.in_flight[e as usize].get() == 0 {
            waiters.iter().for_each(|w| w.ack());
            return;
        }
        self.epoch.set(1 - e);
        self.draining.set(Some(e));
        *self.drain_waiters.borrow_mut() = waiters;
    }

    fn drained(&self) {
        self.draining.set(None);
        let done = std::mem::take(&mut *self.drain_waiters.borrow_mut());
        done.iter().for_each(|w| w.ack());
        let next = std::mem::take(&mut *self.next_waiters.borrow_mut());
        if !next.is_empty() {
            self.start_drain(next);
        }
    }

    /// Removes lock `id`; returns the I/O it may have held back, to resubmit in order.
    fn remove(&self, id: u64) -> VecDeque<BdevIo> {
        self.ranges.borrow_mut().retain(|r| r.id != id);
        std::mem::take(&mut *self.held_back.borrow_mut())
    }
}

thread_local! {
    /// Locks asked for on this reactor and not granted yet: what to run when they are.
    static GRANTS: RefCell<HashMap<u64, Box<dyn FnOnce()>>> = RefCell::new(HashMap::new());
}

static NEXT_LOCK_ID: AtomicU64 = AtomicU64::new(1);

/// Locks `num_blocks` at `offset` on every channel of `bdev`; `granted` runs on this
/// reactor once no other write to the range can be in flight. Returns the lock's id (for
/// the owner's own writes, `BdevIo::lock.owner`, and for [`release`]).
pub(super) fn acquire(
    bdev: &BdevHandle,
    offset: u64,
    num_blocks: u64,
    granted: impl FnOnce() + 'static,
) -> u64 {
    let id = NEXT_LOCK_ID.fetch_add(1, Ordering::Relaxed);
    let core = reactor::current_core().expect("range locks are taken on a reactor");
    GRANTS.with(|g| g.borrow_mut().insert(id, Box::new(granted)));
    let range = LockedRange::new(id, offset, num_blocks);
    let admitted = {
        let mut l = bdev.range_locks.lock().unwrap_or_else(|e| e.into_inner());
        let blocked = l.held.iter().any(|h| h.overlaps_range(&range))
            || l.waiting.iter().any(|(w, _)| w.overlaps_range(&range));
        if blocked {
            l.waiting.push_back((range, core));
        } else {
            l.held.push(range);
        }
        !blocked
    };
    if admitted {
        install(bdev.clone(), range, core);
    }
    id
}

/// Installs an admitted lock on every reactor's channels of `bdev`.
fn install(bdev: BdevHandle, range: LockedRange, core: u32) {
    // One count for the fan-out itself, so that the grant waits for every reactor.
    let inst = Arc::new(Install {
        pending: AtomicUsize::new(1),
        core,
        id: range.id,
    });
    let each = inst.clone();
    reactor::for_each_reactor(
        move || for_local_channels(&bdev, |ch| ch.core.locks.install(range, &each)),
        move || inst.ack(),
    );
}

fn granted(id: u64) {
    if let Some(f) = GRANTS.with(|g| g.borrow_mut().remove(&id)) {
        f();
    }
}

/// Releases lock `id` of `bdev`: admits the waiting locks it was blocking, and removes it
/// from every channel, which resubmits the writes it held back.
pub(super) fn release(bdev: &BdevHandle, id: u64) {
    let admitted: Vec<(LockedRange, u32)> = {
        let mut l = bdev.range_locks.lock().unwrap_or_else(|e| e.into_inner());
        l.held.retain(|r| r.id != id);
        let mut admitted = Vec::new();
        let mut still: VecDeque<(LockedRange, u32)> = VecDeque::new();
        while let Some((w, core)) = l.waiting.pop_front() {
            let blocked = l.held.iter().any(|h| h.overlaps_range(&w))
                || still.iter().any(|(s, _)| s.overlaps_range(&w));
            if blocked {
                still.push_back((w, core));
            } else {
                l.held.push(w);
                admitted.push((w, core));
            }
        }
        l.waiting = still;
        admitted
    };
    for (range, core) in admitted {
        let b = bdev.clone();
        reactor::send_to(core, move || install(b, range, core));
    }
    let b = bdev.clone();
    reactor::for_each_reactor(
        move || {
            for_local_channels(&b, |ch| {
                for io in ch.core.locks.remove(id) {
                    ch.submit_admitted(io);
                }
            })
        },
        || {},
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_overlap_only_when_they_share_a_block() {
        let r = LockedRange::new(1, 10, 5); // 10..15
        assert!(r.overlaps(14, 20));
        assert!(r.overlaps(0, 11));
        assert!(r.overlaps(11, 12));
        assert!(!r.overlaps(15, 20));
        assert!(!r.overlaps(0, 10));
        let near = LockedRange::new(2, u64::MAX - 1, 5);
        assert_eq!(near.end, u64::MAX);
        assert!(near.overlaps(u64::MAX - 1, u64::MAX));
    }

    /// Completions seen by the test's channel, on its reactor.
    struct Seen(RefCell<Vec<(u64, super::super::IoStatus)>>);

    impl super::super::IoSink for Seen {
        fn io_done(&self, io: BdevIo) {
            self.0.borrow_mut().push((io.token, io.status()));
        }
    }

    struct Held {
        chan: super::super::IoChannel,
        seen: std::rc::Rc<Seen>,
        _desc: super::super::Desc,
        bdev: BdevHandle,
        lock: u64,
    }

    thread_local! {
        static HELD: RefCell<Option<Held>> = const { RefCell::new(None) };
    }

    fn write(off: u64, token: u64, owner: u64) -> BdevIo {
        let mut io = BdevIo::new(super::super::IoType::Write, off, 1)
            .with_bufs(vec![crate::buf::IoBuf::zeroed(512)])
            .with_token(token);
        io.lock.owner = owner;
        io
    }

    fn tokens_done() -> Vec<u64> {
        HELD.with(|h| {
            h.borrow()
                .as_ref()
                .map(|h| h.seen.0.borrow().iter().map(|(t, _)| *t).collect())
                .unwrap_or_default()
        })
    }

    /// A locked range holds back overlapping writes of every channel (not the owner's, not
    /// writes elsewhere) until it is released; a lock overlapping a held one waits for it.
    #[test]
    fn a_locked_range_holds_back_overlapping_writes_until_released() {
        use crate::reactor::{self, IdleStrategy, ReactorConfig};
        use std::sync::mpsc;
        use std::time::Duration;
        let app = reactor::start(
            ReactorConfig {
                cores: vec![0],
                idle: IdleStrategy::SpinThenSleep(Duration::from_micros(50)),
                pin: false,
            },
            || {},
        )
        .expect("start a reactor");
        let on = |f: Box<dyn FnOnce(mpsc::Sender<Vec<u64>>) + Send>| {
            let (tx, rx) = mpsc::channel();
            app.send_to(0, move || f(tx)).unwrap();
            rx.recv_timeout(Duration::from_secs(10))
                .expect("the reactor answered")
        };
        let settle = || std::thread::sleep(Duration::from_millis(100));
        // A malloc bdev, a channel, and a lock on blocks 10..12 (granted: nothing in flight).
        on(Box::new(|tx| {
            let opts = crate::bdev::malloc::MallocOpts {
                name: "lock0".into(),
                num_blocks: 64,
                block_size: 512,
                uuid: None,
                optimal_io_boundary: 0,
            };
            crate::bdev::malloc::create(opts, move |r| {
                let bdev = r.expect("malloc");
                let desc = super::super::open_handle(&bdev, |_| {}).unwrap();
                let seen = std::rc::Rc::new(Seen(RefCell::new(Vec::new())));
                let chan = desc.open_channel(seen.clone()).unwrap();
                let granted = std::rc::Rc::new(std::cell::Cell::new(false));
                let g = granted.clone();
                let lock = acquire(&bdev, 10, 2, move || {
                    g.set(true);
                    let _ = tx.send(vec![]);
                });
                HELD.with(|h| {
                    *h.borrow_mut() = Some(Held {
                        chan,
                        seen,
                        _desc: desc,
                        bdev,
                        lock,
                    })
                });
            });
        }));
        // Overlapping (held back), elsewhere (done), the owner's own (done).
        on(Box::new(|tx| {
            HELD.with(|h| {
                let h = h.borrow();
                let h = h.as_ref().unwrap();
                h.chan.submit(write(11, 1, 0));
                h.chan.submit(write(30, 2, 0));
                h.chan.submit(write(10, 3, h.lock));
            });
            let _ = tx.send(vec![]);
        }));
        settle();
        let mut done = on(Box::new(|tx| {
            let _ = tx.send(tokens_done());
        }));
        done.sort();
        assert_eq!(done, vec![2, 3], "only the overlapping write waits");
        // A second lock on 11..13 waits for the first one.
        on(Box::new(|tx| {
            HELD.with(|h| {
                let h = h.borrow();
                let h = h.as_ref().unwrap();
                let id = acquire(&h.bdev, 11, 2, || SECOND.with(|s| s.set(true)));
                SECOND_ID.with(|s| s.set(id));
            });
            let _ = tx.send(vec![]);
        }));
        settle();
        let second = on(Box::new(|tx| {
            let _ = tx.send(vec![SECOND.with(|s| s.get()) as u64]);
        }));
        assert_eq!(second, vec![0], "the overlapping lock waits");
        // Release: the held-back write goes, the second lock is granted (and holds back a
        // new overlapping write), a write elsewhere still passes.
        on(Box::new(|tx| {
            HELD.with(|h| {
                let h = h.borrow();
                let h = h.as_ref().unwrap();
                release(&h.bdev, h.lock);
            });
            let _ = tx.send(vec![]);
        }));
        settle();
        let state = on(Box::new(|tx| {
            let mut done = tokens_done();
            done.sort();
            done.push(100 + SECOND.with(|s| s.get()) as u64);
            let _ = tx.send(done);
        }));
        assert_eq!(
            state,
            vec![1, 2, 3, 101],
            "released: write 1 done, lock 2 granted"
        );
        on(Box::new(|tx| {
            HELD.with(|h| {
                let h = h.borrow();
                let h = h.as_ref().unwrap();
                h.chan.submit(write(12, 4, 0));
            });
            let _ = tx.send(vec![]);
        }));
        settle();
        let done = on(Box::new(|tx| {
            let _ = tx.send(tokens_done());
        }));
        assert!(!done.contains(&4), "the second lock holds back block 12");
        on(Box::new(|tx| {
            HELD.with(|h| {
                let h = h.borrow();
                let h = h.as_ref().unwrap();
                release(&h.bdev, SECOND_ID.with(|s| s.get()));
            });
            let _ = tx.send(vec![]);
        }));
        settle();
        let done = on(Box::new(|tx| {
            let _ = tx.send(tokens_done());
        }));
        assert!(done.contains(&4), "released: block 12 written");
        on(Box::new(|tx| {
            HELD.with(|h| drop(h.borrow_mut().take()));
            let _ = tx.send(vec![]);
        }));
        app.shutdown();
    }

    thread_local! {
        static SECOND: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
        static SECOND_ID: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }
}
