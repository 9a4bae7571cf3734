//! NVMe base structures: opcodes, status codes, SGL descriptor, SQE, CQE and command fields.
//!
//! NVMe base structures: opcodes, status codes, the SGL descriptor, the submission and
//! completion queue entries, and the admin / I/O command fields carried in an SQE.

use super::*;
use bitfield_struct::bitfield;

// ---------------------------------------------------------------------------------------
// Opcodes
// ---------------------------------------------------------------------------------------

wire_enum! {
    /// Admin command opcodes.
    pub enum AdminOpcode in admin_opc {
        DeleteIoSq / DELETE_IO_SQ = 0x00,
        CreateIoSq / CREATE_IO_SQ = 0x01,
        GetLogPage / GET_LOG_PAGE = 0x02,
        DeleteIoCq / DELETE_IO_CQ = 0x04,
        CreateIoCq / CREATE_IO_CQ = 0x05,
        Identify / IDENTIFY = 0x06,
        Abort / ABORT = 0x08,
        SetFeatures / SET_FEATURES = 0x09,
        GetFeatures / GET_FEATURES = 0x0a,
        AsyncEventRequest / ASYNC_EVENT_REQUEST = 0x0c,
        NsManagement / NS_MANAGEMENT = 0x0d,
        FirmwareCommit / FIRMWARE_COMMIT = 0x10,
        FirmwareImageDownload / FIRMWARE_IMAGE_DOWNLOAD = 0x11,
        DeviceSelfTest / DEVICE_SELF_TEST = 0x14,
        NsAttachment / NS_ATTACHMENT = 0x15,
        KeepAlive / KEEP_ALIVE = 0x18,
        DirectiveSend / DIRECTIVE_SEND = 0x19,
        DirectiveReceive / DIRECTIVE_RECEIVE = 0x1a,
        VirtualizationManagement / VIRTUALIZATION_MANAGEMENT = 0x1c,
        NvmeMiSend / NVME_MI_SEND = 0x1d,
        NvmeMiReceive / NVME_MI_RECEIVE = 0x1e,
        DoorbellBufferConfig / DOORBELL_BUFFER_CONFIG = 0x7c,
        /// Fabrics commands share this opcode on every queue; the type is in `fctype`.
        Fabrics / FABRICS = 0x7f,
        FormatNvm / FORMAT_NVM = 0x80,
        SecuritySend / SECURITY_SEND = 0x81,
        SecurityReceive / SECURITY_RECEIVE = 0x82,
        Sanitize / SANITIZE = 0x84,
        GetLbaStatus / GET_LBA_STATUS = 0x86,
    }
}

wire_enum! {
    /// NVM command set (I/O queue) opcodes.
    pub enum IoOpcode in io_opc {
        Flush / FLUSH = 0x00,
        Write / WRITE = 0x01,
        Read / READ = 0x02,
        WriteUncorrectable / WRITE_UNCORRECTABLE = 0x04,
        Compare / COMPARE = 0x05,
        WriteZeroes / WRITE_ZEROES = 0x08,
        DatasetManagement / DATASET_MANAGEMENT = 0x09,
        Verify / VERIFY = 0x0c,
        ReservationRegister / RESERVATION_REGISTER = 0x0d,
        ReservationReport / RESERVATION_REPORT = 0x0e,
        ReservationAcquire / RESERVATION_ACQUIRE = 0x11,
        ReservationRelease / RESERVATION_RELEASE = 0x15,
        Copy / COPY = 0x19,
        /// Fabrics commands (same value as the admin one).
        Fabrics / FABRICS = 0x7f,
    }
}

wire_enum! {
    /// Fabrics command types (SQE byte 4 when the opcode is `FABRICS`).
    pub enum FabricsType in fctype {
        PropertySet / PROPERTY_SET = 0x00,
        Connect / CONNECT = 0x01,
        PropertyGet / PROPERTY_GET = 0x04,
        AuthenticationSend / AUTHENTICATION_SEND = 0x05,
        AuthenticationReceive / AUTHENTICATION_RECEIVE = 0x06,
        Disconnect / DISCONNECT = 0x08,
    }
}

wire_enum! {
    /// Identify CNS values (CDW10 bits 7:0).
    pub enum Cns in cns {
        Namespace / NAMESPACE = 0x00,
        Controller / CONTROLLER = 0x01,
        ActiveNsList / ACTIVE_NS_LIST = 0x02,
        NsIdDescriptorList / NS_ID_DESCRIPTOR_LIST = 0x03,
        NvmSetList / NVM_SET_LIST = 0x04,
        CsiNamespace / CSI_NAMESPACE = 0x05,
        CsiController / CSI_CONTROLLER = 0x06,
        CsiActiveNsList / CSI_ACTIVE_NS_LIST = 0x07,
        AllocatedNsList / ALLOCATED_NS_LIST = 0x10,
        AllocatedNamespace / ALLOCATED_NAMESPACE = 0x11,
    }
}

