//! A small binding of librados/librbd, loaded at run time (`librados.so.2`, `librbd.so.1`)
//! so the build needs no Ceph package. Every C call is in a thin wrapper here with its
//! `// SAFETY:` note; the rest of the module sees handles and `Result<_, i32>` (negative
//! errno as librbd returns it).

use libloading::Library;
use std::ffi::{c_char, c_int, c_void, CString};
use std::sync::OnceLock;

pub type RadosT = *mut c_void;
pub type IoCtxT = *mut c_void;
pub type ImageT = *mut c_void;
pub type CompletionT = *mut c_void;
type RbdCallback = Option<unsafe extern "C" fn(CompletionT, *mut c_void)>;
pub type UpdateCallback = unsafe extern "C" fn(*mut c_void);

/// `EVENT_TYPE_EVENTFD` of librbd's `rbd_event_type`.
const EVENT_TYPE_EVENTFD: c_int = 2;

/// The Debian packages that provide the libraries.
pub const PACKAGES: &str = "librbd1 librados2";

pub struct Lib {
    _rados: Library,
    _rbd: Library,
    rados_create: unsafe extern "C" fn(*mut RadosT, *const c_char) -> c_int,
    rados_conf_read_file: unsafe extern "C" fn(RadosT, *const c_char) -> c_int,
    rados_conf_set: unsafe extern "C" fn(RadosT, *const c_char, *const c_char) -> c_int,
    rados_connect: unsafe extern "C" fn(RadosT) -> c_int,
    rados_shutdown: unsafe extern "C" fn(RadosT),
    rados_ioctx_create: unsafe extern "C" fn(RadosT, *const c_char, *mut IoCtxT) -> c_int,
    rados_ioctx_destroy: unsafe extern "C" fn(IoCtxT),
    rbd_open: unsafe extern "C" fn(IoCtxT, *const c_char, *mut ImageT, *const c_char) -> c_int,
    rbd_open_read_only:
        unsafe extern "C" fn(IoCtxT, *const c_char, *mut ImageT, *const c_char) -> c_int,
    rbd_close: unsafe extern "C" fn(ImageT) -> c_int,
    rbd_get_size: unsafe extern "C" fn(ImageT, *mut u64) -> c_int,
    rbd_resize: unsafe extern "C" fn(ImageT, u64) -> c_int,
    rbd_set_image_notification: unsafe extern "C" fn(ImageT, c_int, c_int) -> c_int,
    rbd_poll_io_events: unsafe extern "C" fn(ImageT, *mut CompletionT, c_int) -> c_int,
    rbd_aio_create_completion:
        unsafe extern "C" fn(*mut c_void, RbdCallback, *mut CompletionT) -> c_int,
    rbd_aio_get_return_value: unsafe extern "C" fn(CompletionT) -> isize,
    rbd_aio_get_arg: unsafe extern "C" fn(CompletionT) -> *mut c_void,
    rbd_aio_release: unsafe extern "C" fn(CompletionT),
    rbd_aio_is_complete: unsafe extern "C" fn(CompletionT) -> c_int,
    rbd_aio_readv:
        unsafe extern "C" fn(ImageT, *const libc::iovec, c_int, u64, CompletionT) -> c_int,
    rbd_aio_writev:
        unsafe extern "C" fn(ImageT, *const libc::iovec, c_int, u64, CompletionT) -> c_int,
    rbd_aio_flush: unsafe extern "C" fn(ImageT, CompletionT) -> c_int,
    rbd_aio_discard: unsafe extern "C" fn(ImageT, u64, u64, CompletionT) -> c_int,
    rbd_aio_write_zeroes:
        unsafe extern "C" fn(ImageT, u64, usize, CompletionT, c_int, c_int) -> c_int,
    rbd_update_watch:
        unsafe extern "C" fn(ImageT, *mut u64, Option<UpdateCallback>, *mut c_void) -> c_int,
    rbd_update_unwatch: unsafe extern "C" fn(ImageT, u64) -> c_int,
    /// Ceph 17 and later; Ceph 12 to 16 have only `rbd_aio_compare_and_write` (one
    /// contiguous buffer each). With neither, the bdev layer emulates compare-and-write.
    rbd_aio_compare_and_writev: Option<CompareAndWritev>,
    rbd_aio_compare_and_write: Option<CompareAndWrite>,
}

