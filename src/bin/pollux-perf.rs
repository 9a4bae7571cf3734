//! pollux-perf: NVMe/TCP load generator in the style of spdk_nvme_perf, built on the
//! `nvmf::host` library.
//!
//! The main reactor connects the admin queue (bring-up, Identify, Number of Queues for every
//! I/O queue wanted) and identifies the first active namespace; then every reactor of the
//! core mask (`-c`) connects its own `-P` I/O queues and keeps `-q` commands of `-o` bytes in
//! flight on each, with the `-w` pattern (`-M` read percentage for rw/randrw), for `-t`
//! seconds. The data path allocates nothing per I/O: buffers and slots are preallocated,
//! commands carry the slot index as their tag, and completions come back by polling the
//! queues from one poller per reactor. A progress line is printed each second; at the end the
//! IOPS, MiB/s, average/min/max latency per core and in total, and a percentile table from an
//! HDR histogram (or one JSON object with `--json`). Latency is stamped once per batch of
//! completions a queue poll returns (that instant ends the batch's latencies and starts those
//! of the I/O resubmitted from it), not twice per I/O: its resolution is the handling of one
//! batch, a few microseconds at most. Any error (connect refused, unknown NQN, failed I/O) is
//! one line on stderr and a non-zero exit. The binary's global allocator counts the heap
//! allocations made on worker threads once they reach steady state (after `WARMUP_IOS`
//! completions per worker, until the stop signal); the total is printed as allocations per
//! I/O (`allocs_per_io` with `--json`), so every run proves (or disproves) that the host's
//! I/O path allocates nothing.

#![forbid(unsafe_code)]

use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use pollux::alloc_count;
use pollux::bdev::util::FastRng;
use pollux::buf::IoBuf;
use pollux::nvmf::host::{
    dhgroup_by_name, hash_by_name, Completion, ConnectOpts, Controller, DataBuf, DhchapOpts,
    HostError, Qpair, QpairConfig, Request, TransportId,
};
use pollux::nvmf::secret::Hash;
use pollux::nvmf::wire::{io_opc, SglDescriptor, Sqe};
use pollux::reactor::{self, IdleStrategy, PollStatus, PollerHandle, ReactorConfig};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Completions a worker runs before it starts counting allocations (connect-time and
/// first-use growth of queues and caches is not steady state).
const WARMUP_IOS: u64 = 2000;

/// Allocations are counted on the worker threads once they reach steady state
/// (`POLLUX_PERF_TRACE_ALLOCS` prints a backtrace of each).
#[global_allocator]
static GLOBAL: alloc_count::CountingAlloc = alloc_count::CountingAlloc;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "pollux-perf",
    about = "NVMe/TCP load generator (like spdk_nvme_perf)"
)]
struct Args {
    /// Transport id: 'trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:4420 subnqn:NQN'.
    #[arg(short = 'r', long = "transport-id")]
    trid: String,
    /// Commands in flight per queue pair.
    #[arg(short = 'q', default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=4096))]
    queue_depth: u16,
    /// I/O size in bytes (a multiple of the namespace block size).
    #[arg(short = 'o', default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    io_size: u32,
    /// Workload.
    #[arg(short = 'w', value_enum, default_value_t = Pattern::RandRead)]
    workload: Pattern,
    /// Read percentage of rw/randrw.
    #[arg(short = 'M', default_value_t = 50, value_parser = clap::value_parser!(u32).range(0..=100))]
    read_pct: u32,
    /// Run time in seconds.
    #[arg(short = 't', default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    time: u64,
    /// Core mask (hex or list); one worker per core, the first core also runs the admin queue.
    #[arg(short = 'c', default_value = "0x1")]
    core_mask: String,
    /// I/O queue pairs per core.
    #[arg(short = 'P', default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    qpairs: u16,
    /// Enable the header digest.
    #[arg(short = 'H')]
    hdgst: bool,
    /// Enable the data digest.
    #[arg(short = 'I')]
    ddgst: bool,
    /// Sock impl.
    #[arg(short = 'S', value_enum, default_value_t = SockImpl::Posix)]
    sock_impl: SockImpl,
    /// Namespace id (default: the first active namespace).
    #[arg(short = 'n')]
    nsid: Option<u32>,
    /// Machine-readable output: one JSON object on stdout (progress goes to stderr).
    #[arg(long)]
    json: bool,
    /// Do not pin reactor threads to their cores.
    #[arg(long)]
    no_pin: bool,
    /// Never sleep when idle (like SPDK's reactors).
    #[arg(long)]
    poll_only: bool,
    /// DH-HMAC-CHAP host secret (`DHHC-1:XX:...:`, as nvme-cli's --dhchap-secret): used
    /// on every queue when the subsystem requires authentication (the host NQN is the
    /// transport id's `hostnqn`).
    #[arg(long, value_name = "DHHC-1")]
    dhchap_secret: Option<String>,
    /// DH-HMAC-CHAP controller secret (nvme-cli's --dhchap-ctrl-secret): the controller
    /// must prove it too (bidirectional authentication).
    #[arg(long, value_name = "DHHC-1", requires = "dhchap_secret")]
    dhchap_ctrl_secret: Option<String>,
    /// DH-HMAC-CHAP hashes offered, in order (sha256,sha384,sha512; default all).
    #[arg(long, value_delimiter = ',', value_parser = parse_digest, requires = "dhchap_secret")]
    dhchap_digests: Vec<Hash>,
    /// DH-HMAC-CHAP DH groups offered, in order (null,ffdhe2048,...,ffdhe8192; default all).
    #[arg(long, value_delimiter = ',', value_parser = parse_dhgroup, requires = "dhchap_secret")]
    dhchap_dhgroups: Vec<u8>,
    /// TLS 1.3 with this PSK (an NVMeTLSkey-1 interchange key, or a file holding one); the
    /// host NQN comes from the transport id's `hostnqn:`. Uses the ssl sock impl.
    #[arg(long)]
    psk: Option<String>,
    /// The PSK identity form offered: v0 `NVMe0R0<h> <hostnqn> <subnqn>` (SPDK's) or v1
    /// `NVMe1R0<h> <hostnqn> <subnqn> <digest>` (Linux's). The PSK's length picks the cipher.
    #[arg(long, value_enum, default_value_t = PskIdentity::V0, requires = "psk")]
    psk_identity: PskIdentity,
}

