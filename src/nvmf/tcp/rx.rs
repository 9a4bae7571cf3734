//! The receive side of a queue pair: draining its socket through the PDU decoder, data
//! received straight into command buffers, and capsules landed by `rx_landing`.

use super::*;

impl PollGroup {
    /// Drains the socket of a queue pair through its decoder.
    pub(super) fn on_readable(&mut self, idx: usize) {
        let Some(qp) = self.qpairs.get_mut(idx) else {
            return;
        };
        if qp.machine.closing() {
            // Discard input while the Term Req leaves.
            let mut scratch = [0u8; 512];
            if let Some(sock) = self.nets[qp.net].group.sock(qp.key) {
                loop {
                    match sock.recv(&mut scratch) {
                        Ok(0) => {
                            self.to_close.push((idx, qp.gen));
                            break;
                        }
                        Ok(_) => continue,
                        Err(_) => break,
                    }
                }
            }
            return;
        }
        if qp.rx.is_empty() {
            qp.rx = vec![0u8; RX_BUF_LEN];
        }
        let mut rx = std::mem::take(&mut qp.rx);
        let result = self.drain(idx, &mut rx);
        if let Some(qp) = self.qpairs.get_mut(idx) {
            qp.rx = rx;
        }
        match result {
            Ok(()) => {}
            Err(Fatal::Closed) => self.close_qpair(idx),
            Err(Fatal::Protocol(e)) => self.send_term_req(idx, &e),
        }
    }

    pub(super) fn drain(&mut self, idx: usize, rx: &mut [u8]) -> Result<(), Fatal> {
        loop {
            // 1. Decode what is buffered.
            loop {
                let qp = &mut self.qpairs[idx];
                if qp.machine.closing() {
                    return Ok(());
                }
                let (pos, len) = (qp.rx_pos, qp.rx_len);
                let (used, ev) = qp.dec.feed(&rx[pos..len]).map_err(Fatal::Protocol)?;
                qp.rx_pos += used;
                match ev {
                    None => break,
                    Some(ev) => self.on_event(idx, ev)?,
                }
            }
            // 2. Receive more: straight into the command buffer when inside its data.
            let qp = &mut self.qpairs[idx];
            let Some(sock) = self.nets[qp.net].group.sock(qp.key) else {
                return Err(Fatal::Closed);
            };
            let landing = if qp.dec.at_pdu_start() {
                qp.landing.plan(qp.machine.free_slots(), rx.len())
            } else {
                0
            };
            if landing > 0 {
                match qp.landing.receive(landing, sock, rx) {
                    Ok(l) if l.n == 0 => return Err(Fatal::Closed),
                    Ok(l) => {
                        self.process_landed(idx, rx, &l)?;
                        continue;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => return Err(Fatal::Closed),
                }
            }
            let pending = qp.dec.data_pending().filter(|p| p.len >= DIRECT_RECV_MIN);
            let direct = pending.and_then(|p| qp.machine.data_buffer(p.offset, p.len as usize));
            if let Some(dst) = direct {
                match sock.recv(dst) {
                    Ok(0) => return Err(Fatal::Closed),
                    Ok(n) => {
                        let _ = qp.dec.data_received(&dst[..n]);
                        continue;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => return Err(Fatal::Closed),
                }
            }
            match sock.recv(rx) {
                Ok(0) => return Err(Fatal::Closed),
                Ok(n) => {
                    qp.rx_pos = 0;
                    qp.rx_len = n;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return Err(Fatal::Closed),
            }
        }
    }

    /// Decodes what a landing receive placed (see `rx_landing.rs`): each speculated capsule
    /// whose header has the expected shape is decoded from its header slot, its data
    /// stays in the buffer the command took, and its digest is checked from the slot; at
    /// the first header of another shape the rest is copied back to the staging buffer in
    /// wire order and decoded from there.
    pub(super) fn process_landed(
        &mut self,
        idx: usize,
        rx: &mut [u8],
        landed: &Landed,
    ) -> Result<(), Fatal> {
        let shape = landed.shape;
        let digest_len = landed.shape.pdu_len() - shape.pdo - shape.data_len;
        let mut left = landed.n;
        let qp = &mut self.qpairs[idx];
        qp.rx_pos = 0;
        qp.rx_len = 0;
        for i in 0..landed.count {
            let qp = &mut self.qpairs[idx];
            if left == 0 || qp.machine.closing() {
                break;
            }
            let h = left.min(shape.pdo);
            if !shape.matches(&qp.landing.header_slot(i)[..h]) {
                qp.rx_len = qp.landing.linearize(landed, i, 0, rx);
                return Ok(());
            }
            // The header and data digest bytes, copied out so decoding can borrow self.
            let mut slot = [0u8; HDR_SLOT];
            let slot_len = shape.pdo + digest_len;
            slot[..slot_len].copy_from_slice(&qp.landing.header_slot(i)[..slot_len]);
            qp.landing.arm_next();
            left -= h;
            self.feed_slice(idx, &slot[..h])?;
            if h < shape.pdo {
                break;
            }
            let d = left.min(shape.data_len);
            left -= d;
            let qp = &mut self.qpairs[idx];
            match qp.landing.take_current() {
                // The command took the landed buffer: its bytes are the PDU's data.
                None => {
                    let Some((slot, _)) = qp.machine.data_target() else {
                        return Err(Fatal::Closed);
                    };
                    let Some(buf) = qp.machine.reqs[slot as usize].buf.as_ref() else {
                        return Err(Fatal::Closed);
                    };
                    qp.dec.data_received(&buf[..d]).map_err(|_| Fatal::Closed)?;
                    self.stats.in_capsule_landed += 1;
                }
                // Not taken (the command failed its checks, or the queue is closing): the
                // data goes through the decoder as usual.
                Some(buf) => {
                    let fed = self.feed_slice(idx, &buf[..d]);
                    self.qpairs[idx].landing.keep_spare(buf);
                    fed?;
                }
            }
            if d < shape.data_len {
                break;
            }
            let g = left.min(digest_len);
            left -= g;
            // With a digest this completes it; without, it collects the data's end.
            self.feed_slice(idx, &slot[shape.pdo..shape.pdo + g])?;
        }
        let qp = &mut self.qpairs[idx];
        qp.landing.release_all();
        qp.rx_len = landed.tail_bytes();
        Ok(())
    }

    /// Decodes `bytes` received outside the staging buffer and acts on each event.
    pub(super) fn feed_slice(&mut self, idx: usize, mut bytes: &[u8]) -> Result<(), Fatal> {
        loop {
            let qp = &mut self.qpairs[idx];
            if qp.machine.closing() {
                return Ok(());
            }
            let (used, ev) = qp.dec.feed(bytes).map_err(Fatal::Protocol)?;
            bytes = &bytes[used..];
            match ev {
                None => return Ok(()),
                Some(ev) => self.on_event(idx, ev)?,
            }
        }
    }
}
