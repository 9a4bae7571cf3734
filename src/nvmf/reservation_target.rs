//! Reservation changes carried out on the main reactor: applied to the namespace in the registry, saved to the PTPL file, published to every reactor, notified to the other hosts.
//!
//! A reservation's state belongs to its namespace ([`Namespace::reservations`]), one copy
//! in the registry on the main reactor and read-only snapshots on every reactor (the
//! published view), so the I/O path checks access without a lock. A state-changing command
//! (Register, Acquire, Release, Set Features Reservation Persistence) travels from its
//! queue's reactor to the main reactor ([`execute`]), which applies it to the registry's
//! state, writes the PTPL file if the namespace has one (on a worker thread: temp file,
//! fsync, rename), publishes the view, then sends each notification to every controller
//! of the host it concerns (found in the subsystem's directory) on whatever reactor it
//! lives (for Preempt and Abort, also waits for the preempted hosts' bdev I/O started
//! before, on every reactor) and completes the command: an I/O that arrives anywhere after
//! the completion, or after a notification, sees the new state. Commands are applied in the
//! order the main reactor receives them, so every reactor sees one order of events.
//!
//! The PTPL file is SPDK's JSON ([`PtplFile`]); [`load_ptpl`] reads it for
//! `nvmf_subsystem_add_ns`: a missing file is an empty state, an unreadable or corrupt one
//! an error naming the file.

use super::reservation::{AcquireAction, HostId, Notice, PtplFile, Reservations};
use super::reservation_wire::{self as wire_pr, PrCommand};
use super::subsystem::Namespace;
use super::target::{self, with_target};
use super::wire::Status;
use crate::reactor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};

/// A state-changing reservation command, as the main reactor receives it.
#[derive(Debug, Clone, Copy)]
pub struct PrRequest {
    pub subsys_id: u64,
    pub nsid: u32,
    pub host: HostId,
    pub cmd: PrCommand,
}

/// What applying a command to the registry left to do.
struct Applied {
    notices: Vec<(HostId, Notice)>,
    changed: bool,
    save: Option<(PathBuf, PtplFile)>,
}

/// Applies `req` on the main reactor; `done` runs there with the command's status, after
/// the new state reached every reactor (and the PTPL files, if any, were written). Set
/// Features Reservation Persistence for nsid FFFFFFFFh applies to every namespace of the
/// subsystem that has a PTPL file (as SPDK).
pub fn execute(req: PrRequest, done: impl FnOnce(Status) + Send + 'static) {
    let nsids = match req.cmd {
        PrCommand::SetPtpl(_) if req.nsid == u32::MAX => with_target(|t| {
            t.view()
                .subsystem(req.subsys_id)
                .map(|s| {
                    s.namespaces
                        .values()
                        .filter(|ns| ns.ptpl_file.is_some())
                        .map(|ns| ns.nsid)
                        .collect()
                })
                .unwrap_or_default()
        }),
        _ => vec![req.nsid],
    };
    let mut status = Status::SUCCESS;
    let mut changed = false;
    let mut saves = Vec::new();
    let mut notices = Vec::new();
    for nsid in nsids {
        let one = PrRequest { nsid, ..req };
        match with_target(|t| apply(t, &one)) {
            Ok(a) => {
                changed |= a.changed;
                saves.extend(a.save);
                notices.push((nsid, a.notices));
            }
            Err(st) => {
                status = st;
                break;
            }
        }
    }
    if !changed {
        return done(status);
    }
    let preempted: Vec<HostId> = notices
        .iter()
        .flat_map(|(_, n)| n.iter())
        .filter(|(_, n)| *n == Notice::RegistrationPreempted)
        .map(|(h, _)| *h)
        .collect();
    let abort = matches!(
        req.cmd,
        PrCommand::Acquire {
            action: AcquireAction::PreemptAndAbort,
            ..
        }
    ) && !preempted.is_empty();
    let (sid, nsid) = (req.subsys_id, req.nsid);
    // Once every reactor has the new state: the other hosts are told (a host that reads
    // the state when told sees the new one), then the command completes.
    let publish = move |st: Status| {
        target::publish(move || {
            for (nsid, n) in &notices {
                notify(sid, *nsid, n);
            }
            if abort && st.is_success() {
                drain(sid, nsid, preempted, move || done(st))
            } else {
                done(st)
            }
        })
    };
    if saves.is_empty() {
        return publish(status);
    }
    save_ptpl(saves, move |r| {
        let st = match r {
            Ok(()) => status,
            Err(e) => {
                tracing::error!(error = %e, "cannot save a namespace's reservations");
                Status::INTERNAL_ERROR
            }
        };
        publish(st)
    })
}

