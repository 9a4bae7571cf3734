//! NVMe reservations of one namespace as a plain state machine: registrants, the reservation, its generation, and who may read or write.
//!
//! The NVMe base specification's Reservations (Register 0x0D, Report 0x0E, Acquire 0x11,
//! Release 0x15) decided here without I/O: the target carries a command's decoded fields in,
//! and carries out what comes back (the status, the notifications to send to other hosts'
//! controllers, whether the state changed and must be persisted). Registrants are hosts,
//! named by their 128-bit host identifier, so all controllers of one host share one
//! registration. For the two All Registrants types every registrant holds the reservation.
//!
//! Behaviour where the specification leaves room follows the Linux target: Acquire and
//! Release refuse IEKEY (Invalid Field), Register of a host already registered succeeds only
//! with its current key, Preempt of an unheld reservation unregisters the hosts holding
//! PRKEY. A Release whose RTYPE differs from the reservation's is Invalid Field, as the
//! specification and SPDK say (Linux answers Reservation Conflict).
//!
//! The state is saved for Persist Through Power Loss in SPDK's JSON format ([`PtplFile`]).

use super::wire::{
    RegistrantExtended, RegistrantStatus, ReservationStatus, ReservationStatusExtended,
};
use serde::{Deserialize, Serialize};
use zerocopy::IntoBytes;

/// A host identifier (the 128-bit Host Identifier of Connect).
pub type HostId = [u8; 16];

/// The six reservation types (RTYPE values 1-6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, num_enum::TryFromPrimitive)]
#[repr(u8)]
pub enum ReservationType {
    WriteExclusive = 1,
    ExclusiveAccess = 2,
    WriteExclusiveRegistrantsOnly = 3,
    ExclusiveAccessRegistrantsOnly = 4,
    WriteExclusiveAllRegistrants = 5,
    ExclusiveAccessAllRegistrants = 6,
}

impl ReservationType {
    pub fn from_rtype(v: u8) -> Option<Self> {
        Self::try_from(v).ok()
    }

    /// Every registrant holds a reservation of this type.
    fn all_registrants(self) -> bool {
        matches!(
            self,
            Self::WriteExclusiveAllRegistrants | Self::ExclusiveAccessAllRegistrants
        )
    }

    /// Reads by hosts that neither hold the reservation nor are registered are refused.
    fn exclusive_access(self) -> bool {
        matches!(
            self,
            Self::ExclusiveAccess
                | Self::ExclusiveAccessRegistrantsOnly
                | Self::ExclusiveAccessAllRegistrants
        )
    }

    /// Registrants that do not hold the reservation keep the access of a holder.
    fn registrants_have_access(self) -> bool {
        !matches!(self, Self::WriteExclusive | Self::ExclusiveAccess)
    }
}

/// What an I/O command does to the namespace, for the reservation check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read, Compare, Verify.
    Read,
    /// Write, Write Zeroes, Dataset Management, Flush.
    Write,
}

/// Why a reservation command failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrError {
    /// Reservation Conflict (SCT 0, 0x83).
    Conflict,
    /// Invalid Field in Command (SCT 0, 0x02).
    InvalidField,
}

/// The notification a host's controllers receive (the Reservation Notification log page's
/// type, and an AEN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    RegistrationPreempted = 1,
    ReservationReleased = 2,
    ReservationPreempted = 3,
}

