//! One I/O request and what describes it: its type, its status (and NVMe status), the `BdevIo` and the sink it completes to.

use super::range_lock;
use crate::buf::IoBuf;
use std::time::Instant;

/// The kinds of I/O a bdev may support.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IoType {
    Read,
    Write,
    Flush,
    Unmap,
    WriteZeroes,
    Reset,
    /// Compare the data in `bufs` with the blocks (NVMe Compare): `Miscompare` if they
    /// differ. Modules may implement it; the layer falls back to read + compare.
    Compare,
    /// Atomically compare the blocks with the first `num_blocks` of data in `bufs` and,
    /// if equal, write the second `num_blocks` (NVMe fused Compare and Write); the split
    /// falls on a buffer boundary. Modules may implement it; the layer falls back to a
    /// range lock on every channel of the bdev (see `compare.rs`).
    CompareAndWrite,
}

impl IoType {
    /// Number of I/O types (array sizes of per-type statistics).
    pub const COUNT: usize = 8;

    /// The basic types (what a module answering everything itself supports; compare and
    /// compare-and-write are native only where a module says so).
    pub const ALL: [IoType; 6] = [
        IoType::Read,
        IoType::Write,
        IoType::Flush,
        IoType::Unmap,
        IoType::WriteZeroes,
        IoType::Reset,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    /// SPDK's name (as in `supported_io_types` and `bdev_error_inject_error`).
    pub fn name(self) -> &'static str {
        match self {
            IoType::Read => "read",
            IoType::Write => "write",
            IoType::Flush => "flush",
            IoType::Unmap => "unmap",
            IoType::WriteZeroes => "write_zeroes",
            IoType::Reset => "reset",
            IoType::Compare => "compare",
            IoType::CompareAndWrite => "compare_and_write",
        }
    }

    /// Read, write and the compares move data through the scatter list; the others carry
    /// none.
    pub fn carries_data(self) -> bool {
        matches!(
            self,
            IoType::Read | IoType::Write | IoType::Compare | IoType::CompareAndWrite
        )
    }

    /// Whether the I/O changes blocks (what a range lock holds back).
    pub fn modifies_blocks(self) -> bool {
        matches!(
            self,
            IoType::Write | IoType::WriteZeroes | IoType::Unmap | IoType::CompareAndWrite
        )
    }

    /// Compare and compare-and-write (the layer implements them when the module does not).
    pub fn is_compare(self) -> bool {
        matches!(self, IoType::Compare | IoType::CompareAndWrite)
    }

    /// Whether the I/O addresses a block range that must lie inside the bdev.
    pub fn has_range(self) -> bool {
        matches!(
            self,
            IoType::Read
                | IoType::Write
                | IoType::Unmap
                | IoType::WriteZeroes
                | IoType::Compare
                | IoType::CompareAndWrite
        )
    }
}

/// A set of supported I/O types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IoTypes(u8);

impl IoTypes {
    pub fn of(types: &[IoType]) -> Self {
        Self(types.iter().fold(0, |m, t| m | 1 << t.index()))
    }
    pub fn contains(self, t: IoType) -> bool {
        self.0 & (1 << t.index()) != 0
    }
    /// The set without `t`.
    pub fn without(self, t: IoType) -> Self {
        Self(self.0 & !(1 << t.index()))
    }
}

/// How an I/O ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoStatus {
    /// Not completed yet (the state of an I/O inside the layer).
    Pending,
    Success,
    /// Generic failure of the device.
    Failed,
    /// The medium could not deliver or store the data.
    MediaError,
    /// The block range lies (partly) outside the bdev, or offset + length overflows.
    InvalidLbaRange,
    /// The request is malformed (scatter list size differs from the length, zero length).
    InvalidRequest,
    /// The bdev does not support this I/O type.
    Unsupported,
    /// The I/O was aborted (reset, or the bdev was removed before it was submitted).
    Aborted,
    /// Out of resources: retry later. The channel retries it; users never see it.
    NoMem,
    /// Compare or compare-and-write: the data differ (nothing was written).
    Miscompare,
}

/// An NVMe status: status code type, status code, and whether the host should not retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NvmeStatus {
    pub sct: u8,
    pub sc: u8,
    pub dnr: bool,
}

impl IoStatus {
    pub fn is_success(self) -> bool {
        self == IoStatus::Success
    }

    /// The NVMe status a target answers for this completion (NVMe base spec, Generic and
    /// Media and Data Integrity status codes).
    pub fn nvme(self) -> NvmeStatus {
        let (sct, sc, dnr) = match self {
            IoStatus::Success => (0, 0x00, false),
            IoStatus::Unsupported => (0, 0x01, true), // Invalid Command Opcode
            IoStatus::InvalidRequest => (0, 0x02, true), // Invalid Field in Command
            IoStatus::Failed | IoStatus::Pending => (0, 0x06, false), // Internal Error
            IoStatus::Aborted => (0, 0x07, false),    // Command Abort Requested
            IoStatus::InvalidLbaRange => (0, 0x80, true), // LBA Out of Range
            IoStatus::NoMem => (0, 0x82, false),      // Namespace Not Ready (retry)
            IoStatus::MediaError => (2, 0x81, false), // Unrecovered Read Error
            IoStatus::Miscompare => (2, 0x85, false), // Compare Failure
        };
        NvmeStatus { sct, sc, dnr }
    }
}

