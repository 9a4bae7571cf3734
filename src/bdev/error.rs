//! error: fault injection over a claimed base bdev, named `EE_<base>`.
//!
//! `bdev_error_inject_error` arms, per I/O type (or all), the next `num` I/Os to fail
//! (`failure` → status Failed), to be refused for lack of resources (`nomem` → the channel
//! retries them, so they succeed once the count is spent) or to have their data corrupted
//! (`corrupt_data`: the byte at `corrupt_offset` is XORed with `corrupt_value`, in write data
//! before it reaches the base and in read data after the base returned it). Arming is
//! lock-free (atomics), so the RPC on the main reactor and the data path on any reactor never
//! wait for each other.

#![forbid(unsafe_code)]

use super::stack::Base;
use super::{
    BdevError, BdevHandle, BdevInfo, BdevIo, Completer, IoChannel, IoSink, IoStatus, IoType,
    ModuleChannel,
};
use serde_json::{json, Value};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

pub const PRODUCT_NAME: &str = "error";
pub const NAME_PREFIX: &str = "EE_";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    None = 0,
    Failure = 1,
    NoMem = 2,
    CorruptData = 3,
}

impl ErrorKind {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "failure" => ErrorKind::Failure,
            "nomem" => ErrorKind::NoMem,
            "corrupt_data" => ErrorKind::CorruptData,
            _ => return None,
        })
    }
    fn from_u8(v: u8) -> Self {
        match v {
            1 => ErrorKind::Failure,
            2 => ErrorKind::NoMem,
            3 => ErrorKind::CorruptData,
            _ => ErrorKind::None,
        }
    }
}

/// One armed injection (per I/O type).
#[derive(Debug, Default)]
struct Rule {
    kind: AtomicU8,
    remaining: AtomicU64,
    corrupt_offset: AtomicU64,
    corrupt_value: AtomicU8,
}

/// The injections of one error bdev, shared with every channel.
#[derive(Debug, Default)]
pub struct Injections {
    rules: [Rule; 6],
}

impl Injections {
    /// Arms `num` injections of `kind` for `types` (an empty kind count clears them).
    pub fn arm(
        &self,
        types: &[IoType],
        kind: ErrorKind,
        num: u64,
        corrupt_offset: u64,
        corrupt_value: u8,
    ) {
        for t in types {
            let r = &self.rules[t.index()];
            r.kind.store(ErrorKind::None as u8, Ordering::Release);
            r.remaining.store(num, Ordering::Release);
            r.corrupt_offset.store(corrupt_offset, Ordering::Release);
            r.corrupt_value.store(corrupt_value, Ordering::Release);
            r.kind.store(kind as u8, Ordering::Release);
        }
    }

    /// Takes one injection for `t`, if armed: (kind, offset, value).
    fn take(&self, t: IoType) -> Option<(ErrorKind, u64, u8)> {
        let r = &self.rules[t.index()];
        let kind = ErrorKind::from_u8(r.kind.load(Ordering::Acquire));
        if kind == ErrorKind::None {
            return None;
        }
        r.remaining
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .ok()?;
        Some((
            kind,
            r.corrupt_offset.load(Ordering::Acquire),
            r.corrupt_value.load(Ordering::Acquire),
        ))
    }

    /// Injections still armed for `t`.
    pub fn remaining(&self, t: IoType) -> u64 {
        let r = &self.rules[t.index()];
        if r.kind.load(Ordering::Acquire) == ErrorKind::None as u8 {
            0
        } else {
            r.remaining.load(Ordering::Acquire)
        }
    }
}

/// XORs the byte at `offset` (modulo the data length) of the scatter list with `value`.
fn corrupt(io: &mut BdevIo, offset: u64, value: u8) {
    let total = io.buf_len() as u64;
    if total == 0 {
        return;
    }
    let mut at = offset % total;
    for b in io.bufs.iter_mut() {
        if at < b.len() as u64 {
            b[at as usize] ^= if value == 0 { 0xff } else { value };
            return;
        }
        at -= b.len() as u64;
    }
}

pub struct ErrorBdev {
    base: Base,
    injections: Arc<Injections>,
}

impl ErrorBdev {
    pub fn injections(&self) -> &Injections {
        &self.injections
    }
}

