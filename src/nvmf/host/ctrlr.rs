//! The host side's controller: an admin queue pair plus optional I/O queues on one reactor.
//!
//! The host's controller: an admin [`Qpair`] plus optional I/O queues, all on the current
//! reactor and polled by one active poller of this module. `Controller::connect` runs the
//! bring-up as a chain of admin commands (fabrics Connect inside the queue, Property Get CAP
//! and VS, Property Set CC with EN=1, Property Get CSTS until RDY, Identify Controller, Set
//! Features Number of Queues, then the I/O queues' own Connects) and hands back the
//! controller or the first error. Afterwards commands are submitted with a callback (one
//! boxed closure per command: this is the convenience path; `pollux-perf` drives raw
//! `Qpair`s instead), NVMe error statuses become [`HostError::Nvme`], and Keep Alive is sent
//! every KATO/2 by a timed poller. `shutdown` sets CC.SHN, waits (bounded) for CSTS.SHST and
//! closes every queue.

use super::qpair::{Completion, DataBuf, Qpair, QpairConfig, Request};
use super::{HostError, TransportId};
use crate::buf::IoBuf;
use crate::nvmf::wire::{
    admin_opc, cns, feat, io_opc, log_id, num_queues_from_value, num_queues_value, prop, shutdown,
    Cap, Cc, Csts, DiscoveryLogEntry, DiscoveryLogHeader, DsmRange, FabricsCommand, FeaturesCmd,
    GetLogPageCmd, IdentifyCmd, IdentifyController, IdentifyNamespace, PropertyGetCmd,
    PropertySetCmd, SglDescriptor, Sqe, Version, DISCOVERY_NQN,
};
use crate::reactor::{self, PollStatus, PollerHandle};
use slab::Slab;
use std::cell::RefCell;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};
use zerocopy::IntoBytes;

/// How to connect.
#[derive(Debug, Clone)]
pub struct ConnectOpts {
    /// Host NQN (default: a random `nqn.2014-08.org.nvmexpress:uuid:` one per process).
    pub hostnqn: Option<String>,
    /// Host identifier sent in Connect (default: the process's random one). Reservations
    /// are per host identifier.
    pub hostid: Option<[u8; 16]>,
    pub hdgst: bool,
    pub ddgst: bool,
    /// Sock impl by name; `None` is the default impl.
    pub sock_impl: Option<String>,
    /// I/O queues this controller connects on its own reactor.
    pub io_queues: u16,
    /// I/O queues asked for with Set Features Number of Queues (0: `io_queues`). Tools that
    /// connect queues on other reactors (pollux-perf) ask for them here.
    pub request_io_queues: u16,
    /// Depth of each I/O queue.
    pub queue_depth: u16,
    pub admin_depth: u16,
    /// Keep Alive timeout (ms); keep alives are sent every half of it. 0: none.
    pub kato_ms: u32,
    /// Largest data transfer of one command.
    pub max_transfer: u32,
    /// Bound of the bring-up and of each blocking call of [`super::SyncController`].
    pub timeout: Duration,
    /// DH-HMAC-CHAP secrets for a subsystem that requires authentication (every queue).
    pub dhchap: Option<super::DhchapOpts>,
    /// TLS with a PSK on every queue (the `ssl` sock impl).
    pub tls: Option<super::qpair::HostTls>,
}

impl Default for ConnectOpts {
    fn default() -> Self {
        Self {
            hostnqn: None,
            hostid: None,
            hdgst: false,
            ddgst: false,
            sock_impl: None,
            io_queues: 1,
            request_io_queues: 0,
            queue_depth: 128,
            admin_depth: 32,
            kato_ms: 10_000,
            max_transfer: 128 * 1024,
            timeout: Duration::from_secs(10),
            dhchap: None,
            tls: None,
        }
    }
}

/// What bring-up learned about the controller.
#[derive(Debug, Clone)]
pub struct ControllerInfo {
    pub cntlid: u16,
    pub cap: Cap,
    pub vs: Version,
    pub identify: IdentifyController,
    /// I/O queues the controller granted (Number of Queues, 1-based); 0 for discovery.
    pub io_queues_granted: u16,
    /// In-capsule data the I/O queues accept (from IOCCSZ).
    pub io_in_capsule: u32,
    /// Largest transfer (MDTS, bounded by the connect option).
    pub max_transfer: u32,
    pub hostnqn: String,
    pub hostid: [u8; 16],
    pub is_discovery: bool,
    /// Header and data digests as negotiated on the admin queue.
    pub hdgst: bool,
    pub ddgst: bool,
    /// The controller's MAXH2CDATA.
    pub maxh2cdata: u32,
}

type Callback = Box<dyn FnOnce(Completion)>;
type Done<T> = Box<dyn FnOnce(Result<T, HostError>)>;

