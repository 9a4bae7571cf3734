//! A small blocking NVMe/TCP host for the target's integration tests, built on the codec
//! (`pollux::nvmf::{pdu, spec}`) and `std::net::TcpStream`: IC exchange with optional
//! digests, fabrics Connect / Property Get / Set, admin and I/O commands with in-capsule or
//! R2T-solicited write data and C2HData reads (with or without the SUCCESS flag), and raw
//! byte access for malformed-PDU tests. Completions of other commands (AERs) that arrive
//! while waiting are kept for `wait_completion`.

#![allow(dead_code)]

use pollux::nvmf::pdu::{
    self, encode_pdu, C2HData, DecodedPdu, H2CData, IcReq, IcResp, PduAssembler, PduDecoder,
    PduHeader, Role, RxConfig, TxConfig,
};
use pollux::nvmf::wire::{
    self, admin_opc, aen, feat, log_id, prop, ConnectData, Cqe, FabricsCommand, SglDescriptor, Sqe,
    Status,
};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

pub const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:11111111-2222-3333-4444-555555555555";
pub const HOSTID: [u8; 16] = [
    0x11, 0x11, 0x11, 0x11, 0x22, 0x22, 0x33, 0x33, 0x44, 0x44, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55,
];

/// What a command returned: its completion and the data it read.
#[derive(Debug)]
pub struct Done {
    pub cqe: Cqe,
    pub data: Vec<u8>,
}

impl Done {
    pub fn ok(&self) -> bool {
        self.cqe.status().is_success()
    }

    /// Panics, showing the status, unless the command failed with `expected`'s code.
    pub fn assert_code(&self, expected: Status) {
        let status = self.cqe.status();
        assert!(status.same_code(expected), "{status:?}");
    }
}

pub struct Host {
    pub stream: TcpStream,
    dec: PduDecoder,
    asm: PduAssembler,
    pub tx: TxConfig,
    pub maxh2cdata: u32,
    /// In-capsule data this host sends (bytes); larger writes use R2T.
    pub in_capsule: u32,
    next_cid: u16,
    stash: VecDeque<Cqe>,
    pdus: VecDeque<DecodedPdu>,
    pub cntlid: u16,
    pub qid: u16,
}

