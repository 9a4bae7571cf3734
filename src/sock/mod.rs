//! sock: the socket layer every transport talks to, in the shape of SPDK's net_impl table.
//!
//! A [`NetImpl`] (chosen by name at run time from a registry ordered by priority, with a
//! per-application default: `posix`, `uring`; `ssl`, TLS 1.3 with a PSK over posix sockets,
//! is only ever asked for by name) listens, connects without blocking and creates
//! per-reactor [`SockGroup`]s. Consumers (the NVMe-oF/TCP target, the NVMe/TCP host) use it
//! like this: an acceptor poller polls a [`Listener`] (registering [`Listener::wake_fd`] with
//! `reactor::add_wake_fd` when it is `Some`); an accepted [`Sock`] is `Send`, so it is moved by
//! message to the reactor of its poll group, whose `add` takes ownership and returns a
//! [`SockKey`] (a slab index, reused only after the socket is fully closed); from then on the
//! caller reaches it with [`SockGroup::sock`]. `SockGroup::poll(max, events)` (never blocks)
//! flushes queued writes and reports [`SockEvent`]s: `Readable(key)` (drain with `recv`/`readv`
//! until `WouldBlock`; at most `max` per poll, leftovers first next time, sockets still holding
//! buffered bytes re-reported) and `WriteDone(key, request)`. Writes are queued with
//! [`Sock::writev_async`] as a [`WriteRequest`] of OWNED [`Chunk`]s (an `IoBuf` slice, an
//! inline header of up to 128 bytes, or an `Arc<dyn SharedBytes>` range for zero-copy sends
//! from shared memory; the chunk types live in `buf`) plus a caller token. Each request comes
//! back exactly once, in submission order, with its result and its chunks, so the caller can
//! `clear` and reuse it: nothing is allocated per request in steady state. `flush` pushes
//! queued requests now (one sendmsg carries up to 64 iovecs; partial writes resume at the right
//! byte); there are no completion callbacks, so nothing flushes from inside one.
//! [`SockGroup::close`] completes every pending request with an error (`ECANCELED`) through the
//! next polls. Zero-copy sends (MSG_ZEROCOPY for posix, SENDMSG_ZC for uring) keep their
//! buffers until the kernel is done with them; a closing posix socket with zero-copy sends
//! outstanding is aborted (RST) so the kernel lets go at once, a closing uring socket waits for
//! its completions (aborting after 2 s). Groups register their own wake fds with the reactor
//! they are created on (posix: the epoll fd; uring: an eventfd registered with the ring,
//! because on this kernel the ring fd does not become readable for DEFER_TASKRUN work, see
//! `uring.rs`). An ungrouped socket (a client's, say) is driven by
//! `flush`/`take_completions`/`recv`, and its owner registers [`Sock::fd`] as a wake fd if it
//! sleeps. `connect` returns at once (poll `connect_status`; writes may be queued meanwhile);
//! IPv4 and IPv6 (`::1` or `[::1]`) both work; every send uses MSG_NOSIGNAL and every fd is
//! owned (closed exactly once). Options are per application: each reactor keeps a thread-local
//! copy, changed by RPC on the main reactor and pushed to the others (see `rpc.rs`); options
//! are read when a socket is created.

pub mod posix;
pub mod rpc;
pub mod ssl;
#[cfg(test)]
mod tests;
pub mod tls;
pub mod uring;

use crate::buf::Chunk;
use std::any::Any;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;

/// Most iovecs one sendmsg carries.
pub const MAX_IOVECS: usize = 64;
/// A queued write: owned chunks, a caller token, and (once completed) its result. Reuse it:
/// `clear()` drops the chunks but keeps the vector's capacity.
pub struct WriteRequest {
    pub chunks: Vec<Chunk>,
    pub token: u64,
    result: Option<io::Result<usize>>,
    /// Bytes of this request already accepted by the kernel.
    sent: usize,
    /// The last zero-copy send sequence that carried bytes of this request.
    zc_seq: Option<u32>,
}

