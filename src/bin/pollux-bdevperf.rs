//! pollux-bdevperf: local I/O load against bdevs, without network, like SPDK's bdevperf.
//!
//! A JSON config (the `--json` format:
//! `{"subsystems":[{"subsystem":"bdev","config":[...]}]}`) creates the bdevs by calling the
//! RPC methods in-process on the main reactor; then every reactor of the core mask runs one
//! job per unclaimed bdev, each on its own slice of the bdev, keeping `-q` I/Os of `-o` bytes
//! in flight for `-t` seconds with the `-w` pattern (`-M` read percentage for rw/randrw). A
//! progress line is printed every second and a final table of IOPS, MiB/s and latency
//! percentiles (hdrhistogram) at the end. `verify` writes a pattern, reads it back and
//! compares; a mismatch is reported with its offset and makes the run fail (exit status 1),
//! as do failed I/Os under `verify`.

#![forbid(unsafe_code)]

use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use pollux::bdev::{self, util::FastRng, BdevIo, Desc, IoChannel, IoSink, IoStatus, IoType};
use pollux::buf::IoBuf;
use pollux::reactor::{self, IdleStrategy, PollStatus, ReactorConfig};
use serde_json::Value;
use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser, Debug, Clone)]
#[command(
    name = "pollux-bdevperf",
    about = "Local I/O load generator for pollux bdevs"
)]
struct Args {
    /// JSON config creating the bdevs (same format as pollux --json).
    #[arg(short = 'c', long = "json")]
    json: String,
    /// Queue depth per job.
    #[arg(short = 'q', default_value_t = 32)]
    queue_depth: usize,
    /// I/O size in bytes (a multiple of the block size).
    #[arg(short = 'o', default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=MAX_IO_SIZE))]
    io_size: u64,
    /// Workload.
    #[arg(short = 'w', value_enum, default_value_t = Pattern::RandRead)]
    workload: Pattern,
    /// Read percentage of rw/randrw.
    #[arg(short = 'M', default_value_t = 50, value_parser = clap::value_parser!(u64).range(0..=100))]
    rw_mix_read: u64,
    /// Run time in seconds.
    #[arg(short = 't', default_value_t = 5)]
    time: u64,
    /// Core mask (hex or list), first core is the main reactor.
    #[arg(short = 'm', default_value = "0x1")]
    core_mask: String,
    /// Do not pin reactor threads (shared machines).
    #[arg(long)]
    no_pin: bool,
}

/// The workload (`-w`), spelled as bdevperf spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "lower")]
enum Pattern {
    Read,
    Write,
    RandRead,
    RandWrite,
    Rw,
    RandRw,
    Verify,
    Unmap,
    Flush,
}

impl Pattern {
    fn random(self) -> bool {
        matches!(
            self,
            Pattern::RandRead | Pattern::RandWrite | Pattern::RandRw
        )
    }
}

#[derive(Debug)]
struct Workload {
    pattern: Pattern,
    queue_depth: usize,
    io_size: u64,
    read_pct: u64,
}

/// What a finished job reports to the main reactor.
struct JobResult {
    bdev: String,
    core: u32,
    ops: u64,
    bytes: u64,
    failed: u64,
    mismatches: u64,
    first_mismatch: Option<String>,
    hist: Histogram<u64>,
    elapsed: Duration,
}

struct Job {
    bdev: String,
    core: u32,
    wl: Arc<Workload>,
    block_size: u64,
    io_blocks: u64,
    slice_start: u64,
    slice_blocks: u64,
    /// Verify: each slot owns offsets slot, slot+qd, ... so no two I/Os overlap.
    slot_cursor: Vec<Cell<u64>>,
    cursor: Cell<u64>,
    rng: RefCell<FastRng>,
    seed: Cell<u64>,
    stopping: Cell<bool>,
    inflight: Cell<usize>,
    ops: Cell<u64>,
    bytes: Cell<u64>,
    failed: Cell<u64>,
    mismatches: Cell<u64>,
    first_mismatch: RefCell<Option<String>>,
    hist: RefCell<Histogram<u64>>,
    progress: Arc<AtomicU64>,
    started: Instant,
    channel: RefCell<Option<IoChannel>>,
    desc: RefCell<Option<Desc>>,
    main_core: u32,
}

