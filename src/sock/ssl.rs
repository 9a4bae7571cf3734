//! The `ssl` socket impl: posix TCP sockets carrying TLS 1.3 with an external PSK, records sealed and opened in user space.
//!
//! SPDK's name for it is `ssl`. Each [`SslSock`] owns an ungrouped [`PosixSock`] and a
//! [`TlsSession`]; it keeps the sock contract: `recv` reads ciphertext without blocking,
//! advances the handshake and opens records (answering `WouldBlock` until the handshake is
//! done and plaintext is there; a failed handshake is an error, the caller closes);
//! `writev_async` requests are sealed once the handshake is done (their plaintext is copied
//! into records, so a request completes as soon as it is sealed: its chunks are free again)
//! and the ciphertext is sent by `flush` and the group's polls. A server socket is given the
//! listener's [`PskLookup`](super::tls::PskLookup); a client socket its key, and its
//! `connect_status` turns `true` only once the handshake is done. Sealing stops while more
//! than [`MAX_UNSENT_CIPHERTEXT`] bytes wait for the kernel (back-pressure, bounded memory).
//! An [`SslGroup`] is an epoll set over the sockets (level-triggered: kernel bytes re-report
//! themselves; sockets holding opened-but-unread bytes are re-reported by the group).

#![deny(unsafe_code)]

use super::posix::{PosixListener, PosixSock};
use super::tls::{TlsOpts, TlsSession, TlsState, MAX_UNSENT_CIPHERTEXT};
use super::{
    own_sock, readv_by_recv, Listener, NetImpl, Sock, SockEvent, SockGroup, SockKey, SockOpts,
    SockStats, WriteRequest,
};
use crate::sys::epoll::{Epoll, EpollEvent, READABLE, WRITABLE};
use std::any::Any;
use std::collections::VecDeque;
use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};

/// Ciphertext read from the kernel per receive syscall.
const RX_CHUNK: usize = 64 * 1024;
/// Received ciphertext not yet opened above which receiving pauses.
const MAX_UNOPENED: usize = 512 * 1024;

pub struct SslImpl;

/// The options of the inner TCP socket: the ssl impl's buffer sizes, never zero-copy.
fn inner_opts(opts: &SockOpts) -> SockOpts {
    let o = SslImpl.get_options();
    let size = |v: u32| (v > 0).then_some(v);
    SockOpts {
        zerocopy: Some(false),
        recv_buf_size: opts.recv_buf_size.or(size(o.recv_buf_size)),
        send_buf_size: opts.send_buf_size.or(size(o.send_buf_size)),
        ..opts.clone()
    }
}

fn missing_tls() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "the ssl sock impl needs TLS options (a PSK lookup for a listener, a PSK for a client)",
    )
}

impl NetImpl for SslImpl {
    fn name(&self) -> &'static str {
        "ssl"
    }
    /// Never the default: a TLS socket is asked for by name.
    fn priority(&self) -> i32 {
        -1
    }
    fn listen(&self, addr: &str, port: u16, opts: &SockOpts) -> io::Result<Box<dyn Listener>> {
        let tls = match &opts.tls {
            Some(t @ TlsOpts::Server(_)) => t.clone(),
            _ => return Err(missing_tls()),
        };
        Ok(Box::new(SslListener {
            inner: PosixListener::bind(addr, port, &inner_opts(opts), "posix")?,
            tls,
        }))
    }
    fn connect(&self, addr: &str, port: u16, opts: &SockOpts) -> io::Result<Box<dyn Sock>> {
        let tls = match &opts.tls {
            Some(t @ TlsOpts::Client(_)) => t,
            _ => return Err(missing_tls()),
        };
        let inner = PosixSock::connect(addr, port, &inner_opts(opts), "posix")?;
        Ok(Box::new(SslSock::new(inner, tls)?))
    }
    fn create_group(&self) -> io::Result<Box<dyn SockGroup>> {
        Ok(Box::new(SslGroup::new()?))
    }
}

