//! The controller's I/O commands: read, write, compare, fused compare-and-write, flush, write zeroes, deallocate.

use super::{compare_and_write_pair, Controller};
use crate::buf::IoBuf;
use crate::nvmf::host::qpair::{Completion, DataBuf, Request};
use crate::nvmf::host::{HostError, OnDone};
use crate::nvmf::wire::{io_opc, DsmRange, SglDescriptor, Sqe};
use std::cell::RefCell;
use std::rc::Rc;
use zerocopy::IntoBytes;

/// Defines data commands that differ only in opcode and data direction: each sends
/// `blocks` blocks at `slba` with `buf` through [`Controller::data_command`] and gives the
/// buffer back to `cb`.
macro_rules! data_commands {
    ($($(#[$doc:meta])* $name:ident: $opcode:expr, $dir:ident;)*) => {$(
        $(#[$doc])*
        pub fn $name(
            &self,
            qid: u16,
            nsid: u32,
            slba: u64,
            blocks: u32,
            buf: IoBuf,
            cb: impl OnDone<IoBuf>,
        ) {
            self.data_command(qid, $opcode, nsid, slba, blocks, DataBuf::$dir(buf), cb);
        }
    )*};
}

impl Controller {
    data_commands! {
        /// Reads `blocks` blocks at `slba` into `buf`.
        read: io_opc::READ, Read;
        /// Writes `buf` (a whole number of blocks) at `slba`.
        write: io_opc::WRITE, Write;
        /// Compares `buf` (a whole number of blocks) with the blocks at `slba`: Compare
        /// Failure (SCT 2h, SC 85h) as [`HostError::Nvme`] when they differ.
        compare: io_opc::COMPARE, Write;
    }

    /// Submits two commands adjacent on queue `qid` (nothing of this host between them);
    /// `cb` gets both completions. Both are refused at once when the queue lacks room for
    /// two.
    pub fn submit_pair(
        &self,
        qid: u16,
        first: Request,
        second: Request,
        cb: impl FnOnce(Completion, Completion) + 'static,
    ) {
        let room = {
            let inner = self.inner.borrow();
            let q = if qid == 0 {
                Some(&inner.admin)
            } else {
                inner.io.get(qid as usize - 1)
            };
            q.is_some_and(|q| q.outstanding() + 2 <= q.depth())
        };
        if !room {
            let fail = |req: Request| Completion {
                tag: 0,
                result: Err(HostError::QueueFull),
                buf: req.into_buf(),
            };
            return cb(fail(first), fail(second));
        }
        let both: Rc<RefCell<(Option<Completion>, Option<Completion>)>> = Rc::default();
        let cb = Rc::new(RefCell::new(Some(cb)));
        let finish = move |both: &Rc<RefCell<(Option<Completion>, Option<Completion>)>>| {
            let mut b = both.borrow_mut();
            if b.0.is_some() && b.1.is_some() {
                let (Some(c1), Some(c2)) = (b.0.take(), b.1.take()) else {
                    return;
                };
                drop(b);
                if let Some(cb) = cb.borrow_mut().take() {
                    cb(c1, c2);
                }
            }
        };
        let (b1, f1) = (both.clone(), finish.clone());
        self.submit(qid, first, move |c| {
            b1.borrow_mut().0 = Some(c);
            f1(&b1);
        });
        let b2 = both;
        self.submit(qid, second, move |c| {
            b2.borrow_mut().1 = Some(c);
            finish(&b2);
        });
    }

    /// The fused Compare and Write: writes `data` at `slba` only if the blocks equal
    /// `expect`, atomically. `cb` gets the Compare's and the Write's results (a mismatch:
    /// the Compare fails with Compare Failure, the Write with Command Aborted due to Failed
    /// Fused Command).
    #[allow(clippy::too_many_arguments)]
    pub fn compare_and_write(
        &self,
        qid: u16,
        nsid: u32,
        slba: u64,
        blocks: u32,
        expect: IoBuf,
        data: IoBuf,
        cb: impl FnOnce(Result<u32, HostError>, Result<u32, HostError>) + 'static,
    ) {
        let (first, second) = compare_and_write_pair(nsid, slba, blocks, expect, data);
        self.submit_pair(qid, first, second, move |c1, c2| {
            cb(c1.status(), c2.status())
        });
    }

    /// A read or write of `blocks` blocks at `slba`; the callback gets the buffer back.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn data_command(
        &self,
        qid: u16,
        opcode: u8,
        nsid: u32,
        slba: u64,
        blocks: u32,
        data: DataBuf,
        cb: impl OnDone<IoBuf>,
    ) {
        let sqe = Sqe::rw(opcode, 0, nsid, slba, blocks, SglDescriptor::default());
        self.command(qid, Request::new(sqe, data), move |r| {
            cb(r.and_then(|(_, b)| b.ok_or_else(|| HostError::Protocol("no data".into()))))
        });
    }

    pub fn flush(&self, qid: u16, nsid: u32, cb: impl OnDone<()>) {
        let sqe = Sqe::new(io_opc::FLUSH, 0, nsid);
        self.command(qid, Request::new(sqe, DataBuf::None), move |r| {
            cb(r.map(|_| ()))
        });
    }

    pub fn write_zeroes(&self, qid: u16, nsid: u32, slba: u64, blocks: u32, cb: impl OnDone<()>) {
        let sqe = Sqe::write_zeroes(0, nsid, slba, blocks, false);
        self.command(qid, Request::new(sqe, DataBuf::None), move |r| {
            cb(r.map(|_| ()))
        });
    }

    /// Dataset Management with the deallocate attribute over `(slba, blocks)` ranges.
    pub fn deallocate(&self, qid: u16, nsid: u32, ranges: &[(u64, u32)], cb: impl OnDone<()>) {
        if ranges.is_empty() || ranges.len() > crate::nvmf::wire::dsm::MAX_RANGES {
            return cb(Err(HostError::Invalid(format!(
                "{} DSM ranges (allowed 1..=256)",
                ranges.len()
            ))));
        }
        let mut buf = IoBuf::zeroed(ranges.len() * DsmRange::SIZE);
        for (i, &(slba, nlb)) in ranges.iter().enumerate() {
            let range = DsmRange {
                context_attributes: 0.into(),
                nlb: nlb.into(),
                slba: slba.into(),
            };
            buf[i * DsmRange::SIZE..(i + 1) * DsmRange::SIZE].copy_from_slice(range.as_bytes());
        }
        let sqe = Sqe::dataset_management(
            0,
            nsid,
            ranges.len() as u16,
            crate::nvmf::wire::dsm::DEALLOCATE,
            SglDescriptor::default(),
        );
        self.command(qid, Request::new(sqe, DataBuf::Write(buf)), move |r| {
            cb(r.map(|_| ()))
        });
    }
}