/// The notifications one command raises, per host.
pub type Notices = Vec<(HostId, Notice)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterAction {
    Register,
    Unregister,
    Replace,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcquireAction {
    Acquire,
    Preempt,
    /// As Preempt here; the target then lets the preempted hosts' started commands finish
    /// before completing it (pollux cannot recall a bdev I/O; none waits behind a
    /// reservation). See `reservation_target.rs`.
    PreemptAndAbort,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseAction {
    Release,
    Clear,
}

/// Change Persist Through Power Loss State (CPTPL, Register's cdw10 bits 31:30).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PtplChange {
    NoChange,
    Clear,
    Set,
}

/// A Reservation Register command's fields.
#[derive(Debug, Clone, Copy)]
pub struct Register {
    pub action: RegisterAction,
    pub ignore_existing_key: bool,
    pub current_key: u64,
    pub new_key: u64,
    pub ptpl: PtplChange,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Registrant {
    host: HostId,
    key: u64,
}

/// The reservation held on a namespace. For the All Registrants types `host` is the host
/// that acquired it; every registrant holds it all the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    host: HostId,
    rtype: ReservationType,
}

/// The reservation state of one namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reservations {
    registrants: Vec<Registrant>,
    held: Option<Held>,
    generation: u32,
    ptpl: bool,
}

impl Reservations {
    fn registrant(&self, host: &HostId) -> Option<&Registrant> {
        self.registrants.iter().find(|r| &r.host == host)
    }

    /// Whether `host` holds the reservation (any registrant, for All Registrants types).
    pub fn holds(&self, host: &HostId) -> bool {
        match self.held {
            Some(h) if h.rtype.all_registrants() => self.registrant(host).is_some(),
            Some(h) => &h.host == host,
            None => false,
        }
    }

    /// The reservation's type, if one is held.
    pub fn rtype(&self) -> Option<ReservationType> {
        self.held.map(|h| h.rtype)
    }

    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// Persist Through Power Loss is on.
    pub fn ptpl(&self) -> bool {
        self.ptpl
    }

    /// Turns Persist Through Power Loss on or off (Set Features Reservation Persistence).
    pub fn set_ptpl(&mut self, on: bool) {
        self.ptpl = on;
    }

    /// Whether `host` may do `access` (the specification's table of command behaviour in the
    /// presence of a reservation).
    pub fn allows(&self, host: &HostId, access: Access) -> bool {
        let Some(held) = self.held else {
            return true;
        };
        if self.holds(host) {
            return true;
        }
        if access == Access::Read && !held.rtype.exclusive_access() {
            return true;
        }
        held.rtype.registrants_have_access() && self.registrant(host).is_some()
    }

    /// Reservation Register from `host`. `ptpl_capable`: the namespace has a PTPL file, so
    /// CPTPL may change the state.
    pub fn register(
        &mut self,
        host: &HostId,
        cmd: Register,
        ptpl_capable: bool,
    ) -> Result<Notices, PrError> {
        if cmd.ptpl != PtplChange::NoChange && !ptpl_capable {
            return Err(PrError::InvalidField);
        }
        let mut notices = Notices::new();
        let current = self.registrant(host).copied();
        match cmd.action {
            RegisterAction::Register => match current {
                Some(r) if r.key != cmd.new_key => return Err(PrError::Conflict),
                Some(_) => {}
                None => self.registrants.push(Registrant {
                    host: *host,
                    key: cmd.new_key,
                }),
            },
            RegisterAction::Unregister => match current {
                Some(r) if cmd.ignore_existing_key || r.key == cmd.current_key => {
                    self.unregister(host, &mut notices);
                }
                _ => return Err(PrError::Conflict),
            },
            RegisterAction::Replace => match current {
                Some(r) if cmd.ignore_existing_key || r.key == cmd.current_key => {
                    if let Some(r) = self.registrants.iter_mut().find(|r| &r.host == host) {
                        r.key = cmd.new_key;
                    }
                }
                _ => return Err(PrError::Conflict),
            },
        }
        match cmd.ptpl {
            PtplChange::NoChange => {}
            PtplChange::Clear => self.ptpl = false,
            PtplChange::Set => self.ptpl = true,
        }
        self.generation = self.generation.wrapping_add(1);
        Ok(notices)
    }

