#!/usr/bin/env python3
"""pollux's JSON-RPC client (stdlib only), used like SPDK's scripts/rpc.py:

    scripts/rpc.py [-s SOCK] [-t TIMEOUT] METHOD [args...]
    scripts/rpc.py call METHOD ['{"json": "params"}']

Commands come from plugins: every scripts/rpc_cmds/*.py module (in name order; _common.py,
what they share, is no plugin) has an add_commands(subparsers) function; each command
parser sets the defaults method="<rpc method>" and build_params=<function(args) -> dict or None>. This script calls
the method and prints the result: a str raw, True/None nothing, anything else as indented
JSON. A JSON-RPC error goes to stderr as JSON and the exit status is 1. (A command may
instead set run=<function(client, args) -> result> when it needs several calls.)

Framing works with pollux and SPDK alike: one JSON request is sent, and bytes are read until
they parse as one complete JSON value.
"""

import argparse
import importlib.util
import json
import os
import socket
import sys

DEFAULT_SOCKET = "/var/tmp/pollux.sock"


class RpcError(Exception):
    """The server answered with a JSON-RPC error object."""

    def __init__(self, error):
        super().__init__(error.get("message", str(error)) if isinstance(error, dict) else str(error))
        self.error = error


class Client:
    """One connection to a JSON-RPC Unix socket."""

    def __init__(self, path, timeout):
        self.path = path
        self.timeout = timeout
        self.next_id = 1
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.pending = b""
        self.decoder = json.JSONDecoder()

    def close(self):
        self.sock.close()

    def _read_value(self):
        """Reads until the buffered bytes start with one complete JSON value."""
        while True:
            text = None
            try:
                text = self.pending.decode("utf-8")
            except UnicodeDecodeError:
                pass  # a multi-byte character is split: read more
            if text is not None:
                stripped = text.lstrip()
                if stripped:
                    try:
                        value, end = self.decoder.raw_decode(stripped)
                        rest = stripped[end:]
                        self.pending = rest.encode("utf-8")
                        return value
                    except json.JSONDecodeError:
                        pass  # incomplete: read more
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection without an answer")
            self.pending += chunk

    def call(self, method, params=None):
        request = {"jsonrpc": "2.0", "method": method, "id": self.next_id}
        self.next_id += 1
        if params is not None:
            request["params"] = params
        self.sock.sendall(json.dumps(request).encode("utf-8"))
        while True:
            answer = self._read_value()
            if isinstance(answer, dict) and answer.get("id") == request["id"]:
                break
        if "error" in answer:
            raise RpcError(answer["error"])
        return answer.get("result")


def load_plugins(subparsers):
    here = os.path.dirname(os.path.abspath(__file__))
    folder = os.path.join(here, "rpc_cmds")
    if not os.path.isdir(folder):
        return
    sys.path.insert(0, folder)  # the plugins import their shared helpers from _common
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".py") or name.startswith("_"):
            continue
        path = os.path.join(folder, name)
        spec = importlib.util.spec_from_file_location("rpc_cmds." + name[:-3], path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.add_commands(subparsers)


def build_call_params(args):
    if args.params is None:
        return None
    try:
        return json.loads(args.params)
    except json.JSONDecodeError as e:
        raise SystemExit("call: params are not valid JSON: %s" % e)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="pollux JSON-RPC client (SPDK rpc.py style)")
    parser.add_argument("-s", "--server", dest="server_addr", default=DEFAULT_SOCKET,
                        help="RPC Unix socket path (default %(default)s)")
    parser.add_argument("-t", "--timeout", type=float, default=60.0,
                        help="seconds to wait for an answer (default %(default)s)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="print each request and answer to stderr")
    subparsers = parser.add_subparsers(dest="command", metavar="METHOD")
    p = subparsers.add_parser("call", help="call any method with JSON params")
    p.add_argument("rpc_method", help="method name")
    p.add_argument("params", nargs="?", help="params as a JSON object or array")
    p.set_defaults(method=None, build_params=build_call_params)
    load_plugins(subparsers)

    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help(sys.stderr)
        return 2
    method = args.rpc_method if args.command == "call" else args.method
    try:
        client = Client(args.server_addr, args.timeout)
    except OSError as e:
        print("cannot connect to %s: %s" % (args.server_addr, e), file=sys.stderr)
        return 1
    try:
        run = getattr(args, "run", None)
        if run is not None:
            result = run(client, args)
        else:
            params = args.build_params(args) if args.build_params else None
            if args.verbose:
                print("request: %s %s" % (method, json.dumps(params)), file=sys.stderr)
            result = client.call(method, params)
    except RpcError as e:
        print(json.dumps(e.error, indent=2), file=sys.stderr)
        return 1
    except (OSError, ConnectionError) as e:
        print("%s: %s" % (args.server_addr, e), file=sys.stderr)
        return 1
    finally:
        client.close()
    if isinstance(result, str):
        print(result)
    elif result is True or result is None:
        pass
    else:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
