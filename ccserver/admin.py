"""``ccserver-admin``: administration without a running daemon.

The user commands open the configured store directly (the daemon may run at the same time:
both backends allow several clients), hash on a one-thread pool and exit 0, or 2 with a
one-line message.  Passwords are read before the reactor starts and are never printed.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from ccserver import __version__
from ccserver.config import Config, ConfigError, load


class AdminError(Exception):
    """A user command failed in a way the user can fix; the message is one line."""


def check_config(args: argparse.Namespace) -> int:
    """Validate the configuration file, and read the files of the Kubernetes clusters, without
    connecting to anything."""
    from ccserver.kubernetes.credentials import CredentialsError, read_credentials

    config = load(args.config)
    where = config.source or "no configuration file found; built-in defaults"
    for cluster in config.kubernetes.clusters:
        try:
            read_credentials(cluster)
        except CredentialsError as e:
            raise ConfigError(f"{where}: {e}") from None
    store = f"MongoDB ({config.mongo.db})" if config.mongo else f"embedded ({config.embedded.path})"
    nodes = ", ".join(n.name for n in config.docker.nodes)
    clusters = ", ".join(c.name for c in config.kubernetes.clusters)
    print(
        f"{where}: OK; store: {store}; Docker nodes: {nodes}"
        + (f"; Kubernetes clusters: {clusters}" if clusters else "")
    )
    for section in config.ignored_sections:
        print(f"note: [{section}] is accepted and ignored by ccserver")
    return 0


def read_password(args: argparse.Namespace) -> str:
    """The new password: one line of standard input with ``--password-stdin``, otherwise
    asked twice on the terminal."""
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        try:
            password = getpass.getpass("Password: ")
            again = getpass.getpass("Repeat password: ")
        except EOFError:
            raise AdminError("no password given") from None
        if password != again:
            raise AdminError("the passwords do not match")
    if not password:
        raise AdminError("the password is empty")
    return password


def run_on_store(config: Config, work: Callable[[Any, Any], Coroutine[Any, Any, int]]) -> int:
    """Start the store and a hash pool under a reactor, run ``work(store, pool)``, stop both."""
    from twisted.internet import task
    from twisted.internet.defer import ensureDeferred

    from ccserver.storage import StorageError, open_store
    from ccserver.threads import ThreadPoolService

    outcome: list[int] = []

    async def main(reactor: Any) -> None:
        store = open_store(config, reactor)
        pool = ThreadPoolService(reactor, "password-hash", 1)
        try:
            await _maybe(store.startService())
            pool.startService()
            outcome.append(await ensureDeferred(work(store, pool)))
        except (AdminError, ValueError, StorageError) as e:
            print(f"ccserver-admin: {e}", file=sys.stderr)
            outcome.append(2)
        finally:
            if pool.running:
                await _maybe(pool.stopService())
            if store.running:
                await _maybe(store.stopService())

    try:
        task.react(lambda reactor: ensureDeferred(main(reactor)))
    except SystemExit as e:
        if not outcome:  # the reactor failed before our code could answer
            return e.code if isinstance(e.code, int) and e.code else 2
    return outcome[0]


async def _maybe(result: Any) -> Any:
    from twisted.internet.defer import Deferred

    return (await result) if isinstance(result, Deferred) else result


def create_user_command(args: argparse.Namespace) -> int:
    from ccserver.auth import users

    config = load(args.config)
    users.check_username(args.name)
    password = read_password(args)

    async def work(store: Any, pool: Any) -> int:
        created = await users.create_user(store, pool, args.name, password, args.admin)
        kind = "admin" if args.admin else "standard user"
        print(f"{'created' if created else 'replaced'} {kind} {args.name}")
        return 0

    return run_on_store(config, work)


def list_users_command(args: argparse.Namespace) -> int:
    from ccserver.auth import users

    async def work(store: Any, pool: Any) -> int:
        for user in await users.list_users(store):
            print(f"{user.username}\t{'admin' if user.is_admin else 'user'}")
        return 0

    return run_on_store(load(args.config), work)


def delete_user_command(args: argparse.Namespace) -> int:
    from ccserver.auth import users

    async def work(store: Any, pool: Any) -> int:
        if not await users.delete_user(store, args.name):
            raise AdminError(f"no such user: {args.name}")
        print(f"deleted user {args.name}")
        return 0

    return run_on_store(load(args.config), work)


def set_password_command(args: argparse.Namespace) -> int:
    from ccserver.auth import users

    config = load(args.config)
    password = read_password(args)

    async def work(store: Any, pool: Any) -> int:
        if not await users.set_password(store, pool, args.name, password):
            raise AdminError(f"no such user: {args.name}")
        print(f"changed the password of {args.name}; its tokens are revoked")
        return 0

    return run_on_store(config, work)


def demo_image_command(args: argparse.Namespace) -> int:
    from ccserver import demo_image

    try:
        image = demo_image.build(args.docker_url, args.tag, args.from_image)
    except demo_image.DemoImageError as e:
        raise AdminError(str(e)) from None
    print(f"built {args.tag} ({image[:19]}) on {args.from_image or demo_image.BASE_TAG}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ccserver-admin", description="Administer ccserver.")
    parser.add_argument("--version", action="version", version=f"ccserver {__version__}")
    parser.add_argument("--config", "-c", metavar="PATH", help="config.toml (default: as twistd ccserver)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = commands.add_parser("check-config", help="validate the configuration file and exit")
    check.set_defaults(func=check_config)

    create = commands.add_parser("create-user", help="create a user (or replace one of that name)")
    create.add_argument("name")
    create.add_argument("--admin", action="store_true", help="may read and cancel the tasks of all users")
    create.add_argument("--password-stdin", action="store_true", help="read the password from one line of stdin")
    create.set_defaults(func=create_user_command)
    listing = commands.add_parser("list-users", help="list users and whether they are admins")
    listing.set_defaults(func=list_users_command)
    delete = commands.add_parser("delete-user", help="delete a user, its tokens and block entries")
    delete.add_argument("name")
    delete.set_defaults(func=delete_user_command)
    setpw = commands.add_parser("set-password", help="change a password and revoke the user's tokens")
    setpw.add_argument("name")
    setpw.add_argument("--password-stdin", action="store_true", help="read the password from one line of stdin")
    setpw.set_defaults(func=set_password_command)
    demo = commands.add_parser(
        "demo-image", help="build a small application image with the reference worker, no registry needed"
    )
    demo.add_argument(
        "--from",
        dest="from_image",
        metavar="IMAGE",
        help="a local base image with python3 (default: Debian made here with debootstrap)",
    )
    demo.add_argument("--tag", default="ccserver-demo/app:1", help="the image's name (default: %(default)s)")
    demo.add_argument(
        "--docker-url", default="unix:///var/run/docker.sock", help="the Docker engine (default: %(default)s)"
    )
    demo.set_defaults(func=demo_image_command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"ccserver-admin: config error: {e}", file=sys.stderr)
        return 2
    except (AdminError, ValueError) as e:
        print(f"ccserver-admin: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ccserver-admin: interrupted", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