impl WriteRequest {
    pub fn new(token: u64) -> Self {
        Self::with_chunks(token, Vec::new())
    }

    pub fn with_chunks(token: u64, chunks: Vec<Chunk>) -> Self {
        Self {
            chunks,
            token,
            result: None,
            sent: 0,
            zc_seq: None,
        }
    }

    /// Total bytes the request sends.
    pub fn total_len(&self) -> usize {
        self.chunks.iter().map(Chunk::len).sum()
    }

    /// The result once completed: bytes written, or the error that ended it.
    pub fn result(&self) -> Option<&io::Result<usize>> {
        self.result.as_ref()
    }

    /// Takes the result (for callers that move the error on).
    pub fn take_result(&mut self) -> Option<io::Result<usize>> {
        self.result.take()
    }

    /// Prepares the request for reuse with a new token (drops the chunks, keeps capacity).
    pub fn clear(&mut self, token: u64) {
        self.chunks.clear();
        self.token = token;
        self.result = None;
        self.sent = 0;
        self.zc_seq = None;
    }
}

impl std::fmt::Debug for WriteRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteRequest")
            .field("token", &self.token)
            .field("chunks", &self.chunks.len())
            .field("sent", &self.sent)
            .field("result", &self.result)
            .finish()
    }
}

/// Identifies a socket inside its group (an index; reused after the socket is fully closed).
pub type SockKey = usize;

/// What a group poll reports.
#[derive(Debug)]
pub enum SockEvent {
    /// The socket has bytes (or end of stream, or an error) to read: drain it until WouldBlock.
    Readable(SockKey),
    /// A write request completed (successfully or not); it is handed back for reuse.
    WriteDone(SockKey, WriteRequest),
}

/// Counters of one socket.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SockStats {
    /// Zero-copy sends issued and completed by the kernel.
    pub zerocopy_sent: u64,
    pub zerocopy_completed: u64,
    /// Completions where the kernel copied after all (always the case on loopback).
    pub zerocopy_copied: u64,
    /// Sends retried because the kernel ran out of zero-copy memory (ENOBUFS).
    pub enobufs: u64,
}

/// Per-socket creation options (the impl-wide defaults come from [`ImplOptions`]).
#[derive(Debug, Clone, Default)]
pub struct SockOpts {
    /// Use zero-copy sends even on loopback (tests; normally loopback sockets never do).
    pub zerocopy_on_loopback: bool,
    /// Overrides the impl's zero-copy setting for this socket.
    pub zerocopy: Option<bool>,
    /// Overrides the impl's zero-copy threshold for this socket.
    pub zerocopy_threshold: Option<u32>,
    /// Overrides the impl's SO_SNDBUF / SO_RCVBUF sizes.
    pub send_buf_size: Option<u32>,
    pub recv_buf_size: Option<u32>,
    /// TLS for the `ssl` impl: a listener's PSK lookup or a client's PSK (others ignore it).
    pub tls: Option<tls::TlsOpts>,
}

/// SPDK's `sock_impl_get_options` / `sock_impl_set_options` fields.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImplOptions {
    pub recv_buf_size: u32,
    pub send_buf_size: u32,
    pub enable_recv_pipe: bool,
    pub enable_quickack: bool,
    /// 0 none, 1 NAPI id, 2 incoming CPU.
    pub enable_placement_id: u32,
    pub enable_zerocopy_send_server: bool,
    pub enable_zerocopy_send_client: bool,
    pub zerocopy_threshold: u32,
    pub tls_version: u32,
    pub enable_ktls: bool,
}

