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
//!
//! Files: `ctrlr/bring_up.rs` (the bring-up chain), `ctrlr/admin_commands.rs`,
//! `ctrlr/io_commands.rs`; the controller, its poller and shutdown are here.

mod admin_commands;
mod bring_up;
mod io_commands;

use super::qpair::{Completion, DataBuf, Qpair, QpairConfig, Request};
use super::{HostError, OnDone, TransportId};
use crate::buf::IoBuf;
use crate::nvmf::wire::{
    io_opc, prop, shutdown, Cap, Cc, IdentifyController, SglDescriptor, Sqe, Version,
};
use crate::reactor::{self, PollStatus, PollerHandle};
use bring_up::{bring_up, poll_csts};
use slab::Slab;
use std::cell::RefCell;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

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
    pub fn connect(trid: &TransportId, opts: ConnectOpts, done: impl OnDone<Rc<Controller>>) {
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
    pub fn command(&self, qid: u16, req: Request, cb: impl OnDone<(u32, Option<IoBuf>)>) {
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

    /// Normal shutdown: CC.SHN, wait (bounded) for CSTS.SHST complete, then close.
    pub fn shutdown(&self, done: impl OnDone<()>) {
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
