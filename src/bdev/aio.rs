//! aio: a bdev over a file or block device driven by Linux native AIO, for hosts where io_uring
//! is disabled (containers).
//!
//! The AIO context and the kernel's structures are in `sys::aio`. Each reactor's channel has
//! its own AIO context and an eventfd the kernel signals on completion (IOCB_FLAG_RESFD),
//! registered as a reactor wake source; the channel's poll reaps events without blocking. Read
//! and write are preadv/pwritev, flush is an AIO fsync; AIO has no fallocate, so unmap and
//! write_zeroes write zeroes from a shared zero buffer in chunks (both then read back zeroes).

use super::util::{open_file_bdev, status_of_errno, BackingFile, SlotTable};
use super::{
    BdevError, BdevHandle, BdevInfo, BdevIo, Completer, IoStatus, IoType, IoTypes, ModuleChannel,
};
use crate::buf::IoBuf;
use crate::reactor::{self, WakeSource};
use crate::sys::aio::{
    AioContext, IoEvent, Iocb, IOCB_CMD_FSYNC, IOCB_CMD_PREADV, IOCB_CMD_PWRITEV, IOCB_FLAG_RESFD,
};
use crate::sys::EventFd;
use serde_json::{json, Value};
use std::os::fd::AsRawFd;
use std::sync::Arc;

pub const PRODUCT_NAME: &str = "AIO disk";
/// In-flight I/O per channel.
const AIO_DEPTH: usize = 128;
/// Zero buffer used to emulate unmap and write_zeroes, and iovecs per zeroing write.
const ZERO_BUF_LEN: usize = 128 * 1024;
const ZERO_IOVS: usize = 64;

pub struct AioBdev {
    file: Arc<BackingFile>,
    block_size: u32,
    requested_block_size: Option<u32>,
    readonly: bool,
}

/// Progress of an emulated zeroing I/O, per slot: next byte to zero and end.
#[derive(Clone, Copy, Default)]
struct ZeroProgress {
    next: u64,
    end: u64,
}

struct AioChannel {
    ctx: AioContext,
    eventfd: EventFd,
    file: Arc<BackingFile>,
    slots: SlotTable,
    zeroing: Vec<ZeroProgress>,
    zero_buf: IoBuf,
    events: Vec<IoEvent>,
    block_size: u64,
    _wake: WakeSource,
}

impl AioChannel {
    fn base_iocb(&self, idx: u32) -> Iocb {
        Iocb {
            aio_data: idx as u64,
            aio_fildes: self.file.file.as_raw_fd() as u32,
            aio_flags: IOCB_FLAG_RESFD,
            aio_resfd: self.eventfd.as_raw_fd() as u32,
            ..Default::default()
        }
    }

    /// Prepares the slot's next zeroing chunk and returns its iocb.
    fn zero_chunk(&mut self, idx: u32) -> Option<Iocb> {
        let p = self.zeroing[idx as usize];
        let len = (p.end - p.next).min((ZERO_BUF_LEN * ZERO_IOVS) as u64) as usize;
        let zero_ptr = self.zero_buf.as_ptr() as *mut libc::c_void;
        let mut iocb = self.base_iocb(idx);
        let slot = self.slots.get_mut(idx)?;
        slot.iov.clear();
        let mut left = len;
        while left > 0 {
            let n = left.min(ZERO_BUF_LEN);
            slot.iov.push(libc::iovec {
                iov_base: zero_ptr,
                iov_len: n,
            });
            left -= n;
        }
        slot.expect = len;
        iocb.aio_lio_opcode = IOCB_CMD_PWRITEV;
        iocb.aio_buf = slot.iov.as_ptr() as u64;
        iocb.aio_nbytes = slot.iov.len() as u64;
        iocb.aio_offset = p.next as i64;
        self.zeroing[idx as usize].next += len as u64;
        Some(iocb)
    }

    fn iocb_for(&mut self, idx: u32) -> Option<Iocb> {
        let bs = self.block_size;
        let slot = self.slots.get(idx)?;
        let io = slot.io.as_ref()?;
        let mut iocb = self.base_iocb(idx);
        match io.io_type {
            IoType::Read | IoType::Write => {
                iocb.aio_lio_opcode = if io.io_type == IoType::Read {
                    IOCB_CMD_PREADV
                } else {
                    IOCB_CMD_PWRITEV
                };
                iocb.aio_buf = slot.iov.as_ptr() as u64;
                iocb.aio_nbytes = slot.iov.len() as u64;
                iocb.aio_offset = (io.offset_blocks * bs) as i64;
                Some(iocb)
            }
            IoType::Flush => {
                iocb.aio_lio_opcode = IOCB_CMD_FSYNC;
                Some(iocb)
            }
            IoType::Unmap | IoType::WriteZeroes => {
                let start = io.offset_blocks * bs;
                self.zeroing[idx as usize] = ZeroProgress {
                    next: start,
                    end: start + io.num_blocks * bs,
                };
                self.zero_chunk(idx)
            }
            // Compares are emulated by the layer (this module does not advertise them).
            IoType::Reset | IoType::Compare | IoType::CompareAndWrite => None,
        }
    }

    /// Submits the slot's iocb; on failure completes the I/O with the mapped status.
    fn start(&mut self, idx: u32, iocb: Option<Iocb>, done: &Completer) {
        let result = match iocb {
            // SAFETY: the iocb points at the slot's iovec array and the I/O's buffers (or the
            // channel's zero buffer), all owned by the slot table / channel until the event
            // is reaped in `poll`; dropping the channel waits for every in-flight event.
            Some(iocb) => unsafe { self.ctx.submit(&iocb) }
                .map_err(|e| status_of_errno(e.raw_os_error().unwrap_or(libc::EIO))),
            None => Err(IoStatus::Failed),
        };
        if let Err(status) = result {
            if let Some((io, _)) = self.slots.remove(idx) {
                done.complete(io, status);
            }
        }
    }

