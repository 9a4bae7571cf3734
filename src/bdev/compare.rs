//! The bdev layer's compare and compare-and-write for modules that do not implement them: read + compare, and a range lock around read, compare and write.
//!
//! A module that implements [`IoType::Compare`] or [`IoType::CompareAndWrite`] itself says
//! so in its I/O types (RBD: `rbd_aio_compare_and_writev`); for any other bdev that reads
//! (and writes) the layer serves them through a second channel of the same bdev on the
//! same reactor, opened by the first such I/O: Compare reads the blocks and compares them
//! with the I/O's data; CompareAndWrite first locks the block range on every channel of
//! the bdev (`range_lock`), then reads and compares, writes the second half of the data if
//! they are equal, and releases the lock. The I/O completes `Miscompare` when the data
//! differ (nothing written), otherwise with the status of the read or the write.
//!
//! Stacked bdevs: passthru, delay and split advertise their base's types, so a compare
//! passes through to a base that implements it and is emulated at the stacked layer
//! otherwise (the stacked bdev claims its base, so every write to the range passes that
//! layer's channels); the error bdev never advertises them, so injected read and write
//! errors reach the emulation's reads and writes. Rate limits count the reads and writes.

use super::{range_lock, BdevHandle, BdevIo, ChannelShared, Completer, IoChannel, IoSink};
use super::{IoStatus, IoType};
use crate::buf::IoBuf;
use slab::Slab;
use std::cell::RefCell;
use std::rc::{Rc, Weak};

/// How many copies of the data of `num_blocks` the I/O carries (compare-and-write: the
/// compare data, then the write data).
pub(super) fn data_copies(t: IoType) -> u64 {
    if t == IoType::CompareAndWrite {
        2
    } else {
        1
    }
}

/// The index of the first buffer of a compare-and-write's write data: the compare data
/// must end on a buffer boundary (`None` if it does not).
pub(super) fn split_at(io: &BdevIo) -> Option<usize> {
    let half = io.buf_len() / 2;
    let mut sum = 0;
    for (i, b) in io.bufs.iter().enumerate() {
        if sum == half {
            return Some(i);
        }
        sum += b.len();
    }
    (sum == half).then_some(io.bufs.len())
}

/// Whether `data` (contiguous) equals the first `data.len()` bytes of `bufs`.
fn same_data(data: &[u8], bufs: &[IoBuf]) -> bool {
    let mut rest = data;
    for b in bufs {
        if rest.is_empty() {
            break;
        }
        let n = b.len().min(rest.len());
        if b.as_slice()[..n] != rest[..n] {
            return false;
        }
        rest = &rest[n..];
    }
    rest.is_empty()
}

/// One emulated compare (or compare-and-write) in progress.
struct Op {
    /// The user's I/O, completed on its channel at the end.
    io: BdevIo,
    /// The range lock a compare-and-write holds (0: none).
    lock: u64,
}

/// The emulation of one user channel.
pub(super) struct Fallback {
    bdev: BdevHandle,
    user: Completer,
    /// The channel the reads and writes go through (its completions come to `Inner`).
    inner: IoChannel,
    ops: RefCell<Slab<Op>>,
}

/// The sink of the emulation's reads and writes.
struct Inner(RefCell<Weak<Fallback>>);

impl IoSink for Inner {
    fn io_done(&self, io: BdevIo) {
        if let Some(f) = self.0.borrow().upgrade() {
            f.step_done(io);
        }
    }
}

impl Fallback {
    /// Whether the layer can emulate `t` on `bdev` (the module reads, and writes for
    /// compare-and-write).
    pub(super) fn serves(bdev: &BdevHandle, t: IoType) -> bool {
        match t {
            IoType::Compare => bdev.supports(IoType::Read),
            IoType::CompareAndWrite => bdev.supports(IoType::Read) && bdev.supports(IoType::Write),
            _ => false,
        }
    }

