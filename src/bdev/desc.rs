//! Descriptors: opening a bdev (`open`, `Desc`), its exclusive claim, and the events its owner is told about.

use super::registry::{finish_unregister, Opener};
use super::{lookup, BdevError, BdevHandle, IoChannel, IoSink};
use crate::reactor;
use std::rc::Rc;

/// Events a descriptor's owner is told about, on the reactor it opened the descriptor on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BdevEvent {
    /// The bdev is being deleted: close channels and the descriptor.
    Remove,
    /// The block count changed.
    Resize,
}

/// An open bdev. Dropping it closes it (on any reactor).
pub struct Desc {
    pub(super) handle: BdevHandle,
    pub(super) id: u64,
}

/// Opens a bdev by name or alias on the current reactor. `on_event` runs on this reactor
/// for hot remove and resize.
pub fn open(
    name: &str,
    on_event: impl FnMut(BdevEvent) + Send + 'static,
) -> Result<Desc, BdevError> {
    let handle = lookup(name).ok_or_else(|| BdevError::NotFound(name.to_string()))?;
    open_handle(&handle, on_event)
}

/// Opens an already looked-up bdev.
pub fn open_handle(
    handle: &BdevHandle,
    on_event: impl FnMut(BdevEvent) + Send + 'static,
) -> Result<Desc, BdevError> {
    let core = reactor::current_core()
        .ok_or_else(|| BdevError::Invalid("bdevs are opened on a reactor".into()))?;
    let mut c = handle.lock();
    if handle.is_removed() {
        return Err(BdevError::Removing(handle.info.name.clone()));
    }
    c.next_desc += 1;
    let id = c.next_desc;
    c.descs.push(Opener {
        id,
        core,
        on_event: Some(Box::new(on_event)),
    });
    Ok(Desc {
        handle: handle.clone(),
        id,
    })
}

impl Desc {
    pub fn bdev(&self) -> &BdevHandle {
        &self.handle
    }

    /// Claims the bdev exclusively for `module`; a second claim is refused.
    pub fn claim(&self, module: &str) -> Result<(), BdevError> {
        let mut c = self.handle.lock();
        match &c.claim {
            Some((id, _)) if *id == self.id => Ok(()),
            Some((_, by)) => Err(BdevError::Claimed {
                name: self.handle.info.name.clone(),
                module: by.clone(),
            }),
            None => {
                c.claim = Some((self.id, module.to_string()));
                Ok(())
            }
        }
    }

    /// Opens this reactor's I/O channel; completions go to `sink`.
    pub fn open_channel(&self, sink: Rc<dyn IoSink>) -> Result<IoChannel, BdevError> {
        IoChannel::open(&self.handle, sink)
    }
}

impl Drop for Desc {
    fn drop(&mut self) {
        let finish = {
            let mut c = self.handle.lock();
            c.descs.retain(|d| d.id != self.id);
            if c.claim.as_ref().is_some_and(|(id, _)| *id == self.id) {
                c.claim = None;
            }
            self.handle.is_removed() && c.descs.is_empty() && !c.finished
        };
        if finish {
            let h = self.handle.clone();
            if reactor::current_core().is_some() {
                reactor::send_to(self.handle.main_core, move || finish_unregister(&h));
            }
        }
    }
}
