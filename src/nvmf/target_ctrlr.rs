//! The target side's NVMe-oF controller: admin commands, properties, features, log pages, keep-alive and AER.
//!
//! An NVMe-oF controller: the state a Connect on an admin queue creates (controller id,
//! host identity, keep-alive timeout, CC/CSTS, features, pending asynchronous event
//! requests, the changed-namespace list) and the admin command set executed against it:
//! Property Get/Set, Identify (CNS 0, 1, 2, 3, and the NVM command-set CNS 5/6 as zeroes),
//! Get/Set Features, Get Log Page (error, SMART/health, firmware slot, changed namespace
//! list, discovery), Keep Alive, Asynchronous Event Request, Abort. Everything here is
//! computed from the controller and the reactor's snapshot of the target ([`AdminEnv`]);
//! the transport (`tcp/`) owns the controller inside its admin queue pair, moves data, and
//! completes the outcomes that need more than this reactor (SMART counters come from every
//! reactor's bdev channels). Functions take decoded commands and output buffers, so they can
//! be driven by a fuzzer without sockets.

use super::reservation_wire::{self, NoticeLog};
use super::subsystem::{visible_nsids, ListenAddr, Namespace, Subsystem};
use super::target::{TargetView, TransportOpts};
use super::wire::{
    self, admin_opc, aen, cns, feat, log_id, prop, Cap, Cc, Csts, FeaturesCmd, GetLogPageCmd,
    IdentifyCmd, IdentifyController, IdentifyNamespace, LbaFormat, NsIdDescriptor, PropertyGetCmd,
    PropertySetCmd, SmartLog, Sqe, Status, Version,
};
use crate::bdev::iostat::IoStats;
use crate::bdev::IoType;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Asynchronous Event Requests a controller keeps (AERL is this minus one).
pub const MAX_AERS: usize = 4;
/// Most changed-namespace entries kept before the list overflows (0xFFFFFFFF).
const MAX_CHANGED_NS: usize = 1024;
/// Firmware revision reported (8 ASCII characters).
pub const FIRMWARE_REVISION: &str = concat!("v", env!("CARGO_PKG_VERSION"));
/// Error log entries kept.
const ERROR_LOG_ENTRIES: usize = 64;

/// What the controller needs to know about its surroundings for one command.
pub struct AdminEnv<'a> {
    pub view: &'a TargetView,
    pub subsys: &'a Subsystem,
    pub opts: &'a TransportOpts,
}

/// How an admin command ended.
#[derive(Debug, PartialEq, Eq)]
pub enum AdminOutcome {
    /// Complete now with this status and DW0; `data_len` bytes of the output buffer go to
    /// the host.
    Complete {
        status: Status,
        dw0: u32,
        data_len: usize,
    },
    /// An Asynchronous Event Request to keep until an event happens.
    KeepAer,
    /// A SMART / health log page: the transport gathers the iostat of these bdevs (all
    /// namespaces for nsid 0 / 0xFFFFFFFF) and calls [`fill_smart`].
    Smart { offset: u64, len: usize },
    /// Abort of the command with this cid on this queue (the transport decides).
    Abort { sqid: u16, cid: u16 },
    /// Set Features Reservation Persistence: the namespace's state changes on the main
    /// reactor (see `reservation_target.rs`).
    SetPtpl { nsid: u32, on: bool },
}

impl AdminOutcome {
    pub fn status(status: Status) -> Self {
        AdminOutcome::Complete {
            status,
            dw0: 0,
            data_len: 0,
        }
    }
    fn ok_dw0(dw0: u32) -> Self {
        AdminOutcome::Complete {
            status: Status::SUCCESS,
            dw0,
            data_len: 0,
        }
    }
    fn data(len: usize) -> Self {
        AdminOutcome::Complete {
            status: Status::SUCCESS,
            dw0: 0,
            data_len: len,
        }
    }
}

/// One controller (lives in its admin queue pair, on that queue's reactor).
#[derive(Debug)]
pub struct Ctrlr {
    pub cntlid: u16,
    pub subsys_id: u64,
    pub discovery: bool,
    pub hostnqn: String,
    pub hostid: [u8; 16],
    /// Keep alive timeout (0 = none).
    pub kato: Duration,
    pub last_keep_alive: Instant,
    pub cc: Cc,
    pub csts: Csts,
    /// I/O queues granted (0-based count is what the feature reports).
    pub io_queues: u16,
    pub num_queues_set: bool,
    pub async_event_config: u32,
    pub arbitration: u32,
    pub power_management: u32,
    pub temperature_threshold: u32,
    pub volatile_write_cache: bool,
    /// Command ids (request slots) of pending AERs.
    pub aers: VecDeque<u16>,
    /// Events waiting for an AER (DW0 values).
    pub pending_events: VecDeque<u32>,
    /// A namespace notice was sent and the changed list not read yet (events of that type
    /// are masked until then).
    pub ns_notice_outstanding: bool,
    pub changed_ns: Vec<u32>,
    /// An ANA change notice was sent and the ANA log not read yet (masked until then).
    pub ana_notice_outstanding: bool,
    /// The listener the admin queue connected on (the path whose ANA states it reports).
    pub listen: Option<ListenAddr>,
    pub error_count: u64,
    pub errors: VecDeque<wire::ErrorLogEntry>,
    /// Reservation notifications (log page 0x80) and their masks (feature 0x82).
    pub resv: NoticeLog,
}

