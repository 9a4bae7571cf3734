//! Identify data structures.
//!
//! Identify data structures: controller, namespace, active namespace list and namespace
//! identification descriptors.

use super::*;

// ---------------------------------------------------------------------------------------
// Identify
// ---------------------------------------------------------------------------------------

/// Size of every Identify data structure and of the active namespace list.
pub const IDENTIFY_DATA_SIZE: usize = 4096;

/// A power state descriptor (32 bytes) of Identify Controller.
#[derive(Clone, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct PowerStateDescriptor {
    pub mp: U16,
    pub rsvd2: [u8; 1],
    pub flags: u8,
    pub enlat: U32,
    pub exlat: U32,
    pub rrt: u8,
    pub rrl: u8,
    pub rwt: u8,
    pub rwl: u8,
    pub idlp: U16,
    pub ips: u8,
    pub rsvd19: [u8; 1],
    pub actp: U16,
    pub apws: u8,
    pub rsvd23: [u8; 9],
}

wire_layout!(PowerStateDescriptor = 32);

assert_offsets!(PowerStateDescriptor;
    mp 0, flags 3, enlat 4, exlat 8, rrt 12, rrl 13, rwt 14, rwl 15, idlp 16, ips 18, actp 20,
    apws 22,
);

/// Controller types (Identify Controller CNTRLTYPE).
pub mod cntrltype {
    pub const IO: u8 = 1;
    pub const DISCOVERY: u8 = 2;
    pub const ADMIN: u8 = 3;
}

/// ONCS bits (optional NVM commands supported).
pub mod oncs {
    pub const COMPARE: u16 = 1 << 0;
    pub const WRITE_UNCORRECTABLE: u16 = 1 << 1;
    pub const DATASET_MANAGEMENT: u16 = 1 << 2;
    pub const WRITE_ZEROES: u16 = 1 << 3;
    pub const SAVE_SELECT_FEATURES: u16 = 1 << 4;
    pub const RESERVATIONS: u16 = 1 << 5;
    pub const TIMESTAMP: u16 = 1 << 6;
    pub const VERIFY: u16 = 1 << 7;
    pub const COPY: u16 = 1 << 8;
}

/// SGLS bits (SGL support) of Identify Controller.
pub mod sgls {
    /// SGLs supported, no alignment requirement (bits 1:0 = 01b).
    pub const SUPPORTED: u32 = 0x1;
    pub const KEYED_DATA_BLOCK: u32 = 1 << 2;
    pub const BIT_BUCKET: u32 = 1 << 16;
    pub const MPTR_SGL: u32 = 1 << 19;
    pub const OFFSET: u32 = 1 << 20;
    pub const TRANSPORT_DATA_BLOCK: u32 = 1 << 21;
}

/// LPA bits (log page attributes).
pub mod lpa {
    pub const SMART_PER_NAMESPACE: u8 = 1 << 0;
    pub const COMMANDS_EFFECTS: u8 = 1 << 1;
    pub const EXTENDED_DATA: u8 = 1 << 2;
    pub const TELEMETRY: u8 = 1 << 3;
    pub const PERSISTENT_EVENT: u8 = 1 << 4;
}

/// CTRATT bits (controller attributes).
pub mod ctratt {
    pub const HOST_ID_128_BIT: u32 = 1 << 0;
    pub const NON_OPERATIONAL_POWER_STATE: u32 = 1 << 1;
    pub const NVM_SETS: u32 = 1 << 2;
    pub const READ_RECOVERY_LEVELS: u32 = 1 << 3;
    pub const ENDURANCE_GROUPS: u32 = 1 << 4;
    pub const PREDICTABLE_LATENCY: u32 = 1 << 5;
    pub const TBKAS: u32 = 1 << 6;
    pub const NAMESPACE_GRANULARITY: u32 = 1 << 7;
    pub const SQ_ASSOCIATIONS: u32 = 1 << 8;
    pub const UUID_LIST: u32 = 1 << 9;
}