/// The data of a zero-copy read: `len` bytes at `off` of memory the bdev shares (a malloc
/// region). The memory may be rewritten by a concurrent write to the same blocks before it is
/// sent (the data is then torn, as on a disk); it is only ever handed to the kernel as an
/// iovec, never read through a Rust reference (see `buf::SharedBytes`).
pub struct SharedRange {
    pub mem: std::sync::Arc<dyn crate::buf::SharedBytes>,
    pub off: usize,
    pub len: usize,
}

impl std::fmt::Debug for SharedRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SharedRange({}+{})", self.off, self.len)
    }
}

/// One I/O request. The caller owns it (and its buffers) between I/Os and reuses it; the
/// layer takes it by value on submit and gives it back on completion.
#[derive(Debug)]
pub struct BdevIo {
    pub io_type: IoType,
    pub offset_blocks: u64,
    pub num_blocks: u64,
    /// Scatter list. For read and write the lengths must add up to exactly
    /// `num_blocks * block_size`; other types ignore it (it travels back unchanged).
    pub bufs: Vec<IoBuf>,
    /// The caller's tag, returned untouched.
    pub token: u64,
    /// Reads only: the submitter can take the data as a range of the bdev's shared memory
    /// ([`SharedRange`]) instead of in `bufs` (which are then left untouched). A layer that
    /// must see or change read data (error injection) clears it before passing the I/O on.
    pub accept_shared: bool,
    /// Set by a bdev that served a read with `accept_shared` from its shared memory.
    pub shared: Option<SharedRange>,
    pub(super) status: IoStatus,
    /// Submission times, one per bdev layer the I/O passed (stacked bdevs).
    pub(super) stamps: [Option<Instant>; MAX_STACK],
    pub(super) depth: u8,
    /// Range-lock bookkeeping of a block-modifying I/O (see `range_lock`).
    pub(super) lock: range_lock::IoMark,
}

/// Stacked bdev layers whose latency is timed separately.
const MAX_STACK: usize = 4;

impl BdevIo {
    pub fn new(io_type: IoType, offset_blocks: u64, num_blocks: u64) -> Self {
        Self {
            io_type,
            offset_blocks,
            num_blocks,
            bufs: Vec::new(),
            token: 0,
            accept_shared: false,
            shared: None,
            status: IoStatus::Pending,
            stamps: [None; MAX_STACK],
            depth: 0,
            lock: range_lock::IoMark::default(),
        }
    }

    pub fn with_bufs(mut self, bufs: Vec<IoBuf>) -> Self {
        self.bufs = bufs;
        self
    }

    pub fn with_token(mut self, token: u64) -> Self {
        self.token = token;
        self
    }

    /// Re-targets a reused request.
    pub fn reset_to(&mut self, io_type: IoType, offset_blocks: u64, num_blocks: u64) {
        self.io_type = io_type;
        self.offset_blocks = offset_blocks;
        self.num_blocks = num_blocks;
        self.status = IoStatus::Pending;
        self.accept_shared = false;
        self.shared = None;
    }

    /// The completion status (`Pending` until completed).
    pub fn status(&self) -> IoStatus {
        self.status
    }

    /// Total bytes of the scatter list.
    pub fn buf_len(&self) -> usize {
        self.bufs.iter().map(|b| b.len()).sum()
    }

    /// When the outermost bdev accepted it (latency accounting; reactor-loop granularity,
    /// see [`ChannelCore::clock`]).
    pub fn submitted_at(&self) -> Option<Instant> {
        self.stamps[0]
    }

    pub(super) fn enter_layer(&mut self, now: Instant) {
        let d = self.depth as usize;
        if d < MAX_STACK {
            self.stamps[d] = Some(now);
        }
        self.depth = self.depth.saturating_add(1);
    }

    /// Leaves the innermost layer, returning its latency in ns.
    pub(super) fn leave_layer(&mut self, now: Instant) -> u64 {
        self.depth = self.depth.saturating_sub(1);
        let d = (self.depth as usize).min(MAX_STACK - 1);
        self.stamps[d].map_or(0, |t| now.saturating_duration_since(t).as_nanos() as u64)
    }
}

/// Where a channel's completions go: registered once per channel, shared by `Rc`.
pub trait IoSink {
    /// Called on the channel's reactor, exactly once per submitted I/O, never from inside
    /// `IoChannel::submit`. The sink may submit new I/O from here.
    fn io_done(&self, io: BdevIo);
}
