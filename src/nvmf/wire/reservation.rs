//! Reservation command fields and data, the Reservation Status data structure and the Reservation Notification log page.
//!
//! NVMe base specification 2.0, 7.2 (Reservation Register / Report / Acquire / Release) and
//! 5.16.1.25 (Reservation Notification log page). Only the extended Report format (EDS = 1,
//! 128-bit host identifiers) is laid out: fabrics hosts have no 64-bit host identifier.

use super::*;

/// Register, Acquire and Release CDW10 fields: the action (bits 2:0), Ignore Existing Key
/// (bit 3), the reservation type (bits 15:8, Acquire and Release) and Change Persist
/// Through Power Loss State (bits 31:30, Register).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ReservationCmd {
    /// RREGA, RACQA or RRELA, by opcode.
    pub action: u8,
    pub iekey: bool,
    pub rtype: u8,
    pub cptpl: u8,
}

impl ReservationCmd {
    pub fn parse(sqe: &Sqe) -> Self {
        let cdw10 = sqe.cdw10.get();
        Self {
            action: (cdw10 & 0x7) as u8,
            iekey: cdw10 & (1 << 3) != 0,
            rtype: (cdw10 >> 8) as u8,
            cptpl: (cdw10 >> 30) as u8,
        }
    }

    /// The CDW10 that [`ReservationCmd::parse`] reads back.
    pub fn cdw10(&self) -> u32 {
        (self.action as u32 & 0x7)
            | (self.iekey as u32) << 3
            | (self.rtype as u32) << 8
            | (self.cptpl as u32 & 0x3) << 30
    }
}

/// Reservation Report fields: NUMD (CDW10, 0-based dwords) and Extended Data Structure
/// (CDW11 bit 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ReservationReportCmd {
    pub numd: u32,
    pub eds: bool,
}

impl ReservationReportCmd {
    pub fn parse(sqe: &Sqe) -> Self {
        Self {
            numd: sqe.cdw10.get(),
            eds: sqe.cdw11 & 1 != 0,
        }
    }
    /// Transfer length in bytes (up to 16 GiB, hence u64).
    pub fn length(&self) -> u64 {
        (self.numd as u64 + 1) * 4
    }
}

/// Reservation Register data (16 bytes): current and new reservation keys.
#[derive(Clone, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct ReservationRegisterData {
    pub crkey: U64,
    pub nrkey: U64,
}

wire_layout!(ReservationRegisterData = 16);

assert_offsets!(ReservationRegisterData;
    crkey 0, nrkey 8,
);

/// Reservation Acquire data (16 bytes): current key and the key to preempt.
#[derive(Clone, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct ReservationAcquireData {
    pub crkey: U64,
    pub prkey: U64,
}

wire_layout!(ReservationAcquireData = 16);

assert_offsets!(ReservationAcquireData;
    crkey 0, prkey 8,
);

/// Reservation Release data (8 bytes): the current key.
#[derive(Clone, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct ReservationReleaseData {
    pub crkey: U64,
}

wire_layout!(ReservationReleaseData = 8);

/// Reservation Status data structure header (24 bytes): generation, type, number of
/// registered controllers and Persist Through Power Loss State.
#[derive(Clone, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct ReservationStatus {
    pub gen: U32,
    pub rtype: u8,
    pub regctl: U16,
    pub rsvd7: [u8; 2],
    pub ptpls: u8,
    pub rsvd10: [u8; 14],
}

wire_layout!(ReservationStatus = 24);

assert_offsets!(ReservationStatus;
    gen 0, rtype 4, regctl 5, ptpls 9,
);

/// Reservation Status extended data structure header (64 bytes); the registrant entries
/// ([`RegistrantExtended`]) follow it.
#[derive(Clone, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct ReservationStatusExtended {
    pub status: ReservationStatus,
    pub rsvd24: [u8; 40],
}

wire_layout!(ReservationStatusExtended = 64);

wire_flags! {
    /// Reservation Status of a registrant (RCSTS).
    pub struct RegistrantStatus: u8 {
        /// The host holds the reservation.
        const HOLDS_RESERVATION = 1 << 0;
    }
}

/// Registered Controller extended data structure (64 bytes): one registrant, named by its
/// 128-bit host identifier.
#[derive(Clone, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RegistrantExtended {
    /// Controller ID; 0xFFFF when the registration is the host's, not one controller's.
    pub cntlid: U16,
    pub rcsts: RegistrantStatus,
    pub rsvd3: [u8; 5],
    pub rkey: U64,
    pub hostid: [u8; 16],
    pub rsvd32: [u8; 32],
}

wire_layout!(RegistrantExtended = 64);

assert_offsets!(RegistrantExtended;
    cntlid 0, rcsts 2, rkey 8, hostid 16,
);

/// Reservation Notification log page (64 bytes): the page's count, its type (0 for an
/// empty page), the number of pages still available after it, and the namespace.
#[derive(Clone, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct ReservationNotificationLog {
    pub count: U64,
    pub rnlpt: u8,
    pub nalp: u8,
    pub rsvd10: [u8; 2],
    pub nsid: U32,
    pub rsvd16: [u8; 48],
}

wire_layout!(ReservationNotificationLog = 64);

assert_offsets!(ReservationNotificationLog;
    count 0, rnlpt 8, nalp 9, nsid 12,
);
