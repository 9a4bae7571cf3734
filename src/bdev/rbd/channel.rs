//! An RBD bdev's I/O path on one reactor: the slot table, librbd AIO submission, completions reaped from the eventfd, and I/O timeouts.

use super::ffi::{self, Image};
use super::{status_of_errno, BdevIo, Completer, IoStatus, IoType, ModuleChannel, DEPTH};
use crate::bdev::compare;
use crate::reactor::{self, WakeSource};
use crate::sys::eventfd::EventFd;
use std::cell::RefCell;
use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Default)]
pub(super) struct Slot {
    pub(super) io: Option<BdevIo>,
    pub(super) done: Option<Completer>,
    pub(super) iov: Vec<libc::iovec>,
    pub(super) deadline: Option<Instant>,
    /// Buffers of an I/O answered on timeout, kept until librbd completes it.
    pub(super) orphan: Option<Vec<crate::buf::IoBuf>>,
    pub(super) busy: bool,
    /// Where librbd reports a compare-and-write's first differing byte (boxed: its
    /// address must not move while librbd may write it).
    pub(super) mismatch: Box<u64>,
    /// The completion of a compare-and-write in flight (found done by polling it: librbd
    /// does not put it on the image's event queue), as an address.
    pub(super) unannounced: Option<usize>,
}

/// librbd's compare-and-write unit: a request must lie within one such sector.
pub(super) const NATIVE_CAW_SECTOR: u32 = 512;

thread_local! {
    /// This reactor's per-bdev handle state, shared by its channels.
    pub(super) static LOCAL: RefCell<HashMap<usize, Weak<RefCell<CoreState>>>> = RefCell::new(HashMap::new());
}

pub(super) static NEXT_GEN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);

/// One reactor's state for one RBD bdev (shared by that reactor's channels of it).
pub(super) struct CoreState {
    pub(super) image: Arc<Image>,
    pub(super) efd: Arc<EventFd>,
    pub(super) slots: Vec<Slot>,
    pub(super) free: Vec<u32>,
    pub(super) comps: Vec<ffi::CompletionT>,
    pub(super) next_check: Instant,
    /// Tags completions (with the slot index) so an earlier generation's late completion
    /// on the same image handle is never taken for one of ours.
    pub(super) gen: usize,
    /// Keep draining the eventfd while idle until then (see `poll`).
    pub(super) drain_until: Option<Instant>,
    /// Compare-and-writes in flight whose completions are polled (`Slot::unannounced`).
    pub(super) unannounced: usize,
    pub(super) _wake: WakeSource,
}

impl Drop for CoreState {
    fn drop(&mut self) {
        // Buffers librbd may still write into (timed-out I/O, or I/O in flight at
        // shutdown): never free them under it.
        for s in &mut self.slots {
            if s.busy {
                if let Some(io) = s.io.take() {
                    std::mem::forget(io);
                }
                if let Some(b) = s.orphan.take() {
                    std::mem::forget(b);
                }
            }
        }
    }
}

pub(super) fn drain(efd: &EventFd) {
    efd.drain();
}

pub(super) struct RbdChannel {
    pub(super) state: Rc<RefCell<CoreState>>,
    pub(super) block_size: u64,
    pub(super) timeout: Duration,
    /// Completions collected under the state borrow, delivered after it.
    pub(super) done_buf: Vec<(BdevIo, Completer, IoStatus)>,
}

