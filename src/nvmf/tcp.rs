//! The NVMe/TCP transport: one poll group per reactor and the queue-pair state machine.
//!
//! A poll group (thread-local on its reactor) owns a `SockGroup` per socket implementation,
//! the queue pairs whose sockets the acceptor handed to this reactor, the reactor's snapshot
//! of the target ([`TargetView`]) and one bdev `IoChannel` per namespace. A queue pair goes
//! through `AwaitIcReq` (ICReq → ICResp with the negotiated digests, CPDA 0 and
//! MAXH2CDATA) to `Ready`, where capsules are decoded incrementally: each command takes a
//! slot of the queue's request pool (sized by the transport's queue depths, allocated once),
//! its in-capsule data or R2T-solicited H2CData lands in an `IoBuf` (copied from the 64 KiB
//! staging receive, received straight from the socket when the rest of a PDU's data is at
//! least that long, or, for a stream of same-shaped in-capsule writes, landed by the receive
//! itself in the buffer the bdev writes from: see `landing.rs`), and it is executed: fabrics
//! commands (Connect with every check, Property Get/Set, Disconnect) here, admin commands
//! by the controller the admin queue owns (`ctrlr.rs`), I/O commands on the bdev channel
//! (`io.rs`). Completions answer with C2HData (SUCCESS flag when c2h_success and SQ flow
//! control is off) and/or a CapsuleResp carrying the SQ head, built into reused
//! `WriteRequest`s with owned chunks. A protocol violation answers a C2HTermReq with the
//! decoder's FES/FEI and closes the queue. A timer checks keep-alive timeouts (tearing the
//! controller and all its queues down, also on other reactors by message), closing queues
//! and stalled handshakes. The steady-state path allocates nothing: requests, write
//! requests and bdev I/O objects are reused and buffers come from the `IoBuf` cache.

use super::ctrlr::{self, AdminEnv, AdminOutcome, Ctrlr};
use super::digest::digest_of;
use super::io::{self, IoPlan, NsGeometry};
use super::landing::{CapsuleShape, Landed, Landing, HDR_SLOT};
use super::pdu::{
    self, encode_term_req, field_off, C2HData, EncodedHeader, IcReq, PduDecoder, PduError,
    PduHeader, RxEvent, TargetIcParams, TxConfig, R2T, TERM_REQ_HLEN, TERM_REQ_MAX_PLEN,
};
use super::subsystem::{CtrlrEntry, Directory, ListenAddr, QpairRef};
use super::target::{TargetView, TransportOpts};
use super::wire::{
    self, admin_opc, connect_off, feat, ConnectData, Cqe, DataDirection, FabricsCommand, Sqe,
    Status,
};
use crate::bdev::iostat::IoStats;
use crate::bdev::{self, BdevEvent, BdevHandle, BdevIo, IoChannel, IoSink, IoType, SharedRange};
use crate::buf::IoBuf;
use crate::reactor::{self, PollStatus, PollerHandle};
use crate::sock::{self, Chunk, Sock, SockEvent, SockGroup, SockKey, WriteRequest};
use serde_json::{json, Value};
use slab::Slab;
use std::cell::RefCell;
use std::collections::HashMap;
use std::io::ErrorKind;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zerocopy::little_endian::U16;

/// Bytes a queue pair receives at once into its staging buffer (headers and data of many
/// PDUs per system call; allocated on the first receive). At least the posix sock's receive
/// pipe (64 KiB), so receives bypass the pipe instead of being copied through it, and room
/// for a queue depth of 32 in-capsule 4 KiB writes (see `landing.rs`).
const RX_BUF_LEN: usize = 128 * 1024;
/// The rest of a PDU's data is received straight into the command's buffer only when it is
/// at least this long (the posix sock's largest receive pipe): then one system call lands
/// it without a copy. A shorter rest comes with the PDUs behind it in one staging receive
/// and is copied (a copy of a few KiB costs less than a system call, and a receive this
/// short would go through the sock's pipe).
const DIRECT_RECV_MIN: u32 = 64 * 1024;
/// Readable sockets handled per group poll.
const EVENTS_PER_POLL: usize = 64;
/// In-capsule data accepted on an admin queue (the Linux host's fixed admin capsule size).
const ADMIN_IN_CAPSULE: u32 = 8192;
/// A connection must finish the IC exchange within this time.
/// How long a closing queue waits for its Term Req to leave.
const CLOSE_LINGER: Duration = Duration::from_millis(500);
/// Period of the timer poller (keep-alive, lingering closes).
const TIMER_PERIOD_US: u64 = 50_000;
/// Queued write requests per request slot before a host that does not read is dropped.
/// Chunks (PDU headers, data pieces, digests) queued on a socket per command slot beyond which
/// a host that keeps sending commands but does not read its answers is dropped.
const MAX_CHUNKS_PER_SLOT: usize = 12;
/// Chunks one batch of responses collects before it is queued on the socket (about one
/// sendmsg's worth of iovecs).
const BATCH_MAX_CHUNKS: usize = 60;
/// Write-request tokens: bit 0 marks a Term Req (or a Disconnect answer) after which the
/// queue closes; the bits above hold the generation of the queue pair that queued it, so a
/// completion reported after its connection was closed (the socket layer may hand the
/// slot's key to a new connection before delivering the old one's cancelled writes) is
/// recognised and dropped instead of being taken for a failure of the new connection.
const TOKEN_PLAIN: u64 = 0;
const TOKEN_TERM: u64 = 1;

// ---------------------------------------------------------------------------------------
// Requests and queue pairs
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReqState {
    Free,
    /// In-capsule data is arriving.
    Capsule,
    /// Waiting for H2CData answering an R2T.
    AwaitH2C,
    /// Submitted to the bdev or gathering (SMART); completion pending.
    Executing,
    /// An Asynchronous Event Request kept by the controller.
    Aer,
}

struct Request {
    state: ReqState,
    sqe: Sqe,
    /// Command data (host data received, or the buffer of data to send).
    buf: Option<IoBuf>,
    /// Transfer length from the SGL.
    xfer: u32,
    /// H2C data received so far.
    received: u32,
    r2t: R2T,
    status: Status,
    dw0: u32,
    /// Bytes of `buf` to send as C2HData on success.
    c2h_len: usize,
    /// A zero-copy read's data (the bdev's shared memory), sent instead of `buf`.
    shared: Option<SharedRange>,
    /// bdev I/O outstanding.
    pending: u32,
    /// Reused bdev I/O object.
    io: Option<BdevIo>,
}

