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

mod ffi;
pub mod rpc;

use super::{
    util::status_of_errno, BdevError, BdevHandle, BdevInfo, BdevIo, Completer, IoStatus, IoType,
    IoTypes, ModuleChannel,
};
use crate::reactor::{self, WakeSource};
use crate::sys::eventfd::EventFd;
use serde_json::{json, Value};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::os::fd::AsRawFd;
use std::rc::{Rc, Weak};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use ffi::PACKAGES;
use ffi::{Image, Rados};

pub const PRODUCT_NAME: &str = "Ceph Rbd Disk";
/// In-flight I/O per reactor handle.
const DEPTH: usize = 256;
/// Default bound on one I/O (librbd's own `rados_osd_op_timeout` is set just below it).
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Default bound on connecting and on monitor operations.
const CONNECT_TIMEOUT_S: &str = "10";

/// A registered cluster connection (`bdev_rbd_register_cluster`).
pub struct Cluster {
    pub name: String,
    pub user_id: Option<String>,
    pub config_param: Option<BTreeMap<String, String>>,
    pub config_file: Option<String>,
    pub key_file: Option<String>,
    pub core_mask: Option<String>,
    cores: Option<Vec<u32>>,
    rados: Arc<Rados>,
}

thread_local! {
    /// Registered clusters (main reactor), in registration order.
    static CLUSTERS: RefCell<Vec<Arc<Cluster>>> = const { RefCell::new(Vec::new()) };
    /// Names being registered right now (main reactor).
    static PENDING: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    /// This reactor's per-bdev handle state, shared by its channels.
    static LOCAL: RefCell<HashMap<usize, Weak<RefCell<CoreState>>>> = RefCell::new(HashMap::new());
}

/// Connection options shared by cluster registration and stand-alone bdevs.
#[derive(Debug, Clone, Default)]
pub struct ConnectOpts {
    pub user_id: Option<String>,
    pub config: Option<BTreeMap<String, String>>,
    pub config_file: Option<String>,
    pub key_file: Option<String>,
    pub core_mask: Option<Vec<u32>>,
}

fn errno_err(what: String, r: i32) -> BdevError {
    BdevError::io(what, std::io::Error::from_raw_os_error(r.abs()))
}

/// Connects (blocking; helper threads only).
fn connect(o: &ConnectOpts) -> Result<Arc<Rados>, BdevError> {
    if let Some(cores) = &o.core_mask {
        // Threads librados starts inherit this thread's affinity (SPDK's core_mask).
        set_affinity(Some(cores));
    }
    let rados = Rados::create(o.user_id.as_deref()).map_err(BdevError::Invalid)?;
    let file = o.config_file.as_deref();
    // No config file and no monitor in the config: read the default ceph.conf search path.
    let has_mon = o
        .config
        .as_ref()
        .is_some_and(|c| c.keys().any(|k| k.replace(' ', "_") == "mon_host"));
    if let Some(f) = file {
        rados
            .conf_read_file_opt(Some(f))
            .map_err(|r| errno_err(format!("config_file: cannot read {f}"), r))?;
    } else if !has_mon {
        // The default search path ($CEPH_CONF, /etc/ceph/ceph.conf, ...), if any.
        let _ = rados.conf_read_file_opt(None);
    }
    let defaults = [
        ("client_mount_timeout", CONNECT_TIMEOUT_S),
        ("rados_mon_op_timeout", CONNECT_TIMEOUT_S),
        ("rados_osd_op_timeout", "25"),
        ("rbd_skip_partial_discard", "false"),
    ];
    for (k, v) in defaults {
        rados
            .conf_set(k, v)
            .map_err(|r| errno_err(format!("setting {k}"), r))?;
    }
    if let Some(k) = &o.key_file {
        rados
            .conf_set("keyring", k)
            .map_err(|r| errno_err(format!("key_file: {k}"), r))?;
    }
    for (k, v) in o.config.iter().flatten() {
        rados
            .conf_set(k, v)
            .map_err(|r| errno_err(format!("config: option {k:?} = {v:?} refused"), r))?;
    }
    rados.connect().map_err(|r| {
        let hint = match r.abs() {
            libc::ETIMEDOUT => "no monitor answered (check mon_host / the config file)",
            libc::EACCES | libc::EPERM => "authentication refused (check user_id and the key)",
            libc::ENOENT => "no key found for the user (check key_file / keyring)",
            _ => "connecting to the cluster failed",
        };
        errno_err(format!("rados_connect: {hint}"), r)
    })?;
    Ok(Arc::new(rados))
}

