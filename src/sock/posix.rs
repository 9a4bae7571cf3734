//! The posix socket impl: non-blocking TCP sockets driven by plain syscalls.
//!
//! A group is an epoll set polled with a zero timeout; each socket may have a receive pipe (a resizable ring
//! buffer filled by one large readv, so many small reads cost one syscall; reads at least as
//! large as the pipe bypass it). Readable sockets are reported in FIFO order with a per-poll
//! limit, and sockets still holding buffered bytes go to the back of the line (fair rotation).
//! Writes are queued and flushed with sendmsg (up to 64 iovecs, MSG_NOSIGNAL, resuming partial
//! writes). With SO_ZEROCOPY (non-loopback sockets, or forced) sends at or above the threshold
//! use MSG_ZEROCOPY; their buffers are held until the error-queue completion for their sendmsg
//! index arrives (IPv4 and IPv6 origins, 32-bit wrap, ZEROCOPY_COPIED counted). ENOBUFS is
//! retried on the next poll. The syscalls themselves are `sys::socket` and `sys::epoll`.

#![forbid(unsafe_code)]

use super::{
    is_loopback, own_sock, parse_addr, settings, ImplOptions, Listener, NetImpl, Sock, SockEvent,
    SockGroup, SockKey, SockOpts, SockStats, WriteQueue, WriteRequest, MAX_IOVECS,
};
use crate::buf::copy_bytes;
use crate::sys::epoll::{Epoll, EpollEvent, READABLE, WRITABLE};
use crate::sys::socket::{
    self as sys, getsockopt_int, local_addr, new_socket, peer_addr, recv_zc_completion,
    setsockopt_int, SO_INCOMING_CPU, SO_INCOMING_NAPI_ID, SO_ZEROCOPY,
};
use std::any::Any;
use std::collections::VecDeque;
use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
/// Default receive pipe size when the recv buffer option does not say otherwise.
const MIN_PIPE: usize = 1024;
const DEFAULT_PIPE: usize = 64 * 1024;

pub struct PosixImpl;

impl NetImpl for PosixImpl {
    fn name(&self) -> &'static str {
        "posix"
    }
    fn priority(&self) -> i32 {
        0
    }
    fn listen(&self, addr: &str, port: u16, opts: &SockOpts) -> io::Result<Box<dyn Listener>> {
        Ok(Box::new(PosixListener::bind(addr, port, opts, "posix")?))
    }
    fn connect(&self, addr: &str, port: u16, opts: &SockOpts) -> io::Result<Box<dyn Sock>> {
        Ok(Box::new(PosixSock::connect(addr, port, opts, "posix")?))
    }
    fn create_group(&self) -> io::Result<Box<dyn SockGroup>> {
        Ok(Box::new(PosixGroup::new()?))
    }
}

fn impl_options(impl_name: &str) -> ImplOptions {
    let s = settings();
    if impl_name == "uring" {
        s.uring
    } else {
        s.posix
    }
}

/// A listening socket (used by both impls; `uring` layers multishot accept on top).
pub struct PosixListener {
    fd: OwnedFd,
    opts: SockOpts,
    impl_name: &'static str,
}

