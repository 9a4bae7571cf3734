"""rpc.py command reload_config: bring a running pollux up to a config file (what the
systemd unit's ExecReload runs).

A config file lists calls (`{"method", "params"}` per subsystem, as save_config writes and
--json reads). reload_config reads the running config (framework_get_config of every
subsystem) and applies, in file order, each call of the file that the running config does
not already hold. A running entry holds a file entry when the methods are equal and every
parameter the file gives has the same value there (recursively for objects), so defaults
the file leaves out do not count as changes. Nothing is removed: entries of the running
config that the file lacks are reported as `not_removed` (remove them with their delete
RPCs; option settings every pollux has are not listed). When a call to apply is not allowed in the current state (options that only apply
at start-up) nothing is applied and the command fails naming them: that change needs a
restart. The result is a JSON object: `applied` (the calls made), `unchanged` (how many file
entries were already in place) and `not_removed`."""

import json
import sys


def _holds(running, wanted):
    """True when `running` has every value of `wanted` (objects recursively)."""
    if isinstance(wanted, dict):
        return isinstance(running, dict) and all(
            k in running and _holds(running[k], v) for k, v in wanted.items())
    if isinstance(wanted, str) and isinstance(running, str):
        return wanted == running
    if isinstance(wanted, bool) or isinstance(running, bool):
        return wanted is running
    if isinstance(wanted, (int, float)) and isinstance(running, (int, float)):
        return wanted == running
    return wanted == running


def _entries(config):
    out = []
    for sub in config.get("subsystems") or []:
        for entry in sub.get("config") or []:
            # SPDK writes a batch of calls as an array element.
            for e in entry if isinstance(entry, list) else [entry]:
                if not isinstance(e, dict) or "method" not in e:
                    raise SystemExit("reload_config: a config entry lacks a \"method\": %s"
                                     % json.dumps(e))
                out.append({"method": e["method"], "params": e.get("params")})
    return out


def plan(file_entries, running_entries):
    """(to_apply, unchanged, not_removed) for a file against the running config."""
    used = [False] * len(running_entries)
    to_apply = []
    unchanged = 0
    for e in file_entries:
        hit = None
        for i, r in enumerate(running_entries):
            if not used[i] and r["method"] == e["method"] and \
                    _holds(r.get("params") or {}, e.get("params") or {}):
                hit = i
                break
        if hit is None:
            to_apply.append(e)
        else:
            used[hit] = True
            unchanged += 1
    not_removed = [r for i, r in enumerate(running_entries)
                   if not used[i] and not _is_setting(r["method"])]
    return to_apply, unchanged, not_removed


def _is_setting(method):
    """Calls that set options every running pollux has (not objects one could remove)."""
    return method.endswith("_options") or method in (
        "sock_set_default_impl", "nvmf_set_max_subsystems", "nvmf_set_config",
        "bdev_wait_for_examine")


def _reload(client, args):
    try:
        with open(args.filename) if args.filename != "-" else sys.stdin as f:
            config = json.load(f)
    except (OSError, ValueError) as e:
        raise SystemExit("reload_config: %s: %s" % (args.filename, e))
    wanted = _entries(config)
    running = []
    for sub in client.call("framework_get_subsystems"):
        running.extend(client.call("framework_get_config", {"name": sub["subsystem"]}) or [])
    to_apply, unchanged, not_removed = plan(wanted, running)
    allowed = set(client.call("rpc_get_methods", {"current": True}))
    refused = sorted({e["method"] for e in to_apply if e["method"] not in allowed})
    if refused:
        raise SystemExit("reload_config: not applied, these changes need a restart (methods "
                         "not allowed while running): %s" % ", ".join(refused))
    applied = []
    for e in to_apply:
        try:
            client.call(e["method"], e["params"])
        except Exception as err:  # RpcError: name the call, keep what was applied
            detail = getattr(err, "error", str(err))
            raise SystemExit("reload_config: %s failed: %s (applied before it: %s)"
                             % (e["method"], json.dumps(detail),
                                json.dumps([a["method"] for a in applied])))
        applied.append(e)
    return {"applied": applied, "unchanged": unchanged, "not_removed": not_removed}


def add_commands(subparsers):
    p = subparsers.add_parser(
        "reload_config",
        help="apply the calls of a config file that the running config lacks (nothing is "
             "removed)")
    p.add_argument("filename", help="config file ('-' for stdin)")
    p.set_defaults(method="reload_config", build_params=None, run=_reload)