impl Ctrlr {
    pub fn new(
        cntlid: u16,
        subsys: &Subsystem,
        hostnqn: &str,
        hostid: [u8; 16],
        kato_ms: u32,
        opts: &TransportOpts,
    ) -> Self {
        let kato_ms = if kato_ms == 0 {
            0
        } else {
            kato_ms.max(opts.min_kato)
        };
        Self {
            cntlid,
            subsys_id: subsys.id,
            discovery: subsys.is_discovery(),
            hostnqn: hostnqn.to_string(),
            hostid,
            kato: Duration::from_millis(kato_ms as u64),
            last_keep_alive: Instant::now(),
            cc: Cc::default(),
            csts: Csts::default(),
            io_queues: opts.max_io_qpairs_per_ctrlr,
            num_queues_set: false,
            async_event_config: 0,
            arbitration: 0,
            power_management: 0,
            temperature_threshold: 0x0157,
            volatile_write_cache: true,
            aers: VecDeque::new(),
            pending_events: VecDeque::new(),
            ns_notice_outstanding: false,
            changed_ns: Vec::new(),
            ana_notice_outstanding: false,
            listen: None,
            error_count: 0,
            errors: VecDeque::new(),
            resv: NoticeLog::default(),
        }
    }

    /// Whether the keep-alive timer expired at `now`.
    pub fn keep_alive_expired(&self, now: Instant) -> bool {
        !self.kato.is_zero() && now.duration_since(self.last_keep_alive) > self.kato
    }

    /// The CAP property.
    pub fn cap(opts: &TransportOpts, admin: bool) -> Cap {
        let _ = admin;
        Cap::new()
            .with_mqes(opts.max_queue_depth.saturating_sub(1))
            .with_cqr(true)
            .with_ams(0)
            .with_to(1)
            .with_dstrd(0)
            .with_nssrs(false)
            .with_css(1)
            .with_bps(false)
            .with_mpsmin(0)
            .with_mpsmax(0)
            .with_cmbs(false)
    }

    /// Property Get: (status, value).
    pub fn property_get(&self, cmd: &PropertyGetCmd, opts: &TransportOpts) -> (Status, u64) {
        let value = match cmd.offset {
            prop::CAP if cmd.size8 => Self::cap(opts, true).to_u64(),
            prop::VS if !cmd.size8 => Version::V1_3.to_u32() as u64,
            prop::CC if !cmd.size8 => self.cc.to_u32() as u64,
            prop::CSTS if !cmd.size8 => self.csts.to_u32() as u64,
            _ => return (Status::INVALID_FIELD.with_dnr(), 0),
        };
        (Status::SUCCESS, value)
    }

    /// Property Set (only CC is writable). Returns the status and whether the controller
    /// just became enabled.
    pub fn property_set(&mut self, cmd: &PropertySetCmd) -> (Status, bool) {
        if cmd.offset != prop::CC || cmd.size8 {
            return (Status::INVALID_FIELD.with_dnr(), false);
        }
        let new = Cc::from_u32(cmd.value as u32);
        let mut enabled_now = false;
        if new.en() && !self.cc.en() {
            if new.iosqes() != 0 && new.iosqes() != 6 || new.iocqes() != 0 && new.iocqes() != 4 {
                return (Status::INVALID_FIELD.with_dnr(), false);
            }
            self.csts.set_rdy(true);
            enabled_now = true;
        } else if !new.en() && self.cc.en() {
            self.csts.set_rdy(false);
            self.csts.set_shst(wire::shutdown::NONE);
        }
        if new.shn() != wire::shutdown::NONE && self.cc.shn() == wire::shutdown::NONE {
            self.csts.set_shst(wire::shutdown::COMPLETE);
        }
        self.cc = new;
        (Status::SUCCESS, enabled_now)
    }

    /// Records a failed admin command in the error log.
    pub fn record_error(&mut self, sqid: u16, cid: u16, status: Status, nsid: u32) {
        self.error_count += 1;
        let e = wire::ErrorLogEntry {
            error_count: self.error_count.into(),
            sqid: sqid.into(),
            cid: cid.into(),
            status_field: (status.0 << 1).into(),
            parameter_error_location: 0xffff.into(),
            nsid: nsid.into(),
            trtype: wire::trtype::TCP,
            ..Default::default()
        };
        if self.errors.len() == ERROR_LOG_ENTRIES {
            self.errors.pop_back();
        }
        self.errors.push_front(e);
    }