impl Request {
    fn new() -> Self {
        Self {
            state: ReqState::Free,
            sqe: Sqe::default(),
            buf: None,
            xfer: 0,
            received: 0,
            r2t: R2T::default(),
            status: Status::SUCCESS,
            dw0: 0,
            c2h_len: 0,
            shared: None,
            pending: 0,
            io: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QpState {
    AwaitIcReq,
    Ready,
    /// A Term Req was sent (or the queue is being torn down): no more input is processed.
    Closing {
        deadline: Instant,
    },
}

/// Where the data of the PDU being received goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataDest {
    None,
    /// In-capsule data of this slot.
    Capsule(u16),
    /// H2CData for this slot, at `base` within the command's data.
    H2C {
        slot: u16,
        base: u32,
        len: u32,
    },
}

struct Qpair {
    gen: u64,
    net: usize,
    key: SockKey,
    peer: String,
    listen: ListenAddr,
    state: QpState,
    created: Instant,
    dec: PduDecoder,
    tx: TxConfig,
    maxh2cdata: u32,
    rx: Vec<u8>,
    rx_pos: usize,
    rx_len: usize,
    reqs: Vec<Request>,
    free: Vec<u16>,
    wr_pool: Vec<WriteRequest>,
    cur: DataDest,
    qid: Option<u16>,
    sqhd: u16,
    qsize: u16,
    sq_flow_disabled: bool,
    subsys_id: u64,
    cntlid: u16,
    directory: Option<Arc<Directory>>,
    ctrlr: Option<Box<Ctrlr>>,
    opts: TransportOpts,
    /// Chunks of the write requests queued on the socket and not completed yet.
    writes_in_flight: usize,
    /// The responses produced since the last poll, sent as one write request (see
    /// `PollGroup::send_response`).
    tx_batch: Option<WriteRequest>,
    /// A Term Req went out: nothing else may follow it.
    term_sent: bool,
    /// In-capsule write data received straight into command buffers.
    landing: Landing,
}

impl Qpair {
    fn new(gen: u64, net: usize, key: SockKey, peer: String, listen: ListenAddr) -> Self {
        Self {
            gen,
            net,
            key,
            peer,
            listen,
            state: QpState::AwaitIcReq,
            created: Instant::now(),
            dec: PduDecoder::new(pdu::Role::Target),
            tx: TxConfig::default(),
            maxh2cdata: 0,
            rx: Vec::new(),
            rx_pos: 0,
            rx_len: 0,
            reqs: Vec::new(),
            free: Vec::new(),
            wr_pool: Vec::new(),
            cur: DataDest::None,
            qid: None,
            sqhd: 0,
            qsize: 1,
            sq_flow_disabled: false,
            subsys_id: 0,
            cntlid: 0,
            directory: None,
            ctrlr: None,
            opts: TransportOpts::default(),
            writes_in_flight: 0,
            tx_batch: None,
            term_sent: false,
            landing: Landing::default(),
        }
    }

    fn closing(&self) -> bool {
        matches!(self.state, QpState::Closing { .. })
    }

    fn free_slot(&mut self, slot: u16) {
        let r = &mut self.reqs[slot as usize];
        if r.state != ReqState::Free {
            r.state = ReqState::Free;
            r.buf = None;
            r.shared = None;
            self.free.push(slot);
        }
    }

    fn write_request(&mut self, token: u64) -> WriteRequest {
        let token = self.gen << 1 | token;
        match self.wr_pool.pop() {
            Some(mut w) => {
                w.clear(token);
                w
            }
            None => WriteRequest::new(token),
        }
    }
}

/// Appends the header of a PDU to `chunks` (encoded in place in an inline chunk).
fn push_header(
    chunks: &mut Vec<Chunk>,
    hdr: &PduHeader,
    data_len: u32,
    tx: &TxConfig,
) -> Option<EncodedHeader> {
    super::pdu_tx::push_header_chunk(chunks, hdr, data_len, tx).ok()
}

// ---------------------------------------------------------------------------------------
// Per-reactor state
// ---------------------------------------------------------------------------------------

/// A bdev channel of one namespace on this reactor.
struct NsChan {
    bdev: BdevHandle,
    chan: IoChannel,
    _desc: bdev::Desc,
}

impl NsChan {
    fn geometry(&self) -> NsGeometry {
        let b = &self.bdev;
        NsGeometry {
            block_size: b.block_size(),
            num_blocks: b.num_blocks(),
            supports_flush: b.supports(IoType::Flush),
            supports_unmap: b.supports(IoType::Unmap),
            supports_write_zeroes: b.supports(IoType::WriteZeroes),
        }
    }
}

struct NetGroup {
    name: &'static str,
    group: Box<dyn SockGroup>,
    owners: Owners,
}

/// The queue pair owning each socket of a group. Sock keys are the group's slab indices
/// (small, reused), so a vector indexed by key answers every socket event with one load
/// instead of hashing the key.
#[derive(Default)]
struct Owners(Vec<Option<usize>>);

impl Owners {
    fn insert(&mut self, key: SockKey, idx: usize) {
        if self.0.len() <= key {
            self.0.resize(key + 1, None);
        }
        self.0[key] = Some(idx);
    }
    fn remove(&mut self, key: SockKey) {
        if let Some(slot) = self.0.get_mut(key) {
            *slot = None;
        }
    }
    fn get(&self, key: SockKey) -> Option<usize> {
        self.0.get(key).copied().flatten()
    }
}

/// Hasher of the namespace-channel map, looked up once per I/O command: its keys are
/// (subsystem id, NSID) pairs of the local configuration, so a multiply-rotate mix (FxHash
/// style) serves as well as SipHash at a fraction of the cost. A host choosing NSIDs only
/// chooses which key is looked up, never what the map holds.
#[derive(Default, Clone, Copy)]
struct NsKeyHasher(u64);

impl std::hash::Hasher for NsKeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(*b as u64);
        }
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(v as u64);
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

type NsMap<V> = HashMap<(u64, u32), V, std::hash::BuildHasherDefault<NsKeyHasher>>;

/// Counters of one poll group (`nvmf_get_stats`).
#[derive(Debug, Default, Clone, Copy)]
struct GroupStats {
    admin_qpairs: u64,
    io_qpairs: u64,
    current_admin_qpairs: u64,
    current_io_qpairs: u64,
    pending_bdev_io: u64,
    completed_nvme_io: u64,
    term_reqs_sent: u64,
    /// In-capsule writes whose data the receive landed in the command's buffer.
    in_capsule_landed: u64,
    connections: u64,
}

struct PollGroup {
    core: u32,
    view: Arc<TargetView>,
    nets: Vec<NetGroup>,
    qpairs: Slab<Qpair>,
    next_gen: u64,
    ns: NsMap<NsChan>,
    sink: Rc<dyn IoSink>,
    events: Vec<SockEvent>,
    to_close: Vec<(usize, u64)>,
    /// Queue pairs (index, generation) with an open batch of responses.
    tx_open: Vec<(usize, u64)>,
    stats: GroupStats,
    pollers: Vec<PollerHandle>,
}

thread_local! {
    static GROUP: RefCell<Option<PollGroup>> = const { RefCell::new(None) };
}

/// Runs `f` on this reactor's poll group, creating it (and its pollers) on first use.
fn with_group<R>(f: impl FnOnce(&mut PollGroup) -> R) -> R {
    GROUP.with(|g| {
        let mut g = g.borrow_mut();
        let g = g.get_or_insert_with(PollGroup::new);
        f(g)
    })
}

/// Like `with_group`, but only if the group exists and is not busy.
fn try_group<R>(f: impl FnOnce(&mut PollGroup) -> R) -> Option<R> {
    GROUP.with(|g| {
        let mut g = g.try_borrow_mut().ok()?;
        g.as_mut().map(f)
    })
}

struct GroupSink;

impl IoSink for GroupSink {
    fn io_done(&self, io: BdevIo) {
        let done = GROUP.with(|g| match g.try_borrow_mut() {
            Ok(mut g) => {
                if let Some(g) = g.as_mut() {
                    g.io_done(io);
                }
                None
            }
            Err(_) => Some(io),
        });
        if let Some(io) = done {
            reactor::defer(move || {
                let _ = try_group(|g| g.io_done(io));
            });
        }
    }
}

/// Token of a bdev I/O: queue slot index, queue generation (28 bits), request slot.
fn io_token(index: usize, gen: u64, slot: u16) -> u64 {
    ((index as u64) << 44) | ((gen & 0xfff_ffff) << 16) | slot as u64
}

fn split_token(t: u64) -> (usize, u64, u16) {
    ((t >> 44) as usize, (t >> 16) & 0xfff_ffff, t as u16)
}

impl PollGroup {
    fn new() -> Self {
        let core = reactor::current_core().unwrap_or(0);
        let poller = reactor::register_poller(format!("nvmf_tcp_poll_group_{core}"), 0, || {
            try_group(|g| g.poll()).unwrap_or(PollStatus::Idle)
        });
        let timer =
            reactor::register_poller(format!("nvmf_tcp_timer_{core}"), TIMER_PERIOD_US, || {
                try_group(|g| g.on_timer()).unwrap_or(PollStatus::Idle)
            });
        Self {
            core,
            view: Arc::new(TargetView::empty()),
            nets: Vec::new(),
            qpairs: Slab::new(),
            next_gen: 1,
            ns: NsMap::default(),
            sink: Rc::new(GroupSink),
            events: Vec::with_capacity(EVENTS_PER_POLL * 2),
            to_close: Vec::new(),
            tx_open: Vec::new(),
            stats: GroupStats::default(),
            pollers: vec![poller, timer],
        }
    }

    // ----- connections -----

    fn add_connection(&mut self, sock: Box<dyn Sock>, listen: ListenAddr) {
        let name = sock.impl_name();
        let net = match self.nets.iter().position(|n| n.name == name) {
            Some(i) => i,
            None => {
                let Some(imp) = sock::get_impl(name) else {
                    return;
                };
                match imp.create_group() {
                    Ok(group) => {
                        self.nets.push(NetGroup {
                            name,
                            group,
                            owners: Owners::default(),
                        });
                        self.nets.len() - 1
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot create a socket group");
                        return;
                    }
                }
            }
        };
        let peer = sock.peer_addr().map(|a| a.to_string()).unwrap_or_default();
        let key = match self.nets[net].group.add(sock) {
            Ok(k) => k,
            Err((e, mut s)) => {
                tracing::warn!(error = %e, "cannot add a connection to the poll group");
                let mut out = Vec::new();
                s.close(&mut out);
                return;
            }
        };
        let gen = self.next_gen;
        self.next_gen += 1;
        let idx = self.qpairs.insert(Qpair::new(gen, net, key, peer, listen));
        self.nets[net].owners.insert(key, idx);
        self.stats.connections += 1;
        tracing::debug!(core = self.core, idx, "NVMe/TCP connection accepted");
    }

