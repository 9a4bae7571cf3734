"""rpc.py commands for the NVMe-oF target, with SPDK rpc.py's names and arguments:
nvmf_create_transport, nvmf_get_transports, nvmf_create_subsystem, nvmf_delete_subsystem,
nvmf_subsystem_add_listener, nvmf_subsystem_remove_listener, nvmf_subsystem_add_ns,
nvmf_subsystem_remove_ns, nvmf_subsystem_add_host, nvmf_subsystem_remove_host,
nvmf_subsystem_allow_any_host, nvmf_get_subsystems, nvmf_subsystem_get_listeners,
nvmf_subsystem_get_controllers, nvmf_subsystem_get_qpairs, nvmf_get_stats,
nvmf_set_max_subsystems, nvmf_ns_add_host, nvmf_ns_remove_host,
nvmf_subsystem_listener_set_ana_state, nvmf_subsystem_set_ns_ana_group,
nvmf_discovery_add_referral, nvmf_discovery_remove_referral, nvmf_discovery_get_referrals,
nvmf_subsystem_set_keys, nvmf_set_config."""

from _common import add

DISCOVERY_NQN = "nqn.2014-08.org.nvmexpress.discovery"



def _pick(args, names):
    """The given (non-None) attributes of args as a dict."""
    out = {}
    for n in names:
        v = getattr(args, n, None)
        if v is not None:
            out[n] = v
    return out


def _nqn(name):
    return DISCOVERY_NQN if name == "discovery" else name


def _transport_params(args):
    params = _pick(args, [
        "trtype", "max_queue_depth", "max_io_qpairs_per_ctrlr", "in_capsule_data_size",
        "max_io_size", "io_unit_size", "max_aq_depth", "num_shared_buffers",
        "buf_cache_size", "sock_priority", "abort_timeout_sec", "ack_timeout",
        "control_msg_num", "kas", "min_kato", "handshake_timeout_ms"])
    if args.max_qpairs_per_ctrlr is not None:
        params["max_qpairs_per_ctrlr"] = args.max_qpairs_per_ctrlr
    if args.zcopy:
        params["zcopy"] = True
    if args.dif_insert_or_strip:
        params["dif_insert_or_strip"] = True
    # SPDK's rpc.py always sends these two.
    params["c2h_success"] = args.c2h_success
    params["no_srq"] = args.no_srq
    return params


def _address(args):
    addr = {"trtype": args.trtype, "traddr": args.traddr}
    if args.trsvcid is not None:
        addr["trsvcid"] = args.trsvcid
    if args.adrfam is not None:
        addr["adrfam"] = args.adrfam
    return addr


def _listen_params(args):
    params = {"nqn": _nqn(args.nqn), "listen_address": _address(args)}
    if getattr(args, "sock_impl", None):
        params["sock_impl"] = args.sock_impl
    if getattr(args, "secure_channel", False):
        params["secure_channel"] = True
    if getattr(args, "ana_state", None):
        params["ana_state"] = args.ana_state
    if getattr(args, "anagrpid", None) is not None:
        params["anagrpid"] = args.anagrpid
    return params


def _referral_params(args):
    params = {"address": _address(args)}
    if args.subnqn:
        params["subnqn"] = _nqn(args.subnqn)
    if getattr(args, "secure_channel", False):
        params["secure_channel"] = True
    return params


def _referral_args(p, add):
    p.add_argument("-t", "--trtype", required=True, help="transport type, e.g. tcp")
    p.add_argument("-a", "--traddr", required=True, help="transport address, e.g. 127.0.0.1")
    p.add_argument("-f", "--adrfam", help="address family: IPv4 or IPv6")
    p.add_argument("-s", "--trsvcid", help="transport service id (port)")
    p.add_argument("-n", "--subnqn",
                   help="subsystem NQN of the entry (default: the discovery subsystem)")
    if add:
        p.add_argument("-k", "--secure-channel", dest="secure_channel", action="store_true",
                       help="the referred port requires a secure channel")


