//! The NVMe/TCP transport: one poll group per reactor around each queue pair's protocol machine.
//!
//! The files: this one holds the state (requests, queue pairs, the poll group), accepting
//! and closing connections, polling and the timer; `machine.rs` is the queue pair's PDU
//! protocol as a state machine (IC exchange, capsules, R2T/H2CData, the request slots and SQ
//! head: decoder events in, actions out, unit-tested without sockets), `actions.rs` the shell
//! that feeds it and carries its actions out, `rx.rs` receives, `connect.rs` the fabrics
//! commands, `dispatch.rs` admin and I/O execution, `fused.rs` fused pairs, `reserve.rs`
//! reservations, `auth.rs` DH-HMAC-CHAP, `tls.rs` the TLS identity, `tx.rs` responses and
//! Term Reqs, `view.rs` configuration changes.
//!
//! A poll group (thread-local on its reactor) owns a `SockGroup` per socket implementation,
//! the queue pairs whose sockets the acceptor handed to this reactor, the reactor's snapshot
//! of the target ([`TargetView`]) and one bdev `IoChannel` per namespace in use here (see
//! `view.rs`). A queue pair goes
//! through `AwaitIcReq` (ICReq → ICResp with the negotiated digests, CPDA 0 and
//! MAXH2CDATA) to `Ready`, where capsules are decoded incrementally: each command takes a
//! slot of the queue's request pool (sized by the transport's queue depths, allocated once),
//! its in-capsule data or R2T-solicited H2CData lands in an `IoBuf` (copied from the 64 KiB
//! staging receive, received straight from the socket when the rest of a PDU's data is at
//! least that long, or, for a stream of same-shaped in-capsule writes, landed by the receive
//! itself in the buffer the bdev writes from: see `rx_landing.rs`), and it is executed: fabrics
//! commands (Connect with every check, Property Get/Set, Disconnect) here, admin commands
//! by the controller the admin queue owns (`target_ctrlr.rs`), I/O commands on the bdev channel
//! (`io.rs`). Completions answer with C2HData (SUCCESS flag when c2h_success and SQ flow
//! control is off) and/or a CapsuleResp carrying the SQ head, built into reused
//! `WriteRequest`s with owned chunks. A protocol violation answers a C2HTermReq with the
//! decoder's FES/FEI and closes the queue. A timer checks keep-alive timeouts (tearing the
//! controller and all its queues down, also on other reactors by message), closing queues
//! and stalled handshakes. The steady-state path allocates nothing: requests, write
//! requests and bdev I/O objects are reused and buffers come from the `IoBuf` cache.

use self::rx_landing::{CapsuleShape, Landed, Landing, HDR_SLOT};
use self::view::gather_iostat;
use super::digest::digest_of;
use super::io::{self, IoPlan, NsGeometry};
use super::pdu::{
    self, encode_term_req, C2HData, EncodedHeader, PduDecoder, PduError, PduHeader, RxEvent,
    TxConfig, R2T, TERM_REQ_HLEN, TERM_REQ_MAX_PLEN,
};
use super::subsystem::{CtrlrEntry, Directory, ListenAddr, QpairRef};
use super::target::{TargetView, TransportOpts};
use super::target_ctrlr::{self as ctrlr, AdminEnv, AdminOutcome, Ctrlr};
use super::wire::{
    self, admin_opc, connect_off, feat, ConnectData, Cqe, FabricsCommand, Sqe, Status,
};
use crate::bdev::iostat::IoStats;
use crate::bdev::{self, BdevEvent, BdevHandle, BdevIo, IoChannel, IoSink, IoType, SharedRange};
use crate::buf::Chunk;
use crate::buf::IoBuf;
use crate::reactor::{self, PollStatus, PollerHandle};
use crate::sock::{self, Sock, SockEvent, SockGroup, SockKey, WriteRequest};
use serde_json::{json, Value};
use slab::Slab;
use std::cell::RefCell;
use std::collections::HashMap;
use std::io::ErrorKind;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zerocopy::little_endian::U16;

mod actions;
mod auth;
mod connect;
mod dispatch;
mod fused;
mod machine;
use self::machine::{Action, QpState, QueueMachine};
mod reserve;
pub use reserve::{drain_hosts, reservation_notice};
mod rx;
mod rx_landing;
mod tls;
mod tx;
mod view;
pub use self::tls::TargetPskLookup;

/// Bytes a queue pair receives at once into its staging buffer (headers and data of many
/// PDUs per system call; allocated on the first receive). At least the posix sock's receive
/// pipe (64 KiB), so receives bypass the pipe instead of being copied through it, and room
/// for a queue depth of 32 in-capsule 4 KiB writes (see `rx_landing.rs`).
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

/// Where the command of a request slot is: receiving its data (decided by `machine.rs`),
/// then executing as the shell runs it.
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
    /// Half of a fused pair, ready, waiting for the other half (see `fused.rs`).
    AwaitFused,
}

/// A request slot of a queue pair: its command, data and completion (the slots belong to
/// the queue's protocol machine, which takes and frees them; the shell executes them).
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
    /// Its part in a fused operation (see `fused.rs`).
    fused: fused::Fused,
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
            fused: fused::Fused::None,
        }
    }

    /// Takes a new command: its SQE, with what the slot's last command left cleared.
    fn start(&mut self, sqe: Sqe) {
        self.sqe = sqe;
        self.status = Status::SUCCESS;
        self.dw0 = 0;
        self.c2h_len = 0;
        self.received = 0;
        self.pending = 0;
        self.buf = None;
        self.fused = fused::Fused::None;
    }
}

