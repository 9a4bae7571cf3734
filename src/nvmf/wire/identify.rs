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

const _: () = {
    assert!(core::mem::offset_of!(PowerStateDescriptor, mp) == 0);
    assert!(core::mem::offset_of!(PowerStateDescriptor, flags) == 3);
    assert!(core::mem::offset_of!(PowerStateDescriptor, enlat) == 4);
    assert!(core::mem::offset_of!(PowerStateDescriptor, exlat) == 8);
    assert!(core::mem::offset_of!(PowerStateDescriptor, rrt) == 12);
    assert!(core::mem::offset_of!(PowerStateDescriptor, rrl) == 13);
    assert!(core::mem::offset_of!(PowerStateDescriptor, rwt) == 14);
    assert!(core::mem::offset_of!(PowerStateDescriptor, rwl) == 15);
    assert!(core::mem::offset_of!(PowerStateDescriptor, idlp) == 16);
    assert!(core::mem::offset_of!(PowerStateDescriptor, ips) == 18);
    assert!(core::mem::offset_of!(PowerStateDescriptor, actp) == 20);
    assert!(core::mem::offset_of!(PowerStateDescriptor, apws) == 22);
};

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

const _: () = {
    assert!(core::mem::offset_of!(IdentifyController, vid) == 0);
    assert!(core::mem::offset_of!(IdentifyController, ssvid) == 2);
    assert!(core::mem::offset_of!(IdentifyController, sn) == 4);
    assert!(core::mem::offset_of!(IdentifyController, mn) == 24);
    assert!(core::mem::offset_of!(IdentifyController, fr) == 64);
    assert!(core::mem::offset_of!(IdentifyController, rab) == 72);
    assert!(core::mem::offset_of!(IdentifyController, ieee) == 73);
    assert!(core::mem::offset_of!(IdentifyController, cmic) == 76);
    assert!(core::mem::offset_of!(IdentifyController, mdts) == 77);
    assert!(core::mem::offset_of!(IdentifyController, cntlid) == 78);
    assert!(core::mem::offset_of!(IdentifyController, ver) == 80);
    assert!(core::mem::offset_of!(IdentifyController, rtd3r) == 84);
    assert!(core::mem::offset_of!(IdentifyController, rtd3e) == 88);
    assert!(core::mem::offset_of!(IdentifyController, oaes) == 92);
    assert!(core::mem::offset_of!(IdentifyController, ctratt) == 96);
    assert!(core::mem::offset_of!(IdentifyController, rrls) == 100);
    assert!(core::mem::offset_of!(IdentifyController, cntrltype) == 111);
    assert!(core::mem::offset_of!(IdentifyController, fguid) == 112);
    assert!(core::mem::offset_of!(IdentifyController, crdt1) == 128);
    assert!(core::mem::offset_of!(IdentifyController, crdt2) == 130);
    assert!(core::mem::offset_of!(IdentifyController, crdt3) == 132);
    assert!(core::mem::offset_of!(IdentifyController, nvmsr) == 253);
    assert!(core::mem::offset_of!(IdentifyController, vwci) == 254);
    assert!(core::mem::offset_of!(IdentifyController, mec) == 255);
    assert!(core::mem::offset_of!(IdentifyController, oacs) == 256);
    assert!(core::mem::offset_of!(IdentifyController, acl) == 258);
    assert!(core::mem::offset_of!(IdentifyController, aerl) == 259);
    assert!(core::mem::offset_of!(IdentifyController, frmw) == 260);
    assert!(core::mem::offset_of!(IdentifyController, lpa) == 261);
    assert!(core::mem::offset_of!(IdentifyController, elpe) == 262);
    assert!(core::mem::offset_of!(IdentifyController, npss) == 263);
    assert!(core::mem::offset_of!(IdentifyController, avscc) == 264);
    assert!(core::mem::offset_of!(IdentifyController, apsta) == 265);
    assert!(core::mem::offset_of!(IdentifyController, wctemp) == 266);
    assert!(core::mem::offset_of!(IdentifyController, cctemp) == 268);
    assert!(core::mem::offset_of!(IdentifyController, mtfa) == 270);
    assert!(core::mem::offset_of!(IdentifyController, hmpre) == 272);
    assert!(core::mem::offset_of!(IdentifyController, hmmin) == 276);
    assert!(core::mem::offset_of!(IdentifyController, tnvmcap) == 280);
    assert!(core::mem::offset_of!(IdentifyController, unvmcap) == 296);
    assert!(core::mem::offset_of!(IdentifyController, rpmbs) == 312);
    assert!(core::mem::offset_of!(IdentifyController, edstt) == 316);
    assert!(core::mem::offset_of!(IdentifyController, dsto) == 318);
    assert!(core::mem::offset_of!(IdentifyController, fwug) == 319);
    assert!(core::mem::offset_of!(IdentifyController, kas) == 320);
    assert!(core::mem::offset_of!(IdentifyController, hctma) == 322);
    assert!(core::mem::offset_of!(IdentifyController, mntmt) == 324);
    assert!(core::mem::offset_of!(IdentifyController, mxtmt) == 326);
    assert!(core::mem::offset_of!(IdentifyController, sanicap) == 328);
    assert!(core::mem::offset_of!(IdentifyController, hmminds) == 332);
    assert!(core::mem::offset_of!(IdentifyController, hmmaxd) == 336);
    assert!(core::mem::offset_of!(IdentifyController, nsetidmax) == 338);
    assert!(core::mem::offset_of!(IdentifyController, endgidmax) == 340);
    assert!(core::mem::offset_of!(IdentifyController, anatt) == 342);
    assert!(core::mem::offset_of!(IdentifyController, anacap) == 343);
    assert!(core::mem::offset_of!(IdentifyController, anagrpmax) == 344);
    assert!(core::mem::offset_of!(IdentifyController, nanagrpid) == 348);
    assert!(core::mem::offset_of!(IdentifyController, pels) == 352);
    assert!(core::mem::offset_of!(IdentifyController, sqes) == 512);
    assert!(core::mem::offset_of!(IdentifyController, cqes) == 513);
    assert!(core::mem::offset_of!(IdentifyController, maxcmd) == 514);
    assert!(core::mem::offset_of!(IdentifyController, nn) == 516);
    assert!(core::mem::offset_of!(IdentifyController, oncs) == 520);
    assert!(core::mem::offset_of!(IdentifyController, fuses) == 522);
    assert!(core::mem::offset_of!(IdentifyController, fna) == 524);
    assert!(core::mem::offset_of!(IdentifyController, vwc) == 525);
    assert!(core::mem::offset_of!(IdentifyController, awun) == 526);
    assert!(core::mem::offset_of!(IdentifyController, awupf) == 528);
    assert!(core::mem::offset_of!(IdentifyController, icsvscc) == 530);
    assert!(core::mem::offset_of!(IdentifyController, nwpc) == 531);
    assert!(core::mem::offset_of!(IdentifyController, acwu) == 532);
    assert!(core::mem::offset_of!(IdentifyController, ocfs) == 534);
    assert!(core::mem::offset_of!(IdentifyController, sgls) == 536);
    assert!(core::mem::offset_of!(IdentifyController, mnan) == 540);
    assert!(core::mem::offset_of!(IdentifyController, subnqn) == 768);
    assert!(core::mem::offset_of!(IdentifyController, ioccsz) == 1792);
    assert!(core::mem::offset_of!(IdentifyController, iorcsz) == 1796);
    assert!(core::mem::offset_of!(IdentifyController, icdoff) == 1800);
    assert!(core::mem::offset_of!(IdentifyController, fcatt) == 1802);
    assert!(core::mem::offset_of!(IdentifyController, msdbd) == 1803);
    assert!(core::mem::offset_of!(IdentifyController, ofcs) == 1804);
    assert!(core::mem::offset_of!(IdentifyController, dctype) == 1806);
    assert!(core::mem::offset_of!(IdentifyController, psd) == 2048);
    assert!(core::mem::offset_of!(IdentifyController, vs) == 3072);
};

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

