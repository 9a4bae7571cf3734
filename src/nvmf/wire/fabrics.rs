//! NVMe over Fabrics commands: Connect with its data, Property Get/Set, Disconnect,
//! Authentication Send/Receive, and the controller properties (CAP, VS, CC, CSTS).

use super::*;

// ---------------------------------------------------------------------------------------
// Fabrics commands
// ---------------------------------------------------------------------------------------

/// Byte offsets of Connect fields, as reported in the Invalid Parameters response (IPO).
pub mod connect_off {
    /// In the Connect SQE.
    pub const RECFMT: u16 = 40;
    pub const QID: u16 = 42;
    pub const SQSIZE: u16 = 44;
    pub const CATTR: u16 = 46;
    pub const KATO: u16 = 48;
    /// In the Connect data.
    pub const HOSTID: u16 = 0;
    pub const CNTLID: u16 = 16;
    pub const SUBNQN: u16 = 256;
    pub const HOSTNQN: u16 = 512;
}

/// Maximum NQN length in bytes (the fields are 256 bytes with a terminating NUL).
pub const NQN_MAX_LEN: usize = 223;
/// The well-known discovery subsystem NQN.
pub const DISCOVERY_NQN: &str = "nqn.2014-08.org.nvmexpress.discovery";
/// Connect data cntlid meaning "any controller" (dynamic controller model).
pub const CNTLID_DYNAMIC: u16 = 0xffff;

/// Fabrics Connect command fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ConnectCmd {
    pub cid: u16,
    pub sgl: SglDescriptor,
    pub recfmt: u16,
    pub qid: u16,
    /// 0-based queue size.
    pub sqsize: u16,
    /// Connect attributes (bit 2: disable SQ flow control; bits 1:0 priority).
    pub cattr: u8,
    /// Keep alive timeout in milliseconds (admin queue only).
    pub kato: u32,
}

/// Property Get command fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PropertyGetCmd {
    pub cid: u16,
    /// Property size: false = 4 bytes, true = 8 bytes (ATTRIB bits 2:0 = 0 or 1).
    pub size8: bool,
    pub offset: u32,
}

/// Property Set command fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PropertySetCmd {
    pub cid: u16,
    pub size8: bool,
    pub offset: u32,
    pub value: u64,
}

/// Authentication Send / Receive command fields (pollux rejects authentication cleanly).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct AuthCmd {
    pub cid: u16,
    pub sgl: SglDescriptor,
    pub secp: u8,
    pub spsp0: u8,
    pub spsp1: u8,
    /// Transfer length (TL for send, AL for receive).
    pub length: u32,
}

/// A decoded fabrics command (opcode 7Fh).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FabricsCommand {
    Connect(ConnectCmd),
    PropertyGet(PropertyGetCmd),
    PropertySet(PropertySetCmd),
    Disconnect {
        cid: u16,
        recfmt: u16,
    },
    AuthenticationSend(AuthCmd),
    AuthenticationReceive(AuthCmd),
    /// An fctype this codec does not know; answer Invalid Opcode / Invalid Field.
    Unknown {
        cid: u16,
        fctype: u8,
    },
}