def _listen_args(p, with_impl):
    p.add_argument("nqn", help="subsystem NQN ('discovery' for the discovery subsystem)")
    p.add_argument("-t", "--trtype", required=True, help="transport type, e.g. tcp")
    p.add_argument("-a", "--traddr", required=True, help="transport address, e.g. 127.0.0.1")
    p.add_argument("-f", "--adrfam", help="address family: IPv4 or IPv6")
    p.add_argument("-s", "--trsvcid", help="transport service id (port)")
    if with_impl:
        p.add_argument("-S", "--sock-impl", dest="sock_impl",
                       help="socket implementation: posix, uring or ssl")
        p.add_argument("-k", "--secure-channel", dest="secure_channel", action="store_true",
                       help="TLS only (the ssl sock impl): plaintext connections are refused")
        p.add_argument("-n", "--ana-state", dest="ana_state",
                       choices=ANA_STATES, help="ANA state of every group on this listener")


ANA_STATES = ["optimized", "non_optimized", "inaccessible", "persistent_loss", "change"]


def _ns_params(args):
    ns = {"bdev_name": args.bdev_name}
    for n in ("nsid", "nguid", "eui64", "uuid", "ptpl_file"):
        v = getattr(args, n)
        if v:
            ns[n] = v
    if args.no_auto_visible:
        ns["no_auto_visible"] = True
    if args.anagrpid is not None:
        ns["anagrpid"] = args.anagrpid
    return {"nqn": args.nqn, "namespace": ns}