    /// Removes `host`'s registration and what it held: a reservation of a single holder is
    /// released (its registrants told, for the Registrants Only types); an All Registrants
    /// reservation ends with its last registrant.
    fn unregister(&mut self, host: &HostId, notices: &mut Notices) {
        let held_by_host = self.holds(host);
        self.registrants.retain(|r| &r.host != host);
        let Some(held) = self.held else { return };
        if held.rtype.all_registrants() {
            match self.registrants.first() {
                None => self.held = None,
                Some(next) if &held.host == host => {
                    self.held = Some(Held {
                        host: next.host,
                        rtype: held.rtype,
                    })
                }
                Some(_) => {}
            }
        } else if held_by_host {
            self.held = None;
            if held.rtype.registrants_have_access() {
                self.tell_registrants(host, Notice::ReservationReleased, notices);
            }
        }
    }

    fn tell_registrants(&self, except: &HostId, notice: Notice, notices: &mut Notices) {
        notices.extend(
            self.registrants
                .iter()
                .filter(|r| &r.host != except)
                .map(|r| (r.host, notice)),
        );
    }

    /// Reservation Acquire from `host`, which must be registered with `current_key`.
    pub fn acquire(
        &mut self,
        host: &HostId,
        action: AcquireAction,
        ignore_existing_key: bool,
        rtype: u8,
        current_key: u64,
        preempt_key: u64,
    ) -> Result<Notices, PrError> {
        let rtype = ReservationType::from_rtype(rtype).ok_or(PrError::InvalidField)?;
        if ignore_existing_key {
            return Err(PrError::InvalidField);
        }
        match self.registrant(host) {
            Some(r) if r.key == current_key => {}
            _ => return Err(PrError::Conflict),
        }
        let mut notices = Notices::new();
        match action {
            AcquireAction::Acquire => match self.held {
                None => {
                    self.held = Some(Held { host: *host, rtype });
                }
                Some(h) if self.holds(host) && h.rtype == rtype => {}
                Some(_) => return Err(PrError::Conflict),
            },
            AcquireAction::Preempt | AcquireAction::PreemptAndAbort => {
                self.preempt(host, rtype, preempt_key, &mut notices)?;
                self.generation = self.generation.wrapping_add(1);
            }
        }
        Ok(notices)
    }

    fn preempt(
        &mut self,
        host: &HostId,
        rtype: ReservationType,
        preempt_key: u64,
        notices: &mut Notices,
    ) -> Result<(), PrError> {
        let Some(held) = self.held else {
            return self.unregister_by_key(host, preempt_key, notices);
        };
        if held.rtype.all_registrants() {
            if preempt_key != 0 {
                return self.unregister_by_key(host, preempt_key, notices);
            }
            // Every other registrant goes; the preempting host holds the new reservation.
            self.held = Some(Held { host: *host, rtype });
            let others: Vec<HostId> = self
                .registrants
                .iter()
                .filter(|r| &r.host != host)
                .map(|r| r.host)
                .collect();
            for other in others {
                self.registrants.retain(|r| r.host != other);
                notices.push((other, Notice::RegistrationPreempted));
            }
            return Ok(());
        }
        if &held.host == host {
            // The holder changes its own reservation's type.
            self.held = Some(Held { host: *host, rtype });
            if held.rtype != rtype {
                self.tell_registrants(host, Notice::ReservationReleased, notices);
            }
            return Ok(());
        }
        let holder_key = self.registrant(&held.host).map(|r| r.key);
        if holder_key == Some(preempt_key) {
            // The holder is preempted: the preempting host takes the reservation first, then
            // every other host registered with the holder's key goes.
            self.held = Some(Held { host: *host, rtype });
            let preempted: Vec<HostId> = self
                .registrants
                .iter()
                .filter(|r| r.key == preempt_key && &r.host != host)
                .map(|r| r.host)
                .collect();
            for other in preempted {
                self.registrants.retain(|r| r.host != other);
                notices.push((other, Notice::RegistrationPreempted));
            }
            if held.rtype != rtype {
                self.tell_registrants(host, Notice::ReservationReleased, notices);
            }
            return Ok(());
        }
        if preempt_key == 0 {
            return Err(PrError::InvalidField);
        }
        self.unregister_by_key(host, preempt_key, notices)
    }

