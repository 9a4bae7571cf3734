//! Counts heap allocations on the target's reactor thread while a host runs 4 KiB reads
//! and writes (in-capsule and R2T) at queue depth 1: after a warm-up, the steady-state I/O
//! path must not allocate at all. A counting global allocator counts only on threads that
//! opted in (the reactor, by message), so the test host's own allocations do not count.

mod common;

use common::nvme::{add_uring_listener, export_malloc, rw, start_exporting_malloc, Host};
use pollux::nvmf::wire::io_opc;
use std::time::Duration;

#[global_allocator]
static GLOBAL: pollux::alloc_count::CountingAlloc = pollux::alloc_count::CountingAlloc;

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
    let before = pollux::alloc_count::tracked_allocs();
    run_ios(&mut io, 500);
    let n = pollux::alloc_count::tracked_allocs() - before;
    set_tracked(app, false);
    n
}

fn set_tracked(app: &pollux::app::RunningApp, on: bool) {
    let (tx, rx) = std::sync::mpsc::channel();
    app.handle()
        .send_to(0, move || {
            pollux::alloc_count::set_tracked(on);
            let _ = tx.send(());
        })
        .unwrap();
    rx.recv().unwrap();
}

#[test]
fn steady_state_io_allocates_nothing_on_the_reactor() {
    counting_allocator_counts();
    let (app, port) = start_exporting_malloc("nvmf-alloc", NQN);
    let n = measure(&app, port);
    eprintln!("posix: reactor allocations during 1500 I/Os: {n}");
    assert_eq!(n, 0, "allocations on the posix I/O path");
    if let Ok(port) = add_uring_listener(&app, NQN) {
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
    let port = export_malloc(&app, NQN);
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

/// The shared counting allocator counts, per thread and tracked (so the zero measured is
/// not vacuous). Called from the one test that reads the tracked total, so no other test
/// allocates on a tracked thread meanwhile.
fn counting_allocator_counts() {
    use pollux::alloc_count::{set_tracked, thread_allocs, tracked_allocs};
    let (thread0, tracked0) = (thread_allocs(), tracked_allocs());
    let untracked = std::hint::black_box(vec![1u8; 64]);
    assert_eq!(thread_allocs(), thread0 + 1);
    assert_eq!(tracked_allocs(), tracked0);
    set_tracked(true);
    let tracked = std::hint::black_box(vec![2u8; 64]);
    set_tracked(false);
    assert_eq!(tracked_allocs(), tracked0 + 1);
    assert_eq!(thread_allocs(), thread0 + 2);
    drop((untracked, tracked));
}
