//! The send side of a queue pair: responses (C2HData and CapsuleResp) batched into write
//! requests, Term Reqs, and queuing on the socket in the order PDUs were produced.

use super::*;

impl PollGroup {
    pub(super) fn send_term_req(&mut self, idx: usize, err: &PduError) {
        let Some(qp) = self.qpairs.get_mut(idx) else {
            return;
        };
        tracing::warn!(peer = %qp.peer, error = %err, "NVMe/TCP protocol error: sending C2HTermReq");
        let mut out = [0u8; TERM_REQ_MAX_PLEN];
        let n = encode_term_req(pdu::Role::Target, err, qp.dec.error_header(), &mut out);
        let mut w = qp.write_request(TOKEN_TERM);
        if let Some(c) = Chunk::inline(&out[..TERM_REQ_HLEN.min(n)]) {
            w.chunks.push(c);
        }
        if n > TERM_REQ_HLEN {
            if let Some(c) = Chunk::inline(&out[TERM_REQ_HLEN..n]) {
                w.chunks.push(c);
            }
        }
        qp.machine.close(Instant::now() + CLOSE_LINGER);
        qp.term_sent = true;
        self.stats.term_reqs_sent += 1;
        if err.fes == pdu::Fes::HEADER_DIGEST_ERROR {
            self.stats.hdr_digest_errors += 1;
        }
        self.queue_write(idx, w);
        self.flush(idx);
    }

    /// Queues `w` on the queue pair's socket after any open batch of responses (PDUs leave
    /// in the order they were produced).
    pub(super) fn queue_write(&mut self, idx: usize, w: WriteRequest) {
        self.submit_batch(idx);
        let Some(qp) = self.qpairs.get_mut(idx) else {
            return;
        };
        if let Some(sock) = self.nets[qp.net].group.sock(qp.key) {
            qp.writes_in_flight += w.chunks.len();
            sock.writev_async(w);
        }
    }

    /// Queues the open batch of responses of a queue pair on its socket.
    pub(super) fn submit_batch(&mut self, idx: usize) {
        let Some(qp) = self.qpairs.get_mut(idx) else {
            return;
        };
        let Some(w) = qp.tx_batch.take() else {
            return;
        };
        if let Some(sock) = self.nets[qp.net].group.sock(qp.key) {
            qp.writes_in_flight += w.chunks.len();
            sock.writev_async(w);
        }
    }

    pub(super) fn respond_with_dw1(
        &mut self,
        idx: usize,
        slot: u16,
        dw1: u32,
    ) -> Result<(), Fatal> {
        self.send_response(idx, slot, dw1);
        Ok(())
    }

    pub(super) fn respond(&mut self, idx: usize, slot: u16) -> Result<(), Fatal> {
        self.send_response(idx, slot, 0);
        Ok(())
    }

    /// Sends the completion of `slot` (C2HData and/or CapsuleResp) and frees the slot.
    pub(super) fn send_response(&mut self, idx: usize, slot: u16, dw1: u32) {
        let Some(qp) = self.qpairs.get_mut(idx) else {
            return;
        };
        // A half of a fused pair answered alone fails the other half.
        let orphan = if qp.machine.reqs[slot as usize].fused.is_paired() {
            fused::unlink(qp, slot)
        } else {
            None
        };
        if let Some(o) = orphan {
            self.send_response(idx, slot, dw1);
            return self.send_response(idx, o, 0);
        }
        if qp.term_sent {
            // Commands completing after a Term Req are dropped with the connection.
            qp.machine.release(slot);
            return;
        }
        let closing = qp.machine.closing();
        let tx = qp.machine.tx();
        let qid = qp.qid.unwrap_or(0);
        let sqhd = qp.machine.sqhd();
        let c2h_success_ok = qp.opts.c2h_success && qp.sq_flow_disabled;
        // Responses are appended to one open batch per queue pair, queued on the socket by
        // the next poll (or once full): one write request, one completion and one pool round
        // trip per batch instead of per command.
        let opened = qp.tx_batch.is_none();
        let mut w = match qp.tx_batch.take() {
            Some(w) => w,
            None => qp.write_request(TOKEN_PLAIN),
        };
        let req = &mut qp.machine.reqs[slot as usize];
        let mut cqe = Cqe {
            dw0: req.dw0.into(),
            dw1: dw1.into(),
            sqhd: sqhd.into(),
            sqid: qid.into(),
            cid: req.sqe.cid,
            sf: U16::ZERO,
        };
        cqe.set_status(req.status);
        let mut need_resp = true;
        if req.status.is_success() && req.c2h_len > 0 {
            if let Some(buf) = req.buf.take() {
                let len = req.c2h_len.min(buf.len());
                let success = c2h_success_ok && cqe.dw0 == 0 && dw1 == 0;
                let hdr = PduHeader::C2HData(C2HData {
                    cccid: cqe.cid.get(),
                    datao: 0,
                    datal: len as u32,
                    last: true,
                    success,
                });
                if let Some(enc) = push_header(&mut w.chunks, &hdr, len as u32, &tx) {
                    // A zero-copy read is only asked for without a data digest (see `io`).
                    let shared = req.shared.take();
                    let digest =
                        (enc.data_digest && shared.is_none()).then(|| digest_of(&[&buf[..len]]));
                    match shared {
                        Some(r) => {
                            drop(buf);
                            w.chunks.push(Chunk::Shared {
                                mem: r.mem,
                                off: r.off,
                                len: len.min(r.len),
                            });
                        }
                        None => w.chunks.push(Chunk::Buf { buf, off: 0, len }),
                    }
                    if let Some(d) = digest.and_then(|d| Chunk::inline(&d)) {
                        w.chunks.push(d);
                    }
                    need_resp = !success;
                }
            }
        }
        if need_resp {
            push_header(&mut w.chunks, &PduHeader::CapsuleResp(cqe), 0, &tx);
        }
        qp.machine.release(slot);
        if qp.writes_in_flight > MAX_CHUNKS_PER_SLOT * qp.machine.reqs.len() + 48 {
            // The host keeps sending commands but does not read the answers.
            tracing::warn!(peer = %qp.peer, "host does not read its completions: closing");
            self.to_close.push((idx, qp.gen));
        }
        let disconnect = closing && cqe.status().is_success();
        if disconnect {
            // Disconnect: answer, then close once it left.
            w.token |= TOKEN_TERM;
        }
        let full = w.chunks.len() >= BATCH_MAX_CHUNKS;
        let gen = qp.gen;
        qp.tx_batch = Some(w);
        if disconnect || full {
            self.submit_batch(idx);
        } else if opened {
            self.tx_open.push((idx, gen));
        }
    }

    pub(super) fn flush(&mut self, idx: usize) {
        if let Some(qp) = self.qpairs.get(idx) {
            if let Some(sock) = self.nets[qp.net].group.sock(qp.key) {
                let _ = sock.flush();
            }
        }
    }
}