impl RbdChannel {
    pub(super) fn start(&self, st: &mut CoreState, idx: u32) -> i32 {
        let image = st.image.clone();
        let bs = self.block_size;
        let tag = (st.gen << 16) | idx as usize;
        let slot = &mut st.slots[idx as usize];
        let Some(io) = slot.io.as_ref() else {
            return -libc::EINVAL;
        };
        let off = io.offset_blocks * bs;
        let len = io.num_blocks * bs;
        let c = match image.completion(tag) {
            Ok(c) => c,
            Err(r) => return r,
        };
        let r = match io.io_type {
            IoType::Read | IoType::Write => {
                slot.iov.clear();
                for b in &io.bufs {
                    slot.iov.push(libc::iovec {
                        iov_base: b.as_ptr() as *mut libc::c_void,
                        iov_len: b.len(),
                    });
                }
                if io.io_type == IoType::Read {
                    // SAFETY: the iovecs point at the I/O's buffers, which stay in this
                    // slot (not moved, not read) until the completion is polled, or are
                    // kept as orphans after a timeout (never freed under librbd).
                    unsafe { image.readv(&slot.iov, off, c) }
                } else {
                    // SAFETY: as above; librbd only reads them.
                    unsafe { image.writev(&slot.iov, off, c) }
                }
            }
            IoType::Flush => image.aio_flush(c),
            IoType::Unmap => image.aio_discard(off, len, c),
            IoType::WriteZeroes => image.aio_write_zeroes(off, len, c),
            IoType::CompareAndWrite => {
                let Some(at) = compare::split_at(io) else {
                    image.release(c);
                    return -libc::EINVAL;
                };
                slot.iov.clear();
                for b in &io.bufs {
                    slot.iov.push(libc::iovec {
                        iov_base: b.as_ptr() as *mut libc::c_void,
                        iov_len: b.len(),
                    });
                }
                image.release(c);
                let c = match image.completion_waking(st.efd.as_raw_fd()) {
                    Ok(c) => c,
                    Err(r) => return r,
                };
                let slot = &mut st.slots[idx as usize];
                let (cmp, data) = slot.iov.split_at(at);
                // SAFETY: as for writes: the iovecs point at the I/O's buffers, which stay
                // in this slot until the completion is polled; librbd only reads them.
                let r = unsafe { image.compare_and_writev(cmp, data, off, c, &mut *slot.mismatch) };
                if r < 0 {
                    image.release(c);
                } else {
                    slot.unannounced = Some(c as usize);
                    st.unannounced += 1;
                }
                return r;
            }
            IoType::Reset | IoType::Compare => -libc::EOPNOTSUPP,
        };
        if r < 0 {
            image.release(c);
        }
        r
    }

    /// Frees slot `idx`, whose I/O librbd completed with `ret`, and queues its answer.
    pub(super) fn finish_slot(&mut self, st: &mut CoreState, idx: usize, ret: isize) {
        let slot = &mut st.slots[idx];
        slot.busy = false;
        slot.deadline = None;
        slot.orphan = None;
        let io = slot.io.take();
        let done = slot.done.take();
        st.free.push(idx as u32);
        let (Some(io), Some(done)) = (io, done) else {
            return; // answered on timeout already
        };
        let status = if ret == -(libc::EILSEQ as isize) && io.io_type == IoType::CompareAndWrite {
            IoStatus::Miscompare
        } else if ret == -(libc::EINVAL as isize) && io.io_type == IoType::CompareAndWrite {
            // Beyond one 512-byte sector (librbd compares within one).
            IoStatus::InvalidRequest
        } else if ret < 0 {
            status_of_errno(-ret as i32)
        } else if io.io_type == IoType::Read && ret as u64 != io.num_blocks * self.block_size {
            IoStatus::Failed
        } else {
            IoStatus::Success
        };
        self.done_buf.push((io, done, status));
    }

    /// Finishes the compare-and-writes librbd completed without announcing them.
    pub(super) fn reap_unannounced(&mut self, st: &mut CoreState) -> usize {
        let mut found = 0;
        for idx in 0..st.slots.len() {
            let Some(c) = st.slots[idx].unannounced else {
                continue;
            };
            let Some(ret) = st.image.try_finish(c as ffi::CompletionT) else {
                continue;
            };
            st.slots[idx].unannounced = None;
            st.unannounced -= 1;
            found += 1;
            self.finish_slot(st, idx, ret);
        }
        found
    }