    fn drain_eventfd(&self) {
        self.eventfd.drain();
    }
}

impl ModuleChannel for AioChannel {
    fn submit(&mut self, io: BdevIo, done: &Completer) {
        if io.io_type == IoType::Reset {
            return done.complete(io, IoStatus::Success);
        }
        let idx = match self.slots.insert(io) {
            Ok(idx) => idx,
            Err(io) => return done.complete(io, IoStatus::NoMem),
        };
        let iocb = self.iocb_for(idx);
        self.start(idx, iocb, done);
    }

    fn poll(&mut self, done: &Completer) -> usize {
        if self.slots.in_flight() == 0 {
            return 0;
        }
        self.drain_eventfd();
        let mut events = std::mem::take(&mut self.events);
        let n = self.ctx.get_events(&mut events, false);
        for ev in &events[..n] {
            let idx = ev.data as u32;
            let Some(slot) = self.slots.get(idx) else {
                tracing::warn!(data = ev.data, "aio event for no I/O");
                continue;
            };
            let expect = slot.expect;
            let zeroing = slot
                .io
                .as_ref()
                .is_some_and(|io| matches!(io.io_type, IoType::Unmap | IoType::WriteZeroes));
            let status = if ev.res < 0 {
                status_of_errno((-ev.res) as i32)
            } else if (zeroing || slot.io.as_ref().is_some_and(|io| io.io_type.carries_data()))
                && ev.res as usize != expect
            {
                IoStatus::Failed
            } else {
                IoStatus::Success
            };
            if status == IoStatus::Success && zeroing {
                let p = self.zeroing[idx as usize];
                if p.next < p.end {
                    let iocb = self.zero_chunk(idx);
                    self.start(idx, iocb, done);
                    continue;
                }
            }
            if let Some((io, _)) = self.slots.remove(idx) {
                done.complete(io, status);
            }
        }
        self.events = events;
        n
    }
}

impl Drop for AioChannel {
    fn drop(&mut self) {
        // Teardown with I/O in flight: wait for the kernel to finish with our buffers.
        let mut events = std::mem::take(&mut self.events);
        let mut guard = 0;
        while self.slots.in_flight() > 0 && guard < 100 {
            guard += 1;
            let n = self.ctx.get_events(&mut events, true);
            for ev in &events[..n] {
                self.slots.remove(ev.data as u32);
            }
        }
    }
}

impl super::Bdev for AioBdev {
    fn open_channel(
        &self,
        _bdev: &BdevHandle,
        _done: &Completer,
    ) -> Result<Box<dyn ModuleChannel>, BdevError> {
        let ctx = AioContext::new(AIO_DEPTH).map_err(|e| BdevError::io("io_setup", e))?;
        let eventfd = EventFd::new().map_err(|e| BdevError::io("eventfd", e))?;
        let wake = reactor::add_wake_fd(eventfd.as_raw_fd())
            .map_err(|e| BdevError::io("registering the eventfd as wake source", e))?;
        Ok(Box::new(AioChannel {
            ctx,
            eventfd,
            file: self.file.clone(),
            slots: SlotTable::new(AIO_DEPTH),
            zeroing: vec![ZeroProgress::default(); AIO_DEPTH],
            zero_buf: IoBuf::zeroed(ZERO_BUF_LEN),
            events: vec![IoEvent::default(); AIO_DEPTH],
            block_size: self.block_size as u64,
            _wake: wake,
        }))
    }

    fn driver_specific(&self) -> Value {
        json!({"aio": {"filename": self.file.path, "block_size_override": self.requested_block_size.is_some(), "readonly": self.readonly, "direct_io": self.file.direct}})
    }

    fn config(&self, info: &BdevInfo) -> Option<Value> {
        let mut p = json!({
            "name": info.name,
            "filename": self.file.path,
            "readonly": self.readonly,
            "uuid": info.uuid,
        });
        if let Some(bs) = self.requested_block_size {
            p["block_size"] = json!(bs);
        }
        Some(crate::rpc::config_entry("bdev_aio_create", p))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[derive(Debug, Clone)]
pub struct AioOpts {
    pub name: String,
    pub filename: String,
    pub block_size: Option<u32>,
    pub readonly: bool,
    pub uuid: Option<String>,
}

/// Creates and registers an aio bdev (main reactor).
pub fn create(opts: AioOpts, done: impl FnOnce(Result<BdevHandle, BdevError>) + Send + 'static) {
    let made = (|| {
        let types = if opts.readonly {
            IoTypes::of(&[IoType::Read, IoType::Flush, IoType::Reset])
        } else {
            IoTypes::of(&IoType::ALL)
        };
        let (info, file) = open_file_bdev(
            &opts.name,
            PRODUCT_NAME,
            &opts.filename,
            opts.readonly,
            opts.block_size,
            opts.uuid.as_deref(),
            types,
        )?;
        let block_size = info.block_size;
        Ok((
            info,
            AioBdev {
                file: Arc::new(file),
                block_size,
                requested_block_size: opts.block_size,
                readonly: opts.readonly,
            },
        ))
    })();
    match made {
        Ok((info, bdev)) => super::register(info, Box::new(bdev), done),
        Err(e) => done(Err(e)),
    }
}