impl PosixListener {
    pub(crate) fn bind(
        addr: &str,
        port: u16,
        opts: &SockOpts,
        impl_name: &'static str,
    ) -> io::Result<Self> {
        let sa = parse_addr(addr, port)?;
        let fd = new_socket(&sa)?;
        setsockopt_int(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
        if sa.is_ipv6() {
            setsockopt_int(fd.as_raw_fd(), libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1)?;
        }
        let o = impl_options(impl_name);
        let rcv = opts.recv_buf_size.unwrap_or(o.recv_buf_size);
        if rcv > 0 {
            // Inherited by accepted sockets; best effort (the kernel caps it).
            let _ = setsockopt_int(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                rcv as i32,
            );
        }
        sys::bind(fd.as_raw_fd(), &sa)?;
        sys::listen(fd.as_raw_fd(), 512)?;
        Ok(Self {
            fd,
            opts: opts.clone(),
            impl_name,
        })
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub(crate) fn opts(&self) -> &SockOpts {
        &self.opts
    }
}

impl Listener for PosixListener {
    fn impl_name(&self) -> &'static str {
        self.impl_name
    }
    fn accept(&mut self) -> io::Result<Option<Box<dyn Sock>>> {
        loop {
            let e = match sys::accept(self.fd.as_raw_fd()) {
                Ok(fd) => match PosixSock::from_accepted(fd, &self.opts, self.impl_name) {
                    Ok(sock) => return Ok(Some(Box::new(sock))),
                    // The peer went away between accept and setup: try the next one.
                    Err(e) => {
                        tracing::debug!("sock: dropping an accepted connection: {e}");
                        continue;
                    }
                },
                Err(e) => e,
            };
            match e.raw_os_error() {
                Some(libc::EAGAIN) => return Ok(None),
                Some(libc::EINTR) => continue,
                // The peer gave up before we accepted: try the next one.
                Some(libc::ECONNABORTED) | Some(libc::EPROTO) => continue,
                _ => return Err(e),
            }
        }
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        local_addr(self.fd.as_raw_fd())
    }
    fn wake_fd(&self) -> Option<RawFd> {
        Some(self.fd.as_raw_fd())
    }
}

/// A ring buffer of received bytes; resizing keeps the buffered bytes.
#[derive(Debug)]
pub struct RecvPipe {
    buf: Vec<u8>,
    head: usize,
    len: usize,
}

impl RecvPipe {
    pub fn new(size: usize) -> Self {
        Self {
            buf: vec![0; size.max(MIN_PIPE)],
            head: 0,
            len: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Resizes to `size` (at least what is buffered now), keeping the buffered bytes in order.
    pub fn resize(&mut self, size: usize) {
        let size = size.max(MIN_PIPE).max(self.len);
        let mut new = vec![0; size];
        let n = self.copy_out(&mut new[..self.len]);
        debug_assert_eq!(n, self.len);
        self.buf = new;
        self.head = 0;
        self.len = n;
    }

    /// Copies (without consuming) up to `out.len()` buffered bytes.
    fn copy_out(&self, out: &mut [u8]) -> usize {
        let n = out.len().min(self.len);
        let cap = self.buf.len();
        let first = n.min(cap - self.head);
        copy_bytes(&mut out[..first], &self.buf[self.head..self.head + first]);
        copy_bytes(&mut out[first..n], &self.buf[..n - first]);
        n
    }

    /// Moves up to `out.len()` bytes out.
    pub fn read(&mut self, out: &mut [u8]) -> usize {
        let n = self.copy_out(out);
        self.consume(n);
        n
    }

    fn consume(&mut self, n: usize) {
        self.len -= n;
        self.head = if self.len == 0 {
            0
        } else {
            (self.head + n) % self.buf.len()
        };
    }

    /// Fills the free space with one readv. `Ok(0)` is end of stream.
    pub fn fill(&mut self, fd: RawFd) -> io::Result<usize> {
        let cap = self.buf.len();
        let free = cap - self.len;
        if free == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let tail = (self.head + self.len) % cap;
        let first = free.min(cap - tail);
        // The free space is [tail, tail + first) and, when it wraps, [0, free - first).
        let (wrapped, from_tail) = self.buf.split_at_mut(tail);
        let mut iov = [
            IoSliceMut::new(&mut from_tail[..first]),
            IoSliceMut::new(&mut wrapped[..free - first]),
        ];
        let cnt = if free > first { 2 } else { 1 };
        let n = sys::readv(fd, &mut iov[..cnt])?;
        self.len += n;
        Ok(n)
    }
}

/// A TCP socket of the posix impl (also the ungrouped form of a `uring` socket).
pub struct PosixSock {
    pub(crate) impl_name: &'static str,
    pub(crate) fd: Option<OwnedFd>,
    pub(crate) ipv6: bool,
    connecting: bool,
    /// The error that ended the connection for writing.
    pub(crate) failed: Option<i32>,
    pub(crate) pipe: Option<RecvPipe>,
    pub(crate) wq: WriteQueue,
    pub(crate) zerocopy: bool,
    pub(crate) zc_threshold: usize,
    pub(crate) opts: SockOpts,
    placement_mode: u32,
    /// The last flush left bytes unsent because the socket buffer was full.
    blocked: bool,
    pub(crate) enobufs: u64,
    /// Member of a posix group, whose epoll set reports it readable when bytes arrive.
    in_group: bool,
    /// In a group: the last receive syscall came back short (the kernel queue was empty at
    /// that moment), so receives answer WouldBlock without a syscall until the group's epoll
    /// reports the socket readable again. This saves the trailing EAGAIN read of every drain.
    drained: bool,
}

impl PosixSock {
    pub(crate) fn connect(
        addr: &str,
        port: u16,
        opts: &SockOpts,
        impl_name: &'static str,
    ) -> io::Result<Self> {
        let sa = parse_addr(addr, port)?;
        let fd = new_socket(&sa)?;
        let mut sock = Self::setup(fd, opts, impl_name, false, sa.is_ipv6())?;
        if let Err(e) = sys::connect(sock.raw(), &sa) {
            if e.raw_os_error() != Some(libc::EINPROGRESS) {
                return Err(e);
            }
            sock.connecting = true;
        }
        sock.configure_zerocopy(&sa, false);
        Ok(sock)
    }

    pub(crate) fn from_accepted(
        fd: OwnedFd,
        opts: &SockOpts,
        impl_name: &'static str,
    ) -> io::Result<Self> {
        let peer = peer_addr(fd.as_raw_fd())?;
        let mut sock = Self::setup(fd, opts, impl_name, true, peer.is_ipv6())?;
        sock.configure_zerocopy(&peer, true);
        Ok(sock)
    }

    fn setup(
        fd: OwnedFd,
        opts: &SockOpts,
        impl_name: &'static str,
        _server: bool,
        ipv6: bool,
    ) -> io::Result<Self> {
        let o = impl_options(impl_name);
        let raw = fd.as_raw_fd();
        setsockopt_int(raw, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
        let snd = opts.send_buf_size.unwrap_or(o.send_buf_size);
        if snd > 0 {
            setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_SNDBUF, snd as i32)?;
        }
        let rcv = opts.recv_buf_size.unwrap_or(o.recv_buf_size);
        if rcv > 0 {
            setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_RCVBUF, rcv as i32)?;
        }
        if o.enable_quickack {
            setsockopt_int(raw, libc::IPPROTO_TCP, libc::TCP_QUICKACK, 1)?;
        }
        let pipe = (o.enable_recv_pipe && impl_name == "posix")
            .then(|| RecvPipe::new(DEFAULT_PIPE.min(rcv.max(MIN_PIPE as u32) as usize)));
        Ok(Self {
            impl_name,
            fd: Some(fd),
            ipv6,
            connecting: false,
            failed: None,
            pipe,
            wq: WriteQueue::default(),
            zerocopy: false,
            zc_threshold: opts.zerocopy_threshold.unwrap_or(o.zerocopy_threshold) as usize,
            opts: opts.clone(),
            placement_mode: o.enable_placement_id,
            blocked: false,
            enobufs: 0,
            in_group: false,
            drained: false,
        })
    }

    /// Turns SO_ZEROCOPY on when the options ask for it (posix only: uring uses SEND_ZC).
    fn configure_zerocopy(&mut self, peer: &SocketAddr, server: bool) {
        let o = impl_options(self.impl_name);
        let wanted = self.opts.zerocopy.unwrap_or(if server {
            o.enable_zerocopy_send_server
        } else {
            o.enable_zerocopy_send_client
        });
        if !wanted || (is_loopback(peer) && !self.opts.zerocopy_on_loopback) {
            return;
        }
        if self.impl_name == "posix" {
            self.zerocopy = setsockopt_int(self.raw(), libc::SOL_SOCKET, SO_ZEROCOPY, 1).is_ok();
        } else {
            self.zerocopy = true;
        }
    }

    pub(crate) fn raw(&self) -> RawFd {
        self.fd.as_ref().map_or(-1, |f| f.as_raw_fd())
    }

    /// True while the last flush found the socket buffer full (wait for EPOLLOUT).
    pub(crate) fn wants_pollout(&self) -> bool {
        self.connecting || (self.blocked && self.wq.has_unsent())
    }

    pub(crate) fn is_connecting(&self) -> bool {
        self.connecting
    }

    pub(crate) fn buffered(&self) -> usize {
        self.pipe.as_ref().map_or(0, RecvPipe::len)
    }

    fn closed_err() -> io::Error {
        io::Error::from_raw_os_error(libc::EBADF)
    }

    fn do_flush(&mut self) -> io::Result<()> {
        if self.fd.is_none() {
            return Err(Self::closed_err());
        }
        if let Some(errno) = self.failed {
            self.wq.fail_unsent(errno);
            return Err(io::Error::from_raw_os_error(errno));
        }
        if self.connecting && !self.connect_status()? {
            return Ok(());
        }
        self.blocked = false;
        let mut iov = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; MAX_IOVECS];
        while self.wq.has_unsent() {
            let (cnt, bytes) = self.wq.fill_iovecs(&mut iov);
            let zc = self.zerocopy && self.impl_name == "posix" && bytes >= self.zc_threshold;
            let flags = libc::MSG_NOSIGNAL | if zc { libc::MSG_ZEROCOPY } else { 0 };
            match sys::sendmsg(self.raw(), &iov[..cnt], flags) {
                Ok(n) => {
                    let seq = (zc && n > 0).then(|| self.wq.zc.issue());
                    self.wq.advance(n, seq);
                    if n < bytes {
                        self.blocked = true;
                        break;
                    }
                }
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN) => {
                        self.blocked = true;
                        break;
                    }
                    Some(libc::EINTR) => continue,
                    // Out of option memory for zero-copy state: retry on the next poll.
                    Some(libc::ENOBUFS) => {
                        self.enobufs += 1;
                        break;
                    }
                    errno => {
                        let errno = errno.unwrap_or(libc::EIO);
                        self.failed = Some(errno);
                        self.wq.fail_unsent(errno);
                        return Err(e);
                    }
                },
            }
        }
        Ok(())
    }

    /// Reads zero-copy completions from the error queue; returns how many were handled.
    pub(crate) fn reap_errqueue(&mut self) -> usize {
        let mut handled = 0;
        while self.wq.zc.pending() > 0 {
            match recv_zc_completion(self.raw()) {
                Ok(Some((lo, hi, copied))) => {
                    self.wq.zc.complete_range(lo, hi);
                    if copied {
                        self.wq.zc.copied += 1;
                    }
                    handled += 1;
                }
                Ok(None) => continue,
                Err(_) => break,
            }
        }
        if handled > 0 {
            self.wq.release();
        }
        handled
    }

    fn pipe_recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let fd = self.raw();
        let Some(pipe) = self.pipe.as_mut() else {
            return self.recv_syscall(buf.len(), |_| sys::recv(fd, buf));
        };
        if pipe.is_empty() {
            if buf.len() >= pipe.capacity() {
                return self.recv_syscall(buf.len(), |_| sys::recv(fd, buf));
            }
            let free = pipe.capacity() - pipe.len();
            if self.recv_syscall(free, |s| s.pipe.as_mut().map_or(Ok(0), |p| p.fill(fd)))? == 0 {
                return Ok(0);
            }
        }
        Ok(self.pipe.as_mut().map_or(0, |p| p.read(buf)))
    }

    /// Runs one receive syscall asking for `asked` bytes, unless the socket is known to be
    /// drained (see `drained`), and records whether it came back short.
    fn recv_syscall(
        &mut self,
        asked: usize,
        syscall: impl FnOnce(&mut Self) -> io::Result<usize>,
    ) -> io::Result<usize> {
        if self.drained {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let r = syscall(self);
        if self.in_group {
            self.drained = match &r {
                Ok(n) => *n > 0 && *n < asked,
                Err(e) => e.kind() == io::ErrorKind::WouldBlock,
            };
        }
        r
    }
}

