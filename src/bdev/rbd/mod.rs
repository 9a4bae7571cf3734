//! rbd: a bdev over a Ceph RBD image through librbd, loaded at run time, with AIO completions
//! delivered on an eventfd that wakes the submitting reactor.
//!
//! **Handles.** Each reactor gets its own image handle (`rbd_open`, one per reactor core,
//! opened at create time on a helper thread), with its own eventfd set by
//! `rbd_set_image_notification`. A channel submits `rbd_aio_*` calls with a completion that
//! has no callback and carries a slot index; librbd's threads only signal the eventfd, which
//! is a wake source of that reactor ([`reactor::add_wake_fd`]); the channel's poll drains it
//! and collects completions with `rbd_poll_io_events`. So every completion is polled on the
//! reactor that submitted the I/O, no librbd thread touches pollux state, and there is no
//! lock and no cross-core message per I/O. One shared handle would need exactly that: its
//! single event queue is drained by whichever reactor polls first, and the completion would
//! have to travel back by message. The price of per-reactor handles: an image with the
//! `exclusive-lock` feature is written through several lock owners of one client, and the
//! lock moves between them (slow under mixed writes from several reactors); images made
//! with `--image-feature layering` (as the tests and bench do) have no such lock. Channels
//! of the same bdev on one reactor share that reactor's handle and slot table.
//!
//! **Blocking calls** (connect, ioctx and image open, close, stat, resize, unwatch) run on
//! short-lived helper threads and come back to the main reactor as messages; connects are
//! bounded by `client_mount_timeout` / `rados_mon_op_timeout` / `rados_osd_op_timeout`
//! (defaults set here unless the caller's config sets them).
//!
//! **Timeouts.** An I/O librbd has not completed after `io_timeout` is answered `Failed`:
//! its buffers are swapped for fresh ones (allocation only on this path) and the originals
//! stay in the slot until librbd completes it (or are leaked if the channel goes first), so
//! librbd never touches freed memory.
//!
//! **Resize** (`bdev_rbd_resize`) and resizes made by other clients (`rbd resize`, seen
//! through `rbd_update_watch`) change the bdev's block count and raise `BdevEvent::Resize`.
//!
//! Files: `cluster.rs` (cluster connections and helper threads), `channel.rs` (the I/O
//! path), `dev_cluster.rs` (a throw-away cluster for tests), `ffi.rs` (librbd), `rpc.rs`.

mod channel;
mod cluster;
mod dev_cluster;
mod ffi;
pub mod rpc;

use super::{
    util::status_of_errno, BdevError, BdevHandle, BdevInfo, BdevIo, Completer, IoStatus, IoType,
    IoTypes, ModuleChannel,
};
use crate::reactor;
use crate::sys::eventfd::EventFd;
use serde_json::{json, Value};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::rc::{Rc, Weak};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use channel::{CoreState, RbdChannel, Slot, LOCAL, NATIVE_CAW_SECTOR, NEXT_GEN};
pub use cluster::{
    clusters, find_cluster, register_cluster, unregister_cluster, Cluster, ConnectOpts,
};
use cluster::{connect, errno_err, off_reactor, set_affinity};
pub use dev_cluster::DevCluster;
pub use ffi::PACKAGES;
use ffi::{Image, Rados};

pub const PRODUCT_NAME: &str = "Ceph Rbd Disk";
/// In-flight I/O per reactor handle.
const DEPTH: usize = 256;
/// Default bound on one I/O (librbd's own `rados_osd_op_timeout` is set just below it).
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(30);

/// One reactor's image handle and its completion eventfd.
struct CoreHandle {
    core: u32,
    image: Arc<Image>,
    efd: Arc<EventFd>,
}

/// Shared with the update-watch callback (leaked until unwatch returned).
struct WatchCtx {
    bdev: String,
    image: Arc<Image>,
    others: Vec<Arc<Image>>,
    block_size: u64,
    app: reactor::AppHandle,
    main: u32,
}

pub struct RbdBdev {
    pub pool_name: String,
    pub rbd_name: String,
    pub user_id: Option<String>,
    pub config: Option<BTreeMap<String, String>>,
    pub cluster_name: Option<String>,
    pub read_only: bool,
    block_size: u32,
    io_timeout: Duration,
    handles: Mutex<Vec<CoreHandle>>,
    /// (watch handle, its context) while the update watch is registered.
    watch: Mutex<Option<(u64, usize)>>,
    admin: Arc<Image>,
}

#[derive(Debug, Clone)]
pub struct RbdOpts {
    pub name: String,
    pub pool_name: String,
    pub rbd_name: String,
    pub block_size: u32,
    pub user_id: Option<String>,
    pub config: Option<BTreeMap<String, String>>,
    pub cluster_name: Option<String>,
    pub uuid: Option<uuid::Uuid>,
    pub read_only: bool,
    pub io_timeout: Duration,
}

