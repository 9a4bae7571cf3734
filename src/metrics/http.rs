//! The metrics endpoint's HTTP/1.x server: `GET /metrics` on its own threads, never a
//! reactor's.
//!
//! One thread accepts; each connection gets a thread of its own, at most
//! `MAX_CONNECTIONS` at once (up to `MAX_REJECTING` more are answered 503, beyond that
//! they are closed at once). A request head is parsed
//! with `httparse`, bounded in size (`MAX_HEAD_BYTES`, else 431) and in time (the whole
//! head within `HEAD_TIMEOUT`, else 408: a slow client cannot hold a thread longer), and
//! every answer closes the connection. Only `GET` and `HEAD` of `/metrics` are served
//! (405 for other methods, 404 for other paths, 400 for what is not HTTP).
//!
//! A scrape gathers a snapshot from the reactors by message (see `gather`) and encodes it
//! on this thread. Scrapes arriving together share one gather, and a snapshot younger than
//! `MIN_GATHER_INTERVAL` is served again, so however many clients scrape, the reactors are
//! asked at most `1 / MIN_GATHER_INTERVAL` times a second.

use super::{encode, gather};
use crate::reactor::AppHandle;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Largest request head (request line and headers) read.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Most headers in a request.
pub const MAX_HEADERS: usize = 64;
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 16;
/// Connections beyond `MAX_CONNECTIONS` answered 503 at once (more are closed at once).
pub const MAX_REJECTING: usize = 16;
/// Input discarded at most after an answer, and for how long, before closing.
const DRAIN_BYTES: usize = 4 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(1);
/// Time a client has to send its whole request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a client has to take the answer.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a scrape waits for the reactors.
pub const GATHER_TIMEOUT: Duration = Duration::from_secs(3);
/// A snapshot younger than this is served again instead of asking the reactors.
pub const MIN_GATHER_INTERVAL: Duration = Duration::from_millis(100);

struct Shared {
    app: AppHandle,
    stop: AtomicBool,
    active: AtomicUsize,
    /// The last encoded snapshot and when it was gathered; locked during a gather so
    /// concurrent scrapes wait for it and share it.
    last: Mutex<Option<(Instant, Arc<String>)>>,
}

/// A running metrics endpoint; dropping it stops accepting (connections being served
/// finish on their own, within their timeouts).
pub struct MetricsServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// The address it listens on (with the port the kernel chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Listens on `addr` and serves `/metrics` of `app` until dropped.
pub fn start(addr: SocketAddr, app: AppHandle) -> io::Result<MetricsServer> {
    let listener = TcpListener::bind(addr)?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared {
        app,
        stop: AtomicBool::new(false),
        active: AtomicUsize::new(0),
        last: Mutex::new(None),
    });
    let s = shared.clone();
    let thread = std::thread::Builder::new()
        .name("pollux-metrics".into())
        .spawn(move || accept_loop(listener, s))?;
    tracing::info!(target: "pollux::metrics", %addr, "Prometheus metrics at http://{addr}/metrics");
    Ok(MetricsServer {
        addr,
        shared,
        thread: Some(thread),
    })
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) => {
                if shared.stop.load(Ordering::SeqCst) {
                    return;
                }
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(target: "pollux::metrics", error = %e, "accept failed");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let active = shared.active.fetch_add(1, Ordering::SeqCst);
        if active >= MAX_CONNECTIONS + MAX_REJECTING {
            // Not even a thread to say no: close at once.
            shared.active.fetch_sub(1, Ordering::SeqCst);
            drop(stream);
            continue;
        }
        let s = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("pollux-metrics-conn".into())
            .spawn(move || {
                if active >= MAX_CONNECTIONS {
                    reject(stream);
                } else {
                    serve(stream, &s);
                }
                s.active.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            shared.active.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Answers 503 to a connection beyond `MAX_CONNECTIONS`, after a short look at its request
/// (so that the close is not a reset that would lose the answer).
fn reject(mut stream: TcpStream) {
    let _ = stream.set_write_timeout(Some(Duration::from_millis(500)));
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut head = [0u8; 1024];
    let _ = stream.read(&mut head);
    let _ = respond(
        &mut stream,
        503,
        "text/plain",
        b"too many connections\n",
        &[],
    );
    close_gracefully(stream);
}

/// Shuts the sending side, then reads and discards what the peer still sends (at most
/// `DRAIN_BYTES` within `DRAIN_TIME`) so unread input does not turn the close into a reset
/// that could destroy the answer before the peer reads it.
fn close_gracefully(mut stream: TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let until = Instant::now() + DRAIN_TIME;
    let mut sink = [0u8; 4096];
    let mut drained = 0usize;
    while drained < DRAIN_BYTES && Instant::now() < until {
        match stream.read(&mut sink) {
            Ok(n) if n > 0 => drained += n,
            _ => break,
        }
    }
}

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// `GET` (`head_only` false) or `HEAD` of `/metrics`.
    Metrics { head_only: bool },
    /// An answer other than the metrics: status and a short reason.
    Error(u16, &'static str),
}

/// Reads a request head from `stream` within `HEAD_TIMEOUT` and `MAX_HEAD_BYTES`.
fn read_request(stream: &mut TcpStream) -> Option<Request> {
    let deadline = Instant::now() + HEAD_TIMEOUT;
    let mut buf = vec![0u8; MAX_HEAD_BYTES];
    let mut len = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Some(Request::Error(408, "request head not received in time"));
        }
        if stream.set_read_timeout(Some(left)).is_err() {
            return None;
        }
        match stream.read(&mut buf[len..]) {
            Ok(0) => return None,
            Ok(n) => len += n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Some(Request::Error(408, "request head not received in time"))
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        }
        match parse_head(&buf[..len]) {
            Some(r) => return Some(r),
            None if len == buf.len() => return Some(Request::Error(431, "request head too large")),
            None => {}
        }
    }
}

/// Decides what a (possibly partial) request head asks for; `None` while incomplete.
pub fn parse_head(bytes: &[u8]) -> Option<Request> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(bytes) {
        Ok(httparse::Status::Partial) => None,
        Err(httparse::Error::TooManyHeaders) => Some(Request::Error(431, "too many headers")),
        Err(_) => Some(Request::Error(400, "not an HTTP/1.x request")),
        Ok(httparse::Status::Complete(_)) => {
            let head_only = match req.method {
                Some("GET") => false,
                Some("HEAD") => true,
                _ => return Some(Request::Error(405, "only GET and HEAD are served")),
            };
            let path = req.path.unwrap_or("");
            let path = path.split_once('?').map_or(path, |(p, _)| p);
            if path == "/metrics" {
                Some(Request::Metrics { head_only })
            } else {
                Some(Request::Error(
                    404,
                    "not found: the metrics are at /metrics",
                ))
            }
        }
    }
}