wire_enum! {
    /// Log page identifiers (Get Log Page CDW10 bits 7:0).
    pub enum LogPageId in log_id {
        ErrorInformation / ERROR_INFORMATION = 0x01,
        SmartHealth / SMART_HEALTH = 0x02,
        FirmwareSlot / FIRMWARE_SLOT = 0x03,
        ChangedNsList / CHANGED_NS_LIST = 0x04,
        CommandsSupportedEffects / COMMANDS_SUPPORTED_EFFECTS = 0x05,
        DeviceSelfTest / DEVICE_SELF_TEST = 0x06,
        TelemetryHost / TELEMETRY_HOST = 0x07,
        TelemetryController / TELEMETRY_CONTROLLER = 0x08,
        Ana / ANA = 0x0c,
        Discovery / DISCOVERY = 0x70,
        ReservationNotification / RESERVATION_NOTIFICATION = 0x80,
        SanitizeStatus / SANITIZE_STATUS = 0x81,
    }
}

wire_enum! {
    /// Feature identifiers (Get/Set Features CDW10 bits 7:0).
    pub enum FeatureId in feat {
        Arbitration / ARBITRATION = 0x01,
        PowerManagement / POWER_MANAGEMENT = 0x02,
        LbaRangeType / LBA_RANGE_TYPE = 0x03,
        TemperatureThreshold / TEMPERATURE_THRESHOLD = 0x04,
        ErrorRecovery / ERROR_RECOVERY = 0x05,
        VolatileWriteCache / VOLATILE_WRITE_CACHE = 0x06,
        NumberOfQueues / NUMBER_OF_QUEUES = 0x07,
        InterruptCoalescing / INTERRUPT_COALESCING = 0x08,
        InterruptVectorConfig / INTERRUPT_VECTOR_CONFIG = 0x09,
        WriteAtomicity / WRITE_ATOMICITY = 0x0a,
        AsyncEventConfig / ASYNC_EVENT_CONFIG = 0x0b,
        AutonomousPowerStateTransition / AUTONOMOUS_POWER_STATE_TRANSITION = 0x0c,
        HostMemoryBuffer / HOST_MEMORY_BUFFER = 0x0d,
        Timestamp / TIMESTAMP = 0x0e,
        KeepAliveTimer / KEEP_ALIVE_TIMER = 0x0f,
        HostControlledThermalMgmt / HOST_CONTROLLED_THERMAL_MGMT = 0x10,
        NonOperationalPowerState / NON_OPERATIONAL_POWER_STATE = 0x11,
        HostBehaviorSupport / HOST_BEHAVIOR_SUPPORT = 0x16,
        SoftwareProgressMarker / SOFTWARE_PROGRESS_MARKER = 0x80,
        HostIdentifier / HOST_IDENTIFIER = 0x81,
        ReservationNotificationMask / RESERVATION_NOTIFICATION_MASK = 0x82,
        ReservationPersistence / RESERVATION_PERSISTENCE = 0x83,
        NsWriteProtection / NS_WRITE_PROTECTION = 0x84,
    }
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
    /// Async Event Configuration bit enabling the ANA change notice (also OAES bit 11).
    pub const CONFIG_ANA_CHANGE: u32 = 1 << 11;
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

/// Byte 15 of an SGL descriptor: the subtype (bits 3:0) and the type (bits 7:4).
#[bitfield(u8)]
#[derive(PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct SglId {
    /// See [`sgl_subtype`].
    #[bits(4)]
    pub subtype: u8,
    /// See [`sgl_type`].
    #[bits(4)]
    pub sgl_type: u8,
}

/// Byte 1 of an SQE: the fused operation (bits 1:0) and the PRP or SGL data transfer (PSDT,
/// bits 7:6).
#[bitfield(u8)]
#[derive(PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct SqeFlags {
    /// See [`fuse`].
    #[bits(2)]
    pub fuse: u8,
    #[bits(4)]
    __: u8,
    /// See [`psdt`].
    #[bits(2)]
    pub psdt: u8,
}

