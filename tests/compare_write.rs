//! NVMe Compare and fused Compare and Write against a real pollux process on two reactors
//! (`-m 0x3`, sleeping when idle): exact statuses of compares, of pairs and of lone or
//! broken fused commands, and compare-and-write races from queues on both reactors that
//! must never lose an update, on a malloc bdev and on an io_uring file bdev (both served by
//! the bdev layer's range-lock emulation).

mod common;

use common::target_proc::spawn_pollux;
use common::{free_port, sock_path};
use pollux::buf::IoBuf;
use pollux::nvmf::host::{ConnectOpts, DataBuf, HostError, Request, SyncController, TransportId};
use pollux::nvmf::wire::{fuse, io_opc, SglDescriptor, Sqe, Status};
use serde_json::json;
use std::path::PathBuf;
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

const MALLOC_NQN: &str = "nqn.2016-06.io.pollux:caw-malloc";
const FILE_NQN: &str = "nqn.2016-06.io.pollux:caw-file";

/// A pollux process exporting a malloc bdev (512-byte blocks) and an io_uring file bdev
/// (4 KiB blocks) as namespace 1 of two subsystems.
struct Target {
    child: Child,
    port: u16,
    dir: PathBuf,
    sock: PathBuf,
}

impl Target {
    fn start(tag: &str) -> Target {
        let dir = sock_path(tag).with_extension("d");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("disk.img");
        std::fs::File::create(&file)
            .and_then(|f| f.set_len(16 << 20))
            .unwrap();
        let bdevs = vec![
            json!({"method": "bdev_malloc_create",
                   "params": {"name": "Malloc0", "num_blocks": 32768, "block_size": 512}}),
            json!({"method": "bdev_uring_create",
                   "params": {"name": "File0", "filename": file.to_str().unwrap(), "block_size": 4096}}),
        ];
        Self::start_with(
            tag,
            dir,
            bdevs,
            &[(MALLOC_NQN, "Malloc0"), (FILE_NQN, "File0")],
        )
    }

