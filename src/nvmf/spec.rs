//! NVMe and NVMe over Fabrics structures and constants used by the target and the host:
//! the 64-byte submission queue entry with its SGL descriptor, the 16-byte completion queue
//! entry and the status codes, admin / I/O / fabrics opcodes, the fabrics commands (Connect
//! with its 1024-byte data, Property Get/Set, Disconnect, Authentication Send/Receive),
//! controller properties (CAP, VS, CC, CSTS), Identify data (controller, namespace, active
//! namespace list, namespace identification descriptors), log pages (error information,
//! SMART / health, firmware slot, changed namespace list, discovery log) and feature ids.
//! Every structure is declared with its specification byte offsets and a compile-time size
//! check, and converts to and from little-endian bytes with safe code only. Field names
//! follow the specification's abbreviations so they can be looked up there.

use super::wire::{le16, le32, put16, put32, wire_struct, WireField};

// ---------------------------------------------------------------------------------------
// Opcodes
// ---------------------------------------------------------------------------------------

/// Admin command opcodes.
pub mod admin_opc {
    pub const DELETE_IO_SQ: u8 = 0x00;
    pub const CREATE_IO_SQ: u8 = 0x01;
    pub const GET_LOG_PAGE: u8 = 0x02;
    pub const DELETE_IO_CQ: u8 = 0x04;
    pub const CREATE_IO_CQ: u8 = 0x05;
    pub const IDENTIFY: u8 = 0x06;
    pub const ABORT: u8 = 0x08;
    pub const SET_FEATURES: u8 = 0x09;
    pub const GET_FEATURES: u8 = 0x0a;
    pub const ASYNC_EVENT_REQUEST: u8 = 0x0c;
    pub const NS_MANAGEMENT: u8 = 0x0d;
    pub const FIRMWARE_COMMIT: u8 = 0x10;
    pub const FIRMWARE_IMAGE_DOWNLOAD: u8 = 0x11;
    pub const DEVICE_SELF_TEST: u8 = 0x14;
    pub const NS_ATTACHMENT: u8 = 0x15;
    pub const KEEP_ALIVE: u8 = 0x18;
    pub const DIRECTIVE_SEND: u8 = 0x19;
    pub const DIRECTIVE_RECEIVE: u8 = 0x1a;
    pub const VIRTUALIZATION_MANAGEMENT: u8 = 0x1c;
    pub const NVME_MI_SEND: u8 = 0x1d;
    pub const NVME_MI_RECEIVE: u8 = 0x1e;
    pub const DOORBELL_BUFFER_CONFIG: u8 = 0x7c;
    /// Fabrics commands share this opcode on every queue; the type is in `fctype`.
    pub const FABRICS: u8 = 0x7f;
    pub const FORMAT_NVM: u8 = 0x80;
    pub const SECURITY_SEND: u8 = 0x81;
    pub const SECURITY_RECEIVE: u8 = 0x82;
    pub const SANITIZE: u8 = 0x84;
    pub const GET_LBA_STATUS: u8 = 0x86;
}

/// NVM command set (I/O queue) opcodes.
pub mod io_opc {
    pub const FLUSH: u8 = 0x00;
    pub const WRITE: u8 = 0x01;
    pub const READ: u8 = 0x02;
    pub const WRITE_UNCORRECTABLE: u8 = 0x04;
    pub const COMPARE: u8 = 0x05;
    pub const WRITE_ZEROES: u8 = 0x08;
    pub const DATASET_MANAGEMENT: u8 = 0x09;
    pub const VERIFY: u8 = 0x0c;
    pub const RESERVATION_REGISTER: u8 = 0x0d;
    pub const RESERVATION_REPORT: u8 = 0x0e;
    pub const RESERVATION_ACQUIRE: u8 = 0x11;
    pub const RESERVATION_RELEASE: u8 = 0x15;
    pub const COPY: u8 = 0x19;
    /// Fabrics commands (same value as the admin one).
    pub const FABRICS: u8 = 0x7f;
}

/// Fabrics command types (SQE byte 4 when the opcode is `FABRICS`).
pub mod fctype {
    pub const PROPERTY_SET: u8 = 0x00;
    pub const CONNECT: u8 = 0x01;
    pub const PROPERTY_GET: u8 = 0x04;
    pub const AUTHENTICATION_SEND: u8 = 0x05;
    pub const AUTHENTICATION_RECEIVE: u8 = 0x06;
    pub const DISCONNECT: u8 = 0x08;
}

/// Identify CNS values (CDW10 bits 7:0).
pub mod cns {
    pub const NAMESPACE: u8 = 0x00;
    pub const CONTROLLER: u8 = 0x01;
    pub const ACTIVE_NS_LIST: u8 = 0x02;
    pub const NS_ID_DESCRIPTOR_LIST: u8 = 0x03;
    pub const NVM_SET_LIST: u8 = 0x04;
    pub const CSI_NAMESPACE: u8 = 0x05;
    pub const CSI_CONTROLLER: u8 = 0x06;
    pub const CSI_ACTIVE_NS_LIST: u8 = 0x07;
    pub const ALLOCATED_NS_LIST: u8 = 0x10;
    pub const ALLOCATED_NAMESPACE: u8 = 0x11;
}

/// Log page identifiers (Get Log Page CDW10 bits 7:0).
pub mod log_id {
    pub const ERROR_INFORMATION: u8 = 0x01;
    pub const SMART_HEALTH: u8 = 0x02;
    pub const FIRMWARE_SLOT: u8 = 0x03;
    pub const CHANGED_NS_LIST: u8 = 0x04;
    pub const COMMANDS_SUPPORTED_EFFECTS: u8 = 0x05;
    pub const DEVICE_SELF_TEST: u8 = 0x06;
    pub const TELEMETRY_HOST: u8 = 0x07;
    pub const TELEMETRY_CONTROLLER: u8 = 0x08;
    pub const ANA: u8 = 0x0c;
    pub const DISCOVERY: u8 = 0x70;
    pub const RESERVATION_NOTIFICATION: u8 = 0x80;
    pub const SANITIZE_STATUS: u8 = 0x81;
}

/// Feature identifiers (Get/Set Features CDW10 bits 7:0).
pub mod feat {
    pub const ARBITRATION: u8 = 0x01;
    pub const POWER_MANAGEMENT: u8 = 0x02;
    pub const LBA_RANGE_TYPE: u8 = 0x03;
    pub const TEMPERATURE_THRESHOLD: u8 = 0x04;
    pub const ERROR_RECOVERY: u8 = 0x05;
    pub const VOLATILE_WRITE_CACHE: u8 = 0x06;
    pub const NUMBER_OF_QUEUES: u8 = 0x07;
    pub const INTERRUPT_COALESCING: u8 = 0x08;
    pub const INTERRUPT_VECTOR_CONFIG: u8 = 0x09;
    pub const WRITE_ATOMICITY: u8 = 0x0a;
    pub const ASYNC_EVENT_CONFIG: u8 = 0x0b;
    pub const AUTONOMOUS_POWER_STATE_TRANSITION: u8 = 0x0c;
    pub const HOST_MEMORY_BUFFER: u8 = 0x0d;
    pub const TIMESTAMP: u8 = 0x0e;
    pub const KEEP_ALIVE_TIMER: u8 = 0x0f;
    pub const HOST_CONTROLLED_THERMAL_MGMT: u8 = 0x10;
    pub const NON_OPERATIONAL_POWER_STATE: u8 = 0x11;
    pub const HOST_BEHAVIOR_SUPPORT: u8 = 0x16;
    pub const SOFTWARE_PROGRESS_MARKER: u8 = 0x80;
    pub const HOST_IDENTIFIER: u8 = 0x81;
    pub const RESERVATION_NOTIFICATION_MASK: u8 = 0x82;
    pub const RESERVATION_PERSISTENCE: u8 = 0x83;
    pub const NS_WRITE_PROTECTION: u8 = 0x84;
}