    fn close_qpair(&mut self, idx: usize) {
        if !self.qpairs.contains(idx) {
            return;
        }
        let qp = self.qpairs.remove(idx);
        let net = &mut self.nets[qp.net];
        net.owners.remove(qp.key);
        net.group.close(qp.key);
        let me = QpairRef {
            core: self.core,
            index: idx,
            gen: qp.gen,
        };
        match (qp.qid, &qp.directory) {
            (Some(0), Some(dir)) => {
                self.stats.current_admin_qpairs = self.stats.current_admin_qpairs.saturating_sub(1);
                if let Some(entry) = dir.remove(qp.cntlid) {
                    for r in entry.io_qpairs.values() {
                        if r.core == self.core {
                            self.to_close.push((r.index, r.gen));
                        } else {
                            let (i, g) = (r.index, r.gen);
                            reactor::send_to(r.core, move || close_qpair_msg(i, g));
                        }
                    }
                }
                tracing::info!(cntlid = qp.cntlid, peer = %qp.peer, "controller destroyed");
            }
            (Some(qid), Some(dir)) => {
                self.stats.current_io_qpairs = self.stats.current_io_qpairs.saturating_sub(1);
                let mut d = dir.lock();
                if let Some(e) = d.get_mut(&qp.cntlid) {
                    if e.io_qpairs.get(&qid) == Some(&me) {
                        e.io_qpairs.remove(&qid);
                    }
                }
            }
            _ => {}
        }
    }

    fn process_closes(&mut self) {
        while let Some((idx, gen)) = self.to_close.pop() {
            if self.qpairs.get(idx).is_some_and(|q| q.gen == gen) {
                self.close_qpair(idx);
            }
        }
    }

    // ----- polling -----

    fn poll(&mut self) -> PollStatus {
        let mut work = 0;
        // Responses completed since the last poll (mostly by the bdev poller) go out first:
        // one write request per queue pair, flushed by the group poll below.
        while let Some((idx, gen)) = self.tx_open.pop() {
            if self.qpairs.get(idx).is_some_and(|q| q.gen == gen) {
                self.submit_batch(idx);
                work += 1;
            }
        }
        let mut events = std::mem::take(&mut self.events);
        for ni in 0..self.nets.len() {
            events.clear();
            work += self.nets[ni].group.poll(EVENTS_PER_POLL, &mut events);
            for ev in events.drain(..) {
                match ev {
                    SockEvent::Readable(k) => {
                        if let Some(idx) = self.nets[ni].owners.get(k) {
                            self.on_readable(idx);
                        }
                    }
                    SockEvent::WriteDone(k, req) => {
                        if let Some(idx) = self.nets[ni].owners.get(k) {
                            self.on_write_done(idx, req);
                        }
                    }
                }
            }
        }
        self.events = events;
        if !self.to_close.is_empty() {
            work += 1;
            self.process_closes();
        }
        PollStatus::from_work(work)
    }

    fn on_timer(&mut self) -> PollStatus {
        let now = Instant::now();
        let handshake = Duration::from_millis(
            self.view
                .transport
                .as_ref()
                .map_or(TransportOpts::default().handshake_timeout_ms, |t| {
                    t.handshake_timeout_ms
                }) as u64,
        );
        let mut expired = Vec::new();
        for (idx, qp) in self.qpairs.iter() {
            let dead = match qp.state {
                QpState::Closing { deadline } => now >= deadline,
                // No IC exchange, or no Connect after it, within the handshake timeout.
                QpState::AwaitIcReq => now.duration_since(qp.created) > handshake,
                QpState::Ready if qp.qid.is_none() => now.duration_since(qp.created) > handshake,
                QpState::Ready => qp.ctrlr.as_ref().is_some_and(|c| {
                    let e = c.keep_alive_expired(now);
                    if e {
                        tracing::warn!(cntlid = c.cntlid, peer = %qp.peer, "keep-alive timeout: destroying the controller");
                    }
                    e
                }),
            };
            if dead {
                expired.push(idx);
            }
        }
        let n = expired.len();
        for idx in expired {
            self.close_qpair(idx);
        }
        self.process_closes();
        PollStatus::from_work(n)
    }

    fn on_write_done(&mut self, idx: usize, mut req: WriteRequest) {
        let failed = matches!(req.take_result(), Some(Err(_)));
        let term = req.token & TOKEN_TERM != 0;
        let Some(qp) = self.qpairs.get_mut(idx) else {
            return;
        };
        if req.token >> 1 != qp.gen {
            // A cancelled write of the connection this slot held before.
            return;
        }
        qp.writes_in_flight = qp.writes_in_flight.saturating_sub(req.chunks.len());
        req.clear(TOKEN_PLAIN);
        if qp.wr_pool.len() < 256 {
            qp.wr_pool.push(req);
        }
        if failed || term {
            self.close_qpair(idx);
        }
    }

    /// Drains the socket of a queue pair through its decoder.
    fn on_readable(&mut self, idx: usize) {
        let Some(qp) = self.qpairs.get_mut(idx) else {
            return;
        };
        if qp.closing() {
            // Discard input while the Term Req leaves.
            let mut scratch = [0u8; 512];
            if let Some(sock) = self.nets[qp.net].group.sock(qp.key) {
                loop {
                    match sock.recv(&mut scratch) {
                        Ok(0) => {
                            self.to_close.push((idx, qp.gen));
                            break;
                        }
                        Ok(_) => continue,
                        Err(_) => break,
                    }
                }
            }
            return;
        }
        if qp.rx.is_empty() {
            qp.rx = vec![0u8; RX_BUF_LEN];
        }
        let mut rx = std::mem::take(&mut qp.rx);
        let result = self.drain(idx, &mut rx);
        if let Some(qp) = self.qpairs.get_mut(idx) {
            qp.rx = rx;
        }
        match result {
            Ok(()) => {}
            Err(Fatal::Closed) => self.close_qpair(idx),
            Err(Fatal::Protocol(e)) => self.send_term_req(idx, &e),
        }
    }

