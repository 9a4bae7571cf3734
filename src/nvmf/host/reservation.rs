//! The host side of NVMe reservations: Register, Acquire, Release and Report requests, the Reservation Notification log page and AERs, as blocking calls.
//!
//! The request builders ([`register`], [`acquire`], [`release`], [`report`]) encode CDW10
//! and the host data as the NVMe base specification lays them out; the [`SyncController`]
//! methods submit them on an I/O queue and reduce the completion to `Ok` or the typed NVMe
//! error, so tests can assert exact statuses. The host identifier that names the
//! registrant is `ConnectOpts::hostid`.

use super::qpair::{Completion, DataBuf, Request};
use super::{io_buf_of, HostError, SyncController};
use crate::buf::IoBuf;
use crate::nvmf::wire::{
    admin_opc, feat, io_opc, log_id, FeaturesCmd, RegistrantExtended, RegistrantStatus,
    ReservationCmd, ReservationNotificationLog, ReservationStatusExtended, Sqe,
};
use std::sync::mpsc;
use zerocopy::little_endian::U64;
use zerocopy::IntoBytes;

/// Register actions (RREGA).
pub const REGISTER: u8 = 0;
pub const UNREGISTER: u8 = 1;
pub const REPLACE: u8 = 2;
/// Acquire actions (RACQA).
pub const ACQUIRE: u8 = 0;
pub const PREEMPT: u8 = 1;
pub const PREEMPT_AND_ABORT: u8 = 2;
/// Release actions (RRELA).
pub const RELEASE: u8 = 0;
pub const CLEAR: u8 = 1;
/// Change Persist Through Power Loss State (CPTPL) values.
pub const CPTPL_NO_CHANGE: u8 = 0;
pub const CPTPL_CLEAR: u8 = 2;
pub const CPTPL_SET: u8 = 3;

/// CDW10 of a Register (`rtype` 0), Acquire or Release (`cptpl` 0) command.
fn reservation_cdw10(action: u8, iekey: bool, rtype: u8, cptpl: u8) -> u32 {
    let fields = ReservationCmd {
        action,
        iekey,
        rtype,
        cptpl,
    };
    fields.cdw10()
}

/// A Register, Acquire or Release command whose data is `keys` (each 8 bytes, little-endian).
fn with_keys(opcode: u8, nsid: u32, cdw10: u32, keys: &[u64]) -> Request {
    let mut sqe = Sqe::new(opcode, 0, nsid);
    sqe.cdw10 = cdw10.into();
    let keys: Vec<U64> = keys.iter().map(|&k| k.into()).collect();
    Request::new(sqe, DataBuf::Write(io_buf_of(keys.as_bytes())))
}

/// Reservation Register: `action` (RREGA), IEKEY, CPTPL, current and new key.
pub fn register(nsid: u32, action: u8, iekey: bool, cptpl: u8, crkey: u64, nrkey: u64) -> Request {
    let cdw10 = reservation_cdw10(action, iekey, 0, cptpl);
    with_keys(io_opc::RESERVATION_REGISTER, nsid, cdw10, &[crkey, nrkey])
}

/// Reservation Acquire: `action` (RACQA), IEKEY, type, current and preempt key.
pub fn acquire(nsid: u32, action: u8, iekey: bool, rtype: u8, crkey: u64, prkey: u64) -> Request {
    let cdw10 = reservation_cdw10(action, iekey, rtype, 0);
    with_keys(io_opc::RESERVATION_ACQUIRE, nsid, cdw10, &[crkey, prkey])
}

/// Reservation Release: `action` (RRELA), IEKEY, type, current key.
pub fn release(nsid: u32, action: u8, iekey: bool, rtype: u8, crkey: u64) -> Request {
    let cdw10 = reservation_cdw10(action, iekey, rtype, 0);
    with_keys(io_opc::RESERVATION_RELEASE, nsid, cdw10, &[crkey])
}

/// Reservation Report of `len` bytes (a multiple of 4), extended data structure if `eds`.
pub fn report(nsid: u32, len: u32, eds: bool) -> Request {
    let mut sqe = Sqe::new(io_opc::RESERVATION_REPORT, 0, nsid);
    sqe.cdw10 = (len / 4).saturating_sub(1).into();
    sqe.cdw11 = (eds as u32).into();
    Request::new(sqe, DataBuf::Read(IoBuf::zeroed(len as usize)))
}

/// A decoded Reservation Status Extended data structure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservationStatus {
    pub generation: u32,
    pub rtype: u8,
    /// Registrants in the whole state (the entries below may be fewer when cut).
    pub registrants: u16,
    pub ptpl: bool,
    /// (host id, key, holds the reservation) of each entry returned.
    pub entries: Vec<([u8; 16], u64, bool)>,
}

