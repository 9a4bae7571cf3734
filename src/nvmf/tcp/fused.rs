//! Fused Compare and Write on a queue pair: pairing the two halves in submission order, waiting for both, and running them as one bdev compare-and-write.
//!
//! NVMe base spec, Fused Operations: the first command (FUSE 01b, a Compare) and the second
//! (FUSE 10b, a Write) are adjacent in one submission queue, which on NVMe/TCP is the
//! order of the command capsules. Each capsule is paired when its header arrives (like
//! SPDK's TCP transport): a first is remembered until the next capsule, which either is
//! its second (the two are linked) or not (the first fails with Command Aborted due to
//! Missing Fused Command); a second that does not follow a first fails the same way, and
//! FUSE 11b is Invalid Field. Either half may get its data (in-capsule or after R2T)
//! first; a half that is ready waits (`ReqState::AwaitFused`) for the other, and the pair
//! then executes as one `IoType::CompareAndWrite` whose completion answers both. A half
//! answered alone before that (a transport or data error) aborts the other with Command
//! Aborted due to Failed Fused Command (`unlink`).

use super::*;

/// A request's part in a fused operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum Fused {
    /// A normal command.
    #[default]
    None,
    /// A first command; its second once that arrived.
    First { second: Option<u16> },
    /// A second command and its first.
    Second { first: u16 },
    /// The pair executes: this (second) command's compare-and-write answers `first` too.
    Executing { first: u16 },
    /// A half that cannot execute: it is answered with this status.
    Failed(Status),
}

impl Fused {
    /// Whether the request is linked to another one still waiting.
    pub(super) fn is_paired(self) -> bool {
        matches!(self, Fused::First { .. } | Fused::Second { .. })
    }
}

/// Unlinks `slot`, answered alone, from its other half, which fails with Command Aborted
/// due to Failed Fused Command; returns that half if it is waiting and must be answered
/// now.
pub(super) fn unlink(qp: &mut Qpair, slot: u16) -> Option<u16> {
    let me = std::mem::take(&mut qp.machine.reqs[slot as usize].fused);
    let other = match me {
        Fused::First { second: None } => {
            if qp.fused_first == Some(slot) {
                qp.fused_first = None;
            }
            return None;
        }
        Fused::First { second: Some(s) } => s,
        Fused::Second { first } => first,
        _ => return None,
    };
    let o = qp.machine.reqs.get_mut(other as usize)?;
    if !o.fused.is_paired() {
        return None;
    }
    o.fused = Fused::Failed(Status::ABORTED_FAILED_FUSED);
    (o.state == ReqState::AwaitFused).then_some(other)
}

impl PollGroup {
    /// Pairs the command just received in `slot` (capsule header) with the one before it.
    pub(super) fn pair_fused(&mut self, idx: usize, slot: u16) -> Result<(), Fatal> {
        let qp = &mut self.qpairs[idx];
        if qp.qid.is_none_or(|q| q == 0) {
            return Ok(());
        }
        let sqe = qp.machine.reqs[slot as usize].sqe;
        let fuse = if sqe.is_fabrics() {
            wire::fuse::NORMAL
        } else {
            sqe.fuse()
        };
        if fuse == wire::fuse::NORMAL && qp.fused_first.is_none() {
            return Ok(());
        }
        if let Some(first) = qp.fused_first.take() {
            if fuse == wire::fuse::SECOND {
                qp.machine.reqs[first as usize].fused = Fused::First { second: Some(slot) };
                qp.machine.reqs[slot as usize].fused = Fused::Second { first };
                return Ok(());
            }
            // The first was not followed by its second.
            let f = &mut qp.machine.reqs[first as usize];
            f.fused = Fused::Failed(Status::ABORTED_MISSING_FUSED);
            if f.state == ReqState::AwaitFused {
                f.status = Status::ABORTED_MISSING_FUSED;
                self.respond(idx, first)?;
            }
        }
        let qp = &mut self.qpairs[idx];
        let req = &mut qp.machine.reqs[slot as usize];
        match fuse {
            wire::fuse::NORMAL => {}
            wire::fuse::FIRST => {
                req.fused = Fused::First { second: None };
                qp.fused_first = Some(slot);
            }
            wire::fuse::SECOND => req.fused = Fused::Failed(Status::ABORTED_MISSING_FUSED),
            _ => req.fused = Fused::Failed(Status::INVALID_FIELD.with_dnr()),
        }
        Ok(())
    }

