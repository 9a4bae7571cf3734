//! The sock conformance suite, run against both impls.
//!
//! Each test is instantiated for `posix` and `uring` by the `conformance!` macro. Plus
//! zero-copy tests that force MSG_ZEROCOPY and SEND_ZC on loopback and a reactor test showing a
//! sleeping reactor wakes on uring completions.
//!
//! Sockets are driven from the test thread (groups work off-reactor too); every wait is bounded
//! by a deadline so a bug fails the test instead of hanging it.

use super::*;
use crate::buf::IoBuf;
use crate::buf::SharedBytes;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(10);

fn imp(name: &str) -> &'static dyn NetImpl {
    get_impl(name).expect("impl registered")
}

/// Polls `group` until `done` says so, collecting events into `state`.
fn drive(
    group: &mut dyn SockGroup,
    what: &str,
    mut step: impl FnMut(&mut dyn SockGroup, &mut Vec<SockEvent>) -> bool,
) {
    let start = Instant::now();
    let mut events = Vec::new();
    loop {
        events.clear();
        group.poll(64, &mut events);
        if step(group, &mut events) {
            return;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        if events.is_empty() {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
}

/// A connected pair in one group: (group, server key, client key).
fn pair_in(
    group: &mut dyn SockGroup,
    name: &str,
    addr: &str,
    client_opts: &SockOpts,
    server_opts: &SockOpts,
) -> (SockKey, SockKey) {
    let i = imp(name);
    let mut listener = i.listen(addr, 0, server_opts).expect("listen");
    let port = listener.local_addr().unwrap().port();
    let client = i.connect(addr, port, client_opts).expect("connect");
    let client = group.add(client).map_err(|e| e.0).expect("add client");
    let mut server = None;
    drive(group, "accept", |g, _| {
        if server.is_none() {
            if let Some(s) = listener.accept().expect("accept") {
                server = Some(g.add(s).map_err(|e| e.0).expect("add server"));
            }
        }
        server.is_some() && g.sock(client).unwrap().is_connected()
    });
    (server.unwrap(), client)
}

fn group_of(name: &str) -> Box<dyn SockGroup> {
    imp(name).create_group().expect("group")
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seed.wrapping_mul(31).wrapping_add(i as u64 * 7) % 251) as u8)
        .collect()
}

fn iobuf_of(bytes: &[u8]) -> IoBuf {
    let mut b = IoBuf::with_len(bytes.len());
    b.copy_from_slice(bytes);
    b
}

/// Collects completions and received bytes per key.
#[derive(Default)]
struct Sink {
    received: HashMap<SockKey, Vec<u8>>,
    eof: HashMap<SockKey, bool>,
    completed: Vec<(SockKey, u64, Result<usize, i32>)>,
    /// Most bytes to read per readable event (0 = drain).
    read_limit: usize,
}

impl Sink {
    fn absorb(&mut self, g: &mut dyn SockGroup, events: &mut Vec<SockEvent>) {
        let mut buf = vec![0u8; 64 * 1024];
        for ev in events.drain(..) {
            match ev {
                SockEvent::WriteDone(k, mut req) => {
                    let r = req.take_result().expect("a completed request has a result");
                    self.completed.push((
                        k,
                        req.token,
                        r.map_err(|e| e.raw_os_error().unwrap_or(-1)),
                    ));
                }
                SockEvent::Readable(k) => {
                    let Some(s) = g.sock(k) else { continue };
                    let mut got = 0;
                    loop {
                        if self.read_limit > 0 && got >= self.read_limit {
                            break;
                        }
                        let want = if self.read_limit > 0 {
                            (self.read_limit - got).min(buf.len())
                        } else {
                            buf.len()
                        };
                        match s.recv(&mut buf[..want]) {
                            Ok(0) => {
                                self.eof.insert(k, true);
                                break;
                            }
                            Ok(n) => {
                                got += n;
                                self.received
                                    .entry(k)
                                    .or_default()
                                    .extend_from_slice(&buf[..n]);
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(_) => {
                                self.eof.insert(k, true);
                                break;
                            }
                        }
                    }
                }
            }
        }
    }

    fn len(&self, k: SockKey) -> usize {
        self.received.get(&k).map_or(0, Vec::len)
    }
}

fn send(g: &mut dyn SockGroup, key: SockKey, token: u64, data: &[u8]) {
    let mut req = WriteRequest::new(token);
    for part in data.chunks(64 * 1024) {
        req.chunks.push(Chunk::buf(iobuf_of(part)));
    }
    let s = g.sock(key).unwrap();
    s.writev_async(req);
    s.flush().unwrap();
}

fn echo(name: &str, addr: &str) {
    let mut g = group_of(name);
    let (server, client) = pair_in(
        &mut *g,
        name,
        addr,
        &SockOpts::default(),
        &SockOpts::default(),
    );
    let local = g.sock(client).unwrap().local_addr().unwrap();
    assert_eq!(local.is_ipv6(), addr.contains(':'));
    assert_eq!(g.sock(client).unwrap().is_ipv6(), addr.contains(':'));
    for (i, len) in [72usize, 4096, 1 << 20].into_iter().enumerate() {
        let msg = pattern(i as u64, len);
        send(&mut *g, client, i as u64, &msg);
        let mut sink = Sink::default();
        let mut echoed = 0;
        drive(&mut *g, "echo", |g, ev| {
            sink.absorb(g, ev);
            let have = sink.len(server);
            if have > echoed {
                let part = sink.received[&server][echoed..have].to_vec();
                send(g, server, 1000 + echoed as u64, &part);
                echoed = have;
            }
            sink.len(client) == len
        });
        assert_eq!(sink.received[&client], msg, "{name}: echo of {len} bytes");
        assert!(sink
            .completed
            .iter()
            .any(|&(k, t, r)| k == client && t == i as u64 && r == Ok(len)));
    }
}

fn many_sockets(name: &str) {
    let mut g = group_of(name);
    let pairs: Vec<(SockKey, SockKey)> = (0..24)
        .map(|_| {
            pair_in(
                &mut *g,
                name,
                "127.0.0.1",
                &SockOpts::default(),
                &SockOpts::default(),
            )
        })
        .collect();
    for (i, &(_, c)) in pairs.iter().enumerate() {
        send(&mut *g, c, i as u64, &pattern(i as u64, 3000 + i));
    }
    let mut sink = Sink::default();
    drive(&mut *g, "all messages", |g, ev| {
        sink.absorb(g, ev);
        pairs
            .iter()
            .enumerate()
            .all(|(i, &(s, _))| sink.len(s) == 3000 + i)
    });
    for (i, &(s, _)) in pairs.iter().enumerate() {
        assert_eq!(sink.received[&s], pattern(i as u64, 3000 + i));
    }
    assert_eq!(sink.completed.len(), pairs.len());
}

/// Many multi-chunk requests (inline header + IoBuf + shared memory) under a small send
/// buffer and a slow reader: the stream arrives intact and in order, and every request
/// completes exactly once, in order.
fn ordering_and_partial_writes(name: &str) {
    let mut g = group_of(name);
    let small = SockOpts {
        send_buf_size: Some(4096),
        recv_buf_size: Some(4096),
        ..Default::default()
    };
    let (server, client) = pair_in(&mut *g, name, "127.0.0.1", &small, &small);
    let shared_src = pattern(99, 256 * 1024);
    let shared: Arc<dyn SharedBytes> = Arc::new(shared_src.clone());
    let mut expect = Vec::new();
    let n_req = 96u64;
    for t in 0..n_req {
        let header = format!("req-{t:04}|");
        let body = pattern(t, 1000 + (t as usize * 997) % 30_000);
        let off = (t as usize * 4099) % 200_000;
        let len = 5000 + t as usize * 13;
        let mut req = WriteRequest::new(t);
        req.chunks.push(Chunk::inline(header.as_bytes()).unwrap());
        req.chunks.push(Chunk::buf(iobuf_of(&body)));
        req.chunks.push(Chunk::Shared {
            mem: shared.clone(),
            off,
            len,
        });
        expect.extend_from_slice(header.as_bytes());
        expect.extend_from_slice(&body);
        expect.extend_from_slice(&shared_src[off..off + len]);
        g.sock(client).unwrap().writev_async(req);
    }
    g.sock(client).unwrap().flush().unwrap();
    let mut sink = Sink {
        read_limit: 8 * 1024,
        ..Default::default()
    };
    drive(&mut *g, "ordered stream", |g, ev| {
        sink.absorb(g, ev);
        sink.len(server) == expect.len() && sink.completed.len() == n_req as usize
    });
    assert!(sink.received[&server] == expect, "{name}: stream differs");
    let tokens: Vec<u64> = sink.completed.iter().map(|c| c.1).collect();
    assert_eq!(
        tokens,
        (0..n_req).collect::<Vec<_>>(),
        "in order, once each"
    );
    assert!(sink.completed.iter().all(|c| c.2.is_ok()));
    // Let stray completions (there must be none) show up.
    for _ in 0..20 {
        let mut ev = Vec::new();
        g.poll(64, &mut ev);
        sink.absorb(&mut *g, &mut ev);
    }
    assert_eq!(
        sink.completed.len(),
        n_req as usize,
        "no duplicate completion"
    );
    assert_eq!(
        Arc::strong_count(&shared),
        1,
        "every shared chunk was released"
    );
}

/// Closing a socket with queued requests completes each exactly once, with an error for
/// the ones that could not be sent.
fn close_with_pending(name: &str) {
    let mut g = group_of(name);
    let small = SockOpts {
        send_buf_size: Some(4096),
        recv_buf_size: Some(4096),
        ..Default::default()
    };
    let (_server, client) = pair_in(&mut *g, name, "127.0.0.1", &small, &small);
    let n_req = 32u64;
    for t in 0..n_req {
        let mut req = WriteRequest::new(t);
        req.chunks.push(Chunk::buf(IoBuf::zeroed(256 * 1024)));
        g.sock(client).unwrap().writev_async(req);
    }
    g.sock(client).unwrap().flush().unwrap();
    let mut sink = Sink::default();
    for _ in 0..10 {
        let mut ev = Vec::new();
        g.poll(64, &mut ev);
        sink.absorb(&mut *g, &mut ev);
    }
    g.close(client);
    // A socket that joins before the closed one's completions are reported must not take its
    // key, or those completions would be reported against the newcomer.
    let listener = imp(name).listen("127.0.0.1", 0, &small).expect("listen");
    let port = listener.local_addr().unwrap().port();
    let newcomer = imp(name)
        .connect("127.0.0.1", port, &small)
        .expect("connect");
    let newcomer = g.add(newcomer).map_err(|e| e.0).expect("add");
    assert_ne!(
        newcomer, client,
        "{name}: a closed socket's key was reused too early"
    );
    drive(&mut *g, "completions after close", |g, ev| {
        sink.absorb(g, ev);
        sink.completed.iter().filter(|c| c.0 == client).count() == n_req as usize
    });
    let mut tokens: Vec<u64> = sink.completed.iter().map(|c| c.1).collect();
    tokens.sort();
    assert_eq!(tokens, (0..n_req).collect::<Vec<_>>(), "each exactly once");
    assert!(
        sink.completed.iter().any(|c| c.2.is_err()),
        "{name}: pending requests complete with an error"
    );
    assert!(g.sock(client).is_none());
}

/// The peer resets the connection while we write: errors, no SIGPIPE, no panic.
fn peer_reset_mid_write(name: &str) {
    let mut g = group_of(name);
    let (server, client) = pair_in(
        &mut *g,
        name,
        "127.0.0.1",
        &SockOpts::default(),
        &SockOpts::default(),
    );
    let fd = g.sock(server).unwrap().fd();
    crate::sys::socket::set_linger_abort(fd).unwrap();
    let n_req = 64u64;
    for t in 0..n_req {
        let mut req = WriteRequest::new(t);
        req.chunks.push(Chunk::buf(IoBuf::zeroed(128 * 1024)));
        g.sock(client).unwrap().writev_async(req);
    }
    let _ = g.sock(client).unwrap().flush();
    let mut sink = Sink::default();
    let mut ev = Vec::new();
    g.poll(64, &mut ev);
    sink.absorb(&mut *g, &mut ev);
    g.close(server); // RST: linger 0 with unread data
    let mut queued = n_req;
    drive(&mut *g, "writes to fail", |g, ev| {
        sink.absorb(g, ev);
        let failed = sink.completed.iter().any(|c| c.0 == client && c.2.is_err());
        if !failed && queued < 4096 {
            // Keep writing after the reset: requests must fail, not raise SIGPIPE.
            let s = g.sock(client).unwrap();
            let _ = s.writev(&[io::IoSlice::new(b"late")]);
            let mut req = WriteRequest::new(queued);
            req.chunks.push(Chunk::buf(IoBuf::zeroed(64 * 1024)));
            s.writev_async(req);
            let _ = s.flush();
            queued += 1;
        }
        failed && sink.completed.iter().filter(|c| c.0 == client).count() == queued as usize
    });
    let mut tokens: Vec<u64> = sink
        .completed
        .iter()
        .filter(|c| c.0 == client)
        .map(|c| c.1)
        .collect();
    tokens.sort();
    assert_eq!(tokens, (0..queued).collect::<Vec<_>>(), "each exactly once");
    let s = g.sock(client).unwrap();
    let mut buf = [0u8; 16];
    let r = s.recv(&mut buf);
    assert!(
        matches!(r, Ok(0)) || r.is_err(),
        "reads report the reset: {r:?}"
    );
}

/// Connect returns at once; the connection completes later. A refused connect reports its
/// error through `connect_status` without blocking.
fn nonblocking_connect(name: &str) {
    let i = imp(name);
    let mut listener = i.listen("127.0.0.1", 0, &SockOpts::default()).unwrap();
    let port = listener.local_addr().unwrap().port();
    let t = Instant::now();
    let mut c = i.connect("127.0.0.1", port, &SockOpts::default()).unwrap();
    assert!(t.elapsed() < Duration::from_millis(500));
    // Writes may be queued while connecting.
    let mut req = WriteRequest::new(7);
    req.chunks.push(Chunk::inline(b"hello").unwrap());
    c.writev_async(req);
    let mut done = Vec::new();
    let mut accepted = None;
    let start = Instant::now();
    while done.is_empty() || accepted.is_none() {
        c.take_completions(&mut done);
        if accepted.is_none() {
            accepted = listener.accept().unwrap();
        }
        assert!(start.elapsed() < DEADLINE, "connect did not complete");
    }
    assert!(c.is_connected());
    assert_eq!(done[0].token, 7);
    let mut a = accepted.unwrap();
    let mut buf = [0u8; 5];
    let start = Instant::now();
    let n = loop {
        match a.recv(&mut buf) {
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
        assert!(start.elapsed() < DEADLINE);
    };
    assert_eq!(&buf[..n], b"hello");
    // A refused connection.
    drop(listener);
    let mut c = i.connect("127.0.0.1", port, &SockOpts::default()).unwrap();
    let start = Instant::now();
    let err = loop {
        match c.connect_status() {
            Ok(false) => {}
            Ok(true) => panic!("connected to a closed port"),
            Err(e) => break e,
        }
        assert!(start.elapsed() < DEADLINE);
    };
    assert_eq!(err.raw_os_error(), Some(libc::ECONNREFUSED));
}

/// A connect in progress joins a group; the group completes it and flushes queued writes.
fn connecting_socket_in_group(name: &str) {
    let i = imp(name);
    let mut g = group_of(name);
    let mut listener = i.listen("::1", 0, &SockOpts::default()).unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut c = i.connect("[::1]", port, &SockOpts::default()).unwrap();
    let mut req = WriteRequest::new(1);
    req.chunks.push(Chunk::inline(b"early").unwrap());
    c.writev_async(req);
    let client = g.add(c).map_err(|e| e.0).unwrap();
    let mut server = None;
    let mut sink = Sink::default();
    drive(&mut *g, "early bytes", |g, ev| {
        sink.absorb(g, ev);
        if server.is_none() {
            if let Some(s) = listener.accept().unwrap() {
                server = Some(g.add(s).map_err(|e| e.0).unwrap());
            }
        }
        server.is_some_and(|s| sink.len(s) == 5)
    });
    assert_eq!(sink.received[&server.unwrap()], b"early");
    assert_eq!(sink.completed, vec![(client, 1, Ok(5))]);
}

/// A reader that stops reading while 8 MiB arrive (more than uring's buffer ring holds)
/// still gets every byte, in order, once it resumes.
fn stalled_reader_gets_everything(name: &str) {
    let mut g = group_of(name);
    let (server, client) = pair_in(
        &mut *g,
        name,
        "127.0.0.1",
        &SockOpts::default(),
        &SockOpts::default(),
    );
    let data = pattern(11, 8 << 20);
    send(&mut *g, client, 1, &data);
    let mut sink = Sink::default();
    for _ in 0..200 {
        let mut ev = Vec::new();
        g.poll(64, &mut ev);
        // Drop readiness on the floor: nobody reads yet.
        ev.retain(|e| matches!(e, SockEvent::WriteDone(..)));
        sink.absorb(&mut *g, &mut ev);
    }
    // Readiness was reported while we ignored it; read it all now.
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = Vec::new();
    drive(&mut *g, "all bytes after the stall", |g, ev| {
        ev.retain(|e| matches!(e, SockEvent::WriteDone(..)));
        sink.absorb(g, ev);
        let s = g.sock(server).unwrap();
        loop {
            match s.recv(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(_) => break,
            }
        }
        got.len() == data.len()
    });
    assert!(got == data, "{name}: bytes intact after the stall");
    drive(&mut *g, "completion", |g, ev| {
        sink.absorb(g, ev);
        !sink.completed.is_empty()
    });
    assert_eq!(sink.completed, vec![(client, 1, Ok(data.len()))]);
}

macro_rules! conformance {
    ($($impl_mod:ident => $name:literal),*) => {$(
        mod $impl_mod {
            #[test]
            fn echo_small_and_large_ipv4() {
                super::echo($name, "127.0.0.1");
            }
            #[test]
            fn echo_ipv6_loopback() {
                super::echo($name, "[::1]");
            }
            #[test]
            fn many_sockets_in_one_group() {
                super::many_sockets($name);
            }
            #[test]
            fn writev_async_order_partial_writes_exactly_once() {
                super::ordering_and_partial_writes($name);
            }
            #[test]
            fn close_with_pending_requests_completes_them_with_errors() {
                super::close_with_pending($name);
            }
            #[test]
            fn peer_reset_mid_write_is_an_error_not_a_signal() {
                super::peer_reset_mid_write($name);
            }
            #[test]
            fn nonblocking_connect_and_refused_connect() {
                super::nonblocking_connect($name);
            }
            #[test]
            fn stalled_reader_gets_everything() {
                super::stalled_reader_gets_everything($name);
            }
            #[test]
            fn connecting_socket_joins_a_group() {
                super::connecting_socket_in_group($name);
            }
        }
    )*};
}

conformance!(posix => "posix", uring => "uring");

/// Zero-copy forced on loopback: every request completes once, in order, only after the
/// kernel's zero-copy completion, and its buffers are released exactly once.
fn zerocopy_releases_buffers_once(name: &str, addr: &str) {
    let mut g = group_of(name);
    let zc = SockOpts {
        zerocopy: Some(true),
        zerocopy_on_loopback: true,
        zerocopy_threshold: Some(0),
        ..Default::default()
    };
    let (server, client) = pair_in(&mut *g, name, addr, &zc, &SockOpts::default());
    let mem_src = pattern(5, 1 << 20);
    let mem: Arc<dyn SharedBytes> = Arc::new(mem_src.clone());
    let n_req = 64u64;
    let mut expect = Vec::new();
    for t in 0..n_req {
        let off = (t as usize * 12_345) % (900 << 10);
        let len = 16 * 1024;
        let mut req = WriteRequest::new(t);
        req.chunks.push(Chunk::inline(&t.to_le_bytes()).unwrap());
        req.chunks.push(Chunk::Shared {
            mem: mem.clone(),
            off,
            len,
        });
        expect.extend_from_slice(&t.to_le_bytes());
        expect.extend_from_slice(&mem_src[off..off + len]);
        g.sock(client).unwrap().writev_async(req);
    }
    assert_eq!(Arc::strong_count(&mem), 1 + n_req as usize);
    g.sock(client).unwrap().flush().unwrap();
    let mut completed = Vec::new();
    let mut sink = Sink::default();
    drive(&mut *g, "zero-copy completions", |g, ev| {
        for e in ev.drain(..) {
            match e {
                SockEvent::WriteDone(k, req) => {
                    assert_eq!(k, client);
                    assert!(req.result().unwrap().is_ok());
                    completed.push(req.token);
                    drop(req); // releases its chunks
                }
                other => sink.absorb(g, &mut vec![other]),
            }
        }
        completed.len() == n_req as usize && sink.len(server) == expect.len()
    });
    assert_eq!(completed, (0..n_req).collect::<Vec<_>>());
    assert!(sink.received[&server] == expect);
    assert_eq!(Arc::strong_count(&mem), 1, "every buffer released once");
    let stats = g.sock(client).unwrap().stats();
    assert!(
        stats.zerocopy_sent > 0,
        "{name}: zero-copy was used: {stats:?}"
    );
    assert_eq!(stats.zerocopy_completed, stats.zerocopy_sent, "{stats:?}");
    if name == "posix" {
        // Loopback cannot transmit from user pages: the kernel reports copies.
        assert!(stats.zerocopy_copied > 0, "{stats:?}");
    }
}

#[test]
fn posix_msg_zerocopy_on_loopback() {
    zerocopy_releases_buffers_once("posix", "127.0.0.1");
}

#[test]
fn posix_msg_zerocopy_on_ipv6_loopback() {
    // IPv6 sockets report completions with the IPv6 error-queue origin.
    zerocopy_releases_buffers_once("posix", "::1");
}

#[test]
fn uring_send_zc_on_loopback() {
    zerocopy_releases_buffers_once("uring", "127.0.0.1");
}

#[test]
fn uring_send_zc_on_ipv6_loopback() {
    zerocopy_releases_buffers_once("uring", "[::1]");
}

#[test]
fn recv_pipe_resize_keeps_data() {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let mut p = crate::sock::posix::RecvPipe::new(1024);
    let (rx, mut tx) = std::os::unix::net::UnixStream::pair().unwrap();
    rx.set_nonblocking(true).unwrap();
    let data = pattern(3, 1500);
    tx.write_all(&data[..700]).unwrap();
    assert_eq!(p.fill(rx.as_raw_fd()).unwrap(), 700);
    let mut out = vec![0u8; 600];
    assert_eq!(p.read(&mut out), 600);
    tx.write_all(&data[700..]).unwrap();
    assert_eq!(p.fill(rx.as_raw_fd()).unwrap(), 800);
    // The pipe now wraps around; grow and shrink it without losing bytes.
    p.resize(4096);
    p.resize(10);
    let mut rest = vec![0u8; 2000];
    let n = p.read(&mut rest);
    let _ = p.fill(rx.as_raw_fd());
    let m = p.read(&mut rest[n..]);
    assert_eq!(&rest[..n + m], &data[600..]);
}

/// With DEFER_TASKRUN the ring fd does not become readable when a completion is pending,
/// which is why the uring impl wakes reactors through a registered eventfd.
#[test]
fn ring_fd_does_not_wake_but_eventfd_does() {
    use io_uring::{opcode, types, IoUring};
    use std::os::fd::AsRawFd;
    let ring: IoUring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_taskrun_flag()
        .build(8)
        .unwrap();
    let efd = crate::sys::EventFd::new().unwrap();
    ring.submitter().register_eventfd(efd.as_raw_fd()).unwrap();
    // A blocking receive side: io_uring answers a recv on an O_NONBLOCK socket with
    // -EAGAIN at once instead of waiting for data (the completion then races the write).
    let (rx, mut tx) = std::os::unix::net::UnixStream::pair().unwrap();
    let mut buf = [0u8; 8];
    let e = opcode::Recv::new(types::Fd(rx.as_raw_fd()), buf.as_mut_ptr(), 8)
        .build()
        .user_data(1);
    // SAFETY: buf outlives the request (we wait for its completion below).
    unsafe { ring.submission_shared().push(&e).unwrap() };
    ring.submit().unwrap();
    std::io::Write::write_all(&mut tx, b"x").unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let readable = crate::sys::socket::poll_readable;
    let ring_readable = readable(ring.as_raw_fd());
    // A sleeper on the eventfd must wake: wait for it (bounded), as a reactor's epoll does.
    let mut pfd = libc::pollfd {
        fd: efd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd; the wait is bounded by 2 s.
    let eventfd_readable = unsafe { libc::poll(&mut pfd, 1, 2000) } > 0;
    assert!(
        eventfd_readable,
        "the registered eventfd signals pending work"
    );
    ring.submitter().submit_and_wait(1).unwrap();
    // SAFETY: the completion queue is only used from this thread.
    assert_eq!(unsafe { ring.completion_shared() }.count(), 1);
    drop(ring);
    if ring_readable {
        eprintln!("note: this kernel makes the ring fd readable for DEFER_TASKRUN work");
    }
}

/// A reactor sleeping in its idle strategy wakes when a uring group has a completion.
#[test]
fn sleeping_reactor_wakes_on_uring_completion() {
    use crate::reactor::{self, IdleStrategy, PollStatus, ReactorConfig};
    use std::sync::mpsc;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let app = reactor::start(
        ReactorConfig {
            cores: vec![core_affinity::get_core_ids()
                .and_then(|c| c.first().map(|c| c.id as u32))
                .unwrap_or(0)],
            idle: IdleStrategy::SpinThenSleep(Duration::from_micros(50)),
            pin: false,
        },
        move || {
            let mut group = imp("uring").create_group().unwrap();
            let c = imp("uring")
                .connect("127.0.0.1", port, &SockOpts::default())
                .unwrap();
            let key = group.add(c).map_err(|e| e.0).unwrap();
            let mut events = Vec::new();
            let mut got = Vec::new();
            reactor::register_poller("sock-test", 0, move || {
                events.clear();
                group.poll(16, &mut events);
                for ev in events.drain(..) {
                    if let SockEvent::Readable(k) = ev {
                        let mut buf = [0u8; 64];
                        while let Ok(n) = group.sock(k).unwrap().recv(&mut buf) {
                            if n == 0 {
                                break;
                            }
                            got.extend_from_slice(&buf[..n]);
                        }
                    }
                }
                if got.len() >= 5 && key == 0 {
                    let _ = tx.send(std::mem::take(&mut got));
                }
                PollStatus::Idle
            });
        },
    )
    .unwrap();
    let (mut peer, _) = listener.accept().unwrap();
    // Let the reactor fall asleep, then send.
    std::thread::sleep(Duration::from_millis(200));
    let before = Instant::now();
    std::io::Write::write_all(&mut peer, b"wake!").unwrap();
    let got = rx.recv_timeout(Duration::from_secs(5));
    let waited = before.elapsed();
    app.shutdown();
    app.wait();
    assert_eq!(got.expect("the reactor woke and read").as_slice(), b"wake!");
    assert!(waited < Duration::from_secs(5));
}

thread_local! {
    static ECHO_GROUP: std::cell::RefCell<Option<Box<dyn SockGroup>>> =
        const { std::cell::RefCell::new(None) };
}

/// The consumers' shape: an acceptor poller on the main reactor accepts, moves each socket
/// by message to the other reactor, whose poll group echoes. Both reactors sleep when idle,
/// so this also checks that listeners and groups wake their reactors.
fn accept_on_one_reactor_echo_on_another(name: &'static str) {
    use crate::reactor::{self, IdleStrategy, PollStatus, ReactorConfig};
    use std::io::{Read, Write};
    use std::sync::mpsc;
    let (port_tx, port_rx) = mpsc::channel::<u16>();
    let app = reactor::start(
        ReactorConfig {
            cores: vec![0, 1],
            idle: IdleStrategy::SpinThenSleep(Duration::from_micros(50)),
            pin: false,
        },
        move || {
            reactor::send_to(1, move || {
                let group = imp(name).create_group().expect("group on reactor 1");
                ECHO_GROUP.with(|g| *g.borrow_mut() = Some(group));
                let mut events = Vec::new();
                let mut buf = vec![0u8; 16 * 1024];
                reactor::register_poller("echo-group", 0, move || {
                    ECHO_GROUP.with(|g| {
                        let mut g = g.borrow_mut();
                        let g = g.as_mut().expect("group");
                        events.clear();
                        g.poll(32, &mut events);
                        let mut work = events.len();
                        let mut closed = Vec::new();
                        for ev in events.drain(..) {
                            let SockEvent::Readable(k) = ev else { continue };
                            let s = g.sock(k).expect("grouped");
                            loop {
                                match s.recv(&mut buf) {
                                    Ok(0) => {
                                        closed.push(k);
                                        break;
                                    }
                                    Ok(n) => {
                                        work += 1;
                                        let mut req = WriteRequest::new(0);
                                        req.chunks.push(Chunk::buf(iobuf_of(&buf[..n])));
                                        s.writev_async(req);
                                    }
                                    Err(_) => break,
                                }
                            }
                            let _ = s.flush();
                        }
                        for k in closed {
                            g.close(k);
                        }
                        PollStatus::from_work(work)
                    })
                });
            });
            let mut listener = imp(name)
                .listen("127.0.0.1", 0, &SockOpts::default())
                .expect("listen");
            port_tx.send(listener.local_addr().unwrap().port()).unwrap();
            let wake = listener
                .wake_fd()
                .map(|fd| reactor::add_wake_fd(fd).expect("wake fd"));
            reactor::register_poller("acceptor", 0, move || {
                let _keep = &wake;
                let mut n = 0;
                while let Ok(Some(sock)) = listener.accept() {
                    n += 1;
                    // A not-yet-grouped socket is Send: hand it to reactor 1.
                    reactor::send_to(1, move || {
                        ECHO_GROUP.with(|g| {
                            let mut g = g.borrow_mut();
                            g.as_mut().unwrap().add(sock).map_err(|e| e.0).unwrap();
                        })
                    });
                }
                PollStatus::from_work(n)
            });
        },
    )
    .expect("start reactors");
    let port = port_rx.recv_timeout(DEADLINE).expect("listening");
    let mut clients: Vec<std::net::TcpStream> = (0..4)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.set_read_timeout(Some(DEADLINE)).unwrap();
        // Let the reactors fall asleep between rounds.
        std::thread::sleep(Duration::from_millis(30));
        let msg = pattern(i as u64, 100_000);
        c.write_all(&msg).unwrap();
        let mut back = vec![0u8; msg.len()];
        c.read_exact(&mut back).unwrap();
        assert!(back == msg, "{name}: echo through reactor 1");
    }
    drop(clients);
    std::thread::sleep(Duration::from_millis(50));
    app.shutdown();
    app.wait();
}

#[test]
fn posix_accept_and_group_on_different_reactors() {
    accept_on_one_reactor_echo_on_another("posix");
}

#[test]
fn uring_accept_and_group_on_different_reactors() {
    accept_on_one_reactor_echo_on_another("uring");
}

/// The uring group's syscall budget: a flush submits at once (one io_uring_enter), and polls
/// with nothing queued and no kernel work make no syscall at all.
#[test]
fn uring_flush_enters_once_and_idle_polls_never() {
    use super::uring::ring_stats;
    let mut g = group_of("uring");
    let (server, client) = pair_in(
        &mut *g,
        "uring",
        "127.0.0.1",
        &SockOpts::default(),
        &SockOpts::default(),
    );
    let mut sink = Sink::default();
    let msg = pattern(3, 1000);
    let settle = |g: &mut dyn SockGroup, sink: &mut Sink, token: u64, want: usize| {
        drive(g, "echo settles", |g, ev| {
            sink.absorb(g, ev);
            sink.len(server) >= want && sink.completed.iter().any(|c| c.1 == token)
        });
    };
    send(&mut *g, client, 1, &msg);
    settle(&mut *g, &mut sink, 1, msg.len());
    // Whatever the kernel still had to say (ACK-driven task work) is done after a short wait.
    std::thread::sleep(Duration::from_millis(20));
    let mut events = Vec::new();
    g.poll(64, &mut events);
    assert!(events.is_empty());
    let idle = ring_stats();
    for _ in 0..1000 {
        g.poll(64, &mut events);
    }
    assert!(events.is_empty());
    assert_eq!(
        ring_stats().enters,
        idle.enters,
        "idle polls made no io_uring_enter"
    );

    // Three requests queued and flushed: the first flush enters once; the others find that
    // send in flight (its completion not reaped yet) and enter only if the kernel has work.
    for token in 2..5 {
        let mut req = WriteRequest::new(token);
        req.chunks.push(Chunk::buf(iobuf_of(&msg)));
        g.sock(client).unwrap().writev_async(req);
        g.sock(client).unwrap().flush().unwrap();
    }
    let flushed = ring_stats().enters - idle.enters;
    assert!(
        (1..=3).contains(&flushed),
        "flushes entered {flushed} times"
    );
    settle(&mut *g, &mut sink, 4, 4 * msg.len());
    assert_eq!(sink.received[&server].len(), 4 * msg.len());
}

/// A reactor that went to sleep with a uring group on it makes no ring or eventfd syscalls
/// while it stays idle: the eventfd was drained once when the group went idle.
#[test]
fn idle_uring_reactor_makes_no_ring_syscalls() {
    use crate::reactor::{self, IdleStrategy, PollStatus, ReactorConfig};
    use std::sync::mpsc;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel::<usize>();
    let app = reactor::start(
        ReactorConfig {
            cores: vec![core_affinity::get_core_ids()
                .and_then(|c| c.first().map(|c| c.id as u32))
                .unwrap_or(0)],
            idle: IdleStrategy::SpinThenSleep(Duration::from_micros(50)),
            pin: false,
        },
        move || {
            let mut group = imp("uring").create_group().unwrap();
            let c = imp("uring")
                .connect("127.0.0.1", port, &SockOpts::default())
                .unwrap();
            group.add(c).map_err(|e| e.0).unwrap();
            let mut events = Vec::new();
            reactor::register_poller("sock-test", 0, move || {
                events.clear();
                group.poll(16, &mut events);
                let mut got = 0;
                for ev in events.drain(..) {
                    if let SockEvent::Readable(k) = ev {
                        let mut buf = [0u8; 64];
                        while let Ok(n) = group.sock(k).unwrap().recv(&mut buf) {
                            if n == 0 {
                                break;
                            }
                            got += n;
                        }
                    }
                }
                if got > 0 {
                    let _ = tx.send(got);
                }
                PollStatus::from_work(got)
            });
        },
    )
    .unwrap();
    let (mut peer, _) = listener.accept().unwrap();
    std::io::Write::write_all(&mut peer, b"hello").unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)).ok(), Some(5));
    let sample = || {
        let (stx, srx) = mpsc::channel();
        app.send_to(app.main_core(), move || {
            let _ = stx.send(super::uring::ring_stats());
        })
        .unwrap();
        srx.recv_timeout(Duration::from_secs(5)).expect("stats")
    };
    // Let the reactor go idle and fall asleep.
    std::thread::sleep(Duration::from_millis(100));
    let before = sample();
    std::thread::sleep(Duration::from_millis(200));
    let after = sample();
    app.shutdown();
    app.wait();
    assert!(
        before.eventfd_drains >= 1,
        "the eventfd was drained on going idle"
    );
    assert_eq!(after.enters, before.enters, "no io_uring_enter while idle");
    assert_eq!(
        after.eventfd_drains, before.eventfd_drains,
        "no eventfd read while idle"
    );
}
