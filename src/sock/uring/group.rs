//! A group of uring sockets: reaps the thread's ring, routes completions to its sockets
//! and reports the ready ones.

use super::*;

/// A group of sockets on this thread's ring.
pub struct UringGroup {
    pub(super) owner: u32,
    pub(super) socks: slab::Slab<UringSock>,
    pub(super) ready: VecDeque<SockKey>,
    pub(super) reported: Vec<SockKey>,
    /// Reused buffers of `process_completions` (no allocation per poll).
    pub(super) completions: Vec<Completion>,
    pub(super) kinds: Vec<(SockKey, OpKind)>,
    /// Sockets the next poll looks at (connect to check, receive to re-arm, send to
    /// start, completions to report, close to finish): those handed out by `sock()`,
    /// added, closed or with a ring completion since the last poll, and those still
    /// needing it. An idle socket with its receive armed is on no list: a poll costs
    /// O(active sockets), not O(members). `active_next` is the spare the two swap with.
    pub(super) active: Vec<SockKey>,
    pub(super) active_next: Vec<SockKey>,
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

    pub(super) fn mark_active(&mut self, key: SockKey) {
        if let Some(s) = self.socks.get_mut(key) {
            if !s.in_active {
                s.in_active = true;
                self.active.push(key);
            }
        }
    }

    pub(super) fn mark_ready(&mut self, key: SockKey) {
        if let Some(s) = self.socks.get_mut(key) {
            if !s.in_ready && s.closing.is_none() {
                s.in_ready = true;
                self.ready.push_back(key);
            }
        }
    }

    /// Reaps the ring and applies this group's completions; returns how many there were.
    pub(super) fn process_completions(&mut self) -> usize {
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
pub(super) struct ErrSock;

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