impl ImplOptions {
    pub fn defaults_for(impl_name: &str) -> Self {
        let uring = impl_name == "uring";
        if impl_name == "ssl" {
            return Self {
                enable_zerocopy_send_server: false,
                tls_version: 13,
                ..Self::defaults_for("posix")
            };
        }
        Self {
            recv_buf_size: 2 * 1024 * 1024,
            send_buf_size: 2 * 1024 * 1024,
            // uring always buffers received bytes (in its provided buffer ring).
            enable_recv_pipe: true,
            enable_quickack: false,
            enable_placement_id: 0,
            enable_zerocopy_send_server: !uring,
            enable_zerocopy_send_client: false,
            zerocopy_threshold: 0,
            tls_version: 0,
            enable_ktls: false,
        }
    }

    /// Rejects values this implementation cannot honour, naming the field.
    pub fn validate(&self, impl_name: &str) -> Result<(), String> {
        if self.enable_placement_id > 2 {
            return Err(format!(
                "enable_placement_id: {} is not one of 0 (none), 1 (napi), 2 (cpu)",
                self.enable_placement_id
            ));
        }
        for (name, v) in [
            ("recv_buf_size", self.recv_buf_size),
            ("send_buf_size", self.send_buf_size),
        ] {
            if v > 0 && v < 1024 {
                return Err(format!("{name}: {v} is below the minimum of 1024"));
            }
        }
        if impl_name == "ssl" {
            return self.validate_ssl();
        }
        if self.tls_version != 0 {
            return Err(format!(
                "tls_version: {} is not supported by {impl_name} (TLS is the ssl impl's)",
                self.tls_version
            ));
        }
        if self.enable_ktls {
            return Err(format!(
                "enable_ktls: true is not supported by {impl_name} (TLS is the ssl impl's)"
            ));
        }
        if impl_name == "uring" && !self.enable_recv_pipe {
            return Err(
                "enable_recv_pipe: false is not supported by uring (it always receives into a \
                 provided buffer ring)"
                    .into(),
            );
        }
        Ok(())
    }
}

impl ImplOptions {
    /// The `ssl` impl honours the buffer sizes and TLS 1.3; what it cannot do is refused.
    fn validate_ssl(&self) -> Result<(), String> {
        if self.tls_version != 0 && self.tls_version != 13 {
            return Err(format!(
                "tls_version: {} is not supported by ssl (TLS 1.3 only: 0 or 13)",
                self.tls_version
            ));
        }
        if self.enable_ktls {
            return Err(
                "enable_ktls: true is not supported (this kernel has no kTLS: records are sealed \
                 in user space)"
                    .into(),
            );
        }
        if self.enable_zerocopy_send_server || self.enable_zerocopy_send_client {
            return Err(
                "enable_zerocopy_send_server/client: ssl sends sealed records from its own \
                 buffer, never zero-copy"
                    .into(),
            );
        }
        if self.zerocopy_threshold != 0 {
            return Err(format!(
                "zerocopy_threshold: {} means nothing to ssl (it never sends zero-copy); only 0 \
                 is accepted",
                self.zerocopy_threshold
            ));
        }
        if self.enable_quickack || self.enable_placement_id != 0 {
            return Err(
                "enable_quickack/enable_placement_id: not supported by ssl (posix options apply \
                 to its TCP sockets)"
                    .into(),
            );
        }
        if !self.enable_recv_pipe {
            return Err(
                "enable_recv_pipe: false is not supported by ssl (it always buffers ciphertext)"
                    .into(),
            );
        }
        Ok(())
    }
}

/// Per-thread copy of the application's sock settings (pushed to every reactor on change).
#[derive(Debug, Clone)]
pub struct SockSettings {
    pub posix: ImplOptions,
    pub uring: ImplOptions,
    pub ssl: ImplOptions,
    pub default_impl: String,
}

impl Default for SockSettings {
    fn default() -> Self {
        Self {
            posix: ImplOptions::defaults_for("posix"),
            uring: ImplOptions::defaults_for("uring"),
            ssl: ImplOptions::defaults_for("ssl"),
            default_impl: "posix".into(),
        }
    }
}

