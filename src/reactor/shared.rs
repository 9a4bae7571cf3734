//! Starting and stopping the reactor threads: the state other threads touch (message
//! queues, doorbells, stop flags), the `AppHandle` and the shutdown hooks run at the end.

use super::run_reactor;
use super::{
    with_local, IdleStrategy, LocalReactor, Message, ReactorConfig, ReactorError, SendError,
    SendErrorKind, MESSAGE_QUEUE_DEPTH,
};
use crate::sys;
use crossbeam_queue::ArrayQueue;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

pub(super) struct ReactorShared {
    pub(super) core: u32,
    pub(super) queue: ArrayQueue<Message>,
    pub(super) sleeping: AtomicBool,
    pub(super) doorbell: sys::EventFd,
}

impl ReactorShared {
    pub(super) fn wake(&self) {
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed) {
            self.doorbell.ring();
        }
    }
}

pub(super) struct Shared {
    pub(super) reactors: Vec<ReactorShared>,
    pub(super) idle: IdleStrategy,
    pub(super) stopping: AtomicBool,
    pub(super) shutdown_requested: AtomicBool,
    pub(super) next_poller_id: AtomicU64,
}

impl Shared {
    pub(super) fn index_of(&self, core: u32) -> Option<usize> {
        self.reactors.iter().position(|r| r.core == core)
    }

    pub(super) fn send_to(&self, core: u32, msg: Message) -> Result<(), SendError> {
        if self.stopping.load(Ordering::Relaxed) {
            return Err(SendError {
                reason: SendErrorKind::Stopped,
                msg,
            });
        }
        let Some(idx) = self.index_of(core) else {
            return Err(SendError {
                reason: SendErrorKind::NoSuchCore,
                msg,
            });
        };
        let reactor = &self.reactors[idx];
        match reactor.queue.push(msg) {
            Ok(()) => {
                reactor.wake();
                Ok(())
            }
            Err(msg) => Err(SendError {
                reason: SendErrorKind::Full,
                msg,
            }),
        }
    }

    pub(super) fn stop_all(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        for r in &self.reactors {
            r.doorbell.ring();
        }
    }
}

