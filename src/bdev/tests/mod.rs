//! The bdev module suite, run against every data-storing module.
//!
//! The same checks (write/read-back verify over a scatter list, write_zeroes and unmap read
//! back zeroes, flush, out-of-range and malformed I/O rejected, concurrent I/O from two
//! reactors, delete while I/O is in flight, exactly-once delivery) run against every
//! data-storing module: malloc, uring and aio on temp files, passthru and delay over malloc,
//! and rbd on a throw-away Ceph cluster (skipped loudly without the Ceph packages, a failure
//! with POLLUX_REQUIRE_CEPH set).
//!
//! Plus the error bdev, claims, hot remove of stacked bdevs, null resize, iostat and the config
//! writer. Each test starts its own small app (two reactors when the machine has two cores,
//! sleeping idle strategy) and shuts it down. This file is the harness (the test app, a
//! per-reactor client, I/O builders, the module suite); the tests are in `modules`
//! (each module's suite), `stats` (iostat, QoS, histograms), `layer` (claims, hot remove,
//! resize, status mapping, RPC errors) and `ceph_rbd`.

mod ceph_rbd;
mod layer;
mod modules;
mod stats;

use super::*;
use crate::buf::IoBuf;
use crate::reactor::{self, AppHandle, IdleStrategy, ReactorConfig};
use serde_json::{json, Value};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(20);

struct TestApp {
    app: AppHandle,
    main: u32,
    other: u32,
}

impl TestApp {
    fn start() -> Self {
        let avail: Vec<u32> = core_affinity::get_core_ids()
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.id as u32)
            .collect();
        let cores: Vec<u32> = if avail.len() >= 2 {
            avail[..2].to_vec()
        } else {
            vec![0]
        };
        let (tx, rx) = mpsc::channel();
        let app = reactor::start(
            ReactorConfig {
                cores: cores.clone(),
                idle: IdleStrategy::SpinThenSleep(Duration::from_micros(50)),
                pin: false,
            },
            move || {
                rpc::register();
                tx.send(()).unwrap();
            },
        )
        .expect("start reactors");
        rx.recv_timeout(WAIT).expect("init ran");
        TestApp {
            app,
            main: cores[0],
            other: *cores.last().unwrap(),
        }
    }

    /// Runs `f` on `core`; it answers through the sender.
    fn on<R: Send + 'static>(
        &self,
        core: u32,
        f: impl FnOnce(mpsc::Sender<R>) + Send + 'static,
    ) -> R {
        let (tx, rx) = mpsc::channel();
        self.app
            .send_to(core, move || f(tx))
            .expect("queue a message");
        rx.recv_timeout(WAIT).expect("reactor answered in time")
    }

    fn rpc(&self, method: &'static str, params: Value) -> crate::rpc::RpcResult {
        self.on(self.main, move |tx| {
            rpc::call(method, params, move |r| {
                let _ = tx.send(r);
            })
        })
    }

    fn bdev_info(&self, name: &str) -> Value {
        self.rpc("bdev_get_bdevs", json!({ "name": name }))
            .expect("bdev exists")[0]
            .clone()
    }

    /// Submits `ios` together on `core` through that reactor's test client and waits for
    /// all of them; returns them in completion order.
    fn io_batch(&self, core: u32, bdev: &str, ios: Vec<BdevIo>) -> Vec<BdevIo> {
        let bdev = bdev.to_string();
        self.on(core, move |tx| client_submit(&bdev, ios, tx))
    }

    fn io(&self, core: u32, bdev: &str, io: BdevIo) -> BdevIo {
        self.io_batch(core, bdev, vec![io]).pop().unwrap()
    }

    /// The bdev subsystem's config as `save_config` writes it.
    fn config(&self) -> Vec<Value> {
        self.on(self.main, |tx| {
            let _ = tx.send(rpc::write_config());
        })
    }

    fn stop(self) {
        self.app.shutdown();
        self.app.wait();
    }
}

// A per-reactor test client: one descriptor and channel per bdev, dropped on hot remove.

struct Batch {
    left: usize,
    done: Vec<BdevIo>,
    tx: mpsc::Sender<Vec<BdevIo>>,
}

#[derive(Default)]
struct TestSink {
    batches: RefCell<HashMap<u64, Batch>>,
    seen: RefCell<HashSet<u64>>,
}

impl IoSink for TestSink {
    fn io_done(&self, io: BdevIo) {
        assert!(
            self.seen.borrow_mut().insert(io.token),
            "I/O {} completed twice",
            io.token
        );
        assert_ne!(io.status(), IoStatus::Pending);
        let batch_id = io.token >> 32;
        let mut batches = self.batches.borrow_mut();
        let b = batches.get_mut(&batch_id).expect("known batch");
        b.done.push(io);
        b.left -= 1;
        if b.left == 0 {
            let b = batches.remove(&batch_id).unwrap();
            let _ = b.tx.send(b.done);
        }
    }
}

struct Client {
    sink: Rc<TestSink>,
    channel: IoChannel,
    _desc: Desc,
    next_batch: u64,
}