fn parse_digest(name: &str) -> Result<Hash, String> {
    hash_by_name(name).ok_or_else(|| format!("unknown digest {name:?} (sha256, sha384, sha512)"))
}

fn parse_dhgroup(name: &str) -> Result<u8, String> {
    dhgroup_by_name(name)
        .ok_or_else(|| format!("unknown DH group {name:?} (null, ffdhe2048 ... ffdhe8192)"))
}

/// The DH-HMAC-CHAP options of the command line (none without a secret).
fn dhchap_opts(args: &Args) -> Result<Option<DhchapOpts>, String> {
    let Some(secret) = &args.dhchap_secret else {
        return Ok(None);
    };
    let mut opts = DhchapOpts::parse(secret, args.dhchap_ctrl_secret.as_deref())?;
    if !args.dhchap_digests.is_empty() {
        opts.digests = args.dhchap_digests.clone();
    }
    if !args.dhchap_dhgroups.is_empty() {
        opts.dhgroups = args.dhchap_dhgroups.clone();
    }
    Ok(Some(opts))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "lower")]
enum PskIdentity {
    V0,
    V1,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "lower")]
enum Pattern {
    Read,
    Write,
    RandRead,
    RandWrite,
    Rw,
    RandRw,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SockImpl {
    Posix,
    Uring,
    Ssl,
}

/// Prints a flag's value as it is given on the command line.
macro_rules! display_as_value {
    ($($t:ty),*) => {$(
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match self.to_possible_value() {
                    Some(v) => f.write_str(v.get_name()),
                    None => write!(f, "{self:?}"),
                }
            }
        }
    )*};
}
display_as_value!(Pattern, SockImpl, PskIdentity);