/// A 16-byte SGL descriptor. For NVMe/TCP the host uses either a Data Block descriptor
/// with the Offset subtype (in-capsule data, `address` is the offset into the capsule
/// data) or a Transport SGL Data Block descriptor with the transport-specific subtype
/// (data moved by R2T/H2CData or C2HData). Keyed descriptors (RDMA) keep a 24-bit
/// length in `length` bits 23:0 and the key in `length` bits 31:24 plus `key_hi`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct SglDescriptor {
    pub address: U64,
    pub length: U32,
    pub key_hi: [u8; 3],
    /// Descriptor type and subtype.
    pub id: SglId,
}

impl SglDescriptor {
    /// Descriptor type (bits 7:4 of byte 15).
    pub fn sgl_type(&self) -> u8 {
        self.id.sgl_type()
    }
    /// Descriptor subtype (bits 3:0 of byte 15).
    pub fn subtype(&self) -> u8 {
        self.id.subtype()
    }
    /// In-capsule data at `offset` within the capsule data (NVMe/TCP: offset 0).
    pub fn in_capsule(offset: u64, length: u32) -> Self {
        Self {
            address: offset.into(),
            length: length.into(),
            key_hi: [0; 3],
            id: SglId::new()
                .with_sgl_type(sgl_type::DATA_BLOCK)
                .with_subtype(sgl_subtype::OFFSET),
        }
    }
    /// Data transferred by the transport (NVMe/TCP R2T/H2CData or C2HData).
    pub fn transport_data_block(length: u32) -> Self {
        Self {
            address: U64::ZERO,
            length: length.into(),
            key_hi: [0; 3],
            id: SglId::new()
                .with_sgl_type(sgl_type::TRANSPORT_DATA_BLOCK)
                .with_subtype(sgl_subtype::TRANSPORT_SPECIFIC),
        }
    }
    /// A keyed data block (RDMA-style); `length` is limited to 24 bits.
    pub fn keyed(address: u64, length: u32, key: u32) -> Self {
        Self {
            address: address.into(),
            length: ((length & 0x00ff_ffff) | (key << 24)).into(),
            key_hi: [(key >> 8) as u8, (key >> 16) as u8, (key >> 24) as u8],
            id: SglId::new()
                .with_sgl_type(sgl_type::KEYED_DATA_BLOCK)
                .with_subtype(sgl_subtype::ADDRESS),
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
        self.length.get() & 0x00ff_ffff
    }
    /// Key of a keyed descriptor (bytes 11..15).
    pub fn key(&self) -> u32 {
        (self.length.get() >> 24)
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

/// A submission queue entry (64 bytes). Fabrics commands reuse the layout with
/// `fctype` in byte 4 (the low byte of `nsid`) and their own fields in bytes 40..64
/// (`cdw10`..`cdw15`); see [`FabricsCommand`].
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct Sqe {
    pub opcode: u8,
    /// FUSE and PSDT.
    pub flags: SqeFlags,
    pub cid: U16,
    pub nsid: U32,
    pub cdw2: U32,
    pub cdw3: U32,
    pub mptr: U64,
    pub dptr: SglDescriptor,
    pub cdw10: U32,
    pub cdw11: U32,
    pub cdw12: U32,
    pub cdw13: U32,
    pub cdw14: U32,
    pub cdw15: U32,
}

wire_layout!(SglDescriptor = 16, Sqe = 64, Cqe = 16);

impl Sqe {
    /// A command with the given opcode, cid and nsid, SGL data pointer type (as NVMe-oF
    /// requires) and all other fields zero.
    pub fn new(opcode: u8, cid: u16, nsid: u32) -> Self {
        Self {
            opcode,
            flags: SqeFlags::new().with_psdt(psdt::SGL_MPTR_CONTIG),
            cid: cid.into(),
            nsid: nsid.into(),
            ..Default::default()
        }
    }
    pub fn fuse(&self) -> u8 {
        self.flags.fuse()
    }
    pub fn psdt(&self) -> u8 {
        self.flags.psdt()
    }
    /// Fabrics command type (byte 4), meaningful when `opcode == FABRICS`.
    pub fn fctype(&self) -> u8 {
        self.nsid.get() as u8
    }
    pub fn is_fabrics(&self) -> bool {
        self.opcode == admin_opc::FABRICS
    }
    /// Starting LBA of an NVM read/write/write zeroes/compare (CDW11:CDW10).
    pub fn slba(&self) -> u64 {
        (self.cdw11.get() as u64) << 32 | self.cdw10.get() as u64
    }
    /// Number of logical blocks, converted from the 0-based NLB in CDW12 bits 15:0.
    pub fn nlb(&self) -> u32 {
        (self.cdw12.get() & 0xffff) + 1
    }
    /// Sets SLBA and the 0-based NLB from a block count (1..=65536) of an NVM command.
    pub fn set_lba_range(&mut self, slba: u64, blocks: u32) {
        self.cdw10.set(slba as u32);
        self.cdw11.set((slba >> 32) as u32);
        self.cdw12
            .set((self.cdw12.get() & !0xffff) | (blocks.saturating_sub(1) & 0xffff));
    }
}

/// A completion queue entry (16 bytes): command specific DW0/DW1, SQ head pointer, SQ id,
/// command id, and the status field (phase tag in bit 0, [`Status`] in bits 15:1; see
/// [`Cqe::status`] and [`Cqe::phase`]).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct Cqe {
    pub dw0: U32,
    pub dw1: U32,
    pub sqhd: U16,
    pub sqid: U16,
    pub cid: U16,
    /// Status field: phase tag (bit 0) and status (bits 15:1).
    pub sf: U16,
}

impl Cqe {
    /// A completion of `cid` with `status` and zero DW0/DW1/SQHD.
    pub fn new(cid: u16, status: Status) -> Self {
        let mut c = Self {
            cid: cid.into(),
            ..Default::default()
        };
        c.set_status(status);
        c
    }
    /// The completion status (without the phase tag).
    pub fn status(&self) -> Status {
        Status(self.sf.get() >> 1)
    }
    /// Sets the status, keeping the phase tag.
    pub fn set_status(&mut self, status: Status) {
        self.sf.set((status.0 << 1) | (self.sf.get() & 1));
    }
    /// The phase tag.
    pub fn phase(&self) -> bool {
        self.sf.get() & 1 != 0
    }
    /// Sets the phase tag, keeping the status.
    pub fn set_phase(&mut self, phase: bool) {
        self.sf.set((self.sf.get() & !1) | phase as u16);
    }
    /// The 64-bit result of a Property Get (DW1:DW0).
    pub fn result64(&self) -> u64 {
        (self.dw1.get() as u64) << 32 | self.dw0.get() as u64
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
            nsid: sqe.nsid.get(),
            cns: sqe.cdw10.get() as u8,
            cntid: (sqe.cdw10 >> 16).get() as u16,
            csi: (sqe.cdw11 >> 24).get() as u8,
        }
    }
    /// The SQE (data of 4096 bytes described by `sgl`).
    pub fn to_sqe(&self, cid: u16, sgl: SglDescriptor) -> Sqe {
        let mut s = Sqe::new(admin_opc::IDENTIFY, cid, self.nsid);
        s.dptr = sgl;
        s.cdw10 = (self.cns as u32 | (self.cntid as u32) << 16).into();
        s.cdw11 = ((self.csi as u32) << 24).into();
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
            nsid: sqe.nsid.get(),
            lid: sqe.cdw10.get() as u8,
            lsp: ((sqe.cdw10 >> 8) & 0x7f).get() as u8,
            rae: sqe.cdw10 & (1 << 15) != 0,
            numd: ((sqe.cdw10 >> 16) | (sqe.cdw11 & 0xffff) << 16).get(),
            offset: ((sqe.cdw13).get() as u64) << 32 | sqe.cdw12.get() as u64,
            lsi: (sqe.cdw11 >> 16).get() as u16,
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
        s.cdw10 = (self.lid as u32
            | ((self.lsp & 0x7f) as u32) << 8
            | (self.rae as u32) << 15
            | (self.numd & 0xffff) << 16)
            .into();
        s.cdw11 = (self.numd >> 16 | (self.lsi as u32) << 16).into();
        s.cdw12 = (self.offset as u32).into();
        s.cdw13 = ((self.offset >> 32) as u32).into();
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
            nsid: sqe.nsid.get(),
            fid: sqe.cdw10.get() as u8,
            sel: ((sqe.cdw10 >> 8) & 0x7).get() as u8,
            save: sqe.cdw10 & (1 << 31) != 0,
            cdw11: sqe.cdw11.get(),
        }
    }
    pub fn to_sqe(&self, opcode: u8, cid: u16) -> Sqe {
        let mut s = Sqe::new(opcode, cid, self.nsid);
        s.cdw10 =
            (self.fid as u32 | ((self.sel & 0x7) as u32) << 8 | (self.save as u32) << 31).into();
        s.cdw11 = self.cdw11.into();
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

/// A Dataset Management range (16 bytes); the command's data is NR + 1 of these.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct DsmRange {
    pub context_attributes: U32,
    pub nlb: U32,
    pub slba: U64,
}

wire_layout!(DsmRange = 16);

assert_offsets!(DsmRange;
    context_attributes 0, nlb 4, slba 8,
);

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
        s.cdw10 = (nr.saturating_sub(1) as u32 & 0xff).into();
        s.cdw11 = attributes.into();
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
