//! The server's pure request framing: a stream of back-to-back JSON values split into
//! requests, checked against JSON-RPC 2.0, with a gate that says when input is worth parsing.
//!
//! Nothing here touches a socket; the fuzzers and tests drive it directly.

use super::{MAX_REQUEST_BYTES, READ_CHUNK};
use crate::rpc::{code, RpcError};
use serde_json::Value;

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

pub(super) fn invalid_request(message: &str) -> RpcError {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
