//! Bringing a controller up: CC.EN and CSTS.RDY, Identify, the number of queues, the I/O queues' Connects, Keep Alive.

use super::{Controller, ControllerInfo, Done};
use crate::nvmf::host::qpair::Qpair;
use crate::nvmf::host::HostError;
use crate::nvmf::wire::{
    feat, num_queues_from_value, num_queues_value, prop, Cap, Cc, Csts, IdentifyController,
    Version, DISCOVERY_NQN,
};
use crate::reactor::{self, PollStatus};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Reads CSTS until `cond` holds or `deadline` passes.
pub(super) fn poll_csts(
    c: Rc<Controller>,
    deadline: Instant,
    cond: fn(&Csts) -> bool,
    done: Done<()>,
) {
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
pub(super) fn bring_up(c: Rc<Controller>, done: Done<Rc<Controller>>) {
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
