//! The physical ceiling: the least work that moves the same bytes as an NVMe/TCP exchange
//! over loopback, to which every pollux figure is compared. A "target" thread pinned to one
//! core and a "host" thread pinned to the other talk over one TCP connection through one
//! sock impl (posix or uring, polled in a busy loop, nothing else running): the host keeps
//! `qd` requests in flight, each an `in`-byte message (for a 4 KiB read: the 72-byte
//! command capsule), and the target answers each with an `out`-byte message (for a 4 KiB
//! read: a 24-byte C2HData header plus 4096 data bytes, sent without copying from one shared
//! buffer). Like a malloc bdev that was written before it is read, read data is sent from
//! a touched region of `--region-mib` MiB (default 256, the size of the benchmark's bdev) at
//! random 4 KiB-aligned offsets, and write payloads are copied into another such region at
//! random offsets: a 4 KiB read of real memory costs the kernel a copy from DRAM, which a
//! cache-hot buffer would hide. The first 8 bytes of a request carry its own length and its answer's, so one
//! run can mix shapes (`--read-pct`, like a 70/30 workload: reads are `72 -> 24+size`,
//! writes `72+size -> 24`). No protocol decoding, no block device, no digests. Prints a
//! table, or one JSON object per cell with `--json`. Run it with
//! `cargo bench --bench ceiling -- [--impl posix,uring] [--qd 1,32,128] [--size 4096]
//! [--read-pct 100] [--region-mib 256] [--secs 3] [--json]` (cores 0 and 1 unless `--target-core`/`--host-core`).

use hdrhistogram::Histogram;
use pollux::buf::{copy_bytes, IoBuf};
use pollux::buf::{Chunk, SharedBytes};
use pollux::sock::{get_impl, SockEvent, SockGroup, SockOpts, WriteRequest};
use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The command capsule of NVMe/TCP (8-byte PDU header + 64-byte SQE).
const CAPSULE: usize = 72;
/// A C2HData PDU header / a CapsuleResp PDU (both 24 bytes).
const SMALL_PDU: usize = 24;

#[derive(Clone, Debug)]
struct Cell {
    imp: String,
    qd: usize,
    size: usize,
    read_pct: u32,
    secs: f64,
    target_core: usize,
    host_core: usize,
    region: usize,
}

struct Outcome {
    iops: f64,
    hist: Histogram<u64>,
}

fn pin(core: usize) {
    let _ = core_affinity::set_for_current(core_affinity::CoreId { id: core });
}

/// Keeps a queue of write requests for reuse (nothing allocated per message).
fn take_req(pool: &mut Vec<WriteRequest>) -> WriteRequest {
    let mut req = pool.pop().unwrap_or_else(|| WriteRequest::new(0));
    req.clear(0);
    req
}

/// A touched region of `len` bytes (every page written, so reads come from real memory).
fn touched_region(len: usize) -> IoBuf {
    let mut region = IoBuf::zeroed(len.max(4096));
    region.as_mut_slice().fill(0xa5);
    region
}

/// The generator spreading accesses and mixing request shapes: the project's one PRNG
/// (`fastrand`), seeded so every run makes the same choices.
fn seeded_rng() -> fastrand::Rng {
    fastrand::Rng::with_seed(0x9e37_79b9_7f4a_7c15)
}

/// A random 4 KiB-aligned offset where `len` bytes fit in a region of `region` bytes.
fn random_offset(rng: &mut fastrand::Rng, region: usize, len: usize) -> usize {
    let slots = (region.saturating_sub(len) / 4096).max(1);
    rng.usize(..slots) * 4096
}

