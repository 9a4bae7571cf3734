//! Registered bdevs: the `BdevHandle` shared by every reactor, and the per-reactor name registry (`register`, `lookup`, `unregister`).

use super::{histogram, iostat::IoStats, qos, range_lock};
use super::{Bdev, BdevError, BdevEvent, BdevInfo, IoType};
use crate::reactor;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

pub(super) struct Opener {
    pub(super) id: u64,
    pub(super) core: u32,
    pub(super) on_event: Option<Box<dyn FnMut(BdevEvent) + Send>>,
}

/// Called when an unregistration finished.
type UnregisterDone = Box<dyn FnOnce(Result<(), BdevError>) + Send>;

#[derive(Default)]
pub(super) struct Control {
    pub(super) descs: Vec<Opener>,
    pub(super) claim: Option<(u64, String)>,
    pub(super) next_desc: u64,
    pub(super) waiters: Vec<UnregisterDone>,
    pub(super) finished: bool,
}

/// A registered bdev: its properties, its module implementation, its descriptors.
pub struct BdevHandleInner {
    pub info: BdevInfo,
    pub module: Box<dyn Bdev>,
    pub(super) removed: AtomicBool,
    pub(super) control: Mutex<Control>,
    pub(super) closed_stats: Mutex<IoStats>,
    pub(super) main_core: u32,
    /// Rate limits (`bdev_set_qos_limit`); channels hold a copy, pushed on change.
    pub(super) qos: Mutex<Option<Arc<qos::Qos>>>,
    /// While the latency histogram is enabled: its configuration and the counts of
    /// channels already closed.
    pub(super) histogram: Mutex<Option<histogram::Histogram>>,
    /// Block ranges locked by compare-and-write fallbacks (control path only).
    pub(super) range_locks: Mutex<range_lock::BdevLocks>,
}

/// A reference to a registered bdev (cheap to clone, usable on any reactor).
pub type BdevHandle = Arc<BdevHandleInner>;

impl BdevHandleInner {
    pub fn name(&self) -> &str {
        &self.info.name
    }
    pub fn block_size(&self) -> u32 {
        self.info.block_size
    }
    pub fn num_blocks(&self) -> u64 {
        self.info.num_blocks()
    }
    pub fn supports(&self, t: IoType) -> bool {
        self.info.io_types.contains(t)
    }
    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }
    /// The module implementation as its concrete type, if it is a `T`.
    pub fn module_as<T: 'static>(&self) -> Option<&T> {
        self.module.as_any().downcast_ref::<T>()
    }
    /// The module holding the exclusive claim, if any.
    pub fn claimed_by(&self) -> Option<String> {
        self.lock().claim.as_ref().map(|(_, m)| m.clone())
    }
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Control> {
        self.control.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the block count and tells every descriptor (`BdevEvent::Resize`).
    pub fn resize(self: &Arc<Self>, num_blocks: u64) {
        self.info.num_blocks.store(num_blocks, Ordering::Relaxed);
        let targets: Vec<(u64, u32)> = self.lock().descs.iter().map(|d| (d.id, d.core)).collect();
        for (id, core) in targets {
            let me = self.clone();
            reactor::send_to(core, move || me.deliver_event(id, BdevEvent::Resize));
        }
    }

    pub(super) fn deliver_event(&self, id: u64, event: BdevEvent) {
        let cb = {
            let mut c = self.lock();
            c.descs
                .iter_mut()
                .find(|d| d.id == id)
                .and_then(|d| d.on_event.take())
        };
        let Some(mut cb) = cb else { return };
        cb(event);
        if event != BdevEvent::Remove {
            if let Some(d) = self.lock().descs.iter_mut().find(|d| d.id == id) {
                d.on_event = Some(cb);
            }
        }
    }

    /// The rate limits in force (all 0: none).
    pub fn qos_limits(&self) -> qos::QosLimits {
        self.qos().map(|q| q.limits()).unwrap_or_default()
    }

    /// The latency histogram's configuration while it is enabled.
    pub fn histogram_config(&self) -> Option<histogram::HistConfig> {
        self.histogram_lock().as_ref().map(|h| h.config())
    }

    pub(super) fn histogram_lock(&self) -> std::sync::MutexGuard<'_, Option<histogram::Histogram>> {
        self.histogram.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn qos(&self) -> Option<Arc<qos::Qos>> {
        self.qos.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Statistics of channels already closed.
    pub(super) fn closed_stats(&self) -> std::sync::MutexGuard<'_, IoStats> {
        self.closed_stats.lock().unwrap_or_else(|e| e.into_inner())
    }
}

thread_local! {
    /// Name and alias → bdev, on every reactor.
    static LOCAL: RefCell<HashMap<String, BdevHandle>> = RefCell::new(HashMap::new());
    /// Registration order (main reactor only): listing and config.
    static ORDER: RefCell<Vec<BdevHandle>> = const { RefCell::new(Vec::new()) };
}