struct Inner {
    trid: TransportId,
    opts: ConnectOpts,
    hostnqn: String,
    hostid: [u8; 16],
    admin: Qpair,
    io: Vec<Qpair>,
    callbacks: Slab<Callback>,
    /// Callbacks waiting for a queue (None: admin, Some(i): io[i]) to become ready.
    ready_waiters: Vec<(Option<usize>, Done<()>)>,
    info: Option<ControllerInfo>,
    poller: Option<PollerHandle>,
    keep_alive: Option<PollerHandle>,
    /// During a bring-up with DH-HMAC-CHAP secrets: a timer that polls the queues so that
    /// an unanswered transaction reaches its deadline on a reactor that sleeps when idle.
    auth_timer: Option<PollerHandle>,
    cc: Cc,
}

/// A connected controller on the current reactor (`Rc`: it never leaves its thread).
pub struct Controller {
    inner: RefCell<Inner>,
    me: Weak<Controller>,
}

/// The default host NQN and host id of this process (random, like a fresh nvme-cli host).
fn default_host_identity() -> (String, [u8; 16]) {
    static ID: std::sync::OnceLock<[u8; 16]> = std::sync::OnceLock::new();
    let id = *ID.get_or_init(|| uuid::Uuid::new_v4().into_bytes());
    let uuid = uuid::Uuid::from_bytes(id);
    (format!("nqn.2014-08.org.nvmexpress:uuid:{uuid}"), id)
}

impl Controller {
    /// Connects and brings the controller up on the current reactor; `done` gets the
    /// controller or the first error (the half-built controller is then closed).
    pub fn connect(
        trid: &TransportId,
        opts: ConnectOpts,
        done: impl FnOnce(Result<Rc<Controller>, HostError>) + 'static,
    ) {
        let (default_nqn, default_hostid) = default_host_identity();
        let hostid = opts.hostid.unwrap_or(default_hostid);
        let hostnqn = opts
            .hostnqn
            .clone()
            .or_else(|| trid.hostnqn.clone())
            .unwrap_or(default_nqn);
        let mut cfg = QpairConfig::admin(&trid.traddr, trid.trsvcid, &trid.subnqn, &hostnqn);
        cfg.sock_impl = opts.sock_impl.clone();
        cfg.tls = opts.tls.clone();
        cfg.hostid = hostid;
        cfg.depth = opts.admin_depth.max(4);
        cfg.kato_ms = opts.kato_ms;
        cfg.hdgst = opts.hdgst;
        cfg.ddgst = opts.ddgst;
        cfg.max_transfer = opts.max_transfer;
        cfg.dhchap = opts.dhchap.clone().map(std::sync::Arc::new);
        let admin = match Qpair::connect(cfg) {
            Ok(q) => q,
            Err(e) => return done(Err(e)),
        };
        let ctrl = Rc::new_cyclic(|me| Controller {
            inner: RefCell::new(Inner {
                trid: trid.clone(),
                opts,
                hostnqn,
                hostid,
                admin,
                io: Vec::new(),
                callbacks: Slab::new(),
                ready_waiters: Vec::new(),
                info: None,
                poller: None,
                keep_alive: None,
                auth_timer: None,
                cc: Cc::default(),
            }),
            me: me.clone(),
        });
        let weak = Rc::downgrade(&ctrl);
        let poller = reactor::register_poller("nvmf_host_ctrlr", 0, move || match weak.upgrade() {
            Some(c) => c.poll(),
            None => PollStatus::Idle,
        });
        ctrl.inner.borrow_mut().poller = Some(poller);
        if ctrl.inner.borrow().opts.dhchap.is_some() {
            let weak = Rc::downgrade(&ctrl);
            let timer = reactor::register_poller("nvmf_host_auth_deadline", 50_000, move || {
                match weak.upgrade() {
                    Some(c) => c.poll(),
                    None => PollStatus::Idle,
                }
            });
            ctrl.inner.borrow_mut().auth_timer = Some(timer);
        }
        let c = ctrl.clone();
        let done: Done<Rc<Controller>> = Box::new(done);
        ctrl.wait_ready(
            None,
            Box::new(move |r| match r {
                Ok(()) => bring_up(c, done),
                Err(e) => {
                    c.close();
                    done(Err(e))
                }
            }),
        );
    }

    fn rc(&self) -> Rc<Controller> {
        self.me.upgrade().expect("controller alive while in use")
    }

