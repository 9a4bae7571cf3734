//! Identify data structures: controller, namespace, active namespace list and namespace
//! identification descriptors.

use super::*;

// ---------------------------------------------------------------------------------------
// Identify
// ---------------------------------------------------------------------------------------

/// Size of every Identify data structure and of the active namespace list.
pub const IDENTIFY_DATA_SIZE: usize = 4096;

wire_struct! {
    /// A power state descriptor (32 bytes) of Identify Controller.
    pub struct PowerStateDescriptor [32] {
        0 => mp: u16,
        3 => flags: u8,
        4 => enlat: u32,
        8 => exlat: u32,
        12 => rrt: u8,
        13 => rrl: u8,
        14 => rwt: u8,
        15 => rwl: u8,
        16 => idlp: u16,
        18 => ips: u8,
        20 => actp: u16,
        22 => apws: u8,
    }
}

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

wire_struct! {
    /// Identify Controller data (CNS 01h, 4096 bytes). ASCII fields (`sn`, `mn`, `fr`)
    /// are space padded (see [`super::ascii_field`]); `subnqn` is NUL padded.
    pub struct IdentifyController [4096] {
        0 => vid: u16,
        2 => ssvid: u16,
        4 => sn: [u8; 20],
        24 => mn: [u8; 40],
        64 => fr: [u8; 8],
        72 => rab: u8,
        73 => ieee: [u8; 3],
        76 => cmic: u8,
        /// Maximum data transfer size as a power of two in units of CAP.MPSMIN (0 = none).
        77 => mdts: u8,
        78 => cntlid: u16,
        80 => ver: u32,
        84 => rtd3r: u32,
        88 => rtd3e: u32,
        92 => oaes: u32,
        96 => ctratt: u32,
        100 => rrls: u16,
        111 => cntrltype: u8,
        112 => fguid: [u8; 16],
        128 => crdt1: u16,
        130 => crdt2: u16,
        132 => crdt3: u16,
        253 => nvmsr: u8,
        254 => vwci: u8,
        255 => mec: u8,
        256 => oacs: u16,
        258 => acl: u8,
        259 => aerl: u8,
        260 => frmw: u8,
        261 => lpa: u8,
        262 => elpe: u8,
        263 => npss: u8,
        264 => avscc: u8,
        265 => apsta: u8,
        266 => wctemp: u16,
        268 => cctemp: u16,
        270 => mtfa: u16,
        272 => hmpre: u32,
        276 => hmmin: u32,
        280 => tnvmcap: u128,
        296 => unvmcap: u128,
        312 => rpmbs: u32,
        316 => edstt: u16,
        318 => dsto: u8,
        319 => fwug: u8,
        /// Keep alive granularity in 100 ms units.
        320 => kas: u16,
        322 => hctma: u16,
        324 => mntmt: u16,
        326 => mxtmt: u16,
        328 => sanicap: u32,
        332 => hmminds: u32,
        336 => hmmaxd: u16,
        338 => nsetidmax: u16,
        340 => endgidmax: u16,
        342 => anatt: u8,
        343 => anacap: u8,
        344 => anagrpmax: u32,
        348 => nanagrpid: u32,
        352 => pels: u32,
        /// Required / maximum SQ and CQ entry sizes (bits 3:0 required, 7:4 maximum).
        512 => sqes: u8,
        513 => cqes: u8,
        514 => maxcmd: u16,
        516 => nn: u32,
        520 => oncs: u16,
        522 => fuses: u16,
        524 => fna: u8,
        525 => vwc: u8,
        526 => awun: u16,
        528 => awupf: u16,
        530 => icsvscc: u8,
        531 => nwpc: u8,
        532 => acwu: u16,
        534 => ocfs: u16,
        536 => sgls: u32,
        540 => mnan: u32,
        768 => subnqn: [u8; 256],
        /// I/O queue command capsule supported size in 16-byte units (64 B SQE + in-capsule data).
        1792 => ioccsz: u32,
        /// I/O queue response capsule supported size in 16-byte units.
        1796 => iorcsz: u32,
        /// In-capsule data offset in 16-byte units.
        1800 => icdoff: u16,
        /// Fabrics controller attributes (bit 0: dynamic controller model).
        1802 => fcatt: u8,
        /// Maximum SGL data block descriptors per command.
        1803 => msdbd: u8,
        1804 => ofcs: u16,
        1806 => dctype: u8,
        2048 => psd: [PowerStateDescriptor; 32],
        3072 => vs: [u8; 1024],
    }
}

/// Namespace features bits (NSFEAT).
pub mod nsfeat {
    pub const THIN_PROVISIONING: u8 = 1 << 0;
    pub const NS_ATOMICS: u8 = 1 << 1;
    pub const DEALLOCATED_ERROR: u8 = 1 << 2;
    pub const UID_REUSE: u8 = 1 << 3;
    pub const OPTIMAL_PERF: u8 = 1 << 4;
}

wire_struct! {
    /// An LBA format descriptor (4 bytes): metadata size, LBA data size as a power of
    /// two (9 = 512 B, 12 = 4 KiB), relative performance (bits 1:0).
    #[derive(Copy)]
    pub struct LbaFormat [4] {
        0 => ms: u16,
        2 => lbads: u8,
        3 => rp: u8,
    }
}

wire_struct! {
    /// Identify Namespace data (CNS 00h, 4096 bytes). `nlbaf` is 0-based; `flbas` bits 3:0
    /// select the format in use.
    pub struct IdentifyNamespace [4096] {
        0 => nsze: u64,
        8 => ncap: u64,
        16 => nuse: u64,
        24 => nsfeat: u8,
        25 => nlbaf: u8,
        26 => flbas: u8,
        27 => mc: u8,
        28 => dpc: u8,
        29 => dps: u8,
        30 => nmic: u8,
        31 => rescap: u8,
        32 => fpi: u8,
        /// Deallocate logical block features (bits 2:0 = 001b: deallocated blocks read 0).
        33 => dlfeat: u8,
        34 => nawun: u16,
        36 => nawupf: u16,
        38 => nacwu: u16,
        40 => nabsn: u16,
        42 => nabo: u16,
        44 => nabspf: u16,
        46 => noiob: u16,
        48 => nvmcap: u128,
        64 => npwg: u16,
        66 => npwa: u16,
        68 => npdg: u16,
        70 => npda: u16,
        72 => nows: u16,
        74 => mssrl: u16,
        76 => mcl: u32,
        80 => msrc: u8,
        92 => anagrpid: u32,
        99 => nsattr: u8,
        100 => nvmsetid: u16,
        102 => endgid: u16,
        104 => nguid: [u8; 16],
        120 => eui64: [u8; 8],
        128 => lbaf: [LbaFormat; 64],
        384 => vs: [u8; 3712],
    }
}

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
        put32(out, i * 4, id);
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