impl Host {
    /// Connects TCP only (no IC exchange).
    pub fn tcp(port: u16) -> Host {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the target");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Host {
            stream,
            dec: PduDecoder::with_config(
                Role::Host,
                RxConfig {
                    max_data_pdu: 1 << 20,
                    ..RxConfig::default()
                },
            ),
            asm: PduAssembler::default(),
            tx: TxConfig::default(),
            maxh2cdata: 4096,
            in_capsule: 0,
            next_cid: 1,
            stash: VecDeque::new(),
            pdus: VecDeque::new(),
            cntlid: 0xffff,
            qid: 0,
        }
    }

    /// TCP connect plus the IC exchange.
    pub fn connect(port: u16, hdgst: bool, ddgst: bool) -> Host {
        let mut h = Host::tcp(port);
        let resp = h.ic(hdgst, ddgst);
        assert_eq!(resp.hdgst, hdgst);
        assert_eq!(resp.ddgst, ddgst);
        h
    }

    pub fn ic(&mut self, hdgst: bool, ddgst: bool) -> IcResp {
        let req = IcReq {
            pfv: 0,
            hpda: 0,
            hdgst,
            ddgst,
            maxr2t: 0,
        };
        self.send_pdu(&PduHeader::IcReq(req), &[]);
        let p = self.recv_pdu().expect("ICResp");
        let PduHeader::IcResp(resp) = p.header else {
            panic!("expected ICResp, got {:?}", p.header)
        };
        let (txc, rxc) = pdu::host_negotiate(&req, &resp, 1 << 20).expect("negotiate");
        self.tx = txc;
        self.dec.configure(rxc);
        self.maxh2cdata = resp.maxh2cdata;
        resp
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    pub fn send_pdu(&mut self, hdr: &PduHeader, data: &[u8]) {
        let bytes = encode_pdu(hdr, &[data], &self.tx).expect("encode");
        self.stream.write_all(&bytes).expect("send a PDU");
    }

    /// Sends a PDU whose last byte (its data digest, or its header digest when it carries
    /// no data) is XOR-ed with `flip`.
    pub fn send_spoiled_pdu(&mut self, hdr: &PduHeader, data: &[u8], flip: u8) {
        let mut bytes = encode_pdu(hdr, &[data], &self.tx).expect("encode");
        *bytes.last_mut().unwrap() ^= flip;
        self.stream.write_all(&bytes).expect("send a PDU");
    }

    /// Sends Write `cid` of one block at LBA 0 with `data` in the capsule and its data
    /// digest spoiled by `flip`.
    pub fn send_write_with_bad_ddgst(&mut self, cid: u16, data: &[u8], flip: u8) {
        let mut w = rw(wire::io_opc::WRITE, 0, 1);
        w.cid = cid.into();
        w.dptr = SglDescriptor::in_capsule(0, data.len() as u32);
        self.send_spoiled_pdu(&PduHeader::CapsuleCmd(w), data, flip);
    }

    /// The next PDU from the target (`Err` on end of stream or timeout).
    pub fn recv_pdu(&mut self) -> io::Result<DecodedPdu> {
        loop {
            if let Some(p) = self.asm.pdus.first().cloned() {
                self.asm.pdus.remove(0);
                return Ok(p);
            }
            if let Some(p) = self.pdus.pop_front() {
                return Ok(p);
            }
            let mut buf = [0u8; 65536];
            let n = self.stream.read(&mut buf)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "target closed",
                ));
            }
            let mut input = &buf[..n];
            loop {
                match self.dec.feed(input) {
                    Ok((used, Some(ev))) => {
                        input = &input[used..];
                        // The assembler must not reconfigure digests from an ICResp: the
                        // host applies the negotiated settings itself.
                        self.asm.on_event(&mut self.dec, ev);
                    }
                    Ok((_, None)) => break,
                    Err(e) => panic!("target sent a bad PDU: {e}"),
                }
            }
        }
    }

    /// Reads until end of stream; returns the PDUs seen before it.
    pub fn drain_until_closed(&mut self) -> Vec<DecodedPdu> {
        let mut out = Vec::new();
        while let Ok(p) = self.recv_pdu() {
            out.push(p);
        }
        out
    }

    fn cid(&mut self) -> u16 {
        let c = self.next_cid;
        self.next_cid = self.next_cid.wrapping_add(1).max(1);
        c
    }

    /// Sends `sqe` (its cid replaced) with optional write data; returns the cid.
    pub fn submit(&mut self, mut sqe: Sqe, write: Option<&[u8]>, read_len: u32) -> u16 {
        let cid = self.cid();
        sqe.cid = cid.into();
        match write {
            Some(d)
                if (d.len() as u32) <= self.in_capsule || (self.qid == 0 && d.len() <= 8192) =>
            {
                sqe.dptr = SglDescriptor::in_capsule(0, d.len() as u32);
                self.send_pdu(&PduHeader::CapsuleCmd(sqe), d);
            }
            Some(d) => {
                sqe.dptr = SglDescriptor::transport_data_block(d.len() as u32);
                self.send_pdu(&PduHeader::CapsuleCmd(sqe), &[]);
                self.answer_r2ts(cid, d);
            }
            None => {
                if read_len > 0 || sqe.dptr.length == 0 {
                    sqe.dptr = SglDescriptor::transport_data_block(read_len);
                }
                self.send_pdu(&PduHeader::CapsuleCmd(sqe), &[]);
            }
        }
        cid
    }

    /// Serves R2Ts for `cid` until all of `data` went out.
    fn answer_r2ts(&mut self, cid: u16, data: &[u8]) {
        let mut sent = 0usize;
        while sent < data.len() {
            let p = self.recv_pdu().expect("R2T");
            match p.header {
                PduHeader::R2T(r) => {
                    assert_eq!(r.cccid, cid);
                    let end = (r.r2to + r.r2tl) as usize;
                    let mut off = r.r2to as usize;
                    while off < end {
                        let n = (end - off).min(self.maxh2cdata as usize);
                        let h = H2CData {
                            cccid: cid,
                            ttag: r.ttag,
                            datao: off as u32,
                            datal: n as u32,
                            last: off + n == end,
                        };
                        self.send_pdu(&PduHeader::H2CData(h), &data[off..off + n]);
                        off += n;
                    }
                    sent = end;
                }
                PduHeader::CapsuleResp(c) => {
                    if c.cid == cid {
                        // Failed before the data was asked for.
                        self.stash.push_back(c);
                        return;
                    }
                    self.stash.push_back(c);
                }
                other => panic!("expected R2T, got {other:?}"),
            }
        }
    }

    /// Waits for the completion of `cid`, collecting C2HData.
    pub fn wait_completion(&mut self, cid: u16) -> Done {
        if let Some(i) = self.stash.iter().position(|c| c.cid == cid) {
            let cqe = self.stash.remove(i).unwrap();
            return Done {
                cqe,
                data: Vec::new(),
            };
        }
        let mut data = Vec::new();
        loop {
            let p = self.recv_pdu().expect("a completion");
            match p.header {
                PduHeader::C2HData(C2HData {
                    cccid,
                    datao,
                    success,
                    last,
                    ..
                }) if cccid == cid => {
                    assert!(p.data_digest_ok, "data digest of C2HData");
                    let end = datao as usize + p.data.len();
                    if data.len() < end {
                        data.resize(end, 0);
                    }
                    data[datao as usize..end].copy_from_slice(&p.data);
                    if success {
                        assert!(last);
                        return Done {
                            cqe: Cqe::new(cid, Status::SUCCESS),
                            data,
                        };
                    }
                }
                PduHeader::CapsuleResp(c) if c.cid == cid => return Done { cqe: c, data },
                PduHeader::CapsuleResp(c) => self.stash.push_back(c),
                other => panic!("unexpected PDU while waiting for cid {cid}: {other:?}"),
            }
        }
    }

    /// A completion that arrived unasked (e.g. an AER), or waits for the next one.
    pub fn next_completion(&mut self) -> Cqe {
        if let Some(c) = self.stash.pop_front() {
            return c;
        }
        loop {
            let p = self.recv_pdu().expect("a completion");
            if let PduHeader::CapsuleResp(c) = p.header {
                return c;
            }
        }
    }

    pub fn run(&mut self, sqe: Sqe, write: Option<&[u8]>, read_len: u32) -> Done {
        let cid = self.submit(sqe, write, read_len);
        self.wait_completion(cid)
    }

    /// Fabrics Connect.
    pub fn fabric_connect(
        &mut self,
        qid: u16,
        subnqn: &str,
        hostnqn: &str,
        cntlid: u16,
        sqsize: u16,
        kato: u32,
    ) -> Done {
        self.fabric_connect_full(qid, subnqn, hostnqn, HOSTID, cntlid, sqsize, kato, 0)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn fabric_connect_full(
        &mut self,
        qid: u16,
        subnqn: &str,
        hostnqn: &str,
        hostid: [u8; 16],
        cntlid: u16,
        sqsize: u16,
        kato: u32,
        cattr: u8,
    ) -> Done {
        let cmd = FabricsCommand::Connect(wire::ConnectCmd {
            cid: 0,
            sgl: SglDescriptor::in_capsule(0, 1024),
            recfmt: 0,
            qid,
            sqsize,
            cattr,
            kato,
        });
        let mut data = ConnectData {
            hostid,
            cntlid: cntlid.into(),
            ..Default::default()
        };
        data.subnqn = pollux::nvmf::nul_field(subnqn);
        data.hostnqn = pollux::nvmf::nul_field(hostnqn);
        let bytes = data.to_bytes();
        self.qid = qid;
        let d = self.run(cmd.to_sqe(), Some(&bytes), 0);
        if d.ok() {
            self.cntlid = d.cqe.dw0.get() as u16;
        }
        d
    }

    pub fn prop_get(&mut self, offset: u32, size8: bool) -> Done {
        let cmd = FabricsCommand::PropertyGet(wire::PropertyGetCmd {
            cid: 0,
            size8,
            offset,
        });
        self.run(cmd.to_sqe(), None, 0)
    }

    pub fn prop_set(&mut self, offset: u32, value: u64) -> Done {
        let cmd = FabricsCommand::PropertySet(wire::PropertySetCmd {
            cid: 0,
            size8: false,
            offset,
            value,
        });
        self.run(cmd.to_sqe(), None, 0)
    }

    /// Admin queue bring-up as the Linux host does it: Connect, CC.EN = 1, wait CSTS.RDY.
    pub fn admin_connect(port: u16, subnqn: &str, digests: bool, kato: u32) -> Host {
        let mut h = Host::connect(port, digests, digests);
        let d = h.fabric_connect(0, subnqn, HOSTNQN, 0xffff, 31, kato);
        assert!(d.ok(), "admin connect: {:?}", d.cqe.status());
        let d = h.prop_set(prop::CC, 1 | 6 << 16 | 4 << 20);
        assert!(d.ok());
        let d = h.prop_get(prop::CSTS, false);
        assert_eq!(d.cqe.dw0 & 1, 1, "CSTS.RDY");
        h
    }

    /// An I/O queue of controller `cntlid`.
    pub fn io_connect(port: u16, subnqn: &str, cntlid: u16, qid: u16, digests: bool) -> Host {
        let mut h = Host::connect(port, digests, digests);
        let d = h.fabric_connect(qid, subnqn, HOSTNQN, cntlid, 127, 0);
        assert!(d.ok(), "I/O connect: {:?}", d.cqe.status());
        h.in_capsule = 4096;
        h
    }

    pub fn identify(&mut self, cns: u8, nsid: u32) -> Done {
        let mut sqe = Sqe::new(admin_opc::IDENTIFY, 0, nsid);
        sqe.cdw10 = (cns as u32).into();
        self.run(sqe, None, 4096)
    }

    pub fn get_log(&mut self, lid: u8, nsid: u32, offset: u64, len: u32) -> Done {
        let sqe = wire::GetLogPageCmd::new(nsid, lid, offset, len)
            .to_sqe(0, SglDescriptor::transport_data_block(len));
        self.run(sqe, None, len)
    }

    pub fn set_feature(&mut self, fid: u8, value: u32) -> Done {
        let mut sqe = Sqe::new(admin_opc::SET_FEATURES, 0, 0);
        sqe.cdw10 = (fid as u32).into();
        sqe.cdw11 = value.into();
        self.run(sqe, None, 0)
    }

    pub fn get_feature(&mut self, fid: u8) -> Done {
        let mut sqe = Sqe::new(admin_opc::GET_FEATURES, 0, 0);
        sqe.cdw10 = (fid as u32).into();
        self.run(sqe, None, 0)
    }

    /// Submits an Asynchronous Event Request; returns its cid.
    pub fn submit_aer(&mut self) -> u16 {
        self.submit(Sqe::new(admin_opc::ASYNC_EVENT_REQUEST, 0, 0), None, 0)
    }

    /// Enables namespace-attribute notices and submits an Asynchronous Event Request for
    /// them; returns its cid.
    pub fn arm_ns_notice(&mut self) -> u16 {
        assert!(self
            .set_feature(feat::ASYNC_EVENT_CONFIG, aen::CONFIG_NS_ATTRIBUTE)
            .ok());
        self.submit_aer()
    }

    /// Waits for AER `aer`, which must complete as a namespace-attribute notice naming the
    /// Changed Namespace List; returns that list.
    pub fn expect_ns_notice(&mut self, aer: u16) -> Vec<u32> {
        let c = self.wait_completion(aer);
        assert!(c.ok());
        assert_eq!(
            c.cqe.dw0,
            aen::dw0(
                aen::TYPE_NOTICE,
                aen::NOTICE_NS_ATTRIBUTE_CHANGED,
                log_id::CHANGED_NS_LIST
            )
        );
        self.changed_ns_list()
    }

    /// The Changed Namespace List log page.
    pub fn changed_ns_list(&mut self) -> Vec<u32> {
        let d = self.get_log(log_id::CHANGED_NS_LIST, 0, 0, 4096);
        wire::decode_ns_list(d.data.as_slice().try_into().unwrap())
    }
}