thread_local! {
    static JOBS: RefCell<Vec<Rc<Job>>> = const { RefCell::new(Vec::new()) };
    static RESULTS: RefCell<Vec<JobResult>> = const { RefCell::new(Vec::new()) };
}

/// The verify pattern: 8-byte words derived from the I/O's LBA, word index and seed.
fn pattern_word(lba: u64, word: u64, seed: u64) -> u64 {
    (lba.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (word << 1) ^ seed.rotate_left(32)) | 1
}

fn fill_pattern(io: &mut BdevIo, seed: u64) {
    let lba = io.offset_blocks;
    let mut word = 0u64;
    for b in io.bufs.iter_mut() {
        for chunk in b.chunks_exact_mut(8) {
            chunk.copy_from_slice(&pattern_word(lba, word, seed).to_le_bytes());
            word += 1;
        }
    }
}

/// The byte offset (within the I/O) of the first mismatch, if any.
fn check_pattern(io: &BdevIo, seed: u64) -> Option<(u64, u64, u64)> {
    let lba = io.offset_blocks;
    let mut word = 0u64;
    for b in io.bufs.iter() {
        for chunk in b.chunks_exact(8) {
            let got = u64::from_le_bytes(chunk.try_into().expect("8-byte chunk"));
            let want = pattern_word(lba, word, seed);
            if got != want {
                return Some((word * 8, want, got));
            }
            word += 1;
        }
    }
    None
}

const SLOT_BITS: u32 = 16;
/// Largest I/O size accepted by -o.
const MAX_IO_SIZE: u64 = 128 << 20;

impl Job {
    fn slot_of(io: &BdevIo) -> usize {
        (io.token & ((1 << SLOT_BITS) - 1)) as usize
    }
    fn seed_of(io: &BdevIo) -> u64 {
        io.token >> SLOT_BITS
    }

    /// Prepares `io` (slot `slot`) for its next operation.
    fn next(&self, io: &mut BdevIo, slot: usize) {
        let wl = &self.wl;
        let step = self.io_blocks;
        let span = (self.slice_blocks / step).max(1);
        match wl.pattern {
            Pattern::Verify => {
                let done_write = io.io_type == IoType::Write && io.status() == IoStatus::Success;
                if done_write {
                    let off = io.offset_blocks;
                    io.reset_to(IoType::Read, off, step);
                    return;
                }
                let c = &self.slot_cursor[slot];
                let idx = c.get();
                let stride = self.slot_cursor.len() as u64;
                let next = if idx + stride >= span {
                    slot as u64
                } else {
                    idx + stride
                };
                c.set(next);
                let seed = self.seed.get() + 1;
                self.seed.set(seed);
                io.reset_to(IoType::Write, self.slice_start + idx * step, step);
                io.token = (seed << SLOT_BITS) | slot as u64;
                fill_pattern(io, seed);
            }
            p => {
                let idx = if p.random() {
                    self.rng.borrow_mut().below(span)
                } else {
                    let i = self.cursor.get();
                    self.cursor.set(if i + 1 >= span { 0 } else { i + 1 });
                    i
                };
                let t = match p {
                    Pattern::Read | Pattern::RandRead => IoType::Read,
                    Pattern::Write | Pattern::RandWrite => IoType::Write,
                    Pattern::Rw | Pattern::RandRw => {
                        if self.rng.borrow_mut().below(100) < wl.read_pct {
                            IoType::Read
                        } else {
                            IoType::Write
                        }
                    }
                    Pattern::Unmap => IoType::Unmap,
                    Pattern::Flush => IoType::Flush,
                    Pattern::Verify => unreachable!(),
                };
                let (off, n) = if t == IoType::Flush {
                    (0, 0)
                } else {
                    (self.slice_start + idx * step, step)
                };
                io.reset_to(t, off, n);
            }
        }
    }