    /// Starts an accepted compare or compare-and-write of channel `ch`.
    pub(super) fn submit(ch: &Rc<ChannelShared>, io: BdevIo) {
        let user = Completer(ch.core.clone());
        let fallback = match Self::of(ch) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(bdev = %ch.bdev.name(), "compare emulation: {e}");
                return user.complete(io, IoStatus::Failed);
            }
        };
        let (offset, num) = (io.offset_blocks, io.num_blocks);
        let caw = io.io_type == IoType::CompareAndWrite;
        let key = fallback.ops.borrow_mut().insert(Op { io, lock: 0 });
        if !caw {
            return fallback.read(key);
        }
        let weak = Rc::downgrade(&fallback);
        let lock = range_lock::acquire(&fallback.bdev, offset, num, move || {
            if let Some(f) = weak.upgrade() {
                f.read(key);
            }
        });
        if let Some(op) = fallback.ops.borrow_mut().get_mut(key) {
            op.lock = lock;
        };
    }

    /// The channel's emulation, opened now if this is its first compare.
    fn of(ch: &Rc<ChannelShared>) -> Result<Rc<Fallback>, super::BdevError> {
        if let Some(f) = ch.fallback.borrow().as_ref() {
            return Ok(f.clone());
        }
        let sink = Rc::new(Inner(RefCell::new(Weak::new())));
        let inner = IoChannel::open(&ch.bdev, sink.clone())?;
        let f = Rc::new(Fallback {
            bdev: ch.bdev.clone(),
            user: Completer(ch.core.clone()),
            inner,
            ops: RefCell::new(Slab::new()),
        });
        *sink.0.borrow_mut() = Rc::downgrade(&f);
        *ch.fallback.borrow_mut() = Some(f.clone());
        Ok(f)
    }

    fn read(&self, key: usize) {
        let Some((offset, num, len)) = self
            .ops
            .borrow()
            .get(key)
            .map(|op| (op.io.offset_blocks, op.io.num_blocks, op.io.buf_len()))
        else {
            return;
        };
        let len = len / data_copies(self.op_type(key)) as usize;
        let read = BdevIo::new(IoType::Read, offset, num)
            .with_bufs(vec![IoBuf::with_len(len)])
            .with_token(key as u64);
        self.inner.submit(read);
    }

    fn op_type(&self, key: usize) -> IoType {
        self.ops
            .borrow()
            .get(key)
            .map_or(IoType::Compare, |op| op.io.io_type)
    }

    fn step_done(&self, mut step: BdevIo) {
        let key = step.token as usize;
        let status = step.status();
        match step.io_type {
            IoType::Read if status.is_success() => {
                let (same, caw) = match self.ops.borrow().get(key) {
                    Some(op) => (
                        same_data(step.bufs[0].as_slice(), &op.io.bufs),
                        op.io.io_type == IoType::CompareAndWrite,
                    ),
                    None => return,
                };
                if !same {
                    self.finish(key, IoStatus::Miscompare);
                } else if caw {
                    self.write(key, step);
                } else {
                    self.finish(key, IoStatus::Success);
                }
            }
            IoType::Write => {
                if let Some(op) = self.ops.borrow_mut().get_mut(key) {
                    op.io.bufs.append(&mut step.bufs);
                }
                self.finish(key, status);
            }
            _ => self.finish(key, status),
        }
    }

    /// Writes the compare-and-write's data (the buffers after the split), as the owner of
    /// its range lock; `step` is the finished read, reused.
    fn write(&self, key: usize, mut step: BdevIo) {
        {
            let mut ops = self.ops.borrow_mut();
            let Some(op) = ops.get_mut(key) else { return };
            let Some(at) = split_at(&op.io) else {
                drop(ops);
                return self.finish(key, IoStatus::InvalidRequest);
            };
            step.reset_to(IoType::Write, op.io.offset_blocks, op.io.num_blocks);
            step.bufs.clear();
            step.bufs.extend(op.io.bufs.drain(at..));
            step.lock.owner = op.lock;
        }
        self.inner.submit(step);
    }

    /// Completes the user's I/O (after releasing its range lock).
    fn finish(&self, key: usize, status: IoStatus) {
        let Some(op) = self.ops.borrow_mut().try_remove(key) else {
            return;
        };
        if op.lock != 0 {
            range_lock::release(&self.bdev, op.lock);
        }
        self.user.complete(op.io, status);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buf(bytes: &[u8]) -> IoBuf {
        let mut b = IoBuf::with_len(bytes.len());
        b.as_mut_slice().copy_from_slice(bytes);
        b
    }

    #[test]
    fn compare_data_is_matched_across_buffers() {
        let bufs = [buf(b"abc"), buf(b"defg")];
        assert!(same_data(b"abcde", &bufs));
        assert!(same_data(b"abcdefg", &bufs));
        assert!(!same_data(b"abcdX", &bufs));
        assert!(!same_data(b"abcdefgh", &bufs));
    }

    #[test]
    fn compare_and_write_data_splits_on_a_buffer_boundary() {
        let io = BdevIo::new(IoType::CompareAndWrite, 0, 1)
            .with_bufs(vec![buf(&[0; 512]), buf(&[1; 512])]);
        assert_eq!(split_at(&io), Some(1));
        let io = BdevIo::new(IoType::CompareAndWrite, 0, 1).with_bufs(vec![
            buf(&[0; 256]),
            buf(&[0; 256]),
            buf(&[1; 512]),
        ]);
        assert_eq!(split_at(&io), Some(2));
        let io = BdevIo::new(IoType::CompareAndWrite, 0, 1)
            .with_bufs(vec![buf(&[0; 300]), buf(&[1; 724])]);
        assert_eq!(split_at(&io), None);
    }
}