/// `rbd_aio_compare_and_write(image, off, len, cmp_buf, buf, c, mismatch_off, op_flags)`.
type CompareAndWrite = unsafe extern "C" fn(
    ImageT,
    u64,
    usize,
    *const libc::c_char,
    *const libc::c_char,
    CompletionT,
    *mut u64,
    c_int,
) -> isize;

/// `rbd_aio_compare_and_writev(image, off, cmp_iov, cmp_iovcnt, iov, iovcnt, c,
/// mismatch_off, op_flags)`: the write is done only if the compare data match; the
/// completion returns -EILSEQ when they differ (and the request fails with -EINVAL when it
/// crosses an object boundary).
type CompareAndWritev = unsafe extern "C" fn(
    ImageT,
    u64,
    *const libc::iovec,
    c_int,
    *const libc::iovec,
    c_int,
    CompletionT,
    *mut u64,
    c_int,
) -> isize;

static LIB: OnceLock<Result<Lib, String>> = OnceLock::new();

/// The loaded libraries, or why they could not be loaded (naming the packages).
pub fn lib() -> Result<&'static Lib, String> {
    LIB.get_or_init(load).as_ref().map_err(|e| e.clone())
}

/// Whether the loaded librbd compares and writes atomically itself (Ceph 16+).
pub fn has_compare_and_write() -> bool {
    lib().is_ok_and(|l| {
        l.rbd_aio_compare_and_writev.is_some() || l.rbd_aio_compare_and_write.is_some()
    })
}

fn load() -> Result<Lib, String> {
    load_named("librados.so.2", "librbd.so.1")
}