    /// Executes a half of a fused pair whose data is in: runs the pair once both are.
    pub(super) fn fused_io(&mut self, idx: usize, slot: u16) -> Result<(), Fatal> {
        let qp = &mut self.qpairs[idx];
        let waiting = |s: u16| qp.machine.reqs[s as usize].state == ReqState::AwaitFused;
        let fused = qp.machine.reqs[slot as usize].fused;
        let pair = match fused {
            Fused::First { second: Some(s) } if waiting(s) => Ok((slot, s)),
            Fused::Second { first } if waiting(first) => Ok((first, slot)),
            Fused::First { .. } | Fused::Second { .. } => Err(None),
            Fused::Failed(st) => Err(Some(st)),
            Fused::None | Fused::Executing { .. } => Err(Some(Status::INTERNAL_ERROR)),
        };
        let req = &mut qp.machine.reqs[slot as usize];
        let (first, second) = match pair {
            Ok(p) => p,
            Err(None) => {
                req.state = ReqState::AwaitFused;
                return Ok(());
            }
            Err(Some(st)) => {
                req.fused = Fused::None;
                req.status = st;
                return self.respond(idx, slot);
            }
        };
        self.run_pair(idx, first, second)
    }

    /// Submits the compare-and-write of a pair whose halves are both ready, or answers
    /// both with the statuses the checks give.
    fn run_pair(&mut self, idx: usize, first: u16, second: u16) -> Result<(), Fatal> {
        let qp = &mut self.qpairs[idx];
        for s in [first, second] {
            let r = &mut qp.machine.reqs[s as usize];
            r.fused = Fused::None;
            r.state = ReqState::Executing;
        }
        let (c, w) = (
            qp.machine.reqs[first as usize].sqe,
            qp.machine.reqs[second as usize].sqe,
        );
        let chan = self
            .ns
            .get(&(qp.subsys_id, c.nsid.get()))
            .filter(|ch| ch.visible_to(qp.hostnqn.as_deref()));
        let geom = chan.map(NsChan::geometry);
        let mut verdict = io::plan_fused(
            &c,
            &w,
            geom.as_ref(),
            (
                qp.machine.reqs[first as usize].xfer,
                qp.machine.reqs[second as usize].xfer,
            ),
            qp.opts.max_io_size,
        );
        if let (Ok(_), Some(ana), Some(ch)) = (&verdict, qp.ana.as_deref(), chan) {
            if let Some(st) = ana.state(ch.anagrpid).path_status() {
                verdict = Err((st, st));
            }
        }
        // Reservations: the Compare needs read access, the Write write access.
        if let (Ok(_), Some(ch)) = (&verdict, chan) {
            let conflict = Status::RESERVATION_CONFLICT.with_dnr();
            let failed = Status::ABORTED_FAILED_FUSED;
            if super::reserve::conflicts(ch, &qp.hostid, c.opcode) {
                verdict = Err((conflict, failed));
            } else if super::reserve::conflicts(ch, &qp.hostid, w.opcode) {
                verdict = Err((failed, conflict));
            }
        }
        let (Ok((offset, blocks, len)), Some(chan)) = (verdict, chan) else {
            let (s1, s2) = verdict
                .err()
                .unwrap_or((Status::INTERNAL_ERROR, Status::INTERNAL_ERROR));
            return self.answer_pair(idx, first, second, s1, s2);
        };
        let (Some(mut cmp), Some(mut data)) = (
            qp.machine.reqs[first as usize].buf.take(),
            qp.machine.reqs[second as usize].buf.take(),
        ) else {
            let st = Status::INTERNAL_ERROR;
            return self.answer_pair(idx, first, second, st, st);
        };
        cmp.set_len(len);
        data.set_len(len);
        let token = io_token(idx, qp.gen, second);
        let req = &mut qp.machine.reqs[second as usize];
        let mut bio = req
            .io
            .take()
            .unwrap_or_else(|| BdevIo::new(IoType::CompareAndWrite, 0, 0));
        bio.reset_to(IoType::CompareAndWrite, offset, blocks);
        bio.bufs.clear();
        bio.bufs.push(cmp);
        bio.bufs.push(data);
        bio.token = token;
        req.fused = Fused::Executing { first };
        req.pending = 1;
        self.stats.pending_bdev_io += 1;
        chan.chan.submit(bio);
        Ok(())
    }

    /// The compare-and-write of the pair whose second command is `slot` completed.
    pub(super) fn fused_done(&mut self, idx: usize, slot: u16, st: bdev::IoStatus) {
        let qp = &mut self.qpairs[idx];
        let Fused::Executing { first } = std::mem::take(&mut qp.machine.reqs[slot as usize].fused)
        else {
            return;
        };
        let (s1, s2) = io::fused_status(st);
        let _ = self.answer_pair(idx, first, slot, s1, s2);
    }

    fn answer_pair(
        &mut self,
        idx: usize,
        first: u16,
        second: u16,
        s1: Status,
        s2: Status,
    ) -> Result<(), Fatal> {
        let qp = &mut self.qpairs[idx];
        for (s, st) in [(first, s1), (second, s2)] {
            let r = &mut qp.machine.reqs[s as usize];
            r.status = st;
            r.c2h_len = 0;
            r.fused = Fused::None;
        }
        self.respond(idx, first)?;
        self.respond(idx, second)
    }
}
