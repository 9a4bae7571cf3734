//! Reservation commands on a queue pair: Report answered from this reactor's view, state changes carried to the main reactor and completed when it answers, notifications recorded in controllers here.
//!
//! The I/O path's check is [`conflicts`]: the namespace channel holds the reservations of
//! the current view (an `Arc` replaced with each publication), so it costs one match and,
//! with no reservation held, nothing more. Register, Acquire, Release and Set Features
//! Reservation Persistence go to `reservation_target::execute` on the main reactor; the
//! command stays `Executing` here until the answer comes back by message, after the new
//! state reached every reactor. A Preempt and Abort then waits, on every reactor, for the
//! bdev I/O the preempted hosts had started on the namespace before the new state arrived
//! ([`drain_hosts`]): pollux cannot recall a bdev I/O, so it lets it finish, and the command
//! completes only after (as the Linux target waits for the preempted controllers' commands).

use super::*;
use crate::nvmf::reservation::Notice;
use crate::nvmf::reservation_target::{self, PrRequest};
use crate::nvmf::reservation_wire::{self, PrCommand};
use crate::nvmf::wire::io_opc;

/// Opcodes of the reservation command group.
pub(super) fn is_reservation(opcode: u8) -> bool {
    matches!(
        opcode,
        io_opc::RESERVATION_REGISTER
            | io_opc::RESERVATION_REPORT
            | io_opc::RESERVATION_ACQUIRE
            | io_opc::RESERVATION_RELEASE
    )
}

/// Whether a reservation on the namespace refuses `opcode` from `host`.
pub(super) fn conflicts(chan: &NsChan, host: &[u8; 16], opcode: u8) -> bool {
    match reservation_wire::access_of(opcode) {
        Some(access) => !chan.reservations.allows(host, access),
        None => false,
    }
}

impl PollGroup {
    /// A reservation command on an I/O queue.
    pub(super) fn reservation(&mut self, idx: usize, slot: u16, sqe: &Sqe) -> Result<(), Fatal> {
        let qp = &mut self.qpairs[idx];
        let nsid = sqe.nsid.get();
        let chan = self
            .ns
            .get(&(qp.subsys_id, nsid))
            .filter(|c| c.visible_to(qp.hostnqn.as_deref()));
        let req = &mut qp.machine.reqs[slot as usize];
        let Some(chan) = chan else {
            req.status = Status::INVALID_NAMESPACE_OR_FORMAT.with_dnr();
            return self.respond(idx, slot);
        };
        if let Some(st) = qp
            .ana
            .as_deref()
            .and_then(|ana| ana.state(chan.anagrpid).path_status())
        {
            req.status = st;
            return self.respond(idx, slot);
        }
        if sqe.opcode == io_opc::RESERVATION_REPORT {
            match reservation_wire::report(&chan.reservations, sqe, req.xfer, qp.opts.max_io_size) {
                Ok(data) => {
                    let mut buf = IoBuf::with_len(data.len());
                    buf.as_mut_slice().copy_from_slice(&data);
                    req.c2h_len = data.len();
                    req.buf = Some(buf);
                }
                Err(st) => req.status = st,
            }
            return self.respond(idx, slot);
        }
        let data: &[u8] = req.buf.as_deref().unwrap_or(&[]);
        let cmd = match reservation_wire::decode(sqe, data) {
            Some(Ok(c)) => c,
            Some(Err(st)) => {
                req.status = st;
                return self.respond(idx, slot);
            }
            None => {
                req.status = Status::INVALID_OPCODE.with_dnr();
                return self.respond(idx, slot);
            }
        };
        let request = PrRequest {
            subsys_id: qp.subsys_id,
            nsid,
            host: qp.hostid,
            cmd,
        };
        self.send_reservation(idx, slot, request);
        Ok(())
    }

    /// Set Features Reservation Persistence (admin queue): a state change like Register's.
    pub(super) fn set_ptpl(&mut self, idx: usize, slot: u16, nsid: u32, on: bool) {
        let qp = &self.qpairs[idx];
        let request = PrRequest {
            subsys_id: qp.subsys_id,
            nsid,
            host: qp.hostid,
            cmd: PrCommand::SetPtpl(on),
        };
        self.send_reservation(idx, slot, request);
    }

    /// Hands `request` to the main reactor; the command completes when it answers.
    fn send_reservation(&mut self, idx: usize, slot: u16, request: PrRequest) {
        let qp = &mut self.qpairs[idx];
        qp.machine.reqs[slot as usize].state = ReqState::Executing;
        qp.machine.reqs[slot as usize].c2h_len = 0;
        let (core, gen) = (self.core, qp.gen);
        reactor::send_to(reactor::main_core(), move || {
            reservation_target::execute(request, move |status| {
                reactor::send_to(core, move || {
                    let _ = try_group(|g| g.complete_reservation(idx, gen, slot, status));
                })
            })
        });
    }