impl FabricsCommand {
    /// Interprets a fabrics SQE; `None` when the opcode is not `FABRICS`.
    pub fn parse(sqe: &Sqe) -> Option<Self> {
        if !sqe.is_fabrics() {
            return None;
        }
        let cid = sqe.cid.get();
        let auth = || AuthCmd {
            cid,
            sgl: sqe.dptr,
            secp: (sqe.cdw10 >> 24).get() as u8,
            spsp0: (sqe.cdw10 >> 8).get() as u8,
            spsp1: (sqe.cdw10 >> 16).get() as u8,
            length: sqe.cdw11.get(),
        };
        Some(match sqe.fctype() {
            fctype::CONNECT => Self::Connect(ConnectCmd {
                cid,
                sgl: sqe.dptr,
                recfmt: sqe.cdw10.get() as u16,
                qid: (sqe.cdw10 >> 16).get() as u16,
                sqsize: sqe.cdw11.get() as u16,
                cattr: (sqe.cdw11 >> 16).get() as u8,
                kato: sqe.cdw12.get(),
            }),
            fctype::PROPERTY_GET => Self::PropertyGet(PropertyGetCmd {
                cid,
                size8: sqe.cdw10 & 0x7 == 1,
                offset: sqe.cdw11.get(),
            }),
            fctype::PROPERTY_SET => Self::PropertySet(PropertySetCmd {
                cid,
                size8: sqe.cdw10 & 0x7 == 1,
                offset: sqe.cdw11.get(),
                value: ((sqe.cdw13).get() as u64) << 32 | sqe.cdw12.get() as u64,
            }),
            fctype::DISCONNECT => Self::Disconnect {
                cid,
                recfmt: sqe.cdw10.get() as u16,
            },
            fctype::AUTHENTICATION_SEND => Self::AuthenticationSend(auth()),
            fctype::AUTHENTICATION_RECEIVE => Self::AuthenticationReceive(auth()),
            other => Self::Unknown { cid, fctype: other },
        })
    }

    /// Builds the SQE for this command.
    pub fn to_sqe(&self) -> Sqe {
        let mk = |cid: u16, fct: u8| {
            let mut s = Sqe::new(admin_opc::FABRICS, cid, fct as u32);
            // Fabrics commands carry no PSDT meaning beyond SGL use; keep the SGL bit.
            s.flags = psdt::SGL_MPTR_CONTIG << 6;
            s
        };
        let auth = |a: &AuthCmd, fct: u8| {
            let mut s = mk(a.cid, fct);
            s.dptr = a.sgl;
            s.cdw10 =
                ((a.secp as u32) << 24 | (a.spsp1 as u32) << 16 | (a.spsp0 as u32) << 8).into();
            s.cdw11 = a.length.into();
            s
        };
        match self {
            Self::Connect(c) => {
                let mut s = mk(c.cid, fctype::CONNECT);
                s.dptr = c.sgl;
                s.cdw10 = (c.recfmt as u32 | (c.qid as u32) << 16).into();
                s.cdw11 = (c.sqsize as u32 | (c.cattr as u32) << 16).into();
                s.cdw12 = c.kato.into();
                s
            }
            Self::PropertyGet(p) => {
                let mut s = mk(p.cid, fctype::PROPERTY_GET);
                s.cdw10 = (p.size8 as u32).into();
                s.cdw11 = p.offset.into();
                s
            }
            Self::PropertySet(p) => {
                let mut s = mk(p.cid, fctype::PROPERTY_SET);
                s.cdw10 = (p.size8 as u32).into();
                s.cdw11 = p.offset.into();
                s.cdw12 = (p.value as u32).into();
                s.cdw13 = ((p.value >> 32) as u32).into();
                s
            }
            Self::Disconnect { cid, recfmt } => {
                let mut s = mk(*cid, fctype::DISCONNECT);
                s.cdw10 = (*recfmt as u32).into();
                s
            }
            Self::AuthenticationSend(a) => auth(a, fctype::AUTHENTICATION_SEND),
            Self::AuthenticationReceive(a) => auth(a, fctype::AUTHENTICATION_RECEIVE),
            Self::Unknown { cid, fctype } => mk(*cid, *fctype),
        }
    }
}

/// The 1024-byte data of a Connect command.
#[derive(Clone, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct ConnectData {
    pub hostid: [u8; 16],
    pub cntlid: U16,
    pub rsvd18: [u8; 238],
    pub subnqn: [u8; 256],
    pub hostnqn: [u8; 256],
    pub rsvd768: [u8; 256],
}

wire_layout!(ConnectData = 1024);

const _: () = {
    assert!(core::mem::offset_of!(ConnectData, hostid) == 0);
    assert!(core::mem::offset_of!(ConnectData, cntlid) == 16);
    assert!(core::mem::offset_of!(ConnectData, subnqn) == 256);
    assert!(core::mem::offset_of!(ConnectData, hostnqn) == 512);
};

