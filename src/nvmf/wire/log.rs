//! Log pages.
//!
//! Log pages: error information, SMART / health, firmware slot, changed namespace list,
//! Asymmetric Namespace Access and the discovery log.

use super::*;

// ---------------------------------------------------------------------------------------
// Log pages
// ---------------------------------------------------------------------------------------

/// An error information log entry (64 bytes).
#[derive(Clone, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct ErrorLogEntry {
    pub error_count: U64,
    pub sqid: U16,
    pub cid: U16,
    /// The status field as in the CQE (phase in bit 0).
    pub status_field: U16,
    pub parameter_error_location: U16,
    pub lba: U64,
    pub nsid: U32,
    pub vs: u8,
    pub trtype: u8,
    pub rsvd30: [u8; 2],
    pub cs: U64,
    pub trtype_specific: U16,
    pub rsvd42: [u8; 22],
}

wire_layout!(ErrorLogEntry = 64);

assert_offsets!(ErrorLogEntry;
    error_count 0, sqid 8, cid 10, status_field 12, parameter_error_location 14, lba 16,
    nsid 24, vs 28, trtype 29, cs 32, trtype_specific 40,
);

/// SMART / health information log page (512 bytes). The counters are 128-bit; data
/// units are thousands of 512-byte units, rounded up.
#[derive(Clone, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct SmartLog {
    pub critical_warning: u8,
    /// Composite temperature in kelvins.
    pub temperature: U16,
    pub avail_spare: u8,
    pub spare_thresh: u8,
    pub percent_used: u8,
    pub endurance_group_critical_warning: u8,
    pub rsvd7: [u8; 25],
    pub data_units_read: U128,
    pub data_units_written: U128,
    pub host_read_commands: U128,
    pub host_write_commands: U128,
    pub controller_busy_time: U128,
    pub power_cycles: U128,
    pub power_on_hours: U128,
    pub unsafe_shutdowns: U128,
    pub media_errors: U128,
    pub num_error_log_entries: U128,
    pub warning_temp_time: U32,
    pub critical_comp_time: U32,
    pub temp_sensor: [U16; 8],
    pub thm_temp1_trans_count: U32,
    pub thm_temp2_trans_count: U32,
    pub thm_temp1_total_time: U32,
    pub thm_temp2_total_time: U32,
    pub rsvd232: [u8; 280],
}

wire_layout!(SmartLog = 512);

assert_offsets!(SmartLog;
    critical_warning 0, temperature 1, avail_spare 3, spare_thresh 4, percent_used 5,
    endurance_group_critical_warning 6, data_units_read 32, data_units_written 48,
    host_read_commands 64, host_write_commands 80, controller_busy_time 96, power_cycles 112,
    power_on_hours 128, unsafe_shutdowns 144, media_errors 160, num_error_log_entries 176,
    warning_temp_time 192, critical_comp_time 196, temp_sensor 200, thm_temp1_trans_count 216,
    thm_temp2_trans_count 220, thm_temp1_total_time 224, thm_temp2_total_time 228,
);

/// Firmware slot information log page (512 bytes): active slot info and 7 revisions.
#[derive(Clone, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct FirmwareSlotLog {
    pub afi: u8,
    pub rsvd1: [u8; 7],
    pub frs: [[u8; 8]; 7],
    pub rsvd64: [u8; 448],
}

wire_layout!(FirmwareSlotLog = 512);

assert_offsets!(FirmwareSlotLog;
    afi 0, frs 8,
);

/// Size of the changed namespace list log page (1024 namespace ids). A list with more than
/// 1024 changes reports 0xFFFFFFFF in the first entry.
pub const CHANGED_NS_LIST_SIZE: usize = 4096;

/// Transport types (discovery log TRTYPE).
pub mod trtype {
    pub const RDMA: u8 = 1;
    pub const FC: u8 = 2;
    pub const TCP: u8 = 3;
    pub const LOOP: u8 = 254;
}

/// Address families (discovery log ADRFAM).
pub mod adrfam {
    pub const IPV4: u8 = 1;
    pub const IPV6: u8 = 2;
    pub const IB: u8 = 3;
    pub const FC: u8 = 4;
    pub const LOOP: u8 = 254;
}

