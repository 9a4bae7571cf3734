//! One NVMe/TCP queue pair of the host, as a small state machine over a socket.
//!
//! One NVMe/TCP queue pair of the host: a small state machine (Connecting -> Initializing
//! (ICReq sent) -> FabricsConnect (Connect capsule sent) -> Ready, or Failed) over a socket of
//! any sock impl, in a sock group of its own created on the current reactor. The owner calls
//! [`Qpair::poll`] from a poller; it flushes queued PDUs, receives and decodes what arrived
//! (C2HData lands in the command's own buffer: copied from the staging receive, or straight
//! from the socket when the rest of a data PDU is at least a staging buffer long), answers
//! R2Ts with H2CData PDUs cut to MAXH2CDATA, and appends finished commands to the caller's
//! vector as [`Completion`]s carrying the caller's tag and buffer.
//! Commands get their cid from a slab sized by the queue depth; write requests and their
//! vectors are recycled, so the steady state allocates nothing. A command completes only
//! once its response arrived AND its data buffer came back from the socket, so a buffer is
//! never handed back while the kernel may still read it. Any protocol violation by the peer
//! fails the queue (an H2CTermReq is sent when the decoder found it) and every outstanding
//! command completes with the error.
//!
//! Files: `qpair/config.rs` (what a queue is told), `qpair/connect.rs` (bringing it up:
//! ICReq, Fabrics Connect, authentication), `qpair/receive.rs` (the receive path); the
//! submit and send path is here.

mod config;
mod connect;
mod receive;

use super::auth::QueueAuth;
use super::HostError;
use crate::buf::Chunk;
use crate::buf::IoBuf;
use crate::nvmf::digest::digest_of;
use crate::nvmf::pdu::{
    encode_term_req, H2CData, IcReq, PduDecoder, PduError, PduHeader, Role, TxConfig,
    MIN_MAXH2CDATA, TERM_REQ_MAX_PLEN,
};
use crate::nvmf::pdu_tx::push_header_chunk;
use crate::nvmf::wire::{Cqe, SglDescriptor, Sqe};
use crate::sock::{self, NetImpl, Sock, SockEvent, SockGroup, SockKey, SockOpts, WriteRequest};
pub use config::{HostTls, QpairConfig};
use slab::Slab;
use std::io::IoSlice;

/// Size of the receive staging buffer: many PDUs per system call, and at least the posix
/// sock's receive pipe (64 KiB) so that receives bypass the pipe instead of copying through it.
const STAGING_LEN: usize = 64 * 1024;
/// The rest of a C2HData's data is received straight into the command's buffer only when
/// it is at least this long (one system call lands it without a copy); a shorter rest comes
/// with the PDUs behind it in one staging receive and is copied, which costs less than a
/// system call of its own (and a receive this short would go through the sock's pipe).
const DIRECT_RECV_MIN: u32 = STAGING_LEN as u32;
/// Tag of the queue's own fabrics Connect command.
const CONNECT_TAG: u64 = u64::MAX;
/// Tag of the queue's own authentication commands (AUTH_Send / AUTH_Receive).
const AUTH_TAG: u64 = u64::MAX - 1;
/// Token bit of a write request that carries the command's data buffer.
const TOKEN_HAS_BUF: u64 = 1 << 16;
/// Readable events handled per poll.
const EVENTS_PER_POLL: usize = 64;

/// Where a queue is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QpairState {
    /// TCP connect in progress.
    Connecting,
    /// ICReq sent, waiting for ICResp.
    Initializing,
    /// Fabrics Connect sent.
    FabricsConnect,
    /// The controller asked for authentication; a DH-HMAC-CHAP transaction is running.
    Authenticating,
    Ready,
    Failed(HostError),
    Closed,
}

/// The data of a command: none, data to write, or a buffer to read into. The transfer
/// length is the buffer's length.
#[derive(Debug)]
pub enum DataBuf {
    None,
    Write(IoBuf),
    Read(IoBuf),
}