    /// Unregisters every host registered with `key` (the preempting host itself too, as the
    /// Linux target does, but without notifying it); none is a conflict.
    fn unregister_by_key(
        &mut self,
        preempting: &HostId,
        key: u64,
        notices: &mut Notices,
    ) -> Result<(), PrError> {
        let hosts: Vec<HostId> = self
            .registrants
            .iter()
            .filter(|r| r.key == key)
            .map(|r| r.host)
            .collect();
        if hosts.is_empty() {
            return Err(PrError::Conflict);
        }
        for h in hosts {
            self.unregister(&h, notices);
            if &h != preempting {
                notices.push((h, Notice::RegistrationPreempted));
            }
        }
        Ok(())
    }

    /// Reservation Release from `host`, which must be registered with `current_key`.
    pub fn release(
        &mut self,
        host: &HostId,
        action: ReleaseAction,
        ignore_existing_key: bool,
        rtype: u8,
        current_key: u64,
    ) -> Result<Notices, PrError> {
        if ignore_existing_key {
            return Err(PrError::InvalidField);
        }
        match self.registrant(host) {
            Some(r) if r.key == current_key => {}
            _ => return Err(PrError::Conflict),
        }
        let mut notices = Notices::new();
        match action {
            ReleaseAction::Release => {
                let Some(held) = self.held else {
                    return Ok(notices);
                };
                if !self.holds(host) {
                    return Ok(notices);
                }
                if held.rtype as u8 != rtype {
                    return Err(PrError::InvalidField);
                }
                self.held = None;
                if held.rtype.registrants_have_access() {
                    self.tell_registrants(host, Notice::ReservationReleased, &mut notices);
                }
            }
            ReleaseAction::Clear => {
                self.held = None;
                self.tell_registrants(host, Notice::ReservationPreempted, &mut notices);
                self.registrants.clear();
                self.generation = self.generation.wrapping_add(1);
            }
        }
        Ok(notices)
    }

    /// The Reservation Status Extended data structure (Report with EDS set): a 64-byte header
    /// and one 64-byte Registered Controller Extended entry per registrant (CNTLID FFFFh: a
    /// host may have several controllers), cut to `len` bytes.
    pub fn report_extended(&self, len: usize) -> Vec<u8> {
        let header = ReservationStatusExtended {
            status: ReservationStatus {
                gen: self.generation.into(),
                rtype: self.rtype().map_or(0, |t| t as u8),
                regctl: (self.registrants.len() as u16).into(),
                ptpls: self.ptpl as u8,
                ..Default::default()
            },
            ..Default::default()
        };
        let mut out = Vec::with_capacity(len.max(ReservationStatusExtended::SIZE));
        out.extend_from_slice(header.as_bytes());
        for r in &self.registrants {
            let mut rcsts = RegistrantStatus::empty();
            rcsts.set(RegistrantStatus::HOLDS_RESERVATION, self.holds(&r.host));
            let entry = RegistrantExtended {
                cntlid: 0xffff.into(),
                rcsts,
                rkey: r.key.into(),
                hostid: r.host,
                ..Default::default()
            };
            out.extend_from_slice(entry.as_bytes());
        }
        out.resize(len, 0);
        out
    }

    /// The state as SPDK writes a namespace's PTPL file.
    pub fn to_ptpl_file(&self, bdev_uuid: &str) -> PtplFile {
        let holder = self.held.map(|h| h.host);
        PtplFile {
            ptpl: self.ptpl,
            rtype: self.rtype().map_or(0, |t| t as u32),
            crkey: holder
                .and_then(|h| self.registrant(&h))
                .map_or(0, |r| r.key),
            bdev_uuid: bdev_uuid.to_string(),
            holder_uuid: holder.map(|h| uuid::Uuid::from_bytes(h).to_string()),
            registrants: self
                .registrants
                .iter()
                .map(|r| PtplRegistrant {
                    rkey: r.key,
                    host_uuid: uuid::Uuid::from_bytes(r.host).to_string(),
                })
                .collect(),
        }
    }