/// Sets this (helper) thread's CPU affinity: `cores`, or every online CPU. Threads librados
/// and librbd start (messenger, finisher, image work queues) inherit it; a helper thread
/// spawned by a pinned reactor would otherwise put them all on that reactor's core.
fn set_affinity(cores: Option<&[u32]>) {
    let all: Vec<u32> = (0..crate::sys::process::online_cpus()).collect();
    crate::sys::process::set_thread_affinity(cores.unwrap_or(&all));
}

/// Runs `job` on a helper thread and its result on the main reactor.
fn off_reactor<T: Send + 'static>(
    job: impl FnOnce() -> T + Send + 'static,
    then: impl FnOnce(T) + Send + 'static,
) {
    let app = reactor::app();
    let main = reactor::main_core();
    let spawned = std::thread::Builder::new()
        .name("rbd-admin".into())
        .spawn(move || {
            set_affinity(None);
            let r = job();
            let _ = app.send_to(main, move || then(r));
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start an rbd helper thread");
    }
}

/// Registers a cluster connection (main reactor). Connecting runs off the reactors.
pub fn register_cluster(
    name: String,
    opts: ConnectOpts,
    core_mask_text: Option<String>,
    done: impl FnOnce(Result<String, BdevError>) + Send + 'static,
) {
    if let Err(e) = ffi::lib() {
        return done(Err(BdevError::io(
            e,
            std::io::Error::from_raw_os_error(libc::ENOENT),
        )));
    }
    if find_cluster(&name).is_some() || PENDING.with(|p| p.borrow().contains(&name)) {
        return done(Err(BdevError::Exists(format!("rbd cluster {name}"))));
    }
    PENDING.with(|p| p.borrow_mut().push(name.clone()));
    let o = opts.clone();
    off_reactor(
        move || connect(&o),
        move |r| {
            PENDING.with(|p| p.borrow_mut().retain(|n| *n != name));
            match r {
                Ok(rados) => {
                    CLUSTERS.with(|c| {
                        c.borrow_mut().push(Arc::new(Cluster {
                            name: name.clone(),
                            user_id: opts.user_id,
                            config_param: opts.config,
                            config_file: opts.config_file,
                            key_file: opts.key_file,
                            core_mask: core_mask_text,
                            cores: opts.core_mask,
                            rados,
                        }))
                    });
                    done(Ok(name))
                }
                Err(e) => done(Err(e)),
            }
        },
    );
}

pub fn find_cluster(name: &str) -> Option<Arc<Cluster>> {
    CLUSTERS.with(|c| c.borrow().iter().find(|x| x.name == name).cloned())
}

pub fn clusters() -> Vec<Arc<Cluster>> {
    CLUSTERS.with(|c| c.borrow().clone())
}

/// Unregisters a cluster no bdev uses (main reactor); the shutdown runs off the reactors.
pub fn unregister_cluster(name: &str) -> Result<(), BdevError> {
    let Some(c) = find_cluster(name) else {
        return Err(BdevError::NotFound(format!("rbd cluster {name}")));
    };
    let users: Vec<String> = super::list()
        .iter()
        .filter_map(|h| {
            h.module_as::<RbdBdev>()
                .filter(|b| b.cluster_name.as_deref() == Some(name))
                .map(|_| h.name().to_string())
        })
        .collect();
    // A bdev being deleted still holds the connection until its images are closed.
    if !users.is_empty() || Arc::strong_count(&c.rados) > 1 {
        return Err(BdevError::Io {
            context: format!(
                "Cluster with name={name} is still used by bdev(s) [{}] and cannot be deleted",
                users.join(", ")
            ),
            source: std::io::Error::from_raw_os_error(libc::EBUSY),
        });
    }
    CLUSTERS.with(|cl| cl.borrow_mut().retain(|x| !Arc::ptr_eq(x, &c)));
    off_reactor(move || drop(c), |_| {});
    Ok(())
}

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

#[derive(Default)]
struct Slot {
    io: Option<BdevIo>,
    done: Option<Completer>,
    iov: Vec<libc::iovec>,
    deadline: Option<Instant>,
    /// Buffers of an I/O answered on timeout, kept until librbd completes it.
    orphan: Option<Vec<crate::buf::IoBuf>>,
    busy: bool,
    /// Where librbd reports a compare-and-write's first differing byte (boxed: its
    /// address must not move while librbd may write it).
    mismatch: Box<u64>,
    /// The completion of a compare-and-write in flight (found done by polling it: librbd
    /// does not put it on the image's event queue), as an address.
    unannounced: Option<usize>,
}

/// librbd's compare-and-write unit: a request must lie within one such sector.
const NATIVE_CAW_SECTOR: u32 = 512;

static NEXT_GEN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);

