"""``twistd ccserver``: command-line options and the service maker the plugin points at."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from twisted.python import usage

from ccserver.config import ConfigError, config_search_path


class Options(usage.Options):
    synopsis = "[--config PATH] [--listen ENDPOINT]..."
    optParameters = [
        [
            "config",
            "c",
            None,
            "Path of config.toml. Without it: $CCSERVER_CONFIG, then "
            + ", then ".join(str(p) for p in config_search_path()[-2:])
            + ", then built-in defaults.",
        ],
    ]
    longdesc = (
        "Runs CC-Server (Curious Containers) as one Twisted daemon: REST API, scheduler and "
        "Docker cluster access. See the admin guide in docs/ for every configuration key."
    )

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []

    def opt_listen(self, description: str) -> None:
        """Listen on a Twisted server endpoint, e.g. tcp:5000:interface=127.0.0.1 or
        ssl:8443:privateKey=key.pem:certKey=cert.pem:extraCertChain=chain.pem. May be
        repeated; replaces the listeners of the configuration file."""
        self["listen"].append(description)

    opt_l = opt_listen


def _fail(message: str) -> None:
    """Stop twistd with a one-line message and exit status 1, never a traceback."""
    sys.stderr.write(f"ccserver: {message}\n")
    sys.stderr.flush()
    raise SystemExit(1)


def _exit_cleanly_on_signals(reactor: Any) -> None:
    """twistd re-raises SIGTERM/SIGINT after shutdown, so the exit status says 'killed';
    a clean shutdown of ccserver exits 0 instead."""

    def handler(signum: int, frame: Any) -> None:
        reactor.callFromThread(reactor.stop)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def makeService(options: Options) -> Any:
    from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString

    from ccserver import config as configuration
    from ccserver.service import CCServer

    try:
        config = configuration.load(options["config"])
    except ConfigError as e:
        _fail(f"config error: {e}")
    from ccserver import listeners

    plan = listeners.plan(config, options["listen"])
    for description in plan.endpoints:
        try:
            serverFromString(reactor, description)
        except Exception as e:  # endpoint syntax, unreadable or bad certificate files
            _fail(f"cannot listen on {description!r}: {e}")
    for description in config.metrics.listen or ():
        try:
            serverFromString(reactor, description)
        except Exception as e:
            _fail(f"metrics.listen: cannot listen on {description!r}: {e}")

    from ccserver.vault import ServerKeyError

    try:
        root = CCServer(config, reactor, plan)
    except ServerKeyError as e:
        _fail(f"server.secret_key_file: {e}")
    reactor.callWhenRunning(_exit_cleanly_on_signals, reactor)

    def exit_status() -> None:
        if root.exit_code:
            os._exit(root.exit_code)

    reactor.addSystemEventTrigger("after", "shutdown", exit_status)
    reactor.addSystemEventTrigger(
        "before", "shutdown", _exit_within, config.server.shutdown_timeout_seconds + EXIT_GRACE_SECONDS, root
    )
    return root


#: how long past ``shutdown_timeout_seconds`` a stopping daemon may take before it exits anyway
EXIT_GRACE_SECONDS = 4.0


def _exit_within(seconds: float, root: Any) -> None:
    """The bound on shutdown, whatever hangs (an engine that never answers, a thread that
    never returns): a daemon timer thread ends the process after ``seconds``."""
    import threading

    def exit_now() -> None:
        sys.stderr.write(f"ccserver: shutdown did not finish within {seconds:g} s; exiting\n")
        sys.stderr.flush()
        os._exit(root.exit_code)

    timer = threading.Timer(seconds, exit_now)
    timer.daemon = True
    timer.start()