fn load_named(rados_name: &str, rbd_name: &str) -> Result<Lib, String> {
    let open = |name: &str| {
        // SAFETY: loading a shared library runs its initialisers; librados/librbd are the
        // system's Ceph client libraries, whose initialisers only set up static state.
        unsafe { Library::new(name) }.map_err(|e| {
            format!(
                "Ceph RBD support needs {name}, which could not be loaded ({e}); \
                 install the Debian packages {PACKAGES}"
            )
        })
    };
    let rados = open(rados_name)?;
    let rbd = open(rbd_name)?;
    macro_rules! sym {
        ($lib:expr, $name:ident) => {{
            // SAFETY: the symbol's type is the C prototype of librados.h/librbd.h (Ceph
            // 14 to 19 keep these signatures); the fn pointer is used only while the
            // Library lives, and it lives in the static LIB for the whole process.
            let s = unsafe { $lib.get(concat!(stringify!($name), "\0").as_bytes()) };
            let s = s.map_err(|e| {
                format!(
                    "{}: symbol {} missing: {e}",
                    stringify!($lib),
                    stringify!($name)
                )
            })?;
            *s
        }};
    }
    Ok(Lib {
        rados_create: sym!(rados, rados_create),
        rados_conf_read_file: sym!(rados, rados_conf_read_file),
        rados_conf_set: sym!(rados, rados_conf_set),
        rados_connect: sym!(rados, rados_connect),
        rados_shutdown: sym!(rados, rados_shutdown),
        rados_ioctx_create: sym!(rados, rados_ioctx_create),
        rados_ioctx_destroy: sym!(rados, rados_ioctx_destroy),
        rbd_open: sym!(rbd, rbd_open),
        rbd_open_read_only: sym!(rbd, rbd_open_read_only),
        rbd_close: sym!(rbd, rbd_close),
        rbd_get_size: sym!(rbd, rbd_get_size),
        rbd_resize: sym!(rbd, rbd_resize),
        rbd_set_image_notification: sym!(rbd, rbd_set_image_notification),
        rbd_poll_io_events: sym!(rbd, rbd_poll_io_events),
        rbd_aio_create_completion: sym!(rbd, rbd_aio_create_completion),
        rbd_aio_get_return_value: sym!(rbd, rbd_aio_get_return_value),
        rbd_aio_get_arg: sym!(rbd, rbd_aio_get_arg),
        rbd_aio_release: sym!(rbd, rbd_aio_release),
        rbd_aio_is_complete: sym!(rbd, rbd_aio_is_complete),
        rbd_aio_readv: sym!(rbd, rbd_aio_readv),
        rbd_aio_writev: sym!(rbd, rbd_aio_writev),
        rbd_aio_flush: sym!(rbd, rbd_aio_flush),
        rbd_aio_discard: sym!(rbd, rbd_aio_discard),
        rbd_aio_write_zeroes: sym!(rbd, rbd_aio_write_zeroes),
        rbd_update_watch: sym!(rbd, rbd_update_watch),
        rbd_update_unwatch: sym!(rbd, rbd_update_unwatch),
        // SAFETY: as `sym!`: the prototype of librbd.h (Ceph 16+), used only while the
        // Library lives (for the whole process).
        rbd_aio_compare_and_writev: unsafe { rbd.get(b"rbd_aio_compare_and_writev\0") }
            .ok()
            .map(|s: libloading::Symbol<'_, CompareAndWritev>| *s),
        // SAFETY: as above (librbd.h of Ceph 12+).
        rbd_aio_compare_and_write: unsafe { rbd.get(b"rbd_aio_compare_and_write\0") }
            .ok()
            .map(|s: libloading::Symbol<'_, CompareAndWrite>| *s),
        _rados: rados,
        _rbd: rbd,
    })
}

fn cstr(s: &str, what: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("{what} contains a NUL byte"))
}

fn rc(r: c_int) -> Result<(), i32> {
    if r < 0 {
        Err(r)
    } else {
        Ok(())
    }
}

/// A librados cluster handle (connected once `connect` returned Ok). Shut down on drop —
/// which blocks (it joins librados' threads), so drop it off the reactors.
pub struct Rados {
    lib: &'static Lib,
    h: RadosT,
}

// SAFETY: a rados_t may be used from any thread (librados is thread-safe); we never share
// it mutably without synchronisation (only shutdown, in Drop, needs exclusive access).
unsafe impl Send for Rados {}
// SAFETY: as above: the calls made through &Rados (ioctx creation) are thread-safe.
unsafe impl Sync for Rados {}

impl Rados {
    /// `rados_create` for client `user_id` (None: "admin"). Blocking-free.
    pub fn create(user_id: Option<&str>) -> Result<Self, String> {
        let lib = lib()?;
        let id = user_id.map(|u| cstr(u, "user_id")).transpose()?;
        let mut h: RadosT = std::ptr::null_mut();
        // SAFETY: h is a valid out pointer; id is NULL or a NUL-terminated string that
        // outlives the call.
        let r = unsafe {
            (lib.rados_create)(&mut h, id.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()))
        };
        if r < 0 || h.is_null() {
            return Err(format!("rados_create failed: {}", errno_text(r)));
        }
        Ok(Self { lib, h })
    }

    /// Reads a config file (None: the default search path).
    pub fn conf_read_file_opt(&self, path: Option<&str>) -> Result<(), i32> {
        let p = path
            .map(|p| CString::new(p).map_err(|_| -libc::EINVAL))
            .transpose()?;
        // SAFETY: self.h is a live handle not yet connected; p is NULL or outlives the call.
        rc(unsafe {
            (self.lib.rados_conf_read_file)(
                self.h,
                p.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
            )
        })
    }

    pub fn conf_set(&self, key: &str, value: &str) -> Result<(), i32> {
        let k = CString::new(key).map_err(|_| -libc::EINVAL)?;
        let v = CString::new(value).map_err(|_| -libc::EINVAL)?;
        // SAFETY: live handle; both strings outlive the call.
        rc(unsafe { (self.lib.rados_conf_set)(self.h, k.as_ptr(), v.as_ptr()) })
    }

    /// Blocks up to `client_mount_timeout`.
    pub fn connect(&self) -> Result<(), i32> {
        // SAFETY: live handle, configured, connected at most once (by our callers).
        rc(unsafe { (self.lib.rados_connect)(self.h) })
    }

    /// Blocks briefly (a pool lookup in the cached OSD map).
    pub fn ioctx(self: &std::sync::Arc<Self>, pool: &str) -> Result<IoCtx, i32> {
        let p = CString::new(pool).map_err(|_| -libc::EINVAL)?;
        let mut io: IoCtxT = std::ptr::null_mut();
        // SAFETY: connected handle; p outlives the call; io is a valid out pointer.
        rc(unsafe { (self.lib.rados_ioctx_create)(self.h, p.as_ptr(), &mut io) })?;
        Ok(IoCtx {
            lib: self.lib,
            h: io,
            _rados: self.clone(),
        })
    }
}

