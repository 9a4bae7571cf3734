//! malloc: a RAM bdev whose blocks live in one anonymous mapping shared by every reactor.
//!
//! The mapping ([`MallocRegion`], from `sys::mem`) is zero-filled by the kernel on first
//! touch and held by an `Arc`, shared by every reactor's channel and outliving them, so the
//! network side can send read data straight from it. Channels copy between the region and
//! the I/O's scatter list; unmap and write_zeroes zero the range; flush and reset have
//! nothing to do. A read submitted with `accept_shared` is not copied at all: it completes
//! with a [`SharedRange`] of the region (the region is a `buf::SharedBytes`), which the
//! NVMe/TCP target sends straight from the bdev's memory.
//!
//! # Concurrent I/O to the same blocks
//!
//! Two reactors may copy into (or one into, one out of) the same bytes at once: NVMe allows
//! overlapping commands and leaves their result undefined, and a disk gives torn data. In
//! Rust's memory model, though, two unsynchronised non-atomic accesses to one location of
//! which one writes are a *data race*, which is undefined behaviour, not merely torn bytes.
//! The decision, and what it rests on:
//!
//! - The region is never turned into a reference. No `&[u8]` / `&mut [u8]` to region memory
//!   exists anywhere: every access is `copy_raw` / `ptr::write_bytes` on raw pointers
//!   derived from the mapping's base, bounds-checked first; the network side hands
//!   `(pointer, length)` to the kernel and never reads the bytes itself (`SharedBytes`'s
//!   contract). So the compiler has no `noalias` / `dereferenceable` promise about these
//!   bytes to exploit, and no Rust code ever makes a decision on a value read from them: the
//!   bytes only travel between the region and I/O buffers, like DMA to device memory.
//! - The memory comes from `mmap`, not from a Rust allocation, and the copies are calls to
//!   the C library's `memcpy` / `memset`, opaque to the optimiser. On the hardware pollux
//!   runs on (x86-64, arm64, both cache-coherent), racing copies produce a mix of old and new
//!   bytes at worst, exactly the torn data the NVMe semantics allow. This is the same footing
//!   as memory shared with another process or a device, which Rust programs (and SPDK) copy
//!   this way.
//! - What this does not claim: by the letter of the abstract machine the racing copies are
//!   still a data race; Miri would flag a test that made two threads overlap. The sound
//!   replacements are rejected for now (not measured): relaxed atomic word copies
//!   (`AtomicU64` loads/stores, which LLVM neither merges nor vectorises) would replace a
//!   vectorised 4 KiB `memcpy` on every I/O, and a per-range lock would make one reactor
//!   wait for another, which the house rules forbid.
//!   When byte-wise atomic memcpy (RFC 3301, `AtomicPerByte`) is stable, `copy_in` /
//!   `copy_out` / `zero` switch to it with relaxed ordering: same code generation, defined
//!   behaviour. The change is confined to those three functions.

use super::{
    BdevError, BdevHandle, BdevInfo, BdevIo, Completer, IoStatus, IoType, IoTypes, ModuleChannel,
    SharedRange,
};
use crate::buf::copy_raw;
use crate::sys::mem::Mapping;
use serde_json::{json, Value};
use std::sync::Arc;

pub const PRODUCT_NAME: &str = "Malloc disk";

/// The memory of a malloc bdev.
pub struct MallocRegion {
    map: Mapping,
}

impl MallocRegion {
    /// Maps `len` bytes of anonymous memory: page-aligned, zero-filled by the kernel on first
    /// touch, so creating a large bdev is instant and costs no RSS until blocks are written
    /// (an aligned `alloc_zeroed` would memset all of it at creation).
    pub fn new(len: usize) -> Result<Self, BdevError> {
        if len > isize::MAX as usize - crate::buf::BUF_ALIGN {
            return Err(BdevError::Invalid(format!(
                "malloc size {len} is too large"
            )));
        }
        let map = Mapping::new(len.max(1))
            .map_err(|e| BdevError::io(format!("mapping {len} bytes"), e))?;
        Ok(Self { map })
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// The region's base address (for zero-copy senders holding an `Arc` of the region).
    pub fn as_ptr(&self) -> *const u8 {
        self.map.as_ptr()
    }

    fn check(&self, offset: usize, len: usize) -> bool {
        offset.checked_add(len).is_some_and(|end| end <= self.len())
    }

    /// Copies region bytes at `offset` into `dst`. False if out of bounds.
    pub fn copy_out(&self, offset: usize, dst: &mut [u8]) -> bool {
        if !self.check(offset, dst.len()) {
            return false;
        }
        // SAFETY: bounds checked above; dst is a distinct, exclusively borrowed buffer.
        unsafe { copy_raw(self.map.as_ptr().add(offset), dst.as_mut_ptr(), dst.len()) };
        true
    }

    /// Copies `src` into the region at `offset`. False if out of bounds.
    pub fn copy_in(&self, offset: usize, src: &[u8]) -> bool {
        if !self.check(offset, src.len()) {
            return false;
        }
        // SAFETY: bounds checked above; src is a distinct buffer.
        unsafe { copy_raw(src.as_ptr(), self.map.as_ptr().add(offset), src.len()) };
        true
    }

    /// Zeroes `len` bytes at `offset`. False if out of bounds.
    pub fn zero(&self, offset: usize, len: usize) -> bool {
        if !self.check(offset, len) {
            return false;
        }
        // SAFETY: bounds checked above.
        unsafe { std::ptr::write_bytes(self.map.as_ptr().add(offset), 0, len) };
        true
    }
}

// SAFETY: the mapping is fixed at its base for `len()` bytes until the region is dropped, which cannot happen while an `Arc` of it (the caller's `self`) lives.
unsafe impl crate::buf::SharedBytes for MallocRegion {
    fn as_ptr(&self) -> *const u8 {
        self.map.as_ptr()
    }
    fn len(&self) -> usize {
        self.map.len()
    }
}

/// Executes `io` against a flat byte region; the shared engine of malloc.
pub(crate) fn execute_on_region(
    region: &MallocRegion,
    block_size: u64,
    io: &mut BdevIo,
) -> IoStatus {
    let Some(start) = io.offset_blocks.checked_mul(block_size) else {
        return IoStatus::InvalidLbaRange;
    };
    let Some(len) = io.num_blocks.checked_mul(block_size) else {
        return IoStatus::InvalidLbaRange;
    };
    let (Ok(start), Ok(len)) = (usize::try_from(start), usize::try_from(len)) else {
        return IoStatus::InvalidLbaRange;
    };
    let ok = match io.io_type {
        IoType::Read => {
            let mut at = start;
            io.bufs.iter_mut().all(|b| {
                let ok = region.copy_out(at, b);
                at += b.len();
                ok
            })
        }
        IoType::Write => {
            let mut at = start;
            io.bufs.iter().all(|b| {
                let ok = region.copy_in(at, b);
                at += b.len();
                ok
            })
        }
        IoType::Unmap | IoType::WriteZeroes => region.zero(start, len),
        IoType::Flush | IoType::Reset => true,
        // Emulated by the layer (not advertised).
        IoType::Compare | IoType::CompareAndWrite => false,
    };
    if ok {
        IoStatus::Success
    } else {
        IoStatus::InvalidLbaRange
    }
}

pub struct MallocBdev {
    region: Arc<MallocRegion>,
    block_size: u32,
    num_blocks: u64,
}

impl MallocBdev {
    pub fn region(&self) -> &Arc<MallocRegion> {
        &self.region
    }
}

struct MallocChannel {
    region: Arc<MallocRegion>,
    block_size: u64,
}

impl ModuleChannel for MallocChannel {
    /// Every I/O completes in `submit`: nothing to poll.
    fn needs_poll(&self) -> bool {
        false
    }

