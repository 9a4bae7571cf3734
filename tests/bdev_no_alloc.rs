//! Steady-state I/O allocates nothing: a counting global allocator (per thread) measures
//! the reactor thread while a closed loop of I/Os (the sink resubmits each completion) runs
//! against malloc, passthru and error over malloc, delay (zero latency), uring and aio on
//! temp files. After a warm-up (queues, caches, histograms sized), 2000 further completions
//! must cost zero allocations on the reactor.

mod common;

use pollux::alloc_count::{self, CountingAlloc};
use pollux::bdev::{self, BdevIo, IoSink, IoStatus, IoType};
use pollux::buf::IoBuf;
use pollux::reactor;
use serde_json::json;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

const WARMUP: u64 = 3000;
const MEASURED: u64 = 2000;
const QD: u64 = 8;

struct Loop {
    channel: RefCell<Option<bdev::IoChannel>>,
    done: Cell<u64>,
    mark: Cell<u64>,
    /// The LD_PRELOAD shim's process-wide count at the mark (0 without the shim).
    cmark: Cell<u64>,
    tmark: Cell<u64>,
    blocks: u64,
    tx: RefCell<Option<mpsc::Sender<Result<u64, String>>>>,
}

/// The process-wide allocation count of bench/malloc_count.c when it is preloaded (every
/// thread, C and C++ included: what librbd allocates shows up here).
fn process_mallocs() -> Option<u64> {
    shim_count(c"pollux_malloc_count")
}

/// The same count for the calling thread only (the reactor: submission-side allocations).
fn thread_mallocs() -> Option<u64> {
    shim_count(c"pollux_malloc_count_thread")
}

fn shim_count(name: &std::ffi::CStr) -> Option<u64> {
    // SAFETY: dlsym with a NUL-terminated name; the symbol, when present, is
    // `unsigned long f(void)` of the preloaded shim.
    unsafe {
        let f = libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr());
        if f.is_null() {
            return None;
        }
        let f: extern "C" fn() -> libc::c_ulong = std::mem::transmute(f);
        Some(f() as u64)
    }
}

struct LoopSink(RefCell<std::rc::Weak<Loop>>);

impl IoSink for LoopSink {
    fn io_done(&self, mut io: BdevIo) {
        let Some(l) = self.0.borrow().upgrade() else {
            return;
        };
        if io.status() != IoStatus::Success {
            if let Some(tx) = l.tx.borrow_mut().take() {
                let _ = tx.send(Err(format!("I/O failed: {:?}", io.status())));
            }
            return;
        }
        let n = l.done.get() + 1;
        l.done.set(n);
        if n == WARMUP {
            l.mark.set(alloc_count::thread_allocs());
            l.cmark.set(process_mallocs().unwrap_or(0));
            l.tmark.set(thread_mallocs().unwrap_or(0));
        }
        if n == WARMUP + MEASURED {
            let allocs = alloc_count::thread_allocs() - l.mark.get();
            if let (Some(c), Some(t)) = (process_mallocs(), thread_mallocs()) {
                eprintln!(
                    "C allocations (bench/malloc_count.c) per I/O: {:.2} process-wide, {:.2} on the reactor",
                    (c - l.cmark.get()) as f64 / MEASURED as f64,
                    (t - l.tmark.get()) as f64 / MEASURED as f64
                );
            }
            if let Some(tx) = l.tx.borrow_mut().take() {
                let _ = tx.send(Ok(allocs));
            }
        }
        if n >= WARMUP + MEASURED {
            return;
        }
        let t = if n % 2 == 0 {
            IoType::Read
        } else {
            IoType::Write
        };
        let off = (n * 7) % (l.blocks - 1);
        io.reset_to(t, off, 1);
        let channel = l.channel.borrow();
        if let Some(ch) = channel.as_ref() {
            ch.submit(io);
        }
    }
}

thread_local! {
    static KEEP: RefCell<Vec<Rc<dyn std::any::Any>>> = RefCell::new(Vec::new());
    static DESCS: RefCell<Vec<bdev::Desc>> = const { RefCell::new(Vec::new()) };
}

