"""rpc.py commands for the keyring (SPDK's names and arguments): keyring_file_add_key,
keyring_file_remove_key, keyring_get_keys."""

from _common import add



def add_commands(subparsers):
    p = add(subparsers, "keyring_file_add_key", "add a key kept in a file (mode 0600, "
            "owned by the user pollux runs as) to the keyring",
            lambda a: {"name": a.name, "path": a.path})
    p.add_argument("name", help="name of the key")
    p.add_argument("path", help="absolute path of the file holding the secret")
    p = add(subparsers, "keyring_file_remove_key", "remove a key from the keyring",
            lambda a: {"name": a.name})
    p.add_argument("name", help="name of the key")
    add(subparsers, "keyring_get_keys", "list the keys (names and paths, never secrets)")