    fn submit(&self, io: BdevIo) {
        if let Some(ch) = self.channel.borrow().as_ref() {
            self.inflight.set(self.inflight.get() + 1);
            ch.submit(io);
        }
    }

    fn completed(self: &Rc<Self>, mut io: BdevIo) {
        self.inflight.set(self.inflight.get() - 1);
        let slot = Self::slot_of(&io);
        if io.status() == IoStatus::Success {
            self.ops.set(self.ops.get() + 1);
            if io.io_type.carries_data() || io.io_type == IoType::Unmap {
                self.bytes
                    .set(self.bytes.get() + io.num_blocks * self.block_size);
            }
            if let Some(t) = io.submitted_at() {
                let ns = t.elapsed().as_nanos() as u64;
                self.hist.borrow_mut().saturating_record(ns.max(1));
            }
            self.progress.fetch_add(1, Ordering::Relaxed);
            if self.wl.pattern == Pattern::Verify && io.io_type == IoType::Read {
                if let Some((at, want, got)) = check_pattern(&io, Self::seed_of(&io)) {
                    self.mismatches.set(self.mismatches.get() + 1);
                    let byte = io.offset_blocks * self.block_size + at;
                    self.first_mismatch.borrow_mut().get_or_insert_with(|| {
                        format!(
                            "verify mismatch on {} at offset_blocks {} (byte offset {byte}): expected {want:#018x}, read {got:#018x}",
                            self.bdev, io.offset_blocks
                        )
                    });
                }
            }
        } else {
            self.failed.set(self.failed.get() + 1);
            // A failed verify write is not read back: move on to a fresh write.
            io.reset_to(IoType::Read, io.offset_blocks, io.num_blocks);
        }
        if self.stopping.get() {
            if self.inflight.get() == 0 {
                self.finish();
            }
            return;
        }
        self.next(&mut io, slot);
        self.submit(io);
    }

    fn stop(self: &Rc<Self>) {
        self.stopping.set(true);
        if self.inflight.get() == 0 {
            self.finish();
        }
    }

    fn finish(self: &Rc<Self>) {
        let Some(ch) = self.channel.borrow_mut().take() else {
            return;
        };
        drop(ch);
        drop(self.desc.borrow_mut().take());
        let result = JobResult {
            bdev: self.bdev.clone(),
            core: self.core,
            ops: self.ops.get(),
            bytes: self.bytes.get(),
            failed: self.failed.get(),
            mismatches: self.mismatches.get(),
            first_mismatch: self.first_mismatch.borrow().clone(),
            hist: self.hist.borrow().clone(),
            elapsed: self.started.elapsed(),
        };
        reactor::send_to(self.main_core, move || {
            RESULTS.with(|r| r.borrow_mut().push(result));
        });
    }
}

struct JobSink(RefCell<Weak<Job>>);

impl IoSink for JobSink {
    fn io_done(&self, io: BdevIo) {
        if let Some(job) = self.0.borrow().upgrade() {
            job.completed(io);
        }
    }
}