thread_local! {
    static SETTINGS: RefCell<SockSettings> = RefCell::new(SockSettings::default());
}

/// This thread's copy of the settings.
pub fn settings() -> SockSettings {
    SETTINGS.with(|s| s.borrow().clone())
}

/// Replaces this thread's copy (the RPCs push it to every reactor).
pub fn set_settings(s: SockSettings) {
    SETTINGS.with(|cur| *cur.borrow_mut() = s);
}

/// A listening socket polled by an acceptor.
pub trait Listener {
    fn impl_name(&self) -> &'static str;
    /// The next accepted connection, `Ok(None)` when none is waiting.
    fn accept(&mut self) -> io::Result<Option<Box<dyn Sock>>>;
    fn local_addr(&self) -> io::Result<SocketAddr>;
    /// The fd whose readability means "accept may succeed": register it with
    /// `reactor::add_wake_fd`. `None` when the impl already wakes this reactor itself (uring:
    /// its ring's eventfd is registered when the ring is created on a reactor thread).
    fn wake_fd(&self) -> Option<RawFd>;
}

/// A connected (or connecting) stream socket.
pub trait Sock: Send + 'static {
    fn impl_name(&self) -> &'static str;
    /// Reads into `buf`: `Ok(0)` is end of stream, `WouldBlock` means nothing buffered yet.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    fn readv(&mut self, iov: &mut [IoSliceMut<'_>]) -> io::Result<usize>;
    /// A synchronous write; refused with `WouldBlock` while async requests are queued (their
    /// order would be broken).
    fn writev(&mut self, iov: &[IoSlice<'_>]) -> io::Result<usize>;
    /// Queues a request; it completes exactly once (see `take_completions` / group events).
    fn writev_async(&mut self, req: WriteRequest);
    /// Pushes queued requests to the kernel now (never blocks).
    fn flush(&mut self) -> io::Result<()>;
    /// Drives an ungrouped socket (flush, zero-copy completions) and moves completed requests
    /// to `out`. Grouped sockets report completions through the group's events instead.
    fn take_completions(&mut self, out: &mut Vec<WriteRequest>) -> usize;
    fn set_recvlowat(&mut self, bytes: usize) -> io::Result<()>;
    fn set_recvbuf(&mut self, bytes: usize) -> io::Result<()>;
    fn set_sendbuf(&mut self, bytes: usize) -> io::Result<()>;
    fn local_addr(&self) -> io::Result<SocketAddr>;
    fn peer_addr(&self) -> io::Result<SocketAddr>;
    fn is_ipv4(&self) -> bool;
    fn is_ipv6(&self) -> bool;
    /// Polls a non-blocking connect: `Ok(true)` connected, `Ok(false)` still in progress.
    fn connect_status(&mut self) -> io::Result<bool>;
    fn is_connected(&mut self) -> bool {
        matches!(self.connect_status(), Ok(true))
    }
    /// NAPI id or incoming CPU, as `enable_placement_id` selects.
    fn placement_id(&self) -> Option<i32>;
    fn fd(&self) -> RawFd;
    /// Counters of this socket (zero-copy completions and fallbacks).
    fn stats(&self) -> SockStats;
    /// The TLS PSK identity of the connection (`ssl` sockets, once the handshake is done).
    fn tls_identity(&self) -> Option<String> {
        None
    }
    /// Closes the socket; every request not yet completed comes back in `out` with an error.
    fn close(&mut self, out: &mut Vec<WriteRequest>);
    #[doc(hidden)]
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send>;
}

/// `sock` as the concrete socket type `T` of impl `name`, for a group of that impl to take;
/// a socket of another impl comes back with the error "a <impl> socket cannot join
/// <group>".
pub(crate) fn own_sock<T: Sock + 'static>(
    sock: Box<dyn Sock>,
    name: &str,
    group: &str,
) -> Result<Box<T>, (io::Error, Box<dyn Sock>)> {
    if sock.impl_name() != name {
        let e = io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a {} socket cannot join {group}", sock.impl_name()),
        );
        return Err((e, sock));
    }
    match sock.into_any().downcast::<T>() {
        Ok(s) => Ok(s),
        Err(_) => unreachable!("impl name {name} implies {}", std::any::type_name::<T>()),
    }
}

