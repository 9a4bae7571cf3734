//! A blocking front end of the host for tests and tools.
//!
//! Blocking front end of the host for tests and tools: [`SyncController`] starts a private
//! one-reactor application (unpinned, sleeping when idle), brings a [`Controller`] up on it
//! and forwards each blocking call as a message to that reactor, waiting for the answer on
//! a channel for at most the connect options' timeout. The controller itself never leaves
//! its reactor (it lives in a thread-local slot there). Dropping the `SyncController`
//! shuts the controller down (CC.SHN) and stops the application. [`discover`] connects to
//! a discovery controller, reads its log page and disconnects.

use super::ctrlr::{ConnectOpts, Controller, ControllerInfo};
use super::qpair::{Completion, Request};
use super::{io_buf_of, HostError, TransportId};
use crate::buf::IoBuf;
use crate::nvmf::wire::{DiscoveryLogEntry, IdentifyController, IdentifyNamespace, DISCOVERY_NQN};
use crate::reactor::{self, AppHandle, IdleStrategy, ReactorConfig};
use slab::Slab;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

/// The results of the two commands of a fused pair (each DW0 or its error).
pub type PairResult = (Result<u32, HostError>, Result<u32, HostError>);

thread_local! {
    /// Controllers owned by `SyncController`s, on their reactor.
    static CONTROLLERS: RefCell<Slab<Rc<Controller>>> = const { RefCell::new(Slab::new()) };
}

fn with_ctrl<R>(slot: usize, f: impl FnOnce(&Rc<Controller>) -> R) -> Option<R> {
    let c = CONTROLLERS.with(|s| s.borrow().get(slot).cloned())?;
    Some(f(&c))
}

/// A controller driven from any thread by blocking calls.
pub struct SyncController {
    app: AppHandle,
    core: u32,
    slot: usize,
    info: ControllerInfo,
    timeout: Duration,
    closed: bool,
}

impl SyncController {
    /// Connects (admin queue, bring-up, `opts.io_queues` I/O queues) within `opts.timeout`.
    pub fn connect(trid: &TransportId, opts: ConnectOpts) -> Result<Self, HostError> {
        let timeout = opts.timeout;
        let (tx, rx) = mpsc::channel();
        let trid2 = trid.clone();
        let config = ReactorConfig {
            cores: vec![0],
            idle: IdleStrategy::SpinThenSleep(Duration::from_micros(50)),
            pin: false,
        };
        let app = reactor::start(config, move || {
            Controller::connect(&trid2, opts, move |r| {
                let r = r.map(|c| {
                    let info = c.info().expect("bring-up sets info");
                    let slot = CONTROLLERS.with(|s| s.borrow_mut().insert(c));
                    (slot, info)
                });
                let _ = tx.send(r);
            });
        })
        .map_err(|e| HostError::Connection(format!("starting the host reactor: {e}")))?;
        let core = app.main_core();
        let stop = |app: &AppHandle| {
            app.shutdown();
            app.wait();
        };
        match rx.recv_timeout(timeout) {
            Ok(Ok((slot, info))) => Ok(Self {
                app,
                core,
                slot,
                info,
                timeout,
                closed: false,
            }),
            Ok(Err(e)) => {
                stop(&app);
                Err(e)
            }
            Err(_) => {
                stop(&app);
                Err(HostError::Timeout(timeout))
            }
        }
    }

    pub fn info(&self) -> &ControllerInfo {
        &self.info
    }

    /// Changes the bound of each blocking call.
    pub fn set_timeout(&mut self, t: Duration) {
        self.timeout = t;
    }

