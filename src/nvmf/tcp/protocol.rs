//! The queue pair's PDU state machine: the IC exchange, command capsules, R2T and H2CData,
//! and the dispatch of a command whose data is in.

use super::*;

impl PollGroup {
    pub(super) fn on_event(&mut self, idx: usize, ev: RxEvent<'_>) -> Result<(), Fatal> {
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

    pub(super) fn on_header(
        &mut self,
        idx: usize,
        header: PduHeader,
        data_len: u32,
    ) -> Result<(), Fatal> {
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
                req.fused = fused::Fused::None;
                self.pair_fused(idx, slot)?;
                let qp = &mut self.qpairs[idx];
                let req = &mut qp.reqs[slot as usize];
                if data_len > 0 {
                    req.state = ReqState::Capsule;
                    req.xfer = data_len;
                    if let Err(status) = state::admit_in_capsule(&sqe.dptr, data_len) {
                        req.status = status;
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
                let dir = match state::plan_transfer(&sqe, qp.opts.max_io_size) {
                    Ok(state::Transfer::None) => {
                        req.xfer = 0;
                        return self.execute(idx, slot);
                    }
                    Ok(state::Transfer::Data { dir, len }) => {
                        req.xfer = len;
                        dir
                    }
                    Err((len, status)) => {
                        req.xfer = len;
                        req.status = status;
                        return self.respond(idx, slot);
                    }
                };
                match dir {
                    DataDirection::HostToController => {
                        req.buf = Some(IoBuf::with_len(req.xfer as usize));
                        req.state = ReqState::AwaitH2C;
                        self.send_r2t(idx, slot);
                        Ok(())
                    }
                    DataDirection::ControllerToHost => {
                        // Admin data is built in this buffer; reads allocate at submit.
                        if qp.qid.is_none_or(|q| q == 0) || sqe.is_fabrics() {
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
                state::admit_h2c_data(&h, &req.r2t, req.received, data_len)
                    .map_err(Fatal::Protocol)?;
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

    pub(super) fn on_icreq(
        &mut self,
        idx: usize,
        req: &IcReq,
        view: &TargetView,
    ) -> Result<(), Fatal> {
        let qp = &mut self.qpairs[idx];
        let opts = view.transport.clone().unwrap_or_default();
        let state::IcOutcome {
            resp,
            tx,
            rx,
            depth,
        } = state::ic_exchange(qp.state, req, &opts).map_err(Fatal::Protocol)?;
        qp.dec.configure(rx);
        qp.tx = tx;
        qp.maxh2cdata = resp.maxh2cdata;
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

    pub(super) fn send_r2t(&mut self, idx: usize, slot: u16) {
        let qp = &mut self.qpairs[idx];
        let req = &mut qp.reqs[slot as usize];
        let r2t = state::next_r2t(
            req.sqe.cid.get(),
            slot,
            req.xfer,
            req.received,
            qp.maxh2cdata,
        );
        req.r2t = r2t;
        let tx = qp.tx;
        let mut w = qp.write_request(TOKEN_PLAIN);
        push_header(&mut w.chunks, &PduHeader::R2T(r2t), 0, &tx);
        self.queue_write(idx, w);
    }

    pub(super) fn on_data_end(&mut self, idx: usize, digest_ok: bool) -> Result<(), Fatal> {
        if !digest_ok {
            self.stats.data_digest_errors += 1;
        }
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
                match state::h2c_data_end(req.received, req.xfer, &req.r2t) {
                    state::H2cNext::SendR2t => {
                        self.send_r2t(idx, slot);
                        return Ok(());
                    }
                    state::H2cNext::Wait => return Ok(()),
                    state::H2cNext::Complete => {}
                }
                if !req.status.is_success() {
                    return self.respond(idx, slot);
                }
                req.state = ReqState::Executing;
                self.execute(idx, slot)
            }
        }
    }

    pub(super) fn execute(&mut self, idx: usize, slot: u16) -> Result<(), Fatal> {
        let qp = &mut self.qpairs[idx];
        let sqe = qp.reqs[slot as usize].sqe;
        if sqe.is_fabrics() {
            return self.fabrics(idx, slot, &sqe);
        }
        if !qp.auth.allows_commands() {
            qp.reqs[slot as usize].status = Status::AUTHENTICATION_REQUIRED.with_dnr();
            return self.respond(idx, slot);
        }
        match qp.qid {
            None => {
                qp.reqs[slot as usize].status = Status::COMMAND_SEQUENCE_ERROR.with_dnr();
                self.respond(idx, slot)
            }
            Some(0) if sqe.fuse() != wire::fuse::NORMAL => {
                // No admin command is fused (as SPDK).
                qp.reqs[slot as usize].status = Status::INVALID_FIELD.with_dnr();
                self.respond(idx, slot)
            }
            Some(0) => self.admin(idx, slot, &sqe),
            Some(_) => self.io(idx, slot, &sqe),
        }
    }
}