/// Asynchronous event information used by the target's AER completions (CQE DW0:
/// type in bits 2:0, info in 15:8, log page id in 23:16).
pub mod aen {
    pub const TYPE_ERROR: u8 = 0x0;
    pub const TYPE_SMART: u8 = 0x1;
    pub const TYPE_NOTICE: u8 = 0x2;
    pub const TYPE_IO_CMD_SET: u8 = 0x6;
    pub const NOTICE_NS_ATTRIBUTE_CHANGED: u8 = 0x00;
    pub const NOTICE_FIRMWARE_ACTIVATION: u8 = 0x01;
    pub const NOTICE_ANA_CHANGE: u8 = 0x03;
    pub const NOTICE_DISCOVERY_LOG_CHANGE: u8 = 0xf0;
    /// Async Event Configuration bit enabling the namespace attribute notice.
    pub const CONFIG_NS_ATTRIBUTE: u32 = 1 << 8;
    /// Async Event Configuration bit enabling the discovery log change notice.
    pub const CONFIG_DISCOVERY_LOG_CHANGE: u32 = 1 << 31;

    /// CQE DW0 of an asynchronous event completion.
    pub const fn dw0(event_type: u8, info: u8, log_page: u8) -> u32 {
        (event_type as u32 & 0x7) | (info as u32) << 8 | (log_page as u32) << 16
    }
}

// ---------------------------------------------------------------------------------------
// Status
// ---------------------------------------------------------------------------------------

/// Status code types.
pub mod sct {
    pub const GENERIC: u8 = 0x0;
    pub const COMMAND_SPECIFIC: u8 = 0x1;
    pub const MEDIA_DATA_INTEGRITY: u8 = 0x2;
    pub const PATH: u8 = 0x3;
    pub const VENDOR_SPECIFIC: u8 = 0x7;
}

/// A completion status without the phase tag: SC (bits 7:0), SCT (10:8), CRD (12:11),
/// More (13), DNR (14) — i.e. the CQE status field shifted right by one.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Status(pub u16);

impl Status {
    pub const fn new(sct: u8, sc: u8) -> Self {
        Self(sc as u16 | ((sct as u16 & 0x7) << 8))
    }
    pub const fn sc(self) -> u8 {
        self.0 as u8
    }
    pub const fn sct(self) -> u8 {
        ((self.0 >> 8) & 0x7) as u8
    }
    pub const fn crd(self) -> u8 {
        ((self.0 >> 11) & 0x3) as u8
    }
    pub const fn more(self) -> bool {
        self.0 & (1 << 13) != 0
    }
    pub const fn dnr(self) -> bool {
        self.0 & (1 << 14) != 0
    }
    pub const fn with_dnr(self) -> Self {
        Self(self.0 | 1 << 14)
    }
    pub const fn with_more(self) -> Self {
        Self(self.0 | 1 << 13)
    }
    pub const fn with_crd(self, crd: u8) -> Self {
        Self((self.0 & !(0x3 << 11)) | ((crd as u16 & 0x3) << 11))
    }
    pub const fn is_success(self) -> bool {
        self.sc() == 0 && self.sct() == 0
    }
    /// Same status code and type, ignoring CRD/More/DNR.
    pub const fn same_code(self, other: Status) -> bool {
        (self.0 & 0x7ff) == (other.0 & 0x7ff)
    }

    // Generic command status (SCT 0).
    pub const SUCCESS: Status = Status::new(sct::GENERIC, 0x00);
    pub const INVALID_OPCODE: Status = Status::new(sct::GENERIC, 0x01);
    pub const INVALID_FIELD: Status = Status::new(sct::GENERIC, 0x02);
    pub const COMMAND_ID_CONFLICT: Status = Status::new(sct::GENERIC, 0x03);
    pub const DATA_TRANSFER_ERROR: Status = Status::new(sct::GENERIC, 0x04);
    pub const ABORTED_POWER_LOSS: Status = Status::new(sct::GENERIC, 0x05);
    pub const INTERNAL_ERROR: Status = Status::new(sct::GENERIC, 0x06);
    pub const ABORTED_BY_REQUEST: Status = Status::new(sct::GENERIC, 0x07);
    pub const ABORTED_SQ_DELETION: Status = Status::new(sct::GENERIC, 0x08);
    pub const ABORTED_FAILED_FUSED: Status = Status::new(sct::GENERIC, 0x09);
    pub const ABORTED_MISSING_FUSED: Status = Status::new(sct::GENERIC, 0x0a);
    pub const INVALID_NAMESPACE_OR_FORMAT: Status = Status::new(sct::GENERIC, 0x0b);
    pub const COMMAND_SEQUENCE_ERROR: Status = Status::new(sct::GENERIC, 0x0c);
    pub const INVALID_SGL_SEGMENT_DESCRIPTOR: Status = Status::new(sct::GENERIC, 0x0d);
    pub const INVALID_NUMBER_OF_SGL_DESCRIPTORS: Status = Status::new(sct::GENERIC, 0x0e);
    pub const DATA_SGL_LENGTH_INVALID: Status = Status::new(sct::GENERIC, 0x0f);
    pub const METADATA_SGL_LENGTH_INVALID: Status = Status::new(sct::GENERIC, 0x10);
    pub const SGL_DESCRIPTOR_TYPE_INVALID: Status = Status::new(sct::GENERIC, 0x11);
    pub const INVALID_USE_OF_CMB: Status = Status::new(sct::GENERIC, 0x12);
    pub const PRP_OFFSET_INVALID: Status = Status::new(sct::GENERIC, 0x13);
    pub const ATOMIC_WRITE_UNIT_EXCEEDED: Status = Status::new(sct::GENERIC, 0x14);
    pub const OPERATION_DENIED: Status = Status::new(sct::GENERIC, 0x15);
    pub const SGL_OFFSET_INVALID: Status = Status::new(sct::GENERIC, 0x16);
    pub const HOST_ID_INCONSISTENT_FORMAT: Status = Status::new(sct::GENERIC, 0x18);
    pub const KEEP_ALIVE_TIMER_EXPIRED: Status = Status::new(sct::GENERIC, 0x19);
    pub const KEEP_ALIVE_TIMEOUT_INVALID: Status = Status::new(sct::GENERIC, 0x1a);
    pub const ABORTED_PREEMPT_ABORT: Status = Status::new(sct::GENERIC, 0x1b);
    pub const SANITIZE_FAILED: Status = Status::new(sct::GENERIC, 0x1c);
    pub const SANITIZE_IN_PROGRESS: Status = Status::new(sct::GENERIC, 0x1d);
    pub const SGL_DATA_BLOCK_GRANULARITY_INVALID: Status = Status::new(sct::GENERIC, 0x1e);
    pub const NS_WRITE_PROTECTED: Status = Status::new(sct::GENERIC, 0x20);
    pub const COMMAND_INTERRUPTED: Status = Status::new(sct::GENERIC, 0x21);
    pub const TRANSIENT_TRANSPORT_ERROR: Status = Status::new(sct::GENERIC, 0x22);
    // Generic status, NVM command set (SCT 0, 80h..).
    pub const LBA_OUT_OF_RANGE: Status = Status::new(sct::GENERIC, 0x80);
    pub const CAPACITY_EXCEEDED: Status = Status::new(sct::GENERIC, 0x81);
    pub const NAMESPACE_NOT_READY: Status = Status::new(sct::GENERIC, 0x82);
    pub const RESERVATION_CONFLICT: Status = Status::new(sct::GENERIC, 0x83);
    pub const FORMAT_IN_PROGRESS: Status = Status::new(sct::GENERIC, 0x84);

