//! The JSON-RPC 2.0 server: a Unix stream socket served by one active poller on the main
//! reactor, never blocking.
//!
//! The listener, every client and a doorbell eventfd sit in the server's own epoll set, which
//! is itself one wake fd of the reactor: an idle reactor sleeps until a client connects,
//! writes, drains its answers, or an answer arrives from another thread, and each poll costs
//! one `epoll_wait(0)`. Framing is what SPDK's rpc.py speaks: the input is a stream of JSON
//! values with no delimiter (pretty-printed, back-to-back, split across writes, batch
//! arrays); each answer is compact JSON followed by `\n`. Every client is bounded (request
//! size, requests in flight, buffered answers); a client that stalls or vanishes only loses
//! its own connection. Methods answer through a `Responder`, possibly later and from any
//! thread: answers travel back through a lock-free queue that the poller drains.
//! `<path>.lock` (flock) keeps a second instance off the same path; a stale socket file left
//! by a dead instance is replaced.

mod client;
mod framing;

pub use framing::{frame_requests, validate, FrameEnd, FrameGate, Framed, Request};

use super::Responder;
use crate::reactor::{self, PollStatus, WakeSource};
use crate::sys::epoll::{Epoll, HANGUP, READABLE, WRITABLE};
use crate::sys::file::try_lock_exclusive;
use crate::sys::EventFd;
use client::{response_value, Answer, AnswerQueue, Batch, Call, Client, Reply, Slot};
use crossbeam_queue::SegQueue;
use framing::invalid_request;
use serde_json::Value;
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest request (one JSON value, batch included) a client may send.
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;
/// Requests of one client being executed at once; parsing pauses beyond it.
pub const MAX_IN_FLIGHT: usize = 256;
/// Largest batch (it is admitted whole, so it is capped on its own).
pub const MAX_BATCH: usize = 256;
/// Answers buffered for a client that does not read; parsing pauses beyond it.
pub const MAX_BUFFERED_ANSWERS_BYTES: usize = 1024 * 1024;
/// Connected clients at once; further connections are accepted and closed at once.
pub const MAX_CLIENTS: usize = 1024;
/// While the reactor is busy with other pollers, the server looks at its sockets at most
/// this often (an idle reactor that wakes for a client is served at once).
const POLL_INTERVAL: Duration = Duration::from_micros(50);
/// Bytes read from one client per poll, so one chatty client cannot starve the others.
const READ_CHUNK: usize = 64 * 1024;

const LISTENER_TOKEN: u64 = 0;
const DOORBELL_TOKEN: u64 = 1;
const FIRST_CLIENT_TOKEN: u64 = 2;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("RPC socket {path} is in use by another process (lock {lock} is held); choose another path with -r")]
    InUse { path: String, lock: String },
    #[error("RPC socket {path}: {what}: {err}")]
    Io {
        path: String,
        what: &'static str,
        err: io::Error,
    },
}

struct Server {
    path: PathBuf,
    lock_path: PathBuf,
    listener: Option<UnixListener>,
    _lock: File,
    epoll: Epoll,
    answers: Arc<AnswerQueue>,
    _wake: Option<WakeSource>,
    clients: HashMap<u64, Client>,
    next_token: u64,
    next_batch: u64,
    /// Clients whose buffered input must be parsed again (back-pressure was lifted).
    reparse: VecDeque<u64>,
    last_poll: Instant,
}

impl Server {
    fn accept_all(&mut self) -> usize {
        let Some(listener) = &self.listener else {
            return 0;
        };
        let mut accepted = 0;
        for _ in 0..64 {
            match listener.accept() {
                Ok((stream, _)) => {
                    accepted += 1;
                    if self.clients.len() >= MAX_CLIENTS {
                        tracing::warn!(
                            max = MAX_CLIENTS,
                            "too many RPC clients; closing a new one"
                        );
                        continue;
                    }
                    if let Err(e) = stream.set_nonblocking(true) {
                        tracing::warn!(error = %e, "RPC client setup failed");
                        continue;
                    }
                    let token = self.next_token;
                    self.next_token += 1;
                    if let Err(e) = self.epoll.add(stream.as_raw_fd(), token, READABLE) {
                        tracing::warn!(error = %e, "RPC client setup failed");
                        continue;
                    }
                    tracing::debug!(client = token, "RPC client connected");
                    self.clients.insert(token, Client::new(stream));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!(error = %e, "RPC accept failed");
                    break;
                }
            }
        }
        accepted
    }