    /// Polls every queue and runs the callbacks of finished commands.
    fn poll(&self) -> PollStatus {
        let mut done = Vec::new();
        let mut work = 0;
        let mut ready = Vec::new();
        {
            let mut inner = self.inner.borrow_mut();
            let inner = &mut *inner;
            work += inner.admin.poll(&mut done);
            for q in inner.io.iter_mut() {
                work += q.poll(&mut done);
            }
            let mut i = 0;
            while i < inner.ready_waiters.len() {
                let q = match inner.ready_waiters[i].0 {
                    None => Some(&inner.admin),
                    Some(n) => inner.io.get(n),
                };
                let verdict = match q {
                    None => Some(Err(HostError::Invalid("no such queue".into()))),
                    Some(q) if q.is_ready() => Some(Ok(())),
                    Some(q) => match q.state() {
                        super::QpairState::Failed(e) => Some(Err(e.clone())),
                        super::QpairState::Closed => {
                            Some(Err(HostError::NotReady("queue closed".into())))
                        }
                        _ => None,
                    },
                };
                match verdict {
                    Some(v) => {
                        let (_, cb) = inner.ready_waiters.swap_remove(i);
                        ready.push((cb, v));
                    }
                    None => i += 1,
                }
            }
        }
        work += done.len() + ready.len();
        for c in done {
            let cb = self.inner.borrow_mut().callbacks.try_remove(c.tag as usize);
            if let Some(cb) = cb {
                cb(c);
            }
        }
        for (cb, v) in ready {
            cb(v);
        }
        PollStatus::from_work(work)
    }

    fn wait_ready(&self, queue: Option<usize>, cb: Done<()>) {
        self.inner.borrow_mut().ready_waiters.push((queue, cb));
    }

    /// Submits a command on queue `qid` (0 = admin); `cb` runs on this reactor when it
    /// completes (or at once, with the error, when it cannot be queued).
    pub fn submit(&self, qid: u16, req: Request, cb: impl FnOnce(Completion) + 'static) {
        let failed = {
            let mut guard = self.inner.borrow_mut();
            let inner = &mut *guard;
            let tag = inner.callbacks.insert(Box::new(cb));
            let q = if qid == 0 {
                Some(&mut inner.admin)
            } else {
                inner.io.get_mut(qid as usize - 1)
            };
            let res = match q {
                Some(q) => q.submit(req, tag as u64).map(|()| q.flush()),
                None => Err((HostError::Invalid(format!("no I/O queue {qid}")), req)),
            };
            res.err()
                .map(|(e, req)| (inner.callbacks.remove(tag), tag, e, req))
        };
        if let Some((cb, tag, e, req)) = failed {
            cb(Completion {
                tag: tag as u64,
                result: Err(e),
                buf: req.into_buf(),
            });
        }
    }

    /// Submits and reduces the completion to `Ok((dw0, buffer))` or the error.
    pub fn command(
        &self,
        qid: u16,
        req: Request,
        cb: impl FnOnce(Result<(u32, Option<IoBuf>), HostError>) + 'static,
    ) {
        self.submit(qid, req, move |c| {
            let r = c.status();
            cb(r.map(|dw0| (dw0, c.buf)))
        });
    }

    /// Information from bring-up (None until it finished).
    pub fn info(&self) -> Option<ControllerInfo> {
        self.inner.borrow().info.clone()
    }

    pub fn io_queue_count(&self) -> u16 {
        self.inner.borrow().io.len() as u16
    }

    /// The configuration for connecting I/O queue `qid` of this controller on any reactor
    /// (tools that poll their own queues use it with [`Qpair::connect`]).
    pub fn io_qpair_config(&self, qid: u16) -> QpairConfig {
        let inner = self.inner.borrow();
        let info = inner.info.as_ref();
        QpairConfig {
            sock_impl: inner.opts.sock_impl.clone(),
            tls: inner.opts.tls.clone(),
            traddr: inner.trid.traddr.clone(),
            trsvcid: inner.trid.trsvcid,
            subnqn: inner.trid.subnqn.clone(),
            hostnqn: inner.hostnqn.clone(),
            hostid: inner.hostid,
            qid,
            cntlid: info.map_or(0, |i| i.cntlid),
            depth: inner.opts.queue_depth.clamp(
                2,
                info.map_or(u16::MAX, |i| i.cap.mqes().saturating_add(1).max(2)),
            ),
            kato_ms: 0,
            hdgst: inner.opts.hdgst,
            ddgst: inner.opts.ddgst,
            max_in_capsule: info.map_or(0, |i| i.io_in_capsule),
            max_transfer: info.map_or(inner.opts.max_transfer, |i| i.max_transfer),
            disable_sq_flow_control: true,
            dhchap: inner.opts.dhchap.clone().map(std::sync::Arc::new),
        }
    }

    // ---- admin commands ------------------------------------------------------------