fn apply(t: &mut target::Target, req: &PrRequest) -> Result<Applied, Status> {
    let ns: &Namespace = t
        .namespace(req.subsys_id, req.nsid)
        .ok_or(Status::INVALID_NAMESPACE_OR_FORMAT.with_dnr())?;
    let old = ns.reservations.clone();
    let mut new = (*old).clone();
    let ptpl_file = ns.ptpl_file.clone();
    let bdev_uuid = ns.bdev.info.uuid.to_string();
    let notices = wire_pr::apply(&mut new, &req.host, req.cmd, ptpl_file.is_some())
        .map_err(wire_pr::status_of)?;
    let changed = new != *old;
    let save = match &ptpl_file {
        Some(path) if changed && (new.ptpl() || old.ptpl()) => {
            Some((PathBuf::from(path.as_ref()), new.to_ptpl_file(&bdev_uuid)))
        }
        _ => None,
    };
    if changed {
        if let Some(ns) = t.namespace_mut(req.subsys_id, req.nsid) {
            ns.reservations = Arc::new(new);
        }
    }
    Ok(Applied {
        notices,
        changed,
        save,
    })
}

/// Preempt and Abort: once the new state is on every reactor, waits on each for the bdev
/// I/O the preempted `hosts` started on the namespace before, then runs `done` (main
/// reactor).
fn drain(sid: u64, nsid: u32, hosts: Vec<HostId>, done: impl FnOnce() + Send + 'static) {
    let cores = reactor::cores();
    let left = Arc::new(AtomicUsize::new(cores.len()));
    let done: Arc<Mutex<Option<Reply>>> = Arc::new(Mutex::new(Some(Box::new(done))));
    let main = reactor::main_core();
    for core in cores {
        let (left, done, hosts) = (left.clone(), done.clone(), hosts.clone());
        reactor::send_to(core, move || {
            let reply = Box::new(move || {
                reactor::send_to(main, move || {
                    if left.fetch_sub(1, Ordering::AcqRel) == 1 {
                        let f = done.lock().unwrap_or_else(|e| e.into_inner()).take();
                        if let Some(f) = f {
                            f();
                        }
                    }
                })
            });
            super::tcp::drain_hosts(sid, nsid, hosts, reply)
        });
    }
}

/// Sends each notice to every enabled controller of its host (the admin queue's reactor
/// records it in the controller's log and raises the AEN).
fn notify(subsys_id: u64, nsid: u32, notices: &[(HostId, Notice)]) {
    if notices.is_empty() {
        return;
    }
    let Some(s) = with_target(|t| t.view().subsystem(subsys_id).cloned()) else {
        return;
    };
    let targets: Vec<_> = {
        let dir = s.directory.lock();
        notices
            .iter()
            .flat_map(|(host, notice)| {
                dir.values()
                    .filter(move |e| &e.hostid == host)
                    .map(move |e| (e.admin, *notice))
            })
            .collect()
    };
    for (admin, notice) in targets {
        reactor::send_to(admin.core, move || {
            super::tcp::reservation_notice(admin.index, admin.gen, nsid, notice)
        });
    }
}