    // Command specific status (SCT 1).
    pub const COMPLETION_QUEUE_INVALID: Status = Status::new(sct::COMMAND_SPECIFIC, 0x00);
    pub const INVALID_QUEUE_IDENTIFIER: Status = Status::new(sct::COMMAND_SPECIFIC, 0x01);
    pub const INVALID_QUEUE_SIZE: Status = Status::new(sct::COMMAND_SPECIFIC, 0x02);
    pub const ABORT_COMMAND_LIMIT_EXCEEDED: Status = Status::new(sct::COMMAND_SPECIFIC, 0x03);
    pub const ASYNC_EVENT_REQUEST_LIMIT_EXCEEDED: Status = Status::new(sct::COMMAND_SPECIFIC, 0x05);
    pub const INVALID_FIRMWARE_SLOT: Status = Status::new(sct::COMMAND_SPECIFIC, 0x06);
    pub const INVALID_FIRMWARE_IMAGE: Status = Status::new(sct::COMMAND_SPECIFIC, 0x07);
    pub const INVALID_INTERRUPT_VECTOR: Status = Status::new(sct::COMMAND_SPECIFIC, 0x08);
    pub const INVALID_LOG_PAGE: Status = Status::new(sct::COMMAND_SPECIFIC, 0x09);
    pub const INVALID_FORMAT: Status = Status::new(sct::COMMAND_SPECIFIC, 0x0a);
    pub const FEATURE_ID_NOT_SAVEABLE: Status = Status::new(sct::COMMAND_SPECIFIC, 0x0d);
    pub const FEATURE_NOT_CHANGEABLE: Status = Status::new(sct::COMMAND_SPECIFIC, 0x0e);
    pub const FEATURE_NOT_NAMESPACE_SPECIFIC: Status = Status::new(sct::COMMAND_SPECIFIC, 0x0f);
    pub const NS_INSUFFICIENT_CAPACITY: Status = Status::new(sct::COMMAND_SPECIFIC, 0x15);
    pub const NS_ID_UNAVAILABLE: Status = Status::new(sct::COMMAND_SPECIFIC, 0x16);
    pub const NS_ALREADY_ATTACHED: Status = Status::new(sct::COMMAND_SPECIFIC, 0x18);
    pub const NS_IS_PRIVATE: Status = Status::new(sct::COMMAND_SPECIFIC, 0x19);
    pub const NS_NOT_ATTACHED: Status = Status::new(sct::COMMAND_SPECIFIC, 0x1a);
    pub const CONTROLLER_LIST_INVALID: Status = Status::new(sct::COMMAND_SPECIFIC, 0x1c);
    // Command specific, NVM command set.
    pub const CONFLICTING_ATTRIBUTES: Status = Status::new(sct::COMMAND_SPECIFIC, 0x80);
    pub const INVALID_PROTECTION_INFORMATION: Status = Status::new(sct::COMMAND_SPECIFIC, 0x81);
    pub const WRITE_TO_READ_ONLY_RANGE: Status = Status::new(sct::COMMAND_SPECIFIC, 0x82);
    // Command specific, fabrics commands.
    pub const CONNECT_INCOMPATIBLE_FORMAT: Status = Status::new(sct::COMMAND_SPECIFIC, 0x80);
    pub const CONNECT_CONTROLLER_BUSY: Status = Status::new(sct::COMMAND_SPECIFIC, 0x81);
    pub const CONNECT_INVALID_PARAMETERS: Status = Status::new(sct::COMMAND_SPECIFIC, 0x82);
    pub const CONNECT_RESTART_DISCOVERY: Status = Status::new(sct::COMMAND_SPECIFIC, 0x83);
    pub const CONNECT_INVALID_HOST: Status = Status::new(sct::COMMAND_SPECIFIC, 0x84);
    pub const DISCOVERY_RESTART: Status = Status::new(sct::COMMAND_SPECIFIC, 0x90);
    pub const AUTHENTICATION_REQUIRED: Status = Status::new(sct::COMMAND_SPECIFIC, 0x91);

    // Media and data integrity errors (SCT 2).
    pub const WRITE_FAULT: Status = Status::new(sct::MEDIA_DATA_INTEGRITY, 0x80);
    pub const UNRECOVERED_READ_ERROR: Status = Status::new(sct::MEDIA_DATA_INTEGRITY, 0x81);
    pub const GUARD_CHECK_ERROR: Status = Status::new(sct::MEDIA_DATA_INTEGRITY, 0x82);
    pub const APPLICATION_TAG_CHECK_ERROR: Status = Status::new(sct::MEDIA_DATA_INTEGRITY, 0x83);
    pub const REFERENCE_TAG_CHECK_ERROR: Status = Status::new(sct::MEDIA_DATA_INTEGRITY, 0x84);
    pub const COMPARE_FAILURE: Status = Status::new(sct::MEDIA_DATA_INTEGRITY, 0x85);
    pub const ACCESS_DENIED: Status = Status::new(sct::MEDIA_DATA_INTEGRITY, 0x86);
    pub const DEALLOCATED_OR_UNWRITTEN_BLOCK: Status = Status::new(sct::MEDIA_DATA_INTEGRITY, 0x87);

    // Path related status (SCT 3).
    pub const INTERNAL_PATH_ERROR: Status = Status::new(sct::PATH, 0x00);
    pub const ANA_PERSISTENT_LOSS: Status = Status::new(sct::PATH, 0x01);
    pub const ANA_INACCESSIBLE: Status = Status::new(sct::PATH, 0x02);
    pub const ANA_TRANSITION: Status = Status::new(sct::PATH, 0x03);
    pub const CONTROLLER_PATHING_ERROR: Status = Status::new(sct::PATH, 0x60);
    pub const HOST_PATHING_ERROR: Status = Status::new(sct::PATH, 0x70);
    pub const ABORTED_BY_HOST: Status = Status::new(sct::PATH, 0x71);
}

