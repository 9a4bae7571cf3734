"""rpc.py commands for the bdev layer, with SPDK rpc.py's names and arguments: malloc,
null, uring, aio, delay, error, passthru and split create/delete, null resize, QoS limits, histograms, delay latency
update, error injection, bdev_get_bdevs, bdev_get_iostat, bdev_reset_iostat, bdev_wait_for_examine and
bdev_set_options."""

from _common import add, drop_none




def _blocks(total_size_mb, block_size):
    return int(total_size_mb * 1024 * 1024) // block_size


def _ram_disk_options(p):
    """The options bdev_malloc_create and bdev_null_create share."""
    p.add_argument("-u", "--uuid", help="UUID")
    p.add_argument("-m", "--md-size", type=int, help="metadata size (only 0 is supported)")
    p.add_argument("-t", "--dif-type", type=int, help="DIF type (only 0 is supported)")
    p.add_argument("-d", "--dif-is-head-of-md", action="store_true", help="DIF at head of metadata")
    p.add_argument("-p", "--physical-block-size", type=int, help="physical block size")


def _name_only(a):
    return {"name": a.name}


def add_commands(subparsers):
    # malloc
    p = add(subparsers, "bdev_malloc_create", "create a RAM bdev",
            build=lambda a: drop_none({
                "name": a.name,
                "num_blocks": _blocks(a.total_size, a.block_size),
                "block_size": a.block_size,
                "uuid": a.uuid,
                "optimal_io_boundary": a.optimal_io_boundary,
                "md_size": a.md_size,
                "md_interleave": a.md_interleave or None,
                "dif_type": a.dif_type,
                "dif_is_head_of_md": a.dif_is_head_of_md or None,
                "physical_block_size": a.physical_block_size,
            }), aliases=["construct_malloc_bdev"])
    p.add_argument("total_size", type=float, help="size in MiB")
    p.add_argument("block_size", type=int, help="block size in bytes")
    p.add_argument("-b", "--name", help="bdev name (default: MallocN)")
    p.add_argument("-o", "--optimal-io-boundary", type=int, help="optimal I/O boundary in blocks")
    p.add_argument("-i", "--md-interleave", action="store_true", help="interleave metadata")
    _ram_disk_options(p)

    p = add(subparsers, "bdev_malloc_delete", "delete a RAM bdev", build=_name_only,
            aliases=["delete_malloc_bdev"])
    p.add_argument("name", help="bdev name")

    # null
    p = add(subparsers, "bdev_null_create", "create a bdev that discards writes and reads zeroes",
            build=lambda a: drop_none({
                "name": a.name,
                "num_blocks": _blocks(a.total_size, a.block_size),
                "block_size": a.block_size,
                "uuid": a.uuid,
                "md_size": a.md_size,
                "dif_type": a.dif_type,
                "dif_is_head_of_md": a.dif_is_head_of_md or None,
                "physical_block_size": a.physical_block_size,
            }), aliases=["construct_null_bdev"])
    p.add_argument("name", help="bdev name")
    p.add_argument("total_size", type=float, help="size in MiB")
    p.add_argument("block_size", type=int, help="block size in bytes")
    _ram_disk_options(p)

    p = add(subparsers, "bdev_null_delete", "delete a null bdev", build=_name_only,
            aliases=["delete_null_bdev"])
    p.add_argument("name", help="bdev name")

    p = add(subparsers, "bdev_null_resize", "grow a null bdev",
            build=lambda a: {"name": a.name, "new_size": a.new_size})
    p.add_argument("name", help="bdev name")
    p.add_argument("new_size", type=int, help="new size in MiB")

    # uring
    p = add(subparsers, "bdev_uring_create", "create a bdev on a file or block device (io_uring)",
            build=lambda a: drop_none({
                "filename": a.filename, "name": a.name,
                "block_size": a.block_size, "uuid": a.uuid}))
    p.add_argument("filename", help="path of the file or block device")
    p.add_argument("name", help="bdev name")
    p.add_argument("block_size", type=int, nargs="?", help="block size (default: detected)")
    p.add_argument("-u", "--uuid", help="UUID")

    p = add(subparsers, "bdev_uring_delete", "delete a uring bdev", build=_name_only)
    p.add_argument("name", help="bdev name")

    # aio
    p = add(subparsers, "bdev_aio_create", "create a bdev on a file or block device (Linux AIO)",
            build=lambda a: drop_none({
                "filename": a.filename, "name": a.name, "block_size": a.block_size,
                "readonly": a.readonly or None, "fallocate": a.fallocate or None,
                "uuid": a.uuid}), aliases=["construct_aio_bdev"])
    p.add_argument("filename", help="path of the file or block device")
    p.add_argument("name", help="bdev name")
    p.add_argument("block_size", type=int, nargs="?", help="block size (default: detected)")
    p.add_argument("-r", "--readonly", action="store_true", help="open read-only")
    p.add_argument("-f", "--fallocate", action="store_true", help="accepted for compatibility")
    p.add_argument("-u", "--uuid", help="UUID")

    p = add(subparsers, "bdev_aio_delete", "delete an aio bdev", build=_name_only,
            aliases=["delete_aio_bdev"])
    p.add_argument("name", help="bdev name")

    # delay
    p = add(subparsers, "bdev_delay_create", "create a latency-injecting bdev over a base bdev",
            build=lambda a: drop_none({
                "base_bdev_name": a.base_bdev_name, "name": a.name,
                "avg_read_latency": a.avg_read_latency, "p99_read_latency": a.nine_nine_read_latency,
                "avg_write_latency": a.avg_write_latency,
                "p99_write_latency": a.nine_nine_write_latency, "uuid": a.uuid}))
    p.add_argument("-b", "--base-bdev-name", required=True, help="base bdev")
    p.add_argument("-d", "--name", required=True, help="delay bdev name")
    p.add_argument("-r", "--avg-read-latency", type=int, required=True, help="average read latency (us)")
    p.add_argument("-t", "--nine-nine-read-latency", type=int, required=True, help="p99 read latency (us)")
    p.add_argument("-w", "--avg-write-latency", type=int, required=True, help="average write latency (us)")
    p.add_argument("-n", "--nine-nine-write-latency", type=int, required=True, help="p99 write latency (us)")
    p.add_argument("-u", "--uuid", help="UUID")

    p = add(subparsers, "bdev_delay_delete", "delete a delay bdev", build=_name_only)
    p.add_argument("name", help="bdev name")

    p = add(subparsers, "bdev_delay_update_latency", "change a delay bdev's latency",
            build=lambda a: {"delay_bdev_name": a.delay_bdev_name,
                             "latency_type": a.latency_type, "latency_us": a.latency_us})
    p.add_argument("delay_bdev_name", help="delay bdev name")
    p.add_argument("latency_type", help="avg_read, p99_read, avg_write or p99_write")
    p.add_argument("latency_us", type=int, help="latency in microseconds")

    # error
    p = add(subparsers, "bdev_error_create", "create an error-injecting bdev EE_<base_name>",
            build=lambda a: drop_none({"base_name": a.base_name, "uuid": a.uuid}),
            aliases=["construct_error_bdev"])
    p.add_argument("base_name", help="base bdev")
    p.add_argument("-u", "--uuid", help="UUID")

    p = add(subparsers, "bdev_error_delete", "delete an error bdev", build=_name_only,
            aliases=["delete_error_bdev"])
    p.add_argument("name", help="error bdev name")

    p = add(subparsers, "bdev_error_inject_error", "arm error injection on an error bdev",
            build=lambda a: drop_none({
                "name": a.name, "io_type": a.io_type, "error_type": a.error_type,
                "num": a.num, "queue_depth": a.queue_depth,
                "corrupt_offset": a.corrupt_offset, "corrupt_value": a.corrupt_value}))
    p.add_argument("name", help="error bdev name")
    p.add_argument("io_type", help="read, write, unmap, flush, all or clear")
    p.add_argument("error_type", help="failure, nomem or corrupt_data")
    p.add_argument("-n", "--num", type=int, default=1, help="how many I/Os (default 1)")
    p.add_argument("-q", "--queue-depth", type=int, help="accepted for compatibility")
    p.add_argument("-o", "--corrupt-offset", type=int, help="byte to corrupt")
    p.add_argument("-v", "--corrupt-value", type=int, help="value XORed into it")

    # passthru
    p = add(subparsers, "bdev_passthru_create", "create a pass-through bdev over a base bdev",
            build=lambda a: drop_none({"base_bdev_name": a.base_bdev_name, "name": a.name,
                                        "uuid": a.uuid}),
            aliases=["construct_passthru_bdev"])
    p.add_argument("-b", "--base-bdev-name", required=True, help="base bdev")
    p.add_argument("-p", "--name", required=True, help="passthru bdev name")
    p.add_argument("-u", "--uuid", help="UUID")

    p = add(subparsers, "bdev_passthru_delete", "delete a passthru bdev", build=_name_only,
            aliases=["delete_passthru_bdev"])
    p.add_argument("name", help="bdev name")

    p = add(subparsers, "bdev_set_qos_limit",
            "rate limits of a bdev over all reactors (0 removes one; others are kept)",
            build=lambda a: drop_none({
                "name": a.name, "rw_ios_per_sec": a.rw_ios_per_sec,
                "rw_mbytes_per_sec": a.rw_mbytes_per_sec,
                "r_mbytes_per_sec": a.r_mbytes_per_sec,
                "w_mbytes_per_sec": a.w_mbytes_per_sec}),
            aliases=["set_bdev_qos_limit"])
    p.add_argument("name", help="bdev name")
    p.add_argument("--rw-ios-per-sec", "--rw_ios_per_sec", dest="rw_ios_per_sec", type=int)
    p.add_argument("--rw-mbytes-per-sec", "--rw_mbytes_per_sec", dest="rw_mbytes_per_sec",
                   type=int)
    p.add_argument("--r-mbytes-per-sec", "--r_mbytes_per_sec", dest="r_mbytes_per_sec", type=int)
    p.add_argument("--w-mbytes-per-sec", "--w_mbytes_per_sec", dest="w_mbytes_per_sec", type=int)

    p = add(subparsers, "bdev_enable_histogram", "start (from zero) or stop a latency histogram",
            build=lambda a: drop_none({
                "name": a.name, "enable": a.enable, "opc": a.opc,
                "granularity": a.granularity, "min_nsec": a.min_nsec,
                "max_nsec": a.max_nsec}),
            aliases=["enable_bdev_histogram"])
    p.add_argument("name", help="bdev name")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("-e", "--enable", "--histogram", dest="enable", action="store_true",
                   default=None)
    g.add_argument("-d", "--disable", "--no-histogram", dest="enable", action="store_false")
    p.add_argument("-o", "--opc", help="only this I/O type (read, write, unmap, ...)")
    p.add_argument("--granularity", type=int, help="bucket shift (default 7)")
    p.add_argument("--min-nsec", type=int, help="values below are counted at this value")
    p.add_argument("--max-nsec", type=int, help="values above are counted at this value")

    p = add(subparsers, "bdev_get_histogram", "a bdev's latency histogram (SPDK's encoding)",
            build=lambda a: {"name": a.name}, aliases=["get_bdev_histogram"])
    p.add_argument("name", help="bdev name")

    p = add(subparsers, "bdev_split_create", "split a bdev into parts <base>p0, <base>p1, ...",
            build=lambda a: drop_none({"base_bdev": a.base_bdev, "split_count": a.split_count,
                                        "split_size_mb": a.split_size_mb}),
            aliases=["construct_split_vbdev"])
    p.add_argument("base_bdev", help="base bdev name")
    p.add_argument("split_count", type=int, help="number of parts")
    p.add_argument("-s", "--split-size-mb", type=int, help="size of each part in MiB "
                   "(default: the base divided evenly)")

    p = add(subparsers, "bdev_split_delete", "delete every part of a split bdev",
            build=lambda a: {"base_bdev": a.base_bdev}, aliases=["destruct_split_vbdev"])
    p.add_argument("base_bdev", help="base bdev name")

    # generic
    p = add(subparsers, "bdev_get_bdevs", "list bdevs (or one)",
            build=lambda a: drop_none({"name": a.name, "timeout": a.timeout}),
            aliases=["get_bdevs"])
    p.add_argument("-b", "--name", help="only this bdev")
    p.add_argument("-t", "--timeout", type=int, help="accepted for compatibility (ms)")

    p = add(subparsers, "bdev_get_iostat", "I/O statistics of bdevs",
            build=lambda a: drop_none({"name": a.name, "per_channel": a.per_channel or None,
                                        "reset_mode": a.reset_mode}),
            aliases=["get_bdevs_iostat"])
    p.add_argument("-b", "--name", help="only this bdev")
    p.add_argument("-c", "--per-channel", action="store_true",
                   help="one entry per reactor with a channel open (needs -b)")
    p.add_argument("--reset-mode", choices=["all", "maxmin", "error", "none"],
                   help="reset the statistics just read")

    p = add(subparsers, "bdev_reset_iostat", "reset I/O statistics of one bdev or all",
            build=lambda a: drop_none({"name": a.name, "mode": a.mode}))
    p.add_argument("-b", "--name", help="only this bdev")
    p.add_argument("-m", "--mode", choices=["all", "maxmin", "error", "none"],
                   help="what to reset (default all)")

    add(subparsers, "bdev_wait_for_examine", "wait until bdev examination is done")

    p = add(subparsers, "bdev_set_options", "set bdev layer options",
            build=lambda a: drop_none({
                "bdev_io_pool_size": a.bdev_io_pool_size,
                "bdev_io_cache_size": a.bdev_io_cache_size,
                "small_buf_pool_size": a.small_buf_pool_size,
                "large_buf_pool_size": a.large_buf_pool_size,
                "bdev_auto_examine": a.bdev_auto_examine}),
            aliases=["set_bdev_options"])
    p.add_argument("-p", "--bdev-io-pool-size", type=int, help="bdev_io pool size")
    p.add_argument("-c", "--bdev-io-cache-size", type=int, help="bdev_io cache size per thread")
    p.add_argument("-s", "--small-buf-pool-size", type=int, help="small buffer pool size")
    p.add_argument("-l", "--large-buf-pool-size", type=int, help="large buffer pool size")
    g = p.add_mutually_exclusive_group()
    g.add_argument("-e", "--enable-auto-examine", dest="bdev_auto_examine", action="store_true",
                   default=None, help="examine bdevs automatically")
    g.add_argument("-d", "--disable-auto-examine", dest="bdev_auto_examine", action="store_false",
                   help="do not examine bdevs automatically")