thread_local! {
    static CLIENTS: RefCell<HashMap<String, Client>> = RefCell::new(HashMap::new());
    static REMOVED: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

fn ensure_client(bdev: &str) -> Result<(), BdevError> {
    if CLIENTS.with(|c| c.borrow().contains_key(bdev)) {
        return Ok(());
    }
    let name = bdev.to_string();
    let desc = open(bdev, move |ev| {
        if ev == BdevEvent::Remove {
            // A user goes when its bdev goes: drop channel and descriptor.
            let gone = CLIENTS.with(|c| c.borrow_mut().remove(&name));
            drop(gone);
            REMOVED.with(|r| r.borrow_mut().push(name.clone()));
        }
    })?;
    let sink = Rc::new(TestSink::default());
    let channel = desc.open_channel(sink.clone())?;
    CLIENTS.with(|c| {
        c.borrow_mut().insert(
            bdev.to_string(),
            Client {
                sink,
                channel,
                _desc: desc,
                next_batch: 1,
            },
        )
    });
    Ok(())
}

fn client_submit(bdev: &str, ios: Vec<BdevIo>, tx: mpsc::Sender<Vec<BdevIo>>) {
    ensure_client(bdev).expect("open the bdev");
    CLIENTS.with(|c| {
        let mut c = c.borrow_mut();
        let cl = c.get_mut(bdev).unwrap();
        let id = cl.next_batch;
        cl.next_batch += 1;
        cl.sink.batches.borrow_mut().insert(
            id,
            Batch {
                left: ios.len(),
                done: Vec::new(),
                tx,
            },
        );
        for (i, mut io) in ios.into_iter().enumerate() {
            io.token = id << 32 | i as u64;
            cl.channel.submit(io);
        }
        // Nothing may have completed inside submit.
        assert!(
            cl.sink.batches.borrow().contains_key(&id),
            "completed inside submit"
        );
    });
}

fn pattern(seed: u64, len: usize) -> IoBuf {
    let mut b = IoBuf::with_len(len);
    for (i, x) in b.iter_mut().enumerate() {
        *x = (seed.wrapping_mul(31).wrapping_add(i as u64 * 7) % 251) as u8;
    }
    b
}

fn write_io(off: u64, blocks: u64, bs: usize, seed: u64) -> BdevIo {
    // Two segments when possible, to exercise scatter lists.
    let len = blocks as usize * bs;
    let bufs = if blocks >= 2 {
        let first = bs;
        let all = pattern(seed, len);
        let mut a = IoBuf::with_len(first);
        a.copy_from_slice(&all[..first]);
        let mut b = IoBuf::with_len(len - first);
        b.copy_from_slice(&all[first..]);
        vec![a, b]
    } else {
        vec![pattern(seed, len)]
    };
    BdevIo::new(IoType::Write, off, blocks).with_bufs(bufs)
}

fn read_io(off: u64, blocks: u64, bs: usize) -> BdevIo {
    BdevIo::new(IoType::Read, off, blocks).with_bufs(vec![IoBuf::with_len(blocks as usize * bs)])
}

fn flat(io: &BdevIo) -> Vec<u8> {
    io.bufs.iter().flat_map(|b| b.iter().copied()).collect()
}

/// The suite every data-storing module passes. `name` must hold at least 256 blocks.
fn module_suite(t: &TestApp, name: &str) {
    let info = t.bdev_info(name);
    let bs = info["block_size"].as_u64().unwrap() as usize;
    let nb = info["num_blocks"].as_u64().unwrap();
    assert!(nb >= 256, "{name}: {nb} blocks");

    // write, then read back
    let w = t.io(t.main, name, write_io(10, 8, bs, 1));
    assert_eq!(w.status(), IoStatus::Success, "{name}: write");
    let r = t.io(t.main, name, read_io(10, 8, bs));
    assert_eq!(r.status(), IoStatus::Success, "{name}: read");
    assert_eq!(
        flat(&r),
        &pattern(1, 8 * bs)[..],
        "{name}: read back what was written"
    );

    // write_zeroes and unmap read back zeroes
    for (t_, off) in [(IoType::WriteZeroes, 10u64), (IoType::Unmap, 14)] {
        assert_eq!(
            t.io(t.main, name, write_io(off, 4, bs, 9)).status(),
            IoStatus::Success
        );
        let z = t.io(t.main, name, BdevIo::new(t_, off, 4));
        assert_eq!(z.status(), IoStatus::Success, "{name}: {t_:?}");
        let r = t.io(t.main, name, read_io(off, 4, bs));
        assert!(
            flat(&r).iter().all(|&b| b == 0),
            "{name}: {t_:?} reads back zeroes"
        );
    }

    // flush
    assert_eq!(
        t.io(t.main, name, BdevIo::new(IoType::Flush, 0, 0))
            .status(),
        IoStatus::Success
    );

    // rejected before the module
    let past = t.io(t.main, name, read_io(nb, 1, bs));
    assert_eq!(
        past.status(),
        IoStatus::InvalidLbaRange,
        "{name}: past the end"
    );
    let straddle = t.io(t.main, name, read_io(nb - 1, 2, bs));
    assert_eq!(straddle.status(), IoStatus::InvalidLbaRange);
    let overflow = t.io(t.main, name, BdevIo::new(IoType::Unmap, u64::MAX - 1, 4));
    assert_eq!(
        overflow.status(),
        IoStatus::InvalidLbaRange,
        "{name}: LBA + count overflow"
    );
    let short = t.io(
        t.main,
        name,
        BdevIo::new(IoType::Write, 0, 2).with_bufs(vec![IoBuf::zeroed(bs)]),
    );
    assert_eq!(
        short.status(),
        IoStatus::InvalidRequest,
        "{name}: buffer shorter than length"
    );
    let empty = t.io(t.main, name, read_io(0, 0, bs));
    assert_eq!(empty.status(), IoStatus::InvalidRequest);

    // concurrent I/O from two reactors on disjoint ranges, then cross-checked
    let (tx, rx) = mpsc::channel();
    for (k, core) in [(0u64, t.main), (1, t.other)] {
        let ios: Vec<BdevIo> = (0..32)
            .map(|i| write_io(64 + k * 64 + i * 2, 2, bs, 100 + k * 64 + i))
            .collect();
        let tx = tx.clone();
        let n = name.to_string();
        t.app
            .send_to(core, move || {
                let (itx, irx) = mpsc::channel();
                client_submit(&n, ios, itx);
                std::thread::spawn(move || {
                    let _ = tx.send(irx.recv_timeout(WAIT).expect("batch done"));
                });
            })
            .unwrap();
    }
    for _ in 0..2 {
        let done = rx.recv_timeout(WAIT).expect("concurrent batch");
        assert_eq!(done.len(), 32);
        assert!(
            done.iter().all(|io| io.status() == IoStatus::Success),
            "{name}"
        );
    }
    for (k, core) in [(0u64, t.other), (1, t.main)] {
        let ios: Vec<BdevIo> = (0..32)
            .map(|i| read_io(64 + k * 64 + i * 2, 2, bs))
            .collect();
        for io in t.io_batch(core, name, ios) {
            assert_eq!(io.status(), IoStatus::Success);
            let seed = 100 + k * 64 + (io.offset_blocks - 64 - k * 64) / 2;
            assert_eq!(
                flat(&io),
                &pattern(seed, 2 * bs)[..],
                "{name}: cross-reactor read"
            );
        }
    }
}

/// Deletes `name` (through `delete_method`) while 64 I/Os are in flight on it: every I/O
/// completes exactly once (success, or aborted), the user is told and goes, the bdev is gone.
fn delete_in_flight(t: &TestApp, name: &str, delete_method: &'static str) {
    let info = t.bdev_info(name);
    let bs = info["block_size"].as_u64().unwrap() as usize;
    // Open the client first so the delete finds a user.
    let _ = t.io(t.main, name, read_io(0, 1, bs));
    let n = name.to_string();
    let (ios_done, delete_result) = t.on(t.main, move |tx| {
        let ios: Vec<BdevIo> = (0..64).map(|i| write_io(i * 2, 2, bs, i)).collect();
        let (itx, irx) = mpsc::channel();
        client_submit(&n, ios, itx);
        let (dtx, drx) = mpsc::channel();
        rpc::call(delete_method, json!({ "name": n }), move |r| {
            let _ = dtx.send(r);
        });
        std::thread::spawn(move || {
            let ios = irx.recv_timeout(WAIT).expect("in-flight I/O completed");
            let del = drx.recv_timeout(WAIT).expect("delete answered");
            let _ = tx.send((ios, del));
        });
    });
    assert_eq!(delete_result.unwrap(), json!(true));
    assert_eq!(ios_done.len(), 64);
    for io in &ios_done {
        assert!(
            matches!(io.status(), IoStatus::Success | IoStatus::Aborted),
            "{name}: {:?}",
            io.status()
        );
    }
    let removed = t.on(t.main, |tx| {
        let _ = tx.send(REMOVED.with(|r| r.borrow().clone()));
    });
    assert!(
        removed.contains(&name.to_string()),
        "{name}: user told of the removal"
    );
    assert!(
        t.rpc("bdev_get_bdevs", json!({ "name": name })).is_err(),
        "{name} gone"
    );
}

struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(tag: &str, len: u64) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "pollux-bdev-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let f = std::fs::File::create(&p).unwrap();
        f.set_len(len).unwrap();
        TempFile(p)
    }
    fn path(&self) -> String {
        self.0.to_string_lossy().into_owned()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn malloc(t: &TestApp, name: &str) {
    let r = t.rpc(
        "bdev_malloc_create",
        json!({"name": name, "num_blocks": 1024, "block_size": 512}),
    );
    assert_eq!(r.unwrap(), json!(name));
}

/// A delay bdev `name` over `base` adding `us` microseconds to every read and write.
fn delay_over(t: &TestApp, name: &str, base: &str, us: u64) {
    let r = t.rpc(
        "bdev_delay_create",
        json!({"name": name, "base_bdev_name": base, "avg_read_latency": us,
               "p99_read_latency": us, "avg_write_latency": us, "p99_write_latency": us}),
    );
    assert_eq!(r.unwrap(), json!(name));
}