struct Opened {
    admin: Arc<Image>,
    handles: Vec<CoreHandle>,
    size: u64,
}

fn eventfd() -> Result<EventFd, BdevError> {
    EventFd::new().map_err(|e| BdevError::io("eventfd", e))
}

/// Opens the pool and one handle per reactor (blocking; helper thread).
fn open_images(rados: &Arc<Rados>, o: &RbdOpts, cores: &[u32]) -> Result<Opened, BdevError> {
    let io = Arc::new(
        rados
            .ioctx(&o.pool_name)
            .map_err(|r| errno_err(format!("pool_name: cannot open pool {:?}", o.pool_name), r))?,
    );
    let open = || {
        Image::open(&io, &o.rbd_name, o.read_only)
            .map(Arc::new)
            .map_err(|r| {
                errno_err(
                    format!(
                        "rbd_name: cannot open image {:?} in pool {:?}",
                        o.rbd_name, o.pool_name
                    ),
                    r,
                )
            })
    };
    let admin = open()?;
    let size = admin
        .size()
        .map_err(|r| errno_err("reading the image size".into(), r))?;
    let mut handles = Vec::with_capacity(cores.len());
    for &core in cores {
        let image = open()?;
        let efd = eventfd()?;
        image
            .notify_eventfd(efd.as_raw_fd())
            .map_err(|r| errno_err("rbd_set_image_notification".into(), r))?;
        handles.push(CoreHandle {
            core,
            image,
            efd: Arc::new(efd),
        });
    }
    Ok(Opened {
        admin,
        handles,
        size,
    })
}

/// Creates an RBD bdev (main reactor); the connection and opens run off the reactors.
pub fn create(opts: RbdOpts, done: impl FnOnce(Result<BdevHandle, BdevError>) + Send + 'static) {
    if let Err(e) = ffi::lib() {
        return done(Err(BdevError::io(
            e,
            std::io::Error::from_raw_os_error(libc::ENOENT),
        )));
    }
    let bs = opts.block_size;
    if bs < 512 || !bs.is_power_of_two() || bs > 1 << 20 {
        return done(Err(BdevError::Invalid(format!(
            "block_size: {bs} must be a power of two from 512 to 1 MiB"
        ))));
    }
    if super::lookup(&opts.name).is_some() {
        return done(Err(BdevError::Exists(opts.name)));
    }
    let cluster = match &opts.cluster_name {
        Some(c) => match find_cluster(c) {
            Some(c) => Some((c.rados.clone(), c.cores.clone())),
            None => {
                return done(Err(BdevError::Invalid(format!(
                    "cluster_name: no rbd cluster {c:?} is registered"
                ))))
            }
        },
        None => None,
    };
    let cores = reactor::cores();
    let o = opts.clone();
    off_reactor(
        move || {
            let rados = match cluster {
                Some((r, cores)) => {
                    if let Some(c) = &cores {
                        set_affinity(Some(c));
                    }
                    r
                }
                None => connect(&ConnectOpts {
                    user_id: o.user_id.clone(),
                    config: o.config.clone(),
                    ..Default::default()
                })?,
            };
            open_images(&rados, &o, &cores)
        },
        move |r: Result<Opened, BdevError>| {
            let opened = match r {
                Ok(o) => o,
                Err(e) => return done(Err(e)),
            };
            let types = if opts.read_only {
                IoTypes::of(&[IoType::Read])
            } else {
                let mut types = vec![
                    IoType::Read,
                    IoType::Write,
                    IoType::Flush,
                    IoType::Unmap,
                    IoType::WriteZeroes,
                ];
                // Atomic in the OSDs, so against other gateways too (the bdev layer's
                // emulation only excludes this process's writes). librbd (Ceph 16)
                // compares within one 512-byte sector only (-EINVAL beyond it), so only a
                // bdev of 512-byte blocks gets it, for one block at a time (ACWU 0).
                if ffi::has_compare_and_write() && bs == NATIVE_CAW_SECTOR {
                    types.push(IoType::CompareAndWrite);
                } else if ffi::has_compare_and_write() {
                    tracing::warn!(
                        bdev = %opts.name,
                        block_size = bs,
                        "compare-and-write is emulated by the bdev layer (librbd compares \
                         within one 512-byte sector): atomic against writes through this \
                         process only, not through other gateways of the image"
                    );
                }
                IoTypes::of(&types)
            };
            let mut info = BdevInfo::new(
                opts.name.clone(),
                PRODUCT_NAME,
                bs,
                opened.size / bs as u64,
                types,
            );
            if let Some(u) = &opts.uuid {
                info.uuid = *u;
            }
            let bdev = RbdBdev {
                pool_name: opts.pool_name,
                rbd_name: opts.rbd_name,
                user_id: opts.user_id,
                config: opts.config,
                cluster_name: opts.cluster_name,
                read_only: opts.read_only,
                block_size: bs,
                io_timeout: opts.io_timeout,
                handles: Mutex::new(opened.handles),
                watch: Mutex::new(None),
                admin: opened.admin,
            };
            super::register(info, Box::new(bdev), move |r| {
                // (On failure register dropped the module: its images close right there,
                // briefly blocking; only a name taken meanwhile gets there.)
                if let Ok(h) = &r {
                    start_watch(h);
                }
                done(r)
            });
        },
    );
}

