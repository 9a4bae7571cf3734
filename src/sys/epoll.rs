//! One epoll wrapper for the three readiness sets: the reactor's sleep set, the RPC server's
//! client set and the posix socket group's socket set.

use super::{cvt, owned};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Readiness bits.
pub const READABLE: u32 = libc::EPOLLIN as u32;
pub const WRITABLE: u32 = libc::EPOLLOUT as u32;
pub const HANGUP: u32 = (libc::EPOLLHUP | libc::EPOLLERR) as u32;

/// One readiness report: the token given at registration and the ready bits.
#[derive(Clone, Copy)]
#[repr(transparent)]
pub struct EpollEvent(libc::epoll_event);

impl EpollEvent {
    pub const EMPTY: Self = Self(libc::epoll_event { events: 0, u64: 0 });

    #[inline]
    pub fn token(&self) -> u64 {
        self.0.u64
    }

    #[inline]
    pub fn events(&self) -> u32 {
        self.0.events
    }
}

/// An epoll set of level-triggered sources.
pub struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    pub fn new() -> io::Result<Self> {
        // SAFETY: epoll_create1 takes no pointers and returns a new descriptor (or -1).
        let fd = unsafe { owned(libc::epoll_create1(libc::EPOLL_CLOEXEC)) }?;
        Ok(Self { fd })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, token: u64, events: u32) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: ev is a live epoll_event for the duration of the call.
        cvt(unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut ev) }).map(drop)
    }

    /// Adds `fd` with interest `events` (e.g. [`READABLE`]); reports carry `token`.
    pub fn add(&self, fd: RawFd, token: u64, events: u32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, events)
    }

    pub fn modify(&self, fd: RawFd, token: u64, events: u32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, token, events)
    }

    /// Removes `fd`; errors (the fd already gone from the set) are returned for callers
    /// that care and may be ignored.
    pub fn remove(&self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    /// Collects ready sources without waiting; returns how many reports were written.
    #[inline]
    pub fn poll(&self, events: &mut [EpollEvent]) -> usize {
        let max = events.len().min(i32::MAX as usize) as libc::c_long;
        // SAFETY: `events` is writable for `max` entries (EpollEvent is a transparent
        // epoll_event); a null sigmask means "no change", and a zero timeout never blocks.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_epoll_pwait,
                self.fd.as_raw_fd() as libc::c_long,
                events.as_mut_ptr(),
                max,
                0 as libc::c_long,
                std::ptr::null::<libc::sigset_t>(),
                8 as libc::c_long,
            )
        };
        rc.max(0) as usize
    }

    /// Collects ready `(token, events)` pairs without waiting; returns how many were stored.
    pub fn poll_now(&self, out: &mut [(u64, u32)]) -> usize {
        let mut events = [EpollEvent::EMPTY; 64];
        let max = out.len().min(events.len());
        let n = self.poll(&mut events[..max]);
        for (slot, ev) in out.iter_mut().zip(events.iter()).take(n) {
            *slot = (ev.token(), ev.events());
        }
        n
    }

    /// Sleeps until a source is ready or `timeout` passes (`None`: no limit).
    /// Returns how many sources were ready; EINTR counts as zero.
    pub fn wait(&self, timeout: Option<Duration>) -> usize {
        let mut events = [EpollEvent::EMPTY; 8];
        let ts = timeout.map(|t| libc::timespec {
            tv_sec: t.as_secs() as libc::time_t,
            tv_nsec: t.subsec_nanos() as libc::c_long,
        });
        let ts_ptr = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: events and ts outlive the call; epoll_pwait2 (Linux 5.11+) reads at most
        // `events.len()` entries and a null timespec means "no timeout".
        let rc = unsafe {
            libc::syscall(
                libc::SYS_epoll_pwait2,
                self.fd.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as libc::c_int,
                ts_ptr,
                std::ptr::null::<libc::sigset_t>(),
                0usize,
            )
        };
        if rc == -1 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
            return self.wait_millis(timeout);
        }
        rc.max(0) as usize
    }

    fn wait_millis(&self, timeout: Option<Duration>) -> usize {
        let mut events = [EpollEvent::EMPTY; 8];
        let ms = timeout.map_or(-1, |t| {
            t.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
        });
        // SAFETY: events outlives the call and epoll_wait writes at most its length.
        let rc = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                events.as_mut_ptr().cast(),
                events.len() as libc::c_int,
                ms,
            )
        };
        rc.max(0) as usize
    }
}

impl AsRawFd for Epoll {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
