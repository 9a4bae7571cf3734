//! File and block-device queries (statx, ioctl, fcntl) and advisory locks (flock).

use std::io;
use std::os::fd::RawFd;

const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
const BLKSSZGET: libc::c_ulong = 0x1268;

/// A block device's size in bytes and logical block size.
pub fn block_device_geometry(fd: RawFd) -> io::Result<(u64, u32)> {
    let mut size: u64 = 0;
    let mut lbs: libc::c_int = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 and BLKSSZGET one int to the pointers, which are
    // valid for those writes.
    let (r1, r2) = unsafe {
        (
            libc::ioctl(fd, BLKGETSIZE64, &mut size as *mut u64),
            libc::ioctl(fd, BLKSSZGET, &mut lbs as *mut libc::c_int),
        )
    };
    if r1 != 0 || r2 != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((size, lbs.max(0) as u32))
}

/// The direct-I/O file offset alignment the kernel reports for an open file, if it reports
/// one (statx `STATX_DIOALIGN`, Linux 6.1+).
pub fn dio_offset_align(fd: RawFd) -> Option<u32> {
    const STATX_DIOALIGN: u32 = 0x2000;
    // SAFETY: statx is plain old data; all-zero is a valid value.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: empty path with AT_EMPTY_PATH queries the open fd; stx is valid for writes.
    let r = unsafe {
        libc::statx(
            fd,
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            STATX_DIOALIGN,
            &mut stx,
        )
    };
    (r == 0 && stx.stx_mask & STATX_DIOALIGN != 0 && stx.stx_dio_offset_align > 0)
        .then_some(stx.stx_dio_offset_align)
}

/// Whether an open file was opened for writing (`None` if fcntl fails).
pub fn is_writable(fd: RawFd) -> bool {
    // SAFETY: F_GETFL on an fd has no memory effects.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    fl >= 0 && fl & libc::O_ACCMODE != libc::O_RDONLY
}

/// Takes an exclusive `flock` on `fd` without waiting. `Ok(false)`: another holder has it.
pub fn try_lock_exclusive(fd: RawFd) -> io::Result<bool> {
    // SAFETY: flock takes no pointers.
    let rc = unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(err)
    }
}
