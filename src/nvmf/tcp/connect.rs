//! Fabrics commands on a queue pair: Connect with every check, Property Get/Set, Disconnect
//! (Authentication Send/Receive are in `auth.rs`).

use super::*;

impl PollGroup {
    pub(super) fn fabrics(&mut self, idx: usize, slot: u16, sqe: &Sqe) -> Result<(), Fatal> {
        let qp = &mut self.qpairs[idx];
        let Some(cmd) = FabricsCommand::parse(sqe) else {
            qp.machine.reqs[slot as usize].status = Status::INVALID_OPCODE.with_dnr();
            return self.respond(idx, slot);
        };
        let mut c2h_len = 0;
        let (status, value) = match cmd {
            FabricsCommand::Connect(_) if qp.qid.is_some() => {
                (Status::COMMAND_SEQUENCE_ERROR.with_dnr(), 0)
            }
            FabricsCommand::Connect(c) => match self.connect(idx, slot, &c) {
                Ok(dw0) => {
                    self.attach_qpair(idx);
                    (Status::SUCCESS, dw0 as u64)
                }
                Err((st, dw0)) => (st, dw0 as u64),
            },
            FabricsCommand::PropertyGet(p) => match (qp.qid, qp.ctrlr.as_ref()) {
                (Some(0), Some(c)) => c.property_get(&p, &qp.opts),
                (None, _) => (Status::COMMAND_SEQUENCE_ERROR.with_dnr(), 0),
                _ => (Status::INVALID_OPCODE.with_dnr(), 0),
            },
            FabricsCommand::PropertySet(p) => match (qp.qid, qp.ctrlr.as_mut()) {
                (Some(0), Some(c)) => {
                    let (st, _) = c.property_set(&p);
                    let enabled = c.csts.rdy();
                    if let Some(dir) = &qp.directory {
                        if let Some(e) = dir.lock().get_mut(&qp.cntlid) {
                            e.enabled = enabled;
                        }
                    }
                    (st, 0)
                }
                (None, _) => (Status::COMMAND_SEQUENCE_ERROR.with_dnr(), 0),
                _ => (Status::INVALID_OPCODE.with_dnr(), 0),
            },
            FabricsCommand::AuthenticationSend(a) => self.auth_send(idx, slot, &a),
            FabricsCommand::AuthenticationReceive(a) => {
                let (st, len) = self.auth_receive(idx, slot, &a);
                c2h_len = len;
                (st, 0)
            }
            FabricsCommand::Disconnect { .. } => {
                qp.machine.close(Instant::now() + CLOSE_LINGER);
                (Status::SUCCESS, 0)
            }
            _ => (Status::INVALID_OPCODE.with_dnr(), 0),
        };
        let qp = &mut self.qpairs[idx];
        let req = &mut qp.machine.reqs[slot as usize];
        req.status = status;
        req.dw0 = value as u32;
        req.c2h_len = if status.is_success() { c2h_len } else { 0 };
        if let Some(c) = qp.ctrlr.as_mut() {
            c.last_keep_alive = Instant::now();
        }
        // Property Get of 8 bytes returns DW1 too.
        if let FabricsCommand::PropertyGet(p) = cmd {
            if p.size8 {
                return self.respond_with_dw1(idx, slot, (value >> 32) as u32);
            }
        }
        self.respond(idx, slot)
    }

