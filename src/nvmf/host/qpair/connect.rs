//! Bringing a queue pair up: the socket connect, ICReq, the Fabrics Connect command and DH-HMAC-CHAP authentication.

use super::{Completion, DataBuf, Qpair, QpairState, Request, TxConfig, AUTH_TAG, CONNECT_TAG};
use crate::buf::IoBuf;
use crate::nvmf::host::auth::{self, dhchap_sqe, AuthAction, QueueAuth};
use crate::nvmf::host::{io_buf_of, HostError};
use crate::nvmf::pdu::PduHeader;
use crate::nvmf::pdu_tx::push_header_chunk;
use crate::nvmf::wire::{
    nul_field, ConnectCmd, ConnectData, Cqe, FabricsCommand, SglDescriptor, CONNECT_AUTHREQ_ATR,
};
use zerocopy::IntoBytes;

/// Connect CATTR bit: disable SQ flow control.
pub(super) const CATTR_DISABLE_SQ_FLOW_CONTROL: u8 = 0x4;

impl Qpair {
    pub(super) fn poll_connect(&mut self) -> usize {
        let Some(mut sock) = self.connecting.take() else {
            return 0;
        };
        match sock.connect_status() {
            Ok(false) => {
                self.connecting = Some(sock);
                1
            }
            Ok(true) => match self.group.add(sock) {
                Ok(key) => {
                    self.key = Some(key);
                    let icreq = PduHeader::IcReq(self.icreq);
                    let mut req = self.take_req(0);
                    match push_header_chunk(&mut req.chunks, &icreq, 0, &TxConfig::default()) {
                        Ok(_) => {
                            self.queue(req);
                            self.state = QpairState::Initializing;
                        }
                        Err(e) => {
                            self.free_reqs.push(req);
                            self.fail(HostError::Invalid(format!("ICReq: {e}")), &mut Vec::new())
                        }
                    }
                    1
                }
                Err((e, _)) => {
                    self.fail(
                        HostError::Connection(format!("joining the sock group: {e}")),
                        &mut Vec::new(),
                    );
                    1
                }
            },
            Err(e) => {
                let err = HostError::Connection(format!(
                    "connect to {}:{}: {e}",
                    self.cfg.traddr, self.cfg.trsvcid
                ));
                self.fail(err, &mut Vec::new());
                1
            }
        }
    }

    pub(super) fn send_connect(&mut self, out: &mut Vec<Completion>) {
        let data = ConnectData {
            hostid: self.cfg.hostid,
            cntlid: self.cfg.cntlid.into(),
            subnqn: nul_field(&self.cfg.subnqn),
            hostnqn: nul_field(&self.cfg.hostnqn),
            ..Default::default()
        };
        let mut buf = IoBuf::with_len(ConnectData::SIZE);
        buf[..ConnectData::SIZE].copy_from_slice(data.as_bytes());
        let sqe = FabricsCommand::Connect(ConnectCmd {
            cid: 0,
            sgl: SglDescriptor::default(),
            recfmt: 0,
            qid: self.cfg.qid,
            sqsize: self.cfg.depth - 1,
            cattr: if self.cfg.disable_sq_flow_control {
                CATTR_DISABLE_SQ_FLOW_CONTROL
            } else {
                0
            },
            kato: if self.cfg.qid == 0 {
                self.cfg.kato_ms
            } else {
                0
            },
        })
        .to_sqe();
        if let Err((e, _)) = self.submit_inner(Request::new(sqe, DataBuf::Write(buf)), CONNECT_TAG)
        {
            self.fail(e, out);
        }
    }

    pub(super) fn on_connect_done(
        &mut self,
        result: Result<Cqe, HostError>,
        out: &mut Vec<Completion>,
    ) {
        match result {
            Ok(cqe) if cqe.status().is_success() => {
                self.cntlid = cqe.dw0.get() as u16;
                if cqe.dw0.get() & CONNECT_AUTHREQ_ATR == 0 {
                    self.state = QpairState::Ready;
                    return;
                }
                let Some(opts) = self.cfg.dhchap.clone() else {
                    return self.fail(
                        HostError::Auth {
                            reason: None,
                            detail: "the controller requires authentication and no \
                                     DH-HMAC-CHAP secret was given"
                                .into(),
                        },
                        out,
                    );
                };
                let (auth, action) = QueueAuth::start(&opts, &self.cfg.hostnqn, &self.cfg.subnqn);
                self.auth = Some(Box::new(auth));
                self.state = QpairState::Authenticating;
                self.on_auth_action(action, out);
            }
            Ok(cqe) => self.fail(
                HostError::Nvme {
                    status: cqe.status(),
                    dw0: cqe.dw0.get(),
                },
                &mut Vec::new(),
            ),
            Err(e) => self.fail(e, &mut Vec::new()),
        }
    }

    /// Carries out the transaction's next step: an authentication command, or the end.
    pub(super) fn on_auth_action(&mut self, action: AuthAction, out: &mut Vec<Completion>) {
        let req = match action {
            AuthAction::Send(payload) => {
                let sqe = dhchap_sqe(true, payload.len() as u32);
                Request::new(sqe, DataBuf::Write(io_buf_of(&payload)))
            }
            AuthAction::Receive => {
                let len = auth::RECEIVE_LEN.min(self.cfg.max_transfer as usize);
                Request::new(
                    dhchap_sqe(false, len as u32),
                    DataBuf::Read(IoBuf::with_len(len)),
                )
            }
            AuthAction::Done => {
                self.auth = None;
                self.state = QpairState::Ready;
                return;
            }
            AuthAction::Fail(e) => {
                self.auth = None;
                return self.fail(e, out);
            }
        };
        if let Err((e, _)) = self.submit_inner(req, AUTH_TAG) {
            self.auth = None;
            self.fail(e, out);
        }
    }
}
