//! This thread's ring: its operations, the provided receive buffers, the owners that share
//! the ring (groups, listeners) with their stashed completions, and the wake eventfd.

use super::*;

/// A CQE as copied out of the ring.
#[derive(Clone, Copy, Debug)]
pub(super) struct Completion {
    pub(super) op: u32,
    pub(super) res: i32,
    pub(super) flags: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OpKind {
    Recv,
    /// A send; `zc` is the zero-copy sequence if it was a SENDMSG_ZC.
    Send {
        zc: Option<u32>,
    },
    Accept,
    Cancel,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Op {
    pub(super) owner: u32,
    pub(super) key: SockKey,
    pub(super) kind: OpKind,
}

/// The provided-buffer ring: `BUF_COUNT` buffers of `BUF_SIZE` bytes.
pub(super) struct BufRing {
    /// Ring entries (page-aligned as the kernel requires).
    pub(super) entries: IoBuf,
    /// The buffers (taken, and leaked, only when the ring is torn down with ops in flight).
    pub(super) mem: Option<IoBuf>,
    pub(super) tail: u16,
    /// Buffers the kernel may still fill (a multishot recv is only re-armed when some are).
    pub(super) free: u32,
}

impl BufRing {
    pub(super) fn entry_ptr(&mut self) -> *mut types::BufRingEntry {
        self.entries.as_mut_ptr() as *mut types::BufRingEntry
    }

    /// Hands buffer `bid` back to the kernel.
    pub(super) fn provide(&mut self, bid: u16) {
        let mask = BUF_COUNT - 1;
        let base = self.entry_ptr();
        let Some(mem) = self.mem.as_ref() else { return };
        let addr = mem.as_ptr() as u64 + bid as u64 * BUF_SIZE as u64;
        // SAFETY: the index is masked to the ring size; entries holds BUF_COUNT entries.
        let entry = unsafe { &mut *base.add((self.tail & mask) as usize) };
        entry.set_addr(addr);
        entry.set_len(BUF_SIZE as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        self.free += 1;
        // SAFETY: the tail field lives in entry 0; the kernel reads it with acquire semantics.
        let tail = unsafe { &*(types::BufRingEntry::tail(base) as *const AtomicU16) };
        tail.store(self.tail, Ordering::Release);
    }

    pub(super) fn bytes(&self, bid: u16, len: usize) -> &[u8] {
        let start = bid as usize * BUF_SIZE;
        self.mem
            .as_deref()
            .and_then(|m| m.get(start..start + len.min(BUF_SIZE)))
            .unwrap_or(&[])
    }
}

/// One owner (a group or a listener) of ops on the thread's ring, and the completions reaped
/// for it by whoever entered the ring last.
pub(super) struct OwnerSlot {
    /// The owner's id while the slot is in use (`(generation << 16) | index`), 0 when free.
    pub(super) id: u32,
    pub(super) stash: Vec<Completion>,
}

/// The owners of one ring, indexed by the low 16 bits of their id (no hashing on the data
/// path); the generation in the high bits keeps a late completion of a dropped owner from
/// reaching the next owner of its slot.
#[derive(Default)]
pub(super) struct Owners {
    pub(super) slots: Vec<OwnerSlot>,
    pub(super) free: Vec<u16>,
    pub(super) generation: u16,
}

impl Owners {
    pub(super) fn add(&mut self) -> Option<u32> {
        self.generation = self.generation.wrapping_add(1).max(1);
        let index = match self.free.pop() {
            Some(i) => i as usize,
            None if self.slots.len() > u16::MAX as usize => return None,
            None => {
                self.slots.push(OwnerSlot {
                    id: 0,
                    // Reserved up front so a later, larger burst of completions does not grow
                    // it on the data path (steady state allocates nothing).
                    stash: Vec::with_capacity(STASH_RESERVE),
                });
                self.slots.len() - 1
            }
        };
        let id = (self.generation as u32) << 16 | index as u32;
        self.slots[index].id = id;
        Some(id)
    }

    pub(super) fn stash(&mut self, id: u32) -> Option<&mut Vec<Completion>> {
        self.slots
            .get_mut((id & 0xffff) as usize)
            .filter(|s| s.id == id && id != 0)
            .map(|s| &mut s.stash)
    }

    /// Frees the owner's slot, returning the completions still stashed for it.
    pub(super) fn remove(&mut self, id: u32, out: &mut Vec<Completion>) {
        let index = (id & 0xffff) as usize;
        if let Some(slot) = self.slots.get_mut(index).filter(|s| s.id == id && id != 0) {
            slot.id = 0;
            out.append(&mut slot.stash);
            self.free.push(index as u16);
        }
    }

    pub(super) fn any_stashed(&self) -> bool {
        self.slots.iter().any(|s| !s.stash.is_empty())
    }
}

/// The per-thread ring and everything routed through it.
pub(super) struct Ctx {
    pub(super) ring: IoUring,
    pub(super) eventfd: EventFd,
    pub(super) wake: Option<crate::reactor::WakeSource>,
    /// The reactor may sleep (its wake eventfd then has to be drained before it does).
    pub(super) may_sleep: bool,
    pub(super) bufs: BufRing,
    pub(super) ops: slab::Slab<Op>,
    /// Completions waiting for their owner (group or listener) to poll.
    pub(super) owners: Owners,
    /// The ring was entered or had completions since the eventfd was last drained, so the
    /// eventfd may be readable (and would wake a sleeping reactor at once).
    pub(super) eventfd_dirty: bool,
    /// We wrote the eventfd ourselves since the last drain (it is readable).
    pub(super) eventfd_signalled: bool,
    pub(super) send_zc: bool,
    pub(super) accept_multi: bool,
    /// SQEs that did not fit in the SQ, pushed on the next poll.
    pub(super) backlog: VecDeque<squeue::Entry>,
    /// Syscall counters (see [`RingStats`]).
    pub(super) counters: RingStats,
}

thread_local! {
    static CTX: RefCell<Option<Result<Ctx, String>>> = const { RefCell::new(None) };
}

impl Ctx {
    pub(super) fn create() -> Result<Ctx, String> {
        let ring: IoUring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_taskrun_flag()
            .setup_cqsize(RING_ENTRIES * 8)
            .build(RING_ENTRIES)
            .map_err(|e| format!("io_uring setup (SINGLE_ISSUER|DEFER_TASKRUN) failed: {e}"))?;
        let mut probe = io_uring::Probe::new();
        ring.submitter()
            .register_probe(&mut probe)
            .map_err(|e| format!("io_uring probe failed: {e}"))?;
        for (code, name) in [
            (opcode::SendMsg::CODE, "SENDMSG"),
            (opcode::RecvMulti::CODE, "RECV"),
            (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
        ] {
            if !probe.is_supported(code) {
                return Err(format!("io_uring lacks {name}"));
            }
        }
        let send_zc = probe.is_supported(opcode::SendMsgZc::CODE);
        if !send_zc {
            tracing::warn!("sock uring: kernel lacks SENDMSG_ZC; zero-copy sends use SENDMSG");
        }
        let accept_multi = probe.is_supported(opcode::AcceptMulti::CODE);
        if !accept_multi {
            tracing::warn!("sock uring: kernel lacks multishot ACCEPT; listeners use accept4");
        }
        let eventfd = EventFd::new().map_err(|e| format!("eventfd: {e}"))?;
        ring.submitter()
            .register_eventfd(eventfd.as_raw_fd())
            .map_err(|e| format!("io_uring register_eventfd: {e}"))?;
        let entries =
            IoBuf::zeroed(BUF_COUNT as usize * std::mem::size_of::<types::BufRingEntry>());
        let mem = IoBuf::zeroed(BUF_COUNT as usize * BUF_SIZE);
        let mut bufs = BufRing {
            entries,
            mem: Some(mem),
            tail: 0,
            free: 0,
        };
        // SAFETY: the entries memory is page-aligned, holds BUF_COUNT entries and lives in the
        // thread-local context as long as the ring (the ring field drops first).
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                bufs.entry_ptr() as u64,
                BUF_COUNT,
                BUF_GROUP,
                0,
            )
        }
        .map_err(|e| {
            format!("io_uring provided buffer ring (needs Linux 5.19+ for multishot recv): {e}")
        })?;
        for bid in 0..BUF_COUNT {
            bufs.provide(bid);
        }
        let wake = crate::reactor::current_core()
            .and_then(|_| crate::reactor::add_wake_fd(eventfd.as_raw_fd()).ok());
        // A poll-only reactor never sleeps: its eventfd is then never drained at all.
        let may_sleep = wake.is_some()
            && crate::reactor::idle_strategy() != crate::reactor::IdleStrategy::PollOnly;
        Ok(Ctx {
            ring,
            eventfd,
            wake,
            may_sleep,
            bufs,
            ops: slab::Slab::with_capacity(256),
            owners: Owners::default(),
            eventfd_dirty: true,
            eventfd_signalled: false,
            send_zc,
            accept_multi,
            backlog: VecDeque::new(),
            counters: RingStats::default(),
        })
    }

    pub(super) fn new_owner(&mut self) -> io::Result<u32> {
        self.owners
            .add()
            .ok_or_else(|| io::Error::other("too many uring groups and listeners on one thread"))
    }

    /// Queues an SQE for `op`; it is submitted by the next `submit_now` or `pump`.
    pub(super) fn push(&mut self, op: Op, build: impl FnOnce(u64) -> squeue::Entry) -> u32 {
        let idx = self.ops.insert(op) as u32;
        let sqe = build(idx as u64);
        // SAFETY: every pointer in our SQEs refers to memory kept alive until the op's
        // final CQE (socket send buffers, the buffer ring, the group's msghdr boxes).
        let pushed = unsafe { self.ring.submission().push(&sqe) };
        if pushed.is_err() {
            self.backlog.push_back(sqe);
        }
        idx
    }

    /// Submits queued SQEs and runs deferred task work, in ONE io_uring_enter, and only when
    /// there is something to do: SQEs queued, or the kernel flagging task work (received data,
    /// completed sends) or a CQ overflow in the SQ ring flags. Returns whether it entered.
    pub(super) fn enter_if_needed(&mut self) -> bool {
        while let Some(sqe) = self.backlog.front() {
            // SAFETY: see `push`.
            if unsafe { self.ring.submission().push(sqe) }.is_err() {
                break;
            }
            self.backlog.pop_front();
        }
        let (to_submit, kernel_work) = {
            let mut sq = self.ring.submission();
            sq.sync();
            (sq.len(), sq.taskrun() || sq.cq_overflow())
        };
        if to_submit == 0 && !kernel_work {
            return false;
        }
        // GETEVENTS always: with DEFER_TASKRUN it is what runs the task work (completions),
        // and the task work queued after our flag check is then run too. min_complete 0:
        // never waits.
        // SAFETY: no argument pointer; the SQEs were checked by `push`.
        let r = unsafe {
            self.ring.submitter().enter::<libc::sigset_t>(
                to_submit as u32,
                0,
                IORING_ENTER_GETEVENTS,
                None,
            )
        };
        match r {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) => tracing::warn!("sock uring: io_uring_enter failed: {e}"),
        }
        self.eventfd_dirty = true;
        self.counters.enters += 1;
        true
    }

    /// Enters the ring if needed and moves every CQE to its owner's stash, cleaning up after
    /// owners that are gone. Cheap when there is nothing to do: a few loads from ring memory,
    /// no syscall.
    pub(super) fn pump(&mut self) {
        self.enter_if_needed();
        let Ctx {
            ring,
            ops,
            owners,
            bufs,
            eventfd_dirty,
            ..
        } = self;
        let mut cq = ring.completion();
        if cq.is_empty() {
            return;
        }
        *eventfd_dirty = true;
        for cqe in &mut cq {
            let idx = cqe.user_data() as u32;
            let Some(op) = ops.get(idx as usize).copied() else {
                continue;
            };
            let c = Completion {
                op: idx,
                res: cqe.result(),
                flags: cqe.flags(),
            };
            if cqueue::buffer_select(c.flags).is_some() {
                bufs.free = bufs.free.saturating_sub(1);
            }
            if let Some(stash) = owners.stash(op.owner) {
                stash.push(c);
                continue;
            }
            // The owner is gone (or the op was a cancel): release what the completion carries.
            if let Some(bid) = cqueue::buffer_select(c.flags) {
                bufs.provide(bid);
            }
            if op.kind == OpKind::Accept && c.res >= 0 {
                // SAFETY: the kernel handed us this fd and nobody else knows it.
                drop(unsafe { OwnedFd::from_raw_fd(c.res) });
            }
            if !cqueue::more(c.flags) || cqueue::notif(c.flags) {
                ops.remove(idx as usize);
            }
        }
    }

    /// Submits what is queued now (and runs pending task work); no syscall if there is none.
    pub(super) fn submit_now(&mut self) {
        self.enter_if_needed();
    }

    /// Whether anything is waiting for a poll: queued SQEs, kernel task work, CQEs, or
    /// completions stashed for some owner.
    pub(super) fn work_pending(&mut self) -> bool {
        let (queued, kernel_work) = {
            let mut sq = self.ring.submission();
            sq.sync();
            (!sq.is_empty(), sq.taskrun() || sq.cq_overflow())
        };
        queued
            || kernel_work
            || !self.backlog.is_empty()
            || !self.ring.completion().is_empty()
            || self.owners.any_stashed()
    }

    /// Called by an owner whose poll found nothing to report, i.e. when the reactor may be
    /// about to sleep. If work is still waiting anywhere on the ring, makes sure the eventfd
    /// is readable so the reactor does not sleep through it; otherwise drains the eventfd (so
    /// a sleep is not cut short by work already done) and checks again for work that raced
    /// the drain. Busy polls never get here, so the eventfd costs nothing per I/O, and an idle
    /// reactor whose eventfd is drained makes no syscall at all.
    pub(super) fn settle(&mut self) {
        if !self.may_sleep {
            return;
        }
        if self.work_pending() {
            self.signal_eventfd();
            return;
        }
        if !self.eventfd_dirty {
            return;
        }
        self.eventfd.drain();
        self.eventfd_dirty = false;
        self.eventfd_signalled = false;
        self.counters.eventfd_drains += 1;
        if self.work_pending() {
            self.signal_eventfd();
        }
    }

    /// Makes the eventfd readable (once until the next drain).
    pub(super) fn signal_eventfd(&mut self) {
        if self.eventfd_signalled {
            return;
        }
        self.eventfd.ring();
        self.eventfd_signalled = true;
        self.eventfd_dirty = true;
        self.counters.eventfd_signals += 1;
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        if !self.ops.is_empty() {
            // Operations still in flight may write into the receive buffers while the kernel
            // tears the ring down (after this, when the ring field drops): leave that memory
            // to the process rather than free it under the kernel.
            std::mem::forget(self.bufs.mem.take());
        }
    }
}

/// Runs `f` on this thread's ring, creating it on first use.
pub(super) fn with_ctx<R>(f: impl FnOnce(&mut Ctx) -> R) -> io::Result<R> {
    let gone = || io::Error::other("io_uring context already destroyed (thread exiting)");
    CTX.try_with(|c| {
        let mut slot = c.borrow_mut();
        if slot.is_none() {
            let created = Ctx::create();
            if let Err(e) = &created {
                tracing::error!("sock uring: unavailable on this thread: {e}");
            }
            *slot = Some(created);
        }
        match slot.as_mut().expect("set above") {
            Ok(ctx) => Ok(f(ctx)),
            Err(e) => Err(io::Error::other(format!("io_uring unavailable: {e}"))),
        }
    })
    .unwrap_or_else(|_| Err(gone()))
}

/// Whether io_uring works on this thread (creating the ring if needed).
pub fn available() -> bool {
    with_ctx(|_| ()).is_ok()
}

/// The eventfd that wakes this thread's reactor when the ring has work.
pub(super) fn ctx_wake_fd() -> RawFd {
    with_ctx(|c| c.eventfd.as_raw_fd()).unwrap_or(-1)
}

/// Counters of this thread's ring (tests and stats).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RingStats {
    pub ops_in_flight: usize,
    /// io_uring_enter calls made to submit and reap.
    pub enters: u64,
    /// Reads of the wake eventfd (made only when a poll finds nothing to do).
    pub eventfd_drains: u64,
    /// Writes to the wake eventfd (work found pending while going idle).
    pub eventfd_signals: u64,
}

pub fn ring_stats() -> RingStats {
    with_ctx(|c| RingStats {
        ops_in_flight: c.ops.len(),
        ..c.counters
    })
    .unwrap_or_default()
}