/// Registers the update watch (noticing `rbd resize` by other clients), off the reactors.
fn start_watch(h: &BdevHandle) {
    let Some(b) = h.module_as::<RbdBdev>() else {
        return;
    };
    let ctx = Box::new(WatchCtx {
        bdev: h.name().to_string(),
        image: b.admin.clone(),
        others: b.core_images(),
        block_size: b.block_size as u64,
        app: reactor::app(),
        main: reactor::main_core(),
    });
    let image = b.admin.clone();
    let handle = h.clone();
    off_reactor(
        move || {
            let arg = Box::into_raw(ctx);
            match image.watch(on_update, arg.cast()) {
                Ok(w) => Some((w, arg as usize)),
                Err(r) => {
                    tracing::warn!(error = %ffi::errno_text(r), "rbd_update_watch failed: outside resizes go unnoticed");
                    // SAFETY: the watch was not registered: nobody else holds arg.
                    drop(unsafe { Box::from_raw(arg) });
                    None
                }
            }
        },
        move |w| {
            if let (Some(w), Some(b)) = (w, handle.module_as::<RbdBdev>()) {
                *b.watch.lock().unwrap_or_else(|e| e.into_inner()) = Some(w);
                if handle.is_removed() {
                    // Deleted meanwhile: destruct may have run already; unwatch ourselves.
                    b.stop_watch_off_reactor();
                }
            }
        },
    );
}

/// librbd's header-update callback (a librbd thread): re-read the size off the reactors.
unsafe extern "C" fn on_update(arg: *mut std::ffi::c_void) {
    // SAFETY: arg is the WatchCtx registered with the watch; it stays alive until
    // rbd_update_unwatch returned (which waits for running callbacks).
    let ctx = unsafe { &*(arg as *const WatchCtx) };
    let image = ctx.image.clone();
    let others = ctx.others.clone();
    let (bdev, bs, app, main) = (ctx.bdev.clone(), ctx.block_size, ctx.app.clone(), ctx.main);
    // Not on this librbd thread: rbd_get_size may refresh the header (blocking I/O).
    let _ = std::thread::Builder::new()
        .name("rbd-watch".into())
        .spawn(move || {
            if let Ok(size) = image.size() {
                refresh(&others);
                let _ = app.send_to(main, move || apply_size(&bdev, size / bs));
            }
        });
}

/// Main reactor: a new image size; grows (or shrinks) the bdev and tells its users.
fn apply_size(name: &str, blocks: u64) {
    if let Some(h) = super::lookup(name) {
        if h.module_as::<RbdBdev>().is_some() && h.num_blocks() != blocks && !h.is_removed() {
            tracing::info!(bdev = name, blocks, "rbd image resized");
            h.resize(blocks);
        }
    }
}

/// `bdev_rbd_resize`: grows the image to `new_size_mib` MiB (main reactor).
pub fn resize(
    name: &str,
    new_size_mib: u64,
    done: impl FnOnce(Result<(), BdevError>) + Send + 'static,
) {
    let Some(h) = super::lookup(name) else {
        return done(Err(BdevError::NotFound(name.to_string())));
    };
    let Some(b) = h.module_as::<RbdBdev>() else {
        return done(Err(BdevError::NotFound(format!("rbd bdev {name}"))));
    };
    let Some(new_bytes) = new_size_mib.checked_mul(1 << 20) else {
        return done(Err(BdevError::Invalid("new_size: too large".into())));
    };
    let cur = h.num_blocks() * b.block_size as u64;
    if new_bytes < cur {
        return done(Err(BdevError::Invalid(format!(
            "new_size: {new_size_mib} MiB is smaller than the current size ({} MiB); shrinking is not supported",
            cur >> 20
        ))));
    }
    if b.read_only {
        return done(Err(BdevError::Invalid(format!("bdev {name} is read-only"))));
    }
    let image = b.admin.clone();
    let others = b.core_images();
    let bs = b.block_size as u64;
    let n = name.to_string();
    off_reactor(
        move || {
            image
                .resize(new_bytes)
                .map_err(|r| errno_err("rbd_resize".into(), r))?;
            refresh(&others);
            image
                .size()
                .map_err(|r| errno_err("reading the image size".into(), r))
        },
        move |r| match r {
            Ok(size) => {
                apply_size(&n, size / bs);
                done(Ok(()))
            }
            Err(e) => done(Err(e)),
        },
    );
}