    fn drain(&mut self, idx: usize, rx: &mut [u8]) -> Result<(), Fatal> {
        loop {
            // 1. Decode what is buffered.
            loop {
                let qp = &mut self.qpairs[idx];
                if qp.closing() {
                    return Ok(());
                }
                let (pos, len) = (qp.rx_pos, qp.rx_len);
                let (used, ev) = qp.dec.feed(&rx[pos..len]).map_err(Fatal::Protocol)?;
                qp.rx_pos += used;
                match ev {
                    None => break,
                    Some(ev) => self.on_event(idx, ev)?,
                }
            }
            // 2. Receive more: straight into the command buffer when inside its data.
            let qp = &mut self.qpairs[idx];
            let Some(sock) = self.nets[qp.net].group.sock(qp.key) else {
                return Err(Fatal::Closed);
            };
            let landing = if qp.dec.at_pdu_start() {
                qp.landing.plan(qp.free.len(), rx.len())
            } else {
                0
            };
            if landing > 0 {
                match qp.landing.receive(landing, sock, rx) {
                    Ok(l) if l.n == 0 => return Err(Fatal::Closed),
                    Ok(l) => {
                        self.process_landed(idx, rx, &l)?;
                        continue;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => return Err(Fatal::Closed),
                }
            }
            let pending = qp.dec.data_pending().filter(|p| p.len >= DIRECT_RECV_MIN);
            if let (Some(p), Some((slot, base))) = (pending, data_target(qp)) {
                let req = &mut qp.reqs[slot as usize];
                if let Some(buf) = req.buf.as_mut() {
                    let start = (base + p.offset) as usize;
                    let end = start + p.len as usize;
                    if end <= buf.len() {
                        let dst = &mut buf.as_mut_slice()[start..end];
                        match sock.recv(dst) {
                            Ok(0) => return Err(Fatal::Closed),
                            Ok(n) => {
                                let _ = qp.dec.data_received(&dst[..n]);
                                continue;
                            }
                            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                            Err(_) => return Err(Fatal::Closed),
                        }
                    }
                }
            }
            match sock.recv(rx) {
                Ok(0) => return Err(Fatal::Closed),
                Ok(n) => {
                    qp.rx_pos = 0;
                    qp.rx_len = n;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return Err(Fatal::Closed),
            }
        }
    }

    /// Decodes what a landing receive placed (see `landing.rs`): each speculated capsule
    /// whose header has the expected shape is decoded from its header slot, its data
    /// stays in the buffer the command took, and its digest is checked from the slot; at
    /// the first header of another shape the rest is copied back to the staging buffer in
    /// wire order and decoded from there.
    fn process_landed(&mut self, idx: usize, rx: &mut [u8], landed: &Landed) -> Result<(), Fatal> {
        let shape = landed.shape;
        let digest_len = landed.shape.pdu_len() - shape.pdo - shape.data_len;
        let mut left = landed.n;
        let qp = &mut self.qpairs[idx];
        qp.rx_pos = 0;
        qp.rx_len = 0;
        for i in 0..landed.count {
            let qp = &mut self.qpairs[idx];
            if left == 0 || qp.closing() {
                break;
            }
            let h = left.min(shape.pdo);
            if !shape.matches(&qp.landing.header_slot(i)[..h]) {
                qp.rx_len = qp.landing.linearize(landed, i, 0, rx);
                return Ok(());
            }
            // The header and data digest bytes, copied out so decoding can borrow self.
            let mut slot = [0u8; HDR_SLOT];
            let slot_len = shape.pdo + digest_len;
            slot[..slot_len].copy_from_slice(&qp.landing.header_slot(i)[..slot_len]);
            qp.landing.arm_next();
            left -= h;
            self.feed_slice(idx, &slot[..h])?;
            if h < shape.pdo {
                break;
            }
            let d = left.min(shape.data_len);
            left -= d;
            let qp = &mut self.qpairs[idx];
            match qp.landing.take_current() {
                // The command took the landed buffer: its bytes are the PDU's data.
                None => {
                    let Some((slot, _)) = data_target(qp) else {
                        return Err(Fatal::Closed);
                    };
                    let Some(buf) = qp.reqs[slot as usize].buf.as_ref() else {
                        return Err(Fatal::Closed);
                    };
                    qp.dec.data_received(&buf[..d]).map_err(|_| Fatal::Closed)?;
                    self.stats.in_capsule_landed += 1;
                }
                // Not taken (the command failed its checks, or the queue is closing): the
                // data goes through the decoder as usual.
                Some(buf) => {
                    let fed = self.feed_slice(idx, &buf[..d]);
                    self.qpairs[idx].landing.keep_spare(buf);
                    fed?;
                }
            }
            if d < shape.data_len {
                break;
            }
            let g = left.min(digest_len);
            left -= g;
            // With a digest this completes it; without, it collects the data's end.
            self.feed_slice(idx, &slot[shape.pdo..shape.pdo + g])?;
        }
        let qp = &mut self.qpairs[idx];
        qp.landing.release_all();
        qp.rx_len = landed.tail_bytes();
        Ok(())
    }

    /// Decodes `bytes` received outside the staging buffer and acts on each event.
    fn feed_slice(&mut self, idx: usize, mut bytes: &[u8]) -> Result<(), Fatal> {
        loop {
            let qp = &mut self.qpairs[idx];
            if qp.closing() {
                return Ok(());
            }
            let (used, ev) = qp.dec.feed(bytes).map_err(Fatal::Protocol)?;
            bytes = &bytes[used..];
            match ev {
                None => return Ok(()),
                Some(ev) => self.on_event(idx, ev)?,
            }
        }
    }

    fn send_term_req(&mut self, idx: usize, err: &PduError) {
        let Some(qp) = self.qpairs.get_mut(idx) else {
            return;
        };
        tracing::warn!(peer = %qp.peer, error = %err, "NVMe/TCP protocol error: sending C2HTermReq");
        let mut out = [0u8; TERM_REQ_MAX_PLEN];
        let n = encode_term_req(pdu::Role::Target, err, qp.dec.error_header(), &mut out);
        let mut w = qp.write_request(TOKEN_TERM);
        if let Some(c) = Chunk::inline(&out[..TERM_REQ_HLEN.min(n)]) {
            w.chunks.push(c);
        }
        if n > TERM_REQ_HLEN {
            if let Some(c) = Chunk::inline(&out[TERM_REQ_HLEN..n]) {
                w.chunks.push(c);
            }
        }
        qp.state = QpState::Closing {
            deadline: Instant::now() + CLOSE_LINGER,
        };
        qp.term_sent = true;
        self.stats.term_reqs_sent += 1;
        self.queue_write(idx, w);
        self.flush(idx);
    }

    /// Queues `w` on the queue pair's socket after any open batch of responses (PDUs leave
    /// in the order they were produced).
    fn queue_write(&mut self, idx: usize, w: WriteRequest) {
        self.submit_batch(idx);
        let Some(qp) = self.qpairs.get_mut(idx) else {
            return;
        };
        if let Some(sock) = self.nets[qp.net].group.sock(qp.key) {
            qp.writes_in_flight += w.chunks.len();
            sock.writev_async(w);
        }
    }

    /// Queues the open batch of responses of a queue pair on its socket.
    fn submit_batch(&mut self, idx: usize) {
        let Some(qp) = self.qpairs.get_mut(idx) else {
            return;
        };
        let Some(w) = qp.tx_batch.take() else {
            return;
        };
        if let Some(sock) = self.nets[qp.net].group.sock(qp.key) {
            qp.writes_in_flight += w.chunks.len();
            sock.writev_async(w);
        }
    }

    // ----- PDU handling -----

    fn on_event(&mut self, idx: usize, ev: RxEvent<'_>) -> Result<(), Fatal> {
        match ev {
            RxEvent::Header { header, data_len } => self.on_header(idx, header, data_len),
            RxEvent::Data { offset, bytes } => {
                let qp = &mut self.qpairs[idx];
                if let Some((slot, base)) = data_target(qp) {
                    if let Some(buf) = qp.reqs[slot as usize].buf.as_mut() {
                        let start = (base + offset) as usize;
                        let end = start + bytes.len();
                        if end <= buf.len() {
                            crate::buf::copy_bytes(&mut buf.as_mut_slice()[start..end], bytes);
                        }
                    }
                }
                Ok(())
            }
            RxEvent::DataEnd { digest_ok } => self.on_data_end(idx, digest_ok),
        }
    }

    fn on_header(&mut self, idx: usize, header: PduHeader, data_len: u32) -> Result<(), Fatal> {
        let qp = &mut self.qpairs[idx];
        let shape = match &header {
            PduHeader::CapsuleCmd(_) if data_len > 0 => Some(CapsuleShape {
                pdo: qp.dec.header_len(),
                data_len: data_len as usize,
                ddgst: qp.dec.has_data_digest(),
            }),
            _ => None,
        };
        qp.landing.observe(shape);
        match header {
            PduHeader::IcReq(req) => {
                let view = self.view.clone();
                self.on_icreq(idx, &req, &view)
            }
            PduHeader::CapsuleCmd(sqe) => {
                if qp.state != QpState::Ready {
                    return Err(Fatal::Protocol(PduError::new(
                        pdu::Fes::PDU_SEQUENCE_ERROR,
                        0,
                        "command before the IC exchange",
                    )));
                }
                let Some(slot) = qp.free.pop() else {
                    return Err(Fatal::Protocol(PduError::new(
                        pdu::Fes::PDU_SEQUENCE_ERROR,
                        0,
                        "more commands than the queue holds",
                    )));
                };
                qp.sqhd = (qp.sqhd + 1) % qp.qsize.max(1);
                let req = &mut qp.reqs[slot as usize];
                req.sqe = sqe;
                req.status = Status::SUCCESS;
                req.dw0 = 0;
                req.c2h_len = 0;
                req.received = 0;
                req.pending = 0;
                req.buf = None;
                let sgl = sqe.dptr;
                if data_len > 0 {
                    req.state = ReqState::Capsule;
                    req.xfer = data_len;
                    if !sgl.is_in_capsule() {
                        req.status = Status::SGL_DESCRIPTOR_TYPE_INVALID.with_dnr();
                    } else if sgl.address != 0 {
                        req.status = Status::SGL_OFFSET_INVALID.with_dnr();
                    } else if sgl.length != data_len {
                        req.status = Status::DATA_SGL_LENGTH_INVALID.with_dnr();
                    } else {
                        // Landed data (see `process_landed`) or a buffer to copy it into.
                        let len = data_len as usize;
                        let landed = qp.landing.take_buffer(len);
                        req.buf = Some(landed.unwrap_or_else(|| IoBuf::with_len(len)));
                    }
                    qp.cur = DataDest::Capsule(slot);
                    return Ok(());
                }
                req.state = ReqState::Executing;
                let limit = qp.opts.max_io_size.max(ADMIN_IN_CAPSULE);
                let dir = if sqe.is_fabrics() {
                    sqe.data_direction()
                } else {
                    io::direction(&sqe)
                };
                req.xfer = match dir {
                    DataDirection::None => 0,
                    _ => sgl.length.get(),
                };
                if req.xfer == 0 {
                    return self.execute(idx, slot);
                }
                if req.xfer > limit {
                    req.status = Status::DATA_SGL_LENGTH_INVALID.with_dnr();
                    return self.respond(idx, slot);
                }
                if !sgl.is_transport_data_block() {
                    req.status = if sgl.is_in_capsule() {
                        Status::DATA_SGL_LENGTH_INVALID.with_dnr()
                    } else {
                        Status::SGL_DESCRIPTOR_TYPE_INVALID.with_dnr()
                    };
                    return self.respond(idx, slot);
                }
                match dir {
                    DataDirection::HostToController => {
                        req.buf = Some(IoBuf::with_len(req.xfer as usize));
                        req.state = ReqState::AwaitH2C;
                        self.send_r2t(idx, slot);
                        Ok(())
                    }
                    DataDirection::ControllerToHost => {
                        // Admin data is built in this buffer; reads allocate at submit.
                        if qp.qid.is_none_or(|q| q == 0) {
                            req.buf = Some(IoBuf::zeroed(req.xfer as usize));
                        }
                        self.execute(idx, slot)
                    }
                    _ => {
                        req.status = Status::INVALID_FIELD.with_dnr();
                        self.respond(idx, slot)
                    }
                }
            }
            PduHeader::H2CData(h) => {
                let slot = h.ttag;
                let ok = qp
                    .reqs
                    .get(slot as usize)
                    .is_some_and(|r| r.state == ReqState::AwaitH2C);
                if !ok {
                    return Err(Fatal::Protocol(PduError::field(
                        field_off::TTAG,
                        "H2CData with an unknown transfer tag",
                    )));
                }
                let req = &qp.reqs[slot as usize];
                pdu::check_h2c_data(&h, &req.r2t, req.received).map_err(Fatal::Protocol)?;
                if h.datal != data_len {
                    return Err(Fatal::Protocol(PduError::field(
                        field_off::DATAL,
                        "H2CData DATAL differs from the PDU's data",
                    )));
                }
                qp.cur = DataDest::H2C {
                    slot,
                    base: h.datao,
                    len: data_len,
                };
                if data_len == 0 {
                    return self.on_data_end(idx, true);
                }
                Ok(())
            }
            PduHeader::H2CTermReq(t) => {
                tracing::info!(peer = %qp.peer, fes = ?t.fes, fei = t.fei, "host terminated the connection");
                Err(Fatal::Closed)
            }
            _ => Err(Fatal::Protocol(PduError::field(
                field_off::PDU_TYPE,
                "PDU type not accepted by a controller",
            ))),
        }
    }

    fn on_icreq(&mut self, idx: usize, req: &IcReq, view: &TargetView) -> Result<(), Fatal> {
        let qp = &mut self.qpairs[idx];
        if qp.state != QpState::AwaitIcReq {
            return Err(Fatal::Protocol(PduError::new(
                pdu::Fes::PDU_SEQUENCE_ERROR,
                0,
                "second ICReq",
            )));
        }
        if req.pfv != pdu::PFV_1_0 {
            return Err(Fatal::Protocol(PduError::field(
                field_off::PFV,
                "unsupported PDU format version",
            )));
        }
        let opts = view.transport.clone().unwrap_or_default();
        let params = TargetIcParams {
            cpda: 0,
            // One H2CData PDU carries at most an I/O unit (and at most 128 KiB).
            maxh2cdata: opts
                .io_unit_size
                .clamp(4096, opts.max_io_size.min(128 * 1024))
                & !3,
            max_in_capsule: opts.in_capsule_data_size.max(ADMIN_IN_CAPSULE),
            allow_hdgst: true,
            allow_ddgst: true,
        };
        let (resp, txc, rxc) = pdu::target_negotiate(req, &params);
        qp.dec.configure(rxc);
        qp.tx = txc;
        qp.maxh2cdata = resp.maxh2cdata;
        let depth = opts.max_queue_depth.max(opts.max_aq_depth) as usize;
        qp.reqs = (0..depth).map(|_| Request::new()).collect();
        qp.free = (0..depth as u16).rev().collect();
        qp.opts = opts;
        qp.state = QpState::Ready;
        let mut w = qp.write_request(TOKEN_PLAIN);
        push_header(
            &mut w.chunks,
            &PduHeader::IcResp(resp),
            0,
            &TxConfig::default(),
        );
        self.queue_write(idx, w);
        Ok(())
    }

    fn send_r2t(&mut self, idx: usize, slot: u16) {
        let qp = &mut self.qpairs[idx];
        let req = &mut qp.reqs[slot as usize];
        let r2t = R2T {
            cccid: req.sqe.cid.get(),
            ttag: slot,
            r2to: req.received,
            r2tl: (req.xfer - req.received).min(qp.maxh2cdata),
        };
        req.r2t = r2t;
        let tx = qp.tx;
        let mut w = qp.write_request(TOKEN_PLAIN);
        push_header(&mut w.chunks, &PduHeader::R2T(r2t), 0, &tx);
        self.queue_write(idx, w);
    }

    fn on_data_end(&mut self, idx: usize, digest_ok: bool) -> Result<(), Fatal> {
        let qp = &mut self.qpairs[idx];
        let cur = std::mem::replace(&mut qp.cur, DataDest::None);
        match cur {
            DataDest::None => Ok(()),
            DataDest::Capsule(slot) => {
                let req = &mut qp.reqs[slot as usize];
                if !digest_ok {
                    req.status = Status::TRANSIENT_TRANSPORT_ERROR;
                }
                if !req.status.is_success() {
                    return self.respond(idx, slot);
                }
                req.state = ReqState::Executing;
                self.execute(idx, slot)
            }
            DataDest::H2C { slot, len, .. } => {
                let req = &mut qp.reqs[slot as usize];
                req.received += len;
                if !digest_ok {
                    req.status = Status::TRANSIENT_TRANSPORT_ERROR;
                }
                if req.received < req.xfer {
                    if req.received == req.r2t.r2to + req.r2t.r2tl {
                        self.send_r2t(idx, slot);
                    }
                    return Ok(());
                }
                if !req.status.is_success() {
                    return self.respond(idx, slot);
                }
                req.state = ReqState::Executing;
                self.execute(idx, slot)
            }
        }
    }

    // ----- command execution -----

    fn execute(&mut self, idx: usize, slot: u16) -> Result<(), Fatal> {
        let qp = &mut self.qpairs[idx];
        let sqe = qp.reqs[slot as usize].sqe;
        if sqe.is_fabrics() {
            return self.fabrics(idx, slot, &sqe);
        }
        match qp.qid {
            None => {
                qp.reqs[slot as usize].status = Status::COMMAND_SEQUENCE_ERROR.with_dnr();
                self.respond(idx, slot)
            }
            Some(0) => self.admin(idx, slot, &sqe),
            Some(_) => self.io(idx, slot, &sqe),
        }
    }

    fn fabrics(&mut self, idx: usize, slot: u16, sqe: &Sqe) -> Result<(), Fatal> {
        let qp = &mut self.qpairs[idx];
        let Some(cmd) = FabricsCommand::parse(sqe) else {
            qp.reqs[slot as usize].status = Status::INVALID_OPCODE.with_dnr();
            return self.respond(idx, slot);
        };
        let (status, value) = match cmd {
            FabricsCommand::Connect(_) if qp.qid.is_some() => {
                (Status::COMMAND_SEQUENCE_ERROR.with_dnr(), 0)
            }
            FabricsCommand::Connect(c) => match self.connect(idx, slot, &c) {
                Ok(dw0) => (Status::SUCCESS, dw0 as u64),
                Err((st, dw0)) => (st, dw0 as u64),
            },
            FabricsCommand::PropertyGet(p) => match (qp.qid, qp.ctrlr.as_ref()) {
                (Some(0), Some(c)) => c.property_get(&p, &qp.opts),
                (None, _) => (Status::COMMAND_SEQUENCE_ERROR.with_dnr(), 0),
                _ => (Status::INVALID_OPCODE.with_dnr(), 0),
            },
            FabricsCommand::PropertySet(p) => match (qp.qid, qp.ctrlr.as_mut()) {
                (Some(0), Some(c)) => {
                    let (st, _) = c.property_set(&p);
                    let enabled = c.csts.rdy();
                    if let Some(dir) = &qp.directory {
                        if let Some(e) = dir.lock().get_mut(&qp.cntlid) {
                            e.enabled = enabled;
                        }
                    }
                    (st, 0)
                }
                (None, _) => (Status::COMMAND_SEQUENCE_ERROR.with_dnr(), 0),
                _ => (Status::INVALID_OPCODE.with_dnr(), 0),
            },
            FabricsCommand::Disconnect { .. } => {
                qp.state = QpState::Closing {
                    deadline: Instant::now() + CLOSE_LINGER,
                };
                (Status::SUCCESS, 0)
            }
            _ => (Status::INVALID_OPCODE.with_dnr(), 0),
        };
        let qp = &mut self.qpairs[idx];
        let req = &mut qp.reqs[slot as usize];
        req.status = status;
        req.dw0 = value as u32;
        req.c2h_len = 0;
        if let Some(c) = qp.ctrlr.as_mut() {
            c.last_keep_alive = Instant::now();
        }
        // Property Get of 8 bytes returns DW1 too.
        if let FabricsCommand::PropertyGet(p) = cmd {
            if p.size8 {
                return self.respond_with_dw1(idx, slot, (value >> 32) as u32);
            }
        }
        self.respond(idx, slot)
    }

    /// Fabrics Connect: every check of a careful target. Returns DW0 or (status, DW0).
    fn connect(
        &mut self,
        idx: usize,
        slot: u16,
        c: &wire::ConnectCmd,
    ) -> Result<u32, (Status, u32)> {
        let invalid = |in_data: bool, off: u16| {
            (
                Status::CONNECT_INVALID_PARAMETERS.with_dnr(),
                wire::connect_invalid_param_dw0(in_data, off),
            )
        };
        let view = self.view.clone();
        let core = self.core;
        let gen = self.qpairs[idx].gen;
        let qp = &mut self.qpairs[idx];
        if c.recfmt != 0 {
            return Err((Status::CONNECT_INCOMPATIBLE_FORMAT.with_dnr(), 0));
        }
        let data = qp.reqs[slot as usize]
            .buf
            .as_deref()
            .and_then(ConnectData::decode_slice)
            .ok_or((Status::DATA_SGL_LENGTH_INVALID.with_dnr(), 0))?;
        if !data.subnqn.contains(&0) {
            return Err(invalid(true, connect_off::SUBNQN));
        }
        if !data.hostnqn.contains(&0) {
            return Err(invalid(true, connect_off::HOSTNQN));
        }
        let subnqn = data
            .subnqn_str()
            .ok_or(invalid(true, connect_off::SUBNQN))?;
        let hostnqn = data
            .hostnqn_str()
            .ok_or(invalid(true, connect_off::HOSTNQN))?
            .to_string();
        let Some(opts) = view.transport.clone() else {
            return Err(invalid(true, connect_off::SUBNQN));
        };
        let Some(s) = view.by_nqn(subnqn) else {
            tracing::info!(subnqn, "Connect to an unknown subsystem");
            return Err(invalid(true, connect_off::SUBNQN));
        };
        let listener_ok = if s.is_discovery() {
            view.has_listener(&qp.listen)
        } else {
            s.has_listener(&qp.listen)
        };
        if !listener_ok {
            return Err(invalid(true, connect_off::SUBNQN));
        }
        if !s.host_allowed(&hostnqn) {
            tracing::info!(subnqn, hostnqn, "Connect from a host that is not allowed");
            return Err((
                Status::CONNECT_INVALID_HOST.with_dnr(),
                wire::connect_invalid_param_dw0(true, connect_off::HOSTNQN),
            ));
        }
        let max_depth = if c.qid == 0 {
            opts.max_aq_depth
        } else {
            opts.max_queue_depth
        };
        if c.sqsize == 0 || c.sqsize as u32 + 1 > max_depth as u32 {
            return Err(invalid(false, connect_off::SQSIZE));
        }
        let me = QpairRef {
            core,
            index: idx,
            gen,
        };
        let cntlid = if c.qid == 0 {
            if data.cntlid != wire::CNTLID_DYNAMIC {
                return Err(invalid(true, connect_off::CNTLID));
            }
            let entry = CtrlrEntry {
                admin: me,
                hostnqn: hostnqn.clone(),
                hostid: data.hostid,
                max_io_queues: opts.max_io_qpairs_per_ctrlr,
                enabled: false,
                io_qpairs: Default::default(),
                peer: qp.peer.clone(),
                listen: qp.listen.clone(),
            };
            let cntlid = s
                .directory
                .allocate(s.min_cntlid, s.max_cntlid, entry)
                .ok_or((Status::CONNECT_CONTROLLER_BUSY, 0))?;
            qp.ctrlr = Some(Box::new(Ctrlr::new(
                cntlid,
                s,
                &hostnqn,
                data.hostid,
                c.kato,
                &opts,
            )));
            self.stats.admin_qpairs += 1;
            self.stats.current_admin_qpairs += 1;
            tracing::info!(cntlid, subnqn, hostnqn, peer = %qp.peer, hdgst = qp.tx.hdgst, ddgst = qp.tx.ddgst, "controller created");
            cntlid
        } else {
            if s.is_discovery() {
                return Err(invalid(false, connect_off::QID));
            }
            let mut d = s.directory.lock();
            let e = d
                .get_mut(&data.cntlid.get())
                .ok_or(invalid(true, connect_off::CNTLID))?;
            if e.hostnqn != hostnqn {
                return Err(invalid(true, connect_off::HOSTNQN));
            }
            if e.hostid != data.hostid {
                return Err(invalid(true, connect_off::HOSTID));
            }
            if !e.enabled {
                return Err((Status::COMMAND_SEQUENCE_ERROR.with_dnr(), 0));
            }
            if c.qid > e.max_io_queues || e.io_qpairs.contains_key(&c.qid) {
                return Err(invalid(false, connect_off::QID));
            }
            e.io_qpairs.insert(c.qid, me);
            self.stats.io_qpairs += 1;
            self.stats.current_io_qpairs += 1;
            data.cntlid.get()
        };
        qp.qid = Some(c.qid);
        qp.qsize = c.sqsize + 1;
        // The Connect itself was the first entry of the queue.
        qp.sqhd = 1 % qp.qsize;
        qp.sq_flow_disabled = c.cattr & 0x4 != 0;
        qp.subsys_id = s.id;
        qp.cntlid = cntlid;
        qp.directory = Some(s.directory.clone());
        let mut rx = *qp.dec.config();
        rx.max_in_capsule = if c.qid == 0 {
            ADMIN_IN_CAPSULE
        } else {
            opts.in_capsule_data_size
        };
        qp.dec.configure(rx);
        qp.opts = opts;
        Ok(wire::connect_success_dw0(cntlid))
    }

    fn admin(&mut self, idx: usize, slot: u16, sqe: &Sqe) -> Result<(), Fatal> {
        let view = self.view.clone();
        let qp = &mut self.qpairs[idx];
        let Some(subsys) = view.subsystem(qp.subsys_id).cloned() else {
            qp.reqs[slot as usize].status = Status::INTERNAL_ERROR;
            return self.respond(idx, slot);
        };
        let Some(ctrlr) = qp.ctrlr.as_mut() else {
            qp.reqs[slot as usize].status = Status::COMMAND_SEQUENCE_ERROR.with_dnr();
            return self.respond(idx, slot);
        };
        let env = AdminEnv {
            view: &view,
            subsys: &subsys,
            opts: &qp.opts,
        };
        let req = &mut qp.reqs[slot as usize];
        let mut empty: [u8; 0] = [];
        let out: &mut [u8] = match req.buf.as_mut() {
            Some(b) => b.as_mut_slice(),
            None => &mut empty,
        };
        let outcome = ctrlr.admin(sqe, out, &env);
        match outcome {
            AdminOutcome::Complete {
                status,
                dw0,
                data_len,
            } => {
                req.status = status;
                req.dw0 = dw0;
                req.c2h_len = if status.is_success() { data_len } else { 0 };
                if !status.is_success() {
                    ctrlr.record_error(0, sqe.cid.get(), status, sqe.nsid.get());
                }
                if status.is_success()
                    && sqe.opcode == admin_opc::SET_FEATURES
                    && sqe.cdw10.get() as u8 == feat::NUMBER_OF_QUEUES
                {
                    if let Some(e) = subsys.directory.lock().get_mut(&qp.cntlid) {
                        e.max_io_queues = ctrlr.io_queues;
                    }
                }
                self.respond(idx, slot)
            }
            AdminOutcome::KeepAer => {
                req.state = ReqState::Aer;
                ctrlr.aers.push_back(slot);
                if let Some(dw0) = ctrlr.take_event() {
                    self.complete_aer(idx, dw0);
                }
                Ok(())
            }
            AdminOutcome::Abort { sqid, cid } => {
                // Best effort: only a pending AER on this admin queue can be aborted.
                let mut aborted = None;
                if sqid == 0 {
                    if let Some(pos) = ctrlr
                        .aers
                        .iter()
                        .position(|s| qp.reqs[*s as usize].sqe.cid == cid)
                    {
                        aborted = ctrlr.aers.remove(pos);
                    }
                }
                let req = &mut qp.reqs[slot as usize];
                req.status = Status::SUCCESS;
                req.dw0 = if aborted.is_some() { 0 } else { 1 };
                self.respond(idx, slot)?;
                if let Some(a) = aborted {
                    self.qpairs[idx].reqs[a as usize].status = Status::ABORTED_BY_REQUEST;
                    self.respond(idx, a)?;
                }
                Ok(())
            }
            AdminOutcome::Smart { offset, len } => {
                req.state = ReqState::Executing;
                let bdevs: Vec<BdevHandle> = subsys
                    .namespaces
                    .values()
                    .filter(|ns| sqe.nsid == 0 || sqe.nsid == u32::MAX || sqe.nsid == ns.nsid)
                    .map(|ns| ns.bdev.clone())
                    .collect();
                let (core, gen) = (self.core, qp.gen);
                reactor::send_to(reactor::main_core(), move || {
                    gather_iostat(bdevs, move |stats| {
                        reactor::send_to(core, move || {
                            let _ = try_group(|g| {
                                g.complete_smart(idx, gen, slot, &stats, offset, len)
                            });
                        })
                    })
                });
                Ok(())
            }
        }
    }

    fn complete_smart(
        &mut self,
        idx: usize,
        gen: u64,
        slot: u16,
        stats: &IoStats,
        offset: u64,
        len: usize,
    ) {
        let Some(qp) = self.qpairs.get_mut(idx).filter(|q| q.gen == gen) else {
            return;
        };
        let req = &mut qp.reqs[slot as usize];
        if req.state != ReqState::Executing {
            return;
        }
        let mut empty: [u8; 0] = [];
        let out: &mut [u8] = match req.buf.as_mut() {
            Some(b) => b.as_mut_slice(),
            None => &mut empty,
        };
        if let AdminOutcome::Complete {
            status, data_len, ..
        } = ctrlr::fill_smart(stats, offset, len.min(out.len()), out)
        {
            req.status = status;
            req.c2h_len = data_len;
        }
        let _ = self.respond(idx, slot);
        self.flush(idx);
    }

    /// Completes the oldest pending AER with `dw0`.
    fn complete_aer(&mut self, idx: usize, dw0: u32) {
        let qp = &mut self.qpairs[idx];
        let Some(slot) = qp.ctrlr.as_mut().and_then(|c| c.aers.pop_front()) else {
            return;
        };
        let req = &mut qp.reqs[slot as usize];
        req.status = Status::SUCCESS;
        req.dw0 = dw0;
        req.c2h_len = 0;
        let _ = self.respond(idx, slot);
    }

    fn io(&mut self, idx: usize, slot: u16, sqe: &Sqe) -> Result<(), Fatal> {
        let qp = &mut self.qpairs[idx];
        let token = io_token(idx, qp.gen, slot);
        let max_io = qp.opts.max_io_size;
        let qp_ddgst = qp.tx.ddgst;
        let chan = self.ns.get(&(qp.subsys_id, sqe.nsid.get()));
        let geom = chan.map(NsChan::geometry);
        let req = &mut qp.reqs[slot as usize];
        let data: &[u8] = req.buf.as_deref().unwrap_or(&[]);
        let plan = io::plan(sqe, geom.as_ref(), req.xfer, max_io, data);
        let plan = match plan {
            Ok(p) => p,
            Err(st) => {
                req.status = st;
                return self.respond(idx, slot);
            }
        };
        let Some(chan) = chan else {
            return self.respond(idx, slot);
        };
        let mut bio = req
            .io
            .take()
            .unwrap_or_else(|| BdevIo::new(IoType::Read, 0, 0));
        bio.bufs.clear();
        bio.token = token;
        req.state = ReqState::Executing;
        match plan {
            IoPlan::Nothing => {
                req.io = Some(bio);
                return self.respond(idx, slot);
            }
            IoPlan::Read {
                offset_blocks,
                num_blocks,
                len,
            } => {
                bio.reset_to(IoType::Read, offset_blocks, num_blocks);
                bio.bufs.push(IoBuf::with_len(len));
                // Without a data digest the data can be sent straight from a bdev's memory
                // (a digest would have to read memory a concurrent write may change).
                bio.accept_shared = !qp_ddgst;
                req.c2h_len = len;
            }
            IoPlan::Write {
                offset_blocks,
                num_blocks,
                len,
            } => {
                bio.reset_to(IoType::Write, offset_blocks, num_blocks);
                let Some(mut buf) = req.buf.take() else {
                    req.status = Status::INTERNAL_ERROR;
                    req.io = Some(bio);
                    return self.respond(idx, slot);
                };
                buf.set_len(len);
                bio.bufs.push(buf);
            }
            IoPlan::Flush => bio.reset_to(IoType::Flush, 0, 0),
            IoPlan::WriteZeroes {
                offset_blocks,
                num_blocks,
            } => bio.reset_to(IoType::WriteZeroes, offset_blocks, num_blocks),
            IoPlan::Unmap(ranges) => {
                req.pending = ranges.len() as u32;
                req.io = Some(bio);
                self.stats.pending_bdev_io += ranges.len() as u64;
                for (off, n) in ranges {
                    chan.chan
                        .submit(BdevIo::new(IoType::Unmap, off, n).with_token(token));
                }
                return Ok(());
            }
        }
        req.pending = 1;
        self.stats.pending_bdev_io += 1;
        chan.chan.submit(bio);
        Ok(())
    }

    fn io_done(&mut self, mut bio: BdevIo) {
        self.stats.pending_bdev_io = self.stats.pending_bdev_io.saturating_sub(1);
        let (idx, gen, slot) = split_token(bio.token);
        let Some(qp) = self
            .qpairs
            .get_mut(idx)
            .filter(|q| q.gen & 0xfff_ffff == gen)
        else {
            return;
        };
        let Some(req) = qp.reqs.get_mut(slot as usize) else {
            return;
        };
        if req.state != ReqState::Executing || req.pending == 0 {
            return;
        }
        req.pending -= 1;
        let st = bio.status();
        if !st.is_success() && req.status.is_success() {
            req.status = io::status_of(st);
        }
        if bio.io_type == IoType::Read && st.is_success() {
            req.buf = bio.bufs.pop();
            req.shared = bio.shared.take();
        }
        bio.shared = None;
        bio.bufs.clear();
        if req.io.is_none() {
            req.io = Some(bio);
        }
        if req.pending == 0 {
            self.stats.completed_nvme_io += 1;
            let _ = self.respond(idx, slot);
        }
    }

    fn respond_with_dw1(&mut self, idx: usize, slot: u16, dw1: u32) -> Result<(), Fatal> {
        self.send_response(idx, slot, dw1);
        Ok(())
    }

    fn respond(&mut self, idx: usize, slot: u16) -> Result<(), Fatal> {
        self.send_response(idx, slot, 0);
        Ok(())
    }

    /// Sends the completion of `slot` (C2HData and/or CapsuleResp) and frees the slot.
    fn send_response(&mut self, idx: usize, slot: u16, dw1: u32) {
        let Some(qp) = self.qpairs.get_mut(idx) else {
            return;
        };
        if qp.term_sent {
            // Commands completing after a Term Req are dropped with the connection.
            qp.free_slot(slot);
            return;
        }
        let closing = qp.closing();
        let tx = qp.tx;
        let qid = qp.qid.unwrap_or(0);
        let sqhd = qp.sqhd;
        let c2h_success_ok = qp.opts.c2h_success && qp.sq_flow_disabled;
        // Responses are appended to one open batch per queue pair, queued on the socket by
        // the next poll (or once full): one write request, one completion and one pool round
        // trip per batch instead of per command.
        let opened = qp.tx_batch.is_none();
        let mut w = match qp.tx_batch.take() {
            Some(w) => w,
            None => qp.write_request(TOKEN_PLAIN),
        };
        let req = &mut qp.reqs[slot as usize];
        let mut cqe = Cqe {
            dw0: req.dw0.into(),
            dw1: dw1.into(),
            sqhd: sqhd.into(),
            sqid: qid.into(),
            cid: req.sqe.cid,
            sf: U16::ZERO,
        };
        cqe.set_status(req.status);
        let mut need_resp = true;
        if req.status.is_success() && req.c2h_len > 0 {
            if let Some(buf) = req.buf.take() {
                let len = req.c2h_len.min(buf.len());
                let success = c2h_success_ok && cqe.dw0 == 0 && dw1 == 0;
                let hdr = PduHeader::C2HData(C2HData {
                    cccid: cqe.cid.get(),
                    datao: 0,
                    datal: len as u32,
                    last: true,
                    success,
                });
                if let Some(enc) = push_header(&mut w.chunks, &hdr, len as u32, &tx) {
                    // A zero-copy read is only asked for without a data digest (see `io`).
                    let shared = req.shared.take();
                    let digest =
                        (enc.data_digest && shared.is_none()).then(|| digest_of(&[&buf[..len]]));
                    match shared {
                        Some(r) => {
                            drop(buf);
                            w.chunks.push(Chunk::Shared {
                                mem: r.mem,
                                off: r.off,
                                len: len.min(r.len),
                            });
                        }
                        None => w.chunks.push(Chunk::Buf { buf, off: 0, len }),
                    }
                    if let Some(d) = digest.and_then(|d| Chunk::inline(&d)) {
                        w.chunks.push(d);
                    }
                    need_resp = !success;
                }
            }
        }
        if need_resp {
            push_header(&mut w.chunks, &PduHeader::CapsuleResp(cqe), 0, &tx);
        }
        qp.free_slot(slot);
        if qp.writes_in_flight > MAX_CHUNKS_PER_SLOT * qp.reqs.len() + 48 {
            // The host keeps sending commands but does not read the answers.
            tracing::warn!(peer = %qp.peer, "host does not read its completions: closing");
            self.to_close.push((idx, qp.gen));
        }
        let disconnect = closing && cqe.status().is_success();
        if disconnect {
            // Disconnect: answer, then close once it left.
            w.token |= TOKEN_TERM;
        }
        let full = w.chunks.len() >= BATCH_MAX_CHUNKS;
        let gen = qp.gen;
        qp.tx_batch = Some(w);
        if disconnect || full {
            self.submit_batch(idx);
        } else if opened {
            self.tx_open.push((idx, gen));
        }
    }

    fn flush(&mut self, idx: usize) {
        if let Some(qp) = self.qpairs.get(idx) {
            if let Some(sock) = self.nets[qp.net].group.sock(qp.key) {
                let _ = sock.flush();
            }
        }
    }

    // ----- configuration changes -----

    fn apply_view(&mut self, view: Arc<TargetView>) {
        if view.version <= self.view.version {
            return;
        }
        let old = std::mem::replace(&mut self.view, view.clone());
        // Namespace channels: open the new ones, close the ones gone or re-pointed.
        let mut wanted: HashMap<(u64, u32), &BdevHandle> = HashMap::new();
        for s in &view.subsystems {
            for ns in s.namespaces.values() {
                wanted.insert((s.id, ns.nsid), &ns.bdev);
            }
        }
        self.ns
            .retain(|k, c| wanted.get(k).is_some_and(|b| Arc::ptr_eq(b, &c.bdev)));
        for (k, b) in wanted {
            if self.ns.contains_key(&k) {
                continue;
            }
            let key = k;
            let desc = bdev::open_handle(b, move |ev| {
                if ev == BdevEvent::Remove {
                    reactor::defer(move || {
                        let _ = try_group(|g| g.ns.remove(&key));
                    });
                }
            });
            let opened = desc.and_then(|d| d.open_channel(self.sink.clone()).map(|c| (d, c)));
            match opened {
                Ok((d, chan)) => {
                    self.ns.insert(
                        k,
                        NsChan {
                            bdev: b.clone(),
                            chan,
                            _desc: d,
                        },
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, bdev = b.name(), "cannot open a namespace's bdev")
                }
            }
        }
        // Queues whose subsystem or listener went away are closed; controllers hear of
        // namespace changes.
        let mut close = Vec::new();
        let mut aens: Vec<(usize, u32)> = Vec::new();
        for (idx, qp) in self.qpairs.iter_mut() {
            let Some(_) = qp.qid else { continue };
            let Some(s) = view.subsystem(qp.subsys_id) else {
                close.push(idx);
                continue;
            };
            let listening = if s.is_discovery() {
                view.has_listener(&qp.listen)
            } else {
                s.has_listener(&qp.listen)
            };
            if !listening {
                close.push(idx);
                continue;
            }
            let Some(c) = qp.ctrlr.as_mut() else { continue };
            if !s.host_allowed(&c.hostnqn) {
                close.push(idx);
                continue;
            }
            if c.discovery {
                if view.genctr != old.genctr {
                    if let Some(dw0) = c.discovery_changed() {
                        aens.push((idx, dw0));
                    }
                }
                continue;
            }
            let changed = changed_namespaces(old.subsystem(s.id).map(|o| o.as_ref()), s);
            if !changed.is_empty() {
                if let Some(dw0) = c.namespaces_changed(&changed) {
                    aens.push((idx, dw0));
                }
            }
        }
        for (idx, dw0) in aens {
            self.complete_aer(idx, dw0);
            self.flush(idx);
        }
        for idx in close {
            tracing::info!(
                idx,
                "closing a queue pair: its subsystem or listener was removed"
            );
            self.close_qpair(idx);
        }
        self.process_closes();
    }

    fn stats_json(&self) -> Value {
        let s = &self.stats;
        json!({
            "name": format!("nvmf_tgt_poll_group_{}", self.core),
            "admin_qpairs": s.admin_qpairs,
            "io_qpairs": s.io_qpairs,
            "current_admin_qpairs": s.current_admin_qpairs,
            "current_io_qpairs": s.current_io_qpairs,
            "pending_bdev_io": s.pending_bdev_io,
            "completed_nvme_io": s.completed_nvme_io,
            "transports": [{
                "trtype": "TCP",
                "connections": s.connections,
                "open_connections": self.qpairs.len(),
                "term_reqs_sent": s.term_reqs_sent,
                "in_capsule_landed": s.in_capsule_landed,
            }],
        })
    }

    fn shutdown(&mut self) {
        let all: Vec<usize> = self.qpairs.iter().map(|(i, _)| i).collect();
        for idx in all {
            self.close_qpair(idx);
        }
        self.process_closes();
        self.ns.clear();
        for p in self.pollers.drain(..) {
            p.unregister();
        }
    }
}

/// What ended the processing of a queue's input.
enum Fatal {
    /// The peer closed or the socket failed.
    Closed,
    /// A protocol violation: Term Req, then close.
    Protocol(PduError),
}

/// The slot and base offset the current PDU's data lands in.
fn data_target(qp: &Qpair) -> Option<(u16, u32)> {
    match qp.cur {
        DataDest::Capsule(slot) => Some((slot, 0)),
        DataDest::H2C { slot, base, .. } => Some((slot, base)),
        DataDest::None => None,
    }
}

/// nsids added, removed or re-pointed between two snapshots of a subsystem.
fn changed_namespaces(
    old: Option<&super::subsystem::Subsystem>,
    new: &super::subsystem::Subsystem,
) -> Vec<u32> {
    let Some(old) = old else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (nsid, ns) in &new.namespaces {
        match old.namespaces.get(nsid) {
            Some(o) if Arc::ptr_eq(&o.bdev, &ns.bdev) => {}
            _ => out.push(*nsid),
        }
    }
    for nsid in old.namespaces.keys() {
        if !new.namespaces.contains_key(nsid) {
            out.push(*nsid);
        }
    }
    out
}

/// Merges the iostat of `bdevs` from every reactor (main reactor), then calls `done`.
fn gather_iostat(bdevs: Vec<BdevHandle>, done: impl FnOnce(IoStats) + Send + 'static) {
    let mut total = IoStats::new();
    for b in &bdevs {
        bdev::collect_closed_stats(b, &mut total);
    }
    let total = Arc::new(Mutex::new(total));
    let each_total = total.clone();
    let bdevs = Arc::new(bdevs);
    reactor::for_each_reactor(
        move || {
            let mut t = each_total.lock().unwrap_or_else(|e| e.into_inner());
            for b in bdevs.iter() {
                bdev::collect_local_stats(b, &mut t);
            }
        },
        move || {
            let t = total.lock().unwrap_or_else(|e| e.into_inner()).clone();
            done(t)
        },
    );
}

// ---------------------------------------------------------------------------------------
// Entry points (run on the reactor they concern)
// ---------------------------------------------------------------------------------------

/// A new connection for this reactor's poll group.
pub fn add_connection(sock: Box<dyn Sock>, listen: ListenAddr) {
    with_group(|g| g.add_connection(sock, listen));
}

/// A new snapshot of the target for this reactor.
pub fn apply_view(view: Arc<TargetView>) {
    with_group(|g| g.apply_view(view));
}

/// Closes a queue pair of this reactor (controller teardown from another reactor).
pub fn close_qpair_msg(index: usize, gen: u64) {
    let _ = try_group(|g| {
        if g.qpairs.get(index).is_some_and(|q| q.gen == gen) {
            g.close_qpair(index);
            g.process_closes();
        }
    });
}

/// This reactor's poll group statistics (SPDK's `nvmf_get_stats` entry).
pub fn group_stats() -> Option<Value> {
    try_group(|g| g.stats_json())
}

/// Closes every connection and channel of this reactor (application shutdown).
pub fn shutdown_group() {
    let _ = try_group(|g| g.shutdown());
    GROUP.with(|g| {
        if let Ok(mut g) = g.try_borrow_mut() {
            *g = None;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_tokens_round_trip() {
        let t = io_token(12345, 0x123_4567_89ab, 77);
        assert_eq!(split_token(t), (12345, 0x3_4567_89ab & 0xfff_ffff, 77));
        let t = io_token(0, 1, 0);
        assert_eq!(split_token(t), (0, 1, 0));
    }
}