/// A reactor's set of sockets of one impl, polled together.
pub trait SockGroup {
    fn impl_name(&self) -> &'static str;
    /// Takes ownership of `sock`, which must come from this group's impl (a failed add hands
    /// it back with the reason).
    fn add(&mut self, sock: Box<dyn Sock>) -> Result<SockKey, (io::Error, Box<dyn Sock>)>;
    fn sock(&mut self, key: SockKey) -> Option<&mut dyn Sock>;
    /// Closes a grouped socket: its pending requests come back as `WriteDone` events with an
    /// error; the key stays reserved until the last one has been reported.
    fn close(&mut self, key: SockKey);
    /// Flushes queued writes, collects completions and readiness (never blocks). At most `max`
    /// `Readable` events per call; the sockets left over go first next time.
    fn poll(&mut self, max: usize, events: &mut Vec<SockEvent>) -> usize;
    /// Sockets in the group (including closing ones).
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A socket implementation.
pub trait NetImpl: Sync + 'static {
    fn name(&self) -> &'static str;
    /// Registry priority: the highest available impl wins when none is named.
    fn priority(&self) -> i32;
    fn listen(&self, addr: &str, port: u16, opts: &SockOpts) -> io::Result<Box<dyn Listener>>;
    /// Starts a non-blocking connect; poll it with `connect_status` (writes may be queued).
    fn connect(&self, addr: &str, port: u16, opts: &SockOpts) -> io::Result<Box<dyn Sock>>;
    /// Creates a group on the current thread (a reactor: it registers its wake fd there).
    fn create_group(&self) -> io::Result<Box<dyn SockGroup>>;
    /// Whether the impl works here (uring: the kernel supports what it needs).
    fn available(&self) -> bool {
        true
    }
    fn get_options(&self) -> ImplOptions {
        let s = settings();
        match self.name() {
            "uring" => s.uring,
            "ssl" => s.ssl,
            _ => s.posix,
        }
    }
}

static IMPLS: [&dyn NetImpl; 3] = [&posix::PosixImpl, &uring::UringImpl, &ssl::SslImpl];

/// Every registered impl, highest priority first.
pub fn impls() -> Vec<&'static dyn NetImpl> {
    let mut v: Vec<&'static dyn NetImpl> = IMPLS.to_vec();
    v.sort_by_key(|i| -i.priority());
    v
}

/// An impl by name.
pub fn get_impl(name: &str) -> Option<&'static dyn NetImpl> {
    IMPLS.iter().copied().find(|i| i.name() == name)
}

/// The impl named by `name`, or this application's default impl. A default that is not
/// available on this kernel falls back (with a log line) to the best available impl.
pub fn impl_or_default(name: Option<&str>) -> Option<&'static dyn NetImpl> {
    if let Some(n) = name {
        return get_impl(n);
    }
    let default = settings().default_impl;
    match get_impl(&default) {
        Some(i) if i.available() => Some(i),
        _ => {
            let fallback = impls().into_iter().find(|i| i.available());
            tracing::warn!(
                "sock: default impl '{default}' is not available; using {:?}",
                fallback.map(|i| i.name())
            );
            fallback
        }
    }
}

/// Parses `127.0.0.1`, `::1` or `[::1]` plus a port.
pub fn parse_addr(addr: &str, port: u16) -> io::Result<SocketAddr> {
    let trimmed = addr
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(addr);
    let ip: IpAddr = trimmed.parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not an IP address: {addr}"),
        )
    })?;
    Ok(SocketAddr::new(ip, port))
}

