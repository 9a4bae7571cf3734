//! Counts heap allocations on the target's reactor thread while a host runs 4 KiB reads
//! and writes (in-capsule and R2T) at queue depth 1: after a warm-up, the steady-state I/O
//! path must not allocate at all. A counting global allocator counts only on threads that
//! opted in (the reactor, by message), so the test host's own allocations do not count.

mod common;

use common::nvme::{call, export, rw, Host};
use pollux::nvmf::wire::io_opc;
use serde_json::json;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static TRACKED: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: forwards every call to the system allocator unchanged; it only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if TRACKED.try_with(|t| t.get()).unwrap_or(false) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if TRACKED.try_with(|t| t.get()).unwrap_or(false) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const NQN: &str = "nqn.2016-06.io.pollux:alloc";

fn run_ios(io: &mut Host, n: u64) {
    let a = vec![0x5au8; 4096];
    let b = vec![0xa5u8; 16384];
    for i in 0..n {
        let lba = i % 64;
        assert!(io.run(rw(io_opc::WRITE, lba, 1), Some(&a), 0).ok());
        assert!(io.run(rw(io_opc::READ, lba, 1), None, 4096).ok());
        // 16 KiB goes through R2T / H2CData (in-capsule limit 4 KiB).
        assert!(io.run(rw(io_opc::WRITE, 100 + lba, 4), Some(&b), 0).ok());
    }
}

/// Runs warm-up I/O, then counts the reactor's allocations during more I/O.
fn measure(app: &pollux::app::RunningApp, port: u16) -> u64 {
    let admin = Host::admin_connect(port, NQN, false, 0);
    let mut io = Host::io_connect(port, NQN, admin.cntlid, 1, false);
    run_ios(&mut io, 200);
    set_tracked(app, true);
    let before = ALLOCS.load(Ordering::Relaxed);
    run_ios(&mut io, 500);
    let n = ALLOCS.load(Ordering::Relaxed) - before;
    set_tracked(app, false);
    n
}

fn set_tracked(app: &pollux::app::RunningApp, on: bool) {
    let (tx, rx) = std::sync::mpsc::channel();
    app.handle()
        .send_to(0, move || {
            TRACKED.with(|t| t.set(on));
            let _ = tx.send(());
        })
        .unwrap();
    rx.recv().unwrap();
}

#[test]
fn steady_state_io_allocates_nothing_on_the_reactor() {
    let app = common::start(common::test_options("nvmf-alloc"));
    let port = export(
        &mut |m, p| call(&app, m, p),
        NQN,
        "Malloc0",
        16,
        json!({}),
        true,
    );
    let n = measure(&app, port);
    eprintln!("posix: reactor allocations during 1500 I/Os: {n}");
    assert_eq!(n, 0, "allocations on the posix I/O path");
    let uring = call(
        &app,
        "nvmf_subsystem_add_listener",
        json!({"nqn": NQN, "sock_impl": "uring", "listen_address": {"trtype": "TCP", "traddr": "127.0.0.1", "trsvcid": "0"}}),
    );
    if uring.is_ok() {
        let l = call(&app, "nvmf_subsystem_get_listeners", json!({"nqn": NQN})).unwrap();
        let port: u16 = l[1]["address"]["trsvcid"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let n = measure(&app, port);
        eprintln!("uring: reactor allocations during 1500 I/Os: {n}");
        assert_eq!(n, 0, "allocations on the uring I/O path");
    }
    app.shutdown_and_wait();
}

/// A rough QD1 figure with the blocking test host (not a benchmark of record: the host is
/// a simple blocking client). Run with `cargo test --release --test nvmf_alloc -- --ignored
/// --nocapture`.
#[test]
#[ignore]
fn qd1_4k_read_rough_rate() {
    let mut o = common::test_options("nvmf-qd1");
    o.idle = pollux::reactor::IdleStrategy::PollOnly;
    let app = common::start(o);
    let port = export(
        &mut |m, p| call(&app, m, p),
        NQN,
        "Malloc0",
        16,
        json!({}),
        true,
    );
    for digests in [false, true] {
        let admin = Host::admin_connect(port, NQN, digests, 0);
        let mut io = Host::io_connect(port, NQN, admin.cntlid, 1, digests);
        let t0 = std::time::Instant::now();
        let mut n = 0u64;
        while t0.elapsed() < Duration::from_secs(2) {
            assert!(io.run(rw(io_opc::READ, n % 4096, 1), None, 4096).ok());
            n += 1;
        }
        let secs = t0.elapsed().as_secs_f64();
        eprintln!(
            "QD1 4 KiB reads, digests {digests}: {:.0} IOPS, {:.1} us average",
            n as f64 / secs,
            secs * 1e6 / n as f64
        );
    }
    app.shutdown_and_wait();
}