impl Pattern {
    fn random(self) -> bool {
        matches!(self, Self::RandRead | Self::RandWrite | Self::RandRw)
    }
    fn read_pct(self, mix: u32) -> u32 {
        match self {
            Self::Read | Self::RandRead => 100,
            Self::Write | Self::RandWrite => 0,
            Self::Rw | Self::RandRw => mix,
        }
    }
}

/// What every worker needs to know (shared read-only).
#[derive(Debug)]
struct Workload {
    pattern: Pattern,
    read_pct: u32,
    io_size: u32,
    queue_depth: u16,
    nsid: u32,
    /// Blocks per I/O and the number of I/O-sized slots in the namespace.
    blocks: u32,
    slots: u64,
}

/// Shared counters for the progress line and the stop signal.
struct Progress {
    ios: AtomicU64,
    stop: AtomicBool,
}

/// One worker's result, sent to the main thread.
struct WorkerResult {
    core: u32,
    ios: u64,
    errors: u64,
    first_error: Option<String>,
    hist: Histogram<u64>,
    elapsed: Duration,
    /// Completions while allocations were being counted.
    steady_ios: u64,
}

enum Event {
    Connected(String),
    Worker(WorkerResult),
    Fatal(String),
    Disconnected,
}

/// An I/O slot: its buffer (while not in flight), the queue it runs on, when it started.
struct Slot {
    buf: Option<IoBuf>,
    qpair: usize,
    submitted: Instant,
}

struct Worker {
    wl: Arc<Workload>,
    qpairs: Vec<Qpair>,
    slots: Vec<Slot>,
    completions: Vec<Completion>,
    rng: FastRng,
    next_seq: u64,
    hist: Histogram<u64>,
    ios: u64,
    errors: u64,
    first_error: Option<String>,
    /// `ios` when allocation counting started (None: still warming up).
    counting_since: Option<u64>,
    in_flight: usize,
    started: Option<Instant>,
    /// The clock as read once per batch of completions (see `Worker::poll`).
    now: Instant,
    connect_deadline: Instant,
    progress: Arc<Progress>,
    core: u32,
    poller: Option<PollerHandle>,
    events: mpsc::Sender<Event>,
}

impl Worker {
    fn poll(&mut self) -> PollStatus {
        if self.started.is_none() {
            return self.poll_connecting();
        }
        let mut work = 0;
        for i in 0..self.qpairs.len() {
            work += self.qpairs[i].poll(&mut self.completions);
            if self.completions.is_empty() {
                continue;
            }
            // One clock read per batch instead of two per I/O: `now` is when this batch of
            // completions reached the application (its latencies end here) and when the
            // I/O resubmitted from them are issued (theirs start here); the PDUs leave at
            // the queue's next flush, as they would with a stamp per I/O.
            self.now = Instant::now();
            let ios_before = self.ios;
            let mut done = std::mem::take(&mut self.completions);
            for c in done.drain(..) {
                self.complete(c);
            }
            self.completions = done;
            self.progress
                .ios
                .fetch_add(self.ios - ios_before, Ordering::Relaxed);
        }
        let stopping = self.progress.stop.load(Ordering::Relaxed);
        if self.counting_since.is_none() && !stopping && self.ios >= WARMUP_IOS {
            self.counting_since = Some(self.ios);
            alloc_count::set_tracked(true);
        }
        if stopping {
            alloc_count::set_tracked(false);
            if self.in_flight == 0 {
                self.finish();
            }
        }
        PollStatus::from_work(work)
    }

    fn poll_connecting(&mut self) -> PollStatus {
        let mut sink = Vec::new();
        for q in self.qpairs.iter_mut() {
            q.poll(&mut sink);
            if let Some(e) = q.error() {
                let msg = format!("core {}: connecting I/O queue {}: {e}", self.core, q.qid());
                let _ = self.events.send(Event::Fatal(msg));
                return self.stop_poller();
            }
        }
        if self.qpairs.iter().all(|q| q.is_ready()) {
            self.started = Some(Instant::now());
            self.now = Instant::now();
            for slot in 0..self.slots.len() {
                self.submit(slot);
            }
        } else if Instant::now() > self.connect_deadline {
            let msg = format!("core {}: I/O queues did not connect within 10 s", self.core);
            let _ = self.events.send(Event::Fatal(msg));
            return self.stop_poller();
        }
        PollStatus::Busy
    }