    /// A namespace of this controller's subsystem appeared, disappeared or changed.
    /// Returns the DW0 of an event to complete a pending AER with, if one is due now.
    /// Namespace `nsid` if it is active for this controller (exists and its host sees it).
    fn active_ns<'s>(&self, subsys: &'s Subsystem, nsid: u32) -> Option<&'s Namespace> {
        subsys
            .namespaces
            .get(&nsid)
            .filter(|ns| ns.visible_to(&self.hostnqn))
    }

    pub fn namespaces_changed(&mut self, nsids: &[u32]) -> Option<u32> {
        for n in nsids {
            if !self.changed_ns.contains(n) {
                self.changed_ns.push(*n);
            }
        }
        if self.async_event_config & aen::CONFIG_NS_ATTRIBUTE == 0 || self.ns_notice_outstanding {
            return None;
        }
        self.ns_notice_outstanding = true;
        let dw0 = aen::dw0(
            aen::TYPE_NOTICE,
            aen::NOTICE_NS_ATTRIBUTE_CHANGED,
            log_id::CHANGED_NS_LIST,
        );
        self.pending_events.push_back(dw0);
        self.take_event()
    }

    /// The ANA log page as this controller sees it changed: queues an ANA change notice
    /// (unless disabled, or one is outstanding). Returns whether one was queued; the caller
    /// completes an AER with [`Ctrlr::take_event`].
    pub fn queue_ana_change(&mut self) -> bool {
        if self.discovery
            || self.async_event_config & aen::CONFIG_ANA_CHANGE == 0
            || self.ana_notice_outstanding
        {
            return false;
        }
        self.ana_notice_outstanding = true;
        self.pending_events.push_back(aen::dw0(
            aen::TYPE_NOTICE,
            aen::NOTICE_ANA_CHANGE,
            log_id::ANA,
        ));
        true
    }

    /// The discovery log changed (listeners, subsystems, hosts).
    pub fn discovery_changed(&mut self) -> Option<u32> {
        if !self.discovery || self.async_event_config & aen::CONFIG_DISCOVERY_LOG_CHANGE == 0 {
            return None;
        }
        let dw0 = aen::dw0(
            aen::TYPE_NOTICE,
            aen::NOTICE_DISCOVERY_LOG_CHANGE,
            log_id::DISCOVERY,
        );
        if !self.pending_events.contains(&dw0) {
            self.pending_events.push_back(dw0);
        }
        self.take_event()
    }

    /// An event to report now, if one is pending and an AER waits (the AER's slot is the
    /// front of `aers`; the caller pops it).
    pub fn take_event(&mut self) -> Option<u32> {
        if self.aers.is_empty() {
            return None;
        }
        self.pending_events.pop_front()
    }

    /// Executes an admin command (not a fabrics command). `out` is the buffer whose first
    /// `data_len` bytes go to the host (its length is the command's transfer length);
    /// `input` holds host data for commands that carry some.
    pub fn admin(&mut self, sqe: &Sqe, out: &mut [u8], env: &AdminEnv<'_>) -> AdminOutcome {
        self.last_keep_alive = Instant::now();
        if !self.cc.en() || !self.csts.rdy() {
            // Before CC.EN only fabrics commands are allowed (NVMe-oF 1.1, 3.2).
            return AdminOutcome::status(Status::COMMAND_SEQUENCE_ERROR.with_dnr());
        }
        let discovery = self.discovery;
        match sqe.opcode {
            admin_opc::IDENTIFY => self.identify(sqe, out, env),
            admin_opc::GET_LOG_PAGE => self.get_log_page(sqe, out, env),
            admin_opc::KEEP_ALIVE => AdminOutcome::status(Status::SUCCESS),
            admin_opc::ASYNC_EVENT_REQUEST => {
                if self.aers.len() >= MAX_AERS {
                    AdminOutcome::status(Status::ASYNC_EVENT_REQUEST_LIMIT_EXCEEDED.with_dnr())
                } else {
                    AdminOutcome::KeepAer
                }
            }
            admin_opc::GET_FEATURES => self.get_features(sqe, out, env),
            admin_opc::SET_FEATURES => self.set_features(sqe, env),
            admin_opc::ABORT if !discovery => AdminOutcome::Abort {
                sqid: sqe.cdw10.get() as u16,
                cid: (sqe.cdw10 >> 16).get() as u16,
            },
            _ => AdminOutcome::status(Status::INVALID_OPCODE.with_dnr()),
        }
    }

    fn identify(&mut self, sqe: &Sqe, out: &mut [u8], env: &AdminEnv<'_>) -> AdminOutcome {
        let cmd = IdentifyCmd::parse(sqe);
        let mut page = [0u8; wire::IDENTIFY_DATA_SIZE];
        let subsys = env.subsys;
        match cmd.cns {
            cns::CONTROLLER => self.identify_controller(env).encode(&mut page),
            cns::NAMESPACE if !self.discovery => {
                if cmd.nsid == 0 || (cmd.nsid > subsys.max_nsid() && cmd.nsid != u32::MAX) {
                    return AdminOutcome::status(Status::INVALID_NAMESPACE_OR_FORMAT.with_dnr());
                }
                if let Some(ns) = self.active_ns(subsys, cmd.nsid) {
                    let mut id = identify_namespace(ns);
                    super::ana::identify_namespace(&mut id, subsys, ns, self.listen.as_ref());
                    id.encode(&mut page);
                }
            }
            cns::ACTIVE_NS_LIST if !self.discovery => {
                if cmd.nsid >= 0xffff_fffe {
                    return AdminOutcome::status(Status::INVALID_NAMESPACE_OR_FORMAT.with_dnr());
                }
                wire::encode_ns_list(
                    visible_nsids(subsys, &self.hostnqn).filter(|n| *n > cmd.nsid),
                    &mut page,
                );
            }
            cns::NS_ID_DESCRIPTOR_LIST if !self.discovery => {
                let Some(ns) = self.active_ns(subsys, cmd.nsid) else {
                    return AdminOutcome::status(Status::INVALID_NAMESPACE_OR_FORMAT.with_dnr());
                };
                let mut descs = Vec::with_capacity(3);
                if ns.eui64 != [0; 8] {
                    descs.push(NsIdDescriptor::Eui64(ns.eui64));
                }
                if ns.nguid != [0; 16] {
                    descs.push(NsIdDescriptor::Nguid(ns.nguid));
                }
                if ns.uuid != [0; 16] {
                    descs.push(NsIdDescriptor::Uuid(ns.uuid));
                }
                descs.push(NsIdDescriptor::Csi(0));
                wire::encode_ns_id_descriptors(&descs, &mut page);
            }
            // NVM command set specific structures: nothing beyond the base ones.
            cns::CSI_NAMESPACE | cns::CSI_CONTROLLER if !self.discovery && cmd.csi == 0 => {}
            _ => return AdminOutcome::status(Status::INVALID_FIELD.with_dnr()),
        }
        let n = out.len().min(page.len());
        out[..n].copy_from_slice(&page[..n]);
        AdminOutcome::data(n)
    }

    /// Identify Controller data for this controller.
    pub fn identify_controller(&self, env: &AdminEnv<'_>) -> IdentifyController {
        let opts = env.opts;
        let s = env.subsys;
        let mut id = IdentifyController {
            sn: super::ascii_field(&s.serial_number),
            mn: super::ascii_field(&s.model_number),
            fr: super::ascii_field(FIRMWARE_REVISION),
            rab: 6,
            cntlid: self.cntlid.into(),
            ver: (Version::V1_3.to_u32()).into(),
            lpa: wire::lpa::EXTENDED_DATA,
            elpe: (ERROR_LOG_ENTRIES - 1) as u8,
            aerl: (MAX_AERS - 1) as u8,
            kas: opts.kas.into(),
            sqes: 0x66,
            cqes: 0x44,
            maxcmd: opts.max_queue_depth.into(),
            sgls: (wire::sgls::SUPPORTED | wire::sgls::OFFSET | wire::sgls::TRANSPORT_DATA_BLOCK)
                .into(),
            subnqn: super::nul_field(&s.nqn),
            ioccsz: ((64 + opts.in_capsule_data_size) / 16).into(),
            iorcsz: 1.into(),
            icdoff: 0.into(),
            msdbd: 1,
            ..Default::default()
        };
        // MDTS in units of the 4 KiB minimum page size, as a power of two.
        id.mdts = (opts.max_io_size / 4096).max(1).ilog2() as u8;
        if self.discovery {
            id.cntrltype = wire::cntrltype::DISCOVERY;
            id.oaes = aen::CONFIG_DISCOVERY_LOG_CHANGE.into();
            id.ctratt = 0.into();
        } else {
            id.cntrltype = wire::cntrltype::IO;
            id.cmic = 1 << 1; // may have several controllers
            id.oaes = aen::CONFIG_NS_ATTRIBUTE.into();
            id.ctratt = wire::ctratt::HOST_ID_128_BIT.into();
            id.acl = 3;
            id.frmw = 1 | 1 << 1; // slot 1 read-only, one slot
            id.nn = (s.max_nsid()).into();
            id.mnan = (s.max_nsid()).into();
            id.oncs = (wire::oncs::DATASET_MANAGEMENT
                | wire::oncs::WRITE_ZEROES
                | wire::oncs::RESERVATIONS)
                .into();
            id.vwc = 1;
            id.wctemp = 0x0157.into();
            id.cctemp = 0x0175.into();
        }
        id.psd[0].mp = 2500.into();
        if !self.discovery {
            super::ana::identify_controller(&mut id, s);
        }
        id
    }

    fn get_features(&mut self, sqe: &Sqe, out: &mut [u8], env: &AdminEnv<'_>) -> AdminOutcome {
        let cmd = FeaturesCmd::parse(sqe);
        // Namespace-specific features of a namespace this path cannot reach answer the
        // path status (as SPDK).
        if !self.discovery && matches!(cmd.fid, feat::ERROR_RECOVERY | feat::WRITE_ATOMICITY) {
            if let Some(ns) = self.active_ns(env.subsys, sqe.nsid.get()) {
                let state = super::ana::state_of(env.subsys, self.listen.as_ref(), ns.anagrpid);
                if let Some(st) = state.path_status() {
                    return AdminOutcome::status(st);
                }
            }
        }
        if cmd.sel == 3 {
            // Supported capabilities: every feature here is changeable, none saveable.
            return AdminOutcome::ok_dw0(1 << 2);
        }
        let value = match cmd.fid {
            feat::ARBITRATION => self.arbitration,
            feat::POWER_MANAGEMENT => self.power_management,
            feat::TEMPERATURE_THRESHOLD => self.temperature_threshold,
            feat::VOLATILE_WRITE_CACHE if !self.discovery => self.volatile_write_cache as u32,
            feat::NUMBER_OF_QUEUES if !self.discovery => {
                let n = self.io_queues.saturating_sub(1);
                wire::num_queues_value(n, n)
            }
            feat::ASYNC_EVENT_CONFIG => self.async_event_config,
            feat::KEEP_ALIVE_TIMER => self.kato.as_millis() as u32,
            feat::ERROR_RECOVERY if !self.discovery => 0,
            feat::WRITE_ATOMICITY if !self.discovery => 0,
            feat::HOST_IDENTIFIER if !self.discovery => {
                if sqe.cdw11 & 1 == 0 {
                    // Only the 128-bit host identifier exists on fabrics.
                    return AdminOutcome::status(Status::INVALID_FIELD.with_dnr());
                }
                let n = out.len().min(16);
                out[..n].copy_from_slice(&self.hostid[..n]);
                return AdminOutcome::data(n);
            }
            feat::RESERVATION_NOTIFICATION_MASK if !self.discovery => {
                let nsid = sqe.nsid.get();
                if self.active_ns(env.subsys, nsid).is_none() {
                    return AdminOutcome::status(Status::INVALID_NAMESPACE_OR_FORMAT.with_dnr());
                }
                self.resv.mask(nsid)
            }
            feat::RESERVATION_PERSISTENCE if !self.discovery => {
                match self.active_ns(env.subsys, sqe.nsid.get()) {
                    Some(ns) => ns.reservations.ptpl() as u32,
                    None => {
                        return AdminOutcome::status(Status::INVALID_NAMESPACE_OR_FORMAT.with_dnr())
                    }
                }
            }
            _ => return AdminOutcome::status(Status::INVALID_FIELD.with_dnr()),
        };
        AdminOutcome::ok_dw0(value)
    }

    fn set_features(&mut self, sqe: &Sqe, env: &AdminEnv<'_>) -> AdminOutcome {
        let cmd = FeaturesCmd::parse(sqe);
        if cmd.save {
            return AdminOutcome::status(Status::FEATURE_ID_NOT_SAVEABLE.with_dnr());
        }
        let v = cmd.cdw11;
        match cmd.fid {
            feat::ARBITRATION => self.arbitration = v,
            feat::POWER_MANAGEMENT => {
                if v & 0x1f != 0 {
                    return AdminOutcome::status(Status::INVALID_FIELD.with_dnr());
                }
                self.power_management = v;
            }
            feat::TEMPERATURE_THRESHOLD => {
                // Only the composite temperature sensor (TMPSEL 0) exists.
                if (v >> 16) & 0xf != 0 || (v >> 20) & 0x3 > 1 {
                    return AdminOutcome::status(Status::INVALID_FIELD.with_dnr());
                }
                self.temperature_threshold = v & 0xffff;
            }
            feat::VOLATILE_WRITE_CACHE if !self.discovery => self.volatile_write_cache = v & 1 != 0,
            feat::NUMBER_OF_QUEUES if !self.discovery => {
                if self.num_queues_set {
                    return AdminOutcome::status(Status::COMMAND_SEQUENCE_ERROR.with_dnr());
                }
                let (nsqr, ncqr) = wire::num_queues_from_value(v);
                if nsqr == 0xffff || ncqr == 0xffff {
                    return AdminOutcome::status(Status::INVALID_FIELD.with_dnr());
                }
                let asked = nsqr.max(ncqr) as u32 + 1;
                self.io_queues = asked.min(env.opts.max_io_qpairs_per_ctrlr as u32) as u16;
                self.num_queues_set = true;
                let n = self.io_queues - 1;
                return AdminOutcome::ok_dw0(wire::num_queues_value(n, n));
            }
            feat::ASYNC_EVENT_CONFIG => self.async_event_config = v,
            feat::KEEP_ALIVE_TIMER => {
                let ms = if v == 0 { 0 } else { v.max(env.opts.min_kato) };
                self.kato = Duration::from_millis(ms as u64);
            }
            feat::HOST_IDENTIFIER if !self.discovery => {
                return AdminOutcome::status(Status::COMMAND_SEQUENCE_ERROR.with_dnr())
            }
            feat::RESERVATION_NOTIFICATION_MASK if !self.discovery => {
                if v & !reservation_wire::MASK_ALL != 0 {
                    return AdminOutcome::status(Status::INVALID_FIELD.with_dnr());
                }
                let nsid = sqe.nsid.get();
                if nsid == u32::MAX {
                    for n in visible_nsids(env.subsys, &self.hostnqn).collect::<Vec<_>>() {
                        self.resv.set_mask(n, v);
                    }
                } else if self.active_ns(env.subsys, nsid).is_some() {
                    self.resv.set_mask(nsid, v);
                } else {
                    return AdminOutcome::status(Status::INVALID_NAMESPACE_OR_FORMAT.with_dnr());
                }
                return AdminOutcome::ok_dw0(v);
            }
            feat::RESERVATION_PERSISTENCE if !self.discovery => {
                let nsid = sqe.nsid.get();
                if nsid == u32::MAX {
                    return AdminOutcome::SetPtpl {
                        nsid,
                        on: v & 1 != 0,
                    };
                }
                match self.active_ns(env.subsys, nsid) {
                    Some(ns) if ns.ptpl_file.is_some() => {
                        return AdminOutcome::SetPtpl {
                            nsid,
                            on: v & 1 != 0,
                        }
                    }
                    Some(_) => return AdminOutcome::status(Status::INVALID_FIELD.with_dnr()),
                    None => {
                        return AdminOutcome::status(Status::INVALID_NAMESPACE_OR_FORMAT.with_dnr())
                    }
                }
            }
            _ => return AdminOutcome::status(Status::INVALID_FIELD.with_dnr()),
        }
        AdminOutcome::ok_dw0(0)
    }

    fn get_log_page(&mut self, sqe: &Sqe, out: &mut [u8], env: &AdminEnv<'_>) -> AdminOutcome {
        let cmd = GetLogPageCmd::parse(sqe);
        let len = cmd.length();
        if !cmd.offset.is_multiple_of(4) || len > out.len() as u64 {
            return AdminOutcome::status(Status::INVALID_FIELD.with_dnr());
        }
        let len = len as usize;
        let page: Vec<u8> = match cmd.lid {
            log_id::ERROR_INFORMATION if !self.discovery => {
                let mut p = vec![0u8; ERROR_LOG_ENTRIES * wire::ErrorLogEntry::SIZE];
                for (i, e) in self.errors.iter().enumerate() {
                    let off = i * wire::ErrorLogEntry::SIZE;
                    p[off..off + wire::ErrorLogEntry::SIZE].copy_from_slice(&e.to_bytes());
                }
                p
            }
            log_id::SMART_HEALTH if !self.discovery => {
                if cmd.nsid != 0
                    && cmd.nsid != u32::MAX
                    && self.active_ns(env.subsys, cmd.nsid).is_none()
                {
                    return AdminOutcome::status(Status::INVALID_FIELD.with_dnr());
                }
                if cmd.offset >= SmartLog::SIZE as u64 {
                    return AdminOutcome::status(Status::INVALID_FIELD.with_dnr());
                }
                return AdminOutcome::Smart {
                    offset: cmd.offset,
                    len,
                };
            }
            log_id::FIRMWARE_SLOT if !self.discovery => {
                let mut fw = wire::FirmwareSlotLog {
                    afi: 1,
                    ..Default::default()
                };
                fw.frs[0] = super::ascii_field(FIRMWARE_REVISION);
                fw.to_bytes().to_vec()
            }
            log_id::CHANGED_NS_LIST if !self.discovery => {
                let mut p = [0u8; wire::CHANGED_NS_LIST_SIZE];
                if self.changed_ns.len() > MAX_CHANGED_NS {
                    wire::encode_ns_list([u32::MAX], &mut p);
                } else {
                    let mut list = self.changed_ns.clone();
                    list.sort_unstable();
                    wire::encode_ns_list(list, &mut p);
                }
                if !cmd.rae {
                    self.changed_ns.clear();
                    self.ns_notice_outstanding = false;
                }
                p.to_vec()
            }
            log_id::ANA if !self.discovery && env.subsys.ana_reporting => {
                if !cmd.rae {
                    self.ana_notice_outstanding = false;
                }
                // LSP bit 0: Return Groups Only.
                let rgo = cmd.lsp & 1 != 0;
                super::ana::log_page(env.subsys, self.listen.as_ref(), &self.hostnqn, rgo)
            }
            log_id::RESERVATION_NOTIFICATION if !self.discovery => self.resv.read(cmd.rae).to_vec(),
            log_id::DISCOVERY if self.discovery => {
                let mut entries =
                    super::subsystem::discovery_entries(env.view.iter(), &self.hostnqn);
                entries.extend(env.view.referrals.iter().map(|r| r.entry()));
                wire::encode_discovery_log(env.view.genctr, &entries)
            }
            _ => return AdminOutcome::status(Status::INVALID_FIELD.with_dnr()),
        };
        copy_window(&page, cmd.offset, len, out)
    }
}

