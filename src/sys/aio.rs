//! Linux native AIO: the kernel's `iocb` and `io_event` layouts and an AIO context
//! (io_setup / io_submit / io_getevents / io_destroy).

pub const IOCB_CMD_FSYNC: u16 = 2;
pub const IOCB_CMD_PREADV: u16 = 7;
pub const IOCB_CMD_PWRITEV: u16 = 8;
pub const IOCB_FLAG_RESFD: u32 = 1;

/// The kernel's `struct iocb` (linux/aio_abi.h, little-endian layout).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct Iocb {
    pub aio_data: u64,
    pub aio_key: u32,
    pub aio_rw_flags: i32,
    pub aio_lio_opcode: u16,
    pub aio_reqprio: i16,
    pub aio_fildes: u32,
    pub aio_buf: u64,
    pub aio_nbytes: u64,
    pub aio_offset: i64,
    pub aio_reserved2: u64,
    pub aio_flags: u32,
    pub aio_resfd: u32,
}
const _: () = assert!(std::mem::size_of::<Iocb>() == 64);

/// The kernel's `struct io_event`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct IoEvent {
    pub data: u64,
    pub obj: u64,
    pub res: i64,
    pub res2: i64,
}
const _: () = assert!(std::mem::size_of::<IoEvent>() == 32);

/// An AIO context (`aio_context_t`), destroyed on drop.
pub struct AioContext(libc::c_ulong);

impl AioContext {
    pub fn new(depth: usize) -> std::io::Result<Self> {
        let mut ctx: libc::c_ulong = 0;
        // SAFETY: io_setup writes the new context id to the valid pointer.
        let r = unsafe { libc::syscall(libc::SYS_io_setup, depth as libc::c_long, &mut ctx) };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self(ctx))
    }

    /// Submits one iocb; Ok(()) when the kernel accepted it.
    ///
    /// # Safety
    /// The kernel reads (writes, for a read) the memory the iocb describes (its iovec array
    /// and the buffers it points to) asynchronously: all of it must stay valid, and the
    /// buffers of a read must not be accessed otherwise, until its event is reaped with
    /// [`get_events`](Self::get_events).
    pub unsafe fn submit(&self, iocb: &Iocb) -> std::io::Result<()> {
        let mut ptrs = [iocb as *const Iocb];
        // SAFETY: one valid iocb pointer; the kernel copies the iocb during the call; the
        // caller keeps what it describes valid until the event is reaped (see # Safety).
        let r = unsafe {
            libc::syscall(
                libc::SYS_io_submit,
                self.0,
                1 as libc::c_long,
                ptrs.as_mut_ptr(),
            )
        };
        match r {
            1 => Ok(()),
            r if r < 0 => Err(std::io::Error::last_os_error()),
            _ => Err(std::io::Error::from_raw_os_error(libc::EAGAIN)),
        }
    }

    /// Reaps up to `events.len()` completions; `wait` blocks for at least one.
    pub fn get_events(&self, events: &mut [IoEvent], wait: bool) -> usize {
        let timeout = libc::timespec {
            tv_sec: if wait { 1 } else { 0 },
            tv_nsec: 0,
        };
        // SAFETY: events is valid for events.len() writes of io_event; timeout is valid.
        let r = unsafe {
            libc::syscall(
                libc::SYS_io_getevents,
                self.0,
                if wait { 1 } else { 0 } as libc::c_long,
                events.len() as libc::c_long,
                events.as_mut_ptr(),
                &timeout as *const libc::timespec,
            )
        };
        r.max(0) as usize
    }
}

impl Drop for AioContext {
    fn drop(&mut self) {
        // SAFETY: the context was created by io_setup and is destroyed once.
        unsafe { libc::syscall(libc::SYS_io_destroy, self.0) };
    }
}
