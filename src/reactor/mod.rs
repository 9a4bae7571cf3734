//! Reactors: one event loop per core of the core mask, each on its own pinned thread.
//!
//! A reactor runs its pollers (active ones every loop, timed ones at their period), executes
//! the closures other threads send it through a bounded lock-free queue, accounts busy and
//! idle time, and — when every poller has been idle for the configured spin time — sleeps on
//! an epoll set holding its doorbell eventfd plus every wake fd its pollers registered
//! (sockets, io_uring rings, AIO eventfds), so new work wakes it within microseconds. The
//! first core of the mask is the main reactor: control (RPC, registries) runs there and
//! reaches the others only by messages. Everything per reactor is thread-local; only the
//! message queues, the doorbells and the stop flag are shared.
//!
//! `config` holds the core mask and idle strategy, `shared` the cross-thread state, start-up
//! and shutdown; this file the per-reactor loop, pollers, wake fds and messages.

mod config;
mod shared;

pub use crate::sys::process::{process_cpu_time, thread_cpu_time};
use crate::sys::{self, epoll::READABLE};
pub use config::{parse_core_mask, IdleStrategy, ReactorConfig, ReactorError};
use shared::{request_shutdown_on, ReactorShared, Shared};
pub use shared::{start, AppHandle};

use std::cell::{Cell, RefCell};
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How many closures may wait in one reactor's queue before `send_to` pushes back.
pub const MESSAGE_QUEUE_DEPTH: usize = 16 * 1024;
/// Messages executed per loop iteration, so a flood cannot starve the pollers.
const MESSAGES_PER_LOOP: usize = 256;

/// What one call of a poller achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollStatus {
    /// It found work (bytes, completions, requests) and made progress.
    Busy,
    /// It found nothing to do.
    Idle,
}

impl PollStatus {
    pub fn from_work(count: usize) -> Self {
        if count > 0 {
            PollStatus::Busy
        } else {
            PollStatus::Idle
        }
    }
}

/// A message could not be queued; the closure is handed back.
pub struct SendError {
    pub reason: SendErrorKind,
    pub msg: Message,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendErrorKind {
    /// The target's queue is full: retry later (back-pressure).
    Full,
    /// No reactor runs on that core in this application.
    NoSuchCore,
    /// The application is stopping.
    Stopped,
}

impl std::fmt::Debug for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SendError({:?})", self.reason)
    }
}

pub type Message = Box<dyn FnOnce() + Send + 'static>;

// ---------------------------------------------------------------------------------------------
// Per-reactor (thread-local) state

type Poll = Box<dyn FnMut() -> PollStatus>;
type ShutdownHook = Box<dyn FnOnce(Box<dyn FnOnce() + Send>)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PollerState {
    Running,
    Paused,
    Unregistered,
}

struct PollerEntry {
    id: u64,
    name: String,
    /// `None`: active poller, run every loop.
    period: Option<Duration>,
    /// A timed poller whose work always comes with a wake of this reactor (see
    /// `register_wake_driven_poller`): its period does not bound the idle sleep, and every
    /// wake makes it due.
    wake_driven: bool,
    next_run: Instant,
    state: PollerState,
    poll: Option<Poll>,
    run_count: u64,
    busy_count: u64,
}

/// Statistics of one poller, as `thread_get_pollers` reports them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PollerStats {
    pub name: String,
    pub id: u64,
    pub state: &'static str,
    pub run_count: u64,
    pub busy_count: u64,
    /// Period in microseconds; 0 for active pollers.
    pub period_us: u64,
}

/// Statistics of one reactor.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReactorStats {
    pub core: u32,
    /// The reactor thread's kernel thread id.
    pub tid: i32,
    pub is_main: bool,
    /// Nanoseconds spent in loops where some poller or message did work.
    pub busy_ns: u64,
    /// Nanoseconds spent polling with nothing to do, or asleep.
    pub idle_ns: u64,
    /// Nanoseconds spent asleep in the idle strategy (a part of `idle_ns`).
    pub sleep_ns: u64,
    pub sleeps: u64,
    pub wakeups: u64,
    pub messages: u64,
    pub pollers: Vec<PollerStats>,
}

