//! The block device layer.
//!
//! A module (malloc, null, uring, aio, delay, error, passthru) implements [`Bdev`];
//! [`register`] publishes it under a unique name (and aliases) in a registry that lives on
//! the main reactor and is pushed to every other reactor by message, so [`lookup`] and
//! [`open`] work on any reactor without locks on the data path. A user opens a [`Desc`] (with
//! an event callback for hot remove and resize), may [`Desc::claim`] it exclusively, and
//! opens an [`IoChannel`] per reactor: I/O is submitted and completed on that reactor only. A
//! [`BdevIo`] carries offset/length in blocks, a scatter list of owned [`IoBuf`]s and a
//! caller token; it is moved in on submit and handed back whole on completion to the
//! [`IoSink`] registered once at channel open, so steady-state I/O allocates nothing.
//! **Completion rule:** a completion is never delivered inside `IoChannel::submit` (a module
//! completing synchronously, or a rejected I/O, is queued and delivered from the channel's
//! poller on the same reactor); every I/O is delivered exactly once, also after the channel
//! was closed. Out-of-range I/O (LBA + count overflow included), unsupported types and
//! scatter lists whose size does not match the length are rejected before reaching a module.
//! `NoMem` from a module is never shown to the user: the channel retries it when another I/O
//! completes or on its next poll. [`IoStatus::nvme`] maps statuses to NVMe SCT/SC for the
//! NVMe-oF target. Deleting a bdev with users is allowed ([`unregister`]): it disappears from
//! lookups, every descriptor gets [`BdevEvent::Remove`] on its reactor, in-flight I/O
//! completes normally, new I/O fails with `Aborted`, and once the last descriptor closes the
//! module's `destruct` runs and the deletion completes.
//!
//! For a frontend such as the NVMe-oF target: on the main reactor, `open(name, on_event)`
//! and `claim("nvmf")` when a namespace is added (`on_event(Remove)` → remove the
//! namespace, drop its channels, then the `Desc`); on each poll-group reactor, open one
//! `IoChannel` per namespace with a sink (`Rc<dyn IoSink>`) shared by that reactor's qpairs,
//! keep a pool of `BdevIo`s whose `token` names the request (qpair slot, command id), move a
//! `BdevIo` into `submit` with `IoBuf`s for the data, and in `io_done` map `io.status().nvme()`
//! into the CQE and recycle the `BdevIo` and its buffers. A sink may submit again from
//! `io_done`. Latency in iostat is timed per layer (stacked bdevs: each layer from its own
//! submit). Read data of a malloc bdev can later be sent without a copy through
//! `handle.module_as::<malloc::MallocBdev>()` and its `Arc`'d `MallocRegion`.
//!
//! **Cost per object** (measured by bench/scale.sh, one reactor): a registered null bdev
//! ~0.8 KiB in all (its handle, info and statistics of closed channels, ~300 B while it has
//! seen no I/O, plus one name entry per reactor); a malloc bdev that much beyond its data.
//! An [`IoChannel`] costs ~1 KiB while idle (its queues start empty and grow to the depth
//! the I/O needs; its latency histograms, ~62 KiB, come with its first read or write):
//! users open channels only while they do I/O (the NVMe-oF target: while an I/O queue of
//! the namespace's subsystem is connected on that reactor).

pub mod aio;
pub mod compare;
pub mod delay;
pub mod error;
pub mod histogram;
pub mod iostat;
pub mod malloc;
pub mod null;
pub mod passthru;
pub mod qos;
pub mod range_lock;
pub mod rbd;
pub mod rpc;
pub mod split;
pub mod stack;
pub mod uring;
pub mod util;

#[cfg(test)]
mod tests;

use crate::buf::IoBuf;
use crate::reactor::{self, PollStatus, PollerHandle};
use iostat::IoStats;
use serde_json::Value;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub use util::{parse_uuid, random_uuid};

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
    status: IoStatus,
    /// Submission times, one per bdev layer the I/O passed (stacked bdevs).
    stamps: [Option<Instant>; MAX_STACK],
    depth: u8,
    /// Range-lock bookkeeping of a block-modifying I/O (see `range_lock`).
    lock: range_lock::IoMark,
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

    fn enter_layer(&mut self, now: Instant) {
        let d = self.depth as usize;
        if d < MAX_STACK {
            self.stamps[d] = Some(now);
        }
        self.depth = self.depth.saturating_add(1);
    }

    /// Leaves the innermost layer, returning its latency in ns.
    fn leave_layer(&mut self, now: Instant) -> u64 {
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

/// Events a descriptor's owner is told about, on the reactor it opened the descriptor on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BdevEvent {
    /// The bdev is being deleted: close channels and the descriptor.
    Remove,
    /// The block count changed.
    Resize,
}