    /// Reads one chunk a client sent and parses the complete requests in it. The epoll set
    /// is level-triggered, so a client with more to say comes back at the next poll.
    fn read_client(&mut self, token: u64, calls: &mut Vec<Call>) -> usize {
        let Some(client) = self.clients.get_mut(&token) else {
            return 0;
        };
        if !client.wants_input() {
            return 0;
        }
        let mut chunk = vec![0u8; READ_CHUNK];
        loop {
            match (&client.stream).read(&mut chunk) {
                Ok(0) => {
                    client.read_closed = true;
                    // The gate may have skipped the last bytes: a malformed request gets
                    // its parse error answer even when the client half-closes right after.
                    if !client.input.is_empty() {
                        self.parse_client(token, calls);
                    }
                    return 0;
                }
                Ok(n) => {
                    client.input.extend_from_slice(&chunk[..n]);
                    if client.gate.should_parse(&client.input) {
                        self.parse_client(token, calls);
                    }
                    return n;
                }
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock => return 0,
                    io::ErrorKind::Interrupted => {}
                    _ => {
                        tracing::debug!(client = token, error = %e, "RPC client read failed");
                        client.dead = true;
                        return 0;
                    }
                },
            }
        }
    }

    /// Parses every complete JSON value at the head of a client's input (while it is not
    /// saturated) into calls, answering framing and validation errors directly.
    fn parse_client(&mut self, token: u64, calls: &mut Vec<Call>) {
        let Some(client) = self.clients.get_mut(&token) else {
            return;
        };
        if client.fatal_error.is_some() || client.close_after_flush || client.dead {
            return;
        }
        let budget = if client.pending_output() < MAX_BUFFERED_ANSWERS_BYTES {
            MAX_IN_FLIGHT.saturating_sub(client.slots.len())
        } else {
            0
        };
        let Framed {
            values,
            consumed,
            end,
        } = frame_requests(&client.input, budget);
        client.stalled = end == FrameEnd::Limit;
        client.input.drain(..consumed);
        client.gate.parsed(client.input.len());
        let fatal = match end {
            FrameEnd::Fatal(e) => Some(e),
            _ => None,
        };
        for value in values {
            self.admit(token, value, calls);
        }
        if let Some(error) = fatal {
            if let Some(client) = self.clients.get_mut(&token) {
                tracing::debug!(client = token, error = %error, "closing RPC client");
                client.input.clear();
                client.fatal_error = Some(error);
            }
        }
    }

    /// Turns one top-level JSON value (request or batch) into calls.
    fn admit(&mut self, token: u64, value: Value, calls: &mut Vec<Call>) {
        let batch_id = self.next_batch;
        let Some(client) = self.clients.get_mut(&token) else {
            return;
        };
        match value {
            Value::Array(items) => {
                if items.is_empty() {
                    return client.queue_response(Value::Null, Err(invalid_request("empty batch")));
                }
                if items.len() > MAX_BATCH {
                    return client.queue_response(
                        Value::Null,
                        Err(invalid_request(&format!(
                            "a batch may hold at most {MAX_BATCH} requests"
                        ))),
                    );
                }
                self.next_batch += 1;
                let mut batch = Batch {
                    answers: vec![None; items.len()],
                    remaining: 0,
                };
                for (index, item) in items.into_iter().enumerate() {
                    match validate(item) {
                        Ok(req) => {
                            let slot = client.next_slot;
                            client.next_slot += 1;
                            client.slots.insert(
                                slot,
                                Slot::InBatch {
                                    batch: batch_id,
                                    index,
                                    id: req.id,
                                    notification: req.notification,
                                },
                            );
                            batch.remaining += 1;
                            calls.push(Call {
                                client: token,
                                slot,
                                method: req.method,
                                params: req.params,
                            });
                        }
                        Err((id, e)) => batch.answers[index] = Some(response_value(id, Err(e))),
                    }
                }
                if batch.remaining == 0 {
                    let answers: Vec<Value> = batch.answers.into_iter().flatten().collect();
                    client.queue_value(&Value::Array(answers));
                } else {
                    client.batches.insert(batch_id, batch);
                }
            }
            value => match validate(value) {
                Ok(req) => {
                    let slot = client.next_slot;
                    client.next_slot += 1;
                    client.slots.insert(
                        slot,
                        Slot::Single {
                            id: req.id,
                            notification: req.notification,
                        },
                    );
                    calls.push(Call {
                        client: token,
                        slot,
                        method: req.method,
                        params: req.params,
                    });
                }
                Err((id, e)) => client.queue_response(id, Err(e)),
            },
        }
    }

    /// Files one answer with its client; false if the client is gone.
    fn file_answer(&mut self, answer: Answer) -> bool {
        let Some(client) = self.clients.get_mut(&answer.client) else {
            return false;
        };
        match client.slots.remove(&answer.slot) {
            None => return false,
            Some(Slot::Single { id, notification }) => {
                if !notification || answer.result.is_err() {
                    match answer.result {
                        Reply::Serialized(raw) => client.queue_serialized(&id, &raw),
                        Reply::Result(r) => client.queue_response(id, r),
                    }
                }
            }
            Some(Slot::InBatch {
                batch,
                index,
                id,
                notification,
            }) => {
                let done = if let Some(b) = client.batches.get_mut(&batch) {
                    if !notification || answer.result.is_err() {
                        b.answers[index] = Some(response_value(id, answer.result.into_result()));
                    }
                    b.remaining -= 1;
                    b.remaining == 0
                } else {
                    false
                };
                if done {
                    if let Some(b) = client.batches.remove(&batch) {
                        let answers: Vec<Value> = b.answers.into_iter().flatten().collect();
                        // A batch of notifications only gets no answer at all.
                        if !answers.is_empty() {
                            client.queue_value(&Value::Array(answers));
                        }
                    }
                }
            }
        }
        true
    }

    /// Flushes output, updates epoll interest, and drops finished clients.
    fn settle_clients(&mut self) -> usize {
        let mut progress = 0;
        let mut finished = Vec::new();
        for (&token, client) in self.clients.iter_mut() {
            if client.slots.is_empty() {
                if let Some(error) = client.fatal_error.take() {
                    client.queue_response(Value::Null, Err(error));
                    client.close_after_flush = true;
                }
            }
            if client.flush() {
                progress += 1;
            }
            if client.stalled
                && !client.saturated()
                && !client.dead
                && !self.reparse.contains(&token)
            {
                self.reparse.push_back(token);
            }
            if client.finished() {
                finished.push(token);
                continue;
            }
            let mut interest = 0;
            if client.wants_input() {
                interest |= READABLE;
            }
            if client.pending_output() > 0 {
                interest |= WRITABLE;
            }
            if interest != client.interest {
                if let Err(e) = self
                    .epoll
                    .modify(client.stream.as_raw_fd(), token, interest)
                {
                    tracing::debug!(client = token, error = %e, "RPC client epoll update failed");
                    finished.push(token);
                    continue;
                }
                client.interest = interest;
            }
        }
        for token in finished {
            if let Some(client) = self.clients.remove(&token) {
                let _ = self.epoll.remove(client.stream.as_raw_fd());
                tracing::debug!(client = token, "RPC client closed");
            }
        }
        progress
    }

    /// Closes the listener and every client (after one last non-blocking flush), removes
    /// the socket file and releases the lock.
    fn close(&mut self) {
        if let Some(listener) = self.listener.take() {
            let _ = self.epoll.remove(listener.as_raw_fd());
            let _ = std::fs::remove_file(&self.path);
            let _ = std::fs::remove_file(&self.lock_path);
            tracing::info!(path = %self.path.display(), "RPC server stopped");
        }
        for (_, mut client) in self.clients.drain() {
            client.flush();
            let _ = self.epoll.remove(client.stream.as_raw_fd());
        }
        self._wake = None;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.close();
    }
}

