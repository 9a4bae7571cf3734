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

use super::{code, Responder, RpcError, RpcResult};
use crate::reactor::{self, PollStatus, WakeSource};
use crate::sys::epoll::{Epoll, HANGUP, READABLE, WRITABLE};
use crate::sys::EventFd;
use crate::sys::{file::try_lock_exclusive, socket::send_nosignal};
use crossbeam_queue::SegQueue;
use serde_json::{json, Value};
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::thread::ThreadId;
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

/// One answer on its way back to the server: which client, which request slot, the result.
struct Answer {
    client: u64,
    slot: u64,
    result: Reply,
}

/// A method's answer: a result, or a result already serialized (written out as it is).
enum Reply {
    Result(RpcResult),
    Serialized(Box<super::RawValue>),
}

impl Reply {
    fn is_err(&self) -> bool {
        matches!(self, Self::Result(Err(_)))
    }

    /// The answer as a result (a serialized one parsed back: batches hold `Value`s).
    fn into_result(self) -> RpcResult {
        match self {
            Self::Result(r) => r,
            Self::Serialized(raw) => serde_json::from_str(raw.get())
                .map_err(|e| RpcError::internal(format!("answer: {e}"))),
        }
    }
}

/// The queue answers travel through. Answers from the main reactor's thread are simply
/// queued (the poller drains the queue every poll); others also ring the doorbell.
struct AnswerQueue {
    answers: SegQueue<Answer>,
    doorbell: EventFd,
    main_thread: ThreadId,
}

impl AnswerQueue {
    fn deliver(&self, answer: Answer) {
        self.answers.push(answer);
        if std::thread::current().id() != self.main_thread {
            self.doorbell.ring();
        }
    }
}

/// Where one parsed request's answer goes.
enum Slot {
    Single {
        id: Value,
        notification: bool,
    },
    InBatch {
        batch: u64,
        index: usize,
        id: Value,
        notification: bool,
    },
}

struct Batch {
    answers: Vec<Option<Value>>,
    remaining: usize,
}

/// A request ready to run, collected while the server is borrowed and run after.
struct Call {
    client: u64,
    slot: u64,
    method: String,
    params: Option<Value>,
}

struct Client {
    stream: UnixStream,
    input: Vec<u8>,
    /// When `input` is worth parsing again.
    gate: FrameGate,
    output: Vec<u8>,
    output_sent: usize,
    slots: HashMap<u64, Slot>,
    batches: HashMap<u64, Batch>,
    next_slot: u64,
    /// The peer shut its sending side (or sent garbage): read no more.
    read_closed: bool,
    /// A framing error to answer once the requests before it are answered, then close.
    fatal_error: Option<RpcError>,
    /// Close once `output` is flushed (after a fatal error answer).
    close_after_flush: bool,
    /// The connection is dead (peer gone, socket error): drop it now.
    dead: bool,
    /// Parsing stopped on back-pressure with input left: parse again once it lifts.
    stalled: bool,
    interest: u32,
}

impl Client {
    fn new(stream: UnixStream) -> Self {
        Self {
            stream,
            input: Vec::new(),
            gate: FrameGate::default(),
            output: Vec::new(),
            output_sent: 0,
            slots: HashMap::new(),
            batches: HashMap::new(),
            next_slot: 0,
            read_closed: false,
            fatal_error: None,
            close_after_flush: false,
            dead: false,
            stalled: false,
            interest: READABLE,
        }
    }

    fn pending_output(&self) -> usize {
        self.output.len() - self.output_sent
    }

    /// True when no more requests should be parsed for now (back-pressure).
    fn saturated(&self) -> bool {
        self.slots.len() >= MAX_IN_FLIGHT || self.pending_output() >= MAX_BUFFERED_ANSWERS_BYTES
    }

    fn wants_input(&self) -> bool {
        !self.read_closed
            && self.fatal_error.is_none()
            && !self.close_after_flush
            && !self.dead
            && !self.saturated()
    }

    fn finished(&self) -> bool {
        if self.dead {
            return true;
        }
        let flushed = self.pending_output() == 0;
        (self.close_after_flush && flushed)
            || (self.read_closed && !self.stalled && self.slots.is_empty() && flushed)
    }

    fn queue_response(&mut self, id: Value, result: RpcResult) {
        let response = response_value(id, result);
        self.queue_value(&response);
    }