    fn stop_poller(&mut self) -> PollStatus {
        if let Some(p) = self.poller.take() {
            p.unregister();
        }
        PollStatus::Busy
    }

    fn submit(&mut self, slot: usize) {
        let wl = &self.wl;
        let Some(buf) = self.slots[slot].buf.take() else {
            return;
        };
        let index = if wl.pattern.random() {
            self.rng.below(wl.slots)
        } else {
            let i = self.next_seq % wl.slots;
            self.next_seq += 1;
            i
        };
        let is_read = match wl.read_pct {
            100 => true,
            0 => false,
            p => self.rng.below(100) < p as u64,
        };
        let slba = index * wl.blocks as u64;
        let (opc, data) = if is_read {
            (io_opc::READ, DataBuf::Read(buf))
        } else {
            (io_opc::WRITE, DataBuf::Write(buf))
        };
        let sqe = Sqe::rw(opc, 0, wl.nsid, slba, wl.blocks, SglDescriptor::default());
        let q = self.slots[slot].qpair;
        self.slots[slot].submitted = self.now;
        match self.qpairs[q].submit(Request::new(sqe, data), slot as u64) {
            Ok(()) => self.in_flight += 1,
            Err((e, req)) => {
                self.slots[slot].buf = req.into_buf();
                self.record_error(&e);
                // The queue is dead or full: stop this worker's load.
                self.progress.stop.store(true, Ordering::Relaxed);
            }
        }
    }

    fn complete(&mut self, c: Completion) {
        let slot = c.tag as usize;
        if slot >= self.slots.len() {
            return;
        }
        self.in_flight -= 1;
        let lat = self
            .now
            .saturating_duration_since(self.slots[slot].submitted)
            .as_nanos() as u64;
        match c.status() {
            Ok(_) => {
                self.ios += 1;
                self.hist.saturating_record(lat.max(1));
            }
            Err(e) => {
                self.record_error(&e);
                self.progress.stop.store(true, Ordering::Relaxed);
            }
        }
        self.slots[slot].buf = c.buf;
        if self.slots[slot].buf.is_none() {
            // The buffer was lost with a failed queue; this slot stops.
            return;
        }
        if !self.progress.stop.load(Ordering::Relaxed) {
            self.submit(slot);
        }
    }

    fn record_error(&mut self, e: &HostError) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e.to_string());
        }
    }

    fn finish(&mut self) {
        self.stop_poller();
        let mut out = Vec::new();
        for q in self.qpairs.iter_mut() {
            q.close(&mut out);
        }
        let elapsed = self.started.map_or(Duration::ZERO, |s| s.elapsed());
        let hist = std::mem::replace(&mut self.hist, new_hist());
        let _ = self.events.send(Event::Worker(WorkerResult {
            core: self.core,
            ios: self.ios,
            errors: self.errors,
            first_error: self.first_error.take(),
            hist,
            elapsed,
            steady_ios: self.counting_since.map_or(0, |since| self.ios - since),
        }));
    }
}

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
}

thread_local! {
    static WORKERS: RefCell<Vec<Rc<RefCell<Worker>>>> = const { RefCell::new(Vec::new()) };
    static CONTROLLER: RefCell<Option<Rc<Controller>>> = const { RefCell::new(None) };
}

