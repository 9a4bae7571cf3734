//! Log pages: error information, SMART / health, firmware slot, changed namespace list
//! and the discovery log.

use super::*;

// ---------------------------------------------------------------------------------------
// Log pages
// ---------------------------------------------------------------------------------------

wire_struct! {
    /// An error information log entry (64 bytes).
    pub struct ErrorLogEntry [64] {
        0 => error_count: u64,
        8 => sqid: u16,
        10 => cid: u16,
        /// The status field as in the CQE (phase in bit 0).
        12 => status_field: u16,
        14 => parameter_error_location: u16,
        16 => lba: u64,
        24 => nsid: u32,
        28 => vs: u8,
        29 => trtype: u8,
        32 => cs: u64,
        40 => trtype_specific: u16,
    }
}

wire_struct! {
    /// SMART / health information log page (512 bytes). The counters are 128-bit; data
    /// units are thousands of 512-byte units, rounded up.
    pub struct SmartLog [512] {
        0 => critical_warning: u8,
        /// Composite temperature in kelvins.
        1 => temperature: u16,
        3 => avail_spare: u8,
        4 => spare_thresh: u8,
        5 => percent_used: u8,
        6 => endurance_group_critical_warning: u8,
        32 => data_units_read: u128,
        48 => data_units_written: u128,
        64 => host_read_commands: u128,
        80 => host_write_commands: u128,
        96 => controller_busy_time: u128,
        112 => power_cycles: u128,
        128 => power_on_hours: u128,
        144 => unsafe_shutdowns: u128,
        160 => media_errors: u128,
        176 => num_error_log_entries: u128,
        192 => warning_temp_time: u32,
        196 => critical_comp_time: u32,
        200 => temp_sensor: [u16; 8],
        216 => thm_temp1_trans_count: u32,
        220 => thm_temp2_trans_count: u32,
        224 => thm_temp1_total_time: u32,
        228 => thm_temp2_total_time: u32,
    }
}

wire_struct! {
    /// Firmware slot information log page (512 bytes): active slot info and 7 revisions.
    pub struct FirmwareSlotLog [512] {
        0 => afi: u8,
        8 => frs: [[u8; 8]; 7],
    }
}

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

wire_struct! {
    /// Discovery log page header (1024 bytes); the entries follow it.
    pub struct DiscoveryLogHeader [1024] {
        0 => genctr: u64,
        8 => numrec: u64,
        16 => recfmt: u16,
    }
}

wire_struct! {
    /// A discovery log page entry (1024 bytes). For TCP, `tsas` byte 0 is SECTYPE
    /// (0 = none).
    pub struct DiscoveryLogEntry [1024] {
        0 => trtype: u8,
        1 => adrfam: u8,
        2 => subtype: u8,
        3 => treq: u8,
        4 => portid: u16,
        6 => cntlid: u16,
        8 => asqsz: u16,
        10 => eflags: u16,
        32 => trsvcid: [u8; 32],
        256 => subnqn: [u8; 256],
        512 => traddr: [u8; 256],
        768 => tsas: [u8; 256],
    }
}

/// Size of a discovery log page with `entries` records.
pub const fn discovery_log_size(entries: usize) -> usize {
    DiscoveryLogHeader::SIZE + entries * DiscoveryLogEntry::SIZE
}

/// Encodes a full discovery log page (header + entries) into a new vector; the target
/// then copies the requested (offset, length) window out of it.
pub fn encode_discovery_log(genctr: u64, entries: &[DiscoveryLogEntry]) -> Vec<u8> {
    let mut out = vec![0u8; discovery_log_size(entries.len())];
    let hdr = DiscoveryLogHeader {
        genctr,
        numrec: entries.len() as u64,
        recfmt: 0,
    };
    hdr.put(&mut out[..DiscoveryLogHeader::SIZE]);
    for (i, e) in entries.iter().enumerate() {
        let start = discovery_log_size(i);
        e.put(&mut out[start..start + DiscoveryLogEntry::SIZE]);
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
        .take(usize::try_from(hdr.numrec).unwrap_or(usize::MAX))
        .filter_map(DiscoveryLogEntry::decode_slice)
        .collect();
    Some((hdr, entries))
}

/// Compile-time size checks of the wire layouts (the macro also checks field offsets).
const _: () = {
    assert!(Sqe::SIZE == 64);
    assert!(Cqe::SIZE == 16);
    assert!(SglDescriptor::SIZE == 16);
    assert!(ConnectData::SIZE == 1024);
    assert!(IdentifyController::SIZE == 4096);
    assert!(IdentifyNamespace::SIZE == 4096);
    assert!(<[PowerStateDescriptor; 32] as WireField>::SIZE == 1024);
    assert!(<[LbaFormat; 64] as WireField>::SIZE == 256);
    assert!(ErrorLogEntry::SIZE == 64);
    assert!(SmartLog::SIZE == 512);
    assert!(FirmwareSlotLog::SIZE == 512);
    assert!(DiscoveryLogHeader::SIZE == 1024);
    assert!(DiscoveryLogEntry::SIZE == 1024);
    assert!(DsmRange::SIZE == 16);
};
