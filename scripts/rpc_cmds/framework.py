"""rpc.py commands for the framework: version, methods, init, subsystems and config,
reactor/thread statistics, shutdown, logging and iobuf (SPDK's names and arguments)."""

import json

from _common import add


def _save_config(client, args):
    config = {"subsystems": []}
    for sub in client.call("framework_get_subsystems"):
        name = sub["subsystem"]
        entries = client.call("framework_get_config", {"name": name})
        config["subsystems"].append({"subsystem": name, "config": entries})
    return config


def _load_config(client, args):
    """Applies a saved config the way pollux does at start-up: STARTUP methods, then
    framework_start_init (if still in STARTUP), then the RUNTIME-only methods."""
    with open(args.filename) if args.filename != "-" else __import__("sys").stdin as f:
        config = json.load(f)
    entries = []
    for sub in config.get("subsystems", []):
        for entry in sub.get("config") or []:
            entries.append(entry)
    startup = set(client.call("rpc_get_methods", {"current": True}))
    initializing = "framework_start_init" in startup
    done = set()
    if initializing:
        for i, entry in enumerate(entries):
            if entry["method"] in startup:
                client.call(entry["method"], entry.get("params"))
                done.add(i)
        client.call("framework_start_init")
    for i, entry in enumerate(entries):
        if i not in done:
            client.call(entry["method"], entry.get("params"))
    return None


def add_commands(subparsers):
    add(subparsers, "spdk_get_version", "pollux's version in SPDK's shape")

    p = add(subparsers, "rpc_get_methods", "list the RPC methods",
            build=lambda a: {"current": a.current, "include_aliases": a.include_aliases})
    p.add_argument("--current", action="store_true",
                   help="only the methods allowed in the current state")
    p.add_argument("--include-aliases", action="store_true",
                   help="include deprecated aliases")

    add(subparsers, "framework_start_init", "leave the STARTUP state (after --wait-for-rpc)")
    add(subparsers, "framework_wait_init", "wait until the framework is initialized")
    add(subparsers, "framework_get_subsystems", "list subsystems and their dependencies")

    p = add(subparsers, "framework_get_config", "print one subsystem's config",
            build=lambda a: {"name": a.name})
    p.add_argument("name", help="subsystem name")

    add(subparsers, "framework_get_reactors", "reactor statistics")
    add(subparsers, "thread_get_stats", "per-thread (reactor) statistics")
    add(subparsers, "thread_get_pollers", "every poller with its counters")
    add(subparsers, "thread_get_io_channels", "the bdev I/O channels open on each reactor")

    p = add(subparsers, "spdk_kill_instance", "shut the application down",
            build=lambda a: {"sig_name": a.sig_name})
    p.add_argument("sig_name", help="SIGINT or SIGTERM")

    for name, what in (("log_set_level", "the log level"),
                       ("log_set_print_level", "the log print level")):
        p = add(subparsers, name, "set " + what, build=lambda a: {"level": a.level})
        p.add_argument("level", help="ERROR, WARNING, NOTICE, INFO or DEBUG")
    add(subparsers, "log_get_level", "print the log level")
    add(subparsers, "log_get_print_level", "print the log print level")
    p = add(subparsers, "log_set_flag", "turn a module's debug log on",
            build=lambda a: {"flag": a.flag})
    p.add_argument("flag", help="module flag, or 'all'")
    p = add(subparsers, "log_clear_flag", "turn a module's debug log off",
            build=lambda a: {"flag": a.flag})
    p.add_argument("flag", help="module flag, or 'all'")
    add(subparsers, "log_get_flags", "print every log flag and its state")

    p = add(subparsers, "log_enable_timestamps", "turn log line timestamps on or off",
            build=lambda a: {"enabled": a.enabled})
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("-e", "--enable", "--timestamps", dest="enabled", action="store_true",
                   default=None)
    g.add_argument("-d", "--disable", "--no-timestamps", dest="enabled", action="store_false")

    def _iobuf_options(a):
        params = {k: getattr(a, k) for k in ("small_pool_count", "large_pool_count",
                                             "small_bufsize", "large_bufsize")
                  if getattr(a, k) is not None}
        if a.enable_numa:
            params["enable_numa"] = True
        return params

    p = add(subparsers, "iobuf_set_options", "set SPDK's iobuf pool options (STARTUP only; "
            "small_bufsize splits the statistics, the rest is accepted without effect)",
            build=_iobuf_options)
    p.add_argument("--small-pool-count", type=int, help="at least 64")
    p.add_argument("--large-pool-count", type=int, help="at least 8")
    p.add_argument("--small-bufsize", type=int, help="small/large line of iobuf_get_stats")
    p.add_argument("--large-bufsize", type=int)
    p.add_argument("--enable-numa", action="store_true")
    add(subparsers, "iobuf_get_stats", "buffers handed out from reactor caches (cache) and "
        "allocated fresh (main)")

    p = add(subparsers, "save_config", "print the whole config (framework_get_config of "
            "every subsystem) in the --json file format")
    p.set_defaults(run=_save_config)
    p = add(subparsers, "load_config", "apply a config file saved by save_config")
    p.add_argument("filename", help="config file ('-' for stdin)")
    p.set_defaults(run=_load_config)