/// Identify Controller data (CNS 01h, 4096 bytes). ASCII fields (`sn`, `mn`, `fr`)
/// are space padded (see [`super::ascii_field`]); `subnqn` is NUL padded.
#[derive(Clone, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct IdentifyController {
    pub vid: U16,
    pub ssvid: U16,
    pub sn: [u8; 20],
    pub mn: [u8; 40],
    pub fr: [u8; 8],
    pub rab: u8,
    pub ieee: [u8; 3],
    pub cmic: u8,
    /// Maximum data transfer size as a power of two in units of CAP.MPSMIN (0 = none).
    pub mdts: u8,
    pub cntlid: U16,
    pub ver: U32,
    pub rtd3r: U32,
    pub rtd3e: U32,
    pub oaes: U32,
    pub ctratt: U32,
    pub rrls: U16,
    pub rsvd102: [u8; 9],
    pub cntrltype: u8,
    pub fguid: [u8; 16],
    pub crdt1: U16,
    pub crdt2: U16,
    pub crdt3: U16,
    pub rsvd134: [u8; 119],
    pub nvmsr: u8,
    pub vwci: u8,
    pub mec: u8,
    pub oacs: U16,
    pub acl: u8,
    pub aerl: u8,
    pub frmw: u8,
    pub lpa: u8,
    pub elpe: u8,
    pub npss: u8,
    pub avscc: u8,
    pub apsta: u8,
    pub wctemp: U16,
    pub cctemp: U16,
    pub mtfa: U16,
    pub hmpre: U32,
    pub hmmin: U32,
    pub tnvmcap: U128,
    pub unvmcap: U128,
    pub rpmbs: U32,
    pub edstt: U16,
    pub dsto: u8,
    pub fwug: u8,
    /// Keep alive granularity in 100 ms units.
    pub kas: U16,
    pub hctma: U16,
    pub mntmt: U16,
    pub mxtmt: U16,
    pub sanicap: U32,
    pub hmminds: U32,
    pub hmmaxd: U16,
    pub nsetidmax: U16,
    pub endgidmax: U16,
    pub anatt: u8,
    pub anacap: u8,
    pub anagrpmax: U32,
    pub nanagrpid: U32,
    pub pels: U32,
    pub rsvd356: [u8; 156],
    /// Required / maximum SQ and CQ entry sizes (bits 3:0 required, 7:4 maximum).
    pub sqes: u8,
    pub cqes: u8,
    pub maxcmd: U16,
    pub nn: U32,
    pub oncs: U16,
    pub fuses: U16,
    pub fna: u8,
    pub vwc: u8,
    pub awun: U16,
    pub awupf: U16,
    pub icsvscc: u8,
    pub nwpc: u8,
    pub acwu: U16,
    pub ocfs: U16,
    pub sgls: U32,
    pub mnan: U32,
    pub rsvd544: [u8; 224],
    pub subnqn: [u8; 256],
    pub rsvd1024: [u8; 768],
    /// I/O queue command capsule supported size in 16-byte units (64 B SQE + in-capsule data).
    pub ioccsz: U32,
    /// I/O queue response capsule supported size in 16-byte units.
    pub iorcsz: U32,
    /// In-capsule data offset in 16-byte units.
    pub icdoff: U16,
    /// Fabrics controller attributes (bit 0: dynamic controller model).
    pub fcatt: u8,
    /// Maximum SGL data block descriptors per command.
    pub msdbd: u8,
    pub ofcs: U16,
    pub dctype: u8,
    pub rsvd1807: [u8; 241],
    pub psd: [PowerStateDescriptor; 32],
    pub vs: [u8; 1024],
}

wire_layout!(IdentifyController = 4096);

