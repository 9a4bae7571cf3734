//! NVMe over Fabrics commands and the controller properties.
//!
//! NVMe over Fabrics commands: Connect with its data, Property Get/Set, Disconnect,
//! Authentication Send/Receive, and the controller properties (CAP, VS, CC, CSTS).

use super::*;
use bitfield_struct::bitfield;

// ---------------------------------------------------------------------------------------
// Fabrics commands
// ---------------------------------------------------------------------------------------

/// The first 40 bytes of every fabrics command SQE: opcode 7Fh, the command id, the fabrics
/// command type (in place of the NSID's low byte) and the SGL descriptor.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct FabricsHdr {
    pub opcode: u8,
    /// PSDT and FUSE, as in every SQE.
    pub flags: SqeFlags,
    pub cid: U16,
    pub fctype: u8,
    pub rsvd5: [u8; 19],
    pub sgl: SglDescriptor,
}

/// The Connect command SQE.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct ConnectSqe {
    pub hdr: FabricsHdr,
    pub recfmt: U16,
    pub qid: U16,
    /// 0-based queue size.
    pub sqsize: U16,
    /// Connect attributes (bit 2: disable SQ flow control; bits 1:0 priority).
    pub cattr: u8,
    pub rsvd47: u8,
    /// Keep alive timeout in milliseconds.
    pub kato: U32,
    pub rsvd52: [u8; 12],
}

/// The Property Get and Property Set command SQE (`value` is reserved in Property Get).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct PropertySqe {
    pub hdr: FabricsHdr,
    /// ATTRIB: property size in bits 2:0 (0 = 4 bytes, 1 = 8 bytes).
    pub attrib: u8,
    pub rsvd41: [u8; 3],
    pub ofst: U32,
    pub value: U64,
    pub rsvd56: [u8; 8],
}

/// The Disconnect command SQE.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct DisconnectSqe {
    pub hdr: FabricsHdr,
    pub recfmt: U16,
    pub rsvd42: [u8; 22],
}

/// The Authentication Send / Receive command SQE.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct AuthSqe {
    pub hdr: FabricsHdr,
    pub rsvd40: u8,
    pub spsp0: u8,
    pub spsp1: u8,
    pub secp: u8,
    /// Transfer length (TL for send, AL for receive).
    pub length: U32,
    pub rsvd48: [u8; 16],
}

wire_layout!(
    FabricsHdr = 40,
    ConnectSqe = 64,
    PropertySqe = 64,
    DisconnectSqe = 64,
    AuthSqe = 64,
);

/// Byte offsets of Connect fields, as reported in the Invalid Parameters response (IPO);
/// they come from the layouts of the Connect SQE and data.
pub mod connect_off {
    use super::{ConnectData, ConnectSqe};
    use core::mem::offset_of;

    /// In the Connect SQE.
    pub const RECFMT: u16 = offset_of!(ConnectSqe, recfmt) as u16;
    pub const QID: u16 = offset_of!(ConnectSqe, qid) as u16;
    pub const SQSIZE: u16 = offset_of!(ConnectSqe, sqsize) as u16;
    pub const CATTR: u16 = offset_of!(ConnectSqe, cattr) as u16;
    pub const KATO: u16 = offset_of!(ConnectSqe, kato) as u16;
    /// In the Connect data.
    pub const HOSTID: u16 = offset_of!(ConnectData, hostid) as u16;
    pub const CNTLID: u16 = offset_of!(ConnectData, cntlid) as u16;
    pub const SUBNQN: u16 = offset_of!(ConnectData, subnqn) as u16;
    pub const HOSTNQN: u16 = offset_of!(ConnectData, hostnqn) as u16;
}

