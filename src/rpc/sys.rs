//! Thin syscall wrappers the RPC server needs and std does not offer: the server's own epoll
//! set (polled with a zero timeout by the server poller, and registered as one wake fd of the
//! main reactor so an idle reactor wakes the moment a client connects or writes), `flock` for
//! the socket's lock file, and `send` with MSG_NOSIGNAL so a vanished client can never raise
//! SIGPIPE. (Answers delivered from other threads ring the reactor's `EventFd`.) Every
//! `unsafe` of the RPC server lives here.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Readiness bits, re-exported so the server needs no libc constants of its own.
pub const READABLE: u32 = libc::EPOLLIN as u32;
pub const WRITABLE: u32 = libc::EPOLLOUT as u32;
pub const HANGUP: u32 = (libc::EPOLLHUP | libc::EPOLLERR) as u32;

/// An epoll set polled without blocking.
pub struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    pub fn new() -> io::Result<Self> {
        // SAFETY: epoll_create1 takes no pointers; a negative return is mapped to an error.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor owned by nobody else.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, token: u64, events: u32) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: ev is a live epoll_event for the duration of the call.
        let rc = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut ev) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn add(&self, fd: RawFd, token: u64, events: u32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, events)
    }

    pub fn modify(&self, fd: RawFd, token: u64, events: u32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, token, events)
    }

    pub fn remove(&self, fd: RawFd) {
        // Errors are ignored: the fd may already be gone from the set.
        let _ = self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0);
    }

    /// Collects ready `(token, events)` pairs without waiting; returns how many were stored.
    pub fn poll_now(&self, out: &mut [(u64, u32)]) -> usize {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
        let max = out.len().min(events.len());
        // SAFETY: events outlives the call and epoll_wait writes at most `max` entries.
        let rc = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                events.as_mut_ptr(),
                max as libc::c_int,
                0,
            )
        };
        let n = rc.max(0) as usize;
        for (slot, ev) in out.iter_mut().zip(events.iter()).take(n) {
            *slot = (ev.u64, ev.events);
        }
        n
    }
}

impl AsRawFd for Epoll {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Takes an exclusive `flock` on `fd` without waiting. `Ok(false)`: another holder has it.
pub fn try_lock_exclusive(fd: RawFd) -> io::Result<bool> {
    // SAFETY: flock takes no pointers.
    let rc = unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(err)
    }
}

/// Sends bytes on a stream socket without raising SIGPIPE if the peer is gone.
pub fn send_nosignal(fd: RawFd, bytes: &[u8]) -> io::Result<usize> {
    // SAFETY: bytes is a live slice of `bytes.len()` readable bytes.
    let rc = unsafe {
        libc::send(
            fd,
            bytes.as_ptr().cast(),
            bytes.len(),
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc as usize)
}