/// Runs on each worker core: connects its queues and registers the I/O poller.
fn start_worker(
    wl: Arc<Workload>,
    configs: Vec<QpairConfig>,
    progress: Arc<Progress>,
    events: mpsc::Sender<Event>,
) {
    let core = reactor::current_core().unwrap_or(0);
    let mut qpairs = Vec::new();
    for cfg in configs {
        match Qpair::connect(cfg) {
            Ok(q) => qpairs.push(q),
            Err(e) => {
                let _ = events.send(Event::Fatal(format!("core {core}: {e}")));
                return;
            }
        }
    }
    let per_qpair = wl.queue_depth as usize;
    let mut slots = Vec::with_capacity(per_qpair * qpairs.len());
    let mut rng = FastRng::new();
    for q in 0..qpairs.len() {
        for _ in 0..per_qpair {
            let mut buf = IoBuf::with_len(wl.io_size as usize);
            for chunk in buf.chunks_exact_mut(8) {
                chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
            }
            slots.push(Slot {
                buf: Some(buf),
                qpair: q,
                submitted: Instant::now(),
            });
        }
    }
    let worker = Rc::new(RefCell::new(Worker {
        wl,
        qpairs,
        completions: Vec::with_capacity(slots.len()),
        slots,
        rng,
        next_seq: core as u64 * 7919,
        hist: new_hist(),
        ios: 0,
        errors: 0,
        first_error: None,
        counting_since: None,
        in_flight: 0,
        started: None,
        now: Instant::now(),
        connect_deadline: Instant::now() + Duration::from_secs(10),
        progress,
        core,
        poller: None,
        events,
    }));
    let w = worker.clone();
    let poller = reactor::register_poller("perf_worker", 0, move || w.borrow_mut().poll());
    worker.borrow_mut().poller = Some(poller);
    WORKERS.with(|ws| ws.borrow_mut().push(worker));
}

/// The sock impl the run uses (`--psk` means ssl).
fn sock_impl_name(args: &Args) -> String {
    if args.psk.is_some() {
        "ssl".into()
    } else {
        args.sock_impl.to_string()
    }
}

/// The TLS side of `--psk` / `--psk-identity` (TLS runs over the ssl sock impl only).
fn psk_config(args: &Args) -> Result<Option<pollux::nvmf::host::HostTls>, String> {
    let Some(psk) = &args.psk else {
        return if args.sock_impl == SockImpl::Ssl {
            Err("-S ssl needs --psk".into())
        } else {
            Ok(None)
        };
    };
    if args.sock_impl == SockImpl::Uring {
        return Err("--psk needs the ssl sock impl (-S ssl or no -S), not uring".into());
    }
    let identity = match args.psk_identity {
        PskIdentity::V0 => pollux::nvmf::psk::IdentityVersion::V0,
        PskIdentity::V1 => pollux::nvmf::psk::IdentityVersion::V1,
    };
    pollux::nvmf::host::HostTls::from_arg(psk, identity).map(Some)
}

