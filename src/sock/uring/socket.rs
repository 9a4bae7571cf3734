//! A socket inside a uring group: multishot receive into provided buffers, SENDMSG /
//! SENDMSG_ZC sends with partial sends resumed, and a graceful close.

use super::*;

/// The msghdr and iovecs of a socket's in-flight send, at a stable heap address.
pub(super) struct SendMsgBuf {
    pub(super) hdr: libc::msghdr,
    pub(super) iov: [libc::iovec; MAX_IOVECS],
}

// SAFETY: the raw pointers point into this same allocation (hdr -> iov) or into chunk memory
// owned by the socket's write queue; the socket moves between threads only before it joins a
// group, when no send is in flight.
unsafe impl Send for SendMsgBuf {}

/// A received segment in a provided buffer.
#[derive(Debug, Clone, Copy)]
pub(super) struct Segment {
    pub(super) bid: u16,
    pub(super) off: u32,
    pub(super) len: u32,
}

/// A socket inside a uring group.
pub struct UringSock {
    pub(super) fd: Option<OwnedFd>,
    pub(super) owner: u32,
    pub(super) key: SockKey,
    pub(super) ipv6: bool,
    pub(super) connecting: bool,
    pub(super) segments: VecDeque<Segment>,
    pub(super) eof: bool,
    pub(super) recv_err: Option<i32>,
    pub(super) recv_op: Option<u32>,
    pub(super) wq: WriteQueue,
    pub(super) send_op: Option<u32>,
    /// Zero-copy sends whose notification has not arrived yet.
    pub(super) notifs_pending: u32,
    pub(super) msg: Box<SendMsgBuf>,
    pub(super) failed: Option<i32>,
    pub(super) zerocopy: bool,
    pub(super) zc_threshold: usize,
    pub(super) placement_mode: u32,
    pub(super) closing: Option<Instant>,
    pub(super) aborted: bool,
    pub(super) in_ready: bool,
    /// On its group's `active` list.
    pub(super) in_active: bool,
}

impl UringSock {
    pub(super) fn from_posix(mut p: PosixSock, owner: u32, key: SockKey) -> io::Result<Self> {
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

    pub(super) fn raw(&self) -> RawFd {
        self.fd.as_ref().map_or(-1, |f| f.as_raw_fd())
    }

    pub(super) fn busy(&self) -> bool {
        self.recv_op.is_some() || self.send_op.is_some() || self.notifs_pending > 0
    }

    pub(super) fn check_connect(&mut self) {
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

    pub(super) fn arm_recv(&mut self) {
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
    pub(super) fn start_send(&mut self) -> io::Result<()> {
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
    pub(super) fn on_completion(&mut self, kind: OpKind, c: Completion) -> bool {
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

    pub(super) fn begin_close(&mut self) {
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
    pub(super) fn abort_if_stuck(&mut self) {
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
        crate::sock::readv_by_recv(iov, |b| self.recv(b))
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