    /// Runs `f` with the controller on its reactor; `f` answers through the callback it is
    /// given. Waits at most the timeout.
    pub fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Rc<Controller>, Box<dyn FnOnce(Result<T, HostError>)>) + Send + 'static,
    ) -> Result<T, HostError> {
        let (tx, rx) = mpsc::channel();
        let slot = self.slot;
        let tx2 = tx.clone();
        let sent = self.app.send_to(self.core, move || {
            let answered = with_ctrl(slot, |c| {
                f(
                    c,
                    Box::new(move |r| {
                        let _ = tx.send(r);
                    }),
                )
            });
            if answered.is_none() {
                let _ = tx2.send(Err(HostError::NotReady("controller closed".into())));
            }
        });
        if sent.is_err() {
            return Err(HostError::NotReady("host reactor stopped".into()));
        }
        match rx.recv_timeout(self.timeout) {
            Ok(r) => r,
            Err(_) => Err(HostError::Timeout(self.timeout)),
        }
    }

    /// Submits a raw command on queue `qid` and returns its completion.
    pub fn submit(&self, qid: u16, req: Request) -> Result<Completion, HostError> {
        self.call(move |c, done| c.submit(qid, req, move |cpl| done(Ok(cpl))))
    }

    /// Submits a raw command on queue `qid` without waiting: its completion arrives on the
    /// returned channel (e.g. an Asynchronous Event Request, answered when an event comes).
    pub fn submit_later(
        &self,
        qid: u16,
        req: Request,
    ) -> mpsc::Receiver<Result<Completion, HostError>> {
        let (tx, rx) = mpsc::channel();
        let slot = self.slot;
        let tx2 = tx.clone();
        let sent = self.app.send_to(self.core, move || {
            let submitted = with_ctrl(slot, |c| {
                c.submit(qid, req, move |cpl| {
                    let _ = tx.send(Ok(cpl));
                })
            });
            if submitted.is_none() {
                let _ = tx2.send(Err(HostError::NotReady("controller closed".into())));
            }
        });
        if sent.is_err() {
            let (tx, rx) = mpsc::channel();
            let _ = tx.send(Err(HostError::NotReady("host reactor stopped".into())));
            return rx;
        }
        rx
    }

    pub fn identify_controller(&self) -> Result<IdentifyController, HostError> {
        self.call(|c, done| c.identify_controller(done))
    }

    pub fn identify_namespace(&self, nsid: u32) -> Result<IdentifyNamespace, HostError> {
        self.call(move |c, done| c.identify_namespace(nsid, done))
    }

    pub fn active_namespaces(&self) -> Result<Vec<u32>, HostError> {
        self.call(|c, done| c.active_namespaces(done))
    }

    pub fn property_get(&self, offset: u32) -> Result<u64, HostError> {
        self.call(move |c, done| c.property_get(offset, done))
    }

    pub fn get_log_page(
        &self,
        lid: u8,
        nsid: u32,
        offset: u64,
        len: u32,
    ) -> Result<IoBuf, HostError> {
        self.call(move |c, done| c.get_log_page(lid, nsid, offset, len, done))
    }

    pub fn get_features(&self, fid: u8, cdw11: u32) -> Result<u32, HostError> {
        self.call(move |c, done| c.get_features(fid, cdw11, done))
    }

    pub fn set_features(&self, fid: u8, cdw11: u32) -> Result<u32, HostError> {
        self.call(move |c, done| c.set_features(fid, cdw11, done))
    }

    pub fn keep_alive(&self) -> Result<(), HostError> {
        self.call(|c, done| c.keep_alive(done))
    }

    pub fn discovery_log(&self) -> Result<Vec<DiscoveryLogEntry>, HostError> {
        self.call(|c, done| c.discovery_log(move |r| done(r.map(|(_, e)| e))))
    }

    /// Reads `blocks` blocks of `block_size` bytes at `slba` on I/O queue `qid`.
    pub fn read(
        &self,
        qid: u16,
        nsid: u32,
        slba: u64,
        blocks: u32,
        block_size: u32,
    ) -> Result<IoBuf, HostError> {
        let buf = IoBuf::zeroed(blocks as usize * block_size as usize);
        self.call(move |c, done| c.read(qid, nsid, slba, blocks, buf, done))
    }

    /// Writes `data` (a whole number of blocks) at `slba` on I/O queue `qid`.
    pub fn write(
        &self,
        qid: u16,
        nsid: u32,
        slba: u64,
        blocks: u32,
        data: &[u8],
    ) -> Result<(), HostError> {
        let buf = io_buf_of(data);
        self.call(move |c, done| {
            c.write(qid, nsid, slba, blocks, buf, move |r| done(r.map(|_| ())))
        })
    }

    /// Compares `data` (a whole number of blocks) with the blocks at `slba` on I/O queue
    /// `qid`: Compare Failure as [`HostError::Nvme`] when they differ.
    pub fn compare(
        &self,
        qid: u16,
        nsid: u32,
        slba: u64,
        blocks: u32,
        data: &[u8],
    ) -> Result<(), HostError> {
        let buf = io_buf_of(data);
        self.call(move |c, done| {
            c.compare(qid, nsid, slba, blocks, buf, move |r| done(r.map(|_| ())))
        })
    }

    /// The fused Compare and Write on I/O queue `qid`: the Compare's and the Write's
    /// results.
    pub fn compare_and_write(
        &self,
        qid: u16,
        nsid: u32,
        slba: u64,
        blocks: u32,
        expect: &[u8],
        data: &[u8],
    ) -> Result<PairResult, HostError> {
        let (e, d) = (io_buf_of(expect), io_buf_of(data));
        self.call(move |c, done| {
            c.compare_and_write(qid, nsid, slba, blocks, e, d, move |r1, r2| {
                done(Ok((r1, r2)))
            })
        })
    }

    /// Submits two commands adjacent on queue `qid` and returns both completions.
    pub fn submit_pair(
        &self,
        qid: u16,
        first: Request,
        second: Request,
    ) -> Result<(Completion, Completion), HostError> {
        self.call(move |c, done| c.submit_pair(qid, first, second, move |a, b| done(Ok((a, b)))))
    }

    pub fn flush(&self, qid: u16, nsid: u32) -> Result<(), HostError> {
        self.call(move |c, done| c.flush(qid, nsid, done))
    }

    pub fn write_zeroes(
        &self,
        qid: u16,
        nsid: u32,
        slba: u64,
        blocks: u32,
    ) -> Result<(), HostError> {
        self.call(move |c, done| c.write_zeroes(qid, nsid, slba, blocks, done))
    }

    pub fn deallocate(&self, qid: u16, nsid: u32, ranges: &[(u64, u32)]) -> Result<(), HostError> {
        let ranges = ranges.to_vec();
        self.call(move |c, done| c.deallocate(qid, nsid, &ranges, done))
    }

    /// Normal shutdown (CC.SHN), then the connections close and the reactor stops.
    pub fn disconnect(mut self) -> Result<(), HostError> {
        self.close()
    }

    fn close(&mut self) -> Result<(), HostError> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        let slot = self.slot;
        let r = self.call(move |c, done| {
            let c2 = c.clone();
            c.shutdown(move |r| {
                CONTROLLERS.with(|s| s.borrow_mut().try_remove(slot));
                drop(c2);
                done(r)
            })
        });
        // Whatever happened, the controller must not outlive this object.
        let _ = self.app.send_to(self.core, move || {
            if let Some(c) = CONTROLLERS.with(|s| s.borrow_mut().try_remove(slot)) {
                c.close();
            }
        });
        self.app.shutdown();
        self.app.wait();
        r
    }
}

impl Drop for SyncController {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// Connects to the discovery controller at `trid` (its subnqn is ignored), returns the
/// discovery log entries and disconnects.
pub fn discover(
    trid: &TransportId,
    opts: ConnectOpts,
) -> Result<Vec<DiscoveryLogEntry>, HostError> {
    let mut t = trid.clone();
    t.subnqn = DISCOVERY_NQN.to_string();
    let opts = ConnectOpts {
        io_queues: 0,
        request_io_queues: 0,
        ..opts
    };
    let ctrl = SyncController::connect(&t, opts)?;
    let entries = ctrl.discovery_log();
    let _ = ctrl.disconnect();
    entries
}
