//! Reservation commands decoded from their capsules, and a controller's reservation notifications (log page 0x80, mask, AEN).
//!
//! The wire side of [`super::reservation`]: Register (0x0D), Acquire (0x11) and Release
//! (0x15) decoded from CDW10 and their host data into a [`PrCommand`] the namespace's
//! state machine applies ([`apply`]); Report (0x0E) answered from a state ([`report`]);
//! which I/O commands a reservation may refuse ([`access_of`]); and [`NoticeLog`], the
//! Reservation Notification log of one controller with its per-namespace mask (feature
//! 0x82). Pure functions of their inputs, so the fuzzer drives them without sockets.
//!
//! Where implementations differ: SPDK and the Linux target keep one notification mask per
//! namespace, shared by every controller; here each controller has its own (the
//! specification scopes the feature to the controller), so one host masking its notices
//! does not silence another's.

use super::reservation::{
    Access, AcquireAction, HostId, Notice, Notices, PrError, PtplChange, Register, RegisterAction,
    ReleaseAction, Reservations,
};
use super::wire::{
    aen, io_opc, log_id, ReservationAcquireData, ReservationCmd, ReservationNotificationLog,
    ReservationRegisterData, ReservationReleaseData, ReservationReportCmd,
    ReservationStatusExtended, Sqe, Status,
};
use std::collections::{BTreeMap, VecDeque};

/// Pending notifications a controller keeps (the log page's Number of Available Log Pages
/// is one byte).
pub const MAX_NOTICES: usize = 255;
/// Size of one Reservation Notification log page.
pub const NOTICE_PAGE_SIZE: usize = ReservationNotificationLog::SIZE;
/// Mask bits of feature 0x82 (bit 0 reserved): Registration Preempted, Reservation
/// Released, Reservation Preempted.
pub const MASK_ALL: u32 = 0b1110;
/// RESCAP of Identify Namespace: every type and IEKEY handling (bit 0, Persist Through
/// Power Loss, only with a PTPL file).
pub const RESCAP_TYPES_AND_IEKEY: u8 = 0xfe;
pub const RESCAP_PTPL: u8 = 0x01;

/// A state-changing reservation command, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrCommand {
    Register(RegisterCmd),
    Acquire {
        action: AcquireAction,
        iekey: bool,
        rtype: u8,
        crkey: u64,
        prkey: u64,
    },
    Release {
        action: ReleaseAction,
        iekey: bool,
        rtype: u8,
        crkey: u64,
    },
    /// Set Features Reservation Persistence (0x83): the PTPL state.
    SetPtpl(bool),
}

/// [`Register`] with `Copy`/`Eq` for the command enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegisterCmd {
    pub action: RegisterAction,
    pub iekey: bool,
    pub crkey: u64,
    pub nrkey: u64,
    pub ptpl: PtplChange,
}

/// Decodes Register, Acquire or Release from its SQE and host data. `None` for any other
/// opcode.
pub fn decode(sqe: &Sqe, data: &[u8]) -> Option<Result<PrCommand, Status>> {
    let f = ReservationCmd::parse(sqe);
    match sqe.opcode {
        io_opc::RESERVATION_REGISTER => Some(decode_register(f, data)),
        io_opc::RESERVATION_ACQUIRE => Some(decode_acquire(f, data)),
        io_opc::RESERVATION_RELEASE => Some(decode_release(f, data)),
        _ => None,
    }
}

/// A reserved action or CPTPL value.
const INVALID: Status = Status::INVALID_FIELD.with_dnr();
/// Host data shorter than the command's data structure.
const SHORT_DATA: Status = Status::DATA_SGL_LENGTH_INVALID.with_dnr();

fn decode_register(f: ReservationCmd, data: &[u8]) -> Result<PrCommand, Status> {
    let d = ReservationRegisterData::decode_slice(data).ok_or(SHORT_DATA)?;
    let action = match f.action {
        0 => RegisterAction::Register,
        1 => RegisterAction::Unregister,
        2 => RegisterAction::Replace,
        _ => return Err(INVALID),
    };
    let ptpl = match f.cptpl {
        0 => PtplChange::NoChange,
        2 => PtplChange::Clear,
        3 => PtplChange::Set,
        _ => return Err(INVALID),
    };
    Ok(PrCommand::Register(RegisterCmd {
        action,
        iekey: f.iekey,
        crkey: d.crkey.get(),
        nrkey: d.nrkey.get(),
        ptpl,
    }))
}