/// Starts this reactor's job on `bdev` (slice `slice` of `slices`).
fn start_job(
    bdev_name: &str,
    wl: Arc<Workload>,
    slice: u64,
    slices: u64,
    progress: Arc<AtomicU64>,
    main_core: u32,
) -> Result<(), String> {
    let core = reactor::current_core().unwrap_or(0);
    let desc = bdev::open(bdev_name, |_| {}).map_err(|e| e.to_string())?;
    let h = desc.bdev().clone();
    let bs = h.block_size() as u64;
    if wl.io_size == 0 || !wl.io_size.is_multiple_of(bs) {
        return Err(format!(
            "I/O size {} is not a multiple of {}'s block size {bs}",
            wl.io_size, bdev_name
        ));
    }
    let io_blocks = wl.io_size / bs;
    let per = h.num_blocks() / slices;
    if per < io_blocks {
        return Err(format!(
            "{bdev_name} is too small for {slices} jobs of {} bytes",
            wl.io_size
        ));
    }
    let needed_type = match wl.pattern {
        Pattern::Unmap => Some(IoType::Unmap),
        Pattern::Flush => Some(IoType::Flush),
        _ => None,
    };
    if let Some(t) = needed_type {
        if !h.supports(t) {
            return Err(format!("{bdev_name} does not support {}", t.name()));
        }
    }
    let span = per / io_blocks;
    let qd = if wl.pattern == Pattern::Verify {
        (wl.queue_depth as u64).min(span) as usize
    } else {
        wl.queue_depth
    };
    let sink = Rc::new(JobSink(RefCell::new(Weak::new())));
    let channel = desc.open_channel(sink.clone()).map_err(|e| e.to_string())?;
    let job = Rc::new(Job {
        bdev: bdev_name.to_string(),
        core,
        wl: wl.clone(),
        block_size: bs,
        io_blocks,
        slice_start: slice * per,
        slice_blocks: per,
        slot_cursor: (0..qd as u64).map(Cell::new).collect(),
        cursor: Cell::new(0),
        rng: RefCell::new(FastRng::new()),
        seed: Cell::new((core as u64) << 40),
        stopping: Cell::new(false),
        inflight: Cell::new(0),
        ops: Cell::new(0),
        bytes: Cell::new(0),
        failed: Cell::new(0),
        mismatches: Cell::new(0),
        first_mismatch: RefCell::new(None),
        hist: RefCell::new(Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("bounds")),
        progress,
        started: Instant::now(),
        channel: RefCell::new(Some(channel)),
        desc: RefCell::new(Some(desc)),
        main_core,
    });
    *sink.0.borrow_mut() = Rc::downgrade(&job);
    JOBS.with(|j| j.borrow_mut().push(job.clone()));
    for slot in 0..qd {
        let mut io =
            BdevIo::new(IoType::Read, 0, 0).with_bufs(vec![IoBuf::zeroed(wl.io_size as usize)]);
        io.token = slot as u64;
        job.next(&mut io, slot);
        job.submit(io);
    }
    Ok(())
}

fn load_config(path: &str) -> Result<Vec<(String, Value)>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("reading {path}: {e}"))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("parsing {path}: {e}"))?;
    let subsystems = v
        .get("subsystems")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("{path}: no \"subsystems\" array"))?;
    let mut calls = Vec::new();
    for s in subsystems {
        if s.get("subsystem").and_then(Value::as_str) != Some("bdev") {
            continue;
        }
        for c in s
            .get("config")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let method = c
                .get("method")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("{path}: config entry without \"method\""))?;
            let params = c.get("params").cloned().unwrap_or(Value::Null);
            calls.push((method.to_string(), params));
        }
    }
    Ok(calls)
}