    fn complete_reservation(&mut self, idx: usize, gen: u64, slot: u16, status: Status) {
        let Some(qp) = self.qpairs.get_mut(idx).filter(|q| q.gen == gen) else {
            return;
        };
        let req = &mut qp.machine.reqs[slot as usize];
        if req.state != ReqState::Executing {
            return;
        }
        req.status = status;
        if !status.is_success() && qp.qid == Some(0) {
            let cid = req.sqe.cid.get();
            let nsid = req.sqe.nsid.get();
            if let Some(c) = qp.ctrlr.as_mut() {
                c.record_error(0, cid, status, nsid);
            }
        }
        let _ = self.respond(idx, slot);
        self.flush(idx);
    }

    /// A reservation notice for the controller whose admin queue is `(idx, gen)` here.
    pub(super) fn reservation_notice(&mut self, idx: usize, gen: u64, nsid: u32, notice: Notice) {
        let Some(qp) = self.qpairs.get_mut(idx).filter(|q| q.gen == gen) else {
            return;
        };
        let Some(c) = qp.ctrlr.as_mut() else {
            return;
        };
        if !c.resv.push(nsid, notice) {
            return;
        }
        c.pending_events.push_back(reservation_wire::AEN_DW0);
        if let Some(dw0) = c.take_event() {
            self.complete_aer(idx, dw0);
            self.flush(idx);
        }
    }
}

/// A Preempt and Abort barrier on this reactor: the bdev I/O (by token, with the number of
/// bdev completions each still waits for) to see finish before answering.
pub(super) struct Drain {
    waiting: Vec<(u64, u32)>,
    reply: Option<Box<dyn FnOnce() + Send>>,
}

impl PollGroup {
    /// A bdev completion while barriers wait: counts it against them, answers the finished.
    pub(super) fn drain_progress(&mut self, token: u64) {
        for d in &mut self.drains {
            if let Some(pos) = d.waiting.iter().position(|(t, _)| *t == token) {
                d.waiting[pos].1 -= 1;
                if d.waiting[pos].1 == 0 {
                    d.waiting.swap_remove(pos);
                }
            }
        }
        self.drains.retain_mut(|d| {
            if d.waiting.is_empty() {
                if let Some(reply) = d.reply.take() {
                    reply();
                }
                false
            } else {
                true
            }
        });
    }

    /// Starts a barrier for the I/O of `hosts` on namespace `nsid` of subsystem `sid` that
    /// is executing here now; `reply` runs once it all finished (at once if none is).
    fn start_drain(
        &mut self,
        sid: u64,
        nsid: u32,
        hosts: &[[u8; 16]],
        reply: Box<dyn FnOnce() + Send>,
    ) {
        let mut waiting = Vec::new();
        if let Some(users) = self.users.get(&sid) {
            for &idx in users.qpairs_iter() {
                let Some(qp) = self.qpairs.get(idx) else {
                    continue;
                };
                if qp.qid.is_none_or(|q| q == 0) || !hosts.contains(&qp.hostid) {
                    continue;
                }
                for (slot, r) in qp.machine.reqs.iter().enumerate() {
                    if r.state == ReqState::Executing && r.pending > 0 && r.sqe.nsid.get() == nsid {
                        waiting.push((io_token(idx, qp.gen, slot as u16), r.pending));
                    }
                }
            }
        }
        if waiting.is_empty() {
            return reply();
        }
        self.drains.push(Drain {
            waiting,
            reply: Some(reply),
        });
    }
}

/// The Preempt and Abort barrier (a message from the main reactor): `reply` runs on this
/// reactor once the preempted `hosts`' bdev I/O on the namespace, started before, finished.
pub fn drain_hosts(sid: u64, nsid: u32, hosts: Vec<[u8; 16]>, reply: Box<dyn FnOnce() + Send>) {
    let mut reply = Some(reply);
    let _ = try_group(|g| {
        if let Some(r) = reply.take() {
            g.start_drain(sid, nsid, &hosts, r)
        }
    });
    // No poll group here (no queue ever connected): nothing to wait for.
    if let Some(r) = reply {
        r();
    }
}

/// Delivers a reservation notice to a controller of this reactor (a message from the main
/// reactor).
pub fn reservation_notice(index: usize, gen: u64, nsid: u32, notice: Notice) {
    let _ = try_group(|g| g.reservation_notice(index, gen, nsid, notice));
}