    pub fn property_get(&self, offset: u32, cb: impl FnOnce(Result<u64, HostError>) + 'static) {
        let sqe = FabricsCommand::PropertyGet(PropertyGetCmd {
            cid: 0,
            size8: prop::is_8_bytes(offset),
            offset,
        })
        .to_sqe();
        self.submit(0, Request::new(sqe, DataBuf::None), move |c| {
            cb(c.status_and(|cqe| cqe.result64()))
        });
    }

    pub fn property_set(
        &self,
        offset: u32,
        value: u64,
        cb: impl FnOnce(Result<(), HostError>) + 'static,
    ) {
        let sqe = FabricsCommand::PropertySet(PropertySetCmd {
            cid: 0,
            size8: prop::is_8_bytes(offset),
            offset,
            value,
        })
        .to_sqe();
        self.command(0, Request::new(sqe, DataBuf::None), move |r| {
            cb(r.map(|_| ()))
        });
    }

    /// Identify with `cns` for `nsid`: the 4096-byte data.
    pub fn identify(
        &self,
        cns: u8,
        nsid: u32,
        cb: impl FnOnce(Result<IoBuf, HostError>) + 'static,
    ) {
        let sqe = IdentifyCmd {
            nsid,
            cns,
            cntid: 0,
            csi: 0,
        }
        .to_sqe(0, SglDescriptor::default());
        let buf = IoBuf::zeroed(4096);
        self.command(0, Request::new(sqe, DataBuf::Read(buf)), move |r| {
            cb(r.and_then(|(_, b)| b.ok_or_else(|| HostError::Protocol("no data".into()))))
        });
    }

    pub fn identify_controller(
        &self,
        cb: impl FnOnce(Result<IdentifyController, HostError>) + 'static,
    ) {
        self.identify(cns::CONTROLLER, 0, move |r| {
            cb(r.map(|b| IdentifyController::decode_slice(&b).unwrap_or_default()))
        });
    }

    pub fn identify_namespace(
        &self,
        nsid: u32,
        cb: impl FnOnce(Result<IdentifyNamespace, HostError>) + 'static,
    ) {
        self.identify(cns::NAMESPACE, nsid, move |r| {
            cb(r.map(|b| IdentifyNamespace::decode_slice(&b).unwrap_or_default()))
        });
    }

    /// The active namespace ids (CNS 02h from nsid 0).
    pub fn active_namespaces(&self, cb: impl FnOnce(Result<Vec<u32>, HostError>) + 'static) {
        self.identify(cns::ACTIVE_NS_LIST, 0, move |r| {
            cb(r.map(|b| {
                b.chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .take_while(|&n| n != 0)
                    .collect()
            }))
        });
    }

    /// Get Log Page: `len` bytes (a multiple of 4) of log `lid` at byte `offset`.
    pub fn get_log_page(
        &self,
        lid: u8,
        nsid: u32,
        offset: u64,
        len: u32,
        cb: impl FnOnce(Result<IoBuf, HostError>) + 'static,
    ) {
        if len == 0 || !len.is_multiple_of(4) {
            return cb(Err(HostError::Invalid(format!(
                "log page length {len} is not a non-zero multiple of 4"
            ))));
        }
        let sqe = GetLogPageCmd::new(nsid, lid, offset, len).to_sqe(0, SglDescriptor::default());
        self.command(0, Request::new(sqe, DataBuf::Read(IoBuf::zeroed(len as usize))), move |r| {
            cb(r.and_then(|(_, b)| b.ok_or_else(|| HostError::Protocol("no data".into()))))
        });
    }

    /// Get Features `fid` (current value): DW0.
    pub fn get_features(
        &self,
        fid: u8,
        cdw11: u32,
        cb: impl FnOnce(Result<u32, HostError>) + 'static,
    ) {
        let sqe = FeaturesCmd {
            nsid: 0,
            fid,
            sel: 0,
            save: false,
            cdw11,
        }
        .to_sqe(admin_opc::GET_FEATURES, 0);
        self.command(0, Request::new(sqe, DataBuf::None), move |r| {
            cb(r.map(|(dw0, _)| dw0))
        });
    }

    /// Set Features `fid` to `cdw11`: DW0 of the completion.
    pub fn set_features(
        &self,
        fid: u8,
        cdw11: u32,
        cb: impl FnOnce(Result<u32, HostError>) + 'static,
    ) {
        let sqe = FeaturesCmd {
            nsid: 0,
            fid,
            sel: 0,
            save: false,
            cdw11,
        }
        .to_sqe(admin_opc::SET_FEATURES, 0);
        self.command(0, Request::new(sqe, DataBuf::None), move |r| {
            cb(r.map(|(dw0, _)| dw0))
        });
    }

    pub fn keep_alive(&self, cb: impl FnOnce(Result<(), HostError>) + 'static) {
        let sqe = Sqe::new(admin_opc::KEEP_ALIVE, 0, 0);
        self.command(0, Request::new(sqe, DataBuf::None), move |r| {
            cb(r.map(|_| ()))
        });
    }

