//! The host library against the Linux kernel NVMe/TCP target (nvmet-tcp on a RAM disk),
//! served by the VM harness (`../shared/nvmf-vm/run-fio-vm.sh --serve`, software-emulated,
//! slow). One VM for the whole test, bounded by `-t`, killed at the end; a lock file keeps
//! two runs of this test (in any process) from booting VMs at once. Skips loudly (a
//! `SKIPPED:` line with the reason; a failure with `POLLUX_NO_SKIP`) when the harness is
//! absent. `POLLUX_HOST_TEST_TARGET=ADDR:PORT:NQN` uses an already
//! running target instead of booting one.

mod common;

use pollux::nvmf::host::{discover, ConnectOpts, HostError, SyncController, TransportId};
use pollux::nvmf::wire::{cntrltype, feat, log_id, Status};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Seconds the VM may live (boot takes ~15 s; the test itself ~30 s under TCG).
const VM_SECONDS: u64 = 300;

struct Vm {
    child: Option<Child>,
    port: u16,
    nqn: String,
    _lock: Option<std::fs::File>,
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            // The harness runs in its own process group; it kills qemu by pid on SIGTERM.
            // SAFETY: kill(2) on the process group we created; no memory is involved.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            // SAFETY: as above.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
        }
    }
}

fn harness() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/nvmf-vm/run-fio-vm.sh");
    p.exists().then_some(p)
}

fn lock_file() -> std::fs::File {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(std::env::temp_dir().join("pollux-host-kernel-target.lock"))
        .unwrap();
    use std::os::fd::AsRawFd;
    // SAFETY: flock(2) on an fd we own; blocks until the other run finishes.
    unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
    f
}