/// A Read or Write of `blocks` at `slba` of namespace 1 (the host fills in cid and SGL).
pub fn rw(op: u8, slba: u64, blocks: u32) -> Sqe {
    Sqe::rw(
        op,
        0,
        1,
        slba,
        blocks,
        SglDescriptor::transport_data_block(0),
    )
}

/// Calls a method in-process on the main reactor of `app`; errors come back as
/// `{"code", "message"}`.
pub fn call(app: &pollux::app::RunningApp, method: &str, params: Value) -> Result<Value, Value> {
    app.call(method, params, Duration::from_secs(10))
        .expect("an RPC answer")
        .map_err(|e| json!({"code": e.code, "message": e.message}))
}

/// Creates the malloc bdev `bdev` (`json!({"name", "num_blocks", "block_size"})`) and adds
/// it to `nqn` as the namespace `namespace` describes beside its bdev_name; returns what
/// nvmf_subsystem_add_ns answered (the nsid).
pub fn add_malloc_namespace(
    app: &pollux::app::RunningApp,
    nqn: &str,
    bdev: Value,
    mut namespace: Value,
) -> Value {
    namespace["bdev_name"] = bdev["name"].clone();
    call(app, "bdev_malloc_create", bdev).unwrap();
    let ns = json!({"nqn": nqn, "namespace": namespace});
    call(app, "nvmf_subsystem_add_ns", ns).unwrap()
}

