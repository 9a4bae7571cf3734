"""What the rpc_cmds plugins share: declaring a command, and leaving unset parameters out."""


def add(subparsers, name, help_text, build=lambda a: None, method=None, aliases=()):
    """Adds command NAME, which calls RPC METHOD (default: NAME) with build(args) as params."""
    p = subparsers.add_parser(name, help=help_text, aliases=list(aliases))
    p.set_defaults(method=method or name, build_params=build)
    return p


def drop_none(params):
    """PARAMS without the entries whose value is None (options the user did not give)."""
    return {k: v for k, v in params.items() if v is not None}
