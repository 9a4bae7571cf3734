//! What a bdev module implements: the `Bdev` and `ModuleChannel` traits, the bdev's `BdevInfo`, and `BdevError`.

use super::{random_uuid, BdevHandle, BdevIo, Completer, IoTypes};
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};

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
    pub(super) num_blocks: AtomicU64,
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
