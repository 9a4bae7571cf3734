//! The queue pair's receive path: reading the socket, decoding PDUs, C2HData into the command's buffer, R2Ts.

use super::{Cmd, Completion, Dir, Qpair, QpairState, R2tState, RxData, DIRECT_RECV_MIN};
use crate::nvmf::host::HostError;
use crate::nvmf::pdu::{
    check_c2h_data, check_r2t, field_off, host_negotiate, PduError, PduHeader, RxEvent,
    MIN_MAXH2CDATA, PFV_1_0,
};
use crate::nvmf::wire::{Cqe, Status};
use slab::Slab;
use std::io;

impl Qpair {
    pub(super) fn on_readable(&mut self, out: &mut Vec<Completion>) {
        let mut staging = std::mem::take(&mut self.staging);
        while matches!(
            self.state,
            QpairState::Initializing
                | QpairState::FabricsConnect
                | QpairState::Authenticating
                | QpairState::Ready
        ) {
            if self.recv_direct(out) {
                continue;
            }
            let Some(sock) = self.sock() else { break };
            match sock.recv(&mut staging) {
                Ok(0) => {
                    self.fail(
                        HostError::Connection("connection closed by the controller".into()),
                        out,
                    );
                    break;
                }
                Ok(n) => self.consume(&staging[..n], out),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.fail(HostError::Connection(format!("receive: {e}")), out);
                    break;
                }
            }
        }
        self.staging = staging;
    }

    /// Receives the rest of the current C2HData straight into its command's buffer. Returns
    /// true when bytes arrived (the caller loops), false when there is nothing to do that way.
    pub(super) fn recv_direct(&mut self, out: &mut Vec<Completion>) -> bool {
        let pending = self.dec.data_pending().filter(|p| p.len >= DIRECT_RECV_MIN);
        let (Some(p), Some(rx)) = (pending, self.rx) else {
            return false;
        };
        let Some(key) = self.key else { return false };
        let Some(cmd) = self.cmds.get_mut(rx.cid as usize) else {
            return false;
        };
        let Some(buf) = cmd.buf.as_mut() else {
            return false;
        };
        let start = rx.datao as usize + p.offset as usize;
        let Some(dest) = buf.get_mut(start..start + p.len as usize) else {
            return false;
        };
        let Some(sock) = self.group.sock(key) else {
            return false;
        };
        match sock.recv(dest) {
            Ok(0) => {
                self.fail(
                    HostError::Connection("connection closed by the controller".into()),
                    out,
                );
                false
            }
            Ok(n) => {
                if self.dec.data_received(&dest[..n]).is_err() {
                    self.fail(HostError::Protocol("host receive accounting".into()), out);
                    return false;
                }
                // Collect DataEnd (and nothing else: the input is empty).
                self.consume(&[], out);
                true
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => true,
            Err(e) => {
                self.fail(HostError::Connection(format!("receive: {e}")), out);
                false
            }
        }
    }

    /// Feeds received bytes through the decoder and acts on every event.
    pub(super) fn consume(&mut self, mut input: &[u8], out: &mut Vec<Completion>) {
        loop {
            if matches!(self.state, QpairState::Failed(_) | QpairState::Closed) {
                return;
            }
            let (used, ev) = match self.dec.feed(input) {
                Ok(x) => x,
                Err(e) => {
                    self.send_term_req(&e);
                    self.fail(e.into(), out);
                    return;
                }
            };
            input = &input[used..];
            let Some(ev) = ev else { return };
            let res = match ev {
                RxEvent::Header { header, data_len } => self.on_header(header, data_len, out),
                RxEvent::Data { offset, bytes } => {
                    self.on_data(offset, bytes);
                    Ok(())
                }
                RxEvent::DataEnd { digest_ok } => {
                    self.on_data_end(digest_ok, out);
                    Ok(())
                }
            };
            if let Err(e) = res {
                self.send_term_req(&e);
                self.fail(e.into(), out);
                return;
            }
        }
    }

    pub(super) fn on_header(
        &mut self,
        header: PduHeader,
        data_len: u32,
        out: &mut Vec<Completion>,
    ) -> Result<(), PduError> {
        match header {
            PduHeader::IcResp(resp) => {
                if self.state != QpairState::Initializing {
                    return Err(PduError::new(
                        crate::nvmf::pdu::Fes::PDU_SEQUENCE_ERROR,
                        0,
                        "unexpected ICResp",
                    ));
                }
                if resp.pfv != PFV_1_0 {
                    return Err(PduError::field(
                        field_off::PFV,
                        "unsupported PDU format version",
                    ));
                }
                if resp.maxh2cdata < MIN_MAXH2CDATA || resp.maxh2cdata % 4 != 0 {
                    return Err(PduError::field(
                        field_off::IC_LIMIT,
                        "MAXH2CDATA below 4096 or not dword aligned",
                    ));
                }
                let (tx, rx) = host_negotiate(&self.icreq, &resp, self.cfg.max_transfer)?;
                self.tx = tx;
                self.maxh2cdata = resp.maxh2cdata;
                self.dec.configure(rx);
                self.state = QpairState::FabricsConnect;
                self.send_connect(out);
                Ok(())
            }
            PduHeader::CapsuleResp(cqe) => {
                let cid = cqe.cid;
                if !self.cmds.contains(cid.get() as usize) {
                    return Err(PduError::field(
                        field_off::CQE_CID,
                        "response for a command not in flight",
                    ));
                }
                let cmd = &mut self.cmds[cid.get() as usize];
                if cmd.resp.is_some() {
                    return Err(PduError::field(
                        field_off::CQE_CID,
                        "second response for a command",
                    ));
                }
                cmd.resp = Some(cqe);
                self.try_complete(cid.get(), out);
                Ok(())
            }
            PduHeader::C2HData(d) => {
                let cmd = cmd_in_flight(
                    &mut self.cmds,
                    d.cccid,
                    "C2HData for a command not in flight",
                )?;
                if cmd.dir != Dir::Read || cmd.buf.is_none() || cmd.resp.is_some() {
                    return Err(PduError::field(
                        field_off::CCCID,
                        "C2HData for a command without read data",
                    ));
                }
                if d.success && !d.last {
                    return Err(PduError::field(
                        field_off::FLAGS,
                        "SUCCESS without LAST_PDU",
                    ));
                }
                check_c2h_data(&d, cmd.len, cmd.received)?;
                self.rx = Some(RxData {
                    cid: d.cccid,
                    datao: d.datao,
                    datal: data_len,
                    success: d.success,
                });
                Ok(())
            }
            PduHeader::R2T(r) => {
                let cmd =
                    cmd_in_flight(&mut self.cmds, r.cccid, "R2T for a command not in flight")?;
                if cmd.dir != Dir::Write || cmd.resp.is_some() {
                    return Err(PduError::field(
                        field_off::CCCID,
                        "R2T for a command without write data",
                    ));
                }
                if r.r2tl == 0 {
                    return Err(PduError::field(field_off::DATAL, "R2T of zero bytes"));
                }
                let outstanding = cmd.r2t.is_some() as u32;
                check_r2t(&r, cmd.len, outstanding, self.icreq.maxr2t)?;
                cmd.r2t = Some(R2tState {
                    ttag: r.ttag,
                    next: r.r2to,
                    end: r.r2to + r.r2tl,
                    inflight: 0,
                });
                self.send_h2c(r.cccid, out);
                Ok(())
            }
            PduHeader::C2HTermReq(t) => {
                self.fail(
                    HostError::Protocol(format!(
                        "controller terminated the connection: {:?} fei {}",
                        t.fes, t.fei
                    )),
                    out,
                );
                Ok(())
            }
            _ => Err(PduError::field(field_off::PDU_TYPE, "unexpected PDU type")),
        }
    }

    pub(super) fn on_data(&mut self, offset: u32, bytes: &[u8]) {
        let Some(rx) = self.rx else { return };
        if let Some(buf) = self
            .cmds
            .get_mut(rx.cid as usize)
            .and_then(|c| c.buf.as_mut())
        {
            let start = rx.datao as usize + offset as usize;
            if let Some(dest) = buf.get_mut(start..start + bytes.len()) {
                crate::buf::copy_bytes(dest, bytes);
            }
        }
    }

    pub(super) fn on_data_end(&mut self, digest_ok: bool, out: &mut Vec<Completion>) {
        let Some(rx) = self.rx.take() else { return };
        let Some(cmd) = self.cmds.get_mut(rx.cid as usize) else {
            return;
        };
        cmd.received += rx.datal;
        if !digest_ok {
            cmd.error = Some(HostError::DataDigest);
        }
        if rx.success {
            cmd.resp = Some(Cqe::new(rx.cid, Status::SUCCESS));
            self.try_complete(rx.cid, out);
        }
    }
}

/// The command a C2HData or R2T PDU names by CCCID, or the CCCID error `msg`.
fn cmd_in_flight<'a>(
    cmds: &'a mut Slab<Cmd>,
    cccid: u16,
    msg: &'static str,
) -> Result<&'a mut Cmd, PduError> {
    cmds.get_mut(cccid as usize)
        .ok_or_else(|| PduError::field(field_off::CCCID, msg))
}