/// The target side: parse requests by their length words, copy a write's payload into the
/// write region, answer each (a read's data from the read region).
fn target(
    listener: &mut dyn pollux::sock::Listener,
    imp: &str,
    stop: &AtomicBool,
    read_region: IoBuf,
    mut sink: IoBuf,
) -> io::Result<()> {
    let mut group = get_impl(imp).expect("impl").create_group()?;
    let start = Instant::now();
    let mut events = Vec::with_capacity(64);
    let key = loop {
        if let Some(s) = listener.accept()? {
            break group.add(s).map_err(|e| e.0)?;
        }
        if start.elapsed() > Duration::from_secs(5) {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "no connection"));
        }
        std::thread::yield_now();
    };
    let read_len = read_region.len();
    let data: Arc<dyn SharedBytes> = Arc::new(read_region);
    let mut rng = seeded_rng();
    // Capsule bytes of the current request still to discard, then payload bytes to store
    // at `sink_at`.
    let mut payload_left = 0usize;
    let mut sink_at = 0usize;
    let mut pool: Vec<WriteRequest> = (0..256).map(|_| WriteRequest::new(0)).collect();
    let mut rx = vec![0u8; 256 * 1024];
    // Bytes of the current request still to skip, and a partial header being gathered.
    let mut skip = 0usize;
    let mut head = [0u8; 8];
    let mut head_len = 0usize;
    while !stop.load(Ordering::Relaxed) {
        events.clear();
        group.poll(64, &mut events);
        let mut answered = false;
        for ev in events.drain(..) {
            match ev {
                SockEvent::WriteDone(_, req) => pool.push(req),
                SockEvent::Readable(_) => {
                    while let Some(s) = group.sock(key) {
                        let n = match s.recv(&mut rx) {
                            Ok(0) => return Ok(()),
                            Ok(n) => n,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(()),
                            Err(e) => return Err(e),
                        };
                        let mut at = 0;
                        while at < n {
                            if skip > 0 {
                                let k = skip.min(n - at);
                                skip -= k;
                                at += k;
                                continue;
                            }
                            if payload_left > 0 {
                                let k = payload_left.min(n - at);
                                copy_bytes(
                                    &mut sink.as_mut_slice()[sink_at..sink_at + k],
                                    &rx[at..at + k],
                                );
                                sink_at += k;
                                payload_left -= k;
                                at += k;
                                continue;
                            }
                            let k = (8 - head_len).min(n - at);
                            head[head_len..head_len + k].copy_from_slice(&rx[at..at + k]);
                            head_len += k;
                            at += k;
                            if head_len < 8 {
                                continue;
                            }
                            head_len = 0;
                            let in_len = u32::from_le_bytes(head[..4].try_into().unwrap()) as usize;
                            let out_len =
                                u32::from_le_bytes(head[4..].try_into().unwrap()) as usize;
                            skip = in_len.clamp(8, CAPSULE) - 8;
                            payload_left = in_len.saturating_sub(CAPSULE).min(sink.len());
                            sink_at = random_offset(&mut rng, sink.len(), payload_left);
                            let mut req = take_req(&mut pool);
                            let hdr = Chunk::inline(&rx[..SMALL_PDU.min(out_len)]).expect("small");
                            req.chunks.push(hdr);
                            if out_len > SMALL_PDU {
                                let len = out_len - SMALL_PDU;
                                req.chunks.push(Chunk::Shared {
                                    mem: data.clone(),
                                    off: random_offset(&mut rng, read_len, len),
                                    len,
                                });
                            }
                            if let Some(s) = group.sock(key) {
                                s.writev_async(req);
                            }
                            answered = true;
                        }
                    }
                }
            }
        }
        if answered {
            if let Some(s) = group.sock(key) {
                match s.flush() {
                    // The host hung up at the end of its run while answers were queued.
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                        ) =>
                    {
                        return Ok(())
                    }
                    r => r?,
                }
            }
        }
    }
    Ok(())
}