impl Drop for Rados {
    fn drop(&mut self) {
        // SAFETY: the last reference: no ioctx or image of it is alive (they hold an Arc).
        unsafe { (self.lib.rados_shutdown)(self.h) }
    }
}

/// A pool's I/O context; keeps its cluster handle alive.
pub struct IoCtx {
    lib: &'static Lib,
    h: IoCtxT,
    _rados: std::sync::Arc<Rados>,
}

// SAFETY: librados io contexts are thread-safe for the calls we make (image opens).
unsafe impl Send for IoCtx {}
// SAFETY: as above.
unsafe impl Sync for IoCtx {}

impl Drop for IoCtx {
    fn drop(&mut self) {
        // SAFETY: no image opened on it is alive (images hold an Arc of the IoCtx).
        unsafe { (self.lib.rados_ioctx_destroy)(self.h) }
    }
}

/// An open RBD image. I/O calls are non-blocking (AIO); open, close, size and resize block.
pub struct Image {
    lib: &'static Lib,
    h: ImageT,
    _io: std::sync::Arc<IoCtx>,
}

// SAFETY: librbd image handles are internally locked and usable from any thread; each
// channel's AIO calls come from one reactor, admin calls from helper threads.
unsafe impl Send for Image {}
// SAFETY: as above.
unsafe impl Sync for Image {}

impl Image {
    /// Blocks (reads the image header from the OSDs).
    pub fn open(io: &std::sync::Arc<IoCtx>, name: &str, read_only: bool) -> Result<Self, i32> {
        let n = CString::new(name).map_err(|_| -libc::EINVAL)?;
        let mut h: ImageT = std::ptr::null_mut();
        let f = if read_only {
            io.lib.rbd_open_read_only
        } else {
            io.lib.rbd_open
        };
        // SAFETY: live io context; n outlives the call; h a valid out pointer; no snapshot.
        rc(unsafe { f(io.h, n.as_ptr(), &mut h, std::ptr::null()) })?;
        Ok(Self {
            lib: io.lib,
            h,
            _io: io.clone(),
        })
    }

    pub fn size(&self) -> Result<u64, i32> {
        let mut s = 0u64;
        // SAFETY: open image; s a valid out pointer.
        rc(unsafe { (self.lib.rbd_get_size)(self.h, &mut s) })?;
        Ok(s)
    }

    pub fn resize(&self, size: u64) -> Result<(), i32> {
        // SAFETY: open image.
        rc(unsafe { (self.lib.rbd_resize)(self.h, size) })
    }

    /// Completions of this image are announced on the eventfd `fd` (which must stay open
    /// while the image is).
    pub fn notify_eventfd(&self, fd: c_int) -> Result<(), i32> {
        // SAFETY: open image; fd is an eventfd the caller keeps open until after close.
        rc(unsafe { (self.lib.rbd_set_image_notification)(self.h, fd, EVENT_TYPE_EVENTFD) })
    }

    /// Registers `cb(arg)` for header updates (resize by another client). `arg` must stay
    /// valid until `unwatch` returned.
    pub fn watch(&self, cb: UpdateCallback, arg: *mut c_void) -> Result<u64, i32> {
        let mut handle = 0u64;
        // SAFETY: open image; the caller keeps arg valid until unwatch (see RbdBdev).
        rc(unsafe { (self.lib.rbd_update_watch)(self.h, &mut handle, Some(cb), arg) })?;
        Ok(handle)
    }

    pub fn unwatch(&self, handle: u64) {
        // SAFETY: open image, a handle `watch` returned; blocks until callbacks are done.
        unsafe { (self.lib.rbd_update_unwatch)(self.h, handle) };
    }