struct LocalReactor {
    shared: Arc<Shared>,
    app: AppHandle,
    idx: usize,
    epoll: sys::Epoll,
    pollers: RefCell<Vec<PollerEntry>>,
    pollers_dirty: Cell<bool>,
    /// Messages that found their target's queue full, retried every loop in order.
    deferred: RefCell<std::collections::VecDeque<(u32, Message)>>,
    shutdown_hooks: RefCell<Vec<(String, ShutdownHook)>>,
    wake_fds: RefCell<Vec<RawFd>>,
    busy_ns: Cell<u64>,
    idle_ns: Cell<u64>,
    sleep_ns: Cell<u64>,
    sleeps: Cell<u64>,
    messages: Cell<u64>,
}

const DOORBELL_TOKEN: u64 = u64::MAX;

impl LocalReactor {
    fn new(shared: Arc<Shared>, idx: usize, app: AppHandle) -> std::io::Result<Rc<Self>> {
        let epoll = sys::Epoll::new()?;
        epoll.add(
            shared.reactors[idx].doorbell.as_raw_fd(),
            DOORBELL_TOKEN,
            READABLE,
        )?;
        Ok(Rc::new(Self {
            shared,
            app,
            idx,
            epoll,
            pollers: RefCell::new(Vec::new()),
            pollers_dirty: Cell::new(false),
            deferred: RefCell::new(Default::default()),
            shutdown_hooks: RefCell::new(Vec::new()),
            wake_fds: RefCell::new(Vec::new()),
            busy_ns: Cell::new(0),
            idle_ns: Cell::new(0),
            sleep_ns: Cell::new(0),
            sleeps: Cell::new(0),
            messages: Cell::new(0),
        }))
    }

    fn me(&self) -> &ReactorShared {
        &self.shared.reactors[self.idx]
    }

    /// Runs up to MESSAGES_PER_LOOP queued closures; returns how many ran.
    fn run_messages(&self) -> usize {
        let mut n = 0;
        while n < MESSAGES_PER_LOOP {
            let Some(msg) = self.me().queue.pop() else {
                break;
            };
            msg();
            n += 1;
        }
        self.messages.set(self.messages.get() + n as u64);
        n
    }

    fn retry_deferred(&self) -> usize {
        let mut n = 0;
        loop {
            let next = self.deferred.borrow_mut().pop_front();
            let Some((core, msg)) = next else { break };
            match self.shared.send_to(core, msg) {
                Ok(()) => n += 1,
                Err(SendError {
                    reason: SendErrorKind::Full,
                    msg,
                }) => {
                    self.deferred.borrow_mut().push_front((core, msg));
                    break;
                }
                Err(e) => tracing::warn!(core, reason = ?e.reason, "dropping deferred message"),
            }
        }
        n
    }

    /// Runs every due poller once, with `now` as the time of the whole pass (the clock is
    /// read once per loop, not per poller: timed pollers have microsecond periods at best).
    /// Returns (any busy, earliest timed deadline).
    fn run_pollers(&self, now: Instant) -> (bool, Option<Instant>) {
        let mut busy = false;
        let mut next_deadline: Option<Instant> = None;
        let count = self.pollers.borrow().len();
        for i in 0..count {
            let (mut poll, period, wake_driven) = {
                let mut pollers = self.pollers.borrow_mut();
                let p = &mut pollers[i];
                if p.state != PollerState::Running {
                    continue;
                }
                if let Some(period) = p.period {
                    if now < p.next_run {
                        if !p.wake_driven {
                            next_deadline =
                                Some(next_deadline.map_or(p.next_run, |d| d.min(p.next_run)));
                        }
                        continue;
                    }
                    p.next_run = now + period;
                }
                match p.poll.take() {
                    Some(poll) => (poll, p.period, p.wake_driven),
                    None => continue,
                }
            };
            let status = poll();
            let mut pollers = self.pollers.borrow_mut();
            let p = &mut pollers[i];
            p.run_count += 1;
            if status == PollStatus::Busy {
                p.busy_count += 1;
                busy = true;
            }
            if p.state != PollerState::Unregistered {
                p.poll = Some(poll);
            }
            if period.is_some() && !wake_driven && p.state == PollerState::Running {
                next_deadline = Some(next_deadline.map_or(p.next_run, |d| d.min(p.next_run)));
            }
        }
        if self.pollers_dirty.replace(false) {
            self.pollers
                .borrow_mut()
                .retain(|p| p.state != PollerState::Unregistered);
        }
        (busy, next_deadline)
    }