/// The host side: keep `qd` requests in flight for `secs`, time each round trip.
fn host(cell: &Cell, port: u16) -> io::Result<Outcome> {
    let imp = get_impl(&cell.imp).expect("impl");
    let mut group = imp.create_group()?;
    let key = group
        .add(imp.connect("127.0.0.1", port, &SockOpts::default())?)
        .map_err(|e| e.0)?;
    let data: Arc<dyn SharedBytes> = Arc::new(IoBuf::zeroed(1 << 20));
    let mut pool: Vec<WriteRequest> = (0..cell.qd * 2 + 8).map(|_| WriteRequest::new(0)).collect();
    let mut events = Vec::with_capacity(64);
    let mut rx = vec![0u8; 256 * 1024];
    // In flight, oldest first: (sent at, answer length). The target answers in order.
    let mut in_flight: VecDeque<(Instant, usize)> = VecDeque::with_capacity(cell.qd);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("histogram");
    let mut rng = seeded_rng();
    let next_is_read = |rng: &mut fastrand::Rng| rng.u64(..100) < cell.read_pct as u64;
    let send = |group: &mut dyn SockGroup,
                pool: &mut Vec<WriteRequest>,
                in_flight: &mut VecDeque<(Instant, usize)>,
                read: bool| {
        let (in_len, out_len) = if read {
            (CAPSULE, SMALL_PDU + cell.size)
        } else {
            (CAPSULE + cell.size, SMALL_PDU)
        };
        let mut capsule = [0u8; CAPSULE];
        capsule[..4].copy_from_slice(&(in_len as u32).to_le_bytes());
        capsule[4..8].copy_from_slice(&(out_len as u32).to_le_bytes());
        let mut req = take_req(pool);
        req.chunks.push(Chunk::inline(&capsule).expect("small"));
        if !read {
            req.chunks.push(Chunk::Shared {
                mem: data.clone(),
                off: 0,
                len: cell.size,
            });
        }
        if let Some(s) = group.sock(key) {
            s.writev_async(req);
        }
        in_flight.push_back((Instant::now(), out_len));
    };
    for _ in 0..cell.qd {
        let read = next_is_read(&mut rng);
        send(&mut *group, &mut pool, &mut in_flight, read);
    }
    if let Some(s) = group.sock(key) {
        s.flush()?;
    }
    let warmup = Duration::from_millis(300);
    let t0 = Instant::now();
    let mut measuring_since: Option<Instant> = None;
    let mut done = 0u64;
    let mut got = 0usize;
    let limit = warmup + Duration::from_secs_f64(cell.secs);
    while t0.elapsed() < limit {
        if measuring_since.is_none() && t0.elapsed() >= warmup {
            measuring_since = Some(Instant::now());
            hist.reset();
            done = 0;
        }
        events.clear();
        group.poll(64, &mut events);
        let mut sent = false;
        for ev in events.drain(..) {
            match ev {
                SockEvent::WriteDone(_, req) => pool.push(req),
                SockEvent::Readable(_) => {
                    while let Some(s) = group.sock(key) {
                        let n = match s.recv(&mut rx) {
                            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                            Ok(n) => n,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) => return Err(e),
                        };
                        got += n;
                        while let Some(&(at, want)) = in_flight.front() {
                            if got < want {
                                break;
                            }
                            got -= want;
                            in_flight.pop_front();
                            let _ = hist.record(at.elapsed().as_nanos() as u64);
                            done += 1;
                            let read = next_is_read(&mut rng);
                            send(&mut *group, &mut pool, &mut in_flight, read);
                            sent = true;
                        }
                    }
                }
            }
        }
        if sent {
            if let Some(s) = group.sock(key) {
                s.flush()?;
            }
        }
    }
    let secs = measuring_since
        .map(|t| t.elapsed().as_secs_f64())
        .unwrap_or(1e-9);
    group.close(key);
    let end = Instant::now();
    while !group.is_empty() && end.elapsed() < Duration::from_secs(2) {
        events.clear();
        group.poll(64, &mut events);
    }
    Ok(Outcome {
        iops: done as f64 / secs,
        hist,
    })
}

