//! Small helpers of the bdev layer: UUIDs, a fast PRNG, the backing file of file bdevs and
//! the slot table of their in-flight I/O.

#![forbid(unsafe_code)]

use uuid::Uuid;

/// A random (version 4) UUID.
pub fn random_uuid() -> Uuid {
    Uuid::new_v4()
}

/// Parses a user-supplied UUID in the canonical 8-4-4-4-12 form (any case); other forms the
/// `uuid` crate knows (simple, braced, URN) are refused, as before.
pub fn parse_uuid(s: &str) -> Result<Uuid, String> {
    match Uuid::try_parse(s) {
        Ok(u) if s.len() == 36 => Ok(u),
        _ => Err(format!(
            "{s:?} is not a UUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"
        )),
    }
}

/// A small, fast per-channel pseudo-random generator, for latency choices and workload
/// offsets; not for anything secret. (`fastrand`'s wyrand, seeded from the OS.)
#[derive(Debug, Clone)]
pub struct FastRng(fastrand::Rng);

impl FastRng {
    pub fn new() -> Self {
        Self(fastrand::Rng::new())
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0.u64(..)
    }
    /// Uniform in 0..n (0 when n is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0.u64(..n.max(1))
    }
}

impl Default for FastRng {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_v4_and_parse_checks_shape() {
        let u = random_uuid();
        assert_eq!(parse_uuid(&u.to_string()).unwrap(), u);
        assert_eq!(u.get_version_num(), 4);
        assert_ne!(u, random_uuid());
        assert!(parse_uuid("not-a-uuid").is_err());
        assert!(parse_uuid("0ab4c1d2000040008000000000000001").is_err());
        assert!(parse_uuid("{0ab4c1d2-0000-4000-8000-000000000001}").is_err());
        assert_eq!(
            parse_uuid("0AB4C1D2-0000-4000-8000-000000000001")
                .unwrap()
                .to_string(),
            "0ab4c1d2-0000-4000-8000-000000000001"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Backing files of the uring and aio modules

use super::{BdevError, BdevIo};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};

/// A file or block device opened for a bdev, with O_DIRECT when the target allows it.
#[derive(Debug)]
pub struct BackingFile {
    pub file: std::fs::File,
    pub path: String,
    pub direct: bool,
    pub is_block_device: bool,
    pub size: u64,
    /// The device's logical block size (block devices), else 0.
    pub logical_block_size: u32,
}

impl BackingFile {
    pub fn open(path: &str, readonly: bool) -> Result<Self, BdevError> {
        let open = |direct: bool| {
            let mut o = std::fs::OpenOptions::new();
            o.read(true).write(!readonly);
            if direct {
                o.custom_flags(libc::O_DIRECT);
            }
            o.open(path)
        };
        let (file, direct) = match open(true) {
            Ok(f) => (f, true),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                let f = open(false).map_err(|e| BdevError::io(format!("opening {path}"), e))?;
                (f, false)
            }
            Err(e) => return Err(BdevError::io(format!("opening {path}"), e)),
        };
        let meta = file
            .metadata()
            .map_err(|e| BdevError::io(format!("stat {path}"), e))?;
        let is_block_device = meta.file_type().is_block_device();
        let (size, logical_block_size) = if is_block_device {
            crate::sys::file::block_device_geometry(file.as_raw_fd())
                .map_err(|e| BdevError::io(format!("querying block device {path}"), e))?
        } else if meta.file_type().is_file() {
            (meta.len(), 0)
        } else {
            return Err(BdevError::Invalid(format!(
                "{path} is neither a regular file nor a block device"
            )));
        };
        Ok(Self {
            file,
            path: path.to_string(),
            direct,
            is_block_device,
            size,
            logical_block_size,
        })
    }

    /// The block size to use: the requested one (checked against the device) or the
    /// device's logical block size (4096 for regular files).
    /// When O_DIRECT is on and the file's direct-I/O offset alignment (statx DIOALIGN) is
    /// coarser than the chosen block size, the file is reopened buffered instead, so
    /// block-aligned I/O never fails with EINVAL.
    pub fn choose_block_size(&mut self, requested: Option<u32>) -> Result<u32, BdevError> {
        let bs = match requested {
            Some(0) | None => {
                if self.logical_block_size > 0 {
                    self.logical_block_size
                } else {
                    4096
                }
            }
            Some(bs) => bs,
        };
        if bs < 512 || !bs.is_power_of_two() {
            return Err(BdevError::Invalid(format!(
                "block_size {bs} must be a power of two of at least 512"
            )));
        }
        if self.logical_block_size > bs {
            return Err(BdevError::Invalid(format!(
                "block_size {bs} is smaller than the device's logical block size {}",
                self.logical_block_size
            )));
        }
        if self.direct && !self.is_block_device {
            if let Some(align) = self.dio_offset_align() {
                if align > bs {
                    tracing::info!(path = %self.path, align, bs, "O_DIRECT alignment exceeds the block size; using buffered I/O");
                    self.reopen_buffered()?;
                }
            }
        }
        if self.size / bs as u64 == 0 {
            return Err(BdevError::Invalid(format!(
                "{} is smaller than one block ({bs} bytes)",
                self.path
            )));
        }
        Ok(bs)
    }
}

impl BackingFile {
    /// The direct-I/O file offset alignment the kernel reports, if it reports one.
    fn dio_offset_align(&self) -> Option<u32> {
        crate::sys::file::dio_offset_align(self.file.as_raw_fd())
    }

