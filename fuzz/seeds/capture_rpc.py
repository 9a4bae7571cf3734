#!/usr/bin/env python3
"""Regenerates the RPC seed corpora from real client traffic (stdlib only).

    fuzz/seeds/capture_rpc.py

A stand-in server listens on a temporary Unix socket, records the exact bytes each client
request arrives as and answers `true`. Clients: pollux's scripts/rpc.py for every framework
and sock command (with representative arguments), plus SPDK's rpc.py framing (pretty-printed
with indent=2, as SPDK's JSONRPCClient sends) of the same requests. Each request becomes
  fuzz/seeds/rpc_params/<name>.json   (the request object: the rpc_params input), and
  fuzz/seeds/rpc_framing/<name>       (4 split-seed bytes + the bytes on the wire),
plus a few framing seeds only a stream has: back-to-back values, a batch, a notification.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
RPC_PY = os.path.join(ROOT, "scripts", "rpc.py")

# (seed name, rpc.py arguments)
COMMANDS = [
    ("spdk_get_version", ["spdk_get_version"]),
    ("rpc_get_methods", ["rpc_get_methods", "--current", "--include-aliases"]),
    ("framework_get_config", ["framework_get_config", "sock"]),
    ("framework_get_subsystems", ["framework_get_subsystems"]),
    ("framework_wait_init", ["framework_wait_init"]),
    ("framework_get_reactors", ["framework_get_reactors"]),
    ("thread_get_stats", ["thread_get_stats"]),
    ("thread_get_pollers", ["thread_get_pollers"]),
    ("log_set_level", ["log_set_level", "NOTICE"]),
    ("log_get_level", ["log_get_level"]),
    ("log_set_print_level", ["log_set_print_level", "ERROR"]),
    ("log_get_print_level", ["log_get_print_level"]),
    ("log_set_flag", ["log_set_flag", "all"]),
    ("log_clear_flag", ["log_clear_flag", "rpc"]),
    ("log_get_flags", ["log_get_flags"]),
    ("spdk_kill_instance", ["spdk_kill_instance", "SIGTERM"]),
    ("sock_impl_get_options", ["sock_impl_get_options", "-i", "posix"]),
    ("sock_impl_set_options", ["sock_impl_set_options", "-i", "posix", "-r", "65536",
                               "-s", "65536", "-p", "1", "--enable-quickack",
                               "--enable-zerocopy-send-server", "--zerocopy-threshold", "4096",
                               "--tls-version", "0"]),
    ("sock_impl_set_options_uring", ["sock_impl_set_options", "-i", "uring",
                                     "--disable-zerocopy-send-client"]),
    ("sock_set_default_impl", ["sock_set_default_impl", "-i", "uring"]),
    ("sock_get_default_impl", ["sock_get_default_impl"]),
]


class Recorder:
    """A Unix socket server that records one request per connection and answers true."""

    def __init__(self, path):
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(path)
        self.server.listen(8)
        self.requests = []
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        decoder = json.JSONDecoder()
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                data = b""
                while True:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                    try:
                        request, _ = decoder.raw_decode(data.decode("utf-8"))
                        break
                    except ValueError:
                        continue
                self.requests.append(data)
                answer = {"jsonrpc": "2.0", "id": request.get("id"), "result": True}
                conn.sendall(json.dumps(answer).encode())


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def split_seed(name):
    return zlib.crc32(name.encode()).to_bytes(4, "little")


def main():
    framing = os.path.join(HERE, "rpc_framing")
    params = os.path.join(HERE, "rpc_params")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "capture.sock")
        rec = Recorder(path)
        for name, args in COMMANDS:
            before = len(rec.requests)
            subprocess.run([sys.executable, RPC_PY, "-s", path] + args, check=True,
                           stdout=subprocess.DEVNULL)
            if len(rec.requests) != before + 1:
                raise SystemExit("%s: expected one request" % name)
            wire = rec.requests[-1]
            request = json.loads(wire)
            write(os.path.join(params, name + ".json"), wire)
            write(os.path.join(framing, name), split_seed(name) + wire)
            # SPDK's rpc.py sends the same object pretty-printed with indent=2.
            spdk = json.dumps(request, indent=2).encode()
            write(os.path.join(framing, name + "_spdk"), split_seed(name + "_spdk") + spdk)
        rec.server.close()
    reqs = [json.loads(open(os.path.join(params, n + ".json"), "rb").read()) for n, _ in COMMANDS[:4]]
    stream = {
        "back_to_back": b"".join(json.dumps(r, indent=2).encode() for r in reqs),
        "batch": json.dumps(reqs).encode(),
        "notification": json.dumps({"jsonrpc": "2.0", "method": "log_get_level"}).encode(),
        "newline_separated": b"\n".join(json.dumps(r).encode() for r in reqs) + b"\n",
    }
    for name, wire in stream.items():
        write(os.path.join(framing, name), split_seed(name) + wire)
    print("wrote %d rpc_params and %d rpc_framing seeds" % (len(COMMANDS), 2 * len(COMMANDS) + len(stream)))


if __name__ == "__main__":
    main()