fn run(cell: &Cell) -> io::Result<Outcome> {
    if !get_impl(&cell.imp).is_some_and(|i| i.available()) {
        return Err(io::Error::other(format!(
            "sock impl {} unavailable",
            cell.imp
        )));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (port_tx, port_rx) = std::sync::mpsc::channel::<io::Result<u16>>();
    let (stop2, name, tcore, region) = (
        stop.clone(),
        cell.imp.clone(),
        cell.target_core,
        cell.region,
    );
    // The listener is not Send: the target thread creates it and sends its port back.
    let target_thread = std::thread::spawn(move || -> io::Result<()> {
        pin(tcore);
        // Touched before the host may connect, so the measured window never includes it.
        let (read_region, sink) = (touched_region(region), touched_region(region));
        let imp = get_impl(&name).expect("checked");
        let mut listener = match imp
            .listen("127.0.0.1", 0, &SockOpts::default())
            .and_then(|l| Ok((l.local_addr()?.port(), l)))
        {
            Ok((port, l)) => {
                let _ = port_tx.send(Ok(port));
                l
            }
            Err(e) => {
                let _ = port_tx.send(Err(io::Error::new(e.kind(), e.to_string())));
                return Err(e);
            }
        };
        target(&mut *listener, &name, &stop2, read_region, sink)
    });
    let port = port_rx
        .recv()
        .map_err(|_| io::Error::other("target thread ended"))??;
    pin(cell.host_core);
    let out = host(cell, port);
    stop.store(true, Ordering::SeqCst);
    let served = target_thread
        .join()
        .map_err(|_| io::Error::other("target thread panicked"))?;
    served?;
    out
}

fn list<T: std::str::FromStr>(s: &str) -> Vec<T> {
    s.split(',').filter_map(|x| x.trim().parse().ok()).collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo test --all-targets` runs bench binaries without `--bench`: only prove it builds.
    if !args.iter().any(|a| a == "--bench") {
        println!("ceiling: skipped (run it with `cargo bench --bench ceiling`)");
        return;
    }
    let opt = |name: &str, default: &str| -> String {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
            .unwrap_or_else(|| default.to_string())
    };
    let json = args.iter().any(|a| a == "--json");
    let impls: Vec<String> = list(&opt("--impl", "posix,uring"));
    let qds: Vec<usize> = list(&opt("--qd", "1,32,128"));
    let sizes: Vec<usize> = list(&opt("--size", "4096"));
    let read_pcts: Vec<u32> = list(&opt("--read-pct", "100"));
    let secs: f64 = opt("--secs", "3").parse().unwrap_or(3.0);
    let target_core: usize = opt("--target-core", "0").parse().unwrap_or(0);
    let host_core: usize = opt("--host-core", "1").parse().unwrap_or(1);
    let region: usize = opt("--region-mib", "256").parse::<usize>().unwrap_or(256) << 20;
    if !json {
        println!(
            "{:>6} {:>8} {:>5} {:>4} | {:>10} {:>10} {:>9} {:>9} {:>9}",
            "impl", "size", "read%", "qd", "IOPS", "MiB/s", "avg us", "p99 us", "p99.9 us"
        );
    }
    for imp in &impls {
        for &size in &sizes {
            for &read_pct in &read_pcts {
                for &qd in &qds {
                    let cell = Cell {
                        imp: imp.clone(),
                        qd,
                        size,
                        read_pct,
                        secs,
                        target_core,
                        host_core,
                        region,
                    };
                    match run(&cell) {
                        Ok(o) => {
                            let us = |ns: f64| ns / 1000.0;
                            let mib = o.iops * size as f64 / (1024.0 * 1024.0);
                            let (avg, p99, p999) = (
                                us(o.hist.mean()),
                                us(o.hist.value_at_quantile(0.99) as f64),
                                us(o.hist.value_at_quantile(0.999) as f64),
                            );
                            if json {
                                println!(
                                    "{}",
                                    serde_json::json!({"impl": imp, "size": size,
                                        "read_pct": read_pct, "qd": qd, "iops": o.iops,
                                        "mib_s": mib, "avg_us": avg, "p99_us": p99,
                                        "p999_us": p999})
                                );
                            } else {
                                println!(
                                    "{imp:>6} {size:>8} {read_pct:>5} {qd:>4} | {:>10.0} {mib:>10.1} {avg:>9.1} {p99:>9.1} {p999:>9.1}",
                                    o.iops
                                );
                            }
                        }
                        Err(e) => eprintln!("ceiling {cell:?}: {e}"),
                    }
                }
            }
        }
    }
}
