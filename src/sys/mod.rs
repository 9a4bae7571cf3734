//! Thin wrappers over the Linux system calls pollux makes, so that `unsafe` lives in one place.
//!
//! Every wrapper owns its descriptors (`OwnedFd`, closed exactly once), maps a failing
//! return to `io::Error`, and documents each `unsafe` block with a `// SAFETY:` comment (the
//! crate denies undocumented ones). The rest of the crate calls these safe functions:
//! [`epoll`] (the reactor's sleep set, the RPC server's and the posix socket group's
//! readiness sets), [`eventfd`] (reactor doorbells, the uring socket group's and the aio
//! bdev's completion wake-ups), [`socket`] (create/bind/listen/accept/connect, socket
//! options, sendmsg/readv/recv, the zero-copy error queue and its cmsgs, addresses),
//! [`aio`] (Linux native AIO), [`file`](mod@file) (statx, block-device ioctls, fcntl, flock),
//! [`mem`] (anonymous mmap) and [`process`] (CPU time, shutdown signals, the fd limit).
//!
//! What stays outside: io_uring's ring memory (submission pushes and the provided-buffer
//! ring live beside their rings in `sock/uring.rs` and `bdev/uring.rs`), the aligned buffer
//! allocator in `buf`, and the malloc bdev's raw copies (see its module doc).
//!
//! Data-path calls (epoll polling, sendmsg, readv, recv) enter the kernel through
//! `libc::syscall` rather than glibc's wrappers: those are thread-cancellation points that
//! switch asynchronous cancellation on and off around every call (2-5 % of a polling core in
//! profiles), and pollux never cancels a thread.

pub mod aio;
pub mod epoll;
pub mod eventfd;
pub mod file;
pub mod mem;
pub mod process;
pub mod socket;

pub use epoll::{Epoll, EpollEvent};
pub use eventfd::EventFd;

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

/// Maps a negative C return to the thread's `errno`.
pub fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Maps a negative byte-count return to the thread's `errno`.
pub fn cvt_size(rc: isize) -> io::Result<usize> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as usize)
    }
}

/// Takes ownership of the descriptor a system call just returned (`rc >= 0`), or maps the
/// error.
///
/// # Safety
/// `rc` is the return value of a call that creates a descriptor (socket, accept4, eventfd,
/// epoll_create1), passed on at once: a non-negative value is then a new descriptor that
/// nothing else owns.
unsafe fn owned(rc: libc::c_int) -> io::Result<OwnedFd> {
    let fd = cvt(rc)?;
    // SAFETY: by the caller's contract, `fd` is new and owned by nobody else, so the OwnedFd
    // closes it exactly once.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
