//! uring: a bdev over a file or block device, driven by io_uring.
//!
//! The file is opened once (O_DIRECT when the target allows it, buffered otherwise; IOPOLL is
//! not assumed) and shared by `Arc`; every reactor's channel creates its own ring on that
//! reactor, registers the ring fd as a reactor wake source (it turns readable when
//! completions are posted), queues SQEs on submit, and submits the batch and reaps
//! completions in its poll. Read and write are readv/writev of the scatter list, flush is
//! fsync, unmap punches a hole and write_zeroes zeroes the range (fallocate), all
//! asynchronous.

use super::util::{open_file_bdev, status_of_errno, BackingFile, SlotTable};
use super::{
    BdevError, BdevHandle, BdevInfo, BdevIo, Completer, IoStatus, IoType, IoTypes, ModuleChannel,
};
use crate::reactor::{self, WakeSource};
use io_uring::{opcode, squeue, types, IoUring};
use serde_json::{json, Value};
use std::os::fd::AsRawFd;
use std::sync::Arc;

pub const PRODUCT_NAME: &str = "URING bdev";
/// Ring entries (and in-flight I/O) per channel.
const RING_DEPTH: u32 = 256;

pub struct UringBdev {
    file: Arc<BackingFile>,
    block_size: u32,
    requested_block_size: Option<u32>,
}

impl UringBdev {
    pub fn filename(&self) -> &str {
        &self.file.path
    }
}

struct UringChannel {
    ring: IoUring,
    file: Arc<BackingFile>,
    slots: SlotTable,
    block_size: u64,
    unsubmitted: usize,
    _wake: WakeSource,
}

impl UringChannel {
    fn entry_for(&mut self, idx: u32) -> Option<squeue::Entry> {
        let fd = types::Fd(self.file.file.as_raw_fd());
        let bs = self.block_size;
        let slot = self.slots.get(idx)?;
        let io = slot.io.as_ref()?;
        let off = io.offset_blocks * bs;
        let len = io.num_blocks * bs;
        let entry = match io.io_type {
            IoType::Read => opcode::Readv::new(fd, slot.iov.as_ptr(), slot.iov.len() as u32)
                .offset(off)
                .build(),
            IoType::Write => opcode::Writev::new(fd, slot.iov.as_ptr(), slot.iov.len() as u32)
                .offset(off)
                .build(),
            IoType::Flush => opcode::Fsync::new(fd).build(),
            IoType::Unmap => opcode::Fallocate::new(fd, len)
                .offset(off)
                .mode(libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE)
                .build(),
            IoType::WriteZeroes => opcode::Fallocate::new(fd, len)
                .offset(off)
                .mode(libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE)
                .build(),
            // Compares are emulated by the layer (this module does not advertise them).
            IoType::Reset | IoType::Compare | IoType::CompareAndWrite => return None,
        };
        Some(entry.user_data(idx as u64))
    }

    fn reap(&mut self, done: &Completer) -> usize {
        let mut n = 0;
        // Collect first: completing may not touch the ring while the CQ is borrowed.
        loop {
            let next = self.ring.completion().next();
            let Some(cqe) = next else { break };
            n += 1;
            let Some((io, expect)) = self.slots.remove(cqe.user_data() as u32) else {
                tracing::warn!(user_data = cqe.user_data(), "uring completion for no I/O");
                continue;
            };
            let res = cqe.result();
            let status = if res < 0 {
                status_of_errno(-res)
            } else if io.io_type.carries_data() && res as usize != expect {
                IoStatus::Failed
            } else {
                IoStatus::Success
            };
            done.complete(io, status);
        }
        n
    }
}