/// One reactor's state for one RBD bdev (shared by that reactor's channels of it).
struct CoreState {
    image: Arc<Image>,
    efd: Arc<EventFd>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    comps: Vec<ffi::CompletionT>,
    next_check: Instant,
    /// Tags completions (with the slot index) so an earlier generation's late completion
    /// on the same image handle is never taken for one of ours.
    gen: usize,
    /// Keep draining the eventfd while idle until then (see `poll`).
    drain_until: Option<Instant>,
    /// Compare-and-writes in flight whose completions are polled (`Slot::unannounced`).
    unannounced: usize,
    _wake: WakeSource,
}

impl Drop for CoreState {
    fn drop(&mut self) {
        // Buffers librbd may still write into (timed-out I/O, or I/O in flight at
        // shutdown): never free them under it.
        for s in &mut self.slots {
            if s.busy {
                if let Some(io) = s.io.take() {
                    std::mem::forget(io);
                }
                if let Some(b) = s.orphan.take() {
                    std::mem::forget(b);
                }
            }
        }
    }
}

fn drain(efd: &EventFd) {
    efd.drain();
}

struct RbdChannel {
    state: Rc<RefCell<CoreState>>,
    block_size: u64,
    timeout: Duration,
    /// Completions collected under the state borrow, delivered after it.
    done_buf: Vec<(BdevIo, Completer, IoStatus)>,
}

impl RbdChannel {
    fn start(&self, st: &mut CoreState, idx: u32) -> i32 {
        let image = st.image.clone();
        let bs = self.block_size;
        let tag = (st.gen << 16) | idx as usize;
        let slot = &mut st.slots[idx as usize];
        let Some(io) = slot.io.as_ref() else {
            return -libc::EINVAL;
        };
        let off = io.offset_blocks * bs;
        let len = io.num_blocks * bs;
        let c = match image.completion(tag) {
            Ok(c) => c,
            Err(r) => return r,
        };
        let r = match io.io_type {
            IoType::Read | IoType::Write => {
                slot.iov.clear();
                for b in &io.bufs {
                    slot.iov.push(libc::iovec {
                        iov_base: b.as_ptr() as *mut libc::c_void,
                        iov_len: b.len(),
                    });
                }
                if io.io_type == IoType::Read {
                    // SAFETY: the iovecs point at the I/O's buffers, which stay in this
                    // slot (not moved, not read) until the completion is polled, or are
                    // kept as orphans after a timeout (never freed under librbd).
                    unsafe { image.readv(&slot.iov, off, c) }
                } else {
                    // SAFETY: as above; librbd only reads them.
                    unsafe { image.writev(&slot.iov, off, c) }
                }
            }
            IoType::Flush => image.aio_flush(c),
            IoType::Unmap => image.aio_discard(off, len, c),
            IoType::WriteZeroes => image.aio_write_zeroes(off, len, c),
            IoType::CompareAndWrite => {
                let Some(at) = super::compare::split_at(io) else {
                    image.release(c);
                    return -libc::EINVAL;
                };
                slot.iov.clear();
                for b in &io.bufs {
                    slot.iov.push(libc::iovec {
                        iov_base: b.as_ptr() as *mut libc::c_void,
                        iov_len: b.len(),
                    });
                }
                image.release(c);
                let c = match image.completion_waking(st.efd.as_raw_fd()) {
                    Ok(c) => c,
                    Err(r) => return r,
                };
                let slot = &mut st.slots[idx as usize];
                let (cmp, data) = slot.iov.split_at(at);
                // SAFETY: as for writes: the iovecs point at the I/O's buffers, which stay
                // in this slot until the completion is polled; librbd only reads them.
                let r = unsafe { image.compare_and_writev(cmp, data, off, c, &mut *slot.mismatch) };
                if r < 0 {
                    image.release(c);
                } else {
                    slot.unannounced = Some(c as usize);
                    st.unannounced += 1;
                }
                return r;
            }
            IoType::Reset | IoType::Compare => -libc::EOPNOTSUPP,
        };
        if r < 0 {
            image.release(c);
        }
        r
    }