    /// Collects completed AIO into `done_buf` (state borrowed); returns the count.
    pub(super) fn reap(&mut self, st: &mut CoreState) -> usize {
        drain(&st.efd);
        let image = st.image.clone();
        let mut total = 0;
        if st.unannounced > 0 {
            total += self.reap_unannounced(st);
        }
        loop {
            let n = image.poll_events(&mut st.comps);
            for i in 0..n {
                if image.arg_of(st.comps[i]) == st.efd.as_raw_fd() as usize {
                    // A compare-and-write's (should librbd announce it after all): it is
                    // found and released by `reap_unannounced`.
                    continue;
                }
                let (ret, tag) = image.finish(st.comps[i]);
                total += 1;
                let idx = if tag >> 16 == st.gen {
                    tag & 0xffff
                } else {
                    usize::MAX // an earlier generation's: see below
                };
                if st.slots.get(idx).is_none_or(|s| !s.busy) {
                    // A completion of an earlier generation of this reactor's state (an I/O
                    // that timed out before its channels closed; its buffers were kept
                    // forever): nothing of ours is in it.
                    tracing::warn!(idx, "rbd completion for no I/O in flight");
                    continue;
                }
                self.finish_slot(st, idx, ret);
            }
            if n < st.comps.len() {
                break;
            }
        }
        if total > 0 {
            st.drain_until = Some(reactor::now() + Duration::from_millis(10));
        }
        total
    }

    /// Answers I/O older than the timeout (checked every 100 ms).
    pub(super) fn expire(&mut self, st: &mut CoreState) {
        let now = reactor::now();
        if now < st.next_check {
            return;
        }
        st.next_check = now + Duration::from_millis(100);
        for slot in st.slots.iter_mut() {
            if !slot.busy || slot.deadline.is_none_or(|d| d > now) {
                continue;
            }
            slot.deadline = None;
            let (Some(mut io), Some(done)) = (slot.io.take(), slot.done.take()) else {
                continue;
            };
            // librbd may still use the buffers: keep them, answer with fresh ones.
            let fresh: Vec<crate::buf::IoBuf> = io
                .bufs
                .iter()
                .map(|b| crate::buf::IoBuf::zeroed(b.len()))
                .collect();
            slot.orphan = Some(std::mem::replace(&mut io.bufs, fresh));
            tracing::warn!(io_type = ?io.io_type, offset = io.offset_blocks, "rbd I/O timed out");
            self.done_buf.push((io, done, IoStatus::Failed));
        }
    }

    pub(super) fn deliver(&mut self) {
        for (io, done, status) in self.done_buf.drain(..) {
            done.complete(io, status);
        }
    }
}

impl ModuleChannel for RbdChannel {
    fn submit(&mut self, io: BdevIo, done: &Completer) {
        if io.io_type == IoType::Reset {
            return done.complete(io, IoStatus::Success);
        }
        let state = self.state.clone();
        let mut st = state.borrow_mut();
        let Some(idx) = st.free.pop() else {
            drop(st);
            return done.complete(io, IoStatus::NoMem);
        };
        {
            let slot = &mut st.slots[idx as usize];
            slot.io = Some(io);
            slot.done = Some(done.clone());
            slot.busy = true;
            slot.deadline = Some(reactor::now() + self.timeout);
        }
        let r = self.start(&mut st, idx);
        if r < 0 {
            let slot = &mut st.slots[idx as usize];
            slot.busy = false;
            slot.deadline = None;
            let io = slot.io.take();
            slot.done = None;
            st.free.push(idx);
            drop(st);
            if let Some(io) = io {
                done.complete(io, status_of_errno(-r));
            }
        }
    }

    fn poll(&mut self, _done: &Completer) -> usize {
        let state = self.state.clone();
        let n = {
            let mut st = state.borrow_mut();
            if st.free.len() == DEPTH {
                // Nothing in flight. librbd may signal the eventfd just after the last
                // completion was polled: drain it for a while, or the level-triggered wake
                // would keep an idle reactor awake.
                if st.drain_until.is_some_and(|t| reactor::now() < t) {
                    drain(&st.efd);
                } else {
                    st.drain_until = None;
                }
                return 0;
            }
            let n = self.reap(&mut st);
            self.expire(&mut st);
            n
        };
        self.deliver();
        n
    }
}