    /// Moves completed AIO into `out`; returns how many.
    pub fn poll_events(&self, out: &mut [CompletionT]) -> usize {
        // SAFETY: open image; out has room for out.len() completion pointers.
        let n =
            unsafe { (self.lib.rbd_poll_io_events)(self.h, out.as_mut_ptr(), out.len() as c_int) };
        n.max(0) as usize
    }

    /// A completion with no callback whose argument is `arg` (reported by poll_events).
    pub fn completion(&self, arg: usize) -> Result<CompletionT, i32> {
        let mut c: CompletionT = std::ptr::null_mut();
        // SAFETY: c a valid out pointer; arg is an integer tag, never dereferenced.
        rc(unsafe { (self.lib.rbd_aio_create_completion)(arg as *mut c_void, None, &mut c) })?;
        Ok(c)
    }

    /// A completion whose end only writes 1 to the eventfd `fd` (from librbd's thread),
    /// for a call librbd does not announce on the image's event queue (its C
    /// compare-and-write, Ceph 16): the owner finds it done with [`Image::try_finish`].
    pub fn completion_waking(&self, fd: c_int) -> Result<CompletionT, i32> {
        let mut c: CompletionT = std::ptr::null_mut();
        // SAFETY: c a valid out pointer; the argument is the fd as an integer, which the
        // callback only writes to (the image's eventfd, open while the image is).
        rc(unsafe {
            (self.lib.rbd_aio_create_completion)(
                fd as isize as *mut c_void,
                Some(wake_eventfd),
                &mut c,
            )
        })?;
        Ok(c)
    }

    /// The return value of a `completion_waking` completion once it is done (then it is
    /// released), or `None` while it runs.
    pub fn try_finish(&self, c: CompletionT) -> Option<isize> {
        // SAFETY: c is a live completion this image's owner submitted and releases exactly
        // once, here, once it is complete.
        unsafe {
            if (self.lib.rbd_aio_is_complete)(c) == 0 {
                return None;
            }
            let ret = (self.lib.rbd_aio_get_return_value)(c);
            (self.lib.rbd_aio_release)(c);
            Some(ret)
        }
    }

    /// The argument of a polled completion (without releasing it).
    pub fn arg_of(&self, c: CompletionT) -> usize {
        // SAFETY: c came from poll_events and is not released yet.
        unsafe { (self.lib.rbd_aio_get_arg)(c) as usize }
    }

    /// The return value and tag of a polled completion, then releases it.
    pub fn finish(&self, c: CompletionT) -> (isize, usize) {
        // SAFETY: c came from poll_events and is released exactly once, here.
        unsafe {
            let ret = (self.lib.rbd_aio_get_return_value)(c);
            let arg = (self.lib.rbd_aio_get_arg)(c) as usize;
            (self.lib.rbd_aio_release)(c);
            (ret, arg)
        }
    }

    /// Releases a completion whose submission failed.
    pub fn release(&self, c: CompletionT) {
        // SAFETY: c was created by `completion` and never submitted.
        unsafe { (self.lib.rbd_aio_release)(c) }
    }

    /// # Safety
    /// `iov` and the memory it points at must stay valid (and, for reads, not otherwise
    /// accessed) until the completion is polled.
    pub unsafe fn readv(&self, iov: &[libc::iovec], off: u64, c: CompletionT) -> i32 {
        // SAFETY: per this fn's contract.
        unsafe { (self.lib.rbd_aio_readv)(self.h, iov.as_ptr(), iov.len() as c_int, off, c) }
    }

    /// # Safety
    /// As `readv` (the data is read by librbd until completion).
    pub unsafe fn writev(&self, iov: &[libc::iovec], off: u64, c: CompletionT) -> i32 {
        // SAFETY: per this fn's contract.
        unsafe { (self.lib.rbd_aio_writev)(self.h, iov.as_ptr(), iov.len() as c_int, off, c) }
    }

    pub fn aio_flush(&self, c: CompletionT) -> i32 {
        // SAFETY: open image; c a fresh completion.
        unsafe { (self.lib.rbd_aio_flush)(self.h, c) }
    }