    /// The state a PTPL file restores (only when it says PTPL was on, as in SPDK).
    pub fn from_ptpl_file(f: &PtplFile) -> Result<Self, String> {
        let host = |s: &str| {
            uuid::Uuid::parse_str(s)
                .map(|u| *u.as_bytes())
                .map_err(|e| format!("host uuid {s:?}: {e}"))
        };
        if !f.ptpl {
            return Ok(Self::default());
        }
        let mut state = Self {
            ptpl: true,
            ..Self::default()
        };
        for r in &f.registrants {
            let h = host(&r.host_uuid)?;
            if state.registrant(&h).is_some() {
                return Err(format!("host {} is registered twice", r.host_uuid));
            }
            state.registrants.push(Registrant {
                host: h,
                key: r.rkey,
            });
        }
        if f.rtype != 0 {
            let rtype = u8::try_from(f.rtype)
                .ok()
                .and_then(ReservationType::from_rtype)
                .ok_or_else(|| format!("rtype {} is not a reservation type", f.rtype))?;
            let holder = f
                .holder_uuid
                .as_deref()
                .ok_or("a reservation without holder_uuid")?;
            let h = host(holder)?;
            if state.registrant(&h).is_none() {
                return Err(format!("holder {holder} is not a registrant"));
            }
            state.held = Some(Held { host: h, rtype });
        }
        Ok(state)
    }
}