    /// The discovery log (header and entries), read whole and re-read if its generation
    /// counter changed meanwhile.
    pub fn discovery_log(
        &self,
        cb: impl FnOnce(Result<(DiscoveryLogHeader, Vec<DiscoveryLogEntry>), HostError>) + 'static,
    ) {
        let c = self.rc();
        let max = self
            .inner
            .borrow()
            .info
            .as_ref()
            .map_or(128 * 1024, |i| i.max_transfer);
        self.get_log_page(log_id::DISCOVERY, 0, 0, 4096, move |r| {
            let first = match r {
                Ok(b) => DiscoveryLogHeader::decode_slice(&b).unwrap_or_default(),
                Err(e) => return cb(Err(e)),
            };
            let fits = (max as u64 / 1024).saturating_sub(1);
            let numrec = first.numrec.min(fits.into());
            let len = (1024 * (numrec + 1)).get() as u32;
            c.get_log_page(log_id::DISCOVERY, 0, 0, len, move |r| {
                let b = match r {
                    Ok(b) => b,
                    Err(e) => return cb(Err(e)),
                };
                match crate::nvmf::wire::decode_discovery_log(&b) {
                    Some((hdr, _)) if hdr.genctr != first.genctr => cb(Err(HostError::Protocol(
                        "discovery log changed while being read".into(),
                    ))),
                    Some(x) => cb(Ok(x)),
                    None => cb(Err(HostError::Protocol("short discovery log".into()))),
                }
            });
        });
    }

    // ---- I/O commands --------------------------------------------------------------

    pub fn read(
        &self,
        qid: u16,
        nsid: u32,
        slba: u64,
        blocks: u32,
        buf: IoBuf,
        cb: impl FnOnce(Result<IoBuf, HostError>) + 'static,
    ) {
        self.data_command(
            qid,
            io_opc::READ,
            nsid,
            slba,
            blocks,
            DataBuf::Read(buf),
            cb,
        );
    }

    pub fn write(
        &self,
        qid: u16,
        nsid: u32,
        slba: u64,
        blocks: u32,
        buf: IoBuf,
        cb: impl FnOnce(Result<IoBuf, HostError>) + 'static,
    ) {
        self.data_command(
            qid,
            io_opc::WRITE,
            nsid,
            slba,
            blocks,
            DataBuf::Write(buf),
            cb,
        );
    }

    /// Compares `buf` (a whole number of blocks) with the blocks at `slba`: Compare
    /// Failure (SCT 2h, SC 85h) as [`HostError::Nvme`] when they differ.
    pub fn compare(
        &self,
        qid: u16,
        nsid: u32,
        slba: u64,
        blocks: u32,
        buf: IoBuf,
        cb: impl FnOnce(Result<IoBuf, HostError>) + 'static,
    ) {
        self.data_command(
            qid,
            io_opc::COMPARE,
            nsid,
            slba,
            blocks,
            DataBuf::Write(buf),
            cb,
        );
    }

    /// Submits two commands adjacent on queue `qid` (nothing of this host between them);
    /// `cb` gets both completions. Both are refused at once when the queue lacks room for
    /// two.
    pub fn submit_pair(
        &self,
        qid: u16,
        first: Request,
        second: Request,
        cb: impl FnOnce(Completion, Completion) + 'static,
    ) {
        let room = {
            let inner = self.inner.borrow();
            let q = if qid == 0 {
                Some(&inner.admin)
            } else {
                inner.io.get(qid as usize - 1)
            };
            q.is_some_and(|q| q.outstanding() + 2 <= q.depth())
        };
        if !room {
            let fail = |req: Request| Completion {
                tag: 0,
                result: Err(HostError::QueueFull),
                buf: req.into_buf(),
            };
            return cb(fail(first), fail(second));
        }
        let both: Rc<RefCell<(Option<Completion>, Option<Completion>)>> = Rc::default();
        let cb = Rc::new(RefCell::new(Some(cb)));
        let finish = move |both: &Rc<RefCell<(Option<Completion>, Option<Completion>)>>| {
            let mut b = both.borrow_mut();
            if b.0.is_some() && b.1.is_some() {
                let (Some(c1), Some(c2)) = (b.0.take(), b.1.take()) else {
                    return;
                };
                drop(b);
                if let Some(cb) = cb.borrow_mut().take() {
                    cb(c1, c2);
                }
            }
        };
        let (b1, f1) = (both.clone(), finish.clone());
        self.submit(qid, first, move |c| {
            b1.borrow_mut().0 = Some(c);
            f1(&b1);
        });
        let b2 = both;
        self.submit(qid, second, move |c| {
            b2.borrow_mut().1 = Some(c);
            finish(&b2);
        });
    }