/// Main reactor: connect, identify, then fan out the workers.
fn start_main(args: Args, trid: TransportId, progress: Arc<Progress>, events: mpsc::Sender<Event>) {
    let cores = reactor::cores();
    let queues = cores.len() as u16 * args.qpairs;
    let dhchap = match dhchap_opts(&args) {
        Ok(d) => d,
        Err(e) => {
            let _ = events.send(Event::Fatal(e));
            return;
        }
    };
    let tls = match psk_config(&args) {
        Ok(t) => t,
        Err(e) => {
            let _ = events.send(Event::Fatal(e));
            return;
        }
    };
    let opts = ConnectOpts {
        dhchap,
        hdgst: args.hdgst,
        ddgst: args.ddgst,
        sock_impl: Some(sock_impl_name(&args).to_string()),
        tls,
        io_queues: 0,
        request_io_queues: queues,
        queue_depth: args.queue_depth.saturating_add(1),
        ..Default::default()
    };
    let ev = events.clone();
    let target = trid.clone();
    Controller::connect(&target, opts, move |r| {
        let ctrl = match r {
            Ok(c) => c,
            Err(e) => {
                let _ = ev.send(Event::Fatal(format!(
                    "connecting to {} at {}:{}: {e}",
                    trid.subnqn, trid.traddr, trid.trsvcid
                )));
                return;
            }
        };
        CONTROLLER.with(|c| *c.borrow_mut() = Some(ctrl.clone()));
        let info = ctrl.info().expect("connected controller has info");
        if info.io_queues_granted < queues {
            let _ = ev.send(Event::Fatal(format!(
                "the controller granted {} I/O queues, {queues} needed",
                info.io_queues_granted
            )));
            return;
        }
        let c2 = ctrl.clone();
        let pick = args.nsid;
        ctrl.active_namespaces(move |r| {
            let nsid = match (r, pick) {
                (_, Some(n)) => n,
                (Ok(list), None) if !list.is_empty() => list[0],
                (Ok(_), None) => {
                    let _ = ev.send(Event::Fatal("the subsystem has no active namespace".into()));
                    return;
                }
                (Err(e), None) => {
                    let _ = ev.send(Event::Fatal(format!("listing namespaces: {e}")));
                    return;
                }
            };
            let c3 = c2.clone();
            c2.identify_namespace(nsid, move |r| {
                let ns = match r {
                    Ok(ns) if ns.nsze > 0 => ns,
                    Ok(_) => {
                        let _ = ev.send(Event::Fatal(format!("namespace {nsid} is not active")));
                        return;
                    }
                    Err(e) => {
                        let _ = ev.send(Event::Fatal(format!("identify namespace {nsid}: {e}")));
                        return;
                    }
                };
                let Some(bs) = ns.block_size() else {
                    let _ = ev.send(Event::Fatal(format!("namespace {nsid}: bad LBA format")));
                    return;
                };
                if !args.io_size.is_multiple_of(bs) || args.io_size > info.max_transfer {
                    let _ = ev.send(Event::Fatal(format!(
                        "-o {} must be a multiple of the block size {bs} and at most {} bytes",
                        args.io_size, info.max_transfer
                    )));
                    return;
                }
                let blocks = args.io_size / bs;
                let slots = ns.nsze.get() / blocks as u64;
                if slots == 0 {
                    let _ = ev.send(Event::Fatal("namespace smaller than one I/O".into()));
                    return;
                }
                let pattern = args.workload;
                let wl = Arc::new(Workload {
                    pattern,
                    read_pct: pattern.read_pct(args.read_pct),
                    io_size: args.io_size,
                    queue_depth: args.queue_depth,
                    nsid,
                    blocks,
                    slots,
                });
                let _ = ev.send(Event::Connected(format!(
                    "Connected to {} at {}:{} (cntlid {}, model {:?}), namespace {nsid}: {} blocks of {bs} B; \
                     {} core(s) x {} queue(s), QD {}, {} B {}{}, digests {}/{}, sock {}",
                    trid.subnqn,
                    trid.traddr,
                    trid.trsvcid,
                    info.cntlid,
                    pollux::nvmf::field_str(&info.identify.mn).unwrap_or("?"),
                    ns.nsze,
                    cores.len(),
                    args.qpairs,
                    wl.queue_depth,
                    wl.io_size,
                    args.workload,
                    if matches!(pattern, Pattern::Rw | Pattern::RandRw) {
                        format!(" ({}% reads)", wl.read_pct)
                    } else {
                        String::new()
                    },
                    if info.hdgst { "on" } else { "off" },
                    if info.ddgst { "on" } else { "off" },
                    sock_impl_name(&args),
                )));
                for (i, &core) in cores.iter().enumerate() {
                    let configs: Vec<QpairConfig> = (0..args.qpairs)
                        .map(|p| {
                            let mut cfg = c3.io_qpair_config(1 + i as u16 * args.qpairs + p);
                            // One extra entry so the controller never sees a full queue.
                            cfg.depth = args.queue_depth.saturating_add(1).max(2);
                            cfg
                        })
                        .collect();
                    let (wl, progress, ev) = (wl.clone(), progress.clone(), ev.clone());
                    reactor::send_to(core, move || start_worker(wl, configs, progress, ev));
                }
            });
        });
    });
}

fn us(ns: f64) -> f64 {
    ns / 1000.0
}

fn main() {
    // Usage errors exit with status 1 like every other error (help and version with 0).
    let args = Args::try_parse().unwrap_or_else(|e| {
        if !e.use_stderr() {
            e.exit();
        }
        let _ = e.print();
        std::process::exit(1);
    });
    if std::env::var_os("POLLUX_PERF_TRACE_ALLOCS").is_some() {
        alloc_count::set_trace(alloc_count::Trace::Tracked);
    }
    match run(args) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("pollux-perf: error: {e}");
            std::process::exit(1);
        }
    }
}