impl std::fmt::Debug for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Status(sct={:#x} sc={:#04x}", self.sct(), self.sc())?;
        if self.crd() != 0 {
            write!(f, " crd={}", self.crd())?;
        }
        if self.more() {
            f.write_str(" more")?;
        }
        if self.dnr() {
            f.write_str(" dnr")?;
        }
        f.write_str(")")
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NVMe status sct {:#x} sc {:#04x}", self.sct(), self.sc())?;
        if self.dnr() {
            f.write_str(" (do not retry)")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// SGL descriptor, SQE, CQE
// ---------------------------------------------------------------------------------------

/// SGL descriptor types (descriptor byte 15 bits 7:4).
pub mod sgl_type {
    pub const DATA_BLOCK: u8 = 0x0;
    pub const BIT_BUCKET: u8 = 0x1;
    pub const SEGMENT: u8 = 0x2;
    pub const LAST_SEGMENT: u8 = 0x3;
    pub const KEYED_DATA_BLOCK: u8 = 0x4;
    pub const TRANSPORT_DATA_BLOCK: u8 = 0x5;
}

/// SGL descriptor subtypes (descriptor byte 15 bits 3:0).
pub mod sgl_subtype {
    pub const ADDRESS: u8 = 0x0;
    pub const OFFSET: u8 = 0x1;
    pub const TRANSPORT_SPECIFIC: u8 = 0xa;
}

wire_struct! {
    /// A 16-byte SGL descriptor. For NVMe/TCP the host uses either a Data Block descriptor
    /// with the Offset subtype (in-capsule data, `address` is the offset into the capsule
    /// data) or a Transport SGL Data Block descriptor with the transport-specific subtype
    /// (data moved by R2T/H2CData or C2HData). Keyed descriptors (RDMA) keep a 24-bit
    /// length in `length` bits 23:0 and the key in `length` bits 31:24 plus `key_hi`.
    #[derive(Copy)]
    pub struct SglDescriptor [16] {
        0 => address: u64,
        8 => length: u32,
        12 => key_hi: [u8; 3],
        15 => id: u8,
    }
}

impl SglDescriptor {
    /// Descriptor type (bits 7:4 of byte 15).
    pub fn sgl_type(&self) -> u8 {
        self.id >> 4
    }
    /// Descriptor subtype (bits 3:0 of byte 15).
    pub fn subtype(&self) -> u8 {
        self.id & 0xf
    }
    /// In-capsule data at `offset` within the capsule data (NVMe/TCP: offset 0).
    pub fn in_capsule(offset: u64, length: u32) -> Self {
        Self {
            address: offset,
            length,
            key_hi: [0; 3],
            id: sgl_type::DATA_BLOCK << 4 | sgl_subtype::OFFSET,
        }
    }
    /// Data transferred by the transport (NVMe/TCP R2T/H2CData or C2HData).
    pub fn transport_data_block(length: u32) -> Self {
        Self {
            address: 0,
            length,
            key_hi: [0; 3],
            id: sgl_type::TRANSPORT_DATA_BLOCK << 4 | sgl_subtype::TRANSPORT_SPECIFIC,
        }
    }
    /// A keyed data block (RDMA-style); `length` is limited to 24 bits.
    pub fn keyed(address: u64, length: u32, key: u32) -> Self {
        Self {
            address,
            length: (length & 0x00ff_ffff) | (key << 24),
            key_hi: [(key >> 8) as u8, (key >> 16) as u8, (key >> 24) as u8],
            id: sgl_type::KEYED_DATA_BLOCK << 4 | sgl_subtype::ADDRESS,
        }
    }
    pub fn is_in_capsule(&self) -> bool {
        self.sgl_type() == sgl_type::DATA_BLOCK && self.subtype() == sgl_subtype::OFFSET
    }
    pub fn is_transport_data_block(&self) -> bool {
        self.sgl_type() == sgl_type::TRANSPORT_DATA_BLOCK
    }
    pub fn is_keyed(&self) -> bool {
        self.sgl_type() == sgl_type::KEYED_DATA_BLOCK
    }
    /// Length of a keyed descriptor (24 bits).
    pub fn keyed_length(&self) -> u32 {
        self.length & 0x00ff_ffff
    }
    /// Key of a keyed descriptor (bytes 11..15).
    pub fn key(&self) -> u32 {
        (self.length >> 24)
            | (self.key_hi[0] as u32) << 8
            | (self.key_hi[1] as u32) << 16
            | (self.key_hi[2] as u32) << 24
    }
}

/// PSDT values (SQE byte 1 bits 7:6).
pub mod psdt {
    pub const PRP: u8 = 0;
    /// SGLs, metadata pointer is a contiguous buffer. NVMe-oF hosts use this.
    pub const SGL_MPTR_CONTIG: u8 = 1;
    pub const SGL_MPTR_SGL: u8 = 2;
}

/// Fused operation values (SQE byte 1 bits 1:0).
pub mod fuse {
    pub const NORMAL: u8 = 0;
    pub const FIRST: u8 = 1;
    pub const SECOND: u8 = 2;
}

wire_struct! {
    /// A submission queue entry (64 bytes). Fabrics commands reuse the layout with
    /// `fctype` in byte 4 (the low byte of `nsid`) and their own fields in bytes 40..64
    /// (`cdw10`..`cdw15`); see [`FabricsCommand`].
    #[derive(Copy)]
    pub struct Sqe [64] {
        0 => opcode: u8,
        /// FUSE (bits 1:0) and PSDT (bits 7:6).
        1 => flags: u8,
        2 => cid: u16,
        4 => nsid: u32,
        8 => cdw2: u32,
        12 => cdw3: u32,
        16 => mptr: u64,
        24 => dptr: SglDescriptor,
        40 => cdw10: u32,
        44 => cdw11: u32,
        48 => cdw12: u32,
        52 => cdw13: u32,
        56 => cdw14: u32,
        60 => cdw15: u32,
    }
}

impl Sqe {
    /// A command with the given opcode, cid and nsid, SGL data pointer type (as NVMe-oF
    /// requires) and all other fields zero.
    pub fn new(opcode: u8, cid: u16, nsid: u32) -> Self {
        Self {
            opcode,
            flags: psdt::SGL_MPTR_CONTIG << 6,
            cid,
            nsid,
            ..Default::default()
        }
    }
    pub fn fuse(&self) -> u8 {
        self.flags & 0x3
    }
    pub fn psdt(&self) -> u8 {
        self.flags >> 6
    }
    /// Fabrics command type (byte 4), meaningful when `opcode == FABRICS`.
    pub fn fctype(&self) -> u8 {
        self.nsid as u8
    }
    pub fn is_fabrics(&self) -> bool {
        self.opcode == admin_opc::FABRICS
    }
    /// Starting LBA of an NVM read/write/write zeroes/compare (CDW11:CDW10).
    pub fn slba(&self) -> u64 {
        (self.cdw11 as u64) << 32 | self.cdw10 as u64
    }
    /// Number of logical blocks, converted from the 0-based NLB in CDW12 bits 15:0.
    pub fn nlb(&self) -> u32 {
        (self.cdw12 & 0xffff) + 1
    }
    /// Sets SLBA and the 0-based NLB from a block count (1..=65536) of an NVM command.
    pub fn set_lba_range(&mut self, slba: u64, blocks: u32) {
        self.cdw10 = slba as u32;
        self.cdw11 = (slba >> 32) as u32;
        self.cdw12 = (self.cdw12 & !0xffff) | (blocks.saturating_sub(1) & 0xffff);
    }
}

/// A completion queue entry (16 bytes): command specific DW0/DW1, SQ head pointer, SQ id,
/// command id, and the status field (phase tag in bit 0, [`Status`] in bits 15:1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Cqe {
    pub dw0: u32,
    pub dw1: u32,
    pub sqhd: u16,
    pub sqid: u16,
    pub cid: u16,
    pub phase: bool,
    pub status: Status,
}

impl Cqe {
    pub const SIZE: usize = 16;

    /// A completion of `cid` with `status` and zero DW0/DW1/SQHD.
    pub fn new(cid: u16, status: Status) -> Self {
        Self {
            cid,
            status,
            ..Default::default()
        }
    }
    pub fn encode(&self, out: &mut [u8; 16]) {
        put32(out, 0, self.dw0);
        put32(out, 4, self.dw1);
        put16(out, 8, self.sqhd);
        put16(out, 10, self.sqid);
        put16(out, 12, self.cid);
        put16(out, 14, (self.status.0 << 1) | self.phase as u16);
    }
    pub fn to_bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        self.encode(&mut b);
        b
    }
    pub fn decode(b: &[u8; 16]) -> Self {
        let sf = le16(b, 14);
        Self {
            dw0: le32(b, 0),
            dw1: le32(b, 4),
            sqhd: le16(b, 8),
            sqid: le16(b, 10),
            cid: le16(b, 12),
            phase: sf & 1 != 0,
            status: Status(sf >> 1),
        }
    }
    /// The 64-bit result of a Property Get (DW1:DW0).
    pub fn result64(&self) -> u64 {
        (self.dw1 as u64) << 32 | self.dw0 as u64
    }
}

impl WireField for Cqe {
    const SIZE: usize = 16;
    fn put(&self, out: &mut [u8]) {
        let mut b = [0u8; 16];
        self.encode(&mut b);
        out[..16].copy_from_slice(&b);
    }
    fn get(src: &[u8]) -> Self {
        let mut b = [0u8; 16];
        b.copy_from_slice(&src[..16]);
        Self::decode(&b)
    }
    fn zero() -> Self {
        Self::default()
    }
}

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
        let cid = sqe.cid;
        let auth = || AuthCmd {
            cid,
            sgl: sqe.dptr,
            secp: (sqe.cdw10 >> 24) as u8,
            spsp0: (sqe.cdw10 >> 8) as u8,
            spsp1: (sqe.cdw10 >> 16) as u8,
            length: sqe.cdw11,
        };
        Some(match sqe.fctype() {
            fctype::CONNECT => Self::Connect(ConnectCmd {
                cid,
                sgl: sqe.dptr,
                recfmt: sqe.cdw10 as u16,
                qid: (sqe.cdw10 >> 16) as u16,
                sqsize: sqe.cdw11 as u16,
                cattr: (sqe.cdw11 >> 16) as u8,
                kato: sqe.cdw12,
            }),
            fctype::PROPERTY_GET => Self::PropertyGet(PropertyGetCmd {
                cid,
                size8: sqe.cdw10 & 0x7 == 1,
                offset: sqe.cdw11,
            }),
            fctype::PROPERTY_SET => Self::PropertySet(PropertySetCmd {
                cid,
                size8: sqe.cdw10 & 0x7 == 1,
                offset: sqe.cdw11,
                value: (sqe.cdw13 as u64) << 32 | sqe.cdw12 as u64,
            }),
            fctype::DISCONNECT => Self::Disconnect {
                cid,
                recfmt: sqe.cdw10 as u16,
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
            s.cdw10 = (a.secp as u32) << 24 | (a.spsp1 as u32) << 16 | (a.spsp0 as u32) << 8;
            s.cdw11 = a.length;
            s
        };
        match self {
            Self::Connect(c) => {
                let mut s = mk(c.cid, fctype::CONNECT);
                s.dptr = c.sgl;
                s.cdw10 = c.recfmt as u32 | (c.qid as u32) << 16;
                s.cdw11 = c.sqsize as u32 | (c.cattr as u32) << 16;
                s.cdw12 = c.kato;
                s
            }
            Self::PropertyGet(p) => {
                let mut s = mk(p.cid, fctype::PROPERTY_GET);
                s.cdw10 = p.size8 as u32;
                s.cdw11 = p.offset;
                s
            }
            Self::PropertySet(p) => {
                let mut s = mk(p.cid, fctype::PROPERTY_SET);
                s.cdw10 = p.size8 as u32;
                s.cdw11 = p.offset;
                s.cdw12 = p.value as u32;
                s.cdw13 = (p.value >> 32) as u32;
                s
            }
            Self::Disconnect { cid, recfmt } => {
                let mut s = mk(*cid, fctype::DISCONNECT);
                s.cdw10 = *recfmt as u32;
                s
            }
            Self::AuthenticationSend(a) => auth(a, fctype::AUTHENTICATION_SEND),
            Self::AuthenticationReceive(a) => auth(a, fctype::AUTHENTICATION_RECEIVE),
            Self::Unknown { cid, fctype } => mk(*cid, *fctype),
        }
    }
}

wire_struct! {
    /// The 1024-byte data of a Connect command.
    pub struct ConnectData [1024] {
        0 => hostid: [u8; 16],
        16 => cntlid: u16,
        256 => subnqn: [u8; 256],
        512 => hostnqn: [u8; 256],
    }
}

impl ConnectData {
    /// The subsystem NQN as text (`None` when it is not UTF-8).
    pub fn subnqn_str(&self) -> Option<&str> {
        super::wire::field_str(&self.subnqn)
    }
    /// The host NQN as text (`None` when it is not UTF-8).
    pub fn hostnqn_str(&self) -> Option<&str> {
        super::wire::field_str(&self.hostnqn)
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

// ---------------------------------------------------------------------------------------
// Admin and I/O command fields
// ---------------------------------------------------------------------------------------

/// Identify command fields: CNS (CDW10 7:0), CNTID (CDW10 31:16), CSI (CDW11 31:24).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct IdentifyCmd {
    pub nsid: u32,
    pub cns: u8,
    pub cntid: u16,
    pub csi: u8,
}

impl IdentifyCmd {
    pub fn parse(sqe: &Sqe) -> Self {
        Self {
            nsid: sqe.nsid,
            cns: sqe.cdw10 as u8,
            cntid: (sqe.cdw10 >> 16) as u16,
            csi: (sqe.cdw11 >> 24) as u8,
        }
    }
    /// The SQE (data of 4096 bytes described by `sgl`).
    pub fn to_sqe(&self, cid: u16, sgl: SglDescriptor) -> Sqe {
        let mut s = Sqe::new(admin_opc::IDENTIFY, cid, self.nsid);
        s.dptr = sgl;
        s.cdw10 = self.cns as u32 | (self.cntid as u32) << 16;
        s.cdw11 = (self.csi as u32) << 24;
        s
    }
}

/// Get Log Page command fields. The transfer length is `(numd + 1) * 4` bytes, NUMD being
/// 0-based dwords split over CDW10 31:16 (NUMDL) and CDW11 15:0 (NUMDU); the byte offset is
/// CDW13:CDW12 (must be dword aligned).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct GetLogPageCmd {
    pub nsid: u32,
    pub lid: u8,
    /// Log specific field (CDW10 14:8).
    pub lsp: u8,
    /// Retain asynchronous event (CDW10 bit 15).
    pub rae: bool,
    /// Number of dwords, 0-based.
    pub numd: u32,
    pub offset: u64,
    /// Log specific identifier (CDW11 31:16).
    pub lsi: u16,
}

impl GetLogPageCmd {
    pub fn parse(sqe: &Sqe) -> Self {
        Self {
            nsid: sqe.nsid,
            lid: sqe.cdw10 as u8,
            lsp: ((sqe.cdw10 >> 8) & 0x7f) as u8,
            rae: sqe.cdw10 & (1 << 15) != 0,
            numd: (sqe.cdw10 >> 16) | (sqe.cdw11 & 0xffff) << 16,
            offset: (sqe.cdw13 as u64) << 32 | sqe.cdw12 as u64,
            lsi: (sqe.cdw11 >> 16) as u16,
        }
    }
    /// Transfer length in bytes (up to 16 GiB, hence u64).
    pub fn length(&self) -> u64 {
        (self.numd as u64 + 1) * 4
    }
    /// A request for `len` bytes (a multiple of 4, at least 4) at byte `offset`.
    pub fn new(nsid: u32, lid: u8, offset: u64, len: u32) -> Self {
        Self {
            nsid,
            lid,
            numd: (len / 4).saturating_sub(1),
            offset,
            ..Default::default()
        }
    }
    pub fn to_sqe(&self, cid: u16, sgl: SglDescriptor) -> Sqe {
        let mut s = Sqe::new(admin_opc::GET_LOG_PAGE, cid, self.nsid);
        s.dptr = sgl;
        s.cdw10 = self.lid as u32
            | ((self.lsp & 0x7f) as u32) << 8
            | (self.rae as u32) << 15
            | (self.numd & 0xffff) << 16;
        s.cdw11 = self.numd >> 16 | (self.lsi as u32) << 16;
        s.cdw12 = self.offset as u32;
        s.cdw13 = (self.offset >> 32) as u32;
        s
    }
}

/// Get / Set Features fields: FID (CDW10 7:0), SEL for Get (CDW10 10:8), SV for Set (CDW10
/// bit 31), and the feature value in CDW11.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FeaturesCmd {
    pub nsid: u32,
    pub fid: u8,
    /// Get Features select: 0 current, 1 default, 2 saved, 3 supported capabilities.
    pub sel: u8,
    /// Set Features save.
    pub save: bool,
    pub cdw11: u32,
}

impl FeaturesCmd {
    pub fn parse(sqe: &Sqe) -> Self {
        Self {
            nsid: sqe.nsid,
            fid: sqe.cdw10 as u8,
            sel: ((sqe.cdw10 >> 8) & 0x7) as u8,
            save: sqe.cdw10 & (1 << 31) != 0,
            cdw11: sqe.cdw11,
        }
    }
    pub fn to_sqe(&self, opcode: u8, cid: u16) -> Sqe {
        let mut s = Sqe::new(opcode, cid, self.nsid);
        s.cdw10 = self.fid as u32 | ((self.sel & 0x7) as u32) << 8 | (self.save as u32) << 31;
        s.cdw11 = self.cdw11;
        s
    }
}

/// Data transfer direction of a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataDirection {
    None,
    /// Write-like: the target fetches data (in-capsule or R2T/H2CData).
    HostToController,
    /// Read-like: the target sends C2HData.
    ControllerToHost,
    Bidirectional,
}