impl Sock for PosixSock {
    fn impl_name(&self) -> &'static str {
        self.impl_name
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.fd.is_none() {
            return Err(Self::closed_err());
        }
        if buf.is_empty() {
            return Ok(0);
        }
        if self.connecting && !self.connect_status()? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        loop {
            match self.pipe_recv(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }

    fn readv(&mut self, iov: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        if self.fd.is_none() {
            return Err(Self::closed_err());
        }
        let total: usize = iov.iter().map(|b| b.len()).sum();
        let bypass = self
            .pipe
            .as_ref()
            .is_none_or(|p| p.is_empty() && total >= p.capacity());
        if bypass && !self.connecting {
            let fd = self.raw();
            return self.recv_syscall(total, |_| sys::readv(fd, iov));
        }
        super::readv_by_recv(iov, |b| self.recv(b))
    }

    fn writev(&mut self, iov: &[IoSlice<'_>]) -> io::Result<usize> {
        if self.fd.is_none() {
            return Err(Self::closed_err());
        }
        if self.wq.has_unsent() || self.connecting {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = iov.len().min(MAX_IOVECS);
        sys::sendmsg(self.raw(), sys::iovecs(&iov[..n]), libc::MSG_NOSIGNAL)
    }

    fn writev_async(&mut self, req: WriteRequest) {
        self.wq.push(req);
        if self.fd.is_none() {
            self.wq.fail_unsent(libc::EBADF);
        } else if let Some(errno) = self.failed {
            self.wq.fail_unsent(errno);
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.do_flush()
    }

    fn take_completions(&mut self, out: &mut Vec<WriteRequest>) -> usize {
        let _ = self.do_flush();
        self.reap_errqueue();
        self.wq.take_done(out)
    }

    fn set_recvlowat(&mut self, bytes: usize) -> io::Result<()> {
        setsockopt_int(
            self.raw(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            bytes.min(i32::MAX as usize) as i32,
        )
    }

    fn set_recvbuf(&mut self, bytes: usize) -> io::Result<()> {
        if let Some(pipe) = self.pipe.as_mut() {
            pipe.resize(bytes.min(16 << 20));
        }
        setsockopt_int(
            self.raw(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            bytes.min(i32::MAX as usize) as i32,
        )
    }

    fn set_sendbuf(&mut self, bytes: usize) -> io::Result<()> {
        setsockopt_int(
            self.raw(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            bytes.min(i32::MAX as usize) as i32,
        )
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        local_addr(self.raw())
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        peer_addr(self.raw())
    }

    fn is_ipv4(&self) -> bool {
        !self.ipv6
    }

    fn is_ipv6(&self) -> bool {
        self.ipv6
    }

    fn connect_status(&mut self) -> io::Result<bool> {
        if self.fd.is_none() {
            return Err(Self::closed_err());
        }
        if !self.connecting {
            return match self.failed {
                Some(e) => Err(io::Error::from_raw_os_error(e)),
                None => Ok(true),
            };
        }
        if !sys::poll_writable(self.raw()) {
            return Ok(false);
        }
        let err = getsockopt_int(self.raw(), libc::SOL_SOCKET, libc::SO_ERROR)?;
        self.connecting = false;
        if err != 0 {
            self.failed = Some(err);
            self.wq.fail_unsent(err);
            return Err(io::Error::from_raw_os_error(err));
        }
        Ok(true)
    }

    fn placement_id(&self) -> Option<i32> {
        let opt = match self.placement_mode {
            1 => SO_INCOMING_NAPI_ID,
            2 => SO_INCOMING_CPU,
            _ => return None,
        };
        getsockopt_int(self.raw(), libc::SOL_SOCKET, opt)
            .ok()
            .filter(|&v| v > 0)
    }

    fn fd(&self) -> RawFd {
        self.raw()
    }

    fn stats(&self) -> SockStats {
        self.wq.stats(self.enobufs)
    }

    fn close(&mut self, out: &mut Vec<WriteRequest>) {
        if self.fd.is_none() {
            self.wq.take_done(out);
            return;
        }
        self.reap_errqueue();
        if self.wq.zc.pending() > 0 {
            // The kernel still references zero-copy buffers: abort the connection so its
            // send queue (and every reference) is dropped when the fd closes below.
            // Best effort: the socket closes below either way.
            let _ = sys::set_linger_abort(self.raw());
        }
        self.fd = None; // closes the fd, exactly once
        self.wq.fail_all(libc::ECANCELED);
        self.wq.take_done(out);
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
}

impl Drop for PosixSock {
    fn drop(&mut self) {
        let mut sink = Vec::new();
        self.close(&mut sink);
    }
}

/// One socket in a posix group.
struct Member {
    sock: PosixSock,
    in_ready: bool,
    epoll_out: bool,
    /// Closed by `SockGroup::close`: the slot (and so the key) stays reserved until the next
    /// poll has reported the socket's cancelled writes, so a new socket never inherits them.
    closed: bool,
    /// On the group's `active` list.
    in_active: bool,
}

/// An epoll-driven group of posix sockets.
pub struct PosixGroup {
    epoll: Epoll,
    members: slab::Slab<Member>,
    /// Sockets to report readable, oldest first.
    ready: VecDeque<SockKey>,
    /// Sockets reported by the last poll (re-queued if they still hold buffered bytes).
    reported: Vec<SockKey>,
    /// Completions of closed sockets, reported by the next poll.
    orphaned: Vec<(SockKey, WriteRequest)>,
    /// Closed sockets whose keys are released once their completions are reported.
    closing: Vec<SockKey>,
    /// Scratch list of EPOLLOUT interest changes (kept to avoid allocating per poll).
    changes: Vec<(SockKey, RawFd, bool)>,
    /// Sockets the next poll looks at for writes to flush, EPOLLOUT interest to change and
    /// completions to report: those handed out by `sock()` (the only way to queue a write)
    /// or added since the last poll, those with an EPOLLOUT or error event, and those still
    /// holding unsent data. An idle socket is on no list: a poll costs O(active sockets),
    /// not O(members). `active_next` is the spare list the two swap with.
    active: Vec<SockKey>,
    active_next: Vec<SockKey>,
    _wake: Option<crate::reactor::WakeSource>,
    events: Vec<EpollEvent>,
}

impl PosixGroup {
    pub fn new() -> io::Result<Self> {
        let epoll = Epoll::new()?;
        let wake = crate::reactor::current_core()
            .and_then(|_| crate::reactor::add_wake_fd(epoll.as_raw_fd()).ok());
        Ok(Self {
            epoll,
            members: slab::Slab::new(),
            ready: VecDeque::new(),
            reported: Vec::new(),
            orphaned: Vec::new(),
            closing: Vec::new(),
            changes: Vec::new(),
            active: Vec::new(),
            active_next: Vec::new(),
            _wake: wake,
            events: vec![EpollEvent::EMPTY; 128],
        })
    }

    /// Read interest always, write interest while `out`.
    fn interest(out: bool) -> u32 {
        READABLE | if out { WRITABLE } else { 0 }
    }

    fn mark_active(&mut self, key: SockKey) {
        if let Some(m) = self.members.get_mut(key) {
            if !m.in_active {
                m.in_active = true;
                self.active.push(key);
            }
        }
    }

    fn mark_ready(&mut self, key: SockKey) {
        if let Some(m) = self.members.get_mut(key) {
            if !m.in_ready {
                m.in_ready = true;
                self.ready.push_back(key);
            }
        }
    }
}

impl SockGroup for PosixGroup {
    fn impl_name(&self) -> &'static str {
        "posix"
    }

    fn add(&mut self, sock: Box<dyn Sock>) -> Result<SockKey, (io::Error, Box<dyn Sock>)> {
        let sock: Box<PosixSock> = own_sock(sock, "posix", "a posix group")?;
        let entry = self.members.vacant_entry();
        let key = entry.key();
        let out = sock.wants_pollout();
        let fd = sock.raw();
        let mut sock = *sock;
        sock.in_group = true;
        sock.drained = false;
        entry.insert(Member {
            sock,
            in_ready: false,
            epoll_out: out,
            closed: false,
            in_active: false,
        });
        self.mark_active(key);
        if let Err(e) = self.epoll.add(fd, key as u64, Self::interest(out)) {
            let mut m = self.members.remove(key);
            m.sock.in_group = false;
            return Err((e, Box::new(m.sock)));
        }
        // Bytes may already sit in its pipe: report them.
        if self.members[key].sock.buffered() > 0 {
            self.mark_ready(key);
        }
        Ok(key)
    }

    fn sock(&mut self, key: SockKey) -> Option<&mut dyn Sock> {
        // The caller may queue a write: the next poll looks at this socket.
        let m = self.members.get_mut(key).filter(|m| !m.closed)?;
        if !m.in_active {
            m.in_active = true;
            self.active.push(key);
        }
        Some(&mut m.sock as &mut dyn Sock)
    }

    fn close(&mut self, key: SockKey) {
        let Some(fd) = self
            .members
            .get(key)
            .filter(|m| !m.closed)
            .map(|m| m.sock.raw())
        else {
            return;
        };
        if fd >= 0 {
            let _ = self.epoll.remove(fd);
        }
        let m = &mut self.members[key];
        m.closed = true;
        let mut done = Vec::new();
        m.sock.close(&mut done);
        self.orphaned.extend(done.into_iter().map(|r| (key, r)));
        self.closing.push(key);
        self.ready.retain(|&k| k != key);
        self.reported.retain(|&k| k != key);
    }

    fn poll(&mut self, max: usize, events: &mut Vec<SockEvent>) -> usize {
        let before = events.len();
        events.extend(
            self.orphaned
                .drain(..)
                .map(|(k, r)| SockEvent::WriteDone(k, r)),
        );
        // Their completions are out: the keys of closed sockets may be reused from now on.
        for key in self.closing.drain(..) {
            self.members.remove(key);
        }
        if self.members.is_empty() {
            // Nothing to flush, wait for or report: no syscall for an empty group.
            return events.len() - before;
        }
        // Sockets reported last time that still hold buffered bytes go to the back.
        // (The list is put back cleared, keeping its capacity: no allocation per poll.)
        let mut last = std::mem::take(&mut self.reported);
        for &key in &last {
            if self.members.get(key).is_some_and(|m| m.sock.buffered() > 0) {
                self.mark_ready(key);
            }
        }
        last.clear();
        self.reported = last;
        // Flush queued writes of the active sockets.
        let mut changes = std::mem::take(&mut self.changes);
        let mut active = std::mem::take(&mut self.active);
        for &key in &active {
            let Some(m) = self.members.get_mut(key).filter(|m| !m.closed) else {
                continue;
            };
            if m.sock.wq.has_unsent() || m.sock.is_connecting() {
                let _ = m.sock.do_flush();
            }
            let want_out = m.sock.wants_pollout();
            if want_out != m.epoll_out {
                m.epoll_out = want_out;
                changes.push((key, m.sock.raw(), want_out));
            }
        }
        for &(key, fd, out) in &changes {
            let _ = self.epoll.modify(fd, key as u64, Self::interest(out));
        }
        changes.clear();
        self.changes = changes;
        let n = self.epoll.poll(&mut self.events);
        for i in 0..n {
            let ev = self.events[i];
            let key = ev.token() as SockKey;
            let flags = ev.events() as i32;
            let Some(m) = self.members.get_mut(key) else {
                continue;
            };
            // EPOLLERR while zero-copy sends are outstanding is the error queue talking.
            let zc_err = flags & libc::EPOLLERR != 0 && m.sock.wq.zc.pending() > 0;
            if zc_err {
                m.sock.reap_errqueue();
            }
            if flags & libc::EPOLLOUT != 0 && (m.sock.wq.has_unsent() || m.sock.is_connecting()) {
                let _ = m.sock.do_flush();
            }
            if (zc_err || flags & libc::EPOLLOUT != 0) && !m.in_active {
                m.in_active = true;
                active.push(key);
            }
            if flags & (libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLRDHUP) != 0
                || (flags & libc::EPOLLERR != 0 && !zc_err)
            {
                m.sock.drained = false;
                self.mark_ready(key);
            }
        }
        // Completions; the sockets with unsent data (or an EPOLLOUT interest to drop) stay
        // active for the next poll, the others leave the list.
        let mut next = std::mem::take(&mut self.active_next);
        for key in active.drain(..) {
            let Some(m) = self.members.get_mut(key) else {
                continue;
            };
            if !m.in_active {
                continue;
            }
            while let Some(req) = m.sock.wq.done.pop_front() {
                events.push(SockEvent::WriteDone(key, req));
            }
            let busy = !m.closed
                && (m.sock.wq.has_unsent()
                    || m.sock.is_connecting()
                    || m.sock.wants_pollout() != m.epoll_out);
            if busy {
                next.push(key);
            } else {
                m.in_active = false;
            }
        }
        self.active_next = active;
        self.active = next;
        // Readable sockets, at most `max`, oldest first.
        let mut reported = 0;
        while reported < max {
            let Some(key) = self.ready.pop_front() else {
                break;
            };
            if let Some(m) = self.members.get_mut(key) {
                m.in_ready = false;
                events.push(SockEvent::Readable(key));
                self.reported.push(key);
                reported += 1;
            }
        }
        events.len() - before
    }

    fn len(&self) -> usize {
        self.members.len() - self.closing.len()
    }
}