/// Returns Ok(false) when the run completed with I/O errors.
fn run(args: Args) -> Result<bool, String> {
    let trid: TransportId = args.trid.parse()?;
    // A malformed secret is refused before any connection.
    dhchap_opts(&args)?;
    let cores = reactor::parse_core_mask(&args.core_mask)?;
    let progress = Arc::new(Progress {
        ios: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let (tx, rx) = mpsc::channel();
    let (a2, p2, tx2) = (args.clone(), progress.clone(), tx.clone());
    let app = reactor::start(
        ReactorConfig {
            cores: cores.clone(),
            idle: if args.poll_only {
                IdleStrategy::PollOnly
            } else {
                IdleStrategy::default()
            },
            pin: !args.no_pin,
        },
        move || start_main(a2, trid, p2, tx2),
    )
    .map_err(|e| e.to_string())?;
    let stop_app = |app: &reactor::AppHandle| {
        let main = app.main_core();
        let tx = tx.clone();
        let _ = app.send_to(main, move || {
            let ctrl = CONTROLLER.with(|c| c.borrow_mut().take());
            match ctrl {
                Some(c) => c.shutdown(move |_| {
                    let _ = tx.send(Event::Disconnected);
                    reactor::request_shutdown();
                }),
                None => {
                    let _ = tx.send(Event::Disconnected);
                    reactor::request_shutdown();
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(Event::Disconnected) => break,
                Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(_) => break,
            }
        }
        app.shutdown();
        app.wait();
    };
    let progress_line = |s: String| {
        if args.json {
            eprintln!("{s}");
        } else {
            println!("{s}");
        }
    };

    // Connect (bounded), then the run with a progress line per second.
    match rx.recv_timeout(Duration::from_secs(15)) {
        Ok(Event::Connected(msg)) => progress_line(msg),
        Ok(Event::Fatal(e)) => {
            stop_app(&app);
            return Err(e);
        }
        _ => {
            stop_app(&app);
            return Err("no answer from the controller within 15 s".into());
        }
    }
    let workers = cores.len();
    let mut results: Vec<WorkerResult> = Vec::new();
    let start = Instant::now();
    let mut last = (0u64, start);
    let mut tick = 0u64;
    let io_mib = args.io_size as f64 / (1024.0 * 1024.0);
    let hard_deadline = start + Duration::from_secs(args.time + 30);
    while results.len() < workers {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(Event::Worker(r)) => results.push(r),
            Ok(Event::Fatal(e)) => {
                progress.stop.store(true, Ordering::SeqCst);
                stop_app(&app);
                return Err(e);
            }
            Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        let now = Instant::now();
        if !progress.stop.load(Ordering::Relaxed)
            && now.duration_since(last.1) >= Duration::from_secs(1)
        {
            let ios = progress.ios.load(Ordering::Relaxed);
            let iops = (ios - last.0) as f64 / now.duration_since(last.1).as_secs_f64();
            tick += 1;
            progress_line(format!(
                "[{tick:>4} s] {iops:>12.0} IOPS {:>10.2} MiB/s",
                iops * io_mib
            ));
            last = (ios, now);
            if tick >= args.time {
                progress.stop.store(true, Ordering::SeqCst);
            }
        }
        if now > hard_deadline {
            progress.stop.store(true, Ordering::SeqCst);
            stop_app(&app);
            return Err("workers did not finish in time".into());
        }
    }
    stop_app(&app);
    results.sort_by_key(|r| r.core);
    report(&args, &results)
}

fn report(args: &Args, results: &[WorkerResult]) -> Result<bool, String> {
    let mut total = new_hist();
    let mut rows = Vec::new();
    let (mut ios, mut errors) = (0u64, 0u64);
    let mut first_error = None;
    let mut elapsed = Duration::ZERO;
    let steady_ios: u64 = results.iter().map(|r| r.steady_ios).sum();
    let steady_allocs = alloc_count::tracked_allocs();
    let allocs_per_io = if steady_ios > 0 {
        Some(steady_allocs as f64 / steady_ios as f64)
    } else {
        None
    };
    let io_mib = args.io_size as f64 / (1024.0 * 1024.0);
    for r in results {
        let _ = total.add(&r.hist);
        ios += r.ios;
        errors += r.errors;
        elapsed = elapsed.max(r.elapsed);
        if first_error.is_none() {
            first_error = r.first_error.clone();
        }
        let secs = r.elapsed.as_secs_f64().max(1e-9);
        rows.push(serde_json::json!({
            "core": r.core,
            "ios": r.ios,
            "errors": r.errors,
            "iops": r.ios as f64 / secs,
            "mib_s": r.ios as f64 / secs * io_mib,
            "avg_us": us(r.hist.mean()),
            "min_us": us(r.hist.min() as f64),
            "max_us": us(r.hist.max() as f64),
        }));
    }
    let secs = elapsed.as_secs_f64().max(1e-9);
    let iops = ios as f64 / secs;
    let quantiles = [
        ("p50", 0.5),
        ("p90", 0.9),
        ("p99", 0.99),
        ("p99.9", 0.999),
        ("p99.99", 0.9999),
    ];
    if args.json {
        let mut pct = serde_json::Map::new();
        for (name, q) in quantiles {
            pct.insert(
                format!("{name}_us"),
                us(total.value_at_quantile(q) as f64).into(),
            );
        }
        let v = serde_json::json!({
            "transport_id": args.trid,
            "workload": args.workload.to_string(),
            "read_pct": args.read_pct,
            "queue_depth": args.queue_depth,
            "io_size": args.io_size,
            "qpairs_per_core": args.qpairs,
            "sock_impl": sock_impl_name(args),
            "tls": args.psk.is_some(),
            "hdgst": args.hdgst,
            "ddgst": args.ddgst,
            "seconds": secs,
            "cores": rows,
            "total": {
                "ios": ios,
                "errors": errors,
                "iops": iops,
                "mib_s": iops * io_mib,
                "avg_us": us(total.mean()),
                "min_us": us(total.min() as f64),
                "max_us": us(total.max() as f64),
                "percentiles": pct,
            },
            "first_error": first_error,
            "steady_state": {
                "ios": steady_ios,
                "allocs": steady_allocs,
                "allocs_per_io": allocs_per_io,
            },
        });
        println!("{v}");
    } else {
        println!("{:=<86}", "");
        println!(
            "{:<12} {:>12} {:>10} {:>12} {:>12} {:>12} {:>8}",
            "", "IOPS", "MiB/s", "avg (us)", "min (us)", "max (us)", "errors"
        );
        for (r, row) in results.iter().zip(&rows) {
            println!(
                "{:<12} {:>12.0} {:>10.2} {:>12.2} {:>12.2} {:>12.2} {:>8}",
                format!("core {}", r.core),
                row["iops"].as_f64().unwrap_or(0.0),
                row["mib_s"].as_f64().unwrap_or(0.0),
                us(r.hist.mean()),
                us(r.hist.min() as f64),
                us(r.hist.max() as f64),
                r.errors
            );
        }
        println!(
            "{:<12} {:>12.0} {:>10.2} {:>12.2} {:>12.2} {:>12.2} {:>8}",
            "Total",
            iops,
            iops * io_mib,
            us(total.mean()),
            us(total.min() as f64),
            us(total.max() as f64),
            errors
        );
        println!();
        println!("Latency percentiles (us):");
        for (name, q) in quantiles {
            println!(
                "  {name:>7}: {:>12.2}",
                us(total.value_at_quantile(q) as f64)
            );
        }
        match allocs_per_io {
            Some(a) => println!(
                "Heap allocations on workers in steady state: {steady_allocs} in {steady_ios} I/Os ({a:.4} per I/O)"
            ),
            None => println!("Heap allocations: run too short to reach steady state"),
        }
    }
    if let Some(e) = first_error {
        eprintln!("pollux-perf: error: {errors} I/O(s) failed; first: {e}");
        return Ok(false);
    }
    Ok(true)
}