/// Number of Queues feature value (CDW11 of Set, DW0 of the completion): 0-based counts of
/// I/O submission queues (bits 15:0) and completion queues (31:16).
pub const fn num_queues_value(nsqr_0based: u16, ncqr_0based: u16) -> u32 {
    nsqr_0based as u32 | (ncqr_0based as u32) << 16
}

/// Splits a Number of Queues value into (NSQR, NCQR), both 0-based.
pub const fn num_queues_from_value(v: u32) -> (u16, u16) {
    (v as u16, (v >> 16) as u16)
}

/// Dataset Management attributes (CDW11).
pub mod dsm {
    pub const INTEGRAL_READ: u32 = 1 << 0;
    pub const INTEGRAL_WRITE: u32 = 1 << 1;
    pub const DEALLOCATE: u32 = 1 << 2;
    /// Most ranges in one command (NR in CDW10 7:0 is 0-based).
    pub const MAX_RANGES: usize = 256;
}

wire_struct! {
    /// A Dataset Management range (16 bytes); the command's data is NR + 1 of these.
    #[derive(Copy)]
    pub struct DsmRange [16] {
        0 => context_attributes: u32,
        4 => nlb: u32,
        8 => slba: u64,
    }
}

/// Decodes DSM ranges from a command's data (`nr_0based` from CDW10 7:0); `None` if the data
/// is shorter than the ranges it must hold.
pub fn decode_dsm_ranges(data: &[u8], nr_0based: u8) -> Option<Vec<DsmRange>> {
    let n = nr_0based as usize + 1;
    let bytes = data.get(..n * DsmRange::SIZE)?;
    Some(
        bytes
            .chunks_exact(DsmRange::SIZE)
            .filter_map(DsmRange::decode_slice)
            .collect(),
    )
}