    /// Sleeps until woken or `deadline`; returns the time it woke up (`now` if it did not
    /// sleep).
    fn sleep(&self, deadline: Option<Instant>, now: Instant) -> Instant {
        let me = self.me();
        me.sleeping.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if !me.queue.is_empty() || self.shared.stopping.load(Ordering::SeqCst) {
            me.sleeping.store(false, Ordering::SeqCst);
            return now;
        }
        let timeout = deadline.map(|d| d.saturating_duration_since(now));
        self.sleeps.set(self.sleeps.get() + 1);
        self.epoll.wait(timeout);
        me.sleeping.store(false, Ordering::SeqCst);
        me.doorbell.drain();
        let woke = Instant::now();
        // Whatever woke the reactor may be work of a wake-driven poller: run them all now.
        for p in self
            .pollers
            .borrow_mut()
            .iter_mut()
            .filter(|p| p.wake_driven)
        {
            p.next_run = p.next_run.min(woke);
        }
        let slept = woke.saturating_duration_since(now).as_nanos() as u64;
        self.sleep_ns.set(self.sleep_ns.get() + slept);
        self.idle_ns.set(self.idle_ns.get() + slept);
        woke
    }

    fn stats(&self) -> ReactorStats {
        let pollers = self
            .pollers
            .borrow()
            .iter()
            .filter(|p| p.state != PollerState::Unregistered)
            .map(|p| PollerStats {
                name: p.name.clone(),
                id: p.id,
                state: if p.state == PollerState::Paused {
                    "paused"
                } else {
                    "running"
                },
                run_count: p.run_count,
                busy_count: p.busy_count,
                period_us: p.period.map_or(0, |d| d.as_micros() as u64),
            })
            .collect();
        ReactorStats {
            core: self.me().core,
            tid: sys::process::thread_id(),
            is_main: self.idx == 0,
            busy_ns: self.busy_ns.get(),
            idle_ns: self.idle_ns.get(),
            sleep_ns: self.sleep_ns.get(),
            sleeps: self.sleeps.get(),
            wakeups: self.sleeps.get(),
            messages: self.messages.get(),
            pollers,
        }
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<LocalReactor>>> = const { RefCell::new(None) };
    /// The time at the start of the current loop pass (`None` off a reactor).
    static LOOP_NOW: Cell<Option<Instant>> = const { Cell::new(None) };
}

fn run_reactor(local: Rc<LocalReactor>) {
    CURRENT.with(|c| *c.borrow_mut() = Some(local.clone()));
    let spin = match local.shared.idle {
        IdleStrategy::PollOnly => None,
        IdleStrategy::SpinThenSleep(d) => Some(d),
    };
    // One clock read per loop: the end of one pass is the start of the next.
    let mut now = Instant::now();
    let mut last_busy = now;
    while !local.shared.stopping.load(Ordering::Relaxed) {
        LOOP_NOW.set(Some(now));
        let work = local.run_messages() + local.retry_deferred();
        let (pollers_busy, deadline) = local.run_pollers(now);
        let end = Instant::now();
        let elapsed = end.saturating_duration_since(now).as_nanos() as u64;
        now = end;
        if work > 0 || pollers_busy {
            local.busy_ns.set(local.busy_ns.get() + elapsed);
            last_busy = now;
        } else {
            local.idle_ns.set(local.idle_ns.get() + elapsed);
            if let Some(spin) = spin {
                if now.saturating_duration_since(last_busy) >= spin
                    && local.deferred.borrow().is_empty()
                {
                    now = local.sleep(deadline, now);
                }
            }
        }
    }
    LOOP_NOW.set(None);
    // Drop pollers (and whatever their closures own) on this thread, newest first.
    let pollers: Vec<_> = std::mem::take(&mut *local.pollers.borrow_mut());
    for p in pollers.into_iter().rev() {
        drop(p);
    }
    while local.me().queue.pop().is_some() {}
    for fd in local.wake_fds.borrow_mut().drain(..) {
        let _ = local.epoll.remove(fd);
    }
    CURRENT.with(|c| *c.borrow_mut() = None);
}

fn with_local<R>(f: impl FnOnce(&Rc<LocalReactor>) -> R) -> R {
    CURRENT.with(|c| {
        let c = c.borrow();
        let local = c
            .as_ref()
            .expect("this function must be called on a reactor thread");
        f(local)
    })
}

/// `None` off a reactor, and also during thread-local teardown (so `Drop` impls of values
/// kept in other thread-locals may ask `current_core()` safely).
fn try_local<R>(f: impl FnOnce(&Rc<LocalReactor>) -> R) -> Option<R> {
    CURRENT
        .try_with(|c| c.borrow().as_ref().map(f))
        .ok()
        .flatten()
}

// ---------------------------------------------------------------------------------------------
// The API used on reactor threads

/// A registered poller. Dropping the handle does not unregister it; call `unregister`.
#[derive(Debug)]
pub struct PollerHandle {
    id: u64,
    core: u32,
}

impl PollerHandle {
    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn core(&self) -> u32 {
        self.core
    }