/// Reads armed for corruption, keyed by the address of their first buffer (unique while
/// the read is in flight), shared by a channel and its base sink. Reused, never shrunk.
type ReadMarks = Rc<RefCell<Vec<(usize, u64, u8)>>>;

fn mark_key(io: &BdevIo) -> Option<usize> {
    io.bufs.first().map(|b| b.as_ptr() as usize)
}

/// Corrupts marked read data on its way up.
struct ErrorSink {
    upper: Completer,
    marks: ReadMarks,
}

impl IoSink for ErrorSink {
    fn io_done(&self, mut io: BdevIo) {
        let status = io.status();
        if let Some(key) = mark_key(&io) {
            let mark = {
                let mut m = self.marks.borrow_mut();
                m.iter()
                    .position(|(k, _, _)| *k == key)
                    .map(|pos| m.swap_remove(pos))
            };
            if let Some((_, offset, value)) = mark {
                if status == IoStatus::Success {
                    corrupt(&mut io, offset, value);
                }
            }
        }
        self.upper.complete(io, status);
    }
}

struct ErrorChannel {
    base: IoChannel,
    injections: Arc<Injections>,
    marks: ReadMarks,
}

impl ModuleChannel for ErrorChannel {
    fn submit(&mut self, mut io: BdevIo, done: &Completer) {
        match self.injections.take(io.io_type) {
            Some((ErrorKind::Failure, ..)) => done.complete(io, IoStatus::Failed),
            Some((ErrorKind::NoMem, ..)) => done.complete(io, IoStatus::NoMem),
            Some((ErrorKind::CorruptData, offset, value)) => {
                match io.io_type {
                    IoType::Write => corrupt(&mut io, offset, value),
                    IoType::Read => {
                        // The corruption is applied to the returned buffers.
                        io.accept_shared = false;
                        if let Some(key) = mark_key(&io) {
                            self.marks.borrow_mut().push((key, offset, value));
                        }
                    }
                    _ => {}
                }
                self.base.submit(io);
            }
            _ => self.base.submit(io),
        }
    }
}

impl super::Bdev for ErrorBdev {
    fn open_channel(
        &self,
        _bdev: &BdevHandle,
        done: &Completer,
    ) -> Result<Box<dyn ModuleChannel>, BdevError> {
        let marks: ReadMarks = Rc::new(RefCell::new(Vec::with_capacity(64)));
        let sink: Rc<dyn IoSink> = Rc::new(ErrorSink {
            upper: done.clone(),
            marks: marks.clone(),
        });
        Ok(Box::new(ErrorChannel {
            base: IoChannel::open(&self.base.handle, sink)?,
            injections: self.injections.clone(),
            marks,
        }))
    }

    fn driver_specific(&self) -> Value {
        json!({"error": {"base_bdev": self.base.name()}})
    }

    fn config(&self, info: &BdevInfo) -> Option<Value> {
        Some(crate::rpc::config_entry(
            "bdev_error_create",
            json!({"base_name": self.base.name(), "uuid": info.uuid}),
        ))
    }

    fn destruct(&self) {
        self.base.close();
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[derive(Debug, Clone)]
pub struct ErrorOpts {
    pub base_name: String,
    pub uuid: Option<String>,
}

/// Creates `EE_<base_name>` over `base_name` (main reactor).
pub fn create(opts: ErrorOpts, done: impl FnOnce(Result<BdevHandle, BdevError>) + Send + 'static) {
    let made = (|| {
        let name = format!("{NAME_PREFIX}{}", opts.base_name);
        let (mut info, base) = super::stack::open_stacked(
            &name,
            &opts.base_name,
            "bdev_error",
            PRODUCT_NAME,
            opts.uuid.as_deref(),
        )?;
        // Compares run as the layer's reads and writes through this bdev, so that errors
        // injected into reads and writes reach them too.
        info.io_types = info
            .io_types
            .without(IoType::Compare)
            .without(IoType::CompareAndWrite);
        Ok((
            info,
            ErrorBdev {
                base,
                injections: Arc::new(Injections::default()),
            },
        ))
    })();
    match made {
        Ok((info, bdev)) => super::register(info, Box::new(bdev), done),
        Err(e) => done(Err(e)),
    }
}
