//! A small blocking JSON-RPC client for pollux's Unix socket: one request at a time, each
//! answer one line, every call bounded by a timeout.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

pub struct RpcClient {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
}

impl RpcClient {
    pub fn connect(path: &Path, timeout: Duration) -> Result<RpcClient, String> {
        let stream = UnixStream::connect(path)
            .map_err(|e| format!("cannot connect to {}: {e}", path.display()))?;
        stream
            .set_read_timeout(Some(timeout))
            .and_then(|()| stream.set_write_timeout(Some(timeout)))
            .map_err(|e| e.to_string())?;
        let writer = stream.try_clone().map_err(|e| e.to_string())?;
        Ok(RpcClient {
            reader: BufReader::new(stream),
            writer,
            next_id: 1,
        })
    }

    /// Calls `method`; the result, or the JSON-RPC error as text.
    pub fn call(&mut self, method: &str, params: Option<Value>) -> Result<Value, String> {
        let id = self.next_id;
        self.next_id += 1;
        let mut req = json!({"jsonrpc": "2.0", "id": id, "method": method});
        if let Some(p) = params {
            req["params"] = p;
        }
        let mut bytes = req.to_string().into_bytes();
        bytes.push(b'\n');
        self.writer
            .write_all(&bytes)
            .map_err(|e| format!("{method}: {e}"))?;
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => return Err(format!("{method}: pollux closed the connection")),
            Ok(_) => {}
            Err(e) => return Err(format!("{method}: {e}")),
        }
        let answer: Value =
            serde_json::from_str(&line).map_err(|e| format!("{method}: bad answer: {e}"))?;
        if answer["id"] != json!(id) {
            return Err(format!("{method}: answer to another request: {line}"));
        }
        if let Some(err) = answer.get("error") {
            return Err(format!(
                "{method}: {} (code {})",
                err["message"].as_str().unwrap_or("error"),
                err["code"]
            ));
        }
        Ok(answer["result"].clone())
    }
}