impl ConnectData {
    /// The subsystem NQN as text (`None` when it is not UTF-8).
    pub fn subnqn_str(&self) -> Option<&str> {
        super::field_str(&self.subnqn)
    }
    /// The host NQN as text (`None` when it is not UTF-8).
    pub fn hostnqn_str(&self) -> Option<&str> {
        super::field_str(&self.hostnqn)
    }
    /// Whether the NQN fields are NUL-terminated within their 256 bytes (a careful target
    /// rejects them otherwise).
    pub fn nqns_terminated(&self) -> bool {
        self.subnqn.contains(&0) && self.hostnqn.contains(&0)
    }
}

/// CQE DW0 of a successful Connect: the controller id (bits 15:0) and AUTHREQ (31:16, 0).
pub const fn connect_success_dw0(cntlid: u16) -> u32 {
    cntlid as u32
}

/// CQE DW0 of a Connect answered with Invalid Parameters: IPO (the byte offset of the bad
/// field, bits 15:0) and IATTR (bit 16: the offset is in the Connect data, else the SQE).
pub const fn connect_invalid_param_dw0(in_data: bool, offset: u16) -> u32 {
    offset as u32 | (in_data as u32) << 16
}

/// Decodes the DW0 of an Invalid Parameters Connect response into (in_data, offset).
pub const fn connect_invalid_param_from_dw0(dw0: u32) -> (bool, u16) {
    (dw0 & (1 << 16) != 0, dw0 as u16)
}

// ---------------------------------------------------------------------------------------
// Controller properties
// ---------------------------------------------------------------------------------------

/// Property offsets (Property Get/Set `offset`).
pub mod prop {
    pub const CAP: u32 = 0x00;
    pub const VS: u32 = 0x08;
    pub const INTMS: u32 = 0x0c;
    pub const INTMC: u32 = 0x10;
    pub const CC: u32 = 0x14;
    pub const CSTS: u32 = 0x1c;
    pub const NSSR: u32 = 0x20;

    /// Whether a property at `offset` is 8 bytes wide (only CAP among the fabrics ones).
    pub const fn is_8_bytes(offset: u32) -> bool {
        offset == CAP
    }
}

/// Controller Capabilities (CAP, 8 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Cap {
    /// Maximum queue entries supported, 0-based.
    pub mqes: u16,
    /// Contiguous queues required.
    pub cqr: bool,
    /// Arbitration mechanisms supported (2 bits).
    pub ams: u8,
    /// Timeout in 500 ms units.
    pub to: u8,
    /// Doorbell stride (4 bits).
    pub dstrd: u8,
    /// NVM subsystem reset supported.
    pub nssrs: bool,
    /// Command sets supported (8 bits; bit 0 = NVM command set).
    pub css: u8,
    /// Boot partition support.
    pub bps: bool,
    /// Memory page size minimum / maximum (2^(12 + n)).
    pub mpsmin: u8,
    pub mpsmax: u8,
    /// Controller memory buffer supported.
    pub cmbs: bool,
}

impl Cap {
    pub fn to_u64(&self) -> u64 {
        self.mqes as u64
            | (self.cqr as u64) << 16
            | ((self.ams & 0x3) as u64) << 17
            | (self.to as u64) << 24
            | ((self.dstrd & 0xf) as u64) << 32
            | (self.nssrs as u64) << 36
            | (self.css as u64) << 37
            | (self.bps as u64) << 45
            | ((self.mpsmin & 0xf) as u64) << 48
            | ((self.mpsmax & 0xf) as u64) << 52
            | (self.cmbs as u64) << 57
    }
    pub fn from_u64(v: u64) -> Self {
        Self {
            mqes: v as u16,
            cqr: v >> 16 & 1 != 0,
            ams: (v >> 17 & 0x3) as u8,
            to: (v >> 24) as u8,
            dstrd: (v >> 32 & 0xf) as u8,
            nssrs: v >> 36 & 1 != 0,
            css: (v >> 37) as u8,
            bps: v >> 45 & 1 != 0,
            mpsmin: (v >> 48 & 0xf) as u8,
            mpsmax: (v >> 52 & 0xf) as u8,
            cmbs: v >> 57 & 1 != 0,
        }
    }
}