const _: () = {
    assert!(core::mem::offset_of!(LbaFormat, ms) == 0);
    assert!(core::mem::offset_of!(LbaFormat, lbads) == 2);
    assert!(core::mem::offset_of!(LbaFormat, rp) == 3);
};

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

const _: () = {
    assert!(core::mem::offset_of!(IdentifyNamespace, nsze) == 0);
    assert!(core::mem::offset_of!(IdentifyNamespace, ncap) == 8);
    assert!(core::mem::offset_of!(IdentifyNamespace, nuse) == 16);
    assert!(core::mem::offset_of!(IdentifyNamespace, nsfeat) == 24);
    assert!(core::mem::offset_of!(IdentifyNamespace, nlbaf) == 25);
    assert!(core::mem::offset_of!(IdentifyNamespace, flbas) == 26);
    assert!(core::mem::offset_of!(IdentifyNamespace, mc) == 27);
    assert!(core::mem::offset_of!(IdentifyNamespace, dpc) == 28);
    assert!(core::mem::offset_of!(IdentifyNamespace, dps) == 29);
    assert!(core::mem::offset_of!(IdentifyNamespace, nmic) == 30);
    assert!(core::mem::offset_of!(IdentifyNamespace, rescap) == 31);
    assert!(core::mem::offset_of!(IdentifyNamespace, fpi) == 32);
    assert!(core::mem::offset_of!(IdentifyNamespace, dlfeat) == 33);
    assert!(core::mem::offset_of!(IdentifyNamespace, nawun) == 34);
    assert!(core::mem::offset_of!(IdentifyNamespace, nawupf) == 36);
    assert!(core::mem::offset_of!(IdentifyNamespace, nacwu) == 38);
    assert!(core::mem::offset_of!(IdentifyNamespace, nabsn) == 40);
    assert!(core::mem::offset_of!(IdentifyNamespace, nabo) == 42);
    assert!(core::mem::offset_of!(IdentifyNamespace, nabspf) == 44);
    assert!(core::mem::offset_of!(IdentifyNamespace, noiob) == 46);
    assert!(core::mem::offset_of!(IdentifyNamespace, nvmcap) == 48);
    assert!(core::mem::offset_of!(IdentifyNamespace, npwg) == 64);
    assert!(core::mem::offset_of!(IdentifyNamespace, npwa) == 66);
    assert!(core::mem::offset_of!(IdentifyNamespace, npdg) == 68);
    assert!(core::mem::offset_of!(IdentifyNamespace, npda) == 70);
    assert!(core::mem::offset_of!(IdentifyNamespace, nows) == 72);
    assert!(core::mem::offset_of!(IdentifyNamespace, mssrl) == 74);
    assert!(core::mem::offset_of!(IdentifyNamespace, mcl) == 76);
    assert!(core::mem::offset_of!(IdentifyNamespace, msrc) == 80);
    assert!(core::mem::offset_of!(IdentifyNamespace, anagrpid) == 92);
    assert!(core::mem::offset_of!(IdentifyNamespace, nsattr) == 99);
    assert!(core::mem::offset_of!(IdentifyNamespace, nvmsetid) == 100);
    assert!(core::mem::offset_of!(IdentifyNamespace, endgid) == 102);
    assert!(core::mem::offset_of!(IdentifyNamespace, nguid) == 104);
    assert!(core::mem::offset_of!(IdentifyNamespace, eui64) == 120);
    assert!(core::mem::offset_of!(IdentifyNamespace, lbaf) == 128);
    assert!(core::mem::offset_of!(IdentifyNamespace, vs) == 384);
};

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