/// Copies `len` bytes of `page` from `offset` into `out` (zeroes past the end of the page);
/// an offset beyond the page is an Invalid Field.
fn copy_window(page: &[u8], offset: u64, len: usize, out: &mut [u8]) -> AdminOutcome {
    if offset > page.len() as u64 {
        return AdminOutcome::status(Status::INVALID_FIELD.with_dnr());
    }
    let off = offset as usize;
    let avail = (page.len() - off).min(len);
    out[..avail].copy_from_slice(&page[off..off + avail]);
    out[avail..len].fill(0);
    AdminOutcome::data(len)
}

/// Identify Namespace data of a namespace.
pub fn identify_namespace(ns: &super::subsystem::Namespace) -> IdentifyNamespace {
    let blocks = ns.bdev.num_blocks();
    let rescap = reservation_wire::RESCAP_TYPES_AND_IEKEY
        | if ns.ptpl_file.is_some() {
            reservation_wire::RESCAP_PTPL
        } else {
            0
        };
    let mut id = IdentifyNamespace {
        rescap,
        nsze: blocks.into(),
        ncap: blocks.into(),
        nuse: blocks.into(),
        nlbaf: 0,
        flbas: 0,
        nmic: 1,
        nguid: ns.nguid,
        eui64: ns.eui64,
        ..Default::default()
    };
    if ns.bdev.supports(IoType::Unmap) {
        id.nsfeat |= wire::nsfeat::THIN_PROVISIONING;
    }
    let bs = ns.bdev.block_size();
    id.lbaf[0] = LbaFormat {
        ms: 0.into(),
        lbads: bs.max(1).ilog2() as u8,
        rp: 0,
    };
    // Optimal I/O boundary, in blocks (0-based NOIOB is plain blocks).
    let boundary = ns.bdev.info.optimal_io_boundary;
    if boundary <= u16::MAX as u32 {
        id.noiob = (boundary as u16).into();
    }
    id
}