    /// Fabrics Connect: every check of a careful target. Returns DW0 or (status, DW0).
    pub(super) fn connect(
        &mut self,
        idx: usize,
        slot: u16,
        c: &wire::ConnectCmd,
    ) -> Result<u32, (Status, u32)> {
        let invalid = |in_data: bool, off: u16| {
            (
                Status::CONNECT_INVALID_PARAMETERS.with_dnr(),
                wire::connect_invalid_param_dw0(in_data, off),
            )
        };
        let view = self.view.clone();
        let core = self.core;
        let gen = self.qpairs[idx].gen;
        let (net, key) = (self.qpairs[idx].net, self.qpairs[idx].key);
        let tls_identity = self.nets[net]
            .group
            .sock(key)
            .and_then(|s| s.tls_identity());
        let qp = &mut self.qpairs[idx];
        if c.recfmt != 0 {
            return Err((Status::CONNECT_INCOMPATIBLE_FORMAT.with_dnr(), 0));
        }
        let data = qp.machine.reqs[slot as usize]
            .buf
            .as_deref()
            .and_then(ConnectData::decode_slice)
            .ok_or((Status::DATA_SGL_LENGTH_INVALID.with_dnr(), 0))?;
        if !data.subnqn.contains(&0) {
            return Err(invalid(true, connect_off::SUBNQN));
        }
        if !data.hostnqn.contains(&0) {
            return Err(invalid(true, connect_off::HOSTNQN));
        }
        let subnqn = data
            .subnqn_str()
            .ok_or(invalid(true, connect_off::SUBNQN))?;
        let hostnqn = data
            .hostnqn_str()
            .ok_or(invalid(true, connect_off::HOSTNQN))?
            .to_string();
        let Some(opts) = view.transport.clone() else {
            return Err(invalid(true, connect_off::SUBNQN));
        };
        let Some(s) = view.by_nqn(subnqn) else {
            tracing::info!(subnqn, "Connect to an unknown subsystem");
            return Err(invalid(true, connect_off::SUBNQN));
        };
        let listener_ok = if s.is_discovery() {
            view.has_listener(&qp.listen)
        } else {
            s.has_listener(&qp.listen)
        };
        if !listener_ok {
            return Err(invalid(true, connect_off::SUBNQN));
        }
        if !s.host_allowed(&hostnqn) {
            tracing::info!(subnqn, hostnqn, "Connect from a host that is not allowed");
            return Err((
                Status::CONNECT_INVALID_HOST.with_dnr(),
                wire::connect_invalid_param_dw0(true, connect_off::HOSTNQN),
            ));
        }
        if let Err(why) = tls::check_connect(tls_identity.as_deref(), s, &hostnqn, subnqn) {
            tracing::info!(subnqn, hostnqn, identity = ?tls_identity, ?why, "Connect refused for its transport security");
            return Err((
                Status::CONNECT_INVALID_HOST.with_dnr(),
                wire::connect_invalid_param_dw0(true, connect_off::HOSTNQN),
            ));
        }
        let max_depth = if c.qid == 0 {
            opts.max_aq_depth
        } else {
            opts.max_queue_depth
        };
        if c.sqsize == 0 || c.sqsize as u32 + 1 > max_depth as u32 {
            return Err(invalid(false, connect_off::SQSIZE));
        }
        let me = QpairRef {
            core,
            index: idx,
            gen,
        };
        let cntlid = if c.qid == 0 {
            if data.cntlid != wire::CNTLID_DYNAMIC {
                return Err(invalid(true, connect_off::CNTLID));
            }
            let entry = CtrlrEntry {
                admin: me,
                hostnqn: hostnqn.clone(),
                hostid: data.hostid,
                max_io_queues: opts.max_io_qpairs_per_ctrlr,
                enabled: false,
                io_qpairs: Default::default(),
                peer: qp.peer.clone(),
                listen: qp.listen.clone(),
            };
            let cntlid = s
                .directory
                .allocate(s.min_cntlid, s.max_cntlid, entry)
                .ok_or((Status::CONNECT_CONTROLLER_BUSY, 0))?;
            let mut ctrlr = Box::new(Ctrlr::new(cntlid, s, &hostnqn, data.hostid, c.kato, &opts));
            ctrlr.listen = Some(qp.listen.clone());
            qp.ctrlr = Some(ctrlr);
            self.stats.admin_qpairs += 1;
            self.stats.current_admin_qpairs += 1;
            tracing::info!(cntlid, subnqn, hostnqn, peer = %qp.peer, hdgst = qp.machine.tx().hdgst, ddgst = qp.machine.tx().ddgst, "controller created");
            cntlid
        } else {
            if s.is_discovery() {
                return Err(invalid(false, connect_off::QID));
            }
            let mut d = s.directory.lock();
            let e = d
                .get_mut(&data.cntlid.get())
                .ok_or(invalid(true, connect_off::CNTLID))?;
            if e.hostnqn != hostnqn {
                return Err(invalid(true, connect_off::HOSTNQN));
            }
            if e.hostid != data.hostid {
                return Err(invalid(true, connect_off::HOSTID));
            }
            if !e.enabled {
                return Err((Status::COMMAND_SEQUENCE_ERROR.with_dnr(), 0));
            }
            // An I/O queue belongs to the path (listener) of its controller's admin queue:
            // its ANA states are that path's.
            if !e.listen.same_endpoint(&qp.listen) {
                tracing::info!(
                    subnqn,
                    cntlid = data.cntlid.get(),
                    "I/O queue Connect on a listener other than the admin queue's"
                );
                return Err(invalid(false, connect_off::QID));
            }
            if c.qid > e.max_io_queues || e.io_qpairs.contains_key(&c.qid) {
                return Err(invalid(false, connect_off::QID));
            }
            e.io_qpairs.insert(c.qid, me);
            self.stats.io_qpairs += 1;
            self.stats.current_io_qpairs += 1;
            data.cntlid.get()
        };
        qp.qid = Some(c.qid);
        qp.machine.on_connect(c.qid, c.sqsize, opts.max_io_size);
        qp.sq_flow_disabled = c.cattr & 0x4 != 0;
        qp.subsys_id = s.id;
        qp.cntlid = cntlid;
        qp.hostnqn = Some(Arc::from(hostnqn.as_str()));
        qp.hostid = data.hostid;
        qp.directory = Some(s.directory.clone());
        qp.ana = crate::nvmf::ana::path_view(s, &qp.listen);
        let mut rx = *qp.dec.config();
        rx.max_in_capsule = if c.qid == 0 {
            ADMIN_IN_CAPSULE
        } else {
            opts.in_capsule_data_size
        };
        qp.dec.configure(rx);
        qp.opts = opts;
        // A host with a DH-HMAC-CHAP key authenticates every queue before using it.
        qp.auth = match s.host_keys.get(&hostnqn) {
            Some(_) => auth::QpAuth::Required {
                subnqn: Arc::from(subnqn),
            },
            None => auth::QpAuth::NotRequired,
        };
        let authreq = if qp.auth.allows_commands() {
            0
        } else {
            wire::CONNECT_AUTHREQ_ATR
        };
        Ok(wire::connect_success_dw0(cntlid) | authreq)
    }
}
