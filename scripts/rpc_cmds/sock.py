"""rpc.py commands for the socket layer (SPDK's names and arguments): sock_impl_get_options,
sock_impl_set_options, sock_set_default_impl, sock_get_default_impl."""

from _common import add



def _set_options_params(args):
    params = {"impl_name": args.impl}
    for field in ("recv_buf_size", "send_buf_size", "enable_placement_id",
                  "zerocopy_threshold", "tls_version", "enable_recv_pipe",
                  "enable_quickack", "enable_zerocopy_send_server",
                  "enable_zerocopy_send_client", "enable_ktls"):
        value = getattr(args, field)
        if value is not None:
            params[field] = value
    return params


def _toggle(p, name, dest, what):
    g = p.add_mutually_exclusive_group()
    g.add_argument("--enable-" + name, dest=dest, action="store_true", help="enable " + what)
    g.add_argument("--disable-" + name, dest=dest, action="store_false", help="disable " + what)
    p.set_defaults(**{dest: None})


def add_commands(subparsers):
    p = add(subparsers, "sock_impl_get_options", "print a socket implementation's options",
            lambda a: {"impl_name": a.impl})
    p.add_argument("-i", "--impl", required=True, help="socket implementation name, e.g. posix")

    p = add(subparsers, "sock_impl_set_options", "set a socket implementation's options",
            _set_options_params)
    p.add_argument("-i", "--impl", required=True, help="socket implementation name, e.g. posix")
    p.add_argument("-r", "--recv-buf-size", dest="recv_buf_size", type=int,
                   help="size of the socket receive buffer in bytes")
    p.add_argument("-s", "--send-buf-size", dest="send_buf_size", type=int,
                   help="size of the socket send buffer in bytes")
    p.add_argument("-p", "--enable-placement-id", dest="enable_placement_id", type=int,
                   help="placement id: 0 none, 1 NAPI id, 2 incoming CPU")
    _toggle(p, "recv-pipe", "enable_recv_pipe", "the receive pipe")
    _toggle(p, "quickack", "enable_quickack", "TCP_QUICKACK")
    _toggle(p, "zerocopy-send-server", "enable_zerocopy_send_server",
            "zero-copy sends on server (accepted) sockets")
    _toggle(p, "zerocopy-send-client", "enable_zerocopy_send_client",
            "zero-copy sends on client sockets")
    p.add_argument("--zerocopy-threshold", dest="zerocopy_threshold", type=int,
                   help="smallest send that uses zero-copy, in bytes (0: all)")
    p.add_argument("--tls-version", dest="tls_version", type=int,
                   help="TLS protocol version (only 0 is supported)")
    _toggle(p, "ktls", "enable_ktls", "kernel TLS (not supported)")

    p = add(subparsers, "sock_set_default_impl", "set the default socket implementation",
            lambda a: {"impl_name": a.impl})
    p.add_argument("-i", "--impl", required=True, help="socket implementation name, e.g. posix")

    add(subparsers, "sock_get_default_impl", "print the default socket implementation",
        lambda a: None)