    /// The fused Compare and Write: writes `data` at `slba` only if the blocks equal
    /// `expect`, atomically. `cb` gets the Compare's and the Write's results (a mismatch:
    /// the Compare fails with Compare Failure, the Write with Command Aborted due to Failed
    /// Fused Command).
    #[allow(clippy::too_many_arguments)]
    pub fn compare_and_write(
        &self,
        qid: u16,
        nsid: u32,
        slba: u64,
        blocks: u32,
        expect: IoBuf,
        data: IoBuf,
        cb: impl FnOnce(Result<u32, HostError>, Result<u32, HostError>) + 'static,
    ) {
        let (first, second) = compare_and_write_pair(nsid, slba, blocks, expect, data);
        self.submit_pair(qid, first, second, move |c1, c2| {
            cb(c1.status(), c2.status())
        });
    }

    /// A read or write of `blocks` blocks at `slba`; the callback gets the buffer back.
    #[allow(clippy::too_many_arguments)]
    fn data_command(
        &self,
        qid: u16,
        opcode: u8,
        nsid: u32,
        slba: u64,
        blocks: u32,
        data: DataBuf,
        cb: impl FnOnce(Result<IoBuf, HostError>) + 'static,
    ) {
        let sqe = Sqe::rw(opcode, 0, nsid, slba, blocks, SglDescriptor::default());
        self.command(qid, Request::new(sqe, data), move |r| {
            cb(r.and_then(|(_, b)| b.ok_or_else(|| HostError::Protocol("no data".into()))))
        });
    }

    pub fn flush(&self, qid: u16, nsid: u32, cb: impl FnOnce(Result<(), HostError>) + 'static) {
        let sqe = Sqe::new(io_opc::FLUSH, 0, nsid);
        self.command(qid, Request::new(sqe, DataBuf::None), move |r| {
            cb(r.map(|_| ()))
        });
    }

    pub fn write_zeroes(
        &self,
        qid: u16,
        nsid: u32,
        slba: u64,
        blocks: u32,
        cb: impl FnOnce(Result<(), HostError>) + 'static,
    ) {
        let sqe = Sqe::write_zeroes(0, nsid, slba, blocks, false);
        self.command(qid, Request::new(sqe, DataBuf::None), move |r| {
            cb(r.map(|_| ()))
        });
    }

    /// Dataset Management with the deallocate attribute over `(slba, blocks)` ranges.
    pub fn deallocate(
        &self,
        qid: u16,
        nsid: u32,
        ranges: &[(u64, u32)],
        cb: impl FnOnce(Result<(), HostError>) + 'static,
    ) {
        if ranges.is_empty() || ranges.len() > crate::nvmf::wire::dsm::MAX_RANGES {
            return cb(Err(HostError::Invalid(format!(
                "{} DSM ranges (allowed 1..=256)",
                ranges.len()
            ))));
        }
        let mut buf = IoBuf::zeroed(ranges.len() * DsmRange::SIZE);
        for (i, &(slba, nlb)) in ranges.iter().enumerate() {
            let range = DsmRange {
                context_attributes: 0.into(),
                nlb: nlb.into(),
                slba: slba.into(),
            };
            buf[i * DsmRange::SIZE..(i + 1) * DsmRange::SIZE].copy_from_slice(range.as_bytes());
        }
        let sqe = Sqe::dataset_management(
            0,
            nsid,
            ranges.len() as u16,
            crate::nvmf::wire::dsm::DEALLOCATE,
            SglDescriptor::default(),
        );
        self.command(qid, Request::new(sqe, DataBuf::Write(buf)), move |r| {
            cb(r.map(|_| ()))
        });
    }

    /// Normal shutdown: CC.SHN, wait (bounded) for CSTS.SHST complete, then close.
    pub fn shutdown(&self, done: impl FnOnce(Result<(), HostError>) + 'static) {
        let c = self.rc();
        let cc = {
            let inner = self.inner.borrow();
            if !inner.admin.is_ready() {
                drop(inner);
                self.close();
                return done(Ok(()));
            }
            inner.cc.with_shn(shutdown::NORMAL_OR_OCCURRING)
        };
        let done: Done<()> = Box::new(done);
        self.property_set(prop::CC, cc.to_u32() as u64, move |r| {
            if let Err(e) = r {
                c.close();
                return done(Err(e));
            }
            let deadline = Instant::now() + Duration::from_secs(2);
            poll_csts(
                c.clone(),
                deadline,
                |csts| csts.shst() == shutdown::COMPLETE,
                Box::new(move |r| {
                    c.close();
                    done(r)
                }),
            );
        });
    }

