//! Steady-state allocation check of the host's data path: a reactor drives one `Qpair`
//! against the in-process fake controller with 16 commands in flight (4 KiB reads, 4 KiB
//! in-capsule writes, 16 KiB R2T writes answered by four H2CData PDUs), resubmitting from
//! the completion loop the way pollux-perf does. A counting global allocator counts the
//! allocations made on the reactor thread; after a warm-up, thousands of further I/Os must
//! not allocate at all with the posix sock impl (and not per I/O with uring).
//! `TRACE_ALLOC=1` prints a backtrace of every allocation after the warm-up (any thread);
//! `ALLOC_IMPL=posix|uring` measures one impl without asserting.

mod common;

use pollux::alloc_count::{self, CountingAlloc};
use pollux::buf::IoBuf;
use pollux::nvmf::host::fake::FakeTarget;
use pollux::nvmf::host::{Completion, ConnectOpts, Controller, DataBuf, Qpair, Request};
use pollux::nvmf::wire::{io_opc, SglDescriptor, Sqe};
use pollux::reactor::{self, PollStatus};
use std::time::Duration;

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

const WARMUP: u64 = 2_000;
const MEASURED: u64 = 6_000;

/// Runs the loop on a fresh one-reactor app; returns (I/Os measured, allocations).
fn measure(sock_impl: &str) -> (u64, u64) {
    let fake = FakeTarget::start();
    let trid = fake.trid();
    let sock_impl = sock_impl.to_string();
    let r = common::run_on_one_reactor(0, Duration::from_secs(60), move |tx| {
        let opts = ConnectOpts {
            sock_impl: Some(sock_impl),
            io_queues: 0,
            request_io_queues: 1,
            kato_ms: 0,
            ..Default::default()
        };
        Controller::connect(&trid, opts, move |r| {
            let ctrl = r.expect("connect to the fake controller");
            let mut cfg = ctrl.io_qpair_config(1);
            cfg.depth = 17;
            let mut qp = Qpair::connect(cfg).expect("I/O queue");
            let mut bufs: Vec<Option<IoBuf>> = (0..16)
                .map(|i| Some(IoBuf::zeroed(if i % 4 == 3 { 16384 } else { 4096 })))
                .collect();
            let mut out: Vec<Completion> = Vec::with_capacity(32);
            let (mut done, mut started, mut mark) = (0u64, false, None::<u64>);
            let mut sent = 0u64;
            let submit = |qp: &mut Qpair, slot: usize, buf: IoBuf, n: u64| {
                let blocks = (buf.len() / 512) as u32;
                let slba = (slot as u64) * 32;
                let (opc, data) = if n.is_multiple_of(2) {
                    (io_opc::READ, DataBuf::Read(buf))
                } else {
                    (io_opc::WRITE, DataBuf::Write(buf))
                };
                let sqe = Sqe::rw(opc, 0, 1, slba, blocks, SglDescriptor::default());
                if qp.submit(Request::new(sqe, data), slot as u64).is_err() {
                    panic!("submit failed");
                }
            };
            let keep = ctrl.clone();
            // The poller lives until the app stops (its handle is not needed).
            reactor::register_poller("alloc_loop", 0, move || {
                let _ = &keep;
                if !started {
                    qp.poll(&mut out);
                    if !qp.is_ready() {
                        assert!(qp.error().is_none(), "{:?}", qp.error());
                        return PollStatus::Busy;
                    }
                    started = true;
                    for (slot, b) in bufs.iter_mut().enumerate() {
                        submit(&mut qp, slot, b.take().unwrap(), sent);
                        sent += 1;
                    }
                }
                qp.poll(&mut out);
                for c in out.drain(..) {
                    c.status().expect("I/O succeeds");
                    done += 1;
                    if done == WARMUP {
                        mark = Some(alloc_count::thread_allocs());
                        if std::env::var("TRACE_ALLOC").is_ok() {
                            alloc_count::set_trace(alloc_count::Trace::All);
                        }
                    }
                    if done == WARMUP + MEASURED {
                        let allocs = alloc_count::thread_allocs() - mark.unwrap();
                        let _ = tx.send((MEASURED, allocs));
                    }
                    if done < WARMUP + MEASURED {
                        submit(&mut qp, c.tag as usize, c.buf.unwrap(), sent);
                        sent += 1;
                    }
                }
                PollStatus::Busy
            });
        });
    });
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
    r
}

#[test]
fn steady_state_io_does_not_allocate() {
    if let Ok(only) = std::env::var("ALLOC_IMPL") {
        let (ios, allocs) = measure(&only);
        println!("{only}: {allocs} allocations over {ios} I/Os");
        return;
    }
    let (ios, allocs) = measure("posix");
    println!("posix: {allocs} allocations on the reactor thread over {ios} I/Os");
    assert_eq!(allocs, 0, "posix data path allocates");
    // io_uring: the completion stash of the thread's ring may still grow now and then.
    let (ios, allocs) = measure("uring");
    println!("uring: {allocs} allocations on the reactor thread over {ios} I/Os");
    assert!(
        allocs < ios / 100,
        "uring data path allocates per I/O: {allocs}"
    );
}