/// Subsystem types (discovery log SUBTYPE).
pub mod subtype {
    pub const DISCOVERY_REFERRAL: u8 = 1;
    pub const NVME: u8 = 2;
    pub const CURRENT_DISCOVERY: u8 = 3;
}

/// Transport requirements (discovery log TREQ): secure channel in bits 1:0.
pub mod treq {
    pub const SECURE_CHANNEL_NOT_SPECIFIED: u8 = 0;
    pub const SECURE_CHANNEL_REQUIRED: u8 = 1;
    pub const SECURE_CHANNEL_NOT_REQUIRED: u8 = 2;
    pub const DISABLE_SQ_FLOW_CONTROL: u8 = 1 << 2;
}

/// Discovery log page header (1024 bytes); the entries follow it.
#[derive(Clone, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct DiscoveryLogHeader {
    pub genctr: U64,
    pub numrec: U64,
    pub recfmt: U16,
    pub rsvd18: [u8; 1006],
}

wire_layout!(DiscoveryLogHeader = 1024);

assert_offsets!(DiscoveryLogHeader;
    genctr 0, numrec 8, recfmt 16,
);

/// A discovery log page entry (1024 bytes). For TCP, `tsas` byte 0 is SECTYPE
/// (0 = none).
#[derive(Clone, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct DiscoveryLogEntry {
    pub trtype: u8,
    pub adrfam: u8,
    pub subtype: u8,
    pub treq: u8,
    pub portid: U16,
    pub cntlid: U16,
    pub asqsz: U16,
    pub eflags: U16,
    pub rsvd12: [u8; 20],
    pub trsvcid: [u8; 32],
    pub rsvd64: [u8; 192],
    pub subnqn: [u8; 256],
    pub traddr: [u8; 256],
    pub tsas: [u8; 256],
}

wire_layout!(DiscoveryLogEntry = 1024);

assert_offsets!(DiscoveryLogEntry;
    trtype 0, adrfam 1, subtype 2, treq 3, portid 4, cntlid 6, asqsz 8, eflags 10, trsvcid 32,
    subnqn 256, traddr 512, tsas 768,
);

/// Size of a discovery log page with `entries` records.
pub const fn discovery_log_size(entries: usize) -> usize {
    DiscoveryLogHeader::SIZE + entries * DiscoveryLogEntry::SIZE
}

/// Encodes a full discovery log page (header + entries) into a new vector; the target
/// then copies the requested (offset, length) window out of it.
pub fn encode_discovery_log(genctr: u64, entries: &[DiscoveryLogEntry]) -> Vec<u8> {
    let mut out = vec![0u8; discovery_log_size(entries.len())];
    let hdr = DiscoveryLogHeader {
        genctr: genctr.into(),
        numrec: (entries.len() as u64).into(),
        recfmt: 0.into(),
        ..Default::default()
    };
    out[..DiscoveryLogHeader::SIZE].copy_from_slice(hdr.as_bytes());
    for (i, e) in entries.iter().enumerate() {
        let start = discovery_log_size(i);
        out[start..start + DiscoveryLogEntry::SIZE].copy_from_slice(e.as_bytes());
    }
    out
}

/// Decodes a discovery log page: the header and as many complete entries as `b` holds
/// (at most `numrec`).
pub fn decode_discovery_log(b: &[u8]) -> Option<(DiscoveryLogHeader, Vec<DiscoveryLogEntry>)> {
    let hdr = DiscoveryLogHeader::decode_slice(b)?;
    let body = &b[DiscoveryLogHeader::SIZE..];
    let entries = body
        .chunks_exact(DiscoveryLogEntry::SIZE)
        .take(usize::try_from(hdr.numrec.get()).unwrap_or(usize::MAX))
        .filter_map(DiscoveryLogEntry::decode_slice)
        .collect();
    Some((hdr, entries))
}

/// Asymmetric Namespace Access log page header (16 bytes); the group descriptors follow.
#[derive(Clone, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct AnaLogHeader {
    pub change_count: U64,
    pub num_descriptors: U16,
    pub rsvd10: [u8; 6],
}

wire_layout!(AnaLogHeader = 16);

assert_offsets!(AnaLogHeader;
    change_count 0, num_descriptors 8,
);

