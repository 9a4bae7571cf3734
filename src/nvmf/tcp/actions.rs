//! The shell around a queue pair's protocol machine: feeding it the decoder's events,
//! carrying out its actions on the socket and dispatching the commands it hands over.

use super::*;

impl PollGroup {
    pub(super) fn on_event(&mut self, idx: usize, ev: RxEvent<'_>) -> Result<(), Fatal> {
        match ev {
            RxEvent::Header { header, data_len } => self.on_header(idx, header, data_len),
            RxEvent::Data { offset, bytes } => {
                self.qpairs[idx].machine.on_data(offset, bytes);
                Ok(())
            }
            RxEvent::DataEnd { digest_ok } => {
                if !digest_ok {
                    self.stats.data_digest_errors += 1;
                }
                let action = self.qpairs[idx].machine.on_data_end(digest_ok);
                self.carry_out(idx, action)
            }
        }
    }

    fn on_header(&mut self, idx: usize, header: PduHeader, data_len: u32) -> Result<(), Fatal> {
        let qp = &mut self.qpairs[idx];
        let capsule = matches!(header, PduHeader::CapsuleCmd(_));
        let shape = (capsule && data_len > 0).then(|| CapsuleShape {
            pdo: qp.dec.header_len(),
            data_len: data_len as usize,
            ddgst: qp.dec.has_data_digest(),
        });
        qp.landing.observe(shape);
        let action = qp
            .machine
            .on_header(&header, data_len, self.view.transport.as_ref());
        if capsule {
            if let Some(slot) = action.slot() {
                self.pair_fused(idx, slot)?;
            }
        }
        self.carry_out(idx, action)
    }

    /// Does what the queue's protocol machine decided.
    fn carry_out(&mut self, idx: usize, action: Action) -> Result<(), Fatal> {
        let qp = &mut self.qpairs[idx];
        match action {
            Action::Wait => Ok(()),
            Action::SendIcResp { resp, rx } => {
                qp.dec.configure(rx);
                qp.opts = self.view.transport.clone().unwrap_or_default();
                let mut w = qp.write_request(TOKEN_PLAIN);
                let hdr = PduHeader::IcResp(resp);
                push_header(&mut w.chunks, &hdr, 0, &TxConfig::default());
                self.queue_write(idx, w);
                Ok(())
            }
            Action::ReceiveCapsule { slot, len } => {
                let req = &mut qp.machine.reqs[slot as usize];
                if req.status.is_success() {
                    // Landed data (see `process_landed`) or a buffer to copy it into.
                    let len = len as usize;
                    let landed = qp.landing.take_buffer(len);
                    req.buf = Some(landed.unwrap_or_else(|| IoBuf::with_len(len)));
                }
                Ok(())
            }
            Action::SendR2t(r2t) => {
                let tx = qp.machine.tx();
                let mut w = qp.write_request(TOKEN_PLAIN);
                push_header(&mut w.chunks, &PduHeader::R2T(r2t), 0, &tx);
                self.queue_write(idx, w);
                Ok(())
            }
            Action::Execute(slot) => self.execute(idx, slot),
            Action::Respond(slot) => self.respond(idx, slot),
            Action::Fatal(e) => Err(Fatal::Protocol(e)),
            Action::HostTerminated(t) => {
                tracing::info!(peer = %qp.peer, fes = ?t.fes, fei = t.fei, "host terminated the connection");
                Err(Fatal::Closed)
            }
        }
    }

    /// Runs a command whose data is in: fabrics, admin or I/O.
    pub(super) fn execute(&mut self, idx: usize, slot: u16) -> Result<(), Fatal> {
        let qp = &mut self.qpairs[idx];
        let sqe = qp.machine.reqs[slot as usize].sqe;
        if sqe.is_fabrics() {
            return self.fabrics(idx, slot, &sqe);
        }
        if !qp.auth.allows_commands() {
            qp.machine.reqs[slot as usize].status = Status::AUTHENTICATION_REQUIRED.with_dnr();
            return self.respond(idx, slot);
        }
        match qp.qid {
            None => {
                qp.machine.reqs[slot as usize].status = Status::COMMAND_SEQUENCE_ERROR.with_dnr();
                self.respond(idx, slot)
            }
            Some(0) if sqe.fuse() != wire::fuse::NORMAL => {
                // No admin command is fused (as SPDK).
                qp.machine.reqs[slot as usize].status = Status::INVALID_FIELD.with_dnr();
                self.respond(idx, slot)
            }
            Some(0) => self.admin(idx, slot, &sqe),
            Some(_) => self.io(idx, slot, &sqe),
        }
    }
}