/// Fills a SMART / health log window from the merged iostat of the namespaces' bdevs.
/// Data units are thousands of 512-byte units, rounded up; counters are 128-bit.
pub fn fill_smart(stats: &IoStats, offset: u64, len: usize, out: &mut [u8]) -> AdminOutcome {
    let read = stats.per_type[IoType::Read.index()];
    let write = stats.per_type[IoType::Write.index()];
    let units = |bytes: u64| -> u128 { (bytes as u128 / 512).div_ceil(1000) };
    let log = SmartLog {
        temperature: 0x0143.into(),
        avail_spare: 100,
        spare_thresh: 10,
        data_units_read: units(read.bytes).into(),
        data_units_written: units(write.bytes).into(),
        host_read_commands: (read.ops as u128).into(),
        host_write_commands: (write.ops as u128).into(),
        power_cycles: 1.into(),
        media_errors: stats
            .per_type
            .iter()
            .map(|t| t.errors as u128)
            .sum::<u128>()
            .into(),
        ..Default::default()
    };
    copy_window(&log.to_bytes(), offset, len, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nvmf::subsystem::SubType;

    fn setup() -> (Subsystem, TransportOpts, TargetView) {
        let s = Subsystem::new(7, "nqn.2016-06.io.pollux:t", SubType::Nvme);
        (s, TransportOpts::default(), TargetView::empty())
    }

    fn enabled(s: &Subsystem, o: &TransportOpts) -> Ctrlr {
        let mut c = Ctrlr::new(1, s, "nqn.host", [1; 16], 0, o);
        let (st, en) = c.property_set(&PropertySetCmd {
            cid: 1,
            size8: false,
            offset: prop::CC,
            value: 1 | 6 << 16 | 4 << 20,
        });
        assert!(st.is_success() && en);
        c
    }

    #[test]
    fn properties_follow_cc_enable_and_shutdown() {
        let (s, o, _) = setup();
        let mut c = Ctrlr::new(1, &s, "h", [0; 16], 0, &o);
        let (st, cap) = c.property_get(
            &PropertyGetCmd {
                cid: 0,
                size8: true,
                offset: prop::CAP,
            },
            &o,
        );
        assert!(st.is_success());
        assert_eq!(Cap::from_u64(cap).mqes(), 127);
        let (st, _) = c.property_get(
            &PropertyGetCmd {
                cid: 0,
                size8: false,
                offset: 0x40,
            },
            &o,
        );
        assert_eq!(st.sc(), Status::INVALID_FIELD.sc());
        c.property_set(&PropertySetCmd {
            cid: 0,
            size8: false,
            offset: prop::CC,
            value: 1,
        });
        assert!(c.csts.rdy());
        c.property_set(&PropertySetCmd {
            cid: 0,
            size8: false,
            offset: prop::CC,
            value: 1 | 1 << 14,
        });
        assert_eq!(c.csts.shst(), wire::shutdown::COMPLETE);
    }

    #[test]
    fn number_of_queues_is_set_once_and_clamped() {
        let (s, o, v) = setup();
        let mut c = enabled(&s, &o);
        let env = AdminEnv {
            view: &v,
            subsys: &s,
            opts: &o,
        };
        let mut sqe = Sqe::new(admin_opc::SET_FEATURES, 1, 0);
        sqe.cdw10 = (feat::NUMBER_OF_QUEUES as u32).into();
        sqe.cdw11 = (wire::num_queues_value(999, 999)).into();
        let out = c.admin(&sqe, &mut [], &env);
        assert_eq!(out, AdminOutcome::ok_dw0(wire::num_queues_value(126, 126)));
        let again = c.admin(&sqe, &mut [], &env);
        assert_eq!(
            again,
            AdminOutcome::status(Status::COMMAND_SEQUENCE_ERROR.with_dnr())
        );
    }

    #[test]
    fn log_page_windows_are_validated() {
        let (s, o, v) = setup();
        let mut c = enabled(&s, &o);
        let env = AdminEnv {
            view: &v,
            subsys: &s,
            opts: &o,
        };
        let mut out = vec![0xaa; 512];
        let sqe = GetLogPageCmd::new(0, log_id::FIRMWARE_SLOT, 0, 512)
            .to_sqe(1, wire::SglDescriptor::transport_data_block(512));
        assert_eq!(c.admin(&sqe, &mut out, &env), AdminOutcome::data(512));
        assert_eq!(out[0], 1);
        assert_eq!(&out[8..10], b"v0");
        // Unaligned offset, too long, unknown page.
        let sqe = GetLogPageCmd::new(0, log_id::FIRMWARE_SLOT, 2, 4)
            .to_sqe(1, wire::SglDescriptor::transport_data_block(4));
        assert!(
            matches!(c.admin(&sqe, &mut out, &env), AdminOutcome::Complete { status, .. } if !status.is_success())
        );
        let sqe = GetLogPageCmd::new(0, log_id::FIRMWARE_SLOT, 0, 1024)
            .to_sqe(1, wire::SglDescriptor::transport_data_block(1024));
        assert!(
            matches!(c.admin(&sqe, &mut out, &env), AdminOutcome::Complete { status, .. } if !status.is_success())
        );
        let sqe = GetLogPageCmd::new(0, 0x42, 0, 4)
            .to_sqe(1, wire::SglDescriptor::transport_data_block(4));
        assert!(
            matches!(c.admin(&sqe, &mut out, &env), AdminOutcome::Complete { status, .. } if !status.is_success())
        );
    }

    #[test]
    fn namespace_notices_wait_for_an_aer_and_mask_until_read() {
        let (s, o, _) = setup();
        let mut c = enabled(&s, &o);
        c.async_event_config = aen::CONFIG_NS_ATTRIBUTE;
        assert_eq!(c.namespaces_changed(&[2]), None, "no AER outstanding yet");
        c.aers.push_back(5);
        let dw0 = c.take_event().expect("queued notice");
        assert_eq!(dw0 & 0x7, aen::TYPE_NOTICE as u32);
        assert_eq!(dw0 >> 16 & 0xff, log_id::CHANGED_NS_LIST as u32);
        assert_eq!(
            c.namespaces_changed(&[3]),
            None,
            "masked until the log is read"
        );
        assert_eq!(c.changed_ns, vec![2, 3]);
    }

    #[test]
    fn smart_counts_bytes_in_thousands_of_512_byte_units() {
        let mut st = IoStats::new();
        st.record(IoType::Read, 512 * 1000, 10);
        st.record(IoType::Read, 512, 10);
        st.record(IoType::Write, 4096, 10);
        let mut out = vec![0u8; 512];
        fill_smart(&st, 0, 512, &mut out);
        let log = SmartLog::decode_slice(&out).unwrap();
        assert_eq!(log.data_units_read, 2);
        assert_eq!(log.data_units_written, 1);
        assert_eq!(log.host_read_commands, 2);
        assert_eq!(log.host_write_commands, 1);
    }
}