def add_commands(subparsers):
    p = add(subparsers, "nvmf_create_transport", "create an NVMe-oF transport",
            _transport_params)
    p.add_argument("-t", "--trtype", required=True, help="transport type (TCP)")
    p.add_argument("-q", "--max-queue-depth", dest="max_queue_depth", type=int)
    p.add_argument("-p", "--max-qpairs-per-ctrlr", dest="max_qpairs_per_ctrlr", type=int,
                   help="deprecated: admin + I/O queue pairs per controller")
    p.add_argument("-m", "--max-io-qpairs-per-ctrlr", dest="max_io_qpairs_per_ctrlr", type=int)
    p.add_argument("-c", "--in-capsule-data-size", dest="in_capsule_data_size", type=int)
    p.add_argument("-i", "--max-io-size", dest="max_io_size", type=int)
    p.add_argument("-u", "--io-unit-size", dest="io_unit_size", type=int,
                   help="largest H2CData PDU (MAXH2CDATA) and buffer unit")
    p.add_argument("-a", "--max-aq-depth", dest="max_aq_depth", type=int)
    p.add_argument("-n", "--num-shared-buffers", dest="num_shared_buffers", type=int)
    p.add_argument("-b", "--buf-cache-size", dest="buf_cache_size", type=int)
    p.add_argument("-z", "--zcopy", action="store_true")
    p.add_argument("-o", "--c2h-success", dest="c2h_success", action="store_false",
                   help="disable the C2H success optimization")
    p.add_argument("-f", "--dif-insert-or-strip", dest="dif_insert_or_strip",
                   action="store_true")
    p.add_argument("-y", "--sock-priority", dest="sock_priority", type=int)
    p.add_argument("-x", "--abort-timeout-sec", dest="abort_timeout_sec", type=int)
    p.add_argument("-e", "--control-msg-num", dest="control_msg_num", type=int)
    p.add_argument("--ack-timeout", dest="ack_timeout", type=int)
    p.add_argument("-r", "--no-srq", dest="no_srq", action="store_true")
    p.add_argument("--kas", type=int, help="keep-alive granularity (100 ms units)")
    p.add_argument("--min-kato", dest="min_kato", type=int,
                   help="smallest keep-alive timeout accepted, in ms")
    p.add_argument("--handshake-timeout-ms", dest="handshake_timeout_ms", type=int,
                   help="close connections without IC exchange and Connect after this many ms")

    p = add(subparsers, "nvmf_set_max_subsystems",
            "most NVMe subsystems the target accepts (before framework_start_init)",
            lambda a: {"max_subsystems": a.max_subsystems})
    p.add_argument("-x", "--max-subsystems", dest="max_subsystems", type=int, required=True)

    p = add(subparsers, "nvmf_get_transports", "list NVMe-oF transports",
            lambda a: _pick(a, ["trtype"]) or None)
    p.add_argument("--trtype", help="transport type")

    p = add(subparsers, "nvmf_get_subsystems", "list NVMe-oF subsystems",
            lambda a: {"nqn": a.nqn} if a.nqn else None)
    p.add_argument("nqn", nargs="?", help="only this subsystem")

    def create_subsystem(a):
        params = {"nqn": a.nqn}
        params.update(_pick(a, ["serial_number", "model_number", "max_namespaces",
                                "min_cntlid", "max_cntlid"]))
        if a.allow_any_host:
            params["allow_any_host"] = True
        if a.ana_reporting:
            params["ana_reporting"] = True
        return params

    p = add(subparsers, "nvmf_create_subsystem", "create an NVMe-oF subsystem",
            create_subsystem)
    p.add_argument("nqn", help="subsystem NQN")
    p.add_argument("-s", "--serial-number", dest="serial_number")
    p.add_argument("-d", "--model-number", dest="model_number")
    p.add_argument("-a", "--allow-any-host", dest="allow_any_host", action="store_true")
    p.add_argument("-m", "--max-namespaces", dest="max_namespaces", type=int)
    p.add_argument("-r", "--ana-reporting", dest="ana_reporting", action="store_true")
    p.add_argument("-i", "--min_cntlid", "--min-cntlid", dest="min_cntlid", type=int)
    p.add_argument("-I", "--max_cntlid", "--max-cntlid", dest="max_cntlid", type=int)

    p = add(subparsers, "nvmf_delete_subsystem", "delete an NVMe-oF subsystem",
            lambda a: {"nqn": a.subsystem_nqn})
    p.add_argument("subsystem_nqn", help="subsystem NQN")

    p = add(subparsers, "nvmf_subsystem_add_listener", "add a listener to a subsystem",
            _listen_params)
    _listen_args(p, True)

    p = add(subparsers, "nvmf_subsystem_remove_listener",
            "remove a listener from a subsystem (closes its connections)", _listen_params)
    _listen_args(p, False)

    p = add(subparsers, "nvmf_subsystem_add_ns", "add a namespace to a subsystem",
            _ns_params)
    p.add_argument("nqn", help="subsystem NQN")
    p.add_argument("bdev_name", help="bdev to export")
    p.add_argument("-n", "--nsid", type=int, help="namespace id (default: lowest free)")
    p.add_argument("-g", "--nguid", help="namespace NGUID (hex)")
    p.add_argument("-e", "--eui64", help="namespace EUI-64 (hex)")
    p.add_argument("-u", "--uuid", help="namespace UUID")
    p.add_argument("-i", "--no-auto-visible", action="store_true",
                   help="visible only to the hosts nvmf_ns_add_host lists")
    p.add_argument("-a", "--anagrpid", type=int,
                   help="ANA group (default: the nsid; needs ana_reporting)")
    p.add_argument("-p", "--ptpl-file", dest="ptpl_file",
                   help="file keeping the namespace's reservations (Persist Through Power Loss)")

    p = add(subparsers, "nvmf_subsystem_set_ns_ana_group",
            "move a namespace to another ANA group",
            lambda a: {"nqn": a.nqn, "nsid": a.nsid, "anagrpid": a.anagrpid})
    p.add_argument("nqn", help="subsystem NQN")
    p.add_argument("nsid", type=int, help="namespace id")
    p.add_argument("anagrpid", type=int, help="ANA group id")

    p = add(subparsers, "nvmf_subsystem_listener_set_ana_state",
            "set the ANA state of a listener's groups (all, or -g one)", _listen_params)
    _listen_args(p, False)
    p.add_argument("-n", "--ana-state", dest="ana_state", required=True, choices=ANA_STATES)
    p.add_argument("-g", "--anagrpid", type=int, help="only this ANA group")

    p = add(subparsers, "nvmf_discovery_add_referral",
            "list another discovery service (or subsystem port) in the discovery log",
            _referral_params)
    _referral_args(p, True)

    p = add(subparsers, "nvmf_discovery_remove_referral", "remove a discovery referral",
            _referral_params)
    _referral_args(p, False)

    add(subparsers, "nvmf_discovery_get_referrals", "list the discovery referrals",
        lambda a: None)

    for name, text in (("nvmf_ns_add_host", "make a no_auto_visible namespace visible to a host"),
                       ("nvmf_ns_remove_host", "hide a no_auto_visible namespace from a host")):
        p = add(subparsers, name, text,
                lambda a: {"nqn": a.nqn, "nsid": a.nsid, "host": a.host})
        p.add_argument("nqn", help="subsystem NQN")
        p.add_argument("nsid", type=int, help="namespace id")
        p.add_argument("host", help="host NQN")

    p = add(subparsers, "nvmf_subsystem_remove_ns", "remove a namespace from a subsystem",
            lambda a: {"nqn": a.nqn, "nsid": a.nsid})
    p.add_argument("nqn", help="subsystem NQN")
    p.add_argument("nsid", type=int, help="namespace id")

    def _host_keys(a):
        params = {"nqn": a.nqn, "host": a.host}
        for k in ("dhchap_key", "dhchap_ctrlr_key", "psk"):
            if getattr(a, k, None) is not None:
                params[k] = getattr(a, k)
        return params

    for name, text in (("nvmf_subsystem_add_host", "allow a host to connect"),
                       ("nvmf_subsystem_set_keys", "set the DH-HMAC-CHAP keys a host must prove")):
        p = add(subparsers, name, text, _host_keys)
        p.add_argument("nqn", help="subsystem NQN")
        p.add_argument("host", help="host NQN")
        p.add_argument("--dhchap-key", help="keyring name of the host's DH-HMAC-CHAP key")
        p.add_argument("--dhchap-ctrlr-key",
                       help="keyring name of the controller's key (bidirectional)")
        if name == "nvmf_subsystem_add_host":
            p.add_argument("--psk", help="keyring name of the host's TLS PSK (NVMeTLSkey-1)")

    def _set_config(a):
        params = {}
        for k in ("dhchap_digests", "dhchap_dhgroups"):
            if getattr(a, k) is not None:
                params[k] = getattr(a, k).split(",")
        return params

    p = add(subparsers, "nvmf_set_config", "limit the DH-HMAC-CHAP digests and DH groups",
            _set_config)
    p.add_argument("--dhchap-digests", help="comma-separated: sha256,sha384,sha512")
    p.add_argument("--dhchap-dhgroups",
                   help="comma-separated: null,ffdhe2048,ffdhe3072,ffdhe4096,ffdhe6144,ffdhe8192")

    p = add(subparsers, "nvmf_subsystem_remove_host", "stop allowing a host",
            lambda a: {"nqn": a.nqn, "host": a.host})
    p.add_argument("nqn", help="subsystem NQN")
    p.add_argument("host", help="host NQN")

    p = add(subparsers, "nvmf_subsystem_allow_any_host", "allow any host or only listed ones",
            lambda a: {"nqn": a.nqn, "allow_any_host": a.allow})
    p.add_argument("nqn", help="subsystem NQN")
    g = p.add_mutually_exclusive_group(required=True)
    # Older SPDK spelled it -e/-d, newer --allow-any-host/--no-allow-any-host.
    g.add_argument("-e", "--enable", "--allow-any-host", dest="allow", action="store_true")
    g.add_argument("-d", "--disable", "--no-allow-any-host", dest="allow",
                   action="store_false")

    for name, what in (("nvmf_subsystem_get_listeners", "listeners"),
                       ("nvmf_subsystem_get_controllers", "controllers"),
                       ("nvmf_subsystem_get_qpairs", "queue pairs")):
        p = add(subparsers, name, "list a subsystem's " + what,
                lambda a: {"nqn": _nqn(a.nqn)})
        p.add_argument("nqn", help="subsystem NQN")

    add(subparsers, "nvmf_get_stats", "per poll group statistics", lambda a: None)