fn serve(mut stream: TcpStream, shared: &Shared) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let request = match read_request(&mut stream) {
        Some(r) => r,
        None => return,
    };
    match request {
        Request::Metrics { head_only } => match render(shared) {
            Ok(body) => {
                let _ = respond_head_or_body(&mut stream, head_only, &body);
            }
            Err(e) => {
                tracing::warn!(target: "pollux::metrics", error = %e, "scrape failed");
                let text = format!("{e}\n");
                let _ = respond(&mut stream, 503, "text/plain", text.as_bytes(), &[]);
            }
        },
        Request::Error(status, why) => {
            tracing::debug!(target: "pollux::metrics", status, why, "bad request");
            let extra: &[(&str, &str)] = if status == 405 {
                &[("Allow", "GET, HEAD")]
            } else {
                &[]
            };
            let text = format!("{why}\n");
            let _ = respond(&mut stream, status, "text/plain", text.as_bytes(), extra);
        }
    }
    close_gracefully(stream);
}

fn respond_head_or_body(stream: &mut TcpStream, head_only: bool, body: &str) -> io::Result<()> {
    if head_only {
        let head = head(200, encode::CONTENT_TYPE, body.len(), &[]);
        stream.write_all(head.as_bytes())
    } else {
        respond(stream, 200, encode::CONTENT_TYPE, body.as_bytes(), &[])
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

fn head(status: u16, content_type: &str, len: usize, extra: &[(&str, &str)]) -> String {
    let mut h = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\nConnection: close\r\n",
        reason(status)
    );
    for (k, v) in extra {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    h.push_str("\r\n");
    h
}

fn respond(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &[u8],
    extra: &[(&str, &str)],
) -> io::Result<()> {
    let h = head(status, content_type, body.len(), extra);
    stream.write_all(h.as_bytes())?;
    stream.write_all(body)
}

/// The current exposition: the last one if it is fresh enough, else a new gather.
fn render(shared: &Shared) -> Result<Arc<String>, gather::GatherError> {
    let mut last = shared.last.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((at, body)) = &*last {
        if at.elapsed() < MIN_GATHER_INTERVAL {
            return Ok(body.clone());
        }
    }
    let snap = gather::gather(&shared.app, GATHER_TIMEOUT)?;
    for (part, why) in &snap.failed {
        tracing::debug!(target: "pollux::metrics", part, why, "part of the statistics unavailable");
    }
    let body = Arc::new(encode::encode(Arc::new(snap)));
    *last = Some((Instant::now(), body.clone()));
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_judged() {
        assert_eq!(
            parse_head(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(Request::Metrics { head_only: false })
        );
        assert_eq!(
            parse_head(b"HEAD /metrics?x=1 HTTP/1.0\r\n\r\n"),
            Some(Request::Metrics { head_only: true })
        );
        assert_eq!(parse_head(b"GET /metrics HTTP/1.1\r\nHost"), None);
        assert!(matches!(
            parse_head(b"GET / HTTP/1.1\r\n\r\n"),
            Some(Request::Error(404, _))
        ));
        assert!(matches!(
            parse_head(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Some(Request::Error(405, _))
        ));
        assert!(matches!(
            parse_head(b"\x16\x03\x01\x00garbage\r\n\r\n"),
            Some(Request::Error(400, _))
        ));
        let mut many = b"GET /metrics HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert!(matches!(parse_head(&many), Some(Request::Error(431, _))));
    }
}
