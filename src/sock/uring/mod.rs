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

mod group;
mod listener;
mod ring;
mod socket;

pub use group::UringGroup;
pub use listener::UringListener;
use ring::*;
pub use ring::{available, ring_stats, RingStats};
pub use socket::UringSock;

use crate::buf::IoBuf;
use crate::sock::posix::{PosixListener, PosixSock};
use crate::sock::{
    settings, Listener, NetImpl, Sock, SockEvent, SockGroup, SockKey, SockOpts, SockStats,
    WriteQueue, WriteRequest, MAX_IOVECS,
};
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
