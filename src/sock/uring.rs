//! The io_uring socket impl.
//!
//! Each reactor thread owns one ring (created lazily on that thread with SINGLE_ISSUER,
//! DEFER_TASKRUN and TASKRUN_FLAG) plus one provided-buffer ring that every grouped socket
//! receives into with a multishot recv; listeners accept with multishot accept. Grouped
//! sockets send with SENDMSG (up to 64 iovecs, MSG_NOSIGNAL, one send in flight per socket,
//! partial sends resumed) or SENDMSG_ZC at or above the zero-copy threshold; a zero-copy
//! send's requests are released only after both its result CQE and its notification CQE.
//! Syscall budget: the ring is entered (GETEVENTS, never waiting: it submits what is queued
//! and runs the deferred task work) only when SQEs are queued or the SQ ring flags say the
//! kernel has task work (or a CQ overflow): at the start of a group's poll (to reap), at its
//! end (sends and receives it started), and by `flush` (so an answer leaves at once; a flush
//! deferred to the next poll measured slower); polls with nothing to do make no syscall.
//! Completions of other owners on the same thread (another group, a listener) are stashed for
//! them in a slot-indexed table. Wake-up: on this kernel (6.18, checked by the
//! `ring_fd_does_not_wake_but_eventfd_does` test) the ring fd does NOT become readable for
//! DEFER_TASKRUN completions, so an eventfd registered with the ring (the kernel signals it
//! when it queues task work or posts CQEs) is the reactor's wake source; it is drained only
//! by a poll that finds nothing to report (when the reactor may be about to sleep, never on a
//! poll-only reactor), and re-signalled if work raced the drain, so neither busy nor idle
//! loops pay an eventfd syscall. Sockets not in a group are plain non-blocking sockets (the
//! posix code with impl name "uring"); joining a group moves their fd and queued writes onto
//! the ring. Kernels lacking SEND_ZC fall back to SENDMSG, and lacking multishot accept fall
//! back to accept4, each with one log line.

use super::posix::{PosixListener, PosixSock};
use super::{
    settings, Listener, NetImpl, Sock, SockEvent, SockGroup, SockKey, SockOpts, SockStats,
    WriteQueue, WriteRequest, MAX_IOVECS,
};
use crate::buf::IoBuf;
use crate::sys::socket as sys;
use crate::sys::EventFd;
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use std::any::Any;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

const RING_ENTRIES: u32 = 1024;
/// io_uring_enter flag: run task work and reap completions (`IORING_ENTER_GETEVENTS`).
const IORING_ENTER_GETEVENTS: u32 = 1;
/// Set in a SEND_ZC notification result when the kernel copied instead.
const NOTIF_USAGE_ZC_COPIED: u32 = 1 << 31;
const BUF_GROUP: u16 = 0;
/// Provided receive buffers per thread. The kernel hands them out in ring (FIFO) order, so
/// all of them are touched in turn: 64 x 16 KiB = 1 MiB stays within a core's L2 (2 MiB here),
/// where 256 buffers (4 MiB) made every received byte a cache miss for the kernel's copy and
/// ours (measured: +6-8 % initiator IOPS at 4 KiB randread QD32; 32 buffers gained nothing
/// more). Buffers are held only until the consumer drains its socket, so 64 are plenty; when
/// they do run out the multishot recv ends with ENOBUFS and is re-armed once some come back.
const BUF_COUNT: u16 = 64;
const BUF_SIZE: usize = 16 * 1024;
/// Completions an owner's stash holds without growing.
const STASH_RESERVE: usize = 256;
/// How long a closing socket may wait for the kernel before its connection is aborted.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

pub struct UringImpl;

impl NetImpl for UringImpl {
    fn name(&self) -> &'static str {
        "uring"
    }
    fn priority(&self) -> i32 {
        -1
    }
    fn listen(&self, addr: &str, port: u16, opts: &SockOpts) -> io::Result<Box<dyn Listener>> {
        let inner = PosixListener::bind(addr, port, opts, "uring")?;
        Ok(Box::new(UringListener::new(inner)?))
    }
    fn connect(&self, addr: &str, port: u16, opts: &SockOpts) -> io::Result<Box<dyn Sock>> {
        Ok(Box::new(PosixSock::connect(addr, port, opts, "uring")?))
    }
    fn create_group(&self) -> io::Result<Box<dyn SockGroup>> {
        Ok(Box::new(UringGroup::new()?))
    }
    fn available(&self) -> bool {
        available()
    }
}