    fn set_state(&self, state: PollerState) {
        assert_eq!(
            current_core(),
            Some(self.core),
            "a poller is controlled from its own reactor"
        );
        with_local(|r| {
            if let Some(p) = r.pollers.borrow_mut().iter_mut().find(|p| p.id == self.id) {
                if p.state == PollerState::Unregistered {
                    return;
                }
                if state == PollerState::Unregistered {
                    r.pollers_dirty.set(true);
                    // Drop the closure now unless it is running (then the loop drops it).
                    drop(p.poll.take());
                }
                p.state = state;
            }
        })
    }

    /// Stops running the poller until `resume`.
    pub fn pause(&self) {
        self.set_state(PollerState::Paused);
    }

    pub fn resume(&self) {
        self.set_state(PollerState::Running);
    }

    /// Removes the poller; its closure is dropped. May be called from inside the poller.
    pub fn unregister(self) {
        self.set_state(PollerState::Unregistered);
    }
}

/// The time at the start of the current reactor loop pass: at most one pass old (a few
/// microseconds under load), without a clock read. Off a reactor, the current time. Use it for
/// timeouts and periodic work; read the clock yourself where a latency is being measured.
pub fn now() -> Instant {
    LOOP_NOW.get().unwrap_or_else(Instant::now)
}

/// Registers a poller on the current reactor. `period_us == 0` makes it an active poller
/// (run every loop); otherwise it runs at most once per period.
pub fn register_poller(
    name: impl Into<String>,
    period_us: u64,
    poll: impl FnMut() -> PollStatus + 'static,
) -> PollerHandle {
    add_poller(name.into(), period_us, false, Box::new(poll))
}

/// Registers a timed poller for work that always wakes this reactor when it arrives (a
/// listener whose fd, or ring eventfd, is in the wake set). While the reactor polls it runs
/// every `period_us` like any timed poller; but its period does not limit the idle sleep:
/// it runs on the first pass after each wake instead (and on the first pass after
/// registration, so it can arm what will wake the reactor). An idle reactor with only such
/// pollers sleeps until real work arrives, rather than waking at their period.
pub fn register_wake_driven_poller(
    name: impl Into<String>,
    period_us: u64,
    poll: impl FnMut() -> PollStatus + 'static,
) -> PollerHandle {
    add_poller(name.into(), period_us.max(1), true, Box::new(poll))
}

fn add_poller(name: String, period_us: u64, wake_driven: bool, poll: Poll) -> PollerHandle {
    with_local(|r| {
        let id = r.shared.next_poller_id.fetch_add(1, Ordering::Relaxed);
        let period = (period_us > 0).then(|| Duration::from_micros(period_us));
        let first_run = if wake_driven {
            Instant::now()
        } else {
            Instant::now() + period.unwrap_or_default()
        };
        r.pollers.borrow_mut().push(PollerEntry {
            id,
            name,
            period,
            wake_driven,
            next_run: first_run,
            state: PollerState::Running,
            poll: Some(poll),
            run_count: 0,
            busy_count: 0,
        });
        PollerHandle {
            id,
            core: r.me().core,
        }
    })
}

/// A file descriptor whose read-readiness wakes the current reactor from its idle sleep.
/// Removed from the wake set when dropped (on the same reactor).
#[derive(Debug)]
pub struct WakeSource {
    fd: RawFd,
}

/// Adds `fd` (level-triggered, readable) to the current reactor's wake set. The caller keeps
/// the fd open for as long as the returned guard lives.
pub fn add_wake_fd(fd: RawFd) -> std::io::Result<WakeSource> {
    with_local(|r| {
        r.epoll.add(fd, fd as u64, READABLE)?;
        r.wake_fds.borrow_mut().push(fd);
        Ok(WakeSource { fd })
    })
}

impl Drop for WakeSource {
    fn drop(&mut self) {
        let _ = try_local(|r| {
            let _ = r.epoll.remove(self.fd);
            r.wake_fds.borrow_mut().retain(|&f| f != self.fd);
        });
    }
}

/// The core of the reactor running this thread, if it is one.
pub fn current_core() -> Option<u32> {
    try_local(|r| r.me().core)
}

/// True on the main reactor (the first core of the mask).
pub fn is_main_reactor() -> bool {
    try_local(|r| r.idx == 0).unwrap_or(false)
}

/// The handle of the application this reactor belongs to.
pub fn app() -> AppHandle {
    with_local(|r| r.app.clone())
}

/// The cores of this application, main first.
pub fn cores() -> Vec<u32> {
    with_local(|r| r.app.cores())
}

pub fn main_core() -> u32 {
    with_local(|r| r.app.main_core())
}

/// Sends `f` to run on `core`'s reactor. From a reactor thread a full queue never fails:
/// the message waits in this reactor's ordered deferral list and is retried every loop.
/// Off a reactor thread use `AppHandle::send_to`, which reports back-pressure.
pub fn send_to(core: u32, f: impl FnOnce() + Send + 'static) {
    with_local(|r| {
        let msg: Message = Box::new(f);
        if !r.deferred.borrow().is_empty() {
            r.deferred.borrow_mut().push_back((core, msg));
            return;
        }
        match r.shared.send_to(core, msg) {
            Ok(()) => {}
            Err(SendError {
                reason: SendErrorKind::Full,
                msg,
            }) => r.deferred.borrow_mut().push_back((core, msg)),
            Err(e) => tracing::debug!(core, reason = ?e.reason, "message dropped"),
        }
    })
}

/// Runs `f` on the current reactor at its next loop (after the current poller returns).
pub fn defer(f: impl FnOnce() + Send + 'static) {
    let core = current_core().expect("defer must be called on a reactor thread");
    send_to(core, f);
}

/// Runs `each` on every reactor in turn (main first), then `done` back on the calling
/// reactor. This is the fan-out control operations use to push state to all reactors.
pub fn for_each_reactor(
    each: impl Fn() + Send + Sync + 'static,
    done: impl FnOnce() + Send + 'static,
) {
    let origin = current_core().expect("for_each_reactor must be called on a reactor thread");
    let cores = cores();
    let each: Arc<dyn Fn() + Send + Sync> = Arc::new(each);
    fan_out_step(cores, 0, each, origin, Box::new(done));
}

fn fan_out_step(
    cores: Vec<u32>,
    i: usize,
    each: Arc<dyn Fn() + Send + Sync>,
    origin: u32,
    done: Message,
) {
    if i == cores.len() {
        send_to(origin, done);
        return;
    }
    let core = cores[i];
    send_to(core, move || {
        each();
        fan_out_step(cores, i + 1, each, origin, done);
    });
}

/// Registers a shutdown hook on the main reactor. Hooks run in reverse order of
/// registration; each gets a `done` callback (callable from any reactor) that starts the next.
pub fn register_shutdown_hook(
    name: impl Into<String>,
    hook: impl FnOnce(Box<dyn FnOnce() + Send>) + 'static,
) {
    with_local(|r| {
        assert_eq!(r.idx, 0, "shutdown hooks live on the main reactor");
        r.shutdown_hooks
            .borrow_mut()
            .push((name.into(), Box::new(hook)));
    })
}

/// Starts an orderly shutdown of this reactor's application.
pub fn request_shutdown() {
    with_local(|r| request_shutdown_on(&r.shared));
}

/// True once shutdown has been requested (new work should be refused).
pub fn shutdown_requested() -> bool {
    with_local(|r| r.shared.shutdown_requested.load(Ordering::SeqCst))
}

/// Statistics of the current reactor.
pub fn stats() -> ReactorStats {
    with_local(|r| r.stats())
}

/// The idle strategy this application was started with.
pub fn idle_strategy() -> IdleStrategy {
    with_local(|r| r.shared.idle)
}

#[cfg(test)]
mod tests;