/// Tracks zero-copy sends by sequence number (wrapping u32, as the kernel counts them) until
/// the kernel reports them done, in whatever order and ranges it reports.
#[derive(Debug, Default)]
pub(crate) struct ZcTracker {
    next_seq: u32,
    /// Outstanding sends in issue order, with whether they completed.
    outstanding: VecDeque<(u32, bool)>,
    /// Completions reported as copied (the kernel fell back to copying).
    pub copied: u64,
    pub completed: u64,
    pub issued: u64,
}

impl ZcTracker {
    #[cfg(test)]
    pub fn starting_at(seq: u32) -> Self {
        Self {
            next_seq: seq,
            ..Default::default()
        }
    }

    /// Records a new zero-copy send and returns its sequence number.
    pub fn issue(&mut self) -> u32 {
        let seq = self.next_seq;
        self.issued += 1;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.outstanding.push_back((seq, false));
        seq
    }

    /// Marks the inclusive wrapping range `lo..=hi` done.
    pub fn complete_range(&mut self, lo: u32, hi: u32) {
        let span = hi.wrapping_sub(lo);
        for entry in self.outstanding.iter_mut() {
            if !entry.1 && entry.0.wrapping_sub(lo) <= span {
                entry.1 = true;
                self.completed += 1;
            }
        }
        while matches!(self.outstanding.front(), Some((_, true))) {
            self.outstanding.pop_front();
        }
    }

    /// True when every send up to and including `seq` is done.
    pub fn is_released(&self, seq: u32) -> bool {
        match self.outstanding.iter().find(|e| !e.1) {
            None => true,
            Some(&(oldest, _)) => (seq.wrapping_sub(oldest) as i32) < 0,
        }
    }

    pub fn pending(&self) -> usize {
        self.outstanding.iter().filter(|e| !e.1).count()
    }
}

/// The queue of write requests of one socket: builds iovecs from the unsent bytes (resuming
/// partial writes at the right offset), advances by what the kernel accepted, and releases
/// requests in order once they are sent and any zero-copy send that carried them is done.
#[derive(Debug, Default)]
pub(crate) struct WriteQueue {
    /// Requests with unsent bytes; the front one may be partially sent.
    unsent: VecDeque<WriteRequest>,
    /// Fully sent requests waiting (in order) for their zero-copy completion.
    sent: VecDeque<WriteRequest>,
    /// Completed requests to hand back.
    pub done: VecDeque<WriteRequest>,
    pub zc: ZcTracker,
}

impl WriteQueue {
    pub fn push(&mut self, mut req: WriteRequest) {
        req.result = None;
        req.sent = 0;
        req.zc_seq = None;
        if req.total_len() == 0 && self.unsent.is_empty() && self.sent.is_empty() {
            req.result = Some(Ok(0));
            self.done.push_back(req);
            return;
        }
        self.unsent.push_back(req);
    }

    pub fn has_unsent(&self) -> bool {
        !self.unsent.is_empty()
    }

