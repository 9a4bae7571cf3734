//! Helpers for bdevs stacked on a base bdev (passthru, delay, error): opening and claiming
//! the base on the main reactor with a hot-remove handler that deletes the stacked bdev in
//! turn (so a delay bdev over a deleted malloc disappears), opening the base's channel on
//! each reactor, and a sink that forwards base completions up to the stacked channel.

#![forbid(unsafe_code)]

use super::{
    open, unregister, BdevError, BdevEvent, BdevHandle, BdevInfo, BdevIo, Completer, Desc,
    IoChannel, IoSink,
};
use crate::reactor;
use std::rc::Rc;
use std::sync::Mutex;

/// The base of a stacked bdev: its handle and the claimed descriptor (closed on destruct).
pub struct Base {
    pub handle: BdevHandle,
    desc: Mutex<Option<Desc>>,
}

impl Base {
    /// Opens and claims `base_name` for `module`; when the base goes away, the bdev named
    /// `upper_name` is deleted too. Main reactor.
    pub fn open(base_name: &str, module: &str, upper_name: &str) -> Result<Base, BdevError> {
        let upper = upper_name.to_string();
        let main = reactor::main_core();
        let desc = open(base_name, move |event| {
            if event == BdevEvent::Remove {
                let upper = upper.clone();
                reactor::send_to(main, move || {
                    unregister(&upper, |r| {
                        if let Err(e) = r {
                            tracing::debug!(error = %e, "stacked bdev already gone");
                        }
                    })
                });
            }
        })?;
        desc.claim(module)?;
        Ok(Base {
            handle: desc.bdev().clone(),
            desc: Mutex::new(Some(desc)),
        })
    }

    /// Opens the base's channel on this reactor, forwarding completions to `upper`.
    pub fn open_channel(&self, upper: &Completer) -> Result<IoChannel, BdevError> {
        let sink: Rc<dyn IoSink> = Rc::new(Forward {
            upper: upper.clone(),
        });
        IoChannel::open(&self.handle, sink)
    }

    /// Closes the base descriptor (releasing the claim).
    pub fn close(&self) {
        let desc = self.desc.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(desc);
    }

    pub fn name(&self) -> &str {
        self.handle.name()
    }
}

/// Opens and claims the base of a new stacked bdev `name` and builds its properties from
/// the base's (block size and count, I/O types, boundary) with the given or a new UUID.
pub fn open_stacked(
    name: &str,
    base_name: &str,
    module: &str,
    product_name: &'static str,
    uuid: Option<&str>,
) -> Result<(BdevInfo, Base), BdevError> {
    let uuid = uuid
        .map(super::parse_uuid)
        .transpose()
        .map_err(BdevError::Invalid)?;
    if super::lookup(name).is_some() {
        return Err(BdevError::Exists(name.to_string()));
    }
    let base = Base::open(base_name, module, name)?;
    let b = &base.handle;
    let mut info = BdevInfo::new(
        name,
        product_name,
        b.block_size(),
        b.num_blocks(),
        b.info.io_types,
    );
    info.optimal_io_boundary = b.info.optimal_io_boundary;
    if let Some(u) = uuid {
        info.uuid = u;
    }
    Ok((info, base))
}

/// Completes the stacked I/O with the base's status.
struct Forward {
    upper: Completer,
}

impl IoSink for Forward {
    fn io_done(&self, io: BdevIo) {
        let status = io.status();
        self.upper.complete(io, status);
    }
}