/// One ANA group descriptor (32 bytes), followed by `num_nsids` NSIDs of 4 bytes.
#[derive(Clone, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct AnaGroupDescriptor {
    pub anagrpid: U32,
    pub num_nsids: U32,
    pub change_count: U64,
    /// ANA state in bits 3:0 (see [`ana_state`]).
    pub state: u8,
    pub rsvd17: [u8; 15],
}

wire_layout!(AnaGroupDescriptor = 32);

assert_offsets!(AnaGroupDescriptor;
    anagrpid 0, num_nsids 4, change_count 8, state 16,
);

/// ANA states (the descriptor's state field).
pub mod ana_state {
    pub const OPTIMIZED: u8 = 0x1;
    pub const NON_OPTIMIZED: u8 = 0x2;
    pub const INACCESSIBLE: u8 = 0x3;
    pub const PERSISTENT_LOSS: u8 = 0x4;
    pub const CHANGE: u8 = 0xf;
}

/// A decoded ANA group descriptor with its NSIDs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnaGroup {
    pub anagrpid: u32,
    pub change_count: u64,
    pub state: u8,
    pub nsids: Vec<u32>,
}

/// Encodes an ANA log page: the header and each group with its NSIDs.
pub fn encode_ana_log(change_count: u64, groups: &[AnaGroup]) -> Vec<u8> {
    let len = AnaLogHeader::SIZE
        + groups
            .iter()
            .map(|g| AnaGroupDescriptor::SIZE + 4 * g.nsids.len())
            .sum::<usize>();
    let mut out = Vec::with_capacity(len);
    let hdr = AnaLogHeader {
        change_count: change_count.into(),
        num_descriptors: (groups.len() as u16).into(),
        ..Default::default()
    };
    out.extend_from_slice(hdr.as_bytes());
    for g in groups {
        let d = AnaGroupDescriptor {
            anagrpid: g.anagrpid.into(),
            num_nsids: (g.nsids.len() as u32).into(),
            change_count: g.change_count.into(),
            state: g.state & 0xf,
            ..Default::default()
        };
        out.extend_from_slice(d.as_bytes());
        for n in &g.nsids {
            out.extend_from_slice(&n.to_le_bytes());
        }
    }
    out
}

/// Decodes an ANA log page: the change count and the groups `b` holds completely.
pub fn decode_ana_log(b: &[u8]) -> Option<(u64, Vec<AnaGroup>)> {
    let hdr = AnaLogHeader::decode_slice(b)?;
    let mut rest = &b[AnaLogHeader::SIZE..];
    let mut groups = Vec::new();
    for _ in 0..hdr.num_descriptors.get() {
        let d = AnaGroupDescriptor::decode_slice(rest)?;
        rest = &rest[AnaGroupDescriptor::SIZE..];
        let n = d.num_nsids.get() as usize;
        let ids = rest.get(..n.checked_mul(4)?)?;
        rest = &rest[n * 4..];
        groups.push(AnaGroup {
            anagrpid: d.anagrpid.get(),
            change_count: d.change_count.get(),
            state: d.state & 0xf,
            nsids: ids
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        });
    }
    Some((hdr.change_count.get(), groups))
}

/// Compile-time size checks of the wire layouts (the macro also checks field offsets).
const _: () = {
    assert!(Sqe::SIZE == 64);
    assert!(Cqe::SIZE == 16);
    assert!(SglDescriptor::SIZE == 16);
    assert!(ConnectData::SIZE == 1024);
    assert!(IdentifyController::SIZE == 4096);
    assert!(IdentifyNamespace::SIZE == 4096);
    assert!(core::mem::size_of::<[PowerStateDescriptor; 32]>() == 1024);
    assert!(core::mem::size_of::<[LbaFormat; 64]>() == 256);
    assert!(ErrorLogEntry::SIZE == 64);
    assert!(SmartLog::SIZE == 512);
    assert!(FirmwareSlotLog::SIZE == 512);
    assert!(DiscoveryLogHeader::SIZE == 1024);
    assert!(DiscoveryLogEntry::SIZE == 1024);
    assert!(DsmRange::SIZE == 16);
    assert!(AnaLogHeader::SIZE == 16);
    assert!(AnaGroupDescriptor::SIZE == 32);
};