fn start_vm() -> Option<Vm> {
    if let Ok(spec) = std::env::var("POLLUX_HOST_TEST_TARGET") {
        let mut it = spec.splitn(3, ':');
        let (_addr, port, nqn) = (it.next()?, it.next()?, it.next()?);
        return Some(Vm {
            child: None,
            port: port.parse().ok()?,
            nqn: nqn.to_string(),
            _lock: None,
        });
    }
    let Some(script) = harness() else {
        common::skip(
            "host_against_linux_kernel_target",
            "the VM harness ../shared/nvmf-vm/run-fio-vm.sh is absent and \
             POLLUX_HOST_TEST_TARGET is not set: the host is not checked against the Linux \
             kernel target",
        );
        return None;
    };
    let lock = lock_file();
    let port = common::free_port();
    let outdir = std::env::temp_dir().join(format!("pollux-host-vm-{}", std::process::id()));
    let mut child = Command::new(script)
        .args([
            "--serve",
            "-s",
            &port.to_string(),
            "-t",
            &VM_SECONDS.to_string(),
            "-o",
        ])
        .arg(&outdir)
        .env("SELFTEST_BACKEND", "ram")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("start the VM harness");
    // The harness logs on both streams; the ready line names the NQN.
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child
        .stdout
        .take()
        .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>);
    let stderr = child
        .stderr
        .take()
        .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>);
    for stream in [stdout, stderr].into_iter().flatten() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                println!("[vm] {line}");
                if let Some(i) = line.find("kernel target ready on host") {
                    let words = line[i..].split_whitespace();
                    if let Some(n) = words.into_iter().find_map(|w| w.strip_prefix("nqn=")) {
                        let _ = tx.send(n.to_string());
                    }
                }
            }
        });
    }
    let mut vm = Vm {
        child: Some(child),
        port,
        nqn: String::new(),
        _lock: Some(lock),
    };
    let nqn = rx
        .recv_timeout(Duration::from_secs(240))
        .expect("the VM harness did not report a ready kernel target");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !outdir.join("ready").exists() {
        assert!(
            Instant::now() < deadline,
            "no {}/ready file",
            outdir.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    vm.nqn = nqn;
    Some(vm)
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn opts(digests: bool) -> ConnectOpts {
    ConnectOpts {
        // Both sock impls: posix without digests, io_uring with them.
        sock_impl: Some(
            std::env::var("HOSTTEST_IMPL")
                .unwrap_or_else(|_| if digests { "uring" } else { "posix" }.into()),
        ),
        hdgst: digests,
        ddgst: digests,
        io_queues: 2,
        queue_depth: 64,
        timeout: Duration::from_secs(
            std::env::var("HOSTTEST_TIMEOUT")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(30),
        ),
        ..Default::default()
    }
}

/// Write/read-back of in-capsule sized and R2T sized writes, flush, write zeroes, DSM,
/// log page, features, error status; returns the namespace block size.
fn exercise(c: &SyncController, base_lba: u64, tag: u64) {
    let info = c.info();
    println!(
        "controller {} digests {}/{} maxh2cdata {} mn {:?} io_in_capsule {} max_transfer {} queues {}",
        info.cntlid,
        info.hdgst,
        info.ddgst,
        info.maxh2cdata,
        pollux::nvmf::field_str(&info.identify.mn),
        info.io_in_capsule,
        info.max_transfer,
        info.io_queues_granted
    );
    assert_eq!(info.identify.cntrltype, cntrltype::IO);
    assert_eq!(
        (info.hdgst, info.ddgst),
        (tag == 2, tag == 2),
        "digests as asked"
    );
    let nsids = c.active_namespaces().unwrap();
    assert!(!nsids.is_empty(), "the kernel target exposes a namespace");
    let nsid = nsids[0];
    let ns = c.identify_namespace(nsid).unwrap();
    let bs = ns.block_size().unwrap();
    assert!(ns.nsze > base_lba + 1024, "namespace is large enough");

    // In-capsule write (when the controller accepts that much) and R2T writes.
    let small = bs as usize;
    let large = (128 * 1024).min(info.max_transfer as usize) / small * small;
    for (i, (len, qid)) in [(small, 1u16), (large, 2u16), (small * 3, 1)]
        .into_iter()
        .enumerate()
    {
        let lba = base_lba + i as u64 * 256;
        let blocks = (len / small) as u32;
        let data = pattern(tag * 100 + i as u64, len);
        c.write(qid, nsid, lba, blocks, &data).unwrap();
        let back = c.read(3 - qid, nsid, lba, blocks, bs).unwrap();
        assert!(back[..] == data[..], "read back {len} bytes at lba {lba}");
    }
    assert!(info.io_in_capsule as usize >= small || info.io_in_capsule == 0);

    c.flush(1, nsid).unwrap();
    let zlba = base_lba + 2048;
    c.write(1, nsid, zlba, 8, &pattern(tag, 8 * small)).unwrap();
    c.write_zeroes(1, nsid, zlba, 8).unwrap();
    assert!(
        c.read(1, nsid, zlba, 8, bs)
            .unwrap()
            .iter()
            .all(|&b| b == 0),
        "zeroes read back"
    );
    c.deallocate(2, nsid, &[(zlba, 8), (base_lba + 4096, 16)])
        .unwrap();

    // Many commands in flight on one queue, through the callback API.
    let many = c
        .call(move |ctrl, done| {
            let left = std::rc::Rc::new(std::cell::Cell::new(48u32));
            let failed = std::rc::Rc::new(std::cell::Cell::new(None::<HostError>));
            let done = std::rc::Rc::new(std::cell::RefCell::new(Some(done)));
            for i in 0..48u64 {
                let mut buf = pollux::buf::IoBuf::with_len(small);
                buf.copy_from_slice(&pattern(tag * 1000 + i, small));
                let (left, failed, done) = (left.clone(), failed.clone(), done.clone());
                ctrl.write(1, nsid, base_lba + 8192 + i, 1, buf, move |r| {
                    if let Err(e) = r {
                        failed.set(Some(e));
                    }
                    left.set(left.get() - 1);
                    if left.get() == 0 {
                        let d = done.borrow_mut().take().unwrap();
                        d(match failed.take() {
                            Some(e) => Err(e),
                            None => Ok(48u32),
                        });
                    }
                });
            }
        })
        .unwrap();
    assert_eq!(many, 48);
    for i in [0u64, 17, 47] {
        let back = c.read(2, nsid, base_lba + 8192 + i, 1, bs).unwrap();
        assert!(
            back[..] == pattern(tag * 1000 + i, small)[..],
            "concurrent write {i}"
        );
    }

    // Admin: log page, features, keep alive.
    let smart = c
        .get_log_page(log_id::SMART_HEALTH, 0xffff_ffff, 0, 512)
        .unwrap();
    assert_eq!(smart.len(), 512);
    let nq = c.get_features(feat::NUMBER_OF_QUEUES, 0).unwrap();
    assert!(
        (nq & 0xffff) + 1 >= 2,
        "at least the two I/O queues we use: {nq:#x}"
    );
    c.keep_alive().unwrap();

    // NVMe errors are typed.
    // (nvmet's block device backend reports an LBA beyond the end as Internal Error,
    // other targets as LBA Out of Range: either way a typed NVMe status.)
    let err = c.read(1, nsid, ns.nsze.get(), 1, bs).unwrap_err();
    let status = err.nvme_status().expect("an NVMe status");
    assert!(!status.is_success(), "{err}");
    assert!(
        status.same_code(Status::LBA_OUT_OF_RANGE) || status.same_code(Status::INTERNAL_ERROR),
        "{err}"
    );
}

#[test]
fn host_against_linux_kernel_target() {
    let Some(vm) = start_vm() else { return };
    let trid = TransportId::tcp("127.0.0.1", vm.port, &vm.nqn);

    let entries = discover(&trid, opts(false)).unwrap();
    let names: Vec<_> = entries
        .iter()
        .filter_map(|e| pollux::nvmf::field_str(&e.subnqn).map(str::to_string))
        .collect();
    println!("discovery log: {names:?}");
    assert!(names.contains(&vm.nqn), "discovery lists {}", vm.nqn);

    let plain = SyncController::connect(&trid, opts(false)).unwrap();
    exercise(&plain, 0, 1);
    plain.disconnect().unwrap();

    let digests = SyncController::connect(&trid, opts(true)).unwrap();
    exercise(&digests, 16384, 2);
    digests.disconnect().unwrap();

    // A wrong subsystem NQN is refused with an NVMe status, not a hang.
    let bad = TransportId::tcp(
        "127.0.0.1",
        vm.port,
        "nqn.2014-08.org.example:no-such-subsystem",
    );
    let err = SyncController::connect(&bad, opts(false))
        .err()
        .expect("bad NQN refused");
    assert!(matches!(err, HostError::Nvme { .. }), "{err}");
    drop(vm);
}