    /// Fills `iov` with the unsent bytes, returns (iovec count, bytes).
    pub fn fill_iovecs(&self, iov: &mut [libc::iovec]) -> (usize, usize) {
        let mut n = 0;
        let mut bytes = 0;
        'outer: for req in &self.unsent {
            let mut skip = req.sent;
            for chunk in &req.chunks {
                let (ptr, len) = chunk.raw_parts();
                if skip >= len {
                    skip -= len;
                    continue;
                }
                if n == iov.len() {
                    break 'outer;
                }
                // `skip < len`: the part stays within the chunk's memory.
                let part_len = len - skip;
                iov[n] = libc::iovec {
                    iov_base: ptr.wrapping_add(skip) as *mut libc::c_void,
                    iov_len: part_len,
                };
                skip = 0;
                n += 1;
                bytes += part_len;
            }
        }
        (n, bytes)
    }

    /// Accounts `n` bytes accepted by the kernel (by a zero-copy send `zc_seq` if given).
    pub fn advance(&mut self, mut n: usize, zc_seq: Option<u32>) {
        while let Some(front) = self.unsent.front_mut() {
            let total = front.total_len();
            let remaining = total - front.sent;
            if zc_seq.is_some() && n > 0 {
                front.zc_seq = zc_seq;
            }
            if n >= remaining {
                n -= remaining;
                front.sent = total;
                let mut req = self.unsent.pop_front().expect("front exists");
                req.result = Some(Ok(total));
                self.sent.push_back(req);
            } else {
                front.sent += n;
                break;
            }
        }
        self.release();
    }

    /// Moves sent requests whose zero-copy sends are done to `done`, in order.
    pub fn release(&mut self) {
        while let Some(front) = self.sent.front() {
            let ok = front.zc_seq.is_none_or(|s| self.zc.is_released(s));
            if !ok {
                break;
            }
            let req = self.sent.pop_front().expect("front exists");
            self.done.push_back(req);
        }
    }

    /// Fails every unsent request with `errno`; they complete in order, after any earlier
    /// request still waiting for its zero-copy completion.
    pub fn fail_unsent(&mut self, errno: i32) {
        while let Some(mut req) = self.unsent.pop_front() {
            req.result = Some(Err(io::Error::from_raw_os_error(errno)));
            self.sent.push_back(req);
        }
        self.release();
    }

    /// Fails everything still pending, zero-copy waiters included (the caller guarantees the
    /// kernel no longer references their memory).
    pub fn fail_all(&mut self, errno: i32) {
        self.fail_unsent(errno);
        while let Some(mut req) = self.sent.pop_front() {
            if req.result.as_ref().is_none_or(|r| r.is_ok()) && req.zc_seq.is_some() {
                req.result = Some(Err(io::Error::from_raw_os_error(errno)));
            }
            self.done.push_back(req);
        }
    }

    pub fn stats(&self, enobufs: u64) -> SockStats {
        SockStats {
            zerocopy_sent: self.zc.issued,
            zerocopy_completed: self.zc.completed,
            zerocopy_copied: self.zc.copied,
            enobufs,
        }
    }

    pub fn take_done(&mut self, out: &mut Vec<WriteRequest>) -> usize {
        let n = self.done.len();
        out.extend(self.done.drain(..));
        n
    }
}