/// Standard setup RPCs: transport, subsystem (any host unless `hosts`), a namespace on a
/// new malloc bdev, a listener on an ephemeral port. Returns the port.
pub fn export(
    rpc: &mut dyn FnMut(&str, Value) -> Result<Value, Value>,
    nqn: &str,
    bdev: &str,
    mib: u64,
    transport_extra: Value,
    any_host: bool,
) -> u16 {
    let mut t = json!({"trtype": "TCP"});
    if let (Some(t), Some(extra)) = (t.as_object_mut(), transport_extra.as_object()) {
        for (k, v) in extra {
            t.insert(k.clone(), v.clone());
        }
    }
    let _ = rpc("nvmf_create_transport", t);
    rpc(
        "bdev_malloc_create",
        json!({"name": bdev, "num_blocks": mib * 256, "block_size": 4096}),
    )
    .expect("malloc");
    rpc(
        "nvmf_create_subsystem",
        json!({"nqn": nqn, "serial_number": "SN123", "model_number": "pollux test", "allow_any_host": any_host}),
    )
    .expect("subsystem");
    rpc(
        "nvmf_subsystem_add_ns",
        json!({"nqn": nqn, "namespace": {"bdev_name": bdev}}),
    )
    .expect("add ns");
    rpc(
        "nvmf_subsystem_add_listener",
        json!({"nqn": nqn, "listen_address": {"trtype": "tcp", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": "0"}}),
    )
    .expect("listener");
    let l = rpc("nvmf_subsystem_get_listeners", json!({"nqn": nqn})).expect("listeners");
    l[0]["address"]["trsvcid"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("port")
}

/// Starts an in-process app (`test_options(tag)`) that exports a 16 MiB malloc bdev
/// `Malloc0` as a namespace of `nqn` to any host; returns the app and the listener's port.
pub fn start_exporting_malloc(tag: &str, nqn: &str) -> (pollux::app::RunningApp, u16) {
    let app = super::start(super::test_options(tag));
    let port = export_malloc(&app, nqn);
    (app, port)
}

/// Exports a new 16 MiB malloc bdev `Malloc0` of `app` as a namespace of `nqn` to any
/// host; returns the listener's port.
pub fn export_malloc(app: &pollux::app::RunningApp, nqn: &str) -> u16 {
    export(
        &mut |m, p| call(app, m, p),
        nqn,
        "Malloc0",
        16,
        json!({}),
        true,
    )
}

/// Adds a second listener of `nqn`, on the uring sock impl and an ephemeral port; returns
/// its port, or the RPC error where uring is unavailable.
pub fn add_uring_listener(app: &pollux::app::RunningApp, nqn: &str) -> Result<u16, Value> {
    call(
        app,
        "nvmf_subsystem_add_listener",
        json!({"nqn": nqn, "sock_impl": "uring", "listen_address": {"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": "0"}}),
    )?;
    let l = call(app, "nvmf_subsystem_get_listeners", json!({"nqn": nqn})).unwrap();
    Ok(l[1]["address"]["trsvcid"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap())
}

/// Makes the next close of `s` a reset (SO_LINGER 0) instead of an orderly FIN.
pub fn reset_on_close(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    pollux::sys::socket::set_linger_abort(s.as_raw_fd()).expect("SO_LINGER");
}
