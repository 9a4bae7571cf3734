//! One RPC client's connection state (input, parsed request slots, batches, buffered
//! answers) and the queue answers travel back through from any thread.

use super::framing::FrameGate;
use super::{MAX_BUFFERED_ANSWERS_BYTES, MAX_IN_FLIGHT};
use crate::rpc::{RawValue, RpcError, RpcResult};
use crate::sys::epoll::READABLE;
use crate::sys::socket::send_nosignal;
use crate::sys::EventFd;
use crossbeam_queue::SegQueue;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::thread::ThreadId;

/// One answer on its way back to the server: which client, which request slot, the result.
pub(super) struct Answer {
    pub(super) client: u64,
    pub(super) slot: u64,
    pub(super) result: Reply,
}

/// A method's answer: a result, or a result already serialized (written out as it is).
pub(super) enum Reply {
    Result(RpcResult),
    Serialized(Box<RawValue>),
}

impl Reply {
    pub(super) fn is_err(&self) -> bool {
        matches!(self, Self::Result(Err(_)))
    }

    /// The answer as a result (a serialized one parsed back: batches hold `Value`s).
    pub(super) fn into_result(self) -> RpcResult {
        match self {
            Self::Result(r) => r,
            Self::Serialized(raw) => serde_json::from_str(raw.get())
                .map_err(|e| RpcError::internal(format!("answer: {e}"))),
        }
    }
}

/// The queue answers travel through. Answers from the main reactor's thread are simply
/// queued (the poller drains the queue every poll); others also ring the doorbell.
pub(super) struct AnswerQueue {
    pub(super) answers: SegQueue<Answer>,
    pub(super) doorbell: EventFd,
    pub(super) main_thread: ThreadId,
}

impl AnswerQueue {
    pub(super) fn deliver(&self, answer: Answer) {
        self.answers.push(answer);
        if std::thread::current().id() != self.main_thread {
            self.doorbell.ring();
        }
    }
}

/// Where one parsed request's answer goes.
pub(super) enum Slot {
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

pub(super) struct Batch {
    pub(super) answers: Vec<Option<Value>>,
    pub(super) remaining: usize,
}

/// A request ready to run, collected while the server is borrowed and run after.
pub(super) struct Call {
    pub(super) client: u64,
    pub(super) slot: u64,
    pub(super) method: String,
    pub(super) params: Option<Value>,
}

pub(super) struct Client {
    pub(super) stream: UnixStream,
    pub(super) input: Vec<u8>,
    /// When `input` is worth parsing again.
    pub(super) gate: FrameGate,
    pub(super) output: Vec<u8>,
    pub(super) output_sent: usize,
    pub(super) slots: HashMap<u64, Slot>,
    pub(super) batches: HashMap<u64, Batch>,
    pub(super) next_slot: u64,
    /// The peer shut its sending side (or sent garbage): read no more.
    pub(super) read_closed: bool,
    /// A framing error to answer once the requests before it are answered, then close.
    pub(super) fatal_error: Option<RpcError>,
    /// Close once `output` is flushed (after a fatal error answer).
    pub(super) close_after_flush: bool,
    /// The connection is dead (peer gone, socket error): drop it now.
    pub(super) dead: bool,
    /// Parsing stopped on back-pressure with input left: parse again once it lifts.
    pub(super) stalled: bool,
    pub(super) interest: u32,
}

impl Client {
    pub(super) fn new(stream: UnixStream) -> Self {
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

    pub(super) fn pending_output(&self) -> usize {
        self.output.len() - self.output_sent
    }

    /// True when no more requests should be parsed for now (back-pressure).
    pub(super) fn saturated(&self) -> bool {
        self.slots.len() >= MAX_IN_FLIGHT || self.pending_output() >= MAX_BUFFERED_ANSWERS_BYTES
    }

    pub(super) fn wants_input(&self) -> bool {
        !self.read_closed
            && self.fatal_error.is_none()
            && !self.close_after_flush
            && !self.dead
            && !self.saturated()
    }

    pub(super) fn finished(&self) -> bool {
        if self.dead {
            return true;
        }
        let flushed = self.pending_output() == 0;
        (self.close_after_flush && flushed)
            || (self.read_closed && !self.stalled && self.slots.is_empty() && flushed)
    }

    pub(super) fn queue_response(&mut self, id: Value, result: RpcResult) {
        let response = response_value(id, result);
        self.queue_value(&response);
    }

    pub(super) fn queue_value(&mut self, value: &Value) {
        self.reuse_output();
        // Serializing a Value into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.output, value);
        self.output.push(b'\n');
    }

    /// Queues a success answer whose result is already JSON text, copied as it is.
    pub(super) fn queue_serialized(&mut self, id: &Value, result: &RawValue) {
        self.reuse_output();
        self.output.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
        let _ = serde_json::to_writer(&mut self.output, id);
        self.output.extend_from_slice(br#","result":"#);
        self.output.extend_from_slice(result.get().as_bytes());
        self.output.extend_from_slice(b"}\n");
    }

    /// Starts the output buffer over when everything in it was sent.
    pub(super) fn reuse_output(&mut self) {
        if self.output_sent > 0 && self.output_sent == self.output.len() {
            self.output.clear();
            self.output_sent = 0;
        }
    }

    /// Writes buffered answers until done or the socket is full.
    pub(super) fn flush(&mut self) -> bool {
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

pub(super) fn response_value(id: Value, result: RpcResult) -> Value {
    match result {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err(e) => json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": {"code": e.code, "message": e.message},
        }),
    }
}