    /// pollux on two reactors with `bdevs` (config calls), each export a subsystem with
    /// the bdev as namespace 1.
    fn start_with(
        tag: &str,
        dir: PathBuf,
        bdevs: Vec<serde_json::Value>,
        exports: &[(&str, &str)],
    ) -> Target {
        let sock = sock_path(tag);
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let mut nvmf =
            vec![json!({"method": "nvmf_create_transport", "params": {"trtype": "TCP"}})];
        for (nqn, bdev) in exports {
            nvmf.push(json!({"method": "nvmf_create_subsystem",
                "params": {"nqn": nqn, "allow_any_host": true}}));
            nvmf.push(json!({"method": "nvmf_subsystem_add_ns",
                "params": {"nqn": nqn, "namespace": {"bdev_name": bdev}}}));
            nvmf.push(json!({"method": "nvmf_subsystem_add_listener",
                "params": {"nqn": nqn, "listen_address": {"trtype": "TCP", "adrfam": "IPv4",
                    "traddr": "127.0.0.1", "trsvcid": port.to_string()}}}));
        }
        let config = json!({"subsystems": [
            {"subsystem": "bdev", "config": bdevs},
            {"subsystem": "nvmf", "config": nvmf}
        ]});
        let cfg = dir.join("pollux.json");
        std::fs::write(&cfg, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        let flags = ["-m", "0x3", "--no-pin", "--no-default"];
        let child = spawn_pollux(&flags, &sock, &cfg, &[], &dir);
        let mut t = Target {
            child,
            port,
            dir,
            sock,
        };
        // Ready once this process applied its config (its listener is up), not merely when
        // something answers on the port (another test's target could hold it).
        let deadline = Instant::now() + Duration::from_secs(30);
        while !t.log().contains("pollux started")
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
        {
            if let Some(st) = t.child.try_wait().unwrap() {
                panic!("pollux exited ({st}): {}", t.log());
            }
            assert!(
                Instant::now() < deadline,
                "pollux never listened: {}",
                t.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        t
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pollux.log")).unwrap_or_default()
    }

    fn connect(&self, nqn: &str, host: &str, io_queues: u16) -> SyncController {
        let mut trid = TransportId::tcp("127.0.0.1", self.port, nqn);
        trid.hostnqn = Some(format!("nqn.2014-08.org.nvmexpress:uuid:{host}"));
        // A host identifier of its own per host name (reservations tell hosts apart by it).
        let mut hostid = [0u8; 16];
        for (i, b) in host.bytes().enumerate() {
            hostid[i % 16] ^= b.wrapping_add(i as u8);
        }
        let opts = ConnectOpts {
            hostid: Some(hostid),
            io_queues,
            queue_depth: 32,
            timeout: Duration::from_secs(10),
            ..Default::default()
        };
        SyncController::connect(&trid, opts)
            .unwrap_or_else(|e| panic!("connect: {e}: {}", self.log()))
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("pollux log:\n{}", self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

fn buf(bytes: &[u8]) -> IoBuf {
    let mut b = IoBuf::with_len(bytes.len());
    b.copy_from_slice(bytes);
    b
}

fn status(r: &Result<u32, HostError>) -> Status {
    match r {
        Ok(_) => Status::SUCCESS,
        Err(e) => e
            .nvme_status()
            .unwrap_or_else(|| panic!("not an NVMe status: {e}")),
    }
}

fn assert_status(r: &Result<u32, HostError>, want: Status, what: &str) {
    let got = status(r);
    assert!(got.same_code(want), "{what}: got {got:?}, want {want:?}");
}

/// A command of `blocks` blocks at `slba` with host data, its FUSE field set.
fn fused(op: u8, fuse_bits: u8, nsid: u32, slba: u64, blocks: u32, data: &[u8]) -> Request {
    let mut sqe = Sqe::rw(op, 0, nsid, slba, blocks, SglDescriptor::default());
    sqe.flags = sqe.flags.with_fuse(fuse_bits);
    Request::new(sqe, DataBuf::Write(buf(data)))
}

fn block_size(c: &SyncController) -> u32 {
    c.identify_namespace(1).unwrap().block_size().unwrap()
}

#[test]
fn identify_reports_compare_and_fused_compare_and_write() {
    let t = Target::start("caw-id");
    let c = t.connect(MALLOC_NQN, "id", 1);
    let id = c.identify_controller().unwrap();
    assert_eq!(id.oncs.get() & 1, 1, "ONCS Compare");
    assert_eq!(id.fuses.get() & 1, 1, "FUSES Compare and Write");
    assert_eq!(id.acwu.get(), 0, "ACWU: one block (0's based)");
    c.disconnect().unwrap();
}

fn compare_statuses(nqn: &str) {
    compare_statuses_on(&Target::start("caw-cmp"), nqn);
}

fn compare_statuses_on(t: &Target, nqn: &str) {
    let c = t.connect(nqn, "cmp", 1);
    let bs = block_size(&c) as usize;
    // One block (in-capsule) and 64 KiB (beyond the in-capsule size: R2T).
    for blocks in [1usize, 65536 / bs] {
        let data = pattern(blocks as u8, blocks * bs);
        c.write(1, 1, 8, blocks as u32, &data).unwrap();
        c.compare(1, 1, 8, blocks as u32, &data)
            .unwrap_or_else(|e| panic!("{blocks} equal blocks: {e}"));
        let mut other = data.clone();
        *other.last_mut().unwrap() ^= 1;
        let e = c.compare(1, 1, 8, blocks as u32, &other).unwrap_err();
        let st = e.nvme_status().expect("an NVMe status");
        assert!(
            st.same_code(Status::COMPARE_FAILURE),
            "{blocks} blocks differing: {st:?}"
        );
        assert_eq!((st.sct(), st.sc()), (2, 0x85));
        // The compare changed nothing.
        assert!(c.read(1, 1, 8, blocks as u32, bs as u32).unwrap()[..] == data[..]);
    }
    let nblocks = c.identify_namespace(1).unwrap().nsze.get();
    let e = c
        .compare(1, 1, nblocks - 1, 2, &vec![0; 2 * bs])
        .unwrap_err();
    assert!(e.nvme_status().unwrap().same_code(Status::LBA_OUT_OF_RANGE));
    c.disconnect().unwrap();
}

#[test]
fn compare_succeeds_and_fails_on_malloc() {
    compare_statuses(MALLOC_NQN);
}

#[test]
fn compare_succeeds_and_fails_on_a_uring_file() {
    compare_statuses(FILE_NQN);
}

fn fused_statuses(nqn: &str) {
    fused_statuses_on(&Target::start("caw-fused"), nqn, true);
}

/// `atomic_beyond_a_sector`: whether a 64 KiB pair runs (false for librbd's own
/// compare-and-write, which compares within one 512-byte sector: Invalid Field).
fn fused_statuses_on(t: &Target, nqn: &str, atomic_beyond_a_sector: bool) {
    let c = t.connect(nqn, "fused", 1);
    let bs = block_size(&c) as usize;
    let old = pattern(1, bs);
    let new = pattern(2, bs);
    c.write(1, 1, 20, 1, &old).unwrap();

    // A matching pair writes.
    let (r1, r2) = c.compare_and_write(1, 1, 20, 1, &old, &new).unwrap();
    assert_status(&r1, Status::SUCCESS, "compare of a matching pair");
    assert_status(&r2, Status::SUCCESS, "write of a matching pair");
    assert!(c.read(1, 1, 20, 1, bs as u32).unwrap()[..] == new[..]);

    // A mismatch: Compare Failure, the write aborted and not done.
    let (r1, r2) = c
        .compare_and_write(1, 1, 20, 1, &old, &pattern(3, bs))
        .unwrap();
    assert_status(&r1, Status::COMPARE_FAILURE, "compare of a stale pair");
    assert_status(&r2, Status::ABORTED_FAILED_FUSED, "write of a stale pair");
    assert!(c.read(1, 1, 20, 1, bs as u32).unwrap()[..] == new[..]);

    // A large pair (both halves beyond the in-capsule size: R2T for each).
    let blocks = 65536 / bs;
    let big_old = pattern(4, blocks * bs);
    let big_new = pattern(5, blocks * bs);
    c.write(1, 1, 64, blocks as u32, &big_old).unwrap();
    let (r1, r2) = c
        .compare_and_write(1, 1, 64, blocks as u32, &big_old, &big_new)
        .unwrap();
    if atomic_beyond_a_sector {
        assert_status(&r1, Status::SUCCESS, "compare of a large pair");
        assert_status(&r2, Status::SUCCESS, "write of a large pair");
        assert!(c.read(1, 1, 64, blocks as u32, bs as u32).unwrap()[..] == big_new[..]);
    } else {
        assert_status(
            &r1,
            Status::INVALID_FIELD,
            "compare of a pair beyond a sector",
        );
        assert_status(
            &r2,
            Status::ABORTED_FAILED_FUSED,
            "write of a pair beyond a sector",
        );
        assert!(c.read(1, 1, 64, blocks as u32, bs as u32).unwrap()[..] == big_old[..]);
    }

    // A lone second command.
    let lone = fused(io_opc::WRITE, fuse::SECOND, 1, 20, 1, &old);
    let r = c.submit(1, lone).unwrap().status();
    assert_status(&r, Status::ABORTED_MISSING_FUSED, "lone second");
    assert!(c.read(1, 1, 20, 1, bs as u32).unwrap()[..] == new[..]);

    // A first followed by a normal write: the first is missing its second; the write runs.
    let first = fused(io_opc::COMPARE, fuse::FIRST, 1, 20, 1, &new);
    let plain = fused(io_opc::WRITE, fuse::NORMAL, 1, 21, 1, &old);
    let (c1, c2) = c.submit_pair(1, first, plain).unwrap();
    assert_status(
        &c1.status(),
        Status::ABORTED_MISSING_FUSED,
        "first without second",
    );
    assert_status(&c2.status(), Status::SUCCESS, "the normal command after it");

    // Two firsts in a row, then a second: the first one is missing its second, the
    // other pairs with the second and runs.
    let lone_first = fused(io_opc::COMPARE, fuse::FIRST, 1, 20, 1, &new);
    let pair = (
        fused(io_opc::COMPARE, fuse::FIRST, 1, 20, 1, &new),
        fused(io_opc::WRITE, fuse::SECOND, 1, 20, 1, &old),
    );
    let (s0, s1, s2) = c
        .call(move |ctrl, done| {
            let lone = std::rc::Rc::new(std::cell::RefCell::new(None));
            let l = lone.clone();
            ctrl.submit(1, lone_first, move |cpl| {
                *l.borrow_mut() = Some(cpl.status())
            });
            ctrl.submit_pair(1, pair.0, pair.1, move |a, b| {
                let first = lone.borrow_mut().take();
                done(Ok((first, a.status(), b.status())))
            });
        })
        .unwrap();
    let s0 = s0.expect("the lone first completes before the pair after it");
    assert_status(&s0, Status::ABORTED_MISSING_FUSED, "first before a first");
    assert_status(&s1, Status::SUCCESS, "compare paired after a lone first");
    assert_status(&s2, Status::SUCCESS, "write paired after a lone first");
    assert!(c.read(1, 1, 20, 1, bs as u32).unwrap()[..] == old[..]);
    c.write(1, 1, 20, 1, &new).unwrap();

    // Different LBA ranges: both Invalid Field, nothing written.
    let first = fused(io_opc::COMPARE, fuse::FIRST, 1, 20, 1, &new);
    let second = fused(io_opc::WRITE, fuse::SECOND, 1, 22, 1, &old);
    let (c1, c2) = c.submit_pair(1, first, second).unwrap();
    assert_status(
        &c1.status(),
        Status::INVALID_FIELD,
        "first of different ranges",
    );
    assert_status(
        &c2.status(),
        Status::INVALID_FIELD,
        "second of different ranges",
    );
    assert!(c.read(1, 1, 22, 1, bs as u32).unwrap()[..] != old[..]);

    // A first that is not a Compare: Invalid Opcode; its second aborted.
    let first = fused(io_opc::WRITE, fuse::FIRST, 1, 20, 1, &new);
    let second = fused(io_opc::WRITE, fuse::SECOND, 1, 20, 1, &old);
    let (c1, c2) = c.submit_pair(1, first, second).unwrap();
    assert_status(&c1.status(), Status::INVALID_OPCODE, "first not a compare");
    assert_status(&c2.status(), Status::ABORTED_FAILED_FUSED, "its second");

    // A second that is not a Write: Invalid Opcode; its first aborted.
    let first = fused(io_opc::COMPARE, fuse::FIRST, 1, 20, 1, &new);
    let second = fused(io_opc::COMPARE, fuse::SECOND, 1, 20, 1, &new);
    let (c1, c2) = c.submit_pair(1, first, second).unwrap();
    assert_status(
        &c1.status(),
        Status::ABORTED_FAILED_FUSED,
        "first of a non-write",
    );
    assert_status(&c2.status(), Status::INVALID_OPCODE, "second not a write");

    // FUSE 11b is reserved.
    let bad = fused(io_opc::COMPARE, 3, 1, 20, 1, &new);
    let r = c.submit(1, bad).unwrap().status();
    assert_status(&r, Status::INVALID_FIELD, "FUSE 11b");

    // An out-of-range pair: the compare gets LBA Out of Range, the write is aborted.
    let nblocks = c.identify_namespace(1).unwrap().nsze.get();
    let (r1, r2) = c.compare_and_write(1, 1, nblocks, 1, &new, &old).unwrap();
    assert_status(&r1, Status::LBA_OUT_OF_RANGE, "compare out of range");
    assert_status(
        &r2,
        Status::ABORTED_FAILED_FUSED,
        "write of an out-of-range pair",
    );

    // After all that, the queue still executes pairs and nothing changed block 20.
    assert!(c.read(1, 1, 20, 1, bs as u32).unwrap()[..] == new[..]);
    let (r1, r2) = c.compare_and_write(1, 1, 20, 1, &new, &old).unwrap();
    assert_status(&r1, Status::SUCCESS, "compare after the errors");
    assert_status(&r2, Status::SUCCESS, "write after the errors");
    c.disconnect().unwrap();
}

#[test]
fn fused_pairs_and_broken_pairs_on_malloc() {
    fused_statuses(MALLOC_NQN);
}

#[test]
fn fused_pairs_and_broken_pairs_on_a_uring_file() {
    fused_statuses(FILE_NQN);
}

/// Increments the counter in block `slba` `n` times on queue `qid`: read, then a
/// compare-and-write of the value read + 1, retried on Compare Failure. Returns the
/// retries.
fn increment(c: &SyncController, qid: u16, slba: u64, bs: u32, n: u64) -> u64 {
    let mut retries = 0;
    let mut done = 0;
    let mut seen = c.read(qid, 1, slba, 1, bs).unwrap().to_vec();
    while done < n {
        let v = u64::from_le_bytes(seen[..8].try_into().unwrap());
        let mut next = seen.clone();
        next[..8].copy_from_slice(&(v + 1).to_le_bytes());
        next[8..16].copy_from_slice(&(qid as u64).to_le_bytes());
        let (r1, r2) = c.compare_and_write(qid, 1, slba, 1, &seen, &next).unwrap();
        match (status(&r1), status(&r2)) {
            (a, b) if a.is_success() && b.is_success() => {
                done += 1;
                seen = next;
            }
            (a, b)
                if a.same_code(Status::COMPARE_FAILURE)
                    && b.same_code(Status::ABORTED_FAILED_FUSED) =>
            {
                retries += 1;
                seen = c.read(qid, 1, slba, 1, bs).unwrap().to_vec();
            }
            other => panic!("unexpected statuses {other:?}"),
        }
    }
    retries
}

fn counter_race(nqn: &str) {
    counter_race_on(&Target::start("caw-race"), nqn, 150);
}

fn counter_race_on(t: &Target, nqn: &str, n: u64) {
    // Two hosts with two I/O queues each: connections alternate between the two reactors
    // (round robin), so each host has a queue on each reactor.
    let hosts: Vec<Arc<SyncController>> = ["race-a", "race-b"]
        .iter()
        .map(|h| Arc::new(t.connect(nqn, h, 2)))
        .collect();
    let bs = block_size(&hosts[0]);
    let slba = 5;
    hosts[0]
        .write(1, 1, slba, 1, &vec![0; bs as usize])
        .unwrap();
    // Plain writes next to the counter keep in-flight writes on the channels the range
    // locks must wait for (and must not be held back by them).
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let noise = {
        let (h, stop) = (hosts[1].clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                h.write(2, 1, slba + 1 + n % 4, 1, &pattern(n as u8, bs as usize))
                    .unwrap();
                n += 1;
            }
            n
        })
    };
    let workers: Vec<_> = hosts
        .iter()
        .flat_map(|h| [(h.clone(), 1u16), (h.clone(), 2u16)])
        .map(|(h, qid)| std::thread::spawn(move || increment(&h, qid, slba, bs, n)))
        .collect();
    let retries: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let noise_writes = noise.join().unwrap();
    let data = hosts[0].read(1, 1, slba, 1, bs).unwrap();
    let count = u64::from_le_bytes(data[..8].try_into().unwrap());
    assert_eq!(count, 4 * n, "lost updates ({retries} retries)");
    assert!(noise_writes > 0);
    eprintln!(
        "{nqn}: {} increments, {retries} retries, {noise_writes} plain writes",
        4 * n
    );
}

#[test]
fn compare_and_write_races_never_lose_an_update_on_malloc() {
    counter_race(MALLOC_NQN);
}

#[test]
fn compare_and_write_races_never_lose_an_update_on_a_uring_file() {
    counter_race(FILE_NQN);
}

/// The same on an RBD image of a throw-away single-node Ceph cluster, where librbd (Ceph
/// 16+) compares and writes atomically in the OSDs: skipped loudly without the Ceph
/// packages.
#[test]
fn compare_and_fused_compare_and_write_on_rbd() {
    use pollux::bdev::rbd::DevCluster;
    const RBD_NQN: &str = "nqn.2016-06.io.pollux:caw-rbd";
    if let Some(why) = DevCluster::unavailable_or_panic() {
        common::skip("compare_and_fused_compare_and_write_on_rbd", &why);
        return;
    }
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/ceph-dev-cluster.sh");
    let cluster = DevCluster::start(&script, "caw").expect("start the dev Ceph cluster");
    cluster.create_image("caw0", 16).unwrap();
    // 4 KiB blocks: emulated by the bdev layer (librbd compares within a 512-byte
    // sector); 512-byte blocks: librbd's own compare-and-write.
    cluster.create_image("caw1", 16).unwrap();
    let dir = sock_path("caw-rbd").with_extension("d");
    let bdevs = vec![
        json!({"method": "bdev_rbd_register_cluster",
               "params": {"name": "c0", "config_file": cluster.conf}}),
        json!({"method": "bdev_rbd_create",
               "params": {"name": "rbd0", "pool_name": "rbd", "rbd_name": "caw0",
                          "block_size": 512, "cluster_name": "c0"}}),
        json!({"method": "bdev_rbd_create",
               "params": {"name": "rbd1", "pool_name": "rbd", "rbd_name": "caw1",
                          "block_size": 4096, "cluster_name": "c0"}}),
    ];
    const RBD4K_NQN: &str = "nqn.2016-06.io.pollux:caw-rbd4k";
    let t = Target::start_with(
        "caw-rbd",
        dir,
        bdevs,
        &[(RBD_NQN, "rbd0"), (RBD4K_NQN, "rbd1")],
    );
    for (nqn, native) in [(RBD4K_NQN, false), (RBD_NQN, true)] {
        compare_statuses_on(&t, nqn);
        fused_statuses_on(&t, nqn, !native);
        counter_race_on(&t, nqn, 25);
    }

    // bdev_get_bdevs says which bdev does compare-and-write natively (as SPDK, the
    // emulated ones report false).
    {
        let mut rpc = common::Client::connect(&t.sock);
        for (name, native) in [("rbd0", true), ("rbd1", false)] {
            let v = rpc.call("bdev_get_bdevs", Some(json!({"name": name})));
            let types = &v[0]["supported_io_types"];
            assert_eq!(types["compare_and_write"], json!(native), "{name}: {types}");
            assert_eq!(types["compare"], json!(false), "{name}: {types}");
        }
    }

    // librbd does the compare itself: pairs cost the bdev no read (the layer's emulation
    // would read once per pair).
    let reads = |t: &Target| {
        let mut rpc = common::Client::connect(&t.sock);
        let v = rpc.call("bdev_get_iostat", Some(json!({"name": "rbd0"})));
        v["bdevs"][0]["num_read_ops"]
            .as_u64()
            .expect("num_read_ops")
    };
    let c = t.connect(RBD_NQN, "native", 1);
    let bs = block_size(&c) as usize;
    let (a, b) = (pattern(7, bs), pattern(8, bs));
    c.write(1, 1, 100, 1, &a).unwrap();
    let before = reads(&t);
    for i in 0..10 {
        let (old, new) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let (r1, r2) = c.compare_and_write(1, 1, 100, 1, old, new).unwrap();
        assert_status(&r1, Status::SUCCESS, "native compare");
        assert_status(&r2, Status::SUCCESS, "native write");
    }
    assert_eq!(
        reads(&t),
        before,
        "compare-and-write on RBD read through the bdev layer"
    );
    c.disconnect().unwrap();
}

/// Reservations apply to the pair: under Write Exclusive another host's Compare runs but
/// its pair's Write is refused (Reservation Conflict; the Compare aborted), under Exclusive
/// Access its Compare is refused (the Write aborted); the holder's pairs run.
#[test]
fn reservations_apply_to_fused_pairs() {
    let t = Target::start("caw-resv");
    let holder = t.connect(MALLOC_NQN, "holder", 1);
    let other = t.connect(MALLOC_NQN, "other", 1);
    let bs = block_size(&holder) as usize;
    let (a, b) = (pattern(1, bs), pattern(2, bs));
    holder.write(1, 1, 3, 1, &a).unwrap();
    holder.reservation_register(1, 1, 0, false, 0, 0xA).unwrap();
    // Acquire, Write Exclusive.
    holder.reservation_acquire(1, 1, 0, 1, 0xA, 0).unwrap();
    other
        .compare(1, 1, 3, 1, &a)
        .expect("reads are allowed under Write Exclusive");
    let (r1, r2) = other.compare_and_write(1, 1, 3, 1, &a, &b).unwrap();
    assert_status(
        &r1,
        Status::ABORTED_FAILED_FUSED,
        "compare of a pair without write access",
    );
    assert_status(
        &r2,
        Status::RESERVATION_CONFLICT,
        "write without write access",
    );
    let (r1, r2) = holder.compare_and_write(1, 1, 3, 1, &a, &b).unwrap();
    assert_status(&r1, Status::SUCCESS, "the holder's compare");
    assert_status(&r2, Status::SUCCESS, "the holder's write");
    // Release, then Exclusive Access.
    holder.reservation_release(1, 1, 0, 1, 0xA).unwrap();
    holder.reservation_acquire(1, 1, 0, 2, 0xA, 0).unwrap();
    let (r1, r2) = other.compare_and_write(1, 1, 3, 1, &b, &a).unwrap();
    assert_status(
        &r1,
        Status::RESERVATION_CONFLICT,
        "compare without read access",
    );
    assert_status(&r2, Status::ABORTED_FAILED_FUSED, "the write of that pair");
    assert!(holder.read(1, 1, 3, 1, bs as u32).unwrap()[..] == b[..]);
    other.disconnect().unwrap();
    holder.disconnect().unwrap();
}