fn measure(configs: Vec<(&'static str, serde_json::Value)>, target: &'static str) -> u64 {
    let core = core_affinity::get_core_ids().unwrap()[0].id as u32;
    let r = common::run_on_one_reactor(core, Duration::from_secs(30), move |tx| {
        bdev::rpc::register();
        create_all(configs.into_iter(), target, tx);
    });
    r.unwrap_or_else(|e| panic!("{target}: {e}"))
}

fn create_all(
    mut configs: std::vec::IntoIter<(&'static str, serde_json::Value)>,
    target: &'static str,
    tx: mpsc::Sender<Result<u64, String>>,
) {
    let Some((method, params)) = configs.next() else {
        return start_loop(target, tx);
    };
    let core = reactor::current_core().unwrap();
    bdev::rpc::call(method, params, move |r| {
        if let Err(e) = r {
            let _ = tx.send(Err(format!("{method}: {}", e.message)));
            return;
        }
        reactor::send_to(core, move || create_all(configs, target, tx));
    });
}

fn start_loop(target: &str, tx: mpsc::Sender<Result<u64, String>>) {
    let desc = bdev::open(target, |_| {}).unwrap();
    let bs = desc.bdev().block_size() as usize;
    let blocks = desc.bdev().num_blocks();
    let sink = Rc::new(LoopSink(RefCell::new(std::rc::Weak::new())));
    let channel = desc.open_channel(sink.clone()).unwrap();
    let l = Rc::new(Loop {
        channel: RefCell::new(Some(channel)),
        done: Cell::new(0),
        mark: Cell::new(0),
        cmark: Cell::new(0),
        tmark: Cell::new(0),
        blocks,
        tx: RefCell::new(Some(tx)),
    });
    *sink.0.borrow_mut() = Rc::downgrade(&l);
    for i in 0..QD {
        let io = BdevIo::new(IoType::Write, i, 1).with_bufs(vec![IoBuf::zeroed(bs)]);
        l.channel.borrow().as_ref().unwrap().submit(io);
    }
    KEEP.with(|k| k.borrow_mut().push(l));
    DESCS.with(|d| d.borrow_mut().push(desc));
}

fn malloc() -> (&'static str, serde_json::Value) {
    (
        "bdev_malloc_create",
        json!({"name": "M0", "num_blocks": 2048, "block_size": 512}),
    )
}

fn temp_file(tag: &str) -> String {
    let p = std::env::temp_dir().join(format!("pollux-noalloc-{tag}-{}", std::process::id()));
    std::fs::File::create(&p).unwrap().set_len(4 << 20).unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn malloc_and_stacked_bdevs_do_not_allocate_per_io() {
    assert_eq!(measure(vec![malloc()], "M0"), 0, "malloc");
    let pt = (
        "bdev_passthru_create",
        json!({"name": "P0", "base_bdev_name": "M0"}),
    );
    assert_eq!(measure(vec![malloc(), pt], "P0"), 0, "passthru");
    let ee = ("bdev_error_create", json!({"base_name": "M0"}));
    assert_eq!(measure(vec![malloc(), ee], "EE_M0"), 0, "error");
    let d = (
        "bdev_delay_create",
        json!({"name": "D0", "base_bdev_name": "M0", "avg_read_latency": 0, "p99_read_latency": 0,
               "avg_write_latency": 0, "p99_write_latency": 0}),
    );
    assert_eq!(measure(vec![malloc(), d], "D0"), 0, "delay");
}

#[test]
fn file_bdevs_do_not_allocate_per_io() {
    let f = temp_file("aio");
    let aio = (
        "bdev_aio_create",
        json!({"name": "A0", "filename": f, "block_size": 4096}),
    );
    let allocs = measure(vec![aio], "A0");
    let _ = std::fs::remove_file(&f);
    assert_eq!(allocs, 0, "aio");
    let f = temp_file("uring");
    let ur = ("bdev_uring_create", json!({"name": "U0", "filename": f}));
    let allocs = measure(vec![ur], "U0");
    let _ = std::fs::remove_file(&f);
    assert_eq!(allocs, 0, "uring");
}

/// RBD: pollux's side of the I/O path (slots, iovecs, completion hand-back) allocates
/// nothing per I/O. librbd's own per-I/O allocations (its AioCompletion and request
/// objects, C++ `new`) do not go through Rust's allocator and are not counted by this
/// assertion; run the test binary with LD_PRELOAD of bench/malloc_count.c to see them
/// (measured 2026-12-04: ~78 per I/O process-wide, see bench/RESULTS.md).
#[test]
fn rbd_does_not_allocate_per_io() {
    use pollux::bdev::rbd::DevCluster;
    if let Some(why) = DevCluster::unavailable_or_panic() {
        return common::skip("rbd_does_not_allocate_per_io", &why);
    }
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/ceph-dev-cluster.sh");
    let c = DevCluster::start(&script, "noalloc").expect("start the dev Ceph cluster");
    c.create_image("img0", 4).unwrap();
    let reg = (
        "bdev_rbd_register_cluster",
        json!({"name": "c0", "config_file": c.conf}),
    );
    let create = (
        "bdev_rbd_create",
        json!({"name": "R0", "pool_name": "rbd", "rbd_name": "img0", "block_size": 4096,
               "cluster_name": "c0"}),
    );
    assert_eq!(measure(vec![reg, create], "R0"), 0, "rbd");
}