fn decode_acquire(f: ReservationCmd, data: &[u8]) -> Result<PrCommand, Status> {
    let d = ReservationAcquireData::decode_slice(data).ok_or(SHORT_DATA)?;
    let action = match f.action {
        0 => AcquireAction::Acquire,
        1 => AcquireAction::Preempt,
        2 => AcquireAction::PreemptAndAbort,
        _ => return Err(INVALID),
    };
    Ok(PrCommand::Acquire {
        action,
        iekey: f.iekey,
        rtype: f.rtype,
        crkey: d.crkey.get(),
        prkey: d.prkey.get(),
    })
}

fn decode_release(f: ReservationCmd, data: &[u8]) -> Result<PrCommand, Status> {
    let d = ReservationReleaseData::decode_slice(data).ok_or(SHORT_DATA)?;
    let action = match f.action {
        0 => ReleaseAction::Release,
        1 => ReleaseAction::Clear,
        _ => return Err(INVALID),
    };
    Ok(PrCommand::Release {
        action,
        iekey: f.iekey,
        rtype: f.rtype,
        crkey: d.crkey.get(),
    })
}

/// The NVMe status of a refused reservation command.
pub fn status_of(e: PrError) -> Status {
    match e {
        PrError::Conflict => Status::RESERVATION_CONFLICT.with_dnr(),
        PrError::InvalidField => Status::INVALID_FIELD.with_dnr(),
    }
}

/// Applies `cmd` from `host` to `state`. `ptpl_capable`: the namespace has a PTPL file.
pub fn apply(
    state: &mut Reservations,
    host: &HostId,
    cmd: PrCommand,
    ptpl_capable: bool,
) -> Result<Notices, PrError> {
    match cmd {
        PrCommand::Register(r) => state.register(
            host,
            Register {
                action: r.action,
                ignore_existing_key: r.iekey,
                current_key: r.crkey,
                new_key: r.nrkey,
                ptpl: r.ptpl,
            },
            ptpl_capable,
        ),
        PrCommand::Acquire {
            action,
            iekey,
            rtype,
            crkey,
            prkey,
        } => state.acquire(host, action, iekey, rtype, crkey, prkey),
        PrCommand::Release {
            action,
            iekey,
            rtype,
            crkey,
        } => state.release(host, action, iekey, rtype, crkey),
        PrCommand::SetPtpl(on) => {
            if !ptpl_capable {
                return Err(PrError::InvalidField);
            }
            state.set_ptpl(on);
            Ok(Notices::new())
        }
    }
}

/// Reservation Report: the extended data structure, `(CDW10 + 1) * 4` bytes of it. A host
/// asking for the 64-bit host id structure (EDS clear) gets Host Identifier Inconsistent
/// Format, as on SPDK and Linux (fabrics hosts have 128-bit ids).
pub fn report(
    state: &Reservations,
    sqe: &Sqe,
    xfer: u32,
    max_io_size: u32,
) -> Result<Vec<u8>, Status> {
    let cmd = ReservationReportCmd::parse(sqe);
    if !cmd.eds {
        return Err(Status::HOST_ID_INCONSISTENT_FORMAT.with_dnr());
    }
    let len = cmd.length();
    if len < ReservationStatusExtended::SIZE as u64 || len > max_io_size as u64 {
        return Err(Status::INVALID_FIELD.with_dnr());
    }
    if len > xfer as u64 {
        return Err(Status::DATA_SGL_LENGTH_INVALID.with_dnr());
    }
    Ok(state.report_extended(len as usize))
}

/// What an I/O command does, for the reservation check (`None`: not checked; reservation
/// commands are checked by their own rules).
pub fn access_of(opcode: u8) -> Option<Access> {
    match opcode {
        io_opc::READ | io_opc::COMPARE | io_opc::VERIFY => Some(Access::Read),
        io_opc::WRITE
        | io_opc::WRITE_ZEROES
        | io_opc::DATASET_MANAGEMENT
        | io_opc::FLUSH
        | io_opc::WRITE_UNCORRECTABLE
        | io_opc::COPY => Some(Access::Write),
        _ => None,
    }
}