/// The specification's offsets (NVMe over Fabrics 1.1, figures 20 and 21).
const _: () = {
    assert!(connect_off::RECFMT == 40 && connect_off::QID == 42 && connect_off::SQSIZE == 44);
    assert!(connect_off::CATTR == 46 && connect_off::KATO == 48);
    assert!(core::mem::offset_of!(PropertySqe, ofst) == 44);
    assert!(core::mem::offset_of!(PropertySqe, value) == 48);
    assert!(core::mem::offset_of!(AuthSqe, length) == 44);
};

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
    /// Interprets a fabrics SQE in place; `None` when the opcode is not `FABRICS`.
    pub fn parse(sqe: &Sqe) -> Option<Self> {
        if !sqe.is_fabrics() {
            return None;
        }
        let cid = sqe.cid.get();
        let auth = || {
            let a: AuthSqe = zerocopy::transmute!(*sqe);
            AuthCmd {
                cid,
                sgl: a.hdr.sgl,
                secp: a.secp,
                spsp0: a.spsp0,
                spsp1: a.spsp1,
                length: a.length.get(),
            }
        };
        let prop = || -> PropertySqe { zerocopy::transmute!(*sqe) };
        Some(match sqe.fctype() {
            fctype::CONNECT => {
                let c: ConnectSqe = zerocopy::transmute!(*sqe);
                Self::Connect(ConnectCmd {
                    cid,
                    sgl: c.hdr.sgl,
                    recfmt: c.recfmt.get(),
                    qid: c.qid.get(),
                    sqsize: c.sqsize.get(),
                    cattr: c.cattr,
                    kato: c.kato.get(),
                })
            }
            fctype::PROPERTY_GET => {
                let p = prop();
                Self::PropertyGet(PropertyGetCmd {
                    cid,
                    size8: p.attrib & 0x7 == 1,
                    offset: p.ofst.get(),
                })
            }
            fctype::PROPERTY_SET => {
                let p = prop();
                Self::PropertySet(PropertySetCmd {
                    cid,
                    size8: p.attrib & 0x7 == 1,
                    offset: p.ofst.get(),
                    value: p.value.get(),
                })
            }
            fctype::DISCONNECT => {
                let d: DisconnectSqe = zerocopy::transmute!(*sqe);
                Self::Disconnect {
                    cid,
                    recfmt: d.recfmt.get(),
                }
            }
            fctype::AUTHENTICATION_SEND => Self::AuthenticationSend(auth()),
            fctype::AUTHENTICATION_RECEIVE => Self::AuthenticationReceive(auth()),
            other => Self::Unknown { cid, fctype: other },
        })
    }

    /// Builds the SQE for this command.
    pub fn to_sqe(&self) -> Sqe {
        let hdr = |cid: u16, fctype: u8, sgl: SglDescriptor| FabricsHdr {
            opcode: admin_opc::FABRICS,
            // Fabrics commands carry no PSDT meaning beyond SGL use; keep the SGL bit.
            flags: SqeFlags::new().with_psdt(psdt::SGL_MPTR_CONTIG),
            cid: cid.into(),
            fctype,
            rsvd5: [0; 19],
            sgl,
        };
        let auth = |a: &AuthCmd, fctype: u8| -> Sqe {
            zerocopy::transmute!(AuthSqe {
                hdr: hdr(a.cid, fctype, a.sgl),
                spsp0: a.spsp0,
                spsp1: a.spsp1,
                secp: a.secp,
                length: a.length.into(),
                ..Default::default()
            })
        };
        let prop = |cid: u16, fctype: u8, size8: bool, offset: u32, value: u64| -> Sqe {
            zerocopy::transmute!(PropertySqe {
                hdr: hdr(cid, fctype, SglDescriptor::default()),
                attrib: size8 as u8,
                ofst: offset.into(),
                value: value.into(),
                ..Default::default()
            })
        };
        match self {
            Self::Connect(c) => zerocopy::transmute!(ConnectSqe {
                hdr: hdr(c.cid, fctype::CONNECT, c.sgl),
                recfmt: c.recfmt.into(),
                qid: c.qid.into(),
                sqsize: c.sqsize.into(),
                cattr: c.cattr,
                kato: c.kato.into(),
                ..Default::default()
            }),
            Self::PropertyGet(p) => prop(p.cid, fctype::PROPERTY_GET, p.size8, p.offset, 0),
            Self::PropertySet(p) => prop(p.cid, fctype::PROPERTY_SET, p.size8, p.offset, p.value),
            Self::Disconnect { cid, recfmt } => zerocopy::transmute!(DisconnectSqe {
                hdr: hdr(*cid, fctype::DISCONNECT, SglDescriptor::default()),
                recfmt: (*recfmt).into(),
                rsvd42: [0; 22],
            }),
            Self::AuthenticationSend(a) => auth(a, fctype::AUTHENTICATION_SEND),
            Self::AuthenticationReceive(a) => auth(a, fctype::AUTHENTICATION_RECEIVE),
            Self::Unknown { cid, fctype } => zerocopy::transmute!(FabricsSqeUnknown {
                hdr: hdr(*cid, *fctype, SglDescriptor::default()),
                rest: [0; 24],
            }),
        }
    }
}