#[derive(Debug, thiserror::Error)]
pub enum BdevError {
    #[error("bdev {0} not found")]
    NotFound(String),
    #[error("bdev name {0} already exists")]
    Exists(String),
    #[error("bdev {name} already claimed by module {module}")]
    Claimed { name: String, module: String },
    #[error("bdev {0} is being removed")]
    Removing(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl BdevError {
    /// The errno SPDK answers for this error.
    pub fn errno(&self) -> i32 {
        match self {
            BdevError::NotFound(_) => libc::ENODEV,
            BdevError::Exists(_) => libc::EEXIST,
            BdevError::Claimed { .. } => libc::EPERM,
            BdevError::Removing(_) => libc::EBUSY,
            BdevError::Invalid(_) => libc::EINVAL,
            BdevError::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
        }
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        BdevError::Io {
            context: context.into(),
            source,
        }
    }
}

/// The properties of a bdev, fixed at registration (except the block count, which a
/// resize changes).
#[derive(Debug)]
pub struct BdevInfo {
    pub name: String,
    pub aliases: Vec<String>,
    pub uuid: uuid::Uuid,
    pub block_size: u32,
    num_blocks: AtomicU64,
    pub io_types: IoTypes,
    /// Blocks; 0 = no boundary.
    pub optimal_io_boundary: u32,
    pub product_name: &'static str,
}

impl BdevInfo {
    pub fn new(
        name: impl Into<String>,
        product_name: &'static str,
        block_size: u32,
        num_blocks: u64,
        io_types: IoTypes,
    ) -> Self {
        Self {
            name: name.into(),
            aliases: Vec::new(),
            uuid: random_uuid(),
            block_size,
            num_blocks: AtomicU64::new(num_blocks),
            io_types,
            optimal_io_boundary: 0,
            product_name,
        }
    }

    pub fn num_blocks(&self) -> u64 {
        self.num_blocks.load(Ordering::Relaxed)
    }
}

/// A module's implementation of one bdev. Shared by all reactors (`Send + Sync`); its
/// per-reactor state lives in the [`ModuleChannel`]s it opens.
pub trait Bdev: Send + Sync + 'static {
    /// Opens this reactor's channel (called on the reactor that will use it).
    /// `done` completes this channel's I/O (modules stacked on a base keep it for the
    /// base's completions).
    fn open_channel(
        &self,
        bdev: &BdevHandle,
        done: &Completer,
    ) -> Result<Box<dyn ModuleChannel>, BdevError>;
    /// Module-specific fields of `bdev_get_bdevs`.
    fn driver_specific(&self) -> Value {
        Value::Object(Default::default())
    }
    /// The `{"method","params"}` call that recreates this bdev, if it has one.
    fn config(&self, info: &BdevInfo) -> Option<Value>;
    /// Runs on the main reactor once the bdev is unregistered and its last descriptor is
    /// closed (release base descriptors, module bookkeeping).
    fn destruct(&self) {}
    /// For module-specific RPCs (`bdev_null_resize`, `bdev_error_inject_error`, deletes).
    fn as_any(&self) -> &dyn std::any::Any;
}

/// A module's per-reactor I/O path.
pub trait ModuleChannel {
    /// Starts `io` (already validated). Complete it through `done`, now or later; a
    /// completion made during `submit` or `poll` is queued and delivered after it returns.
    fn submit(&mut self, io: BdevIo, done: &Completer);
    /// Reaps completions (rings, timers). Called every loop by the channel's poller.
    fn poll(&mut self, _done: &Completer) -> usize {
        0
    }
    /// Whether `poll` does anything. A module that completes every I/O from `submit` (or
    /// through another channel) answers false, and its channel's poller then costs next
    /// to nothing in loops with no completion to deliver. Asked once, when the channel opens.
    fn needs_poll(&self) -> bool {
        true
    }
}

// ---------------------------------------------------------------------------------------------
// Registered bdevs and the registry

struct Opener {
    id: u64,
    core: u32,
    on_event: Option<Box<dyn FnMut(BdevEvent) + Send>>,
}

/// Called when an unregistration finished.
type UnregisterDone = Box<dyn FnOnce(Result<(), BdevError>) + Send>;

#[derive(Default)]
struct Control {
    descs: Vec<Opener>,
    claim: Option<(u64, String)>,
    next_desc: u64,
    waiters: Vec<UnregisterDone>,
    finished: bool,
}

/// A registered bdev: its properties, its module implementation, its descriptors.
pub struct BdevHandleInner {
    pub info: BdevInfo,
    pub module: Box<dyn Bdev>,
    removed: AtomicBool,
    control: Mutex<Control>,
    closed_stats: Mutex<IoStats>,
    main_core: u32,
    /// Rate limits (`bdev_set_qos_limit`); channels hold a copy, pushed on change.
    qos: Mutex<Option<Arc<qos::Qos>>>,
    /// While the latency histogram is enabled: its configuration and the counts of
    /// channels already closed.
    histogram: Mutex<Option<histogram::Histogram>>,
    /// Block ranges locked by compare-and-write fallbacks (control path only).
    range_locks: Mutex<range_lock::BdevLocks>,
}

/// A reference to a registered bdev (cheap to clone, usable on any reactor).
pub type BdevHandle = Arc<BdevHandleInner>;

impl BdevHandleInner {
    pub fn name(&self) -> &str {
        &self.info.name
    }
    pub fn block_size(&self) -> u32 {
        self.info.block_size
    }
    pub fn num_blocks(&self) -> u64 {
        self.info.num_blocks()
    }
    pub fn supports(&self, t: IoType) -> bool {
        self.info.io_types.contains(t)
    }
    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }
    /// The module implementation as its concrete type, if it is a `T`.
    pub fn module_as<T: 'static>(&self) -> Option<&T> {
        self.module.as_any().downcast_ref::<T>()
    }
    /// The module holding the exclusive claim, if any.
    pub fn claimed_by(&self) -> Option<String> {
        self.lock().claim.as_ref().map(|(_, m)| m.clone())
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, Control> {
        self.control.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the block count and tells every descriptor (`BdevEvent::Resize`).
    pub fn resize(self: &Arc<Self>, num_blocks: u64) {
        self.info.num_blocks.store(num_blocks, Ordering::Relaxed);
        let targets: Vec<(u64, u32)> = self.lock().descs.iter().map(|d| (d.id, d.core)).collect();
        for (id, core) in targets {
            let me = self.clone();
            reactor::send_to(core, move || me.deliver_event(id, BdevEvent::Resize));
        }
    }

    fn deliver_event(&self, id: u64, event: BdevEvent) {
        let cb = {
            let mut c = self.lock();
            c.descs
                .iter_mut()
                .find(|d| d.id == id)
                .and_then(|d| d.on_event.take())
        };
        let Some(mut cb) = cb else { return };
        cb(event);
        if event != BdevEvent::Remove {
            if let Some(d) = self.lock().descs.iter_mut().find(|d| d.id == id) {
                d.on_event = Some(cb);
            }
        }
    }

    /// The rate limits in force (all 0: none).
    pub fn qos_limits(&self) -> qos::QosLimits {
        self.qos().map(|q| q.limits()).unwrap_or_default()
    }

    /// The latency histogram's configuration while it is enabled.
    pub fn histogram_config(&self) -> Option<histogram::HistConfig> {
        self.histogram_lock().as_ref().map(|h| h.config())
    }

    fn histogram_lock(&self) -> std::sync::MutexGuard<'_, Option<histogram::Histogram>> {
        self.histogram.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn qos(&self) -> Option<Arc<qos::Qos>> {
        self.qos.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Statistics of channels already closed.
    fn closed_stats(&self) -> std::sync::MutexGuard<'_, IoStats> {
        self.closed_stats.lock().unwrap_or_else(|e| e.into_inner())
    }
}

thread_local! {
    /// Name and alias → bdev, on every reactor.
    static LOCAL: RefCell<HashMap<String, BdevHandle>> = RefCell::new(HashMap::new());
    /// Registration order (main reactor only): listing and config.
    static ORDER: RefCell<Vec<BdevHandle>> = const { RefCell::new(Vec::new()) };
    /// This reactor's open channels, for iostat.
    static CHANNELS: RefCell<Vec<Weak<ChannelShared>>> = const { RefCell::new(Vec::new()) };
}

/// Registers a bdev (main reactor only). `done` runs on the main reactor once every reactor
/// can look it up.
pub fn register(
    info: BdevInfo,
    module: Box<dyn Bdev>,
    done: impl FnOnce(Result<BdevHandle, BdevError>) + Send + 'static,
) {
    if !reactor::is_main_reactor() {
        return done(Err(BdevError::Invalid(
            "bdevs are registered on the main reactor".into(),
        )));
    }
    if info.name.is_empty() {
        return done(Err(BdevError::Invalid("bdev name is empty".into())));
    }
    if info.block_size == 0 {
        return done(Err(BdevError::Invalid("block size is 0".into())));
    }
    let names: Vec<String> = std::iter::once(info.name.clone())
        .chain(info.aliases.iter().cloned())
        .collect();
    let taken = LOCAL.with(|l| {
        let l = l.borrow();
        names.iter().find(|n| l.contains_key(*n)).cloned()
    });
    if let Some(n) = taken {
        return done(Err(BdevError::Exists(n)));
    }
    let handle: BdevHandle = Arc::new(BdevHandleInner {
        info,
        module,
        removed: AtomicBool::new(false),
        control: Mutex::new(Control::default()),
        closed_stats: Mutex::new(IoStats::new()),
        main_core: reactor::current_core().unwrap_or(0),
        qos: Mutex::new(None),
        histogram: Mutex::new(None),
        range_locks: Mutex::new(range_lock::BdevLocks::default()),
    });
    ORDER.with(|o| o.borrow_mut().push(handle.clone()));
    let h = handle.clone();
    reactor::for_each_reactor(
        move || {
            LOCAL.with(|l| {
                let mut l = l.borrow_mut();
                for n in &names {
                    l.insert(n.clone(), h.clone());
                }
            })
        },
        move || done(Ok(handle)),
    );
}

/// Drops this application's registry on every reactor (a shutdown hook, registered by
/// `rpc::register`), so no bdev outlives its reactors in thread-local teardown.
pub(crate) fn clear_registry(done: Box<dyn FnOnce() + Send>) {
    reactor::for_each_reactor(
        || {
            let local = LOCAL.with(|l| std::mem::take(&mut *l.borrow_mut()));
            let order = ORDER.with(|o| std::mem::take(&mut *o.borrow_mut()));
            drop(order);
            drop(local);
        },
        done,
    );
}

/// Finds a bdev by name or alias on the current reactor.
pub fn lookup(name: &str) -> Option<BdevHandle> {
    LOCAL.with(|l| l.borrow().get(name).cloned())
}

/// Every registered bdev in registration order (main reactor).
pub fn list() -> Vec<BdevHandle> {
    ORDER.with(|o| o.borrow().clone())
}

/// Deletes a bdev (main reactor), SPDK-style hot remove: it leaves the registry now, every
/// descriptor is told `BdevEvent::Remove`, and `done` runs (on the main reactor) once the
/// last descriptor closed and the module's `destruct` ran.
pub fn unregister(name: &str, done: impl FnOnce(Result<(), BdevError>) + Send + 'static) {
    let Some(handle) = lookup(name) else {
        return done(Err(BdevError::NotFound(name.to_string())));
    };
    if handle.removed.swap(true, Ordering::AcqRel) {
        handle.lock().waiters.push(Box::new(done));
        return;
    }
    ORDER.with(|o| o.borrow_mut().retain(|b| !Arc::ptr_eq(b, &handle)));
    let names: Vec<String> = std::iter::once(handle.info.name.clone())
        .chain(handle.info.aliases.iter().cloned())
        .collect();
    handle.lock().waiters.push(Box::new(done));
    let h = handle.clone();
    reactor::for_each_reactor(
        move || {
            LOCAL.with(|l| {
                let mut l = l.borrow_mut();
                for n in &names {
                    if l.get(n).is_some_and(|b| Arc::ptr_eq(b, &h)) {
                        l.remove(n);
                    }
                }
            })
        },
        move || {
            let targets: Vec<(u64, u32)> =
                handle.lock().descs.iter().map(|d| (d.id, d.core)).collect();
            if targets.is_empty() {
                finish_unregister(&handle);
            }
            for (id, core) in targets {
                let me = handle.clone();
                reactor::send_to(core, move || me.deliver_event(id, BdevEvent::Remove));
            }
        },
    );
}

fn finish_unregister(handle: &BdevHandle) {
    let waiters = {
        let mut c = handle.lock();
        if c.finished || !c.descs.is_empty() {
            return;
        }
        c.finished = true;
        std::mem::take(&mut c.waiters)
    };
    handle.module.destruct();
    tracing::debug!(bdev = %handle.info.name, "bdev unregistered");
    for w in waiters {
        w(Ok(()));
    }
}

// ---------------------------------------------------------------------------------------------
// Descriptors

/// An open bdev. Dropping it closes it (on any reactor).
pub struct Desc {
    handle: BdevHandle,
    id: u64,
}

/// Opens a bdev by name or alias on the current reactor. `on_event` runs on this reactor
/// for hot remove and resize.
pub fn open(
    name: &str,
    on_event: impl FnMut(BdevEvent) + Send + 'static,
) -> Result<Desc, BdevError> {
    let handle = lookup(name).ok_or_else(|| BdevError::NotFound(name.to_string()))?;
    open_handle(&handle, on_event)
}

/// Opens an already looked-up bdev.
pub fn open_handle(
    handle: &BdevHandle,
    on_event: impl FnMut(BdevEvent) + Send + 'static,
) -> Result<Desc, BdevError> {
    let core = reactor::current_core()
        .ok_or_else(|| BdevError::Invalid("bdevs are opened on a reactor".into()))?;
    let mut c = handle.lock();
    if handle.is_removed() {
        return Err(BdevError::Removing(handle.info.name.clone()));
    }
    c.next_desc += 1;
    let id = c.next_desc;
    c.descs.push(Opener {
        id,
        core,
        on_event: Some(Box::new(on_event)),
    });
    Ok(Desc {
        handle: handle.clone(),
        id,
    })
}

impl Desc {
    pub fn bdev(&self) -> &BdevHandle {
        &self.handle
    }

    /// Claims the bdev exclusively for `module`; a second claim is refused.
    pub fn claim(&self, module: &str) -> Result<(), BdevError> {
        let mut c = self.handle.lock();
        match &c.claim {
            Some((id, _)) if *id == self.id => Ok(()),
            Some((_, by)) => Err(BdevError::Claimed {
                name: self.handle.info.name.clone(),
                module: by.clone(),
            }),
            None => {
                c.claim = Some((self.id, module.to_string()));
                Ok(())
            }
        }
    }

    /// Opens this reactor's I/O channel; completions go to `sink`.
    pub fn open_channel(&self, sink: Rc<dyn IoSink>) -> Result<IoChannel, BdevError> {
        IoChannel::open(&self.handle, sink)
    }
}

impl Drop for Desc {
    fn drop(&mut self) {
        let finish = {
            let mut c = self.handle.lock();
            c.descs.retain(|d| d.id != self.id);
            if c.claim.as_ref().is_some_and(|(id, _)| *id == self.id) {
                c.claim = None;
            }
            self.handle.is_removed() && c.descs.is_empty() && !c.finished
        };
        if finish {
            let h = self.handle.clone();
            if reactor::current_core().is_some() {
                reactor::send_to(self.handle.main_core, move || finish_unregister(&h));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Channels

struct ChannelCore {
    sink: Rc<dyn IoSink>,
    block_size: u64,
    /// Completions waiting for delivery outside submit/poll.
    ready: RefCell<VecDeque<BdevIo>>,
    /// I/O a module answered NoMem, to resubmit.
    nomem: RefCell<VecDeque<BdevIo>>,
    /// >0 while the module is executing (submit or poll): completions are queued.
    in_module: Cell<u32>,
    /// Submitted and not yet delivered.
    outstanding: Cell<usize>,
    stats: RefCell<IoStats>,
    /// This channel's latency histogram while the bdev's is enabled.
    histogram: RefCell<Option<Box<histogram::Histogram>>>,
    /// A channel whose module needs no poll has no poller of its own: it is put on this
    /// reactor's list of channels with work (see `Pending`) when a completion or retry is
    /// queued, and polled from there. `scheduled`: it is on that list; `owner`: the channel.
    own_poller: bool,
    scheduled: Cell<bool>,
    owner: RefCell<Weak<ChannelShared>>,
    /// Range locks on this channel and the writes they hold back (see `range_lock`).
    locks: range_lock::ChannelLocks,
}

/// A module's handle for completing I/O of one channel.
#[derive(Clone)]
pub struct Completer(Rc<ChannelCore>);

impl Completer {
    /// Completes `io` with `status`. `NoMem` queues it for a retry instead.
    pub fn complete(&self, mut io: BdevIo, status: IoStatus) {
        let core = &self.0;
        if status == IoStatus::NoMem {
            core.nomem.borrow_mut().push_back(io);
            core.schedule();
            return;
        }
        io.status = status;
        if core.in_module.get() > 0 {
            core.ready.borrow_mut().push_back(io);
            core.schedule();
        } else {
            core.deliver(io, ChannelCore::clock());
        }
    }
}

impl ChannelCore {
    /// Puts the channel on this reactor's list of channels with work, unless it has a
    /// poller of its own or is on the list already.
    fn schedule(&self) {
        if self.own_poller || self.scheduled.get() {
            return;
        }
        if let Some(ch) = self.owner.borrow().upgrade() {
            // (Not during the thread's teardown, when the list is gone.)
            let queued = PENDING.try_with(|p| p.borrow_mut().push(ch)).is_ok();
            self.scheduled.set(queued);
        }
    }

    /// The time stamp of I/O submitted or completed now: the start of the current reactor
    /// loop (`reactor::now()`, no clock read; the clock itself off a reactor). Reading the
    /// clock per I/O cost more than a malloc bdev's whole I/O (and per batch still 7 % of a
    /// core on io_uring, whose loops are short), so latency statistics have the granularity
    /// of a reactor loop: microseconds under load, 0 for I/O that completes within the loop
    /// that submitted it (malloc, null).
    fn clock() -> Instant {
        crate::reactor::now()
    }

    /// Hands a completed I/O to the sink; `now` is the completion time (one clock read
    /// serves a whole batch of deliveries).
    fn deliver(&self, mut io: BdevIo, now: Instant) {
        self.outstanding.set(self.outstanding.get() - 1);
        self.locks.write_left(&mut io);
        let lat = io.leave_layer(now);
        if io.status == IoStatus::Success {
            let bytes = match io.io_type {
                IoType::Read | IoType::Write | IoType::Unmap | IoType::WriteZeroes => {
                    io.num_blocks.saturating_mul(self.block_size)
                }
                _ => 0,
            };
            self.stats.borrow_mut().record(io.io_type, bytes, lat);
            if let Some(h) = self.histogram.borrow_mut().as_mut() {
                h.tally(io.io_type, lat);
            }
        } else {
            self.stats.borrow_mut().record_error(io.io_type);
        }
        self.sink.io_done(io);
    }
}

struct ChannelShared {
    core: Rc<ChannelCore>,
    module: RefCell<Option<Box<dyn ModuleChannel>>>,
    bdev: BdevHandle,
    reactor_core: u32,
    poller: RefCell<Option<PollerHandle>>,
    closing: Cell<bool>,
    /// The module's `needs_poll`.
    module_polled: bool,
    /// The bdev's rate limits, if any (see `qos`), and the I/O waiting for them in order,
    /// released by the QoS poller (registered only while the bdev has limits).
    qos: RefCell<Option<Arc<qos::Qos>>>,
    qos_wait: RefCell<VecDeque<BdevIo>>,
    qos_poller: RefCell<Option<PollerHandle>>,
    /// The layer's compare / compare-and-write for a module without them (opened by the
    /// first such I/O).
    fallback: RefCell<Option<Rc<compare::Fallback>>>,
}

/// A bdev's I/O channel on one reactor. Dropping it closes it: I/O still in flight
/// completes to the sink, then the module channel is released.
pub struct IoChannel {
    shared: Rc<ChannelShared>,
}

impl IoChannel {
    pub(crate) fn open(bdev: &BdevHandle, sink: Rc<dyn IoSink>) -> Result<IoChannel, BdevError> {
        let reactor_core = reactor::current_core()
            .ok_or_else(|| BdevError::Invalid("channels are opened on a reactor".into()))?;
        if bdev.is_removed() {
            return Err(BdevError::Removing(bdev.info.name.clone()));
        }
        let core = Rc::new(ChannelCore {
            sink,
            block_size: bdev.info.block_size as u64,
            // Grown by the first I/O (then kept): an idle channel holds no queue memory.
            ready: RefCell::new(VecDeque::new()),
            nomem: RefCell::new(VecDeque::new()),
            in_module: Cell::new(0),
            outstanding: Cell::new(0),
            stats: RefCell::new(IoStats::new()),
            histogram: RefCell::new(
                bdev.histogram_config()
                    .map(|c| Box::new(histogram::Histogram::new(c))),
            ),
            own_poller: true,
            scheduled: Cell::new(false),
            owner: RefCell::new(Weak::new()),
            locks: range_lock::ChannelLocks::new(bdev),
        });
        let module = bdev.module.open_channel(bdev, &Completer(core.clone()))?;
        let module_polled = module.needs_poll();
        let mut core = core;
        if !module_polled {
            // Only this function holds the core yet (the module keeps no completer of a
            // module that needs no poll; if it did, the channel keeps a poller of its own).
            if let Some(c) = Rc::get_mut(&mut core) {
                c.own_poller = false;
            }
        }
        let own_poller = core.own_poller;
        let shared = Rc::new(ChannelShared {
            core,
            module: RefCell::new(Some(module)),
            bdev: bdev.clone(),
            reactor_core,
            poller: RefCell::new(None),
            closing: Cell::new(false),
            module_polled,
            qos: RefCell::new(None),
            qos_wait: RefCell::new(VecDeque::new()),
            qos_poller: RefCell::new(None),
            fallback: RefCell::new(None),
        });
        *shared.core.owner.borrow_mut() = Rc::downgrade(&shared);
        shared.set_qos(bdev.qos());
        if own_poller {
            // The poller owns the channel: it outlives the handle until in-flight I/O is done.
            let polled = shared.clone();
            let poller = reactor::register_poller(
                format!("bdev_channel_{}", bdev.info.name),
                0,
                move || polled.poll(),
            );
            *shared.poller.borrow_mut() = Some(poller);
        } else {
            // Polled from this reactor's list of channels with work, which owns a closing
            // channel until its in-flight I/O is done; an idle channel costs no poll.
            Pending::ensure_poller();
        }
        CHANNELS.with(|c| {
            let mut c = c.borrow_mut();
            // Dead entries are dropped when the list doubled since the last sweep, so that
            // opening n channels costs O(n), not O(n^2).
            if c.len() >= CHANNELS_SWEEP.get() {
                c.retain(|w| w.strong_count() > 0);
                CHANNELS_SWEEP.set((c.len() * 2).max(64));
            }
            c.push(Rc::downgrade(&shared));
        });
        Ok(IoChannel { shared })
    }

    pub fn bdev(&self) -> &BdevHandle {
        &self.shared.bdev
    }

    /// I/O submitted and not yet delivered.
    pub fn outstanding(&self) -> usize {
        self.shared.core.outstanding.get()
    }

    /// Submits `io`. Its completion arrives later at the sink (never inside this call).
    pub fn submit(&self, mut io: BdevIo) {
        let s = &self.shared;
        assert_eq!(
            reactor::current_core(),
            Some(s.reactor_core),
            "I/O is submitted on the channel's own reactor"
        );
        let core = &s.core;
        core.outstanding.set(core.outstanding.get() + 1);
        io.enter_layer(ChannelCore::clock());
        io.status = IoStatus::Pending;
        let verdict = validate(&s.bdev, &io);
        if verdict != IoStatus::Pending || s.closing.get() {
            io.status = if verdict == IoStatus::Pending {
                IoStatus::Aborted
            } else {
                verdict
            };
            core.ready.borrow_mut().push_back(io);
            core.schedule();
            return;
        }
        if io.io_type.is_compare() && !s.bdev.supports(io.io_type) {
            return compare::Fallback::submit(s, io);
        }
        s.submit_admitted(io);
    }
}

/// The checks every I/O passes before a module sees it: `Pending` means accepted.
fn validate(bdev: &BdevHandle, io: &BdevIo) -> IoStatus {
    if bdev.is_removed() {
        return IoStatus::Aborted;
    }
    if !bdev.supports(io.io_type) && !compare::Fallback::serves(bdev, io.io_type) {
        return IoStatus::Unsupported;
    }
    if io.io_type.has_range() {
        if io.num_blocks == 0 {
            return IoStatus::InvalidRequest;
        }
        match io.offset_blocks.checked_add(io.num_blocks) {
            Some(end) if end <= bdev.num_blocks() => {}
            _ => return IoStatus::InvalidLbaRange,
        }
    }
    if io.io_type.carries_data() {
        let want = io
            .num_blocks
            .checked_mul(bdev.info.block_size as u64 * compare::data_copies(io.io_type));
        if want != Some(io.buf_len() as u64) {
            return IoStatus::InvalidRequest;
        }
        if io.io_type == IoType::CompareAndWrite && compare::split_at(io).is_none() {
            return IoStatus::InvalidRequest;
        }
    }
    IoStatus::Pending
}

impl ChannelShared {
    /// Submits an accepted I/O: held back by a range lock it overlaps (block-modifying
    /// I/O), then by the rate limits, then to the module.
    fn submit_admitted(&self, mut io: BdevIo) {
        let core = &self.core;
        if io.io_type.modifies_blocks() && core.locks.holds_back(&mut io) {
            core.locks.hold(io);
            return;
        }
        if let Some(q) = self.qos.borrow().as_ref() {
            let mut wait = self.qos_wait.borrow_mut();
            if !wait.is_empty() || !q.admit(&io, core.block_size) {
                wait.push_back(io);
                return;
            }
        }
        self.submit_to_module(io);
    }

    fn submit_to_module(&self, io: BdevIo) {
        let core = &self.core;
        let completer = Completer(core.clone());
        core.in_module.set(core.in_module.get() + 1);
        match self.module.borrow_mut().as_mut() {
            Some(m) => m.submit(io, &completer),
            None => completer.complete(io, IoStatus::Aborted),
        }
        core.in_module.set(core.in_module.get() - 1);
    }

    fn poll(&self) -> PollStatus {
        let core = &self.core;
        // Fast path of a loop with nothing to do (a module completing from `submit`, no
        // completion queued, no retry, not closing): a few loads, no module call.
        if !self.module_polled
            && !self.closing.get()
            && core.ready.borrow().is_empty()
            && core.nomem.borrow().is_empty()
        {
            return PollStatus::Idle;
        }
        let mut work = 0;
        {
            let completer = Completer(core.clone());
            core.in_module.set(core.in_module.get() + 1);
            if let Some(m) = self.module.borrow_mut().as_mut() {
                work += m.poll(&completer);
            }
            core.in_module.set(core.in_module.get() - 1);
        }
        // Deliver what is ready now; completions these deliveries cause wait for the next
        // poll, so a sink resubmitting at once cannot loop here forever.
        let ready = core.ready.borrow().len();
        if ready > 0 {
            let now = ChannelCore::clock();
            for _ in 0..ready {
                let Some(io) = core.ready.borrow_mut().pop_front() else {
                    break;
                };
                core.deliver(io, now);
                work += 1;
            }
        }
        let retries = core.nomem.borrow().len();
        for _ in 0..retries {
            let Some(io) = core.nomem.borrow_mut().pop_front() else {
                break;
            };
            self.submit_to_module(io);
            work += 1;
        }
        if self.closing.get() && core.outstanding.get() == 0 {
            self.finish_close();
        }
        PollStatus::from_work(work)
    }

    /// Installs (or removes) the bdev's rate limits on this channel; without limits, I/O
    /// still waiting goes to the module at once.
    fn set_qos(self: &Rc<Self>, limits: Option<Arc<qos::Qos>>) {
        let limited = limits.is_some();
        *self.qos.borrow_mut() = limits;
        let mut poller = self.qos_poller.borrow_mut();
        if limited && poller.is_none() {
            let me = Rc::downgrade(self);
            *poller = Some(reactor::register_poller(
                format!("bdev_qos_{}", self.bdev.info.name),
                qos::RELEASE_PERIOD.as_micros() as u64,
                move || match me.upgrade() {
                    Some(ch) => PollStatus::from_work(ch.release_qos()),
                    None => PollStatus::Idle,
                },
            ));
        } else if !limited {
            if let Some(p) = poller.take() {
                p.unregister();
            }
            drop(poller);
            self.release_qos();
        }
    }

    /// Submits waiting I/O, in order, while the limits admit it (all of it when the bdev
    /// has no limits any more; aborted when the channel is closing). Returns how many.
    fn release_qos(&self) -> usize {
        let mut released = 0;
        loop {
            let io = {
                let mut wait = self.qos_wait.borrow_mut();
                let Some(front) = wait.front() else { break };
                let admitted = match self.qos.borrow().as_ref() {
                    _ if self.closing.get() => true,
                    Some(q) => q.admit(front, self.core.block_size),
                    None => true,
                };
                if !admitted {
                    break;
                }
                wait.pop_front()
            };
            let Some(mut io) = io else { break };
            released += 1;
            if self.closing.get() {
                io.status = IoStatus::Aborted;
                self.core.ready.borrow_mut().push_back(io);
                self.core.schedule();
            } else {
                self.submit_to_module(io);
            }
        }
        released
    }

    fn finish_close(&self) {
        if let Some(p) = self.poller.borrow_mut().take() {
            p.unregister();
        }
        if let Some(p) = self.qos_poller.borrow_mut().take() {
            p.unregister();
        }
        drop(self.module.borrow_mut().take());
        drop(self.fallback.borrow_mut().take());
        self.bdev.closed_stats().merge(&self.core.stats.borrow());
        if let Some(h) = self.core.histogram.borrow_mut().take() {
            if let Some(closed) = self.bdev.histogram_lock().as_mut() {
                closed.merge(&h);
            }
        }
        self.core.stats.borrow_mut().clear();
    }
}

impl Drop for IoChannel {
    fn drop(&mut self) {
        self.shared.closing.set(true);
        if self.shared.core.outstanding.get() == 0 && reactor::current_core().is_some() {
            self.shared.finish_close();
        } else {
            // Polled until its in-flight I/O is delivered (then it finishes closing).
            self.shared.core.schedule();
        }
    }
}

/// This reactor's channels with queued work (completions to deliver, retries, a close to
/// finish) among those without a poller of their own, and the one poller that serves
/// them: the cost of a poll is the channels with work, not the channels open. Two vectors
/// swap so that steady-state polling allocates nothing.
struct Pending;

thread_local! {
    static PENDING: RefCell<Vec<Rc<ChannelShared>>> = const { RefCell::new(Vec::new()) };
    static PENDING_SPARE: RefCell<Vec<Rc<ChannelShared>>> = const { RefCell::new(Vec::new()) };
    static PENDING_POLLER: Cell<bool> = const { Cell::new(false) };
    /// Length of `CHANNELS` at which its dead entries are swept next.
    static CHANNELS_SWEEP: Cell<usize> = const { Cell::new(64) };
}

/// Drops the channels still listed when the reactor drops the poller (teardown), on the
/// reactor's thread.
struct PendingGuard;

impl Drop for PendingGuard {
    fn drop(&mut self) {
        let left = PENDING.with(|p| std::mem::take(&mut *p.borrow_mut()));
        drop(left);
        PENDING_POLLER.with(|p| p.set(false));
    }
}

impl Pending {
    fn ensure_poller() {
        if PENDING_POLLER.with(|p| p.replace(true)) {
            return;
        }
        let guard = PendingGuard;
        let _handle = reactor::register_poller("bdev_channels", 0, move || {
            let _ = &guard;
            Pending::poll()
        });
    }

    fn poll() -> PollStatus {
        if PENDING.with(|p| p.borrow().is_empty()) {
            return PollStatus::Idle;
        }
        let mut batch = PENDING_SPARE.with(|s| std::mem::take(&mut *s.borrow_mut()));
        PENDING.with(|p| std::mem::swap(&mut *p.borrow_mut(), &mut batch));
        let mut work = 0;
        for ch in batch.drain(..) {
            ch.core.scheduled.set(false);
            if matches!(ch.poll(), PollStatus::Busy) {
                work += 1;
            }
            let core = &ch.core;
            let finished = ch.module.borrow().is_none();
            if !core.ready.borrow().is_empty()
                || !core.nomem.borrow().is_empty()
                || (ch.closing.get() && !finished)
            {
                core.schedule();
            }
        }
        PENDING_SPARE.with(|s| *s.borrow_mut() = batch);
        PollStatus::from_work(work)
    }
}

/// Sets (or with all-zero limits, removes) `bdev`'s rate limits and pushes them to its
/// channels on every reactor; `done` runs on the calling reactor once all have them.
pub fn set_qos(bdev: &BdevHandle, limits: qos::QosLimits, done: impl FnOnce() + Send + 'static) {
    let q = (!limits.is_unlimited()).then(|| Arc::new(qos::Qos::new(limits)));
    *bdev.qos.lock().unwrap_or_else(|e| e.into_inner()) = q.clone();
    let bdev = bdev.clone();
    reactor::for_each_reactor(
        move || {
            CHANNELS.with(|c| {
                let chans: Vec<Rc<ChannelShared>> =
                    c.borrow().iter().filter_map(Weak::upgrade).collect();
                for ch in chans.iter().filter(|ch| Arc::ptr_eq(&ch.bdev, &bdev)) {
                    ch.set_qos(q.clone());
                }
            })
        },
        done,
    );
}

/// Enables (with `cfg`) or disables `bdev`'s latency histogram on every reactor, starting
/// from zero; `done` runs on the calling reactor once all channels have it.
pub fn set_histogram(
    bdev: &BdevHandle,
    cfg: Option<histogram::HistConfig>,
    done: impl FnOnce() + Send + 'static,
) {
    *bdev.histogram_lock() = cfg.map(histogram::Histogram::new);
    let bdev = bdev.clone();
    reactor::for_each_reactor(
        move || {
            for_local_channels(&bdev, |ch| {
                *ch.core.histogram.borrow_mut() =
                    cfg.map(|c| Box::new(histogram::Histogram::new(c)));
            })
        },
        done,
    );
}

/// `bdev`'s latency histogram merged over every channel on every reactor and those closed;
/// `None` when it is not enabled. `done` runs on the calling reactor.
pub fn collect_histogram(
    bdev: &BdevHandle,
    done: impl FnOnce(Option<histogram::Histogram>) + Send + 'static,
) {
    let Some(total) = bdev.histogram_lock().clone() else {
        return done(None);
    };
    let total = Arc::new(Mutex::new(total));
    let (each, bdev) = (total.clone(), bdev.clone());
    reactor::for_each_reactor(
        move || {
            for_local_channels(&bdev, |ch| {
                if let Some(h) = ch.core.histogram.borrow().as_ref() {
                    each.lock().unwrap_or_else(|e| e.into_inner()).merge(h);
                }
            })
        },
        move || {
            done(Some(
                total.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            ))
        },
    );
}

/// Runs `f` on each of this reactor's open channels of `bdev`.
fn for_local_channels(bdev: &BdevHandle, mut f: impl FnMut(&Rc<ChannelShared>)) {
    let chans: Vec<Rc<ChannelShared>> =
        CHANNELS.with(|c| c.borrow().iter().filter_map(Weak::upgrade).collect());
    for ch in chans.iter().filter(|ch| Arc::ptr_eq(&ch.bdev, bdev)) {
        if ch.module.borrow().is_some() {
            f(ch);
        }
    }
}

/// Adds the statistics of `bdev`'s open channels on this reactor into `into`.
pub(crate) fn collect_local_stats(bdev: &BdevHandle, into: &mut IoStats) {
    collect_local_channel_stats(bdev, into);
}

/// Adds this reactor's channel statistics of `bdev` to `into`; false when it has no channel.
pub(crate) fn collect_local_channel_stats(bdev: &BdevHandle, into: &mut IoStats) -> bool {
    let mut found = false;
    CHANNELS.with(|c| {
        for ch in c.borrow().iter().filter_map(Weak::upgrade) {
            if Arc::ptr_eq(&ch.bdev, bdev) && ch.module.borrow().is_some() {
                into.merge(&ch.core.stats.borrow());
                found = true;
            }
        }
    });
    found
}

/// This reactor's open channels: each bdev's name and how many channels it has here.
pub(crate) fn local_channel_counts() -> Vec<(String, usize)> {
    let mut counts: Vec<(String, usize)> = Vec::new();
    CHANNELS.with(|c| {
        for ch in c.borrow().iter().filter_map(Weak::upgrade) {
            if ch.module.borrow().is_none() {
                continue;
            }
            match counts.iter_mut().find(|(n, _)| n == ch.bdev.name()) {
                Some((_, n)) => *n += 1,
                None => counts.push((ch.bdev.name().to_string(), 1)),
            }
        }
    });
    counts
}

/// Resets this reactor's channel statistics of `bdev` (see `iostat::ResetMode`).
pub(crate) fn reset_local_stats(bdev: &BdevHandle, mode: iostat::ResetMode) {
    CHANNELS.with(|c| {
        for ch in c.borrow().iter().filter_map(Weak::upgrade) {
            if Arc::ptr_eq(&ch.bdev, bdev) && ch.module.borrow().is_some() {
                ch.core.stats.borrow_mut().reset(mode);
            }
        }
    })
}

/// Resets the statistics kept of `bdev`'s closed channels.
pub(crate) fn reset_closed_stats(bdev: &BdevHandle, mode: iostat::ResetMode) {
    bdev.closed_stats().reset(mode);
}

/// Statistics of channels already closed.
pub(crate) fn collect_closed_stats(bdev: &BdevHandle, into: &mut IoStats) {
    into.merge(&bdev.closed_stats());
}