/// A handle on a running set of reactors, usable from any thread.
#[derive(Clone)]
pub struct AppHandle {
    shared: Arc<Shared>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl AppHandle {
    /// Queues `f` to run on the reactor of `core`. Never blocks: a full queue is an error.
    pub fn send_to(&self, core: u32, f: impl FnOnce() + Send + 'static) -> Result<(), SendError> {
        self.shared.send_to(core, Box::new(f))
    }

    pub fn cores(&self) -> Vec<u32> {
        self.shared.reactors.iter().map(|r| r.core).collect()
    }

    pub fn main_core(&self) -> u32 {
        self.shared.reactors[0].core
    }

    /// Starts an orderly shutdown: shutdown hooks run on the main reactor in reverse order
    /// of registration, then every reactor stops.
    pub fn shutdown(&self) {
        request_shutdown_on(&self.shared);
    }

    /// True once every reactor has been told to stop.
    pub fn is_stopping(&self) -> bool {
        self.shared.stopping.load(Ordering::SeqCst)
    }

    /// Waits for every reactor thread to finish.
    pub fn wait(&self) {
        let threads: Vec<_> = std::mem::take(&mut *self.threads.lock().unwrap());
        for t in threads {
            let _ = t.join();
        }
    }

    /// Blocks SIGINT/SIGTERM in the calling thread and starts a small (non-reactor) thread
    /// that turns the first of them into `shutdown()`. Call before `start` so the reactor
    /// threads inherit the blocked mask.
    pub fn shutdown_on_signals() -> impl FnOnce(&AppHandle) {
        let wait = sys::process::block_shutdown_signals();
        move |app: &AppHandle| {
            let app = app.clone();
            std::thread::Builder::new()
                .name("signals".into())
                .spawn(move || {
                    let sig = wait();
                    tracing::info!(signal = sig, "shutdown signal received");
                    app.shutdown();
                })
                .expect("spawn signal thread");
        }
    }
}

pub(super) fn request_shutdown_on(shared: &Arc<Shared>) {
    if shared.shutdown_requested.swap(true, Ordering::SeqCst) {
        return;
    }
    let main = shared.reactors[0].core;
    let sh = shared.clone();
    let run = move || run_shutdown_hooks(sh);
    if let Err(e) = shared.send_to(main, Box::new(run)) {
        // Queue full or stopping: stop without hooks rather than hang.
        tracing::warn!(reason = ?e.reason, "could not queue shutdown; stopping reactors now");
        shared.stop_all();
    }
}

pub(super) fn run_shutdown_hooks(shared: Arc<Shared>) {
    let next = with_local(|r| r.shutdown_hooks.borrow_mut().pop());
    match next {
        Some((name, hook)) => {
            tracing::debug!(hook = %name, "running shutdown hook");
            let sh = shared.clone();
            hook(Box::new(move || {
                // The hook may complete on any reactor; continue on the main one.
                let main = sh.reactors[0].core;
                let sh2 = sh.clone();
                if sh
                    .send_to(main, Box::new(move || run_shutdown_hooks(sh2)))
                    .is_err()
                {
                    sh.stop_all();
                }
            }));
        }
        None => shared.stop_all(),
    }
}

/// Starts one reactor per core of `config.cores` and runs `init` on the main reactor.
pub fn start(
    config: ReactorConfig,
    init: impl FnOnce() + Send + 'static,
) -> Result<AppHandle, ReactorError> {
    if config.cores.is_empty() {
        return Err(ReactorError::EmptyMask);
    }
    let mut seen = std::collections::HashSet::new();
    for &core in &config.cores {
        if !seen.insert(core) {
            return Err(ReactorError::DuplicateCore { core });
        }
    }
    if config.pin {
        let available: Vec<u32> = core_affinity::get_core_ids()
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.id as u32)
            .collect();
        for &core in &config.cores {
            if !available.contains(&core) {
                return Err(ReactorError::CoreUnavailable { core, available });
            }
        }
    }
    let mut reactors = Vec::with_capacity(config.cores.len());
    for &core in &config.cores {
        reactors.push(ReactorShared {
            core,
            queue: ArrayQueue::new(MESSAGE_QUEUE_DEPTH),
            sleeping: AtomicBool::new(false),
            doorbell: sys::EventFd::new()?,
        });
    }
    let shared = Arc::new(Shared {
        reactors,
        idle: config.idle,
        stopping: AtomicBool::new(false),
        shutdown_requested: AtomicBool::new(false),
        next_poller_id: AtomicU64::new(1),
    });
    let app = AppHandle {
        shared: shared.clone(),
        threads: Arc::new(Mutex::new(Vec::new())),
    };
    shared
        .send_to(config.cores[0], Box::new(init))
        .map_err(|_| std::io::Error::other("could not queue init"))?;

    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), ReactorError>>();
    for idx in 0..config.cores.len() {
        let sh = shared.clone();
        let tx = ready_tx.clone();
        let app2 = app.clone();
        let pin = config.pin;
        let core = config.cores[idx];
        let handle = std::thread::Builder::new()
            .name(format!("reactor_{core}"))
            .spawn(move || {
                if pin
                    && !core_affinity::set_for_current(core_affinity::CoreId { id: core as usize })
                {
                    let _ = tx.send(Err(ReactorError::PinFailed { core }));
                    return;
                }
                let local = match LocalReactor::new(sh, idx, app2) {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = tx.send(Err(e.into()));
                        return;
                    }
                };
                let _ = tx.send(Ok(()));
                run_reactor(local);
            })?;
        app.threads.lock().unwrap().push(handle);
    }
    drop(ready_tx);
    for _ in 0..config.cores.len() {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                shared.stop_all();
                app.wait();
                return Err(e);
            }
            Err(_) => break,
        }
    }
    Ok(app)
}
