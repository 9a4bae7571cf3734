//! Admin commands (through the admin queue's controller) and I/O commands (on the bdev
//! channel of the namespace), and their completions.

use super::*;

impl PollGroup {
    pub(super) fn admin(&mut self, idx: usize, slot: u16, sqe: &Sqe) -> Result<(), Fatal> {
        let view = self.view.clone();
        let qp = &mut self.qpairs[idx];
        let Some(subsys) = view.subsystem(qp.subsys_id).cloned() else {
            qp.machine.reqs[slot as usize].status = Status::INTERNAL_ERROR;
            return self.respond(idx, slot);
        };
        let Some(ctrlr) = qp.ctrlr.as_mut() else {
            qp.machine.reqs[slot as usize].status = Status::COMMAND_SEQUENCE_ERROR.with_dnr();
            return self.respond(idx, slot);
        };
        let env = AdminEnv {
            view: &view,
            subsys: &subsys,
            opts: &qp.opts,
        };
        let req = &mut qp.machine.reqs[slot as usize];
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
                        .position(|s| qp.machine.reqs[*s as usize].sqe.cid == cid)
                    {
                        aborted = ctrlr.aers.remove(pos);
                    }
                }
                let req = &mut qp.machine.reqs[slot as usize];
                req.status = Status::SUCCESS;
                req.dw0 = if aborted.is_some() { 0 } else { 1 };
                self.respond(idx, slot)?;
                if let Some(a) = aborted {
                    self.qpairs[idx].machine.reqs[a as usize].status = Status::ABORTED_BY_REQUEST;
                    self.respond(idx, a)?;
                }
                Ok(())
            }
            AdminOutcome::SetPtpl { nsid, on } => {
                self.set_ptpl(idx, slot, nsid, on);
                Ok(())
            }
            AdminOutcome::Smart { offset, len } => {
                req.state = ReqState::Executing;
                let bdevs: Vec<BdevHandle> = subsys
                    .namespaces
                    .values()
                    .filter(|ns| sqe.nsid == 0 || sqe.nsid == u32::MAX || sqe.nsid == ns.nsid)
                    .filter(|ns| qp.hostnqn.as_deref().is_some_and(|h| ns.visible_to(h)))
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

    pub(super) fn complete_smart(
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
        let req = &mut qp.machine.reqs[slot as usize];
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
    pub(super) fn complete_aer(&mut self, idx: usize, dw0: u32) {
        let qp = &mut self.qpairs[idx];
        let Some(slot) = qp.ctrlr.as_mut().and_then(|c| c.aers.pop_front()) else {
            return;
        };
        let req = &mut qp.machine.reqs[slot as usize];
        req.status = Status::SUCCESS;
        req.dw0 = dw0;
        req.c2h_len = 0;
        let _ = self.respond(idx, slot);
    }

    pub(super) fn io(&mut self, idx: usize, slot: u16, sqe: &Sqe) -> Result<(), Fatal> {
        if reserve::is_reservation(sqe.opcode) {
            return self.reservation(idx, slot, sqe);
        }
        let qp = &mut self.qpairs[idx];
        if qp.machine.reqs[slot as usize].fused != fused::Fused::None {
            return self.fused_io(idx, slot);
        }
        let token = io_token(idx, qp.gen, slot);
        let max_io = qp.opts.max_io_size;
        let qp_ddgst = qp.machine.tx().ddgst;
        let chan = self
            .ns
            .get(&(qp.subsys_id, sqe.nsid.get()))
            .filter(|c| c.visible_to(qp.hostnqn.as_deref()));
        let geom = chan.map(NsChan::geometry);
        let req = &mut qp.machine.reqs[slot as usize];
        // A namespace whose ANA group this path cannot reach: the path status, so the host
        // retries on another path.
        if let (Some(ana), Some(c)) = (qp.ana.as_deref(), chan) {
            if let Some(st) = ana.state(c.anagrpid).path_status() {
                req.status = st;
                return self.respond(idx, slot);
            }
        }
        if chan.is_some_and(|c| reserve::conflicts(c, &qp.hostid, sqe.opcode)) {
            req.status = Status::RESERVATION_CONFLICT.with_dnr();
            return self.respond(idx, slot);
        }
        let data: &[u8] = req.buf.as_deref().unwrap_or(&[]);
        if sqe.fuse() != wire::fuse::NORMAL {
            // Reached only by a fused command on a queue that does not pair them.
            req.status = Status::INVALID_FIELD.with_dnr();
            return self.respond(idx, slot);
        }
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
            }
            | IoPlan::Compare {
                offset_blocks,
                num_blocks,
                len,
            } => {
                let t = match plan {
                    IoPlan::Compare { .. } => IoType::Compare,
                    _ => IoType::Write,
                };
                bio.reset_to(t, offset_blocks, num_blocks);
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

    pub(super) fn io_done(&mut self, mut bio: BdevIo) {
        self.stats.pending_bdev_io = self.stats.pending_bdev_io.saturating_sub(1);
        if !self.drains.is_empty() {
            self.drain_progress(bio.token);
        }
        let (idx, gen, slot) = split_token(bio.token);
        let Some(qp) = self
            .qpairs
            .get_mut(idx)
            .filter(|q| q.gen & 0xfff_ffff == gen)
        else {
            return;
        };
        let Some(req) = qp.machine.reqs.get_mut(slot as usize) else {
            return;
        };
        if req.state != ReqState::Executing || req.pending == 0 {
            return;
        }
        req.pending -= 1;
        let st = bio.status();
        if bio.io_type == IoType::CompareAndWrite {
            bio.bufs.clear();
            if req.io.is_none() {
                req.io = Some(bio);
            }
            self.stats.completed_nvme_io += 1;
            return self.fused_done(idx, slot, st);
        }
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
}