    /// Closes every queue at once (commands in flight complete with `NotReady`) and stops
    /// the pollers.
    pub fn close(&self) {
        let mut out = Vec::new();
        {
            let mut inner = self.inner.borrow_mut();
            inner.admin.close(&mut out);
            for q in inner.io.iter_mut() {
                q.close(&mut out);
            }
            if let Some(p) = inner.poller.take() {
                p.unregister();
            }
            if let Some(p) = inner.keep_alive.take() {
                p.unregister();
            }
            if let Some(p) = inner.auth_timer.take() {
                p.unregister();
            }
        }
        for c in out {
            let cb = self.inner.borrow_mut().callbacks.try_remove(c.tag as usize);
            if let Some(cb) = cb {
                cb(c);
            }
        }
        let waiters = std::mem::take(&mut self.inner.borrow_mut().ready_waiters);
        for (_, cb) in waiters {
            cb(Err(HostError::NotReady("controller closed".into())));
        }
    }
}

impl Completion {
    /// The status as a result, mapping a successful CQE through `f`.
    fn status_and<T>(&self, f: impl FnOnce(&crate::nvmf::wire::Cqe) -> T) -> Result<T, HostError> {
        self.status()?;
        match &self.result {
            Ok(cqe) => Ok(f(cqe)),
            Err(e) => Err(e.clone()),
        }
    }
}

/// Reads CSTS until `cond` holds or `deadline` passes.
fn poll_csts(c: Rc<Controller>, deadline: Instant, cond: fn(&Csts) -> bool, done: Done<()>) {
    let c2 = c.clone();
    c.property_get(prop::CSTS, move |r| match r {
        Err(e) => done(Err(e)),
        Ok(v) => {
            let csts = Csts::from_u32(v as u32);
            if csts.cfs() {
                done(Err(HostError::Protocol(
                    "controller fatal status (CSTS.CFS)".into(),
                )))
            } else if cond(&csts) {
                done(Ok(()))
            } else if Instant::now() >= deadline {
                done(Err(HostError::Timeout(Duration::ZERO)))
            } else {
                poll_csts(c2, deadline, cond, done)
            }
        }
    });
}

/// The bring-up chain after the admin queue's Connect succeeded.
fn bring_up(c: Rc<Controller>, done: Done<Rc<Controller>>) {
    let fail = {
        let c = c.clone();
        move |done: Done<Rc<Controller>>, e: HostError| {
            c.close();
            done(Err(e))
        }
    };
    let c1 = c.clone();
    c.property_get(prop::CAP, move |r| {
        let cap = match r {
            Ok(v) => Cap::from_u64(v),
            Err(e) => return fail(done, e),
        };
        let c2 = c1.clone();
        c1.property_get(prop::VS, move |r| {
            let vs = match r {
                Ok(v) => Version::from_u32(v as u32),
                Err(e) => return fail(done, e),
            };
            let cc = Cc::new()
                .with_en(true)
                .with_css(0)
                .with_mps(0)
                .with_ams(0)
                .with_shn(0)
                .with_iosqes(6)
                .with_iocqes(4);
            c2.inner.borrow_mut().cc = cc;
            let c3 = c2.clone();
            c2.property_set(prop::CC, cc.to_u32() as u64, move |r| {
                if let Err(e) = r {
                    return fail(done, e);
                }
                // CAP.TO is in 500 ms units.
                let wait = Duration::from_millis(500 * cap.to().max(1) as u64);
                let c4 = c3.clone();
                poll_csts(
                    c3,
                    Instant::now() + wait,
                    |s| s.rdy(),
                    Box::new(move |r| {
                        if let Err(e) = r {
                            return fail(done, e);
                        }
                        let c5 = c4.clone();
                        c4.identify_controller(move |r| match r {
                            Ok(id) => after_identify(c5, cap, vs, id, done),
                            Err(e) => fail(done, e),
                        });
                    }),
                );
            });
        });
    });
}