/// Registers a bdev (main reactor only). `done` runs on the main reactor once every reactor
/// can look it up.
pub fn register(
    info: BdevInfo,
    module: Box<dyn Bdev>,
    done: impl FnOnce(Result<BdevHandle, BdevError>) + Send + 'static,
) {
    if !reactor::is_main_reactor() {
        return done(Err(BdevError::Invalid(
            "bdevs are registered on the main reactor".into(),
        )));
    }
    if info.name.is_empty() {
        return done(Err(BdevError::Invalid("bdev name is empty".into())));
    }
    if info.block_size == 0 {
        return done(Err(BdevError::Invalid("block size is 0".into())));
    }
    let names: Vec<String> = std::iter::once(info.name.clone())
        .chain(info.aliases.iter().cloned())
        .collect();
    let taken = LOCAL.with(|l| {
        let l = l.borrow();
        names.iter().find(|n| l.contains_key(*n)).cloned()
    });
    if let Some(n) = taken {
        return done(Err(BdevError::Exists(n)));
    }
    let handle: BdevHandle = Arc::new(BdevHandleInner {
        info,
        module,
        removed: AtomicBool::new(false),
        control: Mutex::new(Control::default()),
        closed_stats: Mutex::new(IoStats::new()),
        main_core: reactor::current_core().unwrap_or(0),
        qos: Mutex::new(None),
        histogram: Mutex::new(None),
        range_locks: Mutex::new(range_lock::BdevLocks::default()),
    });
    ORDER.with(|o| o.borrow_mut().push(handle.clone()));
    let h = handle.clone();
    reactor::for_each_reactor(
        move || {
            LOCAL.with(|l| {
                let mut l = l.borrow_mut();
                for n in &names {
                    l.insert(n.clone(), h.clone());
                }
            })
        },
        move || done(Ok(handle)),
    );
}

/// Drops this application's registry on every reactor (a shutdown hook, registered by
/// `rpc::register`), so no bdev outlives its reactors in thread-local teardown.
pub(crate) fn clear_registry(done: Box<dyn FnOnce() + Send>) {
    reactor::for_each_reactor(
        || {
            let local = LOCAL.with(|l| std::mem::take(&mut *l.borrow_mut()));
            let order = ORDER.with(|o| std::mem::take(&mut *o.borrow_mut()));
            drop(order);
            drop(local);
        },
        done,
    );
}

/// Finds a bdev by name or alias on the current reactor.
pub fn lookup(name: &str) -> Option<BdevHandle> {
    LOCAL.with(|l| l.borrow().get(name).cloned())
}

/// Every registered bdev in registration order (main reactor).
pub fn list() -> Vec<BdevHandle> {
    ORDER.with(|o| o.borrow().clone())
}

/// Deletes a bdev (main reactor), SPDK-style hot remove: it leaves the registry now, every
/// descriptor is told `BdevEvent::Remove`, and `done` runs (on the main reactor) once the
/// last descriptor closed and the module's `destruct` ran.
pub fn unregister(name: &str, done: impl FnOnce(Result<(), BdevError>) + Send + 'static) {
    let Some(handle) = lookup(name) else {
        return done(Err(BdevError::NotFound(name.to_string())));
    };
    if handle.removed.swap(true, Ordering::AcqRel) {
        handle.lock().waiters.push(Box::new(done));
        return;
    }
    ORDER.with(|o| o.borrow_mut().retain(|b| !Arc::ptr_eq(b, &handle)));
    let names: Vec<String> = std::iter::once(handle.info.name.clone())
        .chain(handle.info.aliases.iter().cloned())
        .collect();
    handle.lock().waiters.push(Box::new(done));
    let h = handle.clone();
    reactor::for_each_reactor(
        move || {
            LOCAL.with(|l| {
                let mut l = l.borrow_mut();
                for n in &names {
                    if l.get(n).is_some_and(|b| Arc::ptr_eq(b, &h)) {
                        l.remove(n);
                    }
                }
            })
        },
        move || {
            let targets: Vec<(u64, u32)> =
                handle.lock().descs.iter().map(|d| (d.id, d.core)).collect();
            if targets.is_empty() {
                finish_unregister(&handle);
            }
            for (id, core) in targets {
                let me = handle.clone();
                reactor::send_to(core, move || me.deliver_event(id, BdevEvent::Remove));
            }
        },
    );
}

pub(super) fn finish_unregister(handle: &BdevHandle) {
    let waiters = {
        let mut c = handle.lock();
        if c.finished || !c.descs.is_empty() {
            return;
        }
        c.finished = true;
        std::mem::take(&mut c.waiters)
    };
    handle.module.destruct();
    tracing::debug!(bdev = %handle.info.name, "bdev unregistered");
    for w in waiters {
        w(Ok(()));
    }
}