/// Reads a PTPL file: `Ok(None)` when it does not exist (a new namespace), the state it
/// holds otherwise, or an error naming the file. `bdev_uuid` must match the file's.
pub fn load_ptpl(path: &str, bdev_uuid: &str) -> Result<Option<Reservations>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("namespace.ptpl_file: cannot read {path}: {e}")),
    };
    let file: PtplFile = serde_json::from_str(&text)
        .map_err(|e| format!("namespace.ptpl_file: {path} is not a PTPL file: {e}"))?;
    if !file.bdev_uuid.eq_ignore_ascii_case(bdev_uuid) {
        return Err(format!(
            "namespace.ptpl_file: {path} belongs to bdev {} (this bdev is {bdev_uuid})",
            file.bdev_uuid
        ));
    }
    Reservations::from_ptpl_file(&file)
        .map(Some)
        .map_err(|e| format!("namespace.ptpl_file: {path}: {e}"))
}

/// Writes `file` atomically to `path` (a temp file beside it, fsync, rename, fsync of the
/// directory).
fn write_ptpl(path: &Path, file: &PtplFile) -> std::io::Result<()> {
    use std::io::Write;
    let text = serde_json::to_vec_pretty(file).map_err(std::io::Error::other)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&text)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

type Job = Box<dyn FnOnce() + Send>;
/// The continuation of a Preempt and Abort once every reactor drained.
type Reply = Box<dyn FnOnce() + Send>;

/// The PTPL writer: one thread for the process, jobs in order (so two saves of a namespace
/// land in the order they were applied).
fn worker() -> &'static mpsc::Sender<Job> {
    static WORKER: OnceLock<mpsc::Sender<Job>> = OnceLock::new();
    WORKER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("pollux-ptpl".into())
            .spawn(move || {
                for job in rx {
                    job();
                }
            })
            .expect("spawning the PTPL writer thread");
        tx
    })
}

/// Writes each file to its path off the reactors; `done` runs on the main reactor with the
/// outcome (the first error).
fn save_ptpl(
    files: Vec<(PathBuf, PtplFile)>,
    done: impl FnOnce(Result<(), String>) + Send + 'static,
) {
    let app = reactor::app();
    let main = reactor::main_core();
    let job: Job = Box::new(move || {
        let r = files.iter().try_for_each(|(path, file)| {
            write_ptpl(path, file).map_err(|e| format!("{}: {e}", path.display()))
        });
        let _ = app.send_to(main, move || done(r));
    });
    if let Err(e) = worker().send(job) {
        // The thread never exits while the process runs; should it be gone, the write is
        // done here rather than leaving the command without an answer.
        tracing::error!("the PTPL writer thread is gone: writing on the reactor");
        (e.0)();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nvmf::reservation::{PtplChange, Register, RegisterAction};

    #[test]
    fn ptpl_file_written_atomically_and_read_back() {
        let dir = std::env::temp_dir().join(format!("pollux-ptpl-ut-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ns1.json");
        let p = path.to_str().unwrap();
        let uuid = "5b1e0cf4-0d7a-4bb2-8c67-6d7e4c6c0b0a";
        assert_eq!(load_ptpl(p, uuid), Ok(None), "no file yet");
        let mut r = Reservations::default();
        r.register(
            &[7; 16],
            Register {
                action: RegisterAction::Register,
                ignore_existing_key: false,
                current_key: 0,
                new_key: 0x42,
                ptpl: PtplChange::Set,
            },
            true,
        )
        .unwrap();
        write_ptpl(&path, &r.to_ptpl_file(uuid)).unwrap();
        assert!(!dir.join("ns1.json.tmp").exists());
        let back = load_ptpl(p, uuid).unwrap().unwrap();
        assert!(back.ptpl());
        assert_eq!(back.report_extended(128)[72], 0x42);
        let e = load_ptpl(p, "00000000-0000-0000-0000-000000000001").unwrap_err();
        assert!(e.contains("belongs to bdev"), "{e}");
        std::fs::write(&path, "{ not json").unwrap();
        let e = load_ptpl(p, uuid).unwrap_err();
        assert!(e.contains(p) && e.contains("not a PTPL file"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