/// Makes every reactor's handle see a new image size before the bdev grows (a handle
/// refreshes its header lazily; I/O past its cached size would fail). Blocking.
fn refresh(images: &[Arc<Image>]) {
    for i in images {
        let _ = i.size();
    }
}

impl RbdBdev {
    fn core_images(&self) -> Vec<Arc<Image>> {
        let h = self.handles.lock().unwrap_or_else(|e| e.into_inner());
        h.iter().map(|h| h.image.clone()).collect()
    }

    fn stop_watch_off_reactor(&self) {
        let w = self.watch.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some((handle, arg)) = w {
            let image = self.admin.clone();
            off_reactor(
                move || {
                    image.unwatch(handle);
                    // SAFETY: unwatch returned: no callback runs or will run with arg.
                    drop(unsafe { Box::from_raw(arg as *mut WatchCtx) });
                },
                |_| {},
            );
        }
    }
}

impl super::Bdev for RbdBdev {
    fn open_channel(
        &self,
        bdev: &BdevHandle,
        _done: &Completer,
    ) -> Result<Box<dyn ModuleChannel>, BdevError> {
        let core = reactor::current_core()
            .ok_or_else(|| BdevError::Invalid("rbd channels open on a reactor".into()))?;
        let key = Arc::as_ptr(bdev) as usize;
        let existing = LOCAL.with(|l| l.borrow().get(&key).and_then(Weak::upgrade));
        let state = match existing {
            Some(s) => s,
            None => {
                let handles = self.handles.lock().unwrap_or_else(|e| e.into_inner());
                let h = handles.iter().find(|h| h.core == core).ok_or_else(|| {
                    BdevError::Invalid(format!("rbd: no image handle for core {core}"))
                })?;
                let wake = reactor::add_wake_fd(h.efd.as_raw_fd())
                    .map_err(|e| BdevError::io("registering the rbd eventfd", e))?;
                let s = Rc::new(RefCell::new(CoreState {
                    image: h.image.clone(),
                    efd: h.efd.clone(),
                    slots: (0..DEPTH).map(|_| Slot::default()).collect(),
                    free: (0..DEPTH as u32).rev().collect(),
                    comps: vec![std::ptr::null_mut(); DEPTH],
                    next_check: Instant::now(),
                    gen: NEXT_GEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                    drain_until: None,
                    unannounced: 0,
                    _wake: wake,
                }));
                LOCAL.with(|l| {
                    let mut l = l.borrow_mut();
                    l.retain(|_, w| w.strong_count() > 0);
                    l.insert(key, Rc::downgrade(&s));
                });
                s
            }
        };
        Ok(Box::new(RbdChannel {
            state,
            block_size: self.block_size as u64,
            timeout: self.io_timeout,
            done_buf: Vec::with_capacity(DEPTH),
        }))
    }

    fn driver_specific(&self) -> Value {
        json!({"rbd": {
            "pool_name": self.pool_name,
            "rbd_name": self.rbd_name,
            "config_param": self.config,
            "cluster_name": self.cluster_name,
            "read_only": self.read_only,
        }})
    }

    fn config(&self, info: &BdevInfo) -> Option<Value> {
        let mut p = json!({
            "name": info.name,
            "pool_name": self.pool_name,
            "rbd_name": self.rbd_name,
            "block_size": self.block_size,
            "uuid": info.uuid,
        });
        if let Some(u) = &self.user_id {
            p["user_id"] = json!(u);
        }
        if let Some(c) = &self.config {
            p["config"] = json!(c);
        }
        if let Some(c) = &self.cluster_name {
            p["cluster_name"] = json!(c);
        }
        if self.read_only {
            p["read_only"] = json!(true);
        }
        if self.io_timeout != DEFAULT_IO_TIMEOUT {
            p["timeout_s"] = json!(self.io_timeout.as_secs());
        }
        Some(crate::rpc::config_entry("bdev_rbd_create", p))
    }

    fn destruct(&self) {
        self.stop_watch_off_reactor();
        let handles = std::mem::take(&mut *self.handles.lock().unwrap_or_else(|e| e.into_inner()));
        let admin = self.admin.clone();
        // rbd_close blocks (it waits for in-flight AIO): close off the reactors, once the
        // channels (which hold the images) are gone.
        off_reactor(
            move || {
                let deadline = Instant::now() + Duration::from_secs(60);
                for h in handles {
                    while Arc::strong_count(&h.image) > 1 && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    drop(h);
                }
                drop(admin);
            },
            |_| {},
        );
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