impl ReservationStatus {
    pub fn decode(d: &[u8]) -> Option<Self> {
        let header = ReservationStatusExtended::decode_slice(d)?.status;
        let registrants = header.regctl.get();
        let entries = d[ReservationStatusExtended::SIZE..]
            .chunks_exact(RegistrantExtended::SIZE)
            .filter_map(RegistrantExtended::decode_slice)
            .take(registrants as usize)
            .map(|e| {
                let holds = e.rcsts.contains(RegistrantStatus::HOLDS_RESERVATION);
                (e.hostid, e.rkey.get(), holds)
            })
            .collect();
        Some(Self {
            generation: header.gen.get(),
            rtype: header.rtype,
            registrants,
            ptpl: header.ptpls & 1 != 0,
            entries,
        })
    }

    /// The key `host` is registered with.
    pub fn key_of(&self, host: &[u8; 16]) -> Option<u64> {
        self.entries.iter().find(|e| &e.0 == host).map(|e| e.1)
    }

    /// Whether `host` holds the reservation.
    pub fn holds(&self, host: &[u8; 16]) -> bool {
        self.entries.iter().any(|e| &e.0 == host && e.2)
    }
}

/// Bytes of one Reservation Notification log page.
const NOTIFICATION_LEN: u32 = ReservationNotificationLog::SIZE as u32;

/// One Reservation Notification log page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotificationPage {
    pub count: u64,
    /// 0 empty, 1 registration preempted, 2 reservation released, 3 reservation preempted.
    pub log_type: u8,
    pub available: u8,
    pub nsid: u32,
}

impl SyncController {
    fn done(&self, qid: u16, req: Request) -> Result<(), HostError> {
        self.submit(qid, req)?.status().map(|_| ())
    }

    pub fn reservation_register(
        &self,
        qid: u16,
        nsid: u32,
        action: u8,
        iekey: bool,
        crkey: u64,
        nrkey: u64,
    ) -> Result<(), HostError> {
        self.done(
            qid,
            register(nsid, action, iekey, CPTPL_NO_CHANGE, crkey, nrkey),
        )
    }

    pub fn reservation_acquire(
        &self,
        qid: u16,
        nsid: u32,
        action: u8,
        rtype: u8,
        crkey: u64,
        prkey: u64,
    ) -> Result<(), HostError> {
        self.done(qid, acquire(nsid, action, false, rtype, crkey, prkey))
    }

    pub fn reservation_release(
        &self,
        qid: u16,
        nsid: u32,
        action: u8,
        rtype: u8,
        crkey: u64,
    ) -> Result<(), HostError> {
        self.done(qid, release(nsid, action, false, rtype, crkey))
    }

    /// Reservation Report (extended, 4 KiB), decoded.
    pub fn reservation_report(&self, qid: u16, nsid: u32) -> Result<ReservationStatus, HostError> {
        let c = self.submit(qid, report(nsid, 4096, true))?;
        c.status()?;
        let buf = c
            .buf
            .ok_or_else(|| HostError::Protocol("Reservation Report without data".into()))?;
        ReservationStatus::decode(&buf)
            .ok_or_else(|| HostError::Protocol("short Reservation Report".into()))
    }

    /// Reads one Reservation Notification log page (removing it at the controller).
    pub fn reservation_notification(&self) -> Result<NotificationPage, HostError> {
        let p = self.get_log_page(
            log_id::RESERVATION_NOTIFICATION,
            u32::MAX,
            0,
            NOTIFICATION_LEN,
        )?;
        let page = ReservationNotificationLog::decode_slice(&p)
            .ok_or_else(|| HostError::Protocol("short Reservation Notification log page".into()))?;
        Ok(NotificationPage {
            count: page.count.get(),
            log_type: page.rnlpt,
            available: page.nalp,
            nsid: page.nsid.get(),
        })
    }

    /// Get or Set Features of a namespace-specific feature (`set`: Set Features with
    /// `cdw11`): DW0.
    pub fn ns_features(&self, set: bool, nsid: u32, fid: u8, cdw11: u32) -> Result<u32, HostError> {
        let opc = if set {
            admin_opc::SET_FEATURES
        } else {
            admin_opc::GET_FEATURES
        };
        let sqe = FeaturesCmd {
            nsid,
            fid,
            sel: 0,
            save: false,
            cdw11,
        }
        .to_sqe(opc, 0);
        self.submit(0, Request::new(sqe, DataBuf::None))?.status()
    }

    /// The Reservation Notification Mask of namespace `nsid`.
    pub fn set_notification_mask(&self, nsid: u32, mask: u32) -> Result<u32, HostError> {
        self.ns_features(true, nsid, feat::RESERVATION_NOTIFICATION_MASK, mask)
    }

    /// Sends an Asynchronous Event Request; its completion (DW0: the event) arrives on the
    /// channel when an event comes.
    pub fn async_event_request(&self) -> mpsc::Receiver<Result<Completion, HostError>> {
        let sqe = Sqe::new(admin_opc::ASYNC_EVENT_REQUEST, 0, 0);
        self.submit_later(0, Request::new(sqe, DataBuf::None))
    }
}