/// A command to submit: its SQE (cid and data pointer are filled in by the queue) and data.
#[derive(Debug)]
pub struct Request {
    pub sqe: Sqe,
    pub data: DataBuf,
}

impl Request {
    pub fn new(sqe: Sqe, data: DataBuf) -> Self {
        Self { sqe, data }
    }
    /// Takes the buffer back out of a request that could not be submitted.
    pub fn into_buf(self) -> Option<IoBuf> {
        match self.data {
            DataBuf::None => None,
            DataBuf::Write(b) | DataBuf::Read(b) => Some(b),
        }
    }
}

/// A finished command: the submitter's tag, the completion entry (whose status may be an
/// NVMe error) or the transport error that ended it, and its data buffer.
#[derive(Debug)]
pub struct Completion {
    pub tag: u64,
    pub result: Result<Cqe, HostError>,
    pub buf: Option<IoBuf>,
}

impl Completion {
    /// DW0 on success; a non-success status becomes [`HostError::Nvme`].
    pub fn status(&self) -> Result<u32, HostError> {
        match &self.result {
            Ok(cqe) if cqe.status().is_success() => Ok(cqe.dw0.get()),
            Ok(cqe) => Err(HostError::Nvme {
                status: cqe.status(),
                dw0: cqe.dw0.get(),
            }),
            Err(e) => Err(e.clone()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    None,
    Write,
    Read,
}

/// An R2T being answered: H2CData from `next` up to `end`, `inflight` bytes on the way.
#[derive(Debug, Clone, Copy)]
struct R2tState {
    ttag: u16,
    next: u32,
    end: u32,
    inflight: u32,
}

#[derive(Debug)]
struct Cmd {
    tag: u64,
    dir: Dir,
    len: u32,
    /// The data buffer while the queue holds it (None while a write request carries it).
    buf: Option<IoBuf>,
    sending: bool,
    received: u32,
    r2t: Option<R2tState>,
    resp: Option<Cqe>,
    error: Option<HostError>,
}

/// The C2HData being received.
#[derive(Debug, Clone, Copy)]
struct RxData {
    cid: u16,
    datao: u32,
    datal: u32,
    success: bool,
}

/// One NVMe/TCP connection. Create it on a reactor thread; poll it from that thread.
pub struct Qpair {
    cfg: QpairConfig,
    group: Box<dyn SockGroup>,
    connecting: Option<Box<dyn Sock>>,
    key: Option<SockKey>,
    state: QpairState,
    dec: PduDecoder,
    icreq: IcReq,
    tx: TxConfig,
    maxh2cdata: u32,
    cntlid: u16,
    cmds: Slab<Cmd>,
    free_reqs: Vec<WriteRequest>,
    events: Vec<SockEvent>,
    staging: Vec<u8>,
    rx: Option<RxData>,
    /// The DH-HMAC-CHAP transaction while the queue authenticates.
    auth: Option<Box<QueueAuth>>,
}

impl Qpair {
    /// Starts connecting (non-blocking). Must run on a reactor thread (the sock group
    /// registers its wake fd there).
    pub fn connect(cfg: QpairConfig) -> Result<Self, HostError> {
        let mut opts = SockOpts::default();
        let mut impl_name = cfg.sock_impl.as_deref();
        if let Some(tls) = &cfg.tls {
            if impl_name.is_some_and(|n| n != "ssl") {
                return Err(HostError::Invalid(format!(
                    "TLS needs the ssl sock impl, not {}",
                    impl_name.unwrap_or_default()
                )));
            }
            impl_name = Some("ssl");
            let creds = tls
                .psk
                .credentials(
                    tls.identity,
                    tls.psk_hostnqn.as_deref().unwrap_or(&cfg.hostnqn),
                    &cfg.subnqn,
                )
                .map_err(|e| HostError::Invalid(format!("TLS PSK: {e}")))?;
            opts.tls = Some(sock::tls::TlsOpts::Client(sock::tls::ExternalPsk {
                identity: creds.identity,
                key: creds.psk,
            }));
        }
        let net: &'static dyn NetImpl = sock::impl_or_default(impl_name).ok_or_else(|| {
            HostError::Invalid(format!(
                "unknown sock impl {:?}",
                cfg.sock_impl.as_deref().unwrap_or("")
            ))
        })?;
        if cfg.depth < 2 {
            return Err(HostError::Invalid("queue depth must be at least 2".into()));
        }
        let group = net
            .create_group()
            .map_err(|e| HostError::Connection(format!("creating a sock group: {e}")))?;
        let sock = net.connect(&cfg.traddr, cfg.trsvcid, &opts).map_err(|e| {
            HostError::Connection(format!("connect to {}:{}: {e}", cfg.traddr, cfg.trsvcid))
        })?;
        let icreq = IcReq {
            pfv: 0,
            hpda: 0,
            hdgst: cfg.hdgst,
            ddgst: cfg.ddgst,
            maxr2t: 0,
        };
        let depth = cfg.depth as usize;
        Ok(Self {
            cfg,
            group,
            connecting: Some(sock),
            key: None,
            state: QpairState::Connecting,
            dec: PduDecoder::new(Role::Host),
            icreq,
            tx: TxConfig::default(),
            maxh2cdata: MIN_MAXH2CDATA,
            cntlid: 0,
            cmds: Slab::with_capacity(depth),
            free_reqs: (0..depth * 2).map(|_| WriteRequest::new(0)).collect(),
            events: Vec::with_capacity(EVENTS_PER_POLL + depth * 2),
            staging: vec![0u8; STAGING_LEN],
            rx: None,
            auth: None,
        })
    }

    pub fn state(&self) -> &QpairState {
        &self.state
    }

    pub fn is_ready(&self) -> bool {
        self.state == QpairState::Ready
    }

    /// The error that ended the queue, if it failed.
    pub fn error(&self) -> Option<&HostError> {
        match &self.state {
            QpairState::Failed(e) => Some(e),
            _ => None,
        }
    }

    pub fn qid(&self) -> u16 {
        self.cfg.qid
    }

    pub fn config(&self) -> &QpairConfig {
        &self.cfg
    }

    /// The controller id the Connect response assigned (valid once Ready).
    pub fn cntlid(&self) -> u16 {
        self.cntlid
    }

    /// Negotiated digests and MAXH2CDATA (valid once past Initializing).
    pub fn negotiated(&self) -> (bool, bool, u32) {
        (self.tx.hdgst, self.tx.ddgst, self.maxh2cdata)
    }

    /// Commands in flight.
    pub fn outstanding(&self) -> usize {
        self.cmds.len()
    }

    pub fn depth(&self) -> usize {
        self.cfg.depth as usize
    }

    /// Sets the in-capsule write limit (from the controller's IOCCSZ).
    pub fn set_max_in_capsule(&mut self, bytes: u32) {
        self.cfg.max_in_capsule = bytes;
    }

    /// Submits a command; the request comes back with the error when it cannot be queued.
    /// The PDU is sent at the next `poll` (or `flush`), so many submissions share one send.
    // The request (with its buffer) comes back by value: boxing it would allocate on the
    // queue-full path, which a load generator may hit on purpose.
    #[allow(clippy::result_large_err)]
    pub fn submit(&mut self, req: Request, tag: u64) -> Result<(), (HostError, Request)> {
        if tag >= AUTH_TAG {
            return Err((
                HostError::Invalid("tags u64::MAX - 1 and u64::MAX are reserved".into()),
                req,
            ));
        }
        if self.state != QpairState::Ready {
            let why = match &self.state {
                QpairState::Failed(e) => e.to_string(),
                s => format!("{s:?}"),
            };
            return Err((HostError::NotReady(why), req));
        }
        self.submit_inner(req, tag)
    }

    #[allow(clippy::result_large_err)]
    fn submit_inner(&mut self, req: Request, tag: u64) -> Result<(), (HostError, Request)> {
        if self.cmds.len() >= self.cfg.depth as usize {
            return Err((HostError::QueueFull, req));
        }
        let Request { mut sqe, data } = req;
        let (dir, buf) = match data {
            DataBuf::None => (Dir::None, None),
            DataBuf::Write(b) => (Dir::Write, Some(b)),
            DataBuf::Read(b) => (Dir::Read, Some(b)),
        };
        let len = buf.as_ref().map_or(0, |b| b.len());
        if len > self.cfg.max_transfer as usize || (dir != Dir::None && len == 0) {
            let data = match (dir, buf) {
                (Dir::Write, Some(b)) => DataBuf::Write(b),
                (Dir::Read, Some(b)) => DataBuf::Read(b),
                _ => DataBuf::None,
            };
            return Err((
                HostError::Invalid(format!(
                    "transfer of {len} bytes (allowed 1..={})",
                    self.cfg.max_transfer
                )),
                Request { sqe, data },
            ));
        }
        let len = len as u32;
        let entry = self.cmds.vacant_entry();
        let cid = entry.key() as u16;
        sqe.cid = cid.into();
        let in_capsule = dir == Dir::Write && len <= self.cfg.max_in_capsule;
        sqe.dptr = if in_capsule {
            SglDescriptor::in_capsule(0, len)
        } else {
            SglDescriptor::transport_data_block(len)
        };
        let (keep, send) = if in_capsule { (None, buf) } else { (buf, None) };
        entry.insert(Cmd {
            tag,
            dir,
            len,
            buf: keep,
            sending: send.is_some(),
            received: 0,
            r2t: None,
            resp: None,
            error: None,
        });
        if let Err(e) = self.send_capsule(cid, &sqe, send) {
            // Encoding failed (a bug, not the peer): give the command back untouched.
            let cmd = self.cmds.remove(cid as usize);
            let data = match (dir, cmd.buf) {
                (Dir::Write, Some(b)) => DataBuf::Write(b),
                (Dir::Read, Some(b)) => DataBuf::Read(b),
                _ => DataBuf::None,
            };
            return Err((e, Request { sqe, data }));
        }
        Ok(())
    }

    fn take_req(&mut self, token: u64) -> WriteRequest {
        let mut req = self.free_reqs.pop().unwrap_or_else(|| WriteRequest::new(0));
        req.clear(token);
        req
    }

    fn sock(&mut self) -> Option<&mut dyn Sock> {
        let key = self.key?;
        self.group.sock(key)
    }

    /// Queues a CapsuleCmd with optional in-capsule data (the buffer travels in the request).
    fn send_capsule(&mut self, cid: u16, sqe: &Sqe, data: Option<IoBuf>) -> Result<(), HostError> {
        let data_len = data.as_ref().map_or(0, |b| b.len()) as u32;
        let has_buf = data.is_some();
        let token = cid as u64 | if has_buf { TOKEN_HAS_BUF } else { 0 };
        let mut req = self.take_req(token);
        let enc = match push_header_chunk(
            &mut req.chunks,
            &PduHeader::CapsuleCmd(*sqe),
            data_len,
            &self.tx,
        ) {
            Ok(enc) => enc,
            Err(e) => {
                self.free_reqs.push(req);
                return Err(HostError::Invalid(format!("encoding a capsule: {e}")));
            }
        };
        if let Some(buf) = data {
            let digest = enc.data_digest.then(|| digest_of(&[&buf[..]]));
            req.chunks.push(Chunk::buf(buf));
            if let Some(d) = digest.and_then(|d| Chunk::inline(&d)) {
                req.chunks.push(d);
            }
        }
        self.queue(req);
        Ok(())
    }

    fn queue(&mut self, req: WriteRequest) {
        match self.sock() {
            Some(s) => s.writev_async(req),
            None => self.free_reqs.push(req),
        }
    }

    /// Pushes queued PDUs to the kernel now (normally `poll` does it).
    pub fn flush(&mut self) {
        if let Some(s) = self.sock() {
            let _ = s.flush();
        }
    }

    /// Drives the queue: connect progress, sends, receives, R2T answers. Finished commands
    /// are appended to `out`. Returns a work count (0 = nothing happened).
    pub fn poll(&mut self, out: &mut Vec<Completion>) -> usize {
        match self.state {
            QpairState::Connecting => return self.poll_connect(),
            QpairState::Failed(_) | QpairState::Closed => {
                // Let the group finish closing the socket (its last requests come back).
                if !self.group.is_empty() {
                    let mut events = std::mem::take(&mut self.events);
                    self.group.poll(EVENTS_PER_POLL, &mut events);
                    events.clear();
                    self.events = events;
                }
                return 0;
            }
            QpairState::Authenticating => {
                if let Some(auth) = &self.auth {
                    if std::time::Instant::now() >= auth.deadline {
                        let err = auth.timed_out();
                        self.auth = None;
                        self.fail(err, out);
                        return 1;
                    }
                }
            }
            _ => {}
        }
        let mut events = std::mem::take(&mut self.events);
        self.group.poll(EVENTS_PER_POLL, &mut events);
        let work = events.len();
        for ev in events.drain(..) {
            match ev {
                SockEvent::Readable(_) => self.on_readable(out),
                SockEvent::WriteDone(_, req) => self.on_write_done(req, out),
            }
        }
        self.events = events;
        work
    }

    /// Sends the next H2CData of the command's current R2T (one PDU in flight at a time:
    /// the buffer travels with it and comes back on its write completion).
    fn send_h2c(&mut self, cid: u16, out: &mut Vec<Completion>) {
        let maxh2c = self.maxh2cdata;
        let tx = self.tx;
        let Some(cmd) = self.cmds.get_mut(cid as usize) else {
            return;
        };
        let Some(mut r2t) = cmd.r2t else { return };
        if cmd.sending || r2t.next >= r2t.end {
            return;
        }
        let Some(buf) = cmd.buf.take() else { return };
        let len = (r2t.end - r2t.next).min(maxh2c);
        let hdr = PduHeader::H2CData(H2CData {
            cccid: cid,
            ttag: r2t.ttag,
            datao: r2t.next,
            datal: len,
            last: r2t.next + len == r2t.end,
        });
        let mut req = self.free_reqs.pop().unwrap_or_else(|| WriteRequest::new(0));
        req.clear(cid as u64 | TOKEN_HAS_BUF);
        let enc = match push_header_chunk(&mut req.chunks, &hdr, len, &tx) {
            Ok(e) => e,
            Err(e) => {
                cmd.buf = Some(buf);
                self.free_reqs.push(req);
                self.fail(HostError::Invalid(format!("encoding H2CData: {e}")), out);
                return;
            }
        };
        let off = r2t.next as usize;
        let digest = enc
            .data_digest
            .then(|| digest_of(&[&buf[off..off + len as usize]]));
        r2t.inflight = len;
        cmd.r2t = Some(r2t);
        cmd.sending = true;
        req.chunks.push(Chunk::Buf {
            buf,
            off,
            len: len as usize,
        });
        if let Some(d) = digest.and_then(|d| Chunk::inline(&d)) {
            req.chunks.push(d);
        }
        self.queue(req);
    }

    fn on_write_done(&mut self, mut req: WriteRequest, out: &mut Vec<Completion>) {
        let failed = match req.take_result() {
            Some(Err(e)) => Some(e),
            _ => None,
        };
        let token = req.token;
        let mut buf = None;
        if token & TOKEN_HAS_BUF != 0 {
            for chunk in req.chunks.drain(..) {
                if let Chunk::Buf { buf: b, .. } = chunk {
                    buf = Some(b);
                }
            }
        }
        req.clear(0);
        self.free_reqs.push(req);
        if let Some(e) = failed {
            self.fail(HostError::Connection(format!("send: {e}")), out);
            return;
        }
        let Some(buf) = buf else { return };
        let cid = (token & 0xffff) as u16;
        let Some(cmd) = self.cmds.get_mut(cid as usize) else {
            return;
        };
        cmd.buf = Some(buf);
        cmd.sending = false;
        if let Some(mut r2t) = cmd.r2t {
            r2t.next += r2t.inflight;
            r2t.inflight = 0;
            cmd.r2t = (r2t.next < r2t.end).then_some(r2t);
            if cmd.r2t.is_some() && cmd.resp.is_none() {
                self.send_h2c(cid, out);
                return;
            }
        }
        self.try_complete(cid, out);
    }

    /// Completes a command once its response arrived and its buffer is back.
    fn try_complete(&mut self, cid: u16, out: &mut Vec<Completion>) {
        let ready = self
            .cmds
            .get(cid as usize)
            .is_some_and(|c| c.resp.is_some() && !c.sending);
        if !ready {
            return;
        }
        let cmd = self.cmds.remove(cid as usize);
        if self.rx.is_some_and(|rx| rx.cid == cid) {
            self.rx = None;
        }
        let cqe = cmd.resp.expect("checked above");
        let result = match cmd.error {
            Some(e) => Err(e),
            // A successful read must have delivered every byte.
            // An AUTH_Receive returns the message, shorter than its allocation length.
            None if cmd.dir == Dir::Read
                && cqe.status().is_success()
                && cmd.received != cmd.len
                && cmd.tag != AUTH_TAG =>
            {
                Err(HostError::Protocol(format!(
                    "read completed successfully with {} of {} data bytes",
                    cmd.received, cmd.len
                )))
            }
            None => Ok(cqe),
        };
        if cmd.tag == CONNECT_TAG {
            self.on_connect_done(result, out);
            return;
        }
        if cmd.tag == AUTH_TAG {
            let received = cmd.received as usize;
            let data = cmd
                .buf
                .as_ref()
                .map_or(&[][..], |b| &b[..received.min(b.len())]);
            let status = result.and_then(|cqe| match cqe.status() {
                s if s.is_success() => Ok(()),
                status => Err(HostError::Nvme {
                    status,
                    dw0: cqe.dw0.get(),
                }),
            });
            let action = match self.auth.as_mut() {
                Some(a) => a.on_completion(status.map(|()| data)),
                None => return,
            };
            self.on_auth_action(action, out);
            return;
        }
        out.push(Completion {
            tag: cmd.tag,
            result,
            buf: cmd.buf,
        });
    }

    /// Best effort: tells the controller why we drop the connection.
    fn send_term_req(&mut self, e: &PduError) {
        let mut pdu = [0u8; TERM_REQ_MAX_PLEN];
        let n = encode_term_req(Role::Host, e, self.dec.error_header(), &mut pdu);
        if let Some(s) = self.sock() {
            let _ = s.writev(&[IoSlice::new(&pdu[..n])]);
        }
    }

    /// Ends the queue with `err`: the socket closes and every command completes with it.
    fn fail(&mut self, err: HostError, out: &mut Vec<Completion>) {
        if matches!(self.state, QpairState::Failed(_) | QpairState::Closed) {
            return;
        }
        tracing::debug!(qid = self.cfg.qid, error = %err, "host queue failed");
        self.state = QpairState::Failed(err.clone());
        self.close_sock();
        for cmd in self.cmds.drain() {
            if cmd.tag >= AUTH_TAG {
                continue;
            }
            out.push(Completion {
                tag: cmd.tag,
                result: Err(err.clone()),
                buf: cmd.buf,
            });
        }
        self.rx = None;
    }

    fn close_sock(&mut self) {
        if let Some(mut s) = self.connecting.take() {
            s.close(&mut Vec::new());
        }
        if let Some(key) = self.key.take() {
            self.group.close(key);
        }
    }

    /// Closes the connection; commands still in flight complete with `NotReady` in `out`.
    pub fn close(&mut self, out: &mut Vec<Completion>) {
        if matches!(self.state, QpairState::Closed) {
            return;
        }
        self.fail(HostError::NotReady("queue closed".into()), out);
        self.state = QpairState::Closed;
    }
}

impl Drop for Qpair {
    fn drop(&mut self) {
        self.close_sock();
    }
}