    /// Frees slot `idx`, whose I/O librbd completed with `ret`, and queues its answer.
    fn finish_slot(&mut self, st: &mut CoreState, idx: usize, ret: isize) {
        let slot = &mut st.slots[idx];
        slot.busy = false;
        slot.deadline = None;
        slot.orphan = None;
        let io = slot.io.take();
        let done = slot.done.take();
        st.free.push(idx as u32);
        let (Some(io), Some(done)) = (io, done) else {
            return; // answered on timeout already
        };
        let status = if ret == -(libc::EILSEQ as isize) && io.io_type == IoType::CompareAndWrite {
            IoStatus::Miscompare
        } else if ret == -(libc::EINVAL as isize) && io.io_type == IoType::CompareAndWrite {
            // Beyond one 512-byte sector (librbd compares within one).
            IoStatus::InvalidRequest
        } else if ret < 0 {
            status_of_errno(-ret as i32)
        } else if io.io_type == IoType::Read && ret as u64 != io.num_blocks * self.block_size {
            IoStatus::Failed
        } else {
            IoStatus::Success
        };
        self.done_buf.push((io, done, status));
    }

    /// Finishes the compare-and-writes librbd completed without announcing them.
    fn reap_unannounced(&mut self, st: &mut CoreState) -> usize {
        let mut found = 0;
        for idx in 0..st.slots.len() {
            let Some(c) = st.slots[idx].unannounced else {
                continue;
            };
            let Some(ret) = st.image.try_finish(c as ffi::CompletionT) else {
                continue;
            };
            st.slots[idx].unannounced = None;
            st.unannounced -= 1;
            found += 1;
            self.finish_slot(st, idx, ret);
        }
        found
    }

    /// Collects completed AIO into `done_buf` (state borrowed); returns the count.
    fn reap(&mut self, st: &mut CoreState) -> usize {
        drain(&st.efd);
        let image = st.image.clone();
        let mut total = 0;
        if st.unannounced > 0 {
            total += self.reap_unannounced(st);
        }
        loop {
            let n = image.poll_events(&mut st.comps);
            for i in 0..n {
                if image.arg_of(st.comps[i]) == st.efd.as_raw_fd() as usize {
                    // A compare-and-write's (should librbd announce it after all): it is
                    // found and released by `reap_unannounced`.
                    continue;
                }
                let (ret, tag) = image.finish(st.comps[i]);
                total += 1;
                let idx = if tag >> 16 == st.gen {
                    tag & 0xffff
                } else {
                    usize::MAX // an earlier generation's: see below
                };
                if st.slots.get(idx).is_none_or(|s| !s.busy) {
                    // A completion of an earlier generation of this reactor's state (an I/O
                    // that timed out before its channels closed; its buffers were kept
                    // forever): nothing of ours is in it.
                    tracing::warn!(idx, "rbd completion for no I/O in flight");
                    continue;
                }
                self.finish_slot(st, idx, ret);
            }
            if n < st.comps.len() {
                break;
            }
        }
        if total > 0 {
            st.drain_until = Some(reactor::now() + Duration::from_millis(10));
        }
        total
    }

    /// Answers I/O older than the timeout (checked every 100 ms).
    fn expire(&mut self, st: &mut CoreState) {
        let now = reactor::now();
        if now < st.next_check {
            return;
        }
        st.next_check = now + Duration::from_millis(100);
        for slot in st.slots.iter_mut() {
            if !slot.busy || slot.deadline.is_none_or(|d| d > now) {
                continue;
            }
            slot.deadline = None;
            let (Some(mut io), Some(done)) = (slot.io.take(), slot.done.take()) else {
                continue;
            };
            // librbd may still use the buffers: keep them, answer with fresh ones.
            let fresh: Vec<crate::buf::IoBuf> = io
                .bufs
                .iter()
                .map(|b| crate::buf::IoBuf::zeroed(b.len()))
                .collect();
            slot.orphan = Some(std::mem::replace(&mut io.bufs, fresh));
            tracing::warn!(io_type = ?io.io_type, offset = io.offset_blocks, "rbd I/O timed out");
            self.done_buf.push((io, done, IoStatus::Failed));
        }
    }

    fn deliver(&mut self) {
        for (io, done, status) in self.done_buf.drain(..) {
            done.complete(io, status);
        }
    }
}

