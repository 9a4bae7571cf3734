//! Small helpers of the bdev layer: UUID generation (random version 4, from the kernel's
//! getrandom) and parsing/normalising of user-supplied UUID strings.

/// A random (version 4) UUID in the canonical lower-case form.
pub fn random_uuid() -> String {
    let mut b = [0u8; 16];
    fill_random(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    format_uuid(&b)
}

/// Random bytes from the kernel (falls back to a time-seeded mix if getrandom fails).
pub fn fill_random(buf: &mut [u8]) {
    // SAFETY: buf is valid for buf.len() writable bytes.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n != buf.len() as isize {
        let mut x = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9_7f4a_7c15, |d| d.as_nanos() as u64)
            | 1;
        for b in buf.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
    }
}

/// 8-4-4-4-12 text of 16 bytes.
pub fn format_uuid(b: &[u8; 16]) -> String {
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Checks a UUID string (8-4-4-4-12 hex digits) and returns it in lower case.
pub fn parse_uuid(s: &str) -> Result<String, String> {
    let groups: Vec<&str> = s.split('-').collect();
    let lens = [8, 4, 4, 4, 12];
    let ok = groups.len() == 5
        && groups
            .iter()
            .zip(lens)
            .all(|(g, l)| g.len() == l && g.chars().all(|c| c.is_ascii_hexdigit()));
    if ok {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(format!(
            "{s:?} is not a UUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"
        ))
    }
}

/// A small, fast per-channel pseudo-random generator (xorshift64*), for latency choices
/// and workload offsets; not for anything secret.
#[derive(Debug, Clone)]
pub struct FastRng(u64);

impl FastRng {
    pub fn new() -> Self {
        let mut b = [0u8; 8];
        fill_random(&mut b);
        Self(u64::from_le_bytes(b) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
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
        assert_eq!(parse_uuid(&u).unwrap(), u);
        assert_eq!(&u[14..15], "4");
        assert_ne!(u, random_uuid());
        assert!(parse_uuid("not-a-uuid").is_err());
        assert_eq!(
            parse_uuid("0AB4C1D2-0000-4000-8000-000000000001").unwrap(),
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

const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
const BLKSSZGET: libc::c_ulong = 0x1268;

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
            let mut size: u64 = 0;
            let mut lbs: libc::c_int = 0;
            // SAFETY: BLKGETSIZE64 writes one u64 and BLKSSZGET one int to the pointers,
            // which are valid for those writes; the fd is open.
            let (r1, r2) = unsafe {
                (
                    libc::ioctl(file.as_raw_fd(), BLKGETSIZE64, &mut size as *mut u64),
                    libc::ioctl(file.as_raw_fd(), BLKSSZGET, &mut lbs as *mut libc::c_int),
                )
            };
            if r1 != 0 || r2 != 0 {
                return Err(BdevError::io(
                    format!("querying block device {path}"),
                    std::io::Error::last_os_error(),
                ));
            }
            (size, lbs.max(0) as u32)
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
        const STATX_DIOALIGN: u32 = 0x2000;
        // SAFETY: statx is plain old data; all-zero is a valid value.
        let mut stx: libc::statx = unsafe { std::mem::zeroed() };
        // SAFETY: empty path with AT_EMPTY_PATH queries the open fd; stx is valid for writes.
        let r = unsafe {
            libc::statx(
                self.file.as_raw_fd(),
                c"".as_ptr(),
                libc::AT_EMPTY_PATH,
                STATX_DIOALIGN,
                &mut stx,
            )
        };
        (r == 0 && stx.stx_mask & STATX_DIOALIGN != 0 && stx.stx_dio_offset_align > 0)
            .then_some(stx.stx_dio_offset_align)
    }

    fn reopen_buffered(&mut self) -> Result<(), BdevError> {
        let writable = {
            // SAFETY: F_GETFL on our open fd has no memory effects.
            let fl = unsafe { libc::fcntl(self.file.as_raw_fd(), libc::F_GETFL) };
            fl >= 0 && fl & libc::O_ACCMODE != libc::O_RDONLY
        };
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
