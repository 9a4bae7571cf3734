//! The JSON-RPC framing harness. Input layout: bytes 0-3 seed the split sizes, the rest is
//! what a client writes to the RPC socket. The harness runs the server's own framing loop
//! (`frame_requests` over a growing buffer, draining what it consumed, continuing after a
//! `Limit` as the server does once answers drain) on the whole input and on the input split
//! into arbitrary writes, then validates every request as `admit` does. Properties:
//! - nothing panics (deep nesting is a parse error, invalid UTF-8 an error, ...);
//! - `consumed` never exceeds the input, `Limit` only with `max_values` values taken, an
//!   incomplete tail is never longer than `MAX_REQUEST_BYTES`;
//! - the requests and the way the stream ends do not depend on how it was split, except
//!   for a top-level number or literal, whose end a split can fake (`12` as `1` then `2`,
//!   `truex` as `true` then `x`): such streams hold no request anyway (the server answers
//!   them "invalid request" in either case) and are only checked for the invariants;
//! - the server's `FrameGate` (which skips re-parsing a large incomplete request until a
//!   byte that may complete it arrives) never delays a request: a framer behind a gate with
//!   tiny thresholds has framed exactly the same values after every write as one that parses
//!   every time (until the stream turns out malformed, which a gate may report later), and
//!   once the input ends (the server parses what is left at end of input) the same end.

use crate::Splits;
use pollux::rpc::server::{frame_requests, validate, FrameEnd, FrameGate, MAX_REQUEST_BYTES};
use serde_json::Value;

/// Values per framing pass: small, so the `Limit` path is exercised too.
const BUDGET: usize = 3;

/// How a stream ended, without the error text (whose column depends on the buffer).
#[derive(Debug, PartialEq, Eq)]
enum End {
    Drained,
    Incomplete,
    Fatal,
}

#[derive(Default)]
struct Framer {
    buffer: Vec<u8>,
    values: Vec<Value>,
    end: Option<End>,
    gate: Option<FrameGate>,
}

impl Framer {
    /// Appends one write and frames what is complete, as `parse_client` does.
    fn push(&mut self, bytes: &[u8]) {
        if self.end == Some(End::Fatal) {
            return;
        }
        self.buffer.extend_from_slice(bytes);
        if let Some(gate) = &mut self.gate {
            if !gate.should_parse(&self.buffer) {
                return;
            }
        }
        self.parse();
    }

    /// End of input: the server parses whatever the gate left (a half-closed client still
    /// gets its answers and errors).
    fn eof(&mut self) {
        if self.end != Some(End::Fatal) {
            self.parse();
        }
    }

    /// Frames what is buffered, as `parse_client` does (again after a `Limit`).
    fn parse(&mut self) {
        loop {
            let framed = frame_requests(&self.buffer, BUDGET);
            assert!(framed.consumed <= self.buffer.len());
            assert!(framed.values.len() <= BUDGET);
            self.buffer.drain(..framed.consumed);
            if let Some(gate) = &mut self.gate {
                gate.parsed(self.buffer.len());
            }
            self.values.extend(framed.values.iter().cloned());
            match framed.end {
                FrameEnd::Limit => {
                    assert_eq!(framed.values.len(), BUDGET);
                    continue;
                }
                FrameEnd::Drained => {
                    assert!(self.buffer.is_empty());
                    self.end = Some(End::Drained);
                }
                FrameEnd::Incomplete => {
                    assert!(self.buffer.len() <= MAX_REQUEST_BYTES);
                    self.end = Some(End::Incomplete);
                }
                FrameEnd::Fatal(e) => {
                    assert_eq!(e.code, -32700);
                    self.buffer.clear();
                    self.end = Some(End::Fatal);
                }
            }
            return;
        }
    }
}

/// Validates one top-level value as the server's `admit` does.
fn admit(value: Value) {
    match value {
        Value::Array(items) => items.into_iter().for_each(validate_one),
        value => validate_one(value),
    }
}

fn validate_one(value: Value) {
    match validate(value) {
        Ok(req) => {
            assert!(matches!(
                req.id,
                Value::Null | Value::String(_) | Value::Number(_)
            ));
            assert!(!req.notification || req.id.is_null());
            assert!(matches!(
                req.params,
                None | Some(Value::Object(_) | Value::Array(_) | Value::Null)
            ));
        }
        Err((id, e)) => {
            assert_eq!(e.code, -32600);
            assert!(matches!(
                id,
                Value::Null | Value::String(_) | Value::Number(_)
            ));
        }
    }
}

pub fn check(data: &[u8]) {
    let Some((head, stream)) = data.split_first_chunk::<4>() else {
        return;
    };
    let mut whole = Framer::default();
    whole.push(stream);
    let mut split = Framer::default();
    let mut gated = Framer {
        gate: Some(FrameGate::new(head[0] as usize % 8, 1 + head[1] as usize)),
        ..Framer::default()
    };
    for chunk in Splits::new(u32::from_le_bytes(*head), 61).chunks(stream) {
        split.push(chunk);
        gated.push(chunk);
        if split.end != Some(End::Fatal) {
            assert_eq!(split.values, gated.values, "the gate delayed a request");
        }
    }
    if stream.is_empty() {
        split.end = Some(End::Drained);
    }
    if split.end != Some(End::Fatal) {
        // Once the input ends the gated framer has caught up completely.
        gated.eof();
        assert_eq!(split.values, gated.values, "the gate lost a request");
        assert_eq!(split.end, gated.end, "the gate changed how the stream ends");
    }
    let self_delimited = |v: &Value| v.is_object() || v.is_array() || v.is_string();
    let undelimited = !whole.values.iter().chain(&split.values).all(self_delimited);
    if !undelimited {
        assert_eq!(whole.values, split.values, "requests depend on the split");
        assert_eq!(
            whole.end, split.end,
            "the stream's end depends on the split"
        );
    }
    whole.values.into_iter().for_each(admit);
}
