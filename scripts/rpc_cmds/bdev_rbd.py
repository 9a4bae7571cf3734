"""rpc.py commands of the Ceph RBD bdev, with SPDK rpc.py's names and arguments:
bdev_rbd_register_cluster, bdev_rbd_unregister_cluster, bdev_rbd_get_clusters_info,
bdev_rbd_create, bdev_rbd_delete and bdev_rbd_resize."""

from _common import add, drop_none




def _pairs(items, what):
    """key=value arguments to a dict (None when none were given)."""
    if not items:
        return None
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"{what}: {item!r} is not key=value")
        out[key] = value
    return out


def add_commands(subparsers):
    p = add(subparsers, "bdev_rbd_register_cluster", "connect to a Ceph cluster for rbd bdevs",
            build=lambda a: drop_none({
                "name": a.name,
                "user_id": a.user_id,
                "config_param": _pairs(a.config_param, "--config-param"),
                "config_file": a.config_file,
                "key_file": a.key_file,
                "core_mask": a.core_mask,
            }))
    p.add_argument("name", help="cluster name")
    p.add_argument("--user-id", "--user", dest="user_id", help="Ceph user (without 'client.')")
    p.add_argument("--config-param", action="append", metavar="KEY=VALUE",
                   help="a Ceph option (repeatable), e.g. mon_host=127.0.0.1:6789")
    p.add_argument("--config-file", help="ceph.conf path")
    p.add_argument("--key-file", help="keyring path")
    p.add_argument("--core-mask", help="cores for librados threads, e.g. 0x3")

    p = add(subparsers, "bdev_rbd_unregister_cluster", "disconnect a registered Ceph cluster",
            build=lambda a: {"name": a.name})
    p.add_argument("name", help="cluster name")

    p = add(subparsers, "bdev_rbd_get_clusters_info", "show registered Ceph clusters",
            build=lambda a: drop_none({"name": a.name}))
    p.add_argument("-b", "--name", help="one cluster's name")

    p = add(subparsers, "bdev_rbd_create", "create a bdev on a Ceph RBD image",
            build=lambda a: drop_none({
                "name": a.name,
                "user_id": a.user_id,
                "pool_name": a.pool_name,
                "rbd_name": a.rbd_name,
                "block_size": a.block_size,
                "config": _pairs(a.config, "--config"),
                "cluster_name": a.cluster_name,
                "uuid": a.uuid,
                "read_only": a.read_only or None,
            }), aliases=["construct_rbd_bdev"])
    p.add_argument("pool_name", help="Ceph pool")
    p.add_argument("rbd_name", help="RBD image")
    p.add_argument("block_size", type=int, help="block size in bytes")
    p.add_argument("-b", "--name", help="bdev name (default: CephN)")
    p.add_argument("--user-id", "--user", dest="user_id", help="Ceph user (without 'client.')")
    p.add_argument("--config", action="append", metavar="KEY=VALUE",
                   help="a Ceph option (repeatable), when not using a registered cluster")
    p.add_argument("-c", "--cluster-name", help="a cluster registered with bdev_rbd_register_cluster")
    p.add_argument("-u", "--uuid", help="UUID")
    p.add_argument("-r", "--readonly", "--read-only", dest="read_only", action="store_true",
                   help="read-only bdev")

    p = add(subparsers, "bdev_rbd_delete", "delete an rbd bdev",
            build=lambda a: {"name": a.name}, aliases=["delete_rbd_bdev"])
    p.add_argument("name", help="bdev name")

    p = add(subparsers, "bdev_rbd_resize", "grow an rbd bdev (and its image)",
            build=lambda a: {"name": a.name, "new_size": a.new_size})
    p.add_argument("name", help="bdev name")
    p.add_argument("new_size", type=int, help="new size in MiB")