impl ModuleChannel for RbdChannel {
    fn submit(&mut self, io: BdevIo, done: &Completer) {
        if io.io_type == IoType::Reset {
            return done.complete(io, IoStatus::Success);
        }
        let state = self.state.clone();
        let mut st = state.borrow_mut();
        let Some(idx) = st.free.pop() else {
            drop(st);
            return done.complete(io, IoStatus::NoMem);
        };
        {
            let slot = &mut st.slots[idx as usize];
            slot.io = Some(io);
            slot.done = Some(done.clone());
            slot.busy = true;
            slot.deadline = Some(reactor::now() + self.timeout);
        }
        let r = self.start(&mut st, idx);
        if r < 0 {
            let slot = &mut st.slots[idx as usize];
            slot.busy = false;
            slot.deadline = None;
            let io = slot.io.take();
            slot.done = None;
            st.free.push(idx);
            drop(st);
            if let Some(io) = io {
                done.complete(io, status_of_errno(-r));
            }
        }
    }

    fn poll(&mut self, _done: &Completer) -> usize {
        let state = self.state.clone();
        let n = {
            let mut st = state.borrow_mut();
            if st.free.len() == DEPTH {
                // Nothing in flight. librbd may signal the eventfd just after the last
                // completion was polled: drain it for a while, or the level-triggered wake
                // would keep an idle reactor awake.
                if st.drain_until.is_some_and(|t| reactor::now() < t) {
                    drain(&st.efd);
                } else {
                    st.drain_until = None;
                }
                return 0;
            }
            let n = self.reap(&mut st);
            self.expire(&mut st);
            n
        };
        self.deliver();
        n
    }
}

/// A throw-away Ceph cluster for tests and benchmarks (`scripts/ceph-dev-cluster.sh`),
/// stopped and removed on drop.
pub struct DevCluster {
    pub dir: std::path::PathBuf,
    pub conf: String,
}

impl DevCluster {
    /// Why Ceph tests cannot run here (packages absent), or None.
    pub fn unavailable() -> Option<String> {
        let missing_bin = ["ceph-mon", "ceph-osd", "rbd"].into_iter().find(|b| {
            !std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).any(|d| d.join(b).is_file()))
                .unwrap_or(false)
        });
        if let Some(b) = missing_bin {
            return Some(format!(
                "{b} is not installed (apt-get install --no-install-recommends ceph-mon ceph-osd ceph-common {PACKAGES})"
            ));
        }
        ffi::lib().err()
    }

    /// `unavailable()`, except that with POLLUX_REQUIRE_CEPH set (CI, which installs the
    /// packages) a missing piece is a failure, not a skip.
    pub fn unavailable_or_panic() -> Option<String> {
        let why = Self::unavailable()?;
        if std::env::var_os("POLLUX_REQUIRE_CEPH").is_some() {
            panic!("POLLUX_REQUIRE_CEPH is set but Ceph is not usable: {why}");
        }
        Some(why)
    }

    /// Starts a cluster under a fresh temp dir; `script` is scripts/ceph-dev-cluster.sh.
    pub fn start(script: &std::path::Path, tag: &str) -> Result<Self, String> {
        let dir = std::env::temp_dir().join(format!(
            "pollux-ceph-{tag}-{}-{}",
            std::process::id(),
            crate::bdev::random_uuid()
        ));
        let out = std::process::Command::new(script)
            .arg("start")
            .arg(&dir)
            .output()
            .map_err(|e| format!("running {}: {e}", script.display()))?;
        let c = DevCluster {
            dir,
            conf: String::from_utf8_lossy(&out.stdout).trim().to_string(),
        };
        if !out.status.success() {
            return Err(format!(
                "{} start failed: {}",
                script.display(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(c)
    }

    /// Runs `rbd -c <conf> args...`.
    pub fn rbd(&self, args: &[&str]) -> Result<String, String> {
        let out = std::process::Command::new("rbd")
            .arg("-c")
            .arg(&self.conf)
            .args(args)
            .output()
            .map_err(|e| format!("rbd: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "rbd {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Creates image `name` of `mib` MiB in pool rbd (layering only: no exclusive lock).
    pub fn create_image(&self, name: &str, mib: u64) -> Result<(), String> {
        self.rbd(&[
            "create",
            "--size",
            &format!("{mib}M"),
            "--image-feature",
            "layering",
            &format!("rbd/{name}"),
        ])
        .map(|_| ())
    }

    fn script(&self) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/ceph-dev-cluster.sh")
    }
}

impl Drop for DevCluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new(self.script())
            .arg("stop")
            .arg(&self.dir)
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
