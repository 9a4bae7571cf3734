//! The uring listener: multishot accept on the thread's ring (accept4 where the kernel
//! lacks it).

use super::*;

/// A listener accepting with multishot accept on the thread's ring.
pub struct UringListener {
    pub(super) inner: PosixListener,
    pub(super) owner: Option<u32>,
    pub(super) accept_op: Option<u32>,
    pub(super) accepted: VecDeque<io::Result<RawFd>>,
    pub(super) completions: Vec<Completion>,
}

impl UringListener {
    pub(super) fn new(inner: PosixListener) -> io::Result<Self> {
        let owner = with_ctx(|c| c.accept_multi.then(|| c.new_owner()).transpose())??;
        Ok(Self {
            inner,
            owner,
            accept_op: None,
            accepted: VecDeque::new(),
            completions: Vec::new(),
        })
    }

    pub(super) fn arm(&mut self, owner: u32) {
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
