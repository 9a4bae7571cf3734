//! malloc: a RAM bdev. Its blocks live in one zero-initialised, page-aligned mapping held
//! by an `Arc` ([`MallocRegion`]), shared by every reactor's channel and outliving them, so
//! the network side can later send read data straight from it. Channels copy between the
//! region and the I/O's scatter list; unmap and write_zeroes zero the range; flush and reset
//! have nothing to do. Concurrent writes to overlapping ranges give torn data, as on a disk.
//! A read submitted with `accept_shared` is not copied at all: it completes with a
//! [`SharedRange`] of the region (the region is a `sock::SharedBytes`), which the NVMe/TCP
//! target sends straight from the bdev's memory.

use super::{
    BdevError, BdevHandle, BdevInfo, BdevIo, Completer, IoStatus, IoType, IoTypes, ModuleChannel,
    SharedRange,
};
use crate::buf::copy_raw;
use serde_json::{json, Value};
use std::alloc::Layout;
use std::ptr::NonNull;
use std::sync::Arc;

pub const PRODUCT_NAME: &str = "Malloc disk";

/// The memory of a malloc bdev.
pub struct MallocRegion {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: the region is plain bytes owned by this struct; access goes through raw copies
// bounded by `len` (see `copy_out`/`copy_in`), like DMA to a device's memory.
unsafe impl Send for MallocRegion {}
// SAFETY: as above; concurrent copies of the same bytes give torn data, never invalid values.
unsafe impl Sync for MallocRegion {}

impl MallocRegion {
    /// Maps `len` bytes of anonymous memory: page-aligned, zero-filled by the kernel on first
    /// touch, so creating a large bdev is instant and costs no RSS until blocks are written
    /// (an aligned `alloc_zeroed` would memset all of it at creation).
    pub fn new(len: usize) -> Result<Self, BdevError> {
        let layout = Layout::from_size_align(len.max(1), crate::buf::BUF_ALIGN)
            .map_err(|_| BdevError::Invalid(format!("malloc size {len} is too large")))?;
        // SAFETY: an anonymous private mapping of a non-zero size at an address the kernel
        // picks; the result is checked before use and unmapped exactly once in `drop`.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                layout.size(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return Err(BdevError::io(
                format!("mapping {len} bytes"),
                std::io::Error::last_os_error(),
            ));
        }
        let ptr = NonNull::new(raw.cast::<u8>()).ok_or_else(|| {
            BdevError::io(
                format!("mapping {len} bytes"),
                std::io::Error::from_raw_os_error(libc::ENOMEM),
            )
        })?;
        // Transparent huge pages where the kernel offers them (no reservation, unlike
        // hugetlbfs): random 4 KiB I/O over a large region otherwise misses the TLB on almost
        // every access. Advice only; failure (THP disabled) changes nothing.
        // SAFETY: advice on the mapping just created, within its length.
        unsafe {
            libc::madvise(raw, layout.size(), libc::MADV_HUGEPAGE);
        }
        Ok(Self { ptr, layout })
    }

    pub fn len(&self) -> usize {
        self.layout.size()
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// The region's base address (for zero-copy senders holding an `Arc` of the region).
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
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
        unsafe { copy_raw(self.ptr.as_ptr().add(offset), dst.as_mut_ptr(), dst.len()) };
        true
    }

    /// Copies `src` into the region at `offset`. False if out of bounds.
    pub fn copy_in(&self, offset: usize, src: &[u8]) -> bool {
        if !self.check(offset, src.len()) {
            return false;
        }
        // SAFETY: bounds checked above; src is a distinct buffer.
        unsafe { copy_raw(src.as_ptr(), self.ptr.as_ptr().add(offset), src.len()) };
        true
    }

    /// Zeroes `len` bytes at `offset`. False if out of bounds.
    pub fn zero(&self, offset: usize, len: usize) -> bool {
        if !self.check(offset, len) {
            return false;
        }
        // SAFETY: bounds checked above.
        unsafe { std::ptr::write_bytes(self.ptr.as_ptr().add(offset), 0, len) };
        true
    }
}

// SAFETY: the region's allocation is fixed at `ptr` for `layout.size()` bytes until the
// region is dropped, which cannot happen while an `Arc` of it (the caller's `self`) lives.
unsafe impl crate::sock::SharedBytes for MallocRegion {
    fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }
    fn len(&self) -> usize {
        self.layout.size()
    }
}

impl Drop for MallocRegion {
    fn drop(&mut self) {
        // SAFETY: mapped in `new` with exactly this length, not used after this.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.layout.size()) };
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
                    let mem: Arc<dyn crate::sock::SharedBytes> = self.region.clone();
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