/// A fabrics SQE of a type this codec does not interpret: the common part and zeros.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
struct FabricsSqeUnknown {
    hdr: FabricsHdr,
    rest: [u8; 24],
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

assert_offsets!(ConnectData;
    hostid 0, cntlid 16, subnqn 256, hostnqn 512,
);

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

/// Connect response DW0 AUTHREQ bit ATR: the host must authenticate (DH-HMAC-CHAP) on
/// this queue before any other command but Property Get/Set.
pub const CONNECT_AUTHREQ_ATR: u32 = 1 << 17;

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
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct Cap {
    /// Maximum queue entries supported, 0-based.
    pub mqes: u16,
    /// Contiguous queues required.
    pub cqr: bool,
    /// Arbitration mechanisms supported.
    #[bits(2)]
    pub ams: u8,
    #[bits(5)]
    __: u8,
    /// Timeout in 500 ms units.
    pub to: u8,
    /// Doorbell stride.
    #[bits(4)]
    pub dstrd: u8,
    /// NVM subsystem reset supported.
    pub nssrs: bool,
    /// Command sets supported (bit 0 = NVM command set).
    pub css: u8,
    /// Boot partition support.
    pub bps: bool,
    #[bits(2)]
    __: u8,
    /// Memory page size minimum (2^(12 + n)).
    #[bits(4)]
    pub mpsmin: u8,
    /// Memory page size maximum (2^(12 + n)).
    #[bits(4)]
    pub mpsmax: u8,
    /// Persistent memory region supported.
    pub pmrs: bool,
    /// Controller memory buffer supported.
    pub cmbs: bool,
    #[bits(6)]
    __: u8,
}

impl Cap {
    pub const fn to_u64(&self) -> u64 {
        self.into_bits()
    }
    pub const fn from_u64(v: u64) -> Self {
        Self::from_bits(v)
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
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct Cc {
    pub en: bool,
    #[bits(3)]
    __: u8,
    /// I/O command set selected.
    #[bits(3)]
    pub css: u8,
    /// Memory page size (2^(12 + mps)).
    #[bits(4)]
    pub mps: u8,
    /// Arbitration mechanism selected.
    #[bits(3)]
    pub ams: u8,
    /// Shutdown notification, see [`shutdown`].
    #[bits(2)]
    pub shn: u8,
    /// I/O SQ entry size as a power of two (6 = 64 B).
    #[bits(4)]
    pub iosqes: u8,
    /// I/O CQ entry size as a power of two (4 = 16 B).
    #[bits(4)]
    pub iocqes: u8,
    __: u8,
}

impl Cc {
    pub const fn to_u32(&self) -> u32 {
        self.into_bits()
    }
    pub const fn from_u32(v: u32) -> Self {
        Self::from_bits(v)
    }
}

/// Controller Status (CSTS, 4 bytes).
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct Csts {
    pub rdy: bool,
    /// Controller fatal status.
    pub cfs: bool,
    /// Shutdown status, see [`shutdown`].
    #[bits(2)]
    pub shst: u8,
    pub nssro: bool,
    /// Processing paused.
    pub pp: bool,
    #[bits(26)]
    __: u32,
}

impl Csts {
    pub const fn to_u32(&self) -> u32 {
        self.into_bits()
    }
    pub const fn from_u32(v: u32) -> Self {
        Self::from_bits(v)
    }
}