pub struct SslListener {
    inner: PosixListener,
    tls: TlsOpts,
}

impl Listener for SslListener {
    fn impl_name(&self) -> &'static str {
        "ssl"
    }
    fn accept(&mut self) -> io::Result<Option<Box<dyn Sock>>> {
        let Some(sock) = self.inner.accept()? else {
            return Ok(None);
        };
        let inner: Box<PosixSock> = match sock.into_any().downcast::<PosixSock>() {
            Ok(s) => s,
            Err(_) => unreachable!("a posix listener accepts posix sockets"),
        };
        Ok(Some(Box::new(SslSock::new(*inner, &self.tls)?)))
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
    fn wake_fd(&self) -> Option<RawFd> {
        self.inner.wake_fd()
    }
}

/// A TLS connection over a posix socket.
pub struct SslSock {
    inner: PosixSock,
    tls: TlsSession,
    /// Write requests not sealed yet (handshake running, or ciphertext backlog too large).
    unsealed: VecDeque<WriteRequest>,
    /// Sealed (or failed) requests to hand back, in order.
    done: VecDeque<WriteRequest>,
    /// Plaintext of one request gathered for sealing (kept: no allocation per request).
    staging: Vec<u8>,
    rx: Vec<u8>,
    /// The errno that ended the connection.
    failed: Option<i32>,
    closed: bool,
}

impl SslSock {
    fn new(inner: PosixSock, tls: &TlsOpts) -> io::Result<Self> {
        Ok(Self {
            inner,
            tls: TlsSession::new(tls)?,
            unsealed: VecDeque::new(),
            done: VecDeque::new(),
            staging: Vec::new(),
            rx: vec![0; RX_CHUNK],
            failed: None,
            closed: false,
        })
    }

    fn failed_err(&self) -> io::Error {
        io::Error::from_raw_os_error(self.failed.unwrap_or(libc::ECONNABORTED))
    }

    /// Ends the connection with `errno`: queued requests fail in order.
    fn fail(&mut self, errno: i32) {
        self.failed.get_or_insert(errno);
        while let Some(mut req) = self.unsealed.pop_front() {
            req.result = Some(Err(io::Error::from_raw_os_error(errno)));
            self.done.push_back(req);
        }
    }