/// One poll of the server: events, then requests, then answers and output.
fn poll(server: &Rc<RefCell<Server>>) -> PollStatus {
    let mut work = 0;
    let mut calls = Vec::new();
    {
        let mut s = server.borrow_mut();
        // One epoll_wait per POLL_INTERVAL at most, unless answers or parsing are pending:
        // the main reactor's data path does not pay a syscall per loop for the control plane.
        let now = crate::reactor::now();
        if now.saturating_duration_since(s.last_poll) < POLL_INTERVAL
            && s.answers.answers.is_empty()
            && s.reparse.is_empty()
        {
            return PollStatus::Idle;
        }
        s.last_poll = now;
        let mut events = [(0u64, 0u32); 64];
        let n = s.epoll.poll_now(&mut events);
        while let Some(token) = s.reparse.pop_front() {
            s.parse_client(token, &mut calls);
            work += 1;
        }
        for &(token, ev) in &events[..n] {
            work += 1;
            match token {
                LISTENER_TOKEN => {
                    s.accept_all();
                }
                DOORBELL_TOKEN => {
                    s.answers.doorbell.drain();
                }
                token => {
                    if ev & READABLE != 0 {
                        s.read_client(token, &mut calls);
                    }
                    if ev & HANGUP != 0 {
                        // Both directions are shut: the peer is gone, answers cannot reach it.
                        if let Some(client) = s.clients.get_mut(&token) {
                            client.dead = true;
                        }
                    }
                }
            }
        }
    }
    // Run the methods with the server unborrowed: a method may answer at once, and the
    // answer only touches the answer queue.
    let answers = server.borrow().answers.clone();
    for call in calls {
        work += 1;
        let queue = answers.clone();
        let (client, slot) = (call.client, call.slot);
        let queue_serialized = queue.clone();
        let responder = Responder::with_serialized(
            move |result| {
                queue.deliver(Answer {
                    client,
                    slot,
                    result: Reply::Result(result),
                })
            },
            move |raw| {
                queue_serialized.deliver(Answer {
                    client,
                    slot,
                    result: Reply::Serialized(raw),
                })
            },
        );
        super::call(&call.method, call.params, responder);
    }
    let mut s = server.borrow_mut();
    while let Some(answer) = answers.answers.pop() {
        work += 1;
        s.file_answer(answer);
    }
    work += s.settle_clients();
    if !s.reparse.is_empty() {
        work += 1;
    }
    PollStatus::from_work(work)
}