struct Qpair {
    gen: u64,
    net: usize,
    key: SockKey,
    peer: String,
    listen: ListenAddr,
    created: Instant,
    dec: PduDecoder,
    /// The protocol state (see `machine.rs`).
    machine: QueueMachine,
    rx: Vec<u8>,
    rx_pos: usize,
    rx_len: usize,
    wr_pool: Vec<WriteRequest>,
    qid: Option<u16>,
    sq_flow_disabled: bool,
    subsys_id: u64,
    cntlid: u16,
    /// The host NQN its Connect named (namespace visibility is per host).
    hostnqn: Option<Arc<str>>,
    /// The host identifier its Connect named (reservations are per host).
    hostid: [u8; 16],
    directory: Option<Arc<Directory>>,
    /// The ANA states of this queue's path (`None`: the subsystem does not report ANA).
    ana: Option<Arc<crate::nvmf::ana::ListenerAna>>,
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
    /// DH-HMAC-CHAP state of the queue (see `auth.rs`).
    auth: auth::QpAuth,
    /// The last command received, if it was the first of a fused pair: the next one
    /// decides whether it is paired (see `fused.rs`).
    fused_first: Option<u16>,
}

impl Qpair {
    fn new(gen: u64, net: usize, key: SockKey, peer: String, listen: ListenAddr) -> Self {
        Self {
            gen,
            net,
            key,
            peer,
            listen,
            created: Instant::now(),
            dec: PduDecoder::new(pdu::Role::Target),
            machine: QueueMachine::new(),
            rx: Vec::new(),
            rx_pos: 0,
            rx_len: 0,
            wr_pool: Vec::new(),
            qid: None,
            sq_flow_disabled: false,
            subsys_id: 0,
            cntlid: 0,
            hostnqn: None,
            hostid: [0; 16],
            directory: None,
            ana: None,
            ctrlr: None,
            opts: TransportOpts::default(),
            writes_in_flight: 0,
            tx_batch: None,
            auth: auth::QpAuth::NotRequired,
            term_sent: false,
            landing: Landing::default(),
            fused_first: None,
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
    /// The hosts that see the namespace (`None`: all), as of the current view.
    visible_hosts: Option<Arc<std::collections::BTreeSet<String>>>,
    /// The namespace's ANA group, as of the current view.
    anagrpid: u32,
    /// The namespace's reservations, as of the current view.
    reservations: Arc<super::reservation::Reservations>,
}

impl NsChan {
    /// Whether the host of a queue (`None` before its Connect) may do I/O here.
    fn visible_to(&self, hostnqn: Option<&str>) -> bool {
        match &self.visible_hosts {
            None => true,
            Some(hosts) => hostnqn.is_some_and(|h| hosts.contains(h)),
        }
    }

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
    /// PDUs whose header digest did not match (each answered with a Term Req).
    hdr_digest_errors: u64,
    /// Data PDUs whose data digest did not match (the command fails with a transient
    /// transport error).
    data_digest_errors: u64,
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
    /// Connected queues per subsystem id (see `view.rs`).
    users: HashMap<u64, view::SubUsers>,
    sink: Rc<dyn IoSink>,
    events: Vec<SockEvent>,
    to_close: Vec<(usize, u64)>,
    /// Queue pairs (index, generation) with an open batch of responses.
    tx_open: Vec<(usize, u64)>,
    stats: GroupStats,
    pollers: Vec<PollerHandle>,
    /// Preempt-and-Abort barriers waiting for bdev I/O of preempted hosts (`reserve.rs`).
    drains: Vec<reserve::Drain>,
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
            users: HashMap::new(),
            sink: Rc::new(GroupSink),
            events: Vec::with_capacity(EVENTS_PER_POLL * 2),
            to_close: Vec::new(),
            tx_open: Vec::new(),
            drains: Vec::new(),
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
        if let Some(qid) = qp.qid {
            self.detach_qpair(idx, qp.subsys_id, qid);
        }
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
            let dead = match qp.machine.state() {
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

    // ----- statistics and shutdown (the protocol is in machine.rs, carried out by
    // actions.rs, rx.rs, tx.rs, connect.rs, dispatch.rs; configuration changes in view.rs) -----

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
                "hdr_digest_errors": s.hdr_digest_errors,
                "data_digest_errors": s.data_digest_errors,
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
        self.users.clear();
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

// ---------------------------------------------------------------------------------------
// Entry points (run on the reactor they concern)
// ---------------------------------------------------------------------------------------

/// A new connection for this reactor's poll group.
pub fn add_connection(sock: Box<dyn Sock>, listen: ListenAddr) {
    with_group(|g| g.add_connection(sock, listen));
}

/// A new snapshot of the target for this reactor.
pub fn apply_view(view: Arc<TargetView>) {
    tls::set_view(&view);
    with_group(|g| g.apply_view(view));
}

/// A namespace channel's key: (subsystem id, nsid).
pub type NsKey = (u64, u32);

/// This reactor's snapshot of the target and the namespace channels it has open, if it has
/// a poll group (tests, inspection).
pub fn local_view() -> Option<(Arc<TargetView>, Vec<NsKey>)> {
    try_group(|g| {
        let mut chans: Vec<NsKey> = g.ns.keys().copied().collect();
        chans.sort_unstable();
        (g.view().clone(), chans)
    })
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