/// DW0 of the AEN announcing a Reservation Notification log page.
pub const AEN_DW0: u32 = aen::dw0(aen::TYPE_IO_CMD_SET, 0, log_id::RESERVATION_NOTIFICATION);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    count: u64,
    notice: Notice,
    nsid: u32,
}

/// One controller's Reservation Notification log: pending pages, the page counter and the
/// notification mask of each namespace.
#[derive(Debug, Default)]
pub struct NoticeLog {
    entries: VecDeque<Entry>,
    counter: u64,
    masks: BTreeMap<u32, u32>,
    /// An AEN was raised and the log not read since (no other is raised until then).
    aen_outstanding: bool,
}

impl NoticeLog {
    /// The mask of namespace `nsid` (feature 0x82).
    pub fn mask(&self, nsid: u32) -> u32 {
        self.masks.get(&nsid).copied().unwrap_or(0)
    }

    pub fn set_mask(&mut self, nsid: u32, mask: u32) {
        if mask == 0 {
            self.masks.remove(&nsid);
        } else {
            self.masks.insert(nsid, mask);
        }
    }

    /// Records a notification unless masked. Beyond [`MAX_NOTICES`] pending pages the
    /// newest is lost and the last kept page takes its count, so the host sees the gap.
    /// Returns whether an AEN is due.
    pub fn push(&mut self, nsid: u32, notice: Notice) -> bool {
        if self.mask(nsid) & (1 << notice as u32) != 0 {
            return false;
        }
        self.counter = self.counter.wrapping_add(1).max(1);
        if self.entries.len() >= MAX_NOTICES {
            if let Some(last) = self.entries.back_mut() {
                last.count = self.counter;
            }
        } else {
            self.entries.push_back(Entry {
                count: self.counter,
                notice,
                nsid,
            });
        }
        let due = !self.aen_outstanding;
        self.aen_outstanding = true;
        due
    }