    /// Reads the ciphertext the kernel holds (bounded) into the session.
    fn pump_in(&mut self) -> io::Result<()> {
        while self.tls.incoming_len() < MAX_UNOPENED {
            match self.inner.recv(&mut self.rx) {
                Ok(0) => {
                    self.tls.feed_eof();
                    return Ok(());
                }
                Ok(n) => {
                    self.tls.feed(&self.rx[..n]);
                    if n < self.rx.len() {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Advances the handshake, seals what may be sealed and sends ciphertext (never blocks).
    fn drive(&mut self) -> io::Result<()> {
        if self.failed.is_some() {
            return Err(self.failed_err());
        }
        let hs = self.tls.handshake();
        if let Err(e) = hs {
            // Send the alert OpenSSL left, best effort, then give up.
            let _ = self.send_ciphertext();
            self.fail(libc::ECONNABORTED);
            return Err(e);
        }
        self.seal()?;
        self.send_ciphertext()
    }

    fn seal(&mut self) -> io::Result<()> {
        if self.tls.state() != TlsState::Established {
            return Ok(());
        }
        while self.tls.outgoing().len() < MAX_UNSENT_CIPHERTEXT {
            let Some(mut req) = self.unsealed.pop_front() else {
                break;
            };
            self.staging.clear();
            for c in &req.chunks {
                c.append_to(&mut self.staging);
            }
            if let Err(e) = self.tls.write(&self.staging) {
                req.result = Some(Err(io::Error::from_raw_os_error(libc::ECONNABORTED)));
                self.done.push_back(req);
                self.fail(libc::ECONNABORTED);
                return Err(e);
            }
            req.result = Some(Ok(self.staging.len()));
            self.done.push_back(req);
        }
        Ok(())
    }

    fn send_ciphertext(&mut self) -> io::Result<()> {
        while !self.tls.outgoing().is_empty() {
            if self.inner.is_connecting() {
                return Ok(());
            }
            match self.inner.writev(&[IoSlice::new(self.tls.outgoing())]) {
                Ok(n) => self.tls.consumed(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.fail(e.raw_os_error().unwrap_or(libc::EIO));
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    fn wants_pollout(&self) -> bool {
        !self.tls.outgoing().is_empty() || self.inner.is_connecting()
    }

    /// Received bytes the session holds (re-reported readable by the group).
    fn buffered(&self) -> bool {
        self.tls.has_buffered()
    }

    /// The negotiated cipher suite (once established).
    pub fn cipher_name(&self) -> Option<&'static str> {
        self.tls.cipher_name()
    }
}

impl Sock for SslSock {
    fn impl_name(&self) -> &'static str {
        "ssl"
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.closed {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        }
        if self.failed.is_some() {
            return Err(self.failed_err());
        }
        if let Err(e) = self.pump_in() {
            self.fail(e.raw_os_error().unwrap_or(libc::EIO));
            return Err(e);
        }
        self.drive()?;
        match self.tls.read(buf) {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => {
                let _ = self.send_ciphertext();
                self.fail(libc::ECONNABORTED);
                Err(e)
            }
            r => r,
        }
    }

    fn readv(&mut self, iov: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        readv_by_recv(iov, |b| self.recv(b))
    }

    fn writev(&mut self, iov: &[IoSlice<'_>]) -> io::Result<usize> {
        if self.failed.is_some() {
            return Err(self.failed_err());
        }
        if !self.unsealed.is_empty()
            || self.tls.state() != TlsState::Established
            || self.tls.outgoing().len() >= MAX_UNSENT_CIPHERTEXT
        {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.staging.clear();
        for s in iov {
            self.staging.extend_from_slice(s);
        }
        let n = self.tls.write(&self.staging)?;
        let _ = self.send_ciphertext();
        Ok(n)
    }

    fn writev_async(&mut self, mut req: WriteRequest) {
        req.result = None;
        if self.closed || self.failed.is_some() {
            req.result = Some(Err(self.failed_err()));
            self.done.push_back(req);
            return;
        }
        self.unsealed.push_back(req);
        let _ = self.seal();
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.closed {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        }
        if self.inner.is_connecting() {
            self.inner.connect_status()?;
        }
        self.drive()
    }

    fn take_completions(&mut self, out: &mut Vec<WriteRequest>) -> usize {
        let _ = self.flush();
        let n = self.done.len();
        out.extend(self.done.drain(..));
        n
    }

    fn set_recvlowat(&mut self, bytes: usize) -> io::Result<()> {
        self.inner.set_recvlowat(bytes)
    }
    fn set_recvbuf(&mut self, bytes: usize) -> io::Result<()> {
        self.inner.set_recvbuf(bytes)
    }
    fn set_sendbuf(&mut self, bytes: usize) -> io::Result<()> {
        self.inner.set_sendbuf(bytes)
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.peer_addr()
    }
    fn is_ipv4(&self) -> bool {
        self.inner.is_ipv4()
    }
    fn is_ipv6(&self) -> bool {
        self.inner.is_ipv6()
    }

    /// Connected once TCP is connected AND the TLS handshake is done.
    fn connect_status(&mut self) -> io::Result<bool> {
        if !self.inner.connect_status()? {
            return Ok(false);
        }
        if let Err(e) = self.pump_in() {
            self.fail(e.raw_os_error().unwrap_or(libc::EIO));
            return Err(e);
        }
        self.drive()?;
        Ok(self.tls.state() == TlsState::Established)
    }

    fn placement_id(&self) -> Option<i32> {
        self.inner.placement_id()
    }
    fn fd(&self) -> RawFd {
        self.inner.fd()
    }
    fn stats(&self) -> SockStats {
        self.inner.stats()
    }
    fn tls_identity(&self) -> Option<String> {
        self.tls.identity().map(str::to_string)
    }

    fn close(&mut self, out: &mut Vec<WriteRequest>) {
        if !self.closed {
            self.closed = true;
            self.fail(libc::ECANCELED);
            self.inner.close(out);
        }
        out.extend(self.done.drain(..));
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
}

struct Member {
    sock: SslSock,
    in_ready: bool,
    epoll_out: bool,
    closed: bool,
}

/// An epoll-driven group of TLS sockets.
pub struct SslGroup {
    epoll: Epoll,
    members: slab::Slab<Member>,
    ready: VecDeque<SockKey>,
    orphaned: Vec<(SockKey, WriteRequest)>,
    closing: Vec<SockKey>,
    events: Vec<EpollEvent>,
    /// Scratch lists of one poll (kept: no allocation per poll).
    changes: Vec<(SockKey, RawFd, bool)>,
    to_report: Vec<SockKey>,
    _wake: Option<crate::reactor::WakeSource>,
}

impl SslGroup {
    pub fn new() -> io::Result<Self> {
        let epoll = Epoll::new()?;
        let wake = crate::reactor::current_core()
            .and_then(|_| crate::reactor::add_wake_fd(epoll.as_raw_fd()).ok());
        Ok(Self {
            epoll,
            members: slab::Slab::new(),
            ready: VecDeque::new(),
            orphaned: Vec::new(),
            closing: Vec::new(),
            events: vec![EpollEvent::EMPTY; 128],
            changes: Vec::new(),
            to_report: Vec::new(),
            _wake: wake,
        })
    }

    fn interest(out: bool) -> u32 {
        READABLE | if out { WRITABLE } else { 0 }
    }

    fn mark_ready(&mut self, key: SockKey) {
        if let Some(m) = self.members.get_mut(key) {
            if !m.in_ready && !m.closed {
                m.in_ready = true;
                self.ready.push_back(key);
            }
        }
    }
}

impl SockGroup for SslGroup {
    fn impl_name(&self) -> &'static str {
        "ssl"
    }

    fn add(&mut self, sock: Box<dyn Sock>) -> Result<SockKey, (io::Error, Box<dyn Sock>)> {
        let sock: Box<SslSock> = own_sock(sock, "ssl", "an ssl group")?;
        let out = sock.wants_pollout();
        let fd = sock.fd();
        let key = self.members.insert(Member {
            sock: *sock,
            in_ready: false,
            epoll_out: out,
            closed: false,
        });
        if let Err(e) = self.epoll.add(fd, key as u64, Self::interest(out)) {
            let m = self.members.remove(key);
            return Err((e, Box::new(m.sock)));
        }
        // The ClientHello may already be waiting (the kernel re-reports it), or the session
        // may hold bytes read before the socket joined.
        if self.members[key].sock.buffered() {
            self.mark_ready(key);
        }
        Ok(key)
    }

    fn sock(&mut self, key: SockKey) -> Option<&mut dyn Sock> {
        let m = self.members.get_mut(key).filter(|m| !m.closed)?;
        Some(&mut m.sock as &mut dyn Sock)
    }

    fn close(&mut self, key: SockKey) {
        let Some(m) = self.members.get_mut(key).filter(|m| !m.closed) else {
            return;
        };
        let _ = self.epoll.remove(m.sock.fd());
        m.closed = true;
        let mut done = Vec::new();
        m.sock.close(&mut done);
        self.orphaned.extend(done.into_iter().map(|r| (key, r)));
        self.closing.push(key);
        self.ready.retain(|&k| k != key);
    }

    fn poll(&mut self, max: usize, events: &mut Vec<SockEvent>) -> usize {
        let before = events.len();
        events.extend(
            self.orphaned
                .drain(..)
                .map(|(k, r)| SockEvent::WriteDone(k, r)),
        );
        for key in self.closing.drain(..) {
            self.members.remove(key);
        }
        if self.members.is_empty() {
            return events.len() - before;
        }
        let n = self.epoll.poll(&mut self.events);
        for i in 0..n {
            let ev = self.events[i];
            let key = ev.token() as SockKey;
            let flags = ev.events() as i32;
            if flags & (libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLRDHUP | libc::EPOLLERR) != 0 {
                self.mark_ready(key);
            }
        }
        // Seal and send, hand back completions, adjust write interest, re-report sockets
        // holding opened bytes. (Every member is visited: O(sockets) per poll.)
        let mut changes = std::mem::take(&mut self.changes);
        let mut errored = std::mem::take(&mut self.to_report);
        for (key, m) in self.members.iter_mut() {
            if m.closed {
                continue;
            }
            if m.sock.flush().is_err() {
                errored.push(key);
            }
            while let Some(req) = m.sock.done.pop_front() {
                events.push(SockEvent::WriteDone(key, req));
            }
            let out = m.sock.wants_pollout();
            if out != m.epoll_out {
                m.epoll_out = out;
                changes.push((key, m.sock.fd(), out));
            }
            if m.sock.buffered() {
                errored.push(key);
            }
        }
        for &(key, fd, out) in &changes {
            let _ = self.epoll.modify(fd, key as u64, Self::interest(out));
        }
        changes.clear();
        self.changes = changes;
        // A failed socket is reported readable: its next recv returns the error.
        for &key in &errored {
            self.mark_ready(key);
        }
        errored.clear();
        self.to_report = errored;
        let mut reported = 0;
        while reported < max {
            let Some(key) = self.ready.pop_front() else {
                break;
            };
            if let Some(m) = self.members.get_mut(key) {
                m.in_ready = false;
                if !m.closed {
                    events.push(SockEvent::Readable(key));
                    reported += 1;
                }
            }
        }
        events.len() - before
    }

    fn len(&self) -> usize {
        self.members.len() - self.closing.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buf::Chunk;
    use crate::sock::tls::tests::OneKey;
    use crate::sock::tls::ExternalPsk;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    fn key(len: usize, fill: u8) -> ExternalPsk {
        ExternalPsk {
            identity: "NVMe0R01 nqn.h nqn.s".into(),
            key: vec![fill; len],
        }
    }

    fn listen(server_key: ExternalPsk) -> (Box<dyn Listener>, u16) {
        let opts = SockOpts {
            tls: Some(TlsOpts::Server(Arc::new(OneKey(server_key)))),
            ..Default::default()
        };
        let l = SslImpl.listen("127.0.0.1", 0, &opts).unwrap();
        let port = l.local_addr().unwrap().port();
        (l, port)
    }

    /// Drives a client and a grouped server socket until the client is connected or fails.
    fn connect(
        l: &mut Box<dyn Listener>,
        port: u16,
        client_key: ExternalPsk,
    ) -> (Box<dyn Sock>, SslGroup, SockKey, io::Result<()>) {
        let opts = SockOpts {
            tls: Some(TlsOpts::Client(client_key)),
            ..Default::default()
        };
        let mut c = SslImpl.connect("127.0.0.1", port, &opts).unwrap();
        let mut g = SslGroup::new().unwrap();
        let mut key = None;
        let mut events = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut buf = [0u8; 64];
        let result = loop {
            assert!(Instant::now() < deadline, "handshake did not finish in 5 s");
            if key.is_none() {
                if let Some(s) = l.accept().unwrap() {
                    key = Some(g.add(s).map_err(|(e, _)| e).unwrap());
                }
            }
            events.clear();
            g.poll(16, &mut events);
            for ev in &events {
                if let SockEvent::Readable(k) = ev {
                    if let Some(s) = g.sock(*k) {
                        match s.recv(&mut buf) {
                            Err(e) if e.kind() != io::ErrorKind::WouldBlock => {
                                g.close(*k);
                            }
                            _ => {}
                        }
                    }
                }
            }
            match c.connect_status() {
                Ok(true) => break Ok(()),
                Ok(false) => {}
                Err(e) => break Err(e),
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        (c, g, key.unwrap_or(usize::MAX), result)
    }

    #[test]
    fn tls_over_loopback_both_ways_and_refusals() {
        for len in [32, 48] {
            let (mut l, port) = listen(key(len, 5));
            let (mut c, mut g, k, r) = connect(&mut l, port, key(len, 5));
            r.unwrap();
            // Client to server: an async request of several chunks.
            let payload: Vec<u8> = (0..300_000u32).map(|i| (i * 7) as u8).collect();
            let mut req = WriteRequest::new(9);
            req.chunks.push(Chunk::inline(b"hdr").unwrap());
            req.chunks.push(Chunk::Shared {
                mem: Arc::new(payload.clone()),
                off: 0,
                len: payload.len(),
            });
            c.writev_async(req);
            let mut got = Vec::new();
            let mut done = Vec::new();
            let mut events = Vec::new();
            let mut buf = vec![0u8; 65536];
            let deadline = Instant::now() + Duration::from_secs(10);
            while got.len() < payload.len() + 3 {
                assert!(Instant::now() < deadline, "data did not arrive");
                c.take_completions(&mut done);
                events.clear();
                g.poll(16, &mut events);
                let s = g.sock(k).unwrap();
                loop {
                    match s.recv(&mut buf) {
                        Ok(0) => panic!("eof"),
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            assert_eq!(&got[..3], b"hdr");
            assert_eq!(&got[3..], &payload[..]);
            c.take_completions(&mut done);
            assert_eq!(done.len(), 1);
            assert_eq!(
                done[0].result().unwrap().as_ref().unwrap(),
                &(payload.len() + 3)
            );
            // Server to client, through the group's flush.
            let s = g.sock(k).unwrap();
            assert_eq!(s.tls_identity().as_deref(), Some("NVMe0R01 nqn.h nqn.s"));
            let mut req = WriteRequest::new(1);
            req.chunks.push(Chunk::inline(b"pong").unwrap());
            s.writev_async(req);
            let mut reply = Vec::new();
            while reply.len() < 4 {
                assert!(Instant::now() < deadline, "reply did not arrive");
                events.clear();
                g.poll(16, &mut events);
                match c.recv(&mut buf) {
                    Ok(n) => reply.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("{e}"),
                }
            }
            assert_eq!(reply, b"pong");
            assert!(events
                .iter()
                .any(|e| matches!(e, SockEvent::WriteDone(key, r) if *key == k && r.token == 1)));
            // A wrong key fails the handshake on both sides.
            let (_c, _g, _k, r) = connect(&mut l, port, key(len, 6));
            assert!(r.is_err(), "a wrong PSK must not connect");
        }
    }

    #[test]
    fn plaintext_peer_is_refused() {
        use std::io::{Read, Write};
        let (mut l, port) = listen(key(32, 5));
        let mut plain = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        plain
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        // An NVMe/TCP ICReq header.
        plain.write_all(&[0, 0, 128, 0, 128, 0, 0, 0]).unwrap();
        plain.write_all(&[0; 120]).unwrap();
        let mut g = SslGroup::new().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let k = loop {
            assert!(Instant::now() < deadline);
            if let Some(s) = l.accept().unwrap() {
                break g.add(s).map_err(|(e, _)| e).unwrap();
            }
        };
        let mut events = Vec::new();
        let mut buf = [0u8; 64];
        let err = loop {
            assert!(Instant::now() < deadline, "no verdict in 5 s");
            events.clear();
            g.poll(16, &mut events);
            match g.sock(k).unwrap().recv(&mut buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => break other,
            }
        };
        assert!(err.is_err(), "plaintext must fail the handshake: {err:?}");
        g.close(k);
        events.clear();
        g.poll(16, &mut events);
        // The peer got a TLS alert (or nothing) and then the end of the stream, never an ICResp.
        let mut rest = Vec::new();
        let _ = plain.read_to_end(&mut rest);
        assert!(rest.is_empty() || rest[0] == 0x15, "got {rest:?}");
    }
}