    fn queue_value(&mut self, value: &Value) {
        self.reuse_output();
        // Serializing a Value into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.output, value);
        self.output.push(b'\n');
    }

    /// Queues a success answer whose result is already JSON text, copied as it is.
    fn queue_serialized(&mut self, id: &Value, result: &super::RawValue) {
        self.reuse_output();
        self.output.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
        let _ = serde_json::to_writer(&mut self.output, id);
        self.output.extend_from_slice(br#","result":"#);
        self.output.extend_from_slice(result.get().as_bytes());
        self.output.extend_from_slice(b"}\n");
    }

    /// Starts the output buffer over when everything in it was sent.
    fn reuse_output(&mut self) {
        if self.output_sent > 0 && self.output_sent == self.output.len() {
            self.output.clear();
            self.output_sent = 0;
        }
    }

    /// Writes buffered answers until done or the socket is full.
    fn flush(&mut self) -> bool {
        let mut wrote = false;
        while self.pending_output() > 0 && !self.dead {
            match send_nosignal(self.stream.as_raw_fd(), &self.output[self.output_sent..]) {
                Ok(0) => self.dead = true,
                Ok(n) => {
                    self.output_sent += n;
                    wrote = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::debug!(error = %e, "RPC client write failed; closing");
                    self.dead = true;
                }
            }
        }
        if self.pending_output() == 0 {
            self.output.clear();
            self.output_sent = 0;
        }
        wrote
    }
}

fn response_value(id: Value, result: RpcResult) -> Value {
    match result {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err(e) => json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": {"code": e.code, "message": e.message},
        }),
    }
}

/// A request object checked against JSON-RPC 2.0.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub method: String,
    pub params: Option<Value>,
    /// The id to answer with (`null` for a notification).
    pub id: Value,
    /// No `id` member: answered only when it fails.
    pub notification: bool,
}

fn invalid_request(message: &str) -> RpcError {
    RpcError::new(code::INVALID_REQUEST, format!("Invalid request: {message}"))
}

/// Validates one request object; on failure returns the id to answer with and the error.
/// Pure (no server state): the fuzzers and tests call it directly.
pub fn validate(value: Value) -> Result<Request, (Value, RpcError)> {
    let Value::Object(mut obj) = value else {
        return Err((
            Value::Null,
            invalid_request("a request must be a JSON object"),
        ));
    };
    let id = obj.remove("id");
    let notification = id.is_none();
    let id = id.unwrap_or(Value::Null);
    if !matches!(id, Value::Null | Value::String(_) | Value::Number(_)) {
        return Err((
            Value::Null,
            invalid_request("id must be a string, a number or null"),
        ));
    }
    match obj.remove("jsonrpc") {
        Some(Value::String(v)) if v == "2.0" => {}
        _ => return Err((id, invalid_request("jsonrpc must be \"2.0\""))),
    }
    let method = match obj.remove("method") {
        Some(Value::String(m)) => m,
        _ => return Err((id, invalid_request("method must be a string"))),
    };
    let params = obj.remove("params");
    if !matches!(
        params,
        None | Some(Value::Object(_)) | Some(Value::Array(_)) | Some(Value::Null)
    ) {
        return Err((id, invalid_request("params must be an object or an array")));
    }
    if let Some(extra) = obj.keys().next() {
        return Err((id, invalid_request(&format!("unknown member {extra:?}"))));
    }
    Ok(Request {
        method,
        params,
        id,
        notification,
    })
}

/// Below this many buffered bytes a client's input is parsed on every read (cheap, and a
/// malformed small request is answered at once).
const GATE_SMALL_BYTES: usize = 4096;
/// A large incomplete request is re-parsed at least after this much growth, so garbage
/// inside it and the size limit are still found within one read chunk.
const GATE_REGROW_BYTES: usize = READ_CHUNK;
/// serde_json's recursion limit: deeper input is a parse error to report at once.
const GATE_MAX_DEPTH: usize = 128;

/// Decides when a client's buffered input is worth parsing, so a client trickling a large
/// request byte by byte does not make the server re-parse the whole buffer per byte
/// (quadratic work on the main reactor). It scans each new byte once, tracking bracket
/// depth and strings, and says "parse" only when a new byte may end a top-level value (a
/// closing bracket or quote at depth 0, a scalar byte at depth 0), when nesting passes
/// serde_json's limit, when the buffer is small, or when it grew by a read chunk since the
/// last parse. It never delays a complete value: every complete top-level value ends with
/// such a byte.
#[derive(Debug, Clone)]
pub struct FrameGate {
    small: usize,
    regrow: usize,
    /// Bytes of the buffer scanned so far, and the buffer length at the last parse (bytes
    /// before it are rescanned for depth after a parse but cannot trigger one).
    scanned: usize,
    parsed_len: usize,
    depth: usize,
    in_string: bool,
    escape: bool,
    candidate: bool,
}