assert_offsets!(IdentifyController;
    vid 0, ssvid 2, sn 4, mn 24, fr 64, rab 72, ieee 73, cmic 76, mdts 77, cntlid 78, ver 80,
    rtd3r 84, rtd3e 88, oaes 92, ctratt 96, rrls 100, cntrltype 111, fguid 112, crdt1 128,
    crdt2 130, crdt3 132, nvmsr 253, vwci 254, mec 255, oacs 256, acl 258, aerl 259, frmw 260,
    lpa 261, elpe 262, npss 263, avscc 264, apsta 265, wctemp 266, cctemp 268, mtfa 270,
    hmpre 272, hmmin 276, tnvmcap 280, unvmcap 296, rpmbs 312, edstt 316, dsto 318, fwug 319,
    kas 320, hctma 322, mntmt 324, mxtmt 326, sanicap 328, hmminds 332, hmmaxd 336,
    nsetidmax 338, endgidmax 340, anatt 342, anacap 343, anagrpmax 344, nanagrpid 348, pels 352,
    sqes 512, cqes 513, maxcmd 514, nn 516, oncs 520, fuses 522, fna 524, vwc 525, awun 526,
    awupf 528, icsvscc 530, nwpc 531, acwu 532, ocfs 534, sgls 536, mnan 540, subnqn 768,
    ioccsz 1792, iorcsz 1796, icdoff 1800, fcatt 1802, msdbd 1803, ofcs 1804, dctype 1806,
    psd 2048, vs 3072,
);

/// Namespace features bits (NSFEAT).
pub mod nsfeat {
    pub const THIN_PROVISIONING: u8 = 1 << 0;
    pub const NS_ATOMICS: u8 = 1 << 1;
    pub const DEALLOCATED_ERROR: u8 = 1 << 2;
    pub const UID_REUSE: u8 = 1 << 3;
    pub const OPTIMAL_PERF: u8 = 1 << 4;
}

/// An LBA format descriptor (4 bytes): metadata size, LBA data size as a power of
/// two (9 = 512 B, 12 = 4 KiB), relative performance (bits 1:0).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct LbaFormat {
    pub ms: U16,
    pub lbads: u8,
    pub rp: u8,
}

wire_layout!(LbaFormat = 4);

assert_offsets!(LbaFormat;
    ms 0, lbads 2, rp 3,
);

/// Identify Namespace data (CNS 00h, 4096 bytes). `nlbaf` is 0-based; `flbas` bits 3:0
/// select the format in use.
#[derive(Clone, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct IdentifyNamespace {
    pub nsze: U64,
    pub ncap: U64,
    pub nuse: U64,
    pub nsfeat: u8,
    pub nlbaf: u8,
    pub flbas: u8,
    pub mc: u8,
    pub dpc: u8,
    pub dps: u8,
    pub nmic: u8,
    pub rescap: u8,
    pub fpi: u8,
    /// Deallocate logical block features (bits 2:0 = 001b: deallocated blocks read 0).
    pub dlfeat: u8,
    pub nawun: U16,
    pub nawupf: U16,
    pub nacwu: U16,
    pub nabsn: U16,
    pub nabo: U16,
    pub nabspf: U16,
    pub noiob: U16,
    pub nvmcap: U128,
    pub npwg: U16,
    pub npwa: U16,
    pub npdg: U16,
    pub npda: U16,
    pub nows: U16,
    pub mssrl: U16,
    pub mcl: U32,
    pub msrc: u8,
    pub rsvd81: [u8; 11],
    pub anagrpid: U32,
    pub rsvd96: [u8; 3],
    pub nsattr: u8,
    pub nvmsetid: U16,
    pub endgid: U16,
    pub nguid: [u8; 16],
    pub eui64: [u8; 8],
    pub lbaf: [LbaFormat; 64],
    pub vs: [u8; 3712],
}

wire_layout!(IdentifyNamespace = 4096);

assert_offsets!(IdentifyNamespace;
    nsze 0, ncap 8, nuse 16, nsfeat 24, nlbaf 25, flbas 26, mc 27, dpc 28, dps 29, nmic 30,
    rescap 31, fpi 32, dlfeat 33, nawun 34, nawupf 36, nacwu 38, nabsn 40, nabo 42, nabspf 44,
    noiob 46, nvmcap 48, npwg 64, npwa 66, npdg 68, npda 70, nows 72, mssrl 74, mcl 76, msrc 80,
    anagrpid 92, nsattr 99, nvmsetid 100, endgid 102, nguid 104, eui64 120, lbaf 128, vs 384,
);