fn after_identify(
    c: Rc<Controller>,
    cap: Cap,
    vs: Version,
    id: IdentifyController,
    done: Done<Rc<Controller>>,
) {
    let (opts, subnqn, cntlid, hostnqn, hostid, (hdgst, ddgst, maxh2cdata)) = {
        let inner = c.inner.borrow();
        (
            inner.opts.clone(),
            inner.trid.subnqn.clone(),
            inner.admin.cntlid(),
            inner.hostnqn.clone(),
            inner.hostid,
            inner.admin.negotiated(),
        )
    };
    let is_discovery =
        subnqn == DISCOVERY_NQN || id.cntrltype == crate::nvmf::wire::cntrltype::DISCOVERY;
    // MDTS is a power of two in units of the minimum page size (4 KiB << MPSMIN).
    let mdts = if id.mdts == 0 || id.mdts > 20 {
        u32::MAX
    } else {
        (4096u64 << cap.mpsmin())
            .saturating_mul(1u64 << id.mdts)
            .min(u32::MAX as u64) as u32
    };
    let io_in_capsule = (id.ioccsz.get() as u64 * 16)
        .saturating_sub(64)
        .min(u32::MAX as u64) as u32;
    let info = ControllerInfo {
        cntlid,
        cap,
        vs,
        identify: id,
        io_queues_granted: 0,
        io_in_capsule,
        max_transfer: opts.max_transfer.min(mdts),
        hostnqn,
        hostid,
        is_discovery,
        hdgst,
        ddgst,
        maxh2cdata,
    };
    c.inner.borrow_mut().info = Some(info);
    let wanted = opts.request_io_queues.max(opts.io_queues);
    if is_discovery || wanted == 0 {
        return finish(c, done);
    }
    let c2 = c.clone();
    let value = num_queues_value(wanted - 1, wanted - 1);
    c.set_features(feat::NUMBER_OF_QUEUES, value, move |r| {
        let granted = match r {
            Ok(dw0) => {
                let (nsq, ncq) = num_queues_from_value(dw0);
                nsq.min(ncq).saturating_add(1)
            }
            Err(e) => {
                c2.close();
                return done(Err(e));
            }
        };
        if let Some(i) = c2.inner.borrow_mut().info.as_mut() {
            i.io_queues_granted = granted;
        }
        if granted < opts.io_queues {
            c2.close();
            return done(Err(HostError::Invalid(format!(
                "controller granted {granted} I/O queues, {} wanted",
                opts.io_queues
            ))));
        }
        connect_io_queues(c2, opts.io_queues, done);
    });
}

fn connect_io_queues(c: Rc<Controller>, count: u16, done: Done<Rc<Controller>>) {
    if count == 0 {
        return finish(c, done);
    }
    for qid in 1..=count {
        let cfg = c.io_qpair_config(qid);
        match Qpair::connect(cfg) {
            Ok(q) => c.inner.borrow_mut().io.push(q),
            Err(e) => {
                c.close();
                return done(Err(e));
            }
        }
    }
    // Wait for every queue; the first error wins.
    let remaining = Rc::new(RefCell::new((count as usize, Some(done))));
    for i in 0..count as usize {
        let remaining = remaining.clone();
        let c2 = c.clone();
        c.wait_ready(
            Some(i),
            Box::new(move |r| {
                let mut st = remaining.borrow_mut();
                match r {
                    Err(e) => {
                        if let Some(done) = st.1.take() {
                            drop(st);
                            c2.close();
                            done(Err(e));
                        }
                    }
                    Ok(()) => {
                        st.0 -= 1;
                        if st.0 == 0 {
                            if let Some(done) = st.1.take() {
                                drop(st);
                                finish(c2, done);
                            }
                        }
                    }
                }
            }),
        );
    }
}

/// Starts the keep-alive timer and reports the controller.
fn finish(c: Rc<Controller>, done: Done<Rc<Controller>>) {
    if let Some(p) = c.inner.borrow_mut().auth_timer.take() {
        p.unregister();
    }
    let kato = c.inner.borrow().opts.kato_ms;
    if kato > 0 {
        let weak = Rc::downgrade(&c);
        let period_us = kato as u64 * 1000 / 2;
        let p = reactor::register_poller("nvmf_host_keep_alive", period_us, move || {
            if let Some(c) = weak.upgrade() {
                c.keep_alive(|r| {
                    if let Err(e) = r {
                        tracing::warn!(error = %e, "keep alive failed");
                    }
                });
            }
            PollStatus::Busy
        });
        c.inner.borrow_mut().keep_alive = Some(p);
    }
    done(Ok(c))
}

/// The two commands of a fused Compare and Write (FUSE 01b Compare, FUSE 10b Write).
pub fn compare_and_write_pair(
    nsid: u32,
    slba: u64,
    blocks: u32,
    expect: IoBuf,
    data: IoBuf,
) -> (Request, Request) {
    let mut cmp = Sqe::rw(
        io_opc::COMPARE,
        0,
        nsid,
        slba,
        blocks,
        SglDescriptor::default(),
    );
    cmp.flags = cmp.flags.with_fuse(crate::nvmf::wire::fuse::FIRST);
    let mut write = Sqe::rw(
        io_opc::WRITE,
        0,
        nsid,
        slba,
        blocks,
        SglDescriptor::default(),
    );
    write.flags = write.flags.with_fuse(crate::nvmf::wire::fuse::SECOND);
    (
        Request::new(cmp, DataBuf::Write(expect)),
        Request::new(write, DataBuf::Write(data)),
    )
}