    pub fn aio_discard(&self, off: u64, len: u64, c: CompletionT) -> i32 {
        // SAFETY: open image; c a fresh completion; no memory is passed.
        unsafe { (self.lib.rbd_aio_discard)(self.h, off, len, c) }
    }

    /// Compares the blocks at `off` with `cmp` and writes `data` if they match, in the
    /// OSDs; the completion returns -EILSEQ (and `*mismatch` the offset) when they differ.
    /// Without the iovec call (Ceph < 17) each side must be one buffer (-EINVAL otherwise).
    ///
    /// # Safety
    /// As `readv`, for both iovec arrays (librbd only reads them) and for `mismatch`,
    /// which librbd may write until the completion.
    pub unsafe fn compare_and_writev(
        &self,
        cmp: &[libc::iovec],
        data: &[libc::iovec],
        off: u64,
        c: CompletionT,
        mismatch: *mut u64,
    ) -> i32 {
        let r = if let Some(f) = self.lib.rbd_aio_compare_and_writev {
            // SAFETY: per this fn's contract.
            unsafe {
                f(
                    self.h,
                    off,
                    cmp.as_ptr(),
                    cmp.len() as c_int,
                    data.as_ptr(),
                    data.len() as c_int,
                    c,
                    mismatch,
                    0,
                )
            }
        } else if let Some(f) = self.lib.rbd_aio_compare_and_write {
            let ([cmp], [data]) = (cmp, data) else {
                return -libc::EINVAL;
            };
            if cmp.iov_len != data.iov_len {
                return -libc::EINVAL;
            }
            // SAFETY: per this fn's contract; both buffers are `iov_len` bytes.
            unsafe {
                f(
                    self.h,
                    off,
                    cmp.iov_len,
                    cmp.iov_base as *const libc::c_char,
                    data.iov_base as *const libc::c_char,
                    c,
                    mismatch,
                    0,
                )
            }
        } else {
            -(libc::EOPNOTSUPP as isize)
        };
        r.clamp(i32::MIN as isize, 0) as i32
    }

    pub fn aio_write_zeroes(&self, off: u64, len: u64, c: CompletionT) -> i32 {
        // SAFETY: open image; c a fresh completion; no memory is passed.
        unsafe { (self.lib.rbd_aio_write_zeroes)(self.h, off, len as usize, c, 0, 0) }
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        // SAFETY: the image is closed once; rbd_close waits for its in-flight AIO, whose
        // completions then are never polled (their buffers are owned elsewhere and kept,
        // see the channel's teardown). Blocking: dropped on helper threads only.
        unsafe { (self.lib.rbd_close)(self.h) };
    }
}

/// "No such file or directory (ENOENT)" for a negative errno.
pub fn errno_text(r: i32) -> String {
    let e = r.abs();
    let name = match e {
        libc::ENOENT => "ENOENT",
        libc::EACCES => "EACCES",
        libc::EPERM => "EPERM",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::EINVAL => "EINVAL",
        libc::EIO => "EIO",
        libc::ENOTCONN => "ENOTCONN",
        libc::EEXIST => "EEXIST",
        libc::EBUSY => "EBUSY",
        libc::EROFS => "EROFS",
        _ => "",
    };
    let text = std::io::Error::from_raw_os_error(e).to_string();
    if name.is_empty() {
        text
    } else {
        format!("{text} ({name})")
    }
}

/// The callback of `completion_waking`: wakes the reactor owning the eventfd `arg`.
unsafe extern "C" fn wake_eventfd(_c: CompletionT, arg: *mut c_void) {
    let one: u64 = 1;
    // SAFETY: arg is the fd integer given to `completion_waking` (an eventfd open while
    // the image is); 8 bytes from a local.
    unsafe { libc::write(arg as isize as c_int, (&one as *const u64).cast(), 8) };
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_missing_library_names_the_packages() {
        let e = super::load_named("libpollux-no-such-rados.so.2", "librbd.so.1")
            .err()
            .expect("a library that does not exist cannot load");
        assert!(e.contains("libpollux-no-such-rados.so.2"), "{e}");
        assert!(e.contains("librbd1 librados2"), "{e}");
    }
}