    /// Pending pages.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Get Log Page 0x80: the oldest page (removed; all zeroes when none is pending) with
    /// the number of pages still pending after it. Without RAE the next notification
    /// raises an AEN again.
    pub fn read(&mut self, rae: bool) -> [u8; NOTICE_PAGE_SIZE] {
        let mut page = ReservationNotificationLog::default();
        if let Some(e) = self.entries.pop_front() {
            page.count = e.count.into();
            page.rnlpt = e.notice as u8;
            page.nalp = self.entries.len().min(255) as u8;
            page.nsid = e.nsid.into();
        }
        if !rae {
            self.aen_outstanding = false;
        }
        page.to_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqe(opcode: u8, cdw10: u32) -> Sqe {
        let mut s = Sqe::new(opcode, 1, 1);
        s.cdw10 = cdw10.into();
        s
    }

    fn keys(a: u64, b: u64) -> Vec<u8> {
        [a.to_le_bytes(), b.to_le_bytes()].concat()
    }

    #[test]
    fn decodes_fields_and_refuses_reserved_values() {
        let c = decode(
            &sqe(io_opc::RESERVATION_REGISTER, 2 | 1 << 3 | 3 << 30),
            &keys(5, 6),
        );
        assert_eq!(
            c,
            Some(Ok(PrCommand::Register(RegisterCmd {
                action: RegisterAction::Replace,
                iekey: true,
                crkey: 5,
                nrkey: 6,
                ptpl: PtplChange::Set,
            })))
        );
        let c = decode(&sqe(io_opc::RESERVATION_ACQUIRE, 1 | 4 << 8), &keys(1, 2));
        assert_eq!(
            c,
            Some(Ok(PrCommand::Acquire {
                action: AcquireAction::Preempt,
                iekey: false,
                rtype: 4,
                crkey: 1,
                prkey: 2
            }))
        );
        let c = decode(
            &sqe(io_opc::RESERVATION_RELEASE, 1 | 2 << 8),
            &keys(9, 0)[..8],
        );
        assert!(matches!(
            c,
            Some(Ok(PrCommand::Release {
                action: ReleaseAction::Clear,
                crkey: 9,
                ..
            }))
        ));
        let invalid = Some(Err(Status::INVALID_FIELD.with_dnr()));
        assert_eq!(
            decode(&sqe(io_opc::RESERVATION_REGISTER, 3), &keys(0, 0)),
            invalid
        );
        assert_eq!(
            decode(&sqe(io_opc::RESERVATION_REGISTER, 1 << 30), &keys(0, 0)),
            invalid,
            "CPTPL 1 is reserved"
        );
        assert_eq!(
            decode(&sqe(io_opc::RESERVATION_ACQUIRE, 3), &keys(0, 0)),
            invalid
        );
        assert_eq!(
            decode(&sqe(io_opc::RESERVATION_RELEASE, 2), &keys(0, 0)),
            invalid
        );
        assert_eq!(
            decode(&sqe(io_opc::RESERVATION_ACQUIRE, 0), &[0; 8]),
            Some(Err(Status::DATA_SGL_LENGTH_INVALID.with_dnr()))
        );
        assert_eq!(decode(&sqe(io_opc::READ, 0), &[]), None);
    }

    #[test]
    fn report_checks_eds_and_length() {
        let r = Reservations::default();
        let mut s = sqe(io_opc::RESERVATION_REPORT, 15);
        assert_eq!(
            report(&r, &s, 64, 131072),
            Err(Status::HOST_ID_INCONSISTENT_FORMAT.with_dnr())
        );
        s.cdw11 = 1.into();
        assert_eq!(report(&r, &s, 64, 131072).unwrap().len(), 64);
        assert_eq!(
            report(&r, &s, 60, 131072),
            Err(Status::DATA_SGL_LENGTH_INVALID.with_dnr())
        );
        s.cdw10 = 14.into();
        assert_eq!(
            report(&r, &s, 64, 131072),
            Err(Status::INVALID_FIELD.with_dnr())
        );
        s.cdw10 = u32::MAX.into();
        assert_eq!(
            report(&r, &s, u32::MAX, 131072),
            Err(Status::INVALID_FIELD.with_dnr()),
            "no overflow"
        );
    }

    #[test]
    fn notice_log_counts_masks_and_loses_beyond_255() {
        let mut log = NoticeLog::default();
        assert_eq!(log.read(false), [0; 64], "empty log: a zeroed page");
        assert!(log.push(1, Notice::ReservationReleased));
        assert!(
            !log.push(2, Notice::RegistrationPreempted),
            "AEN outstanding"
        );
        let p = log.read(false);
        assert_eq!(u64::from_le_bytes(p[0..8].try_into().unwrap()), 1);
        assert_eq!(p[8], Notice::ReservationReleased as u8);
        assert_eq!(p[9], 1, "one more pending");
        assert_eq!(u32::from_le_bytes(p[12..16].try_into().unwrap()), 1);
        log.set_mask(3, 1 << Notice::ReservationPreempted as u32);
        assert!(!log.push(3, Notice::ReservationPreempted), "masked");
        assert!(
            log.push(3, Notice::ReservationReleased),
            "read unmasked the AEN"
        );
        assert_eq!(log.len(), 2);
        for _ in 0..300 {
            log.push(1, Notice::ReservationReleased);
        }
        assert_eq!(log.len(), MAX_NOTICES);
        log.read(false);
        let mut last = [0u8; 64];
        while !log.is_empty() {
            last = log.read(false);
        }
        assert_eq!(
            u64::from_le_bytes(last[0..8].try_into().unwrap()),
            303,
            "the last page carries the newest count"
        );
        assert_eq!(last[9], 0);
    }

    #[test]
    fn access_groups() {
        assert_eq!(access_of(io_opc::READ), Some(Access::Read));
        assert_eq!(access_of(io_opc::FLUSH), Some(Access::Write));
        assert_eq!(access_of(io_opc::DATASET_MANAGEMENT), Some(Access::Write));
        assert_eq!(access_of(io_opc::RESERVATION_REPORT), None);
    }
}