/// A running RPC server; `stop` it (or let the reactor's shutdown do it).
pub struct RpcServerHandle {
    server: Rc<RefCell<Server>>,
    poller: Option<reactor::PollerHandle>,
}

impl RpcServerHandle {
    /// Stops serving: closes the socket and every client, removes the socket file.
    pub fn stop(mut self) {
        self.server.borrow_mut().close();
        if let Some(p) = self.poller.take() {
            p.unregister();
        }
    }

    pub fn path(&self) -> PathBuf {
        self.server.borrow().path.clone()
    }
}

/// Starts the RPC server on `path`, on the current (main) reactor. It stops by itself when
/// the application shuts down (a shutdown hook closes it).
pub fn listen(path: &Path) -> Result<(), ServerError> {
    let handle = start(path)?;
    reactor::register_shutdown_hook("rpc_server", move |done| {
        handle.stop();
        done();
    });
    Ok(())
}

/// Like `listen` but returns the handle and registers no shutdown hook.
pub fn start(path: &Path) -> Result<RpcServerHandle, ServerError> {
    let io_err = |what: &'static str| {
        let path = path.display().to_string();
        move |err: io::Error| ServerError::Io { path, what, err }
    };
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let lock = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(io_err("cannot open its lock file"))?;
    if !try_lock_exclusive(lock.as_raw_fd()).map_err(io_err("cannot lock its lock file"))? {
        return Err(ServerError::InUse {
            path: path.display().to_string(),
            lock: lock_path.display().to_string(),
        });
    }
    // We hold the lock: whatever socket file is there was left by a dead instance.
    match std::fs::remove_file(path) {
        Ok(()) => tracing::info!(path = %path.display(), "replaced a stale RPC socket file"),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("cannot remove the stale socket file")(e)),
    }
    let listener = UnixListener::bind(path).map_err(io_err("cannot listen"))?;
    listener
        .set_nonblocking(true)
        .map_err(io_err("cannot make the listener non-blocking"))?;
    let epoll = Epoll::new().map_err(io_err("cannot create its epoll set"))?;
    let doorbell = EventFd::new().map_err(io_err("cannot create its doorbell"))?;
    epoll
        .add(listener.as_raw_fd(), LISTENER_TOKEN, READABLE)
        .map_err(io_err("cannot watch the listener"))?;
    epoll
        .add(doorbell.as_raw_fd(), DOORBELL_TOKEN, READABLE)
        .map_err(io_err("cannot watch the doorbell"))?;
    let wake =
        reactor::add_wake_fd(epoll.as_raw_fd()).map_err(io_err("cannot register a wake fd"))?;
    let server = Rc::new(RefCell::new(Server {
        path: path.to_path_buf(),
        lock_path,
        listener: Some(listener),
        _lock: lock,
        epoll,
        answers: Arc::new(AnswerQueue {
            answers: SegQueue::new(),
            doorbell,
            main_thread: std::thread::current().id(),
        }),
        _wake: Some(wake),
        clients: HashMap::new(),
        next_token: FIRST_CLIENT_TOKEN,
        next_batch: 0,
        reparse: VecDeque::new(),
        last_poll: Instant::now(),
    }));
    let polled = server.clone();
    let poller = reactor::register_poller("rpc_server", 0, move || poll(&polled));
    tracing::info!(path = %path.display(), "RPC server listening");
    Ok(RpcServerHandle {
        server,
        poller: Some(poller),
    })
}