/// Version (VS, 4 bytes): major.minor.tertiary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Version {
    pub major: u16,
    pub minor: u8,
    pub tertiary: u8,
}

impl Version {
    pub const V1_3: Version = Version::new(1, 3, 0);
    pub const V1_4: Version = Version::new(1, 4, 0);
    pub const fn new(major: u16, minor: u8, tertiary: u8) -> Self {
        Self {
            major,
            minor,
            tertiary,
        }
    }
    pub const fn to_u32(self) -> u32 {
        (self.major as u32) << 16 | (self.minor as u32) << 8 | self.tertiary as u32
    }
    pub const fn from_u32(v: u32) -> Self {
        Self::new((v >> 16) as u16, (v >> 8) as u8, v as u8)
    }
}

/// CC.SHN and CSTS.SHST values.
pub mod shutdown {
    pub const NONE: u8 = 0;
    /// CC.SHN: normal shutdown; CSTS.SHST: shutdown processing occurring.
    pub const NORMAL_OR_OCCURRING: u8 = 1;
    /// CC.SHN: abrupt shutdown.
    pub const ABRUPT: u8 = 2;
    /// CSTS.SHST: shutdown processing complete.
    pub const COMPLETE: u8 = 2;
}

/// Controller Configuration (CC, 4 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Cc {
    pub en: bool,
    /// I/O command set selected (3 bits).
    pub css: u8,
    /// Memory page size (2^(12 + mps)), 4 bits.
    pub mps: u8,
    /// Arbitration mechanism selected (3 bits).
    pub ams: u8,
    /// Shutdown notification (2 bits), see [`shutdown`].
    pub shn: u8,
    /// I/O SQ / CQ entry size as a power of two (4 bits each; 6 = 64 B, 4 = 16 B).
    pub iosqes: u8,
    pub iocqes: u8,
}

impl Cc {
    pub fn to_u32(&self) -> u32 {
        self.en as u32
            | ((self.css & 0x7) as u32) << 4
            | ((self.mps & 0xf) as u32) << 7
            | ((self.ams & 0x7) as u32) << 11
            | ((self.shn & 0x3) as u32) << 14
            | ((self.iosqes & 0xf) as u32) << 16
            | ((self.iocqes & 0xf) as u32) << 20
    }
    pub fn from_u32(v: u32) -> Self {
        Self {
            en: v & 1 != 0,
            css: (v >> 4 & 0x7) as u8,
            mps: (v >> 7 & 0xf) as u8,
            ams: (v >> 11 & 0x7) as u8,
            shn: (v >> 14 & 0x3) as u8,
            iosqes: (v >> 16 & 0xf) as u8,
            iocqes: (v >> 20 & 0xf) as u8,
        }
    }
}

/// Controller Status (CSTS, 4 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Csts {
    pub rdy: bool,
    /// Controller fatal status.
    pub cfs: bool,
    /// Shutdown status (2 bits), see [`shutdown`].
    pub shst: u8,
    pub nssro: bool,
    /// Processing paused.
    pub pp: bool,
}

impl Csts {
    pub fn to_u32(&self) -> u32 {
        self.rdy as u32
            | (self.cfs as u32) << 1
            | ((self.shst & 0x3) as u32) << 2
            | (self.nssro as u32) << 4
            | (self.pp as u32) << 5
    }
    pub fn from_u32(v: u32) -> Self {
        Self {
            rdy: v & 1 != 0,
            cfs: v >> 1 & 1 != 0,
            shst: (v >> 2 & 0x3) as u8,
            nssro: v >> 4 & 1 != 0,
            pp: v >> 5 & 1 != 0,
        }
    }
}