impl Default for FrameGate {
    fn default() -> Self {
        Self::new(GATE_SMALL_BYTES, GATE_REGROW_BYTES)
    }
}

impl FrameGate {
    /// A gate that always parses buffers of at most `small` bytes and re-parses after
    /// `regrow` bytes of growth (the server uses 4 KiB and its read chunk).
    pub fn new(small: usize, regrow: usize) -> Self {
        Self {
            small,
            regrow,
            scanned: 0,
            parsed_len: 0,
            depth: 0,
            in_string: false,
            escape: false,
            candidate: false,
        }
    }

    /// Scans the new bytes of `input` (the whole unparsed buffer) and says whether to run
    /// `frame_requests` on it now.
    pub fn should_parse(&mut self, input: &[u8]) -> bool {
        let start = self.scanned.min(input.len());
        for (i, &b) in input[start..].iter().enumerate() {
            let fresh = start + i >= self.parsed_len;
            if self.in_string {
                if self.escape {
                    self.escape = false;
                } else if b == b'\\' {
                    self.escape = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
            } else {
                match b {
                    b'"' => self.in_string = true,
                    b'{' | b'[' => self.depth += 1,
                    b'}' | b']' => self.depth = self.depth.saturating_sub(1),
                    _ => {}
                }
            }
            if fresh && self.depth == 0 && !self.in_string && !b.is_ascii_whitespace() {
                self.candidate = true;
            }
        }
        self.scanned = input.len();
        self.candidate
            || self.depth > GATE_MAX_DEPTH
            || input.len() <= self.small
            || input.len() >= self.parsed_len.saturating_add(self.regrow)
    }

    /// The input was parsed; `remaining` bytes of it are left (starting at a value
    /// boundary). They are rescanned for depth on the next call.
    pub fn parsed(&mut self, remaining: usize) {
        *self = Self {
            parsed_len: remaining,
            ..Self::new(self.small, self.regrow)
        };
    }
}

/// How a `frame_requests` pass over a client's buffered input ended.
#[derive(Debug, Clone, PartialEq)]
pub enum FrameEnd {
    /// Every byte was consumed (only whitespace may have followed the last value).
    Drained,
    /// The input ends inside a value: wait for more bytes.
    Incomplete,
    /// `max_values` values were taken with input left: parse again once answers drain.
    Limit,
    /// The input is not JSON, or a value grew beyond `MAX_REQUEST_BYTES`: answer this
    /// error and close the connection.
    Fatal(RpcError),
}

/// The complete JSON values at the head of a client's input.
#[derive(Debug, Clone, PartialEq)]
pub struct Framed {
    pub values: Vec<Value>,
    /// Bytes of the input the values took (drain them).
    pub consumed: usize,
    pub end: FrameEnd,
}

/// The server's stream framing, pure: takes at most `max_values` complete JSON values from
/// the head of `input` (values back-to-back, any whitespace between, no delimiter). An
/// incomplete value longer than `MAX_REQUEST_BYTES` is fatal, as SPDK reports it; nesting
/// deeper than serde_json's recursion limit (128) is a parse error, never a deep recursion.
pub fn frame_requests(input: &[u8], max_values: usize) -> Framed {
    let mut framed = Framed {
        values: Vec::new(),
        consumed: 0,
        end: FrameEnd::Limit,
    };
    let mut stream = serde_json::Deserializer::from_slice(input).into_iter::<Value>();
    while framed.values.len() < max_values {
        match stream.next() {
            None => {
                framed.consumed = input.len();
                framed.end = FrameEnd::Drained;
                return framed;
            }
            Some(Ok(v)) => {
                framed.consumed = stream.byte_offset();
                framed.values.push(v);
            }
            Some(Err(e)) if e.is_eof() => {
                framed.end = if input.len() - framed.consumed > MAX_REQUEST_BYTES {
                    // SPDK reports a request that is too long as a parse error.
                    FrameEnd::Fatal(RpcError::new(
                        code::PARSE_ERROR,
                        format!("Parse error: a request may not exceed {MAX_REQUEST_BYTES} bytes"),
                    ))
                } else {
                    FrameEnd::Incomplete
                };
                return framed;
            }
            Some(Err(e)) => {
                framed.end = FrameEnd::Fatal(RpcError::new(
                    code::PARSE_ERROR,
                    format!("Parse error: {e}"),
                ));
                return framed;
            }
        }
    }
    framed
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `stream` to a gated framer `step` bytes at a time; returns the values framed
    /// and how many parses ran.
    fn gated(stream: &[u8], step: usize, gate: &mut FrameGate) -> (Vec<Value>, usize) {
        let (mut input, mut values, mut parses) = (Vec::new(), Vec::new(), 0);
        for piece in stream.chunks(step) {
            input.extend_from_slice(piece);
            if gate.should_parse(&input) {
                parses += 1;
                let framed = frame_requests(&input, usize::MAX);
                input.drain(..framed.consumed);
                gate.parsed(input.len());
                values.extend(framed.values);
            }
        }
        (values, parses)
    }

    #[test]
    fn the_gate_parses_a_trickled_large_request_rarely() {
        // A 1 MiB array arriving two bytes at a time: without the gate, 500k parses of up to
        // 1 MiB each; with it, one per read chunk of growth plus the completing byte.
        let mut stream = br#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"a":[0"#.to_vec();
        while stream.len() < MAX_REQUEST_BYTES - 100 {
            stream.extend_from_slice(b",0");
        }
        stream.extend_from_slice(b"]}}");
        let (values, parses) = gated(&stream, 2, &mut FrameGate::default());
        assert_eq!(values.len(), 1);
        assert!(values[0]["params"]["a"].is_array());
        let bound = GATE_SMALL_BYTES / 2 + MAX_REQUEST_BYTES / GATE_REGROW_BYTES + 2;
        assert!(parses <= bound, "{parses} parses (bound {bound})");
    }

    #[test]
    fn the_gate_never_delays_a_complete_value() {
        // Values of every kind, tricky strings included, back to back and byte by byte, with
        // a gate that never parses for size: each value is framed when its last byte arrives.
        // (No top-level number: a split fakes its end with or without a gate.)
        let stream = br#"{"a":"}]\"\\"} ["[",{"b":[]}] "x\\" true {"c":"{"}  null[]"#;
        let framed = frame_requests(stream, usize::MAX);
        assert_eq!(framed.end, FrameEnd::Drained, "{framed:?}");
        let all = framed.values;
        let mut gate = FrameGate::new(0, usize::MAX);
        let (values, _) = gated(stream, 1, &mut gate);
        assert_eq!(values, all);
        assert_eq!(all.len(), 7);
        // Nesting beyond serde_json's limit is parsed (and refused) at once.
        let mut gate = FrameGate::new(0, usize::MAX);
        let deep = "[".repeat(GATE_MAX_DEPTH + 1);
        assert!(gate.should_parse(deep.as_bytes()));
    }

    #[test]
    fn validation_names_what_is_wrong() {
        let (_, e) = validate(json!([1])).err().unwrap();
        assert_eq!(e.code, code::INVALID_REQUEST);
        let (id, e) = validate(json!({"jsonrpc": "1.0", "id": 3, "method": "x"}))
            .err()
            .unwrap();
        assert_eq!((id, e.code), (json!(3), code::INVALID_REQUEST));
        assert!(e.message.contains("jsonrpc"));
        let (_, e) = validate(json!({"jsonrpc": "2.0", "id": 1, "method": 5}))
            .err()
            .unwrap();
        assert!(e.message.contains("method"));
        let (_, e) = validate(json!({"jsonrpc": "2.0", "id": 1, "method": "m", "params": 3}))
            .err()
            .unwrap();
        assert!(e.message.contains("params"));
        let (_, e) = validate(json!({"jsonrpc": "2.0", "id": {}, "method": "m"}))
            .err()
            .unwrap();
        assert!(e.message.contains("id"));
        let r = validate(json!({"jsonrpc": "2.0", "method": "m"}))
            .ok()
            .unwrap();
        assert!(r.notification && r.params.is_none());
        let r = validate(json!({"jsonrpc": "2.0", "id": null, "method": "m", "params": {}}))
            .ok()
            .unwrap();
        assert!(!r.notification);
    }
}
