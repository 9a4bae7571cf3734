//! Loopback comparison of the posix and uring socket impls in one process: an echo over one
//! TCP connection on 127.0.0.1 whose both ends sit in one group polled by this thread (so the
//! comparison does not depend on how a shared machine schedules two threads). For each message
//! size (72 B, 4 KiB, 128 KiB) and queue depth (1, 32) the client keeps that many messages in
//! flight; the table shows messages per second, MB/s one way, mean round-trip latency, and the
//! uring/posix ratios. Run with `cargo bench --bench sock` (POLLUX_BENCH_SECS sets the time per
//! cell, default 0.5).

use pollux::buf::{Chunk, IoBuf, SharedBytes};
use pollux::sock::{get_impl, SockEvent, SockGroup, SockKey, SockOpts, WriteRequest};
use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Cell {
    msgs_per_sec: f64,
    mb_per_sec: f64,
    mean_rtt_us: f64,
}

fn connect_pair(name: &str, group: &mut dyn SockGroup) -> io::Result<(SockKey, SockKey)> {
    let imp = get_impl(name).expect("impl");
    let mut listener = imp.listen("127.0.0.1", 0, &SockOpts::default())?;
    let port = listener.local_addr()?.port();
    let client = group
        .add(imp.connect("127.0.0.1", port, &SockOpts::default())?)
        .map_err(|e| e.0)?;
    let start = Instant::now();
    let mut events = Vec::new();
    loop {
        if let Some(s) = listener.accept()? {
            let server = group.add(s).map_err(|e| e.0)?;
            return Ok((server, client));
        }
        group.poll(16, &mut events);
        events.clear();
        if start.elapsed() > Duration::from_secs(5) {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "accept timed out"));
        }
    }
}

fn run(name: &str, size: usize, qd: usize, secs: f64) -> io::Result<Cell> {
    let imp = get_impl(name).expect("impl");
    let mut group = imp.create_group()?;
    let (server, client) = connect_pair(name, &mut *group)?;
    let mut pool: Vec<WriteRequest> = (0..qd * 4).map(|_| WriteRequest::new(0)).collect();
    let mut events = Vec::with_capacity(256);
    let mut buf = vec![0u8; 256 * 1024];
    let mut sent_at: VecDeque<Instant> = VecDeque::with_capacity(qd);
    let mut client_rx = 0usize;
    let mut done = 0u64;
    let mut rtt_total = Duration::ZERO;
    // The client sends one shared payload (no copy per message); the server echoes the
    // buffer it received into (no copy either), so the table measures the socket layer.
    let payload: Arc<dyn SharedBytes> = Arc::new(IoBuf::zeroed(size));
    let send_payload = |group: &mut dyn SockGroup, pool: &mut Vec<WriteRequest>| {
        let mut req = pool.pop().unwrap_or_else(|| WriteRequest::new(0));
        req.clear(0);
        req.chunks.push(Chunk::Shared {
            mem: payload.clone(),
            off: 0,
            len: size,
        });
        if let Some(s) = group.sock(client) {
            s.writev_async(req);
        }
    };
    let echo = |group: &mut dyn SockGroup, pool: &mut Vec<WriteRequest>, data: IoBuf| {
        let mut req = pool.pop().unwrap_or_else(|| WriteRequest::new(0));
        req.clear(0);
        req.chunks.push(Chunk::buf(data));
        if let Some(s) = group.sock(server) {
            s.writev_async(req);
        }
    };
    for _ in 0..qd {
        send_payload(&mut *group, &mut pool);
        sent_at.push_back(Instant::now());
    }
    group.sock(client).unwrap().flush()?;
    let start = Instant::now();
    let limit = Duration::from_secs_f64(secs);
    while start.elapsed() < limit {
        events.clear();
        group.poll(64, &mut events);
        let mut flush_server = false;
        let mut flush_client = false;
        for ev in events.drain(..) {
            match ev {
                SockEvent::WriteDone(_, req) => {
                    req.result()
                        .unwrap()
                        .as_ref()
                        .map_err(|e| io::Error::other(e.to_string()))?;
                    pool.push(req);
                }
                SockEvent::Readable(k) if k == server => loop {
                    let s = group.sock(server).unwrap();
                    let mut data = IoBuf::with_len(size.clamp(4096, 256 * 1024));
                    match s.recv(&mut data) {
                        Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                        Ok(n) => {
                            data.set_len(n);
                            echo(&mut *group, &mut pool, data);
                            flush_server = true;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                },
                SockEvent::Readable(_) => loop {
                    let s = group.sock(client).unwrap();
                    match s.recv(&mut buf) {
                        Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                        Ok(n) => {
                            client_rx += n;
                            while client_rx >= size {
                                client_rx -= size;
                                let t = sent_at.pop_front().expect("a message in flight");
                                rtt_total += t.elapsed();
                                done += 1;
                                send_payload(&mut *group, &mut pool);
                                sent_at.push_back(Instant::now());
                                flush_client = true;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                },
            }
        }
        if flush_server {
            group.sock(server).unwrap().flush()?;
        }
        if flush_client {
            group.sock(client).unwrap().flush()?;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    group.close(client);
    group.close(server);
    let end = Instant::now();
    while !group.is_empty() && end.elapsed() < Duration::from_secs(3) {
        events.clear();
        group.poll(64, &mut events);
    }
    Ok(Cell {
        msgs_per_sec: done as f64 / elapsed,
        mb_per_sec: done as f64 * size as f64 / elapsed / 1e6,
        mean_rtt_us: if done > 0 {
            rtt_total.as_secs_f64() * 1e6 / done as f64
        } else {
            f64::NAN
        },
    })
}

fn main() {
    // `cargo test --all-targets` runs bench binaries without `--bench`: only prove it builds.
    if !std::env::args().any(|a| a == "--bench") {
        println!("sock bench: skipped (run it with `cargo bench --bench sock`)");
        return;
    }
    let secs: f64 = std::env::var("POLLUX_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.5);
    println!(
        "sock loopback echo, one connection, both ends polled by one thread, {secs} s per cell"
    );
    println!(
        "{:>8} {:>4} | {:>12} {:>9} {:>9} | {:>12} {:>9} {:>9} | {:>9} {:>9}",
        "size",
        "qd",
        "posix msg/s",
        "MB/s",
        "rtt us",
        "uring msg/s",
        "MB/s",
        "rtt us",
        "thr x",
        "rtt x"
    );
    for size in [72usize, 4096, 128 * 1024] {
        for qd in [1usize, 32] {
            let p = run("posix", size, qd, secs);
            let u = run("uring", size, qd, secs);
            match (p, u) {
                (Ok(p), Ok(u)) => println!(
                    "{:>8} {:>4} | {:>12.0} {:>9.1} {:>9.1} | {:>12.0} {:>9.1} {:>9.1} | {:>9.2} {:>9.2}",
                    size,
                    qd,
                    p.msgs_per_sec,
                    p.mb_per_sec,
                    p.mean_rtt_us,
                    u.msgs_per_sec,
                    u.mb_per_sec,
                    u.mean_rtt_us,
                    u.msgs_per_sec / p.msgs_per_sec,
                    u.mean_rtt_us / p.mean_rtt_us
                ),
                (p, u) => println!(
                    "{size:>8} {qd:>4} | failed: posix {:?} uring {:?}",
                    p.err(),
                    u.err()
                ),
            }
        }
    }
    println!("thr x = uring/posix messages per second; rtt x = uring/posix mean round trip");
}