    fn reopen_buffered(&mut self) -> Result<(), BdevError> {
        let writable = crate::sys::file::is_writable(self.file.as_raw_fd());
        self.file = std::fs::OpenOptions::new()
            .read(true)
            .write(writable)
            .open(&self.path)
            .map_err(|e| BdevError::io(format!("reopening {}", self.path), e))?;
        self.direct = false;
        Ok(())
    }
}

/// Opens the backing file of a new file bdev and builds its properties: block size as
/// requested or detected, block count from the size, the given or a new UUID.
pub fn open_file_bdev(
    name: &str,
    product_name: &'static str,
    filename: &str,
    readonly: bool,
    block_size: Option<u32>,
    uuid: Option<&str>,
    io_types: super::IoTypes,
) -> Result<(super::BdevInfo, BackingFile), BdevError> {
    let mut file = BackingFile::open(filename, readonly)?;
    let bs = file.choose_block_size(block_size)?;
    let mut info = super::BdevInfo::new(name, product_name, bs, file.size / bs as u64, io_types);
    if let Some(u) = uuid {
        info.uuid = parse_uuid(u).map_err(BdevError::Invalid)?;
    }
    Ok((info, file))
}

/// Maps a failed syscall's errno to an I/O status.
pub fn status_of_errno(errno: i32) -> super::IoStatus {
    use super::IoStatus;
    match errno {
        libc::EAGAIN | libc::ENOMEM | libc::EBUSY => IoStatus::NoMem,
        libc::EIO | libc::ENODATA | libc::EILSEQ | libc::EBADMSG => IoStatus::MediaError,
        libc::EOPNOTSUPP => IoStatus::Unsupported,
        libc::ECANCELED | libc::EINTR => IoStatus::Aborted,
        _ => IoStatus::Failed,
    }
}

/// In-flight I/O of a ring or AIO context: a fixed table of slots, each holding the I/O and
/// the iovec array the kernel reads while it runs. Slots and their arrays are reused.
pub struct SlotTable {
    slots: Vec<Slot>,
    free: Vec<u32>,
}

pub struct Slot {
    pub io: Option<BdevIo>,
    pub iov: Vec<libc::iovec>,
    /// Bytes the kernel must report for success.
    pub expect: usize,
}

impl SlotTable {
    pub fn new(depth: usize) -> Self {
        let slots = (0..depth)
            .map(|_| Slot {
                io: None,
                iov: Vec::with_capacity(16),
                expect: 0,
            })
            .collect();
        Self {
            slots,
            free: (0..depth as u32).rev().collect(),
        }
    }

    /// Takes a free slot for `io`, filling its iovec array from the scatter list. `None`
    /// (and the I/O handed back) when every slot is busy.
    // The refused I/O goes back by value (it is the caller's reusable object; boxing it would
    // allocate per I/O).
    #[allow(clippy::result_large_err)]
    pub fn insert(&mut self, mut io: BdevIo) -> Result<u32, BdevIo> {
        let Some(idx) = self.free.pop() else {
            return Err(io);
        };
        let slot = &mut self.slots[idx as usize];
        slot.iov.clear();
        let mut expect = 0;
        for b in io.bufs.iter_mut() {
            expect += b.len();
            slot.iov.push(libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            });
        }
        slot.expect = expect;
        slot.io = Some(io);
        Ok(idx)
    }

    pub fn get(&self, idx: u32) -> Option<&Slot> {
        self.slots.get(idx as usize).filter(|s| s.io.is_some())
    }

    pub fn get_mut(&mut self, idx: u32) -> Option<&mut Slot> {
        self.slots.get_mut(idx as usize).filter(|s| s.io.is_some())
    }

    /// Frees a slot, returning its I/O.
    pub fn remove(&mut self, idx: u32) -> Option<(BdevIo, usize)> {
        let slot = self.slots.get_mut(idx as usize)?;
        let io = slot.io.take()?;
        self.free.push(idx);
        Some((io, slot.expect))
    }

    pub fn in_flight(&self) -> usize {
        self.slots.len() - self.free.len()
    }
}