impl ModuleChannel for UringChannel {
    fn submit(&mut self, io: BdevIo, done: &Completer) {
        if io.io_type == IoType::Reset {
            return done.complete(io, IoStatus::Success);
        }
        let idx = match self.slots.insert(io) {
            Ok(idx) => idx,
            Err(io) => return done.complete(io, IoStatus::NoMem),
        };
        let Some(entry) = self.entry_for(idx) else {
            if let Some((io, _)) = self.slots.remove(idx) {
                done.complete(io, IoStatus::Failed);
            }
            return;
        };
        // SAFETY: the SQE points at the slot's iovec array and the I/O's buffers, which stay
        // in the slot table (not moved, not freed) until its completion is reaped; the
        // channel does not drop the ring while I/O is in flight (see Drop).
        let pushed = unsafe { self.ring.submission().push(&entry).is_ok() };
        if !pushed {
            if let Some((io, _)) = self.slots.remove(idx) {
                done.complete(io, IoStatus::NoMem);
            }
            return;
        }
        self.unsubmitted += 1;
    }

    fn poll(&mut self, done: &Completer) -> usize {
        let mut work = 0;
        if self.unsubmitted > 0 {
            match self.ring.submit() {
                Ok(_) => {
                    work += self.unsubmitted;
                    self.unsubmitted = 0;
                }
                Err(e)
                    if e.raw_os_error() == Some(libc::EAGAIN)
                        || e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => tracing::warn!(error = %e, "io_uring submit failed"),
            }
        }
        if self.slots.in_flight() > 0 {
            work += self.reap(done);
        }
        work
    }
}

impl Drop for UringChannel {
    fn drop(&mut self) {
        // Teardown with I/O in flight (reactor shutdown): wait for the kernel to finish
        // with our buffers before they are freed.
        let mut guard = 0;
        while self.slots.in_flight() > 0 && guard < 1000 {
            guard += 1;
            let _ = self.ring.submit_and_wait(1);
            while let Some(cqe) = self.ring.completion().next() {
                self.slots.remove(cqe.user_data() as u32);
            }
        }
    }
}

impl super::Bdev for UringBdev {
    fn open_channel(
        &self,
        _bdev: &BdevHandle,
        _done: &Completer,
    ) -> Result<Box<dyn ModuleChannel>, BdevError> {
        let ring = IoUring::new(RING_DEPTH).map_err(|e| BdevError::io("creating io_uring", e))?;
        let wake = reactor::add_wake_fd(ring.as_raw_fd())
            .map_err(|e| BdevError::io("registering the ring as wake source", e))?;
        Ok(Box::new(UringChannel {
            ring,
            file: self.file.clone(),
            slots: SlotTable::new(RING_DEPTH as usize),
            block_size: self.block_size as u64,
            unsubmitted: 0,
            _wake: wake,
        }))
    }

    fn driver_specific(&self) -> Value {
        json!({"uring": {"filename": self.file.path, "direct_io": self.file.direct}})
    }

    fn config(&self, info: &BdevInfo) -> Option<Value> {
        let mut p = json!({
            "name": info.name,
            "filename": self.file.path,
            "uuid": info.uuid,
        });
        if let Some(bs) = self.requested_block_size {
            p["block_size"] = json!(bs);
        }
        Some(crate::rpc::config_entry("bdev_uring_create", p))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[derive(Debug, Clone)]
pub struct UringOpts {
    pub name: String,
    pub filename: String,
    pub block_size: Option<u32>,
    pub uuid: Option<String>,
}

/// Creates and registers a uring bdev (main reactor). Fails if io_uring is unavailable.
pub fn create(opts: UringOpts, done: impl FnOnce(Result<BdevHandle, BdevError>) + Send + 'static) {
    let made = (|| {
        // Probe io_uring here so an unusable kernel fails the create, not the first channel.
        IoUring::new(2).map_err(|e| BdevError::io("io_uring is not available", e))?;
        let (info, file) = open_file_bdev(
            &opts.name,
            PRODUCT_NAME,
            &opts.filename,
            false,
            opts.block_size,
            opts.uuid.as_deref(),
            IoTypes::of(&IoType::ALL),
        )?;
        let block_size = info.block_size;
        Ok((
            info,
            UringBdev {
                file: Arc::new(file),
                block_size,
                requested_block_size: opts.block_size,
            },
        ))
    })();
    match made {
        Ok((info, bdev)) => super::register(info, Box::new(bdev), done),
        Err(e) => done(Err(e)),
    }
}