    fn submit(&mut self, mut io: BdevIo, done: &Completer) {
        if io.io_type == IoType::Read && io.accept_shared {
            let range = io
                .offset_blocks
                .checked_mul(self.block_size)
                .zip(io.num_blocks.checked_mul(self.block_size))
                .and_then(|(off, len)| {
                    Some((usize::try_from(off).ok()?, usize::try_from(len).ok()?))
                })
                .filter(|&(off, len)| self.region.check(off, len));
            let status = match range {
                Some((off, len)) => {
                    let mem: Arc<dyn crate::buf::SharedBytes> = self.region.clone();
                    io.shared = Some(SharedRange { mem, off, len });
                    IoStatus::Success
                }
                None => IoStatus::InvalidLbaRange,
            };
            done.complete(io, status);
            return;
        }
        let status = execute_on_region(&self.region, self.block_size, &mut io);
        done.complete(io, status);
    }
}

impl super::Bdev for MallocBdev {
    fn open_channel(
        &self,
        _bdev: &BdevHandle,
        _done: &Completer,
    ) -> Result<Box<dyn ModuleChannel>, BdevError> {
        Ok(Box::new(MallocChannel {
            region: self.region.clone(),
            block_size: self.block_size as u64,
        }))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn config(&self, info: &BdevInfo) -> Option<Value> {
        Some(crate::rpc::config_entry(
            "bdev_malloc_create",
            json!({
                "name": info.name,
                "num_blocks": self.num_blocks,
                "block_size": self.block_size,
                "uuid": info.uuid,
                "optimal_io_boundary": info.optimal_io_boundary,
            }),
        ))
    }
}

/// Parameters of `bdev_malloc_create`.
#[derive(Debug, Clone)]
pub struct MallocOpts {
    pub name: String,
    pub num_blocks: u64,
    pub block_size: u32,
    pub uuid: Option<String>,
    pub optimal_io_boundary: u32,
}

/// Creates and registers a malloc bdev (main reactor).
pub fn create(opts: MallocOpts, done: impl FnOnce(Result<BdevHandle, BdevError>) + Send + 'static) {
    let result = (|| {
        if opts.block_size < 512 || !opts.block_size.is_power_of_two() {
            return Err(BdevError::Invalid(format!(
                "block_size {} must be a power of two of at least 512",
                opts.block_size
            )));
        }
        if opts.num_blocks == 0 {
            return Err(BdevError::Invalid(
                "num_blocks must be greater than 0".into(),
            ));
        }
        let len = opts
            .num_blocks
            .checked_mul(opts.block_size as u64)
            .and_then(|l| usize::try_from(l).ok())
            .filter(|l| *l <= isize::MAX as usize / 2)
            .ok_or_else(|| BdevError::Invalid("malloc bdev size overflows".into()))?;
        let uuid = match &opts.uuid {
            Some(u) => super::parse_uuid(u).map_err(BdevError::Invalid)?,
            None => super::random_uuid(),
        };
        let region = Arc::new(MallocRegion::new(len)?);
        let mut info = BdevInfo::new(
            opts.name.clone(),
            PRODUCT_NAME,
            opts.block_size,
            opts.num_blocks,
            IoTypes::of(&IoType::ALL),
        );
        info.uuid = uuid;
        info.optimal_io_boundary = opts.optimal_io_boundary;
        let bdev = MallocBdev {
            region,
            block_size: opts.block_size,
            num_blocks: opts.num_blocks,
        };
        Ok((info, bdev))
    })();
    match result {
        Ok((info, bdev)) => super::register(info, Box::new(bdev), done),
        Err(e) => done(Err(e)),
    }
}