impl IdentifyNamespace {
    /// The LBA data size in bytes of the format in use (`None` if FLBAS selects a format
    /// beyond NLBAF or an absurd size).
    pub fn block_size(&self) -> Option<u32> {
        let idx = (self.flbas & 0xf) as usize;
        if idx > self.nlbaf as usize {
            return None;
        }
        let lbads = self.lbaf.get(idx)?.lbads;
        (9..=31).contains(&lbads).then(|| 1u32 << lbads)
    }
}

/// Encodes an active namespace list (CNS 02h): the given ids ascending, at most 1024, rest
/// zero. Ids are emitted in the order given; the caller sorts and filters (> the CDW1 nsid).
pub fn encode_ns_list(nsids: impl IntoIterator<Item = u32>, out: &mut [u8; 4096]) {
    out.fill(0);
    for (i, id) in nsids.into_iter().take(1024).enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&id.to_le_bytes());
    }
}

/// Decodes a namespace list (active list or changed namespace list) up to its first zero.
pub fn decode_ns_list(b: &[u8; 4096]) -> Vec<u32> {
    b.chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .take_while(|&id| id != 0)
        .collect()
}

/// Namespace identifier types (NIDT) of a namespace identification descriptor.
pub mod nidt {
    pub const EUI64: u8 = 1;
    pub const NGUID: u8 = 2;
    pub const UUID: u8 = 3;
    pub const CSI: u8 = 4;
}

/// A namespace identification descriptor (CNS 03h list entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NsIdDescriptor {
    Eui64([u8; 8]),
    Nguid([u8; 16]),
    Uuid([u8; 16]),
    Csi(u8),
}

impl NsIdDescriptor {
    fn nidt(&self) -> u8 {
        match self {
            Self::Eui64(_) => nidt::EUI64,
            Self::Nguid(_) => nidt::NGUID,
            Self::Uuid(_) => nidt::UUID,
            Self::Csi(_) => nidt::CSI,
        }
    }
    fn value(&self) -> &[u8] {
        match self {
            Self::Eui64(v) => v,
            Self::Nguid(v) | Self::Uuid(v) => v,
            Self::Csi(v) => std::slice::from_ref(v),
        }
    }
}

/// Encodes a namespace identification descriptor list into a 4096-byte buffer (rest zero,
/// which terminates the list).
pub fn encode_ns_id_descriptors(descs: &[NsIdDescriptor], out: &mut [u8; 4096]) {
    out.fill(0);
    let mut off = 0;
    for d in descs {
        let v = d.value();
        if off + 4 + v.len() > out.len() {
            break;
        }
        out[off] = d.nidt();
        out[off + 1] = v.len() as u8;
        out[off + 4..off + 4 + v.len()].copy_from_slice(v);
        off += 4 + v.len();
    }
}

/// Decodes a namespace identification descriptor list. Stops at a zero NIDT; an entry with
/// a length that does not match its type, or that runs past the buffer, is an error.
pub fn decode_ns_id_descriptors(b: &[u8]) -> Result<Vec<NsIdDescriptor>, &'static str> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 4 <= b.len() {
        let (t, len) = (b[off], b[off + 1] as usize);
        if t == 0 {
            break;
        }
        let v = b
            .get(off + 4..off + 4 + len)
            .ok_or("descriptor runs past the buffer")?;
        let d = match (t, len) {
            (nidt::EUI64, 8) => NsIdDescriptor::Eui64(v.try_into().map_err(|_| "eui64")?),
            (nidt::NGUID, 16) => NsIdDescriptor::Nguid(v.try_into().map_err(|_| "nguid")?),
            (nidt::UUID, 16) => NsIdDescriptor::Uuid(v.try_into().map_err(|_| "uuid")?),
            (nidt::CSI, 1) => NsIdDescriptor::Csi(v[0]),
            _ => return Err("unknown descriptor type or bad length"),
        };
        out.push(d);
        off += 4 + len;
    }
    Ok(out)
}