fn run_calls(
    mut calls: std::vec::IntoIter<(String, Value)>,
    done: Box<dyn FnOnce(Result<(), String>) + Send>,
) {
    let Some((method, params)) = calls.next() else {
        return done(Ok(()));
    };
    let main = reactor::current_core().unwrap_or(0);
    let m2 = method.clone();
    bdev::rpc::call(&method, params, move |r| {
        // Continue on the main reactor whatever thread answered.
        reactor::send_to(main, move || match r {
            Ok(_) => run_calls(calls, done),
            Err(e) => done(Err(format!("{m2}: {}", e.message))),
        });
    });
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

fn print_results(results: &[JobResult], wl: &Workload) -> bool {
    let mut ok = true;
    println!();
    println!(
        "{:<16} {:>4} {:>12} {:>10} {:>8} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "Device",
        "Core",
        "IOPS",
        "MiB/s",
        "Fail/s",
        "Avg(us)",
        "p50(us)",
        "p99(us)",
        "p99.9(us)",
        "Max(us)"
    );
    let mut total_hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("bounds");
    let (mut tiops, mut tmib, mut tfail) = (0.0, 0.0, 0.0);
    for r in results {
        let secs = r.elapsed.as_secs_f64().max(1e-9);
        let iops = r.ops as f64 / secs;
        let mib = r.bytes as f64 / secs / (1024.0 * 1024.0);
        let fails = r.failed as f64 / secs;
        tiops += iops;
        tmib += mib;
        tfail += fails;
        let _ = total_hist.add(&r.hist);
        println!(
            "{:<16} {:>4} {:>12.2} {:>10.2} {:>8.2} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>10.2}",
            r.bdev,
            r.core,
            iops,
            mib,
            fails,
            r.hist.mean() / 1000.0,
            us(r.hist.value_at_quantile(0.5)),
            us(r.hist.value_at_quantile(0.99)),
            us(r.hist.value_at_quantile(0.999)),
            us(r.hist.max())
        );
        if let Some(m) = &r.first_mismatch {
            println!("  FAILED: {m} ({} mismatches)", r.mismatches);
            ok = false;
        }
        if wl.pattern == Pattern::Verify && r.failed > 0 {
            println!("  FAILED: {} I/Os failed on {}", r.failed, r.bdev);
            ok = false;
        }
        if r.ops == 0 {
            ok = false;
        }
    }
    println!(
        "{:<16} {:>4} {:>12.2} {:>10.2} {:>8.2} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>10.2}",
        "Total",
        "",
        tiops,
        tmib,
        tfail,
        total_hist.mean() / 1000.0,
        us(total_hist.value_at_quantile(0.5)),
        us(total_hist.value_at_quantile(0.99)),
        us(total_hist.value_at_quantile(0.999)),
        us(total_hist.max())
    );
    ok
}

fn main() {
    let args = Args::parse();
    let exit = Arc::new(AtomicI32::new(0));
    let code = match run(args, exit.clone()) {
        Ok(()) => exit.load(Ordering::SeqCst),
        Err(e) => {
            eprintln!("pollux-bdevperf: {e}");
            1
        }
    };
    std::process::exit(code);
}

fn run(args: Args, exit: Arc<AtomicI32>) -> Result<(), String> {
    let pattern = args.workload;
    if args.queue_depth == 0 || args.queue_depth >= 1 << SLOT_BITS {
        return Err(format!("queue depth {} out of range", args.queue_depth));
    }
    let cores = reactor::parse_core_mask(&args.core_mask)?;
    let calls = load_config(&args.json)?;
    let wl = Arc::new(Workload {
        pattern,
        queue_depth: args.queue_depth,
        io_size: args.io_size,
        read_pct: args.rw_mix_read,
    });
    let seconds = args.time.max(1);
    let exit2 = exit.clone();
    let app = reactor::start(
        ReactorConfig {
            cores: cores.clone(),
            idle: IdleStrategy::default(),
            pin: !args.no_pin,
        },
        move || {
            bdev::rpc::register();
            run_calls(
                calls.into_iter(),
                Box::new(move |r| match r {
                    Ok(()) => start_all(wl, seconds, exit2),
                    Err(e) => {
                        eprintln!("pollux-bdevperf: config failed: {e}");
                        exit2.store(1, Ordering::SeqCst);
                        reactor::request_shutdown();
                    }
                }),
            );
        },
    )
    .map_err(|e| e.to_string())?;
    app.wait();
    Ok(())
}

/// Main reactor: starts the jobs on every reactor, then the progress/stop timer.
fn start_all(wl: Arc<Workload>, seconds: u64, exit: Arc<AtomicI32>) {
    let targets: Vec<String> = bdev::list()
        .iter()
        .filter(|b| b.claimed_by().is_none())
        .map(|b| b.name().to_string())
        .collect();
    if targets.is_empty() {
        eprintln!("pollux-bdevperf: the config created no (unclaimed) bdev to run on");
        exit.store(1, Ordering::SeqCst);
        return reactor::request_shutdown();
    }
    let cores = reactor::cores();
    let main = reactor::main_core();
    let progress = Arc::new(AtomicU64::new(0));
    let jobs = targets.len() * cores.len();
    println!(
        "Running {:?} for {seconds} s: queue depth {}, I/O size {} on {} job(s) ({} bdev(s) x {} core(s))",
        wl.pattern, wl.queue_depth, wl.io_size, jobs, targets.len(), cores.len()
    );
    for (ci, &core) in cores.iter().enumerate() {
        for t in &targets {
            let (t, wl, progress, exit) = (t.clone(), wl.clone(), progress.clone(), exit.clone());
            let slices = cores.len() as u64;
            reactor::send_to(core, move || {
                if let Err(e) = start_job(&t, wl, ci as u64, slices, progress, main) {
                    eprintln!("pollux-bdevperf: job on {t} (core {core}): {e}");
                    exit.store(1, Ordering::SeqCst);
                    reactor::send_to(main, move || {
                        RESULTS.with(|r| {
                            r.borrow_mut().push(JobResult {
                                bdev: t,
                                core,
                                ops: 0,
                                bytes: 0,
                                failed: 0,
                                mismatches: 0,
                                first_mismatch: None,
                                hist: Histogram::new_with_bounds(1, 60_000_000_000, 3)
                                    .expect("bounds"),
                                elapsed: Duration::from_secs(1),
                            })
                        })
                    });
                }
            });
        }
    }
    let started = Instant::now();
    let last = Cell::new((0u64, started));
    let ticks = Cell::new(0u64);
    let stopped = Cell::new(false);
    let handle: Rc<RefCell<Option<reactor::PollerHandle>>> = Rc::new(RefCell::new(None));
    let h2 = handle.clone();
    let poller = reactor::register_poller("bdevperf_progress", 100_000, move || {
        let now = Instant::now();
        let (prev_ops, prev_t) = last.get();
        if !stopped.get() && now.duration_since(prev_t) >= Duration::from_secs(1) {
            let ops = progress.load(Ordering::Relaxed);
            let dt = now.duration_since(prev_t).as_secs_f64();
            let iops = (ops - prev_ops) as f64 / dt;
            ticks.set(ticks.get() + 1);
            println!(
                "[{:>3}s] {:>12.2} IOPS, {:>10.2} MiB/s",
                ticks.get(),
                iops,
                iops * wl.io_size as f64 / (1024.0 * 1024.0)
            );
            last.set((ops, now));
            if ticks.get() >= seconds {
                stopped.set(true);
                for &core in &cores {
                    reactor::send_to(core, || {
                        let jobs: Vec<Rc<Job>> = JOBS.with(|j| j.borrow().clone());
                        for j in jobs {
                            j.stop();
                        }
                    });
                }
            }
        }
        if stopped.get() {
            let n = RESULTS.with(|r| r.borrow().len());
            if n >= jobs {
                let mut results = RESULTS.with(|r| std::mem::take(&mut *r.borrow_mut()));
                results.sort_by(|a, b| (&a.bdev, a.core).cmp(&(&b.bdev, b.core)));
                if !print_results(&results, &wl) {
                    exit.store(1, Ordering::SeqCst);
                }
                if let Some(h) = h2.borrow_mut().take() {
                    h.unregister();
                }
                reactor::request_shutdown();
                return PollStatus::Busy;
            }
            if now.duration_since(started) > Duration::from_secs(seconds + 30) {
                eprintln!("pollux-bdevperf: jobs did not finish in time");
                exit.store(1, Ordering::SeqCst);
                reactor::request_shutdown();
            }
        }
        PollStatus::Idle
    });
    *handle.borrow_mut() = Some(poller);
}
