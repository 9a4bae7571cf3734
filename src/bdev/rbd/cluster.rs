//! Cluster connections (`bdev_rbd_register_cluster`), connecting to RADOS, and the helper threads that blocking librbd calls run on.

use super::ffi::{self, Rados};
use super::{BdevError, RbdBdev};
use crate::reactor;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Default bound on connecting and on monitor operations.
pub(super) const CONNECT_TIMEOUT_S: &str = "10";

/// A registered cluster connection (`bdev_rbd_register_cluster`).
pub struct Cluster {
    pub name: String,
    pub user_id: Option<String>,
    pub config_param: Option<BTreeMap<String, String>>,
    pub config_file: Option<String>,
    pub key_file: Option<String>,
    pub core_mask: Option<String>,
    pub(super) cores: Option<Vec<u32>>,
    pub(super) rados: Arc<Rados>,
}

thread_local! {
    /// Registered clusters (main reactor), in registration order.
    static CLUSTERS: RefCell<Vec<Arc<Cluster>>> = const { RefCell::new(Vec::new()) };
    /// Names being registered right now (main reactor).
    static PENDING: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
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

pub(super) fn errno_err(what: String, r: i32) -> BdevError {
    BdevError::io(what, std::io::Error::from_raw_os_error(r.abs()))
}

/// Connects (blocking; helper threads only).
pub(super) fn connect(o: &ConnectOpts) -> Result<Arc<Rados>, BdevError> {
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
pub(super) fn set_affinity(cores: Option<&[u32]>) {
    let all: Vec<u32> = (0..crate::sys::process::online_cpus()).collect();
    crate::sys::process::set_thread_affinity(cores.unwrap_or(&all));
}

/// Runs `job` on a helper thread and its result on the main reactor.
pub(super) fn off_reactor<T: Send + 'static>(
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
    let users: Vec<String> = crate::bdev::list()
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