/// `true` for loopback addresses (zero-copy is pointless there unless forced).
/// Fills `iov` in order with `recv`, stopping at the first short read; an error counts only
/// when nothing was read (the bytes already read are returned first).
pub(crate) fn readv_by_recv(
    iov: &mut [io::IoSliceMut<'_>],
    mut recv: impl FnMut(&mut [u8]) -> io::Result<usize>,
) -> io::Result<usize> {
    let mut done = 0;
    for b in iov.iter_mut() {
        if b.is_empty() {
            continue;
        }
        match recv(b) {
            Ok(0) => break,
            Ok(n) => {
                done += n;
                if n < b.len() {
                    break;
                }
            }
            Err(e) if done == 0 => return Err(e),
            Err(_) => break,
        }
    }
    Ok(done)
}

pub(crate) fn is_loopback(addr: &SocketAddr) -> bool {
    match addr.ip() {
        IpAddr::V4(a) => a.is_loopback(),
        IpAddr::V6(a) => a.is_loopback() || a.to_ipv4_mapped().is_some_and(|m| m.is_loopback()),
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn zc_tracker_handles_wrap_and_ranges() {
        let mut t = ZcTracker::starting_at(u32::MAX - 1);
        let a = t.issue();
        let b = t.issue();
        let c = t.issue();
        assert_eq!((a, b, c), (u32::MAX - 1, u32::MAX, 0));
        assert!(!t.is_released(a));
        t.complete_range(u32::MAX, 0);
        assert!(!t.is_released(b), "b is done but a is not");
        assert_eq!(t.pending(), 1);
        t.complete_range(u32::MAX - 1, u32::MAX - 1);
        assert!(t.is_released(c));
        assert_eq!(t.pending(), 0);
        assert_eq!(t.completed, 3);
    }

    #[test]
    fn write_queue_resumes_partial_writes_and_orders_completions() {
        let mut q = WriteQueue::default();
        let mut r1 = WriteRequest::new(1);
        r1.chunks.push(Chunk::inline(b"hello").unwrap());
        r1.chunks.push(Chunk::inline(b" world").unwrap());
        let mut r2 = WriteRequest::new(2);
        r2.chunks.push(Chunk::inline(b"!").unwrap());
        q.push(r1);
        q.push(r2);
        let mut iov = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; MAX_IOVECS];
        assert_eq!(q.fill_iovecs(&mut iov), (3, 12));
        q.advance(7, None);
        let (n, bytes) = q.fill_iovecs(&mut iov);
        assert_eq!((n, bytes), (2, 5));
        // SAFETY: the iovec points into the queued inline chunk.
        let first = unsafe { std::slice::from_raw_parts(iov[0].iov_base as *const u8, 4) };
        assert_eq!(first, b"orld");
        let seq = q.zc.issue();
        q.advance(5, Some(seq));
        assert!(
            q.done.is_empty(),
            "zero-copy carried bytes: wait for completion"
        );
        q.zc.complete_range(seq, seq);
        q.release();
        let mut out = Vec::new();
        q.take_done(&mut out);
        assert_eq!(out.iter().map(|r| r.token).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(out[0].result().unwrap().as_ref().unwrap(), &11);
    }

    #[test]
    fn options_validation_names_the_field() {
        let mut o = ImplOptions::defaults_for("posix");
        o.validate("posix").unwrap();
        o.tls_version = 13;
        assert!(o.validate("posix").unwrap_err().starts_with("tls_version"));
        let mut t = ImplOptions::defaults_for("ssl");
        t.validate("ssl").unwrap();
        t.tls_version = 12;
        assert!(t.validate("ssl").unwrap_err().starts_with("tls_version"));
        t.tls_version = 0;
        t.enable_ktls = true;
        assert!(t.validate("ssl").unwrap_err().starts_with("enable_ktls"));
        t.enable_ktls = false;
        t.zerocopy_threshold = 4096;
        assert!(t
            .validate("ssl")
            .unwrap_err()
            .starts_with("zerocopy_threshold"));
        t.zerocopy_threshold = 0;
        t.send_buf_size = 512;
        assert!(t.validate("ssl").unwrap_err().starts_with("send_buf_size"));
        let mut u = ImplOptions::defaults_for("uring");
        u.validate("uring").unwrap();
        u.enable_recv_pipe = false;
        assert!(u
            .validate("uring")
            .unwrap_err()
            .starts_with("enable_recv_pipe"));
    }

    #[test]
    fn registry_orders_by_priority_and_finds_the_default() {
        let names: Vec<&str> = impls().iter().map(|i| i.name()).collect();
        assert_eq!(names, vec!["posix", "uring", "ssl"]);
        assert_eq!(impl_or_default(None).unwrap().name(), "posix");
        assert_eq!(impl_or_default(Some("uring")).unwrap().name(), "uring");
        assert!(impl_or_default(Some("nope")).is_none());
        assert!(get_impl("uring").unwrap().available());
    }

    #[test]
    fn addresses_parse_with_and_without_brackets() {
        assert!(parse_addr("[::1]", 4420).unwrap().is_ipv6());
        assert!(parse_addr("::1", 4420).unwrap().is_ipv6());
        assert!(parse_addr("127.0.0.1", 1).unwrap().is_ipv4());
        assert!(parse_addr("localhost", 1).is_err());
    }
}