/// A CQE as copied out of the ring.
#[derive(Clone, Copy, Debug)]
struct Completion {
    op: u32,
    res: i32,
    flags: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpKind {
    Recv,
    /// A send; `zc` is the zero-copy sequence if it was a SENDMSG_ZC.
    Send {
        zc: Option<u32>,
    },
    Accept,
    Cancel,
}

#[derive(Debug, Clone, Copy)]
struct Op {
    owner: u32,
    key: SockKey,
    kind: OpKind,
}

/// The provided-buffer ring: `BUF_COUNT` buffers of `BUF_SIZE` bytes.
struct BufRing {
    /// Ring entries (page-aligned as the kernel requires).
    entries: IoBuf,
    /// The buffers (taken, and leaked, only when the ring is torn down with ops in flight).
    mem: Option<IoBuf>,
    tail: u16,
    /// Buffers the kernel may still fill (a multishot recv is only re-armed when some are).
    free: u32,
}

impl BufRing {
    fn entry_ptr(&mut self) -> *mut types::BufRingEntry {
        self.entries.as_mut_ptr() as *mut types::BufRingEntry
    }

    /// Hands buffer `bid` back to the kernel.
    fn provide(&mut self, bid: u16) {
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

    fn bytes(&self, bid: u16, len: usize) -> &[u8] {
        let start = bid as usize * BUF_SIZE;
        self.mem
            .as_deref()
            .and_then(|m| m.get(start..start + len.min(BUF_SIZE)))
            .unwrap_or(&[])
    }
}

/// One owner (a group or a listener) of ops on the thread's ring, and the completions reaped
/// for it by whoever entered the ring last.
struct OwnerSlot {
    /// The owner's id while the slot is in use (`(generation << 16) | index`), 0 when free.
    id: u32,
    stash: Vec<Completion>,
}

/// The owners of one ring, indexed by the low 16 bits of their id (no hashing on the data
/// path); the generation in the high bits keeps a late completion of a dropped owner from
/// reaching the next owner of its slot.
#[derive(Default)]
struct Owners {
    slots: Vec<OwnerSlot>,
    free: Vec<u16>,
    generation: u16,
}

impl Owners {
    fn add(&mut self) -> Option<u32> {
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

    fn stash(&mut self, id: u32) -> Option<&mut Vec<Completion>> {
        self.slots
            .get_mut((id & 0xffff) as usize)
            .filter(|s| s.id == id && id != 0)
            .map(|s| &mut s.stash)
    }

    /// Frees the owner's slot, returning the completions still stashed for it.
    fn remove(&mut self, id: u32, out: &mut Vec<Completion>) {
        let index = (id & 0xffff) as usize;
        if let Some(slot) = self.slots.get_mut(index).filter(|s| s.id == id && id != 0) {
            slot.id = 0;
            out.append(&mut slot.stash);
            self.free.push(index as u16);
        }
    }

    fn any_stashed(&self) -> bool {
        self.slots.iter().any(|s| !s.stash.is_empty())
    }
}

/// The per-thread ring and everything routed through it.
struct Ctx {
    ring: IoUring,
    eventfd: EventFd,
    wake: Option<crate::reactor::WakeSource>,
    /// The reactor may sleep (its wake eventfd then has to be drained before it does).
    may_sleep: bool,
    bufs: BufRing,
    ops: slab::Slab<Op>,
    /// Completions waiting for their owner (group or listener) to poll.
    owners: Owners,
    /// The ring was entered or had completions since the eventfd was last drained, so the
    /// eventfd may be readable (and would wake a sleeping reactor at once).
    eventfd_dirty: bool,
    /// We wrote the eventfd ourselves since the last drain (it is readable).
    eventfd_signalled: bool,
    send_zc: bool,
    accept_multi: bool,
    /// SQEs that did not fit in the SQ, pushed on the next poll.
    backlog: VecDeque<squeue::Entry>,
    /// Syscall counters (see [`RingStats`]).
    counters: RingStats,
}

thread_local! {
    static CTX: RefCell<Option<Result<Ctx, String>>> = const { RefCell::new(None) };
}

impl Ctx {
    fn create() -> Result<Ctx, String> {
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

    fn new_owner(&mut self) -> io::Result<u32> {
        self.owners
            .add()
            .ok_or_else(|| io::Error::other("too many uring groups and listeners on one thread"))
    }

    /// Queues an SQE for `op`; it is submitted by the next `submit_now` or `pump`.
    fn push(&mut self, op: Op, build: impl FnOnce(u64) -> squeue::Entry) -> u32 {
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
    fn enter_if_needed(&mut self) -> bool {
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
    fn pump(&mut self) {
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
    fn submit_now(&mut self) {
        self.enter_if_needed();
    }

    /// Whether anything is waiting for a poll: queued SQEs, kernel task work, CQEs, or
    /// completions stashed for some owner.
    fn work_pending(&mut self) -> bool {
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
    fn settle(&mut self) {
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
    fn signal_eventfd(&mut self) {
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
fn with_ctx<R>(f: impl FnOnce(&mut Ctx) -> R) -> io::Result<R> {
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
fn ctx_wake_fd() -> RawFd {
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

/// A listener accepting with multishot accept on the thread's ring.
pub struct UringListener {
    inner: PosixListener,
    owner: Option<u32>,
    accept_op: Option<u32>,
    accepted: VecDeque<io::Result<RawFd>>,
    completions: Vec<Completion>,
}

impl UringListener {
    fn new(inner: PosixListener) -> io::Result<Self> {
        let owner = with_ctx(|c| c.accept_multi.then(|| c.new_owner()).transpose())??;
        Ok(Self {
            inner,
            owner,
            accept_op: None,
            accepted: VecDeque::new(),
            completions: Vec::new(),
        })
    }

    fn arm(&mut self, owner: u32) {
        let fd = self.inner.raw_fd();
        self.accept_op = with_ctx(|c| {
            c.push(
                Op {
                    owner,
                    key: 0,
                    kind: OpKind::Accept,
                },
                |ud| {
                    opcode::AcceptMulti::new(types::Fd(fd))
                        .flags(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
                        .build()
                        .user_data(ud)
                },
            )
        })
        .ok();
    }
}

impl Listener for UringListener {
    fn impl_name(&self) -> &'static str {
        "uring"
    }

    fn accept(&mut self) -> io::Result<Option<Box<dyn Sock>>> {
        let Some(owner) = self.owner else {
            return self.inner.accept();
        };
        if self.accept_op.is_none() {
            self.arm(owner);
        }
        let mut done = std::mem::take(&mut self.completions);
        with_ctx(|c| {
            c.pump();
            if let Some(s) = c.owners.stash(owner) {
                std::mem::swap(s, &mut done);
            }
            for comp in &done {
                if !cqueue::more(comp.flags) {
                    c.ops.remove(comp.op as usize);
                }
            }
        })?;
        for comp in done.drain(..) {
            if comp.res >= 0 {
                self.accepted.push_back(Ok(comp.res));
            } else if comp.res != -libc::ECANCELED {
                self.accepted
                    .push_back(Err(io::Error::from_raw_os_error(-comp.res)));
            }
            if !cqueue::more(comp.flags) {
                self.accept_op = None;
            }
        }
        self.completions = done;
        if self.accept_op.is_none() {
            self.arm(owner);
            let _ = with_ctx(|c| c.submit_now());
        }
        while let Some(r) = self.accepted.pop_front() {
            match r {
                Ok(fd) => {
                    // SAFETY: the kernel handed us this fd and nobody else knows it.
                    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                    match PosixSock::from_accepted(fd, self.inner.opts(), "uring") {
                        Ok(s) => return Ok(Some(Box::new(s))),
                        Err(_) => continue, // the peer already went away
                    }
                }
                Err(e) => match e.raw_os_error() {
                    Some(libc::ECONNABORTED) | Some(libc::EPROTO) | Some(libc::EINTR) => {}
                    _ => return Err(e),
                },
            }
        }
        // Nothing to accept: the reactor may sleep after this poll.
        let _ = with_ctx(|c| c.settle());
        Ok(None)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn wake_fd(&self) -> Option<RawFd> {
        if self.owner.is_none() {
            return self.inner.wake_fd();
        }
        let registered = with_ctx(|c| c.wake.is_some()).unwrap_or(false);
        if registered {
            None
        } else {
            Some(ctx_wake_fd())
        }
    }
}

impl Drop for UringListener {
    fn drop(&mut self) {
        // Stop listening now: an in-flight accept keeps the socket open until it is cancelled.
        sys::shutdown(self.inner.raw_fd());
        let (Some(owner), accept_op) = (self.owner, self.accept_op) else {
            return;
        };
        let _ = with_ctx(|c| {
            // Completions already routed to us: close accepted fds.
            let mut stash = Vec::new();
            c.owners.remove(owner, &mut stash);
            for comp in stash {
                if comp.res >= 0 {
                    // SAFETY: an accepted fd nobody else owns.
                    drop(unsafe { OwnedFd::from_raw_fd(comp.res) });
                }
                if !cqueue::more(comp.flags) {
                    c.ops.remove(comp.op as usize);
                }
            }
            if let Some(op) = accept_op {
                if c.ops.contains(op as usize) {
                    c.push(
                        Op {
                            owner: 0,
                            key: 0,
                            kind: OpKind::Cancel,
                        },
                        |ud| opcode::AsyncCancel::new(op as u64).build().user_data(ud),
                    );
                    c.submit_now();
                }
            }
        });
        for r in self.accepted.drain(..).flatten() {
            // SAFETY: accepted fds nobody else owns.
            drop(unsafe { OwnedFd::from_raw_fd(r) });
        }
    }
}

/// The msghdr and iovecs of a socket's in-flight send, at a stable heap address.
struct SendMsgBuf {
    hdr: libc::msghdr,
    iov: [libc::iovec; MAX_IOVECS],
}

// SAFETY: the raw pointers point into this same allocation (hdr -> iov) or into chunk memory
// owned by the socket's write queue; the socket moves between threads only before it joins a
// group, when no send is in flight.
unsafe impl Send for SendMsgBuf {}

/// A received segment in a provided buffer.
#[derive(Debug, Clone, Copy)]
struct Segment {
    bid: u16,
    off: u32,
    len: u32,
}

/// A socket inside a uring group.
pub struct UringSock {
    fd: Option<OwnedFd>,
    owner: u32,
    key: SockKey,
    ipv6: bool,
    connecting: bool,
    segments: VecDeque<Segment>,
    eof: bool,
    recv_err: Option<i32>,
    recv_op: Option<u32>,
    wq: WriteQueue,
    send_op: Option<u32>,
    /// Zero-copy sends whose notification has not arrived yet.
    notifs_pending: u32,
    msg: Box<SendMsgBuf>,
    failed: Option<i32>,
    zerocopy: bool,
    zc_threshold: usize,
    placement_mode: u32,
    closing: Option<Instant>,
    aborted: bool,
    in_ready: bool,
    /// On its group's `active` list.
    in_active: bool,
}

impl UringSock {
    fn from_posix(mut p: PosixSock, owner: u32, key: SockKey) -> io::Result<Self> {
        let fd =
            p.fd.take()
                .ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))?;
        let zerocopy = p.zerocopy;
        Ok(Self {
            connecting: p.is_connecting(),
            fd: Some(fd),
            owner,
            key,
            ipv6: p.ipv6,
            // At most BUF_COUNT provided buffers exist, so this never grows on the data path.
            segments: VecDeque::with_capacity(BUF_COUNT as usize),
            eof: false,
            recv_err: None,
            recv_op: None,
            wq: std::mem::take(&mut p.wq),
            send_op: None,
            notifs_pending: 0,
            msg: Box::new(SendMsgBuf {
                // SAFETY: a zeroed msghdr is a valid empty header.
                hdr: unsafe { std::mem::zeroed() },
                iov: [libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                }; MAX_IOVECS],
            }),
            failed: p.failed,
            zerocopy,
            zc_threshold: p.zc_threshold,
            placement_mode: settings().uring.enable_placement_id,
            closing: None,
            aborted: false,
            in_ready: false,
            in_active: false,
        })
    }

    fn raw(&self) -> RawFd {
        self.fd.as_ref().map_or(-1, |f| f.as_raw_fd())
    }

    fn busy(&self) -> bool {
        self.recv_op.is_some() || self.send_op.is_some() || self.notifs_pending > 0
    }

    fn check_connect(&mut self) {
        if !self.connecting {
            return;
        }
        if !sys::poll_writable(self.raw()) {
            return;
        }
        self.connecting = false;
        let err = sys::getsockopt_int(self.raw(), libc::SOL_SOCKET, libc::SO_ERROR).unwrap_or(0);
        if err != 0 {
            self.failed = Some(err);
            self.recv_err = Some(err);
            self.wq.fail_unsent(err);
        }
    }

    fn arm_recv(&mut self) {
        if self.recv_op.is_some()
            || self.eof
            || self.recv_err.is_some()
            || self.closing.is_some()
            || self.connecting
            || self.fd.is_none()
        {
            return;
        }
        let fd = self.raw();
        let op = Op {
            owner: self.owner,
            key: self.key,
            kind: OpKind::Recv,
        };
        self.recv_op = with_ctx(|c| {
            if c.bufs.free == 0 {
                // Every buffer holds unread data: re-arm once readers give some back.
                return None;
            }
            Some(c.push(op, |ud| {
                opcode::RecvMulti::new(types::Fd(fd), BUF_GROUP)
                    .build()
                    .user_data(ud)
            }))
        })
        .ok()
        .flatten();
    }

    /// Starts a send of the queued bytes if none is in flight.
    fn start_send(&mut self) -> io::Result<()> {
        if self.send_op.is_some() {
            return Ok(()); // the next send starts when this one completes
        }
        if self.fd.is_none() || self.closing.is_some() {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        }
        if let Some(errno) = self.failed {
            self.wq.fail_unsent(errno);
            return Err(io::Error::from_raw_os_error(errno));
        }
        if !self.wq.has_unsent() || self.connecting {
            return Ok(());
        }
        let (cnt, bytes) = self.wq.fill_iovecs(&mut self.msg.iov);
        if cnt == 0 {
            return Ok(());
        }
        let msg = &mut *self.msg;
        msg.hdr.msg_iov = msg.iov.as_mut_ptr();
        msg.hdr.msg_iovlen = cnt as _;
        let hdr: *const libc::msghdr = &msg.hdr;
        let fd = self.raw();
        let want_zc = self.zerocopy && bytes >= self.zc_threshold;
        let (owner, key) = (self.owner, self.key);
        let wq = &mut self.wq;
        let op = with_ctx(|c| {
            let zc = want_zc && c.send_zc;
            let seq = zc.then(|| wq.zc.issue());
            let op = Op {
                owner,
                key,
                kind: OpKind::Send { zc: seq },
            };
            let idx = c.push(op, |ud| {
                if zc {
                    opcode::SendMsgZc::new(types::Fd(fd), hdr)
                        .flags(libc::MSG_NOSIGNAL as u32)
                        .build()
                        .user_data(ud)
                } else {
                    opcode::SendMsg::new(types::Fd(fd), hdr)
                        .flags(libc::MSG_NOSIGNAL as u32)
                        .build()
                        .user_data(ud)
                }
            });
            (idx, zc)
        })?;
        self.send_op = Some(op.0);
        if op.1 {
            self.notifs_pending += 1;
        }
        Ok(())
    }

    /// Handles one completion of an op of this socket; returns true if it became readable.
    fn on_completion(&mut self, kind: OpKind, c: Completion) -> bool {
        match kind {
            OpKind::Recv => {
                let mut readable = false;
                if let Some(bid) = cqueue::buffer_select(c.flags) {
                    if c.res > 0 && self.closing.is_none() {
                        self.segments.push_back(Segment {
                            bid,
                            off: 0,
                            len: (c.res as u32).min(BUF_SIZE as u32),
                        });
                        readable = true;
                    } else {
                        let _ = with_ctx(|x| x.bufs.provide(bid));
                    }
                } else if c.res == 0 {
                    self.eof = true;
                    readable = true;
                } else if c.res < 0 && c.res != -libc::ENOBUFS && c.res != -libc::ECANCELED {
                    self.recv_err = Some(-c.res);
                    readable = true;
                }
                if !cqueue::more(c.flags) {
                    self.recv_op = None;
                }
                readable && self.closing.is_none()
            }
            OpKind::Send { zc } => {
                if cqueue::notif(c.flags) {
                    if let Some(seq) = zc {
                        self.wq.zc.complete_range(seq, seq);
                        if (c.res as u32) & NOTIF_USAGE_ZC_COPIED != 0 {
                            self.wq.zc.copied += 1;
                        }
                    }
                    self.notifs_pending = self.notifs_pending.saturating_sub(1);
                    self.wq.release();
                    return false;
                }
                if c.res >= 0 {
                    self.wq.advance(c.res as usize, zc);
                } else if c.res != -libc::EAGAIN && c.res != -libc::EINTR {
                    let errno = -c.res;
                    self.failed = Some(errno);
                    // In-flight bytes are no longer referenced once this CQE arrived.
                    self.wq.fail_unsent(errno);
                }
                if !cqueue::more(c.flags) {
                    // No notification will follow (nothing was sent zero-copy).
                    if let Some(seq) = zc {
                        self.wq.zc.complete_range(seq, seq);
                        self.notifs_pending = self.notifs_pending.saturating_sub(1);
                        self.wq.release();
                    }
                }
                self.send_op = None;
                false
            }
            OpKind::Accept | OpKind::Cancel => false,
        }
    }

    fn begin_close(&mut self) {
        if self.closing.is_some() {
            return;
        }
        self.closing = Some(Instant::now());
        let _ = with_ctx(|c| {
            for bid in self.segments.drain(..).map(|s| s.bid) {
                c.bufs.provide(bid);
            }
            if let Some(op) = self.recv_op {
                c.push(
                    Op {
                        owner: 0,
                        key: 0,
                        kind: OpKind::Cancel,
                    },
                    |ud| opcode::AsyncCancel::new(op as u64).build().user_data(ud),
                );
            }
        });
        if self.send_op.is_some() || self.notifs_pending > 0 {
            // Stop the in-flight send; queued bytes still go out before the FIN.
            sys::shutdown(self.raw());
        }
    }

    /// After the grace period, drops the connection so the kernel lets go of our buffers.
    fn abort_if_stuck(&mut self) {
        let Some(since) = self.closing else { return };
        if self.aborted || since.elapsed() < CLOSE_GRACE {
            return;
        }
        self.aborted = true;
        sys::disconnect(self.raw());
    }
}

impl Sock for UringSock {
    fn impl_name(&self) -> &'static str {
        "uring"
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.fd.is_none() || self.closing.is_some() {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        }
        let mut copied = 0;
        let result = with_ctx(|c| {
            while copied < buf.len() {
                let Some(seg) = self.segments.front_mut() else {
                    break;
                };
                let data = c.bufs.bytes(seg.bid, (seg.off + seg.len) as usize);
                let src = data.get(seg.off as usize..).unwrap_or(&[]);
                let n = src.len().min(buf.len() - copied);
                crate::buf::copy_bytes(&mut buf[copied..copied + n], &src[..n]);
                copied += n;
                seg.off += n as u32;
                // A segment the buffer memory cannot back (only after teardown) is dropped.
                seg.len = if src.is_empty() {
                    0
                } else {
                    seg.len - n as u32
                };
                if seg.len == 0 {
                    let bid = seg.bid;
                    self.segments.pop_front();
                    c.bufs.provide(bid);
                }
            }
        });
        result?;
        if copied > 0 {
            return Ok(copied);
        }
        if let Some(e) = self.recv_err {
            return Err(io::Error::from_raw_os_error(e));
        }
        if self.eof {
            return Ok(0);
        }
        Err(io::ErrorKind::WouldBlock.into())
    }

    fn readv(&mut self, iov: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        super::readv_by_recv(iov, |b| self.recv(b))
    }

    fn writev(&mut self, iov: &[IoSlice<'_>]) -> io::Result<usize> {
        if self.fd.is_none() || self.closing.is_some() {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        }
        if self.wq.has_unsent() || self.send_op.is_some() || self.connecting {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = iov.len().min(MAX_IOVECS);
        sys::sendmsg(
            self.raw(),
            sys::iovecs(&iov[..n]),
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        )
    }

    fn writev_async(&mut self, req: WriteRequest) {
        self.wq.push(req);
        // While a send is in flight the kernel reads the queue's front: failing requests
        // then waits for its completion (the next poll, or the close).
        if self.send_op.is_some() {
            return;
        }
        if self.fd.is_none() || self.closing.is_some() {
            self.wq.fail_unsent(libc::EBADF);
        } else if let Some(errno) = self.failed {
            self.wq.fail_unsent(errno);
        }
    }

    /// Starts the send of everything written so far and submits it at once. (Leaving it for
    /// the group's next poll saves an io_uring_enter per flush but cost the target 10-25 %
    /// IOPS at 4 KiB randread QD32 in interleaved A/B runs: the answer leaves a loop later.)
    fn flush(&mut self) -> io::Result<()> {
        self.start_send()?;
        with_ctx(|c| c.submit_now())
    }

    fn take_completions(&mut self, out: &mut Vec<WriteRequest>) -> usize {
        self.wq.take_done(out)
    }

    fn set_recvlowat(&mut self, bytes: usize) -> io::Result<()> {
        sys::setsockopt_int(
            self.raw(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            bytes.min(i32::MAX as usize) as i32,
        )
    }

    fn set_recvbuf(&mut self, bytes: usize) -> io::Result<()> {
        sys::setsockopt_int(
            self.raw(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            bytes.min(i32::MAX as usize) as i32,
        )
    }

    fn set_sendbuf(&mut self, bytes: usize) -> io::Result<()> {
        sys::setsockopt_int(
            self.raw(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            bytes.min(i32::MAX as usize) as i32,
        )
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        sys::local_addr(self.raw())
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        sys::peer_addr(self.raw())
    }

    fn is_ipv4(&self) -> bool {
        !self.ipv6
    }

    fn is_ipv6(&self) -> bool {
        self.ipv6
    }

    fn connect_status(&mut self) -> io::Result<bool> {
        self.check_connect();
        match self.failed {
            Some(e) => Err(io::Error::from_raw_os_error(e)),
            None => Ok(!self.connecting),
        }
    }

    fn placement_id(&self) -> Option<i32> {
        let opt = match self.placement_mode {
            1 => 56, // SO_INCOMING_NAPI_ID
            2 => 49, // SO_INCOMING_CPU
            _ => return None,
        };
        sys::getsockopt_int(self.raw(), libc::SOL_SOCKET, opt)
            .ok()
            .filter(|&v| v > 0)
    }

    fn fd(&self) -> RawFd {
        self.raw()
    }

    fn stats(&self) -> SockStats {
        self.wq.stats(0)
    }

    /// Grouped uring sockets are closed through `SockGroup::close` (the kernel may still
    /// hold their buffers); this only starts the close.
    fn close(&mut self, out: &mut Vec<WriteRequest>) {
        self.begin_close();
        self.wq.take_done(out);
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
}

/// A group of sockets on this thread's ring.
pub struct UringGroup {
    owner: u32,
    socks: slab::Slab<UringSock>,
    ready: VecDeque<SockKey>,
    reported: Vec<SockKey>,
    /// Reused buffers of `process_completions` (no allocation per poll).
    completions: Vec<Completion>,
    kinds: Vec<(SockKey, OpKind)>,
    /// Sockets the next poll looks at (connect to check, receive to re-arm, send to
    /// start, completions to report, close to finish): those handed out by `sock()`,
    /// added, closed or with a ring completion since the last poll, and those still
    /// needing it. An idle socket with its receive armed is on no list: a poll costs
    /// O(active sockets), not O(members). `active_next` is the spare the two swap with.
    active: Vec<SockKey>,
    active_next: Vec<SockKey>,
}

impl UringGroup {
    pub fn new() -> io::Result<Self> {
        let owner = with_ctx(|c| c.new_owner())??;
        Ok(Self {
            owner,
            socks: slab::Slab::new(),
            ready: VecDeque::new(),
            reported: Vec::new(),
            completions: Vec::with_capacity(256),
            kinds: Vec::with_capacity(256),
            active: Vec::new(),
            active_next: Vec::new(),
        })
    }

    fn mark_active(&mut self, key: SockKey) {
        if let Some(s) = self.socks.get_mut(key) {
            if !s.in_active {
                s.in_active = true;
                self.active.push(key);
            }
        }
    }

    fn mark_ready(&mut self, key: SockKey) {
        if let Some(s) = self.socks.get_mut(key) {
            if !s.in_ready && s.closing.is_none() {
                s.in_ready = true;
                self.ready.push_back(key);
            }
        }
    }

    /// Reaps the ring and applies this group's completions; returns how many there were.
    fn process_completions(&mut self) -> usize {
        let mut done = std::mem::take(&mut self.completions);
        let owner = self.owner;
        let mut kinds = std::mem::take(&mut self.kinds);
        kinds.clear();
        let _ = with_ctx(|c| {
            c.pump();
            if let Some(s) = c.owners.stash(owner) {
                std::mem::swap(s, &mut done);
            }
            kinds.reserve(done.len());
            for comp in &done {
                let Some(op) = c.ops.get(comp.op as usize).copied() else {
                    kinds.push((usize::MAX, OpKind::Cancel));
                    continue;
                };
                kinds.push((op.key, op.kind));
                let last = match op.kind {
                    OpKind::Send { zc: Some(_) } => {
                        cqueue::notif(comp.flags) || !cqueue::more(comp.flags)
                    }
                    _ => !cqueue::more(comp.flags),
                };
                if last {
                    c.ops.remove(comp.op as usize);
                }
            }
        });
        let count = done.len();
        for (comp, &(key, kind)) in done.drain(..).zip(kinds.iter()) {
            let Some(s) = self.socks.get_mut(key) else {
                continue;
            };
            let readable = s.on_completion(kind, comp);
            self.mark_active(key);
            if readable {
                self.mark_ready(key);
            }
        }
        self.completions = done;
        self.kinds = kinds;
        count
    }
}

impl SockGroup for UringGroup {
    fn impl_name(&self) -> &'static str {
        "uring"
    }

    fn add(&mut self, sock: Box<dyn Sock>) -> Result<SockKey, (io::Error, Box<dyn Sock>)> {
        if sock.impl_name() != "uring" {
            let e = io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a {} socket cannot join a uring group", sock.impl_name()),
            );
            return Err((e, sock));
        }
        let any = sock.into_any();
        let posix_sock = match any.downcast::<PosixSock>() {
            Ok(p) => p,
            Err(other) => {
                // An already grouped uring socket cannot move between rings.
                let e = io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a grouped uring socket cannot join another group",
                );
                let back: Box<dyn Sock> = match other.downcast::<UringSock>() {
                    Ok(u) => u,
                    Err(_) => Box::new(ErrSock),
                };
                return Err((e, back));
            }
        };
        let entry = self.socks.vacant_entry();
        let key = entry.key();
        let mut s = match UringSock::from_posix(*posix_sock, self.owner, key) {
            Ok(s) => s,
            Err(e) => return Err((e, Box::new(ErrSock))),
        };
        s.arm_recv();
        let _ = s.start_send();
        entry.insert(s);
        self.mark_active(key);
        let _ = with_ctx(|c| c.submit_now());
        Ok(key)
    }

    fn sock(&mut self, key: SockKey) -> Option<&mut dyn Sock> {
        // The caller may queue a write or consume received data: the next poll looks.
        let s = self.socks.get_mut(key).filter(|s| s.closing.is_none())?;
        if !s.in_active {
            s.in_active = true;
            self.active.push(key);
        }
        Some(s as &mut dyn Sock)
    }

    fn close(&mut self, key: SockKey) {
        if let Some(s) = self.socks.get_mut(key) {
            s.begin_close();
        }
        self.mark_active(key);
        self.ready.retain(|&k| k != key);
    }

    fn poll(&mut self, max: usize, events: &mut Vec<SockEvent>) -> usize {
        let before = events.len();
        // (The list is put back cleared, keeping its capacity: no allocation per poll.)
        let mut last = std::mem::take(&mut self.reported);
        for &key in &last {
            if self.socks.get(key).is_some_and(|s| !s.segments.is_empty()) {
                self.mark_ready(key);
            }
        }
        last.clear();
        self.reported = last;
        self.process_completions();
        let mut finished = Vec::new();
        let mut active = std::mem::take(&mut self.active);
        let mut next = std::mem::take(&mut self.active_next);
        for key in active.drain(..) {
            let Some(s) = self.socks.get_mut(key) else {
                continue;
            };
            if !s.in_active {
                continue;
            }
            if s.closing.is_some() {
                if s.busy() {
                    s.abort_if_stuck();
                    // Still closing: looked at again next poll.
                    next.push(key);
                } else {
                    s.in_active = false;
                    finished.push(key);
                }
                continue;
            }
            if s.connecting {
                s.check_connect();
            }
            if s.recv_op.is_none() {
                s.arm_recv();
            }
            if s.send_op.is_none() && s.wq.has_unsent() {
                let _ = s.start_send();
            }
            while let Some(req) = s.wq.done.pop_front() {
                events.push(SockEvent::WriteDone(key, req));
            }
            // Stays on the list while it still needs a poll's attention (a connect not
            // done yet, a receive or send that could not be started).
            if s.connecting || s.recv_op.is_none() || (s.send_op.is_none() && s.wq.has_unsent()) {
                next.push(key);
            } else {
                s.in_active = false;
            }
        }
        self.active = next;
        self.active_next = active;
        for key in finished {
            let mut s = self.socks.remove(key);
            s.fd = None; // closes the fd, exactly once
            s.wq.fail_all(libc::ECANCELED);
            while let Some(req) = s.wq.done.pop_front() {
                events.push(SockEvent::WriteDone(key, req));
            }
        }
        let mut reported = 0;
        while reported < max {
            let Some(key) = self.ready.pop_front() else {
                break;
            };
            if let Some(s) = self.socks.get_mut(key) {
                s.in_ready = false;
                events.push(SockEvent::Readable(key));
                self.reported.push(key);
                reported += 1;
            }
        }
        // Sends and re-armed receives started above go out now, not a loop later (measured:
        // deferring them to the next poll costs IOPS); nothing queued means no syscall.
        let _ = with_ctx(|c| c.submit_now());
        if events.len() == before {
            // Nothing to report: the caller may go idle and its reactor to sleep.
            let _ = with_ctx(|c| c.settle());
        }
        events.len() - before
    }

    fn len(&self) -> usize {
        self.socks.len()
    }
}

impl Drop for UringGroup {
    fn drop(&mut self) {
        for (_, s) in self.socks.iter_mut() {
            s.begin_close();
            if s.send_op.is_some() || s.notifs_pending > 0 {
                s.aborted = true;
                sys::disconnect(s.raw());
            }
        }
        // Give the kernel a moment to finish with our buffers.
        let deadline = Instant::now() + Duration::from_millis(500);
        // Completions of this group may already sit in the stash (reaped by another group
        // of this thread), so look there first, and never wait without a bound.
        loop {
            self.process_completions();
            if !self.socks.iter().any(|(_, s)| s.busy()) || Instant::now() >= deadline {
                break;
            }
            let ts = types::Timespec::new().nsec(10_000_000);
            let args = types::SubmitArgs::new().timespec(&ts);
            let _ = with_ctx(|c| {
                let _ = c.ring.submitter().submit_with_args(1, &args);
            });
        }
        for (_, mut s) in std::mem::take(&mut self.socks) {
            if s.busy() {
                // The kernel may still read these buffers: leak them rather than free them.
                std::mem::forget(std::mem::take(&mut s.wq));
                std::mem::forget(s);
            }
        }
        let owner = self.owner;
        let _ = with_ctx(|c| {
            let mut stale = Vec::new();
            c.owners.remove(owner, &mut stale);
        });
    }
}

/// Stands in for a socket that could not be handed back after a failed `add`.
struct ErrSock;

impl Sock for ErrSock {
    fn impl_name(&self) -> &'static str {
        "none"
    }
    fn recv(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(io::Error::from_raw_os_error(libc::EBADF))
    }
    fn readv(&mut self, _: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        Err(io::Error::from_raw_os_error(libc::EBADF))
    }
    fn writev(&mut self, _: &[IoSlice<'_>]) -> io::Result<usize> {
        Err(io::Error::from_raw_os_error(libc::EBADF))
    }
    fn writev_async(&mut self, mut req: WriteRequest) {
        req.result = Some(Err(io::Error::from_raw_os_error(libc::EBADF)));
        drop(req);
    }
    fn flush(&mut self) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(libc::EBADF))
    }
    fn take_completions(&mut self, _: &mut Vec<WriteRequest>) -> usize {
        0
    }
    fn set_recvlowat(&mut self, _: usize) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(libc::EBADF))
    }
    fn set_recvbuf(&mut self, _: usize) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(libc::EBADF))
    }
    fn set_sendbuf(&mut self, _: usize) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(libc::EBADF))
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        Err(io::Error::from_raw_os_error(libc::EBADF))
    }
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        Err(io::Error::from_raw_os_error(libc::EBADF))
    }
    fn is_ipv4(&self) -> bool {
        false
    }
    fn is_ipv6(&self) -> bool {
        false
    }
    fn connect_status(&mut self) -> io::Result<bool> {
        Err(io::Error::from_raw_os_error(libc::EBADF))
    }
    fn placement_id(&self) -> Option<i32> {
        None
    }
    fn fd(&self) -> RawFd {
        -1
    }
    fn stats(&self) -> SockStats {
        SockStats::default()
    }
    fn close(&mut self, _: &mut Vec<WriteRequest>) {}
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
}