/// A namespace's Persist Through Power Loss file, in SPDK's format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PtplFile {
    #[serde(default)]
    pub ptpl: bool,
    #[serde(default)]
    pub rtype: u32,
    #[serde(default)]
    pub crkey: u64,
    pub bdev_uuid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder_uuid: Option<String>,
    pub registrants: Vec<PtplRegistrant>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PtplRegistrant {
    pub rkey: u64,
    pub host_uuid: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: HostId = [0xa; 16];
    const B: HostId = [0xb; 16];
    const C: HostId = [0xc; 16];

    fn reg(action: RegisterAction, current_key: u64, new_key: u64) -> Register {
        Register {
            action,
            ignore_existing_key: false,
            current_key,
            new_key,
            ptpl: PtplChange::NoChange,
        }
    }

    fn registered(hosts: &[(HostId, u64)]) -> Reservations {
        let mut r = Reservations::default();
        for (h, k) in hosts {
            r.register(h, reg(RegisterAction::Register, 0, *k), false)
                .unwrap();
        }
        r
    }

    #[test]
    fn register_unregister_replace_and_the_generation() {
        let mut r = registered(&[(A, 1)]);
        assert_eq!(r.generation(), 1);
        // Registering again: the same key is fine, another is a conflict.
        r.register(&A, reg(RegisterAction::Register, 0, 1), false)
            .unwrap();
        assert_eq!(
            r.register(&A, reg(RegisterAction::Register, 0, 2), false),
            Err(PrError::Conflict)
        );
        assert_eq!(
            r.register(&A, reg(RegisterAction::Replace, 9, 2), false),
            Err(PrError::Conflict),
            "wrong current key"
        );
        r.register(&A, reg(RegisterAction::Replace, 1, 2), false)
            .unwrap();
        let iekey = Register {
            ignore_existing_key: true,
            ..reg(RegisterAction::Replace, 0, 3)
        };
        r.register(&A, iekey, false).unwrap();
        assert_eq!(
            r.register(&B, reg(RegisterAction::Unregister, 0, 0), false),
            Err(PrError::Conflict),
            "not registered"
        );
        r.register(&A, reg(RegisterAction::Unregister, 3, 0), false)
            .unwrap();
        assert_eq!(r.generation(), 5);
        assert_eq!(r.report_extended(64)[5], 0, "no registrants");
    }

    #[test]
    fn cptpl_needs_a_ptpl_file() {
        let mut r = Reservations::default();
        let set = Register {
            ptpl: PtplChange::Set,
            ..reg(RegisterAction::Register, 0, 1)
        };
        assert_eq!(r.register(&A, set, false), Err(PrError::InvalidField));
        r.register(&A, set, true).unwrap();
        assert!(r.ptpl());
    }

    /// Who may read and write under each type: the holder, a registrant, a stranger.
    #[test]
    fn access_by_type() {
        use Access::{Read, Write};
        // (rtype, registrant read, registrant write, other read, other write)
        let table = [
            (1, true, false, true, false),
            (2, false, false, false, false),
            (3, true, true, true, false),
            (4, true, true, false, false),
            (5, true, true, true, false),
            (6, true, true, false, false),
        ];
        for (rtype, rr, rw, or, ow) in table {
            let mut r = registered(&[(A, 1), (B, 2)]);
            r.acquire(&A, AcquireAction::Acquire, false, rtype, 1, 0)
                .unwrap();
            assert!(
                r.allows(&A, Read) && r.allows(&A, Write),
                "holder, type {rtype}"
            );
            assert_eq!(r.allows(&B, Read), rr, "registrant read, type {rtype}");
            assert_eq!(r.allows(&B, Write), rw, "registrant write, type {rtype}");
            assert_eq!(r.allows(&C, Read), or, "other read, type {rtype}");
            assert_eq!(r.allows(&C, Write), ow, "other write, type {rtype}");
        }
        let r = registered(&[(A, 1)]);
        assert!(r.allows(&C, Write), "no reservation: everyone");
    }

    #[test]
    fn acquire_rules() {
        let mut r = registered(&[(A, 1), (B, 2)]);
        assert_eq!(
            r.acquire(&A, AcquireAction::Acquire, false, 1, 9, 0),
            Err(PrError::Conflict),
            "wrong key"
        );
        assert_eq!(
            r.acquire(&C, AcquireAction::Acquire, false, 1, 0, 0),
            Err(PrError::Conflict),
            "not registered"
        );
        assert_eq!(
            r.acquire(&A, AcquireAction::Acquire, false, 7, 1, 0),
            Err(PrError::InvalidField)
        );
        assert_eq!(
            r.acquire(&A, AcquireAction::Acquire, true, 1, 1, 0),
            Err(PrError::InvalidField),
            "IEKEY"
        );
        r.acquire(&A, AcquireAction::Acquire, false, 1, 1, 0)
            .unwrap();
        r.acquire(&A, AcquireAction::Acquire, false, 1, 1, 0)
            .unwrap();
        assert_eq!(
            r.acquire(&A, AcquireAction::Acquire, false, 2, 1, 0),
            Err(PrError::Conflict),
            "the holder asks another type"
        );
        assert_eq!(
            r.acquire(&B, AcquireAction::Acquire, false, 1, 2, 0),
            Err(PrError::Conflict)
        );
        // All Registrants: every registrant holds it, acquiring the same type succeeds.
        let mut r = registered(&[(A, 1), (B, 2)]);
        r.acquire(&A, AcquireAction::Acquire, false, 5, 1, 0)
            .unwrap();
        r.acquire(&B, AcquireAction::Acquire, false, 5, 2, 0)
            .unwrap();
        assert!(r.holds(&B));
        assert_eq!(r.report_extended(192)[64 + 2], 1);
        assert_eq!(r.report_extended(192)[128 + 2], 1);
    }

    #[test]
    fn release_and_clear() {
        let mut r = registered(&[(A, 1), (B, 2)]);
        r.acquire(&A, AcquireAction::Acquire, false, 3, 1, 0)
            .unwrap();
        // A non-holder's release changes nothing.
        assert_eq!(
            r.release(&B, ReleaseAction::Release, false, 3, 2),
            Ok(vec![])
        );
        assert_eq!(
            r.rtype(),
            Some(ReservationType::WriteExclusiveRegistrantsOnly)
        );
        assert_eq!(
            r.release(&A, ReleaseAction::Release, false, 1, 1),
            Err(PrError::InvalidField),
            "type differs"
        );
        assert_eq!(
            r.release(&A, ReleaseAction::Release, false, 3, 1),
            Ok(vec![(B, Notice::ReservationReleased)])
        );
        assert_eq!(r.rtype(), None);
        // Write Exclusive: no notice on release.
        r.acquire(&A, AcquireAction::Acquire, false, 1, 1, 0)
            .unwrap();
        assert_eq!(
            r.release(&A, ReleaseAction::Release, false, 1, 1),
            Ok(vec![])
        );
        let gen = r.generation();
        r.acquire(&B, AcquireAction::Acquire, false, 2, 2, 0)
            .unwrap();
        assert_eq!(
            r.release(&A, ReleaseAction::Clear, false, 0, 1),
            Ok(vec![(B, Notice::ReservationPreempted)])
        );
        assert_eq!(r.rtype(), None);
        assert_eq!(r.generation(), gen + 1);
        assert_eq!(
            r.release(&A, ReleaseAction::Release, false, 1, 1),
            Err(PrError::Conflict),
            "clear unregistered everyone"
        );
    }

    #[test]
    fn preempt_the_holder_and_by_key() {
        let mut r = registered(&[(A, 1), (B, 2), (C, 2)]);
        r.acquire(&B, AcquireAction::Acquire, false, 1, 2, 0)
            .unwrap();
        // A preempts the holder's key: B and C (same key) go, A holds type 2.
        let n = r
            .acquire(&A, AcquireAction::Preempt, false, 2, 1, 2)
            .unwrap();
        assert_eq!(
            n,
            vec![
                (B, Notice::RegistrationPreempted),
                (C, Notice::RegistrationPreempted)
            ]
        );
        assert!(r.holds(&A));
        assert_eq!(r.rtype(), Some(ReservationType::ExclusiveAccess));
        assert_eq!(r.report_extended(64)[5], 1);
        // Preempting a key nobody holds is a conflict; key 0 for a non-holder is invalid.
        let mut r = registered(&[(A, 1), (B, 2), (C, 3)]);
        r.acquire(&B, AcquireAction::Acquire, false, 1, 2, 0)
            .unwrap();
        assert_eq!(
            r.acquire(&A, AcquireAction::Preempt, false, 1, 1, 9),
            Err(PrError::Conflict)
        );
        assert_eq!(
            r.acquire(&A, AcquireAction::Preempt, false, 1, 1, 0),
            Err(PrError::InvalidField)
        );
        // Preempting another registrant's key (not the holder's) unregisters it only.
        let n = r
            .acquire(&A, AcquireAction::PreemptAndAbort, false, 1, 1, 3)
            .unwrap();
        assert_eq!(n, vec![(C, Notice::RegistrationPreempted)]);
        assert!(r.holds(&B));
    }

    #[test]
    fn preempt_all_registrants_with_key_zero() {
        let mut r = registered(&[(A, 1), (B, 2), (C, 3)]);
        r.acquire(&B, AcquireAction::Acquire, false, 6, 2, 0)
            .unwrap();
        let n = r
            .acquire(&A, AcquireAction::Preempt, false, 4, 1, 0)
            .unwrap();
        assert_eq!(
            n,
            vec![
                (B, Notice::RegistrationPreempted),
                (C, Notice::RegistrationPreempted)
            ]
        );
        assert!(r.holds(&A));
        assert_eq!(
            r.rtype(),
            Some(ReservationType::ExclusiveAccessRegistrantsOnly)
        );
    }

    #[test]
    fn unregistering_the_holder() {
        // A Registrants Only reservation is released, its registrants told.
        let mut r = registered(&[(A, 1), (B, 2)]);
        r.acquire(&A, AcquireAction::Acquire, false, 4, 1, 0)
            .unwrap();
        let n = r
            .register(&A, reg(RegisterAction::Unregister, 1, 0), false)
            .unwrap();
        assert_eq!(n, vec![(B, Notice::ReservationReleased)]);
        assert_eq!(r.rtype(), None);
        // An All Registrants reservation lasts until its last registrant leaves.
        let mut r = registered(&[(A, 1), (B, 2)]);
        r.acquire(&A, AcquireAction::Acquire, false, 5, 1, 0)
            .unwrap();
        r.register(&A, reg(RegisterAction::Unregister, 1, 0), false)
            .unwrap();
        assert!(r.holds(&B));
        r.register(&B, reg(RegisterAction::Unregister, 2, 0), false)
            .unwrap();
        assert_eq!(r.rtype(), None);
    }

    #[test]
    fn report_layout_and_truncation() {
        let mut r = registered(&[(A, 0x1122), (B, 2)]);
        r.acquire(&B, AcquireAction::Acquire, false, 2, 2, 0)
            .unwrap();
        let d = r.report_extended(4096);
        assert_eq!(d.len(), 4096);
        assert_eq!(
            u32::from_le_bytes(d[0..4].try_into().unwrap()),
            2,
            "two registrations; an acquire is not counted"
        );
        assert_eq!(d[4], 2);
        assert_eq!(u16::from_le_bytes([d[5], d[6]]), 2);
        assert_eq!(&d[64..66], &[0xff, 0xff]);
        assert_eq!(d[66], 0, "A does not hold it");
        assert_eq!(u64::from_le_bytes(d[72..80].try_into().unwrap()), 0x1122);
        assert_eq!(&d[80..96], &A);
        assert_eq!(d[128 + 2], 1, "B holds it");
        assert_eq!(r.report_extended(70).len(), 70);
    }

    #[test]
    fn ptpl_file_round_trip_and_refusals() {
        let mut r = Reservations::default();
        let set = Register {
            ptpl: PtplChange::Set,
            ..reg(RegisterAction::Register, 0, 7)
        };
        r.register(&A, set, true).unwrap();
        r.register(&B, reg(RegisterAction::Register, 0, 8), true)
            .unwrap();
        r.acquire(&B, AcquireAction::Acquire, false, 3, 8, 0)
            .unwrap();
        let f = r.to_ptpl_file("5b1e0cf4-0d7a-4bb2-8c67-6d7e4c6c0b0a");
        assert_eq!(f.crkey, 8);
        let text = serde_json::to_string(&f).unwrap();
        let back: PtplFile = serde_json::from_str(&text).unwrap();
        let restored = Reservations::from_ptpl_file(&back).unwrap();
        assert!(restored.holds(&B) && restored.ptpl());
        assert_eq!(restored.rtype(), r.rtype());
        assert!(restored.allows(&A, Access::Write));
        assert!(!restored.allows(&C, Access::Write));

        let mut bad = back.clone();
        bad.rtype = 9;
        assert!(Reservations::from_ptpl_file(&bad)
            .unwrap_err()
            .contains("rtype"));
        let mut bad = back.clone();
        bad.holder_uuid = Some(uuid::Uuid::from_bytes(C).to_string());
        assert!(Reservations::from_ptpl_file(&bad)
            .unwrap_err()
            .contains("not a registrant"));
        let mut bad = back;
        bad.registrants[0].host_uuid = "nope".into();
        assert!(Reservations::from_ptpl_file(&bad).is_err());
        assert!(serde_json::from_str::<PtplFile>("{\"registrants\": 3}").is_err());
    }
}
