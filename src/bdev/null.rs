//! null: a bdev that stores nothing.
//!
//! Writes, unmap, write_zeroes and flush succeed at once and are discarded; reads return
//! zeroes. Its size can change while in use (`bdev_null_resize`), which tells every
//! descriptor `BdevEvent::Resize`.

#![forbid(unsafe_code)]

use super::{
    BdevError, BdevHandle, BdevInfo, BdevIo, Completer, IoStatus, IoType, IoTypes, ModuleChannel,
};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};

pub const PRODUCT_NAME: &str = "Null disk";

pub struct NullBdev {
    block_size: u32,
    /// Kept in step with the registered block count for the config writer.
    num_blocks: AtomicU64,
}

struct NullChannel;

impl ModuleChannel for NullChannel {
    /// Every I/O completes in `submit`: nothing to poll.
    fn needs_poll(&self) -> bool {
        false
    }

    fn submit(&mut self, mut io: BdevIo, done: &Completer) {
        if io.io_type == IoType::Read {
            for b in io.bufs.iter_mut() {
                b.fill(0);
            }
        }
        done.complete(io, IoStatus::Success);
    }
}

impl super::Bdev for NullBdev {
    fn open_channel(
        &self,
        _bdev: &BdevHandle,
        _done: &Completer,
    ) -> Result<Box<dyn ModuleChannel>, BdevError> {
        Ok(Box::new(NullChannel))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn config(&self, info: &BdevInfo) -> Option<Value> {
        Some(crate::rpc::config_entry(
            "bdev_null_create",
            json!({
                "name": info.name,
                "num_blocks": self.num_blocks.load(Ordering::Relaxed),
                "block_size": self.block_size,
                "uuid": info.uuid,
            }),
        ))
    }
}

#[derive(Debug, Clone)]
pub struct NullOpts {
    pub name: String,
    pub num_blocks: u64,
    pub block_size: u32,
    pub uuid: Option<String>,
}

pub fn create(opts: NullOpts, done: impl FnOnce(Result<BdevHandle, BdevError>) + Send + 'static) {
    if opts.block_size < 512 || !opts.block_size.is_multiple_of(512) {
        return done(Err(BdevError::Invalid(format!(
            "block_size {} must be a multiple of 512",
            opts.block_size
        ))));
    }
    if opts.num_blocks == 0 {
        return done(Err(BdevError::Invalid(
            "num_blocks must be greater than 0".into(),
        )));
    }
    let mut info = BdevInfo::new(
        opts.name,
        PRODUCT_NAME,
        opts.block_size,
        opts.num_blocks,
        IoTypes::of(&IoType::ALL),
    );
    if let Some(u) = &opts.uuid {
        match super::parse_uuid(u) {
            Ok(u) => info.uuid = u,
            Err(e) => return done(Err(BdevError::Invalid(e))),
        }
    }
    let bdev = NullBdev {
        block_size: opts.block_size,
        num_blocks: AtomicU64::new(opts.num_blocks),
    };
    super::register(info, Box::new(bdev), done)
}

/// `bdev_null_resize`: sets the size to `new_size_mib` MiB. Shrinking is refused (SPDK
/// refuses it too: namespaces in use would lose blocks under their hosts).
pub fn resize(handle: &BdevHandle, new_size_mib: u64) -> Result<(), BdevError> {
    if handle.info.product_name != PRODUCT_NAME {
        return Err(BdevError::NotFound(handle.info.name.clone()));
    }
    let bytes = new_size_mib
        .checked_mul(1 << 20)
        .ok_or_else(|| BdevError::Invalid("new_size overflows".into()))?;
    let bs = handle.info.block_size as u64;
    if bytes % bs != 0 {
        return Err(BdevError::Invalid(format!(
            "new size is not a multiple of the block size {bs}"
        )));
    }
    let blocks = bytes / bs;
    if blocks < handle.num_blocks() {
        return Err(BdevError::Invalid(
            "new size must not be smaller than the current size".into(),
        ));
    }
    handle.resize(blocks);
    if let Some(null) = handle.module_as::<NullBdev>() {
        null.num_blocks.store(blocks, Ordering::Relaxed);
    }
    Ok(())
}