impl Sqe {
    /// Read or Write of `blocks` logical blocks at `slba` with the data described by `sgl`.
    pub fn rw(opcode: u8, cid: u16, nsid: u32, slba: u64, blocks: u32, sgl: SglDescriptor) -> Self {
        let mut s = Sqe::new(opcode, cid, nsid);
        s.set_lba_range(slba, blocks);
        s.dptr = sgl;
        s
    }
    /// Write Zeroes of `blocks` at `slba` (no data); `deallocate` sets DEAC (CDW12 bit 25).
    pub fn write_zeroes(cid: u16, nsid: u32, slba: u64, blocks: u32, deallocate: bool) -> Self {
        let mut s = Sqe::new(io_opc::WRITE_ZEROES, cid, nsid);
        s.set_lba_range(slba, blocks);
        s.cdw12 |= (deallocate as u32) << 25;
        s
    }
    /// Dataset Management with `nr` ranges (1..=256) in the data, `attributes` from [`dsm`].
    pub fn dataset_management(
        cid: u16,
        nsid: u32,
        nr: u16,
        attributes: u32,
        sgl: SglDescriptor,
    ) -> Self {
        let mut s = Sqe::new(io_opc::DATASET_MANAGEMENT, cid, nsid);
        s.cdw10 = nr.saturating_sub(1) as u32 & 0xff;
        s.cdw11 = attributes;
        s.dptr = sgl;
        s
    }
    /// Direction of the command's data transfer, from opcode bits 1:0 (for fabrics
    /// commands, from the fctype bits 1:0).
    pub fn data_direction(&self) -> DataDirection {
        let bits = if self.is_fabrics() {
            self.fctype()
        } else {
            self.opcode
        };
        match bits & 0x3 {
            0 => DataDirection::None,
            1 => DataDirection::HostToController,
            2 => DataDirection::ControllerToHost,
            _ => DataDirection::Bidirectional,
        }
    }
    /// Force Unit Access (CDW12 bit 30) of a read/write.
    pub fn fua(&self) -> bool {
        self.cdw12 & (1 << 30) != 0
    }
}

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
    /// are space padded (see [`super::wire::ascii_field`]); `subnqn` is NUL padded.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nvmf::wire::{ascii_field, nul_field};

    /// Fills every byte of a structure's encoding by decoding a patterned buffer, then checks
    /// that encoding reproduces the pattern in every non-reserved byte and that a second
    /// decode is identical (round trip at the byte level).
    fn pattern<const N: usize>() -> [u8; N] {
        std::array::from_fn(|i| (i as u8).wrapping_mul(31).wrapping_add(7))
    }

    #[test]
    fn sqe_layout_and_round_trip() {
        let mut sqe = Sqe::new(io_opc::WRITE, 0xbeef, 7);
        sqe.set_lba_range(0x1_2345_6789, 256);
        sqe.dptr = SglDescriptor::in_capsule(0, 4096);
        sqe.cdw15 = 0xdead_beef;
        let b = sqe.to_bytes();
        assert_eq!(b[0], io_opc::WRITE);
        assert_eq!(b[1] >> 6, psdt::SGL_MPTR_CONTIG);
        assert_eq!(&b[2..4], &0xbeefu16.to_le_bytes());
        assert_eq!(&b[4..8], &7u32.to_le_bytes());
        assert_eq!(&b[40..44], &0x2345_6789u32.to_le_bytes());
        assert_eq!(&b[44..48], &1u32.to_le_bytes());
        assert_eq!(&b[48..50], &255u16.to_le_bytes());
        assert_eq!(&b[32..36], &4096u32.to_le_bytes());
        assert_eq!(b[39], 0x01);
        assert_eq!(&b[60..64], &0xdead_beefu32.to_le_bytes());
        let back = Sqe::decode(&b);
        assert_eq!(back, sqe);
        assert_eq!(back.slba(), 0x1_2345_6789);
        assert_eq!(back.nlb(), 256);
        assert!(back.dptr.is_in_capsule());
        // Every byte round-trips (an SQE has no reserved bytes in our layout).
        let p = pattern::<64>();
        assert_eq!(Sqe::decode(&p).to_bytes(), p);
    }

    #[test]
    fn sgl_descriptors() {
        let t = SglDescriptor::transport_data_block(131072);
        assert_eq!(t.to_bytes()[15], 0x5a);
        assert!(t.is_transport_data_block());
        assert_eq!(SglDescriptor::decode(&t.to_bytes()), t);
        let k = SglDescriptor::keyed(0x1000, 0x12_3456, 0xaabb_ccdd);
        let kb = k.to_bytes();
        assert_eq!(&kb[8..11], &[0x56, 0x34, 0x12]);
        assert_eq!(&kb[11..15], &0xaabb_ccddu32.to_le_bytes());
        let k2 = SglDescriptor::decode(&kb);
        assert!(k2.is_keyed());
        assert_eq!(k2.keyed_length(), 0x12_3456);
        assert_eq!(k2.key(), 0xaabb_ccdd);
    }

    #[test]
    fn cqe_status_and_phase() {
        let mut cqe = Cqe::new(0x1234, Status::CONNECT_INVALID_PARAMETERS.with_dnr());
        cqe.phase = true;
        cqe.sqhd = 9;
        cqe.sqid = 2;
        cqe.dw0 = connect_invalid_param_dw0(true, connect_off::HOSTNQN);
        let b = cqe.to_bytes();
        let sf = u16::from_le_bytes([b[14], b[15]]);
        assert_eq!(sf & 1, 1);
        assert_eq!((sf >> 1) & 0xff, 0x82);
        assert_eq!((sf >> 9) & 0x7, 1);
        assert_eq!(sf >> 15, 1, "DNR is bit 15 of the status field");
        assert_eq!(b[2], 1, "IATTR set for a data field");
        assert_eq!(u16::from_le_bytes([b[0], b[1]]), 512);
        let back = Cqe::decode(&b);
        assert_eq!(back, cqe);
        assert!(back.status.dnr());
        assert!(!back.status.more());
        assert_eq!(connect_invalid_param_from_dw0(back.dw0), (true, 512));
        assert!(back.status.same_code(Status::CONNECT_INVALID_PARAMETERS));
        let s = Status::UNRECOVERED_READ_ERROR;
        assert_eq!((s.sct(), s.sc()), (2, 0x81));
        let s = Status::INTERNAL_ERROR.with_more().with_crd(2);
        assert_eq!((s.more(), s.crd(), s.sc()), (true, 2, 6));
        assert!(Status::SUCCESS.is_success());
        let p = pattern::<16>();
        assert_eq!(Cqe::decode(&p).to_bytes(), p);
    }

    #[test]
    fn fabrics_commands_round_trip() {
        let connect = FabricsCommand::Connect(ConnectCmd {
            cid: 3,
            sgl: SglDescriptor::in_capsule(0, 1024),
            recfmt: 0,
            qid: 4,
            sqsize: 127,
            cattr: 0x4,
            kato: 120_000,
        });
        let sqe = connect.to_sqe();
        let b = sqe.to_bytes();
        assert_eq!(b[0], 0x7f);
        assert_eq!(b[4], fctype::CONNECT);
        assert_eq!(&b[connect_off::QID as usize..][..2], &4u16.to_le_bytes());
        assert_eq!(
            &b[connect_off::SQSIZE as usize..][..2],
            &127u16.to_le_bytes()
        );
        assert_eq!(b[connect_off::CATTR as usize], 0x4);
        assert_eq!(
            &b[connect_off::KATO as usize..][..4],
            &120_000u32.to_le_bytes()
        );
        let cmds = [
            connect,
            FabricsCommand::PropertyGet(PropertyGetCmd {
                cid: 5,
                size8: true,
                offset: prop::CAP,
            }),
            FabricsCommand::PropertySet(PropertySetCmd {
                cid: 6,
                size8: false,
                offset: prop::CC,
                value: 0x0046_0001,
            }),
            FabricsCommand::Disconnect { cid: 7, recfmt: 0 },
            FabricsCommand::AuthenticationSend(AuthCmd {
                cid: 8,
                sgl: SglDescriptor::in_capsule(0, 64),
                secp: 0xe9,
                spsp0: 1,
                spsp1: 2,
                length: 64,
            }),
            FabricsCommand::AuthenticationReceive(AuthCmd {
                cid: 9,
                sgl: SglDescriptor::transport_data_block(128),
                secp: 0xe9,
                spsp0: 3,
                spsp1: 4,
                length: 128,
            }),
            FabricsCommand::Unknown {
                cid: 10,
                fctype: 0x42,
            },
        ];
        for c in cmds {
            let sqe = Sqe::decode(&c.to_sqe().to_bytes());
            assert_eq!(FabricsCommand::parse(&sqe), Some(c));
        }
        assert_eq!(FabricsCommand::parse(&Sqe::new(io_opc::READ, 1, 1)), None);
    }

    #[test]
    fn connect_data_round_trip() {
        let cd = ConnectData {
            hostid: [0xab; 16],
            cntlid: CNTLID_DYNAMIC,
            subnqn: nul_field("nqn.2016-06.io.pollux:cnode1"),
            hostnqn: nul_field("nqn.2014-08.org.nvmexpress:uuid:1234"),
        };
        let b = cd.to_bytes();
        assert_eq!(&b[16..18], &[0xff, 0xff]);
        assert_eq!(&b[256..260], b"nqn.");
        let back = ConnectData::decode(&b);
        assert_eq!(back, cd);
        assert_eq!(back.subnqn_str(), Some("nqn.2016-06.io.pollux:cnode1"));
        assert!(back.nqns_terminated());
        let mut unterminated = back.clone();
        unterminated.hostnqn = [b'a'; 256];
        assert!(!unterminated.nqns_terminated());
    }

    #[test]
    fn properties_bit_fields() {
        let cap = Cap {
            mqes: 127,
            cqr: true,
            ams: 0,
            to: 15,
            dstrd: 0,
            nssrs: false,
            css: 1,
            bps: false,
            mpsmin: 0,
            mpsmax: 4,
            cmbs: false,
        };
        let v = cap.to_u64();
        assert_eq!(v & 0xffff, 127);
        assert_eq!(v >> 16 & 1, 1);
        assert_eq!(v >> 24 & 0xff, 15);
        assert_eq!(v >> 37 & 0xff, 1);
        assert_eq!(v >> 52 & 0xf, 4);
        assert_eq!(Cap::from_u64(v), cap);
        let cc = Cc {
            en: true,
            css: 0,
            mps: 0,
            ams: 0,
            shn: shutdown::NORMAL_OR_OCCURRING,
            iosqes: 6,
            iocqes: 4,
        };
        assert_eq!(cc.to_u32(), 0x0046_4001);
        assert_eq!(Cc::from_u32(cc.to_u32()), cc);
        let csts = Csts {
            rdy: true,
            shst: shutdown::COMPLETE,
            ..Default::default()
        };
        assert_eq!(csts.to_u32(), 0b1001);
        assert_eq!(Csts::from_u32(csts.to_u32()), csts);
        assert_eq!(Version::V1_3.to_u32(), 0x0001_0300);
        assert_eq!(Version::from_u32(0x0001_0400), Version::V1_4);
        assert!(prop::is_8_bytes(prop::CAP) && !prop::is_8_bytes(prop::CSTS));
    }

    #[test]
    fn identify_controller_offsets() {
        let mut id = IdentifyController {
            vid: 0x1b36,
            ssvid: 0x1af4,
            sn: ascii_field("POLLUX0001"),
            mn: ascii_field("pollux"),
            fr: ascii_field("0.1"),
            ieee: [0x00, 0x54, 0x52],
            mdts: 5,
            cntlid: 1,
            ver: Version::V1_4.to_u32(),
            cntrltype: cntrltype::IO,
            kas: 10,
            sqes: 0x66,
            cqes: 0x44,
            maxcmd: 128,
            nn: 32,
            oncs: oncs::DATASET_MANAGEMENT | oncs::WRITE_ZEROES,
            sgls: sgls::SUPPORTED | sgls::OFFSET | sgls::TRANSPORT_DATA_BLOCK,
            subnqn: nul_field("nqn.2016-06.io.pollux:cnode1"),
            ioccsz: (8192 + 64) / 16,
            iorcsz: 1,
            msdbd: 1,
            ..Default::default()
        };
        id.psd[0].mp = 2500;
        id.vs[1023] = 0x5a;
        let b = id.to_bytes();
        assert_eq!(&b[0..2], &0x1b36u16.to_le_bytes());
        assert_eq!(&b[4..14], b"POLLUX0001");
        assert_eq!(b[14], b' ');
        assert_eq!(b[77], 5);
        assert_eq!(b[111], 1);
        assert_eq!(&b[320..322], &10u16.to_le_bytes());
        assert_eq!(b[512], 0x66);
        assert_eq!(&b[516..520], &32u32.to_le_bytes());
        assert_eq!(&b[520..522], &0x0cu16.to_le_bytes());
        assert_eq!(&b[768..772], b"nqn.");
        assert_eq!(&b[1792..1796], &516u32.to_le_bytes());
        assert_eq!(b[1803], 1);
        assert_eq!(&b[2048..2050], &2500u16.to_le_bytes());
        assert_eq!(b[4095], 0x5a);
        assert_eq!(IdentifyController::decode(&b), id);
        assert_eq!(crate::nvmf::field_str(&id.sn), Some("POLLUX0001"));
    }

    #[test]
    fn identify_namespace_and_lists() {
        let mut ns = IdentifyNamespace {
            nsze: 65536,
            ncap: 65536,
            nuse: 65536,
            nlbaf: 0,
            flbas: 0,
            dlfeat: 1,
            nguid: [7; 16],
            eui64: [9; 8],
            ..Default::default()
        };
        ns.lbaf[0] = LbaFormat {
            ms: 0,
            lbads: 12,
            rp: 0,
        };
        let b = ns.to_bytes();
        assert_eq!(&b[0..8], &65536u64.to_le_bytes());
        assert_eq!(b[33], 1);
        assert_eq!(&b[104..120], &[7; 16]);
        assert_eq!(&b[120..128], &[9; 8]);
        assert_eq!(b[130], 12);
        let back = IdentifyNamespace::decode(&b);
        assert_eq!(back, ns);
        assert_eq!(back.block_size(), Some(4096));
        let mut bad = back.clone();
        bad.flbas = 3;
        assert_eq!(bad.block_size(), None);

        let mut list = [0u8; 4096];
        encode_ns_list([1, 2, 5], &mut list);
        assert_eq!(decode_ns_list(&list), vec![1, 2, 5]);

        let descs = [
            NsIdDescriptor::Eui64([1; 8]),
            NsIdDescriptor::Nguid([2; 16]),
            NsIdDescriptor::Uuid([3; 16]),
            NsIdDescriptor::Csi(0),
        ];
        let mut buf = [0u8; 4096];
        encode_ns_id_descriptors(&descs, &mut buf);
        assert_eq!(&buf[0..4], &[nidt::EUI64, 8, 0, 0]);
        assert_eq!(&buf[12..16], &[nidt::NGUID, 16, 0, 0]);
        assert_eq!(decode_ns_id_descriptors(&buf).unwrap(), descs);
        // A truncated or malformed list is an error, never a panic.
        assert!(decode_ns_id_descriptors(&buf[..20]).is_err());
        buf[1] = 9;
        assert!(decode_ns_id_descriptors(&buf).is_err());
    }

    #[test]
    fn log_pages_round_trip() {
        let e = ErrorLogEntry {
            error_count: 3,
            sqid: 1,
            cid: 77,
            status_field: Status::LBA_OUT_OF_RANGE.0 << 1,
            parameter_error_location: 0xffff,
            lba: 1 << 40,
            nsid: 1,
            vs: 0,
            trtype: trtype::TCP,
            cs: 0,
            trtype_specific: 0,
        };
        assert_eq!(ErrorLogEntry::decode(&e.to_bytes()), e);
        let s = SmartLog {
            temperature: 310,
            avail_spare: 100,
            data_units_read: u128::MAX - 5,
            host_write_commands: 1 << 100,
            temp_sensor: [1, 2, 3, 4, 5, 6, 7, 8],
            ..Default::default()
        };
        let b = s.to_bytes();
        assert_eq!(&b[1..3], &310u16.to_le_bytes());
        assert_eq!(&b[32..48], &(u128::MAX - 5).to_le_bytes());
        assert_eq!(&b[80..96], &(1u128 << 100).to_le_bytes());
        assert_eq!(&b[200..202], &1u16.to_le_bytes());
        assert_eq!(SmartLog::decode(&b), s);
        let mut fw = FirmwareSlotLog {
            afi: 1,
            ..Default::default()
        };
        fw.frs[0] = ascii_field("0.1");
        let fb = fw.to_bytes();
        assert_eq!(&fb[8..11], b"0.1");
        assert_eq!(FirmwareSlotLog::decode(&fb), fw);
    }

    #[test]
    fn discovery_log_round_trip() {
        let entry = |port: u16, nqn: &str| DiscoveryLogEntry {
            trtype: trtype::TCP,
            adrfam: adrfam::IPV4,
            subtype: subtype::NVME,
            treq: treq::SECURE_CHANNEL_NOT_REQUIRED,
            portid: port,
            cntlid: CNTLID_DYNAMIC,
            asqsz: 32,
            eflags: 0,
            trsvcid: nul_field("4420"),
            subnqn: nul_field(nqn),
            traddr: nul_field("127.0.0.1"),
            tsas: [0; 256],
        };
        let entries = vec![entry(1, "nqn.a"), entry(2, "nqn.b")];
        let page = encode_discovery_log(42, &entries);
        assert_eq!(page.len(), 3 * 1024);
        assert_eq!(&page[8..16], &2u64.to_le_bytes());
        assert_eq!(page[1024], trtype::TCP);
        assert_eq!(&page[1024 + 32..1024 + 36], b"4420");
        assert_eq!(&page[2048 + 512..2048 + 521], b"127.0.0.1");
        let (hdr, back) = decode_discovery_log(&page).unwrap();
        assert_eq!((hdr.genctr, hdr.numrec), (42, 2));
        assert_eq!(back, entries);
        // A header claiming more records than present decodes the ones that are there.
        let (_, partial) = decode_discovery_log(&page[..2048]).unwrap();
        assert_eq!(partial.len(), 1);
        assert!(decode_discovery_log(&page[..100]).is_none());
    }

    #[test]
    fn every_struct_decodes_any_bytes_and_round_trips() {
        // Decoding arbitrary bytes never panics, and re-encoding then decoding is stable.
        macro_rules! stable {
            ($t:ty, $n:expr) => {{
                let p = pattern::<$n>();
                let v = <$t>::decode(&p);
                assert_eq!(<$t>::decode(&v.to_bytes()), v, stringify!($t));
            }};
        }
        stable!(Sqe, 64);
        stable!(SglDescriptor, 16);
        stable!(ConnectData, 1024);
        stable!(IdentifyController, 4096);
        stable!(IdentifyNamespace, 4096);
        stable!(ErrorLogEntry, 64);
        stable!(SmartLog, 512);
        stable!(FirmwareSlotLog, 512);
        stable!(DiscoveryLogHeader, 1024);
        stable!(DiscoveryLogEntry, 1024);
        stable!(PowerStateDescriptor, 32);
        stable!(LbaFormat, 4);
    }

    #[test]
    fn admin_and_io_command_fields() {
        let id = IdentifyCmd {
            nsid: 0,
            cns: cns::CONTROLLER,
            cntid: 0x1234,
            csi: 0,
        };
        let sqe = Sqe::decode(
            &id.to_sqe(1, SglDescriptor::transport_data_block(4096))
                .to_bytes(),
        );
        assert_eq!(sqe.opcode, admin_opc::IDENTIFY);
        assert_eq!(sqe.cdw10, 0x1234_0001);
        assert_eq!(IdentifyCmd::parse(&sqe), id);

        let glp = GetLogPageCmd {
            rae: true,
            lsp: 1,
            lsi: 7,
            ..GetLogPageCmd::new(0xffff_ffff, log_id::DISCOVERY, 1 << 33, 0x40_0000)
        };
        assert_eq!(glp.numd, 0xf_ffff);
        let sqe = glp.to_sqe(2, SglDescriptor::transport_data_block(0x40_0000));
        assert_eq!(sqe.cdw10 & 0xff, 0x70);
        assert_eq!(sqe.cdw10 >> 16, 0xffff, "NUMDL");
        assert_eq!(sqe.cdw11 & 0xffff, 0xf, "NUMDU");
        assert_eq!((sqe.cdw12, sqe.cdw13), (0, 2));
        let back = GetLogPageCmd::parse(&sqe);
        assert_eq!(back, glp);
        assert_eq!(back.length(), 0x40_0000);

        let f = FeaturesCmd {
            nsid: 0,
            fid: feat::NUMBER_OF_QUEUES,
            sel: 0,
            save: false,
            cdw11: num_queues_value(3, 3),
        };
        let sqe = f.to_sqe(admin_opc::SET_FEATURES, 3);
        assert_eq!(FeaturesCmd::parse(&sqe), f);
        assert_eq!(num_queues_from_value(sqe.cdw11), (3, 3));

        let w = Sqe::rw(
            io_opc::READ,
            4,
            1,
            100,
            8,
            SglDescriptor::transport_data_block(4096),
        );
        assert_eq!((w.slba(), w.nlb(), w.fua()), (100, 8, false));
        assert_eq!(w.data_direction(), DataDirection::ControllerToHost);
        assert_eq!(
            Sqe::new(io_opc::WRITE, 1, 1).data_direction(),
            DataDirection::HostToController
        );
        assert_eq!(
            Sqe::new(io_opc::FLUSH, 1, 1).data_direction(),
            DataDirection::None
        );
        let connect = FabricsCommand::Connect(ConnectCmd::default()).to_sqe();
        assert_eq!(connect.data_direction(), DataDirection::HostToController);
        let pget = FabricsCommand::PropertyGet(PropertyGetCmd::default()).to_sqe();
        assert_eq!(pget.data_direction(), DataDirection::None);
        let id = IdentifyCmd::default().to_sqe(1, SglDescriptor::default());
        assert_eq!(id.data_direction(), DataDirection::ControllerToHost);
        let z = Sqe::write_zeroes(5, 1, 7, 65536, true);
        assert_eq!((z.slba(), z.nlb(), z.cdw12 >> 25 & 1), (7, 65536, 1));
        let d = Sqe::dataset_management(6, 1, 2, dsm::DEALLOCATE, SglDescriptor::in_capsule(0, 32));
        assert_eq!((d.cdw10, d.cdw11), (1, 4));
        let ranges = [
            DsmRange {
                context_attributes: 0,
                nlb: 8,
                slba: 0,
            },
            DsmRange {
                context_attributes: 0,
                nlb: 16,
                slba: 1 << 40,
            },
        ];
        let mut data = Vec::new();
        for r in &ranges {
            data.extend_from_slice(&r.to_bytes());
        }
        assert_eq!(&data[20..24], &16u32.to_le_bytes());
        assert_eq!(decode_dsm_ranges(&data, 1).unwrap(), ranges);
        assert!(decode_dsm_ranges(&data[..31], 1).is_none());
    }
}
